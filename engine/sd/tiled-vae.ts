/**
 * Tiled VAE decoding and encoding, so large images run in the memory of one tile. What keeps tiles from showing:
 * - the parts that see the whole image run whole: the decoder's middle (post_quant_conv, conv_in, the mid block
 *   with its attention) and the encoder's middle, both at latent resolution (1/64 of the pixels; attention is
 *   the fused kernel, no score matrix); only the local parts (the decoder's up levels, the encoder's down
 *   levels: convolutions and GroupNorms) run as tiles;
 * - every GroupNorm in the tiles uses one set of statistics for the whole image, measured first on the whole
 *   input or, when it is larger than `statsSize`, on an area-averaged smaller copy of it (tiles normalised by
 *   their own statistics would each get their own colour cast);
 * - tiles overlap by at least `overlap` latent cells and are blended with weights that ramp from ≈0 at a tile's
 *   inner edges (where its convolutions saw padding instead of the neighbour's pixels) to 1;
 * - all tiles of an image have one shape, so one ONNX Runtime session serves them all.
 * With statistics from the whole input, a tiled result differs from the untiled one only by the ramped borders.
 */
import { UserError } from '../util/errors.ts';
import type { VaeArch } from './arch.ts';
import type { StableDiffusion, VaeNormStats, VaePart } from './model.ts';

export type VaeTilingMode = 'auto' | 'on' | 'off';
export const VAE_TILING_MODES: readonly VaeTilingMode[] = ['auto', 'on', 'off'];

export interface VaeTileOptions {
  /** Tile side in latent cells (8 image pixels each). */
  tile: number;
  /** Overlap between neighbouring tiles in latent cells. */
  overlap: number;
  /** Largest latent side the statistics pass runs at; larger images are area-averaged down to it first. */
  statsSize: number;
}

/** 64 latent cells = 512 px tiles, the size SD 1.x decodes untiled anyway; 16 cells (128 px) of overlap. */
export const DEFAULT_VAE_TILES: VaeTileOptions = { tile: 64, overlap: 16, statsSize: 64 };

/**
 * How far, in latent cells, a pixel of the decoder's local part sees: one cell per 3×3 conv at latent
 * resolution, half a cell per conv after each upsampling. SD's KL-f8 VAE: ≈ 13 cells, under the default overlap.
 */
export function vaeReceptiveRadius(arch: VaeArch): number {
  const levels = arch.channelMult.length;
  let r = 0;
  for (let i = 0; i < levels; i++) {
    const convs = 2 * (arch.numResBlocks + 1) + (i < levels - 1 ? 1 : 0);
    r += convs / 2 ** i;
  }
  return r + 1 / 2 ** (levels - 1);
}

export function parseVaeTiling(v: unknown, field = 'vae_tiling'): VaeTilingMode {
  if (v === undefined || v === null || v === '') return 'auto';
  if (v === true) return 'on';
  if (v === false) return 'off';
  if (typeof v === 'string' && (VAE_TILING_MODES as readonly string[]).includes(v)) return v as VaeTilingMode;
  throw new UserError(`${field} must be one of ${VAE_TILING_MODES.join(', ')}, got ${JSON.stringify(v)}`);
}

function checkOptions(o: VaeTileOptions): void {
  for (const k of ['tile', 'overlap', 'statsSize'] as const) {
    if (!Number.isInteger(o[k]) || o[k] < (k === 'overlap' ? 0 : 1)) throw new UserError(`VAE tiles: ${k} must be a whole number of latent cells, got ${o[k]}`);
  }
  if (o.overlap * 2 > o.tile) throw new UserError(`VAE tiles: overlap ${o.overlap} is more than half the tile ${o.tile}`);
}

/** Whether a latent of h × w cells is tiled: 'auto' tiles when it is larger than one tile. */
export function tilesNeeded(mode: VaeTilingMode, h: number, w: number, o: VaeTileOptions = DEFAULT_VAE_TILES): boolean {
  if (mode === 'off') return false;
  if (mode === 'on') return true;
  return h > o.tile || w > o.tile;
}

/**
 * Tiles along one axis of n cells: as few as cover it with `overlap` between neighbours when no tile is longer
 * than `tile`, then all of one length, spread evenly. Returns the length and the start of each.
 */
