//! The disk rows of `stratum bench`: a Debian frontend with one disk
//! served by the service VM (issue 12, ADR 0020), beside the same kernel on
//! bare QEMU given QEMU's own virtio-blk on the same image.
//!
//! In both, `stratum-workload` (`workload.disk=/dev/vda` on the command
//! line, [`crate::linux::workload`]) runs three tests with `O_DIRECT`, one
//! request at a time: sequential writes and reads of 1 MiB, and random
//! 4 KiB reads in a fixed order. Each machine runs twice:
//!
//! - **timed** ([`SEQ_MIB`], [`RAND_READS`]): the host notes when each
//!   test's lines arrive ([`wall`]), which gives wall-clock throughput: a
//!   request QEMU performs on the host's file takes host time the guest's
//!   instruction clock does not see (under `-icount` an idle machine's
//!   clock jumps to its next timer), so the deterministic clock cannot
//!   time a disk;
//! - **traced** ([`TRACE_SEQ_MIB`], [`TRACE_RAND_READS`]): QEMU's log of
//!   every instruction from the first test's window on ([`trace`]), which
//!   counts each test's instructions by CPU and exception level: the
//!   frontend's own (CPU 0), the hypervisor's (EL2, either CPU) and the
//!   service VM's (CPU 1), and the exits. Under `-icount` the count of a
//!   window is exact; it is not bit-for-bit repeatable, since when QEMU's
//!   host-side I/O completes moves where interrupts and idle periods fall.
//!
//! The system under Stratum is what `stratum run --debian --disk` makes:
//! the frontend pinned on CPU 0, the service VM alone on CPU 1
//! ([`config_text`]).
//!
//! Parsing and arithmetic are pure and unit-tested; [`run`] runs QEMU.

pub mod trace;
pub mod wall;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use stratum_abi::workload::{
    DISK_BLOCK, DISK_DONE, DISK_ENV_PREFIX, DISK_MARK_BEGIN_KEY, DISK_MARK_END_KEY, DISK_PREFIX,
    DISK_TESTS, DiskSample, FAIL_PREFIX, Test,
};

use super::report::{align, json_str};
use super::{BenchOptions, DtbSeeds, WORKLOAD_CMDLINE, bare_qemu_command};
use crate::config::{Config, CpuModel, Gic};
use crate::hypervisor::HypervisorSource;
use crate::linux::LinuxGuest;
use crate::qemu::find_qemu;
use crate::run::{RunOptions, run as run_system};
use crate::{Error, ErrorKind, Result};

use trace::{Counted, DiskTracker, Machine};

/// MiB of each sequential test in the timed runs.
pub const SEQ_MIB: u64 = 32;
/// 4 KiB reads of the random test in the timed runs.
pub const RAND_READS: u64 = 2048;
/// MiB of each sequential test in the traced runs (the log runs at a few
/// million instructions a second).
pub const TRACE_SEQ_MIB: u64 = 4;
/// 4 KiB reads of the random test in the traced runs.
pub const TRACE_RAND_READS: u64 = 128;
/// Rounds of the tests in the traced runs: the first warms up (the
/// buffer's first touch, code run for the first time), the last is
/// reported, and the ones between show how far a count moves from round
/// to round ([`Traced::spread`]).
pub const TRACE_ROUNDS: u64 = 3;
/// The disk image, in MiB.
pub const IMAGE_MIB: u64 = 64;
/// Memory of the frontend (and of the bare-QEMU machine).
pub const FRONTEND_MEMORY: &str = "512M";
/// Memory of the service VM (what `stratum run` gives the one it adds).
pub const SERVICE_MEMORY: &str = "256M";
/// The target: sequential wall-clock throughput under Stratum at least
/// this share of bare QEMU's.
pub const SEQ_RATIO_TARGET: f64 = 0.5;
/// The target: instructions a request costs under Stratum beyond what it
/// costs on bare QEMU, at most.
pub const REQUEST_TARGET: f64 = 20_000.0;
/// Copies of each byte between the frontend's buffer and the service VM's
/// block device, by design, for a placed request (ADR 0024): the
/// hypervisor's, between the frontend's buffers and the daemon's
/// registered buffers, which `O_DIRECT` hands to the device. (An inline
/// request, when the daemon registered nothing or the request is larger
/// than a place, takes two: into the service VM's vsock buffers, and its
/// socket `read`/`write`.) Not counted by the bench.
pub const COPIES_BY_DESIGN: u32 = 1;
/// The target for the copies, at most.
pub const COPIES_TARGET: u32 = 2;

/// The frontend's command line, on both machines: the workload's, with
/// the disk tests' words.
pub fn cmdline(mib: u64, reads: u64, rounds: u64) -> String {
    format!(
        "{WORKLOAD_CMDLINE} workload.disk=/dev/vda workload.disk_mib={mib} \
         workload.disk_reads={reads} workload.disk_rounds={rounds}"
    )
}

