import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { encodeFileVersionEvent, encodeSummaryEvent, type SummaryValue } from './event-proto.ts';
import { frameRecord } from './tfrecord.ts';

export interface TensorBoardWriterOptions {
  /** Defaults to os.hostname(). */
  hostname?: string;
  /** Defaults to process.pid. */
  pid?: number;
  /** Clock in milliseconds since the epoch; defaults to Date.now. */
  now?: () => number;
  /** fsync after every record too (survives a machine crash, not only a killed process). Default false. */
  fsync?: boolean;
}

/** Interleaved 8-bit pixels, row-major (HWC). */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 2 | 3 | 4;
}

// The Python writers number their files per process so two writers opened in the same second differ.
let fileCounter = 0;

/**
 * Writes a TensorBoard event file, `events.out.tfevents.<%010d seconds>.<host>.<pid>.<n>`, as PyTorch's
 * SummaryWriter names it. Every record goes to the file in one synchronous write as soon as it is added,
 * so a killed run keeps everything logged so far. The file is append-only by design (TensorBoard reads it
 * while it grows), which is why it is not written atomically.
 */
export class TensorBoardWriter {
  readonly path: string;
  private fd: number | undefined;
  private readonly now: () => number;
  private readonly doFsync: boolean;

  private constructor(path: string, fd: number, now: () => number, doFsync: boolean) {
    this.path = path;
    this.fd = fd;
    this.now = now;
    this.doFsync = doFsync;
  }

  /** Creates `logDir` if needed and a new event file in it, starting with the file_version record. */
  static open(logDir: string, opts: TensorBoardWriterOptions = {}): TensorBoardWriter {
    const now = opts.now ?? Date.now;
    const host = (opts.hostname ?? osHostname()).replace(/[/\\]/g, '_');
    const pid = opts.pid ?? process.pid;
    mkdirSync(logDir, { recursive: true });
    const t = now();
    const secs = String(Math.floor(t / 1000)).padStart(10, '0');
    for (;;) {
      const path = join(logDir, `events.out.tfevents.${secs}.${host}.${pid}.${fileCounter++}`);
      let fd: number;
      try {
        fd = openSync(path, 'wx');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw e;
      }
      const w = new TensorBoardWriter(path, fd, now, opts.fsync ?? false);
      w.write(encodeFileVersionEvent(t / 1000));
      return w;
    }
  }

  private write(payload: Uint8Array): void {
    if (this.fd === undefined) throw new Error(`${this.path}: write after close()`);
    const rec = frameRecord(payload);
    for (let off = 0; off < rec.length; ) off += writeSync(this.fd, rec, off, rec.length - off);
    if (this.doFsync) fsyncSync(this.fd);
  }

  private static checkStep(step: number): void {
    if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`TensorBoard step must be a non-negative integer, got ${step}`);
  }

  /** One scalar (stored as float32 simple_value, like PyTorch's add_scalar). */
  addScalar(tag: string, value: number, step: number, wallTime?: number): void {
    this.addScalars({ [tag]: value }, step, wallTime);
  }

  /** Several scalars sharing one step, in one event. */
  addScalars(values: Readonly<Record<string, number>>, step: number, wallTime?: number): void {
    TensorBoardWriter.checkStep(step);
    const list: SummaryValue[] = Object.entries(values).map(([tag, v]) => {
      if (!tag) throw new Error('TensorBoard tag must not be empty');
      return { tag, simpleValue: v };
    });
    if (list.length === 0) return;
    this.write(encodeSummaryEvent(wallTime ?? this.now() / 1000, step, list));
  }

  /** Already-encoded PNG/JPEG bytes; width, height and channels are read from the image. */
  async addEncodedImage(tag: string, encoded: Uint8Array, step: number, wallTime?: number): Promise<void> {
    TensorBoardWriter.checkStep(step);
    const meta = await sharp(encoded).metadata();
    if (!meta.width || !meta.height) throw new Error(`image for '${tag}' has no dimensions`);
    this.writeImage(tag, encoded, meta.width, meta.height, meta.channels ?? 3, step, wallTime);
  }

  /** Raw 8-bit pixels, encoded to PNG. */
  async addImage(tag: string, image: RawImage, step: number, wallTime?: number): Promise<void> {
    TensorBoardWriter.checkStep(step);
    const { data, width, height, channels } = image;
    if (data.length !== width * height * channels) {
      throw new Error(`image for '${tag}': ${data.length} bytes, expected ${width}×${height}×${channels}`);
    }
    const png = await sharp(data, { raw: { width, height, channels } }).png().toBuffer();
    this.writeImage(tag, png, width, height, channels, step, wallTime);
  }

  private writeImage(tag: string, encoded: Uint8Array, width: number, height: number, channels: number, step: number, wallTime?: number): void {
    const image = { height, width, colorspace: channels, encoded };
    this.write(encodeSummaryEvent(wallTime ?? this.now() / 1000, step, [{ tag, image }]));
  }

  close(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    closeSync(fd);
  }
}
