//! The tray icon: one look per state, a menu to connect, disconnect,
//! reconnect, copy a workspace's name, open the window or quit, and the
//! notifications for connected, an unexpected drop and sign-in required.
//! It also hands a restarted helper the session back (see
//! [`status::HelperWatch`]).
//! It follows the hub's change signal, so it costs nothing between changes.

use crate::commands::{self, AppState};
use crate::hub::{Hub, View};
use crate::platform;
use crate::status::{self, TrayState};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tauri::image::Image;
use tauri::menu::{IsMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, Wry};
use warren_proto::app::HelperLinkState;
use warren_proto::ipc::SessionState;

pub const TRAY_ID: &str = "warren";
/// The Workspaces submenu lists at most this many workspaces; the window
/// has the rest.
const MENU_WORKSPACES: usize = 25;
const COPY_PREFIX: &str = "copy:";

/// What the menu shows; the menu is rebuilt only when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuModel {
    pub summary: String,
    pub account: String,
    pub toggle: Option<&'static str>,
    pub reconnect: bool,
    /// Workspace name and its agents' copyable names.
    pub workspaces: Vec<(String, Vec<String>)>,
    pub more_workspaces: usize,
}

pub fn menu_model(view: &View) -> MenuModel {
    let session = view.session.as_ref();
    let helper_up = view.link.state == HelperLinkState::Connected;
    let state = session.map(|s| s.state);
    let toggle = match (helper_up, &view.account, state) {
        (true, Some(_), Some(SessionState::Disconnected | SessionState::Failed)) => Some("Connect"),
        (true, Some(_), Some(_)) => Some("Disconnect"),
        _ => None,
    };
    let workspaces = view
        .workspaces
        .iter()
        .take(MENU_WORKSPACES)
        .map(|(w, agents)| {
            let names = agents
                .iter()
                .filter_map(|a| a.primary_dns_name().map(str::to_string))
                .collect();
            (w.name.clone(), names)
        })
        .collect();
    MenuModel {
        summary: status::summary(&view.link, session),
        account: match &view.account {
            Some(a) => match &a.user {
                Some(user) => format!("{user} @ {}", a.url),
                None => a.url.clone(),
            },
            None => "Not signed in".into(),
        },
        toggle,
        reconnect: helper_up
            && matches!(
                state,
                Some(SessionState::Connected | SessionState::Reconnecting | SessionState::Failed)
            )
            && view.account.is_some(),
        workspaces,
        more_workspaces: view.workspaces.len().saturating_sub(MENU_WORKSPACES),
    }
}

fn build_menu(app: &AppHandle, model: &MenuModel) -> tauri::Result<Menu<Wry>> {
    let summary = MenuItem::with_id(app, "summary", &model.summary, false, None::<&str>)?;
    let account = MenuItem::with_id(app, "account", &model.account, false, None::<&str>)?;
    let toggle = MenuItem::with_id(
        app,
        "toggle",
        model.toggle.unwrap_or("Connect"),
        model.toggle.is_some(),
        None::<&str>,
    )?;
    let reconnect =
        MenuItem::with_id(app, "reconnect", "Reconnect", model.reconnect, None::<&str>)?;
    let mut ws_menus = Vec::new();
    for (name, names) in &model.workspaces {
        let items = names
            .iter()
            .map(|n| {
                MenuItem::with_id(
                    app,
                    format!("{COPY_PREFIX}{n}"),
                    format!("Copy {n}"),
                    true,
                    None::<&str>,
                )
            })
            .collect::<tauri::Result<Vec<_>>>()?;
        let refs: Vec<&dyn IsMenuItem<Wry>> =
            items.iter().map(|i| i as &dyn IsMenuItem<Wry>).collect();
        ws_menus.push(Submenu::with_items(app, name, !items.is_empty(), &refs)?);
    }
    let more = (model.more_workspaces > 0)
        .then(|| {
            MenuItem::with_id(
                app,
                "more",
                format!("{} more — open Warren", model.more_workspaces),
                true,
                None::<&str>,
            )
        })
        .transpose()?;
    let mut ws_refs: Vec<&dyn IsMenuItem<Wry>> =
        ws_menus.iter().map(|m| m as &dyn IsMenuItem<Wry>).collect();
    if let Some(more) = &more {
        ws_refs.push(more);
    }
    let workspaces = Submenu::with_items(app, "Workspaces", !ws_refs.is_empty(), &ws_refs)?;
    let open = MenuItem::with_id(app, "open", "Open Warren", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit Warren", true, None::<&str>)?;
    Menu::with_items(
        app,
        &[
            &summary,
            &account,
            &PredefinedMenuItem::separator(app)?,
            &toggle,
            &reconnect,
            &workspaces,
            &PredefinedMenuItem::separator(app)?,
            &open,
            &quit,
        ],
    )
}

/// Shows, unminimizes and focuses the main window.
pub fn show_main(app: &AppHandle) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
    }
}

