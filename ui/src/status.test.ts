/** Tests of the status dots and texts with a fixed clock, and the number formats. */
import { describe, expect, it } from 'vitest';
import type { ReasonCode } from './bindings/ReasonCode';
import { agent, notice, session, stats } from './fixtures';
import {
  agentDot,
  agentWarnings,
  failureText,
  formatBytes,
  formatRtt,
  handshakeText,
  MAX_NOTICES,
  needsSignIn,
  pathText,
  pathTitle,
  noticesHint,
  noticesTitle,
  retryText,
  sentence,
  sessionFix,
  sessionIsOn,
  sessionText,
  STALE_AFTER_MS,
  trafficText,
} from './status';

const NOW = 1_700_000_000_000;
const online = agent('a1', 'main', 'api');
const offline = agent('a1', 'main', 'api', { online: false });

describe('agent dot and handshake text', () => {
  it('is green just under 180 s and amber at 180 s', () => {
    expect(STALE_AFTER_MS).toBe(180_000);
    expect(agentDot(online, stats('a1', NOW - 179_999), NOW)).toBe('green');
    expect(agentDot(online, stats('a1', NOW - 180_000), NOW)).toBe('amber');
    expect(handshakeText(online, stats('a1', NOW - 179_999), NOW)).toBe('handshake 179 s ago');
    expect(handshakeText(online, stats('a1', NOW - 180_000), NOW)).toBe('handshake stale (3 min ago)');
    expect(handshakeText(online, stats('a1', NOW - 4 * 60_000 - 10_000), NOW)).toBe('handshake stale (4 min ago)');
    expect(handshakeText(online, stats('a1', NOW - 5 * 3600_000), NOW)).toBe('handshake stale (5 h ago)');
    expect(handshakeText(online, stats('a1', NOW - 12_400), NOW)).toBe('handshake 12 s ago');
  });

  it('is never grey once there was a handshake, even one in the future', () => {
    for (const age of [-5_000, 0, 1, 60_000, 179_999, 180_000, 10 * 86_400_000]) {
      expect(agentDot(online, stats('a1', NOW - age), NOW)).not.toBe('grey');
    }
    expect(agentDot(online, stats('a1', NOW + 500), NOW)).toBe('green');
    expect(handshakeText(online, stats('a1', NOW + 500), NOW)).toBe('handshake just now');
  });

  it('is grey without a handshake', () => {
    expect(agentDot(online, undefined, NOW)).toBe('grey');
    expect(agentDot(online, stats('a1', null), NOW)).toBe('grey');
    expect(handshakeText(online, undefined, NOW)).toBe('no handshake yet');
    expect(handshakeText(online, stats('a1', null), NOW)).toBe('no handshake yet');
  });

  it('is red for an offline agent, even with a fresh handshake', () => {
    expect(agentDot(offline, stats('a1', NOW - 1_000), NOW)).toBe('red');
    expect(agentDot(offline, undefined, NOW)).toBe('red');
    expect(handshakeText(offline, stats('a1', NOW - 1_000), NOW)).toBe('agent offline');
  });
});

describe('numbers', () => {
  it('formats bytes in decimal units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1_000)).toBe('1.0 kB');
    expect(formatBytes(340_000)).toBe('340 kB');
    expect(formatBytes(1_234_567)).toBe('1.2 MB');
    expect(formatBytes(999_600)).toBe('1.0 MB');
    expect(formatBytes(9_990)).toBe('10 kB');
    expect(formatBytes(3.5e12)).toBe('3.5 TB');
    expect(trafficText(stats('a1', null, { rx_bytes: 1_234_567, tx_bytes: 340_000 }))).toBe('↓ 1.2 MB ↑ 340 kB');
    expect(trafficText(undefined)).toBe('–');
  });

  it('formats round-trip times', () => {
    expect(formatRtt(500)).toBe('0.5 ms');
    expect(formatRtt(12_345)).toBe('12 ms');
    expect(formatRtt(null)).toBe('–');
  });
});

describe('sign-in required', () => {
  it("only when the helper's code says the coordinator rejected the token", () => {
    const words = 'The coordinator rejected your token — sign in again with `warren login`.';
    const rejected = { reason: words, reason_code: 'sign_in_required' as const };
    expect(needsSignIn(session('failed', rejected))).toBe(true);
    expect(needsSignIn(session('failed', { reason: 'the deployment is gone', reason_code: 'refused' }))).toBe(false);
    expect(needsSignIn(session('reconnecting', rejected))).toBe(false);
    expect(needsSignIn(null)).toBe(false);
    expect(sessionText(session('failed', rejected), 0, 0)).toBe('Failed — the coordinator rejected the token');
  });

  it('goes by the code, not the words', () => {
    // Reworded, or from a newer helper: the code still decides.
    expect(needsSignIn(session('failed', { reason: 'Token expired.', reason_code: 'sign_in_required' }))).toBe(true);
    // Words that look like it without the code (an older helper, or another failure) do not.
    expect(needsSignIn(session('failed', { reason: 'The coordinator rejected your token', reason_code: null }))).toBe(false);
    expect(needsSignIn(session('failed', { reason: 'sign in again', reason_code: 'other' }))).toBe(false);
  });
});

