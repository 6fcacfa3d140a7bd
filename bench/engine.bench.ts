// Engine throughput: plain GEMM (the machine's ceiling), matmul and conv2d forward, a UNet-style
// conv -> group_norm -> silu -> conv block forward + backward, and weights as inputs vs initializers.
import { performance } from 'node:perf_hooks';
import { loadavg } from 'node:os';
import * as g from '../engine/graph/index.ts';
import { compile, type FeedValue } from '../engine/runtime/session.ts';
import { compileTrainStep } from '../engine/runtime/train-step.ts';
import { defaultThreads } from '../engine/runtime/providers.ts';

export const name = 'engine';

const rnd = (n: number) => {
  let s = 12345;
  return Float32Array.from({ length: n }, () => ((s = (s * 16807) % 2147483647) / 2147483647 - 0.5) * 0.2);
};

/** Best of `reps` timed runs after one warm-up; the best is the least disturbed by other processes. */
async function time(fn: () => Promise<unknown>, reps: number): Promise<number> {
  await fn();
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await fn();
    best = Math.min(best, (performance.now() - t) / 1000);
  }
  return best;
}

const gflops = (flop: number, s: number) => Math.round((flop / s / 1e9) * 10) / 10;

async function matmulRate(M: number, K: number, N: number, batch = 1, reps = 5) {
  const a = g.input('a', 'float32', batch > 1 ? [batch, M, K] : [M, K]);
  const b = g.param('b', batch > 1 ? [batch, K, N] : [K, N], rnd(batch * K * N));
  const c = await compile([g.matmul(a, b)]);
  const feeds = { a: rnd(batch * M * K) };
  const s = await time(() => c.run(feeds), reps);
  return { shape: `${batch > 1 ? `${batch}x` : ''}${M}x${K} @ ${K}x${N}`, seconds: s, gflops: gflops(2 * batch * M * K * N, s) };
}

function convFlop(N: number, C: number, O: number, H: number, W: number, k: number) {
  return 2 * N * O * H * W * C * k * k;
}

async function convRate(N: number, C: number, O: number, S: number, k: number) {
  const x = g.input('x', 'float32', [N, C, S, S]);
  const w = g.param('w', [O, C, k, k], rnd(O * C * k * k));
  const y = g.conv2d(x, w, undefined, { padding: (k - 1) / 2 });
  const feeds = { x: rnd(N * C * S * S) };
  const out: Record<string, unknown> = { shape: `[${N},${C},${S},${S}] * [${O},${C},${k},${k}]` };
  // Fed weights use ORT's generic im2col conv; baked ones let it pre-pack them into its NCHWc layout.
  for (const mode of ['inputs', 'external'] as const) {
    const c = await compile([y], { weights: mode });
    const s = await time(() => c.run(feeds), 4);
    out[mode] = { seconds: s, gflops: gflops(convFlop(N, C, O, S, S, k), s) };
  }
  return out;
}

async function blockRate(N: number, C: number, S: number) {
  const x = g.input('x', 'float32', [N, C, S, S]);
  const w1 = g.param('w1', [C, C, 3, 3], rnd(C * C * 9));
  const w2 = g.param('w2', [C, C, 3, 3], rnd(C * C * 9));
  const gw = g.param('gn.w', [C], new Float32Array(C).fill(1));
  const gb = g.param('gn.b', [C], new Float32Array(C));
  const y = g.conv2d(g.silu(g.groupNorm(g.conv2d(x, w1, undefined, { padding: 1 }), 32, gw, gb)), w2, undefined, { padding: 1 });
  const loss = g.mean(g.mul(y, y));
  const feeds: Record<string, FeedValue> = { x: rnd(N * C * S * S) };
  const fwd = await compile([loss]);
  const step = await compileTrainStep({ loss, params: [w1, w2, gw, gb] });
  const tf = await time(() => fwd.run(feeds), 5);
  const tb = await time(() => step.run(feeds), 5);
  const conv = convFlop(N, C, C, S, S, 3);
  // Backward of each conv is two convolutions' worth (input gradient, weight gradient).
  return {
    shape: `[${N},${C},${S},${S}], 3x3 convs, 32 groups`,
    forwardSeconds: tf,
    forwardGflops: gflops(2 * conv, tf),
    forwardBackwardSeconds: tb,
    forwardBackwardGflops: gflops(6 * conv, tb),
    convFlopCounted: 'forward 2 convs, forward+backward 6 convs; norm/activation flops not counted',
  };
}

