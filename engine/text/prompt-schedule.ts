/**
 * A1111 prompt editing and alternation (`prompt_parser.get_learned_conditioning_prompt_schedules`):
 * `[from:to:when]`, `[to:when]`, `[from::when]` and `[a|b|c]` turn one prompt into a list of
 * (last step, prompt text) pairs. A prompt that A1111's grammar rejects (a `|` outside an alternation,
 * a trailing backslash) is used unchanged for every step, as A1111 does.
 *
 * A1111 parses with a lark Earley grammar. Inside brackets that grammar is deterministic; at the top level
 * any `[`, `]`, `(`, `)` or `:` may also be literal text. This parser takes a bracket as syntax whenever the
 * bracketed text parses, and as a literal otherwise, which is the parse lark picks.
 */

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'scheduled'; before: Node[] | null; after: Node[]; number: string; when?: number }
  | { kind: 'alternate'; options: Node[][] };

class ParseFailure extends Error {}

// lark's common.SIGNED_NUMBER, with the optional whitespace and the closing bracket of `scheduled`.
const NUMBER_CLOSE = /\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*\]/y;
const PLAIN_CHAR_EXCLUDED = new Set(['\\', '[', ']', '(', ')', ':', '|']);

class ScheduleParser {
  constructor(private readonly s: string) {}

  /** `!start: (prompt | /[][():]/+)*` */
  parseStart(): Node[] {
    const out: Node[] = [];
    let pos = 0;
    while (pos < this.s.length) {
      const c = this.s[pos]!;
      const r = c === '[' || c === '(' ? this.topLevelConstruct(pos) : null;
      if (r) {
        out.push(...r.nodes);
        pos = r.end;
      } else if (c === '[' || c === '(' || c === ']' || c === ')' || c === ':') {
        out.push({ kind: 'text', text: c });
        pos++;
      } else if (c === '|') {
        throw new ParseFailure('| outside an alternation');
      } else {
        const end = this.plainEnd(pos);
        out.push({ kind: 'text', text: this.s.slice(pos, end) });
        pos = end;
      }
    }
    return out;
  }

  /**
   * A bracket at the top level that lark's resolution keeps as syntax, or null when it reads it as literal
   * characters. For a scheduled edit both readings parse; lark (Earley, ordered SPPF) keeps the edit unless
   * the run of literal bracket characters right after it has an even, non-zero length. This rule was
   * measured against lark itself; it is exact for prompts without stray brackets next to an edit.
   */
  private topLevelConstruct(pos: number): { nodes: Node[]; end: number } | null {
    const r = this.tryConstruct(pos);
    if (!r) return null;
    const kind = r.nodes.length === 1 ? r.nodes[0]!.kind : 'text';
    if (kind !== 'scheduled') return r;
    const run = this.strayRunLength(r.end);
    return run > 0 && run % 2 === 0 ? null : r;
  }

  /** Length of the run of `[ ] ( ) :` at `pos`, ending before a bracket that opens a construct that parses. */
  private strayRunLength(pos: number): number {
    let p = pos;
    while (p < this.s.length) {
      const c = this.s[p]!;
      if (c === ']' || c === ')' || c === ':') {
        p++;
      } else if (c === '[' || c === '(') {
        if (this.tryConstruct(p)) break;
        p++;
      } else {
        break;
      }
    }
    return p - pos;
  }

  /** End of the run of plain text (`/([^\\\[\]():|]|\\.)+/`) starting at `pos`. */
  private plainEnd(pos: number): number {
    let p = pos;
    while (p < this.s.length) {
      const c = this.s[p]!;
      if (c === '\\') {
        // `\\.`: the escaped character may be anything but a line break.
        const next = this.s[p + 1];
        if (next === undefined || next === '\n' || next === '\r' || next === '\u2028' || next === '\u2029') {
          throw new ParseFailure('backslash without a character after it');
        }
        p += 2;
      } else if (PLAIN_CHAR_EXCLUDED.has(c)) {
        break;
      } else {
        p++;
      }
    }
    return p;
  }

