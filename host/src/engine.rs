//! The one wasmtime engine of the process: component model, async, epoch
//! interruption driven by a ticker thread, and the linker every plugin is
//! instantiated against.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::latest::AssessmentPre;
use crate::capabilities::{self, PluginState};

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

        Ok(PluginEngine {
            engine,
            linker: Arc::new(linker),
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

    /// Resolve the component's imports against the host once, so each run
    /// only instantiates.
    pub fn pre_instantiate(
        &self,
        component: &Component,
    ) -> Result<AssessmentPre<PluginState>, EngineError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| EngineError::Link(format!("{e:#}")))?;
        AssessmentPre::new(pre).map_err(|e| EngineError::Link(format!("{e:#}")))
    }
}
