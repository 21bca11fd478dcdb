//! The HTTP API: `/api/v1/health`, `/api/v1/me` and the `/api/v1/connect`
//! WebSocket, with every error answered as a JSON `ApiError`.

use crate::addr;
use crate::db::{Db, DbError, Principal, TokenCheck};
use crate::guard::{source_of, AuthThrottle};
use crate::hub::{ConnId, Hub, Registered, Role, Subscription};
use crate::listener::PeerAddr;
use crate::token;
use crate::turn::TurnConfig;
use crate::world::{self, OwnerView, PeerView};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Extension;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use warren_proto::checks::{self, Sender};
use warren_proto::control::{
    self, ApiError, ClientMessage, ClientPeer, Me, Register, ServerMessage, TokenKind, Welcome,
    CONTROL_VERSION,
};
use warren_proto::model::DeploymentInfo;

/// Largest WebSocket message an agent or device may send (a `register` with
/// the most endpoints is a few KB). Only incoming messages: the snapshots
/// the coordinator sends are larger and limited by the client.
pub const MAX_WS_MESSAGE: usize = warren_proto::limits::MAX_CLIENT_MESSAGE_BYTES;
/// How long a new connection has to send `Register`.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server pings.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// A connection silent for this long is dropped.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// A peer that does not take a message within this long is dropped, so a
/// stuck client never holds a connection task forever.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub const COORDINATOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every handler shares.
pub struct AppState {
    pub db: Db,
    pub hub: Hub,
    pub deployment: DeploymentInfo,
    pub prefix: addr::Ula48,
    /// How often to ping; a connection silent for three intervals is
    /// dropped. [`PING_INTERVAL`] except in tests.
    pub ping_interval: Duration,
    /// Whether agents and devices may announce loopback and link-local
    /// endpoints: only when the coordinator itself listens on loopback,
    /// where every peer shares its machine.
    pub allow_local_endpoints: bool,
    /// Failed authentications per source address.
    pub throttle: AuthThrottle,
    /// TURN relays whose credentials every connection gets, if configured.
    pub turn: Option<TurnConfig>,
}

/// Seconds since the Unix epoch: TURN credential expiries are absolute
/// times that coturn compares with its own clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        // A clock before 1970 is broken; credentials from it expire at once.
        .unwrap_or(0)
}

/// An error answer: status plus JSON body.
#[derive(Debug)]
pub struct HttpError(pub StatusCode, pub ApiError);

/// Too many failed authentications: 429 with `Retry-After`.
struct TooMany(Duration);

impl IntoResponse for TooMany {
    fn into_response(self) -> Response {
        let secs = self.0.as_secs().max(1);
        let mut resp = HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!(
                "Too many failed sign-ins from this address; wait {secs} s and try again with a valid token."
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        resp
    }
}

/// Why a request was not authenticated.
enum AuthError {
    Http(HttpError),
    Throttled(Duration),
}

impl From<HttpError> for AuthError {
    fn from(e: HttpError) -> Self {
        AuthError::Http(e)
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        match self {
            AuthError::Http(e) => e.into_response(),
            AuthError::Throttled(wait) => TooMany(wait).into_response(),
        }
    }
}

impl HttpError {
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self(
            status,
            ApiError {
                error: error.into(),
                message: message.into(),
            },
        )
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The coordinator could not read its database; try again, and if it persists the operator should check the coordinator's log.",
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut resp = (self.0, Json(self.1)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route(control::ME_PATH, get(me))
        .route(control::CONNECT_PATH, get(connect))
        .route("/api/v1/tokens", get(list_tokens))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Logs each request's method, path and status: never its headers or query,
/// which is where credentials travel.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true }))
}

async fn not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "There is nothing at this path; the API lives under /api/v1/ (me, connect, health, tokens).",
    )
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This path does not accept that method; the Warren API uses GET (and DELETE for /api/v1/tokens/ID).",
    )
}

