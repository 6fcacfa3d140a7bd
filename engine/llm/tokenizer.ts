/**
 * A model folder's tokenizer and chat template, through maintained libraries: `tokenizer.json` with
 * @huggingface/tokenizers (the JS port of Hugging Face tokenizers), the Jinja chat template from
 * `tokenizer_config.json` (or `chat_template.jinja`) rendered by @huggingface/jinja, as transformers'
 * `apply_chat_template` does.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { UserError } from '../util/errors.ts';

export interface ChatMessage {
  role: string;
  content: string;
}

async function readJson(file: string, required: boolean): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (!required && (e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UserError(`cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** A special token as tokenizer_config.json stores it: a string or an AddedToken object. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

export class LlmTokenizer {
  private constructor(
    private readonly tok: Tokenizer,
    readonly config: Record<string, unknown>,
    private readonly template: Template | undefined,
    /** Token ids that end generation: the tokenizer's eos and generation_config's eos_token_id(s). */
    readonly eosIds: number[],
  ) {}

  static async load(dir: string): Promise<LlmTokenizer> {
    const json = await readJson(join(dir, 'tokenizer.json'), false);
    if (!json) throw new UserError(`model folder ${dir} has no tokenizer.json`);
    const config = (await readJson(join(dir, 'tokenizer_config.json'), false)) ?? {};
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(json, config);
    } catch (e) {
      throw new UserError(`${join(dir, 'tokenizer.json')}: cannot build the tokenizer: ${(e as Error).message}`);
    }
    let source = config.chat_template;
    if (Array.isArray(source)) source = (source as { name?: string; template?: string }[]).find((t) => t.name === 'default')?.template;
    if (typeof source !== 'string') source = await readFile(join(dir, 'chat_template.jinja'), 'utf8').catch(() => undefined);
    let template: Template | undefined;
    if (typeof source === 'string') {
      try {
        template = new Template(source);
      } catch (e) {
        throw new UserError(`${dir}: the chat template does not parse: ${(e as Error).message}`);
      }
    }
    const eos = new Set<number>();
    const eosTok = tokenText(config.eos_token);
    const eosId = eosTok === undefined ? undefined : tok.token_to_id(eosTok);
    if (eosId !== undefined) eos.add(eosId);
    const gen = await readJson(join(dir, 'generation_config.json'), false);
    const genEos = gen?.eos_token_id;
    for (const id of Array.isArray(genEos) ? genEos : [genEos]) if (typeof id === 'number') eos.add(id);
    return new LlmTokenizer(tok, config, template, [...eos]);
  }

  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  get bosToken(): string | undefined {
    return tokenText(this.config.bos_token);
  }

  get eosToken(): string | undefined {
    return tokenText(this.config.eos_token);
  }

  /** Token ids; `special` adds what the post-processor adds (BOS for Llama) and parses special tokens. */
  encode(text: string, special = true): number[] {
    return this.tok.encode(text, { add_special_tokens: special }).ids;
  }

  decode(ids: readonly number[], skipSpecial = true): string {
    return this.tok.decode([...ids], { skip_special_tokens: skipSpecial });
  }

  /** The chat rendered as the model was trained to read it; `generationPrompt` opens the assistant's turn. */
  applyChatTemplate(messages: readonly ChatMessage[], generationPrompt: boolean): string {
    if (!this.template) throw new UserError('this model has no chat template (tokenizer_config.json chat_template); use plain completion');
    return this.template.render({
      messages,
      add_generation_prompt: generationPrompt,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
    });
  }
}
