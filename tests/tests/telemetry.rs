//! System tests of the exit statistics and the exit trace
//! (docs/stats-and-trace.md): `stratum stats` against a running system, the
//! table printed when a VM stops, and `stratum run --trace` plotting a run.
//!
//! Run them with `cargo xtask test`, which also builds the trace-enabled
//! hypervisor and sets `STRATUM_HYPERVISOR_TRACE`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use stratum_systests::{
    DEFAULT_TIMEOUT, HARD_TIMEOUT_GRACE, assert_passed, guest_elf, pass_hypervisor_env,
    run_stratum, status,
};

/// The counts of `row` in a statistics table (one per vCPU, then the total),
/// from the first line starting with it.
fn row(table: &str, name: &str) -> Option<Vec<u64>> {
    table.lines().find_map(|line| {
        // The hypervisor prints the stop table as its own messages.
        let line = line.strip_prefix("[stratum]").unwrap_or(line);
        let rest = line.trim_start().strip_prefix(name)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().map(|n| n.parse().ok()).collect()
    })
}

#[test]
fn stats_of_a_running_system() {
    let mut cmd = Command::new(stratum_systests::stratum_bin());
    cmd.args(["run", "--kernel"])
        .arg(guest_elf("statswait"))
        .args(["--timeout", &DEFAULT_TIMEOUT.as_secs().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    pass_hypervisor_env(&mut cmd);
    let mut child = cmd.spawn().expect("the stratum CLI starts");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut console = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("statswait: ready") {
                let _ = tx.send(());
            }
            console.push_str(&line);
            console.push('\n');
        }
        console
    });
    let deadline = Instant::now() + DEFAULT_TIMEOUT + HARD_TIMEOUT_GRACE;
    let ready = rx.recv_timeout(DEFAULT_TIMEOUT).is_ok();
    let stats = ready.then(|| {
        Command::new(stratum_systests::stratum_bin())
            .args(["stats", "--pid", &pid.to_string()])
            .output()
            .expect("stratum stats runs")
    });
    // Let the guest finish: a line on its console.
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.write_all(b"go\n");
    }
    let status = loop {
        if let Some(s) = child.try_wait().expect("waitable") {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let console = reader.join().expect("reader");
    assert!(ready, "the guest never got ready:\n{console}");
    let stats = stats.expect("ran once ready");
    let table = String::from_utf8_lossy(&stats.stdout);
    assert!(
        stats.status.success(),
        "stratum stats failed: {}\n{table}",
        String::from_utf8_lossy(&stats.stderr)
    );
    assert!(
        table.starts_with("vm0 'statswait' (running): exits by reason\n"),
        "{table}"
    );
    // The guest made exactly these calls before it printed `ready`.
    assert_eq!(
        row(&table, "hvc PSCI_VERSION"),
        Some(vec![10, 10]),
        "{table}"
    );
    assert_eq!(row(&table, "hvc STRATUM_INFO"), Some(vec![5, 5]), "{table}");
    let total = row(&table, "total").expect("a total row");
    assert!(total[0] >= 15, "{table}");

    assert_eq!(status, Some(status::OK), "{console}");
    assert!(console.contains("STRATUM-TEST PASS statswait"), "{console}");
    // The same table when the VM stops, with the call that stopped it.
    assert!(
        console.contains("vm0 'statswait' (stopped): exits by reason"),
        "{console}"
    );
    let last = console
        .split("(stopped): exits by reason")
        .nth(1)
        .expect("the stop table");
    assert_eq!(row(last, "hvc PSCI_VERSION"), Some(vec![10, 10]), "{last}");
    assert_eq!(row(last, "hvc PSCI_SYSTEM_OFF"), Some(vec![1, 1]), "{last}");
}

#[test]
fn stats_without_a_run_say_so() {
    let run = run_stratum(["stats", "--pid", "1"], Duration::from_secs(30));
    assert_eq!(run.status, Some(status::BAD_INPUT), "{}", run.describe());
    assert!(
        run.console
            .contains("no running `stratum run` with process id 1"),
        "{}",
        run.describe()
    );
}

#[test]
fn trace_plots_a_run() {
    let out = std::env::temp_dir().join(format!("stratum-trace-test-{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let psci = guest_elf("psci");
    let run = run_stratum(
        [
            "run".into(),
            "--kernel".into(),
            psci.into_os_string(),
            "--cpus".into(),
            "2".into(),
            "--trace".into(),
            out.clone().into_os_string(),
            "--timeout".into(),
            DEFAULT_TIMEOUT.as_secs().to_string().into(),
        ],
        DEFAULT_TIMEOUT + HARD_TIMEOUT_GRACE,
    );
    assert_passed(&run, "psci");
    let svg = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("no plot at {}: {e}\n{}", out.display(), run.describe()));
    let _ = std::fs::remove_file(&out);
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    let traced: u64 = svg
        .split(" exits traced")
        .next()
        .and_then(|head| head.rsplit('>').next())
        .and_then(|n| n.parse().ok())
        .expect("the record count in the subtitle");
    assert!(traced > 100, "{traced} records\n{}", run.describe());
    // Every record is one counted exit or interrupt, so the plot holds no
    // more than the stop table counted, give or take the few that other
    // vCPUs and interrupts add after it is printed (while the machine
    // stops).
    let table = run
        .console
        .split("(stopped): exits by reason")
        .nth(1)
        .expect("the stop table");
    let counted = row(table, "total")
        .and_then(|r| r.last().copied())
        .expect("a total row");
    assert!(
        traced <= counted + 64,
        "{traced} records, {counted} exits counted"
    );
    assert!(svg.contains("vm0 'psci' vcpu0: "), "{svg}");
    assert!(svg.contains("<path "), "no bars: {svg}");
    // The console's output is the bulk of this guest's exits.
    assert!(svg.contains("mmio UART write "), "{svg}");
    let said = PathBuf::from(&out).display().to_string();
    assert!(
        run.console.contains(&format!("plotted to {said}")),
        "{}",
        run.describe()
    );
}