/// Checks the bearer token. Never logs or echoes it. A source address with
/// too many recent failures gets 429 before its token is looked at; the
/// token's owner elsewhere is unaffected (see [`AuthThrottle`]).
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<Extension<PeerAddr>>,
) -> Result<Principal, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(HttpError::unauthorized(
            "No token was sent; send `Authorization: Bearer <token>` (sign in with `warren login`).",
        )
        .into());
    };
    let source = peer.map(|Extension(PeerAddr(a))| source_of(a.ip()));
    let bearer = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    // Failures count against the source and the token id tried, so that
    // guessing one token's secret holds up only that token from that
    // address; made-up and malformed tokens share the address's `None`.
    let tried = token::parse(bearer).map(|t| t.id);
    let throttled = |id: &Option<String>| {
        let key = (source?, id.clone());
        state.throttle.check(&key, std::time::Instant::now())
    };
    let failed = |id: Option<String>| {
        if let Some(source) = source {
            if state
                .throttle
                .failed((source, id), std::time::Instant::now())
            {
                tracing::warn!(%source, "too many failed authentications from this address; answering 429 until it waits");
            }
        }
    };
    if let Some(wait) = throttled(&tried) {
        return Err(AuthError::Throttled(wait));
    }
    let invalid = || {
        HttpError::unauthorized(
            "The coordinator rejected this token; sign in again with a valid token (an admin creates one with `warren-coord token create USER`).",
        )
        .into()
    };
    let outcome = match state.db.check_token(bearer).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("token lookup failed: {e}");
            return Err(HttpError::internal().into());
        }
    };
    match outcome {
        TokenCheck::Valid(p) => {
            touch(&state.db, &p.token_id);
            return Ok(p);
        }
        TokenCheck::WrongSecret => failed(tried),
        TokenCheck::Malformed => failed(None),
        TokenCheck::UnknownId => {
            if let Some(wait) = throttled(&None) {
                return Err(AuthError::Throttled(wait));
            }
            failed(None);
        }
    }
    tracing::info!("refused a request with an invalid token");
    Err(invalid())
}

/// Records a token's use for `token list` without holding up the request on
/// a database write (at most one a minute per token, see `Db::touch_token`).
fn touch(db: &Db, token_id: &str) {
    let (db, id) = (db.clone(), token_id.to_string());
    tokio::spawn(async move {
        if let Err(e) = db.touch_token(&id, unix_now() as i64).await {
            tracing::warn!(token_id = %id, "cannot record the token's last use: {e}");
        }
    });
}

/// One of the caller's tokens in `GET /api/v1/tokens`; never the secret.
#[derive(serde::Serialize)]
struct TokenView {
    id: String,
    /// The device a browser sign-in made it for; `null` for admin tokens.
    device_name: Option<String>,
    /// `admin` or `browser`.
    origin: String,
    /// RFC 3339 UTC.
    created_at: String,
    /// RFC 3339 UTC, or `null` if never used; updated at most once a minute.
    last_used_at: Option<String>,
    /// Whether this is the token making the request.
    current: bool,
}

/// The tokens API is for people managing their devices; an agent's token
/// is the administrator's to manage.
fn user_only(p: &Principal) -> Result<(), AuthError> {
    match p.kind {
        TokenKind::User => Ok(()),
        TokenKind::Agent => Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Agent tokens cannot list or revoke tokens; use a user's token (sign in with `warren login`).",
        )
        .into()),
    }
}

