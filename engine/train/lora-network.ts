/**
 * The trainable LoRA network: one (down, up) pair per targeted Linear/Conv of the UNet and, optionally, the
 * text encoder, attached to the model graphs through the layers' `adapter` hook. Parameters are named as
 * in a kohya file (`lora_unet_…​.lora_down.weight`), so gradients, optimizer state and the saved LoRA all
 * share one set of names, and goldens made by peft compare name for name.
 */
import * as g from '../graph/index.ts';
import type { Tensor } from '../graph/tensor.ts';
import type { Conv2dOptions } from '../graph/ops-nn.ts';
import type { ModuleContext } from '../models/layers.ts';
import { inferUnetLayout, ldmToDiffusers, LDM_PREFIX } from '../sd/keymap.ts';
import { SDXL_TEXT } from '../sd/arch.ts';
import { fusedQkvModule } from '../models/clip-text.ts';
import { kohyaModuleName, type LoraPart } from '../lora/names.ts';
import type { LoraModule, ParsedLora } from '../lora/types.ts';
import { UserError } from '../util/errors.ts';
import type { LlmTargetModules, TargetModules } from './config-fields.ts';
import { seededRandom } from './seeded-random.ts';

export interface WeightShapes {
  keys(): Iterable<string>;
  get(key: string): { shape: number[] } | undefined;
}

export interface LoraTargetModule {
  /** kohya module name, e.g. lora_unet_down_blocks_0_attentions_0_proj_in. */
  name: string;
  part: LoraPart;
  /** Dotted path within the part (diffusers path for the UNet, `text_model.…` for the text encoder). */
  path: string;
  /** LDM module key (weight key without `.weight`): what the layers' adapter hook is called with. */
  key: string;
  kind: 'linear' | 'conv';
  inFeatures: number;
  outFeatures: number;
  /** Kernel [kh, kw] for conv modules. */
  kernel: [number, number];
}

export interface LoraNetworkModule extends LoraTargetModule {
  rank: number;
  alpha: number;
  down: Float32Array;
  downShape: number[];
  up: Float32Array;
  upShape: number[];
}

// kohya's target classes, seen through diffusers module paths: Transformer2DModel (attention, MLP, proj_in/out)
// and, for LoCon, ResnetBlock2D / Downsample2D / Upsample2D; CLIPAttention and CLIPMLP in the text encoder.
const UNET_ATTENTION = /attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/;
const UNET_MLP = [/attentions\.\d+\.(proj_in|proj_out)$/, /attentions\.\d+\.transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)$/];
const UNET_CONV = [/resnets\.\d+\.(conv1|conv2|time_emb_proj|conv_shortcut)$/, /(downsamplers|upsamplers)\.0\.conv$/];
const TE_ATTENTION = /^text_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)$/;
const TE_MLP = /^text_model\.encoder\.layers\.\d+\.mlp\.(fc1|fc2)$/;

function unetSelected(path: string, targets: TargetModules): boolean {
  if (UNET_ATTENTION.test(path)) return true;
  if (targets === 'attention') return false;
  if (UNET_MLP.some((r) => r.test(path))) return true;
  return targets === 'attention_mlp_conv' && UNET_CONV.some((r) => r.test(path));
}

function teSelected(path: string, targets: TargetModules): boolean {
  return TE_ATTENTION.test(path) || (targets !== 'attention' && TE_MLP.test(path));
}

/**
 * The trainable modules of one weight of an SGM file's OpenCLIP tower, under the transformers names kohya
 * uses (`lora_te2_text_model_encoder_layers_N_self_attn_q_proj`); the fused in_proj gives q, k and v.
 */