  /** `prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*`; stops at `: | ] )` or the end. */
  private parsePrompt(pos: number): { nodes: Node[]; end: number } | null {
    const nodes: Node[] = [];
    let p = pos;
    while (p < this.s.length) {
      const c = this.s[p]!;
      if (c === '[' || c === '(') {
        const r = this.tryConstruct(p);
        if (!r) return null;
        nodes.push(...r.nodes);
        p = r.end;
      } else if (c === ':' || c === '|' || c === ']' || c === ')') {
        break;
      } else {
        const end = this.plainEnd(p);
        nodes.push({ kind: 'text', text: this.s.slice(p, end) });
        p = end;
      }
    }
    return { nodes, end: p };
  }

  /** emphasized, scheduled or alternate starting at the bracket at `pos`; null when none parses. */
  private tryConstruct(pos: number): { nodes: Node[]; end: number } | null {
    const open = this.s[pos]!;
    const first = this.parsePrompt(pos + 1);
    if (!first) return null;
    let p = first.end;
    const c = this.s[p];
    if (open === '(') {
      if (c === ')') return { nodes: [text('('), ...first.nodes, text(')')], end: p + 1 };
      if (c !== ':') return null;
      const second = this.parsePrompt(p + 1);
      if (!second || this.s[second.end] !== ')') return null;
      return { nodes: [text('('), ...first.nodes, text(':'), ...second.nodes, text(')')], end: second.end + 1 };
    }
    if (c === ']') return { nodes: [text('['), ...first.nodes, text(']')], end: p + 1 };
    if (c === '|') {
      const options: Node[][] = [first.nodes];
      while (this.s[p] === '|') {
        const next = this.parsePrompt(p + 1);
        if (!next) return null;
        options.push(next.nodes);
        p = next.end;
      }
      if (this.s[p] !== ']') return null;
      return { nodes: [{ kind: 'alternate', options }], end: p + 1 };
    }
    if (c !== ':') return null;
    const short = this.numberClose(p + 1);
    if (short) return { nodes: [{ kind: 'scheduled', before: null, after: first.nodes, number: short.number }], end: short.end };
    const second = this.parsePrompt(p + 1);
    if (!second || this.s[second.end] !== ':') return null;
    const full = this.numberClose(second.end + 1);
    if (!full) return null;
    return { nodes: [{ kind: 'scheduled', before: first.nodes, after: second.nodes, number: full.number }], end: full.end };
  }

  private numberClose(pos: number): { number: string; end: number } | null {
    NUMBER_CLOSE.lastIndex = pos;
    const m = NUMBER_CLOSE.exec(this.s);
    return m ? { number: m[1]!, end: NUMBER_CLOSE.lastIndex } : null;
  }
}

function text(t: string): Node {
  return { kind: 'text', text: t };
}

export interface ScheduleOptions {
  /** Hires-fix pass steps: integers then count from the end of the base pass and fractions from 1.0 (A1111's new rule). */
  hiresSteps?: number;
  /** A1111 option `use_old_scheduling`: every value below 1 is a fraction, others are steps; no hires offset. */
  useOldScheduling?: boolean;
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

/** The schedule of one prompt for `baseSteps` sampling steps. */
export function getPromptSchedule(prompt: string, baseSteps: number, opts: ScheduleOptions = {}): ScheduledPrompt[] {
  const old = opts.useOldScheduling ?? false;
  const hires = opts.hiresSteps !== undefined && !old;
  const steps = hires ? opts.hiresSteps! : baseSteps;
  const intOffset = hires ? baseSteps : 0;
  const fltOffset = hires ? 1 : 0;

  let tree: Node[];
  try {
    tree = new ScheduleParser(prompt).parseStart();
  } catch (e) {
    if (e instanceof ParseFailure) return [{ endAtStep: steps, prompt }];
    throw e;
  }

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
