//! What the passthrough test guests (`rtcpass`, `uartpass`) share: finding
//! their device in the device tree, and waiting for one interrupt of its
//! SPI, bounded by the virtual timer.
//!
//! A guest registers its own IRQ handler, which first hands the interrupt
//! to [`timed_out_by`] (the bound's timer) and then clears its device.

use crate::gic::{Gic, INTID_VTIMER};
use crate::global::Global;
use crate::{irq, timer};

static TIMED_OUT: Global<bool> = Global::new(false);

/// Whether the device tree blob at `dtb` holds `needle` (a compatible
/// string of a node the hypervisor generated, NUL included).
pub fn dtb_contains(dtb: usize, needle: &[u8]) -> bool {
    // SAFETY: by the boot protocol x0 points at the DTB in guest RAM, which
    // nothing writes; `blob_at` checks its header before sizing the slice.
    match unsafe { crate::fdt::blob_at(dtb) } {
        Ok(blob) => blob.windows(needle.len()).any(|w| w == needle),
        Err(_) => false,
    }
}

/// For the guest's IRQ handler: whether `intid` is the bound's timer
/// (then it is handled: the timer stops and the wait ends).
pub fn timed_out_by(intid: u32) -> bool {
    if intid != INTID_VTIMER {
        return false;
    }
    timer::set_vtimer_ctl(0);
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
    g: &Gic,
    intid: u32,
    timeout_us: u64,
    handler: fn(u32),
    arm: impl FnOnce(),
    done: impl Fn() -> bool,
) -> (bool, u32) {
    TIMED_OUT.set(false);
    irq::set_handler(Some(handler));
    g.set_priority(intid, 0x80);
    g.set_edge(intid, false);
    g.route_to_self(intid);
    g.enable(intid);
    g.set_priority(INTID_VTIMER, 0x80);
    g.enable(INTID_VTIMER);
    let deadline = timer::deadline_us(timeout_us);
    timer::set_vtimer_cval(deadline);
    timer::set_vtimer_ctl(timer::CTL_ENABLE);
    arm();
    let (got, wfis) = irq::wfi_until(deadline, || done() || TIMED_OUT.get());
    timer::set_vtimer_ctl(0);
    g.disable(intid);
    g.disable(INTID_VTIMER);
    irq::set_handler(None);
    (got && done(), wfis)
}
