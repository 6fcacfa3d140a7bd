import { test } from 'node:test';
import assert from 'node:assert/strict';
// @ts-expect-error: a plain ES module without type declarations (scripts/ runs under node directly)
import { checkLayers, cycles } from '../scripts/check-layers.mjs';

test('the source tree has no import cycle and no upward import (engine ↛ server/cli, sd ↛ lora ↛ generate ↛ train)', () => {
  const r = checkLayers() as { modules: number; problems: string[] };
  assert.ok(r.modules > 100, `only ${r.modules} modules found`);
  assert.deepEqual(r.problems, []);
});

test('the cycle finder reports a ring and only the ring', () => {
  const g = new Map([
    ['a', ['b']],
    ['b', ['c']],
    ['c', ['a', 'd']],
    ['d', []],
    ['e', ['e']],
  ]);
  const found = (cycles(g) as string[][]).map((c) => [...c].sort().join(','));
  assert.deepEqual(found.sort(), ['a,b,c', 'e']);
});
