/**
 * The infotext in JPEG and WebP files, where A1111 puts it: EXIF UserComment (tag 0x9286 in the Exif IFD),
 * prefixed `UNICODE\0` and encoded UTF-16 big-endian, as piexif writes it. libvips can only write ASCII
 * there, so the EXIF block is built and inserted here.
 */

function tiffWithUserComment(text: string): Buffer {
  const body = Buffer.from(text, 'utf16le').swap16(); // UTF-16BE
  const comment = Buffer.concat([Buffer.from('UNICODE\0', 'latin1'), body]);
  const head = Buffer.alloc(44);
  head.write('MM', 0, 'latin1');
  head.writeUInt16BE(42, 2);
  head.writeUInt32BE(8, 4); // IFD0 offset
  head.writeUInt16BE(1, 8); // IFD0: one entry
  head.writeUInt16BE(0x8769, 10); // ExifIFDPointer
  head.writeUInt16BE(4, 12); // LONG
  head.writeUInt32BE(1, 14);
  head.writeUInt32BE(26, 18); // Exif IFD offset
  head.writeUInt32BE(0, 22); // no next IFD
  head.writeUInt16BE(1, 26); // Exif IFD: one entry
  head.writeUInt16BE(0x9286, 28); // UserComment
  head.writeUInt16BE(7, 30); // UNDEFINED
  head.writeUInt32BE(comment.length, 32);
  head.writeUInt32BE(44, 36); // value offset
  head.writeUInt32BE(0, 40);
  return Buffer.concat([head, comment]);
}

/** Inserts an APP1 Exif segment after SOI (and after a JFIF APP0). Files whose comment would not fit in one segment are returned unchanged. */
export function jpegWithUserComment(jpeg: Buffer, text: string): Buffer {
  const payload = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiffWithUserComment(text)]);
  if (payload.length + 2 > 0xffff || jpeg[0] !== 0xff || jpeg[1] !== 0xd8) return jpeg;
  let at = 2;
  if (jpeg[2] === 0xff && jpeg[3] === 0xe0) at = 4 + jpeg.readUInt16BE(4);
  const seg = Buffer.alloc(4);
  seg[0] = 0xff;
  seg[1] = 0xe1;
  seg.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([jpeg.subarray(0, at), seg, payload, jpeg.subarray(at)]);
}

function riffChunk(type: string, data: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.write(type, 0, 'latin1');
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data, data.length % 2 ? Buffer.alloc(1) : Buffer.alloc(0)]);
}

/** Adds an EXIF chunk to a WebP (upgrading a simple file to the extended VP8X layout). */
export function webpWithUserComment(webp: Buffer, text: string, width: number, height: number): Buffer {
  if (webp.toString('latin1', 0, 4) !== 'RIFF' || webp.toString('latin1', 8, 12) !== 'WEBP') return webp;
  const chunks: { type: string; data: Buffer }[] = [];
  for (let p = 12; p + 8 <= webp.length; ) {
    const type = webp.toString('latin1', p, p + 4);
    const len = webp.readUInt32LE(p + 4);
    chunks.push({ type, data: webp.subarray(p + 8, p + 8 + len) });
    p += 8 + len + (len % 2);
  }
  let vp8x = chunks.find((c) => c.type === 'VP8X');
  if (!vp8x) {
    const d = Buffer.alloc(10);
    d.writeUIntLE(width - 1, 4, 3);
    d.writeUIntLE(height - 1, 7, 3);
    vp8x = { type: 'VP8X', data: d };
    chunks.unshift(vp8x);
  } else vp8x.data = Buffer.from(vp8x.data);
  vp8x.data[0] = vp8x.data[0]! | 0x08; // EXIF present
  const rest = chunks.filter((c) => c.type !== 'EXIF');
  const body = Buffer.concat([Buffer.from('WEBP', 'latin1'), ...rest.map((c) => riffChunk(c.type, c.data)), riffChunk('EXIF', tiffWithUserComment(text))]);
  const head = Buffer.alloc(8);
  head.write('RIFF', 0, 'latin1');
  head.writeUInt32LE(body.length, 4);
  return Buffer.concat([head, body]);
}

/** The UserComment of a raw EXIF block (as sharp's `metadata().exif` gives it), or null. */
export function readUserComment(exif: Buffer): string | null {
  let t = exif;
  if (t.toString('latin1', 0, 6) === 'Exif\0\0') t = t.subarray(6);
  if (t.length < 8) return null;
  const le = t.toString('latin1', 0, 2) === 'II';
  const u16 = (o: number) => (le ? t.readUInt16LE(o) : t.readUInt16BE(o));
  const u32 = (o: number) => (le ? t.readUInt32LE(o) : t.readUInt32BE(o));
  const findTag = (ifd: number, tag: number): { count: number; at: number } | null => {
    if (ifd + 2 > t.length) return null;
    const n = u16(ifd);
    for (let i = 0; i < n; i++) {
      const e = ifd + 2 + i * 12;
      if (e + 12 > t.length) return null;
      if (u16(e) === tag) {
        const count = u32(e + 4);
        return { count, at: count <= 4 ? e + 8 : u32(e + 8) };
      }
    }
    return null;
  };
  const exifPtr = findTag(u32(4), 0x8769);
  if (!exifPtr) return null;
  const uc = findTag(u32(exifPtr.at), 0x9286);
  if (!uc || uc.at + uc.count > t.length || uc.count < 8) return null;
  const prefix = t.toString('latin1', uc.at, uc.at + 8);
  const body = Buffer.from(t.subarray(uc.at + 8, uc.at + uc.count));
  if (prefix === 'UNICODE\0') {
    // piexif writes big-endian; some writers follow the TIFF byte order. Prefer BE unless LE reads as fewer odd characters.
    const even = body.length % 2 ? body.subarray(0, body.length - 1) : body;
    const be = Buffer.from(even).swap16().toString('utf16le');
    const lef = even.toString('utf16le');
    const odd = (s: string) => [...s].filter((c) => c.charCodeAt(0) > 0x2fff).length;
    return odd(lef) < odd(be) ? lef : be;
  }
  return body.toString(prefix.startsWith('ASCII') ? 'latin1' : 'utf8').replace(/\0+$/, '');
}
