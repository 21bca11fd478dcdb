//! What travels between the desktop app's Rust side (`warren-desktop`) and
//! its web UI (`ui/`), over Tauri's IPC.
//!
//! The UI gets these types as generated TypeScript (`ui/src/bindings/`, see
//! [`export_bindings`]), so a change here that the UI doesn't follow fails
//! its type check instead of failing at run time.
//!
//! Commands (UI → app) are listed once, in the `commands!` invocation
//! below: their names ([`COMMANDS`], which the desktop crate's invoke
//! handler is tested against), snake_case arguments and what they resolve
//! to. With the `ts` feature, [`export_bindings`] writes one typed wrapper
//! per command into `ui/src/bindings/commands.ts`. A failing command rejects
//! with a [`CommandError`].
//!
//! The stream a `subscribe` opens always starts with a [`UiEvent::Helper`]
//! and a [`UiEvent::Account`]. While the helper is reachable, its events
//! follow as [`UiEvent::Stream`]: a full `State` snapshot first, then diffs.
//! The app subscribes to the helper before it takes that snapshot, so no
//! change falls between the two.

use crate::ipc::Event;
use serde::{Deserialize, Serialize};

/// One message on the UI's event channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UiEvent {
    /// The app's link to the helper changed (found, lost, refused us, …).
    Helper { link: HelperLink },
    /// Who is signed in changed; `null` means signed out.
    Account { account: Option<Account> },
    /// An event from the helper, with the helper's own number. A `State`
    /// is always one whole snapshot (`part` 0, `last` true; the app joins
    /// the helper's parts before sending it), replaces everything and
    /// carries the number of the last helper event it includes; the events
    /// after it follow that number one by one.
    Stream { seq: u64, event: Box<Event> },
    /// A browser sign-in started from this app moved on (sent to a new
    /// subscriber too, unless none is under way).
    BrowserSignIn { status: BrowserSignIn },
}

/// How a browser sign-in started from this app stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BrowserSignIn {
    /// None under way (or it was cancelled).
    Idle,
    /// The browser was opened at the coordinator `url`'s sign-in page; the
    /// app waits for the `warren://signin` link it ends with. `refused`:
    /// a link that didn't answer this sign-in came meanwhile (what to do).
    Waiting {
        url: String,
        #[serde(default)]
        refused: Option<String>,
    },
    /// The link arrived; the app is exchanging it for a token.
    Finishing,
    /// Signed in as `user`.
    SignedIn { user: String },
    /// A link was refused or the sign-in failed; `message` says what to do.
    Refused { message: String },
}

/// How the app's connection to the helper stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct HelperLink {
    pub state: HelperLinkState,
    /// The socket (Windows: pipe) the app talks to.
    pub socket: String,
    /// What went wrong and what to do about it; set for every trouble state.
    #[serde(default)]
    pub message: Option<String>,
    /// The helper's version, once it said Hello.
    #[serde(default)]
    pub helper_version: Option<String>,
    /// Milliseconds until the app looks for the helper again, in trouble states.
    #[serde(default)]
    pub retry_in_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum HelperLinkState {
    /// Looking for the helper (at start, or after it went away).
    Searching,
    /// Subscribed; helper events flow.
    Connected,
    /// Nothing listens on the socket: the helper is not installed or stopped.
    Missing,
    /// The helper refused us: the user is not in its group.
    NotPermitted,
    /// The helper speaks another major protocol version.
    VersionMismatch,
    /// Anything else (a timeout, garbage on the socket).
    Failed,
}

/// The signed-in account, as saved on this computer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Account {
    /// The coordinator, e.g. `https://warren.example.com`.
    pub url: String,
    /// The user the token belongs to, when known.
    #[serde(default)]
    pub user: Option<String>,
}

/// What the sign-in form sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SignInRequest {
    pub url: String,
    pub token: String,
    /// Extra CA certificate (PEM) to trust, for a self-hosted coordinator.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// Why a command failed: a kind the UI can branch on and a sentence that
/// says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[error("{message}")]
pub struct CommandError {
    pub kind: CommandErrorKind,
    pub message: String,
}

