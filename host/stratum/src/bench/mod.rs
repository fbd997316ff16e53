//! `stratum bench` (and `cargo xtask bench`): path lengths of Stratum's exit
//! paths in executed instructions, against bare QEMU and the reference
//! figures of issue 6. The method is in `docs/benchmarks.md`.
//!
//! Every run is deterministic: QEMU `-icount shift=4,sleep=off -seed 1` and
//! `virt,dtb-randomness=off`, so one tick of the guest's 62.5 MHz counter is
//! one executed instruction, whatever the exception level, and a run repeats
//! exactly. The steps:
//!
//! 1. the bench guest (`guests/src/bin/bench.rs`) under Stratum with one vCPU
//!    (every single-CPU operation), with two (the virtual IPI), and as two
//!    VMs `ping` and `pong` time-sharing one CPU with a channel (the VM
//!    switch; [`vm_switch_config`]); when that run cannot be made (a build
//!    without multi-VM support), the VM switch is reported n/a with why;
//! 2. the same guest on bare QEMU at EL1 (booted as an arm64 `Image`, so it
//!    gets the DTB in `x0`), one and two CPUs: the emulator's own cost;
//! 3. unless disabled, the Debian kernel and initramfs (`stratum fetch
//!    debian`) to `Run /init` under Stratum and on bare QEMU, and the same
//!    kernel and initramfs running the workload program
//!    ([`crate::linux::workload`], rows in [`workload`]) under Stratum and on
//!    bare QEMU;
//! 4. unless disabled (or Linux is), two Debian VMs on one network, pinned
//!    and time-sharing a CPU, pinging and sending TCP streams ([`net`]);
//! 5. unless disabled (or Linux is), a Debian frontend with a disk served
//!    by the service VM, beside bare QEMU's own virtio-blk on the same
//!    image: wall-clock throughput, and instructions per request traced
//!    by CPU and exception level ([`disk`]);
//! 6. unless disabled, the bench guest once more per run, traced
//!    instruction by instruction, for where each row's instructions go
//!    ([`breakdown`]);
//! 7. the table on stdout, `results.json` and `results.svg` in the output
//!    directory ([`report`]).
//!
//! The parsing and statistics ([`parse`], [`workload`]) and the output
//! formats ([`report`]) are pure and unit-tested; this module runs QEMU.

pub mod breakdown;
pub mod disk;
pub mod net;
pub mod parse;
pub mod report;
pub mod workload;

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::{Board, Config, CpuModel, Gic, VmFlags, default_cpu};
use crate::hypervisor::HypervisorSource;
use crate::linux::{LinuxGuest, default_cache_dir, prepare_debian};
use crate::qemu::find_qemu;
use crate::run::{RunOptions, run};
use crate::{Error, ErrorKind, Result, make_image, workspace_root};
use stratum_abi::workload::ROUNDS_WORD;

use parse::{GuestOutput, Stats, kernel_timestamp, parse_guest};
use report::{LinuxBoot, Measured, Method, OPERATIONS, Report, Row};
use workload::{LinuxWorkload, parse_workload};

/// The guests' target.
const GUEST_TARGET: &str = "aarch64-unknown-none";
/// The counter frequency of QEMU `virt` (`CNTFRQ_EL0`): with `shift=4` one
/// tick is 16 ns, one instruction.
pub const COUNTER_HZ: u64 = 62_500_000;
/// The kernel log line that marks userspace.
pub const LINUX_USERSPACE: &str = "Run /init as init process";
/// The Linux command line of both boots (the init reports and powers off).
pub const LINUX_CMDLINE: &str = "console=ttyAMA0 stratum.test=poweroff";
/// The Linux command line of both workload runs: the init runs the
/// workload program and powers off. The two kernels have different random
/// seeds (Stratum's `rng-seed` and QEMU's, [`DtbSeeds`]); so that the seeds
/// change no address the tests run on, `nokaslr` keeps the kernel where it
/// is loaded (Stratum gives no `kaslr-seed`, QEMU does) and `norandmaps`
/// lays out every process the same way (stack, mmap base, brk).
pub const WORKLOAD_CMDLINE: &str = "console=ttyAMA0 stratum.test=workload nokaslr norandmaps";
/// Memory of the Linux VM (and of the bare-QEMU machine).
pub const LINUX_MEMORY: &str = "512M";
/// Why there is no stage-2 first-touch fault to measure.
pub const STAGE2_NA: &str = "Stratum maps all guest memory up front with \
     2 MiB/1 GiB blocks: a guest never takes a stage-2 fault on RAM";

