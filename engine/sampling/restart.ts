import { karrasSigmas } from './schedulers.ts';
import type { KSamplerArgs } from './types.ts';
import { lin2, lin3, toD } from './vec.ts';

/**
 * A1111's "Restart" sampler (modules/sd_samplers_extra.py, after Xu et al. 2023): Heun steps, and for 20+ steps
 * a Karras schedule with fewer main steps plus one or two "restarts" that re-noise from sigma ~0.1 back up to
 * sigma ~2 and walk down again.
 */

const nearestIndex = (sigmas: readonly number[], v: number): number => {
  let best = 0;
  for (let i = 1; i < sigmas.length; i++) if (Math.abs(sigmas[i]! - v) < Math.abs(sigmas[best]! - v)) best = i;
  return best;
};

/** The (from, to) pairs Restart walks for a given schedule, in order. */
export function restartStepList(inputSigmas: readonly number[]): [number, number][] {
  let sigmas = inputSigmas;
  const steps = sigmas.length - 1;
  const restarts = new Map<number, [number, number, number]>();
  if (steps >= 20) {
    let restartSteps = 9;
    let restartTimes = 1;
    if (steps >= 36) {
      restartSteps = Math.floor(steps / 4);
      restartTimes = 2;
    }
    sigmas = karrasSigmas(steps - restartSteps * restartTimes, sigmas[sigmas.length - 2]!, sigmas[0]!);
    restarts.set(nearestIndex(sigmas, 0.1), [restartSteps + 1, restartTimes, 2]);
  }
  const list: [number, number][] = [];
  for (let i = 0; i < sigmas.length - 1; i++) {
    list.push([sigmas[i]!, sigmas[i + 1]!]);
    const r = restarts.get(i + 1);
    if (!r) continue;
    const [rSteps, rTimes, rMax] = r;
    const minIdx = i + 1;
    const maxIdx = nearestIndex(sigmas, rMax);
    if (maxIdx < minIdx) {
      const sr = karrasSigmas(rSteps, sigmas[minIdx]!, sigmas[maxIdx]!).slice(0, -1);
      for (let k = 0; k < rTimes; k++) for (let j = 0; j + 1 < sr.length; j++) list.push([sr[j]!, sr[j + 1]!]);
    }
  }
  return list;
}

export async function sampleRestart(args: KSamplerArgs): Promise<Float32Array> {
  const { denoise, sNoise } = args;
  const list = restartStepList(args.sigmas);
  const total = list.length;
  let x = args.x;
  let last: number | undefined;
  for (let i = 0; i < total; i++) {
    const [from, to] = list[i]!;
    if (last !== undefined && last < from) x = lin2(1, x, sNoise * Math.sqrt(from ** 2 - last ** 2), args.noise(last, from));
    const denoised = await denoise(x, from, i);
    const d = toD(x, from, denoised);
    const dt = to - from;
    if (to === 0) {
      x = lin2(1, x, dt, d);
    } else {
      const x2 = lin2(1, x, dt, d);
      const d2 = toD(x2, to, await denoise(x2, to, i));
      x = lin3(1, x, dt / 2, d, dt / 2, d2);
    }
    last = to;
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}
