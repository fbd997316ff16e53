//! Decoding of `ESR_EL2`, the syndrome of an exception taken to EL2, into a
//! typed [`Exit`]. Every guest exit is decoded here, once; handlers match on
//! the result and never mask syndrome bits themselves.
//!
//! References are to the Arm Architecture Reference Manual for A-profile
//! (DDI 0487, issue K.a): the `ESR_EL2` and `HPFAR_EL2` register descriptions
//! in chapter D24 (AArch64 System Register Descriptions), and the per-class
//! ISS encodings listed there ("ISS encoding for an exception from …").
//!
//! Layout of `ESR_EL2` (D24.2, ESR_EL2): `EC` bits \[31:26\], `IL` bit \[25\],
//! `ISS` bits \[24:0\], `ISS2` bits \[55:32\] (not used here).
//!
//! Only exception classes a guest can cause from a lower Exception level are
//! decoded into their own variants; everything else (including aborts taken
//! from EL2 itself, EC 0x21/0x25) becomes [`Exit::Unknown`], carrying the raw
//! fields so the handler can report it.

use crate::access::AccessSize;
use crate::addr::Ipa;

/// Exception class values (`ESR_ELx.EC`, D24.2, ESR_EL2 "EC, bits \[31:26\]").
pub mod ec {
    /// Unknown reason (also used for injected UNDEFINED exceptions).
    pub const UNKNOWN: u8 = 0x00;
    /// Trapped WFI, WFE, WFIT or WFET.
    pub const WFX: u8 = 0x01;
    /// Trapped access to SVE, Advanced SIMD or floating point.
    pub const FP_ASIMD: u8 = 0x07;
    /// HVC executed in AArch32 state.
    pub const HVC32: u8 = 0x12;
    /// SMC executed in AArch32 state.
    pub const SMC32: u8 = 0x13;
    /// HVC executed in AArch64 state.
    pub const HVC64: u8 = 0x16;
    /// SMC executed in AArch64 state (trapped by `HCR_EL2.TSC`).
    pub const SMC64: u8 = 0x17;
    /// Trapped MSR, MRS or System instruction in AArch64 state.
    pub const SYS64: u8 = 0x18;
    /// Instruction Abort from a lower Exception level.
    pub const IABT_LOWER: u8 = 0x20;
    /// Instruction Abort taken without a change in Exception level.
    pub const IABT_SAME: u8 = 0x21;
    /// Data Abort from a lower Exception level.
    pub const DABT_LOWER: u8 = 0x24;
    /// Data Abort taken without a change in Exception level.
    pub const DABT_SAME: u8 = 0x25;
}

/// `ESR_ELx.IL`: the trapped instruction was 32 bits long.
pub const ESR_IL: u64 = 1 << 25;
/// Where `ESR_ELx.EC` (6 bits) starts.
pub const EC_SHIFT: u32 = 26;
const ISS_MASK: u64 = (1 << 25) - 1;

/// A guest exit, decoded from `ESR_EL2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `HVC #imm` (EC 0x16, or EC 0x12 from AArch32; see [`decode`]).
    /// `ELR_EL2` already points at the next instruction.
    Hvc {
        /// The instruction's 16-bit immediate.
        imm: u16,
    },
    /// `SMC #imm` trapped by `HCR_EL2.TSC` (EC 0x17). `ELR_EL2` points at the
    /// SMC itself: the handler must advance the PC by 4.
    Smc {
        /// The instruction's 16-bit immediate.
        imm: u16,
    },
    /// Data Abort from the guest (EC 0x24), typically a stage-2 fault on MMIO.
    DataAbort(DataAbort),
    /// Instruction Abort from the guest (EC 0x20).
    InstructionAbort(InstructionAbort),
    /// Trapped `MSR`/`MRS`/system instruction (EC 0x18).
    SysReg(SysRegAccess),
    /// Trapped WFI/WFE/WFIT/WFET (EC 0x01).
    Wfx(Wfx),
    /// Trapped SVE, Advanced SIMD or floating-point access (EC 0x07), used
    /// for lazy FP context switching.
    FpAccess,
    /// Any other exception class, with the raw fields.
    Unknown {
        /// `ESR_EL2.EC`.
        ec: u8,
        /// `ESR_EL2.ISS`.
        iss: u32,
        /// `ESR_EL2.IL`: the trapping instruction was 32 bits long.
        il32: bool,
    },
}

