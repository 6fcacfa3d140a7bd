/**
 * A front (`serve --queue`) that restarts reads the trainings of its earlier run from their job.json files;
 * those without an end are asked about in Redis before they are called `interrupted`: one a worker still
 * runs (BullMQ `active`) is listed as running, one still waiting as queued, and only one Redis no longer
 * holds as interrupted. Real redis-server, the front's own queue class, a BullMQ worker holding a job.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Queue, Worker } from 'bullmq';
import { startRedis } from './support/redis.ts';
import { startTestServer } from './server-fixture-backend.ts';
import { RedisFrontQueue } from '../server/distributed/front-queue.ts';
import { parseRedisUrl } from '../server/distributed/redis-url.ts';
import { KEY_PREFIX, QUEUE_NAME, bullJobId, type JobEnvelope } from '../server/distributed/protocol.ts';

test('a restarted front lists trainings that Redis still holds as running or queued, not interrupted', async () => {
  const redis = await startRedis();
  const target = parseRedisUrl(redis.url);
  const queue = new Queue(QUEUE_NAME, { connection: target.options, prefix: KEY_PREFIX });
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let worker: Worker | null = null;
  let front: RedisFrontQueue | null = null;
  let server: Awaited<ReturnType<typeof startTestServer>> | null = null;
  try {
    const ids = { running: 'train-still-running', waiting: 'train-still-waiting', gone: 'train-gone' };
    const envelope = (id: string): JobEnvelope => ({ id, kind: 'train_lora', owner: null, handler: 'train_lora', data: {}, options: {}, label: 'nobody-carries-this', prefer: null, queuedAt: Date.now() });
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

    // The earlier front's records: all three were queued or running when it stopped.
    const server0 = await startTestServer({ withModel: true });
    const dataDir = server0.dataDir;
    await server0.server.close();
    for (const [status, id] of [['running', ids.running], ['queued', ids.waiting], ['running', ids.gone]] as const) {
      const dir = join(dataDir, 'training', id);
      await mkdir(dir, { recursive: true });
      const record = {
        id, status, created_at: new Date().toISOString(), started_at: status === 'running' ? new Date().toISOString() : null, ended_at: null,
        config: { output_name: id, train_data_dir: join(dataDir, 'datasets', 'x'), output_dir: dir, logging_dir: join(dir, 'logs') },
        planned_steps: 10, warnings: [], progress: null, loss_history: [], validation: [], logs: [],
        outputs: { lora: null, lora_name: id, work_dir: dir, log_dir: join(dir, 'logs'), intermediate: [], states: [], last_state: null, samples: [] },
        result: null, error: null,
      };
      await writeFile(join(dir, 'job.json'), JSON.stringify(record));
    }

    front = await RedisFrontQueue.connect({ target, log: () => {} });
    server = await startTestServer({ withModel: true, dataDir, queue: front });
    const listed = new Map(((await server.get('/sdapi/v1/train/jobs')).body as { id: string; status: string; actions: object }[]).map((j) => [j.id, j]));
    assert.equal(listed.get(ids.running)?.status, 'running', JSON.stringify(listed.get(ids.running)));
    assert.equal(listed.get(ids.waiting)?.status, 'queued', JSON.stringify(listed.get(ids.waiting)));
    assert.equal(listed.get(ids.gone)?.status, 'interrupted', JSON.stringify(listed.get(ids.gone)));
    assert.deepEqual(listed.get(ids.running)?.actions, {}, 'no resume offered for a job that still runs');
    assert.ok('resume' in (listed.get(ids.gone)?.actions ?? {}));
  } finally {
    release();
    await server?.close();
    await front?.close().catch(() => {});
    await worker?.close();
    await queue.close();
    await redis.stop();
  }
});
