//! Test plugin: built against a future version of the plugin ABI (the
//! real WIT with its minor version bumped past the latest, written by
//! `build.rs`) so the tests can prove the host refuses it before
//! instantiation.

wit_bindgen::generate!({ path: "wit", world: "assessment" });

use exports::assessment::plugin::plugin::{Guest, PluginInfo, RunError, RunSummary};

struct FutureAbi;

impl Guest for FutureAbi {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "future-abi".to_string(),
            version: "0.1.0".to_string(),
            description: "Targets an ABI version the host does not support".to_string(),
            checks: Vec::new(),
            config: Vec::new(),
        }
    }

    fn run() -> Result<RunSummary, RunError> {
        Ok(RunSummary { note: None })
    }
}

export!(FutureAbi);
