//! The system description: which VMs to run, with what kernel, memory and
//! vCPUs, on what emulated machine. Read from TOML ([`Config::load`]) or built
//! from `stratum run --kernel …` flags ([`Config::from_flags`]); both go
//! through the same validation, so a [`Config`] is always one the hypervisor
//! can be given.
//!
//! ```toml
//! [machine]            # optional: the emulated host
//! cpus = 2             # physical CPUs (-smp); default: the most vCPUs of any VM
//! gic = 3              # 2 or 3 (default 3)
//! cpu = "cortex-a57"   # or "max" (default "cortex-a57")
//! memory = "2G"        # host RAM; default: all VM memory + boot bundle + 256 MiB
//!
//! [[vm]]
//! name = "hello"               # [A-Za-z0-9_-], at most 31 bytes; default "vm<index>"
//! kernel = "hello.elf"         # Image, AArch64 ELF or raw binary; relative to this file
//! initrd = "initrd.cpio"       # optional, relative to this file
//! cmdline = "console=ttyAMA0"  # optional
//! cpus = 1                     # vCPUs, 1..=8 (default 1)
//! memory = "128M"              # default 128M; a multiple of 2 MiB
//! memory_base = "0x40000000"   # guest-physical RAM base, 2 MiB aligned (default 0x4000_0000)
//! ```
//!
//! Several VMs share the machine; `[system]`, per-VM `placement`, `pcpus`,
//! `on_crash`, `dt_fragment` (extra device-tree nodes), `[[vm.device]]`
//! (passthrough) and `[[channel]]` (shared
//! memory between two VMs) say how ([`partition`]); `[[network]]`,
//! per-VM `vsock` and `virtio_console`, and `[[vsock]]` give VMs virtio
//! devices ([`virtio`]); `[[vm.disk]]` gives a VM disks, which the
//! service VM (`role = "service"`, added when no VM has it) serves
//! ([`disks`]); `uplink = true` on a `[[network]]` (or `--net user`)
//! makes it the uplink, which the service VM bridges to the outside
//! ([`uplink`]). The full reference with examples is
//! `docs/config.md`. The defaults the file leaves open are
//! resolved here, so the bundle carries only final values: each vCPU's
//! physical CPU, each channel's number, address and doorbell in each VM.
//!
//! Sizes are integers (bytes) or strings as described in [`crate::size`].
//! Unknown keys are errors. Every error names the file, line:column and field
//! (`configs/x.toml:7:10: vm[0].memory: bad size "12Q": …`), or in flag mode
//! the flag (`--memory: bad size …`). All errors found are reported at once.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use stratum_core::image::{KernelInfo, Placement};
use toml::Spanned;

pub use stratum_abi::bundle::{OnCrash, StopPolicy};

use crate::kernel;
use crate::size::format_size;
use crate::{Error, Result};
use raw::{Diagnostics, RawConfig, RawSize, RawVm, Source};

use crate::linux::LinuxGuest;
use validate::validate;

mod channels;
mod devices;
mod disks;
mod partition;
mod raw;
mod uplink;
mod validate;
mod virtio;

pub use disks::{
    ADDED_SERVICE_MEMORY, FIRST_DISK_TRANSPORT, MAX_SERVED_DISKS, SERVICE_CMDLINE,
    service_transport,
};
pub use uplink::{
    DHCP_PARAM, FIRST_LEASE, Forward, UPLINK_PARAM, UPLINK_TRANSPORT, UplinkConfig, uplink_mac,
};
pub use virtio::{CONSOLE_TRANSPORT, FIRST_NIC_TRANSPORT, VSOCK_TRANSPORT};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A VM's memory when the config does not say.
pub const DEFAULT_VM_MEMORY: u64 = 128 * MIB;
/// A VM's guest-physical RAM base when the config does not say (as QEMU `virt`).
pub const DEFAULT_MEMORY_BASE: u64 = 0x4000_0000;
/// Most vCPUs one VM may have.
pub const MAX_VCPUS: u32 = 8;
/// Most VMs one system may have.
pub const MAX_VMS: usize = stratum_abi::bundle::MAX_VMS;
/// Longest VM name in bytes (the bundle stores it NUL-terminated in 32).
pub const MAX_NAME_LEN: usize = 31;
/// Guest RAM granule: VM memory sizes and bases are multiples of this.
pub const RAM_ALIGN: u64 = 2 * MIB;
/// Room the hypervisor needs in a VM's RAM for the guest device tree.
pub const DTB_RESERVE: u64 = 2 * MIB;
/// Guest-physical window of the emulated devices (GIC distributor, GICv2 CPU
/// interface or GICv3 redistributors, PL011) that guest RAM must not overlap.
pub const DEVICE_WINDOW: Range<u64> = 0x0800_0000..0x0A00_0000;
/// The end of `virt`'s flash banks, which a firmware VM sees at 0: the
/// hypervisor's own map (`stratum_core::flash::FLASH`).
pub const FLASH_END: u64 = stratum_core::flash::FLASH.end().0;
/// Host RAM the hypervisor keeps for itself, on top of the VMs' memory.
pub const HYPERVISOR_RESERVE: u64 = 256 * MIB;
/// Host RAM is rounded up to a multiple of this.
pub const HOST_MEMORY_GRANULE: u64 = 256 * MIB;
/// Most host RAM QEMU `virt` can hold: RAM starts at 1 GiB and must end
/// below the high-memory hole at 256 GiB.
pub const MAX_HOST_MEMORY: u64 = 255 * GIB;
/// Where host RAM starts on QEMU `virt` (no passthrough region may overlap it).
pub const HOST_RAM_BASE: u64 = GIB;
/// How far into host RAM QEMU `virt` puts what follows the kernel (with at
/// least 256 MiB of RAM): an `-initrd`, else the host device tree, unless
/// the kernel reaches further.
pub const BUNDLE_LOAD_OFFSET: u64 = 128 * MIB;
/// Room after the bundle for the host device tree QEMU places there.
pub const HOST_DTB_ROOM: u64 = 2 * MIB;

