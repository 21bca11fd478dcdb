/**
 * Tests of the pure UI state: snapshots then diffs, stats, session, link,
 * account, the log ring, grouping and the filter.
 */
import { describe, expect, it } from 'vitest';
import { agent, diff, session, snapshot, stats, stream, ws } from './fixtures';
import { applyEvent, deriveGroups, filterGroups, initialState, LOG_CAPACITY, type AppState } from './store';
import type { UiEvent } from './bindings/UiEvent';

function run(events: UiEvent[], from: AppState = initialState, now = 1_000): AppState {
  return events.reduce((s, e) => applyEvent(s, e, now), from);
}

const ids = (m: ReadonlyMap<string, unknown>) => [...m.keys()].sort();

const api = ws('w1', 'api');
const web = ws('w2', 'web');

describe('snapshot then diffs', () => {
  it('builds the lists from a snapshot and then applies diffs', () => {
    let s = run([stream(0, snapshot([api, web], [agent('a1', 'main', api), agent('a2', 'main', web), agent('a3', 'gpu', api)]))]);
    expect(s.complete).toBe(true);
    expect(ids(s.workspaces)).toEqual(['w1', 'w2']);
    expect(ids(s.agents)).toEqual(['a1', 'a2', 'a3']);

    // Upsert: a new agent and a changed one.
    s = run([stream(1, diff([], [agent('a4', 'db', web), agent('a1', 'main', api, { online: false })]))], s);
    expect(ids(s.agents)).toEqual(['a1', 'a2', 'a3', 'a4']);
    expect(s.agents.get('a1')!.online).toBe(false);

    // An agent moved to another workspace.
    s = run([stream(2, diff([], [agent('a3', 'gpu', web)]))], s);
    const groups = deriveGroups(s).groups;
    expect(groups.map((g) => [g.workspace.id, g.agents.map((a) => a.id)])).toEqual([
      ['w1', ['a1']],
      ['w2', ['a4', 'a3', 'a2']],
    ]);

    // Deleting an agent, then a workspace with its agents.
    s = run([stream(3, diff([], [], [], ['a4']))], s);
    expect(ids(s.agents)).toEqual(['a1', 'a2', 'a3']);
    s = run([stream(4, diff([], [], ['w2'], []))], s);
    expect(ids(s.workspaces)).toEqual(['w1']);
    expect(ids(s.agents)).toEqual(['a1']);
    expect(s.outOfSync).toBe(false);
  });

  it('a new snapshot replaces everything: lists, stats and numbering', () => {
    let s = run([
      stream(0, snapshot([api, web], [agent('old1', 'main', api), agent('old2', 'main', web)], {
        stats: [stats('old1', 900)],
      })),
      stream(1, diff([], [agent('old3', 'x', api)])),
      // The app resubscribed to the helper (after a sleep, say): every
      // workspace restarted, so nothing old may survive.
      stream(0, snapshot([api], [agent('new1', 'main', api), agent('new2', 'db', api)], { session: session('reconnecting') })),
    ]);
    expect(s.complete).toBe(true);
    expect(ids(s.workspaces)).toEqual(['w1']);
    expect(ids(s.agents)).toEqual(['new1', 'new2']);
    expect(s.stats.size).toBe(0);
    expect(s.session!.state).toBe('reconnecting');
    s = run([stream(1, diff([], [agent('new3', 'x', api)]))], s);
    expect(ids(s.agents)).toEqual(['new1', 'new2', 'new3']);
    expect(s.outOfSync).toBe(false);
  });

  it('ignores diffs before the first snapshot', () => {
    let s = run([stream(0, diff([api], [agent('early', 'main', api)])), stream(1, { event: 'peer_stats', stats: [stats('early', 5)] })]);
    expect(s.agents.size).toBe(0);
    expect(s.stats.size).toBe(0);
    expect(s.complete).toBe(false);
    s = run([stream(0, snapshot([api], [agent('a1', 'main', api)])), stream(1, diff([], [agent('late', 'x', api)]))], s);
    expect(ids(s.agents)).toEqual(['a1', 'late']);
  });

  it('marks a gap as out of sync and ignores diffs until the next snapshot', () => {
    let s = run([stream(0, snapshot([api], [agent('a1', 'main', api)])), stream(2, diff([], [agent('a2', 'x', api)]))]);
    expect(s.outOfSync).toBe(true);
    expect(ids(s.agents)).toEqual(['a1']);
    s = run([stream(3, diff([], [agent('a3', 'y', api)]))], s);
    expect(ids(s.agents)).toEqual(['a1']);
    s = run([stream(0, snapshot([api], [agent('a9', 'z', api)]))], s);
    expect(s.outOfSync).toBe(false);
    expect(ids(s.agents)).toEqual(['a9']);
  });

  it('applies stats of known agents only and keeps unchanged rows identical', () => {
    let s = run([
      stream(0, snapshot([api, web], [agent('a1', 'main', api), agent('a2', 'main', web)])),
      stream(1, { event: 'peer_stats', stats: [stats('a1', 100, { rx_bytes: 5 }), stats('a2', 100), stats('ghost', 1)] }),
    ]);
    expect(ids(s.stats)).toEqual(['a1', 'a2']);
    const a2 = s.stats.get('a2');
    const groupsBefore = deriveGroups(s);
    s = run([stream(2, { event: 'peer_stats', stats: [stats('a1', 200, { rx_bytes: 9 })] })], s);
    expect(s.stats.get('a1')!.rx_bytes).toBe(9);
    expect(s.stats.get('a2')).toBe(a2);
    // Stats don't regroup.
    expect(deriveGroups(s, groupsBefore)).toBe(groupsBefore);
    // An upsert in one workspace keeps the other group object.
    s = run([stream(3, diff([], [agent('a3', 'x', web)]))], s);
    const after = deriveGroups(s, groupsBefore);
    expect(after.groups[0]).toBe(groupsBefore.groups[0]);
    expect(after.groups[1]).not.toBe(groupsBefore.groups[1]);
    // Deleting an agent drops its stats.
    s = run([stream(4, diff([], [], [], ['a1']))], s);
    expect(ids(s.stats)).toEqual(['a2']);
  });

  it('follows session changes and remembers when they arrived', () => {
    let s = run([stream(0, snapshot([], [], { session: session('connecting') }))], initialState, 10);
    expect(s.session!.state).toBe('connecting');
    s = applyEvent(s, stream(1, { event: 'session_changed', session: session('reconnecting', { retry_in_ms: 8000, reason: 'coordinator unreachable' }) }), 5_000);
    expect(s.session!.state).toBe('reconnecting');
    expect(s.sessionAt).toBe(5_000);
  });
});

