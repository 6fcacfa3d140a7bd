/**
 * Random-weight Hugging Face model folders of a given Llama-family shape, for benchmarks: config.json and one
 * bf16 model.safetensors written from a seeded generator (weights N(0, 0.02²), norms 1, biases N(0, 0.02²)),
 * so the same folder can be loaded here and by transformers.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeSafetensorsStreaming } from '../safetensors/index.ts';
import { f32ToBf16 } from '../safetensors/float.ts';
import { seededRandom } from '../train/seeded-random.ts';

/** Qwen2-0.5B's shape (transformers config values). */
export const QWEN2_05B = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  vocab_size: 151936,
  max_position_embeddings: 32768,
  rope_theta: 1000000.0,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
  hidden_act: 'silu',
  use_sliding_window: false,
  bos_token_id: 151643,
  eos_token_id: 151643,
  torch_dtype: 'bfloat16',
} as const;

type Shape = typeof QWEN2_05B;

function tensors(c: Shape): { name: string; shape: number[]; kind: 'w' | 'norm' | 'bias' }[] {
  const D = c.hidden_size / c.num_attention_heads;
  const out: { name: string; shape: number[]; kind: 'w' | 'norm' | 'bias' }[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocab_size, c.hidden_size], kind: 'w' }];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const P = `model.layers.${i}.`;
    out.push(
      { name: `${P}input_layernorm.weight`, shape: [c.hidden_size], kind: 'norm' },
      { name: `${P}self_attn.q_proj.weight`, shape: [c.num_attention_heads * D, c.hidden_size], kind: 'w' },
      { name: `${P}self_attn.q_proj.bias`, shape: [c.num_attention_heads * D], kind: 'bias' },
      { name: `${P}self_attn.k_proj.weight`, shape: [c.num_key_value_heads * D, c.hidden_size], kind: 'w' },
      { name: `${P}self_attn.k_proj.bias`, shape: [c.num_key_value_heads * D], kind: 'bias' },
      { name: `${P}self_attn.v_proj.weight`, shape: [c.num_key_value_heads * D, c.hidden_size], kind: 'w' },
      { name: `${P}self_attn.v_proj.bias`, shape: [c.num_key_value_heads * D], kind: 'bias' },
      { name: `${P}self_attn.o_proj.weight`, shape: [c.hidden_size, c.num_attention_heads * D], kind: 'w' },
      { name: `${P}post_attention_layernorm.weight`, shape: [c.hidden_size], kind: 'norm' },
      { name: `${P}mlp.gate_proj.weight`, shape: [c.intermediate_size, c.hidden_size], kind: 'w' },
      { name: `${P}mlp.up_proj.weight`, shape: [c.intermediate_size, c.hidden_size], kind: 'w' },
      { name: `${P}mlp.down_proj.weight`, shape: [c.hidden_size, c.intermediate_size], kind: 'w' },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [c.hidden_size], kind: 'norm' });
  return out;
}

export async function writeSyntheticLlm(dir: string, c: Shape = QWEN2_05B, seed = 0): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(c, null, 2));
  const list = tensors(c);
  await writeSafetensorsStreaming(
    join(dir, 'model.safetensors'),
    list.map((t) => ({ name: t.name, dtype: 'BF16' as const, shape: t.shape })),
    async (name) => {
      const t = list.find((x) => x.name === name)!;
      const n = t.shape.reduce((a, b) => a * b, 1);
      const v = new Float32Array(n);
      if (t.kind === 'norm') v.fill(1);
      else {
        const rnd = seededRandom(seed, name);
        for (let i = 0; i < n; i += 2) {
          // Box–Muller: two normals per two uniforms.
          const r = Math.sqrt(-2 * Math.log(1 - rnd())) * 0.02;
          const a = 2 * Math.PI * rnd();
          v[i] = r * Math.cos(a);
          if (i + 1 < n) v[i + 1] = r * Math.sin(a);
        }
      }
      return f32ToBf16(v);
    },
    { format: 'pt' },
  );
}
