import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getPromptSchedule, getPromptSchedules, promptAtStep } from '../engine/text/prompt-schedule.ts';

const g = (p: string, steps = 10, hiresSteps?: number) =>
  getPromptSchedule(p, steps, hiresSteps === undefined ? {} : { hiresSteps }).map((s) => [s.endAtStep, s.prompt]);

// The docstring examples of A1111's get_learned_conditioning_prompt_schedules (steps = 10).
test("A1111's documented prompt-editing schedules", () => {
  assert.deepEqual(g('test'), [[10, 'test']]);
  assert.deepEqual(g('a [b:3]'), [[3, 'a '], [10, 'a b']]);
  assert.deepEqual(g('a [b: 3]'), [[3, 'a '], [10, 'a b']]);
  assert.deepEqual(g('a [[[b]]:2]'), [[2, 'a '], [10, 'a [[b]]']]);
  assert.deepEqual(g('[(a:2):3]'), [[3, ''], [10, '(a:2)']]);
  assert.deepEqual(g('a [b : c : 1] d'), [[1, 'a b  d'], [10, 'a  c  d']]);
  assert.deepEqual(g('a[b:[c:d:2]:1]e'), [[1, 'abe'], [2, 'ace'], [10, 'ade']]);
  assert.deepEqual(g('a [unbalanced'), [[10, 'a [unbalanced']]);
  assert.deepEqual(g('a [b:.5] c'), [[5, 'a  c'], [10, 'a b c']]);
  assert.deepEqual(g('((a][:b:c [d:3]'), [[3, '((a][:b:c '], [10, '((a][:b:c d']]);
  assert.deepEqual(g('[a|(b:1.1)]'), [
    [1, 'a'], [2, '(b:1.1)'], [3, 'a'], [4, '(b:1.1)'], [5, 'a'],
    [6, '(b:1.1)'], [7, 'a'], [8, '(b:1.1)'], [9, 'a'], [10, '(b:1.1)'],
  ]);
  assert.deepEqual(g('[fe|]male'), [
    [1, 'female'], [2, 'male'], [3, 'female'], [4, 'male'], [5, 'female'],
    [6, 'male'], [7, 'female'], [8, 'male'], [9, 'female'], [10, 'male'],
  ]);
  assert.deepEqual(g('[fe|||]male'), [
    [1, 'female'], [2, 'male'], [3, 'male'], [4, 'male'], [5, 'female'],
    [6, 'male'], [7, 'male'], [8, 'male'], [9, 'female'], [10, 'male'],
  ]);
  // With a hires pass of 10 steps after 10 base steps.
  assert.deepEqual(g('a [b:.5] c', 10, 10), [[10, 'a b c']]);
  assert.deepEqual(g('a [b:1.5] c', 10, 10), [[5, 'a  c'], [10, 'a b c']]);
});

test('the comment example of prompt_parser.py at 100 steps', () => {
  const p =
    'fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][: in background:0.25] [shoddy:masterful:0.5]';
  assert.deepEqual(g(p, 100), [
    [25, 'fantasy landscape with a mountain and an oak in foreground shoddy'],
    [50, 'fantasy landscape with a lake and an oak in foreground in background shoddy'],
    [60, 'fantasy landscape with a lake and an oak in foreground in background masterful'],
    [75, 'fantasy landscape with a lake and an oak in background masterful'],
    [100, 'fantasy landscape with a lake and a christmas tree in background masterful'],
  ]);
});

test('prompts the grammar rejects are used unchanged', () => {
  // A1111's docstring still lists a schedule for this one, but its current grammar (no `|` in plain text) rejects it.
  assert.deepEqual(g('a [{b|d{:.5] c'), [[10, 'a [{b|d{:.5] c']]);
  assert.deepEqual(g('a | b [c:2]'), [[10, 'a | b [c:2]']]);
  assert.deepEqual(g('trailing [b:2] \\'), [[10, 'trailing [b:2] \\']]);
});

