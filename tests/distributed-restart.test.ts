/**
 * A front (`serve --queue`) that restarts reads the trainings of its earlier run from their job.json files;
 * those without an end are asked about in Redis before they are called `interrupted`: one a worker still
 * runs (BullMQ `active`) is listed as running, one still waiting as queued, one a worker finished or failed
 * while no front was up as done / failed with the worker's record, and only one Redis no longer holds as
 * interrupted. Real redis-server, the front's own queue class, a BullMQ worker holding a job.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Queue, Worker } from 'bullmq';
import { startRedis } from './support/redis.ts';
import { startTestServer } from './server-fixture-backend.ts';
import { RedisFrontQueue } from '../server/distributed/front-queue.ts';
import { parseRedisUrl } from '../server/distributed/redis-url.ts';
import { KEY_PREFIX, QUEUE_NAME, bullJobId, type JobAnswer, type JobEnvelope } from '../server/distributed/protocol.ts';
import { trainingRegistry } from '../server/training.ts';

test('a restarted front lists trainings that Redis still holds as running or queued, and those that ended meanwhile as they ended, not interrupted', async () => {
  const redis = await startRedis();
  const target = parseRedisUrl(redis.url);
  const queue = new Queue(QUEUE_NAME, { connection: target.options, prefix: KEY_PREFIX });
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let worker: Worker | null = null;
  let front: RedisFrontQueue | null = null;
  let server: Awaited<ReturnType<typeof startTestServer>> | null = null;
  try {
    const ids = { running: 'train-still-running', waiting: 'train-still-waiting', gone: 'train-gone', finished: 'train-finished-alone', failed: 'train-failed-alone' };
    const envelope = (id: string): JobEnvelope => ({ id, kind: 'train_lora', owner: null, handler: 'train_lora', data: {}, options: {}, label: 'nobody-carries-this', prefer: null, queuedAt: Date.now() });
    const server0 = await startTestServer({ withModel: true });
    const dataDir = server0.dataDir;
    await server0.server.close();
    const record = (id: string, status: string) => {
      const dir = join(dataDir, 'training', id);
      return {
        id, status, created_at: new Date().toISOString(), started_at: status === 'queued' ? null : new Date().toISOString(), ended_at: null as string | null,
        config: { output_name: id, train_data_dir: join(dataDir, 'datasets', 'x'), output_dir: dir, logging_dir: join(dir, 'logs') },
        planned_steps: 10, warnings: [], progress: null, loss_history: [] as object[], validation: [], logs: [] as string[],
        outputs: { lora: null as string | null, lora_name: id, work_dir: dir, log_dir: join(dir, 'logs'), intermediate: [], states: [], last_state: null, samples: [] },
        result: null as object | null, error: null,
      };
    };

    // While no front is up, a worker finishes one training and fails another; BullMQ keeps both ends.
    await queue.add('train_lora', envelope(ids.finished), { jobId: bullJobId(ids.finished) });
    await queue.add('train_lora', envelope(ids.failed), { jobId: bullJobId(ids.failed) });
    const lora = join(dataDir, 'models/Lora', `${ids.finished}.safetensors`);
    const workerRecord = { ...record(ids.finished, 'done'), ended_at: new Date().toISOString(), logs: [`LoRA ready: ${lora}`], loss_history: [{ step: 10, epoch: 1, loss: 0.1, lossAverage: 0.1, lrs: {}, gradNorm: null, time: 1 }] };
    workerRecord.outputs.lora = lora;
    workerRecord.result = { outputPath: lora, steps: 10, totalSteps: 10, logDir: workerRecord.outputs.log_dir, cancelled: false, seconds: 1 };
    const quick = new Worker(QUEUE_NAME, async (job) => {
      if ((job.data as JobEnvelope).id === ids.failed) throw new Error('the worker ran out of disk');
      return { ok: true, value: workerRecord, worker: 'w-quick', optionChanges: {}, saveOptions: false } satisfies JobAnswer;
    }, { connection: target.options, prefix: KEY_PREFIX, concurrency: 1 });
    const states = async () => Promise.all([ids.finished, ids.failed].map(async (id) => (await queue.getJob(bullJobId(id)))?.getState()));
    for (let i = 0; (await states()).join() !== 'completed,failed'; i++) {
      assert.ok(i < 500, `the quick worker did not end both jobs: ${(await states()).join()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await quick.close();
    // A worker takes the first job and holds it (its lock kept alive), as a training in progress would.
    await queue.add('train_lora', envelope(ids.running), { jobId: bullJobId(ids.running) });
    let started!: () => void;
    const active = new Promise<void>((r) => (started = r));
    worker = new Worker(QUEUE_NAME, async () => {
      started();
      await held;
    }, { connection: target.options, prefix: KEY_PREFIX, concurrency: 1 });
    await active;
    await queue.add('train_lora', envelope(ids.waiting), { jobId: bullJobId(ids.waiting) });
    assert.equal(await (await queue.getJob(bullJobId(ids.running)))!.getState(), 'active');
    assert.equal(await (await queue.getJob(bullJobId(ids.waiting)))!.getState(), 'waiting');

    // The earlier front's records: all were queued or running when it stopped.
    for (const [status, id] of [['running', ids.running], ['queued', ids.waiting], ['running', ids.gone], ['running', ids.finished], ['queued', ids.failed]] as const) {
      await mkdir(join(dataDir, 'training', id), { recursive: true });
      await writeFile(join(dataDir, 'training', id, 'job.json'), JSON.stringify(record(id, status)));
    }

    front = await RedisFrontQueue.connect({ target, log: () => {} });
    server = await startTestServer({ withModel: true, dataDir, queue: front });
    const listed = new Map(((await server.get('/sdapi/v1/train/jobs')).body as { id: string; status: string; actions: object; lora: string | null; error: string | null }[]).map((j) => [j.id, j]));
    assert.equal(listed.get(ids.running)?.status, 'running', JSON.stringify(listed.get(ids.running)));
    assert.equal(listed.get(ids.waiting)?.status, 'queued', JSON.stringify(listed.get(ids.waiting)));
    assert.equal(listed.get(ids.gone)?.status, 'interrupted', JSON.stringify(listed.get(ids.gone)));
    assert.deepEqual(listed.get(ids.running)?.actions, {}, 'no resume offered for a job that still runs');
    assert.ok('resume' in (listed.get(ids.gone)?.actions ?? {}));

    // Finished while no front was up: listed as the worker ended it, its result offered as usual, and the
    // record on disk says so too (Redis forgets the job after an hour).
    const done = listed.get(ids.finished);
    assert.equal(done?.status, 'done', JSON.stringify(done));
    assert.equal(done?.lora, lora);
    assert.deepEqual(done?.actions, {});
    const detail = (await server.get(`/sdapi/v1/train/jobs/${ids.finished}`)).body;
    assert.equal(detail.status, 'done');
    assert.equal(detail.result?.outputPath, lora);
    assert.deepEqual(detail.loss_history.map((p: { step: number }) => p.step), [10]);
    const failed = listed.get(ids.failed);
    assert.equal(failed?.status, 'failed', JSON.stringify(failed));
    assert.match(String(failed?.error), /ran out of disk/);
    await trainingRegistry(server.server.ctx).flushed();
    for (const [id, status] of [[ids.finished, 'done'], [ids.failed, 'failed']] as const) {
      const onDisk = JSON.parse(await readFile(join(dataDir, 'training', id, 'job.json'), 'utf8')) as { status: string; ended_at: string | null };
      assert.equal(onDisk.status, status);
      assert.ok(onDisk.ended_at, `${id}: job.json records the end`);
    }
  } finally {
    release();
    await server?.close();
    await front?.close().catch(() => {});
    await worker?.close();
    await queue.close();
    await redis.stop();
  }
});
