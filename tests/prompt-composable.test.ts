import { test } from 'node:test';
import assert from 'node:assert/strict';
import { splitComposablePrompt } from '../engine/text/index.ts';

test('AND splits sub-prompts with optional trailing weights', () => {
  assert.deepEqual(splitComposablePrompt('a cat AND a dog:0.5'), [
    { text: 'a cat', weight: 1 },
    { text: ' a dog', weight: 0.5 },
  ]);
  assert.deepEqual(splitComposablePrompt('x : 2 AND y :.5 '), [
    { text: 'x', weight: 2 },
    { text: ' y', weight: 0.5 },
  ]);
  // Only the whole uppercase word splits; emphasis weights inside are untouched.
  assert.deepEqual(splitComposablePrompt('ANDY and (cat:1.2)'), [{ text: 'ANDY and (cat:1.2)', weight: 1 }]);
  assert.deepEqual(splitComposablePrompt('a:-1'), [{ text: 'a', weight: -1 }]);
});
