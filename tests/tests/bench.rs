//! The bench smoke test (tier 2): one short `stratum bench` run (20
//! iterations, no Linux: neither its boot nor its workload, no breakdown) under Stratum (one vCPU, two vCPUs, two VMs
//! time-sharing a CPU) and on bare QEMU, checking that every output parses
//! and is complete — never how fast anything is.
//!
//! `stratum bench` itself fails (exit 1) when a guest's output does not parse,
//! its summary disagrees with its own samples, or the guest read another
//! `ID_AA64MMFR0_EL1` under Stratum (trapped, TID3) than on bare QEMU; here
//! the written `results.json` and `results.svg` are checked too.

use std::time::Duration;

use stratum_systests::{BENCH_EXIT_ROWS, assert_status, guest_elf, run_stratum, status};

/// The harness kills the run after this long (four short guest runs).
const HARD_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn bench_runs_and_its_output_parses() {
    let out = std::env::temp_dir().join(format!("stratum-bench-smoke-{}", std::process::id()));
    let guest = guest_elf("bench");
    let run = run_stratum(
        [
            "bench".as_ref(),
            "--guest".as_ref(),
            guest.as_os_str(),
            "--iterations".as_ref(),
            "20".as_ref(),
            "--no-linux".as_ref(),
            "--no-breakdown".as_ref(),
            "--timeout".as_ref(),
            "100".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        HARD_TIMEOUT,
    );
    assert_status(&run, status::OK, "stratum bench");
    let table = &run.console;
    for label in [
        "HVC round trip",
        "vtimer IRQ latency, in WFI",
        "virtual IPI",
    ] {
        assert!(table.contains(label), "no {label} row:\n{table}");
    }
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    for op in ["empty"].into_iter().chain(BENCH_EXIT_ROWS) {
        let row = json
            .lines()
            .find(|l| l.contains(&format!("\"op\": \"{op}\"")))
            .unwrap_or_else(|| panic!("no {op} in results.json:\n{json}"));
        assert!(row.contains("\"stratum\": {\"n\": 20,"), "{row}");
        assert!(row.contains("\"bare_qemu\": {\"n\": 20,"), "{row}");
    }
    // Two VMs time-sharing one CPU: measured under Stratum only.
    let vm_switch = json
        .lines()
        .find(|l| l.contains("\"op\": \"vm_switch\""))
        .expect("a vm_switch row");
    assert!(
        vm_switch.contains("\"stratum\": {\"n\": 20,") && vm_switch.contains("\"bare_qemu\": null"),
        "{vm_switch}"
    );
    assert!(json.contains("\"not_measured\": \"skipped (--no-linux)\""));
    assert!(
        json.contains("\"linux_workload\": {\"not_measured\": \"skipped (--no-linux)\""),
        "the Linux workload is skipped too:\n{json}"
    );
    assert!(table.contains("Linux workload: n/a (skipped (--no-linux))"));
    assert!(json.contains("\"iterations\": 20"));
    // The breakdown has a test of its own (`bench_breakdown.rs`).
    assert!(json.contains("\"breakdown\": {\"not_measured\": \"skipped (--no-breakdown)\"}"));
    assert!(table.contains("Where the instructions go: n/a (skipped (--no-breakdown))"));
    let svg = std::fs::read_to_string(out.join("results.svg")).expect("results.svg written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let _ = std::fs::remove_dir_all(&out);
}
