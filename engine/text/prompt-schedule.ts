/**
 * A1111 prompt editing and alternation (`prompt_parser.get_learned_conditioning_prompt_schedules`):
 * `[from:to:when]`, `[to:when]`, `[from::when]` and `[a|b|c]` turn one prompt into a list of
 * (last step, prompt text) pairs. A prompt that A1111's grammar rejects (a `|` outside an alternation,
 * a trailing backslash) is used unchanged for every step, as A1111 does.
 *
 * The prompt is parsed by a port of lark's Earley parser (schedule-grammar.ts), because whether a bracket
 * at the top level is syntax or literal text depends on lark's ambiguity resolution.
 *
 * Earley parsing of this grammar grows like the cube of the prompt length. Prompts whose brackets all pair
 * up are therefore parsed in groups no construct can span (see `independentGroups`), linear in the number
 * of groups; the whole prompt is parsed at once only when a group needs stray brackets, because lark's
 * choice for those depends on what surrounds them. A parse over the parser's work budget (brackets nested
 * or left open hundreds deep) is refused with PromptTooComplexError rather than stalling the process.
 */
import { DEFAULT_MAX_PARSE_WORK, GrammarError, ParseBudget, matchTerminal, parseScheduleGrammar, type ParseTree, type Token } from './schedule-grammar.ts';

/**
 * Cut points where no construct can span: every construct (`[…]`, `(…)`) holds a balanced bracket sequence,
 * so with d(x) = opening minus closing brackets (escaped ones skipped) before x, a construct opened at p < b
 * that is still open at b has d(b) > d(p). Where d(b) is the lowest value so far nothing is open across b,
 * and the prompt parses iff every group does.
 */
export function independentGroups(text: string): string[] {
  const groups: string[] = [];
  let depth = 0;
  let low = 0;
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length && text[i + 1] !== '\n') {
      i++;
      continue;
    }
    if ((c === '[' || c === '(') && depth <= low && i > from) {
      groups.push(text.slice(from, i));
      from = i;
    }
    if (c === '[' || c === '(') depth++;
    else if (c === ']' || c === ')') depth--;
    if (depth < low) low = depth;
  }
  groups.push(text.slice(from));
  return groups;
}

/**
 * A group without square brackets whose parentheses all pair up, with at most one `:` per pair and none
 * outside: it reads as emphasis and text only, without stray brackets, so it needs no parse.
 */
function isPlainGroup(g: string): boolean {
  if (/[[\]|]/.test(g)) return false;
  const colons = [0];
  for (let i = 0; i < g.length; i++) {
    const c = g[i];
    if (c === '\\') {
      if (i + 1 >= g.length || g[i + 1] === '\n') return false;
      i++;
    } else if (c === '(') colons.push(0);
    else if (c === ')') {
      if (colons.length === 1) return false;
      colons.pop();
    } else if (c === ':' && ++colons[colons.length - 1]! > (colons.length === 1 ? 0 : 1)) return false;
  }
  return colons.length === 1;
}

/** Text with no syntax character and no escape: one PLAIN/WHITESPACE run in any reading. */
const PLAIN_RUN = /^[^\\[\]():|]*$/;

/**
 * `[from:to:when]`, `[to:when]`, `[a|b|…]` or `[text]` of plain text, then plain text: the forms that make up
 * nearly every group. Each has exactly one reading without stray brackets, so its nodes are written down
 * directly instead of running the Earley parser (the seeded comparison test checks this against it).
 */
