/**
 * Causal LMs for the OpenAI-shaped routes: model folders in `<data-dir>/models/LLM/<name>/`, PEFT adapter
 * folders in `<data-dir>/models/LLM-adapters/<name>/`. One model is kept loaded (the last one asked for);
 * each request brings its own adapter stack, merged by weight into copies of the touched weights (engine
 * AdapterStacks), so requests with different stacks share the loaded base. Generation runs as a queue job,
 * one at a time with image generation and training.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AdapterStacks, type AdapterRef } from '../engine/llm/adapter-stack.ts';
import { isLlmModelFolder } from '../engine/llm/config.ts';
import { LlmGenerator } from '../engine/llm/generate.ts';
import { loadLlm } from '../engine/llm/load.ts';
import { LlmTokenizer } from '../engine/llm/tokenizer.ts';
import type { ServerContext } from './context.ts';
import { HttpError } from './errors.ts';

const NAME = /^[\w][\w.-]{0,199}$/;

async function subfolders(dir: string, keep: (path: string) => Promise<boolean>): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const out: string[] = [];
  for (const e of entries) if (e.isDirectory() && NAME.test(e.name) && (await keep(join(dir, e.name)))) out.push(e.name);
  return out.sort();
}

export class LlmService {
  readonly modelsDir: string;
  readonly adaptersDir: string;
  private loaded?: Promise<{ name: string; gen: LlmGenerator; stacks: AdapterStacks }>;
  private loadedName?: string;

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

  /** The loaded model, loading `name` in place of the previous one when it differs. */
  async model(name: unknown): Promise<{ gen: LlmGenerator; stacks: AdapterStacks }> {
    if (typeof name !== 'string' || !NAME.test(name)) throw new HttpError(422, 'model: the name of a folder in models/LLM (GET /v1/models)');
    if (!(await this.models()).includes(name)) throw new HttpError(404, `model '${name}' is not in ${this.modelsDir} (GET /v1/models lists them)`);
    if (this.loadedName !== name || !this.loaded) {
      this.loadedName = name;
      const dir = join(this.modelsDir, name);
      this.loaded = (async () => {
        const m = await loadLlm(dir);
        const gen = await LlmGenerator.create(m, await LlmTokenizer.load(dir), { device: (this.ctx.cmdFlags['device'] as 'cpu' | undefined) ?? 'cpu' });
        return { name, gen, stacks: new AdapterStacks(m.weights) };
      })();
      this.loaded.catch(() => {
        if (this.loadedName === name) this.loaded = this.loadedName = undefined;
      });
    }
    return this.loaded;
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

export function llmService(ctx: ServerContext): LlmService {
  let s = perServer.get(ctx);
  if (!s) perServer.set(ctx, (s = new LlmService(ctx)));
  return s;
}
