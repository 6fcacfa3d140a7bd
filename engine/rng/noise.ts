import { UserError } from '../util/errors.ts';
import { PhiloxGenerator } from './philox.ts';
import { TorchCpuGenerator } from './torch-cpu.ts';

/**
 * A1111's image noise (`modules/rng.py` ImageRNG): the initial latent noise for one image from its seed,
 * optionally blended with a subseed's noise (slerp) and resized from another resolution, and the later
 * draws ancestral / SDE samplers make on the same per-image generator.
 */

/** A1111's `randn_source` option. `GPU` is taken to be an NVIDIA GPU, whose CUDA Philox the NV source reproduces. */
export type NoiseSource = 'CPU' | 'GPU' | 'NV';

export interface NormalGenerator {
  randn(shape: readonly number[]): Float32Array;
}

export function createGenerator(source: NoiseSource, seed: number): NormalGenerator {
  checkSeed(seed, 'seed');
  switch (source) {
    case 'CPU':
      return new TorchCpuGenerator(seed);
    case 'GPU':
    case 'NV':
      return new PhiloxGenerator(seed);
    default:
      throw new UserError(`randn_source must be "CPU", "GPU" or "NV", got ${JSON.stringify(source)}`);
  }
}

export interface ImageNoiseOptions {
  source: NoiseSource;
  seed: number;
  subseed?: number;
  /** 0 disables the subseed. */
  subseedStrength?: number;
  /** Width/height in pixels the seed's noise is generated at; <= 0 disables resizing. */
  seedResizeFromW?: number;
  seedResizeFromH?: number;
  /** Eta noise seed delta (ENSD): later draws come from a generator seeded with seed + delta. */
  etaNoiseSeedDelta?: number;
  /** Latent shape [channels, height/8, width/8]. */
  shape: readonly [number, number, number];
}

/**
 * The noise stream of one image. `first()` is the initial noise; `next()` the noise a sampler draws
 * afterwards (A1111 replaces k-diffusion's `torch.randn_like` with this stream).
 */
export class ImageNoise {
  private generator: NormalGenerator;
  private drewFirst = false;
  readonly shape: readonly [number, number, number];

  constructor(private readonly opts: ImageNoiseOptions) {
    checkShape(opts.shape);
    checkSeed(opts.seed, 'seed');
    if (opts.subseed !== undefined) checkSeed(opts.subseed, 'subseed');
    const strength = opts.subseedStrength ?? 0;
    if (!Number.isFinite(strength)) throw new UserError(`subseed_strength must be a finite number, got ${strength}`);
    const ensd = opts.etaNoiseSeedDelta ?? 0;
    if (!Number.isInteger(ensd)) throw new UserError(`eta_noise_seed_delta must be an integer, got ${ensd}`);
    this.shape = opts.shape;
    this.generator = createGenerator(opts.source, opts.seed);
  }

  first(): Float32Array {
    if (this.drewFirst) throw new Error('ImageNoise.first() called twice');
    this.drewFirst = true;
    const { source, seed, shape } = this.opts;
    const strength = this.opts.subseedStrength ?? 0;
    const fromW = Math.trunc(this.opts.seedResizeFromW ?? 0);
    const fromH = Math.trunc(this.opts.seedResizeFromH ?? 0);
    const resized = fromH > 0 && fromW > 0;
    const noiseShape: [number, number, number] = resized
      ? [shape[0], Math.floor(fromH / 8), Math.floor(fromW / 8)]
      : [shape[0], shape[1], shape[2]];
    const sameShape = noiseShape[1] === shape[1] && noiseShape[2] === shape[2];

    const subnoise =
      this.opts.subseed !== undefined && strength !== 0
        ? createGenerator(source, this.opts.subseed).randn(noiseShape)
        : undefined;
    // A1111 draws the resized noise from a fresh generator and the full-size noise from the image's own.
    let noise = sameShape ? this.generator.randn(shape) : createGenerator(source, seed).randn(noiseShape);
    if (subnoise) noise = slerpColumns(strength, noise, subnoise, noiseShape);
    if (!sameShape) {
      const x = this.generator.randn(shape);
      pasteCentered(x, shape, noise, noiseShape);
      noise = x;
    }

    const ensd = this.opts.etaNoiseSeedDelta ?? 0;
    if (ensd !== 0) this.generator = createGenerator(source, seed + ensd);
    return noise;
  }

  next(): Float32Array {
    if (!this.drewFirst) return this.first();
    return this.generator.randn(this.shape);
  }
}

/** The initial noise of one image, as A1111 makes it for these settings. */
export function createNoise(opts: ImageNoiseOptions): Float32Array {
  return new ImageNoise(opts).first();
}

