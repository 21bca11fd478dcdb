/**
 * The Workspaces section: the filter box and every workspace with its
 * agents, with the empty states (none yet, nothing matches, disconnected).
 *
 * Filtering is synchronous and never unmounts rows: non-matching workspaces
 * and agents are hidden in place (`applyFilter`), so a keystroke (or a
 * backspace that brings 2,000 agents back) only flips `hidden` where it
 * changed. Blocks are grouped in chunks the browser skips while off screen.
 */
import { memo } from '../memo';
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import * as api from '../api';
import type { PeerStats } from '../bindings/PeerStats';
import { deriveGroups, filterGroups, type AppState, type Group } from '../store';
import { agentWarnings, sessionIsOn } from '../status';
import { AgentRow } from './AgentRow';
import { IconSearch, IconWorkspaces, IconX } from './icons';

/** Workspaces mounted in the first render (more than a window shows). */
const FIRST_SLICE = 40;
/** Workspaces mounted per frame after that (few big slices: each slice costs a frame). */
const SLICE = 1000;

export function Workspaces({ state }: { state: AppState }) {
  const [query, setQuery] = useState('');
  const cache = useRef<ReturnType<typeof deriveGroups>>();
  const derived = deriveGroups(state, cache.current);
  cache.current = derived;
  const groups = derived.groups;
  const result = useMemo(() => filterGroups(groups, query), [groups, query]);
  const notices = state.session?.notices;
  const warnings = useMemo(() => agentWarnings(notices), [notices]);
  const on = sessionIsOn(state.session?.state);
  const inputRef = useRef<HTMLInputElement>(null);
  const listRef = useRef<HTMLDivElement>(null);
  // A big list mounts in slices, one per frame, so the first screenful paints
  // at once instead of after every one of 1,000 workspaces was built.
  const [mounted, setMounted] = useState(FIRST_SLICE);
  useEffect(() => {
    if (mounted >= groups.length) return;
    const id = requestAnimationFrame(() => setMounted((m) => m + SLICE));
    return () => cancelAnimationFrame(id);
  }, [mounted, groups.length]);
  // After every render (new rows too) and before paint: the filter's view of the DOM.
  useLayoutEffect(() => {
    if (listRef.current) applyFilter(listRef.current, result.visible);
  });
  const clear = () => {
    setQuery('');
    inputRef.current?.focus();
  };

  const total = result.total;
  const filtering = query.trim() !== '';
  let empty = null;
  if (!state.complete && groups.length === 0) {
    empty = on ? <EmptyState title="Loading workspaces…" spinner /> : null;
  }
  if (state.complete && groups.length === 0) {
    empty = on ? (
      <EmptyState title="No workspaces yet"
        hint="Workspaces created on the coordinator appear here within a second." />
    ) : null;
  }
  if (!on && groups.length === 0) {
    empty = (
      <EmptyState title="Connect to reach your workspaces" hint="Switch on Connect above to list your workspaces and reach them by name.">
        <button type="button" class="btn primary" data-testid="empty-connect" onClick={() => api.connect().catch(() => {})}>Connect</button>
      </EmptyState>
    );
  }
  if (filtering && result.shown === 0 && groups.length > 0) {
    empty = (
      <EmptyState title={`No agent matches “${query.trim()}”`} hint="The filter looks at workspace and agent names, DNS names and addresses.">
        <button type="button" class="btn" data-testid="clear-filter" onClick={clear}>Clear filter</button>
      </EmptyState>
    );
  }

  return (
    <div class="workspaces">
      <div class="toolbar">
        <div class="search">
          <IconSearch />
          <input ref={inputRef} data-testid="filter" type="search" placeholder="Filter workspaces and agents" spellcheck={false}
            autoComplete="off" value={query} onInput={(e) => setQuery(e.currentTarget.value)}
            onKeyDown={(e) => e.key === 'Escape' && clear()} aria-label="Filter workspaces and agents" />
          {query && (
            <button type="button" class="search-clear" onClick={clear} aria-label="Clear filter"><IconX /></button>
          )}
        </div>
        <span class="count muted" data-testid="filter-count">
          {filtering ? `${grouped(result.shown)} of ${plural(total, 'agent')}` : plural(total, 'agent')}
          {!filtering && groups.length > 0 && ` in ${plural(groups.length, 'workspace')}`}
        </span>
      </div>
      {!on && groups.length > 0 && (
        <div class="banner info" data-testid="disconnected-note">Connect to reach your workspaces. The list below is from the last connection.</div>
      )}
      {empty}
      <div class={`list${on ? '' : ' dimmed'}`} data-testid="workspace-list" ref={listRef}>
        {chunked(mounted < groups.length ? groups.slice(0, mounted) : groups).map((c, i) => (
          <div class="chunk" key={i}>
            {c.map((g) => <WorkspaceBlock key={g.workspace.id} group={g} stats={state.stats} warnings={warnings} />)}
          </div>
        ))}
      </div>
    </div>
  );
}

