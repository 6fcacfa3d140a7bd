import { ProtoWriter } from '../util/protobuf.ts';

/** ONNX TensorProto.DataType codes for the element types the engine uses. */
export const ONNX_DTYPE = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
} as const;
export type OnnxDTypeName = keyof typeof ONNX_DTYPE;

export type AttrValue =
  | { kind: 'int'; v: number }
  | { kind: 'float'; v: number }
  | { kind: 'string'; v: string }
  | { kind: 'ints'; v: readonly number[] }
  | { kind: 'floats'; v: readonly number[] }
  | { kind: 'tensor'; v: TensorInit };

export interface NodeDef {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name: string;
  attrs?: Readonly<Record<string, AttrValue>>;
  domain?: string;
}

export interface TensorInit {
  name: string;
  dtype: OnnxDTypeName;
  dims: readonly number[];
  /** Little-endian raw bytes, as TensorProto.raw_data stores them. */
  raw?: Uint8Array;
  /** Or: the bytes live outside the protobuf, in a named in-memory "file" handed to ORT at session creation. */
  external?: { location: string; offset: number; length: number };
}

export interface ValueInfo {
  name: string;
  dtype: OnnxDTypeName;
  /** A number is a fixed size; a string is a named dynamic dimension (dim_param). */
  dims: readonly (number | string)[];
}

export interface ModelDef {
  graphName: string;
  nodes: readonly NodeDef[];
  inputs: readonly ValueInfo[];
  outputs: readonly ValueInfo[];
  initializers: readonly TensorInit[];
  opset: number;
  /** Extra operator-set domains, e.g. com.microsoft. */
  extraOpsets?: readonly { domain: string; version: number }[];
}

// IR version 10 is the one that goes with opset 21.
const IR_VERSION = 10;

function encodeTensor(t: TensorInit): ProtoWriter {
  const w = new ProtoWriter();
  w.packedVarints(1, t.dims);
  w.varint(2, ONNX_DTYPE[t.dtype]);
  w.string(8, t.name);
  if (t.external) {
    const kv = (k: string, v: string) => new ProtoWriter().string(1, k).string(2, v);
    w.message(13, kv('location', t.external.location));
    w.message(13, kv('offset', String(t.external.offset)));
    w.message(13, kv('length', String(t.external.length)));
    w.varint(14, 1);
  } else w.bytes(9, t.raw ?? new Uint8Array(0));
  return w;
}

function encodeAttr(name: string, a: AttrValue): ProtoWriter {
  const w = new ProtoWriter();
  w.string(1, name);
  switch (a.kind) {
    case 'float':
      w.float(2, a.v).varint(20, 1);
      break;
    case 'int':
      w.varint(3, a.v).varint(20, 2);
      break;
    case 'string':
      w.string(4, a.v).varint(20, 3);
      break;
    case 'tensor':
      w.message(5, encodeTensor(a.v)).varint(20, 4);
      break;
    case 'floats':
      w.packedFloats(7, a.v).varint(20, 6);
      break;
    case 'ints':
      w.packedVarints(8, a.v).varint(20, 7);
      break;
  }
  return w;
}

function encodeNode(n: NodeDef): ProtoWriter {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.opType);
  if (n.attrs) for (const k of Object.keys(n.attrs).sort()) w.message(5, encodeAttr(k, n.attrs[k]!));
  if (n.domain) w.string(7, n.domain);
  return w;
}

function encodeValueInfo(v: ValueInfo): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.dims) {
    const dim = new ProtoWriter();
    if (typeof d === 'number') dim.varint(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new ProtoWriter().varint(1, ONNX_DTYPE[v.dtype]).message(2, shape);
  const type = new ProtoWriter().message(1, tensorType);
  return new ProtoWriter().string(1, v.name).message(2, type);
}

/** Serialises a model to ModelProto bytes, ready for `InferenceSession.create`. */
export function encodeModel(m: ModelDef): Uint8Array {
  const g = new ProtoWriter();
  for (const n of m.nodes) g.message(1, encodeNode(n));
  g.string(2, m.graphName);
  for (const t of m.initializers) g.message(5, encodeTensor(t));
  for (const v of m.inputs) g.message(11, encodeValueInfo(v));
  for (const v of m.outputs) g.message(12, encodeValueInfo(v));
  const w = new ProtoWriter();
  w.varint(1, IR_VERSION);
  w.string(2, 'lora-scripts');
  w.message(7, g);
  w.message(8, new ProtoWriter().string(1, '').varint(2, m.opset));
  for (const o of m.extraOpsets ?? []) w.message(8, new ProtoWriter().string(1, o.domain).varint(2, o.version));
  return w.finish();
}
