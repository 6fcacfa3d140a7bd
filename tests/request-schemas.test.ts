/**
 * A1111 request bodies through zod schemas built from the request tables: pydantic v1's lenient coercion into
 * typed objects, unknown keys dropped, null meaning the default, and refusals in FastAPI's 422 shape from the
 * real server.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { parseRequest } from '../server/schema.ts';
import { img2imgRequest, pngInfoRequest, txt2imgRequest, type Txt2ImgRequest } from '../server/requests/generation.ts';
import { ValidationError } from '../server/errors.ts';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';

let server: TestServer | undefined;
after(() => server?.close());

test('a txt2img body becomes a typed request: coercions as pydantic v1, defaults for absent and null fields, unknown keys dropped', () => {
  const r: Txt2ImgRequest = parseRequest(txt2imgRequest, { steps: '12', cfg_scale: '6.5', restore_faces: 1, tiling: 'off', prompt: 7, styles: ['a', 3], seed: null, sampler_name: null, no_such_field: 1 });
  const steps: number = r.steps;
  const sampler: string | null = r.sampler_name;
  // @ts-expect-error: a str field whose default is null may be null, so it is not a plain string
  const notPlain: string = r.sampler_name;
  void notPlain;
  assert.equal(steps, 12);
  assert.equal(r.cfg_scale, 6.5);
  assert.equal(r.restore_faces, true);
  assert.equal(r.tiling, false);
  assert.equal(r.prompt, '7');
  assert.deepEqual(r.styles, ['a', '3']);
  assert.equal(r.seed, -1);
  assert.equal(sampler, null);
  assert.equal(r.width, 512);
  assert.ok(!('no_such_field' in r));
  // Defaults are fresh copies: a request that changes its list does not change the next one's.
  r.script_args.push('x');
  assert.deepEqual(parseRequest(txt2imgRequest, {}).script_args, []);
  assert.equal(parseRequest(img2imgRequest, {}).denoising_strength, 0.75);
});

test('refusals name every bad field as FastAPI does', () => {
  const bad = () => parseRequest(txt2imgRequest, { steps: 'many', cfg_scale: '', tiling: 'maybe', styles: ['ok', { no: 1 }], override_settings: [1] });
  assert.throws(bad, (e: unknown) => {
    assert.ok(e instanceof ValidationError);
    assert.deepEqual(
      e.issues.map((i) => [i.loc.join('.'), i.type]).sort(),
      [
        ['body.cfg_scale', 'type_error.float'],
        ['body.override_settings', 'type_error.dict'],
        ['body.steps', 'type_error.integer'],
        ['body.styles.1', 'type_error.str'],
        ['body.tiling', 'type_error.bool'],
      ],
    );
    return true;
  });
  for (const body of [[1], 'text', null]) {
    assert.throws(() => parseRequest(pngInfoRequest, body), (e: unknown) => e instanceof ValidationError && e.issues[0]?.loc.join('.') === 'body' && e.issues[0].type === 'type_error.dict');
  }
});

test('the server answers a bad txt2img or png-info body with 422 {detail: [{loc, msg, type}]}', async () => {
  server = await startTestServer();
  const r = await server.post('/sdapi/v1/txt2img', { steps: 'many', width: '64' });
  assert.equal(r.status, 422, JSON.stringify(r.body));
  assert.deepEqual(r.body, { detail: [{ loc: ['body', 'steps'], msg: 'value is not a valid integer', type: 'type_error.integer' }] });
  const p = await server.post('/sdapi/v1/png-info', { image: { not: 'a string' } });
  assert.equal(p.status, 422);
  assert.deepEqual(p.body, { detail: [{ loc: ['body', 'image'], msg: 'str type expected', type: 'type_error.str' }] });
  const ok = await server.post('/sdapi/v1/png-info', { image: '' });
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.body, { info: '', items: {}, parameters: {} });
});
