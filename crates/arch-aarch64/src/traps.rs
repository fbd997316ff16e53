//! Programming one CPU's EL2 controls for guests: what traps, which
//! features the guest gets, the timers and the PMU split. The values are
//! [`crate::el2`]'s (each a tested `const fn`); this module reads the CPU's
//! features and writes them, on every CPU before its first guest runs.
//! On the host the writes go to the fake registers of [`crate::sysreg`],
//! so the whole set-up is tested there.

use stratum_core::debugpmu::{self, Limits};

use crate::el2::{cnthctl, cptr, hcr, mdcr, vector_length};
use crate::{barrier, debugregs, id, sysreg};

/// Whether the CPU has pointer authentication (and so its key registers,
/// which guests then use directly).
pub fn has_pauth() -> bool {
    id::has_pauth(sysreg::id_aa64isar1_el1(), sysreg::id_aa64isar2_el1())
}

/// `CPTR_EL2` for a vCPU that has its CPU to itself: FP/SIMD, SVE and SME
/// belong to the guest ([`cptr::for_guests`]).
pub fn cptr_for_guests() -> u64 {
    cptr::for_guests(
        id::has_sve(sysreg::id_aa64pfr0_el1()),
        id::has_sme(sysreg::id_aa64pfr1_el1()),
    )
}

/// This CPU's breakpoints, watchpoints and PMU counters
/// (`ID_AA64DFR0_EL1`, and `PMCR_EL0.N` where it has a PMUv3).
pub fn debug_limits() -> Limits {
    let dfr0 = sysreg::id_register(5, 0).unwrap_or(0);
    let pmcr = if debugpmu::has_pmuv3(dfr0) {
        sysreg::pmcr_el0()
    } else {
        0
    };
    Limits::from_id(dfr0, pmcr)
}