describe('link, account and logs', () => {
  it('tracks the helper link and drops the stream when it is lost', () => {
    let s = applyEvent(initialState, { kind: 'helper', link: { state: 'searching', socket: '/run/warren.sock', message: null, helper_version: null, retry_in_ms: null } }, 1);
    expect(s.link!.state).toBe('searching');
    s = run([
      { kind: 'helper', link: { state: 'connected', socket: '/run/warren.sock', message: null, helper_version: '0.3.0', retry_in_ms: null } },
      stream(0, snapshot([api], [])),
    ], s);
    expect(s.complete).toBe(true);
    s = applyEvent(s, { kind: 'helper', link: { state: 'missing', socket: '/run/warren.sock', message: 'Start it.', helper_version: null, retry_in_ms: 3000 } }, 77);
    expect(s.link!.state).toBe('missing');
    expect(s.linkAt).toBe(77);
    expect(s.complete).toBe(false);
    // A diff from the old stream can't apply; the next snapshot can.
    s = run([stream(1, diff([web], []))], s);
    expect(s.workspaces.has('w2')).toBe(false);
  });

  it('tracks the account', () => {
    expect(initialState.account).toBeUndefined();
    let s = applyEvent(initialState, { kind: 'account', account: null }, 0);
    expect(s.account).toBeNull();
    s = applyEvent(s, { kind: 'account', account: { url: 'https://w.example', user: 'alice' } }, 0);
    expect(s.account).toEqual({ url: 'https://w.example', user: 'alice' });
  });

  it('remembers the deployment after a sign-out, to offer it again', () => {
    expect(initialState.lastUrl).toBeNull();
    let s = applyEvent(initialState, { kind: 'account', account: { url: 'https://w.example', user: 'alice' } }, 0);
    s = applyEvent(s, { kind: 'account', account: null }, 0);
    expect(s.account).toBeNull();
    expect(s.lastUrl).toBe('https://w.example');
    s = applyEvent(s, { kind: 'account', account: null }, 0);
    expect(s.lastUrl).toBe('https://w.example');
  });

  it('keeps the last 1,000 log lines', () => {
    let s = run([stream(0, snapshot([], []))]);
    for (let i = 0; i < LOG_CAPACITY + 250; i++) {
      s = applyEvent(s, stream(i + 1, { event: 'log', line: { time_ms: i, level: 'INFO', target: 't', message: `line ${i}` } }), 0);
    }
    expect(s.logs.length).toBe(LOG_CAPACITY);
    expect(s.logs[0].message).toBe('line 250');
    expect(s.logs[LOG_CAPACITY - 1].message).toBe(`line ${LOG_CAPACITY + 249}`);
    expect(new Set(s.logs.map((l) => l.id)).size).toBe(LOG_CAPACITY);
    // Logs count in the sequence: the next diff is not a gap.
    s = applyEvent(s, stream(LOG_CAPACITY + 251, diff([api], [])), 0);
    expect(s.outOfSync).toBe(false);
    expect(s.workspaces.has('w1')).toBe(true);
  });
});

