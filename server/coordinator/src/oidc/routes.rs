//! The HTTP side of browser sign-in (docs/signin.md): the sign-in page, the
//! round trip to the identity provider, the token exchange, the device-code
//! grant and its pages, and the tokens page where people sign devices out.
//!
//! Nothing secret is logged: requests are logged by path only (codes and
//! states travel in queries), and no token, code, verifier, nonce or ID
//! token reaches a log line or an error page.

use super::config::{error_chain, Discovered, Idp, IdpClient};
use super::flow::{self, ClientKind, Flow, FlowError, Grant, IdpRound, SigninQuery, Target};
use super::pages;
use crate::db::{Db, TokenOrigin, User};
use crate::guard::{source_of, AuthThrottle};
use crate::listener::PeerAddr;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::url::Url;
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClaimsVerificationError, CsrfToken, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, Scope, SignatureVerificationError,
    TokenResponse,
};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Sign-ins one address may start at once, then per minute.
const START_BURST: u32 = 30;
const START_PER_MINUTE: u32 = 20;
/// Refused codes one address may send at once, then per minute.
const FAILURE_BURST: u32 = 10;
const FAILURE_PER_MINUTE: u32 = 6;

type Peer = Option<Extension<PeerAddr>>;

/// The source `peer` counts against (unknown only outside the listener,
/// in tests: all such requests share one bucket).
fn source(peer: &Peer) -> IpAddr {
    peer.as_ref()
        .map(|Extension(PeerAddr(a))| source_of(a.ip()))
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

fn too_many_page(wait: Duration) -> Response {
    let mut r = page(
        StatusCode::TOO_MANY_REQUESTS,
        pages::error(
            "Too many sign-in attempts from your network",
            "This coordinator limits how many sign-ins one address may start or get wrong.",
            &format!("Wait {} seconds and start again.", wait.as_secs()),
        ),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
    r
}

fn too_many_json(wait: Duration) -> Response {
    let mut r = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        &format!(
            "Too many sign-in attempts from this address; wait {} seconds.",
            wait.as_secs()
        ),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
    r
}

/// The least time between two reads of the provider's keys after start-up.
const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Browser sign-in, when `--oidc-issuer` is given.
pub struct Oidc {
    /// Replaced when the provider's keys are read again.
    client: RwLock<Arc<IdpClient>>,
    idp: Idp,
    /// When the keys were last read again, so an ID token under an unknown
    /// key cannot make the coordinator fetch them more than once a minute.
    last_refresh: Mutex<Option<Instant>>,
    /// Sign-ins started per source address: one address cannot fill the
    /// caps of pending sign-ins and device grants.
    starts: AuthThrottle,
    /// Refused codes, device codes and user codes per source address.
    failures: AuthThrottle,
    pub issuer: String,
    pub public_url: Url,
    /// Shown as "Sign in to DEPLOYMENT": the public URL's host.
    pub deployment: String,
    pub auto_create: bool,
    pub db: Db,
    pub flow: Mutex<Flow>,
}

impl Oidc {
    pub fn new(d: Discovered, db: Db, auto_create: bool) -> Self {
        let deployment = d
            .public_url
            .host_str()
            .unwrap_or("this Warren deployment")
            .to_string();
        Self {
            client: RwLock::new(Arc::new(d.client)),
            idp: d.idp,
            last_refresh: Mutex::new(None),
            starts: AuthThrottle::new(START_BURST, START_PER_MINUTE),
            failures: AuthThrottle::new(FAILURE_BURST, FAILURE_PER_MINUTE),
            issuer: d.issuer,
            public_url: d.public_url,
            deployment,
            auto_create,
            db,
            flow: Mutex::new(Flow::new(flow::DEFAULT_CAP)),
        }
    }

    /// Takes one sign-in start for `peer`'s address, or says how long it
    /// must wait.
    fn start_allowed(&self, peer: &Peer) -> Result<(), Duration> {
        let key = (source(peer), None);
        let now = Instant::now();
        if let Some(wait) = self.starts.check(&key, now) {
            return Err(wait);
        }
        if self.starts.failed(key, now) {
            tracing::info!(source = %source(peer), "sign-in starts from this address are being throttled");
        }
        Ok(())
    }

    /// How long `peer`'s address must wait after too many refused codes.
    fn failure_wait(&self, peer: &Peer) -> Option<Duration> {
        self.failures.check(&(source(peer), None), Instant::now())
    }

    fn failed(&self, peer: &Peer) {
        if self.failures.failed((source(peer), None), Instant::now()) {
            tracing::info!(source = %source(peer), "refused sign-in codes from this address are being throttled");
        }
    }

    fn client(&self) -> Arc<IdpClient> {
        // Poisoning leaves a whole client behind: keep using it.
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the provider's discovery document and keys again (after an ID
    /// token signed by a key we don't know: the provider may have rotated
    /// its keys), at most once a minute. Returns the new client if it did.
    async fn refresh_keys(&self) -> Option<Arc<IdpClient>> {
        {
            let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.saturating_duration_since(t) < KEY_REFRESH_INTERVAL) {
                return None;
            }
            *last = Some(now);
        }
        match self.idp.discover().await {
            Ok(client) => {
                tracing::info!(issuer = %self.issuer, "read the identity provider's signing keys again");
                let client = Arc::new(client);
                *self.client.write().unwrap_or_else(|e| e.into_inner()) = client.clone();
                Some(client)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, "cannot read the identity provider's keys again: {e:#}");
                None
            }
        }
    }

    /// `PUBLIC_URL/tokens`.
    fn tokens_url(&self) -> String {
        format!("{}/tokens", self.public_url.as_str().trim_end_matches('/'))
    }

    /// The tokens page's session cookie: only for that page, not readable
    /// by script, not sent with cross-site forms, over HTTPS only when the
    /// deployment is HTTPS.
    fn session_cookie(&self, sid: &str) -> String {
        let path = format!("{}/tokens", self.public_url.path().trim_end_matches('/'));
        let secure = if self.public_url.scheme() == "https" {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{SESSION_COOKIE}={sid}; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            flow::SESSION_TTL.as_secs()
        )
    }

    fn flow(&self) -> std::sync::MutexGuard<'_, Flow> {
        // A panic while holding the lock leaves plain maps behind, which
        // stay consistent: keep serving.
        self.flow.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type St = Option<Arc<Oidc>>;

/// The tokens page's session cookie.
const SESSION_COOKIE: &str = "warren_tokens_session";

/// The value of cookie `name` in the request, if any.
fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The tokens page: the person's own device tokens, or the way to sign in
/// to see them.
async fn tokens_page(
    State(oidc): State<St>,
    peer: Peer,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(oidc) = oidc else {
        return not_configured();
    };
    let now = Instant::now();
    let session = cookie(&headers, SESSION_COOKIE).and_then(|sid| oidc.flow().session(sid, now));
    let Some(session) = session else {
        if let Err(wait) = oidc.start_allowed(&peer) {
            return too_many_page(wait);
        }
        let begun = oidc.flow().begin(Target::Tokens, now);
        return match begun {
            Ok(id) => page(
                StatusCode::OK,
                pages::tokens_signin(&oidc.deployment, &format!("oidc/start/{id}")),
            ),
            Err(_) => busy(),
        };
    };
    render_tokens(&oidc, &session, None).await
}

async fn render_tokens(oidc: &Oidc, session: &flow::Session, notice: Option<&str>) -> Response {
    match oidc.db.list_own_tokens(&session.user_id).await {
        Ok(list) => {
            let rows: Vec<pages::TokenRow> = list
                .into_iter()
                .map(|t| pages::TokenRow {
                    device: t.device_name.clone().unwrap_or_else(|| {
                        "a token from an administrator (no device name)".to_string()
                    }),
                    id: t.id,
                    created: t.created_at,
                    last_used: t.last_used_at,
                })
                .collect();
            page(
                StatusCode::OK,
                pages::tokens(
                    &oidc.deployment,
                    &session.user,
                    &rows,
                    &session.csrf,
                    notice,
                ),
            )
        }
        Err(e) => CallbackError::Server(format!("cannot list tokens: {e}"))
            .into_response(&oidc.deployment),
    }
}

#[derive(serde::Deserialize)]
struct RevokeForm {
    id: String,
    csrf: String,
}

/// Revokes one of the person's tokens from the tokens page.
async fn tokens_revoke(
    State(oidc): State<St>,
    headers: axum::http::HeaderMap,
    form: Result<axum::Form<RevokeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(oidc) = oidc else {
        return not_configured();
    };
    let now = Instant::now();
    let form = form.ok().map(|axum::Form(f)| f);
    let session = match (cookie(&headers, SESSION_COOKIE), &form) {
        (Some(sid), Some(f)) => oidc.flow().session_with_csrf(sid, &f.csrf, now),
        _ => None,
    };
    let (Some(session), Some(form)) = (session, form) else {
        return page(
            StatusCode::FORBIDDEN,
            pages::error(
                "Your session on this page ended",
                "Signing a device out needs a recent sign-in on this page.",
                "Open the devices page again and sign in.",
            ),
        );
    };
    let notice = match oidc.db.revoke_own_token(&session.user_id, &form.id).await {
        Ok(()) => {
            tracing::info!(user = %session.user, token_id = %form.id, "a user revoked their token on the tokens page");
            "The device is signed out: its token no longer works."
        }
        Err(crate::db::DbError::NotFound(_)) => "That device was already signed out.",
        Err(e) => {
            return CallbackError::Server(format!("cannot revoke a token: {e}"))
                .into_response(&oidc.deployment)
        }
    };
    render_tokens(&oidc, &session, Some(notice)).await
}

/// The sign-in routes. Without `oidc` they answer with a page saying
/// this deployment uses tokens from an administrator.
pub fn router(oidc: Option<Arc<Oidc>>) -> Router {
    Router::new()
        .route("/signin", get(signin))
        .route("/oidc/start/{id}", get(start))
        .route("/oidc/callback", get(callback))
        .route("/api/v1/signin/token", post(token))
        .route("/api/v1/signin/device", post(device_begin))
        .route("/device", get(device_page))
        .route("/tokens", get(tokens_page))
        .route("/tokens/revoke", post(tokens_revoke))
        .layer(axum::middleware::from_fn(headers_and_log))
        .with_state(oidc)
}

/// No caching, no referrer (a code in a URL must not leak to another
/// site), no framing, no script; and a log line without the query.
async fn headers_and_log(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    // The pending sign-in's id in /oidc/start/{id} is the provider's
    // state: kept out of the log like the queries.
    let path = match req.uri().path() {
        p if p.starts_with("/oidc/start/") => "/oidc/start/…".to_string(),
        p => p.to_string(),
    };
    let mut resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "sign-in request");
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    resp
}

fn page(status: StatusCode, html: String) -> Response {
    (status, Html(html)).into_response()
}

fn not_configured() -> Response {
    page(
        StatusCode::NOT_FOUND,
        pages::error(
            "Browser sign-in is not set up here",
            "This Warren deployment does not sign people in through a browser.",
            "Ask your administrator for a token and sign in with it (warren login --token-stdin, or \"Use a token\" in the app).",
        ),
    )
}

fn expired_or_replayed() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        pages::error(
            "This sign-in link expired or was already used",
            "Each sign-in link works once, for ten minutes.",
            "Start again from the Warren app or with warren login.",
        ),
    )
}