fn on_menu(app: &AppHandle, id: &str) {
    if let Some(name) = id.strip_prefix(COPY_PREFIX) {
        if let Err(e) = platform::copy(app, name) {
            tracing::warn!(error = %e, "can't copy to the clipboard");
        }
        return;
    }
    match id {
        "open" | "more" => show_main(app),
        "quit" => app.exit(0),
        "toggle" | "reconnect" => {
            let app = app.clone();
            let id = id.to_string();
            tauri::async_runtime::spawn(async move {
                let state = app.state::<AppState>();
                let session = state.hub.session();
                let res = match id.as_str() {
                    "reconnect" => commands::reconnect_session(&state).await,
                    _ if session.is_some_and(|s| {
                        !matches!(s.state, SessionState::Disconnected | SessionState::Failed)
                    }) =>
                    {
                        commands::disconnect_session(&state).await
                    }
                    _ => commands::connect_session(&state).await,
                };
                if let Err(e) = res {
                    tracing::warn!(error = %e, "tray action failed");
                    platform::notify(&app, "Warren", &e.message);
                }
            });
        }
        _ => {}
    }
}

pub fn create(app: &AppHandle, hub: &Hub) -> tauri::Result<TrayIcon> {
    let view = hub.view();
    let model = menu_model(&view);
    let state = status::tray_state(&view.link, view.session.as_ref());
    TrayIconBuilder::with_id(TRAY_ID)
        .icon(Image::from_bytes(state.icon())?)
        .tooltip(&model.summary)
        .menu(&build_menu(app, &model)?)
        .show_menu_on_left_click(false)
        .on_menu_event(|app, event| on_menu(app, event.id().as_ref()))
        .on_tray_icon_event(|tray, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                show_main(tray.app_handle());
            }
        })
        .build(app)
}

