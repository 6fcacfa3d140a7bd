/**
 * Autoregressive generation with a KV cache: one decoder graph whose per-layer keys/values come back as
 * outputs and are fed in as the next call's past, so the prompt is encoded once and each new token costs
 * one position. Adapters arrive as replacement weight buffers (merged by weight, see peft.ts), fed into the
 * same compiled graph, so any adapter stack runs without recompiling.
 */
import type { FeedValue, HostTensor, ParamValues } from '../runtime/session.ts';
import { compile, type CompiledGraph, type SessionOptions } from '../runtime/session.ts';
import { seededRandom } from '../train/seeded-random.ts';
import { UserError } from '../util/errors.ts';
import { decoderFeeds } from './inputs.ts';
import { llmContext, type LoadedLlm } from './load.ts';
import { llamaForCausalLM, pastName } from './model.ts';
import { checkSampling, chooseToken, type SamplingOptions } from './sampling.ts';
import type { LlmTokenizer } from './tokenizer.ts';

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Generation ends before the first of these strings; it is not part of the text. */
  stop: readonly string[];
  seed: number;
}

export type FinishReason = 'stop' | 'length';

export interface GenerateResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  promptTokens: number;
}

export interface GenerateCallbacks {
  /** Text as it becomes final (never part of a stop string, never half a UTF-8 character). */
  onText?: (delta: string) => void;
  /** Checked between tokens; when aborted, generation ends with what it has. */
  signal?: AbortSignal;
  /** Weight buffers replacing the base model's (an adapter stack merged by weight). */
  weights?: ParamValues;
}

/** Length of the longest suffix of `text` that starts one of `stops` (text that may still become a stop). */
function pendingStopPrefix(text: string, stops: readonly string[]): number {
  let best = 0;
  for (const s of stops)
    for (let n = Math.min(s.length - 1, text.length); n > best; n--) if (text.endsWith(s.slice(0, n))) best = n;
  return best;
}

export class LlmGenerator {
  private constructor(
    readonly model: LoadedLlm,
    readonly tokenizer: LlmTokenizer | undefined,
    private readonly graph: CompiledGraph,
  ) {}

  static async create(model: LoadedLlm, tokenizer?: LlmTokenizer, session: SessionOptions = {}): Promise<LlmGenerator> {
    const g = llamaForCausalLM(llmContext(model.weights), model.arch, { cache: true, lastOnly: true });
    const outputs = [g.logits, ...g.present.flatMap((p) => [p.key, p.value])];
    return new LlmGenerator(model, tokenizer, await compile(outputs, { ...session, weights: 'inputs' }));
  }

  /** Logits of the last position after `ids`, with the cache extended in place. */
  private async step(ids: readonly number[], past: HostTensor[], weights?: ParamValues): Promise<Float32Array> {
    const { arch } = this.model;
    const P = past.length ? past[0]!.shape[2]! : 0;
    const feeds: Record<string, FeedValue> = decoderFeeds(arch, { ids, batch: 1, length: ids.length, past: P });
    for (let i = 0; i < arch.layers; i++) {
      for (const [j, kind] of (['key', 'value'] as const).entries()) {
        const t = past[2 * i + j];
        feeds[pastName(i, kind)] = t ? { data: t.data, shape: t.shape } : { data: new Float32Array(0), shape: [1, arch.kvHeads, 0, arch.headDim] };
      }
    }
    const [logits, ...present] = await this.graph.run(feeds, weights);
    past.splice(0, past.length, ...present);
    return logits!.data as Float32Array;
  }

  /** Token ids in, token ids out; `decode` turns ids into text for stop strings and streaming. */
  async generateIds(prompt: readonly number[], o: GenerateOptions, cb: GenerateCallbacks = {}, decode?: (ids: number[]) => string): Promise<GenerateResult> {
    checkSampling(o);
    if (!(Number.isInteger(o.maxNewTokens) && o.maxNewTokens >= 1)) throw new UserError(`max_tokens must be an integer ≥ 1, got ${o.maxNewTokens}`);
    if (prompt.length === 0) throw new UserError('the prompt is empty (no tokens)');
    const vocab = this.model.arch.vocab;
    for (const id of prompt) if (!(Number.isInteger(id) && id >= 0 && id < vocab)) throw new UserError(`prompt token id ${id} is outside the vocabulary (0..${vocab - 1})`);
    if (o.stop.length && !decode) throw new UserError('stop strings need a tokenizer');
    const random = seededRandom(o.seed, 'llm-sample');
    const eos = new Set([...(this.tokenizer?.eosIds ?? []), ...this.model.arch.eosTokenIds]);
    const past: HostTensor[] = [];
    const tokens: number[] = [];
    let emitted = 0;
    let text = '';
    let finishReason: FinishReason = 'length';
    let logits = await this.step(prompt, past, cb.weights);
    while (tokens.length < o.maxNewTokens && !cb.signal?.aborted) {
      const next = chooseToken(logits, [...prompt, ...tokens], o, random);
      if (eos.has(next)) {
        finishReason = 'stop';
        break;
      }
      tokens.push(next);
      if (decode) {
        text = decode(tokens);
        const hit = o.stop.map((s) => text.indexOf(s)).filter((i) => i >= 0);
        if (hit.length) {
          text = text.slice(0, Math.min(...hit));
          finishReason = 'stop';
          break;
        }
        let end = text.length - pendingStopPrefix(text, o.stop);
        while (end > emitted && text[end - 1] === '\uFFFD') end--;
        if (end > emitted) {
          cb.onText?.(text.slice(emitted, end));
          emitted = end;
        }
      }
      if (tokens.length < o.maxNewTokens) logits = await this.step([next], past, cb.weights);
    }
    if (decode && text.length > emitted) cb.onText?.(text.slice(emitted));
    return { text, tokens, finishReason, promptTokens: prompt.length };
  }

  /** Text in, text out, through the tokenizer (prompt with the tokenizer's special tokens, e.g. BOS). */
  async complete(prompt: string, o: GenerateOptions, cb: GenerateCallbacks = {}, special = true): Promise<GenerateResult> {
    const tok = this.requireTokenizer();
    return this.generateIds(tok.encode(prompt, special), o, cb, (ids) => tok.decode(ids));
  }

  /** A chat turn: the messages through the chat template, then generation of the assistant's reply. */
  async chat(messages: readonly { role: string; content: string }[], o: GenerateOptions, cb: GenerateCallbacks = {}): Promise<GenerateResult> {
    const tok = this.requireTokenizer();
    // The template writes BOS itself where the model wants it, so the tokenizer must not add another.
    return this.complete(tok.applyChatTemplate(messages, true), o, cb, false);
  }

  private requireTokenizer(): LlmTokenizer {
    if (!this.tokenizer) throw new UserError(`model ${this.model.dir} has no tokenizer.json; text prompts need one`);
    return this.tokenizer;
  }
}
