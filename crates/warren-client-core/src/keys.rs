//! The per-session WireGuard key pair.
//!
//! A fresh pair is made whenever a session starts, so a key never outlives
//! the session it was registered for. The private half stays in memory. The
//! driver generates it (randomness is IO) and hands it to
//! [`crate::ClientState::handle_start`].

use base64::Engine as _;
use x25519_dalek::{PublicKey, StaticSecret};

pub struct SessionKeys {
    // Held for the data plane, which encrypts with it.
    secret: StaticSecret,
    public: PublicKey,
}

impl SessionKeys {
    pub fn generate() -> Self {
        let secret = StaticSecret::random();
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// A copy of the private key for the tunnel, which encrypts with it.
    pub fn tunnel_secret(&self) -> warren_tunnel::StaticSecret {
        warren_tunnel::StaticSecret::from(self.secret.to_bytes())
    }

    /// The raw public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// A pair from a fixed secret (simulated-time tests).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The public key, base64 as WireGuard tools print it.
    pub fn public_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public.as_bytes())
    }
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("public", &self.public_base64())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_session_gets_a_different_32_byte_key() {
        let a = SessionKeys::generate().public_base64();
        let b = SessionKeys::generate().public_base64();
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), 32);
    }
}
