//! Command-line interface: argument definitions (clap) and dispatch. The
//! binary's `main` only calls [`main`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::bench::{BenchOptions, run_bench};
use crate::config::{
    Board, Config, CpuModel, DiskFlag, FileFlags, Forward, Gic, NetFlags, VmFlags,
};
use crate::linux::{
    KernelChoice, LinuxGuest, PreparedDebian, default_cache_dir, prepare_debian_choosing,
};
use crate::run::{RunOptions, run};
use crate::{Result, exit_code};

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  every VM powered off cleanly (or Ctrl-A x in the focused console stopped the system)
  1  hypervisor failure: it panicked or rejected its boot input, or QEMU died unexpectedly
  2  bad input (usage, config, kernel images), caught before anything started
  3  timeout: --timeout expired and QEMU was killed
  4  environment problem: QEMU is missing, or building the hypervisor failed
  5  a VM crashed
  6  a command run with --exec (or exec in the config) failed or reported no status

Environment:
  STRATUM_HYPERVISOR  hypervisor Image (or ELF) to use instead of building one
  STRATUM_HYPERVISOR_TRACE  the same, built with the `trace` feature (run --trace)
  STRATUM_QEMU        QEMU binary to use instead of qemu-system-aarch64 on PATH
  STRATUM_CACHE       cache root for fetched guests (default ~/.cache/stratum);
                      the Debian guest lives in $STRATUM_CACHE/debian
  STRATUM_DEBIAN_MIRROR  Debian mirror for --debian (see `stratum fetch --help`)
  STRATUM_WORKLOAD    Linux workload binary for --debian's initramfs instead of building it
  STRATUM_BLKD        the disk daemon for the initramfs instead of building it (default:
                      the one beside STRATUM_WORKLOAD, if there is one)";

const CHECK_LONG_HELP: &str = "\
Validate a config file and inspect its kernel images, without running anything.

