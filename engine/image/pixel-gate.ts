/**
 * A semaphore for image decodes and encodes, counted in pixels. libvips works on its own threads, so a
 * decode does not hold the event loop, but twenty parallel requests with 20-megapixel images would each hold
 * their decoded pixels (and libvips' intermediates) at once. The gate lets a decode start only while the
 * pixels in flight stay within a budget sized from memory and fewer than `slots` run; the rest wait in
 * arrival order (a large image is not overtaken forever by small ones). One image larger than the whole
 * budget still runs, alone.
 */
import { availableParallelism, totalmem } from 'node:os';
import sharp from 'sharp';

export interface PixelGateLimits {
  /** Pixels of all decodes and encodes in flight together. */
  pixels: number;
  /** Decodes and encodes in flight together. */
  slots: number;
}

/**
 * Bytes one pixel may cost while it is worked on: 4 bands of 8 bits for the decoded image, as much again for
 * the libvips pipeline (resize, colour conversion, alpha), and room for the 16-bit or float images libvips
 * makes from 16-bit PNGs and TIFFs.
 */
const BYTES_PER_PIXEL = 16;

/** A sixteenth of the memory for pixels in flight (1.6 Gpx·B: 100 Mpx on 24 GiB); one slot per core, at least 2. */
export function defaultGateLimits(memoryBytes = totalmem(), cores = availableParallelism()): PixelGateLimits {
  return { pixels: Math.max(4096 * 4096, Math.floor(memoryBytes / 16 / BYTES_PER_PIXEL)), slots: Math.max(2, cores) };
}

export class PixelGate {
  private inFlight = 0;
  private running = 0;
  private readonly queue: { pixels: number; go: () => void }[] = [];
  /** Highest pixels and operations in flight at once since the last `resetPeaks`. */
  readonly peaks = { pixels: 0, running: 0, waited: 0 };

  constructor(private limits: PixelGateLimits = defaultGateLimits()) {}

  get current(): { pixels: number; running: number; waiting: number; limits: PixelGateLimits } {
    return { pixels: this.inFlight, running: this.running, waiting: this.queue.length, limits: { ...this.limits } };
  }

  /** New limits (operators, tests); work in flight keeps its place. */
  configure(limits: Partial<PixelGateLimits>): void {
    this.limits = { ...this.limits, ...limits };
    this.pump();
  }

  resetPeaks(): void {
    Object.assign(this.peaks, { pixels: this.inFlight, running: this.running, waited: 0 });
  }

  /** Runs `work` once `pixels` fit in the budget; the pixels are given back when it settles. */
  async run<T>(pixels: number, work: () => Promise<T>): Promise<T> {
    const n = Math.max(0, Math.ceil(pixels));
    if (this.queue.length > 0 || !this.fits(n)) {
      this.peaks.waited++;
      await new Promise<void>((go) => {
        this.queue.push({ pixels: n, go });
      });
    } else this.take(n);
    try {
      return await work();
    } finally {
      this.inFlight -= n;
      this.running--;
      this.pump();
    }
  }

  private fits(n: number): boolean {
    if (this.running === 0) return true;
    return this.running < this.limits.slots && this.inFlight + n <= this.limits.pixels;
  }

  private take(n: number): void {
    this.inFlight += n;
    this.running++;
    this.peaks.pixels = Math.max(this.peaks.pixels, this.inFlight);
    this.peaks.running = Math.max(this.peaks.running, this.running);
  }

  private pump(): void {
    while (this.queue.length && this.fits(this.queue[0]!.pixels)) {
      const next = this.queue.shift()!;
      this.take(next.pixels);
      next.go();
    }
  }
}

/** The process's gate: every image decode and encode of the server, the trainer and the labellers. */
export const imageGate = new PixelGate();

/** Pixels of an encoded image from its header alone (0 when unreadable: the decode then reports why). */
export async function headerPixels(source: string | Buffer): Promise<number> {
  try {
    const m = await sharp(source, { limitInputPixels: false }).metadata();
    return (m.width ?? 0) * (m.height ?? 0);
  } catch {
    return 0;
  }
}

/** Decodes or encodes through the gate: `pixels` of an encoded source are read from its header. */
export async function gated<T>(pixels: number | string | Buffer, work: () => Promise<T>): Promise<T> {
  return imageGate.run(typeof pixels === 'number' ? pixels : await headerPixels(pixels), work);
}
