/**
 * Loads a training config: YAML → zod validation → paths resolved against the config's folder → files checked.
 * Every problem is collected and reported at once, each with its line, the key's path and, where one exists,
 * a suggestion; a run should not fail on the fifth typo after the first four were fixed one at a time.
 */
import { readFile, stat, readdir } from 'node:fs/promises';
import { dirname, resolve, join, extname, basename } from 'node:path';
import { homedir } from 'node:os';
import type { z } from 'zod';
import { parseDocument, LineCounter, isMap, isSeq, isScalar, isPair, type Document } from 'yaml';
import { UserError } from '../util/errors.ts';
import { BUNDLED_CLIP_TOKENIZER, CLIP_BPE_GZ, hasTokenizerFiles } from '../text/tokenizer.ts';
import {
  trainConfigFields,
  trainConfigKeys,
  trainConfigSchema,
  samplePromptFields,
  samplePromptSchema,
  kohyaAliases,
  type FieldSpec,
  type TrainConfig,
  type TrainConfigKey,
  type SamplePrompt,
} from './config-fields.ts';
import { closest } from './suggest.ts';
import { applyImpliedDefaults, wrote } from './implied-defaults.ts';
import { checkpointFamily } from '../sd/checkpoint.ts';
import { isLlmModelFolder } from '../llm/config.ts';

/** SDXL's native training size (sd-scripts' SDXL default). */
export const SDXL_RESOLUTION = 1024;

export type { TrainConfig, SamplePrompt } from './config-fields.ts';
export { trainConfigFields, trainConfigKeys } from './config-fields.ts';

type Path = Array<string | number>;

interface Source {
  file: string;
  text: string;
  doc: Document;
  lines: LineCounter;
}

/** Reads, validates and resolves a training config. Throws UserError listing every problem found. */
export async function loadTrainConfig(path: string): Promise<{ config: TrainConfig; warnings: string[] }> {
  const file = resolve(path);
  const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new UserError(
      e.code === 'ENOENT' ? `training config not found: ${file}` : `cannot read training config ${file}: ${e.message}`,
    );
  });
  return parseTrainConfig(text, file);
}

/** Same as loadTrainConfig for YAML already in memory; `file` names it in messages and anchors relative paths. */
export async function parseTrainConfig(text: string, file: string): Promise<{ config: TrainConfig; warnings: string[] }> {
  const src = parseYaml(text, file);
  const warnings = doubleQuotedEscapeWarnings(src);
  const raw: unknown = src.doc.toJS();
  if (raw === null || raw === undefined) throw new UserError(`training config ${file} is empty`);
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new UserError(`training config ${file} must be a mapping of key: value lines, got ${show(raw)}`);
  }
  const rawMap = raw as Record<string, unknown>;
  const problems: string[] = [];
  const parsed = trainConfigSchema.safeParse(rawMap);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(...formatIssue(issue, [], rawMap, trainConfigFields, src));
  }
  const baseDir = dirname(file);
  const prompts = await resolveSamplePrompts(rawMap.sample_prompts ?? [], baseDir, src, problems);
  if (!parsed.success || problems.length) throw configError(file, problems);
  const config = { ...(parsed.data as Record<string, unknown>) } as unknown as TrainConfig;
  config.sample_prompts = prompts;
  // Left out, the resolution follows the base model: SDXL trains at its native 1024².
  if (!wrote(rawMap, 'resolution') && config.base_model && (await checkpointFamily(resolve(baseDir, config.base_model))) === 'sdxl') {
    config.resolution = SDXL_RESOLUTION;
  }
  applyImpliedDefaults(config, rawMap);
  checkCombinations(config, rawMap, src, problems, warnings);
  await resolvePaths(config, baseDir, src, problems);
  if (problems.length) throw configError(file, problems);
  // Canonical key order so the printed config reads like the docs.
  const ordered = Object.fromEntries(trainConfigKeys.map((k) => [k, config[k]])) as unknown as TrainConfig;
  return { config: ordered, warnings };
}

