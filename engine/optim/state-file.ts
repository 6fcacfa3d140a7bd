import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../safetensors/index.ts';
import { UserError } from '../util/errors.ts';
import type { OptimizerState } from './optimizer.ts';

/** `__metadata__` key holding the JSON header. */
export const STATE_METADATA_KEY = 'lora_scripts.optimizer_state';

/** Writes the state atomically as float32 safetensors (flat tensors), header as JSON in `__metadata__`. */
export async function saveOptimizerState(path: string, state: OptimizerState): Promise<void> {
  const tensors = new Map<string, TensorToWrite>();
  for (const [k, v] of state.tensors) tensors.set(k, { dtype: 'F32', shape: [v.length], data: v });
  await writeSafetensors(path, tensors, { [STATE_METADATA_KEY]: JSON.stringify(state.header) });
}

export async function loadOptimizerState(path: string): Promise<OptimizerState> {
  const f = await SafetensorsFile.open(path);
  try {
    const raw = f.metadata[STATE_METADATA_KEY];
    if (raw === undefined) throw new UserError(`${path}: not an optimizer state file (no ${STATE_METADATA_KEY} in __metadata__)`);
    let header: OptimizerState['header'];
    try {
      header = JSON.parse(raw) as OptimizerState['header'];
    } catch (e) {
      throw new UserError(`${path}: ${STATE_METADATA_KEY} is not valid JSON`, { cause: e });
    }
    const tensors = new Map<string, Float32Array>();
    for (const name of f.names()) {
      const info = f.info(name);
      // Only float32 keeps the state bit-exact; anything else was not written by saveOptimizerState.
      if (info.dtype !== 'F32') throw new UserError(`${path}: tensor "${name}" is ${info.dtype}, optimizer state must be F32`);
      tensors.set(name, await f.readFloat32(name));
    }
    return { header, tensors };
  } finally {
    await f.close();
  }
}
