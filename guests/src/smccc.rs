//! SMCCC conduits (`HVC #0`, `SMC #0`) and helpers for the calls the guests make.
//!
//! Arguments go in `x0..x7`; results come back in `x0..x3` (SMCCC 1.2 allows a
//! callee to use `x0..x17`, so `x4..x17` are treated as clobbered).

use core::arch::asm;

pub use stratum_abi::smccc::*;

macro_rules! smccc_call {
    ($insn:literal, $a:expr) => {{
        let a = $a;
        let (r0, r1, r2, r3): (u64, u64, u64, u64);
        // SAFETY: an SMCCC call changes no memory the guest owns; every register
        // the callee may change is declared as an output or clobber.
        unsafe {
            asm!($insn,
                 inout("x0") a[0] => r0, inout("x1") a[1] => r1,
                 inout("x2") a[2] => r2, inout("x3") a[3] => r3,
                 inout("x4") a[4] => _, inout("x5") a[5] => _,
                 inout("x6") a[6] => _, inout("x7") a[7] => _,
                 out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                 out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                 out("x16") _, out("x17") _,
                 options(nostack));
        }
        [r0, r1, r2, r3]
    }};
}

/// Issues `HVC #0` with `x0..x7 = args`; returns `x0..x3`.
pub fn hvc(args: [u64; 8]) -> [u64; 4] {
    smccc_call!("hvc #0", args)
}

/// Issues `SMC #0` with `x0..x7 = args`; returns `x0..x3`. (Under Stratum the
/// hypervisor traps it; on bare EL1 without EL3 it is undefined.)
pub fn smc(args: [u64; 8]) -> [u64; 4] {
    smccc_call!("smc #0", args)
}

/// `HVC` call of function `fid` with up to three arguments; returns `x0`.
pub fn call(fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    hvc([u64::from(fid), a1, a2, a3, 0, 0, 0, 0])[0]
}

/// Interprets an SMCCC return value as the signed 32-bit status it carries
/// (PSCI/SMCCC status codes are `int32` in `w0`).
pub fn status(x0: u64) -> i64 {
    i64::from(x0 as u32 as i32)
}

/// `PSCI_VERSION` (major in bits 31:16, minor in 15:0).
pub fn psci_version() -> u64 {
    call(PSCI_VERSION, 0, 0, 0)
}

/// `SMCCC_VERSION`.
pub fn smccc_version() -> u64 {
    call(SMCCC_VERSION, 0, 0, 0)
}

/// `PSCI_FEATURES(fid)`: a negative status or feature flags.
pub fn psci_features(fid: u32) -> i64 {
    status(call(PSCI_FEATURES, u64::from(fid), 0, 0))
}

/// `AFFINITY_INFO` (SMC64 form).
pub fn affinity_info(target: u64, lowest_level: u64) -> i64 {
    status(call(PSCI_AFFINITY_INFO_64, target, lowest_level, 0))
}

/// `CPU_ON` (SMC64 form).
pub fn cpu_on(target: u64, entry: u64, context: u64) -> i64 {
    status(call(PSCI_CPU_ON_64, target, entry, context))
}

/// `MIGRATE_INFO_TYPE`.
pub fn migrate_info_type() -> i64 {
    status(call(PSCI_MIGRATE_INFO_TYPE, 0, 0, 0))
}

/// `SYSTEM_OFF`. Does not return; if the call does, that is reported as a failure.
pub fn system_off() -> ! {
    call(PSCI_SYSTEM_OFF, 0, 0, 0);
    crate::report::hang("SYSTEM_OFF returned")
}

/// `SYSTEM_RESET`. Does not return; if the call does, that is reported as a failure.
pub fn system_reset() -> ! {
    call(PSCI_SYSTEM_RESET, 0, 0, 0);
    crate::report::hang("SYSTEM_RESET returned")
}

/// The answer to Stratum's `INFO` hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StratumInfo {
    /// ABI version (`stratum::ABI_VERSION`).
    pub abi_version: u64,
    /// This VM's id.
    pub vm_id: u64,
    /// This vCPU's id within the VM.
    pub vcpu_id: u64,
    /// How many times this VM has booted (1 on the first boot).
    pub boot_count: u64,
}

/// Stratum's `INFO` hypercall, or `None` if it is not implemented (`x0 == -1`).
pub fn stratum_info() -> Option<StratumInfo> {
    let r = hvc([u64::from(stratum::INFO), 0, 0, 0, 0, 0, 0, 0]);
    if r[0] == u64::MAX {
        return None;
    }
    Some(StratumInfo {
        abi_version: r[0],
        vm_id: r[1],
        vcpu_id: r[2],
        boot_count: r[3],
    })
}
