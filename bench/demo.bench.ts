/**
 * The bundled demo model: a 20-step 64² txt2img (Euler a, CFG 7) through SdGenerator, as `generate` and
 * `serve` run it. Load time and the first (session-building) generation are reported apart from the warm ones.
 */
import { DEMO_MODEL } from '../engine/demo/demo-model.ts';
import { SdGenerator } from '../engine/generate/generator.ts';

export const name = 'demo';

export async function run(): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const gen = await SdGenerator.load(DEMO_MODEL);
  const loadS = (performance.now() - t0) / 1000;
  const once = async (seed: number) => {
    const t = performance.now();
    await gen.generate({ prompt: 'a red star on a blue background', negativePrompt: '', seeds: [seed], width: 64, height: 64, steps: 20, cfgScale: 7, sampler: 'Euler a' });
    return (performance.now() - t) / 1000;
  };
  const firstS = await once(1);
  const warm: number[] = [];
  for (let i = 0; i < 5; i++) warm.push(await once(2 + i));
  const sorted = [...warm].sort((a, b) => a - b);
  const result = { loadS, firstGenerationS: firstS, warmGenerationS: { best: sorted[0], median: sorted[2], all: warm }, steps: 20, size: 64 };
  console.error(`demo: load ${loadS.toFixed(2)} s, first 20-step 64² generation ${firstS.toFixed(2)} s, warm median ${sorted[2]!.toFixed(2)} s`);
  return result;
}
