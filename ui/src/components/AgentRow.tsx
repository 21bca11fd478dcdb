/**
 * One agent: status dot, name (marked when the helper ignored some of what
 * it announced), primary DNS name with a copy button, handshake age,
 * traffic and round-trip time (a button: ping it now).
 *
 * Memoized by (agent, stats) object identity, so a stats update
 * re-renders only the rows whose figures changed. The handshake age and the
 * dot move with time: the shared clock repaints just that text and the
 * `data-dot` attribute in place, without a render.
 */
import { memo } from '../memo';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import * as api from '../api';
import type { Agent } from '../bindings/Agent';
import type { PeerStats } from '../bindings/PeerStats';
import { onTick } from '../clock';
import { agentRowName } from '../names';
import { agentDot, formatRtt, handshakeText, pathText, pathTitle, trafficText } from '../status';
import { IconAlert } from './icons';

const COPIED_FOR_MS = 1500;
/** How long a fresh ping result stays before the reported RTT returns. */
const PING_SHOWN_MS = 4000;

export interface AgentRowProps {
  agent: Agent;
  stats: PeerStats | undefined;
  /** What the helper ignored of this agent (its notices), if anything. */
  warning?: string;
}

function AgentRowImpl({ agent, stats, warning }: AgentRowProps) {
  const rowRef = useRef<HTMLDivElement>(null);
  const hsRef = useRef<HTMLSpanElement>(null);
  const pathRef = useRef<HTMLSpanElement>(null);

  // Runs before paint, so a new handshake is on screen in the same frame.
  useLayoutEffect(() => {
    const row = rowRef.current!;
    const hs = hsRef.current!;
    const path = pathRef.current!;
    const paint = (now: number) => {
      const dot = agentDot(agent, stats, now);
      if (row.dataset.dot !== dot) row.dataset.dot = dot;
      const text = handshakeText(agent, stats, now);
      if (hs.textContent !== text) hs.textContent = text;
      // The path lapses with the handshake, so it is painted with it.
      const via = pathText(stats, now);
      if (path.textContent !== via) path.textContent = via;
      const title = pathTitle(stats, now);
      if (path.title !== title) path.title = title;
    };
    paint(Date.now());
    // Only a handshake ages; other texts stay as they are until new data.
    if (!agent.online || stats?.last_handshake_ms == null) return;
    return onTick(paint);
  }, [agent, stats]);

  const name = agentRowName(agent);
  return (
    <div class="agent" ref={rowRef} data-testid="agent-row" data-agent-id={agent.id} data-warning={warning ? '' : undefined}>
      <span class="dot" />
      <span class="agent-id">
        <span class="agent-name">
          {agent.name}
          {warning && (
            <span class="agent-warning" data-testid="agent-warning" role="img" aria-label={`Warning: ${warning}`} title={warning}>
              <IconAlert size={13} />
            </span>
          )}
        </span>
        <span class="agent-dns">
          {name ? (
            <>
              <code class="dns">{name}</code>
              <CopyButton text={name} />
            </>
          ) : (
            <span class="muted">no name yet</span>
          )}
          <span class="path" ref={pathRef} data-testid="path" />
        </span>
      </span>
      <span class="handshake" ref={hsRef} data-testid="handshake" />
      <span class="traffic" data-testid="traffic">{trafficText(stats)}</span>
      <PingButton target={name} rttUs={stats?.rtt_us} />
    </div>
  );
}

// Named for the render counter in the e2e harness (minified builds lose function names).
AgentRowImpl.displayName = 'AgentRow';
export const AgentRow = memo(AgentRowImpl);

export function CopyButton({ text }: { text: string }) {
  const [copied, setCopied] = useState(false);
  const [failed, setFailed] = useState<string | null>(null);
  const timer = useRef<ReturnType<typeof setTimeout>>();
  useEffect(() => () => clearTimeout(timer.current), []);
  const copy = async () => {
    try {
      await api.copyText(text);
      setFailed(null);
      setCopied(true);
      clearTimeout(timer.current);
      timer.current = setTimeout(() => setCopied(false), COPIED_FOR_MS);
    } catch (e) {
      setFailed(api.asCommandError(e).message);
    }
  };
  return (
    <button type="button" class={`copy${copied ? ' copied' : ''}`} data-testid="copy-name" onClick={copy}
      title={failed ?? `Copy ${text}`} aria-label={`Copy ${text}`}>
      {copied ? <span>Copied</span> : null}
    </button>
  );
}

type PingShown = { text: string; error: boolean; title: string };

/**
 * The round-trip time the helper reported; clicking it pings the agent now
 * through the tunnel and shows that answer (or why there was none) for a
 * few seconds.
 */
function PingButton({ target, rttUs }: { target: string | null; rttUs: number | null | undefined }) {
  const [busy, setBusy] = useState(false);
  const [shown, setShown] = useState<PingShown | null>(null);
  const timer = useRef<ReturnType<typeof setTimeout>>();
  useEffect(() => () => clearTimeout(timer.current), []);
  const ping = async () => {
    if (!target || busy) return;
    setBusy(true);
    let next: PingShown;
    try {
      const report = await api.ping(target);
      next = { text: formatRtt(report.rtt_us), error: false, title: `Reply from ${report.address}` };
    } catch (e) {
      const err = api.asCommandError(e);
      next = { text: 'no reply', error: true, title: err.message };
    }
    setBusy(false);
    setShown(next);
    clearTimeout(timer.current);
    timer.current = setTimeout(() => setShown(null), PING_SHOWN_MS);
  };
  const cls = `rtt ping${shown ? (shown.error ? ' ping-failed' : ' ping-ok') : ''}`;
  return (
    <button type="button" class={cls} data-testid="rtt" onClick={ping} disabled={!target}
      title={shown?.title ?? (target ? `Ping ${target} through the tunnel` : 'No address yet')}>
      {busy ? 'pinging…' : shown ? shown.text : formatRtt(rttUs)}
    </button>
  );
}
