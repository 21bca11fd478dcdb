//! The test identity provider and browser harness on their own, without the
//! coordinator: the test itself is the relying party (authorization code +
//! PKCE), so a failure here is the harness's, and each misbehaviour knob is
//! shown to change what a relying party receives.
//!
//! Needs `npm --prefix tests/oidc ci` and Debian's Chromium.

use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use warren_e2e::oidc::{
    decode_jwt_unverified, drive_browser, drive_browser_with, query_param, random_b64url,
    BrowserOptions, ClientAuth, OtherKey, Pkce, ProviderConfig, TestClient, TestProvider, TestUser,
};
use warren_e2e::TestDir;

/// A redirect URI nobody listens on: the browser harness catches it.
fn callback() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
        .port();
    format!("http://127.0.0.1:{port}/cb")
}

struct Outcome {
    /// The redirect's query as the browser saw it.
    redirect: String,
    state: String,
    /// The token endpoint's JSON (absent when the redirect carried no code).
    tokens: Option<Value>,
}

/// Authorization request → browser login and consent → redirect → token
/// exchange, the way a relying party does it.
fn sign_in(
    idp: &TestProvider,
    client: &TestClient,
    user: &TestUser,
    redirect_uri: &str,
) -> Outcome {
    let pkce = Pkce::new();
    let state = random_b64url(16);
    let url = idp.authorize_url(&client.client_id, redirect_uri, &state, "nonce-123", &pkce);
    let started = Instant::now();
    let result = drive_browser(&url, &user.username, &user.password, redirect_uri, None);
    eprintln!("browser round trip took {:?}", started.elapsed());
    let redirect = result.final_url().to_string();
    assert!(
        redirect.starts_with(redirect_uri),
        "redirected elsewhere: {:?}",
        result.pages
    );
    let tokens = query_param(&redirect, "code").map(|code| {
        let r = idp.exchange_code(client, &code, redirect_uri, &pkce.verifier);
        assert_eq!(r.status, 200, "token endpoint: {}", r.text());
        r.json()
    });
    Outcome {
        redirect,
        state,
        tokens,
    }
}

fn id_token(outcome: &Outcome) -> String {
    let tokens = outcome.tokens.as_ref().expect("a code came back");
    tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token in {tokens}"))
        .to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[test]
fn discovery_document_describes_a_code_flow_provider_with_s256() {
    let dir = TestDir::new("oidc-discovery");
    let idp = TestProvider::start(dir.path(), &ProviderConfig::new());
    let d = idp.discovery();
    assert_eq!(d["issuer"], idp.issuer.as_str());
    assert!(idp.issuer.starts_with("http://127.0.0.1:"));
    assert_eq!(d["authorization_endpoint"], idp.authorization_endpoint());
    assert_eq!(d["token_endpoint"], idp.token_endpoint());
    assert_eq!(d["jwks_uri"], format!("{}/jwks", idp.issuer));
    let methods = d["code_challenge_methods_supported"]
        .as_array()
        .expect("code_challenge_methods_supported");
    assert!(methods.iter().any(|m| m == "S256"), "{methods:?}");
    let keys = idp.jwks();
    assert_eq!(keys["keys"][0]["kid"], "test-signing-key");
    assert!(
        keys["keys"][0].get("d").is_none(),
        "the JWKS must not publish the private key"
    );
}

#[test]
fn code_flow_with_pkce_yields_an_id_token_for_the_client_and_user() {
    let dir = TestDir::new("oidc-roundtrip");
    let cb = callback();
    let client = TestClient::new("warren-test", "client-secret-1", &cb);
    let user = TestUser::new("alice");
    let idp = TestProvider::start(
        dir.path(),
        &ProviderConfig::new()
            .client(client.clone())
            .user(user.clone()),
    );
    let out = sign_in(&idp, &client, &user, &cb);
    assert_eq!(query_param(&out.redirect, "state"), Some(out.state.clone()));
    assert_eq!(
        query_param(&out.redirect, "iss").as_deref(),
        Some(idp.issuer.as_str())
    );
    let jwt = id_token(&out);
    let (header, claims) = decode_jwt_unverified(&jwt);
    assert_eq!(header["kid"], "test-signing-key");
    assert_eq!(claims["iss"], idp.issuer.as_str());
    assert_eq!(claims["aud"], "warren-test");
    assert_eq!(claims["sub"], "sub-alice");
    assert_eq!(claims["nonce"], "nonce-123");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["email"], "alice@example.test");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(exp > now() + 60, "a fresh ID token: exp {exp}");
    assert!(idp.verify_signature(&jwt).valid);

    // The code works once, and only with its verifier.
    let code = query_param(&out.redirect, "code").expect("code");
    let again = idp.exchange_code(&client, &code, &cb, &Pkce::new().verifier);
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.json()["error"], "invalid_grant");
    // Nothing the log says gives the code away.
    assert!(!idp.log().contains(&code), "the provider logged the code");
}

