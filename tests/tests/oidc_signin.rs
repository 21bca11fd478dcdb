//! Browser sign-in end to end (docs/signin.md): the real coordinator with
//! `--oidc-*` against the certified npm `oidc-provider` (tests/oidc), and
//! headless Chromium playing the person. The CLI's loopback flow, the app's
//! deep link and the device code mint tokens that work; every way the
//! provider, the browser or the client can go wrong ends on the page or the
//! JSON error that says so; and no token, code, verifier, client secret or
//! ID token reaches the coordinator's trace-level log.

use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;
use warren_e2e::oidc::{
    drive_browser, drive_browser_with, form_encode, http_request, query_param, BrowserOptions,
    BrowserResult, ClientAuth, HttpResponse, OtherKey, Pkce, ProviderConfig, TestClient,
    TestProvider, TestUser,
};
use warren_e2e::proc::Proc;
use warren_e2e::TestDir;

const CLIENT_ID: &str = "warren-coord";
const CLIENT_SECRET: &str = "client-secret-c0ffee-never-logged";
const STATE: &str = "client-state-abcdefghijklmnop";

/// A provider and a coordinator signing in through it.
struct Deployment {
    dir: TestDir,
    /// Kept so that it runs as long as the test.
    _provider: TestProvider,
    coord: Proc,
    /// `http://127.0.0.1:PORT`, the coordinator's public URL.
    url: String,
    /// alice and bob, with their passwords at the provider.
    users: Vec<TestUser>,
    /// Secrets seen during the test: none may be in the coordinator's log.
    secrets: Vec<String>,
}

/// A free loopback port: the provider must know the coordinator's callback
/// before the coordinator starts.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