Config format (TOML; relative paths are relative to the file):

  [machine]                    # optional: the emulated host
  cpus = 2                     # physical CPUs; default: most vCPUs of any VM
  gic = 3                      # 2 or 3 (default 3)
  cpu = \"cortex-a57\"           # or \"max\" (default \"cortex-a57\")
  memory = \"2G\"                # host RAM; default: VM memory + bundle + 256 MiB

  [system]                     # optional
  slice = \"10ms\"               # round-robin slice on shared CPUs, 100us to 1s
  stop = \"all\"                 # exit when \"all\" VMs stopped, or \"any\"

  [[vm]]                       # 1 to 16 of these (8 run at a time)
  name = \"hello\"               # [A-Za-z0-9_-], 1-31 bytes (default \"vm<index>\")
  kernel = \"hello.elf\"         # required: Image, AArch64 ELF or raw binary
  initrd = \"initrd.cpio\"       # optional
  cmdline = \"console=ttyAMA0\"  # optional
  cpus = 1                     # vCPUs, 1 to 8 (default 1)
  memory = \"128M\"              # multiple of 2 MiB (default 128M)
  memory_base = \"0x40000000\"   # 2 MiB aligned, clear of 0x08000000-0x0A000000
  placement = \"pinned\"         # or \"shared\" (time-shared physical CPUs)
  pcpus = [0]                  # physical CPUs (default: lowest free / last)
  on_crash = \"stop\"            # or \"restart\"
  dt_fragment = \"extra.dtb\"    # optional: nodes added to the VM's device tree
  role = \"service\"             # optional: the VM that serves the disks (one at most)

  [[vm.disk]]                  # a virtio-blk disk: /dev/vda, vdb, ... (0 to 4 per VM)
  image = \"disk.img\"           # a raw image, whole 512-byte sectors; writes reach it
  readonly = false             # true: writes are refused
                               # (a service VM is added when no VM has role = \"service\")

  [[vm.device]]                # passthrough, identity mapped (0 to 4 per VM)
  name = \"rtc\"
  compatible = \"arm,pl031\"     # or a list
  reg = [0x09010000, 0x1000]   # base, size: 4 KiB aligned
  interrupts = [2]             # SPIs 0, 2-47

  [[channel]]                  # shared memory + doorbell between two VMs
  name = \"ping\"
  vms = [\"a\", \"b\"]
  size = \"4K\"                  # 4K multiple, 4K to 2M

  [[network]]                  # a virtual switch: a virtio-net NIC in each VM
  name = \"lan\"
  vms = [\"a\", \"b\"]
  uplink = false               # true: the VMs reach QEMU's user-mode network
                               # through the service VM's bridge (one at most)

Full reference: docs/config.md.

Sizes: bytes, or a string with a K/M/G/T suffix (powers of 1024) or 0x hex;
no fractions (\"1536M\", not \"1.5G\"). Host RAM is at most 255 GiB (QEMU virt
keeps RAM below its 256 GiB high-memory hole).";

/// Stratum: a Type-1 hypervisor for AArch64. This tool validates system
/// descriptions, prepares guest kernels and runs everything under QEMU.
#[derive(Debug, Parser)]
#[command(name = "stratum", version, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run VMs under the hypervisor in QEMU (`virt`, EL2), streaming the console.
    ///
    /// Either give a config file (see `stratum check --help`) or describe
    /// one VM with --kernel and friends. Kernels may be arm64 `Image` files,
    /// AArch64 ELF executables or raw binaries (loaded at RAM + 0x80000).
    /// The hypervisor is built with cargo unless --hypervisor or
    /// STRATUM_HYPERVISOR names one.
    ///
    /// On a terminal (stdin and stdout), the console is focused: one VM's
    /// output at a time, full screen, with a status bar naming every VM and
    /// its state; every key goes to that VM (Ctrl-C too) but Ctrl-A, which
    /// starts a command: Ctrl-A n the next running VM (its output since it
    /// was last shown is replayed), Ctrl-A 1-9 a VM by number, Ctrl-A s
    /// the exit statistics, Ctrl-A a a Ctrl-A for the VM, Ctrl-A x stops
    /// the system, Ctrl-A ? lists the keys. Otherwise (a pipe, a file,
    /// --exec), the console is the program's stdout, every line tagged with
    /// its VM when there are several, stdin goes to the VM with the input
    /// focus, and Ctrl-C stops QEMU. Either way, `stratum console NAME`
    /// attaches to a VM from another terminal (it only watches when QEMU
    /// reads the terminal itself, or with --exec).
    #[command(after_help = EXIT_STATUS_HELP)]
    Run(RunArgs),
    /// Build a system image: the hypervisor, the boot bundle and every
    /// guest image (kernels, initramfs, DT fragments) in one arm64 `Image`.
    ///
    /// Load it anywhere 2 MiB-aligned in RAM and jump to it with x0 = the
    /// board's DTB, as for a Linux kernel: QEMU's `-kernel`, or U-Boot's
    /// `booti ADDR - FDTADDR` (docs/boards.md). The system is what `stratum
    /// run` would run with the same arguments. The image carries no
    /// entropy: the hypervisor seeds the guests' TRNG from the boot DT's
    /// `/chosen/rng-seed`, which QEMU and U-Boot provide.
    #[command(after_help = EXIT_STATUS_HELP)]
    Build(BuildArgs),
    /// List what a system image holds: the hypervisor, the bundle's
    /// settings, and per VM its CPUs, memory and each image's size and
    /// SHA-256.
    Inspect {
        /// The system image (`stratum build -o FILE`).
        #[arg(value_name = "FILE")]
        image: PathBuf,
    },
    /// Attach to a VM's console of a running system (any `stratum run`, on
    /// a terminal or not), like `xl console`.
    ///
    /// Shows what the VM printed so far (its scrollback) and then its
    /// output as it comes; what you type goes to it (the system's one input
    /// focus moves to it, and a focused `stratum run` follows).
    /// Ctrl-] detaches. It ends by itself when the VM stops or the system
    /// ends. The runs listen in $XDG_RUNTIME_DIR/stratum (or
    /// /tmp/stratum-UID), one socket per run.
    Console {
        /// The VM's name (as in the config).
        name: String,
        /// Process id of the `stratum run` to attach to (needed when several run).
        #[arg(long, value_name = "N")]
        pid: Option<u32>,
    },
    /// Validate a config file and inspect its kernel images, without running anything
    #[command(after_help = EXIT_STATUS_HELP, long_about = CHECK_LONG_HELP)]
    Check {
        /// The config file.
        #[arg(value_name = "CONFIG.toml")]
        config: PathBuf,
    },
    /// Fetch a guest into the cache and print the paths of its kernel and initramfs.
    ///
    /// `debian`: the stock Debian 12 arm64 kernel the project pins (with
    /// --latest: the package `linux-image-arm64` depends on) and
    /// `busybox-static`, downloaded with apt from the Debian archive, with
    /// the tool's own sources list (bookworm, bookworm-updates,
    /// bookworm-security; signed by Debian's archive keyring) and a private
    /// apt state in the cache: the machine's apt sources are never used, and
    /// nothing is installed (except the `debian-archive-keyring` package,
    /// when it is missing and we are root). Every download is checked
    /// against the SHA-256 of the pin or of the signed index before
    /// `dpkg-deb` unpacks it. Plus an initramfs built from busybox, the
    /// kernel's virtio modules and Stratum's default init.
    ///
    /// The pinned kernel, once in the cache, needs no network. If the
    /// archive no longer carries it, the newest is used with a warning (bench
    /// figures are then not comparable). The package lists are refreshed at
    /// most once a day; without network a complete cache of the same choice
    /// is used as it is. Several versions stay in the cache side by side;
    /// concurrent fetches wait for each other. Downloads are retried once.
    #[command(after_help = FETCH_AFTER_HELP)]
    Fetch(FetchArgs),
    /// Measure exit-path lengths in instructions (deterministic QEMU), under
    /// Stratum and on bare QEMU, Linux boot to userspace, and a Linux workload.
    ///
    /// Runs the bench guest under `-icount shift=4,sleep=off -seed 1`, where
    /// one tick of the guest's counter is one executed instruction; prints a
    /// table against the targets and the Xen/KVM reference figures; then the
    /// Debian guest's boot and its workload program (syscalls, pipes, fork,
    /// page faults, memcpy, a CPU loop, tmpfs files) under Stratum and on bare
    /// QEMU, with their ratios and the hypervisor's instructions per guest
    /// timer tick; then where each row's instructions go: the bench guest
    /// traced instruction by instruction (QEMU's log, read through a FIFO),
    /// the EL2 instructions of one sample per row by category; writes
    /// results.json and results.svg (see docs/benchmarks.md).
    #[command(after_help = BENCH_AFTER_HELP)]
    Bench(BenchArgs),
    /// Show the exit statistics of a running system (`stratum run` in another terminal).
    ///
    /// Per VM, a table of exits by reason (rows) and vCPU (columns), read
    /// live from the hypervisor's memory through the run's QMP socket. The
    /// same table is printed when a VM stops. docs/stats-and-trace.md says
    /// what each reason means.
    Stats {
        /// Process id of the `stratum run` to look at (needed when several run).
        #[arg(long, value_name = "N")]
        pid: Option<u32>,
    },
    /// Plot the exit trace of a running system as an SVG timeline.
    ///
    /// The run must use a hypervisor built with the `trace` feature: start
    /// it with `stratum run --trace OUT.svg` (which also plots the whole run
    /// when it ends) or `--hypervisor` naming such a build. This command
    /// attaches to it, collects until --seconds pass or the run ends, and
    /// writes the plot: exits per time bin for every vCPU, stacked by reason.
    Trace(TraceArgs),
}

/// `stratum trace` arguments.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Where to write the SVG plot.
    #[arg(short, long, value_name = "OUT.svg")]
    pub output: PathBuf,
    /// Process id of the `stratum run` to trace (needed when several run).
    #[arg(long, value_name = "N")]
    pub pid: Option<u32>,
    /// Stop collecting after SECS seconds (default: when the run ends).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub seconds: Option<Duration>,
}