/// What `stratum bench` does.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The bench guest's ELF; `None`: build it with cargo.
    pub guest: Option<PathBuf>,
    /// A prebuilt hypervisor (else `$STRATUM_HYPERVISOR` or a build).
    pub hypervisor: Option<PathBuf>,
    /// A prebuilt trace build of it, for the network case's EL2 time (else
    /// `$STRATUM_HYPERVISOR_TRACE` or a build).
    pub hypervisor_trace: Option<PathBuf>,
    /// Timed iterations per operation (the guest keeps at most 2000).
    pub iterations: u32,
    /// Measure Linux boot too.
    pub linux: bool,
    /// Measure the VM ↔ VM network case too (two Debian VMs; only with
    /// `linux`).
    pub net: bool,
    /// Measure the disk case too (a Debian frontend and the service VM;
    /// only with `linux`).
    pub disk: bool,
    /// Trace the bench guest for where each row's instructions go.
    pub breakdown: bool,
    /// Where `results.json` and `results.svg` go.
    pub out_dir: PathBuf,
    /// The board Stratum runs on. The bare-QEMU reference runs on `virt`
    /// with the same CPU model and GIC (the bench guest is a `virt` guest).
    pub board: Board,
    /// GIC version of the emulated host.
    pub gic: Gic,
    /// Per-QEMU-run timeout.
    pub timeout: Duration,
    /// Print each run's console as it goes (else only progress lines).
    pub verbose: bool,
}

impl BenchOptions {
    /// The defaults: build the guest, 1000 iterations, Linux and the
    /// breakdown on,
    /// `<target>/bench`, GICv3, 300 s per run.
    pub fn new() -> Self {
        Self {
            guest: None,
            hypervisor: None,
            hypervisor_trace: None,
            iterations: 1000,
            linux: true,
            net: true,
            disk: true,
            breakdown: true,
            out_dir: target_dir().join("bench"),
            board: Board::Virt,
            gic: Gic::V3,
            timeout: Duration::from_secs(300),
            verbose: false,
        }
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// `CARGO_TARGET_DIR` or `<workspace>/target`.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Builds the bench guest with cargo (release) and returns its ELF.
pub fn build_guest() -> Result<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let args = [
        "build",
        "--release",
        "-p",
        "stratum-guests",
        "--bin",
        "bench",
        "--target",
        GUEST_TARGET,
    ];
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| Error::environment(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(Error::environment(format!(
            "`cargo {}` failed ({status})",
            args.join(" ")
        )));
    }
    Ok(target_dir()
        .join(GUEST_TARGET)
        .join("release")
        .join("bench"))
}

/// Whether a bare-QEMU guest gets seeds in its device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbSeeds {
    /// `dtb-randomness=off`: no `/chosen/rng-seed`, no `kaslr-seed`.
    None,
    /// `dtb-randomness=on`: QEMU writes both, drawn from `-seed 1`, so they
    /// are the same every run. A Linux guest then starts with its random
    /// number generator ready, as under Stratum, which gives every VM an
    /// `rng-seed`; without one, each random number the kernel draws (a
    /// syscall's stack offset, a new task's stack canary) takes the slow
    /// not-yet-seeded path, ~9,000 instructions per `getppid`.
    Seeded,
}

/// The real-time clock of a bare run: `virt`'s PL031 starts at this date
/// and follows the virtual clock. (By default it reads the host's time, and a
/// Linux guest that prints it and keeps time from it runs a different
/// number of instructions every run. Under Stratum a VM has no RTC.)
pub const BARE_RTC: &str = "base=2025-01-01T00:00:00,clock=vm";

