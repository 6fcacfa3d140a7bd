/**
 * Pillow's `Image.resize` for 8-bit images, reproduced to the uint8 level: the CLIP and WD14 preprocessors
 * were fitted on images resized this way, and a resize that differs by one level here and there moves
 * `pixel_values` by up to 0.015. Pillow's convolution resampler (libImaging/Resample.c):
 * - a separable filter, horizontal pass first, each pass rounded and clipped to uint8;
 * - when shrinking, the kernel is widened by the scale factor (antialiasing);
 * - tap weights are normalised per output pixel, then quantised to 22-bit fixed point.
 * Only the algorithm's published behaviour is followed here (filter formulas, centre convention, rounding).
 */

/** Pillow's resampling filter ids, as `preprocessor_config.json`'s `resample` stores them. */
export const PIL_FILTERS = { nearest: 0, lanczos: 1, bilinear: 2, bicubic: 3, box: 4, hamming: 5 } as const;
export type PilFilterName = keyof typeof PIL_FILTERS;

interface Filter {
  support: number;
  weight(x: number): number;
}

const sinc = (x: number): number => (x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x));

// Pillow's bicubic uses a = -0.5 (Keys' Catmull-Rom spline).
const CUBIC_A = -0.5;

const FILTERS: Record<Exclude<PilFilterName, 'nearest'>, Filter> = {
  box: { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: { support: 1, weight: (x) => (Math.abs(x) < 1 ? 1 - Math.abs(x) : 0) },
  hamming: {
    support: 1,
    weight: (x) => {
      const a = Math.abs(x);
      if (a === 0) return 1;
      if (a >= 1) return 0;
      return (Math.sin(Math.PI * a) / (Math.PI * a)) * (0.54 + 0.46 * Math.cos(Math.PI * a));
    },
  },
  bicubic: {
    support: 2,
    weight: (x) => {
      const a = Math.abs(x);
      if (a < 1) return ((CUBIC_A + 2) * a - (CUBIC_A + 3)) * a * a + 1;
      if (a < 2) return (((a - 5) * a + 8) * a - 4) * CUBIC_A;
      return 0;
    },
  },
  lanczos: { support: 3, weight: (x) => (Math.abs(x) < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

const PRECISION_BITS = 32 - 8 - 2;

interface Taps {
  /** First input index of each output pixel. */
  start: Int32Array;
  count: Int32Array;
  /** Fixed-point weights, `ksize` per output pixel. */
  k: Int32Array;
  ksize: number;
}

function computeTaps(inSize: number, outSize: number, f: Filter): Taps {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = f.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C's (int) cast truncates toward zero; negatives are clamped to 0 right after, so trunc is exact.
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      const v = f.weight((x + xmin - center + 0.5) / filterScale);
      w[x] = v;
      total += v;
    }
    for (let x = 0; x < xmax; x++) {
      const v = total !== 0 ? w[x]! / total : w[x]!;
      // Round half away from zero, as Pillow's normalize_coeffs_8bpc does.
      k[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    start[xx] = xmin;
    count[xx] = xmax;
  }
  return { start, count, k, ksize };
}

const clip8 = (acc: number): number => {
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
};

function nearest(src: Uint8Array, w: number, h: number, c: number, ow: number, oh: number): Uint8Array {
  const out = new Uint8Array(ow * oh * c);
  for (let y = 0; y < oh; y++) {
    const sy = Math.min(h - 1, Math.floor((y + 0.5) * (h / oh)));
    for (let x = 0; x < ow; x++) {
      const sx = Math.min(w - 1, Math.floor((x + 0.5) * (w / ow)));
      for (let ch = 0; ch < c; ch++) out[(y * ow + x) * c + ch] = src[(sy * w + sx) * c + ch]!;
    }
  }
  return out;
}

/**
 * Resizes interleaved uint8 pixels (HWC, `channels` per pixel) to `outW`×`outH` as Pillow's `Image.resize`
 * does with the given filter. Fixed-point accumulation stays below 2^31 for any real tap count, so plain
 * JS numbers reproduce Pillow's int32 arithmetic exactly.
 */
export function pilResize(
  src: Uint8Array,
  width: number,
  height: number,
  channels: number,
  outW: number,
  outH: number,
  filter: PilFilterName = 'bicubic',
): Uint8Array {
  if (!(outW >= 1 && outH >= 1 && Number.isInteger(outW) && Number.isInteger(outH))) throw new Error(`pilResize: bad output size ${outW}×${outH}`);
  if (src.length !== width * height * channels) throw new Error(`pilResize: ${src.length} bytes for ${width}×${height}×${channels}`);
  if (filter === 'nearest') return nearest(src, width, height, channels, outW, outH);
  const f = FILTERS[filter];
  let cur = src;
  let cw = width;
  const half = 1 << (PRECISION_BITS - 1);
  if (outW !== width) {
    const t = computeTaps(width, outW, f);
    const out = new Uint8Array(outW * height * channels);
    for (let y = 0; y < height; y++) {
      const row = y * width * channels;
      for (let x = 0; x < outW; x++) {
        const s = t.start[x]!;
        const n = t.count[x]!;
        const kb = x * t.ksize;
        for (let ch = 0; ch < channels; ch++) {
          let acc = half;
          for (let i = 0; i < n; i++) acc += cur[row + (s + i) * channels + ch]! * t.k[kb + i]!;
          out[(y * outW + x) * channels + ch] = clip8(acc);
        }
      }
    }
    cur = out;
    cw = outW;
  }
  if (outH !== height) {
    const t = computeTaps(height, outH, f);
    const out = new Uint8Array(cw * outH * channels);
    const stride = cw * channels;
    for (let y = 0; y < outH; y++) {
      const s = t.start[y]!;
      const n = t.count[y]!;
      const kb = y * t.ksize;
      for (let xc = 0; xc < stride; xc++) {
        let acc = half;
        for (let i = 0; i < n; i++) acc += cur[(s + i) * stride + xc]! * t.k[kb + i]!;
        out[y * stride + xc] = clip8(acc);
      }
    }
    cur = out;
  }
  return cur === src ? src.slice() : cur;
}

export function pilFilterName(id: number): PilFilterName {
  const hit = (Object.entries(PIL_FILTERS) as [PilFilterName, number][]).find(([, v]) => v === id);
  if (!hit) throw new Error(`unknown Pillow resample filter id ${id} (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)`);
  return hit[0];
}
