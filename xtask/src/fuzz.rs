//! `cargo xtask fuzz`: the libFuzzer targets in `fuzz/` (docs/testing.md,
//! "Fuzzing"), built with `cargo fuzz` and run directly.
//!
//! - `cargo xtask fuzz` (or `--time N`): every target (or `--target
//!   NAME`) for N seconds (default 60), from the checked-in corpus
//!   (`fuzz/corpus/NAME`, read only) and a working corpus that grows
//!   across runs (`target/fuzz/corpus/NAME`); reports executions per
//!   target and where any crash landed (`target/fuzz/artifacts/NAME/`)
//!   with the command that reproduces it.
//! - `--repro FILE`: runs the target the file's directory names (or
//!   `--target`) on FILE once.
//! - `--merge`: adds to the checked-in corpus the working-corpus inputs
//!   that reach new edges (libFuzzer's `-merge=1` on edge coverage), to
//!   commit.
//! - `--seeds`: rewrites the seed inputs (`fuzz/corpus/NAME/seed-*`) from
//!   the project's real inputs ([`crate::seeds`]).
//! - [`smoke`]: what `cargo xtask test` runs: each target over its corpus
//!   plus a few seconds of fuzzing.
//!
//! The targets need a nightly compiler (`-Zsanitizer=address`): the
//! `nightly` toolchain when rustup has it, else the pinned toolchain with
//! `RUSTC_BOOTSTRAP=1` (which lets a stable compiler take `-Z` flags; the
//! sanitizer runtime ships with the standard library;
//! `STRATUM_FUZZ_NO_NIGHTLY=1` forces it). `cargo-fuzz` is installed with
//! `cargo install cargo-fuzz --locked` when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::root;

/// Every fuzz target (`fuzz/fuzz_targets/NAME.rs`).
pub const TARGETS: &[&str] = &[
    "esr_vmexit",
    "insn",
    "vgic",
    "virtqueue",
    "config",
    "fdt",
    "bundle",
];

/// Seconds of fuzzing per target in the smoke run, after its corpus.
const SMOKE_SECONDS: u32 = 3;

/// The largest input the targets are given (libFuzzer's `-max_len`): the
/// biggest seeds (QEMU's host trees, a two-VM bundle) fit.
const MAX_LEN: usize = 64 * 1024;

/// How to run `cargo fuzz`: the toolchain argument and environment.
struct Toolchain {
    /// `+nightly`, or nothing (the pinned toolchain).
    plus: Option<&'static str>,
    /// `RUSTC_BOOTSTRAP=1` on the pinned toolchain.
    bootstrap: bool,
}

impl Toolchain {
    fn describe(&self) -> &'static str {
        if self.plus.is_some() {
            "the nightly toolchain"
        } else {
            "the pinned toolchain with RUSTC_BOOTSTRAP=1 (no nightly toolchain, or \
             STRATUM_FUZZ_NO_NIGHTLY set)"
        }
    }

    fn cargo_fuzz(&self) -> Command {
        let mut cmd = Command::new("cargo");
        if let Some(plus) = self.plus {
            cmd.arg(plus);
        }
        cmd.arg("fuzz").current_dir(fuzz_dir());
        if self.bootstrap {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        // xtask runs under `cargo`, whose toolchain variables would pin
        // the nested cargo to the workspace's toolchain; and the binaries
        // are looked for in `fuzz/target` ([`binary`]).
        for var in [
            "RUSTUP_TOOLCHAIN",
            "RUSTC",
            "CARGO",
            "RUSTDOC",
            "CARGO_TARGET_DIR",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// Where `cargo fuzz build` puts the target binaries.
fn binary(target: &str) -> PathBuf {
    fuzz_dir()
        .join("target")
        .join(host_triple())
        .join("release")
        .join(target)
}

fn host_triple() -> &'static str {
    // The only host the project supports running the fuzzers on; cargo
    // fuzz names its output directory after it.
    "x86_64-unknown-linux-gnu"
}

fn work_dir() -> PathBuf {
    root().join("target").join("fuzz")
}

/// Installs cargo-fuzz when `cargo fuzz` is missing.
fn ensure_cargo_fuzz() -> Result<(), String> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if have {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz is missing; running `cargo install cargo-fuzz --locked`");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo install cargo-fuzz --locked` failed ({status}); install cargo-fuzz \
             by hand (it needs crates.io), then run the fuzzers again"
        ))
    }
}

/// The nightly toolchain if rustup has one, else the pinned one with
/// `RUSTC_BOOTSTRAP=1`.
fn toolchain() -> Toolchain {
    let list = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let nightly = list.lines().any(|l| l.starts_with("nightly"));
    if nightly && std::env::var_os("STRATUM_FUZZ_NO_NIGHTLY").is_none() {
        Toolchain {
            plus: Some("+nightly"),
            bootstrap: false,
        }
    } else {
        Toolchain {
            plus: None,
            bootstrap: true,
        }
    }
}

