//! Architected injection of a synchronous exception into a guest's EL1:
//! computes every register the CPU itself would set when taking a Data
//! Abort, Instruction Abort or UNDEFINED exception to EL1, so that the
//! guest cannot tell it from a real one.
//!
//! Follows the pseudocode `AArch64.TakeException()` (Arm ARM DDI 0487 K.a,
//! chapter J1, `aarch64/exceptions/takeexception`; described in chapter D1,
//! "Exception entry") with the target EL1 in AArch64 state:
//!
//! - vector: `VBAR_EL1[63:11]` plus `0x000` when taken from EL1 using
//!   `SP_EL0` (EL1t), `0x200` from EL1 using `SP_EL1` (EL1h), `0x400` from
//!   EL0 in AArch64, `0x600` from EL0 in AArch32 (`SPSR.M[4]`, nRW); plus 0
//!   for a synchronous exception;
//! - `SPSR_EL1` = the guest's PSTATE at the exit (`SPSR_EL2`), unchanged.
//!   `SPSR.BTYPE` is kept: for a Data Abort and UNDEFINED the architecture
//!   lets the implementation zero it or not (`Unpredictable_ZEROBTYPE`);
//! - `ELR_EL1` = the faulting instruction (`ELR_EL2`);
//! - new PSTATE: `M` = EL1h, `nRW` = 0, `D`, `A`, `I`, `F` set, `SS` = 0,
//!   `IL` = 0, `UAO` = 0, `BTYPE` = 0; `PAN` set when `SCTLR_EL1.SPAN` is
//!   0 (else kept); `SSBS` = `SCTLR_EL1.DSSBS`; `TCO` = 1 (FEAT_MTE);
//!   `ALLINT` = `!SCTLR_EL1.SPINTMASK` (FEAT_NMI); `NZCV` (UNKNOWN after
//!   entry) and `DIT` are kept. Feature-dependent updates happen only for
//!   features in [`PstateFeatures`]. Everything else is zero: Stratum does
//!   not expose FEAT_GCS (`EXLOCK`), FEAT_EBEP (`PM`), FEAT_SEBEP (`PPEND`)
//!   or FEAT_PAuth_LR (`PACM`) to guests;
//! - the syndrome (`ESR_EL1`, D24.2): EC 0x24/0x20 for an abort from EL0
//!   (a lower EL), 0x25/0x21 from EL1 (same EL), 0x00 for UNDEFINED; `IL`
//!   = 1, which the architecture requires for Instruction Aborts, Data
//!   Aborts with `ISV` = 0 and EC 0x00; `FSC` = 0x10 (synchronous External
//!   abort, not on a table walk); `ISV` = 0, `FnV` = 0, `EA` = 0; `WnR` as
//!   given.
//!
//! Taking the exception from AArch32 EL0 also makes the upper halves of the
//! general-purpose registers UNKNOWN (`AArch64.MaybeZeroRegisterUppers`);
//! leaving them unchanged is one permitted outcome, so nothing is done.

use crate::esr::{ESR_IL, ec};

/// Which PSTATE-affecting features the CPU implements. Exception entry
/// updates `PSTATE.PAN`, `SSBS`, `TCO` and `ALLINT` only when the
/// corresponding feature is implemented; otherwise those SPSR bits are RES0
/// and must stay clear.
///
/// These describe the hardware (what the CPU does on the guest's own
/// exceptions), not what the guest's ID registers advertise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PstateFeatures {
    /// FEAT_PAN (`ID_AA64MMFR1_EL1.PAN` != 0).
    pub pan: bool,
    /// FEAT_SSBS (`ID_AA64PFR1_EL1.SSBS` != 0).
    pub ssbs: bool,
    /// FEAT_MTE (`ID_AA64PFR1_EL1.MTE` != 0): `PSTATE.TCO` exists.
    pub mte: bool,
    /// FEAT_NMI (`ID_AA64PFR1_EL1.NMI` != 0): `PSTATE.ALLINT` exists.
    pub nmi: bool,
}

