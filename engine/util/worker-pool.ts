/**
 * Worker threads that run the exported functions of one module, so long CPU work (LoRA merging, prompt
 * parsing) happens off the event loop: a server keeps answering progress, interrupt and every other route
 * meanwhile. ONNX Runtime's `run` is synchronous on the calling thread, so even GEMMs must be called from a
 * worker to leave the loop free.
 *
 * Large typed arrays should travel by transfer: `run(fn, args, transfer)` moves the listed buffers to the
 * worker, and every ArrayBuffer behind a typed array in a function's result is moved back (a result must
 * not hold buffers the worker still uses). A view into a larger buffer is cloned with its whole buffer, so
 * callers send views that own their buffer.
 *
 * Workers start on first use (the package runs from its TypeScript sources: each loads tsx, then the
 * module), hold the process open only while they have work, and a crashed worker fails its tasks and is
 * replaced by the next call.
 */
import { Worker, type Transferable } from 'node:worker_threads';
import { UserError } from './errors.ts';

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
function transferables(v, out, depth) {
  if (v === null || typeof v !== 'object' || depth > 4) return out;
  if (ArrayBuffer.isView(v)) {
    if (v.buffer instanceof ArrayBuffer) out.add(v.buffer);
    return out;
  }
  for (const x of Array.isArray(v) ? v : Object.values(v)) transferables(x, out, depth + 1);
  return out;
}
import(workerData.tsx)
  .then((tsx) => tsx.tsImport(workerData.module, workerData.module))
  .then(
    (mod) => {
      parentPort.on('message', async ({ fn, args }) => {
        try {
          if (typeof mod[fn] !== 'function') throw new Error(workerData.module + ' exports no function ' + fn);
          const value = await mod[fn](...args);
          parentPort.postMessage({ value }, [...transferables(value, new Set(), 0)]);
        } catch (e) {
          parentPort.postMessage({ error: { name: e && e.name, message: String((e && e.message) || e), status: e && e.status } });
        }
      });
      parentPort.postMessage({ ready: true });
    },
    (e) => parentPort.postMessage({ startError: String((e && e.message) || e) }),
  );
`;

/**
 * tsx's loader API as an absolute URL: an eval'd worker resolves bare specifiers from the process's working
 * folder, which is wherever the user started the server, not this package.
 */
const TSX_API = import.meta.resolve('tsx/esm/api');

/** The pool could not start a worker (the caller may run the function on its own thread instead). */
export class WorkerStartError extends Error {
  override name = 'WorkerStartError';
}

/** An error thrown by the function in the worker (other than a UserError, which arrives as one), its name kept. */
export class WorkerTaskError extends Error {
  constructor(
    message: string,
    readonly errorName: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = errorName || 'Error';
  }
}

interface Task {
  fn: string;
  args: unknown[];
  transfer: Transferable[];
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  ready: Promise<void>;
  task: Task | null;
  closing?: boolean;
}

const pools = new Set<WorkerPool>();

/**
 * The module's file URL for the worker to import. A module that tsx's `tsImport` loaded (any module of a
 * worker's own graph) sees `?tsx-namespace=…` in its `import.meta.url`; a pool started there on
 * `import.meta.url` (a LoRA merge inside the generation thread) must import the file itself.
 */
function moduleFile(url: string): string {
  const u = new URL(url);
  for (const k of [...u.searchParams.keys()]) if (k === 'namespace' || k === 'tsx-namespace') u.searchParams.delete(k);
  return u.href;
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly waiting: Task[] = [];
  private readonly size: number;
  /** Set once a worker failed to start: later calls fail at once instead of trying again. */
  private startError: WorkerStartError | null = null;

  /** `moduleUrl`: the module whose exports run (a file: URL, e.g. `new URL('./x.ts', import.meta.url).href`). */
  constructor(
    private readonly moduleUrl: string,
    private readonly name: string,
    opts: { size?: number } = {},
  ) {
    this.size = Math.max(1, opts.size ?? 1);
    pools.add(this);
  }

  /** Calls `fn(...args)` in a worker; `transfer` lists buffers of `args` to move rather than copy. */
  run<T>(fn: string, args: unknown[], transfer: Transferable[] = []): Promise<T> {
    if (this.startError) return Promise.reject(this.startError);
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ fn, args, transfer, resolve: resolve as (v: unknown) => void, reject });
      this.dispatch();
    });
  }

  /** Ends the workers (a later call starts new ones); tasks not finished are rejected. */
  async close(): Promise<void> {
    const slots = this.slots.splice(0);
    for (const s of slots) s.closing = true;
    for (const t of this.waiting.splice(0)) t.reject(new Error(`${this.name} worker pool closed`));
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  /** Ends the workers of every pool of the process (server shutdown, tests). */
  static async closeAll(): Promise<void> {
    await Promise.all([...pools].map((p) => p.close()));
  }

  private dispatch(): void {
    while (this.waiting.length) {
      let slot = this.slots.find((s) => !s.task);
      if (!slot && this.slots.length < this.size) slot = this.start();
      if (!slot) return;
      const task = this.waiting.shift()!;
      slot.task = task;
      const s = slot;
      // A busy worker holds the process open (a CLI awaiting a merge must not exit); an idle one does not.
      s.worker.ref();
      s.ready.then(
        () => s.worker.postMessage({ fn: task.fn, args: task.args }, task.transfer),
        (e: Error) => {
          for (const t of this.waiting.splice(0)) t.reject(e);
          this.finish(s, undefined, e);
        },
      );
    }
  }

  private start(): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { module: moduleFile(this.moduleUrl), tsx: TSX_API }, name: this.name });
    worker.unref();
    let started!: () => void, failed!: (e: Error) => void;
    const ready = new Promise<void>((res, rej) => ((started = res), (failed = rej)));
    ready.catch(() => {});
    const slot: Slot = { worker, ready, task: null };
    worker.on('message', (m: { ready?: boolean; startError?: string; value?: unknown; error?: { name: string; message: string; status?: number } }) => {
      if (m.ready) return started();
      if (m.startError !== undefined) {
        this.startError = new WorkerStartError(`${this.name} worker failed to start: ${m.startError}`);
        failed(this.startError);
        void worker.terminate();
        return;
      }
      // A user error stays one across the thread boundary (a server answers it with 4xx, not 500).
      if (m.error) this.finish(slot, undefined, m.error.name === 'UserError' ? new UserError(m.error.message, { status: m.error.status }) : new WorkerTaskError(m.error.message, m.error.name, m.error.status));
      else this.finish(slot, m.value);
    });
    let isReady = false;
    void ready.then(() => (isReady = true), () => {});
    const gone = (e: Error) => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      if (!isReady && !slot.closing) {
        this.startError ??= new WorkerStartError(`${this.name} worker failed to start: ${e.message}`);
        failed(this.startError);
      } else {
        failed(e);
        if (slot.task) this.finish(slot, undefined, e);
      }
    };
    worker.on('error', gone);
    worker.on('exit', (code) => gone(new Error(`${this.name} worker exited (code ${code})`)));
    this.slots.push(slot);
    return slot;
  }

  private finish(slot: Slot, value: unknown, error?: Error): void {
    const task = slot.task;
    slot.task = null;
    slot.worker.unref();
    if (task) {
      if (error) task.reject(error);
      else task.resolve(value);
    }
    this.dispatch();
  }
}
