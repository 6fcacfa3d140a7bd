import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { parseDocument } from 'yaml';
import { trainConfigKeys, trainConfigFields, renderConfigReference } from '../engine/train/config-fields.ts';
import { loadTrainConfig } from '../engine/train/config.ts';
import { repoRoot, fixturesDir } from './support/paths.ts';

const defaultYaml = join(repoRoot, 'configs/lora_default.yaml');
const docs = join(repoRoot, 'docs/training.md');

test('configs/lora_default.yaml has every schema key, commented, with the schema default', async () => {
  const text = await readFile(defaultYaml, 'utf8');
  const doc = parseDocument(text);
  assert.deepEqual(doc.errors, []);
  const values = doc.toJS() as Record<string, unknown>;
  assert.deepEqual(Object.keys(values).sort(), [...trainConfigKeys].sort(), 'same key set as the schema');
  const lines = text.split('\n');
  for (const key of trainConfigKeys) {
    const f = trainConfigFields[key] as { default?: unknown };
    if ('default' in f) assert.deepEqual(values[key], f.default, `${key} in lora_default.yaml differs from the schema default`);
    const at = lines.findIndex((l) => l.startsWith(`${key}:`));
    assert.ok(at > 0 && lines[at - 1]!.startsWith('#'), `${key} has a comment line above it`);
  }
});

test('configs/lora_default.yaml loads once its two required paths point at real things', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-default-'));
  try {
    const doc = parseDocument(await readFile(defaultYaml, 'utf8'));
    await mkdir(join(dir, String(doc.get('train_data_dir'))), { recursive: true });
    doc.set('base_model', join(fixturesDir, 'sd-tiny/diffusers'));
    const p = join(dir, 'cfg.yaml');
    await writeFile(p, doc.toString());
    const { config, warnings } = await loadTrainConfig(p);
    assert.deepEqual(warnings, []);
    assert.equal(config.output_dir, join(dir, 'output'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('docs/training.md names every key and its reference table is the one generated from the schema', async () => {
  const text = await readFile(docs, 'utf8');
  for (const key of trainConfigKeys) assert.ok(text.includes(`\`${key}\``), `docs/training.md does not mention \`${key}\``);
  const m = /<!-- config-reference:start -->\n([\s\S]*?)\n<!-- config-reference:end -->/.exec(text);
  assert.ok(m, 'config-reference markers');
  assert.equal(
    m[1]!.trim(),
    renderConfigReference(),
    'the table is stale: regenerate it with renderConfigReference() from engine/train/config-fields.ts',
  );
});
