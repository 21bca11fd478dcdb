//! A subscriber built on `warren-ipc`'s own `Client`, `Subscription` and
//! `StateMirror` (what the GUI uses), run on a background thread so blocking
//! test code can read its mirror at any moment.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use warren_ipc::{Client, StateMirror};
use warren_proto::ipc::Request;

#[derive(Default)]
struct Shared {
    mirror: StateMirror,
    /// Why the stream ended (error, gap, close); `None` while it runs.
    ended: Option<String>,
    events: u64,
}

pub struct MirrorWatcher {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Runs `f` on a fresh single-threaded tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(f)
}

/// Sends one request through `warren-ipc`'s client.
pub fn ipc_request(
    socket: &Path,
    request: Request,
) -> Result<warren_proto::ipc::Reply, warren_ipc::ClientError> {
    block_on(async {
        let mut c = Client::connect(socket, "warren-e2e").await?;
        c.request(request).await
    })
}

impl MirrorWatcher {
    /// Connects, subscribes (waits for the helper's `Ok`) and keeps applying
    /// events to a `StateMirror` until dropped.
    pub fn start(socket: &Path) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let socket = socket.to_path_buf();
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let sub = match Client::connect(&socket, "warren-e2e").await {
                    Ok(c) => c.subscribe().await,
                    Err(e) => Err(e),
                };
                let mut sub = match sub {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while !st.load(Ordering::Relaxed) {
                    let next = tokio::time::timeout(Duration::from_millis(100), sub.next()).await;
                    let ended = match next {
                        Err(_) => continue,
                        Ok(Ok(Some((seq, event)))) => {
                            let mut g = sh.lock().expect("mirror lock");
                            g.events += 1;
                            match g.mirror.apply(seq, &event) {
                                Ok(()) => continue,
                                Err(e) => format!("mirror error: {e}"),
                            }
                        }
                        Ok(Ok(None)) => "the helper closed the subscription".to_string(),
                        Ok(Err(e)) => format!("subscription error: {e}"),
                    };
                    sh.lock().expect("mirror lock").ended = Some(ended);
                    return;
                }
            })
        });
        match ready_rx.recv_timeout(Duration::from_secs(15)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("could not subscribe to the helper: {e}"),
            Err(_) => panic!("subscribing to the helper took over 15 s"),
        }
        MirrorWatcher {
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// A copy of the mirror as it is now.
    pub fn mirror(&self) -> StateMirror {
        self.shared.lock().expect("mirror lock").mirror.clone()
    }

    /// Why the stream ended, if it did.
    pub fn ended(&self) -> Option<String> {
        self.shared.lock().expect("mirror lock").ended.clone()
    }

    pub fn events(&self) -> u64 {
        self.shared.lock().expect("mirror lock").events
    }

    /// Waits until `pred(mirror)` holds; returns how long it took. Panics
    /// (with the mirror's size) on timeout or if the stream ended.
    pub fn wait(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&StateMirror) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            {
                let g = self.shared.lock().expect("mirror lock");
                if pred(&g.mirror) {
                    return start.elapsed();
                }
                if let Some(e) = &g.ended {
                    panic!("subscriber stream ended while waiting for {what}: {e}");
                }
                if start.elapsed() >= timeout {
                    panic!(
                        "timed out after {timeout:?} waiting for {what}; subscriber mirror: complete={}, {} workspaces, {} agents, session {:?}",
                        g.mirror.is_complete(),
                        g.mirror.workspaces.len(),
                        g.mirror.agents.len(),
                        g.mirror.session.as_ref().map(|s| s.state)
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for MirrorWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
