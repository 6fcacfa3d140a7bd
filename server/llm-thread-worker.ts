/**
 * The LLM thread's side of server/llm.ts: one causal LM loaded (the last one asked for), each request's
 * adapter stack merged here (engine AdapterStacks), generation streamed to the main thread on a MessagePort.
 * A call names the model folder it needs, so a thread that replaced a dead one loads it by itself.
 */
import type { MessagePort } from 'node:worker_threads';
import { AdapterStacks, type AdapterRef } from '../engine/llm/adapter-stack.ts';
import { LlmGenerator, type GenerateOptions, type GenerateResult } from '../engine/llm/generate.ts';
import { loadLlm } from '../engine/llm/load.ts';
import { LlmTokenizer } from '../engine/llm/tokenizer.ts';
import { threadReports } from './thread-report.ts';

/** What to run: a completion of `prompt` or a chat over `messages`. */
export type LlmInput = { kind: 'completion'; prompt: string } | { kind: 'chat'; messages: { role: string; content: string }[] };

let loaded: { dir: string; device: string; model: Promise<{ gen: LlmGenerator; stacks: AdapterStacks }> } | null = null;

function modelAt(dir: string, device: string): Promise<{ gen: LlmGenerator; stacks: AdapterStacks }> {
  if (loaded?.dir !== dir || loaded.device !== device) {
    const model = (async () => {
      const m = await loadLlm(dir);
      const gen = await LlmGenerator.create(m, await LlmTokenizer.load(dir), { device: device as 'cpu' });
      return { gen, stacks: new AdapterStacks(m.weights) };
    })();
    const entry = { dir, device, model };
    loaded = entry;
    model.catch(() => {
      if (loaded === entry) loaded = null;
    });
  }
  return loaded.model;
}

/** Loads the model in `dir` in place of the previous one (a no-op when it is loaded). */
export async function load(dir: string, device: string): Promise<void> {
  await modelAt(dir, device);
}

export async function generate(dir: string, device: string, input: LlmInput, o: GenerateOptions, stack: AdapterRef[], stream: boolean, port: MessagePort): Promise<GenerateResult> {
  // Reports: text as it becomes final. Generation looks at the signal (the client left, or interrupt) between
  // tokens; this thread's loop turns between ONNX Runtime calls.
  const out = threadReports<string>(port);
  try {
    const { gen, stacks } = await modelAt(dir, device);
    const weights = await stacks.weights(stack);
    const cb = { weights, onText: stream ? out.report : undefined, signal: out.signal };
    return input.kind === 'chat' ? await gen.chat(input.messages, o, cb) : await gen.complete(input.prompt, o, cb);
  } finally {
    out.end();
  }
}