/// The QEMU command line of a bare run: the same `virt` machine as under
/// Stratum but without EL2 (`virtualization` off), so the kernel boots at
/// EL1 and PSCI calls are QEMU's own; deterministic ([`BARE_RTC`] too).
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per QEMU option; a struct would only rename them"
)]
pub fn bare_qemu_command(
    qemu: &Path,
    gic: Gic,
    cpu: CpuModel,
    cpus: u32,
    memory: &str,
    kernel: &Path,
    initrd: Option<&Path>,
    append: &str,
    seeds: DtbSeeds,
) -> Vec<OsString> {
    let randomness = match seeds {
        DtbSeeds::None => "off",
        DtbSeeds::Seeded => "on",
    };
    let mut args: Vec<OsString> = vec![qemu.into()];
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&[
        "-M",
        &format!(
            "virt,gic-version={},dtb-randomness={randomness}",
            gic.number()
        ),
        "-cpu",
        cpu.qemu_name(),
        "-smp",
        &cpus.to_string(),
        "-m",
        memory,
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-nic",
        "none",
        "-icount",
        "shift=4,sleep=off",
        "-seed",
        "1",
        "-rtc",
        BARE_RTC,
        "-append",
        append,
        "-kernel",
    ]);
    args.push(kernel.into());
    if let Some(initrd) = initrd {
        args.push("-initrd".into());
        args.push(initrd.into());
    }
    args
}

/// Runs `argv` with stdin closed, returns its stdout and whether it
/// exited successfully; killed after `timeout` ([`disk::wall::capture`],
/// without the lines' stamps).
fn capture(argv: &[OsString], timeout: Duration, verbose: bool) -> Result<(String, bool)> {
    disk::wall::capture(argv, timeout, verbose).map(|(text, ok, _)| (text, ok))
}

/// Runs `config` under Stratum, deterministic, and returns the console.
fn under_stratum(config: Config, opts: &BenchOptions) -> Result<String> {
    under_stratum_with(config, opts, None)
}

/// [`under_stratum`] with `hypervisor` instead of the options' one when
/// given.
pub(super) fn under_stratum_with(
    config: Config,
    opts: &BenchOptions,
    hypervisor: Option<&Path>,
) -> Result<String> {
    let run_opts = RunOptions {
        hypervisor: hypervisor
            .map(Path::to_path_buf)
            .or_else(|| opts.hypervisor.clone()),
        deterministic: true,
        timeout: Some(opts.timeout),
        capture: true,
        echo: opts.verbose,
        ..RunOptions::new(config)
    };
    let outcome = run(&run_opts)?;
    let console = outcome.console.unwrap_or_default();
    if outcome.exit_code != crate::exit_code::SUCCESS {
        return Err(Error::new(
            ErrorKind::Hypervisor,
            anyhow::anyhow!(
                "the run under Stratum ended badly: {}\n{}",
                outcome.verdict.describe(),
                tail(&console)
            ),
        ));
    }
    Ok(console)
}

/// The last lines of a console, for error messages.
pub(super) fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The bench guest's VM with `cpus` vCPUs under Stratum on `board`.
fn guest_config(
    guest: &Path,
    cpus: u32,
    iterations: u32,
    board: Board,
    gic: Gic,
) -> Result<Config> {
    let mut config = Config::from_flags(&VmFlags {
        kernel: guest.to_path_buf(),
        initrd: None,
        append: Some(format!("bench.iterations={iterations}")),
        cpus: Some(cpus),
        memory: None,
        debian: false,
        exec: None,
        disks: Vec::new(),
    })?;
    config.override_machine(Some(board), Some(gic), Some(default_cpu(board)))?;
    Ok(config)
}

fn parsed(console: &str, what: &str) -> Result<GuestOutput> {
    parse_guest(console).map_err(|e| {
        Error::new(
            ErrorKind::Hypervisor,
            anyhow::anyhow!("{what}: {e}\n{}", tail(console)),
        )
    })
}

/// The bench-guest runs: Stratum and bare QEMU, one and two CPUs, and the
/// two-VM run (or why it could not be made).
struct GuestRuns {
    stratum: [GuestOutput; 2],
    bare: [GuestOutput; 2],
    vm_switch: std::result::Result<GuestOutput, String>,
}

/// The system of the VM-switch case: the bench guest as `ping` and `pong`,
/// time-sharing physical CPU 0, with a 4 KiB channel between them.
pub fn vm_switch_config(guest: &Path, iterations: u32, board: Board, gic: Gic) -> String {
    let kernel = guest
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let vm = |role: &str| {
        format!(
            "[[vm]]\nname = \"{role}\"\nkernel = \"{kernel}\"\n\
             cmdline = \"bench.iterations={iterations} bench.role={role}\"\n\
             memory = \"64M\"\nplacement = \"shared\"\npcpus = [0]\n\n"
        )
    };
    format!(
        "# Written by stratum bench: the VM-switch case.\n\
         [machine]\nboard = \"{}\"\ncpus = 1\ngic = {}\ncpu = \"{}\"\n\n\
         [system]\nslice = \"10ms\"\nstop = \"all\"\n\n{}{}\
         [[channel]]\nname = \"bench\"\nvms = [\"ping\", \"pong\"]\nsize = \"4K\"\n",
        board.name(),
        gic.number(),
        default_cpu(board).qemu_name(),
        vm("ping"),
        vm("pong")
    )
}

