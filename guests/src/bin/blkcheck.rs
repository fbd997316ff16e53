//! `blkcheck`: a bare-metal frontend of a Stratum disk, driven by the
//! third-party `virtio-drivers` crate (`VirtIOBlk`, not our code).
//!
//! It finds its virtio-blk device by scanning `virt`'s 32 virtio-mmio
//! transports for DeviceID 2 and checks, printing a line for each:
//! - the device's serial is `stratum-disk<N>` and its capacity at least
//!   [`MIN_SECTORS`];
//! - sector 0 starts with [`SEED`], which the test wrote into the image on
//!   the host (the data reached the guest from the service VM's disk);
//! - a read past the capacity fails;
//! - `mode=rw` (the default): [`REGION`] sectors from [`FIRST`] written
//!   in requests of 1, 7 and the rest sectors with a pattern naming each
//!   byte's sector and offset, flushed, read back in other sizes and
//!   compared; then it prints `blkcheck: wrote sectors A..B` for the host
//!   to check the image;
//! - `mode=ro`: the device says read-only, a write fails, and the region
//!   reads back as the image had it (the test's pattern is not there);
//! - `mode=soak` (a service VM restart under load): it writes and reads
//!   back one sector after another, round and round the region, until it
//!   has seen at least one failed request (the service VM went away with
//!   the request in flight; it prints `blkcheck: soak started (seed N)`
//!   first, for the test to crash the service VM then) and then [`SOAK_GOOD`] good round trips after
//!   the last failure (it came back), within [`SOAK_SECONDS`]; it prints
//!   `blkcheck: soak: F failed requests, then G good round trips`. A
//!   round trip that reads back something else than it wrote fails the
//!   guest at once, whatever came before.
//!
//! `seed=N` (default 0) changes the pattern, so that two guests writing
//! their own disks at once write different bytes.
//! Then the verdict `STRATUM-TEST PASS blkcheck` (or FAIL). The driver
//! polls for each request's completion, so no interrupt is needed.
#![no_std]
#![no_main]

extern crate alloc;

use stratum_guests::virtio::{self, DEVICE_ID_BLOCK, GuestHal, Transport};
use stratum_guests::{Checks, args, fdt, println};
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};

stratum_guests::entry!("blkcheck", main);

/// What the test writes at the start of sector 0 of the image.
const SEED: &[u8] = b"STRATUM-DISK-SEED";
/// The first sector written.
const FIRST: usize = 8;
/// Sectors written and read back.
const REGION: usize = 64;
/// The smallest disk this guest accepts.
const MIN_SECTORS: u64 = (FIRST + REGION) as u64;

/// Good round trips after the last failure that end a soak.
const SOAK_GOOD: u64 = 50;
/// How long a soak may take.
const SOAK_SECONDS: u64 = 120;

/// Byte `i` of sector `s` of the pattern for `seed`.
fn pattern(seed: u8, s: usize, i: usize) -> u8 {
    (s as u8).wrapping_mul(13) ^ (i as u8).wrapping_mul(7) ^ (i >> 8) as u8 ^ 0x5a ^ seed
}

/// Writes and reads back one sector after another until a failure was
/// followed by [`SOAK_GOOD`] good round trips; whether that happened in
/// time. Stops the guest on data that differs.
fn soak(blk: &mut VirtIOBlk<GuestHal, Transport>, seed: u8) -> bool {
    let deadline =
        stratum_guests::timer::counter() + SOAK_SECONDS * stratum_guests::timer::frequency();
    let (mut failed, mut good) = (0u64, 0u64);
    let mut out = [0u8; SECTOR_SIZE];
    let mut back = [0u8; SECTOR_SIZE];
    let mut round = 0usize;
    println!("blkcheck: soak started (seed {seed})");
    while stratum_guests::timer::counter() < deadline {
        let s = FIRST + round % REGION;
        for (i, b) in out.iter_mut().enumerate() {
            *b = pattern(seed, s, i) ^ (round / REGION) as u8;
        }
        round += 1;
        let ok = blk.write_blocks(s, &out).is_ok() && blk.read_blocks(s, &mut back).is_ok();
        if !ok {
            failed += 1;
            good = 0;
            continue;
        }
        if back != out {
            stratum_guests::fail(format_args!("soak: sector {s} read back other bytes"));
        }
        good += 1;
        if failed > 0 && good >= SOAK_GOOD {
            break;
        }
    }
    println!("blkcheck: soak: {failed} failed requests, then {good} good round trips");
    failed > 0 && good >= SOAK_GOOD
}

