import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile, readdir, rm, open, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SafetensorsFile, readHeaderOnly, writeSafetensors, writeSafetensorsStreaming, DTYPE_BYTES, type DType, type TensorToWrite,
} from '../engine/safetensors/index.ts';
import { UserError } from '../engine/util/errors.ts';

const dir = await mkdtemp(join(tmpdir(), 'st-test-'));
test.after(() => rm(dir, { recursive: true, force: true }));
let seq = 0;
const tmp = (name = 'f') => join(dir, `${name}-${seq++}.safetensors`);

/** A file from raw parts, for files our own writer would refuse to produce. */
async function craft(header: string | object, body: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): Promise<string> {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const p = tmp('crafted');
  await writeFile(p, Buffer.concat([prefix, json, body]));
  return p;
}

async function rejects(p: string, pattern: RegExp, tensor?: string): Promise<void> {
  await assert.rejects(
    async () => {
      const f = await SafetensorsFile.open(p);
      await f.close();
    },
    (e: unknown) => {
      assert.ok(e instanceof UserError, `expected UserError, got ${String(e)}`);
      assert.ok(e.message.includes(p), `message names the file: ${e.message}`);
      if (tensor) assert.ok(e.message.includes(`"${tensor}"`), `message names tensor ${tensor}: ${e.message}`);
      assert.match(e.message, pattern);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    },
  );
}

test('every dtype round-trips through write and read, with metadata, 0-d and empty tensors', async () => {
  const t: Record<string, TensorToWrite> = {
    f64: { dtype: 'F64', shape: [2, 2], data: Float64Array.of(1.5, -2e300, Number.MIN_VALUE, NaN) },
    f32: { dtype: 'F32', shape: [3], data: Float32Array.of(0.1, -Infinity, 3.4e38) },
    f16: { dtype: 'F16', shape: [3], data: Uint16Array.of(0x3c00, 0x0001, 0xfc00) }, // 1, 2^-24, -inf
    bf16: { dtype: 'BF16', shape: [2], data: Uint16Array.of(0x3f80, 0xc040) }, // 1, -3
    i64: { dtype: 'I64', shape: [3], data: BigInt64Array.of(-(2n ** 62n), 123n, 2n ** 24n + 1n) },
    i32: { dtype: 'I32', shape: [2], data: Int32Array.of(-(2 ** 31), 2 ** 31 - 1) },
    i16: { dtype: 'I16', shape: [2], data: Int16Array.of(-32768, 32767) },
    i8: { dtype: 'I8', shape: [2], data: Int8Array.of(-128, 127) },
    u8: { dtype: 'U8', shape: [1, 2], data: Uint8Array.of(0, 255) },
    bool: { dtype: 'BOOL', shape: [3], data: Uint8Array.of(1, 0, 1) },
    alpha: { dtype: 'F32', shape: [], data: Float32Array.of(8) },
    empty: { dtype: 'F16', shape: [0, 4], data: new Uint16Array(0) },
  };
  const p = tmp();
  await writeSafetensors(p, t, { ss_network_dim: '4', note: 'ünïcode ✓' });
  const raw = await readFile(p);
  const n = Number(raw.readBigUInt64LE(0));
  assert.equal(n % 8, 0, 'header padded to a multiple of 8');
  assert.equal(raw[8], '{'.charCodeAt(0));
  assert.match(raw.subarray(8, 8 + n).toString(), /^\{"__metadata__".*\} *$/s, 'metadata first, space padding');

  const f = await SafetensorsFile.open(p);
  try {
    assert.deepEqual(f.metadata, { ss_network_dim: '4', note: 'ünïcode ✓' });
    assert.deepEqual(f.names(), Object.keys(t), 'file order = write order');
    let expectOffset = 8 + n;
    for (const [name, w] of Object.entries(t)) {
      const info = f.info(name);
      assert.equal(info.dtype, w.dtype);
      assert.deepEqual(info.shape, w.shape);
      assert.equal(info.offset, expectOffset, `${name} offset`);
      assert.equal(info.byteLength, w.data.byteLength);
      expectOffset += info.byteLength;
      const r = await f.read(name);
      assert.equal(r.dtype, w.dtype);
      assert.deepEqual(r.shape, w.shape);
      assert.equal(r.data.constructor, w.data.constructor, `${name} native typed array`);
      assert.deepEqual(Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength), Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength));
    }
    assert.equal(expectOffset, raw.length, 'no gap, no trailing bytes');
    assert.deepEqual([...await f.readFloat32('f16')], [1, 2 ** -24, -Infinity]);
    assert.deepEqual([...await f.readFloat32('bf16')], [1, -3]);
    assert.deepEqual([...await f.readFloat32('i64')], [-(2 ** 62), 123, 2 ** 24], 'I64 rounds to nearest float32');
    assert.deepEqual([...await f.readFloat32('bool')], [1, 0, 1]);
    assert.deepEqual([...await f.readFloat32('i8')], [-128, 127]);
    assert.deepEqual([...await f.readFloat32('f64')].map((x) => (Number.isNaN(x) ? 'NaN' : x)), [1.5, -Infinity, 0, 'NaN']);
    assert.deepEqual([...await f.readFloat32('alpha')], [8]);
    assert.equal((await f.readFloat32('empty')).length, 0);
    // A byte range inside a tensor: the second and third F32 elements.
    const part = await f.readBytes('f32', 4, 12);
    assert.deepEqual([...new Float32Array(part.buffer, part.byteOffset, 2)], [-Infinity, Math.fround(3.4e38)]);
    await assert.rejects(f.readBytes('f32', 8, 16), RangeError);
    assert.throws(() => f.info('nope'), (e: unknown) => e instanceof UserError && e.message.includes(p) && e.message.includes('"nope"'));
    assert.equal(f.has('f32'), true);
    assert.equal(f.has('nope'), false);
  } finally {
    await f.close();
  }
  const h = await readHeaderOnly(p);
  assert.deepEqual(h.tensors.map((x) => x.name), Object.keys(t));
  assert.equal(h.metadata.ss_network_dim, '4');
});

