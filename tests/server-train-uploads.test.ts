/**
 * Dataset uploads on a real server: multipart (fetch + FormData) and zip (made with fflate), listing with
 * caption counts, replace and delete; unsafe names, zip-slip, symlinks and lying zips refused without writing
 * anything; per-file, total, count and unpacked-size limits answered with 413; images verified with sharp.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, stat, utimes } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { zipSync, strToU8 } from 'fflate';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { patternFiles, patternPng, upload, type UploadFile } from './server-train-support.ts';
import { trainingSettings } from '../server/train-settings.ts';
import { removeStaleStaging } from '../server/datasets.ts';

let t: TestServer;

before(async () => {
  t = await startTestServer({ loadOnStart: false });
});
after(() => t.close());

const datasets = () => join(t.dataDir, 'datasets');

/** Nothing but the named datasets is in the datasets folder: no staging leftovers, no escaped files. */
async function assertOnly(names: string[]): Promise<void> {
  assert.deepEqual((await readdir(datasets())).sort(), [...names].sort());
  for (const f of await readdir(t.dataDir)) assert.ok(!/evil|abs|outside/.test(f), `stray ${f} in the data folder`);
}

test('multipart images + metadata.csv: written, listed with counts, refused twice, replaced, deleted', async () => {
  const up = await upload(t, 'cats', await patternFiles(3));
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.deepEqual(up.body.uploaded, ['img00.png', 'img01.png', 'img02.png', 'metadata.csv']);
  assert.equal(up.body.images, 3);
  assert.equal(up.body.captioned, 3);
  assert.equal(up.body.caption_sources.metadata, 3);
  assert.equal(up.body.replaced, false);
  assert.deepEqual(await readFile(join(datasets(), 'cats', 'img01.png')), await patternPng(1));
  await assertOnly(['cats']);

  const again = await upload(t, 'cats', await patternFiles(1));
  assert.equal(again.status, 409);
  assert.match(again.body.detail, /already exists/);

  // Two images without captions among captioned ones: the listing counts them as training would.
  const files: UploadFile[] = [...(await patternFiles(2)), ['extra.png', await patternPng(5), 'image/png'], ['extra2.png', await patternPng(6)], ['extra2.txt', 'a sidecar caption']];
  const rep = await upload(t, 'cats', files, { query: 'replace=true' });
  assert.equal(rep.status, 201, JSON.stringify(rep.body));
  assert.equal(rep.body.replaced, true);
  const list = (await t.get('/sdapi/v1/train/datasets')).body;
  assert.equal(list.length, 1);
  assert.equal(list[0].name, 'cats');
  assert.equal(list[0].images, 4);
  assert.equal(list[0].captioned, 3);
  assert.deepEqual(list[0].caption_sources, { metadata: 2, sidecar: 1, folder: 0, none: 1 });
  assert.equal(list[0].metadata, join(datasets(), 'cats', 'metadata.csv'));
  await assert.rejects(stat(join(datasets(), 'cats', 'img02.png')), { code: 'ENOENT' }, 'replace drops the old files');
  await assertOnly(['cats']);

  const del = await fetch(`${t.server.url}/sdapi/v1/train/datasets/cats`, { method: 'DELETE' });
  assert.equal(del.status, 200);
  assert.deepEqual(await del.json(), { deleted: 'cats' });
  assert.deepEqual((await t.get('/sdapi/v1/train/datasets')).body, []);
  assert.equal((await fetch(`${t.server.url}/sdapi/v1/train/datasets/cats`, { method: 'DELETE' })).status, 404);
  await assertOnly([]);
});

