//! A vCPU's register frame, the EL1 state switched with it, and its state
//! at reset.
//!
//! The frame's layout is the exit vector's ([`stratum_arch::vectors`]);
//! the architected reset values come from [`stratum_arch::el1`].

use stratum_arch::el1::{PSTATE_EL1H_MASKED, SCTLR_EL1_RESET};
use stratum_arch::sysreg;
use stratum_core::lifecycle::SavedTimers;
use stratum_core::mmio::GuestRegs;
use stratum_core::stats::ExitStats;

/// The general-purpose registers of a guest vCPU, saved by the exit vector
/// (x0–x30 at offsets 0, 8, …, 240), and whose they are ([`VcpuTag`]).
pub type Frame = stratum_arch::vectors::GuestFrame<VcpuTag>;

/// What a vCPU's frame says about its owner, so that the exit path (which
/// is handed the frame) needs no lookup to know whose exit it handles or
/// where to count it. Set when the VM is built; never changes.
#[derive(Clone, Copy, Debug)]
pub struct VcpuTag {
    /// The VM's index.
    pub vm: usize,
    /// The vCPU's index in its VM.
    pub vcpu: usize,
    /// Its exit counters in the telemetry block.
    pub stats: &'static ExitStats,
}

impl VcpuTag {
    /// The tag of vCPU `vcpu` of VM `vm`.
    pub fn new(vm: usize, vcpu: usize) -> Self {
        Self {
            vm,
            vcpu,
            stats: crate::telemetry::stats(vm, vcpu),
        }
    }
}

impl Default for VcpuTag {
    /// No vCPU's: counts go to the telemetry block's overflow counters.
    fn default() -> Self {
        Self::new(usize::MAX, usize::MAX)
    }
}

/// A fresh frame for vCPU `vcpu` of VM `vm`: every register zero.
pub fn frame(vm: usize, vcpu: usize) -> Frame {
    Frame {
        x: [0; 31],
        tag: VcpuTag::new(vm, vcpu),
    }
}

/// The running vCPU, seen through its saved frame and the live EL1/EL2
/// registers (SP and PC are not in the frame).
pub struct LiveVcpu<'a> {
    /// The frame the exit vector filled.
    pub frame: &'a mut Frame,
}

impl LiveVcpu<'_> {
    fn uses_sp_el1(&self) -> bool {
        stratum_arch::el1::uses_sp_el1(sysreg::spsr_el2())
    }
}

impl GuestRegs for LiveVcpu<'_> {
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

/// The EL1 system registers a vCPU owns, in the order [`El1Regs::save`]
/// reads them. Saved only when another vCPU takes the physical CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct El1Regs {
    r: [u64; EL1_REGS],
    /// Pointer-authentication keys (only when the CPU has them).
    keys: [u64; 10],
    /// `ELR_EL1`, `SPSR_EL1`.
    elr_spsr: [u64; 2],
}

const EL1_REGS: usize = 22;

type Get = fn() -> u64;
type Set = fn(u64);

/// Each switched EL1 register's reader and writer.
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
const KEY_ACCESS: [(Get, Set); 10] = [
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
    pub aprs: stratum_arch::gic::ActivePriorities,
    /// FP/SIMD registers (switched lazily: see `sched`).
    pub fp: stratum_arch::fpsimd::FpState,
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
}