/// `text` as a TOML basic string.
fn toml_str(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The system under Stratum: the frontend (the Debian kernel and
/// initramfs, `cmdline`, one vCPU, [`FRONTEND_MEMORY`]) pinned on CPU 0
/// with `image` as its disk, and the service VM as `stratum run` adds it
/// (Debian, one vCPU, [`SERVICE_MEMORY`], identity-mapped), alone on CPU 1.
pub fn config_text(guest: &LinuxGuest, image: &Path, gic: Gic, cmdline: &str) -> String {
    format!(
        "# Written by stratum bench: the disk case.\n\
         [machine]\ncpus = 2\ngic = {}\ncpu = \"cortex-a57\"\n\n\
         [system]\nstop = \"any\"\n\n\
         [[vm]]\nname = \"frontend\"\nkernel = {}\ninitrd = {}\ncmdline = {}\n\
         cpus = 1\nmemory = \"{FRONTEND_MEMORY}\"\npcpus = [0]\n\n\
         [[vm.disk]]\nimage = {}\n\n\
         [[vm]]\nname = \"service\"\ndebian = true\ncmdline = \"quiet\"\ncpus = 1\n\
         memory = \"{SERVICE_MEMORY}\"\nidentity = true\nplacement = \"shared\"\npcpus = [1]\n\
         role = \"service\"\n",
        gic.number(),
        toml_str(&guest.kernel.display().to_string()),
        toml_str(&guest.initramfs.display().to_string()),
        toml_str(cmdline),
        toml_str(&image.display().to_string()),
    )
}

/// The bare-QEMU command line: the frontend's kernel, initramfs and
/// command line at EL1 on `virt` (seeded as the workload's bare run is,
/// [`DtbSeeds::Seeded`]), with `image` on QEMU's own virtio-blk, opened
/// as `stratum run` opens a disk for the service VM.
pub fn bare_argv(
    qemu: &Path,
    gic: Gic,
    guest: &LinuxGuest,
    image: &Path,
    cmdline: &str,
) -> Vec<OsString> {
    let mut argv = bare_qemu_command(
        qemu,
        gic,
        CpuModel::CortexA57,
        1,
        FRONTEND_MEMORY,
        &guest.kernel,
        Some(&guest.initramfs),
        cmdline,
        DtbSeeds::Seeded,
    );
    let mut drive = OsString::from("file=");
    drive.push(image);
    drive.push(",if=none,format=raw,id=stratum-disk0,cache=writeback");
    argv.extend([
        "-drive".into(),
        drive,
        "-device".into(),
        "virtio-blk-device,drive=stratum-disk0".into(),
    ]);
    argv
}

/// Writes the disk image: [`IMAGE_MIB`] MiB, block *n* (4 KiB) starting
/// with *n* as a little-endian `u64` (what the program checks), the rest
/// of each block `0xa5` (so the file holds data, not holes).
pub fn write_image(path: &Path) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(fs::File::create(path)?);
        const MIB: u64 = 1 << 20;
        let mut chunk = vec![0xa5u8; MIB as usize];
        let per_chunk = MIB / DISK_BLOCK;
        for mib in 0..IMAGE_MIB {
            for (i, block) in chunk.chunks_mut(DISK_BLOCK as usize).enumerate() {
                let n = mib * per_chunk + i as u64;
                block[..8].copy_from_slice(&n.to_le_bytes());
            }
            file.write_all(&chunk)?;
        }
        file.flush()
    };
    write().map_err(|e| Error::environment(format!("cannot write {}: {e}", path.display())))
}

/// One test's figures as the program printed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Requests.
    pub ops: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Counter ticks of the window (instructions, and idle time skipped).
    pub ticks: u64,
    /// Nanoseconds the frontend's CPU idled in the window.
    pub idle_ns: u64,
    /// Requests the frontend's driver completed (a request the device
    /// takes in pieces counts each).
    pub dev_ios: u64,
    /// Interrupts the frontend took.
    pub irqs: u64,
}

impl From<DiskSample<'_>> for Figures {
    fn from(s: DiskSample<'_>) -> Self {
        Self {
            ops: s.ops,
            bytes: s.bytes,
            ticks: s.ticks,
            idle_ns: s.idle_ns,
            dev_ios: s.dev_ios,
            irqs: s.irqs,
        }
    }
}

/// What one run of the disk tests printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskOutput {
    /// The window marks' addresses.
    pub mark_begin: u64,
    /// See `mark_begin`.
    pub mark_end: u64,
    /// Each window's figures in the order they ran: round after round,
    /// each the tests in [`DISK_TESTS`] order.
    pub windows: Vec<Figures>,
}

impl DiskOutput {
    /// Rounds run.
    pub fn rounds(&self) -> usize {
        self.windows.len() / DISK_TESTS.len()
    }

    /// Test `i`'s figures in the last round.
    pub fn last(&self, i: usize) -> Figures {
        self.windows[self.windows.len() - DISK_TESTS.len() + i]
    }
}

fn hex(word: &str) -> Option<u64> {
    u64::from_str_radix(word.strip_prefix("0x")?, 16).ok()
}

