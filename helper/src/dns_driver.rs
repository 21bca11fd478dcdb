//! The DNS stub's driver: UDP and TCP sockets on port 53 of this device's
//! tunnel addresses, feeding the sans-IO [`warren_dns::Stub`], plus the
//! upstream sockets of the `/etc/resolv.conf` mode (where the stub is the
//! system's resolver and forwards everything outside the suffix to the
//! resolvers configured before), with `warren-netcfg`'s watch putting our
//! entry back when another program rewrites the file.
//!
//! All DNS decisions are the stub's; this module only moves messages. It
//! never waits on a client: each TCP connection has its own task, and
//! replies to it go through a bounded queue that drops when full.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use warren_client_core::NameChange;
use warren_dns::{Config, Outcome, Stub, Transport};
use warren_netcfg::dns::resolv_conf;

/// Every name → addresses, as the client state has them when the stub starts.
pub type Names = Vec<(String, Vec<IpAddr>)>;
/// Later edits of the names, as diffs from the client state.
pub type NameChanges = mpsc::UnboundedReceiver<Vec<NameChange>>;

/// Most queries a TCP client may have unanswered on its connection.
const TCP_QUEUE: usize = 64;
/// Most TCP clients served at once. Each costs a task, two buffers and a
/// descriptor of a root process, and the tunnel address is reachable by
/// agents; past the cap new connections are closed at once.
const MAX_TCP_CLIENTS: usize = 64;
/// Refused TCP connections are logged at most this often (a flood must not
/// flood the log too).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// A TCP client silent this long is disconnected (RFC 7766 suggests
/// seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Queries answered per wake-up of a UDP socket before other work gets a turn.
const UDP_DRAIN: usize = 256;
/// How long a TCP connection to an upstream may take, end to end.
const UPSTREAM_TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the stub serves and how.
#[derive(Debug, Clone)]
pub struct DnsDriverConfig {
    /// The deployment's suffix.
    pub suffix: String,
    /// This device's tunnel addresses: the stub listens on port 53 of each.
    pub listen: Vec<IpAddr>,
    /// `Some((resolv.conf, its backup))` in the resolv.conf mode: forward
    /// outside names to the backup's nameservers, and keep the file ours.
    pub resolv_conf: Option<(PathBuf, PathBuf)>,
}

/// Why the stub could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsDriverError {
    #[error("the DNS suffix {0:?} is not usable: {1}")]
    Suffix(String, String),
    #[error("couldn't listen for DNS on {addr}: {source} — is another DNS server using port 53 on the tunnel address?")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running stub; dropping it stops it.
#[derive(Debug)]
pub struct DnsHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DnsHandle {
    /// Stops the stub and waits for its sockets to close.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DnsHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds the sockets and starts serving `names`, then `changes` to them.
pub async fn start(
    config: DnsDriverConfig,
    names: Names,
    changes: NameChanges,
) -> Result<DnsHandle, DnsDriverError> {
    let mut stub_config = Config::new(config.suffix.clone());
    // Queries from this device's tunnel addresses (and loopback) are this
    // machine's own; only those get names outside the suffix forwarded.
    stub_config.local_addresses = config.listen.clone();
    if let Some((_, backup)) = &config.resolv_conf {
        stub_config.upstreams = Some(resolv_conf::upstreams(backup, &config.listen));
    }
    let stub = Stub::new(stub_config)
        .map_err(|e| DnsDriverError::Suffix(config.suffix.clone(), e.to_string()))?;
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for ip in &config.listen {
        let addr = SocketAddr::new(*ip, 53);
        let bind = |source| DnsDriverError::Bind { addr, source };
        udp.push(Arc::new(UdpSocket::bind(addr).await.map_err(bind)?));
        tcp.push(TcpListener::bind(addr).await.map_err(bind)?);
    }
    let upstream = if config.resolv_conf.is_some() {
        let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);
        Some(
            UdpSocket::bind(any)
                .await
                .map_err(|source| DnsDriverError::Bind { addr: any, source })?,
        )
    } else {
        None
    };
    tracing::info!(listen = ?config.listen, suffix = %config.suffix, forwarding = upstream.is_some(), "DNS stub started");
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(
        config, stub, udp, tcp, upstream, names, changes, stop_rx,
    ));
    Ok(DnsHandle {
        stop: Some(stop_tx),
        task: Some(task),
    })
}

