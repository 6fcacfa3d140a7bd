/**
 * kill -9 of a real `lora-scripts serve` process (engine backend, sd-tiny fixture) in the middle of a
 * generation and of a training: the data dir stays consistent (no torn files, temporary files swept at the
 * next start), the interrupted training is listed as `interrupted` with its newest complete state and
 * resumes to the end, and the restarted server answers the next request.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { linkFixtureModels, startTestServer } from './server-fixture-backend.ts';
import { patternFiles, upload } from './server-train-support.ts';
import { repoRoot } from './support/paths.ts';

interface Child {
  proc: ChildProcess;
  url: string;
  logs: string[];
}

/** `lora-scripts serve` on a free port, resolved once it prints its address. */
async function serve(dataDir: string): Promise<Child> {
  const proc = spawn(process.execPath, [join(repoRoot, 'bin/lora-scripts.js'), 'serve', '--data-dir', dataDir, '--port', '0'], {
    cwd: dataDir,
    env: { ...process.env, LORA_SCRIPTS_TRAIN_THREADS: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${logs.join('')}`)), 60_000);
    const onData = (d: Buffer) => {
      logs.push(d.toString());
      const m = /API on (http:\/\/[^\s]+)/.exec(logs.join(''));
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}:\n${logs.join('')}`)));
  });
  return { proc, url, logs };
}

async function kill9(c: Child): Promise<void> {
  const gone = new Promise((r) => c.proc.once('exit', r));
  c.proc.kill('SIGKILL');
  await gone;
}

const children: Child[] = [];
const dirs: string[] = [];
after(async () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) await kill9(c);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function json(url: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const r = await fetch(url, { ...init, headers: { 'content-type': 'application/json', ...(init.headers ?? {}) } });
  const text = await r.text();
  try {
    return { status: r.status, body: JSON.parse(text) };
  } catch {
    return { status: r.status, body: text };
  }
}

