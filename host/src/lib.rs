//! Assessment Runtime: runs compliance and security assessment plugins as
//! sandboxed WebAssembly components.
//!
//! The pieces, one concern each (see `ARCHITECTURE.md`):
//! - [`agent_config`]: the operator's TOML configuration, validated on load;
//! - [`policy`]: what a plugin is granted and the bounds of one run;
//! - [`plugins`]: reading a component, its identity and ABI compatibility;
//! - [`engine`]: the one wasmtime engine, compilation and the epoch ticker;
//! - [`bindings`]: the host side of the WIT plugin ABI;
//! - [`capabilities`]: one module per WIT interface the plugins import;
//! - [`loader`]: a configured plugin prepared once per configuration
//!   generation (verified, compiled, described, validated);
//! - [`executor`]: one job of a prepared plugin, limits and traps turned
//!   into job errors;
//! - [`scheduler`]: configured plugins to jobs: one cycle, or on schedules;
//! - [`control_plane`]: enrollment, authentication, configuration sync,
//!   heartbeats and result delivery;
//! - [`daemon`]: the long-running loop tying them together;
//! - [`service`]: the daemon as a service: systemd notifications and the
//!   metrics and health listener;
//! - [`metrics`]: the Prometheus metrics every part records into;
//! - [`logging`]: the logger, its JSON fields and its level;
//! - [`network`]: trust roots and proxies of the HTTP clients;
//! - [`guest_text`]: plugin-chosen text escaped and bounded before it
//!   leaves the sandbox;
//! - [`report`]: the results of a cycle as a table or a JSON document;
//! - [`results`]: findings as evidence, and the durable outbox;
//! - [`cli`]: the `assessment-runtime` command line.

pub mod abi;
pub mod agent_config;
pub mod bindings;
pub mod capabilities;
pub mod cli;
pub mod control_plane;
pub mod daemon;
pub mod durable;
pub mod engine;
pub mod executor;
pub mod guest_text;
pub mod loader;
pub mod logging;
pub mod metrics;
pub mod network;
pub mod plugins;
pub mod policy;
pub mod report;
pub mod results;
pub mod scheduler;
pub mod service;
