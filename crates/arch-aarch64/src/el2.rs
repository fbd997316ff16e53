//! Bit layouts of the EL2 control registers that decide what a guest
//! traps on, and the values Stratum programs into them (Arm ARM D23.2,
//! "AArch64 System register descriptions", for a non-VHE EL2: `E2H == 0`).
//!
//! Each register has a module of named bits; where a value encodes a
//! decision (which traps a guest gets, what a CPU with or without SVE/SME
//! must set), a `const fn` builds it and a host test pins it. Writing the
//! values is the caller's business, through the `unsafe` writers in
//! [`crate::sysreg`].

/// `HCR_EL2`: hypervisor configuration — stage 2, routing and traps.
pub mod hcr {
    /// `VM`: stage-2 translation for EL1&0.
    pub const VM: u64 = 1 << 0;
    /// `SWIO`: set/way invalidates by EL1 become clean+invalidate.
    pub const SWIO: u64 = 1 << 1;
    /// `PTW`: a stage-1 walk that lands in stage-2 device memory faults.
    pub const PTW: u64 = 1 << 2;
    /// `FMO`: physical FIQs go to EL2 (and virtual FIQs are enabled).
    pub const FMO: u64 = 1 << 3;
    /// `IMO`: physical IRQs go to EL2 (and virtual IRQs are enabled).
    pub const IMO: u64 = 1 << 4;
    /// `AMO`: physical SErrors go to EL2.
    pub const AMO: u64 = 1 << 5;
    /// `FB`: EL1 TLB and instruction-cache maintenance is broadcast.
    pub const FB: u64 = 1 << 9;
    /// `BSU = 0b01`: barriers by EL1 are upgraded to inner shareable.
    pub const BSU_INNER_SHAREABLE: u64 = 1 << 10;
    /// `TWI`: `WFI` at EL1/EL0 traps.
    pub const TWI: u64 = 1 << 13;
    /// `TWE`: `WFE` at EL1/EL0 traps.
    pub const TWE: u64 = 1 << 14;
    /// `TID3`: EL1 reads of the feature ID registers trap.
    pub const TID3: u64 = 1 << 18;
    /// `TSC`: `SMC` at EL1 traps.
    pub const TSC: u64 = 1 << 19;
    /// `TGE`: EL0 runs in the host's regime (never set for guests).
    pub const TGE: u64 = 1 << 27;
    /// `RW`: EL1 is AArch64.
    pub const RW: u64 = 1 << 31;
    /// `E2H`: VHE (Stratum runs without it).
    pub const E2H: u64 = 1 << 34;
    /// `APK`: pointer-authentication key registers do not trap.
    pub const APK: u64 = 1 << 40;
    /// `API`: pointer-authentication instructions do not trap.
    pub const API: u64 = 1 << 41;

    /// `HCR_EL2` while guests run: stage 2 on (VM), set/way invalidates
    /// upgraded to clean+invalidate (SWIO), stage-1 walks into device
    /// memory fault (PTW), physical IRQ/FIQ/SError routed to EL2
    /// (IMO/FMO/AMO), EL1 TLB and cache maintenance broadcast (FB) to the
    /// inner-shareable domain (BSU = IS), WFI and WFE trapped (TWI/TWE: a
    /// waiting vCPU gives its CPU back), ID-register reads trapped (TID3:
    /// what a guest is told is the hypervisor's choice), SMC trapped (TSC),
    /// EL1 is AArch64 (RW).
    ///
    /// With `pauth` (the CPU has pointer authentication) its instructions
    /// and key registers are the guest's too (API, APK): the keys are
    /// switched with the other EL1 registers when vCPUs share a CPU.
    pub const fn for_guests(pauth: bool) -> u64 {
        let base = VM
            | SWIO
            | PTW
            | FMO
            | IMO
            | AMO
            | FB
            | BSU_INNER_SHAREABLE
            | TWI
            | TWE
            | TID3
            | TSC
            | RW;
        if pauth { base | APK | API } else { base }
    }
}

