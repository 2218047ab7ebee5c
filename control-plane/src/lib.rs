//! Reference control plane for Assessment Runtime: enrollment, runtime
//! credentials (Compliance Framework client-credentials token endpoint),
//! per-group configuration with ETags, heartbeats and idempotent evidence
//! batches, on one SQLite file.
//!
//! The HTTP handlers and the admin commands share one store, [`db::Db`].

#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod model;
pub mod secrets;
pub mod server;

pub use api::{AppState, router};
pub use config::ServerConfig;
pub use db::{Db, Store};
pub use error::{ApiError, StoreError};
pub use server::serve;
