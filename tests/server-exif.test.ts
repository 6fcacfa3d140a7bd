import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { encodeImage } from '../server/images.ts';
import { readUserComment } from '../engine/image/exif.ts';
import type { RawImage } from '../server/backend.ts';

const img: RawImage = { width: 24, height: 16, channels: 3, data: Uint8Array.from({ length: 24 * 16 * 3 }, (_, i) => (i * 37) % 256) };
const text = 'a cat, 猫 ünïcode <lora:x:0.8>\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Seed: 1, Lora hashes: "x: 0123456789ab"';

for (const [format, opts] of [['jpg', {}], ['webp', {}], ['webp', { webpLossless: true }]] as const) {
  test(`${format}${'webpLossless' in opts ? ' lossless' : ''}: the infotext goes into EXIF UserComment as UTF-16 and reads back`, async () => {
    const out = await encodeImage(img, format, text, opts);
    const meta = await sharp(out).metadata();
    assert.equal(meta.format, format === 'jpg' ? 'jpeg' : 'webp');
    assert.deepEqual([meta.width, meta.height], [24, 16]);
    assert.ok(meta.exif, 'libvips sees the EXIF block');
    assert.equal(readUserComment(meta.exif!), text);
    const px = await sharp(out).raw().toBuffer();
    assert.equal(px.length, 24 * 16 * 3, 'still decodes');
    if ('webpLossless' in opts) assert.deepEqual([...px], [...img.data], 'lossless pixels survive the container rewrite');
  });
}

test('a little-endian ASCII UserComment (other writers) is read too', () => {
  const comment = Buffer.concat([Buffer.from('ASCII\0\0\0', 'latin1'), Buffer.from('Steps: 5', 'latin1')]);
  const t = Buffer.alloc(44);
  t.write('II', 0, 'latin1');
  t.writeUInt16LE(42, 2);
  t.writeUInt32LE(8, 4);
  t.writeUInt16LE(1, 8);
  t.writeUInt16LE(0x8769, 10);
  t.writeUInt16LE(4, 12);
  t.writeUInt32LE(1, 14);
  t.writeUInt32LE(26, 18);
  t.writeUInt16LE(1, 26);
  t.writeUInt16LE(0x9286, 28);
  t.writeUInt16LE(7, 30);
  t.writeUInt32LE(comment.length, 32);
  t.writeUInt32LE(44, 36);
  assert.equal(readUserComment(Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), t, comment])), 'Steps: 5');
  assert.equal(readUserComment(Buffer.from('junk')), null);
});
