/**
 * Generates toy-world prompts with a loaded generator and judges each picture against its prompt: the
 * measurement behind the demo model's quality figures (make-demo-model prints it, a test asserts it).
 */
import { toChw } from '../image/load.ts';
import type { StableDiffusion } from '../sd/model.ts';
import { toRgbBytes } from '../sd/pipeline.ts';
import type { SdGenerator } from '../generate/generator.ts';
import type { StackItem } from '../lora/merge.ts';
import { judgeImage, looksStriped, type Judgement } from './colour-judge.ts';
import { plainPrompt, renderScene, stripeColour, type ColourName, type Scene, type ShapeName } from './toy-world.ts';

export interface PromptCase {
  shape: ShapeName;
  colour: ColourName;
  background: ColourName;
}

export interface CaseResult extends PromptCase {
  prompt: string;
  seed: number;
  judged: Judgement;
  rgb: Uint8Array;
}

export interface EvalSettings {
  size: number;
  steps: number;
  cfgScale: number;
  sampler: string;
  /** First seed; case i uses seed + i. */
  seed: number;
  loras?: StackItem[];
  /** Measure stripes: the stripe colour's share is reported and not counted as the shape's colour. */
  stripes?: boolean;
}

export const DEMO_EVAL: EvalSettings = { size: 64, steps: 20, cfgScale: 7, sampler: 'Euler a', seed: 1000 };

export async function generateCases(gen: SdGenerator, cases: readonly PromptCase[], s: EvalSettings = DEMO_EVAL): Promise<CaseResult[]> {
  const out: CaseResult[] = [];
  for (const [i, c] of cases.entries()) {
    const prompt = plainPrompt(c.shape, c.colour, c.background);
    const seed = s.seed + i;
    const r = await gen.generate({ prompt, negativePrompt: '', seeds: [seed], width: s.size, height: s.size, steps: s.steps, cfgScale: s.cfgScale, sampler: s.sampler, loras: s.loras });
    const rgb = toRgbBytes(r.images, 1, s.size, s.size)[0]!;
    out.push({ ...c, prompt, seed, rgb, judged: judgeImage(rgb, s.size, s.stripes ? { stripe: stripeColour(c.colour) } : {}) });
  }
  return out;
}

/** Shares of pictures whose shape colour and background colour match the prompt. */
export function colourAccuracy(results: readonly CaseResult[]): { shape: number; background: number } {
  const n = results.length;
  return {
    shape: results.filter((r) => r.judged.shape === r.colour).length / n,
    background: results.filter((r) => r.judged.background === r.background).length / n,
  };
}

/**
 * The autoencoder alone: each scene rendered, encoded and decoded (no sampler), then judged. No UNet can draw
 * a colour more reliably than this round trip carries it. Returns the shares of right shape colours, right
 * backgrounds, and striped scenes still judged striped.
 */
export async function codecRoundTrip(model: StableDiffusion, scenes: readonly Scene[], size: number, batch = 25): Promise<{ shape: number; background: number; striped: number }> {
  const per = 3 * size * size;
  let shape = 0;
  let background = 0;
  let striped = 0;
  for (let i = 0; i < scenes.length; i += batch) {
    const chunk = scenes.slice(i, i + batch);
    const images = new Float32Array(batch * per);
    // A short last chunk repeats its last scene: one graph shape for every batch.
    for (let b = 0; b < batch; b++) images.set(toChw(renderScene(chunk[Math.min(b, chunk.length - 1)]!, size), size, size, false), b * per);
    const latent = await model.encode(images, { batch, height: size, width: size });
    const rgb = toRgbBytes(await model.decode(latent, { batch, height: size / 8, width: size / 8 }), batch, size, size);
    chunk.forEach((s, b) => {
      const j = judgeImage(rgb[b]!, size, { stripe: s.fill !== 'flat' ? stripeColour(s.colour) : undefined });
      if (j.shape === s.colour) shape++;
      if (j.background === s.background) background++;
      if (s.fill !== 'flat' && looksStriped(j)) striped++;
    });
  }
  const n = scenes.length;
  const nStriped = scenes.filter((s) => s.fill !== 'flat').length;
  return { shape: shape / n, background: background / n, striped: nStriped ? striped / nStriped : 0 };
}
