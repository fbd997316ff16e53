//! `reset`: reboots itself with PSCI `SYSTEM_RESET` until Stratum's `INFO`
//! reports boot count 3, then passes. Each boot prints `boot count N` and checks
//! that a `.data` variable holds its initial value, then overwrites it before
//! resetting: a VM restarted without reloading its image would see the new value.
#![no_std]
#![no_main]

use stratum_guests::global::Global;
use stratum_guests::{fail, println, smccc};

stratum_guests::entry!("reset", main);

/// Initial value of [`MARKER`] in the image (`.data`, non-zero so it is not `.bss`).
const PRISTINE: u64 = 0x5354_5241_5455_4d31;
/// What the guest writes before resetting.
const DIRTY: u64 = 0xdead_beef_0bad_f00d;

static MARKER: Global<u64> = Global::new(PRISTINE);

fn main(_dtb: usize) -> ! {
    let Some(info) = smccc::stratum_info() else {
        fail("Stratum INFO hypercall not implemented")
    };
    let n = info.boot_count;
    println!("boot count {n}");
    let marker = MARKER.get();
    if marker != PRISTINE {
        fail(format_args!(
            ".data marker is {marker:#x} at boot {n}, want {PRISTINE:#x}: image not reloaded"
        ));
    }
    match n {
        1 | 2 => {
            MARKER.set(DIRTY);
            if MARKER.get() != DIRTY {
                fail("could not modify the .data marker");
            }
            println!("reset: calling SYSTEM_RESET");
            smccc::system_reset()
        }
        3 => stratum_guests::pass(),
        _ => fail(format_args!("unexpected boot count {n}")),
    }
}
