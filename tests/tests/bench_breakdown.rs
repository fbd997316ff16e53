//! The bench breakdown test (tier 2): `stratum bench` with a few iterations
//! and no Linux, the breakdown on (its default): the bench guest traced
//! instruction by instruction under Stratum (one vCPU, two vCPUs, two VMs
//! time-sharing a CPU). Checks that every bare-metal row gets a breakdown
//! whose categories add up to its EL2 instructions, and that EL2 plus the
//! guest's own instructions make a total close to the row's sample — never
//! what any figure is.

use std::time::Duration;

use stratum_systests::{BENCH_EXIT_ROWS, assert_status, guest_elf, run_stratum, status};

/// The harness kills the run after this long (five short guest runs and
/// three traced ones).
const HARD_TIMEOUT: Duration = Duration::from_secs(300);

/// The categories, as `results.json` names them.
const CATEGORIES: [&str; 10] = [
    "vector",
    "entry",
    "decode",
    "emulation",
    "injection",
    "scheduling",
    "statistics",
    "locks",
    "copy",
    "other",
];

/// The number after `"key": ` in `text`.
fn number(text: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\": ");
    let at = text
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        + pat.len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {text}"))
}

#[test]
fn every_row_is_broken_down_and_adds_up() {
    let out = std::env::temp_dir().join(format!("stratum-bench-breakdown-{}", std::process::id()));
    let guest = guest_elf("bench");
    let run = run_stratum(
        [
            "bench".as_ref(),
            "--guest".as_ref(),
            guest.as_os_str(),
            "--iterations".as_ref(),
            "3".as_ref(),
            "--no-linux".as_ref(),
            "--timeout".as_ref(),
            "100".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        HARD_TIMEOUT,
    );
    assert_status(&run, status::OK, "stratum bench");
    let table = &run.console;
    assert!(
        table.contains("Where the instructions go: EL2 instructions of one sample"),
        "no breakdown printed:\n{table}"
    );
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    let section = &json[json.find("\"breakdown\": [").expect("a breakdown section")..];
    // The rows broken down: the exit rows, and the VM switch.
    for op in BENCH_EXIT_ROWS.into_iter().chain(["vm_switch"]) {
        let row = section
            .lines()
            .find(|l| l.contains(&format!("{{\"op\": \"{op}\"")))
            .unwrap_or_else(|| panic!("no {op} in the breakdown:\n{section}"));
        let el2 = number(row, "el2");
        let guest = number(row, "guest");
        assert!(el2 > 0, "{op}: an exit takes EL2 instructions: {row}");
        assert_eq!(number(row, "total"), el2 + guest, "{row}");
        let categories = &row[row.find("\"categories\": {").expect("categories")..];
        let sum: u64 = CATEGORIES.iter().map(|c| number(categories, c)).sum();
        assert_eq!(
            sum, el2,
            "{op}: the categories add up to EL2's instructions: {row}"
        );
        // The trace and the guest's counter count the same window, up to
        // an instruction at an exception that QEMU logs and counts
        // differently (docs/benchmarks.md).
        let traced = number(row, "traced_sample");
        assert!(
            traced.abs_diff(el2 + guest) <= 2,
            "{op}: the trace counts {}, the counter {traced}: {row}",
            el2 + guest
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
