/**
 * The sign-in form: deployment URL, token, and an optional CA certificate
 * for a self-hosted coordinator. A failure is shown under the field it is
 * about.
 */
import { useState } from 'preact/hooks';
import * as api from '../api';
import type { Account } from '../bindings/Account';
import type { CommandError } from '../bindings/CommandError';
import { Logo } from './icons';

type Field = 'url' | 'token' | 'form';

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

export function SignIn({ onSignedIn, initialUrl }: { onSignedIn: (a: Account) => void; initialUrl?: string | null }) {
  const [url, setUrl] = useState(initialUrl ?? '');
  const [token, setToken] = useState('');
  const [ca, setCa] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<{ field: Field; message: string } | null>(null);

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
            value={url} onInput={(e) => setUrl(e.currentTarget.value)} disabled={busy}
            aria-invalid={error?.field === 'url'} aria-describedby={error?.field === 'url' ? 'err-url' : undefined} />
          {fieldError('url')}
        </label>
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
        <button class="btn primary wide" type="submit" data-testid="signin-submit" disabled={busy} aria-busy={busy}>
          {busy ? (
            <>
              <span class="spinner small on-accent" aria-hidden="true" /> Signing in…
            </>
          ) : (
            'Sign in'
          )}
        </button>
      </form>
    </div>
  );
}