/// Runs the VM-switch case; `Err` says why it could not be measured.
fn run_vm_switch(
    opts: &BenchOptions,
    guest: &Path,
    scratch: &Path,
) -> std::result::Result<GuestOutput, String> {
    let config = load_vm_switch(guest, opts.iterations, opts.board, opts.gic, scratch)?;
    eprintln!("stratum bench: bench guest as two VMs time-sharing one CPU, under Stratum");
    let console = under_stratum(config, opts).map_err(|e| format!("the run failed: {e}"))?;
    let out = parsed(&console, "VM-switch run").map_err(|e| e.to_string())?;
    out.op("vm_switch")
        .ok_or_else(|| "the guest did not report vm_switch".to_owned())?;
    Ok(out)
}

/// The VM-switch system with `iterations`, written into `scratch` and
/// loaded; `Err` says why it cannot be made.
fn load_vm_switch(
    guest: &Path,
    iterations: u32,
    board: Board,
    gic: Gic,
    scratch: &Path,
) -> std::result::Result<Config, String> {
    let path = scratch.join(format!("vm-switch-{iterations}.toml"));
    // The config lives in the scratch directory: name the guest absolutely.
    let guest = guest
        .canonicalize()
        .map_err(|e| format!("cannot find {}: {e}", guest.display()))?;
    fs::write(&path, vm_switch_config(&guest, iterations, board, gic))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Config::load(&path)
        .map_err(|e| format!("needs two VMs time-sharing a CPU with a channel (issue 5): {e}"))
}

/// Traces the bench guest for the breakdown (unless disabled).
fn run_breakdown(
    opts: &BenchOptions,
    guest: &Path,
    scratch: &Path,
) -> Result<breakdown::Breakdown> {
    if !opts.breakdown {
        return Ok(breakdown::Breakdown::NotMeasured(
            "skipped (--no-breakdown)".to_owned(),
        ));
    }
    // The file named (an ELF or an Image; `run` converts an ELF), else the
    // build's Image, whose ELF is beside it.
    let hypervisor = match HypervisorSource::choose(opts.hypervisor.as_deref(), true) {
        HypervisorSource::File(path) => path,
        build => build.resolve(scratch)?,
    };
    let n = breakdown::TRACE_ITERATIONS;
    breakdown::measure(breakdown::TraceSetup {
        guest,
        hypervisor: &hypervisor,
        configs: [
            guest_config(guest, 1, n, opts.board, opts.gic).map_err(|e| e.to_string()),
            guest_config(guest, 2, n, opts.board, opts.gic).map_err(|e| e.to_string()),
            load_vm_switch(guest, n, opts.board, opts.gic, scratch),
        ],
        scratch,
        timeout: opts.timeout,
        el2_offset: opts
            .board
            .image_load_address()
            .wrapping_sub(stratum_abi::telemetry::HYPERVISOR_LOAD_ADDRESS),
    })
}