/// Reads a run's console (a VM's tag before the lines allowed): the
/// `DISK-ENV` line, one `DISK` line per test in order for each round,
/// `DISK-DONE`; a `WORKLOAD-FAIL` line is the error.
pub fn parse_output(console: &str) -> std::result::Result<DiskOutput, String> {
    let mut marks = None;
    let mut rounds = 1;
    let mut tests = Vec::new();
    let mut done = false;
    for line in console.lines().map(str::trim_end) {
        if let Some(i) = line.find(FAIL_PREFIX) {
            return Err(line[i..].to_owned());
        } else if let Some(i) = line.find(DISK_ENV_PREFIX) {
            let mut begin = None;
            let mut end = None;
            for word in line[i + DISK_ENV_PREFIX.len()..].split_whitespace() {
                match word.split_once('=') {
                    Some((DISK_MARK_BEGIN_KEY, v)) => begin = hex(v),
                    Some((DISK_MARK_END_KEY, v)) => end = hex(v),
                    Some(("rounds", v)) => {
                        rounds = v
                            .parse::<usize>()
                            .ok()
                            .filter(|&r| r > 0)
                            .ok_or_else(|| format!("`{line}`: rounds={v}?"))?;
                    }
                    _ => {}
                }
            }
            match (begin, end) {
                (Some(b), Some(e)) if b != e => marks = Some((b, e)),
                _ => return Err(format!("`{line}`: no window marks")),
            }
        } else if let Some(i) = line.find(DISK_PREFIX) {
            let sample = DiskSample::parse(&line[i..]).map_err(|e| format!("`{line}`: {e}"))?;
            let want = DISK_TESTS[tests.len() % DISK_TESTS.len()].id;
            if sample.test != want {
                return Err(format!("`{line}`: expected test {want}"));
            }
            tests.push(Figures::from(sample));
        } else if line.ends_with(DISK_DONE) {
            done = true;
        }
    }
    let (mark_begin, mark_end) = marks.ok_or("no DISK-ENV line")?;
    let want = rounds * DISK_TESTS.len();
    if !done || tests.len() != want {
        return Err(format!(
            "{} of {want} windows reported ({rounds} round(s) of {} tests){}",
            tests.len(),
            DISK_TESTS.len(),
            if done { "" } else { ", no DISK-DONE" }
        ));
    }
    Ok(DiskOutput {
        mark_begin,
        mark_end,
        windows: tests,
    })
}

/// One test of a timed run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestRun {
    /// What the program printed.
    pub figures: Figures,
    /// Wall-clock seconds of the window.
    pub wall_s: f64,
}

/// One test of a traced run: its last round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traced {
    /// What the program printed (the traced run's own sizes).
    pub figures: Figures,
    /// The window's instructions.
    pub counted: Counted,
    /// Every round's instructions (this one last), for how much they vary.
    pub rounds: Vec<u64>,
}

/// Instructions and exits per request of a traced window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerRequest {
    /// The frontend's own (CPU 0, guest PCs).
    pub frontend: f64,
    /// The hypervisor's (EL2, both CPUs).
    pub el2: f64,
    /// The service VM's own (CPU 1, guest PCs).
    pub service: f64,
    /// The frontend's exits (CPU 0).
    pub frontend_exits: f64,
    /// The service VM's exits (CPU 1).
    pub service_exits: f64,
}

impl PerRequest {
    /// Every instruction.
    pub fn total(&self) -> f64 {
        self.frontend + self.el2 + self.service
    }
}

impl Traced {
    /// The window per request.
    pub fn per_request(&self) -> PerRequest {
        let n = self.figures.ops.max(1) as f64;
        let c = &self.counted;
        PerRequest {
            frontend: c.guest[0] as f64 / n,
            el2: (c.el2[0] + c.el2[1]) as f64 / n,
            service: c.guest[1] as f64 / n,
            frontend_exits: c.exits[0] as f64 / n,
            service_exits: c.exits[1] as f64 / n,
        }
    }

    /// Bytes per request.
    pub fn bytes_per_request(&self) -> f64 {
        self.figures.bytes as f64 / self.figures.ops.max(1) as f64
    }

    /// How far the rounds after the first (which warms up) lie from the
    /// last, at most, as a fraction of the last's instructions (0 with
    /// fewer than three rounds).
    pub fn spread(&self) -> f64 {
        let last = self.counted.total().max(1) as f64;
        self.rounds
            .iter()
            .skip(1)
            .map(|&r| (r as f64 - last).abs() / last)
            .fold(0.0, f64::max)
    }
}

/// One test's row.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskRow {
    /// The test.
    pub test: &'static Test,
    /// The timed run under Stratum.
    pub stratum: TestRun,
    /// The timed run on bare QEMU.
    pub bare: TestRun,
    /// The traced runs, Stratum's and bare QEMU's, or why there are none.
    pub traced: std::result::Result<(Traced, Traced), String>,
}

impl DiskRow {
    /// Sequential (MiB/s) or random (requests per second).
    pub fn sequential(&self) -> bool {
        self.test.id != "rand_read"
    }

    /// Wall-clock throughput of a timed run: MiB/s for a sequential test,
    /// requests per second for the random one.
    pub fn throughput(&self, run: &TestRun) -> f64 {
        let per_s = |x: f64| x / run.wall_s.max(f64::MIN_POSITIVE);
        if self.sequential() {
            per_s(run.figures.bytes as f64 / (1 << 20) as f64)
        } else {
            per_s(run.figures.ops as f64)
        }
    }

    /// Stratum's throughput over bare QEMU's.
    pub fn ratio(&self) -> f64 {
        self.throughput(&self.stratum) / self.throughput(&self.bare).max(f64::MIN_POSITIVE)
    }

    /// The throughput target met, where there is one (sequential tests).
    pub fn ratio_met(&self) -> Option<bool> {
        self.sequential().then(|| self.ratio() >= SEQ_RATIO_TARGET)
    }

    /// Instructions per request under Stratum beyond bare QEMU's.
    pub fn overhead(&self) -> Option<f64> {
        let (s, b) = self.traced.as_ref().ok()?;
        Some(s.per_request().total() - b.per_request().total())
    }
}

