/**
 * Tests of the browser sign-in states the sign-in screen shows, and that the
 * store keeps the app's latest status.
 */
import { describe, expect, it } from 'vitest';
import { browserPhase, hostOf } from './browserSignIn';
import { applyEvent, initialState } from './store';

describe('browser sign-in phases', () => {
  it('starts on the form, waits for the browser, finishes, signs in', () => {
    expect(browserPhase({ state: 'idle' }, false)).toEqual({ phase: 'form', error: null });
    expect(browserPhase({ state: 'idle' }, true)).toEqual({ phase: 'starting' });
    expect(browserPhase({ state: 'waiting', url: 'https://w.example.com', refused: null }, false)).toEqual({
      phase: 'waiting',
      url: 'https://w.example.com',
      refused: null,
    });
    expect(browserPhase({ state: 'finishing' }, false)).toEqual({ phase: 'finishing' });
    expect(browserPhase({ state: 'signed_in', user: 'alice' }, false)).toEqual({ phase: 'signed_in', user: 'alice' });
  });

  it('a stray link while waiting keeps the wait and says it was refused', () => {
    const refused = "This sign-in link doesn't belong to the sign-in this app started, so it was refused.";
    expect(browserPhase({ state: 'waiting', url: 'https://w', refused }, false)).toEqual({
      phase: 'waiting',
      url: 'https://w',
      refused,
    });
  });

  it('a link with no sign-in waiting returns to the form with the message saying what to do', () => {
    const message = "This sign-in link wasn't started by this app — start again from Sign in.";
    expect(browserPhase({ state: 'refused', message }, false)).toEqual({ phase: 'form', error: message });
    // Starting again hides the old refusal.
    expect(browserPhase({ state: 'refused', message }, true)).toEqual({ phase: 'starting' });
  });

  it('names the coordinator by its host, or as typed when it is no URL', () => {
    expect(hostOf('https://warren.example.com:8443')).toBe('warren.example.com:8443');
    expect(hostOf('warren')).toBe('warren');
  });
});

describe('store', () => {
  it('keeps the latest browser sign-in status, idle at first', () => {
    expect(initialState.browserSignIn).toEqual({ state: 'idle' });
    let s = applyEvent(initialState, { kind: 'browser_sign_in', status: { state: 'waiting', url: 'https://w', refused: null } }, 1);
    expect(s.browserSignIn).toEqual({ state: 'waiting', url: 'https://w', refused: null });
    s = applyEvent(s, { kind: 'browser_sign_in', status: { state: 'refused', message: 'no' } }, 2);
    expect(s.browserSignIn).toEqual({ state: 'refused', message: 'no' });
    // Other state is untouched.
    expect(s.account).toBe(initialState.account);
  });
});