function openclipModules(key: string, shape: number[]): LoraTargetModule[] {
  const rel = key.slice(SDXL_TEXT.te2OpenClip.length);
  const make = (path: string, moduleKey: string, out: number, inn: number): LoraTargetModule => ({
    name: kohyaModuleName({ part: 'te2', path }),
    part: 'te2',
    path,
    key: moduleKey,
    kind: 'linear',
    inFeatures: inn,
    outFeatures: out,
    kernel: [1, 1],
  });
  let m: RegExpMatchArray | null;
  if ((m = rel.match(/^transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$/))) {
    const w = shape[1]!;
    const inProj = key.slice(0, -'_weight'.length);
    return (['q', 'k', 'v'] as const).map((p) => make(`text_model.encoder.layers.${m![1]}.self_attn.${p}_proj`, fusedQkvModule(inProj, p), w, w));
  }
  if ((m = rel.match(/^transformer\.resblocks\.(\d+)\.(attn\.out_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/))) {
    const hf = { 'attn.out_proj': 'self_attn.out_proj', 'mlp.c_fc': 'mlp.fc1', 'mlp.c_proj': 'mlp.fc2' }[m[2] as 'attn.out_proj'];
    return [make(`text_model.encoder.layers.${m[1]}.${hf}`, key.slice(0, -'.weight'.length), shape[0]!, shape[1]!)];
  }
  return [];
}

/** SDXL weights (its UNet has `label_emb`): kohya names its modules the sd-scripts SDXL way. */
export function isSdxlWeights(weights: WeightShapes): boolean {
  return weights.get(`${LDM_PREFIX.unet}label_emb.0.0.weight`) !== undefined;
}

/**
 * The model's modules a LoRA of this kind targets, in the model's key order. Names follow kohya: for SD 1.x /
 * 2.x diffusers UNet paths and `lora_te_`; for SDXL (sd-scripts' `sdxl_train_network`) the SGM UNet paths
 * (`lora_unet_input_blocks_4_1_proj_in`) and `lora_te1_` / `lora_te2_` for the two text encoders.
 */
export function selectTargets(weights: WeightShapes, targets: TargetModules, textEncoder: boolean): LoraTargetModule[] {
  const keys = [...weights.keys()];
  const unetKeys = keys.filter((k) => k.startsWith(LDM_PREFIX.unet));
  const layout = unetKeys.length ? inferUnetLayout(unetKeys) : undefined;
  const sdxl = isSdxlWeights(weights);
  const textEncoders: [string, LoraPart][] = sdxl
    ? [[SDXL_TEXT.te1, 'te'], [SDXL_TEXT.te2Hf, 'te2']]
    : [[LDM_PREFIX.text_encoder, 'te']];
  const out: LoraTargetModule[] = [];
  for (const k of keys) {
    if (sdxl && k.startsWith(SDXL_TEXT.te2OpenClip)) {
      if (textEncoder) out.push(...openclipModules(k, weights.get(k)!.shape).filter((m) => teSelected(m.path, targets)));
      continue;
    }
    if (!k.endsWith('.weight')) continue;
    let part: LoraPart;
    let path: string;
    const te = textEncoders.find(([prefix]) => k.startsWith(prefix));
    if (k.startsWith(LDM_PREFIX.unet)) {
      const d = ldmToDiffusers(k, { unet: layout });
      if (!d) continue;
      part = 'unet';
      path = d.name.slice(0, -'.weight'.length);
      if (!unetSelected(path, targets)) continue;
      if (sdxl) path = k.slice(LDM_PREFIX.unet.length, -'.weight'.length);
    } else if (te) {
      if (!textEncoder) continue;
      part = te[1];
      path = k.slice(te[0].length, -'.weight'.length);
      if (!teSelected(path, targets)) continue;
    } else continue;
    const shape = weights.get(k)!.shape;
    const conv = shape.length === 4;
    out.push({
      name: kohyaModuleName({ part, path }, sdxl ? 'te1' : 'te'),
      part,
      path,
      key: k.slice(0, -'.weight'.length),
      kind: conv ? 'conv' : 'linear',
      inFeatures: shape[1]!,
      outFeatures: shape[0]!,
      kernel: conv ? [shape[2]!, shape[3]!] : [1, 1],
    });
  }
  return out;
}

export interface LoraNetworkOptions {
  rank: number;
  alpha: number;
  /** The config's value; the LLM-only forms (a list, all-linear) are refused here. */
  targets: TargetModules | LlmTargetModules;
  textEncoder: boolean;
  /** Seeds the down projections' initialisation (per module, so the module order does not matter). */
  seed: number;
}

/** Uniform(-1/√fan_in, 1/√fan_in): torch's kaiming_uniform_(a=√5), the Linear/Conv default kohya and peft use. */
function kaimingUniform(n: number, fanIn: number, seed: number, name: string): Float32Array {
  const bound = 1 / Math.sqrt(fanIn);
  const rnd = seededRandom(seed, 'lora-init', name);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rnd() - 1) * bound;
  return out;
}