fn run_guests(opts: &BenchOptions, guest: &Path, scratch: &Path) -> Result<GuestRuns> {
    let qemu = find_qemu()?;
    let image = scratch.join("bench.img");
    make_image(guest, &image)?;
    let mut stratum = Vec::new();
    let mut bare = Vec::new();
    for cpus in [1, 2] {
        eprintln!("stratum bench: bench guest, {cpus} vCPU(s), under Stratum");
        let config = guest_config(guest, cpus, opts.iterations, opts.board, opts.gic)?;
        let console = under_stratum(config, opts)?;
        stratum.push(parsed(&console, "bench guest under Stratum")?);
        eprintln!("stratum bench: bench guest, {cpus} CPU(s), bare QEMU");
        let argv = bare_qemu_command(
            &qemu,
            opts.gic,
            default_cpu(opts.board),
            cpus,
            "128M",
            &image,
            None,
            &format!("bench.iterations={}", opts.iterations),
            DtbSeeds::None,
        );
        let (console, ok) = capture(&argv, opts.timeout, opts.verbose)?;
        if !ok {
            return Err(Error::new(
                ErrorKind::Hypervisor,
                anyhow::anyhow!("the bare-QEMU bench run failed\n{}", tail(&console)),
            ));
        }
        bare.push(parsed(&console, "bench guest on bare QEMU")?);
    }
    let [s1, s2] = <[GuestOutput; 2]>::try_from(stratum).expect("two runs");
    let [b1, b2] = <[GuestOutput; 2]>::try_from(bare).expect("two runs");
    for (out, hyp) in [
        (&s1, "stratum"),
        (&s2, "stratum"),
        (&b1, "none"),
        (&b2, "none"),
    ] {
        let seen = out.env.get("hypervisor").map_or("?", String::as_str);
        if seen != hyp {
            return Err(Error::new(
                ErrorKind::Hypervisor,
                anyhow::anyhow!("the bench guest saw hypervisor={seen}, expected {hyp}"),
            ));
        }
    }
    same_id_register(&s1, &b1)?;
    let vm_switch = run_vm_switch(opts, guest, scratch);
    if let Err(why) = &vm_switch {
        eprintln!("stratum bench: VM switch not measured: {why}");
    }
    Ok(GuestRuns {
        stratum: [s1, s2],
        bare: [b1, b2],
        vm_switch,
    })
}

/// Checks that the guest read the same `ID_AA64MMFR0_EL1` under Stratum
/// (trapped by TID3 and emulated) as on bare QEMU (the CPU's own value).
fn same_id_register(stratum: &GuestOutput, bare: &GuestOutput) -> Result<()> {
    let (s, b) = (stratum.env.get("mmfr0"), bare.env.get("mmfr0"));
    if s.is_none() || s != b {
        return Err(Error::new(
            ErrorKind::Hypervisor,
            anyhow::anyhow!(
                "ID_AA64MMFR0_EL1 under Stratum ({}) differs from bare QEMU ({})",
                s.map_or("missing", String::as_str),
                b.map_or("missing", String::as_str)
            ),
        ));
    }
    Ok(())
}

/// Instructions to `Run /init` in a console, from the kernel's timestamp.
fn instructions_to_userspace(console: &str, what: &str) -> Result<u64> {
    let secs = kernel_timestamp(console, LINUX_USERSPACE).ok_or_else(|| {
        Error::new(
            ErrorKind::Hypervisor,
            anyhow::anyhow!("{what}: no `{LINUX_USERSPACE}` line\n{}", tail(console)),
        )
    })?;
    Ok((secs * COUNTER_HZ as f64).round() as u64)
}

fn linux_boot(opts: &BenchOptions, guest: &LinuxGuest) -> Result<LinuxBoot> {
    eprintln!(
        "stratum bench: Linux {} to userspace, under Stratum",
        guest.kernel_version
    );
    let console = under_stratum(linux_config(guest, LINUX_CMDLINE, opts.gic)?, opts)?;
    let stratum = instructions_to_userspace(&console, "Linux under Stratum")?;
    eprintln!(
        "stratum bench: Linux {} to userspace, bare QEMU",
        guest.kernel_version
    );
    let argv = bare_qemu_command(
        &find_qemu()?,
        opts.gic,
        CpuModel::CortexA57,
        1,
        LINUX_MEMORY,
        &guest.kernel,
        Some(&guest.initramfs),
        LINUX_CMDLINE,
        DtbSeeds::None,
    );
    let (console, _) = capture(&argv, opts.timeout, opts.verbose)?;
    let bare = instructions_to_userspace(&console, "Linux on bare QEMU")?;
    Ok(LinuxBoot::Measured {
        kernel: guest.kernel_version.clone(),
        stratum,
        bare,
    })
}

/// The Debian guest with one vCPU and `cmdline` under Stratum.
fn linux_config(guest: &LinuxGuest, cmdline: &str, gic: Gic) -> Result<Config> {
    let mut config = Config::from_flags(&VmFlags {
        kernel: guest.kernel.clone(),
        initrd: Some(guest.initramfs.clone()),
        append: Some(cmdline.to_owned()),
        cpus: Some(1),
        memory: Some(LINUX_MEMORY.to_owned()),
        debian: false,
        exec: None,
        disks: Vec::new(),
    })?;
    config.override_machine(None, Some(gic), Some(CpuModel::CortexA57))?;
    Ok(config)
}

