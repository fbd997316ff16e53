//! `psci`: checks Stratum's SMCCC 1.2 / PSCI 1.1 answers over `HVC`, then that a
//! trapped `SMC` is answered the same way. One `check …: ok|FAILED` line each.
#![no_std]
#![no_main]

use stratum_guests::smccc::{self, *};
use stratum_guests::{Checks, println, start::entry_point, sysreg};

stratum_guests::entry!("psci", main);

/// An MPIDR that no Stratum VM has (Aff1 = 0xff).
const BOGUS_MPIDR: u64 = 0xff00;

/// Functions a PSCI 1.1 implementation must answer in `PSCI_FEATURES`.
const IMPLEMENTED: &[(&str, u32)] = &[
    ("PSCI_VERSION", PSCI_VERSION),
    ("CPU_SUSPEND_32", PSCI_CPU_SUSPEND_32),
    ("CPU_SUSPEND_64", PSCI_CPU_SUSPEND_64),
    ("CPU_OFF", PSCI_CPU_OFF),
    ("CPU_ON_32", PSCI_CPU_ON_32),
    ("CPU_ON_64", PSCI_CPU_ON_64),
    ("AFFINITY_INFO_32", PSCI_AFFINITY_INFO_32),
    ("AFFINITY_INFO_64", PSCI_AFFINITY_INFO_64),
    ("MIGRATE_INFO_TYPE", PSCI_MIGRATE_INFO_TYPE),
    ("SYSTEM_OFF", PSCI_SYSTEM_OFF),
    ("SYSTEM_RESET", PSCI_SYSTEM_RESET),
    ("PSCI_FEATURES", PSCI_FEATURES),
    ("SMCCC_VERSION", SMCCC_VERSION),
];

/// Function IDs nobody implements: SMC64 SiP, SMC32 vendor-hypervisor, and a
/// yielding (non-fast) call.
const UNKNOWN: &[u32] = &[0xC200_1234, 0x8600_1234, 0x0000_1234];

fn main(_dtb: usize) -> ! {
    let mut c = Checks::new();
    c.check_eq(
        "PSCI_VERSION",
        smccc::psci_version(),
        u64::from(PSCI_VERSION_1_1),
    );
    c.check_eq(
        "SMCCC_VERSION",
        smccc::smccc_version(),
        u64::from(SMCCC_VERSION_1_2),
    );
    for &(name, fid) in IMPLEMENTED {
        let got = smccc::psci_features(fid);
        c.check(
            format_args!("PSCI_FEATURES({name}): got {got}, want >= 0"),
            got >= 0,
        );
    }
    for (name, fid) in [
        ("MIGRATE_32", PSCI_MIGRATE_32),
        ("MIGRATE_64", PSCI_MIGRATE_64),
    ] {
        c.check_status(
            format_args!("PSCI_FEATURES({name})"),
            smccc::psci_features(fid),
            NOT_SUPPORTED,
        );
    }
    c.check_status(
        "MIGRATE_INFO_TYPE",
        smccc::migrate_info_type(),
        MIGRATE_INFO_TYPE_NOT_PRESENT,
    );

    let me = sysreg::mpidr_affinity();
    println!("own MPIDR affinity {me:#x}");
    c.check_status("AFFINITY_INFO_64(self, 0)", smccc::affinity_info(me, 0), 0);
    let aff32 = smccc::status(smccc::call(PSCI_AFFINITY_INFO_32, me & 0xff_ffff, 0, 0));
    c.check_status("AFFINITY_INFO_32(self, 0)", aff32, 0);
    c.check_status(
        format_args!("AFFINITY_INFO_64({BOGUS_MPIDR:#x}, 0)"),
        smccc::affinity_info(BOGUS_MPIDR, 0),
        INVALID_PARAMETERS,
    );
    let entry = entry_point() as u64;
    c.check_status(
        format_args!("CPU_ON_64({BOGUS_MPIDR:#x})"),
        smccc::cpu_on(BOGUS_MPIDR, entry, 0),
        INVALID_PARAMETERS,
    );
    c.check_status("CPU_ON_64(self)", smccc::cpu_on(me, entry, 0), ALREADY_ON);

    for &fid in UNKNOWN {
        let got = smccc::hvc([u64::from(fid), 0, 0, 0, 0, 0, 0, 0])[0];
        c.check_eq(format_args!("unknown function {fid:#x}"), got, u64::MAX);
        println!("still running after unknown function {fid:#x}");
    }

    // Last, because on bare EL1 without EL3 `smc` is undefined.
    let via_smc = smccc::smc([u64::from(PSCI_VERSION), 0, 0, 0, 0, 0, 0, 0])[0];
    c.check_eq("PSCI_VERSION via SMC", via_smc, u64::from(PSCI_VERSION_1_1));
    let via_smc = smccc::smc([u64::from(SMCCC_VERSION), 0, 0, 0, 0, 0, 0, 0])[0];
    c.check_eq(
        "SMCCC_VERSION via SMC",
        via_smc,
        u64::from(SMCCC_VERSION_1_2),
    );
    c.finish()
}
