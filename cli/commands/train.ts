import type { Command } from 'commander';
import { stringify } from 'yaml';
import { UserError } from '../../engine/util/errors.ts';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { defaultCheckpoint, demoNotice } from '../../engine/demo/demo-model.ts';
import { loadTrainConfig, parseTrainConfig, type TrainConfig } from '../../engine/train/config.ts';
import { loadDataset, stepPlan, type Dataset } from '../../engine/train/dataset.ts';
import { bucketName } from '../../engine/train/buckets.ts';
import { captionForStep, captionOptions } from '../../engine/train/captions.ts';
import { BUCKET_RESO_STEP } from '../../engine/train/config-fields.ts';
import { runTraining } from './train-run.ts';
import { isLlmModelFolder } from '../../engine/llm/config.ts';
import { llmDryRunReport } from '../../engine/llm/trainer.ts';

export function register(program: Command): void {
  program
    .command('train')
    .description('train a LoRA from one YAML config')
    .requiredOption('--config <file>', 'YAML training config')
    .option('--dry-run', 'validate the config and show the dataset plan without training')
    .option('--save-format <format>', 'LoRA file format: kohya (A1111, default) or diffusers (PEFT keys)', 'kohya')
    .option('--no-progress', 'print one line per step instead of a progress bar')
    .option('--gradient-checkpointing', 'recompute UNet block activations in the backward pass (less memory, slower)')
    .option('--low-memory', 'feed the frozen weights instead of baking them into the session (one copy of the UNet, slower)')
    .option('--bake-weights', 'bake the frozen weights into the session even when RAM looks tight (faster, about 2 more copies of the UNet)')
    .action(async (opts: { config: string; dryRun?: boolean; saveFormat: string; progress: boolean; gradientCheckpointing?: boolean; lowMemory?: boolean; bakeWeights?: boolean }) => {
      if (opts.saveFormat !== 'kohya' && opts.saveFormat !== 'diffusers')
        throw new UserError(`--save-format must be kohya or diffusers, got ${JSON.stringify(opts.saveFormat)}`);
      const { config, warnings } = await loadConfigWithDefaultModel(opts.config);
      if (opts.dryRun) console.log(`# resolved config (${opts.config})\n${stringify(config, { lineWidth: 0 }).trimEnd()}\n`);
      for (const w of warnings) console.warn(`warning: ${w}`);
      if (await isLlmModelFolder(config.base_model)) {
        // An LLM base model: text data, a PEFT adapter out (engine/llm).
        if (opts.dryRun) console.log(await llmDryRunReport(config));
        else await runTraining(config, { saveFormat: 'diffusers', progressBar: opts.progress && Boolean(process.stderr.isTTY), gradientCheckpointing: Boolean(opts.gradientCheckpointing), frozenWeights: opts.lowMemory ? 'fed' : opts.bakeWeights ? 'baked' : 'auto' });
        return;
      }
      const dataset = await loadDataset(config, { verifyImages: Boolean(opts.dryRun) });
      for (const w of dataset.warnings) console.warn(`warning: ${w}`);
      if (!opts.dryRun) {
        await runTraining(config, { saveFormat: opts.saveFormat, progressBar: opts.progress && Boolean(process.stderr.isTTY), dataset,
          gradientCheckpointing: Boolean(opts.gradientCheckpointing), frozenWeights: opts.lowMemory ? 'fed' : opts.bakeWeights ? 'baked' : 'auto' });
        return;
      }
      console.log(dryRunReport(config, dataset));
    });
}

/**
 * The config, with `base_model` defaulting to the first checkpoint in models/Stable-diffusion, else the
 * bundled demo model (said in one line), when the file names none.
 */
async function loadConfigWithDefaultModel(path: string): Promise<{ config: TrainConfig; warnings: string[] }> {
  const text = await readFile(path, 'utf8').catch(() => null);
  const raw: unknown = text === null ? null : parseDocument(text).toJS();
  if (text === null || !raw || typeof raw !== 'object' || 'base_model' in raw || 'pretrained_model_name_or_path' in raw) return loadTrainConfig(path);
  const ckptDir = resolve('models/Stable-diffusion');
  const chosen = await defaultCheckpoint(ckptDir);
  if (chosen.demo) console.error(demoNotice(ckptDir));
  // Appended, so line numbers in messages about the user's own keys stay right.
  return parseTrainConfig(`${text.trimEnd()}\nbase_model: ${JSON.stringify(chosen.path)}\n`, resolve(path));
}

