/**
 * The Models tab: checkpoints (switch the active one through A1111's options route, refresh the folder)
 * and LoRAs with their metadata and the engine's reading of each file (format, ranks, alphas), refresh and
 * upload.
 */
import { h, clear } from './dom.ts';
import { t } from './i18n.ts';
import { emit, errorText, type App } from './app.ts';

interface Checkpoint {
  title: string;
  model_name: string;
  hash: string | null;
  filename: string;
}

export function modelsTab(app: App): HTMLElement {
  const { api } = app;
  const ckptList = h('ul.model-list#checkpoint-list');
  const loraList = h('div.lora-table#lora-list');
  const status = h('div.muted#models-status', { 'aria-live': 'polite' });
  const upload = h('input#lora-upload', { type: 'file', accept: '.safetensors' });

  const loadCheckpoints = async () => {
    try {
      const [ckpts, opts] = await Promise.all([api.get<Checkpoint[]>('sdapi/v1/sd-models'), api.get<Record<string, unknown>>('sdapi/v1/options')]);
      const active = String(opts['sd_model_checkpoint'] ?? '');
      clear(
        ckptList,
        ckpts.length === 0 ? h('li.muted', t('none')) : ckpts.map((c) => {
          const isActive = c.title === active || c.model_name === active;
          return h('li', { 'data-model': c.model_name },
            h('strong', c.model_name), ` ${c.hash ? `[${c.hash}]` : ''} `,
            isActive ? h('span.badge', t('active')) : h('button', { type: 'button', onclick: () => void use(c) }, t('use')),
            h('div.muted', c.filename),
          );
        }),
      );
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };
  const use = async (c: Checkpoint) => {
    status.textContent = `${c.title}…`;
    try {
      await api.post('sdapi/v1/options', { sd_model_checkpoint: c.title });
      status.textContent = '';
      emit(app, 'checkpoint-changed');
      await loadCheckpoints();
    } catch (e) {
      status.textContent = '';
      app.notify(errorText(e), 'error');
    }
  };

  const details = async (name: string, into: HTMLElement) => {
    try {
      const d = await api.get<any>(`sdapi/v1/loras/${encodeURIComponent(name)}/details`);
      clear(into, h('div', `${d.format} · ${d.sd_version} · ${d.modules} modules · rank ${d.ranks.join(', ')} · alpha ${d.alphas.map((a: number | null) => a ?? '–').join(', ')} · ${d.hash}`));
    } catch (e) {
      clear(into, h('div.error', errorText(e)));
    }
  };

  const loadLoras = async () => {
    try {
      const loras = await api.get<{ name: string; alias: string; path: string; metadata: Record<string, unknown> }[]>('sdapi/v1/loras');
      clear(
        loraList,
        loras.length === 0 ? h('p.muted', t('no_loras')) : loras.map((l) => {
          const more = h('div.lora-details');
          const md = Object.entries(l.metadata ?? {}).filter(([k]) => k !== 'ss_tag_frequency' && k !== 'ss_dataset_dirs' && k !== 'ss_bucket_info');
          return h('details.lora-row', { 'data-lora': l.name, ontoggle: (e: Event) => (e.target as HTMLDetailsElement).open && !more.childElementCount && void details(l.name, more) },
            h('summary', h('strong', l.alias), l.alias !== l.name ? ` (${l.name})` : '', ` `, h('span.muted', String(l.metadata?.['ss_sd_model_name'] ?? ''))),
            h('div.row', h('button', { type: 'button', onclick: () => emit(app, 'use-lora', l.alias) }, t('use_in_generate'))),
            more,
            md.length ? h('table.meta', h('caption', t('metadata')), md.map(([k, v]) => h('tr', h('th', k), h('td', typeof v === 'string' ? v : JSON.stringify(v))))) : null,
          );
        }),
      );
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };

  upload.addEventListener('change', async () => {
    const f = upload.files?.[0];
    if (!f) return;
    const form = new FormData();
    form.append('file', f, f.name);
    status.textContent = t('uploading');
    try {
      await api.form('sdapi/v1/loras/upload', form);
      status.textContent = '';
      emit(app, 'loras-changed');
    } catch (e) {
      status.textContent = '';
      app.notify(errorText(e), 'error');
    }
    upload.value = '';
  });

  const refreshCkpts = h('button#refresh-checkpoints', { type: 'button', onclick: async () => (await api.post('sdapi/v1/refresh-checkpoints').catch((e) => app.notify(errorText(e), 'error')), void loadCheckpoints()) }, t('refresh'));
  const refreshLoras = h('button#refresh-loras', { type: 'button', onclick: async () => (await api.post('sdapi/v1/refresh-loras').catch((e) => app.notify(errorText(e), 'error')), emit(app, 'loras-changed')) }, t('refresh'));
  app.events.addEventListener('loras-changed', () => void loadLoras());
  void loadCheckpoints();
  void loadLoras();

  return h(
    'section.tab-models',
    h('div.col', h('div.row', h('h3', t('checkpoints')), refreshCkpts), ckptList, status),
    h('div.col', h('div.row', h('h3', t('loras')), refreshLoras), h('div.field', h('label', { htmlFor: 'lora-upload' }, t('upload_lora')), upload), loraList),
  );
}