function configError(file: string, problems: string[]): UserError {
  const lineNo = (p: string) => Number(/^line (\d+)/.exec(p)?.[1] ?? Infinity);
  const unique = [...new Set(problems)].sort((a, b) => lineNo(a) - lineNo(b));
  const n = unique.length;
  return new UserError(
    `training config ${file} has ${n} problem${n === 1 ? '' : 's'}:\n${unique.map((p) => `  ${p}`).join('\n')}`,
  );
}

// ---------------------------------------------------------------- YAML

function parseYaml(text: string, file: string): Source {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    const msgs = doc.errors.map((e) => {
      const at = `line ${lines.linePos(e.pos[0]).line}`;
      if (e.code === 'BAD_DQ_ESCAPE') {
        const esc = e.message.match(/\\./)?.[0] ?? '\\';
        return (
          `${at}: ${esc} is not an escape YAML knows inside double quotes; ` +
          `write Windows paths in single quotes ('C:\\data\\photos') or with forward slashes (C:/data/photos)`
        );
      }
      if (e.code === 'DUPLICATE_KEY') return `${at}: this key appears twice; keep one`;
      return `${at}: ${e.message}`;
    });
    throw new UserError(`training config ${file} is not valid YAML:\n${msgs.map((m) => `  ${m}`).join('\n')}`);
  }
  return { file, text, doc, lines };
}

/** Line of the node at `path` (the key itself when `key` is set), as "line N: ", or "" when unknown. */
function lineOf(src: Source, path: Path, key = false): string {
  let node: unknown = src.doc.contents;
  let keyNode: unknown;
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && p.key.value === seg);
      if (!pair) return '';
      keyNode = pair.key;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      keyNode = undefined;
      node = node.items[seg];
    } else return '';
  }
  const target = (key && keyNode) || node || keyNode;
  const range = (target as { range?: [number, number, number] } | undefined)?.range;
  return range ? `line ${src.lines.linePos(range[0]).line}: ` : '';
}

const ESCAPE_NAMES: Record<string, string> = {
  n: 'newline',
  t: 'tab',
  r: 'carriage return',
  b: 'backspace',
  f: 'form feed',
  v: 'vertical tab',
  a: 'bell',
  e: 'escape',
  '0': 'NUL',
  x: 'a character code',
  u: 'a character code',
  U: 'a character code',
  N: 'next line',
  L: 'line separator',
  P: 'paragraph separator',
  _: 'no-break space',
  ' ': 'space',
};

/**
 * YAML reads "C:\new" as C:, newline, "ew". The parse succeeds, so the only trace is in the source text:
 * a double-quoted scalar whose raw form holds an escape other than \\ \" or \/.
 */
