import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer } from './server-fixture-backend.ts';

const auth = (user: string, pass: string) => ({ authorization: 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64') });

test('POST /sdapi/v1/server-stop exists only with --api-server-stop, sits behind --api-auth, answers "Stopping." and stops', async () => {
  const plain = await startTestServer({});
  try {
    assert.equal((await plain.post('/sdapi/v1/server-stop')).status, 404, 'off by default, as A1111');
  } finally {
    await plain.close();
  }

  let stopped!: () => void;
  const onStop = new Promise<void>((r) => (stopped = r));
  const t = await startTestServer({ apiAuth: 'alice:pw', apiServerStop: true, onServerStop: () => stopped() });
  try {
    assert.equal((await t.post('/sdapi/v1/server-stop')).status, 401);
    assert.equal((await t.post('/sdapi/v1/server-stop', {}, auth('alice', 'wrong'))).status, 401);
    assert.equal((await t.get('/sdapi/v1/cmd-flags', auth('alice', 'pw'))).body.api_server_stop, true);
    const r = await t.post('/sdapi/v1/server-stop', {}, auth('alice', 'pw'));
    assert.equal(r.status, 200);
    assert.equal(r.body, 'Stopping.');
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain/);
    await onStop;
    await assert.rejects(fetch(t.server.url + '/internal/ping'), 'the port is closed');
  } finally {
    await t.close();
  }
});