async function until<T>(what: string, f: () => Promise<T | null | undefined | false>, ms = 120_000): Promise<T> {
  const end = Date.now() + ms;
  let failed: unknown = null;
  for (;;) {
    // A poll that cannot connect (a kept-alive socket the busy child closed meanwhile) counts as "not yet".
    const v = await f().catch((e: unknown) => ((failed = e), null));
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${failed ? ` (last poll: ${(failed as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else out.push(p);
  }
  return out;
}

test('kill -9 during a generation: saved images are whole, temporary files are swept, the restarted server generates', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'lora-scripts-crash-gen-'));
  dirs.push(dataDir);
  await linkFixtureModels(dataDir);
  const a = await serve(dataDir);
  children.push(a);
  const req = { prompt: 'a fox', steps: 3, width: 64, height: 64, seed: 5, save_images: true };
  assert.equal((await json(`${a.url}/sdapi/v1/txt2img`, { method: 'POST', body: JSON.stringify(req) })).status, 200);
  // A long one, killed while it samples.
  void fetch(`${a.url}/sdapi/v1/txt2img`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...req, steps: 200, n_iter: 3 }) }).catch(() => {});
  await until('sampling', async () => (await json(`${a.url}/sdapi/v1/progress?skip_current_image=true`)).body.state?.sampling_step >= 2);
  // What a writer killed in the middle of an image leaves behind.
  const first = (await walk(join(dataDir, 'outputs'))).find((f) => f.endsWith('.png'))!;
  const torn = join(dirname(first), `.00001-5.png.tmp-${a.proc.pid}-0badc0de`);
  await writeFile(torn, Buffer.alloc(100));
  await kill9(a);

  const logs: string[] = [];
  const b = await startTestServer({ dataDir, log: (m) => logs.push(m) });
  try {
    assert.ok(logs.some((l) => /removed 1 temporary file/.test(l)), logs.join('\n'));
    await assert.rejects(stat(torn), { code: 'ENOENT' });
    const r = await b.post('/sdapi/v1/txt2img', req);
    assert.equal(r.status, 200);
    for (const f of await walk(join(dataDir, 'outputs'))) {
      assert.doesNotMatch(f, /\.tmp-/);
      const meta = await sharp(await readFile(f)).metadata();
      assert.deepEqual([meta.width, meta.height], [64, 64], f);
    }
  } finally {
    await b.close();
  }
});

test('kill -9 during a training: listed as interrupted with its newest state, resumed to the end', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'lora-scripts-crash-train-'));
  dirs.push(dataDir);
  await linkFixtureModels(dataDir);
  const a = await serve(dataDir);
  children.push(a);
  const host = { server: { url: a.url } } as Parameters<typeof upload>[0];
  assert.equal((await upload(host, 'disks', await patternFiles(4))).status, 201);
  const config = {
    train_data_dir: 'datasets/disks',
    lora_rank: 4,
    lora_alpha: 4,
    target_modules: 'attention_mlp',
    train_text_encoder: false,
    resolution: 64,
    enable_bucket: false,
    batch_size: 1,
    epochs: 3,
    learning_rate: 1e-3,
    save_every_n_epochs: 0,
    save_steps: 1,
    seed: 7,
    output_name: 'crashed',
  };
  const q = await json(`${a.url}/sdapi/v1/train/jobs`, { method: 'POST', body: JSON.stringify(config) });
  assert.equal(q.status, 202, JSON.stringify(q.body));
  const id = q.body.id as string;
  // The record is on disk while the job waits or runs, not only once it ends.
  const record = join(q.body.work_dir, 'job.json');
  await until('job.json', () => stat(record).then(() => true, () => false), 10_000);
  await until('two saved states', async () => (await json(`${a.url}/sdapi/v1/train/jobs/${id}`)).body.outputs?.states?.length >= 2).catch((e: Error) => {
    throw new Error(`${e.message}; server exit ${a.proc.exitCode ?? a.proc.signalCode ?? 'none'}, log:\n${a.logs.join('').slice(-3000)}`);
  });
  await kill9(a);
  const onDisk = JSON.parse(await readFile(record, 'utf8'));
  assert.equal(onDisk.status, 'running');
  assert.ok(onDisk.outputs.last_state, 'the record was written at a state save');

  const b = await startTestServer({ dataDir, loadOnStart: false });
  try {
    const listed = ((await b.get('/sdapi/v1/train/jobs')).body as any[]).find((j) => j.id === id);
    assert.equal(listed.status, 'interrupted');
    assert.match(listed.error, /server stopped while this job was running/);
    assert.deepEqual(listed.actions, { resume: `/sdapi/v1/train/jobs/${id}/resume` });
    const states = (await readdir(q.body.work_dir)).filter((f) => /^state-\d{8}$/.test(f)).sort();
    assert.equal(listed.last_state, join(q.body.work_dir, states.at(-1)!), 'the newest complete state');
    const savedStep = Number(states.at(-1)!.slice(6));
    assert.equal((await b.post(`/sdapi/v1/train/jobs/${id}/cancel`)).status, 409);

    const r = await b.post(`/sdapi/v1/train/jobs/${id}/resume`);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.equal(r.body.resumes, id);
    const done = await until('resumed run', async () => {
      const j = (await b.get(`/sdapi/v1/train/jobs/${r.body.id}`)).body;
      return j.status === 'done' || j.status === 'failed' ? j : null;
    });
    assert.equal(done.status, 'done', done.error);
    assert.equal(done.result.steps, 12);
    assert.equal(done.loss_history[0].step, savedStep + 1, 'it continues after the saved step');
    assert.ok((await stat(join(dataDir, 'models/Lora/crashed.safetensors'))).size > 0);
    assert.equal((await b.post(`/sdapi/v1/train/jobs/${id}/resume`)).status, 409, 'resuming again would overwrite the finished LoRA unless asked to');
  } finally {
    await b.close();
  }
});
