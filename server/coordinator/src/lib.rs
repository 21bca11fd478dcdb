//! Warren's reference coordinator, as a library so that its parts are tested
//! directly; the `warren-coord` binary is a thin CLI over it.
//!
//! - [`db`]: the SQLite database (schema in `migrations/`), every query
//! - [`world`]: per-owner views and the diffs between them (pure)
//! - [`hub`]: the task that keeps the world current and publishes views
//! - [`api`]: the HTTP API and the control WebSocket
//! - [`token`], [`names`], [`addr`]: tokens, name rules, address allocation

pub mod addr;
pub mod api;
pub mod db;
pub mod hub;
pub mod names;
pub mod token;
pub mod world;
