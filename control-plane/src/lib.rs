//! Reference control plane for Assessment Runtime: enrollment, runtime
//! credentials (a client certificate from the control plane's own CA for
//! mutual TLS, and the Compliance Framework client-credentials token
//! endpoint), configuration per group or per runtime with ETags, heartbeats
//! and idempotent evidence batches, on one SQLite file.
//!
//! The HTTP handlers and the admin commands share one store, [`db::Db`].

#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod ca;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod guard;
pub mod model;
pub mod secrets;
pub mod server;
pub mod tls;

pub use api::{AppState, router};
pub use config::ServerConfig;
pub use db::{Db, Store};
pub use error::{ApiError, StoreError};
pub use server::{serve, serve_tls};
