//! `probe`: isolation from the inside. Reads and writes one word at every
//! 2 MiB step of the window `probe=START-END` (command line; e.g. the host's
//! RAM, where another VM's memory must be), skipping its own RAM: each access
//! must end in a synchronous external abort (EC 0x25, DFSC 0x10) that its own
//! vector catches and counts — never data, never a write that lands. With
//! `delay_ms=D` it first waits D ms; with a channel named `sync` (end B) in
//! its DT it waits for the victim's message 1 (`written`) instead, and sends
//! message 2 (`probes done`) after probing, so that the victim's last check
//! comes after every probe. Then it
//! checks that its own RAM above its image (the DTB excepted) is all zero:
//! nothing left over from a previous run or another VM. Prints
//! `probe: N reads and N writes aborted` and passes.
#![no_std]
#![no_main]

use core::arch::asm;

use stratum_guests::channel::{Channel, ChannelError, End};
use stratum_guests::exception::{self, DFSC_SYNC_EXTERNAL, EC_DATA_ABORT_SAME_EL};
use stratum_guests::start::image_end;
use stratum_guests::{Checks, args, fail, fdt, gic, mmio, println, timer};

stratum_guests::entry!("probe", main);

/// Distance between probes.
const STEP: u64 = 2 << 20;
/// What a write probe stores (a victim would notice it).
const POISON: u64 = 0x5052_4f42_4550_4f49;
/// How long to wait for the victim, with a `sync` channel.
const SYNC_TIMEOUT_US: u64 = 60_000_000;
/// Accesses reported individually when they go wrong.
const REPORT_LIMIT: u32 = 8;

/// How one probe went.
enum Outcome {
    /// The expected abort.
    Aborted,
    /// An abort of another kind (ESR).
    WrongAbort(u64),
    /// No abort: the access went through (a read gives its value).
    WentThrough(u64),
}

fn access(addr: u64, write: bool) -> Outcome {
    let mut value = 0u64;
    let seen = exception::expect_abort(|| {
        if write {
            // SAFETY: `addr` is outside this VM's RAM; the abort is armed
            // and skips the store. If it lands, that is what is tested.
            unsafe {
                asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) POISON, options(nostack))
            };
        } else {
            // SAFETY: as above; the loaded value is only reported.
            unsafe {
                asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack))
            };
        }
    });
    match seen {
        Some(t) if t.ec() == EC_DATA_ABORT_SAME_EL && t.fsc() == DFSC_SYNC_EXTERNAL => {
            Outcome::Aborted
        }
        Some(t) => Outcome::WrongAbort(t.esr),
        None => Outcome::WentThrough(value),
    }
}

/// Checks `[start, end)` of own RAM reads as zero (8-byte words); returns
/// the first non-zero word's address and value.
fn first_nonzero(start: u64, end: u64) -> Option<(u64, u64)> {
    let mut a = start;
    while a < end {
        // SAFETY: `a` is an aligned word of this VM's own RAM, above the image.
        let v = unsafe { mmio::read64(a as usize) };
        if v != 0 {
            return Some((a, v));
        }
        a += 8;
    }
    None
}

