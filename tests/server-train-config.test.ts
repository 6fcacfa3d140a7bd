/**
 * Training configs over the API on a real server: bad configs answer 422 with the key path of each problem,
 * every path is confined to its folder (checked before the config loader probes anything), server defaults
 * (checkpoint by name, tokenizer, per-job output folder), the dry run, and --api-auth on every training route.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile, copyFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BUNDLED_CLIP_TOKENIZER } from '../engine/text/tokenizer.ts';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { writePatternDataset } from './support/train-fixture.ts';
import { patternFiles, recordEvents, upload } from './server-train-support.ts';

let t: TestServer;

const base = { train_data_dir: 'datasets/disks', resolution: 64, enable_bucket: false, batch_size: 2, epochs: 3, lora_rank: 4, train_text_encoder: false };

before(async () => {
  t = await startTestServer({ withModel: true, loadOnStart: false });
  await writePatternDataset(join(t.dataDir, 'datasets', 'disks'), 4);
});
after(() => t.close());

const dryRun = (body: unknown) => t.post('/sdapi/v1/train/dry-run', body);

test('bad configs answer 422 with one issue per problem, located by key path', async () => {
  const r = await t.post('/sdapi/v1/train/jobs', { ...base, lora_rank: 0, lora_rnk: 4, optimizer: 'adam', sample_prompts: [{ prompt: 'x', stepz: 3 }] });
  assert.equal(r.status, 422, JSON.stringify(r.body));
  const byLoc = new Map(r.body.detail.map((i: any) => [i.loc.join('.'), i]));
  assert.deepEqual([...byLoc.keys()].sort(), ['body.lora_rank', 'body.lora_rnk', 'body.optimizer', 'body.sample_prompts.0.stepz']);
  assert.equal((byLoc.get('body.lora_rank') as any).msg, 'lora_rank: expected an integer ≥ 1, got 0');
  assert.match((byLoc.get('body.lora_rnk') as any).msg, /unknown key 'lora_rnk' \(did you mean 'lora_rank'\?\)/);
  assert.equal((byLoc.get('body.lora_rnk') as any).type, 'value_error.extra');
  assert.match((byLoc.get('body.optimizer') as any).msg, /did you mean 'adamw'/);
  assert.ok(r.body.detail.every((i: any) => !/^line \d/.test(i.msg)), 'JSON bodies have no YAML line numbers');
  assert.deepEqual((await t.get('/sdapi/v1/train/jobs')).body, [], 'nothing was queued');

  // YAML bodies keep the line of each problem; YAML syntax errors are reported as such.
  const y = await dryRun({ yaml: 'train_data_dir: datasets/disks\nlora_rank: 0\nresolution: 64\n' });
  assert.equal(y.status, 422);
  assert.deepEqual(y.body.detail.map((i: any) => [i.loc, i.msg]), [[['body', 'lora_rank'], 'line 2: lora_rank: expected an integer ≥ 1, got 0']]);
  const syntax = await dryRun({ yaml: 'lora_rank: 4\nlora_rank: 8\n' });
  assert.equal(syntax.status, 422);
  assert.match(syntax.body.detail[0].msg, /line 2: this key appears twice/);
  assert.equal((await dryRun({ yaml: '- a list' })).status, 422);
  assert.equal((await dryRun({ yaml: 'x: 1', lora_rank: 3 })).status, 422);
  assert.equal((await dryRun({ yaml: 7 })).body.detail[0].loc.join('.'), 'body.yaml');
  // A combination rule names its key too.
  const combo = await dryRun({ ...base, enable_bucket: true, min_bucket_reso: 512, max_bucket_reso: 256 });
  assert.deepEqual(combo.body.detail[0].loc, ['body', 'min_bucket_reso']);
});

test('paths stay in their folders: refused before anything is probed, without naming what is there', async () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ train_data_dir: '/etc' }, 'train_data_dir'],
    [{ train_data_dir: '..' }, 'train_data_dir'],
    [{ train_data_dir: 'datasets/../models' }, 'train_data_dir'],
    [{ train_data_dir: '~/photos' }, 'train_data_dir'],
    [{ metadata_path: '/etc/passwd' }, 'metadata_path'],
    [{ base_model: '/etc/passwd' }, 'base_model'],
    [{ base_model: 'datasets/disks/img00.png' }, 'base_model'],
    [{ tokenizer: '/usr/share' }, 'tokenizer'],
    [{ output_dir: '/tmp/somewhere' }, 'output_dir'],
    [{ output_dir: 'models/Stable-diffusion' }, 'output_dir'],
    [{ logging_dir: '../logs' }, 'logging_dir'],
    [{ latent_cache_dir: 'models' }, 'latent_cache_dir'],
    [{ resume_from: 'models/Lora' }, 'resume_from'],
    [{ init_lora: '/etc/hosts.safetensors' }, 'init_lora'],
    [{ sample_prompts: '/etc/passwd' }, 'sample_prompts'],
  ];
  for (const [extra, key] of cases) {
    const r = await dryRun({ ...base, ...extra });
    assert.equal(r.status, 422, `${JSON.stringify(extra)}: ${JSON.stringify(r.body)}`);
    const i = r.body.detail[0];
    assert.deepEqual(i.loc, ['body', key], JSON.stringify(extra));
    assert.ok(i.type === 'value_error.path' || /not accepted over the API/.test(i.msg), i.msg);
    assert.doesNotMatch(i.msg, /did you mean|passwd'|shadow|hosts'/, 'no listing of the folder');
  }
  const unknownCkpt = await dryRun({ ...base, base_model: 'nope' });
  assert.deepEqual(unknownCkpt.body.detail[0].loc, ['body', 'base_model']);
  assert.match(unknownCkpt.body.detail[0].msg, /no checkpoint named 'nope' \(known: sd-tiny\.safetensors\)/);

  // A caption table the operator placed may still name images outside; the job is refused.
  const sneaky = join(t.dataDir, 'datasets', 'sneaky');
  await writePatternDataset(sneaky, 2);
  await copyFile(join(sneaky, 'img00.png'), join(t.dataDir, 'secret.png'));
  await writeFile(join(sneaky, 'metadata.csv'), 'file_name,caption\nimg00.png,a\nimg01.png,b\n../../secret.png,c\n');
  const s = await dryRun({ ...base, train_data_dir: 'datasets/sneaky' });
  assert.equal(s.status, 422);
  assert.deepEqual(s.body.detail[0].loc, ['body', 'metadata_path']);
  assert.match(s.body.detail[0].msg, /names images outside the dataset folders/);

  // Dataset problems are located at train_data_dir.
  await mkdir(join(t.dataDir, 'datasets', 'uncaptioned'), { recursive: true });
  await copyFile(join(sneaky, 'img00.png'), join(t.dataDir, 'datasets', 'uncaptioned', 'a.png'));
  const u = await dryRun({ ...base, train_data_dir: 'datasets/uncaptioned' });
  assert.equal(u.status, 422);
  assert.deepEqual(u.body.detail[0].loc, ['body', 'train_data_dir']);
  assert.match(u.body.detail[0].msg, /1 of 1 images have no caption/);
});

test('dry run with no tokenizer folder anywhere: the bundled CLIP vocabulary, though outside the data folder', async () => {
  const link = join(t.dataDir, 'models/tokenizer');
  await rename(link, `${link}.away`);
  try {
    const r = await dryRun({ ...base, base_model: 'sd-tiny' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.config.tokenizer, BUNDLED_CLIP_TOKENIZER);
    // Any other path outside the data folder is still refused.
    const other = await dryRun({ ...base, base_model: 'sd-tiny', tokenizer: dirname(BUNDLED_CLIP_TOKENIZER) });
    assert.equal(other.status, 422);
  } finally {
    await rename(`${link}.away`, link);
  }
});

test('dry run: server defaults filled in, dataset planned like `train --dry-run`, nothing queued', async () => {
  const r = await dryRun({ ...base, base_model: 'sd-tiny' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const c = r.body.config;
  assert.equal(c.base_model, join(t.dataDir, 'models/Stable-diffusion/sd-tiny.safetensors'));
  assert.equal(c.tokenizer, join(t.dataDir, 'models/tokenizer'));
  assert.equal(c.train_data_dir, join(t.dataDir, 'datasets/disks'));
  assert.equal(c.metadata_path, join(t.dataDir, 'datasets/disks/metadata.csv'));
  assert.equal(c.output_name, 'disks', 'named after the dataset folder');
  assert.equal(c.latent_cache_dir, join(t.dataDir, 'training/latent_cache'));
  assert.deepEqual(r.body.plan, { batches_per_epoch: 2, steps_per_epoch: 2, total_steps: 6 });
  assert.equal(r.body.dataset.items.length, 4);
  assert.deepEqual(r.body.dataset.buckets, ['64x64']);
  assert.equal(r.body.dataset.coverage.captioned, 4);
  assert.match(r.body.report, /caption coverage: 4\/4 \(100\.0%\)/);
  assert.match(r.body.report, /dry run: config and dataset are valid; nothing was trained/);
  assert.match(r.body.config_yaml, /^train_data_dir: /);
  // As YAML, with the base model given by the checkpoint's title.
  const title = (await t.get('/sdapi/v1/sd-models')).body[0].title;
  const y = await dryRun({ yaml: `train_data_dir: datasets/disks\nbase_model: "${title}"\nresolution: 64\nenable_bucket: false\n` });
  assert.equal(y.status, 200, JSON.stringify(y.body));
  assert.equal(y.body.config.base_model, c.base_model);
  assert.deepEqual((await t.get('/sdapi/v1/train/jobs')).body, []);
  assert.equal(t.server.ctx.queue.pendingIds().length, 0);
  const routes = Object.keys((await t.get('/openapi.json')).body.paths);
  for (const p of ['/sdapi/v1/train/jobs', '/sdapi/v1/train/jobs/:id', '/sdapi/v1/train/jobs/:id/cancel', '/sdapi/v1/train/dry-run', '/sdapi/v1/train/datasets', '/sdapi/v1/train/datasets/:name'])
    assert.ok(routes.includes(p), p);
  assert.equal((await t.get('/sdapi/v1/train/jobs/train-000000000000')).status, 404);
});

test('--api-auth protects every training route, uploads and socket.io included', async () => {
  const a = await startTestServer({ withModel: true, loadOnStart: false, apiAuth: 'alice:pw' });
  try {
    const ok = { authorization: 'Basic ' + Buffer.from('alice:pw').toString('base64') };
    const bad = { authorization: 'Basic ' + Buffer.from('alice:nope').toString('base64') };
    const calls: [string, string, unknown?][] = [
      ['GET', '/sdapi/v1/train/jobs'],
      ['POST', '/sdapi/v1/train/jobs', base],
      ['GET', '/sdapi/v1/train/jobs/train-000000000000'],
      ['POST', '/sdapi/v1/train/jobs/train-000000000000/cancel', {}],
      ['POST', '/sdapi/v1/train/dry-run', base],
      ['GET', '/sdapi/v1/train/datasets'],
      ['DELETE', '/sdapi/v1/train/datasets/disks'],
    ];
    for (const [method, path, body] of calls) {
      for (const h of [{}, bad]) {
        const r = await fetch(a.server.url + path, { method, headers: { 'content-type': 'application/json', ...h }, body: body === undefined ? undefined : JSON.stringify(body) });
        assert.equal(r.status, 401, `${method} ${path}`);
      }
    }
    const files = await patternFiles(2);
    assert.equal((await upload(a, 'disks', files)).status, 401);
    assert.equal((await upload(a, 'disks', files, { headers: bad })).status, 401);
    await assert.rejects(recordEvents(a.server.url), /Not authenticated/);
    const up = await upload(a, 'disks', files, { headers: ok });
    assert.equal(up.status, 201, JSON.stringify(up.body));
    assert.equal((await a.get('/sdapi/v1/train/datasets', ok)).body[0].images, 2);
    assert.equal((await a.post('/sdapi/v1/train/dry-run', base, ok)).status, 200);
    const del = await fetch(a.server.url + '/sdapi/v1/train/datasets/disks', { method: 'DELETE', headers: ok });
    assert.equal(del.status, 200);
  } finally {
    await a.close();
  }
});