impl PstateFeatures {
    /// Armv8.0: none of the features.
    pub const NONE: Self = Self {
        pan: false,
        ssbs: false,
        mte: false,
        nmi: false,
    };

    /// From the CPU's `ID_AA64PFR1_EL1` and `ID_AA64MMFR1_EL1`.
    pub const fn from_id_regs(id_aa64pfr1_el1: u64, id_aa64mmfr1_el1: u64) -> Self {
        const fn nonzero(reg: u64, lsb: u32) -> bool {
            (reg >> lsb) & 0xf != 0
        }
        Self {
            pan: nonzero(id_aa64mmfr1_el1, 20),
            ssbs: nonzero(id_aa64pfr1_el1, 4),
            mte: nonzero(id_aa64pfr1_el1, 8),
            nmi: nonzero(id_aa64pfr1_el1, 36),
        }
    }
}

/// The guest state at the exit that an injection depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestExceptionState {
    /// `SPSR_EL2` at the exit: the guest's PSTATE.
    pub pstate: u64,
    /// `ELR_EL2` at the exit: the faulting instruction.
    pub pc: u64,
    /// The guest's `VBAR_EL1`.
    pub vbar_el1: u64,
    /// The guest's `SCTLR_EL1`.
    pub sctlr_el1: u64,
    /// What the CPU implements. Added beyond the original brief: exception
    /// entry is feature-dependent.
    pub features: PstateFeatures,
}

/// Register values that deliver the exception: write the EL1 registers,
/// then set `ELR_EL2` = `pc` and `SPSR_EL2` = `pstate` and `ERET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// New `ESR_EL1`.
    pub esr_el1: u64,
    /// New `FAR_EL1`; `None` leaves it unchanged (it is UNKNOWN for this
    /// exception).
    pub far_el1: Option<u64>,
    /// New `ELR_EL1`: the faulting instruction.
    pub elr_el1: u64,
    /// New `SPSR_EL1`: the guest's PSTATE at the exit.
    pub spsr_el1: u64,
    /// New `ELR_EL2`: the EL1 vector entry.
    pub pc: u64,
    /// New `SPSR_EL2`: PSTATE on entry to the vector.
    pub pstate: u64,
}

// PSTATE as held in SPSR_ELx (D24.2, SPSR_EL1, AArch64 format; the
// AArch32 format puts NZCV, DIT and PAN at the same positions).
const PSTATE_SP: u64 = 1 << 0;
const PSTATE_EL_SHIFT: u32 = 2;
const PSTATE_NRW: u64 = 1 << 4;
const PSTATE_M_EL1H: u64 = 0b0101;
const PSTATE_DAIF: u64 = 0b1111 << 6;
const PSTATE_SSBS: u64 = 1 << 12;
const PSTATE_ALLINT: u64 = 1 << 13;
const PSTATE_PAN: u64 = 1 << 22;
const PSTATE_DIT: u64 = 1 << 24;
const PSTATE_TCO: u64 = 1 << 25;
const PSTATE_NZCV: u64 = 0xf << 28;

// SCTLR_EL1 (D24.2 SCTLR_EL1).
const SCTLR_SPAN: u64 = 1 << 23;
const SCTLR_DSSBS: u64 = 1 << 44;
const SCTLR_SPINTMASK: u64 = 1 << 62;

/// ESR_ELx.ISS.WnR.
const ISS_WNR: u64 = 1 << 6;
/// Synchronous External abort, not on a translation table walk.
const FSC_SYNC_EXTERNAL: u64 = 0x10;

/// Where the guest was when the exception is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// EL1 with `SP_EL0`.
    El1t,
    /// EL1 with `SP_EL1`.
    El1h,
    /// EL0 in AArch64.
    El0,
    /// EL0 in AArch32.
    Aarch32,
}