/// Installs what is missing and builds every target (one cargo run).
fn build() -> Result<(), String> {
    ensure_cargo_fuzz()?;
    let tc = toolchain();
    println!("xtask: building the fuzz targets with {}", tc.describe());
    let status = tc
        .cargo_fuzz()
        .arg("build")
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo fuzz build` failed ({status}) with {}; the targets need a nightly \
             compiler: `rustup toolchain install nightly` if this one cannot build them",
            tc.describe()
        ))
    }
}

/// What one run of a target did.
#[derive(Debug, Default)]
struct RunReport {
    /// Executions (libFuzzer's `Done N runs`).
    runs: u64,
    /// Seconds the run took.
    seconds: f64,
    /// The input that crashed it, if one did.
    crash: Option<PathBuf>,
    /// Whether libFuzzer exited cleanly.
    ok: bool,
    /// The last lines of its output, for a failure.
    tail: Vec<String>,
}

/// The number in libFuzzer's last `Done N runs in S second(s)` line.
fn parse_runs(output: &str) -> Option<u64> {
    output.lines().rev().find_map(|l| {
        l.strip_prefix("Done ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The file libFuzzer's `Test unit written to PATH` line names.
fn parse_crash(output: &str) -> Option<PathBuf> {
    output.lines().find_map(|l| {
        let (_, path) = l.split_once("Test unit written to ")?;
        Some(PathBuf::from(path.trim()))
    })
}

/// Runs `target` for `seconds` of fuzzing after its corpus, growing the
/// working corpus; crashes go to `target/fuzz/artifacts/TARGET/`.
fn run_target(target: &str, seconds: u32, grow: bool) -> Result<RunReport, String> {
    let bin = binary(target);
    if !bin.exists() {
        return Err(format!(
            "{} is missing: the build did not make it",
            bin.display()
        ));
    }
    let work = work_dir().join("corpus").join(target);
    let artifacts = work_dir().join("artifacts").join(target);
    let scratch = work_dir().join("smoke").join(target);
    let corpus_dir = if grow { &work } else { &scratch };
    if !grow {
        // The smoke run starts afresh and keeps nothing.
        let _ = std::fs::remove_dir_all(&scratch);
    }
    for d in [corpus_dir, &artifacts] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let checked_in = fuzz_dir().join("corpus").join(target);
    let mut prefix = artifacts.into_os_string();
    prefix.push("/");
    let start = Instant::now();
    let out = Command::new(&bin)
        .arg(corpus_dir)
        .arg(&checked_in)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=0")
        .arg({
            let mut a = std::ffi::OsString::from("-artifact_prefix=");
            a.push(&prefix);
            a
        })
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let tail = text
        .lines()
        .filter(|l| !l.starts_with("#") && !l.trim().is_empty())
        .rev()
        .take(25)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(str::to_owned)
        .collect();
    Ok(RunReport {
        runs: parse_runs(&text).unwrap_or(0),
        seconds: start.elapsed().as_secs_f64(),
        crash: parse_crash(&text),
        ok: out.status.success(),
        tail,
    })
}

fn print_report(target: &str, r: &RunReport) {
    let verdict = match (&r.crash, r.ok) {
        (Some(_), _) => "CRASH",
        (None, true) => "ok",
        (None, false) => "FAILED",
    };
    println!(
        "fuzz: {target:<11} {verdict:<6} {:>10} runs in {:5.1} s",
        r.runs, r.seconds
    );
    if !r.ok || r.crash.is_some() {
        for l in &r.tail {
            println!("fuzz:   | {l}");
        }
    }
    if let Some(c) = &r.crash {
        println!(
            "fuzz:   crash input: {}\nfuzz:   reproduce: cargo xtask fuzz --repro {}\n\
             fuzz:   or: (cd fuzz && cargo +nightly fuzz run {target} {})",
            c.display(),
            c.display(),
            c.display()
        );
    }
}

/// The smoke run of `cargo xtask test`: builds every target, then runs
/// each over its checked-in corpus and [`SMOKE_SECONDS`] of fuzzing.
/// Returns (targets that passed, failures).
pub fn smoke() -> (u64, Vec<String>) {
    if let Err(e) = build() {
        return (0, vec![format!("fuzz build: {e}")]);
    }
    let mut passed = 0;
    let mut failures = Vec::new();
    for target in TARGETS {
        match run_target(target, SMOKE_SECONDS, false) {
            Ok(r) => {
                print_report(target, &r);
                if r.ok && r.crash.is_none() {
                    passed += 1;
                } else {
                    failures.push(format!("fuzz target {target}"));
                }
            }
            Err(e) => failures.push(format!("fuzz target {target}: {e}")),
        }
    }
    (passed, failures)
}

/// `cargo xtask fuzz [--time N] [--target NAME] [--repro FILE] [--merge] [--seeds]`.
pub fn command(args: &[String]) -> Result<(), String> {
    let mut seconds = 60u32;
    let mut only: Option<String> = None;
    let mut repro: Option<PathBuf> = None;
    let mut merge = false;
    let mut seeds = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs {what}"))
        };
        match a.as_str() {
            "--time" => {
                let v = value("a number of seconds")?;
                seconds = v
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("--time {v}: not a positive number of seconds"))?;
            }
            "--target" => {
                let t = value("a target name")?;
                if !TARGETS.contains(&t.as_str()) {
                    return Err(format!(
                        "--target {t}: no such fuzz target (targets: {})",
                        TARGETS.join(", ")
                    ));
                }
                only = Some(t);
            }
            "--repro" => repro = Some(PathBuf::from(value("an input file")?)),
            "--merge" => merge = true,
            "--seeds" => seeds = true,
            other => {
                return Err(format!(
                    "fuzz: unknown argument `{other}`\n{}",
                    crate::USAGE
                ));
            }
        }
    }
    if seeds {
        return crate::seeds::write_all(&fuzz_dir().join("corpus"));
    }
    let targets: Vec<&str> = match &only {
        Some(t) => vec![t.as_str()],
        None => TARGETS.to_vec(),
    };
    if let Some(file) = repro {
        return reproduce(&file, only.as_deref());
    }
    build()?;
    if merge {
        for t in &targets {
            merge_into_corpus(t)?;
        }
        return Ok(());
    }
    let mut failed = Vec::new();
    let mut total = 0;
    for t in &targets {
        let r = run_target(t, seconds, true)?;
        print_report(t, &r);
        total += r.runs;
        if !r.ok || r.crash.is_some() {
            failed.push(*t);
        }
    }
    println!(
        "fuzz: {total} runs over {} target(s); working corpus in {}, crashes in {}",
        targets.len(),
        work_dir().join("corpus").display(),
        work_dir().join("artifacts").display()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz target(s) failed: {}", failed.join(", ")))
    }
}

/// Runs the target `file` belongs to on it once.
fn reproduce(file: &Path, only: Option<&str>) -> Result<(), String> {
    if !file.is_file() {
        return Err(format!("--repro {}: no such file", file.display()));
    }
    // `…/artifacts/TARGET/crash-…` or `…/corpus/TARGET/…`.
    let target = match only {
        Some(t) => t.to_owned(),
        None => file
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .filter(|n| TARGETS.contains(n))
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "--repro {}: cannot tell its target from its directory; add --target NAME",
                    file.display()
                )
            })?,
    };
    build()?;
    println!("xtask: running {target} on {}", file.display());
    let status = Command::new(binary(&target))
        .arg(file)
        .status()
        .map_err(|e| format!("cannot run {target}: {e}"))?;
    if status.success() {
        println!("xtask: {target} passes on {}", file.display());
        Ok(())
    } else {
        Err(format!("{target} fails on {} ({status})", file.display()))
    }
}

/// libFuzzer's `-merge=1`: the working-corpus inputs of `target` that
/// reach coverage the checked-in corpus does not, copied into it.
fn merge_into_corpus(target: &str) -> Result<(), String> {
    let checked_in = fuzz_dir().join("corpus").join(target);
    let work = work_dir().join("corpus").join(target);
    std::fs::create_dir_all(&checked_in).map_err(|e| format!("{}: {e}", checked_in.display()))?;
    let before = count_files(&checked_in);
    // Edge coverage only (no hit counts, comparison operands or value
    // profiles): the smallest set that reaches every edge the run
    // reached, which keeps the checked-in corpus small.
    let status = Command::new(binary(target))
        .args([
            "-merge=1",
            "-use_counters=0",
            "-use_cmp=0",
            "-use_value_profile=0",
        ])
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(&checked_in)
        .arg(&work)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {target}: {e}"))?;
    if !status.success() {
        return Err(format!("merging {target}'s corpus failed ({status})"));
    }
    println!(
        "fuzz: {target}: {} input(s) added to {}",
        count_files(&checked_in) - before,
        checked_in.display()
    );
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

#[cfg(test)]
mod tests {
    use super::{TARGETS, parse_crash, parse_runs};
    use std::path::PathBuf;

    #[test]
    fn reads_libfuzzers_summary() {
        let out =
            "#2\tINITED cov: 136\n#642159\tDONE   cov: 575\nDone 642159 runs in 31 second(s)\n";
        assert_eq!(parse_runs(out), Some(642_159));
        assert_eq!(parse_runs("INFO: nothing\n"), None);
        let crash =
            "==1== ERROR\nartifact_prefix='a/'; Test unit written to a/crash-12ab\nBase64: AA==\n";
        assert_eq!(parse_crash(crash), Some(PathBuf::from("a/crash-12ab")));
        assert_eq!(parse_crash(out), None);
    }

    #[test]
    fn every_target_has_a_source_and_a_corpus() {
        let fuzz = crate::root().join("fuzz");
        let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
        for t in TARGETS {
            assert!(
                fuzz.join("fuzz_targets").join(format!("{t}.rs")).is_file(),
                "{t}"
            );
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} in the manifest"
            );
            let corpus = fuzz.join("corpus").join(t);
            let seeds = std::fs::read_dir(&corpus).map_or(0, |d| d.count());
            assert!(seeds > 0, "{} is empty", corpus.display());
        }
        let sources = std::fs::read_dir(fuzz.join("fuzz_targets"))
            .expect("fuzz_targets")
            .count();
        assert_eq!(sources, TARGETS.len(), "a target xtask does not run");
    }
}
