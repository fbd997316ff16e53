//! The test tiers and the linters, as `cargo xtask test` and `cargo xtask lint` run them.
//!
//! Tiers: lint → build → host unit tests → fuzz smoke (every libFuzzer
//! target over its checked-in corpus, a few seconds each; [`crate::fuzz`])
//! → system tests (QEMU) → Linux (the stock Debian kernel, fetched into the
//! cache). Every tier runs even when an
//! earlier one failed (except that system and Linux tests need the build),
//! so one run reports everything; the last line is
//! `total: N passed, N failed`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{GUEST_TARGET, HYP_TARGET, WORKLOAD_TARGET, build_all, cargo, root};

/// Host crates: everything but the bare-metal binaries.
const HOST_EXCLUDES: &[&str] = &[
    "--exclude",
    "stratum-hypervisor",
    "--exclude",
    "stratum-guests",
];

/// `cargo xtask lint`: rustfmt, the architecture rules
/// ([`crate::policy`]: crate dependency direction, assembly only in
/// `crates/arch-aarch64`), then clippy on the host and aarch64 targets.
pub fn lint() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    // The fuzz targets are their own workspace (they build with nightly):
    // formatting is checked here, compiling by the fuzz smoke run.
    cargo(&["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"])?;
    crate::policy::check_workspace(&root())?;
    let mut host = vec!["clippy", "--workspace", "--all-targets"];
    host.extend(HOST_EXCLUDES);
    host.extend(["--", "-D", "warnings"]);
    cargo(&host)?;
    cargo(&[
        "clippy",
        "-p",
        "stratum-guests",
        "--lib",
        "--tests",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&[
        "clippy",
        "-p",
        "stratum-hypervisor",
        "-p",
        "stratum-arch",
        "--target",
        HYP_TARGET,
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&[
        "clippy",
        "-p",
        "stratum-guests",
        "-p",
        "stratum-core",
        "-p",
        "stratum-vgic",
        "-p",
        "stratum-virtio",
        "-p",
        "stratum-abi",
        "--target",
        GUEST_TARGET,
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&[
        "clippy",
        "-p",
        "stratum-workload",
        "-p",
        "stratum-blkd",
        "--target",
        WORKLOAD_TARGET,
        "--",
        "-D",
        "warnings",
    ])
}

/// Counts from cargo's `test result:` lines.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests ignored.
    pub ignored: u64,
}

impl Counts {
    /// Adds the counts of one `test result:` line, if `line` is one.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        }
    }
}

/// The system-test files of tier 2: every `tests/tests/*.rs` but the Linux
/// tests (tier 3), as `--test NAME` arguments, after `--lib` (the harness's
/// own unit tests).
fn system_test_args(test_files: impl IntoIterator<Item = PathBuf>) -> Vec<String> {
    let mut names: Vec<String> = test_files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .filter(|name| !LINUX_TESTS.contains(&name.as_str()))
        .collect();
    names.sort();
    // Every file runs even when an earlier one fails, so one failure
    // never hides another's result.
    let mut args = vec!["--no-fail-fast".to_owned(), "--lib".to_owned()];
    for name in names {
        args.extend(["--test".to_owned(), name]);
    }
    args
}

/// The test files of tier 3 (`tests/tests/<name>.rs`): those that boot
/// the Debian guest (the service VM of disks and uplinks is one).
const LINUX_TESTS: &[&str] = &["linux", "disks", "uplink", "bench_disk"];

/// Fetches the pinned Debian guest (or finds it in the cache) and builds
/// its initramfs with `programs`: kernel and initramfs.
fn fetch_linux(programs: &stratum::linux::GuestPrograms) -> Result<(PathBuf, PathBuf), String> {
    use stratum::linux::{KernelChoice, prepare_debian_choosing};
    let cache = stratum::linux::default_cache_dir().map_err(|e| e.to_string())?;
    let prepared = prepare_debian_choosing(&cache, KernelChoice::Pinned, true, Some(programs))
        .map_err(|e| format!("fetching the Debian guest into {}: {e}", cache.display()))?;
    let guest = prepared.guest;
    println!(
        "xtask: Debian kernel {} at {}, initramfs {}\nxtask: package {}",
        guest.kernel_version,
        guest.kernel.display(),
        guest.initramfs.display(),
        prepared.fetched.describe_kernel()
    );
    Ok((guest.kernel, guest.initramfs))
}

/// Runs `cargo test ARGS`, echoing its output and counting results.
fn cargo_test(args: &[&str], envs: &[(&str, &Path)]) -> (Counts, bool) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("test")
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut counts = Counts::default();
    let Ok(mut child) = cmd.spawn() else {
        eprintln!("xtask: cannot run cargo test");
        return (counts, false);
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            counts.add_line(&line);
        }
    }
    let ok = child.wait().is_ok_and(|s| s.success());
    (counts, ok)
}

