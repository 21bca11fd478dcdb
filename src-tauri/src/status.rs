//! What the tray icon shows and when the app notifies, decided from the
//! link and the session alone (no Tauri here, so the rules are unit-tested).

use std::time::{Duration, Instant};
use warren_proto::app::{HelperLink, HelperLinkState};
use warren_proto::ipc::{ReasonCode, SessionInfo, SessionState, TunnelState};

/// The tray icon's four looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayState {
    Disconnected,
    Connecting,
    Connected,
    Error,
}

impl TrayState {
    pub fn icon(self) -> &'static [u8] {
        match self {
            TrayState::Disconnected => include_bytes!("../icons/tray-disconnected.png"),
            TrayState::Connecting => include_bytes!("../icons/tray-connecting.png"),
            TrayState::Connected => include_bytes!("../icons/tray-connected.png"),
            TrayState::Error => include_bytes!("../icons/tray-error.png"),
        }
    }
}

pub fn tray_state(link: &HelperLink, session: Option<&SessionInfo>) -> TrayState {
    match link.state {
        HelperLinkState::Connected => {}
        HelperLinkState::Searching => return TrayState::Connecting,
        _ => return TrayState::Error,
    }
    let Some(session) = session else {
        return TrayState::Connecting;
    };
    let tunnel_failed = session
        .tunnel
        .as_ref()
        .is_some_and(|t| t.state == TunnelState::Failed);
    match session.state {
        SessionState::Disconnected => TrayState::Disconnected,
        SessionState::Connecting | SessionState::Reconnecting => TrayState::Connecting,
        SessionState::Connected if tunnel_failed => TrayState::Error,
        SessionState::Connected => TrayState::Connected,
        SessionState::Failed => TrayState::Error,
    }
}

/// One line for the tray's tooltip and the menu's status item.
pub fn summary(link: &HelperLink, session: Option<&SessionInfo>) -> String {
    match link.state {
        HelperLinkState::Connected => {}
        HelperLinkState::Searching => return "Looking for the Warren helper…".into(),
        HelperLinkState::Missing => return "The Warren helper isn't running".into(),
        HelperLinkState::NotPermitted => return "Not allowed to use the Warren helper".into(),
        HelperLinkState::VersionMismatch => {
            return "The app and the helper versions don't match".into()
        }
        HelperLinkState::Failed => return "Can't talk to the Warren helper".into(),
    }
    let Some(s) = session else {
        return "Warren".into();
    };
    let reason = s
        .reason
        .as_deref()
        .map(|r| format!(" — {r}"))
        .unwrap_or_default();
    match s.state {
        SessionState::Disconnected => "Disconnected".into(),
        SessionState::Connecting => "Connecting…".into(),
        SessionState::Connected => match &s.user {
            Some(user) => format!("Connected as {user}"),
            None => "Connected".into(),
        },
        SessionState::Reconnecting => match s.retry_in_ms {
            Some(ms) => format!("Reconnecting in {} s{reason}", ms.div_ceil(1000)),
            None => format!("Reconnecting{reason}"),
        },
        SessionState::Failed => format!("Failed{reason}"),
    }
}

/// A desktop notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub title: String,
    pub body: String,
}

/// The session failed because the coordinator no longer takes the token
/// (the helper's reason code says so; its words are for people).
pub fn needs_sign_in(session: &SessionInfo) -> bool {
    session.state == SessionState::Failed && session.reason_code == Some(ReasonCode::SignInRequired)
}

