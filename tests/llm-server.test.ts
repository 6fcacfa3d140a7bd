// The OpenAI-shaped LLM routes on a real server: completions and chat completions equal the engine's
// greedy generation, adapter stacks per request, SSE streaming that reassembles to the same text.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { llamaTinyDir, tinyModelFolder } from './support/llm-folder.ts';
import { loadLlm } from '../engine/llm/load.ts';
import { LlmTokenizer } from '../engine/llm/tokenizer.ts';
import { LlmGenerator } from '../engine/llm/generate.ts';
import { AdapterStacks } from '../engine/llm/adapter-stack.ts';
import { DEFAULT_SAMPLING } from '../engine/llm/sampling.ts';
import { ANSWER, writeTask } from './support/llm-task.ts';

let t: TestServer;
let gen: LlmGenerator;
let stacks: AdapterStacks;
const adapterDir = join(llamaTinyDir, 'lora');

before(async () => {
  t = await startTestServer({ loadOnStart: false });
  const model = await tinyModelFolder();
  await mkdir(join(t.dataDir, 'models/LLM-adapters'), { recursive: true });
  await cp(model, join(t.dataDir, 'models/LLM/tiny'), { recursive: true });
  await cp(adapterDir, join(t.dataDir, 'models/LLM-adapters/style'), { recursive: true });
  const m = await loadLlm(model);
  gen = await LlmGenerator.create(m, await LlmTokenizer.load(model), { threads: 1 });
  stacks = new AdapterStacks(m.weights);
});

after(async () => {
  await t.close();
});

const greedy = { ...DEFAULT_SAMPLING, maxNewTokens: 8, stop: [], seed: 0 };

test('models and adapters are listed', async () => {
  const r = await t.get('/v1/models');
  assert.equal(r.status, 200);
  assert.deepEqual(r.body.data.map((m: { id: string }) => m.id), ['tiny']);
  assert.deepEqual((await t.get('/v1/adapters')).body.data, [{ name: 'style' }]);
});

test('completions and chat completions answer in the OpenAI shape with the engine\'s greedy text', async () => {
  const r = await t.post('/v1/completions', { model: 'tiny', prompt: 'Once', max_tokens: 8, temperature: 0 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const want = await gen.complete('Once', greedy);
  assert.equal(r.body.object, 'text_completion');
  assert.equal(r.body.choices[0].text, want.text);
  assert.equal(r.body.choices[0].finish_reason, want.finishReason);
  assert.deepEqual(r.body.usage, { prompt_tokens: want.promptTokens, completion_tokens: want.tokens.length, total_tokens: want.promptTokens + want.tokens.length });
  const messages = [{ role: 'user', content: 'hi' }];
  const c = await t.post('/v1/chat/completions', { model: 'tiny', messages, max_tokens: 8, temperature: 0 });
  assert.equal(c.status, 200, JSON.stringify(c.body));
  assert.equal(c.body.object, 'chat.completion');
  assert.deepEqual(c.body.choices[0].message, { role: 'assistant', content: (await gen.chat(messages, greedy)).text });
});

test('each request brings its own adapter stack; the base model stays untouched between them', async () => {
  const body = { model: 'tiny', prompt: 'The cat', max_tokens: 8, temperature: 0 };
  const withA = await t.post('/v1/completions', { ...body, adapters: [{ name: 'style', weight: 1.5 }] });
  const weights = await stacks.weights([{ path: adapterDir, weight: 1.5 }]);
  assert.equal(withA.body.choices[0].text, (await gen.complete('The cat', greedy, { weights })).text);
  const plain = await t.post('/v1/completions', body);
  assert.equal(plain.body.choices[0].text, (await gen.complete('The cat', greedy)).text);
  assert.notEqual(plain.body.choices[0].text, withA.body.choices[0].text);
  const bad = await t.post('/v1/completions', { ...body, adapters: [{ name: 'nope' }] });
  assert.equal(bad.status, 404);
  assert.match(JSON.stringify(bad.body), /'nope' is not in/);
  const badModel = await t.post('/v1/completions', { ...body, model: 'other' });
  assert.equal(badModel.status, 404);
  const badTemp = await t.post('/v1/completions', { ...body, temperature: -1 });
  assert.equal(badTemp.status, 422);
});

test('stream: true sends server-sent events whose deltas add up to the text, then [DONE]', async () => {
  const res = await fetch(`${t.server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'stream me' }], max_tokens: 12, temperature: 0, adapters: ['style:0.5'] }),
  });
  assert.equal(res.status, 200);
  const plainText = (await res.json()).choices[0].message.content;
  const s = await fetch(`${t.server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'stream me' }], max_tokens: 12, temperature: 0, adapters: ['style:0.5'], stream: true }),
  });
  assert.equal(s.headers.get('content-type'), 'text/event-stream');
  const events = (await s.text()).split('\n\n').filter(Boolean).map((e) => e.replace(/^data: /, ''));
  assert.equal(events.at(-1), '[DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert.ok(chunks.length >= 2);
  for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
  assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), plainText);
  assert.ok(chunks.at(-1).choices[0].finish_reason);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
});

test('an LLM training job runs in the shared queue and its adapter serves /v1/chat/completions', async () => {
  await writeTask(join(t.dataDir, 'datasets/task'), 40, 11);
  const config = {
    base_model: 'tiny',
    train_data_dir: 'datasets/task',
    output_name: 'task',
    lora_rank: 8,
    lora_alpha: 16,
    target_modules: 'all-linear',
    learning_rate: 0.01,
    epochs: 12,
    batch_size: 4,
    max_seq_length: 96,
    save_every_n_epochs: 0,
    seed: 3,
  };
  const check = await t.post('/sdapi/v1/train/check', config);
  assert.equal(check.body.valid, true, JSON.stringify(check.body));
  assert.equal(check.body.plan.total_steps, 120);
  const start = await t.post('/sdapi/v1/train/jobs', config);
  assert.equal(start.status, 202, JSON.stringify(start.body));
  assert.equal(start.body.lora, join(t.dataDir, 'models/LLM-adapters/task'));
  let job;
  for (let i = 0; i < 600; i++) {
    job = (await t.get(`/sdapi/v1/train/jobs/${start.body.id}`)).body;
    if (!['queued', 'running'].includes(job.status)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(job.status, 'done', JSON.stringify(job.error ?? job.logs?.slice(-3)));
  assert.ok((await t.get('/sdapi/v1/train/jobs')).body.some((j: { id: string }) => j.id === start.body.id), 'listed with the other runs');
  assert.deepEqual((await t.get('/v1/adapters')).body.data.map((a: { name: string }) => a.name), ['style', 'task']);
  const c = await t.post('/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: 'Rate this: green table' }], max_tokens: 10, temperature: 0, adapters: [{ name: 'task', weight: 1 }] });
  assert.equal(c.body.choices[0].message.content, ANSWER);
});
