/**
 * What fronts and workers say to each other through Redis. Everything here is plain JSON.
 *
 * - Jobs: one BullMQ queue (`QUEUE_NAME`, keys under `KEY_PREFIX`). A job's data is a `JobEnvelope`; its
 *   return value a `JobAnswer` (errors caused by the request travel as answers, so the front answers them with
 *   the same status and body as the single process; only crashes fail the BullMQ job).
 * - Progress: the worker calls `job.updateProgress(WireState)`; fronts hear it through BullMQ's QueueEvents.
 * - Control: fronts publish a `ControlMessage` on `CONTROL_CHANNEL`; the worker running that job acts on it.
 * - Announcements: every worker keeps `workerKey(id)` (a `WorkerAnnouncement`) alive with a short TTL.
 */
import type { RawImage } from '../backend.ts';
import { HttpError, ValidationError, type ValidationIssue } from '../errors.ts';
import { UserError, isUserError } from '../../engine/util/errors.ts';
import { CancelledError, type RunningState } from '../queue.ts';

export const KEY_PREFIX = 'lora-scripts';
export const QUEUE_NAME = 'jobs';
export const CONTROL_CHANNEL = `${KEY_PREFIX}:control`;
export const WORKER_KEY_PREFIX = `${KEY_PREFIX}:worker:`;
export const workerKey = (id: string): string => `${WORKER_KEY_PREFIX}${id}`;

/** What a front puts in the queue. */
export interface JobEnvelope {
  /** The task id clients see (`task(…)`, `train-…`). */
  id: string;
  /** RunningState.kind, e.g. `scripts_txt2img`. */
  kind: string;
  owner: string | null;
  /** Which worker-side handler runs it (see server/distributed/handlers.ts). */
  handler: string;
  data: unknown;
  /** The front's options when the job was queued: the worker runs with exactly these. */
  options: Record<string, unknown>;
  /** Only workers carrying this label take the job (training pinned to a kind of machine). */
  label: string | null;
  /** Preferred worker: the one that announced this checkpoint loaded and this LoRA stack cached. */
  prefer: string | null;
  queuedAt: number;
}

export type WireError =
  | { type: 'http'; status: number; detail: string; errorName: string }
  | { type: 'user'; status: number; message: string }
  | { type: 'validation'; issues: ValidationIssue[] }
  | { type: 'cancelled'; message: string }
  | { type: 'bug'; name: string; message: string };

/** A job's BullMQ return value. */
export type JobAnswer =
  | { ok: true; value: unknown; worker: string; optionChanges: Record<string, unknown>; saveOptions: boolean }
  | { ok: false; error: WireError; worker: string };

export interface ControlMessage {
  action: 'interrupt' | 'skip' | 'cancel';
  id: string;
}

/** RunningState as it travels: the preview, when the worker rendered one, as raw pixels in base64. */
export interface WireState extends Omit<RunningState, 'preview'> {
  worker: string;
  preview: WireImage | null;
  /** Handler-specific extra (training sends its job record). */
  extra?: unknown;
}

export interface WireImage {
  width: number;
  height: number;
  channels: 1 | 3 | 4;
  data: string;
}

export interface WorkerAnnouncement {
  id: string;
  host: string;
  pid: number;
  labels: string[];
  device: string;
  concurrency: number;
  /** Jobs running now. */
  busy: number;
  freeMemBytes: number;
  totalMemBytes: number;
  /** Checkpoint names (relative to the shared checkpoint folder) and LoRA names it can see. */
  checkpoints: string[];
  loras: string[];
  /** What each slot holds: loaded checkpoint (name) and the cached LoRA stacks (keys, see stackKey). */
  loaded: { checkpoint: string | null; stacks: string[] }[];
  at: number;
}

export function toWireImage(im: RawImage): WireImage {
  return { width: im.width, height: im.height, channels: im.channels, data: Buffer.from(im.data.buffer, im.data.byteOffset, im.data.byteLength).toString('base64') };
}

export function fromWireImage(w: WireImage): RawImage {
  const b = Buffer.from(w.data, 'base64');
  return { width: w.width, height: w.height, channels: w.channels, data: new Uint8Array(b.buffer, b.byteOffset, b.byteLength) };
}

export function toWireError(e: unknown): WireError {
  if (e instanceof HttpError) return { type: 'http', status: e.status, detail: e.detail, errorName: e.errorName };
  if (e instanceof ValidationError) return { type: 'validation', issues: e.issues };
  if (e instanceof CancelledError) return { type: 'cancelled', message: e.message };
  if (isUserError(e)) return { type: 'user', status: e.status, message: e.message };
  return { type: 'bug', name: e instanceof Error ? e.constructor.name || 'Error' : 'Error', message: e instanceof Error ? e.message : String(e) };
}

/** The same class and fields as thrown on the worker, so the front's error handler answers the same body. */
export function fromWireError(w: WireError): Error {
  switch (w.type) {
    case 'http':
      return new HttpError(w.status, w.detail, w.errorName);
    case 'validation':
      return new ValidationError(w.issues);
    case 'cancelled':
      return new CancelledError(w.message);
    case 'user':
      return new UserError(w.message, { status: w.status });
    case 'bug': {
      const e = new Error(w.message);
      // errorBody reports the constructor's name; keep the worker's.
      Object.defineProperty(e, 'constructor', { value: { name: w.name } });
      return e;
    }
  }
}

/** BullMQ job ids may not contain ':' (its key separator); task ids are client-chosen, so they are encoded. */
export function bullJobId(taskId: string): string {
  return `j-${Buffer.from(taskId, 'utf8').toString('base64url')}`;
}

export function taskIdOf(bullId: string): string | null {
  if (!bullId.startsWith('j-')) return null;
  return Buffer.from(bullId.slice(2), 'base64url').toString('utf8');
}

/** A LoRA stack as workers cache it: names and multipliers in prompt order. */
export function stackKey(loras: { name: string; te: number; unet: number }[]): string {
  return loras.map((l) => `${l.name}:${l.te}:${l.unet}`).join('|');
}