test('a Map keeps its order; an empty file with no tensors is valid', async () => {
  const p = tmp();
  const m = new Map<string, TensorToWrite>([
    ['z', { dtype: 'U8', shape: [1], data: Uint8Array.of(7) }],
    ['10', { dtype: 'F64', shape: [1], data: Float64Array.of(2) }],
    ['a', { dtype: 'I16', shape: [1], data: Int16Array.of(-1) }],
  ]);
  await writeSafetensors(p, m);
  const f = await SafetensorsFile.open(p);
  assert.deepEqual(f.names(), ['z', '10', 'a']);
  assert.deepEqual(f.metadata, {});
  // F64 at byte 1 of the buffer is unaligned in the file; read() must still give a correct Float64Array.
  assert.deepEqual([...(await f.read('10')).data], [2]);
  await f.close();
  const e = tmp();
  await writeSafetensors(e, {});
  const g = await SafetensorsFile.open(e);
  assert.deepEqual(g.names(), []);
  await g.close();
});

test('the writer refuses bad input, naming the tensor, and leaves no file behind', async () => {
  const p = tmp('bad');
  const cases: Array<[Record<string, TensorToWrite>, RegExp, Record<string, string>?]> = [
    [{ w: { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) } }, /tensor "w".*needs 16 bytes, got 12/],
    [{ w: { dtype: 'F16', shape: [-1], data: new Uint16Array(0) } }, /tensor "w".*non-negative/],
    [{ w: { dtype: 'Q4' as DType, shape: [1], data: new Uint8Array(1) } }, /tensor "w".*unknown dtype Q4/],
    [{ w: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } }, /__metadata__ value for "k"/, { k: 3 as unknown as string }],
  ];
  for (const [t, re, md] of cases) {
    await assert.rejects(writeSafetensors(p, t, md), (e: unknown) => e instanceof UserError && re.test(e.message) && e.message.includes(p));
  }
  assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('bad') || n.includes('.tmp-')), []);
});

test('streaming writer: one tensor at a time, atomic on failure', async () => {
  const p = tmp();
  const entries = [
    { name: 'a', dtype: 'F32' as DType, shape: [2] },
    { name: 'b', dtype: 'BF16' as DType, shape: [3] },
  ];
  const asked: string[] = [];
  await writeSafetensorsStreaming(p, entries, async (name) => {
    asked.push(name);
    return name === 'a' ? Float32Array.of(1, 2) : Uint16Array.of(1, 2, 3);
  }, { k: 'v' });
  assert.deepEqual(asked, ['a', 'b']);
  const before = await readFile(p);
  const f = await SafetensorsFile.open(p);
  assert.deepEqual([...(await f.read('b')).data], [1, 2, 3]);
  assert.deepEqual(f.metadata, { k: 'v' });
  await f.close();
  // A producer that gives the wrong size fails the write; the old file stays intact and no temporary is left.
  await assert.rejects(
    writeSafetensorsStreaming(p, entries, async (name) => (name === 'a' ? Float32Array.of(9, 9) : new Uint16Array(2))),
    (e: unknown) => e instanceof UserError && /tensor "b".*needs 6 bytes, got 4/.test(e.message),
  );
  assert.deepEqual(await readFile(p), before);
  assert.deepEqual((await readdir(dir)).filter((n) => n.includes('.tmp-')), []);
  await assert.rejects(writeSafetensorsStreaming(p, [entries[0]!, entries[0]!], async () => new Float32Array(2)), /tensor "a" given twice/);
});

