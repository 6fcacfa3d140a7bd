/**
 * ESRGAN-family (RRDBNet) weights in any of the three key layouts people share, renamed to one layout and
 * measured: the original ESRGAN release (`model.0`, `model.1.sub.N.RDBk.convj.0`, `model.3`, …), the later
 * ESRGAN repository (`conv_first`, `RRDB_trunk.N.RDBk.convj`, `trunk_conv`, `upconvN`, `HRconv`) and
 * BasicSR / Real-ESRGAN (`conv_first`, `body.N.rdbk.convj`, `conv_body`, `conv_upN`, `conv_hr`).
 * Canonical names are BasicSR's. Real-ESRGAN's ×2 and ×1 models pixel-unshuffle their input (by 2 or 4)
 * before the same ×4 trunk; that shows as 4 or 16 times the output's channels at `conv_first`.
 */
import { UserError } from '../util/errors.ts';

export interface RrdbArch {
  /** Image channels in and out (3 for every shared model). */
  channels: number;
  /** Feature width (`nf`, 64 in the released models). */
  features: number;
  /** Growth channels of each dense block (`gc`, 32). */
  growth: number;
  /** RRDB blocks (`nb`, 23). */
  blocks: number;
  /** Nearest ×2 + conv stages after the trunk. */
  upsamples: number;
  /** Pixel-unshuffle factor applied to the input (1, 2 or 4). */
  unshuffle: number;
  /** Output size / input size. */
  scale: number;
}

export interface RrdbWeights {
  arch: RrdbArch;
  /** Canonical key (without `.weight`/`.bias`) → source key prefix. */
  keys: Map<string, string>;
}

type Shapes = ReadonlyMap<string, readonly number[]>;

/** The leading wrapper some conversions keep (`params_ema.`, `params.`, `module.`). */
function stripWrapper(names: readonly string[]): string {
  for (const p of ['params_ema.', 'params.', 'module.']) if (names.length > 0 && names.every((n) => n.startsWith(p))) return p;
  return '';
}

