/**
 * A1111's upscaler list (`shared.sd_upscalers`): the built-in `None`, `Lanczos` and `Nearest`, then one
 * entry per model file in the ESRGAN folder, named by its file stem. `upscale(image, name, scale)` follows
 * A1111's `Upscaler.upscale`: the target is the scaled size floored to multiples of 8; the upscaler runs
 * until the image reaches it (at most 3 passes, so a 2× model can reach 8×), then a Lanczos resize lands
 * on the target exactly. Resizes are Pillow's (engine/image/pil-resize.ts).
 */
import { realpath } from 'node:fs/promises';
import { basename, extname, resolve } from 'node:path';
import { listFilesRecursive } from '../util/list-files.ts';
import type { RgbImage } from '../image/decode-rgb.ts';
import { pilResize } from '../image/pil-resize.ts';
import type { Device } from '../runtime/providers.ts';
import { readHeaderOnly } from '../safetensors/index.ts';
import { UserError } from '../util/errors.ts';
import { EsrganModel, PICKLE_EXTENSIONS, pickleRefusal } from './esrgan.ts';
import { readRrdbLayout } from './esrgan-weights.ts';

export interface UpscalerEntry {
  name: string;
  kind: 'none' | 'lanczos' | 'nearest' | 'esrgan';
  /** The model file (ESRGAN), else null. */
  path: string | null;
  /** The model's own factor (4 for the built-ins, as A1111 lists them). */
  scale: number;
  /** Why this file cannot be used (a pickle, unreadable weights); listed anyway, as A1111 lists every file. */
  problem?: string;
}

const BUILT_IN: UpscalerEntry[] = [
  { name: 'None', kind: 'none', path: null, scale: 4 },
  { name: 'Lanczos', kind: 'lanczos', path: null, scale: 4 },
  { name: 'Nearest', kind: 'nearest', path: null, scale: 4 },
];
const MODEL_EXTENSIONS = new Set(['.safetensors', ...PICKLE_EXTENSIONS]);
/** A1111 tries the upscaler this many times to reach the target (`Upscaler.upscale`). */
const MAX_PASSES = 3;

export interface TileSettings {
  /** A1111 `ESRGAN_tile` (0 = whole image). */
  tile: number;
  /** A1111 `ESRGAN_tile_overlap`. */
  overlap: number;
}

export class UpscalerLibrary {
  private models: UpscalerEntry[] = [];
  private loaded: EsrganModel | null = null;
  readonly dir: string;

  constructor(
    dir: string,
    readonly device?: Device,
  ) {
    this.dir = resolve(dir);
  }

  /** Rescans the ESRGAN folder (subfolders too); each `.safetensors` header is read to learn its scale. */
  async refresh(): Promise<UpscalerEntry[]> {
    const found = await listFilesRecursive(this.dir, MODEL_EXTENSIONS);
    const models: UpscalerEntry[] = [];
    for (const p of found) {
      const name = basename(p, extname(p));
      if (extname(p).toLowerCase() !== '.safetensors') {
        models.push({ name, kind: 'esrgan', path: p, scale: 4, problem: pickleRefusal(p).message });
        continue;
      }
      try {
        const h = await readHeaderOnly(p);
        const shapes = new Map(h.tensors.map((t) => [t.name, t.shape] as const));
        models.push({ name, kind: 'esrgan', path: p, scale: readRrdbLayout(shapes, p).arch.scale });
      } catch (e) {
        models.push({ name, kind: 'esrgan', path: p, scale: 4, problem: (e as Error).message });
      }
    }
    this.models = models;
    if (this.loaded && !models.some((m) => m.path === this.loaded!.path)) this.loaded = null;
    return this.list();
  }

  list(): UpscalerEntry[] {
    return [...BUILT_IN, ...this.models];
  }

  find(name: string): UpscalerEntry | undefined {
    return this.list().find((u) => u.name === name);
  }

  private async model(entry: UpscalerEntry): Promise<EsrganModel> {
    if (entry.problem) throw new UserError(`upscaler '${entry.name}': ${entry.problem}`, { status: 422 });
    const path = await realpath(entry.path!);
    if (this.loaded?.path !== path) this.loaded = await EsrganModel.load(path, this.device);
    return this.loaded;
  }

  /** One pass of the upscaler itself (`do_upscale`): a model at its own factor, Lanczos/Nearest at `scale`. */
  private async pass(img: RgbImage, entry: UpscalerEntry, scale: number, tiles: TileSettings): Promise<RgbImage> {
    if (entry.kind === 'none') return img;
    if (entry.kind === 'esrgan') return (await this.model(entry)).upscale(img, tiles.tile, tiles.overlap);
    const w = Math.trunc(img.width * scale);
    const h = Math.trunc(img.height * scale);
    if (w < 1 || h < 1) throw new UserError(`upscale factor ${scale} leaves no pixels of a ${img.width}×${img.height} image`, { status: 422 });
    return { width: w, height: h, data: pilResize(img.data, img.width, img.height, 3, w, h, entry.kind) };
  }

  /** A1111's `Upscaler.upscale(img, scale)` with the upscaler called `name`. */
  async upscale(img: RgbImage, name: string, scale: number, tiles: TileSettings): Promise<RgbImage> {
    const entry = this.find(name);
    if (!entry) throw new UserError(`could not find upscaler named ${name}`, { status: 422 });
    const destW = Math.trunc(Math.floor((img.width * scale) / 8) * 8);
    const destH = Math.trunc(Math.floor((img.height * scale) / 8) * 8);
    if (destW < 1 || destH < 1) throw new UserError(`upscale to ${img.width * scale}×${img.height * scale} leaves no pixels once floored to multiples of 8`, { status: 422 });
    let cur = img;
    for (let i = 0; i < MAX_PASSES; i++) {
      if (cur.width >= destW && cur.height >= destH && scale !== 1) break;
      const before = [cur.width, cur.height];
      cur = await this.pass(cur, entry, scale, tiles);
      if (cur.width === before[0] && cur.height === before[1]) break;
    }
    if (cur.width !== destW || cur.height !== destH) cur = { width: destW, height: destH, data: pilResize(cur.data, cur.width, cur.height, 3, destW, destH, 'lanczos') };
    return cur;
  }
}