fn admin(db: &std::path::Path, args: &[&str]) {
    let out = Command::new(warren_e2e::bin("warren-coord"))
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run warren-coord");
    assert!(
        out.status.success(),
        "warren-coord {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Deployment {
    /// `alice` (subject `sub-alice`) exists at the provider; `link` also
    /// makes her a Warren user bound to that subject.
    fn start(name: &str, knobs: ProviderConfig, link: bool, auto_create: bool) -> Deployment {
        Self::start_with(name, knobs, link, auto_create, ClientAuth::Basic)
    }

    /// Like [`Deployment::start`], with the coordinator registered at the
    /// provider for `auth` at its token endpoint.
    fn start_with(
        name: &str,
        knobs: ProviderConfig,
        link: bool,
        auto_create: bool,
        auth: ClientAuth,
    ) -> Deployment {
        let dir = TestDir::new(name);
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut config = knobs;
        config.clients.push(
            TestClient::new(CLIENT_ID, CLIENT_SECRET, &format!("{url}/oidc/callback")).auth(auth),
        );
        let users = vec![TestUser::new("alice"), TestUser::new("bob")];
        config.users.extend(users.iter().cloned());
        let provider = TestProvider::start(dir.path(), &config);
        let db = dir.join("coord.db");
        let secret_file = dir.join("client-secret");
        // 0600: the coordinator refuses a secret file others can read.
        warren_e2e::netns::write_secret(&secret_file, CLIENT_SECRET);
        if link {
            admin(&db, &["user", "add", "alice"]);
            admin(
                &db,
                &[
                    "user",
                    "link-oidc",
                    "alice",
                    "--issuer",
                    &provider.issuer,
                    "--subject",
                    "sub-alice",
                ],
            );
        }
        let mut cmd = Command::new(warren_e2e::bin("warren-coord"));
        cmd.arg("serve")
            .arg("--db")
            .arg(&db)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--public-url", &url])
            .args(["--oidc-issuer", &provider.issuer])
            .args(["--oidc-client-id", CLIENT_ID])
            .arg("--oidc-client-secret-file")
            .arg(&secret_file)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped());
        if auto_create {
            cmd.arg("--oidc-auto-create");
        }
        if auth == ClientAuth::Post {
            cmd.args(["--oidc-client-auth-method", "client_secret_post"]);
        }
        let mut coord = Proc::spawn("coord", dir.path(), cmd, true);
        let printed = warren_e2e::coord::listening_url(&mut coord, &dir.join("coord.stdout"));
        assert_eq!(printed, url);
        Deployment {
            dir,
            _provider: provider,
            coord,
            url,
            users,
            secrets: vec![CLIENT_SECRET.to_string()],
        }
    }

    fn password(&self, user: &str) -> String {
        self.users
            .iter()
            .find(|u| u.username == user)
            .map(|u| u.password.clone())
            .expect("a test user")
    }

    fn signin_url(&self, client: &str, redirect_uri: &str, pkce: &Pkce) -> String {
        format!(
            "{}/signin?{}",
            self.url,
            form_encode(&[
                ("client", client),
                ("redirect_uri", redirect_uri),
                ("state", STATE),
                ("code_challenge", &pkce.challenge),
                ("code_challenge_method", "S256"),
                ("device", "alice-laptop (Linux)"),
            ])
        )
    }

    fn post_json(&self, path: &str, body: &Value) -> HttpResponse {
        http_request(
            "POST",
            &format!("{}{path}", self.url),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    fn exchange(&mut self, code: &str, verifier: &str) -> HttpResponse {
        self.secrets.push(code.to_string());
        self.secrets.push(verifier.to_string());
        self.post_json(
            "/api/v1/signin/token",
            &json!({"grant_type": "authorization_code", "code": code, "code_verifier": verifier}),
        )
    }

    /// `GET /api/v1/me` with `token`: the user it belongs to.
    fn me(&self, token: &str) -> Value {
        let r = http_request(
            "GET",
            &format!("{}/api/v1/me", self.url),
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        );
        assert_eq!(r.status, 200, "GET /api/v1/me: {}", r.text());
        r.json()
    }

    /// The CLI's loopback flow through the browser, up to the redirect.
    fn cli_browser(&self, pkce: &Pkce, user: &str) -> BrowserResult {
        let cb = "http://127.0.0.1:4711/callback";
        drive_browser(
            &self.signin_url("cli", cb, pkce),
            user,
            &self.password(user),
            cb,
            Some(&self.dir.join("screenshots")),
        )
    }

    /// Panics if a secret of this test is in the coordinator's log.
    fn assert_log_clean(&self) {
        let log = std::fs::read_to_string(&self.coord.stderr_path).expect("read the log");
        assert!(
            log.contains("TRACE") || log.contains("DEBUG"),
            "the coordinator logged at trace level"
        );
        for s in &self.secrets {
            assert!(
                !log.contains(s.as_str()),
                "a secret ({}…) is in the coordinator's log",
                &s[..s.len().min(6)]
            );
        }
        // ID tokens and other JWTs start with the base64 of `{"`.
        assert!(!log.contains("eyJ"), "a JWT is in the coordinator's log");
    }
}

fn assert_json_error(r: &HttpResponse, error: &str) {
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], error, "{}", r.text());
}

