//! The one wasmtime engine of the process: component model, async, epoch
//! interruption driven by a ticker thread, the instance allocator, and the
//! linker every plugin is instantiated against.
//!
//! Instances come from wasmtime's pooling allocator, sized for the
//! configured number of concurrent jobs: slots for memories, tables,
//! instances and stacks are reserved once, a memory's initial image is
//! mapped copy-on-write, and a finished job's slot is reused, so a job
//! costs no `mmap`/`munmap` of its own. Where the system cannot reserve
//! the pool (e.g. a `ulimit -v`), instances are allocated on demand, with
//! a warning.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::abi::PluginPre;
use crate::capabilities::{
    self, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES, PluginState,
};
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

/// How instances get their memory, tables and stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Allocated when a plugin is instantiated, freed when its job ends.
    OnDemand,
    /// From a pool reserved up front for this many jobs at once.
    Pooling {
        /// Plugin instances alive at the same time at most (jobs in flight,
        /// each running or describing one plugin).
        concurrent: u32,
    },
}

impl Allocation {
    /// The pool for `max_concurrent_jobs` jobs, plus room for a
    /// `describe` or two outside of jobs (`validate`, `plugins fetch`).
    pub fn for_jobs(max_concurrent_jobs: usize) -> Self {
        Allocation::Pooling {
            concurrent: u32::try_from(max_concurrent_jobs.saturating_add(2)).unwrap_or(u32::MAX),
        }
    }
}

/// The pool's limits: every slot is sized for the most a plugin may use
/// under the store limits (`capabilities::MAX_*`), so a plugin refused by
/// the pool would have been refused anyway, and a hostile plugin cannot
/// take more than its own job's share of the pool.
fn pooling(concurrent: u32) -> PoolingAllocationConfig {
    let per = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(concurrent)
        .total_stacks(concurrent)
        .total_core_instances(concurrent.saturating_mul(per(MAX_INSTANCES)))
        .max_core_instances_per_component(per(MAX_INSTANCES))
        .total_memories(concurrent.saturating_mul(per(MAX_MEMORIES)))
        .max_memories_per_component(per(MAX_MEMORIES))
        .max_memories_per_module(per(MAX_MEMORIES))
        .total_tables(concurrent.saturating_mul(per(MAX_TABLES)))
        .max_tables_per_component(per(MAX_TABLES))
        .max_tables_per_module(per(MAX_TABLES))
        .table_elements(MAX_TABLE_ELEMENTS)
        // Interpreters compiled to components (componentize-py, -js) have
        // large instance metadata.
        .max_component_instance_size(8 << 20)
        .max_core_instance_size(8 << 20)
        // A finished job's memory keeps its first pages mapped: the next
        // job of the same plugin reuses them without page faults.
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10);
    pool
}

/// The engine and linker shared by all plugin runs.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
    fingerprint: String,
    allocation: Allocation,
    running: Arc<Running>,
}

/// Calls into plugins in progress: the epoch advances only while there
/// are some, so an idle agent's ticker does not wake a hundred times a
/// second for nothing.
#[derive(Debug, Default)]
struct Running {
    calls: Mutex<usize>,
    started: Condvar,
    /// Epochs advanced so far.
    ticks: std::sync::atomic::AtomicU64,
}