fn busy() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::error(
            "Too many sign-ins in progress",
            "This coordinator is holding as many unfinished sign-ins as it allows.",
            "Try again in a few minutes; if it persists, tell your administrator.",
        ),
    )
}

async fn signin(
    State(oidc): State<St>,
    peer: Peer,
    q: Result<Query<SigninQuery>, QueryRejection>,
) -> Response {
    let Some(oidc) = oidc else {
        return not_configured();
    };
    let checked = q
        .map_err(|_| flow::RequestError::Unreadable)
        .and_then(|Query(q)| flow::validate(&q));
    let request = match checked {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("sign-in request refused: {e}");
            return page(
                StatusCode::BAD_REQUEST,
                pages::error(
                    "This sign-in request is not valid",
                    &format!("The link that opened this page is wrong: {e}."),
                    "Start again from the Warren app or with warren login; if this keeps happening, update Warren.",
                ),
            );
        }
    };
    if let Err(wait) = oidc.start_allowed(&peer) {
        return too_many_page(wait);
    }
    let device = request.device.clone();
    let id = match oidc.flow().begin(Target::Client(request), Instant::now()) {
        Ok(id) => id,
        Err(_) => return busy(),
    };
    page(
        StatusCode::OK,
        pages::signin(&oidc.deployment, &device, &format!("oidc/start/{id}")),
    )
}

