/**
 * A1111's refiner (1.6+, `sd_samplers_common.apply_refiner`): a second checkpoint takes over the same sampler
 * run part-way, on the same latents. Before each model call the run's progress is measured; once it reaches
 * `refiner_switch_at` the refiner's UNet (with its own conditioning: for SDXL's refiner one OpenCLIP tower and
 * aesthetic scores) answers every later call. Progress is the noise level's training timestep, (999 − t) / 1000
 * (A1111's default), or the share of sampler steps done with the option `refiner_switch_by_sample_steps`.
 * A refiner that predicts the other quantity (eps / v) is converted to the base's, so the sampler is untouched.
 */
import type { DiscreteSchedule } from '../sampling/training-schedule.ts';
import type { ModelCall } from '../sampling/types.ts';
import { UserError } from '../util/errors.ts';
import type { Conditioning } from './conditioning.ts';
import type { StableDiffusion } from './model.ts';
import type { Pipeline } from './pipeline.ts';
import type { Prediction } from './prediction.ts';
import { sizeConditionRows, type SizeConditionOptions } from './size-conditioning.ts';

export interface RefinerRun {
  /** The refiner checkpoint's pipeline. */
  pipeline: Pipeline;
  /** Progress (0..1) from which the refiner answers (A1111 `refiner_switch_at`); null: from the first call, as A1111. */
  switchAt: number | null;
  /** A1111 option `refiner_switch_by_sample_steps`. */
  bySteps?: boolean;
  /** With a hires fix: the pass(es) the refiner joins (A1111 option `hires_fix_refiner_pass`, default 'second pass'). */
  hiresPass?: 'first pass' | 'second pass' | 'both passes';
  /** Set once the refiner took over (the infotext names it only then). */
  switched?: boolean;
}

/** Refuses a refiner whose latents are not the base's: another channel count or VAE scale (SD 1.x ↔ SDXL). */
export function checkRefinerFits(base: StableDiffusion, refiner: StableDiffusion, name: string): void {
  const [b, r] = [base.arch, refiner.arch];
  if (b.unet.inChannels !== r.unet.inChannels || b.vae.scalingFactor !== r.vae.scalingFactor) {
    throw new UserError(
      `refiner_checkpoint ${name}: its latent space (${r.unet.inChannels} channels, VAE scale ${r.vae.scalingFactor}, ${r.family}) is not the base model's (${b.unet.inChannels} channels, VAE scale ${b.vae.scalingFactor}, ${b.family})`,
    );
  }
}

/** The training timestep whose sigma is nearest (A1111: argmin |sigmas − sigma|). */
function nearestTimestep(sigmas: Float32Array, sigma: number): number {
  let best = 0;
  for (let i = 1; i < sigmas.length; i++) if (Math.abs(sigmas[i]! - sigma) < Math.abs(sigmas[best]! - sigma)) best = i;
  return best;
}

/** Whether the run has progressed to `run.switchAt` at this call. */
export function refinerReached(run: Pick<RefinerRun, 'switchAt' | 'bySteps'>, call: ModelCall, sigmas: Float32Array): boolean {
  if (run.switchAt === null) return true;
  const done = run.bySteps ? call.index / call.total : (sigmas.length - 1 - nearestTimestep(sigmas, call.sigma)) / sigmas.length;
  return done >= run.switchAt;
}

/** eps ↔ v for the same x0, given the UNet input x_in = x / √(σ² + 1) (variance preserving). */
function convertPrediction(out: Float32Array, from: Prediction, to: Prediction, xIn: Float32Array, sigma: number): Float32Array {
  if (from === to) return out;
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const s = sigma * alpha;
  // eps = α·v + s·x_in; v = (eps − s·x_in) / α
  return from === 'v_prediction' ? out.map((v, i) => alpha * v + s * xIn[i]!) : out.map((e, i) => (e - s * xIn[i]!) / alpha);
}

export interface RefinerStageOptions extends SizeConditionOptions {
  cfgScale: number;
  clipSkip: number;
  sdxlClipLSkip?: boolean;
  tiling: boolean;
  batch: number;
  /** Image size of this pass. */
  width: number;
  height: number;
}

/** One sampling pass's refiner: decides the switch (once, then sticks) and answers the calls after it. */
export class RefinerStage {
  private active = false;
  private readonly conds = new Map<string, Conditioning>();

  constructor(
    private readonly run: RefinerRun,
    private readonly schedule: DiscreteSchedule,
    private readonly prediction: Prediction,
    private readonly o: RefinerStageOptions,
  ) {}

  takesOver(call: ModelCall): boolean {
    if (!this.active && refinerReached(this.run, call, this.schedule.sigmas)) {
      this.active = true;
      this.run.switched = true;
    }
    return this.active;
  }

  private async encode(prompt: string, negative: boolean): Promise<Conditioning> {
    const key = `${negative ? '-' : '+'}${prompt}`;
    let c = this.conds.get(key);
    if (!c) {
      c = await this.run.pipeline.conditioner.encode(prompt, this.o.clipSkip, { negative, sdxlClipLSkip: this.o.sdxlClipLSkip });
      this.conds.set(key, c);
    }
    return c;
  }

  /** The refiner's guided prediction at this call, in the base model's parameterisation. */
  async eps(unetInput: Float32Array, t: number, call: ModelCall, prompt: string, negativePrompt: string): Promise<Float32Array> {
    const p = this.run.pipeline;
    const { batch, width, height } = this.o;
    const adm = p.model.arch.unet.adm;
    const out = await p.guidedEps(unetInput, t, await this.encode(prompt, false), await this.encode(negativePrompt, true), this.o.cfgScale, {
      batch,
      height: height / 8,
      width: width / 8,
      tiling: this.o.tiling,
      sizes: sizeConditionRows(adm, batch, height, width, this.o, false),
      uncondSizes: sizeConditionRows(adm, batch, height, width, this.o, true),
    });
    return convertPrediction(out, p.model.prediction, this.prediction, unetInput, call.sigma);
  }
}
