/**
 * The Generate tab: prompts with colouring and `<lora:` completion, a LoRA picker (name, preview, trigger
 * words and tags from `ss_*` metadata, base model, rank/alpha) whose weight sliders follow the tags in the
 * prompt, sampler settings, txt2img / img2img / inpaint with a painted mask, live progress with previews
 * over socket.io, interrupt and skip, a gallery with each image's infotext, and PNG info by drop.
 */
import { h, clear, field, fileToBase64 } from './dom.ts';
import { t } from './i18n.ts';
import { promptEditor } from './prompt-editor.ts';
import { addLoraTag, findLoraTags, formatWeight, removeLoraTag, setLoraWeight } from './prompt-text.ts';
import { errorText, type App } from './app.ts';

/** Width and height for a checkpoint whose config states no size: SD 1.x's 512. */
const DEFAULT_SIZE = 512;

interface Lora {
  name: string;
  alias: string;
  path: string;
  metadata: Record<string, any>;
}

interface GalleryImage {
  src: string;
  infotext: string;
  seed: number;
}

type Mode = 'txt2img' | 'img2img' | 'inpaint';

/** Trigger words and the most frequent training tags, from kohya's ss_tag_frequency. */
function loraTags(md: Record<string, any>): string[] {
  const freq = md['ss_tag_frequency'];
  if (!freq || typeof freq !== 'object') return [];
  const n = new Map<string, number>();
  for (const set of Object.values(freq as Record<string, Record<string, number>>)) for (const [tag, c] of Object.entries(set ?? {})) n.set(tag.trim(), (n.get(tag.trim()) ?? 0) + Number(c));
  return [...n].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([tag]) => tag);
}

