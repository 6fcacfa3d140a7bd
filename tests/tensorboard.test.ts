import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import sharp from 'sharp';
import { crc32c, maskedCrc32c } from '../engine/logging/crc32c.ts';
import { TensorBoardWriter } from '../engine/logging/tensorboard.ts';
import { repoRoot } from './support/paths.ts';

// ---- An independent minimal reader: bitwise CRC-32C, TFRecord framing, generic protobuf decoding. ----

function crcBitwise(b: Uint8Array): number {
  let c = ~0 >>> 0;
  for (const byte of b) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
  }
  return ~c >>> 0;
}
function mask(c: number): number {
  return (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
}

function readRecords(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let o = 0;
  while (o < buf.length) {
    assert.ok(o + 12 <= buf.length, 'truncated record header');
    const len = Number(buf.readBigUInt64LE(o));
    assert.equal(buf.readUInt32LE(o + 8), mask(crcBitwise(buf.subarray(o, o + 8))), `length CRC at byte ${o}`);
    const payload = buf.subarray(o + 12, o + 12 + len);
    assert.equal(buf.readUInt32LE(o + 12 + len), mask(crcBitwise(payload)), `data CRC at byte ${o}`);
    out.push(payload);
    o += 12 + len + 4;
  }
  return out;
}

type Field = { n: number; wire: number; v: number | bigint | Buffer };
function decode(b: Buffer): Field[] {
  const out: Field[] = [];
  let o = 0;
  const varint = (): bigint => {
    let r = 0n;
    for (let s = 0n; ; s += 7n) {
      const x = b[o++]!;
      r |= BigInt(x & 0x7f) << s;
      if (x < 0x80) return r;
    }
  };
  while (o < b.length) {
    const key = Number(varint());
    const n = key >> 3;
    const wire = key & 7;
    if (wire === 0) out.push({ n, wire, v: varint() });
    else if (wire === 1) (out.push({ n, wire, v: b.readDoubleLE(o) }), (o += 8));
    else if (wire === 5) (out.push({ n, wire, v: b.readFloatLE(o) }), (o += 4));
    else if (wire === 2) {
      const len = Number(varint());
      out.push({ n, wire, v: b.subarray(o, o + len) });
      o += len;
    } else throw new Error(`wire type ${wire}`);
  }
  return out;
}
const get = (f: Field[], n: number): Field['v'] | undefined => f.find((x) => x.n === n)?.v;

interface ReadEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  values: { tag: string; simple?: number; image?: { height: number; width: number; colorspace: number; png: Buffer } }[];
}
function readEvents(path: string): ReadEvent[] {
  return readRecords(readFileSync(path)).map((p) => {
    const f = decode(p);
    const fv = get(f, 3) as Buffer | undefined;
    const summary = get(f, 5) as Buffer | undefined;
    const values = summary
      ? decode(summary)
          .filter((x) => x.n === 1)
          .map((x) => {
            const vf = decode(x.v as Buffer);
            const img = get(vf, 4) as Buffer | undefined;
            const imf = img ? decode(img) : undefined;
            return {
              tag: (get(vf, 1) as Buffer).toString('utf8'),
              simple: get(vf, 2) as number | undefined,
              image: imf && {
                height: Number(get(imf, 1)),
                width: Number(get(imf, 2)),
                colorspace: Number(get(imf, 3)),
                png: get(imf, 4) as Buffer,
              },
            };
          })
      : [];
    return { wallTime: get(f, 1) as number, step: Number(get(f, 2) ?? 0n), fileVersion: fv?.toString('utf8'), values };
  });
}

// ---- Tests ----

test('CRC-32C check value and masking', () => {
  const nine = new TextEncoder().encode('123456789');
  assert.equal(crc32c(nine), 0xe3069283);
  assert.equal(crcBitwise(nine), 0xe3069283);
  const r = new Uint8Array(1000).map((_, i) => (i * 7919) & 0xff);
  assert.equal(crc32c(r), crcBitwise(r));
  assert.equal(maskedCrc32c(r), mask(crcBitwise(r)));
});

test('the header and scalar records are byte-identical to the reference test vectors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tb-'));
  const w = TensorBoardWriter.open(dir, { now: () => 1700000000000, hostname: 'h', pid: 1 });
  w.addScalar('loss/current', 0.5, 1, 1700000001.0);
  w.close();
  const hex = readFileSync(w.path).toString('hex');
  const header = '1800000000000000 a37f4b22 0900000040fc54d941 1a0d627261696e2e4576656e743a32 eced8f9d';
  const scalar =
    '2200000000000000 78113dfd 0900004040fc54d941 1001 2a15 0a13 0a0c 6c6f73732f63757272656e74 15 0000003f b70e2aad';
  assert.equal(hex, (header + scalar).replaceAll(' ', ''));
});

