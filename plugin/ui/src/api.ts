/**
 * The server's public API as the page uses it: JSON over fetch with the `--api-auth` credentials the user
 * typed (kept for the tab's session only), images as object URLs (an <img> cannot send credentials), and
 * socket.io on the same base. The base is the page's own folder unless the host page sets
 * `window.LORA_SCRIPTS_UI = {apiBase}` or the URL has `?api=` (for embedding in another page).
 */
import { io, type Socket } from 'socket.io-client';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body: unknown,
  ) {
    super(message);
  }
  /** FastAPI-style 422 issues: key path (without 'body') → message. */
  issues(): { loc: (string | number)[]; msg: string }[] {
    const d = (this.body as { detail?: unknown } | null)?.detail;
    if (!Array.isArray(d)) return [];
    return d.map((i: { loc?: unknown[]; msg?: string }) => ({ loc: (i.loc ?? []).slice(1) as (string | number)[], msg: String(i.msg ?? '') }));
  }
}

function messageOf(status: number, body: unknown): string {
  if (body && typeof body === 'object') {
    const b = body as { detail?: unknown; errors?: unknown; error?: unknown };
    if (Array.isArray(b.detail)) return b.detail.map((i: { msg?: string }) => i.msg).join('; ');
    if (typeof b.detail === 'string' && b.detail) return b.detail;
    if (typeof b.errors === 'string' && b.errors) return b.errors;
    if (typeof b.error === 'string') return b.error;
  }
  return typeof body === 'string' && body ? body : `HTTP ${status}`;
}

function apiBase(): string {
  const fromHost = (window as unknown as { LORA_SCRIPTS_UI?: { apiBase?: string } }).LORA_SCRIPTS_UI?.apiBase;
  const fromUrl = new URLSearchParams(location.search).get('api');
  const base = new URL(fromHost ?? fromUrl ?? '.', location.href);
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  return base.href;
}

const CREDS_KEY = 'lora-scripts.auth';

export class Api {
  readonly base = apiBase();
  private auth: string | null = sessionStorage.getItem(CREDS_KEY);
  socket: Socket | null = null;
  onUnauthorized: () => void = () => {};

  url(path: string): string {
    return new URL(path.replace(/^\//, ''), this.base).href;
  }

  setCredentials(user: string, pass: string): void {
    this.auth = 'Basic ' + btoa(String.fromCharCode(...new TextEncoder().encode(`${user}:${pass}`)));
    sessionStorage.setItem(CREDS_KEY, this.auth);
  }

  credentials(): { username: string; password: string } | undefined {
    if (!this.auth) return undefined;
    const text = new TextDecoder().decode(Uint8Array.from(atob(this.auth.slice(6)), (c) => c.charCodeAt(0)));
    const i = text.indexOf(':');
    return { username: text.slice(0, i), password: text.slice(i + 1) };
  }

  async raw(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    // Tells the server not to send a WWW-Authenticate challenge: the page asks for credentials itself.
    headers.set('X-Requested-With', 'XMLHttpRequest');
    if (this.auth) headers.set('Authorization', this.auth);
    const r = await fetch(this.url(path), { ...init, headers });
    if (!r.ok) {
      const text = await r.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        /* plain text */
      }
      if (r.status === 401) this.onUnauthorized();
      throw new ApiError(r.status, messageOf(r.status, body), body);
    }
    return r;
  }

  async get<T = any>(path: string): Promise<T> {
    return (await this.raw(path)).json() as Promise<T>;
  }

  async post<T = any>(path: string, body?: unknown): Promise<T> {
    const r = await this.raw(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body ?? {}) });
    const text = await r.text();
    return (text ? JSON.parse(text) : null) as T;
  }

  async form<T = any>(path: string, form: FormData): Promise<T> {
    return (await this.raw(path, { method: 'POST', body: form })).json() as Promise<T>;
  }

  async del<T = any>(path: string): Promise<T> {
    return (await this.raw(path, { method: 'DELETE' })).json() as Promise<T>;
  }

  /** An object URL for an image the API serves (revoke it when the image goes away). */
  async blobUrl(path: string): Promise<string> {
    return URL.createObjectURL(await (await this.raw(path)).blob());
  }

  connect(): Socket {
    this.socket?.close();
    const u = new URL(this.base);
    this.socket = io(u.origin, { path: `${u.pathname}socket.io`, auth: this.credentials() ?? {}, transports: ['websocket', 'polling'] });
    return this.socket;
  }
}

export const api = new Api();
