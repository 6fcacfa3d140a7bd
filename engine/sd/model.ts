/**
 * A loaded Stable Diffusion checkpoint: its float32 weights (LDM keys) and the three networks as compiled
 * graphs, one per input shape, built on first use. Weights are fed to ONNX Runtime as graph inputs that wrap
 * these very buffers, so a LoRA merged into them in place takes effect on the next run with no rebuild.
 */
import { stat } from 'node:fs/promises';
import { UserError } from '../util/errors.ts';
import { topoSort, type Tensor } from '../graph/tensor.ts';
import { compile, type CompiledGraph, type SessionOptions } from '../runtime/session.ts';
import { clipTextEncoder, clipTextHidden, clipTextPrefix, eosOneHot } from '../models/clip-text.ts';
import { weightContext, type ModuleContext, type SharedNormStats } from '../models/layers.ts';
import { sizeConditionVector, timestepFeatures, unet } from '../models/unet.ts';
import { decoderMid, decoderUp, encoderDown, encoderMid, vaeDecoder, vaeEncoder } from '../models/vae.ts';
import { input } from '../graph/ops-core.ts';
import { f16ToF32 } from '../safetensors/float.ts';
import type { SdArch } from './arch.ts';
import { Checkpoint, type HalfWeight, type WeightMap } from './checkpoint.ts';
import { refuseUnusedWeights, unusedWeights } from './used-weights.ts';
import { declaredPrediction, parsePrediction, probeSaysV, V_PROBE, type Prediction, type PredictionDecision } from './prediction.ts';

/** Where SD1 (and diffusers-folder SD2) text encoders live; SD2 single files use `textPrefix(arch)`. */
export const TEXT_PREFIX = clipTextPrefix('hf');

/** Key prefix of this checkpoint's text encoder (its layout decides: OpenCLIP towers sit under `cond_stage_model.model.`). */
export function textPrefix(arch: SdArch): string {
  return arch.textEncoder.prefix ?? clipTextPrefix(arch.textEncoder.layout);
}

/** SDXL's per-image conditioning besides the text context: the pooled text embedding and the six size numbers. */
export interface AddedConditions {
  /** [batch, pooledDim] */
  pooled: Float32Array;
  /** [batch, 6]: original h, w, crop top, left, target h, w. */
  sizes: ArrayLike<number>;
}

export interface LoadOptions extends Omit<SessionOptions, 'weights' | 'alwaysFeed' | 'memArena'> {
  /**
   * ONNX Runtime's memory arena (default on): each session keeps the blocks of its largest run for the next.
   * 'unet': only the UNet's sessions keep one (they run at every step); the text encoder's and the VAE's
   * sessions, which run once per image, give their memory back after each run.
   */
  memArena?: boolean | 'unet';
  /** A separate VAE file replacing the checkpoint's own. */
  vae?: string;
  /** The text tower's head count, for a custom single file whose tower does not follow the 64-wide rule. */
  textEncoderHeads?: number;
  /**
   * How weights reach ONNX Runtime. 'inputs': fed at every run, so in-place LoRA merges apply at once.
   * 'baked': conv kernels, biases and norms are baked in as in-memory external data (ORT pre-packs them),
   * Linear weights and any weight a LoRA has touched stay fed; touching a baked weight rebuilds the sessions once.
   */
  weights?: 'inputs' | 'baked';
  /**
   * What the UNet predicts. 'auto' (default): the checkpoint's sidecar `<name>.yaml` (A1111's
   * `parameterization: "v"`) or a diffusers folder's scheduler config; else, for SD2, A1111's probe; else eps.
   */
  prediction?: Prediction | 'auto';
  /**
   * Key prefixes whose weights stay in the file's float16 where the file stores them so (nothing is rounded):
   * half the memory, and every graph widens them to float32 where it uses them. LoRA merges need float32
   * values: run them inside `withFloat32Weights`.
   */
  halfWeights?: readonly string[];
}

/** Each file's modification time and size, by path. */
async function fileIdentities(paths: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const p of paths) {
    const s = await stat(p);
    out.set(p, `${s.mtimeMs}:${s.size}`);
  }
  return out;
}

/** Per GroupNorm layer of the VAE (by checkpoint key), one image's statistics: mean and variance, [batch, groups, 1]. */
export type VaeNormStats = Map<string, { mean: Float32Array; variance: Float32Array }>;

export type VaePart = 'decoder-mid' | 'decoder-up' | 'encoder-down' | 'encoder-mid';

