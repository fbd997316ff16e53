//! `timerline`: the guest timers' interrupt lines follow
//! `ISTATUS && ENABLE && !IMASK`, as the architecture defines them. For the
//! virtual timer (PPI 27) and the EL1 physical timer (PPI 30), and for each
//! way a guest drops a line — disabling the timer, masking it, moving its
//! compare value into the future — every round, with IRQs masked at the
//! CPU:
//!
//! 1. arms the timer due at once and waits until `ISPENDR` shows its
//!    interrupt pending (the line is high);
//! 2. drops the line, then observes: either by reading `ISPENDR` and
//!    `ICPENDR` (both must show it clear), or, after an exit that says
//!    nothing about interrupts (a UART register read), by waiting in `WFI`
//!    (which must not end before the *other* timer, armed 1 ms ahead, is
//!    due). Under a hypervisor, an interrupt already in a list register
//!    can end a `WFI` that follows the drop with no exit in between (the
//!    `WFI` then does not trap): docs/design.md, "Timers";
//! 3. unmasks IRQs for 2 ms: the dropped interrupt must not be taken;
//! 4. raises the line again: the interrupt must be taken once (its physical
//!    interrupt was let go, not left active).
//!
//! `rounds=N` (default 4) repeats the whole set, so that on a shared CPU
//! other vCPUs run in between. Prints the counts per case and `PASS` when
//! every round behaved.
#![no_std]
#![no_main]

use stratum_guests::console::{PL011_BASE, UARTFR};
use stratum_guests::gic::{INTID_PTIMER, INTID_VTIMER};
use stratum_guests::global::Global;
use stratum_guests::{Checks, fdt, gic, irq, mmio, println, timer};

stratum_guests::entry!("timerline", main);

/// How long step 1 waits for the interrupt to show pending.
const PENDING_TIMEOUT_US: u64 = 1_000_000;
/// How long step 3 gives a stale interrupt to arrive.
const UNMASKED_US: u64 = 2_000;
/// How far ahead the other timer wakes a `WFI` (step 2).
const ALARM_US: u64 = 1_000;

/// Interrupts taken, per timer.
static TAKEN_V: Global<u32> = Global::new(0);
static TAKEN_P: Global<u32> = Global::new(0);
/// Interrupts of any other INTID (should stay 0).
static STRAY: Global<u32> = Global::new(0);

/// How the guest drops a due timer's line.
#[derive(Clone, Copy)]
enum Drop {
    /// `ENABLE` = 0.
    Disable,
    /// `IMASK` = 1.
    Mask,
    /// The compare value 10 s ahead.
    Future,
}

impl Drop {
    const ALL: [Self; 3] = [Self::Disable, Self::Mask, Self::Future];

    fn name(self) -> &'static str {
        match self {
            Self::Disable => "disabled",
            Self::Mask => "masked",
            Self::Future => "re-armed for later",
        }
    }
}

/// How the guest looks at the interrupt after the drop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Observe {
    /// `ISPENDR`/`ICPENDR` reads.
    Registers,
    /// A `WFI` with IRQs masked.
    Wfi,
}

/// One of the two EL1 timers.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Timer(u32);

impl Timer {
    fn name(self) -> &'static str {
        if self.0 == INTID_VTIMER {
            "vtimer"
        } else {
            "ptimer"
        }
    }

    fn other(self) -> Self {
        if self.0 == INTID_VTIMER {
            Self(INTID_PTIMER)
        } else {
            Self(INTID_VTIMER)
        }
    }

    fn now(self) -> u64 {
        if self.0 == INTID_VTIMER {
            timer::counter()
        } else {
            timer::physical_counter()
        }
    }

    fn set_cval(self, cval: u64) {
        if self.0 == INTID_VTIMER {
            timer::set_vtimer_cval(cval)
        } else {
            timer::set_ptimer_cval(cval)
        }
    }

    fn set_ctl(self, ctl: u64) {
        if self.0 == INTID_VTIMER {
            timer::set_vtimer_ctl(ctl)
        } else {
            timer::set_ptimer_ctl(ctl)
        }
    }

    fn taken(self) -> u32 {
        if self.0 == INTID_VTIMER {
            TAKEN_V.get()
        } else {
            TAKEN_P.get()
        }
    }

    /// Due now: the line rises as soon as the write lands.
    fn arm_now(self) {
        self.set_cval(self.now());
        self.set_ctl(timer::CTL_ENABLE);
    }

    /// Due `us` from now; returns the compare value.
    fn arm_in(self, us: u64) -> u64 {
        let cval = self.now() + timer::ticks_from_us(us);
        self.set_cval(cval);
        self.set_ctl(timer::CTL_ENABLE);
        cval
    }

    fn drop_line(self, how: Drop) {
        match how {
            Drop::Disable => self.set_ctl(0),
            Drop::Mask => self.set_ctl(timer::CTL_ENABLE | timer::CTL_IMASK),
            Drop::Future => self.set_cval(self.now() + timer::ticks_from_us(10_000_000)),
        }
    }

    /// Undoes [`Timer::drop_line`]: the line rises again at once.
    fn raise_line(self, how: Drop) {
        match how {
            Drop::Disable | Drop::Mask => self.set_ctl(timer::CTL_ENABLE),
            Drop::Future => self.set_cval(self.now()),
        }
    }
}

