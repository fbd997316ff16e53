//! Architected EL1 values the EL2 glue needs about a guest: the PSTATE and
//! `SCTLR_EL1` a vCPU starts with (the arm64 boot protocol: EL1h, MMU and
//! caches off, D/A/I/F masked), and which stack pointer a saved PSTATE
//! selects.

/// `SPSR_ELx.M[3:0]` (AArch64): the exception level and stack pointer.
pub const SPSR_M: u64 = 0xf;
/// `M[3:0] = 0b0101`: EL1 using `SP_EL1` (EL1h).
pub const SPSR_M_EL1H: u64 = 0b0101;
/// `SPSR_ELx.{D, A, I, F}` (bits 9:6): every exception masked.
pub const SPSR_DAIF: u64 = 0xf << 6;

/// PSTATE (as `SPSR_EL2`) for a guest entering at EL1h with D, A, I and F
/// masked.
pub const PSTATE_EL1H_MASKED: u64 = SPSR_DAIF | SPSR_M_EL1H;

/// `SCTLR_EL1` at reset: RES1 bits only (29:28, 23:22, 20, 11), MMU and
/// caches off, little-endian.
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// Whether a guest whose saved PSTATE is `spsr` uses `SP_EL1` (EL1h);
/// EL1t and EL0 use `SP_EL0`.
pub const fn uses_sp_el1(spsr: u64) -> bool {
    spsr & SPSR_M == SPSR_M_EL1H
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_state_is_el1h_with_everything_masked() {
        assert_eq!(PSTATE_EL1H_MASKED, 0x3c5);
        assert!(uses_sp_el1(PSTATE_EL1H_MASKED));
    }

    #[test]
    fn only_el1h_selects_sp_el1() {
        assert!(uses_sp_el1(0x3c5));
        assert!(uses_sp_el1(0x2000_0005), "flags do not matter");
        assert!(!uses_sp_el1(0x3c4), "EL1t");
        assert!(!uses_sp_el1(0x0), "EL0t");
        assert!(!uses_sp_el1(0x10), "AArch32 EL0 (User mode)");
    }

    #[test]
    fn reset_sctlr_has_mmu_and_caches_off() {
        const M: u64 = 1 << 0;
        const C: u64 = 1 << 2;
        const I: u64 = 1 << 12;
        const EE: u64 = 1 << 25;
        assert_eq!(SCTLR_EL1_RESET & (M | C | I | EE), 0);
    }
}
