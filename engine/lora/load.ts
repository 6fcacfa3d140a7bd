/** Reads a LoRA file (or a diffusers / PEFT folder holding one) into a `ParsedLora`. */
import { stat, readFile } from 'node:fs/promises';
import { join, extname } from 'node:path';
import { SafetensorsFile } from '../safetensors/index.ts';
import { UserError } from '../util/errors.ts';
import { parseLoraTensors } from './parse.ts';
import type { F32Tensor, ParsedLora } from './types.ts';

const FOLDER_FILES = ['pytorch_lora_weights.safetensors', 'adapter_model.safetensors'];

/** A folder is resolved to the weights file diffusers or PEFT would write in it. */
export async function loraFileOf(path: string): Promise<string> {
  const st = await stat(path).catch((e) => {
    throw new UserError(`${path}: no such LoRA file or folder`, { cause: e });
  });
  if (!st.isDirectory()) return path;
  for (const f of FOLDER_FILES) {
    const p = join(path, f);
    if (await stat(p).then((s) => s.isFile(), () => false)) return p;
  }
  throw new UserError(`${path}: folder holds none of ${FOLDER_FILES.join(', ')}`);
}

/**
 * PEFT's adapter_config.json (beside adapter_model.safetensors) gives r / lora_alpha for a file whose
 * header has no lora_adapter_metadata; it is folded into the same metadata form diffusers writes.
 */
async function adapterConfigMetadata(file: string, metadata: Record<string, string>): Promise<Record<string, string>> {
  if (metadata.lora_adapter_metadata !== undefined) return metadata;
  const cfgPath = join(file, '..', 'adapter_config.json');
  const raw = await readFile(cfgPath, 'utf8').catch(() => undefined);
  if (raw === undefined) return metadata;
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(raw);
  } catch (e) {
    throw new UserError(`${cfgPath}: not valid JSON`, { cause: e });
  }
  const flat: Record<string, unknown> = {};
  for (const comp of ['unet', 'text_encoder', 'text_encoder_2']) for (const [k, v] of Object.entries(cfg)) flat[`${comp}.${k}`] = v;
  return { ...metadata, lora_adapter_metadata: JSON.stringify(flat) };
}

export async function loadLora(path: string): Promise<ParsedLora> {
  const file = await loraFileOf(path);
  const ext = extname(file).toLowerCase();
  if (ext === '.pt' || ext === '.ckpt' || ext === '.bin') {
    throw new UserError(`${file}: pickled LoRA files are not supported; convert it to .safetensors first`);
  }
  const st = await SafetensorsFile.open(file);
  try {
    const tensors = new Map<string, F32Tensor>();
    for (const [name, info] of st.tensors) {
      tensors.set(name, { shape: [...info.shape], data: await st.readFloat32(name) });
    }
    const metadata = await adapterConfigMetadata(file, st.metadata);
    const parsed = parseLoraTensors(tensors, metadata, file);
    return { ...parsed, path: file, metadata: st.metadata };
  } finally {
    await st.close();
  }
}
