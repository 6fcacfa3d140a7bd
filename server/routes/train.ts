/**
 * LoRA training over the API (a lora-scripts extension; A1111 has no LoRA training routes), all under
 * `/sdapi/v1/train/`: jobs (start, list, inspect, cancel, dry run) and datasets (upload, list, delete).
 * Trainings go through the shared queue, so they wait for generations ahead of them and the reverse.
 */
import { stringify } from 'yaml';
import type { Request, Response } from 'express';
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import { stepPlan } from '../../engine/train/dataset.ts';
import { bucketName } from '../../engine/train/buckets.ts';
import { dryRunReport } from '../../engine/train/dry-run-report.ts';
import type { ServerContext } from '../context.ts';
import { listDatasets, deleteDataset, removeStaleStaging } from '../datasets.ts';
import { HttpError } from '../errors.ts';
import { prepareTrainingRequest } from '../train-config.ts';
import { trainingSettings } from '../train-settings.ts';
import { newTrainJobId, trainingRegistry, type TrainJob } from '../training.ts';
import { receiveDatasetUpload } from '../uploads.ts';
import type { Api } from './api.ts';
import { llmService } from '../llm.ts';

const TRUE = new Set(['1', 'true', 'yes', 'on']);
const flag = (req: Request, name: string) => TRUE.has(String(req.query[name] ?? '').toLowerCase());

/** `?worker_label=` pins the job to workers started with `--label` (distributed mode; one process ignores it). */
function workerLabel(req: Request): string | null {
  const v = req.query['worker_label'];
  if (v === undefined || v === '') return null;
  if (typeof v !== 'string' || !/^[\w.-]+$/.test(v)) throw new HttpError(422, `worker_label: '${String(v)}' may hold only letters, digits, '.', '_' and '-'`);
  return v;
}

function summary(ctx: ServerContext, job: TrainJob) {
  const c = job.config;
  return {
    id: job.id,
    status: job.status,
    queue_position: trainingRegistry(ctx).queuePosition(job.id),
    created_at: job.created_at,
    started_at: job.started_at,
    ended_at: job.ended_at,
    output_name: c.output_name,
    base_model: c.base_model,
    train_data_dir: c.train_data_dir,
    lora_rank: c.lora_rank,
    lora_alpha: c.lora_alpha,
    epochs: c.epochs,
    batch_size: c.batch_size,
    learning_rate: c.learning_rate,
    resolution: c.resolution,
    step: job.progress?.step ?? 0,
    total_steps: job.progress?.total_steps || job.planned_steps,
    loss: job.loss_history.at(-1)?.loss ?? null,
    lora: job.outputs.lora,
    error: job.error,
    // What a client can do next with a job that stopped before its end.
    actions: job.status === 'interrupted' || (job.status === 'cancelled' && job.outputs.last_state) ? { resume: `/sdapi/v1/train/jobs/${job.id}/resume` } : {},
    last_state: job.outputs.last_state,
  };
}

/**
 * The request that continues a stopped job: its resolved config, from its newest state, in a folder of its
 * own (output_dir and logging_dir left to their defaults, so the old job's record and logs stay as they are).
 */
function resumeBody(job: TrainJob): Record<string, unknown> {
  const { output_dir: _o, logging_dir: _l, resume_from: _r, ...rest } = job.config as unknown as Record<string, unknown>;
  return { ...rest, ...(job.outputs.last_state ? { resume_from: job.outputs.last_state } : {}) };
}

function detail(ctx: ServerContext, job: TrainJob) {
  return { ...summary(ctx, job), progress: job.progress, loss_history: job.loss_history, validation: job.validation, warnings: job.warnings, logs: job.logs, outputs: job.outputs, config: job.config, result: job.result };
}

function findJob(ctx: ServerContext, id: string): TrainJob {
  const job = trainingRegistry(ctx).get(id);
  if (!job) throw new HttpError(404, `training job '${id}' not found`);
  return job;
}

