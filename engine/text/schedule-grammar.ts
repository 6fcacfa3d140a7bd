/**
 * A1111's prompt-editing grammar (`modules/prompt_parser.py`, a lark grammar) parsed exactly the way lark
 * parses it: lark's Earley parser with its dynamic lexer, its shared packed parse forest with ordered sets,
 * and its ambiguity resolution (first derivation by (empty, rule order), then insertion order; derivations
 * that run into a cycle are dropped). The grammar is ambiguous at the top level — `[`, `]`, `(`, `)` and
 * `:` may be syntax or literal text — and which reading A1111 ends up with depends on that exact
 * procedure, so it is reproduced here step for step rather than approximated.
 *
 * The rule table is lark's compiled form of A1111's grammar (EBNF expanded to BNF, in lark's order):
 *
 *   !start: (prompt | /[][():]/+)*
 *   prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
 *   !emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
 *   scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
 *   alternate: "[" prompt ("|" [prompt])+ "]"
 *   WHITESPACE: /\s+/
 *   plain: /([^\\\[\]():|]|\\.)+/
 *   %import common.SIGNED_NUMBER -> NUMBER
 */

import { UserError } from '../util/errors.ts';

interface Rule {
  id: number;
  origin: string;
  expansion: readonly string[];
  /** Position of this alternative among its origin's rules (lark `rule.order`). */
  order: number;
}

const RULE_TEXT: ReadonlyArray<[string, string]> = [
  ['start', '__start_star_1'],
  ['start', ''],
  ['prompt', '__prompt_star_2'],
  ['prompt', ''],
  ['emphasized', 'LPAR prompt RPAR'],
  ['emphasized', 'LPAR prompt COLON prompt RPAR'],
  ['emphasized', 'LSQB prompt RSQB'],
  ['scheduled', 'LSQB prompt COLON prompt COLON WHITESPACE NUMBER WHITESPACE RSQB'],
  ['scheduled', 'LSQB prompt COLON prompt COLON WHITESPACE NUMBER RSQB'],
  ['scheduled', 'LSQB prompt COLON prompt COLON NUMBER WHITESPACE RSQB'],
  ['scheduled', 'LSQB prompt COLON prompt COLON NUMBER RSQB'],
  ['scheduled', 'LSQB prompt COLON WHITESPACE NUMBER WHITESPACE RSQB'],
  ['scheduled', 'LSQB prompt COLON WHITESPACE NUMBER RSQB'],
  ['scheduled', 'LSQB prompt COLON NUMBER WHITESPACE RSQB'],
  ['scheduled', 'LSQB prompt COLON NUMBER RSQB'],
  ['alternate', 'LSQB prompt __alternate_plus_3 RSQB'],
  ['plain', 'PLAIN'],
  ['__start_plus_0', 'STRAY'],
  ['__start_plus_0', '__start_plus_0 STRAY'],
  ['__start_star_1', 'prompt'],
  ['__start_star_1', '__start_plus_0'],
  ['__start_star_1', '__start_star_1 prompt'],
  ['__start_star_1', '__start_star_1 __start_plus_0'],
  ['__prompt_star_2', 'emphasized'],
  ['__prompt_star_2', 'scheduled'],
  ['__prompt_star_2', 'alternate'],
  ['__prompt_star_2', 'plain'],
  ['__prompt_star_2', 'WHITESPACE'],
  ['__prompt_star_2', '__prompt_star_2 emphasized'],
  ['__prompt_star_2', '__prompt_star_2 scheduled'],
  ['__prompt_star_2', '__prompt_star_2 alternate'],
  ['__prompt_star_2', '__prompt_star_2 plain'],
  ['__prompt_star_2', '__prompt_star_2 WHITESPACE'],
  ['__alternate_plus_3', 'VBAR prompt'],
  ['__alternate_plus_3', 'VBAR'],
  ['__alternate_plus_3', '__alternate_plus_3 VBAR prompt'],
  ['__alternate_plus_3', '__alternate_plus_3 VBAR'],
];