/// Sets this CPU's EL2 controls for guests: every PMU counter to EL1/EL0
/// (`MDCR_EL2.HPMN` = `PMCR_EL0.N`), every debug and PMU register access
/// trapped ([`mdcr::for_guests`]; the PMU stopped and owned by no guest
/// yet), the largest vector
/// lengths the CPU offers, FP/SIMD/SVE/SME to the guest, EL1 access to the
/// physical counter and timer, `CNTVOFF_EL2` = 0, the real MIDR as the
/// guest's, and `HCR_EL2` as [`hcr::for_guests`] says (stage 2, routing,
/// ID-register traps; pointer authentication where the CPU has it); and
/// turns the hypervisor's SIMD copies off if the CPU has SVE or SME
/// ([`crate::ram::simd_copies_unless_sve`]).
pub fn configure_for_guests() {
    let dfr0 = sysreg::id_register(5, 0).unwrap_or(0);
    let limits = debug_limits();
    let pmcr = if limits.counters.is_some() {
        sysreg::pmcr_el0()
    } else {
        0
    };
    let mdcr = mdcr::for_guests(pmcr, debugpmu::pmu_version(dfr0));
    // SAFETY: MDCR_EL2 only controls traps of guest debug/PMU accesses and
    // keeps EL2 out of the PMU's counts; TDE stays clear.
    unsafe { sysreg::set_mdcr_el2(mdcr) };
    debugregs::reset_pmu(&limits);
    let (pfr0, pfr1) = (sysreg::id_aa64pfr0_el1(), sysreg::id_aa64pfr1_el1());
    crate::ram::simd_copies_unless_sve(pfr0, pfr1);
    if id::has_sve(pfr0) {
        // SAFETY: ZCR_EL2 exists (SVE is implemented) and only caps guest
        // vector length.
        unsafe { sysreg::set_zcr_el2(vector_length::LEN_MAX) };
    }
    if id::has_sme(pfr1) {
        // SAFETY: SMCR_EL2 exists (SME is implemented) and only caps the
        // guest's streaming vector length.
        unsafe { sysreg::set_smcr_el2(vector_length::LEN_MAX) };
    }
    // SAFETY: CPTR_EL2 only decides which guest FP/SIMD/SVE/SME accesses
    // trap; the scheduler refines it per vCPU before any guest runs.
    unsafe { sysreg::set_cptr_el2(cptr_for_guests()) };
    // SAFETY: EL1 may read the physical counter and use the EL1 physical
    // timer directly; this changes no EL2 behaviour.
    unsafe { sysreg::set_cnthctl_el2(cnthctl::EL1PCTEN | cnthctl::EL1PCEN) };
    sysreg::set_cntvoff_el2(0);
    sysreg::set_vpidr_el2(sysreg::midr_el1());
    // SAFETY: these bits only change how EL1/EL0 execute and where their
    // exceptions go; EL2's own translation and vectors are unaffected.
    unsafe { sysreg::set_hcr_el2(hcr::for_guests(has_pauth())) };
    barrier::isb();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysreg::{Reg, fake};

    /// ID_AA64PFR0_EL1.SVE (bits 35:32) = 1.
    const PFR0_SVE: u64 = 1 << 32;
    /// ID_AA64ISAR1_EL1.API (bits 11:8) = 1.
    const ISAR1_API: u64 = 1 << 8;

    fn reset(pfr0: u64, isar1: u64, pmcr: u64) {
        for reg in [
            Reg::MDCR_EL2,
            Reg::S3_4_C1_C2_0,
            Reg::S3_4_C1_C2_6,
            Reg::CPTR_EL2,
            Reg::HCR_EL2,
        ] {
            fake::set(reg, 0xdead);
        }
        fake::set(Reg::ID_AA64PFR0_EL1, pfr0);
        fake::set(Reg::ID_AA64PFR1_EL1, 0);
        fake::set(Reg::ID_AA64ISAR1_EL1, isar1);
        fake::set(Reg::S3_0_C0_C6_2, 0);
        fake::set(Reg::PMCR_EL0, pmcr);
        // QEMU cortex-a57: 6 breakpoints, 4 watchpoints, PMUv3.
        fake::set_id_register(5, 0, 0x1030_5106);
        fake::set(Reg::MIDR_EL1, 0x411f_d070);
    }

    #[test]
    fn a_plain_cpu_gets_the_base_controls() {
        reset(0, 0, 6 << 11);
        configure_for_guests();
        assert_eq!(
            fake::get(Reg::MDCR_EL2),
            mdcr::for_guests(6 << 11, 1),
            "HPMN = PMCR_EL0.N: every counter to the guest, every access trapped"
        );
        assert_eq!(fake::get(Reg::MDCR_EL2) & mdcr::HPMN, 6);
        assert_eq!(
            debug_limits(),
            Limits {
                breakpoints: 6,
                watchpoints: 4,
                counters: Some(6)
            }
        );
        assert_eq!(
            fake::get(Reg::S3_4_C1_C2_0),
            0xdead,
            "no SVE: ZCR_EL2 untouched"
        );
        assert_eq!(
            fake::get(Reg::S3_4_C1_C2_6),
            0xdead,
            "no SME: SMCR_EL2 untouched"
        );
        assert_eq!(fake::get(Reg::CPTR_EL2), cptr::for_guests(false, false));
        assert_eq!(
            fake::get(Reg::CNTHCTL_EL2),
            cnthctl::EL1PCTEN | cnthctl::EL1PCEN
        );
        assert_eq!(fake::get(Reg::VPIDR_EL2), 0x411f_d070);
        assert_eq!(fake::get(Reg::HCR_EL2), hcr::for_guests(false));
        assert_eq!(fake::get(Reg::HCR_EL2) & hcr::VM, hcr::VM, "stage 2 on");
    }

    #[test]
    fn sve_and_pointer_authentication_go_to_the_guest_where_present() {
        reset(PFR0_SVE, ISAR1_API, 0);
        configure_for_guests();
        assert_eq!(fake::get(Reg::S3_4_C1_C2_0), vector_length::LEN_MAX);
        assert_eq!(fake::get(Reg::CPTR_EL2), cptr::for_guests(true, false));
        assert_ne!(
            cptr::for_guests(true, false),
            cptr::for_guests(false, false)
        );
        assert!(has_pauth());
        assert_eq!(fake::get(Reg::HCR_EL2), hcr::for_guests(true));
        assert_ne!(hcr::for_guests(true), hcr::for_guests(false));
    }
}
