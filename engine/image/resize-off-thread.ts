/**
 * A1111's resize_image (engine/image/resize-mode.ts) on a worker thread. A Lanczos resize of a large picture is
 * 0.3–0.7 s of JavaScript here; on a server's main thread that would hold every route while it runs.
 */
import { WorkerPool, WorkerStartError, WorkerTaskError } from '../util/worker-pool.ts';
import type { Pixels } from './crop.ts';
import type { PilFilterName } from './pil-resize.ts';
import { resizeImage } from './resize-mode.ts';

let pool: WorkerPool | undefined;

/** The worker's side: the result's buffer travels back by transfer. */
export function resizeInWorker(mode: 0 | 1 | 2, img: Pixels, width: number, height: number, filter: PilFilterName): Pixels {
  const out = resizeImage(mode, img, width, height, filter);
  return out === img ? { ...img, data: img.data.slice() } : out;
}

/** `resizeImage` off the calling thread; the caller's picture is copied, never detached. */
export async function resizeImageOffThread(mode: 0 | 1 | 2, img: Pixels, width: number, height: number, filter: PilFilterName = 'lanczos'): Promise<Pixels> {
  if (img.width === width && img.height === height && mode === 0) return img;
  pool ??= new WorkerPool(import.meta.url, 'image resize');
  const copy: Pixels = { width: img.width, height: img.height, channels: img.channels, data: img.data.slice() };
  try {
    return await pool.run<Pixels>('resizeInWorker', [mode, copy, width, height, filter], [copy.data.buffer as ArrayBuffer]);
  } catch (e) {
    if (!(e instanceof WorkerStartError)) throw e instanceof WorkerTaskError ? new Error(`image resize: ${e.message}`, { cause: e }) : e;
    return resizeImage(mode, img, width, height, filter);
  }
}