export const downName = (module: string) => `${module}.lora_down.weight`;
export const upName = (module: string) => `${module}.lora_up.weight`;

export class LoraNetwork {
  readonly modules: LoraNetworkModule[];
  private readonly byKey = new Map<string, LoraNetworkModule>();
  private readonly params = new Map<string, Tensor>();

  /** @param teStyle how kohya names the (first) text encoder's modules: `lora_te_` (SD 1.x / 2.x) or `lora_te1_` (SDXL). */
  constructor(modules: LoraNetworkModule[], readonly teStyle: 'te' | 'te1' = 'te') {
    this.modules = modules;
    for (const m of modules) this.byKey.set(m.key, m);
  }

  /** Fresh kohya initialisation: down kaiming-uniform, up zero (so the network starts as the identity). */
  static create(weights: WeightShapes, opts: LoraNetworkOptions): LoraNetwork {
    if (!(Number.isInteger(opts.rank) && opts.rank >= 1)) throw new UserError(`lora_rank must be an integer ≥ 1, got ${opts.rank}`);
    if (!(opts.alpha > 0)) throw new UserError(`lora_alpha must be > 0, got ${opts.alpha}`);
    const t = opts.targets;
    if (Array.isArray(t) || t === 'all-linear') throw new UserError(`target_modules ${JSON.stringify(t)} applies to LLM base models; for Stable Diffusion use attention, attention_mlp or attention_mlp_conv`);
    const targets = selectTargets(weights, t, opts.textEncoder);
    if (!targets.length) throw new UserError(`target_modules ${opts.targets}: the model has no matching layers`);
    return new LoraNetwork(
      targets.map((t) => {
        const [kh, kw] = t.kernel;
        const downShape = t.kind === 'conv' ? [opts.rank, t.inFeatures, kh, kw] : [opts.rank, t.inFeatures];
        const upShape = t.kind === 'conv' ? [t.outFeatures, opts.rank, 1, 1] : [t.outFeatures, opts.rank];
        const fanIn = t.inFeatures * kh * kw;
        return {
          ...t,
          rank: opts.rank,
          alpha: opts.alpha,
          down: kaimingUniform(opts.rank * fanIn, fanIn, opts.seed, t.name),
          downShape,
          up: new Float32Array(t.outFeatures * opts.rank),
          upShape,
        };
      }),
      isSdxlWeights(weights) ? 'te1' : 'te',
    );
  }

