import type { ClipTokenizer } from './tokenizer.ts';
import { parsePromptAttention } from './prompt-parser.ts';
import { UserError } from '../util/errors.ts';

/**
 * A1111's prompt chunking (`sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line`):
 * the weighted fragments of a prompt are tokenized one by one and packed into chunks of 75 tokens;
 * `BREAK` closes the current chunk; a chunk that fills up moves the tokens after its last comma into the
 * next chunk when that comma is at most `comma_padding_backtrack` tokens back. Each chunk is then framed
 * as `[BOS] + 75 tokens + [EOS]` (short chunks padded with EOS), 77 ids, each with its own multiplier.
 */

export const CHUNK_LENGTH = 75;

/** A1111 option `emphasis`: "Original" (default), "No norm", "Ignore" (weights dropped), "None" (brackets are text). */
export type EmphasisMode = 'Original' | 'No norm' | 'Ignore' | 'None';

export interface ChunkOptions {
  emphasis?: EmphasisMode;
  /** A1111 option `comma_padding_backtrack`, default 20; 0 disables. */
  commaPaddingBacktrack?: number;
  /** Textual-inversion embeddings to find in the prompt (engine/sd/embeddings.ts). */
  embeddings?: EmbeddingMatcher;
}

/** A textual-inversion embedding as the chunker sees it: a name standing for `vectors` token positions. */
export interface PromptEmbedding {
  name: string;
  vectors: number;
}

export interface EmbeddingMatcher {
  /** Changes whenever the set of embeddings does (conditioning caches key on it). */
  readonly version: string;
  /** The embedding whose name's token ids start at `tokens[pos]`, and how many ids the name takes. */
  at(tokens: readonly number[], pos: number): { embedding: PromptEmbedding; length: number } | null;
}

/** Where an embedding's vectors replace token embeddings: from index `offset` of the 77 ids (BOS is 0). */
export interface ChunkFix {
  offset: number;
  embedding: PromptEmbedding;
}

export interface PromptChunk {
  /** 77 token ids. For models whose padding id differs from EOS, ids after the first EOS are `tokenizer.pad`. */
  ids: number[];
  /** 77 attention multipliers, 1 for BOS, EOS and padding. */
  multipliers: number[];
  /** Embeddings in this chunk (A1111's `fixes`); absent when there are none. */
  fixes?: ChunkFix[];
}

export interface TokenizedPrompt {
  chunks: PromptChunk[];
  /** A1111's token count (the UI counter): 75 per full chunk plus the tokens of the last one. */
  tokenCount: number;
}

export function tokenizePrompt(tokenizer: ClipTokenizer, text: string, opts: ChunkOptions = {}): TokenizedPrompt {
  const emphasis = opts.emphasis ?? 'Original';
  const backtrack = opts.commaPaddingBacktrack ?? 20;
  const parsed = emphasis === 'None' ? [[text, 1.0] as [string, number]] : parsePromptAttention(text);
  const comma = tokenizer.tokenId(',</w>');

  const chunks: PromptChunk[] = [];
  let tokens: number[] = [];
  let mults: number[] = [];
  let fixes: ChunkFix[] = [];
  let tokenCount = 0;
  let lastComma = -1;

  const nextChunk = (isLast = false) => {
    tokenCount += isLast ? tokens.length : CHUNK_LENGTH;
    while (tokens.length < CHUNK_LENGTH) {
      tokens.push(tokenizer.eos);
      mults.push(1.0);
    }
    chunks.push(fixes.length ? { ...frame(tokenizer, tokens, mults), fixes } : frame(tokenizer, tokens, mults));
    tokens = [];
    mults = [];
    fixes = [];
    lastComma = -1;
  };

  for (const [fragment, weight] of parsed) {
    if (fragment === 'BREAK' && weight === -1) {
      nextChunk();
      continue;
    }
    const w = emphasis === 'Ignore' ? 1.0 : weight;
    const encoded = tokenizer.encode(fragment);
    for (let pos = 0; pos < encoded.length; ) {
      const token = encoded[pos]!;
      if (token === comma) {
        lastComma = tokens.length;
      } else if (
        backtrack !== 0 &&
        tokens.length === CHUNK_LENGTH &&
        lastComma !== -1 &&
        tokens.length - lastComma <= backtrack
      ) {
        const at = lastComma + 1;
        const movedTokens = tokens.slice(at);
        const movedMults = mults.slice(at);
        tokens = tokens.slice(0, at);
        mults = mults.slice(0, at);
        // As in A1111, embeddings among the moved tokens keep their place (and vectors) in the closed chunk.
        nextChunk();
        tokens = movedTokens;
        mults = movedMults;
      }
      if (tokens.length === CHUNK_LENGTH) nextChunk();
      const hit = opts.embeddings?.at(encoded, pos);
      if (!hit) {
        tokens.push(token);
        mults.push(w);
        pos++;
        continue;
      }
      // An embedding takes `vectors` positions (id 0, replaced by its vectors), all in one chunk.
      const n = hit.embedding.vectors;
      if (n > CHUNK_LENGTH) throw new UserError(`embedding ${hit.embedding.name} has ${n} vectors, more than the ${CHUNK_LENGTH} tokens of a prompt chunk`);
      if (tokens.length + n > CHUNK_LENGTH) nextChunk();
      fixes.push({ offset: tokens.length + 1, embedding: hit.embedding });
      for (let i = 0; i < n; i++) {
        tokens.push(0);
        mults.push(w);
      }
      pos += hit.length;
    }
  }
  if (tokens.length > 0 || chunks.length === 0) nextChunk(true);
  return { chunks, tokenCount };
}

/** The 77-token chunks of a prompt with per-token multipliers, as A1111 feeds them to CLIP. */
export function chunkPrompt(tokenizer: ClipTokenizer, text: string, opts: ChunkOptions = {}): PromptChunk[] {
  return tokenizePrompt(tokenizer, text, opts).chunks;
}

/** The chunk A1111 uses where a prompt in a batch has fewer chunks than the others. */
export function emptyChunk(tokenizer: ClipTokenizer): PromptChunk {
  return frame(tokenizer, new Array<number>(CHUNK_LENGTH).fill(tokenizer.eos), new Array<number>(CHUNK_LENGTH).fill(1.0));
}

function frame(tokenizer: ClipTokenizer, tokens: number[], mults: number[]): PromptChunk {
  const ids = [tokenizer.bos, ...tokens, tokenizer.eos];
  // SD2-style tokenizers pad with another id: A1111 rewrites everything after the first end token.
  if (tokenizer.pad !== tokenizer.eos) {
    const end = ids.indexOf(tokenizer.eos);
    for (let i = end + 1; i < ids.length; i++) ids[i] = tokenizer.pad;
  }
  return { ids, multipliers: [1.0, ...mults, 1.0] };
}
