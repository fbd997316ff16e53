//! `hello`: the default demo guest. Greets, prints what it can see of its
//! virtual machine (exception level, MIDR/MPIDR, its device tree's memory,
//! vCPU count and bootargs, PSCI and SMCCC versions), then passes.
#![no_std]
#![no_main]

use stratum_guests::{fdt, println, smccc, sysreg};

stratum_guests::entry!("hello", main);

fn version(v: u64) -> (u64, u64) {
    ((v >> 16) & 0x7fff, v & 0xffff)
}

fn main(dtb: usize) -> ! {
    println!("Hello from a Stratum guest!");
    println!("CurrentEL: EL{}", sysreg::current_el());
    println!("MIDR_EL1: {:#010x}", sysreg::midr_el1());
    println!("MPIDR_EL1: {:#010x}", sysreg::mpidr_el1());
    match fdt::locate(dtb) {
        Ok((addr, dt)) => {
            println!("device tree at {addr:#x}");
            match dt.memory {
                Some((base, size)) => {
                    println!("memory: base {base:#x} size {size:#x} ({} MiB)", size >> 20)
                }
                None => println!("memory: no /memory reg"),
            }
            println!("vCPUs: {}", dt.cpus);
            match dt.bootargs {
                Some(args) => println!("bootargs: \"{args}\""),
                None => println!("bootargs: (none)"),
            }
        }
        Err(e) => println!("device tree: none usable at x0 = {dtb:#x} ({e})"),
    }
    let psci = smccc::psci_version();
    let (major, minor) = version(psci);
    println!("PSCI version {major}.{minor} ({psci:#x})");
    let smccc_v = smccc::smccc_version();
    let (major, minor) = version(smccc_v);
    println!("SMCCC version {major}.{minor} ({smccc_v:#x})");
    if let Some(info) = smccc::stratum_info() {
        println!(
            "Stratum: ABI {} VM {} vCPU {} boot {}",
            info.abi_version, info.vm_id, info.vcpu_id, info.boot_count
        );
    }
    stratum_guests::pass()
}
