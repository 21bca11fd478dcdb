//! `warrend` as a Windows service: `warrend --service` under the service
//! control manager (SCM), and `warrend install-service` /
//! `uninstall-service` to register it.
//!
//! The SCM starts `warrend.exe --service` as LocalSystem at boot. Its stop
//! and shutdown requests end `run`'s shutdown future, so the helper undoes
//! its journal of network changes before it reports Stopped. The decisions
//! (what a control request does, which status to report next, how the
//! service is registered) are pure functions so their tests run without an
//! SCM; the rest is the thin glue to the `windows-service` crate.

use anyhow::{Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use ::windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use ::windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use ::windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use ::windows_service::{define_windows_service, service_dispatcher};

/// The name `sc`, the MSI and the CLI's hints use.
pub const SERVICE_NAME: &str = "warrend";
const DISPLAY_NAME: &str = "Warren helper";
const DESCRIPTION: &str = "Keeps the Warren session with the coordinator and the WireGuard tunnel; the Warren app and CLI talk to it.";
const SERVICE_TYPE: ServiceType = ServiceType::OWN_PROCESS;

/// Start-up undoes a crashed run's network changes before the pipe
/// listens; stopping undoes this run's. Both are quick, but the SCM kills
/// a service that says nothing for longer than its hint.
const PENDING_WAIT_HINT: Duration = Duration::from_secs(30);
/// How long `uninstall-service` waits for the helper to stop before it
/// deletes the service anyway (the SCM then removes it once it exits).
const UNINSTALL_STOP_WAIT: Duration = Duration::from_secs(30);

/// How long the helper's leftover tasks get once `run` has returned.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_INVALID_LEVEL: i32 = 124;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_NOT_ACTIVE: i32 = 1062;
const ERROR_SERVICE_EXISTS: i32 = 1073;
const ADMIN_HINT: &str =
    "managing the warrend service needs an administrator: run this in an administrator prompt";

/// What the service does with a control request from the SCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    /// Stop or shutdown: report StopPending and end `run`'s shutdown future.
    Shutdown,
    /// Interrogate: nothing to do; the SCM keeps the last reported status.
    Acknowledge,
    /// Anything we did not ask for in `controls_accepted`.
    NotImplemented,
}

impl ControlAction {
    /// What the control handler returns to the SCM.
    pub fn handler_result(self) -> ServiceControlHandlerResult {
        match self {
            ControlAction::Shutdown | ControlAction::Acknowledge => {
                ServiceControlHandlerResult::NoError
            }
            ControlAction::NotImplemented => ServiceControlHandlerResult::NotImplemented,
        }
    }
}

pub fn control_action(control: ServiceControl) -> ControlAction {
    match control {
        // Preshutdown is not in `controls_accepted`, but treating it as a
        // shutdown is the only sensible reading should it ever come.
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            ControlAction::Shutdown
        }
        ServiceControl::Interrogate => ControlAction::Acknowledge,
        _ => ControlAction::NotImplemented,
    }
}

/// The status to report for `state`. Only a running service takes stop
/// and shutdown requests: while starting, the SCM queues them; once
/// stopping, a second one would mean nothing.
pub fn status(state: ServiceState, exit_code: ServiceExitCode, checkpoint: u32) -> ServiceStatus {
    let pending = matches!(
        state,
        ServiceState::StartPending | ServiceState::StopPending
    );
    ServiceStatus {
        service_type: SERVICE_TYPE,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code,
        checkpoint: if pending { checkpoint } else { 0 },
        wait_hint: if pending {
            PENDING_WAIT_HINT
        } else {
            Duration::ZERO
        },
        process_id: None,
    }
}

/// The exit code the SCM records (`sc query warrend` shows it): a failed
/// run is a service-specific error, which with failure actions on
/// non-crash failures makes the SCM restart the helper.
pub fn exit_code(result: &Result<()>) -> ServiceExitCode {
    match result {
        Ok(()) => ServiceExitCode::NO_ERROR,
        Err(_) => ServiceExitCode::ServiceSpecific(1),
    }
}

