/**
 * The commands of the desktop app, for the components. The typed wrappers
 * are generated from the command list in `crates/warren-proto/src/app.rs`
 * (`bindings/commands.ts`, the only module that calls `invoke`); this adds
 * the event channel `subscribe` needs and the error every command rejects
 * with, a `CommandError`.
 */
import { Channel } from '@tauri-apps/api/core';
import type { CommandError } from './bindings/CommandError';
import type { UiEvent } from './bindings/UiEvent';
import * as commands from './bindings/commands';

export {
  appInfo,
  signIn,
  startBrowserSignIn,
  cancelBrowserSignIn,
  signOut,
  connect,
  disconnect,
  reconnect,
  getSettings,
  setSettings,
  exportLogs,
  copyText,
  uiReady,
  ping,
} from './bindings/commands';

/**
 * Opens the event stream: the app replays the current state (link, account,
 * then the helper's snapshot) and streams changes into `onEvent`. Returns the
 * channel so the caller can detach it when subscribing again.
 */
export async function subscribe(onEvent: (ev: UiEvent) => void): Promise<Channel<UiEvent>> {
  const channel = new Channel<UiEvent>(onEvent);
  await commands.subscribe(channel);
  return channel;
}

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
