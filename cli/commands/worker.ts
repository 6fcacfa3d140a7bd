/**
 * `lora-scripts worker --queue redis://…`: runs the generation and training jobs that API fronts
 * (`serve --queue`) put in Redis. See docs/distributed.md.
 */
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { UserError } from '../../engine/util/errors.ts';

interface WorkerFlags {
  queue: string;
  dataDir?: string;
  models?: string;
  ckptDir?: string;
  loraDir?: string;
  vaeDir?: string;
  device: string;
  tokenizerDir?: string;
  lowMemory?: boolean;
  concurrency: string;
  threads?: string;
  label: string[];
  stallTimeout: string;
  id?: string;
}

function positiveInt(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`${flag}: '${v}' is not a positive whole number`);
  return n;
}

export function register(program: Command): void {
  program
    .command('worker')
    .description('run generation and training jobs from a Redis queue that `serve --queue` fronts fill')
    .requiredOption('--queue <redis-url>', 'redis://[user:pass@]host:port[/db] (rediss:// for TLS; password also from LORA_SCRIPTS_REDIS_PASSWORD)')
    .option('--data-dir <dir>', 'the shared data folder: models/, datasets/, training/, outputs/ (default: current directory)')
    .option('--models <dir>', 'shared models folder holding Stable-diffusion/, Lora/, VAE/ (default: <data-dir>/models)')
    .option('--ckpt-dir <dir>', 'checkpoint folder (default: <models>/Stable-diffusion)')
    .option('--lora-dir <dir>', 'LoRA folder (default: <models>/Lora)')
    .option('--vae-dir <dir>', 'VAE folder (default: <models>/VAE)')
    .option('--device <name>', 'ONNX Runtime device: cpu, cuda, dml, coreml', 'cpu')
    .option('--tokenizer-dir <dir>', 'CLIP tokenizer folder for single-file checkpoints')
    .option('--low-memory', "memory before speed: no cache of merged LoRA stacks (going back to a stack merges it anew; ONNX Runtime's arena is off by default already, docs/benchmarks.md)")
    .option('--concurrency <n>', 'jobs run at once, each with its own loaded model', '1')
    .option('--threads <n>', 'ONNX Runtime threads per job (default: all cores)')
    .option('--label <name>', 'take training jobs pinned to this label (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--stall-timeout <seconds>', 'how long a job stays with a worker that stopped answering before another takes it; longer than the worker takes to load a model', '120')
    .option('--id <name>', 'name this worker announces (default: host-pid-random)')
    .action(async (f: WorkerFlags) => {
      const concurrency = positiveInt('--concurrency', f.concurrency);
      const threads = f.threads === undefined ? undefined : positiveInt('--threads', f.threads);
      const stall = Number(f.stallTimeout);
      if (!Number.isFinite(stall) || stall <= 0) throw new UserError(`--stall-timeout: '${f.stallTimeout}' is not a positive number of seconds`);
      for (const l of f.label) if (!/^[\w.-]+$/.test(l)) throw new UserError(`--label: '${l}' may hold only letters, digits, '.', '_' and '-'`);
      const { parseRedisUrl } = await import('../../server/distributed/redis-url.ts');
      const { startWorker } = await import('../../server/distributed/worker.ts');
      const models = f.models === undefined ? undefined : resolve(f.models);
      const worker = await startWorker({
        target: parseRedisUrl(f.queue),
        dataDir: f.dataDir,
        ckptDir: f.ckptDir ?? (models ? join(models, 'Stable-diffusion') : undefined),
        loraDir: f.loraDir ?? (models ? join(models, 'Lora') : undefined),
        vaeDir: f.vaeDir ?? (models ? join(models, 'VAE') : undefined),
        device: f.device,
        tokenizerDir: f.tokenizerDir,
        lowMemory: f.lowMemory,
        concurrency,
        threads,
        labels: f.label,
        stallTimeoutMs: Math.round(stall * 1000),
        id: f.id,
      });
      let stopping = false;
      const stop = () => {
        // First signal: finish the running jobs; second: interrupt them (they go back to the queue only if killed).
        console.log(stopping ? 'interrupting running jobs' : 'stopping after the running jobs (again to interrupt them)');
        const force = stopping;
        stopping = true;
        void worker.close(force).then(() => process.exit(0));
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
}
