//! The one wasmtime engine of the process: component model, async, epoch
//! interruption driven by a ticker thread, and the linker every plugin is
//! instantiated against.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::abi::PluginPre;
use crate::capabilities::{self, PluginState};
use crate::plugins::store::PluginStore;

/// How often the epoch advances: the granularity of deadlines and of the
/// cooperative yields of running plugins.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Host-side failures to set up or compile.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Wasmtime refused the engine configuration.
    #[error("cannot create the WebAssembly engine: {0}")]
    Setup(String),
    /// The component failed validation or compilation.
    #[error("cannot compile the component: {0}")]
    Compile(String),
    /// The component's imports do not match what the host links.
    #[error("cannot link the component: {0}")]
    Link(String),
}

/// The engine and linker shared by all plugin runs.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
    fingerprint: String,
}

impl PluginEngine {
    /// Create the engine and start its epoch ticker (a thread that stops
    /// when the last clone of the engine is dropped).
    pub fn new() -> Result<Self, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Bounded guest stack: deep recursion traps instead of exhausting
        // the host thread.
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).map_err(|e| EngineError::Setup(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker)
            .map_err(|e| EngineError::Setup(format!("{e:#}")))?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".to_string())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| EngineError::Setup(format!("cannot start the epoch ticker: {e}")))?;

        // Precompiled artifacts are only valid for the same wasmtime build
        // and settings: the file name carries this fingerprint.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        let fingerprint = format!("{:016x}", hasher.finish());

        Ok(PluginEngine {
            engine,
            linker: Arc::new(linker),
            fingerprint,
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile a component on a blocking thread (compilation is CPU-bound).
    pub async fn compile(&self, bytes: Vec<u8>) -> Result<Component, EngineError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| EngineError::Compile(format!("compilation task failed: {e}")))?
            .map_err(|e| EngineError::Compile(format!("{e:#}")))
    }

    /// Fingerprint of the engine build and settings.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Compile a component (a verified release, or a configured local
    /// file; `sha256` is the digest of `bytes`), or load its precompiled
    /// artifact from the store when the artifact matches the digest
    /// recorded when it was written; a fresh compilation is saved for the next start. An
    /// artifact that does not match is discarded and the component
    /// recompiled, with a warning.
    pub async fn compile_cached(
        &self,
        bytes: Vec<u8>,
        sha256: &str,
        store: &PluginStore,
    ) -> Result<Component, EngineError> {
        match store.compiled(sha256, &self.fingerprint) {
            Ok(None) => {}
            Ok(Some(artifact)) => match load_precompiled(&self.engine, &artifact) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(
                        component = sha256,
                        "discarding an unusable precompiled artifact and recompiling: {e:#}"
                    );
                    store.remove_compiled(sha256, &self.fingerprint);
                }
            },
            Err(e) => {
                tracing::warn!(
                    component = sha256,
                    "refusing a precompiled artifact and recompiling: {e}"
                );
                store.remove_compiled(sha256, &self.fingerprint);
            }
        }
        let component = self.compile(bytes).await?;
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = store.put_compiled(sha256, &self.fingerprint, &artifact) {
                    tracing::warn!("cannot cache the compiled component: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot serialise the compiled component: {e:#}"),
        }
        Ok(component)
    }

    /// Check the precompiled artifact of component `sha256`, if there is
    /// one: its recorded digest, and that wasmtime accepts it for this
    /// engine. `Ok(false)` when there is none.
    pub fn verify_compiled(&self, sha256: &str, store: &PluginStore) -> Result<bool, String> {
        match store.compiled(sha256, &self.fingerprint) {
            Ok(None) => Ok(false),
            Ok(Some(artifact)) => load_precompiled(&self.engine, &artifact)
                .map(|_| true)
                .map_err(|e| format!("precompiled artifact: {e:#}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Resolve the component's imports against the host once, so each run
    /// only instantiates.
    /// The ABI version is checked first, so that a plugin of an unknown
    /// version gets that message rather than a missing import.
    pub fn pre_instantiate(&self, component: &Component) -> Result<PluginPre, EngineError> {
        crate::abi::abi_of(&self.engine, component).map_err(EngineError::Link)?;
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| EngineError::Link(format!("{e:#}")))?;
        PluginPre::new(&self.engine, component, pre).map_err(EngineError::Link)
    }
}

/// Load a precompiled artifact written by [`PluginEngine::compile_cached`].
#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that the bytes are an artifact it produced.
    // They were written only by this host, compiling the component whose
    // digest names them (a release's, verified against its signature, or
    // a configured local file's, computed from the bytes compiled), into a
    // store refused unless private to the
    // agent's user (0700, owned by it), under a name carrying the digest and
    // the engine fingerprint; they were read whole into memory and matched
    // against the SHA-256 recorded when they were written, so no later
    // change of the file reaches this load; wasmtime also checks the
    // artifact's own header against this engine.
    unsafe { Component::deserialize(engine, artifact) }
}
