//! The coordinator's TURN relays as the path layer takes them: `HOST:PORT`
//! resolved to one address each, capped, with the credentials checked.
//!
//! Relays reach a client only over its own control link, so they are
//! always the signed-in deployment's; what is checked here is their shape:
//! at most [`MAX_RELAYS`], names that resolve, addresses a datagram can be
//! sent to (not unspecified, multicast or broadcast) and usernames STUN can
//! carry. Each refusal is logged with the relay's address (never its
//! password).

use std::net::SocketAddr;

use warren_path::turn::Credentials;
use warren_path::RelayServer;
use warren_proto::control::Relay;
use warren_proto::limits::MAX_RELAYS;

/// How long one relay's name may take to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves and checks `relays`; what can't be used is left out (logged).
pub async fn resolve_relays(relays: &[Relay]) -> Vec<RelayServer> {
    let mut out = Vec::new();
    for relay in relays.iter().take(MAX_RELAYS) {
        let addr = match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host(relay.addr.as_str()),
        )
        .await
        {
            Ok(Ok(mut addrs)) => addrs.find(|a| usable(*a)),
            Ok(Err(e)) => {
                tracing::warn!(relay = %relay.addr, error = %e, "a TURN relay's address doesn't resolve; it is not used");
                continue;
            }
            Err(_) => {
                tracing::warn!(relay = %relay.addr, "resolving a TURN relay's address timed out; it is not used");
                continue;
            }
        };
        let Some(server) = addr else {
            tracing::warn!(relay = %relay.addr, "a TURN relay has no usable address; it is not used");
            continue;
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

/// A relay address a datagram can be sent to: the endpoint rule the
/// directory's endpoints follow (not unspecified, multicast, broadcast or
/// port 0); loopback and link-local are fine for a relay.
fn usable(addr: SocketAddr) -> bool {
    warren_proto::limits::check_endpoint(addr, true).is_ok()
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
        let out = resolve_relays(&list).await;
        assert_eq!(out[0].server, "203.0.113.10:3478".parse().unwrap());
        assert!(out.iter().all(|r| usable(r.server)));
        assert!(out.len() <= MAX_RELAYS);
        assert_eq!(
            out.len(),
            MAX_RELAYS - 5 + 1,
            "five of the first eight were bad"
        );
    }
}