test('file name, file_version first, scalars and an image read back with an independent reader', async () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'tb-')), 'logs');
  let t = 1_750_000_123_456;
  const w = TensorBoardWriter.open(dir, { now: () => (t += 1000), hostname: 'box', pid: 4242 });
  const w2 = TensorBoardWriter.open(dir, { now: () => t, hostname: 'box', pid: 4242 });
  assert.match(basename(w.path), /^events\.out\.tfevents\.1750000124\.box\.4242\.\d+$/);
  assert.notEqual(w.path, w2.path, 'a per-process counter keeps two writers apart');
  w2.close();

  w.addScalar('loss/current', 0.25, 0);
  w.addScalars({ 'loss/current': 0.125, 'loss/average': 0.1875, 'lr/unet': 1e-4, 'lr/textencoder': 5e-5 }, 1);
  w.addScalar('grad_norm', NaN, 2);
  w.addScalar('memory', 1234.5, 123456789012);
  const rgb = new Uint8Array(4 * 3 * 3).map((_, i) => (i * 37) % 256);
  await w.addImage('sample/0', { data: rgb, width: 4, height: 3, channels: 3 }, 2);
  const rgba = await sharp({ create: { width: 2, height: 5, channels: 4, background: { r: 10, g: 20, b: 30, alpha: 0.5 } } })
    .png()
    .toBuffer();
  await w.addEncodedImage('sample/1', rgba, 3);
  w.close();

  const ev = readEvents(w.path);
  assert.equal(ev[0]!.fileVersion, 'brain.Event:2');
  assert.equal(ev[0]!.wallTime, 1750000124.456);
  assert.equal(ev[0]!.values.length, 0);
  assert.deepEqual(
    ev.slice(1, 5).map((e) => [e.step, e.values.map((v) => [v.tag, v.simple])]),
    [
      [0, [['loss/current', 0.25]]],
      [1, [['loss/current', 0.125], ['loss/average', 0.1875], ['lr/unet', Math.fround(1e-4)], ['lr/textencoder', Math.fround(5e-5)]]],
      [2, [['grad_norm', NaN]]],
      [123456789012, [['memory', 1234.5]]],
    ],
  );
  assert.ok(ev[2]!.wallTime > ev[1]!.wallTime, 'wall time comes from the clock');
  const img = ev[5]!.values[0]!;
  assert.equal(ev[5]!.step, 2);
  assert.equal(img.tag, 'sample/0');
  assert.deepEqual({ ...img.image!, png: undefined }, { height: 3, width: 4, colorspace: 3, png: undefined });
  assert.deepEqual(img.image!.png.subarray(0, 8), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  const pixels = await sharp(img.image!.png).raw().toBuffer();
  assert.deepEqual(new Uint8Array(pixels), rgb);
  const img2 = ev[6]!.values[0]!;
  assert.deepEqual([ev[6]!.step, img2.tag, img2.image!.width, img2.image!.height, img2.image!.colorspace], [3, 'sample/1', 2, 5, 4]);
  assert.equal(ev.length, 7);
});

test('a corrupted byte is caught by the reader (so the CRC checks above are real)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tb-'));
  const w = TensorBoardWriter.open(dir);
  w.addScalar('x', 1, 1);
  w.close();
  const buf = readFileSync(w.path);
  buf[buf.length - 6]! ^= 0x01;
  assert.throws(() => readRecords(buf), /data CRC/);
});

test('records are on disk as soon as they are added: a SIGKILLed writer keeps its logs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tb-kill-'));
  const mod = join(repoRoot, 'engine/logging/tensorboard.ts');
  const code = `
    import { TensorBoardWriter } from ${JSON.stringify(mod)};
    const w = TensorBoardWriter.open(${JSON.stringify(dir)});
    for (let s = 1; s <= 5; s++) w.addScalar('loss/current', s / 10, s);
    process.kill(process.pid, 'SIGKILL');`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: repoRoot });
  assert.equal(r.signal, 'SIGKILL', r.stderr?.toString());
  const files = readdirSync(dir);
  assert.equal(files.length, 1);
  const ev = readEvents(join(dir, files[0]!));
  assert.deepEqual(
    ev.slice(1).map((e) => [e.step, e.values[0]!.simple]),
    [1, 2, 3, 4, 5].map((s) => [s, Math.fround(s / 10)]),
  );
});
