//! Status codes the hypervisor hands to QEMU (through semihosting
//! `SYS_EXIT_EXTENDED`) when it stops. The host tool maps them to its own exit
//! status; see `stratum run --help`.

/// Every VM powered off cleanly.
pub const ALL_VMS_OFF: u32 = 0;
/// The hypervisor panicked (a broken invariant); the epitaph is on the console.
pub const HYPERVISOR_PANIC: u32 = 70;
/// The boot bundle or the host device tree was unusable; the reason is on the console.
pub const BAD_BOOT_INPUT: u32 = 71;
/// Every VM stopped, and at least one of them crashed rather than powering off.
pub const VM_CRASHED: u32 = 72;
