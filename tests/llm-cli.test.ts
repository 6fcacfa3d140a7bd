// lora-scripts complete / chat: the CLI streams what the engine generates, adapters stacked by weight.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { basename, join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { Goldens } from './support/golden.ts';
import { compile } from '../engine/runtime/session.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { llmContext } from '../engine/llm/load.ts';
import { llamaForCausalLM } from '../engine/llm/model.ts';
import { decoderFeeds } from '../engine/llm/inputs.ts';
import { loadPeftAdapter } from '../engine/llm/peft.ts';
import { repoRoot } from './support/paths.ts';
import { llamaTinyDir, tinyModelFolder } from './support/llm-folder.ts';
import { loadLlm } from '../engine/llm/load.ts';
import { LlmTokenizer } from '../engine/llm/tokenizer.ts';
import { LlmGenerator } from '../engine/llm/generate.ts';
import { AdapterStacks } from '../engine/llm/adapter-stack.ts';
import { DEFAULT_SAMPLING } from '../engine/llm/sampling.ts';

const bin = join(repoRoot, 'bin/lora-scripts.js');
const adapterDir = join(llamaTinyDir, 'lora');
let dir: string;
let gen: LlmGenerator;
let stacks: AdapterStacks;

function run(args: string[], stdin = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [bin, ...args], { env: { ...process.env, LORA_SCRIPTS_QUIET: '1' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => res({ code, stdout, stderr }));
    p.stdin.end(stdin);
  });
}

before(async () => {
  dir = await tinyModelFolder();
  const m = await loadLlm(dir);
  gen = await LlmGenerator.create(m, await LlmTokenizer.load(dir), { threads: 1 });
  stacks = new AdapterStacks(m.weights);
});

const opts = { ...DEFAULT_SAMPLING, maxNewTokens: 10, stop: [], seed: 0 };

test('complete prints the greedy continuation, with a weighted adapter stack', async () => {
  const weights = await stacks.weights([{ path: adapterDir, weight: 1.5 }]);
  const want = await gen.complete('The cat', opts, { weights });
  const r = await run(['complete', dir, 'The cat', '--max-tokens', '10', '--threads', '1', '-a', `${adapterDir}:1.5`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `${want.text}\n`);
  const base = await gen.complete('The cat', opts);
  assert.notEqual(base.text, want.text, 'the adapter changes the continuation');
});

test('chat answers each stdin line through the chat template, keeping the history', async () => {
  const r = await run(['chat', dir, '--max-tokens', '6', '--threads', '1', '--system', 'be brief'], 'hi\nagain\n');
  assert.equal(r.code, 0, r.stderr);
  const history = [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }];
  const first = await gen.chat(history, { ...opts, maxNewTokens: 6 });
  history.push({ role: 'assistant', content: first.text }, { role: 'user', content: 'again' });
  const second = await gen.chat(history, { ...opts, maxNewTokens: 6 });
  assert.equal(r.stdout, `${first.text}\n${second.text}\n`);
});

test('bad options and folders are named in one-line errors', async () => {
  const r = await run(['complete', dir, 'x', '--top-p', '2']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /top_p must be in \(0, 1\]/);
  const r3 = await run(['complete', dir, 'x', '-a', join(dir, 'missing-adapter')]);
  assert.match(r3.stderr, /adapter .*missing-adapter does not exist/);
});

test('merge bakes an adapter into a new model folder: logits are peft merge_and_unload goldens, other tensors byte-identical', async () => {
  const out = join(dir, '..', `${basename(dir)}-merged`);
  const r = await run(['merge', dir, '-o', out, '-l', `${adapterDir}:1`]);
  assert.equal(r.code, 0, r.stderr);
  const golden = await Goldens.open(llamaTinyDir);
  const ids = await golden.readRaw('golden/inputs.safetensors', 'input_ids');
  const [B, T] = ids.shape as [number, number];
  const merged = await loadLlm(out);
  const g = llamaForCausalLM(llmContext(merged.weights), merged.arch);
  const [logits] = await (await compile([g.logits], { threads: 1 })).run(decoderFeeds(merged.arch, { ids: Array.from(ids.data as BigInt64Array, Number), batch: B, length: T }));
  await golden.expectClose(logits!.data as Float32Array, 'golden/golden.safetensors', 'logits_lora');
  const src = await SafetensorsFile.open(join(dir, 'model.safetensors'));
  const dst = await SafetensorsFile.open(join(out, 'model.safetensors'));
  const adapter = await loadPeftAdapter(adapterDir);
  const touched = new Set(adapter.modules.map((m) => `${m.module}.weight`));
  for (const k of src.names()) {
    const same = (await src.readBytes(k)).equals(await dst.readBytes(k));
    assert.equal(same, !touched.has(k), `${k} ${touched.has(k) ? 'patched' : 'copied'}`);
  }
  await src.close();
  await dst.close();
  assert.equal(await readFile(join(out, 'tokenizer.json'), 'utf8'), await readFile(join(dir, 'tokenizer.json'), 'utf8'));
});
