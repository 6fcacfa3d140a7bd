/**
 * Reads the data of a PyTorch `torch.save` file (the zip format of torch ≥ 1.6) WITHOUT running any code from
 * it: the pickle program is interpreted by a small stack machine that knows only the data opcodes and a fixed
 * list of five constructors (tensor and parameter rebuilds, OrderedDict, float/half storages). Any other global,
 * opcode or layout is refused with an error, so a malicious file can only fail to load. Enough for textual-
 * inversion embeddings and similar small state dicts; legacy (pre-zip) files are refused.
 */
import { UserError } from './errors.ts';
import { f16ToF32 } from '../safetensors/float.ts';

export interface TorchTensor {
  kind: 'tensor';
  dtype: 'float32' | 'float16';
  shape: number[];
  data: Float32Array;
}

export type PickleValue = null | boolean | number | string | PickleValue[] | { [k: string]: PickleValue } | TorchTensor | { kind: 'global'; name: string } | { kind: 'storage'; dtype: 'float32' | 'float16'; key: string };

/** Entries of a zip whose members are stored uncompressed (how torch.save writes them). */
function zipEntries(buf: Buffer, what: string): Map<string, Buffer> {
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) if (buf.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  if (eocd < 0) throw new UserError(`${what}: not a torch zip file (an older pickle format, or not PyTorch at all)`);
  let count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  // Zip64: torch writes a zip64 end record when offsets overflow; small files never need it.
  if (p === 0xffffffff || count === 0xffff) throw new UserError(`${what}: zip64 torch files are not supported here`);
  const out = new Map<string, Buffer>();
  while (count-- > 0) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new UserError(`${what}: broken zip directory`);
    const method = buf.readUInt16LE(p + 10);
    const size = buf.readUInt32LE(p + 20);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    if (method !== 0) throw new UserError(`${what}: zip member ${name} is compressed; torch.save stores members uncompressed`);
    const lNameLen = buf.readUInt16LE(local + 26);
    const lExtraLen = buf.readUInt16LE(local + 28);
    const start = local + 30 + lNameLen + lExtraLen;
    if (start + size > buf.length) throw new UserError(`${what}: zip member ${name} runs past the end of the file`);
    out.set(name, buf.subarray(start, start + size));
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

const ALLOWED = new Set(['torch._utils _rebuild_tensor_v2', 'torch._utils _rebuild_parameter', 'collections OrderedDict', 'torch FloatStorage', 'torch HalfStorage']);

/** Interprets a pickle program over data opcodes only; `storage(key)` gives the bytes of a persistent storage. */
function unpickle(prog: Buffer, storage: (key: string) => Buffer, what: string): PickleValue {
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let i = 0;
  const bad = (msg: string): never => {
    throw new UserError(`${what}: ${msg}; only plain tensors and dicts are read from pickles`);
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) bad('pickle MARK missing');
    return stack.splice(m!);
  };
  const call = (fn: unknown, args: unknown[]): unknown => {
    const name = (fn as { kind?: string; name?: string })?.kind === 'global' ? (fn as { name: string }).name : '';
    if (name === 'collections OrderedDict') return {};
    if (name === 'torch._utils _rebuild_parameter') return args[0];
    if (name === 'torch._utils _rebuild_tensor_v2') {
      const [st, offset, size, stride] = args as [{ kind: string; dtype: 'float32' | 'float16'; key: string }, number, number[], number[]];
      if (st?.kind !== 'storage') bad('a tensor without its storage');
      const shape = [...size];
      const n = shape.reduce((a, b) => a * b, 1);
      // Only contiguous row-major tensors: what TI and most state dicts hold.
      let expect = 1;
      for (let d = shape.length - 1; d >= 0; d--) {
        if (shape[d]! > 1 && stride[d] !== expect) bad(`tensor with strides [${stride}] for shape [${shape}] (not contiguous)`);
        expect *= shape[d]!;
      }
      const bytes = storage(st.key);
      const el = st.dtype === 'float16' ? 2 : 4;
      if ((offset + n) * el > bytes.length) bad(`tensor of ${n} elements past the end of storage ${st.key}`);
      const raw = bytes.subarray(offset * el, (offset + n) * el);
      const copy = new Uint8Array(raw);
      const data = st.dtype === 'float16' ? f16ToF32(new Uint16Array(copy.buffer, 0, n)) : new Float32Array(copy.buffer, 0, n);
      return { kind: 'tensor', dtype: st.dtype, shape, data } satisfies TorchTensor;
    }
    return bad(`call of ${name || 'a non-function'}`);
  };
  for (;;) {
    if (i >= prog.length) bad('pickle ends without STOP');
    const op = prog[i++]!;
    switch (op) {
      case 0x80: i++; break; // PROTO
      case 0x95: i += 8; break; // FRAME
      case 0x7d: stack.push({}); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x29: stack.push([]); break; // EMPTY_TUPLE
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4b: stack.push(prog[i++]!); break; // BININT1
      case 0x4d: stack.push(prog.readUInt16LE(i)); i += 2; break; // BININT2
      case 0x4a: stack.push(prog.readInt32LE(i)); i += 4; break; // BININT
      case 0x8a: { // LONG1
        const n = prog[i++]!;
        let v = 0n;
        for (let k = n - 1; k >= 0; k--) v = (v << 8n) | BigInt(prog[i + k]!);
        if (n > 0 && prog[i + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(Number(v));
        i += n;
        break;
      }
      case 0x47: stack.push(prog.readDoubleBE(i)); i += 8; break; // BINFLOAT
      case 0x58: { const n = prog.readUInt32LE(i); stack.push(prog.subarray(i + 4, i + 4 + n).toString('utf8')); i += 4 + n; break; } // BINUNICODE
      case 0x8c: { const n = prog[i++]!; stack.push(prog.subarray(i, i + n).toString('utf8')); i += n; break; } // SHORT_BINUNICODE
      case 0x71: memo.set(prog[i++]!, stack.at(-1)); break; // BINPUT
      case 0x72: memo.set(prog.readUInt32LE(i), stack.at(-1)); i += 4; break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, stack.at(-1)); break; // MEMOIZE
      case 0x68: stack.push(memo.get(prog[i++]!)); break; // BINGET
      case 0x6a: stack.push(memo.get(prog.readUInt32LE(i))); i += 4; break; // LONG_BINGET
      case 0x63: { // GLOBAL "module\nname\n"
        const a = prog.indexOf(0x0a, i);
        const b = prog.indexOf(0x0a, a + 1);
        const name = `${prog.subarray(i, a).toString('utf8')} ${prog.subarray(a + 1, b).toString('utf8')}`;
        i = b + 1;
        if (!ALLOWED.has(name)) bad(`it refers to ${name.replace(' ', '.')}`);
        stack.push({ kind: 'global', name });
        break;
      }
      case 0x74: stack.push(popMark()); break; // TUPLE
      case 0x85: stack.push([stack.pop()]); break; // TUPLE1
      case 0x86: { const b = stack.pop(); const a = stack.pop(); stack.push([a, b]); break; } // TUPLE2
      case 0x87: { const c = stack.pop(); const b = stack.pop(); const a = stack.pop(); stack.push([a, b, c]); break; } // TUPLE3
      case 0x51: { // BINPERSID: ('storage', StorageType, key, location, numel)
        const pid = stack.pop() as unknown[];
        const type = (pid?.[1] as { name?: string })?.name;
        if (!Array.isArray(pid) || pid[0] !== 'storage' || (type !== 'torch FloatStorage' && type !== 'torch HalfStorage')) bad('a persistent object that is not a float storage');
        stack.push({ kind: 'storage', dtype: type === 'torch HalfStorage' ? 'float16' : 'float32', key: String(pid[2]) });
        break;
      }
      case 0x52: { const args = stack.pop() as unknown[]; const fn = stack.pop(); stack.push(call(fn, args)); break; } // REDUCE
      case 0x73: { const v = stack.pop(); const k = stack.pop(); (stack.at(-1) as Record<string, unknown>)[String(k)] = v; break; } // SETITEM
      case 0x75: { // SETITEMS
        const items = popMark();
        const d = stack.at(-1) as Record<string, unknown>;
        for (let k = 0; k + 1 < items.length; k += 2) d[String(items[k])] = items[k + 1];
        break;
      }
      case 0x61: { const v = stack.pop(); (stack.at(-1) as unknown[]).push(v); break; } // APPEND
      case 0x65: { const items = popMark(); (stack.at(-1) as unknown[]).push(...items); break; } // APPENDS
      case 0x2e: return stack.pop() as PickleValue; // STOP
      default:
        bad(`pickle opcode 0x${op.toString(16)}`);
    }
  }
}

/** The object a torch.save zip file holds, with its tensors read as float32. */
export function readTorchZip(buf: Buffer, what: string): PickleValue {
  const entries = zipEntries(buf, what);
  const pkl = [...entries.keys()].find((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (!pkl) throw new UserError(`${what}: no data.pkl in the torch zip file`);
  const root = pkl.slice(0, -'data.pkl'.length);
  return unpickle(entries.get(pkl)!, (key) => {
    const b = entries.get(`${root}data/${key}`);
    if (!b) throw new UserError(`${what}: storage ${key} missing from the torch zip file`);
    return b;
  }, what);
}