export function generateTab(app: App): HTMLElement {
  const { api } = app;
  let loras: Lora[] = [];
  let previews = new Set<string>();
  let lastSeed = -1;
  let running = false;
  let mode: Mode = 'txt2img';
  let initImage: string | null = null;
  const gallery: GalleryImage[] = [];

  const prompt = promptEditor({ id: 'prompt', label: t('prompt'), loraNames: () => loras.map((l) => l.alias) });
  const negative = promptEditor({ id: 'negative', label: t('negative_prompt'), loraNames: () => [], rows: 2 });

  const num = (id: string, value: number, min: number, max: number, step = 1) => h('input', { id, type: 'number', value: String(value), min: String(min), max: String(max), step: String(step) });
  const sampler = h('select#sampler');
  const scheduler = h('select#scheduler');
  const steps = num('steps', 20, 1, 150);
  const cfg = num('cfg', 7, 1, 30, 0.5);
  const seed = num('seed', -1, -1, 4294967295);
  const width = num('width', DEFAULT_SIZE, 64, 2048, 8);
  const height = num('height', DEFAULT_SIZE, 64, 2048, 8);
  const batchSize = num('batch-size', 1, 1, 8);
  const batchCount = num('batch-count', 1, 1, 16);
  const hires = h('input#hires', { type: 'checkbox' });
  const hrScale = num('hr-scale', 2, 1, 4, 0.05);
  const hrSteps = num('hr-steps', 0, 0, 150);
  const denoise = num('denoise', 0.7, 0, 1, 0.01);
  const upscaler = h('select#upscaler');
  const hrDenoise = num('hr-denoise', 0.7, 0, 1, 0.01);
  const hiresBox = h('div.row.hires-opts', { hidden: true }, field(t('hr_scale'), hrScale), field(t('hr_steps'), hrSteps), field(t('upscaler'), upscaler), field(t('denoise'), hrDenoise));
  hires.addEventListener('change', () => (hiresBox.hidden = !hires.checked));

  // ---- LoRA picker and the weight sliders of the tags in the prompt
  const filter = h('input#lora-filter', { type: 'search', placeholder: t('lora_filter'), 'aria-label': t('lora_filter') });
  const loraList = h('div.lora-cards', { role: 'list' });
  const inPrompt = h('div.lora-weights', { 'aria-live': 'polite' });
  const previewUrls = new Map<string, string>();

  const card = (l: Lora): HTMLElement => {
    const md = l.metadata ?? {};
    const tags = loraTags(md);
    const img = h('div.lora-thumb', l.alias.slice(0, 2));
    if (previews.has(l.name)) {
      const cached = previewUrls.get(l.name);
      const put = (u: string) => clear(img, h('img', { src: u, alt: '' }));
      if (cached) put(cached);
      else void api.blobUrl(`sdapi/v1/loras/${encodeURIComponent(l.name)}/preview`).then((u) => (previewUrls.set(l.name, u), put(u)), () => {});
    }
    const base = md['ss_sd_model_name'] ?? md['ss_base_model_version'] ?? '';
    const rank = md['ss_network_dim'];
    const alpha = md['ss_network_alpha'];
    return h(
      'div.lora-card',
      { role: 'listitem', 'data-lora': l.alias },
      img,
      h('div.lora-info',
        h('strong', l.alias),
        base ? h('div.muted', `${t('base_model')}: ${base}`) : null,
        rank !== undefined ? h('div.muted', `${t('rank_alpha')}: ${rank} / ${alpha ?? '?'}`) : null,
        tags.length ? h('div.tags', `${t('trigger_words')}: `, tags.map((tag) => h('button.tag', { type: 'button', title: tag, onclick: () => insertText(tag) }, tag))) : null,
      ),
      h('button.add-lora', { type: 'button', 'aria-label': `${t('add')} ${l.alias}`, onclick: () => setPrompt(addLoraTag(prompt.value, l.alias, 1)) }, t('add')),
    );
  };
  const renderLoras = () => {
    const f = filter.value.toLowerCase();
    const shown = loras.filter((l) => l.alias.toLowerCase().includes(f) || l.name.toLowerCase().includes(f));
    clear(loraList, loras.length === 0 ? h('p.muted', t('no_loras')) : shown.map(card));
  };
  filter.addEventListener('input', renderLoras);

  const renderWeights = () => {
    const tags = findLoraTags(prompt.value);
    const seen = new Set<string>();
    clear(
      inPrompt,
      tags.length ? h('div.muted', t('in_prompt')) : null,
      tags
        .filter((tag) => !seen.has(tag.name) && (seen.add(tag.name), true))
        .map((tag) => {
          const slider = h('input', { type: 'range', min: '-1', max: '2', step: '0.05', value: String(tag.weight), 'aria-label': `${t('weight')} ${tag.name}`, 'data-lora-weight': tag.name });
          const shown = h('output', formatWeight(tag.weight));
          slider.addEventListener('input', () => {
            shown.textContent = formatWeight(Number(slider.value));
            prompt.value = setLoraWeight(prompt.value, tag.name, Number(slider.value));
          });
          return h('div.weight-row', h('span.lora-name', tag.name), slider, shown, h('button.icon', { type: 'button', 'aria-label': `${t('delete')} ${tag.name}`, onclick: () => setPrompt(removeLoraTag(prompt.value, tag.name)) }, '×'));
        }),
    );
  };
  const setPrompt = (v: string) => {
    prompt.value = v;
    renderWeights();
  };
  const insertText = (text: string) => setPrompt(prompt.value.trim() ? `${prompt.value.replace(/[\s,]*$/, '')}, ${text}` : text);
  prompt.onChange(renderWeights);

  // ---- img2img / inpaint input with mask painting
  const modeSelect = h('select#mode', { 'aria-label': t('mode') }, h('option', { value: 'txt2img' }, t('mode_txt2img')), h('option', { value: 'img2img' }, t('mode_img2img')), h('option', { value: 'inpaint' }, t('mode_inpaint')));
  const initImg = h('img.init-image', { alt: t('init_image') });
  const maskCanvas = h('canvas.mask-canvas', { 'aria-label': 'mask' });
  const brush = num('brush', 24, 2, 200);
  const initBox = h('div.init-box', { hidden: true },
    h('div.row', field(t('init_image'), h('input#init-file', { type: 'file', accept: 'image/*', onchange: async (e: Event) => {
      const f = (e.target as HTMLInputElement).files?.[0];
      if (f) setInit(await fileToBase64(f));
    } })), field(t('denoise'), denoise)),
    h('div.mask-stage', initImg, maskCanvas),
    h('div.row.mask-tools', field(t('brush'), brush), h('button', { type: 'button', onclick: () => maskCanvas.getContext('2d')!.clearRect(0, 0, maskCanvas.width, maskCanvas.height) }, t('clear_mask'))),
  );
  const setMode = (m: Mode) => {
    mode = m;
    modeSelect.value = m;
    initBox.hidden = m === 'txt2img';
    maskCanvas.hidden = m !== 'inpaint';
    initBox.querySelector<HTMLElement>('.mask-tools')!.hidden = m !== 'inpaint';
  };
  modeSelect.addEventListener('change', () => setMode(modeSelect.value as Mode));
  const setInit = (src: string) => {
    initImage = src;
    initImg.src = src;
    initImg.onload = () => {
      maskCanvas.width = initImg.naturalWidth;
      maskCanvas.height = initImg.naturalHeight;
      width.value = String(initImg.naturalWidth);
      height.value = String(initImg.naturalHeight);
    };
  };
  let painting = false;
  const paint = (e: PointerEvent) => {
    if (!painting) return;
    const r = maskCanvas.getBoundingClientRect();
    const sx = maskCanvas.width / r.width;
    const c = maskCanvas.getContext('2d')!;
    c.fillStyle = 'rgba(255,255,255,1)';
    c.beginPath();
    c.arc((e.clientX - r.left) * sx, (e.clientY - r.top) * (maskCanvas.height / r.height), (Number(brush.value) / 2) * sx, 0, Math.PI * 2);
    c.fill();
  };
  maskCanvas.addEventListener('pointerdown', (e) => ((painting = true), maskCanvas.setPointerCapture(e.pointerId), paint(e)));
  maskCanvas.addEventListener('pointermove', paint);
  maskCanvas.addEventListener('pointerup', () => (painting = false));
  const maskPng = (): string => {
    // The painted strokes as A1111's mask: white = repaint, black = keep.
    const out = h('canvas', { width: maskCanvas.width, height: maskCanvas.height });
    const c = out.getContext('2d')!;
    c.fillStyle = '#000';
    c.fillRect(0, 0, out.width, out.height);
    c.drawImage(maskCanvas, 0, 0);
    return out.toDataURL('image/png');
  };

  // ---- progress, gallery, png info
  const bar = h('progress#gen-progress', { max: 1, value: 0, hidden: true });
  const progressText = h('div.muted#gen-progress-text', { 'aria-live': 'polite' });
  const livePreview = h('img.live-preview', { alt: '', hidden: true });
  const galleryGrid = h('div.gallery#gallery', { role: 'list' });
  const infoBox = h('pre.infotext#infotext');
  const galleryActions = h('div.row.gallery-actions', { hidden: true });
  let selected: GalleryImage | null = null;

  const select = (g: GalleryImage) => {
    selected = g;
    for (const el of galleryGrid.querySelectorAll('.selected')) el.classList.remove('selected');
    galleryGrid.querySelector(`[data-index="${gallery.indexOf(g)}"]`)?.classList.add('selected');
    infoBox.textContent = g.infotext;
    galleryActions.hidden = false;
  };
  clear(galleryActions,
    h('button', { type: 'button', onclick: () => selected && (setMode('img2img'), setInit(selected.src)) }, t('send_img2img')),
    h('button', { type: 'button', onclick: () => selected && (setMode('inpaint'), setInit(selected.src)) }, t('send_inpaint')),
    h('button', { type: 'button', onclick: () => selected && (seed.value = String(selected.seed)) }, t('use_seed')),
  );
  const renderGallery = () =>
    clear(galleryGrid, gallery.map((g, i) => h('button.thumb', { type: 'button', role: 'listitem', 'data-index': String(i), 'aria-label': `image ${i + 1}, seed ${g.seed}`, onclick: () => select(g) }, h('img', { src: g.src, alt: `seed ${g.seed}` }))));

  const pngInfoOut = h('div.png-info-out');
  const readPng = async (f: File) => {
    try {
      const r = await api.post('sdapi/v1/png-info', { image: await fileToBase64(f) });
      const p = (r.parameters ?? {}) as Record<string, string>;
      clear(pngInfoOut, r.info ? h('pre.infotext', r.info) : h('p.muted', t('no_png_info')), r.info ? h('button', { type: 'button', onclick: () => applyParams(p) }, t('apply_params')) : null);
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };
  const applyParams = (p: Record<string, string>) => {
    if (p['Prompt'] !== undefined) setPrompt(p['Prompt']);
    if (p['Negative prompt'] !== undefined) negative.value = p['Negative prompt'];
    const set = (el: HTMLInputElement | HTMLSelectElement, v: string | undefined) => v !== undefined && (el.value = v);
    set(steps, p['Steps']);
    set(cfg, p['CFG scale']);
    set(seed, p['Seed']);
    set(width, p['Size-1']);
    set(height, p['Size-2']);
    if (p['Sampler'] && [...sampler.options].some((o) => o.value === p['Sampler'])) sampler.value = p['Sampler'];
    if (p['Schedule type'] && [...scheduler.options].some((o) => o.value === p['Schedule type'])) scheduler.value = p['Schedule type'];
  };
  const pngDrop = h('label.dropzone#png-drop', { tabIndex: 0 }, t('drop_png'), h('input', { type: 'file', accept: 'image/png', class: 'visually-hidden', onchange: (e: Event) => {
    const f = (e.target as HTMLInputElement).files?.[0];
    if (f) void readPng(f);
  } }));
  pngDrop.addEventListener('dragover', (e) => (e.preventDefault(), pngDrop.classList.add('over')));
  pngDrop.addEventListener('dragleave', () => pngDrop.classList.remove('over'));
  pngDrop.addEventListener('drop', (e) => {
    e.preventDefault();
    pngDrop.classList.remove('over');
    const f = e.dataTransfer?.files[0];
    if (f) void readPng(f);
  });

  // ---- running
  const genButton = h('button.primary#generate', { type: 'button' }, t('generate'));
  const interrupt = h('button#interrupt', { type: 'button', disabled: true, onclick: () => void api.post('sdapi/v1/interrupt') }, t('interrupt'));
  const skip = h('button#skip', { type: 'button', disabled: true, onclick: () => void api.post('sdapi/v1/skip') }, t('skip'));

  let lastJob: { id: string; step: number; steps: number } | null = null;
  app.socket.on('job-end', (e: any) => {
    if (lastJob && e?.id === lastJob.id && (e.status === 'interrupted' || e.status === 'error')) {
      app.notify(e.status === 'interrupted' ? `${t('interrupted')}: ${t('step')} ${lastJob.step}/${lastJob.steps}` : String(e.error ?? e.status), e.status === 'error' ? 'error' : 'info');
    }
  });
  app.socket.on('progress', (p: any) => {
    if (!running || p?.state?.job === 'train_lora') return;
    lastJob = { id: String(p.id), step: Number(p.state?.sampling_step ?? 0), steps: Number(p.state?.sampling_steps ?? 0) };
    bar.hidden = false;
    bar.value = Number(p.progress ?? 0);
    const s = p.state ?? {};
    progressText.textContent = s.sampling_steps ? `${t('step')} ${s.sampling_step}/${s.sampling_steps}${p.eta_relative ? ` · ${t('eta')} ${Math.round(p.eta_relative)}s` : ''}` : t('progress_waiting');
    if (p.current_image) {
      livePreview.src = `data:image/png;base64,${p.current_image}`;
      livePreview.hidden = false;
    }
  });

  genButton.addEventListener('click', async () => {
    if (running) return;
    running = true;
    genButton.disabled = true;
    interrupt.disabled = skip.disabled = false;
    bar.hidden = false;
    bar.value = 0;
    progressText.textContent = t('progress_waiting');
    const body: Record<string, unknown> = {
      prompt: prompt.value,
      negative_prompt: negative.value,
      sampler_name: sampler.value,
      scheduler: scheduler.value,
      steps: Number(steps.value),
      cfg_scale: Number(cfg.value),
      seed: Number(seed.value),
      width: Number(width.value),
      height: Number(height.value),
      batch_size: Number(batchSize.value),
      n_iter: Number(batchCount.value),
      send_images: true,
      save_images: true,
    };
    let route = 'sdapi/v1/txt2img';
    if (mode !== 'txt2img' && initImage) {
      route = 'sdapi/v1/img2img';
      Object.assign(body, { init_images: [initImage], denoising_strength: Number(denoise.value) });
      // Whole picture, the A1111 UI's default inpaint area (the API's default is only masked).
      if (mode === 'inpaint') Object.assign(body, { mask: maskPng(), mask_blur: 4, inpainting_fill: 1, inpaint_full_res: false });
    } else if (hires.checked) {
      Object.assign(body, { enable_hr: true, hr_scale: Number(hrScale.value), hr_second_pass_steps: Number(hrSteps.value), hr_upscaler: upscaler.value, denoising_strength: Number(hrDenoise.value) });
    }
    try {
      const r = await api.post(route, body);
      const info = JSON.parse(r.info ?? '{}');
      const first = Number(info.index_of_first_image ?? 0);
      const added: GalleryImage[] = (r.images as string[]).slice(first).map((b64, i) => ({
        src: `data:image/png;base64,${b64}`,
        infotext: info.infotexts?.[i + first] ?? '',
        seed: Number(info.all_seeds?.[i] ?? info.seed ?? -1),
      }));
      gallery.unshift(...added);
      lastSeed = added[0]?.seed ?? lastSeed;
      renderGallery();
      if (added[0]) select(added[0]);
    } catch (e) {
      app.notify(errorText(e), 'error');
    } finally {
      running = false;
      genButton.disabled = false;
      interrupt.disabled = skip.disabled = true;
      bar.hidden = true;
      livePreview.hidden = true;
      progressText.textContent = '';
    }
  });
  prompt.textarea.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) genButton.click();
  });

  const load = async () => {
    try {
      const [ls, samplers, schedulers, upscalers, pv] = await Promise.all([
        api.get<Lora[]>('sdapi/v1/loras'),
        api.get<{ name: string }[]>('sdapi/v1/samplers'),
        api.get<{ name: string; label: string }[]>('sdapi/v1/schedulers'),
        api.get<{ name: string }[]>('sdapi/v1/upscalers'),
        api.get<string[]>('sdapi/v1/lora-previews').catch(() => [] as string[]),
      ]);
      loras = ls;
      previews = new Set(pv);
      const keepS = sampler.value;
      clear(sampler, samplers.map((s) => h('option', { value: s.name }, s.name)));
      sampler.value = keepS || (samplers.some((s) => s.name === 'Euler a') ? 'Euler a' : samplers[0]?.name ?? '');
      const keepSc = scheduler.value;
      clear(scheduler, schedulers.map((s) => h('option', { value: s.label }, s.label)));
      scheduler.value = keepSc || schedulers[0]?.label || '';
      clear(upscaler, upscalers.map((u) => h('option', { value: u.name }, u.name)));
      renderLoras();
      renderWeights();
    } catch (e) {
      app.notify(errorText(e), 'error');
    }
  };
  app.events.addEventListener('loras-changed', () => void load());

  // Width and height follow the active checkpoint's trained size (the server reads it from the checkpoint's
  // config; the bundled demo model draws 64×64) until the user sets a size.
  let sizeChosen = false;
  for (const el of [width, height]) el.addEventListener('input', () => (sizeChosen = true));
  const followModelSize = async () => {
    try {
      const [ckpts, opts] = await Promise.all([
        api.get<{ title: string; model_name: string; resolution?: number | null }[]>('sdapi/v1/sd-models'),
        api.get<Record<string, unknown>>('sdapi/v1/options'),
      ]);
      const active = String(opts['sd_model_checkpoint'] ?? '');
      const c = ckpts.find((m) => m.title === active || m.model_name === active) ?? (ckpts.length === 1 ? ckpts[0] : undefined);
      if (!sizeChosen) width.value = height.value = String(c?.resolution ?? DEFAULT_SIZE);
    } catch {
      // The size stays as it is; the lists above report a server that cannot be reached.
    }
  };
  app.events.addEventListener('checkpoint-changed', () => void followModelSize());
  void followModelSize();
  app.events.addEventListener('use-lora', (e) => {
    setPrompt(addLoraTag(prompt.value, String((e as CustomEvent).detail), 1));
    app.show('generate');
  });
  void load();

  const reuse = h('button.icon#reuse-seed', { type: 'button', title: t('reuse_seed'), 'aria-label': t('reuse_seed'), onclick: () => lastSeed >= 0 && (seed.value = String(lastSeed)) }, '♻');
  const dice = h('button.icon', { type: 'button', title: t('random_seed'), 'aria-label': t('random_seed'), onclick: () => (seed.value = '-1') }, '-1');

  return h(
    'section.tab-generate',
    h('div.col.main-col',
      field(t('prompt'), prompt.root),
      field(t('negative_prompt'), negative.root),
      h('div.row.actions', genButton, interrupt, skip, field(t('mode'), modeSelect)),
      initBox,
      h('div.grid-params',
        field(t('sampler'), sampler), field(t('schedule'), scheduler), field(t('steps'), steps), field(t('cfg'), cfg),
        field(t('width'), width), field(t('height'), height), field(t('batch_size'), batchSize), field(t('batch_count'), batchCount),
        h('div.field.seed-field', h('label', { htmlFor: 'seed' }, t('seed')), h('div.row', seed, reuse, dice)),
        h('div.field', h('label', '\u00a0'), h('label.check-row', hires, t('hires'))),
      ),
      hiresBox,
      h('h3', t('loras')), inPrompt, filter, loraList,
    ),
    h('div.col.side-col', bar, progressText, livePreview, h('h3', t('gallery')), galleryGrid, galleryActions, infoBox, h('h3', t('png_info')), pngDrop, pngInfoOut),
  );
}
