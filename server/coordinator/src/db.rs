//! The coordinator's SQLite database: opening, migrations and every query.
//!
//! The database is one file in WAL mode so that admin commands (separate
//! processes) can write while `serve` runs. Every write transaction starts
//! with `BEGIN IMMEDIATE` and bumps `meta.revision`; `serve` polls that
//! counter to learn about changes made by other processes.

use crate::addr::{self, Ula48};
use crate::names::{self, InvalidName};
use crate::token::{self, NewToken};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Sqlite, SqlitePool, Transaction};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use warren_proto::control::TokenKind;
use warren_proto::Secret;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database {path}: {source}; check that the directory exists and is writable")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot create the database {path}: {source}; check that the directory exists and is writable")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot update the schema of the database: {0}; is it a Warren coordinator database, written by this version or an older one?")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error(transparent)]
    Exhausted(#[from] addr::Exhausted),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    /// The WireGuard key is registered by another agent or device.
    #[error("this WireGuard public key is already registered by another agent or device in this deployment; every agent and device needs a key of its own (generate a new one)")]
    KeyInUse,
}

/// Deployment facts stored in the single `meta` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub revision: i64,
    pub ipv6_prefix: Ula48,
    pub suffix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WorkspaceRow {
    pub id: String,
    pub owner_id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentRow {
    pub seq: i64,
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub address_index: i64,
    pub public_key: Option<String>,
    /// JSON array of socket addresses.
    pub endpoints: String,
    #[sqlx(rename = "static")]
    pub is_static: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRef {
    pub id: String,
    pub user_id: String,
    pub agent_id: Option<String>,
}

/// Everything `serve` mirrors in memory, read in one consistent transaction.
#[derive(Debug, Clone)]
pub struct Rows {
    pub revision: i64,
    pub users: Vec<UserRow>,
    pub workspaces: Vec<WorkspaceRow>,
    pub agents: Vec<AgentRow>,
    pub tokens: Vec<TokenRef>,
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: TokenKind,
    pub token_id: String,
    pub user_id: String,
    pub user: String,
    pub agent_id: Option<String>,
}

/// How a bearer token fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Valid(Principal),
    /// Not shaped like a Warren token.
    Malformed,
    /// Well-formed, but no token has its id.
    UnknownId,
    /// The id exists but the secret (or the kind) is wrong.
    WrongSecret,
}

/// A registered client device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub address_index: i64,
}

/// One token as listed by `token list` and `GET /api/v1/tokens` (never the
/// secret).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct TokenInfo {
    /// The public id (the 16 hex characters after `wut_`/`wat_`).
    pub id: String,
    /// The owning user's name.
    pub owner: String,
    /// `user` or `agent`.
    pub kind: String,
    /// The device a browser sign-in minted it for; `None` for admin tokens.
    pub device_name: Option<String>,
    /// `admin` (`warren-coord token create`, agent tokens) or `browser`.
    pub origin: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, updated at most once a minute ([`TOUCH_INTERVAL_SECS`]).
    pub last_used_at: Option<i64>,
}

/// A user as the sign-in flow sees them.
pub type User = UserRow;

/// Where a token came from, stored in `tokens.origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// Made by an administrator (`warren-coord token create`).
    Admin,
    /// Minted by a browser sign-in (docs/signin.md).
    Browser,
}

impl TokenOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenOrigin::Admin => "admin",
            TokenOrigin::Browser => "browser",
        }
    }
}

/// Longest device name a token may carry, in characters.
pub const MAX_DEVICE_NAME_LEN: usize = 64;

/// `last_used_at` is written at most this often per token, so that a busy
/// device does not turn every request into a database write.
pub const TOUCH_INTERVAL_SECS: i64 = 60;

