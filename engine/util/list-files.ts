/**
 * Model-folder scans as A1111's `walk_files` does them: every file below a folder, subfolders and linked
 * folders included (users link shared model folders in), names in natural order ("2" before "10"), hidden
 * entries left out. One walk for checkpoints, VAEs, LoRAs, embeddings and upscalers.
 */
import { readdir, realpath, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';

/** Natural sort ("2" before "10"), as A1111 orders model files. */
export function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, undefined, { numeric: true, sensitivity: 'base' });
}

export interface ListOptions {
  /** A folder this says is one model (a diffusers folder) is listed itself instead of walked into. */
  isModelFolder?: (dir: string) => Promise<boolean>;
}

/**
 * Paths of the files below `dir` whose extension (lower case, with the dot) is in `extensions`, or of every
 * file when it is omitted. A folder that is missing or unreadable contributes nothing: an empty model folder
 * is not an error. A linked folder seen before (a link loop) is not walked again.
 */
export async function listFilesRecursive(dir: string, extensions?: ReadonlySet<string>, opts: ListOptions = {}): Promise<string[]> {
  const found: string[] = [];
  const seen = new Set<string>();
  const walk = async (d: string): Promise<void> => {
    const real = await realpath(d).catch(() => d);
    if (seen.has(real)) return;
    seen.add(real);
    const list = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of list.sort((a, b) => naturalCompare(a.name, b.name))) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      const st = e.isSymbolicLink() ? await stat(p).catch(() => null) : e;
      if (!st) continue;
      if (st.isDirectory()) {
        if (opts.isModelFolder && (await opts.isModelFolder(p))) found.push(p);
        else await walk(p);
      } else if (st.isFile() && (!extensions || extensions.has(extname(e.name).toLowerCase()))) found.push(p);
    }
  };
  await walk(dir);
  return found;
}
