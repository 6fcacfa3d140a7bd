import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { listFilesRecursive } from '../engine/util/list-files.ts';

test("model-folder walk: natural order, hidden entries skipped, linked folders followed once, a model folder listed whole", async () => {
  const root = await mkdtemp(join(tmpdir(), 'walk-'));
  try {
    const shared = await mkdtemp(join(tmpdir(), 'walk-shared-'));
    await writeFile(join(shared, 'linked.safetensors'), 'x');
    await symlink(root, join(shared, 'loop')); // a link back up: walked once, not forever
    for (const n of ['m10.safetensors', 'm2.safetensors', 'notes.txt', '.hidden.safetensors']) await writeFile(join(root, n), 'x');
    await mkdir(join(root, '.cache'));
    await writeFile(join(root, '.cache/c.safetensors'), 'x');
    await mkdir(join(root, 'pipe'));
    await writeFile(join(root, 'pipe/model_index.json'), '{}');
    await writeFile(join(root, 'pipe/inner.safetensors'), 'x');
    await symlink(shared, join(root, 'shared'));
    const names = async (opts = {}) => (await listFilesRecursive(root, new Set(['.safetensors']), opts)).map((p) => relative(root, p));
    assert.deepEqual(await names(), ['m2.safetensors', 'm10.safetensors', 'pipe/inner.safetensors', 'shared/linked.safetensors']);
    const isModelFolder = async (d: string) => d.endsWith('pipe');
    assert.deepEqual(await names({ isModelFolder }), ['m2.safetensors', 'm10.safetensors', 'pipe', 'shared/linked.safetensors']);
    await rm(shared, { recursive: true, force: true });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