impl Origin {
    /// From the guest's PSTATE. With `HCR_EL2.RW` = 1 AArch32 is only
    /// possible at EL0. A PSTATE claiming EL2 or EL3 cannot come from a
    /// guest; it is treated as EL1.
    const fn of(pstate: u64) -> Self {
        if pstate & PSTATE_NRW != 0 {
            Self::Aarch32
        } else if (pstate >> PSTATE_EL_SHIFT) & 0b11 == 0 {
            Self::El0
        } else if pstate & PSTATE_SP != 0 {
            Self::El1h
        } else {
            Self::El1t
        }
    }

    const fn vector_offset(self) -> u64 {
        match self {
            Self::El1t => 0x000,
            Self::El1h => 0x200,
            Self::El0 => 0x400,
            Self::Aarch32 => 0x600,
        }
    }

    const fn is_lower_el(self) -> bool {
        matches!(self, Self::El0 | Self::Aarch32)
    }
}

/// PSTATE on entry to the EL1 vector (see the module docs).
const fn entry_pstate(state: &GuestExceptionState) -> u64 {
    let old = state.pstate;
    let sctlr = state.sctlr_el1;
    let f = state.features;
    let mut new = (old & (PSTATE_NZCV | PSTATE_DIT)) | PSTATE_DAIF | PSTATE_M_EL1H;
    if f.pan && (sctlr & SCTLR_SPAN == 0 || old & PSTATE_PAN != 0) {
        new |= PSTATE_PAN;
    }
    if f.ssbs && sctlr & SCTLR_DSSBS != 0 {
        new |= PSTATE_SSBS;
    }
    if f.mte {
        new |= PSTATE_TCO;
    }
    if f.nmi && sctlr & SCTLR_SPINTMASK == 0 {
        new |= PSTATE_ALLINT;
    }
    new
}

const fn esr(ec: u8, iss: u64) -> u64 {
    ((ec as u64) << 26) | ESR_IL | iss
}

const fn take(state: &GuestExceptionState, esr_el1: u64, far_el1: Option<u64>) -> Injection {
    let origin = Origin::of(state.pstate);
    Injection {
        esr_el1,
        far_el1,
        elr_el1: state.pc,
        spsr_el1: state.pstate,
        // VBAR_EL1[10:0] are RES0: the vector base is 2 KiB aligned.
        pc: (state.vbar_el1 & !0x7ff) | origin.vector_offset(),
        pstate: entry_pstate(state),
    }
}

/// A synchronous External abort on a data access at `far` (e.g. a guest
/// touching unbacked guest-physical memory, or MMIO that cannot be
/// emulated). `write` is the access direction (`WnR`).
pub const fn data_abort(state: &GuestExceptionState, far: u64, write: bool) -> Injection {
    let class = if Origin::of(state.pstate).is_lower_el() {
        ec::DABT_LOWER
    } else {
        ec::DABT_SAME
    };
    let wnr = if write { ISS_WNR } else { 0 };
    take(state, esr(class, wnr | FSC_SYNC_EXTERNAL), Some(far))
}

/// A synchronous External abort on an instruction fetch at `far`.
pub const fn instruction_abort(state: &GuestExceptionState, far: u64) -> Injection {
    let class = if Origin::of(state.pstate).is_lower_el() {
        ec::IABT_LOWER
    } else {
        ec::IABT_SAME
    };
    take(state, esr(class, FSC_SYNC_EXTERNAL), Some(far))
}

