//! `ticker`: prints `tick N` at a fixed period, paced by the virtual timer
//! (each tick armed at `start + N × period`, so the period does not drift;
//! the vCPU waits in WFI in between, so a time-shared CPU is given back).
//! Command line: `period_ms=P` (default 500), `ticks=N` (default 10; 0 =
//! forever). After the last tick it checks none came early, prints the
//! largest lateness and passes (PASS line, then PSCI `SYSTEM_OFF`).
#![no_std]
#![no_main]

use stratum_guests::gic::INTID_VTIMER;
use stratum_guests::global::Global;
use stratum_guests::{fail, fdt, gic, irq, println, timer};

stratum_guests::entry!("ticker", main);

/// Timer interrupts taken.
static FIRED: Global<u64> = Global::new(0);

fn handler(intid: u32) {
    if intid != INTID_VTIMER {
        fail(format_args!("unexpected IRQ: INTID {intid}"))
    }
    FIRED.set(FIRED.get() + 1);
    // Level-triggered: mask it before the EOI; the next tick re-arms.
    timer::set_vtimer_ctl(timer::CTL_ENABLE | timer::CTL_IMASK);
}

fn main(dtb: usize) -> ! {
    let cmdline = match fdt::locate(dtb) {
        Ok((_, dt)) => dt.bootargs.unwrap_or(""),
        Err(e) => fail(format_args!("no usable device tree: {e}")),
    };
    let period_ms = stratum_guests::arg_number(cmdline, "period_ms", 500);
    let ticks = stratum_guests::arg_number(cmdline, "ticks", 10);
    if period_ms == 0 {
        fail("period_ms must be at least 1");
    }
    let platform = gic::bring_up(dtb);
    irq::set_handler(Some(handler));
    platform.gic.enable(INTID_VTIMER);
    if ticks == 0 {
        println!("ticker: a tick every {period_ms} ms, forever");
    } else {
        println!("ticker: a tick every {period_ms} ms, {ticks} ticks");
    }
    let period = timer::ticks_from_us(period_ms.saturating_mul(1000));
    let start = timer::counter();
    let mut max_late = 0u64;
    let mut n = 0u64;
    while ticks == 0 || n < ticks {
        n += 1;
        let due = start.saturating_add(n.saturating_mul(period));
        let before = FIRED.get();
        timer::set_vtimer_cval(due);
        timer::set_vtimer_ctl(timer::CTL_ENABLE);
        // Only the timer wakes this vCPU; the deadline is a backstop far
        // beyond the tick (a lost interrupt shows as a stalled ticker).
        let backstop = due.saturating_add(period.saturating_mul(100));
        let (ok, _) = irq::wfi_until(backstop, || FIRED.get() > before);
        let now = timer::counter();
        if !ok {
            fail(format_args!("tick {n}: no timer interrupt"));
        }
        if now < due {
            fail(format_args!("tick {n} early: counter {now:#x} < {due:#x}"));
        }
        max_late = max_late.max(now - due);
        println!("tick {n}");
    }
    timer::set_vtimer_ctl(0);
    let freq = timer::frequency().max(1);
    println!(
        "ticker: {ticks} ticks, none early, at most {} us late",
        max_late.saturating_mul(1_000_000) / freq
    );
    stratum_guests::pass()
}
