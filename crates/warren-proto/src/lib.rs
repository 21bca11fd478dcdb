//! Warren's wire types and framing, shared by every binary.
//!
//! This crate does no IO: it defines what travels between the GUI/CLI and the
//! helper ([`ipc`]), between the helper/agent and the coordinator
//! ([`control`]), the shared data model ([`model`]), the desktop app's Rust ↔ web UI messages
//! ([`app`]) and the length-prefixed
//! framing used on the IPC channel ([`frame`]).

pub mod app;
pub mod checks;
pub mod control;
pub mod frame;
pub mod ipc;
pub mod limits;
pub mod model;
pub mod secret;

pub use secret::Secret;
