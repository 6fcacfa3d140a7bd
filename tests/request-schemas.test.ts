/**
 * Request bodies through their zod schemas: pydantic v1's lenient coercion into typed objects (z.output), A1111's
 * defaults for absent and null fields, unknown keys dropped, refusals in FastAPI's 422 shape and HTTPException's
 * 4xx shape from the real server; a txt2img going through prepare → resolve → run → respond one step at a time.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fieldsSet, modelFields, parseNoBody, parseRequest } from '../server/schema.ts';
import { img2imgRequest, pngInfoRequest, txt2imgRequest, type Txt2ImgRequest } from '../server/requests/generation.ts';
import { extrasBatchRequest, extrasSingleRequest } from '../server/requests/extras.ts';
import { internalProgressRequest } from '../server/requests/progress.ts';
import { chatRequest, completionRequest } from '../server/requests/llm.ts';
import { addImagesRequest, captionEditsRequest } from '../server/requests/datasets.ts';
import { interrogateRequest, labelRequest } from '../server/requests/label.ts';
import { parseOptionValues } from '../server/requests/options.ts';
import { OPTION_DEFAULTS } from '../server/option-defaults.ts';
import { ValidationError, type ValidationIssue } from '../server/errors.ts';
import { prepareGeneration } from '../server/generation.ts';
import { resolveGeneration } from '../server/generation-resolve.ts';
import { runPlan } from '../server/generation-run.ts';
import { respond } from '../server/generation-respond.ts';
import { FixtureBackend, startTestServer, type TestServer } from './server-fixture-backend.ts';

let server: TestServer;
let backend: FixtureBackend;
before(async () => {
  backend = new FixtureBackend();
  server = await startTestServer({ withModel: true, backend });
});
after(() => server.close());

/** The issues a parse refuses with, as [loc, type] pairs, sorted. */
function refusals(parse: () => unknown): [string, string][] {
  try {
    parse();
  } catch (e) {
    assert.ok(e instanceof ValidationError, String(e));
    return e.issues.map((i): [string, string] => [i.loc.join('.'), i.type]).sort();
  }
  assert.fail('the parse was expected to fail');
}

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
});

test("every request model's defaults are A1111's (and OpenAI's), typed", () => {
  const t = parseRequest(txt2imgRequest, {});
  const txt: [unknown, unknown][] = [
    [t.steps, 50], [t.sampler_index, 'Euler'], [t.cfg_scale, 7], [t.batch_size, 1], [t.n_iter, 1], [t.subseed_strength, 0],
    [t.enable_hr, false], [t.hr_scale, 2], [t.hr_second_pass_steps, 0], [t.hr_upscaler, null], [t.denoising_strength, null],
    [t.send_images, true], [t.save_images, false], [t.override_settings_restore_afterwards, true], [t.script_name, null],
  ];
  for (const [i, [got, want]] of txt.entries()) assert.deepEqual(got, want, `txt2img #${i}`);
  assert.deepEqual(t.alwayson_scripts, {});
  const i = parseRequest(img2imgRequest, {});
  const denoise: number = i.denoising_strength;
  assert.deepEqual([denoise, i.resize_mode, i.mask_blur_x, i.mask_blur_y, i.mask_blur, i.inpaint_full_res, i.inpaint_full_res_padding, i.inpainting_fill, i.include_init_images, i.init_images], [0.75, 0, 4, 4, null, true, 0, 0, false, null]);
  const x = parseRequest(extrasSingleRequest, {});
  const by: number = x.upscaling_resize;
  assert.deepEqual([x.resize_mode, by, x.upscaling_resize_w, x.upscaling_resize_h, x.upscaling_crop, x.upscaler_1, x.upscaler_2, x.extras_upscaler_2_visibility, x.image], [0, 2, 512, 512, true, 'None', 'None', 0, '']);
  assert.deepEqual(parseRequest(extrasBatchRequest, {}).imageList, []);
  assert.deepEqual(parseRequest(internalProgressRequest, {}), { id_task: null, id_live_preview: -1, live_preview: true });
  assert.deepEqual(parseRequest(pngInfoRequest, {}), { image: '' });
  assert.deepEqual(parseRequest(interrogateRequest, {}), { image: '', model: 'clip' });
  const c = parseRequest(completionRequest, { model: 'tiny', prompt: ['one prompt'], stop: '\n' });
  const prompt: string = c.prompt;
  const stop: string[] = c.stop;
  assert.deepEqual([prompt, stop, c.temperature, c.top_p, c.top_k, c.repetition_penalty, c.max_tokens, c.n, c.stream, c.seed, c.adapters], ['one prompt', ['\n'], 1, 1, 0, 1, null, 1, false, 0, []]);
  const chat = parseRequest(chatRequest, { model: 'tiny', messages: [{ role: 'user', content: 'hi' }], adapters: ['style:0.5', { name: 'b' }] });
  assert.deepEqual(chat.messages, [{ role: 'user', content: 'hi' }]);
  assert.deepEqual(chat.adapters, ['style:0.5', { name: 'b' }]);
  const edit = parseRequest(captionEditsRequest, { edits: [{ key: 'a.png', caption: '  a cat  ' }] });
  assert.deepEqual(edit.edits, [{ key: 'a.png', caption: 'a cat' }]);
  assert.equal(parseRequest(addImagesRequest, { images: [{ image: 'AAAA' }] }).mode, 'missing');
  // A labelling job keeps the label settings (the engine's own schema reads them) beside its typed fields.
  const { dataset, clip_model, ...settings } = parseRequest(labelRequest, { dataset: 'cats', model: 'wd14', threshold: 0.4 });
  assert.deepEqual([dataset, clip_model, settings['model'], settings['threshold']], ['cats', null, 'wd14', 0.4]);
  // The OpenAPI document reads each field's type, default and whether it is required from the same schema.
  const fields = new Map(modelFields(completionRequest).map((fd) => [fd.name, fd]));
  assert.equal(fields.get('model')?.required, true);
  assert.equal(fields.get('temperature')?.default, 1);
  assert.equal(new Map(modelFields(txt2imgRequest).map((fd) => [fd.name, fd])).get('steps')?.type, 'int');
});

