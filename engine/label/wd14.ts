/**
 * WD14-style taggers (SmilingWolf's wd-*-tagger models and their kin), run with ONNX Runtime as they ship: a
 * folder with `model.onnx` and `selected_tags.csv` (tag_id, name, category, count; category 9 = rating,
 * 4 = character, 0 = general). The model outputs one sigmoid probability per row of the CSV.
 *
 * Input as those models were trained: transparency composited onto white, padded to a centred white square,
 * resized with Pillow's bicubic to the model's input size, BGR channel order, values 0–255 as float32. The
 * input size and layout (NHWC as WD14 ships, or NCHW) are read from the graph's input shape.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { parse as parseCsv } from 'csv-parse/sync';
import { decodeRgb, type RgbImage } from '../image/decode-rgb.ts';
import { pilResize } from '../image/pil-resize.ts';
import { defaultThreads, executionProviders, type Device } from '../runtime/providers.ts';
import { UserError } from '../util/errors.ts';

export const WD14_MODEL_FILE = 'model.onnx';
export const WD14_TAGS_FILE = 'selected_tags.csv';

export type TagCategory = 'general' | 'character' | 'rating';

export interface Wd14Options {
  generalThreshold: number;
  characterThreshold: number;
  /** Put the most likely rating tag (general, sensitive, questionable, explicit) first. */
  ratings: boolean;
  /** 'long_hair' → 'long hair' (kaomoji such as '^_^' are left as they are). */
  replaceUnderscores: boolean;
  /** Tags never written (compared with and without underscores). */
  exclude: readonly string[];
  /** Most character + general tags kept, highest probability first; null = no limit. */
  maxTags: number | null;
}

export const DEFAULT_WD14: Wd14Options = { generalThreshold: 0.35, characterThreshold: 0.85, ratings: false, replaceUnderscores: true, exclude: [], maxTags: null };

export interface Tag {
  name: string;
  category: TagCategory;
  score: number;
}

// Tags that are faces drawn with an underscore: replacing it would break them.
const KAOMOJI = new Set(['0_0', '(o)_(o)', '+_+', '+_-', '._.', '<o>_<o>', '<|>_<|>', '=_=', '>_<', '3_3', '6_9', '>_o', '@_@', '^_^', 'o_o', 'u_u', 'x_x', '|_|', '||_||']);

const CATEGORY: Record<string, TagCategory> = { '0': 'general', '4': 'character', '9': 'rating' };

export class Wd14Tagger {
  private constructor(
    readonly folder: string,
    private readonly session: ort.InferenceSession,
    readonly tags: readonly { name: string; category: TagCategory }[],
    readonly size: number,
    readonly layout: 'nhwc' | 'nchw',
    private readonly inputName: string,
    private readonly outputName: string,
  ) {}

