/**
 * The main window once signed in: a slim sidebar (sections and the account)
 * and a header with the Connect switch and the session line above the
 * current section.
 */
import type { ComponentChildren } from 'preact';
import type { Account } from '../bindings/Account';
import type { AppState } from '../store';
import { About } from './About';
import { Header } from './Header';
import { IconInfo, IconLogs, IconSettings, IconWorkspaces, Logo } from './icons';
import { Logs } from './Logs';
import { SettingsView } from './Settings';
import { Workspaces } from './Workspaces';

export type Section = 'workspaces' | 'logs' | 'settings' | 'about';

const SECTIONS: { id: Section; label: string; icon: () => ComponentChildren }[] = [
  { id: 'workspaces', label: 'Workspaces', icon: IconWorkspaces },
  { id: 'logs', label: 'Logs', icon: IconLogs },
  { id: 'settings', label: 'Settings', icon: IconSettings },
  { id: 'about', label: 'About', icon: IconInfo },
];

/** "warren.example.com" from "https://warren.example.com/". */
export function hostOf(url: string): string {
  try {
    return new URL(url).host || url;
  } catch {
    return url;
  }
}

export function Shell(props: {
  state: AppState;
  section: Section;
  onSection: (s: Section) => void;
  onAccount: (a: Account | null) => void;
}) {
  const { state, section, onSection } = props;
  const account = state.account!;
  return (
    <div class="shell">
      <nav class="sidebar" aria-label="Sections">
        <div class="brand">
          <Logo size={26} />
          <span>Warren</span>
        </div>
        <ul>
          {SECTIONS.map(({ id, label, icon: Icon }) => (
            <li key={id}>
              <button type="button" class={`nav-item${section === id ? ' active' : ''}`} data-testid={`nav-${id}`}
                aria-current={section === id ? "page" : undefined} title={label} onClick={() => onSection(id)}>
                <Icon />
                {label}
              </button>
            </li>
          ))}
        </ul>
        <div class="sidebar-account" data-testid="account" title={account.url}>
          <span class="avatar" aria-hidden="true">{(account.user ?? hostOf(account.url)).slice(0, 1).toUpperCase()}</span>
          <span class="who">
            <span class="user">{account.user ?? 'Signed in'}</span>
            <span class="host">{hostOf(account.url)}</span>
          </span>
        </div>
      </nav>
      <main class="content">
        <Header state={state} onSignedOut={() => props.onAccount(null)} />
        <div class="section" data-section={section}>
          {section === 'workspaces' && <Workspaces state={state} />}
          {section === 'logs' && <Logs logs={state.logs} />}
          {section === 'settings' && <SettingsView account={account} onSignedOut={() => props.onAccount(null)} />}
          {section === 'about' && <About link={state.link} />}
        </div>
      </main>
    </div>
  );
}