test('open() rejects each invalid layout with a one-line UserError naming file and tensor', async () => {
  const f32 = (n: number) => new Uint8Array(4 * n);
  const ok = { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  // Sanity: the crafted baseline itself is valid, so each case below fails for its own reason only.
  const base = await SafetensorsFile.open(await craft(ok, f32(2)));
  await base.close();

  await rejects(await (async () => { const p = tmp(); await writeFile(p, Buffer.alloc(5)); return p; })(), /shorter than the 8-byte/);
  await rejects(await craft(ok, f32(2), 100_000_001n), /exceeds the 100000000-byte limit/);
  await rejects(await craft(ok, f32(2), 2n ** 64n - 1n), /exceeds/);
  await rejects(await craft(ok, f32(2), 5000n), /header length 5000 runs past the end/);
  await rejects(await craft(Buffer.from([0x7b, 0xff, 0x7d]).toString('latin1')), /not valid UTF-8|not valid JSON/);
  {
    const bad = Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(bad.length));
    const p = tmp();
    await writeFile(p, Buffer.concat([prefix, bad]));
    await rejects(p, /not valid UTF-8/);
  }
  await rejects(await craft(' {}'), /does not start with "\{"/);
  await rejects(await craft('[1,2]'), /does not start with "\{"/);
  await rejects(await craft('{"w": {"dtype": "F32"'), /not valid JSON/);
  await rejects(await craft({ w: 5 }), /entry is not an object/, 'w');
  await rejects(await craft({ w: { dtype: 'F17', shape: [2], data_offsets: [0, 8] } }, f32(2)), /unknown dtype "F17"/, 'w');
  await rejects(await craft({ w: { dtype: 'F8_E4M3', shape: [8], data_offsets: [0, 8] } }, f32(2)), /F8_E4M3 is not supported/, 'w');
  await rejects(await craft({ w: { shape: [2], data_offsets: [0, 8] } }, f32(2)), /missing or non-string "dtype"/, 'w');
  await rejects(await craft({ w: { dtype: 'F32', data_offsets: [0, 8] } }, f32(2)), /"shape"/, 'w');
  await rejects(await craft({ w: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, f32(2)), /"shape"/, 'w');
  await rejects(await craft({ w: { dtype: 'F32', shape: [2.5], data_offsets: [0, 8] } }, f32(2)), /"shape"/, 'w');
  await rejects(await craft({ w: { dtype: 'F32', shape: [2], data_offsets: [0] } }, f32(2)), /"data_offsets"/, 'w');
  await rejects(await craft({ w: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, f32(2)), /end 0 is before begin 8/, 'w');
  await rejects(await craft({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)), /needs 12 bytes.*hold 8/, 'w');
  await rejects(await craft({ w: { dtype: 'F32', shape: [2 ** 40, 2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, f32(2)), /needs \d+ bytes/, 'w');
  // Offsets: gap at the start, gap between, overlap, trailing bytes, truncation.
  await rejects(await craft({ w: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(3)), /starts at 4, leaving a gap after the header/, 'w');
  await rejects(
    await craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, f32(3)),
    /tensor "b" starts at 8, leaving a gap after tensor "a"/,
  );
  await rejects(
    await craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, f32(2)),
    /tensor "b" starts at 4, overlapping tensor "a"/,
  );
  await rejects(await craft(ok, f32(3)), /4 unexpected trailing bytes after the last tensor "w"/);
  await rejects(await craft(ok, f32(1)), /past the end of the .*truncated/, 'w');
  await rejects(await craft({}, f32(1)), /trailing bytes/);
  // Duplicates: JSON.parse would silently keep the second one.
  await rejects(await craft('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1)), /duplicate key "w"/);
  await rejects(await craft({ __metadata__: { k: 1 }, ...ok }, f32(2)), /"__metadata__" value for "k" is number/);
  await rejects(await craft({ __metadata__: ['x'], ...ok }, f32(2)), /"__metadata__" is not an object/);
  await rejects(join(dir, 'missing.safetensors'), /cannot open: no such file/);
  await rejects(dir, /is a folder/);
});

test('reads a byte range of a 5 GB (sparse) tensor with positioned reads, never the whole tensor', async (t) => {
  const n = 5 * 2 ** 30;
  const header = JSON.stringify({ big: { dtype: 'U8', shape: [n], data_offsets: [0, n] }, tail: { dtype: 'F32', shape: [1], data_offsets: [n, n + 4] } });
  const p = tmp('sparse');
  const fh = await open(p, 'w');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  await fh.write(Buffer.concat([prefix, Buffer.from(header)]), 0, 8 + header.length, 0);
  await fh.write(Float32Array.of(42), 0, 4, 8 + header.length + n);
  await fh.close();
  if ((await stat(p)).blocks * 512 > 64 * 2 ** 20) t.diagnostic('filesystem is not sparse; test still valid but used disk');
  try {
    const rssBefore = process.memoryUsage().rss;
    const f = await SafetensorsFile.open(p);
    assert.equal(f.info('big').byteLength, n);
    const piece = await f.readBytes('big', n - 16);
    assert.equal(piece.length, 16);
    assert.deepEqual([...await f.readFloat32('tail')], [42]);
    await f.close();
    assert.ok(process.memoryUsage().rss - rssBefore < 256 * 2 ** 20, 'no large allocation');
  } finally {
    await rm(p, { force: true });
  }
});

test('DTYPE_BYTES covers the ten dtypes', () => {
  assert.deepEqual(DTYPE_BYTES, { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 });
});
