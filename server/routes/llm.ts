/**
 * OpenAI-shaped LLM routes, so LLM clients work unchanged: `GET /v1/models`, `POST /v1/completions` and
 * `POST /v1/chat/completions`, with `stream: true` as server-sent events (`data: {chunk}` lines, then
 * `data: [DONE]`). Extensions: `adapters: [{name, weight}]` stacks PEFT adapters from models/LLM-adapters
 * for this request only; `top_k` and `repetition_penalty` as in transformers; `GET /v1/adapters` lists them.
 */
import { randomBytes } from 'node:crypto';
import type { Request, Response } from 'express';
import type { GenerateOptions, GenerateResult } from '../../engine/llm/generate.ts';
import { isUserError } from '../../engine/util/errors.ts';
import type { ServerContext } from '../context.ts';
import { HttpError } from '../errors.ts';
import { llmService } from '../llm.ts';
import { chatRequest, completionRequest, type LlmRequest } from '../requests/llm.ts';
import { parseRequest } from '../schema.ts';
import type { Api } from './api.ts';

function options(b: LlmRequest): GenerateOptions {
  return {
    maxNewTokens: b.max_tokens ?? b.max_completion_tokens ?? 256,
    temperature: b.temperature,
    topP: b.top_p,
    topK: b.top_k,
    repetitionPenalty: b.repetition_penalty,
    stop: b.stop,
    seed: b.seed,
  };
}

type Kind = 'completion' | 'chat';

function usage(r: GenerateResult) {
  return { prompt_tokens: r.promptTokens, completion_tokens: r.tokens.length, total_tokens: r.promptTokens + r.tokens.length };
}

async function serve(ctx: ServerContext, kind: Kind, req: Request, res: Response): Promise<unknown> {
  const b = kind === 'chat' ? parseRequest(chatRequest, req.body) : parseRequest(completionRequest, req.body);
  const svc = llmService(ctx);
  const o = options(b);
  const messages = 'messages' in b ? b.messages : [];
  const prompt = 'prompt' in b ? b.prompt : '';
  const stack = await svc.adapterStack(b.adapters);
  const model = b.model;
  const stream = b.stream;
  const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
  const created = Math.floor(Date.now() / 1000);
  const object = kind === 'chat' ? 'chat.completion' : 'text_completion';
  const chunk = (text: string | null, finish: string | null, first = false) =>
    kind === 'chat'
      ? { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: text === null ? {} : first ? { role: 'assistant', content: text } : { content: text }, finish_reason: finish }] }
      : { id, object, created, model, choices: [{ index: 0, text: text ?? '', logprobs: null, finish_reason: finish }] };

  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  let first = true;
  const handle = ctx.queue.submit<GenerateResult>({
    kind: 'llm',
    run: async (q) => {
      const { gen, stacks } = await svc.model(b.model);
      const weights = await stacks.weights(stack);
      q.progress({ step: 0, total: o.maxNewTokens, textinfo: `LLM ${model}` });
      let n = 0;
      const signal = AbortSignal.any([abort.signal, q.signal]);
      const onText = stream
        ? (delta: string) => {
            res.write(`data: ${JSON.stringify(chunk(delta, null, first))}\n\n`);
            first = false;
            q.progress({ step: ++n });
          }
        : undefined;
      if (stream) {
        res.status(200).setHeader('Content-Type', 'text/event-stream');
        res.setHeader('Cache-Control', 'no-cache');
        res.flushHeaders();
      }
      return kind === 'chat' ? gen.chat(messages, o, { weights, onText, signal }) : gen.complete(prompt, o, { weights, onText, signal });
    },
  });
  let r: GenerateResult;
  try {
    r = await handle.promise;
  } catch (e) {
    if (isUserError(e)) e = new HttpError(422, e.message);
    if (!res.headersSent) throw e;
    res.write(`data: ${JSON.stringify({ error: { message: (e as Error).message } })}\n\n`);
    res.end();
    return undefined;
  }
  if (stream) {
    res.write(`data: ${JSON.stringify({ ...chunk(null, r.finishReason), usage: usage(r) })}\n\n`);
    res.write('data: [DONE]\n\n');
    res.end();
    return undefined;
  }
  const choice =
    kind === 'chat'
      ? { index: 0, message: { role: 'assistant', content: r.text }, finish_reason: r.finishReason }
      : { index: 0, text: r.text, logprobs: null, finish_reason: r.finishReason };
  return { id, object, created, model, choices: [choice], usage: usage(r) };
}

export function register(api: Api, ctx: ServerContext): void {
  const tag = 'llm';
  api.get('/v1/models', { summary: 'Causal LMs in models/LLM (OpenAI list shape)', tag, example: { object: 'list', data: [{ id: 'qwen2-0.5b', object: 'model', owned_by: 'lora-scripts' }] } }, async () => ({
    object: 'list',
    data: (await llmService(ctx).models()).map((id) => ({ id, object: 'model', created: 0, owned_by: 'lora-scripts' })),
  }));
  api.get('/v1/adapters', { summary: 'PEFT LoRA adapters in models/LLM-adapters, for the `adapters` field', tag, example: { data: [{ name: 'my-adapter' }] } }, async () => ({
    data: (await llmService(ctx).adapters()).map((name) => ({ name })),
  }));
  const fields =
    'max_tokens, temperature (0 = greedy), top_p, top_k, repetition_penalty, stop, seed, stream (SSE), adapters: [{name, weight}] (PEFT adapters from models/LLM-adapters, merged by weight for this request)';
  api.post('/v1/completions', { summary: `OpenAI completions: {model, prompt, ${fields}}`, tag, body: { name: 'CompletionRequest', schema: completionRequest } }, (req, res) => serve(ctx, 'completion', req, res));
  api.post('/v1/chat/completions', { summary: `OpenAI chat completions through the model's chat template: {model, messages, ${fields}}`, tag, body: { name: 'ChatCompletionRequest', schema: chatRequest } }, (req, res) => serve(ctx, 'chat', req, res));
}
