/**
 * The window's top level: picks the screen from the helper link and the
 * account (looking for the helper, helper trouble, sign in, or the main
 * window with its sections).
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Account } from '../bindings/Account';
import type { Live } from '../live';
import { useLive } from '../live';
import { isTrouble } from '../status';
import { HelperTrouble, Searching } from './HelperScreens';
import { SignIn } from './SignIn';
import { Shell, type Section } from './Shell';

export function App({ live }: { live: Live }) {
  const s = useLive(live);
  const [section, setSection] = useState<Section>('workspaces');
  // "Searching" right after start is a splash; after the helper was found
  // once, losing it again only shows a banner over the last known state.
  const everConnected = useRef(false);
  if (s.link?.state === 'connected') everConnected.current = true;

  // Signing out lands on the sign-in form; the next sign-in starts on the list.
  useEffect(() => {
    if (s.account === null) setSection('workspaces');
  }, [s.account]);

  if (!s.link || (s.link.state === 'searching' && !everConnected.current)) return <Searching />;
  if (isTrouble(s.link.state)) return <HelperTrouble link={s.link} since={s.linkAt} />;
  if (s.account === undefined) return <Searching />;
  // What sign-in and sign-out resolve to is applied at once, as the app's
  // own Account event (which follows) would.
  const onAccount = (account: Account | null) => live.apply({ kind: 'account', account });
  if (s.account === null) return <SignIn onSignedIn={onAccount} initialUrl={s.lastUrl} browser={s.browserSignIn} />;
  return <Shell state={s} section={section} onSection={setSection} onAccount={onAccount} />;
}
