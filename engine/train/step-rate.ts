import type { StepReport } from '../optim/index.ts';

/**
 * Training speed for progress and ETA, measured over the last steps only, so the first step's graph
 * compilation (and a resume's start-up) does not skew the estimate for long.
 */
export class StepRate {
  private times: number[] = [];
  private start = Date.now();

  constructor(private readonly window = 20) {}

  /** Call when a session starts (or resumes). */
  restart(now = Date.now()): void {
    this.start = now;
    this.times = [];
  }

  /** Records a finished step; returns steps per second, or undefined before any time has passed. */
  tick(now = Date.now()): number | undefined {
    this.times.push(now);
    if (this.times.length > this.window) this.times.shift();
    const n = this.times.length;
    const span = n >= 2 ? (now - this.times[0]!) / 1000 : (now - this.start) / 1000;
    return span > 0 ? (n >= 2 ? n - 1 : 1) / span : undefined;
  }

  /** Records a finished optimizer step and returns its progress fields: loss, running average, rates, speed, ETA. */
  progress(report: StepReport, lossAverage: number, epoch: number, totalSteps: number) {
    const itPerSec = this.tick();
    return {
      phase: 'training' as const,
      epoch: epoch + 1,
      step: report.step,
      loss: report.loss,
      lossAverage,
      lrs: report.lrs,
      gradNorm: report.gradNorm,
      itPerSec,
      etaSeconds: itPerSec ? (totalSteps - report.step) / itPerSec : undefined,
    };
  }
}
