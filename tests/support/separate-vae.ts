import { dirname } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { SafetensorsFile, writeSafetensors } from '../../engine/safetensors/index.ts';

/**
 * A checkpoint's own VAE written as a separate file (bare LDM keys, as VAE downloads come), with the decoder's
 * output bias shifted by `shift` so pictures decoded through it differ visibly from the checkpoint's own.
 */
export async function writeShiftedVae(checkpoint: string, path: string, shift = 0.5): Promise<void> {
  const src = await SafetensorsFile.open(checkpoint);
  const vae = new Map<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>();
  try {
    for (const name of src.names().filter((n) => n.startsWith('first_stage_model.'))) {
      const data = await src.readFloat32(name);
      if (name === 'first_stage_model.decoder.conv_out.bias') for (let i = 0; i < data.length; i++) data[i] = data[i]! + shift;
      vae.set(name.slice('first_stage_model.'.length), { dtype: 'F32', shape: src.info(name).shape, data });
    }
  } finally {
    await src.close();
  }
  await mkdir(dirname(path), { recursive: true });
  await writeSafetensors(path, vae);
}