/// The end of the host RAM that the hypervisor, the host DT and a boot
/// bundle of `bundle_size` bytes take at boot on `virt`: an
/// identity-mapped VM's RAM must start at or above it. At least
/// [`HYPERVISOR_RESERVE`] above [`HOST_RAM_BASE`], 2 MiB aligned.
///
/// It holds for both ways the bundle travels: as an `-initrd` at
/// [`BUNDLE_LOAD_OFFSET`], and inside the system image at RAM + 2 MiB +
/// the hypervisor's footprint (a few MiB), where QEMU puts the DT at
/// [`BUNDLE_LOAD_OFFSET`] or right after the image, whichever is higher:
/// both end below `BUNDLE_LOAD_OFFSET + bundle_size + HOST_DTB_ROOM` as long
/// as the footprint stays under 120 MiB.
pub fn boot_area_end(bundle_size: u64) -> u64 {
    let bundle_end = BUNDLE_LOAD_OFFSET
        .saturating_add(bundle_size)
        .saturating_add(HOST_DTB_ROOM);
    HOST_RAM_BASE
        .saturating_add(HYPERVISOR_RESERVE.max(bundle_end))
        .next_multiple_of(RAM_ALIGN)
}
/// A channel's size when the config does not say.
pub const DEFAULT_CHANNEL_SIZE: u64 = 4 * KIB;

/// The GIC version of the emulated host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Gic {
    /// GICv2 (with virtualization extensions); at most 8 CPUs.
    #[value(name = "2")]
    V2,
    /// GICv3.
    #[value(name = "3")]
    V3,
}

impl Gic {
    /// The version number, as QEMU's `gic-version=` wants it.
    pub fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    /// Most physical CPUs QEMU `virt` supports with this GIC.
    pub fn max_cpus(self) -> u32 {
        match self {
            Self::V2 => 8,
            Self::V3 => 512,
        }
    }
}

/// The board the system runs on: which machine QEMU emulates, and what the
/// hypervisor finds there (docs/boards.md). Guests see the same `virt`-like
/// machine on every board.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Board {
    /// QEMU `virt`: GICv2 or GICv3, Cortex-A57, A53 or `max`, PL011, RAM at 1 GiB.
    #[default]
    #[value(name = "virt")]
    Virt,
    /// Xilinx ZynqMP ZCU102 (QEMU `xlnx-zcu102`): 4 Cortex-A53, a GIC-400
    /// (GICv2), Cadence UARTs, RAM at 0; booted with the board's DT from
    /// the Debian kernel package.
    #[value(name = "zcu102")]
    Zcu102,
}

impl Board {
    /// The name configs and `--board` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Virt => "virt",
            Self::Zcu102 => "zcu102",
        }
    }

    /// The board's device tree, as a path inside the Debian kernel
    /// package's `usr/lib/linux-image-<release>/` (QEMU writes `virt`'s
    /// itself).
    pub fn kernel_package_dtb(self) -> Option<&'static str> {
        match self {
            Self::Virt => None,
            Self::Zcu102 => Some("xilinx/zynqmp-zcu102-rev1.0.dtb"),
        }
    }

    /// Where the board's RAM starts (its first bank).
    pub fn ram_base(self) -> u64 {
        match self {
            Self::Virt => HOST_RAM_BASE,
            Self::Zcu102 => 0,
        }
    }

    /// Where QEMU's `-kernel` loads the system image on this board: RAM +
    /// 2 MiB (text_offset 0), where `stratum stats` finds its header.
    pub fn image_load_address(self) -> u64 {
        self.ram_base() + 2 * MIB
    }

    /// Most host RAM the board takes. QEMU's `xlnx-zcu102` rewrites the DT's
    /// memory node as one bank from 0, which is right only up to its 2 GiB
    /// low DDR.
    pub fn max_memory(self) -> u64 {
        match self {
            Self::Virt => MAX_HOST_MEMORY,
            Self::Zcu102 => 2 * GIB,
        }
    }

    /// What a machine of this board must be, or why it cannot: the GIC,
    /// the CPU model and the CPU count it has.
    fn check(self, m: &Machine) -> std::result::Result<(), String> {
        match self {
            Self::Virt if m.cpus > m.gic.max_cpus() => Err(format!(
                "GICv{} on QEMU virt supports at most {} CPUs, but the machine has {}",
                m.gic.number(),
                m.gic.max_cpus(),
                m.cpus
            )),
            Self::Virt => Ok(()),
            Self::Zcu102 if m.gic != Gic::V2 => {
                Err("the ZCU102's GIC is a GIC-400 (GICv2): drop gic = 3 / --gic 3".into())
            }
            Self::Zcu102 if m.cpu != CpuModel::CortexA53 => Err(format!(
                "the ZCU102's CPUs are Cortex-A53, not {}: drop the cpu setting",
                m.cpu.qemu_name()
            )),
            Self::Zcu102 if m.cpus > 4 => Err(format!(
                "the ZCU102 has 4 CPUs, but the machine has {}",
                m.cpus
            )),
            Self::Zcu102 => Ok(()),
        }
    }
}

/// The GIC a board has when the config does not say.
pub fn default_gic(board: Board) -> Gic {
    match board {
        Board::Virt => Gic::V3,
        Board::Zcu102 => Gic::V2,
    }
}

/// The CPU model a board has when the config does not say.
pub fn default_cpu(board: Board) -> CpuModel {
    match board {
        Board::Virt => CpuModel::CortexA57,
        Board::Zcu102 => CpuModel::CortexA53,
    }
}

/// The emulated host CPU model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuModel {
    /// Cortex-A57 (ARMv8.0): the reference machine.
    #[value(name = "cortex-a57")]
    CortexA57,
    /// QEMU's `max`: every feature QEMU emulates (VHE, 16-bit VMIDs, RNG, …).
    #[value(name = "max")]
    Max,
    /// Cortex-A53 (ARMv8.0, in order): the ZCU102's, and many boards'.
    #[value(name = "cortex-a53")]
    CortexA53,
}

impl CpuModel {
    /// The name QEMU's `-cpu` wants.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Self::CortexA57 => "cortex-a57",
            Self::Max => "max",
            Self::CortexA53 => "cortex-a53",
        }
    }
}

/// The emulated host machine, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The board.
    pub board: Board,
    /// Physical CPUs (`-smp`).
    pub cpus: u32,
    /// GIC version.
    pub gic: Gic,
    /// CPU model.
    pub cpu: CpuModel,
    /// Host RAM in bytes (`-m`): the config's override, or computed.
    pub memory: u64,
    /// Whether `cpus` was given explicitly (otherwise it follows the VMs).
    pub cpus_explicit: bool,
    /// Whether the GIC and the CPU model were given explicitly (otherwise
    /// they follow the board).
    pub gic_explicit: bool,
    /// See `gic_explicit`.
    pub cpu_explicit: bool,
}

