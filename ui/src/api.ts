/**
 * Typed wrappers for every command of the desktop app (the table in
 * `crates/warren-proto/src/app.rs`). This is the only module that calls
 * `invoke`; a failing command rejects with a `CommandError`.
 */
import { Channel, invoke } from '@tauri-apps/api/core';
import type { Account } from './bindings/Account';
import type { AppInfo } from './bindings/AppInfo';
import type { CommandError } from './bindings/CommandError';
import type { PingReport } from './bindings/PingReport';
import type { Settings } from './bindings/Settings';
import type { SignInRequest } from './bindings/SignInRequest';
import type { UiEvent } from './bindings/UiEvent';

export const appInfo = () => invoke<AppInfo>('app_info');

/**
 * Opens the event stream: the app replays the current state (link, account,
 * then the helper's snapshot) and streams changes into `onEvent`. Returns the
 * channel so the caller can detach it when subscribing again.
 */
export async function subscribe(onEvent: (ev: UiEvent) => void): Promise<Channel<UiEvent>> {
  const on_event = new Channel<UiEvent>(onEvent);
  await invoke<void>('subscribe', { on_event });
  return on_event;
}

export const signIn = (request: SignInRequest) => invoke<Account>('sign_in', { request });
export const signOut = () => invoke<void>('sign_out');
export const connect = () => invoke<void>('connect');
export const disconnect = () => invoke<void>('disconnect');
export const reconnect = () => invoke<void>('reconnect');
export const getSettings = () => invoke<Settings>('get_settings');
export const setSettings = (settings: Settings) => invoke<Settings>('set_settings', { settings });
/** Resolves to the path of the zip written, or `null` when the dialog was cancelled. */
export const exportLogs = () => invoke<string | null>('export_logs');
export const copyText = (text: string) => invoke<void>('copy_text', { text });
export const uiReady = () => invoke<void>('ui_ready');
/** One ICMP echo through the tunnel, timed by the helper (as `warren ping`). */
export const ping = (target: string) => invoke<PingReport>('ping', { target });

/**
 * The `CommandError` a command rejected with; anything else (a bug, a
 * missing command) becomes kind `other` with its text.
 */
export function asCommandError(e: unknown): CommandError {
  if (e && typeof e === 'object' && 'kind' in e && 'message' in e) {
    const { kind, message } = e as CommandError;
    if (typeof kind === 'string' && typeof message === 'string') return { kind, message };
  }
  return { kind: 'other', message: typeof e === 'string' ? e : e instanceof Error ? e.message : 'Something went wrong.' };
}
