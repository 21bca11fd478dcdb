//! The helper's OS network configuration: one TUN device, this device's tunnel
//! addresses and the deployment's prefixes routed into it — never a default
//! route — with every change journalled before it is made so that stop, crash
//! and reinstall all leave the machine as it was found (DESIGN principle 6).
//!
//! The OS-specific work sits behind [`Backend`] (`linux.rs`, `macos.rs`,
//! `windows.rs`); [`Configurator`] adds the journal discipline on top and is
//! what the helper uses through the [`NetConfig`] trait. At start the helper
//! calls [`recover`] to undo whatever a dead predecessor left.
//!
//! ```no_run
//! use warren_netcfg::{default_journal_path, platform_configurator, recover, NetConfig, NetPlan};
//!
//! # async fn run() -> warren_netcfg::Result<()> {
//! let journal = default_journal_path();
//! recover(&journal)?; // at helper start, before anything else
//! let mut net = platform_configurator(&journal)?;
//! let plan = NetPlan {
//!     addresses: vec![
//!         ("100.64.0.7".parse().unwrap(), 32),
//!         ("fd7a:115c:a1e0::7".parse().unwrap(), 128),
//!     ],
//!     routes: vec![
//!         ("100.64.0.0".parse().unwrap(), 10),
//!         ("fd7a:115c:a1e0::".parse().unwrap(), 48),
//!     ],
//!     ..NetPlan::default()
//! };
//! let tun = net.apply(&plan)?; // inside a tokio runtime: the device is async
//! // On Linux the TUN has offload on (IFF_VNET_HDR, TSO/USO): each read is a
//! // virtio-net header plus up to 64 KiB of TCP, split into packets with
//! // `tun.recv_multiple` (see `warren_io::TunReader`). Elsewhere `tun.recv`
//! // returns one packet.
//! # let _ = &tun;
//! net.teardown()?; // on `warren down` and on helper stop
//! # Ok(())
//! # }
//! ```
//!
//! Platform notes: on Linux the TUN is non-persistent, so the kernel removes
//! it with its addresses and routes when the helper dies; recovery then only
//! clears the journal (and removes a persistent TUN or routes if a journal
//! names them). macOS utun and Windows Wintun devices likewise live only as
//! long as the helper's handle; Windows routes use `store=active` and so
//! never outlive a reboot.

mod cmd;
pub mod dns;
mod error;
mod host;
mod journal;
mod plan;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(windows)]
mod windows;

pub use error::{NetError, Result};
pub use host::{host_networks, HostNetwork};
pub use journal::{default_journal_path, Change, Journal};
pub use plan::{NetPlan, DEFAULT_MTU, DEFAULT_TUN_NAME};

#[cfg(target_os = "linux")]
pub use linux::LinuxBackend as PlatformBackend;
#[cfg(target_os = "macos")]
pub use macos::MacBackend as PlatformBackend;
#[cfg(windows)]
pub use windows::WindowsBackend as PlatformBackend;

use std::path::Path;

/// The TUN device the data-plane driver reads and writes packets on.
pub type TunDevice = tun_rs::AsyncDevice;

/// The per-OS primitives. Implementations make exactly one change per call
/// and never touch the journal; removals treat "already gone" as success.
pub trait Backend {
    /// What `create_tun` hands back (the real backends: [`TunDevice`]).
    type Tun;

    /// Creates the TUN device with the plan's name and MTU, up. Returns the
    /// device and the name the OS gave it (macOS picks `utunN` itself).
    fn create_tun(&mut self, plan: &NetPlan) -> Result<(Self::Tun, String)>;

    /// Whether a TUN created by this backend outlives its file descriptor.
    fn tun_is_persistent(&self) -> bool {
        false
    }

    /// Adds `addr/prefix` to `ifname`.
    fn add_address(&mut self, ifname: &str, addr: std::net::IpAddr, prefix: u8) -> Result<()>;

    /// Routes `dest/prefix` into `ifname`.
    fn add_route(&mut self, ifname: &str, dest: std::net::IpAddr, prefix: u8) -> Result<()>;

    /// Undoes one change; succeeds if it is already gone.
    fn undo(&mut self, change: &Change) -> Result<()>;
}

/// Applying and removing Warren's network configuration.
pub trait NetConfig {
    /// What the data plane gets to read and write packets on.
    type Tun;

    /// Creates the TUN, adds the addresses and routes. On failure whatever was
    /// done is undone (or left in the journal if even that fails).
    fn apply(&mut self, plan: &NetPlan) -> Result<Self::Tun>;

