// LLM LoRA training through the shared YAML config and `train`: a generated fixed-format task is learned
// (held-out loss falls, greedy answers take the format), the adapter is PEFT's layout, logs are written,
// and a run stopped after a saved state and resumed ends bit-identical to an uninterrupted one.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTrainConfig } from '../engine/train/config.ts';
import { train, type TrainEvent } from '../engine/train/trainer.ts';
import { loadLlm, llmContext } from '../engine/llm/load.ts';
import { LlmTokenizer } from '../engine/llm/tokenizer.ts';
import { loadTextDataset } from '../engine/llm/data.ts';
import { llamaForCausalLM } from '../engine/llm/model.ts';
import { causalLmLoss } from '../engine/llm/objective.ts';
import { answerLoss } from '../engine/llm/evaluate.ts';
import { LlmGenerator } from '../engine/llm/generate.ts';
import { AdapterStacks } from '../engine/llm/adapter-stack.ts';
import { DEFAULT_SAMPLING } from '../engine/llm/sampling.ts';
import { compile } from '../engine/runtime/session.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { seededRandom } from '../engine/train/seeded-random.ts';
import { llamaTinyDir, tinyModelFolder } from './support/llm-folder.ts';
import { ANSWER, taskConfig, taskPrompt, writeTask } from './support/llm-task.ts';

let base: string;
let work: string;

before(async () => {
  base = await tinyModelFolder();
  work = await mkdtemp(join(tmpdir(), 'llm-train-'));
  await writeTask(join(work, 'data'), 40, 11);
});

async function runConfig(name: string, epochs: number, extra = '', opts: { stopAfterStep?: number } = {}) {
  const p = join(work, `${name}.yaml`);
  await writeFile(p, taskConfig({ base, data: join(work, 'data'), out: join(work, name), epochs, extra }));
  const { config } = await loadTrainConfig(p);
  const events: TrainEvent[] = [];
  const r = await train(config, { threads: 1, onEvent: (e) => events.push(e), ...opts });
  return { config, r, events };
}

test('a LoRA trained on a fixed-format task lowers held-out loss and makes greedy answers take the format', async (t) => {
  const { config, r, events } = await runConfig('learn', 12);
  assert.ok(r.outputPath && !r.cancelled);
  const summary = events.find((e) => e.type === 'log' && e.message.startsWith('dataset:'));
  assert.match((summary as { message: string }).message, /40 rows .*train 30, validation 10; .*0 rows truncated/);
  const vals = events.filter((e) => e.type === 'validation').map((e) => (e as { loss: number }).loss);
  assert.equal(vals.length, 12);

  // Held-out loss on the answer tokens, base model against base + adapter, through the same loss graph.
  const model = await loadLlm(base);
  const tok = await LlmTokenizer.load(base);
  const data = await loadTextDataset(config.train_data_dir, tok, { maxSeqLength: config.max_seq_length, validationSplit: config.validation_split, seed: config.seed });
  const held = data.examples.filter((e) => e.split === 'validation');
  const g = llamaForCausalLM(llmContext(model.weights), model.arch);
  const net = await compile([causalLmLoss(g.logits).loss], { threads: 1 });
  const weights = await new AdapterStacks(model.weights).weights([{ path: r.outputPath, weight: 1 }]);
  const before = await answerLoss(net, model.arch, held, tok.eosIds[0]!);
  const after = await answerLoss(net, model.arch, held, tok.eosIds[0]!, weights);
  assert.ok(Math.abs(after - vals[vals.length - 1]!) < 1e-4, `trainer's last validation loss ${vals.at(-1)} = reloaded adapter's ${after}`);
  t.diagnostic(`held-out answer loss: base ${before.toFixed(4)}, with the adapter ${after.toFixed(4)} (${(before / after).toFixed(1)}× lower)`);
  assert.ok(after < before / 4, `held-out loss ${before.toFixed(3)} → ${after.toFixed(3)}: expected at least a 4× drop`);

  // Greedy answers to new prompts: the format with the adapter, something else without it.
  const gen = await LlmGenerator.create(model, tok, { threads: 1 });
  const rnd = seededRandom(99, 'held-out prompts');
  const o = { ...DEFAULT_SAMPLING, maxNewTokens: 12, stop: [], seed: 0 };
  for (let i = 0; i < 3; i++) {
    const messages = [{ role: 'user', content: taskPrompt(rnd) }];
    assert.equal((await gen.chat(messages, o, { weights })).text, ANSWER);
    assert.notEqual((await gen.chat(messages, o)).text, ANSWER);
  }

  // The adapter folder as PEFT writes it.
  const cfg = JSON.parse(await readFile(join(r.outputPath, 'adapter_config.json'), 'utf8'));
  const peftCfg = JSON.parse(await readFile(join(llamaTinyDir, 'lora/adapter_config.json'), 'utf8'));
  assert.deepEqual(Object.keys(cfg), Object.keys(peftCfg), 'same fields, same (sorted) order as peft');
  assert.equal(cfg.r, 8);
  assert.equal(cfg.lora_alpha, 16);
  assert.deepEqual(cfg.target_modules, ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
  assert.equal(cfg.task_type, 'CAUSAL_LM');
  const f = await SafetensorsFile.open(join(r.outputPath, 'adapter_model.safetensors'));
  assert.deepEqual(f.metadata, { format: 'pt' });
  assert.equal(f.names().length, 2 * 7 * model.arch.layers);
  for (const k of f.names()) assert.match(k, /^base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.[a-z_]+\.lora_[AB]\.weight$/);
  await f.close();

  const logs = await readdir(config.logging_dir);
  assert.ok(logs.some((n) => n.startsWith('events.out.tfevents.')));
  const jsonl = (await readFile(join(config.logging_dir, 'scalars.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(jsonl.some((l) => 'loss/current' in (l.values ?? l)), 'loss/current logged');
});

test('stopped after a saved state and resumed, training ends bit-identical to an uninterrupted run', async () => {
  const whole = await runConfig('whole', 2, 'save_steps: 5');
  const part = await runConfig('part', 2, 'save_steps: 5', { stopAfterStep: 5 });
  assert.equal(part.r.outputPath, undefined);
  assert.ok(part.r.statePath?.endsWith('state-00000005'));
  const resumed = await runConfig('part', 2, `save_steps: 5\nresume_from: ${part.r.statePath}`);
  assert.equal(resumed.r.steps, whole.r.steps);
  const a = await readFile(join(whole.r.outputPath!, 'adapter_model.safetensors'));
  const b = await readFile(join(resumed.r.outputPath!, 'adapter_model.safetensors'));
  assert.ok(a.equals(b), 'same adapter bytes');
});
