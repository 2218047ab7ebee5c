//! Host bindings of the WIT plugin ABI, one module per supported version.
//! `latest` is the version whose behaviour the capabilities implement; each
//! older version is frozen in `crate::abi` and adapted to `latest`.

/// `assessment:plugin@0.2.0` (the WIT in `wit/`).
pub mod v0_2_0 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "assessment",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// `assessment:plugin@0.1.0`, frozen (the WIT in `wit/v0.1.0/`).
pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "assessment",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use v0_2_0 as latest;
