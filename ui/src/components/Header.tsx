/**
 * The header over every section: who is signed in where, how the session
 * stands (with a live reconnect countdown), Reconnect, the Connect switch,
 * and under them what needs a person (a failure only they can fix, what
 * the helper refused of the deployment).
 */
import { useEffect, useState } from 'preact/hooks';
import * as api from '../api';
import { useNow } from '../clock';
import type { AppState } from '../store';
import { sessionDot, sessionFix, sessionIsOn, sessionText } from '../status';
import { IconAlert, IconRefresh } from './icons';
import { SessionFailure, SessionNotices } from './Notices';
import { hostOf } from './Shell';
import { Switch } from './Switch';

/** How long the switch may show a target the session hasn't reached yet. */
const PENDING_MS = 3000;

export function Header({ state, onSignedOut }: { state: AppState; onSignedOut: () => void }) {
  const session = state.session;
  const on = sessionIsOn(session?.state);
  const [busy, setBusy] = useState<null | 'toggle' | 'reconnect' | 'sign-in'>(null);
  const [error, setError] = useState<string | null>(null);
  // While connect/disconnect runs, and until the session moves (at most
  // PENDING_MS), the switch shows where it is going instead of flicking back.
  const [pending, setPending] = useState<{ target: boolean; from: string | undefined } | null>(null);
  useEffect(() => {
    if (!pending) return;
    const t = setTimeout(() => setPending(null), PENDING_MS);
    return () => clearTimeout(t);
  }, [pending]);
  const showOn = pending && busy !== 'toggle' && session?.state !== pending.from ? on : pending ? pending.target : on;
  const counting = session?.state === 'reconnecting' && session.retry_in_ms != null;
  const now = useNow(counting);
  const account = state.account!;
  const helperLost = state.link?.state !== 'connected';

  /** Runs a command; resolves to whether it succeeded. */
  const run = async (what: 'toggle' | 'reconnect' | 'sign-in', f: () => Promise<void>): Promise<boolean> => {
    setBusy(what);
    setError(null);
    try {
      await f();
      return true;
    } catch (e) {
      setError(api.asCommandError(e).message);
      return false;
    } finally {
      setBusy(null);
    }
  };

  // Both ways out of a failed session go through the sign-in form, which
  // the deployment's URL is filled in on.
  const signOut = () => void run('sign-in', api.signOut).then((ok) => ok && onSignedOut());
  const tunnel = session?.tunnel;
  return (
    <header class="header">
      <div class="header-row">
        <div class="session">
          <span class={`dot big ${sessionDot(session?.state)}`} aria-hidden="true" />
          <div>
            <div class="session-state" data-testid="session-state" data-state={session?.state ?? 'disconnected'}>
              {sessionText(session, state.sessionAt, now)}
            </div>
            <div class="session-account muted" data-testid="header-account">
              {account.user ? `${account.user} @ ${hostOf(account.url)}` : hostOf(account.url)}
            </div>
          </div>
        </div>
        <div class="header-actions">
          {on && (
            <button type="button" class="btn ghost" data-testid="reconnect" disabled={busy !== null || helperLost}
              onClick={() => run('reconnect', api.reconnect)} title="Drop the connection and connect again">
              <IconRefresh /> Reconnect
            </button>
          )}
          <Switch testid="connect-toggle" label="Connect" checked={showOn}
            disabled={busy !== null || helperLost}
            onChange={(v) => {
              setPending({ target: v, from: session?.state });
              void run('toggle', v ? api.connect : api.disconnect).then((ok) => ok || setPending(null));
            }} />
        </div>
      </div>
      {helperLost && (
        <div class="banner warn" data-testid="helper-lost">
          <span class="spinner small" aria-hidden="true" />
          {state.link?.message ?? 'Lost the Warren helper — looking for it…'}
        </div>
      )}
      {sessionFix(session) && (
        <SessionFailure session={session} host={hostOf(account.url)} busy={busy !== null}
          onSignIn={signOut} onSignOut={signOut} />
      )}
      {tunnel?.state === 'failed' && (
        <div class="banner warn" role="alert" data-testid="tunnel-warning">
          <IconAlert />
          <span><strong>The tunnel is down.</strong> {tunnel.error ?? 'Workspaces are listed but not reachable.'}</span>
        </div>
      )}
      {error && (
        <div class="banner error" role="alert" data-testid="command-error">
          <IconAlert />
          <span>{error}</span>
        </div>
      )}
      <SessionNotices notices={session?.notices} />
    </header>
  );
}
