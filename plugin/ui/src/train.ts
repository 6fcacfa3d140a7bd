/**
 * The Train tab: a form built from the server's training-config schema (every key with its default and help
 * text, grouped as in docs/training.md), checked by the server's dry run as the user types (messages shown
 * under their fields, plus the step plan); YAML load/save in the format of `lora-scripts train --config`;
 * start, cancel and resume; a live loss / learning-rate / grad-norm chart over socket.io with ETA and
 * samples; past runs with their charts, logs and files, and one click to use a LoRA in Generate.
 */
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { h, clear, debounce, download } from './dom.ts';
import { t } from './i18n.ts';
import { ApiError } from './api.ts';
import { lossChart, type ChartPoint } from './chart.ts';
import { emit, errorText, type App } from './app.ts';

interface FieldInfo {
  key: string;
  group: string;
  required: boolean;
  default: unknown;
  expect: string;
  doc: string;
  path: string | null;
}

interface JsonProp {
  type?: string;
  enum?: string[];
  anyOf?: JsonProp[];
}

interface Control {
  get(): unknown;
  set(v: unknown): void;
  el: HTMLElement;
}

/** Shown first, outside the collapsed groups. */
const ESSENTIAL = ['train_data_dir', 'base_model', 'output_name', 'lora_rank', 'lora_alpha', 'learning_rate', 'epochs', 'batch_size', 'resolution'];

function fmtTime(s: number | null | undefined): string {
  if (s == null || !Number.isFinite(s)) return '–';
  const m = Math.floor(s / 60);
  return m ? `${m}m ${Math.round(s % 60)}s` : `${Math.round(s)}s`;
}