/// What to tell the person when the session goes from `prev` to `next`.
/// `stop_expected` is set while a disconnect the person asked for is under
/// way, so it is not reported as a drop.
pub fn notice(
    prev: Option<&SessionInfo>,
    next: Option<&SessionInfo>,
    stop_expected: bool,
) -> Option<Notice> {
    let next = next?;
    let prev_state = prev.map(|p| p.state);
    if needs_sign_in(next) && !prev.is_some_and(needs_sign_in) {
        return Some(Notice {
            title: "Sign in required".into(),
            body: "The coordinator no longer accepts your token. Open Warren to sign in again."
                .into(),
        });
    }
    let deployment = |code| next.state == SessionState::Failed && next.reason_code == Some(code);
    if deployment(ReasonCode::DeploymentChanged) && prev_state != Some(SessionState::Failed) {
        return Some(Notice {
            title: "Sign in required".into(),
            body: "The deployment changed its network. Open Warren and sign in again to accept it."
                .into(),
        });
    }
    if deployment(ReasonCode::DeploymentRefused) && prev_state != Some(SessionState::Failed) {
        return Some(Notice {
            title: "Deployment refused".into(),
            body: next.reason.clone().unwrap_or_else(|| {
                "The deployment asked for a network Warren doesn't allow; ask its administrator."
                    .into()
            }),
        });
    }
    match (prev_state, next.state) {
        (Some(SessionState::Connected), SessionState::Connected) => None,
        (_, SessionState::Connected) => Some(Notice {
            title: "Connected".into(),
            body: match &next.user {
                Some(user) => format!("Your workspaces are reachable (signed in as {user})."),
                None => "Your workspaces are reachable.".into(),
            },
        }),
        (Some(SessionState::Connected), SessionState::Failed) if !stop_expected => Some(Notice {
            title: "Disconnected".into(),
            body: match &next.reason {
                Some(reason) => format!("{reason}."),
                None => "The connection ended. Open Warren to see why.".into(),
            },
        }),
        (
            Some(SessionState::Connected),
            SessionState::Reconnecting | SessionState::Disconnected,
        ) if !stop_expected => Some(Notice {
            title: "Disconnected".into(),
            body: match &next.reason {
                Some(reason) => format!("{reason}. Warren keeps trying to reconnect."),
                None => "The connection dropped. Warren keeps trying to reconnect.".into(),
            },
        }),
        _ => None,
    }
}

/// How long the helper may be away before a connected person is told:
/// a helper restart (an upgrade) is usually over well within it.
pub const HELPER_GONE_GRACE: Duration = Duration::from_secs(5);

/// Follows the helper going away and coming back while the person was
/// connected: tells them if it stays away, and says when to hand the new
/// helper the token again (it starts without a session; the token lives
/// with the app, never on the helper's disk).
#[derive(Debug, Default)]
pub struct HelperWatch {
    lost: Option<Lost>,
}

#[derive(Debug)]
struct Lost {
    at: Instant,
    /// The person was connected (or on the way) and didn't ask to stop.
    was_on: bool,
    notified: bool,
}

impl HelperWatch {
    /// The link to the helper is gone; `last` is the session seen before.
    pub fn lost(&mut self, now: Instant, last: Option<&SessionInfo>, stop_expected: bool) {
        if self.lost.is_some() {
            return;
        }
        let was_on = !stop_expected
            && last.is_some_and(|s| {
                matches!(
                    s.state,
                    SessionState::Connected | SessionState::Connecting | SessionState::Reconnecting
                )
            });
        self.lost = Some(Lost {
            at: now,
            was_on,
            notified: false,
        });
    }

    /// Time passed with the helper still away: one notice once the grace is
    /// over.
    pub fn tick(&mut self, now: Instant) -> Option<Notice> {
        let lost = self.lost.as_mut()?;
        if !lost.was_on || lost.notified || now.duration_since(lost.at) < HELPER_GONE_GRACE {
            return None;
        }
        lost.notified = true;
        Some(Notice {
            title: "Disconnected".into(),
            body: "The Warren helper stopped. Warren connects again when it is back.".into(),
        })
    }

    /// When [`HelperWatch::tick`] has something to say.
    pub fn deadline(&self) -> Option<Instant> {
        self.lost
            .as_ref()
            .filter(|l| l.was_on && !l.notified)
            .map(|l| l.at + HELPER_GONE_GRACE)
    }