const BENCH_AFTER_HELP: &str = "\
Exit status: 0 measured (missed targets are reported, not failures); 1 a run
failed or its output did not parse; 2 bad arguments; 4 QEMU missing or a build
failed.

Environment:
  STRATUM_HYPERVISOR  hypervisor Image to use instead of building one
  STRATUM_QEMU        QEMU binary to use instead of qemu-system-aarch64 on PATH
  STRATUM_CACHE       cache root of the Debian guest (fetched on first use)
  STRATUM_WORKLOAD    Linux workload binary to put in the initramfs instead of building it
  STRATUM_BLKD        the disk daemon to put in the initramfs instead of building it";

/// `stratum bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The bench guest ELF [default: build it with cargo].
    #[arg(long, value_name = "ELF")]
    pub guest: Option<PathBuf>,
    /// Timed iterations per operation (1 to 2000).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub iterations: u32,
    /// Skip the Linux boot, workload and network measurements.
    #[arg(long)]
    pub no_linux: bool,
    /// Skip the VM ↔ VM network measurements (six runs of two Debian VMs).
    #[arg(long)]
    pub no_net: bool,
    /// Skip the disk measurements (four runs: a Debian frontend with the
    /// service VM, and bare QEMU, each timed and traced).
    #[arg(long)]
    pub no_disk: bool,
    /// Skip the breakdown of where each row's instructions go (three traced
    /// runs; needs llvm-symbolizer and the hypervisor's ELF).
    #[arg(long)]
    pub no_breakdown: bool,
    /// Directory for results.json and results.svg [default: <target>/bench].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The board Stratum runs on (default virt). With zcu102 the exit-path
    /// rows and their breakdown run on QEMU's ZCU102 model (Cortex-A53,
    /// GIC-400), beside bare QEMU `virt` with the same CPU and GIC; the
    /// Linux and network rows are measured on virt only.
    #[arg(long, value_name = "BOARD")]
    pub board: Option<Board>,
    /// GIC version of the emulated host (default 3; 2 on the ZCU102).
    #[arg(long, value_name = "2|3")]
    pub gic: Option<Gic>,
    /// Prebuilt hypervisor (arm64 Image, or its ELF) [env: STRATUM_HYPERVISOR].
    #[arg(long, value_name = "IMAGE")]
    pub hypervisor: Option<PathBuf>,
    /// Prebuilt trace build of the hypervisor, for the network case's EL2
    /// time [env: STRATUM_HYPERVISOR_TRACE].
    #[arg(long, value_name = "IMAGE")]
    pub hypervisor_trace: Option<PathBuf>,
    /// Kill a QEMU run after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, default_value = "300")]
    pub timeout: Duration,
    /// Show every run's console.
    #[arg(long)]
    pub verbose: bool,
}

impl BenchArgs {
    /// The bench options these arguments describe.
    pub fn options(&self) -> BenchOptions {
        let defaults = BenchOptions::new();
        BenchOptions {
            guest: self.guest.clone(),
            hypervisor: self.hypervisor.clone(),
            hypervisor_trace: self.hypervisor_trace.clone(),
            iterations: self.iterations,
            linux: !self.no_linux,
            net: !self.no_net,
            disk: !self.no_disk,
            breakdown: !self.no_breakdown,
            out_dir: self.out.clone().unwrap_or(defaults.out_dir),
            board: self.board.unwrap_or_default(),
            gic: self
                .gic
                .unwrap_or(crate::config::default_gic(self.board.unwrap_or_default())),
            timeout: self.timeout,
            verbose: self.verbose,
        }
    }
}

const FETCH_AFTER_HELP: &str = "\
Output: `kernel: PATH`, `initramfs: PATH`, `version: RELEASE` and
`package: PACKAGE VERSION sha256 HASH (pinned|latest|...)` lines on stdout;
progress on stderr.