/// The disk part of a report.
#[derive(Clone, Debug, PartialEq)]
pub enum DiskBench {
    /// Measured.
    Measured {
        /// The kernel release.
        kernel: String,
        /// One row per test of [`DISK_TESTS`], in that order.
        rows: Vec<DiskRow>,
    },
    /// Not measured, and why.
    NotMeasured(String),
}

fn hypervisor_error(what: &str, e: impl std::fmt::Display, console: &str) -> Error {
    Error::new(
        ErrorKind::Hypervisor,
        anyhow::anyhow!("{what}: {e}\n{}", super::tail(console)),
    )
}

/// The timed run under Stratum: its output and wall-clock stamps.
fn timed_stratum(
    config: Config,
    hypervisor: &Path,
    opts: &BenchOptions,
    scratch: &Path,
) -> Result<(DiskOutput, wall::Stamps)> {
    let logs = scratch.join("disk-logs");
    let watcher = wall::Watcher::start(logs.join("frontend.log"));
    let outcome = run_system(&RunOptions {
        hypervisor: Some(hypervisor.to_path_buf()),
        deterministic: true,
        timeout: Some(opts.timeout),
        capture: true,
        echo: opts.verbose,
        log_dir: Some(logs),
        ..RunOptions::new(config)
    });
    let stamps = watcher.finish();
    let outcome = outcome?;
    let console = outcome.console.unwrap_or_default();
    if outcome.exit_code != crate::exit_code::SUCCESS {
        return Err(hypervisor_error(
            "the disk run under Stratum ended badly",
            outcome.verdict.describe(),
            &console,
        ));
    }
    let out = parse_output(&console)
        .map_err(|e| hypervisor_error("the disk run under Stratum", e, &console))?;
    Ok((out, stamps))
}

/// Joins a timed run's figures with its wall-clock stamps (one round).
fn timed(out: &DiskOutput, stamps: &wall::Stamps, what: &str) -> Result<Vec<TestRun>> {
    DISK_TESTS
        .iter()
        .enumerate()
        .map(|(i, t)| (t, out.last(i)))
        .map(|(t, figures)| {
            let wall_s = stamps.window_secs(t.id).ok_or_else(|| {
                Error::new(
                    ErrorKind::Hypervisor,
                    anyhow::anyhow!("{what}: the lines of test {} were not seen arrive", t.id),
                )
            })?;
            Ok(TestRun { figures, wall_s })
        })
        .collect()
}

/// The traced runs: every test's window counted under Stratum and on bare
/// QEMU; `Err` says why they could not be.
#[expect(
    clippy::too_many_arguments,
    reason = "the two machines' inputs; a struct would only rename them"
)]
fn traced_runs(
    opts: &BenchOptions,
    guest: &LinuxGuest,
    hypervisor: &Path,
    image: &Path,
    stratum_marks: (u64, u64),
    bare_marks: (u64, u64),
    scratch: &Path,
    qemu: &Path,
) -> std::result::Result<(Vec<Traced>, Vec<Traced>), String> {
    let elf = super::breakdown::hypervisor_elf(hypervisor, scratch).map_err(|e| e.to_string())?;
    let offset = opts
        .board
        .image_load_address()
        .wrapping_sub(stratum_abi::telemetry::HYPERVISOR_LOAD_ADDRESS);
    let el2 = fs::read(&elf)
        .map_err(|e| format!("cannot read {}: {e}", elf.display()))
        .and_then(|b| trace::el2_code(&b, offset).map_err(|e| e.to_string()))?;
    let line = cmdline(TRACE_SEQ_MIB, TRACE_RAND_READS, TRACE_ROUNDS);
    let one = |machine: Machine<'_>,
               el2: std::ops::Range<u64>,
               (begin, end): (u64, u64),
               what: &str|
     -> std::result::Result<Vec<Traced>, String> {
        eprintln!("stratum bench: disk, traced, {what}");
        let tracker = DiskTracker::new(el2, begin, end);
        let (tracker, console) = trace::traced_run(machine, tracker, scratch, opts.timeout)
            .map_err(|e| e.to_string())?;
        let out = parse_output(&console).map_err(|e| format!("{what}: {e}"))?;
        if (out.mark_begin, out.mark_end) != (begin, end) {
            return Err(format!(
                "{what}: the program's marks moved from the timed run's ({begin:#x}, {end:#x}) \
                 to ({:#x}, {:#x})",
                out.mark_begin, out.mark_end
            ));
        }
        if tracker.windows.len() != out.windows.len() {
            return Err(format!(
                "{what}: {} of {} windows found in the instruction log",
                tracker.windows.len(),
                out.windows.len()
            ));
        }
        let n = DISK_TESTS.len();
        let last = tracker.windows.len() - n;
        Ok((0..n)
            .map(|i| Traced {
                figures: out.last(i),
                counted: tracker.windows[last + i],
                rounds: tracker
                    .windows
                    .iter()
                    .skip(i)
                    .step_by(n)
                    .map(Counted::total)
                    .collect(),
            })
            .collect())
    };
    let text = config_text(guest, image, opts.gic, &line);
    let config = Config::parse_with(&text, &scratch.join("disk-traced.toml"), &mut || {
        Ok(guest.clone())
    })
    .map_err(|e| format!("{e:#}"))?;
    let stratum = one(
        Machine::Stratum {
            config: Box::new(config),
            hypervisor,
        },
        el2,
        stratum_marks,
        "under Stratum",
    )?;
    let bare = one(
        Machine::Bare(bare_argv(qemu, opts.gic, guest, image, &line)),
        0..0,
        bare_marks,
        "bare QEMU",
    )?;
    Ok((stratum, bare))
}

