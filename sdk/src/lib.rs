//! # assessment-sdk
//!
//! Everything a plugin author needs to write an Assessment Runtime plugin: the
//! bindings of the `assessment:plugin` WIT world (version [`ABI_VERSION`])
//! and small, typed helpers on top of them.
//!
//! A plugin is a type implementing [`Plugin`], registered with
//! [`register!`]:
//!
//! ```no_run
//! use assessment_sdk::{register, BenchmarkRef, Check, Plugin, PluginInfo, RunError, RunSummary, Severity, fs};
//!
//! const ROOT_LOGIN: Check = Check::new("demo-root-login", "Root login over SSH is disabled", Severity::High)
//!     .references(&[BenchmarkRef::new("CIS Debian Linux 12", "5.1.20")]);
//!
//! struct Demo;
//!
//! impl Plugin for Demo {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("demo", env!("CARGO_PKG_VERSION"), "A demo plugin").check(&ROOT_LOGIN)
//!     }
//!
//!     fn run() -> Result<RunSummary, RunError> {
//!         match fs::read_to_string("/etc/ssh/sshd_config") {
//!             Ok(text) if text.lines().any(|l| l.trim() == "PermitRootLogin no") => {
//!                 ROOT_LOGIN.pass("PermitRootLogin is no").emit()?
//!             }
//!             Ok(_) => ROOT_LOGIN.fail("PermitRootLogin is not set to no").emit()?,
//!             Err(assessment_sdk::AccessError::NotFound(_)) => {
//!                 ROOT_LOGIN.not_applicable("no SSH daemon configuration").emit()?
//!             }
//!             Err(e) => ROOT_LOGIN.error(format!("cannot read sshd_config: {}", e.explain())).emit()?,
//!         }
//!         Ok(RunSummary::default())
//!     }
//! }
//!
//! register!(Demo);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (or
//! `cargo component build --release --target wasm32-wasip2`); the `.wasm`
//! in `target/wasm32-wasip2/release/` is the component the host runs.
//!
//! The plugin sees nothing of the machine except through one module per
//! capability — [`fs`], [`process`], [`env`](mod@env), [`host`], [`packages`]
//! — and only what the operator granted to it: every denied call returns [`AccessError::Denied`]
//! and never panics. A plugin imports only the interfaces it calls, and
//! declares the matching capabilities in its `plugin.toml`.
//!
//! # Testing
//!
//! With the `testing` feature, on a native (Unix) target, every call into
//! the host goes to a thread-local mock instead: `testing::MockHost` runs
//! a plugin with `cargo test` against a fixture tree, grants and
//! configuration, and returns its findings. Enable it for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! assessment-sdk = { version = "0.1", features = ["testing"] }
//! ```
//!
//! # Features
//!
//! - `testing`: the `testing` module (native Unix targets only; on
//!   `wasm32-wasip2` the feature changes nothing).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
pub mod env;
mod finding;
pub mod fs;
pub mod host;
mod imports;
pub mod log;
pub mod packages;
pub mod process;
#[cfg(all(feature = "testing", unix))]
pub mod testing;

/// The raw bindings generated from the WIT package. Most plugins never need
/// them directly: the rest of this crate wraps them.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "assessment",
        pub_export_macro: true,
        export_macro_name: "export_assessment",
        default_bindings_module: "assessment_sdk::bindings",
    });
}

pub use bindings::assessment::plugin::results::EmitError;
pub use bindings::assessment::plugin::types::{
    AccessError, CheckInfo, ConfigOption, Evidence, Finding, Reference, Severity, Status, Subject,
    SubjectKind, ValueKind,
};
pub use bindings::exports::assessment::plugin::plugin::{PluginInfo, RunError, RunSummary};
pub use finding::{BenchmarkRef, Check, FindingBuilder};

/// The version of the WIT package (the plugin ABI) this SDK targets, read
/// from the package line of its WIT.
pub const ABI_VERSION: &str = env!("ASSESSMENT_ABI_VERSION");

