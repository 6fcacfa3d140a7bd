// Generation with a KV cache: cached steps reproduce the full forward, greedy picks the argmax, sampling
// options and stop strings behave, and an adapter stack fed as weights equals the merged model.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { compile } from '../engine/runtime/session.ts';
import { loadLlm, llmContext, type LoadedLlm } from '../engine/llm/load.ts';
import { llamaForCausalLM } from '../engine/llm/model.ts';
import { decoderFeeds } from '../engine/llm/inputs.ts';
import { LlmGenerator, type GenerateOptions } from '../engine/llm/generate.ts';
import { LlmTokenizer } from '../engine/llm/tokenizer.ts';
import { loadPeftAdapter, mergeAdapters, adapterWeights } from '../engine/llm/peft.ts';
import { DEFAULT_SAMPLING } from '../engine/llm/sampling.ts';
import { llamaTinyDir, tinyModelFolder } from './support/llm-folder.ts';

let dir: string;
let model: LoadedLlm;
let gen: LlmGenerator;
const opts = (o: Partial<GenerateOptions> = {}): GenerateOptions => ({ ...DEFAULT_SAMPLING, maxNewTokens: 12, stop: [], seed: 1, ...o });

before(async () => {
  dir = await tinyModelFolder();
  model = await loadLlm(dir);
  gen = await LlmGenerator.create(model, await LlmTokenizer.load(dir), { threads: 1 });
});

async function fullLogits(m: LoadedLlm, ids: number[]): Promise<Float32Array> {
  const g = llamaForCausalLM(llmContext(m.weights), m.arch);
  const net = await compile([g.logits], { threads: 1 });
  const [out] = await net.run(decoderFeeds(m.arch, { ids, batch: 1, length: ids.length }));
  return out!.data as Float32Array;
}

const argmax = (x: Float32Array, from: number, n: number) => {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[from + i]! > x[from + best]!) best = i;
  return best;
};

test('greedy generation with the KV cache equals re-running the whole sequence each step', async () => {
  const prompt = [model.arch.bosTokenId ?? 1, 72, 101, 108, 108, 111];
  const r = await gen.generateIds(prompt, opts());
  assert.ok(r.tokens.length > 0);
  const V = model.arch.vocab;
  const seq = [...prompt];
  for (const t of r.tokens) {
    const logits = await fullLogits(model, seq);
    assert.equal(t, argmax(logits, (seq.length - 1) * V, V), `token ${seq.length - prompt.length}`);
    seq.push(t);
  }
});

test('sampling: a seed fixes the draw, top_k 1 is greedy, temperature changes it', async () => {
  const prompt = [1, 65, 66, 67];
  const greedy = await gen.generateIds(prompt, opts());
  const k1 = await gen.generateIds(prompt, opts({ temperature: 1.5, topK: 1 }));
  assert.deepEqual(k1.tokens, greedy.tokens);
  const a = await gen.generateIds(prompt, opts({ temperature: 2, seed: 7 }));
  const b = await gen.generateIds(prompt, opts({ temperature: 2, seed: 7 }));
  assert.deepEqual(a.tokens, b.tokens);
  const others = await Promise.all([8, 9, 10].map((seed) => gen.generateIds(prompt, opts({ temperature: 2, seed }))));
  assert.ok(others.some((o) => o.tokens.join() !== a.tokens.join()), 'different seeds draw different tokens');
  const nucleus = await gen.generateIds(prompt, opts({ temperature: 2, topP: 1e-6, seed: 3 }));
  assert.deepEqual(nucleus.tokens, greedy.tokens, 'top_p keeps at least the most likely token');
  const pen = await gen.generateIds(prompt, opts({ repetitionPenalty: 50, maxNewTokens: 20 }));
  assert.equal(new Set(pen.tokens).size, pen.tokens.length, 'a huge repetition penalty never repeats a token');
});

test('stop strings end the text before them, streaming never emits part of one', async () => {
  const full = await gen.complete('Hi', opts({ maxNewTokens: 16 }));
  assert.ok(full.text.length >= 4, `greedy text ${JSON.stringify(full.text)}`);
  const stop = full.text.slice(2, 4);
  const chunks: string[] = [];
  const r = await gen.complete('Hi', opts({ maxNewTokens: 16, stop: [stop] }), { onText: (d) => chunks.push(d) });
  assert.equal(r.finishReason, 'stop');
  assert.equal(r.text, full.text.slice(0, full.text.indexOf(stop)));
  assert.equal(chunks.join(''), r.text);
  const streamed: string[] = [];
  const r2 = await gen.complete('Hi', opts({ maxNewTokens: 16 }), { onText: (d) => streamed.push(d) });
  assert.equal(streamed.join(''), r2.text);
  assert.equal(r2.finishReason, 'length');
});

test('an adapter fed as merged weights equals the model with the adapter merged in place', async () => {
  const adapter = await loadPeftAdapter(join(llamaTinyDir, 'lora'));
  const w = await adapterWeights(model.weights, [{ adapter, weight: 0.7 }]);
  assert.equal(w.size, adapter.modules.length);
  const prompt = [1, 80, 81, 82, 83];
  const fed = await gen.generateIds(prompt, opts(), { weights: w });
  const merged = await loadLlm(dir);
  await mergeAdapters(merged.weights, [{ adapter, weight: 0.7 }]);
  const ref = await LlmGenerator.create(merged, undefined, { threads: 1 });
  assert.deepEqual(fed.tokens, (await ref.generateIds(prompt, opts())).tokens);
  const base = await gen.generateIds(prompt, opts());
  assert.notDeepEqual(base.tokens, fed.tokens, 'the adapter changes greedy output');
  const a = await fullLogits(merged, prompt);
  const b = await fullLogits(model, prompt);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
  assert.ok(diff > 0.05, `adapter moves logits (${diff})`);
});
