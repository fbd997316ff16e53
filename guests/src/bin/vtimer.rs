//! `vtimer`: the generic timer's interrupts. Prints `CNTFRQ_EL0` (checked
//! against the DT timer node's `clock-frequency` if it has one, else checked
//! non-zero) and the virtual counter at boot; then takes 20 virtual-timer
//! interrupts (PPI 27) while spinning and 20 while in WFI, each armed 1 ms
//! ahead with `CNTV_CVAL_EL0`, checking each arrives in order and not before
//! its deadline (`CNTVCT >= CVAL` in the handler); then 5 EL1 physical-timer
//! interrupts (PPI 30, `CNTP_*`). Prints min/max latency in ticks per phase.
#![no_std]
#![no_main]

use stratum_guests::gic::{INTID_PTIMER, INTID_VTIMER};
use stratum_guests::global::{Global, GlobalArray};
use stratum_guests::{Checks, gic, irq, println, timer};

stratum_guests::entry!("vtimer", main);

/// Interrupts per virtual-timer phase.
const N: usize = 20;
/// Physical-timer interrupts.
const N_PHYS: usize = 5;
/// Period between interrupts.
const PERIOD_US: u64 = 1000;
/// Per-phase timeout.
const PHASE_TIMEOUT_US: u64 = 10_000_000;

/// Which timer the handler serves now.
static TIMER_INTID: Global<u32> = Global::new(INTID_VTIMER);
/// Interrupts taken in this phase.
static COUNT: Global<usize> = Global::new(0);
/// How many the phase wants.
static WANT: Global<usize> = Global::new(0);
/// Per interrupt: counter value in the handler, the deadline it was armed for.
static SEEN_AT: GlobalArray<u64, N> = GlobalArray::new(0);
static DEADLINE: GlobalArray<u64, N> = GlobalArray::new(0);
/// Interrupts with another INTID (should stay 0).
static STRAY: Global<u32> = Global::new(0);

fn read_timer(intid: u32) -> (u64, u64) {
    if intid == INTID_VTIMER {
        (timer::counter(), timer::vtimer_cval())
    } else {
        (timer::physical_counter(), timer::ptimer_cval())
    }
}

fn arm(intid: u32, cval: u64) {
    if intid == INTID_VTIMER {
        timer::set_vtimer_cval(cval);
        timer::set_vtimer_ctl(timer::CTL_ENABLE);
    } else {
        timer::set_ptimer_cval(cval);
        timer::set_ptimer_ctl(timer::CTL_ENABLE);
    }
}

fn stop(intid: u32) {
    if intid == INTID_VTIMER {
        timer::set_vtimer_ctl(0);
    } else {
        timer::set_ptimer_ctl(0);
    }
}

fn handler(intid: u32) {
    let which = TIMER_INTID.get();
    if intid != which {
        STRAY.set(STRAY.get() + 1);
        return;
    }
    let (now, cval) = read_timer(intid);
    let i = COUNT.get();
    if i < N {
        SEEN_AT.set(i, now);
        DEADLINE.set(i, cval);
    }
    COUNT.set(i + 1);
    // The timer interrupt is a level: re-arm (or stop) before the EOI.
    if i + 1 < WANT.get() {
        arm(intid, now + timer::ticks_from_us(PERIOD_US));
    } else {
        stop(intid);
    }
}

/// Runs one phase of `want` interrupts of timer `intid`; `in_wfi` waits in
/// WFI instead of spinning. Checks and prints the results.
fn phase(c: &mut Checks, name: &str, intid: u32, want: usize, in_wfi: bool) {
    TIMER_INTID.set(intid);
    COUNT.set(0);
    WANT.set(want);
    SEEN_AT.fill(0);
    DEADLINE.fill(0);
    let gic = gic::current().expect("bring_up initialized the GIC");
    gic.enable(intid);
    let (now, _) = read_timer(intid);
    arm(intid, now + timer::ticks_from_us(PERIOD_US));
    let deadline = timer::deadline_us(PHASE_TIMEOUT_US);
    let done = || COUNT.get() >= want;
    let (ok, wfis) = if in_wfi {
        irq::wfi_until(deadline, done)
    } else {
        (irq::spin_until(deadline, done), 0)
    };
    stop(intid);
    gic.disable(intid);
    let got = COUNT.get();
    c.check_count(
        format_args!("{name}: interrupts taken"),
        got as u64,
        want as u64,
    );
    if !ok {
        println!("{name}: timed out after {got} of {want} interrupts");
    }
    let (mut min, mut max) = (u64::MAX, 0);
    let (mut early, mut out_of_order) = (0, 0);
    for i in 0..got.min(want) {
        let (seen, cval) = (SEEN_AT.get(i), DEADLINE.get(i));
        if seen < cval {
            early += 1;
            println!("{name}: interrupt {i} at {seen:#x} before its deadline {cval:#x}");
        }
        if i > 0 && (cval <= DEADLINE.get(i - 1) || seen <= SEEN_AT.get(i - 1)) {
            out_of_order += 1;
        }
        let latency = seen.saturating_sub(cval);
        min = min.min(latency);
        max = max.max(latency);
    }
    c.check_count(
        format_args!("{name}: interrupts before their deadline"),
        early,
        0,
    );
    c.check_count(
        format_args!("{name}: interrupts out of order"),
        out_of_order,
        0,
    );
    if in_wfi {
        println!("{name}: {wfis} wfi wake-ups");
        c.check(format_args!("{name}: waited in wfi"), wfis > 0);
    }
    if got > 0 {
        println!("{name}: latency min {min} max {max} ticks");
    }
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    println!("CNTVCT at boot: {:#x}", timer::counter());
    let platform = gic::bring_up(dtb);
    let freq = timer::frequency();
    println!("CNTFRQ_EL0: {freq} Hz");
    match platform.devices.and_then(|d| d.timer_frequency) {
        Some(dt) => {
            println!("timer node clock-frequency: {dt} Hz");
            c.check_eq("CNTFRQ matches the DT clock-frequency", freq, u64::from(dt));
        }
        None => {
            c.check("CNTFRQ is non-zero", freq != 0);
        }
    }
    if freq == 0 {
        c.finish()
    }
    irq::set_handler(Some(handler));
    phase(&mut c, "vtimer spinning", INTID_VTIMER, N, false);
    phase(&mut c, "vtimer in wfi", INTID_VTIMER, N, true);
    phase(&mut c, "ptimer", INTID_PTIMER, N_PHYS, false);
    c.check_count("stray interrupts", u64::from(STRAY.get()), 0);
    irq::set_handler(None);
    c.finish()
}
