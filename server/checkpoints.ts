/**
 * Which checkpoint is loaded. Loads happen inside queue jobs (never concurrently with a generation);
 * A1111 semantics: option `sd_model_checkpoint` names the wanted model, a generation loads it lazily if the
 * backend holds another one, and with nothing chosen the first checkpoint found is used.
 */
import { chooseVae } from '../engine/generate/vae-choice.ts';
import type { GenerationBackend, VaeRef } from './backend.ts';
import { HttpError } from './errors.ts';
import type { CheckpointEntry, ModelIndex } from './models.ts';
import type { OptionsStore } from './options.ts';

export class CheckpointManager {
  /** Path of the standalone VAE loaded with the current checkpoint ('' for the checkpoint's own). */
  private loadedVae = '';

  constructor(
    private readonly backend: GenerationBackend,
    private readonly models: ModelIndex,
    private readonly options: OptionsStore,
    private readonly log: (msg: string) => void,
  ) {}

  /** Resolves an id as `sd_model_checkpoint` accepts it; unknown ids are A1111's RuntimeError, as 404 (A1111: 500): the client named it. */
  resolve(id: string): CheckpointEntry {
    const c = this.models.findCheckpoint(id);
    if (!c) throw new HttpError(404, `model '${id}' not found`, 'RuntimeError');
    return c;
  }

  private noCheckpoint(): HttpError {
    return new HttpError(
      500,
      `No checkpoint loaded: no .safetensors checkpoint found in ${this.models.ckptDir}. ` +
        'Put one there and POST /sdapi/v1/refresh-checkpoints (or restart the server).',
      'RuntimeError',
    );
  }

  /** The VAE chosen by option `sd_vae` (the engine's rule, engine/generate/vae-choice.ts) among the VAE folder's. */
  vaeFor(c: CheckpointEntry, sdVae: unknown, notes: string[]): VaeRef | null {
    const choice = chooseVae(c.name, sdVae, this.models.vaes());
    if (choice.missing) notes.push(`VAE '${choice.missing}' not found; used the checkpoint's own VAE`);
    return choice.vae;
  }

  /** Loads a checkpoint now (call only from inside a queue job). */
  async load(c: CheckpointEntry, sdVae: unknown, notes: string[] = []): Promise<CheckpointEntry> {
    await this.models.ensureHashed(c);
    const vae = this.vaeFor(c, sdVae, notes);
    this.log(`loading checkpoint ${c.title}${vae ? ` with VAE ${vae.name}` : ''}`);
    try {
      await this.backend.loadCheckpoint(c, vae);
    } catch (e) {
      // Whatever went wrong is the server's setup (files, tokenizer, memory), not the request's: A1111 answers 500.
      throw new HttpError(500, `could not load checkpoint ${c.name}: ${(e as Error).message}`, 'RuntimeError');
    }
    this.loadedVae = vae?.path ?? '';
    return c;
  }

  /**
   * The checkpoint a job asking for `wanted` (an id, or null) runs with, without loading it: `wanted` if it is
   * known, else option `sd_model_checkpoint`, else the loaded one, else the first found; null when there is none.
   */
  planned(wanted: string | null): CheckpointEntry | null {
    const current = this.backend.currentCheckpoint();
    const want = (wanted && this.models.findCheckpoint(wanted) ? wanted : null) ?? (this.options.get('sd_model_checkpoint') as string | null);
    let target: CheckpointEntry | null = null;
    if (want) target = this.models.findCheckpoint(want);
    if (!target && current) target = this.models.findCheckpoint(current.name);
    return target ?? this.models.checkpoints()[0] ?? null;
  }

  /**
   * Makes sure the wanted checkpoint is loaded: `wanted` (an id) if given, else option `sd_model_checkpoint`,
   * else the loaded one, else the first found. Throws a clear error when there is none at all.
   */
  async ensureLoaded(wanted: string | null, sdVae: unknown, notes: string[]): Promise<CheckpointEntry> {
    const current = this.backend.currentCheckpoint();
    // A1111 drops an override naming no known model and runs with the current one.
    if (wanted && !this.models.findCheckpoint(wanted)) {
      notes.push(`override_settings.sd_model_checkpoint: model '${wanted}' not found; the current model was used`);
      wanted = null;
    }
    const target = this.planned(wanted);
    if (!target) throw this.noCheckpoint();
    // A changed `sd_vae` means a reload too: the VAE is part of what the backend loaded.
    if (current && current.path === target.path && (this.vaeFor(target, sdVae, [])?.path ?? '') === this.loadedVae) return target;
    await this.load(target, sdVae, notes);
    if (!wanted) this.remember(target);
    return target;
  }

  /** Records the loaded checkpoint in the options, as A1111 does after a switch. */
  remember(c: CheckpointEntry): void {
    this.options.setInternal('sd_model_checkpoint', c.title);
    this.options.setInternal('sd_checkpoint_hash', c.sha256 ?? '');
  }
}