fn main(dtb: usize) -> ! {
    let (dtb_addr, dt) =
        fdt::locate_fdt(dtb).unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let summary = dt
        .summary()
        .unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let cmdline = summary.bootargs.unwrap_or("");
    let Some((ram, ram_size)) = summary.memory else {
        fail("no /memory in the device tree")
    };
    let ram_end = ram + ram_size;
    let window = match args::range(cmdline, "probe") {
        Ok(Some(w)) => w,
        Ok(None) => fail("no probe=START-END on the command line"),
        Err(e) => fail(format_args!("probe: {e}")),
    };
    let delay_ms = stratum_guests::arg_number(cmdline, "delay_ms", 0);
    let mut sync = match Channel::open(dtb, Some("sync"), End::B) {
        Ok(ch) => Some(ch),
        Err(ChannelError::NotFound) => None,
        Err(e) => fail(format_args!("sync channel: {e}")),
    };
    if let Some(ch) = sync.as_mut() {
        let platform = gic::bring_up(dtb);
        ch.enable_interrupts(&platform.gic);
        let mut msg = [0u64; 1];
        match ch.receive(&mut msg, timer::deadline_us(SYNC_TIMEOUT_US)) {
            Ok(_) if msg[0] == 1 => println!("probe: the victim has written its memory"),
            Ok(_) => fail(format_args!("sync: unexpected message {:#x}", msg[0])),
            Err(e) => fail(format_args!("sync: waiting for the victim: {e}")),
        }
    } else if delay_ms > 0 {
        println!("probe: waiting {delay_ms} ms");
        timer::spin_us(delay_ms.saturating_mul(1000));
    }
    println!(
        "probe: own RAM {ram:#x}..{ram_end:#x}; probing {:#x}..{:#x} every {} MiB",
        window.0,
        window.1,
        STEP >> 20
    );
    let mut c = Checks::new();
    let (mut probed, mut aborted, mut bad) = (0u32, 0u32, 0u32);
    let mut addr = window.0.next_multiple_of(8);
    while addr < window.1 {
        if (ram..ram_end).contains(&addr) {
            addr = ram_end;
            continue;
        }
        for write in [false, true] {
            probed += 1;
            let kind = if write { "write" } else { "read" };
            match access(addr, write) {
                Outcome::Aborted => aborted += 1,
                Outcome::WrongAbort(esr) => {
                    bad += 1;
                    if bad <= REPORT_LIMIT {
                        println!("probe: {kind} {addr:#x}: unexpected abort ESR={esr:#x}");
                    }
                }
                Outcome::WentThrough(value) => {
                    bad += 1;
                    if bad <= REPORT_LIMIT {
                        println!("probe: {kind} {addr:#x}: NOT aborted (read {value:#x})");
                    }
                }
            }
        }
        addr = addr.saturating_add(STEP);
    }
    println!(
        "probe: {} reads and {} writes aborted",
        aborted / 2,
        aborted - aborted / 2
    );
    if let Some(ch) = sync.as_mut() {
        let deadline = timer::deadline_us(SYNC_TIMEOUT_US);
        if let Err(e) = ch.send(&[2], deadline).and_then(|_| ch.flush(deadline)) {
            fail(format_args!("sync: telling the victim: {e}"));
        }
    }
    c.check("some addresses were probed", probed > 0);
    c.check_count(
        "probes that did not abort as they should",
        u64::from(bad),
        0,
    );

    // Own RAM above the image must be zero, except the DTB (page-rounded).
    let start = (image_end() as u64).next_multiple_of(8);
    let dtb_size = dt_total_size(dtb_addr);
    let dtb_start = dtb_addr as u64 & !0xfff;
    let dtb_end = (dtb_addr as u64 + dtb_size).next_multiple_of(0x1000);
    let mut dirty = None;
    for (from, to) in [(start, dtb_start.max(start)), (dtb_end.max(start), ram_end)] {
        if dirty.is_none() && from < to {
            dirty = first_nonzero(from, to);
        }
    }
    let excluded = dtb_end.min(ram_end).saturating_sub(dtb_start.max(start));
    let checked = ram_end.saturating_sub(start).saturating_sub(excluded);
    println!(
        "probe: own RAM {start:#x}..{ram_end:#x} outside the DTB ({} KiB) checked",
        checked >> 10
    );
    if let Some((a, v)) = dirty {
        println!("probe: own RAM not zero at {a:#x}: {v:#x}");
    }
    c.check("own RAM above the image is all zero", dirty.is_none());
    c.finish()
}

/// The DTB's `totalsize` at `addr` (validated by `locate_fdt`).
fn dt_total_size(addr: usize) -> u64 {
    // SAFETY: `locate_fdt` validated an FDT header at `addr`, in own RAM.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
    fdt::total_size(header).map_or(0, |s| s as u64)
}