/// A Data Abort's syndrome (D24.2, ESR_EL2, "ISS encoding for an exception
/// from a Data Abort").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// The instruction syndrome: `Some` iff `ISV` (bit 24) is 1. When `None`,
    /// the access must be decoded from the guest instruction
    /// ([`crate::insn`]).
    pub syndrome: Option<AccessSyndrome>,
    /// `WnR` (bit 6): the abort was caused by a write.
    pub write: bool,
    /// `S1PTW` (bit 7): stage-2 fault on a stage-1 translation table walk.
    pub s1ptw: bool,
    /// `CM` (bit 8): caused by a cache maintenance or address translation
    /// instruction.
    pub cache_maintenance: bool,
    /// `!FnV` (bit 10): `FAR_EL2` holds a valid address.
    pub far_valid: bool,
    /// `EA` (bit 9): implementation-defined external abort type.
    pub external: bool,
    /// `DFSC` (bits \[5:0\]).
    pub fault: FaultStatus,
    /// `IL`: the faulting instruction was 32 bits long.
    pub il32: bool,
}

/// The instruction syndrome of a Data Abort with `ISV == 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessSyndrome {
    /// `SAS` (bits \[23:22\]): access size.
    pub size: AccessSize,
    /// `SSE` (bit 21): the loaded value must be sign-extended.
    pub sign_extend: bool,
    /// `SRT` (bits \[20:16\]): the transfer register; 31 means XZR/WZR.
    pub reg: u8,
    /// `SF` (bit 15): the transfer register is 64 bits wide (X, not W).
    pub sixty_four: bool,
    /// `AR` (bit 14): the instruction had acquire/release semantics.
    pub acquire_release: bool,
}

/// A fault status code (`DFSC`/`IFSC`, 6 bits), D24.2 ESR_EL2 ISS encodings
/// for Data and Instruction Aborts.
///
/// Codes for lookup level -1 and -2 (FEAT_LPA2, FEAT_D128), parity/ECC
/// errors, tag checks and granule protection faults are reported as
/// [`FaultStatus::Other`] with the raw code: Stratum's stage 2 does not use
/// those levels and treats the rest alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// Address size fault at `level` (0b0000LL).
    AddressSize {
        /// Lookup level 0–3.
        level: u8,
    },
    /// Translation fault at `level` (0b0001LL).
    Translation {
        /// Lookup level 0–3.
        level: u8,
    },
    /// Access flag fault at `level` (0b0010LL).
    AccessFlag {
        /// Lookup level 0–3.
        level: u8,
    },
    /// Permission fault at `level` (0b0011LL).
    Permission {
        /// Lookup level 0–3.
        level: u8,
    },
    /// Synchronous External abort, not on a translation table walk (0x10).
    SyncExternal,
    /// Synchronous External abort on a translation table walk at `level`
    /// (0b0101LL).
    SyncExternalOnWalk {
        /// Lookup level 0–3.
        level: u8,
    },
    /// Alignment fault (0x21).
    Alignment,
    /// TLB conflict abort (0x30).
    TlbConflict,
    /// Any other code, raw.
    Other(u8),
}

impl FaultStatus {
    /// Decodes a 6-bit `DFSC`/`IFSC`; bits above bit 5 are ignored.
    pub const fn from_fsc(fsc: u8) -> Self {
        let fsc = fsc & 0x3f;
        let level = fsc & 0b11;
        match fsc {
            0x00..=0x03 => Self::AddressSize { level },
            0x04..=0x07 => Self::Translation { level },
            0x08..=0x0b => Self::AccessFlag { level },
            0x0c..=0x0f => Self::Permission { level },
            0x10 => Self::SyncExternal,
            0x14..=0x17 => Self::SyncExternalOnWalk { level },
            0x21 => Self::Alignment,
            0x30 => Self::TlbConflict,
            other => Self::Other(other),
        }
    }

    /// The 6-bit code this status was decoded from (the inverse of
    /// [`FaultStatus::from_fsc`]; levels above 3 are masked to 2 bits).
    pub const fn to_fsc(self) -> u8 {
        match self {
            Self::AddressSize { level } => level & 3,
            Self::Translation { level } => 0x04 | (level & 3),
            Self::AccessFlag { level } => 0x08 | (level & 3),
            Self::Permission { level } => 0x0c | (level & 3),
            Self::SyncExternal => 0x10,
            Self::SyncExternalOnWalk { level } => 0x14 | (level & 3),
            Self::Alignment => 0x21,
            Self::TlbConflict => 0x30,
            Self::Other(code) => code & 0x3f,
        }
    }
}

/// An Instruction Abort's syndrome (D24.2, ESR_EL2, "ISS encoding for an
/// exception from an Instruction Abort").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionAbort {
    /// `IFSC` (bits \[5:0\]).
    pub fault: FaultStatus,
    /// `S1PTW` (bit 7): stage-2 fault on a stage-1 translation table walk.
    pub s1ptw: bool,
    /// `!FnV` (bit 10): `FAR_EL2` holds a valid address.
    pub far_valid: bool,
}

