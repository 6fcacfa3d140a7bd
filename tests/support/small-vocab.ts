import { writeSyntheticCheckpoint, type SyntheticSdConfig } from '../../engine/sd/synthetic.ts';

/** Token embeddings of the custom text encoder below: far fewer than CLIP's 49408 ids. */
export const SMALL_VOCAB = 1000;

/**
 * A tiny SD 1.x-layout single file whose text encoder has its own small vocabulary, as a custom model would:
 * CLIP's bundled tokenizer does not fit it. Made here rather than taken from a fixture set, whose vocabulary
 * size may be anything.
 */
export async function writeSmallVocabCheckpoint(path: string): Promise<void> {
  const cfg: SyntheticSdConfig = {
    unet: { modelChannels: 32, channelMult: [1, 2], numResBlocks: 1, attentionLevels: [true, false], contextDim: 64, inChannels: 4 },
    text: { width: 64, layers: 1, intermediate: 128, vocab: SMALL_VOCAB, positions: 77 },
    vae: { channels: 32, channelMult: [1, 2], numResBlocks: 1, zChannels: 4 },
  };
  await writeSyntheticCheckpoint(path, cfg, { seed: 9 });
}
