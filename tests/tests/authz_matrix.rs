//! The coordinator's authorization matrix (issue 15, item 3): every route
//! the coordinator serves — the API, the control WebSocket as a device and
//! as an agent, the browser sign-in, device-code and tokens pages — called
//! with every kind of credential, each cell's answer asserted from one
//! table (plus the tokens page against five sessions, and tokens whose
//! agent or user was removed); a check that the table has a row for every
//! route in the router's source; and the limits of the confinement issue
//! (WebSocket and body sizes, endpoint lists, failed-authentication and
//! sign-in throttles, pending sign-ins, connection limits per address and in
//! total, one connection per agent, idle and register timeouts), each at its
//! refusal and just under it.
//!
//! Every cell runs from a loopback source address of its own, so the
//! throttle on failed authentications (per address) never leaks from one
//! cell into another and the test stays deterministic.

use base64::Engine;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};
use warren_e2e::oidc::{form_encode, ProviderConfig, TestClient, TestProvider, TestUser};
use warren_e2e::wire::{
    connect_from, random_public_key, register_json, request_from, ws_open_from, Reply, Upgrade,
    WsClient, WsEvent,
};
use warren_e2e::{Coordinator, TestDir};
use warren_proto::control::{CONNECT_PATH, ME_PATH};
use warren_proto::limits::{MAX_CLIENT_MESSAGE_BYTES, MAX_ENDPOINTS};

const CLIENT_ID: &str = "warren-coord";
const CLIENT_SECRET: &str = "authz-matrix-client-secret";
/// How long a WebSocket answer may take.
const WS_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The table

/// The credentials every route is called with. "Right" and "wrong kind" are
/// relative to the row: for a user route the right token is alice's user
/// token and the wrong kind her agent's; for the agent's WebSocket it is the
/// other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    /// No `Authorization` header.
    None,
    /// `Bearer` with text that is not a Warren token.
    Malformed,
    /// The right token's id with another (well-formed) secret.
    WrongSecret,
    /// The wrong-kind token's id and secret under the right kind's prefix
    /// (`wat_…` relabelled `wut_…`, or the reverse).
    KindSwapped,
    /// Bob's token of the same kind.
    OtherUser,
    /// Alice's token of the other kind.
    WrongKind,
    /// Alice's token of the right kind, revoked by the administrator.
    Revoked,
    Right,
}

const CREDS: [Cred; 8] = [
    Cred::None,
    Cred::Malformed,
    Cred::WrongSecret,
    Cred::KindSwapped,
    Cred::OtherUser,
    Cred::WrongKind,
    Cred::Revoked,
    Cred::Right,
];

impl Cred {
    fn label(self) -> &'static str {
        match self {
            Cred::None => "none",
            Cred::Malformed => "malformed",
            Cred::WrongSecret => "wrong-secret",
            Cred::KindSwapped => "kind-swapped",
            Cred::OtherUser => "other-user",
            Cred::WrongKind => "wrong-kind",
            Cred::Revoked => "revoked",
            Cred::Right => "right",
        }
    }
}

/// Which token a route is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    User,
    Agent,
}

/// What a row does (each renders its answer as a short outcome text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// Status only.
    Plain {
        body: &'static str,
        content_type: Option<&'static str>,
    },
    /// `GET /api/v1/me`: status and `kind:user` of a 200.
    Me,
    /// `GET /api/v1/tokens`: status and the owners of the listed ids.
    TokenList,
    /// `DELETE /api/v1/tokens/{id}` of a fresh token of alice's: status and
    /// whether that token still works afterwards.
    RevokeAlicesToken,
    /// `DELETE /api/v1/tokens/{id}` of alice's agent token.
    RevokeAgentToken,
    /// The control WebSocket: upgrade refused (status), or accepted and
    /// registered: the welcome's `kind:user` and, for a device, the
    /// workspaces of its snapshot; or the error it was closed with.
    Connect,
    /// `GET /oidc/start/{id}` of a fresh pending sign-in.
    StartFresh,
    /// `GET /tokens`: the sign-in page, or whose tokens are listed.
    TokensPage,
    /// `POST /tokens/revoke` of a fresh token of alice's.
    TokensRevoke,
}

