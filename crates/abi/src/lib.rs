//! Stratum's shared ABI: the numbers and byte layouts that the hypervisor, the
//! `stratum` host tool and the test guests must agree on.
//!
//! - [`smccc`]: SMCCC 1.2 / PSCI 1.1 function identifiers and return codes, and
//!   Stratum's own vendor hypercalls.
//! - [`bundle`]: the boot bundle, the one blob that carries every VM's
//!   description and images from the host tool to the hypervisor.
//! - [`exit`]: the status codes the hypervisor leaves QEMU with.
//! - [`console`]: the markers test guests print for the system-test harness.
//! - [`sysimg`]: the system image, one arm64 `Image` holding the hypervisor
//!   and its bundle.
//! - [`telemetry`]: the exit statistics and trace rings the hypervisor
//!   publishes for `stratum stats` and `stratum trace`.
//! - [`workload`]: the lines the Linux workload program prints for
//!   `stratum bench`.
//!
//! `no_std`, no `unsafe`. One dependency: `smccc`, for the Arm-defined SMCCC/PSCI
//! numbers (`docs/dependencies.md`).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

pub mod blkproto;
pub mod bundle;
pub mod bytes;
pub mod console;
pub mod exit;
pub mod limits;
pub mod smccc;
pub mod sysimg;
pub mod telemetry;
pub mod workload;