/// A trapped `MSR`, `MRS` or system instruction (D24.2, ESR_EL2, "ISS
/// encoding for an exception from MSR, MRS, or System instruction execution
/// in AArch64 state").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// `Op0` (bits \[21:20\]).
    pub op0: u8,
    /// `Op1` (bits \[16:14\]).
    pub op1: u8,
    /// `CRn` (bits \[13:10\]).
    pub crn: u8,
    /// `CRm` (bits \[4:1\]).
    pub crm: u8,
    /// `Op2` (bits \[19:17\]).
    pub op2: u8,
    /// `Rt` (bits \[9:5\]); 31 means XZR.
    pub rt: u8,
    /// `Direction` (bit 0) is 1: a read (`MRS`). Otherwise a write (`MSR`)
    /// or a system instruction.
    pub read: bool,
}

impl SysRegAccess {
    /// The register's identity packed as [`sysreg::encode`] does, for
    /// matching against the constants in [`sysreg`].
    pub const fn encoding(&self) -> u32 {
        sysreg::encode(self.op0, self.op1, self.crn, self.crm, self.op2)
    }
}

/// System register identities, packed by [`sysreg::encode`].
pub mod sysreg {
    /// Packs `(op0, op1, CRn, CRm, op2)` into the positions they take in the
    /// `MRS`/`MSR` instruction (bits \[20:5\]) shifted down by 5:
    /// `op0` \[15:14\], `op1` \[13:11\], `CRn` \[10:7\], `CRm` \[6:3\],
    /// `op2` \[2:0\]. Out-of-range inputs are masked to their field width.
    pub const fn encode(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> u32 {
        ((op0 as u32 & 0x3) << 14)
            | ((op1 as u32 & 0x7) << 11)
            | ((crn as u32 & 0xf) << 7)
            | ((crm as u32 & 0xf) << 3)
            | (op2 as u32 & 0x7)
    }

    /// `ID_AA64PFR0_EL1` (3, 0, c0, c4, 0).
    pub const ID_AA64PFR0_EL1: u32 = encode(3, 0, 0, 4, 0);
    /// `ID_AA64PFR1_EL1` (3, 0, c0, c4, 1).
    pub const ID_AA64PFR1_EL1: u32 = encode(3, 0, 0, 4, 1);
    /// `ID_AA64ZFR0_EL1` (3, 0, c0, c4, 4).
    pub const ID_AA64ZFR0_EL1: u32 = encode(3, 0, 0, 4, 4);
    /// `ID_AA64DFR0_EL1` (3, 0, c0, c5, 0).
    pub const ID_AA64DFR0_EL1: u32 = encode(3, 0, 0, 5, 0);
    /// `ID_AA64DFR1_EL1` (3, 0, c0, c5, 1).
    pub const ID_AA64DFR1_EL1: u32 = encode(3, 0, 0, 5, 1);
    /// `ID_AA64ISAR0_EL1` (3, 0, c0, c6, 0).
    pub const ID_AA64ISAR0_EL1: u32 = encode(3, 0, 0, 6, 0);
    /// `ID_AA64ISAR1_EL1` (3, 0, c0, c6, 1).
    pub const ID_AA64ISAR1_EL1: u32 = encode(3, 0, 0, 6, 1);
    /// `ID_AA64ISAR2_EL1` (3, 0, c0, c6, 2).
    pub const ID_AA64ISAR2_EL1: u32 = encode(3, 0, 0, 6, 2);
    /// `ID_AA64MMFR0_EL1` (3, 0, c0, c7, 0).
    pub const ID_AA64MMFR0_EL1: u32 = encode(3, 0, 0, 7, 0);
    /// `ID_AA64MMFR1_EL1` (3, 0, c0, c7, 1).
    pub const ID_AA64MMFR1_EL1: u32 = encode(3, 0, 0, 7, 1);
    /// `ID_AA64MMFR2_EL1` (3, 0, c0, c7, 2).
    pub const ID_AA64MMFR2_EL1: u32 = encode(3, 0, 0, 7, 2);
    /// `ICC_SGI1R_EL1` (3, 0, c12, c11, 5): GICv3 Group 1 SGI generation.
    pub const ICC_SGI1R_EL1: u32 = encode(3, 0, 12, 11, 5);
    /// `ICC_ASGI1R_EL1` (3, 0, c12, c11, 6): GICv3 alias Group 1 SGI.
    pub const ICC_ASGI1R_EL1: u32 = encode(3, 0, 12, 11, 6);
    /// `ICC_SGI0R_EL1` (3, 0, c12, c11, 7): GICv3 Group 0 SGI generation.
    pub const ICC_SGI0R_EL1: u32 = encode(3, 0, 12, 11, 7);
}

/// Which wait-for instruction trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WfxKind {
    /// `WFI` (TI = 0b00).
    Wfi,
    /// `WFE` (TI = 0b01).
    Wfe,
    /// `WFIT` (TI = 0b10, FEAT_WFxT).
    Wfit,
    /// `WFET` (TI = 0b11, FEAT_WFxT).
    Wfet,
}

