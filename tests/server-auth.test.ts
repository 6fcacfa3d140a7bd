import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io as ioClient, type Socket } from 'socket.io-client';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { parseApiAuth } from '../server/auth.ts';

let t: TestServer;
const basic = (u: string, p: string) => ({ authorization: 'Basic ' + Buffer.from(`${u}:${p}`).toString('base64') });

before(async () => {
  t = await startTestServer({ withModel: true, apiAuth: 'alice:s3cret:with:colons,bob:pw', corsAllowOrigins: ['http://app.example'] });
});
after(() => t.close());

test('--api-auth parsing', () => {
  assert.deepEqual([...parseApiAuth('a:b,c:d:e')], [['a', 'b'], ['c', 'd:e']]);
  assert.throws(() => parseApiAuth('nopassword'), /--api-auth: expected user:password/);
  assert.throws(() => parseApiAuth(','), /no user:password/);
});

test('every route, the LoRA list and docs included, needs credentials; 401 has A1111 shape', async () => {
  for (const [method, path] of [
    ['GET', '/sdapi/v1/loras'],
    ['POST', '/sdapi/v1/refresh-loras'],
    ['GET', '/sdapi/v1/options'],
    ['POST', '/sdapi/v1/txt2img'],
    ['GET', '/sdapi/v1/progress'],
    ['POST', '/sdapi/v1/interrupt'],
    ['GET', '/openapi.json'],
    ['GET', '/docs'],
    ['GET', '/sdapi/v1/no-such-route'],
  ] as const) {
    const r = method === 'GET' ? await t.get(path) : await t.post(path, {});
    assert.equal(r.status, 401, `${method} ${path}`);
    assert.deepEqual(r.body, { error: 'HTTPException', detail: 'Not authenticated', body: '', errors: '' }, path);
    assert.equal(r.headers.get('www-authenticate'), 'Basic');
  }
  const wrong = await t.get('/sdapi/v1/loras', basic('alice', 'nope'));
  assert.equal(wrong.status, 401);
  assert.equal(wrong.body.detail, 'Incorrect username or password');
  const unknownUser = await t.get('/sdapi/v1/loras', basic('mallory', 'pw'));
  assert.equal(unknownUser.body.detail, 'Incorrect username or password');
  const garbage = await t.get('/sdapi/v1/loras', { authorization: 'Bearer abc' });
  assert.equal(garbage.body.detail, 'Not authenticated');
});

test('valid credentials (password containing colons, second user) get through', async () => {
  const a = await t.get('/sdapi/v1/loras', basic('alice', 's3cret:with:colons'));
  assert.equal(a.status, 200);
  assert.equal(a.body.length, 2);
  const b = await t.get('/sdapi/v1/options', basic('bob', 'pw'));
  assert.equal(b.status, 200);
  assert.equal(b.body.CLIP_stop_at_last_layers, 1);
  assert.equal((await t.get('/sdapi/v1/cmd-flags', basic('bob', 'pw'))).body.api_auth, '<redacted>', 'passwords are not echoed');
});

function connect(opts: Parameters<typeof ioClient>[1]): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = ioClient(t.server.url, { transports: ['websocket'], reconnection: false, ...opts });
    s.once('connect', () => resolve(s));
    s.once('connect_error', (e) => {
      s.close();
      reject(e);
    });
  });
}

test('socket.io needs the same credentials (header or auth payload)', async () => {
  await assert.rejects(connect({}), /Not authenticated/);
  await assert.rejects(connect({ auth: { username: 'bob', password: 'wrong' } }), /Not authenticated/);
  const s1 = await connect({ auth: { username: 'bob', password: 'pw' } });
  s1.close();
  const s2 = await connect({ extraHeaders: basic('alice', 's3cret:with:colons') });
  s2.close();
});

test('CORS: allowed origins get the headers; other origins are refused', async () => {
  const pre = await fetch(t.server.url + '/sdapi/v1/txt2img', {
    method: 'OPTIONS',
    headers: { origin: 'http://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
  });
  assert.equal(pre.status, 200);
  assert.equal(pre.headers.get('access-control-allow-origin'), 'http://app.example');
  assert.match(pre.headers.get('access-control-allow-headers') ?? '', /authorization/);
  const ok = await fetch(t.server.url + '/sdapi/v1/samplers', { headers: { origin: 'http://app.example', ...basic('bob', 'pw') } });
  assert.equal(ok.headers.get('access-control-allow-origin'), 'http://app.example');
  const other = await fetch(t.server.url + '/sdapi/v1/samplers', { headers: { origin: 'http://evil.example', ...basic('bob', 'pw') } });
  assert.equal(other.status, 403, 'a page of another origin must not drive the server');
  assert.match((await other.json()).detail, /cross-origin request from http:\/\/evil\.example refused/);
  assert.equal(other.headers.get('access-control-allow-origin'), null);
});

test('--listen binds all interfaces and warns when there is no --api-auth', async () => {
  const logs: string[] = [];
  const open = await startTestServer({ listen: true, log: (m) => logs.push(m) });
  try {
    assert.match(open.server.url, /^http:\/\/0\.0\.0\.0:\d+$/);
    const r = await fetch(`http://127.0.0.1:${open.server.port}/sdapi/v1/samplers`);
    assert.equal(r.status, 200);
    assert.ok(logs.some((l) => /warning: listening on 0\.0\.0\.0 without --api-auth/.test(l)), logs.join('\n'));
  } finally {
    await open.close();
  }
});