The initramfs's init mounts proc, sys and devtmpfs, prints
`STRATUM-LINUX: up <N> cpus` and the kernel command line, then starts a shell on
the console (leaving it powers off), or, with `stratum.test=poweroff` on the
command line, prints /proc/interrupts and powers off; with `stratum.test=workload`
it runs /bin/stratum-workload (the bench's Linux workload) and powers off. The
workload binary and the disk daemon (/bin/stratum-blkd, which a service VM's
init starts) are built with cargo (target aarch64-unknown-linux-musl) unless
STRATUM_WORKLOAD and STRATUM_BLKD name them.

Exit status: 0 fetched; 4 the archive is unreachable, a package is missing, a
download's SHA-256 is wrong, the keyring is missing, or apt/dpkg-deb failed (the
message says which).

Environment:
  STRATUM_CACHE                   cache root (default ~/.cache/stratum); --cache overrides it
  STRATUM_DEBIAN_MIRROR           Debian mirror (default http://deb.debian.org/debian)
  STRATUM_DEBIAN_SECURITY_MIRROR  security mirror (default: the mirror's URL + \"-security\")
  STRATUM_WORKLOAD                prebuilt workload binary for the initramfs
  STRATUM_BLKD                    prebuilt disk daemon for the initramfs
  APT_CONFIG                      an apt configuration file to read (apt's own variable)

The pin (package, version, SHA-256) is KERNEL_PIN in
host/stratum/src/linux/debian/pin.rs; docs/testing.md says how to update it.";

/// Guests `stratum fetch` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FetchGuest {
    /// The stock Debian arm64 kernel with a busybox initramfs.
    Debian,
}

/// `stratum fetch` arguments.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// What to fetch.
    #[arg(value_name = "GUEST")]
    pub guest: FetchGuest,
    /// Cache directory for this guest [default: $STRATUM_CACHE/debian or ~/.cache/stratum/debian].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// The newest kernel (the package `linux-image-arm64` depends on)
    /// instead of the pinned one.
    #[arg(long)]
    pub latest: bool,
}

impl FetchArgs {
    /// Fetches (with progress) and returns the guest.
    pub fn fetch(&self) -> Result<PreparedDebian> {
        match self.guest {
            FetchGuest::Debian => {
                let cache = match &self.cache {
                    Some(dir) => dir.clone(),
                    None => default_cache_dir()?,
                };
                prepare_debian_choosing(&cache, kernel_choice(self.latest), true, None)
            }
        }
    }
}

/// The kernel `--latest` (or its absence) asks for.
fn kernel_choice(latest: bool) -> KernelChoice {
    if latest {
        KernelChoice::Latest
    } else {
        KernelChoice::Pinned
    }
}

/// The system a command runs or builds: a config file, or one VM from flags.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("system").required(true).args(["config", "kernel", "debian"])))]
pub struct SystemArgs {
    /// System description (TOML) to run; see `stratum check --help`.
    #[arg(value_name = "CONFIG.toml")]
    pub config: Option<PathBuf>,
    /// Kernel of a single VM: an arm64 Image, an AArch64 ELF or a raw binary.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Boot the stock Debian arm64 kernel with a busybox initramfs, fetched
    /// into the cache on first use (see `stratum fetch --help`). The command
    /// line is `console=ttyAMA0` plus --append; memory 512M unless --memory.
    /// The console gets a shell whose exit powers off; with
    /// `--append stratum.test=poweroff` the guest reports and powers off.
    #[arg(long, conflicts_with_all = ["config", "kernel", "initrd"])]
    pub debian: bool,
    /// With --debian: the newest Debian kernel instead of the pinned one
    /// (see `stratum fetch --help`).
    // (`requires = "debian"` would not do: a flag's default counts as present.)
    #[arg(long, conflicts_with_all = ["config", "kernel"])]
    pub latest: bool,
    /// With --debian: run CMD with `/bin/sh -c` once the guest has booted
    /// and loaded its modules, then power off. `stratum run` exits 0 when
    /// the command did, and with status 6 otherwise (naming the VM and the
    /// command's status).
    #[arg(long, value_name = "CMD", conflicts_with_all = ["config", "kernel"])]
    pub exec: Option<String>,
    /// Initial ramdisk for the --kernel VM.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for the --kernel VM (with --debian: added after
    /// `console=ttyAMA0`).
    #[arg(
        long,
        value_name = "STR",
        conflicts_with = "config",
        allow_hyphen_values = true
    )]
    pub append: Option<String>,
    /// vCPUs of the --kernel VM (1 to 8; default 1); the machine gets as many CPUs.
    #[arg(long, value_name = "N", conflicts_with = "config")]
    pub cpus: Option<u32>,
    /// Memory of the --kernel VM, e.g. 128M or 1G (a multiple of 2 MiB; default 128M).
    #[arg(long, value_name = "SIZE", conflicts_with = "config")]
    pub memory: Option<String>,
    /// The board (default virt; overrides `[machine]` in a config):
    /// `zcu102` runs on QEMU's Xilinx ZCU102 model with the board's DT from
    /// the Debian kernel package (fetched on first use); docs/boards.md.
    #[arg(long, value_name = "BOARD")]
    pub board: Option<Board>,
    /// GIC version of the emulated host (default 3; overrides `[machine]` in a config).
    #[arg(long, value_name = "2|3")]
    pub gic: Option<Gic>,
    /// CPU model of the emulated host (default cortex-a57; overrides `[machine]` in a config).
    #[arg(long, value_name = "MODEL")]
    pub cpu: Option<CpuModel>,
    /// A disk for the VM, repeatable: a raw image FILE (a whole number of
    /// 512-byte sectors), read-only with `,readonly`; the first is the
    /// VM's /dev/vda, the next /dev/vdb, …. Writes reach the file. The
    /// tool adds the service VM that serves them (Debian, 256 MiB, a
    /// time-shared CPU), and the run ends when the VM stops. With a config
    /// file: for its one VM besides the service VM (a config of several
    /// gives each its disks with [[vm.disk]]). `stratum build` refuses
    /// disks (see docs/config.md).
    #[arg(long = "disk", value_name = "FILE[,readonly]")]
    pub disks: Vec<DiskFlag>,
    /// `user`: the VM reaches the outside, QEMU's user-mode network. It is
    /// on an uplink network that the service VM (added as for --disk)
    /// bridges to a QEMU NIC of its own; the VM's init takes a DHCP lease
    /// (10.0.2.15), the host's loopback is 10.0.2.2. With a config file:
    /// for its one VM besides the service VM (or write uplink = true on a
    /// [[network]]). The run ends when the VM stops. `stratum build`
    /// refuses it (see docs/config.md, "The uplink").
    #[arg(long = "net", value_name = "user")]
    pub net: Option<NetMode>,
    /// Forward 127.0.0.1:HOSTPORT on the host to the VM's TCP GUESTPORT,
    /// repeatable. Needs an uplink (--net user, or a config's uplink
    /// network) with exactly one VM besides the service VM.
    #[arg(long = "forward", value_name = "HOSTPORT:GUESTPORT")]
    pub forwards: Vec<Forward>,
}