/// A trapped WFx (D24.2, ESR_EL2, "ISS encoding for an exception from a WF*
/// instruction").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wfx {
    /// Which instruction (`TI`, bits \[1:0\]).
    pub kind: WfxKind,
    /// For WFIT/WFET with `RV` (bit 2) set: the register (`Rn`, bits
    /// \[9:5\]) holding the timeout, compared against `CNTVCT_EL0`.
    /// Added beyond the original brief: emulating WFxT needs it.
    pub timeout_reg: Option<u8>,
}

/// Which wait-for instruction a WFx syndrome (EC 0x01) names: its `TI`
/// field, bits \[1:0\].
#[inline]
pub const fn wfx_kind(esr: u64) -> WfxKind {
    match esr & 0b11 {
        0 => WfxKind::Wfi,
        1 => WfxKind::Wfe,
        2 => WfxKind::Wfit,
        _ => WfxKind::Wfet,
    }
}

const fn bit(v: u64, n: u32) -> bool {
    (v >> n) & 1 == 1
}

const fn field(v: u64, lsb: u32, width: u32) -> u64 {
    (v >> lsb) & ((1 << width) - 1)
}

/// Decodes `ESR_EL2` into an [`Exit`].
///
/// HVC from AArch32 (EC 0x12) becomes [`Exit::Hvc`]: it is unconditional,
/// carries the same 16-bit immediate and has the same preferred return
/// address, and SMCCC calls from an AArch32 caller use the SMC32/HVC32
/// convention, whose arguments live in the low 32 bits of the registers.
/// SMC from AArch32 (EC 0x13) becomes [`Exit::Unknown`]: it is conditional
/// (`ISS.CCKNOWNPASS`/`COND`), so a trap does not imply it would have
/// executed, and it carries no immediate. With `HCR_EL2.RW == 1` neither can
/// occur (AArch32 is then only possible at EL0, where HVC and SMC are
/// UNDEFINED), so the handler's Unknown path (inject UNDEFINED) is the
/// right default.
pub fn decode(esr: u64) -> Exit {
    let ec = field(esr, EC_SHIFT, 6) as u8;
    let il32 = esr & ESR_IL != 0;
    let iss = esr & ISS_MASK;
    match ec {
        ec::HVC64 | ec::HVC32 => Exit::Hvc {
            imm: field(iss, 0, 16) as u16,
        },
        ec::SMC64 => Exit::Smc {
            imm: field(iss, 0, 16) as u16,
        },
        ec::DABT_LOWER => Exit::DataAbort(decode_data_abort(iss, il32)),
        ec::IABT_LOWER => Exit::InstructionAbort(InstructionAbort {
            fault: FaultStatus::from_fsc(field(iss, 0, 6) as u8),
            s1ptw: bit(iss, 7),
            far_valid: !bit(iss, 10),
        }),
        ec::SYS64 => Exit::SysReg(sysreg_fields(iss)),
        ec::WFX => {
            let kind = wfx_kind(esr);
            // RV is only meaningful when TI[1] == 1 (WFIT/WFET).
            let timeout_reg = if bit(iss, 1) && bit(iss, 2) {
                Some(field(iss, 5, 5) as u8)
            } else {
                None
            };
            Exit::Wfx(Wfx { kind, timeout_reg })
        }
        ec::FP_ASIMD => Exit::FpAccess,
        _ => Exit::Unknown {
            ec,
            iss: iss as u32,
            il32,
        },
    }
}

/// The access of a data abort that the direct MMIO route takes
/// ([`crate::vmexit::mmio_access`]), from `ESR_EL2` alone: a Data Abort from
/// the guest (EC 0x24) by a 32-bit instruction (IL) with a valid
/// instruction syndrome (ISV), neither on a stage-1 table walk (S1PTW) nor
/// by a cache maintenance instruction (CM). `None` for every other
/// syndrome.
///
/// It reads only those fields and the syndrome's (one mask-and-compare,
/// then shifts), where [`decode`] decodes every field of every class;
/// both agree on every `ESR_EL2` value (a property test checks it).
#[inline]
pub const fn mmio_syndrome(esr: u64) -> Option<(AccessSyndrome, bool)> {
    const EC_MASK: u64 = 0x3f << EC_SHIFT;
    const ISV: u64 = 1 << 24;
    const CM: u64 = 1 << 8;
    const S1PTW: u64 = 1 << 7;
    const WNR: u64 = 1 << 6;
    const MASK: u64 = EC_MASK | ESR_IL | ISV | CM | S1PTW;
    const WANT: u64 = ((ec::DABT_LOWER as u64) << EC_SHIFT) | ESR_IL | ISV;
    if esr & MASK != WANT {
        return None;
    }
    Some((syndrome_of(esr), esr & WNR != 0))
}