test('options are typed by their default: numbers, booleans and strings coerced as pydantic does, unknown keys kept for the KeyError rule', () => {
  const numberKey = Object.keys(OPTION_DEFAULTS).find((k) => typeof OPTION_DEFAULTS[k] === 'number')!;
  const boolKey = Object.keys(OPTION_DEFAULTS).find((k) => typeof OPTION_DEFAULTS[k] === 'boolean')!;
  const strKey = Object.keys(OPTION_DEFAULTS).find((k) => typeof OPTION_DEFAULTS[k] === 'string')!;
  const v = parseOptionValues({ [numberKey]: '3', [boolKey]: 'yes', [strKey]: 5, not_an_option: [1], sd_model_checkpoint: null });
  assert.deepEqual(v, { [numberKey]: 3, [boolKey]: true, [strKey]: '5', not_an_option: [1], sd_model_checkpoint: null });
  const expected: [string, string][] = [
    [`body.${boolKey}`, 'type_error.bool'],
    [`body.${numberKey}`, 'type_error.float'],
  ];
  assert.deepEqual(refusals(() => parseOptionValues({ [numberKey]: 'many', [boolKey]: 'maybe' })), expected.sort());
  assert.deepEqual(refusals(() => parseOptionValues({ [numberKey]: {} }, ['body', 'override_settings'])), [[`body.override_settings.${numberKey}`, 'type_error.float']]);
});

