/**
 * Textual-inversion embeddings (Gal et al. 2022) as A1111 loads them (`modules/textual_inversion`): every
 * `.safetensors` file in the embeddings folder (subfolders too), named by its file stem. A file holds either
 * one tensor [vectors, width] (or [width]) under any key — A1111's and kohya's `emb_params`, diffusers'
 * `<token>` — or SDXL's pair `clip_l` [vectors, 768] + `clip_g` [vectors, 1280]. Its `shape` is the width
 * (768 + 1280 = 2048 for SDXL); only embeddings whose shape is the loaded model's text width are used, the
 * others are "skipped", as in A1111. A1111's own `.pt` files (`string_to_param`, `step`, `sd_checkpoint`, …)
 * and diffusers' `.bin` concepts are read by a restricted reader that interprets only their data
 * (engine/util/torch-pickle.ts) and never runs code from them; one it cannot read is reported with the
 * command that converts it to `.safetensors`.
 *
 * In a prompt an embedding is found by its name's token ids (A1111's `find_embedding_at_position`), longest
 * name first, and stands for `vectors` token positions (engine/text/chunker.ts).
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, extname, resolve } from 'node:path';
import { listFilesRecursive } from '../util/list-files.ts';
import { SafetensorsFile } from '../safetensors/index.ts';
import type { EmbeddingMatcher, PromptEmbedding } from '../text/chunker.ts';
import type { ClipTokenizer } from '../text/tokenizer.ts';
import { UserError } from '../util/errors.ts';
import { sha256File } from '../util/sha256-file.ts';
import { readTorchZip, type PickleValue, type TorchTensor } from '../util/torch-pickle.ts';

export interface TextualInversion extends PromptEmbedding {
  name: string;
  path: string;
  /** Token positions it fills. */
  vectors: number;
  /** Vector width: the text encoder width it was trained for (SDXL: both towers' widths summed). */
  shape: number;
  /** [vectors, shape] for one tower; SDXL files have `clipL` and `clipG` instead. */
  data?: Float32Array;
  clipL?: Float32Array;
  clipG?: Float32Array;
  /** A1111 reads these from pickled files only; a `.safetensors` file has none. */
  step: number | null;
  sdCheckpoint: string | null;
  sdCheckpointName: string | null;
  mtimeMs: number;
  size: number;
}

const PICKLES = new Set(['.pt', '.bin']);

/** Why a pickled embedding could not be read, with the one-line conversion. */
export function pickleHint(path: string, why: string): string {
  const out = path.slice(0, -extname(path).length) + '.safetensors';
  return (
    `${why}; pickles are only read as plain data (unpickling would run code from the file). Convert it once: ` +
    `python -c "import torch,safetensors.torch as st; d=torch.load('${path}',map_location='cpu',weights_only=True); ` +
    `p=d['string_to_param'] if 'string_to_param' in d else d; v=next(iter(p.values())); st.save_file({'emb_params': v.reshape(-1, v.shape[-1]).float().contiguous()}, '${out}')"`
  );
}

/** A1111's `.pt` (`string_to_param`) or a diffusers `.bin` concept, read as data only. */
export async function readPickledEmbedding(path: string): Promise<TextualInversion> {
  const st = await stat(path);
  const obj = readTorchZip(await readFile(path), path);
  if (!obj || typeof obj !== 'object' || Array.isArray(obj) || 'kind' in obj) throw new UserError(`${path}: not an embedding (expected a dict)`);
  const d = obj as Record<string, PickleValue>;
  const params = (d['string_to_param'] ?? d) as Record<string, PickleValue>;
  const tensors = Object.values(params).filter((v): v is TorchTensor => !!v && typeof v === 'object' && (v as TorchTensor).kind === 'tensor');
  if (tensors.length !== 1) throw new UserError(`${path}: an embedding file holds one tensor, this one has ${tensors.length}`);
  const t = tensors[0]!;
  const [vectors, width] = t.shape.length === 1 ? [1, t.shape[0]!] : t.shape.length === 2 ? [t.shape[0]!, t.shape[1]!] : [0, 0];
  if (!vectors || !width) throw new UserError(`${path}: embedding tensor is [${t.shape}], expected [vectors, width]`);
  const str = (v: PickleValue | undefined) => (typeof v === 'string' ? v : null);
  return {
    name: basename(path, extname(path)),
    path,
    vectors,
    shape: width,
    data: t.data,
    step: typeof d['step'] === 'number' ? d['step'] : null,
    sdCheckpoint: str(d['sd_checkpoint']),
    sdCheckpointName: str(d['sd_checkpoint_name']),
    mtimeMs: st.mtimeMs,
    size: st.size,
  };
}