impl CommandError {
    pub fn new(kind: CommandErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum CommandErrorKind {
    /// The URL typed is not a coordinator address we accept.
    BadUrl,
    /// The token field is empty.
    EmptyToken,
    /// The coordinator did not answer.
    Unreachable,
    /// The coordinator's certificate is not trusted.
    Certificate,
    /// The coordinator rejected the token.
    WrongToken,
    /// Something answered, but not a Warren coordinator.
    NotACoordinator,
    /// An agent's token was given where a user's is needed.
    AgentToken,
    /// Connect was asked for without a saved sign-in.
    NotSignedIn,
    /// The OS keyring failed and no fallback was possible.
    Keyring,
    /// The helper is not running.
    HelperMissing,
    /// The user may not talk to the helper.
    NotPermitted,
    /// App and helper speak different protocol versions.
    VersionMismatch,
    /// The helper answered with an error (its message says what to do).
    Helper,
    /// A local file could not be read or written.
    Io,
    /// Anything else.
    Other,
}

/// Declares every command: [`COMMANDS`] and, with the `ts` feature, the
/// descriptions [`export_bindings`] turns into TypeScript. The doc comments
/// become the wrappers' JSDoc.
macro_rules! commands {
    ($( $(#[doc = $doc:literal])* fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty; )*) => {
        /// The name of every command the UI may invoke, as the desktop
        /// crate's `#[tauri::command]` functions are named.
        pub const COMMANDS: &[&str] = &[$(stringify!($name)),*];

        #[cfg(feature = "ts")]
        fn command_specs(cfg: &ts_rs::Config) -> Vec<ts_commands::Command> {
            vec![$(ts_commands::Command {
                name: stringify!($name),
                doc: &[$($doc),*],
                args: vec![$((stringify!($arg), ts_commands::Ty::of::<$ty>(cfg))),*],
                returns: ts_commands::Ty::of::<$ret>(cfg),
            }),*]
        }
    };
}

commands! {
    /// Facts for the About screen.
    fn app_info() -> AppInfo;
    /// Opens the event stream: the app replays the current state (link,
    /// account, then the helper's snapshot) and streams changes into
    /// `on_event`.
    fn subscribe(on_event: EventChannel<UiEvent>) -> ();
    /// Checks the URL and token with the coordinator, then saves them.
    fn sign_in(request: SignInRequest) -> Account;
    /// Checks the coordinator offers browser sign-in, opens the browser at
    /// its sign-in page and waits for the `warren://signin` link (progress
    /// arrives as `browser_sign_in` events). Replaces one under way.
    fn start_browser_sign_in(url: String, ca_pem: Option<String>) -> ();
    /// Forgets the browser sign-in under way; its link will be refused.
    fn cancel_browser_sign_in() -> ();
    /// Stops the session and forgets the saved sign-in.
    fn sign_out() -> ();
    /// Hands the saved token to the helper, which connects.
    fn connect() -> ();
    fn disconnect() -> ();
    fn reconnect() -> ();
    fn get_settings() -> Settings;
    /// Resolves to the settings as applied.
    fn set_settings(settings: Settings) -> Settings;
    /// Resolves to the path of the zip written, or `null` when the dialog
    /// was cancelled.
    fn export_logs() -> Option<String>;
    fn copy_text(text: String) -> ();
    /// One ICMP echo through the tunnel, timed by the helper (as
    /// `warren ping`); `target` is a DNS name, `workspace/agent` or a
    /// tunnel address. An unreachable agent rejects with kind `helper`.
    fn ping(target: String) -> crate::ipc::PingReport;
    /// Called once after the first paint (start-up timing, start minimized).
    fn ui_ready() -> ();
}

/// Stands for the Tauri `Channel<T>` a command takes (the desktop crate
/// uses the real one); in TypeScript it is `Channel<T>` from
/// `@tauri-apps/api/core`.
pub struct EventChannel<T>(std::marker::PhantomData<T>);

#[cfg(feature = "ts")]
impl<T: ts_rs::TS + 'static> ts_rs::TS for EventChannel<T> {
    type WithoutGenerics = EventChannel<ts_rs::Dummy>;
    type OptionInnerType = Self;

    fn name(cfg: &ts_rs::Config) -> String {
        format!("Channel<{}>", T::name(cfg))
    }

    fn inline(cfg: &ts_rs::Config) -> String {
        Self::name(cfg)
    }

    fn visit_generics(v: &mut impl ts_rs::TypeVisitor)
    where
        Self: 'static,
    {
        v.visit::<T>();
    }
}

/// Turns the command list into `commands.ts`.
#[cfg(feature = "ts")]
mod ts_commands {
    use std::any::TypeId;
    use std::collections::BTreeSet;
    use ts_rs::{Config, Dependency, TypeVisitor, TS};

    pub struct Command {
        pub name: &'static str,
        pub doc: &'static [&'static str],
        pub args: Vec<(&'static str, Ty)>,
        pub returns: Ty,
    }

    /// A TypeScript type and the generated types it names.
    pub struct Ty {
        pub ts: String,
        pub imports: BTreeSet<String>,
    }

    impl Ty {
        pub fn of<T: TS + 'static>(cfg: &Config) -> Ty {
            let mut imports = BTreeSet::new();
            named::<T>(cfg, &mut imports);
            // A command that resolves to nothing resolves to `undefined`.
            let ts = if TypeId::of::<T>() == TypeId::of::<()>() {
                "void".to_string()
            } else {
                T::name(cfg)
            };
            Ty { ts, imports }
        }
    }

    /// Collects the exported types `T` is made of (itself, or the type
    /// arguments of an `Option`, a `Vec` or a channel).
    fn named<T: TS + 'static + ?Sized>(cfg: &Config, out: &mut BTreeSet<String>) {
        struct Visit<'a>(&'a Config, &'a mut BTreeSet<String>);
        impl TypeVisitor for Visit<'_> {
            fn visit<U: TS + 'static + ?Sized>(&mut self) {
                named::<U>(self.0, self.1);
            }
        }
        match Dependency::from_ty::<T>(cfg) {
            Some(dep) => {
                out.insert(dep.ts_name);
            }
            None => T::visit_generics(&mut Visit(cfg, out)),
        }
    }

    fn camel(snake: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in snake.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The text of `commands.ts`: the names, then one function per command.
    pub fn render(commands: &[Command]) -> String {
        let mut imports = BTreeSet::new();
        let mut channel = false;
        for c in commands {
            for ty in c.args.iter().map(|(_, t)| t).chain([&c.returns]) {
                imports.extend(ty.imports.iter().cloned());
                channel |= ty.ts.starts_with("Channel<");
            }
        }
        let mut out = String::from(
            "// This file was generated by warren-proto (`app::export_bindings`) from the command list in\n\
             // crates/warren-proto/src/app.rs. Do not edit this file manually.\n\n",
        );
        out.push_str("import { invoke } from '@tauri-apps/api/core';\n");
        if channel {
            out.push_str("import type { Channel } from '@tauri-apps/api/core';\n");
        }
        for name in &imports {
            out.push_str(&format!("import type {{ {name} }} from './{name}';\n"));
        }
        out.push_str("\n/** Every command the app answers to. */\nexport const COMMANDS = [\n");
        for c in commands {
            out.push_str(&format!("  '{}',\n", c.name));
        }
        out.push_str("] as const;\n\nexport type CommandName = (typeof COMMANDS)[number];\n");
        for c in commands {
            out.push('\n');
            if !c.doc.is_empty() {
                out.push_str("/**\n");
                for line in c.doc {
                    out.push_str(&format!(" *{}\n", line.trim_end()));
                }
                out.push_str(" */\n");
            }
            let params: Vec<String> = c
                .args
                .iter()
                .map(|(n, t)| format!("{n}: {}", t.ts))
                .collect();
            let payload = if c.args.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = c.args.iter().map(|(n, _)| *n).collect();
                format!(", {{ {} }}", names.join(", "))
            };
            out.push_str(&format!(
                "export function {}({}): Promise<{ret}> {{\n  return invoke<{ret}>('{}'{payload});\n}}\n",
                camel(c.name),
                params.join(", "),
                c.name,
                ret = c.returns.ts,
            ));
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn snake_case_becomes_camel_case() {
            assert_eq!(super::camel("app_info"), "appInfo");
            assert_eq!(super::camel("ping"), "ping");
            assert_eq!(super::camel("get_settings"), "getSettings");
        }
    }
}