async fn start(State(oidc): State<St>, Path(id): Path<String>) -> Response {
    let Some(oidc) = oidc else {
        return not_configured();
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = Nonce::new_random();
    let round = IdpRound {
        pkce_verifier: verifier.secret().clone(),
        nonce: nonce.secret().clone(),
    };
    if oidc.flow().start(&id, round, Instant::now()).is_err() {
        return expired_or_replayed();
    }
    let state = id.clone();
    let (url, _, _) = oidc
        .client()
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || nonce,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    redirect(url.as_str())
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::error(
                "Cannot continue the sign-in",
                "The address to continue at is not valid.",
                "Tell your administrator; the identity provider's configuration may be wrong.",
            ),
        ),
    }
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Errors of the callback, each a page.
enum CallbackError {
    Provider {
        error: String,
        description: Option<String>,
    },
    Exchange(String),
    IdToken(String),
    NotSetUp,
    Server(String),
}

impl CallbackError {
    fn into_response(self, deployment: &str) -> Response {
        match self {
            CallbackError::Provider { error, .. } if error == "access_denied" => page(
                StatusCode::FORBIDDEN,
                pages::error(
                    "You declined to sign in",
                    "The identity provider says you declined (access_denied), so Warren did not sign you in.",
                    "To sign in, start again from the Warren app or with warren login and accept.",
                ),
            ),
            CallbackError::Provider { error, description } => {
                let what = match description {
                    Some(d) => format!("The identity provider refused the sign-in: {error} ({d})."),
                    None => format!("The identity provider refused the sign-in: {error}."),
                };
                page(
                    StatusCode::BAD_GATEWAY,
                    pages::error(
                        "The identity provider refused the sign-in",
                        &what,
                        "Start again; if it happens again, tell your administrator what this page says.",
                    ),
                )
            }
            CallbackError::Exchange(why) => {
                tracing::warn!("sign-in failed at the code exchange: {why}");
                page(
                    StatusCode::BAD_GATEWAY,
                    pages::error(
                        "Sign-in could not be completed",
                        "The identity provider did not accept this coordinator's request to finish the sign-in.",
                        "Start again; if it happens again, tell your administrator (the coordinator's log says why).",
                    ),
                )
            }
            CallbackError::IdToken(why) => {
                tracing::warn!("sign-in refused: the ID token is not valid: {why}");
                page(
                    StatusCode::BAD_GATEWAY,
                    pages::error(
                        "Your sign-in could not be verified",
                        "The identity provider's answer did not pass verification (its ID token was not valid for this coordinator).",
                        "Start again; if it happens again, tell your administrator (the coordinator's log says why).",
                    ),
                )
            }
            CallbackError::NotSetUp => page(
                StatusCode::FORBIDDEN,
                pages::error(
                    "Your account isn't set up on this deployment",
                    &format!("You signed in at the identity provider, but {deployment} has no Warren user for that account."),
                    "Ask an administrator to add you, then sign in again.",
                ),
            ),
            CallbackError::Server(why) => {
                tracing::error!("sign-in failed: {why}");
                page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    pages::error(
                        "Sign-in failed on the coordinator",
                        "Something went wrong on this coordinator while finishing the sign-in.",
                        "Try again in a minute; if it keeps failing, tell your administrator.",
                    ),
                )
            }
        }
    }
}

