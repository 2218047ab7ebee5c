//! End-to-end tests of the HTTP API: the real router served on a loopback
//! port over a temporary SQLite file, driven with reqwest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_auth;
mod compliance_framework;
mod config;
mod enrollment;
mod evidence;
mod harness;
mod heartbeat;
mod hostile_connections;
mod hostile_evidence;
mod metrics;
mod mutual_tls;
mod oscal_export;
mod restart;
mod results;
mod web;
