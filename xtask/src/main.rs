//! `cargo xtask`: the one entry point for building, running, testing,
//! benchmarking and linting Stratum. CI runs exactly what a person runs (`.ci/run` calls
//! `cargo xtask test`).
//!
//! Every command first installs what it is missing ([`deps`]): the Rust
//! targets and components, and QEMU and dtc through `apt-get` when running as
//! root (otherwise it stops with the exact command to run).

mod deps;
mod fuzz;
mod modules;
mod policy;
mod seeds;
mod tiers;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The command summary `cargo xtask help` prints.
pub const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  run [-- STRATUM-RUN-ARGS]   boot the default demo (Debian Linux, 2 vCPUs, a shell),
                              or `stratum run` with the given arguments
  bench [-- STRATUM-BENCH-ARGS]
                              exit-path lengths in instructions (deterministic QEMU) vs bare
                              QEMU and Xen/KVM, Linux boot ratio, Linux workload ratios,
                              where each row's instructions go (`-- --no-breakdown` skips it);
                              target/bench/results.{json,svg}
  test                        every test tier: lint, host unit tests, a smoke run of every
                              fuzz target, target builds, system tests, Linux
  lint                        rustfmt --check (the workspace and fuzz/), the architecture
                              rules (crate dependency direction; asm only in
                              crates/arch-aarch64, guests/ and tools/workload), clippy
                              -D warnings (host and aarch64 targets)
  fuzz [--time N] [--target NAME] [--repro FILE] [--merge] [--seeds]
                              the libFuzzer targets in fuzz/ (decoders, exit policy, vGIC,
                              virtqueues, config, device trees, boot bundle): each for N
                              seconds (default 60), executions and crashes reported;
                              --repro runs one input, --merge adds what a run found to
                              fuzz/corpus, --seeds rewrites the seed inputs
  build                       build the hypervisor Image, the test guests, the Linux guest
                              programs (workload, disk daemon) and the stratum CLI
  deps                        install missing prerequisites (rustup targets, QEMU, dtc)
";

/// Target of the EL2 binary: no FP/SIMD at EL2.
pub const HYP_TARGET: &str = "aarch64-unknown-none-softfloat";
/// Target of the test guests.
pub const GUEST_TARGET: &str = "aarch64-unknown-none";
/// Target of the programs that run inside Linux guests (the workload
/// program, the disk daemon).
pub const WORKLOAD_TARGET: &str = "aarch64-unknown-linux-musl";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "deps" => deps::ensure(),
        "build" => deps::ensure().and_then(|()| build_all().map(|_| ())),
        "lint" => deps::ensure().and_then(|()| tiers::lint()),
        "test" => deps::ensure().and_then(|()| tiers::test_all()),
        "fuzz" => deps::ensure().and_then(|()| fuzz::command(rest)),
        "run" => deps::ensure().and_then(|()| run(rest)),
        "bench" => deps::ensure().and_then(|()| bench(rest)),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Paths of what `build_all` produced.
pub struct Artifacts {
    /// The hypervisor as an arm64 `Image`.
    pub hypervisor: PathBuf,
    /// The hypervisor built with the exit trace (`--features trace`).
    pub hypervisor_trace: PathBuf,
    /// Directory holding the test guest ELFs.
    pub guests: PathBuf,
    /// The `stratum` CLI binary.
    pub stratum: PathBuf,
    /// The workload program for Linux guests' initramfs.
    pub workload: PathBuf,
    /// The disk daemon for Linux guests' initramfs.
    pub blkd: PathBuf,
}

impl Artifacts {
    /// The programs every Debian initramfs carries.
    pub fn guest_programs(&self) -> stratum::linux::GuestPrograms {
        stratum::linux::GuestPrograms {
            workload: self.workload.clone(),
            blkd: self.blkd.clone(),
        }
    }

