import { ProtoWriter } from '../util/protobuf.ts';

/** Field numbers from tensorboard/compat/proto/event.proto and summary.proto. */
const EVENT = { wallTime: 1, step: 2, fileVersion: 3, summary: 5 } as const;
const SUMMARY = { value: 1 } as const;
const VALUE = { tag: 1, simpleValue: 2, image: 4 } as const;
const IMAGE = { height: 1, width: 2, colorspace: 3, encoded: 4 } as const;

export const FILE_VERSION = 'brain.Event:2';

export interface ImageSummary {
  height: number;
  width: number;
  /** 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA. */
  colorspace: number;
  /** PNG or JPEG bytes. */
  encoded: Uint8Array;
}

export type SummaryValue = { tag: string; simpleValue: number } | { tag: string; image: ImageSummary };

function event(wallTime: number, step: number): ProtoWriter {
  const w = new ProtoWriter().double(EVENT.wallTime, wallTime);
  // proto3 leaves a zero scalar out; readers default it to 0.
  if (step !== 0) w.varint(EVENT.step, step);
  return w;
}

export function encodeFileVersionEvent(wallTime: number): Uint8Array {
  return new ProtoWriter().double(EVENT.wallTime, wallTime).string(EVENT.fileVersion, FILE_VERSION).finish();
}

export function encodeSummaryEvent(wallTime: number, step: number, values: readonly SummaryValue[]): Uint8Array {
  const summary = new ProtoWriter();
  for (const v of values) {
    const value = new ProtoWriter().string(VALUE.tag, v.tag);
    if ('simpleValue' in v) {
      value.float(VALUE.simpleValue, v.simpleValue);
    } else {
      const img = new ProtoWriter()
        .varint(IMAGE.height, v.image.height)
        .varint(IMAGE.width, v.image.width)
        .varint(IMAGE.colorspace, v.image.colorspace)
        .bytes(IMAGE.encoded, v.image.encoded);
      value.message(VALUE.image, img);
    }
    summary.message(SUMMARY.value, value);
  }
  return event(wallTime, step).message(EVENT.summary, summary).finish();
}
