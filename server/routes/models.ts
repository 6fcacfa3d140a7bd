/**
 * Lists and refreshes: samplers, schedulers, checkpoints, VAEs, styles, embeddings, …, and
 * checkpoint unload/reload. Lists of features lora-scripts does not have (face restorers, hypernetworks,
 * RealESRGAN, scripts) answer A1111's shape with no entries.
 */
import type { ServerContext } from '../context.ts';
import { SAMPLERS, SCHEDULERS } from '../samplers.ts';
import { readStyles } from '../styles.ts';
import type { TextualInversion } from '../../engine/sd/embeddings.ts';
import type { Api } from './api.ts';

const LATENT_UPSCALE_MODES = ['Latent', 'Latent (antialiased)', 'Latent (bicubic)', 'Latent (bicubic antialiased)', 'Latent (nearest)', 'Latent (nearest-exact)'];

export function register(api: Api, ctx: ServerContext): void {
  const inQueue = <T>(kind: string, run: () => Promise<T>): Promise<T> => ctx.queue.submit({ kind, run }).promise;

  api.get('/sdapi/v1/samplers', { summary: 'Samplers (A1111 v1.10 names)', tag: 'lists' }, () => {
    const supported = ctx.backend.samplers;
    return SAMPLERS.filter((s) => !supported || supported.includes(s.name));
  });
  api.get('/sdapi/v1/schedulers', { summary: 'Schedulers', tag: 'lists' }, () => SCHEDULERS);
  api.get('/sdapi/v1/latent-upscale-modes', { summary: 'Latent upscale modes', tag: 'lists' }, () => LATENT_UPSCALE_MODES.map((name) => ({ name })));
  api.get('/sdapi/v1/sd-models', { summary: 'Checkpoints in the checkpoint folder', tag: 'models' }, () =>
    ctx.models.checkpoints().map((c) => ({ title: c.title, model_name: c.modelName, hash: c.shortHash, sha256: c.sha256, filename: c.path, config: c.config, resolution: c.resolution })),
  );
  api.get('/sdapi/v1/sd-vae', { summary: 'VAE files in the VAE folder', tag: 'models' }, () =>
    ctx.models.vaes().map((v) => ({ model_name: v.name.split('/').pop()!, filename: v.path })),
  );
  api.get('/sdapi/v1/hypernetworks', { summary: 'Hypernetworks (not supported: empty)', tag: 'lists' }, () => []);
  api.get('/sdapi/v1/face-restorers', { summary: 'Face restorers (not supported: empty)', tag: 'lists' }, () => []);
  api.get('/sdapi/v1/realesrgan-models', { summary: 'RealESRGAN models (not supported: empty)', tag: 'lists' }, () => []);
  api.get('/sdapi/v1/prompt-styles', { summary: 'Prompt styles from <data-dir>/styles.csv', tag: 'lists' }, () => readStyles(ctx.layout.stylesPath));
  api.get('/sdapi/v1/embeddings', { summary: 'Textual-inversion embeddings: loaded (usable with the loaded model) and skipped (another text width)', tag: 'lists' }, () => {
    const { loaded, skipped } = ctx.embeddings.split();
    const byName = (list: TextualInversion[]) =>
      Object.fromEntries(list.map((e) => [e.name, { step: e.step, sd_checkpoint: e.sdCheckpoint, sd_checkpoint_name: e.sdCheckpointName, shape: e.shape, vectors: e.vectors }]));
    return { loaded: byName(loaded), skipped: byName(skipped) };
  });
  api.get('/sdapi/v1/scripts', { summary: 'Scripts (none)', tag: 'lists' }, () => ({ txt2img: [], img2img: [] }));
  api.get('/sdapi/v1/script-info', { summary: 'Script details (none)', tag: 'lists' }, () => []);
  api.get('/sdapi/v1/extensions', { summary: 'Extensions (none)', tag: 'lists' }, () => []);

  api.post('/sdapi/v1/refresh-checkpoints', { summary: 'Rescan the checkpoint folder', tag: 'models', example: null }, async () => {
    await inQueue('refresh_checkpoints', () => ctx.models.refreshCheckpoints());
    return null;
  });
  api.post('/sdapi/v1/refresh-vae', { summary: 'Rescan the VAE folder', tag: 'models', example: null }, async () => {
    await inQueue('refresh_vae', () => ctx.models.refreshVaes());
    return null;
  });
  api.post('/sdapi/v1/refresh-embeddings', { summary: 'Rescan the embeddings folder', tag: 'models', example: null }, async () => {
    await inQueue('refresh_embeddings', async () => {
      for (const msg of (await ctx.embeddings.refresh()).values()) ctx.log(msg);
    });
    return null;
  });
  api.post('/sdapi/v1/unload-checkpoint', { summary: 'Free the loaded checkpoint', tag: 'models', example: {} }, async () => {
    await inQueue('unload_checkpoint', () => ctx.backend.unload());
    return {};
  });
  api.post('/sdapi/v1/reload-checkpoint', { summary: 'Load the selected checkpoint again', tag: 'models', example: {} }, async () => {
    await inQueue('reload_checkpoint', async () => {
      await ctx.checkpoints.ensureLoaded(null, ctx.options.get('sd_vae'), []);
    });
    return {};
  });
}