test('edge values of when: beyond the steps, zero, negative, exponent', () => {
  assert.deepEqual(g('[a:b:15]'), [[10, 'a']]);
  assert.deepEqual(g('[a:b:0]'), [[10, 'b']]);
  assert.deepEqual(g('[a:b:-1]'), [[10, 'b']]);
  assert.deepEqual(g('[a:b:0.05]'), [[10, 'b']]);
  assert.deepEqual(g('[a:b:1e1]'), [[10, 'a']]);
  assert.deepEqual(g('[a::2], [:b:3]'), [[2, 'a, '], [3, ', '], [10, ', b']]);
});

test('old scheduling and hires integer offsets', () => {
  const old = getPromptSchedule('[a:b:0.5] [c:d:3]', 10, { hiresSteps: 20, useOldScheduling: true }).map((s) => [s.endAtStep, s.prompt]);
  assert.deepEqual(old, [[3, 'a c'], [5, 'a d'], [10, 'b d']]);
  const hires = getPromptSchedule('[a:b:13]', 10, { hiresSteps: 20 }).map((s) => [s.endAtStep, s.prompt]);
  assert.deepEqual(hires, [[3, 'a'], [20, 'b']]);
});

test('a batch shares schedules for equal prompts; promptAtStep follows the 0-based denoiser counter', () => {
  const [s1, s2, s3] = getPromptSchedules(['x [y:2]', 'plain', 'x [y:2]'], 4);
  assert.equal(s1, s3);
  assert.deepEqual(s2, [{ endAtStep: 4, prompt: 'plain' }]);
  assert.deepEqual([0, 1, 2, 3].map((i) => promptAtStep(s1!, i)), ['x ', 'x ', 'x ', 'x y']);
});

// Prompts where the top-level reading of brackets depends on lark's Earley ambiguity resolution.
// Expected values were produced by A1111's get_learned_conditioning_prompt_schedules under lark 1.3.1.
test('stray brackets next to an edit resolve as A1111 (lark) resolves them', () => {
  assert.deepEqual(g('[b:2]:', 4), [[2, ':'], [4, 'b:']]);
  assert.deepEqual(g('[b:2]::', 4), [[4, '[b:2]::']]);
  assert.deepEqual(g('[b:2]:::', 4), [[2, ':::'], [4, 'b:::']]);
  assert.deepEqual(g('[b:2]::[b:2]', 4), [[2, '[b:2]::'], [4, '[b:2]::b']]);
  assert.deepEqual(g('[a:b:2][]', 4), [[2, 'a[]'], [4, 'b[]']]);
  assert.deepEqual(g('(([a:b:0.5])), x', 4), [[2, '((a)), x'], [4, '((b)), x']]);
  assert.deepEqual(g('(([b:2]))::', 4), [[4, '(([b:2]))::']]);
  assert.deepEqual(g('[[b:2]]::', 4), [[2, '[]::'], [4, '[b]::']]);
  assert.deepEqual(g('::[[c:1]:2]](z:1.1)[)[x|][:b:1])][b:3](w)[q]', 6), [
    [1, '::[:2]](z:1.1)[)x[:b:1])](w)[q]'],
    [2, '::[c:2]](z:1.1)[)[:b:1])](w)[q]'],
    [3, '::[c:2]](z:1.1)[)x[:b:1])](w)[q]'],
    [4, '::[c:2]](z:1.1)[)[:b:1])]b(w)[q]'],
    [5, '::[c:2]](z:1.1)[)x[:b:1])]b(w)[q]'],
    [6, '::[c:2]](z:1.1)[)[:b:1])]b(w)[q]'],
  ]);
});

test('long prompts parse in reasonable time', () => {
  const p = 'masterpiece, (detailed:1.2), [red:blue:0.5] hair, ((forest)), [cat|dog], '.repeat(5);
  const t0 = performance.now();
  const s = getPromptSchedule(p, 20);
  assert.equal(s.length, 20);
  assert.ok(performance.now() - t0 < 5000);
  assert.equal(s[0]!.prompt, 'masterpiece, (detailed:1.2), red hair, ((forest)), cat, '.repeat(5));
});
