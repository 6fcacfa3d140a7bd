/**
 * The training dry-run report (what a run would do, before it spends an hour doing it), shared by
 * `lora-scripts train --dry-run` and the server's dry-run route.
 */
import type { TrainConfig } from './config.ts';
import { stepPlan, type Dataset } from './dataset.ts';
import { bucketName } from './buckets.ts';
import { captionForStep, captionOptions } from './captions.ts';
import { BUCKET_RESO_STEP } from './config-fields.ts';

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
