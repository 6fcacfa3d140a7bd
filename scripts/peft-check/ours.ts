/**
 * Our side of the PEFT cross-check: logits of the base model with the adapter merged (as generation uses it)
 * for a fixed batch of token ids, written as JSON for peft_load.py to compare against PeftModel.from_pretrained.
 * Usage: node --import tsx scripts/peft-check/ours.ts MODEL_DIR ADAPTER_DIR OUT.json
 */
import { writeFile } from 'node:fs/promises';
import { compile } from '../../engine/runtime/session.ts';
import { loadLlm, llmContext } from '../../engine/llm/load.ts';
import { llamaForCausalLM } from '../../engine/llm/model.ts';
import { decoderFeeds } from '../../engine/llm/inputs.ts';
import { loadPeftAdapter, mergeAdapters } from '../../engine/llm/peft.ts';

const [modelDir, adapterDir, out] = process.argv.slice(2);
if (!modelDir || !adapterDir || !out) throw new Error('usage: ours.ts MODEL_DIR ADAPTER_DIR OUT.json');
const m = await loadLlm(modelDir);
const B = 2;
const T = 12;
const ids = Array.from({ length: B * T }, (_, i) => (i * 37 + 11) % m.arch.vocab);
const run = async () => {
  const g = llamaForCausalLM(llmContext(m.weights), m.arch);
  const net = await compile([g.logits], { weights: 'external', threads: 1 });
  const [logits] = await net.run(decoderFeeds(m.arch, { ids, batch: B, length: T }));
  return Array.from(logits!.data as Float32Array);
};
// One forward per process: compiled sessions are cached by graph, so a second run in this process would
// reuse the first one's weights.
const mode = process.env['PEFT_CHECK_MODE'] ?? 'adapted';
if (mode === 'adapted') await mergeAdapters(m.weights, [{ adapter: await loadPeftAdapter(adapterDir), weight: 1 }]);
const logits = await run();
await writeFile(out, JSON.stringify({ ids, batch: B, length: T, vocab: m.arch.vocab, logits }));
