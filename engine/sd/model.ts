/**
 * A loaded Stable Diffusion checkpoint: its float32 weights (LDM keys) and the three networks as compiled
 * graphs, one per input shape, built on first use. Weights are fed to ONNX Runtime as graph inputs that wrap
 * these very buffers, so a LoRA merged into them in place takes effect on the next run with no rebuild.
 */
import type { Tensor } from '../graph/tensor.ts';
import { compile, type CompiledGraph, type SessionOptions } from '../runtime/session.ts';
import { clipTextEncoder } from '../models/clip-text.ts';
import { weightContext, type ModuleContext } from '../models/layers.ts';
import { timestepFeatures, unet } from '../models/unet.ts';
import { vaeDecoder, vaeEncoder } from '../models/vae.ts';
import type { SdArch } from './arch.ts';
import { Checkpoint, type WeightMap } from './checkpoint.ts';

export const TEXT_PREFIX = 'cond_stage_model.transformer.text_model.';

export interface LoadOptions extends SessionOptions {
  /** A separate VAE file replacing the checkpoint's own. */
  vae?: string;
}

export class StableDiffusion {
  private readonly graphs = new Map<string, Promise<CompiledGraph>>();

  private constructor(
    readonly path: string,
    readonly arch: SdArch,
    readonly weights: WeightMap,
    private readonly session: SessionOptions,
  ) {}

  static async load(path: string, opts: LoadOptions = {}): Promise<StableDiffusion> {
    const ck = await Checkpoint.open(path, { vae: opts.vae });
    try {
      const weights = await ck.readAll(['model.diffusion_model.', 'first_stage_model.', 'cond_stage_model.']);
      const { vae: _vae, ...session } = opts;
      return new StableDiffusion(path, ck.arch, weights, session);
    } finally {
      await ck.close();
    }
  }

  /** A context over this model's weights, for building graphs (training adds an adapter hook). */
  context(extra: Partial<ModuleContext> = {}): ModuleContext {
    return weightContext(
      { shape: (k) => this.weights.get(k)?.shape, data: (k) => this.weights.get(k)!.data },
      extra,
    );
  }

  private graph(key: string, build: () => Tensor[]): Promise<CompiledGraph> {
    let g = this.graphs.get(key);
    if (!g) {
      g = compile(build(), this.session);
      g.catch(() => this.graphs.delete(key));
      this.graphs.set(key, g);
    }
    return g;
  }

  /** Token ids [batch, tokens] → hidden states [batch, tokens, width] (A1111's clip skip applied). */
  async encodeText(ids: BigInt64Array, batch: number, tokens: number, clipSkip = 1): Promise<Float32Array> {
    const g = await this.graph(`text:${batch}:${tokens}:${clipSkip}`, () => [
      clipTextEncoder(this.context(), this.arch.textEncoder, { batch, tokens, clipSkip, prefix: TEXT_PREFIX }).hidden,
    ]);
    const [out] = await g.run({ input_ids: ids });
    return out!.data as Float32Array;
  }

  /** One UNet evaluation: latents [batch, C, h, w], one timestep per row, context [batch, tokens, dim]. */
  async predict(x: Float32Array, timesteps: ArrayLike<number>, context: Float32Array, dims: { batch: number; height: number; width: number; tokens: number; tiling?: boolean }): Promise<Float32Array> {
    const { batch, height, width, tokens, tiling } = dims;
    const g = await this.graph(`unet:${batch}:${height}:${width}:${tokens}:${!!tiling}`, () => [
      unet(this.context({ tiling }), this.arch.unet, { batch, height, width, contextTokens: tokens }).out,
    ]);
    const [out] = await g.run({ x, t_emb: timestepFeatures(timesteps, this.arch.unet.modelChannels), context });
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
