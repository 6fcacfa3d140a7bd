import { test } from 'node:test';
import assert from 'node:assert/strict';
import { extractPromptTags } from '../engine/lora/prompt-tags.ts';

test('positional and named multipliers follow A1111 (unet defaults to te; named overrides positional)', () => {
  const t = extractPromptTags('a <lora:a:0.8> b <lora:b:1:0.5>, <lora:c:te=0.8:unet=0.5> <lyco:d:unet=0.6> <lora:e> <lora:f:0.3:unet=-1:dyn=4> <lora:g:0.3:0.2:5> <lora:h:0.3:unet=-1:4>');
  assert.deepEqual(
    t.loras.map(({ type, name, te, unet, dyn }) => ({ type, name, te, unet, dyn })),
    [
      { type: 'lora', name: 'a', te: 0.8, unet: 0.8, dyn: undefined },
      { type: 'lora', name: 'b', te: 1, unet: 0.5, dyn: undefined },
      { type: 'lora', name: 'c', te: 0.8, unet: 0.5, dyn: undefined },
      { type: 'lyco', name: 'd', te: 1, unet: 0.6, dyn: undefined },
      { type: 'lora', name: 'e', te: 1, unet: 1, dyn: undefined },
      { type: 'lora', name: 'f', te: 0.3, unet: -1, dyn: 4 },
      { type: 'lora', name: 'g', te: 0.3, unet: 0.2, dyn: 5 },
      // positional [h, 0.3, 4]: the 4 is the UNet multiplier, then unet= overrides it; there is no dyn.
      { type: 'lora', name: 'h', te: 0.3, unet: -1, dyn: undefined },
    ],
  );
  assert.equal(t.prompt, 'a  b ,      ');
});

test('tags are stripped, whatever their type; other types are returned for logging', () => {
  const t = extractPromptTags('photo, <hypernet:h:0.5>cat <unknown:x>');
  assert.equal(t.prompt, 'photo, cat ');
  assert.deepEqual(t.other.map((o) => o.type), ['hypernet', 'unknown']);
  assert.equal(t.loras.length, 0);
  assert.equal(extractPromptTags('no tags (at:1.2) <notatag>').prompt, 'no tags (at:1.2) <notatag>');
});

test('the default multiplier applies when the tag gives none', () => {
  const t = extractPromptTags('<lora:x> <lora:y:0.2>', { defaultMultiplier: 0.7 });
  assert.deepEqual(t.loras.map((l) => [l.te, l.unet]), [[0.7, 0.7], [0.2, 0.2]]);
});

test('names keep spaces and dots; a value with two = is positional; bad numbers are a UserError naming the tag', () => {
  assert.equal(extractPromptTags('<lora:my style v1.5:0.5>').loras[0]!.name, 'my style v1.5');
  assert.throws(() => extractPromptTags('<lora:x:abc>'), (e: Error) => e.name === 'UserError' && /<lora:x:abc>/.test(e.message));
  assert.throws(() => extractPromptTags('<lora:x:te=1=2>'), /<lora:x:te=1=2>/);
  assert.equal(extractPromptTags('<lora:x: 1e-1 >').loras[0]!.te, 0.1);
});
