/**
 * Builders for the helper's wire types, shared by the unit tests and the
 * mocked-IPC harness so both speak exactly the generated bindings.
 */
import type { Agent } from './bindings/Agent';
import type { Event } from './bindings/Event';
import type { Notice } from './bindings/Notice';
import type { NoticeKind } from './bindings/NoticeKind';
import type { PeerStats } from './bindings/PeerStats';
import type { SessionInfo } from './bindings/SessionInfo';
import type { SessionState } from './bindings/SessionState';
import type { UiEvent } from './bindings/UiEvent';
import type { Workspace } from './bindings/Workspace';

export function ws(id: string, name: string, owner = 'alice'): Workspace {
  return { id, name, owner };
}

export function agent(id: string, name: string, workspace: Workspace | string, extra: Partial<Agent> = {}): Agent {
  const w = typeof workspace === 'string' ? ws(workspace, workspace) : workspace;
  return {
    id,
    name,
    workspace_id: w.id,
    public_key: null,
    addresses: [],
    endpoints: [],
    dns_names: [`${name}.${w.name}.${w.owner}.warren`],
    online: true,
    ...extra,
  };
}

export function session(state: SessionState, extra: Partial<SessionInfo> = {}): SessionInfo {
  return {
    state,
    url: 'https://warren.example.com',
    user: 'alice',
    reason: null,
    reason_code: null,
    retry_in_ms: null,
    attempt: 0,
    device: null,
    deployment: null,
    tunnel: null,
    ...extra,
  };
}

export function notice(kind: NoticeKind, agentId: string | null, message: string): Notice {
  return { kind, agent_id: agentId, message };
}

export function stats(agentId: string, lastHandshakeMs: number | null, extra: Partial<PeerStats> = {}): PeerStats {
  return {
    agent_id: agentId,
    last_handshake_ms: lastHandshakeMs,
    rx_bytes: 0,
    tx_bytes: 0,
    rtt_us: null,
    endpoint: null,
    ...extra,
  };
}

export function stream(seq: number, event: Event): UiEvent {
  return { kind: 'stream', seq, event };
}

/** A whole `State` snapshot, as the app always sends it. */
export function snapshot(
  workspaces: Workspace[],
  agents: Agent[],
  opts: { session?: SessionInfo; stats?: PeerStats[] } = {},
): Event {
  return {
    event: 'state',
    part: 0,
    last: true,
    session: opts.session ?? session('connected'),
    workspaces,
    agents,
    stats: opts.stats ?? [],
  };
}

export function diff(
  upserted_workspaces: Workspace[],
  upserted_agents: Agent[],
  deleted_workspaces: string[] = [],
  deleted_agents: string[] = [],
): Event {
  return { event: 'peer_update', upserted_workspaces, upserted_agents, deleted_workspaces, deleted_agents };
}
