//! The feature ID registers that `HCR_EL2.TID3` traps, and what a guest
//! reads from them.
//!
//! TID3 traps EL1 reads of the "group 3" ID space: `op0 = 3, op1 = 0,
//! CRn = 0, CRm = 1..=7` (Arm ARM D19.2, `HCR_EL2.TID3`; the
//! `ID_AA64*`, AArch32 `ID_*` and `MVFR*` registers and the reserved
//! encodings among them). `CRm = 0` (`MIDR`, `MPIDR`, `REVIDR`) is not in the
//! group: the first two are virtualized by `VPIDR_EL2`/`VMPIDR_EL2`, the
//! third is TID1's.
//!
//! Policy: an allocated register reads as the hardware's value (the glue
//! reads it at EL2, [`crate::vmexit::ExitEnv::id_register`]), so a guest sees
//! what it would without the trap; a reserved encoding reads as zero (as the
//! architecture defines it), so a feature this table does not know is never
//! advertised. Writes are not in the trapped group (`MSR` to an ID register
//! is UNDEFINED at EL1 and never reaches EL2); should one arrive anyway, the
//! exit policy injects an undefined-instruction exception.

use crate::esr::SysRegAccess;
use crate::esr::sysreg::encode;

/// What a read of a register in the TID3 group returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdRead {
    /// An allocated ID register: the hardware's value of the register with
    /// this encoding ([`crate::esr::sysreg::encode`] packing).
    Hardware(u32),
    /// A reserved encoding in the group: reads as zero.
    Zero,
}

/// The allocated registers of the group (Arm ARM DDI 0487 K.a, table
/// "Instruction encodings for non-Debug System register accesses",
/// `op0 = 3, op1 = 0, CRn = 0`): for each `CRm` (the index), bit `op2` is
/// set when that encoding names a register. A bitmap, not a list: this is
/// looked up on every trapped read.
///
/// - `CRm = 1`: `ID_PFR0`, `ID_PFR1`, `ID_DFR0`, `ID_AFR0`, `ID_MMFR0..3`;
/// - `CRm = 2`: `ID_ISAR0..5`, `ID_MMFR4`, `ID_ISAR6`;
/// - `CRm = 3`: `MVFR0..2` (op2 0–2), `ID_PFR2`, `ID_DFR1`, `ID_MMFR5` (4–6);
/// - `CRm = 4`: `ID_AA64PFR0..2` (0–2), `ZFR0`, `SMFR0` (4, 5), `FPFR0` (7);
/// - `CRm = 5`: `ID_AA64DFR0..2` (0–2), `AFR0`, `AFR1` (4, 5);
/// - `CRm = 6`: `ID_AA64ISAR0..3`;
/// - `CRm = 7`: `ID_AA64MMFR0..4`.
pub const ALLOCATED_OP2: [u8; 8] = [
    0,
    0b1111_1111,
    0b1111_1111,
    0b0111_0111,
    0b1011_0111,
    0b0011_0111,
    0b0000_1111,
    0b0001_1111,
];

/// Whether `(crm, op2)` names an allocated register of the group.
pub fn is_allocated(crm: u8, op2: u8) -> bool {
    op2 < 8
        && ALLOCATED_OP2
            .get(usize::from(crm))
            .is_some_and(|bits| bits & (1 << op2) != 0)
}

