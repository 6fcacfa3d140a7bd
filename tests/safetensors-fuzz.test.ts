/**
 * Fuzz: a few hundred seeded random corruptions of a small valid file. Each open + full read must either
 * succeed or reject with a one-line UserError naming the file — never crash, hang, leak a file handle or
 * allocate more than the file could hold.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile, rm, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors } from '../engine/safetensors/index.ts';
import { UserError } from '../engine/util/errors.ts';

const SEED = 20261129;
const CASES = 400;
const TIME_LIMIT_MS = 2000;

function mulberry32(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const nasty: unknown[] = [
  -1, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 1e15, 1e300, 'x', null, true, [], {}, [0], [1, 2, 3], [2 ** 40, 2 ** 40],
  'F32', 'F8_E5M2', 'BF16', 'I64', 'BOOL', '__proto__',
];
const dtypes = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL', 'U64', 'F4', 'f32', ''];

async function fdCount(): Promise<number | undefined> {
  return readdir('/proc/self/fd').then((l) => l.length, () => undefined);
}

function withPrefix(json: string, len?: bigint): Buffer {
  const body = Buffer.from(json);
  const p = Buffer.alloc(8);
  p.writeBigUInt64LE(len ?? BigInt(body.length));
  return Buffer.concat([p, body]);
}

test('fuzzed safetensors files give a clean result or a clean UserError', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'st-fuzz-'));
  try {
    const basePath = join(dir, 'base.safetensors');
    await writeSafetensors(basePath, {
      'model.w': { dtype: 'F32', shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i - 5.5) },
      'model.h': { dtype: 'F16', shape: [5], data: Uint16Array.of(0x3c00, 0x7c00, 0x0001, 0x7e00, 0xbc00) },
      'model.b': { dtype: 'BF16', shape: [2, 1], data: Uint16Array.of(0x3f80, 0x4000) },
      ids: { dtype: 'I64', shape: [3], data: BigInt64Array.of(1n, -2n, 3n) },
      mask: { dtype: 'BOOL', shape: [4], data: Uint8Array.of(1, 0, 0, 1) },
      alpha: { dtype: 'F64', shape: [], data: Float64Array.of(8) },
    }, { ss_network_dim: '4', format: 'pt' });
    const base = await readFile(basePath);
    const hlen = Number(base.readBigUInt64LE(0));
    const headerText = base.subarray(8, 8 + hlen).toString().trimEnd();
    const body = base.subarray(8 + hlen);

    const rnd = mulberry32(SEED);
    const int = (n: number) => Math.floor(rnd() * n);
    const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

    const mutations: Record<string, () => Buffer> = {
      truncate: () => base.subarray(0, int(base.length)),
      flipBytes: () => {
        const b = Buffer.from(base);
        for (let k = 1 + int(8); k > 0; k--) b[int(b.length)]! ^= 1 << int(8);
        return b;
      },
      flipHeaderBytes: () => {
        const b = Buffer.from(base);
        for (let k = 1 + int(4); k > 0; k--) b[8 + int(hlen)] = int(256);
        return b;
      },
      lengthPrefix: () => {
        const b = Buffer.from(base);
        const choices = [BigInt(int(hlen * 2)), BigInt(hlen + 1), BigInt(hlen - 1), 2n ** 64n - 1n, 2n ** 63n, 99_999_999n, 100_000_001n, BigInt(int(2 ** 32))];
        b.writeBigUInt64LE(pick(choices));
        return b;
      },
      editJsonField: () => {
        const h = JSON.parse(headerText) as Record<string, Record<string, unknown>>;
        const names = Object.keys(h).filter((k) => k !== '__metadata__');
        const e = h[pick(names)]!;
        const field = pick(['dtype', 'shape', 'data_offsets', 'shape', 'data_offsets']);
        if (field === 'dtype') e.dtype = rnd() < 0.7 ? pick(dtypes) : pick(nasty);
        else if (rnd() < 0.5) e[field] = pick(nasty);
        else {
          const arr = Array.isArray(e[field]) ? [...(e[field] as unknown[])] : [];
          if (arr.length > 0) arr[int(arr.length)] = pick(nasty);
          else arr.push(pick(nasty));
          e[field] = arr;
        }
        if (rnd() < 0.2) delete e[pick(['dtype', 'shape', 'data_offsets'])];
        return Buffer.concat([withPrefix(JSON.stringify(h)), body]);
      },
      hugeSizes: () => {
        const h = JSON.parse(headerText) as Record<string, Record<string, unknown>>;
        const name = pick(Object.keys(h).filter((k) => k !== '__metadata__'));
        const big = pick([2 ** 31, 2 ** 32 + 4, 2 ** 40, 2 ** 52, Number.MAX_SAFE_INTEGER]);
        h[name]!.shape = [big];
        h[name]!.dtype = 'U8';
        const offs = h[name]!.data_offsets as number[];
        h[name]!.data_offsets = [offs[0]!, offs[0]! + big];
        return Buffer.concat([withPrefix(JSON.stringify(h)), body]);
      },
      editJsonText: () => {
        const chars = '{}[]",:0123456789e-. \\';
        let s = headerText;
        for (let k = 1 + int(3); k > 0; k--) {
          const at = int(s.length);
          const op = int(3);
          if (op === 0) s = s.slice(0, at) + s.slice(at + 1);
          else if (op === 1) s = s.slice(0, at) + pick([...chars]) + s.slice(at);
          else s = s.slice(0, at) + pick([...chars]) + s.slice(at + 1);
        }
        return Buffer.concat([withPrefix(s), body]);
      },
      metadata: () => {
        const h = JSON.parse(headerText) as Record<string, unknown>;
        h.__metadata__ = pick([{ k: 1 }, { k: null }, 'str', [], { k: { x: 'y' } }, null, { ok: 'fine' }]);
        return Buffer.concat([withPrefix(JSON.stringify(h)), body]);
      },
      duplicateKey: () => {
        const first = headerText.indexOf('"model.h"');
        const s = headerText.replace('"model.b"', '"model.h"');
        return Buffer.concat([withPrefix(first >= 0 ? s : headerText), body]);
      },
      appendBytes: () => Buffer.concat([base, Buffer.alloc(1 + int(64), int(256))]),
    };
    const kinds = Object.keys(mutations);
    const stats: Record<string, { ok: number; rejected: number }> = Object.fromEntries(kinds.map((k) => [k, { ok: 0, rejected: 0 }]));

    const fdsBefore = await fdCount();
    const abBefore = process.memoryUsage().arrayBuffers;
    const rssBefore = process.resourceUsage().maxRSS;
    for (let i = 0; i < CASES; i++) {
      const kind = kinds[i % kinds.length]!;
      const bytes = mutations[kind]!();
      const p = join(dir, `case-${i}-${kind}.safetensors`);
      await writeFile(p, bytes);
      const attempt = (async () => {
        const f = await SafetensorsFile.open(p);
        try {
          let total = 0;
          for (const name of f.names()) {
            const info = f.info(name);
            total += info.byteLength;
            await f.read(name);
            await f.readFloat32(name);
            if (info.byteLength > 1) await f.readBytes(name, 1, info.byteLength);
          }
          // What open() accepted can never claim more data than the file holds.
          assert.ok(total <= bytes.length, `case ${i} (${kind}): tensors claim ${total} bytes of a ${bytes.length}-byte file`);
        } finally {
          await f.close();
        }
      })();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`case ${i} (${kind}) did not settle within ${TIME_LIMIT_MS} ms`)), TIME_LIMIT_MS);
      });
      try {
        await Promise.race([attempt, timeout]);
        stats[kind]!.ok++;
      } catch (e) {
        if (!(e instanceof UserError)) {
          assert.fail(`case ${i} (${kind}) threw a non-UserError: ${(e as Error)?.stack ?? String(e)}`);
        }
        assert.ok(e.message.includes(p), `case ${i}: message names the file: ${e.message}`);
        assert.ok(!e.message.includes('\n'), `case ${i}: one-line message`);
        stats[kind]!.rejected++;
      } finally {
        clearTimeout(timer);
      }
      const grown = process.memoryUsage().arrayBuffers - abBefore;
      assert.ok(grown < 64 * 2 ** 20, `case ${i} (${kind}): ArrayBuffer memory grew by ${grown} bytes`);
      await rm(p);
    }
    if (process.env.FUZZ_VERBOSE) console.log(JSON.stringify(stats));
    const rssGrowthKb = process.resourceUsage().maxRSS - rssBefore;
    assert.ok(rssGrowthKb < 200 * 1024, `peak RSS grew by ${rssGrowthKb} KiB`);
    // A leak shows as more descriptors than before; fewer happens when a runtime handle of the process (a
    // thread pool's pipe) closes meanwhile, which is not this reader's doing.
    if (fdsBefore !== undefined) {
      const after = await fdCount();
      assert.ok(after !== undefined && after <= fdsBefore, `every file handle was closed: ${fdsBefore} descriptors before, ${after} after`);
    }
    // Each kind of corruption must actually have been caught at least once, or the fuzzer is not fuzzing.
    for (const k of kinds) {
      if (k !== 'metadata') assert.ok(stats[k]!.rejected > 0, `${k} was never rejected: ${JSON.stringify(stats[k])}`);
    }
    assert.ok(stats.metadata!.rejected > 0 && stats.metadata!.ok > 0, `metadata: ${JSON.stringify(stats.metadata)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
