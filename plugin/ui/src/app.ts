/** What the tabs share: the API client, the socket, notifications, tab switching and app-wide events. */
import type { Socket } from 'socket.io-client';
import type { Api } from './api.ts';

export type TabName = 'generate' | 'datasets' | 'train' | 'models';

export interface App {
  api: Api;
  socket: Socket;
  show(tab: TabName): void;
  notify(message: string, kind?: 'error' | 'info'): void;
  /** 'loras-changed' (the LoRA folder changed), 'use-lora' (detail: name), 'checkpoint-changed'. */
  events: EventTarget;
}

export function emit(app: App, name: string, detail?: unknown): void {
  app.events.dispatchEvent(new CustomEvent(name, { detail }));
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
