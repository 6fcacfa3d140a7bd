import type { Command } from 'commander';
import { notBuilt } from '../not-built.ts';

export function register(program: Command): void {
  program
    .command('generate')
    .description('txt2img from a checkpoint, with <lora:name:weight> tags in the prompt')
    .action(() => notBuilt('generate'));
}
