/**
 * Load-time LoRA merging over a live weight map, as A1111 and ComfyUI do it: switching to another stack puts
 * the base values of the weights the old one changed back (bit-exact) and applies the new stack. The base
 * values come from where the weights were loaded (`reload`: the checkpoint file, read and widened again, the
 * same bits) or, without one, from copies taken the first time a weight is changed. A stack's merged values
 * are copied into an LRU cache bounded by bytes when another stack replaces it (while it is active, the weights
 * themselves hold them: one stack in use costs no cache memory), so going back to a recent stack is a memcpy,
 * and parsed LoRA files are cached by (path, mtime, size).
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { totalmem } from 'node:os';
import { applyStack, type ApplyReport } from './apply.ts';
import { loadLora, loraFileOf } from './load.ts';
import { refuseWrongFamily } from './family.ts';
import { TargetIndex } from './targets.ts';
import { timeSlicer } from '../util/time-slice.ts';
import type { SdFamily } from '../sd/arch.ts';
import type { ParsedLora, WeightMap } from './types.ts';

export interface StackItem {
  /** LoRA file (or diffusers / PEFT folder). */
  path: string;
  te: number;
  unet: number;
  /** Name for reports and logs (e.g. the prompt tag's name). */
  name?: string;
  /** DyLoRA rank truncation (see StackLayer.dyn). */
  dyn?: number;
}

export interface MergeResult {
  /** Cache key of the stack now active ('' for the bare base model). */
  stackKey: string;
  /** True when nothing was computed: the stack was active already or came from the cache. */
  fromCache: boolean;
  /** LDM keys whose values differ from before this call: upload these to a running model. */
  changedKeys: string[];
  /** Per LoRA: modules applied, and names that matched nothing or failed (empty on a cache hit of a clean stack). */
  loras: { name: string; path: string; applied: number; unmatched: string[]; errors: string[] }[];
  seconds: number;
}

export interface LoraMergerOptions {
  /**
   * Upper bound on the merged-stack cache (stacks not active now), in bytes of float32 values. Default: 1/8 of
   * RAM. 0 disables it.
   */
  cacheBytes?: number;
  /** Upper bound on parsed LoRA files kept in memory, in bytes. Default: 1/16 of RAM. */
  loraCacheBytes?: number;
  /** Where unmatched-module warnings go. Default: console.warn. */
  log?: (message: string) => void;
  /** Model key index; built from the weight map when omitted. */
  index?: TargetIndex;
  /** See ApplyOptions.ortMinElements. */
  ortMinElements?: number;
  /** The model's family: LoRAs declaring another one are refused (see `refuseWrongFamily`). */
  family?: SdFamily;
  /**
   * Puts the base values of these weights back in place, from where they were loaded. Given, the merger keeps
   * no pristine copies (SD 1.5 with kohya's default targets: 1.3 GB less); a restore then reads the file.
   */
  reload?: (keys: string[]) => Promise<void>;
}

interface CachedStack {
  values: Map<string, Float32Array>;
  bytes: number;
  loras: MergeResult['loras'];
}

function bytesOfLora(l: ParsedLora): number {
  let n = 0;
  for (const m of l.modules) for (const t of Object.values(m.tensors)) n += t.data.byteLength;
  return n;
}

export class LoraMerger {
  private readonly pristine = new Map<string, Float32Array>();
  /** Keys currently holding non-pristine values. */
  private dirty = new Set<string>();
  private activeKey = '';
  private activeLoras: MergeResult['loras'] = [];
  private readonly stacks = new Map<string, CachedStack>();
  private stackBytes = 0;
  private readonly files = new Map<string, { id: string; lora: ParsedLora; bytes: number }>();
  private fileBytes = 0;
  private readonly index: TargetIndex;
  private readonly cacheBytes: number;
  private readonly loraCacheBytes: number;
  private readonly log: (message: string) => void;
  private readonly ortMinElements: number | undefined;
  private readonly family: SdFamily | undefined;
  private readonly reload: ((keys: string[]) => Promise<void>) | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  readonly stats = { hits: 0, misses: 0 };

  constructor(
    private readonly weights: WeightMap,
    options: LoraMergerOptions = {},
  ) {
    this.index = options.index ?? new TargetIndex(weights.keys(), (k) => weights.get(k)?.shape);
    this.cacheBytes = options.cacheBytes ?? Math.floor(totalmem() / 8);
    this.loraCacheBytes = options.loraCacheBytes ?? Math.floor(totalmem() / 16);
    this.log = options.log ?? ((m) => console.warn(m));
    this.ortMinElements = options.ortMinElements;
    this.family = options.family;
    this.reload = options.reload;
  }

  /** Makes `stack` the active one. Calls are serialised; each sees the previous one finished. */
  apply(stack: StackItem[]): Promise<MergeResult> {
    const run = this.queue.then(() => this.applyNow(stack));
    this.queue = run.catch(() => {});
    return run;
  }

  /** Back to the base weights (bit-exact). Returns the keys that changed. */
  async restore(): Promise<string[]> {
    return (await this.apply([])).changedKeys;
  }

  /** Drops the merged-stack cache, and with 'all' the parsed files too (the active stack and pristine copies stay). */
  clearCache(what: 'stacks' | 'all' = 'all'): void {
    this.stacks.clear();
    this.stackBytes = 0;
    if (what === 'stacks') return;
    this.files.clear();
    this.fileBytes = 0;
  }

  get active(): string {
    return this.activeKey;
  }

  get cache(): { entries: number; bytes: number; limit: number; pristineBytes: number } {
    let pristineBytes = 0;
    for (const p of this.pristine.values()) pristineBytes += p.byteLength;
    return { entries: this.stacks.size, bytes: this.stackBytes, limit: this.cacheBytes, pristineBytes };
  }