function simpleGroup(g: string): Node[] | null {
  if (g[0] !== '[') return null;
  const close = g.indexOf(']');
  if (close < 0 || !PLAIN_RUN.test(g.slice(close + 1))) return null;
  const inner = g.slice(1, close);
  const tail: Node[] = close + 1 < g.length ? [{ kind: 'text', text: g.slice(close + 1) }] : [];
  if (/[[(\\)]/.test(inner)) return null;
  const text = (t: string): Node[] => (t === '' ? [] : [{ kind: 'text', text: t }]);
  if (inner.includes('|')) {
    if (inner.includes(':')) return null;
    return [{ kind: 'alternate', options: inner.split('|').map(text) }, ...tail];
  }
  const parts = inner.split(':');
  if (parts.length === 1) return [{ kind: 'text', text: g }];
  if (parts.length > 3) return null;
  const last = parts[parts.length - 1]!;
  const lead = leadingSpace(last);
  const number = matchTerminal('NUMBER', last, lead);
  if (number === null) return null;
  const rest = last.slice(lead + number.length);
  if (rest !== '' && matchTerminal('WHITESPACE', rest, 0) !== rest) return null;
  return parts.length === 3
    ? [{ kind: 'scheduled', before: text(parts[0]!), after: text(parts[1]!), number }, ...tail]
    : [{ kind: 'scheduled', before: null, after: text(parts[0]!), number }, ...tail];
}

function leadingSpace(s: string): number {
  return matchTerminal('WHITESPACE', s, 0)?.length ?? 0;
}

function hasStray(t: ParseTree | Token): boolean {
  return isTree(t) ? t.children.some(hasStray) : t.type === 'STRAY';
}

/**
 * The prompt's nodes; GrammarError when A1111's parser rejects it. Groups read without stray brackets put
 * side by side are a derivation of the whole without stray brackets, which lark's rule order prefers, and
 * such a derivation is unique up to how text is cut into tokens: so the groups give lark's answer.
 */
function parsePrompt(prompt: string, whole: boolean, budget: ParseBudget): Node[] {
  const groups = independentGroups(prompt);
  if (groups.length > 1 && !whole) {
    // Repeated groups (the same tag pasted many times) are parsed once.
    const seen = new Map<string, ParseTree>();
    const parsed = groups.map((g): ParseTree | Node[] => (isPlainGroup(g) ? [{ kind: 'text', text: g }] : (simpleGroup(g) ?? seen.get(g) ?? seen.set(g, parseScheduleGrammar(g, budget)).get(g)!)));
    if (!parsed.some((p) => !Array.isArray(p) && hasStray(p))) return parsed.flatMap((p) => (Array.isArray(p) ? p : toNodes(p)));
  }
  return toNodes(parseScheduleGrammar(prompt, budget));
}

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'scheduled'; before: Node[] | null; after: Node[]; number: string; when?: number }
  | { kind: 'alternate'; options: Node[][] };

function isTree(c: ParseTree | Token): c is ParseTree {
  return 'rule' in c;
}

/** Turns lark's parse tree into text runs and the two constructs that change with the step. */
function toNodes(t: ParseTree | Token): Node[] {
  if (!isTree(t)) return [{ kind: 'text', text: t.value }];
  const kids = t.children;
  switch (t.rule.origin) {
    case 'scheduled': {
      const prompts = kids.filter((c): c is ParseTree => isTree(c) && c.rule.origin === 'prompt').map(toNodes);
      const number = kids.find((c): c is Token => !isTree(c) && c.type === 'NUMBER')!.value;
      return prompts.length === 2
        ? [{ kind: 'scheduled', before: prompts[0]!, after: prompts[1]!, number }]
        : [{ kind: 'scheduled', before: null, after: prompts[0]!, number }];
    }
    case 'alternate': {
      // `"[" prompt ("|" [prompt])+ "]"`: an option left out after a `|` is the empty string.
      const seq: Array<ParseTree | Token> = [];
      const flatten = (c: ParseTree | Token) => {
        if (isTree(c) && c.rule.origin === '__alternate_plus_3') c.children.forEach(flatten);
        else seq.push(c);
      };
      kids.slice(1, -1).forEach(flatten);
      const options: Node[][] = [toNodes(seq[0]!)];
      for (let i = 1; i < seq.length; i++) {
        const c = seq[i]!;
        if (!isTree(c)) options.push([]);
        else options[options.length - 1] = toNodes(c);
      }
      return [{ kind: 'alternate', options }];
    }
    default:
      return kids.flatMap(toNodes);
  }
}

export interface ScheduleOptions {
  /** Hires-fix pass steps: integers then count from the end of the base pass and fractions from 1.0 (A1111's new rule). */
  hiresSteps?: number;
  /** A1111 option `use_old_scheduling`: every value below 1 is a fraction, others are steps; no hires offset. */
  useOldScheduling?: boolean;
  /** Parse the prompt in one piece, never in groups (slow; tests compare both ways). */
  wholeParse?: boolean;
  /** Parser work allowed before PromptTooComplexError (default DEFAULT_MAX_PARSE_WORK). */
  maxParseWork?: number;
}

export interface ScheduledPrompt {
  /** The last sampling step (1-based, inclusive) this text applies to. */
  endAtStep: number;
  prompt: string;
}

function visitScheduled(nodes: readonly Node[], fn: (n: Extract<Node, { kind: 'scheduled' }>) => void, onAlternate: () => void): void {
  for (const n of nodes) {
    if (n.kind === 'scheduled') {
      if (n.before) visitScheduled(n.before, fn, onAlternate);
      visitScheduled(n.after, fn, onAlternate);
      fn(n);
    } else if (n.kind === 'alternate') {
      for (const o of n.options) visitScheduled(o, fn, onAlternate);
      onAlternate();
    }
  }
}

