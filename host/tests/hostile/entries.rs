//! One entry function per parser of untrusted input in the runtime, shared
//! by the property tests (`tests/hostile_input.rs`, on stable, in the normal
//! `cargo test`) and the fuzz targets (`fuzz/runtime/fuzz_targets/*.rs`,
//! cargo-fuzz on nightly), which include this file. Each takes raw bytes,
//! runs the parser as the runtime does, and panics when a property breaks:
//!
//! - the parser returns (no panic, no stack exhaustion);
//! - a remote configuration that is accepted stays within the local
//!   policy and keeps the machine's own settings;
//! - corrupt state files are errors or fall back to the local file.

use std::path::Path;

use assessment_runtime::agent_config::AgentConfig;
use assessment_runtime::control_plane::{ConfigSync, Credentials};

/// Bytes as the runtime reads a file: UTF-8 or refused.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The agent configuration file (TOML), with relative paths taken from `/`.
pub fn agent_config(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = AgentConfig::parse(text, Path::new("agent.toml"), Path::new("/"));
    }
}

/// The local file the remote documents are checked against: a policy that
/// allows reading `/etc` and unsigned local components, nothing else.
pub fn local_config() -> AgentConfig {
    AgentConfig::parse(
        "[runtime]\nstate_dir = \"/s\"\n[policy]\nread = [\"/etc\"]\nremote_path_plugins = true\n",
        Path::new("agent.toml"),
        Path::new("/"),
    )
    .expect("the local configuration is valid")
}

/// A configuration document from the control plane (JSON), within
/// `local`'s policy.
pub fn remote_config_value(document: &serde_json::Value, local: &AgentConfig) {
    if let Ok(config) = AgentConfig::from_remote(document, local) {
        // Whatever passed stays within the policy and the machine's own
        // settings.
        assert_eq!(config.state_dir, local.state_dir, "{document}");
        assert_eq!(config.assessment_root, local.assessment_root, "{document}");
        assert_eq!(config.trusted_keys, local.trusted_keys, "{document}");
        for p in &config.plugins {
            let excess = local.policy.excess("p", &p.grants);
            assert!(
                excess.is_empty(),
                "{document} grants beyond the policy: {excess:?}"
            );
        }
    }
}

/// [`remote_config_value`] on raw bytes, as they arrive.
pub fn remote_config(data: &[u8]) {
    if let Ok(document) = serde_json::from_slice::<serde_json::Value>(data) {
        remote_config_value(&document, &local_config());
    }
}

/// The state directory's files as another process or a full disk may have
/// left them: the credentials and the last good configuration document.
pub fn state_files(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(Credentials::path(dir.path()), data).expect("write the credentials");
    let _ = Credentials::load(dir.path());
    std::fs::write(dir.path().join("config.last-good.json"), data).expect("write the document");
    let local = AgentConfig::parse(
        &format!(
            "[runtime]\nstate_dir = {:?}\n",
            dir.path().display().to_string()
        ),
        Path::new("agent.toml"),
        Path::new("/"),
    )
    .expect("the local configuration is valid");
    // A corrupt last good document falls back to the local file.
    let sync = ConfigSync::new(local);
    let _ = sync.config();
}

/// A control plane that stores whatever it is sent.
struct AcceptAll;

impl assessment_runtime::results::outbox::EvidenceSink for AcceptAll {
    async fn deliver(
        &self,
        _records: &[capability_model::wire::EvidenceRecord],
    ) -> Result<(), assessment_runtime::results::outbox::DeliveryError> {
        Ok(())
    }
}

/// A batch file in the outbox as a crash, a full disk or another process
/// may have left it: delivered when it reads, set aside when it does not,
/// never a crash, and the outbox is empty afterwards either way.
pub fn outbox_batch(data: &[u8]) {
    use assessment_runtime::results::outbox::Outbox;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let outbox = Outbox::open(dir.path(), 1 << 20).expect("open the outbox");
    std::fs::write(dir.path().join("outbox/pending/0-x.json"), data).expect("write the batch");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let report = runtime
        .block_on(outbox.deliver(&AcceptAll))
        .expect("delivery runs");
    assert_eq!(report.delivered + report.rejected, 1, "{report:?}");
    assert_eq!(outbox.depth().expect("the depth").batches, 0);
}
