//! `restart`: restarts itself with PSCI `SYSTEM_RESET` until boot `boots=N`
//! (command line; default 50), then passes. Each boot prints
//! `restart: boot B of N: mem_info tables=T ram=R pool_free=F` from Stratum's
//! `INFO` (boot count) and `MEM_INFO` (stage-2 table bytes in use, host RAM
//! handed to VMs and channels, table-pool bytes free): the system test checks
//! these stay identical from boot 2 on, i.e. restarting a VM leaks nothing.
//! Like `reset`, it also checks a `.data` marker is pristine at every boot.
#![no_std]
#![no_main]

use stratum_guests::global::Global;
use stratum_guests::smccc::{self, SUCCESS, stratum};
use stratum_guests::{fail, fdt, println};

stratum_guests::entry!("restart", main);

/// Initial value of [`MARKER`] in the image (`.data`, non-zero so it is not `.bss`).
const PRISTINE: u64 = 0x5354_5241_5455_4d32;
/// What the guest writes before resetting.
const DIRTY: u64 = 0xdead_beef_0bad_f00d;

static MARKER: Global<u64> = Global::new(PRISTINE);

fn main(dtb: usize) -> ! {
    let cmdline = match fdt::locate(dtb) {
        Ok((_, dt)) => dt.bootargs.unwrap_or(""),
        Err(e) => fail(format_args!("no usable device tree: {e}")),
    };
    let boots = stratum_guests::arg_number(cmdline, "boots", 50);
    let Some(info) = smccc::stratum_info() else {
        fail("Stratum INFO hypercall not implemented")
    };
    let n = info.boot_count;
    let mem = smccc::hvc([u64::from(stratum::MEM_INFO), 0, 0, 0, 0, 0, 0, 0]);
    let status = smccc::status(mem[0]);
    if status != SUCCESS {
        fail(format_args!("MEM_INFO returned {status} at boot {n}"));
    }
    println!(
        "restart: boot {n} of {boots}: mem_info tables={} ram={} pool_free={}",
        mem[1], mem[2], mem[3]
    );
    let marker = MARKER.get();
    if marker != PRISTINE {
        fail(format_args!(
            ".data marker is {marker:#x} at boot {n}, want {PRISTINE:#x}: image not reloaded"
        ));
    }
    if n < boots {
        MARKER.set(DIRTY);
        smccc::system_reset()
    } else if n == boots {
        stratum_guests::pass()
    } else {
        fail(format_args!("boot count {n} is past {boots}"))
    }
}
