//! `stratum-workload`: a small static Linux program that times what a
//! workload asks of a kernel — a null syscall, reads of `/dev/zero`, a pipe
//! round trip between two processes, fork + exit + wait, first-touch page
//! faults, an 8 MiB memcpy, a CPU-only loop and file create/unlink on tmpfs —
//! with the generic timer's virtual counter ([`counter`]). `stratum bench`
//! runs it in a Debian guest under Stratum and on bare QEMU (the initramfs's
//! init starts it for `stratum.test=workload`) and compares the two.
//!
//! Usage: `stratum-workload [WORD …]`. The init passes the kernel command
//! line; of it only `workload.divisor=N` counts, which divides every test's
//! iteration count ([`ITERATIONS`]; at least one iteration each).
//!
//! Each test runs a tenth of its iterations first, untimed (at least one),
//! then all of them as one timed window ([`cases`]). Before the tests, the
//! CPU loop is timed in two short windows no interrupt fell into (none and
//! 10,000 iterations: its own cost, for `stratum bench`'s per-tick figure). The output is the
//! format of [`stratum_abi::workload`]: `WORKLOAD-ENV` first; the results,
//! one line per test, and `WORKLOAD-DONE` only once every test ran, so the
//! console (an emulated UART, where every byte costs an exit under a
//! hypervisor) is quiet while the tests run; for the same reason the
//! terminal's output is drained (`tcdrain`) before the first test. A test
//! that fails prints `WORKLOAD-FAIL test=ID: why` instead.
//!
//! Exit status: 0 every test ran; 1 a test failed; 2 bad arguments.
//!
//! `stratum-workload vsock-echo CID PORT N` and `stratum-workload
//! vsock-denied CID PORT` are the vsock modes instead ([`vsock`]): Linux's
//! end of the Linux ↔ bare-metal vsock test, run with `exec` in a config.
//! Exit status: 0 passed; 1 failed; 2 bad arguments.
//!
//! `stratum-workload tcp-sink PORT` and `stratum-workload tcp-send ADDR
//! PORT MIB` are the TCP modes ([`net`]): the two ends of `stratum bench`'s
//! VM ↔ VM throughput figure. Same exit statuses.
//!
//! With `workload.disk=DEV` among the words (`stratum bench`'s disk rows),
//! the program runs the disk tests on DEV instead of the workload's
//! ([`disk`]; `workload.disk_mib=N`, `workload.disk_reads=N`). Same exit
//! statuses.
//!
//! `stratum-workload udp-echo ADDR PORT N` is the UDP mode ([`udp`]):
//! Linux's end of the Linux ↔ bare-metal virtio-net test, with the
//! `netecho` guest at the other. Same exit statuses.

mod cases;
mod counter;
mod disk;
mod interrupts;
mod net;
mod udp;
mod vsock;

use std::io::Write as _;
use std::process::ExitCode;

use stratum_abi::workload::{
    DIVISOR_WORD, DONE, ENV_PREFIX, FAIL_PREFIX, LOOP_CALIBRATION_ITERS, LOOP_CALIBRATION_KEY,
    LOOP_EMPTY_KEY, MAX_ROUNDS, ROUNDS_KEY, ROUNDS_WORD, SAMPLE_PREFIX, Sample, TESTS,
};

/// Timed iterations of each test at divisor 1, in [`TESTS`] order: each
/// test is 28 to 45 million instructions on QEMU (over 100 timer ticks at
/// 250 Hz, so where the ticks fall moves a ratio little), but the CPU loop,
/// 250 million (1,000 ticks: the per-tick figure of `stratum bench` divides
/// by them); about 500 million in all.
const ITERATIONS: [(&str, u64); 8] = [
    ("null_syscall", 60_000),
    ("dev_zero_read", 10_000),
    ("pipe_round_trip", 2_000),
    ("fork_exit_wait", 200),
    ("page_fault", 12_288),
    ("memcpy_8m", 24),
    ("cpu_loop", 50_000_000),
    ("file_create_unlink", 2_000),
];

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Options {
    /// Every iteration count is divided by this.
    divisor: u64,
    /// How many times over the tests run ([`ROUNDS_WORD`]).
    rounds: u64,
}

/// Reads the options from the words (a kernel command line: words that are
/// not ours are ignored).
fn parse_args<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Options, String> {
    let mut options = Options {
        divisor: 1,
        rounds: 1,
    };
    for word in words {
        if let Some(value) = word.strip_prefix(DIVISOR_WORD) {
            options.divisor = value
                .parse()
                .ok()
                .filter(|&d| d > 0)
                .ok_or_else(|| format!("{word}: the divisor must be a positive number"))?;
        } else if let Some(value) = word.strip_prefix(ROUNDS_WORD) {
            options.rounds = value
                .parse()
                .ok()
                .filter(|r| (1..=MAX_ROUNDS).contains(r))
                .ok_or_else(|| format!("{word}: the rounds must be 1 to {MAX_ROUNDS}"))?;
        }
    }
    Ok(options)
}

/// Timed iterations of a test whose full count is `full`.
fn iterations(full: u64, options: Options) -> u64 {
    (full / options.divisor).max(1)
}