export function trainTab(app: App): HTMLElement {
  const { api } = app;
  let fields: FieldInfo[] = [];
  let props: Record<string, JsonProp> = {};
  const controls = new Map<string, Control>();
  const errors = new Map<string, HTMLElement>();
  const form = h('form.train-form#train-form', { novalidate: true, onsubmit: (e: Event) => e.preventDefault() });
  const summary = h('div.check-summary#config-check', { 'aria-live': 'polite' });
  const datasetSelect = h('select#cfg-train_data_dir');
  const ckptSelect = h('select#cfg-base_model');

  const control = (f: FieldInfo): Control => {
    const p = props[f.key] ?? {};
    const nullable = p.anyOf?.some((x) => x.type === 'null') ?? false;
    const base = p.anyOf?.find((x) => x.type !== 'null') ?? p;
    const id = `cfg-${f.key}`;
    if (f.key === 'train_data_dir') return { el: datasetSelect, get: () => datasetSelect.value || undefined, set: (v) => (datasetSelect.value = String(v ?? '')) };
    if (f.key === 'base_model') return { el: ckptSelect, get: () => ckptSelect.value || undefined, set: (v) => (ckptSelect.value = String(v ?? '')) };
    if (base.type === 'boolean') {
      const el = h('input', { id, type: 'checkbox', checked: Boolean(f.default) });
      return { el, get: () => el.checked, set: (v) => (el.checked = v === undefined ? Boolean(f.default) : Boolean(v)) };
    }
    if (base.enum) {
      const el = h('select', { id }, base.enum.map((v) => h('option', { value: v }, v === f.default ? `${v} (${t('default')})` : v)));
      el.value = String(f.default ?? base.enum[0]);
      return { el, get: () => el.value, set: (v) => (el.value = String(v ?? f.default)) };
    }
    if (f.key === 'sample_prompts') {
      const el = h('textarea', { id, rows: 3, placeholder: '- a photo of sks dog\n- prompt: a cat\n  seed: 1' });
      return { el, get: () => (el.value.trim() ? parseYaml(el.value) : undefined), set: (v) => (el.value = v && (!Array.isArray(v) || v.length) ? (typeof v === 'string' ? v : stringifyYaml(v)) : '') };
    }
    if (base.type === 'integer' || base.type === 'number') {
      const el = h('input', { id, type: 'number', step: base.type === 'integer' ? '1' : 'any', placeholder: f.default == null ? '' : String(f.default) });
      return { el, get: () => (el.value === '' ? undefined : Number(el.value)), set: (v) => (el.value = v == null || v === f.default ? '' : String(v)) };
    }
    const el = h('input', { id, type: 'text', placeholder: f.default == null ? (nullable ? t('none') : '') : String(f.default) });
    return { el, get: () => (el.value.trim() === '' ? undefined : el.value.trim()), set: (v) => (el.value = v == null || v === f.default ? '' : String(v)) };
  };

  /** The config as the user set it: only keys with a value, so the engine's defaults apply to the rest. */
  const values = (): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const f of fields) {
      let v: unknown;
      try {
        v = controls.get(f.key)?.get();
      } catch (e) {
        v = undefined;
        errors.get(f.key)!.textContent = errorText(e);
      }
      // A value equal to its default is left out: the server fills some keys itself (device, folders).
      if (v !== undefined && v !== f.default) out[f.key] = v;
    }
    return out;
  };

  const showIssues = (issues: { loc: (string | number)[]; msg: string }[]) => {
    for (const el of errors.values()) el.textContent = '';
    for (const c of controls.values()) c.el.removeAttribute('aria-invalid');
    const general: string[] = [];
    for (const i of issues) {
      const key = String(i.loc[0] ?? '');
      const el = errors.get(key);
      if (el) {
        el.textContent = (el.textContent ? `${el.textContent} ` : '') + i.msg;
        controls.get(key)?.el.setAttribute('aria-invalid', 'true');
      } else general.push(i.msg);
    }
    return general;
  };

  let checkSeq = 0;
  const check = async () => {
    const seq = ++checkSeq;
    const cfg = values();
    if (!cfg['train_data_dir']) return void clear(summary, h('span.muted', t('select_dataset')));
    clear(summary, h('span.muted', t('checking')));
    try {
      // train/check answers 200 for a refused config too: refusals are expected while typing.
      const r = await api.post('sdapi/v1/train/check', cfg);
      if (seq !== checkSeq) return;
      if (!r.valid) {
        const issues = (r.detail as { loc: (string | number)[]; msg: string }[]).map((i) => ({ loc: i.loc.slice(1), msg: i.msg }));
        return void clear(summary, showIssues(issues).map((m) => h('div.error', m)));
      }
      showIssues([]);
      clear(summary, h('span.ok', `✓ ${t('config_ok')} · ${r.plan.total_steps} ${t('total_steps')} · ${r.images} ${t('images')}`), (r.warnings as string[]).map((w) => h('div.warn', w)));
    } catch (e) {
      if (seq === checkSeq) clear(summary, h('div.error', errorText(e)));
    }
  };
  const checkSoon = debounce(() => void check(), 500);
  form.addEventListener('input', checkSoon);
  form.addEventListener('change', checkSoon);

  const buildForm = () => {
    const groups = new Map<string, FieldInfo[]>();
    for (const f of fields) if (!ESSENTIAL.includes(f.key)) groups.set(f.group, [...(groups.get(f.group) ?? []), f]);
    const row = (f: FieldInfo) => {
      const c = control(f);
      controls.set(f.key, c);
      const err = h('div.field-error', { id: `err-${f.key}`, 'aria-live': 'polite' });
      errors.set(f.key, err);
      c.el.setAttribute('aria-describedby', `help-${f.key} err-${f.key}`);
      const label = h('label', { htmlFor: c.el.id }, f.key, f.required ? ' *' : '');
      return h('div.field', { 'data-key': f.key }, c.el instanceof HTMLInputElement && c.el.type === 'checkbox' ? h('div.check-row', c.el, label) : [label, c.el], h('div.help', { id: `help-${f.key}` }, f.doc.replace(/`/g, '')), err);
    };
    clear(
      form,
      h('fieldset.essential', h('legend', t('train_form')), ESSENTIAL.map((k) => fields.find((f) => f.key === k)).filter((f): f is FieldInfo => !!f).map(row)),
      [...groups].map(([g, fs]) => h('details.group', h('summary', g), fs.map(row))),
    );
  };

  const setValues = (cfg: Record<string, unknown>) => {
    for (const f of fields) controls.get(f.key)?.set(cfg[f.key]);
    const ds = cfg['train_data_dir'];
    if (typeof ds === 'string' && ![...datasetSelect.options].some((o) => o.value === ds)) datasetSelect.append(h('option', { value: ds }, ds));
    if (typeof ds === 'string') datasetSelect.value = ds;
    checkSoon();
  };

  const yamlInput = h('input#yaml-file', { type: 'file', accept: '.yaml,.yml,text/yaml', class: 'visually-hidden' });
  yamlInput.addEventListener('change', async () => {
    const f = yamlInput.files?.[0];
    if (!f) return;
    try {
      const cfg = parseYaml(await f.text());
      if (!cfg || typeof cfg !== 'object') throw new Error(`${f.name}: not a mapping of key: value lines`);
      setValues(cfg as Record<string, unknown>);
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
    yamlInput.value = '';
  });
  const saveYaml = () => {
    const v = values();
    download(`${String(v['output_name'] ?? 'lora')}.yaml`, stringifyYaml(v, { lineWidth: 0 }), 'text/yaml');
  };

  // ---- runs
  const chart = lossChart();
  const runInfo = h('div.run-info#run-info', { 'aria-live': 'polite' });
  const runList = h('tbody#run-list');
  const detail = h('div.run-detail#run-detail');
  const samplesBox = h('div.samples#samples');
  const logBox = h('pre.log#train-log');
  const filesBox = h('ul.files#run-files');
  let selected: string | null = null;
  /** The selected run as last fetched; socket progress is drawn over it. */
  let shown: any = null;
  let lastDetail = 0;
  const sampleUrls = new Map<string, string>();

  const toPoint = (p: { step: number; loss: number | null; lossAverage?: number | null; loss_average?: number | null; lrs?: Record<string, number> | null; lr?: Record<string, number> | null; gradNorm?: number | null; grad_norm?: number | null }): ChartPoint => ({
    step: p.step,
    loss: p.loss,
    lossAverage: p.lossAverage ?? p.loss_average ?? null,
    lr: (p.lrs ?? p.lr)?.['unet'] ?? Object.values(p.lrs ?? p.lr ?? {})[0] ?? null,
    gradNorm: p.gradNorm ?? p.grad_norm ?? null,
  });

  const relPath = (workDir: string, p: string) => (p.startsWith(workDir) ? p.slice(workDir.length).replace(/^[\\/]+/, '') : p);

  const showDetail = async (id: string) => {
    selected = id;
    lastDetail = Date.now();
    try {
      const j = await api.get<any>(`sdapi/v1/train/jobs/${encodeURIComponent(id)}`);
      if (selected !== id) return;
      shown = j;
      chart.set((j.loss_history as any[]).map(toPoint));
      renderInfo(j);
      logBox.textContent = (j.logs as string[]).join('\n');
      logBox.scrollTop = logBox.scrollHeight;
      const workDir: string = j.outputs.work_dir;
      for (const s of j.outputs.samples as { step: number; path: string; prompt: string }[]) {
        if (sampleUrls.has(s.path)) continue;
        sampleUrls.set(s.path, '');
        void api.blobUrl(`sdapi/v1/train/jobs/${encodeURIComponent(id)}/file?path=${encodeURIComponent(relPath(workDir, s.path))}`).then((u) => {
          sampleUrls.set(s.path, u);
          samplesBox.append(h('figure', h('img', { src: u, alt: s.prompt }), h('figcaption', `${t('step')} ${s.step}: ${s.prompt}`)));
        }, () => {});
      }
      const files = await api.get<{ path: string; size: number }[]>(`sdapi/v1/train/jobs/${encodeURIComponent(id)}/files`).catch(() => []);
      clear(filesBox, files.map((f) => h('li', h('button.link', { type: 'button', onclick: async () => download(f.path.split('/').pop()!, await (await api.raw(`sdapi/v1/train/jobs/${encodeURIComponent(id)}/file?path=${encodeURIComponent(f.path)}`)).blob()) }, f.path), ` (${(f.size / 1024).toFixed(1)} KiB)`)));
      renderActions(j);
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };

  const actions = h('div.row.run-actions#run-actions');
  const renderActions = (j: any) => {
    clear(
      actions,
      ['queued', 'running'].includes(j.status) ? h('button#cancel-run', { type: 'button', onclick: () => void api.post(`sdapi/v1/train/jobs/${encodeURIComponent(j.id)}/cancel`).then(() => refreshRuns(), (e) => app.notify(errorText(e), 'error')) }, t('cancel')) : null,
      j.status === 'done' && j.lora ? h('button.primary#use-lora', { type: 'button', onclick: () => emit(app, 'use-lora', j.output_name) }, t('use_in_generate')) : null,
      j.actions?.resume ? h('button#resume-run', { type: 'button', onclick: () => void resume(j) }, t('resume')) : null,
    );
  };
  const renderInfo = (j: any) => {
    const p = j.progress ?? {};
    runInfo.dataset['job'] = j.id;
    clear(runInfo,
      h('strong', `${j.output_name} `), h('span.status', { class: `status-${j.status}`, 'data-status': j.status }, j.status),
      ` · ${t('step')} ${p.step ?? j.step ?? 0}/${p.total_steps ?? j.total_steps ?? '?'}`,
      p.epochs ? ` · ${t('epoch')} ${p.epoch}/${p.epochs}` : '',
      p.loss != null ? ` · ${t('loss')} ${Number(p.loss).toFixed(4)}` : '',
      j.status === 'running' ? ` · ${t('eta')} ${fmtTime(p.eta_seconds)}` : '',
      j.error ? h('div.error', j.error) : null,
    );
  };

  // The server's resume action queues the run's own config again with resume_from = its newest state.
  const resume = async (j: any) => {
    try {
      const r = await api.post(`sdapi/v1/train/jobs/${encodeURIComponent(j.id)}/resume?overwrite=true`);
      await refreshRuns();
      await showDetail(r.id);
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };

  const refreshRuns = async () => {
    try {
      const jobs = await api.get<any[]>('sdapi/v1/train/jobs');
      clear(
        runList,
        jobs.length === 0
          ? h('tr', h('td', { colSpan: 5 }, t('no_runs')))
          : [...jobs].reverse().map((j) =>
              h('tr', { 'data-id': j.id, 'aria-selected': String(j.id === selected) },
                h('td', h('button.link', { type: 'button', onclick: () => void showDetail(j.id) }, j.output_name)),
                h('td', h('span.status', { class: `status-${j.status}` }, j.status)),
                h('td', `${j.step}/${j.total_steps ?? '?'}`),
                h('td', j.loss == null ? '–' : Number(j.loss).toFixed(4)),
                h('td.muted', new Date(j.created_at).toLocaleString()),
              ),
            ),
      );
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };

  const start = async (overwrite = false) => {
    const cfg = values();
    try {
      const r = await api.post(`sdapi/v1/train/jobs${overwrite ? '?overwrite=true' : ''}`, cfg);
      for (const w of r.warnings ?? []) app.notify(w, 'info');
      samplesBox.replaceChildren();
      await refreshRuns();
      await showDetail(r.id);
    } catch (e) {
      if (e instanceof ApiError && e.status === 409 && /already has/.test(e.message) && confirm(`${e.message}\n\nOverwrite?`)) return start(true);
      if (e instanceof ApiError && e.status === 422) clear(summary, showIssues(e.issues()).map((m) => h('div.error', m)));
      app.notify(errorText(e), 'error');
    }
  };

  app.socket.on('train-progress', (p: any) => {
    if (p.id !== selected) return;
    if (p.phase === 'training' && p.loss != null) chart.add(toPoint(p));
    runInfo.dataset['phase'] = p.phase;
    if (shown?.id === p.id) renderInfo({ ...shown, status: 'running', progress: p });
    if (Date.now() - lastDetail > 5000) void showDetail(p.id);
  });
  app.socket.on('train-log', (l: any) => {
    if (l.id !== selected) return;
    logBox.textContent += `${logBox.textContent ? '\n' : ''}${l.message}`;
    logBox.scrollTop = logBox.scrollHeight;
  });
  app.socket.on('job-end', (e: any) => {
    if (e.job !== 'train_lora') return;
    void refreshRuns();
    if (e.id === selected) void showDetail(e.id);
    if (e.status === 'done') emit(app, 'loras-changed');
  });
  app.socket.on('job-start', (e: any) => e.job === 'train_lora' && void refreshRuns());

  const refreshChoices = async () => {
    try {
      const [ds, ckpts] = await Promise.all([api.get<{ name: string }[]>('sdapi/v1/train/datasets'), api.get<{ title: string; model_name: string }[]>('sdapi/v1/sd-models')]);
      const keepD = datasetSelect.value;
      clear(datasetSelect, h('option', { value: '' }, '—'), ds.map((d) => h('option', { value: `datasets/${d.name}` }, d.name)));
      datasetSelect.value = keepD;
      const keepC = ckptSelect.value;
      clear(ckptSelect, h('option', { value: '' }, `(${t('active')})`), ckpts.map((c) => h('option', { value: c.model_name }, c.title)));
      ckptSelect.value = keepC;
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };
  app.events.addEventListener('datasets-changed', () => void refreshChoices());

  const load = async () => {
    try {
      const s = await api.get<{ json_schema: { properties: Record<string, JsonProp> }; fields: FieldInfo[] }>('sdapi/v1/train/config-schema');
      fields = s.fields;
      props = s.json_schema.properties;
      buildForm();
      await refreshChoices();
      await refreshRuns();
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };
  void load();

  return h(
    'section.tab-train',
    h('div.col.main-col',
      h('div.row.actions',
        h('button.primary#start-training', { type: 'button', onclick: () => void start() }, t('start_training')),
        h('label.button', { htmlFor: 'yaml-file', tabIndex: 0, onkeydown: (e: KeyboardEvent) => (e.key === 'Enter' || e.key === ' ') && yamlInput.click() }, t('load_yaml')),
        yamlInput,
        h('button#save-yaml', { type: 'button', onclick: saveYaml }, t('save_yaml')),
        h('button#expand-all', { type: 'button', onclick: () => form.querySelectorAll('details').forEach((d) => (d.open = true)) }, t('advanced')),
      ),
      summary,
      form,
    ),
    h('div.col.side-col',
      runInfo,
      chart.root,
      actions,
      h('h3', t('samples')), samplesBox,
      h('h3', t('runs')),
      h('table.runs', h('thead', h('tr', h('th', 'output_name'), h('th', t('status')), h('th', t('step')), h('th', t('loss')), h('th', ''))), runList),
      detail,
      h('details', h('summary', t('logs')), logBox),
      h('details', h('summary', t('files')), filesBox),
    ),
  );
}
