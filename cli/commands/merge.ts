import type { Command } from 'commander';
import { UserError } from '../../engine/util/errors.ts';
import { bakeCheckpoint, type BakeOptions } from '../../engine/lora/bake.ts';
import { LoraLibrary } from '../../engine/lora/resolve.ts';
import { isLlmModelFolder } from '../../engine/llm/config.ts';
import { bakeLlmAdapters } from '../../engine/llm/bake.ts';

const DTYPES: Record<string, BakeOptions['dtype']> = { keep: 'keep', f32: 'F32', fp32: 'F32', f16: 'F16', fp16: 'F16', bf16: 'BF16' };

/**
 * `path[:te[:unet]]`. Multipliers are taken from the right, so Windows paths (C:\x.safetensors) still work:
 * only trailing items that are numbers count.
 */
export function parseLoraSpec(spec: string): { path: string; te: number; unet: number } {
  const items = spec.split(':');
  const nums: number[] = [];
  while (items.length > 1 && nums.length < 2 && /^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i.test(items[items.length - 1]!)) {
    nums.unshift(Number(items.pop()));
  }
  const path = items.join(':');
  if (!path) throw new UserError(`--lora '${spec}': no file or name`);
  const te = nums[0] ?? 1;
  return { path, te, unet: nums[1] ?? te };
}

/** `path[:weight]` for an LLM adapter (one multiplier: an LLM has one part). */
export function parseAdapterSpec(spec: string): { path: string; weight: number } {
  const s = parseLoraSpec(spec);
  if (s.te !== s.unet) throw new UserError(`adapter '${spec}': give one weight (path:weight)`);
  return { path: s.path, weight: s.te };
}

export function register(program: Command): void {
  program
    .command('merge')
    .description('bake a weighted stack of LoRAs into a new checkpoint .safetensors')
    .argument('<checkpoint>', 'base checkpoint: LDM single-file .safetensors, a diffusers folder, or a Hugging Face causal-LM folder (then -l takes PEFT adapter folders as path[:weight] and -o is a folder)')
    .requiredOption('-o, --output <file>', 'the new checkpoint .safetensors (LDM single-file layout)')
    .requiredOption('-l, --lora <spec...>', 'LoRA as file[:mult] or file[:te:unet]; repeat for a stack, applied in order')
    .option('--lora-dir <dir>', 'resolve LoRA names (file stem or ss_output_name) in this folder, as prompt tags do')
    .option('--dtype <dtype>', 'keep, f32, f16 or bf16', 'keep')
    .action(async (checkpoint: string, opts: { output: string; lora: string[]; loraDir?: string; dtype: string }) => {
      if (await isLlmModelFolder(checkpoint)) {
        // A causal LM: PEFT adapter folders baked into a new model folder (-o), tensors in their source dtypes.
        const t0 = performance.now();
        const r = await bakeLlmAdapters(checkpoint, opts.output, opts.lora.map(parseAdapterSpec));
        console.log(`wrote ${r.output}: ${r.tensors} tensors, ${r.patched} patched, in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        return;
      }
      const dtype = DTYPES[opts.dtype.toLowerCase()];
      if (!dtype) throw new UserError(`--dtype must be keep, f32, f16 or bf16, not '${opts.dtype}'`);
      const lib = opts.loraDir ? new LoraLibrary(opts.loraDir) : undefined;
      const stack = [];
      for (const spec of opts.lora) {
        const s = parseLoraSpec(spec);
        const path = lib ? (await lib.resolve(s.path)).path : s.path;
        stack.push({ ...s, path, name: s.path });
      }
      const t0 = performance.now();
      const r = await bakeCheckpoint({ checkpoint, output: opts.output, stack, dtype });
      for (const l of r.loras) {
        console.log(`${l.name}: ${l.applied} modules applied`);
        if (l.unmatched.length) console.warn(`warning: ${l.name}: ${l.unmatched.length} keys match nothing in the checkpoint: ${l.unmatched.join(', ')}`);
        for (const e of l.errors) console.warn(`warning: ${l.name}: ${e}`);
      }
      console.log(`wrote ${r.output}: ${r.tensors} tensors, ${r.patched} patched, in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    });
}
