/** Process memory as the kernel counts it (Linux /proc/self/status), in GiB; elsewhere Node's own RSS. */
import { readFileSync } from 'node:fs';

function statusGiB(field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Math.round((Number(m[1]) / 2 ** 20) * 100) / 100;
  } catch {
    /* not Linux */
  }
  return undefined;
}

/** Peak resident set size of this process so far (VmHWM). */
export function peakRssGiB(): number {
  return statusGiB('VmHWM') ?? Math.round((process.memoryUsage().rss / 2 ** 30) * 100) / 100;
}

/** Resident set size now (VmRSS). */
export function rssGiB(): number {
  return statusGiB('VmRSS') ?? Math.round((process.memoryUsage().rss / 2 ** 30) * 100) / 100;
}
