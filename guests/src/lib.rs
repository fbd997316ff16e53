//! Runtime for Stratum's bare-metal EL1 test guests.
//!
//! A guest binary is `#![no_std]`, `#![no_main]`, and names its entry point with
//! [`entry!`]. It is linked at `0x4008_0000` (see `link.ld`) and entered at EL1h
//! with the MMU and caches off, DAIF masked and `x0` = the device tree address.
//!
//! The runtime provides:
//! - `_start` (in [`start`]): stack, FP/SIMD enable, `.bss` zeroing, `VBAR_EL1`;
//! - [`exception`]: a full vector table; unexpected exceptions fail the test,
//!   [`exception::expect_abort`] records one expected abort and skips the
//!   faulting instruction;
//! - [`console`]: PL011 output via single 32-bit `ldr`/`str` (every access
//!   carries a syndrome), and the [`print!`]/[`println!`] macros;
//! - [`smccc`]: `HVC`/`SMC` conduits and PSCI/Stratum helpers;
//! - [`report`]: the console protocol (`STRATUM-TEST PASS|FAIL <name>`);
//! - [`fdt`]: a small, bounds-checked device-tree reader (pure; host-tested);
//! - [`gic`], [`irq`], [`timer`]: a GICv2/v3 driver, IRQ dispatch to a
//!   registered handler, and the generic timer, for the interrupt guests;
//! - [`args`]: `key=value` words of the command line (pure; host-tested);
//! - [`channel`]: shared-memory channels to another VM (DT discovery is
//!   pure and host-tested; the mailbox protocol and doorbell need the target);
//! - [`smp`]: secondary vCPUs started with PSCI `CPU_ON`, each on its own stack;
//! - [`virtio`]: a virtio-mmio device found and handed to the third-party
//!   `virtio-drivers` crate, with its interrupt and memory (`vsockecho`,
//!   `netecho`);
//! - [`inet`]: the ARP, ICMP and UDP answers of `netecho`, checksums
//!   checked (pure; host-tested);
//! - [`passthrough`]: what the passthrough guests share (their device in
//!   the DT, one interrupt of its SPI awaited).
//!
//! Invariant: a guest runs on one vCPU (the multi-vCPU guests keep their
//! secondaries to the narrow rules in [`smp`]), with interrupts masked unless it
//! unmasks them itself (the interrupt guests, around waits). The only
//! "concurrency" is a synchronous exception taken inside an inline-asm block
//! and, while unmasked, IRQ handlers; the globals in [`global`] rely on that.
//!
//! Only [`fdt`], [`args`], [`rng`], [`inet`] and [`channel`]'s DT part build on the host (for
//! their unit tests); everything else needs
//! `--target aarch64-unknown-none`.
#![cfg_attr(not(test), no_std)]

pub mod args;
pub mod channel;
pub mod fdt;
pub mod inet;
pub mod rng;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod console;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod exception;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod gic;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod global;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod irq;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod mmio;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod passthrough;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod report;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod smccc;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod smp;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod start;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod sysreg;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod timer;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod virtio;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use report::{Checks, arg_number, fail, pass};
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use start::start_guest;