#[test]
fn wrong_password_rests_on_the_login_page_and_client_secret_post_works() {
    let dir = TestDir::new("oidc-password");
    let cb = callback();
    let client = TestClient::new("warren-post", "client-secret-2", &cb).auth(ClientAuth::Post);
    let user = TestUser::new("bob");
    let idp = TestProvider::start(
        dir.path(),
        &ProviderConfig::new()
            .client(client.clone())
            .user(user.clone()),
    );
    let pkce = Pkce::new();
    let url = idp.authorize_url("warren-post", &cb, "s", "n", &pkce);
    let refused = drive_browser(&url, "bob", "not-the-password", &cb, None);
    assert!(!refused.stopped);
    assert!(refused.final_url.is_none());
    assert!(
        refused.text.contains("Wrong username or password"),
        "{refused:?}"
    );

    let out = sign_in(&idp, &client, &user, &cb);
    let (_, claims) = decode_jwt_unverified(&id_token(&out));
    assert_eq!(claims["aud"], "warren-post");
    assert_eq!(claims["sub"], "sub-bob");
}

#[test]
fn a_native_client_may_come_back_on_any_loopback_port() {
    let dir = TestDir::new("oidc-anyport");
    let client = TestClient::new(
        "warren-any",
        "client-secret-3",
        "http://127.0.0.1:1/oidc/callback",
    )
    .any_loopback_port();
    let user = TestUser::new("carol");
    let idp = TestProvider::start(
        dir.path(),
        &ProviderConfig::new()
            .client(client.clone())
            .user(user.clone()),
    );
    let cb = callback().replace("/cb", "/oidc/callback");
    let out = sign_in(&idp, &client, &user, &cb);
    assert_eq!(decode_jwt_unverified(&id_token(&out)).1["sub"], "sub-carol");
}

#[test]
fn expired_id_token_knob() {
    let dir = TestDir::new("oidc-expired");
    let cb = callback();
    let client = TestClient::new("warren-test", "s", &cb);
    let user = TestUser::new("dave");
    let idp = TestProvider::start(
        dir.path(),
        &ProviderConfig::new()
            .client(client.clone())
            .user(user.clone())
            .expired_id_tokens(),
    );
    let jwt = id_token(&sign_in(&idp, &client, &user, &cb));
    let (_, claims) = decode_jwt_unverified(&jwt);
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(exp < now() - 60, "expired: exp {exp}, now {}", now());
    assert!(claims["iat"].as_i64().expect("iat") < exp);
    assert!(
        idp.verify_signature(&jwt).valid,
        "only the expiry is wrong, the signature is good"
    );

    // A short positive lifetime goes through oidc-provider's own ttl.IdToken.
    let dir = TestDir::new("oidc-ttl");
    let idp = TestProvider::start(
        dir.path(),
        &ProviderConfig::new()
            .client(client.clone())
            .user(user.clone())
            .id_token_ttl_seconds(1),
    );
    let (_, claims) = decode_jwt_unverified(&id_token(&sign_in(&idp, &client, &user, &cb)));
    let lifetime = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, 1);
}

#[test]
fn wrong_audience_knob() {
    let dir = TestDir::new("oidc-aud");
    let cb = callback();
    let client = TestClient::new("warren-test", "s", &cb);
    let user = TestUser::new("erin");
    let idp = TestProvider::start(
        dir.path(),
        &ProviderConfig::new()
            .client(client.clone())
            .user(user.clone())
            .audience_override("someone-else"),
    );
    let jwt = id_token(&sign_in(&idp, &client, &user, &cb));
    let (_, claims) = decode_jwt_unverified(&jwt);
    assert_eq!(claims["aud"], "someone-else");
    assert_eq!(claims["sub"], "sub-erin");
    assert!(idp.verify_signature(&jwt).valid);
}

#[test]
fn other_signing_key_knob() {
    let cb = callback();
    let client = TestClient::new("warren-test", "s", &cb);
    let user = TestUser::new("frank");
    for which in [OtherKey::UnknownKid, OtherKey::SameKid] {
        let dir = TestDir::new("oidc-otherkey");
        let idp = TestProvider::start(
            dir.path(),
            &ProviderConfig::new()
                .client(client.clone())
                .user(user.clone())
                .sign_with_other_key(which),
        );
        let jwt = id_token(&sign_in(&idp, &client, &user, &cb));
        let (header, claims) = decode_jwt_unverified(&jwt);
        assert_eq!(claims["aud"], "warren-test");
        let published: Vec<Value> = idp.jwks()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].clone())
            .collect();
        match which {
            OtherKey::UnknownKid => assert!(
                !published.contains(&header["kid"]),
                "kid {} must not be published ({published:?})",
                header["kid"]
            ),
            OtherKey::SameKid => assert!(published.contains(&header["kid"])),
        }
        let verified = idp.verify_signature(&jwt);
        assert!(
            !verified.valid,
            "{which:?}: the published JWKS must not verify it"
        );
        eprintln!("{which:?}: {}", verified.error.unwrap_or_default());
    }
}

