/**
 * What the sign-in screen shows for a browser sign-in, from the app's
 * `browser_sign_in` status and the screen's own start request: kept pure so
 * the states are tested without a DOM.
 */
import type { BrowserSignIn } from './bindings/BrowserSignIn';

export type BrowserPhase =
  /** The form: nothing under way (or the last attempt failed: `error`). */
  | { phase: 'form'; error: string | null }
  /** Asking the app to check the coordinator and open the browser. */
  | { phase: 'starting' }
  /** The browser is open; the app waits for its link (`refused`: a stray link came meanwhile). */
  | { phase: 'waiting'; url: string; refused: string | null }
  /** The link arrived; the token is being fetched and saved. */
  | { phase: 'finishing' }
  | { phase: 'signed_in'; user: string };

/**
 * `starting` is true while `start_browser_sign_in` runs; a refusal from the
 * app (a forged or stale link, a failed exchange) lands back on the form with
 * its message, which says what to do.
 */
export function browserPhase(status: BrowserSignIn, starting: boolean): BrowserPhase {
  if (starting) return { phase: 'starting' };
  switch (status.state) {
    case 'idle':
      return { phase: 'form', error: null };
    case 'waiting':
      return { phase: 'waiting', url: status.url, refused: status.refused };
    case 'finishing':
      return { phase: 'finishing' };
    case 'signed_in':
      return { phase: 'signed_in', user: status.user };
    case 'refused':
      return { phase: 'form', error: status.message };
  }
}

/** The coordinator's host, as the waiting screen names it. */
export function hostOf(url: string): string {
  try {
    return new URL(url).host || url;
  } catch {
    return url;
  }
}
