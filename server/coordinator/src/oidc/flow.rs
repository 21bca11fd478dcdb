//! The sign-in state machine of docs/signin.md, kept in memory: pending
//! sign-ins (waiting for the identity provider), the one-time codes a
//! client exchanges for its token, device-code grants, and the tokens
//! page's sessions.
//!
//! Everything here is pure: time comes in as an argument, so tests drive a
//! fake clock. Entries are single use (taken out of the map when used, even
//! when the use fails), expire, and are capped so that a flood of sign-in
//! starts cannot grow memory without bound. Maps are keyed by SHA-256 of
//! the secret, so a lookup's timing tells nothing about the secret; the
//! PKCE check compares in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a pending sign-in waits for the person to finish at the
/// identity provider.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// How long a one-time code waits for the client to exchange it.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// Most pending sign-ins (and, separately, most unexchanged codes) held.
pub const DEFAULT_CAP: usize = 10_000;
/// The longest device name a client may send.
pub const MAX_DEVICE_LEN: usize = 64;
/// The deep link the app receives its code on.
pub const APP_REDIRECT: &str = "warren://signin";

/// Which kind of client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    App,
    Cli,
}

/// A validated `GET /signin` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigninRequest {
    pub client: ClientKind,
    pub redirect_uri: String,
    /// The client's own state, echoed back to it.
    pub state: String,
    pub code_challenge: String,
    pub device: String,
}

/// The query of `GET /signin`, as sent.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct SigninQuery {
    pub client: Option<String>,
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub device: Option<String>,
}

/// How long a device code waits for the person (RFC 8628 `expires_in`).
pub const DEVICE_TTL: Duration = Duration::from_secs(600);
/// The least time between two polls of one device code, at first.
pub const DEVICE_INTERVAL: Duration = Duration::from_secs(5);
/// RFC 8628's user code alphabet: consonants only, so no word is spelt
/// and no letter is mistaken for a digit.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A device-code grant (RFC 8628) waiting for its person.
struct DeviceGrant {
    user_code: String,
    device: String,
    state: DeviceState,
    interval: Duration,
    last_poll: Option<Instant>,
    created: Instant,
}

enum DeviceState {
    Waiting,
    Approved(Grant),
    Denied,
}

/// A new device grant: the codes to hand to the CLI.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub device_code: String,
    /// `ABCD-EFGH`.
    pub user_code: String,
}

/// `abcd efgh`, `ABCD-EFGH`, `abcdefgh` all name the same user code.
pub fn normalize_user_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn new_user_code() -> String {
    let mut out = String::with_capacity(9);
    let mut rng = rand::rngs::OsRng;
    for i in 0..8 {
        if i == 4 {
            out.push('-');
        }
        // 20 letters: rejection-free by drawing a u32 and reducing; the
        // bias (2^32 mod 20 of 2^32) is negligible for a 10-minute code.
        let n = rng.next_u32() as usize % USER_CODE_ALPHABET.len();
        out.push(USER_CODE_ALPHABET[n] as char);
    }
    out
}

