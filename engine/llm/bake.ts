/**
 * `lora-scripts merge` for a causal LM: a new model folder with the weighted adapter stack baked into the
 * base weights. Shards keep their names and layout; each patched tensor is written in its source dtype and
 * every other tensor is copied byte for byte; config, tokenizer and other files are copied as they are.
 */
import { copyFile, mkdir, readdir, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { encode } from '../lora/bake.ts';
import type { WeightMap } from '../lora/types.ts';
import { SafetensorsFile, writeSafetensorsStreaming } from '../safetensors/index.ts';
import { UserError } from '../util/errors.ts';
import { readLlmConfig } from './config.ts';
import { loadPeftAdapter, mergeAdapters, type AdapterStackItem } from './peft.ts';
import { modelShards } from './weights.ts';

export interface LlmBakeResult {
  output: string;
  patched: number;
  tensors: number;
}

export async function bakeLlmAdapters(model: string, output: string, stack: readonly { path: string; weight: number }[]): Promise<LlmBakeResult> {
  if (resolve(output) === resolve(model)) throw new UserError(`output ${output} is the input model folder; choose another folder`);
  if ((await stat(output).catch(() => undefined))?.isFile()) throw new UserError(`output ${output} is a file; a merged LLM is a folder`);
  await readLlmConfig(model);
  const items: AdapterStackItem[] = [];
  for (const s of stack) items.push({ adapter: await loadPeftAdapter(s.path), weight: s.weight });
  const shards = await modelShards(model);
  await mkdir(output, { recursive: true });
  let patched = 0;
  let tensors = 0;
  for (const shard of shards) {
    const f = await SafetensorsFile.open(shard);
    try {
      const touched: WeightMap = new Map();
      for (const { adapter } of items)
        for (const m of adapter.modules) {
          const key = `${m.module}.weight`;
          if (f.has(key) && !touched.has(key)) touched.set(key, { shape: [...f.info(key).shape], data: await f.readFloat32(key) });
        }
      await mergeAdapters(touched, items.map((it) => ({ ...it, adapter: { ...it.adapter, modules: it.adapter.modules.filter((m) => touched.has(`${m.module}.weight`)) } })));
      const entries = f.names().map((name) => ({ name, dtype: f.info(name).dtype, shape: [...f.info(name).shape] }));
      await writeSafetensorsStreaming(
        join(output, basename(shard)),
        entries,
        async (name) => (touched.has(name) ? encode(touched.get(name)!.data, f.info(name).dtype) : f.readBytes(name)),
        f.metadata,
      );
      patched += touched.size;
      tensors += entries.length;
    } finally {
      await f.close();
    }
  }
  const wanted = items.reduce((n, it) => n + it.adapter.modules.length, 0);
  if (patched < new Set(items.flatMap((it) => it.adapter.modules.map((m) => m.module))).size) {
    throw new UserError(`merge: only ${patched} of the adapters' ${wanted} modules are in ${model}`);
  }
  const shardNames = new Set(shards.map((s) => basename(s)));
  for (const e of await readdir(model, { withFileTypes: true })) {
    if (e.isFile() && !shardNames.has(e.name)) await copyFile(join(model, e.name), join(output, e.name));
  }
  return { output, patched, tensors };
}