test('a zip with a kohya repeat folder uploads; macOS litter and folder entries are skipped', async () => {
  const zip = zipSync({
    '10_disk/': new Uint8Array(0),
    '10_disk/a.png': await patternPng(1),
    '10_disk/b.png': await patternPng(2),
    '10_disk/b.txt': strToU8('a disk with a caption'),
    '__MACOSX/10_disk/._a.png': strToU8('resource fork'),
    '.DS_Store': strToU8('x'),
  });
  const up = await upload(t, 'zipped', [['photos.zip', zip, 'application/zip']]);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.deepEqual(up.body.uploaded, ['10_disk/a.png', '10_disk/b.png', '10_disk/b.txt']);
  assert.deepEqual(up.body.skipped.sort(), ['.DS_Store', '10_disk/', '__MACOSX/10_disk/._a.png']);
  assert.equal(up.body.images, 2);
  assert.deepEqual(up.body.caption_sources, { metadata: 0, sidecar: 1, folder: 1, none: 0 });
  assert.deepEqual(await readFile(join(datasets(), 'zipped', '10_disk', 'b.png')), await patternPng(2));
  await assertOnly(['zipped']);
});

test('unsafe names, zip-slip, symlinks and tables pointing outside are refused; nothing is written', async () => {
  const png = await patternPng(0);
  const multipart: [string, RegExp][] = [
    ['../evil.png', /path separators/],
    ['..\\evil.png', /path separators/],
    ['/abs.png', /path separators/],
    ['sub/x.png', /path separators/],
    ['.hidden.png', /hidden files/],
    ['..', /'\.\.'/],
    ['C:evil.png', /control character or one of/],
    ['evil.png.', /may not end/],
    ['run.sh', /not accepted/],
  ];
  for (const [name, why] of multipart) {
    const r = await upload(t, 'bad', [[name, png, 'image/png']]);
    assert.equal(r.status, 422, `${name}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.detail, why, name);
  }
  const zips: [Record<string, any>, RegExp][] = [
    [{ '../evil.png': png }, /'\.\.' path component/],
    [{ 'a/../../evil.png': png }, /'\.\.' path component/],
    [{ '/abs.png': png }, /absolute paths/],
    [{ 'C:/abs.png': png }, /absolute paths/],
    [{ 'a\\..\\evil.png': png }, /backslashes/],
    [{ '.git/config.png': png }, /hidden files/],
    [{ 'link.png': [strToU8('/etc/passwd'), { os: 3, attrs: 0o120777 * 65536 }] }, /symbolic link/],
    [{ 'a.png': png, 'A.png': png }, /appears twice/],
    [{ 'sub/metadata.csv': strToU8('file_name,caption\n') }, /at the top of the dataset/],
  ];
  for (const [entries, why] of zips) {
    const r = await upload(t, 'bad', [['x.zip', zipSync(entries), 'application/zip']]);
    assert.equal(r.status, 422, `${Object.keys(entries)}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.detail, why, Object.keys(entries).join());
  }
  const outside = await upload(t, 'bad', [['a.png', png], ['metadata.csv', 'file_name,caption\n../../outside.png,x\na.png,y\n']]);
  assert.equal(outside.status, 422);
  assert.match(outside.body.detail, /file_name '\.\.\/\.\.\/outside\.png' must name a file inside the dataset/);
  const missing = await upload(t, 'bad', [['a.png', png], ['metadata.csv', 'file_name,caption\nb.png,y\n']]);
  assert.equal(missing.status, 422);
  assert.match(missing.body.detail, /names b\.png, but .* does not exist/);
  assert.doesNotMatch(missing.body.detail, /\.upload-/, 'messages name the dataset, not the staging folder');
  const mixed = await upload(t, 'bad', [['a.png', png], ['x.zip', zipSync({ 'b.png': png })]]);
  assert.equal(mixed.status, 422);
  await assertOnly(['zipped']);

  for (const [name, status] of [['a..b', 422], ['.hidden', 422], ['x%2Fy', 422], ['x%5Cy', 422], ['ok-name_1.2', 201]] as const) {
    const r = await upload(t, name, [['a.png', png]]);
    assert.equal(r.status, status, `${name}: ${JSON.stringify(r.body)}`);
  }
  await assertOnly(['ok-name_1.2', 'zipped']);
});

