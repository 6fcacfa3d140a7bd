/**
 * Opens a Stable Diffusion checkpoint — an LDM single-file `.safetensors` or a diffusers folder — and presents
 * it in one namespace: LDM keys (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`).
 * Weights are read lazily, tensor by tensor, and converted to float32, so a 4 GB file never sits in one Buffer.
 */
import { stat, readdir } from 'node:fs/promises';
import { extname, join, basename } from 'node:path';
import { SafetensorsFile } from '../safetensors/index.ts';
import { UserError } from '../util/errors.ts';
import { inferSdArch, type SdArch } from './arch.ts';
import { openDiffusersFolder, type DiffusersHints } from './diffusers-folder.ts';
import { diffusersToLdmTarget, inferVaeLayout, ldmShapeFor } from './keymap.ts';
import { readSidecar, type SidecarConfig } from './sidecar.ts';
import { applySidecar } from './sidecar-arch.ts';

export interface Weight {
  shape: number[];
  data: Float32Array;
}
/** Model weights by LDM key, float32. The LoRA merger patches these in place. */
export type WeightMap = Map<string, Weight>;
/** A weight kept as the file's float16 bits. */
export interface HalfWeight {
  shape: number[];
  data: Uint16Array;
}

interface Source {
  file: SafetensorsFile;
  key: string;
  /** Shape in the LDM layout (may differ from the file's, e.g. diffusers VAE attention Linear vs 1×1 conv). */
  shape: number[];
}

export class Checkpoint {
  private constructor(
    readonly path: string,
    readonly arch: SdArch,
    private readonly sources: Map<string, Source>,
    private readonly files: SafetensorsFile[],
    /** Tensors of a diffusers folder's weight files that have no place in the models ("part: name"). */
    readonly unmapped: string[] = [],
  ) {}

  keys(): string[] {
    return [...this.sources.keys()];
  }

  has(key: string): boolean {
    return this.sources.has(key);
  }

  shape(key: string): number[] {
    return this.source(key).shape;
  }

  async read(key: string): Promise<Weight> {
    const s = this.source(key);
    return { shape: s.shape, data: await s.file.readFloat32(s.key) };
  }

  /** The tensor's float16 bits when the file stores it as F16, else undefined (nothing is rounded). */
  async readHalf(key: string): Promise<HalfWeight | undefined> {
    const s = this.source(key);
    if (s.file.info(s.key).dtype !== 'F16') return undefined;
    return { shape: s.shape, data: (await s.file.read(s.key)).data as Uint16Array };
  }