fn parsed_workload(console: &str, what: &str) -> Result<workload::WorkloadOutput> {
    parse_workload(console).map_err(|e| {
        Error::new(
            ErrorKind::Hypervisor,
            anyhow::anyhow!("{what}: {e}\n{}", tail(console)),
        )
    })
}

/// The workload program in the Debian guest, under Stratum and on bare QEMU
/// (with the same entropy at boot: [`DtbSeeds::Seeded`]).
fn linux_workload(opts: &BenchOptions, guest: &LinuxGuest) -> Result<LinuxWorkload> {
    eprintln!(
        "stratum bench: Linux {} workload, under Stratum",
        guest.kernel_version
    );
    let cmdline = format!("{WORKLOAD_CMDLINE} {ROUNDS_WORD}{}", workload::ROUNDS);
    let console = under_stratum(linux_config(guest, &cmdline, opts.gic)?, opts)?;
    let stratum = parsed_workload(&console, "the workload under Stratum")?;
    let exits = workload::exit_totals(&console);
    eprintln!(
        "stratum bench: Linux {} workload, bare QEMU",
        guest.kernel_version
    );
    let argv = bare_qemu_command(
        &find_qemu()?,
        opts.gic,
        CpuModel::CortexA57,
        1,
        LINUX_MEMORY,
        &guest.kernel,
        Some(&guest.initramfs),
        &cmdline,
        DtbSeeds::Seeded,
    );
    let (console, _) = capture(&argv, opts.timeout, opts.verbose)?;
    let bare = parsed_workload(&console, "the workload on bare QEMU")?;
    LinuxWorkload::from_runs(
        guest.kernel_version.clone(),
        cmdline,
        &stratum,
        &bare,
        exits,
    )
    .map_err(|e| Error::new(ErrorKind::Hypervisor, anyhow::anyhow!("{e}")))
}

