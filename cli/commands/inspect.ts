import type { Command } from 'commander';
import { notBuilt } from '../not-built.ts';

export function register(program: Command): void {
  program
    .command('inspect')
    .description('show what a .safetensors file holds')
    .argument('<file>')
    .action(() => notBuilt('inspect'));
}