async fn callback(
    State(oidc): State<St>,
    q: Result<Query<CallbackQuery>, QueryRejection>,
) -> Response {
    let Some(oidc) = oidc else {
        return not_configured();
    };
    // Without a readable state there is no sign-in to finish.
    let Ok(Query(q)) = q else {
        return expired_or_replayed();
    };
    let Some(state) = q.state.as_deref() else {
        return expired_or_replayed();
    };
    let (target, round) = match oidc.flow().take(state, Instant::now()) {
        Ok(x) => x,
        Err(e) => {
            tracing::info!("sign-in callback refused: {e}");
            return expired_or_replayed();
        }
    };
    let user = match finish(&oidc, q, round).await {
        Ok(user) => user,
        Err(e) => {
            if let (Target::Device { user_code, .. }, CallbackError::Provider { error, .. }) =
                (&target, &e)
            {
                if error == "access_denied" {
                    // The CLI hears access_denied at its next poll.
                    let _ = oidc.flow().device_settle(user_code, None, Instant::now());
                }
            }
            return e.into_response(&oidc.deployment);
        }
    };
    tracing::info!(user = %user.name, device = %target.device(), "signed in through the identity provider");
    let grant = Grant {
        user_id: user.id,
        user: user.name,
        device: target.device().to_string(),
    };
    let request = match target {
        Target::Client(request) => request,
        Target::Tokens => {
            let opened = oidc
                .flow()
                .session_new(grant.user_id, grant.user, Instant::now());
            let Ok(sid) = opened else {
                return busy();
            };
            let mut resp = redirect(&oidc.tokens_url());
            if let Ok(v) = HeaderValue::from_str(&oidc.session_cookie(&sid)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            return resp;
        }
        Target::Device { user_code, device } => {
            return match oidc
                .flow()
                .device_settle(&user_code, Some(grant), Instant::now())
            {
                Ok(()) => page(
                    StatusCode::OK,
                    pages::signed_in_device(&oidc.deployment, &device),
                ),
                Err(_) => expired_or_replayed(),
            };
        }
    };
    let code = match oidc
        .flow()
        .issue(grant, request.code_challenge.clone(), Instant::now())
    {
        Ok(c) => c,
        Err(_) => return busy(),
    };
    let mut back = match Url::parse(&request.redirect_uri) {
        Ok(u) => u,
        Err(e) => {
            return CallbackError::Server(format!("redirect address: {e}"))
                .into_response(&oidc.deployment)
        }
    };
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &request.state);
    match request.client {
        ClientKind::Cli => redirect(back.as_str()),
        ClientKind::App => page(
            StatusCode::OK,
            pages::signed_in_app(&oidc.deployment, back.as_str()),
        ),
    }
}