/// What the socket tasks hand the loop.
enum Input {
    /// A query from a TCP client, and where its replies go.
    TcpQuery {
        client: SocketAddr,
        bytes: Vec<u8>,
        replies: mpsc::Sender<Vec<u8>>,
    },
    /// A TCP client went away.
    TcpClosed(SocketAddr),
    /// A reply from an upstream over TCP.
    UpstreamTcp { from: SocketAddr, bytes: Vec<u8> },
}

async fn recv_on(sockets: &[Arc<UdpSocket>], buf: &mut [u8]) -> (usize, usize, SocketAddr) {
    loop {
        let mut ready = Vec::with_capacity(sockets.len());
        for s in sockets {
            ready.push(Box::pin(s.readable()));
        }
        let (res, i, _) = futures_util::future::select_all(ready).await;
        if res.is_err() {
            continue;
        }
        match sockets[i].try_recv_from(buf) {
            Ok((n, from)) => return (i, n, from),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                continue;
            }
        }
    }
}

async fn accept_on(listeners: &[TcpListener]) -> std::io::Result<(TcpStream, SocketAddr)> {
    let mut accepts = Vec::with_capacity(listeners.len());
    for l in listeners {
        accepts.push(Box::pin(l.accept()));
    }
    futures_util::future::select_all(accepts).await.0
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn run(
    config: DnsDriverConfig,
    mut stub: Stub,
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
    upstream: Option<UdpSocket>,
    names: Names,
    changes: NameChanges,
    mut stop: oneshot::Receiver<()>,
) {
    let (input_tx, mut input) = mpsc::channel::<Input>(1024);
    // `start` bound one UDP socket per listen address, in that order.
    let by_family: Vec<(bool, Arc<UdpSocket>)> = config
        .listen
        .iter()
        .map(IpAddr::is_ipv4)
        .zip(udp.iter().cloned())
        .collect();
    let mut tcp_clients: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tcp_gate = TcpGate::new(MAX_TCP_CLIENTS);
    let mut buf = vec![0u8; 65535];
    let mut up_buf = vec![0u8; 65535];
    let skipped = stub.set_names(names.iter().map(|(n, a)| (n.as_str(), a.iter().copied())));
    for (name, why) in skipped.iter().take(5) {
        tracing::debug!(%name, reason = %why, "name not served");
    }
    drop(names);
    let mut changes = Some(changes);
    let mut resolv_conf_watch = config.resolv_conf.as_ref().map(|(path, backup)| {
        resolv_conf::Watch::start(path.clone(), backup.clone(), config.listen.clone())
    });
    loop {
        let deadline = stub.poll_timeout();
        tokio::select! {
            _ = &mut stop => break,
            (i, n, from) = recv_on(&udp, &mut buf) => {
                answer_udp(&mut stub, &udp[i], &buf[..n], from).await;
                // Under load many queries wait: answer them all before going
                // back to `select!`, whose futures cost more than a query.
                for _ in 0..UDP_DRAIN {
                    match udp[i].try_recv_from(&mut buf) {
                        Ok((n, from)) => answer_udp(&mut stub, &udp[i], &buf[..n], from).await,
                        Err(_) => break,
                    }
                }
            }
            accepted = accept_on(&tcp) => match accepted {
                Ok((stream, client)) => match tcp_gate.admit(Instant::now()) {
                    Admission::Admitted(permit) => {
                        tokio::spawn(serve_tcp(stream, client, input_tx.clone(), permit));
                    }
                    // Dropping the stream closes it at once.
                    Admission::Refused { log: Some(refused) } => {
                        tracing::warn!(
                            refused,
                            max = MAX_TCP_CLIENTS,
                            "DNS TCP clients at the cap; new connections closed (count since the last such line)"
                        );
                    }
                    Admission::Refused { log: None } => {}
                },
                Err(e) => tracing::debug!(error = %e, "DNS TCP accept failed"),
            },
            Some(msg) = input.recv() => match msg {
                Input::TcpQuery { client, bytes, replies } => {
                    tcp_clients.insert(client, replies.clone());
                    if let Outcome::Reply(reply) =
                        stub.handle_query(Instant::now(), &bytes, Transport::Tcp, client)
                    {
                        let _ = replies.try_send(reply);
                    }
                }
                Input::TcpClosed(client) => {
                    tcp_clients.remove(&client);
                }
                Input::UpstreamTcp { from, bytes } => {
                    if let Some(r) = stub.handle_upstream(Instant::now(), from, &bytes) {
                        deliver(r, &by_family, &tcp_clients).await;
                    }
                }
            },
            upstreams = resolv_conf_rewritten(resolv_conf_watch.as_mut()) => {
                stub.set_upstreams(Some(upstreams));
            }
            got = recv_upstream(upstream.as_ref(), &mut up_buf) => {
                if let Some((n, from)) = got {
                    if let Some(r) = stub.handle_upstream(Instant::now(), from, &up_buf[..n]) {
                        deliver(r, &by_family, &tcp_clients).await;
                    }
                }
            }
            batch = next_changes(&mut changes) => match batch {
                Some(batch) => apply_name_changes(&mut stub, batch),
                // The tunnel's handle is gone; its stop follows.
                None => changes = None,
            },
            _ = sleep_until(deadline) => stub.handle_timeout(Instant::now()),
        }
        while let Some(t) = stub.poll_transmit() {
            match t.transport {
                Transport::Udp => {
                    if let Some(up) = &upstream {
                        if let Err(e) = up.send_to(&t.bytes, t.to).await {
                            tracing::debug!(to = %t.to, error = %e, "forwarding a query failed");
                        }
                    }
                }
                Transport::Tcp => {
                    tokio::spawn(forward_tcp(t.to, t.bytes, input_tx.clone()));
                }
            }
        }
    }
    drop(resolv_conf_watch);
    tracing::info!("DNS stub stopped");
}

/// The next batch of name diffs; never, once their sender is gone.
async fn next_changes(changes: &mut Option<NameChanges>) -> Option<Vec<NameChange>> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Applies one directory change to the stub: only the names that moved.
fn apply_name_changes(stub: &mut Stub, batch: Vec<NameChange>) {
    for change in batch {
        match change {
            NameChange::Upsert { name, addresses } => {
                if let Err(e) = stub.upsert(&name, addresses) {
                    tracing::debug!(%name, reason = %e, "name not served");
                }
            }
            NameChange::Remove { name } => {
                stub.remove(&name);
            }
        }
    }
}

/// Answers one UDP query (a forwarded one is sent after the `select!`).
async fn answer_udp(stub: &mut Stub, sock: &UdpSocket, query: &[u8], from: SocketAddr) {
    if let Outcome::Reply(reply) = stub.handle_query(Instant::now(), query, Transport::Udp, from) {
        let sent = match sock.try_send_to(&reply, from) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                sock.send_to(&reply, from).await
            }
            other => other,
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "DNS reply failed");
        }
    }
}

