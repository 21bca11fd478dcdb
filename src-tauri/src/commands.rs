//! The commands the web UI invokes (the list in `warren_proto::app`, whose
//! names [`HANDLED`] is tested against), and the session actions the tray
//! shares with them. Each talks to the helper
//! through `warren-ipc`, as the CLI does, and fails with a
//! [`CommandError`] whose message says what to do.

use crate::hub::{Hub, UiSink};
use crate::link::APP_VERSION;
use crate::{logs, settings};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tauri::ipc::Channel;
use tauri::{AppHandle, State};
use warren_client::signin::{self, SignInError};
use warren_client::{config, token, StoreError};
use warren_ipc::{Client, ClientError};
use warren_proto::app::{
    Account, AppInfo, CommandError, CommandErrorKind as Kind, Settings, SignInRequest, UiEvent,
};
use warren_proto::ipc::{PingReport, Request, VERSION};
use warren_proto::Secret;

/// Everything the commands share.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub socket: PathBuf,
    pub config_dir: PathBuf,
    pub helper_log_dir: PathBuf,
    pub settings: Mutex<Settings>,
    pub log: Option<warren_telemetry::LogGuard>,
    /// Set while a disconnect the person asked for is under way, so the
    /// tray doesn't report it as a drop.
    pub stop_expected: Arc<AtomicBool>,
    pub started: Instant,
    pub ready: AtomicBool,
    /// The browser sign-in under way, whose link the app waits for.
    pub browser_sign_in: Mutex<Option<crate::browser_signin::Pending>>,
}

type Result<T> = std::result::Result<T, CommandError>;

pub(crate) fn err(kind: Kind, message: impl Into<String>) -> CommandError {
    CommandError::new(kind, message)
}

fn from_store(e: StoreError) -> CommandError {
    err(Kind::Io, e.to_string())
}

pub fn from_client(e: ClientError) -> CommandError {
    let kind = match &e {
        ClientError::HelperNotRunning { .. } => Kind::HelperMissing,
        ClientError::PermissionDenied { .. } => Kind::NotPermitted,
        ClientError::VersionMismatch { .. } => Kind::VersionMismatch,
        ClientError::Helper(_) => Kind::Helper,
        _ => Kind::Other,
    };
    err(kind, e.to_string())
}

pub fn from_sign_in(e: SignInError) -> CommandError {
    let kind = match &e {
        SignInError::BadUrl(_) => Kind::BadUrl,
        SignInError::EmptyToken => Kind::EmptyToken,
        SignInError::BadCa(_) | SignInError::Certificate { .. } => Kind::Certificate,
        SignInError::Unreachable { .. } => Kind::Unreachable,
        SignInError::WrongToken => Kind::WrongToken,
        SignInError::NotACoordinator { .. } => Kind::NotACoordinator,
        SignInError::Refused { .. } => Kind::Other,
        SignInError::AgentToken { .. } => Kind::AgentToken,
    };
    // Sentences start with a capital in the window.
    let text = e.to_string();
    let mut chars = text.chars();
    let message = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    };
    err(kind, message)
}

async fn helper(state: &AppState) -> Result<Client> {
    Client::connect(&state.socket, APP_VERSION)
        .await
        .map_err(from_client)
}

/// Hands the saved token to the helper.
pub async fn connect_session(state: &AppState) -> Result<()> {
    let dir = &state.config_dir;
    let cfg = config::load(dir).map_err(from_store)?.ok_or_else(|| {
        err(
            Kind::NotSignedIn,
            "Sign in first: enter your deployment's URL and a token.",
        )
    })?;
    let tok = token::load(dir, &cfg.url)
        .await
        .map_err(from_store)?
        .ok_or_else(|| {
            err(
                Kind::NotSignedIn,
                format!(
                    "No token is saved for {}; sign out and sign in again.",
                    cfg.url
                ),
            )
        })?;
    session_request(
        state,
        Request::Start {
            url: cfg.url,
            token: tok,
            ca: cfg.ca_pem,
            deployment: cfg.deployment,
        },
    )
    .await
}

pub async fn disconnect_session(state: &AppState) -> Result<()> {
    session_request(state, Request::Stop).await
}

pub async fn reconnect_session(state: &AppState) -> Result<()> {
    session_request(state, Request::Reconnect).await
}

/// Sends a session request; only `Stop` is a disconnect the person asked
/// for, which the tray must not report as a drop.
async fn session_request(state: &AppState, request: Request) -> Result<()> {
    let stopping = matches!(request, Request::Stop);
    state.stop_expected.store(stopping, Ordering::SeqCst);
    helper(state)
        .await?
        .request_ok(request)
        .await
        .map_err(from_client)
}

struct ChannelSink(Channel<UiEvent>);

impl UiSink for ChannelSink {
    fn send(&mut self, event: UiEvent) -> bool {
        self.0.send(event).is_ok()
    }
}

