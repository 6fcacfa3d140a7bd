/**
 * LoRA name → file, as A1111's Lora extension resolves `<lora:NAME:…>`: every .safetensors under the LoRA
 * folder (subfolders included) is known by its file stem and by its `ss_output_name` alias; aliases claimed
 * by two files, and "none", can only be reached by stem. A name that is a relative path is looked up
 * inside the folder and refused if it would leave it. Unknown names are an error listing the closest names.
 */
import { realpath, stat } from 'node:fs/promises';
import { basename, extname, isAbsolute, relative, resolve, sep } from 'node:path';
import { listFilesRecursive } from '../util/list-files.ts';
import { readHeaderOnly } from '../safetensors/index.ts';
import { UserError } from '../util/errors.ts';

export interface LoraEntry {
  /** File stem (A1111 `name`). */
  name: string;
  /** `ss_output_name` if present, else the stem (A1111 `alias`). */
  alias: string;
  /** Absolute path. */
  path: string;
  metadata: Record<string, string>;
  mtimeMs: number;
  size: number;
}

// A1111 lists pickled LoRAs too; only their loading is refused (engine/lora/load.ts says why).
const EXTENSIONS = new Set(['.safetensors', '.pt', '.ckpt']);
// A1111 lower-cases the names it tests against this set, so 'Addams' in its source can never match; kept as written.
const ALWAYS_FORBIDDEN = ['none', 'Addams'];

/** Levenshtein distance, for "did you mean" suggestions. */
function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

/** Up to `n` names closest to `name` (case-insensitive; substrings count as close). */
export function closestNames(name: string, candidates: Iterable<string>, n = 5): string[] {
  const q = name.toLowerCase();
  const scored = [...new Set(candidates)].map((c) => {
    const l = c.toLowerCase();
    const d = l.includes(q) || q.includes(l) ? Math.abs(l.length - q.length) * 0.1 : distance(q, l);
    return { c, d };
  });
  const limit = Math.max(3, Math.ceil(q.length / 2));
  return scored.filter((s) => s.d <= limit).sort((a, b) => a.d - b.d || a.c.localeCompare(b.c)).slice(0, n).map((s) => s.c);
}

export class LoraLibrary {
  private entries = new Map<string, LoraEntry>();
  private byStem = new Map<string, LoraEntry>();
  private byAlias = new Map<string, LoraEntry>();
  private forbidden = new Set<string>(ALWAYS_FORBIDDEN);
  private scanned = false;
  /** The LoRA folders, in scan order (A1111: --lora-dir, then the LyCORIS back-compat folder). */
  readonly roots: string[];

  constructor(root: string | string[]) {
    this.roots = (Array.isArray(root) ? root : [root]).map((r) => resolve(r));
  }

  get root(): string {
    return this.roots[0]!;
  }

  /** Rescans the folder; headers are re-read only for files whose mtime or size changed. */
  async refresh(): Promise<LoraEntry[]> {
    const found: string[] = [];
    for (const r of this.roots) found.push(...(await listFilesRecursive(r, EXTENSIONS)));
    const next = new Map<string, LoraEntry>();
    for (const p of found) {
      const st = await stat(p).catch(() => undefined);
      if (!st) continue;
      const old = this.entries.get(p);
      if (old && old.mtimeMs === st.mtimeMs && old.size === st.size) {
        next.set(p, old);
        continue;
      }
      // A broken file still shows up by its stem; loading it later reports what is wrong with it. Pickles are never opened.
      const metadata: Record<string, string> = extname(p).toLowerCase() !== '.safetensors' ? {} : await readHeaderOnly(p).then((h) => h.metadata, () => ({}) as Record<string, string>);
      const name = basename(p, extname(p));
      next.set(p, { name, alias: metadata.ss_output_name || name, path: p, metadata, mtimeMs: st.mtimeMs, size: st.size });
    }
    this.entries = next;
    this.byStem = new Map();
    this.byAlias = new Map();
    this.forbidden = new Set(ALWAYS_FORBIDDEN);
    // A1111's order of operations: an alias already taken (by any file's stem or alias) becomes forbidden,
    // then the stem and the alias are (re)bound; later files win.
    for (const e of next.values()) {
      this.byStem.set(e.name, e);
      if (this.byAlias.has(e.alias)) this.forbidden.add(e.alias.toLowerCase());
      this.byAlias.set(e.name, e);
      this.byAlias.set(e.alias, e);
    }
    this.scanned = true;
    return this.list();
  }

  list(): LoraEntry[] {
    return [...this.entries.values()];
  }

  /** One entry per stem, a later file replacing an earlier one in its place (A1111's table of networks). */
  listByStem(): LoraEntry[] {
    return [...this.byStem.values()];
  }

  private lookup(name: string): LoraEntry | undefined {
    if (this.forbidden.has(name.toLowerCase())) return this.byStem.get(name);
    return this.byAlias.get(name);
  }

  /**
   * The file for a stem or alias in the last scan, without touching the disk (A1111's lookup; path-like
   * names go through `resolve`). For callers that must answer at once, such as HTTP routes.
   */
  find(name: string): LoraEntry | undefined {
    return this.lookup(name);
  }

  /** Path-like names ("style/foo" or "style/foo.safetensors") must stay inside the LoRA folder. */
  private async lookupPath(name: string): Promise<LoraEntry | undefined> {
    if (isAbsolute(name) || /^[a-zA-Z]:/.test(name)) throw new UserError(`LoRA name '${name}' is a path outside the LoRA folder; refused`, { status: 400 });
    const candidates = EXTENSIONS.has(extname(name).toLowerCase()) ? [name] : [...EXTENSIONS].map((x) => name + x);
    for (const root of this.roots) {
      for (const c of candidates) {
        const p = resolve(root, c);
        const rel = relative(root, p);
        if (rel.startsWith('..') || isAbsolute(rel)) throw new UserError(`LoRA name '${name}' leaves the LoRA folder; refused`, { status: 400 });
        const real = await realpath(p).catch(() => undefined);
        if (!real) continue;
        const realRoot = await realpath(root);
        if (real !== realRoot && !real.startsWith(realRoot + sep)) throw new UserError(`LoRA name '${name}' leads outside the LoRA folder; refused`, { status: 400 });
        return this.entries.get(p) ?? (await this.refresh(), this.entries.get(p));
      }
    }
    return undefined;
  }

  /** The file for a prompt name; rescans once on a miss (a LoRA added while running is found). */
  async resolve(name: string): Promise<LoraEntry> {
    if (!this.scanned) await this.refresh();
    const pathLike = name.includes('/') || name.includes('\\') || name.startsWith('.');
    const find = () => (pathLike ? this.lookupPath(name.replaceAll('\\', '/')) : Promise.resolve(this.lookup(name)));
    let hit = await find();
    if (!hit) {
      await this.refresh();
      hit = await find();
    }
    if (hit) return hit;
    const names = [...this.byAlias.keys()];
    const close = closestNames(name, names);
    throw new UserError(
      `LoRA '${name}' not found in ${this.roots.join(', ')}` + (close.length ? `; closest names: ${close.join(', ')}` : names.length ? '' : ' (the folder has no LoRAs)'),
      { status: 404 },
    );
  }
}
