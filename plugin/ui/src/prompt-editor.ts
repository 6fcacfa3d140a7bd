/**
 * A prompt box with A1111 syntax colouring and `<lora:` completion: a transparent textarea over a <pre>
 * that mirrors its text in coloured spans; a listbox of LoRA names opens while a tag name is being typed
 * (arrows to move, Enter or Tab to take, Escape to close).
 */
import { h, clear } from './dom.ts';
import { completeLora, highlightSpans, loraPrefixAt } from './prompt-text.ts';

export interface PromptEditor {
  root: HTMLElement;
  textarea: HTMLTextAreaElement;
  get value(): string;
  set value(v: string);
  onChange(fn: (v: string) => void): void;
}

export function promptEditor(opts: { id: string; label: string; loraNames: () => string[]; rows?: number }): PromptEditor {
  const mirror = h('pre.prompt-mirror', { 'aria-hidden': 'true' });
  const list = h('ul.completions', { role: 'listbox', id: `${opts.id}-completions`, hidden: true });
  const textarea = h('textarea.prompt-input', {
    id: opts.id,
    rows: opts.rows ?? 3,
    spellcheck: false,
    'aria-label': opts.label,
    'aria-autocomplete': 'list',
    'aria-controls': list.id,
  });
  const listeners: ((v: string) => void)[] = [];
  let items: string[] = [];
  let active = 0;
  let prefix: { partial: string; start: number } | null = null;

  const paint = () => {
    clear(mirror, ...highlightSpans(textarea.value).map((s) => (s.kind === 'text' ? s.text : h(`span.hl-${s.kind}` as 'span', s.text))), '\n');
    mirror.scrollTop = textarea.scrollTop;
  };
  const closeList = () => {
    list.hidden = true;
    prefix = null;
    textarea.removeAttribute('aria-activedescendant');
  };
  const showList = () => {
    clear(
      list,
      items.map((name, i) =>
        h('li', { id: `${opts.id}-opt-${i}`, role: 'option', 'aria-selected': String(i === active), class: i === active ? 'active' : '', onmousedown: (e: Event) => (e.preventDefault(), take(i)) }, name),
      ),
    );
    list.hidden = items.length === 0;
    if (items.length) textarea.setAttribute('aria-activedescendant', `${opts.id}-opt-${active}`);
  };
  const update = () => {
    prefix = loraPrefixAt(textarea.value, textarea.selectionStart);
    if (!prefix) return closeList();
    const p = prefix.partial.toLowerCase();
    items = opts.loraNames().filter((n) => n.toLowerCase().includes(p)).slice(0, 12);
    active = 0;
    showList();
  };
  const changed = () => {
    paint();
    for (const l of listeners) l(textarea.value);
  };
  const take = (i: number) => {
    if (!prefix || !items[i]) return;
    const r = completeLora(textarea.value, prefix.start, textarea.selectionStart, items[i]!);
    textarea.value = r.text;
    textarea.setSelectionRange(r.caret, r.caret);
    closeList();
    changed();
  };

  textarea.addEventListener('input', () => {
    changed();
    update();
  });
  textarea.addEventListener('scroll', () => (mirror.scrollTop = textarea.scrollTop));
  textarea.addEventListener('blur', () => setTimeout(closeList, 100));
  textarea.addEventListener('keydown', (e) => {
    if (list.hidden) return;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      active = (active + (e.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length;
      showList();
      e.preventDefault();
    } else if (e.key === 'Enter' || e.key === 'Tab') {
      take(active);
      e.preventDefault();
    } else if (e.key === 'Escape') {
      closeList();
      e.preventDefault();
    }
  });
  paint();
  return {
    root: h('div.prompt-editor', mirror, textarea, list),
    textarea,
    get value() {
      return textarea.value;
    },
    set value(v: string) {
      textarea.value = v;
      paint();
    },
    onChange: (fn) => listeners.push(fn),
  };
}
