/**
 * A1111 prompt editing and alternation (`prompt_parser.get_learned_conditioning_prompt_schedules`):
 * `[from:to:when]`, `[to:when]`, `[from::when]` and `[a|b|c]` turn one prompt into a list of
 * (last step, prompt text) pairs. A prompt that A1111's grammar rejects (a `|` outside an alternation,
 * a trailing backslash) is used unchanged for every step, as A1111 does.
 *
 * The prompt is parsed by a port of lark's Earley parser (schedule-grammar.ts), because whether a bracket
 * at the top level is syntax or literal text depends on lark's ambiguity resolution.
 */
import { GrammarError, parseScheduleGrammar, type ParseTree, type Token } from './schedule-grammar.ts';

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

  // Without `[` there is no edit or alternation, and a prompt the grammar rejects is kept as it is anyway.
  if (!prompt.includes('[')) return [{ endAtStep: steps, prompt }];
  let tree: Node[];
  try {
    tree = toNodes(parseScheduleGrammar(prompt));
  } catch (e) {
    if (e instanceof GrammarError) return [{ endAtStep: steps, prompt }];
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
