/** GET /sdapi/v1/loras (A1111 Lora extension shape) and POST /sdapi/v1/refresh-loras. */
import type { ServerContext } from '../context.ts';
import { apiMetadata } from '../loras.ts';
import type { Api } from './api.ts';

export function register(api: Api, ctx: ServerContext): void {
  api.get(
    '/sdapi/v1/loras',
    { summary: 'LoRA files with their training metadata', tag: 'models', example: [{ name: 'x', alias: 'x', path: '/abs/models/Lora/x.safetensors', metadata: {} }] },
    () => ctx.loras.list().map((e) => ({ name: e.name, alias: e.alias, path: e.path, metadata: apiMetadata(e.metadata) })),
  );
  api.post('/sdapi/v1/refresh-loras', { summary: 'Rescan the LoRA folder', tag: 'models', example: null }, async () => {
    await ctx.loras.refresh();
    return null;
  });
}
