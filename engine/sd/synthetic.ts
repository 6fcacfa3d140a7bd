/**
 * Random-weight SD checkpoints in the real LDM single-file layout, for benchmarks and tests: nothing can be
 * downloaded here, yet the loading, merging and running code must be exercised at full SD 1.5 size.
 * Initialisation follows the project fixtures' recipe (N(0, 1/fan_in) weights, norms near 1, small biases)
 * so activations stay O(1) through every layer, like a trained model's.
 */
import { writeSafetensorsStreaming, type DType } from '../safetensors/index.ts';
import { f32ToF16 } from '../safetensors/float.ts';

export interface SyntheticSdConfig {
  unet: {
    modelChannels: number;
    channelMult: number[];
    numResBlocks: number;
    attentionLevels: boolean[];
    contextDim: number;
    inChannels: number;
    /** SD2: Linear proj_in/proj_out ([C, C]) instead of 1×1 convs. */
    linearProjection?: boolean;
    /** Transformer blocks per level where `attentionLevels` says so (default 1), and in the middle block (default: the last level's, else 1). */
    transformerDepth?: number[];
    middleDepth?: number;
    /** SDXL: `label_emb`'s input width (pooled text + Fourier size features). */
    admInChannels?: number;
  };
  /** `layout` 'openclip' writes SD2's `cond_stage_model.model.*` tower; default 'hf' (SD1's CLIPTextModel names). */
  text: { width: number; layers: number; intermediate: number; vocab: number; positions: number; layout?: 'hf' | 'openclip' };
  vae: { channels: number; channelMult: number[]; numResBlocks: number; zChannels: number };
}

/** SD 1.5's shapes (v1-inference.yaml, CLIP ViT-L/14 text tower, the KL-f8 VAE). */
export const SD15: SyntheticSdConfig = {
  unet: { modelChannels: 320, channelMult: [1, 2, 4, 4], numResBlocks: 2, attentionLevels: [true, true, true, false], contextDim: 768, inChannels: 4 },
  text: { width: 768, layers: 12, intermediate: 3072, vocab: 49408, positions: 77 },
  vae: { channels: 128, channelMult: [1, 2, 4, 4], numResBlocks: 2, zChannels: 4 },
};

/**
 * SD 2.x's shapes (v2-inference-v.yaml): OpenCLIP ViT-H/14 text tower, 1024 wide with all 24 resblocks
 * stored as in the released checkpoints (23 run: the config takes the penultimate layer), and a UNet with
 * Linear projections, 64-wide heads and 1024-wide context. The VAE is SD1's.
 */
export const SD2: SyntheticSdConfig = {
  unet: { modelChannels: 320, channelMult: [1, 2, 4, 4], numResBlocks: 2, attentionLevels: [true, true, true, false], contextDim: 1024, inChannels: 4, linearProjection: true },
  text: { width: 1024, layers: 24, intermediate: 4096, vocab: 49408, positions: 77, layout: 'openclip' },
  vae: { channels: 128, channelMult: [1, 2, 4, 4], numResBlocks: 2, zChannels: 4 },
};

/**
 * A tiny SD2-shaped configuration for tests: same layouts as `SD2` (OpenCLIP tower, Linear projections),
 * with widths just large enough for SD2's fixed 64-wide UNet heads and 32-group norms.
 * `vocab` must cover the tokenizer the test uses.
 */
export function tinySd2Config(opts: { vocab: number; textWidth?: number; textLayers?: number; positions?: number }): SyntheticSdConfig {
  const width = opts.textWidth ?? 128;
  return {
    unet: { modelChannels: 64, channelMult: [1, 2], numResBlocks: 1, attentionLevels: [true, true], contextDim: width, inChannels: 4, linearProjection: true },
    text: { width, layers: opts.textLayers ?? 3, intermediate: 4 * width, vocab: opts.vocab, positions: opts.positions ?? 77, layout: 'openclip' },
    vae: { channels: 32, channelMult: [1, 2], numResBlocks: 1, zChannels: 4 },
  };
}

type Shapes = Map<string, number[]>;

function linear(s: Shapes, key: string, out: number, inp: number, bias = true): void {
  s.set(`${key}.weight`, [out, inp]);
  if (bias) s.set(`${key}.bias`, [out]);
}
function conv(s: Shapes, key: string, out: number, inp: number, k: number): void {
  s.set(`${key}.weight`, [out, inp, k, k]);
  s.set(`${key}.bias`, [out]);
}
function norm(s: Shapes, key: string, c: number): void {
  s.set(`${key}.weight`, [c]);
  s.set(`${key}.bias`, [c]);
}

