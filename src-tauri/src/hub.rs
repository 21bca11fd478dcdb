//! The app's one copy of the helper's state, and the fan-out to every UI
//! event channel (one per window load).
//!
//! The helper link ([`crate::link`]) feeds helper events in; each UI
//! subscriber gets the link state, the account, then — once the helper's
//! snapshot is complete — one snapshot of its own followed by the live
//! events. Events keep the helper's numbers: the snapshot carries the
//! number of the last helper event it includes, so the UI checks one stream
//! for gaps, not a second numbering of it. A window that reloads, or opens
//! while a snapshot is still arriving in parts, starts from a whole state
//! and never sees a gap. No Tauri types here: the tests drive it directly.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;
use warren_ipc::{MirrorError, StateMirror};
use warren_proto::app::{Account, BrowserSignIn, HelperLink, HelperLinkState, UiEvent};
use warren_proto::ipc::{Event, SessionInfo};
use warren_proto::model::{Agent, Workspace};

/// Where one UI subscriber's events go.
pub trait UiSink: Send + 'static {
    /// Delivers `event`; `false` means the subscriber is gone (its window
    /// closed or reloaded) and it is dropped.
    fn send(&mut self, event: UiEvent) -> bool;
}

struct Subscriber {
    /// Which window it belongs to: a window that subscribes again (a reload,
    /// or its own recovery from a gap) replaces its old channel, whose
    /// sends would otherwise keep succeeding into nothing.
    window: String,
    sink: Box<dyn UiSink>,
    /// It has had a snapshot of the current helper subscription.
    synced: bool,
}

impl Subscriber {
    fn send(&mut self, event: UiEvent) -> bool {
        self.sink.send(event)
    }

    fn send_stream(&mut self, seq: u64, event: Event) -> bool {
        self.send(UiEvent::Stream {
            seq,
            event: Box::new(event),
        })
    }
}

struct Inner {
    link: HelperLink,
    account: Option<Account>,
    browser_sign_in: BrowserSignIn,
    mirror: StateMirror,
    subscribers: Vec<Subscriber>,
}

/// What the tray and the notifications look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub link: HelperLink,
    pub account: Option<Account>,
    pub session: Option<SessionInfo>,
    /// Workspaces sorted by name, each with its agents sorted by name.
    pub workspaces: Vec<(Workspace, Vec<Agent>)>,
}

/// The shared state; cheap to lock, never held across an await.
pub struct Hub {
    inner: Mutex<Inner>,
    /// Bumped on every change the tray or notifications care about (link,
    /// account, session, directory) — not on stats or log lines.
    changes: watch::Sender<u64>,
}

