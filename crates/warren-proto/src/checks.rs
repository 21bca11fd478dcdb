//! What the coordinator accepts from agents and devices on the control
//! WebSocket: key shape, field lengths, and at most
//! [`MAX_ENDPOINTS`](crate::limits::MAX_ENDPOINTS) usable endpoints.
//! Everything the coordinator stores is pushed to other peers, so a bad
//! value is refused with a reason instead of being passed on. These are
//! pure functions of the message, kept beside the wire types so the
//! `control_server` fuzz target checks them without a coordinator.

use crate::control::{ApiError, Register};
use crate::limits::{check_endpoint, MAX_ENDPOINTS, MAX_TEXT_BYTES, PUBLIC_KEY_BASE64_LEN};
use std::net::SocketAddr;

/// Who sent the message, for advice that fits: an agent's endpoints come
/// from its `--endpoint` flags, a device's from the Warren client itself,
/// a static peer's from `warren-coord agent add --endpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Agent,
    Device,
    Admin,
}

impl Sender {
    fn fix(self) -> &'static str {
        match self {
            Sender::Agent => {
                "give the agent an address peers can reach with `warren-agent --endpoint IP:PORT`"
            }
            Sender::Device => {
                "this Warren client announced an address peers can't use; update Warren, and report it if it persists"
            }
            Sender::Admin => "give the peer's address as clients can reach it",
        }
    }
}

fn invalid(error: &str, message: String) -> ApiError {
    ApiError {
        error: error.into(),
        message,
    }
}

/// Checks an endpoint list. `allow_local` (loopback and link-local
/// endpoints) is right only when the coordinator itself listens on loopback,
/// where every peer shares the machine.
pub fn check_endpoints(
    endpoints: &[SocketAddr],
    sender: Sender,
    allow_local: bool,
) -> Result<(), ApiError> {
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(invalid(
            "too_many_endpoints",
            format!(
                "{} endpoints were announced but at most {MAX_ENDPOINTS} are accepted; {}",
                endpoints.len(),
                match sender {
                    Sender::Agent => "pass fewer `--endpoint` flags to the agent",
                    Sender::Device => "update Warren, and report it if it persists",
                    Sender::Admin => "give at most that many `--endpoint` flags",
                }
            ),
        ));
    }
    for ep in endpoints {
        if let Err(problem) = check_endpoint(*ep, allow_local) {
            return Err(invalid(
                "invalid_endpoint",
                format!("endpoint {ep} {problem}; {}", sender.fix()),
            ));
        }
    }
    Ok(())
}

/// Checks a `Register` message's fields (the key's uniqueness is the
/// database's to check).
pub fn check_register(reg: &Register, sender: Sender, allow_local: bool) -> Result<(), ApiError> {
    if reg.public_key.len() != PUBLIC_KEY_BASE64_LEN || !is_wireguard_key(&reg.public_key) {
        return Err(invalid(
            "bad_request",
            "The public key is not a WireGuard key (32 bytes in base64, 44 characters).".into(),
        ));
    }
    for (field, value) in [
        ("hostname", reg.hostname.as_deref().unwrap_or("")),
        ("app_version", reg.app_version.as_str()),
    ] {
        if value.len() > MAX_TEXT_BYTES {
            return Err(invalid(
                "bad_request",
                format!(
                    "The `{field}` is {} bytes long; at most {MAX_TEXT_BYTES} are accepted.",
                    value.len()
                ),
            ));
        }
    }
    check_endpoints(&reg.endpoints, sender, allow_local)
}

fn is_wireguard_key(key: &str) -> bool {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    STANDARD.decode(key).is_ok_and(|b| b.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::CONTROL_VERSION;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn reg(endpoints: &[&str]) -> Register {
        Register {
            protocol_version: CONTROL_VERSION,
            public_key: KEY.into(),
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            hostname: Some("laptop".into()),
            app_version: "1.0".into(),
        }
    }

    #[test]
    fn loopback_endpoints_pass_only_beside_a_loopback_coordinator() {
        let r = reg(&["127.0.0.1:22"]);
        assert_eq!(check_register(&r, Sender::Agent, true), Ok(()));
        let e = check_register(&r, Sender::Agent, false).unwrap_err();
        assert_eq!(e.error, "invalid_endpoint");
        assert!(
            e.message
                .starts_with("endpoint 127.0.0.1:22 is a loopback address"),
            "{}",
            e.message
        );
        assert!(e.message.contains("--endpoint"), "{}", e.message);
    }

    #[test]
    fn unusable_endpoints_are_refused_even_on_loopback() {
        for bad in [
            "0.0.0.0:51820",
            "224.0.0.1:51820",
            "255.255.255.255:1",
            "10.0.0.1:0",
        ] {
            let e = check_endpoints(&[bad.parse().unwrap()], Sender::Device, true).unwrap_err();
            assert_eq!(e.error, "invalid_endpoint", "{bad}");
            assert!(e.message.contains(bad), "{}", e.message);
        }
        assert_eq!(
            check_endpoints(
                &["203.0.113.9:51820".parse().unwrap()],
                Sender::Device,
                false
            ),
            Ok(())
        );
    }

    #[test]
    fn at_most_sixteen_endpoints() {
        let many: Vec<SocketAddr> = (1..=17)
            .map(|p| SocketAddr::from(([203, 0, 113, 9], p)))
            .collect();
        assert_eq!(check_endpoints(&many[..16], Sender::Agent, false), Ok(()));
        let e = check_endpoints(&many, Sender::Agent, false).unwrap_err();
        assert_eq!(e.error, "too_many_endpoints");
        assert!(e.message.contains("at most 16"), "{}", e.message);
    }

    #[test]
    fn keys_and_text_fields_are_checked() {
        let mut r = reg(&[]);
        r.public_key = "bm90IGEga2V5".into();
        assert!(check_register(&r, Sender::Device, true)
            .unwrap_err()
            .message
            .contains("WireGuard key"));
        r.public_key = format!("{KEY}{KEY}");
        assert!(check_register(&r, Sender::Device, true).is_err());
        let mut r = reg(&[]);
        r.hostname = Some("h".repeat(MAX_TEXT_BYTES + 1));
        let e = check_register(&r, Sender::Device, true).unwrap_err();
        assert!(e.message.contains("`hostname`"), "{}", e.message);
        let mut r = reg(&[]);
        r.app_version = "v".repeat(MAX_TEXT_BYTES);
        assert_eq!(check_register(&r, Sender::Device, true), Ok(()));
    }
}
