import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeBufferAtomic, writeFileAtomic } from '../engine/util/atomic-write.ts';

test('atomic write replaces content and leaves no temporary file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'aw-'));
  const p = join(dir, 'a.txt');
  await writeFile(p, 'old');
  await writeBufferAtomic(p, 'new');
  assert.equal(await readFile(p, 'utf8'), 'new');
  assert.deepEqual(await readdir(dir), ['a.txt']);
});

test('a failed write keeps the old file intact', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'aw-'));
  const p = join(dir, 'a.txt');
  await writeFile(p, 'old');
  await assert.rejects(
    writeFileAtomic(p, async (fh) => {
      await fh.writeFile('half');
      throw new Error('killed');
    }),
    /killed/,
  );
  assert.equal(await readFile(p, 'utf8'), 'old');
  assert.deepEqual(await readdir(dir), ['a.txt']);
});
