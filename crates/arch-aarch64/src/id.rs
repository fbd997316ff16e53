//! Fields of the identification and feature registers the EL2 glue
//! decides on: which optional register files (SVE, SME, pointer
//! authentication) exist, and which CPU this is (`MIDR_EL1`).
//!
//! Pure decoders over raw values, so they are tested on the host; read the
//! registers with [`crate::sysreg`]. (What a *guest* is told about these
//! registers is `stratum_core::idreg`'s business.)

/// The 4-bit ID field at bit `lsb` (nonzero: the feature is implemented).
const fn field(reg: u64, lsb: u32) -> u64 {
    (reg >> lsb) & 0xf
}

/// `ID_AA64PFR0_EL1.SVE` (bits 35:32) is nonzero: the CPU has SVE, and so
/// `ZCR_EL2`.
pub const fn has_sve(id_aa64pfr0: u64) -> bool {
    field(id_aa64pfr0, 32) != 0
}

/// `ID_AA64PFR1_EL1.SME` (bits 27:24) is nonzero: the CPU has SME, and so
/// `SMCR_EL2`.
pub const fn has_sme(id_aa64pfr1: u64) -> bool {
    field(id_aa64pfr1, 24) != 0
}

/// The CPU has pointer authentication (and so its key registers): any of
/// `ID_AA64ISAR1_EL1.{APA, API}` (bits 11:4), `{GPA, GPI}` (bits 31:24) or
/// `ID_AA64ISAR2_EL1.{GPA3, APA3}` (bits 15:8) is nonzero.
pub const fn has_pauth(id_aa64isar1: u64, id_aa64isar2: u64) -> bool {
    (id_aa64isar1 >> 4) & 0xff != 0
        || (id_aa64isar1 >> 24) & 0xff != 0
        || (id_aa64isar2 >> 8) & 0xff != 0
}

/// A short name for the CPU `MIDR_EL1` describes (implementer, bits 31:24;
/// part number, bits 15:4), for the banner.
pub const fn cpu_name(midr: u64) -> &'static str {
    let implementer = (midr >> 24) & 0xff;
    let part = (midr >> 4) & 0xfff;
    match (implementer, part) {
        (0x41, 0xd03) => "Cortex-A53",
        (0x41, 0xd07) => "Cortex-A57",
        (0x41, 0xd08) => "Cortex-A72",
        (0x41, 0xd0b) => "Cortex-A76",
        (0x41, 0xd0c) => "Neoverse-N1",
        (0x41, 0xd40) => "Neoverse-V1",
        (0x41, 0xd49) => "Neoverse-N2",
        (0, _) => "QEMU max",
        _ => "unknown",
    }
}

/// `MPIDR_EL1.{Aff2, Aff1, Aff0}` (bits 23:0): how the epitaph names a CPU.
pub const fn affinity(mpidr: u64) -> u64 {
    mpidr & 0xff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sve_and_sme_are_read_from_their_own_fields() {
        assert!(has_sve(1 << 32));
        assert!(!has_sve(0xf << 28), "the neighbouring field is not SVE");
        assert!(has_sme(1 << 24));
        assert!(!has_sme((0xf << 28) | (0xf << 20)));
    }

    #[test]
    fn any_pointer_authentication_field_counts() {
        assert!(!has_pauth(0, 0));
        assert!(has_pauth(1 << 4, 0), "APA");
        assert!(has_pauth(1 << 8, 0), "API");
        assert!(has_pauth(1 << 24, 0), "GPA");
        assert!(has_pauth(0, 1 << 12), "APA3");
        assert!(!has_pauth(0xf, 0xff), "DPB and WFxT are not pauth");
    }

    #[test]
    fn cpu_names_come_from_implementer_and_part() {
        assert_eq!(cpu_name(0x411f_d070), "Cortex-A57");
        assert_eq!(cpu_name(0x410f_d034), "Cortex-A53");
        assert_eq!(cpu_name(0x000f_0510), "QEMU max");
        assert_eq!(cpu_name(0x4e0f_0000), "unknown");
    }

    #[test]
    fn affinity_drops_mt_and_u() {
        assert_eq!(affinity(0x8100_0003), 3);
        assert_eq!(affinity(0x0001_0203), 0x01_0203);
    }
}
