//! Browser sign-in from the app: open the coordinator's sign-in page in the
//! person's browser, then finish when the OS hands the app the
//! `warren://signin?code&state` link it ends with (on Linux and Windows as
//! the start-up argument, or through the single-instance callback when the
//! app already runs; on macOS as an Apple Event, through
//! tauri-plugin-deep-link).
//!
//! Only a link answering the one sign-in this app started is taken: the
//! `state` must match and the code is exchanged with this sign-in's PKCE
//! verifier, so a link someone else crafted can't sign the app in. The
//! link's query carries a one-time code and is never logged.

use crate::commands::{self, err, from_sign_in, lock, AppState};
use tauri::{AppHandle, Manager};
use warren_client::browser_signin::{
    self, BrowserSignInError, Client, SignInRequest, APP_REDIRECT_URI,
};
use warren_client::signin;
use warren_proto::app::{Account, BrowserSignIn, CommandError, CommandErrorKind as Kind};

/// Said when a link arrives that no sign-in of this app is waiting for.
pub const NOT_STARTED: &str =
    "This sign-in link wasn't started by this app — start again from Sign in.";

/// The sign-in under way: its `state`, PKCE verifier and coordinator.
#[derive(Debug)]
pub struct Pending {
    request: SignInRequest,
    url: String,
    ca_pem: Option<String>,
}

/// Where a `warren://` link's sign-in answer is, if it is one: the query of
/// `warren://signin?…` (the scheme in any case, an optional `/` after the
/// host).
pub fn signin_query(link: &str) -> Option<&str> {
    let (scheme, rest) = link.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("warren") {
        return None;
    }
    let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
    target
        .trim_end_matches('/')
        .eq_ignore_ascii_case("signin")
        .then_some(query)
}

/// The first `warren://` link in a second launch's arguments.
pub fn link_in_args(argv: &[String]) -> Option<&str> {
    argv.iter()
        .skip(1)
        .map(String::as_str)
        .find(|a| a.len() > 9 && a[..9].eq_ignore_ascii_case("warren://"))
}

/// The first `warren://` link among the URLs the OS opened the app with
/// (macOS hands them over as Apple Events, not as arguments).
pub fn link_in_urls(urls: &[tauri::Url]) -> Option<&str> {
    urls.iter()
        .find(|u| u.scheme() == "warren")
        .map(tauri::Url::as_str)
}

/// What the app says about a failed browser sign-in: the client library's
/// sentences speak of `warren login`; these of the sign-in screen.
pub fn app_message(e: BrowserSignInError) -> String {
    app_error(e).message
}

/// [`app_message`] with the kind the UI branches on (a bad URL or an
/// unreachable coordinator keep theirs).
pub fn app_error(e: BrowserSignInError) -> CommandError {
    let message = match e {
        BrowserSignInError::Connect(e) => return from_sign_in(e),
        BrowserSignInError::StateMissing | BrowserSignInError::StateMismatch => {
            "This sign-in link doesn't belong to the sign-in this app started, so it was refused. Finish signing in in the browser window the app opened, or start again from Sign in.".into()
        }
        BrowserSignInError::NoCode => {
            "The sign-in link carried no code. Start again from Sign in.".into()
        }
        BrowserSignInError::Denied { error, description } => format!(
            "The sign-in was not completed ({error}{}). Start again from Sign in.",
            description
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        BrowserSignInError::InvalidGrant { message } => format!(
            "The coordinator refused the sign-in: {message} Start again from Sign in."
        ),
        BrowserSignInError::NotEnabled { url } => format!(
            "{url} doesn't offer browser sign-in. Ask your administrator for a token and choose “Use a token”."
        ),
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => text,
            }
        }
    };
    err(Kind::Other, message)
}

/// Checks the coordinator offers browser sign-in, opens the browser at its
/// sign-in page and keeps the request for the link that ends it.
pub async fn start(
    state: &AppState,
    url: String,
    ca_pem: Option<String>,
) -> Result<(), CommandError> {
    let url = signin::normalize_url(&url).map_err(from_sign_in)?;
    let ca_pem = ca_pem.filter(|p| !p.trim().is_empty());
    browser_signin::check_available(&url, ca_pem.as_deref())
        .await
        .map_err(app_error)?;
    let request = SignInRequest::new(
        &url,
        Client::App,
        APP_REDIRECT_URI,
        &browser_signin::device_name(),
    )
    .with_ca(ca_pem.as_deref());
    browser_signin::open_browser(request.url()).map_err(|e| {
        err(
            Kind::Other,
            format!("Couldn't open a web browser ({e}). Set one as your default browser and try again, or choose “Use a token”."),
        )
    })?;
    tracing::info!(url = %url, "browser sign-in started; waiting for its link");
    *lock(&state.browser_sign_in) = Some(Pending {
        request,
        url: url.clone(),
        ca_pem,
    });
    state
        .hub
        .set_browser_sign_in(BrowserSignIn::Waiting { url, refused: None });
    Ok(())
}

