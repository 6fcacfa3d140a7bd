/**
 * A tiny WD14-style tagger written with the project's own graph DSL and ONNX writer: input `input`
 * [batch, S, S, 3] (NHWC, as WD14 ships) or [batch, 3, S, S], BGR 0–255; output one sigmoid probability
 * per tag of `selected_tags.csv`. Each tag's logit is `a · mean(B, G, R)/255 + b`, so a test can make a tag
 * depend on one colour channel (checks the channel order and the white padding) or give it a fixed
 * probability (checks thresholds).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { constant, div, input, mean } from '../../engine/graph/ops-core.ts';
import { linear } from '../../engine/graph/ops-nn.ts';
import { sigmoid } from '../../engine/graph/ops-core.ts';
import { lower } from '../../engine/onnx/lower.ts';

export interface TinyTag {
  name: string;
  /** 0 general, 4 character, 9 rating. */
  category: 0 | 4 | 9;
  /** Weights on the B, G, R channel means (0..1). */
  weights: [number, number, number];
  bias: number;
}

export const logit = (p: number) => Math.log(p / (1 - p));

export async function writeTinyTagger(dir: string, tags: readonly TinyTag[], size: number, layout: 'nhwc' | 'nchw' = 'nhwc'): Promise<void> {
  await mkdir(dir, { recursive: true });
  const x = input('input', 'float32', layout === 'nhwc' ? ['batch', size, size, 3] : ['batch', 3, size, size]);
  const m = div(mean(x, layout === 'nhwc' ? [1, 2] : [2, 3]), 255);
  const w = constant(tags.flatMap((t) => t.weights), [tags.length, 3]);
  const b = constant(tags.map((t) => t.bias), [tags.length]);
  const probs = sigmoid(linear(m, w, b));
  await writeFile(join(dir, 'model.onnx'), lower([probs], { weights: 'initializers' }).bytes);
  const csv = ['tag_id,name,category,count', ...tags.map((t, i) => `${1000 + i},${t.name},${t.category},${100 - i}`)].join('\n');
  await writeFile(join(dir, 'selected_tags.csv'), `${csv}\n`);
}