/// Counts the interrupt and stops its timer (the line is a level: it must
/// drop before the EOI).
fn handler(intid: u32) {
    match intid {
        INTID_VTIMER => {
            timer::set_vtimer_ctl(0);
            TAKEN_V.set(TAKEN_V.get() + 1);
        }
        INTID_PTIMER => {
            timer::set_ptimer_ctl(0);
            TAKEN_P.set(TAKEN_P.get() + 1);
        }
        _ => STRAY.set(STRAY.get() + 1),
    }
}

/// A case's name: timer, drop, observation.
struct Case(&'static str, &'static str, &'static str);

impl core::fmt::Display for Case {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}, seen by {}", self.0, self.1, self.2)
    }
}

/// Tallies of one (timer, drop, observation) case over the rounds.
#[derive(Default)]
struct Tally {
    /// Rounds whose interrupt showed pending while the line was high.
    pending_while_high: u64,
    /// Rounds whose `ISPENDR` or `ICPENDR` still showed it after the drop.
    pending_after_drop: u64,
    /// Dropped interrupts taken anyway.
    taken_after_drop: u64,
    /// Rounds whose `WFI` ended before the other timer was due.
    woken_early: u64,
    /// Rounds whose `WFI` was ended by the other timer's interrupt.
    woken_by_other: u64,
    /// Rounds whose interrupt was taken once the line rose again.
    taken_again: u64,
}

fn round(gic: &gic::Gic, t: Timer, how: Drop, observe: Observe, tally: &mut Tally) {
    let other = t.other();
    irq::disable();
    TAKEN_V.set(0);
    TAKEN_P.set(0);
    t.arm_now();
    let deadline = timer::deadline_us(PENDING_TIMEOUT_US);
    let mut high = false;
    while timer::counter() < deadline {
        if gic.is_pending(t.0) {
            high = true;
            break;
        }
    }
    tally.pending_while_high += u64::from(high);
    t.drop_line(how);
    match observe {
        Observe::Registers => {
            let stale = gic.is_pending(t.0) || gic.is_pending_by_icpendr(t.0);
            tally.pending_after_drop += u64::from(stale);
        }
        Observe::Wfi => {
            let due = other.arm_in(ALARM_US);
            // Any exit lets the hypervisor see the line (here a UART
            // register read, which says nothing about interrupts). Then,
            // masked at the CPU, a WFI still ends on a pending interrupt:
            // only the other timer's may end it.
            // SAFETY: reading the PL011's flag register has no side effects.
            let _ = unsafe { mmio::read32(PL011_BASE + UARTFR) };
            irq::wfi();
            let woke_early = other.now() < due;
            let stale = gic.is_pending(t.0) || gic.is_pending_by_icpendr(t.0);
            tally.pending_after_drop += u64::from(stale);
            tally.woken_early += u64::from(woke_early);
        }
    }
    irq::enable();
    timer::spin_us(UNMASKED_US);
    irq::disable();
    tally.taken_after_drop += u64::from(t.taken());
    if observe == Observe::Wfi {
        tally.woken_by_other += u64::from(other.taken() == 1);
        other.set_ctl(0);
    }
    t.raise_line(how);
    let deadline = timer::deadline_us(PENDING_TIMEOUT_US);
    irq::spin_until(deadline, || t.taken() >= 1);
    tally.taken_again += u64::from(t.taken() == 1);
    t.set_ctl(0);
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    let bootargs = fdt::locate_fdt(dtb)
        .ok()
        .and_then(|(_, dt)| dt.summary().ok())
        .and_then(|summary| summary.bootargs)
        .unwrap_or("");
    let rounds = stratum_guests::arg_number(bootargs, "rounds", 4);
    let platform = gic::bring_up(dtb);
    let gic = platform.gic;
    irq::set_handler(Some(handler));
    for intid in [INTID_VTIMER, INTID_PTIMER] {
        gic.enable(intid);
    }
    println!("timerline: {rounds} rounds");
    let timers = [Timer(INTID_VTIMER), Timer(INTID_PTIMER)];
    let mut tallies: [[[Tally; 2]; 3]; 2] = Default::default();
    for _ in 0..rounds {
        for (ti, &t) in timers.iter().enumerate() {
            for (di, &how) in Drop::ALL.iter().enumerate() {
                for (oi, observe) in [Observe::Registers, Observe::Wfi].into_iter().enumerate() {
                    round(&gic, t, how, observe, &mut tallies[ti][di][oi]);
                }
            }
        }
    }
    for (ti, &t) in timers.iter().enumerate() {
        for (di, &how) in Drop::ALL.iter().enumerate() {
            for (oi, seen) in ["registers", "wfi"].into_iter().enumerate() {
                let k = &tallies[ti][di][oi];
                let case = Case(t.name(), how.name(), seen);
                c.check_count(
                    format_args!("{case}: pending while due"),
                    k.pending_while_high,
                    rounds,
                );
                c.check_count(
                    format_args!("{case}: pending after the drop"),
                    k.pending_after_drop,
                    0,
                );
                c.check_count(
                    format_args!("{case}: taken after the drop"),
                    k.taken_after_drop,
                    0,
                );
                if oi == 1 {
                    c.check_count(
                        format_args!("{case}: woken before the other timer"),
                        k.woken_early,
                        0,
                    );
                    c.check_count(
                        format_args!("{case}: woken by the other timer"),
                        k.woken_by_other,
                        rounds,
                    );
                }
                c.check_count(
                    format_args!("{case}: taken once the line rose"),
                    k.taken_again,
                    rounds,
                );
            }
        }
    }
    c.check_count("stray interrupts", u64::from(STRAY.get()), 0);
    println!("timerline: {} spurious acknowledges", irq::spurious_count());
    c.finish()
}
