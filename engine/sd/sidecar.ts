/**
 * A1111's per-checkpoint config: `<checkpoint stem>.yaml` beside a single-file checkpoint, in the form of the
 * original repositories' inference configs — LDM (SD 1.x / 2.x, `model.params.unet_config`) or SGM (SDXL,
 * `model.params.network_config`). It says what tensor shapes cannot: attention head counts, the
 * parameterization, the VAE scale, the noise schedule, the conditioner's layer choice.
 *
 * The file is read as plain data. Its `target` strings name Python classes that A1111 instantiates (so a
 * planted yaml runs code there); here they are only strings. Aliases are bounded and custom tags are not
 * resolved, so a crafted file can neither expand without limit nor build objects.
 */
import { readFile, stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { parseDocument } from 'yaml';
import { UserError } from '../util/errors.ts';

/** The UNet's construction parameters (`openaimodel.UNetModel`), as written; absent keys stay undefined. */
export interface SidecarUnet {
  inChannels?: number;
  outChannels?: number;
  modelChannels?: number;
  channelMult?: number[];
  numResBlocks?: number;
  /** Downsampling factors (1, 2, 4, …) whose levels carry spatial transformers. */
  attentionResolutions?: number[];
  /** `num_head_channels` (fixed head width) wins over `num_heads` (fixed head count), as in ldm / sgm. */
  heads?: { numHeads: number } | { headDim: number };
  /** One entry per level (an int in the file applies to every level). */
  transformerDepth?: number[];
  /** The middle block's depth: `transformer_depth_middle`, else the last level's. */
  transformerDepthMiddle?: number;
  contextDim?: number;
  /** true: Linear proj_in / proj_out; false: 1×1 convs. */
  useLinearInTransformer?: boolean;
  /** SGM `label_emb` input width (pooled text + size embeddings). */
  admInChannels?: number;
  numClasses?: number | 'sequential';
}

/** The KL autoencoder (`first_stage_config.params`). */
export interface SidecarVae {
  embedDim?: number;
  zChannels?: number;
  ch?: number;
  chMult?: number[];
  numResBlocks?: number;
}

/** One SGM conditioner embedder (`conditioner_config.params.emb_models[i]`), or LDM's `cond_stage_config`. */
export interface SidecarEmbedder {
  target: string;
  inputKey?: string;
  /** 'last' | 'hidden' | 'penultimate' | 'pooled' as the file says. */
  layer?: string;
  layerIdx?: number;
  /** ConcatTimestepEmbedderND's sinusoid width per number. */
  outdim?: number;
  alwaysReturnPooled?: boolean;
  legacy?: boolean;
  arch?: string;
}

export interface SidecarConfig {
  path: string;
  /** 'ldm' (SD 1.x / 2.x LatentDiffusion) or 'sgm' (SDXL DiffusionEngine). */
  form: 'ldm' | 'sgm';
  target?: string;
  /** What the UNet predicts; undefined when the file does not say (LDM: the default is eps). */
  prediction?: 'epsilon' | 'v_prediction';
  scaleFactor?: number;
  /**
   * LatentDiffusion's `image_size`: the latent side the model was trained at (LDM configs; SGM ones leave it
   * out). Not the UNet's own `image_size`, which the network never reads: the released SD 1.x and 2.x configs
   * set it to 32 whatever their size (v1-inference 64 / 32, v2-inference-v 96 / 32).
   */
  latentSize?: number;
  schedule: { linearStart?: number; linearEnd?: number; timesteps?: number };
  unet: SidecarUnet;
  vae: SidecarVae;
  textEncoders: SidecarEmbedder[];
}

/** A sidecar config is a few kB; anything far larger is not one. */
const MAX_BYTES = 1 << 20;
const MAX_ALIASES = 50;

/** A1111's per-checkpoint config path: the checkpoint's path with its extension replaced by `.yaml`. */
export function sidecarYamlPath(checkpoint: string): string {
  const ext = extname(checkpoint);
  return (ext ? checkpoint.slice(0, -ext.length) : checkpoint) + '.yaml';
}

/** Reads the sidecar config beside a single-file checkpoint; undefined when there is none. */
export async function readSidecar(checkpoint: string): Promise<SidecarConfig | undefined> {
  const path = sidecarYamlPath(checkpoint);
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) return undefined;
  if (st.size > MAX_BYTES) throw new UserError(`${path}: ${st.size} bytes is too large for a checkpoint config (at most ${MAX_BYTES})`);
  return parseSidecar(await readFile(path, 'utf8'), path);
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Field readers that name the file and the dotted key in every error. */
class Fields {
  constructor(
    private readonly path: string,
    private readonly where: string,
    private readonly obj: Obj,
  ) {}

  private fail(key: string, want: string, v: unknown): never {
    throw new UserError(`${this.path}: ${this.where}.${key} must be ${want}, got ${JSON.stringify(v)}`);
  }

  raw(key: string): unknown {
    return this.obj[key];
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  sub(key: string): Fields | undefined {
    const v = this.obj[key];
    if (v === undefined || v === null) return undefined;
    if (!isObj(v)) this.fail(key, 'a mapping', v);
    return new Fields(this.path, `${this.where}.${key}`, v);
  }

  /** `<key>.params` of a `{target, params}` block, or an empty reader when the block has none. */
  params(key: string): { target?: string; params: Fields } | undefined {
    const block = this.sub(key);
    if (!block) return undefined;
    return { target: block.str('target'), params: block.sub('params') ?? new Fields(this.path, `${this.where}.${key}.params`, {}) };
  }

  str(key: string): string | undefined {
    const v = this.obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') this.fail(key, 'a string', v);
    return v;
  }

  num(key: string): number | undefined {
    const v = this.obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, 'a number', v);
    return v;
  }

  positive(key: string): number | undefined {
    const v = this.num(key);
    if (v !== undefined && !(v > 0)) this.fail(key, 'a positive number', v);
    return v;
  }

  /** A positive integer; `-1` (ldm's "not set") reads as undefined where `unsetIsMinusOne`. */
  int(key: string, opts: { min?: number; unsetIsMinusOne?: boolean } = {}): number | undefined {
    const v = this.obj[key];
    if (v === undefined || v === null) return undefined;
    if (opts.unsetIsMinusOne && v === -1) return undefined;
    const min = opts.min ?? 1;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.fail(key, `an integer ≥ ${min}`, v);
    return v;
  }

  ints(key: string, min = 1): number[] | undefined {
    const v = this.obj[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min)) {
      this.fail(key, `a list of integers ≥ ${min}`, v);
    }
    return v as number[];
  }

  /** An int for every level, or a list with one per level. */
  intOrInts(key: string, min = 0): number[] | number | undefined {
    const v = this.obj[key];
    if (typeof v === 'number') return this.int(key, { min });
    return this.ints(key, min);
  }

  bool(key: string): boolean | undefined {
    const v = this.obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') this.fail(key, 'true or false', v);
    return v;
  }

  list(key: string): Fields[] {
    const v = this.obj[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(key, 'a list', v);
    return v.map((e, i) => {
      if (!isObj(e)) this.fail(`${key}[${i}]`, 'a mapping', e);
      return new Fields(this.path, `${this.where}.${key}[${i}]`, e);
    });
  }
}

/** Parses a sidecar config's text; `path` only names the file in errors. */
export function parseSidecar(text: string, path: string): SidecarConfig {
  let doc: unknown;
  try {
    // The core schema knows no custom tags: `!!python/object` and friends stay unresolved and are refused.
    const d = parseDocument(text, { schema: 'core', uniqueKeys: true, prettyErrors: false, logLevel: 'silent' });
    const problem = d.errors[0] ?? d.warnings[0];
    if (problem) throw problem;
    doc = d.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (e) {
    throw new UserError(`${path}: not a plain-data YAML config (${(e as Error).message.split('\n')[0]})`, { cause: e });
  }
  if (!isObj(doc) || !isObj(doc.model)) throw new UserError(`${path}: expected a checkpoint config with a top-level 'model' mapping`);
  const model = new Fields(path, 'model', doc.model);
  const params = model.sub('params') ?? new Fields(path, 'model.params', {});
  const target = model.str('target');
  const form: 'ldm' | 'sgm' = params.has('network_config') || target?.startsWith('sgm.') ? 'sgm' : 'ldm';
  const out: SidecarConfig = { path, form, target, schedule: {}, unet: {}, vae: {}, textEncoders: [] };
  out.scaleFactor = params.positive('scale_factor');

  if (form === 'ldm') {
    const p = params.str('parameterization');
    if (p !== undefined) out.prediction = prediction(p, path, 'model.params.parameterization');
    out.schedule = { linearStart: params.positive('linear_start'), linearEnd: params.positive('linear_end'), timesteps: params.int('timesteps') };
    out.latentSize = params.int('image_size');
    const unet = params.params('unet_config');
    if (unet) out.unet = readUnet(unet.params);
    const cond = params.params('cond_stage_config');
    if (cond?.target) out.textEncoders = [readEmbedder(cond.target, cond.params, undefined)];
  } else {
    const denoiser = params.params('denoiser_config');
    if (denoiser) {
      const scaling = denoiser.params.params('scaling_config')?.target;
      if (scaling) out.prediction = /VScaling/.test(scaling) ? 'v_prediction' : 'epsilon';
      const disc = denoiser.params.params('discretization_config')?.params;
      out.schedule = { linearStart: disc?.positive('linear_start'), linearEnd: disc?.positive('linear_end'), timesteps: denoiser.params.int('num_idx') };
    }
    const net = params.params('network_config');
    if (net) out.unet = readUnet(net.params);
    const cond = params.params('conditioner_config');
    if (cond) {
      out.textEncoders = cond.params.list('emb_models').map((m) => {
        const t = m.str('target');
        if (!t) throw new UserError(`${path}: every conditioner_config.params.emb_models entry needs a target`);
        return readEmbedder(t, m.sub('params') ?? new Fields(path, 'params', {}), m.str('input_key'));
      });
    }
  }
  const vae = params.params('first_stage_config');
  if (vae) {
    const dd = vae.params.sub('ddconfig');
    out.vae = { embedDim: vae.params.int('embed_dim'), zChannels: dd?.int('z_channels'), ch: dd?.int('ch'), chMult: dd?.ints('ch_mult'), numResBlocks: dd?.int('num_res_blocks') };
  }
  return out;
}

/**
 * The picture side a checkpoint was trained at, as its config states it: the latent `image_size` times the
 * autoencoder's downsampling factor (2 per level after the first; SD's KL-f8 when the file leaves it out).
 */
export function sidecarNativeSize(cfg: SidecarConfig): number | undefined {
  const latent = cfg.latentSize;
  return latent === undefined ? undefined : latent * 2 ** ((cfg.vae.chMult?.length ?? 4) - 1);
}

/** A1111's picture side when nothing else says one. */
export const A1111_DEFAULT_SIZE = 512;

/**
 * The side to generate at when the user names none: the native size the checkpoint's sidecar config states,
 * else A1111's 512. A config that cannot be read gives the default too (loading the checkpoint reports it).
 */
export async function defaultImageSide(checkpoint: string): Promise<number> {
  return (await statedNativeSize(checkpoint)) ?? A1111_DEFAULT_SIZE;
}

/** The native size the checkpoint's sidecar config states, if it has one that states it. */
export async function statedNativeSize(checkpoint: string): Promise<number | undefined> {
  const cfg = await readSidecar(checkpoint).catch(() => undefined);
  return cfg && sidecarNativeSize(cfg);
}

function prediction(v: string, path: string, where: string): 'epsilon' | 'v_prediction' {
  if (v === 'eps' || v === 'epsilon') return 'epsilon';
  if (v === 'v' || v === 'v_prediction') return 'v_prediction';
  throw new UserError(`${path}: ${where} must be "eps" or "v", got ${JSON.stringify(v)}`);
}

function readUnet(p: Fields): SidecarUnet {
  const numHeadChannels = p.int('num_head_channels', { unsetIsMinusOne: true });
  const numHeads = p.int('num_heads', { unsetIsMinusOne: true });
  const depth = p.intOrInts('transformer_depth');
  const channelMult = p.ints('channel_mult');
  const numClasses = p.raw('num_classes') === 'sequential' ? 'sequential' : p.int('num_classes');
  const perLevel = typeof depth === 'number' ? (channelMult ?? [1]).map(() => depth) : depth;
  return {
    inChannels: p.int('in_channels'),
    outChannels: p.int('out_channels'),
    modelChannels: p.int('model_channels'),
    channelMult,
    numResBlocks: p.int('num_res_blocks'),
    attentionResolutions: p.ints('attention_resolutions'),
    heads: numHeadChannels !== undefined ? { headDim: numHeadChannels } : numHeads !== undefined ? { numHeads } : undefined,
    transformerDepth: perLevel,
    transformerDepthMiddle: p.int('transformer_depth_middle', { min: 0 }) ?? perLevel?.[perLevel.length - 1],
    contextDim: p.int('context_dim'),
    useLinearInTransformer: p.bool('use_linear_in_transformer'),
    admInChannels: p.int('adm_in_channels'),
    numClasses,
  };
}

function readEmbedder(target: string, p: Fields, inputKey: string | undefined): SidecarEmbedder {
  return {
    target,
    inputKey,
    layer: p.str('layer'),
    layerIdx: p.int('layer_idx', { min: 0 }),
    outdim: p.int('outdim'),
    alwaysReturnPooled: p.bool('always_return_pooled'),
    legacy: p.bool('legacy'),
    arch: p.str('arch'),
  };
}