export interface BatchNoiseOptions extends Omit<ImageNoiseOptions, 'seed' | 'subseed'> {
  seeds: readonly number[];
  subseeds?: readonly number[];
}

/**
 * A batch of image noise streams (one generator per image, as A1111 does so that a batch gives the same
 * images as generating each alone). `next()` returns [batch, c, h, w]; its first call is the initial noise.
 */
export class BatchNoise {
  readonly images: ImageNoise[];

  constructor(opts: BatchNoiseOptions) {
    if (opts.seeds.length === 0) throw new UserError('a batch needs at least one seed');
    const subseeds = opts.subseeds;
    this.images = opts.seeds.map(
      (seed, i) =>
        new ImageNoise({
          ...opts,
          seed,
          // A1111 uses subseed 0 for images past the end of the subseed list.
          subseed: subseeds === undefined ? undefined : (subseeds[i] ?? 0),
        }),
    );
  }

  next(): Float32Array {
    const parts = this.images.map((im) => im.next());
    const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

/**
 * A1111's spherical interpolation, quirks included: on a [C, H, W] tensor the norm and dot product run
 * over dim 1 (H), so each (channel, column) vector is interpolated on its own; when the mean cosine is
 * above 0.9995 it falls back to `low*val + high*(1-val)` (weights as A1111 writes them, i.e. swapped).
 */
export function slerpColumns(
  val: number,
  low: Float32Array,
  high: Float32Array,
  shape: readonly [number, number, number],
): Float32Array {
  const [c, h, w] = shape;
  const out = new Float32Array(low.length);
  const cols = c * w;
  const dot = new Float64Array(cols);
  let dotSum = 0;
  for (let ci = 0; ci < c; ci++) {
    for (let x = 0; x < w; x++) {
      let nl = 0;
      let nh = 0;
      for (let y = 0; y < h; y++) {
        const i = (ci * h + y) * w + x;
        nl += low[i]! * low[i]!;
        nh += high[i]! * high[i]!;
      }
      nl = Math.sqrt(nl);
      nh = Math.sqrt(nh);
      let d = 0;
      for (let y = 0; y < h; y++) {
        const i = (ci * h + y) * w + x;
        d += (low[i]! / nl) * (high[i]! / nh);
      }
      dot[ci * w + x] = d;
      dotSum += d;
    }
  }
  if (dotSum / cols > 0.9995) {
    for (let i = 0; i < out.length; i++) out[i] = low[i]! * val + high[i]! * (1 - val);
    return out;
  }
  for (let ci = 0; ci < c; ci++) {
    for (let x = 0; x < w; x++) {
      const omega = Math.acos(dot[ci * w + x]!);
      const so = Math.sin(omega);
      const a = Math.sin((1 - val) * omega) / so;
      const b = Math.sin(val * omega) / so;
      for (let y = 0; y < h; y++) {
        const i = (ci * h + y) * w + x;
        out[i] = a * low[i]! + b * high[i]!;
      }
    }
  }
  return out;
}

/** Copies `noise` into the centre of `x` (cropping whichever is larger), as A1111's seed resize does. */
function pasteCentered(
  x: Float32Array,
  shape: readonly [number, number, number],
  noise: Float32Array,
  noiseShape: readonly [number, number, number],
): void {
  const [c, H, W] = shape;
  const [, nh, nw] = noiseShape;
  let dx = Math.floor((W - nw) / 2);
  let dy = Math.floor((H - nh) / 2);
  const w = dx >= 0 ? nw : nw + 2 * dx;
  const h = dy >= 0 ? nh : nh + 2 * dy;
  const tx = dx < 0 ? 0 : dx;
  const ty = dy < 0 ? 0 : dy;
  dx = Math.max(-dx, 0);
  dy = Math.max(-dy, 0);
  // Python slices clamp at the end; a negative h or w copies nothing.
  const rows = Math.min(h, H - ty, nh - dy);
  const colsN = Math.min(w, W - tx, nw - dx);
  for (let ci = 0; ci < c; ci++) {
    for (let y = 0; y < rows; y++) {
      for (let xx = 0; xx < colsN; xx++) {
        x[(ci * H + ty + y) * W + tx + xx] = noise[(ci * nh + dy + y) * nw + dx + xx]!;
      }
    }
  }
}

function checkShape(shape: readonly number[]): void {
  if (shape.length !== 3 || shape.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new UserError(`noise shape must be [channels, height, width] of positive integers, got [${shape.join(', ')}]`);
  }
}

function checkSeed(seed: number, field: string): void {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new UserError(`${field} must be a non-negative integer, got ${seed}`);
  }
}
