/**
 * The UI with Tauri's IPC replaced by a fake app + helper (`mockIPC`), driven
 * from the Playwright tests through `window.warrenMock`: set the helper
 * link, the account and the session, seed workspaces and agents, push stats
 * and log lines, make `sign_in` fail for a token, and read back every
 * command the UI invoked.
 *
 * Query parameters set the starting point: `link` (a HelperLinkState,
 * default `connected`), `account` (`none` or a user name, default `alice`),
 * `session` (default `disconnected`), `seed` (`demo`, `none`, or a number of
 * workspaces with two agents each), `naive=1` (the benchmark's baseline list,
 * `naive.tsx`, instead of the app).
 */
import { mockIPC, mockWindows } from '@tauri-apps/api/mocks';
import { options, render, type VNode } from 'preact';
import type { Channel } from '@tauri-apps/api/core';
import '../src/styles.css';
import { boot, follow } from '../src/boot';
import { createLive } from '../src/live';
import { NaiveApp } from './naive';
import type { Account } from '../src/bindings/Account';
import type { Agent } from '../src/bindings/Agent';
import type { CommandErrorKind } from '../src/bindings/CommandErrorKind';
import type { CommandName } from '../src/bindings/commands';
import type { Event } from '../src/bindings/Event';
import type { HelperLink } from '../src/bindings/HelperLink';
import type { HelperLinkState } from '../src/bindings/HelperLinkState';
import type { PeerStats } from '../src/bindings/PeerStats';
import type { SessionInfo } from '../src/bindings/SessionInfo';
import type { SessionState } from '../src/bindings/SessionState';
import type { Settings } from '../src/bindings/Settings';
import type { TunnelInfo } from '../src/bindings/TunnelInfo';
import type { UiEvent } from '../src/bindings/UiEvent';
import type { Workspace } from '../src/bindings/Workspace';
import { session as mkSession } from '../src/fixtures';

const params = new URLSearchParams(location.search);
const SOCKET = '/run/warren/warrend.sock';
const URL_ = 'https://warren.example.com';
const TUNNEL_UP = { state: 'up', error: null, interface: 'warren0', listen_port: 51820, generation: 1 } as TunnelInfo;

const LINK_MESSAGES: Partial<Record<HelperLinkState, string>> = {
  missing: 'Nothing is listening on /run/warren/warrend.sock. Start the helper with `sudo systemctl start warrend`, or reinstall Warren.',
  not_permitted: 'The helper only talks to members of the group `warren`. Run `sudo usermod -aG warren $USER`, then log out and back in.',
  version_mismatch: 'This app speaks warren-ipc 1.0 but the helper speaks 2.0. Update Warren so both come from the same release.',
  failed: 'The helper did not answer within 5 s. Restart it with `sudo systemctl restart warrend`.',
};

interface Model {
  link: HelperLink;
  account: Account | null;
  session: SessionInfo;
  workspaces: Workspace[];
  agents: Agent[];
  stats: PeerStats[];
  settings: Settings;
  seq: number;
  channel: Channel<UiEvent> | null;
  calls: { cmd: string; args: unknown }[];
  signInFailures: Record<string, { kind: CommandErrorKind; message: string }>;
  failures: Record<string, { kind: CommandErrorKind; message: string }>;
  signInDelayMs: number;
  connectDelayMs: number;
}

function link(state: HelperLinkState, extra: Partial<HelperLink> = {}): HelperLink {
  const trouble = state !== 'connected' && state !== 'searching';
  return {
    state,
    socket: SOCKET,
    message: trouble ? (LINK_MESSAGES[state] ?? null) : null,
    helper_version: state === 'connected' ? '0.4.2' : null,
    retry_in_ms: trouble ? 5000 : null,
    ...extra,
  };
}

const m: Model = {
  link: link((params.get('link') as HelperLinkState) ?? 'connected'),
  account: params.get('account') === 'none' ? null : { url: URL_, user: params.get('account') ?? 'alice' },
  session: mkSession((params.get('session') as SessionState) ?? 'disconnected'),
  workspaces: [],
  agents: [],
  stats: [],
  settings: { start_on_login: true, start_minimized: false, log_level: 'info' },
  seq: 0,
  channel: null,
  calls: [],
  signInFailures: {},
  failures: {},
  signInDelayMs: 250,
  connectDelayMs: 120,
};

function deliver(ev: UiEvent) {
  m.channel?.onmessage(ev);
}

function stream(event: Event) {
  deliver({ kind: 'stream', seq: m.seq++, event });
}

/** The helper's full state as the app sends it: one whole snapshot that replaces everything, numbered from 0. */
function sendSnapshot() {
  if (m.link.state !== 'connected') return;
  m.seq = 0;
  stream({ event: 'state', part: 0, last: true, session: m.session, workspaces: m.workspaces, agents: m.agents, stats: m.stats });
}

/** Replays like the app does on `subscribe`: link, account, then the helper's snapshot. */
function replay() {
  deliver({ kind: 'helper', link: m.link });
  deliver({ kind: 'account', account: m.account });
  if (m.account) sendSnapshot();
}