/// `GET /api/v1/tokens`: the caller's own user tokens.
async fn list_tokens(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<Json<Vec<TokenView>>, AuthError> {
    let p = authenticate(&state, &headers, peer).await?;
    user_only(&p)?;
    let list = state.db.list_own_tokens(&p.user_id).await.map_err(|e| {
        tracing::error!("cannot list tokens: {e}");
        HttpError::internal()
    })?;
    Ok(Json(
        list.into_iter()
            .map(|t| TokenView {
                current: t.id == p.token_id,
                id: t.id,
                device_name: t.device_name,
                origin: t.origin,
                created_at: crate::db::rfc3339(t.created_at),
                last_used_at: t.last_used_at.map(crate::db::rfc3339),
            })
            .collect(),
    ))
}

/// `DELETE /api/v1/tokens/{id}`: revokes one of the caller's tokens (its
/// device is disconnected within a second). Someone else's id answers 404
/// like an unknown one.
async fn revoke_token(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, AuthError> {
    let p = authenticate(&state, &headers, peer).await?;
    user_only(&p)?;
    match state.db.revoke_own_token(&p.user_id, &id).await {
        Ok(()) => {
            tracing::info!(user = %p.user, token_id = %id, "a user revoked their token");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(DbError::NotFound(_)) => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "You have no token with this id; list yours with GET /api/v1/tokens.",
        )
        .into()),
        Err(e) => {
            tracing::error!("cannot revoke a token: {e}");
            Err(HttpError::internal().into())
        }
    }
}

async fn me(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<Json<Me>, AuthError> {
    let p = authenticate(&state, &headers, peer).await?;
    Ok(Json(Me {
        kind: p.kind,
        user: p.user,
        agent_id: p.agent_id,
        deployment: state.deployment.clone(),
        coordinator_version: COORDINATOR_VERSION.into(),
    }))
}

async fn connect(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AuthError> {
    // The token is checked before the upgrade so a bad one gets a plain 401.
    let principal = authenticate(&state, &headers, peer).await?;
    let ws = ws.map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "{} must be opened as a WebSocket ({e}).",
                control::CONNECT_PATH
            ),
        )
    })?;
    Ok(ws
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| async move {
            let conn = state.hub.next_conn_id();
            let _guard = Disconnect {
                hub: state.hub.clone(),
                conn,
            };
            let span = tracing::info_span!("conn", id = conn, user = %principal.user);
            tracing::Instrument::instrument(run_connection(state, principal, socket, conn), span)
                .await;
        }))
}

/// Tells the world task a connection ended, however it ended.
struct Disconnect {
    hub: Hub,
    conn: ConnId,
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        self.hub.disconnected(self.conn);
    }
}

/// Why a connection ends early.
enum Stop {
    /// Tell the peer, then close.
    Tell(ApiError),
    /// The transport is gone; nothing to tell.
    Gone,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError {
        error: "bad_request".into(),
        message: message.into(),
    }
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> Result<(), Stop> {
    send_text(socket, encode(msg)?).await
}

fn encode(msg: &ServerMessage) -> Result<String, Stop> {
    serde_json::to_string(msg).map_err(|e| {
        tracing::error!("cannot serialize a message: {e}");
        Stop::Gone
    })
}

async fn send_text(socket: &mut WebSocket, text: String) -> Result<(), Stop> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Stop::Gone),
        Err(_) => {
            tracing::info!("dropping a connection that stopped reading");
            Err(Stop::Gone)
        }
    }
}

async fn close_with(socket: &mut WebSocket, err: ApiError) {
    tracing::info!(code = %err.error, "closing connection: {}", err.message);
    let _ = send(socket, &ServerMessage::Error(err)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.send(Message::Close(None))).await;
}

async fn run_connection(
    state: Arc<AppState>,
    principal: Principal,
    mut socket: WebSocket,
    conn: ConnId,
) {
    match serve_connection(&state, principal, &mut socket, conn).await {
        Ok(()) | Err(Stop::Gone) => {}
        Err(Stop::Tell(err)) => close_with(&mut socket, err).await,
    }
}

/// Waits for the first message, which must be `Register`.
async fn first_register(socket: &mut WebSocket) -> Result<Register, Stop> {
    let wait = async {
        loop {
            match socket.recv().await {
                None => return Err(Stop::Gone),
                Some(Err(e)) => return Err(read_failed(&e)),
                Some(Ok(Message::Text(text))) => {
                    return match serde_json::from_str::<ClientMessage>(&text) {
                        Ok(ClientMessage::Register(r)) => Ok(r),
                        Ok(_) => Err(Stop::Tell(bad("The first message must be `register`."))),
                        Err(e) => Err(Stop::Tell(bad(format!(
                            "The first message is not a valid `register` message ({}).",
                            describe_json_error(&e)
                        )))),
                    };
                }
                Some(Ok(Message::Close(_))) => return Err(Stop::Gone),
                Some(Ok(Message::Binary(_))) => {
                    return Err(Stop::Tell(bad("Messages must be JSON text, not binary.")))
                }
                Some(Ok(_)) => continue,
            }
        }
    };
    match tokio::time::timeout(REGISTER_TIMEOUT, wait).await {
        Ok(r) => r,
        Err(_) => Err(Stop::Tell(bad(
            "No `register` message arrived within 10 seconds; send it right after connecting.",
        ))),
    }
}

