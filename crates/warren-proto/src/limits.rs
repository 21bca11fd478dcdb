//! Limits and address rules both ends of the control protocol enforce: the
//! coordinator refuses what breaks them, the helper ignores it. One place, so
//! the two can never disagree about what a valid endpoint or a too-long list
//! is.

use std::net::{IpAddr, SocketAddr};

/// Most UDP endpoints one agent or device may announce.
pub const MAX_ENDPOINTS: usize = 16;
/// Largest WebSocket message a coordinator accepts from an agent or device.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 1024 * 1024;
/// Largest control message a client accepts from a coordinator. Snapshots
/// come in parts of a few thousand agents, a few MiB each.
pub const MAX_SERVER_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Most tunnel addresses one agent or device may have (one per family,
/// with room for a renumbering).
pub const MAX_ADDRESSES: usize = 4;
/// Most DNS names one agent may have.
pub const MAX_DNS_NAMES: usize = 8;
/// Longest DNS name (RFC 1035, without the trailing dot).
pub const MAX_DNS_NAME_BYTES: usize = 253;
/// Longest id (workspace, agent, device) or display name.
pub const MAX_ID_BYTES: usize = 128;
/// Longest free-text field (host name, app version).
pub const MAX_TEXT_BYTES: usize = 256;
/// Most TURN relays a coordinator hands out in one `Welcome` or `relays`
/// message (a client keeps allocations on two; the rest are spares).
pub const MAX_RELAYS: usize = 8;
/// A WireGuard public key in base64: 32 bytes → 44 characters.
pub const PUBLIC_KEY_BASE64_LEN: usize = 44;

/// Why an endpoint can't be used by peers elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EndpointProblem {
    #[error("is unspecified (0.0.0.0 or ::), which names no host")]
    Unspecified,
    #[error("has port 0, which no socket listens on")]
    PortZero,
    #[error("is a multicast address")]
    Multicast,
    #[error("is the broadcast address")]
    Broadcast,
    #[error("is a loopback address, which only reaches the machine that sends to it")]
    Loopback,
    #[error("is a link-local address, which only reaches the sender's own network segment")]
    LinkLocal,
}

/// Whether `endpoint` may be announced and used. `allow_local` allows
/// loopback and link-local endpoints: right only when the coordinator itself
/// is on loopback (a demo or a test on one machine), where every peer is.
pub fn check_endpoint(endpoint: SocketAddr, allow_local: bool) -> Result<(), EndpointProblem> {
    if endpoint.port() == 0 {
        return Err(EndpointProblem::PortZero);
    }
    let ip = canonical(endpoint.ip());
    if ip.is_unspecified() {
        return Err(EndpointProblem::Unspecified);
    }
    if ip.is_multicast() {
        return Err(EndpointProblem::Multicast);
    }
    let (loopback, link_local) = match ip {
        IpAddr::V4(v4) => {
            if v4.is_broadcast() {
                return Err(EndpointProblem::Broadcast);
            }
            (v4.is_loopback(), v4.is_link_local())
        }
        IpAddr::V6(v6) => (v6.is_loopback(), (v6.segments()[0] & 0xffc0) == 0xfe80),
    };
    if !allow_local {
        if loopback {
            return Err(EndpointProblem::Loopback);
        }
        if link_local {
            return Err(EndpointProblem::LinkLocal);
        }
    }
    Ok(())
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is judged as the IPv4
/// address it is, so the mapping can't smuggle a loopback endpoint past.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether a URL's host is a loopback address or `localhost`: a coordinator
/// there shares its machine with every peer, so local endpoints are fine.
pub fn url_host_is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(stripped) = host_port.strip_prefix('[') {
        stripped.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| canonical(ip).is_loopback())
}

/// Why a coordinator URL's scheme can't be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SchemeProblem {
    #[error("plain http:// would send the token unencrypted; use https:// (http:// is allowed only for a coordinator on this machine: localhost, 127.0.0.1 or ::1)")]
    PlainHttpOffLoopback,
    #[error("a coordinator URL must start with https://")]
    NotHttp,
}