/** Textual-inversion vectors for a text encoder call: `embeds` [batch, tokens, width] used where `mask` [batch, tokens] is 1. */
export interface TokenVectors {
  embeds: Float32Array;
  mask: Uint8Array;
}

export class StableDiffusion {
  private readonly graphs = new Map<string, Promise<CompiledGraph>>();
  /** Shared-statistics VAE graphs: their GroupNorm layer keys in graph order. */
  private readonly normLayers = new Map<string, string[]>();
  /** Baked mode: the weights each cached graph baked in. */
  private readonly baked = new Map<string, Set<string>>();
  /** Baked mode: weights that must stay fed because something (a LoRA merge) changes them in place. */
  private readonly fed = new Set<string>();
  /** Sessions built so far; a rebuild after a newly touched baked weight counts here. */
  sessionBuilds = 0;
  /** What the UNet predicts (see `LoadOptions.prediction`); the pipeline samples accordingly. */
  prediction: Prediction = 'epsilon';
  /** Where `prediction` came from: 'option', the file that declared it, 'probe' or 'default'. */
  predictionSource = 'default';

  private constructor(
    readonly path: string,
    readonly arch: SdArch,
    readonly weights: WeightMap,
    /** Weights held as float16 bits (see `LoadOptions.halfWeights`); not in `weights` unless widened there. */
    private readonly halves: Map<string, HalfWeight>,
    /** Every weight's key in checkpoint order. */
    private readonly keyOrder: readonly string[],
    private readonly session: Omit<SessionOptions, 'memArena'> & { memArena?: boolean | 'unet' },
    readonly weightsMode: 'inputs' | 'baked',
    /** How the checkpoint was opened, and its files' identities then (see `reloadWeights`). */
    private readonly source: { opts: { vae?: string; textEncoderHeads?: number }; files: Map<string, string> },
  ) {}

  static async load(path: string, opts: LoadOptions = {}): Promise<StableDiffusion> {
    const ck = await Checkpoint.open(path, { vae: opts.vae, textEncoderHeads: opts.textEncoderHeads });
    try {
      refuseUnusedWeights(path, ck.arch, [...unusedWeights(ck.arch, ck.keys(), (k) => (ck.has(k) ? ck.shape(k) : undefined)), ...ck.unmapped]);
      const files = await fileIdentities(ck.filePaths());
      const prefixes = ['model.diffusion_model.', 'first_stage_model.', 'cond_stage_model.', 'conditioner.'];
      const { vae, textEncoderHeads, weights: mode, prediction, halfWeights = [], ...session } = opts;
      const halves = new Map<string, HalfWeight>();
      for (const k of ck.keys()) {
        if (!halfWeights.some((p) => k.startsWith(p))) continue;
        const h = await ck.readHalf(k);
        if (h) halves.set(k, h);
      }
      const weights = await ck.readAll(prefixes, (k) => !halves.has(k));
      const order = ck.keys().filter((k) => weights.has(k) || halves.has(k));
      const model = new StableDiffusion(path, ck.arch, weights, halves, order, session, mode ?? 'inputs', { opts: { vae, textEncoderHeads }, files });
      const d = await model.decidePrediction(prediction ?? 'auto', (await stat(path)).isDirectory());
      model.prediction = d.prediction;
      model.predictionSource = d.source;
      return model;
    } finally {
      await ck.close();
    }
  }

  /**
   * Reads these weights from the checkpoint again, in place: their values as loaded, bit for bit (a half
   * float widens to the same float32 every time). The LoRA merger restores base weights this way instead of
   * keeping copies. Refused when a file changed since loading, since its values are then another model's.
   */
  async reloadWeights(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    const ck = await Checkpoint.open(this.path, this.source.opts);
    try {
      const now = await fileIdentities(ck.filePaths());
      for (const [file, id] of this.source.files) {
        if (now.get(file) !== id) {
          throw new UserError(`${file} changed on disk since the checkpoint was loaded; load the checkpoint again to restore its base weights`);
        }
      }
      for (const k of keys) {
        const w = this.weights.get(k);
        if (!w) throw new Error(`reloadWeights: the model has no weight ${k}`);
        w.data.set((await ck.read(k)).data);
      }
    } finally {
      await ck.close();
    }
  }

  private async decidePrediction(option: Prediction | 'auto', isFolder: boolean): Promise<PredictionDecision> {
    if (option !== 'auto') return { prediction: parsePrediction(option, 'prediction option'), source: 'option' };
    const declared = await declaredPrediction(this.path, isFolder);
    if (declared) return declared;
    // A1111 probes SD2 txt2img UNets only; its SD2 inpainting config (9 input channels) is eps.
    if (this.arch.family === 'sd2' && this.arch.unet.inChannels === 4) {
      return { prediction: (await this.probeV()) ? 'v_prediction' : 'epsilon', source: 'probe' };
    }
    return { prediction: 'epsilon', source: 'default' };
  }