/// `CPTR_EL2` (with `E2H == 0`): traps of FP/SIMD, SVE and SME accesses.
pub mod cptr {
    /// Bits 13, 9 and 7:0, RES1 with `E2H == 0`.
    pub const RES1: u64 = 0x22ff;
    /// `TZ`: SVE accesses trap (RES1 when SVE is absent).
    pub const TZ: u64 = 1 << 8;
    /// `TFP`: FP/SIMD accesses trap.
    pub const TFP: u64 = 1 << 10;
    /// `TSM`: SME accesses trap (RES1 when SME is absent).
    pub const TSM: u64 = 1 << 12;
    /// `TZ | TSM`: SVE and SME trap.
    pub const TZ_TSM: u64 = TZ | TSM;

    /// `CPTR_EL2` for a vCPU that has its CPU to itself: FP/SIMD, SVE and
    /// SME belong to the guest (EL2 is built soft-float and never touches
    /// them). TZ and TSM stay set for a feature the CPU lacks, where they
    /// are RES1.
    pub const fn for_guests(has_sve: bool, has_sme: bool) -> u64 {
        let mut v = RES1;
        if !has_sve {
            v |= TZ;
        }
        if !has_sme {
            v |= TSM;
        }
        v
    }
}

/// `MDCR_EL2`: debug and PMU traps.
pub mod mdcr {
    /// `HPMN` (bits 4:0): how many PMU counters EL1/EL0 own.
    pub const HPMN: u64 = 0x1f;
    /// `TPMCR`: trap EL1/EL0 accesses to `PMCR_EL0`.
    pub const TPMCR: u64 = 1 << 5;
    /// `TPM`: trap EL1/EL0 accesses to every PMU register.
    pub const TPM: u64 = 1 << 6;
    /// `TDE`: route debug exceptions to EL2 (Stratum keeps it clear).
    pub const TDE: u64 = 1 << 8;
    /// `TDA`: trap EL1/EL0 accesses to the debug registers but the OS
    /// lock group and `MDRAR_EL1`.
    pub const TDA: u64 = 1 << 9;
    /// `TDOSA`: trap the OS lock group (`OSLAR`, `OSLSR`, `OSDLR`,
    /// `DBGPRCR`).
    pub const TDOSA: u64 = 1 << 10;
    /// `TDRA`: trap `MDRAR_EL1`.
    pub const TDRA: u64 = 1 << 11;
    /// `HPMD` (PMUv3p1): no event counting at EL2.
    pub const HPMD: u64 = 1 << 17;
    /// `HCCD` (PMUv3p5): no cycle counting at EL2.
    pub const HCCD: u64 = 1 << 23;

    /// `ID_AA64DFR0_EL1.PMUVer` of PMUv3p1, which has `HPMD`.
    const PMUV3P1: u8 = 4;
    /// `ID_AA64DFR0_EL1.PMUVer` of PMUv3p5, which has `HCCD`.
    const PMUV3P5: u8 = 6;

    /// `MDCR_EL2` for guests (ADR 0012): every PMU counter to EL1/EL0
    /// (`HPMN` = `PMCR_EL0.N`, bits 15:11 of `pmcr`), every debug and PMU
    /// register access trapped, debug exceptions to the guest's EL1, and
    /// EL2 kept out of the counts where the PMU can (`pmu_version` is
    /// `ID_AA64DFR0_EL1.PMUVer`; 0 or 0xf: no PMUv3, `pmcr` ignored).
    pub const fn for_guests(pmcr: u64, pmu_version: u8) -> u64 {
        let traps = TPM | TPMCR | TDA | TDOSA | TDRA;
        if pmu_version == 0 || pmu_version == 0xf {
            return traps;
        }
        let mut v = traps | ((pmcr >> 11) & HPMN);
        if pmu_version >= PMUV3P1 {
            v |= HPMD;
        }
        if pmu_version >= PMUV3P5 {
            v |= HCCD;
        }
        v
    }
}

