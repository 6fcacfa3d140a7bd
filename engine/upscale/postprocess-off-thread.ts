/**
 * `postprocessUpscale` on a worker thread. ONNX Runtime's `run` is synchronous, and an ESRGAN pass over a
 * picture takes seconds to minutes on a CPU: on a server's main thread it would hold every route meanwhile.
 * The thread keeps its own library per folder, so a loaded model stays loaded between requests.
 */
import type { Device } from '../runtime/providers.ts';
import type { RgbImage } from '../image/decode-rgb.ts';
import { WorkerPool, WorkerStartError, WorkerTaskError } from '../util/worker-pool.ts';
import { isUserError } from '../util/errors.ts';
import { postprocessUpscale, type ExtrasUpscale } from './postprocess.ts';
import { UpscalerLibrary, type TileSettings } from './upscalers.ts';

type Result = Awaited<ReturnType<typeof postprocessUpscale>>;

let pool: WorkerPool | undefined;
const libraries = new Map<string, UpscalerLibrary>();

/** The worker's side. */
export async function upscaleInWorker(dir: string, device: Device | undefined, image: RgbImage, req: ExtrasUpscale, tiles: TileSettings): Promise<Result> {
  const key = `${device ?? ''}\0${dir}`;
  let lib = libraries.get(key);
  if (!lib) libraries.set(key, (lib = new UpscalerLibrary(dir, device)));
  await lib.refresh();
  const r = await postprocessUpscale(lib, image, req, tiles);
  // The input comes back unchanged when no upscaler runs: its buffer belongs to the request's copy, which may go.
  return r.image === image ? { ...r, image: { ...image, data: image.data.slice() } } : r;
}

/** `postprocessUpscale(lib, …)` off the calling thread; the caller's picture is copied, never detached. */
export async function postprocessUpscaleOffThread(lib: UpscalerLibrary, image: RgbImage, req: ExtrasUpscale, tiles: TileSettings): Promise<Result> {
  pool ??= new WorkerPool(import.meta.url, 'upscale', { size: 1 });
  const copy: RgbImage = { ...image, data: image.data.slice() };
  try {
    return await pool.run<Result>('upscaleInWorker', [lib.dir, lib.device, copy, req, tiles], [copy.data.buffer as ArrayBuffer]);
  } catch (e) {
    if (isUserError(e)) throw e;
    if (!(e instanceof WorkerStartError)) throw e instanceof WorkerTaskError ? new Error(`upscale: ${e.message}`, { cause: e }) : e;
    return postprocessUpscale(lib, image, req, tiles);
  }
}
