// lora-scripts complete / chat: the CLI streams what the engine generates, adapters stacked by weight.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
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