/// `CNTHCTL_EL2` (with `E2H == 0`): EL1/EL0 access to the physical counter
/// and timer.
pub mod cnthctl {
    /// `EL1PCTEN`: EL1/EL0 may read the physical counter.
    pub const EL1PCTEN: u64 = 1 << 0;
    /// `EL1PCEN`: EL1/EL0 may use the EL1 physical timer.
    pub const EL1PCEN: u64 = 1 << 1;
}

/// `ZCR_EL2` and `SMCR_EL2`: vector-length caps for SVE and SME.
pub mod vector_length {
    /// `LEN` with every bit set, including the RAZ/WI bits 8:4 reserved for
    /// longer vectors: the cap saturates to the longest length the CPU
    /// implements.
    pub const LEN_MAX: u64 = 0x1ff;
}

/// `VMPIDR_EL2`: the MPIDR a guest reads.
pub mod vmpidr {
    /// Bit 31, RES1.
    pub const RES1: u64 = 1 << 31;

    /// `VMPIDR_EL2` for a vCPU whose affinity fields are `mpidr`.
    pub const fn for_vcpu(mpidr: u64) -> u64 {
        RES1 | mpidr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_get_stage_2_routing_and_the_traps_we_emulate() {
        let hcr = hcr::for_guests(false);
        assert_eq!(hcr, 0x800c_663f, "the value the EL2 binary has always used");
        for bit in [hcr::VM, hcr::IMO, hcr::FMO, hcr::AMO, hcr::TSC, hcr::TID3] {
            assert_ne!(hcr & bit, 0);
        }
        assert_eq!(hcr & (hcr::TGE | hcr::E2H), 0, "never the host regime");
        assert_eq!(hcr & (hcr::API | hcr::APK), 0, "pointer auth traps");
    }

    #[test]
    fn pointer_authentication_is_the_guests_only_where_it_exists() {
        assert_eq!(
            hcr::for_guests(true) ^ hcr::for_guests(false),
            hcr::API | hcr::APK
        );
    }

    #[test]
    fn cptr_traps_only_what_the_cpu_lacks() {
        assert_eq!(cptr::for_guests(false, false), 0x33ff);
        assert_eq!(cptr::for_guests(true, false), 0x32ff);
        assert_eq!(cptr::for_guests(false, true), 0x23ff);
        assert_eq!(cptr::for_guests(true, true), 0x22ff);
        for (sve, sme) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(
                cptr::for_guests(sve, sme) & cptr::TFP,
                0,
                "FP/SIMD is the pinned guest's"
            );
        }
    }

    #[test]
    fn every_pmu_counter_goes_to_the_guest() {
        // PMCR_EL0.N = 6 (Cortex-A57), with E and other low bits set.
        let traps = mdcr::TPM | mdcr::TPMCR | mdcr::TDA | mdcr::TDOSA | mdcr::TDRA;
        // PMUv3 (cortex-a57): every counter to the guest, everything trapped.
        assert_eq!(mdcr::for_guests((6 << 11) | 0x41, 1), traps | 6);
        assert_eq!(mdcr::for_guests(u64::MAX, 1), traps | 31);
        // PMUv3p1 and p5 keep EL2 out of the counts themselves too.
        assert_eq!(mdcr::for_guests(6 << 11, 4), traps | 6 | mdcr::HPMD);
        assert_eq!(
            mdcr::for_guests(6 << 11, 6),
            traps | 6 | mdcr::HPMD | mdcr::HCCD
        );
        // No PMUv3: PMCR_EL0 means nothing.
        assert_eq!(mdcr::for_guests(u64::MAX, 0), traps);
        assert_eq!(mdcr::for_guests(u64::MAX, 0xf), traps);
        assert_eq!(
            mdcr::for_guests(u64::MAX, 1) & mdcr::TDE,
            0,
            "debug exceptions stay at EL1"
        );
    }

    #[test]
    fn vmpidr_keeps_bit_31_set() {
        assert_eq!(vmpidr::for_vcpu(0x0102), 0x8000_0102);
        assert_eq!(vmpidr::for_vcpu(0), 0x8000_0000);
    }
}
