//! A real OpenID Provider and a real browser for the browser sign-in tests:
//! [`TestProvider`] runs `tests/oidc/provider.mjs` (the certified npm
//! `oidc-provider`) on 127.0.0.1 with the clients, users and misbehaviour
//! knobs of a [`ProviderConfig`]; [`drive_browser`] runs
//! `tests/oidc/browser.mjs` (headless Debian Chromium through
//! playwright-core) through the coordinator's sign-in page and the
//! provider's login and consent. Small helpers for the test's own side of
//! the protocol (PKCE, a plain HTTP/1.1 client, JWT decoding, query parsing)
//! live here too, so tests need no HTTP or crypto crates of their own.
//!
//! Both scripts need `npm --prefix tests/oidc ci` to have run.

use crate::proc::{die_with_parent, Proc};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `tests/oidc`, the npm package holding both scripts.
pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Panics with the fix when the npm dependencies aren't installed.
fn require_node_modules() {
    let dir = oidc_dir();
    for dep in ["oidc-provider", "playwright-core", "jose"] {
        assert!(
            dir.join("node_modules").join(dep).is_dir(),
            "{} has no node_modules/{dep}: run `npm --prefix tests/oidc ci` first",
            dir.display()
        );
    }
}

/// How a client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with client id and secret (oidc-provider's default).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// A client registered at the provider.
#[derive(Clone, Debug)]
pub struct TestClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub auth: ClientAuth,
    /// Loopback redirect URIs match on any port (RFC 8252 native client),
    /// for relying parties whose port is only known once they listen.
    pub any_loopback_port: bool,
}

impl TestClient {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        Self {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            redirect_uris: vec![redirect_uri.to_string()],
            auth: ClientAuth::Basic,
            any_loopback_port: false,
        }
    }

    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.to_string());
        self
    }

    pub fn auth(mut self, auth: ClientAuth) -> Self {
        self.auth = auth;
        self
    }

    pub fn any_loopback_port(mut self) -> Self {
        self.any_loopback_port = true;
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": self.redirect_uris,
            "token_endpoint_auth_method": match self.auth {
                ClientAuth::Basic => "client_secret_basic",
                ClientAuth::Post => "client_secret_post",
            },
            "any_loopback_port": self.any_loopback_port,
        })
    }
}

/// A person who can sign in at the provider's login form.
#[derive(Clone, Debug)]
pub struct TestUser {
    /// The ID token's `sub`.
    pub subject: String,
    pub username: String,
    pub password: String,
    pub preferred_username: String,
    pub email: String,
    pub name: String,
}

impl TestUser {
    /// `username` with subject `sub-<username>`, a random password, and
    /// claims derived from the name.
    pub fn new(username: &str) -> Self {
        Self {
            subject: format!("sub-{username}"),
            username: username.to_string(),
            password: format!("pw-{:016x}", rand::random::<u64>()),
            preferred_username: username.to_string(),
            email: format!("{username}@example.test"),
            name: format!("Test {username}"),
        }
    }

    pub fn subject(mut self, subject: &str) -> Self {
        self.subject = subject.to_string();
        self
    }

    pub fn preferred_username(mut self, name: &str) -> Self {
        self.preferred_username = name.to_string();
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "subject": self.subject,
            "username": self.username,
            "password": self.password,
            "preferred_username": self.preferred_username,
            "email": self.email,
            "name": self.name,
        })
    }
}

/// Which wrong key signs the ID tokens ([`ProviderConfig::sign_with_other_key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherKey {
    /// Under a `kid` the JWKS doesn't list.
    UnknownKid,
    /// Under the published `kid`: only checking the signature catches it.
    SameKid,
}

/// What the provider serves, and how it misbehaves.
#[derive(Clone, Debug, Default)]
pub struct ProviderConfig {
    pub clients: Vec<TestClient>,
    pub users: Vec<TestUser>,
    pub id_token_ttl_seconds: Option<i64>,
    pub audience_override: Option<String>,
    pub sign_with_other_key: Option<OtherKey>,
    pub deny_consent: bool,
}

impl ProviderConfig {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn client(mut self, client: TestClient) -> Self {
        self.clients.push(client);
        self
    }

    pub fn user(mut self, user: TestUser) -> Self {
        self.users.push(user);
        self
    }