#[test]
fn deny_consent_knob() {
    let dir = TestDir::new("oidc-deny");
    let cb = callback();
    let client = TestClient::new("warren-test", "s", &cb);
    let user = TestUser::new("grace");
    let idp = TestProvider::start(
        dir.path(),
        &ProviderConfig::new()
            .client(client.clone())
            .user(user.clone())
            .deny_consent(),
    );
    let out = sign_in(&idp, &client, &user, &cb);
    assert_eq!(
        query_param(&out.redirect, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&out.redirect, "state"), Some(out.state.clone()));
    assert!(query_param(&out.redirect, "code").is_none());
    assert!(out.tokens.is_none());
}

#[test]
fn browser_presses_continue_follows_warren_links_and_saves_screenshots() {
    // A stand-in for the coordinator's pages: a sign-in page with a
    // `continue` button leading to the provider, and the provider's redirect
    // landing on a page that sends the browser to warren://.
    let dir = TestDir::new("oidc-warren-link");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let client = TestClient::new("warren-test", "s", &format!("{base}/oidc/callback"));
    let user = TestUser::new("heidi");
    let idp = TestProvider::start(
        dir.path(),
        &ProviderConfig::new()
            .client(client.clone())
            .user(user.clone()),
    );
    let authorize = idp.authorize_url(
        "warren-test",
        &format!("{base}/oidc/callback"),
        "st",
        "n",
        &Pkce::new(),
    );
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        loop {
            let (mut s, _) = listener.accept().expect("accept");
            let mut line = String::new();
            BufReader::new(&s)
                .read_line(&mut line)
                .expect("request line");
            let last = line.starts_with("GET /oidc/callback");
            let page = if !last && !line.starts_with("GET /signin") {
                // Chromium's own /favicon.ico and the like.
                let _ = write!(
                    s,
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                continue;
            } else if line.starts_with("GET /signin") {
                format!(
                    "<title>Sign in</title><a data-testid=continue href=\"{}\">Continue</a>",
                    authorize.replace('&', "&amp;")
                )
            } else {
                "<title>Signed in</title><p>Return to Warren</p>\
                 <a href=\"warren://signin?code=one-time&amp;state=s\">Open Warren</a>\
                 <script>location.href='warren://signin?code=one-time&state=s'</script>"
                    .to_string()
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            if last {
                break;
            }
        }
    });
    let shots = dir.join("screenshots");
    let started = Instant::now();
    let result = drive_browser_with(
        &BrowserOptions::new(&format!("{base}/signin"))
            .login(&user.username, &user.password)
            .screenshots(&shots)
            .timeout(Duration::from_secs(30)),
    );
    eprintln!("warren:// walk took {:?}", started.elapsed());
    server.join().expect("stand-in server");
    assert!(result.stopped);
    assert_eq!(result.final_url(), "warren://signin?code=one-time&state=s");
    assert_eq!(result.param("code").as_deref(), Some("one-time"));
    assert_eq!(result.title, "Signed in");
    assert!(result.text.contains("Return to Warren"), "{}", result.text);
    let saved = std::fs::read_dir(&shots).expect("screenshots dir").count();
    assert!(
        saved >= 4,
        "sign-in, login, consent and signed-in pages: {saved}"
    );
}

#[test]
fn deliver_lets_the_redirect_reach_a_real_loopback_listener() {
    // The CLI's loopback flow: the redirect must reach the CLI's own
    // listener, and the page it answers is what the person sees.
    let dir = TestDir::new("oidc-deliver");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let cb = format!("http://{}/callback", listener.local_addr().expect("addr"));
    let client = TestClient::new("warren-cli", "s", &cb);
    let user = TestUser::new("ivan");
    let idp = TestProvider::start(
        dir.path(),
        &ProviderConfig::new()
            .client(client.clone())
            .user(user.clone()),
    );
    let server = std::thread::spawn(move || loop {
        use std::io::{BufRead, BufReader, Write};
        let (mut s, _) = listener.accept().expect("accept");
        let mut line = String::new();
        BufReader::new(&s)
            .read_line(&mut line)
            .expect("request line");
        if !line.starts_with("GET /callback?") {
            let _ = write!(
                s,
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            continue;
        }
        let page = "<title>Warren CLI</title><p>Signed in. You can close this window.</p>";
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
        let target = line.split(' ').nth(1).unwrap_or_default().to_string();
        return target;
    });
    let pkce = Pkce::new();
    let url = idp.authorize_url("warren-cli", &cb, "st-cli", "n", &pkce);
    let result = drive_browser_with(
        &BrowserOptions::new(&url)
            .login(&user.username, &user.password)
            .stop_at(&cb)
            .deliver(),
    );
    let received = server.join().expect("listener");
    assert!(result.stopped);
    assert_eq!(result.title, "Warren CLI");
    assert!(
        result.text.contains("You can close this window"),
        "{}",
        result.text
    );
    let code = result.param("code").expect("code");
    assert_eq!(
        query_param(&format!("http://x{received}"), "code").as_deref(),
        Some(code.as_str()),
        "the listener got the same code"
    );
    let r = idp.exchange_code(&client, &code, &cb, &pkce.verifier);
    assert_eq!(r.status, 200, "{}", r.text());
}
