import type { Command } from 'commander';
import { inspectFile, renderText } from '../../engine/inspect/report.ts';

export function register(program: Command): void {
  program
    .command('inspect')
    .description('show what a .safetensors file holds: its kind, tensors, parameter count, metadata, LoRA rank/alpha')
    .argument('<file>')
    .option('--json', 'machine-readable output (every tensor listed)')
    .option('--all', 'list every tensor even for large files (default: grouped by prefix above 60 tensors)')
    .action(async (file: string, opts: { json?: boolean; all?: boolean }) => {
      const report = await inspectFile(file);
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderText(report, opts)}\n`);
    });
}
