//! Bearer tokens: creation, parsing and constant-time verification.
//!
//! A token reads `wut_<id>_<secret>` (user) or `wat_<id>_<secret>` (agent).
//! The id is 16 lowercase hex characters: public, the database lookup key.
//! The secret is 32 random bytes in base64url without padding. The database
//! keeps only a random 16-byte salt and SHA-256(salt || secret bytes), so a
//! copy of the database does not let anyone sign in.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warren_proto::control::TokenKind;
use warren_proto::Secret;

const USER_PREFIX: &str = "wut_";
const AGENT_PREFIX: &str = "wat_";
const ID_LEN: usize = 16;
const SECRET_BYTES: usize = 32;
const SALT_BYTES: usize = 16;

/// A freshly created token: the text to show once, and what to store.
pub struct NewToken {
    /// The whole token, shown to the person exactly once.
    pub token: Secret,
    pub id: String,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A token split into its parts, not yet verified.
pub struct ParsedToken {
    pub kind: TokenKind,
    pub id: String,
    secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedToken")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn prefix(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::User => USER_PREFIX,
        TokenKind::Agent => AGENT_PREFIX,
    }
}

/// Creates a new random token of `kind`.
pub fn generate(kind: TokenKind) -> NewToken {
    let mut rng = rand::rngs::OsRng;
    let mut id = [0u8; ID_LEN / 2];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut secret);
    let mut salt = vec![0u8; SALT_BYTES];
    rng.fill_bytes(&mut salt);
    let id = hex::encode(id);
    let hash = hash(&salt, &secret);
    let token = Secret::new(format!(
        "{}{}_{}",
        prefix(kind),
        id,
        URL_SAFE_NO_PAD.encode(secret)
    ));
    NewToken {
        token,
        id,
        salt,
        hash,
    }
}

/// SHA-256(salt || secret).
pub fn hash(salt: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret);
    h.finalize().to_vec()
}

/// Splits a token into kind, id and secret; `None` if it is not shaped like
/// one of ours. Callers answer `None` exactly like a wrong secret.
pub fn parse(token: &str) -> Option<ParsedToken> {
    let (kind, rest) = if let Some(rest) = token.strip_prefix(USER_PREFIX) {
        (TokenKind::User, rest)
    } else if let Some(rest) = token.strip_prefix(AGENT_PREFIX) {
        (TokenKind::Agent, rest)
    } else {
        return None;
    };
    // The secret's alphabet includes `_`, so split by position, not by `_`.
    if rest.len() <= ID_LEN || !rest.is_char_boundary(ID_LEN) {
        return None;
    }
    let (id, rest) = rest.split_at(ID_LEN);
    if !id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let encoded = rest.strip_prefix('_')?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let secret: [u8; SECRET_BYTES] = bytes.try_into().ok()?;
    Some(ParsedToken {
        kind,
        id: id.to_string(),
        secret,
    })
}

impl ParsedToken {
    /// Whether this token's secret matches the stored salt and hash, compared
    /// in constant time.
    pub fn verify(&self, salt: &[u8], stored_hash: &[u8]) -> bool {
        let computed = hash(salt, &self.secret);
        computed.ct_eq(stored_hash).into()
    }

    /// Does the same work as a failed [`verify`](Self::verify), so that an
    /// unknown id takes as long to refuse as a wrong secret.
    pub fn verify_against_nothing(&self) -> bool {
        let salt = [0u8; SALT_BYTES];
        let dummy = [0u8; 32];
        let _ = self.verify(&salt, &dummy);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        let t = generate(TokenKind::User);
        let s = t.token.expose();
        assert!(s.starts_with("wut_"));
        assert_eq!(t.id.len(), 16);
        assert!(t
            .id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(&s[4..20], t.id);
        assert_eq!(&s[20..21], "_");
        assert_eq!(s.len(), 4 + 16 + 1 + 43);
        assert_eq!(t.salt.len(), 16);
        assert_eq!(t.hash.len(), 32);
        assert!(generate(TokenKind::Agent)
            .token
            .expose()
            .starts_with("wat_"));
        assert!(!format!("{t:?}").contains(&s[21..]));
    }

    #[test]
    fn right_secret_verifies() {
        let t = generate(TokenKind::Agent);
        let p = parse(t.token.expose()).unwrap();
        assert_eq!(p.kind, TokenKind::Agent);
        assert_eq!(p.id, t.id);
        assert!(p.verify(&t.salt, &t.hash));
        assert!(!format!("{p:?}").contains(&t.token.expose()[21..]));
    }

    #[test]
    fn wrong_secret_is_refused() {
        let a = generate(TokenKind::User);
        let b = generate(TokenKind::User);
        // Same id, other secret.
        let forged = format!("wut_{}_{}", a.id, &b.token.expose()[21..]);
        let p = parse(&forged).unwrap();
        assert!(!p.verify(&a.salt, &a.hash));
        // Right secret, other salt.
        let p = parse(a.token.expose()).unwrap();
        assert!(!p.verify(&b.salt, &a.hash));
        assert!(!p.verify_against_nothing());
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let t = generate(TokenKind::User);
        let s = t.token.expose();
        let cases = [
            String::new(),
            "wut_".into(),
            "Bearer x".into(),
            s.replacen("wut_", "wxt_", 1),
            s.replacen("wut_", "WUT_", 1),
            s[..s.len() - 1].to_string(),
            format!("{s}A"),
            s.replacen(&t.id, &t.id.to_uppercase(), 1),
            format!("wut_{}x{}", t.id, &s[21..]),
            format!("wut_{}_{}", &t.id[..15], &s[21..]),
            format!("wut_{}é_{}", &t.id[..14], &s[21..]),
            format!("wut_{}_{}=", t.id, &s[21..]),
        ];
        for c in &cases {
            assert!(parse(c).is_none(), "{c:?} parsed");
        }
    }
}
