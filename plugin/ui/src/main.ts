/**
 * The browser UI: header (tabs, language, theme), sign-in when the server has `--api-auth`, and the four
 * tabs. Everything goes through the server's public HTTP and socket.io API (see api.ts).
 */
import './style.css';
import { h, clear } from './dom.ts';
import { lang, setLang, t, type Lang } from './i18n.ts';
import { api, ApiError } from './api.ts';
import type { App, TabName } from './app.ts';
import { generateTab } from './generate.ts';
import { datasetsTab } from './datasets.ts';
import { trainTab } from './train.ts';
import { modelsTab } from './models.ts';

const TABS: TabName[] = ['generate', 'datasets', 'train', 'models'];
const root = document.getElementById('app')!;
const toasts = h('div.toasts', { role: 'status', 'aria-live': 'polite' });

function applyTheme(): void {
  const q = new URLSearchParams(location.search).get('theme');
  if (q === 'dark' || q === 'light') document.documentElement.dataset['theme'] = q;
}

function notify(message: string, kind: 'error' | 'info' = 'info'): void {
  const el = h('div.toast', { class: kind, role: kind === 'error' ? 'alert' : 'status' }, h('span', message), h('button.icon', { type: 'button', 'aria-label': t('close'), onclick: () => el.remove() }, '×'));
  toasts.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 12000 : 5000);
}

/** Resolves once the API answers: at once without --api-auth, after a successful sign-in with it. */
async function signIn(): Promise<void> {
  try {
    await api.get('sdapi/v1/cmd-flags');
    return;
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
  }
  return new Promise((resolve) => {
    const user = h('input#login-user', { type: 'text', autocomplete: 'username', required: true });
    const pass = h('input#login-pass', { type: 'password', autocomplete: 'current-password', required: true });
    const err = h('div.error', { role: 'alert' });
    const form = h('form.login#login', { onsubmit: async (e: Event) => {
      e.preventDefault();
      api.setCredentials(user.value, pass.value);
      try {
        await api.get('sdapi/v1/cmd-flags');
        resolve();
      } catch (x) {
        err.textContent = x instanceof ApiError && x.status === 401 ? t('wrong_credentials') : String((x as Error).message);
      }
    } },
      h('h2', t('login_title')), h('p', t('login_help')),
      h('label', { htmlFor: 'login-user' }, t('username')), user,
      h('label', { htmlFor: 'login-pass' }, t('password')), pass,
      err, h('button.primary', { type: 'submit' }, t('sign_in')),
    );
    clear(root, header(null), form);
    user.focus();
  });
}

function header(app: App | null): HTMLElement {
  const langSel = h('select#lang', { 'aria-label': t('language') }, h('option', { value: 'en' }, 'English'), h('option', { value: 'zh' }, '中文'));
  langSel.value = lang;
  langSel.addEventListener('change', () => {
    setLang(langSel.value as Lang);
    void start();
  });
  const nav = app
    ? h('nav.tabs', { role: 'tablist', 'aria-label': 'lora-scripts' },
        TABS.map((name) => h('button.tab', { type: 'button', role: 'tab', id: `tab-${name}`, 'aria-controls': `panel-${name}`, 'data-tab': name, onclick: () => app.show(name) }, t(`tab_${name}`))),
      )
    : null;
  nav?.addEventListener('keydown', (e) => {
    // Arrow keys move between tabs (WAI-ARIA tabs pattern).
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    const i = TABS.indexOf((document.activeElement as HTMLElement)?.dataset['tab'] as TabName);
    if (i < 0) return;
    const next = TABS[(i + (e.key === 'ArrowRight' ? 1 : TABS.length - 1)) % TABS.length]!;
    app!.show(next);
    document.getElementById(`tab-${next}`)?.focus();
  });
  return h('header.top', h('h1', t('title')), nav, h('div.spacer'), langSel);
}

let started = 0;

async function start(): Promise<void> {
  const run = ++started;
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  api.onUnauthorized = () => notify(t('wrong_credentials'), 'error');
  try {
    await signIn();
  } catch (e) {
    clear(root, header(null), h('div.error', String((e as Error).message)));
    return;
  }
  if (run !== started) return;
  const socket = api.connect();
  const panels = new Map<TabName, HTMLElement>();
  const app: App = {
    api,
    socket,
    events: new EventTarget(),
    notify,
    show(name) {
      for (const [n, p] of panels) p.hidden = n !== name;
      for (const b of root.querySelectorAll<HTMLElement>('[role=tab]')) {
        const on = b.dataset['tab'] === name;
        b.setAttribute('aria-selected', String(on));
        b.tabIndex = on ? 0 : -1;
      }
      if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
    },
  };
  const builders: Record<TabName, (app: App) => HTMLElement> = { generate: generateTab, datasets: datasetsTab, train: trainTab, models: modelsTab };
  const main = h('main');
  for (const name of TABS) {
    const panel = h('div.panel', { role: 'tabpanel', id: `panel-${name}`, 'aria-labelledby': `tab-${name}`, hidden: true }, builders[name](app));
    panels.set(name, panel);
    main.append(panel);
  }
  clear(root, header(app), main, toasts);
  const fromHash = location.hash.slice(1) as TabName;
  app.show(TABS.includes(fromHash) ? fromHash : 'generate');
}

applyTheme();
void start();
