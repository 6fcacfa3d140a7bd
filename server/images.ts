/**
 * Images in and out of the API. In: base64 (a `data:` prefix is stripped), or an http(s) URL only when the
 * operator enabled it, and never to loopback/private/link-local/reserved addresses (checked on every
 * address the name resolves to, at connect time, so DNS tricks cannot slip through). Out: the engine's
 * encoding with the infotext (engine/image/encode.ts), base64 without a data: prefix. The picture math
 * (resize modes, masks, grids) is the engine's (engine/image/); here it is only admitted by the pixel gate.
 * Error details are A1111's (`Invalid encoded image`, `Requests not allowed`, …).
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import http from 'node:http';
import https from 'node:https';
import sharp from 'sharp';
import { encodeImage as encodeImagePixels, type EncodeOptions, type SamplesFormat } from '../engine/image/encode.ts';
import { gridShape, imageGrid } from '../engine/image/grid.ts';
import { prepareMask as prepareMaskPixels } from '../engine/image/mask.ts';
import { gated } from '../engine/image/pixel-gate.ts';
import { resizeImageOffThread } from '../engine/image/resize-off-thread.ts';
import type { RawImage } from './backend.ts';
import { HttpError } from './errors.ts';

export interface ImagePolicy {
  /** A1111 option `api_enable_requests`. */
  allowUrls: boolean;
  /** A1111 option `api_forbid_local_requests`. */
  forbidLocal: boolean;
  userAgent: string;
  /** Largest decoded image accepted, in pixels. */
  maxPixels: number;
  /** Largest download accepted, in bytes. */
  maxDownloadBytes: number;
  /** Test seam: extra addresses to treat as public (never set in production). */
  allowAddresses?: (ip: string) => boolean;
}

const nonGlobal = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) nonGlobal.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  // No ::ffff:0:0/96 here: BlockList would then match every IPv4 address; embedded IPv4 addresses are unwrapped below.
  ['::', 128], ['::1', 128], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['100::', 64],
  ['2001::', 23], ['2001:db8::', 32], ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const) nonGlobal.addSubnet(net, bits, 'ipv6');

/** The eight 16-bit groups of an IPv6 address (a trailing dotted IPv4 part allowed), or null. */
function ipv6Groups(ip: string): number[] | null {
  let text = ip.toLowerCase().replace(/%.*$/, '');
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, dotted.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const part = (h: string) => (h === '' ? [] : h.split(':').map((x) => parseInt(x, 16)));
  const head = part(halves[0]!);
  const tail = halves.length === 2 ? part(halves[1]!) : [];
  const fill = 8 - head.length - tail.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) return null;
  const groups = [...head, ...Array<number>(fill).fill(0), ...tail];
  return groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : null;
}

/**
 * True for addresses on the public internet (A1111's `ipaddress.is_global`). IPv6 forms that carry an IPv4
 * address in their last 32 bits — mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d` (`::7f00:1`), translated
 * `::ffff:0:a.b.c.d` — are judged by that IPv4 address, so `::7f00:1` cannot reach 127.0.0.1.
 */
export function isGlobalAddress(ip: string): boolean {
  const v = isIP(ip);
  if (v === 0) return false;
  if (v === 6) {
    const g = ipv6Groups(ip);
    if (!g) return false;
    const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
    const embedded =
      (zeros(0, 5) && (g[5] === 0xffff || g[5] === 0)) || // ::ffff:0:0/96 mapped, ::/96 compatible
      (zeros(0, 4) && g[4] === 0xffff && g[5] === 0); // ::ffff:0:0:0/96 translated
    if (embedded && !(zeros(0, 6) && g[6] === 0 && g[7]! <= 1)) {
      return isGlobalAddress(`${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`);
    }
  }
  return !nonGlobal.check(ip, v === 4 ? 'ipv4' : 'ipv6');
}

const LOCAL = 'Request to local resource not allowed';

async function fetchImage(url: URL, policy: ImagePolicy): Promise<Buffer> {
  const allowed = (ip: string) => !policy.forbidLocal || isGlobalAddress(ip) || (policy.allowAddresses?.(ip) ?? false);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) && !allowed(host)) throw new HttpError(403, LOCAL);
  // Node skips `lookup` for IP literals (checked above); for names, every resolved address is checked here,
  // on the connection actually made, so a name cannot resolve to a public address first and a private one later.
  const lookup = (hostname: string, options: object, cb: (...a: unknown[]) => void): void => {
    dnsLookup(hostname, { ...options, all: true }, (err, addrs: LookupAddress[]) => {
      if (err) return cb(err);
      const bad = addrs.find((a) => !allowed(a.address));
      if (bad || addrs.length === 0) return cb(Object.assign(new Error(LOCAL), { code: 'ELOCAL' }));
      if ((options as { all?: boolean }).all) cb(null, addrs);
      else cb(null, addrs[0]!.address, addrs[0]!.family);
    });
  };
  const mod = url.protocol === 'https:' ? https : http;
  return await new Promise<Buffer>((resolve, reject) => {
    const req = mod.get(url, { lookup: lookup as never, headers: policy.userAgent ? { 'User-Agent': policy.userAgent } : {}, timeout: 30_000 }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return reject(new HttpError(422, 'Invalid image url'));
      }
      const parts: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > policy.maxDownloadBytes) {
          req.destroy();
          reject(new HttpError(413, `Invalid image url: larger than ${policy.maxDownloadBytes} bytes`));
        } else parts.push(c);
      });
      res.on('end', () => resolve(Buffer.concat(parts)));
      res.on('error', () => reject(new HttpError(422, 'Invalid image url')));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ELOCAL' ? new HttpError(403, LOCAL) : new HttpError(422, 'Invalid image url')));
  });
}

