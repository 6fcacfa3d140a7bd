/**
 * The body of `train/jobs`, `train/dry-run` and `train/check`: the training config itself as a JSON object, or
 * `{yaml: "<config text>"}`. Only the envelope is checked here; the config's keys are the engine's training
 * schema's (engine/train/config-fields.ts), checked by server/train-config.ts through the config loader.
 */
import { z } from 'zod';
import { required, requestModel } from '../schema.ts';

/** Any JSON object (a non-object body is FastAPI's `type_error.dict`). */
export const trainConfigBody = requestModel({}).catchall(z.unknown());

/** `{yaml: "<config text>"}`: the text must be a string. */
export const trainYamlBody = requestModel({
  yaml: required('str', z.string({ error: 'yaml: expected the config as a string of YAML' }), 'the config as YAML text'),
});