fn qemu_version() -> String {
    find_qemu()
        .ok()
        .and_then(|q| Command::new(q).arg("-version").output().ok())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Builds the report from the four guest runs and the Linux results.
fn assemble(
    runs: &GuestRuns,
    linux: LinuxBoot,
    workload: LinuxWorkload,
    opts: &BenchOptions,
) -> Result<Report> {
    let env_num = |key: &str| -> u64 {
        runs.stratum[0]
            .env
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut rows = Vec::new();
    for op in OPERATIONS {
        let measured = match op.id {
            "vm_switch" => match &runs.vm_switch {
                Ok(out) => Measured::Both {
                    stratum: out
                        .op("vm_switch")
                        .expect("run_vm_switch checked it is there")
                        .stats,
                    bare: None,
                },
                Err(why) => Measured::NotApplicable(why.clone()),
            },
            "stage2_fault" => Measured::NotApplicable(STAGE2_NA.to_owned()),
            id => {
                // The IPI comes from the two-CPU runs, the rest from one CPU.
                let k = usize::from(id == "ipi");
                let stratum: Stats = runs.stratum[k]
                    .op(id)
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Hypervisor,
                            anyhow::anyhow!("the bench guest under Stratum did not report {id}"),
                        )
                    })?
                    .stats;
                let bare = runs.bare[k].op(id).map(|o| o.stats);
                Measured::Both { stratum, bare }
            }
        };
        rows.push(Row { op, measured });
    }
    Ok(Report {
        method: Method {
            qemu: qemu_version(),
            board: opts.board.name().to_owned(),
            gic: u32::from(opts.gic.number()),
            cpu: default_cpu(opts.board).qemu_name().to_owned(),
            iterations: env_num("iterations"),
            warmup: env_num("warmup"),
            counter_hz: env_num("freq"),
        },
        rows,
        linux,
        workload,
        net: net::NetBench::NotMeasured("not run".to_owned()),
        disk: disk::DiskBench::NotMeasured("not run".to_owned()),
        breakdown: breakdown::Breakdown::NotMeasured("not traced".to_owned()),
    })
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs the whole bench, prints the table, writes `results.json` and
/// `results.svg` into `opts.out_dir`, and returns the report.
pub fn run_bench(opts: &BenchOptions) -> Result<Report> {
    let guest = match &opts.guest {
        Some(g) => g.clone(),
        None => build_guest()?,
    };
    let scratch = Scratch(env::temp_dir().join(format!("stratum-bench-{}", std::process::id())));
    fs::create_dir_all(&scratch.0)
        .map_err(|e| Error::environment(format!("cannot create {}: {e}", scratch.0.display())))?;
    let runs = run_guests(opts, &guest, &scratch.0)?;
    // Off `virt`, the bare-QEMU reference of Linux would need the board's
    // own console and DT.
    let off_virt = (opts.board != Board::Virt)
        .then(|| format!("measured on virt only (this run: {})", opts.board.name()));
    let (linux, workload, network, disks) = if let Some(why) = &off_virt {
        (
            LinuxBoot::NotMeasured(why.clone()),
            LinuxWorkload::NotMeasured(why.clone()),
            net::NetBench::NotMeasured(why.clone()),
            disk::DiskBench::NotMeasured(why.clone()),
        )
    } else if opts.linux {
        let guest = prepare_debian(&default_cache_dir()?, true)?;
        let boot = linux_boot(opts, &guest)?;
        let workload = linux_workload(opts, &guest)?;
        let network = if opts.net {
            net::run(opts, &guest, &scratch.0)?
        } else {
            net::NetBench::NotMeasured("skipped (--no-net)".to_owned())
        };
        let disks = if opts.disk {
            disk::run(opts, &scratch.0)?
        } else {
            disk::DiskBench::NotMeasured("skipped (--no-disk)".to_owned())
        };
        (boot, workload, network, disks)
    } else {
        let why = "skipped (--no-linux)";
        (
            LinuxBoot::NotMeasured(why.to_owned()),
            LinuxWorkload::NotMeasured(why.to_owned()),
            net::NetBench::NotMeasured(why.to_owned()),
            disk::DiskBench::NotMeasured(why.to_owned()),
        )
    };
    let mut report = assemble(&runs, linux, workload, opts)?;
    report.net = network;
    report.disk = disks;
    report.breakdown = run_breakdown(opts, &guest, &scratch.0)?;
    print!("{}", report::table(&report));
    fs::create_dir_all(&opts.out_dir).map_err(|e| {
        Error::environment(format!("cannot create {}: {e}", opts.out_dir.display()))
    })?;
    for (name, text) in [
        ("results.json", report::json(&report)),
        ("results.svg", report::svg(&report)),
    ] {
        let path = opts.out_dir.join(name);
        fs::write(&path, text)
            .map_err(|e| Error::environment(format!("cannot write {}: {e}", path.display())))?;
        println!("stratum bench: wrote {}", path.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_command_is_deterministic_el1_virt() {
        let argv = bare_qemu_command(
            Path::new("qemu-system-aarch64"),
            Gic::V2,
            CpuModel::CortexA57,
            2,
            "512M",
            Path::new("/k/Image"),
            Some(Path::new("/k/initrd")),
            "console=ttyAMA0 x=1",
            DtbSeeds::None,
        );
        let line: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = line.join(" ");
        assert_eq!(
            line,
            "qemu-system-aarch64 -M virt,gic-version=2,dtb-randomness=off -cpu cortex-a57 \
             -smp 2 -m 512M -display none -monitor none -serial stdio -nic none \
             -icount shift=4,sleep=off -seed 1 -rtc base=2025-01-01T00:00:00,clock=vm \
             -append console=ttyAMA0 x=1 \
             -kernel /k/Image -initrd /k/initrd"
        );
        assert!(!line.contains("virtualization=on"), "bare QEMU runs at EL1");
        let seeded = bare_qemu_command(
            Path::new("qemu-system-aarch64"),
            Gic::V3,
            CpuModel::CortexA57,
            1,
            "512M",
            Path::new("/k/Image"),
            None,
            WORKLOAD_CMDLINE,
            DtbSeeds::Seeded,
        );
        let seeded: Vec<String> = seeded
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(seeded[2], "virt,gic-version=3,dtb-randomness=on");
        assert!(
            seeded.join(" ").contains("-seed 1"),
            "seeds from a fixed seed"
        );
    }

    #[test]
    fn the_vm_switch_system_is_a_valid_config() {
        let dir = crate::testutil::TestDir::new("bench-vm-switch");
        let guest = dir.write("bench", b"not checked by the parser");
        let text = vm_switch_config(&guest, 20, Board::Virt, Gic::V2);
        assert!(text.contains("bench.iterations=20 bench.role=ping"));
        assert!(text.contains("bench.iterations=20 bench.role=pong"));
        assert!(text.contains("gic = 2"));
        assert_eq!(
            text.matches("placement = \"shared\"\npcpus = [0]").count(),
            2
        );
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed["vm"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            parsed["channel"][0]["vms"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            parsed["vm"][0]["kernel"].as_str(),
            guest.to_str(),
            "the path survives quoting"
        );
    }

    #[test]
    fn userspace_instructions_from_the_kernel_clock() {
        let log = "[   13.100272] Run /init as init process\n";
        assert_eq!(
            instructions_to_userspace(log, "test").expect("found"),
            818_767_000
        );
        assert!(instructions_to_userspace("no init here", "test").is_err());
    }

    fn output(ops: &[(&str, u64)]) -> GuestOutput {
        let mut text =
            String::from("BENCH-ENV hypervisor=stratum iterations=3 warmup=1 freq=62500000\n");
        for (op, v) in ops {
            text += &format!("BENCH op={op} n=3 min={v} median={v} p99={v} max={v} hist={v}:3\n");
        }
        text += "BENCH-DONE\n";
        parse_guest(&text).expect("valid")
    }

    #[test]
    fn the_emulated_id_register_must_match_the_hardware() {
        let with = |v: &str| {
            parse_guest(&format!("BENCH-ENV hypervisor=x mmfr0={v}\nBENCH-DONE\n")).expect("valid")
        };
        assert!(same_id_register(&with("0x1124"), &with("0x1124")).is_ok());
        assert!(same_id_register(&with("0x1124"), &with("0x1125")).is_err());
        let none = parse_guest("BENCH-ENV hypervisor=x\nBENCH-DONE\n").expect("valid");
        assert!(same_id_register(&none, &none).is_err());
    }

    #[test]
    fn assembles_rows_from_the_right_runs() {
        let single = [
            ("empty", 2),
            ("hvc", 90),
            ("gicd_read", 170),
            ("uart_read", 190),
            ("idreg_read", 140),
            ("vtimer_spin", 300),
            ("vtimer_wfi", 400),
        ];
        let runs = GuestRuns {
            stratum: [output(&single), output(&[("ipi", 900)])],
            bare: [output(&[("hvc", 3)]), output(&[("ipi", 40)])],
            vm_switch: Err("needs channels".into()),
        };
        let r = assemble(
            &runs,
            LinuxBoot::NotMeasured("x".into()),
            LinuxWorkload::NotMeasured("x".into()),
            &BenchOptions::new(),
        )
        .expect("complete");
        assert_eq!(r.rows.len(), OPERATIONS.len());
        assert_eq!(r.method.iterations, 3);
        let row = |id: &str| r.rows.iter().find(|row| row.op.id == id).expect("row");
        match &row("ipi").measured {
            Measured::Both { stratum, bare } => {
                assert_eq!(stratum.median, 900);
                assert_eq!(bare.map(|b| b.median), Some(40));
            }
            other => panic!("{other:?}"),
        }
        match &row("gicd_read").measured {
            Measured::Both { bare, .. } => assert_eq!(*bare, None),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            row("vm_switch").measured,
            Measured::NotApplicable(_)
        ));
        assert!(matches!(
            row("stage2_fault").measured,
            Measured::NotApplicable(_)
        ));
        // A missing operation under Stratum is an error, not a blank.
        let runs = GuestRuns {
            stratum: [output(&single), output(&[("ipi", 900)])],
            bare: [output(&[]), output(&[])],
            vm_switch: Ok(output(&[("vm_switch", 16000)])),
        };
        let r = assemble(
            &runs,
            LinuxBoot::NotMeasured("x".into()),
            LinuxWorkload::NotMeasured("x".into()),
            &BenchOptions::new(),
        )
        .expect("complete");
        let row = |id: &str| r.rows.iter().find(|row| row.op.id == id).expect("row");
        match &row("vm_switch").measured {
            Measured::Both { stratum, bare } => {
                assert_eq!((stratum.median, *bare), (16000, None));
            }
            other => panic!("{other:?}"),
        }
        let runs = GuestRuns {
            stratum: [output(&single[..3]), output(&[("ipi", 900)])],
            bare: [output(&[]), output(&[])],
            vm_switch: Err("x".into()),
        };
        assert!(
            assemble(
                &runs,
                LinuxBoot::NotMeasured("x".into()),
                LinuxWorkload::NotMeasured("x".into()),
                &BenchOptions::new()
            )
            .is_err()
        );
    }
}