function setSession(state: SessionState, extra: Partial<SessionInfo> = {}) {
  m.session = mkSession(state, extra);
  stream({ event: 'session_changed', session: m.session });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function fail(kind: CommandErrorKind, message: string) {
  return Promise.reject({ kind, message });
}

async function handle(cmd: string, args: Record<string, unknown> | undefined): Promise<unknown> {
  m.calls.push({ cmd, args: cmd === 'subscribe' ? {} : JSON.parse(JSON.stringify(args ?? {})) });
  const f = m.failures[cmd];
  if (f) return fail(f.kind, f.message);
  // Typed by the generated command list: a command added on the Rust side
  // without a case here fails the type check at `default`.
  const command = cmd as CommandName;
  switch (command) {
    case 'subscribe':
      m.channel = args!.on_event as Channel<UiEvent>;
      // The app answers the command, then streams.
      setTimeout(replay, 0);
      return null;
    case 'ui_ready':
      return null;
    case 'app_info':
      return { app_version: '0.4.2', protocol_version: '1.0', socket: SOCKET, os: 'linux', log_dir: '/home/alice/.local/state/warren/logs' };
    case 'sign_in': {
      const req = args!.request as { url: string; token: string; ca_pem: string | null };
      await sleep(m.signInDelayMs);
      if (!/^https?:\/\/[^/\s]+/.test(req.url)) return fail('bad_url', 'Enter the deployment’s address, like https://warren.example.com.');
      if (req.token === '') return fail('empty_token', 'Paste the token your deployment gave you.');
      const sf = m.signInFailures[req.token];
      if (sf) return fail(sf.kind, sf.message);
      m.account = { url: req.url.replace(/\/+$/, ''), user: 'alice' };
      deliver({ kind: 'account', account: m.account });
      sendSnapshot();
      return m.account;
    }
    case 'start_browser_sign_in': {
      const url = args!.url as string;
      if (!/^https?:\/\/[^/\s]+/.test(url)) return fail('bad_url', 'Enter the deployment’s address, like https://warren.example.com.');
      deliver({ kind: 'browser_sign_in', status: { state: 'waiting', url, refused: null } });
      return null;
    }
    case 'cancel_browser_sign_in':
      deliver({ kind: 'browser_sign_in', status: { state: 'idle' } });
      return null;
    case 'sign_out':
      m.account = null;
      m.session = mkSession('disconnected');
      deliver({ kind: 'account', account: null });
      return null;
    case 'connect':
      setSession('connecting');
      await sleep(m.connectDelayMs);
      setSession('connected', { tunnel: TUNNEL_UP });
      return null;
    case 'disconnect':
      setSession('disconnected');
      return null;
    case 'reconnect':
      setSession('connecting');
      await sleep(m.connectDelayMs);
      setSession('connected');
      return null;
    case 'get_settings':
      return m.settings;
    case 'set_settings':
      m.settings = args!.settings as Settings;
      return m.settings;
    case 'export_logs':
      return '/home/alice/Downloads/warren-logs-2026-11-23.zip';
    case 'copy_text':
      return null;
    case 'ping': {
      const target = args!.target as string;
      const agent = m.agents.find((a) => a.dns_names.includes(target));
      if (!agent || !agent.online) return fail('helper', `No reply from ${target} within 2 s; is its agent running?`);
      return { agent_id: agent.id, name: target, address: agent.addresses[0] ?? '100.64.0.9', rtt_us: 420, endpoint: null };
    }
    default: {
      const unknown: never = command;
      return fail('other', `unknown command ${String(unknown)}`);
    }
  }
}

function mkAgent(id: string, name: string, w: Workspace, n: number, extra: Partial<Agent> = {}, first = false): Agent {
  return {
    id,
    name,
    workspace_id: w.id,
    public_key: 'bW9jay1rZXktbm90LWEtcmVhbC1rZXktMDAwMDAwMDA=',
    addresses: [`100.64.${(n >> 8) & 255}.${n & 255}`, `fd7a:115c:a1e0::${n.toString(16)}`],
    endpoints: [`203.0.113.${(n % 250) + 1}:51820`],
    dns_names: [`${name}.${w.name}.${w.owner}.warren`, ...(first ? [`${w.name}.warren`] : [])],
    online: true,
    ...extra,
  };
}

/** `n` workspaces `ws-0…` with two agents each, every one with a recent handshake. */
function seedMany(n: number) {
  const now = Date.now();
  m.workspaces = [];
  m.agents = [];
  m.stats = [];
  let k = 1;
  for (let i = 0; i < n; i++) {
    const w: Workspace = { id: `w${i}`, name: `ws-${i}`, owner: 'alice' };
    m.workspaces.push(w);
    for (const [j, name] of ['main', 'worker'].entries()) {
      const a = mkAgent(`a${i}-${j}`, name, w, k++, {}, j === 0);
      m.agents.push(a);
      m.stats.push({ agent_id: a.id, last_handshake_ms: now - ((i * 7 + j * 3) % 170) * 1000, rx_bytes: 1000 * (i + 1) * (j + 3), tx_bytes: 700 * (i + 2), rtt_us: 400 + ((i * 37) % 900), endpoint: a.endpoints[0] });
    }
  }
}

/** A realistic handful: every kind of dot. */
function seedDemo() {
  const now = Date.now();
  const ws = (id: string, name: string, owner = 'alice'): Workspace => ({ id, name, owner });
  const api = ws('w-api', 'api');
  const web = ws('w-web', 'web');
  const data = ws('w-data', 'data-pipeline');
  const ml = ws('w-ml', 'ml-training');
  const docs = ws('w-docs', 'docs');
  m.workspaces = [api, web, data, ml, docs];
  m.agents = [
    mkAgent('a-api-main', 'main', api, 5, {}, true),
    mkAgent('a-api-gpu', 'gpu-worker', api, 6),
    mkAgent('a-web-main', 'main', web, 7, {}, true),
    mkAgent('a-data-main', 'main', data, 8, {}, true),
    mkAgent('a-data-spark', 'spark', data, 9),
    mkAgent('a-ml-trainer', 'trainer', ml, 10, { online: false }, true),
    mkAgent('a-docs-main', 'main', docs, 11, {}, true),
  ];
  const st = (id: string, ageS: number | null, rx: number, tx: number, rtt: number | null): PeerStats => ({
    agent_id: id, last_handshake_ms: ageS == null ? null : now - ageS * 1000, rx_bytes: rx, tx_bytes: tx, rtt_us: rtt, endpoint: null,
  });
  m.stats = [
    st('a-api-main', 4, 1_234_567, 340_120, 540),
    st('a-api-gpu', 250, 48_200_000, 2_100_000, 21_800),
    st('a-web-main', 12, 7_800, 5_400, 610),
    st('a-data-main', 41, 912_000_000, 12_300_000, 1_900),
    st('a-data-spark', null, 0, 296, null),
    st('a-ml-trainer', 20, 3_400_000, 880_000, 720),
  ];
}

function reseed(what: string | null) {
  if (what === 'demo') seedDemo();
  else if (what && /^\d+$/.test(what)) seedMany(Number(what));
  else {
    m.workspaces = [];
    m.agents = [];
    m.stats = [];
  }
}

reseed(params.get('seed'));
if (params.get('session')) {
  const s = params.get('session') as SessionState;
  m.session = mkSession(s, s === 'connected' ? { tunnel: TUNNEL_UP } : {});
}

/** How many times an agent row component rendered (memo skips don't count). */
let rowRenders = 0;
const diffed = options.diffed;
options.diffed = (vnode: VNode) => {
  const t = vnode.type as { displayName?: string } | string;
  if (typeof t === 'function' && (t as { displayName?: string }).displayName === 'AgentRow') rowRenders++;
  diffed?.(vnode);
};

/** What the tests drive. */
const warrenMock = {
  /** Row renders since the last call. */
  takeRowRenders() {
    const n = rowRenders;
    rowRenders = 0;
    return n;
  },
  model: m,
  calls: (cmd?: string) => m.calls.filter((c) => !cmd || c.cmd === cmd).map((c) => c.args),
  setLink(state: HelperLinkState, extra: Partial<HelperLink> = {}) {
    m.link = link(state, extra);
    deliver({ kind: 'helper', link: m.link });
    // A found helper streams its state, as the app's fresh subscription would.
    if (state === 'connected' && m.account) sendSnapshot();
  },
  setAccount(account: Account | null) {
    m.account = account;
    deliver({ kind: 'account', account });
  },
  setSession,
  /** Replaces the helper's lists and sends them as a fresh snapshot. */
  seed(what: 'demo' | 'none' | number) {
    reseed(String(what));
    sendSnapshot();
  },
  snapshot: sendSnapshot,
  stream,
  send: deliver,
  stats(stats: PeerStats[]) {
    stream({ event: 'peer_stats', stats });
  },
  log(level: string, target: string, message: string, time_ms = Date.now()) {
    stream({ event: 'log', line: { time_ms, level, target, message } });
  },
  failSignIn(token: string, kind: CommandErrorKind, message: string) {
    m.signInFailures[token] = { kind, message };
  },
  failCommand(cmd: string, kind: CommandErrorKind | null, message = '') {
    if (kind) m.failures[cmd] = { kind, message };
    else delete m.failures[cmd];
  },
};

declare global {
  interface Window {
    warrenMock: typeof warrenMock;
  }
}
window.warrenMock = warrenMock;

mockWindows('main');
mockIPC((cmd, args) => handle(cmd, args as Record<string, unknown> | undefined));
const root = document.getElementById('app')!;
if (params.get('naive') === '1') {
  const live = createLive();
  render(<NaiveApp live={live} />, root);
  follow(live);
} else {
  boot(root);
}
