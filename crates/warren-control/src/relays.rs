//! The coordinator's TURN relays as the path layer takes them: `HOST:PORT`
//! resolved to one address each, capped, with the credentials checked.
//!
//! Relays reach a client only over its own control link, so they are
//! always the signed-in deployment's; but a hostile coordinator could name
//! any address, and the client (root, for the helper) would send TURN
//! requests there. So a relay follows the rule the directory's endpoints
//! follow: at most [`MAX_RELAYS`], names that resolve, addresses a datagram
//! can be sent to (not unspecified, multicast, broadcast or port 0), and
//! loopback or link-local only when the coordinator's own URL is on
//! loopback (a demo or a test on one machine), so a coordinator elsewhere
//! can't aim the client at this machine's local UDP ports. Usernames must
//! be ones STUN can carry. Each refusal is logged with the relay's name and
//! address (never its password).

use std::net::SocketAddr;

use warren_path::turn::Credentials;
use warren_path::RelayServer;
use warren_proto::control::Relay;
use warren_proto::limits::{check_endpoint, url_host_is_loopback, EndpointProblem, MAX_RELAYS};

/// How long one relay's name may take to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a relay the coordinator named is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayRefused {
    #[error("the TURN relay {relay} resolves to no address")]
    NoAddress { relay: String },
    #[error("the TURN relay {relay} is not used: its address {addr} {problem}; {}", what_to_do(.problem))]
    Address {
        relay: String,
        addr: SocketAddr,
        problem: EndpointProblem,
    },
}

/// What the coordinator's operator can do about a relay address.
fn what_to_do(problem: &EndpointProblem) -> &'static str {
    match problem {
        EndpointProblem::Loopback | EndpointProblem::LinkLocal => {
            "a relay may be on loopback or link-local only for a coordinator on loopback, so the coordinator's operator must give the relay's public address"
        }
        _ => "the coordinator's operator must give the relay's public address",
    }
}

/// Resolves and checks `relays`, named by the coordinator at
/// `coordinator_url`; what can't be used is left out (logged).
pub async fn resolve_relays(relays: &[Relay], coordinator_url: &str) -> Vec<RelayServer> {
    let allow_local = url_host_is_loopback(coordinator_url);
    let mut out = Vec::new();
    for relay in relays.iter().take(MAX_RELAYS) {
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host(relay.addr.as_str()),
        )
        .await
        {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                tracing::warn!(relay = %relay.addr, error = %e, "a TURN relay's address doesn't resolve; it is not used");
                continue;
            }
            Err(_) => {
                tracing::warn!(relay = %relay.addr, "resolving a TURN relay's address timed out; it is not used");
                continue;
            }
        };
        let server = match pick_address(&relay.addr, &addrs, allow_local) {
            Ok(server) => server,
            Err(refused) => {
                tracing::warn!(relay = %relay.addr, "{refused}");
                continue;
            }
        };
        match Credentials::new(relay.username.clone(), relay.password.expose().to_string()) {
            Ok(credentials) => out.push(RelayServer {
                name: relay.addr.clone(),
                server,
                credentials,
            }),
            Err(e) => {
                tracing::warn!(relay = %relay.addr, error = %e, "a TURN relay's credentials are unusable; it is not used")
            }
        }
    }
    out
}

/// The first of a relay's resolved addresses a datagram may go to, by the
/// endpoint rule (`allow_local`: the coordinator is on loopback); else why
/// none may, naming the relay and its first address.
fn pick_address(
    relay: &str,
    addrs: &[SocketAddr],
    allow_local: bool,
) -> Result<SocketAddr, RelayRefused> {
    let mut first_problem = None;
    for addr in addrs {
        match check_endpoint(*addr, allow_local) {
            Ok(()) => return Ok(*addr),
            Err(problem) => {
                first_problem.get_or_insert((*addr, problem));
            }
        }
    }
    match first_problem {
        None => Err(RelayRefused::NoAddress {
            relay: relay.to_string(),
        }),
        Some((addr, problem)) => Err(RelayRefused::Address {
            relay: relay.to_string(),
            addr,
            problem,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::Secret;

    fn relay(addr: &str) -> Relay {
        Relay {
            addr: addr.into(),
            username: "1700003600:dev1".into(),
            password: Secret::new("pw"),
            expires_at: 1_700_003_600,
        }
    }

    #[tokio::test]
    async fn unusable_relays_are_left_out_and_the_list_is_capped() {
        let mut list = vec![
            relay("203.0.113.10:3478"),
            relay("0.0.0.0:3478"),
            relay("224.0.0.1:3478"),
            relay("203.0.113.11:0"),
            relay("not an address"),
        ];
        for i in 0..20 {
            list.push(relay(&format!("203.0.113.{}:3478", 20 + i)));
        }
        let out = resolve_relays(&list, "https://coord.example.com").await;
        assert_eq!(out[0].server, "203.0.113.10:3478".parse().unwrap());
        assert!(out.iter().all(|r| check_endpoint(r.server, false).is_ok()));
        assert!(out.len() <= MAX_RELAYS);
        assert_eq!(
            out.len(),
            MAX_RELAYS - 5 + 1,
            "five of the first eight were bad"
        );
    }

    const LOCAL: [&str; 6] = [
        "127.0.0.1:3478",
        "127.9.9.9:53",
        "[::1]:3478",
        "169.254.10.1:3478",
        "[fe80::1]:3478",
        "[::ffff:127.0.0.1]:3478",
    ];

    #[tokio::test]
    async fn local_relays_are_refused_unless_the_coordinator_is_on_loopback() {
        let mut list: Vec<Relay> = LOCAL.iter().map(|a| relay(a)).collect();
        list.push(relay("203.0.113.10:3478"));
        for url in [
            "https://coord.example.com",
            "https://10.9.0.1:8443",
            "https://[2001:db8::1]",
            "https://127.0.0.1.example.com",
        ] {
            let out = resolve_relays(&list, url).await;
            let kept: Vec<String> = out.iter().map(|r| r.name.clone()).collect();
            assert_eq!(kept, ["203.0.113.10:3478"], "{url}");
        }
        for url in [
            "http://127.0.0.1:8080",
            "https://localhost",
            "http://[::1]:80",
        ] {
            let out = resolve_relays(&list, url).await;
            assert_eq!(out.len(), LOCAL.len() + 1, "{url}");
        }
    }

    #[test]
    fn a_refused_relay_is_named_with_its_address_and_what_to_do() {
        let addr: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let refused = pick_address("relay.example.com:3478", &[addr], false).unwrap_err();
        assert_eq!(
            refused,
            RelayRefused::Address {
                relay: "relay.example.com:3478".into(),
                addr,
                problem: EndpointProblem::Loopback,
            }
        );
        let text = refused.to_string();
        assert!(
            text.contains("relay.example.com:3478")
                && text.contains("127.0.0.1:3478")
                && text.contains("loopback")
                && text.contains("public address"),
            "{text}"
        );
        // A name with a usable address among local ones uses that one.
        let public: SocketAddr = "203.0.113.7:3478".parse().unwrap();
        assert_eq!(pick_address("r", &[addr, public], false), Ok(public));
        assert_eq!(pick_address("r", &[addr, public], true), Ok(addr));
        assert!(matches!(
            pick_address("r", &[], true),
            Err(RelayRefused::NoAddress { .. })
        ));
    }
}