/** SD 1.5's largest self-attention (64x64 latent, 8 heads of 40): ORT's fused kernel vs MatMul/Softmax/MatMul. */
async function attentionRate() {
  const [B, T, C, H] = [2, 4096, 320, 8];
  const q = g.input('q', 'float32', [B, T, C]);
  const k = g.input('k', 'float32', [B, T, C]);
  const v = g.input('v', 'float32', [B, T, C]);
  const y = g.multiHeadAttention(q, k, v, H);
  const feeds = { q: rnd(B * T * C), k: rnd(B * T * C), v: rnd(B * T * C) };
  const out: Record<string, unknown> = { shape: `[${B},${T},${C}], ${H} heads` };
  for (const mode of ['auto', 'standard'] as const) {
    const c = await compile([y], { attention: mode });
    out[mode === 'auto' ? 'fusedSeconds' : 'standardSeconds'] = await time(() => c.run(feeds), 2);
  }
  return out;
}

/** A mid-size conv stack (about 59 MB of weights): session creation and run time with each weight mode. */
async function weightsModes() {
  const out: Record<string, unknown> = {};
  for (const mode of ['inputs', 'initializers', 'external'] as const) {
    const x = g.input('x', 'float32', [1, 256, 32, 32]);
    let h = x;
    for (let i = 0; i < 6; i++) {
      const w = g.param(`w${i}`, [256, 256, 3, 3], rnd(256 * 256 * 9));
      const b = g.param(`b${i}`, [256], rnd(256));
      h = g.silu(g.conv2d(h, w, b, { padding: 1 }));
    }
    const t0 = performance.now();
    const c = await compile([g.mean(h)], { weights: mode });
    const create = (performance.now() - t0) / 1000;
    const feeds = { x: rnd(256 * 32 * 32) };
    const run = await time(() => c.run(feeds), 4);
    out[mode] = { createSeconds: Math.round(create * 1000) / 1000, runSeconds: Math.round(run * 10000) / 10000 };
  }
  return { graph: '6 x conv3x3 256->256 on [1,256,32,32] + bias + silu, 56.6 MiB of weights', ...out };
}

/** Runs `fn` with a plain-GEMM measurement just before it, so a shared machine's load shows in both. */
async function beside<T>(fn: () => Promise<T>): Promise<{ referenceGemmGflops: number; result: T }> {
  const ref = await matmulRate(2048, 2048, 2048, 1, 2);
  return { referenceGemmGflops: ref.gflops, result: await fn() };
}

export async function run(): Promise<Record<string, unknown>> {
  process.env['LORA_SCRIPTS_QUIET'] = '1';
  const loadBefore = loadavg()[0];
  const plainGemm = await matmulRate(2048, 2048, 2048, 1, 4);
  const matmul = await beside(async () => [await matmulRate(4096, 320, 320), await matmulRate(1024, 1280, 1280), await matmulRate(4096, 40, 4096, 8, 3)]);
  const conv2dForward = await beside(async () => [await convRate(2, 320, 320, 64, 3), await convRate(2, 640, 640, 32, 3), await convRate(2, 320, 320, 64, 1)]);
  const convGroupNormSiluConvBlock = await beside(() => blockRate(2, 128, 64));
  const weights = await beside(() => weightsModes());
  const attention = await beside(() => attentionRate());
  return {
    threads: defaultThreads(),
    // Other processes share these cores; a 1-minute load above the core count means the figures are low.
    // Each group also carries a plain-GEMM rate measured just before it, to read its figures against.
    loadAverage1m: { before: loadBefore, after: loadavg()[0] },
    plainGemm,
    matmul,
    conv2dForward,
    convGroupNormSiluConvBlock,
    weights,
    attention,
  };
}