#[test]
fn cli_loopback_sign_in_mints_a_device_token_once() {
    let mut d = Deployment::start("oidc-cli", ProviderConfig::new(), true, false);
    let pkce = Pkce::new();
    let r = d.cli_browser(&pkce, "alice");
    assert!(r.stopped, "{r:?}");
    assert_eq!(r.param("state").as_deref(), Some(STATE));
    let code = r.param("code").expect("a code in the redirect");
    assert_eq!(code.len(), 43, "32 random bytes, base64url");

    // A wrong verifier is refused, and uses the code up.
    let wrong = Pkce::new();
    assert_json_error(&d.exchange(&code, &wrong.verifier), "invalid_grant");
    assert_json_error(&d.exchange(&code, &pkce.verifier), "invalid_grant");

    // A second sign-in: the code works once, with the right verifier.
    let pkce = Pkce::new();
    let r = d.cli_browser(&pkce, "alice");
    let code = r.param("code").expect("a code in the redirect");
    let ok = d.exchange(&code, &pkce.verifier);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = ok.json();
    let token = body["token"].as_str().expect("token").to_string();
    d.secrets.push(token.clone());
    assert!(token.starts_with("wut_"));
    assert_eq!(body["user"], "alice");
    assert_eq!(d.me(&token)["user"], "alice");
    assert_json_error(&d.exchange(&code, &pkce.verifier), "invalid_grant");

    // The token is a device token named after the device.
    let out = Command::new(warren_e2e::bin("warren-coord"))
        .arg("--db")
        .arg(d.dir.join("coord.db"))
        .args(["token", "list", "--owner", "alice"])
        .output()
        .expect("token list");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("alice-laptop (Linux)") && list.contains(body["token_id"].as_str().unwrap()),
        "{list}"
    );
    // The tokens page, after its own sign-in, lists the device.
    let r = drive_browser_with(
        &BrowserOptions::new(&format!("{}/tokens", d.url))
            .login("alice", &d.password("alice"))
            .stop_at("http://127.0.0.1:1/never")
            .screenshots(&d.dir.join("screenshots-tokens")),
    );
    assert_eq!(r.title, "Your devices · Warren", "{r:?}");
    assert!(
        r.text.contains("Signed in as alice")
            && r.text.contains("alice-laptop (Linux)")
            && r.text.contains("Sign out this device"),
        "{}",
        r.text
    );
    // Revoking needs the page's session and its form token.
    let forged = http_request(
        "POST",
        &format!("{}/tokens/revoke", d.url),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", "warren_tokens_session=made-up"),
        ],
        form_encode(&[("id", body["token_id"].as_str().unwrap()), ("csrf", "x")]).as_bytes(),
    );
    assert_eq!(forged.status, 403, "{}", forged.text());
    assert_eq!(d.me(&token)["user"], "alice", "the token still works");

    let bad = d.post_json(
        "/api/v1/signin/token",
        &json!({"grant_type": "password", "code": "x"}),
    );
    assert_json_error(&bad, "unsupported_grant_type");
    d.assert_log_clean();
}

#[test]
fn the_app_gets_a_page_that_returns_to_warren() {
    let mut d = Deployment::start("oidc-app", ProviderConfig::new(), true, false);
    let pkce = Pkce::new();
    let r = drive_browser(
        &d.signin_url("app", "warren://signin", &pkce),
        "alice",
        &d.password("alice"),
        "warren:",
        None,
    );
    let link = r.final_url().to_string();
    assert!(link.starts_with("warren://signin?"), "{link}");
    assert!(
        r.text.contains("You are signed in") && r.text.contains("return to Warren"),
        "{}",
        r.text
    );
    assert_eq!(query_param(&link, "state").as_deref(), Some(STATE));
    let code = query_param(&link, "code").expect("code");
    let ok = d.exchange(&code, &pkce.verifier);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let token = ok.json()["token"].as_str().unwrap().to_string();
    d.secrets.push(token.clone());
    assert_eq!(d.me(&token)["user"], "alice");
    d.assert_log_clean();
}

/// `--oidc-client-auth-method client_secret_post` sends the secret in the
/// form body and signs in. (oidc-provider accepts Basic from such a client
/// too, so this shows the method works, not that Basic would be refused.)
#[test]
fn a_client_registered_for_client_secret_post_signs_in() {
    let mut d = Deployment::start_with(
        "oidc-post",
        ProviderConfig::new(),
        true,
        false,
        ClientAuth::Post,
    );
    let pkce = Pkce::new();
    let r = d.cli_browser(&pkce, "alice");
    let code = r.param("code").expect("a code in the redirect");
    let ok = d.exchange(&code, &pkce.verifier);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let token = ok.json()["token"].as_str().unwrap().to_string();
    d.secrets.push(token.clone());
    assert_eq!(d.me(&token)["user"], "alice");
    d.assert_log_clean();
}

