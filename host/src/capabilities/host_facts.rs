//! `assessment:plugin/host-facts` (grant `host_facts`): the host name, the
//! operating system and the kernel of the assessed system, read from small
//! files under the assessment root.

use std::path::Path;

use cap_std::fs::Dir;
use capability_model::Capability;

use crate::bindings::latest::assessment::plugin::host_facts::{self, Facts};
use crate::bindings::latest::assessment::plugin::types::AccessError;

use super::PluginState;
use super::target::{blocking, fact_file};

impl host_facts::Host for PluginState {
    async fn get(&mut self) -> wasmtime::Result<Result<Facts, AccessError>> {
        if let Err(refusal) = self.target.grants.check_switch(Capability::HostFacts) {
            return Ok(Err(self.refuse("host-facts.get", refusal)));
        }
        let root_is_slash = self.target.root == Path::new("/");
        let dir = match self.target.root_dir.try_clone() {
            Ok(dir) => dir,
            Err(e) => return Ok(Err(AccessError::Io(format!("assessment root: {e}")))),
        };
        Ok(blocking(dir, move |dir| Ok(host_facts(&dir, root_is_slash))).await)
    }
}

fn host_facts(root_dir: &Dir, root_is_slash: bool) -> Facts {
    let os_release = fact_file(root_dir, "etc/os-release")
        .or_else(|| fact_file(root_dir, "usr/lib/os-release"))
        .unwrap_or_default();
    let field = |key: &str| {
        os_release.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_string())
        })
    };
    let hostname = fact_file(root_dir, "etc/hostname")
        .filter(|h| !h.is_empty())
        .or_else(|| {
            root_is_slash
                .then(|| fact_file(root_dir, "proc/sys/kernel/hostname"))
                .flatten()
        })
        .unwrap_or_else(|| "unknown".to_string());
    Facts {
        hostname,
        os: field("PRETTY_NAME")
            .or_else(|| field("NAME"))
            .unwrap_or_else(|| "unknown".to_string()),
        os_id: field("ID").unwrap_or_else(|| "unknown".to_string()),
        os_version: field("VERSION_ID").unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        kernel_release: fact_file(root_dir, "proc/sys/kernel/osrelease").unwrap_or_default(),
    }
}