const RULES: readonly Rule[] = (() => {
  const seen = new Map<string, number>();
  return RULE_TEXT.map(([origin, exp], id) => {
    const order = seen.get(origin) ?? 0;
    seen.set(origin, order + 1);
    return { id, origin, expansion: exp ? exp.split(' ') : [], order };
  });
})();

// lark's predictions: for each non-terminal, the rules reachable at its start, in lark's BFS order.
const PROMPT_BODY = [23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const PREDICTIONS: Readonly<Record<string, readonly number[]>> = {
  start: [0, 1, 19, 20, 21, 22, 2, 3, 17, 18, ...PROMPT_BODY],
  prompt: [2, 3, ...PROMPT_BODY],
  emphasized: [4, 5, 6],
  scheduled: [7, 8, 9, 10, 11, 12, 13, 14],
  alternate: [15],
  plain: [16],
  __start_plus_0: [17, 18],
  __start_star_1: [19, 20, 21, 22, 2, 3, 17, 18, ...PROMPT_BODY],
  __prompt_star_2: PROMPT_BODY,
  __alternate_plus_3: [33, 34, 35, 36],
};

// Python `\s` in a str pattern: ASCII whitespace, \x1c-\x1f, \x85 and Unicode spaces (not \ufeff).
const PY_SPACE = '\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
// Python's regex alternation is first-match, as JavaScript's is; `.` there excludes only \n.
const TERMINALS: ReadonlyMap<string, RegExp> = new Map([
  ['NUMBER', /[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.(?:[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)/uy],
  ['WHITESPACE', new RegExp(`[${PY_SPACE}]+`, 'uy')],
  ['STRAY', /[\][():]/uy],
  ['LPAR', /\(/uy],
  ['RPAR', /\)/uy],
  ['COLON', /:/uy],
  ['LSQB', /\[/uy],
  ['RSQB', /\]/uy],
  ['VBAR', /\|/uy],
  ['PLAIN', /(?:[^\\[\]():|]|\\[^\n])+/uy],
]);

/** What terminal `name` matches at `pos` (lark's single regex match), or null. */
export function matchTerminal(name: 'NUMBER' | 'WHITESPACE', text: string, pos: number): string | null {
  const re = TERMINALS.get(name)!;
  re.lastIndex = pos;
  return re.exec(text)?.[0] ?? null;
}

export interface Token {
  type: string;
  value: string;
  start: number;
}

/** A node of the resolved parse tree: the rule applied and its children (all tokens kept). */
export interface ParseTree {
  rule: Rule;
  children: Array<ParseTree | Token>;
}

class Item {
  readonly isComplete: boolean;
  readonly expect: string | undefined;
  /** lark's (s, start, rule) identity. */
  readonly key: string;
  node: SymbolNode | null = null;

  constructor(
    readonly rule: Rule,
    readonly ptr: number,
    readonly start: number,
  ) {
    this.isComplete = rule.expansion.length === ptr;
    this.expect = this.isComplete ? undefined : rule.expansion[ptr];
    this.key = `${rule.id}.${ptr}.${start}`;
  }

  /** lark's `s`: the origin for a complete item, the LR(0) position otherwise. */
  get s(): string {
    return this.isComplete ? this.rule.origin : `${this.rule.id}.${this.ptr}`;
  }

  advance(): Item {
    return new Item(this.rule, this.ptr + 1, this.start);
  }
}

/** lark's OrderedSet of items (a dict keyed by item identity), indexed by the symbol each item expects. */
class ItemSet {
  private readonly m = new Map<string, Item>();
  private readonly byExpect = new Map<string, Item[]>();
  add(item: Item): void {
    if (this.m.has(item.key)) return;
    this.m.set(item.key, item);
    if (item.expect !== undefined) {
      let list = this.byExpect.get(item.expect);
      if (!list) this.byExpect.set(item.expect, (list = []));
      list.push(item);
    }
  }
  /** Items expecting `symbol`, in insertion order, as a snapshot. */
  expecting(symbol: string): Item[] {
    return [...(this.byExpect.get(symbol) ?? [])];
  }
  has(item: Item): boolean {
    return this.m.has(item.key);
  }
  get size(): number {
    return this.m.size;
  }
  values(): Item[] {
    return [...this.m.values()];
  }
}

class TokenNode {
  constructor(readonly token: Token) {}
}

type ForestChild = SymbolNode | TokenNode | null;

class PackedNode {
  constructor(
    readonly parent: SymbolNode,
    readonly rule: Rule,
    readonly left: SymbolNode | null,
    readonly right: ForestChild,
  ) {}
  get isEmpty(): boolean {
    return this.left === null && this.right === null;
  }
  children(): Array<SymbolNode | TokenNode> {
    const out: Array<SymbolNode | TokenNode> = [];
    if (this.left) out.push(this.left);
    if (this.right) out.push(this.right);
    return out;
  }
}

let nextNodeId = 0;
const tokenIds = new WeakMap<TokenNode, string>();
function childId(c: ForestChild): string {
  if (c === null) return '-';
  if (c instanceof SymbolNode) return `s${c.id}`;
  let id = tokenIds.get(c);
  if (!id) {
    // lark compares token nodes by token type and text.
    id = `t${c.token.type}:${c.token.value}`;
    tokenIds.set(c, id);
  }
  return id;
}

class SymbolNode {
  readonly id = nextNodeId++;
  private readonly families = new Map<string, PackedNode>();
  constructor(
    readonly isIntermediate: boolean,
  ) {}

  addFamily(rule: Rule, left: SymbolNode | null, right: ForestChild): void {
    const key = `${childId(left)}|${childId(right)}`;
    if (!this.families.has(key)) this.families.set(key, new PackedNode(this, rule, left, right));
  }

  /** Derivations in lark's order: non-empty first, then by rule order; ties keep insertion order. */
  children(): PackedNode[] {
    return [...this.families.values()].sort((a, b) => Number(a.isEmpty) - Number(b.isEmpty) || a.rule.order - b.rule.order);
  }
}

export class GrammarError extends Error {}

/**
 * The prompt needs more parser work than `maxWork` allows. Earley parsing of this ambiguous grammar costs up
 * to O(n³) time and O(n²) memory in the number of brackets (`[` × 2000 takes lark, and a faithful port,
 * seconds to minutes); a prompt over the budget is refused instead of stalling the process.
 */
export class PromptTooComplexError extends UserError {
  constructor(readonly work: number, readonly maxWork: number) {
    super(`prompt is too complex for the prompt-editing parser (more than ${maxWork} parser steps: brackets nested or left open hundreds deep, or thousands of edits)`, { status: 422 });
  }
}

/**
 * Parser steps one prompt may take (about 0.1–0.5 s). `[` nested 100 deep takes ≈ 60,000; ordinary
 * prompts split into small groups (see prompt-schedule.ts) and need about 30 per character; repeated groups are free.
 */
export const DEFAULT_MAX_PARSE_WORK = 200_000;

/** Counts items and derivations made, and stops the parse once over budget; one budget may span several parses. */
export class ParseBudget {
  used = 0;
  constructor(readonly max: number) {}
  spend(n = 1): void {
    this.used += n;
    if (this.used > this.max) throw new PromptTooComplexError(this.used, this.max);
  }
}

type NodeCache = Map<string, SymbolNode>;

function cached(cache: NodeCache, item: Item, start: number): SymbolNode {
  const label = `${item.s}@${start}`;
  let n = cache.get(label);
  if (!n) {
    n = new SymbolNode(!item.isComplete);
    cache.set(label, n);
  }
  return n;
}

function predictAndComplete(i: number, toScan: ItemSet, columns: ItemSet[], cache: NodeCache, budget: ParseBudget): void {
  const held = new Map<string, SymbolNode>();
  const column = columns[i]!;
  const items = column.values();
  while (items.length > 0) {
    const item = items.pop()!;
    budget.spend();
    if (item.isComplete) {
      if (item.node === null) {
        item.node = cached(cache, item, item.start);
        item.node.addFamily(item.rule, null, null);
      }
      if (item.start === i) held.set(item.rule.origin, item.node);
      const originators = columns[item.start]!.expecting(item.rule.origin);
      budget.spend(originators.length);
      for (const originator of originators) {
        const next = originator.advance();
        next.node = cached(cache, next, originator.start);
        next.node.addFamily(next.rule, originator.node, item.node);
        enqueue(next, toScan, column, items);
      }
    } else if (!TERMINALS.has(item.expect!)) {
      const fresh = PREDICTIONS[item.expect!]!.map((r) => new Item(RULES[r]!, 0, i));
      budget.spend(fresh.length);
      const done = held.get(item.expect!);
      if (done) {
        const next = item.advance();
        next.node = cached(cache, next, item.start);
        next.node.addFamily(next.rule, item.node, done);
        fresh.push(next);
      }
      for (const n of fresh) enqueue(n, toScan, column, items);
    }
  }
}

function enqueue(item: Item, toScan: ItemSet, column: ItemSet, items: Item[]): void {
  if (item.expect !== undefined && TERMINALS.has(item.expect)) {
    toScan.add(item);
  } else if (!column.has(item)) {
    column.add(item);
    items.push(item);
  }
}

function parseForest(text: string, budget: ParseBudget): SymbolNode {
  const columns: ItemSet[] = [new ItemSet()];
  let toScan = new ItemSet();
  for (const r of PREDICTIONS.start!) {
    const item = new Item(RULES[r]!, 0, 0);
    if (item.expect !== undefined && TERMINALS.has(item.expect)) toScan.add(item);
    else columns[0]!.add(item);
  }
  const delayed = new Map<number, Array<[Item, Token]>>();
  let cache: NodeCache = new Map();
  for (let i = 0; i < text.length; i++) {
    predictAndComplete(i, toScan, columns, cache, budget);
    budget.spend(toScan.size);
    // Scanner: every expected terminal is matched here (longest single match, as lark's dynamic lexer).
    cache = new Map();
    for (const item of toScan.values()) {
      const re = TERMINALS.get(item.expect!)!;
      re.lastIndex = i;
      const m = re.exec(text);
      if (m) {
        const end = i + m[0].length;
        let list = delayed.get(end);
        if (!list) delayed.set(end, (list = []));
        list.push([item, { type: item.expect!, value: m[0], start: i }]);
      }
    }
    const nextToScan = new ItemSet();
    const nextSet = new ItemSet();
    columns.push(nextSet);
    for (const [item, token] of delayed.get(i + 1) ?? []) {
      const next = item.advance();
      next.node = cached(cache, next, next.start);
      next.node.addFamily(next.rule, item.node, new TokenNode(token));
      if (next.expect !== undefined && TERMINALS.has(next.expect)) nextToScan.add(next);
      else nextSet.add(next);
    }
    delayed.delete(i + 1);
    if (nextSet.size === 0 && delayed.size === 0 && nextToScan.size === 0) {
      throw new GrammarError(`unexpected character at ${i}`);
    }
    toScan = nextToScan;
  }
  predictAndComplete(text.length, toScan, columns, cache, budget);
  const solution = columns[text.length]!
    .values()
    .find((it) => it.isComplete && it.node !== null && it.rule.origin === 'start' && it.start === 0);
  if (!solution) throw new GrammarError('unexpected end of prompt');
  return solution.node!;
}

const DISCARD = Symbol('discard');
type Datum = ParseTree | Token | Datum[] | typeof DISCARD;

/**
 * lark's ForestToParseTree with resolve_ambiguity: an explicit-stack depth-first walk that takes, at each
 * symbol node, the first derivation that completes without entering a cycle.
 */
function resolveForest(root: SymbolNode, budget: ParseBudget): ParseTree {
  type Entry = SymbolNode | PackedNode | TokenNode | Iterator<SymbolNode | PackedNode | TokenNode | null>;
  const visiting = new Set<object>();
  const successful = new Set<SymbolNode>();
  const data = new Map<object | 'result', Datum[]>();
  const nodeStack: Array<object | 'result'> = ['result'];
  data.set('result', []);
  let retreat = false;
  let cycleNode: object | null = null;

  const isIterator = (e: Entry): e is Iterator<SymbolNode | PackedNode | TokenNode | null> =>
    !(e instanceof SymbolNode || e instanceof PackedNode || e instanceof TokenNode);
  const checkCycle = (node: object): boolean => {
    if (retreat) {
      if (node === cycleNode || (node instanceof SymbolNode && successful.has(node))) {
        cycleNode = null;
        retreat = false;
      } else {
        return true;
      }
    }
    return false;
  };
  const outHelper = (node: object, method: (node: never, d: Datum[]) => Datum) => {
    nodeStack.pop();
    const transformed = method(node as never, data.get(node)!);
    if (transformed !== DISCARD) data.get(nodeStack[nodeStack.length - 1]!)!.push(transformed);
    data.delete(node);
  };
  const transformSymbol = (node: SymbolNode, d: Datum[]): Datum => {
    if (!successful.has(node)) return DISCARD;
    if (checkCycle(node)) return DISCARD;
    successful.delete(node);
    if (d.length > 1) throw new Error('unresolved ambiguity');
    return d.length === 1 ? d[0]! : DISCARD;
  };
  const transformPacked = (node: PackedNode, d: Datum[]): Datum => {
    if (checkCycle(node)) return DISCARD;
    if (successful.has(node.parent)) return DISCARD;
    const children: Array<ParseTree | Token> = [];
    let left: Datum | undefined;
    let right: Datum | undefined;
    if (d.length > 0) {
      if (node.left !== null) {
        left = d[0];
        if (d.length > 1) right = d[1];
      } else {
        right = d[0];
      }
    }
    if (left !== undefined) {
      if (node.left!.isIntermediate && Array.isArray(left)) children.push(...(left as Array<ParseTree | Token>));
      else children.push(left as ParseTree | Token);
    }
    if (right !== undefined) children.push(right as ParseTree | Token);
    return node.parent.isIntermediate ? (children as Datum[]) : { rule: node.rule, children };
  };

  const stack: Entry[] = [root];
  const path: object[] = [];
  while (stack.length > 0) {
    budget.spend();
    const current = stack[stack.length - 1]!;
    if (isIterator(current)) {
      const r = current.next();
      if (r.done) {
        stack.pop();
        continue;
      }
      const next = r.value;
      if (next === null) continue;
      if (visiting.has(next)) {
        cycleNode = next;
        retreat = true;
        continue;
      }
      stack.push(next);
      continue;
    }
    if (current instanceof TokenNode) {
      data.get(nodeStack[nodeStack.length - 1]!)!.push(current.token);
      stack.pop();
      continue;
    }
    if (visiting.has(current)) {
      if (current instanceof PackedNode) {
        outHelper(current, transformPacked);
        if (!retreat) successful.add(current.parent);
      } else {
        outHelper(current, transformSymbol);
      }
      stack.pop();
      path.pop();
      visiting.delete(current);
      continue;
    }
    visiting.add(current);
    path.push(current);
    nodeStack.push(current);
    data.set(current, []);
    let next: Array<SymbolNode | PackedNode | TokenNode> | null;
    if (current instanceof PackedNode) {
      retreat = false;
      next = successful.has(current.parent) ? null : current.children();
    } else {
      next = retreat ? null : current.children();
    }
    if (next === null) continue;
    stack.push(next[Symbol.iterator]());
  }
  const result = data.get('result')!;
  if (result.length !== 1) throw new GrammarError('no derivation');
  return result[0] as ParseTree;
}

/**
 * Parses a prompt as A1111's lark parser does; throws GrammarError where lark raises, and
 * PromptTooComplexError once the parse takes more than `maxWork` steps (time and memory are linear in it).
 */
export function parseScheduleGrammar(text: string, budget = new ParseBudget(DEFAULT_MAX_PARSE_WORK)): ParseTree {
  return resolveForest(parseForest(text, budget), budget);
}