/// Checks a device name ("alice-laptop (Linux)") and returns it trimmed:
/// 1 to 64 characters, no control characters (it is shown in terminals and
/// web pages).
pub fn validate_device_name(name: &str) -> Result<String, DbError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(DbError::Invalid(
            "the device name is empty; name the device after its host and OS, for example \"alice-laptop (Linux)\"".into(),
        ));
    }
    if trimmed.chars().count() > MAX_DEVICE_NAME_LEN {
        return Err(DbError::Invalid(format!(
            "the device name is longer than {MAX_DEVICE_NAME_LEN} characters; use a shorter one"
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(DbError::Invalid(
            "the device name contains control characters; use plain text".into(),
        ));
    }
    Ok(trimmed.to_string())
}

/// Makes a valid user name (see `names`) out of an identity provider's
/// `preferred_username` (or subject): lowercase, the part before any `@`,
/// other characters turned into hyphens, at most 32 characters; `user` if
/// nothing usable is left.
pub fn user_name_from(preferred: &str) -> String {
    let local = preferred.split('@').next().unwrap_or(preferred);
    let mut out = String::new();
    for c in local.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        // One hyphen for a run of replaced characters.
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
        if out.len() >= names::MAX_NAME_LEN {
            break;
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "user".into()
    } else {
        trimmed.to_string()
    }
}

/// `base` with a numeric suffix `-N` that still fits a name.
fn numbered_name(base: &str, n: u32) -> String {
    let suffix = format!("-{n}");
    let keep = names::MAX_NAME_LEN - suffix.len();
    let head = base.get(..keep.min(base.len())).unwrap_or(base);
    format!("{}{suffix}", head.trim_end_matches('-'))
}

#[derive(sqlx::FromRow)]
struct TokenAuthRow {
    kind: String,
    user_id: String,
    user: String,
    agent_id: Option<String>,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct MetaRow {
    revision: i64,
    ipv6_prefix: String,
    suffix: Option<String>,
}

/// Encodes endpoints for the `endpoints` column.
pub fn endpoints_json(endpoints: &[SocketAddr]) -> String {
    // A Vec<SocketAddr> always serializes.
    serde_json::to_string(endpoints).unwrap_or_else(|_| "[]".into())
}

/// Decodes the `endpoints` column; a damaged value reads as no endpoints.
pub fn parse_endpoints(json: &str) -> Vec<SocketAddr> {
    // Views are rebuilt for every agent often; skip the parser for the
    // common "no endpoints yet".
    if json.is_empty() || json == "[]" {
        return Vec::new();
    }
    serde_json::from_str(json).unwrap_or_default()
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-12-06T22:02:11Z`), for
/// `token list` and the tokens page.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Creates an empty database file at `path` that only this user can read
/// (it holds every device's address, host name and token hashes), unless
/// one is there. SQLite gives its `-wal` and `-shm` files the database
/// file's mode, so they follow. An existing file is left as it is, with a
/// warning when others can read it.
fn create_private(path: &Path) -> Result<(), DbError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(path) {
                    let mode = meta.permissions().mode();
                    if meta.is_file() && mode & 0o077 != 0 {
                        tracing::warn!(
                            db = %path.display(),
                            mode = format!("{:03o}", mode & 0o777),
                            "the database is readable by other users; restrict it with `chmod 600` on it and its -wal and -shm files"
                        );
                    }
                }
            }
            Ok(())
        }
        Err(source) => Err(DbError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Handle on the database (a small connection pool).
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
    /// When this process last wrote each token's `last_used_at`, so that a
    /// busy client's requests within the minute cost no database write lock.
    touched: Arc<Mutex<HashMap<String, i64>>>,
}

/// Entries of `Db::touched` kept before it is cleared (it only saves writes).
const TOUCHED_CAP: usize = 100_000;

impl Db {
    /// Opens (creating if missing, readable by this user only) and
    /// migrates the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, DbError> {
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| DbError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // Two processes creating the same new file race on the migration;
        // the loser sees it applied on a second try.
        if let Err(e) = MIGRATOR.run(&pool).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
            MIGRATOR.run(&pool).await.map_err(|_| e)?;
        }
        sqlx::query("INSERT OR IGNORE INTO meta (id, ipv6_prefix) VALUES (1, ?)")
            .bind(Ula48::random().to_string())
            .execute(&pool)
            .await?;
        Ok(Self {
            pool,
            touched: Arc::default(),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn write(&self) -> Result<(Transaction<'static, Sqlite>, i64), DbError> {
        // IMMEDIATE takes the write lock up front (waiting up to the busy
        // timeout) instead of failing later when a read turns into a write.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let revision: i64 = sqlx::query_scalar(
            "UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision",
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok((tx, revision))
    }

    pub async fn meta(&self) -> Result<Meta, DbError> {
        let row: MetaRow =
            sqlx::query_as("SELECT revision, ipv6_prefix, suffix FROM meta WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        meta_from_row(row)
    }

    pub async fn revision(&self) -> Result<i64, DbError> {
        Ok(sqlx::query_scalar("SELECT revision FROM meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Stores the DNS suffix (done by `serve`).
    pub async fn set_suffix(&self, suffix: &str) -> Result<(), DbError> {
        names::validate_suffix(suffix)?;
        let (mut tx, _) = self.write().await?;
        sqlx::query("UPDATE meta SET suffix = ? WHERE id = 1")
            .bind(suffix)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads everything `serve` mirrors, as of one revision.
    pub async fn load(&self) -> Result<Rows, DbError> {
        // A read transaction sees one snapshot of the WAL.
        let mut tx = self.pool.begin().await?;
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let users = sqlx::query_as("SELECT id, name FROM users")
            .fetch_all(&mut *tx)
            .await?;
        let workspaces = sqlx::query_as("SELECT id, owner_id, name FROM workspaces")
            .fetch_all(&mut *tx)
            .await?;
        let agents = sqlx::query_as(
            "SELECT seq, id, workspace_id, name, address_index, public_key, endpoints, static FROM agents ORDER BY seq",
        )
        .fetch_all(&mut *tx)
        .await?;
        let tokens = sqlx::query_as("SELECT id, user_id, agent_id FROM tokens")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Rows {
            revision,
            users,
            workspaces,
            agents,
            tokens,
        })
    }

    /// Checks a bearer token. Malformed tokens, unknown ids and wrong secrets
    /// all give `None`, after the same amount of hashing.
    pub async fn authenticate(&self, bearer: &str) -> Result<Option<Principal>, DbError> {
        Ok(match self.check_token(bearer).await? {
            TokenCheck::Valid(p) => Some(p),
            _ => None,
        })
    }

    /// Checks a bearer token and says how it failed, for the throttle on
    /// failed authentications (never for the answer, which is the same
    /// for every failure).
    pub async fn check_token(&self, bearer: &str) -> Result<TokenCheck, DbError> {
        let Some(parsed) = token::parse(bearer) else {
            return Ok(TokenCheck::Malformed);
        };
        let row: Option<TokenAuthRow> = sqlx::query_as(
            "SELECT t.kind, t.user_id, u.name AS user, t.agent_id, t.salt, t.hash \
             FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?",
        )
        .bind(&parsed.id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            parsed.verify_against_nothing();
            return Ok(TokenCheck::UnknownId);
        };
        let kind_matches = matches!(
            (parsed.kind, row.kind.as_str()),
            (TokenKind::User, "user") | (TokenKind::Agent, "agent")
        );
        if !parsed.verify(&row.salt, &row.hash) || !kind_matches {
            return Ok(TokenCheck::WrongSecret);
        }
        Ok(TokenCheck::Valid(Principal {
            kind: parsed.kind,
            token_id: parsed.id,
            user_id: row.user_id,
            user: row.user,
            agent_id: row.agent_id,
        }))
    }

    async fn user_id(tx: &mut Transaction<'static, Sqlite>, name: &str) -> Result<String, DbError> {
        names::validate("user", name)?;
        sqlx::query_scalar("SELECT id FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| {
                DbError::NotFound(format!(
                    "there is no user named {name:?}; create it with `warren-coord user add {name}`"
                ))
            })
    }

    async fn workspace_id(
        tx: &mut Transaction<'static, Sqlite>,
        owner: &str,
        owner_id: &str,
        name: &str,
    ) -> Result<String, DbError> {
        names::validate("workspace", name)?;
        sqlx::query_scalar("SELECT id FROM workspaces WHERE owner_id = ? AND name = ?")
            .bind(owner_id)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| {
                DbError::NotFound(format!(
                    "user {owner:?} has no workspace named {name:?}; create it with `warren-coord workspace add --owner {owner} {name}`"
                ))
            })
    }

    /// Takes `count` consecutive address indexes from the counter.
    async fn allocate(tx: &mut Transaction<'static, Sqlite>, count: i64) -> Result<i64, DbError> {
        let first: i64 = sqlx::query_scalar(
            "UPDATE meta SET next_address = next_address + ? WHERE id = 1 RETURNING next_address - ?",
        )
        .bind(count)
        .bind(count)
        .fetch_one(&mut **tx)
        .await?;
        if first < addr::FIRST_INDEX || first + count - 1 > addr::LAST_INDEX {
            return Err(addr::Exhausted.into());
        }
        Ok(first)
    }

    pub async fn add_user(&self, name: &str) -> Result<String, DbError> {
        names::validate("user", name)?;
        let (mut tx, _) = self.write().await?;
        let id = new_id();
        let done =
            sqlx::query("INSERT OR IGNORE INTO users (id, name, created_at) VALUES (?, ?, ?)")
                .bind(&id)
                .bind(name)
                .bind(now())
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::Exists(format!(
                "a user named {name:?} already exists"
            )));
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Removes a user with their tokens, workspaces, agents and devices.
    pub async fn remove_user(&self, name: &str) -> Result<(), DbError> {
        let (mut tx, _) = self.write().await?;
        let id = Self::user_id(&mut tx, name).await?;
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar("SELECT name FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Creates a user token; the caller shows `token` once.
    pub async fn create_user_token(&self, user: &str) -> Result<NewToken, DbError> {
        let (mut tx, _) = self.write().await?;
        let user_id = Self::user_id(&mut tx, user).await?;
        let t = token::generate(TokenKind::User);
        insert_token(&mut tx, &t, "user", &user_id, None).await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Mints a user token for a device (`device_name`, checked with
    /// [`validate_device_name`]) and returns the token text, to hand over
    /// once, and its public id. `user` is a user's id or name (ids are UUIDs,
    /// which no name can be).
    pub async fn create_device_token(
        &self,
        user: &str,
        device_name: &str,
        origin: TokenOrigin,
    ) -> Result<(Secret, String), DbError> {
        let device_name = validate_device_name(device_name)?;
        let (mut tx, _) = self.write().await?;
        let user_id: String = sqlx::query_scalar("SELECT id FROM users WHERE id = ?1 OR name = ?1")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                DbError::NotFound(format!(
                    "there is no user {user:?}; an administrator adds users with `warren-coord user add NAME`"
                ))
            })?;
        let t = token::generate(TokenKind::User);
        insert_token(&mut tx, &t, "user", &user_id, None).await?;
        sqlx::query("UPDATE tokens SET device_name = ?, origin = ? WHERE id = ?")
            .bind(&device_name)
            .bind(origin.as_str())
            .bind(&t.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((t.token, t.id))
    }

    /// Lists a user's tokens (user and agent tokens), without secrets.
    pub async fn list_tokens(&self, user: &str) -> Result<Vec<TokenInfo>, DbError> {
        self.list_tokens_all(Some(user)).await
    }

    /// Lists every token, or only those of the user named `owner`, ordered
    /// by owner and creation; never the secrets.
    pub async fn list_tokens_all(&self, owner: Option<&str>) -> Result<Vec<TokenInfo>, DbError> {
        let mut tx = self.pool.begin().await?;
        let owner_id = match owner {
            Some(name) => Some(Self::user_id(&mut tx, name).await?),
            None => None,
        };
        let list = sqlx::query_as(
            "SELECT t.id, u.name AS owner, t.kind, t.device_name, t.origin, t.created_at, t.last_used_at \
             FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE ?1 IS NULL OR t.user_id = ?1 \
             ORDER BY u.name, t.created_at, t.id",
        )
        .bind(owner_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(list)
    }

    /// A user's own device (user-kind) tokens, for `GET /api/v1/tokens` and
    /// the tokens page; agent tokens are the administrator's to manage.
    pub async fn list_own_tokens(&self, user_id: &str) -> Result<Vec<TokenInfo>, DbError> {
        Ok(sqlx::query_as(
            "SELECT t.id, u.name AS owner, t.kind, t.device_name, t.origin, t.created_at, t.last_used_at \
             FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.user_id = ? AND t.kind = 'user' \
             ORDER BY t.created_at, t.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes one of the user's own user tokens (by user id). Another
    /// user's token, an agent token and an unknown id are all the same
    /// `NotFound`, so ids cannot be probed.
    pub async fn revoke_own_token(&self, user_id: &str, id: &str) -> Result<(), DbError> {
        let (mut tx, _) = self.write().await?;
        let done = sqlx::query("DELETE FROM tokens WHERE id = ? AND user_id = ? AND kind = 'user'")
            .bind(id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(format!(
                "you have no token with id {id:?}; list yours with GET /api/v1/tokens"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that token `id` authenticated at `now` (Unix seconds), at
    /// most once per [`TOUCH_INTERVAL_SECS`]. Returns whether it wrote. It
    /// does not bump the revision: nothing `serve` mirrors changed.
    pub async fn touch_token(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let recent = |touched: &HashMap<String, i64>| {
            touched
                .get(id)
                .is_some_and(|&t| now - t < TOUCH_INTERVAL_SECS)
        };
        // A poisoned lock only loses this cache; the SQL below still throttles.
        if self.touched.lock().is_ok_and(|t| recent(&t)) {
            return Ok(false);
        }
        let done = sqlx::query(
            "UPDATE tokens SET last_used_at = ?2 \
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2 - ?3)",
        )
        .bind(id)
        .bind(now)
        .bind(TOUCH_INTERVAL_SECS)
        .execute(&self.pool)
        .await?;
        let wrote = done.rows_affected() > 0;
        // Only a write says when the column was last set; after a miss
        // (another process wrote within the minute) the database decides
        // again next time.
        if let (true, Ok(mut touched)) = (wrote, self.touched.lock()) {
            if touched.len() >= TOUCHED_CAP {
                touched.clear();
            }
            touched.insert(id.to_string(), now);
        }
        Ok(wrote)
    }

    /// The user who signs in as `subject` at `issuer`, if any.
    pub async fn user_by_oidc(&self, issuer: &str, subject: &str) -> Result<Option<User>, DbError> {
        Ok(
            sqlx::query_as("SELECT id, name FROM users WHERE oidc_issuer = ? AND oidc_subject = ?")
                .bind(issuer)
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Creates the user for `(issuer, subject)` on first sign-in (with
    /// `--oidc-auto-create`), named after `preferred_name` (see
    /// [`user_name_from`]) made unique with `-2`, `-3`, …. If the pair is
    /// already bound (two sign-ins racing), returns that user.
    pub async fn create_oidc_user(
        &self,
        issuer: &str,
        subject: &str,
        preferred_name: &str,
    ) -> Result<User, DbError> {
        check_oidc_pair(issuer, subject)?;
        let (mut tx, _) = self.write().await?;
        let existing: Option<User> =
            sqlx::query_as("SELECT id, name FROM users WHERE oidc_issuer = ? AND oidc_subject = ?")
                .bind(issuer)
                .bind(subject)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(user) = existing {
            return Ok(user);
        }
        let base = user_name_from(preferred_name);
        let mut name = base.clone();
        let mut n = 1;
        loop {
            let taken: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE name = ?")
                .bind(&name)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_none() {
                break;
            }
            n += 1;
            if n > 10_000 {
                return Err(DbError::Exists(format!(
                    "too many users are named like {base:?}; an administrator should add this user with `warren-coord user add` and `user link-oidc`"
                )));
            }
            name = numbered_name(&base, n);
        }
        names::validate("user", &name)?;
        let id = new_id();
        sqlx::query(
            "INSERT INTO users (id, name, created_at, oidc_issuer, oidc_subject) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&name)
        .bind(now())
        .bind(issuer)
        .bind(subject)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(User { id, name })
    }

    /// Binds the existing user `user` (a name) to `(issuer, subject)`,
    /// replacing any earlier binding of that user. `Exists` if another user
    /// holds the pair.
    pub async fn link_oidc(&self, user: &str, issuer: &str, subject: &str) -> Result<(), DbError> {
        check_oidc_pair(issuer, subject)?;
        let (mut tx, _) = self.write().await?;
        let user_id = Self::user_id(&mut tx, user).await?;
        let holder: Option<String> = sqlx::query_scalar(
            "SELECT name FROM users WHERE oidc_issuer = ? AND oidc_subject = ? AND id <> ?",
        )
        .bind(issuer)
        .bind(subject)
        .bind(&user_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(other) = holder {
            return Err(DbError::Exists(format!(
                "user {other:?} already signs in as this subject; an identity belongs to one user (remove or relink {other:?} first)"
            )));
        }
        sqlx::query("UPDATE users SET oidc_issuer = ?, oidc_subject = ? WHERE id = ?")
            .bind(issuer)
            .bind(subject)
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a token by its public id (the 16 hex characters after
    /// `wut_`/`wat_`).
    pub async fn revoke_token(&self, id: &str) -> Result<(), DbError> {
        let (mut tx, _) = self.write().await?;
        let done = sqlx::query("DELETE FROM tokens WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(format!(
                "there is no token with id {id:?}; list them with `warren-coord token list --owner USER`"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn add_workspace(&self, owner: &str, name: &str) -> Result<String, DbError> {
        names::validate("workspace", name)?;
        let (mut tx, _) = self.write().await?;
        let owner_id = Self::user_id(&mut tx, owner).await?;
        let id = new_id();
        let done = sqlx::query(
            "INSERT OR IGNORE INTO workspaces (id, owner_id, name, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&owner_id)
        .bind(name)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::Exists(format!(
                "user {owner:?} already has a workspace named {name:?}"
            )));
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Removes a workspace and its agents.
    pub async fn remove_workspace(&self, owner: &str, name: &str) -> Result<(), DbError> {
        let (mut tx, _) = self.write().await?;
        let owner_id = Self::user_id(&mut tx, owner).await?;
        let id = Self::workspace_id(&mut tx, owner, &owner_id, name).await?;
        sqlx::query("DELETE FROM workspaces WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_workspaces(&self, owner: &str) -> Result<Vec<String>, DbError> {
        let mut tx = self.pool.begin().await?;
        let owner_id = Self::user_id(&mut tx, owner).await?;
        let list =
            sqlx::query_scalar("SELECT name FROM workspaces WHERE owner_id = ? ORDER BY name")
                .bind(owner_id)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(list)
    }

    /// Adds an agent. Without `peer` it gets a token (returned, to show
    /// once); with `peer` (a WireGuard key and endpoints) it is a static peer
    /// that never connects and has no token.
    pub async fn add_agent(
        &self,
        owner: &str,
        workspace: &str,
        name: &str,
        peer: Option<(&str, &[SocketAddr])>,
    ) -> Result<(String, Option<NewToken>), DbError> {
        names::validate("agent", name)?;
        if let Some((key, _)) = peer {
            validate_public_key(key)?;
        }
        let (mut tx, _) = self.write().await?;
        let owner_id = Self::user_id(&mut tx, owner).await?;
        let ws_id = Self::workspace_id(&mut tx, owner, &owner_id, workspace).await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM agents WHERE workspace_id = ? AND name = ?")
                .bind(&ws_id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            return Err(DbError::Exists(format!(
                "workspace {workspace:?} of {owner:?} already has an agent named {name:?}; remove it first with `warren-coord agent rm --owner {owner} --workspace {workspace} {name}` to get a new token"
            )));
        }
        if let Some((key, _)) = peer {
            key_unused(&mut tx, key, Holder::Agent("")).await?;
        }
        let index = Self::allocate(&mut tx, 1).await?;
        let id = new_id();
        sqlx::query(
            "INSERT INTO agents (id, workspace_id, name, address_index, public_key, endpoints, static, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&ws_id)
        .bind(name)
        .bind(index)
        .bind(peer.map(|(k, _)| k))
        .bind(endpoints_json(peer.map(|(_, e)| e).unwrap_or(&[])))
        .bind(peer.is_some())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let token = if peer.is_none() {
            let t = token::generate(TokenKind::Agent);
            insert_token(&mut tx, &t, "agent", &owner_id, Some(&id)).await?;
            Some(t)
        } else {
            None
        };
        tx.commit().await?;
        Ok((id, token))
    }

    /// Removes an agent and its tokens.
    pub async fn remove_agent(
        &self,
        owner: &str,
        workspace: &str,
        name: &str,
    ) -> Result<(), DbError> {
        let (mut tx, _) = self.write().await?;
        let owner_id = Self::user_id(&mut tx, owner).await?;
        let ws_id = Self::workspace_id(&mut tx, owner, &owner_id, workspace).await?;
        let done = sqlx::query("DELETE FROM agents WHERE workspace_id = ? AND name = ?")
            .bind(&ws_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(format!(
                "workspace {workspace:?} of {owner:?} has no agent named {name:?}"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_agents(&self, owner: &str, workspace: &str) -> Result<Vec<String>, DbError> {
        let mut tx = self.pool.begin().await?;
        let owner_id = Self::user_id(&mut tx, owner).await?;
        let ws_id = Self::workspace_id(&mut tx, owner, &owner_id, workspace).await?;
        let list =
            sqlx::query_scalar("SELECT name FROM agents WHERE workspace_id = ? ORDER BY seq")
                .bind(ws_id)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(list)
    }

    /// Bulk-creates workspaces `ws-00000`.. with agents `a0`, `a1`.. for a
    /// benchmark, in one transaction, creating the owner if missing.
    /// Existing workspaces and agents of the same names are kept as they are.
    pub async fn seed(
        &self,
        owner: &str,
        workspaces: u32,
        agents_per_workspace: u32,
    ) -> Result<(), DbError> {
        names::validate("user", owner)?;
        if workspaces > 100_000 {
            return Err(DbError::Invalid(
                "seed creates at most 100000 workspaces at a time".into(),
            ));
        }
        let (mut tx, _) = self.write().await?;
        sqlx::query("INSERT OR IGNORE INTO users (id, name, created_at) VALUES (?, ?, ?)")
            .bind(new_id())
            .bind(owner)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        let owner_id = Self::user_id(&mut tx, owner).await?;
        let total = i64::from(workspaces) * i64::from(agents_per_workspace);
        let mut next = Self::allocate(&mut tx, total).await?;
        let created = now();
        for w in 0..workspaces {
            let ws_name = format!("ws-{w:05}");
            sqlx::query(
                "INSERT OR IGNORE INTO workspaces (id, owner_id, name, created_at) VALUES (?, ?, ?, ?)",
            )
            .bind(new_id())
            .bind(&owner_id)
            .bind(&ws_name)
            .bind(created)
            .execute(&mut *tx)
            .await?;
            let ws_id: String =
                sqlx::query_scalar("SELECT id FROM workspaces WHERE owner_id = ? AND name = ?")
                    .bind(&owner_id)
                    .bind(&ws_name)
                    .fetch_one(&mut *tx)
                    .await?;
            for a in 0..agents_per_workspace {
                sqlx::query(
                    "INSERT OR IGNORE INTO agents (id, workspace_id, name, address_index, created_at) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(new_id())
                .bind(&ws_id)
                .bind(format!("a{a}"))
                .bind(next)
                .bind(created)
                .execute(&mut *tx)
                .await?;
                next += 1;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a client device (keyed by user and WireGuard key), allocating
    /// its addresses the first time. Returns the device and the revision of
    /// this write.
    pub async fn register_device(
        &self,
        user_id: &str,
        public_key: &str,
        endpoints: &[SocketAddr],
        hostname: Option<&str>,
    ) -> Result<(Device, i64), DbError> {
        let (mut tx, revision) = self.write().await?;
        key_unused(&mut tx, public_key, Holder::Device { user_id }).await?;
        let existing: Option<(String, i64)> = sqlx::query_as(
            "SELECT id, address_index FROM devices WHERE user_id = ? AND public_key = ?",
        )
        .bind(user_id)
        .bind(public_key)
        .fetch_optional(&mut *tx)
        .await?;
        let device = match existing {
            Some((id, address_index)) => {
                sqlx::query(
                    "UPDATE devices SET endpoints = ?, hostname = ?, last_seen = ? WHERE id = ?",
                )
                .bind(endpoints_json(endpoints))
                .bind(hostname)
                .bind(now())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                Device { id, address_index }
            }
            None => {
                let address_index = Self::allocate(&mut tx, 1).await?;
                let id = new_id();
                sqlx::query(
                    "INSERT INTO devices (id, user_id, public_key, address_index, endpoints, hostname, created_at, last_seen) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&id)
                .bind(user_id)
                .bind(public_key)
                .bind(address_index)
                .bind(endpoints_json(endpoints))
                .bind(hostname)
                .bind(now())
                .bind(now())
                .execute(&mut *tx)
                .await?;
                Device { id, address_index }
            }
        };
        tx.commit().await?;
        Ok((device, revision))
    }

    pub async fn set_device_endpoints(
        &self,
        device_id: &str,
        endpoints: &[SocketAddr],
    ) -> Result<i64, DbError> {
        let (mut tx, revision) = self.write().await?;
        sqlx::query("UPDATE devices SET endpoints = ?, last_seen = ? WHERE id = ?")
            .bind(endpoints_json(endpoints))
            .bind(now())
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revision)
    }

    /// Stores a connecting agent's key and endpoints. `NotFound` if the
    /// agent was removed meanwhile.
    pub async fn register_agent(
        &self,
        agent_id: &str,
        public_key: Option<&str>,
        endpoints: &[SocketAddr],
    ) -> Result<i64, DbError> {
        let (mut tx, revision) = self.write().await?;
        if let Some(key) = public_key {
            key_unused(&mut tx, key, Holder::Agent(agent_id)).await?;
        }
        let done = sqlx::query(
            "UPDATE agents SET public_key = COALESCE(?, public_key), endpoints = ? WHERE id = ?",
        )
        .bind(public_key)
        .bind(endpoints_json(endpoints))
        .bind(agent_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(
                "this agent was removed from the coordinator; add it again with `warren-coord agent add` and use the new token".into(),
            ));
        }
        tx.commit().await?;
        Ok(revision)
    }
}

/// Who is registering a key, so that its own earlier registration of the
/// same key does not count as a conflict.
#[derive(Clone, Copy)]
enum Holder<'a> {
    /// An agent by id (`""` for one being added).
    Agent(&'a str),
    /// A device of this user: a user's device is keyed by (user, key), so the
    /// same user registering the same key is the same device.
    Device { user_id: &'a str },
}

/// `KeyInUse` if another agent or device holds `key`. Peers are keyed by
/// WireGuard key, so a second holder would shadow the first.
async fn key_unused(
    tx: &mut Transaction<'static, Sqlite>,
    key: &str,
    holder: Holder<'_>,
) -> Result<(), DbError> {
    let (agent_id, user_id) = match holder {
        Holder::Agent(id) => (id, None),
        Holder::Device { user_id } => ("", Some(user_id)),
    };
    let taken: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM agents WHERE public_key = ?1 AND id <> ?2 \
         UNION ALL SELECT 1 FROM devices WHERE public_key = ?1 AND (?3 IS NULL OR user_id <> ?3) \
         LIMIT 1",
    )
    .bind(key)
    .bind(agent_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?;
    match taken {
        Some(_) => Err(DbError::KeyInUse),
        None => Ok(()),
    }
}

async fn insert_token(
    tx: &mut Transaction<'static, Sqlite>,
    t: &NewToken,
    kind: &str,
    user_id: &str,
    agent_id: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO tokens (id, kind, user_id, agent_id, salt, hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&t.id)
    .bind(kind)
    .bind(user_id)
    .bind(agent_id)
    .bind(&t.salt)
    .bind(&t.hash)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An issuer and subject must both be given; they are compared exactly.
fn check_oidc_pair(issuer: &str, subject: &str) -> Result<(), DbError> {
    if issuer.is_empty() || subject.is_empty() {
        return Err(DbError::Invalid(
            "an OpenID Connect identity needs both an issuer URL and a subject; give both".into(),
        ));
    }
    Ok(())
}

fn meta_from_row(row: MetaRow) -> Result<Meta, DbError> {
    let ipv6_prefix = Ula48::parse(&row.ipv6_prefix).ok_or_else(|| {
        DbError::Invalid(format!(
            "the database's IPv6 prefix {:?} is not a ULA /48; the meta table was edited by hand",
            row.ipv6_prefix
        ))
    })?;
    Ok(Meta {
        revision: row.revision,
        ipv6_prefix,
        suffix: row.suffix,
    })
}

/// Checks that `key` is a WireGuard public key: 32 bytes in standard base64.
pub fn validate_public_key(key: &str) -> Result<(), DbError> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    if key.len() != warren_proto::limits::PUBLIC_KEY_BASE64_LEN {
        return Err(DbError::Invalid(
            "the public key is not a WireGuard key (32 bytes in base64, like the output of `wg pubkey`)".into(),
        ));
    }
    match STANDARD.decode(key) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        _ => Err(DbError::Invalid(
            "the public key is not a WireGuard key (32 bytes in base64, like the output of `wg pubkey`)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).await.unwrap();
        (dir, db)
    }

    /// The database and SQLite's -wal and -shm files beside it are the
    /// coordinator user's alone, whatever the umask.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.db");
        let db = Db::open(&path).await.unwrap();
        db.add_user("alice").await.unwrap();
        let mut seen = 0;
        for name in ["private.db", "private.db-wal", "private.db-shm"] {
            let file = dir.path().join(name);
            if let Ok(meta) = std::fs::metadata(&file) {
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
                seen += 1;
            }
        }
        assert!(seen >= 2, "the database and its WAL exist");
        db.close().await;
        // An existing database opens as it is.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let again = Db::open(&path).await.unwrap();
        assert_eq!(again.list_users().await.unwrap(), ["alice"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[tokio::test]
    async fn creates_file_with_a_stable_random_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let first = Db::open(&path).await.unwrap().meta().await.unwrap();
        assert!(path.exists());
        assert_eq!(first.suffix, None);
        let again = Db::open(&path).await.unwrap().meta().await.unwrap();
        assert_eq!(first.ipv6_prefix, again.ipv6_prefix);
    }

    #[tokio::test]
    async fn every_write_bumps_the_revision() {
        let (_d, db) = db().await;
        let r0 = db.revision().await.unwrap();
        db.add_user("alice").await.unwrap();
        let r1 = db.revision().await.unwrap();
        assert_eq!(r1, r0 + 1);
        assert!(db.add_user("alice").await.is_err());
        // A failed write rolls back, bump included.
        assert_eq!(db.revision().await.unwrap(), r1);
        db.add_workspace("alice", "api").await.unwrap();
        assert_eq!(db.revision().await.unwrap(), r1 + 1);
    }

    #[tokio::test]
    async fn tokens_verify_only_when_right() {
        let (_d, db) = db().await;
        db.add_user("alice").await.unwrap();
        let t = db.create_user_token("alice").await.unwrap();
        let p = db.authenticate(t.token.expose()).await.unwrap().unwrap();
        assert_eq!((p.kind, p.user.as_str()), (TokenKind::User, "alice"));
        assert_eq!(p.token_id, t.id);
        assert_eq!(p.agent_id, None);

        let other = token::generate(TokenKind::User);
        let wrong_secret = format!("{}{}", &t.token.expose()[..21], &other.token.expose()[21..]);
        let kind_swapped = t.token.expose().replacen("wut_", "wat_", 1);
        for bad in [
            wrong_secret.as_str(),
            other.token.expose(),
            "wut_x",
            "",
            kind_swapped.as_str(),
        ] {
            assert_eq!(db.authenticate(bad).await.unwrap(), None, "{bad}");
        }

        db.revoke_token(&t.id).await.unwrap();
        assert_eq!(db.authenticate(t.token.expose()).await.unwrap(), None);
        assert!(matches!(
            db.revoke_token(&t.id).await,
            Err(DbError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn addresses_come_from_one_persistent_counter() {
        let (_d, db) = db().await;
        db.add_user("alice").await.unwrap();
        db.add_workspace("alice", "api").await.unwrap();
        let (a1, t1) = db.add_agent("alice", "api", "main", None).await.unwrap();
        let (a2, _) = db.add_agent("alice", "api", "aux", None).await.unwrap();
        let uid = db
            .authenticate(t1.as_ref().unwrap().token.expose())
            .await
            .unwrap()
            .unwrap()
            .user_id;
        let (dev, _) = db
            .register_device(&uid, "key-1", &[], Some("laptop"))
            .await
            .unwrap();
        let (same, _) = db.register_device(&uid, "key-1", &[], None).await.unwrap();
        assert_eq!(dev, same, "a known key keeps its device and address");
        let (dev2, _) = db.register_device(&uid, "key-2", &[], None).await.unwrap();
        let rows = db.load().await.unwrap();
        let index = |id: &str| {
            rows.agents
                .iter()
                .find(|a| a.id == id)
                .unwrap()
                .address_index
        };
        assert_eq!(
            (
                index(&a1),
                index(&a2),
                dev.address_index,
                dev2.address_index
            ),
            (1, 2, 3, 4)
        );

        // A removed and re-added agent is a new agent: new id, new address,
        // and its old token no longer works.
        db.remove_agent("alice", "api", "main").await.unwrap();
        assert_eq!(
            db.authenticate(t1.unwrap().token.expose()).await.unwrap(),
            None
        );
        let (a1b, t1b) = db.add_agent("alice", "api", "main", None).await.unwrap();
        assert_ne!(a1b, a1);
        let rows = db.load().await.unwrap();
        assert_eq!(
            rows.agents
                .iter()
                .find(|a| a.id == a1b)
                .unwrap()
                .address_index,
            5
        );
        let p = db
            .authenticate(t1b.unwrap().token.expose())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((p.kind, p.agent_id), (TokenKind::Agent, Some(a1b)));
    }

    #[tokio::test]
    async fn static_peers_have_no_token_and_keep_their_key() {
        let (_d, db) = db().await;
        db.add_user("alice").await.unwrap();
        db.add_workspace("alice", "db").await.unwrap();
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let ep: Vec<SocketAddr> = vec!["127.0.0.1:51820".parse().unwrap()];
        let (id, token) = db
            .add_agent("alice", "db", "wg", Some((key, &ep)))
            .await
            .unwrap();
        assert!(token.is_none());
        let rows = db.load().await.unwrap();
        let a = rows.agents.iter().find(|a| a.id == id).unwrap();
        assert!(a.is_static);
        assert_eq!(a.public_key.as_deref(), Some(key));
        assert_eq!(parse_endpoints(&a.endpoints), ep);
        assert!(rows.tokens.is_empty());
        assert!(db
            .add_agent("alice", "db", "bad", Some(("short", &ep)))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_key_belongs_to_one_agent_or_device() {
        let (_d, db) = db().await;
        db.add_user("alice").await.unwrap();
        db.add_user("bob").await.unwrap();
        db.add_workspace("alice", "api").await.unwrap();
        let (a1, _) = db.add_agent("alice", "api", "main", None).await.unwrap();
        let (a2, _) = db.add_agent("alice", "api", "aux", None).await.unwrap();
        let alice = db.load().await.unwrap().users;
        let uid = |n: &str| alice.iter().find(|u| u.name == n).unwrap().id.clone();
        let (alice_id, bob_id) = (uid("alice"), uid("bob"));

        // The same agent re-registering its own key is fine, again and again.
        db.register_agent(&a1, Some("key-a1"), &[]).await.unwrap();
        db.register_agent(&a1, Some("key-a1"), &[]).await.unwrap();
        // A sibling taking it is refused, and nothing of its write is kept.
        let before = db.revision().await.unwrap();
        assert!(matches!(
            db.register_agent(&a2, Some("key-a1"), &[]).await,
            Err(DbError::KeyInUse)
        ));
        assert_eq!(db.revision().await.unwrap(), before);
        // Devices can't take an agent's key, nor another user's device key.
        assert!(matches!(
            db.register_device(&bob_id, "key-a1", &[], None).await,
            Err(DbError::KeyInUse)
        ));
        let (dev, _) = db
            .register_device(&alice_id, "key-d", &[], None)
            .await
            .unwrap();
        let (again, _) = db
            .register_device(&alice_id, "key-d", &[], None)
            .await
            .unwrap();
        assert_eq!(dev, again, "the same device re-registering keeps working");
        assert!(matches!(
            db.register_device(&bob_id, "key-d", &[], None).await,
            Err(DbError::KeyInUse)
        ));
        assert!(matches!(
            db.register_agent(&a2, Some("key-d"), &[]).await,
            Err(DbError::KeyInUse)
        ));
        // An agent that moves to a new key frees the old one.
        db.register_agent(&a1, Some("key-a1b"), &[]).await.unwrap();
        db.register_agent(&a2, Some("key-a1"), &[]).await.unwrap();
        // Static peers are checked too.
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        db.register_agent(&a1, Some(key), &[]).await.unwrap();
        assert!(matches!(
            db.add_agent("alice", "api", "wg", Some((key, &[]))).await,
            Err(DbError::KeyInUse)
        ));
    }

    #[tokio::test]
    async fn seed_creates_everything_in_one_go() {
        let (_d, db) = db().await;
        let before = db.revision().await.unwrap();
        db.seed("bench", 50, 3).await.unwrap();
        assert_eq!(db.revision().await.unwrap(), before + 1);
        let rows = db.load().await.unwrap();
        assert_eq!(rows.workspaces.len(), 50);
        assert_eq!(rows.agents.len(), 150);
        assert_eq!(db.list_workspaces("bench").await.unwrap()[0], "ws-00000");
        assert_eq!(
            db.list_agents("bench", "ws-00049").await.unwrap(),
            vec!["a0", "a1", "a2"]
        );
        // Seeding again adds nothing new but does not fail.
        db.seed("bench", 50, 3).await.unwrap();
        assert_eq!(db.load().await.unwrap().agents.len(), 150);
    }

    /// A database written by the version before per-device tokens (schema
    /// 2) opens, migrates, and keeps its users and working tokens.
    #[tokio::test]
    async fn a_version_2_database_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .unwrap();
        let old = sqlx::migrate::Migrator {
            migrations: MIGRATOR
                .iter()
                .filter(|m| m.version <= 2)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        old.run(&pool).await.unwrap();
        let t = token::generate(TokenKind::User);
        sqlx::query("INSERT INTO meta (id, ipv6_prefix) VALUES (1, 'fd00:1:2')")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO users (id, name, created_at) VALUES ('u1', 'alice', 100)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO tokens (id, kind, user_id, salt, hash, created_at) VALUES (?, 'user', 'u1', ?, ?, 200)")
            .bind(&t.id)
            .bind(&t.salt)
            .bind(&t.hash)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let db = Db::open(&path).await.unwrap();
        let p = db.authenticate(t.token.expose()).await.unwrap().unwrap();
        assert_eq!(p.user, "alice");
        let list = db.list_tokens_all(None).await.unwrap();
        assert_eq!(
            list,
            vec![TokenInfo {
                id: t.id.clone(),
                owner: "alice".into(),
                kind: "user".into(),
                device_name: None,
                origin: "admin".into(),
                created_at: 200,
                last_used_at: None,
            }]
        );
        assert_eq!(db.user_by_oidc("https://idp", "s").await.unwrap(), None);
        db.link_oidc("alice", "https://idp", "s").await.unwrap();
        assert_eq!(
            db.user_by_oidc("https://idp", "s")
                .await
                .unwrap()
                .unwrap()
                .name,
            "alice"
        );
    }

    #[tokio::test]
    async fn device_tokens_are_named_listed_and_work() {
        let (_d, db) = db().await;
        let alice_id = db.add_user("alice").await.unwrap();
        db.add_user("bob").await.unwrap();
        let admin = db.create_user_token("bob").await.unwrap();
        // By id and by name.
        let (secret, id) = db
            .create_device_token(&alice_id, "  alice-laptop (Linux) ", TokenOrigin::Browser)
            .await
            .unwrap();
        let (_, id2) = db
            .create_device_token("alice", "phone", TokenOrigin::Admin)
            .await
            .unwrap();
        let p = db.authenticate(secret.expose()).await.unwrap().unwrap();
        assert_eq!(
            (p.user.as_str(), p.token_id.as_str()),
            ("alice", id.as_str())
        );

        let mine = db.list_tokens_all(Some("alice")).await.unwrap();
        assert_eq!(mine.len(), 2);
        assert_eq!(
            mine.iter()
                .find(|t| t.id == id)
                .unwrap()
                .device_name
                .as_deref(),
            Some("alice-laptop (Linux)")
        );
        assert_eq!(mine.iter().find(|t| t.id == id).unwrap().origin, "browser");
        assert_eq!(mine.iter().find(|t| t.id == id2).unwrap().origin, "admin");
        let all = db.list_tokens_all(None).await.unwrap();
        assert_eq!(all.len(), 3);
        assert!(all
            .iter()
            .any(|t| t.id == admin.id && t.owner == "bob" && t.device_name.is_none()));
        assert!(matches!(
            db.list_tokens_all(Some("carol")).await,
            Err(DbError::NotFound(_))
        ));

        for bad in ["", "   ", "a\u{7}b", &"x".repeat(65)] {
            assert!(
                matches!(
                    db.create_device_token("alice", bad, TokenOrigin::Browser)
                        .await,
                    Err(DbError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        // 64 characters, not bytes.
        db.create_device_token("alice", &"é".repeat(64), TokenOrigin::Browser)
            .await
            .unwrap();
        assert!(matches!(
            db.create_device_token("nobody", "x", TokenOrigin::Browser)
                .await,
            Err(DbError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn users_revoke_only_their_own_user_tokens() {
        let (_d, db) = db().await;
        let alice = db.add_user("alice").await.unwrap();
        let bob = db.add_user("bob").await.unwrap();
        db.add_workspace("alice", "api").await.unwrap();
        let (_, agent) = db.add_agent("alice", "api", "main", None).await.unwrap();
        let agent_id = agent.unwrap().id;
        let (_, a) = db
            .create_device_token("alice", "a", TokenOrigin::Browser)
            .await
            .unwrap();
        let (_, b) = db
            .create_device_token("bob", "b", TokenOrigin::Browser)
            .await
            .unwrap();

        let own = db.list_own_tokens(&alice).await.unwrap();
        assert_eq!(
            own.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            vec![a.as_str()]
        );

        // Someone else's token, an agent token and a made-up id all read as
        // "not found", with the same message.
        let mut messages = Vec::new();
        for id in [b.as_str(), agent_id.as_str(), "0123456789abcdef"] {
            match db.revoke_own_token(&alice, id).await {
                Err(DbError::NotFound(m)) => messages.push(m.replace(id, "ID")),
                other => panic!("{id}: {other:?}"),
            }
        }
        assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
        assert_eq!(db.list_own_tokens(&bob).await.unwrap().len(), 1);
        db.revoke_own_token(&alice, &a).await.unwrap();
        assert!(db.list_own_tokens(&alice).await.unwrap().is_empty());
        assert!(matches!(
            db.revoke_own_token(&alice, &a).await,
            Err(DbError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn touching_a_token_is_throttled_to_once_a_minute() {
        let (_d, db) = db().await;
        db.add_user("alice").await.unwrap();
        let (_, id) = db
            .create_device_token("alice", "d", TokenOrigin::Browser)
            .await
            .unwrap();
        let last = |db: Db| async move {
            db.list_tokens_all(Some("alice")).await.unwrap()[0].last_used_at
        };
        assert_eq!(last(db.clone()).await, None);
        let before = db.revision().await.unwrap();
        assert!(db.touch_token(&id, 1_000).await.unwrap());
        assert_eq!(last(db.clone()).await, Some(1_000));
        assert!(!db.touch_token(&id, 1_030).await.unwrap());
        assert!(!db.touch_token(&id, 1_059).await.unwrap());
        assert_eq!(last(db.clone()).await, Some(1_000));
        assert!(db.touch_token(&id, 1_060).await.unwrap());
        assert_eq!(last(db.clone()).await, Some(1_060));
        // Another process (its own handle, no memory of the touches) is held
        // to the same minute by the database.
        let other = Db::open(&_d.path().join("t.db")).await.unwrap();
        assert!(!other.touch_token(&id, 1_100).await.unwrap());
        assert!(other.touch_token(&id, 1_120).await.unwrap());
        assert_eq!(last(db.clone()).await, Some(1_120));
        assert!(!db.touch_token("0123456789abcdef", 5_000).await.unwrap());
        // Use is not a change `serve` needs to reload for.
        assert_eq!(db.revision().await.unwrap(), before);
    }

    #[tokio::test]
    async fn an_identity_belongs_to_one_user() {
        let (_d, db) = db().await;
        db.add_user("alice").await.unwrap();
        db.add_user("bob").await.unwrap();
        db.link_oidc("alice", "https://idp", "sub-1").await.unwrap();
        assert!(matches!(
            db.link_oidc("bob", "https://idp", "sub-1").await,
            Err(DbError::Exists(_))
        ));
        // The same subject at another issuer is another identity.
        db.link_oidc("bob", "https://other", "sub-1").await.unwrap();
        // Relinking oneself is fine; the old pair is freed.
        db.link_oidc("alice", "https://idp", "sub-1").await.unwrap();
        db.link_oidc("alice", "https://idp", "sub-2").await.unwrap();
        assert_eq!(db.user_by_oidc("https://idp", "sub-1").await.unwrap(), None);
        // The database itself refuses a duplicate pair.
        assert!(sqlx::query("UPDATE users SET oidc_issuer = 'https://other', oidc_subject = 'sub-1' WHERE name = 'alice'")
            .execute(&db.pool)
            .await
            .is_err());
        assert!(db.link_oidc("alice", "", "x").await.is_err());
        assert!(matches!(
            db.link_oidc("carol", "https://idp", "x").await,
            Err(DbError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn oidc_users_get_unique_valid_names() {
        let (_d, db) = db().await;
        db.add_user("alice").await.unwrap();
        let a2 = db
            .create_oidc_user("https://idp", "s1", "Alice@example.com")
            .await
            .unwrap();
        assert_eq!(a2.name, "alice-2");
        let a3 = db
            .create_oidc_user("https://idp", "s2", "alice")
            .await
            .unwrap();
        assert_eq!(a3.name, "alice-3");
        // The same identity again is the same user, not a new one.
        let again = db
            .create_oidc_user("https://idp", "s1", "whatever")
            .await
            .unwrap();
        assert_eq!(again, a2);
        assert_eq!(
            db.user_by_oidc("https://idp", "s2").await.unwrap(),
            Some(a3)
        );
        let odd = db
            .create_oidc_user("https://idp", "s3", "Zoë  Smith_(ops)")
            .await
            .unwrap();
        assert_eq!(odd.name, "zo-smith-ops");
        let empty = db
            .create_oidc_user("https://idp", "s4", "!!!")
            .await
            .unwrap();
        assert_eq!(empty.name, "user");
        let long = "x".repeat(40);
        let l1 = db
            .create_oidc_user("https://idp", "s5", &long)
            .await
            .unwrap();
        let l2 = db
            .create_oidc_user("https://idp", "s6", &long)
            .await
            .unwrap();
        assert_eq!(l1.name, "x".repeat(32));
        assert_eq!(l2.name, format!("{}-2", "x".repeat(30)));
        for u in [&a2, &odd, &empty, &l1, &l2] {
            names::validate("user", &u.name).unwrap();
        }
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_594_531), "2026-12-06T22:02:11Z");
    }

    #[tokio::test]
    async fn removing_a_user_removes_everything_they_own() {
        let (_d, db) = db().await;
        db.add_user("alice").await.unwrap();
        db.create_user_token("alice").await.unwrap();
        db.add_workspace("alice", "api").await.unwrap();
        db.add_agent("alice", "api", "main", None).await.unwrap();
        db.remove_user("alice").await.unwrap();
        let rows = db.load().await.unwrap();
        assert!(rows.users.is_empty() && rows.workspaces.is_empty());
        assert!(rows.agents.is_empty() && rows.tokens.is_empty());
    }
}