  /** A1111's v-parameterization probe (see `V_PROBE`): one tiny UNet call. */
  async probeV(): Promise<boolean> {
    const { value, timestep, size, tokens } = V_PROBE;
    const x = new Float32Array(this.arch.unet.inChannels * size * size).fill(value);
    const context = new Float32Array(tokens * this.arch.unet.contextDim).fill(value);
    return probeSaysV(await this.predict(x, [timestep], context, { batch: 1, height: size, width: size, tokens }));
  }

  /** A context over this model's weights, for building graphs (training adds an adapter hook). */
  context(extra: Partial<ModuleContext> = {}): ModuleContext {
    return weightContext(
      {
        shape: (k) => (this.weights.get(k) ?? this.halves.get(k))?.shape,
        data: (k) => this.weights.get(k)!.data,
        // A widened weight (see `withFloat32Weights`) is used as float32, so merges apply to it.
        half: (k) => (this.weights.has(k) ? undefined : this.halves.get(k)?.data),
      },
      extra,
    );
  }

  /** Every weight's shape, float32 or half held, in checkpoint order. */
  weightShapes(): { keys(): string[]; get(key: string): { shape: number[] } | undefined } {
    const get = (k: string) => this.weights.get(k) ?? this.halves.get(k);
    return { keys: () => this.keyOrder.filter((k) => get(k)), get };
  }

  /** Bytes of the weights as held. */
  weightBytes(): number {
    let n = 0;
    for (const w of this.weights.values()) n += w.data.byteLength;
    for (const [k, h] of this.halves) if (!this.weights.has(k)) n += h.data.byteLength;
    return n;
  }

  /** Whether some weights are held in half precision. */
  get holdsHalfWeights(): boolean {
    return this.halves.size > 0;
  }