/// What `--net` connects the VM to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetMode {
    /// QEMU's user-mode network, through the service VM's bridge.
    User,
}

/// `stratum build` arguments.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// What to build.
    #[command(flatten)]
    pub system: SystemArgs,
    /// Where to write the system image.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Prebuilt hypervisor (arm64 Image, or its ELF) instead of building it
    /// [env: STRATUM_HYPERVISOR].
    #[arg(long, value_name = "IMAGE")]
    pub hypervisor: Option<PathBuf>,
    /// End QEMU with the system's exit status through Arm semihosting
    /// (only for a QEMU started with `-semihosting-config enable=on`;
    /// elsewhere the semihosting call is an undefined instruction).
    #[arg(long)]
    pub semihosting: bool,
}

/// `stratum run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to run.
    #[command(flatten)]
    pub system: SystemArgs,
    /// Deterministic run: -icount shift=4,sleep=off, -seed 1, dtb-randomness=off.
    #[arg(long)]
    pub deterministic: bool,
    /// Kill QEMU after SECS seconds (fractions allowed) and exit with status 3.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Prebuilt hypervisor (arm64 Image, or its ELF) instead of building it
    /// [env: STRATUM_HYPERVISOR].
    #[arg(long, value_name = "IMAGE")]
    pub hypervisor: Option<PathBuf>,
    /// Trace every exit and plot the run as an SVG timeline to OUT.svg when
    /// it ends. Uses the hypervisor built with the `trace` feature
    /// [env: STRATUM_HYPERVISOR_TRACE names a prebuilt one].
    #[arg(long, value_name = "OUT.svg")]
    pub trace: Option<PathBuf>,
    /// Also write each VM's console to DIR/<name>.log (whole lines, no
    /// tags) and the hypervisor's messages to DIR/stratum.log, as they
    /// arrive; the files of a previous run are replaced.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Self-test: the hypervisor takes a deliberate EL2 fault after booting,
    /// to show its panic epitaph (hidden: for the system tests).
    #[arg(long, hide = true)]
    pub selftest_el2_fault: bool,
    /// Extra arguments for QEMU, after `--` (e.g. `-- -d guest_errors`).
    #[arg(last = true, value_name = "QEMU ARGS")]
    pub qemu_args: Vec<OsString>,
}

fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err("the timeout must be a positive number of seconds".to_owned());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

impl SystemArgs {
    /// The validated config these arguments describe (file or flags), with
    /// --gic/--cpu applied.
    pub fn config(&self) -> Result<Config> {
        let mut config = match (&self.config, &self.kernel) {
            (Some(path), _) => Config::load_with_flags(
                path,
                &FileFlags {
                    disks: self.disks.clone(),
                    net: self.net_flags(),
                },
            )?,
            (None, Some(kernel)) => Config::from_flags_net(
                &VmFlags {
                    kernel: kernel.clone(),
                    initrd: self.initrd.clone(),
                    append: self.append.clone(),
                    cpus: self.cpus,
                    memory: self.memory.clone(),
                    debian: false,
                    exec: None,
                    disks: self.disks.clone(),
                },
                &self.net_flags(),
            )?,
            (None, None) if self.debian => {
                let choice = kernel_choice(self.latest);
                let prepared = prepare_debian_choosing(&default_cache_dir()?, choice, true, None)?;
                Config::from_flags_net(&self.debian_flags(&prepared.guest), &self.net_flags())?
            }
            (None, None) => unreachable!("clap requires a config, --kernel or --debian"),
        };
        config.override_machine(self.board, self.gic, self.cpu)?;
        Ok(config)
    }