/// A failed read: a message over [`MAX_WS_MESSAGE`] is worth telling the
/// peer about; anything else means the transport is gone.
fn read_failed(e: &axum::Error) -> Stop {
    // tungstenite's capacity error, seen through axum's opaque error; the
    // test of an oversized message keeps this match honest.
    let text = e.to_string();
    if text.contains("Space limit exceeded") || text.contains("too long") {
        Stop::Tell(bad(format!(
            "A message was over the size limit ({text}); messages to the coordinator are limited to {} KiB.",
            MAX_WS_MESSAGE / 1024
        )))
    } else {
        Stop::Gone
    }
}

/// A registration with a key another agent or device holds. Peers are keyed
/// by WireGuard key, so it would shadow that one.
fn key_in_use(sender: Sender) -> ApiError {
    ApiError {
        error: "key_in_use".into(),
        message: format!(
            "This WireGuard public key is already registered by another agent or device in this deployment, and each needs a key of its own; {}",
            match sender {
                Sender::Agent => "give this agent its own key (a --key-file of its own, or none for a fresh key) and restart it.",
                Sender::Device | Sender::Admin => "reconnect so that Warren makes a new key.",
            }
        ),
    }
}

/// Describes a JSON error without echoing the input.
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "invalid JSON",
        Category::Data => "JSON does not match the expected message",
        Category::Eof => "JSON ends early",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

