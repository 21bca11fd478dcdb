//! Signing in through the browser (docs/signin.md): the client side of
//! flow 1 (a `state` and PKCE pair, the `/signin` URL, checking what comes
//! back and exchanging the one-time code for a device token), the CLI's
//! loopback listener (RFC 8252) that receives the redirect, and flow 2, the
//! device code (RFC 8628) for machines without a browser.
//!
//! The app reuses [`SignInRequest`] with [`Client::App`] and
//! `warren://signin` as redirect URI, checks the deep link with
//! [`SignInRequest::check_callback_query`] and calls
//! [`SignInRequest::exchange`]. Tokens, codes and verifiers are [`Secret`]s
//! so they never show in `Debug` output or logs.

use crate::signin::{causes, http_client, is_certificate_error, SignInError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use warren_proto::Secret;

/// Where the sign-in token is exchanged and device codes polled.
pub const TOKEN_PATH: &str = "/api/v1/signin/token";
/// Where a device-code sign-in starts.
pub const DEVICE_PATH: &str = "/api/v1/signin/device";
/// The app's redirect URI (a deep link).
pub const APP_REDIRECT_URI: &str = "warren://signin";
/// How long the CLI waits for the browser by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A browser's GET for /callback fits easily; anything bigger is not one.
const MAX_REQUEST: usize = 8 * 1024;
/// A connection that sends no request in this time (a browser preconnect) is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DEVICE_LEN: usize = 64;

/// Which Warren client is signing in; the coordinator accepts a different
/// redirect URI for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    App,
    Cli,
}

impl Client {
    fn as_str(self) -> &'static str {
        match self {
            Client::App => "app",
            Client::Cli => "cli",
        }
    }
}

/// Why a browser or device sign-in failed. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BrowserSignInError {
    /// Reaching the coordinator failed (certificate, connection, bad CA).
    #[error(transparent)]
    Connect(#[from] SignInError),
    #[error("the sign-in answer carried no state; it did not come from this sign-in. Run `warren login` again")]
    StateMissing,
    #[error("the sign-in answer belongs to another sign-in (its state doesn't match); ignore it and finish the sign-in in the browser window this one opened, or run `warren login` again")]
    StateMismatch,
    #[error("the sign-in answer carried no code; run `warren login` again")]
    NoCode,
    #[error("the sign-in was not completed ({error}{}); run `warren login` again", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error("the coordinator refused the sign-in: {message} Run `warren login` again")]
    InvalidGrant { message: String },
    #[error("the coordinator at {url} doesn't offer browser sign-in; ask your administrator for a token and use `warren login --url {url} --token-stdin`")]
    NotEnabled { url: String },
    #[error("the coordinator at {url} gave an unexpected answer (HTTP {status}{}); check the URL, or ask your administrator for a token", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Unexpected {
        url: String,
        status: u16,
        message: Option<String>,
    },
    #[error("the device code expired before the sign-in was confirmed; run `warren login --device` again and confirm the code sooner")]
    DeviceExpired,
    #[error("the sign-in was declined in the browser; run `warren login --device` again if that was a mistake")]
    DeviceDenied,
    #[error("no sign-in arrived within {}; run `warren login` again, or use --device on a machine without a browser", minutes(*.0))]
    Timeout(Duration),
    #[error("can't listen on 127.0.0.1 for the browser's answer ({0}); use `warren login --device` instead")]
    Listen(std::io::Error),
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        let m = s / 60;
        format!("{m} minute{}", if m == 1 { "" } else { "s" })
    } else {
        format!("{s} seconds")
    }
}

fn random_b64url(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url(SHA-256(verifier)), the S256 code challenge of RFC 7636.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// This computer's name for the token list: host name and OS,
/// e.g. "alice-laptop (Linux)", at most 64 characters.
pub fn device_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = host.trim();
    let host = if host.is_empty() { "computer" } else { host };
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "macOS",
        "windows" => "Windows",
        other => other,
    };
    clamp_device(&format!("{host} ({os})"))
}

