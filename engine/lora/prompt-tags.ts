/**
 * A1111 extra-network tags in a prompt: `<lora:name:0.8>`, `<lora:name:te:unet>`, `<lora:name:te=0.8:unet=0.5>`,
 * `<lyco:…>` (same handler). Every `<type:args>` tag is removed from the text, known type or not, and the
 * surrounding whitespace and commas stay, exactly as A1111 does; only lora/lyco tags are interpreted.
 */
import { UserError } from '../util/errors.ts';

export interface LoraTag {
  type: 'lora' | 'lyco';
  name: string;
  te: number;
  unet: number;
  /** DyLoRA rank truncation (`dyn=` or 4th positional), when given. */
  dyn?: number;
  /** The tag as written, e.g. `<lora:x:0.8>`. */
  raw: string;
}

export interface OtherTag {
  type: string;
  args: string[];
  raw: string;
}

export interface PromptTags {
  /** The prompt with every tag removed. */
  prompt: string;
  loras: LoraTag[];
  /** Tags of other types (hypernet, unknown…), removed from the text as well. */
  other: OtherTag[];
}

// A1111's re_extra_net. Python's \w is Unicode-aware, hence the u flag with \p{L}\p{N}.
const TAG = /<([\p{L}\p{N}_]+):([^>]+)>/gu;

/**
 * Python float() syntax (surrounding whitespace allowed). Unlike A1111, which takes `inf` (or `1e999`) and
 * then merges infinite weights into the model, a multiplier must be a finite number.
 */
function pyFloat(s: string, tag: string, what: string): number {
  const t = s.trim();
  if (/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t) && Number.isFinite(Number(t))) return Number(t);
  if (/^[+-]?(inf|infinity|nan|\d+\.?\d*e[+-]?\d+)$/i.test(t)) throw new UserError(`prompt tag ${tag}: ${what} '${s}' must be a finite number`, { status: 422 });
  throw new UserError(`prompt tag ${tag}: ${what} '${s}' is not a number`);
}

function pyInt(s: string, tag: string): number {
  const t = s.trim();
  if (!/^[+-]?\d+$/.test(t)) throw new UserError(`prompt tag ${tag}: dyn '${s}' is not an integer`);
  return Number(t);
}

/**
 * Parses and strips tags. `defaultMultiplier` is the text-encoder multiplier when the tag gives none
 * (A1111 option `extra_networks_default_multiplier`, 1.0 by default); the UNet multiplier defaults to the
 * text-encoder one.
 */
export function extractPromptTags(prompt: string, options: { defaultMultiplier?: number } = {}): PromptTags {
  const loras: LoraTag[] = [];
  const other: OtherTag[] = [];
  const stripped = prompt.replace(TAG, (raw, type: string, argText: string) => {
    const items = argText.split(':');
    if (type !== 'lora' && type !== 'lyco') {
      other.push({ type, args: items, raw });
      return '';
    }
    const positional: string[] = [];
    const named: Record<string, string> = {};
    for (const item of items) {
      // Python item.split('=', 2): exactly two parts make a named argument; anything else is positional.
      const parts = item.split('=');
      if (parts.length === 2) named[parts[0]!] = parts[1]!;
      else positional.push(item);
    }
    const name = positional[0];
    if (name === undefined || name === '') throw new UserError(`prompt tag ${raw}: no LoRA name`);
    let te = positional.length > 1 ? pyFloat(positional[1]!, raw, 'text-encoder multiplier') : options.defaultMultiplier ?? 1;
    if (named.te !== undefined) te = pyFloat(named.te, raw, 'te');
    let unet = positional.length > 2 ? pyFloat(positional[2]!, raw, 'UNet multiplier') : te;
    if (named.unet !== undefined) unet = pyFloat(named.unet, raw, 'unet');
    let dyn: number | undefined = positional.length > 3 ? pyInt(positional[3]!, raw) : undefined;
    if (named.dyn !== undefined) dyn = pyInt(named.dyn, raw);
    loras.push({ type, name, te, unet, ...(dyn === undefined ? {} : { dyn }), raw });
    return '';
  });
  return { prompt: stripped, loras, other };
}