/// The service's states in order: StartPending, Running, StopPending,
/// Stopped. The pipe may start listening just as a stop request arrives,
/// so a late "running" must not undo "stopping", and nothing follows
/// Stopped.
#[derive(Debug)]
pub struct Progress {
    current: Option<ServiceState>,
    checkpoint: u32,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            current: None,
            checkpoint: 0,
        }
    }

    /// The status to report on moving to `state`, or `None` if that would
    /// go backwards. Repeating a pending state is progress: its checkpoint
    /// goes up.
    pub fn advance(&mut self, state: ServiceState, exit: ServiceExitCode) -> Option<ServiceStatus> {
        let rank = |s: ServiceState| match s {
            ServiceState::StartPending => 0,
            ServiceState::Running => 1,
            ServiceState::StopPending => 2,
            _ => 3,
        };
        match self.current {
            Some(ServiceState::Stopped) => return None,
            Some(current) if rank(state) < rank(current) => return None,
            Some(current) if current == state => {
                if matches!(
                    state,
                    ServiceState::StartPending | ServiceState::StopPending
                ) {
                    self.checkpoint += 1;
                } else {
                    return None;
                }
            }
            _ => {
                self.current = Some(state);
                self.checkpoint = 1;
            }
        }
        Some(status(state, exit, self.checkpoint))
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// How the SCM starts the helper: `warrend.exe --service` plus `extra`.
pub fn service_info(executable: PathBuf, extra: &[OsString]) -> ServiceInfo {
    let mut launch_arguments = vec![OsString::from("--service")];
    launch_arguments.extend(extra.iter().cloned());
    ServiceInfo {
        name: OsString::from(SERVICE_NAME),
        display_name: OsString::from(DISPLAY_NAME),
        service_type: SERVICE_TYPE,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: executable,
        launch_arguments,
        dependencies: vec![],
        // None is LocalSystem: the helper creates adapters, routes and NRPT
        // rules, which need it.
        account_name: None,
        account_password: None,
    }
}

/// Restart after 5 s, three times; a day without failures starts the count
/// again. Together with failure actions on non-crash failures this covers
/// both a crash and `run` returning an error.
pub fn failure_actions() -> ServiceFailureActions {
    let restart = ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(5),
    };
    ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 60 * 60)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart.clone(), restart.clone(), restart]),
    }
}

fn os_error(e: &::windows_service::Error) -> Option<i32> {
    match e {
        ::windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}

/// An SCM error with what to do next: most often the prompt is not an
/// administrator's.
fn scm_error(e: ::windows_service::Error, doing: &str) -> anyhow::Error {
    if os_error(&e) == Some(ERROR_ACCESS_DENIED) {
        anyhow::anyhow!("{doing}: access denied; {ADMIN_HINT}")
    } else {
        anyhow::Error::new(e).context(format!(
            "{doing} (if this is not an administrator prompt, {ADMIN_HINT})"
        ))
    }
}

/// `warrend install-service [-- ARGS]`: registers (or updates) the service
/// to start `warrend --service ARGS` at boot as LocalSystem, restarting
/// on failure. The MSI creates the service itself and runs this afterwards
/// for the failure actions, which its tool can't set; so an existing
/// service is updated in place, not an error. It does not start the
/// service (the MSI starts it after this).
pub fn install(extra: &[OsString]) -> Result<()> {
    let executable = std::env::current_exe()
        .context("can't tell where warrend.exe is; run it by its full path")?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| scm_error(e, "can't open the service control manager"))?;
    let info = service_info(executable, extra);
    let access = ServiceAccess::QUERY_CONFIG | ServiceAccess::CHANGE_CONFIG;
    let service = match manager.create_service(&info, access) {
        Ok(service) => service,
        Err(e) if os_error(&e) == Some(ERROR_SERVICE_EXISTS) => {
            let service = manager
                .open_service(SERVICE_NAME, access)
                .map_err(|e| scm_error(e, "can't open the existing warrend service"))?;
            service
                .change_config(&info)
                .map_err(|e| scm_error(e, "can't update the warrend service"))?;
            service
        }
        Err(e) => return Err(scm_error(e, "can't create the warrend service")),
    };
    service
        .set_description(DESCRIPTION)
        .map_err(|e| scm_error(e, "can't set the service's description"))?;
    let restart = service
        .update_failure_actions(failure_actions())
        .and_then(|()| service.set_failure_actions_on_non_crash_failures(true));
    let restarts = match restart {
        Ok(()) => "restarts on failure",
        // Windows has both since Vista; Wine's service manager answers
        // "invalid level". The service works without them, so say so
        // rather than fail the install.
        Err(e) if os_error(&e) == Some(ERROR_INVALID_LEVEL) => {
            eprintln!(
                "warrend: warning: this service manager can't restart a failed service ({:#}); the service is installed without restart on failure",
                anyhow::Error::new(e)
            );
            "no restart on failure"
        }
        Err(e) => {
            return Err(scm_error(
                e,
                "can't set the service's restart-on-failure actions",
            ))
        }
    };
    let data_dir = data_dir();
    secure_data_dir(&data_dir)?;
    println!(
        "The {SERVICE_NAME} service is installed (automatic start as LocalSystem, {restarts}): {}",
        command_line(&info)
    );
    println!("Start it now with `sc start {SERVICE_NAME}` (it also starts at every boot).");
    Ok(())
}

