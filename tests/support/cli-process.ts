// A `lora-scripts` subprocess whose output the caller can wait on (the distributed tests and bench start a
// front and workers this way).
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './paths.ts';

const bin = join(repoRoot, 'bin/lora-scripts.js');

export interface CliProcess {
  name: string;
  child: ChildProcess;
  /** stdout and stderr so far. */
  out: string;
  /** Resolves with the first match of `re` in the output, rejects if the process exits or `ms` pass first. */
  waitFor(re: RegExp, ms?: number): Promise<RegExpExecArray>;
  /** SIGKILL, then wait for the exit. */
  stop(): Promise<void>;
}

export function launchCli(name: string, args: string[], env: Record<string, string> = {}): CliProcess {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const p: CliProcess = {
    name,
    child,
    out: '',
    waitFor: (re, ms = 60_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(p.out);
          if (m) {
            clearTimeout(timer);
            child.stdout!.off('data', check);
            child.off('exit', gone);
            resolve(m);
          }
        };
        const gone = () => reject(new Error(`${name} exited before printing ${re}:\n${p.out}`));
        const timer = setTimeout(() => reject(new Error(`${name}: no ${re} within ${ms} ms:\n${p.out}`)), ms);
        // A wait that lost a race (Promise.any over several processes) must not keep the test process alive.
        timer.unref();
        child.stdout!.on('data', check);
        child.once('exit', gone);
        check();
      }),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    },
  };
  child.stdout!.on('data', (d) => (p.out += d));
  child.stderr!.on('data', (d) => (p.out += d));
  return p;
}
