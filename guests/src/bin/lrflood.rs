//! `lrflood`: more pending interrupts than the hardware has list registers
//! (4 on the usual GICs). With IRQs masked it makes 12 interrupts pending —
//! SGIs 1–3 (`ICC_SGI1R_EL1` / `GICD_SGIR`), PPI 20 and SPIs 40–47
//! (`ISPENDR`, after enabling them and routing them here) — each with its
//! own priority, assigned out of INTID order. Then it unmasks IRQs and checks
//! every one arrives exactly once, highest priority (lowest value) first.
//! Prints the order of arrival.
#![no_std]
#![no_main]

use stratum_guests::gic::SgiTarget;
use stratum_guests::global::{Global, GlobalArray};
use stratum_guests::{Checks, gic, irq, print, println, timer};

stratum_guests::entry!("lrflood", main);

/// The interrupts and their priorities (distinct, in steps of 0x10 so that
/// a GIC implementing only 4 priority bits still orders them).
const PLAN: [(u32, u8); 12] = [
    (1, 0x70),
    (2, 0x20),
    (3, 0xa0),
    (20, 0x50),
    (40, 0x90),
    (41, 0x10),
    (42, 0xc0),
    (43, 0x40),
    (44, 0x80),
    (45, 0x30),
    (46, 0xb0),
    (47, 0x60),
];

/// Arrival order: INTIDs as the handler saw them.
static ORDER: GlobalArray<u32, 32> = GlobalArray::new(0);
static ARRIVED: Global<usize> = Global::new(0);

fn handler(intid: u32) {
    let n = ARRIVED.get();
    if n < 32 {
        ORDER.set(n, intid);
    }
    ARRIVED.set(n + 1);
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    let platform = gic::bring_up(dtb);
    let g = platform.gic;
    let lines = g.lines();
    println!("distributor: {lines} interrupt lines");
    if !c.check("SPIs 40-47 exist", lines > 47) {
        c.finish()
    }
    irq::set_handler(Some(handler));
    // IRQs are masked (as at entry): everything below just becomes pending.
    for &(intid, prio) in &PLAN {
        g.set_priority(intid, prio);
        if intid >= 32 {
            g.set_edge(intid, true);
            g.route_to_self(intid);
        }
        g.enable(intid);
    }
    for &(intid, _) in &PLAN {
        if intid < 16 {
            g.send_sgi(intid, SgiTarget::SelfByList);
        } else {
            g.set_pending(intid);
        }
    }
    let pending = PLAN.iter().filter(|&&(i, _)| g.is_pending(i)).count();
    println!("pending before unmasking: {pending} of {}", PLAN.len());
    c.check_count(
        "pending before unmasking",
        pending as u64,
        PLAN.len() as u64,
    );

    let want = PLAN.len();
    irq::spin_until(timer::deadline_us(500_000), || ARRIVED.get() >= want);
    // Anything extra (a duplicate) would show up now.
    irq::spin_until(timer::deadline_us(20_000), || false);
    let arrived = ARRIVED.get();
    print!("arrival order:");
    for i in 0..arrived.min(32) {
        print!(" {}", ORDER.get(i));
    }
    println!();
    c.check_count("interrupts taken", arrived as u64, want as u64);

    let mut expected = PLAN;
    expected.sort_unstable_by_key(|&(_, prio)| prio);
    print!("expected order:");
    for &(intid, _) in &expected {
        print!(" {intid}");
    }
    println!();
    let in_order = arrived == want && (0..want).all(|i| ORDER.get(i) == expected[i].0);
    c.check("highest priority first, each exactly once", in_order);
    let left = PLAN
        .iter()
        .filter(|&&(i, _)| g.is_pending(i) || g.is_active(i))
        .count();
    c.check_count("left pending or active", left as u64, 0);
    irq::set_handler(None);
    c.finish()
}