/// The upstreams after another program rewrote resolv.conf (and the watch
/// put our entry back); never, outside the resolv.conf mode.
async fn resolv_conf_rewritten(watch: Option<&mut resolv_conf::Watch>) -> Vec<SocketAddr> {
    match watch {
        Some(watch) => watch.rewritten().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn recv_upstream(sock: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    match sock.recv_from(buf).await {
        Ok(got) => Some(got),
        Err(e) => {
            tracing::debug!(error = %e, "upstream receive failed");
            None
        }
    }
}

/// Sends a forwarded reply to its client, the way it asked.
async fn deliver(
    r: warren_dns::ForwardedReply,
    udp: &[(bool, Arc<UdpSocket>)],
    tcp_clients: &HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
) {
    match r.transport {
        Transport::Udp => {
            // Answer from the socket of the client's family.
            let sock = udp
                .iter()
                .find(|(v4, _)| *v4 == r.client.is_ipv4())
                .or_else(|| udp.first())
                .map(|(_, s)| s);
            if let Some(sock) = sock {
                let _ = sock.send_to(&r.bytes, r.client).await;
            }
        }
        Transport::Tcp => {
            if let Some(tx) = tcp_clients.get(&r.client) {
                let _ = tx.try_send(r.bytes);
            }
        }
    }
}

/// What [`TcpGate::admit`] decided about a new TCP connection.
#[derive(Debug)]
enum Admission {
    /// Serve it; the slot frees when the permit is dropped.
    Admitted(OwnedSemaphorePermit),
    /// Close it. `log`: time for a log line, with the connections refused
    /// since the last one.
    Refused { log: Option<u64> },
}

/// The cap on concurrent TCP clients, and the rate of its log line.
#[derive(Debug)]
struct TcpGate {
    slots: Arc<Semaphore>,
    refused_unlogged: u64,
    last_log: Option<Instant>,
}

impl TcpGate {
    fn new(max: usize) -> Self {
        TcpGate {
            slots: Arc::new(Semaphore::new(max)),
            refused_unlogged: 0,
            last_log: None,
        }
    }

    fn admit(&mut self, now: Instant) -> Admission {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Admission::Admitted(permit);
        }
        self.refused_unlogged += 1;
        let due = self
            .last_log
            .is_none_or(|at| now.saturating_duration_since(at) >= REFUSAL_LOG_INTERVAL);
        if !due {
            return Admission::Refused { log: None };
        }
        self.last_log = Some(now);
        Admission::Refused {
            log: Some(std::mem::take(&mut self.refused_unlogged)),
        }
    }
}

/// One TCP client: length-prefixed queries in, replies out (RFC 7766).
/// `_slot` holds its place under [`MAX_TCP_CLIENTS`] until it ends.
async fn serve_tcp(
    stream: TcpStream,
    client: SocketAddr,
    input: mpsc::Sender<Input>,
    _slot: OwnedSemaphorePermit,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let Some(framed) = warren_dns::frame(&reply) else {
                continue;
            };
            if wr.write_all(&framed).await.is_err() {
                break;
            }
        }
    });
    let mut framer = warren_dns::TcpFramer::new();
    let mut chunk = vec![0u8; 4096];
    'read: loop {
        let n = match tokio::time::timeout(TCP_IDLE, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        framer.push(&chunk[..n]);
        while let Some(bytes) = framer.next_message() {
            let query = Input::TcpQuery {
                client,
                bytes,
                replies: tx.clone(),
            };
            if input.send(query).await.is_err() {
                break 'read;
            }
        }
    }
    let _ = input.send(Input::TcpClosed(client)).await;
    drop(tx);
    // Let queued replies go out before the connection closes.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