/// The Debian guest with a private copy of its initramfs: the cache's is
/// rebuilt by any `stratum` that finds its inputs changed (another tree's
/// programs, a test's), and every run of this case must boot the same
/// one, whose workload program has the disk tests. Prepared (rebuilt if
/// need be) and copied at once.
fn private_guest(scratch: &Path) -> Result<LinuxGuest> {
    let mut guest = crate::linux::prepare_debian(&crate::linux::default_cache_dir()?, true)?;
    let copy = scratch.join("disk-initramfs.cpio");
    fs::copy(&guest.initramfs, &copy).map_err(|e| {
        Error::environment(format!(
            "cannot copy {} to {}: {e}",
            guest.initramfs.display(),
            copy.display()
        ))
    })?;
    guest.initramfs = copy;
    Ok(guest)
}

/// Runs the disk case: the timed runs under Stratum and on bare QEMU, then
/// the traced ones.
pub fn run(opts: &BenchOptions, scratch: &Path) -> Result<DiskBench> {
    // One hypervisor for every run (a build named once, not rebuilt).
    let hypervisor: PathBuf = match HypervisorSource::choose(opts.hypervisor.as_deref(), true) {
        HypervisorSource::File(path) => path,
        build => build.resolve(scratch)?,
    };
    let guest = &private_guest(scratch)?;
    let qemu = find_qemu()?;
    let image = scratch.join("disk.img");
    write_image(&image)?;
    let line = cmdline(SEQ_MIB, RAND_READS, 1);

    eprintln!("stratum bench: disk, under Stratum");
    let text = config_text(guest, &image, opts.gic, &line);
    let config = Config::parse_with(&text, &scratch.join("disk.toml"), &mut || Ok(guest.clone()))?;
    let (s_out, s_stamps) = timed_stratum(config, &hypervisor, opts, scratch)?;
    let stratum = timed(&s_out, &s_stamps, "the disk run under Stratum")?;

    eprintln!("stratum bench: disk, bare QEMU");
    let argv = bare_argv(&qemu, opts.gic, guest, &image, &line);
    let (console, ok, b_stamps) = wall::capture(&argv, opts.timeout, opts.verbose)?;
    if !ok {
        return Err(hypervisor_error(
            "the disk run on bare QEMU",
            "QEMU failed",
            &console,
        ));
    }
    let b_out = parse_output(&console)
        .map_err(|e| hypervisor_error("the disk run on bare QEMU", e, &console))?;
    let bare = timed(&b_out, &b_stamps, "the disk run on bare QEMU")?;

    let traced = traced_runs(
        opts,
        guest,
        &hypervisor,
        &image,
        (s_out.mark_begin, s_out.mark_end),
        (b_out.mark_begin, b_out.mark_end),
        scratch,
        &qemu,
    );
    if let Err(why) = &traced {
        eprintln!("stratum bench: disk, no instruction counts: {why}");
    }
    let rows = DISK_TESTS
        .iter()
        .enumerate()
        .map(|(i, test)| DiskRow {
            test,
            stratum: stratum[i],
            bare: bare[i],
            traced: traced
                .as_ref()
                .map(|(s, b)| (s[i].clone(), b[i].clone()))
                .map_err(Clone::clone),
        })
        .collect();
    Ok(DiskBench::Measured {
        kernel: guest.kernel_version.clone(),
        rows,
    })
}

/// `x` with thousands separators (`12,345`).
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < -0.5 { format!("-{out}") } else { out }
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "NO" }
}

