/**
 * Every training-config key: its zod schema, default, a phrase for error messages ("an integer ≥ 1") and its
 * documentation. config.ts validates with these; docs/training.md and configs/lora_default.yaml are checked
 * against them by tests, so the three cannot drift apart.
 */
import { z } from 'zod';

export type TargetModules = 'attention' | 'attention_mlp' | 'attention_mlp_conv';
/** For an LLM base model: every Linear of the decoder layers, or the named modules (q_proj, …). */
export type LlmTargetModules = 'all-linear' | string[];
export type LrScheduler =
  | 'constant'
  | 'constant_with_warmup'
  | 'linear'
  | 'cosine'
  | 'cosine_with_restarts'
  | 'polynomial';

export interface SamplePrompt {
  prompt: string;
  negative_prompt: string;
  /** null: the training seed. */
  seed: number | null;
  steps: number;
  cfg_scale: number;
  /** null: the training resolution. */
  width: number | null;
  height: number | null;
}

/** The config as validated and resolved: defaults filled, every path absolute. */
export interface TrainConfig {
  train_data_dir: string;
  metadata_path: string | null;
  caption_extension: string;
  allow_missing_captions: boolean;
  base_model: string;
  tokenizer: string;
  prediction_type: 'epsilon' | 'v_prediction';
  lora_rank: number;
  lora_alpha: number;
  target_modules: TargetModules | LlmTargetModules;
  train_text_encoder: boolean;
  text_encoder_lr: number;
  init_lora: string | null;
  resume_from: string | null;
  learning_rate: number;
  optimizer: 'adamw' | 'sgd';
  weight_decay: number;
  max_grad_norm: number;
  lr_scheduler: LrScheduler;
  lr_warmup_steps: number;
  batch_size: number;
  gradient_accumulation_steps: number;
  epochs: number;
  mixed_precision: 'no' | 'fp16' | 'bf16';
  seed: number;
  noise_offset: number;
  min_snr_gamma: number;
  resolution: number;
  enable_bucket: boolean;
  min_bucket_reso: number;
  max_bucket_reso: number;
  random_crop: boolean;
  flip_aug: boolean;
  shuffle_caption: boolean;
  keep_tokens: number;
  caption_dropout_rate: number;
  caption_tag_dropout_rate: number;
  cache_latents: boolean;
  latent_cache_dir: string;
  sample_prompts: SamplePrompt[];
  sample_every_n_steps: number;
  validation_split: number;
  output_dir: string;
  output_name: string;
  logging_dir: string;
  save_steps: number;
  save_every_n_epochs: number;
  keep_last_n: number;
  device: 'cpu' | 'cuda' | 'dml' | 'coreml';
  lora_dropout: number;
  max_seq_length: number;
  packing: boolean;
}

export type PathKind = 'dir' | 'file' | 'file-or-dir' | 'output';

export interface FieldSpec {
  schema: z.ZodType;
  /** Absent for required keys. */
  default?: unknown;
  /** Completes "expected …" in error messages. */
  expect: string;
  /** Section of docs/training.md and of the default config. */
  group: string;
  doc: string;
  path?: PathKind;
}

const BUCKET_STEP = 64;

const int = (min: number) => z.int().min(min);
const str = () => z.string().min(1);
const flag = (def: boolean, group: string, doc: string): FieldSpec => ({
  schema: z.boolean(),
  default: def,
  expect: 'true or false',
  group,
  doc,
});
const oneOf = <T extends string>(values: readonly [T, ...T[]], def: T, group: string, doc: string): FieldSpec => ({
  schema: z.enum(values),
  default: def,
  expect: `one of ${values.join(', ')}`,
  group,
  doc,
});
const fraction = (def: number, group: string, doc: string): FieldSpec => ({
  schema: z.number().min(0).max(1),
  default: def,
  expect: 'a number from 0 to 1',
  group,
  doc,
});

export const BUCKET_RESO_STEP = BUCKET_STEP;

