//! The world task: the one owner of `serve`'s in-memory state.
//!
//! It mirrors the database (reloading when `meta.revision` moves, polled
//! every 100 ms), tracks which agents and devices hold a live connection,
//! and publishes per-owner views on `watch` channels. Connections hold a
//! receiver for their owner only, so a change for one user wakes nobody
//! else, and a view that did not change keeps its `Arc` (connections skip
//! it by pointer). Connection handlers tell the task about in-process
//! changes through a channel, so those reach subscribers at once instead of
//! at the next poll.

use crate::addr;
use crate::db::{endpoints_json, Db, DbError, Principal};
use crate::world::{Model, OwnerView, PeerView};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use warren_proto::control::{ApiError, ClientPeer};

/// How often the database revision is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

pub type ConnId = u64;

/// What a connection registers as.
#[derive(Debug)]
pub enum Role {
    /// A client device, with the peer entry agents will see.
    Device(ClientPeer),
    /// An agent with the key and endpoints it just registered.
    Agent {
        agent_id: String,
        public_key: String,
        endpoints: Vec<SocketAddr>,
    },
}

/// The stream a registered connection follows.
pub enum Subscription {
    Workspaces(watch::Receiver<Arc<OwnerView>>),
    Peers(watch::Receiver<Arc<PeerView>>),
}

/// A successful registration.
pub struct Registered {
    pub subscription: Subscription,
    /// The tunnel addresses of the device or agent.
    pub addresses: Vec<IpAddr>,
    /// Fires with a reason when the connection must close (token revoked,
    /// agent removed, a newer connection took over).
    pub kill: oneshot::Receiver<ApiError>,
}

enum Command {
    Register {
        conn: ConnId,
        principal: Box<Principal>,
        role: Box<Role>,
        revision: i64,
        reply: oneshot::Sender<Result<Registered, ApiError>>,
    },
    Endpoints {
        conn: ConnId,
        endpoints: Vec<SocketAddr>,
        revision: i64,
    },
    Disconnected {
        conn: ConnId,
    },
}

/// Handle to the world task; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::UnboundedSender<Command>,
    next_conn: Arc<AtomicU64>,
}

fn unavailable() -> ApiError {
    ApiError {
        error: "unavailable".into(),
        message: "The coordinator is shutting down; connect again in a moment.".into(),
    }
}

impl Hub {
    /// Loads the world and starts the task.
    pub async fn start(db: Db, suffix: String) -> Result<Self, DbError> {
        let meta = db.meta().await?;
        let rows = db.load().await?;
        let model = Model::new(rows, meta.ipv6_prefix, suffix);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = WorldTask {
            db,
            model,
            owners: HashMap::new(),
            conns: HashMap::new(),
            online_agents: HashMap::new(),
            online_devices: HashMap::new(),
            peers_by_owner: HashMap::new(),
            dirty_ws: HashSet::new(),
            dirty_peers: HashSet::new(),
        };
        // After a coordinator restart every helper reconnects at once; with
        // the views built up front none of them waits for its owner's view
        // (tens of ms per 20,000 agents) on the way in.
        let mut task = task;
        let users: Vec<String> = task.model.users.keys().cloned().collect();
        for user_id in &users {
            task.channels(user_id);
        }
        tokio::spawn(task.run(rx));
        Ok(Self {
            tx,
            next_conn: Arc::new(AtomicU64::new(1)),
        })
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks a connection online and subscribes it to its owner's stream.
    /// `revision` is the revision of the database write it just made.
    pub async fn register(
        &self,
        conn: ConnId,
        principal: Principal,
        role: Role,
        revision: i64,
    ) -> Result<Registered, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Register {
                conn,
                principal: Box::new(principal),
                role: Box::new(role),
                revision,
                reply,
            })
            .map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())?
    }

    pub fn endpoints(&self, conn: ConnId, endpoints: Vec<SocketAddr>, revision: i64) {
        // If the task is gone the server is stopping; nothing to update.
        let _ = self.tx.send(Command::Endpoints {
            conn,
            endpoints,
            revision,
        });
    }

    pub fn disconnected(&self, conn: ConnId) {
        let _ = self.tx.send(Command::Disconnected { conn });
    }
}

struct OwnerChannels {
    ws: watch::Sender<Arc<OwnerView>>,
    peers: watch::Sender<Arc<PeerView>>,
}

struct Conn {
    token_id: String,
    user_id: String,
    /// Device id or agent id.
    role_id: String,
    is_agent: bool,
    kill: oneshot::Sender<ApiError>,
}

