/**
 * Causal LMs for the OpenAI-shaped routes: model folders in `<data-dir>/models/LLM/<name>/`, PEFT adapter
 * folders in `<data-dir>/models/LLM-adapters/<name>/`. One model is kept loaded (the last one asked for);
 * each request brings its own adapter stack, merged by weight into copies of the touched weights (engine
 * AdapterStacks), so requests with different stacks share the loaded base. Generation runs as a queue job,
 * one at a time with image generation and training, on the LLM thread (server/llm-thread-worker.ts): loading
 * and every token's ONNX Runtime call stay off the HTTP loop; streamed text comes back as it is final, and
 * the request's abort signal (client gone, interrupt) stops it between tokens.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { AdapterRef } from '../engine/llm/adapter-stack.ts';
import { isLlmModelFolder } from '../engine/llm/config.ts';
import type { GenerateOptions, GenerateResult } from '../engine/llm/generate.ts';
import type { ServerContext } from './context.ts';
import { HttpError } from './errors.ts';
import type { LlmInput } from './llm-thread-worker.ts';
import { ThreadJobs } from './thread-jobs.ts';

const NAME = /^[\w][\w.-]{0,199}$/;

async function subfolders(dir: string, keep: (path: string) => Promise<boolean>): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const out: string[] = [];
  for (const e of entries) if (e.isDirectory() && NAME.test(e.name) && (await keep(join(dir, e.name)))) out.push(e.name);
  return out.sort();
}

/** A request's adapter stack as the generation takes it: merged on the LLM thread. */
export type LlmCallbacks = { weights?: readonly AdapterRef[]; onText?: (delta: string) => void; signal?: AbortSignal };

/** The loaded model as a route uses it; the work happens on the LLM thread (server/llm-thread-worker.ts). */
export interface LlmHandle {
  gen: {
    complete(prompt: string, o: GenerateOptions, cb?: LlmCallbacks): Promise<GenerateResult>;
    chat(messages: readonly { role: string; content: string }[], o: GenerateOptions, cb?: LlmCallbacks): Promise<GenerateResult>;
  };
  stacks: { weights(stack: readonly AdapterRef[]): Promise<readonly AdapterRef[]> };
}

export class LlmService {
  readonly modelsDir: string;
  readonly adaptersDir: string;
  /** Loading and generating run here, off the HTTP loop: ONNX Runtime's calls are synchronous. */
  private readonly thread = new ThreadJobs(new URL('./llm-thread-worker.ts', import.meta.url).href, 'LLM', 'the next request starts a new thread and loads its model');

  constructor(private readonly ctx: ServerContext) {
    this.modelsDir = join(ctx.layout.dataDir, 'models', 'LLM');
    this.adaptersDir = join(ctx.layout.dataDir, 'models', 'LLM-adapters');
  }

  models(): Promise<string[]> {
    return subfolders(this.modelsDir, isLlmModelFolder);
  }

  adapters(): Promise<string[]> {
    return subfolders(this.adaptersDir, (p) => stat(join(p, 'adapter_config.json')).then(() => true, () => false));
  }

  private get device(): string {
    return (this.ctx.cmdFlags['device'] as string | undefined) ?? 'cpu';
  }

  /** The loaded model, loading `name` in place of the previous one when it differs. */
  async model(name: unknown): Promise<LlmHandle> {
    if (typeof name !== 'string' || !NAME.test(name)) throw new HttpError(422, 'model: the name of a folder in models/LLM (GET /v1/models)');
    if (!(await this.models()).includes(name)) throw new HttpError(404, `model '${name}' is not in ${this.modelsDir} (GET /v1/models lists them)`);
    const dir = join(this.modelsDir, name);
    await this.thread.call('load', [dir, this.device]);
    const run = (input: LlmInput, o: GenerateOptions, cb: LlmCallbacks = {}) => this.generate(dir, input, o, cb);
    return {
      gen: { complete: (prompt, o, cb) => run({ kind: 'completion', prompt }, o, cb), chat: (messages, o, cb) => run({ kind: 'chat', messages: [...messages] }, o, cb) },
      // The stack is merged where the weights are, on the thread.
      stacks: { weights: async (stack) => stack },
    };
  }

  private generate(dir: string, input: LlmInput, o: GenerateOptions, cb: LlmCallbacks): Promise<GenerateResult> {
    return this.thread.run<GenerateResult, string>('generate', {
      args: (port) => [dir, this.device, input, o, [...(cb.weights ?? [])], Boolean(cb.onText), port],
      onReport: (delta) => cb.onText?.(delta),
      signal: cb.signal,
    });
  }

  /** Ends the LLM thread once idle (a running generation is stopped first). */
  close(): Promise<void> {
    return this.thread.close();
  }

  /** `adapters: [{name, weight}]` (or "name:weight" strings) → folders in models/LLM-adapters. */
  async adapterStack(v: unknown): Promise<AdapterRef[]> {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw new HttpError(422, 'adapters: a list of {name, weight}');
    const known = await this.adapters();
    return v.map((item, i) => {
      const o = typeof item === 'string' ? { name: item.replace(/:[^:]*$/, ''), weight: /:([^:]*)$/.test(item) ? Number(item.slice(item.lastIndexOf(':') + 1)) : 1 } : (item as Record<string, unknown>);
      const name = o?.['name'];
      const weight = o?.['weight'] ?? 1;
      if (typeof name !== 'string' || !NAME.test(name)) throw new HttpError(422, `adapters[${i}].name: the name of a folder in models/LLM-adapters`);
      if (!known.includes(name)) throw new HttpError(404, `adapters[${i}]: '${name}' is not in ${this.adaptersDir}`);
      if (typeof weight !== 'number' || !Number.isFinite(weight)) throw new HttpError(422, `adapters[${i}].weight must be a number`);
      return { path: join(this.adaptersDir, name), weight };
    });
  }
}

const perServer = new WeakMap<ServerContext, LlmService>();

/** Ends the LLM thread of this server, if it started one. */
export async function closeLlm(ctx: ServerContext): Promise<void> {
  await perServer.get(ctx)?.close();
}

export function llmService(ctx: ServerContext): LlmService {
  let s = perServer.get(ctx);
  if (!s) perServer.set(ctx, (s = new LlmService(ctx)));
  return s;
}