async fn serve_connection(
    state: &AppState,
    principal: Principal,
    socket: &mut WebSocket,
    conn: ConnId,
) -> Result<(), Stop> {
    let reg = first_register(socket).await?;
    if reg.protocol_version != CONTROL_VERSION {
        return Err(Stop::Tell(ApiError {
            error: "version_mismatch".into(),
            message: format!(
                "This coordinator speaks control protocol {CONTROL_VERSION} (version {COORDINATOR_VERSION}) but the client speaks {} (version {}); install a matching Warren version.",
                reg.protocol_version, reg.app_version
            ),
        }));
    }
    let sender = match principal.kind {
        TokenKind::Agent => Sender::Agent,
        TokenKind::User => Sender::Device,
    };
    checks::check_register(&reg, sender, state.allow_local_endpoints).map_err(Stop::Tell)?;
    let db_failed = |e| match e {
        DbError::KeyInUse => Stop::Tell(key_in_use(sender)),
        e => {
            tracing::error!("database write failed: {e}");
            Stop::Tell(ApiError {
                error: "internal".into(),
                message: "The coordinator could not write to its database; connect again later."
                    .into(),
            })
        }
    };
    let (role, revision, id) = match principal.kind {
        TokenKind::User => {
            let db_started = std::time::Instant::now();
            let (device, revision) = state
                .db
                .register_device(
                    &principal.user_id,
                    &reg.public_key,
                    &reg.endpoints,
                    reg.hostname.as_deref(),
                )
                .await
                .map_err(db_failed)?;
            tracing::debug!(
                elapsed_us = db_started.elapsed().as_micros() as u64,
                "device stored"
            );
            let addresses = addr::addresses(&state.prefix, device.address_index).map_err(|e| {
                Stop::Tell(ApiError {
                    error: "internal".into(),
                    message: e.to_string(),
                })
            })?;
            let peer = ClientPeer {
                id: device.id.clone(),
                user: principal.user.clone(),
                public_key: reg.public_key.clone(),
                addresses,
                endpoints: reg.endpoints.clone(),
            };
            (Role::Device(peer), revision, device.id)
        }
        TokenKind::Agent => {
            let Some(agent_id) = principal.agent_id.clone() else {
                return Err(Stop::Tell(bad(
                    "This agent token is not bound to an agent.",
                )));
            };
            let revision = match state
                .db
                .register_agent(&agent_id, Some(&reg.public_key), &reg.endpoints)
                .await
            {
                Ok(r) => r,
                Err(DbError::NotFound(m)) => {
                    return Err(Stop::Tell(ApiError {
                        error: "unauthorized".into(),
                        message: m,
                    }))
                }
                Err(e) => return Err(db_failed(e)),
            };
            let role = Role::Agent {
                agent_id: agent_id.clone(),
                public_key: reg.public_key.clone(),
                endpoints: reg.endpoints.clone(),
            };
            (role, revision, agent_id)
        }
    };
    let kind = principal.kind;
    let user = principal.user.clone();
    let Registered {
        subscription,
        addresses,
        kill,
    } = state
        .hub
        .register(conn, principal, role, revision)
        .await
        .map_err(Stop::Tell)?;
    tracing::info!(kind = ?kind, id = %id, "registered");
    let role_id = id.clone();
    let relays = state
        .turn
        .as_ref()
        .map(|t| t.relays_for(&id, unix_now()))
        .unwrap_or_default();
    send(
        socket,
        &ServerMessage::Welcome(Welcome {
            protocol_version: CONTROL_VERSION,
            coordinator_version: COORDINATOR_VERSION.into(),
            deployment: state.deployment.clone(),
            user,
            kind,
            id,
            addresses,
            relays,
        }),
    )
    .await?;
    let ctx = StreamCtx {
        state,
        socket,
        conn,
        is_agent: kind == TokenKind::Agent,
        role_id,
        kill,
    };
    match subscription {
        Subscription::Workspaces(rx) => stream(ctx, rx).await,
        Subscription::Peers(rx) => stream(ctx, rx).await,
    }
}

/// A view streamed as a snapshot and then diffs.
trait Streamed: PartialEq + Send + Sync + 'static {
    /// How many messages the snapshot takes.
    fn snapshot_parts(&self) -> usize;
    /// One message of the snapshot, as JSON.
    fn snapshot_part(&self, part: usize) -> Result<String, Stop>;
    fn diff(old: &Self, new: &Self, seq: u64) -> Option<ServerMessage>;
}

impl Streamed for OwnerView {
    fn snapshot_parts(&self) -> usize {
        world::workspace_snapshot_parts(self, world::SNAPSHOT_PART_ITEMS)
    }
    fn snapshot_part(&self, part: usize) -> Result<String, Stop> {
        world::workspace_snapshot_part_json(self, world::SNAPSHOT_PART_ITEMS, part).map_err(|e| {
            tracing::error!("cannot serialize a snapshot: {e}");
            Stop::Gone
        })
    }
    fn diff(old: &Self, new: &Self, seq: u64) -> Option<ServerMessage> {
        world::workspace_diff(old, new, seq).map(ServerMessage::WorkspaceUpdate)
    }
}

impl Streamed for PeerView {
    fn snapshot_parts(&self) -> usize {
        1
    }
    fn snapshot_part(&self, _part: usize) -> Result<String, Stop> {
        encode(&ServerMessage::PeerUpdate(world::peer_snapshot(self)))
    }
    fn diff(old: &Self, new: &Self, seq: u64) -> Option<ServerMessage> {
        world::peer_diff(old, new, seq).map(ServerMessage::PeerUpdate)
    }
}

struct StreamCtx<'a> {
    state: &'a AppState,
    socket: &'a mut WebSocket,
    conn: ConnId,
    is_agent: bool,
    /// Device id or agent id.
    role_id: String,
    kill: tokio::sync::oneshot::Receiver<ApiError>,
}

