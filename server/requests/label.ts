/**
 * Labelling requests: A1111's `InterrogateRequest`, and a labelling job over an uploaded dataset, whose
 * other keys are the settings of `lora-scripts label --config` (checked by the engine's own schema,
 * engine/label/options.ts).
 */
import { z } from 'zod';
import { coerce, f, required, requestModel } from '../schema.ts';

export const interrogateRequest = requestModel({
  image: f.str('', 'base64 image'),
  model: f.str('clip', 'clip, or deepdanbooru (answered by the WD14 tagger)'),
});

export const labelRequest = requestModel({
  dataset: required('str', coerce.str, 'the name of an uploaded dataset (GET /sdapi/v1/train/datasets)'),
  clip_model: f.str(null, 'a CLIP model by name (GET /sdapi/v1/label/models)'),
  wd14_model: f.str(null, 'a WD14 tagger by name (GET /sdapi/v1/label/models)'),
}).catchall(z.unknown());

export type InterrogateRequest = z.output<typeof interrogateRequest>;
export type LabelRequest = z.output<typeof labelRequest>;