export function tileGrid(n: number, tile: number, overlap: number): { size: number; starts: number[] } {
  if (tile >= n) return { size: n, starts: [0] };
  const count = Math.ceil((n - overlap) / (tile - overlap));
  const size = Math.min(n, Math.ceil((n + (count - 1) * overlap) / count));
  const starts = Array.from({ length: count }, (_, i) => Math.round((i * (n - size)) / (count - 1)));
  return { size, starts };
}

/**
 * Blend weight along one axis of a tile `len` long: ramps over `ramp` samples from each edge that has a
 * neighbour, flat 1 inside and towards the image's own edges.
 */
function axisWeights(len: number, ramp: number, rampStart: boolean, rampEnd: boolean): Float32Array {
  const w = new Float32Array(len);
  for (let i = 0; i < len; i++) {
    let v = 1;
    if (rampStart) v = Math.min(v, (i + 0.5) / ramp);
    if (rampEnd) v = Math.min(v, (len - i - 0.5) / ramp);
    w[i] = v;
  }
  return w;
}

/** Area-average [C, H, W] down by an integer-free factor to [C, h, w] (each output cell the mean of the input cells it covers). */
export function areaDownscale(x: Float32Array, C: number, H: number, W: number, h: number, w: number): Float32Array {
  const out = new Float32Array(C * h * w);
  const fy = H / h;
  const fx = W / w;
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < h; y++) {
      const y0 = y * fy;
      const y1 = (y + 1) * fy;
      for (let xo = 0; xo < w; xo++) {
        const x0 = xo * fx;
        const x1 = (xo + 1) * fx;
        let acc = 0;
        for (let yy = Math.floor(y0); yy < Math.ceil(y1); yy++) {
          const wy = Math.min(y1, yy + 1) - Math.max(y0, yy);
          for (let xx = Math.floor(x0); xx < Math.ceil(x1); xx++) {
            acc += x[(c * H + yy) * W + xx]! * wy * (Math.min(x1, xx + 1) - Math.max(x0, xx));
          }
        }
        out[(c * h + y) * w + xo] = acc / (fy * fx);
      }
    }
  }
  return out;
}

/** Copies the window [y0, y0+th) × [x0, x0+tw) of every channel of [C, H, W]. */
function crop(x: Float32Array, C: number, H: number, W: number, y0: number, x0: number, th: number, tw: number): Float32Array {
  const out = new Float32Array(C * th * tw);
  for (let c = 0; c < C; c++) for (let y = 0; y < th; y++) out.set(x.subarray((c * H + y0 + y) * W + x0, (c * H + y0 + y) * W + x0 + tw), (c * th + y) * tw);
  return out;
}

interface TiledRun {
  /** Input [inC, inH, inW]. */
  x: Float32Array;
  inC: number;
  inH: number;
  inW: number;
  /** Output channels; output samples per latent cell (8 decoding, 1 encoding); input samples per latent cell (1, 8). */
  outC: number;
  outPer: number;
  inPer: number;
  part: VaePart;
  stats: VaeNormStats;
  o: VaeTileOptions;
}

/** Runs `part` over overlapping tiles of `x` with shared statistics and blends the tiles' outputs. */
async function tiled(model: StableDiffusion, r: TiledRun): Promise<Float32Array> {
  const { x, inC, inH, inW, outC, outPer, inPer, o } = r;
  const h = inH / inPer;
  const w = inW / inPer;
  const gy = tileGrid(h, o.tile, o.overlap);
  const gx = tileGrid(w, o.tile, o.overlap);
  const outH = h * outPer;
  const outW = w * outPer;
  const acc = new Float32Array(outC * outH * outW);
  const wsum = new Float32Array(outH * outW);
  const oh = gy.size * outPer;
  const ow = gx.size * outPer;
  for (const [iy, ty] of gy.starts.entries()) {
    const wy = axisWeights(oh, o.overlap * outPer, iy > 0, iy < gy.starts.length - 1);
    for (const [ix, tx] of gx.starts.entries()) {
      const wx = axisWeights(ow, o.overlap * outPer, ix > 0, ix < gx.starts.length - 1);
      const tile = crop(x, inC, inH, inW, ty * inPer, tx * inPer, gy.size * inPer, gx.size * inPer);
      const { out } = await model.vaePart(r.part, tile, { batch: 1, height: gy.size * inPer, width: gx.size * inPer }, r.stats);
      const oy = ty * outPer;
      const ox = tx * outPer;
      for (let yy = 0; yy < oh; yy++) {
        for (let xx = 0; xx < ow; xx++) {
          const wt = wy[yy]! * wx[xx]!;
          const p = (oy + yy) * outW + ox + xx;
          wsum[p]! += wt;
          for (let c = 0; c < outC; c++) acc[c * outH * outW + p]! += out[(c * oh + yy) * ow + xx]! * wt;
        }
      }
    }
  }
  const plane = outH * outW;
  for (let c = 0; c < outC; c++) for (let p = 0; p < plane; p++) acc[c * plane + p]! /= wsum[p]!;
  return acc;
}

