import { readdir, readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface OpTime {
  op: string;
  /** Total kernel time over the profiled runs, milliseconds. */
  ms: number;
  calls: number;
}

/**
 * Reads the newest ORT profile written under `prefix` (SessionOptions.profile, after
 * CompiledGraph.endProfiling()) and totals kernel time per ONNX op type, largest first.
 */
export async function summarizeProfile(prefix: string): Promise<OpTime[]> {
  const dir = dirname(prefix);
  const stem = basename(prefix);
  const files = (await readdir(dir)).filter((f) => f.startsWith(stem) && f.endsWith('.json')).sort();
  const newest = files[files.length - 1];
  if (!newest) throw new Error(`no ORT profile found for prefix ${prefix}`);
  const events = JSON.parse(await readFile(join(dir, newest), 'utf8')) as { cat?: string; name?: string; dur?: number; args?: { op_name?: string } }[];
  const byOp = new Map<string, OpTime>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.args?.op_name) continue;
    const t = byOp.get(e.args.op_name) ?? { op: e.args.op_name, ms: 0, calls: 0 };
    t.ms += (e.dur ?? 0) / 1000;
    t.calls++;
    byOp.set(t.op, t);
  }
  return [...byOp.values()].sort((a, b) => b.ms - a.ms);
}
