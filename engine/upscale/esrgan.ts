/**
 * An ESRGAN-family upscaler from a `.safetensors` file: RRDBNet (engine/models/rrdbnet.ts) run by ONNX Runtime,
 * one session per tile shape. Pixels go in as A1111 feeds them (`upscale_pil_patch`): BGR order, [0, 1];
 * they come back clamped, ×255 and rounded half to even (numpy's `round`). Pickled `.pth`/`.pt` files are
 * refused with a one-line conversion hint: loading them would execute code from the file.
 */
import { extname } from 'node:path';
import type { RgbImage } from '../image/decode-rgb.ts';
import { rrdbNet } from '../models/rrdbnet.ts';
import { weightContext } from '../models/layers.ts';
import type { Device } from '../runtime/providers.ts';
import { compile, type CompiledGraph } from '../runtime/session.ts';
import { SafetensorsFile } from '../safetensors/index.ts';
import { UserError } from '../util/errors.ts';
import { readRrdbLayout, type RrdbArch } from './esrgan-weights.ts';
import { splitGrid, combineGrid, upscaleTiles } from './tiles.ts';

export const PICKLE_EXTENSIONS = new Set(['.pth', '.pt', '.ckpt', '.bin']);

/** The error for a pickled model file, with the command that converts it. */
export function pickleRefusal(path: string): UserError {
  return new UserError(
    `${path} is a PyTorch pickle; lora-scripts never loads pickles (loading one runs code from the file). Convert it once to .safetensors, e.g. ` +
      `python -c "import torch,safetensors.torch as st; d=torch.load('${path}',map_location='cpu',weights_only=True); d=d.get('params_ema',d.get('params',d)); st.save_file({k:v.contiguous() for k,v in d.items()},'${path.slice(0, -extname(path).length)}.safetensors')"`,
    { status: 422 },
  );
}

/** numpy's `round`: halves go to the even neighbour. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

export class EsrganModel {
  private readonly graphs = new Map<string, Promise<CompiledGraph>>();

  private constructor(
    readonly path: string,
    readonly arch: RrdbArch,
    private readonly weights: Map<string, { shape: number[]; data: Float32Array }>,
    private readonly device: Device | undefined,
  ) {}

  static async load(path: string, device?: Device): Promise<EsrganModel> {
    if (PICKLE_EXTENSIONS.has(extname(path).toLowerCase())) throw pickleRefusal(path);
    const f = await SafetensorsFile.open(path);
    try {
      const shapes = new Map(f.names().map((n) => [n, [...f.info(n).shape]] as const));
      const { arch, keys } = readRrdbLayout(shapes, path);
      const weights = new Map<string, { shape: number[]; data: Float32Array }>();
      for (const [canon, src] of keys) {
        for (const part of ['weight', 'bias']) {
          const name = `${src}.${part}`;
          if (f.has(name)) weights.set(`${canon}.${part}`, { shape: [...f.info(name).shape], data: await f.readFloat32(name) });
        }
      }
      return new EsrganModel(path, arch, weights, device);
    } finally {
      await f.close();
    }
  }

  private graph(height: number, width: number): Promise<CompiledGraph> {
    const key = `${height}x${width}`;
    let g = this.graphs.get(key);
    if (!g) {
      const ctx = weightContext({
        shape: (k) => this.weights.get(k)?.shape,
        data: (k) => this.weights.get(k)!.data,
      });
      const { output } = rrdbNet(ctx, this.arch, { height, width });
      g = compile([output], { device: this.device });
      g.catch(() => this.graphs.delete(key));
      this.graphs.set(key, g);
    }
    return g;
  }

  /** One patch through the network, as A1111's `upscale_pil_patch`. */
  async upscalePatch(img: RgbImage): Promise<RgbImage> {
    const r = this.arch.unshuffle;
    // The unshuffling models need sides divisible by their factor: reflect-pad right and bottom, crop after.
    const H = Math.ceil(img.height / r) * r;
    const W = Math.ceil(img.width / r) * r;
    if (H - img.height >= img.height || W - img.width >= img.width) throw new UserError(`image ${img.width}×${img.height} is too small for this ${this.arch.scale}× model`);
    const reflect = (i: number, n: number) => (i < n ? i : 2 * n - 2 - i);
    const x = new Float32Array(3 * H * W);
    for (let y = 0; y < H; y++) {
      const sy = reflect(y, img.height);
      for (let xx = 0; xx < W; xx++) {
        const si = (sy * img.width + reflect(xx, img.width)) * 3;
        // BGR: channel 0 is blue.
        for (let c = 0; c < 3; c++) x[c * H * W + y * W + xx] = img.data[si + 2 - c]! / 255;
      }
    }
    const [out] = await (await this.graph(H, W)).run({ image: { data: x, shape: [1, 3, H, W] } });
    const s = this.arch.scale;
    const OH = H * s;
    const OW = W * s;
    const oh = img.height * s;
    const ow = img.width * s;
    const y = out!.data as Float32Array;
    const data = new Uint8Array(oh * ow * 3);
    for (let j = 0; j < oh; j++)
      for (let i = 0; i < ow; i++)
        for (let c = 0; c < 3; c++) data[(j * ow + i) * 3 + 2 - c] = roundHalfEven(255 * Math.min(1, Math.max(0, y[c * OH * OW + j * OW + i]!)));
    return { width: ow, height: oh, data };
  }

  /** The whole image, in tiles of `tile` pixels overlapping by `overlap` (A1111 `ESRGAN_tile` / `ESRGAN_tile_overlap`; 0 = one piece). */
  async upscale(img: RgbImage, tile: number, overlap: number): Promise<RgbImage> {
    if (tile <= 0) return this.upscalePatch(img);
    const grid = splitGrid(img, tile, tile, overlap);
    return combineGrid(await upscaleTiles(grid, (t) => this.upscalePatch(t)));
  }
}
