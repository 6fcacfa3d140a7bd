/**
 * A loaded CLIP model: both towers as compiled graphs, its image preprocessing and its tokenizer.
 * `imageEmbeds` / `textEmbeds` give transformers' `get_image_features` / `get_text_features` (projected, not
 * normalised); captioning compares their normalised forms.
 *
 * Where a model is: a Hugging Face folder (config.json, model.safetensors, preprocessor_config.json, and the
 * tokenizer files vocab.json + merges.txt or tokenizer.json), or an OpenCLIP `.safetensors` file (alone or as
 * the only weights file of a folder), whose tokenizer is searched in `tokenizerDirs`, else CLIP's own
 * vocabulary shipped with lora-scripts.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import { clipTextEncoder, clipTextHidden, eosOneHot } from '../models/clip-text.ts';
import { clipVisionEncoder } from '../models/clip-vision.ts';
import { weightContext } from '../models/layers.ts';
import { compile, type CompiledGraph, type SessionOptions } from '../runtime/session.ts';
import { SafetensorsFile } from '../safetensors/index.ts';
import { BUNDLED_CLIP_TOKENIZER, hasTokenizerFiles, loadClipTokenizer, type ClipTokenizer } from '../text/tokenizer.ts';
import { UserError } from '../util/errors.ts';
import { hfClipArch, openClipArch, openClipPrefix, type ClipArch } from './arch.ts';
import { clipPixelValues, defaultClipPreprocess, readClipPreprocessConfig, type ClipPreprocessConfig } from './preprocess.ts';
import { decodeRgb } from '../image/decode-rgb.ts';

export interface ClipLoadOptions extends Omit<SessionOptions, 'weights'> {
  /** Tokenizer folder; default: the model folder, then `tokenizerDirs`, then the bundled CLIP vocabulary. */
  tokenizer?: string;
  /** Folders searched for a tokenizer when the model has none (OpenCLIP files ship none). */
  tokenizerDirs?: readonly string[];
  /** 'baked' lets ONNX Runtime pre-pack the weights (faster); 'inputs' feeds them at every run. Default 'baked'. */
  weights?: 'baked' | 'inputs';
  /** Images per vision run (default 1). */
  imageBatch?: number;
}

/** Texts per text-tower run; the last chunk is padded. */
const TEXT_BATCH = 16;

export class ClipModel {
  private vision?: Promise<CompiledGraph>;
  private text?: Promise<CompiledGraph>;

  private constructor(
    /** The folder or file it was loaded from. */
    readonly path: string,
    readonly arch: ClipArch,
    private readonly weights: Map<string, { shape: number[]; data: Float32Array }>,
    readonly preprocess: ClipPreprocessConfig,
    readonly tokenizer: ClipTokenizer,
    private readonly session: SessionOptions,
    readonly imageBatch: number,
  ) {}