fn clamp_device(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control())
        .take(MAX_DEVICE_LEN)
        .collect()
}

/// One browser sign-in in progress: its `state`, PKCE verifier and the URL
/// to open.
#[derive(Debug)]
pub struct SignInRequest {
    coordinator_url: String,
    state: Secret,
    verifier: Secret,
    url: String,
    ca_pem: Option<String>,
}

/// A finished sign-in: the new device token and whose it is.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub token: Secret,
    pub user: String,
    pub token_id: Option<String>,
}

impl SignInRequest {
    /// Makes a fresh `state` and PKCE pair and the `/signin` URL.
    /// `coordinator_url` is normalized (see [`crate::signin::normalize_url`]).
    pub fn new(
        coordinator_url: &str,
        client: Client,
        redirect_uri: &str,
        device_name: &str,
    ) -> Self {
        let base = coordinator_url.trim_end_matches('/').to_string();
        let state = random_b64url(24);
        let verifier = random_b64url(32);
        let challenge = pkce_challenge(&verifier);
        let query: String = [
            ("client", client.as_str()),
            ("redirect_uri", redirect_uri),
            ("state", state.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("device", &clamp_device(device_name)),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
        let url = format!("{base}/signin?{query}");
        SignInRequest {
            coordinator_url: base,
            state: Secret::new(state),
            verifier: Secret::new(verifier),
            url,
            ca_pem: None,
        }
    }

    /// Trust this extra CA (PEM) when talking to the coordinator.
    pub fn with_ca(mut self, ca_pem: Option<&str>) -> Self {
        self.ca_pem = ca_pem.map(str::to_string);
        self
    }

    /// The URL to open in the browser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks what came back to the redirect URI: `state` must be the one
    /// this request made (compared in constant time), then the code is
    /// returned. An `error` with the right state is reported as such.
    pub fn check_callback(
        &self,
        received_state: Option<&str>,
        code: Option<&str>,
    ) -> Result<Secret, BrowserSignInError> {
        let state = received_state
            .filter(|s| !s.is_empty())
            .ok_or(BrowserSignInError::StateMissing)?;
        let expected = self.state.expose().as_bytes();
        if !bool::from(state.as_bytes().ct_eq(expected)) {
            return Err(BrowserSignInError::StateMismatch);
        }
        code.filter(|c| !c.is_empty())
            .map(Secret::new)
            .ok_or(BrowserSignInError::NoCode)
    }

    /// [`check_callback`](Self::check_callback) on a raw query string
    /// (`code=…&state=…`, or `error=…&state=…`).
    pub fn check_callback_query(&self, query: &str) -> Result<Secret, BrowserSignInError> {
        let params = parse_query(query);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        if let Some(error) = get("error") {
            // Only trust an error that belongs to this sign-in.
            self.check_callback(get("state"), Some("-"))?;
            return Err(BrowserSignInError::Denied {
                error: error.to_string(),
                description: get("error_description").map(str::to_string),
            });
        }
        self.check_callback(get("state"), get("code"))
    }

    /// Exchanges the one-time code for a device token
    /// (`POST /api/v1/signin/token` with this request's verifier).
    pub async fn exchange(&self, code: &Secret) -> Result<SignedIn, BrowserSignInError> {
        let client = http_client(REQUEST_TIMEOUT, self.ca_pem.as_deref())?;
        let body = serde_json::json!({
            "grant_type": "authorization_code",
            "code": code.expose(),
            "code_verifier": self.verifier.expose(),
        });
        match post_token(&client, &self.coordinator_url, &body).await? {
            TokenAnswer::Token(t) => Ok(t),
            TokenAnswer::Error { error, message } => Err(match error.as_str() {
                "not_found" => BrowserSignInError::NotEnabled {
                    url: self.coordinator_url.clone(),
                },
                _ => BrowserSignInError::InvalidGrant { message },
            }),
        }
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

enum TokenAnswer {
    Token(SignedIn),
    Error { error: String, message: String },
}

#[derive(serde::Deserialize)]
struct TokenBody {
    token: String,
    user: String,
    token_id: Option<String>,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: String,
}

fn connect_error(url: &str, e: reqwest::Error) -> SignInError {
    let chain = causes(&e);
    let cause = chain.last().cloned().unwrap_or_default();
    if is_certificate_error(&chain) {
        SignInError::Certificate {
            url: url.to_string(),
            cause,
        }
    } else if e.is_timeout() {
        SignInError::Unreachable {
            url: url.to_string(),
            cause: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
        }
    } else {
        SignInError::Unreachable {
            url: url.to_string(),
            cause,
        }
    }
}

async fn post_json(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<(u16, Vec<u8>), BrowserSignInError> {
    let resp = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .map_err(|e| connect_error(base, e))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| connect_error(base, e))?;
    Ok((status, bytes.to_vec()))
}

async fn post_token(
    client: &reqwest::Client,
    base: &str,
    body: &serde_json::Value,
) -> Result<TokenAnswer, BrowserSignInError> {
    let (status, bytes) = post_json(client, base, TOKEN_PATH, body).await?;
    if status == 200 {
        let t: TokenBody =
            serde_json::from_slice(&bytes).map_err(|_| BrowserSignInError::Unexpected {
                url: base.to_string(),
                status,
                message: None,
            })?;
        return Ok(TokenAnswer::Token(SignedIn {
            token: Secret::new(t.token),
            user: t.user,
            token_id: t.token_id,
        }));
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(e) => Ok(TokenAnswer::Error {
            error: e.error,
            message: e.message,
        }),
        Err(_) if status == 404 => Err(BrowserSignInError::NotEnabled {
            url: base.to_string(),
        }),
        Err(_) => Err(BrowserSignInError::Unexpected {
            url: base.to_string(),
            status,
            message: None,
        }),
    }
}

/// Checks that the coordinator offers browser sign-in before a browser is
/// opened: an empty token request is answered 404 by a coordinator without
/// an identity provider and 400 by one with. Connection and certificate
/// problems surface here too, instead of in a browser tab.
pub async fn check_available(
    coordinator_url: &str,
    ca_pem: Option<&str>,
) -> Result<(), BrowserSignInError> {
    let base = coordinator_url.trim_end_matches('/');
    let client = http_client(REQUEST_TIMEOUT, ca_pem)?;
    match post_token(&client, base, &serde_json::json!({})).await? {
        TokenAnswer::Error { error, .. } if error == "not_found" => {
            Err(BrowserSignInError::NotEnabled {
                url: base.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// A device-code sign-in begun at the coordinator: show `user_code` and
/// `verification_uri` to the person, then [`poll_device`].
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DeviceGrant {
    device_code: Secret,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds between polls.
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Seconds the device code lives.
    pub expires_in: u64,
}

fn default_interval() -> u64 {
    5
}

/// Starts a device-code sign-in (`POST /api/v1/signin/device`).
pub async fn start_device(
    coordinator_url: &str,
    device_name: &str,
    ca_pem: Option<&str>,
) -> Result<DeviceGrant, BrowserSignInError> {
    let base = coordinator_url.trim_end_matches('/');
    let client = http_client(REQUEST_TIMEOUT, ca_pem)?;
    let body = serde_json::json!({ "device": clamp_device(device_name) });
    let (status, bytes) = post_json(&client, base, DEVICE_PATH, &body).await?;
    if status == 200 {
        return serde_json::from_slice(&bytes).map_err(|_| BrowserSignInError::Unexpected {
            url: base.to_string(),
            status,
            message: None,
        });
    }
    let message = serde_json::from_slice::<ErrorBody>(&bytes).ok();
    if status == 404 {
        return Err(BrowserSignInError::NotEnabled {
            url: base.to_string(),
        });
    }
    Err(BrowserSignInError::Unexpected {
        url: base.to_string(),
        status,
        message: message.map(|m| m.message),
    })
}

/// Polls until the person confirms the code (honouring `interval` and
/// `slow_down`), it expires, or they decline.
pub async fn poll_device(
    coordinator_url: &str,
    grant: &DeviceGrant,
    ca_pem: Option<&str>,
) -> Result<SignedIn, BrowserSignInError> {
    poll_device_paced(coordinator_url, grant, ca_pem, Duration::from_secs(1)).await
}

/// [`poll_device`] with the length of the protocol's "second" as a
/// parameter, so tests run the same logic in milliseconds.
async fn poll_device_paced(
    coordinator_url: &str,
    grant: &DeviceGrant,
    ca_pem: Option<&str>,
    second: Duration,
) -> Result<SignedIn, BrowserSignInError> {
    let base = coordinator_url.trim_end_matches('/');
    let client = http_client(REQUEST_TIMEOUT, ca_pem)?;
    let deadline = Instant::now() + second * u32::try_from(grant.expires_in).unwrap_or(u32::MAX);
    let mut interval = grant.interval.max(1);
    let body = serde_json::json!({
        "grant_type": DEVICE_GRANT,
        "device_code": grant.device_code.expose(),
    });
    loop {
        let wait = second * u32::try_from(interval).unwrap_or(u32::MAX);
        if Instant::now() + wait > deadline {
            return Err(BrowserSignInError::DeviceExpired);
        }
        tokio::time::sleep(wait).await;
        let answer = match post_token(&client, base, &body).await {
            Ok(a) => a,
            // A blip while the person is busy in the browser is not the end.
            Err(BrowserSignInError::Connect(SignInError::Unreachable { cause, .. })) => {
                tracing::warn!("polling the coordinator failed ({cause}); trying again");
                continue;
            }
            Err(e) => return Err(e),
        };
        match answer {
            TokenAnswer::Token(t) => return Ok(t),
            TokenAnswer::Error { error, message } => match error.as_str() {
                "authorization_pending" => {}
                "slow_down" => interval += 5,
                "expired_token" => return Err(BrowserSignInError::DeviceExpired),
                "access_denied" => return Err(BrowserSignInError::DeviceDenied),
                "not_found" => {
                    return Err(BrowserSignInError::NotEnabled {
                        url: base.to_string(),
                    })
                }
                _ => return Err(BrowserSignInError::InvalidGrant { message }),
            },
        }
    }
}

/// The CLI's loopback listener (RFC 8252): 127.0.0.1 on a port the OS
/// picks, receiving the browser's redirect to `/callback`.
#[derive(Debug)]
pub struct Loopback {
    listener: TcpListener,
    port: u16,
}

/// The browser's request that carried a valid code; answer it with
/// [`Callback::finish`] once the exchange is done, so the tab tells the truth.
#[derive(Debug)]
pub struct Callback {
    pub code: Secret,
    stream: TcpStream,
}

impl Callback {
    /// Answers the browser: "Signed in" for `Ok(user)`, else the error.
    pub async fn finish(mut self, outcome: Result<&str, &str>) {
        let (status, page) = match outcome {
            Ok(user) => (
                "200 OK",
                page(
                    "Signed in",
                    &format!("Signed in as {user} — you can close this tab."),
                ),
            ),
            Err(e) => ("400 Bad Request", page("Sign-in failed", e)),
        };
        respond(&mut self.stream, status, &page).await;
    }
}

impl Loopback {
    pub async fn bind() -> Result<Self, BrowserSignInError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(BrowserSignInError::Listen)?;
        let port = listener
            .local_addr()
            .map_err(BrowserSignInError::Listen)?
            .port();
        Ok(Loopback { listener, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// Accepts connections until a GET /callback carries `request`'s state
    /// and a code, or `timeout` passes. Other paths get a 404; a callback
    /// with a wrong or missing state gets an error page and is otherwise
    /// ignored (it is not this sign-in's), so the real one still works; an
    /// `error` answer with the right state ends the wait.
    pub async fn wait(
        self,
        request: &SignInRequest,
        timeout: Duration,
    ) -> Result<Callback, BrowserSignInError> {
        let deadline = Instant::now() + timeout;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(TcpStream, String)>(8);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(BrowserSignInError::Timeout(timeout));
                }
                accepted = self.listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    // Each connection reads its request on its own, so a
                    // browser's idle preconnect can't block the real one.
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Some(got) = read_callback(stream).await {
                            let _ = tx.send(got).await;
                        }
                    });
                }
                Some((mut stream, query)) = rx.recv() => {
                    match request.check_callback_query(&query) {
                        Ok(code) => return Ok(Callback { code, stream }),
                        Err(e @ (BrowserSignInError::StateMissing | BrowserSignInError::StateMismatch)) => {
                            tracing::warn!("refused a sign-in answer that is not this sign-in's: {e}");
                            respond(&mut stream, "400 Bad Request", &page("Not this sign-in", &e.to_string())).await;
                        }
                        Err(e) => {
                            respond(&mut stream, "400 Bad Request", &page("Sign-in failed", &e.to_string())).await;
                            return Err(e);
                        }
                    }
                }
            }
        }
    }
}

/// Reads one request head; answers anything but GET /callback itself and
/// hands back the stream and query of a callback.
async fn read_callback(mut stream: TcpStream) -> Option<(TcpStream, String)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST {
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                &page("Too large", "This request is too large."),
            )
            .await;
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/callback" {
        respond(
            &mut stream,
            "404 Not Found",
            &page("Not found", "Nothing here."),
        )
        .await;
        return None;
    }
    Some((stream, query.to_string()))
}

fn page(title: &str, text: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} — Warren</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{}</h1><p>{}</p></body></html>",
        esc(title),
        esc(title),
        esc(text)
    )
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nreferrer-policy: no-referrer\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(READ_TIMEOUT, async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The commands [`open_browser`] tries in order: each entry of `$BROWSER`
/// (`browser_env`, the colon-separated list convention — `;` on Windows —
/// with `%s` standing for the URL, else the URL appended), then the
/// platform's opener.
pub fn browser_commands(url: &str, browser_env: Option<&str>) -> Vec<(String, Vec<String>)> {
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    for b in browser_env
        .unwrap_or("")
        .split(if cfg!(windows) { ';' } else { ':' })
    {
        let mut words = b.split_whitespace().map(str::to_string);
        let Some(program) = words.next() else {
            continue;
        };
        let mut args: Vec<String> = words.collect();
        if args.iter().any(|a| a.contains("%s")) {
            args = args.into_iter().map(|a| a.replace("%s", url)).collect();
        } else {
            args.push(url.to_string());
        }
        commands.push((program, args));
    }
    if cfg!(target_os = "macos") {
        commands.push(("open".into(), vec![url.into()]));
    } else if cfg!(windows) {
        // rundll32 takes the URL as one argument; `cmd /c start` would split it at every &.
        commands.push((
            "rundll32".into(),
            vec!["url.dll,FileProtocolHandler".into(), url.into()],
        ));
    } else {
        commands.push(("xdg-open".into(), vec![url.into()]));
    }
    commands
}

/// Opens `url` in the person's browser (the CLI's and the app's browser
/// sign-in): the first of [`browser_commands`] that starts. Never waits for
/// the browser itself. The error names the last command that failed.
pub fn open_browser(url: &str) -> Result<(), String> {
    use std::process::{Command, Stdio};
    let browser_env = std::env::var("BROWSER").ok();
    let mut last = None;
    for (program, args) in browser_commands(url, browser_env.as_deref()) {
        match Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(format!("{program}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| "no browser opener found".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_entries_come_first_with_the_url_in_place_of_percent_s() {
        let url = "https://c.example/signin?a=1&b=2";
        let sep = if cfg!(windows) { ";" } else { ":" };
        let env = format!("firefox --new-tab{sep}{sep}capture %s --flag");
        let commands = browser_commands(url, Some(&env));
        assert_eq!(commands.len(), 3, "{commands:?}");
        assert_eq!(commands[0].0, "firefox");
        assert_eq!(commands[0].1, ["--new-tab", url]);
        assert_eq!(commands[1].0, "capture");
        assert_eq!(commands[1].1, [url, "--flag"]);
        // The platform's opener comes last, with the URL as one argument.
        assert!(commands[2].1.iter().any(|a| a == url), "{commands:?}");
        assert_eq!(browser_commands(url, None).len(), 1);
    }
    use std::sync::{Arc, Mutex};

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    fn param(url: &str, key: &str) -> Option<String> {
        parse_query(url.split_once('?')?.1)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    #[test]
    fn the_signin_url_carries_state_and_challenge() {
        let req = SignInRequest::new(
            "https://warren.example.com/",
            Client::Cli,
            "http://127.0.0.1:4567/callback",
            "alice-laptop (Linux)",
        );
        let url = req.url();
        assert!(
            url.starts_with("https://warren.example.com/signin?"),
            "{url}"
        );
        assert_eq!(param(url, "client").as_deref(), Some("cli"));
        assert_eq!(
            param(url, "redirect_uri").as_deref(),
            Some("http://127.0.0.1:4567/callback")
        );
        assert_eq!(
            param(url, "device").as_deref(),
            Some("alice-laptop (Linux)")
        );
        assert_eq!(param(url, "code_challenge_method").as_deref(), Some("S256"));
        let state = param(url, "state").unwrap();
        assert!(URL_SAFE_NO_PAD.decode(&state).unwrap().len() >= 16);
        assert_eq!(state, req.state.expose());
        assert_eq!(
            param(url, "code_challenge").unwrap(),
            pkce_challenge(req.verifier.expose())
        );
        assert_eq!(
            URL_SAFE_NO_PAD.decode(req.verifier.expose()).unwrap().len(),
            32
        );
        // A second request has its own state and verifier.
        let other = SignInRequest::new("https://w.example", Client::App, APP_REDIRECT_URI, "x");
        assert_ne!(other.state.expose(), req.state.expose());
        assert_ne!(other.verifier.expose(), req.verifier.expose());
        assert_eq!(param(other.url(), "client").as_deref(), Some("app"));
        // Debug output doesn't show the verifier (the state is in the URL anyway).
        let dbg = format!("{req:?}");
        assert!(!dbg.contains(req.verifier.expose()), "{dbg}");
    }

    #[test]
    fn callbacks_need_this_requests_state() {
        let req = SignInRequest::new(
            "https://w.example",
            Client::Cli,
            "http://127.0.0.1:1/callback",
            "d",
        );
        let state = req.state.expose().to_string();
        let code = req.check_callback(Some(&state), Some("the-code")).unwrap();
        assert_eq!(code.expose(), "the-code");
        assert!(matches!(
            req.check_callback(None, Some("c")),
            Err(BrowserSignInError::StateMissing)
        ));
        assert!(matches!(
            req.check_callback(Some("forged"), Some("c")),
            Err(BrowserSignInError::StateMismatch)
        ));
        assert!(matches!(
            req.check_callback(Some(&state), None),
            Err(BrowserSignInError::NoCode)
        ));
        let q = format!("code=abc%2Bd&state={state}");
        assert_eq!(req.check_callback_query(&q).unwrap().expose(), "abc+d");
        let q = format!("error=access_denied&error_description=no+thanks&state={state}");
        let err = req.check_callback_query(&q).unwrap_err().to_string();
        assert!(
            err.contains("access_denied: no thanks") && err.contains("warren login"),
            "{err}"
        );
        // An error that is not ours is a mismatch, not a verdict.
        assert!(matches!(
            req.check_callback_query("error=access_denied&state=other"),
            Err(BrowserSignInError::StateMismatch)
        ));
    }

    #[test]
    fn device_names_are_host_and_os() {
        let name = device_name();
        assert!(name.ends_with(')') && name.contains(" ("), "{name}");
        assert!(name.chars().count() <= 64);
        assert_eq!(clamp_device(&"x".repeat(100)).len(), 64);
    }

    /// A fake coordinator answering each POST with the next canned answer
    /// and recording the bodies.
    async fn fake(answers: Vec<(&'static str, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for (status, body) in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if rest.len() >= len {
                            let line = head.lines().next().unwrap().to_string();
                            log.lock().unwrap().push(format!("{line} {rest}"));
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        (url, seen)
    }

    fn err(e: &str) -> (&'static str, String) {
        (
            "400 Bad Request",
            format!(r#"{{"error":"{e}","message":"m"}}"#),
        )
    }

    fn grant(interval: u64, expires_in: u64) -> DeviceGrant {
        DeviceGrant {
            device_code: Secret::new("dc-secret"),
            user_code: "ABCD-EFGH".into(),
            verification_uri: "https://w/device".into(),
            verification_uri_complete: None,
            interval,
            expires_in,
        }
    }

    const MS: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn device_polling_waits_slows_down_and_gets_the_token() {
        let ok = (
            "200 OK",
            r#"{"token":"wut_x.y","user":"alice","token_id":"t1"}"#.to_string(),
        );
        let (url, seen) = fake(vec![err("authorization_pending"), err("slow_down"), ok]).await;
        let start = Instant::now();
        let signed = poll_device_paced(&url, &grant(2, 600), None, MS)
            .await
            .unwrap();
        let took = start.elapsed();
        assert_eq!(signed.user, "alice");
        assert_eq!(signed.token.expose(), "wut_x.y");
        // 2 + 2 + (2 + 5) "seconds" of 10 ms: slow_down added five.
        assert!(took >= MS * 11, "{took:?}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(
            seen[0].starts_with("POST /api/v1/signin/token"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains(DEVICE_GRANT) && seen[0].contains("dc-secret"),
            "{}",
            seen[0]
        );
        assert!(!format!("{signed:?}").contains("wut_x"));
    }

    #[tokio::test]
    async fn device_polling_ends_on_expiry_denial_and_deadline() {
        let (url, _) = fake(vec![err("authorization_pending"), err("expired_token")]).await;
        let e = poll_device_paced(&url, &grant(1, 600), None, MS)
            .await
            .unwrap_err();
        assert!(matches!(e, BrowserSignInError::DeviceExpired), "{e}");
        assert!(e.to_string().contains("`warren login --device` again"));

        let (url, _) = fake(vec![err("access_denied")]).await;
        let e = poll_device_paced(&url, &grant(1, 600), None, MS)
            .await
            .unwrap_err();
        assert!(matches!(e, BrowserSignInError::DeviceDenied), "{e}");

        // Always pending: the overall deadline (expires_in) ends it.
        let (url, seen) = fake((0..20).map(|_| err("authorization_pending")).collect()).await;
        let e = poll_device_paced(&url, &grant(1, 5), None, MS)
            .await
            .unwrap_err();
        assert!(matches!(e, BrowserSignInError::DeviceExpired), "{e}");
        assert!(seen.lock().unwrap().len() <= 5);
    }

    #[tokio::test]
    async fn start_device_and_exchange_speak_the_wire() {
        let body = r#"{"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"https://w/device","verification_uri_complete":"https://w/device?code=ABCD-EFGH","expires_in":600,"interval":5}"#;
        let (url, seen) = fake(vec![("200 OK", body.to_string())]).await;
        let g = start_device(&url, "box (Linux)", None).await.unwrap();
        assert_eq!(g.user_code, "ABCD-EFGH");
        assert_eq!((g.interval, g.expires_in), (5, 600));
        assert!(!format!("{g:?}").contains("\"dc\""));
        let sent = seen.lock().unwrap()[0].clone();
        assert!(
            sent.starts_with("POST /api/v1/signin/device")
                && sent.contains(r#""device":"box (Linux)""#),
            "{sent}"
        );

        let (url, seen) = fake(vec![err("invalid_grant")]).await;
        let req = SignInRequest::new(&url, Client::Cli, "http://127.0.0.1:1/callback", "d");
        let e = req.exchange(&Secret::new("code1")).await.unwrap_err();
        assert!(matches!(e, BrowserSignInError::InvalidGrant { .. }), "{e}");
        let sent = seen.lock().unwrap()[0].clone();
        assert!(
            sent.contains(r#""grant_type":"authorization_code""#) && sent.contains("code1"),
            "{sent}"
        );
        assert!(sent.contains(req.verifier.expose()), "{sent}");

        let (url, _) = fake(vec![("404 Not Found", "nope".into())]).await;
        let e = start_device(&url, "d", None).await.unwrap_err();
        assert!(e.to_string().contains("--token-stdin"), "{e}");
    }

    #[tokio::test]
    async fn availability_is_checked_before_the_browser_opens() {
        let (url, seen) = fake(vec![err("unsupported_grant_type")]).await;
        check_available(&url, None).await.unwrap();
        assert!(seen.lock().unwrap()[0].starts_with("POST /api/v1/signin/token"));
        let (url, _) = fake(vec![(
            "404 Not Found",
            r#"{"error":"not_found","message":"ask an administrator"}"#.to_string(),
        )])
        .await;
        let e = check_available(&url, None).await.unwrap_err();
        assert!(matches!(e, BrowserSignInError::NotEnabled { .. }), "{e}");
        assert!(e.to_string().contains("--token-stdin"), "{e}");
    }

    async fn get(port: u16, target: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_loopback_listener_takes_only_this_sign_ins_callback() {
        let lb = Loopback::bind().await.unwrap();
        let port = lb.port();
        let req = SignInRequest::new("https://w.example", Client::Cli, &lb.redirect_uri(), "d");
        let state = req.state.expose().to_string();
        let client = tokio::spawn(async move {
            // An idle connection (a browser preconnect) must not block anything.
            let _idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let favicon = get(port, "/favicon.ico").await;
            assert!(favicon.starts_with("HTTP/1.1 404"), "{favicon}");
            let forged = get(port, "/callback?code=evil&state=forged").await;
            assert!(
                forged.starts_with("HTTP/1.1 400") && forged.contains("another sign-in"),
                "{forged}"
            );
            let huge = format!("/callback?x={}", "a".repeat(20_000));
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let _ = s
                .write_all(format!("GET {huge} HTTP/1.1\r\n\r\n").as_bytes())
                .await;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            assert!(out.starts_with("HTTP/1.1 431"), "{out}");
            get(port, &format!("/callback?code=good&state={state}")).await
        });
        let cb = lb.wait(&req, Duration::from_secs(10)).await.unwrap();
        assert_eq!(cb.code.expose(), "good");
        cb.finish(Ok("alice")).await;
        let page = client.await.unwrap();
        assert!(
            page.starts_with("HTTP/1.1 200") && page.contains("you can close this tab"),
            "{page}"
        );
    }

    #[tokio::test]
    async fn the_loopback_listener_gives_up_after_its_timeout() {
        let lb = Loopback::bind().await.unwrap();
        let req = SignInRequest::new("https://w.example", Client::Cli, &lb.redirect_uri(), "d");
        let e = lb.wait(&req, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(e, BrowserSignInError::Timeout(_)), "{e}");
        assert!(BrowserSignInError::Timeout(DEFAULT_TIMEOUT)
            .to_string()
            .contains(
                "no sign-in arrived within 5 minutes; run `warren login` again, or use --device"
            ));
    }
}