/// The identity provider's answer to the user: exchange, verify, match.
async fn finish(oidc: &Oidc, q: CallbackQuery, round: IdpRound) -> Result<User, CallbackError> {
    if let Some(error) = q.error {
        tracing::info!(error = %error, "the identity provider returned an error");
        return Err(CallbackError::Provider {
            error,
            description: q.error_description,
        });
    }
    let Some(code) = q.code else {
        return Err(CallbackError::Provider {
            error: "invalid_response".into(),
            description: Some("the answer had neither a code nor an error".into()),
        });
    };
    let client = oidc.client();
    let request = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| CallbackError::Exchange(error_chain(&e)))?
        .set_pkce_verifier(PkceCodeVerifier::new(round.pkce_verifier));
    let response = request
        .request_async(&oidc.idp.http)
        .await
        .map_err(|e| CallbackError::Exchange(error_chain(&e)))?;
    let id_token = response
        .id_token()
        .ok_or_else(|| CallbackError::IdToken("the token response has no ID token".into()))?;
    let nonce = Nonce::new(round.nonce);
    let mut client = client;
    let unknown_key = |e: &ClaimsVerificationError| {
        matches!(
            e,
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey
            )
        )
    };
    let first = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .cloned();
    let claims = match first {
        Ok(c) => c,
        Err(e) if unknown_key(&e) => {
            let Some(fresh) = oidc.refresh_keys().await else {
                return Err(CallbackError::IdToken(error_chain(&e)));
            };
            client = fresh;
            id_token
                .claims(&client.id_token_verifier(), &nonce)
                .cloned()
                .map_err(|e| CallbackError::IdToken(error_chain(&e)))?
        }
        Err(e) => return Err(CallbackError::IdToken(error_chain(&e))),
    };
    let verifier = client.id_token_verifier();
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token
            .signing_alg()
            .map_err(|e| CallbackError::IdToken(error_chain(&e)))?;
        let key = id_token
            .signing_key(&verifier)
            .map_err(|e| CallbackError::IdToken(error_chain(&e)))?;
        let actual = AccessTokenHash::from_token(response.access_token(), alg, key)
            .map_err(|e| CallbackError::IdToken(error_chain(&e)))?;
        if actual != *expected {
            return Err(CallbackError::IdToken(
                "the access token hash does not match".into(),
            ));
        }
    }
    let subject = claims.subject().as_str().to_string();
    let preferred = claims
        .preferred_username()
        .map(|u| u.as_str().to_string())
        .unwrap_or_else(|| subject.clone());
    match oidc.db.user_by_oidc(&oidc.issuer, &subject).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) if oidc.auto_create => oidc
            .db
            .create_oidc_user(&oidc.issuer, &subject, &preferred)
            .await
            .map_err(|e| CallbackError::Server(format!("cannot create the user: {e}"))),
        Ok(None) => {
            tracing::info!(issuer = %oidc.issuer, "sign-in refused: no user has this identity (add them, or serve with --oidc-auto-create)");
            Err(CallbackError::NotSetUp)
        }
        Err(e) => Err(CallbackError::Server(format!(
            "cannot look up the user: {e}"
        ))),
    }
}