  static async load(path: string, opts: ClipLoadOptions = {}): Promise<ClipModel> {
    const st = await stat(path).catch(() => null);
    if (!st) throw new UserError(`CLIP model not found: ${path} (a Hugging Face CLIP folder with config.json and model.safetensors, or an OpenCLIP .safetensors file)`);
    const folder = st.isDirectory() ? path : dirname(path);
    const hasConfig = st.isDirectory() && (await stat(join(path, 'config.json')).catch(() => null)) !== null;
    const file = st.isDirectory() ? await weightsFile(path, hasConfig) : path;
    if (extname(file).toLowerCase() !== '.safetensors') throw new UserError(`${file}: CLIP weights must be a .safetensors file`);
    const f = await SafetensorsFile.open(file);
    try {
      const shapeOf = (k: string) => (f.has(k) ? [...f.info(k).shape] : undefined);
      let arch: ClipArch;
      let preprocess: ClipPreprocessConfig;
      const ocPrefix = openClipPrefix(f.names());
      if (hasConfig) {
        const cfgPath = join(path, 'config.json');
        arch = hfClipArch(await readJson(cfgPath), shapeOf, file);
        const pre = join(path, 'preprocessor_config.json');
        preprocess = (await stat(pre).catch(() => null)) ? await readClipPreprocessConfig(pre, arch.vision.imageSize) : defaultClipPreprocess(arch.vision.imageSize);
      } else if (ocPrefix !== undefined) {
        const ocCfg = join(folder, 'open_clip_config.json');
        const cfg = (await stat(ocCfg).catch(() => null)) ? ((await readJson(ocCfg))['model_cfg'] as Record<string, unknown> | undefined) : undefined;
        arch = openClipArch(shapeOf, ocPrefix, file, cfg);
        preprocess = defaultClipPreprocess(arch.vision.imageSize);
      } else {
        throw new UserError(`${file}: not a CLIP model: no config.json beside it (Hugging Face layout) and no 'visual.conv1.weight' tensor (OpenCLIP layout)`);
      }
      const weights = new Map<string, { shape: number[]; data: Float32Array }>();
      for (const k of f.names()) weights.set(k, { shape: [...f.info(k).shape], data: await f.readFloat32(k) });
      const tokDir = opts.tokenizer ?? (await findTokenizer(folder, opts.tokenizerDirs ?? []));
      const tokenizer = await loadClipTokenizer(tokDir);
      const { tokenizer: _t, tokenizerDirs: _d, weights: mode, imageBatch, ...session } = opts;
      return new ClipModel(path, arch, weights, preprocess, tokenizer, { ...session, weights: (mode ?? 'baked') === 'baked' ? 'external' : 'inputs' }, imageBatch ?? 1);
    } finally {
      await f.close();
    }
  }

  /** exp(logit_scale), CLIP's temperature (100 for trained models); 100 when the file has none. */
  get logitScale(): number {
    const k = this.arch.logitScaleKey;
    return k ? Math.exp(this.weights.get(k)!.data[0]!) : 100;
  }

  private context() {
    return weightContext({ shape: (k) => this.weights.get(k)?.shape, data: (k) => this.weights.get(k)!.data });
  }

  /** The vision graph; `all` adds the hidden states and pooled output (for checks against transformers). */
  visionGraph(batch: number, all = false): Promise<CompiledGraph> {
    const o = clipVisionEncoder(this.context(), this.arch.vision, { batch });
    return compile(all ? [o.embeds, o.lastHidden, o.penultimate, o.pooled] : [o.embeds], this.session);
  }

  /** The text graph: inputs `input_ids` [B, T] and `eos_onehot` [B, 1, T]; output the text embeddings (`get_text_features`). */
  textGraph(batch: number): Promise<CompiledGraph> {
    const { pooled } = clipTextHidden(this.context(), this.arch.text, { batch, tokens: this.arch.text.maxPositions, fromEnd: 1, pooled: true });
    return compile([pooled!], this.session);
  }

  /** transformers' `last_hidden_state` of the text tower (final LayerNorm applied), from `input_ids` [B, T]. */
  textHiddenGraph(batch: number): Promise<CompiledGraph> {
    return compile([clipTextEncoder(this.context(), this.arch.text, { batch, tokens: this.arch.text.maxPositions }).hidden], this.session);
  }

  /** `pixel_values` [n, 3, S, S] → image embeddings [n, D]. */
  async imageEmbeds(pixels: Float32Array, n: number): Promise<Float32Array> {
    const S = this.arch.vision.imageSize;
    const per = 3 * S * S;
    if (pixels.length !== n * per) throw new UserError(`pixel_values: ${pixels.length} values for ${n} images of 3×${S}×${S}`);
    const B = this.imageBatch;
    this.vision ??= this.visionGraph(B);
    const g = await this.vision;
    const D = this.arch.projectionDim;
    const out = new Float32Array(n * D);
    for (let i = 0; i < n; i += B) {
      const chunk = new Float32Array(B * per);
      chunk.set(pixels.subarray(i * per, Math.min(n, i + B) * per));
      const [e] = await g.run({ pixel_values: { data: chunk, shape: [B, 3, S, S] } });
      out.set((e!.data as Float32Array).subarray(0, Math.min(B, n - i) * D), i * D);
    }
    return out;
  }