/// An UNDEFINED instruction exception (EC 0x00, "Unknown reason").
///
/// Deviation from the original brief, which passed the instruction length:
/// the architecture defines `ESR.IL` as 1 for every exception reported with
/// EC 0x00, whatever the instruction's length, so there is no parameter.
/// `FAR_EL1` is UNKNOWN for this exception and is left unchanged.
pub const fn undefined(state: &GuestExceptionState) -> Injection {
    take(state, esr(ec::UNKNOWN, 0), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VBAR: u64 = 0xffff_8000_1000_0800;
    /// SCTLR_EL1 as Linux sets it, with SPAN = 1 and DSSBS = 0.
    const SCTLR: u64 = 0x0000_0000_34d5_d91d | SCTLR_SPAN;

    fn state(pstate: u64) -> GuestExceptionState {
        GuestExceptionState {
            pstate,
            pc: 0xffff_8000_0012_3454,
            vbar_el1: VBAR,
            sctlr_el1: SCTLR,
            features: PstateFeatures::NONE,
        }
    }

    // Guest PSTATEs.
    const EL1H: u64 = 0x3c5; // DAIF set, EL1h
    const EL1T: u64 = 0x004; // EL1t, interrupts unmasked
    const EL0: u64 = 0x8000_0000; // EL0t, N set
    const AARCH32_USR: u64 = 0x2000_0010 | (1 << 5); // usr mode, Thumb, C set

    #[test]
    fn vector_offsets_for_each_origin() {
        let cases = [
            (EL1T, 0x000),
            (EL1H, 0x200),
            (EL0, 0x400),
            (AARCH32_USR, 0x600),
        ];
        for (pstate, offset) in cases {
            let base = VBAR & !0x7ff;
            assert_eq!(data_abort(&state(pstate), 0, false).pc, base + offset);
            assert_eq!(instruction_abort(&state(pstate), 0).pc, base + offset);
            assert_eq!(undefined(&state(pstate)).pc, base + offset);
        }
        // VBAR_EL1's RES0 low bits are ignored.
        let mut s = state(EL1H);
        s.vbar_el1 = 0x4000_0fff;
        assert_eq!(undefined(&s).pc, 0x4000_0a00);
    }

    #[test]
    fn data_abort_syndrome() {
        // From EL1: EC 0x25, IL, WnR, FSC 0x10.
        let inj = data_abort(&state(EL1H), 0x0a00_0008, true);
        assert_eq!(inj.esr_el1, 0x9600_0050);
        assert_eq!(inj.far_el1, Some(0x0a00_0008));
        // Read from EL0: EC 0x24, WnR clear.
        let inj = data_abort(&state(EL0), 0x1234, false);
        assert_eq!(inj.esr_el1, 0x9200_0010);
        assert_eq!(inj.far_el1, Some(0x1234));
        // AArch32 EL0 is a lower EL too.
        assert_eq!(
            data_abort(&state(AARCH32_USR), 0, true).esr_el1,
            0x9200_0050
        );
        // The ESR decodes back to what was meant (ISV = 0, FnV = 0).
        let crate::esr::Exit::DataAbort(d) = crate::esr::decode(0x9200_0050) else {
            panic!("data abort");
        };
        assert!(d.write && d.far_valid && d.il32 && d.syndrome.is_none());
        assert_eq!(d.fault, crate::esr::FaultStatus::SyncExternal);
    }

    #[test]
    fn instruction_abort_syndrome() {
        let inj = instruction_abort(&state(EL1T), 0xffff_8000_dead_0000);
        assert_eq!(inj.esr_el1, 0x8600_0010);
        assert_eq!(inj.far_el1, Some(0xffff_8000_dead_0000));
        assert_eq!(instruction_abort(&state(EL0), 0).esr_el1, 0x8200_0010);
    }

    #[test]
    fn undefined_syndrome() {
        let inj = undefined(&state(EL1H));
        assert_eq!(inj.esr_el1, 0x0200_0000); // EC 0, IL 1
        assert_eq!(inj.far_el1, None);
        assert_eq!(undefined(&state(AARCH32_USR)).esr_el1, 0x0200_0000);
    }

    #[test]
    fn return_state_is_the_exit_state() {
        for pstate in [EL1H, EL1T, EL0, AARCH32_USR] {
            let s = state(pstate);
            for inj in [
                data_abort(&s, 0, false),
                instruction_abort(&s, 0),
                undefined(&s),
            ] {
                assert_eq!(inj.spsr_el1, pstate);
                assert_eq!(inj.elr_el1, s.pc);
            }
        }
        // BTYPE and SS survive in SPSR_EL1.
        let pstate = EL1H | (0b11 << 10) | (1 << 21);
        assert_eq!(undefined(&state(pstate)).spsr_el1, pstate);
    }

    #[test]
    fn entry_pstate_armv8_0() {
        // From EL1t with interrupts unmasked: EL1h, DAIF masked.
        assert_eq!(undefined(&state(EL1T)).pstate, 0x3c5);
        // NZCV kept; from EL0.
        assert_eq!(undefined(&state(EL0)).pstate, 0x8000_03c5);
        // From AArch32: only NZCV/DIT carry over (no T, no mode bits).
        assert_eq!(undefined(&state(AARCH32_USR)).pstate, 0x2000_03c5);
        // SS, IL, UAO, BTYPE and DIT: all cleared except DIT.
        let noisy = EL1H | (1 << 21) | (1 << 20) | (1 << 23) | (0b10 << 10) | PSTATE_DIT;
        assert_eq!(undefined(&state(noisy)).pstate, 0x3c5 | PSTATE_DIT);
        // Without the features, PAN/SSBS/TCO/ALLINT are never set, even if
        // the guest's SCTLR_EL1 claims otherwise.
        let mut s = state(EL1H | PSTATE_PAN);
        s.sctlr_el1 = SCTLR_DSSBS;
        assert_eq!(undefined(&s).pstate, 0x3c5);
    }

    #[test]
    fn pan_follows_span() {
        let mut s = state(EL0);
        s.features.pan = true;
        // SPAN = 1: PAN kept as it was.
        assert_eq!(undefined(&s).pstate & PSTATE_PAN, 0);
        s.pstate |= PSTATE_PAN;
        assert_eq!(undefined(&s).pstate & PSTATE_PAN, PSTATE_PAN);
        // SPAN = 0: PAN set.
        s.pstate = EL0;
        s.sctlr_el1 &= !SCTLR_SPAN;
        assert_eq!(undefined(&s).pstate & PSTATE_PAN, PSTATE_PAN);
    }

    #[test]
    fn ssbs_follows_dssbs() {
        let mut s = state(EL1H | PSTATE_SSBS);
        s.features.ssbs = true;
        assert_eq!(data_abort(&s, 0, false).pstate & PSTATE_SSBS, 0);
        s.sctlr_el1 |= SCTLR_DSSBS;
        s.pstate = EL1H;
        assert_eq!(data_abort(&s, 0, false).pstate & PSTATE_SSBS, PSTATE_SSBS);
    }

    #[test]
    fn tco_and_allint() {
        let mut s = state(EL1H);
        s.features.mte = true;
        assert_eq!(undefined(&s).pstate & PSTATE_TCO, PSTATE_TCO);
        s.features.nmi = true;
        assert_eq!(undefined(&s).pstate & PSTATE_ALLINT, PSTATE_ALLINT);
        s.sctlr_el1 |= SCTLR_SPINTMASK;
        assert_eq!(undefined(&s).pstate & PSTATE_ALLINT, 0);
    }

    #[test]
    fn features_from_id_registers() {
        assert_eq!(PstateFeatures::from_id_regs(0, 0), PstateFeatures::NONE);
        // Cortex-A76-like: PAN in MMFR1, SSBS in PFR1.
        let f = PstateFeatures::from_id_regs(0x10, 0x0030_0000);
        assert_eq!(
            f,
            PstateFeatures {
                pan: true,
                ssbs: true,
                mte: false,
                nmi: false
            }
        );
        let f = PstateFeatures::from_id_regs((1 << 36) | (2 << 8), 0);
        assert!(f.mte && f.nmi && !f.pan && !f.ssbs);
    }
}
