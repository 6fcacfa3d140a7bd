import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { copyFile, mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadClipTokenizer, ClipTokenizer } from '../engine/text/tokenizer.ts';
import { UserError } from '../engine/util/errors.ts';
import { fixturesDir } from './support/paths.ts';

const tokDir = join(fixturesDir, 'sd-tiny', 'diffusers', 'tokenizer');
const goldens = JSON.parse(readFileSync(join(fixturesDir, 'sd-tiny', 'golden', 'tokenizer.json'), 'utf8')) as Array<{
  prompt: string;
  ids: number[];
  padded77: number[];
}>;

function checkAll(t: ClipTokenizer): void {
  assert.ok(goldens.length > 0);
  for (const g of goldens) {
    assert.deepEqual([t.bos, ...t.encode(g.prompt), t.eos], g.ids, `ids of ${JSON.stringify(g.prompt)}`);
    assert.deepEqual(t.encodePadded(g.prompt, g.padded77.length), g.padded77, `padded ids of ${JSON.stringify(g.prompt)}`);
  }
}

test('tokenizer.json: every golden prompt gives the reference ids, unpadded and padded to 77', async () => {
  const t = await loadClipTokenizer(tokDir);
  assert.equal(t.bos, goldens[0]!.ids[0]);
  assert.equal(t.eos, goldens[0]!.ids.at(-1));
  checkAll(t);
});

test('vocab.json + merges.txt alone give the same ids', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tok-'));
  try {
    await copyFile(join(tokDir, 'vocab.json'), join(dir, 'vocab.json'));
    await copyFile(join(tokDir, 'merges.txt'), join(dir, 'merges.txt'));
    checkAll(await loadClipTokenizer(dir));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a diffusers model folder is searched for its tokenizer/ subfolder', async () => {
  const t = await loadClipTokenizer(join(fixturesDir, 'sd-tiny', 'diffusers'));
  assert.deepEqual(t.encode(goldens[0]!.prompt), goldens[0]!.ids.slice(1, -1));
});

test('no tokenizer: a UserError that says which files to put where', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tok-'));
  try {
    await assert.rejects(loadClipTokenizer(dir), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /vocab\.json/);
      assert.match(e.message, /merges\.txt/);
      assert.ok(e.message.includes(dir));
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('broken tokenizer files are UserErrors naming the file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tok-'));
  try {
    await writeFile(join(dir, 'vocab.json'), '{"a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}');
    await writeFile(join(dir, 'merges.txt'), '#version: 0.2\na b c\n');
    await assert.rejects(loadClipTokenizer(dir), (e: unknown) => e instanceof UserError && e.message.includes('merges.txt'));
    const sub = join(dir, 'j');
    await mkdir(sub);
    await writeFile(join(sub, 'tokenizer.json'), '{not json');
    await assert.rejects(loadClipTokenizer(sub), (e: unknown) => e instanceof UserError && e.message.includes('tokenizer.json'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('special tokens in the text map to their ids; lower-casing and whitespace runs do not change ids', async () => {
  const t = await loadClipTokenizer(tokDir);
  assert.deepEqual(t.encode('a<|endoftext|>b'), [...t.encode('a'), t.eos, ...t.encode('b')]);
  assert.deepEqual(t.encode('  A\tPHOTO\n of '), t.encode('a photo of'));
  assert.deepEqual(t.encode(''), []);
});

test('padding to 77 truncates long prompts but keeps the end token', async () => {
  const t = await loadClipTokenizer(tokDir);
  const long = goldens.reduce((a, b) => (b.ids.length > a.ids.length ? b : a));
  assert.ok(long.ids.length > 77, 'fixture has a prompt longer than 77 tokens');
  const padded = t.encodePadded(long.prompt);
  assert.equal(padded.length, 77);
  assert.equal(padded[76], t.eos);
  assert.deepEqual(padded.slice(0, 76), long.ids.slice(0, 76));
});