/** "1,234" — by hand: `toLocaleString` costs ~80 µs a call, too much for 1,000 workspace headers. */
export function grouped(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

export function plural(n: number, word: string): string {
  return `${grouped(n)} ${word}${n === 1 ? '' : 's'}`;
}

export function EmptyState(props: { title: string; hint?: string; spinner?: boolean; children?: preact.ComponentChildren }) {
  return (
    <div class="empty" data-testid="empty-state">
      {props.spinner ? <div class="spinner" aria-hidden="true" /> : <span class="empty-icon"><IconWorkspaces /></span>}
      <h2>{props.title}</h2>
      {props.hint && <p class="muted">{props.hint}</p>}
      {props.children}
    </div>
  );
}

interface BlockProps {
  group: Group;
  stats: ReadonlyMap<string, PeerStats>;
  /** Agents' notices by agent id (`agentWarnings`). */
  warnings: ReadonlyMap<string, string>;
}

/** Re-render a block only when its group or its own agents' stats or notices changed. */
function sameBlock(prev: BlockProps, next: BlockProps): boolean {
  if (prev.group !== next.group) return false;
  if (prev.warnings !== next.warnings) {
    for (const a of next.group.agents) if (prev.warnings.get(a.id) !== next.warnings.get(a.id)) return false;
  }
  if (prev.stats === next.stats) return true;
  for (const a of next.group.agents) if (prev.stats.get(a.id) !== next.stats.get(a.id)) return false;
  return true;
}

/** One workspace and its agents. Which of them show is `applyFilter`'s business, not a prop. */
const WorkspaceBlock = memo(function WorkspaceBlock({ group, stats, warnings }: BlockProps) {
  const { workspace, agents } = group;
  return (
    <section class="workspace" data-testid="workspace" data-workspace-id={workspace.id}>
      <h3 class="workspace-head">
        <span class="workspace-name">{workspace.name}</span>
        {workspace.owner && <span class="workspace-owner muted">{workspace.owner}</span>}
        <span class="workspace-count muted">{plural(agents.length, 'agent')}</span>
      </h3>
      <div class="agents">
        {agents.length === 0 && <div class="agent-none muted">No agents in this workspace yet.</div>}
        {agents.map((a) => <AgentRow key={a.id} agent={a} stats={stats.get(a.id)} warning={warnings.get(a.id)} />)}
      </div>
    </section>
  );
}, sameBlock);

/** Workspaces per chunk: the unit the browser skips rendering for while off screen. */
const CHUNK = 20;

/**
 * Fixed heights (px) from styles.css, so a skipped chunk's placeholder is
 * exactly as tall as its content would be and the scrollbar never jumps.
 */
export const LAYOUT = { borders: 2, head: 42, row: 54, noAgents: 44, gap: 12 };

function chunked<T>(xs: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += CHUNK) out.push(xs.slice(i, i + CHUNK));
  return out;
}

/**
 * Shows and hides chunks, workspace blocks and agent rows in place by the
 * filter's result, touching only elements whose visibility changes, and
 * sizes each chunk's placeholder for when it is off screen. Rows stay
 * mounted and no component re-renders, so a keystroke costs a pass over
 * 2,000 elements rather than a render of them; and as the browser skips
 * off-screen chunks (`content-visibility: auto`), it lays out ~50 chunks
 * rather than 1,000 blocks.
 */
function applyFilter(list: HTMLElement, visible: Map<string, 'all' | Set<string>>) {
  for (let chunk = list.firstElementChild as HTMLElement | null; chunk; chunk = chunk.nextElementSibling as HTMLElement | null) {
    let height = 0;
    let blocks = 0;
    for (let sec = chunk.firstElementChild as HTMLElement | null; sec; sec = sec.nextElementSibling as HTMLElement | null) {
      const vis = visible.get(sec.dataset.workspaceId!);
      const hide = vis === undefined;
      if (sec.hidden !== hide) sec.hidden = hide;
      if (hide) continue;
      blocks++;
      const rows = sec.lastElementChild!.children;
      let shown = 0;
      let none = false;
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i] as HTMLElement;
        const id = row.dataset.agentId;
        if (id === undefined) {
          none = true;
          continue;
        }
        const h = vis !== 'all' && !vis.has(id);
        if (row.hidden !== h) row.hidden = h;
        if (!h) shown++;
      }
      height += LAYOUT.borders + LAYOUT.head + shown * LAYOUT.row + (none ? LAYOUT.noAgents : 0);
    }
    const hide = blocks === 0;
    if (chunk.hidden !== hide) chunk.hidden = hide;
    const size = `none ${height + Math.max(0, blocks - 1) * LAYOUT.gap}px`;
    if (!hide && chunk.dataset.size !== size) {
      chunk.dataset.size = size;
      chunk.style.containIntrinsicSize = size;
    }
  }
}