/// The one rule for a coordinator URL's scheme, kept by the CLI, the app
/// and the helper alike: `https://`, or plain `http://` only to a
/// coordinator on loopback (a demo or a test on one machine), where the
/// token never crosses a network.
pub fn check_coordinator_scheme(url: &str) -> Result<(), SchemeProblem> {
    if url.starts_with("https://") {
        Ok(())
    } else if url.starts_with("http://") {
        if url_host_is_loopback(url) {
            Ok(())
        } else {
            Err(SchemeProblem::PlainHttpOffLoopback)
        }
    } else {
        Err(SchemeProblem::NotHttp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://warren.example.com",
            "https://10.0.0.1:8443",
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://localhost:3000",
            "http://[::1]:9000",
            "http://[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(check_coordinator_scheme(ok), Ok(()), "{ok}");
        }
        for plain in [
            "http://warren.example.com",
            "http://10.9.0.1:8080",
            "http://203.0.113.12",
            "http://[fd00::1]:80",
            "http://127.0.0.1.example.com",
            "http://localhost.example.com:80",
            "http://127.0.0.1@evil.example",
        ] {
            assert_eq!(
                check_coordinator_scheme(plain),
                Err(SchemeProblem::PlainHttpOffLoopback),
                "{plain}"
            );
        }
        for other in ["ftp://127.0.0.1", "ws://127.0.0.1", "127.0.0.1:80", ""] {
            assert_eq!(
                check_coordinator_scheme(other),
                Err(SchemeProblem::NotHttp),
                "{other}"
            );
        }
        assert!(SchemeProblem::PlainHttpOffLoopback
            .to_string()
            .contains("use https://"));
    }

    fn check(s: &str, allow_local: bool) -> Result<(), EndpointProblem> {
        check_endpoint(s.parse().unwrap(), allow_local)
    }

    #[test]
    fn public_and_private_endpoints_pass() {
        for ok in ["203.0.113.7:51820", "10.0.0.2:1", "[2001:db8::1]:51820"] {
            assert_eq!(check(ok, false), Ok(()), "{ok}");
        }
    }

    #[test]
    fn unusable_endpoints_are_refused_with_their_reason() {
        assert_eq!(check("0.0.0.0:0", true), Err(EndpointProblem::PortZero));
        assert_eq!(check("0.0.0.0:1", true), Err(EndpointProblem::Unspecified));
        assert_eq!(check("[::]:1", true), Err(EndpointProblem::Unspecified));
        assert_eq!(check("224.0.0.1:1", true), Err(EndpointProblem::Multicast));
        assert_eq!(check("[ff02::1]:1", true), Err(EndpointProblem::Multicast));
        assert_eq!(
            check("255.255.255.255:1", true),
            Err(EndpointProblem::Broadcast)
        );
        assert_eq!(check("127.0.0.1:22", false), Err(EndpointProblem::Loopback));
        assert_eq!(check("[::1]:22", false), Err(EndpointProblem::Loopback));
        assert_eq!(
            check("[::ffff:127.0.0.1]:22", false),
            Err(EndpointProblem::Loopback)
        );
        assert_eq!(
            check("169.254.1.1:22", false),
            Err(EndpointProblem::LinkLocal)
        );
        assert_eq!(
            check("[fe80::1]:22", false),
            Err(EndpointProblem::LinkLocal)
        );
    }

    #[test]
    fn local_endpoints_pass_only_when_allowed() {
        assert_eq!(check("127.0.0.1:22", true), Ok(()));
        assert_eq!(check("[fe80::1]:22", true), Ok(()));
    }

    #[test]
    fn loopback_urls_are_recognised() {
        for yes in [
            "http://127.0.0.1:8080",
            "https://localhost/",
            "http://[::1]:80/x",
            "https://LOCALHOST",
            "http://127.0.0.2",
        ] {
            assert!(url_host_is_loopback(yes), "{yes}");
        }
        for no in [
            "https://warren.example.com",
            "https://10.0.0.1:443",
            "https://127.0.0.1.example.com",
            "https://localhost.example.com",
        ] {
            assert!(!url_host_is_loopback(no), "{no}");
        }
    }
}
