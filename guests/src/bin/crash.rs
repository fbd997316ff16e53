//! `crash`: crashes on purpose, for the hypervisor's crash detection. After
//! printing `crash: crashing now`, it points `VBAR_EL1` at an IPA outside
//! its memory map and reads unmapped memory: the injected data abort
//! vectors to the unmapped table, whose instruction fetch aborts again, and
//! so on — an exception loop the hypervisor must detect and stop this VM
//! for, leaving the other VMs running. Reaching the line after the read is
//! reported as a failure.
#![no_std]
#![no_main]

use core::arch::asm;

use stratum_guests::{fail, println};

stratum_guests::entry!("crash", main);

/// An IPA in no Stratum VM's memory map (QEMU `virt` puts PCIe MMIO here).
const UNMAPPED: usize = 0x1000_0000;

fn main(_dtb: usize) -> ! {
    println!("crash: crashing now (VBAR_EL1 = {UNMAPPED:#x}, then a read of {UNMAPPED:#x})");
    // SAFETY: deliberately breaks this guest: exceptions from here on vector
    // into unmapped memory. Nothing of the guest runs afterwards but the
    // read below, whose abort is the first of the loop.
    unsafe {
        asm!(
            "msr vbar_el1, {vbar}",
            "isb",
            "ldr {tmp}, [{addr}]",
            vbar = in(reg) UNMAPPED,
            addr = in(reg) UNMAPPED,
            tmp = out(reg) _,
            options(nostack),
        );
    }
    fail("still running after reading unmapped memory with VBAR_EL1 unmapped")
}
