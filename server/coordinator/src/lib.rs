//! Warren's reference coordinator, as a library so that its parts are tested
//! directly; the `warren-coord` binary is a thin CLI over it.
//!
//! - [`db`]: the SQLite database (schema in `migrations/`), every query
//! - [`world`]: per-owner views and the diffs between them (pure)
//! - [`hub`]: the task that keeps the world current and publishes views
//! - [`api`]: the HTTP API and the control WebSocket
//! - [`checks`]: what agents and devices may register (keys, endpoints, sizes)
//! - [`listener`]: the accept loop, with the limits and timers of [`guard`]
//! - [`token`], [`names`], [`addr`]: tokens, name rules, address allocation
//! - [`turn`]: TURN relays and the short-lived credentials handed out
//! - [`oidc`]: browser sign-in through an OpenID Connect identity provider

pub mod addr;
pub mod api;
pub mod db;
pub mod guard;
pub mod hub;
pub mod listener;
pub mod names;
pub mod oidc;
pub mod token;
pub mod turn;
pub mod world;
