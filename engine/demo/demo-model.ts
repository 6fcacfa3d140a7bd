/**
 * The bundled demo model: where it lives, its architecture, and the A1111 sidecar config written beside it.
 * It is an SD 1.x single-file checkpoint in every respect but size (64² images, an 8×8×4 latent), trained
 * from scratch on the toy world by `npm run make-demo-model`.
 */
import { access } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { listModelFiles } from '../sd/checkpoint.ts';
import type { SyntheticSdConfig } from '../sd/synthetic.ts';
import { UserError } from '../util/errors.ts';

/** The repository's `assets/demo` folder (found from this file, so it works from any working directory). */
export const DEMO_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../assets/demo');
export const DEMO_MODEL_NAME = 'toy-world-demo.safetensors';
export const DEMO_MODEL = join(DEMO_DIR, DEMO_MODEL_NAME);
/** The image size the demo model was trained at. */
export const DEMO_RESOLUTION = 64;

/** How `npm run make-demo-model` makes the demo model; every number of the run is here. */
export const DEMO_RECIPE = {
  seed: 1,
  /** Toy-world scenes the autoencoder trains on (the UNet's first ones). */
  scenes: 4000,
  autoencoder: {
    steps: 6000,
    /**
     * Crops per step, and their side (a quarter of the picture: the convolutions do not care). Whole pictures,
     * one per step for 800 steps, were tried: worse (backgrounds collapsed to two colours).
     */
    batch: 4,
    crop: 32,
    lr: 2e-3,
    warmup: 100,
    /** Gaussian noise on the latent before decoding: the decoder learns to forgive a sampler's small errors. */
    latentNoise: 0.1,
    /** Weight of mean(z²): keeps the latent's scale bounded (it is normalised afterwards). */
    latentPenalty: 1e-3,
    /**
     * Extra loss weight of a shape's pixels over the background's (see autoencoder-batches.ts): with plain
     * MSE, 800 steps gave the right shape colour in 35% of round trips (background 91%), with 4 in 57% (80%).
     */
    shapeWeight: 3,
    /** Weight of the L1 term beside the MSE. */
    l1: 0,
    /**
     * Striped scenes among its pictures. The autoencoder is the model's general image codec (SD's VAE encodes
     * any texture); only the UNet never sees stripes, which is what the demo LoRA teaches.
     */
    stripedScenes: 500,
  },
  unet: {
    /**
     * Scenes (latent, caption) the UNet trains on. Held-out accuracy fell when the same 4000 were seen 32 times
     * (8000 steps: 79% shape, 88% background; 4000 steps: 88% / 97%): it learns the pairings it saw.
     */
    scenes: 10000,
    steps: 5000,
    batch: 16,
    lr: 1e-3,
    /** The text encoder trains with the UNet (its token embeddings stay as drawn), at this rate. */
    textLr: 1e-3,
    warmup: 100,
    /** Empty captions, for classifier-free guidance. */
    uncondRate: 0.1,
    /** Captions in the plain form ("a red star on a blue background") instead of the scene's detailed one. */
    plainRate: 0.6,
    noiseOffset: 0.1,
    minSnrGamma: 5,
    /** sd-scripts' v_pred_like_loss: weighs the high noise levels, where the caption decides the colours. */
    vPredLikeLoss: 1,
  },
  /** Scenes outside the training set on which the caption-swap gap is logged. */
  gapScenes: 32,
  /** Held-out prompts make-demo-model generates at the end to print the colour accuracy. */
  evalPrompts: 40,
  /** The demo LoRA's data set. */
  stripesSeed: 7,
};

/** The demo LoRA's data set (written by make-demo-model, trained by configs/demo_lora.yaml). */
export const DEMO_STRIPES_DIR = join(DEMO_DIR, 'stripes');

/** The demo model's file when it is present (a checkout without `assets/` has none). */
export async function demoModelIfPresent(): Promise<string | undefined> {
  return access(DEMO_MODEL).then(() => DEMO_MODEL, () => undefined);
}

/**
 * The checkpoint to use when none is named: the first `.safetensors` in `ckptDir`, else the demo model
 * (`demo` true: the caller says so, and uses the demo's image size).
 */
export async function defaultCheckpoint(ckptDir: string): Promise<{ path: string; demo: boolean }> {
  const [first] = await listModelFiles(ckptDir);
  if (first) return { path: first, demo: false };
  const demo = await demoModelIfPresent();
  if (demo) return { path: demo, demo: true };
  throw new UserError(`no checkpoint given and none in ${ckptDir} (and the bundled demo model ${DEMO_MODEL} is missing)`);
}

/** The one line `serve`, `generate` and `train` print when they fall back to the demo model. */
export function demoNotice(ckptDir: string): string {
  return `No checkpoint in ${ckptDir}: using the bundled demo model ${DEMO_MODEL} (${DEMO_RESOLUTION}×${DEMO_RESOLUTION} toy shapes; add your own checkpoints there).`;
}

/**
 * Small everywhere the compute goes, real where compatibility needs it: CLIP's full 49408-token vocabulary
 * and 77 positions, one 64-wide text head (the CLIP family rule), SD 1.x's 8 UNet heads per level, the KL-f8
 * VAE's four levels (factor 8) with 32-group norms. No layer is narrower than 64 channels: with 32 groups,
 * a 32-channel GroupNorm normalises each channel alone and so erases its mean over the picture, which is
 * exactly where a flat background's colour lives. The 8×8 latent needs only one UNet level: its convolutions
 * and attention already see the whole of it.
 */
export const DEMO_CONFIG: SyntheticSdConfig = {
  unet: { modelChannels: 64, channelMult: [1], numResBlocks: 1, attentionLevels: [true], contextDim: 64, inChannels: 4 },
  text: { width: 64, layers: 2, intermediate: 256, vocab: 49408, positions: 77 },
  vae: { channels: 64, channelMult: [1, 1, 1, 1], numResBlocks: 1, zChannels: 4 },
};

/** A1111's `<checkpoint>.yaml` for the demo model, in the LDM v1-inference form. */
export function demoSidecarYaml(c: SyntheticSdConfig = DEMO_CONFIG, resolution = DEMO_RESOLUTION): string {
  const u = c.unet;
  const v = c.vae;
  const attn = u.attentionLevels.flatMap((on, l) => (on ? [2 ** l] : []));
  return `# Demo model of lora-scripts (toy world, ${resolution}x${resolution}); LDM v1-inference form.
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: "jpg"
    cond_stage_key: "txt"
    image_size: ${resolution / 8}
    channels: ${v.zChannels}
    cond_stage_trainable: false
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: 0.18215
    use_ema: False
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: ${resolution / 8}
        in_channels: ${u.inChannels}
        out_channels: ${u.inChannels}
        model_channels: ${u.modelChannels}
        attention_resolutions: [ ${attn.join(', ')} ]
        num_res_blocks: ${u.numResBlocks}
        channel_mult: [ ${u.channelMult.join(', ')} ]
        num_heads: 8
        use_spatial_transformer: True
        transformer_depth: 1
        context_dim: ${u.contextDim}
        use_checkpoint: True
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: ${v.zChannels}
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: ${v.zChannels}
          resolution: ${resolution}
          in_channels: 3
          out_ch: 3
          ch: ${v.channels}
          ch_mult: [ ${v.channelMult.join(', ')} ]
          num_res_blocks: ${v.numResBlocks}
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
`;
}
