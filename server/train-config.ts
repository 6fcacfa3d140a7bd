/**
 * A training config sent over the API → a validated TrainConfig and its loaded dataset, with every path the
 * request names confined to the operator's roots (server/train-settings.ts).
 *
 * The confinement is checked on the raw request before engine/train/config.ts sees it, because that loader
 * probes the paths it is given and names sibling files in its hints: run on an unchecked path it would tell a
 * client what lies in any folder of the machine. Server defaults fill what a client leaves out: base_model
 * is the selected checkpoint (or any checkpoint name from /sdapi/v1/sd-models), the tokenizer is found as
 * for generation, output goes to a per-job folder under `<data-dir>/training`.
 */
import { basename, dirname, join, resolve } from 'node:path';
import { Document, isMap, parseDocument } from 'yaml';
import { findTokenizerDir } from '../engine/generate/generator.ts';
import { BUNDLED_CLIP_TOKENIZER } from '../engine/text/tokenizer.ts';
import { parseTrainConfig, trainConfigFields, trainConfigKeys, type TrainConfig } from '../engine/train/config.ts';
import { OUTPUT_NAME_PATTERN } from '../engine/train/config-fields.ts';
import { overLimit } from './limits.ts';
import { loadDataset, stepPlan, type Dataset } from '../engine/train/dataset.ts';
import { isLlmModelFolder } from '../engine/llm/config.ts';
import { llmTrainingPlan } from '../engine/llm/trainer.ts';
import { llmService } from './llm.ts';
import { isUserError } from '../engine/util/errors.ts';
import type { ServerContext } from './context.ts';
import { ValidationError, type ValidationIssue } from './errors.ts';
import { trainConfigBody, trainYamlBody } from './requests/train.ts';
import { parseRequest } from './schema.ts';
import { datasetRoots, isInside, type TrainingSettings } from './train-settings.ts';

export interface PreparedTraining {
  config: TrainConfig;
  /** Config warnings, then dataset warnings. */
  warnings: string[];
  /** The image dataset (Stable Diffusion); absent for an LLM base model, whose text data the plan checked. */
  dataset?: Dataset;
  /** Optimizer steps the dataset plan gives. */
  plannedSteps: number;
}

type Loc = (string | number)[];

const DEVICES = new Set(['cpu', 'cuda', 'dml', 'coreml']);

function issue(loc: Loc, msg: string, type = 'value_error.train_config'): ValidationIssue {
  return { loc: ['body', ...loc], msg, type };
}

function fail(loc: Loc, msg: string, type?: string): never {
  throw new ValidationError([issue(loc, msg, type)]);
}

/** The folders each path key may point into; a path key not listed here is refused (fail closed). */
function pathRoots(ctx: ServerContext, s: TrainingSettings): Record<string, { roots: string[]; what: string }> {
  const { ckptDir, loraDir, dataDir } = ctx.layout;
  const llm = llmService(ctx);
  const datasets = { roots: datasetRoots(s), what: 'the dataset folders' };
  const training = { roots: [s.trainingDir], what: 'the training folder' };
  return {
    train_data_dir: datasets,
    metadata_path: datasets,
    base_model: { roots: [ckptDir, llm.modelsDir], what: 'the checkpoint and LLM folders' },
    tokenizer: { roots: [ckptDir, join(dirname(ckptDir), 'tokenizer'), join(dataDir, 'models', 'tokenizer'), llm.modelsDir], what: 'the checkpoint, tokenizer and LLM folders' },
    init_lora: { roots: [loraDir, llm.adaptersDir, s.trainingDir], what: 'the LoRA, LLM adapter and training folders' },
    resume_from: training,
    output_dir: training,
    logging_dir: training,
    latent_cache_dir: training,
    sample_prompts: { roots: [...datasetRoots(s), s.trainingDir], what: 'the dataset and training folders' },
  };
}

/** Resolves a request path as the config loader will (against the data dir) and checks it stays in its roots. */
function confine(ctx: ServerContext, key: string, value: string, rule: { roots: string[]; what: string }): string {
  if (value.startsWith('~')) fail([key], `${key}: '~' paths are not accepted over the API; give a path relative to the data folder`);
  const abs = resolve(ctx.layout.dataDir, value);
  if (!rule.roots.some((r) => isInside(r, abs))) {
    fail([key], `${key}: ${value} is outside ${rule.what} (${rule.roots.join(', ')}); the server only reads and writes there`, 'value_error.path');
  }
  return abs;
}

/** The request body as a YAML document: `{yaml: "..."}` or the config itself as a JSON object. */
function requestDocument(body: unknown): { doc: Document; text: string | null } {
  const b = parseRequest(trainConfigBody, body);
  if ('yaml' in b) {
    const { yaml } = parseRequest(trainYamlBody, b);
    if (Object.keys(b).length > 1) fail([], 'send either {"yaml": "..."} or the config as a JSON object, not both');
    return { doc: parseDocument(yaml, { uniqueKeys: true, prettyErrors: false }), text: yaml };
  }
  return { doc: new Document(b), text: null };
}

