/**
 * The UI's picture of the app and the helper, as a pure state machine: apply
 * one `UiEvent` at a time (`applyEvent`), read derived views (`deriveGroups`,
 * `filterGroups`). No DOM, no clock: the receipt time is passed in, so the
 * tests drive it deterministically.
 *
 * The app sends the helper's state as one whole snapshot (a `State`; see
 * `UiEvent::Stream` in `crates/warren-proto/src/app.rs`) numbered as of the
 * helper event it includes,
 * then diffs: a snapshot replaces everything, and diffs only count on top
 * of one, in sequence. Every
 * update returns new objects for what changed and keeps the rest, so memoized
 * components can skip unchanged rows by reference.
 */
import type { Account } from './bindings/Account';
import type { Agent } from './bindings/Agent';
import type { BrowserSignIn } from './bindings/BrowserSignIn';
import type { Event } from './bindings/Event';
import type { HelperLink } from './bindings/HelperLink';
import type { LogLine } from './bindings/LogLine';
import type { PeerStats } from './bindings/PeerStats';
import type { SessionInfo } from './bindings/SessionInfo';
import type { UiEvent } from './bindings/UiEvent';
import type { Workspace } from './bindings/Workspace';

/** How many helper log lines the Logs screen keeps. */
export const LOG_CAPACITY = 1000;

export interface LogEntry extends LogLine {
  /** Stable key for rendering; grows by one per line received. */
  id: number;
}

export interface AppState {
  /** `null` until the app told us how it reaches the helper. */
  link: HelperLink | null;
  /** When (ms, caller's clock) `link` arrived: its `retry_in_ms` counts from here. */
  linkAt: number;
  /** `undefined` until the app said; `null` means signed out. */
  account: Account | null | undefined;
  /** The deployment last signed in to, to offer it again after a sign-out. */
  lastUrl: string | null;
  session: SessionInfo | null;
  /** When the session arrived: its `retry_in_ms` counts from here. */
  sessionAt: number;
  workspaces: ReadonlyMap<string, Workspace>;
  agents: ReadonlyMap<string, Agent>;
  stats: ReadonlyMap<string, PeerStats>;
  /** A snapshot arrived on the current stream: the lists are worth showing. */
  complete: boolean;
  /** Seq of the next helper event; `null` before a snapshot arrived. */
  nextSeq: number | null;
  /**
   * Events were missed or came out of order: the lists may be wrong until a
   * new snapshot arrives, so the caller should subscribe again.
   */
  outOfSync: boolean;
  logs: readonly LogEntry[];
  nextLogId: number;
  /** How the browser sign-in started from this app stands. */
  browserSignIn: BrowserSignIn;
}

export const initialState: AppState = {
  link: null,
  linkAt: 0,
  account: undefined,
  lastUrl: null,
  session: null,
  sessionAt: 0,
  workspaces: new Map(),
  agents: new Map(),
  stats: new Map(),
  complete: false,
  nextSeq: null,
  outOfSync: false,
  logs: [],
  nextLogId: 0,
  browserSignIn: { state: 'idle' },
};

/** Applies one event from the app's channel, received at `now` (ms). */
export function applyEvent(state: AppState, ev: UiEvent, now: number): AppState {
  switch (ev.kind) {
    case 'helper': {
      const next = { ...state, link: ev.link, linkAt: now };
      // Losing the helper ends its stream: the next link starts with a
      // fresh snapshot, and until then nothing listed is current.
      if (ev.link.state !== 'connected') {
        return { ...next, complete: false, nextSeq: null, outOfSync: false };
      }
      return next;
    }
    case 'account':
      return { ...state, account: ev.account, lastUrl: ev.account?.url ?? state.account?.url ?? state.lastUrl };
    case 'stream':
      return applyStream(state, ev.seq, ev.event, now);
    case 'browser_sign_in':
      return { ...state, browserSignIn: ev.status };
  }
}

function applyStream(state: AppState, seq: number, ev: Event, now: number): AppState {
  // Log lines are worth keeping whatever the state of the snapshot.
  if (ev.event === 'log') {
    const s = state.nextSeq === seq ? { ...state, nextSeq: seq + 1 } : state;
    return appendLog(s, ev.line);
  }
  if (ev.event === 'state') {
    const agents = new Map<string, Agent>();
    const workspaces = new Map<string, Workspace>();
    for (const w of ev.workspaces) workspaces.set(w.id, w);
    for (const a of ev.agents) agents.set(a.id, a);
    const stats = new Map<string, PeerStats>();
    insertStats(stats, agents, ev.stats);
    return {
      ...state,
      session: ev.session,
      sessionAt: now,
      workspaces,
      agents,
      stats,
      complete: true,
      nextSeq: seq + 1,
      outOfSync: false,
    };
  }
  if (state.nextSeq === null || state.outOfSync) return state;
  if (seq !== state.nextSeq) return { ...state, outOfSync: true };
  const s = { ...state, nextSeq: seq + 1 };
  switch (ev.event) {
    case 'session_changed':
      return { ...s, session: ev.session, sessionAt: now };
    case 'peer_update': {
      const workspaces = new Map(state.workspaces);
      const agents = new Map(state.agents);
      const stats = new Map(state.stats);
      for (const w of ev.upserted_workspaces) workspaces.set(w.id, w);
      for (const a of ev.upserted_agents) agents.set(a.id, a);
      for (const id of ev.deleted_agents) {
        agents.delete(id);
        stats.delete(id);
      }
      if (ev.deleted_workspaces.length > 0) {
        const gone = new Set(ev.deleted_workspaces);
        for (const id of gone) workspaces.delete(id);
        for (const [id, a] of agents) {
          if (gone.has(a.workspace_id)) {
            agents.delete(id);
            stats.delete(id);
          }
        }
      }
      return { ...s, workspaces, agents, stats };
    }
    case 'peer_stats': {
      const stats = new Map(state.stats);
      insertStats(stats, state.agents, ev.stats);
      return { ...s, stats };
    }
  }
}