pub fn cancel(state: &AppState) {
    if lock(&state.browser_sign_in).take().is_some() {
        tracing::info!("browser sign-in cancelled");
    }
    state.hub.set_browser_sign_in(BrowserSignIn::Idle);
}

/// Handles a `warren://` link the OS gave the app (at start-up or through
/// a second launch): a sign-in answer is finished or refused, and the
/// window shows the outcome.
pub fn handle_link(app: &AppHandle, link: &str) {
    let Some(query) = signin_query(link) else {
        tracing::info!("a warren:// link that is not a sign-in: showing the window");
        return;
    };
    let query = query.to_string();
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let state = app.state::<AppState>();
        match finish(&state, &query).await {
            Ok(account) => {
                tracing::info!(url = %account.url, "signed in through the browser");
                state.hub.set_browser_sign_in(BrowserSignIn::SignedIn {
                    user: account.user.unwrap_or_default(),
                });
                // As after the token form: connect at once; a missing helper
                // is already on screen and connecting can wait for it.
                if let Err(e) = commands::connect_session(&state).await {
                    tracing::warn!(error = %e, "signed in, but couldn't connect yet");
                }
            }
            Err(message) => {
                tracing::warn!(why = %message, "refused a sign-in link");
                // A stray link doesn't end the sign-in under way: the window
                // keeps waiting for the real one and says what came.
                let waiting_for = lock(&state.browser_sign_in).as_ref().map(|p| p.url.clone());
                state.hub.set_browser_sign_in(match waiting_for {
                    Some(url) => BrowserSignIn::Waiting {
                        url,
                        refused: Some(message),
                    },
                    None => BrowserSignIn::Refused { message },
                });
            }
        }
    });
}

/// Checks a sign-in answer against the pending sign-in, exchanges its code
/// and saves the token. A link that doesn't match leaves the pending
/// sign-in waiting for the real one.
async fn finish(state: &AppState, query: &str) -> Result<Account, String> {
    let pending = {
        let mut slot = lock(&state.browser_sign_in);
        let Some(p) = slot.as_ref() else {
            return Err(NOT_STARTED.to_string());
        };
        match p.request.check_callback_query(query) {
            Ok(code) => slot.take().map(|p| (p, code)),
            // The right state but the browser said no: this sign-in is over.
            Err(e @ BrowserSignInError::Denied { .. }) => {
                slot.take();
                return Err(app_message(e));
            }
            Err(e) => return Err(app_message(e)),
        }
    };
    // Invariant: `take` on the slot just checked to be `Some`.
    let (pending, code) = pending.expect("pending sign-in present");
    state.hub.set_browser_sign_in(BrowserSignIn::Finishing);
    let signed = pending.request.exchange(&code).await.map_err(app_message)?;
    commands::save_sign_in(state, pending.url, signed.token, pending.ca_pem)
        .await
        .map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_warren_signin_links_carry_a_sign_in_answer() {
        assert_eq!(
            signin_query("warren://signin?code=c&state=s"),
            Some("code=c&state=s")
        );
        assert_eq!(signin_query("WARREN://SignIn/?state=s"), Some("state=s"));
        assert_eq!(signin_query("warren://signin"), Some(""));
        assert_eq!(signin_query("warren://open"), None);
        assert_eq!(signin_query("https://signin?code=c"), None);
        assert_eq!(signin_query("warren:signin?code=c"), None);
    }

    #[test]
    fn an_opened_url_is_taken_only_if_it_is_a_warren_link() {
        let urls = |a: &[&str]| {
            a.iter()
                .map(|s| s.parse::<tauri::Url>().expect("a URL"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            link_in_urls(&urls(&[
                "https://example.com/",
                "WARREN://signin?code=c&state=s"
            ])),
            Some("warren://signin?code=c&state=s")
        );
        assert_eq!(
            link_in_urls(&urls(&["warren://signin?code=c&state=s"])).and_then(signin_query),
            Some("code=c&state=s")
        );
        assert_eq!(link_in_urls(&urls(&["https://example.com/"])), None);
        assert_eq!(link_in_urls(&[]), None);
    }

    #[test]
    fn a_second_launch_finds_its_link_among_the_arguments() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            link_in_args(&argv(&[
                "warren-desktop",
                "--minimized",
                "warren://signin?x"
            ])),
            Some("warren://signin?x")
        );
        assert_eq!(link_in_args(&argv(&["warren-desktop"])), None);
        // argv[0] is the program, even if oddly named.
        assert_eq!(link_in_args(&argv(&["warren://x"])), None);
    }

    #[test]
    fn a_forged_link_is_refused_and_the_real_one_still_counts() {
        let request = SignInRequest::new(
            "https://warren.example.com",
            Client::App,
            APP_REDIRECT_URI,
            "test",
        );
        let forged = request
            .check_callback_query("code=abc&state=forged")
            .unwrap_err();
        let message = app_message(forged);
        assert!(message.contains("start again from Sign in"), "{message}");
        assert!(!message.contains("warren login"), "{message}");
        let denied = BrowserSignInError::Denied {
            error: "access_denied".into(),
            description: None,
        };
        assert!(app_message(denied).contains("Start again from Sign in"));
    }
}