/// A plugin: what it is and how it runs. Register it with [`register!`].
pub trait Plugin {
    /// Name, version, checks and configuration keys. Called by the host
    /// before [`Plugin::run`]; must not touch the assessed system.
    fn describe() -> PluginInfo;

    /// Run every check once, emitting findings as it goes.
    fn run() -> Result<RunSummary, RunError>;
}

/// Export a [`Plugin`] implementation as the component's entry points.
///
/// Use it once, at the top level of the plugin crate: `register!(MyPlugin);`
#[macro_export]
macro_rules! register {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __AssessmentPluginExport;

        impl $crate::bindings::exports::assessment::plugin::plugin::Guest for __AssessmentPluginExport {
            fn describe() -> $crate::PluginInfo {
                <$plugin as $crate::Plugin>::describe()
            }
            fn run() -> ::core::result::Result<$crate::RunSummary, $crate::RunError> {
                <$plugin as $crate::Plugin>::run()
            }
        }

        $crate::bindings::export_assessment!(__AssessmentPluginExport with_types_in $crate::bindings);
    };
}

impl PluginInfo {
    /// Start describing a plugin. `name` uses lowercase letters, digits and
    /// `-`; `version` is the plugin's semantic version (usually
    /// `env!("CARGO_PKG_VERSION")`).
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PluginInfo {
            name: name.to_string(),
            version: version.to_string(),
            description: description.to_string(),
            checks: Vec::new(),
            config: Vec::new(),
        }
    }

    /// Announce a check this plugin performs.
    pub fn check(mut self, check: &Check) -> Self {
        self.checks.push(check.info());
        self
    }

    /// Announce several checks.
    pub fn checks<'a>(mut self, checks: impl IntoIterator<Item = &'a Check>) -> Self {
        self.checks.extend(checks.into_iter().map(Check::info));
        self
    }

    /// Announce a configuration key the plugin reads.
    pub fn config_option(mut self, name: &str, kind: ValueKind, description: &str) -> Self {
        self.config.push(ConfigOption {
            name: name.to_string(),
            kind,
            description: description.to_string(),
        });
        self
    }
}

// The type is generated by wit-bindgen, so it cannot derive `Default`.
#[allow(clippy::derivable_impls)]
impl Default for RunSummary {
    fn default() -> Self {
        RunSummary { note: None }
    }
}

impl RunSummary {
    /// A summary carrying a note for the operator.
    pub fn with_note(note: impl Into<String>) -> Self {
        RunSummary {
            note: Some(note.into()),
        }
    }
}

impl From<EmitError> for RunError {
    fn from(e: EmitError) -> Self {
        RunError::Failed(format!("the host refused a finding: {}", e.explain()))
    }
}

impl From<config::ConfigError> for RunError {
    fn from(e: config::ConfigError) -> Self {
        RunError::InvalidConfig(e.to_string())
    }
}

// wit-bindgen already implements `Display` (as `Debug`) and `Error` for
// these types; `explain` gives the sentence an operator should read.

impl AccessError {
    /// A one-line explanation, e.g. `denied: /etc/shadow is not granted`.
    pub fn explain(&self) -> String {
        match self {
            AccessError::Denied(m) => format!("denied: {m}"),
            AccessError::NotFound(m) => format!("not found: {m}"),
            AccessError::Invalid(m) => format!("invalid request: {m}"),
            AccessError::TooLarge(m) => format!("too large: {m}"),
            AccessError::Io(m) => format!("I/O error: {m}"),
        }
    }
}

impl EmitError {
    /// A one-line explanation.
    pub fn explain(&self) -> String {
        match self {
            EmitError::Invalid(m) => format!("invalid finding: {m}"),
            EmitError::LimitReached(n) => format!("finding limit of {n} reached"),
        }
    }
}

/// The README's example plugin, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExample;
