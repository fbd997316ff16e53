//! A vCPU's CPU-resident state and the live view of a running one.
//!
//! - [`VcpuContext`]: everything of a vCPU besides its general-purpose
//!   registers that lives in the physical CPU while it runs — the EL1
//!   system registers ([`El1Regs`]), where it resumes, its timers, its
//!   virtual CPU-interface state and FP/SIMD — saved when another vCPU takes
//!   the CPU ([`VcpuContext::save_live`]) and loaded when it comes back
//!   ([`VcpuContext::restore_live`]). The GIC and FP/SIMD parts are saved
//!   by their owners (the interrupt glue, the lazy FP switch); this module
//!   only holds them.
//! - [`LiveVcpu`]: the running vCPU as the exit path's decoders see it
//!   (`stratum_core::mmio::GuestRegs`): x0–x30 from the frame the exit
//!   vector filled, SP and PC from the live registers.
//!
//! On the host every register access goes to [`crate::sysreg::fake`], so
//! the save/restore order and the reset values are unit-tested.

use stratum_core::lifecycle::SavedTimers;
use stratum_core::mmio::GuestRegs;

use crate::el1::{PSTATE_EL1H_MASKED, SCTLR_EL1_RESET, uses_sp_el1};
use crate::sysreg;
use crate::vectors::GuestFrame;

/// The EL1 system registers a vCPU owns, in the order [`El1Regs::save`]
/// reads them. Saved only when another vCPU takes the physical CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct El1Regs {
    r: [u64; EL1_REGS],
    /// Pointer-authentication keys (only when the CPU has them).
    keys: [u64; KEY_REGS],
    /// `ELR_EL1`, `SPSR_EL1`.
    elr_spsr: [u64; 2],
}

const EL1_REGS: usize = 22;
const KEY_REGS: usize = 10;

type Get = fn() -> u64;
type Set = fn(u64);

/// Each switched EL1 register's reader and writer (`SCTLR_EL1` first: its
/// reset value is set by index 0).
const EL1_ACCESS: [(Get, Set); EL1_REGS] = [
    (sysreg::sctlr_el1, sysreg::set_sctlr_el1),
    (sysreg::actlr_el1, sysreg::set_actlr_el1),
    (sysreg::cpacr_el1, sysreg::set_cpacr_el1),
    (sysreg::ttbr0_el1, sysreg::set_ttbr0_el1),
    (sysreg::ttbr1_el1, sysreg::set_ttbr1_el1),
    (sysreg::tcr_el1, sysreg::set_tcr_el1),
    (sysreg::esr_el1, sysreg::set_esr_el1),
    (sysreg::afsr0_el1, sysreg::set_afsr0_el1),
    (sysreg::afsr1_el1, sysreg::set_afsr1_el1),
    (sysreg::far_el1, sysreg::set_far_el1),
    (sysreg::mair_el1, sysreg::set_mair_el1),
    (sysreg::amair_el1, sysreg::set_amair_el1),
    (sysreg::vbar_el1, sysreg::set_vbar_el1),
    (sysreg::contextidr_el1, sysreg::set_contextidr_el1),
    (sysreg::tpidr_el0, sysreg::set_tpidr_el0),
    (sysreg::tpidrro_el0, sysreg::set_tpidrro_el0),
    (sysreg::tpidr_el1, sysreg::set_tpidr_el1),
    (sysreg::cntkctl_el1, sysreg::set_cntkctl_el1),
    (sysreg::par_el1, sysreg::set_par_el1),
    (sysreg::csselr_el1, sysreg::set_csselr_el1),
    (sysreg::sp_el0, sysreg::set_sp_el0),
    (sysreg::sp_el1, sysreg::set_sp_el1),
];

/// The pointer-authentication key registers.
const KEY_ACCESS: [(Get, Set); KEY_REGS] = [
    (sysreg::apiakeylo_el1, sysreg::set_apiakeylo_el1),
    (sysreg::apiakeyhi_el1, sysreg::set_apiakeyhi_el1),
    (sysreg::apibkeylo_el1, sysreg::set_apibkeylo_el1),
    (sysreg::apibkeyhi_el1, sysreg::set_apibkeyhi_el1),
    (sysreg::apdakeylo_el1, sysreg::set_apdakeylo_el1),
    (sysreg::apdakeyhi_el1, sysreg::set_apdakeyhi_el1),
    (sysreg::apdbkeylo_el1, sysreg::set_apdbkeylo_el1),
    (sysreg::apdbkeyhi_el1, sysreg::set_apdbkeyhi_el1),
    (sysreg::apgakeylo_el1, sysreg::set_apgakeylo_el1),
    (sysreg::apgakeyhi_el1, sysreg::set_apgakeyhi_el1),
];

