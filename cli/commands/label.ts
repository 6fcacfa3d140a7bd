import type { Command } from 'commander';
import { notBuilt } from '../not-built.ts';

export function register(program: Command): void {
  program
    .command('label')
    .description('write captions for a folder of images into metadata.csv (CLIP-based)')
    .argument('<folder>', 'image folder')
    .action(() => notBuilt('label'));
}