    /// The helper is back with `session`: whether to hand it the token again.
    pub fn found(&mut self, session: &SessionInfo) -> bool {
        self.lost
            .take()
            .is_some_and(|l| l.was_on && session.state == SessionState::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::ipc::TunnelInfo;

    fn link(state: HelperLinkState) -> HelperLink {
        HelperLink {
            state,
            socket: "s".into(),
            message: None,
            helper_version: None,
            retry_in_ms: None,
        }
    }

    fn session(state: SessionState, reason: Option<&str>) -> SessionInfo {
        SessionInfo {
            state,
            reason: reason.map(str::to_string),
            user: Some("alice".into()),
            retry_in_ms: Some(7_200),
            ..SessionInfo::disconnected()
        }
    }

    #[test]
    fn tray_icon_per_state() {
        let up = link(HelperLinkState::Connected);
        let cases = [
            (SessionState::Disconnected, TrayState::Disconnected),
            (SessionState::Connecting, TrayState::Connecting),
            (SessionState::Reconnecting, TrayState::Connecting),
            (SessionState::Connected, TrayState::Connected),
            (SessionState::Failed, TrayState::Error),
        ];
        for (s, want) in cases {
            assert_eq!(tray_state(&up, Some(&session(s, None))), want, "{s}");
        }
        assert_eq!(
            tray_state(&link(HelperLinkState::Missing), None),
            TrayState::Error
        );
        assert_eq!(
            tray_state(&link(HelperLinkState::Searching), None),
            TrayState::Connecting
        );
        let mut broken = session(SessionState::Connected, None);
        broken.tunnel = Some(TunnelInfo {
            state: TunnelState::Failed,
            error: Some("no TUN".into()),
            interface: "warren0".into(),
            listen_port: 0,
            generation: 1,
        });
        assert_eq!(tray_state(&up, Some(&broken)), TrayState::Error);
        for t in [
            TrayState::Disconnected,
            TrayState::Connecting,
            TrayState::Connected,
            TrayState::Error,
        ] {
            assert!(t.icon().starts_with(b"\x89PNG"));
        }
    }

    #[test]
    fn summary_says_why_and_when() {
        let up = link(HelperLinkState::Connected);
        assert_eq!(
            summary(
                &up,
                Some(&session(
                    SessionState::Reconnecting,
                    Some("coordinator unreachable")
                ))
            ),
            "Reconnecting in 8 s — coordinator unreachable"
        );
        assert_eq!(
            summary(&up, Some(&session(SessionState::Connected, None))),
            "Connected as alice"
        );
        assert_eq!(
            summary(&link(HelperLinkState::NotPermitted), None),
            "Not allowed to use the Warren helper"
        );
    }

    #[test]
    fn a_restarted_helper_gets_the_session_back_and_a_long_absence_is_told_once() {
        let t0 = Instant::now();
        let connected = session(SessionState::Connected, None);
        let fresh = session(SessionState::Disconnected, None);

        // Back within the grace: no notice, connect again.
        let mut w = HelperWatch::default();
        w.lost(t0, Some(&connected), false);
        assert_eq!(w.deadline(), Some(t0 + HELPER_GONE_GRACE));
        assert!(w.tick(t0 + Duration::from_secs(1)).is_none());
        assert!(w.found(&fresh));
        assert!(!w.found(&fresh), "only once per absence");

        // Away for long: told once; still reconnects when back.
        let mut w = HelperWatch::default();
        w.lost(t0, Some(&connected), false);
        assert!(w.tick(t0 + HELPER_GONE_GRACE).is_some());
        assert!(w.tick(t0 + HELPER_GONE_GRACE * 2).is_none());
        assert_eq!(w.deadline(), None);
        assert!(w.found(&fresh));

        // Disconnected on purpose, or never connected: nothing to restore.
        let mut w = HelperWatch::default();
        w.lost(t0, Some(&connected), true);
        assert!(w.tick(t0 + HELPER_GONE_GRACE).is_none());
        assert!(!w.found(&fresh));
        let mut w = HelperWatch::default();
        w.lost(t0, Some(&fresh), false);
        assert!(!w.found(&fresh));

        // A helper that kept its session (only our link broke) is left be.
        let mut w = HelperWatch::default();
        w.lost(t0, Some(&connected), false);
        assert!(!w.found(&connected));
    }

    #[test]
    fn notifies_connected_unexpected_drop_and_sign_in_required_once() {
        let connected = session(SessionState::Connected, None);
        let connecting = session(SessionState::Connecting, None);
        let dropped = session(SessionState::Reconnecting, Some("coordinator unreachable"));
        let stopped = session(SessionState::Disconnected, None);
        let rejected = SessionInfo {
            reason_code: Some(ReasonCode::SignInRequired),
            ..session(
                SessionState::Failed,
                Some("The coordinator rejected your token — sign in again with `warren login`."),
            )
        };

        let n = notice(Some(&connecting), Some(&connected), false).unwrap();
        assert_eq!(n.title, "Connected");
        assert!(notice(Some(&connected), Some(&connected), false).is_none());

        let n = notice(Some(&connected), Some(&dropped), false).unwrap();
        assert_eq!(n.title, "Disconnected");
        assert!(n.body.contains("coordinator unreachable"), "{}", n.body);
        // Asked for: no drop notice.
        assert!(notice(Some(&connected), Some(&stopped), true).is_none());
        assert!(notice(Some(&connecting), Some(&dropped), false).is_none());

        let n = notice(Some(&connected), Some(&rejected), false).unwrap();
        assert_eq!(n.title, "Sign in required");
        assert!(notice(Some(&rejected), Some(&rejected), false).is_none());
        assert!(notice(Some(&connected), None, false).is_none());

        // A refused or changed deployment is not retried: say so, once.
        let refused = SessionInfo {
            reason_code: Some(ReasonCode::DeploymentRefused),
            ..session(
                SessionState::Failed,
                Some("the deployment asked to route 0.0.0.0/1, which is outside the ranges Warren allows (100.64.0.0/10); ask its administrator"),
            )
        };
        let n = notice(Some(&connecting), Some(&refused), false).unwrap();
        assert_eq!(n.title, "Deployment refused");
        assert!(n.body.contains("0.0.0.0/1"), "{}", n.body);
        assert!(notice(Some(&refused), Some(&refused), false).is_none());
        let changed = SessionInfo {
            reason_code: Some(ReasonCode::DeploymentChanged),
            ..session(
                SessionState::Failed,
                Some("the deployment changed its network"),
            )
        };
        let n = notice(Some(&connected), Some(&changed), false).unwrap();
        assert_eq!(n.title, "Sign in required");
        assert!(n.body.contains("sign in again"), "{}", n.body);
        let failed = session(SessionState::Failed, Some("incompatible version"));
        let n = notice(Some(&connected), Some(&failed), false).unwrap();
        assert!(!n.body.contains("keeps trying"), "{}", n.body);
    }

    #[test]
    fn sign_in_is_asked_for_by_code_not_by_words() {
        let coded = |code| SessionInfo {
            reason_code: code,
            ..session(SessionState::Failed, Some("Token expired."))
        };
        assert!(needs_sign_in(&coded(Some(ReasonCode::SignInRequired))));
        assert!(!needs_sign_in(&coded(Some(ReasonCode::Refused))));
        assert!(!needs_sign_in(&coded(None)));
        // The words alone (an older helper) are not enough.
        let words_only = session(
            SessionState::Failed,
            Some("The coordinator rejected your token — sign in again with `warren login`."),
        );
        assert!(!needs_sign_in(&words_only));
        // Not while the helper still retries.
        let retrying = SessionInfo {
            state: SessionState::Reconnecting,
            ..coded(Some(ReasonCode::SignInRequired))
        };
        assert!(!needs_sign_in(&retrying));
    }
}