/** The size the statistics pass runs at: the input itself, or its aspect scaled to fit `statsSize`. */
function statsGrid(h: number, w: number, statsSize: number): [number, number] {
  if (h <= statsSize && w <= statsSize) return [h, w];
  const f = Math.max(h, w) / statsSize;
  return [Math.max(1, Math.round(h / f)), Math.max(1, Math.round(w / f))];
}

/** GroupNorm statistics of a local part over the whole input [C, H, W] (H, W in samples, `per` of them per latent cell), or over a smaller copy. */
async function sharedStats(model: StableDiffusion, part: VaePart, x: Float32Array, C: number, H: number, W: number, per: number, statsSize: number): Promise<VaeNormStats> {
  const [sh, sw] = statsGrid(H / per, W / per, statsSize);
  const small = sh * per === H && sw * per === W ? x : areaDownscale(x, C, H, W, sh * per, sw * per);
  return (await model.vaePart(part, small, { batch: 1, height: sh * per, width: sw * per }, 'collect')).stats;
}

/** Channels of the VAE's middle features. */
function midChannels(model: StableDiffusion): number {
  const v = model.arch.vae;
  return v.channels * v.channelMult[v.channelMult.length - 1]!;
}

/** Decodes one latent [C, h, w] (already divided by the scaling factor) in tiles → image [3, 8h, 8w]. */
export async function decodeTiled(model: StableDiffusion, latent: Float32Array, h: number, w: number, o: VaeTileOptions = DEFAULT_VAE_TILES): Promise<Float32Array> {
  checkOptions(o);
  const C = model.arch.vae.embedDim;
  if (latent.length !== C * h * w) throw new Error(`decodeTiled: latent has ${latent.length} values, expected ${C}×${h}×${w}`);
  const { out: mid } = await model.vaePart('decoder-mid', latent, { batch: 1, height: h, width: w });
  const Cm = midChannels(model);
  const stats = await sharedStats(model, 'decoder-up', mid, Cm, h, w, 1, o.statsSize);
  return tiled(model, { x: mid, inC: Cm, inH: h, inW: w, outC: 3, outPer: 8, inPer: 1, part: 'decoder-up', stats, o });
}

/** Encodes one image [3, H, W] in [-1, 1] in tiles → latent mean [C, H/8, W/8] (not yet scaled). */
export async function encodeTiled(model: StableDiffusion, image: Float32Array, height: number, width: number, o: VaeTileOptions = DEFAULT_VAE_TILES): Promise<Float32Array> {
  checkOptions(o);
  if (height % 8 || width % 8) throw new UserError(`VAE tiles: image size ${width}x${height} must be a multiple of 8`);
  if (image.length !== 3 * height * width) throw new Error(`encodeTiled: image has ${image.length} values, expected 3×${height}×${width}`);
  const stats = await sharedStats(model, 'encoder-down', image, 3, height, width, 8, o.statsSize);
  const Cm = midChannels(model);
  const features = await tiled(model, { x: image, inC: 3, inH: height, inW: width, outC: Cm, outPer: 1, inPer: 8, part: 'encoder-down', stats, o });
  return (await model.vaePart('encoder-mid', features, { batch: 1, height: height / 8, width: width / 8 })).out;
}
