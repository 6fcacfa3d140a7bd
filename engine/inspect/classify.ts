/**
 * Says what a safetensors file is from its tensor names and shapes (and, for LoRAs, its alphas):
 * an SD checkpoint, a diffusers model part, a LoRA in one of its formats, LLM weights, or plain tensors.
 */
import type { SafetensorsFile } from '../safetensors/index.ts';
import {
  diffusersAlphas, kohyaStyleModules, peftConfigAlphas, peftModules, summarise, type LoraSummary,
} from './lora-summary.ts';

export type FileKind =
  | 'sd-checkpoint'
  | 'diffusers-unet'
  | 'diffusers-vae'
  | 'diffusers-text-encoder'
  | 'kohya-lora'
  | 'diffusers-lora'
  | 'peft-lora'
  | 'lycoris'
  | 'llm'
  | 'tensors';

export interface Classification {
  kind: FileKind;
  /** Human-readable kind, e.g. "SD checkpoint (LDM single file)". */
  label: string;
  /** Short facts that support the verdict (architecture, parts, sizes read from shapes). */
  details: string[];
  lora?: LoraSummary;
}

const LYCORIS_SUFFIX = /\.(hada_w[12]_[ab]|hada_t[12]|lokr_w[12](_[ab])?|lokr_t2)$/;
const KOHYA_KEY = /^lora_(?:prior_)?(?:unet|te\d?)_[^.]+\.(lora_down\.weight|lora_up\.weight|alpha|lora_mid\.weight|dora_scale)$/;
const PEFT_KEY = /\.(lora_A|lora_B)(?:\.[^.]+)?\.weight$|\.lora\.(down|up)\.weight$|\.lora_linear_layer\.(down|up)\.weight$|_lora\.(down|up)\.weight$/;
/** Tensors a LoRA-family file may hold besides up/down: alphas, DoRA magnitudes, CP cores, LyCORIS extras. */
const LORA_AUX = /\.(alpha|scale|dora_scale|lora_magnitude_vector(\.weight)?|lora_mid\.weight|diff|diff_b|on_input|oft_blocks|oft_diag|[ab][12]\.weight|bias)$/;
const LORA_ANY = [LYCORIS_SUFFIX, KOHYA_KEY, PEFT_KEY, LORA_AUX];

function maxIndex(names: string[], re: RegExp): number {
  let n = -1;
  for (const k of names) {
    const m = re.exec(k);
    if (m) n = Math.max(n, Number(m[1]));
  }
  return n;
}

