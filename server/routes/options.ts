/** GET/POST /sdapi/v1/options and GET /sdapi/v1/cmd-flags. */
import type { ServerContext } from '../context.ts';
import { unknownOptionKey } from '../options.ts';
import { optionsRequest, parseOptionValues } from '../requests/options.ts';
import type { Api } from './api.ts';

export function register(api: Api, ctx: ServerContext): void {
  api.get('/sdapi/v1/options', { summary: 'Every option with its current value', tag: 'options' }, () => ctx.options.all());

  api.post('/sdapi/v1/options', { summary: 'Set options (sd_model_checkpoint loads that model); returns null', tag: 'options', body: { name: 'Options', schema: optionsRequest }, example: null }, async (req) => {
    const values = parseOptionValues(req.body);
    unknownOptionKey(values, ctx.options.all());
    const wanted = values['sd_model_checkpoint'];
    delete values['sd_model_checkpoint'];
    if (typeof wanted === 'string' && wanted !== '') {
      const c = ctx.checkpoints.resolve(wanted);
      const sdVae = 'sd_vae' in values ? values['sd_vae'] : ctx.options.get('sd_vae');
      // Loading goes through the queue so it never swaps weights under a running generation.
      await ctx.queue.submit({
        kind: 'load_checkpoint',
        run: async () => {
          if (ctx.backend.currentCheckpoint()?.path !== c.path) await ctx.checkpoints.load(c, sdVae);
          ctx.checkpoints.remember(c);
        },
      }).promise;
    }
    ctx.options.setFromApi(values);
    await ctx.options.save();
    return null;
  });

  api.get('/sdapi/v1/cmd-flags', { summary: 'Command-line settings of this server', tag: 'options' }, () => ctx.cmdFlags);
}
