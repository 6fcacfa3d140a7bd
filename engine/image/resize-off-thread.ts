/**
 * A1111's picture resizes (engine/image/resize-mode.ts) and the only-masked cut and paste built on them
 * (engine/image/inpaint-area.ts) on a worker thread. A Lanczos resize of a large picture is 0.3–0.7 s of
 * JavaScript here; on a server's main thread that would hold every route while it runs.
 */
import { WorkerPool, WorkerStartError, WorkerTaskError } from '../util/worker-pool.ts';
import type { Pixels } from './crop.ts';
import { cutArea, pasteArea, type InpaintArea } from './inpaint-area.ts';
import type { PilFilterName } from './pil-resize.ts';
import { resizeImage } from './resize-mode.ts';

let pool: WorkerPool | undefined;

/** A copy that owns its buffer: it can be transferred while the caller keeps its picture. */
const own = (img: Pixels): Pixels => ({ width: img.width, height: img.height, channels: img.channels, data: img.data.slice() });
/** A result that may be its (transferred) input is returned as a copy of its own. */
const fresh = (out: Pixels, ...inputs: Pixels[]): Pixels => (inputs.includes(out) ? own(out) : out);

export const resizeInWorker = (mode: 0 | 1 | 2, img: Pixels, width: number, height: number, filter: PilFilterName): Pixels => fresh(resizeImage(mode, img, width, height, filter), img);
export const cutAreaInWorker = (img: Pixels, area: InpaintArea, width: number, height: number): Pixels => fresh(cutArea(img, area, width, height), img);
export const pasteAreaInWorker = (original: Pixels, generated: Pixels, area: InpaintArea): Pixels => fresh(pasteArea(original, generated, area), original, generated);

async function offThread(fn: string, args: unknown[], sent: Pixels[], here: () => Pixels): Promise<Pixels> {
  pool ??= new WorkerPool(import.meta.url, 'image resize');
  try {
    return await pool.run<Pixels>(fn, args, sent.map((p) => p.data.buffer as ArrayBuffer));
  } catch (e) {
    if (!(e instanceof WorkerStartError)) throw e instanceof WorkerTaskError ? new Error(`image resize: ${e.message}`, { cause: e }) : e;
    return here();
  }
}

/** `resizeImage` off the calling thread; the caller's picture is copied, never detached. */
export async function resizeImageOffThread(mode: 0 | 1 | 2, img: Pixels, width: number, height: number, filter: PilFilterName = 'lanczos'): Promise<Pixels> {
  if (img.width === width && img.height === height && mode === 0) return img;
  const copy = own(img);
  return offThread('resizeInWorker', [mode, copy, width, height, filter], [copy], () => resizeImage(mode, img, width, height, filter));
}

/** `cutArea` off the calling thread. */
export async function cutAreaOffThread(img: Pixels, area: InpaintArea, width: number, height: number): Promise<Pixels> {
  const copy = own(img);
  return offThread('cutAreaInWorker', [copy, area, width, height], [copy], () => cutArea(img, area, width, height));
}

/** `pasteArea` off the calling thread. */
export async function pasteAreaOffThread(original: Pixels, generated: Pixels, area: InpaintArea): Promise<Pixels> {
  const a = own(original);
  const b = own(generated);
  return offThread('pasteAreaInWorker', [a, b, area], [a, b], () => pasteArea(original, generated, area));
}
