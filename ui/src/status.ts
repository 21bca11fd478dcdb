/**
 * The words and colours the UI shows for agents, sessions and the helper
 * link, as pure functions of the data and an explicit `now` (ms since the
 * Unix epoch), so a fixed clock tests them and a one-second tick re-derives
 * them.
 */
import type { Agent } from './bindings/Agent';
import type { HelperLink } from './bindings/HelperLink';
import type { HelperLinkState } from './bindings/HelperLinkState';
import type { PeerStats } from './bindings/PeerStats';
import type { SessionInfo } from './bindings/SessionInfo';
import type { SessionState } from './bindings/SessionState';

/** No handshake for this long makes a peer stale (`warren_proto::ipc::STALE_AFTER_MS`). */
export const STALE_AFTER_MS = 180_000;

export type Dot = 'green' | 'amber' | 'grey' | 'red';

/** Handshake age in ms; a handshake slightly in the future counts as now. */
function ageMs(at: number, now: number): number {
  return Math.max(0, now - at);
}

/** The status dot of an agent row. */
export function agentDot(agent: Agent, stats: PeerStats | undefined, now: number): Dot {
  if (!agent.online) return 'red';
  if (!stats || stats.last_handshake_ms == null) return 'grey';
  return ageMs(stats.last_handshake_ms, now) < STALE_AFTER_MS ? 'green' : 'amber';
}

/** "handshake 12 s ago", "handshake stale (4 min ago)", "no handshake yet", "agent offline". */
export function handshakeText(agent: Agent, stats: PeerStats | undefined, now: number): string {
  if (!agent.online) return 'agent offline';
  if (!stats || stats.last_handshake_ms == null) return 'no handshake yet';
  const age = ageMs(stats.last_handshake_ms, now);
  if (age < STALE_AFTER_MS) {
    const s = Math.floor(age / 1000);
    return s === 0 ? 'handshake just now' : `handshake ${s} s ago`;
  }
  return `handshake stale (${roughAge(age)} ago)`;
}

/** "4 min", "3 h", "2 d": an age too old to count in seconds. */
export function roughAge(ms: number): string {
  const min = Math.floor(ms / 60_000);
  if (min < 60) return `${Math.max(1, min)} min`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h`;
  return `${Math.floor(h / 24)} d`;
}

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];

/** Decimal byte counts as people read them: "0 B", "340 kB", "1.2 MB". */
export function formatBytes(n: number): string {
  if (n < 1000) return `${Math.max(0, Math.round(n))} B`;
  let v = n;
  let u = 0;
  while (v >= 1000 && u < UNITS.length - 1) {
    v /= 1000;
    u++;
  }
  // 999.95 kB would print as "1000.0 kB": carry into the next unit.
  if (v < 10 && Number(v.toFixed(1)) >= 10) return `10 ${UNITS[u]}`;
  if (v >= 10 && Math.round(v) >= 1000 && u < UNITS.length - 1) return `1.0 ${UNITS[u + 1]}`;
  return v < 10 ? `${v.toFixed(1)} ${UNITS[u]}` : `${Math.round(v)} ${UNITS[u]}`;
}

/** "↓ 1.2 MB ↑ 340 kB" (received, sent), or "–" before the tunnel has figures. */
export function trafficText(stats: PeerStats | undefined): string {
  if (!stats) return '–';
  return `↓ ${formatBytes(stats.rx_bytes)} ↑ ${formatBytes(stats.tx_bytes)}`;
}

/** Round-trip time from µs: "0.5 ms", "23 ms", or "–" when unknown. */
export function formatRtt(rttUs: number | null | undefined): string {
  if (rttUs == null) return '–';
  const ms = rttUs / 1000;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  return `${Math.round(ms)} ms`;
}

/** Whether the Connect switch shows as on. */
export function sessionIsOn(state: SessionState | undefined): boolean {
  return state === 'connecting' || state === 'connected' || state === 'reconnecting';
}

/** Seconds left of a countdown of `totalMs` that started at `since`, rounded up. */
export function secondsLeft(totalMs: number, since: number, now: number): number {
  return Math.max(0, Math.ceil((totalMs - (now - since)) / 1000));
}

/**
 * The session line: "Connected", "Connecting…", "Reconnecting in 8 s —
 * coordinator unreachable", "Disconnected", "Failed — <reason>". `since` is
 * when this session value arrived (its `retry_in_ms` counts from there).
 */
export function sessionText(session: SessionInfo | null, since: number, now: number): string {
  const reason = session?.reason ? ` — ${session.reason}` : '';
  switch (session?.state ?? 'disconnected') {
    case 'connected':
      return 'Connected';
    case 'connecting':
      return 'Connecting…';
    case 'reconnecting': {
      if (session?.retry_in_ms == null) return `Reconnecting…${reason}`;
      const s = secondsLeft(session.retry_in_ms, since, now);
      return s === 0 ? `Reconnecting now${reason}` : `Reconnecting in ${s} s${reason}`;
    }
    case 'disconnected':
      return 'Disconnected';
    case 'failed':
      // The helper's reason points terminal users at `warren login`; the
      // window has its own way back (the banner under this line).
      return needsSignIn(session) ? 'Failed — the coordinator rejected the token' : `Failed${reason}`;
  }
}

/**
 * The coordinator no longer takes the saved token (the helper's reason code
 * for a failed session says so, not its words): only signing in again helps.
 */
export function needsSignIn(session: SessionInfo | null | undefined): boolean {
  return session?.state === 'failed' && session.reason_code === 'sign_in_required';
}

/** The dot next to the session line. */
export function sessionDot(state: SessionState | undefined): Dot {
  switch (state) {
    case 'connected':
      return 'green';
    case 'connecting':
    case 'reconnecting':
      return 'amber';
    case 'failed':
      return 'red';
    default:
      return 'grey';
  }
}

/** The heading of the helper-trouble screen. */
export function linkTitle(state: HelperLinkState): string {
  switch (state) {
    case 'missing':
      return "The Warren helper isn't running";
    case 'not_permitted':
      return "You're not allowed to use the Warren helper";
    case 'version_mismatch':
      return "The app and the helper don't match";
    case 'failed':
      return "Can't talk to the Warren helper";
    case 'searching':
      return 'Looking for the Warren helper…';
    case 'connected':
      return 'Connected to the Warren helper';
  }
}

/** Whether the link state means the helper can't be used (a trouble screen). */
export function isTrouble(state: HelperLinkState): boolean {
  return state === 'missing' || state === 'not_permitted' || state === 'version_mismatch' || state === 'failed';
}

/** "Looking again in 3 s…", "Looking again…", or `null` when no retry is planned. */
export function retryText(link: HelperLink, since: number, now: number): string | null {
  if (link.retry_in_ms == null) return null;
  const s = secondsLeft(link.retry_in_ms, since, now);
  return s === 0 ? 'Looking again…' : `Looking again in ${s} s…`;
}
