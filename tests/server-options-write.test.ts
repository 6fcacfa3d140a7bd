import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestServer } from './server-fixture-backend.ts';

// A1111's own API test of option writes (tests/test_utils.py test_options_write), written from its documented steps.
test('options write as A1111 tests it: read send_seed, post its negation, read it back, restore; saved to config.json', async () => {
  const t = await startTestServer({});
  try {
    const first = await t.get('/sdapi/v1/options');
    assert.equal(first.status, 200);
    const pre = first.body.send_seed;
    assert.equal(pre, true, "A1111's default");
    assert.equal(first.body.send_size, true);
    const w = await t.post('/sdapi/v1/options', { send_seed: !pre });
    assert.equal(w.status, 200);
    assert.equal(w.body, null);
    const after = await t.get('/sdapi/v1/options');
    assert.equal(after.status, 200);
    assert.equal(after.body.send_seed, !pre);
    assert.equal(JSON.parse(await readFile(join(t.dataDir, 'config.json'), 'utf8')).send_seed, !pre);
    assert.equal((await t.post('/sdapi/v1/options', { send_seed: pre })).status, 200);
    assert.equal((await t.get('/sdapi/v1/options')).body.send_seed, pre);
  } finally {
    await t.close();
  }
});