/// Why a sign-in request was refused; the text is shown on the error page
/// (it names what the client got wrong: the person can only report it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request is missing its {0} parameter")]
    Missing(&'static str),
    #[error("its parameters cannot be read (one is repeated, or is not text)")]
    Unreadable,
    #[error("the client must be \"app\" or \"cli\"")]
    Client,
    #[error("the redirect address is not one Warren's clients use (warren://signin for the app, http://127.0.0.1:PORT/callback for the command line)")]
    RedirectUri,
    #[error("the state must be 22 to 128 base64url characters")]
    State,
    #[error("the code challenge must be 43 base64url characters (SHA-256, base64url)")]
    Challenge,
    #[error("only the S256 code challenge method is accepted")]
    Method,
    #[error("the device name must be 1 to 64 printable characters")]
    Device,
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `uri` is a redirect the `client` may use: exactly
/// `warren://signin` for the app, `http://127.0.0.1:PORT/callback` for the
/// CLI (RFC 8252 loopback, any port, written canonically).
pub fn redirect_allowed(client: ClientKind, uri: &str) -> bool {
    match client {
        ClientKind::App => uri == APP_REDIRECT,
        ClientKind::Cli => {
            let Some(rest) = uri.strip_prefix("http://127.0.0.1:") else {
                return false;
            };
            let Some(port) = rest.strip_suffix("/callback") else {
                return false;
            };
            // Canonical digits only: no sign, no leading zero, no port 0.
            matches!(port.parse::<u16>(), Ok(p) if p != 0 && p.to_string() == port)
        }
    }
}

/// Checks a `GET /signin` query against docs/signin.md.
pub fn validate(q: &SigninQuery) -> Result<SigninRequest, RequestError> {
    let client = match q.client.as_deref() {
        None => return Err(RequestError::Missing("client")),
        Some("app") => ClientKind::App,
        Some("cli") => ClientKind::Cli,
        Some(_) => return Err(RequestError::Client),
    };
    let redirect_uri = q
        .redirect_uri
        .clone()
        .ok_or(RequestError::Missing("redirect_uri"))?;
    if !redirect_allowed(client, &redirect_uri) {
        return Err(RequestError::RedirectUri);
    }
    let state = q.state.clone().ok_or(RequestError::Missing("state"))?;
    if !(22..=128).contains(&state.len()) || !is_base64url(&state) {
        return Err(RequestError::State);
    }
    let code_challenge = q
        .code_challenge
        .clone()
        .ok_or(RequestError::Missing("code_challenge"))?;
    if code_challenge.len() != 43 || !is_base64url(&code_challenge) {
        return Err(RequestError::Challenge);
    }
    match q.code_challenge_method.as_deref() {
        Some("S256") => {}
        None => return Err(RequestError::Missing("code_challenge_method")),
        Some(_) => return Err(RequestError::Method),
    }
    let device = q.device.clone().ok_or(RequestError::Missing("device"))?;
    let device = device.trim().to_string();
    if device.is_empty()
        || device.chars().count() > MAX_DEVICE_LEN
        || device.chars().any(char::is_control)
    {
        return Err(RequestError::Device);
    }
    Ok(SigninRequest {
        client,
        redirect_uri,
        state,
        code_challenge,
        device,
    })
}

/// `base64url(SHA-256(verifier)) == challenge`, in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// 32 bytes from the operating system's CSPRNG, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Who a sign-in at the identity provider is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The app or the CLI, answered by a redirect with a one-time code.
    Client(SigninRequest),
    /// A device-code grant, approved when the person comes back.
    Device { user_code: String, device: String },
    /// The tokens page: a short browser session for the person.
    Tokens,
}

impl Target {
    pub fn device(&self) -> &str {
        match self {
            Target::Client(r) => &r.device,
            Target::Device { device, .. } => device,
            Target::Tokens => "a browser",
        }
    }
}

/// What the coordinator remembers while the person is at the identity
/// provider.
#[derive(Debug, Clone)]
struct Pending {
    target: Target,
    /// Set when the browser is sent to the identity provider.
    idp: Option<IdpRound>,
    created: Instant,
}

/// The coordinator's own PKCE verifier and nonce for its round trip to the
/// identity provider.
#[derive(Clone)]
pub struct IdpRound {
    pub pkce_verifier: String,
    pub nonce: String,
}

impl std::fmt::Debug for IdpRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdpRound { .. }")
    }
}

/// Who signed in, bound to a one-time code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub user_id: String,
    pub user: String,
    pub device: String,
}

struct Code {
    grant: Grant,
    code_challenge: String,
    created: Instant,
}

/// Why a pending sign-in or a code could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("this sign-in is unknown, expired or already used")]
    UnknownOrUsed,
    #[error("this sign-in expired")]
    Expired,
    #[error("the code verifier does not match the code challenge")]
    WrongVerifier,
    #[error("too many sign-ins are in progress; try again in a few minutes")]
    Full,
    #[error("the person has not finished signing in yet")]
    AuthorizationPending,
    #[error("polling too fast")]
    SlowDown,
    #[error("the person declined the sign-in")]
    AccessDenied,
}

/// Pending sign-ins and one-time codes.
pub struct Flow {
    pending: HashMap<[u8; 32], Pending>,
    codes: HashMap<[u8; 32], Code>,
    /// Device grants by SHA-256 of the device code.
    devices: HashMap<[u8; 32], DeviceGrant>,
    /// Device grants by normalised user code (not secret on its own: it
    /// only lets a signed-in person approve the grant).
    user_codes: HashMap<String, [u8; 32]>,
    /// Tokens-page sessions by SHA-256 of the cookie.
    sessions: HashMap<[u8; 32], Session>,
    cap: usize,
}