/// The app's settings (saved per user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Settings {
    /// Start the app when the user logs in.
    #[serde(default)]
    pub start_on_login: bool,
    /// Start with only the tray icon, no window.
    #[serde(default)]
    pub start_minimized: bool,
    /// How much the app writes to its log.
    #[serde(default)]
    pub log_level: LogLevel,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            start_on_login: false,
            start_minimized: false,
            log_level: LogLevel::Info,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Facts for the About screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct AppInfo {
    pub app_version: String,
    /// The IPC protocol this app speaks, e.g. `1.0`.
    pub protocol_version: String,
    pub socket: String,
    /// `linux`, `macos` or `windows`.
    pub os: String,
    /// Where the app writes its own log.
    pub log_dir: String,
}

/// Writes every UI-facing type as TypeScript into `dir` (one file per type),
/// with 64-bit integers as `number`: byte counters and millisecond clocks
/// stay far below 2^53; and `commands.ts`, a typed function per command.
#[cfg(feature = "ts")]
pub fn export_bindings(dir: &std::path::Path) -> Result<(), ts_rs::ExportError> {
    use crate::ipc::{LogLine, PingReport, SessionInfo};
    use crate::model::{Agent, DeploymentInfo, Workspace};
    use ts_rs::TS;
    let cfg = ts_rs::Config::new()
        .with_large_int("number")
        .with_out_dir(dir);
    UiEvent::export_all(&cfg)?;
    CommandError::export_all(&cfg)?;
    SignInRequest::export_all(&cfg)?;
    BrowserSignIn::export_all(&cfg)?;
    Settings::export_all(&cfg)?;
    AppInfo::export_all(&cfg)?;
    // Reachable through `Event` already; listed so a refactor that stops
    // embedding them still exports what the UI imports.
    SessionInfo::export_all(&cfg)?;
    Workspace::export_all(&cfg)?;
    Agent::export_all(&cfg)?;
    DeploymentInfo::export_all(&cfg)?;
    LogLine::export_all(&cfg)?;
    PingReport::export_all(&cfg)?;
    let commands = ts_commands::render(&command_specs(&cfg));
    std::fs::write(dir.join("commands.ts"), commands).map_err(ts_rs::ExportError::Io)?;
    Ok(())
}