struct Row {
    method: &'static str,
    /// The route as the router declares it.
    route: &'static str,
    /// The path requested (route parameters filled in; `{victim}` is a
    /// fresh token id of alice's).
    path: &'static str,
    side: Side,
    probe: Probe,
    expect: [&'static str; 8],
}

/// The same answer whatever the credential: routes that take none.
const fn same(outcome: &'static str) -> [&'static str; 8] {
    [outcome; 8]
}

const PLAIN: Probe = Probe::Plain {
    body: "",
    content_type: None,
};

/// A valid `GET /signin` query (the CLI's loopback flow).
const SIGNIN_QUERY: &str = "/signin?client=cli&redirect_uri=http%3A%2F%2F127.0.0.1%3A4711%2Fcallback&state=authz-state-0123456789abcdef&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&device=authz-laptop";

/// Every route × every credential. Columns, in order: none, malformed,
/// wrong-secret, kind-swapped, other-user, wrong-kind, revoked, right.
fn table() -> Vec<Row> {
    use Probe::*;
    const U401: &str = "401";
    vec![
        Row {
            method: "GET",
            route: "/api/v1/health",
            path: "/api/v1/health",
            side: Side::User,
            probe: PLAIN,
            expect: same("200"),
        },
        Row {
            method: "GET",
            route: ME_PATH,
            path: ME_PATH,
            side: Side::User,
            probe: Me,
            expect: [
                U401,
                U401,
                U401,
                U401,
                "200 user:bob",
                "200 agent:alice",
                U401,
                "200 user:alice",
            ],
        },
        Row {
            method: "GET",
            route: "/api/v1/tokens",
            path: "/api/v1/tokens",
            side: Side::User,
            probe: TokenList,
            expect: [
                U401,
                U401,
                U401,
                U401,
                "200 tokens-of:bob",
                "403",
                U401,
                "200 tokens-of:alice",
            ],
        },
        Row {
            method: "DELETE",
            route: "/api/v1/tokens/{id}",
            path: "/api/v1/tokens/{victim}",
            side: Side::User,
            probe: RevokeAlicesToken,
            expect: [
                "401 victim-works",
                "401 victim-works",
                "401 victim-works",
                "401 victim-works",
                "404 victim-works",
                "403 victim-works",
                "401 victim-works",
                "204 victim-refused",
            ],
        },
        Row {
            method: "DELETE",
            route: "/api/v1/tokens/{id}",
            path: "/api/v1/tokens/{alice's agent token}",
            side: Side::User,
            probe: RevokeAgentToken,
            expect: [
                "401 agent-works",
                "401 agent-works",
                "401 agent-works",
                "401 agent-works",
                "404 agent-works",
                "403 agent-works",
                "401 agent-works",
                "404 agent-works",
            ],
        },
        Row {
            method: "GET",
            route: CONNECT_PATH,
            path: "/api/v1/connect (as a device)",
            side: Side::User,
            probe: Connect,
            expect: [
                U401,
                U401,
                U401,
                U401,
                "101 user:bob sees [bob/bobws]",
                "101 agent:alice foreign-peers:none",
                U401,
                "101 user:alice sees [alice/alicews]",
            ],
        },
        Row {
            method: "GET",
            route: CONNECT_PATH,
            path: "/api/v1/connect (as an agent)",
            side: Side::Agent,
            probe: Connect,
            expect: [
                U401,
                U401,
                U401,
                U401,
                // Alice's own device stays connected through the matrix:
                // bob's agent must not see it.
                "101 agent:bob foreign-peers:none",
                // A user token never acts as an agent: it registers a device.
                "101 user:alice sees [alice/alicews]",
                U401,
                "101 agent:alice foreign-peers:none",
            ],
        },
        Row {
            method: "GET",
            route: CONNECT_PATH,
            path: "/api/v1/connect (no upgrade)",
            side: Side::User,
            probe: PLAIN,
            expect: [U401, U401, U401, U401, "400", "400", U401, "400"],
        },
        // The API's fallbacks answer before any token is looked at.
        Row {
            method: "POST",
            route: ME_PATH,
            path: ME_PATH,
            side: Side::User,
            probe: PLAIN,
            expect: same("405"),
        },
        Row {
            method: "GET",
            route: "(fallback)",
            path: "/api/v1/nothing-here",
            side: Side::User,
            probe: PLAIN,
            expect: same("404"),
        },
        // Browser sign-in takes no bearer token: none may change its answer,
        // and none may stand in for the tokens page's session.
        Row {
            method: "GET",
            route: "/signin",
            path: SIGNIN_QUERY,
            side: Side::User,
            probe: PLAIN,
            expect: same("200"),
        },
        Row {
            method: "GET",
            route: "/signin",
            path: "/signin",
            side: Side::User,
            probe: PLAIN,
            expect: same("400"),
        },
        Row {
            method: "GET",
            route: "/oidc/start/{id}",
            path: "/oidc/start/{fresh}",
            side: Side::User,
            probe: StartFresh,
            expect: same("303 to-idp"),
        },
        Row {
            method: "GET",
            route: "/oidc/start/{id}",
            path: "/oidc/start/not-a-pending-sign-in",
            side: Side::User,
            probe: PLAIN,
            expect: same("400"),
        },
        Row {
            method: "GET",
            route: "/oidc/callback",
            path: "/oidc/callback?state=not-a-pending-sign-in&code=made-up",
            side: Side::User,
            probe: PLAIN,
            expect: same("400"),
        },
        Row {
            method: "POST",
            route: "/api/v1/signin/token",
            path: "/api/v1/signin/token",
            side: Side::User,
            probe: Plain {
                body: r#"{"grant_type":"authorization_code","code":"made-up","code_verifier":"made-up"}"#,
                content_type: Some("application/json"),
            },
            expect: same("400"),
        },
        Row {
            method: "POST",
            route: "/api/v1/signin/device",
            path: "/api/v1/signin/device",
            side: Side::User,
            probe: Plain {
                body: r#"{"device":"authz-box"}"#,
                content_type: Some("application/json"),
            },
            expect: same("200"),
        },
        Row {
            method: "GET",
            route: "/device",
            path: "/device",
            side: Side::User,
            probe: PLAIN,
            expect: same("200"),
        },
        Row {
            method: "GET",
            route: "/device",
            path: "/device?code=BCDF-GHJK",
            side: Side::User,
            probe: PLAIN,
            expect: same("400"),
        },
        Row {
            method: "GET",
            route: "/tokens",
            path: "/tokens",
            side: Side::User,
            probe: TokensPage,
            expect: same("200 sign-in-page"),
        },
        Row {
            method: "POST",
            route: "/tokens/revoke",
            path: "/tokens/revoke",
            side: Side::User,
            probe: TokensRevoke,
            expect: same("403 victim-works"),
        },
    ]
}

// ---------------------------------------------------------------------------
// Routes in the source

/// `(METHOD, path)` of every `.route(…)` in the coordinator's source, read
/// at test time so that a route added without a row here fails.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/coordinator/src");
    let mut files = vec![];
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let p = e.expect("a directory entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let constants: BTreeMap<&str, &str> = [
        ("control::ME_PATH", ME_PATH),
        ("ME_PATH", ME_PATH),
        ("control::CONNECT_PATH", CONNECT_PATH),
        ("CONNECT_PATH", CONNECT_PATH),
    ]
    .into();
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read a source file");
        // Comments may mention `.route(`; code is what counts.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for other in [".nest(", ".route_service(", ".nest_service("] {
            assert!(
                !code.contains(other),
                "{} uses {other}…): teach routes_in_source() to read it so its routes get rows",
                f.display()
            );
        }
        let mut rest = code.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            // The call's arguments, up to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(j, _)| j)
                .unwrap_or_else(|| panic!("unbalanced .route( in {}", f.display()));
            let args = &rest[..end];
            let (path, handlers) = args
                .split_once(',')
                .unwrap_or_else(|| panic!(".route({args}) in {}", f.display()));
            let path = path.trim();
            let path = match path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                Some(literal) => literal.to_string(),
                None => constants
                    .get(path)
                    .unwrap_or_else(|| {
                        panic!(
                            "route path {path} in {}: add the constant to routes_in_source()",
                            f.display()
                        )
                    })
                    .to_string(),
            };
            let mut methods = 0;
            for m in [
                "get", "post", "delete", "put", "patch", "head", "options", "any",
            ] {
                // `get(h)` at the start or `.get(h)` chained.
                let starts = handlers.trim_start().starts_with(&format!("{m}("));
                let chained =
                    handlers.contains(&format!(".{m}(")) || handlers.contains(&format!("::{m}("));
                if starts || chained {
                    out.insert((m.to_ascii_uppercase(), path.clone()));
                    methods += 1;
                }
            }
            assert!(
                methods > 0,
                "no method in .route({args}) in {}",
                f.display()
            );
        }
    }
    out
}

