import type { Command } from 'commander';
import { notBuilt } from '../not-built.ts';

export function register(program: Command): void {
  program
    .command('merge')
    .description('bake a weighted stack of LoRAs into a new checkpoint .safetensors')
    .action(() => notBuilt('merge'));
}