impl Running {
    fn calls(&self) -> std::sync::MutexGuard<'_, usize> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Held while guest code may run in a store of the engine (see
/// [`PluginEngine::running`]).
#[derive(Debug)]
pub struct RunningCall(Arc<Running>);

impl Drop for RunningCall {
    fn drop(&mut self) {
        let mut calls = self.0.calls();
        *calls = calls.saturating_sub(1);
    }
}

/// How long the idle ticker sleeps before it checks that its engine still
/// exists.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// The epoch ticker: while calls are in progress, the epoch advances every
/// [`EPOCH_TICK`] (a call shorter than a tick sees none); otherwise the
/// thread waits for one to start. It ends once the engine is gone.
fn tick_epochs(weak: wasmtime::EngineWeak, running: Arc<Running>) {
    loop {
        {
            let mut calls = running.calls();
            while *calls == 0 {
                if weak.upgrade().is_none() {
                    return;
                }
                calls = running
                    .started
                    .wait_timeout(calls, IDLE_CHECK)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        std::thread::sleep(EPOCH_TICK);
        match weak.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
        running
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn config(allocation: Allocation) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Bounded guest stack: deep recursion traps instead of exhausting
    // the host thread.
    config.max_wasm_stack(1 << 20);
    if let Allocation::Pooling { concurrent } = allocation {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(concurrent)));
    }
    config
}

impl PluginEngine {
    /// An engine allocating instances on demand (for one-off work: tests,
    /// `validate`); see [`PluginEngine::with_allocation`].
    pub fn new() -> Result<Self, EngineError> {
        Self::with_allocation(Allocation::OnDemand)
    }

    /// Create the engine and start its epoch ticker (a thread that ticks
    /// only while plugins run, and stops once the engine is dropped). A pool the system
    /// cannot reserve falls back to allocation on demand, with a warning.
    pub fn with_allocation(allocation: Allocation) -> Result<Self, EngineError> {
        let (engine, allocation) = match Engine::new(&config(allocation)) {
            Ok(engine) => {
                if let Allocation::Pooling { concurrent } = allocation {
                    tracing::debug!(concurrent, "plugin instance pool reserved");
                }
                (engine, allocation)
            }
            Err(e) if allocation != Allocation::OnDemand => {
                tracing::warn!(
                    "cannot reserve the plugin instance pool ({e:#}); allocating instances on demand instead (slower job start; check `ulimit -v` and vm.overcommit settings)"
                );
                let engine = Engine::new(&config(Allocation::OnDemand))
                    .map_err(|e| EngineError::Setup(format!("{e:#}")))?;
                (engine, Allocation::OnDemand)
            }
            Err(e) => return Err(EngineError::Setup(format!("{e:#}"))),
        };

        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker)
            .map_err(|e| EngineError::Setup(format!("{e:#}")))?;

        let running = Arc::new(Running::default());
        let (weak, ticking) = (engine.weak(), running.clone());
        std::thread::Builder::new()
            .name("epoch-ticker".to_string())
            .spawn(move || tick_epochs(weak, ticking))
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
            allocation,
            running,
        })
    }

    /// Mark a call into a plugin as in progress until the returned value
    /// is dropped: deadlines and cooperative yields (epoch ticks) apply
    /// only to stores run under one.
    pub fn running(&self) -> RunningCall {
        let mut calls = self.running.calls();
        *calls += 1;
        if *calls == 1 {
            self.running.started.notify_all();
        }
        RunningCall(self.running.clone())
    }

    /// How this engine allocates instances (after any fallback).
    pub fn allocation(&self) -> Allocation {
        self.allocation
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile a component on a blocking thread (compilation is CPU-bound).
    pub async fn compile(&self, bytes: Vec<u8>) -> Result<Component, EngineError> {
        let engine = self.engine.clone();
        let started = std::time::Instant::now();
        let compiled = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| EngineError::Compile(format!("compilation task failed: {e}")))?
            .map_err(|e| EngineError::Compile(format!("{e:#}")));
        crate::metrics::global().supply_step("compile", compiled.is_ok(), started.elapsed());
        compiled
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn the_epoch_advances_only_while_a_plugin_call_runs() {
        let engine = PluginEngine::new().unwrap();
        let ticks = || engine.running.ticks.load(Ordering::Relaxed);
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticks(), 0, "an idle engine ticked");
        {
            let _call = engine.running();
            let _other = engine.running();
            std::thread::sleep(EPOCH_TICK * 10);
        }
        let during = ticks();
        assert!(during >= 3, "only {during} ticks while calls ran");
        std::thread::sleep(EPOCH_TICK * 10);
        assert!(
            ticks() <= during + 1,
            "{} ticks after the calls ended",
            ticks() - during
        );
    }
}