test('refusals name every bad field with pydantic v1 error types, nested fields included', () => {
  assert.deepEqual(refusals(() => parseRequest(txt2imgRequest, { steps: 'many', cfg_scale: '', tiling: 'maybe', styles: ['ok', { no: 1 }], override_settings: [1] })), [
    ['body.cfg_scale', 'type_error.float'],
    ['body.override_settings', 'type_error.dict'],
    ['body.steps', 'type_error.integer'],
    ['body.styles.1', 'type_error.str'],
    ['body.tiling', 'type_error.bool'],
  ]);
  for (const body of [[1], 'text', null]) assert.deepEqual(refusals(() => parseRequest(pngInfoRequest, body)), [['body', 'type_error.dict']]);
  // ge/le bounds as pydantic words them.
  try {
    parseRequest(extrasSingleRequest, { upscaling_resize: 9, extras_upscaler_2_visibility: -0.5 });
    assert.fail('out of range');
  } catch (e) {
    assert.ok(e instanceof ValidationError);
    const byLoc = new Map(e.issues.map((i: ValidationIssue) => [i.loc.join('.'), i]));
    assert.deepEqual(byLoc.get('body.upscaling_resize'), { loc: ['body', 'upscaling_resize'], msg: 'ensure this value is less than or equal to 8', type: 'value_error.number.not_le' });
    assert.deepEqual(byLoc.get('body.extras_upscaler_2_visibility'), { loc: ['body', 'extras_upscaler_2_visibility'], msg: 'ensure this value is greater than or equal to 0', type: 'value_error.number.not_ge' });
  }
  assert.deepEqual(refusals(() => parseRequest(extrasBatchRequest, { imageList: [{ data: 'x' }, 'y', { data: 3, name: 'n' }] })), [
    ['body.imageList.0.name', 'value_error.missing'],
    ['body.imageList.1', 'type_error.dict'],
    ['body.imageList.2.data', 'type_error.str'],
  ]);
  assert.deepEqual(refusals(() => parseRequest(completionRequest, { prompt: 'p' })), [['body.model', 'value_error.missing']]);
  assert.deepEqual(refusals(() => parseRequest(chatRequest, { model: 'm', messages: [] })), [['body.messages', 'value_error.list.min_items']]);
  assert.deepEqual(refusals(() => parseRequest(chatRequest, { model: 'm', messages: [{ role: 'user' }], n: 2 })), [
    ['body.messages.0.content', 'value_error.missing'],
    ['body.n', 'value_error.number.not_le'],
  ]);
  assert.deepEqual(refusals(() => parseRequest(addImagesRequest, { images: [{ image: 'AAAA', caption: 'two\nlines' }], mode: 'sometimes' })), [
    ['body.images.0.caption', 'value_error'],
    ['body.mode', 'type_error.enum'],
  ]);
  assert.deepEqual(refusals(() => parseRequest(labelRequest, { model: 'wd14' })), [['body.dataset', 'value_error.missing']]);
  // Routes without a request model take no body, null or an object.
  for (const ok of [undefined, null, {}, { anything: 1 }]) parseNoBody(ok);
  assert.deepEqual(refusals(() => parseNoBody([1])), [['body', 'type_error.dict']]);
  assert.deepEqual([...fieldsSet({ a: 1, b: null, c: undefined })], ['a']);
});

test('the server answers bad bodies with 422 {detail: [{loc, msg, type}]} and A1111 HTTPExceptions with {error, detail, body, errors}', async () => {
  const r = await server.post('/sdapi/v1/txt2img', { steps: 'many', width: '64' });
  assert.equal(r.status, 422, JSON.stringify(r.body));
  assert.deepEqual(r.body, { detail: [{ loc: ['body', 'steps'], msg: 'value is not a valid integer', type: 'type_error.integer' }] });
  const p = await server.post('/sdapi/v1/png-info', { image: { not: 'a string' } });
  assert.equal(p.status, 422);
  assert.deepEqual(p.body, { detail: [{ loc: ['body', 'image'], msg: 'str type expected', type: 'type_error.str' }] });
  const ok = await server.post('/sdapi/v1/png-info', { image: '' });
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.body, { info: '', items: {}, parameters: {} });

  // A wrongly typed override is refused before the job is queued, at its place in the body.
  const calls = backend.calls.length;
  const o = await server.post('/sdapi/v1/txt2img', { steps: 1, width: 8, height: 8, override_settings: { CLIP_stop_at_last_layers: 'two' } });
  assert.equal(o.status, 422);
  assert.deepEqual(o.body, { detail: [{ loc: ['body', 'override_settings', 'CLIP_stop_at_last_layers'], msg: 'value is not a valid float', type: 'type_error.float' }] });
  assert.equal(backend.calls.length, calls);
  const opt = await server.post('/sdapi/v1/options', { jpeg_quality: 'high' });
  assert.deepEqual([opt.status, opt.body.detail[0].loc, opt.body.detail[0].type], [422, ['body', 'jpeg_quality'], 'type_error.float']);

  // A1111's HTTPException: the message in `detail`, `errors` empty.
  const noInit = await server.post('/sdapi/v1/img2img', { steps: 1, width: 8, height: 8 });
  assert.equal(noInit.status, 404);
  assert.deepEqual(noInit.body, { error: 'HTTPException', detail: 'Init image not found', body: '', errors: '' });

  // interrupt and skip: no body or an object; anything else is not a body they take.
  assert.equal((await server.post('/sdapi/v1/interrupt', {})).status, 200);
  const arr = await server.post('/sdapi/v1/skip', [1]);
  assert.equal(arr.status, 422);
  assert.deepEqual(arr.body.detail, [{ loc: ['body'], msg: 'value is not a valid dict', type: 'type_error.dict' }]);
});