impl El1Regs {
    /// The registers at reset: MMU and caches off, everything else zero.
    pub fn at_reset() -> Self {
        let mut r = Self::default();
        r.r[0] = SCTLR_EL1_RESET;
        r
    }

    /// Reads the live registers (`pauth`: the CPU has key registers).
    pub fn save(&mut self, pauth: bool) {
        for (slot, (get, _)) in self.r.iter_mut().zip(EL1_ACCESS) {
            *slot = get();
        }
        if pauth {
            for (slot, (get, _)) in self.keys.iter_mut().zip(KEY_ACCESS) {
                *slot = get();
            }
        }
        // ELR/SPSR_EL1 are written by exception injection at every exit
        // too, so they travel with the others.
        self.elr_spsr = [sysreg::elr_el1(), sysreg::spsr_el1()];
    }

    /// Writes the registers back.
    pub fn restore(&self, pauth: bool) {
        for (v, (_, set)) in self.r.iter().zip(EL1_ACCESS) {
            set(*v);
        }
        if pauth {
            for (v, (_, set)) in self.keys.iter().zip(KEY_ACCESS) {
                set(*v);
            }
        }
        sysreg::set_elr_el1(self.elr_spsr[0]);
        sysreg::set_spsr_el1(self.elr_spsr[1]);
    }
}

/// Everything of a vCPU besides its general-purpose registers that lives
/// in the physical CPU while it runs, saved when another vCPU takes the CPU
/// and restored when it comes back.
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuContext {
    /// EL1 system registers.
    pub el1: El1Regs,
    /// `ELR_EL2`: where the vCPU resumes.
    pub pc: u64,
    /// `SPSR_EL2`: its PSTATE.
    pub pstate: u64,
    /// The guest timers (their deadlines wake a blocked vCPU).
    pub timers: SavedTimers,
    /// Bit `n`: private interrupt `n` was physically active (a hardware-
    /// linked timer interrupt the guest had not deactivated yet).
    pub hw_active: u32,
    /// The virtual CPU interface's control register (`ICH_VMCR_EL2` /
    /// `GICH_VMCR`).
    pub vmcr: u32,
    /// Its active-priority registers.
    pub aprs: crate::gic::ActivePriorities,
    /// FP/SIMD registers (switched lazily by their owner).
    pub fp: crate::fpsimd::FpState,
    /// Breakpoints, watchpoints, OS lock and `MDSCR_EL1` (moved lazily by
    /// their owner, ADR 0012).
    pub debug: crate::debugregs::DebugFile,
    /// The PMU's state (moved lazily by its owner, ADR 0012).
    pub pmu: crate::debugregs::PmuFile,
    /// The debug and PMU state that never reaches the CPU.
    pub debug_shadow: stratum_core::debugpmu::Shadow,
}

impl VcpuContext {
    /// A vCPU at reset about to enter at `entry` (EL1h, MMU off, D/A/I/F
    /// masked), per the boot protocol.
    pub fn at_reset(entry: u64) -> Self {
        Self {
            el1: El1Regs::at_reset(),
            pc: entry,
            pstate: PSTATE_EL1H_MASKED,
            ..Self::default()
        }
    }

    /// Saves the running vCPU's EL1 registers, resume point and timers
    /// (`pauth`: the CPU has key registers); its timers are stopped, so
    /// they cannot fire into whatever runs next on this CPU.
    pub fn save_live(&mut self, pauth: bool) {
        self.el1.save(pauth);
        self.pc = sysreg::elr_el2();
        self.pstate = sysreg::spsr_el2();
        self.timers = crate::timer::save_timers();
    }

    /// Loads this context into the CPU, the VM's virtual counter offset
    /// `cntvoff` first (its timers compare against the virtual count).
    pub fn restore_live(&self, pauth: bool, cntvoff: u64) {
        sysreg::set_cntvoff_el2(cntvoff);
        self.el1.restore(pauth);
        sysreg::set_elr_el2(self.pc);
        sysreg::set_spsr_el2(self.pstate);
        crate::timer::restore_timers(&self.timers);
    }
}

/// The running vCPU, seen through its saved frame and the live EL1/EL2
/// registers (SP and PC are not in the frame).
pub struct LiveVcpu<'a, T> {
    /// The frame the exit vector filled.
    pub frame: &'a mut GuestFrame<T>,
}

impl<T> LiveVcpu<'_, T> {
    fn uses_sp_el1(&self) -> bool {
        uses_sp_el1(sysreg::spsr_el2())
    }
}