/// A kernel as inspected at validation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSummary {
    /// What the file is.
    pub info: KernelInfo,
    /// Where it goes in the VM's RAM.
    pub placement: Placement,
    /// Size of the file on disk.
    pub file_size: u64,
    /// Size of the blob that goes into the bundle (the flattened ELF, or the whole file).
    pub blob_size: u64,
}

/// The `[system]` settings, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    /// Round-robin time slice on shared physical CPUs, in microseconds.
    pub slice_us: u32,
    /// When the hypervisor stops.
    pub stop: StopPolicy,
}

/// How a VM's vCPUs use physical CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPlacement {
    /// Each vCPU owns one physical CPU exclusively (static partitioning).
    Pinned,
    /// The vCPUs time-share physical CPUs round-robin.
    Shared,
}

/// A passthrough device, validated: identity mapped, its SPIs forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// DT node name (before `@`).
    pub name: String,
    /// DT compatible list, most specific first.
    pub compatible: Vec<String>,
    /// Physical (= guest-physical) base, 4 KiB aligned.
    pub base: u64,
    /// Size, a non-zero multiple of 4 KiB.
    pub size: u64,
    /// Physical SPI numbers (INTID − 32), level high.
    pub interrupts: Vec<u32>,
}

impl DeviceConfig {
    /// The compatible list as the DT (and the bundle) stores it:
    /// NUL-separated, NUL-terminated.
    pub fn compatible_bytes(&self) -> Vec<u8> {
        self.compatible
            .iter()
            .flat_map(|c| c.bytes().chain([0]))
            .collect()
    }
}

/// One VM's end of a channel, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelEndConfig {
    /// Index of the VM in [`Config::vms`].
    pub vm: usize,
    /// The channel's number in that VM (0.. in config order).
    pub id: u32,
    /// Guest-physical address of the shared memory in that VM.
    pub ipa: u64,
    /// Doorbell SPI in that VM (48 + `id`).
    pub spi: u32,
}

/// A shared-memory channel between two VMs, validated and resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Name (`[A-Za-z0-9_-]{1,31}`).
    pub name: String,
    /// Bytes of shared memory (4 KiB multiple, 4 KiB to 2 MiB).
    pub size: u64,
    /// The two ends, in the order the config lists the VMs.
    pub ends: [ChannelEndConfig; 2],
}

/// A VM's NIC on a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicConfig {
    /// Index of the VM in [`Config::vms`].
    pub vm: usize,
    /// Its MAC ([`stratum_virtio::net::derive_mac`] of the VM and network
    /// names).
    pub mac: [u8; 6],
    /// Its virtio-mmio transport in the VM.
    pub transport: u32,
}

/// A network (`[[network]]`): a virtual switch between the NICs of its
/// VMs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Name (`[A-Za-z0-9_-]{1,31}`), unique.
    pub name: String,
    /// The NICs, port *i* being the *i*-th VM listed (on the uplink
    /// network, the service VM last when the table does not list it).
    pub nics: Vec<NicConfig>,
    /// The uplink (`uplink = true`, `--net user`): the service VM bridges
    /// it to the outside ([`Config::uplink`]).
    pub uplink: bool,
}

/// A VM's vsock device (`vsock = true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// Its CID: [`stratum_abi::bundle::VSOCK_CID_BASE`] + the VM's index.
    pub cid: u32,
    /// Its virtio-mmio transport in the VM ([`VSOCK_TRANSPORT`]).
    pub transport: u32,
    /// The VMs it may connect to and be connected from (`[[vsock]]`
    /// pairs), by index; every other connection is refused.
    pub peers: Vec<usize>,
}

/// A disk (`[[vm.disk]]`, `--disk`), validated and resolved: a virtio-blk
/// device of its VM (the frontend), served by the service VM from QEMU's
/// `virtio-blk-device` for it. Its number is its index in
/// [`Config::disks`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// Index of the VM whose disk it is, in [`Config::vms`].
    pub vm: usize,
    /// The image file: absolute, canonical.
    pub image: PathBuf,
    /// Read-only: the frontend's writes are refused, QEMU opens it
    /// read-only.
    pub readonly: bool,
    /// Its capacity in 512-byte sectors (the image's size / 512).
    pub sectors: u64,
    /// Its virtio-mmio transport in the frontend.
    pub transport: u32,
    /// The transport of its QEMU device, passed through to the service VM
    /// ([`service_transport`]): QEMU's `virtio-mmio-bus.<N>`.
    pub backend_transport: u32,
}

/// A disk given on the command line: `--disk FILE[,readonly]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskFlag {
    /// The image (relative to the current directory).
    pub image: PathBuf,
    /// `,readonly`.
    pub readonly: bool,
}

impl std::str::FromStr for DiskFlag {
    type Err = String;

    /// `FILE` or `FILE,readonly`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (image, readonly) = match s.strip_suffix(",readonly") {
            Some(image) => (image, true),
            None => (s, false),
        };
        if image.is_empty() {
            return Err("expected FILE or FILE,readonly".to_owned());
        }
        Ok(Self {
            image: image.into(),
            readonly,
        })
    }
}