/// The instruction syndrome fields of a Data Abort's ISS (valid when ISV).
#[inline]
const fn syndrome_of(iss: u64) -> AccessSyndrome {
    let size = match field(iss, 22, 2) {
        0 => AccessSize::Byte,
        1 => AccessSize::Half,
        2 => AccessSize::Word,
        _ => AccessSize::Double,
    };
    AccessSyndrome {
        size,
        sign_extend: bit(iss, 21),
        reg: field(iss, 16, 5) as u8,
        sixty_four: bit(iss, 15),
        acquire_release: bit(iss, 14),
    }
}

/// A trapped `MSR`/`MRS` (EC 0x18) from `ESR_EL2` alone, as [`decode`]
/// gives it in [`Exit::SysReg`]; `None` for every other class.
#[inline]
pub const fn sysreg_access(esr: u64) -> Option<SysRegAccess> {
    if field(esr, EC_SHIFT, 6) as u8 != ec::SYS64 {
        return None;
    }
    Some(sysreg_fields(esr & ISS_MASK))
}

/// The ISS fields of a trapped `MSR`/`MRS`.
#[inline]
const fn sysreg_fields(iss: u64) -> SysRegAccess {
    SysRegAccess {
        op0: field(iss, 20, 2) as u8,
        op2: field(iss, 17, 3) as u8,
        op1: field(iss, 14, 3) as u8,
        crn: field(iss, 10, 4) as u8,
        rt: field(iss, 5, 5) as u8,
        crm: field(iss, 1, 4) as u8,
        read: bit(iss, 0),
    }
}

fn decode_data_abort(iss: u64, il32: bool) -> DataAbort {
    let syndrome = if bit(iss, 24) {
        Some(syndrome_of(iss))
    } else {
        None
    };
    DataAbort {
        syndrome,
        write: bit(iss, 6),
        s1ptw: bit(iss, 7),
        cache_maintenance: bit(iss, 8),
        external: bit(iss, 9),
        far_valid: !bit(iss, 10),
        fault: FaultStatus::from_fsc(field(iss, 0, 6) as u8),
        il32,
    }
}

