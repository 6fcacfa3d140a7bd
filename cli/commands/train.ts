import type { Command } from 'commander';
import { notBuilt } from '../not-built.ts';

export function register(program: Command): void {
  program
    .command('train')
    .description('train a LoRA from one YAML config')
    .requiredOption('--config <file>', 'YAML training config')
    .option('--dry-run', 'validate the config and show the dataset plan without training')
    .action(() => notBuilt('train'));
}
