//! `virtiohostile`: a guest that drives its virtio-net NIC (virtio-mmio,
//! found by DeviceID among `virt`'s 32 transports) the way a hostile or
//! broken driver would, and checks the hypervisor answers each case as the
//! virtio spec says while it keeps running:
//!
//! 1. a notify before `DRIVER_OK`, and a notify of a queue that does not
//!    exist: ignored (the device stays usable);
//! 2. a descriptor chain that loops on itself: the device sets
//!    `DEVICE_NEEDS_RESET` and raises the configuration-change interrupt;
//!    a reset makes it usable again;
//! 3. a buffer outside the VM's RAM, and one of 4 GiB: `DEVICE_NEEDS_RESET`;
//! 4. then, for `hostile.seconds=S` (default 20), a flood of broadcast
//!    frames at the network's other VMs — which must keep talking to each
//!    other meanwhile (the system test's Debian VMs ping each other).
//!
//! Prints a check per case and passes when all hold.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{Ordering, fence};

use stratum_guests::{Checks, args, fail, fdt, mmio, println, timer};

stratum_guests::entry!("virtiohostile", main);

const BASE: usize = 0x0A00_0000;
const STRIDE: usize = 0x200;

const DEVICE_ID: usize = 0x008;
const DEVICE_FEATURES: usize = 0x010;
const DEVICE_FEATURES_SEL: usize = 0x014;
const DRIVER_FEATURES: usize = 0x020;
const DRIVER_FEATURES_SEL: usize = 0x024;
const QUEUE_SEL: usize = 0x030;
const QUEUE_NUM_MAX: usize = 0x034;
const QUEUE_NUM: usize = 0x038;
const QUEUE_READY: usize = 0x044;
const QUEUE_NOTIFY: usize = 0x050;
const INTERRUPT_STATUS: usize = 0x060;
const INTERRUPT_ACK: usize = 0x064;
const STATUS: usize = 0x070;
const QUEUE_DESC: usize = 0x080;
const QUEUE_DRIVER: usize = 0x090;
const QUEUE_DEVICE: usize = 0x0a0;

const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const NEEDS_RESET: u32 = 0x40;
const INT_CONFIG: u32 = 2;

/// The transmit queue.
const TX: u32 = 1;
/// Entries of the queue this driver sets up.
const QSIZE: u16 = 8;
/// `VIRTQ_DESC_F_NEXT`.
const F_NEXT: u16 = 1;

/// The ring memory: descriptors at 0, the available ring at 0x100, the
/// used ring at 0x200, frame buffers from 0x1000 (256 bytes each).
#[repr(C, align(4096))]
struct Rings(UnsafeCell<[u8; 0x2000]>);

// SAFETY: one CPU; the device reads and writes it only through the
// hypervisor's copies, at the points the ring protocol allows.
unsafe impl Sync for Rings {}

static RINGS: Rings = Rings(UnsafeCell::new([0; 0x2000]));

fn rings() -> usize {
    RINGS.0.get() as usize
}

fn reg(t: usize, off: usize) -> u32 {
    // SAFETY: a register of the NIC's transport.
    unsafe { mmio::read32(t + off) }
}

fn set(t: usize, off: usize, v: u32) {
    // SAFETY: as above.
    unsafe { mmio::write32(t + off, v) }
}

fn put16(at: usize, v: u16) {
    // SAFETY: inside `RINGS`.
    unsafe { core::ptr::write_volatile(at as *mut u16, v) }
}

fn put32(at: usize, v: u32) {
    // SAFETY: inside `RINGS`.
    unsafe { core::ptr::write_volatile(at as *mut u32, v) }
}

fn put64(at: usize, v: u64) {
    // SAFETY: inside `RINGS`.
    unsafe { core::ptr::write_volatile(at as *mut u64, v) }
}

fn get16(at: usize) -> u16 {
    // SAFETY: inside `RINGS`.
    unsafe { core::ptr::read_volatile(at as *const u16) }
}

/// Descriptor `i`: `addr`, `len`, `flags`, `next`.
fn desc(i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let d = rings() + 16 * usize::from(i);
    put64(d, addr);
    put32(d + 8, len);
    put16(d + 12, flags);
    put16(d + 14, next);
}

