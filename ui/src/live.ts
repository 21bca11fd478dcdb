/**
 * The running app's state holder: applies channel events to the pure store
 * and tells the view. Renders are left to Preact's own batching (one per
 * microtask), so an event reaches the DOM in the same frame it arrived.
 */
import { useEffect, useState } from 'preact/hooks';
import type { UiEvent } from './bindings/UiEvent';
import { applyEvent, initialState, type AppState } from './store';

export interface Live {
  get(): AppState;
  apply(ev: UiEvent): void;
  subscribe(fn: (s: AppState) => void): () => void;
}

export function createLive(): Live {
  let state = initialState;
  const listeners = new Set<(s: AppState) => void>();
  return {
    get: () => state,
    apply(ev) {
      state = applyEvent(state, ev, Date.now());
      for (const l of listeners) l(state);
    },
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
}

export function useLive(live: Live): AppState {
  const [s, set] = useState(live.get);
  useEffect(() => {
    set(live.get());
    return live.subscribe(set);
  }, [live]);
  return s;
}
