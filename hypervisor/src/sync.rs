//! The locks EL2 uses ([`stratum_arch::sync`]).

pub use stratum_arch::sync::{Once, SpinLock};
