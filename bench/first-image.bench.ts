// Time to first image: `lora-scripts serve` started as users start it, with two SD 1.5-shaped checkpoints in its
// models folder; from the spawn to the first 512² txt2img answer, then a checkpoint switch (POST options
// sd_model_checkpoint) and the first image after it. The server's peak RSS is read from /proc before it stops.
// BENCH_FIRST_STEPS (1) sets the sampler steps of each image, BENCH_FIRST_SIZE (512) the size.
// LORA_SCRIPTS_BENCH_TORCH=<python with torch + transformers> adds the peer after the server has stopped:
// `bench/peer/torch_ldm.py first-image` from the same checkpoint file (load, prompt, one CFG step, decode), timed
// from its spawn as ours is, so both include the interpreter's start and imports.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { SD15, writeSyntheticCheckpoint } from '../engine/sd/synthetic.ts';
import { launchCli } from '../tests/support/cli-process.ts';

export const name = 'first-image';

const scratch = fileURLToPath(new URL('./scratch/', import.meta.url));
const secs = (t0: number) => Math.round((performance.now() - t0) / 10) / 100;

async function post(url: string, body: unknown): Promise<void> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${url}: ${r.status} ${(await r.text()).slice(0, 500)}`);
  await r.arrayBuffer();
}

async function peakRssGiB(pid: number): Promise<number | undefined> {
  const m = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''));
  return m ? Math.round((Number(m[1]) / 2 ** 20) * 100) / 100 : undefined;
}

/** The PyTorch peer's first image from `ckpt`, in its own process after ours has stopped. */
function peer(ckpt: string, size: number): Record<string, unknown> {
  const py = process.env.LORA_SCRIPTS_BENCH_TORCH;
  if (!py) return { skipped: 'LORA_SCRIPTS_BENCH_TORCH is not set' };
  const t0 = performance.now();
  const r = spawnSync(py, [fileURLToPath(new URL('./peer/torch_ldm.py', import.meta.url)), 'first-image', ckpt, String(size)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
  const fromSpawnSeconds = secs(t0);
  try {
    return { fromSpawnSeconds, ...(JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Record<string, unknown>), ...(r.status === 0 ? {} : { exit: r.status ?? r.signal }) };
  } catch {
    return { error: `peer exited ${r.status ?? r.signal} without a result` };
  }
}

export async function run(): Promise<Record<string, unknown>> {
  await mkdir(scratch, { recursive: true });
  const ckpt = join(scratch, 'sd15-random-f16.safetensors');
  if (!existsSync(ckpt)) await writeSyntheticCheckpoint(ckpt, SD15, { dtype: 'F16', seed: 1 });
  const steps = Number(process.env.BENCH_FIRST_STEPS ?? 1);
  const size = Number(process.env.BENCH_FIRST_SIZE ?? 512);
  const dataDir = await mkdtemp(join(tmpdir(), 'first-image-'));
  // Two names for the same file: the server identifies checkpoints by path, so switching loads it again.
  const models = join(dataDir, 'models', 'Stable-diffusion');
  await mkdir(models, { recursive: true });
  await symlink(ckpt, join(models, 'a.safetensors'));
  await symlink(ckpt, join(models, 'b.safetensors'));
  const image = { prompt: 'a photo of a cat', negative_prompt: 'blurry', seed: 1, steps, width: size, height: size, cfg_scale: 7, sampler_name: 'Euler a' };
  const load = loadavg()[0]!;
  const t0 = performance.now();
  const server = launchCli('serve', ['serve', '--port', '0', '--data-dir', dataDir]);
  let ours: Record<string, unknown>;
  try {
    const url = (await server.waitFor(/lora-scripts API on (http:\/\/\S+)/))[1]!;
    const listening = secs(t0);
    await post(`${url}/sdapi/v1/txt2img`, { ...image, override_settings: { sd_model_checkpoint: 'a' } });
    const firstImage = secs(t0);
    let t = performance.now();
    await post(`${url}/sdapi/v1/txt2img`, { ...image, seed: 2, override_settings: { sd_model_checkpoint: 'a' } });
    const warmImage = secs(t);
    t = performance.now();
    await post(`${url}/sdapi/v1/options`, { sd_model_checkpoint: 'b' });
    const switchLoad = secs(t);
    await post(`${url}/sdapi/v1/txt2img`, { ...image, seed: 3, override_settings: { sd_model_checkpoint: 'b' } });
    const afterSwitch = secs(t);
    const peak = server.child.pid ? await peakRssGiB(server.child.pid) : undefined;
    ours = {
      checkpoint: 'SD 1.5 shapes, random weights, F16 on disk (two paths to one file)',
      image,
      loadAverage1mAtStart: +load.toFixed(2),
      loadAverage1mAtEnd: +loadavg()[0]!.toFixed(2),
      serverListeningSeconds: listening,
      firstImageSeconds: firstImage,
      warmImageSeconds: warmImage,
      switchLoadSeconds: switchLoad,
      firstImageAfterSwitchSeconds: afterSwitch,
      serverPeakRssGiB: peak,
    };
  } finally {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
  return { ...ours, peer: peer(ckpt, size) };
}

export default run;
