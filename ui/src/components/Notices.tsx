/**
 * What the helper refused, under the header: the banner of a session that
 * failed for a reason only a person can fix (sign in again, or take the
 * reason to the deployment's administrator), and the disclosure listing the
 * notices of a running session (agents left out, endpoints cut, too many
 * agents).
 */
import { useState } from 'preact/hooks';
import type { Notice } from '../bindings/Notice';
import type { SessionInfo } from '../bindings/SessionInfo';
import { failureText, noticesHint, noticesTitle, sentence, sessionFix } from '../status';
import { withCode } from './HelperScreens';
import { IconAlert } from './icons';

/**
 * The failed-session banner, or nothing. "Sign in again…" signs out and
 * lands on the form with the deployment filled in; a refused deployment
 * gets no retry (it would be refused again), only a way to sign out.
 */
export function SessionFailure(props: {
  session: SessionInfo | null;
  host: string;
  busy: boolean;
  onSignIn: () => void;
  onSignOut: () => void;
}) {
  const fix = sessionFix(props.session);
  const text = failureText(props.session);
  const [confirm, setConfirm] = useState(false);
  if (!fix || !text) return null;
  const code = props.session?.reason_code ?? undefined;
  if (fix === 'sign_in_again') {
    return (
      <div class="banner error" role="alert" data-testid="sign-in-required" data-reason={code}>
        <IconAlert />
        <span><strong>{text.title}</strong> {withCode(text.detail)}</span>
        <button type="button" class="btn" data-testid="sign-in-again" disabled={props.busy} onClick={props.onSignIn}>
          Sign in again…
        </button>
      </div>
    );
  }
  return (
    <div class="banner error" role="alert" data-testid="deployment-refused" data-reason={code}>
      <IconAlert />
      <span><strong>{text.title}</strong> {withCode(text.detail)}</span>
      {confirm ? (
        <span class="confirm banner-actions" data-testid="refused-sign-out-box">
          <button type="button" class="btn" disabled={props.busy} onClick={() => setConfirm(false)}>Cancel</button>
          <button type="button" class="btn danger" data-testid="refused-sign-out-confirm" disabled={props.busy}
            onClick={props.onSignOut}>
            Sign out of {props.host}
          </button>
        </span>
      ) : (
        <button type="button" class="btn" data-testid="refused-sign-out" disabled={props.busy}
          title="Forget this deployment's token, to sign in to another one" onClick={() => setConfirm(true)}>
          Sign out…
        </button>
      )}
    </div>
  );
}

/**
 * "3 warnings about this deployment", a disclosure (closed at first, so a
 * long list never pushes the workspaces away) over every notice, newest
 * last, as the helper sent them.
 */
export function SessionNotices({ notices }: { notices: readonly Notice[] | undefined }) {
  if (!notices || notices.length === 0) return null;
  const hint = noticesHint(notices);
  return (
    <details class="notices" data-testid="notices">
      <summary data-testid="notices-summary">
        <IconAlert />
        <span aria-live="polite">{noticesTitle(notices)}</span>
        {hint && <span class="notices-hint muted">— {hint}</span>}
      </summary>
      <ul class="notices-list">
        {notices.map((n, i) => (
          <li key={i} data-testid="notice" data-kind={n.kind} data-about-agent={n.agent_id ?? undefined}>
            {withCode(sentence(n.message))}
          </li>
        ))}
      </ul>
    </details>
  );
}