/// How long the tokens page stays signed in.
pub const SESSION_TTL: Duration = Duration::from_secs(900);

/// A person signed in to the tokens page.
#[derive(Clone)]
pub struct Session {
    pub user_id: String,
    pub user: String,
    /// Sent back in every form: a cross-site form cannot know it.
    pub csrf: String,
    created: Instant,
}

impl Flow {
    pub fn new(cap: usize) -> Self {
        Self {
            pending: HashMap::new(),
            codes: HashMap::new(),
            devices: HashMap::new(),
            user_codes: HashMap::new(),
            sessions: HashMap::new(),
            cap,
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.created) < PENDING_TTL);
        self.codes
            .retain(|_, c| now.saturating_duration_since(c.created) < CODE_TTL);
        self.devices
            .retain(|_, d| now.saturating_duration_since(d.created) < DEVICE_TTL);
        let devices = &self.devices;
        self.user_codes.retain(|_, k| devices.contains_key(k));
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.created) < SESSION_TTL);
    }

    /// Opens a tokens-page session; returns its cookie value.
    pub fn session_new(
        &mut self,
        user_id: String,
        user: String,
        now: Instant,
    ) -> Result<String, FlowError> {
        if self.sessions.len() >= self.cap {
            self.sweep(now);
            if self.sessions.len() >= self.cap {
                return Err(FlowError::Full);
            }
        }
        let sid = random_token();
        self.sessions.insert(
            key(&sid),
            Session {
                user_id,
                user,
                csrf: random_token(),
                created: now,
            },
        );
        Ok(sid)
    }

    /// The live session of cookie value `sid`.
    pub fn session(&self, sid: &str, now: Instant) -> Option<Session> {
        self.sessions
            .get(&key(sid))
            .filter(|s| now.saturating_duration_since(s.created) < SESSION_TTL)
            .cloned()
    }

    /// The live session of `sid` if `csrf` is its form token.
    pub fn session_with_csrf(&self, sid: &str, csrf: &str, now: Instant) -> Option<Session> {
        self.session(sid, now)
            .filter(|s| bool::from(s.csrf.as_bytes().ct_eq(csrf.as_bytes())))
    }

    /// Number of pending sign-ins and unexchanged codes (for tests and logs).
    pub fn len(&self) -> (usize, usize) {
        (self.pending.len(), self.codes.len())
    }

    /// Keeps `target` and returns the pending sign-in's random id.
    pub fn begin(&mut self, target: Target, now: Instant) -> Result<String, FlowError> {
        if self.pending.len() >= self.cap {
            self.sweep(now);
            if self.pending.len() >= self.cap {
                return Err(FlowError::Full);
            }
        }
        let id = random_token();
        self.pending.insert(
            key(&id),
            Pending {
                target,
                idp: None,
                created: now,
            },
        );
        Ok(id)
    }

    /// Records the round trip to the identity provider for pending sign-in
    /// `id` (pressing "Continue" again starts a fresh one) and returns the
    /// request it belongs to.
    pub fn start(&mut self, id: &str, round: IdpRound, now: Instant) -> Result<Target, FlowError> {
        let k = key(id);
        let p = self.pending.get_mut(&k).ok_or(FlowError::UnknownOrUsed)?;
        if now.saturating_duration_since(p.created) >= PENDING_TTL {
            self.pending.remove(&k);
            return Err(FlowError::Expired);
        }
        p.idp = Some(round);
        Ok(p.target.clone())
    }

    /// Takes pending sign-in `id` out for the identity provider's answer:
    /// whatever happens next, it cannot be used again.
    pub fn take(&mut self, id: &str, now: Instant) -> Result<(Target, IdpRound), FlowError> {
        let p = self
            .pending
            .remove(&key(id))
            .ok_or(FlowError::UnknownOrUsed)?;
        if now.saturating_duration_since(p.created) >= PENDING_TTL {
            return Err(FlowError::Expired);
        }
        // A callback for a sign-in never sent to the provider is forged.
        let round = p.idp.ok_or(FlowError::UnknownOrUsed)?;
        Ok((p.target, round))
    }

    /// Makes a one-time code for `grant`, bound to the client's challenge.
    pub fn issue(
        &mut self,
        grant: Grant,
        code_challenge: String,
        now: Instant,
    ) -> Result<String, FlowError> {
        if self.codes.len() >= self.cap {
            self.sweep(now);
            if self.codes.len() >= self.cap {
                return Err(FlowError::Full);
            }
        }
        let code = random_token();
        self.codes.insert(
            key(&code),
            Code {
                grant,
                code_challenge,
                created: now,
            },
        );
        Ok(code)
    }

    /// Exchanges a one-time code with the client's PKCE verifier. The code
    /// is gone afterwards, whether the verifier matched or not, so a code
    /// cannot be guessed at twice.
    pub fn redeem(&mut self, code: &str, verifier: &str, now: Instant) -> Result<Grant, FlowError> {
        let c = self
            .codes
            .remove(&key(code))
            .ok_or(FlowError::UnknownOrUsed)?;
        if now.saturating_duration_since(c.created) >= CODE_TTL {
            return Err(FlowError::Expired);
        }
        if !pkce_matches(verifier, &c.code_challenge) {
            return Err(FlowError::WrongVerifier);
        }
        Ok(c.grant)
    }

    /// Starts a device grant for `device` (validated by the caller).
    pub fn device_begin(&mut self, device: String, now: Instant) -> Result<NewDevice, FlowError> {
        if self.devices.len() >= self.cap {
            self.sweep(now);
            if self.devices.len() >= self.cap {
                return Err(FlowError::Full);
            }
        }
        let device_code = random_token();
        let mut user_code = new_user_code();
        while self
            .user_codes
            .contains_key(&normalize_user_code(&user_code))
        {
            user_code = new_user_code();
        }
        let k = key(&device_code);
        self.user_codes.insert(normalize_user_code(&user_code), k);
        self.devices.insert(
            k,
            DeviceGrant {
                user_code: user_code.clone(),
                device,
                state: DeviceState::Waiting,
                interval: DEVICE_INTERVAL,
                last_poll: None,
                created: now,
            },
        );
        Ok(NewDevice {
            device_code,
            user_code,
        })
    }

    /// The device name of a waiting grant by its user code, as typed.
    pub fn device_lookup(&self, user_code: &str, now: Instant) -> Option<(String, String)> {
        let k = self.user_codes.get(&normalize_user_code(user_code))?;
        let d = self.devices.get(k)?;
        let live = now.saturating_duration_since(d.created) < DEVICE_TTL;
        (live && matches!(d.state, DeviceState::Waiting))
            .then(|| (d.user_code.clone(), d.device.clone()))
    }

    /// Settles a waiting grant: approved with `grant`, or denied with
    /// `None`. A grant settles once.
    pub fn device_settle(
        &mut self,
        user_code: &str,
        grant: Option<Grant>,
        now: Instant,
    ) -> Result<(), FlowError> {
        let k = *self
            .user_codes
            .get(&normalize_user_code(user_code))
            .ok_or(FlowError::UnknownOrUsed)?;
        let d = self.devices.get_mut(&k).ok_or(FlowError::UnknownOrUsed)?;
        if now.saturating_duration_since(d.created) >= DEVICE_TTL {
            return Err(FlowError::Expired);
        }
        if !matches!(d.state, DeviceState::Waiting) {
            return Err(FlowError::UnknownOrUsed);
        }
        d.state = match grant {
            Some(g) => DeviceState::Approved(g),
            None => DeviceState::Denied,
        };
        Ok(())
    }

    /// The CLI's poll (RFC 8628 3.4/3.5). An approved or denied grant is
    /// answered once and forgotten.
    pub fn device_poll(&mut self, device_code: &str, now: Instant) -> Result<Grant, FlowError> {
        let k = key(device_code);
        let d = self.devices.get_mut(&k).ok_or(FlowError::Expired)?;
        if now.saturating_duration_since(d.created) >= DEVICE_TTL {
            let d = self.devices.remove(&k);
            if let Some(d) = d {
                self.user_codes.remove(&normalize_user_code(&d.user_code));
            }
            return Err(FlowError::Expired);
        }
        let early = d
            .last_poll
            .is_some_and(|last| now.saturating_duration_since(last) < d.interval);
        d.last_poll = Some(now);
        if early {
            // RFC 8628 3.5: slow down by 5 seconds for good.
            d.interval += DEVICE_INTERVAL;
            return Err(FlowError::SlowDown);
        }
        if matches!(d.state, DeviceState::Waiting) {
            return Err(FlowError::AuthorizationPending);
        }
        let Some(d) = self.devices.remove(&k) else {
            return Err(FlowError::Expired);
        };
        self.user_codes.remove(&normalize_user_code(&d.user_code));
        match d.state {
            DeviceState::Approved(g) => Ok(g),
            DeviceState::Denied => Err(FlowError::AccessDenied),
            DeviceState::Waiting => Err(FlowError::AuthorizationPending),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    // RFC 7636 appendix B.
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn query() -> SigninQuery {
        SigninQuery {
            client: Some("cli".into()),
            redirect_uri: Some("http://127.0.0.1:4711/callback".into()),
            state: Some("abcdefghijklmnopqrstuv".into()),
            code_challenge: Some(CHALLENGE.into()),
            code_challenge_method: Some("S256".into()),
            device: Some("alice-laptop (Linux)".into()),
        }
    }

    fn round() -> IdpRound {
        IdpRound {
            pkce_verifier: "v".into(),
            nonce: "n".into(),
        }
    }

    #[test]
    fn pkce_follows_rfc_7636() {
        assert!(pkce_matches(VERIFIER, CHALLENGE));
        assert!(!pkce_matches("another-verifier", CHALLENGE));
        assert!(!pkce_matches(VERIFIER, &CHALLENGE[..42]));
    }

    #[test]
    fn redirect_uris_are_allowlisted_exactly() {
        use ClientKind::*;
        assert!(redirect_allowed(App, "warren://signin"));
        assert!(redirect_allowed(Cli, "http://127.0.0.1:1/callback"));
        assert!(redirect_allowed(Cli, "http://127.0.0.1:65535/callback"));
        for bad in [
            "warren://signin/",
            "warren://signin?x=1",
            "WARREN://signin",
            "http://127.0.0.1:4711/callback",
        ] {
            assert!(!redirect_allowed(App, bad), "{bad}");
        }
        for bad in [
            "warren://signin",
            "http://127.0.0.1:0/callback",
            "http://127.0.0.1:04711/callback",
            "http://127.0.0.1:+4711/callback",
            "http://127.0.0.1:65536/callback",
            "http://127.0.0.1/callback",
            "http://localhost:4711/callback",
            "https://127.0.0.1:4711/callback",
            "http://127.0.0.1:4711/callback/",
            "http://127.0.0.1:4711/callback?x",
            "http://127.0.0.1:4711@evil.example/callback",
            "http://127.0.0.1.evil.example:4711/callback",
        ] {
            assert!(!redirect_allowed(Cli, bad), "{bad}");
        }
    }

    #[test]
    fn requests_are_validated() {
        let ok = validate(&query()).unwrap();
        assert_eq!(ok.client, ClientKind::Cli);
        assert_eq!(ok.device, "alice-laptop (Linux)");
        type Change = Box<dyn Fn(&mut SigninQuery)>;
        let cases: Vec<(Change, RequestError)> = vec![
            (
                Box::new(|q| q.client = None),
                RequestError::Missing("client"),
            ),
            (
                Box::new(|q| q.client = Some("web".into())),
                RequestError::Client,
            ),
            (
                Box::new(|q| q.redirect_uri = Some("https://evil.example/".into())),
                RequestError::RedirectUri,
            ),
            (
                Box::new(|q| q.client = Some("app".into())),
                RequestError::RedirectUri,
            ),
            (
                Box::new(|q| q.state = Some("short".into())),
                RequestError::State,
            ),
            (
                Box::new(|q| q.state = Some("a<b".repeat(10))),
                RequestError::State,
            ),
            (
                Box::new(|q| q.code_challenge = Some("x".into())),
                RequestError::Challenge,
            ),
            (
                Box::new(|q| q.code_challenge_method = Some("plain".into())),
                RequestError::Method,
            ),
            (
                Box::new(|q| q.device = Some(" ".into())),
                RequestError::Device,
            ),
            (
                Box::new(|q| q.device = Some("x".repeat(65))),
                RequestError::Device,
            ),
            (
                Box::new(|q| q.device = Some("a\nb".into())),
                RequestError::Device,
            ),
        ];
        for (change, want) in cases {
            let mut q = query();
            change(&mut q);
            assert_eq!(validate(&q), Err(want));
        }
        let mut q = query();
        q.device = Some("é".repeat(64));
        assert!(validate(&q).is_ok(), "64 characters, not bytes");
    }

    #[test]
    fn a_pending_sign_in_is_used_once() {
        let t0 = Instant::now();
        let mut f = Flow::new(10);
        let id = f
            .begin(Target::Client(validate(&query()).unwrap()), t0)
            .unwrap();
        assert_eq!(id.len(), 43);
        assert_eq!(
            f.take(&id, t0).unwrap_err(),
            FlowError::UnknownOrUsed,
            "a callback before the provider was visited is refused"
        );
        let id = f
            .begin(Target::Client(validate(&query()).unwrap()), t0)
            .unwrap();
        f.start(&id, round(), t0).unwrap();
        let (target, r) = f.take(&id, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(target, Target::Client(validate(&query()).unwrap()));
        assert_eq!(r.nonce, "n");
        assert_eq!(f.take(&id, t0).unwrap_err(), FlowError::UnknownOrUsed);
        assert_eq!(f.take("made-up", t0).unwrap_err(), FlowError::UnknownOrUsed);
    }

    #[test]
    fn a_pending_sign_in_expires() {
        let t0 = Instant::now();
        let mut f = Flow::new(10);
        let id = f
            .begin(Target::Client(validate(&query()).unwrap()), t0)
            .unwrap();
        f.start(&id, round(), t0 + PENDING_TTL - Duration::from_secs(1))
            .unwrap();
        assert_eq!(
            f.take(&id, t0 + PENDING_TTL).unwrap_err(),
            FlowError::Expired
        );
        let id = f
            .begin(Target::Client(validate(&query()).unwrap()), t0)
            .unwrap();
        assert_eq!(
            f.start(&id, round(), t0 + PENDING_TTL).unwrap_err(),
            FlowError::Expired
        );
    }

    #[test]
    fn pending_sign_ins_are_capped_and_expired_ones_make_room() {
        let t0 = Instant::now();
        let mut f = Flow::new(3);
        for _ in 0..3 {
            f.begin(Target::Client(validate(&query()).unwrap()), t0)
                .unwrap();
        }
        assert_eq!(
            f.begin(
                Target::Client(validate(&query()).unwrap()),
                t0 + Duration::from_secs(1)
            ),
            Err(FlowError::Full)
        );
        f.begin(
            Target::Client(validate(&query()).unwrap()),
            t0 + PENDING_TTL,
        )
        .unwrap();
        assert_eq!(f.len().0, 1);
    }

    fn grant() -> Grant {
        Grant {
            user_id: "u1".into(),
            user: "alice".into(),
            device: "alice-laptop (Linux)".into(),
        }
    }

    #[test]
    fn a_code_is_redeemed_once_with_the_right_verifier() {
        let t0 = Instant::now();
        let mut f = Flow::new(10);
        let code = f.issue(grant(), CHALLENGE.into(), t0).unwrap();
        assert_eq!(f.redeem(&code, VERIFIER, t0).unwrap(), grant());
        assert_eq!(
            f.redeem(&code, VERIFIER, t0).unwrap_err(),
            FlowError::UnknownOrUsed
        );
    }

    #[test]
    fn a_wrong_verifier_burns_the_code() {
        let t0 = Instant::now();
        let mut f = Flow::new(10);
        let code = f.issue(grant(), CHALLENGE.into(), t0).unwrap();
        assert_eq!(
            f.redeem(&code, "not-the-verifier", t0).unwrap_err(),
            FlowError::WrongVerifier
        );
        assert_eq!(
            f.redeem(&code, VERIFIER, t0).unwrap_err(),
            FlowError::UnknownOrUsed
        );
    }

    #[test]
    fn a_code_expires_after_a_minute_and_codes_are_capped() {
        let t0 = Instant::now();
        let mut f = Flow::new(2);
        let code = f.issue(grant(), CHALLENGE.into(), t0).unwrap();
        assert_eq!(
            f.redeem(&code, VERIFIER, t0 + CODE_TTL).unwrap_err(),
            FlowError::Expired
        );
        f.issue(grant(), CHALLENGE.into(), t0).unwrap();
        f.issue(grant(), CHALLENGE.into(), t0).unwrap();
        assert_eq!(
            f.issue(grant(), CHALLENGE.into(), t0).unwrap_err(),
            FlowError::Full
        );
        f.issue(grant(), CHALLENGE.into(), t0 + CODE_TTL).unwrap();
    }

    #[test]
    fn a_device_grant_is_polled_until_approved_once() {
        let t0 = Instant::now();
        let mut f = Flow::new(10);
        let d = f.device_begin("box (Linux)".into(), t0).unwrap();
        assert_eq!(d.user_code.len(), 9);
        assert_eq!(&d.user_code[4..5], "-");
        assert_eq!(
            f.device_poll(&d.device_code, t0).unwrap_err(),
            FlowError::AuthorizationPending
        );
        assert_eq!(
            f.device_poll(&d.device_code, t0 + Duration::from_secs(1))
                .unwrap_err(),
            FlowError::SlowDown
        );
        // The interval is now 10 s, counted from the last poll.
        assert_eq!(
            f.device_poll(&d.device_code, t0 + Duration::from_secs(8))
                .unwrap_err(),
            FlowError::SlowDown
        );
        let typed = d.user_code.to_lowercase().replace('-', " ");
        let (shown, device) = f.device_lookup(&typed, t0).unwrap();
        assert_eq!(
            (shown.as_str(), device.as_str()),
            (d.user_code.as_str(), "box (Linux)")
        );
        f.device_settle(&typed, Some(grant()), t0).unwrap();
        assert_eq!(
            f.device_settle(&typed, None, t0).unwrap_err(),
            FlowError::UnknownOrUsed,
            "settled once"
        );
        assert!(f.device_lookup(&typed, t0).is_none());
        let t = t0 + Duration::from_secs(30);
        assert_eq!(f.device_poll(&d.device_code, t).unwrap(), grant());
        assert_eq!(
            f.device_poll(&d.device_code, t + Duration::from_secs(30))
                .unwrap_err(),
            FlowError::Expired,
            "answered once"
        );
    }

    #[test]
    fn a_device_grant_can_be_denied_and_expires() {
        let t0 = Instant::now();
        let mut f = Flow::new(10);
        let d = f.device_begin("box".into(), t0).unwrap();
        f.device_settle(&d.user_code, None, t0).unwrap();
        assert_eq!(
            f.device_poll(&d.device_code, t0).unwrap_err(),
            FlowError::AccessDenied
        );
        let d = f.device_begin("box".into(), t0).unwrap();
        assert!(f.device_lookup(&d.user_code, t0 + DEVICE_TTL).is_none());
        assert_eq!(
            f.device_settle(&d.user_code, Some(grant()), t0 + DEVICE_TTL)
                .unwrap_err(),
            FlowError::Expired
        );
        assert_eq!(
            f.device_poll(&d.device_code, t0 + DEVICE_TTL).unwrap_err(),
            FlowError::Expired
        );
        assert_eq!(
            f.device_poll("made-up", t0).unwrap_err(),
            FlowError::Expired
        );
    }

    #[test]
    fn device_grants_are_capped() {
        let t0 = Instant::now();
        let mut f = Flow::new(2);
        f.device_begin("a".into(), t0).unwrap();
        f.device_begin("b".into(), t0).unwrap();
        assert_eq!(f.device_begin("c".into(), t0).unwrap_err(), FlowError::Full);
        f.device_begin("c".into(), t0 + DEVICE_TTL).unwrap();
    }

    #[test]
    fn sessions_expire_and_need_their_csrf_token() {
        let t0 = Instant::now();
        let mut f = Flow::new(1);
        let sid = f.session_new("u1".into(), "alice".into(), t0).unwrap();
        let s = f.session(&sid, t0).unwrap();
        assert_eq!(s.user, "alice");
        assert!(f.session_with_csrf(&sid, &s.csrf, t0).is_some());
        assert!(f.session_with_csrf(&sid, "forged", t0).is_none());
        assert!(f.session("other", t0).is_none());
        assert!(f.session(&sid, t0 + SESSION_TTL).is_none());
        assert_eq!(
            f.session_new("u2".into(), "bob".into(), t0).unwrap_err(),
            FlowError::Full
        );
        f.session_new("u2".into(), "bob".into(), t0 + SESSION_TTL)
            .unwrap();
    }

    #[test]
    fn random_tokens_differ() {
        assert_ne!(random_token(), random_token());
    }
}
