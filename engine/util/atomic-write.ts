import { open, rename, unlink, mkdir } from 'node:fs/promises';
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
