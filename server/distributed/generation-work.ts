/**
 * txt2img/img2img as queue work: what a front puts into Redis for a generation (the validated request and
 * its decoded init images and mask) and what it prefers (a worker with the checkpoint loaded and the LoRA
 * stack cached). The worker runs the very same runGeneration as the single process.
 */
import { extractPromptTags } from '../../engine/lora/prompt-tags.ts';
import type { ServerContext } from '../context.ts';
import type { GenerationResponse, Prepared } from '../generation.ts';
import type { GenerationRequest, Img2ImgRequest, Txt2ImgRequest } from '../requests/generation.ts';
import type { RemoteWork } from './front-queue.ts';
import { fromWireImage, stackKey, toWireImage, type WireImage } from './protocol.ts';

export const GENERATE_HANDLER = 'generate';

export type GenerationData =
  | { kind: 'txt2img'; req: Txt2ImgRequest; initImages: []; mask: null }
  | { kind: 'img2img'; req: Img2ImgRequest; initImages: WireImage[]; mask: WireImage | null };

/** The LoRA stack a request asks for, as workers report it (prompt tags; styles and sd_lora aside). */
export function requestedStack(req: GenerationRequest, options: Record<string, unknown>): string {
  if (req.disable_extra_networks) return '';
  const tags = extractPromptTags(req.prompt, { defaultMultiplier: Number(options['extra_networks_default_multiplier'] ?? 1) });
  return stackKey(tags.loras);
}

/** The checkpoint (name in the checkpoint folder) a request will run on, as far as the front can tell. */
function requestedCheckpoint(ctx: ServerContext, req: GenerationRequest): string | null {
  const over = req.override_settings?.['sd_model_checkpoint'];
  const want = typeof over === 'string' ? over : ctx.options.get('sd_model_checkpoint');
  const c = typeof want === 'string' && want !== '' ? ctx.models.findCheckpoint(want) : ctx.models.checkpoints()[0];
  return c?.name ?? null;
}

function toData(p: Prepared): GenerationData {
  if (p.kind === 'txt2img') return { kind: p.kind, req: p.req, initImages: [], mask: null };
  return { kind: p.kind, req: p.req, initImages: p.initImages.map(toWireImage), mask: p.mask ? toWireImage(p.mask) : null };
}

export function remoteGeneration(prepared: Prepared): RemoteWork<GenerationResponse> {
  return {
    describe: (ctx) => ({
      handler: GENERATE_HANDLER,
      data: toData(prepared),
      affinity: { checkpoint: requestedCheckpoint(ctx, prepared.req), stack: requestedStack(prepared.req, ctx.options.all()) },
    }),
  };
}

export function preparedFromData(d: GenerationData): Prepared {
  if (d.kind === 'txt2img') return { kind: d.kind, req: d.req, initImages: [], mask: null };
  return { kind: d.kind, req: d.req, initImages: d.initImages.map(fromWireImage), mask: d.mask ? fromWireImage(d.mask) : null };
}
