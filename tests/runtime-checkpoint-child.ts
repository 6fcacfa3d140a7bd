// Child process for runtime-checkpoint.test.ts: builds a deep conv stack with or without checkpointed blocks,
// runs one training step with ORT's arena off, and prints peak RSS and a gradient digest as JSON.
import * as g from '../engine/graph/index.ts';
import { checkpoint } from '../engine/autodiff/checkpoint.ts';
import { compileTrainStep } from '../engine/runtime/train-step.ts';

process.env['LORA_SCRIPTS_QUIET'] = '1';
const mode = process.argv[2];
const [B, C, S, blocks] = [2, 32, 64, 8];
let seed = 1;
const rnd = (n: number, s: number) => Float32Array.from({ length: n }, () => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5) * s);
const x = g.input('x', 'float32', [B, C, S, S]);
const params: g.Tensor[] = [];
let h = x;
for (let i = 0; i < blocks; i++) {
  const w1 = g.param(`b${i}.w1`, [C, C, 3, 3], rnd(C * C * 9, 0.1));
  const w2 = g.param(`b${i}.w2`, [C, C, 3, 3], rnd(C * C * 9, 0.1));
  params.push(w1, w2);
  const block = (t: g.Tensor) => g.add(t, g.conv2d(g.silu(g.groupNorm(g.conv2d(g.silu(t), w1, undefined, { padding: 1 }), 8)), w2, undefined, { padding: 1 }));
  h = mode === 'checkpoint' ? checkpoint(() => block(h)) : block(h);
}
const loss = g.mean(g.mul(h, h));
const step = await compileTrainStep({ loss, params, session: { memArena: false, threads: 2 } });
const before = process.resourceUsage().maxRSS;
const res = await step.run({ x: rnd(B * C * S * S, 2) });
const after = process.resourceUsage().maxRSS;
const digest = params.map((p) => Array.from(res.grads.get(p.name!)!.subarray(0, 8)));
process.stdout.write(JSON.stringify({ loss: res.loss, maxRssBeforeKb: before, maxRssKb: after, digest }));
