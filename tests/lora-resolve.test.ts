import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { LoraLibrary, closestNames } from '../engine/lora/resolve.ts';
import { stackFromPrompt } from '../engine/lora/prompt-stack.ts';

const kohyaA = join(fixturesDir, 'sd-tiny/lora-kohya/lora_a.safetensors');
const kohyaB = join(fixturesDir, 'sd-tiny/lora-kohya/lora_b.safetensors');

async function library(): Promise<{ dir: string; lib: LoraLibrary; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'lora-lib-'));
  await mkdir(join(dir, 'styles/deep'), { recursive: true });
  // Stems differ from the files' ss_output_name (lora_a / lora_b).
  await copyFile(kohyaA, join(dir, 'first.safetensors'));
  await copyFile(kohyaB, join(dir, 'styles/deep/second.safetensors'));
  await writeFile(join(dir, 'notes.txt'), 'not a lora');
  return { dir, lib: new LoraLibrary(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
}

test('names resolve by file stem and by ss_output_name, in subfolders', async () => {
  const { dir, lib, cleanup } = await library();
  try {
    assert.equal((await lib.resolve('first')).path, join(dir, 'first.safetensors'));
    assert.equal((await lib.resolve('lora_a')).path, join(dir, 'first.safetensors'));
    const b = await lib.resolve('lora_b');
    assert.equal(b.path, join(dir, 'styles/deep/second.safetensors'));
    assert.equal(b.name, 'second');
    assert.equal(b.alias, 'lora_b');
    assert.equal((await lib.resolve('styles/deep/second')).path, b.path);
    assert.equal(lib.list().length, 2);
  } finally {
    await cleanup();
  }
});

test('an alias claimed by two files is reachable only by stem', async () => {
  const { dir, lib, cleanup } = await library();
  try {
    await copyFile(kohyaA, join(dir, 'styles/third.safetensors'));
    await lib.refresh();
    await assert.rejects(lib.resolve('lora_a'), /not found/);
    assert.equal((await lib.resolve('third')).path, join(dir, 'styles/third.safetensors'));
  } finally {
    await cleanup();
  }
});

test('a LoRA added after the first scan is found without an explicit refresh', async () => {
  const { dir, lib, cleanup } = await library();
  try {
    await lib.resolve('first');
    await copyFile(kohyaB, join(dir, 'late.safetensors'));
    assert.equal((await lib.resolve('late')).path, join(dir, 'late.safetensors'));
  } finally {
    await cleanup();
  }
});

test('names that leave the LoRA folder are refused, also through a symlink', async () => {
  const { dir, lib, cleanup } = await library();
  const outside = await mkdtemp(join(tmpdir(), 'lora-outside-'));
  try {
    await copyFile(kohyaA, join(outside, 'evil.safetensors'));
    await symlink(outside, join(dir, 'link'));
    for (const bad of ['../evil', '../../etc/passwd', 'styles/../../x', '/etc/passwd', 'link/evil']) {
      await assert.rejects(lib.resolve(bad), (e: Error & { status?: number }) => e.name === 'UserError' && /refused/.test(e.message) && e.status === 400, bad);
    }
  } finally {
    await cleanup();
    await rm(outside, { recursive: true, force: true });
  }
});

test('an unknown name is an error listing the closest names', async () => {
  const { lib, cleanup } = await library();
  try {
    await assert.rejects(lib.resolve('frist'), (e: Error & { status?: number }) => /not found/.test(e.message) && /closest names: first/.test(e.message) && e.status === 404);
    assert.deepEqual(closestNames('lora_c', ['lora_a', 'lora_b', 'zebra']), ['lora_a', 'lora_b']);
  } finally {
    await cleanup();
  }
});

test('a prompt becomes a stripped prompt and a resolved stack; an unknown tag name fails with suggestions', async () => {
  const { dir, lib, cleanup } = await library();
  try {
    const p = await stackFromPrompt('a cat <lora:lora_a:0.8>, <lora:second:1:0.5> <hypernet:x>', lib);
    assert.equal(p.prompt, 'a cat ,  ');
    assert.deepEqual(p.stack, [
      { path: join(dir, 'first.safetensors'), te: 0.8, unet: 0.8, name: 'lora_a' },
      { path: join(dir, 'styles/deep/second.safetensors'), te: 1, unet: 0.5, name: 'second' },
    ]);
    assert.deepEqual(p.other.map((o) => o.type), ['hypernet']);
    await assert.rejects(stackFromPrompt('<lora:secnod>', lib), /closest names: second/);
  } finally {
    await cleanup();
  }
});

test('several LoRA folders (A1111 lora dir + LyCORIS dir) are searched in order', async () => {
  const { dir, cleanup } = await library();
  const lyco = await mkdtemp(join(tmpdir(), 'lora-lyco-'));
  try {
    await copyFile(kohyaB, join(lyco, 'lyco_only.safetensors'));
    const lib = new LoraLibrary([dir, lyco]);
    assert.equal((await lib.resolve('lyco_only')).path, join(lyco, 'lyco_only.safetensors'));
    assert.equal((await lib.resolve('first')).path, join(dir, 'first.safetensors'));
    assert.equal((await lib.resolve('./lyco_only')).path, join(lyco, 'lyco_only.safetensors'));
    await assert.rejects(lib.resolve('../x'), /refused/);
  } finally {
    await cleanup();
    await rm(lyco, { recursive: true, force: true });
  }
});
