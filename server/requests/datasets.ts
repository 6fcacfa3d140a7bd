/** Dataset editing requests of the browser UI and the WebUI extension: caption edits and images added over HTTP. */
import { z } from 'zod';
import { CAPTION_WRITE_MODES } from '../../engine/train/caption-table.ts';
import { check, enumError, field, required, requestModel, requiredStr } from '../schema.ts';

/** Images one request may add. */
export const ADD_MAX_IMAGES = 256;

const dict = { error: 'value is not a valid dict' };
const list = { error: 'value is not a valid list' };
// A caption is one line of metadata.csv / a .txt sidecar.
const oneLine = (s: string) => !/[\r\n\0]/.test(s);

const captionEdit = z.object(
  {
    key: requiredStr().refine((k) => k !== '', check('expected the image path relative to the dataset')),
    caption: requiredStr()
      .refine(oneLine, check('a caption is one line; remove the line breaks'))
      .transform((c) => c.trim()),
    before: z.string({ error: 'str type expected' }).optional(),
  },
  dict,
);

export const captionEditsRequest = requestModel({
  edits: required('list', z.array(captionEdit, list), 'the captions to save: [{key, caption, before?}], `before` being the caption the edit started from'),
});

const addedImage = z.object(
  {
    image: requiredStr().refine((s) => s !== '', check('expected base64 image data')),
    file_name: z.string({ error: 'str type expected' }).nullish(),
    caption: z.string({ error: 'str type expected' }).refine(oneLine, check('a caption is one line; remove the line breaks')).nullish(),
  },
  dict,
);

export const addImagesRequest = requestModel({
  images: required(
    'list',
    z
      .array(addedImage, list)
      .refine((l) => l.length > 0, check('expected a non-empty list of {image, file_name?, caption?}', 'value_error.list.min_items'))
      .refine((l) => l.length <= ADD_MAX_IMAGES, check(`at most ${ADD_MAX_IMAGES} images per request`, 'value_error.list.max_items')),
    '[{image: base64 or data URL, file_name?, caption?}]',
  ),
  mode: field('str', z.enum(CAPTION_WRITE_MODES, enumError(CAPTION_WRITE_MODES)), 'missing', 'what happens to a caption an image already has'),
});

export type CaptionEditsRequest = z.output<typeof captionEditsRequest>;
export type AddImagesRequest = z.output<typeof addImagesRequest>;