#[cfg(all(test, feature = "ts"))]
mod tests {
    use std::path::{Path, PathBuf};

    fn committed_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/bindings")
    }

    fn read_dir(dir: &Path) -> std::collections::BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "ts"))
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            std::fs::read_to_string(e.path()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The committed bindings are what the Rust types generate. Run with
    /// `WARREN_UPDATE_BINDINGS=1` to rewrite them after changing a type.
    #[test]
    fn committed_typescript_bindings_are_current() {
        let fresh = tempfile::tempdir().unwrap();
        super::export_bindings(fresh.path()).unwrap();
        let generated = read_dir(fresh.path());
        assert!(generated.contains_key("UiEvent.ts"), "{generated:?}");
        if std::env::var_os("WARREN_UPDATE_BINDINGS").is_some() {
            let dir = committed_dir();
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &generated {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        let committed = read_dir(&committed_dir());
        assert_eq!(
            committed.keys().collect::<Vec<_>>(),
            generated.keys().collect::<Vec<_>>(),
            "ui/src/bindings is out of date: run `WARREN_UPDATE_BINDINGS=1 cargo test -p warren-proto --features ts`"
        );
        for (name, text) in &generated {
            assert_eq!(
                &committed[name], text,
                "ui/src/bindings/{name} is out of date: run `WARREN_UPDATE_BINDINGS=1 cargo test -p warren-proto --features ts`"
            );
        }
    }

    #[test]
    fn large_integers_are_numbers_in_typescript() {
        let fresh = tempfile::tempdir().unwrap();
        super::export_bindings(fresh.path()).unwrap();
        let stats = std::fs::read_to_string(fresh.path().join("PeerStats.ts")).unwrap();
        assert!(stats.contains("rx_bytes: number"), "{stats}");
        assert!(!stats.contains("bigint"), "{stats}");
    }
}
