//! System tests of device passthrough and of time-sharing corner cases the
//! multi-VM suite (`multivm.rs`) does not cover: the `virt` machine's PL031
//! real-time clock passed through to one VM (`configs/passthrough.toml`),
//! on GICv3 and GICv2.

use std::path::PathBuf;

use stratum_systests::{
    DEFAULT_TIMEOUT, HARD_TIMEOUT_GRACE, assert_status, run_stratum, split_by_tag, status,
};

fn config(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
}

fn passthrough(gic: &str) {
    let path = config("passthrough.toml");
    let run = run_stratum(
        [
            "run".as_ref(),
            path.as_os_str(),
            "--gic".as_ref(),
            gic.as_ref(),
            "--timeout".as_ref(),
            "60".as_ref(),
        ],
        DEFAULT_TIMEOUT + HARD_TIMEOUT_GRACE,
    );
    assert_status(&run, status::OK, "both VMs power off");
    let vms = split_by_tag(&run.console, &["clock", "other"])
        .unwrap_or_else(|e| panic!("{e}\n{}", run.describe()));
    // The device is described, identified, readable and interrupting, in
    // this order, on the console of the VM it belongs to.
    let clock = vms.text("clock");
    let mut at = 0;
    for want in [
        "check device tree describes the passed-through arm,pl031: ok",
        "check device tree carries the config's extra fragment: ok",
        "check PL031 PeriphID0: got 0x31, want 0x31: ok",
        "check PrimeCell ID: got 0xb105f00d, want 0xb105f00d: ok",
        "check the RTC holds a real date: ok",
        "check the RTC's alarm interrupt arrived: ok",
        "check the interrupt is inactive after EOI: got 0x0, want 0x0: ok",
        "STRATUM-TEST PASS rtcpass",
    ] {
        match clock[at..].find(want) {
            Some(i) => at += i + want.len(),
            None => panic!(
                "{want:?} missing (in order) from vm 'clock'\n{}",
                run.describe()
            ),
        }
    }
    assert!(
        vms.text("other").contains("STRATUM-TEST PASS hello"),
        "the VM without the device runs too\n{}",
        run.describe()
    );
}

#[test]
fn passthrough_pl031_gic3() {
    passthrough("3");
}

#[test]
fn passthrough_pl031_gic2() {
    passthrough("2");
}
