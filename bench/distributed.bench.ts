// Distributed mode on this machine, all in one run: a real redis-server, one API front and 1 then 2 workers
// (`lora-scripts worker --threads 1`), against the single process with the same one-thread engine backend.
// - throughput: a burst of txt2img jobs sent at once, images per minute with 1 and with 2 workers;
// - queue overhead per job: the same small job sent one at a time to the single process and to the front
//   with one idle worker; the difference of the mean answer times is what Redis, BullMQ and the relays add.
// Model: the sd-tiny fixture, so the figures show the queue and the process model, not SD 1.5 speed.
import { performance } from 'node:perf_hooks';
import { startRedis } from '../tests/support/redis.ts';
import { launchCli, type CliProcess } from '../tests/support/cli-process.ts';
import { startTestServer } from '../tests/server-fixture-backend.ts';
import { createEngineBackend } from '../server/engine-backend.ts';

const BURST = Number(process.env['BENCH_DISTRIBUTED_JOBS'] ?? 12);
const OVERHEAD_JOBS = Number(process.env['BENCH_DISTRIBUTED_OVERHEAD_JOBS'] ?? 10);
const job = (seed: number) => ({ prompt: 'a lighthouse at dusk <lora:lora_a:0.7>', seed, subseed: 1, steps: 12, width: 128, height: 128, sampler_name: 'Euler a' });
const small = (seed: number) => ({ prompt: 'a cat', seed, subseed: 1, steps: 1, width: 64, height: 64, sampler_name: 'Euler' });

async function post(url: string, body: unknown): Promise<void> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  await r.arrayBuffer();
}

export async function run(): Promise<Record<string, unknown>> {
  const redis = await startRedis();
  const single = await startTestServer({ withModel: true, backend: createEngineBackend({ device: 'cpu', threads: 1, fallbackTokenizerDirs: [] }) });
  const procs: CliProcess[] = [];
  try {
    const front = launchCli('front', ['serve', '--queue', redis.url, '--port', '0', '--data-dir', single.dataDir]);
    procs.push(front);
    const url = (await front.waitFor(/lora-scripts API on (http:\/\/\S+)/))[1]!;
    const addWorker = async (n: number) => {
      const w = launchCli(`w${n}`, ['worker', '--queue', redis.url, '--data-dir', single.dataDir, '--threads', '1', '--id', `w${n}`]);
      procs.push(w);
      await w.waitFor(/worker w\d+ on/);
    };
    const burst = async (base: string, seed0: number): Promise<number> => {
      // One job first so every worker has loaded the model before the clock starts.
      await Promise.all(Array.from({ length: 2 }, (_, i) => post(`${base}/sdapi/v1/txt2img`, job(seed0 - 1 - i))));
      const t0 = performance.now();
      await Promise.all(Array.from({ length: BURST }, (_, i) => post(`${base}/sdapi/v1/txt2img`, job(seed0 + i))));
      return (BURST / (performance.now() - t0)) * 60_000;
    };
    const sequentialMs = async (base: string, seed0: number): Promise<number> => {
      await post(`${base}/sdapi/v1/txt2img`, small(seed0 - 1));
      const t0 = performance.now();
      for (let i = 0; i < OVERHEAD_JOBS; i++) await post(`${base}/sdapi/v1/txt2img`, small(seed0 + i));
      return (performance.now() - t0) / OVERHEAD_JOBS;
    };

    await addWorker(1);
    const singleJobMs = await sequentialMs(single.server.url, 100);
    const frontJobMs = await sequentialMs(url, 100);
    const singleIpm = await burst(single.server.url, 1000);
    const oneWorkerIpm = await burst(url, 1000);
    await addWorker(2);
    const twoWorkersIpm = await burst(url, 2000);
    return {
      model: 'sd-tiny fixture',
      job: { throughput: job(0), overhead: small(0) },
      burst_jobs: BURST,
      images_per_minute: { single_process: singleIpm, one_worker: oneWorkerIpm, two_workers: twoWorkersIpm },
      two_workers_over_one: twoWorkersIpm / oneWorkerIpm,
      one_worker_over_single_process: oneWorkerIpm / singleIpm,
      queue_overhead_ms_per_job: frontJobMs - singleJobMs,
      sequential_job_ms: { single_process: singleJobMs, front_one_worker: frontJobMs },
      note: 'two workers share the 2 cores of this machine with the front, Redis and other sessions',
    };
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await single.close();
    await redis.stop();
  }
}
