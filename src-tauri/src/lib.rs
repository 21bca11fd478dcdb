//! `warren-desktop`: the Warren desktop app. A Tauri 2 shell around the web
//! UI in `ui/`, with the helper link, the tray and the commands in Rust.
//!
//! Layout: [`hub`] holds the helper's state and fans it out to the UI;
//! [`link`] keeps the hub fed from the helper; [`commands`] are what the UI
//! invokes; [`browser_signin`] signs in through the browser and takes the
//! `warren://signin` link that ends it; [`tray`] and [`status`] are the tray icon, its menu and the
//! notifications; [`settings`], [`logs`] and [`platform`] are the edges to
//! files and OS services.

pub mod browser_signin;
pub mod commands;
pub mod hub;
pub mod link;
pub mod logs;
pub mod platform;
pub mod settings;
pub mod status;
pub mod tray;

use anyhow::Context;
use clap::Parser;
use commands::AppState;
use hub::Hub;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tauri::{Manager, RunEvent, WindowEvent};
use warren_client::config;
use warren_proto::app::Account;

#[derive(Debug, Parser)]
#[command(
    name = "warren-desktop",
    version,
    about = "Warren: sign in, connect and watch your workspaces"
)]
struct Args {
    /// The helper's socket (Windows: pipe name).
    #[arg(long, env = "WARREN_SOCKET", default_value_os_t = warren_ipc::default_endpoint())]
    socket: PathBuf,
    /// Where the helper writes its log (included in "Export logs").
    #[arg(long, default_value_os_t = logs::default_helper_log_dir())]
    helper_log_dir: PathBuf,
    /// Start with only the tray icon (as "Start minimized" does).
    #[arg(long)]
    minimized: bool,
    /// A `warren://` link the OS opened the app with (the installers
    /// register the scheme): it brings up the window, and a
    /// `warren://signin` link finishes a browser sign-in.
    #[arg(value_name = "LINK", value_parser = parse_link)]
    link: Option<String>,
}

/// Only `warren://` links: anything else on the command line is a mistake
/// (or someone else's link), and saying so beats ignoring it.
fn parse_link(text: &str) -> Result<String, String> {
    let scheme_end = text.find("://").unwrap_or(0);
    if text[..scheme_end].eq_ignore_ascii_case("warren") {
        Ok(text.to_string())
    } else {
        Err("the app opens only warren:// links; start it without arguments otherwise".into())
    }
}