const SAMPLE_COUNT = 5;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => `  ${r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ')}`.trimEnd()).join('\n');
}

/** What a run would do, before it spends an hour doing it: captions, buckets, crops and step counts. */
export function dryRunReport(config: TrainConfig, dataset: Dataset): string {
  const out: string[] = [];
  const { items, coverage } = dataset;
  const validation = items.filter((i) => i.split === 'validation').length;
  const samplesPerEpoch = items.filter((i) => i.split === 'train').reduce((n, i) => n + i.repeats, 0);
  out.push(`# dataset ${dataset.root}`);
  out.push(`metadata: ${dataset.metadataPath ?? `none (captions from ${config.caption_extension} sidecar files)`}`);
  out.push(
    `images: ${items.length} (train ${items.length - validation}, validation ${validation}); ` +
      `${samplesPerEpoch} training samples per epoch with repeats`,
  );
  const pct = coverage.total ? ((100 * coverage.captioned) / coverage.total).toFixed(1) : '0.0';
  const s = coverage.bySource;
  out.push(
    `caption coverage: ${coverage.captioned}/${coverage.total} (${pct}%): metadata ${s.metadata}, sidecar ${s.sidecar}, ` +
      `folder name ${s.folder}, none ${s.none}`,
  );
  if (coverage.missing.length) out.push(`  without caption (trained with an empty caption): ${coverage.missing.join(', ')}`);

  out.push('', '# sample captions');
  const opts = captionOptions(config);
  const changes = opts.shuffle || opts.dropoutRate > 0 || opts.tagDropoutRate > 0;
  const pick = SAMPLE_COUNT >= items.length ? items : Array.from({ length: SAMPLE_COUNT }, (_, k) => items[Math.floor((k * items.length) / SAMPLE_COUNT)]!);
  for (const it of pick) {
    out.push(`  ${it.key} [${it.captionSource}]: ${JSON.stringify(it.caption)}`);
    if (changes) out.push(`    as seen at step 0: ${JSON.stringify(captionForStep(it.caption, opts, config.seed, it.key, 0))}`);
  }

  const plan = stepPlan(dataset, config);
  out.push(
    '',
    config.enable_bucket
      ? `# buckets (area ≤ ${config.resolution}², sides ${config.min_bucket_reso}–${config.max_bucket_reso} in steps of ${BUCKET_RESO_STEP}; ${dataset.buckets.length} possible, ${new Set(items.map((i) => bucketName(i.placement.bucket))).size} used)`
      : `# buckets (bucketing off: every image ${config.resolution}×${config.resolution})`,
  );
  const per = new Map<string, { images: number; samples: number }>();
  for (const it of items.filter((i) => i.split === 'train')) {
    const k = bucketName(it.placement.bucket);
    const e = per.get(k) ?? { images: 0, samples: 0 };
    e.images++;
    e.samples += it.repeats;
    per.set(k, e);
  }
  const rows = [['bucket', 'aspect', 'images', 'samples/epoch', 'batches/epoch']];
  for (const b of dataset.buckets) {
    const e = per.get(bucketName(b));
    if (!e) continue;
    rows.push([bucketName(b), (b.width / b.height).toFixed(3), String(e.images), String(e.samples), String(Math.ceil(e.samples / config.batch_size))]);
  }
  out.push(table(rows));
  out.push(
    `steps: ${plan.batchesPerEpoch} batches of ≤ ${config.batch_size} per epoch, ${plan.stepsPerEpoch} optimizer steps per epoch ` +
      `(gradient accumulation ${config.gradient_accumulation_steps}), ${plan.totalSteps} in total over ${config.epochs} epochs`,
  );

  out.push('', `# images (crop ${config.random_crop ? 'random per epoch; the center crop is shown' : 'centered'}${config.flip_aug ? ', random horizontal flip' : ''})`);
  const imgRows = [['image', 'size', 'bucket', 'resized to', 'crop (left,top)', 'repeats', 'split']];
  for (const it of items) {
    const p = it.placement;
    imgRows.push([
      it.key,
      `${it.width}x${it.height}`,
      bucketName(p.bucket),
      `${p.resized.width}x${p.resized.height}`,
      `${p.crop.left},${p.crop.top}`,
      String(it.repeats),
      it.split,
    ]);
  }
  out.push(table(imgRows));
  out.push('', 'dry run: config and dataset are valid; nothing was trained');
  return out.join('\n');
}