/// `cargo xtask test`: every tier.
pub fn test_all() -> Result<(), String> {
    let start = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut total = Counts::default();
    let mut timings: Vec<(&str, f64)> = Vec::new();

    let t = Instant::now();
    println!("== tier 0: lint (rustfmt, clippy host + aarch64)");
    if let Err(e) = lint() {
        failures.push(format!("lint: {e}"));
    }
    timings.push(("lint", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    println!("== build: hypervisor Image, test guests, stratum CLI");
    let artifacts = build_all();
    if let Err(e) = &artifacts {
        failures.push(format!("build: {e}"));
    }
    timings.push(("build", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    println!("== tier 1: host unit and property tests");
    let mut args = vec!["--workspace"];
    args.extend(HOST_EXCLUDES);
    args.extend(["--exclude", "stratum-systests"]);
    let (c, ok) = cargo_test(&args, &[]);
    accumulate(&mut total, c);
    // The guest runtime's library (its DT reader) also runs on the host.
    let (g, guest_ok) = cargo_test(&["-p", "stratum-guests", "--lib"], &[]);
    accumulate(&mut total, g);
    if !ok || !guest_ok {
        failures.push("host unit tests failed".into());
    }
    timings.push(("unit", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    println!("== tier 1b: fuzz smoke (every fuzz target over its corpus, briefly)");
    let (passed, fuzz_failures) = crate::fuzz::smoke();
    // Each target counts as one test.
    total.passed += passed;
    total.failed += fuzz_failures.len() as u64;
    failures.extend(fuzz_failures);
    timings.push(("fuzz", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    println!("== tier 2: system tests (the hypervisor on QEMU with test guests)");
    match &artifacts {
        Ok(a) => {
            let envs = [
                ("STRATUM_HYPERVISOR", a.hypervisor.as_path()),
                ("STRATUM_HYPERVISOR_TRACE", a.hypervisor_trace.as_path()),
                ("STRATUM_GUESTS_DIR", a.guests.as_path()),
                ("STRATUM_BIN", a.stratum.as_path()),
            ];
            let files = std::fs::read_dir(root().join("tests").join("tests"))
                .map(|dir| dir.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default();
            let mut args = vec!["-p".to_owned(), "stratum-systests".to_owned()];
            args.extend(system_test_args(files));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (c, ok) = cargo_test(&args, &envs);
            accumulate(&mut total, c);
            if !ok {
                failures.push("system tests failed".into());
            }
        }
        Err(_) => failures.push("system tests not run: the build failed".into()),
    }
    timings.push(("system", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    println!("== tier 3: linux (the stock Debian arm64 kernel under the hypervisor)");
    match artifacts
        .as_ref()
        .map(|a| (a, fetch_linux(&a.guest_programs())))
    {
        Ok((a, Ok((kernel, initramfs)))) => {
            let [workload, blkd] = a.guest_program_env();
            let envs = [
                ("STRATUM_HYPERVISOR", a.hypervisor.as_path()),
                ("STRATUM_BIN", a.stratum.as_path()),
                ("STRATUM_LINUX_KERNEL", kernel.as_path()),
                ("STRATUM_LINUX_INITRD", initramfs.as_path()),
                ("STRATUM_GUESTS_DIR", a.guests.as_path()),
                // `stratum run --debian` in the tests builds its initramfs
                // with these programs (STRATUM_WORKLOAD, STRATUM_BLKD)
                // instead of building them.
                workload,
                blkd,
            ];
            let mut args = vec!["-p", "stratum-systests", "--no-fail-fast"];
            for name in LINUX_TESTS {
                args.extend(["--test", name]);
            }
            let (c, ok) = cargo_test(&args, &envs);
            accumulate(&mut total, c);
            if !ok {
                failures.push("linux tests failed".into());
            }
        }
        Ok((_, Err(e))) => failures.push(format!("linux tests not run: {e}")),
        Err(_) => failures.push("linux tests not run: the build failed".into()),
    }
    timings.push(("linux", t.elapsed().as_secs_f64()));

    println!();
    for (name, secs) in &timings {
        println!("xtask: {name:<7} {secs:7.1} s");
    }
    println!("xtask: whole run {:.1} s", start.elapsed().as_secs_f64());
    for f in &failures {
        println!("xtask: FAILED: {f}");
    }
    // A failed tier with no failed test (lint, build) still counts as one failure.
    let failed = total.failed.max(u64::from(!failures.is_empty()));
    println!("total: {} passed, {} failed", total.passed, failed);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} tier(s) failed", failures.len()))
    }
}

fn accumulate(total: &mut Counts, c: Counts) {
    total.passed += c.passed;
    total.failed += c.failed;
    total.ignored += c.ignored;
}

#[cfg(test)]
mod tests {
    use super::{Counts, system_test_args};
    use std::path::PathBuf;

    #[test]
    fn tier_two_runs_every_system_test_file_but_linux() {
        let files = ["linux.rs", "system.rs", "interrupts.rs", "README.md"]
            .map(|f| PathBuf::from("tests/tests").join(f));
        assert_eq!(
            system_test_args(files),
            [
                "--no-fail-fast",
                "--lib",
                "--test",
                "interrupts",
                "--test",
                "system"
            ]
        );
    }

    #[test]
    fn the_workload_target_is_the_one_stratum_builds_for() {
        assert_eq!(crate::WORKLOAD_TARGET, stratum::linux::workload::TARGET);
    }

    #[test]
    fn counts_cargo_result_lines() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line(
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("running 3 tests");
        assert_eq!(
            c,
            Counts {
                passed: 13,
                failed: 2,
                ignored: 3
            }
        );
    }
}