function unetShapes(s: Shapes, c: SyntheticSdConfig['unet']): void {
  const P = 'model.diffusion_model.';
  const C = c.modelChannels;
  const E = 4 * C;
  const ctx = c.contextDim;
  linear(s, `${P}time_embed.0`, E, C);
  linear(s, `${P}time_embed.2`, E, E);
  if (c.admInChannels) {
    linear(s, `${P}label_emb.0.0`, E, c.admInChannels);
    linear(s, `${P}label_emb.0.2`, E, E);
  }
  const depthAt = (l: number) => c.transformerDepth?.[l] ?? 1;
  const res = (key: string, inp: number, out: number) => {
    norm(s, `${key}.in_layers.0`, inp);
    conv(s, `${key}.in_layers.2`, out, inp, 3);
    linear(s, `${key}.emb_layers.1`, out, E);
    norm(s, `${key}.out_layers.0`, out);
    conv(s, `${key}.out_layers.3`, out, out, 3);
    if (inp !== out) conv(s, `${key}.skip_connection`, out, inp, 1);
  };
  const attn = (key: string, ch: number, depth: number) => {
    norm(s, `${key}.norm`, ch);
    if (c.linearProjection) linear(s, `${key}.proj_in`, ch, ch);
    else conv(s, `${key}.proj_in`, ch, ch, 1);
    for (let d = 0; d < depth; d++) {
      const T = `${key}.transformer_blocks.${d}`;
      for (const [a, kv] of [['attn1', ch], ['attn2', ctx]] as const) {
        linear(s, `${T}.${a}.to_q`, ch, ch, false);
        linear(s, `${T}.${a}.to_k`, ch, kv, false);
        linear(s, `${T}.${a}.to_v`, ch, kv, false);
        linear(s, `${T}.${a}.to_out.0`, ch, ch);
      }
      linear(s, `${T}.ff.net.0.proj`, 8 * ch, ch);
      linear(s, `${T}.ff.net.2`, ch, 4 * ch);
      for (const n of ['norm1', 'norm2', 'norm3']) norm(s, `${T}.${n}`, ch);
    }
    if (c.linearProjection) linear(s, `${key}.proj_out`, ch, ch);
    else conv(s, `${key}.proj_out`, ch, ch, 1);
  };
  conv(s, `${P}input_blocks.0.0`, C, c.inChannels, 3);
  const skipCh: number[] = [C];
  let ch = C;
  let n = 1;
  const L = c.channelMult.length;
  for (let l = 0; l < L; l++) {
    for (let r = 0; r < c.numResBlocks; r++, n++) {
      const out = C * c.channelMult[l]!;
      res(`${P}input_blocks.${n}.0`, ch, out);
      ch = out;
      if (c.attentionLevels[l]) attn(`${P}input_blocks.${n}.1`, ch, depthAt(l));
      skipCh.push(ch);
    }
    if (l < L - 1) {
      conv(s, `${P}input_blocks.${n}.0.op`, ch, ch, 3);
      skipCh.push(ch);
      n++;
    }
  }
  res(`${P}middle_block.0`, ch, ch);
  attn(`${P}middle_block.1`, ch, c.middleDepth ?? (c.transformerDepth?.at(-1) || 1));
  res(`${P}middle_block.2`, ch, ch);
  n = 0;
  for (let l = L - 1; l >= 0; l--) {
    for (let r = 0; r <= c.numResBlocks; r++, n++) {
      const out = C * c.channelMult[l]!;
      res(`${P}output_blocks.${n}.0`, ch + skipCh.pop()!, out);
      ch = out;
      let sub = 1;
      if (c.attentionLevels[l]) attn(`${P}output_blocks.${n}.${sub++}`, ch, depthAt(l));
      if (l > 0 && r === c.numResBlocks) conv(s, `${P}output_blocks.${n}.${sub}.conv`, ch, ch, 3);
    }
  }
  norm(s, `${P}out.0`, ch);
  conv(s, `${P}out.2`, c.inChannels, ch, 3);
}

/** OpenCLIP's text tower as SD2 single files store it (open_clip `CLIP` minus `visual`). */
function openClipTextShapes(s: Shapes, c: SyntheticSdConfig['text']): void {
  const P = 'cond_stage_model.model.';
  s.set(`${P}positional_embedding`, [c.positions, c.width]);
  s.set(`${P}text_projection`, [c.width, c.width]);
  s.set(`${P}logit_scale`, []);
  s.set(`${P}token_embedding.weight`, [c.vocab, c.width]);
  for (let i = 0; i < c.layers; i++) {
    const L = `${P}transformer.resblocks.${i}.`;
    norm(s, `${L}ln_1`, c.width);
    s.set(`${L}attn.in_proj_weight`, [3 * c.width, c.width]);
    s.set(`${L}attn.in_proj_bias`, [3 * c.width]);
    linear(s, `${L}attn.out_proj`, c.width, c.width);
    norm(s, `${L}ln_2`, c.width);
    linear(s, `${L}mlp.c_fc`, c.intermediate, c.width);
    linear(s, `${L}mlp.c_proj`, c.width, c.intermediate);
  }
  norm(s, `${P}ln_final`, c.width);
}

