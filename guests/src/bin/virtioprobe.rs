//! `virtioprobe`: a guest built for QEMU `virt` that looks at all 32
//! virtio-mmio transports at `0x0A00_0000 + 0x200·n`, as Linux's
//! `virtio_mmio` driver does when the device tree lists them.
//!
//! Every transport must answer like `virt`'s with nothing attached: magic
//! `"virt"`, version 2, DeviceID 0 (no device: a driver skips it), and
//! nothing may abort — not a write (a reset of the status, a queue notify
//! of a queue that does not exist), not a read of the configuration space,
//! not an access of the wrong width (which reads 0), not the last word of
//! the window. Then the guest goes on working (a timer tick) and passes.
#![no_std]
#![no_main]

use stratum_guests::exception;
use stratum_guests::{Checks, mmio, println, timer};

stratum_guests::entry!("virtioprobe", main);

/// The first transport.
const BASE: usize = 0x0A00_0000;
/// Bytes per transport.
const STRIDE: usize = 0x200;
/// Transports on `virt`.
const COUNT: usize = 32;
/// `"virt"`, little-endian.
const MAGIC: u32 = 0x7472_6976;

const MAGIC_VALUE: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const QUEUE_NOTIFY: usize = 0x050;
const STATUS: usize = 0x070;
const CONFIG: usize = 0x100;

/// What one transport answered.
#[derive(Default)]
struct Seen {
    magic: u32,
    version: u32,
    device_id: u32,
    narrow_device_id: u8,
    config: u32,
    last_word: u32,
    status_after_reset: u32,
}

fn look(n: usize) -> Seen {
    let t = BASE + n * STRIDE;
    // SAFETY: every access below is a transport register in the window
    // `virt` reserves for them; reads have no side effect, the writes
    // reset a device that does not exist or notify a queue it lacks.
    unsafe {
        let mut s = Seen {
            magic: mmio::read32(t + MAGIC_VALUE),
            version: mmio::read32(t + VERSION),
            device_id: mmio::read32(t + DEVICE_ID),
            narrow_device_id: mmio::read8(t + DEVICE_ID),
            config: mmio::read32(t + CONFIG),
            last_word: mmio::read32(t + STRIDE - 4),
            ..Seen::default()
        };
        mmio::write32(t + STATUS, 0);
        mmio::write32(t + QUEUE_NOTIFY, 0);
        s.status_after_reset = mmio::read32(t + STATUS);
        s
    }
}

fn main(_dtb: usize) -> ! {
    let mut checks = Checks::new();
    let mut answered = 0u64;
    let mut aborted = 0u64;
    for n in 0..COUNT {
        let mut seen = Seen::default();
        if let Some(t) = exception::expect_abort(|| seen = look(n)) {
            aborted += 1;
            println!("transport {n}: abort, ESR {:#x}", t.esr);
            continue;
        }
        let ok = seen.magic == MAGIC
            && seen.version == 2
            && seen.device_id == 0
            && seen.narrow_device_id == 0
            && seen.config == 0
            && seen.last_word == 0
            && seen.status_after_reset == 0;
        if !ok {
            println!(
                "transport {n}: magic {:#x} version {} device {} (byte read {}) config {:#x} last {:#x} status {:#x}",
                seen.magic,
                seen.version,
                seen.device_id,
                seen.narrow_device_id,
                seen.config,
                seen.last_word,
                seen.status_after_reset
            );
        }
        answered += u64::from(ok);
    }
    checks.check_count("transports that aborted", aborted, 0);
    checks.check_count(
        "transports answering as virt's with no device",
        answered,
        COUNT as u64,
    );
    // Still working: the virtual counter advances, the console prints.
    let start = timer::counter();
    timer::spin_us(1000);
    checks.check(
        "the counter still advances",
        timer::counter() >= start + timer::ticks_from_us(1000),
    );
    checks.finish()
}