function doubleQuotedEscapeWarnings(src: Source): string[] {
  const out: string[] = [];
  const walk = (node: unknown, path: Path) => {
    if (isMap(node)) {
      for (const p of node.items) {
        if (!isPair(p)) continue;
        const k = isScalar(p.key) ? String(p.key.value) : '?';
        walk(p.value, [...path, k]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => walk(item, [...path, i]));
    } else if (isScalar(node) && node.type === 'QUOTE_DOUBLE' && node.range) {
      const raw = src.text.slice(node.range[0], node.range[1]);
      const escapes = new Set<string>();
      for (let i = 0; i < raw.length; i++) {
        if (raw[i] !== '\\') continue;
        const c = raw[i + 1] ?? '';
        if (c !== '\\' && c !== '"' && c !== '/' && c !== '\n' && c !== '\r') escapes.add(`\\${c}`);
        i++;
      }
      if (escapes.size) {
        const rawBody = raw.replace(/^"|"$/g, '');
        const named = [...escapes].map((e) => `${e}${ESCAPE_NAMES[e[1]!] ? ` (${ESCAPE_NAMES[e[1]!]})` : ''}`);
        out.push(
          `${lineOf(src, path)}${dotted(path)}: the double-quoted value ${raw} contains ${named.join(', ')}, ` +
            `which YAML reads as an escape, so the value is not the text you wrote; ` +
            `for a Windows path use single quotes ('${rawBody}') or forward slashes (${rawBody.replace(/\\/g, '/')})`,
        );
      }
    }
  };
  walk(src.doc.contents, []);
  return out;
}

// ---------------------------------------------------------------- schema issues

function dotted(path: Path): string {
  let s = '';
  for (const seg of path) s += typeof seg === 'number' ? `[${seg}]` : s ? `.${seg}` : seg;
  return s || '(top level)';
}

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

function valueAt(root: unknown, path: Path): unknown {
  let v = root;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

/** The string values an enum schema (or a union holding one) accepts, for "did you mean". */
function enumValues(schema: z.ZodType): string[] {
  const options = (schema as { options?: unknown }).options;
  if (!Array.isArray(options)) return [];
  return options.flatMap((o) => (typeof o === 'string' ? [o] : typeof o === 'object' && o ? enumValues(o as z.ZodType) : []));
}

function formatIssue(
  issue: z.core.$ZodIssue,
  prefix: Path,
  raw: unknown,
  fields: Record<string, FieldSpec>,
  src: Source,
): string[] {
  const path: Path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  const full = [...prefix, ...path];
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => {
      const alias = prefix.length === 0 && path.length === 0 ? kohyaAliases[k] : undefined;
      const guess = alias ?? closest(k, Object.keys(fields));
      const hint = alias ? ` (kohya's name; here it is '${alias}')` : guess ? ` (did you mean '${guess}'?)` : '';
      return `${lineOf(src, [...full, k], true)}unknown key '${dotted([...full, k])}'${hint}`;
    });
  }
  const spec = fields[String(path[0])];
  const value = valueAt(raw, path);
  const where = lineOf(src, full);
  if (!spec) return [`${where}${dotted(full)}: ${issue.message}`];
  if (value === undefined) return [`${lineOf(src, prefix)}${dotted(full)}: missing; expected ${spec.expect}`];
  let hint = '';
  const options = enumValues(spec.schema);
  if (typeof value === 'string') {
    const guess = options.length ? closest(value, options) : undefined;
    if (guess) hint = ` (did you mean '${guess}'?)`;
    else if (/^(an integer|a number|a whole)/.test(spec.expect) && value.trim() !== '' && Number.isFinite(Number(value)))
      hint = ' (write the number without quotes)';
    else if (spec.expect === 'true or false' && /^(true|false)$/i.test(value)) hint = ' (write true or false without quotes)';
    else if (spec.expect === 'true or false' && /^(yes|no|on|off|y|n)$/i.test(value))
      hint = ' (YAML 1.2 reads yes/no/on/off as text; write true or false)';
  }
  return [`${where}${dotted(full)}: expected ${spec.expect}, got ${show(value)}${hint}`];
}

// ---------------------------------------------------------------- sample prompts

async function resolveSamplePrompts(value: unknown, baseDir: string, src: Source, problems: string[]): Promise<SamplePrompt[]> {
  const spec = trainConfigFields.sample_prompts;
  if (typeof value === 'string') {
    const file = expandPath(baseDir, value);
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) {
      problems.push(`${lineOf(src, ['sample_prompts'])}sample_prompts: prompt file not found: ${file}${await siblingHint(file)}`);
      return [];
    }
    return text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'))
      .map((prompt) => samplePromptSchema.parse({ prompt }) as unknown as SamplePrompt);
  }
  if (!Array.isArray(value)) {
    problems.push(`${lineOf(src, ['sample_prompts'])}sample_prompts: expected ${spec.expect}, got ${show(value)}`);
    return [];
  }
  const out: SamplePrompt[] = [];
  value.forEach((item, i) => {
    const obj = typeof item === 'string' ? { prompt: item } : item;
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      problems.push(`${lineOf(src, ['sample_prompts', i])}sample_prompts[${i}]: expected a prompt string or a mapping, got ${show(item)}`);
      return;
    }
    const r = samplePromptSchema.safeParse(obj);
    if (r.success) out.push(r.data as unknown as SamplePrompt);
    else for (const issue of r.error.issues) problems.push(...formatIssue(issue, ['sample_prompts', i], obj, samplePromptFields, src));
  });
  return out;
}

