import type { DiscreteSchedule } from './training-schedule.ts';
import type { EpsModel, StepCallback } from './types.ts';
import { checkSameLength } from './vec.ts';

/**
 * UniPC (Zhao et al. 2023), multistep predictor-corrector in data-prediction form, as A1111 runs it
 * (modules/models/diffusion/uni_pc with options uni_pc_variant "bh1", uni_pc_skip_type "time_uniform",
 * uni_pc_order 3, uni_pc_lower_order_final true). Time is continuous t in [1/N, 1] over the discrete schedule:
 * training step n sits at t = (n + 1) / N, log(alpha_t) is interpolated linearly between them, and the UNet
 * sees timestep (t - 1/N) * 1000 (fractional) and the VP latent unchanged.
 */

export type UniPcVariant = 'bh1' | 'bh2';
export type UniPcSkipType = 'time_uniform' | 'time_quadratic' | 'logSNR';

export interface UniPcArgs {
  model: EpsModel;
  schedule: DiscreteSchedule;
  /** VP latent at time tStart. Not modified. */
  x: Float32Array;
  steps: number;
  /** Start time in (1/N, 1]; default 1 (txt2img). */
  tStart?: number;
  order?: number;
  variant?: UniPcVariant;
  skipType?: UniPcSkipType;
  lowerOrderFinal?: boolean;
  onStep?: StepCallback;
}

/** The VP noise schedule over continuous time, piecewise linear in log(alpha). */
class VpSchedule {
  readonly n: number;
  private readonly logAlpha: Float64Array;
  constructor(acp: Float32Array) {
    this.n = acp.length;
    this.logAlpha = new Float64Array(acp.length);
    for (let i = 0; i < acp.length; i++) this.logAlpha[i] = Math.fround(0.5 * Math.log(acp[i]!));
  }
  tAt(i: number): number {
    return (i + 1) / this.n;
  }
  logMeanCoeff(t: number): number {
    // Linear interpolation between the knots t_i = (i + 1) / N, extrapolating the end segments.
    const pos = t * this.n - 1;
    const k = Math.min(Math.max(Math.floor(pos), 0), this.n - 2);
    const w = pos - k;
    return this.logAlpha[k]! + w * (this.logAlpha[k + 1]! - this.logAlpha[k]!);
  }
  alpha(t: number): number {
    return Math.exp(this.logMeanCoeff(t));
  }
  std(t: number): number {
    return Math.sqrt(1 - Math.exp(2 * this.logMeanCoeff(t)));
  }
  lambda(t: number): number {
    const la = this.logMeanCoeff(t);
    return la - 0.5 * Math.log(1 - Math.exp(2 * la));
  }
  inverseLambda(lambda: number): number {
    const la = -0.5 * (Math.max(0, -2 * lambda) + Math.log1p(Math.exp(-Math.abs(-2 * lambda))));
    // logAlpha decreases with t: find the segment holding la, extrapolating at the ends.
    let k = 0;
    while (k < this.n - 2 && this.logAlpha[k + 1]! >= la) k++;
    const a = this.logAlpha[k]!;
    const b = this.logAlpha[k + 1]!;
    return this.tAt(k) + ((la - a) / (b - a)) * (this.tAt(k + 1) - this.tAt(k));
  }
}

/** Solves the small dense system A x = b by Gaussian elimination with partial pivoting. */
function solve(a: number[][], b: number[]): number[] {
  const n = b.length;
  const m = a.map((row, i) => [...row.slice(0, n), b[i]!]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r]![c]!) > Math.abs(m[p]![c]!)) p = r;
    [m[c], m[p]] = [m[p]!, m[c]!];
    for (let r = c + 1; r < n; r++) {
      const f = m[r]![c]! / m[c]![c]!;
      for (let k = c; k <= n; k++) m[r]![k]! -= f * m[c]![k]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = m[r]![n]!;
    for (let k = r + 1; k < n; k++) s -= m[r]![k]! * x[k]!;
    x[r] = s / m[r]![r]!;
  }
  return x;
}

function timeSteps(ns: VpSchedule, skip: UniPcSkipType, tT: number, t0: number, n: number): number[] {
  const lin = (a: number, b: number): number[] => Array.from({ length: n + 1 }, (_, i) => a + ((b - a) * i) / n);
  if (skip === 'time_uniform') return lin(tT, t0);
  if (skip === 'time_quadratic') return lin(Math.sqrt(tT), Math.sqrt(t0)).map((v) => v * v);
  return lin(ns.lambda(tT), ns.lambda(t0)).map((l) => ns.inverseLambda(l));
}