/** Splits the config loader's message into one FastAPI issue per problem, located by the key it names. */
function configIssues(message: string, fromYaml: boolean): ValidationIssue[] {
  const lines = message.split('\n');
  const problems = lines.slice(1).filter((l) => l.startsWith('  ')).map((l) => l.trim());
  if (problems.length === 0) return [issue([], message)];
  return problems.map((p) => {
    const text = fromYaml ? p : p.replace(/^line \d+: /, '');
    const body = p.replace(/^line \d+: /, '');
    const unknown = /^unknown key '([^']+)'/.exec(body);
    const named = unknown?.[1] ?? /^([A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_]\w*)*)[: (]/.exec(body)?.[1];
    let loc: Loc = [];
    if (named) {
      const parts: Loc = [];
      for (const m of named.matchAll(/([A-Za-z_]\w*)|\[(\d+)\]/g)) parts.push(m[1] ?? Number(m[2]));
      if (unknown || trainConfigKeys.includes(String(parts[0]) as never)) loc = parts;
    }
    return issue(loc, text, unknown ? 'value_error.extra' : 'value_error.train_config');
  });
}

/**
 * Validates a training request. Throws ValidationError (422, `loc` = ['body', key, …]) for bad configs, paths
 * outside the roots and dataset problems.
 */
export async function prepareTrainingRequest(
  ctx: ServerContext,
  s: TrainingSettings,
  body: unknown,
  opts: { jobDir: string },
): Promise<PreparedTraining> {
  const { doc, text } = requestDocument(body);
  const file = join(ctx.layout.dataDir, 'train-request.yaml');
  // Syntax errors and non-mapping documents: the loader reports them before it looks at any path.
  if (doc.errors.length || !isMap(doc.contents)) return reportConfigError(await parseTrainConfig(text ?? doc.toString(), file).then(() => null, (e: unknown) => e), text !== null);
  let raw: Record<string, unknown>;
  try {
    // toJS refuses documents whose aliases expand past its limit (a "billion laughs" bomb).
    raw = doc.toJS({ maxAliasCount: 100 }) as Record<string, unknown>;
  } catch (e) {
    fail(text !== null ? ['yaml'] : [], `the config cannot be read: ${(e as Error).message}`);
  }
  const rules = pathRoots(ctx, s);

  for (const key of trainConfigKeys) {
    const spec = trainConfigFields[key] as { path?: string };
    const v = raw[key];
    if (!spec.path || typeof v !== 'string') continue;
    const rule = rules[key];
    if (!rule) fail([key], `${key}: paths for this key are not accepted over the API`);
    // The project's own read-only vocabulary and a listed checkpoint (the bundled demo model) are named by
    // their paths in the configs the server itself wrote (a resumed run's).
    if (key === 'tokenizer' && v === BUNDLED_CLIP_TOKENIZER) continue;
    if (key === 'base_model') {
      const ckpt = ctx.models.findCheckpoint(v) ?? ctx.models.checkpoints().find((c) => c.path === resolve(ctx.layout.dataDir, v));
      if (ckpt) {
        doc.set(key, ckpt.path);
        continue;
      }
      // A causal LM by its folder name in models/LLM.
      if ((await llmService(ctx).models()).includes(v)) {
        doc.set(key, join(llmService(ctx).modelsDir, v));
        continue;
      }
      if (!v.includes('/') && !v.includes('\\')) {
        const names = ctx.models.checkpoints().map((c) => c.name);
        fail([key], `base_model: no checkpoint named '${v}' (known: ${names.length ? names.join(', ') : 'none; put one in ' + ctx.layout.ckptDir})`);
      }
    }
    doc.set(key, confine(ctx, key, v, rule));
  }
  if (typeof raw['sample_prompts'] === 'string') doc.set('sample_prompts', confine(ctx, 'sample_prompts', raw['sample_prompts'], rules['sample_prompts']!));

  // Server defaults for what the client left out.
  if (raw['base_model'] === undefined || raw['base_model'] === null) {
    const selected = ctx.options.get('sd_model_checkpoint');
    const ckpt = (typeof selected === 'string' && ctx.models.findCheckpoint(selected)) || ctx.models.checkpoints()[0];
    if (!ckpt) fail(['base_model'], `base_model: missing, and there is no checkpoint in ${ctx.layout.ckptDir} to default to`);
    doc.set('base_model', ckpt.path);
  }
  const baseModel = String(doc.get('base_model'));
  if ((raw['tokenizer'] === undefined || raw['tokenizer'] === null) && baseModel.toLowerCase().endsWith('.safetensors')) {
    const found = await findTokenizerDir(baseModel, undefined, [
      join(dirname(ctx.layout.ckptDir), 'tokenizer'),
      join(ctx.layout.dataDir, 'models', 'tokenizer'),
    ]).catch(() => null);
    // Nothing found: left unset, the config loader takes the bundled CLIP vocabulary.
    if (found && found !== BUNDLED_CLIP_TOKENIZER) doc.set('tokenizer', found);
  }
  if (raw['output_dir'] === undefined || raw['output_dir'] === null) doc.set('output_dir', opts.jobDir);
  // Latents are keyed by content, crop, flip and VAE, so one cache serves every job.
  if (raw['latent_cache_dir'] === undefined || raw['latent_cache_dir'] === null) doc.set('latent_cache_dir', join(s.trainingDir, 'latent_cache'));
  if (raw['output_name'] === undefined && typeof raw['train_data_dir'] === 'string') {
    const stem = basename(resolve(ctx.layout.dataDir, raw['train_data_dir']));
    if (OUTPUT_NAME_PATTERN.test(stem) && stem.length <= 200) doc.set('output_name', stem);
  }
  const device = ctx.cmdFlags['device'];
  if (raw['device'] === undefined && typeof device === 'string' && DEVICES.has(device)) doc.set('device', device);

  let parsed: { config: TrainConfig; warnings: string[] };
  try {
    parsed = await parseTrainConfig(doc.toString(), file);
  } catch (e) {
    return reportConfigError(e, text !== null);
  }
  const { config } = parsed;
  const llm = await isLlmModelFolder(config.base_model);
  checkTrainingWork(ctx, config, llm);

  // The loader found some paths itself (metadata.csv, a diffusers model's tokenizer); check them all again.
  for (const [key, rule] of Object.entries(rules)) {
    const v = (config as unknown as Record<string, unknown>)[key];
    // The project's own read-only vocabulary is the one path outside the data folder a config may read.
    if (key === 'tokenizer' && v === BUNDLED_CLIP_TOKENIZER) continue;
    // A checkpoint the server lists is readable wherever it lies (the bundled demo model, used while the folder is empty).
    if (key === 'base_model' && ctx.models.checkpoints().some((c) => c.path === v)) continue;
    if (typeof v === 'string' && key !== 'sample_prompts' && !rule.roots.some((r) => isInside(r, v))) {
      fail([key], `${key}: ${v} is outside ${rule.what}`, 'value_error.path');
    }
  }

  if (llm) {
    try {
      return { config, warnings: parsed.warnings, plannedSteps: (await llmTrainingPlan(config)).totalSteps };
    } catch (e) {
      if (isUserError(e)) fail(['train_data_dir'], e.message, 'value_error.dataset');
      throw e;
    }
  }
  let dataset: Dataset;
  try {
    dataset = await loadDataset(config);
  } catch (e) {
    if (isUserError(e)) fail(['train_data_dir'], e.message, 'value_error.dataset');
    throw e;
  }
  // A metadata table may name files anywhere (`../../secret.png`); only images inside the roots are trained on.
  const roots = datasetRoots(s);
  const outside = dataset.items.filter((i) => !roots.some((r) => isInside(r, i.path)));
  if (outside.length) {
    fail(['metadata_path'], `${config.metadata_path}: names images outside the dataset folders: ${outside.slice(0, 3).map((i) => i.key).join(', ')}`, 'value_error.path');
  }
  if (dataset.items.length > ctx.limits.maxDatasetImages) {
    throw overLimit('train_data_dir', `the dataset has ${dataset.items.length} images, over the limit of ${ctx.limits.maxDatasetImages}`, 'maxDatasetImages');
  }
  return { config, warnings: [...parsed.warnings, ...dataset.warnings], dataset, plannedSteps: stepPlan(dataset, config).totalSteps };
}