/// One VM, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// Name: `[A-Za-z0-9_-]{1,31}`, unique.
    pub name: String,
    /// Kernel file (resolved path).
    pub kernel: PathBuf,
    /// What the kernel is and where it goes.
    pub kernel_summary: KernelSummary,
    /// Initrd file (resolved path), if any.
    pub initrd: Option<PathBuf>,
    /// Initrd size in bytes (0 without an initrd).
    pub initrd_size: u64,
    /// An extra device-tree fragment (a DTB) whose root's child nodes join
    /// the VM's generated device tree.
    pub dt_fragment: Option<PathBuf>,
    /// Its size in bytes (0 without one).
    pub dt_fragment_size: u64,
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs, 1..=[`MAX_VCPUS`].
    pub cpus: u32,
    /// RAM size in bytes: a multiple of [`RAM_ALIGN`].
    pub memory: u64,
    /// Guest-physical RAM base: a multiple of [`RAM_ALIGN`].
    pub memory_base: u64,
    /// Identity-mapped (`identity = true`): the RAM sits at host-physical
    /// `memory_base` too, so a device passed through to the VM can DMA
    /// with its driver's addresses (ADR 0016).
    pub identity: bool,
    /// A firmware-style guest (`firmware = true`: U-Boot built for QEMU
    /// `virt`): its device tree at the start of RAM, where such firmware
    /// looks for it, and `virt`'s flash banks at 0, erased.
    pub firmware: bool,
    /// Pinned or shared vCPUs.
    pub placement: CpuPlacement,
    /// Physical CPU of each vCPU (resolved; one entry per vCPU).
    pub pcpus: Vec<u32>,
    /// What the hypervisor does when the VM crashes.
    pub on_crash: OnCrash,
    /// Passthrough devices.
    pub devices: Vec<DeviceConfig>,
    /// A command the Debian guest runs once booted, then powers off
    /// (`exec = "…"`, `--exec`): its initramfs gets
    /// [`crate::linux::initramfs::exec_overlay`] appended.
    pub exec: Option<String>,
    /// Its vsock device, if it has one.
    pub vsock: Option<VsockConfig>,
    /// Whether it has a virtio-console (transport [`CONSOLE_TRANSPORT`]).
    pub virtio_console: bool,
    /// The service VM (`role = "service"`): identity-mapped, it serves
    /// every disk through its vsock device, whose link is the hypervisor's.
    pub service: bool,
}

/// Where a `debian = true` VM's kernel and initramfs come from: called at
/// most once per validation, only when a VM asks for Debian.
pub type DebianSource<'a> = dyn FnMut() -> Result<LinuxGuest> + 'a;

/// The Debian guest with the pinned kernel
/// ([`crate::linux::KERNEL_PIN`]) from the default cache, fetched when
/// missing.
pub fn fetch_debian_guest() -> Result<LinuxGuest> {
    crate::linux::prepare_debian(&crate::linux::default_cache_dir()?, true)
}

/// Memory of a Debian VM unless it says otherwise.
pub const DEBIAN_DEFAULT_MEMORY: u64 = 512 * MIB;

/// What every Debian VM's kernel command line starts with.
pub const DEBIAN_CMDLINE: &str = "console=ttyAMA0";

/// A validated system description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The emulated host.
    pub machine: Machine,
    /// System-wide settings.
    pub system: SystemConfig,
    /// The VMs, in order (1..=[`MAX_VMS`]).
    pub vms: Vec<VmConfig>,
    /// Shared-memory channels, in order.
    pub channels: Vec<ChannelConfig>,
    /// Networks, in order.
    pub networks: Vec<NetworkConfig>,
    /// Disks, numbered in order.
    pub disks: Vec<DiskConfig>,
    /// The service VM's index in [`Config::vms`], if there is one.
    pub service: Option<usize>,
    /// Whether the tool added the service VM (the config has disks or an
    /// uplink, and no `role = "service"`).
    pub service_added: bool,
    /// The uplink, when a network is one: the service VM's QEMU NIC that
    /// bridges it to QEMU's user-mode network, and the forwarded ports.
    pub uplink: Option<UplinkConfig>,
    /// The config file, or `None` when built from flags.
    pub source: Option<PathBuf>,
}

/// The `stratum run --kernel …` flags that describe a single VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmFlags {
    /// `--kernel`.
    pub kernel: PathBuf,
    /// `--initrd`.
    pub initrd: Option<PathBuf>,
    /// `--append`.
    pub append: Option<String>,
    /// `--cpus` (vCPUs of the VM; physical CPUs follow).
    pub cpus: Option<u32>,
    /// `--memory`, as written.
    pub memory: Option<String>,
    /// `--debian`: `kernel` and `initrd` are the fetched Debian guest's, and
    /// the Debian defaults apply (command line, memory).
    pub debian: bool,
    /// `--exec`, for a `--debian` VM.
    pub exec: Option<String>,
    /// `--disk`: the VM's disks, in order.
    pub disks: Vec<DiskFlag>,
}

/// The command line's uplink flags: `--net user` puts the run's one VM
/// (a config's one VM besides the service VM) on an uplink network,
/// `--forward` forwards host ports to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetFlags {
    /// `--net user`.
    pub user: bool,
    /// `--forward`, in order (they need an uplink).
    pub forwards: Vec<Forward>,
}

/// What the command line adds to a config file's system: `--disk`s and
/// `--net user` for its one VM besides a service VM, and `--forward`s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileFlags {
    /// `--disk`.
    pub disks: Vec<DiskFlag>,
    /// `--net user`, `--forward`.
    pub net: NetFlags,
}

