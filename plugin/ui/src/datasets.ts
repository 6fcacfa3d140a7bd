/**
 * The Datasets tab: create a dataset by dropping a folder (zipped here, keeping sub-folders such as kohya
 * `10_name`), a .zip or images; a thumbnail grid with every caption editable in place; find/replace, a
 * trigger-word prefix and tag counts over all captions; auto-labelling when the server has a captioning
 * model; the trainer's bucket and crop for each image. Edits are saved with the caption each one started
 * from, so the server refuses (409) to overwrite a caption that changed meanwhile instead of losing it.
 */
import { zipSync } from 'fflate';
import { h, clear, field, debounce } from './dom.ts';
import { t } from './i18n.ts';
import { prefixTrigger, tagCounts } from './prompt-text.ts';
import { ApiError } from './api.ts';
import { errorText, type App } from './app.ts';

interface Item {
  key: string;
  caption: string;
  caption_source: string;
  width: number;
  height: number;
  bucket: string;
  resized: { width: number; height: number };
  crop: { left: number; top: number; width: number; height: number };
}

interface DatasetInfo {
  name: string;
  images: number;
  captioned: number;
  error: string | null;
}

/** Every file under a dropped folder, with its path relative to the drop. */
async function walk(entry: FileSystemEntry, prefix = ''): Promise<{ path: string; file: File }[]> {
  if (entry.isFile) {
    const file = await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej));
    return [{ path: prefix + entry.name, file }];
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  const out: { path: string; file: File }[] = [];
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
    if (batch.length === 0) break;
    for (const e of batch) if (!e.name.startsWith('.')) out.push(...(await walk(e, `${prefix}${entry.name}/`)));
  }
  return out;
}

