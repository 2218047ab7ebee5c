//! Host bindings of the WIT plugin ABI, one module per supported version.
//! `latest` is the version whose behaviour the capabilities implement.

/// `assessment:plugin@0.1.0`.
pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "assessment",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use v0_1_0 as latest;

/// The WIT package and version this host implements (shared with the audit,
/// which refuses plugins built for another version).
pub use assessment_registry::audit::{ABI_PACKAGE, ABI_VERSION};