describe('what a failed session offers', () => {
  const REFUSED =
    "the deployment asked to route 0.0.0.0/1, which is outside the ranges Warren allows (100.64.0.0/10); ask its administrator to use a range inside them, or allow it in this machine's Warren policy";
  const CHANGED =
    'the deployment changed its network from 100.64.0.0/16, fd7a::/48, suffix warren to 100.65.0.0/16, fd7a::/48, suffix warren; sign in again to accept';

  it('goes by the reason code', () => {
    const fix = (reason_code: ReasonCode | null) => sessionFix(session('failed', { reason: 'x', reason_code }));
    expect(fix('sign_in_required')).toBe('sign_in_again');
    expect(fix('deployment_changed')).toBe('sign_in_again');
    expect(fix('deployment_refused')).toBe('ask_administrator');
    for (const other of ['refused', 'unreachable', 'connection_lost', 'resynchronizing', 'other', null] as const) {
      expect(fix(other)).toBeNull();
    }
    // Words alone never decide.
    expect(sessionFix(session('failed', { reason: REFUSED, reason_code: null }))).toBeNull();
    expect(sessionFix(session('failed', { reason: CHANGED, reason_code: 'other' }))).toBeNull();
  });

  it('only for a failed session', () => {
    for (const state of ['connecting', 'connected', 'reconnecting', 'disconnected'] as const) {
      expect(sessionFix(session(state, { reason: REFUSED, reason_code: 'deployment_refused' }))).toBeNull();
      expect(failureText(session(state, { reason: CHANGED, reason_code: 'deployment_changed' }))).toBeNull();
    }
    expect(sessionFix(null)).toBeNull();
    expect(failureText(undefined)).toBeNull();
  });

  it('a changed deployment asks to sign in again, a refused one does not', () => {
    expect(needsSignIn(session('failed', { reason: CHANGED, reason_code: 'deployment_changed' }))).toBe(true);
    expect(needsSignIn(session('failed', { reason: REFUSED, reason_code: 'deployment_refused' }))).toBe(false);
  });

  it('keeps the session line short and puts the whole reason in the banner', () => {
    const refused = session('failed', { reason: REFUSED, reason_code: 'deployment_refused' });
    expect(sessionText(refused, 0, 0)).toBe("Failed — Warren refused the deployment's network");
    expect(failureText(refused)).toEqual({
      title: 'Warren refused this deployment.',
      detail:
        "The deployment asked to route 0.0.0.0/1, which is outside the ranges Warren allows (100.64.0.0/10); ask its administrator to use a range inside them, or allow it in this machine's Warren policy.",
    });
    const changed = session('failed', { reason: CHANGED, reason_code: 'deployment_changed' });
    expect(sessionText(changed, 0, 0)).toBe('Failed — the deployment changed its network');
    expect(failureText(changed)?.title).toBe('Sign in again to accept the new network.');
    expect(failureText(changed)?.detail).toMatch(/^The deployment changed its network from 100\.64\.0\.0\/16.*; sign in again to accept\.$/);
    // The token case keeps its own words, not the helper's `warren login` hint.
    const token = session('failed', { reason: 'The coordinator rejected your token — sign in again with `warren login`.', reason_code: 'sign_in_required' });
    expect(failureText(token)).toEqual({ title: 'Sign in again.', detail: 'The coordinator no longer accepts the saved token.' });
    // Without words from the helper, the banner still says what happened.
    expect(failureText(session('failed', { reason_code: 'deployment_refused' }))?.detail).toMatch(/ask its administrator/);
    expect(failureText(session('failed', { reason_code: 'deployment_changed' }))?.detail).toMatch(/since you signed in/);
  });

  it('makes a sentence of a clause', () => {
    expect(sentence('ask its administrator')).toBe('Ask its administrator.');
    expect(sentence('agent main (a1): ignored it')).toBe('Agent main (a1): ignored it.');
    expect(sentence('a workspace was left out')).toBe('A workspace was left out.');
    // A name keeps its case; a number stays as it is.
    expect(sentence('main.api.alice.warren: ignored')).toBe('main.api.alice.warren: ignored.');
    expect(sentence('7 more notices are in the log')).toBe('7 more notices are in the log.');
    expect(sentence('  Done.  ')).toBe('Done.');
    expect(sentence('why?')).toBe('Why?');
    expect(sentence('')).toBe('');
  });
});

