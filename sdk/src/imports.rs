//! Where the wrapper modules' host calls go.
//!
//! In a component (and in every build without the `testing` feature) they
//! are the raw imports generated from the WIT. In a native build with the
//! `testing` feature they are the thread-local mock host of
//! [`crate::testing`], which has the same functions with the same types.
//! An interface the mock does not implement keeps its raw import (which
//! panics when called outside a component).

#[cfg(not(all(feature = "testing", unix)))]
pub(crate) use crate::bindings::assessment::plugin::*;

#[cfg(all(feature = "testing", unix))]
#[allow(unused_imports)]
pub(crate) use crate::bindings::assessment::plugin::*;
// Named imports shadow the glob above.
#[cfg(all(feature = "testing", unix))]
pub(crate) use crate::testing::imports::{
    config, environment, filesystem, host_facts, log, packages, process, results,
};