/// Untimed warm-up iterations before `iters` timed ones.
fn warmup(iters: u64) -> u64 {
    (iters / 10).max(1)
}

/// Writes out stdout and waits until the terminal sent it.
fn drain_output() {
    let _ = std::io::stdout().flush();
    // SAFETY: tcdrain on the stdout descriptor; it fails harmlessly
    // (ENOTTY) when stdout is not a terminal.
    unsafe { libc::tcdrain(libc::STDOUT_FILENO) };
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let mode = vsock::parse(&words)
        .map(|m| m.map(vsock::run))
        .or_else(|| net::parse(&words).map(|m| m.map(net::run)))
        .or_else(|| udp::parse(&words).map(|m| m.map(udp::run)));
    match mode {
        Some(Ok((line, status))) => {
            println!("{line}");
            return ExitCode::from(status);
        }
        Some(Err(e)) => {
            println!("{}: {e}", words[0]);
            return ExitCode::from(2);
        }
        None => {}
    }
    match disk::parse(args.iter().map(String::as_str)) {
        Some(Ok(plan)) => return ExitCode::from(disk::run(&plan)),
        Some(Err(e)) => {
            println!("{FAIL_PREFIX}test=none: {e}");
            return ExitCode::from(2);
        }
        None => {}
    }
    let options = match parse_args(args.iter().map(String::as_str)) {
        Ok(o) => o,
        Err(e) => {
            println!("{FAIL_PREFIX}test=none: {e}");
            return ExitCode::from(2);
        }
    };
    // The CPU loop's cost without interrupts, before anything is printed.
    let calibration = cases::quiet_cpu_loop(0)
        .and_then(|empty| Ok((empty, cases::quiet_cpu_loop(LOOP_CALIBRATION_ITERS)?)));
    let (loop_empty, loop_calibration) = match calibration {
        Ok(c) => c,
        Err(e) => {
            println!("{FAIL_PREFIX}test=cpu_loop: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "{ENV_PREFIX}freq={} divisor={} {ROUNDS_KEY}={} page={} {LOOP_EMPTY_KEY}={loop_empty} \
         {LOOP_CALIBRATION_KEY}={loop_calibration}",
        counter::frequency(),
        options.divisor,
        options.rounds,
        cases::page_size()
    );
    drain_output();
    let setup = cases::Setup {
        dir: "/tmp".into(),
        require_tmpfs: true,
    };
    let mut results = Vec::new();
    let rounds = (0..options.rounds).flat_map(|_| TESTS.iter().zip(ITERATIONS));
    for (test, (id, full)) in rounds {
        debug_assert_eq!(test.id, id, "ITERATIONS follows TESTS");
        let iters = iterations(full, options);
        let measured =
            cases::run(id, warmup(iters), &setup).and_then(|_| cases::run(id, iters, &setup));
        match measured {
            Ok(window) => results.push(Sample {
                test: id,
                iters,
                ticks: window.ticks,
                timer_irqs: window.irqs.timer,
                irqs: window.irqs.all,
            }),
            Err(e) => {
                println!("{FAIL_PREFIX}test={id}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    for sample in &results {
        println!("{sample}");
    }
    println!("{DONE}");
    debug_assert!(
        results
            .iter()
            .all(|s| s.to_string().starts_with(SAMPLE_PREFIX))
    );
    drain_output();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_follow_the_tests() {
        let ids: Vec<&str> = ITERATIONS.iter().map(|&(id, _)| id).collect();
        let tests: Vec<&str> = TESTS.iter().map(|t| t.id).collect();
        assert_eq!(ids, tests);
    }

    #[test]
    fn the_divisor_comes_from_the_command_line() {
        let line = "console=ttyAMA0 stratum.test=workload workload.divisor=100 quiet";
        let o = parse_args(line.split_whitespace()).expect("valid");
        assert_eq!(
            o,
            Options {
                divisor: 100,
                rounds: 1
            }
        );
        assert_eq!(iterations(20_000, o), 200);
        assert_eq!(iterations(16, o), 1, "at least one iteration");
        assert_eq!(warmup(200), 20);
        assert_eq!(warmup(1), 1);
        let o = parse_args("console=ttyAMA0".split_whitespace()).expect("valid");
        assert_eq!(o.divisor, 1);
        assert_eq!(iterations(16, o), 16);
        for bad in [
            "workload.divisor=0",
            "workload.divisor=x",
            "workload.divisor=",
        ] {
            assert!(parse_args([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_rounds_come_from_the_command_line() {
        let o =
            parse_args("workload.rounds=5 workload.divisor=10".split_whitespace()).expect("valid");
        assert_eq!(
            o,
            Options {
                divisor: 10,
                rounds: 5
            }
        );
        assert_eq!(parse_args(["workload.rounds=10"]).map(|o| o.rounds), Ok(10));
        for bad in [
            "workload.rounds=0",
            "workload.rounds=11",
            "workload.rounds=-1",
            "workload.rounds=",
        ] {
            let e = parse_args([bad]).expect_err(bad);
            assert!(e.starts_with(bad) && e.contains("1 to 10"), "{e}");
        }
    }
}