/// One query to an upstream over TCP.
async fn forward_tcp(to: SocketAddr, bytes: Vec<u8>, input: mpsc::Sender<Input>) {
    let exchange = async {
        let mut stream = TcpStream::connect(to).await?;
        let framed = warren_dns::frame(&bytes)
            .ok_or_else(|| std::io::Error::other("a query too long for TCP"))?;
        stream.write_all(&framed).await?;
        let mut framer = warren_dns::TcpFramer::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            if let Some(reply) = framer.next_message() {
                return Ok::<_, std::io::Error>(reply);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            framer.push(&chunk[..n]);
        }
    };
    match tokio::time::timeout(UPSTREAM_TCP_TIMEOUT, exchange).await {
        Ok(Ok(reply)) => {
            let _ = input
                .send(Input::UpstreamTcp {
                    from: to,
                    bytes: reply,
                })
                .await;
        }
        // A timeout stays a timeout: the client hears nothing.
        Ok(Err(e)) => tracing::debug!(%to, error = %e, "forwarding over TCP failed"),
        Err(_) => tracing::debug!(%to, "forwarding over TCP timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_clients_past_the_cap_are_refused_and_logged_once_a_minute() {
        let mut gate = TcpGate::new(3);
        let t0 = Instant::now();
        let mut held: Vec<OwnedSemaphorePermit> = (0..3)
            .map(|_| match gate.admit(t0) {
                Admission::Admitted(p) => p,
                other => panic!("under the cap, got {other:?}"),
            })
            .collect();

        // The first refusal is logged at once; the next ones within the
        // minute are only counted, then reported together.
        assert!(matches!(
            gate.admit(t0),
            Admission::Refused { log: Some(1) }
        ));
        for s in [1, 30, 59] {
            let at = t0 + Duration::from_secs(s);
            assert!(matches!(gate.admit(at), Admission::Refused { log: None }));
        }
        let minute = t0 + REFUSAL_LOG_INTERVAL;
        assert!(matches!(
            gate.admit(minute),
            Admission::Refused { log: Some(4) }
        ));

        // A client that ends frees its slot for the next one.
        held.pop();
        let Admission::Admitted(p) = gate.admit(minute) else {
            panic!("the slot freed by the dropped permit is reusable");
        };
        held.push(p);
        assert!(matches!(
            gate.admit(minute),
            Admission::Refused { log: None }
        ));
    }
}