function textShapes(s: Shapes, c: SyntheticSdConfig['text']): void {
  if (c.layout === 'openclip') return openClipTextShapes(s, c);
  const P = 'cond_stage_model.transformer.text_model.';
  s.set(`${P}embeddings.token_embedding.weight`, [c.vocab, c.width]);
  s.set(`${P}embeddings.position_embedding.weight`, [c.positions, c.width]);
  for (let i = 0; i < c.layers; i++) {
    const L = `${P}encoder.layers.${i}.`;
    norm(s, `${L}layer_norm1`, c.width);
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) linear(s, `${L}self_attn.${p}`, c.width, c.width);
    norm(s, `${L}layer_norm2`, c.width);
    linear(s, `${L}mlp.fc1`, c.intermediate, c.width);
    linear(s, `${L}mlp.fc2`, c.width, c.intermediate);
  }
  norm(s, `${P}final_layer_norm`, c.width);
}

function vaeShapes(s: Shapes, c: SyntheticSdConfig['vae']): void {
  const P = 'first_stage_model.';
  const chs = c.channelMult.map((m) => m * c.channels);
  const L = chs.length;
  const res = (key: string, inp: number, out: number) => {
    norm(s, `${key}.norm1`, inp);
    conv(s, `${key}.conv1`, out, inp, 3);
    norm(s, `${key}.norm2`, out);
    conv(s, `${key}.conv2`, out, out, 3);
    if (inp !== out) conv(s, `${key}.nin_shortcut`, out, inp, 1);
  };
  const mid = (key: string, ch: number) => {
    res(`${key}.block_1`, ch, ch);
    norm(s, `${key}.attn_1.norm`, ch);
    for (const p of ['q', 'k', 'v', 'proj_out']) conv(s, `${key}.attn_1.${p}`, ch, ch, 1);
    res(`${key}.block_2`, ch, ch);
  };
  conv(s, `${P}encoder.conv_in`, c.channels, 3, 3);
  let ch = c.channels;
  for (let l = 0; l < L; l++) {
    for (let r = 0; r < c.numResBlocks; r++) {
      res(`${P}encoder.down.${l}.block.${r}`, ch, chs[l]!);
      ch = chs[l]!;
    }
    if (l < L - 1) conv(s, `${P}encoder.down.${l}.downsample.conv`, ch, ch, 3);
  }
  mid(`${P}encoder.mid`, ch);
  norm(s, `${P}encoder.norm_out`, ch);
  conv(s, `${P}encoder.conv_out`, 2 * c.zChannels, ch, 3);
  conv(s, `${P}quant_conv`, 2 * c.zChannels, 2 * c.zChannels, 1);
  conv(s, `${P}post_quant_conv`, c.zChannels, c.zChannels, 1);
  ch = chs[L - 1]!;
  conv(s, `${P}decoder.conv_in`, ch, c.zChannels, 3);
  mid(`${P}decoder.mid`, ch);
  for (let l = L - 1; l >= 0; l--) {
    for (let r = 0; r <= c.numResBlocks; r++) {
      res(`${P}decoder.up.${l}.block.${r}`, ch, chs[l]!);
      ch = chs[l]!;
    }
    if (l > 0) conv(s, `${P}decoder.up.${l}.upsample.conv`, ch, ch, 3);
  }
  norm(s, `${P}decoder.norm_out`, ch);
  conv(s, `${P}decoder.conv_out`, 3, ch, 3);
}

/**
 * SDXL base's UNet (sd_xl_base.yaml): three levels, no attention at the first, transformer depth 2 and 10,
 * Linear projections, context 768 + 1280, `label_emb` over the pooled embedding (1280) + 6 × 256 size features.
 */
export const SDXL_UNET: SyntheticSdConfig['unet'] = {
  modelChannels: 320, channelMult: [1, 2, 4], numResBlocks: 2, attentionLevels: [false, true, true], transformerDepth: [0, 2, 10],
  contextDim: 2048, inChannels: 4, linearProjection: true, admInChannels: 2816,
};

/** The UNet's tensor names and shapes alone (LDM / SGM `model.diffusion_model.*`). */
export function syntheticUnetShapes(unet: SyntheticSdConfig['unet']): Map<string, number[]> {
  const s: Shapes = new Map();
  unetShapes(s, unet);
  return s;
}

/** Every tensor name and shape of a checkpoint with this configuration, in LDM layout. */
export function syntheticShapes(cfg: SyntheticSdConfig): Map<string, number[]> {
  const s: Shapes = new Map();
  unetShapes(s, cfg.unet);
  textShapes(s, cfg.text);
  vaeShapes(s, cfg.vae);
  return s;
}

