import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { LoraLibrary } from '../engine/lora/resolve.ts';
import { addnetHash, loraFileHash } from '../engine/lora/hash.ts';
import { writeSafetensors } from '../engine/safetensors/index.ts';
import { LoraIndex } from '../server/loras.ts';
import { HashCache } from '../engine/util/hash-cache.ts';

const kohyaA = join(fixturesDir, 'sd-tiny/lora-kohya/lora_a.safetensors');
const kohyaB = join(fixturesDir, 'sd-tiny/lora-kohya/lora_b.safetensors');

test('the server resolves <lora:NAME> to the same file as the CLI, and hashes it the same way (cached)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-index-'));
  try {
    await mkdir(join(dir, 'sub'), { recursive: true });
    // lora_a's alias (ss_output_name) is claimed by two files, so only stems reach them; lora_b's alias is unique.
    await copyFile(kohyaA, join(dir, 'first.safetensors'));
    await copyFile(kohyaA, join(dir, 'sub/again.safetensors'));
    await copyFile(kohyaB, join(dir, 'sub/second.safetensors'));
    // A file whose stem is another file's alias, and one carrying its own hash.
    await copyFile(kohyaB, join(dir, 'lora_b.safetensors'));
    await writeSafetensors(join(dir, 'stamped.safetensors'), { 'lora_unet_x.alpha': { dtype: 'F32', shape: [], data: new Float32Array([4]) } }, { sshs_model_hash: 'ABCDEF0123456789' });
    await writeFile(join(dir, 'old.pt'), 'pickle bytes, never opened');

    const cli = new LoraLibrary(dir);
    const cache = join(dir, 'cache.json');
    const server = new LoraIndex(dir, new HashCache(cache));
    await server.refresh();
    await cli.refresh();
    // Listed as A1111 lists them: one entry per stem (no two files here share one).
    assert.deepEqual(server.list().map((e) => e.path), cli.list().map((e) => e.path));
    for (const name of ['first', 'again', 'second', 'lora_b', 'stamped', 'old', 'none']) {
      const want = await cli.resolve(name).then((e) => e.path, () => null);
      assert.equal(server.resolve(name)?.path ?? null, want, name);
    }
    assert.equal(server.resolve('lora_a'), null, 'an alias two files claim is refused, as the CLI refuses it');
    await assert.rejects(cli.resolve('lora_a'));

    const first = server.resolve('first')!;
    assert.equal(await server.shortHash(first), (await loraFileHash(first.path)).slice(0, 12));
    assert.equal(await server.shortHash(first), (await addnetHash(kohyaA)).slice(0, 12));
    assert.equal(await server.shortHash(server.resolve('stamped')!), 'abcdef012345');
    assert.equal(await server.shortHash(server.resolve('old')!), (await loraFileHash(join(dir, 'old.pt'))).slice(0, 12));
    // Two files with one stem: A1111's table keeps the later file, in the earlier one's place.
    await copyFile(kohyaB, join(dir, 'sub/first.safetensors'));
    await server.refresh();
    assert.deepEqual(server.list().filter((e) => e.name === 'first').map((e) => e.path), [join(dir, 'sub/first.safetensors')]);
    assert.equal(server.list()[0]!.name, 'first');
    assert.equal(server.resolve('first')!.path, join(dir, 'sub/first.safetensors'));
    // The computed hash is cached by size + mtime, so a restart does not rehash.
    const stored = JSON.parse(await import('node:fs/promises').then((f) => f.readFile(cache, 'utf8')));
    assert.equal(stored.hashes[`lora/${first.path}`].sha256, await addnetHash(kohyaA));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