/** Decodes an API image field to encoded image bytes (PNG/JPEG/WebP…), checked to be a readable image. */
export async function decodeImageInput(input: string, policy: ImagePolicy): Promise<Buffer> {
  const s = input.trim();
  let bytes: Buffer;
  if (/^https?:\/\//i.test(s)) {
    if (!policy.allowUrls) throw new HttpError(403, 'Requests not allowed');
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      throw new HttpError(422, 'Invalid image url');
    }
    bytes = await fetchImage(url, policy);
  } else {
    const b64 = s.startsWith('data:') ? s.slice(s.indexOf(',') + 1) : s;
    bytes = Buffer.from(b64, 'base64');
  }
  const format = rasterFormat(bytes);
  // SVG, PDF and the other vector or container formats libvips reads can cost minutes and gigabytes to
  // render from a few hundred bytes; A1111 (PIL) takes raster images only, and so does this server.
  if (!format) throw new HttpError(422, 'Invalid encoded image: not a PNG, JPEG, WebP, GIF, TIFF, AVIF or HEIF image');
  let meta: sharp.Metadata;
  try {
    // Only the header is read here, so a decompression bomb is refused before it is inflated.
    meta = await sharp(bytes, { limitInputPixels: policy.maxPixels }).metadata();
  } catch (e) {
    if (/pixel limit/i.test((e as Error).message ?? '')) throw new HttpError(422, `Invalid encoded image: larger than ${policy.maxPixels} pixels`);
    throw new HttpError(422, 'Invalid encoded image');
  }
  if (!meta.width || !meta.height) throw new HttpError(422, 'Invalid encoded image');
  if (meta.width * meta.height > policy.maxPixels) throw new HttpError(422, `Invalid encoded image: ${meta.width}×${meta.height} is larger than ${policy.maxPixels} pixels`);
  return bytes;
}

/** The raster format the bytes start like (magic numbers), or null. */
function rasterFormat(b: Buffer): string | null {
  const ascii = (from: number, to: number) => b.subarray(from, to).toString('latin1');
  if (b.length >= 8 && b[0] === 0x89 && ascii(1, 4) === 'PNG') return 'png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
  if (b.length >= 6 && (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a')) return 'gif';
  if (b.length >= 4 && (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*')) return 'tiff';
  if (b.length >= 12 && ascii(4, 8) === 'ftyp' && /^(avif|avis|heic|heix|hevc|mif1|msf1)$/.test(ascii(8, 12))) return 'heif';
  return null;
}

/** Decodes to 8-bit pixels at its own size; a truncated or corrupt image is a 422. */
export async function toRaw(bytes: Buffer, channels: 1 | 3, maxPixels: number): Promise<RawImage> {
  return gated(bytes, () => decodeRaw(bytes, channels, maxPixels));
}

async function decodeRaw(bytes: Buffer, channels: 1 | 3, maxPixels: number): Promise<RawImage> {
  try {
    let img = sharp(bytes, { limitInputPixels: maxPixels, failOn: 'truncated' }).rotate();
    img = channels === 1 ? img.grayscale() : img.removeAlpha().toColourspace('srgb');
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, channels: info.channels as 1 | 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  } catch (e) {
    throw new HttpError(422, `Invalid encoded image: it cannot be decoded (${(e as Error).message.split('\n')[0]})`);
  }
}

/**
 * A1111 img2img resize modes (engine/image/resize-mode.ts): 0 just resize, 1 crop and resize, 2 resize and
 * fill; 3 (latent upscale) is done here as 0.
 */
export async function resizeForImg2img(img: RawImage, width: number, height: number, mode: number): Promise<RawImage> {
  if (img.width === width && img.height === height) return img;
  return gated(img.width * img.height + 2 * width * height, async () => ({ ...(await resizeImageOffThread(mode === 1 || mode === 2 ? mode : 0, img, width, height)), channels: img.channels }));
}

/** Inverts and blurs a 1-channel mask (engine/image/mask.ts), admitted by the pixel gate. */
export function prepareMask(mask: RawImage, invert: boolean, blurX: number, blurY: number): Promise<RawImage> {
  return gated(2 * mask.width * mask.height, () => prepareMaskPixels(mask, invert, blurX, blurY));
}

export type { SamplesFormat };

export function checkSamplesFormat(f: unknown): SamplesFormat {
  const v = String(f).toLowerCase();
  if (v === 'png' || v === 'jpg' || v === 'jpeg' || v === 'webp') return v;
  throw new HttpError(422, 'Invalid image format');
}

/** Encodes pixels with the infotext (if any) as A1111 saves them (engine/image/encode.ts), admitted by the pixel gate. */
export function encodeImage(img: RawImage, format: SamplesFormat, infotext: string | null, opts: EncodeOptions = {}): Promise<Buffer> {
  return gated(img.width * img.height, () => encodeImagePixels(img, format, infotext, opts));
}

/** A1111 `image_grid` (engine/image/grid.ts), admitted by the pixel gate. */
export function makeGrid(images: RawImage[]): Promise<RawImage> {
  const first = images[0];
  const { rows, cols } = gridShape(images.length);
  return gated(3 * rows * cols * (first?.width ?? 0) * (first?.height ?? 0), () => imageGrid(images));
}