/// The disk part of the terminal table.
pub fn table(disk: &DiskBench) -> String {
    let (kernel, rows) = match disk {
        DiskBench::NotMeasured(why) => return format!("Disk: n/a ({why})\n"),
        DiskBench::Measured { kernel, rows } => (kernel, rows),
    };
    let mut out = format!(
        "Disk ({kernel}; a frontend of 1 vCPU on CPU 0 with a {IMAGE_MIB} MiB image, the service \
         VM on CPU 1; O_DIRECT, one request at a time; bare QEMU: the same kernel with QEMU's \
         virtio-blk on the same image), wall clock:\n"
    );
    let mut lines = vec![
        [
            "test",
            "requests",
            "Stratum",
            "bare QEMU",
            "ratio",
            "target",
            "met",
            "driver requests per request",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for row in rows {
        let unit = |x: f64| {
            if row.sequential() {
                format!("{x:.1} MiB/s")
            } else {
                format!("{} IOPS", grouped(x))
            }
        };
        let per = |r: &TestRun| r.figures.dev_ios as f64 / r.figures.ops.max(1) as f64;
        lines.push(vec![
            row.test.label.to_owned(),
            row.stratum.figures.ops.to_string(),
            unit(row.throughput(&row.stratum)),
            unit(row.throughput(&row.bare)),
            format!("{:.2}×", row.ratio()),
            if row.sequential() {
                format!("≥ {SEQ_RATIO_TARGET:.2}×")
            } else {
                String::new()
            },
            row.ratio_met().map_or("", yes_no).to_owned(),
            format!("{:.1} / {:.1}", per(&row.stratum), per(&row.bare)),
        ]);
    }
    out += &align(&lines);
    let traced: Vec<(&DiskRow, &Traced, &Traced)> = rows
        .iter()
        .filter_map(|r| r.traced.as_ref().ok().map(|(s, b)| (r, s, b)))
        .collect();
    if let Some(why) = rows.iter().find_map(|r| r.traced.as_ref().err()) {
        let _ = writeln!(out, "Disk instructions per request: n/a ({why})");
    } else {
        let _ = writeln!(
            out,
            "Disk instructions per request (QEMU's instruction log over {TRACE_SEQ_MIB} × 1 MiB \
             and {TRACE_RAND_READS} × 4 KiB, the last of {TRACE_ROUNDS} rounds; EL2 on either \
             CPU; overhead = Stratum − bare QEMU):"
        );
        let mut lines = vec![
            [
                "test",
                "frontend",
                "EL2",
                "service VM",
                "Stratum",
                "bare QEMU",
                "overhead",
                "target",
                "met",
                "exits: frontend / service",
                "EL2 per MiB",
                "service VM per MiB",
                "rounds 2–3 differ", // TRACE_ROUNDS = 3
            ]
            .map(String::from)
            .to_vec(),
        ];
        for (row, s, b) in traced {
            let p = s.per_request();
            let overhead = p.total() - b.per_request().total();
            // Per MiB only where the requests move MiBs.
            let per_mib = |x: f64| {
                if row.sequential() {
                    grouped(x * (1 << 20) as f64 / s.bytes_per_request())
                } else {
                    "–".to_owned()
                }
            };
            lines.push(vec![
                row.test.label.to_owned(),
                grouped(p.frontend),
                grouped(p.el2),
                grouped(p.service),
                grouped(p.total()),
                grouped(b.per_request().total()),
                grouped(overhead),
                format!("≤ {}", grouped(REQUEST_TARGET)),
                yes_no(overhead <= REQUEST_TARGET).to_owned(),
                format!("{:.1} / {:.1}", p.frontend_exits, p.service_exits),
                per_mib(p.el2),
                per_mib(p.service),
                format!("{:.1} % / {:.1} %", 100.0 * s.spread(), 100.0 * b.spread()),
            ]);
        }
        out += &align(&lines);
    }
    let _ = writeln!(
        out,
        "Copies of each byte: {COPIES_BY_DESIGN} by design (target ≤ {COPIES_TARGET}): EL2 between \
         the frontend's buffers and the daemon's registered buffers, which O_DIRECT hands to the \
         device (2 for a request sent inline: EL2 into the service VM's vsock buffers, its socket \
         read or write); not counted"
    );
    out
}

fn figures_json(f: &Figures) -> String {
    format!(
        "\"ops\": {}, \"bytes\": {}, \"ticks\": {}, \"idle_ns\": {}, \"driver_requests\": {}, \
         \"irqs\": {}",
        f.ops, f.bytes, f.ticks, f.idle_ns, f.dev_ios, f.irqs
    )
}

fn traced_json(t: &Traced) -> String {
    let c = &t.counted;
    let p = t.per_request();
    format!(
        "{{{}, \"guest\": {:?}, \"el2\": {:?}, \"exits\": {:?}, \"round_totals\": {:?}, \
         \"round_spread\": {:.4}, \"per_request\": \
         {{\"frontend\": {:.1}, \"el2\": {:.1}, \"service_vm\": {:.1}, \"total\": {:.1}, \
         \"frontend_exits\": {:.2}, \"service_exits\": {:.2}}}}}",
        figures_json(&t.figures),
        c.guest,
        c.el2,
        c.exits,
        t.rounds,
        t.spread(),
        p.frontend,
        p.el2,
        p.service,
        p.total(),
        p.frontend_exits,
        p.service_exits
    )
}

/// The disk part of `results.json`.
pub fn json(disk: &DiskBench) -> String {
    let targets = format!(
        "\"seq_ratio_target\": {SEQ_RATIO_TARGET}, \"request_target\": {REQUEST_TARGET}, \
         \"copies_by_design\": {COPIES_BY_DESIGN}, \"copies_target\": {COPIES_TARGET}"
    );
    let (kernel, rows) = match disk {
        DiskBench::NotMeasured(why) => {
            return format!("{{\"not_measured\": {}, {targets}}}", json_str(why));
        }
        DiskBench::Measured { kernel, rows } => (kernel, rows),
    };
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            let run = |t: &TestRun| {
                format!(
                    "{{{}, \"wall_s\": {:.4}, \"throughput\": {:.3}}}",
                    figures_json(&t.figures),
                    t.wall_s,
                    r.throughput(t)
                )
            };
            let traced = match &r.traced {
                Ok((s, b)) => format!(
                    "{{\"stratum\": {}, \"bare_qemu\": {}, \"overhead_per_request\": {:.1}, \
                     \"met\": {}}}",
                    traced_json(s),
                    traced_json(b),
                    r.overhead().unwrap_or(0.0),
                    r.overhead().is_some_and(|o| o <= REQUEST_TARGET)
                ),
                Err(why) => format!("{{\"not_measured\": {}}}", json_str(why)),
            };
            format!(
                "      {{\"test\": {}, \"unit\": {}, \"stratum\": {}, \"bare_qemu\": {}, \
                 \"ratio\": {:.4}, \"ratio_met\": {}, \"traced\": {traced}}}",
                json_str(r.test.id),
                json_str(if r.sequential() { "MiB/s" } else { "IOPS" }),
                run(&r.stratum),
                run(&r.bare),
                r.ratio(),
                r.ratio_met().map_or("null".to_owned(), |m| m.to_string()),
            )
        })
        .collect();
    format!(
        "{{\"kernel\": {}, \"image_mib\": {IMAGE_MIB}, {targets}, \"rows\": [\n{}\n  ]}}",
        json_str(kernel),
        rows.join(",\n")
    )
}