#[derive(serde::Deserialize)]
struct DeviceQuery {
    code: Option<String>,
}

async fn device_page(State(oidc): State<St>, peer: Peer, Query(q): Query<DeviceQuery>) -> Response {
    let Some(oidc) = oidc else {
        return not_configured();
    };
    let Some(code) = q.code.filter(|c| !c.trim().is_empty()) else {
        return page(StatusCode::OK, pages::device_entry(&oidc.deployment, None));
    };
    // User codes are short: guessing them is throttled like codes.
    if let Some(wait) = oidc.failure_wait(&peer) {
        return too_many_page(wait);
    }
    let now = Instant::now();
    let found = oidc.flow().device_lookup(&code, now);
    let Some((user_code, device)) = found else {
        oidc.failed(&peer);
        return page(
            StatusCode::BAD_REQUEST,
            pages::device_entry(
                &oidc.deployment,
                Some("That code is unknown, expired or already used. Check it against the device, or start again there (warren login --device)."),
            ),
        );
    };
    let target = Target::Device {
        user_code: user_code.clone(),
        device: device.clone(),
    };
    if let Err(wait) = oidc.start_allowed(&peer) {
        return too_many_page(wait);
    }
    let begun = oidc.flow().begin(target, now);
    match begun {
        Ok(id) => page(
            StatusCode::OK,
            pages::device_confirm(
                &oidc.deployment,
                &device,
                &user_code,
                &format!("oidc/start/{id}"),
            ),
        ),
        Err(_) => busy(),
    }
}

#[derive(serde::Deserialize)]
struct DeviceRequest {
    device: Option<String>,
}

async fn device_begin(State(oidc): State<St>, peer: Peer, body: axum::body::Bytes) -> Response {
    let Some(oidc) = oidc else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "This deployment does not sign people in through a browser; ask an administrator for a token.",
        );
    };
    let device = serde_json::from_slice::<DeviceRequest>(&body)
        .ok()
        .and_then(|r| r.device)
        .map(|d| d.trim().to_string())
        .filter(|d| {
            !d.is_empty()
                && d.chars().count() <= flow::MAX_DEVICE_LEN
                && !d.chars().any(char::is_control)
        });
    let Some(device) = device else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The body must be JSON {\"device\":\"NAME\"} with a device name of 1 to 64 printable characters.",
        );
    };
    if let Err(wait) = oidc.start_allowed(&peer) {
        return too_many_json(wait);
    }
    let begun = oidc.flow().device_begin(device, Instant::now());
    let Ok(d) = begun else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "slow_down",
            "Too many sign-ins are in progress; try again in a few minutes.",
        );
    };
    let base = oidc.public_url.as_str().trim_end_matches('/');
    let uri = format!("{base}/device");
    (
        StatusCode::OK,
        Json(serde_json::json!({
            "device_code": d.device_code,
            "user_code": d.user_code,
            "verification_uri": uri,
            "verification_uri_complete": format!("{uri}?code={}", d.user_code),
            "expires_in": flow::DEVICE_TTL.as_secs(),
            "interval": flow::DEVICE_INTERVAL.as_secs(),
        })),
    )
        .into_response()
}