#[test]
fn every_route_in_the_source_has_a_row() {
    let in_source = routes_in_source();
    eprintln!("routes in the coordinator's source: {in_source:?}");
    assert!(
        in_source.len() >= 13,
        "found only {} routes in the source; the parser lost some: {in_source:?}",
        in_source.len()
    );
    let in_table: BTreeSet<(String, String)> = table()
        .iter()
        .filter(|r| r.route != "(fallback)")
        .map(|r| (r.method.to_string(), r.route.to_string()))
        .collect();
    // The API answers another method on a route with 405 before auth: one
    // such row stands for all of them, and is not a route of its own.
    let extra: Vec<_> = in_table
        .difference(&in_source)
        .filter(|(m, p)| !(m == "POST" && p == ME_PATH))
        .collect();
    let missing: Vec<_> = in_source.difference(&in_table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the authorization table and the router disagree.\nroutes without a row (add one to table() in tests/tests/authz_matrix.rs): {missing:?}\nrows for routes that no longer exist: {extra:?}"
    );
    // The WebSocket is called both as a device and as an agent.
    let connects = table().iter().filter(|r| r.probe == Probe::Connect).count();
    assert_eq!(connects, 2, "the WebSocket needs a device and an agent row");
}

// ---------------------------------------------------------------------------
// The deployment under test

/// A free loopback port: the provider must know the coordinator's callback
/// before the coordinator starts.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// The public id inside a `wut_<id>_<secret>` token.
fn token_id(token: &str) -> &str {
    &token[4..20]
}

/// A coordinator signing people in through the test identity provider,
/// with alice and bob (each a workspace, a user token and an agent, and
/// linked to their provider accounts) and revoked tokens of alice's.
struct Deployment {
    coord: Coordinator,
    /// The identity provider, running as long as the coordinator.
    provider: TestProvider,
    /// Each test user's password at the provider.
    passwords: BTreeMap<String, String>,
    alice_user: String,
    alice_agent: String,
    alice_user_revoked: String,
    alice_agent_revoked: String,
    bob_user: String,
    bob_agent: String,
    /// Token id → owner, of every token made for the test.
    owners: BTreeMap<String, String>,
    /// Last, so that it outlives the processes writing into it.
    _dir: TestDir,
}