  static async load(folder: string, opts: { device?: Device; threads?: number } = {}): Promise<Wd14Tagger> {
    const modelPath = join(folder, WD14_MODEL_FILE);
    const tagsPath = join(folder, WD14_TAGS_FILE);
    for (const [p, what] of [[modelPath, 'the ONNX model'], [tagsPath, 'the tag list']] as const) {
      if (!(await stat(p).catch(() => null))?.isFile()) throw new UserError(`WD14 tagger folder ${folder} has no ${p.slice(folder.length + 1)} (${what}); a tagger folder holds ${WD14_MODEL_FILE} and ${WD14_TAGS_FILE}`);
    }
    const tags = await readTags(tagsPath);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(modelPath, {
        executionProviders: executionProviders(opts.device ?? 'cpu'),
        intraOpNumThreads: opts.threads ?? defaultThreads(),
        graphOptimizationLevel: 'all',
        logSeverityLevel: 3,
      });
    } catch (e) {
      throw new UserError(`${modelPath}: ONNX Runtime cannot load it: ${(e as Error).message}`);
    }
    const meta = session.inputMetadata[0];
    const shape = meta && meta.isTensor ? meta.shape : [];
    const [nhwc, nchw] = [shape.length === 4 && shape[3] === 3, shape.length === 4 && shape[1] === 3];
    const size = nhwc ? shape[1] : nchw ? shape[2] : undefined;
    const other = nhwc ? shape[2] : nchw ? shape[3] : undefined;
    if (typeof size !== 'number' || size !== other) {
      throw new UserError(`${modelPath}: input '${session.inputNames[0]}' has shape [${shape.join(', ')}]; a WD14 tagger takes one square image, [batch, size, size, 3] or [batch, 3, size, size]`);
    }
    return new Wd14Tagger(folder, session, tags, size, nhwc ? 'nhwc' : 'nchw', session.inputNames[0]!, session.outputNames[0]!);
  }

  /** The model's input for one image: white-padded square, resized, BGR 0–255 in the model's layout. */
  input(img: RgbImage): Float32Array {
    const side = Math.max(img.width, img.height);
    const left = Math.floor((side - img.width) / 2);
    const top = Math.floor((side - img.height) / 2);
    let sq: Uint8Array = new Uint8Array(side * side * 3).fill(255);
    for (let y = 0; y < img.height; y++) sq.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), ((y + top) * side + left) * 3);
    if (side !== this.size) sq = pilResize(sq, side, side, 3, this.size, this.size, 'bicubic');
    const S = this.size;
    const out = new Float32Array(S * S * 3);
    for (let i = 0; i < S * S; i++) {
      for (let c = 0; c < 3; c++) {
        const v = sq[i * 3 + (2 - c)]!;
        if (this.layout === 'nhwc') out[i * 3 + c] = v;
        else out[c * S * S + i] = v;
      }
    }
    return out;
  }

  /** One probability per tag of `selected_tags.csv`. */
  async predict(source: string | Buffer): Promise<Float32Array> {
    const img = await decodeRgb(source, { background: { r: 255, g: 255, b: 255 } });
    const S = this.size;
    const shape = this.layout === 'nhwc' ? [1, S, S, 3] : [1, 3, S, S];
    const res = await this.session.run({ [this.inputName]: new ort.Tensor('float32', this.input(img), shape) });
    const probs = res[this.outputName]!.data as Float32Array;
    if (probs.length !== this.tags.length)
      throw new UserError(`${join(this.folder, WD14_MODEL_FILE)} gives ${probs.length} scores but ${WD14_TAGS_FILE} lists ${this.tags.length} tags: the two files do not belong together`);
    return probs;
  }

  /** The tags kept by the options' thresholds and lists, in caption order: rating, characters, general. */
  select(probs: Float32Array, o: Wd14Options = DEFAULT_WD14): Tag[] {
    const excluded = new Set(o.exclude.flatMap((t) => [t.trim().toLowerCase(), t.trim().toLowerCase().replace(/ /g, '_')]));
    const named = (name: string) => (o.replaceUnderscores && !KAOMOJI.has(name) ? name.replace(/_/g, ' ') : name);
    const all = this.tags.map((t, i) => ({ name: t.name, category: t.category, score: probs[i]! }));
    const kept = all
      .filter((t) => (t.category === 'character' ? t.score >= o.characterThreshold : t.category === 'general' && t.score >= o.generalThreshold))
      .filter((t) => !excluded.has(t.name.toLowerCase()))
      .sort((a, b) => (a.category === b.category ? b.score - a.score : a.category === 'character' ? -1 : 1));
    const limited = o.maxTags === null ? kept : kept.slice(0, o.maxTags);
    const rating = o.ratings ? all.filter((t) => t.category === 'rating').sort((a, b) => b.score - a.score).slice(0, 1) : [];
    return [...rating, ...limited].map((t) => ({ ...t, name: named(t.name) }));
  }

  async tag(source: string | Buffer, o: Wd14Options = DEFAULT_WD14): Promise<{ tags: Tag[]; caption: string }> {
    const tags = this.select(await this.predict(source), o);
    return { tags, caption: tags.map((t) => t.name).join(', ') };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

async function readTags(path: string): Promise<{ name: string; category: TagCategory }[]> {
  let rows: Record<string, string>[];
  try {
    rows = parseCsv((await readFile(path, 'utf8')).replace(/^\uFEFF/, ''), { columns: true, skip_empty_lines: true });
  } catch (e) {
    throw new UserError(`${path}: not a valid CSV table: ${(e as Error).message}`);
  }
  if (!rows.length) throw new UserError(`${path}: no tags`);
  if (!('name' in rows[0]!) || !('category' in rows[0]!)) throw new UserError(`${path}: needs 'name' and 'category' columns (as WD14's selected_tags.csv: tag_id,name,category,count)`);
  return rows.map((r, i) => {
    const category = CATEGORY[String(r['category']).trim()];
    if (!category) throw new UserError(`${path}: row ${i + 2}: category '${r['category']}' is not 0 (general), 4 (character) or 9 (rating)`);
    if (!r['name']?.trim()) throw new UserError(`${path}: row ${i + 2}: empty name`);
    return { name: r['name'].trim(), category };
  });
}
