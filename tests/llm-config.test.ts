// config.json of the Llama family in both transformers generations, the flags that tell the relatives apart,
// and the rotary scalings' defining properties.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseLlmConfig } from '../engine/llm/config.ts';
import { inverseFrequencies, ropeTablesFor } from '../engine/llm/rope.ts';
import { attentionMask } from '../engine/llm/mask.ts';

const base = { model_type: 'llama', hidden_size: 256, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 512, vocab_size: 100, max_position_embeddings: 64 };

test('rope settings are read from transformers 4 (top level) and 5 (rope_parameters) configs alike', () => {
  const scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
  const v4 = parseLlmConfig({ ...base, rope_theta: 500000, rope_scaling: scaling }, 'v4');
  const v5 = parseLlmConfig({ ...base, rope_parameters: { rope_theta: 500000, ...scaling } }, 'v5');
  assert.deepEqual(v4.rope, v5.rope);
  assert.deepEqual(v4.rope, { type: 'llama3', theta: 500000, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
  assert.equal(parseLlmConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } }, 'old').rope.type, 'linear');
  assert.throws(() => parseLlmConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'c.json'), /c\.json: rope scaling type 'yarn' is not supported/);
});

test('relatives by flag: Qwen2 q/k/v biases, Qwen3 q/k norms, Mistral sliding window; the rest is refused by name', () => {
  const q2 = parseLlmConfig({ ...base, model_type: 'qwen2', use_sliding_window: false, sliding_window: 4096, tie_word_embeddings: true }, 'q2');
  assert.deepEqual([q2.qkvBias, q2.oBias, q2.qkNorm, q2.slidingWindow, q2.tieEmbeddings], [true, false, false, null, true]);
  const q3 = parseLlmConfig({ ...base, model_type: 'qwen3', head_dim: 64 }, 'q3');
  assert.deepEqual([q3.qkvBias, q3.qkNorm, q3.headDim, q3.kvHeads], [false, true, 64, 2]);
  const m = parseLlmConfig({ ...base, model_type: 'mistral', num_key_value_heads: 1, sliding_window: 16 }, 'm');
  assert.deepEqual([m.slidingWindow, m.kvHeads, m.headDim], [16, 1, 128]);
  assert.throws(() => parseLlmConfig({ ...base, model_type: 'gpt2' }, 'g.json'), /g\.json: model_type 'gpt2' is not supported/);
  assert.throws(() => parseLlmConfig({ ...base, num_key_value_heads: 3 }, 'k.json'), /not a multiple of num_key_value_heads 3/);
  assert.throws(() => parseLlmConfig({ ...base, hidden_act: 'gelu' }, 'a.json'), /hidden_act 'gelu'/);
});

test('llama3 scaling keeps short wavelengths, divides long ones by the factor and blends between', () => {
  const arch = parseLlmConfig({ ...base, rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }, 'l3');
  const plain = inverseFrequencies({ ...arch, rope: { ...arch.rope, type: 'default' } });
  const scaled = inverseFrequencies(arch);
  const wavelen = (f: number) => (2 * Math.PI) / f;
  let blended = 0;
  plain.forEach((f, i) => {
    const w = wavelen(f);
    if (w < 8192 / 4) assert.equal(scaled[i], f, `short wavelength ${i} kept`);
    else if (w > 8192) assert.ok(Math.abs(scaled[i]! - f / 8) < 1e-12 + 1e-6 * f, `long wavelength ${i} divided by 8`);
    else {
      blended++;
      assert.ok(scaled[i]! < f && scaled[i]! > f / 8, `band ${i} between`);
    }
  });
  assert.ok(blended > 0, 'head_dim 128 has components in the blended band');
});

test('linear scaling is positions divided by the factor; dynamic only changes past the trained length', () => {
  const lin = parseLlmConfig({ ...base, rope_scaling: { rope_type: 'linear', factor: 4 } }, 'lin');
  const def = parseLlmConfig(base, 'def');
  const a = ropeTablesFor(lin, [8, 20]);
  const b = ropeTablesFor(def, [2, 5]);
  for (let i = 0; i < a.cos.length; i++) assert.ok(Math.abs(a.cos[i]! - b.cos[i]!) < 1e-6 && Math.abs(a.sin[i]! - b.sin[i]!) < 1e-6);
  const dyn = parseLlmConfig({ ...base, rope_scaling: { rope_type: 'dynamic', factor: 2 } }, 'dyn');
  assert.deepEqual(inverseFrequencies(dyn, 64), inverseFrequencies(def));
  const longer = inverseFrequencies(dyn, 128);
  const plain = inverseFrequencies(def);
  assert.equal(longer[0], plain[0], 'the first frequency is 1 whatever theta is');
  assert.ok(longer.slice(1).every((f, i) => f < plain[i + 1]!), 'a longer sequence lowers every other frequency (larger theta)');
});

test('attention masks: causal, packed documents, a KV-cache offset and a sliding window', () => {
  const show = (m: Float32Array, T: number, S: number) => Array.from({ length: T }, (_, t) => Array.from(m.subarray(t * S, t * S + S), (v) => (v === 0 ? 1 : 0)).join('')).join(' ');
  assert.equal(show(attentionMask({ batch: 1, length: 3 }), 3, 3), '100 110 111');
  assert.equal(show(attentionMask({ batch: 1, length: 4, segments: Int32Array.from([0, 0, 1, 1]) }), 4, 4), '1000 1100 0010 0011');
  assert.equal(show(attentionMask({ batch: 1, length: 1, past: 3 }), 1, 4), '1111');
  assert.equal(show(attentionMask({ batch: 1, length: 4, window: 2 }), 4, 4), '1000 1100 0110 0011');
});
