/**
 * Generates toy-world prompts with a loaded generator and judges each picture against its prompt: the
 * measurement behind the demo model's quality figures (make-demo-model prints it, a test asserts it).
 */
import { toRgbBytes } from '../sd/pipeline.ts';
import type { SdGenerator } from '../generate/generator.ts';
import type { StackItem } from '../lora/merge.ts';
import { judgeImage, type Judgement } from './colour-judge.ts';
import { plainPrompt, stripeColour, type ColourName, type ShapeName } from './toy-world.ts';

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
