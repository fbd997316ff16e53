//! `sgi`: software-generated interrupts to itself. Sends each of SGI 0–15
//! once per addressing mode — v3: `ICC_SGI1R_EL1` with its own Aff0 in
//! `TargetList` and Aff1–3 from `MPIDR_EL1`; v2: `GICD_SGIR` with
//! `TargetListFilter = 0b10` ("self") and with `0b00` and its own CPU mask —
//! and checks each arrives exactly once with the right INTID. Then sends SGIs
//! to "all but self" (v3 `IRM = 1`, v2 filter `0b01`), which on one CPU must
//! deliver nothing.
#![no_std]
#![no_main]

use stratum_guests::gic::SgiTarget;
use stratum_guests::global::GlobalArray;
use stratum_guests::{Checks, gic, irq, println, timer};

stratum_guests::entry!("sgi", main);

/// How long to wait for one SGI (and to make sure no other follows).
const WAIT_US: u64 = 200_000;
/// How long to watch for SGIs that must not arrive.
const QUIET_US: u64 = 20_000;

/// Deliveries per INTID (0–31; anything else fails the test).
static COUNT: GlobalArray<u32, 32> = GlobalArray::new(0);

fn handler(intid: u32) {
    if intid >= 32 {
        stratum_guests::fail(format_args!("unexpected IRQ: INTID {intid}"))
    }
    COUNT.set(intid as usize, COUNT.get(intid as usize) + 1);
}

fn total() -> u32 {
    (0..32).map(|i| COUNT.get(i)).sum()
}

/// Sends each SGI to `target` and checks it arrives once, alone.
fn each_sgi(c: &mut Checks, g: &gic::Gic, target: SgiTarget, how: &str) {
    let mut wrong = 0;
    for sgi in 0..16 {
        COUNT.fill(0);
        g.send_sgi(sgi, target);
        irq::spin_until(timer::deadline_us(WAIT_US), || COUNT.get(sgi as usize) > 0);
        // Give a duplicate (or a wrong INTID) the chance to show up too.
        irq::spin_until(timer::deadline_us(QUIET_US), || false);
        let (mine, all) = (COUNT.get(sgi as usize), total());
        if mine != 1 || all != 1 {
            wrong += 1;
            println!("{how}: SGI {sgi} arrived {mine} times, {all} interrupts in all");
        }
    }
    println!("{how}: sent SGIs 0-15");
    c.check_count(
        format_args!("{how}: SGIs not delivered exactly once"),
        wrong,
        0,
    );
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    let platform = gic::bring_up(dtb);
    let g = platform.gic;
    println!("MPIDR_EL1: {:#x}", stratum_guests::sysreg::mpidr_el1());
    for sgi in 0..16 {
        g.set_priority(sgi, 0x80);
        g.enable(sgi);
    }
    irq::set_handler(Some(handler));
    if g.is_v3() {
        each_sgi(
            &mut c,
            &g,
            SgiTarget::SelfByList,
            "ICC_SGI1R_EL1 TargetList=self",
        );
    } else {
        println!("GICv2: own CPU mask {:#04x}", g.cpu_mask());
        each_sgi(&mut c, &g, SgiTarget::SelfByFilter, "GICD_SGIR filter=self");
        each_sgi(
            &mut c,
            &g,
            SgiTarget::SelfByList,
            "GICD_SGIR filter=list(self)",
        );
    }
    COUNT.fill(0);
    for sgi in [0, 7, 15] {
        g.send_sgi(sgi, SgiTarget::AllButSelf);
    }
    irq::spin_until(timer::deadline_us(QUIET_US * 5), || false);
    let how = if g.is_v3() {
        "ICC_SGI1R_EL1 IRM=1"
    } else {
        "GICD_SGIR filter=all-but-self"
    };
    c.check_count(
        format_args!("{how}: SGIs delivered to self"),
        u64::from(total()),
        0,
    );
    let pending = (0..16).filter(|&i| g.is_pending(i)).count();
    c.check_count("SGIs left pending", pending as u64, 0);
    irq::set_handler(None);
    c.finish()
}
