import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Scalars as JSON lines: `{"step":12,"wall_time":1700000000.5,"loss/current":0.12,...}`, one object per line.
 * Appends, so a resumed run continues the same file; each line is one synchronous write, so a killed run
 * loses at most the line being written. JSON has no NaN/inf: those values are written as null.
 */
export class JsonlLogger {
  readonly path: string;
  private fd: number | undefined;
  private readonly now: () => number;

  private constructor(path: string, fd: number, now: () => number) {
    this.path = path;
    this.fd = fd;
    this.now = now;
  }

  static open(path: string, opts: { now?: () => number } = {}): JsonlLogger {
    mkdirSync(dirname(path), { recursive: true });
    return new JsonlLogger(path, openSync(path, 'a'), opts.now ?? Date.now);
  }

  log(step: number, scalars: Readonly<Record<string, number>>, wallTime?: number): void {
    if (this.fd === undefined) throw new Error(`${this.path}: write after close()`);
    const row: Record<string, number | null> = { step, wall_time: wallTime ?? this.now() / 1000 };
    for (const [k, v] of Object.entries(scalars)) {
      if (k === 'step' || k === 'wall_time') throw new Error(`scalar name '${k}' is reserved in ${this.path}`);
      row[k] = Number.isFinite(v) ? v : null;
    }
    const line = Buffer.from(JSON.stringify(row) + '\n', 'utf8');
    for (let off = 0; off < line.length; ) off += writeSync(this.fd, line, off, line.length - off);
  }

  close(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    closeSync(fd);
  }
}