test('script_name: null and "" run as no script, any name is A1111\'s 422; /sdapi/v1/scripts lists none', async () => {
  const base = { prompt: 'a', steps: 1, width: 8, height: 8, seed: 1 };
  for (const script_name of [null, '']) {
    const r = await server.post('/sdapi/v1/txt2img', { ...base, script_name, script_args: [] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  // webuiapi's x/y/z plot call.
  const xyz = await server.post('/sdapi/v1/txt2img', { ...base, script_name: 'x/y/z plot', script_args: [1, '10,20', [], 0, '', [], 0, '', [], true, true, false, false, 0, false] });
  assert.equal(xyz.status, 422);
  assert.deepEqual(xyz.body, { error: 'HTTPException', detail: "Script 'x/y/z plot' not found", body: '', errors: '' });
  const ao = await server.post('/sdapi/v1/img2img', { ...base, init_images: ['AAAA'], alwayson_scripts: { ControlNet: { args: [] } } });
  assert.equal(ao.status, 422);
  assert.deepEqual(ao.body, { error: 'HTTPException', detail: 'always on script ControlNet not found', body: '', errors: '' });
  assert.deepEqual((await server.get('/sdapi/v1/scripts')).body, { txt2img: [], img2img: [] });
});

test('a generation in its steps: prepare gives the typed request, resolve a typed plan, run the images and infotexts, respond the A1111 answer', async () => {
  const ctx = server.server.ctx;
  const prepared = await prepareGeneration(ctx, 'txt2img', {
    prompt: 'a cat', steps: 2, width: 16, height: 8, seed: 7, batch_size: 2, n_iter: 2, sampler_name: 'Euler a Karras',
    enable_hr: true, hr_scale: 2, hr_upscaler: 'Lanczos', hr_second_pass_steps: 1, restore_faces: true,
  });
  assert.equal(prepared.kind, 'txt2img');
  const plan = await ctx.queue.submit({ kind: 'test', run: () => resolveGeneration(ctx, prepared) }).promise;
  assert.deepEqual(plan.seeds, [7, 8, 9, 10]);
  assert.deepEqual([plan.sampler.sampler, plan.sampler.scheduler], ['Euler a', 'karras']);
  assert.deepEqual([plan.hires?.plan.width, plan.hires?.plan.height, plan.hires?.plan.steps, plan.hires?.plan.space], [32, 16, 1, 'pixel']);
  assert.equal(plan.img2img, null);
  assert.ok(plan.notes.some((n) => /restore_faces/.test(n)));
  const result = await ctx.queue.submit({ kind: 'test', run: (job) => runPlan(ctx, plan, job) }).promise;
  assert.equal(result.images.length, 4);
  assert.deepEqual([result.images[0]?.width, result.images[0]?.height], [32, 16]);
  assert.match(result.infotexts[3] ?? '', /Seed: 10, Size: 16x8, .*Hires upscale: 2, Hires steps: 1, Hires upscaler: Lanczos/);
  const answer = await respond(ctx, plan, result);
  assert.equal(answer.images.length, 4);
  const info = JSON.parse(answer.info);
  assert.deepEqual([info.all_seeds, info.sampler_name, info.denoising_strength, info.infotexts.length], [[7, 8, 9, 10], 'Euler a', 0.7, 4]);
  assert.equal(answer.parameters['sampler_name'], 'Euler a Karras', 'parameters echo the request');
});