function render(nodes: readonly Node[], step: number): string {
  let out = '';
  for (const n of nodes) {
    if (n.kind === 'text') out += n.text;
    else if (n.kind === 'scheduled') out += step <= n.when! ? (n.before ? render(n.before, step) : '') : render(n.after, step);
    else out += render(n.options[(step - 1) % n.options.length]!, step);
  }
  return out;
}

/**
 * Parses of recent prompts (null: the grammar rejects it), newest last, bounded by their total length. A
 * server checks a request's prompts on a worker thread before queueing; handing those parses to this cache
 * (`rememberParses`) spares the job a second parse of up to a second on the event loop.
 */
const parses = new Map<string, Node[] | null>();
let parsedChars = 0;
const MAX_PARSED_CHARS = 1 << 20;

function rememberParse(prompt: string, tree: Node[] | null): void {
  if (prompt.length > MAX_PARSED_CHARS / 4) return;
  if (parses.delete(prompt)) parsedChars -= prompt.length;
  parses.set(prompt, tree);
  parsedChars += prompt.length;
  for (const k of parses.keys()) {
    if (parsedChars <= MAX_PARSED_CHARS) break;
    parses.delete(k);
    parsedChars -= k.length;
  }
}

/** A prompt and its parse, as plain data that can cross to another thread. */
export type PromptParse = { prompt: string; tree: unknown };

/** The cached parses of `prompts` (those parsed by `getPromptSchedule` on this thread). */
export function cachedParses(prompts: readonly string[]): PromptParse[] {
  return prompts.filter((p) => parses.has(p)).map((p) => ({ prompt: p, tree: parses.get(p) }));
}

/** Adds parses made on another thread (see `cachedParses`) to this thread's cache. */
export function rememberParses(list: readonly PromptParse[]): void {
  for (const { prompt, tree } of list) rememberParse(prompt, tree as Node[] | null);
}

/** The schedule of one prompt for `baseSteps` sampling steps. */
export function getPromptSchedule(prompt: string, baseSteps: number, opts: ScheduleOptions = {}): ScheduledPrompt[] {
  const old = opts.useOldScheduling ?? false;
  const hires = opts.hiresSteps !== undefined && !old;
  const steps = hires ? opts.hiresSteps! : baseSteps;
  const intOffset = hires ? baseSteps : 0;
  const fltOffset = hires ? 1 : 0;

  // Without `[` there is no edit or alternation, and a prompt the grammar rejects is kept as it is anyway.
  if (!prompt.includes('[')) return [{ endAtStep: steps, prompt }];
  const cacheable = !opts.wholeParse && (opts.maxParseWork ?? DEFAULT_MAX_PARSE_WORK) === DEFAULT_MAX_PARSE_WORK;
  let tree = cacheable ? parses.get(prompt) : undefined;
  if (tree === undefined) {
    try {
      tree = parsePrompt(prompt, opts.wholeParse ?? false, new ParseBudget(opts.maxParseWork ?? DEFAULT_MAX_PARSE_WORK));
    } catch (e) {
      if (!(e instanceof GrammarError)) throw e;
      tree = null;
    }
    if (cacheable) rememberParse(prompt, tree);
  }
  if (tree === null) return [{ endAtStep: steps, prompt }];

  const points = new Set<number>([steps]);
  visitScheduled(
    tree,
    (n) => {
      let v = Number(n.number);
      if (old) v = v < 1 ? v * steps : v;
      else if (n.number.includes('.')) v = (v - fltOffset) * steps;
      else v = v - intOffset;
      n.when = Math.min(steps, Math.trunc(v));
      if (n.when >= 1) points.add(n.when);
    },
    () => {
      for (let i = 1; i <= steps; i++) points.add(i);
    },
  );
  return [...points].sort((a, b) => a - b).map((t) => ({ endAtStep: t, prompt: render(tree, t) }));
}

/** A1111 `get_learned_conditioning_prompt_schedules` for a list of prompts. */
export function getPromptSchedules(prompts: readonly string[], steps: number, opts: ScheduleOptions = {}): ScheduledPrompt[][] {
  const cache = new Map<string, ScheduledPrompt[]>();
  return prompts.map((p) => {
    let s = cache.get(p);
    if (!s) {
      s = getPromptSchedule(p, steps, opts);
      cache.set(p, s);
    }
    return s;
  });
}

/**
 * The prompt text A1111 uses at denoiser call `step`, counted from 0 (A1111 `reconstruct_cond_batch`
 * compares its 0-based step counter with `endAtStep`, so `[a:b:3]` keeps `a` for 4 calls).
 */
export function promptAtStep(schedule: readonly ScheduledPrompt[], step: number): string {
  for (const s of schedule) if (step <= s.endAtStep) return s.prompt;
  return schedule[0]!.prompt;
}