export function datasetsTab(app: App): HTMLElement {
  const { api } = app;
  let current: string | null = null;
  let items: Item[] = [];
  /** Edited captions not saved yet: key → {caption, before}. */
  const dirty = new Map<string, { caption: string; before: string }>();
  const thumbs = new Map<string, string>();

  const list = h('ul.dataset-list', { role: 'list' });
  const nameInput = h('input#dataset-name', { type: 'text', placeholder: 'my_style', pattern: '[A-Za-z0-9][A-Za-z0-9_.-]{0,63}', 'aria-label': t('new_dataset') });
  const fileInput = h('input#dataset-files', { type: 'file', multiple: true, accept: '.png,.jpg,.jpeg,.webp,.txt,.csv,.jsonl,.zip', class: 'visually-hidden' });
  const drop = h('label.dropzone#dataset-drop', { htmlFor: 'dataset-files', tabIndex: 0 }, t('drop_dataset'));
  const folderInput = h('input#dataset-folder', { type: 'file', multiple: true, webkitdirectory: true, class: 'visually-hidden' });
  const folderButton = h('label.button', { htmlFor: 'dataset-folder', tabIndex: 0, onkeydown: (e: KeyboardEvent) => (e.key === 'Enter' || e.key === ' ') && (e.preventDefault(), folderInput.click()) }, t('choose_folder'));
  const status = h('div.muted#dataset-status', { 'aria-live': 'polite' });
  const grid = h('div.caption-grid#caption-grid');
  const saveBtn = h('button.primary#save-captions', { type: 'button', disabled: true }, t('save_captions'));
  const dirtyCount = h('span.muted#dirty-count');
  const findInput = h('input#find', { type: 'text' });
  const replaceInput = h('input#replace', { type: 'text' });
  const triggerInput = h('input#trigger', { type: 'text' });
  const counts = h('div.tag-counts#tag-counts');
  const labelMode = h('select#label-mode', h('option', { value: 'missing' }, t('label_missing')), h('option', { value: 'overwrite' }, t('label_overwrite')), h('option', { value: 'append' }, t('label_append')));
  const labelStatus = h('div.muted#label-status', { 'aria-live': 'polite' });
  const reso = h('input#bucket-reso', { type: 'number', min: '64', max: '4096', step: '64', value: '512' });
  const showBuckets = h('input#show-buckets', { type: 'checkbox' });

  const captionOf = (i: Item) => dirty.get(i.key)?.caption ?? i.caption;
  const markDirty = () => {
    saveBtn.disabled = dirty.size === 0;
    dirtyCount.textContent = dirty.size ? `${dirty.size} ${t('unsaved')}` : '';
    renderCounts();
  };
  const edit = (i: Item, caption: string) => {
    const before = dirty.get(i.key)?.before ?? i.caption;
    if (caption.trim() === before) dirty.delete(i.key);
    else dirty.set(i.key, { caption, before });
    markDirty();
  };

  const renderCounts = () => {
    const c = tagCounts(items.map(captionOf)).slice(0, 40);
    clear(counts, c.map(([tag, n]) => h('button.tag', { type: 'button', title: `${t('find')}: ${tag}`, onclick: () => (findInput.value = tag) }, `${tag} `, h('span.count', String(n)))));
  };

  const cell = (i: Item): HTMLElement => {
    const img = h('img', { alt: i.key, width: 160, height: Math.round((160 * i.height) / i.width) });
    const cached = thumbs.get(i.key);
    if (cached) img.src = cached;
    else
      void api.blobUrl(`sdapi/v1/train/datasets/${encodeURIComponent(current!)}/image?key=${encodeURIComponent(i.key)}&size=192`).then(
        (u) => (thumbs.set(i.key, u), (img.src = u)),
        () => {},
      );
    const box = h('div.thumb-box', img);
    if (showBuckets.checked && i.resized?.width) {
      // The crop the trainer takes, drawn over the whole image in image coordinates.
      const sx = 100 / i.resized.width;
      const sy = 100 / i.resized.height;
      box.append(h('div.crop', { style: { left: `${i.crop.left * sx}%`, top: `${i.crop.top * sy}%`, width: `${i.crop.width * sx}%`, height: `${i.crop.height * sy}%` } }), h('span.bucket-label', i.bucket));
    }
    const ta = h('textarea.caption', { rows: 3, value: captionOf(i), 'aria-label': `caption ${i.key}`, 'data-key': i.key });
    ta.addEventListener('input', () => edit(i, ta.value.replace(/[\r\n]+/g, ' ')));
    ta.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') e.preventDefault();
      if (e.key === 's' && (e.ctrlKey || e.metaKey)) (e.preventDefault(), void save());
    });
    return h('div.caption-cell', { 'data-key': i.key }, box, h('div.key.muted', `${i.key} · ${i.width}×${i.height}${i.caption_source !== 'metadata' ? ` · ${i.caption_source}` : ''}`), ta);
  };
  const renderGrid = () => clear(grid, items.map(cell));

  const loadItems = async () => {
    if (!current) return;
    const q = showBuckets.checked ? `?resolution=${Number(reso.value) || 512}` : '';
    try {
      const r = await api.get<{ items: Item[]; warnings: string[] }>(`sdapi/v1/train/datasets/${encodeURIComponent(current)}/items${q}`);
      items = r.items;
      renderGrid();
      renderCounts();
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };

  const save = async () => {
    if (!current || dirty.size === 0) return;
    const edits = [...dirty].map(([key, d]) => ({ key, caption: d.caption.trim(), before: d.before }));
    try {
      const r = await api.post<{ items: Item[]; metadata: string }>(`sdapi/v1/train/datasets/${encodeURIComponent(current)}/captions`, { edits });
      dirty.clear();
      items = r.items.map((n) => ({ ...(items.find((o) => o.key === n.key) ?? n), ...n }));
      status.textContent = `${t('saved')} ${r.metadata}`;
      markDirty();
      renderGrid();
      void refreshList();
    } catch (e) {
      if (e instanceof ApiError && e.status === 409 && /changed on the server/.test(e.message)) {
        // Keep the edits whose starting caption is still on disk; drop the ones overtaken, after showing them.
        app.notify(`${t('conflict')} ${e.message}`, 'error');
        const fresh = await api.get<{ items: Item[] }>(`sdapi/v1/train/datasets/${encodeURIComponent(current)}/items`);
        const now = new Map(fresh.items.map((i) => [i.key, i.caption]));
        for (const [key, d] of [...dirty]) if (now.get(key) !== d.before) dirty.delete(key);
        items = fresh.items;
        markDirty();
        renderGrid();
      } else app.notify(errorText(e), 'error');
    }
  };
  saveBtn.addEventListener('click', () => void save());

  const bulk = (fn: (caption: string) => string) => {
    for (const i of items) {
      const next = fn(captionOf(i));
      if (next !== captionOf(i)) edit(i, next);
    }
    renderGrid();
  };
  const replaceAll = () => {
    const f = findInput.value;
    if (f) bulk((c) => c.split(f).join(replaceInput.value).replace(/\s*,\s*(,\s*)+/g, ', ').replace(/^[\s,]+|[\s,]+$/g, ''));
  };
  const prefixAll = () => triggerInput.value.trim() && bulk((c) => prefixTrigger(c, triggerInput.value));

  const open = async (name: string) => {
    if (dirty.size && current !== name && !confirm(`${dirty.size} ${t('unsaved')}`)) return;
    current = name;
    dirty.clear();
    for (const u of thumbs.values()) URL.revokeObjectURL(u);
    thumbs.clear();
    markDirty();
    for (const li of list.querySelectorAll('[aria-current]')) li.removeAttribute('aria-current');
    list.querySelector(`[data-name="${CSS.escape(name)}"]`)?.setAttribute('aria-current', 'true');
    await loadItems();
  };

  let known: string[] = [];
  const remove = async (name: string) => {
    if (!confirm(`${name}: ${t('confirm_delete')}`)) return;
    try {
      await api.del(`sdapi/v1/train/datasets/${encodeURIComponent(name)}`);
      if (current === name) {
        current = null;
        items = [];
        dirty.clear();
        markDirty();
        renderGrid();
      }
      await refreshList();
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };
  const refreshList = async () => {
    try {
      const ds = await api.get<DatasetInfo[]>('sdapi/v1/train/datasets');
      known = ds.map((d) => d.name);
      clear(
        list,
        ds.map((d) =>
          h('li', { 'data-name': d.name, 'aria-current': d.name === current ? 'true' : null },
            h('button.link', { type: 'button', onclick: () => void open(d.name) }, h('strong', d.name), ` ${d.images} ${t('images')}, ${d.captioned} ${t('captioned')}`),
            h('button.icon', { type: 'button', title: t('delete'), 'aria-label': `${t('delete')} ${d.name}`, onclick: () => void remove(d.name) }, '×'),
            d.error ? h('div.error', d.error) : null,
          ),
        ),
      );
      app.events.dispatchEvent(new CustomEvent('datasets-changed', { detail: ds.map((d) => d.name) }));
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };

  const uploadFiles = async (files: { path: string; file: File }[]) => {
    const name = nameInput.value.trim() || current;
    if (!name) return app.notify(t('new_dataset'), 'error'), nameInput.focus();
    const form = new FormData();
    const nested = files.some((f) => f.path.includes('/'));
    if (nested) {
      // Folders travel as one zip (multipart names carry no folders); images are stored, not recompressed.
      const tree: Record<string, [Uint8Array, { level: 0 }]> = {};
      const root = files.every((f) => f.path.includes('/')) && new Set(files.map((f) => f.path.split('/')[0])).size === 1;
      for (const f of files) tree[root ? f.path.slice(f.path.indexOf('/') + 1) : f.path] = [new Uint8Array(await f.file.arrayBuffer()), { level: 0 }];
      form.append('files', new Blob([zipSync(tree) as Uint8Array<ArrayBuffer>], { type: 'application/zip' }), `${name}.zip`);
    } else for (const f of files) form.append('files', f.file, f.path);
    // Uploading to a name that exists replaces that dataset: only after the user agrees.
    const replace = known.includes(name);
    if (replace && !confirm(`${name}: ${t('confirm_replace')}`)) return;
    status.textContent = t('uploading');
    try {
      await api.form(`sdapi/v1/train/datasets/${encodeURIComponent(name)}${replace ? '?replace=true' : ''}`, form);
      status.textContent = '';
      await refreshList();
      await open(name);
    } catch (e) {
      status.textContent = '';
      app.notify(errorText(e), 'error');
    }
  };
  fileInput.addEventListener('change', () => void uploadFiles([...(fileInput.files ?? [])].map((file) => ({ path: file.name, file }))));
  folderInput.addEventListener('change', () => {
    const picked = [...(folderInput.files ?? [])].filter((f) => !f.name.startsWith('.'));
    const top = picked[0]?.webkitRelativePath.split('/')[0];
    if (!nameInput.value && top) nameInput.value = top.replace(/[^A-Za-z0-9_.-]/g, '_');
    void uploadFiles(picked.map((file) => ({ path: file.webkitRelativePath || file.name, file })));
    folderInput.value = '';
  });
  drop.addEventListener('keydown', (e) => (e.key === 'Enter' || e.key === ' ') && (e.preventDefault(), fileInput.click()));
  drop.addEventListener('dragover', (e) => (e.preventDefault(), drop.classList.add('over')));
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', async (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const entries = [...(e.dataTransfer?.items ?? [])].map((i) => i.webkitGetAsEntry?.()).filter((x): x is FileSystemEntry => !!x);
    if (entries.some((x) => x.isDirectory)) {
      const all = (await Promise.all(entries.map((x) => walk(x)))).flat();
      if (!nameInput.value && entries.length === 1) nameInput.value = entries[0]!.name.replace(/[^A-Za-z0-9_.-]/g, '_');
      await uploadFiles(all);
    } else await uploadFiles([...(e.dataTransfer?.files ?? [])].map((file) => ({ path: file.name, file })));
  });

  // Auto-labelling through the labelling jobs' REST routes. The models list decides whether the button can
  // work at all: with no usable captioning model (or no labelling routes) the page says so instead of failing.
  const labelBtn = h('button#auto-label', { type: 'button' }, t('auto_label'));
  let labelJob: string | null = null;
  const usable = (ms: { kind: string | null; error: string | null }[] | undefined) => (ms ?? []).some((m) => m.kind && !m.error);
  const labelAvailable = async (): Promise<boolean> => {
    const models = await api.get<{ clip: any[]; wd14: any[]; folders: { clip: string; wd14: string } }>('sdapi/v1/label/models').catch(() => null);
    if (models && (usable(models.clip) || usable(models.wd14))) return true;
    labelStatus.textContent = `${t('no_label_model')}${models ? ` (${models.folders.clip}, ${models.folders.wd14})` : ''}`;
    labelStatus.classList.add('error');
    labelStatus.dataset['state'] = 'no-model';
    return false;
  };
  labelBtn.addEventListener('click', async () => {
    if (!current || !(await labelAvailable())) return;
    labelStatus.classList.remove('error');
    labelStatus.textContent = t('labelling');
    try {
      const r = await api.post<{ id: string }>('sdapi/v1/label', { dataset: current, mode: labelMode.value });
      labelJob = r.id;
      labelBtn.disabled = true;
      const poll = async () => {
        const j = await api.get<any>(`sdapi/v1/label/jobs/${encodeURIComponent(r.id)}`).catch(() => null);
        if (j && ['queued', 'running'].includes(j.status)) return void setTimeout(poll, 1500);
        labelBtn.disabled = false;
        labelJob = null;
        labelStatus.textContent = j ? `${j.status}${j.changed !== undefined ? ` · ${j.changed}` : ''}${j.error ? `: ${j.error}` : ''}` : '';
        await loadItems();
      };
      setTimeout(poll, 1000);
    } catch (e) {
      labelStatus.textContent = e instanceof ApiError && e.status >= 400 && e.status < 500 ? `${t('no_label_model')} (${e.message})` : errorText(e);
      labelStatus.classList.add('error');
    }
  });
  app.socket.on('label-progress', (p: any) => {
    if (labelJob && p?.id === labelJob) labelStatus.textContent = `${t('labelling')} ${p.done ?? p.step ?? ''}/${p.total ?? ''}`;
  });

  showBuckets.addEventListener('change', () => void loadItems());
  reso.addEventListener('input', debounce(() => showBuckets.checked && void loadItems(), 500));
  window.addEventListener('beforeunload', (e) => {
    if (dirty.size) e.preventDefault();
  });
  void refreshList();

  return h(
    'section.tab-datasets',
    h('div.col.side-col',
      h('h3', t('datasets')),
      list,
      field(t('new_dataset'), nameInput),
      drop,
      fileInput,
      h('div.row', folderButton),
      folderInput,
      status,
    ),
    h('div.col.main-col',
      h('div.row.actions', saveBtn, dirtyCount),
      h('details.tools', { open: true },
        h('summary', `${t('find')} / ${t('trigger_word')} / ${t('tag_counts')}`),
        h('div.row', field(t('find'), findInput), field(t('replace_with'), replaceInput), h('button#replace-all', { type: 'button', onclick: replaceAll }, t('replace_all'))),
        h('div.row', field(t('trigger_word'), triggerInput), h('button#prefix-all', { type: 'button', onclick: prefixAll }, t('prefix_all'))),
        h('div.row', field(t('label_mode'), labelMode), labelBtn, labelStatus),
        h('div.row', h('label', showBuckets, ` ${t('bucket_preview')} `), reso),
        counts,
      ),
      grid,
    ),
  );
}