export async function classify(f: SafetensorsFile): Promise<Classification> {
  const names = f.names();
  const has = (k: string) => f.has(k);
  const any = (re: RegExp) => names.some((k) => re.test(k));
  const shape = (k: string) => (f.has(k) ? f.info(k).shape : undefined);

  // A LoRA file is (nearly) nothing but LoRA tensors; golden files that merely hold LoRA-named gradients
  // ("grad/…lora_A.weight") have other tensors too, and "/" never occurs in a module path.
  const loraKeys = names.filter((k) => !k.includes('/') && LORA_ANY.some((re) => re.test(k)));
  if (loraKeys.length > 0 && loraKeys.length >= 0.9 * names.length) {
    if (loraKeys.some((k) => LYCORIS_SUFFIX.test(k))) {
      const mods = await kohyaStyleModules(f);
      const lora = summarise(mods, 'per-module .alpha tensors');
      const algos = lora.algorithms.filter((a) => a !== 'lora');
      return {
        kind: 'lycoris',
        label: `LyCORIS (${algos.map((a) => ({ loha: 'LoHa', lokr: 'LoKr' })[a] ?? a).join(', ')})`,
        details: baseModelHint(f),
        lora,
      };
    }
    if (loraKeys.some((k) => KOHYA_KEY.test(k))) {
      const mods = await kohyaStyleModules(f);
      return { kind: 'kohya-lora', label: 'kohya / A1111 LoRA', details: baseModelHint(f), lora: summarise(mods, 'per-module .alpha tensors') };
    }
    if (loraKeys.some((k) => PEFT_KEY.test(k))) {
      if (names.some((k) => k.startsWith('base_model.model.'))) {
        const mods = peftModules(f, () => 'model');
        const { mods: withAlpha, source, rslora } = await peftConfigAlphas(f.path, mods);
        return { kind: 'peft-lora', label: 'PEFT LoRA adapter', details: [], lora: summarise(withAlpha, source, rslora) };
      }
      const mods = peftModules(f, (m) => m.split('.')[0]!);
      const { mods: withAlpha, source } = diffusersAlphas(f, mods);
      return { kind: 'diffusers-lora', label: 'diffusers / PEFT LoRA', details: [], lora: summarise(withAlpha, source) };
    }
  }

  if (any(/^model\.diffusion_model\./)) {
    const details: string[] = [];
    const te = any(/^conditioner\.embedders\.1\./)
      ? 'SDXL'
      : any(/^cond_stage_model\.model\./)
        ? 'SD 2.x'
        : any(/^cond_stage_model\.transformer\./)
          ? 'SD 1.x'
          : undefined;
    if (te) details.push(`architecture ${te} (from the text encoder keys)`);
    const parts = [
      ['UNet', /^model\.diffusion_model\./],
      ['VAE', /^first_stage_model\./],
      ['text encoder', /^(cond_stage_model|conditioner)\./],
      ['EMA weights', /^model_ema\./],
    ] as const;
    details.push(`parts: ${parts.filter(([, re]) => any(re)).map(([n]) => n).join(', ')}`);
    const inCh = shape('model.diffusion_model.input_blocks.0.0.weight');
    if (inCh) details.push(`UNet in_channels ${inCh[1]}, model_channels ${inCh[0]}`);
    return { kind: 'sd-checkpoint', label: 'SD checkpoint (LDM single file)', details };
  }
  if (has('conv_in.weight') && any(/^down_blocks\./) && any(/^up_blocks\./) && any(/^time_embedding\./)) {
    const c = shape('conv_in.weight')!;
    const details = [`in_channels ${c[1]}, first block channels ${c[0]}`];
    const k = names.find((n) => /\.attn2\.to_k\.weight$/.test(n));
    if (k) details.push(`cross_attention_dim ${f.info(k).shape[1]}`);
    return { kind: 'diffusers-unet', label: 'diffusers UNet (UNet2DConditionModel weights)', details };
  }
  if (any(/^encoder\.(conv_in|down_blocks)\./) && any(/^decoder\.(conv_in|up_blocks)\./)) {
    const z = shape('decoder.conv_in.weight');
    return { kind: 'diffusers-vae', label: 'diffusers VAE (AutoencoderKL weights)', details: z ? [`latent channels ${z[1]}`] : [] };
  }
  const clipPrefix = has('text_model.embeddings.token_embedding.weight') ? 'text_model.' : has('embeddings.token_embedding.weight') ? '' : undefined;
  if (clipPrefix !== undefined) {
    const emb = shape(`${clipPrefix}embeddings.token_embedding.weight`)!;
    const layers = maxIndex(names, /encoder\.layers\.(\d+)\./) + 1;
    return {
      kind: 'diffusers-text-encoder',
      label: 'diffusers text encoder (CLIP text model weights)',
      details: [`${layers} layers, hidden ${emb[1]}, vocab ${emb[0]}${clipPrefix === '' ? ', keys without the text_model. prefix' : ''}`],
    };
  }
  const llm = llmDetails(names, shape);
  if (llm) return { kind: 'llm', label: 'LLM weights (decoder-only transformer)', details: llm };
  return { kind: 'tensors', label: 'plain tensors (no known model layout)', details: [] };
}

function llmDetails(names: string[], shape: (k: string) => number[] | undefined): string[] | undefined {
  // Llama / Mistral / Qwen layout, then GPT-2 / GPT-J style.
  const layouts: Array<[RegExp, string, string]> = [
    [/^(?:model\.)?layers\.(\d+)\.self_attn\.q_proj\.weight$/, 'model.embed_tokens.weight', 'Llama-style (q/k/v/o_proj, gated MLP)'],
    [/^(?:transformer\.)?h\.(\d+)\.attn\./, 'transformer.wte.weight', 'GPT-style (transformer.h.N)'],
  ];
  for (const [re, embKey, style] of layouts) {
    const layers = maxIndex(names, re) + 1;
    if (layers === 0) continue;
    const emb = shape(embKey) ?? shape(embKey.replace(/^[^.]+\./, ''));
    const facts = [style, `${layers} layers`];
    if (emb) facts.push(`vocab ${emb[0]}, hidden ${emb[1]}`);
    facts.push(names.includes('lm_head.weight') ? 'separate lm_head' : 'no lm_head (tied or headless)');
    return [facts.join(', ')];
  }
  return undefined;
}

function baseModelHint(f: SafetensorsFile): string[] {
  const out: string[] = [];
  const v = f.metadata.ss_base_model_version;
  if (v) out.push(`base model ${v} (ss_base_model_version)`);
  const mod = f.metadata.ss_network_module;
  if (mod) out.push(`network module ${mod}`);
  return out;
}