/// A report's disk part for the report's own tests.
#[cfg(test)]
pub fn example() -> DiskBench {
    let figures = |ops: u64, bytes: u64, dev_ios: u64| Figures {
        ops,
        bytes,
        ticks: 1_000_000,
        idle_ns: 0,
        dev_ios,
        irqs: ops,
    };
    let counted = |frontend: u64, el2: [u64; 2], service: u64, exits: [u64; 2]| Counted {
        guest: [frontend, service],
        el2,
        exits,
    };
    let row = |i: usize, seq: bool| {
        let (ops, bytes) = if seq {
            (32, 32 << 20)
        } else {
            (2048, 2048 * 4096)
        };
        let (t_ops, t_bytes) = if seq { (4, 4 << 20) } else { (128, 128 * 4096) };
        DiskRow {
            test: &DISK_TESTS[i],
            stratum: TestRun {
                figures: figures(ops, bytes, ops * 6),
                wall_s: 2.0,
            },
            bare: TestRun {
                figures: figures(ops, bytes, ops * 2),
                wall_s: 1.0,
            },
            traced: Ok((
                Traced {
                    figures: figures(t_ops, t_bytes, t_ops),
                    counted: counted(400_000, [100_000, 60_000], 1_600_000, [40, 80]),
                    rounds: vec![3_000_000, 2_217_600, 2_160_000],
                },
                Traced {
                    figures: figures(t_ops, t_bytes, t_ops),
                    counted: counted(600_000, [0, 0], 0, [0, 0]),
                    rounds: vec![600_000, 600_000],
                },
            )),
        }
    };
    DiskBench::Measured {
        kernel: "6.1.0-57-arm64".to_owned(),
        rows: vec![row(0, true), row(1, true), row(2, false)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
frontend | DISK-ENV dev=/dev/vda bytes=67108864 mib=32 reads=2048 freq=62500000 mark_begin=0x230a30 mark_end=0x230a44\r
frontend | DISK-BEGIN test=seq_write\r
frontend | DISK test=seq_write ops=32 bytes=33554432 ticks=66575359 idle_ns=906995232 dev_ios=192 irqs=258\r
frontend | DISK-BEGIN test=seq_read\r
frontend | DISK test=seq_read ops=32 bytes=33554432 ticks=60000000 idle_ns=800000000 dev_ios=192 irqs=200\r
frontend | DISK-BEGIN test=rand_read\r
frontend | DISK test=rand_read ops=2048 bytes=8388608 ticks=50000000 idle_ns=1000 dev_ios=2048 irqs=2100\r
frontend | DISK-DONE\r
";

    #[test]
    fn a_run_is_read_from_its_console() {
        let out = parse_output(CONSOLE).expect("valid");
        assert_eq!((out.mark_begin, out.mark_end), (0x230a30, 0x230a44));
        assert_eq!(out.windows.len(), 3);
        assert_eq!(out.rounds(), 1);
        assert_eq!(out.last(0).dev_ios, 192);
        assert_eq!(out.last(2).ops, 2048);
        assert_eq!(out.last(1).idle_ns, 800_000_000);
        // Two rounds: the last is the second's.
        let (head, tests) = CONSOLE.split_once('\n').expect("lines");
        let second = tests.replace("ops=32 bytes", "ops=31 bytes");
        let twice = format!(
            "{}\n{}{second}",
            head.replace("freq=", "rounds=2 freq="),
            tests.replace("frontend | DISK-DONE\r\n", "")
        );
        let out = parse_output(&twice).expect("two rounds");
        assert_eq!((out.rounds(), out.windows.len()), (2, 6));
        assert_eq!((out.windows[0].ops, out.last(0).ops), (32, 31));
        let e = parse_output(&twice.replace("rounds=2", "rounds=3")).expect_err("one short");
        assert!(e.contains("6 of 9 windows"), "{e}");
    }

    #[test]
    fn an_incomplete_or_failed_run_is_refused() {
        let without = |needle: &str| -> String {
            CONSOLE
                .lines()
                .filter(|l| !l.contains(needle))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        for (console, why) in [
            (without("DISK-DONE"), "no DISK-DONE"),
            (without("DISK-ENV"), "no DISK-ENV"),
            (without("test=seq_read ops"), "expected test seq_read"),
            (without("test=rand_read ops"), "2 of 3 windows"),
            (
                CONSOLE.replace("mark_end=0x230a44", "mark_end=0x230a30"),
                "no window marks",
            ),
            (
                format!("{CONSOLE}WORKLOAD-FAIL test=seq_read: at byte 0: EIO\n"),
                "WORKLOAD-FAIL test=seq_read",
            ),
            (CONSOLE.replace("ops=2048", "ops=0"), "iters=0"),
        ] {
            let e = parse_output(&console).expect_err(why);
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn rows_give_throughput_ratios_and_overheads() {
        let DiskBench::Measured { rows, .. } = example() else {
            unreachable!()
        };
        let seq = &rows[0];
        assert!(
            (seq.throughput(&seq.stratum) - 16.0).abs() < 1e-9,
            "32 MiB in 2 s"
        );
        assert!((seq.throughput(&seq.bare) - 32.0).abs() < 1e-9);
        assert!((seq.ratio() - 0.5).abs() < 1e-9);
        assert_eq!(seq.ratio_met(), Some(true), "exactly half meets it");
        let rand = &rows[2];
        assert!((rand.throughput(&rand.stratum) - 1024.0).abs() < 1e-9);
        assert_eq!(rand.ratio_met(), None, "no target for random reads");
        let (s, b) = seq.traced.as_ref().expect("traced");
        let p = s.per_request();
        assert!((p.frontend - 100_000.0).abs() < 1e-9);
        assert!((p.el2 - 40_000.0).abs() < 1e-9, "both CPUs' EL2");
        assert!((p.service - 400_000.0).abs() < 1e-9);
        assert!((p.frontend_exits - 10.0).abs() < 1e-9);
        assert!((b.per_request().total() - 150_000.0).abs() < 1e-9);
        assert_eq!(seq.overhead(), Some(540_000.0 - 150_000.0));
        assert!((s.spread() - 57_600.0 / 2_160_000.0).abs() < 1e-12);
        assert_eq!(b.spread(), 0.0);
    }

    #[test]
    fn the_table_and_json_show_every_row() {
        let t = table(&example());
        for needle in [
            "sequential write, 1 MiB requests",
            "random read, 4 KiB requests",
            "16.0 MiB/s",
            "32.0 MiB/s",
            "1,024 IOPS",
            "0.50×",
            "≥ 0.50×",
            "6.0 / 2.0",
            "400,000",
            "390,000",
            "≤ 20,000",
            "10.0 / 20.0",
            "2.7 % / 0.0 %",
            "1 by design",
        ] {
            assert!(t.contains(needle), "{needle}:\n{t}");
        }
        let j = json(&example());
        for needle in [
            "\"test\": \"seq_write\"",
            "\"unit\": \"IOPS\"",
            "\"ratio_met\": true",
            "\"ratio_met\": null",
            "\"overhead_per_request\": 390000.0",
            "\"el2\": [100000, 60000]",
            "\"round_totals\": [3000000, 2217600, 2160000]",
            "\"copies_by_design\": 1",
        ] {
            assert!(j.contains(needle), "{needle}:\n{j}");
        }
        assert_eq!(
            table(&DiskBench::NotMeasured("skipped".into())),
            "Disk: n/a (skipped)\n"
        );
        assert!(json(&DiskBench::NotMeasured("skipped".into())).contains("not_measured"));
        let mut untraced = example();
        if let DiskBench::Measured { rows, .. } = &mut untraced {
            for r in rows {
                r.traced = Err("no ELF".into());
            }
        }
        let t = table(&untraced);
        assert!(
            t.contains("Disk instructions per request: n/a (no ELF)"),
            "{t}"
        );
        assert!(json(&untraced).contains("\"traced\": {\"not_measured\": \"no ELF\"}"));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(grouped(0.0), "0");
        assert_eq!(grouped(999.4), "999");
        assert_eq!(grouped(1234.0), "1,234");
        assert_eq!(grouped(1_234_567.0), "1,234,567");
        assert_eq!(grouped(-20_000.0), "-20,000");
    }

    #[test]
    fn the_systems_are_valid_and_alike() {
        let guest = LinuxGuest {
            kernel: "/nonexistent/vmlinuz".into(),
            initramfs: "/nonexistent/initrd \"x\"".into(),
            kernel_version: "6.1.0-57-arm64".to_owned(),
        };
        let line = cmdline(4, 128, 2);
        assert!(line.starts_with(WORKLOAD_CMDLINE));
        assert!(line.ends_with(
            "workload.disk=/dev/vda workload.disk_mib=4 workload.disk_reads=128 \
             workload.disk_rounds=2"
        ));
        let text = config_text(&guest, Path::new("/tmp/disk.img"), Gic::V3, &line);
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        let vms = parsed["vm"].as_array().expect("vms");
        assert_eq!(vms.len(), 2);
        assert_eq!(vms[0]["cmdline"].as_str(), Some(line.as_str()));
        assert_eq!(vms[0]["initrd"].as_str(), Some("/nonexistent/initrd \"x\""));
        assert_eq!(vms[0]["disk"][0]["image"].as_str(), Some("/tmp/disk.img"));
        assert_eq!(vms[1]["role"].as_str(), Some("service"));
        let argv = bare_argv(
            Path::new("qemu-system-aarch64"),
            Gic::V3,
            &guest,
            Path::new("/tmp/disk.img"),
            &line,
        );
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = argv.join(" ");
        assert!(
            joined.ends_with(
                "-drive file=/tmp/disk.img,if=none,format=raw,id=stratum-disk0,cache=writeback \
                 -device virtio-blk-device,drive=stratum-disk0"
            ),
            "{joined}"
        );
        assert!(argv.iter().any(|a| a == &line), "the same command line");
        assert!(!joined.contains("virtualization=on"));
    }

    #[test]
    fn the_image_stamps_every_block() {
        let dir = crate::testutil::TestDir::new("bench-disk-image");
        let path = dir.path().join("disk.img");
        write_image(&path).expect("written");
        let bytes = fs::read(&path).expect("read");
        assert_eq!(bytes.len() as u64, IMAGE_MIB << 20);
        for n in [0u64, 1, 255, 256, 16383] {
            let at = (n * DISK_BLOCK) as usize;
            assert_eq!(&bytes[at..at + 8], &n.to_le_bytes(), "block {n}");
            assert_eq!(bytes[at + 8], 0xa5);
        }
    }
}
