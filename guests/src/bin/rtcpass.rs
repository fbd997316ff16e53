//! `rtcpass`: a passed-through device. The system config gives this VM the
//! `virt` machine's PL031 real-time clock (registers at `0x0901_0000`,
//! SPI 2) as a `[[vm.device]]`; the hypervisor maps its registers
//! identity at stage 2 and forwards its SPI hardware-linked.
//!
//! The guest finds the device in its device tree (a node whose compatible is
//! `arm,pl031`) and the node the config's extra DT fragment adds
//! (`stratum,board-info`), reads the PrimeCell identification registers (PL031:
//! `0x31 0x10 0x?4 0x00`, cell ID `0x0d 0xf0 0x05 0xb1`) and the time (a
//! real date), then sets the match register one second ahead with the match
//! interrupt unmasked and waits in WFI for the interrupt (bounded by the
//! virtual timer). The handler clears it at the device (`RTCICR`), so the
//! level-sensitive SPI drops before the guest's EOI deactivates the
//! physical interrupt through the list register.
#![no_std]
#![no_main]

use stratum_guests::global::Global;
use stratum_guests::passthrough::dtb_contains;
use stratum_guests::{Checks, gic, irq, mmio, println};

stratum_guests::entry!("rtcpass", main);

/// The PL031 on `virt`.
const RTC_BASE: usize = 0x0901_0000;
/// Its SPI on `virt` (INTID 34).
const RTC_INTID: u32 = 32 + 2;
const RTCDR: usize = 0x000;
const RTCMR: usize = 0x004;
const RTCIMSC: usize = 0x010;
const RTCMIS: usize = 0x018;
const RTCICR: usize = 0x01c;
const PERIPH_ID: usize = 0xfe0;
/// 2020-01-01T00:00:00Z: any real clock is past it.
const Y2020: u32 = 1_577_836_800;
/// How long to wait for the alarm.
const TIMEOUT_US: u64 = 5_000_000;

static RTC_IRQS: Global<u32> = Global::new(0);
static MIS_SEEN: Global<u32> = Global::new(0);

fn rtc_read(off: usize) -> u32 {
    // SAFETY: a PL031 register, identity-mapped by the hypervisor; reads
    // have no side effects.
    unsafe { mmio::read32(RTC_BASE + off) }
}

fn rtc_write(off: usize, value: u32) {
    // SAFETY: a PL031 register (match, mask or clear).
    unsafe { mmio::write32(RTC_BASE + off, value) }
}

fn handler(intid: u32) {
    if irq::timed_out_by(intid) {
        return;
    }
    if intid != RTC_INTID {
        stratum_guests::fail(format_args!("unexpected IRQ: INTID {intid}"))
    }
    MIS_SEEN.set(rtc_read(RTCMIS));
    rtc_write(RTCIMSC, 0);
    rtc_write(RTCICR, 1);
    RTC_IRQS.set(RTC_IRQS.get() + 1);
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    c.check(
        "device tree describes the passed-through arm,pl031",
        dtb_contains(dtb, b"arm,pl031\0"),
    );
    c.check(
        "device tree carries the config's extra fragment",
        dtb_contains(dtb, b"stratum,board-info\0"),
    );
    let platform = gic::bring_up(dtb);
    let g = platform.gic;
    let id: [u32; 8] = core::array::from_fn(|i| rtc_read(PERIPH_ID + 4 * i) & 0xff);
    println!("pl031 id registers: {id:02x?}");
    c.check_eq("PL031 PeriphID0", u64::from(id[0]), 0x31);
    c.check_eq("PL031 PeriphID1", u64::from(id[1]), 0x10);
    c.check_eq(
        "PrimeCell ID",
        u64::from(id[4]) | u64::from(id[5]) << 8 | u64::from(id[6]) << 16 | u64::from(id[7]) << 24,
        0xb105_f00d,
    );
    let now = rtc_read(RTCDR);
    println!("rtc time: {now} s since 1970");
    c.check("the RTC holds a real date", now > Y2020);

    let (got, wfis) = irq::await_spi(
        &g,
        RTC_INTID,
        TIMEOUT_US,
        handler,
        || {
            rtc_write(RTCICR, 1);
            rtc_write(RTCMR, now.wrapping_add(1));
            rtc_write(RTCIMSC, 1);
        },
        || RTC_IRQS.get() > 0,
    );
    println!(
        "rtc alarm: {} interrupt(s), RTCMIS {:#x} in the handler, {wfis} wfi wake-ups",
        RTC_IRQS.get(),
        MIS_SEEN.get()
    );
    c.check(
        "the RTC's alarm interrupt arrived",
        got && RTC_IRQS.get() == 1,
    );
    c.check_eq("RTCMIS in the handler", u64::from(MIS_SEEN.get()), 1);
    c.check_eq(
        "the interrupt is inactive after EOI",
        u64::from(g.is_active(RTC_INTID)),
        0,
    );
    c.finish()
}