/// `%ProgramData%\Warren`: logs, the journal and policy.toml.
fn data_dir() -> PathBuf {
    warren_ipc::platform::helper_policy_path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData\Warren"))
}

/// `icacls` runs that make `dir` writable by SYSTEM and administrators only
/// (users may read the logs). ProgramData lets every user create files, so
/// without this anyone could drop a policy.toml the helper trusts; the owner
/// is reset too, as an owner can always change the access list, and a user
/// may have made the folder before Warren was installed. wixl has no
/// LockPermissions, so the MSI relies on this (its custom action runs
/// install-service before the service starts).
pub fn data_dir_acl_commands(dir: &Path) -> Vec<Vec<OsString>> {
    let dir = dir.as_os_str().to_os_string();
    vec![
        vec![
            dir.clone(),
            "/setowner".into(),
            "*S-1-5-32-544".into(),
            "/T".into(),
            "/C".into(),
            "/Q".into(),
        ],
        vec![
            dir,
            "/inheritance:r".into(),
            "/grant:r".into(),
            "*S-1-5-18:(OI)(CI)F".into(),
            "*S-1-5-32-544:(OI)(CI)F".into(),
            "*S-1-5-32-545:(OI)(CI)RX".into(),
            "/T".into(),
            "/C".into(),
            "/Q".into(),
        ],
    ]
}

fn secure_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("can't create {}; {ADMIN_HINT}", dir.display()))?;
    // By full path: a PATH entry must not stand in for it.
    let icacls = std::env::var_os("SystemRoot")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\Windows"))
        .join(r"System32\icacls.exe");
    for args in data_dir_acl_commands(dir) {
        let status = std::process::Command::new(&icacls)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("can't run {}", icacls.display()))?;
        if !status.success() {
            anyhow::bail!(
                "icacls could not restrict {} to administrators ({status}); {ADMIN_HINT}",
                dir.display()
            );
        }
    }
    Ok(())
}

