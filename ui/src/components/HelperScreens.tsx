/**
 * Full-window screens for when the helper can't be used yet: still looking
 * for it, or a trouble state that says what is wrong and what to do.
 */
import type { HelperLink } from '../bindings/HelperLink';
import { useNow } from '../clock';
import { linkTitle, retryText } from '../status';
import { IconAlert, Logo } from './icons';

export function Searching() {
  return (
    <div class="splash" data-testid="searching">
      <div class="spinner" aria-hidden="true" />
      <p>Looking for the Warren helper…</p>
    </div>
  );
}

export function HelperTrouble({ link, since }: { link: HelperLink; since: number }) {
  const now = useNow(link.retry_in_ms != null);
  const retry = retryText(link, since, now);
  return (
    <div class="splash" data-testid="helper-trouble" data-state={link.state}>
      <div class="trouble card">
        <div class="trouble-head">
          <Logo size={32} />
          <span class="trouble-badge"><IconAlert size={14} /> Helper unavailable</span>
        </div>
        <h1>{linkTitle(link.state)}</h1>
        {link.message && <p class="trouble-message" data-testid="helper-message">{withCode(link.message)}</p>}
        <dl class="facts">
          <dt>Socket</dt>
          <dd><code>{link.socket}</code></dd>
          {link.helper_version && (
            <>
              <dt>Helper version</dt>
              <dd>{link.helper_version}</dd>
            </>
          )}
        </dl>
        {retry && (
          <p class="trouble-retry" data-testid="helper-retry">
            <span class="spinner small" aria-hidden="true" />
            {retry}
          </p>
        )}
      </div>
    </div>
  );
}

/** Shows `backticked` parts of a message (commands to run) as code. */
export function withCode(text: string) {
  return text.split('`').map((part, i) => (i % 2 === 1 ? <code key={i} class="inline">{part}</code> : part));
}
