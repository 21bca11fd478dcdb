/** Tests of the status dots and texts with a fixed clock, and the number formats. */
import { describe, expect, it } from 'vitest';
import { agent, session, stats } from './fixtures';
import {
  agentDot,
  formatBytes,
  formatRtt,
  handshakeText,
  needsSignIn,
  retryText,
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
