/**
 * A1111 options (`/sdapi/v1/options`): every key with its A1111 v1.10 default (the table is
 * `option-defaults.ts`), current values persisted atomically to `<data-dir>/config.json` (the same file name
 * and flat layout A1111 uses).
 */
import { readFile } from 'node:fs/promises';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';
import { UserError } from '../engine/util/errors.ts';
import { HttpError } from './errors.ts';
import { OPTION_DEFAULTS, RESTRICTED_OPTIONS, type OptionValue } from './option-defaults.ts';

export { OPTION_DEFAULTS, RESTRICTED_OPTIONS, type OptionValue };

/**
 * Throws A1111's KeyError for the first key that is neither a known option nor a saved one, unless its value
 * is null (A1111 compares with the current value, None for an unknown key, before looking the key up).
 */
export function unknownOptionKey(values: Record<string, unknown>, current: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(values)) {
    if (v !== null && !(k in OPTION_DEFAULTS) && !(k in current)) throw new HttpError(422, k, 'KeyError');
  }
}

export class OptionsStore {
  private data: Record<string, OptionValue>;

  private constructor(
    readonly path: string,
    saved: Record<string, OptionValue>,
    /** Values forced by the command line; they win over config.json. */
    private readonly forced: Record<string, OptionValue>,
  ) {
    this.data = { ...structuredClone(OPTION_DEFAULTS), ...saved, ...forced };
  }

  /** Loads `<data-dir>/config.json` if present. Unknown keys in it are kept (A1111 keeps extension options). */
  static async load(path: string, forced: Record<string, OptionValue> = {}): Promise<OptionsStore> {
    let saved: Record<string, OptionValue> = {};
    const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw e;
    });
    if (text !== null) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        throw new UserError(`${path}: not valid JSON (${(e as Error).message})`);
      }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UserError(`${path}: expected a JSON object of option → value`);
      saved = parsed as Record<string, OptionValue>;
    }
    return new OptionsStore(path, saved, forced);
  }

  get(key: string): OptionValue {
    return this.data[key] ?? null;
  }

  all(): Record<string, OptionValue> {
    return structuredClone(this.data);
  }

  /**
   * Sets options from the API as A1111's `Options.set` does: a value equal to the current one (an unknown key
   * sent as null included) is a no-op; any other unknown key is a KeyError (422 here, 500 in A1111), checked
   * before anything changes; restricted keys are ignored. Values come typed from server/requests/options.ts.
   * Returns the keys that changed.
   */
  setFromApi(values: Record<string, OptionValue>): string[] {
    unknownOptionKey(values, this.data);
    const changed: string[] = [];
    for (const [k, v] of Object.entries(values)) {
      if (RESTRICTED_OPTIONS.has(k)) continue;
      if (!(k in OPTION_DEFAULTS) && !(k in this.data)) continue;
      if (JSON.stringify(this.data[k]) !== JSON.stringify(v)) changed.push(k);
      this.data[k] = v;
    }
    return changed;
  }

  /** Set by the server itself (e.g. the loaded checkpoint's title), not subject to restrictions. */
  setInternal(key: string, value: OptionValue): void {
    this.data[key] = value;
  }

  async save(): Promise<void> {
    const out: Record<string, OptionValue> = {};
    // Command-line values are not written back, so removing the flag restores the saved setting.
    for (const [k, v] of Object.entries(this.data)) if (!(k in this.forced)) out[k] = v;
    await writeBufferAtomic(this.path, JSON.stringify(out, null, 4) + '\n');
  }
}
