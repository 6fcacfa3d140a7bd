import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync, crc32 } from 'node:zlib';
import sharp from 'sharp';
import { formatInfotext, parseInfotext, readPngText, writePngText, quoteInfotextValue } from '../engine/image/png-info.ts';

async function tinyPng(): Promise<Buffer> {
  return sharp({ create: { width: 4, height: 3, channels: 3, background: { r: 10, g: 200, b: 30 } } }).png().toBuffer();
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td) >>> 0);
  return Buffer.concat([len, td, crc]);
}

test('tEXt parameters round-trips and the PNG still decodes to the same pixels', async () => {
  const png = await tinyPng();
  const text = 'a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Seed: 5';
  const out = writePngText(png, { parameters: text });
  assert.equal(readPngText(out)['parameters'], text);
  assert.ok(out.includes(Buffer.from('tEXtparameters\0', 'latin1')), 'Latin-1 text is written as tEXt');
  const a = await sharp(png).raw().toBuffer();
  const b = await sharp(out).raw().toBuffer();
  assert.deepEqual(a, b);
  // Writing again replaces, not duplicates.
  const again = writePngText(out, { parameters: 'other' });
  assert.equal(readPngText(again)['parameters'], 'other');
  assert.equal(again.toString('latin1').split('tEXtparameters').length, 2);
});

test('non-Latin-1 text is written as iTXt UTF-8 and read back', async () => {
  const text = '猫 with émoji 🐱\nSteps: 4, Sampler: Euler, Seed: 1';
  const out = writePngText(await tinyPng(), { parameters: text });
  assert.ok(out.includes(Buffer.from('iTXtparameters\0', 'latin1')));
  assert.equal(readPngText(out)['parameters'], text);
  // sharp (libpng) must still accept the file.
  assert.equal((await sharp(out).metadata()).width, 4);
});

test('zTXt and compressed iTXt chunks are read', async () => {
  const png = await tinyPng();
  const iend = png.length - 12;
  const z = chunk('zTXt', Buffer.concat([Buffer.from('Comment\0\0', 'latin1'), deflateSync(Buffer.from('hello zipped', 'latin1'))]));
  const it = chunk('iTXt', Buffer.concat([Buffer.from('parameters\0\x01\0en\0\0', 'latin1'), deflateSync(Buffer.from('ünïcode, Steps: 3', 'utf8'))]));
  const out = Buffer.concat([png.subarray(0, iend), z, it, png.subarray(iend)]);
  const t = readPngText(out);
  assert.equal(t['Comment'], 'hello zipped');
  assert.equal(t['parameters'], 'ünïcode, Steps: 3');
});

test('a non-PNG is refused with a message naming it', () => {
  assert.throws(() => readPngText(Buffer.from('GIF89a....'), 'upload.gif'), /upload\.gif: not a PNG/);
});

test('formatInfotext writes A1111 layout, quotes values with , : or newlines, and drops nulls', () => {
  const s = formatInfotext('a <lora:lora_a:0.8> cat', 'ugly, blurry', {
    Steps: 20,
    Sampler: 'DPM++ 2M',
    'Schedule type': 'Karras',
    'CFG scale': '7.0',
    Seed: 1,
    Size: '512x512',
    'Model hash': '6ce0161689',
    Model: 'v1-5',
    VAE: null,
    'Lora hashes': 'lora_a: 0123456789ab',
    Version: 'v1.10.1',
  });
  assert.equal(
    s,
    'a <lora:lora_a:0.8> cat\nNegative prompt: ugly, blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: v1-5, Lora hashes: "lora_a: 0123456789ab", Version: v1.10.1',
  );
  assert.equal(formatInfotext('p', '', { Steps: 4 }), 'p\nSteps: 4');
  assert.equal(quoteInfotextValue('a "b", c'), '"a \\"b\\", c"');
});

test('parseInfotext reads A1111 infotexts back, including multi-line prompts and quoted values', () => {
  const text =
    'masterpiece, 1girl\nsecond line <lora:x:1>\nNegative prompt: bad hands,\nworse\n' +
    'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3456, Size: 512x768, Model hash: 6ce0161689, ' +
    'Model: v1-5-pruned-emaonly, Lora hashes: "x: 0123456789ab, y: ba9876543210", Hires upscale: 2, Version: v1.10.1';
  const p = parseInfotext(text);
  assert.equal(p['Prompt'], 'masterpiece, 1girl\nsecond line <lora:x:1>');
  assert.equal(p['Negative prompt'], 'bad hands,\nworse');
  assert.equal(p['Steps'], '20');
  assert.equal(p['Sampler'], 'DPM++ 2M');
  assert.equal(p['Size-1'], '512');
  assert.equal(p['Size-2'], '768');
  assert.equal(p['Lora hashes'], 'x: 0123456789ab, y: ba9876543210');
  assert.equal(p['Hires upscale'], '2');
  assert.equal(p['Clip skip'], '1', 'a missing Clip skip means 1');
  assert.equal(p['Schedule type'], 'Karras');
  assert.equal(p['RNG'], 'GPU');
});

test('format → parse round-trips every value', () => {
  const params = { Steps: 7, Sampler: 'Euler a', 'CFG scale': '4.5', Seed: 42, Size: '64x128', 'Lora hashes': 'a: 1, b: 2', Note: 'x:y\nz' };
  const p = parseInfotext(formatInfotext('prompt\nline 2', 'neg', params));
  assert.equal(p['Prompt'], 'prompt\nline 2');
  assert.equal(p['Negative prompt'], 'neg');
  assert.equal(p['Steps'], '7');
  assert.equal(p['Sampler'], 'Euler a');
  assert.equal(p['CFG scale'], '4.5');
  assert.equal(p['Size-1'], '64');
  assert.equal(p['Lora hashes'], 'a: 1, b: 2');
  assert.equal(p['Note'], 'x:y\nz');
});

test('a text with fewer than 3 parameters on its last line is all prompt', () => {
  const p = parseInfotext('just a prompt\nwith: colon');
  assert.equal(p['Prompt'], 'just a prompt\nwith: colon');
  assert.equal(p['Steps'], undefined);
});
