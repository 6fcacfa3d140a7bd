// LLM LoRA throughput on a Qwen2-0.5B-shaped model with random weights (bf16 file, float32 compute):
// training tokens/s (batch 1 × SEQ tokens, LoRA rank 16 on q/k/v/o_proj, AdamW) and greedy generation
// tokens/s with the KV cache (16-token prompt). With LORA_SCRIPTS_BENCH_TORCH=<python with torch,
// transformers, peft> the same folder and work run through bench/llm_torch.py in the same run, its logits on a
// probe are compared with ours (max |diff|), and the ratios are recorded.
// Env: LORA_SCRIPTS_BENCH_LLM=0 skips; _SEQ (default 128), _STEPS (timed train steps, default 2), _GEN (new tokens, default 16).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { compile } from '../engine/runtime/session.ts';
import { compileTrainStep } from '../engine/runtime/train-step.ts';
import { defaultThreads } from '../engine/runtime/providers.ts';
import { AdamW } from '../engine/optim/index.ts';
import { loadLlm, llmContext } from '../engine/llm/load.ts';
import { llamaForCausalLM } from '../engine/llm/model.ts';
import { decoderFeeds } from '../engine/llm/inputs.ts';
import { causalLmLoss, LABELS_INPUT, shiftedLabels } from '../engine/llm/objective.ts';
import { LlmLoraNetwork, selectLlmTargets } from '../engine/llm/lora-network.ts';
import { LlmGenerator } from '../engine/llm/generate.ts';
import { DEFAULT_SAMPLING } from '../engine/llm/sampling.ts';
import { writeSyntheticLlm } from '../engine/llm/synthetic.ts';

export const name = 'llm';

const env = (k: string, d: number) => Number(process.env[`LORA_SCRIPTS_BENCH_LLM_${k}`] ?? d);

export async function run(): Promise<Record<string, unknown>> {
  if (process.env.LORA_SCRIPTS_BENCH_LLM === '0') return { skipped: 'LORA_SCRIPTS_BENCH_LLM=0' };
  const seq = env('SEQ', 128);
  const steps = env('STEPS', 2);
  const genTokens = env('GEN', 16);
  const threads = defaultThreads();
  const dir = join(fileURLToPath(new URL('.', import.meta.url)), 'scratch', 'qwen2-0.5b-random');
  if (!existsSync(join(dir, 'model.safetensors'))) await writeSyntheticLlm(dir);
  const load = [loadavg()[0]];
  const model = await loadLlm(dir);
  const V = model.arch.vocab;
  const ids = Array.from({ length: seq }, (_, i) => (i * 7919 + 11) % V);

  const probeGraph = llamaForCausalLM(llmContext(model.weights), model.arch, { lastOnly: true });
  const [probe] = await (await compile([probeGraph.logits], { threads })).run(decoderFeeds(model.arch, { ids: ids.slice(0, 16), batch: 1, length: 16 }));
  const probeLogits = Array.from((probe!.data as Float32Array).slice(0, 8));

  const gen = await LlmGenerator.create(model, undefined, { threads });
  const opts = { ...DEFAULT_SAMPLING, maxNewTokens: genTokens, stop: [], seed: 0 };
  await gen.generateIds(ids.slice(0, 16), { ...opts, maxNewTokens: 2 });
  let t = performance.now();
  const g = await gen.generateIds(ids.slice(0, 16), opts);
  const genSeconds = (performance.now() - t) / 1000;

  const network = LlmLoraNetwork.create(selectLlmTargets(model.weights, ['q_proj', 'k_proj', 'v_proj', 'o_proj']), { rank: 16, alpha: 32, seed: 0 });
  const graph = llamaForCausalLM(llmContext(model.weights, { adapter: network.hook(0, true), training: true }), model.arch);
  const step = await compileTrainStep({ loss: causalLmLoss(graph.logits).loss, params: network.paramTensors(), session: { threads, weights: 'external' } });
  const opt = new AdamW([{ name: 'lora', params: network.params(), lr: 1e-4 }]);
  const feeds = { ...decoderFeeds(model.arch, { ids, batch: 1, length: seq }), [LABELS_INPUT]: { data: shiftedLabels(ids, 1, seq), shape: [1, seq] } };
  const once = async () => opt.step((await step.run(feeds)).grads);
  await once();
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    t = performance.now();
    await once();
    times.push((performance.now() - t) / 1000);
  }
  load.push(loadavg()[0]);
  const ours = {
    gen_tokens: genTokens,
    gen_seconds: genSeconds,
    gen_tokens_per_s: g.tokens.length / genSeconds,
    generated: g.tokens,
    train_step_seconds: times,
    train_tokens_per_s: seq / Math.min(...times),
  };
  const out: Record<string, unknown> = { model: 'Qwen2-0.5B shape, random bf16 weights, float32 compute', seq, threads, lora: 'rank 16, alpha 32, q/k/v/o_proj', load, ours };
  const py = process.env.LORA_SCRIPTS_BENCH_TORCH;
  if (py) {
    const script = fileURLToPath(new URL('llm_torch.py', import.meta.url));
    const torch = JSON.parse(execFileSync(py, [script, dir, String(seq), String(steps), String(genTokens), String(threads)], { encoding: 'utf8', maxBuffer: 1 << 24 }).trim().split('\n').pop()!);
    load.push(loadavg()[0]);
    out.torch = torch;
    out.probe_max_abs_diff = Math.max(...probeLogits.map((v, i) => Math.abs(v - torch.probe_logits[i])));
    out.same_greedy_tokens = JSON.stringify(torch.generated) === JSON.stringify(g.tokens);
    out.train_speedup = ours.train_tokens_per_s / torch.train_tokens_per_s;
    out.gen_speedup = ours.gen_tokens_per_s / torch.gen_tokens_per_s;
  }
  return out;
}
