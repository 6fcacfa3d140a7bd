/**
 * A sidecar config applied to the architecture inferred from tensor shapes. What shapes show (channels,
 * levels, depths, context width) must agree with the file — A1111 would fail a strict load otherwise, and a
 * config for another model gives wrong pictures silently; what shapes cannot show (heads, VAE scale) comes
 * from the file.
 */
import { UserError } from '../util/errors.ts';
import type { SdArch } from './arch.ts';
import type { SidecarConfig } from './sidecar.ts';

export function applySidecar(arch: SdArch, cfg: SidecarConfig): SdArch {
  const unetWhere = cfg.form === 'sgm' ? 'model.params.network_config.params' : 'model.params.unet_config.params';
  const check = (field: string, declared: unknown, actual: unknown) => {
    if (declared === undefined || JSON.stringify(declared) === JSON.stringify(actual)) return;
    throw new UserError(
      `${cfg.path}: ${field} is ${JSON.stringify(declared)} but the checkpoint's tensors say ${JSON.stringify(actual)}; ` +
        'this config belongs to another model (remove it, or fix the value)',
    );
  };
  const u = cfg.unet;
  const a = arch.unet;
  check(`${unetWhere}.in_channels`, u.inChannels, a.inChannels);
  check(`${unetWhere}.out_channels`, u.outChannels, a.outChannels);
  check(`${unetWhere}.model_channels`, u.modelChannels, a.modelChannels);
  check(`${unetWhere}.channel_mult`, u.channelMult, a.channelMult);
  check(`${unetWhere}.num_res_blocks`, u.numResBlocks, a.numResBlocks);
  check(`${unetWhere}.context_dim`, u.contextDim, a.contextDim);
  check(`${unetWhere}.use_linear_in_transformer`, u.useLinearInTransformer, u.useLinearInTransformer === undefined ? undefined : a.useLinearProjection);
  if (u.attentionResolutions) {
    // Level i works at downsampling factor 2^i and has transformers iff that factor is listed.
    check(`${unetWhere}.attention_resolutions`, u.attentionResolutions.map(Number).sort((x, y) => x - y),
      a.attentionLevels.flatMap((on, i) => (on ? [2 ** i] : [])));
  }
  if (u.transformerDepth) {
    const declared = u.transformerDepth.map((d, i) => (a.attentionLevels[i] ? d : 0));
    check(`${unetWhere}.transformer_depth`, declared.slice(0, a.attentionLevels.length), a.transformerDepth);
  }
  if (u.heads) {
    arch.unet.heads = 'headDim' in u.heads ? { headDim: u.heads.headDim } : { numHeads: a.channelMult.map(() => (u.heads as { numHeads: number }).numHeads) };
  }
  const v = cfg.vae;
  const vaeWhere = 'model.params.first_stage_config.params';
  check(`${vaeWhere}.embed_dim`, v.embedDim, arch.vae.embedDim);
  check(`${vaeWhere}.ddconfig.z_channels`, v.zChannels, arch.vae.zChannels);
  check(`${vaeWhere}.ddconfig.ch`, v.ch, arch.vae.channels);
  check(`${vaeWhere}.ddconfig.ch_mult`, v.chMult, arch.vae.channelMult);
  check(`${vaeWhere}.ddconfig.num_res_blocks`, v.numResBlocks, arch.vae.numResBlocks);
  if (cfg.scaleFactor !== undefined) arch.vae.scalingFactor = cfg.scaleFactor;
  return arch;
}
