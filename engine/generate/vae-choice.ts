/**
 * A1111's `sd_vae` choice, one rule for the server's option and `lora-scripts generate --vae`: `None` keeps the
 * checkpoint's own VAE, `Automatic` takes `<checkpoint stem>.vae.safetensors` from the VAE folder when there is
 * one, and any other value names a file of the VAE folder (by its path there or its file name).
 */
import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { UserError } from '../util/errors.ts';
import { listFilesRecursive } from '../util/list-files.ts';
import { nameInFolder } from './identity.ts';

export interface VaeFile {
  /** Path inside the VAE folder, `/`-separated. */
  name: string;
  path: string;
}

export interface VaeChoice {
  vae: VaeFile | null;
  /** Set when `sd_vae` named a file the folder does not hold (A1111 then keeps the checkpoint's own). */
  missing?: string;
}

/** The `.safetensors` VAEs below `dir`, named by their path inside it. */
export async function listVaes(dir: string): Promise<VaeFile[]> {
  const files = await listFilesRecursive(dir, new Set(['.safetensors']));
  return files.map((path) => ({ name: nameInFolder(dir, path), path }));
}

export function findVae(vaes: readonly VaeFile[], name: string): VaeFile | null {
  return vaes.find((v) => v.name === name || basename(v.name) === name) ?? null;
}

export function chooseVae(checkpointName: string, sdVae: unknown, vaes: readonly VaeFile[]): VaeChoice {
  const v = typeof sdVae === 'string' ? sdVae : 'Automatic';
  if (v === 'None') return { vae: null };
  if (v === 'Automatic') {
    const stem = basename(checkpointName).replace(/\.safetensors$/i, '');
    return { vae: findVae(vaes, `${stem}.vae.safetensors`) };
  }
  const found = findVae(vaes, v);
  return found ? { vae: found } : { vae: null, missing: v };
}

/**
 * `lora-scripts generate --vae`: a path to a VAE file, or what `sd_vae` takes (`None`, `Automatic`, a file of
 * `vaeDir`). A name the folder lacks is an error here, where the server only notes it: the user typed it.
 */
export async function vaeFromArgument(value: string, vaeDir: string, checkpointName: string): Promise<VaeFile | null> {
  const st = await stat(value).catch(() => null);
  if (st?.isFile()) {
    const path = resolve(value);
    return { name: nameInFolder(resolve(vaeDir), path), path };
  }
  const vaes = await listVaes(vaeDir);
  const choice = chooseVae(checkpointName, value, vaes);
  if (choice.missing) {
    const known = vaes.map((v) => v.name);
    throw new UserError(`--vae: '${value}' is neither a file nor a VAE in ${vaeDir}${known.length ? ` (there: ${known.slice(0, 8).join(', ')})` : ' (none there)'}; None keeps the checkpoint's own`);
  }
  return choice.vae;
}