export function register(api: Api, ctx: ServerContext): void {
  const registry = trainingRegistry(ctx);
  const settings = trainingSettings(ctx);
  const tag = 'training';
  void removeStaleStaging(settings).then(
    (gone) => gone.length && ctx.log(`removed ${gone.length} unfinished upload folder(s) in ${settings.datasetsDir}`),
    () => {},
  );

  api.post(
    '/sdapi/v1/train/jobs',
    {
      summary: 'Queue a LoRA training: the body is a training config as a JSON object, or {"yaml": "<config>"}; relative paths are in the data folder. ?overwrite=true replaces an existing LoRA of the same name; ?worker_label=NAME pins it to workers started with --label NAME (distributed mode). Answers 202.',
      tag,
      query: [
        { name: 'overwrite', type: 'boolean', default: false },
        { name: 'worker_label', type: 'string', default: '' },
      ],
      example: { id: 'train-0123456789ab', status: 'queued', queue_position: 0, output_name: 'cats', lora: '/data/models/Lora/cats.safetensors', warnings: [] },
    },
    async (req, res) => queueTraining(req, res, req.body),
  );

  async function queueTraining(req: Request, res: Response, body: unknown) {
    const id = newTrainJobId();
    const prepared = await prepareTrainingRequest(ctx, settings, body, { jobDir: join(settings.trainingDir, id) });
    const name = prepared.config.output_name;
    // No image dataset: an LLM run, whose adapter folder is published to models/LLM-adapters.
    const lora = prepared.dataset ? join(ctx.layout.loraDir, `${name}.safetensors`) : join(llmService(ctx).adaptersDir, name);
    if (registry.activeWithName(name)) throw new HttpError(409, `training job ${registry.activeWithName(name)!.id} already writes the LoRA '${name}'; choose another output_name`);
    if (!flag(req, 'overwrite') && (await stat(lora).catch(() => null))) {
      throw new HttpError(409, `the LoRA folder already has ${name}.safetensors; choose another output_name or add ?overwrite=true`);
    }
    const job = registry.submit(id, prepared, { body, label: workerLabel(req) });
    res.status(202);
    return { id: job.id, status: job.status, queue_position: registry.queuePosition(job.id), output_name: name, lora, work_dir: job.outputs.work_dir, warnings: job.warnings };
  }

  api.post(
    '/sdapi/v1/train/jobs/:id/resume',
    {
      summary: 'Continue an interrupted (server stopped) or cancelled training from its newest saved state, as a new job with the same config (?overwrite=true as for jobs). Answers 202.',
      tag,
      query: [{ name: 'overwrite', type: 'boolean', default: false }],
    },
    async (req, res) => {
      await registry.ready;
      const job = findJob(ctx, String(req.params['id']));
      if (job.status !== 'interrupted' && job.status !== 'cancelled') throw new HttpError(409, `training job '${job.id}' is ${job.status}; only interrupted or cancelled jobs can be resumed`);
      if (job.status === 'cancelled' && !job.outputs.last_state) throw new HttpError(409, `training job '${job.id}' was cancelled before it saved a state; queue it again instead`);
      const out = await queueTraining(req, res, resumeBody(job));
      return { ...out, resumes: job.id, resume_from: job.outputs.last_state };
    },
  );

  api.get('/sdapi/v1/train/jobs', { summary: 'Training jobs, oldest first (those of earlier server runs from their job.json)', tag }, async () => {
    await registry.ready;
    return registry.list().map((j) => summary(ctx, j));
  });

  api.get('/sdapi/v1/train/jobs/:id', { summary: 'One training job: status, progress, loss per step, validation, warnings, logs, outputs, resolved config', tag }, async (req) => {
    await registry.ready;
    return detail(ctx, findJob(ctx, String(req.params['id'])));
  });

  api.post(
    '/sdapi/v1/train/jobs/:id/cancel',
    { summary: 'Cancel a training: a waiting job is removed; a running one stops at the next micro-batch and saves a state to resume from', tag },
    async (req) => {
      const job = findJob(ctx, String(req.params['id']));
      const r = registry.cancel(job.id);
      if (!r) throw new HttpError(409, `training job '${job.id}' has already ended (${job.status})`);
      return { id: job.id, status: job.status, cancel: r };
    },
  );

  api.post('/sdapi/v1/train/dry-run', { summary: 'Validate a training config and plan its dataset (captions, buckets, steps), like `lora-scripts train --dry-run`; nothing is queued', tag }, async (req) => {
    const prepared = await prepareTrainingRequest(ctx, settings, req.body, { jobDir: join(settings.trainingDir, 'dry-run') });
    const { config, dataset } = prepared;
    // An LLM config has text rows, not images: its plan is the step count.
    if (!dataset) return { config, config_yaml: stringify(config, { lineWidth: 0 }), warnings: prepared.warnings, plan: { total_steps: prepared.plannedSteps } };
    const plan = stepPlan(dataset, config);
    return {
      config,
      config_yaml: stringify(config, { lineWidth: 0 }),
      warnings: prepared.warnings,
      dataset: {
        root: dataset.root,
        metadata: dataset.metadataPath,
        coverage: dataset.coverage,
        buckets: [...new Set(dataset.items.map((i) => bucketName(i.placement.bucket)))],
        items: dataset.items.map((i) => ({
          key: i.key,
          caption: i.caption,
          caption_source: i.captionSource,
          width: i.width,
          height: i.height,
          bucket: bucketName(i.placement.bucket),
          resized: i.placement.resized,
          crop: i.placement.crop,
          repeats: i.repeats,
          split: i.split,
        })),
      },
      plan: { batches_per_epoch: plan.batchesPerEpoch, steps_per_epoch: plan.stepsPerEpoch, total_steps: plan.totalSteps },
      report: dryRunReport(config, dataset),
    };
  });

  api.get('/sdapi/v1/train/datasets', { summary: 'Datasets in <data-dir>/datasets with image and caption counts', tag }, () => listDatasets(settings));

  api.post(
    '/sdapi/v1/train/datasets/:name',
    {
      summary: 'Upload a dataset as multipart/form-data: png/jpg/webp images with metadata.csv (or .txt captions), or one .zip. ?replace=true replaces an existing one. Answers 201.',
      tag,
      query: [{ name: 'replace', type: 'boolean', default: false }],
    },
    async (req, res) => {
      const out = await receiveDatasetUpload(req, res, settings, String(req.params['name']), { replace: flag(req, 'replace'), inUse: (d) => registry.usesFolder(d) });
      res.status(201);
      return out;
    },
  );

  // The Api helper records GET and POST only; DELETE is registered on its router directly (documented in docs/server.md).
  api.router.delete('/sdapi/v1/train/datasets/:name', async (req, res) => {
    const name = String(req.params['name']);
    await deleteDataset(settings, name, (d) => registry.usesFolder(d));
    res.json({ deleted: name });
  });
}