    /// ID token lifetime. Zero or negative: the token's `exp` is that many
    /// seconds from now, i.e. already expired when it is handed out.
    pub fn id_token_ttl_seconds(mut self, seconds: i64) -> Self {
        self.id_token_ttl_seconds = Some(seconds);
        self
    }

    /// ID tokens that expired five minutes ago, beyond any clock-skew leeway.
    pub fn expired_id_tokens(self) -> Self {
        self.id_token_ttl_seconds(-300)
    }

    /// ID tokens carry `aud` = `aud` instead of the client id.
    pub fn audience_override(mut self, aud: &str) -> Self {
        self.audience_override = Some(aud.to_string());
        self
    }

    /// ID tokens are signed with a key the published JWKS doesn't have.
    pub fn sign_with_other_key(mut self, which: OtherKey) -> Self {
        self.sign_with_other_key = Some(which);
        self
    }

    /// Approving consent still answers `error=access_denied`.
    pub fn deny_consent(mut self) -> Self {
        self.deny_consent = true;
        self
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "port": 0,
            "clients": self.clients.iter().map(TestClient::to_json).collect::<Vec<_>>(),
            "users": self.users.iter().map(TestUser::to_json).collect::<Vec<_>>(),
            "deny_consent": self.deny_consent,
        });
        if let Some(ttl) = self.id_token_ttl_seconds {
            v["id_token_ttl_seconds"] = json!(ttl);
        }
        if let Some(aud) = &self.audience_override {
            v["audience_override"] = json!(aud);
        }
        if let Some(which) = self.sign_with_other_key {
            v["sign_with_other_key"] = json!(match which {
                OtherKey::UnknownKid => "other_kid",
                OtherKey::SameKid => "same_kid",
            });
        }
        v
    }
}

/// A running `oidc-provider` on 127.0.0.1; killed on drop (its log printed
/// when the test failed).
pub struct TestProvider {
    /// `http://127.0.0.1:PORT`, no trailing slash (as in the ID tokens' `iss`).
    pub issuer: String,
    pub port: u16,
    pub proc: Proc,
}

/// What `POST /test/verify` says about a JWT.
#[derive(Debug)]
pub struct Verified {
    /// The signature checks out against the published JWKS.
    pub valid: bool,
    pub error: Option<String>,
    pub header: Value,
    pub payload: Value,
}

impl TestProvider {
    /// Starts the provider with `config` (written to `dir/oidc-provider.json`,
    /// which holds the client secrets and passwords: a test dir only).
    pub fn start(dir: &Path, config: &ProviderConfig) -> TestProvider {
        require_node_modules();
        let config_path = dir.join("oidc-provider.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config.to_json()).expect("config serializes"),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let mut cmd = Command::new("node");
        cmd.arg(oidc_dir().join("provider.mjs"))
            .arg(&config_path)
            .current_dir(oidc_dir())
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn("oidc-provider", dir, cmd, true);
        let stdout = proc.take_stdout();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining, so a stray print can't kill it with EPIPE.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if !line.trim().is_empty() => line,
            Ok(_) => panic!(
                "the test OIDC provider exited before listening: {}",
                proc.stderr()
            ),
            Err(_) => panic!(
                "the test OIDC provider printed no listening line within 20 s: {}",
                proc.stderr()
            ),
        };
        let v: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("provider's first line {line:?} is not JSON: {e}"));
        let issuer = v["issuer"].as_str().expect("issuer in line").to_string();
        let port = v["port"].as_u64().expect("port in line") as u16;
        TestProvider { issuer, port, proc }
    }

    /// The discovery document (`/.well-known/openid-configuration`).
    pub fn discovery(&self) -> Value {
        let r = http_request(
            "GET",
            &format!("{}/.well-known/openid-configuration", self.issuer),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "discovery: {}", r.text());
        r.json()
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The published JWKS.
    pub fn jwks(&self) -> Value {
        let r = http_request("GET", &format!("{}/jwks", self.issuer), &[], b"");
        assert_eq!(r.status, 200, "jwks: {}", r.text());
        r.json()
    }

    /// An authorization-code request URL with PKCE (S256) and scope
    /// `openid profile email`.
    pub fn authorize_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        pkce: &Pkce,
    ) -> String {
        format!(
            "{}?{}",
            self.authorization_endpoint(),
            form_encode(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("scope", "openid profile email"),
                ("state", state),
                ("nonce", nonce),
                ("code_challenge", &pkce.challenge),
                ("code_challenge_method", "S256"),
            ])
        )
    }

    /// Exchanges an authorization code at the token endpoint as `client`.
    pub fn exchange_code(
        &self,
        client: &TestClient,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> HttpResponse {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let basic;
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        match client.auth {
            ClientAuth::Basic => {
                // RFC 6749 2.3.1: form-encode id and secret before Basic.
                basic = format!(
                    "Basic {}",
                    STANDARD.encode(format!(
                        "{}:{}",
                        form_component(&client.client_id),
                        form_component(&client.client_secret)
                    ))
                );
                headers.push(("authorization", &basic));
            }
            ClientAuth::Post => {
                form.push(("client_id", &client.client_id));
                form.push(("client_secret", &client.client_secret));
            }
        }
        http_request(
            "POST",
            &self.token_endpoint(),
            &headers,
            form_encode(&form).as_bytes(),
        )
    }

    /// Checks `jwt`'s signature against the published JWKS (the provider's
    /// test-only endpoint, using `jose`).
    pub fn verify_signature(&self, jwt: &str) -> Verified {
        let r = http_request(
            "POST",
            &format!("{}/test/verify", self.issuer),
            &[("content-type", "text/plain")],
            jwt.as_bytes(),
        );
        assert_eq!(r.status, 200, "verify: {}", r.text());
        let v = r.json();
        Verified {
            valid: v["valid"].as_bool().unwrap_or(false),
            error: v["error"].as_str().map(str::to_string),
            header: v["header"].clone(),
            payload: v["payload"].clone(),
        }
    }

    /// The provider's log so far.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }
}