/// Runs the app until the person quits it.
pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    // WebKitWebDriver starts the app with `--automation` under tauri-driver.
    let args = Args::parse_from(std::env::args_os().filter(|a| a != "--automation"));
    let config_dir = config::config_dir()?;
    let settings = settings::load(&config_dir);
    let log_dir = logs::app_log_dir();
    let log = match warren_telemetry::init(
        settings.log_level.as_str(),
        Some(&log_dir),
        "warren-desktop",
        None,
    ) {
        Ok(guard) => Some(guard),
        Err(e) => {
            eprintln!("warning: logging to {} is off: {e}", log_dir.display());
            None
        }
    };
    tracing::info!(version = link::APP_VERSION, socket = %args.socket.display(), "Warren desktop starting");
    let account = config::load(&config_dir)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "can't read the saved sign-in");
            None
        })
        .map(|c| Account {
            url: c.url,
            user: c.user,
        });
    let hub = Arc::new(Hub::new(args.socket.display().to_string(), account));
    if args.link.is_some() {
        // The link's text is not logged: a sign-in link may carry a secret.
        tracing::info!("opened with a warren:// link: showing the window");
    }
    let minimized = args.link.is_none() && (args.minimized || settings.start_minimized);
    let state = AppState {
        hub: hub.clone(),
        socket: args.socket.clone(),
        config_dir,
        helper_log_dir: args.helper_log_dir.clone(),
        settings: Mutex::new(settings),
        log,
        stop_expected: Arc::new(AtomicBool::new(false)),
        started,
        ready: AtomicBool::new(false),
        browser_sign_in: Mutex::new(None),
    };
    let start_link = args.link.clone();
    let socket = args.socket.clone();

    let app = tauri::Builder::default()
        // First, so a second launch is caught before anything else starts.
        // A warren:// link clicked while the app runs arrives here too.
        .plugin(tauri_plugin_single_instance::init(|app, argv, _cwd| {
            tracing::info!("second launch: showing the window");
            tray::show_main(app);
            if let Some(link) = browser_signin::link_in_args(&argv) {
                browser_signin::handle_link(app, link);
            }
        }))
        // Registers the warren:// scheme's handler for links the OS
        // delivers other than as arguments (macOS; see setup below).
        .plugin(tauri_plugin_deep_link::init())
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            None,
        ))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_dialog::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        .manage(state)
        .invoke_handler(commands::handler())
        .setup(move |app| {
            let handle = app.handle().clone();
            if let Err(e) = tray::create(&handle, &hub) {
                // Desktops without a tray still get the window.
                tracing::warn!(error = %e, "no tray icon");
            }
            tauri::async_runtime::spawn(link::run(hub.clone(), socket));
            tauri::async_runtime::spawn(tray::follow(handle.clone(), hub, minimized));
            if !minimized {
                tray::show_main(&handle);
            }
            if let Some(link) = &start_link {
                browser_signin::handle_link(&handle, link);
            }
            // macOS delivers a clicked warren:// link as an Apple Event to
            // the running app (launching it first if need be), never as an
            // argument; the deep-link plugin turns that into on_open_url.
            // Linux and Windows keep the argument path above and in the
            // single-instance callback: the plugin would emit on_open_url
            // for those too, so listening there would take a link twice.
            // The scheme is never registered at run time (no `register()`):
            // the installers do it (installer/linux's .desktop file, the
            // MSI's registry key, the app bundle's CFBundleURLTypes), and on
            // Linux run-time registration would write into ~/.local.
            #[cfg(target_os = "macos")]
            {
                use tauri_plugin_deep_link::DeepLinkExt;
                let opened = handle.clone();
                handle.deep_link().on_open_url(move |event| {
                    let urls = event.urls();
                    if let Some(link) = browser_signin::link_in_urls(&urls) {
                        // The link's text is not logged: it may carry a secret.
                        tracing::info!("opened with a warren:// link: showing the window");
                        tray::show_main(&opened);
                        browser_signin::handle_link(&opened, link);
                    }
                });
            }
            Ok(())
        })
        .on_window_event(|window, event| {
            // Closing the window keeps Warren in the tray; Quit is in its menu.
            if let WindowEvent::CloseRequested { api, .. } = event {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .build(tauri::generate_context!())
        .context("can't start the Warren window (is a graphical session available?)")?;
    app.run(|app, event| {
        if let RunEvent::ExitRequested { api, code, .. } = event {
            // Only Quit (an explicit code) ends the app, not a closed window.
            if code.is_none() && app.get_webview_window("main").is_some() {
                api.prevent_exit();
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_takes_warren_links_and_refuses_other_arguments() {
        let args = Args::try_parse_from(["warren-desktop", "warren://open"]).unwrap();
        assert_eq!(args.link.as_deref(), Some("warren://open"));
        assert!(Args::try_parse_from(["warren-desktop", "WARREN://x"]).is_ok());
        let args = Args::try_parse_from(["warren-desktop", "--minimized"]).unwrap();
        assert!(args.link.is_none() && args.minimized);
        for bad in ["https://example.com", "warren", "/tmp/file", "warrenx://a"] {
            let err = Args::try_parse_from(["warren-desktop", bad]).unwrap_err();
            assert!(
                err.to_string().contains("only warren:// links"),
                "{bad}: {err}"
            );
        }
    }
}