impl Hub {
    pub fn new(socket: String, account: Option<Account>) -> Self {
        Hub {
            inner: Mutex::new(Inner {
                link: HelperLink {
                    state: HelperLinkState::Searching,
                    socket,
                    message: None,
                    helper_version: None,
                    retry_in_ms: None,
                },
                account,
                browser_sign_in: BrowserSignIn::Idle,
                mirror: StateMirror::new(),
                subscribers: Vec::new(),
            }),
            changes: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that wakes on every change the tray cares about.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Adds `window`'s UI subscriber, replacing its previous one: it gets
    /// the link and the account at once, and the state as soon as a complete
    /// one is here.
    pub fn subscribe(&self, window: &str, sink: impl UiSink) {
        let mut inner = self.lock();
        inner.subscribers.retain(|s| s.window != window);
        let mut sub = Subscriber {
            window: window.to_string(),
            sink: Box::new(sink),
            synced: false,
        };
        let ok = sub.send(UiEvent::Helper {
            link: inner.link.clone(),
        }) && sub.send(UiEvent::Account {
            account: inner.account.clone(),
        }) && (inner.browser_sign_in == BrowserSignIn::Idle
            || sub.send(UiEvent::BrowserSignIn {
                status: inner.browser_sign_in.clone(),
            }))
            && sync(&inner.mirror, &inner.link, &mut sub);
        if ok {
            inner.subscribers.push(sub);
        }
    }

    pub fn link(&self) -> HelperLink {
        self.lock().link.clone()
    }

    /// Sets the link state; leaving `Connected` forgets the helper's state,
    /// which the next subscription replaces.
    pub fn set_link(&self, link: HelperLink) {
        let mut inner = self.lock();
        if inner.link == link {
            return;
        }
        if link.state != HelperLinkState::Connected {
            inner.mirror.reset();
            for sub in &mut inner.subscribers {
                sub.synced = false;
            }
        }
        inner.link = link.clone();
        inner
            .subscribers
            .retain_mut(|s| s.send(UiEvent::Helper { link: link.clone() }));
        drop(inner);
        self.changed();
    }

    pub fn account(&self) -> Option<Account> {
        self.lock().account.clone()
    }

    pub fn set_account(&self, account: Option<Account>) {
        let mut inner = self.lock();
        if inner.account == account {
            return;
        }
        inner.account = account.clone();
        inner.subscribers.retain_mut(|s| {
            s.send(UiEvent::Account {
                account: account.clone(),
            })
        });
        drop(inner);
        self.changed();
    }

    pub fn browser_sign_in(&self) -> BrowserSignIn {
        self.lock().browser_sign_in.clone()
    }

    /// Tells every window how the browser sign-in stands.
    pub fn set_browser_sign_in(&self, status: BrowserSignIn) {
        let mut inner = self.lock();
        inner.browser_sign_in = status.clone();
        inner.subscribers.retain_mut(|s| {
            s.send(UiEvent::BrowserSignIn {
                status: status.clone(),
            })
        });
    }

    /// Applies one helper event (as the helper numbered it) and passes it on.
    /// A gap is an error: the link resubscribes, which starts a new snapshot.
    pub fn apply(&self, seq: u64, event: Event) -> Result<(), MirrorError> {
        let mut inner = self.lock();
        inner.mirror.apply(seq, &event)?;
        let tray_relevant = matches!(
            event,
            Event::State { .. } | Event::PeerUpdate { .. } | Event::SessionChanged { .. }
        );
        let Inner {
            mirror,
            link,
            subscribers,
            ..
        } = &mut *inner;
        if matches!(event, Event::State { part: 0, .. }) {
            // A new helper subscription: everyone gets the new whole state
            // once it is complete, as one snapshot.
            for sub in subscribers.iter_mut() {
                sub.synced = false;
            }
        }
        subscribers.retain_mut(|sub| {
            if sub.synced {
                // A State part of a snapshot in progress can't reach a
                // synced subscriber (part 0 unsynced everyone).
                sub.send_stream(seq, event.clone())
            } else {
                sync(mirror, link, sub)
            }
        });
        drop(inner);
        if tray_relevant {
            self.changed();
        }
        Ok(())
    }

    /// The session, when the helper's state is known.
    pub fn session(&self) -> Option<SessionInfo> {
        let inner = self.lock();
        inner
            .mirror
            .is_complete()
            .then(|| inner.mirror.session.clone())
            .flatten()
    }

    pub fn view(&self) -> View {
        let inner = self.lock();
        let complete = inner.mirror.is_complete();
        // One pass over the agents: the tray asks for this on every
        // directory change, and deployments run to tens of thousands.
        let mut by_workspace: HashMap<&str, Vec<Agent>> = HashMap::new();
        if complete {
            for agent in inner.mirror.agents.values() {
                by_workspace
                    .entry(agent.workspace_id.as_str())
                    .or_default()
                    .push(agent.clone());
            }
        }
        let workspaces = inner
            .mirror
            .sorted_workspaces()
            .into_iter()
            .filter_map(|w| {
                let mut agents = by_workspace.remove(w.id.as_str())?;
                agents.sort_by(|a, b| a.name.cmp(&b.name));
                Some((w.clone(), agents))
            })
            .collect();
        View {
            link: inner.link.clone(),
            account: inner.account.clone(),
            session: complete.then(|| inner.mirror.session.clone()).flatten(),
            workspaces,
        }
    }

    #[cfg(test)]
    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }
}

/// Sends `sub` a snapshot when there is a whole state to send. Returns
/// `false` when the subscriber is gone.
fn sync(mirror: &StateMirror, link: &HelperLink, sub: &mut Subscriber) -> bool {
    if sub.synced || link.state != HelperLinkState::Connected || !mirror.is_complete() {
        return true;
    }
    let (Some(session), Some(seq)) = (mirror.session.clone(), mirror.last_seq()) else {
        return true;
    };
    sub.synced = true;
    sub.send_stream(
        seq,
        Event::State {
            part: 0,
            last: true,
            session,
            workspaces: mirror.workspaces.values().cloned().collect(),
            agents: mirror.agents.values().cloned().collect(),
            stats: mirror.stats.values().cloned().collect(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};
    use warren_proto::ipc::{PeerStats, SessionState};

    #[derive(Clone, Default)]
    struct Recorder {
        events: Arc<StdMutex<Vec<UiEvent>>>,
        gone: Arc<StdMutex<bool>>,
    }

    impl UiSink for Recorder {
        fn send(&mut self, event: UiEvent) -> bool {
            if *self.gone.lock().unwrap() {
                return false;
            }
            self.events.lock().unwrap().push(event);
            true
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<UiEvent> {
            std::mem::take(&mut *self.events.lock().unwrap())
        }
    }

    fn connected() -> HelperLink {
        HelperLink {
            state: HelperLinkState::Connected,
            socket: "/run/warren.sock".into(),
            message: None,
            helper_version: Some("0.1.0".into()),
            retry_in_ms: None,
        }
    }

    fn session(state: SessionState) -> SessionInfo {
        SessionInfo {
            state,
            ..SessionInfo::disconnected()
        }
    }

    fn ws(id: &str) -> Workspace {
        Workspace {
            id: id.into(),
            name: id.into(),
            owner: "alice".into(),
        }
    }

    fn agent(id: &str, ws: &str) -> Agent {
        Agent {
            id: id.into(),
            name: id.into(),
            workspace_id: ws.into(),
            public_key: None,
            addresses: vec![],
            endpoints: vec![],
            dns_names: vec![format!("{id}.{ws}.alice.warren")],
            online: true,
        }
    }

    fn part(part: u32, last: bool, workspaces: Vec<Workspace>, agents: Vec<Agent>) -> Event {
        Event::State {
            part,
            last,
            session: session(SessionState::Connected),
            workspaces,
            agents,
            stats: vec![],
        }
    }

    fn stream(events: &[UiEvent]) -> Vec<(u64, &Event)> {
        events
            .iter()
            .filter_map(|e| match e {
                UiEvent::Stream { seq, event } => Some((*seq, &**event)),
                _ => None,
            })
            .collect()
    }

    fn agent_count(event: &Event) -> usize {
        match event {
            Event::State { agents, .. } => agents.len(),
            _ => panic!("not a state: {event:?}"),
        }
    }

    #[test]
    fn subscriber_gets_link_account_then_one_whole_snapshot_then_the_helpers_diffs() {
        let hub = Hub::new("/run/warren.sock".into(), None);
        hub.set_link(connected());
        hub.apply(0, part(0, false, vec![ws("w1")], vec![agent("a1", "w1")]))
            .unwrap();
        // Subscribes while the snapshot is still arriving in parts.
        let rec = Recorder::default();
        hub.subscribe("main", rec.clone());
        let first = rec.take();
        assert!(matches!(first[0], UiEvent::Helper { .. }), "{first:?}");
        assert!(matches!(first[1], UiEvent::Account { account: None }));
        assert!(stream(&first).is_empty(), "half a snapshot was sent");

        hub.apply(1, part(1, true, vec![ws("w2")], vec![agent("a2", "w2")]))
            .unwrap();
        let got = rec.take();
        let s = stream(&got);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 1, "the snapshot is as of the helper's event 1");
        assert_eq!(agent_count(s[0].1), 2, "both parts in one snapshot");

        let stats = Event::PeerStats {
            stats: vec![PeerStats {
                agent_id: "a1".into(),
                last_handshake_ms: Some(5),
                rx_bytes: 1,
                tx_bytes: 2,
                rtt_us: None,
                endpoint: None,
                relay: None,
                no_path: false,
            }],
        };
        hub.apply(2, stats.clone()).unwrap();
        let got = rec.take();
        assert_eq!(stream(&got), vec![(2, &stats)], "the helper's number");

        // A late subscriber gets its own snapshot, as of the helper's
        // latest event, with the stats already in it.
        let late = Recorder::default();
        hub.subscribe("late", late.clone());
        let got = late.take();
        let s = stream(&got);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 2);
        match s[0].1 {
            Event::State { stats, last, .. } => {
                assert!(last);
                assert_eq!(stats.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_helper_snapshot_replaces_the_state_and_a_gap_is_an_error() {
        let hub = Hub::new("s".into(), None);
        hub.set_link(connected());
        let rec = Recorder::default();
        hub.subscribe("main", rec.clone());
        hub.apply(0, part(0, true, vec![ws("w1")], vec![agent("a1", "w1")]))
            .unwrap();
        rec.take();
        // The helper resubscribed (e.g. after SlowSubscriber): new part 0.
        hub.apply(0, part(0, true, vec![ws("w9")], vec![])).unwrap();
        let got = rec.take();
        let s = stream(&got);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 0);
        assert_eq!(agent_count(s[0].1), 0);
        assert!(hub.view().workspaces.is_empty());
        assert!(hub.apply(5, Event::PeerStats { stats: vec![] }).is_err());
    }

    #[test]
    fn losing_the_helper_forgets_its_state_and_tells_subscribers() {
        let hub = Hub::new("s".into(), None);
        hub.set_link(connected());
        hub.apply(0, part(0, true, vec![ws("w1")], vec![agent("a1", "w1")]))
            .unwrap();
        assert_eq!(hub.view().workspaces.len(), 1);
        let rec = Recorder::default();
        hub.subscribe("main", rec.clone());
        rec.take();
        let mut lost = connected();
        lost.state = HelperLinkState::Searching;
        hub.set_link(lost);
        assert!(matches!(
            rec.take().as_slice(),
            [UiEvent::Helper { link }] if link.state == HelperLinkState::Searching
        ));
        assert!(hub.session().is_none());
        assert!(hub.view().workspaces.is_empty());
        // Found again: the new snapshot goes out as seq 0.
        hub.set_link(connected());
        hub.apply(0, part(0, true, vec![], vec![])).unwrap();
        let got = rec.take();
        assert_eq!(stream(&got)[0].0, 0);
    }

    #[test]
    fn a_browser_sign_in_under_way_reaches_every_window_and_new_ones() {
        let hub = Hub::new("s".into(), None);
        let a = Recorder::default();
        hub.subscribe("a", a.clone());
        // Nothing under way: a new window hears only link and account.
        assert_eq!(a.take().len(), 2);
        let waiting = BrowserSignIn::Waiting {
            url: "https://c".into(),
            refused: None,
        };
        hub.set_browser_sign_in(waiting.clone());
        assert_eq!(
            a.take(),
            vec![UiEvent::BrowserSignIn {
                status: waiting.clone()
            }]
        );
        // A window opened (or reloaded) meanwhile still shows the wait.
        let b = Recorder::default();
        hub.subscribe("b", b.clone());
        assert_eq!(
            b.take()[2],
            UiEvent::BrowserSignIn {
                status: waiting.clone()
            }
        );
        assert_eq!(hub.browser_sign_in(), waiting);
    }

    #[test]
    fn a_gone_subscriber_is_dropped_and_does_not_stop_the_others() {
        let hub = Hub::new("s".into(), None);
        let a = Recorder::default();
        let b = Recorder::default();
        hub.subscribe("a", a.clone());
        hub.subscribe("b", b.clone());
        *a.gone.lock().unwrap() = true;
        hub.set_account(Some(Account {
            url: "https://c".into(),
            user: Some("alice".into()),
        }));
        assert_eq!(hub.subscriber_count(), 1);
        assert!(matches!(
            b.take().last(),
            Some(UiEvent::Account { account: Some(_) })
        ));
    }

    #[test]
    fn a_window_that_subscribes_again_replaces_its_old_channel() {
        let hub = Hub::new("s".into(), None);
        hub.set_link(connected());
        hub.apply(0, part(0, true, vec![ws("w1")], vec![agent("a1", "w1")]))
            .unwrap();
        let old = Recorder::default();
        let new = Recorder::default();
        hub.subscribe("main", old.clone());
        hub.subscribe("main", new.clone());
        assert_eq!(hub.subscriber_count(), 1);
        old.take();
        new.take();
        hub.apply(1, Event::PeerStats { stats: vec![] }).unwrap();
        assert!(
            old.take().is_empty(),
            "the replaced channel still gets events"
        );
        assert_eq!(
            stream(&new.take()),
            vec![(1, &Event::PeerStats { stats: vec![] })]
        );
    }

    #[test]
    fn tray_watch_wakes_on_directory_and_session_not_on_stats() {
        let hub = Hub::new("s".into(), None);
        let mut rx = hub.watch();
        hub.set_link(connected());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        hub.apply(0, part(0, true, vec![ws("w1")], vec![agent("a1", "w1")]))
            .unwrap();
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        hub.apply(1, Event::PeerStats { stats: vec![] }).unwrap();
        assert!(!rx.has_changed().unwrap());
        let view = hub.view();
        assert_eq!(view.workspaces[0].1[0].id, "a1");
        assert_eq!(view.session.unwrap().state, SessionState::Connected);
    }
}
