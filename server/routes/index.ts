/**
 * All route modules. Each exports `register(api, ctx)`. The training routes of issue 7 go in `train.ts`
 * beside these and are added to this list with one import line.
 */
import type { ServerContext } from '../context.ts';
import type { Api } from './api.ts';
import { register as generate } from './generate.ts';
import { register as progress } from './progress.ts';
import { register as internalProgress } from './internal-progress.ts';
import { register as options } from './options.ts';
import { register as models } from './models.ts';
import { register as loras } from './loras.ts';
import { register as info } from './info.ts';
import { register as train } from './train.ts';
import { register as datasetImages } from './dataset-images.ts';
import { register as loraFiles } from './lora-files.ts';
import { register as loraUpload } from './lora-upload.ts';
import { register as trainSchema } from './train-schema.ts';
import { register as trainFiles } from './train-files.ts';
import { register as datasetCaptions } from './dataset-captions.ts';
import { register as label } from './label.ts';
import { register as llm } from './llm.ts';
import { register as extras } from './extras.ts';

export const routeModules: ((api: Api, ctx: ServerContext) => void)[] = [generate, progress, internalProgress, options, models, loras, info, train, datasetImages, loraFiles, loraUpload, trainSchema, trainFiles, datasetCaptions, label, llm, extras];
