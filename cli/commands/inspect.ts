import type { Command } from 'commander';
import { inspectFile, renderText, type InspectReport } from '../../engine/inspect/report.ts';
import { isUserError } from '../../engine/util/errors.ts';

export function register(program: Command): void {
  program
    .command('inspect')
    .description('show what .safetensors files hold: kind, tensors, parameter count, metadata, LoRA targets/rank/alpha')
    .argument('<files...>')
    .option('--json', 'machine-readable output, every tensor listed (an array when several files are given)')
    .option('--all', 'list every tensor even for large files (default: grouped by prefix above 60 tensors)')
    .action(async (files: string[], opts: { json?: boolean; all?: boolean }) => {
      if (files.length === 1) {
        const report = await inspectFile(files[0]!);
        process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderText(report, opts)}\n`);
        return;
      }
      // Several files: report each, name each failure on its own line, and fail at the end if any failed.
      const reports: InspectReport[] = [];
      let failed = false;
      for (const file of files) {
        try {
          const r = await inspectFile(file);
          reports.push(r);
          if (!opts.json) process.stdout.write(`${renderText(r, opts)}\n\n`);
        } catch (e) {
          if (!isUserError(e)) throw e;
          console.error(`error: ${e.message}`);
          failed = true;
        }
      }
      if (opts.json) process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
      if (failed) process.exitCode = 2;
    });
}