test('images are decoded with sharp: text, truncated files and wrong extensions are refused', async () => {
  const png = await patternPng(3);
  const jpeg = await (await import('sharp')).default(png).jpeg().toBuffer();
  for (const [name, data, why] of [
    ['text.png', strToU8('not an image at all'), /not a readable image/],
    ['cut.png', png.subarray(0, png.length - 40), /not a readable image/],
    ['photo.png', jpeg, /is a jpeg image; give it a matching extension/],
  ] as const) {
    const r = await upload(t, 'imgs', [[name, data]]);
    assert.equal(r.status, 422, name);
    assert.match(r.body.detail, why, name);
  }
  assert.equal((await upload(t, 'imgs', [['photo.jpg', jpeg]])).status, 201);
  const notMultipart = await t.post('/sdapi/v1/train/datasets/json', { files: [] });
  assert.equal(notMultipart.status, 415);
  const empty = await fetch(`${t.server.url}/sdapi/v1/train/datasets/empty`, { method: 'POST', body: new FormData() });
  assert.equal(empty.status, 422);
});

test('size limits answer 413: per file, in total, file count, and unpacked zip size (a lying zip is caught)', async () => {
  const s = trainingSettings(t.server.ctx);
  const saved = { ...s };
  try {
    s.maxUploadFileBytes = 20_000;
    s.maxUploadTotalBytes = 50_000;
    s.maxUploadFiles = 3;
    const blob = (n: number) => randomBytes(n);
    const big = await upload(t, 'lim', [['a.png', blob(30_000)]]);
    assert.equal(big.status, 413);
    assert.match(big.body.detail, /'a\.png' is larger than the limit of 20000 bytes per file/);
    const total = await upload(t, 'lim', [['a.png', blob(18_000)], ['b.png', blob(18_000)], ['c.png', blob(18_000)]]);
    assert.equal(total.status, 413);
    assert.match(total.body.detail, /larger than the limit of 50000 bytes in total/);
    const many = await upload(t, 'lim', [['a.png', blob(10)], ['b.png', blob(10)], ['c.png', blob(10)], ['d.png', blob(10)]]);
    assert.equal(many.status, 413);
    assert.match(many.body.detail, /too many files/);

    // 1 MB of zeros deflates to about 1 kB: the declared size is over the limit before anything is inflated.
    const bomb = zipSync({ 'a.png': new Uint8Array(1_000_000) });
    assert.ok(bomb.length < 5_000);
    const b = await upload(t, 'lim', [['bomb.zip', bomb]]);
    assert.equal(b.status, 413);
    assert.match(b.body.detail, /unpacks to 1000000 bytes, over the limit of 20000 bytes per file/);
    // The same zip claiming 1000 bytes in its central directory: inflated into 1000 bytes, then refused.
    const liar = patchCentralSize(bomb, 1000);
    const l = await upload(t, 'lim', [['liar.zip', liar]]);
    assert.equal(l.status, 422);
    assert.match(l.body.detail, /zip entry a\.png is corrupt/);
    const manyZ = await upload(t, 'lim', [['z.zip', zipSync({ 'a.png': blob(5), 'b.png': blob(5), 'c.png': blob(5), 'd.png': blob(5) })]]);
    assert.equal(manyZ.status, 413);
  } finally {
    Object.assign(s, saved);
  }
  await assertOnly(['imgs', 'ok-name_1.2', 'zipped']);
});

test('staging folders left by an interrupted server are removed once stale; fresh ones and datasets stay', async () => {
  const old = join(datasets(), '.upload-old');
  const fresh = join(datasets(), '.upload-fresh');
  await mkdir(join(old, 'data'), { recursive: true });
  await mkdir(fresh);
  const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
  await utimes(old, twoHoursAgo, twoHoursAgo);
  assert.deepEqual(await removeStaleStaging(trainingSettings(t.server.ctx)), [old]);
  await rm(fresh, { recursive: true });
  await assertOnly(['imgs', 'ok-name_1.2', 'zipped']);
});

/** Rewrites the uncompressed size of the first central-directory entry. */
function patchCentralSize(zip: Uint8Array, size: number): Uint8Array {
  const out = zip.slice();
  const view = new DataView(out.buffer);
  for (let i = out.length - 22; i >= 0; i--) {
    if (view.getUint32(i, true) === 0x06054b50) {
      const cd = view.getUint32(i + 16, true);
      view.setUint32(cd + 24, size, true);
      return out;
    }
  }
  throw new Error('no EOCD');
}
