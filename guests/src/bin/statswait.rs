//! `statswait`: the guest of the live-statistics system test. Makes a known
//! number of hypercalls (10 × `PSCI_VERSION`, 5 × Stratum `INFO`), prints
//! `statswait: ready`, then polls the console (every millisecond, at most
//! 30 s) until a line arrives, and passes. While it waits, `stratum stats`
//! reads its counters from the running hypervisor.
#![no_std]
#![no_main]

use stratum_guests::console::{FR_RXFE, UARTDR};
use stratum_guests::{console, println, smccc, timer};

stratum_guests::entry!("statswait", main);

/// The hypercalls made before waiting (the test checks these counts).
const PSCI_VERSION_CALLS: u32 = 10;
const INFO_CALLS: u32 = 5;
/// How long to wait for console input.
const WAIT_US: u64 = 30_000_000;

fn main(_dtb: usize) -> ! {
    for _ in 0..PSCI_VERSION_CALLS {
        smccc::psci_version();
    }
    for _ in 0..INFO_CALLS {
        if smccc::stratum_info().is_none() {
            stratum_guests::fail("Stratum INFO is not implemented");
        }
    }
    println!("statswait: ready");
    let deadline = timer::deadline_us(WAIT_US);
    loop {
        if console::flags() & FR_RXFE == 0 {
            // SAFETY: the PL011's data register; popping the byte is the point.
            let byte = unsafe { stratum_guests::mmio::read32(console::PL011_BASE + UARTDR) };
            if matches!(byte as u8, b'\n' | b'\r') {
                println!("statswait: got a line");
                stratum_guests::pass();
            }
            continue;
        }
        if timer::counter() >= deadline {
            stratum_guests::fail("no console line within 30 s");
        }
        timer::spin_us(1000);
    }
}