fn command_line(info: &ServiceInfo) -> String {
    let mut line = format!("\"{}\"", info.executable_path.display());
    for arg in &info.launch_arguments {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// `warrend uninstall-service`: stops the helper (it undoes its network
/// changes), waits for it a bounded time, and deletes the service.
pub fn uninstall() -> Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| scm_error(e, "can't open the service control manager"))?;
    let service = match manager.open_service(
        SERVICE_NAME,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    ) {
        Ok(service) => service,
        Err(e) if os_error(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
            println!("The {SERVICE_NAME} service is not installed; nothing to do.");
            return Ok(());
        }
        Err(e) => return Err(scm_error(e, "can't open the warrend service")),
    };
    let state = service
        .query_status()
        .map_err(|e| scm_error(e, "can't query the warrend service"))?
        .current_state;
    if state != ServiceState::Stopped {
        match service.stop() {
            Ok(_) => {}
            Err(e) if os_error(&e) == Some(ERROR_SERVICE_NOT_ACTIVE) => {}
            Err(e) => return Err(scm_error(e, "can't stop the warrend service")),
        }
        let deadline = Instant::now() + UNINSTALL_STOP_WAIT;
        loop {
            let state = service
                .query_status()
                .map_err(|e| scm_error(e, "can't query the warrend service"))?
                .current_state;
            if state == ServiceState::Stopped {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "warrend: warning: the service did not stop within {} s; deleting it anyway (Windows removes it once it exits)",
                    UNINSTALL_STOP_WAIT.as_secs()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    service
        .delete()
        .map_err(|e| scm_error(e, "can't delete the warrend service"))?;
    println!("The {SERVICE_NAME} service is removed.");
    Ok(())
}

/// The arguments `main` parsed, for `service_main`, which the SCM calls
/// with only its own start parameters.
static ARGS: Mutex<Option<crate::Args>> = Mutex::new(None);
/// Set once the control handler is registered; `ready` reports through it.
static REPORTER: OnceLock<Reporter> = OnceLock::new();

struct Reporter {
    handle: ServiceStatusHandle,
    progress: Mutex<Progress>,
}

impl Reporter {
    fn report(&self, state: ServiceState, exit: ServiceExitCode) {
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(status) = progress.advance(state, exit) {
            if let Err(e) = self.handle.set_service_status(status) {
                tracing::warn!(error = %e, ?state, "could not report the service status");
            }
        }
    }
}

fn report(state: ServiceState, exit: ServiceExitCode) {
    if let Some(reporter) = REPORTER.get() {
        reporter.report(state, exit);
    }
}

/// The pipe listens: the service is running. Does nothing outside the SCM.
pub fn ready() {
    report(ServiceState::Running, ServiceExitCode::NO_ERROR);
}

/// `warrend --service`: hands the process to the SCM's dispatcher, which
/// calls `service_main` on its own thread and returns once the service
/// has stopped.
pub fn run_dispatcher(args: crate::Args) -> Result<()> {
    *ARGS.lock().unwrap_or_else(PoisonError::into_inner) = Some(args);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
        "`warrend --service` must be started by the service control manager (`sc start warrend`); to run the helper in this prompt, leave out --service",
    )
}

define_windows_service!(ffi_service_main, service_main);

fn service_main(_scm_arguments: Vec<OsString>) {
    let Some(args) = ARGS.lock().unwrap_or_else(PoisonError::into_inner).take() else {
        return;
    };
    let log_dir = args.log_dir.clone();
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let on_stop = shutdown.clone();
    let handler = move |control| {
        let action = control_action(control);
        if action == ControlAction::Shutdown {
            report(ServiceState::StopPending, ServiceExitCode::NO_ERROR);
            // notify_one keeps the wake-up if `run` is not waiting yet.
            on_stop.notify_one();
        }
        action.handler_result()
    };
    let handle = match service_control_handler::register(SERVICE_NAME, handler) {
        Ok(handle) => handle,
        Err(e) => {
            record_failure(&log_dir, &format!("could not register with the SCM: {e}"));
            return;
        }
    };
    let _ = REPORTER.set(Reporter {
        handle,
        progress: Mutex::new(Progress::new()),
    });
    report(ServiceState::StartPending, ServiceExitCode::NO_ERROR);

    let result = tokio::runtime::Runtime::new()
        .context("can't start the async runtime")
        .and_then(|runtime| {
            let result =
                runtime.block_on(crate::run(args, async move { shutdown.notified().await }));
            // The SCM may end the process as soon as it hears Stopped, and a
            // runtime's drop waits for blocking tasks without limit: shut it
            // down first, bounded.
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
            result
        });
    if let Err(e) = &result {
        record_failure(&log_dir, &format!("{e:#}"));
    }
    report(ServiceState::Stopped, exit_code(&result));
}

/// A service has no console, and `run`'s log file is closed by the time
/// it returns an error: keep the reason beside the logs.
fn record_failure(log_dir: &Path, message: &str) {
    tracing::error!(error = message, "the service stopped with an error");
    let _ = std::fs::create_dir_all(log_dir);
    let _ = std::fs::write(
        log_dir.join("service-error.txt"),
        format!("warrend --service stopped: {message}\n"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_and_shutdown_end_the_helper() {
        for control in [
            ServiceControl::Stop,
            ServiceControl::Shutdown,
            ServiceControl::Preshutdown,
        ] {
            let action = control_action(control);
            assert_eq!(action, ControlAction::Shutdown, "{control:?}");
            assert!(matches!(
                action.handler_result(),
                ServiceControlHandlerResult::NoError
            ));
        }
    }

    #[test]
    fn interrogate_is_acknowledged_and_others_are_not_implemented() {
        let action = control_action(ServiceControl::Interrogate);
        assert_eq!(action, ControlAction::Acknowledge);
        assert_eq!(action.handler_result().to_raw(), 0);
        for control in [
            ServiceControl::Pause,
            ServiceControl::Continue,
            ServiceControl::ParamChange,
            ServiceControl::TimeChange,
        ] {
            let action = control_action(control);
            assert_eq!(action, ControlAction::NotImplemented, "{control:?}");
            // ERROR_CALL_NOT_IMPLEMENTED
            assert_eq!(action.handler_result().to_raw(), 120);
        }
    }

    #[test]
    fn only_a_running_service_accepts_stop_and_shutdown() {
        let running = status(ServiceState::Running, ServiceExitCode::NO_ERROR, 7);
        assert_eq!(
            running.controls_accepted,
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        );
        assert_eq!(running.checkpoint, 0);
        assert_eq!(running.wait_hint, Duration::ZERO);
        assert_eq!(running.service_type, ServiceType::OWN_PROCESS);
        for state in [
            ServiceState::StartPending,
            ServiceState::StopPending,
            ServiceState::Stopped,
        ] {
            let s = status(state, ServiceExitCode::NO_ERROR, 3);
            assert!(s.controls_accepted.is_empty(), "{state:?}");
        }
        let pending = status(ServiceState::StopPending, ServiceExitCode::NO_ERROR, 3);
        assert_eq!(pending.checkpoint, 3);
        assert_eq!(pending.wait_hint, PENDING_WAIT_HINT);
    }

    #[test]
    fn the_exit_code_says_whether_run_failed() {
        assert_eq!(exit_code(&Ok(())), ServiceExitCode::Win32(0));
        assert_eq!(
            exit_code(&Err(anyhow::anyhow!("pipe in use"))),
            ServiceExitCode::ServiceSpecific(1)
        );
        let stopped = status(
            ServiceState::Stopped,
            exit_code(&Err(anyhow::anyhow!("x"))),
            0,
        );
        assert_eq!(stopped.exit_code, ServiceExitCode::ServiceSpecific(1));
    }

    #[test]
    fn progress_runs_start_running_stopping_stopped() {
        let ok = ServiceExitCode::NO_ERROR;
        let mut p = Progress::new();
        let s = p.advance(ServiceState::StartPending, ok).unwrap();
        assert_eq!(
            (s.current_state, s.checkpoint),
            (ServiceState::StartPending, 1)
        );
        let s = p.advance(ServiceState::StartPending, ok).unwrap();
        assert_eq!(s.checkpoint, 2, "a repeated pending state is progress");
        let s = p.advance(ServiceState::Running, ok).unwrap();
        assert_eq!(s.current_state, ServiceState::Running);
        assert!(p.advance(ServiceState::Running, ok).is_none());
        let s = p.advance(ServiceState::StopPending, ok).unwrap();
        assert_eq!(
            (s.current_state, s.checkpoint),
            (ServiceState::StopPending, 1)
        );
        let s = p.advance(ServiceState::StopPending, ok).unwrap();
        assert_eq!(s.checkpoint, 2);
        let s = p
            .advance(ServiceState::Stopped, ServiceExitCode::ServiceSpecific(1))
            .unwrap();
        assert_eq!(s.current_state, ServiceState::Stopped);
        assert_eq!(s.exit_code, ServiceExitCode::ServiceSpecific(1));
        assert!(p.advance(ServiceState::Stopped, ok).is_none());
        assert!(p.advance(ServiceState::Running, ok).is_none());
    }

    #[test]
    fn a_late_ready_does_not_undo_a_stop_request() {
        let ok = ServiceExitCode::NO_ERROR;
        let mut p = Progress::new();
        p.advance(ServiceState::StartPending, ok).unwrap();
        // Stop arrives before the pipe listens.
        p.advance(ServiceState::StopPending, ok).unwrap();
        assert!(p.advance(ServiceState::Running, ok).is_none());
        assert!(p.advance(ServiceState::StartPending, ok).is_none());
        // A start failure goes straight to Stopped.
        let mut p = Progress::new();
        p.advance(ServiceState::StartPending, ok).unwrap();
        let s = p.advance(ServiceState::Stopped, ok).unwrap();
        assert_eq!(s.current_state, ServiceState::Stopped);
    }

    #[test]
    fn the_service_starts_warrend_with_service_and_the_extra_arguments() {
        let exe = PathBuf::from(r"C:\Program Files\Warren\warrend.exe");
        let info = service_info(exe.clone(), &[OsString::from("--no-tunnel")]);
        assert_eq!(info.name, OsString::from("warrend"));
        assert_eq!(info.start_type, ServiceStartType::AutoStart);
        assert_eq!(info.service_type, ServiceType::OWN_PROCESS);
        assert!(info.account_name.is_none(), "LocalSystem");
        assert_eq!(info.executable_path, exe);
        assert_eq!(
            info.launch_arguments,
            vec![OsString::from("--service"), OsString::from("--no-tunnel")]
        );
        assert_eq!(
            command_line(&info),
            r#""C:\Program Files\Warren\warrend.exe" --service --no-tunnel"#
        );
        assert_eq!(service_info(exe, &[]).launch_arguments, vec!["--service"]);
    }

    #[test]
    fn the_data_folder_is_left_to_system_and_administrators() {
        let dir = Path::new(r"C:\ProgramData\Warren");
        let commands = data_dir_acl_commands(dir);
        let text: Vec<Vec<String>> = commands
            .iter()
            .map(|c| c.iter().map(|a| a.to_string_lossy().into_owned()).collect())
            .collect();
        assert_eq!(
            text[0][..3],
            [r"C:\ProgramData\Warren", "/setowner", "*S-1-5-32-544"]
        );
        let acl = &text[1];
        assert_eq!(acl[0], r"C:\ProgramData\Warren");
        assert!(acl.contains(&"/inheritance:r".to_string()), "{acl:?}");
        assert!(acl.contains(&"*S-1-5-18:(OI)(CI)F".to_string()));
        assert!(acl.contains(&"*S-1-5-32-544:(OI)(CI)F".to_string()));
        // Users read, never write.
        let users: Vec<&String> = acl
            .iter()
            .filter(|a| a.starts_with("*S-1-5-32-545"))
            .collect();
        assert_eq!(users, ["*S-1-5-32-545:(OI)(CI)RX"]);
        assert!(
            !acl.iter().any(|a| a.starts_with("*S-1-1-0")),
            "no Everyone"
        );
    }

    #[test]
    fn failures_restart_the_helper_three_times_and_the_count_resets_daily() {
        let actions = failure_actions();
        assert_eq!(
            actions.reset_period,
            ServiceFailureResetPeriod::After(Duration::from_secs(86_400))
        );
        assert!(actions.command.is_none() && actions.reboot_msg.is_none());
        let list = actions.actions.unwrap();
        assert_eq!(list.len(), 3);
        for action in list {
            assert_eq!(action.action_type, ServiceActionType::Restart);
            assert_eq!(action.delay, Duration::from_secs(5));
        }
    }

    #[test]
    fn access_denied_tells_to_use_an_administrator_prompt() {
        let denied = ::windows_service::Error::Winapi(std::io::Error::from_raw_os_error(5));
        let message = format!("{:#}", scm_error(denied, "can't open the SCM"));
        assert!(message.contains("administrator prompt"), "{message}");
        let other = ::windows_service::Error::Winapi(std::io::Error::from_raw_os_error(1073));
        assert_eq!(
            os_error(&other),
            Some(ERROR_SERVICE_EXISTS),
            "an existing service is recognised so install updates it"
        );
    }

    #[test]
    fn a_stop_request_reaches_runs_shutdown_future_even_before_it_waits() {
        // The handler's wake-up must not be lost if `run` is still starting.
        let notify = Arc::new(tokio::sync::Notify::new());
        notify.notify_one();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), notify.notified())
                .await
                .expect("the stop request was lost");
        });
    }
}
