//! Reference control plane for Assessment Runtime: enrollment, runtime
//! credentials (a client certificate from the control plane's own CA for
//! mutual TLS, and the Compliance Framework client-credentials token
//! endpoint), configuration per group or per runtime with ETags, heartbeats
//! and idempotent evidence batches, on one SQLite file or on a PostgreSQL
//! database that several replicas share.
//!
//! The HTTP handlers and the admin commands share one store interface,
//! [`db::Backend`], implemented by [`db::Db`] (SQLite) and [`db::PgDb`]
//! (PostgreSQL); [`Store`] runs its calls on the blocking pool.
//!
//! Layering (a module uses only modules below it, so there are no cycles),
//! from the bottom: `error`, `secrets`, `canonical`, `session`, `config`,
//! `model`, `guard`, `metrics`, `ca`, `tls` (types, checks and crypto, no HTTP
//! state; `metrics` holds the Prometheus registry); `db` (the
//! store); `oscal_export` (the stored evidence as OSCAL);
//! `runtime_credentials` (runtimes made by the admin, without
//! enrollment); `relay` (forwarding to an upstream Compliance Framework
//! API, its own queue); `housekeeping` (background work on the store:
//! retention); `state` (what handlers share: [`AppState`], the source
//! address); `auth` (extractors: who is calling); `admin` (the admin
//! routes); `web` (the web view's pages); `api`
//! (the runtime handlers and the router, which merges the admin routes);
//! `server` (listeners, connections); `cli`. A unit test checks it.

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
pub mod housekeeping;
pub mod metrics;
pub mod model;
pub mod oscal_export;
pub mod relay;
pub mod runtime_credentials;
pub mod secrets;
pub mod server;
pub mod session;
pub mod state;
pub mod tls;
pub mod web;

pub use api::router;
pub use config::ServerConfig;
pub use db::{Db, Store};
pub use error::{ApiError, StoreError};
pub use server::{serve, serve_operations, serve_tls};
pub use state::AppState;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The modules from the lowest layer up, as in the crate docs.
    const LAYERS: &[&str] = &[
        "error",
        "secrets",
        "canonical",
        "session",
        "config",
        "model",
        "guard",
        "metrics",
        "ca",
        "tls",
        "db",
        "oscal_export",
        "runtime_credentials",
        "relay",
        "housekeeping",
        "state",
        "auth",
        "admin",
        "web",
        "api",
        "server",
        "cli",
    ];

    fn layer(module: &str) -> usize {
        LAYERS
            .iter()
            .position(|m| *m == module)
            .unwrap_or_else(|| panic!("module {module} is not in LAYERS: give it a layer"))
    }

    /// The source files under `dir`, with the top-level module each belongs to.
    fn sources(dir: &Path, module: Option<&str>, found: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            let module = module.map_or(name, str::to_string);
            if path.is_dir() {
                sources(&path, Some(&module), found);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !matches!(module.as_str(), "lib" | "main")
            {
                found.push((path, module));
            }
        }
    }

    /// The modules named as `crate::name` in code (comments are skipped:
    /// doc links are no dependency).
    fn used_modules(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .flat_map(|line| line.split("crate::").skip(1))
            .map(|rest| {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }

    #[test]
    fn modules_use_only_lower_layers() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            None,
            &mut files,
        );
        assert!(files.len() > LAYERS.len(), "{files:?}");
        for (path, module) in files {
            let text = std::fs::read_to_string(&path).unwrap();
            for used in used_modules(&text) {
                assert!(
                    used == module || layer(used) < layer(&module),
                    "{}: {module} uses {used}, which is not below it (see the crate docs)",
                    path.display()
                );
            }
        }
    }
}
