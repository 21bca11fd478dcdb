/**
 * The words and colours the UI shows for agents, sessions and the helper
 * link, as pure functions of the data and an explicit `now` (ms since the
 * Unix epoch), so a fixed clock tests them and a one-second tick re-derives
 * them.
 */
import type { Agent } from './bindings/Agent';
import type { HelperLink } from './bindings/HelperLink';
import type { HelperLinkState } from './bindings/HelperLinkState';
import type { Notice } from './bindings/Notice';
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

/** The relay's host without its port ("turn1.example.com:3478" → "turn1.example.com"). */
function relayHost(relay: string): string {
  const cut = relay.lastIndexOf(':');
  const host = cut > 0 ? relay.slice(0, cut) : relay;
  return host.replace(/^\[/, '').replace(/\]$/, '');
}

/**
 * How datagrams reach the agent, as `warren status`'s PATH column says it:
 * "direct", "relayed via HOST", or "" when there is no path (no handshake
 * yet, or a stale one).
 */
export function pathText(stats: PeerStats | undefined, now: number): string {
  if (!stats || stats.last_handshake_ms == null || stats.no_path) return '';
  if (ageMs(stats.last_handshake_ms, now) >= STALE_AFTER_MS) return '';
  return stats.relay ? `relayed via ${relayHost(stats.relay)}` : 'direct';
}

/** The path's tooltip: where datagrams go. */
export function pathTitle(stats: PeerStats | undefined, now: number): string {
  const path = pathText(stats, now);
  if (!path) return 'No working path to this agent yet';
  if (stats?.relay) return `Relayed through the TURN server ${stats.relay}`;
  return stats?.endpoint ? `Direct to ${stats.endpoint}` : 'Direct';
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
      // These reasons are long or point terminal users at `warren login`;
      // the banner under this line has them whole, with the window's own
      // way out, so the line stays short.
      switch (session?.reason_code) {
        case 'sign_in_required':
          return 'Failed — the coordinator rejected the token';
        case 'deployment_changed':
          return 'Failed — the deployment changed its network';
        case 'deployment_refused':
          return "Failed — Warren refused the deployment's network";
        default:
          return `Failed${reason}`;
      }
  }
}

/** What the window offers for a failed session: "Sign in again…", or words to take to an administrator. */
export type SessionFix = 'sign_in_again' | 'ask_administrator';

/**
 * What a person can do about a failed session, by the helper's reason code
 * (never its words): sign in again (the token was rejected, or the
 * deployment's network changed since sign-in and must be accepted anew), or
 * ask the deployment's administrator (it asked for a network this machine
 * doesn't allow; retrying or signing in again would fail the same way).
 * `null` when the session didn't fail, or failed for another reason.
 */
export function sessionFix(session: SessionInfo | null | undefined): SessionFix | null {
  if (session?.state !== 'failed') return null;
  switch (session.reason_code) {
    case 'sign_in_required':
    case 'deployment_changed':
      return 'sign_in_again';
    case 'deployment_refused':
      return 'ask_administrator';
    default:
      return null;
  }
}

/** Only signing in again helps (the window offers "Sign in again…"). */
export function needsSignIn(session: SessionInfo | null | undefined): boolean {
  return sessionFix(session) === 'sign_in_again';
}

/** The failed-session banner's words: a bold lead and the helper's reason. */
export function failureText(session: SessionInfo | null | undefined): { title: string; detail: string } | null {
  if (!session || sessionFix(session) === null) return null;
  switch (session.reason_code) {
    case 'sign_in_required':
      return { title: 'Sign in again.', detail: 'The coordinator no longer accepts the saved token.' };
    case 'deployment_changed':
      return {
        title: 'Sign in again to accept the new network.',
        detail: session.reason ? sentence(session.reason) : 'The deployment changed its address ranges or DNS suffix since you signed in.',
      };
    case 'deployment_refused':
      return {
        title: 'Warren refused this deployment.',
        detail: session.reason
          ? sentence(session.reason)
          : "The deployment asked for a network this machine doesn't allow; ask its administrator.",
      };
    default:
      return null;
  }
}

/**
 * The helper's clause as a sentence: a capital first letter and a full
 * stop. Only a plain word is capitalized ("the deployment…"), never a name
 * the clause may start with ("main.api.alice.warren: …").
 */
export function sentence(text: string): string {
  const t = text.trim();
  if (t === '') return t;
  const first = /^[a-z]+(?=[\s,;:!?]|\.?$)/.test(t) ? t.charAt(0).toUpperCase() + t.slice(1) : t;
  return /[.!?…]$/.test(first) ? first : `${first}.`;
}

/** The most notices the helper lists; a full list starts with a summary of the rest (`MAX_NOTICES`). */
export const MAX_NOTICES = 32;

/** "1 warning about this deployment", "32 or more warnings …" (a full list hides some). */
export function noticesTitle(notices: readonly Notice[]): string {
  const n = notices.length;
  if (n >= MAX_NOTICES) return `${MAX_NOTICES} or more warnings about this deployment`;
  return `${n} warning${n === 1 ? '' : 's'} about this deployment`;
}

/** What the notices mean for the list below, in a few words, or `null` when they don't say. */
export function noticesHint(notices: readonly Notice[]): string | null {
  if (notices.some((n) => n.kind === 'agent_refused' || n.kind === 'agents_capped')) {
    return 'Some agents were left out and are not reachable';
  }
  if (notices.some((n) => n.kind === 'agent_trimmed')) return "Some agents' endpoints or names were ignored";
  return null;
}

/** Each agent's notices as one text (sentences on lines), by agent id, for marking its row. */
export function agentWarnings(notices: readonly Notice[] | undefined): ReadonlyMap<string, string> {
  const out = new Map<string, string>();
  for (const n of notices ?? []) {
    if (n.agent_id == null) continue;
    const prev = out.get(n.agent_id);
    out.set(n.agent_id, prev ? `${prev}\n${sentence(n.message)}` : sentence(n.message));
  }
  return out;
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
