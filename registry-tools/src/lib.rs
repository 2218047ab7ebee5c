//! The plugin supply chain: minisign-compatible keys and signatures, the
//! plugin manifest, the component audit, and the release assets (package,
//! publish to GitHub releases). Used by the `plugin-registry` binary (in CI
//! and by hand) and by the host, which verifies with the same code.

pub mod audit;
pub mod github;
pub mod manifest;
pub mod minisign;
#[cfg(feature = "cli")]
pub mod release;
