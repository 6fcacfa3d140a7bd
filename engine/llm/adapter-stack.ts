/**
 * Adapter stacks for a loaded model: parsed adapter folders cached by path and modification time, and the
 * merged weights of recent stacks kept in a small LRU (a server sees the same stacks again and again).
 * The base weights are never changed, so every request can name its own stack.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { WeightMap } from '../lora/types.ts';
import { UserError } from '../util/errors.ts';
import { adapterWeights, loadPeftAdapter, type PeftAdapter } from './peft.ts';

export interface AdapterRef {
  path: string;
  weight: number;
}

export class AdapterStacks {
  private readonly parsed = new Map<string, { mtime: number; adapter: PeftAdapter }>();
  private readonly merged = new Map<string, Map<string, Float32Array>>();

  constructor(
    private readonly base: WeightMap,
    /** Merged stacks kept; each holds a copy of every weight its adapters touch. */
    private readonly keep = 4,
  ) {}

  private async adapter(path: string): Promise<PeftAdapter> {
    const abs = resolve(path);
    const st = await stat(abs).catch(() => {
      throw new UserError(`adapter ${path} does not exist`);
    });
    const hit = this.parsed.get(abs);
    if (hit && hit.mtime === st.mtimeMs) return hit.adapter;
    const adapter = await loadPeftAdapter(abs);
    this.parsed.set(abs, { mtime: st.mtimeMs, adapter });
    return adapter;
  }

  /** Replacement weight buffers for the stack; undefined for the bare base model. */
  async weights(stack: readonly AdapterRef[]): Promise<Map<string, Float32Array> | undefined> {
    const active = stack.filter((s) => s.weight !== 0);
    for (const s of active) if (!Number.isFinite(s.weight)) throw new UserError(`adapter ${s.path}: weight must be a number, got ${s.weight}`);
    if (!active.length) return undefined;
    const items = await Promise.all(active.map(async (s) => ({ adapter: await this.adapter(s.path), weight: s.weight })));
    const key = JSON.stringify(items.map((i) => [i.adapter.path, this.parsed.get(i.adapter.path)?.mtime, i.weight]));
    let w = this.merged.get(key);
    if (w) {
      this.merged.delete(key);
    } else {
      w = await adapterWeights(this.base, items);
      while (this.merged.size >= this.keep) this.merged.delete(this.merged.keys().next().value!);
    }
    this.merged.set(key, w);
    return w;
  }
}