/// The device grant type of RFC 8628.
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[derive(serde::Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    device_code: Option<String>,
    code: Option<String>,
    code_verifier: Option<String>,
}

fn json_error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": error, "message": message })),
    )
        .into_response()
}

async fn token(State(oidc): State<St>, peer: Peer, body: axum::body::Bytes) -> Response {
    let Some(oidc) = oidc else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "This deployment does not sign people in through a browser; ask an administrator for a token.",
        );
    };
    if let Some(wait) = oidc.failure_wait(&peer) {
        return too_many_json(wait);
    }
    let Ok(req) = serde_json::from_slice::<TokenRequest>(&body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The body must be JSON: {\"grant_type\":\"authorization_code\",\"code\":\"…\",\"code_verifier\":\"…\"}.",
        );
    };
    let grant = match req.grant_type.as_deref() {
        Some("authorization_code") => {
            let (Some(code), Some(verifier)) = (req.code, req.code_verifier) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code and code_verifier are required.",
                );
            };
            let redeemed = oidc.flow().redeem(&code, &verifier, Instant::now());
            match redeemed {
                Ok(g) => g,
                Err(e) => {
                    tracing::info!("sign-in code refused: {e}");
                    oidc.failed(&peer);
                    let message = match e {
                        FlowError::WrongVerifier => "The code verifier does not match; the code is now used up. Sign in again.",
                        _ => "The code is unknown, expired or already used; codes work once, for 60 seconds. Sign in again.",
                    };
                    return json_error(StatusCode::BAD_REQUEST, "invalid_grant", message);
                }
            }
        }
        Some(DEVICE_GRANT) => {
            let Some(device_code) = req.device_code else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "device_code is required.",
                );
            };
            let polled = oidc.flow().device_poll(&device_code, Instant::now());
            match polled {
                Ok(g) => g,
                Err(e) => {
                    let (error, message) = match e {
                        FlowError::AuthorizationPending => ("authorization_pending", "The person has not finished signing in yet; poll again after the interval."),
                        FlowError::SlowDown => ("slow_down", "Polling too fast; wait 5 seconds longer between polls."),
                        FlowError::AccessDenied => ("access_denied", "The person declined the sign-in."),
                        _ => {
                            oidc.failed(&peer);
                            ("expired_token", "The device code is unknown or expired; start again with warren login --device.")
                        }
                    };
                    return json_error(StatusCode::BAD_REQUEST, error, message);
                }
            }
        }
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be authorization_code or urn:ietf:params:oauth:grant-type:device_code.",
            )
        }
    };
    match oidc
        .db
        .create_device_token(&grant.user_id, &grant.device, TokenOrigin::Browser)
        .await
    {
        Ok((token, token_id)) => {
            tracing::info!(user = %grant.user, device = %grant.device, token_id = %token_id, "device token minted");
            (
                StatusCode::OK,
                Json(serde_json::json!({
                    "token": token.expose(),
                    "user": grant.user,
                    "token_id": token_id,
                })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(user = %grant.user, "cannot mint a device token: {e}");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The coordinator could not store the new token; try signing in again, and tell your administrator if it keeps failing.",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("x=y;warren_tokens_session=abc; z=w"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "warren_tokens"), None);
        assert_eq!(cookie(&axum::http::HeaderMap::new(), SESSION_COOKIE), None);
    }

    #[test]
    fn addresses_count_per_source() {
        let v4: Peer = Some(Extension(PeerAddr("192.0.2.7:5555".parse().unwrap())));
        assert_eq!(source(&v4), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: Peer = Some(Extension(PeerAddr(
            "[2001:db8:1:2:3:4:5:6]:443".parse().unwrap(),
        )));
        assert_eq!(source(&v6), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(source(&None), IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn throttled_answers_carry_retry_after() {
        let r = too_many_page(Duration::from_secs(7));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let r = too_many_json(Duration::from_secs(3));
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    }
}