#[test]
fn pages_refuse_bad_requests_and_replayed_states() {
    let d = Deployment::start("oidc-pages", ProviderConfig::new(), true, false);
    let pkce = Pkce::new();
    // Not an allowed redirect: an error page, never a redirect.
    for (client, redirect) in [
        ("cli", "http://evil.example/callback"),
        ("cli", "http://127.0.0.1:4711/other"),
        ("app", "warren://elsewhere"),
        ("app", "http://127.0.0.1:4711/callback"),
    ] {
        let r = http_request("GET", &d.signin_url(client, redirect, &pkce), &[], b"");
        assert_eq!(r.status, 400, "{client} {redirect}");
        assert!(r.header("location").is_none());
        assert!(r.text().contains("not valid"), "{}", r.text());
    }
    let repeated = format!(
        "{}&client=app",
        d.signin_url("cli", "http://127.0.0.1:4711/callback", &pkce)
    );
    let r = http_request("GET", &repeated, &[], b"");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("cannot be read"), "{}", r.text());
    let r = http_request(
        "GET",
        &d.signin_url("cli", "http://127.0.0.1:4711/callback", &pkce),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    let html = r.text();
    assert!(
        html.contains("Sign in to 127.0.0.1 on alice-laptop (Linux)"),
        "{html}"
    );
    let id = html
        .split("href=\"oidc/start/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the continue link")
        .to_string();

    // The sign-in completes from the continue link...
    let r = drive_browser_with(
        &BrowserOptions::new(&format!("{}/oidc/start/{id}", d.url))
            .login("alice", &d.password("alice"))
            .stop_at("http://127.0.0.1:4711/callback"),
    );
    assert!(r.stopped, "{r:?}");
    // ...after which its state is used up: replaying the provider's
    // callback, or making one up, shows the expired-or-replayed page.
    for state in [id.as_str(), "made-up-state"] {
        let r = http_request(
            "GET",
            &format!(
                "{}/oidc/callback?{}",
                d.url,
                form_encode(&[("code", "whatever"), ("state", state)])
            ),
            &[],
            b"",
        );
        assert_eq!(r.status, 400);
        assert!(
            r.text().contains("expired or was already used"),
            "{}",
            r.text()
        );
    }

    // One address cannot fill the coordinator with pending sign-ins...
    let start = d.signin_url("cli", "http://127.0.0.1:4711/callback", &pkce);
    let limited = (0..40)
        .map(|_| http_request("GET", &start, &[], b""))
        .find(|r| r.status != 200)
        .expect("sign-in starts are throttled within 40");
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    assert!(limited.text().contains("Too many sign-in attempts"));
    // ...nor guess codes without end.
    let limited = (0..20)
        .map(|_| {
            d.post_json(
                "/api/v1/signin/token",
                &json!({"grant_type": "authorization_code", "code": "guess", "code_verifier": "v"}),
            )
        })
        .find(|r| r.status != 400)
        .expect("refused codes are throttled within 20");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"], "too_many_requests");
    d.assert_log_clean();
}

/// A sign-in that must end on the coordinator's error page saying `says`.
/// The coordinator's log must say why, with `log_says`; returns the log.
fn refused(name: &str, knobs: ProviderConfig, user: &str, says: &str, log_says: &str) -> String {
    let mut d = Deployment::start(name, knobs, true, false);
    let pkce = Pkce::new();
    let r = d.cli_browser(&pkce, user);
    assert!(!r.stopped, "{name}: the sign-in went through: {r:?}");
    assert!(
        r.pages.last().is_some_and(|p| p.starts_with(&d.url)),
        "{name}: rests on the coordinator's page: {r:?}"
    );
    assert!(r.text.contains(says), "{name}: {}: {}", r.title, r.text);
    let log = std::fs::read_to_string(&d.coord.stderr_path).expect("read the log");
    let why: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sign-in refused") || l.contains("identity provider returned"))
        .collect();
    assert!(
        why.iter().any(|l| l.contains(log_says)),
        "{name}: the log does not say {log_says:?}: {why:#?}"
    );
    d.secrets.push(pkce.verifier.clone());
    d.assert_log_clean();
    log
}

#[test]
fn a_wrong_audience_is_refused() {
    refused(
        "oidc-aud",
        ProviderConfig::new().audience_override("someone-else"),
        "alice",
        "could not be verified",
        "Invalid audiences",
    );
}

#[test]
fn an_expired_id_token_is_refused() {
    refused(
        "oidc-exp",
        ProviderConfig::new().expired_id_tokens(),
        "alice",
        "could not be verified",
        "ID token expired",
    );
}