/// The faulting IPA of a stage-2 abort: `HPFAR_EL2.FIPA` (bits \[43:4\],
/// holding IPA\[51:12\]; D24.2, HPFAR_EL2) for the page, and the low 12 bits
/// of `FAR_EL2` for the offset within it.
///
/// `HPFAR_EL2.NS` (bit 63) and bits \[62:44\] are ignored: Stratum's stage 2
/// uses at most 52-bit IPAs (no FEAT_D128 56-bit IPAs). `HPFAR_EL2` is only
/// valid for stage-2 faults (translation, access flag, permission, address
/// size) and for a stage-2 fault on a stage-1 walk; the caller must not use
/// this for other aborts.
pub const fn fault_ipa(hpfar_el2: u64, far_el2: u64) -> Ipa {
    const FIPA_MASK: u64 = ((1 << 40) - 1) << 4; // bits [43:4]
    Ipa(((hpfar_el2 & FIPA_MASK) << 8) | (far_el2 & 0xfff))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an ESR from class, IL and ISS, to state test vectors clearly.
    fn esr(ec: u8, il: bool, iss: u32) -> u64 {
        (u64::from(ec) << 26) | if il { ESR_IL } else { 0 } | u64::from(iss)
    }

    #[test]
    fn builder_matches_real_values() {
        assert_eq!(esr(0x16, true, 0), 0x5a00_0000);
        assert_eq!(esr(0x24, true, 0x0183_0047), 0x9383_0047);
    }

    #[test]
    fn real_esr_values() {
        // (ESR, expected exit). Values as a CPU reports them.
        let cases: &[(u64, Exit)] = &[
            // HVC #0 from AArch64.
            (0x5a00_0000, Exit::Hvc { imm: 0 }),
            // HVC #0x4711.
            (0x5a00_4711, Exit::Hvc { imm: 0x4711 }),
            // HVC #1 from AArch32 (EC 0x12): same exit.
            (0x4a00_0001, Exit::Hvc { imm: 1 }),
            // SMC #0 trapped by HCR_EL2.TSC.
            (0x5e00_0000, Exit::Smc { imm: 0 }),
            (0x5e00_ffff, Exit::Smc { imm: 0xffff }),
            // SMC from AArch32: Unknown, raw fields kept.
            (
                0x4e08_0000,
                Exit::Unknown {
                    ec: 0x13,
                    iss: 0x0008_0000,
                    il32: true,
                },
            ),
            // WFI, WFE.
            (
                0x0600_0000,
                Exit::Wfx(Wfx {
                    kind: WfxKind::Wfi,
                    timeout_reg: None,
                }),
            ),
            (
                0x0600_0001,
                Exit::Wfx(Wfx {
                    kind: WfxKind::Wfe,
                    timeout_reg: None,
                }),
            ),
            // WFIT x3 (RV = 1, Rn = 3), WFET x30.
            (
                0x0600_0066,
                Exit::Wfx(Wfx {
                    kind: WfxKind::Wfit,
                    timeout_reg: Some(3),
                }),
            ),
            (
                0x0600_03c7,
                Exit::Wfx(Wfx {
                    kind: WfxKind::Wfet,
                    timeout_reg: Some(30),
                }),
            ),
            // WFIT with RV = 0: no register.
            (
                0x0600_0062,
                Exit::Wfx(Wfx {
                    kind: WfxKind::Wfit,
                    timeout_reg: None,
                }),
            ),
            // FP/SIMD access trap.
            (0x1e00_0000, Exit::FpAccess),
            // MRS x0, ID_AA64MMFR0_EL1.
            (
                0x6230_000f,
                Exit::SysReg(SysRegAccess {
                    op0: 3,
                    op1: 0,
                    crn: 0,
                    crm: 7,
                    op2: 0,
                    rt: 0,
                    read: true,
                }),
            ),
            // MSR ICC_SGI1R_EL1, x9: op0 3, op2 5, op1 0, CRn 12, Rt 9,
            // CRm 11, write.
            (
                0x623a_3136,
                Exit::SysReg(SysRegAccess {
                    op0: 3,
                    op1: 0,
                    crn: 12,
                    crm: 11,
                    op2: 5,
                    rt: 9,
                    read: false,
                }),
            ),
            // Instruction abort, translation fault level 3.
            (
                0x8200_0007,
                Exit::InstructionAbort(InstructionAbort {
                    fault: FaultStatus::Translation { level: 3 },
                    s1ptw: false,
                    far_valid: true,
                }),
            ),
            // Instruction abort on a stage-1 walk, permission fault level 2.
            (
                0x8200_008e,
                Exit::InstructionAbort(InstructionAbort {
                    fault: FaultStatus::Permission { level: 2 },
                    s1ptw: true,
                    far_valid: true,
                }),
            ),
            // Instruction abort, synchronous external, FnV set.
            (
                0x8200_0410,
                Exit::InstructionAbort(InstructionAbort {
                    fault: FaultStatus::SyncExternal,
                    s1ptw: false,
                    far_valid: false,
                }),
            ),
            // Unallocated class 0x3f, 16-bit instruction.
            (
                0xfc00_1234,
                Exit::Unknown {
                    ec: 0x3f,
                    iss: 0x1234,
                    il32: false,
                },
            ),
            // Data abort from EL2 itself: not a guest exit.
            (
                0x9600_0010,
                Exit::Unknown {
                    ec: 0x25,
                    iss: 0x10,
                    il32: true,
                },
            ),
        ];
        for &(value, expected) in cases {
            assert_eq!(decode(value), expected, "ESR {value:#x}");
        }
    }

    #[test]
    fn data_abort_str_w3_with_syndrome() {
        // STR w3, [x0] to MMIO: ISV, SAS = word, SRT = 3, WnR, DFSC =
        // translation fault level 3.
        let Exit::DataAbort(abort) = decode(0x9383_0047) else {
            panic!("not a data abort");
        };
        assert_eq!(
            abort,
            DataAbort {
                syndrome: Some(AccessSyndrome {
                    size: AccessSize::Word,
                    sign_extend: false,
                    reg: 3,
                    sixty_four: false,
                    acquire_release: false,
                }),
                write: true,
                s1ptw: false,
                cache_maintenance: false,
                far_valid: true,
                external: false,
                fault: FaultStatus::Translation { level: 3 },
                il32: true,
            }
        );
    }

    #[test]
    fn data_abort_ldp_without_syndrome() {
        // LDP to MMIO: ISV = 0, read, translation fault level 2.
        let Exit::DataAbort(abort) = decode(0x9200_0006) else {
            panic!("not a data abort");
        };
        assert_eq!(abort.syndrome, None);
        assert!(!abort.write);
        assert_eq!(abort.fault, FaultStatus::Translation { level: 2 });
    }

    #[test]
    fn data_abort_flag_bits() {
        let flags = [
            (1 << 6, "wnr"),
            (1 << 7, "s1ptw"),
            (1 << 8, "cm"),
            (1 << 9, "ea"),
            (1 << 10, "fnv"),
        ];
        for (bitval, name) in flags {
            let Exit::DataAbort(a) = decode(esr(0x24, true, bitval)) else {
                panic!("not a data abort");
            };
            assert_eq!(a.write, name == "wnr", "{name}");
            assert_eq!(a.s1ptw, name == "s1ptw", "{name}");
            assert_eq!(a.cache_maintenance, name == "cm", "{name}");
            assert_eq!(a.external, name == "ea", "{name}");
            assert_eq!(a.far_valid, name != "fnv", "{name}");
            assert_eq!(a.syndrome, None);
        }
        let Exit::DataAbort(a) = decode(esr(0x24, false, 0)) else {
            panic!("not a data abort");
        };
        assert!(!a.il32);
    }

    #[test]
    fn syndrome_fields_exhaustive() {
        // Every SAS × SSE × SRT × SF × AR × WnR combination.
        for sas in 0..4u32 {
            for sse in 0..2u32 {
                for srt in 0..32u32 {
                    for sf in 0..2u32 {
                        for ar in 0..2u32 {
                            for wnr in 0..2u32 {
                                let iss = (1 << 24)
                                    | (sas << 22)
                                    | (sse << 21)
                                    | (srt << 16)
                                    | (sf << 15)
                                    | (ar << 14)
                                    | (wnr << 6)
                                    | 0x07;
                                let Exit::DataAbort(a) = decode(esr(0x24, true, iss)) else {
                                    panic!("not a data abort");
                                };
                                let s = a.syndrome.expect("ISV set");
                                assert_eq!(Some(s.size), AccessSize::from_log2(sas));
                                assert_eq!(s.sign_extend, sse == 1);
                                assert_eq!(u32::from(s.reg), srt);
                                assert_eq!(s.sixty_four, sf == 1);
                                assert_eq!(s.acquire_release, ar == 1);
                                assert_eq!(a.write, wnr == 1);
                                assert_eq!(a.fault, FaultStatus::Translation { level: 3 });
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fault_status_codes() {
        let cases = [
            (0x00, FaultStatus::AddressSize { level: 0 }),
            (0x03, FaultStatus::AddressSize { level: 3 }),
            (0x04, FaultStatus::Translation { level: 0 }),
            (0x05, FaultStatus::Translation { level: 1 }),
            (0x06, FaultStatus::Translation { level: 2 }),
            (0x07, FaultStatus::Translation { level: 3 }),
            (0x09, FaultStatus::AccessFlag { level: 1 }),
            (0x0b, FaultStatus::AccessFlag { level: 3 }),
            (0x0d, FaultStatus::Permission { level: 1 }),
            (0x0f, FaultStatus::Permission { level: 3 }),
            (0x10, FaultStatus::SyncExternal),
            (0x11, FaultStatus::Other(0x11)), // tag check fault
            (0x13, FaultStatus::Other(0x13)), // external abort on walk, level -1
            (0x14, FaultStatus::SyncExternalOnWalk { level: 0 }),
            (0x17, FaultStatus::SyncExternalOnWalk { level: 3 }),
            (0x18, FaultStatus::Other(0x18)), // parity/ECC
            (0x21, FaultStatus::Alignment),
            (0x2b, FaultStatus::Other(0x2b)), // translation fault, level -1
            (0x30, FaultStatus::TlbConflict),
            (0x35, FaultStatus::Other(0x35)),
        ];
        for (code, expected) in cases {
            assert_eq!(FaultStatus::from_fsc(code), expected, "FSC {code:#x}");
        }
        // High bits are ignored.
        assert_eq!(
            FaultStatus::from_fsc(0xc7),
            FaultStatus::Translation { level: 3 }
        );
        // Round trip for every 6-bit code.
        for code in 0..64u8 {
            assert_eq!(FaultStatus::from_fsc(code).to_fsc(), code);
        }
    }

    #[test]
    fn sysreg_fields_exhaustive_and_encoding() {
        for op0 in 0..4u32 {
            for op1 in 0..8u32 {
                for crn in 0..16u32 {
                    for crm in 0..16u32 {
                        for op2 in 0..8u32 {
                            let rt = (op1 * 5 + crm) % 32;
                            let dir = crn & 1;
                            let iss = (op0 << 20)
                                | (op2 << 17)
                                | (op1 << 14)
                                | (crn << 10)
                                | (rt << 5)
                                | (crm << 1)
                                | dir;
                            let Exit::SysReg(s) = decode(esr(0x18, true, iss)) else {
                                panic!("not a sysreg trap");
                            };
                            assert_eq!(
                                (s.op0, s.op1, s.crn, s.crm, s.op2, s.rt, s.read),
                                (
                                    op0 as u8,
                                    op1 as u8,
                                    crn as u8,
                                    crm as u8,
                                    op2 as u8,
                                    rt as u8,
                                    dir == 1
                                )
                            );
                            // The packing is the MRS encoding's bits [20:5].
                            let mrs = 0xd520_0000
                                | (op0 << 19)
                                | (op1 << 16)
                                | (crn << 12)
                                | (crm << 8)
                                | (op2 << 5);
                            assert_eq!(s.encoding(), (mrs >> 5) & 0xffff);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sysreg_constants_match_instruction_encodings() {
        // `mrs x0, <reg>` words as assembled by llvm-mc (`msr` for write-only
        // registers); the packed identity
        // is bits [20:5].
        let cases = [
            (0xd538_0400u32, sysreg::ID_AA64PFR0_EL1),
            (0xd538_0420, sysreg::ID_AA64PFR1_EL1),
            (0xd538_0500, sysreg::ID_AA64DFR0_EL1),
            (0xd538_0600, sysreg::ID_AA64ISAR0_EL1),
            (0xd538_0620, sysreg::ID_AA64ISAR1_EL1),
            (0xd538_0700, sysreg::ID_AA64MMFR0_EL1),
            (0xd538_0720, sysreg::ID_AA64MMFR1_EL1),
            (0xd538_0740, sysreg::ID_AA64MMFR2_EL1),
            (0xd518_cba0, sysreg::ICC_SGI1R_EL1), // msr (write-only)
        ];
        for (word, constant) in cases {
            assert_eq!((word >> 5) & 0xffff, constant, "{word:#x}");
        }
        // And through the decoder: MRS x0, ID_AA64MMFR0_EL1.
        let Exit::SysReg(s) = decode(0x6230_000f) else {
            panic!("not a sysreg trap");
        };
        assert_eq!(s.encoding(), sysreg::ID_AA64MMFR0_EL1);
    }

    #[test]
    fn hpfar_math() {
        // IPA 0x0900_0000 (PL011) + 0x18: HPFAR.FIPA = IPA >> 12 at bit 4.
        let hpfar = (0x0900_0000u64 >> 12) << 4;
        assert_eq!(fault_ipa(hpfar, 0xffff_8000_1234_5018), Ipa(0x0900_0018));
        // Highest 52-bit IPA page.
        let top = ((1u64 << 52) - 0x1000) >> 12 << 4;
        assert_eq!(fault_ipa(top, 0xfff), Ipa((1 << 52) - 1));
        // NS bit and RES0 bits above FIPA are ignored, as are the low bits.
        let noisy = hpfar | (1 << 63) | (0xf << 44) | 0xf;
        assert_eq!(fault_ipa(noisy, 0x4), Ipa(0x0900_0004));
        assert_eq!(fault_ipa(0, 0), Ipa(0));
    }

    /// What [`decode`] says the direct MMIO route may take.
    fn reference_mmio(esr: u64) -> Option<(AccessSyndrome, bool)> {
        match decode(esr) {
            Exit::DataAbort(a) if !a.s1ptw && !a.cache_maintenance && a.il32 => {
                a.syndrome.map(|s| (s, a.write))
            }
            _ => None,
        }
    }

    #[test]
    fn lean_decoders_on_real_values() {
        // ldr w1, [x0] to a device page (translation fault, level 3).
        let load = esr(0x24, true, 0x0181_0007);
        let (s, write) = mmio_syndrome(load).expect("a syndrome-carrying load");
        assert!(!write);
        assert_eq!((s.size, s.reg, s.sixty_four), (AccessSize::Word, 1, false));
        assert_eq!(mmio_syndrome(load | 1 << 6).map(|(_, w)| w), Some(true));
        // Each of the fields that turn it away.
        assert_eq!(mmio_syndrome(load & !(1 << 24)), None, "ISV=0");
        assert_eq!(mmio_syndrome(load & !ESR_IL), None, "16-bit");
        assert_eq!(mmio_syndrome(load | 1 << 7), None, "S1PTW");
        assert_eq!(mmio_syndrome(load | 1 << 8), None, "CM");
        assert_eq!(
            mmio_syndrome(esr(0x25, true, 0x0181_0007)),
            None,
            "from EL2"
        );
        assert_eq!(
            sysreg_access(0x6230_000f).map(|a| a.encoding()),
            Some(sysreg::ID_AA64MMFR0_EL1)
        );
        assert_eq!(sysreg_access(esr(0x16, true, 0)), None);
    }

    proptest::proptest! {
        #[test]
        fn lean_decoders_agree_with_decode(esr: u64, ec in proptest::sample::select(vec![0x24u8, 0x18, 0x16, 0x25, 0x01])) {
            // Half the cases with a class the lean decoders look for.
            let esr = if esr & 1 == 0 { esr & !(0x3f << 26) | u64::from(ec) << 26 } else { esr };
            proptest::prop_assert_eq!(mmio_syndrome(esr), reference_mmio(esr));
            let expect = match decode(esr) {
                Exit::SysReg(a) => Some(a),
                _ => None,
            };
            proptest::prop_assert_eq!(sysreg_access(esr), expect);
        }
    }
}
