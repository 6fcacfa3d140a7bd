/**
 * LORA_SCRIPTS_HUGE_PAGES=1 (bin/huge-pages.js): the CLI starts itself again with glibc's malloc tunables. The
 * second process serves; killing the first one outright (SIGKILL, which it cannot hand on) ends the second too,
 * and a plain command's exit code comes back through the first.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { mallocTunablesFor } from '../bin/huge-pages.js';
import { launchCli } from './support/cli-process.ts';
import { repoRoot } from './support/paths.ts';

const cli = join(repoRoot, 'bin/lora-scripts.js');
const env = { LORA_SCRIPTS_HUGE_PAGES: '1', GLIBC_TUNABLES: '' };
const linux = process.platform === 'linux';

test('a command run with huge pages exits as it would without', { skip: !linux && 'glibc tunables are Linux-only' }, () => {
  const bad = spawnSync(process.execPath, [cli, 'no-such-command'], { env: { ...process.env, ...env }, encoding: 'utf8' });
  assert.equal(bad.status, 1, bad.stderr);
  assert.match(bad.stderr, /unknown command 'no-such-command'/);
  const help = spawnSync(process.execPath, [cli, '--version'], { env: { ...process.env, ...env }, encoding: 'utf8' });
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^\d+\.\d+\.\d+/);
});

test('serve with huge pages: the second process has the tunables, and SIGKILL on the first ends it', { skip: !linux && 'glibc tunables are Linux-only' }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-scripts-huge-'));
  const serve = launchCli('serve', ['serve', '--port', '0', '--data-dir', dir], env);
  const launcher = serve.child;
  try {
    const url = (await serve.waitFor(/on (http:\/\/127\.0\.0\.1:\d+)/, 30_000))[1]!;
    assert.equal((await fetch(`${url}/sdapi/v1/samplers`)).status, 200);
    const server = (await readFile(`/proc/${launcher.pid}/task/${launcher.pid}/children`, 'utf8')).trim().split(/\s+/).map(Number).filter(Boolean);
    assert.equal(server.length, 1, 'one second process');
    const environ = (await readFile(`/proc/${server[0]}/environ`, 'utf8')).split('\0');
    assert.ok(environ.includes(`GLIBC_TUNABLES=${mallocTunablesFor('serve')}`), environ.filter((e) => e.startsWith('GLIBC')).join(' '));
    launcher.kill('SIGKILL');
    // The server goes with it: within a few seconds nothing answers on its port.
    const deadline = Date.now() + 15000;
    let answering = true;
    while (answering && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      answering = await fetch(`${url}/sdapi/v1/samplers`).then(() => true, () => false);
    }
    assert.equal(answering, false, 'the second process outlived the first');
  } finally {
    await serve.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