    /// `--net` and `--forward`.
    pub fn net_flags(&self) -> NetFlags {
        NetFlags {
            user: self.net == Some(NetMode::User),
            forwards: self.forwards.clone(),
        }
    }

    /// The VM flags of `--debian` with `guest` (the fetched kernel and initramfs).
    /// (The Debian defaults, `console=ttyAMA0` and 512 MiB, are the
    /// config's: [`crate::config::DEBIAN_CMDLINE`].)
    pub fn debian_flags(&self, guest: &LinuxGuest) -> VmFlags {
        VmFlags {
            kernel: guest.kernel.clone(),
            initrd: Some(guest.initramfs.clone()),
            append: self.append.clone(),
            cpus: self.cpus,
            memory: self.memory.clone(),
            debian: true,
            exec: self.exec.clone(),
            disks: self.disks.clone(),
        }
    }
}

impl RunArgs {
    /// The [`RunOptions`] these arguments describe.
    pub fn options(&self) -> Result<RunOptions> {
        Ok(RunOptions {
            hypervisor: self.hypervisor.clone(),
            deterministic: self.deterministic,
            timeout: self.timeout,
            qemu_args: self.qemu_args.clone(),
            selftest_el2_fault: self.selftest_el2_fault,
            trace: self.trace.clone(),
            log_dir: self.log_dir.clone(),
            ..RunOptions::new(self.system.config()?)
        })
    }
}

/// Runs a parsed command line; returns the exit status.
pub fn execute(cli: &Cli) -> i32 {
    let result = match &cli.command {
        Command::Check { config } => Config::load(config)
            .and_then(|c| c.check_supported().map(|()| c))
            .map(|c| {
                println!("{}: OK", config.display());
                print!("{}", c.summary());
                exit_code::SUCCESS
            }),
        Command::Fetch(args) => args.fetch().map(|prepared| {
            let guest = &prepared.guest;
            println!("kernel: {}", guest.kernel.display());
            println!("initramfs: {}", guest.initramfs.display());
            println!("version: {}", guest.kernel_version);
            println!("package: {}", prepared.fetched.describe_kernel());
            exit_code::SUCCESS
        }),
        Command::Bench(args) => run_bench(&args.options()).map(|_| exit_code::SUCCESS),
        Command::Console { name, pid } => {
            crate::attach::console(name, *pid).map(|()| exit_code::SUCCESS)
        }
        Command::Stats { pid } => crate::telemetry::stats(*pid).map(|text| {
            print!("{text}");
            exit_code::SUCCESS
        }),
        Command::Trace(args) => {
            crate::trace::attach(args.pid, args.seconds.map(|d| d.as_secs_f64())).and_then(
                |trace| crate::trace::write_svg(&trace, &args.output).map(|()| exit_code::SUCCESS),
            )
        }
        Command::Build(args) => args.system.config().and_then(|config| {
            let built = crate::sysimg::build(
                &config,
                args.hypervisor.as_deref(),
                args.semihosting,
                &args.output,
            )?;
            print!("{built}");
            Ok(exit_code::SUCCESS)
        }),
        Command::Inspect { image } => std::fs::read(image)
            .map_err(|e| crate::Error::input(format!("{}: cannot read: {e}", image.display())))
            .and_then(|bytes| crate::sysimg::inspect(&image.display().to_string(), &bytes))
            .map(|text| {
                print!("{text}");
                exit_code::SUCCESS
            }),
        Command::Run(args) => args.options().and_then(|opts| run(&opts)).map(|outcome| {
            for report in outcome.exec.iter().filter(|r| !r.succeeded()) {
                eprintln!("stratum: {}", report.describe());
            }
            if outcome.exit_code != exit_code::SUCCESS {
                eprintln!("stratum: {}", outcome.verdict.describe());
            }
            outcome.exit_code
        }),
    };
    result.unwrap_or_else(|e| {
        eprintln!("stratum: error: {e}");
        e.exit_code()
    })
}

