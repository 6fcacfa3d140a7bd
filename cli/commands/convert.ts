import type { Command } from 'commander';
import { notBuilt } from '../not-built.ts';

export function register(program: Command): void {
  program
    .command('convert')
    .description('convert a LoRA between kohya and diffusers/PEFT formats')
    .action(() => notBuilt('convert'));
}
