/** ONNX Runtime's empty `mat-debug-<pid>.log` in the temp folder is gone once a session exists, and after exit. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './support/paths.ts';

test("no mat-debug-<pid>.log is left in the temp folder by a process that ran a session", () => {
  const script = `
    import { existsSync } from 'node:fs';
    import * as g from './engine/graph/index.ts';
    import { evaluate } from './engine/runtime/session.ts';
    const x = g.constant([1, 2], [2]);
    const out = await evaluate([g.add(x, x)]);
    console.log(JSON.stringify({ pid: process.pid, value: Array.from(out[0].data), during: existsSync(${JSON.stringify(tmpdir())} + '/mat-debug-' + process.pid + '.log') }));
  `;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: repoRoot, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.deepEqual(out.value, [2, 4], 'the session really ran');
  assert.equal(out.during, false, 'removed once the runtime started');
  assert.equal(existsSync(join(tmpdir(), `mat-debug-${out.pid}.log`)), false);
});