/// The `stratum` binary: parse the command line (usage errors exit with
/// status 2), execute, exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = execute(&cli);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("stratum").chain(args.iter().copied()))
    }

    #[test]
    fn bench_arguments() {
        let cli = parse(&[
            "bench",
            "--iterations",
            "20",
            "--no-linux",
            "--out",
            "/tmp/b",
            "--gic",
            "2",
            "--no-breakdown",
        ])
        .expect("parses");
        let Command::Bench(a) = cli.command else {
            panic!("not bench")
        };
        let o = a.options();
        assert_eq!(o.iterations, 20);
        assert!(!o.linux);
        assert!(!o.breakdown);
        assert_eq!(o.out_dir, std::path::Path::new("/tmp/b"));
        assert_eq!(o.gic, Gic::V2);
        assert_eq!(o.timeout, Duration::from_secs(300));
        let Command::Bench(a) = parse(&["bench"]).expect("parses").command else {
            panic!("not bench")
        };
        let o = a.options();
        assert_eq!((o.iterations, o.linux, o.gic), (1000, true, Gic::V3));
        assert!(o.breakdown, "the breakdown is on by default");
        assert!(o.out_dir.ends_with("bench"));
        for bad in [
            &["bench", "--iterations", "0"][..],
            &["bench", "--iterations", "2001"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_with_flags() {
        let cli = parse(&[
            "run",
            "--kernel",
            "k.elf",
            "--append",
            "-- console=ttyAMA0",
            "--cpus",
            "2",
            "--memory",
            "256M",
            "--gic",
            "2",
            "--cpu",
            "max",
            "--deterministic",
            "--timeout",
            "1.5",
            "--",
            "-d",
            "int",
        ])
        .expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            a.system.kernel.as_deref(),
            Some(std::path::Path::new("k.elf"))
        );
        assert_eq!(a.system.append.as_deref(), Some("-- console=ttyAMA0"));
        assert_eq!(a.system.cpus, Some(2));
        assert_eq!(a.system.gic, Some(Gic::V2));
        assert_eq!(a.system.cpu, Some(CpuModel::Max));
        assert!(a.deterministic);
        assert_eq!(a.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(a.qemu_args, [OsString::from("-d"), "int".into()]);
    }

    #[test]
    fn run_usage_errors() {
        for bad in [
            &["run"][..],
            &["run", "x.toml", "--kernel", "k"],
            &["run", "x.toml", "--memory", "1G"],
            &["run", "--kernel", "k", "--gic", "4"],
            &["run", "--kernel", "k", "--cpu", "cortex-a9"],
            &["run", "--kernel", "k", "--timeout", "0"],
            &["run", "--kernel", "k", "--timeout", "soon"],
            &["check"],
        ] {
            let e = parse(bad).expect_err("usage error");
            assert_eq!(e.exit_code(), exit_code::BAD_INPUT, "{bad:?}");
        }
        // A config plus machine overrides is fine.
        assert!(parse(&["run", "x.toml", "--gic", "2", "--timeout", "5"]).is_ok());
    }

    #[test]
    fn debian_run_and_fetch() {
        let cli = parse(&["run", "--debian", "--append", "quiet", "--cpus", "1"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert!(a.system.debian);
        assert!(!a.system.latest, "the pinned kernel unless --latest");
        let guest = LinuxGuest {
            kernel: "/c/vmlinuz".into(),
            initramfs: "/c/initramfs.cpio".into(),
            kernel_version: "6.1.0-56-arm64".into(),
        };
        let flags = a.system.debian_flags(&guest);
        // The Debian defaults (console=ttyAMA0, 512 MiB) are the config's.
        assert!(flags.debian);
        assert_eq!(flags.append.as_deref(), Some("quiet"));
        assert_eq!(flags.memory, None);
        assert_eq!(flags.initrd.as_deref(), Some(guest.initramfs.as_path()));
        assert_eq!(flags.cpus, Some(1));
        assert_eq!(flags.exec, None);

        let cli = parse(&["run", "--debian", "--memory", "1G"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        let flags = a.system.debian_flags(&guest);
        assert_eq!(flags.append, None);
        assert_eq!(flags.memory.as_deref(), Some("1G"));

        let cli = parse(&["run", "--debian", "--exec", "uname -r; exit 3"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            a.system.debian_flags(&guest).exec.as_deref(),
            Some("uname -r; exit 3")
        );

        for bad in [
            &["run", "--debian", "--kernel", "k"][..],
            &["run", "--debian", "--initrd", "i"],
            &["run", "--kernel", "k", "--exec", "true"],
            &["run", "x.toml", "--exec", "true"],
            &["run", "x.toml", "--debian"],
            &["fetch"],
            &["fetch", "fedora"],
            &["run", "--kernel", "k", "--latest"],
            &["run", "x.toml", "--latest"],
        ] {
            let e = parse(bad).expect_err("usage error");
            assert_eq!(e.exit_code(), exit_code::BAD_INPUT, "{bad:?}");
        }
        let cli = parse(&["fetch", "debian", "--cache", "/tmp/c"]).expect("parses");
        let Command::Fetch(f) = cli.command else {
            panic!("not fetch")
        };
        assert_eq!(f.guest, FetchGuest::Debian);
        assert_eq!(f.cache.as_deref(), Some(std::path::Path::new("/tmp/c")));
        assert!(!f.latest);
        assert_eq!(kernel_choice(f.latest), KernelChoice::Pinned);
    }

    #[test]
    fn disks_on_the_command_line() {
        let cli = parse(&[
            "run",
            "--debian",
            "--disk",
            "root.img",
            "--disk",
            "data,1.img,readonly",
        ])
        .expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        let want = vec![
            DiskFlag {
                image: "root.img".into(),
                readonly: false,
            },
            DiskFlag {
                image: "data,1.img".into(),
                readonly: true,
            },
        ];
        assert_eq!(a.system.disks, want);
        let guest = LinuxGuest {
            kernel: "/c/vmlinuz".into(),
            initramfs: "/c/initramfs.cpio".into(),
            kernel_version: "6.1.0-56-arm64".into(),
        };
        assert_eq!(a.system.debian_flags(&guest).disks, want);
        // With a config (its one VM takes them) and with --kernel; `build`
        // parses them and refuses them when it builds.
        for ok in [
            &["run", "x.toml", "--disk", "a.img"][..],
            &["run", "--kernel", "k", "--disk", "a.img,readonly"],
            &["build", "--kernel", "k", "--disk", "a.img", "-o", "s.img"],
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        let e = parse(&["run", "--kernel", "k", "--disk", ",readonly"]).expect_err("no file");
        assert_eq!(e.exit_code(), exit_code::BAD_INPUT);
        let help = Cli::command()
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        assert!(help.contains("--disk <FILE[,readonly]>"), "{help}");
    }

    #[test]
    fn net_user_and_forwards_on_the_command_line() {
        let cli = parse(&[
            "run",
            "--debian",
            "--net",
            "user",
            "--forward",
            "18080:8080",
            "--forward",
            "2222:22",
        ])
        .expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            a.system.net_flags(),
            NetFlags {
                user: true,
                forwards: vec![
                    Forward {
                        host: 18080,
                        guest: 8080
                    },
                    Forward {
                        host: 2222,
                        guest: 22
                    }
                ],
            }
        );
        let cli = parse(&["run", "--debian"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.system.net_flags(), NetFlags::default());
        // With a config and --kernel; `build` parses them and refuses the
        // uplink when it builds.
        for ok in [
            &["run", "x.toml", "--net", "user"][..],
            &["run", "x.toml", "--forward", "80:80"],
            &[
                "run",
                "--kernel",
                "k",
                "--net",
                "user",
                "--forward",
                "1:65535",
            ],
            &["build", "--kernel", "k", "--net", "user", "-o", "s.img"],
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        for (bad, says) in [
            (
                &["run", "--debian", "--net", "tap"][..],
                "invalid value 'tap'",
            ),
            (
                &["run", "--debian", "--forward", "8080"],
                "expected HOSTPORT:GUESTPORT",
            ),
            (
                &["run", "--debian", "--forward", "0:80"],
                "host port 0: a port is 1 to 65535",
            ),
            (
                &["run", "--debian", "--forward", "80:99999"],
                "guest port 99999: a port is 1 to 65535",
            ),
        ] {
            let e = parse(bad).expect_err("usage error");
            assert_eq!(e.exit_code(), exit_code::BAD_INPUT, "{bad:?}");
            assert!(e.to_string().contains(says), "{bad:?}: {e}");
        }
        let help = Cli::command()
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        assert!(help.contains("--net <user>"), "{help}");
        assert!(help.contains("--forward <HOSTPORT:GUESTPORT>"), "{help}");
    }

    #[test]
    fn latest_on_fetch_and_run_debian() {
        let cli = parse(&["fetch", "debian", "--latest"]).expect("parses");
        let Command::Fetch(f) = cli.command else {
            panic!("not fetch")
        };
        assert_eq!(kernel_choice(f.latest), KernelChoice::Latest);
        let cli = parse(&["run", "--debian", "--latest", "--exec", "uname -r"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(kernel_choice(a.system.latest), KernelChoice::Latest);
        // --latest needs --debian.
        let e = parse(&["run", "--latest"]).expect_err("usage error");
        assert_eq!(e.exit_code(), exit_code::BAD_INPUT);
    }

    #[test]
    fn stats_and_trace_arguments() {
        let cli = parse(&["stats", "--pid", "42"]).expect("parses");
        assert!(matches!(cli.command, Command::Stats { pid: Some(42) }));
        let cli = parse(&["console", "linux", "--pid", "7"]).expect("parses");
        assert!(matches!(&cli.command, Command::Console { name, pid: Some(7) } if name == "linux"));
        assert!(parse(&["console"]).is_err(), "the VM's name is needed");
        let cli = parse(&["trace", "-o", "t.svg", "--seconds", "2.5"]).expect("parses");
        let Command::Trace(t) = cli.command else {
            panic!("not trace")
        };
        assert_eq!(t.output, PathBuf::from("t.svg"));
        assert_eq!(t.seconds, Some(Duration::from_millis(2500)));
        assert_eq!(t.pid, None);
        assert!(parse(&["trace"]).is_err(), "-o is required");
        let cli = parse(&["run", "--kernel", "k", "--trace", "out.svg"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.trace, Some(PathBuf::from("out.svg")));
    }

    #[test]
    fn help_lists_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("3  timeout"), "{help}");
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").expect("run");
        let help = run.render_long_help().to_string();
        assert!(help.contains("5  a VM crashed"), "{help}");
        assert!(help.contains("6  a command run with --exec"), "{help}");
        assert!(help.contains("--exec <CMD>"), "{help}");
        assert!(help.contains("--deterministic"), "{help}");
        assert!(help.contains("--debian"), "{help}");
        assert!(help.contains("STRATUM_CACHE"), "{help}");
        let fetch = cmd.find_subcommand_mut("fetch").expect("fetch");
        let help = fetch.render_long_help().to_string();
        for needle in [
            "initramfs: PATH",
            "--latest",
            "pins",
            "STRATUM_DEBIAN_MIRROR",
            "never used",
            "SHA-256",
        ] {
            assert!(help.contains(needle), "{needle}: {help}");
        }
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let cli = parse(&["run", "--kernel", "/nonexistent/k", "--memory", "12Q"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        let e = a.system.config().expect_err("bad");
        let msg = e.to_string();
        assert!(msg.contains("--memory: bad size \"12Q\""), "{msg}");
        assert!(
            msg.contains("--kernel: /nonexistent/k: file not found"),
            "{msg}"
        );
        assert_eq!(
            execute(&parse(&["check", "/nonexistent.toml"]).expect("parses")),
            2
        );
    }
}
