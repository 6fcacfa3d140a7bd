/**
 * Textual-inversion embeddings over the A1111 API on a real server with the engine backend and the sd-tiny
 * checkpoint: /sdapi/v1/embeddings lists loaded and skipped ones in A1111's shape, refresh-embeddings picks up
 * new files, and a txt2img naming an embedding built from the rows of "red cat" gives the same image as the
 * words, with `TI hashes` (the file's sha256, 10 digits) in the infotext; negative prompts too.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors } from '../engine/safetensors/index.ts';
import { loadClipTokenizer } from '../engine/text/tokenizer.ts';
import sharp from 'sharp';
import { startTestServer, sdTiny, type TestServer } from './server-fixture-backend.ts';

let t: TestServer;
let width = 0;
const base = { steps: 3, width: 64, height: 64, sampler_name: 'Euler', cfg_scale: 7, seed: 11 };

/** The checkpoint's own token-embedding rows for `text`: an embedding that means exactly these words. */
async function rowsOf(text: string): Promise<{ data: Float32Array; vectors: number }> {
  const tok = await loadClipTokenizer(join(sdTiny, 'diffusers/tokenizer'));
  const f = await SafetensorsFile.open(join(sdTiny, 'sd-tiny.safetensors'));
  try {
    const key = f.names().find((n) => n.endsWith('embeddings.token_embedding.weight'))!;
    width = f.info(key).shape[1]!;
    const table = await f.readFloat32(key);
    const ids = tok.encode(text);
    const data = new Float32Array(ids.length * width);
    ids.forEach((id, i) => data.set(table.subarray(id * width, (id + 1) * width), i * width));
    return { data, vectors: ids.length };
  } finally {
    await f.close();
  }
}

before(async () => {
  t = await startTestServer({ withModel: true });
  await t.post('/sdapi/v1/reload-checkpoint');
});
after(() => t.close());

test('embeddings: listed as A1111 does, refreshed, used by name in prompts with TI hashes in the infotext', async () => {
  assert.deepEqual((await t.get('/sdapi/v1/embeddings')).body, { loaded: {}, skipped: {} });
  const dir = join(t.dataDir, 'models/embeddings');
  await mkdir(join(dir, 'sub'), { recursive: true });
  const red = await rowsOf('red cat');
  await writeSafetensors(join(dir, 'sub', 'redcat-ti.safetensors'), { emb_params: { dtype: 'F32', shape: [red.vectors, width], data: red.data } });
  await writeSafetensors(join(dir, 'xl-only.safetensors'), {
    clip_l: { dtype: 'F32', shape: [1, 768], data: new Float32Array(768) },
    clip_g: { dtype: 'F32', shape: [1, 1280], data: new Float32Array(1280) },
  });
  assert.equal((await t.post('/sdapi/v1/refresh-embeddings')).status, 200);
  const list = (await t.get('/sdapi/v1/embeddings')).body;
  assert.deepEqual(list, {
    loaded: { 'redcat-ti': { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: width, vectors: red.vectors } },
    skipped: { 'xl-only': { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: 2048, vectors: 1 } },
  });

  const hash = createHash('sha256').update(await readFile(join(dir, 'sub', 'redcat-ti.safetensors'))).digest('hex').slice(0, 10);
  for (const [field, other] of [['prompt', 'negative_prompt'], ['negative_prompt', 'prompt']] as const) {
    const withTi = await t.post('/sdapi/v1/txt2img', { ...base, [field]: 'a redcat-ti on grass', [other]: 'blurry' });
    const words = await t.post('/sdapi/v1/txt2img', { ...base, [field]: 'a red cat on grass', [other]: 'blurry' });
    assert.equal(withTi.status, 200, JSON.stringify(withTi.body));
    const [a, b] = await Promise.all([withTi, words].map((r) => sharp(Buffer.from(r.body.images[0], 'base64')).raw().toBuffer()));
    assert.ok(a!.equals(b!), `${field}: the embedding means exactly "red cat" (same pixels)`);
    const info = JSON.parse(withTi.body.info).infotexts[0] as string;
    assert.match(info, new RegExp(`TI hashes: "redcat-ti: ${hash}"`));
    const parsed = (await t.post('/sdapi/v1/png-info', { image: withTi.body.images[0] })).body.parameters;
    assert.equal(parsed['TI hashes'], `redcat-ti: ${hash}`);
    assert.doesNotMatch(JSON.parse(words.body.info).infotexts[0], /TI hashes/);
  }
  // The option turns the hashes off, as in A1111.
  const off = await t.post('/sdapi/v1/txt2img', { ...base, prompt: 'redcat-ti', override_settings: { textual_inversion_add_hashes_to_infotext: false } });
  assert.doesNotMatch(JSON.parse(off.body.info).infotexts[0], /TI hashes/);
});
