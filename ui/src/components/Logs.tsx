/**
 * The Logs section: the helper's recent log lines (the store keeps the last
 * 1,000), newest at the bottom; it follows new lines while scrolled to the end.
 */
import { memo } from '../memo';
import { useLayoutEffect, useRef } from 'preact/hooks';
import type { LogEntry } from '../store';

function levelClass(level: string): string {
  const l = level.toLowerCase();
  return l === 'error' || l === 'warn' || l === 'info' || l === 'debug' || l === 'trace' ? l : 'info';
}

function time(ms: number): string {
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

const Line = memo(function Line({ line }: { line: LogEntry }) {
  return (
    <div class={`log-line ${levelClass(line.level)}`} data-testid="log-line">
      <span class="log-time">{time(line.time_ms)}</span>
      <span class="log-level">{line.level.toUpperCase()}</span>
      <span class="log-target">{line.target}</span>
      <span class="log-msg">{line.message}</span>
    </div>
  );
});

export function Logs({ logs }: { logs: readonly LogEntry[] }) {
  const box = useRef<HTMLDivElement>(null);
  const atEnd = useRef(true);
  useLayoutEffect(() => {
    const el = box.current;
    if (el && atEnd.current) el.scrollTop = el.scrollHeight;
  }, [logs]);
  return (
    <div class="page logs-page" data-testid="logs">
      <div class="page-head">
        <h2 class="page-title">Helper log</h2>
        <span class="muted">{logs.length === 0 ? '' : `last ${logs.length.toLocaleString('en-US')} lines`}</span>
      </div>
      {logs.length === 0 ? (
        <div class="empty" data-testid="empty-state">
          <h2>No log lines yet</h2>
          <p class="muted">The helper’s log appears here while the app is connected to it.</p>
        </div>
      ) : (
        <div class="log-box" ref={box}
          onScroll={(e) => {
            const el = e.currentTarget;
            atEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
          }}>
          {logs.map((l) => <Line key={l.id} line={l} />)}
        </div>
      )}
    </div>
  );
}
