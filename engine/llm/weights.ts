/**
 * A Hugging Face model folder's weights: `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` (`weight_map`: tensor name → shard file). Every tensor is converted to
 * float32 on load (bf16/f16 checkpoints included), keyed by its transformers name (`model.layers.0.…`).
 */
import { readFile, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { readHeaderOnly, SafetensorsFile } from '../safetensors/index.ts';
import type { WeightMap } from '../lora/types.ts';
import { UserError } from '../util/errors.ts';

const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/** The shard files of a model folder, in index order (one file when not sharded). */
export async function modelShards(dir: string): Promise<string[]> {
  const index = join(dir, INDEX);
  if (await exists(index)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(index, 'utf8'));
    } catch (e) {
      throw new UserError(`${index} is not valid JSON: ${(e as Error).message}`);
    }
    const map = (parsed as { weight_map?: unknown } | null)?.weight_map;
    if (!map || typeof map !== 'object') throw new UserError(`${index} has no 'weight_map' object`);
    const files = [...new Set(Object.values(map as Record<string, unknown>))];
    const root = resolve(dir);
    return files.map((f) => {
      if (typeof f !== 'string' || !f.endsWith('.safetensors')) throw new UserError(`${index}: weight_map entry ${JSON.stringify(f)} is not a .safetensors file name`);
      const p = resolve(root, f);
      if (!p.startsWith(root + sep)) throw new UserError(`${index}: shard ${JSON.stringify(f)} points outside the model folder`);
      return p;
    });
  }
  if (await exists(join(dir, SINGLE))) return [join(dir, SINGLE)];
  throw new UserError(`model folder ${dir} has neither ${SINGLE} nor ${INDEX}`);
}

/** Every tensor of the model folder as float32. */
export async function loadModelWeights(dir: string): Promise<WeightMap> {
  const weights: WeightMap = new Map();
  for (const shard of await modelShards(dir)) {
    if (!(await exists(shard))) throw new UserError(`model shard ${shard} (listed in ${INDEX}) is missing`);
    const f = await SafetensorsFile.open(shard);
    try {
      for (const name of f.names()) {
        if (weights.has(name)) throw new UserError(`${shard}: tensor '${name}' is also in another shard`);
        weights.set(name, { shape: [...f.info(name).shape], data: await f.readFloat32(name) });
      }
    } finally {
      await f.close();
    }
  }
  return weights;
}

/** Tensor shapes of a model folder, from the shard headers only. */
export async function modelShapes(dir: string): Promise<Map<string, { shape: number[] }>> {
  const out = new Map<string, { shape: number[] }>();
  for (const shard of await modelShards(dir)) for (const t of (await readHeaderOnly(shard)).tensors) out.set(t.name, { shape: [...t.shape] });
  return out;
}