  /** Reads every tensor whose key starts with one of the prefixes (and that `keep` keeps). */
  async readAll(prefixes: string[], keep: (key: string) => boolean = () => true): Promise<WeightMap> {
    const out: WeightMap = new Map();
    for (const k of this.sources.keys()) {
      if (prefixes.some((p) => k.startsWith(p)) && keep(k)) out.set(k, await this.read(k));
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(this.files.map((f) => f.close()));
  }

  /** The files the weights come from (the single file, a folder's weight files, a separate VAE). */
  filePaths(): string[] {
    return this.files.map((f) => f.path);
  }

  private source(key: string): Source {
    const s = this.sources.get(key);
    if (!s) throw new UserError(`checkpoint ${this.path} has no tensor '${key}'`);
    return s;
  }

  /**
   * `textEncoderHeads` overrides the text tower's head count, which a single file cannot record (the family
   * rule of 64-wide heads fits every released tower, not necessarily a custom one).
   */
  static async open(path: string, opts: { vae?: string; textEncoderHeads?: number } = {}): Promise<Checkpoint> {
    const st = await stat(path).catch(() => {
      throw new UserError(`checkpoint not found: ${path}`);
    });
    const sources = new Map<string, Source>();
    const files: SafetensorsFile[] = [];
    let hints: DiffusersHints = {};
    let sidecar: SidecarConfig | undefined;
    if (st.isDirectory()) {
      hints = await openDiffusersFolder(path, sources, files);
    } else {
      sidecar = await readSidecar(path);
      refuseUnsafe(path);
      const f = await SafetensorsFile.open(path);
      files.push(f);
      for (const info of f.tensors.values()) sources.set(info.name, { file: f, key: info.name, shape: info.shape });
    }
    if (opts.vae) {
      refuseUnsafe(opts.vae);
      const f = await SafetensorsFile.open(opts.vae);
      files.push(f);
      // A standalone VAE file has bare LDM VAE keys (encoder.*, decoder.*, quant_conv.*), the full prefix, or
      // diffusers names (e.g. the SDXL fp16-fix VAE as published: `decoder.up_blocks.*`).
      const diffusers = f.names().some((n) => /^(encoder\.down_blocks|decoder\.up_blocks)\./.test(n));
      const layout = diffusers ? inferVaeLayout(f.names()) : undefined;
      for (const info of f.tensors.values()) {
        if (layout) {
          const t = diffusersToLdmTarget('vae', info.name, layout);
          if (t) sources.set(t.key, { file: f, key: info.name, shape: ldmShapeFor(t, info.shape) });
          continue;
        }
        const k = info.name.startsWith('first_stage_model.') ? info.name : `first_stage_model.${info.name}`;
        if (/^first_stage_model\.(encoder|decoder|quant_conv|post_quant_conv)\./.test(k)) {
          sources.set(k, { file: f, key: info.name, shape: info.shape });
        }
      }
    }
    try {
      let arch = applyHints(inferSdArch((k) => sources.get(k)?.shape), hints);
      if (sidecar) arch = applySidecar(arch, sidecar);
      if (opts.textEncoderHeads !== undefined) arch.textEncoder.heads = opts.textEncoderHeads;
      const { width, heads } = arch.textEncoder;
      if (!Number.isInteger(heads) || heads < 1 || width % heads !== 0) {
        throw new UserError(`text encoder: ${width} channels do not split into ${heads} heads`);
      }
      return new Checkpoint(path, arch, sources, files, hints.unmapped);
    } catch (e) {
      await Promise.all(files.map((f) => f.close()));
      throw e;
    }
  }
}

/** The family of the checkpoint at `path` from its headers alone (no weights read), or undefined when it is not one. */
export async function checkpointFamily(path: string): Promise<SdArch['family'] | undefined> {
  const ck = await Checkpoint.open(path).catch(() => undefined);
  if (!ck) return undefined;
  await ck.close();
  return ck.arch.family;
}

/** Pickled checkpoints can run arbitrary code when loaded; this project never unpickles. */
export function refuseUnsafe(path: string): void {
  const ext = extname(path).toLowerCase();
  if (ext === '.ckpt' || ext === '.pt' || ext === '.pth' || ext === '.bin') {
    throw new UserError(
      `${basename(path)}: ${ext} files are Python pickles, which can run arbitrary code when opened, so lora-scripts refuses them. ` +
        'Convert it to .safetensors once with a trusted tool (for example A1111\'s Checkpoint Merger with "safetensors" selected, ' +
        'or `python -c "import torch,safetensors.torch as s; s.save_file(torch.load(\'in.ckpt\')[\'state_dict\'], \'out.safetensors\')"`).',
    );
  }
}

/** Model files in a folder, for listings: `.safetensors` only, recursively, sorted. */
export async function listModelFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.toLowerCase().endsWith('.safetensors')) out.push(p);
    }
  };
  await walk(dir);
  return out.sort();
}

/** Config files know what shapes cannot: head counts, activation, epsilons, the VAE scale. */
function applyHints(arch: SdArch, h: DiffusersHints): SdArch {
  const levels = arch.unet.channelMult.length;
  if (h.unetHeads !== undefined) {
    const heads = Array.isArray(h.unetHeads) ? h.unetHeads : Array.from({ length: levels }, () => h.unetHeads as number);
    arch.unet.heads = { numHeads: heads };
  }
  if (h.normEps !== undefined) arch.unet.normEps = h.normEps;
  if (h.textHeads !== undefined) arch.textEncoder.heads = h.textHeads;
  if (h.textActivation) {
    arch.textEncoder.activation = h.textActivation;
    if (h.textActivation === 'gelu' && arch.family === 'sd1') arch.family = 'sd2';
  }
  if (h.textLayerNormEps !== undefined) arch.textEncoder.layerNormEps = h.textLayerNormEps;
  const te2 = arch.textEncoder2;
  if (te2) {
    if (h.text2Heads !== undefined) te2.heads = h.text2Heads;
    if (h.text2Activation) te2.activation = h.text2Activation;
    if (h.text2LayerNormEps !== undefined) te2.layerNormEps = h.text2LayerNormEps;
  }
  if (h.vaeScalingFactor !== undefined) arch.vae.scalingFactor = h.vaeScalingFactor;
  if (arch.family === 'sd2' && h.unetHeads === undefined) arch.unet.heads = { headDim: 64 };
  return arch;
}
