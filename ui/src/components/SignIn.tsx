/**
 * The sign-in screen: the deployment URL, then "Sign in with browser" (the
 * app opens the coordinator's sign-in page and finishes when the browser
 * hands back the `warren://signin` link), or a token pasted by hand, and an
 * optional CA certificate for a self-hosted coordinator. A failure is shown
 * under the field it is about; while the browser is out, a waiting card
 * with Cancel.
 */
import { useState } from 'preact/hooks';
import * as api from '../api';
import type { Account } from '../bindings/Account';
import type { BrowserSignIn } from '../bindings/BrowserSignIn';
import type { CommandError } from '../bindings/CommandError';
import { browserPhase, hostOf } from '../browserSignIn';
import { Logo } from './icons';

/** `browser`: starting the browser sign-in failed (shown under its button). */
type Field = 'url' | 'token' | 'form' | 'browser';

/** Which field a failed sign-in is about. */
export function errorField(kind: CommandError['kind']): Field {
  switch (kind) {
    case 'bad_url':
      return 'url';
    case 'empty_token':
    case 'wrong_token':
    case 'agent_token':
      return 'token';
    default:
      return 'form';
  }
}

export function SignIn({
  onSignedIn,
  initialUrl,
  browser = { state: 'idle' },
}: {
  onSignedIn: (a: Account) => void;
  initialUrl?: string | null;
  browser?: BrowserSignIn;
}) {
  const [url, setUrl] = useState(initialUrl ?? '');
  const [token, setToken] = useState('');
  const [ca, setCa] = useState('');
  const [busy, setBusy] = useState(false);
  const [starting, setStarting] = useState(false);
  const [error, setError] = useState<{ field: Field; message: string } | null>(null);
  const phase = browserPhase(browser, starting);

  const startBrowser = async () => {
    if (busy || starting) return;
    setStarting(true);
    setError(null);
    try {
      await api.startBrowserSignIn(url.trim(), ca.trim() === '' ? null : ca);
    } catch (err) {
      const ce = api.asCommandError(err);
      setError({ field: ce.kind === 'bad_url' ? 'url' : 'browser', message: ce.message });
    } finally {
      setStarting(false);
    }
  };

  const cancelBrowser = async () => {
    try {
      await api.cancelBrowserSignIn();
    } catch (err) {
      setError({ field: 'browser', message: api.asCommandError(err).message });
    }
  };

  if (phase.phase === 'waiting' || phase.phase === 'finishing' || phase.phase === 'signed_in') {
    return (
      <div class="splash">
        <div class="signin card" data-testid="signin-browser-waiting" data-phase={phase.phase} aria-live="polite">
          <div class="signin-head">
            <Logo size={40} />
            {phase.phase === 'waiting' ? (
              <>
                <h1>Finish signing in in your browser</h1>
                <p class="muted">
                  Your browser opened the sign-in page of {hostOf(phase.url)}. When you're done there, it sends you back
                  here.
                </p>
              </>
            ) : phase.phase === 'finishing' ? (
              <>
                <h1>Finishing sign-in…</h1>
                <p class="muted">Getting this computer's token from your deployment.</p>
              </>
            ) : (
              <>
                <h1 data-testid="signin-browser-done">Signed in as {phase.user}</h1>
                <p class="muted">Opening Warren…</p>
              </>
            )}
          </div>
          {phase.phase !== 'signed_in' && (
            <p class="hint signin-wait">
              <span class="spinner small" aria-hidden="true" /> Waiting…
            </p>
          )}
          {phase.phase === 'waiting' && phase.refused && (
            <p class="field-error" role="alert" data-testid="signin-browser-error">
              {phase.refused}
            </p>
          )}
          {phase.phase === 'waiting' && (
            <button class="btn wide" type="button" data-testid="signin-browser-cancel" onClick={cancelBrowser}>
              Cancel
            </button>
          )}
        </div>
      </div>
    );
  }

  const browserError = phase.phase === 'form' ? phase.error : null;

  const submit = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await api.signIn({ url: url.trim(), token: token.trim(), ca_pem: ca.trim() === '' ? null : ca }));
    } catch (err) {
      const ce = api.asCommandError(err);
      setError({ field: errorField(ce.kind), message: ce.message });
    } finally {
      setBusy(false);
    }
  };

  const fieldError = (field: Field) =>
    error?.field === field ? (
      <p class="field-error" role="alert" data-testid="signin-error" data-field={field} id={`err-${field}`}>
        {error.message}
      </p>
    ) : null;

  return (
    <div class="splash">
      <form class="signin card" onSubmit={submit} noValidate>
        <div class="signin-head">
          <Logo size={40} />
          <h1>Sign in to Warren</h1>
          <p class="muted">Put this computer on the same network as your workspaces.</p>
        </div>
        <label class="field">
          <span class="label">Deployment URL</span>
          <input data-testid="signin-url" type="url" autoComplete="url" spellcheck={false} placeholder="https://warren.example.com"
            value={url} onInput={(e) => setUrl(e.currentTarget.value)} disabled={busy || starting}
            aria-invalid={error?.field === 'url'} aria-describedby={error?.field === 'url' ? 'err-url' : undefined} />
          {fieldError('url')}
        </label>
        <button class="btn primary wide" type="button" data-testid="signin-browser" onClick={startBrowser}
          disabled={busy || starting} aria-busy={starting}>
          {starting ? (
            <>
              <span class="spinner small on-accent" aria-hidden="true" /> Opening your browser…
            </>
          ) : (
            'Sign in with browser'
          )}
        </button>
        {fieldError('browser')}
        {browserError && error === null && (
          <p class="field-error" role="alert" data-testid="signin-browser-error">
            {browserError}
          </p>
        )}
        <p class="signin-or muted">or use a token</p>
        <label class="field">
          <span class="label">Access token</span>
          <input data-testid="signin-token" type="password" autoComplete="off" spellcheck={false} placeholder="Paste your token"
            value={token} onInput={(e) => setToken(e.currentTarget.value)} disabled={busy}
            aria-invalid={error?.field === 'token'} aria-describedby={error?.field === 'token' ? 'err-token' : undefined} />
          {fieldError('token')}
        </label>
        <details class="advanced">
          <summary>Advanced</summary>
          <label class="field">
            <span class="label">CA certificate (PEM)</span>
            <textarea data-testid="signin-ca" rows={4} spellcheck={false}
              placeholder={'-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----'}
              value={ca} onInput={(e) => setCa(e.currentTarget.value)} disabled={busy} />
            <span class="hint">Only needed when your coordinator uses a certificate from your own authority.</span>
          </label>
        </details>
        {fieldError('form')}
        <button class="btn wide" type="submit" data-testid="signin-submit" disabled={busy || starting} aria-busy={busy}>
          {busy ? (
            <>
              <span class="spinner small" aria-hidden="true" /> Signing in…
            </>
          ) : (
            'Sign in with token'
          )}
        </button>
      </form>
    </div>
  );
}