#[test]
fn an_id_token_signed_by_another_key_is_refused() {
    let log = refused(
        "oidc-key",
        ProviderConfig::new().sign_with_other_key(OtherKey::UnknownKid),
        "alice",
        "could not be verified",
        "Signature verification failed",
    );
    // An unknown key makes the coordinator read the provider's keys again
    // (it may have rotated them), which does not let the token through.
    assert!(
        log.contains("read the identity provider's signing keys again"),
        "the keys were not read again"
    );
    refused(
        "oidc-samekid",
        ProviderConfig::new().sign_with_other_key(OtherKey::SameKid),
        "alice",
        "could not be verified",
        "Signature verification failed",
    );
}

#[test]
fn an_unknown_user_is_refused_without_auto_create() {
    refused(
        "oidc-unknown",
        ProviderConfig::new(),
        "bob",
        "isn't set up on this deployment",
        "no user has this identity",
    );
}

#[test]
fn a_declined_consent_says_so() {
    refused(
        "oidc-deny",
        ProviderConfig::new().deny_consent(),
        "alice",
        "You declined",
        "error=access_denied",
    );
}

#[test]
fn a_declined_device_sign_in_answers_access_denied() {
    let mut d = Deployment::start(
        "oidc-device-deny",
        ProviderConfig::new().deny_consent(),
        true,
        false,
    );
    let r = d.post_json("/api/v1/signin/device", &json!({"device": "box"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let grant = r.json();
    let device_code = grant["device_code"].as_str().unwrap().to_string();
    d.secrets.push(device_code.clone());
    let r = drive_browser_with(
        &BrowserOptions::new(grant["verification_uri_complete"].as_str().unwrap())
            .login("alice", &d.password("alice"))
            .stop_at("http://127.0.0.1:1/never"),
    );
    assert!(r.text.contains("You declined"), "{r:?}");
    let poll = json!({
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": device_code,
    });
    assert_json_error(&d.post_json("/api/v1/signin/token", &poll), "access_denied");
    assert_json_error(&d.post_json("/api/v1/signin/token", &poll), "expired_token");
    d.assert_log_clean();
}

#[test]
fn auto_create_and_the_device_code_flow() {
    let mut d = Deployment::start("oidc-device", ProviderConfig::new(), false, true);
    let r = d.post_json(
        "/api/v1/signin/device",
        &json!({"device": "build-box (Linux)"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let grant = r.json();
    let device_code = grant["device_code"].as_str().unwrap().to_string();
    d.secrets.push(device_code.clone());
    assert_eq!(grant["interval"], 5);
    assert_eq!(grant["verification_uri"], format!("{}/device", d.url));
    let poll = json!({
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": device_code,
    });
    assert_json_error(
        &d.post_json("/api/v1/signin/token", &poll),
        "authorization_pending",
    );
    assert_json_error(&d.post_json("/api/v1/signin/token", &poll), "slow_down");
    let r = drive_browser_with(
        &BrowserOptions::new(grant["verification_uri_complete"].as_str().unwrap())
            .login("alice", &d.password("alice"))
            .stop_at("http://127.0.0.1:1/never"),
    );
    assert!(
        r.text.contains("build-box (Linux) is now signed in"),
        "{r:?}"
    );
    // The interval grew to 10 s with the slow_down.
    std::thread::sleep(Duration::from_secs(10));
    let ok = d.post_json("/api/v1/signin/token", &poll);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let token = ok.json()["token"].as_str().unwrap().to_string();
    d.secrets.push(token.clone());
    // Auto-created, named after preferred_username.
    assert_eq!(d.me(&token)["user"], "alice");
    assert_json_error(&d.post_json("/api/v1/signin/token", &poll), "expired_token");
    d.assert_log_clean();
}

#[test]
fn without_an_issuer_the_sign_in_routes_say_to_ask_for_a_token() {
    let dir = TestDir::new("oidc-off");
    let c = warren_e2e::coord::Coordinator::start(dir.path());
    for path in ["/signin?client=cli", "/tokens", "/device", "/oidc/callback"] {
        let r = http_request("GET", &format!("{}{path}", c.url), &[], b"");
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.text().contains("Browser sign-in is not set up here")
                && r.text().contains("Ask your administrator for a token"),
            "{path}: {}",
            r.text()
        );
    }
    let r = http_request(
        "POST",
        &format!("{}/api/v1/signin/token", c.url),
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
}
