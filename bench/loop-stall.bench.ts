// How long the server's event loop is held while a generation runs, with the engine backend on the main
// thread (as before server/backend-thread.ts) and on its generation thread (`serve`'s default), side by side
// in one run: the main thread's event-loop delay (perf_hooks.monitorEventLoopDelay) and the answer times of
// /sdapi/v1/progress asked one after another (50 ms apart) during the same txt2img.
// Model: the sd-tiny fixture at BENCH_LOOP_SIDE² (default 384) so that each step runs long; the figures show
// where the work runs, not SD 1.5 speed (one SD 1.5 step at 512² held the loop ≈ 6.5 s on the main thread).
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { startTestServer, type TestServer } from '../tests/server-fixture-backend.ts';
import { createEngineBackend } from '../server/engine-backend.ts';

const SIDE = Number(process.env['BENCH_LOOP_SIDE'] ?? 384);
const STEPS = Number(process.env['BENCH_LOOP_STEPS'] ?? 6);
const ROUNDS = Number(process.env['BENCH_LOOP_ROUNDS'] ?? 2);
const POLL_MS = 50;

const ms = (ns: number) => +(ns / 1e6).toFixed(1);
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? NaN;

async function measure(t: TestServer, seed: number): Promise<Record<string, number>> {
  const body = { prompt: 'a lighthouse at dusk', seed, steps: STEPS, width: SIDE, height: SIDE, sampler_name: 'Euler', cfg_scale: 7 };
  const loop = monitorEventLoopDelay({ resolution: 10 });
  let ended = false;
  const t0 = performance.now();
  loop.enable();
  const job = t.post('/sdapi/v1/txt2img', body).then((r) => {
    ended = true;
    if (r.status !== 200) throw new Error(`txt2img ${r.status}: ${JSON.stringify(r.body)}`);
  });
  const latencies: number[] = [];
  while (!ended) {
    const s = performance.now();
    await t.get('/sdapi/v1/progress?skip_current_image=true');
    latencies.push(performance.now() - s);
    // Paced like a client's progress bar, so that the polling itself takes little CPU from the job.
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  await job;
  loop.disable();
  return {
    seconds: +((performance.now() - t0) / 1000).toFixed(2),
    loopDelayMaxMs: ms(loop.max),
    loopDelayP99Ms: ms(loop.percentile(99)),
    loopDelayMeanMs: ms(loop.mean),
    progressAnswers: latencies.length,
    progressMedianMs: +quantile(latencies, 0.5).toFixed(1),
    progressMaxMs: +Math.max(...latencies).toFixed(1),
  };
}

export async function run(): Promise<Record<string, unknown>> {
  const servers = {
    mainThread: await startTestServer({ withModel: true, backend: createEngineBackend({ device: 'cpu', fallbackTokenizerDirs: [] }) }),
    generationThread: await startTestServer({ withModel: true }),
  };
  try {
    for (const t of Object.values(servers)) {
      await t.server.ctx.queue.idle();
      // Warm: model loaded and sessions built for this size before the measured runs.
      await measure(t, 1);
    }
    const rounds: Record<string, Record<string, number>>[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const round: Record<string, Record<string, number>> = {};
      for (const [name, t] of Object.entries(servers)) round[name] = await measure(t, 2 + i);
      rounds.push(round);
      console.error(JSON.stringify(round));
    }
    return { side: SIDE, steps: STEPS, model: 'sd-tiny fixture', rounds };
  } finally {
    for (const t of Object.values(servers)) await t.close();
  }
}
