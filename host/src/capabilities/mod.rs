//! What a plugin instance can reach: one module per WIT interface, each with
//! its own context, all held by [`PluginState`], the data of one store.
//!
//! WASI is linked because Rust's standard library for `wasm32-wasip2`
//! imports it, but with nothing reachable: no preopened directory, no
//! environment, no arguments, no sockets or name lookups, an empty stdin,
//! and stdout/stderr routed to the plugin's bounded log.

pub mod config;
pub mod environment;
pub mod filesystem;
pub mod host_facts;
pub mod log;
pub mod packages;
pub mod process;
pub mod provenance;
pub mod results;
pub mod target;

use std::fmt;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::latest::{Assessment, assessment::plugin::types};

/// Who is running: attached to every log line and denial.
#[derive(Debug, Clone)]
pub struct JobLabels {
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// Component digest.
    pub digest: String,
    /// This run.
    pub job_id: String,
}

impl fmt::Display for JobLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} job {}", self.plugin, self.version, self.job_id)
    }
}

/// The data of one plugin instance's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// `assessment:plugin/config`.
    pub config: config::ConfigCtx,
    /// The assessed system as this plugin may see it: the grants of
    /// `filesystem`, `process`, `environment` and `host-facts`, and the
    /// denials they recorded.
    pub target: target::TargetCtx,
    /// `assessment:plugin/results`.
    pub results: results::ResultsCtx,
    /// `assessment:plugin/log`, plus stdout and stderr.
    pub log: Arc<log::LogSink>,
    /// What the host served the plugin in this job.
    pub provenance: provenance::ProvenanceLog,
    /// Linear-memory accounting.
    pub limiter: MemoryLimiter,
}