impl Config {
    /// Reads, parses and validates a config file, inspecting every kernel
    /// and initrd it names.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &mut fetch_debian_guest)
    }

    /// [`Config::load`] with Debian VMs' guest from `debian`.
    pub fn load_with(path: &Path, debian: &mut DebianSource<'_>) -> Result<Self> {
        let text = fs::read_to_string(path)
            .map_err(|e| Error::input(format!("{}: cannot read config: {e}", path.display())))?;
        Self::parse_with(&text, path, debian)
    }

    /// Parses and validates config `text`, as if read from `path` (used for
    /// messages and to resolve relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        Self::parse_with(text, path, &mut fetch_debian_guest)
    }

    /// [`Config::parse`] with Debian VMs' guest from `debian`.
    pub fn parse_with(text: &str, path: &Path, debian: &mut DebianSource<'_>) -> Result<Self> {
        Self::parse_with_disks(text, path, &[], debian)
    }

    /// [`Config::load`] plus the command line's `--disk`s, which go to the
    /// config's one VM that is not the service VM (a config of several
    /// such VMs gives each its disks with `[[vm.disk]]`).
    pub fn load_with_disks(path: &Path, disks: &[DiskFlag]) -> Result<Self> {
        Self::load_with_flags(
            path,
            &FileFlags {
                disks: disks.to_vec(),
                ..FileFlags::default()
            },
        )
    }

    /// [`Config::load`] plus what the command line adds ([`FileFlags`]):
    /// `--disk`s and `--net user` go to the config's one VM that is not
    /// the service VM, `--forward`s to its uplink.
    pub fn load_with_flags(path: &Path, flags: &FileFlags) -> Result<Self> {
        let text = fs::read_to_string(path)
            .map_err(|e| Error::input(format!("{}: cannot read config: {e}", path.display())))?;
        Self::parse_with_flags(&text, path, flags, &mut fetch_debian_guest)
    }

    /// [`Config::parse_with`] plus `--disk`s ([`Config::load_with_disks`]).
    pub fn parse_with_disks(
        text: &str,
        path: &Path,
        disks: &[DiskFlag],
        debian: &mut DebianSource<'_>,
    ) -> Result<Self> {
        let flags = FileFlags {
            disks: disks.to_vec(),
            ..FileFlags::default()
        };
        Self::parse_with_flags(text, path, &flags, debian)
    }

    /// [`Config::parse_with`] plus the command line's additions
    /// ([`Config::load_with_flags`]).
    pub fn parse_with_flags(
        text: &str,
        path: &Path,
        flags: &FileFlags,
        debian: &mut DebianSource<'_>,
    ) -> Result<Self> {
        let source = Source::File {
            path: path.to_path_buf(),
            text: text.to_owned(),
        };
        let mut d = Diagnostics::new(&source);
        // Every syntax error, then every unknown key, with their places;
        // the values are checked only in a document that parses.
        let (table, syntax) = toml::de::DeTable::parse_recoverable(text);
        for e in &syntax {
            d.push(e.span(), "", e.message().trim_end());
        }
        if !syntax.is_empty() {
            return Err(Error::input(d.report()));
        }
        raw::unknown_keys(&mut d, table.get_ref());
        let mut raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                d.push(e.span(), "", e.message().trim_end());
                return Err(Error::input(d.report()));
            }
        };
        if !flags.disks.is_empty() {
            add_flag_disks(&mut raw, &flags.disks, path)?;
        }
        if flags.net.user {
            let vm = only_frontend(
                &raw,
                path,
                "--net",
                "--net user puts a config's only VM on an uplink network; put the VMs on a \
                 [[network]] with uplink = true instead",
            )?;
            let name = raw.vm[vm]
                .get_ref()
                .name
                .as_ref()
                .map_or(format!("vm{vm}"), |n| n.get_ref().clone());
            uplink::add_flag_network(&mut raw, name, path)?;
        }
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut config = validate(raw, d, base, debian)?;
        uplink::apply_forwards(&mut config, &flags.net.forwards)?;
        Ok(config)
    }

    /// Whether this build of the hypervisor can run the system
    /// ([`stratum_abi::limits`]): the format allows more vCPUs and VMs than
    /// this version runs. `stratum check` and `stratum run` call it, so the
    /// refusal comes before anything starts, naming the file (or flag) and
    /// the field.
    pub fn check_supported(&self) -> Result<()> {
        use stratum_abi::limits;
        let origin = |field: &str, flag: &str| match &self.source {
            Some(path) => format!("{}: {field}", path.display()),
            None => flag.to_owned(),
        };
        let mut problems = Vec::new();
        if self.vms.len() > limits::RUNNING_VMS {
            problems.push(format!(
                "{}: {} VMs{}: this version of Stratum runs at most {} VMs at a time",
                origin("vm", "--kernel"),
                self.vms.len(),
                if self.service_added {
                    format!(
                        ", with the service VM added for the {}",
                        match (self.disks.is_empty(), self.uplink.is_some()) {
                            (false, true) => "disks and the uplink",
                            (true, true) => "uplink",
                            _ => "disks",
                        }
                    )
                } else {
                    String::new()
                },
                limits::RUNNING_VMS
            ));
        }
        for (i, vm) in self.vms.iter().enumerate() {
            if vm.cpus > limits::VCPUS_PER_VM {
                problems.push(format!(
                    "{}: {} vCPUs: this version of Stratum runs at most {} vCPUs per VM",
                    origin(&format!("vm[{i}].cpus"), "--cpus"),
                    vm.cpus,
                    limits::VCPUS_PER_VM
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::input(problems.join("\n")))
        }
    }

    /// Builds and validates a one-VM config from command-line flags. Errors
    /// name the flag. Paths are relative to the current directory. With
    /// `--disk`, the tool adds the service VM, with the Debian guest from
    /// the default cache (fetched when missing; `--debian`'s own guest when
    /// the VM is Debian).
    pub fn from_flags(flags: &VmFlags) -> Result<Self> {
        Self::from_flags_net(flags, &NetFlags::default())
    }

    /// [`Config::from_flags`] plus `--net user` and `--forward`s: with
    /// `--net user` the VM is on an uplink network, which brings the
    /// service VM too.
    pub fn from_flags_net(flags: &VmFlags, net: &NetFlags) -> Result<Self> {
        let guest = LinuxGuest {
            kernel: flags.kernel.clone(),
            initramfs: flags.initrd.clone().unwrap_or_default(),
            kernel_version: String::new(),
        };
        if flags.debian {
            Self::from_flags_net_with(flags, net, &mut || Ok(guest.clone()))
        } else {
            Self::from_flags_net_with(flags, net, &mut fetch_debian_guest)
        }
    }

    /// [`Config::from_flags`] with every Debian VM's guest from `debian`
    /// (`--debian` VM included).
    pub fn from_flags_with(flags: &VmFlags, debian: &mut DebianSource<'_>) -> Result<Self> {
        Self::from_flags_net_with(flags, &NetFlags::default(), debian)
    }

    /// [`Config::from_flags_net`] with every Debian VM's guest from
    /// `debian` (`--debian` VM included).
    ///
    /// A run of one VM with disks or an uplink stops when that VM does
    /// ([`StopPolicy::Any`]): the service VM the tool adds never powers
    /// off by itself.
    pub fn from_flags_net_with(
        flags: &VmFlags,
        net: &NetFlags,
        debian: &mut DebianSource<'_>,
    ) -> Result<Self> {
        let none = 0..0;
        let name = flags
            .kernel
            .file_stem()
            .filter(|_| !flags.debian)
            .map(|s| sanitize_name(&s.to_string_lossy()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| if flags.debian { "debian" } else { "vm0" }.to_owned());
        let path = |p: &Path| Some(Spanned::new(none.clone(), p.to_string_lossy().into_owned()));
        let vm = RawVm {
            name: Some(Spanned::new(none.clone(), name)),
            kernel: if flags.debian {
                None
            } else {
                path(&flags.kernel)
            },
            initrd: flags
                .initrd
                .as_deref()
                .filter(|_| !flags.debian)
                .and_then(path),
            debian: flags.debian.then(|| Spanned::new(none.clone(), true)),
            exec: flags.exec.clone().map(|s| Spanned::new(none.clone(), s)),
            vsock: None,
            virtio_console: None,
            cmdline: flags.append.clone().map(|s| Spanned::new(none.clone(), s)),
            cpus: flags.cpus.map(|n| Spanned::new(none.clone(), i64::from(n))),
            memory: flags
                .memory
                .clone()
                .map(|s| Spanned::new(none.clone(), RawSize::Str(s))),
            memory_base: None,
            identity: None,
            firmware: None,
            placement: None,
            pcpus: None,
            on_crash: None,
            dt_fragment: None,
            role: None,
            device: Vec::new(),
            disk: flags
                .disks
                .iter()
                .map(|disk| {
                    Spanned::new(
                        none.clone(),
                        raw::RawDisk {
                            image: path(&disk.image),
                            readonly: Some(Spanned::new(none.clone(), disk.readonly)),
                            flag: false,
                        },
                    )
                })
                .collect(),
        };
        let vm_name = vm
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .expect("named above");
        let raw = RawConfig {
            machine: None,
            system: None,
            vm: vec![Spanned::new(none, vm)],
            channel: Vec::new(),
            network: if net.user {
                vec![uplink::flag_network(
                    uplink::FLAG_NETWORK_NAME.to_owned(),
                    vm_name,
                )]
            } else {
                Vec::new()
            },
            vsock: Vec::new(),
        };
        let mut config = validate(raw, Diagnostics::new(&Source::Flags), Path::new(""), debian)?;
        uplink::apply_forwards(&mut config, &net.forwards)?;
        if config.service_added {
            config.system.stop = StopPolicy::Any;
        }
        Ok(config)
    }

    /// Replaces the machine's board, GIC and/or CPU model (the `--board`,
    /// `--gic` and `--cpu` flags, which override a config file's
    /// `[machine]`): a new board brings its own GIC and CPU model unless
    /// they were given. Then checks what the board must have
    /// ([`Config::check_board`]).
    pub fn override_machine(
        &mut self,
        board: Option<Board>,
        gic: Option<Gic>,
        cpu: Option<CpuModel>,
    ) -> Result<()> {
        let m = &mut self.machine;
        if let Some(board) = board.filter(|&b| b != m.board) {
            m.board = board;
            if !m.gic_explicit {
                m.gic = default_gic(board);
            }
            if !m.cpu_explicit {
                m.cpu = default_cpu(board);
            }
        }
        if let Some(gic) = gic {
            m.gic = gic;
            m.gic_explicit = true;
        }
        if let Some(cpu) = cpu {
            m.cpu = cpu;
            m.cpu_explicit = true;
        }
        self.check_board()
    }

    /// Whether the system fits its board: the GIC, CPU model and count the
    /// board has, its RAM, no passthrough region in that RAM, and (other
    /// than on `virt`, whose layout identity placement assumes) no
    /// identity-mapped VM. The hypervisor checks passthrough regions
    /// against the board's DT again at boot (not its RAM, GIC or console).
    pub fn check_board(&self) -> Result<()> {
        let board = self.machine.board;
        let mut problems: Vec<String> = board.check(&self.machine).err().into_iter().collect();
        if self.machine.memory > board.max_memory() {
            problems.push(format!(
                "the system needs {} of host RAM; QEMU's {} model passes at most {} in its DT",
                crate::size::format_size(self.machine.memory),
                board.name(),
                crate::size::format_size(board.max_memory())
            ));
        }
        if board != Board::Virt && !self.disks.is_empty() {
            problems.push(disks::no_disks_on(board));
        }
        if board != Board::Virt && self.uplink.is_some() {
            problems.push(uplink::no_uplink_on(board));
        }
        if board != Board::Virt {
            for vm in &self.vms {
                if vm.identity {
                    problems.push(format!(
                        "VM '{}' is identity-mapped, which only QEMU virt's layout supports so far",
                        vm.name
                    ));
                }
            }
        }
        let ram = board.ram_base()..board.ram_base().saturating_add(self.machine.memory);
        for vm in &self.vms {
            for d in &vm.devices {
                if partition::overlaps(&(d.base..d.base.saturating_add(d.size)), &ram) {
                    problems.push(format!(
                        "VM '{}' passes through '{}' at [{:#x}, {:#x}), inside the board's RAM [{:#x}, {:#x})",
                        vm.name,
                        d.name,
                        d.base,
                        d.base + d.size,
                        ram.start,
                        ram.end
                    ));
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::input(format!(
            "board {}: {}",
            board.name(),
            problems.join("; ")
        )))
    }

    /// A short, human-readable summary (what `stratum check` prints).
    pub fn summary(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "machine: {}, {} CPU{} ({}, GICv{}), {} host RAM\n",
            m.board.name(),
            m.cpus,
            plural(m.cpus),
            m.cpu.qemu_name(),
            m.gic.number(),
            format_size(m.memory)
        );
        out += &format!(
            "system: {} us time slice, stops when {} VM stops\n",
            self.system.slice_us,
            match self.system.stop {
                StopPolicy::All => "every",
                StopPolicy::Any => "any",
            }
        );
        for (i, vm) in self.vms.iter().enumerate() {
            let k = &vm.kernel_summary;
            let kind = match k.info {
                KernelInfo::LinuxImage { .. } => "arm64 Image".to_owned(),
                KernelInfo::Elf(e) => format!("ELF, {} segments", e.segments().len()),
                KernelInfo::Raw { .. } => "raw binary".to_owned(),
            };
            out += &format!(
                "vm[{i}] {:?}: {} vCPU{}, {} RAM at {:#x}{}\n  kernel {} ({kind}): {} loaded at +{:#x}, entry +{:#x}, footprint {}\n",
                vm.name,
                vm.cpus,
                plural(vm.cpus),
                format_size(vm.memory),
                vm.memory_base,
                match (vm.identity, vm.firmware) {
                    (true, true) => {
                        " (identity-mapped: host-physical too; firmware: device tree at RAM base, flash at 0)"
                    }
                    (true, false) => " (identity-mapped: host-physical too)",
                    (false, true) => " (firmware: device tree at RAM base, flash at 0)",
                    (false, false) => "",
                },
                vm.kernel.display(),
                format_size(k.blob_size),
                k.placement.load_offset,
                k.placement.entry_offset,
                format_size(k.placement.footprint),
            );
            if let Some(initrd) = &vm.initrd {
                out += &format!(
                    "  initrd {} ({})\n",
                    initrd.display(),
                    format_size(vm.initrd_size)
                );
            }
            out += &format!("  cmdline {:?}\n", vm.cmdline);
            if vm.service {
                out += &format!(
                    "  the service VM: serves the disks through its vsock device (the hypervisor's link, CID {})\n",
                    stratum_abi::blkproto::HOST_CID
                );
            }
            out += &format!(
                "  {} on physical CPUs {:?}, on crash: {}\n",
                match vm.placement {
                    CpuPlacement::Pinned => "pinned",
                    CpuPlacement::Shared => "shared",
                },
                vm.pcpus,
                match vm.on_crash {
                    OnCrash::Stop => "stop",
                    OnCrash::Restart => "restart",
                }
            );
            for dev in &vm.devices {
                out += &format!(
                    "  device {:?} {:?}: [{:#x}, {:#x}), SPIs {:?}\n",
                    dev.name,
                    dev.compatible,
                    dev.base,
                    dev.base + dev.size,
                    dev.interrupts
                );
            }
        }
        for net in &self.networks {
            out += &format!("network {:?}:", net.name);
            for nic in &net.nics {
                out += &format!(
                    " {:?} {} (transport {})",
                    self.vms[nic.vm].name,
                    stratum_virtio::net::Mac(nic.mac),
                    nic.transport
                );
            }
            out += "\n";
        }
        if let Some(u) = &self.uplink {
            let service = self
                .service
                .map_or_else(|| "no VM".to_owned(), |s| format!("{:?}", self.vms[s].name));
            out += &format!(
                "uplink {:?}: bridged by {service} to QEMU's user-mode network (virtio-mmio-bus.{}, SPI {}, {}); \
                 DHCP {FIRST_LEASE} for the first VM, the host at 10.0.2.2\n",
                self.networks[u.network].name,
                u.transport,
                stratum_abi::bundle::VIRTIO_SPI_BASE + u.transport,
                stratum_virtio::net::Mac(u.mac)
            );
            for f in &u.forwards {
                out += &format!(
                    "forward 127.0.0.1:{} -> {FIRST_LEASE}:{} (TCP)\n",
                    f.host, f.guest
                );
            }
        }
        for vm in &self.vms {
            if let Some(v) = &vm.vsock {
                let peers: Vec<&str> = v.peers.iter().map(|&p| self.vms[p].name.as_str()).collect();
                out += &format!(
                    "vsock {:?}: CID {} (transport {}), may connect to {}\n",
                    vm.name,
                    v.cid,
                    v.transport,
                    if peers.is_empty() {
                        "no VM".to_owned()
                    } else {
                        format!("{peers:?}")
                    }
                );
            }
            if vm.virtio_console {
                out += &format!(
                    "virtio-console {:?}: hvc0 (transport {CONSOLE_TRANSPORT})\n",
                    vm.name
                );
            }
        }
        for (n, disk) in self.disks.iter().enumerate() {
            let vm = &self.vms[disk.vm];
            let letter = self.disks[..n].iter().filter(|o| o.vm == disk.vm).count();
            out += &format!(
                "disk {n} {:?}: {} ({}, {} sectors), {}, /dev/vd{} (transport {}); served by {} (QEMU virtio-mmio-bus.{}, SPI {})\n",
                vm.name,
                disk.image.display(),
                format_size(disk.sectors * stratum_abi::blkproto::SECTOR),
                disk.sectors,
                if disk.readonly {
                    "read-only"
                } else {
                    "read-write"
                },
                disk_letters(letter),
                disk.transport,
                self.service
                    .map_or_else(|| "no VM".to_owned(), |s| format!("{:?}", self.vms[s].name)),
                disk.backend_transport,
                stratum_abi::bundle::VIRTIO_SPI_BASE + disk.backend_transport,
            );
        }
        if let Some(note) = self.service_note() {
            out += &note;
            out += "\n";
        }
        for ch in &self.channels {
            let [a, b] = &ch.ends;
            out += &format!(
                "channel {:?}: {} between {:?} (#{} at {:#x}, SPI {}) and {:?} (#{} at {:#x}, SPI {})\n",
                ch.name,
                format_size(ch.size),
                self.vms[a.vm].name,
                a.id,
                a.ipa,
                a.spi,
                self.vms[b.vm].name,
                b.id,
                b.ipa,
                b.spi
            );
        }
        if let Some(warning) = self.identity_warning() {
            out += &warning;
            out += "\n";
        }
        out
    }

    /// The one line `stratum check` and `stratum run` print when some VM
    /// is identity-mapped: with no SMMU between a device and host memory, a
    /// device such a VM drives can DMA anywhere (ADR 0016).
    pub fn identity_warning(&self) -> Option<String> {
        let names: Vec<String> = self
            .vms
            .iter()
            .filter(|v| v.identity)
            .map(|v| format!("{:?}", v.name))
            .collect();
        (!names.is_empty()).then(|| {
            format!(
                "warning: {} identity-mapped and no SMMU guards host memory: a device passed through \
                 can DMA anywhere, so trust {} like the hypervisor",
                names.join(", ") + if names.len() == 1 { " is" } else { " are" },
                if names.len() == 1 { "that VM" } else { "those VMs" }
            )
        })
    }

    /// Bytes of host RAM the channels take (each once, shared by its VMs).
    pub fn channel_memory(&self) -> u64 {
        self.channels.iter().map(|c| c.size).sum()
    }

    /// Exact size of the boot bundle this config produces.
    pub fn bundle_size(&self) -> u64 {
        kernel::bundle_size(
            self.vms.iter().map(|vm| kernel::BlobSizes {
                kernel: vm.kernel_summary.blob_size,
                initrd: vm.initrd.as_ref().map(|_| vm.initrd_size),
                cmdline: vm.cmdline.len() as u64,
                dt_fragment: vm.dt_fragment.as_ref().map(|_| vm.dt_fragment_size),
            }),
            self.vms.iter().map(|vm| vm.devices.len()).sum(),
            self.channels.len(),
            self.virtio_devices().len(),
        )
    }

    /// Every VM's virtio devices as the boot bundle carries them: each
    /// VM's console, vsock device, NICs and disks, VM by VM.
    pub fn virtio_devices(&self) -> Vec<stratum_abi::bundle::Virtio> {
        use stratum_abi::bundle::{Virtio, VirtioKind};
        let mut out = Vec::new();
        for (i, vm) in self.vms.iter().enumerate() {
            let index = i as u32;
            if vm.virtio_console {
                out.push(Virtio {
                    vm: index,
                    transport: CONSOLE_TRANSPORT,
                    kind: VirtioKind::Console,
                });
            }
            if let Some(v) = &vm.vsock {
                out.push(Virtio {
                    vm: index,
                    transport: v.transport,
                    kind: VirtioKind::Vsock {
                        cid: v.cid,
                        peers: v.peers.iter().fold(0, |m, &p| m | 1 << p),
                    },
                });
            }
            for (network, net) in self.networks.iter().enumerate() {
                for (port, nic) in net.nics.iter().enumerate().filter(|(_, n)| n.vm == i) {
                    out.push(Virtio {
                        vm: index,
                        transport: nic.transport,
                        kind: VirtioKind::Net {
                            network: network as u32,
                            port: port as u16,
                            mac: nic.mac,
                        },
                    });
                }
            }
            for (number, disk) in self.disks.iter().enumerate().filter(|(_, d)| d.vm == i) {
                out.push(Virtio {
                    vm: index,
                    transport: disk.transport,
                    kind: VirtioKind::Blk {
                        disk: number as u32,
                        sectors: disk.sectors,
                        readonly: disk.readonly,
                    },
                });
            }
        }
        out
    }

    /// The line `stratum check` and `stratum run` print when the tool added
    /// the service VM for the disks or the uplink.
    pub fn service_note(&self) -> Option<String> {
        let vm = &self.vms[self.service.filter(|_| self.service_added)?];
        Some(format!(
            "note: added service VM {:?} to {}: Debian, {} vCPU, {} RAM (identity-mapped at {:#x}), \
             time-shared on physical CPU {}, restarted when it crashes (docs/config.md, \"The service VM\")",
            vm.name,
            self.service_serves(),
            vm.cpus,
            format_size(vm.memory),
            vm.memory_base,
            vm.pcpus.first().copied().unwrap_or(0)
        ))
    }

    /// What the service VM does: serve the disks, bridge the uplink, or
    /// both.
    fn service_serves(&self) -> &'static str {
        match (self.disks.is_empty(), self.uplink.is_some()) {
            (false, true) => "serve the disks and bridge the uplink",
            (true, true) => "bridge the uplink",
            _ => "serve the disks",
        }
    }
}

/// Host RAM needed for `vm_memory` bytes of VMs and a bundle of
/// `bundle_size` bytes: both plus [`HYPERVISOR_RESERVE`], rounded up to
/// [`HOST_MEMORY_GRANULE`]. `None` on overflow.
pub fn required_host_memory(vm_memory: u64, bundle_size: u64) -> Option<u64> {
    vm_memory
        .checked_add(bundle_size)?
        .checked_add(HYPERVISOR_RESERVE)?
        .checked_next_multiple_of(HOST_MEMORY_GRANULE)
}

/// Host RAM to give QEMU when the config does not say: the
/// [`required_host_memory`] minimum, except that VM memory of 1 GiB or more
/// gets room to start on a 1 GiB boundary (the hypervisor carves VMs
/// top-down), so stage 2 can map it with 1 GiB blocks. QEMU backs guest RAM
/// lazily, so the slack costs address space, not host memory. Never more
/// than [`MAX_HOST_MEMORY`] unless the minimum already is.
pub fn default_host_memory(vm_memory: u64, bundle_size: u64) -> Option<u64> {
    let required = required_host_memory(vm_memory, bundle_size)?;
    if vm_memory < GIB {
        return Some(required);
    }
    let aligned = bundle_size
        .checked_add(HYPERVISOR_RESERVE)?
        .checked_next_multiple_of(GIB)?
        .checked_add(vm_memory.checked_next_multiple_of(GIB)?)?;
    Some(if aligned <= MAX_HOST_MEMORY {
        aligned.max(required)
    } else {
        required
    })
}

/// The index of the config's one VM that is not the service VM, which a
/// command-line `flag` (`--disk`, `--net`) applies to; an error ending
/// with `instead` (what to write in the file) when there are several.
fn only_frontend(raw: &RawConfig, path: &Path, flag: &str, instead: &str) -> Result<usize> {
    let frontends: Vec<usize> = raw
        .vm
        .iter()
        .enumerate()
        .filter(|(_, v)| !disks::is_service(v.get_ref()))
        .map(|(i, _)| i)
        .collect();
    if let [vm] = frontends[..] {
        return Ok(vm);
    }
    let names: Vec<String> = frontends
        .iter()
        .map(|&i| {
            raw.vm[i]
                .get_ref()
                .name
                .as_ref()
                .map_or(format!("vm{i}"), |n| n.get_ref().clone())
        })
        .map(|n| format!("{n:?}"))
        .collect();
    Err(Error::input(format!(
        "{flag}: {} has {} VMs besides the service VM{}: {instead} (docs/config.md)",
        path.display(),
        frontends.len(),
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    )))
}

/// Gives the command line's `--disk`s to the config's one VM that is not
/// the service VM, as `[[vm.disk]]` tables whose problems name the flag;
/// relative paths are the current directory's.
fn add_flag_disks(raw: &mut RawConfig, disks: &[DiskFlag], path: &Path) -> Result<()> {
    let vm = only_frontend(
        raw,
        path,
        "--disk",
        "--disk gives its disks to a config's only VM; give each VM its disks with [[vm.disk]] tables instead",
    )?;
    let cwd = std::env::current_dir()
        .map_err(|e| Error::environment(format!("cannot read the current directory: {e}")))?;
    let none = 0..0;
    for disk in disks {
        let image = cwd.join(&disk.image).to_string_lossy().into_owned();
        raw.vm[vm].get_mut().disk.push(Spanned::new(
            none.clone(),
            raw::RawDisk {
                image: Some(Spanned::new(none.clone(), image)),
                readonly: Some(Spanned::new(none.clone(), disk.readonly)),
                flag: true,
            },
        ));
    }
    Ok(())
}

/// The letters Linux gives a VM's disk `k` (0-based): `a`, …, `z`, `aa`, ….
fn disk_letters(k: usize) -> String {
    let mut k = k;
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (k % 26) as u8);
        if k < 26 {
            break;
        }
        k = k / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Turns a file stem into a valid VM name.
fn sanitize_name(stem: &str) -> String {
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME_LEN)
        .collect()
}

#[cfg(test)]
use raw::line_col;
#[cfg(test)]
mod tests;
