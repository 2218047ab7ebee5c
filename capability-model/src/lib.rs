//! The capability model of Assessment Runtime, shared by the host, the
//! registry tools and the control plane:
//!
//! - [`abi`]: the plugin ABI's package, its supported versions and which one
//!   a component targets;
//! - [`capability`]: what a plugin may be granted, one [`Capability`] per WIT
//!   interface, and the interface each one is reached through;
//! - [`declared`]: the capabilities a plugin declares in its signed manifest;
//! - [`diff`]: what one release declares beyond another (widenings and
//!   narrowings), for the review of a release and the host's upgrade log;
//! - [`wire`]: the messages between the runtime and the control plane
//!   (evidence, heartbeat, configuration document).
//!
//! Adding a capability starts here: a variant of [`Capability`], its WIT
//! interface name and its grant key (see `host/src/capabilities/README.md`).

pub mod abi;
pub mod capability;
pub mod declared;
pub mod diff;
pub mod wire;

pub use abi::{ABI_PACKAGE, AbiVersion};
pub use capability::Capability;
pub use declared::Capabilities;
