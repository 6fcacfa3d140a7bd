import type { Command } from 'commander';
import { UserError } from '../../engine/util/errors.ts';
import { convertLora, type LoraFormat } from '../../engine/lora/convert.ts';
import type { SaveDType } from '../../engine/lora/write.ts';

const DTYPES: Record<string, SaveDType> = { f32: 'F32', fp32: 'F32', f16: 'F16', fp16: 'F16', bf16: 'BF16' };

export function register(program: Command): void {
  program
    .command('convert')
    .description('convert a LoRA between kohya and diffusers/PEFT formats')
    .argument('<input>', 'LoRA .safetensors file, or a diffusers/PEFT folder')
    .argument('<output>', '.safetensors file; for --to peft also a folder (pytorch_lora_weights.safetensors is written in it)')
    .option('--to <format>', 'kohya or peft (default: the other format than the input)')
    .option('--dtype <dtype>', 'f32, f16 or bf16', 'f32')
    .option('--base <checkpoint>', 'checkpoint whose UNet layout renames LDM-named (SDXL kohya) modules to diffusers paths')
    .action(async (input: string, output: string, opts: { to?: string; dtype: string; base?: string }) => {
      if (opts.to !== undefined && opts.to !== 'kohya' && opts.to !== 'peft' && opts.to !== 'diffusers') {
        throw new UserError(`--to must be kohya or peft, not '${opts.to}'`);
      }
      const dtype = DTYPES[opts.dtype.toLowerCase()];
      if (!dtype) throw new UserError(`--dtype must be f32, f16 or bf16, not '${opts.dtype}'`);
      const to = opts.to === undefined ? undefined : ((opts.to === 'diffusers' ? 'peft' : opts.to) as LoraFormat);
      const r = await convertLora({ input, output, to, dtype, base: opts.base });
      console.log(`${r.from} -> ${r.to}: ${r.modules} modules written to ${r.file}`);
      if (r.dropped.length) console.warn(`warning: ${r.dropped.length} tensors belong to no LoRA module and were not carried over: ${r.dropped.join(', ')}`);
    });
}
