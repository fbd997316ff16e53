//! Stratum's only hardware-touching crate: the image's entry code and EL2
//! translation ([`head`]), the exception vectors and guest entry/exit path
//! ([`vectors`]), a vCPU's CPU-resident context ([`context`]), AArch64 system registers and their bit layouts ([`sysreg`],
//! [`el2`], [`el1`], [`id`]), cache and TLB maintenance, the physical GIC
//! and PL011, timers, semihosting, and calls into firmware.
//!
//! Every instruction that touches hardware lives here behind a small typed
//! function; no other crate contains assembly but the test guests' own
//! runtime (`cargo xtask lint` checks). On the host (any non-aarch64
//! target) the same functions run against fakes ([`sysreg::fake`]), so glue
//! logic that uses them can be unit-tested; the assembly itself only builds
//! for aarch64.
//!
//! The entry code and vectors call into the EL2 binary by link name
//! (`boot_primary`, `boot_secondary`, `handle_guest_exit`, `hyp_fault`,
//! `stratum_telemetry`): [`head`] and [`vectors`] document each symbol's
//! contract and give its signature as a type the binary checks against.
#![cfg_attr(target_arch = "aarch64", no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod barrier;
pub mod cache;
pub mod context;
pub mod debugregs;
pub mod el1;
pub mod el2;
pub mod firmware;
pub mod fpsimd;
pub mod gic;
pub mod head;
pub mod id;
pub mod ram;
pub mod semihosting;
pub mod sync;
pub mod sysreg;
pub mod timer;
pub mod tlb;
pub mod traps;
pub mod uart;
pub mod vectors;
