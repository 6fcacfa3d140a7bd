/**
 * ONNX Runtime's bundled telemetry library opens an empty `mat-debug-<pid>.log` in the system temp folder when
 * the runtime's environment starts (at the first session) and never removes it: one stray file per process,
 * thousands on a machine that runs many. It stays empty (tracing is off), so it is removed as soon as the
 * environment exists, and again at exit in case it appears later.
 */
import { statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const traceFile = () => join(tmpdir(), `mat-debug-${process.pid}.log`);

function removeIfEmpty(): void {
  try {
    if (statSync(traceFile()).size === 0) unlinkSync(traceFile());
  } catch {
    /* not there, or not ours to remove */
  }
}

let watching = false;

/** Call with the first session's creation; removes the trace file once the runtime has started. */
export function removeOrtTraceFile(started: Promise<unknown>): void {
  if (watching) return;
  watching = true;
  started.then(removeIfEmpty, removeIfEmpty);
  process.once('exit', removeIfEmpty);
}
