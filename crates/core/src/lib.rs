//! Stratum's logic, free of hardware: every decision the hypervisor makes is
//! made here, in code that builds and is unit-tested on the host.
//!
//! `no_std`, `forbid(unsafe_code)`, no allocation. The EL2 binary feeds this
//! crate raw register values and applies what it returns.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod access;
pub mod addr;
pub mod bootplan;
pub mod bus;
pub mod console;
pub mod debugpmu;
pub mod el2map;
pub mod esr;
pub mod fdt;
pub mod flash;
pub mod guest_dt;
pub mod hostirq;
pub mod idreg;
pub mod image;
pub mod inject;
pub mod insn;
pub mod layout;
pub mod lifecycle;
pub mod machine;
pub mod mmio;
pub mod pl011;
pub mod platform;
pub mod psci;
pub mod ring;
pub mod sched;
pub mod stage2;
pub mod stats;
pub mod tablepool;
pub mod telemetry;
pub mod trng;
pub mod vmexit;