export async function sampleUniPc(args: UniPcArgs): Promise<Float32Array> {
  const ns = new VpSchedule(args.schedule.alphasCumprod);
  const steps = args.steps;
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`UniPC steps must be a positive integer, got ${steps}`);
  // A1111 asserts order <= steps; running at the highest order the steps allow is the useful reading.
  const order = Math.min(args.order ?? 3, steps);
  const variant = args.variant ?? 'bh1';
  const lowerOrderFinal = args.lowerOrderFinal ?? true;
  const t0 = 1 / ns.n;
  const tT = args.tStart ?? 1;
  const ts = timeSteps(ns, args.skipType ?? 'time_uniform', tT, t0, steps);
  const len = args.x.length;

  const dataPrediction = async (x: Float32Array, t: number, index: number): Promise<Float32Array> => {
    const alpha = ns.alpha(t);
    const std = ns.std(t);
    const eps = await args.model(x, (t - 1 / ns.n) * 1000, { sigma: std / alpha, index, total: steps });
    checkSameLength(x, eps, 'eps model output');
    const out = new Float32Array(len);
    for (let k = 0; k < len; k++) out[k] = (x[k]! - std * eps[k]!) / alpha;
    return out;
  };

  const update = async (
    x: Float32Array,
    models: Float32Array[],
    times: number[],
    t: number,
    stepOrder: number,
    useCorrector: boolean,
    index: number,
  ): Promise<{ x: Float32Array; modelT: Float32Array | undefined }> => {
    const tPrev0 = times[times.length - 1]!;
    const m0 = models[models.length - 1]!;
    const lambdaPrev0 = ns.lambda(tPrev0);
    const h = ns.lambda(t) - lambdaPrev0;
    const sigmaPrev0 = ns.std(tPrev0);
    const sigmaT = ns.std(t);
    const alphaT = ns.alpha(t);

    const rks: number[] = [];
    const d1s: Float32Array[] = [];
    for (let i = 1; i < stepOrder; i++) {
      const rk = (ns.lambda(times[times.length - 1 - i]!) - lambdaPrev0) / h;
      rks.push(rk);
      const mi = models[models.length - 1 - i]!;
      const d = new Float32Array(len);
      for (let k = 0; k < len; k++) d[k] = (mi[k]! - m0[k]!) / rk;
      d1s.push(d);
    }
    rks.push(1);

    const hh = -h;
    const hPhi1 = Math.expm1(hh);
    let hPhiK = hPhi1 / hh - 1;
    let factorial = 1;
    const bH = variant === 'bh1' ? hh : Math.expm1(hh);
    const R: number[][] = [];
    const b: number[] = [];
    for (let i = 1; i <= stepOrder; i++) {
      R.push(rks.map((r) => r ** (i - 1)));
      b.push((hPhiK * factorial) / bH);
      factorial *= i + 1;
      hPhiK = hPhiK / hh - 1 / factorial;
    }

    const base = new Float32Array(len);
    const ratio = sigmaT / sigmaPrev0;
    for (let k = 0; k < len; k++) base[k] = ratio * x[k]! - alphaT * hPhi1 * m0[k]!;

    let xt = base;
    if (d1s.length > 0) {
      const rhosP = stepOrder === 2 ? [0.5] : solve(R.slice(0, -1).map((row) => row.slice(0, -1)), b.slice(0, -1));
      xt = new Float32Array(len);
      for (let k = 0; k < len; k++) {
        let res = 0;
        for (let j = 0; j < d1s.length; j++) res += rhosP[j]! * d1s[j]![k]!;
        xt[k] = base[k]! - alphaT * bH * res;
      }
    }
    if (!useCorrector) return { x: xt, modelT: undefined };

    const rhosC = stepOrder === 1 ? [0.5] : solve(R, b);
    const modelT = await dataPrediction(xt, t, index);
    const out = new Float32Array(len);
    const last = rhosC[rhosC.length - 1]!;
    for (let k = 0; k < len; k++) {
      let res = 0;
      for (let j = 0; j < d1s.length; j++) res += rhosC[j]! * d1s[j]![k]!;
      res += last * (modelT[k]! - m0[k]!);
      out[k] = base[k]! - alphaT * bH * res;
    }
    return { x: out, modelT };
  };

  let x = args.x;
  const models: Float32Array[] = [await dataPrediction(x, ts[0]!, 0)];
  const times: number[] = [ts[0]!];
  for (let initOrder = 1; initOrder < order; initOrder++) {
    const t = ts[initOrder]!;
    const r = await update(x, models, times, t, initOrder, true, initOrder);
    x = r.x;
    const modelX = r.modelT ?? (await dataPrediction(x, t, initOrder));
    await args.onStep?.({ index: initOrder - 1, total: steps, x, denoised: modelX });
    models.push(modelX);
    times.push(t);
  }
  for (let step = order; step <= steps; step++) {
    const t = ts[step]!;
    const stepOrder = lowerOrderFinal ? Math.min(order, steps + 1 - step) : order;
    const r = await update(x, models, times, t, stepOrder, step !== steps, step);
    x = r.x;
    await args.onStep?.({ index: step - 1, total: steps, x, denoised: r.modelT ?? models[models.length - 1]! });
    models.shift();
    times.shift();
    times.push(t);
    if (step < steps) models.push(r.modelT ?? (await dataPrediction(x, t, step)));
    else models.push(models[models.length - 1]!);
  }
  return x;
}
