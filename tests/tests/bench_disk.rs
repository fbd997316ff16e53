//! The bench's disk rows (tier 3: it boots Debian): `stratum bench` with
//! the Linux sections but not the network or the breakdown, so its disk
//! case runs: a Debian frontend whose disk the service VM serves, timed and
//! traced, beside bare QEMU's own virtio-blk. Checks that every disk row is
//! there with figures that are not zero, that the traced runs split the
//! instructions as they must (EL2 and the service VM under Stratum, none on
//! bare QEMU), and that a test's instruction count repeats from round to
//! round — never how fast anything is.

use std::time::Duration;

use stratum_abi::workload::DISK_TESTS;
use stratum_systests::{assert_status, guest_elf, run_stratum, status};

/// The harness kills the run after this long: the bench guest's runs, the
/// Linux boot and workload twice each, and the disk case's four runs.
const HARD_TIMEOUT: Duration = Duration::from_secs(900);

/// How far a traced test's instructions may move between rounds (after
/// the first, which warms up), as a fraction: the counts are exact, but
/// when QEMU's host-side I/O completes moves where interrupts and idle
/// periods fall.
const ROUND_SPREAD: f64 = 0.10;

/// The number after `"key": ` in `text` (the first one).
fn value(text: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\": ");
    let at = text
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        + pat.len();
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {text}"))
}

/// The part of `row` from `"key": ` on.
fn from<'a>(row: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\": ");
    let at = row
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {row}"));
    &row[at + pat.len()..]
}

#[test]
fn bench_disk_rows_are_measured_and_repeat() {
    let out = std::env::temp_dir().join(format!("stratum-bench-disk-{}", std::process::id()));
    let guest = guest_elf("bench");
    let run = run_stratum(
        [
            "bench".as_ref(),
            "--guest".as_ref(),
            guest.as_os_str(),
            "--iterations".as_ref(),
            "20".as_ref(),
            "--no-net".as_ref(),
            "--no-breakdown".as_ref(),
            "--timeout".as_ref(),
            "300".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        HARD_TIMEOUT,
    );
    assert_status(&run, status::OK, "stratum bench");
    let table = &run.console;
    assert!(table.contains("Disk ("), "no disk table:\n{table}");
    assert!(
        table.contains("Disk instructions per request (QEMU's instruction log"),
        "no traced disk table:\n{table}"
    );
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    assert!(json.contains("\"disk\": {\"kernel\": "), "{json}");
    for test in DISK_TESTS {
        assert!(
            table.lines().filter(|l| l.starts_with(test.label)).count() == 2,
            "{}: a wall-clock row and an instruction row\n{table}",
            test.id
        );
        let row = json
            .lines()
            .find(|l| l.contains(&format!("{{\"test\": \"{}\"", test.id)))
            .unwrap_or_else(|| panic!("no disk row {} in results.json:\n{json}", test.id));
        // Wall clock: both machines moved data in some time.
        for machine in ["stratum", "bare_qemu"] {
            let timed = from(row, machine);
            for key in ["ops", "bytes", "wall_s", "throughput"] {
                assert!(
                    value(timed, key) > 0.0,
                    "{} {machine} {key}: {row}",
                    test.id
                );
            }
        }
        // Instructions: under Stratum the frontend, EL2 and the service VM
        // each ran some, with exits on both sides; on bare QEMU only the
        // guest.
        let traced = from(row, "traced");
        let stratum = from(traced, "stratum");
        let bare = from(traced, "bare_qemu");
        let per = |t: &str, key: &str| value(from(t, "per_request"), key);
        for key in [
            "frontend",
            "el2",
            "service_vm",
            "frontend_exits",
            "service_exits",
        ] {
            assert!(per(stratum, key) > 0.0, "{} Stratum {key}: {row}", test.id);
        }
        assert!(per(bare, "frontend") > 0.0, "{}: {row}", test.id);
        for key in ["el2", "service_vm", "frontend_exits"] {
            assert_eq!(per(bare, key), 0.0, "{} bare QEMU {key}: {row}", test.id);
        }
        // The count repeats: the rounds after the first agree.
        for (machine, t) in [("Stratum", stratum), ("bare QEMU", bare)] {
            let spread = value(t, "round_spread");
            assert!(
                spread <= ROUND_SPREAD,
                "{} {machine}: the rounds differ by {:.1} %: {row}",
                test.id,
                100.0 * spread
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
