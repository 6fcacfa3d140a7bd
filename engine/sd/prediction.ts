/**
 * What a checkpoint's UNet predicts: eps (SD 1.x, SD 2.x 512-base) or v (SD 2.x 768-v). Tensor shapes do not
 * say; A1111 reads it from a config YAML beside the checkpoint (`model.params.parameterization: "v"`) and,
 * for SD2 without one, from a test forward pass. Diffusers folders state it in their scheduler config.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../util/errors.ts';
import { readSidecar, sidecarYamlPath } from './sidecar.ts';

export type Prediction = 'epsilon' | 'v_prediction';

export interface PredictionDecision {
  prediction: Prediction;
  /** Where it came from, for logs and reports: 'option', a file path, 'probe' or 'default'. */
  source: string;
}

/** 'epsilon' / 'eps' and 'v_prediction' / 'v' (the LDM and diffusers spellings). */
export function parsePrediction(value: unknown, where: string): Prediction {
  if (value === 'epsilon' || value === 'eps') return 'epsilon';
  if (value === 'v_prediction' || value === 'v') return 'v_prediction';
  throw new UserError(`${where}: prediction type must be "epsilon" (eps) or "v_prediction" (v), got ${JSON.stringify(value)}`);
}

const isFile = (p: string) => stat(p).then((s) => s.isFile(), () => false);

export { sidecarYamlPath };

async function fromSchedulerConfig(path: string): Promise<PredictionDecision | undefined> {
  let cfg: { prediction_type?: unknown };
  try {
    cfg = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (cfg?.prediction_type === undefined) return undefined;
  return { prediction: parsePrediction(cfg.prediction_type, `${path}: prediction_type`), source: path };
}

/** The prediction type a checkpoint's own files declare, if any: its sidecar YAML, or a diffusers scheduler config. */
export async function declaredPrediction(checkpoint: string, isFolder: boolean): Promise<PredictionDecision | undefined> {
  if (!isFolder) {
    const sidecar = await readSidecar(checkpoint);
    // LDM's DDPM defaults to eps when the config leaves parameterization out.
    if (sidecar) return { prediction: sidecar.prediction ?? 'epsilon', source: sidecar.path };
  } else {
    const sched = join(checkpoint, 'scheduler', 'scheduler_config.json');
    if (await isFile(sched)) return fromSchedulerConfig(sched);
  }
  return undefined;
}

/**
 * A1111's probe for SD2 UNets (`is_using_v_parameterization_for_sd2`): all-0.5 latents [1, 4, 8, 8] at
 * timestep 999 with an all-0.5 context of 2 tokens. At that noise level an eps model returns about its input,
 * while a v model returns about -x0, far below it: v when mean(output - input) < -1.
 */
export const V_PROBE = { value: 0.5, timestep: 999, size: 8, tokens: 2, threshold: -1 } as const;

export function probeSaysV(output: Float32Array): boolean {
  let sum = 0;
  for (const o of output) sum += o - V_PROBE.value;
  return sum / output.length < V_PROBE.threshold;
}
