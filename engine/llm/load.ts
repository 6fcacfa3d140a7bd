/** A model folder as the engine uses it: architecture from config.json, float32 weights, checked against each other. */
import { weightContext, type ModuleContext } from '../models/layers.ts';
import type { WeightMap } from '../lora/types.ts';
import { UserError } from '../util/errors.ts';
import { readLlmConfig, type LlmArch } from './config.ts';
import { loadModelWeights } from './weights.ts';

export interface LoadedLlm {
  dir: string;
  arch: LlmArch;
  weights: WeightMap;
}

/** Checks the tensors the architecture reads against their expected shapes, naming the first mismatch. */
export function checkLlmWeights(arch: LlmArch, weights: WeightMap, dir: string): void {
  const { hidden: C, heads: H, kvHeads: KV, headDim: D, intermediate: I, vocab: V } = arch;
  const expect = new Map<string, number[]>([['model.embed_tokens.weight', [V, C]], ['model.norm.weight', [C]]]);
  if (!arch.tieEmbeddings) expect.set('lm_head.weight', [V, C]);
  for (let i = 0; i < arch.layers; i++) {
    const P = `model.layers.${i}.`;
    expect.set(`${P}input_layernorm.weight`, [C]);
    expect.set(`${P}post_attention_layernorm.weight`, [C]);
    expect.set(`${P}self_attn.q_proj.weight`, [H * D, C]);
    expect.set(`${P}self_attn.k_proj.weight`, [KV * D, C]);
    expect.set(`${P}self_attn.v_proj.weight`, [KV * D, C]);
    expect.set(`${P}self_attn.o_proj.weight`, [C, H * D]);
    expect.set(`${P}mlp.gate_proj.weight`, [I, C]);
    expect.set(`${P}mlp.up_proj.weight`, [I, C]);
    expect.set(`${P}mlp.down_proj.weight`, [C, I]);
    if (arch.qkNorm) {
      expect.set(`${P}self_attn.q_norm.weight`, [D]);
      expect.set(`${P}self_attn.k_norm.weight`, [D]);
    }
  }
  for (const [key, shape] of expect) {
    const t = weights.get(key);
    if (!t) throw new UserError(`model ${dir}: tensor '${key}' is missing (config.json says ${arch.modelType} with ${arch.layers} layers)`);
    if (t.shape.join() !== shape.join()) throw new UserError(`model ${dir}: tensor '${key}' is [${t.shape}], config.json implies [${shape}]`);
  }
}

export async function loadLlm(dir: string): Promise<LoadedLlm> {
  const arch = await readLlmConfig(dir);
  const weights = await loadModelWeights(dir);
  checkLlmWeights(arch, weights, dir);
  return { dir, arch, weights };
}

/** A module context whose parameters are the model's weight buffers (names = transformers keys). */
export function llmContext(weights: WeightMap, extra: Partial<ModuleContext> = {}): ModuleContext {
  return weightContext({ shape: (k) => weights.get(k)?.shape, data: (k) => weights.get(k)!.data }, extra);
}