struct WorldTask {
    db: Db,
    model: Model,
    owners: HashMap<String, OwnerChannels>,
    conns: HashMap<ConnId, Conn>,
    /// Agent id → the connection that holds it.
    online_agents: HashMap<String, ConnId>,
    /// Device id → the connection that holds it.
    online_devices: HashMap<String, ConnId>,
    /// Online devices per owner id.
    peers_by_owner: HashMap<String, BTreeMap<String, ClientPeer>>,
    dirty_ws: HashSet<String>,
    dirty_peers: HashSet<String>,
}

fn revoked() -> ApiError {
    ApiError {
        error: "unauthorized".into(),
        message: "The coordinator no longer accepts this token (it was revoked or its user removed) — sign in again (with the browser, or with a new token from an administrator).".into(),
    }
}

fn agent_removed() -> ApiError {
    ApiError {
        error: "unauthorized".into(),
        message: "This agent was removed from the coordinator; add it again with `warren-coord agent add` and use the new token.".into(),
    }
}

fn replaced(what: &str) -> ApiError {
    ApiError {
        error: "replaced".into(),
        message: format!("A newer connection for this {what} took over; this one is closed. Make sure only one copy runs."),
    }
}

impl WorldTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd).await;
                    // Take whatever queued meanwhile, so a burst (thousands of
                    // agents connecting) costs one publish.
                    while let Ok(cmd) = rx.try_recv() {
                        self.handle(cmd).await;
                    }
                }
                _ = tick.tick() => self.poll().await,
            }
            self.publish();
        }
        tracing::debug!("world task stopped");
    }

    /// Follows an in-process write: if it is the very next revision, the
    /// in-memory change the command carries is all that changed.
    fn note_revision(&mut self, revision: i64) {
        if revision == self.model.revision + 1 {
            self.model.revision = revision;
        }
    }

    async fn poll(&mut self) {
        match self.db.revision().await {
            Ok(r) if r != self.model.revision => self.reload().await,
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the database revision: {e}"),
        }
    }

    async fn reload(&mut self) {
        let started = std::time::Instant::now();
        let rows = match self.db.load().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("cannot reload from the database (will retry): {e}");
                return;
            }
        };
        let model = Model::new(rows, self.model.prefix, self.model.suffix.clone());
        tracing::debug!(
            revision = model.revision,
            agents = model.agents.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reloaded the world"
        );
        self.model = model;
        let doomed: Vec<(ConnId, ApiError)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| {
                if c.is_agent && !self.model.agents.contains_key(&c.role_id) {
                    Some((*id, agent_removed()))
                } else if !self.model.tokens.contains_key(&c.token_id)
                    || !self.model.users.contains_key(&c.user_id)
                {
                    Some((*id, revoked()))
                } else {
                    None
                }
            })
            .collect();
        for (id, why) in doomed {
            self.drop_conn(id, Some(why));
        }
        // Every user's view is kept built, so a helper connecting (or all of
        // them reconnecting) never waits for one; views of removed users go.
        let users = &self.model.users;
        self.owners.retain(|user, _| users.contains_key(user));
        self.dirty_ws.extend(self.owners.keys().cloned());
        let new_users: Vec<String> = self
            .model
            .users
            .keys()
            .filter(|u| !self.owners.contains_key(*u))
            .cloned()
            .collect();
        for user_id in &new_users {
            self.channels(user_id);
        }
    }

    /// Forgets a connection, closing it with `why` if given.
    fn drop_conn(&mut self, id: ConnId, why: Option<ApiError>) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if conn.is_agent {
            if self.online_agents.get(&conn.role_id) == Some(&id) {
                self.online_agents.remove(&conn.role_id);
                self.dirty_ws.insert(conn.user_id.clone());
            }
        } else if self.online_devices.get(&conn.role_id) == Some(&id) {
            self.online_devices.remove(&conn.role_id);
            if let Some(peers) = self.peers_by_owner.get_mut(&conn.user_id) {
                peers.remove(&conn.role_id);
                if peers.is_empty() {
                    self.peers_by_owner.remove(&conn.user_id);
                }
            }
            self.dirty_peers.insert(conn.user_id.clone());
        }
        if let Some(why) = why {
            // The connection may be gone already; nothing to tell then.
            let _ = conn.kill.send(why);
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Register {
                conn,
                principal,
                role,
                revision,
                reply,
            } => {
                let started = std::time::Instant::now();
                self.note_revision(revision);
                let result = self.register(conn, *principal, *role).await;
                tracing::debug!(
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "registration handled"
                );
                // If the handler went away meanwhile, its Disconnected follows.
                let _ = reply.send(result);
            }
            Command::Endpoints {
                conn,
                endpoints,
                revision,
            } => {
                self.note_revision(revision);
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if c.is_agent {
                    if let Some(a) = self.model.agents.get_mut(&c.role_id) {
                        a.endpoints = endpoints_json(&endpoints);
                        self.dirty_ws.insert(c.user_id.clone());
                    }
                } else if let Some(p) = self
                    .peers_by_owner
                    .get_mut(&c.user_id)
                    .and_then(|m| m.get_mut(&c.role_id))
                {
                    p.endpoints = endpoints;
                    self.dirty_peers.insert(c.user_id.clone());
                }
            }
            Command::Disconnected { conn } => self.drop_conn(conn, None),
        }
    }

    async fn register(
        &mut self,
        conn: ConnId,
        principal: Principal,
        role: Role,
    ) -> Result<Registered, ApiError> {
        // A user's snapshot must show what the database holds right now (an
        // admin may have added a workspace a moment ago); an agent needs
        // only its own row and token to be known.
        let must_check = match &role {
            Role::Device(_) => true,
            Role::Agent { agent_id, .. } => {
                !self.model.agents.contains_key(agent_id)
                    || !self.model.tokens.contains_key(&principal.token_id)
            }
        };
        if must_check {
            self.poll().await;
        }
        if !self.model.tokens.contains_key(&principal.token_id) {
            return Err(revoked());
        }
        let user_id = principal.user_id.clone();
        let (kill_tx, kill) = oneshot::channel();
        let (role_id, is_agent, addresses) = match role {
            Role::Device(peer) => {
                let id = peer.id.clone();
                let addresses = peer.addresses.clone();
                if let Some(old) = self.online_devices.get(&id).copied() {
                    self.drop_conn(old, Some(replaced("device")));
                }
                self.online_devices.insert(id.clone(), conn);
                self.peers_by_owner
                    .entry(user_id.clone())
                    .or_default()
                    .insert(id.clone(), peer);
                self.dirty_peers.insert(user_id.clone());
                (id, false, addresses)
            }
            Role::Agent {
                agent_id,
                public_key,
                endpoints,
            } => {
                let Some(row) = self.model.agents.get_mut(&agent_id) else {
                    return Err(agent_removed());
                };
                row.public_key = Some(public_key);
                row.endpoints = endpoints_json(&endpoints);
                let addresses =
                    addr::addresses(&self.model.prefix, row.address_index).unwrap_or_default();
                if let Some(old) = self.online_agents.get(&agent_id).copied() {
                    self.drop_conn(old, Some(replaced("agent")));
                }
                self.online_agents.insert(agent_id.clone(), conn);
                self.dirty_ws.insert(user_id.clone());
                (agent_id, true, addresses)
            }
        };
        self.conns.insert(
            conn,
            Conn {
                token_id: principal.token_id,
                user_id: user_id.clone(),
                role_id,
                is_agent,
                kill: kill_tx,
            },
        );
        // Subscribe to the freshest view, including this registration.
        self.publish();
        let ch = self.channels(&user_id);
        let subscription = if is_agent {
            Subscription::Peers(ch.peers.subscribe())
        } else {
            Subscription::Workspaces(ch.ws.subscribe())
        };
        Ok(Registered {
            subscription,
            addresses,
            kill,
        })
    }

    fn build_ws(&self, user_id: &str) -> OwnerView {
        self.model
            .owner_view(user_id, |id| self.online_agents.contains_key(id))
    }

    fn build_peers(&self, user_id: &str) -> PeerView {
        PeerView {
            peers: self
                .peers_by_owner
                .get(user_id)
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn channels(&mut self, user_id: &str) -> &OwnerChannels {
        if !self.owners.contains_key(user_id) {
            let (ws, _) = watch::channel(Arc::new(self.build_ws(user_id)));
            let (peers, _) = watch::channel(Arc::new(self.build_peers(user_id)));
            self.owners
                .insert(user_id.to_string(), OwnerChannels { ws, peers });
        }
        &self.owners[user_id]
    }

    /// Sends the new view of every owner marked dirty, if it changed.
    fn publish(&mut self) {
        for user_id in std::mem::take(&mut self.dirty_ws) {
            let Some(ch) = self.owners.get(&user_id) else {
                continue;
            };
            let view = self.build_ws(&user_id);
            let same = **ch.ws.borrow() == view;
            if !same {
                ch.ws.send_replace(Arc::new(view));
            }
        }
        for user_id in std::mem::take(&mut self.dirty_peers) {
            let Some(ch) = self.owners.get(&user_id) else {
                continue;
            };
            let view = self.build_peers(&user_id);
            let same = **ch.peers.borrow() == view;
            if !same {
                ch.peers.send_replace(Arc::new(view));
            }
        }
    }
}
