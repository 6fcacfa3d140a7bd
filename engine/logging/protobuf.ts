/**
 * The few protobuf wire-format encodings TensorBoard's Event needs: varint, fixed64 double, fixed32 float and
 * length-delimited fields. Integers are non-negative and below 2^53.
 */
export class ProtoWriter {
  private readonly parts: Uint8Array[] = [];
  private size = 0;

  private push(b: Uint8Array): this {
    this.parts.push(b);
    this.size += b.length;
    return this;
  }

  private varint(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`protobuf varint must be a non-negative safe integer, got ${v}`);
    const out: number[] = [];
    while (v >= 0x80) {
      out.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    out.push(v);
    return this.push(Uint8Array.from(out));
  }

  private key(field: number, wireType: number): this {
    return this.varint(field * 8 + wireType);
  }

  uint(field: number, v: number): this {
    return this.key(field, 0).varint(v);
  }

  double(field: number, v: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    return this.key(field, 1).push(b);
  }

  float(field: number, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    return this.key(field, 5).push(b);
  }

  bytes(field: number, v: Uint8Array): this {
    return this.key(field, 2).varint(v.length).push(v);
  }

  string(field: number, v: string): this {
    return this.bytes(field, new TextEncoder().encode(v));
  }

  message(field: number, m: ProtoWriter): this {
    return this.bytes(field, m.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}
