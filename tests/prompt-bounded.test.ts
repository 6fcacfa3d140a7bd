/**
 * Prompt-editing parsing stays fast and bounded: prompts whose brackets pair up parse group by group in
 * linear time with exactly lark's answer (checked against the whole-prompt parse on seeded random prompts
 * full of stray brackets and colons), and a prompt the Earley parser cannot finish in its budget is refused
 * with a 422 UserError instead of stalling or exhausting the heap.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getPromptSchedule } from '../engine/text/prompt-schedule.ts';
import { PromptTooComplexError } from '../engine/text/schedule-grammar.ts';
import { isUserError } from '../engine/util/errors.ts';
import { rng } from './support/random.ts';

test('grouped parsing gives the whole-prompt (lark) answer on seeded random prompts', () => {
  const rnd = rng(20261206);
  const pieces = ['[', ']', '(', ')', ':', '|', 'a', 'b', ' ', '1', '0.5', ', ', '\\', '[a:b:1]', '[x|y]', '(c:1.2)', '[d::2]'];
  let compared = 0;
  let grouped = 0;
  const t0 = performance.now();
  while (compared < 300) {
    let p = '';
    const len = 2 + Math.floor(rnd() * 12);
    for (let i = 0; i < len; i++) p += pieces[Math.floor(rnd() * pieces.length)];
    if (!p.includes('[')) continue;
    compared++;
    const run = (whole: boolean) => {
      try {
        return getPromptSchedule(p, 4, { wholeParse: whole });
      } catch (e) {
        return String(e);
      }
    };
    const a = run(true);
    const b = run(false);
    assert.deepEqual(b, a, `prompt ${JSON.stringify(p)}`);
    if (JSON.stringify(getPromptSchedule(p, 4)) !== JSON.stringify([{ endAtStep: 4, prompt: p }])) grouped++;
  }
  assert.ok(grouped > 50, `only ${grouped} random prompts had an edit or alternation`);
  assert.ok(performance.now() - t0 < 60_000);
});

function timed<T>(f: () => T): { value: T | Error; ms: number } {
  const t0 = performance.now();
  try {
    return { value: f(), ms: performance.now() - t0 };
  } catch (e) {
    return { value: e as Error, ms: performance.now() - t0 };
  }
}

test('prompts that used to take seconds to minutes (or the heap) now parse in linear time', () => {
  const rss0 = process.memoryUsage().rss;
  // 10 KB of emphasis, 2000 prompt edits, a long ordinary prompt.
  const em = timed(() => getPromptSchedule('[x] '.repeat(2500), 20));
  assert.ok(!(em.value instanceof Error));
  assert.equal(em.value[0]!.prompt, '[x] '.repeat(2500));
  const edits = Array.from({ length: 2000 }, (_, i) => `[a${i}:b${i}:0.${(i % 9) + 1}]`).join(' ');
  const ed = timed(() => getPromptSchedule(edits, 20));
  assert.ok(!(ed.value instanceof Error), String(ed.value));
  assert.equal(ed.value.length, 10, 'edits at 0.1 … 0.9 of 20 steps, then the last step');
  assert.ok(ed.value[0]!.prompt.startsWith('a0 a1 a2'));
  const long = 'masterpiece, (detailed:1.2), [red:blue:0.5] hair, ((forest)), [cat|dog], '.repeat(60);
  const lg = timed(() => getPromptSchedule(long, 20));
  assert.ok(!(lg.value instanceof Error));
  assert.equal(lg.value.length, 20);
  console.log(`parse: emphasis ${em.ms.toFixed(0)} ms, edits ${ed.ms.toFixed(0)} ms, long ${lg.ms.toFixed(0)} ms`);
  for (const [name, t] of [['emphasis', em], ['edits', ed], ['long', lg]] as const) assert.ok(t.ms < 3000, `${name} took ${t.ms.toFixed(0)} ms`);
  assert.ok(process.memoryUsage().rss - rss0 < 512 * 2 ** 20, 'memory stays bounded');
});

test('brackets left open thousands deep are refused quickly with a 422 naming the problem', () => {
  for (const p of ['['.repeat(5000) + 'cat', '['.repeat(2000), '[a:'.repeat(3000) + 'x']) {
    const r = timed(() => getPromptSchedule(p, 20));
    assert.ok(r.value instanceof PromptTooComplexError, `${p.slice(0, 12)}…: ${String(r.value).slice(0, 80)}`);
    assert.ok(isUserError(r.value) && r.value.status === 422);
    assert.match(r.value.message, /too complex/);
    console.log(`refused after ${r.ms.toFixed(0)} ms`);
    // Generous for a loaded CI machine: before, these took minutes or ended the process.
    assert.ok(r.ms < 10_000, `refused after ${r.ms.toFixed(0)} ms`);
  }
  // Deep but finishable nesting still parses, as A1111 does.
  const nested = getPromptSchedule('[a:'.repeat(40) + 'x' + ':0.5]'.repeat(40), 10);
  assert.equal(nested.at(-1)!.prompt, 'x');
});
