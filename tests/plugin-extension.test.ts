/**
 * The WebUI extension's Python side (client, dataset hand-off, LoRA hand-off into an A1111 Lora folder,
 * settings and messages) under pytest from Debian's python3, against real lora-scripts servers that its
 * fixtures start from this checkout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, fixturesDir } from './support/paths.ts';

const PYTHON = '/usr/bin/python3';

test('plugin/ pytest suite passes against a real server', { timeout: 600_000 }, () => {
  assert.ok(existsSync(PYTHON), `${PYTHON} is missing: install Debian's python3 with python3-pytest and python3-requests (.ci/run does)`);
  const probe = spawnSync(PYTHON, ['-c', 'import pytest, requests'], { encoding: 'utf8' });
  assert.equal(probe.status, 0, `Debian's python3 lacks pytest or requests (apt-get install python3-pytest python3-requests): ${probe.stderr}`);
  const r = spawnSync(PYTHON, ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests'], {
    cwd: join(repoRoot, 'plugin'),
    encoding: 'utf8',
    env: { ...process.env, LORA_SCRIPTS_FIXTURES: fixturesDir, PYTHONDONTWRITEBYTECODE: '1' },
    timeout: 590_000,
  });
  assert.equal(r.status, 0, `pytest failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /\d+ passed/);
  assert.doesNotMatch(r.stdout, /\d+ (failed|error)/);
});
