//! The Arm generic timer, as EL2 uses it.
//!
//! - The guest's EL1 virtual timer (`CNTV_*`, counting `CNTPCT -
//!   CNTVOFF_EL2`) and EL1 physical timer (`CNTP_*`) belong to the vCPU:
//!   [`save_timers`] and [`restore_timers`] switch them with the vCPU.
//! - The EL2 physical timer (`CNTHP_*`, PPI 10 = INTID [`HYP_TIMER_INTID`])
//!   is the hypervisor's own, for preemption and for waking blocked vCPUs.
//!
//! Without VHE (`HCR_EL2.E2H == 0`, which Stratum runs with) `CNTP_*_EL0`
//! accessed at EL2 are the EL1 physical timer, not the EL2 one.

use stratum_core::lifecycle::SavedTimers;

use crate::{barrier, sysreg};

/// INTID of the EL2 physical timer (PPI 10).
pub const HYP_TIMER_INTID: u32 = 26;
/// INTID of the EL1 virtual timer (PPI 11).
pub const VIRT_TIMER_INTID: u32 = 27;
/// INTID of the Non-secure EL1 physical timer (PPI 14).
pub const PHYS_TIMER_INTID: u32 = 30;

/// `CNT*_CTL.ENABLE`: the timer is running.
pub const CTL_ENABLE: u64 = 1 << 0;
/// `CNT*_CTL.IMASK`: the timer condition does not assert the interrupt.
pub const CTL_IMASK: u64 = 1 << 1;
/// `CNT*_CTL.ISTATUS` (read-only): the timer condition is met.
pub const CTL_ISTATUS: u64 = 1 << 2;

/// Whether a timer whose control register reads `ctl` will assert its
/// interrupt when its compare value is reached: enabled and not masked.
pub const fn is_armed(ctl: u64) -> bool {
    ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE
}

/// Whether a timer whose control register reads `ctl` asserts its
/// interrupt line: enabled, not masked, condition met
/// (`ISTATUS && ENABLE && !IMASK`).
pub const fn asserts(ctl: u64) -> bool {
    ctl & (CTL_ENABLE | CTL_IMASK | CTL_ISTATUS) == CTL_ENABLE | CTL_ISTATUS
}

/// Of the guest timers' interrupts, the ones (bit `i`: INTID `i`, of
/// [`VIRT_TIMER_INTID`] and [`PHYS_TIMER_INTID`]) whose line is low, for
/// control registers `cntv_ctl` and `cntp_ctl`.
pub const fn low_lines(cntv_ctl: u64, cntp_ctl: u64) -> u32 {
    let v = if asserts(cntv_ctl) {
        0
    } else {
        1 << VIRT_TIMER_INTID
    };
    let p = if asserts(cntp_ctl) {
        0
    } else {
        1 << PHYS_TIMER_INTID
    };
    v | p
}

/// [`low_lines`] of the timers of the vCPU running (or loaded) on this
/// CPU, read live: what a guest that disabled, masked or re-armed a timer
/// has left of its interrupt line.
#[inline]
pub fn live_low_lines() -> u32 {
    low_lines(sysreg::cntv_ctl_el0(), sysreg::cntp_ctl_el0())
}

/// The physical count, ordered after earlier instructions (`isb; mrs
/// CNTPCT_EL0`).
#[inline]
pub fn counter() -> u64 {
    barrier::isb();
    sysreg::cntpct_el0()
}

/// The virtual count as the guest whose `CNTVOFF_EL2` is loaded sees it
/// (`isb; mrs CNTVCT_EL0`).
#[inline]
pub fn virtual_counter() -> u64 {
    barrier::isb();
    sysreg::cntvct_el0()
}

/// Counter frequency in Hz (`CNTFRQ_EL0`, set by firmware).
#[inline]
pub fn frequency() -> u64 {
    sysreg::cntfrq_el0()
}

/// The guest virtual timer's control (`CNTV_CTL_EL0`).
#[inline]
pub fn virt_ctl() -> u64 {
    sysreg::cntv_ctl_el0()
}

/// Sets the guest virtual timer's control.
#[inline]
pub fn set_virt_ctl(v: u64) {
    sysreg::set_cntv_ctl_el0(v);
}

/// The guest virtual timer's compare value (`CNTV_CVAL_EL0`, virtual count).
#[inline]
pub fn virt_cval() -> u64 {
    sysreg::cntv_cval_el0()
}

/// Sets the guest virtual timer's compare value.
#[inline]
pub fn set_virt_cval(v: u64) {
    sysreg::set_cntv_cval_el0(v);
}

/// Arms the EL2 physical timer to fire when the physical count reaches
/// `deadline`. The interrupt reaches EL2 only once the hypervisor has
/// enabled INTID [`HYP_TIMER_INTID`] at the GIC.
pub fn arm_hyp_timer(deadline: u64) {
    // SAFETY: the EL2 timer only asserts PPI 10; whether and when that
    // interrupts EL2 is decided by the GIC enable and PSTATE.I, which the
    // hypervisor controls. No translation, trap or routing changes.
    unsafe {
        sysreg::set_cnthp_cval_el2(deadline);
        sysreg::set_cnthp_ctl_el2(CTL_ENABLE);
    }
    barrier::isb();
}

/// Stops the EL2 physical timer (and drops its interrupt line).
pub fn disarm_hyp_timer() {
    // SAFETY: as for `arm_hyp_timer`; disabling only deasserts PPI 10.
    unsafe { sysreg::set_cnthp_ctl_el2(0) };
    barrier::isb();
}