// ---------------------------------------------------------------- cross-key rules

function checkCombinations(
  c: TrainConfig,
  raw: Record<string, unknown>,
  src: Source,
  problems: string[],
  warnings: string[],
): void {
  const at = (k: TrainConfigKey) => lineOf(src, [k]);
  if (c.enable_bucket) {
    if (c.min_bucket_reso > c.max_bucket_reso)
      problems.push(`${at('min_bucket_reso')}min_bucket_reso (${c.min_bucket_reso}) is larger than max_bucket_reso (${c.max_bucket_reso})`);
    else if (c.resolution < c.min_bucket_reso || c.resolution > c.max_bucket_reso)
      problems.push(
        `${at('resolution')}resolution (${c.resolution}) must lie between min_bucket_reso (${c.min_bucket_reso}) and max_bucket_reso (${c.max_bucket_reso}); ` +
          `lower min_bucket_reso or raise max_bucket_reso`,
      );
  }
  if (c.lr_scheduler === 'constant' && c.lr_warmup_steps > 0)
    problems.push(`${at('lr_warmup_steps')}lr_warmup_steps is ${c.lr_warmup_steps} but lr_scheduler 'constant' has no warmup; use lr_scheduler: constant_with_warmup`);
  if (c.resume_from !== null && c.init_lora !== null)
    problems.push(`${at('init_lora')}set either resume_from (continue a saved run) or init_lora (start from a LoRA's weights), not both`);
  if (c.cache_latents && c.random_crop)
    problems.push(`${at('random_crop')}random_crop gives a new crop each epoch, so its latents cannot be cached; set cache_latents: false or random_crop: false`);
  if (c.keep_tokens > 0 && !c.shuffle_caption && c.caption_tag_dropout_rate === 0)
    warnings.push(`${at('keep_tokens')}keep_tokens has no effect without shuffle_caption or caption_tag_dropout_rate`);
  if ('text_encoder_lr' in raw && !c.train_text_encoder)
    warnings.push(`${at('text_encoder_lr')}text_encoder_lr is ignored because train_text_encoder is false`);
  if (c.sample_every_n_steps > 0 && c.sample_prompts.length === 0)
    warnings.push(`${at('sample_every_n_steps')}sample_every_n_steps is set but sample_prompts is empty, so no samples will be made`);
}

// ---------------------------------------------------------------- paths

function expandPath(baseDir: string, p: string): string {
  if (p === '~' || p.startsWith('~/')) return join(homedir(), p.slice(1));
  return resolve(baseDir, p);
}

async function kindOf(p: string): Promise<'file' | 'dir' | undefined> {
  const s = await stat(p).catch(() => undefined);
  return s ? (s.isDirectory() ? 'dir' : 'file') : undefined;
}

/** " (did you mean 'x'?)" from the entries beside a missing path, or a note that its folder is missing too. */
async function siblingHint(p: string): Promise<string> {
  const entries = await readdir(dirname(p)).catch(() => undefined);
  if (!entries) return ` (the folder ${dirname(p)} does not exist either)`;
  const guess = closest(basename(p), entries);
  return guess ? ` (did you mean '${join(dirname(p), guess)}'?)` : '';
}

const PICKLE_EXTS = new Set(['.ckpt', '.pt', '.pth', '.bin']);