    /// Undoes everything in the journal, newest first. Entries that can't be
    /// undone stay journalled and the error says how many.
    fn teardown(&mut self) -> Result<()>;
}

/// A [`Backend`] plus the journal discipline.
#[derive(Debug)]
pub struct Configurator<B: Backend> {
    backend: B,
    journal: Journal,
}

impl<B: Backend> Configurator<B> {
    /// Uses `backend`, journalling at `journal_path`. Call [`recover`] (or
    /// [`Configurator::teardown`]) first if the journal may hold leftovers:
    /// `apply` refuses to start on a non-empty journal.
    pub fn new(backend: B, journal_path: impl AsRef<Path>) -> Result<Self> {
        Ok(Configurator {
            backend,
            journal: Journal::open(journal_path.as_ref())?,
        })
    }

    /// The journal (for status and tests).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The backend (for tests).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn apply_steps(&mut self, plan: &NetPlan) -> Result<B::Tun> {
        let planned = Change::Tun {
            name: plan.tun_name.clone(),
            persistent: self.backend.tun_is_persistent(),
        };
        self.journal.record(planned.clone())?;
        let (tun, ifname) = match self.backend.create_tun(plan) {
            Ok(created) => created,
            Err(e) => {
                // A failed creation leaves no device behind, and undoing the
                // entry could hit a foreign interface of the same name.
                if let Err(forget) = self.journal.forget(&planned) {
                    tracing::warn!(error = %forget, "couldn't drop the TUN entry from the journal");
                }
                return Err(e);
            }
        };
        if ifname != plan.tun_name {
            self.journal.replace(
                &planned,
                Change::Tun {
                    name: ifname.clone(),
                    persistent: self.backend.tun_is_persistent(),
                },
            )?;
        }
        tracing::info!(tun = %ifname, mtu = plan.mtu, "created TUN device");
        // From here on a failure drops `tun`, which for a non-persistent
        // device removes it; the rollback in `apply` handles the rest.
        for &(addr, prefix) in &plan.addresses {
            self.journal.record(Change::Address {
                ifname: ifname.clone(),
                addr,
                prefix,
            })?;
            self.backend.add_address(&ifname, addr, prefix)?;
            tracing::info!(tun = %ifname, %addr, prefix, "added tunnel address");
        }
        for &(dest, prefix) in &plan.routes {
            self.journal.record(Change::Route {
                ifname: ifname.clone(),
                dest,
                prefix,
            })?;
            self.backend.add_route(&ifname, dest, prefix)?;
            tracing::info!(tun = %ifname, %dest, prefix, "added route");
        }
        if let Some(dns) = &plan.dns {
            let state_dir = self
                .journal
                .path()
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            if let Some(change) = dns.change(&ifname, &state_dir) {
                self.journal.record(change.clone())?;
                dns::apply(&change, dns)?;
            }
        }
        Ok(tun)
    }

    fn undo_all(&mut self) -> Result<()> {
        let mut first: Option<NetError> = None;
        let pending: Vec<Change> = self.journal.changes().iter().rev().cloned().collect();
        for change in pending {
            let undone = if change.is_dns() {
                dns::undo(&change)
            } else {
                self.backend.undo(&change)
            };
            match undone {
                Ok(()) => {
                    tracing::info!(%change, "undid network change");
                    if let Err(e) = self.journal.forget(&change) {
                        first.get_or_insert(e);
                    }
                }
                Err(e) => {
                    tracing::warn!(%change, error = %e, "couldn't undo network change; it stays journalled");
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(NetError::Incomplete {
                remaining: self.journal.changes().len(),
                first: Box::new(e),
            }),
        }
    }
}

impl<B: Backend> NetConfig for Configurator<B> {
    type Tun = B::Tun;

    fn apply(&mut self, plan: &NetPlan) -> Result<B::Tun> {
        plan.validate()?;
        if !self.journal.is_empty() {
            return Err(NetError::AlreadyApplied);
        }
        match self.apply_steps(plan) {
            Ok(tun) => Ok(tun),
            Err(e) => {
                tracing::warn!(error = %e, "applying the network plan failed; undoing what was done");
                if let Err(undo) = self.undo_all() {
                    tracing::warn!(error = %undo, "rollback incomplete; the next start will retry");
                }
                Err(e)
            }
        }
    }

    fn teardown(&mut self) -> Result<()> {
        self.undo_all()
    }
}

/// Undoes, with `backend`, whatever the journal at `journal_path` lists, then
/// clears it. Run at helper start: a previous helper that died (`kill -9`,
/// power loss) left its changes there.
pub fn recover_with<B: Backend>(backend: B, journal_path: impl AsRef<Path>) -> Result<()> {
    let mut c = Configurator::new(backend, journal_path)?;
    if c.journal.is_empty() {
        return Ok(());
    }
    tracing::info!(
        journal = %c.journal.path().display(),
        changes = c.journal.changes().len(),
        "undoing network changes left by a previous helper"
    );
    c.undo_all()
}

/// [`recover_with`] the OS's own backend.
pub fn recover(journal_path: impl AsRef<Path>) -> Result<()> {
    recover_with(PlatformBackend::new(), journal_path)
}

/// The OS's own configurator, journalling at `journal_path`.
pub fn platform_configurator(
    journal_path: impl AsRef<Path>,
) -> Result<Configurator<PlatformBackend>> {
    Configurator::new(PlatformBackend::new(), journal_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::path::PathBuf;

    /// Fake OS: keeps the "system" state in memory, can fail a chosen call,
    /// and snapshots the on-disk journal at every change it is asked to make.
    #[derive(Debug, Default)]
    struct FakeOs {
        journal_path: PathBuf,
        live: Vec<Change>,
        calls: usize,
        fail_on_call: Option<usize>,
        fail_undo: bool,
        journal_at_change: Vec<(Change, Vec<Change>)>,
    }

    impl FakeOs {
        fn make(&mut self, change: Change) -> Result<()> {
            self.calls += 1;
            let on_disk = Journal::open(&self.journal_path)
                .unwrap()
                .changes()
                .to_vec();
            self.journal_at_change.push((change.clone(), on_disk));
            if self.fail_on_call == Some(self.calls) {
                return Err(NetError::os(
                    format!("making {change}"),
                    std::io::Error::other("injected failure"),
                ));
            }
            self.live.push(change);
            Ok(())
        }
    }

    impl Backend for &mut FakeOs {
        type Tun = String;
        fn create_tun(&mut self, plan: &NetPlan) -> Result<(String, String)> {
            self.make(Change::Tun {
                name: plan.tun_name.clone(),
                persistent: false,
            })?;
            Ok((plan.tun_name.clone(), plan.tun_name.clone()))
        }
        fn add_address(&mut self, ifname: &str, addr: IpAddr, prefix: u8) -> Result<()> {
            self.make(Change::Address {
                ifname: ifname.into(),
                addr,
                prefix,
            })
        }
        fn add_route(&mut self, ifname: &str, dest: IpAddr, prefix: u8) -> Result<()> {
            self.make(Change::Route {
                ifname: ifname.into(),
                dest,
                prefix,
            })
        }
        fn undo(&mut self, change: &Change) -> Result<()> {
            if self.fail_undo {
                return Err(NetError::os(
                    "undo",
                    std::io::Error::other("injected undo failure"),
                ));
            }
            self.live.retain(|c| c != change);
            Ok(())
        }
    }

    fn plan() -> NetPlan {
        crate::plan::sample_plan()
    }

    fn fake(dir: &Path) -> FakeOs {
        FakeOs {
            journal_path: dir.join("netstate.json"),
            ..FakeOs::default()
        }
    }

    #[test]
    fn every_change_is_journalled_before_it_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let mut os = fake(dir.path());
        let path = os.journal_path.clone();
        let mut c = Configurator::new(&mut os, &path).unwrap();
        let tun = c.apply(&plan()).unwrap();
        assert_eq!(tun, "warren0");
        assert_eq!(c.journal().changes().len(), 5);
        drop(c);
        assert_eq!(os.journal_at_change.len(), 5);
        for (change, on_disk) in &os.journal_at_change {
            assert!(
                on_disk.contains(change),
                "{change} was made before the journal on disk named it: {on_disk:?}"
            );
        }
        assert_eq!(os.live.len(), 5);

        let mut c = Configurator::new(&mut os, &path).unwrap();
        c.teardown().unwrap();
        assert!(c.journal().is_empty());
        drop(c);
        assert!(os.live.is_empty(), "teardown left {:?}", os.live);
        assert!(!path.exists());
    }

    #[test]
    fn split_dns_is_journalled_and_restored_on_teardown_and_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        let original = "nameserver 10.0.0.53\nsearch corp.example\n";
        std::fs::write(&resolv, original).unwrap();
        let mut with_dns = plan();
        with_dns.dns = Some(dns::DnsPlan {
            suffix: "warren".into(),
            servers: vec!["100.64.0.7".parse().unwrap()],
            mode: dns::DnsMode::ResolvConf,
            resolv_conf: resolv.clone(),
        });
        let mut os = fake(dir.path());
        let path = os.journal_path.clone();

        let mut c = Configurator::new(&mut os, &path).unwrap();
        c.apply(&with_dns).unwrap();
        assert!(c
            .journal()
            .changes()
            .iter()
            .any(|ch| matches!(ch, Change::ResolvConf { .. })));
        let during = std::fs::read_to_string(&resolv).unwrap();
        assert!(during.contains("nameserver 100.64.0.7"), "{during}");
        c.teardown().unwrap();
        assert_eq!(std::fs::read_to_string(&resolv).unwrap(), original);
        drop(c);

        // A helper that dies while connected: the next start restores it.
        let mut c = Configurator::new(&mut os, &path).unwrap();
        c.apply(&with_dns).unwrap();
        drop(c);
        assert_ne!(std::fs::read_to_string(&resolv).unwrap(), original);
        recover_with(&mut os, &path).unwrap();
        assert_eq!(std::fs::read_to_string(&resolv).unwrap(), original);
        assert!(!path.exists(), "the journal outlived the recovery");
    }

    #[test]
    fn failure_mid_apply_leaves_the_journal_naming_what_was_done() {
        let dir = tempfile::tempdir().unwrap();
        let mut os = fake(dir.path());
        let path = os.journal_path.clone();
        // Call 4 is the first route; the rollback's undo fails too, as if the
        // helper had died at that point.
        os.fail_on_call = Some(4);
        os.fail_undo = true;
        let mut c = Configurator::new(&mut os, &path).unwrap();
        let err = c.apply(&plan()).unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        drop(c);

        let on_disk = Journal::open(&path).unwrap().changes().to_vec();
        // Everything made (TUN, two addresses) and the route being attempted.
        for made in &os.live {
            assert!(on_disk.contains(made), "journal misses {made}: {on_disk:?}");
        }
        assert_eq!(os.live.len(), 3);
        assert_eq!(on_disk.len(), 4);
        assert!(matches!(on_disk[3], Change::Route { prefix: 10, .. }));
        // The second route was never attempted and so is not journalled.
        assert!(!on_disk
            .iter()
            .any(|c| matches!(c, Change::Route { prefix: 48, .. })));

        // The next start recovers everything.
        os.fail_undo = false;
        recover_with(&mut os, &path).unwrap();
        assert!(os.live.is_empty(), "recover left {:?}", os.live);
        assert!(Journal::open(&path).unwrap().is_empty());
    }

    #[test]
    fn failure_mid_apply_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut os = fake(dir.path());
        let path = os.journal_path.clone();
        os.fail_on_call = Some(5);
        let mut c = Configurator::new(&mut os, &path).unwrap();
        assert!(c.apply(&plan()).is_err());
        assert!(c.journal().is_empty());
        drop(c);
        assert!(os.live.is_empty(), "rollback left {:?}", os.live);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_default_route_before_touching_anything() {
        let dir = tempfile::tempdir().unwrap();
        let mut os = fake(dir.path());
        let path = os.journal_path.clone();
        let mut p = plan();
        p.routes.push(("::".parse().unwrap(), 0));
        let mut c = Configurator::new(&mut os, &path).unwrap();
        assert!(matches!(c.apply(&p), Err(NetError::DefaultRoute(_))));
        drop(c);
        assert_eq!(os.calls, 0);
        assert!(!path.exists());
    }

    #[test]
    fn apply_refuses_leftovers_and_teardown_keeps_what_it_cannot_undo() {
        let dir = tempfile::tempdir().unwrap();
        let mut os = fake(dir.path());
        let path = os.journal_path.clone();
        let mut c = Configurator::new(&mut os, &path).unwrap();
        c.apply(&plan()).unwrap();
        assert!(matches!(c.apply(&plan()), Err(NetError::AlreadyApplied)));
        drop(c);
        os.fail_undo = true;
        let mut c = Configurator::new(&mut os, &path).unwrap();
        let err = c.teardown().unwrap_err();
        assert!(
            matches!(err, NetError::Incomplete { remaining: 5, .. }),
            "{err}"
        );
        assert_eq!(Journal::open(&path).unwrap().changes().len(), 5);
    }
}
