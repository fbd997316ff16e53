//! System tests of device passthrough and of time-sharing corner cases the
//! multi-VM suite (`multivm.rs`) does not cover: the `virt` machine's PL031
//! real-time clock passed through to one VM (`configs/passthrough.toml`),
//! on GICv3 and GICv2.

use std::path::PathBuf;

use stratum_systests::{
    DEFAULT_TIMEOUT, HARD_TIMEOUT_GRACE, assert_in_order, assert_status, lines_containing,
    run_stratum, status,
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
    // The device is described, identified, readable and interrupting.
    assert_in_order(
        &run,
        &[
            "check device tree describes the passed-through arm,pl031: ok",
            "check PL031 PeriphID0: got 0x31, want 0x31: ok",
            "check PrimeCell ID: got 0xb105f00d, want 0xb105f00d: ok",
            "check the RTC holds a real date: ok",
            "check the RTC's alarm interrupt arrived: ok",
            "check the interrupt is inactive after EOI: got 0x0, want 0x0: ok",
            "STRATUM-TEST PASS rtcpass",
        ],
    );
    assert_eq!(
        lines_containing(&run.console, "STRATUM-TEST PASS").len(),
        2,
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