async function resolvePaths(c: TrainConfig, baseDir: string, src: Source, problems: string[]): Promise<void> {
  const cfg = c as unknown as Record<TrainConfigKey, unknown>;
  for (const key of trainConfigKeys) {
    const spec: FieldSpec = trainConfigFields[key];
    const v = cfg[key];
    if (!spec.path || typeof v !== 'string') continue;
    const abs = expandPath(baseDir, v);
    cfg[key] = abs;
    const kind = await kindOf(abs);
    const at = lineOf(src, [key]);
    const rel = abs === v ? '' : ` (resolved against the config's folder ${baseDir})`;
    if (spec.path === 'output') {
      if (kind === 'file') problems.push(`${at}${key}: ${abs} is a file; expected a folder`);
      continue;
    }
    if (kind === undefined) {
      const what = spec.path === 'dir' ? 'folder' : spec.path === 'file' ? 'file' : 'path';
      problems.push(`${at}${key}: ${what} not found: ${abs}${rel}${await siblingHint(abs)}`);
      continue;
    }
    if (spec.path === 'dir' && kind !== 'dir') problems.push(`${at}${key}: ${abs} is a file; expected a folder`);
    if (spec.path === 'file' && kind !== 'file') problems.push(`${at}${key}: ${abs} is a folder; expected a file`);
  }
  if (problems.length) return;

  if (c.metadata_path === null) {
    for (const name of ['metadata.csv', 'metadata.jsonl']) {
      const p = join(c.train_data_dir, name);
      if ((await kindOf(p)) === 'file') {
        c.metadata_path = p;
        break;
      }
    }
  } else if (!['.csv', '.jsonl'].includes(extname(c.metadata_path).toLowerCase())) {
    problems.push(`${lineOf(src, ['metadata_path'])}metadata_path: ${c.metadata_path} should be a .csv or .jsonl file`);
  }

  const baseKind = await kindOf(c.base_model);
  const at = lineOf(src, ['base_model']);
  const llm = baseKind === 'dir' && (await isLlmModelFolder(c.base_model));
  if (baseKind === 'file') {
    const ext = extname(c.base_model).toLowerCase();
    if (PICKLE_EXTS.has(ext))
      problems.push(`${at}base_model: ${c.base_model} is a pickle checkpoint, which can run code when loaded and is not read; convert it to .safetensors`);
    else if (ext !== '.safetensors') problems.push(`${at}base_model: expected a .safetensors file or a diffusers folder, got ${c.base_model}`);
  } else if (llm) {
    // A Hugging Face causal LM trains an LLM LoRA; its tokenizer is the folder's own tokenizer.json.
    if ((c as unknown as Record<string, unknown>).tokenizer === null) {
      if ((await kindOf(join(c.base_model, 'tokenizer.json'))) === 'file') c.tokenizer = c.base_model;
      else problems.push(`${at}base_model: ${c.base_model} has no tokenizer.json; set tokenizer: to the folder that has this model's tokenizer.json`);
    }
  } else if (!(await kindOf(join(c.base_model, 'model_index.json'))) && !(await kindOf(join(c.base_model, 'unet')))) {
    problems.push(`${at}base_model: ${c.base_model} is a folder without model_index.json or unet/, so not a diffusers model (nor a Hugging Face causal LM: no config.json with a supported model_type)`);
  }
  if (!llm && (Array.isArray(c.target_modules) || c.target_modules === 'all-linear'))
    problems.push(`${lineOf(src, ['target_modules'])}target_modules: ${JSON.stringify(c.target_modules)} applies to LLM base models; for Stable Diffusion use attention, attention_mlp or attention_mlp_conv`);

  const cfgRaw = cfg as Record<string, unknown>;
  if (cfgRaw.tokenizer === null) {
    // A diffusers model's own tokenizer, else the CLIP vocabulary that ships with the project.
    const own = join(c.base_model, 'tokenizer');
    c.tokenizer = baseKind === 'dir' && (await hasTokenizerFiles(own)) ? own : BUNDLED_CLIP_TOKENIZER;
  }
  if (typeof c.tokenizer === 'string' && !problems.length && !(await hasTokenizerFiles(c.tokenizer)))
    problems.push(`${lineOf(src, ['tokenizer'])}tokenizer: ${c.tokenizer} has neither tokenizer.json, vocab.json + merges.txt nor ${CLIP_BPE_GZ}`);

  if (c.init_lora !== null && extname(c.init_lora).toLowerCase() !== '.safetensors')
    problems.push(`${lineOf(src, ['init_lora'])}init_lora: expected a LoRA .safetensors file, got ${c.init_lora}`);

  if (cfgRaw.logging_dir === null) c.logging_dir = join(c.output_dir, 'logs');
  if (cfgRaw.latent_cache_dir === null) c.latent_cache_dir = join(c.output_dir, 'latent_cache');
}