fn main(dtb: usize) -> ! {
    let cmdline = match fdt::locate(dtb) {
        Ok((_, dt)) => dt.bootargs.unwrap_or(""),
        Err(e) => stratum_guests::fail(format_args!("no usable device tree: {e}")),
    };
    let mode = args::value(cmdline, "mode").unwrap_or("rw");
    let readonly = match mode {
        "rw" | "soak" => false,
        "ro" => true,
        other => stratum_guests::fail(format_args!("mode={other}: rw, ro or soak")),
    };
    let seed = args::number(cmdline, "seed", 0)
        .unwrap_or_else(|e| stratum_guests::fail(format_args!("seed: {e:?}"))) as u8;
    let virtio::Opened { n, transport, gic } = virtio::open(dtb, DEVICE_ID_BLOCK, "block");
    let mut blk = match VirtIOBlk::<GuestHal, Transport>::new(transport) {
        Ok(b) => b,
        Err(e) => stratum_guests::fail(format_args!("block device init: {e}")),
    };
    let mut checks = Checks::new();
    let capacity = blk.capacity();
    let mut id = [0u8; 20];
    let id_len = blk.device_id(&mut id).unwrap_or(0);
    let serial = core::str::from_utf8(&id[..id_len]).unwrap_or("(not UTF-8)");
    println!(
        "blkcheck: transport {n}, serial {serial}, {capacity} sectors, {}",
        if blk.readonly() {
            "read-only"
        } else {
            "read-write"
        }
    );
    checks.check(
        format_args!("serial {serial} names a Stratum disk"),
        serial.starts_with("stratum-disk"),
    );
    if !checks.check(
        format_args!("capacity {capacity} of at least {MIN_SECTORS} sectors"),
        capacity >= MIN_SECTORS,
    ) {
        checks.finish();
    }
    checks.check("the read-only feature as asked", blk.readonly() == readonly);

    let mut sector = [0u8; SECTOR_SIZE];
    let read0 = blk.read_blocks(0, &mut sector);
    checks.check(
        format_args!("sector 0 read ({read0:?}) starts with the seed"),
        read0.is_ok() && sector.starts_with(SEED),
    );
    let past = blk.read_blocks(capacity as usize, &mut sector);
    checks.check(
        format_args!("a read past the end fails ({past:?})"),
        past.is_err(),
    );

    // On the heap: the boot stack is 64 KiB.
    let mut buf = alloc::vec![0u8; REGION * SECTOR_SIZE];
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, FIRST + k / SECTOR_SIZE, k % SECTOR_SIZE);
    }
    if mode == "soak" {
        let ok = soak(&mut blk, seed);
        checks.check(
            "the disk failed while its server was away, then came back",
            ok,
        );
    } else if readonly {
        let w = blk.write_blocks(FIRST, &buf[..SECTOR_SIZE]);
        checks.check(format_args!("a write fails ({w:?})"), w.is_err());
        let mut back = alloc::vec![0u8; REGION * SECTOR_SIZE];
        let r = blk.read_blocks(FIRST, &mut back);
        checks.check(
            format_args!("the region reads ({r:?}) without the pattern"),
            r.is_ok() && back != buf,
        );
    } else {
        // Writes of 1, 7 and the rest of the sectors, then a flush.
        let mut ok = true;
        for (at, count) in [(0, 1), (1, 7), (8, REGION - 8)] {
            let bytes = &buf[at * SECTOR_SIZE..(at + count) * SECTOR_SIZE];
            if let Err(e) = blk.write_blocks(FIRST + at, bytes) {
                println!("blkcheck: write of {count} sectors at {}: {e}", FIRST + at);
                ok = false;
            }
        }
        checks.check("three writes", ok);
        let f = blk.flush();
        checks.check(format_args!("a flush ({f:?})"), f.is_ok());
        // Read back in other sizes: 32, 31 and 1 sectors.
        let mut back = alloc::vec![0u8; REGION * SECTOR_SIZE];
        let mut ok = true;
        for (at, count) in [(0, 32), (32, 31), (63, 1)] {
            let range = &mut back[at * SECTOR_SIZE..(at + count) * SECTOR_SIZE];
            if let Err(e) = blk.read_blocks(FIRST + at, range) {
                println!("blkcheck: read of {count} sectors at {}: {e}", FIRST + at);
                ok = false;
            }
        }
        let same = back == buf;
        checks.check("the region reads back as written", ok && same);
        if same {
            println!("blkcheck: wrote sectors {FIRST}..{}", FIRST + REGION);
        }
    }
    virtio::close(&gic);
    checks.finish()
}
