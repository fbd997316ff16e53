//! System registers, each declared once with a real backend (`mrs`/`msr`)
//! and a fake backend for host tests.
//!
//! Reading a register never has side effects, so readers are safe functions.
//! Writers of registers that change translation, trapping or exception
//! routing are `unsafe`: their callers must state why the new value keeps
//! the hypervisor's invariants. Registers that only hold guest state (EL1
//! context, saved while the guest is not running) have safe writers.

/// Declares system registers with readers and writers.
///
/// `safe` writers are for registers whose value cannot break EL2's own
/// execution (guest EL1 state, virtualization IDs, timer offsets).
/// `unsafe` writers are for registers that configure EL2 itself.
macro_rules! sysregs {
    ($( $(#[$doc:meta])* $name:ident: $read:ident $(, $wkind:ident $write:ident)? ;)*) => {
        /// Index of each register in the fake backend.
        #[allow(non_camel_case_types, missing_docs, reason = "architectural register names, documented on their accessors")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Reg { $( $name, )* }

        /// Number of registers the fake backend models.
        pub const REG_COUNT: usize = [$(Reg::$name),*].len();

        $(
            $(#[$doc])*
            #[inline(always)]
            pub fn $read() -> u64 {
                #[cfg(target_arch = "aarch64")]
                {
                    let v: u64;
                    // SAFETY: reading this system register has no side effects
                    // and is permitted at EL2, where this crate runs.
                    unsafe {
                        core::arch::asm!(concat!("mrs {}, ", stringify!($name)), out(reg) v,
                            options(nomem, nostack, preserves_flags));
                    }
                    v
                }
                #[cfg(not(target_arch = "aarch64"))]
                {
                    fake::get(Reg::$name)
                }
            }
            $( sysregs!(@write $wkind $write $name); )?
        )*
    };
    (@write safe $write:ident $name:ident) => {
        #[doc = concat!("Writes `", stringify!($name), "` (guest-context register: cannot affect EL2).")]
        #[inline(always)]
        pub fn $write(v: u64) {
            #[cfg(target_arch = "aarch64")]
            // SAFETY: this register only holds guest (EL1/EL0) state or a
            // virtualized ID; EL2 execution does not depend on it.
            unsafe {
                core::arch::asm!(concat!("msr ", stringify!($name), ", {}"), in(reg) v,
                    options(nomem, nostack, preserves_flags));
            }
            #[cfg(not(target_arch = "aarch64"))]
            fake::set(Reg::$name, v);
        }
    };
    (@write unsafe $write:ident $name:ident) => {
        #[doc = concat!("Writes `", stringify!($name), "`.")]
        ///
        /// # Safety
        /// The value configures EL2 itself (translation, traps or routing):
        /// the caller guarantees it keeps the hypervisor's code, data and
        /// stacks mapped and its exception handling intact.
        #[inline(always)]
        pub unsafe fn $write(v: u64) {
            #[cfg(target_arch = "aarch64")]
            // SAFETY: the caller upholds this function's contract.
            unsafe {
                core::arch::asm!(concat!("msr ", stringify!($name), ", {}"), in(reg) v,
                    options(nostack, preserves_flags));
            }
            #[cfg(not(target_arch = "aarch64"))]
            fake::set(Reg::$name, v);
        }
    };
}

sysregs! {
    /// Current exception level (bits 3:2).
    CurrentEL: current_el;
    /// Main ID register.
    MIDR_EL1: midr_el1;
    /// Multiprocessor affinity of this physical CPU.
    MPIDR_EL1: mpidr_el1;
    /// Memory model features 0 (PARange, granules).
    ID_AA64MMFR0_EL1: id_aa64mmfr0_el1;
    /// Memory model features 1 (VMIDBits, VH).
    ID_AA64MMFR1_EL1: id_aa64mmfr1_el1;
    /// Processor features 0 (EL2/EL3 support, GIC sysregs, SVE).
    ID_AA64PFR0_EL1: id_aa64pfr0_el1;
    /// Instruction set features 1 (pointer authentication APA/API/GPA/GPI).
    ID_AA64ISAR1_EL1: id_aa64isar1_el1;
    /// Instruction set features 2 (APA3/GPA3), by encoding (older
    /// assemblers do not know the name).
    S3_0_C0_C6_2: id_aa64isar2_el1;
    /// Processor features 1 (SSBS, MTE, NMI).
    ID_AA64PFR1_EL1: id_aa64pfr1_el1;
    /// Exception syndrome for exceptions taken to EL2.
    ESR_EL2: esr_el2;
    /// Faulting virtual address for exceptions taken to EL2.
    FAR_EL2: far_el2;
    /// Faulting IPA (bits 51:12) for stage-2 aborts.
    HPFAR_EL2: hpfar_el2;
    /// Return address of the exception taken to EL2 (the guest PC).
    ELR_EL2: elr_el2, safe set_elr_el2;
    /// Saved PSTATE of the exception taken to EL2 (the guest PSTATE).
    SPSR_EL2: spsr_el2, safe set_spsr_el2;
    /// Per-CPU pointer to the running vCPU's register frame.
    TPIDR_EL2: tpidr_el2, unsafe set_tpidr_el2;
    /// Hypervisor configuration: traps and routing for the guest.
    HCR_EL2: hcr_el2, unsafe set_hcr_el2;
    /// Stage-2 translation control.
    VTCR_EL2: vtcr_el2, unsafe set_vtcr_el2;
    /// Stage-2 table base and VMID.
    VTTBR_EL2: vttbr_el2, unsafe set_vttbr_el2;
    /// EL2 exception vector base.
    VBAR_EL2: vbar_el2, unsafe set_vbar_el2;
    /// Architectural feature trap control (FP/SIMD, SVE).
    CPTR_EL2: cptr_el2, unsafe set_cptr_el2;
    /// SVE control at EL2 (`ZCR_EL2`, by encoding: the assembler needs no
    /// SVE support). Only touch it when the CPU has SVE.
    S3_4_C1_C2_0: zcr_el2, unsafe set_zcr_el2;
    /// SME control at EL2 (`SMCR_EL2`, by encoding). Only when the CPU has SME.
    S3_4_C1_C2_6: smcr_el2, unsafe set_smcr_el2;
    /// Debug and PMU trap control.
    MDCR_EL2: mdcr_el2, unsafe set_mdcr_el2;
    /// Counter/timer access control for EL1/EL0.
    CNTHCTL_EL2: cnthctl_el2, unsafe set_cnthctl_el2;
    /// Virtual counter offset seen by the guest.
    CNTVOFF_EL2: cntvoff_el2, safe set_cntvoff_el2;
    /// Virtualized MIDR seen by the guest.
    VPIDR_EL2: vpidr_el2, safe set_vpidr_el2;
    /// Virtualized MPIDR seen by the guest.
    VMPIDR_EL2: vmpidr_el2, safe set_vmpidr_el2;
    /// PMU control (N: number of counters).
    PMCR_EL0: pmcr_el0;
    /// Counter frequency.
    CNTFRQ_EL0: cntfrq_el0;
    /// Physical counter.
    CNTPCT_EL0: cntpct_el0;
    /// Guest system control (EL1).
    SCTLR_EL1: sctlr_el1, safe set_sctlr_el1;
    /// Guest exception vector base.
    VBAR_EL1: vbar_el1, safe set_vbar_el1;
    /// Guest exception syndrome.
    ESR_EL1: esr_el1, safe set_esr_el1;
    /// Guest fault address.
    FAR_EL1: far_el1, safe set_far_el1;
    /// Guest exception return address.
    ELR_EL1: elr_el1, safe set_elr_el1;
    /// Guest saved PSTATE.
    SPSR_EL1: spsr_el1, safe set_spsr_el1;
    /// Guest stack pointer for EL1h.
    SP_EL1: sp_el1, safe set_sp_el1;
    /// Guest stack pointer for EL0 / EL1t.
    SP_EL0: sp_el0, safe set_sp_el0;
    /// Guest address-translation result (clobbered by `AT`).
    PAR_EL1: par_el1, safe set_par_el1;
    /// Guest FP/SIMD access control.
    CPACR_EL1: cpacr_el1, safe set_cpacr_el1;
    /// Guest translation control.
    TCR_EL1: tcr_el1, safe set_tcr_el1;
    /// Guest memory attributes.
    MAIR_EL1: mair_el1, safe set_mair_el1;
    /// Guest translation table base 0.
    TTBR0_EL1: ttbr0_el1, safe set_ttbr0_el1;
    /// Guest translation table base 1.
    TTBR1_EL1: ttbr1_el1, safe set_ttbr1_el1;
    /// Guest context ID.
    CONTEXTIDR_EL1: contextidr_el1, safe set_contextidr_el1;
    /// Guest thread ID (EL1).
    TPIDR_EL1: tpidr_el1, safe set_tpidr_el1;
    /// Guest virtual timer control.
    CNTV_CTL_EL0: cntv_ctl_el0, safe set_cntv_ctl_el0;
    /// Guest EL1 timer control register (kernel timer access control).
    CNTKCTL_EL1: cntkctl_el1, safe set_cntkctl_el1;
    /// Auxiliary memory attribute indirection (EL1).
    AMAIR_EL1: amair_el1, safe set_amair_el1;
    /// Auxiliary fault status 0 (EL1).
    AFSR0_EL1: afsr0_el1, safe set_afsr0_el1;
    /// Auxiliary fault status 1 (EL1).
    AFSR1_EL1: afsr1_el1, safe set_afsr1_el1;
    /// EL0 read/write thread ID.
    TPIDR_EL0: tpidr_el0, safe set_tpidr_el0;
    /// EL0 read-only thread ID.
    TPIDRRO_EL0: tpidrro_el0, safe set_tpidrro_el0;
    /// Cache size selection.
    CSSELR_EL1: csselr_el1, safe set_csselr_el1;
    /// Monitor debug system control (EL1).
    MDSCR_EL1: mdscr_el1, safe set_mdscr_el1;
    /// Auxiliary control (EL1).
    ACTLR_EL1: actlr_el1, safe set_actlr_el1;
    /// Pointer authentication key APIAKeyLo_EL1.
    S3_0_C2_C1_0: apiakeylo_el1, safe set_apiakeylo_el1;
    /// APIAKeyHi_EL1.
    S3_0_C2_C1_1: apiakeyhi_el1, safe set_apiakeyhi_el1;
    /// APIBKeyLo_EL1.
    S3_0_C2_C1_2: apibkeylo_el1, safe set_apibkeylo_el1;
    /// APIBKeyHi_EL1.
    S3_0_C2_C1_3: apibkeyhi_el1, safe set_apibkeyhi_el1;
    /// APDAKeyLo_EL1.
    S3_0_C2_C2_0: apdakeylo_el1, safe set_apdakeylo_el1;
    /// APDAKeyHi_EL1.
    S3_0_C2_C2_1: apdakeyhi_el1, safe set_apdakeyhi_el1;
    /// APDBKeyLo_EL1.
    S3_0_C2_C2_2: apdbkeylo_el1, safe set_apdbkeylo_el1;
    /// APDBKeyHi_EL1.
    S3_0_C2_C2_3: apdbkeyhi_el1, safe set_apdbkeyhi_el1;
    /// APGAKeyLo_EL1.
    S3_0_C2_C3_0: apgakeylo_el1, safe set_apgakeylo_el1;
    /// APGAKeyHi_EL1.
    S3_0_C2_C3_1: apgakeyhi_el1, safe set_apgakeyhi_el1;

    // ---- GICv3 physical CPU interface, as seen from EL2 ----
    /// GICv3 system-register enable for EL2 (SRE, DFB, DIB, Enable = lower
    /// ELs may use `ICC_SRE_EL1`).
    ICC_SRE_EL2: icc_sre_el2, unsafe set_icc_sre_el2;
    /// Physical interrupt acknowledge, Group 1 (read-only). Unlike other
    /// readers, reading it has an effect: the INTID it returns becomes active.
    ICC_IAR1_EL1: icc_iar1_el1;
    /// Physical priority mask: interrupts with a lower (numerically higher
    /// or equal) priority are not signalled to this CPU.
    ICC_PMR_EL1: icc_pmr_el1, unsafe set_icc_pmr_el1;
    /// Physical CPU interface control (EOImode, CBPR; PRIbits, IDbits).
    ICC_CTLR_EL1: icc_ctlr_el1, unsafe set_icc_ctlr_el1;
    /// Physical Group 1 interrupt enable for this CPU.
    ICC_IGRPEN1_EL1: icc_igrpen1_el1, unsafe set_icc_igrpen1_el1;
    /// Physical binary point, Group 1 (priority grouping for preemption).
    ICC_BPR1_EL1: icc_bpr1_el1, unsafe set_icc_bpr1_el1;

    // ---- GICv3 virtualization control (ICH_*) ----
    /// Virtual CPU interface control: En, maintenance-interrupt enables and
    /// trap bits (TC, TALL0/1, TDIR …), EOIcount.
    ICH_HCR_EL2: ich_hcr_el2, unsafe set_ich_hcr_el2;
    /// Virtual CPU interface type: ListRegs, PREbits, PRIbits, IDbits.
    ICH_VTR_EL2: ich_vtr_el2;
    /// The guest's view of its virtual CPU interface control (VPMR, VBPRs,
    /// VEOIM, group enables), saved and restored with the vCPU.
    ICH_VMCR_EL2: ich_vmcr_el2, safe set_ich_vmcr_el2;
    /// Maintenance interrupt status: which condition of `ICH_HCR_EL2` fired.
    ICH_MISR_EL2: ich_misr_el2;
    /// End-of-interrupt status: list registers whose EOI asked for maintenance.
    ICH_EISR_EL2: ich_eisr_el2;
    /// Empty list register status: bit n set when `ICH_LR<n>_EL2` holds no
    /// pending or active interrupt.
    ICH_ELRSR_EL2: ich_elrsr_el2;
    /// GICv3 virtual CPU interface active priorities, Group 0, word 0.
    ICH_AP0R0_EL2: ich_ap0r0_el2, safe set_ich_ap0r0_el2;
    /// GICv3 virtual CPU interface active priorities, Group 0, word 1.
    ICH_AP0R1_EL2: ich_ap0r1_el2, safe set_ich_ap0r1_el2;
    /// GICv3 virtual CPU interface active priorities, Group 0, word 2.
    ICH_AP0R2_EL2: ich_ap0r2_el2, safe set_ich_ap0r2_el2;
    /// GICv3 virtual CPU interface active priorities, Group 0, word 3.
    ICH_AP0R3_EL2: ich_ap0r3_el2, safe set_ich_ap0r3_el2;
    /// GICv3 virtual CPU interface active priorities, Group 1, word 0.
    ICH_AP1R0_EL2: ich_ap1r0_el2, safe set_ich_ap1r0_el2;
    /// GICv3 virtual CPU interface active priorities, Group 1, word 1.
    ICH_AP1R1_EL2: ich_ap1r1_el2, safe set_ich_ap1r1_el2;
    /// GICv3 virtual CPU interface active priorities, Group 1, word 2.
    ICH_AP1R2_EL2: ich_ap1r2_el2, safe set_ich_ap1r2_el2;
    /// GICv3 virtual CPU interface active priorities, Group 1, word 3.
    ICH_AP1R3_EL2: ich_ap1r3_el2, safe set_ich_ap1r3_el2;
    /// GICv3 list register 0: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR0_EL2: ich_lr0_el2, safe set_ich_lr0_el2;
    /// GICv3 list register 1: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR1_EL2: ich_lr1_el2, safe set_ich_lr1_el2;
    /// GICv3 list register 2: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR2_EL2: ich_lr2_el2, safe set_ich_lr2_el2;
    /// GICv3 list register 3: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR3_EL2: ich_lr3_el2, safe set_ich_lr3_el2;
    /// GICv3 list register 4: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR4_EL2: ich_lr4_el2, safe set_ich_lr4_el2;
    /// GICv3 list register 5: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR5_EL2: ich_lr5_el2, safe set_ich_lr5_el2;
    /// GICv3 list register 6: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR6_EL2: ich_lr6_el2, safe set_ich_lr6_el2;
    /// GICv3 list register 7: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR7_EL2: ich_lr7_el2, safe set_ich_lr7_el2;
    /// GICv3 list register 8: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR8_EL2: ich_lr8_el2, safe set_ich_lr8_el2;
    /// GICv3 list register 9: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR9_EL2: ich_lr9_el2, safe set_ich_lr9_el2;
    /// GICv3 list register 10: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR10_EL2: ich_lr10_el2, safe set_ich_lr10_el2;
    /// GICv3 list register 11: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR11_EL2: ich_lr11_el2, safe set_ich_lr11_el2;
    /// GICv3 list register 12: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR12_EL2: ich_lr12_el2, safe set_ich_lr12_el2;
    /// GICv3 list register 13: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR13_EL2: ich_lr13_el2, safe set_ich_lr13_el2;
    /// GICv3 list register 14: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR14_EL2: ich_lr14_el2, safe set_ich_lr14_el2;
    /// GICv3 list register 15: one virtual interrupt for the running vCPU
    /// (use [`ich_lr`]/[`set_ich_lr`] to index). A hardware-linked entry
    /// (HW = 1) deactivates its physical INTID when the guest deactivates it.
    ICH_LR15_EL2: ich_lr15_el2, safe set_ich_lr15_el2;

    // ---- Generic timer ----
    /// Guest virtual timer compare value.
    CNTV_CVAL_EL0: cntv_cval_el0, safe set_cntv_cval_el0;
    /// Guest EL1 physical timer control.
    CNTP_CTL_EL0: cntp_ctl_el0, safe set_cntp_ctl_el0;
    /// Guest EL1 physical timer compare value.
    CNTP_CVAL_EL0: cntp_cval_el0, safe set_cntp_cval_el0;
    /// EL2 physical timer control (the hypervisor's own timer, PPI 10).
    CNTHP_CTL_EL2: cnthp_ctl_el2, unsafe set_cnthp_ctl_el2;
    /// EL2 physical timer compare value.
    CNTHP_CVAL_EL2: cnthp_cval_el2, unsafe set_cnthp_cval_el2;
    /// Virtual counter (physical count minus `CNTVOFF_EL2`).
    CNTVCT_EL0: cntvct_el0;
}

/// Reads the feature ID register `(op0 = 3, op1 = 0, CRn = 0, CRm = crm,
/// op2)` for `crm` in `1..=7`, the space `HCR_EL2.TID3` traps for EL1 (by
/// encoding: reserved encodings there read as zero, and the assembler need
/// not know the newer names). `None` for any other `crm` or `op2`.
#[inline]
pub fn id_register(crm: u8, op2: u8) -> Option<u64> {
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! read_id {
            ($($crm:literal => [$($op2:literal),*]),*) => {
                match (crm, op2) {
                    $($(($crm, $op2) => {
                        let v: u64;
                        // SAFETY: reading an ID register has no side effects
                        // and is permitted at EL2.
                        unsafe {
                            core::arch::asm!(
                                concat!("mrs {}, s3_0_c0_c", stringify!($crm), "_", stringify!($op2)),
                                out(reg) v, options(nomem, nostack, preserves_flags));
                        }
                        Some(v)
                    })*)*
                    _ => None,
                }
            };
        }
        read_id!(
            1 => [0, 1, 2, 3, 4, 5, 6, 7],
            2 => [0, 1, 2, 3, 4, 5, 6, 7],
            3 => [0, 1, 2, 3, 4, 5, 6, 7],
            4 => [0, 1, 2, 3, 4, 5, 6, 7],
            5 => [0, 1, 2, 3, 4, 5, 6, 7],
            6 => [0, 1, 2, 3, 4, 5, 6, 7],
            7 => [0, 1, 2, 3, 4, 5, 6, 7]
        )
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        ((1..=7).contains(&crm) && op2 <= 7).then(|| fake::id_register(crm, op2))
    }
}

/// The fake register file used on non-aarch64 hosts (one per thread, so
/// parallel tests do not interfere).
#[cfg(not(target_arch = "aarch64"))]
pub mod fake {
    use super::{REG_COUNT, Reg};

    std::thread_local! {
        static REGS: core::cell::RefCell<[u64; REG_COUNT]> =
            const { core::cell::RefCell::new([0; REG_COUNT]) };
    }

    /// The fake value of `reg`.
    pub fn get(reg: Reg) -> u64 {
        REGS.with(|r| r.borrow()[reg as usize])
    }

    /// Sets the fake value of `reg`.
    pub fn set(reg: Reg, v: u64) {
        REGS.with(|r| r.borrow_mut()[reg as usize] = v);
    }

    std::thread_local! {
        static ID_REGS: core::cell::RefCell<[[u64; 8]; 8]> =
            const { core::cell::RefCell::new([[0; 8]; 8]) };
    }

    /// The fake value of ID register `(3, 0, c0, c<crm>, <op2>)` (`crm`, `op2` < 8).
    pub fn id_register(crm: u8, op2: u8) -> u64 {
        ID_REGS.with(|r| r.borrow()[usize::from(crm)][usize::from(op2)])
    }

    /// Sets the fake value of ID register `(3, 0, c0, c<crm>, <op2>)` (`crm`, `op2` < 8).
    pub fn set_id_register(crm: u8, op2: u8, v: u64) {
        ID_REGS.with(|r| r.borrow_mut()[usize::from(crm)][usize::from(op2)] = v);
    }
}

/// Reads GICv3 list register `ICH_LR<n>_EL2`.
///
/// # Panics
/// If `n >= 16`: the architecture has at most 16 list registers, and callers
/// index below `ICH_VTR_EL2.ListRegs + 1`, so a larger index is a broken
/// hypervisor invariant.
#[inline]
pub fn ich_lr(n: usize) -> u64 {
    match n {
        0 => ich_lr0_el2(),
        1 => ich_lr1_el2(),
        2 => ich_lr2_el2(),
        3 => ich_lr3_el2(),
        4 => ich_lr4_el2(),
        5 => ich_lr5_el2(),
        6 => ich_lr6_el2(),
        7 => ich_lr7_el2(),
        8 => ich_lr8_el2(),
        9 => ich_lr9_el2(),
        10 => ich_lr10_el2(),
        11 => ich_lr11_el2(),
        12 => ich_lr12_el2(),
        13 => ich_lr13_el2(),
        14 => ich_lr14_el2(),
        15 => ich_lr15_el2(),
        _ => panic!("ICH_LR{n}_EL2 does not exist (at most 16 list registers)"),
    }
}

/// Writes GICv3 list register `ICH_LR<n>_EL2` (see the `ICH_LR0_EL2` notes
/// on hardware-linked entries).
///
/// # Panics
/// If `n >= 16`, as for [`ich_lr`].
#[inline(always)]
pub fn set_ich_lr(n: usize, v: u64) {
    match n {
        0 => set_ich_lr0_el2(v),
        1 => set_ich_lr1_el2(v),
        2 => set_ich_lr2_el2(v),
        3 => set_ich_lr3_el2(v),
        4 => set_ich_lr4_el2(v),
        5 => set_ich_lr5_el2(v),
        6 => set_ich_lr6_el2(v),
        7 => set_ich_lr7_el2(v),
        8 => set_ich_lr8_el2(v),
        9 => set_ich_lr9_el2(v),
        10 => set_ich_lr10_el2(v),
        11 => set_ich_lr11_el2(v),
        12 => set_ich_lr12_el2(v),
        13 => set_ich_lr13_el2(v),
        14 => set_ich_lr14_el2(v),
        15 => set_ich_lr15_el2(v),
        _ => panic!("ICH_LR{n}_EL2 does not exist (at most 16 list registers)"),
    }
}

/// Write-only GICv3 CPU interface registers: reading them is UNDEFINED, so
/// they get writers only and are not part of [`Reg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOnlyReg {
    /// `ICC_EOIR1_EL1`: end of interrupt (priority drop; also deactivation
    /// when `ICC_CTLR_EL1.EOImode == 0`), Group 1.
    IccEoir1El1,
    /// `ICC_DIR_EL1`: deactivate interrupt (when `EOImode == 1`).
    IccDirEl1,
    /// `ICC_SGI1R_EL1`.
    IccSgi1rEl1,
}

/// Writes `ICC_EOIR1_EL1`: drops the running priority of `intid` (and
/// deactivates it when `ICC_CTLR_EL1.EOImode == 0`).
///
/// # Safety
/// `intid` must be the most recently acknowledged (via `ICC_IAR1_EL1`)
/// Group 1 interrupt on this CPU that has not had its priority dropped yet;
/// otherwise the GIC's behaviour is UNPREDICTABLE.
#[inline(always)]
pub unsafe fn write_icc_eoir1_el1(intid: u64) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller upholds this function's contract; writing EOIR
    // touches only the GIC CPU interface's priority state.
    unsafe {
        core::arch::asm!("msr ICC_EOIR1_EL1, {}", in(reg) intid, options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    fake_write_only::record(WriteOnlyReg::IccEoir1El1, intid);
}

/// Writes `ICC_DIR_EL1`: deactivates `intid`.
///
/// # Safety
/// `intid` must be active on this CPU interface and, with `EOImode == 1`,
/// its priority already dropped; deactivating an interrupt a guest still
/// owns through a hardware-linked list register breaks that link.
#[inline(always)]
pub unsafe fn write_icc_dir_el1(intid: u64) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller upholds this function's contract; writing DIR
    // touches only the GIC's active state for `intid`.
    unsafe {
        core::arch::asm!("msr ICC_DIR_EL1, {}", in(reg) intid, options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    fake_write_only::record(WriteOnlyReg::IccDirEl1, intid);
}

/// Writes `ICC_SGI1R_EL1`: raises a Group 1 SGI on the CPUs it names
/// (used by EL2 to kick another physical CPU).
///
/// # Safety
/// The SGI must be one the hypervisor reserved for itself and handles; the
/// write has no effect beyond making it pending on the named CPUs.
#[inline(always)]
pub unsafe fn write_icc_sgi1r_el1(value: u64) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller upholds this function's contract.
    unsafe {
        core::arch::asm!("msr ICC_SGI1R_EL1, {}", "isb", in(reg) value, options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    fake_write_only::record(WriteOnlyReg::IccSgi1rEl1, value);
}

/// The fake for write-only registers: a per-thread log of writes.
#[cfg(not(target_arch = "aarch64"))]
pub mod fake_write_only {
    use super::WriteOnlyReg;

    std::thread_local! {
        static LOG: core::cell::RefCell<std::vec::Vec<(WriteOnlyReg, u64)>> =
            const { core::cell::RefCell::new(std::vec::Vec::new()) };
    }

    /// Records a write (called by the writers above).
    pub fn record(reg: WriteOnlyReg, v: u64) {
        LOG.with(|l| l.borrow_mut().push((reg, v)));
    }

    /// Takes (and clears) every write recorded on this thread, in order.
    pub fn take() -> std::vec::Vec<(WriteOnlyReg, u64)> {
        LOG.with(|l| core::mem::take(&mut *l.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_backend_round_trips() {
        set_elr_el2(0x4008_0000);
        assert_eq!(elr_el2(), 0x4008_0000);
        fake::set(Reg::ESR_EL2, 0x5a00_0000);
        assert_eq!(esr_el2(), 0x5a00_0000);
        // SAFETY: fake backend on the host: no hardware is touched.
        unsafe { set_hcr_el2(1) };
        assert_eq!(hcr_el2(), 1);
    }

    #[test]
    fn list_registers_are_indexed() {
        for n in 0..16 {
            set_ich_lr(n, 0x1000 + n as u64);
        }
        assert_eq!(ich_lr0_el2(), 0x1000);
        assert_eq!(ich_lr7_el2(), 0x1007);
        assert_eq!(ich_lr8_el2(), 0x1008);
        assert_eq!(ich_lr(15), 0x100f);
        assert_eq!(fake::get(Reg::ICH_LR9_EL2), 0x1009);
    }

    #[test]
    #[should_panic(expected = "ICH_LR16_EL2 does not exist")]
    fn list_register_16_is_a_broken_invariant() {
        let _ = ich_lr(16);
    }

    #[test]
    fn write_only_registers_are_logged() {
        // SAFETY: fake backend on the host: no hardware is touched.
        unsafe {
            write_icc_eoir1_el1(27);
            write_icc_dir_el1(27);
        }
        assert_eq!(
            fake_write_only::take(),
            [
                (WriteOnlyReg::IccEoir1El1, 27),
                (WriteOnlyReg::IccDirEl1, 27)
            ]
        );
    }

    #[test]
    fn id_registers_are_read_by_encoding_within_the_tid3_space() {
        fake::set_id_register(7, 0, 0x1124);
        fake::set_id_register(4, 5, 0x42);
        assert_eq!(id_register(7, 0), Some(0x1124));
        assert_eq!(id_register(4, 5), Some(0x42));
        assert_eq!(id_register(3, 3), Some(0));
        assert_eq!(id_register(0, 0), None, "MIDR_EL1 is not in the space");
        assert_eq!(id_register(8, 0), None);
        assert_eq!(id_register(1, 8), None);
    }
}
