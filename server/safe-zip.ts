/**
 * Reads an uploaded zip without trusting it: the central directory is parsed here to see what fflate does not
 * report (symlinks, encryption, duplicate names) and to check declared sizes against the limits before
 * anything is inflated; fflate then inflates each accepted entry into a buffer of its declared size, so a
 * zip bomb cannot grow past the limits, and every result is checked against its size and CRC-32.
 */
import { crc32 } from 'node:zlib';
import { unzipSync } from 'fflate';

export interface ZipEntry {
  /** Name as stored (UTF-8 when flagged, else Latin-1, as fflate decodes it). */
  name: string;
  isDirectory: boolean;
  isSymlink: boolean;
  encrypted: boolean;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
}

export class ZipFormatError extends Error {}

const EOCD = 0x06054b50;
const CENTRAL = 0x02014b50;
const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const S_IFDIR = 0o040000;
const HOST_UNIX = 3;
const HOST_OSX = 19;

function findEocd(buf: Uint8Array, view: DataView): number {
  const min = Math.max(0, buf.length - 22 - 0xffff);
  for (let i = buf.length - 22; i >= min; i--) if (view.getUint32(i, true) === EOCD) return i;
  throw new ZipFormatError('not a zip file (no end-of-central-directory record)');
}

/** Every entry of the central directory. */
export function listZipEntries(buf: Uint8Array): ZipEntry[] {
  if (buf.length < 22) throw new ZipFormatError('not a zip file (too short)');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const e = findEocd(buf, view);
  if (view.getUint16(e + 4, true) !== 0 || view.getUint16(e + 6, true) !== 0) throw new ZipFormatError('multi-part zip archives are not supported');
  const count = view.getUint16(e + 10, true);
  const offset = view.getUint32(e + 16, true);
  if (count === 0xffff || offset === 0xffffffff) throw new ZipFormatError('ZIP64 archives are not supported; make a plain zip (under 4 GiB, under 65535 files)');
  const out: ZipEntry[] = [];
  let p = offset;
  const decoder = new TextDecoder('utf-8', { fatal: true });
  for (let i = 0; i < count; i++) {
    if (p + 46 > buf.length || view.getUint32(p, true) !== CENTRAL) throw new ZipFormatError('corrupt zip central directory');
    const madeBy = view.getUint16(p + 4, true);
    const flags = view.getUint16(p + 8, true);
    const method = view.getUint16(p + 10, true);
    const crc = view.getUint32(p + 16, true);
    const compressedSize = view.getUint32(p + 20, true);
    const size = view.getUint32(p + 24, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    const external = view.getUint32(p + 38, true);
    if (p + 46 + nameLen > buf.length) throw new ZipFormatError('corrupt zip central directory');
    const raw = buf.subarray(p + 46, p + 46 + nameLen);
    let name: string;
    if (flags & 0x800) {
      try {
        name = decoder.decode(raw);
      } catch {
        throw new ZipFormatError('a zip entry name is not valid UTF-8');
      }
    } else name = Buffer.from(raw).toString('latin1');
    if (compressedSize === 0xffffffff || size === 0xffffffff) throw new ZipFormatError('ZIP64 archives are not supported');
    const host = madeBy >> 8;
    const mode = host === HOST_UNIX || host === HOST_OSX ? external >>> 16 : 0;
    out.push({
      name,
      isDirectory: name.endsWith('/') || (mode & S_IFMT) === S_IFDIR || (host === 0 && (external & 0x10) !== 0),
      isSymlink: (mode & S_IFMT) === S_IFLNK,
      encrypted: (flags & 1) !== 0,
      method,
      crc,
      compressedSize,
      size,
    });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/**
 * Inflates the entries named in `accepted` (already checked by the caller: names, sizes, kinds). Throws
 * ZipFormatError when an entry's content does not match its declared size and CRC.
 */
export function extractZipEntries(buf: Uint8Array, accepted: readonly ZipEntry[]): Map<string, Uint8Array> {
  const want = new Map(accepted.map((e) => [e.name, e]));
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(buf, { filter: (f) => want.get(f.name)?.size === f.originalSize });
  } catch (e) {
    throw new ZipFormatError(`cannot read the zip: ${(e as Error).message}`);
  }
  const out = new Map<string, Uint8Array>();
  for (const [name, entry] of want) {
    const data = Object.hasOwn(files, name) ? files[name] : undefined;
    if (!data || data.length !== entry.size || crc32(data) !== entry.crc) throw new ZipFormatError(`zip entry ${name} is corrupt (size or CRC-32 does not match)`);
    out.set(name, data);
  }
  return out;
}