#[tauri::command(rename_all = "snake_case")]
pub fn app_info(state: State<'_, AppState>) -> AppInfo {
    AppInfo {
        app_version: APP_VERSION.to_string(),
        protocol_version: VERSION.to_string(),
        socket: state.socket.display().to_string(),
        os: std::env::consts::OS.to_string(),
        log_dir: logs::app_log_dir().display().to_string(),
    }
}

#[tauri::command(rename_all = "snake_case")]
pub fn subscribe(webview: tauri::Webview, state: State<'_, AppState>, on_event: Channel<UiEvent>) {
    state.hub.subscribe(webview.label(), ChannelSink(on_event));
}

#[tauri::command(rename_all = "snake_case")]
pub async fn sign_in(state: State<'_, AppState>, request: SignInRequest) -> Result<Account> {
    let url = signin::normalize_url(&request.url).map_err(from_sign_in)?;
    let token = Secret::new(request.token.trim());
    let ca_pem = request.ca_pem.filter(|p| !p.trim().is_empty());
    save_sign_in(&state, url, token, ca_pem).await
}

/// Checks `token` with the coordinator at `url`, then saves both and tells
/// the windows who is signed in (the token form and the browser sign-in
/// end here alike).
pub async fn save_sign_in(
    state: &AppState,
    url: String,
    token: Secret,
    ca_pem: Option<String>,
) -> Result<Account> {
    let me = signin::validate(&url, &token, ca_pem.as_deref())
        .await
        .map_err(from_sign_in)?;
    let dir = &state.config_dir;
    match token::store(dir, &url, &token).await.map_err(from_store)? {
        token::Stored::Keyring => tracing::info!("token saved in the OS keyring"),
        token::Stored::File {
            path,
            keyring_error,
        } => {
            tracing::warn!(path = %path.display(), why = ?keyring_error, "token saved in the fallback file")
        }
    }
    config::save(
        dir,
        &config::Config {
            url: url.clone(),
            ca_pem,
            user: Some(me.user.clone()),
            deployment: Some(me.deployment.clone()),
        },
    )
    .map_err(from_store)?;
    let account = Account {
        url,
        user: Some(me.user),
    };
    tracing::info!(url = %account.url, "signed in");
    state.hub.set_account(Some(account.clone()));
    Ok(account)
}

/// See [`crate::browser_signin::start`].
#[tauri::command(rename_all = "snake_case")]
pub async fn start_browser_sign_in(
    state: State<'_, AppState>,
    url: String,
    ca_pem: Option<String>,
) -> Result<()> {
    crate::browser_signin::start(&state, url, ca_pem).await
}

#[tauri::command(rename_all = "snake_case")]
pub fn cancel_browser_sign_in(state: State<'_, AppState>) {
    crate::browser_signin::cancel(&state);
}

#[tauri::command(rename_all = "snake_case")]
pub async fn sign_out(state: State<'_, AppState>) -> Result<()> {
    // Stop first, so no session runs on a token that is about to vanish.
    match disconnect_session(&state).await {
        Ok(()) => {}
        Err(e) if e.kind == Kind::HelperMissing => {}
        Err(e) => {
            tracing::warn!(error = %e, "couldn't stop the helper's session while signing out")
        }
    }
    let dir = &state.config_dir;
    let url = config::load(dir)
        .ok()
        .flatten()
        .map(|c| c.url)
        .unwrap_or_default();
    token::delete(dir, &url).await.map_err(from_store)?;
    config::remove(dir).map_err(from_store)?;
    state.hub.set_account(None);
    // The next sign-in screen starts fresh, not on the last one's outcome.
    state
        .hub
        .set_browser_sign_in(warren_proto::app::BrowserSignIn::Idle);
    tracing::info!("signed out");
    Ok(())
}

#[tauri::command(rename_all = "snake_case")]
pub async fn connect(state: State<'_, AppState>) -> Result<()> {
    connect_session(&state).await
}

#[tauri::command(rename_all = "snake_case")]
pub async fn disconnect(state: State<'_, AppState>) -> Result<()> {
    disconnect_session(&state).await
}

#[tauri::command(rename_all = "snake_case")]
pub async fn reconnect(state: State<'_, AppState>) -> Result<()> {
    reconnect_session(&state).await
}

