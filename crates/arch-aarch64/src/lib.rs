//! Stratum's only hardware-touching crate: AArch64 system registers, cache and
//! TLB maintenance, the physical PL011, semihosting, and calls into firmware.
//!
//! Every instruction that touches hardware lives here behind a small typed
//! function. On the host (any non-aarch64 target) the same functions run
//! against fakes ([`sysreg::fake`]), so glue logic that uses them can be
//! unit-tested.
#![cfg_attr(target_arch = "aarch64", no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod barrier;
pub mod cache;
pub mod firmware;
pub mod fpsimd;
pub mod gic;
pub mod pl011;
pub mod semihosting;
pub mod sysreg;
pub mod timer;
pub mod tlb;