/** A LoRA file name: no folders, no characters file systems or logs choke on (control characters included), not `.`/`..`. */
export const OUTPUT_NAME_PATTERN = /^(?!\.\.?$)[^/\\:*?"<>|\x00-\x1f\x7f]+$/;

/** Keys in the order the docs and the default config present them. */
export const trainConfigFields = {
  // --- data
  train_data_dir: {
    schema: str(),
    expect: 'a path to the folder of training images',
    group: 'Data',
    path: 'dir',
    doc: 'Folder of training images (png, jpg, webp), searched recursively. A subfolder named `N_name` repeats its images N times per epoch (kohya style).',
  },
  metadata_path: {
    schema: str().nullable(),
    default: null,
    expect: 'a path to a metadata.csv / metadata.jsonl file, or null',
    group: 'Data',
    path: 'file',
    doc: 'Captions table with a `file_name` column (relative to the table\'s folder) and a `caption` or `text` column, as Hugging Face imagefolder. null: use `metadata.csv` or `metadata.jsonl` in train_data_dir if there is one.',
  },
  caption_extension: {
    schema: z.string().regex(/^\.[^/\\]+$/),
    default: '.txt',
    expect: "a file extension starting with '.', such as '.txt'",
    group: 'Data',
    doc: 'Extension of kohya-style sidecar caption files (`photo.png` → `photo.txt`), used for images the metadata table does not caption. The first line is the caption.',
  },
  allow_missing_captions: flag(
    false,
    'Data',
    'Train images that have no caption with an empty caption. When false, a dataset with uncaptioned images is refused and the images are listed.',
  ),
  // --- model
  base_model: {
    schema: str(),
    expect: 'a path to a .safetensors checkpoint or a diffusers folder',
    group: 'Model',
    path: 'file-or-dir',
    doc: 'Stable Diffusion 1.x, 2.x or SDXL model to train against: a single-file `.safetensors` checkpoint (LDM / SGM) or a diffusers folder (with model_index.json).',
  },
  tokenizer: {
    schema: str().nullable(),
    default: null,
    expect: 'a path to a tokenizer folder, or null',
    group: 'Model',
    path: 'dir',
    doc: "CLIP tokenizer folder (tokenizer.json, or vocab.json + merges.txt). null: a diffusers base model's own `tokenizer/` folder, else the CLIP vocabulary that ships with lora-scripts (what every SD 1.x / 2.x text encoder uses).",
  },
  prediction_type: oneOf(
    ['epsilon', 'v_prediction'],
    'epsilon',
    'Model',
    'What the UNet predicts: epsilon (SD 1.x) or v_prediction (SD 2.x 768-v models).',
  ),
  // --- network
  lora_rank: {
    schema: int(1),
    default: 16,
    expect: 'an integer ≥ 1',
    group: 'Network',
    doc: 'LoRA rank (kohya `network_dim`). kohya docs use 16 as the example value.',
  },
  lora_alpha: {
    schema: z.number().gt(0),
    default: 8,
    expect: 'a number > 0',
    group: 'Network',
    doc: 'LoRA alpha; the update is scaled by lora_alpha / lora_rank. kohya docs: alpha is generally about half of the rank.',
  },
  target_modules: {
    schema: z.union([z.enum(['attention', 'attention_mlp', 'attention_mlp_conv', 'all-linear']), z.array(z.string().regex(/^[A-Za-z_][\w.]*$/)).min(1)]),
    default: 'attention_mlp',
    expect: 'one of attention, attention_mlp, attention_mlp_conv, all-linear, or a list of module names',
    group: 'Network',
    doc: "Which layers get a LoRA: `attention` (q, k, v, out of every attention), `attention_mlp` (kohya's default: every Linear and 1×1 conv inside the transformer blocks, MLP and proj_in/proj_out included), `attention_mlp_conv` (also the ResNet, down- and up-sample convolutions, as LoCon). For an LLM base model: `attention` is q/k/v/o_proj, `attention_mlp` and `all-linear` every Linear of the decoder layers (PEFT's `all-linear`), or a list of module names such as `[q_proj, v_proj]`.",
  },
  train_text_encoder: flag(true, 'Network', 'Also train LoRA on the CLIP text encoder (kohya trains it by default).'),
  text_encoder_lr: {
    schema: z.number().gt(0),
    default: 1e-5,
    expect: 'a number > 0',
    group: 'Network',
    doc: 'Learning rate of the text-encoder LoRA. kohya docs recommend one smaller than the UNet\'s, e.g. 1e-5.',
  },
  init_lora: {
    schema: str().nullable(),
    default: null,
    expect: 'a path to a LoRA .safetensors file, or null',
    group: 'Network',
    path: 'file',
    doc: 'Start from the weights of an existing LoRA (same rank and targets). A fresh optimizer, schedule and step count; new hyperparameters apply.',
  },
  resume_from: {
    schema: str().nullable(),
    default: null,
    expect: 'a path to a saved training state, or null',
    group: 'Network',
    path: 'file-or-dir',
    doc: 'Continue an interrupted run from a saved state: weights, optimizer, schedule, step and RNG. Excludes init_lora.',
  },
  // --- optimization
  learning_rate: {
    schema: z.number().gt(0),
    default: 1e-4,
    expect: 'a number > 0',
    group: 'Optimization',
    doc: 'Learning rate of the UNet LoRA. kohya docs: 1e-4 to 1e-3 for LoRA.',
  },
  optimizer: oneOf(['adamw', 'sgd'], 'adamw', 'Optimization', 'AdamW (torch semantics) or SGD with momentum.'),
  weight_decay: {
    schema: z.number().min(0),
    default: 0.01,
    expect: 'a number ≥ 0',
    group: 'Optimization',
    doc: "Decoupled weight decay (torch AdamW's default 0.01).",
  },
  max_grad_norm: {
    schema: z.number().min(0),
    default: 1,
    expect: 'a number ≥ 0',
    group: 'Optimization',
    doc: 'Clip the global gradient norm to this value; 0 turns clipping off.',
  },
  lr_scheduler: oneOf(
    ['constant', 'constant_with_warmup', 'linear', 'cosine', 'cosine_with_restarts', 'polynomial'],
    'constant',
    'Optimization',
    'Learning-rate schedule over the optimizer steps. Plain `constant` takes no warmup; use `constant_with_warmup` (left unset with a warmup, it is).',
  ),
  lr_warmup_steps: {
    schema: z.number().min(0).refine((v) => v < 1 || Number.isInteger(v)),
    default: 0,
    expect: 'a whole number of steps ≥ 0, or a fraction of the total steps below 1',
    group: 'Optimization',
    doc: 'Linear warmup length: optimizer steps, or a fraction of all steps when below 1 (0.1 = the first 10 %).',
  },
  batch_size: {
    schema: int(1),
    default: 1,
    expect: 'an integer ≥ 1',
    group: 'Optimization',
    doc: 'Images per micro-batch. Each batch is taken from one aspect-ratio bucket.',
  },
  gradient_accumulation_steps: {
    schema: int(1),
    default: 1,
    expect: 'an integer ≥ 1',
    group: 'Optimization',
    doc: 'Micro-batches per optimizer step; the effective batch is batch_size × this.',
  },
  epochs: {
    schema: int(1),
    default: 10,
    expect: 'an integer ≥ 1',
    group: 'Optimization',
    doc: 'Passes over the dataset (repeats included).',
  },
  mixed_precision: oneOf(
    ['no', 'fp16', 'bf16'],
    'no',
    'Optimization',
    'Compute precision of the forward and backward passes; LoRA weights and optimizer state stay float32. fp16 uses dynamic loss scaling.',
  ),
  seed: {
    schema: int(0),
    default: 42,
    expect: 'an integer ≥ 0',
    group: 'Optimization',
    doc: 'Seed for LoRA initialisation, noise, timesteps, shuffling, crops, caption processing and the validation split.',
  },
  noise_offset: {
    schema: z.number().min(0),
    default: 0,
    expect: 'a number ≥ 0',
    group: 'Optimization',
    doc: 'Offset noise strength; 0 turns it off. kohya: about 0.1 when used.',
  },
  min_snr_gamma: {
    schema: z.number().min(0),
    default: 0,
    expect: 'a number ≥ 0',
    group: 'Optimization',
    doc: 'Min-SNR-γ loss weighting; 0 turns it off. kohya recommends 5.',
  },
  // --- images
  resolution: {
    schema: int(BUCKET_STEP).multipleOf(BUCKET_STEP),
    default: 512,
    expect: `an integer ≥ ${BUCKET_STEP} that is a multiple of ${BUCKET_STEP}`,
    group: 'Images and buckets',
    doc: 'Training resolution: buckets have an area of at most resolution²; without bucketing every image is resized and cropped to resolution × resolution. Left out with an SDXL base_model: 1024.',
  },
  enable_bucket: flag(
    true,
    'Images and buckets',
    `Aspect-ratio bucketing (kohya's algorithm): bucket sides are multiples of ${BUCKET_STEP} between min_bucket_reso and max_bucket_reso with area ≤ resolution²; each image goes to the bucket closest in aspect ratio, is resized to cover it, then cropped.`,
  ),
  min_bucket_reso: {
    schema: int(BUCKET_STEP).multipleOf(BUCKET_STEP),
    default: 256,
    expect: `an integer ≥ ${BUCKET_STEP} that is a multiple of ${BUCKET_STEP}`,
    group: 'Images and buckets',
    doc: 'Smallest bucket side (kohya default 256; left unset, never above resolution).',
  },
  max_bucket_reso: {
    schema: int(BUCKET_STEP).multipleOf(BUCKET_STEP),
    default: 1024,
    expect: `an integer ≥ ${BUCKET_STEP} that is a multiple of ${BUCKET_STEP}`,
    group: 'Images and buckets',
    doc: 'Largest bucket side (kohya default 1024; left unset, never below resolution).',
  },
  random_crop: flag(
    false,
    'Images and buckets',
    'Crop at a random position (new each epoch) instead of the center. Not possible with cache_latents.',
  ),
  flip_aug: flag(false, 'Images and buckets', 'Randomly flip images horizontally; both orientations are cached.'),
  // --- captions
  shuffle_caption: flag(
    false,
    'Captions',
    'Shuffle the comma-separated tags of each caption every step (deterministic given seed).',
  ),
  keep_tokens: {
    schema: int(0),
    default: 0,
    expect: 'an integer ≥ 0',
    group: 'Captions',
    doc: 'Number of leading tags kept in place and never dropped by shuffle_caption or caption_tag_dropout_rate.',
  },
  caption_dropout_rate: fraction(0, 'Captions', 'Probability of training a step with an empty caption.'),
  caption_tag_dropout_rate: fraction(0, 'Captions', 'Probability of dropping each tag not kept by keep_tokens.'),
  // --- caching
  cache_latents: flag(
    true,
    'Caching',
    'Encode each image with the VAE once and keep the latents on disk, keyed by file content, bucket, crop, flip and VAE. Left unset, off with random_crop.',
  ),
  latent_cache_dir: {
    schema: str().nullable(),
    default: null,
    expect: 'a folder path, or null',
    group: 'Caching',
    path: 'output',
    doc: 'Where cached latents go. null: `latent_cache` inside output_dir.',
  },
  // --- sampling and validation
  sample_prompts: {
    schema: z.unknown(),
    default: [],
    expect:
      'a list of prompts (strings, or mappings with prompt, negative_prompt, seed, steps, cfg_scale, width, height), or a path to a text file with one prompt per line',
    group: 'Samples and validation',
    doc: 'Prompts rendered during training to watch progress. A mapping may set negative_prompt, seed, steps (30), cfg_scale (7.5), width and height (the resolution).',
  },
  sample_every_n_steps: {
    schema: int(0),
    default: 0,
    expect: 'an integer ≥ 0',
    group: 'Samples and validation',
    doc: 'Render sample_prompts every N optimizer steps; 0: only after the last step.',
  },
  validation_split: {
    schema: z.number().min(0).lt(1),
    default: 0,
    expect: 'a number from 0 up to (not including) 1',
    group: 'Samples and validation',
    doc: 'Fraction of images held out (chosen by seed) to compute a validation loss with fixed noise and timesteps; 0 turns it off.',
  },
  // --- output
  output_dir: {
    schema: str(),
    default: 'output',
    expect: 'a folder path',
    group: 'Output',
    path: 'output',
    doc: 'Folder for the LoRA files, saved states, samples and logs; created if missing.',
  },
  output_name: {
    schema: z.string().max(200).regex(OUTPUT_NAME_PATTERN),
    default: 'lora',
    expect: 'a file name of at most 200 characters, without folders, control characters or any of / \\ : * ? " < > |',
    group: 'Output',
    doc: 'Base name of the saved LoRA: `<output_name>.safetensors`, `<output_name>-000001.safetensors` per epoch, `<output_name>-step00000500.safetensors` per step save.',
  },
  logging_dir: {
    schema: str().nullable(),
    default: null,
    expect: 'a folder path, or null',
    group: 'Output',
    path: 'output',
    doc: 'TensorBoard event files and JSON-lines logs. null: `logs` inside output_dir.',
  },
  save_steps: {
    schema: int(0),
    default: 0,
    expect: 'an integer ≥ 0',
    group: 'Output',
    doc: 'Also save the LoRA every N optimizer steps; 0 turns it off.',
  },
  save_every_n_epochs: {
    schema: int(0),
    default: 1,
    expect: 'an integer ≥ 0',
    group: 'Output',
    doc: 'Save the LoRA (and the training state for resume_from) every N epochs; 0: only at the end.',
  },
  keep_last_n: {
    schema: int(0),
    default: 0,
    expect: 'an integer ≥ 0',
    group: 'Output',
    doc: 'Keep only the N most recent intermediate saves; 0 keeps them all. The final LoRA is always kept.',
  },
  device: oneOf(
    ['cpu', 'cuda', 'dml', 'coreml'],
    'cpu',
    'Output',
    'ONNX Runtime execution provider (see docs/gpu.md for installing CUDA).',
  ),
  // --- language models
  lora_dropout: fraction(0, 'Language models', 'LLM base model only: dropout on the LoRA branch input (PEFT `lora_dropout`).'),
  max_seq_length: {
    schema: int(8),
    default: 1024,
    expect: 'an integer ≥ 8',
    group: 'Language models',
    doc: 'LLM base model only: longest token sequence trained; longer rows are truncated (and counted in the dataset summary).',
  },
  packing: flag(
    false,
    'Language models',
    'LLM base model only: pack several rows into each sequence of max_seq_length tokens; attention and positions stay within each row.',
  ),
} satisfies Record<keyof TrainConfig, FieldSpec>;

export type TrainConfigKey = keyof typeof trainConfigFields;
export const trainConfigKeys = Object.keys(trainConfigFields) as TrainConfigKey[];

export const samplePromptFields = {
  prompt: { schema: str(), expect: 'a non-empty string', group: '', doc: '' },
  negative_prompt: { schema: z.string(), default: '', expect: 'a string', group: '', doc: '' },
  seed: { schema: int(0).nullable(), default: null, expect: 'an integer ≥ 0, or null', group: '', doc: '' },
  steps: { schema: int(1), default: 30, expect: 'an integer ≥ 1', group: '', doc: '' },
  cfg_scale: { schema: z.number().min(0), default: 7.5, expect: 'a number ≥ 0', group: '', doc: '' },
  width: {
    schema: int(8).multipleOf(8).nullable(),
    default: null,
    expect: 'a multiple of 8, or null',
    group: '',
    doc: '',
  },
  height: {
    schema: int(8).multipleOf(8).nullable(),
    default: null,
    expect: 'a multiple of 8, or null',
    group: '',
    doc: '',
  },
} satisfies Record<keyof SamplePrompt, FieldSpec>;

function objectSchema(fields: Record<string, FieldSpec>) {
  return z.strictObject(
    Object.fromEntries(
      Object.entries(fields).map(([k, f]) => [k, 'default' in f ? f.schema.default(f.default as never) : f.schema]),
    ),
  );
}

export const trainConfigSchema = objectSchema(trainConfigFields);
export const samplePromptSchema = objectSchema(samplePromptFields);

/** Defaults of every key that has one. */
export function trainConfigDefaults(): Partial<Record<TrainConfigKey, unknown>> {
  const out: Partial<Record<TrainConfigKey, unknown>> = {};
  for (const k of trainConfigKeys) {
    const f: FieldSpec = trainConfigFields[k];
    if ('default' in f) out[k] = structuredClone(f.default);
  }
  return out;
}

/** kohya sd-scripts names people carry over, mapped to ours, for "did you mean" on unknown keys. */
export const kohyaAliases: Record<string, TrainConfigKey> = {
  network_dim: 'lora_rank',
  network_alpha: 'lora_alpha',
  pretrained_model_name_or_path: 'base_model',
  train_batch_size: 'batch_size',
  max_train_epochs: 'epochs',
  optimizer_type: 'optimizer',
  unet_lr: 'learning_rate',
  network_weights: 'init_lora',
  resume: 'resume_from',
  in_json: 'metadata_path',
  save_every_n_steps: 'save_steps',
  save_last_n_epochs: 'keep_last_n',
  v_parameterization: 'prediction_type',
};

/** The config reference table in docs/training.md, generated from the field specs (a test keeps them equal). */
export function renderConfigReference(): string {
  const fmt = (v: unknown) => (v === undefined ? '*required*' : `\`${JSON.stringify(v)}\``);
  const out: string[] = [];
  let group = '';
  for (const key of trainConfigKeys) {
    const f: FieldSpec = trainConfigFields[key];
    if (f.group !== group) {
      group = f.group;
      out.push('', `### ${group}`, '', '| key | default | accepts | meaning |', '| --- | --- | --- | --- |');
    }
    const cell = (s: string) => s.replace(/\|/g, '\\|');
    out.push(`| \`${key}\` | ${fmt(f.default)} | ${cell(f.expect)} | ${cell(f.doc)} |`);
  }
  return out.join('\n').trim();
}
