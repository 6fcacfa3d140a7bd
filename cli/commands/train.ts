import type { Command } from 'commander';
import { stringify } from 'yaml';
import { UserError } from '../../engine/util/errors.ts';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { defaultCheckpoint, demoNotice } from '../../engine/demo/demo-model.ts';
import { loadTrainConfig, parseTrainConfig, type TrainConfig } from '../../engine/train/config.ts';
import { loadDataset } from '../../engine/train/dataset.ts';
import { dryRunReport } from '../../engine/train/dry-run-report.ts';
import { runTraining } from './train-run.ts';
import { isLlmModelFolder } from '../../engine/llm/config.ts';
import { llmDryRunReport } from '../../engine/llm/trainer.ts';

export function register(program: Command): void {
  program
    .command('train')
    .description('train a LoRA from one YAML config')
    .requiredOption('--config <file>', 'YAML training config')
    .option('--dry-run', 'validate the config and show the dataset plan without training')
    .option('--save-format <format>', 'LoRA file format: kohya (A1111, default) or diffusers (PEFT keys)', 'kohya')
    .option('--no-progress', 'print one line per step instead of a progress bar')
    .option('--gradient-checkpointing', 'recompute UNet block activations in the backward pass (less memory, slower)')
    .option('--low-memory', 'feed the frozen weights instead of baking them into the session (one copy of the UNet, slower)')
    .option('--bake-weights', 'bake the frozen weights into the session even when RAM looks tight (faster, about 2 more copies of the UNet)')
    .action(async (opts: { config: string; dryRun?: boolean; saveFormat: string; progress: boolean; gradientCheckpointing?: boolean; lowMemory?: boolean; bakeWeights?: boolean }) => {
      if (opts.saveFormat !== 'kohya' && opts.saveFormat !== 'diffusers')
        throw new UserError(`--save-format must be kohya or diffusers, got ${JSON.stringify(opts.saveFormat)}`);
      const { config, warnings } = await loadConfigWithDefaultModel(opts.config);
      if (opts.dryRun) console.log(`# resolved config (${opts.config})\n${stringify(config, { lineWidth: 0 }).trimEnd()}\n`);
      for (const w of warnings) console.warn(`warning: ${w}`);
      if (await isLlmModelFolder(config.base_model)) {
        // An LLM base model: text data, a PEFT adapter out (engine/llm).
        if (opts.dryRun) console.log(await llmDryRunReport(config));
        else await runTraining(config, { saveFormat: 'diffusers', progressBar: opts.progress && Boolean(process.stderr.isTTY), gradientCheckpointing: Boolean(opts.gradientCheckpointing), frozenWeights: opts.lowMemory ? 'fed' : opts.bakeWeights ? 'baked' : 'auto' });
        return;
      }
      const dataset = await loadDataset(config, { verifyImages: Boolean(opts.dryRun) });
      for (const w of dataset.warnings) console.warn(`warning: ${w}`);
      if (!opts.dryRun) {
        await runTraining(config, { saveFormat: opts.saveFormat, progressBar: opts.progress && Boolean(process.stderr.isTTY), dataset,
          gradientCheckpointing: Boolean(opts.gradientCheckpointing), frozenWeights: opts.lowMemory ? 'fed' : opts.bakeWeights ? 'baked' : 'auto' });
        return;
      }
      console.log(dryRunReport(config, dataset));
    });
}

/**
 * The config, with `base_model` defaulting to the first checkpoint in models/Stable-diffusion, else the
 * bundled demo model (said in one line), when the file names none.
 */
async function loadConfigWithDefaultModel(path: string): Promise<{ config: TrainConfig; warnings: string[] }> {
  const text = await readFile(path, 'utf8').catch(() => null);
  const doc = text === null ? null : parseDocument(text);
  const raw: unknown = doc && doc.errors.length === 0 ? doc.toJS() : null;
  if (!doc || !raw || typeof raw !== 'object' || 'base_model' in raw || 'pretrained_model_name_or_path' in raw) return loadTrainConfig(path);
  const ckptDir = resolve('models/Stable-diffusion');
  const chosen = await defaultCheckpoint(ckptDir);
  if (chosen.demo) console.error(demoNotice(ckptDir));
  // Added as the last key, so line numbers in messages about the user's own keys stay right.
  doc.set('base_model', chosen.path);
  return parseTrainConfig(String(doc), resolve(path));
}
