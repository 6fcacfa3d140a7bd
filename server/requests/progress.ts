/** A1111's UI-mode `ProgressRequest` (POST /internal/progress); interrupt and skip take no body (`parseNoBody`). */
import type { z } from 'zod';
import { f, requestModel } from '../schema.ts';

export const internalProgressRequest = requestModel({
  id_task: f.str(null),
  id_live_preview: f.int(-1),
  live_preview: f.bool(true),
});

export type InternalProgressRequest = z.output<typeof internalProgressRequest>;
