import { open, rename, unlink, mkdir, readdir, lstat, rm } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Writes a file so that readers see either the old content or the new one, never a torn mix:
 * write a temporary file beside the target, fsync it, rename it over the target, fsync the folder.
 * A run killed half-way leaves at most a `.tmp-*` file behind, never a corrupt target.
 */
export async function writeFileAtomic(
  path: string,
  write: (fd: import('node:fs/promises').FileHandle) => Promise<void>,
): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fh = await open(tmp, 'w');
  try {
    await write(fh);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
  // The rename is durable only once the folder entry is on disk; some filesystems refuse fsync on a folder.
  const dh = await open(dir, 'r').catch(() => undefined);
  if (dh) {
    await dh.sync().catch(() => {});
    await dh.close();
  }
}

/** Atomic write of a whole buffer or string. */
export async function writeBufferAtomic(path: string, data: Uint8Array | string): Promise<void> {
  await writeFileAtomic(path, async (fh) => {
    await fh.writeFile(data);
  });
}

/** `.<name>.tmp-<pid>[-<hex>][-old]`: what writeFileAtomic and the trainer's state folders leave when killed. */
const TEMP_NAME = /^\..+\.tmp-(\d+)(?:-[0-9a-f]+)?(?:-old)?$/;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the temporary files and folders killed writers left under `root` (up to `depth` folders down,
 * links not followed): those whose process is gone, and any older than `maxAgeMs` (a pid may be reused).
 * Returns the paths removed.
 */
export async function sweepStaleTemps(root: string, opts: { depth?: number; maxAgeMs?: number } = {}): Promise<string[]> {
  const maxAge = opts.maxAgeMs ?? 60 * 60 * 1000;
  const removed: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const path = join(dir, e.name);
      const m = TEMP_NAME.exec(e.name);
      if (m) {
        const pid = Number(m[1]);
        const st = await lstat(path).catch(() => null);
        if (!st || pid === process.pid) continue;
        if (!processAlive(pid) || Date.now() - st.mtimeMs > maxAge) {
          await rm(path, { recursive: true, force: true });
          removed.push(path);
        }
      } else if (e.isDirectory() && depth > 0) {
        await walk(path, depth - 1);
      }
    }
  };
  await walk(root, opts.depth ?? 3);
  return removed;
}
