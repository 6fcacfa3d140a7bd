/**
 * A complete model folder for LLM tests: the llama-tiny fixture's config and weights plus a byte-level BPE
 * tokenizer.json made here (one token per byte, as many tokens as the fixture's vocab_size has room for; ids
 * of the config's bos/eos replace the control bytes with those ids) and a chat template. The fixture ships
 * no tokenizer; this one exercises the real @huggingface/tokenizers and @huggingface/jinja code paths.
 */
import { copyFile, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BYTE_TO_UNICODE } from '../../engine/text/byte-unicode.ts';
import { fixturesDir } from './paths.ts';

export const llamaTinyDir = join(fixturesDir, 'llama-tiny');

export const CHAT_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + eos_token }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

export async function byteTokenizerFiles(dir: string, cfg: { vocab_size: number; bos_token_id: number; eos_token_id: number }): Promise<void> {
  const vocab: Record<string, number> = {};
  const n = Math.min(256, cfg.vocab_size);
  for (let b = 0; b < n; b++) if (b !== cfg.bos_token_id && b !== cfg.eos_token_id) vocab[BYTE_TO_UNICODE[b]!] = b;
  vocab['<s>'] = cfg.bos_token_id;
  vocab['</s>'] = cfg.eos_token_id;
  const added = [
    { id: cfg.bos_token_id, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    { id: cfg.eos_token_id, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
  ];
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [cfg.bos_token_id], tokens: ['<s>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [] },
  };
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  await writeFile(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({ bos_token: '<s>', eos_token: '</s>', add_bos_token: true, chat_template: CHAT_TEMPLATE, tokenizer_class: 'PreTrainedTokenizerFast' }),
  );
}

/** A temporary model folder: llama-tiny's model files plus the byte tokenizer. */
export async function tinyModelFolder(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'llm-model-'));
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors']) await copyFile(join(llamaTinyDir, 'model', f), join(dir, f));
  const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
  await byteTokenizerFiles(dir, cfg);
  return dir;
}