/// Keeps the tray and the notifications in step with the hub, for the
/// app's whole life.
pub async fn follow(app: AppHandle, hub: Arc<Hub>, notify_sign_in: bool) {
    let mut changes = hub.watch();
    let mut last_model: Option<MenuModel> = None;
    let mut last_state: Option<TrayState> = None;
    let mut last_session = None;
    let mut link_was_up = false;
    let mut helper_watch = status::HelperWatch::default();
    if notify_sign_in && hub.account().is_none() {
        platform::notify(
            &app,
            "Sign in required",
            "Open Warren from the tray to sign in to your deployment.",
        );
    }
    loop {
        let view = hub.view();
        let state = app.state::<AppState>();
        let stop_expected = state.stop_expected.load(Ordering::SeqCst);
        let link_up = view.link.state == HelperLinkState::Connected;
        if !link_up {
            if link_was_up {
                helper_watch.lost(Instant::now(), last_session.as_ref(), stop_expected);
                // A new helper's fresh session is not a drop to report.
                last_session = None;
            }
            if let Some(n) = helper_watch.tick(Instant::now()) {
                platform::notify(&app, &n.title, &n.body);
            }
        } else if let Some(session) = &view.session {
            if helper_watch.found(session) && view.account.is_some() {
                tracing::info!("the helper came back without a session; connecting again");
                let app = app.clone();
                tauri::async_runtime::spawn(async move {
                    let state = app.state::<AppState>();
                    if let Err(e) = commands::connect_session(&state).await {
                        tracing::warn!(error = %e, "can't connect the restarted helper");
                        platform::notify(&app, "Warren", &e.message);
                    }
                });
            }
        }
        link_was_up = link_up;
        if let Some(n) = status::notice(last_session.as_ref(), view.session.as_ref(), stop_expected)
        {
            platform::notify(&app, &n.title, &n.body);
        }
        if view.session.is_some() {
            last_session = view.session.clone();
        }
        if let Some(tray) = app.tray_by_id(TRAY_ID) {
            let look = status::tray_state(&view.link, view.session.as_ref());
            if last_state != Some(look) {
                match Image::from_bytes(look.icon()) {
                    Ok(img) => {
                        let _ = tray.set_icon(Some(img));
                    }
                    Err(e) => tracing::warn!(error = %e, "bad tray icon"),
                }
                last_state = Some(look);
            }
            let model = menu_model(&view);
            if last_model.as_ref() != Some(&model) {
                let _ = tray.set_tooltip(Some(&model.summary));
                match build_menu(&app, &model) {
                    Ok(menu) => {
                        let _ = tray.set_menu(Some(menu));
                    }
                    Err(e) => tracing::warn!(error = %e, "can't build the tray menu"),
                }
                last_model = Some(model);
            }
        }
        let changed = match helper_watch.deadline() {
            Some(at) => {
                match tokio::time::timeout_at(at.into(), changes.changed()).await {
                    Ok(res) => res,
                    // The grace ran out: loop round to tell the person.
                    Err(_) => Ok(()),
                }
            }
            None => changes.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::app::{Account, HelperLink};
    use warren_proto::ipc::SessionInfo;
    use warren_proto::model::{Agent, Workspace};

    fn view(state: SessionState, n_workspaces: usize) -> View {
        let workspaces = (0..n_workspaces)
            .map(|i| {
                let w = Workspace {
                    id: format!("w{i}"),
                    name: format!("ws{i}"),
                    owner: "alice".into(),
                };
                let a = Agent {
                    id: format!("a{i}"),
                    name: "main".into(),
                    workspace_id: w.id.clone(),
                    public_key: None,
                    addresses: vec![],
                    endpoints: vec![],
                    dns_names: vec![format!("main.ws{i}.alice.warren")],
                    online: true,
                };
                (w, vec![a])
            })
            .collect();
        View {
            link: HelperLink {
                state: HelperLinkState::Connected,
                socket: "s".into(),
                message: None,
                helper_version: Some("0.1.0".into()),
                retry_in_ms: None,
            },
            account: Some(Account {
                url: "https://c.example".into(),
                user: Some("alice".into()),
            }),
            session: Some(SessionInfo {
                state,
                ..SessionInfo::disconnected()
            }),
            workspaces,
        }
    }

    #[test]
    fn menu_offers_what_can_be_done_now() {
        let m = menu_model(&view(SessionState::Disconnected, 2));
        assert_eq!(m.toggle, Some("Connect"));
        assert!(!m.reconnect);
        assert_eq!(m.account, "alice @ https://c.example");
        assert_eq!(
            m.workspaces,
            vec![
                ("ws0".to_string(), vec!["main.ws0.alice.warren".to_string()]),
                ("ws1".to_string(), vec!["main.ws1.alice.warren".to_string()]),
            ]
        );

        let m = menu_model(&view(SessionState::Connected, 30));
        assert_eq!(m.toggle, Some("Disconnect"));
        assert!(m.reconnect);
        assert_eq!(m.workspaces.len(), MENU_WORKSPACES);
        assert_eq!(m.more_workspaces, 5);

        let mut signed_out = view(SessionState::Disconnected, 0);
        signed_out.account = None;
        let m = menu_model(&signed_out);
        assert_eq!(m.toggle, None);
        assert_eq!(m.account, "Not signed in");

        let mut missing = view(SessionState::Connected, 1);
        missing.link.state = HelperLinkState::Missing;
        let m = menu_model(&missing);
        assert_eq!(m.toggle, None);
        assert!(!m.reconnect);
        assert_eq!(m.summary, "The Warren helper isn't running");
    }

    /// The menu offers the same name as `warren status` and the window:
    /// the shortest, whatever order the coordinator listed them in.
    #[test]
    fn menu_offers_each_agents_primary_dns_name() {
        let mut v = view(SessionState::Connected, 1);
        v.workspaces[0].1[0].dns_names = vec!["main.ws0.alice.warren".into(), "ws0.warren".into()];
        let m = menu_model(&v);
        assert_eq!(
            m.workspaces,
            vec![("ws0".to_string(), vec!["ws0.warren".to_string()])]
        );
    }
}