/// A PKCE pair (RFC 7636, S256).
#[derive(Clone, Debug)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = random_b64url(32);
        let challenge = pkce_challenge(&verifier);
        Self {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// base64url(SHA-256(verifier)), the S256 code challenge.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// `n` random bytes, base64url without padding (state, nonce, verifier).
pub fn random_b64url(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT's header and payload, decoded without checking anything.
pub fn decode_jwt_unverified(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut part = |what: &str| -> Value {
        let p = parts
            .next()
            .unwrap_or_else(|| panic!("JWT has no {what}: {jwt:.20}…"));
        let bytes = URL_SAFE_NO_PAD
            .decode(p)
            .unwrap_or_else(|e| panic!("JWT {what} is not base64url: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT {what} is not JSON: {e}"))
    };
    let header = part("header");
    let payload = part("payload");
    (header, payload)
}

/// Where the browser ended up ([`drive_browser`]).
#[derive(Clone, Debug)]
pub struct BrowserResult {
    /// The `warren:` or stop-prefix URL the browser was sent to (it carries a
    /// one-time code: don't print it). `None` when it came to rest elsewhere.
    pub final_url: Option<String>,
    /// Whether it reached such a URL.
    pub stopped: bool,
    /// Title and visible text of the last page: for `warren:`, the page that
    /// sent the browser there; when not stopped, the page it rests on (an
    /// error page); empty for a caught (not delivered) stop-prefix redirect.
    pub title: String,
    pub text: String,
    /// The pages visited, origin and path only.
    pub pages: Vec<String>,
}

impl BrowserResult {
    /// The final URL, panicking with where the browser rested instead.
    pub fn final_url(&self) -> &str {
        self.final_url.as_deref().unwrap_or_else(|| {
            panic!(
                "the browser never reached the stop URL; it rests at {:?} titled {:?}: {}",
                self.pages.last(),
                self.title,
                self.text
            )
        })
    }

    /// A query parameter of the final URL, percent-decoded.
    pub fn param(&self, key: &str) -> Option<String> {
        query_param(self.final_url(), key)
    }
}

/// How [`drive_browser_with`] walks.
#[derive(Clone, Debug)]
pub struct BrowserOptions {
    pub start_url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Stop at a navigation to a URL with this prefix (`warren:` always stops).
    pub stop_prefix: Option<String>,
    /// Let the stop request reach its real listener (the CLI's loopback
    /// server) instead of answering it with a stub page.
    pub deliver: bool,
    /// Save a screenshot of each page here.
    pub screenshots: Option<PathBuf>,
    pub timeout: Duration,
}

impl BrowserOptions {
    pub fn new(start_url: &str) -> Self {
        Self {
            start_url: start_url.to_string(),
            username: None,
            password: None,
            stop_prefix: None,
            deliver: false,
            screenshots: None,
            timeout: Duration::from_secs(30),
        }
    }

    pub fn login(mut self, username: &str, password: &str) -> Self {
        self.username = Some(username.to_string());
        self.password = Some(password.to_string());
        self
    }

    pub fn stop_at(mut self, prefix: &str) -> Self {
        self.stop_prefix = Some(prefix.to_string());
        self
    }

    pub fn deliver(mut self) -> Self {
        self.deliver = true;
        self
    }

    pub fn screenshots(mut self, dir: &Path) -> Self {
        self.screenshots = Some(dir.to_path_buf());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Headless Chromium from `start_url` through the coordinator's sign-in
/// page, the provider's login (as `username`/`password`) and consent, until
/// a `warren:` URL or one starting with `stop_prefix` (caught, not
/// delivered). See [`drive_browser_with`] for more control.
pub fn drive_browser(
    start_url: &str,
    username: &str,
    password: &str,
    stop_prefix: &str,
    screenshots: Option<&Path>,
) -> BrowserResult {
    let mut opts = BrowserOptions::new(start_url)
        .login(username, password)
        .stop_at(stop_prefix);
    opts.screenshots = screenshots.map(Path::to_path_buf);
    drive_browser_with(&opts)
}

/// Runs `tests/oidc/browser.mjs` with `opts`; panics with its log when it
/// fails or overruns. Its log (paths only, no queries) goes to the test's
/// stderr.
pub fn drive_browser_with(opts: &BrowserOptions) -> BrowserResult {
    require_node_modules();
    let mut cmd = Command::new("node");
    cmd.arg(oidc_dir().join("browser.mjs"))
        .arg("--start")
        .arg(&opts.start_url)
        .arg("--timeout-ms")
        .arg(opts.timeout.as_millis().to_string())
        .current_dir(oidc_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let (Some(u), Some(p)) = (&opts.username, &opts.password) {
        cmd.arg("--username").arg(u).arg("--password").arg(p);
    }
    if let Some(stop) = &opts.stop_prefix {
        cmd.arg("--stop").arg(stop);
    }
    if opts.deliver {
        cmd.arg("--deliver");
    }
    if let Some(dir) = &opts.screenshots {
        cmd.arg("--screenshots").arg(dir);
    }
    die_with_parent(&mut cmd);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start node for browser.mjs (is node installed?): {e}"));
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // The script bounds itself; this only catches a hung Chromium or node.
    let limit = opts.timeout + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for browser.mjs") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    eprint!("{stderr}");
    let status = status.unwrap_or_else(|| {
        panic!("browser.mjs overran {limit:?} and was killed; its log:\n{stderr}")
    });
    assert!(
        status.success(),
        "browser.mjs failed ({status}) after {:?}; its log:\n{stderr}",
        started.elapsed()
    );
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("browser.mjs printed no JSON result ({e}); its log:\n{stderr}"));
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    BrowserResult {
        final_url: v["final_url"].as_str().map(str::to_string),
        stopped: v["stopped"].as_bool().unwrap_or(false),
        title: s("title"),
        text: s("text"),
        pages: v["pages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A response from [`http_request`].
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// One plain-HTTP request to `http://HOST:PORT/…` (loopback test servers),
/// `Connection: close`, redirects not followed, 10 s timeouts.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("http_request speaks plain http only: {url}"));
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(hostport).unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set read timeout");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("set write timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .and_then(|()| s.write_all(body))
        .unwrap_or_else(|e| panic!("send {method} {path}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the answer to {method} {path}: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no end of headers in the answer"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// The body of a `Transfer-Encoding: chunked` answer.
pub(crate) fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or("0").trim();
        let size = usize::from_str_radix(size_hex, 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// `application/x-www-form-urlencoded` (also right for URL queries).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_component(k), form_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_component(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Query parameter `key` of `url`, percent- and `+`-decoded.
pub fn query_param(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
        .next()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn query_params_round_trip_through_form_encoding() {
        let url = format!(
            "warren://signin?{}",
            form_encode(&[("code", "a b+c/%"), ("state", "é")])
        );
        assert_eq!(query_param(&url, "code").as_deref(), Some("a b+c/%"));
        assert_eq!(query_param(&url, "state").as_deref(), Some("é"));
        assert_eq!(query_param(&url, "missing"), None);
        assert_eq!(query_param("http://x/cb?e=%4", "e").as_deref(), Some("%4"));
    }

    #[test]
    fn chunked_bodies_are_reassembled() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
