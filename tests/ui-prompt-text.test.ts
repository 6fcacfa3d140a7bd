/** The browser UI's prompt and caption text helpers (plugin/ui/src/prompt-text.ts), which run in Node too. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  addLoraTag, completeLora, findLoraTags, highlightSpans, loraPrefixAt, prefixTrigger, removeLoraTag, setLoraWeight, tagCounts,
} from '../plugin/ui/src/prompt-text.ts';

test('LoRA tags are found with their first weight, re-weighted, added once and removed', () => {
  const p = 'a cat <lora:style_a:0.8> (red:1.2) <lora:b> <lora:c:0.5:0.3>';
  assert.deepEqual(findLoraTags(p).map((x) => [x.name, x.weight]), [['style_a', 0.8], ['b', 1], ['c', 0.5]]);
  assert.equal(setLoraWeight(p, 'style_a', 0.25), 'a cat <lora:style_a:0.25> (red:1.2) <lora:b> <lora:c:0.5:0.3>');
  assert.equal(addLoraTag('a cat', 'x'), 'a cat, <lora:x:1>');
  assert.equal(addLoraTag('', 'x', 0.5), '<lora:x:0.5>');
  assert.equal(addLoraTag('a cat, <lora:x:1>', 'x', 0.7), 'a cat, <lora:x:0.7>', 'an existing tag is re-weighted, not repeated');
  assert.equal(removeLoraTag('a, <lora:x:1>, b', 'x'), 'a, b');
});

test('completion: the partial name at the caret, and the whole tag replaced on completion', () => {
  const text = 'a cat, <lora:st';
  const at = loraPrefixAt(text, text.length)!;
  assert.deepEqual(at, { partial: 'st', start: 7 });
  assert.equal(loraPrefixAt('a cat <lora:x:1> dog', 20), null);
  const done = completeLora(text + ' dog', at.start, text.length, 'style_a');
  assert.equal(done.text, 'a cat, <lora:style_a:1> dog');
  assert.equal(done.caret, 'a cat, <lora:style_a:1>'.length);
  assert.equal(completeLora('<lora:sty:0.4> x', 0, 9, 'style_a').text, '<lora:style_a:1> x', 'a tag being edited in the middle is replaced whole');
});

test('highlight spans cover the prompt exactly and mark tags, weights, brackets and keywords', () => {
  const p = 'a (red:1.2) [b|c] <lora:x:0.5> BREAK d';
  const spans = highlightSpans(p);
  assert.equal(spans.map((s) => s.text).join(''), p);
  const kinds = spans.filter((s) => s.kind !== 'text').map((s) => `${s.kind}:${s.text}`);
  assert.deepEqual(kinds, ['paren:(', 'weight::1.2', 'paren:)', 'bracket:[', 'bracket:|', 'bracket:]', 'lora:<lora:x:0.5>', 'keyword:BREAK']);
});

test('caption tools: tag counts per caption, trigger word moved or added first', () => {
  assert.deepEqual(tagCounts(['a, b, a', 'b, c', 'b']), [['b', 3], ['a', 1], ['c', 1]]);
  assert.equal(prefixTrigger('a dog, grass', 'sks'), 'sks, a dog, grass');
  assert.equal(prefixTrigger('a dog, sks, grass', 'sks'), 'sks, a dog, grass');
  assert.equal(prefixTrigger('', 'sks'), 'sks');
});