/** A small deterministic PRNG (xorshift128+ into Box–Muller); quality is ample for random weights. */
function normals(seed: number): (out: Float32Array, std: number, mean: number) => void {
  let s0 = (seed ^ 0x9e3779b9) >>> 0 || 1;
  let s1 = (seed * 2654435761) >>> 0 || 2;
  const u32 = () => {
    let x = s0;
    const y = s1;
    s0 = y;
    x ^= x << 23;
    x ^= x >>> 17;
    x ^= y ^ (y >>> 26);
    s1 = x >>> 0;
    return (s0 + s1) >>> 0;
  };
  return (out, std, mean) => {
    for (let i = 0; i < out.length; i += 2) {
      const u = (u32() + 1) / 4294967297;
      const v = u32() / 4294967296;
      const r = Math.sqrt(-2 * Math.log(u)) * std;
      out[i] = mean + r * Math.cos(2 * Math.PI * v);
      if (i + 1 < out.length) out[i + 1] = mean + r * Math.sin(2 * Math.PI * v);
    }
  };
}

/** The fixture recipe for one tensor: weights N(0, 1/fan_in), norm scales 1 + N(0, 0.1²), biases N(0, 0.1²). */
function initRule(key: string, shape: number[]): { std: number; mean: number } | { constant: number } {
  const isNorm = /norm|layer_norm|in_layers\.0|out_layers\.0|\.out\.0\.|\.ln_/.test(key) && shape.length === 1;
  if (key.endsWith('.bias') || key.endsWith('_bias')) return { std: 0.1, mean: 0 };
  if (isNorm) return { std: 0.1, mean: 1 };
  // OpenCLIP's temperature, stored as log(1 / 0.07); unused for SD.
  if (key.endsWith('logit_scale')) return { constant: Math.log(1 / 0.07) };
  if (key.includes('embedding')) return { std: 1, mean: 0 };
  return { std: 1 / Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1)), mean: 0 };
}

function keySeed(key: string, seed: number): number {
  let h = seed;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619) >>> 0;
  return h;
}

/**
 * n uniform values in [-scale/2, scale/2) from a seed (xorshift32): for LoRA and weight tensors whose values
 * only need to be non-trivial (benchmarks, merge tests), far cheaper than `randomTensor`'s normals.
 */
export function uniformFill(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    a[i] = ((x >>> 0) / 4294967296 - 0.5) * scale;
  }
  return a;
}

/** Values for one tensor by the fixture recipe (`initRule`), each drawn independently. */
export function randomTensor(key: string, shape: number[], seed: number): Float32Array {
  const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
  const rule = initRule(key, shape);
  if ('constant' in rule) return out.fill(rule.constant);
  normals(keySeed(key, seed))(out, rule.std, rule.mean);
  return out;
}

/** A prime count of standard normals that `quickRandomTensor` reads from, cyclically. */
const POOL_SIZE = 1_048_573;
let pool: Float32Array | undefined;

/**
 * The same recipe as `randomTensor`, many times faster: values come from one shared pool of normals read
 * cyclically from a per-tensor offset. Right in distribution, not independent: for benchmarks of
 * multi-billion-parameter shapes (SDXL), where only the sizes and the scale of activations matter.
 */
export function quickRandomTensor(key: string, shape: number[], seed: number): Float32Array {
  const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
  const rule = initRule(key, shape);
  if ('constant' in rule) return out.fill(rule.constant);
  if (!pool) normals(seed)((pool = new Float32Array(POOL_SIZE)), 1, 0);
  const p = pool;
  let j = keySeed(key, seed) % POOL_SIZE;
  for (let i = 0; i < out.length; i++) {
    out[i] = rule.mean + rule.std * p[j]!;
    if (++j === POOL_SIZE) j = 0;
  }
  return out;
}

/** Writes a random checkpoint tensor by tensor (never all in memory), atomically. */
export async function writeSyntheticCheckpoint(path: string, cfg: SyntheticSdConfig, opts: { seed?: number; dtype?: Extract<DType, 'F32' | 'F16'> } = {}): Promise<void> {
  const shapes = syntheticShapes(cfg);
  const dtype = opts.dtype ?? 'F16';
  const seed = opts.seed ?? 1;
  const entries = [...shapes].map(([name, shape]) => ({ name, dtype, shape }));
  await writeSafetensorsStreaming(
    path,
    entries,
    async (name) => {
      const v = randomTensor(name, shapes.get(name)!, seed);
      return dtype === 'F16' ? f32ToF16(v) : v;
    },
    { format: 'pt', 'lora-scripts.synthetic': 'random weights for benchmarks and tests' },
  );
}
