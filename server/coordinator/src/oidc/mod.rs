//! Browser sign-in through the deployment's OpenID Connect identity
//! provider (docs/signin.md). The coordinator is an OIDC client of the
//! provider (authorization code with PKCE, discovery at start-up, ID tokens
//! verified against the provider's keys) and hands Warren's own clients a
//! one-time code, exchanged with their PKCE verifier for a per-device token.
//!
//! - [`config`]: the `serve` flags and discovery
//! - [`flow`]: pending sign-ins and one-time codes (in memory, pure)
//! - [`pages`]: the server-rendered pages
//! - [`routes`]: the HTTP handlers

pub mod config;
pub mod flow;
pub mod pages;
pub mod routes;

pub use config::OidcArgs;
pub use routes::{router, Oidc};

use crate::db::Db;
use std::sync::Arc;

/// Discovers the identity provider named by `args`; `None` without
/// `--oidc-issuer` (the sign-in routes then say so).
pub async fn setup(args: &OidcArgs, db: Db) -> anyhow::Result<Option<Arc<Oidc>>> {
    Ok(config::discover(args)
        .await?
        .map(|d| Arc::new(Oidc::new(d, db, args.oidc_auto_create))))
}