#[tauri::command(rename_all = "snake_case")]
pub fn get_settings(state: State<'_, AppState>) -> Settings {
    lock(&state.settings).clone()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[tauri::command(rename_all = "snake_case")]
pub fn set_settings(
    app: AppHandle,
    state: State<'_, AppState>,
    settings: Settings,
) -> Result<Settings> {
    let before = lock(&state.settings).clone();
    if settings.start_on_login != before.start_on_login {
        crate::platform::set_autostart(&app, settings.start_on_login)
            .map_err(|e| err(Kind::Other, e))?;
    }
    if settings.log_level != before.log_level {
        if let Some(log) = &state.log {
            log.set_level(settings.log_level.as_str())
                .map_err(|e| err(Kind::Other, e))?;
        }
    }
    settings::save(&state.config_dir, &settings).map_err(from_store)?;
    tracing::info!(?settings, "settings saved");
    *lock(&state.settings) = settings.clone();
    Ok(settings)
}

#[tauri::command(rename_all = "snake_case")]
pub async fn export_logs(app: AppHandle, state: State<'_, AppState>) -> Result<Option<String>> {
    let name = format!("warren-logs-{}.zip", crate::platform::today());
    let Some(path) = crate::platform::ask_save_path(&app, &name).await else {
        return Ok(None);
    };
    let view = state.hub.view();
    let summary = serde_json::json!({
        "app_version": APP_VERSION,
        "os": std::env::consts::OS,
        "helper": view.link,
        "account_url": view.account.as_ref().map(|a| &a.url),
        "session": view.session,
        "workspaces": view.workspaces.len(),
        "agents": view.workspaces.iter().map(|(_, a)| a.len()).sum::<usize>(),
    });
    // Invariant: a json! value always serializes.
    let summary = serde_json::to_vec_pretty(&summary).expect("json value serializes");
    let app_dir = logs::app_log_dir();
    let helper_dir = state.helper_log_dir.clone();
    let out = path.clone();
    let exported = tokio::task::spawn_blocking(move || {
        logs::export_zip(
            &out,
            &[("app", &app_dir), ("helper", &helper_dir)],
            &[("state.json", summary)],
        )
    })
    .await
    .map_err(|e| err(Kind::Other, format!("the export stopped: {e}")))?
    .map_err(|e| {
        err(
            Kind::Io,
            format!(
                "Couldn't write {}: {e}. Choose another folder.",
                path.display()
            ),
        )
    })?;
    tracing::info!(path = %path.display(), files = exported.files.len(), skipped = exported.skipped.len(), "logs exported");
    Ok(Some(path.display().to_string()))
}

#[tauri::command(rename_all = "snake_case")]
pub fn copy_text(app: AppHandle, text: String) -> Result<()> {
    crate::platform::copy(&app, &text)
        .map_err(|e| err(Kind::Other, format!("Couldn't copy to the clipboard: {e}")))
}

/// One ICMP echo through the tunnel, timed by the helper (`warren ping`).
#[tauri::command(rename_all = "snake_case")]
pub async fn ping(state: State<'_, AppState>, target: String) -> Result<PingReport> {
    helper(&state)
        .await?
        .ping(&target, None)
        .await
        .map_err(from_client)
}

#[tauri::command(rename_all = "snake_case")]
pub fn ui_ready(state: State<'_, AppState>) {
    if state.ready.swap(true, Ordering::SeqCst) {
        return;
    }
    let ms = state.started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(ms = format!("{ms:.0}"), "first paint");
    if let Some(path) = std::env::var_os("WARREN_DESKTOP_READY_FILE") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        if let Err(e) = std::fs::write(&path, format!("{now} {ms:.1}\n")) {
            tracing::warn!(error = %e, "can't write WARREN_DESKTOP_READY_FILE");
        }
    }
}

/// Declares the invoke handler and the names it answers to from one list,
/// so the test below can hold them against `warren_proto::app::COMMANDS`
/// (from which the UI's wrappers are generated).
macro_rules! handlers {
    ($($name:ident),* $(,)?) => {
        /// The commands [`handler`] answers to.
        pub const HANDLED: &[&str] = &[$(stringify!($name)),*];

        /// The invoke handler for `tauri::Builder::invoke_handler`.
        pub fn handler() -> impl Fn(tauri::ipc::Invoke) -> bool + Send + Sync + 'static {
            tauri::generate_handler![$($name),*]
        }
    };
}

handlers![
    app_info,
    subscribe,
    sign_in,
    sign_out,
    connect,
    disconnect,
    reconnect,
    get_settings,
    set_settings,
    export_logs,
    copy_text,
    ping,
    ui_ready,
    start_browser_sign_in,
    cancel_browser_sign_in,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A command the UI's generated wrappers can call has a handler, and
    /// the handler answers to nothing the UI doesn't know about.
    #[test]
    fn every_listed_command_has_a_handler() {
        let mut listed = warren_proto::app::COMMANDS.to_vec();
        let mut handled = HANDLED.to_vec();
        listed.sort_unstable();
        handled.sort_unstable();
        assert_eq!(
            listed, handled,
            "warren_proto::app's command list and the invoke handler differ"
        );
    }

    #[test]
    fn sign_in_errors_keep_their_kind_and_read_as_sentences() {
        let e = from_sign_in(SignInError::WrongToken);
        assert_eq!(e.kind, Kind::WrongToken);
        assert!(
            e.message.starts_with("The coordinator rejected"),
            "{}",
            e.message
        );
        let e = from_sign_in(SignInError::BadUrl("\"x\" has no scheme".into()));
        assert_eq!(e.kind, Kind::BadUrl);
        let e = from_sign_in(SignInError::Unreachable {
            url: "https://c".into(),
            cause: "Connection refused".into(),
        });
        assert_eq!(e.kind, Kind::Unreachable);
        assert!(e.message.starts_with("Can't reach"), "{}", e.message);
        let e = from_client(ClientError::HelperNotRunning {
            path: "/run/warren/helper.sock".into(),
        });
        assert_eq!(e.kind, Kind::HelperMissing);
    }
}
