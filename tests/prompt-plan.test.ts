import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadClipTokenizer, planConditioning, planComposable, chunkPrompt, emptyChunk } from '../engine/text/index.ts';
import { fixturesDir } from './support/paths.ts';

const tok = await loadClipTokenizer(join(fixturesDir, 'sd-tiny', 'diffusers', 'tokenizer'));

test('each schedule is encoded as one batch per chunk index, short texts filled with empty chunks', () => {
  const long = `${'cat '.repeat(80)}`;
  const prompt = `[${long}:dog:3]`;
  const [plan, again, other] = planConditioning(tok, [prompt, prompt, 'dog'], 10);
  assert.equal(plan, again);
  assert.deepEqual(plan!.schedule.map((s) => s.endAtStep), [3, 10]);
  assert.equal(plan!.chunkBatches.length, 2);
  // Text 0 (the long one) has two chunks, text 1 ("dog") one: its second slot is the empty chunk.
  assert.deepEqual(plan!.chunkBatches[0]![0], chunkPrompt(tok, plan!.schedule[0]!.prompt)[0]);
  assert.deepEqual(plan!.chunkBatches[1]![0], chunkPrompt(tok, plan!.schedule[0]!.prompt)[1]);
  assert.deepEqual(plan!.chunkBatches[0]![1], chunkPrompt(tok, 'dog')[0]);
  assert.deepEqual(plan!.chunkBatches[1]![1], emptyChunk(tok));
  assert.equal(other!.chunkBatches.length, 1);
});

test('composable prompts share one flat list of distinct sub-prompts', () => {
  const p = planComposable(['a cat AND a dog:0.5', 'a dog:0.5 AND a fox']);
  assert.deepEqual(p.subPrompts, ['a cat', ' a dog', 'a dog', ' a fox']);
  assert.deepEqual(p.uses, [
    [{ index: 0, weight: 1 }, { index: 1, weight: 0.5 }],
    [{ index: 2, weight: 0.5 }, { index: 3, weight: 1 }],
  ]);
});
