/** The About section: versions, protocol, socket, OS and where the log is. */
import { useEffect, useState } from 'preact/hooks';
import * as api from '../api';
import type { AppInfo } from '../bindings/AppInfo';
import type { HelperLink } from '../bindings/HelperLink';
import { Logo } from './icons';

const OS_NAMES: Record<string, string> = { linux: 'Linux', macos: 'macOS', windows: 'Windows' };

export function About({ link }: { link: HelperLink | null }) {
  const [info, setInfo] = useState<AppInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api.appInfo().then(setInfo, (e) => setError(api.asCommandError(e).message));
  }, []);
  return (
    <div class="page" data-testid="about">
      <div class="about-head">
        <Logo size={48} />
        <div>
          <h2 class="page-title">Warren</h2>
          <p class="muted">Your laptop on the same private network as your workspaces.</p>
        </div>
      </div>
      {error && <div class="banner error" role="alert">{error}</div>}
      <section class="card group">
        <dl class="facts wide">
          <dt>App version</dt>
          <dd data-testid="about-app-version">{info?.app_version ?? '…'}</dd>
          <dt>Helper version</dt>
          <dd data-testid="about-helper-version">{link?.helper_version ?? 'not connected'}</dd>
          <dt>Protocol</dt>
          <dd data-testid="about-protocol">{info ? `warren-ipc ${info.protocol_version}` : '…'}</dd>
          <dt>Helper socket</dt>
          <dd><code>{info?.socket ?? link?.socket ?? '…'}</code></dd>
          <dt>System</dt>
          <dd>{info ? (OS_NAMES[info.os] ?? info.os) : '…'}</dd>
          <dt>Log folder</dt>
          <dd><code>{info?.log_dir ?? '…'}</code></dd>
        </dl>
      </section>
    </div>
  );
}