function count(names: readonly string[], re: RegExp): number {
  let n = 0;
  for (const k of names) {
    const m = re.exec(k);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

/** Maps `file`'s tensor names to canonical RRDBNet names and infers the architecture; `what` names the file in errors. */
export function readRrdbLayout(shapes: Shapes, what: string): RrdbWeights {
  const all = [...shapes.keys()];
  const wrap = stripWrapper(all);
  const names = all.map((n) => n.slice(wrap.length));
  const has = (k: string) => shapes.has(wrap + k + '.weight');
  const keys = new Map<string, string>();
  const put = (canon: string, src: string) => {
    if (!has(src)) throw new UserError(`${what}: ESRGAN weights lack '${wrap}${src}.weight' (layout looks like ${layout})`);
    keys.set(canon, wrap + src);
  };
  let layout: string;
  let blocks: number;
  let upsamples: number;
  const rdb = (i: number, k: number, j: number) => `body.${i}.rdb${k}.conv${j}`;
  if (has('body.0.rdb1.conv1')) {
    layout = 'BasicSR / Real-ESRGAN (body.N)';
    blocks = count(names, /^body\.(\d+)\.rdb1\.conv1\.weight$/);
    upsamples = count(names, /^conv_up(\d+)\.weight$/) - 1;
    put('conv_first', 'conv_first');
    for (let i = 0; i < blocks; i++) for (let k = 1; k <= 3; k++) for (let j = 1; j <= 5; j++) put(rdb(i, k, j), rdb(i, k, j));
    put('conv_body', 'conv_body');
    for (let u = 1; u <= upsamples; u++) put(`conv_up${u}`, `conv_up${u}`);
    put('conv_hr', 'conv_hr');
    put('conv_last', 'conv_last');
  } else if (has('RRDB_trunk.0.RDB1.conv1')) {
    layout = 'ESRGAN (RRDB_trunk.N)';
    blocks = count(names, /^RRDB_trunk\.(\d+)\.RDB1\.conv1\.weight$/);
    upsamples = count(names, /^upconv(\d+)\.weight$/) - 1;
    put('conv_first', 'conv_first');
    for (let i = 0; i < blocks; i++) for (let k = 1; k <= 3; k++) for (let j = 1; j <= 5; j++) put(rdb(i, k, j), `RRDB_trunk.${i}.RDB${k}.conv${j}`);
    put('conv_body', 'trunk_conv');
    for (let u = 1; u <= upsamples; u++) put(`conv_up${u}`, `upconv${u}`);
    put('conv_hr', 'HRconv');
    put('conv_last', 'conv_last');
  } else if (has('model.1.sub.0.RDB1.conv1.0')) {
    // The original release is one nn.Sequential: 0 first conv, 1 the trunk (its last entry the trunk conv),
    // then per ×2 stage [Upsample, conv, LeakyReLU], then HR conv, LeakyReLU, last conv.
    layout = 'original ESRGAN (model.N)';
    blocks = count(names, /^model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight$/);
    const top = count(names, /^model\.(\d+)\.weight$/) - 1;
    upsamples = (top - 4) / 3;
    if (!Number.isInteger(upsamples) || upsamples < 0) throw new UserError(`${what}: ESRGAN weights end at 'model.${top}', which no RRDBNet upsampler layout gives`);
    put('conv_first', 'model.0');
    for (let i = 0; i < blocks; i++) for (let k = 1; k <= 3; k++) for (let j = 1; j <= 5; j++) put(rdb(i, k, j), `model.1.sub.${i}.RDB${k}.conv${j}.0`);
    put('conv_body', `model.1.sub.${blocks}`);
    for (let u = 1; u <= upsamples; u++) put(`conv_up${u}`, `model.${3 * u}`);
    put('conv_hr', `model.${3 * upsamples + 2}`);
    put('conv_last', `model.${3 * upsamples + 4}`);
  } else {
    throw new UserError(`${what}: not ESRGAN/RRDBNet weights (no 'conv_first' + 'body.0.rdb1', 'RRDB_trunk.0.RDB1' or 'model.1.sub.0.RDB1' tensors)`);
  }
  if (blocks < 1) throw new UserError(`${what}: ESRGAN weights have no RRDB blocks`);
  const shape = (canon: string) => shapes.get(keys.get(canon)! + '.weight')!;
  const [features, inCh] = shape('conv_first') as [number, number];
  const channels = shape('conv_last')[0]!;
  const growth = shape('body.0.rdb1.conv1')[0]!;
  const ratio = inCh / channels;
  const unshuffle = ratio === 1 ? 1 : ratio === 4 ? 2 : ratio === 16 ? 4 : 0;
  if (!unshuffle) throw new UserError(`${what}: conv_first takes ${inCh} channels for ${channels} out; expected ${channels}, ${4 * channels} or ${16 * channels}`);
  // Every conv is 3×3 with the widths the dense blocks imply; a mismatch would only show deep inside ONNX Runtime.
  for (const [canon, src] of keys) {
    const s = shapes.get(src + '.weight')!;
    if (s.length !== 4 || s[2] !== 3 || s[3] !== 3) throw new UserError(`${what}: '${src}.weight' is [${s.join(', ')}], expected a 3×3 conv`);
    const m = /^body\.\d+\.rdb\d\.conv(\d)$/.exec(canon);
    const want = m ? [Number(m[1]) === 5 ? features : growth, features + (Number(m[1]) - 1) * growth] : canon === 'conv_first' ? [features, inCh] : canon === 'conv_last' ? [channels, features] : [features, features];
    if (s[0] !== want[0] || s[1] !== want[1]) throw new UserError(`${what}: '${src}.weight' is [${s.join(', ')}], expected [${want.join(', ')}, 3, 3]`);
  }
  return { arch: { channels, features, growth, blocks, upsamples, unshuffle, scale: 2 ** upsamples / unshuffle }, keys };
}