  /**
   * Overwrites modules with those of a LoRA file (init_lora, goldens): each of this network's modules must be
   * in the file with the same shapes; the file's alpha wins, as kohya loads it with the weights. Returns the
   * names of file modules this network does not train (e.g. text-encoder modules when only the UNet trains).
   */
  loadFrom(lora: ParsedLora, source: string): string[] {
    const mine = new Map(this.modules.map((m) => [m.name, m]));
    const seen = new Set<string>();
    const ignored: string[] = [];
    for (const f of lora.modules) {
      const name = kohyaModuleName({ part: f.part, path: f.path }, this.teStyle);
      const m = mine.get(name);
      if (!m) {
        ignored.push(f.name);
        continue;
      }
      const { down, up } = f.tensors;
      if ((f.kind !== 'lora' && f.kind !== 'locon') || !down || !up || f.tensors.mid)
        throw new UserError(`${source}: module ${f.name} is ${f.kind}, not a plain LoRA; init_lora needs a LoRA of the same kind`);
      const same = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
      if (!same(down.shape, m.downShape) || !same(up.shape, m.upShape))
        throw new UserError(
          `${source}: module ${f.name} has down ${JSON.stringify(down.shape)} / up ${JSON.stringify(up.shape)}, ` +
            `but lora_rank ${m.rank} on this layer needs ${JSON.stringify(m.downShape)} / ${JSON.stringify(m.upShape)}`,
        );
      m.down.set(down.data);
      m.up.set(up.data);
      m.alpha = f.alpha ?? f.scale * m.rank;
      seen.add(name);
    }
    const missing = this.modules.filter((m) => !seen.has(m.name)).map((m) => m.name);
    if (missing.length)
      throw new UserError(
        `${source}: ${missing.length} of the ${this.modules.length} layers selected by target_modules are not in this LoRA ` +
          `(first: ${missing.slice(0, 3).join(', ')}); init_lora needs the same targets and rank`,
      );
    return ignored;
  }

  get size(): number {
    return this.modules.length;
  }

  hasPart(part: LoraPart): boolean {
    return this.modules.some((m) => m.part === part);
  }

  /** Trainable buffers of one part by parameter name; the optimizer updates these in place. */
  buffers(part: LoraPart): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const m of this.modules) {
      if (m.part !== part) continue;
      out.set(downName(m.name), m.down);
      out.set(upName(m.name), m.up);
    }
    return out;
  }

  /** Every trainable buffer, UNet first. */
  allBuffers(): Map<string, Float32Array> {
    return new Map([...this.buffers('unet'), ...this.buffers('te')]);
  }

  private param(name: string, shape: number[], data: Float32Array): Tensor {
    let p = this.params.get(name);
    if (!p) {
      p = g.param(name, shape, data);
      this.params.set(name, p);
    }
    return p;
  }

  /** Parameter tensors (made on first use by `adapter`) of the given parts, to differentiate. */
  paramTensors(parts: readonly LoraPart[] = ['unet', 'te']): Tensor[] {
    const out: Tensor[] = [];
    for (const m of this.modules) {
      if (!parts.includes(m.part)) continue;
      out.push(this.param(downName(m.name), m.downShape, m.down), this.param(upName(m.name), m.upShape, m.up));
    }
    return out;
  }

  /**
   * The layers' adapter hook: `scale · up(down(x))` beside every targeted layer (a conv with the layer's own
   * kernel, stride and padding, then a 1×1 conv, for conv layers), with scale = alpha / rank.
   */
  adapter(multiplier = 1): NonNullable<ModuleContext['adapter']> {
    return (key: string, x: Tensor, kind: 'linear' | 'conv', conv?: Conv2dOptions): Tensor | undefined => {
      const m = this.byKey.get(key);
      if (!m) return undefined;
      if (kind !== m.kind) throw new Error(`LoRA module ${m.name}: built for a ${m.kind} layer but ${key} is used as ${kind}`);
      const down = this.param(downName(m.name), m.downShape, m.down);
      const up = this.param(upName(m.name), m.upShape, m.up);
      const scale = (m.alpha / m.rank) * multiplier;
      const y = kind === 'conv' ? g.conv2d(g.conv2d(x, down, undefined, conv ?? {}), up) : g.linear(g.linear(x, down), up);
      return g.mul(y, scale);
    };
  }

  /** Modules as the LoRA writers take them (kohya / PEFT), sharing this network's buffers. */
  toLoraModules(): LoraModule[] {
    return this.modules.map((m) => ({
      name: m.name,
      part: m.part,
      path: m.path,
      kind: m.kind === 'conv' && (m.kernel[0] > 1 || m.kernel[1] > 1) ? 'locon' : 'lora',
      tensors: { down: { shape: m.downShape, data: m.down }, up: { shape: m.upShape, data: m.up } },
      rank: m.rank,
      alpha: m.alpha,
      scale: m.alpha / m.rank,
    }));
  }
}
