/** Model-folder scans: every file below a folder, subfolders included, in a stable order. */
import { readdir } from 'node:fs/promises';
import { extname, join } from 'node:path';

/**
 * Paths of the files below `dir` whose extension (lower case, with the dot) is in `extensions`, or of every
 * file when it is omitted; entries sorted by name at each level, as A1111 lists model folders. A folder that
 * is missing or unreadable contributes nothing: an empty model folder is not an error.
 */
export async function listFilesRecursive(dir: string, extensions?: ReadonlySet<string>): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const list = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of list.sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (!extensions || extensions.has(extname(e.name).toLowerCase())) found.push(p);
    }
  };
  await walk(dir);
  return found;
}
