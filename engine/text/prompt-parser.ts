import { UserError } from '../util/errors.ts';

/**
 * A1111 emphasis syntax (`prompt_parser.parse_prompt_attention`): splits a prompt into text fragments with
 * their attention weights. `(x)` multiplies by 1.1, `[x]` divides by 1.1, `(x:1.3)` multiplies by 1.3,
 * nesting multiplies; `\(`, `\)`, `\[`, `\]`, `\\` are literals; brackets left open close at the end;
 * `BREAK` becomes the fragment `["BREAK", -1]`; neighbouring fragments of equal weight merge.
 */

// Alternatives in A1111's order; the first that matches at a position wins.
const ATTENTION = /\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()[\]:]+|:/gu;
// Python's `\b` is Unicode-aware: a word character is a letter, digit or underscore in any script.
const BREAK_SPLIT = /\s*(?<![\p{L}\p{N}_])BREAK(?![\p{L}\p{N}_])\s*/u;

export type AttentionFragment = [text: string, weight: number];

const ROUND = 1.1;
const SQUARE = 1 / 1.1;

export function parsePromptAttention(text: string): AttentionFragment[] {
  const res: AttentionFragment[] = [];
  const round: number[] = [];
  const square: number[] = [];
  const multiplyRange = (start: number, m: number) => {
    for (let p = start; p < res.length; p++) res[p]![1] *= m;
  };

  for (const m of text.matchAll(ATTENTION)) {
    const tok = m[0];
    const weight = m[1];
    if (tok.startsWith('\\')) {
      res.push([tok.slice(1), 1.0]);
    } else if (tok === '(') {
      round.push(res.length);
    } else if (tok === '[') {
      square.push(res.length);
    } else if (weight !== undefined && round.length > 0) {
      multiplyRange(round.pop()!, parseWeight(weight, text));
    } else if (tok === ')' && round.length > 0) {
      multiplyRange(round.pop()!, ROUND);
    } else if (tok === ']' && square.length > 0) {
      multiplyRange(square.pop()!, SQUARE);
    } else {
      tok.split(BREAK_SPLIT).forEach((part, i) => {
        if (i > 0) res.push(['BREAK', -1]);
        res.push([part, 1.0]);
      });
    }
  }
  for (const pos of round) multiplyRange(pos, ROUND);
  for (const pos of square) multiplyRange(pos, SQUARE);
  if (res.length === 0) res.push(['', 1.0]);

  for (let i = 0; i + 1 < res.length; ) {
    if (res[i]![1] === res[i + 1]![1]) {
      res[i]![0] += res[i + 1]![0];
      res.splice(i + 1, 1);
    } else {
      i++;
    }
  }
  return res;
}

/** Python `float()` of the matched `[+-]?[.\d]+`: rejects `.`, `1.2.3` and the like, which A1111 fails on too. */
function parseWeight(s: string, prompt: string): number {
  if (!/^[+-]?(?:\d+\.?\d*|\.\d+)$/.test(s)) {
    throw new UserError(`invalid emphasis weight ${JSON.stringify(s)} in prompt ${JSON.stringify(prompt)}`);
  }
  return Number(s);
}
