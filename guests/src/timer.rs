//! The generic timer: the counter, the EL1 virtual timer (`CNTV_*`, PPI 27)
//! and the EL1 physical timer (`CNTP_*`, PPI 30).
//!
//! `CNTx_CTL_EL0`: bit 0 `ENABLE`, bit 1 `IMASK`, bit 2 `ISTATUS`. The timer
//! interrupt is level-triggered: it stays asserted while `ENABLE && !IMASK &&
//! counter >= CVAL`, so a handler must re-arm or disable the timer before EOI.

use core::arch::asm;

/// `CNTx_CTL_EL0.ENABLE`.
pub const CTL_ENABLE: u64 = 1 << 0;
/// `CNTx_CTL_EL0.IMASK`.
pub const CTL_IMASK: u64 = 1 << 1;
/// `CNTx_CTL_EL0.ISTATUS`.
pub const CTL_ISTATUS: u64 = 1 << 2;

macro_rules! timer_reg {
    ($(#[$doc:meta])* $get:ident, $set:ident, $reg:literal) => {
        $(#[$doc])*
        pub fn $get() -> u64 {
            let value: u64;
            // SAFETY: reading a generic-timer register at EL1 has no side effects
            // (`isb` first so that counter reads are not speculated early).
            unsafe { asm!("isb", concat!("mrs {}, ", $reg), out(reg) value,
                          options(nomem, nostack, preserves_flags)) }
            value
        }

        $(#[$doc])*
        pub fn $set(value: u64) {
            // SAFETY: writing this EL1 timer register only changes when the
            // timer fires, which the caller manages.
            unsafe { asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) value,
                          options(nomem, nostack, preserves_flags)) }
        }
    };
}

/// `CNTFRQ_EL0`: the counter frequency in Hz (62.5 MHz on QEMU `virt`).
pub fn frequency() -> u64 {
    let value: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// `CNTVCT_EL0`: the virtual counter (`isb` first).
pub fn counter() -> u64 {
    let value: u64;
    // SAFETY: reading the virtual counter has no side effects.
    unsafe {
        asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack, preserves_flags))
    }
    value
}

/// `CNTPCT_EL0`: the physical counter (`isb` first).
pub fn physical_counter() -> u64 {
    let value: u64;
    // SAFETY: reading the physical counter has no side effects.
    unsafe {
        asm!("isb", "mrs {}, cntpct_el0", out(reg) value, options(nomem, nostack, preserves_flags))
    }
    value
}

timer_reg!(
    /// `CNTV_CTL_EL0`.
    vtimer_ctl, set_vtimer_ctl, "cntv_ctl_el0");
timer_reg!(
    /// `CNTV_CVAL_EL0`: the virtual timer's compare value.
    vtimer_cval, set_vtimer_cval, "cntv_cval_el0");
timer_reg!(
    /// `CNTV_TVAL_EL0`: the virtual timer's down-counter view.
    vtimer_tval, set_vtimer_tval, "cntv_tval_el0");
timer_reg!(
    /// `CNTP_CTL_EL0`.
    ptimer_ctl, set_ptimer_ctl, "cntp_ctl_el0");
timer_reg!(
    /// `CNTP_CVAL_EL0`: the physical timer's compare value.
    ptimer_cval, set_ptimer_cval, "cntp_cval_el0");

/// Counter ticks in `us` microseconds (at least 1).
pub fn ticks_from_us(us: u64) -> u64 {
    (frequency().saturating_mul(us) / 1_000_000).max(1)
}

/// A point on the virtual counter `us` microseconds from now.
pub fn deadline_us(us: u64) -> u64 {
    counter().saturating_add(ticks_from_us(us))
}

/// Busy-waits `us` microseconds (interrupts may be taken meanwhile).
pub fn spin_us(us: u64) {
    let end = deadline_us(us);
    while counter() < end {
        core::hint::spin_loop();
    }
}
