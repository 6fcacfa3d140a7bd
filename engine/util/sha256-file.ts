import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

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