impl PluginState {
    /// A state for one instance. stdout and stderr go to `log`.
    pub fn new(
        config: config::ConfigCtx,
        target: target::TargetCtx,
        results: results::ResultsCtx,
        log: Arc<log::LogSink>,
        memory_bytes: u64,
    ) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(log::PluginOutput::new(log.clone(), log::Stream::Stdout))
            .stderr(log::PluginOutput::new(log.clone(), log::Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        PluginState {
            wasi,
            table: ResourceTable::new(),
            config,
            target,
            results,
            log,
            provenance: provenance::ProvenanceLog::default(),
            limiter: MemoryLimiter::new(memory_bytes),
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for PluginState {}

/// Link WASI (with nothing reachable) and every supported version of the
/// plugin ABI (older versions through their adapters in `crate::abi`).
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    Assessment::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |state| state)?;
    crate::abi::v0_1_0::add_to_linker(linker)
}

/// Caps the linear memory of all memories of an instance together and
/// records that the cap was hit, so the trap can be reported as such.
#[derive(Debug)]
pub struct MemoryLimiter {
    max_bytes: usize,
    used_bytes: usize,
    /// The instance tried to grow past the cap.
    pub hit: bool,
}

/// Elements one table may have (function tables of real plugins hold a few
/// thousand; this stops a plugin from exhausting host memory through
/// tables).
pub const MAX_TABLE_ELEMENTS: usize = 1 << 16;
/// Core instances, tables and memories one plugin's store may create
/// (wasmtime allows 10 000 of each by default). A Rust component with its
/// WASI adapter uses a handful of each.
pub const MAX_INSTANCES: usize = 64;
/// See [`MAX_INSTANCES`].
pub const MAX_TABLES: usize = 64;
/// See [`MAX_INSTANCES`].
pub const MAX_MEMORIES: usize = 8;

impl MemoryLimiter {
    /// A limiter for `max_bytes` of linear memory.
    pub fn new(max_bytes: u64) -> Self {
        MemoryLimiter {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            used_bytes: 0,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .used_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.max_bytes {
            self.hit = true;
            wasmtime::bail!(
                "memory limit reached: growing linear memory to {} MiB exceeds the {} MiB limit",
                total >> 20,
                self.max_bytes >> 20
            );
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Refused growth is a -1 to `table.grow`, or a failed instantiation
        // for an initial size past the cap: the plugin cannot go on.
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_capped_across_memories() {
        let mut l = MemoryLimiter::new(10 << 20);
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        assert!(
            l.memory_growing(0, 4 << 20, None).unwrap(),
            "a second memory"
        );
        assert!(
            l.memory_growing(4 << 20, 6 << 20, None).unwrap(),
            "10 MiB in total is the limit"
        );
        assert!(
            l.memory_growing(6 << 20, 7 << 20, None).is_err(),
            "11 MiB in total"
        );
        assert!(l.hit);
    }

    /// A component that instantiates `instances` copies of `module`.
    fn component(module: &wasm_encoder::Module, instances: u32) -> Vec<u8> {
        let mut component = wasm_encoder::Component::new();
        component.section(&wasm_encoder::ModuleSection(module));
        let mut section = wasm_encoder::InstanceSection::new();
        for _ in 0..instances {
            section.instantiate(0, Vec::<(&str, wasm_encoder::ModuleArg)>::new());
        }
        component.section(&section);
        component.finish()
    }

    /// Compile and instantiate `bytes` in a store limited as a plugin's is.
    async fn instantiate(bytes: &[u8]) -> Result<(), String> {
        let engine = crate::engine::PluginEngine::new().unwrap();
        let component = wasmtime::component::Component::new(engine.engine(), bytes)
            .map_err(|e| format!("compile: {e:#}"))?;
        let mut store = wasmtime::Store::new(engine.engine(), MemoryLimiter::new(64 << 20));
        store.limiter(|l| l);
        store.set_epoch_deadline(1_000_000);
        wasmtime::component::Linker::<MemoryLimiter>::new(engine.engine())
            .instantiate_async(&mut store, &component)
            .await
            .map(|_| ())
            .map_err(|e| format!("instantiate: {e:#}"))
    }

    fn table_module(elements: u64, tables: u32) -> wasm_encoder::Module {
        let mut section = wasm_encoder::TableSection::new();
        for _ in 0..tables {
            section.table(wasm_encoder::TableType {
                element_type: wasm_encoder::RefType::FUNCREF,
                table64: false,
                minimum: elements,
                maximum: None,
                shared: false,
            });
        }
        let mut module = wasm_encoder::Module::new();
        module.section(&section);
        module
    }

    #[tokio::test]
    async fn a_component_creating_more_instances_than_allowed_does_not_instantiate() {
        let empty = wasm_encoder::Module::new();
        instantiate(&component(&empty, 10)).await.unwrap();
        let e = instantiate(&component(&empty, MAX_INSTANCES as u32 + 1))
            .await
            .unwrap_err();
        assert!(e.contains("instance"), "{e}");
    }

    #[tokio::test]
    async fn a_component_with_a_huge_table_or_too_many_tables_does_not_instantiate() {
        instantiate(&component(&table_module(1000, 1), 1))
            .await
            .unwrap();
        let e = instantiate(&component(
            &table_module(MAX_TABLE_ELEMENTS as u64 + 1, 1),
            1,
        ))
        .await
        .unwrap_err();
        assert!(e.contains("table"), "{e}");
        // Each instance brings one table: one more than allowed in total.
        let e = instantiate(&component(&table_module(1, 1), MAX_TABLES as u32 + 1))
            .await
            .unwrap_err();
        assert!(e.contains("table") || e.contains("instance"), "{e}");
    }

    /// A module whose start function grows its one-element table by
    /// `delta` with `table.grow` and traps when the growth is refused.
    fn growing_table_module(delta: i32) -> wasm_encoder::Module {
        use wasm_encoder::{
            BlockType, CodeSection, Function, FunctionSection, HeapType, StartSection, TypeSection,
        };
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut functions = FunctionSection::new();
        functions.function(0);
        let mut body = Function::new([]);
        body.instructions()
            .ref_null(HeapType::FUNC)
            .i32_const(delta)
            .table_grow(0)
            .i32_const(-1)
            .i32_eq()
            .if_(BlockType::Empty)
            .unreachable()
            .end()
            .end();
        let mut code = CodeSection::new();
        code.function(&body);
        // Sections in their required order: type, function, table, start,
        // code.
        let mut module = wasm_encoder::Module::new();
        module.section(&types);
        module.section(&functions);
        let mut table = wasm_encoder::TableSection::new();
        table.table(wasm_encoder::TableType {
            element_type: wasm_encoder::RefType::FUNCREF,
            table64: false,
            minimum: 1,
            maximum: None,
            shared: false,
        });
        module.section(&table);
        module.section(&StartSection { function_index: 0 });
        module.section(&code);
        module
    }

    #[tokio::test]
    async fn table_grow_at_run_time_is_refused_past_the_cap() {
        let within = (MAX_TABLE_ELEMENTS - 1) as i32;
        instantiate(&component(&growing_table_module(within), 1))
            .await
            .unwrap();
        let e = instantiate(&component(&growing_table_module(within + 1), 1))
            .await
            .unwrap_err();
        assert!(
            e.contains("unreachable"),
            "the refused growth returned -1: {e}"
        );
    }

    #[tokio::test]
    async fn a_component_with_too_many_memories_does_not_instantiate() {
        let mut memories = wasm_encoder::MemorySection::new();
        memories.memory(wasm_encoder::MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        let mut module = wasm_encoder::Module::new();
        module.section(&memories);
        instantiate(&component(&module, 2)).await.unwrap();
        let e = instantiate(&component(&module, MAX_MEMORIES as u32 + 1))
            .await
            .unwrap_err();
        assert!(e.contains("memor"), "{e}");
    }

    #[test]
    fn tables_and_store_objects_are_capped() {
        let mut l = MemoryLimiter::new(10 << 20);
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        assert!(!l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
        assert_eq!(
            (l.instances(), l.tables(), l.memories()),
            (MAX_INSTANCES, MAX_TABLES, MAX_MEMORIES)
        );
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::policy::{GrantSet, Limits};

    pub fn labels() -> Arc<JobLabels> {
        Arc::new(JobLabels {
            plugin: "test".into(),
            version: "0.0.0".into(),
            digest: "sha256:00".into(),
            job_id: "job-1".into(),
        })
    }

    fn state(config: config::ConfigCtx, target: target::TargetCtx) -> PluginState {
        let log = Arc::new(log::LogSink::new(labels(), 1024));
        PluginState::new(config, target, results::ResultsCtx::default(), log, 1 << 20)
    }

    pub fn state_with_target(target: target::TargetCtx) -> PluginState {
        state(config::ConfigCtx::default(), target)
    }

    pub fn state_with_config(config: config::ConfigCtx) -> PluginState {
        let target = target::TargetCtx::open(
            std::path::Path::new("/"),
            GrantSet::default(),
            Limits::default(),
        )
        .unwrap();
        state(config, target)
    }
}
