import { Mt19937 } from './mt19937.ts';
import { logF32, sinCosF32 } from './avx-mathfun.ts';

const TWO_POW_24 = 16777216;
const TWO_POW_53 = 9007199254740992;
const f32 = Math.fround;

/**
 * PyTorch's CPU generator (`torch.Generator('cpu').manual_seed(seed)`) and its `randn` for float32.
 *
 * torch fills a float tensor two different ways:
 * - 16 elements or more (contiguous): every element first gets a float uniform (24 random bits of one
 *   32-bit draw), then each block of 16 is turned into normals by Box–Muller in float32, pairing element
 *   j with j+8. If the size is not a multiple of 16, the last 16 elements are redrawn and transformed again.
 * - fewer than 16: one scalar double-precision Box–Muller per element, using two 53-bit uniforms, keeping
 *   the sine value as a cached "next normal" in the generator state for the following scalar draw.
 */
export class TorchCpuGenerator {
  private engine: Mt19937;
  private nextDoubleNormal: number | undefined;

  constructor(seed: number | bigint) {
    this.engine = new Mt19937(seed);
  }

  manualSeed(seed: number | bigint): this {
    this.engine = new Mt19937(seed);
    this.nextDoubleNormal = undefined;
    return this;
  }

  /** One 32-bit draw (torch `random()`). */
  random(): number {
    return this.engine.nextUint32();
  }

  /** torch `uniform_real_distribution<double>`: 53 bits of random64(), whose first 32-bit draw is the high word. */
  private uniformDouble(): number {
    const hi = this.engine.nextUint32();
    const lo = this.engine.nextUint32();
    return ((hi & 0x1fffff) * 4294967296 + lo) / TWO_POW_53;
  }

  /** torch `normal_distribution<double>` with mean 0, std 1. */
  private normalDouble(): number {
    if (this.nextDoubleNormal !== undefined) {
      const v = this.nextDoubleNormal;
      this.nextDoubleNormal = undefined;
      return v;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** `torch.randn(shape, generator=this)` as float32, row-major. */
  randn(shape: readonly number[]): Float32Array {
    const n = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    if (n < 16) {
      for (let i = 0; i < n; i++) out[i] = this.normalDouble();
      return out;
    }
    for (let i = 0; i < n; i++) out[i] = (this.random() & 0xffffff) / TWO_POW_24;
    for (let i = 0; i + 16 <= n; i += 16) normalFill16(out, i);
    if (n % 16 !== 0) {
      const start = n - 16;
      for (let i = 0; i < 16; i++) out[start + i] = (this.random() & 0xffffff) / TWO_POW_24;
      normalFill16(out, start);
    }
    return out;
  }
}

const TWO_PI_F32 = f32(2 * Math.PI);

/** Box–Muller on one 16-element block of uniforms, in float32 as torch's AVX2 kernel does it. */
function normalFill16(data: Float32Array, at: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - data[at + j]!); // [0,1) -> (0,1] so the log is finite
    const u2 = data[at + j + 8]!;
    const radius = f32(Math.sqrt(f32(-2 * logF32(u1))));
    const { sin, cos } = sinCosF32(f32(TWO_PI_F32 * u2));
    data[at + j] = f32(radius * cos);
    data[at + j + 8] = f32(radius * sin);
  }
}