function insertStats(into: Map<string, PeerStats>, agents: ReadonlyMap<string, Agent>, list?: PeerStats[]) {
  for (const st of list ?? []) {
    // Stats can race an agent's deletion; keep only known agents.
    if (agents.has(st.agent_id)) into.set(st.agent_id, st);
  }
}

function appendLog(state: AppState, line: LogLine): AppState {
  const entry: LogEntry = { ...line, id: state.nextLogId };
  const logs =
    state.logs.length >= LOG_CAPACITY
      ? [...state.logs.slice(state.logs.length - LOG_CAPACITY + 1), entry]
      : [...state.logs, entry];
  return { ...state, logs, nextLogId: state.nextLogId + 1 };
}

/** One workspace and its agents, sorted as people read them. */
export interface Group {
  workspace: Workspace;
  agents: readonly Agent[];
}

interface GroupCache {
  workspaces: ReadonlyMap<string, Workspace>;
  agents: ReadonlyMap<string, Agent>;
  groups: readonly Group[];
}

/**
 * Workspaces sorted by (owner, name, id), each with its agents sorted by
 * (name, id), in natural order; an agent whose workspace is unknown gets a group named by the
 * workspace id. Pass the previous result's cache to keep unchanged groups
 * (same objects), so only changed workspaces re-render.
 */
export function deriveGroups(
  state: Pick<AppState, 'workspaces' | 'agents'>,
  prev?: GroupCache,
): GroupCache {
  if (prev && prev.workspaces === state.workspaces && prev.agents === state.agents) return prev;
  const byWs = new Map<string, Agent[]>();
  for (const a of state.agents.values()) {
    let list = byWs.get(a.workspace_id);
    if (!list) byWs.set(a.workspace_id, (list = []));
    list.push(a);
  }
  const spaces: Workspace[] = [...state.workspaces.values()];
  for (const id of byWs.keys()) {
    if (!state.workspaces.has(id)) spaces.push({ id, name: id, owner: '' });
  }
  spaces.sort((a, b) => cmp(a.owner, b.owner) || cmp(a.name, b.name) || cmp(a.id, b.id));
  const old = new Map<string, Group>();
  for (const g of prev?.groups ?? []) old.set(g.workspace.id, g);
  const groups = spaces.map((workspace) => {
    const agents = byWs.get(workspace.id) ?? [];
    agents.sort((a, b) => cmp(a.name, b.name) || cmp(a.id, b.id));
    const was = old.get(workspace.id);
    if (was && sameWorkspace(was.workspace, workspace) && sameList(was.agents, agents)) return was;
    return { workspace, agents };
  });
  return { workspaces: state.workspaces, agents: state.agents, groups };
}

/** Natural order ("ws-2" before "ws-10"), case-insensitive first, as people read names. */
const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

function cmp(a: string, b: string): number {
  return collator.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0);
}

function sameWorkspace(a: Workspace, b: Workspace): boolean {
  return a === b || (a.id === b.id && a.name === b.name && a.owner === b.owner);
}

function sameList<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What a filter query leaves visible. */
export interface FilterResult {
  /** Visible agents per visible workspace id (`'all'` when all of them are). */
  visible: Map<string, 'all' | Set<string>>;
  shown: number;
  total: number;
}

const haystacks = new WeakMap<Agent, string>();

/** The lower-cased text an agent matches against (cached per agent object). */
function haystack(a: Agent): string {
  let h = haystacks.get(a);
  if (h === undefined) {
    h = [a.name, ...a.dns_names, ...a.addresses].join('\n').toLowerCase();
    haystacks.set(a, h);
  }
  return h;
}

/**
 * Which workspaces and agents match `query` (case-insensitive, anywhere in
 * the workspace name, agent name, DNS names or tunnel addresses). A workspace
 * whose name matches shows all its agents; an empty query shows everything.
 */
export function filterGroups(groups: readonly Group[], query: string): FilterResult {
  const q = query.trim().toLowerCase();
  const visible = new Map<string, 'all' | Set<string>>();
  let shown = 0;
  let total = 0;
  for (const g of groups) {
    total += g.agents.length;
    if (q === '' || g.workspace.name.toLowerCase().includes(q)) {
      visible.set(g.workspace.id, 'all');
      shown += g.agents.length;
      continue;
    }
    let some: Set<string> | null = null;
    for (const a of g.agents) {
      if (haystack(a).includes(q)) {
        (some ??= new Set()).add(a.id);
        shown++;
      }
    }
    if (some) visible.set(g.workspace.id, some);
  }
  return { visible, shown, total };
}
