/**
 * Starts the UI: renders the app, subscribes to the app's event stream
 * (again whenever the store noticed it missed events), and reports the first
 * paint with `ui_ready`. `follow` is the stream part alone, for a page that
 * renders something else over the same store (the e2e benchmark baseline).
 */
import { render } from 'preact';
import type { Channel } from '@tauri-apps/api/core';
import * as api from './api';
import type { UiEvent } from './bindings/UiEvent';
import { App } from './components/App';
import { createLive, type Live } from './live';

/** At most this many resubscriptions a minute, so a broken stream can't spin. */
const MAX_RESUBSCRIBES_PER_MINUTE = 5;

export function boot(root: HTMLElement) {
  const live = createLive();
  render(<App live={live} />, root);
  follow(live);
}

/** Feeds `live` from the app's event stream and reports the first paint. */
export function follow(live: Live) {
  let channel: Channel<UiEvent> | null = null;
  let resubscribes: number[] = [];

  const subscribe = async () => {
    // A replaced channel must not feed the store any more.
    if (channel) channel.onmessage = () => {};
    try {
      channel = await api.subscribe((ev) => live.apply(ev));
    } catch (e) {
      console.error('subscribe failed:', api.asCommandError(e).message);
    }
  };

  let wasOutOfSync = false;
  live.subscribe((s) => {
    const noticed = s.outOfSync && !wasOutOfSync;
    wasOutOfSync = s.outOfSync;
    if (!noticed) return;
    const now = Date.now();
    resubscribes = resubscribes.filter((t) => now - t < 60_000);
    if (resubscribes.length >= MAX_RESUBSCRIBES_PER_MINUTE) return;
    resubscribes.push(now);
    void subscribe();
  });

  void subscribe();
  requestAnimationFrame(() => {
    api.uiReady().catch((e) => console.error('ui_ready failed:', api.asCommandError(e).message));
  });
}
