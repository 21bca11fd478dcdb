//! TURN relays handed to clients: which servers, and short-lived credentials
//! for each connection in coturn's `use-auth-secret` scheme (the REST API
//! credentials of draft-uberti-behave-turn-rest): username `EXPIRY:ID`,
//! password `base64(HMAC-SHA1(secret, username))`. The coordinator and coturn
//! share only the secret; coturn checks each username's expiry and MAC
//! without asking anyone, so credentials need no storage and cannot outlive
//! their expiry even if a client keeps them.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::path::Path;
use std::time::Duration;
use warren_proto::control::Relay;
use warren_proto::limits::MAX_RELAYS;
use warren_proto::Secret;

/// Credential lifetime when `--turn-credential-ttl` is not given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Shortest lifetime an operator may configure: below this a slow client
/// may not finish its allocations before the credentials expire.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime: a leaked credential stays usable at most this long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Shortest lifetime tests may force through `WARREN_COORD_TURN_TTL_SECS`
/// (the expiry is in whole seconds, so less would refresh on every tick).
pub const MIN_TEST_TTL: Duration = Duration::from_secs(2);

/// Why a TURN setting cannot be used. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("--turn {0:?} is not HOST:PORT (a host name or IP address and a port 1-65535, for example turn1.example.com:3478 or [2001:db8::1]:3478)")]
    BadAddress(String),
    #[error("--turn {0:?} is {1}; give an address clients can reach")]
    UnusableAddress(String, &'static str),
    #[error("--turn {0:?} is given twice; give each TURN server once")]
    Duplicate(String),
    #[error("{0} TURN servers are given but at most {MAX_RELAYS} are handed out; drop some --turn flags")]
    TooMany(usize),
    #[error("cannot read the TURN secret file {path}: {source}; create it with the same value as coturn's static-auth-secret")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the TURN secret file {0} is not a regular file; point --turn-secret-file at a file holding coturn's static-auth-secret")]
    NotAFile(String),
    #[error(transparent)]
    TooOpen(warren_proto::secret::SecretFileTooOpen),
    #[error("the TURN secret file {0} is empty; write coturn's static-auth-secret into it")]
    Empty(String),
    #[error("the TURN secret in {0} is not UTF-8 text; use the same text as coturn's static-auth-secret")]
    NotText(String),
    #[error("--turn-realm {0:?} is not usable; use a short name without spaces, such as the deployment's DNS suffix")]
    BadRealm(String),
    #[error("--turn-credential-ttl {0} s is out of range; use {min}-{max} seconds", min = MIN_TTL.as_secs(), max = MAX_TTL.as_secs())]
    BadTtl(u64),
}

/// The TURN servers and the secret they share with this coordinator.
/// `Debug` shows everything but the secret.
pub struct TurnConfig {
    /// `HOST:PORT` of each server, as validated by [`parse_server`].
    servers: Vec<String>,
    secret: Secret,
    realm: String,
    ttl: Duration,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("servers", &self.servers)
            .field("secret", &"[redacted]")
            .field("realm", &self.realm)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TurnConfig {
    /// Checks every part; `servers` as given on the command line.
    pub fn new(
        servers: &[String],
        secret: Secret,
        realm: String,
        ttl: Duration,
    ) -> Result<Self, TurnError> {
        if servers.len() > MAX_RELAYS {
            return Err(TurnError::TooMany(servers.len()));
        }
        let mut parsed: Vec<String> = Vec::with_capacity(servers.len());
        for s in servers {
            let p = parse_server(s)?;
            if parsed.iter().any(|q| q.eq_ignore_ascii_case(&p)) {
                return Err(TurnError::Duplicate(s.clone()));
            }
            parsed.push(p);
        }
        validate_realm(&realm)?;
        if secret.is_empty() {
            return Err(TurnError::Empty("(given)".into()));
        }
        Ok(Self {
            servers: parsed,
            secret,
            realm,
            ttl,
        })
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Every server with fresh credentials for `id` (a device or agent id),
    /// valid for the TTL from `now_unix`.
    pub fn relays_for(&self, id: &str, now_unix: u64) -> Vec<Relay> {
        let expires_at = now_unix.saturating_add(self.ttl.as_secs());
        let (username, password) = credentials(self.secret.expose().as_bytes(), id, expires_at);
        self.servers
            .iter()
            .map(|addr| Relay {
                addr: addr.clone(),
                username: username.clone(),
                password: password.clone(),
                expires_at,
            })
            .collect()
    }

    /// How often a live connection gets new credentials: after two thirds
    /// of the lifetime, so the client holds valid ones with a third of the
    /// lifetime to spare for a slow link or a refresh in flight.
    pub fn refresh_interval(&self) -> Duration {
        refresh_interval(self.ttl)
    }
}

/// Two thirds of `ttl` (see [`TurnConfig::refresh_interval`]), at least 1 s.
pub fn refresh_interval(ttl: Duration) -> Duration {
    (ttl * 2 / 3).max(Duration::from_secs(1))
}

/// The `use-auth-secret` username and password for `id`, valid until
/// `expires_at` (unix seconds).
pub fn credentials(secret: &[u8], id: &str, expires_at: u64) -> (String, Secret) {
    let username = format!("{expires_at}:{id}");
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, Secret::new(password))
}

/// Checks `HOST:PORT`: an IP address (IPv6 in brackets) or a DNS host name,
/// and a port 1–65535. Returns it as given (IP literals normalized).
pub fn parse_server(s: &str) -> Result<String, TurnError> {
    let bad = || TurnError::BadAddress(s.to_string());
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        if sa.port() == 0 {
            return Err(bad());
        }
        let ip = sa.ip();
        let why = if ip.is_unspecified() {
            Some("an unspecified address (0.0.0.0 or ::)")
        } else if ip.is_multicast() {
            Some("a multicast address")
        } else if ip == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
            Some("the broadcast address")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(TurnError::UnusableAddress(s.to_string(), why));
        }
        return Ok(sa.to_string());
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || !is_host_name(host) {
        return Err(bad());
    }
    Ok(format!("{host}:{port}"))
}

