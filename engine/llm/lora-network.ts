/**
 * The trainable LoRA of a causal LM (Hu et al. 2021), attached through the model layers' adapter hook:
 * y = W·x + s·B·A·dropout(x), s = alpha/r, with A ~ U(±1/√in) (torch's kaiming_uniform(a=√5), PEFT's
 * default) and B = 0, so training starts from the base model. Parameters are named by their PEFT file keys,
 * so gradients, optimizer state, checkpoints and the saved adapter share one set of names.
 */
import * as g from '../graph/index.ts';
import type { Tensor } from '../graph/tensor.ts';
import type { ModuleContext } from '../models/layers.ts';
import type { F32Tensor } from '../lora/types.ts';
import { seededRandom } from '../train/seeded-random.ts';
import { UserError } from '../util/errors.ts';
import { loraScale, peftKey, type PeftAdapter } from './peft.ts';

export const ALL_LINEAR = 'all-linear';

export interface LlmLoraTarget {
  /** transformers module path, e.g. model.layers.3.mlp.up_proj. */
  module: string;
  inFeatures: number;
  outFeatures: number;
}

const LAYER_LINEAR = /^model\.layers\.\d+\.(self_attn|mlp)\.([a-z_]+)$/;

/**
 * The decoder layers' Linear modules a target list selects: `all-linear` (every one, not the LM head, as
 * PEFT's shorthand), or names matched against the module's last component (q_proj) or its full path.
 */
export function selectLlmTargets(shapes: ReadonlyMap<string, { shape: readonly number[] }>, targets: readonly string[] | string): LlmLoraTarget[] {
  const list = typeof targets === 'string' ? [targets] : [...targets];
  const linear: LlmLoraTarget[] = [];
  for (const [key, t] of shapes) {
    if (!key.endsWith('.weight') || t.shape.length !== 2) continue;
    const module = key.slice(0, -'.weight'.length);
    if (LAYER_LINEAR.test(module)) linear.push({ module, inFeatures: t.shape[1]!, outFeatures: t.shape[0]! });
  }
  if (list.includes(ALL_LINEAR)) return linear;
  const names = new Set(linear.map((l) => l.module.split('.').pop()!));
  for (const name of list) {
    if (!names.has(name) && !linear.some((l) => l.module === name)) {
      throw new UserError(`target_modules: '${name}' names no Linear layer of this model; it has ${[...names].join(', ')} (or use ${ALL_LINEAR})`);
    }
  }
  return linear.filter((l) => list.includes(l.module.split('.').pop()!) || list.includes(l.module));
}

interface NetModule extends LlmLoraTarget {
  A: Float32Array;
  B: Float32Array;
  rank: number;
  alpha: number;
  scale: number;
}

export class LlmLoraNetwork {
  private readonly byModule: Map<string, NetModule>;
  private readonly graphParams = new Map<string, Tensor>();

  private constructor(readonly modules: NetModule[]) {
    this.byModule = new Map(modules.map((m) => [m.module, m]));
  }

  /** A fresh adapter: A uniform in ±1/√in (seeded per module), B zero. */
  static create(targets: readonly LlmLoraTarget[], opts: { rank: number; alpha: number; seed: number }): LlmLoraNetwork {
    return new LlmLoraNetwork(
      targets.map((t) => {
        const rnd = seededRandom(opts.seed, 'llm-lora-init', t.module);
        const bound = 1 / Math.sqrt(t.inFeatures);
        const A = new Float32Array(opts.rank * t.inFeatures);
        for (let i = 0; i < A.length; i++) A[i] = (2 * rnd() - 1) * bound;
        return { ...t, A, B: new Float32Array(t.outFeatures * opts.rank), rank: opts.rank, alpha: opts.alpha, scale: opts.alpha / opts.rank };
      }),
    );
  }

  /** The trainable copy of a saved adapter (init_lora, goldens). */
  static fromAdapter(adapter: PeftAdapter): LlmLoraNetwork {
    return new LlmLoraNetwork(
      adapter.modules.map((m) => ({
        module: m.module,
        inFeatures: m.A.shape[1]!,
        outFeatures: m.B.shape[0]!,
        A: m.A.data.slice(),
        B: m.B.data.slice(),
        rank: m.rank,
        ...loraScale(adapter.config, m.module, m.rank),
      })),
    );
  }

  /** Parameter buffers by PEFT key (the optimizer updates them in place). */
  params(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const m of this.modules) {
      out.set(peftKey(m.module, 'A'), m.A);
      out.set(peftKey(m.module, 'B'), m.B);
    }
    return out;
  }

  /** Graph parameters, one per buffer, made on first use by `hook`. */
  paramTensors(): Tensor[] {
    return [...this.graphParams.values()];
  }

  private param(key: string, shape: number[], data: Float32Array): Tensor {
    let t = this.graphParams.get(key);
    if (!t) this.graphParams.set(key, (t = g.param(key, shape, data)));
    return t;
  }

  /** The adapter hook for ModuleContext: the low-rank branch beside every targeted Linear. */
  hook(dropout: number, training: boolean): NonNullable<ModuleContext['adapter']> {
    return (moduleKey, x, kind) => {
      const m = this.byModule.get(moduleKey);
      if (!m || kind !== 'linear') return undefined;
      const A = this.param(peftKey(m.module, 'A'), [m.rank, m.inFeatures], m.A);
      const B = this.param(peftKey(m.module, 'B'), [m.outFeatures, m.rank], m.B);
      return g.mul(g.linear(g.linear(g.dropout(x, dropout, training), A), B), m.scale);
    };
  }

  /** Copies values saved under the same keys (resume); every key must match in shape. */
  load(values: ReadonlyMap<string, Float32Array>, source: string): void {
    for (const [key, buf] of this.params()) {
      const v = values.get(key);
      if (!v) throw new UserError(`${source}: tensor '${key}' is missing (was the adapter trained with other target_modules?)`);
      if (v.length !== buf.length) throw new UserError(`${source}: tensor '${key}' has ${v.length} values, expected ${buf.length} (other lora_rank?)`);
      buf.set(v);
    }
  }

  /** Tensors as the adapter file stores them. */
  tensors(): Map<string, F32Tensor> {
    const out = new Map<string, F32Tensor>();
    for (const m of this.modules) {
      out.set(peftKey(m.module, 'A'), { shape: [m.rank, m.inFeatures], data: m.A });
      out.set(peftKey(m.module, 'B'), { shape: [m.outFeatures, m.rank], data: m.B });
    }
    return out;
  }

  /** Base names of the targeted modules (q_proj, …), as PEFT records target_modules. */
  targetNames(): string[] {
    return [...new Set(this.modules.map((m) => m.module.split('.').pop()!))];
  }
}