  /** Identity of the weights file behind a path (a folder's mtime does not change when a file in it is rewritten). */
  private async fileId(path: string): Promise<string> {
    const s = await stat(await loraFileOf(path));
    return `${s.mtimeMs}:${s.size}`;
  }

  private async stackKeyOf(stack: StackItem[]): Promise<string> {
    const parts: string[] = [];
    for (const s of stack) {
      if (s.te === 0 && s.unet === 0) continue;
      const p = resolve(s.path);
      parts.push(JSON.stringify([p, await this.fileId(p), s.te, s.unet, s.dyn ?? null]));
    }
    return parts.join('\n');
  }

  private async loraOf(path: string): Promise<ParsedLora> {
    const p = resolve(path);
    const id = await this.fileId(p);
    const hit = this.files.get(p);
    if (hit && hit.id === id) {
      this.files.delete(p);
      this.files.set(p, hit);
      return hit.lora;
    }
    if (hit) {
      this.files.delete(p);
      this.fileBytes -= hit.bytes;
    }
    const lora = await loadLora(p);
    const bytes = bytesOfLora(lora);
    if (bytes <= this.loraCacheBytes) {
      this.files.set(p, { id, lora, bytes });
      this.fileBytes += bytes;
      for (const [k, v] of this.files) {
        if (this.fileBytes <= this.loraCacheBytes) break;
        this.files.delete(k);
        this.fileBytes -= v.bytes;
      }
    }
    return lora;
  }

  private async restoreDirty(except?: Set<string>): Promise<void> {
    const keys = [...this.dirty].filter((k) => !except?.has(k));
    if (this.reload) await this.reload(keys);
    else {
      const slice = timeSlicer();
      for (const k of keys) {
        this.weights.get(k)!.data.set(this.pristine.get(k)!);
        await slice();
      }
    }
    this.dirty = new Set();
  }

  private async applyNow(stack: StackItem[]): Promise<MergeResult> {
    const t0 = performance.now();
    const key = await this.stackKeyOf(stack);
    const done = (fromCache: boolean, changed: Iterable<string>): MergeResult => ({
      stackKey: key,
      fromCache,
      changedKeys: [...changed].sort(),
      loras: this.activeLoras,
      seconds: (performance.now() - t0) / 1000,
    });
    if (key === this.activeKey) return done(true, []);

    const cached = this.stacks.get(key);
    if (cached) {
      this.stats.hits++;
      this.stacks.delete(key);
      this.stacks.set(key, cached);
      await this.keepActive();
      const changed = new Set([...this.dirty, ...cached.values.keys()]);
      await this.restoreDirty(new Set(cached.values.keys()));
      const slice = timeSlicer();
      for (const [k, v] of cached.values) {
        this.weights.get(k)!.data.set(v);
        await slice();
      }
      this.dirty = new Set(cached.values.keys());
      this.activeKey = key;
      this.activeLoras = cached.loras;
      return done(true, changed);
    }
    if (key !== '') this.stats.misses++;

    // Load every file before touching weights, so a missing file leaves the active stack intact.
    const active = stack.filter((s) => s.te !== 0 || s.unet !== 0);
    const loaded = [];
    for (const s of active) loaded.push({ lora: await this.loraOf(s.path), name: s.name ?? s.path, te: s.te, unet: s.unet, dyn: s.dyn });
    if (this.family) for (const l of loaded) refuseWrongFamily(l.lora, l.name, this.family);

    await this.keepActive();
    const before = new Set(this.dirty);
    await this.restoreDirty();
    this.dirty = new Set();
    let report: ApplyReport;
    try {
      report = await applyStack(this.weights, loaded, this.index, {
        ortMinElements: this.ortMinElements,
        beforeTouch: (k) => {
          if (!this.reload && !this.pristine.has(k)) this.pristine.set(k, this.weights.get(k)!.data.slice());
          this.dirty.add(k);
        },
      });
    } catch (e) {
      // Whatever was half-applied goes back, so the weights are the base model, never a torn mix.
      await this.restoreDirty();
      this.activeKey = '';
      this.activeLoras = [];
      throw e;
    }
    this.dirty = report.touched;
    this.activeKey = key;
    this.activeLoras = report.layers.map((l, i) => ({ ...l, path: resolve(active[i]!.path) }));
    for (const l of this.activeLoras) {
      if (l.unmatched.length) this.log(`LoRA ${l.name}: ${l.unmatched.length} keys match nothing in the model: ${l.unmatched.join(', ')}`);
      for (const e of l.errors) this.log(`LoRA ${l.name}: ${e}`);
    }
    return done(false, new Set([...before, ...report.touched]));
  }

  /** Before the active stack is replaced: its merged values into the cache, unless they are there already. */
  private async keepActive(): Promise<void> {
    if (this.activeKey !== '' && !this.stacks.has(this.activeKey)) await this.remember(this.activeKey, this.dirty, this.activeLoras);
  }

  /** Caches the merged values of `touched`. */
  private async remember(key: string, touched: Set<string>, loras: MergeResult['loras']): Promise<void> {
    let bytes = 0;
    for (const k of touched) bytes += this.weights.get(k)!.data.byteLength;
    if (bytes > this.cacheBytes) return;
    for (const [k, v] of this.stacks) {
      if (this.stackBytes + bytes <= this.cacheBytes) break;
      this.stacks.delete(k);
      this.stackBytes -= v.bytes;
    }
    const values = new Map<string, Float32Array>();
    const slice = timeSlicer();
    for (const k of touched) {
      values.set(k, this.weights.get(k)!.data.slice());
      await slice();
    }
    this.stacks.set(key, { values, bytes, loras });
    this.stackBytes += bytes;
  }
}