/// What a trapped `MRS` in the TID3 group reads, or `None` when `access` is
/// not a read of that group (another register, or a write).
#[inline]
pub fn classify(access: &SysRegAccess) -> Option<IdRead> {
    let in_group = access.op0 == 3
        && access.op1 == 0
        && access.crn == 0
        && (1..=7).contains(&access.crm)
        && access.op2 <= 7;
    if !in_group || !access.read {
        return None;
    }
    Some(if is_allocated(access.crm, access.op2) {
        IdRead::Hardware(encode(3, 0, 0, access.crm, access.op2))
    } else {
        IdRead::Zero
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esr::sysreg;

    fn read(crm: u8, op2: u8) -> SysRegAccess {
        SysRegAccess {
            op0: 3,
            op1: 0,
            crn: 0,
            crm,
            op2,
            rt: 5,
            read: true,
        }
    }

    /// The allocated encodings, one by one, as the Arm ARM lists them.
    const ALLOCATED: [(u8, u8); 42] = [
        (1, 0),
        (1, 1),
        (1, 2),
        (1, 3),
        (1, 4),
        (1, 5),
        (1, 6),
        (1, 7), // ID_PFR0..ID_MMFR3
        (2, 0),
        (2, 1),
        (2, 2),
        (2, 3),
        (2, 4),
        (2, 5),
        (2, 6),
        (2, 7), // ID_ISAR0..ID_ISAR6
        (3, 0),
        (3, 1),
        (3, 2),
        (3, 4),
        (3, 5),
        (3, 6), // MVFR0..2, ID_PFR2, ID_DFR1, ID_MMFR5
        (4, 0),
        (4, 1),
        (4, 2),
        (4, 4),
        (4, 5),
        (4, 7), // ID_AA64PFR0..2, ZFR0, SMFR0, FPFR0
        (5, 0),
        (5, 1),
        (5, 2),
        (5, 4),
        (5, 5), // ID_AA64DFR0..2, AFR0, AFR1
        (6, 0),
        (6, 1),
        (6, 2),
        (6, 3), // ID_AA64ISAR0..3
        (7, 0),
        (7, 1),
        (7, 2),
        (7, 3),
        (7, 4), // ID_AA64MMFR0..4
    ];

    #[test]
    fn the_bitmap_is_the_list() {
        for crm in 0..=8 {
            for op2 in 0..=8 {
                assert_eq!(
                    is_allocated(crm, op2),
                    ALLOCATED.contains(&(crm, op2)),
                    "c{crm} {op2}"
                );
            }
        }
    }

    #[test]
    fn named_aarch64_registers_are_hardware_reads() {
        for reg in [
            sysreg::ID_AA64PFR0_EL1,
            sysreg::ID_AA64PFR1_EL1,
            sysreg::ID_AA64ZFR0_EL1,
            sysreg::ID_AA64DFR0_EL1,
            sysreg::ID_AA64DFR1_EL1,
            sysreg::ID_AA64ISAR0_EL1,
            sysreg::ID_AA64ISAR1_EL1,
            sysreg::ID_AA64ISAR2_EL1,
            sysreg::ID_AA64MMFR0_EL1,
            sysreg::ID_AA64MMFR1_EL1,
            sysreg::ID_AA64MMFR2_EL1,
        ] {
            let (crm, op2) = (((reg >> 3) & 0xf) as u8, (reg & 7) as u8);
            assert_eq!(classify(&read(crm, op2)), Some(IdRead::Hardware(reg)));
        }
    }

    #[test]
    fn every_encoding_of_the_group_is_classified() {
        let mut hardware = 0;
        let mut zero = 0;
        for crm in 1..=7 {
            for op2 in 0..=7 {
                match classify(&read(crm, op2)) {
                    Some(IdRead::Hardware(enc)) => {
                        assert_eq!(enc, encode(3, 0, 0, crm, op2));
                        hardware += 1;
                    }
                    Some(IdRead::Zero) => zero += 1,
                    None => panic!("(3, 0, c0, c{crm}, {op2}) is in the TID3 group"),
                }
            }
        }
        assert_eq!((hardware, zero), (42, 14));
    }

    #[test]
    fn reserved_encodings_read_as_zero() {
        for (crm, op2) in [
            (3, 3),
            (3, 7),
            (4, 3),
            (4, 6),
            (5, 3),
            (5, 7),
            (6, 4),
            (7, 5),
        ] {
            assert_eq!(
                classify(&read(crm, op2)),
                Some(IdRead::Zero),
                "c{crm} {op2}"
            );
        }
    }

    #[test]
    fn outside_the_group_or_writes_are_not_ours() {
        // MIDR_EL1 (CRm = 0) is not trapped by TID3.
        assert_eq!(classify(&read(0, 0)), None);
        // CTR_EL0 (op1 = 3), CCSIDR_EL1 (op1 = 1, CRn = 0): TID2's.
        assert_eq!(
            classify(&SysRegAccess {
                op1: 3,
                ..read(0, 1)
            }),
            None
        );
        assert_eq!(
            classify(&SysRegAccess {
                op1: 1,
                ..read(0, 0)
            }),
            None
        );
        // CRn != 0 (SCTLR_EL1), op0 != 3.
        assert_eq!(
            classify(&SysRegAccess {
                crn: 1,
                ..read(0, 0)
            }),
            None
        );
        assert_eq!(
            classify(&SysRegAccess {
                op0: 2,
                ..read(4, 0)
            }),
            None
        );
        // A write to an ID register.
        let write = SysRegAccess {
            read: false,
            ..read(7, 0)
        };
        assert_eq!(classify(&write), None);
    }
}

/// The value a VM whose vCPUs time-share physical CPUs reads from ID
/// register `(crm, op2)` whose hardware value is `value`: SVE and SME are
/// hidden, because the hypervisor switches only FP/SIMD registers between
/// vCPUs of a shared CPU (and traps SVE/SME there). Clears
/// `ID_AA64PFR0_EL1.SVE` (bits 35:32), `ID_AA64PFR1_EL1.SME` (27:24) and
/// reads `ID_AA64ZFR0_EL1` / `ID_AA64SMFR0_EL1` as zero; every other
/// register is unchanged.
pub fn without_sve_sme(crm: u8, op2: u8, value: u64) -> u64 {
    match (crm, op2) {
        (4, 0) => value & !(0xf << 32),
        (4, 1) => value & !(0xf << 24),
        (4, 4) | (4, 5) => 0,
        _ => value,
    }
}

#[cfg(test)]
mod sharing_tests {
    use super::without_sve_sme;

    #[test]
    fn sve_and_sme_are_hidden_and_nothing_else_changes() {
        // QEMU max: PFR0 with SVE = 1, PFR1 with SME = 2 and other fields.
        let pfr0 = 0x1201_1011_1111_2222;
        assert_eq!(without_sve_sme(4, 0, pfr0), 0x1201_1010_1111_2222);
        let pfr1 = 0x0000_0000_0200_0121;
        assert_eq!(without_sve_sme(4, 1, pfr1), 0x0000_0000_0000_0121);
        assert_eq!(without_sve_sme(4, 4, u64::MAX), 0);
        assert_eq!(without_sve_sme(4, 5, u64::MAX), 0);
        for (crm, op2) in [(4, 2), (5, 0), (6, 0), (7, 0), (7, 1), (1, 0)] {
            assert_eq!(without_sve_sme(crm, op2, u64::MAX), u64::MAX);
        }
    }
}