    /// The environment that points `stratum` (and the tests) at the guest
    /// programs just built instead of building them again.
    pub fn guest_program_env(&self) -> [(&'static str, &Path); 2] {
        [
            (
                stratum::linux::workload::WORKLOAD_ENV,
                self.workload.as_path(),
            ),
            (stratum::linux::blkd::BLKD_ENV, self.blkd.as_path()),
        ]
    }
}

/// Runs a command in the workspace root, failing with its description.
pub fn cargo(args: &[&str]) -> Result<(), String> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Builds the hypervisor Image, the test guests, the Linux guest programs
/// (workload, disk daemon) and the CLI.
pub fn build_all() -> Result<Artifacts, String> {
    let hypervisor = stratum::build_hypervisor(true).map_err(|e| format!("{e:#}"))?;
    let hypervisor_trace =
        stratum::hypervisor::build_hypervisor_with(true, true).map_err(|e| format!("{e:#}"))?;
    cargo(&[
        "build",
        "--release",
        "-p",
        "stratum-guests",
        "--target",
        GUEST_TARGET,
    ])?;
    let programs = stratum::linux::programs::build().map_err(|e| format!("{e:#}"))?;
    cargo(&["build", "-p", "stratum"])?;
    let target = root().join("target");
    let guests = target.join(GUEST_TARGET).join("release");
    // The demo guest also as an arm64 Image, so the system tests boot every
    // kernel format (ELF, Image, raw).
    stratum::make_image(&guests.join("hello"), &guests.join("hello.img"))
        .map_err(|e| format!("{e:#}"))?;
    Ok(Artifacts {
        hypervisor,
        hypervisor_trace,
        guests,
        stratum: target.join("debug").join("stratum"),
        workload: programs.workload,
        blkd: programs.blkd,
    })
}

/// Writes the demo system (configs/demo.toml.in with the Debian guest from
/// the cache, fetched on first use, and the built guests) to
/// target/demo/demo.toml and returns its path.
fn demo_config(art: &Artifacts) -> Result<PathBuf, String> {
    let cache = stratum::linux::default_cache_dir().map_err(|e| e.to_string())?;
    let debian = stratum::linux::prepare_debian_with(&cache, true, &art.guest_programs())
        .map_err(|e| format!("fetching the Debian guest into {}: {e}", cache.display()))?;
    let template = std::fs::read_to_string(root().join("configs").join("demo.toml.in"))
        .map_err(|e| format!("configs/demo.toml.in: {e}"))?;
    let text = fill_demo_template(&template, &debian.kernel, &debian.initramfs, &art.guests)?;
    let dir = root().join("target").join("demo");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("demo.toml");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The demo template with its placeholders replaced (paths must be UTF-8:
/// they go into TOML strings).
fn fill_demo_template(
    template: &str,
    kernel: &Path,
    initrd: &Path,
    guests: &Path,
) -> Result<String, String> {
    let utf8 = |p: &Path| {
        p.to_str()
            .map(|s| s.replace('\\', "\\\\").replace('"', "\\\""))
            .ok_or_else(|| format!("{} is not UTF-8", p.display()))
    };
    Ok(template
        .replace("@KERNEL@", &utf8(kernel)?)
        .replace("@INITRD@", &utf8(initrd)?)
        .replace("@GUESTS@", &utf8(guests)?))
}

/// `cargo xtask run`: the default demo (with `stratum run` options given
/// after `--`, if any), or `stratum run ARGS` when they name a system.
fn run(args: &[String]) -> Result<(), String> {
    let art = build_all()?;
    let mut cmd = Command::new(&art.stratum);
    cmd.arg("run")
        .envs(art.guest_program_env())
        .env("STRATUM_HYPERVISOR", &art.hypervisor)
        .env("STRATUM_HYPERVISOR_TRACE", &art.hypervisor_trace);
    let passthrough: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    // Options alone (`-- --board zcu102`, `-- --gic 2`) run the demo with them.
    let names_a_system = passthrough
        .iter()
        .any(|a| *a == "--kernel" || *a == "--debian" || a.ends_with(".toml"));
    if !names_a_system {
        let config = demo_config(&art)?;
        println!(
            "xtask: booting the default demo ({}): Debian Linux with 2 vCPUs on CPUs 0-1 \
             and an interactive shell, next to two bare-metal tickers time-sharing CPU 2.\n\
             xtask: type commands at the `stratum#` prompt; Ctrl-A n shows the next VM, \
             Ctrl-A ? lists the keys; `poweroff -f` in Linux ends the demo.",
            config.display()
        );
        cmd.arg(&config);
    }
    cmd.args(passthrough);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run stratum: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("stratum run exited with {status}"))
    }
}

/// `cargo xtask bench`: `stratum bench` with the guest, hypervisor and
/// guest programs just built (further arguments after `--` are passed on,
/// e.g. `--no-linux`).
fn bench(args: &[String]) -> Result<(), String> {
    let art = build_all()?;
    let status = Command::new(&art.stratum)
        .envs(art.guest_program_env())
        .arg("bench")
        .arg("--guest")
        .arg(art.guests.join("bench"))
        .arg("--hypervisor")
        .arg(&art.hypervisor)
        .arg("--hypervisor-trace")
        .arg(&art.hypervisor_trace)
        .args(args.iter().skip_while(|a| *a == "--"))
        .status()
        .map_err(|e| format!("cannot run stratum: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("stratum bench exited with {status}"))
    }
}
