import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './support/paths.ts';

const bin = join(repoRoot, 'bin/lora-scripts.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

test('every subcommand has --help', () => {
  for (const cmd of ['serve', 'train', 'label', 'generate', 'merge', 'convert', 'inspect']) {
    const r = run(cmd, '--help');
    assert.equal(r.status, 0, `${cmd} --help exited ${r.status}: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`Usage: lora-scripts ${cmd}`));
  }
});

test('an unknown subcommand fails with a message', () => {
  const r = run('frobnicate');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /unknown command/);
});
