import { join } from 'node:path';
import { JsonlLogger } from './jsonl.ts';
import { TensorBoardWriter, type RawImage, type TensorBoardWriterOptions } from './tensorboard.ts';

/** The tag names training logs under; kohya's names, so existing TensorBoard habits carry over. */
export const TAGS = {
  lossCurrent: 'loss/current',
  lossAverage: 'loss/average',
  lossValidation: 'loss/validation',
  gradNorm: 'grad_norm',
  memory: 'memory',
  /** lr/<group>: lr/unet, lr/textencoder. */
  lr: (group: string): string => `lr/${group}`,
} as const;

export const JSONL_NAME = 'scalars.jsonl';

/** Resident memory of this process in MiB, the value logged as `memory`. */
export function memoryMiB(): number {
  return process.memoryUsage().rss / (1 << 20);
}

/** Scalars of one optimizer step, as training logs them. */
export function stepScalars(s: {
  loss: number;
  lossAverage?: number;
  lrs: Readonly<Record<string, number>>;
  gradNorm?: number;
  memoryMiB?: number;
}): Record<string, number> {
  const out: Record<string, number> = { [TAGS.lossCurrent]: s.loss };
  if (s.lossAverage !== undefined) out[TAGS.lossAverage] = s.lossAverage;
  for (const [g, lr] of Object.entries(s.lrs)) out[TAGS.lr(g)] = lr;
  if (s.gradNorm !== undefined) out[TAGS.gradNorm] = s.gradNorm;
  if (s.memoryMiB !== undefined) out[TAGS.memory] = s.memoryMiB;
  return out;
}

/** One TensorBoard event file plus `scalars.jsonl`, both in `logDir` (training uses `<output_dir>/logs`). */
export class TrainingLogger {
  readonly tensorboard: TensorBoardWriter;
  readonly jsonl: JsonlLogger;
  private readonly now: () => number;

  private constructor(tb: TensorBoardWriter, jsonl: JsonlLogger, now: () => number) {
    this.tensorboard = tb;
    this.jsonl = jsonl;
    this.now = now;
  }

  static open(logDir: string, opts: TensorBoardWriterOptions = {}): TrainingLogger {
    const now = opts.now ?? Date.now;
    const tb = TensorBoardWriter.open(logDir, { ...opts, now });
    try {
      return new TrainingLogger(tb, JsonlLogger.open(join(logDir, JSONL_NAME), { now }), now);
    } catch (e) {
      tb.close();
      throw e;
    }
  }

  /** The same scalars, with the same wall time, to both sinks. */
  scalars(step: number, values: Readonly<Record<string, number>>): void {
    const wall = this.now() / 1000;
    this.tensorboard.addScalars(values, step, wall);
    this.jsonl.log(step, values, wall);
  }

  /** Sample images go to TensorBoard only; the PNG files themselves are the sampler's business. */
  async image(tag: string, step: number, image: RawImage | Uint8Array): Promise<void> {
    if (image instanceof Uint8Array) await this.tensorboard.addEncodedImage(tag, image, step);
    else await this.tensorboard.addImage(tag, image, step);
  }

  close(): void {
    this.tensorboard.close();
    this.jsonl.close();
  }
}
