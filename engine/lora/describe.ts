/** A LoRA file summarised for `lora-scripts inspect` and the API: targets, kinds, ranks, alphas, metadata. */
import { loraFileHash } from './hash.ts';
import { loadLora } from './load.ts';
import type { LoraKind, LoraPart } from './types.ts';

export interface LoraDescription {
  path: string;
  format: 'kohya' | 'peft' | 'diffusers-legacy' | 'mixed';
  modules: number;
  /** Module count per part (unet, te, te2). */
  parts: Partial<Record<LoraPart, number>>;
  kinds: Partial<Record<LoraKind, number>>;
  dora: boolean;
  /** Distinct ranks and alphas (alpha null where the file stores none). */
  ranks: number[];
  alphas: (number | null)[];
  scales: number[];
  /** One line per module: kohya-style name, kind, rank, alpha, scale. */
  targets: { name: string; part: LoraPart; path: string; kind: LoraKind; rank: number | null; alpha: number | null; scale: number; shape: { down?: number[]; up?: number[] } }[];
  unknownKeys: string[];
  metadata: Record<string, string>;
  /** From `ss_base_model_version` / `ss_v2`, as A1111 classifies LoRAs. */
  sdVersion: 'SDXL' | 'SD2' | 'SD1' | 'Unknown';
  /** A1111's LoRA hash (`sshs_model_hash`, else sha256 of the tensor bytes) and its 12-digit short form. */
  hash: string;
  shortHash: string;
}

function sdVersionOf(md: Record<string, string>): LoraDescription['sdVersion'] {
  if ((md.ss_base_model_version ?? '').startsWith('sdxl_')) return 'SDXL';
  if (md.ss_v2 === 'True') return 'SD2';
  return Object.keys(md).length > 0 ? 'SD1' : 'Unknown';
}

const uniq = <T>(xs: T[]) => [...new Set(xs)].sort((a, b) => (a === null ? -1 : b === null ? 1 : (a as number) - (b as number)));

export async function describeLora(file: string): Promise<LoraDescription> {
  const l = await loadLora(file);
  const parts: LoraDescription['parts'] = {};
  const kinds: LoraDescription['kinds'] = {};
  for (const m of l.modules) {
    parts[m.part] = (parts[m.part] ?? 0) + 1;
    kinds[m.kind] = (kinds[m.kind] ?? 0) + 1;
  }
  const hash = await loraFileHash(l.path ?? file);
  return {
    path: l.path ?? file,
    hash,
    shortHash: hash.slice(0, 12),
    format: l.format,
    modules: l.modules.length,
    parts,
    kinds,
    dora: l.modules.some((m) => m.dora),
    ranks: uniq(l.modules.map((m) => m.rank).filter((r): r is number => r !== undefined)),
    alphas: uniq(l.modules.map((m) => m.alpha ?? null)),
    scales: uniq(l.modules.map((m) => m.scale)),
    targets: l.modules
      .map((m) => ({
        name: m.name,
        part: m.part,
        path: m.path,
        kind: m.kind,
        rank: m.rank ?? null,
        alpha: m.alpha ?? null,
        scale: m.scale,
        shape: { down: m.tensors.down?.shape, up: m.tensors.up?.shape },
      }))
      .sort((a, b) => (a.name < b.name ? -1 : 1)),
    unknownKeys: l.unknownKeys,
    metadata: l.metadata,
    sdVersion: sdVersionOf(l.metadata),
  };
}
