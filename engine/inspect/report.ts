/** Builds the `inspect` report of a safetensors file and renders it as text or JSON-ready data. */
import { basename } from 'node:path';
import { SafetensorsFile, type DType } from '../safetensors/index.ts';
import { classify, type Classification } from './classify.ts';
import type { Count } from './lora-summary.ts';

export interface TensorRow {
  name: string;
  dtype: DType;
  shape: number[];
}

export interface PrefixGroup {
  prefix: string;
  tensors: number;
  parameters: number;
}

export interface InspectReport extends Classification {
  file: string;
  bytes: number;
  tensorCount: number;
  parameters: number;
  dtypes: Record<string, number>;
  metadata: Record<string, string>;
  tensors: TensorRow[];
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

export async function inspectFile(path: string): Promise<InspectReport> {
  const f = await SafetensorsFile.open(path);
  try {
    const c = await classify(f);
    const tensors = [...f.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] }));
    const dtypes: Record<string, number> = {};
    let bytes = 0;
    for (const t of f.tensors.values()) {
      dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
      bytes += t.byteLength;
    }
    return {
      file: path,
      ...c,
      bytes,
      tensorCount: tensors.length,
      parameters: tensors.reduce((s, t) => s + numel(t.shape), 0),
      dtypes,
      metadata: f.metadata,
      tensors,
    };
  } finally {
    await f.close();
  }
}

/**
 * Groups names by their first segments (split at "." and "_"), as deep as possible while staying at
 * most `maxGroups` groups, so a 1000-tensor checkpoint prints as a readable outline.
 */
export function groupByPrefix(tensors: TensorRow[], maxGroups = 30): PrefixGroup[] {
  const prefixAt = (name: string, depth: number) => {
    let seen = 0;
    for (let i = 0; i < name.length; i++) {
      if (name[i] === '.' || name[i] === '_') {
        if (++seen === depth) return name.slice(0, i);
      }
    }
    return name;
  };
  const build = (depth: number) => {
    const m = new Map<string, PrefixGroup>();
    for (const t of tensors) {
      const p = prefixAt(t.name, depth);
      const g = m.get(p) ?? { prefix: p, tensors: 0, parameters: 0 };
      g.tensors++;
      g.parameters += numel(t.shape);
      m.set(p, g);
    }
    return [...m.values()];
  };
  let best = build(1);
  for (let depth = 2; depth <= 12; depth++) {
    const g = build(depth);
    if (g.length > maxGroups) break;
    best = g;
  }
  return best;
}

const fmtInt = (n: number) => n.toLocaleString('en-US');
function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
const fmtNum = (x: number | null) => (x === null ? 'none' : String(Math.round(x * 1e6) / 1e6));
function fmtCounts<T extends number | null>(cs: Count<T>[]): string {
  if (cs.length === 1) return fmtNum(cs[0]!.value);
  return cs.map((c) => `${fmtNum(c.value)} (×${c.count})`).join(', ');
}

const LIST_LIMIT = 60;

export function renderText(r: InspectReport, opts: { all?: boolean } = {}): string {
  const lines: string[] = [];
  lines.push(`${basename(r.file)}: ${r.label}`);
  for (const d of r.details) lines.push(`  ${d}`);
  const dt = Object.entries(r.dtypes).map(([k, v]) => `${k} ×${v}`).join(', ');
  lines.push(`  ${fmtInt(r.tensorCount)} tensors, ${fmtInt(r.parameters)} parameters, ${fmtBytes(r.bytes)} of data${dt ? ` (${dt})` : ''}`);
  if (r.lora) {
    const l = r.lora;
    const parts = Object.entries(l.parts).map(([k, v]) => `${k} ${v}`).join(', ');
    lines.push(`  LoRA: ${l.targets} targets (${parts}); type ${l.algorithms.join(', ')}`);
    lines.push(`  rank ${l.ranks.length ? fmtCounts(l.ranks) : 'n/a'}; alpha ${fmtCounts(l.alphas)}; scale ${l.scales.length ? fmtCounts(l.scales) : 'n/a'}`);
    lines.push(`  alpha from: ${l.alphaSource}`);
  }
  const md = Object.entries(r.metadata);
  lines.push(md.length ? 'metadata:' : 'metadata: (none)');
  for (const [k, v] of md) {
    const one = v.replace(/\s+/g, ' ');
    lines.push(`  ${k}: ${one.length > 160 ? `${one.slice(0, 160)}… (${v.length} chars; --json shows all)` : one}`);
  }
  if (opts.all || r.tensorCount <= LIST_LIMIT) {
    lines.push('tensors:');
    for (const t of r.tensors) lines.push(`  ${t.name}  ${t.dtype}  [${t.shape.join(', ')}]`);
  } else {
    const groups = groupByPrefix(r.tensors);
    lines.push(`tensors by prefix (${groups.length} groups; --all lists every tensor):`);
    const w = Math.max(...groups.map((g) => g.prefix.length));
    for (const g of groups) lines.push(`  ${g.prefix.padEnd(w)}  ${String(g.tensors).padStart(6)} tensors  ${fmtInt(g.parameters).padStart(14)} params`);
  }
  return lines.join('\n');
}
