/**
 * A1111 prompt text as the editor sees it (no DOM here): `<lora:name:weight>` tags found, re-weighted,
 * added and removed in place, the half-typed tag at the caret for autocompletion, and the spans the
 * highlighter colours. The server's engine/text parser is the one that gives prompts their meaning; this
 * only has to find tags and brackets for editing.
 */

export interface LoraTag {
  name: string;
  /** Text-encoder weight (the first number), 1 when absent. */
  weight: number;
  start: number;
  end: number;
}

const TAG = /<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>/g;

export function findLoraTags(prompt: string): LoraTag[] {
  const out: LoraTag[] = [];
  for (const m of prompt.matchAll(TAG)) {
    const w = m[2] === undefined || m[2].trim() === '' ? 1 : Number(m[2]);
    out.push({ name: m[1]!, weight: Number.isFinite(w) ? w : 1, start: m.index!, end: m.index! + m[0].length });
  }
  return out;
}

export function formatWeight(w: number): string {
  return String(Math.round(w * 100) / 100);
}

/** The prompt with every tag of `name` set to `weight` (only the first weight: unet/dyn parts are dropped). */
export function setLoraWeight(prompt: string, name: string, weight: number): string {
  return prompt.replace(TAG, (whole, n: string) => (n === name ? `<lora:${n}:${formatWeight(weight)}>` : whole));
}

/** Appends a tag (or re-weights the one already there). */
export function addLoraTag(prompt: string, name: string, weight = 1): string {
  if (findLoraTags(prompt).some((t) => t.name === name)) return setLoraWeight(prompt, name, weight);
  const sep = prompt.trim() === '' ? '' : /[\s,]$/.test(prompt) ? '' : ', ';
  return `${prompt}${sep}<lora:${name}:${formatWeight(weight)}>`;
}

export function removeLoraTag(prompt: string, name: string): string {
  return prompt
    .replace(TAG, (whole, n: string) => (n === name ? '' : whole))
    .replace(/,\s*,/g, ',')
    .replace(/^[\s,]+|[\s,]+$/g, '');
}

/** The `<lora:` prefix being typed at the caret, for completion: the partial name and where it starts. */
export function loraPrefixAt(prompt: string, caret: number): { partial: string; start: number } | null {
  const before = prompt.slice(0, caret);
  const m = /<lora:([^:>\s]*)$/.exec(before);
  return m ? { partial: m[1]!, start: m.index } : null;
}

/** Replaces the half-typed tag that starts at `start` with a complete one; returns text and caret. */
export function completeLora(prompt: string, start: number, caret: number, name: string): { text: string; caret: number } {
  const tail = prompt.slice(caret);
  // A tag the user was editing may continue after the caret (`<lora:na|me:0.5>`): replace it whole.
  const rest = /^[^:>\s]*(?::[^>]*)?>/.exec(tail);
  const tag = `<lora:${name}:1>`;
  const after = rest ? tail.slice(rest[0].length) : tail;
  return { text: prompt.slice(0, start) + tag + after, caret: start + tag.length };
}

export type SpanKind = 'lora' | 'weight' | 'paren' | 'bracket' | 'keyword' | 'text';

/** The prompt cut into spans for colouring; the spans cover the text exactly. */
export function highlightSpans(prompt: string): { kind: SpanKind; text: string }[] {
  const re = /(<lora:[^>]*>)|(:\s*-?\d+(?:\.\d+)?(?=\s*[)\]>]))|([()])|([[\]|])|(\bBREAK\b|\bAND\b)/g;
  const out: { kind: SpanKind; text: string }[] = [];
  let last = 0;
  for (const m of prompt.matchAll(re)) {
    if (m.index! > last) out.push({ kind: 'text', text: prompt.slice(last, m.index) });
    const kind: SpanKind = m[1] ? 'lora' : m[2] ? 'weight' : m[3] ? 'paren' : m[4] ? 'bracket' : 'keyword';
    out.push({ kind, text: m[0] });
    last = m.index! + m[0].length;
  }
  if (last < prompt.length) out.push({ kind: 'text', text: prompt.slice(last) });
  return out;
}

/** Tags of a caption (comma-separated, as the trainer splits them). */
export function captionTags(caption: string): string[] {
  return caption
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** How often each tag appears across captions, most frequent first. */
export function tagCounts(captions: string[]): [string, number][] {
  const n = new Map<string, number>();
  for (const c of captions) for (const tag of new Set(captionTags(c))) n.set(tag, (n.get(tag) ?? 0) + 1);
  return [...n].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

/** A caption with the trigger word first (moved there if it is elsewhere, added if absent). */
export function prefixTrigger(caption: string, trigger: string): string {
  const w = trigger.trim();
  if (!w) return caption;
  const tags = captionTags(caption).filter((tag) => tag !== w);
  return [w, ...tags].join(', ');
}
