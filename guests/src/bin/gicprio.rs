//! `gicprio`: priorities, masking, active state and preemption.
//! - With `PMR = 0x80` a pending SPI of priority 0xA0 is not taken but one of
//!   0x40 is; raising `PMR` to 0xF0 lets the first through.
//! - Active and pending: while handling SPI 42 (active), it sets 42 pending
//!   again: `ISACTIVER` and `ISPENDR` both show it, the running priority is
//!   its priority, and after EOI it is delivered a second time.
//! - Preemption (binary point 0): inside the handler of SPI 43 (priority
//!   0xC0), with IRQs unmasked, SPI 44 (0x20) is taken at once, while SPI 45
//!   (also 0xC0) waits until 43's EOI.
//!
//! Priorities are multiples of 0x20, exact on a GIC with 3 or more
//! implemented priority bits (the architecture requires at least 4).
#![no_std]
#![no_main]

use stratum_guests::global::{Global, GlobalArray};
use stratum_guests::{Checks, gic, irq, println, timer};

stratum_guests::entry!("gicprio", main);

const LOW: u32 = 40;
const HIGH: u32 = 41;
const REPEND: u32 = 42;
const OUTER: u32 = 43;
const PREEMPTER: u32 = 44;
const SAME_PRIO: u32 = 45;

/// Deliveries per INTID.
static COUNT: GlobalArray<u32, 64> = GlobalArray::new(0);
/// What the handler of `REPEND` saw the first time.
static REPEND_ACTIVE: Global<bool> = Global::new(false);
static REPEND_PENDING: Global<bool> = Global::new(false);
static REPEND_RPR: Global<u8> = Global::new(0);
/// Seen by `OUTER`'s handler after unmasking.
static PREEMPTED: Global<bool> = Global::new(false);
static SAME_PRIO_INSIDE: Global<u32> = Global::new(0);
/// Seen by `PREEMPTER`'s handler.
static OUTER_ACTIVE_IN_PREEMPTER: Global<bool> = Global::new(false);
static RPR_IN_PREEMPTER: Global<u8> = Global::new(0);

fn handler(intid: u32) {
    if intid >= 64 {
        stratum_guests::fail(format_args!("unexpected IRQ: INTID {intid}"))
    }
    let n = COUNT.get(intid as usize) + 1;
    COUNT.set(intid as usize, n);
    let g = gic::current().expect("the GIC is up");
    match intid {
        REPEND if n == 1 => {
            g.set_pending(REPEND);
            REPEND_ACTIVE.set(g.is_active(REPEND));
            REPEND_PENDING.set(g.is_pending(REPEND));
            REPEND_RPR.set(g.running_priority());
        }
        OUTER => {
            g.set_pending(SAME_PRIO);
            g.set_pending(PREEMPTER);
            let deadline = timer::deadline_us(200_000);
            // Unmasked: PREEMPTER may now preempt this handler.
            PREEMPTED.set(irq::spin_until(deadline, || {
                COUNT.get(PREEMPTER as usize) > 0
            }));
            irq::spin_until(timer::deadline_us(20_000), || false);
            SAME_PRIO_INSIDE.set(COUNT.get(SAME_PRIO as usize));
        }
        PREEMPTER => {
            OUTER_ACTIVE_IN_PREEMPTER.set(g.is_active(OUTER));
            RPR_IN_PREEMPTER.set(g.running_priority());
        }
        _ => {}
    }
}

fn count(intid: u32) -> u64 {
    u64::from(COUNT.get(intid as usize))
}

fn quiet() {
    irq::spin_until(timer::deadline_us(20_000), || false);
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    let platform = gic::bring_up(dtb);
    let g = platform.gic;
    for (intid, prio) in [
        (LOW, 0xa0),
        (HIGH, 0x40),
        (REPEND, 0x80),
        (OUTER, 0xc0),
        (PREEMPTER, 0x20),
        (SAME_PRIO, 0xc0),
    ] {
        g.set_priority(intid, prio);
        g.set_edge(intid, true);
        g.route_to_self(intid);
        g.enable(intid);
    }
    irq::set_handler(Some(handler));

    // Priority mask.
    g.set_pmr(0x80);
    println!("PMR set to 0x80, reads {:#04x}", g.pmr());
    g.set_pending(LOW);
    quiet();
    c.check_count("priority 0xa0 under PMR 0x80: taken", count(LOW), 0);
    c.check(
        "priority 0xa0 under PMR 0x80: still pending",
        g.is_pending(LOW),
    );
    g.set_pending(HIGH);
    irq::spin_until(timer::deadline_us(200_000), || count(HIGH) > 0);
    quiet();
    c.check_count("priority 0x40 under PMR 0x80: taken", count(HIGH), 1);
    c.check_count("priority 0xa0 still held back", count(LOW), 0);
    g.set_pmr(0xf0);
    println!("PMR set to 0xf0, reads {:#04x}", g.pmr());
    irq::spin_until(timer::deadline_us(200_000), || count(LOW) > 0);
    quiet();
    c.check_count("priority 0xa0 after raising PMR: taken", count(LOW), 1);

    // Active and pending at once.
    g.set_pending(REPEND);
    irq::spin_until(timer::deadline_us(200_000), || count(REPEND) >= 2);
    quiet();
    c.check("in its handler: ISACTIVER shows it", REPEND_ACTIVE.get());
    c.check(
        "in its handler, set pending again: ISPENDR shows it",
        REPEND_PENDING.get(),
    );
    c.check_eq(
        "running priority in the handler",
        u64::from(REPEND_RPR.get()),
        0x80,
    );
    c.check_count("delivered again after EOI (deliveries)", count(REPEND), 2);
    c.check(
        "neither pending nor active afterwards",
        !g.is_pending(REPEND) && !g.is_active(REPEND),
    );
    c.check_eq(
        "running priority when idle",
        u64::from(g.running_priority()),
        0xff,
    );

    // Preemption.
    let (bpr, bpr2) = g.binary_points();
    println!("binary point: {bpr} (v2 GICC_BPR: {bpr2})");
    g.set_pending(OUTER);
    irq::spin_until(timer::deadline_us(500_000), || {
        count(OUTER) > 0 && count(SAME_PRIO) > 0
    });
    quiet();
    c.check_count("outer (0xc0) taken", count(OUTER), 1);
    c.check("0x20 preempted the 0xc0 handler", PREEMPTED.get());
    c.check(
        "in the preempting handler, the outer one is active",
        OUTER_ACTIVE_IN_PREEMPTER.get(),
    );
    c.check_eq(
        "running priority in the preempting handler",
        u64::from(RPR_IN_PREEMPTER.get()),
        0x20,
    );
    c.check_count(
        "same priority (0xc0) taken inside the outer handler",
        u64::from(SAME_PRIO_INSIDE.get()),
        0,
    );
    c.check_count(
        "same priority taken after the outer EOI",
        count(SAME_PRIO),
        1,
    );
    irq::set_handler(None);
    c.finish()
}