/// Whether the EL2 physical timer is enabled and its deadline has passed.
pub fn hyp_timer_expired() -> bool {
    let ctl = sysreg::cnthp_ctl_el2();
    ctl & CTL_ENABLE != 0 && ctl & CTL_ISTATUS != 0
}

/// Reads the running vCPU's EL1 timers, then stops both, so they cannot
/// fire while another vCPU (or none) runs on this CPU.
pub fn save_timers() -> SavedTimers {
    let s = SavedTimers {
        cntv_ctl: sysreg::cntv_ctl_el0(),
        cntv_cval: sysreg::cntv_cval_el0(),
        cntp_ctl: sysreg::cntp_ctl_el0(),
        cntp_cval: sysreg::cntp_cval_el0(),
    };
    sysreg::set_cntv_ctl_el0(0);
    sysreg::set_cntp_ctl_el0(0);
    s
}

/// Loads saved timers for the vCPU about to run (compare values first, so
/// enabling never fires against a stale deadline). The VM's `CNTVOFF_EL2`
/// is loaded separately, before.
pub fn restore_timers(t: &SavedTimers) {
    sysreg::set_cntv_cval_el0(t.cntv_cval);
    sysreg::set_cntp_cval_el0(t.cntp_cval);
    sysreg::set_cntv_ctl_el0(t.cntv_ctl & (CTL_ENABLE | CTL_IMASK));
    sysreg::set_cntp_ctl_el0(t.cntp_ctl & (CTL_ENABLE | CTL_IMASK));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysreg::{Reg, fake};

    #[test]
    fn save_reads_then_stops_and_restore_reloads() {
        fake::set(Reg::CNTV_CTL_EL0, CTL_ENABLE | CTL_ISTATUS);
        fake::set(Reg::CNTV_CVAL_EL0, 1000);
        fake::set(Reg::CNTP_CTL_EL0, CTL_ENABLE | CTL_IMASK);
        fake::set(Reg::CNTP_CVAL_EL0, 2000);
        let s = save_timers();
        assert_eq!(
            s,
            SavedTimers {
                cntv_ctl: CTL_ENABLE | CTL_ISTATUS,
                cntv_cval: 1000,
                cntp_ctl: CTL_ENABLE | CTL_IMASK,
                cntp_cval: 2000
            }
        );
        assert_eq!(fake::get(Reg::CNTV_CTL_EL0), 0);
        assert_eq!(fake::get(Reg::CNTP_CTL_EL0), 0);
        fake::set(Reg::CNTV_CVAL_EL0, 0);
        restore_timers(&s);
        assert_eq!(fake::get(Reg::CNTV_CVAL_EL0), 1000);
        assert_eq!(
            fake::get(Reg::CNTV_CTL_EL0),
            CTL_ENABLE,
            "ISTATUS is read-only"
        );
        assert_eq!(fake::get(Reg::CNTP_CTL_EL0), CTL_ENABLE | CTL_IMASK);
    }

    #[test]
    fn only_an_enabled_unmasked_timer_is_armed() {
        assert!(is_armed(CTL_ENABLE));
        assert!(is_armed(CTL_ENABLE | CTL_ISTATUS));
        assert!(!is_armed(CTL_ENABLE | CTL_IMASK));
        assert!(!is_armed(CTL_IMASK));
        assert!(!is_armed(0));
    }

    #[test]
    fn a_line_is_high_only_when_enabled_unmasked_and_due() {
        assert!(asserts(CTL_ENABLE | CTL_ISTATUS));
        assert!(!asserts(CTL_ENABLE), "not due yet");
        assert!(!asserts(CTL_ENABLE | CTL_IMASK | CTL_ISTATUS), "masked");
        assert!(!asserts(CTL_ISTATUS), "disabled");
        assert!(!asserts(0));
        assert_eq!(
            low_lines(CTL_ENABLE | CTL_ISTATUS, CTL_ENABLE | CTL_ISTATUS),
            0
        );
        assert_eq!(low_lines(0, CTL_ENABLE | CTL_ISTATUS), 1 << 27);
        assert_eq!(low_lines(CTL_ENABLE | CTL_ISTATUS, CTL_ENABLE), 1 << 30);
        fake::set(Reg::CNTV_CTL_EL0, CTL_ENABLE | CTL_IMASK | CTL_ISTATUS);
        fake::set(Reg::CNTP_CTL_EL0, CTL_ENABLE | CTL_ISTATUS);
        assert_eq!(live_low_lines(), 1 << 27);
    }

    #[test]
    fn hyp_timer_arms_and_disarms() {
        arm_hyp_timer(12345);
        assert_eq!(fake::get(Reg::CNTHP_CVAL_EL2), 12345);
        assert_eq!(fake::get(Reg::CNTHP_CTL_EL2), CTL_ENABLE);
        assert!(!hyp_timer_expired());
        fake::set(Reg::CNTHP_CTL_EL2, CTL_ENABLE | CTL_ISTATUS);
        assert!(hyp_timer_expired());
        disarm_hyp_timer();
        assert_eq!(fake::get(Reg::CNTHP_CTL_EL2), 0);
    }

    #[test]
    fn counter_and_frequency_read_the_registers() {
        fake::set(Reg::CNTPCT_EL0, 77);
        fake::set(Reg::CNTVCT_EL0, 55);
        fake::set(Reg::CNTFRQ_EL0, 62_500_000);
        assert_eq!(counter(), 77);
        assert_eq!(virtual_counter(), 55);
        assert_eq!(frequency(), 62_500_000);
    }
}
