/**
 * The 32-bit Mersenne Twister (MT19937) exactly as C++'s std::mt19937 and PyTorch's CPU generator
 * define it: seeded from the low 32 bits of the seed, standard tempering.
 */
const N = 624;
const M = 397;

export class Mt19937 {
  private readonly state = new Uint32Array(N);
  private index = N;

  constructor(seed: number | bigint = 5489) {
    this.seed(seed);
  }

  seed(seed: number | bigint): void {
    // torch's mt19937(uint64) keeps only seed & 0xffffffff.
    const s = typeof seed === 'bigint' ? Number(BigInt.asUintN(32, seed)) : lowUint32(seed);
    const st = this.state;
    st[0] = s;
    for (let i = 1; i < N; i++) {
      const prev = st[i - 1]!;
      st[i] = (Math.imul(1812433253, (prev ^ (prev >>> 30)) >>> 0) + i) >>> 0;
    }
    this.index = N;
  }

  private twist(): void {
    const st = this.state;
    for (let i = 0; i < N; i++) {
      const y = (st[i]! & 0x80000000) | (st[(i + 1) % N]! & 0x7fffffff);
      let v = st[(i + M) % N]! ^ (y >>> 1);
      if (y & 1) v ^= 0x9908b0df;
      st[i] = v >>> 0;
    }
    this.index = 0;
  }

  /** Next 32-bit output as an unsigned integer. */
  nextUint32(): number {
    if (this.index >= N) this.twist();
    let y = this.state[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

/** Low 32 bits of a non-negative integer that may exceed 2^32 (seeds up to 2^53). */
export function lowUint32(n: number): number {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`seed must be a non-negative integer, got ${n}`);
  return n % 4294967296;
}
