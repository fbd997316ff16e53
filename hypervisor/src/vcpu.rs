//! A vCPU's register frame and its boot-time EL1 state.

use stratum_arch::sysreg;
use stratum_core::mmio::GuestRegs;

/// The general-purpose registers of a guest vCPU, saved by the exit vector.
/// The layout is fixed: `head.rs` stores x0–x30 at offsets 0, 8, …, 240.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame {
    /// x0–x30.
    pub x: [u64; 31],
}

const _: () = assert!(core::mem::size_of::<Frame>() == 31 * 8);

/// PSTATE for a guest entering at EL1h with D, A, I and F masked.
pub const PSTATE_EL1H_MASKED: u64 = 0x3c5;
/// `SCTLR_EL1` at reset: RES1 bits only, MMU and caches off, little-endian.
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// The running vCPU, seen through its saved frame and the live EL1/EL2
/// registers (SP and PC are not in the frame).
pub struct LiveVcpu<'a> {
    /// The frame the exit vector filled.
    pub frame: &'a mut Frame,
}

impl LiveVcpu<'_> {
    fn uses_sp_el1(&self) -> bool {
        // M[3:0] = 0b0101 is EL1h; EL1t and EL0 use SP_EL0.
        sysreg::spsr_el2() & 0xf == 0b0101
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

/// Puts the EL1 system registers in their reset state for a vCPU about to
/// enter at `entry` (MMU off), and the frame in the boot protocol's state.
pub fn reset_el1(frame: &mut Frame, entry: u64, x0: u64) {
    *frame = Frame::default();
    frame.x[0] = x0;
    sysreg::set_sctlr_el1(SCTLR_EL1_RESET);
    for set in [
        sysreg::set_vbar_el1,
        sysreg::set_esr_el1,
        sysreg::set_far_el1,
        sysreg::set_elr_el1,
        sysreg::set_spsr_el1,
        sysreg::set_sp_el1,
        sysreg::set_sp_el0,
        sysreg::set_cpacr_el1,
        sysreg::set_tcr_el1,
        sysreg::set_mair_el1,
        sysreg::set_ttbr0_el1,
        sysreg::set_ttbr1_el1,
        sysreg::set_contextidr_el1,
        sysreg::set_tpidr_el1,
        sysreg::set_cntv_ctl_el0,
        sysreg::set_cntkctl_el1,
    ] {
        set(0);
    }
    sysreg::set_elr_el2(entry);
    sysreg::set_spsr_el2(PSTATE_EL1H_MASKED);
}
