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

/// The WIT package every supported plugin exports.
pub const ABI_PACKAGE: &str = "assessment:plugin";
/// The ABI version this host implements.
pub const ABI_VERSION: &str = "0.1.0";
