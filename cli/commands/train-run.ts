/**
 * `lora-scripts train` without --dry-run: runs the trainer with a progress bar (epoch, step, loss, it/s, ETA).
 * Ctrl-C once stops at the next micro-batch and saves a state to resume from; twice exits at once.
 */
import cliProgress from 'cli-progress';
import type { TrainConfig } from '../../engine/train/config.ts';
import type { Dataset } from '../../engine/train/dataset.ts';
import { train, type TrainEvent, type TrainProgress } from '../../engine/train/trainer.ts';

export interface RunOptions {
  saveFormat: 'kohya' | 'diffusers';
  /** A redrawn bar on a terminal; otherwise one line per optimizer step. */
  progressBar: boolean;
  dataset?: Dataset;
  gradientCheckpointing?: boolean;
  frozenWeights?: 'auto' | 'baked' | 'fed';
}

function duration(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '?';
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

function fields(p: TrainProgress) {
  return {
    epoch: `${Math.max(1, p.epoch)}/${p.epochs}`,
    loss: p.loss === undefined ? '-' : p.loss.toFixed(4),
    avg: p.lossAverage === undefined ? '-' : p.lossAverage.toFixed(4),
    // Below one step per second, seconds per step reads better (full-size models on a CPU).
    speed: p.itPerSec === undefined ? '- it/s' : p.itPerSec >= 1 ? `${p.itPerSec.toFixed(2)} it/s` : `${(1 / p.itPerSec).toFixed(1)} s/it`,
    remaining: duration(p.etaSeconds),
  };
}

export async function runTraining(config: TrainConfig, opts: RunOptions): Promise<void> {
  const abort = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts > 1) process.exit(130);
    console.error('\nstopping after this micro-batch and saving a state (Ctrl-C again to quit at once)');
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  let bar: cliProgress.SingleBar | undefined;
  let last = { value: 0, payload: {} as Record<string, string> };
  const stopBar = () => {
    bar?.stop();
    bar = undefined;
  };
  const out = (line: string) => {
    if (bar) bar.stop();
    console.log(line);
    if (bar) bar.start(bar.getTotal(), last.value, last.payload);
  };
  const onEvent = (e: TrainEvent) => {
    if (e.type === 'log') {
      if (e.message.startsWith('logs: ')) {
        const dir = e.message.slice('logs: '.length).split('  ')[0]!;
        out(`logs: ${dir}\nview them with: tensorboard --logdir "${dir}"`);
      } else out(e.message);
    } else if (e.type === 'saved') {
      out(`saved ${e.kind === 'state' ? 'training state' : e.kind === 'final' ? 'LoRA' : `${e.kind} LoRA`}: ${e.path}`);
    } else if (e.type === 'validation') {
      out(`step ${e.step}: validation loss ${e.loss.toFixed(4)}`);
    } else if (e.type === 'sample') {
      out(`sample: ${e.path}`);
    } else if (e.phase === 'caching') {
      if (e.done === e.todo) out(`latents ready (${e.todo})`);
    } else if (e.phase !== 'training') {
      stopBar();
    } else if (e.step > 0 && e.loss !== undefined) {
      if (opts.progressBar) {
        if (!bar) {
          bar = new cliProgress.SingleBar(
            {
              format: 'epoch {epoch} |{bar}| step {value}/{total} | loss {loss} (avg {avg}) | {speed} | ETA {remaining}',
              hideCursor: true,
              stream: process.stderr,
            },
            cliProgress.Presets.shades_classic,
          );
          bar.start(e.totalSteps, e.step, fields(e));
        } else bar.update(e.step, fields(e));
        last = { value: e.step, payload: fields(e) };
      } else {
        const f = fields(e);
        console.log(`epoch ${f.epoch} step ${e.step}/${e.totalSteps} loss ${f.loss} avg ${f.avg} ${f.speed} ETA ${f.remaining}`);
      }
    }
  };
  try {
    const r = await train(config, {
      signal: abort.signal,
      onEvent,
      saveFormat: opts.saveFormat,
      dataset: opts.dataset,
      gradientCheckpointing: opts.gradientCheckpointing,
      frozenWeights: opts.frozenWeights,
    });
    stopBar();
    if (r.cancelled) {
      console.log(`stopped at step ${r.steps}/${r.totalSteps}${r.statePath ? `; resume with resume_from: ${r.statePath}` : ''}`);
      process.exitCode = 130;
    } else {
      console.log(`done: ${r.steps} steps in ${duration(r.seconds)}; LoRA: ${r.outputPath}`);
    }
  } finally {
    stopBar();
    process.off('SIGINT', onSigint);
  }
}
