/**
 * The infotext entries A1111 1.10 writes besides the basics, each checked present and absent on real
 * generations of the sd-tiny fixture through the generation service: `VAE hash` / `VAE` for a separate VAE,
 * `ENSD` only where A1111's is_sampler_using_eta_noise_seed_delta says so, `TI hashes` for embeddings the
 * prompt used; and A1111's cache.json (engine/util/hash-cache.ts) on real files.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { writeShiftedVae } from './support/separate-vae.ts';
import { SdGenerator } from '../engine/generate/generator.ts';
import { GenerationService, type ImageRequest } from '../engine/generate/service.ts';
import { modelIdentity, modelInfotextFields, vaeIdentity } from '../engine/generate/identity.ts';
import { parseInfotext } from '../engine/image/png-info.ts';
import { writeSafetensors } from '../engine/safetensors/index.ts';
import { EmbeddingLibrary } from '../engine/sd/embeddings.ts';
import { HashCache, hashKey } from '../engine/util/hash-cache.ts';

const sd = join(fixturesDir, 'sd-tiny');
const ckpt = join(sd, 'sd-tiny.safetensors');
const tokenizer = join(sd, 'diffusers/tokenizer');
const manifest = JSON.parse(await readFile(join(sd, 'manifest.json'), 'utf8')) as { config: { steps: number; cfg_scale: number } };

let tmp: string;
let gen: SdGenerator;
let service: GenerationService;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'infotext-'));
  gen = await SdGenerator.load(ckpt, { tokenizer, threads: 1 });
  service = new GenerationService(gen, await modelIdentity(ckpt), null);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const sha256 = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');

function request(over: Partial<ImageRequest> = {}): ImageRequest {
  return { prompt: 'a red cube', negativePrompt: 'blurry', seeds: [77], width: 64, height: 64, steps: Math.min(4, manifest.config.steps), cfgScale: manifest.config.cfg_scale, sampler: 'Euler a', ...over };
}

async function render(s: GenerationService, over: Partial<ImageRequest> = {}) {
  const out = await s.render(request(over));
  const im = out.images[0];
  assert.ok(im, 'one image');
  return { rgb: Buffer.from(im.rgb), text: im.infotext, info: parseInfotext(im.infotext) };
}

test('ENSD is written only for samplers A1111 marks uses_ensd with eta ≠ 0, and it changes their later noise', async () => {
  const ensd = 31337;
  const plain = await render(service);
  assert.equal(plain.info['ENSD'], undefined, 'eta_noise_seed_delta 0: no ENSD');
  const ancestral = await render(service, { etaNoiseSeedDelta: ensd });
  assert.equal(String(ancestral.info['ENSD']), String(ensd), 'Euler a draws noise after the first: ENSD written');
  assert.match(ancestral.text, new RegExp(`Model: sd-tiny, ENSD: ${ensd}, Version: `), "ENSD in A1111's place (after Clip skip, before RNG)");
  assert.ok(!ancestral.rgb.equals(plain.rgb), 'the delta reseeds the ancestral noise');
  const etaZero = await render(service, { etaNoiseSeedDelta: ensd, eta: 0 });
  assert.equal(etaZero.info['ENSD'], undefined, 'eta 0: the ancestral sampler draws no noise, no ENSD');
  for (const sampler of ['Euler', 'DPM++ 2M']) {
    const r = await render(service, { sampler, etaNoiseSeedDelta: ensd });
    assert.equal(r.info['ENSD'], undefined, `${sampler} draws no later noise: no ENSD`);
  }
  // A1111 does not mark DDIM or the SDE samplers uses_ensd, so their infotexts carry none even with eta > 0.
  const ddim = await render(service, { sampler: 'DDIM', eta: 0.5, etaNoiseSeedDelta: ensd });
  assert.equal(ddim.info['ENSD'], undefined, 'DDIM: no ENSD, as A1111');
});

test('a separate VAE puts VAE hash (sha256, 10 hex) and VAE (file name) after Model; none without one; the options leave them out', async () => {
  const path = join(tmp, 'shifted.vae.safetensors');
  await writeShiftedVae(ckpt, path);
  const withVae = await SdGenerator.load(ckpt, { tokenizer, threads: 1, vae: path });
  const vae = await vaeIdentity(path);
  const s = new GenerationService(withVae, await modelIdentity(ckpt), null, { vae });
  const r = await render(s, { sampler: 'Euler' });
  const hash = (await sha256(path)).slice(0, 10);
  assert.equal(r.info['VAE hash'], hash);
  assert.equal(r.info['VAE'], 'shifted.vae.safetensors');
  assert.match(r.text, new RegExp(`Model hash: [0-9a-f]{10}, Model: sd-tiny, VAE hash: ${hash}, VAE: shifted.vae.safetensors, Version: `));
  const own = await render(service, { sampler: 'Euler' });
  assert.equal(own.info['VAE hash'], undefined);
  assert.equal(own.info['VAE'], undefined);
  assert.ok(!r.rgb.equals(own.rgb), 'the separate VAE decoded the image');
  const model = await modelIdentity(ckpt);
  assert.deepEqual(modelInfotextFields(model, vae, { add_vae_hash_to_info: false, add_vae_name_to_info: false }), { modelHash: model.shortHash, model: 'sd-tiny', vaeHash: null, vae: null });
  assert.deepEqual(modelInfotextFields(model, vae, { add_model_hash_to_info: false }), { modelHash: null, model: 'sd-tiny', vaeHash: hash, vae: 'shifted.vae.safetensors' });
});

test('an embedding the prompt names adds TI hashes (its sha256, 10 hex) and changes the image; unnamed, nothing', async () => {
  const folder = join(tmp, 'embeddings');
  const width = gen.model.arch.textEncoder.width;
  const vectors = Float32Array.from({ length: 2 * width }, (_, i) => Math.sin(i * 0.37));
  await writeSafetensors(join(folder, 'shinystyle.safetensors'), { emb_params: { dtype: 'F32', shape: [2, width], data: vectors } });
  const embeddings = new EmbeddingLibrary(folder);
  assert.equal((await embeddings.refresh()).size, 0);
  const g = await SdGenerator.load(ckpt, { tokenizer, threads: 1 });
  const s = new GenerationService(g, await modelIdentity(ckpt), null, { embeddings });
  const used = await render(s, { prompt: 'a red cube, shinystyle', sampler: 'Euler' });
  assert.equal(used.info['TI hashes'], `shinystyle: ${(await sha256(join(folder, 'shinystyle.safetensors'))).slice(0, 10)}`);
  const unused = await render(s, { prompt: 'a red cube', sampler: 'Euler' });
  assert.equal(unused.info['TI hashes'], undefined);
  assert.ok(!used.rgb.equals(unused.rgb), 'the embedding conditions the image');
});

test("cache.json: a hash is computed once, read back by another process's cache, recomputed when the file changes; entries merge", async () => {
  const file = join(tmp, 'model.bin');
  await writeFile(file, 'first contents');
  const cachePath = join(tmp, 'cache.json');
  let computed = 0;
  const count = (f: string) => async () => {
    computed++;
    return sha256(f);
  };
  const a = new HashCache(cachePath);
  assert.equal(await a.get(hashKey.checkpoint('model.bin'), file, count(file)), await sha256(file));
  assert.equal(await a.get(hashKey.checkpoint('model.bin'), file, count(file)), await sha256(file));
  assert.equal(computed, 1, 'the second ask is a cache hit');
  const onDisk = JSON.parse(await readFile(cachePath, 'utf8'));
  const st = await stat(file);
  assert.deepEqual(onDisk.hashes['checkpoint/model.bin'], { mtime: st.mtimeMs / 1000, size: st.size, sha256: await sha256(file) }, "A1111's entry (mtime in seconds) plus the size");

  const b = new HashCache(cachePath);
  assert.equal(await b.get(hashKey.checkpoint('model.bin'), file, count(file)), await sha256(file));
  assert.equal(computed, 1, 'a fresh cache over the same file reads the hash instead of computing it');

  // Same size, new contents and mtime: the entry no longer matches and the file is hashed again.
  await writeFile(file, 'other contents');
  const later = new Date(Date.now() + 5000);
  await utimes(file, later, later);
  assert.equal(await b.peek(hashKey.checkpoint('model.bin'), file), null);
  assert.equal(await b.get(hashKey.checkpoint('model.bin'), file, count(file)), await sha256(file));
  assert.equal(computed, 2);

  // Two caches over one file (a CLI run beside a server) keep each other's entries.
  const other = join(tmp, 'other.bin');
  await writeFile(other, 'x');
  await a.get(hashKey.vae('other.bin'), other, count(other));
  const merged = JSON.parse(await readFile(cachePath, 'utf8')).hashes;
  assert.deepEqual(Object.keys(merged).sort(), ['checkpoint/model.bin', 'vae/other.bin']);
  assert.equal(merged['checkpoint/model.bin'].sha256, await sha256(file), "b's newer entry survives a's write");

  // An entry A1111 wrote (mtime in seconds, no size) holds while the file is not newer, A1111's own rule.
  const a1111 = { hashes: { 'checkpoint/model.bin': { mtime: Date.now() / 1000 + 60, sha256: 'a'.repeat(64) } } };
  await writeFile(cachePath, JSON.stringify(a1111));
  assert.equal(await new HashCache(cachePath).peek(hashKey.checkpoint('model.bin'), file), 'a'.repeat(64));
  a1111.hashes['checkpoint/model.bin'].mtime = Date.now() / 1000 - 3600;
  await writeFile(cachePath, JSON.stringify(a1111));
  assert.equal(await new HashCache(cachePath).peek(hashKey.checkpoint('model.bin'), file), null, 'a file newer than the entry is hashed again');

  await writeFile(cachePath, '{ damaged');
  assert.equal(await new HashCache(cachePath).get(hashKey.vae('other.bin'), other, count(other)), await sha256(other), 'a damaged cache costs a rehash, not an error');
});
