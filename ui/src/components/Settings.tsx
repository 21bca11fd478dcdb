/**
 * The Settings section: start-up behaviour and log level (each saved at once
 * with `set_settings`; the applied value is shown, a failure reverts), log
 * export, and signing out with an inline confirmation.
 */
import { useEffect, useState } from 'preact/hooks';
import * as api from '../api';
import type { Account } from '../bindings/Account';
import type { LogLevel } from '../bindings/LogLevel';
import type { Settings } from '../bindings/Settings';
import { hostOf } from './Shell';
import { Switch } from './Switch';

const LEVELS: { value: LogLevel; label: string }[] = [
  { value: 'error', label: 'Errors only' },
  { value: 'warn', label: 'Warnings' },
  { value: 'info', label: 'Normal' },
  { value: 'debug', label: 'Debug' },
  { value: 'trace', label: 'Trace (very verbose)' },
];

export function SettingsView({ account, onSignedOut }: { account: Account; onSignedOut: () => void }) {
  const [settings, setSettings] = useState<Settings | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);
  const [exported, setExported] = useState<string | null>(null);
  const [exporting, setExporting] = useState(false);
  const [confirmOut, setConfirmOut] = useState(false);
  const [signingOut, setSigningOut] = useState(false);

  useEffect(() => {
    api.getSettings().then(setSettings, (e) => setError(api.asCommandError(e).message));
  }, []);

  const save = async (change: Partial<Settings>) => {
    if (!settings) return;
    const before = settings;
    setSettings({ ...before, ...change });
    setSaving(true);
    setError(null);
    try {
      setSettings(await api.setSettings({ ...before, ...change }));
    } catch (e) {
      setSettings(before);
      setError(api.asCommandError(e).message);
    } finally {
      setSaving(false);
    }
  };

  const exportLogs = async () => {
    setExporting(true);
    setError(null);
    try {
      setExported(await api.exportLogs());
    } catch (e) {
      setError(api.asCommandError(e).message);
    } finally {
      setExporting(false);
    }
  };

  const signOut = async () => {
    setSigningOut(true);
    try {
      await api.signOut();
      onSignedOut();
    } catch (e) {
      setError(api.asCommandError(e).message);
      setSigningOut(false);
      setConfirmOut(false);
    }
  };

  return (
    <div class="page" data-testid="settings">
      <h2 class="page-title">Settings</h2>
      {error && <div class="banner error" role="alert" data-testid="settings-error">{error}</div>}
      <section class="card group">
        <h3 class="group-title">General</h3>
        <div class="setting">
          <div>
            <div class="setting-name">Start on login</div>
            <div class="setting-hint muted">Open Warren in the background when you log in to this computer.</div>
          </div>
          <Switch testid="settings-autostart" label="Start on login" showLabel={false} checked={settings?.start_on_login ?? false}
            disabled={!settings || saving} onChange={(v) => save({ start_on_login: v })} />
        </div>
        <div class="setting">
          <div>
            <div class="setting-name">Start minimized</div>
            <div class="setting-hint muted">Start with only the tray icon; open the window from there.</div>
          </div>
          <Switch testid="settings-minimized" label="Start minimized" showLabel={false} checked={settings?.start_minimized ?? false}
            disabled={!settings || saving} onChange={(v) => save({ start_minimized: v })} />
        </div>
        <div class="setting">
          <div>
            <div class="setting-name">Log level</div>
            <div class="setting-hint muted">How much the app writes to its own log.</div>
          </div>
          <select data-testid="settings-log-level" value={settings?.log_level ?? 'info'} disabled={!settings || saving}
            onChange={(e) => save({ log_level: e.currentTarget.value as LogLevel })}>
            {LEVELS.map((l) => <option key={l.value} value={l.value}>{l.label}</option>)}
          </select>
        </div>
      </section>
      <section class="card group">
        <h3 class="group-title">Troubleshooting</h3>
        <div class="setting">
          <div>
            <div class="setting-name">Export logs</div>
            <div class="setting-hint muted">
              {exported ? <span data-testid="export-result">Saved to <code>{exported}</code></span>
                : 'Save the app’s and the helper’s recent logs as a zip to attach to a bug report.'}
            </div>
          </div>
          <button type="button" class="btn" data-testid="export-logs" disabled={exporting} onClick={exportLogs}>
            {exporting ? 'Exporting…' : 'Export logs…'}
          </button>
        </div>
      </section>
      <section class="card group">
        <h3 class="group-title">Account</h3>
        <div class="setting">
          <div>
            <div class="setting-name">{account.user ? `Signed in as ${account.user}` : 'Signed in'}</div>
            <div class="setting-hint muted">{account.url}</div>
          </div>
          {confirmOut ? (
            <div class="confirm" data-testid="sign-out-confirm-box">
              <span class="muted">Sign out of {hostOf(account.url)}?</span>
              <button type="button" class="btn" data-testid="sign-out-cancel" disabled={signingOut} onClick={() => setConfirmOut(false)}>Cancel</button>
              <button type="button" class="btn danger" data-testid="sign-out-confirm" disabled={signingOut} onClick={signOut}>
                {signingOut ? 'Signing out…' : 'Sign out'}
              </button>
            </div>
          ) : (
            <button type="button" class="btn" data-testid="sign-out" onClick={() => setConfirmOut(true)}>Sign out…</button>
          )}
        </div>
      </section>
    </div>
  );
}
