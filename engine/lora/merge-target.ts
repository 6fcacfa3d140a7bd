/**
 * The arithmetic of merging LoRA modules into one weight, and the worker pool that runs it off the event
 * loop. A merge into SD 1.5 is seconds of GEMMs (ONNX Runtime runs them synchronously on the calling thread)
 * and JS loops; in a worker the server keeps answering meanwhile. Weights travel through one scratch buffer
 * in shared memory per merge, reused for every target: this thread copies a weight in, the worker merges it
 * there, this thread copies it back. With a buffer of its own per weight instead, sent back by transfer, a
 * merge into SD 1.5 (kohya's default targets, 1.3 GB of weights) left 1.4 GB more resident than its pristine
 * copies, even after a full GC (memory the worker thread's allocator had handed out); with the scratch it adds
 * 0.4 GB, the worker thread included (bench/scratch runs, 2026-12-06).
 */
import { applyModule } from './delta.ts';
import { addLowRankOrt } from './lowrank-ort.ts';
import { WorkerPool, WorkerStartError, WorkerTaskError } from '../util/worker-pool.ts';
import type { F32Tensor, LoraModule } from './types.ts';

export interface TargetJob {
  m: LoraModule;
  mult: number;
}

export interface TargetResult {
  /** The merged weight (the array passed in, changed in place). */
  data: Float32Array;
  /** Per job: null when applied, else why it was skipped. */
  outcome: (string | null)[];
}

/** A LoRA / LoCon module whose update is a plain product up @ down (no CP core, no DoRA). */
export function isPlain(m: LoraModule): boolean {
  return (m.kind === 'lora' || m.kind === 'locon') && !!m.tensors.up && !!m.tensors.down && !m.tensors.mid && !m.dora;
}

function fitsLowRank(m: LoraModule, n: number): boolean {
  const { up, down } = m.tensors;
  const out = up!.shape[0]!, r = down!.shape[0]!;
  return up!.data.length === out * r && out * (down!.data.length / r) === n;
}

/**
 * Applies `jobs` (in stack order) to one weight `data` of `shape`, in place. Runs of plain modules are
 * additive, so they go through one GEMM with their ranks concatenated when the weight has at least `ortMin`
 * elements; DoRA and the other kinds are applied one by one, in stack order, on the running weight.
 */
export async function mergeTarget(data: Float32Array, shape: number[], jobs: TargetJob[], ortMin: number): Promise<TargetResult> {
  const outcome: (string | null)[] = jobs.map(() => null);
  for (let i = 0; i < jobs.length; ) {
    let j = i;
    while (j < jobs.length && isPlain(jobs[j]!.m) && fitsLowRank(jobs[j]!.m, data.length)) j++;
    if (j > i && data.length >= ortMin) {
      await addLowRankBatch(data, jobs.slice(i, j));
      i = j;
      continue;
    }
    const job = jobs[i]!;
    try {
      applyModule(data, shape, job.m, job.mult);
    } catch (e) {
      outcome[i] = (e as Error).message;
    }
    i++;
  }
  return { data, outcome };
}

/** weight += Σ_jobs (mult·scale·up) @ down as one GEMM over the concatenated ranks. */
async function addLowRankBatch(view: Float32Array, jobs: TargetJob[]): Promise<void> {
  const rows = jobs[0]!.m.tensors.up!.shape[0]!;
  const cols = view.length / rows;
  const R = jobs.reduce((n, j) => n + j.m.tensors.down!.shape[0]!, 0);
  const u = new Float32Array(rows * R);
  const d = jobs.length === 1 ? jobs[0]!.m.tensors.down!.data : new Float32Array(R * cols);
  let off = 0;
  for (const { m, mult } of jobs) {
    const r = m.tensors.down!.shape[0]!, up = m.tensors.up!.data, f = mult * m.scale;
    for (let o = 0; o < rows; o++) for (let k = 0; k < r; k++) u[o * R + off + k] = f * up[o * r + k]!;
    if (jobs.length > 1) d.set(m.tensors.down!.data, off * cols);
    off += r;
  }
  await addLowRankOrt(view, u, d, rows, R, cols);
}

let pool: WorkerPool | undefined;

/** A tensor whose data owns its buffer (a view would be cloned with the whole buffer behind it). */
function owned(t: F32Tensor): F32Tensor {
  const d = t.data;
  return d.byteOffset === 0 && d.byteLength === d.buffer.byteLength ? t : { shape: t.shape, data: d.slice() };
}

/** What a worker needs of a module: its kind, scale and tensors (not the file's other modules). */
function portable(m: LoraModule): LoraModule {
  const tensors: Record<string, F32Tensor> = {};
  for (const [k, t] of Object.entries(m.tensors)) tensors[k] = owned(t);
  return { ...m, tensors, ...(m.dora ? { dora: { ...m.dora, magnitude: owned(m.dora.magnitude) } } : {}) };
}

/** The worker's side: `mergeTarget` in place on the first `length` values of `scratch`. */
export async function mergeTargetShared(scratch: SharedArrayBuffer, length: number, shape: number[], jobs: TargetJob[], ortMin: number): Promise<(string | null)[]> {
  return (await mergeTarget(new Float32Array(scratch, 0, length), shape, jobs, ortMin)).outcome;
}

/**
 * `mergeTarget` on a worker thread, in place on `view` (a weight or a row slice of one), through `scratch`
 * (shared memory at least as large as `view`).
 * Returns per job null when applied, else why it was skipped. When no worker can start, the merge runs on
 * this thread (the loop is held meanwhile).
 */
export async function mergeTargetOffThread(view: Float32Array, shape: number[], jobs: TargetJob[], ortMin: number, scratch: SharedArrayBuffer): Promise<(string | null)[]> {
  pool ??= new WorkerPool(import.meta.url, 'LoRA merge');
  if (view.byteLength > scratch.byteLength) throw new Error(`LoRA merge: scratch of ${scratch.byteLength} bytes is smaller than a ${view.byteLength}-byte weight`);
  const shared = new Float32Array(scratch, 0, view.length);
  shared.set(view);
  const portableJobs = jobs.map((j) => ({ m: portable(j.m), mult: j.mult }));
  try {
    const outcome = await pool.run<(string | null)[]>('mergeTargetShared', [scratch, view.length, shape, portableJobs, ortMin]);
    view.set(shared);
    return outcome;
  } catch (e) {
    if (!(e instanceof WorkerStartError)) throw e instanceof WorkerTaskError ? new Error(`LoRA merge: ${e.message}`, { cause: e }) : e;
    return (await mergeTarget(view, shape, jobs, ortMin)).outcome;
  }
}