impl Deployment {
    fn start() -> Deployment {
        let dir = TestDir::new("authz");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let users = vec![TestUser::new("alice"), TestUser::new("bob")];
        let mut config = ProviderConfig::new().client(TestClient::new(
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("{url}/oidc/callback"),
        ));
        for u in &users {
            config = config.user(u.clone());
        }
        let provider = TestProvider::start(dir.path(), &config);
        let secret_file = dir.join("client-secret");
        // 0600: the coordinator refuses a secret file others can read.
        warren_e2e::netns::write_secret(&secret_file, CLIENT_SECRET);
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let secret_path = secret_file.to_string_lossy().into_owned();
        let coord = Coordinator::start_at(
            dir.path(),
            "info",
            listen,
            &[
                "--public-url",
                &url,
                "--oidc-issuer",
                &provider.issuer,
                "--oidc-client-id",
                CLIENT_ID,
                "--oidc-client-secret-file",
                &secret_path,
            ],
        );
        let mut owners = BTreeMap::new();
        let mut user = |name: &str, ws: &str| {
            coord.add_user(name);
            coord.admin(&[
                "user",
                "link-oidc",
                name,
                "--issuer",
                &provider.issuer,
                "--subject",
                &format!("sub-{name}"),
            ]);
            coord.add_workspace(name, ws);
            let t = coord.create_token(name);
            let a = coord.add_agent(name, ws, &format!("{name}-agent"));
            owners.insert(token_id(&t).to_string(), name.to_string());
            // An agent token in a user's token list would show as such.
            owners.insert(token_id(&a).to_string(), format!("{name}(agent)"));
            (t, a)
        };
        let (alice_user, alice_agent) = user("alice", "alicews");
        let (bob_user, bob_agent) = user("bob", "bobws");
        let alice_user_revoked = coord.create_token("alice");
        coord.admin(&["token", "revoke", token_id(&alice_user_revoked)]);
        let alice_agent_revoked = coord.add_agent("alice", "alicews", "alice-gone");
        coord.admin(&["token", "revoke", token_id(&alice_agent_revoked)]);
        Deployment {
            _dir: dir,
            provider,
            passwords: users
                .iter()
                .map(|u| (u.username.clone(), u.password.clone()))
                .collect(),
            coord,
            alice_user,
            alice_agent,
            alice_user_revoked,
            alice_agent_revoked,
            bob_user,
            bob_agent,
            owners,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.coord.addr
    }

    /// A new user token of alice's, to be revoked by a cell.
    fn victim(&mut self) -> String {
        let t = self.coord.create_token("alice");
        self.owners
            .insert(token_id(&t).to_string(), "alice".to_string());
        t
    }

    /// The bearer token `cred` stands for on a route for `side`.
    fn bearer(&self, side: Side, cred: Cred) -> Option<String> {
        let (right, wrong_kind, other, revoked) = match side {
            Side::User => (
                &self.alice_user,
                &self.alice_agent,
                &self.bob_user,
                &self.alice_user_revoked,
            ),
            Side::Agent => (
                &self.alice_agent,
                &self.alice_user,
                &self.bob_agent,
                &self.alice_agent_revoked,
            ),
        };
        Some(match cred {
            Cred::None => return None,
            Cred::Malformed => "not-a-warren-token".to_string(),
            Cred::WrongSecret => format!(
                "{}{}",
                &right[..21],
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
            ),
            Cred::KindSwapped => format!("{}{}", &right[..4], &wrong_kind[4..]),
            Cred::OtherUser => other.clone(),
            Cred::WrongKind => wrong_kind.clone(),
            Cred::Revoked => revoked.clone(),
            Cred::Right => right.clone(),
        })
    }

    /// Whether `token` still authenticates (asked from an address no cell
    /// uses).
    async fn works(&self, token: &str) -> bool {
        let r = get(ip(127, 200, 0, 1), self.addr(), ME_PATH, Some(token)).await;
        match r.status {
            200 => true,
            401 => false,
            s => panic!("GET /api/v1/me answered {s}: {}", r.text()),
        }
    }
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The source address of the cell at `row`, `col`.
fn cell_source(row: usize, col: usize) -> IpAddr {
    ip(127, 1, row as u8, col as u8 + 1)
}

async fn get(from: IpAddr, to: SocketAddr, path: &str, bearer: Option<&str>) -> Reply {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request_from(from, to, "GET", path, &headers, b"")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The link to `oidc/start/ID` on a sign-in page.
fn start_link(page: &str) -> Option<String> {
    let at = page.find("oidc/start/")? + "oidc/start/".len();
    let id: String = page[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!id.is_empty()).then_some(id)
}

/// The ids a tokens page lists.
fn listed_ids(page: &str) -> Vec<String> {
    page.split("data-token-id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect()
}

/// The CSRF value of a tokens page's forms.
fn csrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().map(str::to_string)
}

/// The owners of `ids` (sorted, deduplicated), `?` for an unknown id.
fn owners_of(d: &Deployment, ids: &[String]) -> String {
    let owners: BTreeSet<&str> = ids
        .iter()
        .map(|id| d.owners.get(id).map_or("?", String::as_str))
        .collect();
    owners.into_iter().collect::<Vec<_>>().join(",")
}

/// Registers on an accepted WebSocket and renders what came back.
async fn register_outcome(ws: &mut WsClient) -> String {
    let key = random_public_key();
    let endpoint: SocketAddr = "127.0.0.2:51820".parse().expect("an endpoint");
    if let Err(e) = ws.send_text(&register_json(&key, &[endpoint], None)).await {
        return format!("101 send failed: {e}");
    }
    let first = match ws.next_json(WS_WAIT).await {
        Ok(v) => v,
        Err(e) => return format!("101 {e}"),
    };
    match first["type"].as_str() {
        Some("welcome") => {}
        Some("error") => return format!("101 closed:{}", first["error"].as_str().unwrap_or("?")),
        _ => return format!("101 unexpected {first}"),
    }
    let who = format!(
        "{}:{}",
        first["kind"].as_str().unwrap_or("?"),
        first["user"].as_str().unwrap_or("?")
    );
    if first["kind"] != "user" {
        // An agent's snapshot: the devices of users other than its owner.
        let snapshot = match ws.next_json(WS_WAIT).await {
            Ok(m) => m,
            Err(e) => return format!("101 {who} then {e}"),
        };
        let owner = first["user"].as_str().unwrap_or("?");
        let foreign: BTreeSet<&str> = snapshot["upserted"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["user"].as_str())
            .filter(|u| *u != owner)
            .collect();
        let foreign = if foreign.is_empty() {
            "none".to_string()
        } else {
            foreign.into_iter().collect::<Vec<_>>().join(",")
        };
        // The snapshot is not empty for nobody: alice's agent sees her laptop.
        let laptop_seen = snapshot["upserted"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["user"] == "alice");
        let missing = if owner == "alice" && !laptop_seen {
            " (alice's laptop missing)"
        } else {
            ""
        };
        return format!("101 {who} foreign-peers:{foreign}{missing}");
    }
    // A device's snapshot: whose workspaces it shows.
    let mut seen = BTreeSet::new();
    loop {
        let m = match ws.next_json(WS_WAIT).await {
            Ok(m) => m,
            Err(e) => return format!("101 {who} then {e}"),
        };
        if m["type"] != "workspace_update" {
            continue;
        }
        for w in m["upserted_workspaces"].as_array().into_iter().flatten() {
            seen.insert(format!(
                "{}/{}",
                w["owner"].as_str().unwrap_or("?"),
                w["name"].as_str().unwrap_or("?")
            ));
        }
        if m["more"] != true {
            break;
        }
    }
    format!(
        "101 {who} sees [{}]",
        seen.into_iter().collect::<Vec<_>>().join(",")
    )
}

/// The path a row requests: its `path` without the note in parentheses.
fn request_path(row: &Row) -> &str {
    row.path.split(" (").next().unwrap_or(row.path)
}

/// A row's path as the report shows it (the valid sign-in query is long).
fn shown(path: &str) -> &str {
    if path == SIGNIN_QUERY {
        "/signin?(a valid CLI query)"
    } else {
        path
    }
}

/// Runs one cell and renders its outcome.
async fn run_cell(d: &mut Deployment, row: &Row, cred: Cred, from: IpAddr) -> String {
    let to = d.addr();
    let bearer = d.bearer(row.side, cred);
    let auth = bearer.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> =
        auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let send = |method: &'static str, path: String, headers: Vec<(&str, &str)>, body: Vec<u8>| {
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            request_from(from, to, method, &path, &h, &body)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        }
    };
    match row.probe {
        Probe::Plain { body, content_type } => {
            if let Some(ct) = content_type {
                headers.push(("Content-Type", ct));
            }
            let r = send(
                row.method,
                request_path(row).to_string(),
                headers,
                body.into(),
            )
            .await;
            r.status.to_string()
        }
        Probe::Me => {
            let r = send(row.method, row.path.to_string(), headers, vec![]).await;
            if r.status != 200 {
                return r.status.to_string();
            }
            let v = r.json();
            format!(
                "200 {}:{}",
                v["kind"].as_str().unwrap_or("?"),
                v["user"].as_str().unwrap_or("?")
            )
        }
        Probe::TokenList => {
            let r = send(row.method, row.path.to_string(), headers, vec![]).await;
            if r.status != 200 {
                return r.status.to_string();
            }
            let ids: Vec<String> = r
                .json()
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect();
            format!("200 tokens-of:{}", owners_of(d, &ids))
        }
        Probe::RevokeAlicesToken => {
            let victim = d.victim();
            let path = format!("/api/v1/tokens/{}", token_id(&victim));
            let r = send(row.method, path, headers, vec![]).await;
            let alive = if d.works(&victim).await {
                "victim-works"
            } else {
                "victim-refused"
            };
            format!("{} {alive}", r.status)
        }
        Probe::RevokeAgentToken => {
            let path = format!("/api/v1/tokens/{}", token_id(&d.alice_agent));
            let r = send(row.method, path, headers, vec![]).await;
            let alive = if d.works(&d.alice_agent).await {
                "agent-works"
            } else {
                "agent-refused"
            };
            format!("{} {alive}", r.status)
        }
        Probe::Connect => match ws_open_from(from, to, CONNECT_PATH, bearer.as_deref()).await {
            Err(e) => format!("error: {e}"),
            Ok(Upgrade::Refused(r)) => r.status.to_string(),
            Ok(Upgrade::Accepted(mut ws)) => register_outcome(&mut ws).await,
        },
        Probe::StartFresh => {
            let page = send("GET", SIGNIN_QUERY.to_string(), vec![], vec![]).await;
            let Some(id) = start_link(&page.text()) else {
                return format!("no start link on the sign-in page ({})", page.status);
            };
            let r = send(row.method, format!("/oidc/start/{id}"), headers, vec![]).await;
            let to_idp = r
                .header("location")
                .is_some_and(|l| l.starts_with(&d.provider.issuer));
            format!(
                "{} {}",
                r.status,
                if to_idp { "to-idp" } else { "elsewhere" }
            )
        }
        Probe::TokensPage => {
            let r = send(row.method, row.path.to_string(), headers, vec![]).await;
            format!("{} {}", r.status, tokens_page_shows(d, &r.text()))
        }
        Probe::TokensRevoke => {
            let victim = d.victim();
            let form = form_encode(&[("id", token_id(&victim)), ("csrf", "made-up")]);
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
            let r = send(row.method, row.path.to_string(), headers, form.into_bytes()).await;
            let alive = if d.works(&victim).await {
                "victim-works"
            } else {
                "victim-refused"
            };
            format!("{} {alive}", r.status)
        }
    }
}

/// What a tokens page shows: the way to sign in, or whose tokens.
fn tokens_page_shows(d: &Deployment, page: &str) -> String {
    let ids = listed_ids(page);
    if !ids.is_empty() {
        return format!("tokens-of:{}", owners_of(d, &ids));
    }
    if start_link(page).is_some() {
        return "sign-in-page".into();
    }
    "other-page".into()
}

/// Renders mismatches as one table: row, column, expected, got.
fn report(title: &str, mismatches: &[(String, String, String, String)]) -> String {
    let mut out = format!(
        "{title}: {} cell(s) differ from the table\n",
        mismatches.len()
    );
    for (row, col, want, got) in mismatches {
        out.push_str(&format!(
            "  {row:<52} {col:<14} expected {want:<36} got {got}\n"
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// The tokens page's session, signed in without a browser

/// A cookie jar over every host (all loopback here; only names matter).
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, r: &Reply) {
        for (k, v) in &r.headers {
            if k != "set-cookie" {
                continue;
            }
            let pair = v.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let expired = v.to_ascii_lowercase().contains("max-age=0")
                    || v.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
                if expired || value.is_empty() {
                    self.0.remove(name.trim());
                } else {
                    self.0.insert(name.trim().to_string(), value.to_string());
                }
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `http://HOST:PORT` and the path of `url`.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").expect("plain http");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    (
        host.parse().expect("a loopback host:port"),
        path.to_string(),
    )
}

async fn jar_request(jar: &mut Jar, method: &str, url: &str, form: Option<&str>) -> Reply {
    let (to, path) = split_url(url);
    let cookie = jar.header();
    let mut headers = vec![];
    if !cookie.is_empty() {
        headers.push(("Cookie", cookie.as_str()));
    }
    if form.is_some() {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    let body = form.unwrap_or_default().as_bytes();
    let r = request_from(ip(127, 0, 0, 1), to, method, &path, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    jar.take(&r);
    r
}

/// Signs `user` in to the tokens page by plain HTTP through the test
/// provider's login and consent forms; returns the session cookie's value
/// and the page's CSRF value.
async fn tokens_session(d: &Deployment, user: &str) -> (String, String) {
    let coord = d.coord.url.clone();
    let mut jar = Jar::default();
    let first = jar_request(&mut jar, "GET", &format!("{coord}/tokens"), None).await;
    let id = start_link(&first.text()).expect("the tokens page offers to sign in");
    let mut url = format!("{coord}/oidc/start/{id}");
    let mut r = jar_request(&mut jar, "GET", &url, None).await;
    for _ in 0..20 {
        if (300..400).contains(&r.status) {
            let loc = r.header("location").expect("a redirect's location");
            url = if loc.starts_with("http://") {
                loc.to_string()
            } else {
                let (origin, _) = split_url(&url);
                format!("http://{origin}{loc}")
            };
            if url.starts_with(&format!("{coord}/tokens")) {
                let sid = jar
                    .0
                    .get("warren_tokens_session")
                    .cloned()
                    .expect("the callback set the session cookie");
                let page = jar_request(&mut jar, "GET", &url, None).await;
                let csrf = csrf_of(&page.text()).expect("the tokens page has a CSRF value");
                return (sid, csrf);
            }
            r = jar_request(&mut jar, "GET", &url, None).await;
            continue;
        }
        let page = r.text();
        let (origin, _) = split_url(&url);
        let action = |what: &str| {
            let at = page.find(&format!("/{what}\""))?;
            let start = page[..at].rfind('"')? + 1;
            Some(format!("http://{origin}{}/{what}", &page[start..at]))
        };
        if let Some(login) = action("login") {
            let form = form_encode(&[("username", user), ("password", &d.passwords[user])]);
            url = login;
            r = jar_request(&mut jar, "POST", &url, Some(&form)).await;
        } else if let Some(confirm) = action("confirm") {
            url = confirm;
            r = jar_request(&mut jar, "POST", &url, Some("decision=approve")).await;
        } else {
            panic!(
                "signing {user} in to the tokens page stopped at {url} ({}): {page}",
                r.status
            );
        }
    }
    panic!("signing {user} in to the tokens page took over 20 steps");
}

// ---------------------------------------------------------------------------
// The matrix

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_credential_as_the_table_says() {
    let mut d = Deployment::start();
    let rows = table();
    let started = Instant::now();
    // Alice's laptop, online throughout: every agent's snapshot would show
    // it, so any agent but alice's that sees it sees another user's device.
    let (observer, got) = open_and_register(
        ip(127, 200, 0, 2),
        d.addr(),
        &d.alice_user,
        &endpoints(1),
        None,
    )
    .await;
    assert_eq!(got, "welcome", "alice's laptop could not connect");
    let mut mismatches = vec![];
    let mut grid = String::new();
    for (i, row) in rows.iter().enumerate() {
        let mut got_row = vec![];
        for (j, cred) in CREDS.iter().enumerate() {
            let got = run_cell(&mut d, row, *cred, cell_source(i, j)).await;
            if got != row.expect[j] {
                mismatches.push((
                    format!("{} {}", row.method, shown(row.path)),
                    cred.label().to_string(),
                    row.expect[j].to_string(),
                    got.clone(),
                ));
            }
            got_row.push(got);
        }
        grid.push_str(&format!(
            "{:<6} {:<40} {}\n",
            row.method,
            shown(row.path),
            got_row.join(" | ")
        ));
    }

    // The tokens page's own credential is its session cookie (and the CSRF
    // value of its forms): rows × sessions.
    let (alice_sid, alice_csrf) = tokens_session(&d, "alice").await;
    let (bob_sid, bob_csrf) = tokens_session(&d, "bob").await;
    let sessions: [(&str, Option<(&str, &str)>); 5] = [
        ("no session", None),
        ("made-up session", Some(("c2Vzc2lvbi1tYWRlLXVw", "made-up"))),
        ("bob's session", Some((&bob_sid, &bob_csrf))),
        ("alice, wrong csrf", Some((&alice_sid, &bob_csrf))),
        ("alice's session", Some((&alice_sid, &alice_csrf))),
    ];
    let session_table: [(&str, [&str; 5]); 2] = [
        (
            "GET /tokens",
            [
                "200 sign-in-page",
                "200 sign-in-page",
                "200 tokens-of:bob",
                "200 tokens-of:alice",
                "200 tokens-of:alice",
            ],
        ),
        (
            "POST /tokens/revoke",
            [
                "403 victim-works",
                "403 victim-works",
                // Someone else's token is "already signed out": nothing
                // tells bob it exists, and it keeps working.
                "200 victim-works",
                "403 victim-works",
                "200 victim-refused",
            ],
        ),
    ];
    for (i, (what, expect)) in session_table.iter().enumerate() {
        for (j, (label, session)) in sessions.iter().enumerate() {
            let from = ip(127, 2, i as u8, j as u8 + 1);
            let cookie = session.map(|(sid, _)| format!("warren_tokens_session={sid}"));
            let mut headers: Vec<(&str, &str)> =
                cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
            let got = if *what == "GET /tokens" {
                let r = request_from(from, d.addr(), "GET", "/tokens", &headers, b"")
                    .await
                    .expect("GET /tokens");
                format!("{} {}", r.status, tokens_page_shows(&d, &r.text()))
            } else {
                let victim = d.victim();
                let csrf = session.map_or("made-up", |(_, c)| c);
                let form = form_encode(&[("id", token_id(&victim)), ("csrf", csrf)]);
                headers.push(("Content-Type", "application/x-www-form-urlencoded"));
                let r = request_from(
                    from,
                    d.addr(),
                    "POST",
                    "/tokens/revoke",
                    &headers,
                    form.as_bytes(),
                )
                .await
                .expect("POST /tokens/revoke");
                let alive = if d.works(&victim).await {
                    "victim-works"
                } else {
                    "victim-refused"
                };
                format!("{} {alive}", r.status)
            };
            if got != expect[j] {
                mismatches.push((
                    what.to_string(),
                    label.to_string(),
                    expect[j].to_string(),
                    got.clone(),
                ));
            }
            grid.push_str(&format!("{what:<26} {label:<18} {got}\n"));
        }
    }
    // Tokens whose agent or user is gone: nothing they open.
    let removed_agent = d.coord.add_agent("alice", "alicews", "alice-removed");
    d.coord.rm_agent("alice", "alicews", "alice-removed");
    let carol_user = d.coord.user_with_token("carol");
    d.coord.add_workspace("carol", "carolws");
    let carol_agent = d.coord.add_agent("carol", "carolws", "carol-agent");
    d.coord.admin(&["user", "rm", "carol"]);
    let gone = [
        ("a removed agent's token", &removed_agent),
        ("a removed user's token", &carol_user),
        ("a removed user's agent token", &carol_agent),
    ];
    for (i, (label, token)) in gone.iter().enumerate() {
        for (j, what) in [
            "GET /api/v1/me",
            "GET /api/v1/tokens",
            "GET /api/v1/connect",
        ]
        .iter()
        .enumerate()
        {
            let from = ip(127, 5, i as u8, j as u8 + 1);
            let got = match *what {
                "GET /api/v1/connect" => {
                    match ws_open_from(from, d.addr(), CONNECT_PATH, Some(token)).await {
                        Err(e) => format!("error: {e}"),
                        Ok(Upgrade::Refused(r)) => r.status.to_string(),
                        Ok(Upgrade::Accepted(mut ws)) => register_outcome(&mut ws).await,
                    }
                }
                _ => {
                    let path = what.trim_start_matches("GET ");
                    get(from, d.addr(), path, Some(token))
                        .await
                        .status
                        .to_string()
                }
            };
            if got != "401" {
                mismatches.push((
                    what.to_string(),
                    label.to_string(),
                    "401".to_string(),
                    got.clone(),
                ));
            }
            grid.push_str(&format!("{what:<26} {label:<30} {got}\n"));
        }
    }

    drop(observer);
    eprintln!(
        "authorization matrix ({} rows × {} credentials, and the tokens page × 5 sessions) in {:?}:\n{grid}",
        rows.len(),
        CREDS.len(),
        started.elapsed()
    );
    assert!(
        mismatches.is_empty(),
        "{}",
        report("authorization matrix", &mismatches)
    );
    // Nothing the matrix sent made the coordinator fail inside.
    let log = std::fs::read_to_string(&d.coord.stderr_paths()[0]).unwrap_or_default();
    assert!(
        !log.contains("ERROR") && !log.contains("panicked"),
        "the coordinator logged an error during the matrix:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// The limits

/// One limit at its edge: what was expected and what happened.
struct Limits(Vec<(String, String, String)>);

impl Limits {
    fn check(&mut self, what: &str, want: &str, got: String) {
        eprintln!("limit: {what:<60} {got}");
        self.0.push((what.to_string(), want.to_string(), got));
    }

    fn assert_all(self) {
        let mismatches: Vec<_> = self
            .0
            .into_iter()
            .filter(|(_, want, got)| want != got)
            .map(|(what, want, got)| (what, String::new(), want, got))
            .collect();
        assert!(mismatches.is_empty(), "{}", report("limits", &mismatches));
    }
}

/// Opens the control WebSocket with `token` and registers with `endpoints`
/// and a message padded to `pad_to` bytes; the socket and the first answer
/// (`welcome`, `closed:ERROR (…)` or what else came).
async fn open_and_register(
    from: IpAddr,
    to: SocketAddr,
    token: &str,
    endpoints: &[SocketAddr],
    pad_to: Option<usize>,
) -> (Option<WsClient>, String) {
    let mut ws = match ws_open_from(from, to, CONNECT_PATH, Some(token)).await {
        Ok(Upgrade::Accepted(ws)) => ws,
        Ok(Upgrade::Refused(r)) => return (None, format!("refused {}", r.status)),
        Err(e) => return (None, format!("error: {e}")),
    };
    let msg = register_json(&random_public_key(), endpoints, pad_to);
    // Over a limit the server may stop reading mid-message; what it says
    // then is the outcome, not the write error.
    let _ = ws.send_text(&msg).await;
    let outcome = match ws.next_event(WS_WAIT).await {
        Some(WsEvent::Text(t)) => {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            match v["type"].as_str() {
                Some("welcome") => "welcome".to_string(),
                Some("error") => {
                    let message = v["message"].as_str().unwrap_or_default();
                    let note = if message.contains("size limit") {
                        " (size limit)"
                    } else {
                        ""
                    };
                    format!("closed:{}{note}", v["error"].as_str().unwrap_or("?"))
                }
                _ => format!("unexpected {t}"),
            }
        }
        other => format!("{other:?}"),
    };
    (Some(ws), outcome)
}

/// The index of a pending-sign-in filler's source address.
fn sources_index(from: IpAddr) -> usize {
    match from {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[2] as usize * 200 + o[3] as usize - 1
        }
        IpAddr::V6(_) => unreachable!("fillers are IPv4"),
    }
}

fn endpoints(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::new(ip(127, 0, 0, 2), 51820 + i as u16))
        .collect()
}

/// `n` requests from `from`: the count of each status in order of first
/// appearance, then the last answer's status and whether it had a
/// `Retry-After`, e.g. `10×401 then 429 retry-after`.
async fn burst<F: std::future::Future<Output = Reply>>(
    n: usize,
    mut one: impl FnMut() -> F,
) -> String {
    let mut seen: Vec<(u16, usize)> = vec![];
    for _ in 0..n {
        let r = one().await;
        match seen.last_mut() {
            Some((s, count)) if *s == r.status => *count += 1,
            _ => seen.push((r.status, 1)),
        }
    }
    let last = one().await;
    let counts = seen
        .iter()
        .map(|(s, c)| format!("{c}×{s}"))
        .collect::<Vec<_>>()
        .join(" ");
    let retry = if last.header("retry-after").is_some() {
        " retry-after"
    } else {
        ""
    };
    format!("{counts} then {}{retry}", last.status)
}

/// One request's status, `closed unanswered` if the connection was closed
/// without an answer, or the error.
async fn status_or_closed(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    match request_from(from, to, method, path, headers, body).await {
        Ok(r) => r.status.to_string(),
        Err(e)
            if matches!(
                e.kind(),
                // A refused connection is closed at once: the request's
                // write may meet the close before the read does.
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            "closed unanswered".into()
        }
        Err(e) => format!("error: {e}"),
    }
}

/// Reads until EOF or reset: whether `s` was closed within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confinement_limits_hold_at_their_edges() {
    let d = Deployment::start();
    let to = d.addr();
    let mut l = Limits(vec![]);
    let started = Instant::now();

    // A connection that never registers is closed after 10 s: watched in
    // the background while the rest runs.
    let silent = {
        let token = d.alice_user.clone();
        tokio::spawn(async move {
            let opened = Instant::now();
            let mut ws = match ws_open_from(ip(127, 3, 6, 1), to, CONNECT_PATH, Some(&token)).await
            {
                Ok(Upgrade::Accepted(ws)) => ws,
                Ok(Upgrade::Refused(r)) => return format!("refused {}", r.status),
                Err(e) => return format!("error: {e}"),
            };
            let said = match ws.next_json(Duration::from_secs(15)).await {
                Ok(v) => format!("closed:{}", v["error"].as_str().unwrap_or("?")),
                Err(e) => e,
            };
            let after = opened.elapsed();
            if (Duration::from_millis(9_500)..=Duration::from_secs(12)).contains(&after) {
                format!("{said} after 10 s")
            } else {
                format!("{said} after {after:?}")
            }
        })
    };

    // WebSocket messages: 1 MiB is the largest accepted.
    let one = endpoints(1);
    let (_a, got) = open_and_register(
        ip(127, 3, 0, 1),
        to,
        &d.alice_user,
        &one,
        Some(MAX_CLIENT_MESSAGE_BYTES),
    )
    .await;
    l.check("WS register of exactly 1 MiB", "welcome", got);
    let (_b, got) = open_and_register(
        ip(127, 3, 0, 2),
        to,
        &d.alice_user,
        &one,
        Some(MAX_CLIENT_MESSAGE_BYTES + 1),
    )
    .await;
    l.check(
        "WS register of 1 MiB + 1 byte",
        "closed:bad_request (size limit)",
        got,
    );

    // Endpoints: 16 per agent or device.
    let (_c, got) = open_and_register(
        ip(127, 3, 0, 3),
        to,
        &d.bob_agent,
        &endpoints(MAX_ENDPOINTS),
        None,
    )
    .await;
    l.check("agent registers 16 endpoints", "welcome", got);
    let (_d, got) = open_and_register(
        ip(127, 3, 0, 4),
        to,
        &d.bob_user,
        &endpoints(MAX_ENDPOINTS + 1),
        None,
    )
    .await;
    l.check(
        "device registers 17 endpoints",
        "closed:too_many_endpoints",
        got,
    );

    // One connection per agent: a second one takes over, the first is told.
    let (first, got) = open_and_register(ip(127, 3, 0, 5), to, &d.alice_agent, &one, None).await;
    l.check("agent's first connection", "welcome", got);
    let (_second, got) = open_and_register(ip(127, 3, 0, 6), to, &d.alice_agent, &one, None).await;
    l.check("agent's second connection", "welcome", got);
    let mut told = "no first connection".to_string();
    if let Some(mut first) = first {
        told = "nothing".into();
        while let Some(ev) = first.next_event(WS_WAIT).await {
            if let WsEvent::Text(t) = &ev {
                let v: Value = serde_json::from_str(t).unwrap_or(Value::Null);
                if v["type"] == "error" {
                    told = format!("closed:{}", v["error"].as_str().unwrap_or("?"));
                    break;
                }
                continue;
            }
            told = format!("{ev:?}");
            break;
        }
    }
    l.check(
        "agent's first connection after the second",
        "closed:replaced",
        told,
    );

    // Failed authentications: 10 per address and token id, then 429 with
    // Retry-After; made-up and malformed tokens share one bucket per
    // address; the token's owner elsewhere and another token at that
    // address are unaffected.
    let guesser = ip(127, 3, 1, 1);
    let wrong = d.bearer(Side::User, Cred::WrongSecret).expect("a token");
    let w = wrong.as_str();
    let got = burst(10, move || get(guesser, to, ME_PATH, Some(w))).await;
    l.check(
        "10 wrong secrets for one token id, then one more",
        "10×401 then 429 retry-after",
        got,
    );
    let got = get(ip(127, 3, 1, 2), to, ME_PATH, Some(&d.alice_user))
        .await
        .status
        .to_string();
    l.check("that token's owner from another address", "200", got);
    let got = get(guesser, to, ME_PATH, Some(&d.bob_user))
        .await
        .status
        .to_string();
    l.check("another user's token from the guessing address", "200", got);
    let got = burst(10, move || {
        get(ip(127, 3, 1, 3), to, ME_PATH, Some("not-a-warren-token"))
    })
    .await;
    l.check(
        "10 malformed tokens from one address, then one more",
        "10×401 then 429 retry-after",
        got,
    );
    let got = get(
        ip(127, 3, 1, 3),
        to,
        ME_PATH,
        Some(&warren_e2e::fake_token()),
    )
    .await
    .status
    .to_string();
    l.check("then a made-up token from that address", "429", got);

    // Browser sign-in: 30 starts per address, then 429; 10 refused codes
    // per address, then 429; device names up to 64 characters.
    let got = burst(30, move || get(ip(127, 3, 2, 1), to, SIGNIN_QUERY, None)).await;
    l.check(
        "30 sign-ins started from one address, then one more",
        "30×200 then 429 retry-after",
        got,
    );
    // Pending sign-ins: 10,000 at most (30 are pending now), each address
    // starting 30.
    const CAP: usize = 10_000;
    let fill = CAP - 30 - 1;
    let sources: Vec<IpAddr> = (0..fill.div_ceil(30))
        .map(|i| ip(127, 4, (i / 200) as u8, (i % 200) as u8 + 1))
        .collect();
    let mut fillers = vec![];
    for part in sources.chunks(sources.len().div_ceil(4)) {
        let part = part.to_vec();
        let total = fill;
        fillers.push(tokio::spawn(async move {
            let mut odd = vec![];
            for (n, from) in part.iter().enumerate() {
                let first = sources_index(*from) * 30;
                let count = 30.min(total.saturating_sub(first));
                for _ in 0..count {
                    let r = get(*from, to, SIGNIN_QUERY, None).await;
                    if r.status != 200 {
                        odd.push(format!("source {n}: {}", r.status));
                    }
                }
            }
            odd
        }));
    }
    let mut odd = vec![];
    for f in fillers {
        odd.extend(f.await.expect("a filler task"));
    }
    l.check(
        "9,969 more sign-ins from 333 addresses",
        "all 200",
        if odd.is_empty() {
            "all 200".into()
        } else {
            format!("{} not 200: {:?}", odd.len(), &odd[..odd.len().min(5)])
        },
    );
    let last = get(ip(127, 4, 250, 1), to, SIGNIN_QUERY, None).await.status;
    let over = get(ip(127, 4, 250, 2), to, SIGNIN_QUERY, None).await.status;
    l.check(
        "the 10,000th pending sign-in, then the 10,001st",
        "200 then 503",
        format!("{last} then {over}"),
    );

    let bad_code =
        br#"{"grant_type":"authorization_code","code":"made-up","code_verifier":"made-up"}"#;
    let json = [("Content-Type", "application/json")];
    let json_ref = &json[..];
    let got = burst(10, move || async move {
        request_from(
            ip(127, 3, 2, 2),
            to,
            "POST",
            "/api/v1/signin/token",
            json_ref,
            bad_code,
        )
        .await
        .expect("POST /api/v1/signin/token")
    })
    .await;
    l.check(
        "10 refused sign-in codes from one address, then one more",
        "10×400 then 429 retry-after",
        got,
    );
    for (n, want) in [(64, "200"), (65, "400")] {
        let body = serde_json::json!({ "device": "d".repeat(n) }).to_string();
        let r = request_from(
            ip(127, 3, 2, 3),
            to,
            "POST",
            "/api/v1/signin/device",
            &json,
            body.as_bytes(),
        )
        .await
        .expect("POST /api/v1/signin/device");
        l.check(
            &format!("device-code sign-in for a {n}-character device name"),
            want,
            r.status.to_string(),
        );
    }

    // Request bodies: 2 MiB is read (and refused as not JSON), more is 413.
    for (n, want) in [(2 * 1024 * 1024, "400"), (2 * 1024 * 1024 + 1, "413")] {
        let body = vec![b' '; n];
        let r = status_or_closed(
            ip(127, 3, 3, 1),
            to,
            "POST",
            "/api/v1/signin/token",
            &json,
            &body,
        )
        .await;
        l.check(&format!("a sign-in request body of {n} bytes"), want, r);
    }
    // Request heads: hyper's buffer is 64 KiB, which it may overshoot by
    // one read (to about 112 KiB on loopback): a head just under 64 KiB is
    // served, one of three times that is refused however the reads fall.
    for (n, want) in [(64 * 1024 - 100, "200"), (192 * 1024, "431")] {
        let filler = "x".repeat(n);
        let headers = [("X-Filler", filler.as_str())];
        let r =
            status_or_closed(ip(127, 3, 3, 2), to, "GET", "/api/v1/health", &headers, b"").await;
        l.check(&format!("a request head with a {n}-byte header"), want, r);
    }

    // Connections per address (128 by default) that are not WebSockets:
    // 128 wait side by side; the 129th is served and the oldest waiting one
    // makes room.
    let crowd = ip(127, 3, 4, 1);
    let mut held = vec![];
    for i in 0..128 {
        held.push(
            connect_from(crowd, to)
                .await
                .unwrap_or_else(|e| panic!("connection {i}: {e}")),
        );
    }
    let mut closed = 0;
    for s in held.iter_mut().take(3) {
        if closed_within(s, Duration::from_millis(100)).await {
            closed += 1;
        }
    }
    l.check(
        "128 waiting connections from one address",
        "all open",
        if closed == 0 {
            "all open".into()
        } else {
            format!("{closed} closed")
        },
    );
    let r = get(crowd, to, "/api/v1/health", None).await;
    let oldest = closed_within(&mut held[0], Duration::from_secs(2)).await;
    let next = closed_within(&mut held[1], Duration::from_millis(100)).await;
    l.check(
        "a 129th connection from that address",
        "200, the oldest closed, the next open",
        format!(
            "{}, the oldest {}, the next {}",
            r.status,
            if oldest { "closed" } else { "open" },
            if next { "closed" } else { "open" }
        ),
    );
    drop(held);

    // The global cap and the idle timeout, on a coordinator of their own.
    let dir = TestDir::new("authz-cap");
    let small = Coordinator::start_with_args(
        dir.path(),
        "info",
        &["--max-connections", "3", "--idle-timeout", "1"],
        None,
    );
    let token = small.user_with_token("carol");
    let cap_addr = small.addr;
    let health = move || {
        status_or_closed(
            ip(127, 3, 5, 9),
            cap_addr,
            "GET",
            "/api/v1/health",
            &[],
            b"",
        )
    };
    let mut sockets = vec![];
    for i in 0..2 {
        let (ws, got) =
            open_and_register(ip(127, 3, 5, i + 1), small.addr, &token, &one, None).await;
        sockets.push(ws);
        l.check(
            &format!("WebSocket {} of 3 allowed connections", i + 1),
            "welcome",
            got,
        );
    }
    let got = health().await;
    l.check("a request as the 3rd of 3 allowed connections", "200", got);
    let (ws, got) = open_and_register(ip(127, 3, 5, 3), small.addr, &token, &one, None).await;
    sockets.push(ws);
    l.check("WebSocket 3 of 3 allowed connections", "welcome", got);
    let got = health().await;
    l.check(
        "a 4th connection while 3 WebSockets hold the cap",
        "closed unanswered",
        got,
    );
    drop(sockets);
    // A connection that sends nothing is closed after the idle timeout.
    let mut idle = None;
    for _ in 0..50 {
        // The WebSockets just dropped give their slots back in a moment.
        let mut s = connect_from(ip(127, 3, 5, 10), small.addr)
            .await
            .expect("connect");
        if !closed_within(&mut s, Duration::from_millis(300)).await {
            idle = Some(s);
            break;
        }
    }
    let opened = Instant::now();
    let got = match idle {
        None => "never admitted".to_string(),
        Some(mut s) => {
            if closed_within(&mut s, Duration::from_secs(3)).await {
                let after = opened.elapsed() + Duration::from_millis(300);
                if after >= Duration::from_millis(900) {
                    "closed after the idle timeout".into()
                } else {
                    format!("closed early, after {after:?}")
                }
            } else {
                "still open after 3 s".into()
            }
        }
    };
    l.check(
        "an idle connection with --idle-timeout 1",
        "closed after the idle timeout",
        got,
    );
    let got = silent.await.expect("the silent connection's task");
    l.check(
        "a WebSocket that never sends `register`",
        "closed:bad_request after 10 s",
        got,
    );
    eprintln!("limits checked in {:?}", started.elapsed());
    l.assert_all();
}
