/**
 * Captions from CLIP alone, the CLIP Interrogator's way: candidate phrases are ranked by the cosine similarity
 * of their text embedding with the image embedding.
 * - 'fast': the best phrase of each table (the subject first), then the best `maxFlavors` vocabulary tags.
 * - 'best': starts from the best subject and adds, one at a time, the candidate whose addition raises the
 *   similarity of the whole caption with the image most (best-first greedy), until nothing raises it or
 *   `maxFlavors` phrases were added. Each table gives at most one phrase; vocabulary tags any number.
 * Either way the caption stays within CLIP's 77-token window (start and end tokens included): a phrase that
 * would not fit is never added.
 */
import type { ClipModel } from '../clip/model.ts';
import { normalizeRows } from '../clip/model.ts';
import { UserError } from '../util/errors.ts';
import { BUILTIN_TABLES, DEFAULT_TABLES, TABLE_NAMES, type TableName } from './tables.ts';

export interface ClipCaptionOptions {
  mode: 'fast' | 'best';
  /** Built-in tables in caption order; 'artists' only when listed. */
  tables: readonly TableName[];
  /** More tables of alternatives (one phrase is chosen from each), by name. */
  userTables: Readonly<Record<string, readonly string[]>>;
  /** Candidate tags, any number of which may be chosen. */
  vocab: readonly string[];
  /** Most phrases added after the subject ('best'), or vocabulary tags taken ('fast'). */
  maxFlavors: number;
}

export const DEFAULT_CLIP_CAPTION: ClipCaptionOptions = { mode: 'fast', tables: DEFAULT_TABLES, userTables: {}, vocab: [], maxFlavors: 4 };

interface Table {
  name: string;
  phrases: string[];
  /** One phrase at most (tables of alternatives), or any number (vocabulary). */
  single: boolean;
}

/** Candidates per table that the greedy search considers ('best'); the rest rank too low to matter. */
const BEST_PER_TABLE = 6;
const BEST_VOCAB = 24;

export interface ClipCaption {
  caption: string;
  /** Cosine similarity of the whole caption with the image. */
  similarity: number;
}

export class ClipCaptioner {
  private readonly tables: Table[];
  /** Normalised text embeddings by text. */
  private readonly cache = new Map<string, Float32Array>();

  constructor(
    readonly model: ClipModel,
    readonly opts: ClipCaptionOptions = DEFAULT_CLIP_CAPTION,
  ) {
    for (const t of opts.tables) if (!TABLE_NAMES.includes(t)) throw new UserError(`tables: unknown table '${t}' (built-in: ${TABLE_NAMES.join(', ')})`);
    if (!(Number.isInteger(opts.maxFlavors) && opts.maxFlavors >= 0)) throw new UserError(`max_flavors must be a whole number ≥ 0, got ${opts.maxFlavors}`);
    const clean = (xs: readonly string[]) => [...new Set(xs.map((s) => s.trim()).filter(Boolean))];
    this.tables = [
      ...opts.tables.map((t) => ({ name: t, phrases: [...BUILTIN_TABLES[t]], single: true })),
      ...Object.entries(opts.userTables).map(([name, p]) => ({ name, phrases: clean(p), single: true })),
      ...(opts.vocab.length ? [{ name: 'vocab', phrases: clean(opts.vocab), single: false }] : []),
    ].filter((t) => t.phrases.length > 0);
    if (!this.tables.length) throw new UserError('CLIP captioning needs at least one table of phrases or a vocabulary');
  }

  private get dim(): number {
    return this.model.arch.projectionDim;
  }

  /** Embeds every text not embedded yet (in batches), then returns their embeddings. */
  private async embed(texts: readonly string[]): Promise<Float32Array[]> {
    const todo = [...new Set(texts.filter((t) => !this.cache.has(t)))];
    if (todo.length) {
      const e = normalizeRows(await this.model.textEmbeds(todo), this.dim);
      todo.forEach((t, i) => this.cache.set(t, e.slice(i * this.dim, (i + 1) * this.dim)));
    }
    return texts.map((t) => this.cache.get(t)!);
  }

  /** Embeds the tables once (the slow part on first use). */
  async prepare(): Promise<void> {
    await this.embed(this.tables.flatMap((t) => t.phrases));
  }

  private fits(text: string): boolean {
    return this.model.tokenizer.encode(text).length + 2 <= this.model.arch.text.maxPositions;
  }

  private dot(a: Float32Array, b: Float32Array): number {
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
    return s;
  }

  /** Phrases of a table, best first, with their similarity to the image. */
  private async rank(image: Float32Array, t: Table): Promise<{ phrase: string; score: number }[]> {
    const e = await this.embed(t.phrases);
    return t.phrases.map((phrase, i) => ({ phrase, score: this.dot(image, e[i]!) })).sort((a, b) => b.score - a.score);
  }

  /** Caption for an image embedding (projected, not yet normalised). */
  async captionEmbedding(imageEmbeds: Float32Array): Promise<ClipCaption> {
    const image = normalizeRows(imageEmbeds.slice(), this.dim);
    const ranked = await Promise.all(this.tables.map((t) => this.rank(image, t)));
    const head = ranked[0]![0]!.phrase;
    let caption = head;
    if (this.opts.mode === 'fast') {
      const parts = [head];
      const add = (p: string) => {
        const next = [...parts, p].join(', ');
        if (this.fits(next)) parts.push(p);
      };
      this.tables.forEach((t, i) => {
        if (i === 0) return;
        if (t.single) add(ranked[i]![0]!.phrase);
        else ranked[i]!.slice(0, this.opts.maxFlavors).forEach((r) => add(r.phrase));
      });
      caption = parts.join(', ');
    } else {
      const pool = this.tables.flatMap((t, i) =>
        i === 0 ? [] : ranked[i]!.slice(0, t.single ? BEST_PER_TABLE : BEST_VOCAB).map((r) => ({ phrase: r.phrase, table: t })),
      );
      let [cur] = await this.embed([caption]);
      let score = this.dot(image, cur!);
      for (let added = 0; added < this.opts.maxFlavors && pool.length; added++) {
        const tries = pool.map((c) => ({ c, text: `${caption}, ${c.phrase}` })).filter((x) => this.fits(x.text));
        if (!tries.length) break;
        const e = await this.embed(tries.map((x) => x.text));
        let best = -1;
        let bestScore = score;
        e.forEach((v, i) => {
          const s = this.dot(image, v);
          if (s > bestScore) [best, bestScore] = [i, s];
        });
        if (best < 0) break;
        const pick = tries[best]!;
        caption = pick.text;
        score = bestScore;
        for (let i = pool.length - 1; i >= 0; i--) if (pool[i] === pick.c || (pick.c.table.single && pool[i]!.table === pick.c.table)) pool.splice(i, 1);
      }
      return { caption, similarity: score };
    }
    const [e] = await this.embed([caption]);
    return { caption, similarity: this.dot(image, e!) };
  }

  /** Caption for an image file or encoded buffer. */
  async caption(source: string | Buffer): Promise<ClipCaption> {
    const px = await this.model.pixelValues(source);
    return this.captionEmbedding(await this.model.imageEmbeds(px, 1));
  }
}
