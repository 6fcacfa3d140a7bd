/**
 * The bundled demo model: a 20-step 64² txt2img (Euler a, CFG 7) through SdGenerator, as `generate` and
 * `serve` run it. Load time and the first (session-building) generation are reported apart from the warm ones.
 * Then `lora-scripts serve` started as `npm start` starts it, in an empty folder (so it falls back to the demo
 * model): from the spawn to its answer to a colour-and-shape txt2img, with the picture judged by colour.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { judgeImage } from '../engine/demo/colour-judge.ts';
import { DEMO_MODEL, DEMO_RESOLUTION } from '../engine/demo/demo-model.ts';
import { SdGenerator } from '../engine/generate/generator.ts';
import { launchCli } from '../tests/support/cli-process.ts';

export const name = 'demo';

const PROMPT = { text: 'a red star on a blue background', shape: 'red', background: 'blue' } as const;

/** Seconds from spawning `serve` in an empty folder to its txt2img answer, and what the picture shows. */
async function startToFirstImage(seed: number): Promise<{ listeningS: number; answeredS: number; shape: string | null; background: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'lora-scripts-demo-start-'));
  const t0 = performance.now();
  const cli = launchCli('serve', ['serve', '--port', '0', '--data-dir', dir]);
  try {
    const [, url] = await cli.waitFor(/lora-scripts API on (http:\/\/\S+)/, 120_000);
    const listeningS = (performance.now() - t0) / 1000;
    const size = DEMO_RESOLUTION;
    const res = await fetch(`${url}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: PROMPT.text, width: size, height: size, steps: 20, cfg_scale: 7, sampler_name: 'Euler a', seed }),
    });
    if (res.status !== 200) throw new Error(`txt2img: ${res.status} ${(await res.text()).slice(0, 300)}`);
    const body = (await res.json()) as { images: string[] };
    const answeredS = (performance.now() - t0) / 1000;
    const rgb = await sharp(Buffer.from(body.images[0]!, 'base64')).removeAlpha().raw().toBuffer();
    const j = judgeImage(new Uint8Array(rgb), size);
    return { listeningS, answeredS, shape: j.shape, background: j.background };
  } finally {
    await cli.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const gen = await SdGenerator.load(DEMO_MODEL);
  const loadS = (performance.now() - t0) / 1000;
  const once = async (seed: number) => {
    const t = performance.now();
    await gen.generate({ prompt: PROMPT.text, negativePrompt: '', seeds: [seed], width: 64, height: 64, steps: 20, cfgScale: 7, sampler: 'Euler a' });
    return (performance.now() - t) / 1000;
  };
  const firstS = await once(1);
  const warm: number[] = [];
  for (let i = 0; i < 5; i++) warm.push(await once(2 + i));
  const sorted = [...warm].sort((a, b) => a - b);
  console.error(`demo: load ${loadS.toFixed(2)} s, first 20-step 64² generation ${firstS.toFixed(2)} s, warm median ${sorted[2]!.toFixed(2)} s`);
  const starts = [];
  for (let i = 0; i < 3; i++) starts.push(await startToFirstImage(100 + i));
  for (const s of starts) console.error(`demo: serve in an empty folder listening after ${s.listeningS.toFixed(2)} s, "${PROMPT.text}" answered ${s.answeredS.toFixed(2)} s after the spawn (${s.shape} on ${s.background})`);
  return {
    loadS,
    firstGenerationS: firstS,
    warmGenerationS: { best: sorted[0], median: sorted[2], all: warm },
    steps: 20,
    size: 64,
    serveStart: { prompt: PROMPT.text, runs: starts, matched: starts.filter((s) => s.shape === PROMPT.shape && s.background === PROMPT.background).length },
  };
}
