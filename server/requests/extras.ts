/** A1111's postprocessing requests (`ExtrasBaseRequest` and its single/batch forms in modules/api/models.py), ranges as its pydantic `ge`/`le`. */
import { z } from 'zod';
import { f, field, requestModel, requiredStr } from '../schema.ts';

const extrasBase = {
  resize_mode: f.int(0, '0: scale by upscaling_resize; 1: to upscaling_resize_w × upscaling_resize_h', { ge: 0, le: 1 }),
  show_extras_results: f.bool(true),
  gfpgan_visibility: f.float(0, 'accepted; face restoration is not available', { ge: 0, le: 1 }),
  codeformer_visibility: f.float(0, 'accepted; face restoration is not available', { ge: 0, le: 1 }),
  codeformer_weight: f.float(0, undefined, { ge: 0, le: 1 }),
  upscaling_resize: f.float(2, '1 to 8', { ge: 1, le: 8 }),
  upscaling_resize_w: f.int(512, undefined, { ge: 1 }),
  upscaling_resize_h: f.int(512, undefined, { ge: 1 }),
  upscaling_crop: f.bool(true),
  upscaler_1: f.str('None', 'a name from /sdapi/v1/upscalers'),
  upscaler_2: f.str('None'),
  extras_upscaler_2_visibility: f.float(0, '0 to 1', { ge: 0, le: 1 }),
  upscale_first: f.bool(false),
};

export const extrasSingleRequest = requestModel({ ...extrasBase, image: f.str('', 'base64 image') });

/** A1111's `FileData`: both fields required. */
const fileData = z.object({ data: requiredStr(), name: requiredStr() }, { error: 'value is not a valid dict' });

export const extrasBatchRequest = requestModel({
  ...extrasBase,
  imageList: field('list', z.array(fileData, { error: 'value is not a valid list' }), [], '[{data: base64, name}]'),
});

export type ExtrasSingleRequest = z.output<typeof extrasSingleRequest>;
export type ExtrasBatchRequest = z.output<typeof extrasBatchRequest>;
/** The fields both forms share. */
export type ExtrasRequest = ExtrasSingleRequest | ExtrasBatchRequest;
