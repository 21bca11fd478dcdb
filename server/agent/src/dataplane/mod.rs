//! The agent's data plane: WireGuard (boringtun, through `warren-tunnel`) plus
//! a userspace TCP/IP stack (smoltcp 0.12) that answers ping on the agent's
//! tunnel addresses and forwards TCP connections on allowed ports to
//! `127.0.0.1:<same port>` inside the workspace. No root, no TUN.
//!
//! * [`WorkspaceStack`] is the sans-IO core: datagrams and timers in,
//!   datagrams and accepted connections out.
//! * [`Dataplane`] is the thin tokio driver: one UDP socket, one task per
//!   forwarded connection, bounded buffers both ways.
//!
//! The binary wires it up as:
//!
//! ```text
//! let dp = Dataplane::bind(args.listen_port).await?;      // before Register
//! let port = dp.local_addr()?.port();                      // announce as endpoint
//! // ... Register, then on Welcome:
//! let (peers_tx, peers_rx) = tokio::sync::watch::channel(Vec::new());
//! tokio::spawn(dp.run(StackConfig { private_key, addresses: welcome.addresses,
//!                                   allow_ports }, peers_rx));
//! // after every PeerUpdate applied to the PeerTable:
//! peers_tx.send_replace(table.peers().cloned().collect());
//! ```

mod device;
mod driver;
mod stack;

pub use device::{QueueDevice, TUNNEL_MTU};
pub use driver::{Dataplane, PathWiring};
pub use stack::{ConnectionId, StackConfig, StackEvent, WorkspaceStack, TCP_BUFFER};

use warren_proto::control::ClientPeer;
use warren_tunnel::PeerConfig;

/// Why the data plane could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The coordinator's `Welcome` carried no tunnel address.
    #[error("the coordinator gave this agent no tunnel address; check the coordinator's address pools, then restart the agent")]
    NoAddresses,
    /// Port 0 in the allow list.
    #[error("port 0 can't be forwarded; list real TCP ports in --allow-ports")]
    BadPort,
    /// The UDP port could not be opened.
    #[error("can't open WireGuard UDP port {port} ({source}); free it or choose another with --listen-port")]
    Bind {
        /// The requested port.
        port: u16,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The UDP socket failed while running.
    #[error("the WireGuard UDP socket failed ({0}); restart the agent")]
    Io(#[source] std::io::Error),
}

/// Why a client peer from the coordinator was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The public key is not 32 bytes of base64.
    #[error("device {id} has a malformed WireGuard public key; the coordinator sent a bad peer — report it")]
    BadKey {
        /// The device id.
        id: String,
    },
}

/// The tunnel configuration for one client device the coordinator
/// authorized: its key, tunnel addresses and first announced endpoint (the
/// device's handshake moves it anyway).
pub fn peer_config(peer: &ClientPeer) -> Result<PeerConfig, PeerError> {
    let bad = || PeerError::BadKey {
        id: peer.id.clone(),
    };
    let public_key = warren_tunnel::parse_key(&peer.public_key).ok_or_else(bad)?;
    Ok(PeerConfig {
        public_key,
        addresses: peer.addresses.clone(),
        endpoint: peer.endpoints.first().copied(),
        persistent_keepalive: None,
        candidates: peer.endpoints.clone(),
    })
}

/// Parses `--allow-ports`: a comma-separated list of ports and ranges
/// (`22,8080,3000-3010`).
pub fn parse_allow_ports(spec: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parse = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!(
                    "`{s}` is not a TCP port; --allow-ports takes ports 1-65535 and ranges like 3000-3010"
                )),
                Ok(p) => Ok(p),
            }
        };
        match item.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi {
                    return Err(format!(
                        "the range `{item}` is backwards; write the lower port first"
                    ));
                }
                ports.extend(lo..=hi);
            }
            None => ports.push(parse(item)?),
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_ports_take_lists_and_ranges() {
        assert_eq!(
            parse_allow_ports("8080, 22,3000-3002,22").unwrap(),
            vec![22, 3000, 3001, 3002, 8080]
        );
        assert!(parse_allow_ports("0").is_err());
        assert!(parse_allow_ports("ssh").is_err());
        assert!(parse_allow_ports("10-5").is_err());
        assert!(parse_allow_ports("").unwrap().is_empty());
    }

    #[test]
    fn client_peer_becomes_a_tunnel_peer() {
        use base64::Engine as _;
        let key = [7u8; 32];
        let peer = ClientPeer {
            id: "dev1".into(),
            user: "alice".into(),
            public_key: base64::engine::general_purpose::STANDARD.encode(key),
            addresses: vec!["100.64.0.9".parse().unwrap()],
            endpoints: vec!["127.0.0.1:5000".parse().unwrap()],
        };
        let cfg = peer_config(&peer).unwrap();
        assert_eq!(cfg.public_key, key);
        assert_eq!(cfg.endpoint, Some("127.0.0.1:5000".parse().unwrap()));
        let bad = ClientPeer {
            public_key: "not a key".into(),
            ..peer
        };
        assert_eq!(
            peer_config(&bad),
            Err(PeerError::BadKey { id: "dev1".into() })
        );
    }
}