impl<T> GuestRegs for LiveVcpu<'_, T> {
    fn x(&self, n: u8) -> u64 {
        self.frame.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    fn set_x(&mut self, n: u8, v: u64) {
        if let Some(r) = self.frame.x.get_mut(usize::from(n)) {
            *r = v;
        }
    }

    fn sp(&self) -> u64 {
        if self.uses_sp_el1() {
            sysreg::sp_el1()
        } else {
            sysreg::sp_el0()
        }
    }

    fn set_sp(&mut self, v: u64) {
        if self.uses_sp_el1() {
            sysreg::set_sp_el1(v);
        } else {
            sysreg::set_sp_el0(v);
        }
    }

    fn pc(&self) -> u64 {
        sysreg::elr_el2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysreg::{Reg, fake};
    use crate::timer::{CTL_ENABLE, CTL_ISTATUS};

    /// Gives every switched EL1 register a distinct value from `base`.
    fn fill_el1(base: u64) {
        for (i, (_, set)) in EL1_ACCESS.iter().enumerate() {
            set(base + i as u64);
        }
        for (i, (_, set)) in KEY_ACCESS.iter().enumerate() {
            set(base + 0x100 + i as u64);
        }
        sysreg::set_elr_el1(base + 0x200);
        sysreg::set_spsr_el1(base + 0x201);
    }

    #[test]
    fn reset_context_enters_el1h_masked_with_the_mmu_off() {
        let ctx = VcpuContext::at_reset(0x4008_0000);
        assert_eq!(ctx.pc, 0x4008_0000);
        assert_eq!(ctx.pstate, PSTATE_EL1H_MASKED);
        ctx.restore_live(false, 7);
        assert_eq!(sysreg::sctlr_el1(), SCTLR_EL1_RESET);
        assert_eq!(sysreg::elr_el2(), 0x4008_0000);
        assert_eq!(sysreg::spsr_el2(), PSTATE_EL1H_MASKED);
        assert_eq!(fake::get(Reg::CNTVOFF_EL2), 7);
        assert_eq!(sysreg::ttbr0_el1(), 0, "every other register is zero");
    }

    #[test]
    fn a_saved_context_comes_back_exactly_after_another_ran() {
        fill_el1(0x1000);
        sysreg::set_elr_el2(0x4000_1234);
        sysreg::set_spsr_el2(0x3c5);
        fake::set(Reg::CNTV_CTL_EL0, CTL_ENABLE | CTL_ISTATUS);
        fake::set(Reg::CNTV_CVAL_EL0, 99);
        let mut a = VcpuContext::default();
        a.save_live(true);
        assert_eq!(fake::get(Reg::CNTV_CTL_EL0), 0, "timers stop when saved");
        assert_eq!(a.timers.cntv_cval, 99);

        // Another vCPU runs (without key registers) and is saved.
        fill_el1(0x5000);
        let mut b = VcpuContext::default();
        b.save_live(false);
        assert_ne!(a.el1, b.el1);

        a.restore_live(true, 0);
        let mut again = VcpuContext::default();
        again.save_live(true);
        assert_eq!(again.el1, a.el1, "every EL1 register, keys included");
        assert_eq!((again.pc, again.pstate), (0x4000_1234, 0x3c5));
        assert_eq!(sysreg::apgakeyhi_el1(), 0x1000 + 0x100 + 9);
    }

    #[test]
    fn without_pauth_the_key_registers_are_left_alone() {
        fill_el1(0x1000);
        let mut ctx = VcpuContext::default();
        ctx.save_live(false);
        sysreg::set_apiakeylo_el1(0xdead);
        ctx.restore_live(false, 0);
        assert_eq!(sysreg::apiakeylo_el1(), 0xdead);
    }

    #[test]
    fn the_live_view_picks_the_stack_pointer_the_pstate_selects() {
        let mut frame = GuestFrame {
            x: [0; 31],
            tag: (),
        };
        sysreg::set_sp_el0(0x100);
        sysreg::set_sp_el1(0x200);
        sysreg::set_spsr_el2(PSTATE_EL1H_MASKED);
        let mut live = LiveVcpu { frame: &mut frame };
        assert_eq!(live.sp(), 0x200);
        live.set_sp(0x210);
        assert_eq!(sysreg::sp_el1(), 0x210);
        sysreg::set_spsr_el2(0x3c4); // EL1t
        assert_eq!(live.sp(), 0x100);
        live.set_x(30, 5);
        live.set_x(31, 6); // XZR: ignored
        assert_eq!((live.x(30), live.x(31)), (5, 0));
    }
}
