/**
 * The OpenAI-shaped LLM requests (`/v1/completions`, `/v1/chat/completions`) with OpenAI's defaults, plus our
 * extensions: `top_k`, `repetition_penalty` (transformers' meaning) and `adapters` (PEFT adapters by name,
 * `"name"`, `"name:weight"` or `{name, weight}`).
 */
import { z } from 'zod';
import { check, coerce, f, field, required, requestModel, requiredStr } from '../schema.ts';

/** `stop`: one string or a list of them, none empty. */
const stopList = z
  .union([z.string().transform((s) => [s]), z.array(z.string())], { error: 'stop must be a string or a list of strings' })
  .refine((list) => list.every((s) => s.length > 0), check('stop: the strings may not be empty'));

const adapter = z.union([z.string(), z.object({ name: requiredStr(), weight: coerce.float.optional() }, { error: 'value is not a valid dict' })], { error: 'an adapter is "name", "name:weight" or {name, weight}' });

const sampling = {
  model: required('str', coerce.str, 'a folder name in models/LLM (GET /v1/models)'),
  max_tokens: f.int(null, 'new tokens at most; default 256'),
  max_completion_tokens: f.int(null, 'OpenAI\'s newer name for max_tokens'),
  temperature: f.float(1, '0 = greedy'),
  top_p: f.float(1),
  top_k: f.int(0, '0 = off'),
  repetition_penalty: f.float(1),
  stop: field('list', stopList, [], 'a string or a list of strings'),
  seed: f.int(0),
  n: f.int(1, 'only 1 choice per request', { ge: 1, le: 1 }),
  stream: f.bool(false, 'server-sent events'),
  adapters: field('list', z.array(adapter, { error: 'adapters: a list of {name, weight}' }), [], 'PEFT adapters from models/LLM-adapters, merged by weight for this request'),
};

/** `prompt`: a string, or a list holding one string. */
const promptText = z.union([z.string(), z.tuple([z.string()]).transform(([p]) => p)], { error: 'prompt: a string (or a list of one string)' });

export const completionRequest = requestModel({ ...sampling, prompt: required('str', promptText) });

const message = z.object({ role: requiredStr(), content: requiredStr() }, { error: 'value is not a valid dict' });

export const chatRequest = requestModel({
  ...sampling,
  messages: required('list', z.array(message, { error: 'value is not a valid list' }).refine((list) => list.length > 0, check('messages: a non-empty list of {role, content}', 'value_error.list.min_items'))),
});

export type CompletionRequest = z.output<typeof completionRequest>;
export type ChatRequest = z.output<typeof chatRequest>;
export type LlmRequest = CompletionRequest | ChatRequest;