async fn stream<V: Streamed>(
    ctx: StreamCtx<'_>,
    mut rx: watch::Receiver<Arc<V>>,
) -> Result<(), Stop> {
    let StreamCtx {
        state,
        socket,
        conn,
        is_agent,
        role_id,
        mut kill,
    } = ctx;
    let mut last = rx.borrow_and_update().clone();
    let started = std::time::Instant::now();
    let parts = last.snapshot_parts();
    let mut bytes = 0;
    for part in 0..parts {
        let text = last.snapshot_part(part)?;
        bytes += text.len();
        send_text(socket, text).await?;
    }
    tracing::debug!(
        parts,
        bytes,
        elapsed_us = started.elapsed().as_micros() as u64,
        "snapshot sent"
    );
    let mut seq = 0u64;
    let ping_every = state.ping_interval;
    let silence_limit = ping_every * (SILENCE_LIMIT.as_millis() / PING_INTERVAL.as_millis()) as u32;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    // New TURN credentials before the ones sent last expire (the first went
    // out with the welcome), so a long session always holds valid ones.
    let mut refresh = state.turn.as_ref().map(|t| {
        let every = t.refresh_interval();
        let mut i = tokio::time::interval_at(Instant::now() + every, every);
        // After a stall one refresh is enough.
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = async {
                match refresh.as_mut() {
                    Some(i) => i.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(turn) = &state.turn {
                    let relays = turn.relays_for(&role_id, unix_now());
                    tracing::debug!(relays = relays.len(), "sending fresh TURN credentials");
                    send(socket, &ServerMessage::Relays { relays }).await?;
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return Err(Stop::Tell(ApiError {
                        error: "unavailable".into(),
                        message: "The coordinator is shutting down; connect again in a moment.".into(),
                    }));
                }
                let new = rx.borrow_and_update().clone();
                if Arc::ptr_eq(&new, &last) {
                    continue;
                }
                if let Some(msg) = V::diff(&last, &new, seq + 1) {
                    seq += 1;
                    send(socket, &msg).await?;
                }
                last = new;
            }
            why = &mut kill => {
                return match why {
                    Ok(err) => Err(Stop::Tell(err)),
                    Err(_) => Err(Stop::Gone),
                };
            }
            msg = socket.recv() => {
                let msg = match msg {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(read_failed(&e)),
                    Some(Ok(m)) => m,
                };
                heard = Instant::now();
                match msg {
                    Message::Text(text) => match serde_json::from_str::<ClientMessage>(&text) {
                        Ok(ClientMessage::Endpoints { endpoints }) => {
                            let sender = if is_agent { Sender::Agent } else { Sender::Device };
                            checks::check_endpoints(&endpoints, sender, state.allow_local_endpoints)
                                .map_err(Stop::Tell)?;
                            let written = if is_agent {
                                state.db.register_agent(&role_id, None, &endpoints).await
                            } else {
                                state.db.set_device_endpoints(&role_id, &endpoints).await
                            };
                            match written {
                                Ok(revision) => state.hub.endpoints(conn, endpoints, revision),
                                // A removed agent is closed by the hub shortly.
                                Err(e) => tracing::warn!("cannot store new endpoints: {e}"),
                            }
                        }
                        Ok(ClientMessage::Register(_)) => {
                            send(socket, &ServerMessage::Error(bad(
                                "This connection is already registered; open a new connection to register a new key.",
                            ))).await?;
                        }
                        Err(e) => {
                            send(socket, &ServerMessage::Error(bad(format!(
                                "Unknown or malformed message ({}); it was ignored.",
                                describe_json_error(&e)
                            )))).await?;
                        }
                    },
                    Message::Binary(_) => {
                        send(socket, &ServerMessage::Error(bad("Messages must be JSON text, not binary."))).await?;
                    }
                    Message::Close(_) => return Ok(()),
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= silence_limit {
                    tracing::info!("dropping a connection silent for {} ms", silence_limit.as_millis());
                    return Err(Stop::Gone);
                }
                if tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Vec::new().into()))).await.map(|r| r.is_err()).unwrap_or(true) {
                    return Err(Stop::Gone);
                }
            }
        }
    }
}