  /** An image file or encoded buffer → `pixel_values` [3, S, S] by the model's preprocessing. */
  async pixelValues(source: string | Buffer): Promise<Float32Array> {
    return clipPixelValues(await decodeRgb(source), this.preprocess).data;
  }

  /** Token ids as the text tower takes them: BOS, tokens, EOS, padded (or truncated) to its positions. */
  tokenize(text: string): number[] {
    return this.tokenizer.encodePadded(text, this.arch.text.maxPositions);
  }

  /** Text embeddings [n, D] for token id rows [n, T]. */
  async textEmbedsFromIds(ids: ArrayLike<number | bigint>, n: number): Promise<Float32Array> {
    const T = this.arch.text.maxPositions;
    this.text ??= this.textGraph(TEXT_BATCH);
    const g = await this.text;
    const D = this.arch.projectionDim;
    const out = new Float32Array(n * D);
    for (let i = 0; i < n; i += TEXT_BATCH) {
      const rows = Math.min(TEXT_BATCH, n - i);
      const chunk = new BigInt64Array(TEXT_BATCH * T);
      for (let j = 0; j < rows * T; j++) chunk[j] = BigInt(ids[i * T + j]!);
      const [e] = await g.run({ input_ids: { data: chunk, shape: [TEXT_BATCH, T] }, eos_onehot: { data: eosOneHot(chunk, TEXT_BATCH, T), shape: [TEXT_BATCH, 1, T] } });
      out.set((e!.data as Float32Array).subarray(0, rows * D), i * D);
    }
    return out;
  }

  async textEmbeds(texts: readonly string[]): Promise<Float32Array> {
    const T = this.arch.text.maxPositions;
    const ids = new Int32Array(texts.length * T);
    texts.forEach((t, i) => ids.set(this.tokenize(t), i * T));
    return this.textEmbedsFromIds(ids, texts.length);
  }
}

/** Rows of `a` [n, D] L2-normalised, in place. */
export function normalizeRows(a: Float32Array, D: number): Float32Array {
  for (let i = 0; i < a.length; i += D) {
    let s = 0;
    for (let j = 0; j < D; j++) s += a[i + j]! * a[i + j]!;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < D; j++) a[i + j]! *= inv;
  }
  return a;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('expected a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

/** The weights file of a model folder: model.safetensors (Hugging Face) or the folder's only .safetensors (OpenCLIP). */
async function weightsFile(dir: string, hf: boolean): Promise<string> {
  const names = (await readdir(dir)).filter((n) => n.toLowerCase().endsWith('.safetensors'));
  if (names.includes('model.safetensors')) return join(dir, 'model.safetensors');
  if (!hf && names.length === 1) return join(dir, names[0]!);
  if (hf) throw new UserError(`CLIP folder ${dir} has config.json but no model.safetensors (only .safetensors weights are read; convert pytorch_model.bin first)`);
  throw new UserError(
    names.length
      ? `CLIP folder ${dir} has several .safetensors files (${names.join(', ')}) and no config.json: keep one OpenCLIP file, or add the Hugging Face config.json`
      : `CLIP folder ${dir} holds no model: expected config.json + model.safetensors (Hugging Face) or one OpenCLIP .safetensors file`,
  );
}

/** The model's own tokenizer files, else the first fallback folder with some, else CLIP's vocabulary shipped with lora-scripts (every CLIP and OpenCLIP model uses it). */
async function findTokenizer(folder: string, fallbacks: readonly string[]): Promise<string> {
  for (const d of [folder, join(folder, 'tokenizer'), ...fallbacks]) if (await hasTokenizerFiles(d)) return d;
  return BUNDLED_CLIP_TOKENIZER;
}