/** Reads one `.safetensors` embedding file. */
export async function readEmbedding(path: string): Promise<TextualInversion> {
  const st = await stat(path);
  const f = await SafetensorsFile.open(path);
  try {
    const names = f.names();
    const name = basename(path, extname(path));
    const base = { name, path, step: null, sdCheckpoint: null, sdCheckpointName: null, mtimeMs: st.mtimeMs, size: st.size };
    if (f.has('clip_l') && f.has('clip_g')) {
      const l = f.info('clip_l').shape;
      const g = f.info('clip_g').shape;
      if (l.length !== 2 || g.length !== 2 || l[0] !== g[0]) throw new UserError(`${path}: SDXL embedding needs clip_l and clip_g of shape [vectors, width] with the same vectors, got [${l}] and [${g}]`);
      return { ...base, vectors: g[0]!, shape: l[1]! + g[1]!, clipL: await f.readFloat32('clip_l'), clipG: await f.readFloat32('clip_g') };
    }
    if (names.length !== 1) throw new UserError(`${path}: an embedding file holds one tensor (or clip_l + clip_g), this one has ${names.length}: ${names.slice(0, 5).join(', ')}`);
    const key = names[0]!;
    const s = f.info(key).shape;
    if (s.length !== 1 && s.length !== 2) throw new UserError(`${path}: tensor '${key}' is [${s}], expected [vectors, width]`);
    const [vectors, width] = s.length === 1 ? [1, s[0]!] : [s[0]!, s[1]!];
    if (vectors < 1 || width < 1) throw new UserError(`${path}: tensor '${key}' is empty`);
    return { ...base, vectors, shape: width, data: await f.readFloat32(key) };
  } finally {
    await f.close();
  }
}

export class EmbeddingLibrary {
  private all = new Map<string, TextualInversion>();
  private problems = new Map<string, string>();
  private hashes = new Map<string, { key: string; hash: string }>();
  /** The loaded model's text width (A1111's expected shape); -1 when no model is loaded (every embedding counts). */
  expectedShape = -1;
  /** Bumped by every refresh that changed something, so conditioning caches know. */
  version = 0;
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
  }

  /** Rescans the folder; files are re-read only when their mtime or size changed. Returns the problems found (file → message). */
  async refresh(): Promise<Map<string, string>> {
    const found = await listFilesRecursive(this.dir);
    const next = new Map<string, TextualInversion>();
    const problems = new Map<string, string>();
    const byPath = new Map([...this.all.values()].map((e) => [e.path, e]));
    for (const p of found) {
      const ext = extname(p).toLowerCase();
      const pickled = PICKLES.has(ext);
      if (!pickled && ext !== '.safetensors') continue;
      const st = await stat(p).catch(() => undefined);
      if (!st) continue;
      const old = byPath.get(p);
      try {
        const e = old && old.mtimeMs === st.mtimeMs && old.size === st.size ? old : pickled ? await readPickledEmbedding(p) : await readEmbedding(p);
        // A later file with the same stem replaces an earlier one, as A1111's registry does.
        next.set(e.name, e);
      } catch (err) {
        problems.set(p, pickled ? pickleHint(p, (err as Error).message) : (err as Error).message);
      }
    }
    const changed = next.size !== this.all.size || [...next].some(([k, v]) => this.all.get(k) !== v);
    this.all = next;
    this.problems = problems;
    if (changed) this.version++;
    return problems;
  }

  /** Files that could not be used, with why. */
  problemFiles(): Map<string, string> {
    return new Map(this.problems);
  }

  /** A1111's `word_embeddings` (usable with the loaded model) and `skipped_embeddings`. */
  split(): { loaded: TextualInversion[]; skipped: TextualInversion[] } {
    const loaded: TextualInversion[] = [];
    const skipped: TextualInversion[] = [];
    for (const e of this.all.values()) (this.expectedShape === -1 || e.shape === this.expectedShape ? loaded : skipped).push(e);
    return { loaded, skipped };
  }

  /** The prompt matcher over the usable embeddings, for this tokenizer. */
  matcher(tokenizer: ClipTokenizer): EmbeddingMatcher {
    const byFirst = new Map<number, { ids: number[]; emb: TextualInversion }[]>();
    for (const emb of this.split().loaded) {
      const ids = tokenizer.encode(emb.name);
      if (ids.length === 0) continue;
      const list = byFirst.get(ids[0]!) ?? [];
      list.push({ ids, emb });
      // Longest names first, so "style-v2" wins over "style".
      list.sort((a, b) => b.ids.length - a.ids.length);
      byFirst.set(ids[0]!, list);
    }
    return {
      version: `${this.version}:${this.expectedShape}`,
      at(tokens, pos) {
        for (const c of byFirst.get(tokens[pos]!) ?? []) {
          if (c.ids.every((id, i) => tokens[pos + i] === id)) return { embedding: c.emb, length: c.ids.length };
        }
        return null;
      },
    };
  }

  /** A1111's `Embedding.shorthash`: the first 10 hex digits of the file's sha256 (cached by mtime and size). */
  async shortHash(e: TextualInversion): Promise<string> {
    const key = `${e.mtimeMs}:${e.size}`;
    const hit = this.hashes.get(e.path);
    if (hit?.key === key) return hit.hash;
    const hash = (await sha256File(e.path)).slice(0, 10);
    this.hashes.set(e.path, { key, hash });
    return hash;
  }
}

/** The vectors an embedding gives one text tower of width `width`: its own, or SDXL's `clip_l` / `clip_g` for that tower. */
export function towerVectors(e: TextualInversion, width: number, tower?: 'clip_l' | 'clip_g'): Float32Array {
  const v = tower === 'clip_l' ? e.clipL : tower === 'clip_g' ? e.clipG : e.data;
  if (!v || v.length !== e.vectors * width) throw new UserError(`embedding ${e.name} (width ${e.shape}) has no ${tower ?? 'single-tower'} vectors for a text encoder of width ${width}`);
  return v;
}