/** The work caps of server/limits.ts: training keeps activations for the backward pass, so its images get half the pixels. */
function checkTrainingWork(ctx: ServerContext, c: TrainConfig, llm: boolean): void {
  const L = ctx.limits;
  if (c.lora_rank > L.maxLoraRank) throw overLimit('lora_rank', `lora_rank is ${c.lora_rank}, over the limit of ${L.maxLoraRank}`, 'maxLoraRank');
  // The pixel caps are for images; an LLM run's size is its token rows.
  if (llm) return;
  const maxTrainPixels = L.maxPixels / 2;
  const pixels = c.resolution * c.resolution;
  if (pixels > maxTrainPixels) {
    throw overLimit('resolution', `resolution ${c.resolution} means ${pixels} pixels per image, over the training limit of ${Math.floor(maxTrainPixels)} (half the generation limit)`, 'maxPixels');
  }
  if (c.batch_size * (pixels / maxTrainPixels) ** 2 > 1) {
    throw overLimit('batch_size', `batch_size ${c.batch_size} at resolution ${c.resolution} needs more memory than the limit allows; use gradient_accumulation_steps`, 'maxPixels');
  }
}

function reportConfigError(e: unknown, fromYaml: boolean): never {
  if (isUserError(e)) throw new ValidationError(configIssues(e.message, fromYaml));
  if (e) throw e;
  throw new ValidationError([issue([], 'the training config must be a mapping of key: value pairs')]);
}
