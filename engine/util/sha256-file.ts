import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';

/** sha256 (hex) of a file from byte `start` on, streamed in 1 MiB pieces (checkpoints are gigabytes). */
export async function sha256File(path: string, start = 0): Promise<string> {
  const h = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    createReadStream(path, { start, highWaterMark: 1 << 20 })
      .on('data', (c) => h.update(c))
      .on('end', () => resolve())
      .on('error', reject);
  });
  return h.digest('hex');
}

/** Where A1111's legacy hash reads: the 64 KiB at 1 MiB into the file (checkpoints' `model_hash`, kohya's `sshs_legacy_hash`). */
export const LEGACY_HASH_WINDOW = { offset: 0x100000, length: 0x10000 } as const;

/** A1111's legacy 8-hex hash of a file: sha256 of the bytes in LEGACY_HASH_WINDOW (fewer where the file is shorter). */
export async function legacyHash(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(LEGACY_HASH_WINDOW.length);
    const { bytesRead } = await fh.read(buf, 0, buf.length, LEGACY_HASH_WINDOW.offset);
    return createHash('sha256').update(buf.subarray(0, bytesRead)).digest('hex').slice(0, 8);
  } finally {
    await fh.close();
  }
}
