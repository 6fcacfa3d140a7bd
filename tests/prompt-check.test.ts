/**
 * The server checks a request's prompts on a worker thread before queueing; the parses made there reach this
 * thread's cache, so the job's own parse of the same text is a lookup instead of a second Earley run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkPrompts, stopPromptChecks } from '../server/prompt-check.ts';
import { ValidationError } from '../server/errors.ts';
import { cachedParses, getPromptSchedule } from '../engine/text/prompt-schedule.ts';
import { DEFAULT_MAX_PARSE_WORK } from '../engine/text/schedule-grammar.ts';
import { extractPromptTags } from '../engine/lora/prompt-tags.ts';

test('prompt parses made by the worker check are reused by the job; refused prompts name their field', async () => {
  try {
    // Groups the quick readers cannot take (nested edits, stray brackets) need the Earley parser.
    const prompt = Array.from({ length: 12 }, (_, i) => `[[a${i}:b${i}:0.${(i % 9) + 1}]:c${i}:${i % 7}] [x${i}|[y${i}:z${i}:3]] (w:1.${i % 9})`).join(', ') + ' <lora:style:0.7>';
    const negative = 'blurry [[bad:worse:4]|ugly]';
    // The job parses the prompt without its extra-network tags.
    const bare = extractPromptTags(prompt).prompt;
    assert.deepEqual(cachedParses([bare, negative]), [], 'nothing cached before the check');
    await checkPrompts({ prompt, negative_prompt: negative }, 20);
    assert.deepEqual(cachedParses([bare, negative]).map((p) => p.prompt), [bare, negative], 'the worker’s parses reached this thread');
    const t0 = performance.now();
    const cached = getPromptSchedule(bare, 20);
    const hitMs = performance.now() - t0;
    const t1 = performance.now();
    // A budget other than the default bypasses the cache: the same parse, made here.
    const fresh = getPromptSchedule(bare, 20, { maxParseWork: DEFAULT_MAX_PARSE_WORK + 1 });
    const parseMs = performance.now() - t1;
    console.log(`prompt-check: ${bare.length}-character prompt, job's schedule from the cached parse ${hitMs.toFixed(1)} ms, parsed again ${parseMs.toFixed(1)} ms`);
    assert.deepEqual(cached, fresh);
    assert.deepEqual(getPromptSchedule(negative, 20), getPromptSchedule(negative, 20, { maxParseWork: DEFAULT_MAX_PARSE_WORK + 1 }));

    await assert.rejects(checkPrompts({ prompt: 'ok', hr_negative_prompt: '['.repeat(4000) }, 20), (e: unknown) => {
      assert.ok(e instanceof ValidationError);
      assert.deepEqual(e.issues[0]!.loc, ['body', 'hr_negative_prompt']);
      assert.match(e.issues[0]!.msg, /too complex/);
      return true;
    });
  } finally {
    await stopPromptChecks();
  }
});
