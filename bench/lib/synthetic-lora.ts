/**
 * Random kohya LoRAs over SD 1.5's shapes for the benchmarks: every module kohya trains by default (UNet
 * transformer Linear / 1×1 conv + text-encoder attention and MLP), F16 on disk as trained LoRAs ship.
 */
import { ldmToDiffusers, inferUnetLayout, LDM_PREFIX } from '../../engine/sd/keymap.ts';
import { SD15, syntheticShapes, uniformFill as fill } from '../../engine/sd/synthetic.ts';
import { kohyaMetadata, writeKohyaLora } from '../../engine/lora/write.ts';
import type { LoraModule } from '../../engine/lora/types.ts';


/** kohya's default SD1 targets: Linear / 1×1 conv inside transformers, and the CLIP attention + MLP Linears. */
export function isDefaultTarget(key: string): boolean {
  if (key.startsWith(LDM_PREFIX.unet)) return /\.1\.(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))\.weight$/.test(key);
  return /self_attn\.(q|k|v|out)_proj\.weight$|mlp\.fc[12]\.weight$/.test(key);
}

/** SD 1.5's UNet and text-encoder shapes (LDM keys), the UNet layout, and kohya's default targets among them. */
export function sd15Targets(): { shapes: [string, number[]][]; layout: ReturnType<typeof inferUnetLayout>; targets: [string, number[]][] } {
  const shapes = [...syntheticShapes(SD15)].filter(([k]) => k.startsWith(LDM_PREFIX.unet) || k.startsWith(LDM_PREFIX.text_encoder));
  const layout = inferUnetLayout(shapes.map(([k]) => k));
  return { shapes, layout, targets: shapes.filter(([k]) => isDefaultTarget(k)) };
}

export function makeLora(targets: [string, number[]][], layout: ReturnType<typeof inferUnetLayout>, seed: number, rank: number): LoraModule[] {
  return targets.map(([key, shape], i) => {
    const out = shape[0]!, inn = shape.slice(1).reduce((a, b) => a * b, 1);
    const part = key.startsWith(LDM_PREFIX.unet) ? 'unet' : 'te';
    const path = part === 'unet' ? ldmToDiffusers(key, { unet: layout })!.name.slice(0, -'.weight'.length) : key.slice(LDM_PREFIX.text_encoder.length, -'.weight'.length);
    const tail = shape.slice(2);
    return {
      name: '', part, path, kind: 'lora' as const, rank, alpha: 16, scale: 16 / rank,
      tensors: {
        down: { shape: [rank, ...shape.slice(1)], data: fill(rank * inn, seed * 7919 + i, 2 / Math.sqrt(inn)) },
        up: { shape: [out, rank, ...tail.map(() => 1)], data: fill(out * rank, seed * 104729 + i, 0.1) },
      },
    };
  });
}

/** Writes one random kohya LoRA (alpha 16) over SD 1.5's default targets to `path`. */
export async function writeSd15Lora(path: string, seed: number, rank: number): Promise<void> {
  const { layout, targets } = sd15Targets();
  await writeKohyaLora(path, makeLora(targets, layout, seed, rank), kohyaMetadata({ outputName: `bench${seed}`, networkDim: rank, networkAlpha: 16, baseModelVersion: 'sd_v1' }), { dtype: 'F16' });
}