  /**
   * Runs `fn` with the half-held weights widened to float32 in `weights` (what a LoRA merge patches), then lets
   * the float32 copies go. Graphs built meanwhile use the float32 copies; they are dropped afterwards.
   */
  async withFloat32Weights<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.halves.size) return fn();
    for (const [k, h] of this.halves) this.weights.set(k, { shape: h.shape, data: f16ToF32(h.data) });
    this.graphs.clear();
    try {
      return await fn();
    } finally {
      for (const k of this.halves.keys()) this.weights.delete(k);
      this.graphs.clear();
      this.baked.clear();
    }
  }

  private graph(key: string, build: () => Tensor[]): Promise<CompiledGraph> {
    let g = this.graphs.get(key);
    if (!g) {
      const outputs = build();
      const { memArena, ...rest } = this.session;
      let opts: SessionOptions = { ...rest, ...(memArena === undefined ? {} : { memArena: memArena === 'unet' ? key.startsWith('unet:') : memArena }) };
      if (this.weightsMode === 'baked') {
        const params = topoSort(outputs).filter((t) => t.op === 'param');
        const alwaysFeed = new Set(params.filter((t) => !this.bakes(t.name!, t.rank)));
        this.baked.set(key, new Set(params.filter((t) => !alwaysFeed.has(t)).map((t) => t.name!)));
        opts = { ...opts, weights: 'external', alwaysFeed };
      }
      this.sessionBuilds++;
      g = compile(outputs, opts);
      g.catch(() => {
        this.graphs.delete(key);
        this.baked.delete(key);
      });
      this.graphs.set(key, g);
    }
    return g;
  }

  /**
   * Baked mode bakes conv kernels together with every bias and norm (ORT's NCHWc conv rewrite needs a
   * constant bias too); Linear weights, the usual LoRA targets, stay fed, and so does anything a merge touched.
   */
  private bakes(key: string, rank: number): boolean {
    return this.weightsMode === 'baked' && rank !== 2 && !this.fed.has(key);
  }

  /**
   * Tells the model that these weights changed in place (a LoRA merge or restore). Fed weights need nothing;
   * a baked one becomes fed from now on, and the sessions that baked it are rebuilt on next use.
   */
  async weightsChanged(keys: Iterable<string>): Promise<void> {
    if (this.weightsMode === 'inputs') return;
    const newlyFed: string[] = [];
    for (const k of keys) {
      const w = this.weights.get(k);
      if (w && this.bakes(k, w.shape.length)) {
        this.fed.add(k);
        newlyFed.push(k);
      }
    }
    if (newlyFed.length === 0) return;
    // Only graphs that baked one of these weights are stale. Their rebuilt versions feed it, so their bytes
    // (and session cache keys) differ from the old ones, and the fed set only grows: nothing will ask for an
    // old session again, so its memory can go now. Graphs that did not bake them keep their sessions, whose
    // keys will be asked for again.
    for (const [key, names] of [...this.baked]) {
      if (!newlyFed.some((k) => names.has(k))) continue;
      const g = this.graphs.get(key);
      this.graphs.delete(key);
      this.baked.delete(key);
      await (await g?.catch(() => undefined))?.session.release();
    }
  }

  /**
   * Token ids [batch, tokens] → hidden states [batch, tokens, width] (A1111's clip skip applied). With
   * `vectors`, the positions marked in its mask take its vectors instead of the token embedding (textual inversion).
   */
  async encodeText(ids: BigInt64Array, batch: number, tokens: number, clipSkip = 1, vectors?: TokenVectors): Promise<Float32Array> {
    const ti = vectors !== undefined;
    const g = await this.graph(`text:${batch}:${tokens}:${clipSkip}${ti ? ':ti' : ''}`, () => [
      clipTextEncoder(this.context(), this.arch.textEncoder, { batch, tokens, clipSkip, prefix: textPrefix(this.arch), embedOverride: ti }).hidden,
    ]);
    const feeds: Record<string, BigInt64Array | Float32Array | Uint8Array> = { input_ids: ids };
    if (vectors) Object.assign(feeds, { embeds: vectors.embeds, embeds_mask: vectors.mask });
    const [out] = await g.run(feeds);
    return out!.data as Float32Array;
  }

  /**
   * SDXL's two text encoders on the same tokens (each with its own padding): the CLIP ViT-L hidden state
   * `hidden_states[-clipLFromEnd]` [batch, tokens, w1], the OpenCLIP penultimate one [batch, tokens, w2],
   * and the pooled OpenCLIP projection [batch, pooledDim]. No final LayerNorm on the hidden states.
   */
  async encodeTextSdxl(
    ids1: BigInt64Array,
    ids2: BigInt64Array,
    batch: number,
    tokens: number,
    clipLFromEnd = 2,
    vectors?: { te1: TokenVectors; te2: TokenVectors },
  ): Promise<{ hidden1: Float32Array; hidden2: Float32Array; pooled: Float32Array }> {
    const te2 = this.arch.textEncoder2;
    if (!te2) throw new Error('encodeTextSdxl: not an SDXL model');
    const ti = vectors !== undefined;
    const g1 = await this.graph(`sdxl-te1:${batch}:${tokens}:${clipLFromEnd}${ti ? ':ti' : ''}`, () => [
      clipTextHidden(this.context(), this.arch.textEncoder, { batch, tokens, fromEnd: clipLFromEnd, embedOverride: ti }).hidden,
    ]);
    const g2 = await this.graph(`sdxl-te2:${batch}:${tokens}${ti ? ':ti' : ''}`, () => {
      const r = clipTextHidden(this.context(), te2, { batch, tokens, fromEnd: 2, pooled: true, embedOverride: ti });
      return [r.hidden, r.pooled!];
    });
    const over = (v: TokenVectors | undefined): Record<string, Float32Array | Uint8Array> => (v ? { embeds: v.embeds, embeds_mask: v.mask } : {});
    const [hidden1] = await g1.run({ input_ids: ids1, ...over(vectors?.te1) });
    const [hidden2, pooled] = await g2.run({ input_ids: ids2, eos_onehot: eosOneHot(ids2, batch, tokens), ...over(vectors?.te2) });
    return { hidden1: hidden1!.data as Float32Array, hidden2: hidden2!.data as Float32Array, pooled: pooled!.data as Float32Array };
  }

  /**
   * One UNet evaluation: latents [batch, C, h, w], one timestep per row, context [batch, tokens, dim];
   * SDXL also takes each row's pooled text embedding and size numbers (`added`).
   */
  async predict(x: Float32Array, timesteps: ArrayLike<number>, context: Float32Array, dims: { batch: number; height: number; width: number; tokens: number; tiling?: boolean }, added?: AddedConditions): Promise<Float32Array> {
    const { batch, height, width, tokens, tiling } = dims;
    const adm = this.arch.unet.adm;
    if (adm && !added) throw new Error('predict: an SDXL UNet needs the pooled text embedding and size conditioning');
    const g = await this.graph(`unet:${batch}:${height}:${width}:${tokens}:${!!tiling}`, () => [
      unet(this.context({ tiling }), this.arch.unet, { batch, height, width, contextTokens: tokens }).out,
    ]);
    const feeds: Record<string, Float32Array> = { x, t_emb: timestepFeatures(timesteps, this.arch.unet.modelChannels), context };
    if (adm) feeds.y = sizeConditionVector(added!.pooled, added!.sizes, adm);
    const [out] = await g.run(feeds);
    return out!.data as Float32Array;
  }

  /** Latents (already divided by the scaling factor) → raw image [batch, 3, 8h, 8w]. */
  async decode(latent: Float32Array, dims: { batch: number; height: number; width: number; tiling?: boolean }): Promise<Float32Array> {
    const { batch, height, width, tiling } = dims;
    const g = await this.graph(`vae-dec:${batch}:${height}:${width}:${!!tiling}`, () => [
      vaeDecoder(this.context({ tiling }), this.arch.vae, { batch, height, width }).image,
    ]);
    const [out] = await g.run({ latent });
    return out!.data as Float32Array;
  }

  /**
   * One part of the VAE, for tiled decoding and encoding (see tiled-vae.ts). 'decoder-mid': latent → the
   * decoder's middle features; 'decoder-up': those → image; 'encoder-down': image → features at latent
   * resolution; 'encoder-mid': those → latent mean. `x` is [batch, channels, height, width]. The local parts
   * ('decoder-up', 'encoder-down') take `norms`: 'collect' returns every GroupNorm's statistics beside the
   * output; given statistics (from such a run) replace each GroupNorm's own.
   */
  async vaePart(part: VaePart, x: Float32Array, dims: { batch: number; height: number; width: number }, norms?: 'collect' | VaeNormStats): Promise<{ out: Float32Array; stats: VaeNormStats }> {
    const { batch, height, width } = dims;
    const vae = this.arch.vae;
    const mode = norms === undefined ? undefined : norms === 'collect' ? 'collect' : 'given';
    if (mode && (part === 'decoder-mid' || part === 'encoder-mid')) throw new Error(`vaePart: ${part} has no shared statistics`);
    const key = `vae-${part}-${mode ?? 'own'}:${batch}:${height}:${width}`;
    const channels = part === 'decoder-mid' ? vae.embedDim : part === 'encoder-down' ? 3 : vae.channels * vae.channelMult[vae.channelMult.length - 1]!;
    const g = await this.graph(key, () => {
      const shared: SharedNormStats | undefined = mode ? { mode, layers: new Map() } : undefined;
      const ctx = this.context(shared ? { normStats: shared } : {});
      const x = input('x', 'float32', [batch, channels, height, width]);
      const out =
        part === 'decoder-mid' ? decoderMid(ctx, vae, x) : part === 'decoder-up' ? decoderUp(ctx, vae, x) : part === 'encoder-down' ? encoderDown(ctx, vae, x) : encoderMid(ctx, vae, x);
      this.normLayers.set(key, [...(shared?.layers.keys() ?? [])]);
      return mode === 'collect' ? [out, ...[...shared!.layers.values()].flatMap((t) => [t.mean, t.variance])] : [out];
    });
    const layers = this.normLayers.get(key) ?? [];
    const feeds: Record<string, Float32Array> = { x };
    if (norms instanceof Map) {
      for (const k of layers) {
        const s = norms.get(k);
        if (!s) throw new Error(`vaePart: no statistics for ${k}`);
        feeds[`${k}.mean`] = s.mean;
        feeds[`${k}.var`] = s.variance;
      }
    }
    const [out, ...rest] = await g.run(feeds);
    const stats: VaeNormStats = norms instanceof Map ? norms : new Map();
    if (norms === 'collect') {
      layers.forEach((k, i) => {
        const mean = rest[2 * i]?.data;
        const variance = rest[2 * i + 1]?.data;
        if (!(mean instanceof Float32Array) || !(variance instanceof Float32Array)) throw new Error(`vaePart: statistics of ${k} missing`);
        stats.set(k, { mean, variance });
      });
    }
    return { out: out!.data as Float32Array, stats };
  }

  /** Image [batch, 3, H, W] in [-1, 1] → latent mean (not yet scaled). */
  async encode(image: Float32Array, dims: { batch: number; height: number; width: number; tiling?: boolean }): Promise<Float32Array> {
    const { batch, height, width, tiling } = dims;
    const g = await this.graph(`vae-enc:${batch}:${height}:${width}:${!!tiling}`, () => [
      vaeEncoder(this.context({ tiling }), this.arch.vae, { batch, height, width }).mean,
    ]);
    const [out] = await g.run({ image });
    return out!.data as Float32Array;
  }
}
