//! Reads of the few EL1 system registers the guests print or check.

use core::arch::asm;

macro_rules! read_sysreg {
    ($(#[$doc:meta])* $fn_name:ident, $reg:literal) => {
        $(#[$doc])*
        pub fn $fn_name() -> u64 {
            let value: u64;
            // SAFETY: reading this register at EL1 has no side effects.
            unsafe {
                asm!(concat!("mrs {}, ", $reg), out(reg) value,
                     options(nomem, nostack, preserves_flags));
            }
            value
        }
    };
}

read_sysreg!(
    /// `CurrentEL` (EL in bits 3:2).
    current_el_raw, "CurrentEL");
read_sysreg!(
    /// `MIDR_EL1`: the (virtual) CPU identification.
    midr_el1, "midr_el1");
read_sysreg!(
    /// `MPIDR_EL1`: the (virtual) affinity of this vCPU.
    mpidr_el1, "mpidr_el1");
read_sysreg!(
    /// `ESR_EL1`.
    esr_el1, "esr_el1");
read_sysreg!(
    /// `FAR_EL1`.
    far_el1, "far_el1");
read_sysreg!(
    /// `ELR_EL1`.
    elr_el1, "elr_el1");
read_sysreg!(
    /// `SPSR_EL1`.
    spsr_el1, "spsr_el1");
read_sysreg!(
    /// `SCTLR_EL1`.
    sctlr_el1, "sctlr_el1");

/// The current exception level (0–3).
pub fn current_el() -> u64 {
    (current_el_raw() >> 2) & 3
}

/// The affinity fields of `MPIDR_EL1` (Aff3, Aff2, Aff1, Aff0), as PSCI
/// `target_cpu` arguments take them.
pub fn mpidr_affinity() -> u64 {
    mpidr_el1() & 0xff_00ff_ffff
}