describe('notices', () => {
  const left = notice('agent_refused', 'a9', "agent spark (a9) was left out: its address 10.0.0.9 is outside the deployment's ranges 100.64.0.0/16, fd7a::/48; ask the deployment's administrator");
  const trimmed = notice('agent_trimmed', 'a1', 'agent main (a1): ignored 1 of its endpoints (127.0.0.1:22 is a loopback address)');
  const trimmed2 = notice('agent_trimmed', 'a1', 'main.api.alice.warren: ignored DNS names that are not under .warren (www.example.com)');
  const capped = notice('agents_capped', null, 'the deployment has more agents than the 50000 this helper keeps');

  it('counts them, and says when the list is full', () => {
    expect(noticesTitle([left])).toBe('1 warning about this deployment');
    expect(noticesTitle([left, trimmed, capped])).toBe('3 warnings about this deployment');
    expect(noticesTitle(Array.from({ length: MAX_NOTICES - 1 }, () => trimmed))).toBe('31 warnings about this deployment');
    const full = [notice('other', null, '7 more notices about this deployment\'s agents are in the helper\'s log'), ...Array.from({ length: MAX_NOTICES - 1 }, () => trimmed)];
    expect(noticesTitle(full)).toBe('32 or more warnings about this deployment');
  });

  it('says what they mean for the list', () => {
    expect(noticesHint([trimmed, left])).toBe('Some agents were left out and are not reachable');
    expect(noticesHint([capped])).toBe('Some agents were left out and are not reachable');
    expect(noticesHint([trimmed])).toBe("Some agents' endpoints or names were ignored");
    expect(noticesHint([notice('other', null, 'something else')])).toBeNull();
  });

  it("marks each agent with its own notices, as sentences", () => {
    const w = agentWarnings([left, trimmed, capped, trimmed2]);
    expect([...w.keys()]).toEqual(['a9', 'a1']);
    expect(w.get('a1')).toBe(
      'Agent main (a1): ignored 1 of its endpoints (127.0.0.1:22 is a loopback address).\nmain.api.alice.warren: ignored DNS names that are not under .warren (www.example.com).',
    );
    expect(w.get('a9')).toMatch(/^Agent spark \(a9\) was left out: .*administrator\.$/);
    expect(agentWarnings(undefined).size).toBe(0);
    expect(agentWarnings([]).size).toBe(0);
  });
});

describe('session line', () => {
  it('names each state', () => {
    expect(sessionText(session('connected'), 0, 0)).toBe('Connected');
    expect(sessionText(session('connecting'), 0, 0)).toBe('Connecting…');
    expect(sessionText(session('disconnected'), 0, 0)).toBe('Disconnected');
    expect(sessionText(null, 0, 0)).toBe('Disconnected');
    expect(sessionText(session('failed', { reason: 'token revoked' }), 0, 0)).toBe('Failed — token revoked');
  });

  it('counts a reconnect down from when it arrived', () => {
    const s = session('reconnecting', { retry_in_ms: 8_000, reason: 'coordinator unreachable' });
    expect(sessionText(s, NOW, NOW)).toBe('Reconnecting in 8 s — coordinator unreachable');
    expect(sessionText(s, NOW, NOW + 500)).toBe('Reconnecting in 8 s — coordinator unreachable');
    expect(sessionText(s, NOW, NOW + 1_000)).toBe('Reconnecting in 7 s — coordinator unreachable');
    expect(sessionText(s, NOW, NOW + 7_001)).toBe('Reconnecting in 1 s — coordinator unreachable');
    expect(sessionText(s, NOW, NOW + 9_000)).toBe('Reconnecting now — coordinator unreachable');
  });

  it('switch is on while connecting, connected or reconnecting', () => {
    expect(['connecting', 'connected', 'reconnecting', 'disconnected', 'failed'].map((x) => sessionIsOn(x as never))).toEqual([
      true, true, true, false, false,
    ]);
  });

  it('counts the helper retry down', () => {
    const link = { state: 'missing' as const, socket: '/s', message: 'm', helper_version: null, retry_in_ms: 3_000 };
    expect(retryText(link, NOW, NOW)).toBe('Looking again in 3 s…');
    expect(retryText(link, NOW, NOW + 2_500)).toBe('Looking again in 1 s…');
    expect(retryText(link, NOW, NOW + 3_000)).toBe('Looking again…');
    expect(retryText({ ...link, retry_in_ms: null }, NOW, NOW)).toBeNull();
  });
});

describe('path', () => {
  it('says direct or which relay while the handshake is fresh, nothing after', () => {
    const fresh = stats('a1', NOW - 4_000);
    expect(pathText(fresh, NOW)).toBe('direct');
    expect(pathText({ ...fresh, relay: 'turn1.example.com:3478' }, NOW)).toBe('relayed via turn1.example.com');
    expect(pathText({ ...fresh, relay: '[2001:db8::1]:3478' }, NOW)).toBe('relayed via 2001:db8::1');
    expect(pathText({ ...fresh, no_path: true }, NOW)).toBe('');
    expect(pathText(stats('a1', NOW - STALE_AFTER_MS), NOW)).toBe('');
    expect(pathText(undefined, NOW)).toBe('');
    expect(pathTitle({ ...fresh, endpoint: '10.0.0.2:51820' }, NOW)).toBe('Direct to 10.0.0.2:51820');
    expect(pathTitle({ ...fresh, relay: 'turn1:3478' }, NOW)).toBe('Relayed through the TURN server turn1:3478');
    expect(pathTitle(undefined, NOW)).toBe('No working path to this agent yet');
  });
});
