//! `off`: prints one line and calls PSCI `SYSTEM_OFF` directly. The harness
//! checks for exit status 0 and that nothing from the guest follows the line.
#![no_std]
#![no_main]

use stratum_guests::{println, smccc};

stratum_guests::entry!("off", main);

fn main(_dtb: usize) -> ! {
    println!("off: calling SYSTEM_OFF");
    // Prints a FAIL line and parks the vCPU if the call returns.
    smccc::system_off()
}
