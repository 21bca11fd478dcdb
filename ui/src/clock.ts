/**
 * One shared one-second tick for everything that shows an age or a
 * countdown. Rows register a painter that writes only the text that changed,
 * so the tick costs no re-render of the list; headers use `useNow`.
 */
import { useEffect, useState } from 'preact/hooks';

type Painter = (now: number) => void;

const painters = new Set<Painter>();
let timer: ReturnType<typeof setInterval> | null = null;

/** Calls `paint(now)` every second until the returned function is called. */
export function onTick(paint: Painter): () => void {
  painters.add(paint);
  if (timer === null) {
    timer = setInterval(() => {
      const now = Date.now();
      for (const p of painters) p(now);
    }, 1000);
  }
  return () => {
    painters.delete(paint);
    // An idle window should not wake up every second for nothing.
    if (painters.size === 0 && timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  };
}

/** The wall clock, refreshed every second while `active`. */
export function useNow(active = true): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    if (!active) return;
    setNow(Date.now());
    return onTick(setNow);
  }, [active]);
  return now;
}