/// Resets the device and sets up the transmit queue, empty; `ok`: set
/// `DRIVER_OK` too. Returns the status read back.
fn setup(t: usize, ok: bool) -> u32 {
    set(t, STATUS, 0);
    // SAFETY: the rings' part of `RINGS`, which the device does not use
    // while it is reset.
    unsafe { core::ptr::write_bytes(rings() as *mut u8, 0, 0x1000) };
    set(t, STATUS, ACKNOWLEDGE | DRIVER);
    set(t, DEVICE_FEATURES_SEL, 1);
    let high = reg(t, DEVICE_FEATURES);
    set(t, DRIVER_FEATURES_SEL, 1);
    set(t, DRIVER_FEATURES, high & 1); // VIRTIO_F_VERSION_1 only
    set(t, DRIVER_FEATURES_SEL, 0);
    set(t, DRIVER_FEATURES, 0);
    set(t, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    set(t, QUEUE_SEL, TX);
    if reg(t, QUEUE_NUM_MAX) < u32::from(QSIZE) {
        fail("the transmit queue is smaller than 8");
    }
    set(t, QUEUE_NUM, u32::from(QSIZE));
    let r = rings() as u64;
    for (off, addr) in [
        (QUEUE_DESC, r),
        (QUEUE_DRIVER, r + 0x100),
        (QUEUE_DEVICE, r + 0x200),
    ] {
        set(t, off, addr as u32);
        set(t, off + 4, (addr >> 32) as u32);
    }
    set(t, QUEUE_READY, 1);
    if ok {
        set(t, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    }
    reg(t, STATUS)
}

/// Offers descriptor `head` in available slot `n` (avail.idx becomes
/// `n + 1`) and notifies the transmit queue.
fn offer(t: usize, n: u16, head: u16) {
    let avail = rings() + 0x100;
    put16(avail + 4 + 2 * usize::from(n % QSIZE), head);
    fence(Ordering::SeqCst);
    put16(avail + 2, n.wrapping_add(1));
    fence(Ordering::SeqCst);
    set(t, QUEUE_NOTIFY, TX);
}

/// The used ring's index.
fn used_idx() -> u16 {
    get16(rings() + 0x200 + 2)
}

/// A frame of 12 header bytes (all zero: no offload) and a 60-byte
/// broadcast Ethernet frame from a locally administered address, in buffer
/// `b`.
fn frame(b: usize) -> (u64, u32) {
    let at = rings() + 0x1000 + 256 * b;
    // SAFETY: inside `RINGS` (buffer `b` < 8 of 256 bytes from 0x1000).
    unsafe {
        core::ptr::write_bytes(at as *mut u8, 0, 72);
        core::ptr::write_bytes((at + 12) as *mut u8, 0xff, 6);
        let src = [0x02, 0x00, 0x5e, 0x00, 0x00, b as u8];
        core::ptr::copy_nonoverlapping(src.as_ptr(), (at + 18) as *mut u8, 6);
        core::ptr::write_volatile((at + 24) as *mut u16, 0x88b5u16.to_be());
    }
    (at as u64, 72)
}

fn main(dtb: usize) -> ! {
    let bootargs = fdt::locate(dtb).ok().and_then(|(_, s)| s.bootargs);
    let seconds = bootargs
        .and_then(|c| args::value(c, "hostile.seconds"))
        .and_then(args::parse_number)
        .unwrap_or(20);
    let Some(t) = (0..32)
        .map(|n| BASE + n * STRIDE)
        .find(|&t| reg(t, DEVICE_ID) == 1)
    else {
        fail("no virtio-net transport: the VM must be on a [[network]]")
    };
    println!("virtiohostile: NIC at {t:#x}");
    let mut checks = Checks::new();

    // 1. Notifies the device must ignore.
    let st = setup(t, false);
    checks.check("features accepted", st & FEATURES_OK != 0);
    let (buf, len) = frame(0);
    desc(0, buf, len, 0, 0);
    offer(t, 0, 0);
    checks.check_count("frames taken before DRIVER_OK", u64::from(used_idx()), 0);
    set(t, QUEUE_NOTIFY, 7);
    checks.check(
        "a notify of queue 7 leaves the device usable",
        reg(t, STATUS) & NEEDS_RESET == 0,
    );

    // 2. A chain that loops on itself.
    setup(t, true);
    let (buf, len) = frame(0);
    desc(0, buf, len, F_NEXT, 0);
    offer(t, 0, 0);
    checks.check(
        "a looping chain sets DEVICE_NEEDS_RESET",
        reg(t, STATUS) & NEEDS_RESET != 0,
    );
    let isr = reg(t, INTERRUPT_STATUS);
    checks.check(
        "with the configuration-change interrupt",
        isr & INT_CONFIG != 0,
    );
    set(t, INTERRUPT_ACK, isr);
    let st = setup(t, true);
    checks.check(
        "a reset makes it usable again",
        st & NEEDS_RESET == 0 && st & DRIVER_OK != 0,
    );

    // 3. Buffers outside the VM's RAM.
    desc(0, 0x7_0000_0000, len, 0, 0);
    offer(t, 0, 0);
    checks.check(
        "a buffer outside RAM sets DEVICE_NEEDS_RESET",
        reg(t, STATUS) & NEEDS_RESET != 0,
    );
    setup(t, true);
    let (buf, _) = frame(0);
    desc(0, buf, u32::MAX, 0, 0);
    offer(t, 0, 0);
    checks.check(
        "a 4 GiB buffer sets DEVICE_NEEDS_RESET",
        reg(t, STATUS) & NEEDS_RESET != 0,
    );

    // 4. The flood.
    setup(t, true);
    let end = timer::deadline_us(seconds.saturating_mul(1_000_000));
    let mut sent: u64 = 0;
    let mut n: u16 = 0;
    while timer::counter() < end {
        let slot = n % QSIZE;
        let (buf, len) = frame(usize::from(slot));
        desc(slot, buf, len, 0, 0);
        offer(t, n, slot);
        n = n.wrapping_add(1);
        // The switch serves the notify before the guest resumes.
        if used_idx() != n {
            fail(format_args!(
                "frame {n} was not taken (used index {})",
                used_idx()
            ));
        }
        sent += 1;
        let isr = reg(t, INTERRUPT_STATUS);
        if isr != 0 {
            set(t, INTERRUPT_ACK, isr);
        }
    }
    println!("virtiohostile: flooded {sent} broadcast frames in {seconds} s");
    checks.check("the flood went out", sent > 1000);
    checks.check(
        "and left the device usable",
        reg(t, STATUS) & NEEDS_RESET == 0,
    );
    checks.finish()
}
