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
}