describe('filter', () => {
  const db = ws('w3', 'Database', 'bob');
  const agents = [
    agent('a1', 'main', api, { addresses: ['100.64.0.5', 'fd00::5'] }),
    agent('a2', 'gpu', api),
    agent('a3', 'main', web),
    agent('a4', 'replica', db, { dns_names: ['replica.database.bob.warren', 'database.warren'] }),
  ];
  const groups = deriveGroups({ workspaces: new Map([api, web, db].map((w) => [w.id, w])), agents: new Map(agents.map((a) => [a.id, a])) }).groups;

  it('sorts workspaces by owner then name, naturally', () => {
    expect(groups.map((g) => g.workspace.name)).toEqual(['api', 'web', 'Database']);
    const many = ['ws-10', 'ws-2', 'WS-1', 'ws-1b'].map((n, i) => ws(`x${i}`, n));
    const sorted = deriveGroups({ workspaces: new Map(many.map((w) => [w.id, w])), agents: new Map() }).groups;
    expect(sorted.map((g) => g.workspace.name)).toEqual(['WS-1', 'ws-1b', 'ws-2', 'ws-10']);
  });

  it('shows everything for an empty query', () => {
    const r = filterGroups(groups, '  ');
    expect([r.shown, r.total]).toEqual([4, 4]);
    expect([...r.visible.values()]).toEqual(['all', 'all', 'all']);
  });

  it('matches a workspace name (all its agents), case-insensitively', () => {
    const r = filterGroups(groups, 'DATA');
    expect([r.shown, r.total]).toEqual([1, 4]);
    expect(r.visible.get('w3')).toBe('all');
    expect(r.visible.has('w1')).toBe(false);
  });

  it('matches agent names, DNS names and addresses', () => {
    const byName = filterGroups(groups, 'gp');
    expect(byName.shown).toBe(1);
    expect([...(byName.visible.get('w1') as Set<string>)]).toEqual(['a2']);
    const byDns = filterGroups(groups, 'main.web.alice');
    expect(byDns.shown).toBe(1);
    expect([...(byDns.visible.get('w2') as Set<string>)]).toEqual(['a3']);
    const byAddr = filterGroups(groups, 'FD00::5');
    expect([...(byAddr.visible.get('w1') as Set<string>)]).toEqual(['a1']);
    const main = filterGroups(groups, 'main');
    expect(main.shown).toBe(2);
    expect(filterGroups(groups, 'nothing-like-this').shown).toBe(0);
  });
});
