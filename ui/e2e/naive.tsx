/**
 * The filter benchmark's baseline (`?naive=1` in the harness): the same
 * store, filter, header and styles as the app, but the workspace list
 * written the straightforward way — the visible list rebuilt from scratch
 * on every render, unkeyed, without memo, every row computed from the wall
 * clock. Test code only: the app never renders it.
 */
import { useMemo, useState } from 'preact/hooks';
import type { Agent } from '../src/bindings/Agent';
import type { PeerStats } from '../src/bindings/PeerStats';
import { CopyButton } from '../src/components/AgentRow';
import { Header } from '../src/components/Header';
import { EmptyState, grouped, plural } from '../src/components/Workspaces';
import { useLive, type Live } from '../src/live';
import { agentRowName } from '../src/names';
import { agentDot, formatRtt, handshakeText, trafficText } from '../src/status';
import { deriveGroups, filterGroups, type AppState, type Group } from '../src/store';
import './naive.css';

/** The signed-in window with the naive list as its only section. */
export function NaiveApp({ live }: { live: Live }) {
  const s = useLive(live);
  if (!s.account || s.link?.state !== 'connected') return <div data-testid="naive-waiting" />;
  return (
    <div class="shell">
      <nav class="sidebar" aria-label="Sections" />
      <main class="content">
        <Header state={s} onSignedOut={() => live.apply({ kind: 'account', account: null })} />
        <div class="section" data-section="workspaces">
          <NaiveWorkspaces state={s} />
        </div>
      </main>
    </div>
  );
}

function NaiveWorkspaces({ state }: { state: AppState }) {
  const [query, setQuery] = useState('');
  const groups = deriveGroups(state).groups;
  const result = useMemo(() => filterGroups(groups, query), [groups, query]);
  const filtering = query.trim() !== '';
  return (
    <div class="workspaces">
      <div class="toolbar">
        <div class="search">
          <input data-testid="filter" type="search" placeholder="Filter workspaces and agents" spellcheck={false}
            autoComplete="off" value={query} onInput={(e) => setQuery(e.currentTarget.value)} aria-label="Filter workspaces and agents" />
        </div>
        <span class="count muted" data-testid="filter-count">
          {filtering ? `${grouped(result.shown)} of ${plural(result.total, 'agent')}` : plural(result.total, 'agent')}
          {!filtering && groups.length > 0 && ` in ${plural(groups.length, 'workspace')}`}
        </span>
      </div>
      {groups.length === 0 && <EmptyState title={state.complete ? 'No workspaces yet' : 'Loading workspaces…'} />}
      <div class="list" data-testid="workspace-list">
        <NaiveList groups={groups} stats={state.stats} visible={result.visible} />
      </div>
    </div>
  );
}

function NaiveList(props: { groups: readonly Group[]; stats: ReadonlyMap<string, PeerStats>; visible: Map<string, 'all' | Set<string>> }) {
  return (
    <>
      {props.groups
        .filter((g) => props.visible.has(g.workspace.id))
        .map((g) => {
          const vis = props.visible.get(g.workspace.id)!;
          return (
            <section class="workspace" data-testid="workspace" data-workspace-id={g.workspace.id}>
              <h3 class="workspace-head">
                <span class="workspace-name">{g.workspace.name}</span>
                {g.workspace.owner && <span class="workspace-owner muted">{g.workspace.owner}</span>}
                <span class="workspace-count muted">{plural(g.agents.length, 'agent')}</span>
              </h3>
              <div class="agents">
                {g.agents
                  .filter((a) => vis === 'all' || vis.has(a.id))
                  .map((a) => <NaiveAgentRow agent={a} stats={props.stats.get(a.id)} />)}
              </div>
            </section>
          );
        })}
    </>
  );
}

/** The row with everything computed in render from the wall clock: no memo, no in-place repaint. */
function NaiveAgentRow({ agent, stats }: { agent: Agent; stats: PeerStats | undefined }) {
  const now = Date.now();
  const name = agentRowName(agent);
  return (
    <div class="agent" data-testid="agent-row" data-agent-id={agent.id} data-dot={agentDot(agent, stats, now)}>
      <span class="dot" aria-hidden="true" />
      <span class="agent-id">
        <span class="agent-name">{agent.name}</span>
        <span class="agent-dns">
          {name && <code class="dns">{name}</code>}
          {name && <CopyButton text={name} />}
        </span>
      </span>
      <span class="handshake" data-testid="handshake">{handshakeText(agent, stats, now)}</span>
      <span class="traffic" data-testid="traffic">{trafficText(stats)}</span>
      <span class="rtt" data-testid="rtt">{formatRtt(stats?.rtt_us)}</span>
    </div>
  );
}
