import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePromptAttention } from '../engine/text/prompt-parser.ts';
import { UserError } from '../engine/util/errors.ts';

// Examples from the docstring of A1111's modules/prompt_parser.py parse_prompt_attention.
test("A1111's documented emphasis examples", () => {
  assert.deepEqual(parsePromptAttention('normal text'), [['normal text', 1.0]]);
  assert.deepEqual(parsePromptAttention('an (important) word'), [['an ', 1.0], ['important', 1.1], [' word', 1.0]]);
  assert.deepEqual(parsePromptAttention('(unbalanced'), [['unbalanced', 1.1]]);
  assert.deepEqual(parsePromptAttention('\\(literal\\]'), [['(literal]', 1.0]]);
  assert.deepEqual(parsePromptAttention('(unnecessary)(parens)'), [['unnecessaryparens', 1.1]]);
  assert.deepEqual(parsePromptAttention('a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).'), [
    ['a ', 1.0],
    ['house', 1.5730000000000004],
    [' ', 1.1],
    ['on', 1.0],
    [' a ', 1.1],
    ['hill', 0.55],
    [', sun, ', 1.1],
    ['sky', 1.4641000000000006],
    ['.', 1.1],
  ]);
});

test('explicit weights, square brackets and nesting multiply', () => {
  assert.deepEqual(parsePromptAttention('a (b:1.5) c'), [['a ', 1], ['b', 1.5], [' c', 1]]);
  assert.deepEqual(parsePromptAttention('(b: 1.5 )'), [['b', 1.5]]);
  assert.deepEqual(parsePromptAttention('[x]'), [['x', 1 / 1.1]]);
  assert.deepEqual(parsePromptAttention('[[x]]'), [['x', 1 / 1.1 / 1.1]]);
  assert.deepEqual(parsePromptAttention('((x))'), [['x', 1.1 * 1.1]]);
  assert.deepEqual(parsePromptAttention('((x:2))'), [['x', 2 * 1.1]]);
  assert.deepEqual(parsePromptAttention('[unclosed'), [['unclosed', 1 / 1.1]]);
  // A weight outside round brackets and stray closers are plain text.
  assert.deepEqual(parsePromptAttention('x:1.5) y]'), [['x:1.5) y]', 1]]);
  assert.deepEqual(parsePromptAttention('(a:-1)'), [['a', -1]]);
});

test('escapes: \\\\ is a backslash, a lone backslash is dropped', () => {
  assert.deepEqual(parsePromptAttention('a \\\\ b'), [['a \\ b', 1]]);
  assert.deepEqual(parsePromptAttention('a \\ b'), [['a  b', 1]]);
  assert.deepEqual(parsePromptAttention('\\(x\\)'), [['(x)', 1]]);
});

test('BREAK splits into a marker fragment with weight -1, only as a whole uppercase word', () => {
  assert.deepEqual(parsePromptAttention('a cat BREAK a dog'), [['a cat', 1], ['BREAK', -1], ['a dog', 1]]);
  assert.deepEqual(parsePromptAttention('BREAKfast break BREAK_X'), [['BREAKfast break BREAK_X', 1]]);
  assert.deepEqual(parsePromptAttention('éBREAK'), [['éBREAK', 1]]);
  // Inside brackets the marker is multiplied too, so it no longer counts as BREAK (A1111 quirk kept).
  assert.deepEqual(parsePromptAttention('(a BREAK b)'), [['a', 1.1], ['BREAK', -1.1], ['b', 1.1]]);
});

test('empty prompt is one empty fragment; a malformed weight is a UserError', () => {
  assert.deepEqual(parsePromptAttention(''), [['', 1]]);
  assert.throws(() => parsePromptAttention('(a:1.2.3)'), (e: unknown) => e instanceof UserError && e.message.includes('1.2.3'));
});