/// A DNS host name: dot-separated labels of letters, digits and hyphens,
/// each 1–63 long and not starting or ending with a hyphen; not all digits
/// and dots (that would be a malformed IPv4 address).
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn validate_realm(realm: &str) -> Result<(), TurnError> {
    let ok = !realm.is_empty()
        && realm.len() <= 127
        && realm.chars().all(|c| c.is_ascii_graphic() && c != '"');
    if ok {
        Ok(())
    } else {
        Err(TurnError::BadRealm(realm.to_string()))
    }
}

/// Checks a configured lifetime against [`MIN_TTL`]..=[`MAX_TTL`].
pub fn check_ttl(secs: u64) -> Result<Duration, TurnError> {
    let ttl = Duration::from_secs(secs);
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(TurnError::BadTtl(secs))
    }
}

/// Reads the shared secret: the file's text without surrounding
/// whitespace (a trailing newline is not part of coturn's
/// `static-auth-secret`). On Unix the file must not be readable by group or
/// others.
pub fn read_secret_file(path: &Path) -> Result<Secret, TurnError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| TurnError::Read {
        path: shown.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(TurnError::NotAFile(shown));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        warren_proto::secret::check_secret_file_mode(
            "TURN secret file",
            path,
            meta.permissions().mode(),
        )
        .map_err(TurnError::TooOpen)?;
    }
    let bytes = std::fs::read(path).map_err(|source| TurnError::Read {
        path: shown.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| TurnError::NotText(shown.clone()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(TurnError::Empty(shown));
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector, computed independently with OpenSSL:
    //   printf '%s' '1700003600:dev1' \
    //     | openssl dgst -sha1 -hmac 'north-wind' -binary | base64
    //   EIRNJ9K7DtwgcssOjqITqE/29CQ=
    const KNOWN_SECRET: &str = "north-wind";
    const KNOWN_USERNAME: &str = "1700003600:dev1";
    const KNOWN_PASSWORD: &str = "EIRNJ9K7DtwgcssOjqITqE/29CQ=";

    fn config(servers: &[&str], ttl: Duration) -> TurnConfig {
        TurnConfig::new(
            &servers.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            Secret::new(KNOWN_SECRET),
            "warren".into(),
            ttl,
        )
        .unwrap()
    }

    #[test]
    fn credentials_match_openssl() {
        let (user, pass) = credentials(KNOWN_SECRET.as_bytes(), "dev1", 1_700_003_600);
        assert_eq!(user, KNOWN_USERNAME);
        assert_eq!(pass.expose(), KNOWN_PASSWORD);
    }

    #[test]
    fn relays_expire_one_ttl_from_now_and_share_the_credentials() {
        let c = config(&["turn1.example.com:3478", "192.0.2.9:3478"], DEFAULT_TTL);
        let relays = c.relays_for("dev1", 1_700_000_000);
        assert_eq!(relays.len(), 2);
        assert_eq!(relays[0].addr, "turn1.example.com:3478");
        assert_eq!(relays[1].addr, "192.0.2.9:3478");
        for r in &relays {
            assert_eq!(r.expires_at, 1_700_003_600);
            assert_eq!(r.username, KNOWN_USERNAME);
            assert_eq!(r.password.expose(), KNOWN_PASSWORD);
        }
        // Another id or another time gives other credentials.
        assert_ne!(
            c.relays_for("dev2", 1_700_000_000)[0].password,
            relays[0].password
        );
        assert_ne!(
            c.relays_for("dev1", 1_700_000_001)[0].password,
            relays[0].password
        );
    }

    #[test]
    fn refresh_comes_at_two_thirds_of_the_lifetime() {
        assert_eq!(refresh_interval(DEFAULT_TTL), Duration::from_secs(2400));
        assert_eq!(refresh_interval(MIN_TTL), Duration::from_secs(40));
        assert_eq!(
            refresh_interval(Duration::from_secs(3)),
            Duration::from_secs(2)
        );
        assert_eq!(
            refresh_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        // Credentials sent at each refresh are valid until the next one
        // arrives, with a third of the lifetime to spare.
        let c = config(&["turn1.example.com:3478"], DEFAULT_TTL);
        let t0 = 1_700_000_000u64;
        let first = c.relays_for("dev1", t0)[0].expires_at;
        let next_refresh = t0 + c.refresh_interval().as_secs();
        assert!(first > next_refresh);
        assert_eq!(first - next_refresh, DEFAULT_TTL.as_secs() / 3);
    }

    #[test]
    fn server_addresses_are_checked() {
        for ok in [
            "turn1.example.com:3478",
            "turn:3478",
            "127.0.0.1:3478",
            "[2001:db8::1]:3478",
            "relay-2.example.com.:65535",
        ] {
            assert!(parse_server(ok).is_ok(), "{ok}");
        }
        for bad in [
            "turn1.example.com",
            "turn1.example.com:0",
            "turn1.example.com:65536",
            ":3478",
            "tu rn:3478",
            "-turn:3478",
            "1.2.3:3478",
            "2001:db8::1:3478",
            "turn..example:3478",
            "turn:http",
        ] {
            assert!(
                matches!(parse_server(bad), Err(TurnError::BadAddress(_))),
                "{bad}"
            );
        }
        for unusable in [
            "0.0.0.0:3478",
            "[::]:3478",
            "224.0.0.1:3478",
            "255.255.255.255:3478",
        ] {
            assert!(
                matches!(parse_server(unusable), Err(TurnError::UnusableAddress(..))),
                "{unusable}"
            );
        }
    }

    #[test]
    fn configs_are_checked_as_a_whole() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let secret = || Secret::new("x");
        let ttl = DEFAULT_TTL;
        assert!(matches!(
            TurnConfig::new(&s(&["a:1", "A:1"]), secret(), "warren".into(), ttl),
            Err(TurnError::Duplicate(_))
        ));
        let nine: Vec<String> = (1..=9).map(|i| format!("t{i}:3478")).collect();
        assert!(matches!(
            TurnConfig::new(&nine, secret(), "warren".into(), ttl),
            Err(TurnError::TooMany(9))
        ));
        assert!(TurnConfig::new(&nine[..8], secret(), "warren".into(), ttl).is_ok());
        for realm in ["", "two words", "quo\"te"] {
            assert!(matches!(
                TurnConfig::new(&s(&["a:1"]), secret(), realm.into(), ttl),
                Err(TurnError::BadRealm(_))
            ));
        }
        assert!(check_ttl(59).is_err());
        assert!(check_ttl(86_401).is_err());
        assert_eq!(check_ttl(60).unwrap(), MIN_TTL);
        assert_eq!(check_ttl(86_400).unwrap(), MAX_TTL);
    }

    #[test]
    fn the_secret_never_prints() {
        let c = config(&["turn1.example.com:3478"], DEFAULT_TTL);
        let shown = format!("{c:?}");
        assert!(!shown.contains(KNOWN_SECRET), "{shown}");
        assert!(shown.contains("turn1.example.com:3478"));
        let relays = c.relays_for("dev1", 1_700_000_000);
        let shown = format!("{relays:?}");
        assert!(!shown.contains(KNOWN_PASSWORD), "{shown}");
        assert!(!shown.contains(KNOWN_SECRET), "{shown}");
    }

    #[test]
    fn secret_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turn-secret");
        std::fs::write(&path, "north-wind\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = read_secret_file(&path).unwrap_err();
            assert!(matches!(err, TurnError::TooOpen(_)));
            assert!(err.to_string().contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(read_secret_file(&path).unwrap().expose(), "north-wind");

        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(read_secret_file(&path), Err(TurnError::Empty(_))));
        assert!(matches!(
            read_secret_file(&dir.path().join("missing")),
            Err(TurnError::Read { .. })
        ));
        assert!(matches!(
            read_secret_file(dir.path()),
            Err(TurnError::NotAFile(_))
        ));
    }
}
