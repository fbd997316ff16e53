//! IRQ delivery for the interrupt test guests.
//!
//! The IRQ vectors (current EL with SP_ELx at `+0x280`, with SP_EL0 at
//! `+0x080`) come here through [`crate::exception`]: [`dispatch`]
//! acknowledges one interrupt at the GIC ([`crate::gic::current`]), calls the
//! registered handler with its INTID, then signals EOI. With no handler, or
//! no initialized GIC, an IRQ fails the test naming the INTID. Spurious
//! acknowledges (INTID 1023) are counted, not passed on.
//!
//! A handler runs with IRQs masked (as the exception left them); it may
//! unmask them ([`enable`]) to allow preemption: the vector saved all state
//! before calling it.
//!
//! Guest code waits for interrupts with IRQs unmasked ([`spin_until`]) or in
//! WFI ([`wfi_until`], which checks its condition with IRQs masked before each
//! `wfi`, so a wake-up cannot be lost).

use core::arch::asm;

use crate::global::Global;
use crate::{gic, timer};

/// An interrupt handler: called with the acknowledged INTID.
pub type Handler = fn(intid: u32);

static HANDLER: Global<Option<Handler>> = Global::new(None);
static SPURIOUS: Global<u32> = Global::new(0);

/// Registers `handler` for every IRQ (`None`: IRQs fail the test).
pub fn set_handler(handler: Option<Handler>) {
    HANDLER.set(handler);
}

/// How many spurious acknowledges (INTID 1023) the vector has seen.
pub fn spurious_count() -> u32 {
    SPURIOUS.get()
}

/// Called by the exception vector for an IRQ.
pub(crate) fn dispatch() {
    let Some(gic) = gic::current() else {
        crate::report::fail("IRQ taken before the GIC was initialized")
    };
    let iar = gic.ack();
    let intid = gic.intid(iar);
    if intid >= gic::SPECIAL_INTID {
        SPURIOUS.set(SPURIOUS.get() + 1);
        return;
    }
    match HANDLER.get() {
        Some(handler) => handler(intid),
        None => crate::report::fail(format_args!("unexpected IRQ: INTID {intid}")),
    }
    gic.eoi(iar);
}

/// Unmasks IRQs (`daifclr #2`).
pub fn enable() {
    // SAFETY: unmasking IRQs; the vectors handle them.
    unsafe { asm!("msr daifclr, #2", "isb", options(nostack, preserves_flags)) }
}

/// Masks IRQs (`daifset #2`).
pub fn disable() {
    // SAFETY: masking IRQs has no other effect.
    unsafe { asm!("msr daifset, #2", "isb", options(nostack, preserves_flags)) }
}

/// Waits for an interrupt (`wfi`).
pub fn wfi() {
    // SAFETY: `wfi` only waits; it returns on any pending interrupt.
    unsafe { asm!("dsb sy", "wfi", options(nostack, preserves_flags)) }
}

/// With IRQs unmasked, spins until `done()` or until the virtual counter
/// passes `deadline`; masks IRQs again. Returns whether `done()` held.
pub fn spin_until(deadline: u64, mut done: impl FnMut() -> bool) -> bool {
    enable();
    let ok = loop {
        if done() {
            break true;
        }
        if timer::counter() >= deadline {
            break done();
        }
        core::hint::spin_loop();
    };
    disable();
    ok
}

/// Waits in WFI until `done()`, taking interrupts between `wfi`s, or until
/// the counter passes `deadline` (checked on each wake-up: something must
/// wake the CPU, e.g. a timer armed for the deadline). IRQs are masked on
/// return. Returns whether `done()` held, and the number of `wfi`s.
pub fn wfi_until(deadline: u64, mut done: impl FnMut() -> bool) -> (bool, u32) {
    let mut wfis = 0;
    loop {
        disable();
        if done() {
            return (true, wfis);
        }
        if timer::counter() >= deadline {
            return (false, wfis);
        }
        wfi();
        wfis += 1;
        enable();
    }
}

/// Set when [`await_spi`]'s bound expired.
static TIMED_OUT: crate::global::Global<bool> = crate::global::Global::new(false);

/// For the IRQ handler of a guest in [`await_spi`]: whether `intid` is the
/// bound's timer (then it is handled: the timer stops and the wait ends).
pub fn timed_out_by(intid: u32) -> bool {
    if intid != crate::gic::INTID_VTIMER {
        return false;
    }
    crate::timer::set_vtimer_ctl(0);
    TIMED_OUT.set(true);
    true
}

/// Waits up to `timeout_us` for level-sensitive SPI `intid`: sets
/// `handler` as the IRQ handler, enables the SPI (priority 0x80, routed
/// here) and the bound's timer, runs `arm` (which makes the device raise
/// it), and waits in WFI until `done()` or the bound; then disables both
/// and removes the handler. Returns whether `done()` held and the WFI
/// wake-ups.
pub fn await_spi(
    g: &crate::gic::Gic,
    intid: u32,
    timeout_us: u64,
    handler: fn(u32),
    arm: impl FnOnce(),
    done: impl Fn() -> bool,
) -> (bool, u32) {
    TIMED_OUT.set(false);
    set_handler(Some(handler));
    g.set_priority(intid, 0x80);
    g.set_edge(intid, false);
    g.route_to_self(intid);
    g.enable(intid);
    let vtimer = crate::gic::INTID_VTIMER;
    g.set_priority(vtimer, 0x80);
    g.enable(vtimer);
    let deadline = crate::timer::deadline_us(timeout_us);
    crate::timer::set_vtimer_cval(deadline);
    crate::timer::set_vtimer_ctl(crate::timer::CTL_ENABLE);
    arm();
    let (got, wfis) = wfi_until(deadline, || done() || TIMED_OUT.get());
    crate::timer::set_vtimer_ctl(0);
    g.disable(intid);
    g.disable(vtimer);
    set_handler(None);
    (got && done(), wfis)
}
