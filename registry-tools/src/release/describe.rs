//! Call a component's `describe` the way the host does before a run: on an
//! instance without grants. Packaging uses it to check that the component
//! says it is the plugin and version being released.
//!
//! The instance gets WASI with nothing reachable (no directories,
//! environment, arguments or network; output discarded) and every
//! `assessment:plugin` import answered as for a plugin without grants: a
//! call that returns `result<_, access-error>` gets `denied`, `results.emit`
//! gets `invalid` (no check is known yet), `config` has no keys and `log`
//! writes nowhere. Fuel and a memory cap bound the call.
//!
//! The component is compiled with Cranelift first: well under a second for
//! a Rust plugin, tens of seconds for a 20–40 MB componentize-py one.

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The ABI's package, as it prefixes interface names.
const PACKAGE_PREFIX: &str = "assessment:plugin/";
/// Instructions (roughly) `describe` may execute: far more than any real
/// plugin needs, including interpreters' start-up.
const FUEL: u64 = 20_000_000_000;
/// Linear memory the instance may use.
const MEMORY_BYTES: usize = 512 << 20;

/// What `describe` says about the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// `plugin-info.name`.
    pub name: String,
    /// `plugin-info.version`.
    pub version: String,
}

/// Why `describe` could not be called.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    /// The engine or the component could not be set up.
    #[error("cannot load the component: {0}")]
    Load(String),
    /// The component exports no `assessment:plugin/plugin` interface with a
    /// `describe` function.
    #[error("the component exports no assessment:plugin/plugin interface with a describe function")]
    NoDescribe,
    /// `describe` trapped, ran out of fuel or memory, or called an import
    /// that traps.
    #[error("describe() failed: {0}")]
    Failed(String),
    /// `describe` returned something other than a `plugin-info` record.
    #[error("describe() returned an unexpected value: {0}")]
    Unexpected(String),
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Instantiate `component` without grants and call its `describe`.
pub fn describe(component: &[u8]) -> Result<Described, DescribeError> {
    let load = |e: wasmtime::Error| DescribeError::Load(format!("{e:#}"));
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.max_wasm_stack(1 << 20);
    // One call of a cheap function: compiling fast matters more than the
    // code's speed.
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    let engine = Engine::new(&config).map_err(load)?;
    let component = Component::new(&engine, component).map_err(load)?;

    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(load)?;
    let ty = component.component_type();
    for (name, import) in ty.imports(&engine) {
        if !name.starts_with(PACKAGE_PREFIX) {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            continue;
        };
        let mut defined = linker.instance(name).map_err(load)?;
        for (function, item) in instance.exports(&engine) {
            if matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                defined.func_new(function, without_grants).map_err(load)?;
            }
        }
    }
    // Nothing else is defined: a component importing another interface
    // (which the audit refuses anyway) does not instantiate. Stubbing the
    // unknown imports would be worse: a stub under the exact name of a
    // WASI import shadows the semver-compatible WASI version linked above.

    let plugin = ty
        .exports(&engine)
        .map(|(name, _)| name)
        .find(|name| {
            name.strip_prefix(PACKAGE_PREFIX)
                .is_some_and(|rest| rest == "plugin" || rest.starts_with("plugin@"))
        })
        .ok_or(DescribeError::NoDescribe)?
        .to_string();

    let wasi = WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let mut store = Store::new(
        &engine,
        State {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_BYTES)
                .instances(64)
                .tables(64)
                .memories(8)
                .build(),
        },
    );
    store.limiter(|state| &mut state.limits);
    store.set_fuel(FUEL).map_err(load)?;

    let failed = |e: wasmtime::Error| DescribeError::Failed(format!("{e:#}"));
    let instance = linker.instantiate(&mut store, &component).map_err(failed)?;
    let interface = instance
        .get_export_index(&mut store, None, &plugin)
        .ok_or(DescribeError::NoDescribe)?;
    let function = instance
        .get_export_index(&mut store, Some(&interface), "describe")
        .and_then(|index| instance.get_func(&mut store, index))
        .ok_or(DescribeError::NoDescribe)?;
    let mut results = [Val::Bool(false)];
    function
        .call(&mut store, &[], &mut results)
        .map_err(failed)?;
    let [Val::Record(fields)] = results else {
        return Err(DescribeError::Unexpected(format!("{results:?}")));
    };
    let field = |key: &str| {
        fields.iter().find_map(|(name, value)| match value {
            Val::String(s) if name == key => Some(s.clone()),
            _ => None,
        })
    };
    match (field("name"), field("version")) {
        (Some(name), Some(version)) => Ok(Described { name, version }),
        _ => Err(DescribeError::Unexpected(
            "a record without string fields `name` and `version`".to_string(),
        )),
    }
}

/// Every `assessment:plugin` import, as the host answers a plugin without
/// grants.
fn without_grants(
    _store: wasmtime::StoreContextMut<'_, State>,
    ty: ComponentFunc,
    _params: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    let Some(result_ty) = ty.results().next() else {
        // `log.write`: the message goes nowhere.
        return Ok(());
    };
    let Some(slot) = results.first_mut() else {
        return Ok(());
    };
    *slot = match result_ty {
        // `config.get`: no key is set.
        wasmtime::component::Type::Option(_) => Val::Option(None),
        // `config.keys`: none.
        wasmtime::component::Type::List(_) => Val::List(Vec::new()),
        wasmtime::component::Type::Result(result) => {
            let Some(wasmtime::component::Type::Variant(error)) = result.err() else {
                wasmtime::bail!("an import with an unexpected error type was called");
            };
            let cases: Vec<String> = error.cases().map(|c| c.name.to_string()).collect();
            let (case, message) = if cases.iter().any(|c| c == "denied") {
                (
                    "denied",
                    "nothing is granted while the plugin describes itself",
                )
            } else if cases.iter().any(|c| c == "invalid") {
                (
                    "invalid",
                    "no check is known while the plugin describes itself",
                )
            } else {
                wasmtime::bail!("an import with an unexpected error type was called");
            };
            Val::Result(Err(Some(Box::new(Val::Variant(
                case.to_string(),
                Some(Box::new(Val::String(message.to_string()))),
            )))))
        }
        _ => wasmtime::bail!("an import with an unexpected result type was called"),
    };
    Ok(())
}
