//! `canary`: the victim of the isolation test. Fills its RAM above the
//! image (the DTB excepted) with an address-derived pattern, holds it while
//! re-checking it, and passes if every word is still intact: another VM
//! probing host memory must neither see nor change it. Prints `canary: N
//! MiB written` and `canary: N checks, pattern intact`.
//!
//! With a channel named `sync` (end A) in its DT, the hold is causal: after
//! writing it sends message 1 (`written`) and holds until the prober's
//! message (`probes done`), so the probes fall between the write and the last
//! check whatever the host's load. Without one it holds for `hold_ms`
//! (command line; default 3000).
#![no_std]
#![no_main]

use stratum_guests::channel::{Channel, ChannelError, End};
use stratum_guests::start::image_end;
use stratum_guests::{Checks, fail, fdt, gic, mmio, println, timer};

stratum_guests::entry!("canary", main);

/// How long to wait for the prober, with a `sync` channel.
const SYNC_TIMEOUT_US: u64 = 60_000_000;

/// The pattern word at address `a`.
fn pattern(a: u64) -> u64 {
    (a ^ 0xCA4A_2100_0000_0000).rotate_left(17)
}

fn main(dtb: usize) -> ! {
    let (dtb_addr, dt) =
        fdt::locate_fdt(dtb).unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let summary = dt
        .summary()
        .unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let hold_ms = stratum_guests::arg_number(summary.bootargs.unwrap_or(""), "hold_ms", 3000);
    let Some((ram, ram_size)) = summary.memory else {
        fail("no /memory in the device tree")
    };
    let ram_end = ram + ram_size;
    let start = (image_end() as u64).next_multiple_of(8);
    // Below the DTB only (it sits high in RAM; the area above it is small).
    let end = (dtb_addr as u64 & !0xfff).clamp(start, ram_end);
    let mut a = start;
    while a < end {
        // SAFETY: an aligned word of own RAM above the image, below the DTB.
        unsafe { mmio::write64(a as usize, pattern(a)) };
        a += 8;
    }
    println!(
        "canary: {} MiB written at {start:#x}..{end:#x}",
        (end - start) >> 20
    );
    let mut c = Checks::new();
    if let Some(mut sync) = open_sync(dtb) {
        let check = || {
            if let Some(a) = first_wrong(start, end) {
                fail(format_args!("pattern broken: {a:#x} holds a wrong word"))
            }
        };
        check();
        let deadline = timer::deadline_us(SYNC_TIMEOUT_US);
        if let Err(e) = sync.send(&[1], deadline) {
            fail(format_args!("sync: telling the prober: {e}"));
        }
        let mut msg = [0u64; 1];
        match sync.receive(&mut msg, deadline) {
            Ok(_) if msg[0] == 2 => println!("canary: the prober is done"),
            Ok(_) => fail(format_args!("sync: unexpected message {:#x}", msg[0])),
            Err(e) => fail(format_args!("sync: waiting for the prober: {e}")),
        }
        check();
        println!("canary: 2 checks, pattern intact");
        c.check("pattern intact", true);
        c.finish()
    }
    let deadline = timer::deadline_us(hold_ms.saturating_mul(1000));
    let mut rounds = 0u32;
    loop {
        rounds += 1;
        if let Some(a) = first_wrong(start, end) {
            println!("canary: {a:#x} holds a wrong word");
            c.check("pattern intact", false);
            c.finish()
        }
        if timer::counter() >= deadline {
            break;
        }
    }
    println!("canary: {rounds} checks, pattern intact");
    c.check("pattern intact", true);
    c.finish()
}

/// The first word of `[start, end)` that does not hold its pattern.
fn first_wrong(start: u64, end: u64) -> Option<u64> {
    let mut a = start;
    while a < end {
        // SAFETY: an aligned word of own RAM above the image, below the DTB.
        let v = unsafe { mmio::read64(a as usize) };
        if v != pattern(a) {
            return Some(a);
        }
        a += 8;
    }
    None
}

/// The `sync` channel (end A) with its doorbell enabled, if the DT has one.
fn open_sync(dtb: usize) -> Option<Channel> {
    match Channel::open(dtb, Some("sync"), End::A) {
        Ok(ch) => {
            let platform = gic::bring_up(dtb);
            ch.enable_interrupts(&platform.gic);
            println!("canary: holding until the prober is done (channel 'sync')");
            Some(ch)
        }
        Err(ChannelError::NotFound) => None,
        Err(e) => fail(format_args!("sync channel: {e}")),
    }
}
