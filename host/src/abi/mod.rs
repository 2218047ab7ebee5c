//! Every supported version of the plugin ABI behind one face. The host's
//! capabilities implement the latest version; each older version is frozen
//! in its own module that adapts it to the latest (`v0_1_0`), so that a
//! plugin built for an older version runs unchanged and the rest of the host
//! knows one ABI only.
//!
//! Support: an ABI version stays supported at least until 1.0.0 is
//! released and for one minor line after it (see the plugin author guide).

pub mod v0_1_0;

use capability_model::AbiVersion;
use capability_model::abi::split_interface;
use wasmtime::Engine;
use wasmtime::Store;
use wasmtime::component::Component;

use crate::bindings::latest;
use crate::bindings::latest::exports::assessment::plugin::plugin::{
    PluginInfo, RunError, RunSummary,
};
use crate::capabilities::PluginState;

/// A compiled plugin, linked and ready to instantiate, in the version of the
/// ABI it was built for.
#[derive(Clone)]
pub struct PluginPre {
    bindings: Bindings,
    /// Top-level imports of the component (full names).
    pub imports: Vec<String>,
}

#[derive(Clone)]
enum Bindings {
    V0_1(v0_1_0::Pre<PluginState>),
    V0_2(latest::AssessmentPre<PluginState>),
}

/// The ABI version a component exports, from its `plugin` export.
pub fn abi_of(engine: &Engine, component: &Component) -> Result<AbiVersion, String> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let found = exports.iter().find_map(|name| match split_interface(name) {
        Some(("plugin", version)) => Some(version.to_string()),
        _ => None,
    });
    match found {
        None => Err(format!(
            "the component does not export `{}/plugin`; is it an Assessment Runtime plugin?",
            capability_model::ABI_PACKAGE
        )),
        Some(version) => AbiVersion::of(&version).ok_or_else(|| {
            format!(
                "built for plugin ABI {}@{version}, this host supports {} {}; rebuild the plugin with a matching assessment-sdk or upgrade the host",
                capability_model::ABI_PACKAGE,
                capability_model::ABI_PACKAGE,
                AbiVersion::supported_list()
            )
        }),
    }
}

impl PluginPre {
    /// Bind a pre-instantiated component to the ABI version it exports.
    pub fn new(
        engine: &Engine,
        component: &Component,
        pre: wasmtime::component::InstancePre<PluginState>,
    ) -> Result<Self, String> {
        let imports = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let bindings = match abi_of(engine, component)? {
            AbiVersion::V0_1 => Bindings::V0_1(v0_1_0::pre(pre).map_err(|e| format!("{e:#}"))?),
            AbiVersion::V0_2 => {
                Bindings::V0_2(latest::AssessmentPre::new(pre).map_err(|e| format!("{e:#}"))?)
            }
        };
        Ok(PluginPre { bindings, imports })
    }

    /// The ABI version the plugin was built for.
    pub fn abi(&self) -> AbiVersion {
        match self.bindings {
            Bindings::V0_1(_) => AbiVersion::V0_1,
            Bindings::V0_2(_) => AbiVersion::V0_2,
        }
    }

    /// Instantiate and call `describe`.
    pub async fn describe(&self, store: &mut Store<PluginState>) -> wasmtime::Result<PluginInfo> {
        match &self.bindings {
            Bindings::V0_1(pre) => {
                let plugin = pre.instantiate_async(&mut *store).await?;
                let info = plugin
                    .assessment_plugin_plugin()
                    .call_describe(&mut *store)
                    .await?;
                Ok(v0_1_0::plugin_info(info))
            }
            Bindings::V0_2(pre) => {
                let plugin = pre.instantiate_async(&mut *store).await?;
                plugin
                    .assessment_plugin_plugin()
                    .call_describe(&mut *store)
                    .await
            }
        }
    }

    /// Instantiate and call `run`.
    pub async fn run(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Result<RunSummary, RunError>> {
        match &self.bindings {
            Bindings::V0_1(pre) => {
                let plugin = pre.instantiate_async(&mut *store).await?;
                let r = plugin
                    .assessment_plugin_plugin()
                    .call_run(&mut *store)
                    .await?;
                Ok(v0_1_0::run_result(r))
            }
            Bindings::V0_2(pre) => {
                let plugin = pre.instantiate_async(&mut *store).await?;
                plugin
                    .assessment_plugin_plugin()
                    .call_run(&mut *store)
                    .await
            }
        }
    }
}
