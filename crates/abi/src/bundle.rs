//! The boot bundle: one little-endian blob that carries the system
//! description and every guest image from the host tool to the hypervisor.
//!
//! The host tool puts it inside the system image, after the hypervisor
//! ([`crate::sysimg`]: `stratum build`, `stratum run`); the hypervisor finds
//! it through its own image header. A plain hypervisor image takes it as
//! its "initrd" instead (QEMU `-initrd`, or U-Boot's `booti` initrd
//! argument), found through the host device tree's
//! `/chosen/linux,initrd-{start,end}`. It stays in memory as the pristine
//! copy used when a VM restarts.
//!
//! The host tool resolves everything (physical CPUs of each vCPU, channel
//! numbers, addresses and doorbell interrupts); the hypervisor only applies
//! it. [`Bundle::parse`] checks every record and every cross-record rule the
//! hypervisor relies on (indices in range, CPUs and interrupts not claimed
//! twice, regions that do not overlap), so the accessors cannot fail after
//! it succeeded.
//!
//! Layout (every integer little-endian; offsets are from the start of the bundle):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"STRATBN1"` |
//! | 8 | 4 | format version ([`VERSION`]) |
//! | 12 | 4 | number of VM records (1..=[`MAX_VMS`]) |
//! | 16 | 8 | total size in bytes |
//! | 24 | 4 | flags ([`FLAG_SEMIHOSTING_EXIT`], [`FLAG_SELFTEST_EL2_FAULT`], [`FLAG_CONSOLE_COLOR`], [`FLAG_QEMU_GIC`]) |
//! | 28 | 4 | time slice in µs ([`SLICE_US_MIN`]..=[`SLICE_US_MAX`]) |
//! | 32 | 4 | stop policy ([`StopPolicy`]) |
//! | 36 | 4 | number of device records (0..=[`MAX_DEVICES`]) |
//! | 40 | 4 | number of channel records (0..=[`MAX_CHANNELS`]) |
//! | 44 | 4 | number of virtio device records (0..=[`MAX_VIRTIO`]) |
//! | 48 | 16 | host entropy: seeds each VM's SMCCC TRNG (zero under `--deterministic`) |
//! | 64 | [`VM_RECORD_SIZE`] × VMs | VM records |
//! | … | [`DEVICE_RECORD_SIZE`] × devices | passthrough device records |
//! | … | [`CHANNEL_RECORD_SIZE`] × channels | channel records |
//! | … | [`VIRTIO_RECORD_SIZE`] × virtio devices | virtio device records |
//! | … | | blobs (kernels, initrds, command lines), each at a 4 KiB-aligned offset |
//!
//! A VM record ([`VM_RECORD_SIZE`] bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | name, UTF-8, NUL-padded |
//! | 32 | 4 | vCPU count (1..=[`limits::VCPUS_PER_VM`]) |
//! | 36 | 4 | kernel kind ([`KernelKind`]) |
//! | 40 | 8 | guest-physical RAM base |
//! | 48 | 8 | RAM size |
//! | 56 | 8 | kernel blob offset |
//! | 64 | 8 | kernel blob size |
//! | 72 | 8 | kernel load offset from the RAM base |
//! | 80 | 8 | entry point offset from the RAM base |
//! | 88 | 8 | kernel footprint: bytes from the load offset the kernel owns (image + bss) |
//! | 96 | 8 | initrd blob offset (0 when absent) |
//! | 104 | 8 | initrd size (0 when absent) |
//! | 112 | 8 | command line offset |
//! | 120 | 8 | command line length (no NUL) |
//! | 128 | 4 | placement: 1 pinned (each vCPU owns its physical CPU), 0 shared (round-robin) |
//! | 132 | 4 | on crash ([`OnCrash`]) |
//! | 136 | 8 | physical CPU of vCPU *i* in byte *i* (< [`limits::PHYSICAL_CPUS`]; bytes ≥ vCPU count zero) |
//! | 144 | 8 | extra DT fragment blob offset (0 when absent) |
//! | 152 | 8 | extra DT fragment size (0 when absent; at most [`DT_FRAGMENT_MAX`]) |
//! | 160 | 4 | VM flags ([`VM_FLAG_IDENTITY`], [`VM_FLAG_FIRMWARE`]; other bits zero) |
//! | 164 | 92 | reserved, zero |
//!
//! A passthrough device record ([`DEVICE_RECORD_SIZE`] bytes); the region is
//! identity mapped (guest-physical = physical), its interrupts are physical
//! SPIs forwarded with the same number:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | name, UTF-8, NUL-padded (the DT node name before `@`) |
//! | 32 | 4 | index of the VM that owns it |
//! | 36 | 4 | number of interrupts (0..=[`limits::IRQS_PER_DEVICE`]) |
//! | 40 | 8 | base address (4 KiB aligned) |
//! | 48 | 8 | size (non-zero, 4 KiB multiple) |
//! | 56 | 16 | SPI numbers (INTID − 32), unused entries zero |
//! | 72 | 4 | length of the compatible list (1..=[`COMPATIBLE_LEN`]) |
//! | 76 | 4 | reserved, zero |
//! | 80 | 96 | compatible list: NUL-separated, NUL-terminated strings, zero-padded |
//! | 176 | 16 | reserved, zero |
//!
//! A channel record ([`CHANNEL_RECORD_SIZE`] bytes): shared memory between
//! two VMs, one end per VM:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | name, UTF-8, NUL-padded |
//! | 32 | 8 | size ([`CHANNEL_SIZE_MIN`]..=[`CHANNEL_SIZE_MAX`], 4 KiB multiple) |
//! | 40 | 24 | end 0 (below) |
//! | 64 | 24 | end 1 |
//! | 88 | 8 | reserved, zero |
//!
//! A channel end (24 bytes): VM index (u32), channel number within that VM
//! (u32, < [`limits::CHANNELS_PER_VM`]), guest-physical address of the shared
//! memory in that VM (u64, 4 KiB aligned, inside [`CHANNEL_WINDOW`]), doorbell
//! SPI in that VM (u32, [`DOORBELL_SPI_BASE`] + number), reserved (u32).
//!
//! A virtio device record ([`VIRTIO_RECORD_SIZE`] bytes): one paravirtual
//! device behind one of a VM's virtio-mmio transports. Every VM has
//! [`VIRTIO_TRANSPORTS`] of them (QEMU `virt`'s: transport *n* at
//! [`VIRTIO_WINDOW`] start + 0x200·*n*, SPI [`VIRTIO_SPI_BASE`] + *n*,
//! reading DeviceID 0 where nothing is attached) unless a passthrough
//! device takes their window or SPIs, so none of a VM's passthrough
//! devices may do so when it has a virtio record:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | index of the VM |
//! | 4 | 4 | kind: the virtio device ID ([`VirtioKind`]: 1 net, 2 block, 3 console, 19 vsock) |
//! | 8 | 4 | transport number (0..[`VIRTIO_TRANSPORTS`]), unique in the VM |
//! | 12 | 4 | net: network index (< [`MAX_NETWORKS`]); vsock: the guest CID ([`VSOCK_CID_BASE`] + VM index); block: the disk's number (< [`MAX_DISKS`], unique in the bundle); console: 0 |
//! | 16 | 6 | net: the MAC (unicast); block: the low 6 bytes of the capacity in sectors; otherwise zero |
//! | 22 | 2 | net: the port on its network (< [`MAX_VMS`]), unique on it; block: the capacity's high 2 bytes; otherwise zero |
//! | 24 | 4 | vsock: the VMs it may connect to, bit *i* for VM *i* (each with a vsock device that allows this VM back); block: flags ([`DISK_READONLY`]); otherwise zero |
//! | 28 | 4 | reserved, zero |

use core::ops::Range;

use crate::bytes::{le_u32, le_u64};
use crate::limits;

/// VM flag: the VM's RAM is identity-mapped (host-physical address =
/// guest-physical address, `mem_base`): the boot plan must find exactly that
/// host range free, or refuse the system.
pub const VM_FLAG_IDENTITY: u32 = 1 << 0;
/// VM flag: a firmware-style guest (U-Boot built for QEMU `virt`). Its
/// device tree goes at the start of its RAM, where QEMU leaves it for
/// firmware and such a guest looks for it (rather than high; `x0` points at
/// it either way), and it sees `virt`'s two flash banks at 0 (erased,
/// write-protected), which it reads its environment from.
pub const VM_FLAG_FIRMWARE: u32 = 1 << 1;
/// VM flag: the service VM (at most one, identity-mapped, with a vsock
/// device that pairs with no VM): its vsock device carries the
/// hypervisor's connection to the disk daemon ([`crate::blkproto`]), and
/// every block record is served through it.
pub const VM_FLAG_SERVICE: u32 = 1 << 2;
/// Every VM flag this format knows.
const VM_FLAGS_KNOWN: u32 = VM_FLAG_IDENTITY | VM_FLAG_FIRMWARE | VM_FLAG_SERVICE;
/// Block record flag: the disk is read-only.
pub const DISK_READONLY: u32 = 1 << 0;
/// Disks in a bundle at most (numbered 0..).
pub const MAX_DISKS: u32 = 16;

/// Magic at offset 0.
pub const MAGIC: [u8; 8] = *b"STRATBN1";
/// The only format version this crate reads and writes.
pub const VERSION: u32 = 5;
/// Size of the header before the VM records.
pub const HEADER_SIZE: usize = 64;
/// Size of one VM record.
pub const VM_RECORD_SIZE: usize = 256;
/// Size of one passthrough device record.
pub const DEVICE_RECORD_SIZE: usize = 192;
/// Size of one channel record.
pub const CHANNEL_RECORD_SIZE: usize = 96;
/// Size of one virtio device record.
pub const VIRTIO_RECORD_SIZE: usize = 32;
/// Virtio-mmio transports a VM with virtio devices has (QEMU `virt`'s).
pub const VIRTIO_TRANSPORTS: u32 = 32;
/// The guest-physical window of a VM's virtio-mmio transports, 0x200 bytes
/// each.
pub const VIRTIO_WINDOW: Range<u64> = 0x0A00_0000..0x0A00_4000;
/// Transport *n*'s interrupt is SPI `VIRTIO_SPI_BASE + n` (rising edge).
pub const VIRTIO_SPI_BASE: u32 = 16;
/// Most virtio devices one VM has: a console, a vsock device and up to six
/// NICs.
pub const VIRTIO_PER_VM: usize = 8;
/// Most virtio device records one bundle may have.
pub const MAX_VIRTIO: usize = MAX_VMS * VIRTIO_PER_VM;
/// Most networks (virtual switches) one bundle may describe.
pub const MAX_NETWORKS: u32 = 16;
/// The vsock CID of VM *i* is `VSOCK_CID_BASE + i` (0 to 2 are reserved by
/// the vsock specification: hypervisor, local, host).
pub const VSOCK_CID_BASE: u32 = 3;
/// Alignment of every blob in the bundle.
pub const BLOB_ALIGN: usize = 4096;
/// Longest VM, device or channel name, in bytes (NUL padding included).
pub const NAME_LEN: usize = 32;
/// Longest device compatible list, in bytes (every NUL included).
pub const COMPATIBLE_LEN: usize = 96;
/// Largest extra DT fragment a VM may have.
pub const DT_FRAGMENT_MAX: u64 = 16 * 1024;
/// Most VMs one bundle may describe.
pub const MAX_VMS: usize = 16;
/// Most passthrough devices one bundle may describe.
pub const MAX_DEVICES: usize = MAX_VMS * limits::DEVICES_PER_VM;
/// Most channels one bundle may describe (each has two ends).
pub const MAX_CHANNELS: usize = MAX_VMS * limits::CHANNELS_PER_VM / 2;
/// Shortest round-robin time slice, in microseconds.
pub const SLICE_US_MIN: u32 = 100;
/// Longest round-robin time slice, in microseconds.
pub const SLICE_US_MAX: u32 = 1_000_000;
/// The time slice when the config does not say, in microseconds.
pub const DEFAULT_SLICE_US: u32 = 10_000;
/// Granule of device regions and channel memory.
pub const PAGE_SIZE: u64 = 4096;
/// Smallest channel.
pub const CHANNEL_SIZE_MIN: u64 = PAGE_SIZE;
/// Largest channel.
pub const CHANNEL_SIZE_MAX: u64 = 2 << 20;
/// The guest-physical window every VM's channel memory lies in.
pub const CHANNEL_WINDOW: Range<u64> = 0x0B00_0000..0x0C00_0000;
/// The doorbell of channel number *n* in a VM is SPI `DOORBELL_SPI_BASE + n`;
/// passthrough devices use SPIs below it.
pub const DOORBELL_SPI_BASE: u32 = 48;
/// The SPI of each VM's emulated UART: no passthrough device may use it.
pub const UART_SPI: u32 = 1;
/// Where no passthrough region may be: the GIC (the hypervisor's, and each
/// VM's emulated distributor, CPU interface and redistributors) and the UART
/// (the hypervisor's console, and each VM's emulated PL011).
pub const RESERVED_WINDOW: Range<u64> = 0x0800_0000..0x0900_1000;
/// Header flag: the hypervisor may stop QEMU with an exit status through
/// semihosting (`HLT #0xF000`). Set by the host tool, which enables semihosting.
pub const FLAG_SEMIHOSTING_EXIT: u32 = 1 << 0;
/// Header flag, self-test: right after the banner the hypervisor takes a
/// deliberate EL2 data abort (a load from an address EL2 does not map), to
/// prove that its own fault vector and the panic epitaph work. Only the host
/// tool sets it (`stratum run --selftest-el2-fault`, hidden from `--help`);
/// nothing a guest does can.
pub const FLAG_SELFTEST_EL2_FAULT: u32 = 1 << 1;
/// Header flag: the console is a terminal, so the hypervisor may colour the
/// VM name tags of console lines. Set by the host tool when its stdout is one.
pub const FLAG_CONSOLE_COLOR: u32 = 1 << 2;
/// Header flag: the machine's GIC is QEMU's model. Its GICv2 does not
/// re-signal a physical interrupt that became pending while a guest's
/// hardware-linked deactivation was on its way, so on GICv2 the hypervisor
/// forwards hardware interrupts with an EOI maintenance request instead
/// of the link (and deactivates them itself). Set by the host tool, which
/// runs QEMU.
pub const FLAG_QEMU_GIC: u32 = 1 << 3;

/// How the host tool prepared a kernel (informational for the hypervisor: the
/// load and entry offsets already say everything it needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum KernelKind {
    /// A Linux arm64 `Image` (header honoured).
    LinuxImage = 0,
    /// A raw binary, loaded at RAM + 0x80000.
    Raw = 1,
    /// An ELF whose loadable segments were flattened by the host tool.
    Elf = 2,
}

impl KernelKind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::LinuxImage),
            1 => Some(Self::Raw),
            2 => Some(Self::Elf),
            _ => None,
        }
    }
}

/// When the hypervisor stops (exits QEMU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum StopPolicy {
    /// When every VM has stopped.
    All = 0,
    /// When the first VM stops; its status is the exit status.
    Any = 1,
}

impl StopPolicy {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::All),
            1 => Some(Self::Any),
            _ => None,
        }
    }
}

/// What a virtio device record describes: the virtio device ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioKind {
    /// virtio-net: a NIC on a network.
    Net {
        /// The network's index (its order in the config).
        network: u32,
        /// The VM's port on the network's switch.
        port: u16,
        /// The NIC's MAC: unicast.
        mac: [u8; 6],
    },
    /// virtio-console: one port, its output tagged like the VM's UART.
    Console,
    /// virtio-block: a disk served by the service VM's daemon.
    Blk {
        /// The disk's number: unique in the bundle, the daemon's name for
        /// it (the service VM's backing device has serial
        /// `stratum-disk<N>`).
        disk: u32,
        /// Its size in 512-byte sectors (1..2^48).
        sectors: u64,
        /// Read-only: the frontend's writes are refused.
        readonly: bool,
    },
    /// virtio-vsock.
    Vsock {
        /// The guest's CID: [`VSOCK_CID_BASE`] + the VM's index.
        cid: u32,
        /// The VMs it may connect to (and be connected from), bit *i* for
        /// VM *i*: deny by default.
        peers: u32,
    },
}

impl VirtioKind {
    /// The virtio device ID.
    pub fn device_id(&self) -> u32 {
        match self {
            Self::Net { .. } => 1,
            Self::Blk { .. } => 2,
            Self::Console => 3,
            Self::Vsock { .. } => 19,
        }
    }
}

/// A paravirtual device behind one of a VM's virtio-mmio transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Virtio {
    /// Index of the VM.
    pub vm: u32,
    /// The transport (0..[`VIRTIO_TRANSPORTS`]).
    pub transport: u32,
    /// What it is.
    pub kind: VirtioKind,
}

/// What happens when a VM crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum OnCrash {
    /// It stays stopped (the others keep running).
    Stop = 0,
    /// It is restarted from its pristine image.
    Restart = 1,
}

impl OnCrash {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Stop),
            1 => Some(Self::Restart),
            _ => None,
        }
    }
}

/// The system-wide settings, from the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    /// Round-robin time slice on shared physical CPUs, in microseconds
    /// ([`SLICE_US_MIN`]..=[`SLICE_US_MAX`]).
    pub slice_us: u32,
    /// When the hypervisor stops.
    pub stop: StopPolicy,
    /// Entropy from the host (its kernel's CSPRNG): seeds each VM's SMCCC
    /// TRNG. All zero for a deterministic run.
    pub entropy: [u8; 16],
}

impl Default for SystemInfo {
    fn default() -> Self {
        Self {
            slice_us: DEFAULT_SLICE_US,
            stop: StopPolicy::All,
            entropy: [0; 16],
        }
    }
}

/// Why a bundle was rejected. The variant docs are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// The bundle is shorter than its header or than the size it declares.
    Truncated,
    /// The bundle does not start with the Stratum magic.
    BadMagic,
    /// The bundle's format version is not one this hypervisor reads.
    UnsupportedVersion(u32),
    /// The bundle describes no VM, or more than `MAX_VMS`.
    BadVmCount(u32),
    /// The time slice is outside `SLICE_US_MIN..=SLICE_US_MAX` microseconds.
    BadSlice(u32),
    /// The stop policy is unknown.
    BadStopPolicy(u32),
    /// The bundle describes more than `MAX_DEVICES` passthrough devices.
    BadDeviceCount(u32),
    /// The bundle describes more than `MAX_CHANNELS` channels.
    BadChannelCount(u32),
    /// The bundle describes more than `MAX_VIRTIO` virtio devices.
    BadVirtioCount(u32),
    /// A VM record points outside the bundle.
    BlobOutOfBounds {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM name is empty, too long, or not UTF-8.
    BadName {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM record names an unknown kernel kind.
    BadKernelKind {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM's extra DT fragment is larger than [`DT_FRAGMENT_MAX`].
    BadDtFragment {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM record has zero or too many vCPUs, or zero memory.
    BadResources {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM's kernel (load offset + footprint) does not fit in its memory, or
    /// the entry point lies outside the loaded kernel.
    KernelDoesNotFit {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM's command line is not UTF-8.
    BadCmdline {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM's placement or crash policy is unknown, or it names a physical
    /// CPU outside `0..PHYSICAL_CPUS`.
    BadPlacement {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM record sets a VM flag this format does not know.
    BadVmFlags {
        /// Index of the VM record.
        vm: usize,
        /// The flags.
        flags: u32,
    },
    /// A pinned vCPU's physical CPU also runs another vCPU.
    CpuOvercommitted {
        /// Index of the VM record with the pinned vCPU.
        vm: usize,
    },
    /// A VM owns more than `DEVICES_PER_VM` passthrough devices.
    TooManyDevices {
        /// Index of the VM record.
        vm: usize,
    },
    /// A device record names an unknown VM, has a bad name, compatible list,
    /// interrupt count or region (empty, unaligned, wrapping).
    BadDevice {
        /// Index of the device record.
        device: usize,
    },
    /// A device region overlaps another device, its VM's RAM, the GIC and
    /// UART window or the channel window.
    DeviceOverlap {
        /// Index of the device record.
        device: usize,
    },
    /// A device interrupt is the UART's, a doorbell's, or already another
    /// device's.
    InterruptConflict {
        /// Index of the device record.
        device: usize,
    },
    /// A channel record has a bad name or size, names an unknown VM or the
    /// same VM twice, or an end's number, doorbell or address is out of
    /// range or already used in that VM.
    BadChannel {
        /// Index of the channel record.
        channel: usize,
    },
    /// A channel's memory overlaps another channel or the RAM of a VM it
    /// connects.
    ChannelOverlap {
        /// Index of the channel record.
        channel: usize,
    },
    /// A virtio record names an unknown VM or kind, a transport out of
    /// range or already used in its VM, a second console or vsock device
    /// in one VM, a network out of range, a group MAC, a port or MAC
    /// already on its network, a CID other than its VM's, a peer that is
    /// itself, unknown, without vsock or that does not allow it back, or
    /// has non-zero reserved bytes; or a VM has more than
    /// `VIRTIO_PER_VM` of them.
    BadVirtio {
        /// Index of the virtio record.
        virtio: usize,
    },
    /// A passthrough device takes a virtio-mmio transport (its 4 KiB page
    /// or its SPI) that carries one of its VM's virtio devices.
    VirtioClash {
        /// Index of the device record.
        device: usize,
    },
    /// More than one VM is the service VM, or the service VM is not
    /// identity-mapped, has no vsock device, pairs its vsock device with a
    /// VM or has a disk itself; or a disk has no service VM to serve it.
    BadService,
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "boot bundle truncated"),
            Self::BadMagic => write!(f, "boot bundle has a bad magic (not a Stratum bundle)"),
            Self::UnsupportedVersion(v) => write!(f, "boot bundle version {v} is not supported"),
            Self::BadVmCount(n) => write!(f, "boot bundle describes {n} VMs (1..={MAX_VMS})"),
            Self::BadSlice(us) => write!(
                f,
                "time slice {us} us is outside {SLICE_US_MIN}..={SLICE_US_MAX} us"
            ),
            Self::BadStopPolicy(v) => write!(f, "unknown stop policy {v}"),
            Self::BadDeviceCount(n) => {
                write!(
                    f,
                    "boot bundle describes {n} devices (at most {MAX_DEVICES})"
                )
            }
            Self::BadChannelCount(n) => {
                write!(
                    f,
                    "boot bundle describes {n} channels (at most {MAX_CHANNELS})"
                )
            }
            Self::BlobOutOfBounds { vm } => write!(f, "VM {vm}: a blob lies outside the bundle"),
            Self::BadName { vm } => write!(f, "VM {vm}: bad name"),
            Self::BadKernelKind { vm } => write!(f, "VM {vm}: unknown kernel kind"),
            Self::BadResources { vm } => {
                write!(f, "VM {vm}: zero or too many vCPUs, or zero memory")
            }
            Self::BadDtFragment { vm } => {
                write!(
                    f,
                    "VM {vm}: extra DT fragment larger than {DT_FRAGMENT_MAX} bytes"
                )
            }
            Self::KernelDoesNotFit { vm } => write!(f, "VM {vm}: kernel does not fit in memory"),
            Self::BadCmdline { vm } => write!(f, "VM {vm}: command line is not UTF-8"),
            Self::BadPlacement { vm } => write!(f, "VM {vm}: bad placement or physical CPU"),
            Self::BadVmFlags { vm, flags } => write!(f, "VM {vm}: unknown VM flags {flags:#x}"),
            Self::CpuOvercommitted { vm } => write!(
                f,
                "VM {vm}: a pinned vCPU shares its physical CPU with another vCPU"
            ),
            Self::TooManyDevices { vm } => write!(
                f,
                "VM {vm}: more than {} passthrough devices",
                limits::DEVICES_PER_VM
            ),
            Self::BadDevice { device } => write!(f, "device {device}: malformed record"),
            Self::DeviceOverlap { device } => write!(f, "device {device}: region overlaps"),
            Self::InterruptConflict { device } => {
                write!(f, "device {device}: interrupt reserved or assigned twice")
            }
            Self::BadChannel { channel } => write!(f, "channel {channel}: malformed record"),
            Self::ChannelOverlap { channel } => write!(f, "channel {channel}: memory overlaps"),
            Self::BadVirtioCount(n) => write!(
                f,
                "boot bundle describes {n} virtio devices (at most {MAX_VIRTIO})"
            ),
            Self::BadVirtio { virtio } => write!(f, "virtio device {virtio}: malformed record"),
            Self::VirtioClash { device } => write!(
                f,
                "device {device}: takes the page or SPI of a virtio-mmio transport that carries one of its VM's virtio devices"
            ),
            Self::BadService => write!(
                f,
                "the service VM: at most one, identity-mapped, with a vsock device paired with no VM and no disk of its own, and present when any VM has a disk"
            ),
        }
    }
}

/// A parsed, validated view of a bundle. Borrowed: nothing is copied.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    flags: u32,
    system: SystemInfo,
    vm_count: usize,
    device_count: usize,
    channel_count: usize,
    virtio_count: usize,
}

/// One VM as the bundle describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmImage<'a> {
    /// The VM's name.
    pub name: &'a str,
    /// Number of vCPUs (1..=[`limits::VCPUS_PER_VM`]).
    pub vcpus: u32,
    /// How the kernel was prepared.
    pub kernel_kind: KernelKind,
    /// Guest-physical base of RAM.
    pub mem_base: u64,
    /// RAM size in bytes.
    pub mem_size: u64,
    /// The kernel bytes to copy to `mem_base + kernel_load_offset`.
    pub kernel: &'a [u8],
    /// Offset of the kernel's load address from the RAM base.
    pub kernel_load_offset: u64,
    /// Offset of the entry point from the RAM base.
    pub entry_offset: u64,
    /// Bytes from the load offset that the kernel owns (image plus bss).
    pub kernel_footprint: u64,
    /// The initrd, if any.
    pub initrd: Option<&'a [u8]>,
    /// An extra device-tree fragment (a flattened tree) whose root's child
    /// nodes are added to the VM's generated DT, if any.
    pub dt_fragment: Option<&'a [u8]>,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// Pinned: each vCPU owns its physical CPU exclusively (no other vCPU of
    /// any VM runs there). Otherwise the vCPUs time-share their CPUs
    /// round-robin.
    pub pinned: bool,
    /// Physical CPU of vCPU *i* (`i < vcpus`; the rest are zero), each below
    /// [`limits::PHYSICAL_CPUS`].
    pub pcpus: [u8; limits::VCPUS_PER_VM as usize],
    /// What to do when the VM crashes.
    pub on_crash: OnCrash,
    /// Identity-mapped: its RAM sits at host-physical = guest-physical
    /// ([`VM_FLAG_IDENTITY`]), so a device passed through to it can DMA
    /// with the addresses its driver gives.
    pub identity: bool,
    /// A firmware-style guest: device tree at the start of RAM, flash
    /// banks at 0 ([`VM_FLAG_FIRMWARE`]).
    pub firmware: bool,
    /// The service VM ([`VM_FLAG_SERVICE`]).
    pub service: bool,
}

/// A passthrough device: a physical MMIO region mapped at the same address
/// in one VM, and physical SPIs forwarded to it with the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device<'a> {
    /// Index of the VM that owns it.
    pub vm: u32,
    /// Its name (the DT node name before `@`).
    pub name: &'a str,
    /// The DT compatible list: NUL-separated, NUL-terminated, no empty entry.
    pub compatible: &'a [u8],
    /// Base address (physical and guest-physical), 4 KiB aligned.
    pub base: u64,
    /// Size, a non-zero multiple of 4 KiB.
    pub size: u64,
    /// SPI numbers (INTID − 32); entries from `irq_count` on are zero.
    pub irqs: [u32; limits::IRQS_PER_DEVICE],
    /// How many of `irqs` are used.
    pub irq_count: u32,
}

impl Device<'_> {
    /// The SPIs in use.
    pub fn spis(&self) -> &[u32] {
        self.irqs.get(..self.irq_count as usize).unwrap_or(&[])
    }
}

/// One VM's end of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelEnd {
    /// Index of the VM.
    pub vm: u32,
    /// The channel's number within that VM (0.. in config order), the `x1`
    /// of its `DOORBELL` call.
    pub id: u32,
    /// Guest-physical address of the shared memory in that VM: 4 KiB
    /// aligned, inside [`CHANNEL_WINDOW`].
    pub ipa: u64,
    /// The doorbell SPI in that VM: [`DOORBELL_SPI_BASE`] + `id`.
    pub spi: u32,
}

/// Shared memory between two VMs, with a doorbell interrupt in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel<'a> {
    /// Its name.
    pub name: &'a str,
    /// Bytes of shared memory: a multiple of 4 KiB in
    /// [`CHANNEL_SIZE_MIN`]..=[`CHANNEL_SIZE_MAX`].
    pub size: u64,
    /// The two ends, in two different VMs.
    pub ends: [ChannelEnd; 2],
}

fn blob(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let off = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    b.get(off..off.checked_add(len)?)
}

/// A NUL-padded name field: 1..NAME_LEN bytes of UTF-8, then NULs only.
fn name_field(raw: &[u8]) -> Option<&str> {
    let len = raw.iter().position(|&c| c == 0)?;
    if len == 0 || raw.get(len..)?.iter().any(|&c| c != 0) {
        return None;
    }
    core::str::from_utf8(raw.get(..len)?).ok()
}

/// Whether `[a, a + a_len)` and `[b, b + b_len)` overlap (no wrap: callers
/// checked the ends fit in `u64`).
/// Bytes of one virtio-mmio transport's registers in [`VIRTIO_WINDOW`].
pub const VIRTIO_STRIDE: u64 = (VIRTIO_WINDOW.end - VIRTIO_WINDOW.start) / VIRTIO_TRANSPORTS as u64;

/// The virtio-mmio transports (bit `n`: transport `n`) whose 4 KiB page of
/// [`VIRTIO_WINDOW`] the registers `[base, base + size)` overlap: a
/// passthrough device there takes all of them (stage 2 maps pages).
pub fn virtio_pages_taken(base: u64, size: u64) -> u32 {
    (0..VIRTIO_TRANSPORTS)
        .filter(|&n| {
            let page = (VIRTIO_WINDOW.start + VIRTIO_STRIDE * u64::from(n)) & !(PAGE_SIZE - 1);
            overlaps(base, size, page, PAGE_SIZE)
        })
        .fold(0, |m, n| m | 1 << n)
}

/// The virtio-mmio transport whose interrupt SPI `spi` is, if any.
pub fn virtio_transport_of_spi(spi: u32) -> Option<u32> {
    spi.checked_sub(VIRTIO_SPI_BASE)
        .filter(|&n| n < VIRTIO_TRANSPORTS)
}

/// The virtio-mmio transports (bit `n`: transport `n`) a passthrough device
/// at `[base, base + size)` with SPIs `spis` takes: those of the pages its
/// registers overlap ([`virtio_pages_taken`]) and each whose SPI it uses.
pub fn virtio_taken_by(base: u64, size: u64, spis: &[u32]) -> u32 {
    spis.iter()
        .filter_map(|&s| virtio_transport_of_spi(s))
        .fold(virtio_pages_taken(base, size), |m, n| m | 1 << n)
}

fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

/// A compatible list is NUL-separated, NUL-terminated, without empty entries.
fn valid_compatible(list: &[u8]) -> bool {
    list.last() == Some(&0)
        && list.first() != Some(&0)
        && !list.windows(2).any(|w| w == [0, 0])
        && core::str::from_utf8(list).is_ok()
}

impl<'a> Bundle<'a> {
    /// Parses and validates a bundle. Every record and every rule between
    /// records is checked here, so [`Bundle::vm`], [`Bundle::device`] and
    /// [`Bundle::channel`] cannot fail afterwards for an index in range.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        if bytes.len() < HEADER_SIZE {
            return Err(BundleError::Truncated);
        }
        if bytes[..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let u32_at = |at| le_u32(bytes, at).ok_or(BundleError::Truncated);
        let version = u32_at(8)?;
        if version != VERSION {
            return Err(BundleError::UnsupportedVersion(version));
        }
        let count = u32_at(12)?;
        if count == 0 || count as usize > MAX_VMS {
            return Err(BundleError::BadVmCount(count));
        }
        let devices = u32_at(36)?;
        if devices as usize > MAX_DEVICES {
            return Err(BundleError::BadDeviceCount(devices));
        }
        let channels = u32_at(40)?;
        if channels as usize > MAX_CHANNELS {
            return Err(BundleError::BadChannelCount(channels));
        }
        let virtio = u32_at(44)?;
        if virtio as usize > MAX_VIRTIO {
            return Err(BundleError::BadVirtioCount(virtio));
        }
        let slice_us = u32_at(28)?;
        if !(SLICE_US_MIN..=SLICE_US_MAX).contains(&slice_us) {
            return Err(BundleError::BadSlice(slice_us));
        }
        let stop = u32_at(32)?;
        let stop = StopPolicy::from_u32(stop).ok_or(BundleError::BadStopPolicy(stop))?;
        // The counts are bounded above, so this cannot overflow.
        let records = HEADER_SIZE
            + count as usize * VM_RECORD_SIZE
            + devices as usize * DEVICE_RECORD_SIZE
            + channels as usize * CHANNEL_RECORD_SIZE
            + virtio as usize * VIRTIO_RECORD_SIZE;
        let total = le_u64(bytes, 16).ok_or(BundleError::Truncated)?;
        let total = usize::try_from(total).map_err(|_| BundleError::Truncated)?;
        if total > bytes.len() || total < records {
            return Err(BundleError::Truncated);
        }
        let bundle = Self {
            bytes: &bytes[..total],
            flags: u32_at(24)?,
            system: SystemInfo {
                slice_us,
                stop,
                entropy: bytes[48..64]
                    .try_into()
                    .map_err(|_| BundleError::Truncated)?,
            },
            vm_count: count as usize,
            device_count: devices as usize,
            channel_count: channels as usize,
            virtio_count: virtio as usize,
        };
        bundle.validate()?;
        Ok(bundle)
    }

    /// Decodes every record, then checks the rules between them.
    fn validate(&self) -> Result<(), BundleError> {
        let mut vms = [None; MAX_VMS];
        for (i, slot) in vms.iter_mut().enumerate().take(self.vm_count) {
            *slot = Some(self.decode_vm(i)?);
        }
        let vms = &vms[..self.vm_count];
        let vm = |i: u32| vms.get(i as usize).copied().flatten();
        self.check_cpus(vms)?;

        let mut devices_of = [0usize; MAX_VMS];
        for i in 0..self.device_count {
            let d = self.decode_device(i)?;
            let owner = vm(d.vm).ok_or(BundleError::BadDevice { device: i })?;
            let n = &mut devices_of[d.vm as usize];
            *n += 1;
            if *n > limits::DEVICES_PER_VM {
                return Err(BundleError::TooManyDevices { vm: d.vm as usize });
            }
            let overlap = BundleError::DeviceOverlap { device: i };
            let window = |w: &Range<u64>| overlaps(d.base, d.size, w.start, w.end - w.start);
            if overlaps(d.base, d.size, owner.mem_base, owner.mem_size)
                || window(&RESERVED_WINDOW)
                || window(&CHANNEL_WINDOW)
            {
                return Err(overlap);
            }
            for &spi in d.spis() {
                if spi == UART_SPI || spi >= DOORBELL_SPI_BASE {
                    return Err(BundleError::InterruptConflict { device: i });
                }
            }
            for (k, &spi) in d.spis().iter().enumerate() {
                if d.spis()[..k].contains(&spi) {
                    return Err(BundleError::InterruptConflict { device: i });
                }
            }
            for j in 0..i {
                let other = self.decode_device(j)?;
                if overlaps(d.base, d.size, other.base, other.size) {
                    return Err(overlap);
                }
                if d.spis().iter().any(|s| other.spis().contains(s)) {
                    return Err(BundleError::InterruptConflict { device: i });
                }
            }
        }

        for i in 0..self.channel_count {
            let c = self.decode_channel(i)?;
            let bad = BundleError::BadChannel { channel: i };
            let overlap = BundleError::ChannelOverlap { channel: i };
            for end in &c.ends {
                let owner = vm(end.vm).ok_or(bad)?;
                if overlaps(end.ipa, c.size, owner.mem_base, owner.mem_size) {
                    return Err(overlap);
                }
                for j in 0..i {
                    let other = self.decode_channel(j)?;
                    for o in other.ends.iter().filter(|o| o.vm == end.vm) {
                        if o.id == end.id {
                            return Err(bad);
                        }
                        if overlaps(end.ipa, c.size, o.ipa, other.size) {
                            return Err(overlap);
                        }
                    }
                }
            }
        }
        self.check_virtio()
    }

    /// The virtio records, each on its own and against the others and the
    /// passthrough devices.
    fn check_virtio(&self) -> Result<(), BundleError> {
        // Per VM, the transports carrying its devices (bit n: transport n).
        let mut used = [0u32; MAX_VMS];
        let mut per_vm = [0usize; MAX_VMS];
        for i in 0..self.virtio_count {
            let v = self.decode_virtio(i)?;
            let bad = BundleError::BadVirtio { virtio: i };
            if let Some(bit) = 1u32.checked_shl(v.transport) {
                used[v.vm as usize] |= bit;
            }
            let n = &mut per_vm[v.vm as usize];
            *n += 1;
            if *n > VIRTIO_PER_VM {
                return Err(bad);
            }
            for j in 0..i {
                let o = self.decode_virtio(j)?;
                let same_vm = o.vm == v.vm;
                let clash = match (v.kind, o.kind) {
                    _ if same_vm && o.transport == v.transport => true,
                    (VirtioKind::Console, VirtioKind::Console)
                    | (VirtioKind::Vsock { .. }, VirtioKind::Vsock { .. }) => same_vm,
                    (VirtioKind::Blk { disk, .. }, VirtioKind::Blk { disk: d2, .. }) => disk == d2,
                    (
                        VirtioKind::Net { network, port, mac },
                        VirtioKind::Net {
                            network: n2,
                            port: p2,
                            mac: m2,
                        },
                    ) => network == n2 && (port == p2 || mac == m2 || same_vm),
                    _ => false,
                };
                if clash {
                    return Err(bad);
                }
            }
            if let VirtioKind::Vsock { peers, .. } = v.kind {
                for peer in 0..self.vm_count as u32 {
                    if peers & (1 << peer) == 0 {
                        continue;
                    }
                    let back = (0..self.virtio_count).any(|k| {
                        self.decode_virtio(k).is_ok_and(|o| {
                            o.vm == peer
                                && matches!(o.kind, VirtioKind::Vsock { peers: p, .. } if p & (1 << v.vm) != 0)
                        })
                    });
                    if !back {
                        return Err(bad);
                    }
                }
            }
        }
        self.check_service()?;
        // None of the transports a passthrough device takes may carry one
        // of its VM's devices.
        for i in 0..self.device_count {
            let d = self.decode_device(i)?;
            let mine = used.get(d.vm as usize).copied().unwrap_or(0);
            if virtio_taken_by(d.base, d.size, d.spis()) & mine != 0 {
                return Err(BundleError::VirtioClash { device: i });
            }
        }
        Ok(())
    }

    /// No physical CPU of a pinned vCPU runs any other vCPU.
    fn check_cpus(&self, vms: &[Option<VmImage<'a>>]) -> Result<(), BundleError> {
        let cpus_of = |v: &VmImage<'a>| v.pcpus.into_iter().take(v.vcpus as usize);
        for (a, pinned) in vms.iter().enumerate() {
            let Some(pinned) = pinned.filter(|v| v.pinned) else {
                continue;
            };
            for cpu in cpus_of(&pinned) {
                let users = vms.iter().flatten().flat_map(cpus_of);
                if users.filter(|&c| c == cpu).count() > 1 {
                    return Err(BundleError::CpuOvercommitted { vm: a });
                }
            }
        }
        Ok(())
    }

    /// Header flags (`FLAG_*`).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The system-wide settings.
    pub fn system(&self) -> SystemInfo {
        self.system
    }

    /// Number of VMs.
    pub fn vm_count(&self) -> usize {
        self.vm_count
    }

    /// Number of passthrough devices.
    pub fn device_count(&self) -> usize {
        self.device_count
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.channel_count
    }

    /// Number of virtio devices.
    pub fn virtio_count(&self) -> usize {
        self.virtio_count
    }

    /// Virtio device `i`, or `None` when `i >= virtio_count()`.
    pub fn virtio(&self, i: usize) -> Option<Virtio> {
        if i >= self.virtio_count {
            return None;
        }
        self.decode_virtio(i).ok()
    }

    /// The whole bundle's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// VM `i`, or `None` when `i >= vm_count()`.
    pub fn vm(&self, i: usize) -> Option<VmImage<'a>> {
        if i >= self.vm_count {
            return None;
        }
        self.decode_vm(i).ok()
    }

    /// Passthrough device `i`, or `None` when `i >= device_count()`.
    pub fn device(&self, i: usize) -> Option<Device<'a>> {
        if i >= self.device_count {
            return None;
        }
        self.decode_device(i).ok()
    }

    /// Channel `i`, or `None` when `i >= channel_count()`.
    pub fn channel(&self, i: usize) -> Option<Channel<'a>> {
        if i >= self.channel_count {
            return None;
        }
        self.decode_channel(i).ok()
    }

    fn devices_start(&self) -> usize {
        HEADER_SIZE + self.vm_count * VM_RECORD_SIZE
    }

    fn channels_start(&self) -> usize {
        self.devices_start() + self.device_count * DEVICE_RECORD_SIZE
    }

    fn virtio_start(&self) -> usize {
        self.channels_start() + self.channel_count * CHANNEL_RECORD_SIZE
    }

    fn decode_virtio(&self, i: usize) -> Result<Virtio, BundleError> {
        let bad = BundleError::BadVirtio { virtio: i };
        let r = self.virtio_start() + i * VIRTIO_RECORD_SIZE;
        let rec = self.bytes.get(r..r + VIRTIO_RECORD_SIZE).ok_or(bad)?;
        let u32_at = |o: usize| le_u32(rec, o).ok_or(bad);
        let vm = u32_at(0)?;
        let transport = u32_at(8)?;
        let field = u32_at(12)?;
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&rec[16..22]);
        let port = u16::from_le_bytes([rec[22], rec[23]]);
        let peers = u32_at(24)?;
        if vm as usize >= self.vm_count || transport >= VIRTIO_TRANSPORTS || u32_at(28)? != 0 {
            return Err(bad);
        }
        let kind = match u32_at(4)? {
            1 => {
                if field >= MAX_NETWORKS
                    || mac[0] & 1 != 0
                    || usize::from(port) >= MAX_VMS
                    || peers != 0
                {
                    return Err(bad);
                }
                VirtioKind::Net {
                    network: field,
                    port,
                    mac,
                }
            }
            2 => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&rec[16..24]);
                let sectors = u64::from_le_bytes(raw);
                if field >= MAX_DISKS
                    || sectors == 0
                    || sectors >> 48 != 0
                    || peers & !DISK_READONLY != 0
                {
                    return Err(bad);
                }
                VirtioKind::Blk {
                    disk: field,
                    sectors,
                    readonly: peers & DISK_READONLY != 0,
                }
            }
            3 if field == 0 && mac == [0; 6] && port == 0 && peers == 0 => VirtioKind::Console,
            19 => {
                let own = 1u32 << vm;
                let known = (1u32 << self.vm_count) - 1;
                if Some(field) != VSOCK_CID_BASE.checked_add(vm)
                    || mac != [0; 6]
                    || port != 0
                    || peers & own != 0
                    || peers & !known != 0
                {
                    return Err(bad);
                }
                VirtioKind::Vsock { cid: field, peers }
            }
            _ => return Err(bad),
        };
        Ok(Virtio {
            vm,
            transport,
            kind,
        })
    }

    /// The service VM's rules ([`BundleError::BadService`]).
    fn check_service(&self) -> Result<(), BundleError> {
        let mut service = None;
        for i in 0..self.vm_count {
            let vm = self.decode_vm(i)?;
            if vm.service {
                if service.is_some() || !vm.identity {
                    return Err(BundleError::BadService);
                }
                service = Some(i as u32);
            }
        }
        let mut link = false;
        let mut disks = false;
        for i in 0..self.virtio_count {
            let v = self.decode_virtio(i)?;
            match v.kind {
                VirtioKind::Vsock { peers, .. } if Some(v.vm) == service => {
                    if peers != 0 {
                        return Err(BundleError::BadService);
                    }
                    link = true;
                }
                VirtioKind::Blk { .. } if Some(v.vm) == service => {
                    return Err(BundleError::BadService);
                }
                VirtioKind::Blk { .. } => disks = true,
                _ => {}
            }
        }
        if (service.is_some() && !link) || (disks && service.is_none()) {
            return Err(BundleError::BadService);
        }
        Ok(())
    }

    /// The service VM's index, if the bundle has one.
    pub fn service_vm(&self) -> Option<usize> {
        (0..self.vm_count).find(|&i| self.decode_vm(i).is_ok_and(|vm| vm.service))
    }

    fn decode_vm(&self, i: usize) -> Result<VmImage<'a>, BundleError> {
        let b = self.bytes;
        let r = HEADER_SIZE + i * VM_RECORD_SIZE;
        let oob = BundleError::BlobOutOfBounds { vm: i };
        let u64_at = |o: usize| le_u64(b, r + o).ok_or(oob);
        let u32_at = |o: usize| le_u32(b, r + o).ok_or(oob);

        let raw_name = b.get(r..r + NAME_LEN).ok_or(oob)?;
        let name = name_field(raw_name).ok_or(BundleError::BadName { vm: i })?;
        let vcpus = u32_at(32)?;
        let kernel_kind =
            KernelKind::from_u32(u32_at(36)?).ok_or(BundleError::BadKernelKind { vm: i })?;
        let mem_base = u64_at(40)?;
        let mem_size = u64_at(48)?;
        if vcpus == 0
            || vcpus > limits::VCPUS_PER_VM
            || mem_size == 0
            || mem_base.checked_add(mem_size).is_none()
        {
            return Err(BundleError::BadResources { vm: i });
        }
        let kernel = blob(b, u64_at(56)?, u64_at(64)?).ok_or(oob)?;
        let kernel_load_offset = u64_at(72)?;
        let entry_offset = u64_at(80)?;
        let kernel_footprint = u64_at(88)?;
        let end = kernel_load_offset
            .checked_add(kernel_footprint)
            .ok_or(BundleError::KernelDoesNotFit { vm: i })?;
        if kernel_footprint < kernel.len() as u64
            || end > mem_size
            || entry_offset < kernel_load_offset
            || entry_offset >= end
        {
            return Err(BundleError::KernelDoesNotFit { vm: i });
        }
        let (initrd_off, initrd_len) = (u64_at(96)?, u64_at(104)?);
        let initrd = if initrd_len == 0 {
            None
        } else {
            Some(blob(b, initrd_off, initrd_len).ok_or(oob)?)
        };
        let (fragment_off, fragment_len) = (u64_at(144)?, u64_at(152)?);
        let dt_fragment = if fragment_len == 0 {
            None
        } else if fragment_len > DT_FRAGMENT_MAX {
            return Err(BundleError::BadDtFragment { vm: i });
        } else {
            Some(blob(b, fragment_off, fragment_len).ok_or(oob)?)
        };
        let cmdline_bytes = blob(b, u64_at(112)?, u64_at(120)?).ok_or(oob)?;
        let cmdline =
            core::str::from_utf8(cmdline_bytes).map_err(|_| BundleError::BadCmdline { vm: i })?;

        let bad_placement = BundleError::BadPlacement { vm: i };
        let pinned = match u32_at(128)? {
            0 => false,
            1 => true,
            _ => return Err(bad_placement),
        };
        let on_crash = OnCrash::from_u32(u32_at(132)?).ok_or(bad_placement)?;
        let mut pcpus = [0u8; limits::VCPUS_PER_VM as usize];
        pcpus.copy_from_slice(b.get(r + 136..r + 144).ok_or(oob)?);
        for (v, &cpu) in pcpus.iter().enumerate() {
            let used = v < vcpus as usize;
            if (used && u32::from(cpu) >= limits::PHYSICAL_CPUS) || (!used && cpu != 0) {
                return Err(bad_placement);
            }
        }
        let flags = u32_at(160)?;
        if flags & !VM_FLAGS_KNOWN != 0 {
            return Err(BundleError::BadVmFlags { vm: i, flags });
        }
        Ok(VmImage {
            name,
            vcpus,
            kernel_kind,
            mem_base,
            mem_size,
            kernel,
            kernel_load_offset,
            entry_offset,
            kernel_footprint,
            initrd,
            dt_fragment,
            cmdline,
            pinned,
            pcpus,
            on_crash,
            identity: flags & VM_FLAG_IDENTITY != 0,
            firmware: flags & VM_FLAG_FIRMWARE != 0,
            service: flags & VM_FLAG_SERVICE != 0,
        })
    }

    fn decode_device(&self, i: usize) -> Result<Device<'a>, BundleError> {
        let bad = BundleError::BadDevice { device: i };
        let r = self.devices_start() + i * DEVICE_RECORD_SIZE;
        let rec = self.bytes.get(r..r + DEVICE_RECORD_SIZE).ok_or(bad)?;
        let u32_at = |o: usize| le_u32(rec, o).ok_or(bad);
        let u64_at = |o: usize| le_u64(rec, o).ok_or(bad);
        let name = name_field(&rec[..NAME_LEN]).ok_or(bad)?;
        let vm = u32_at(32)?;
        if vm as usize >= self.vm_count {
            return Err(bad);
        }
        let irq_count = u32_at(36)?;
        let base = u64_at(40)?;
        let size = u64_at(48)?;
        if size == 0
            || !base.is_multiple_of(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
            || base.checked_add(size).is_none()
            || irq_count as usize > limits::IRQS_PER_DEVICE
        {
            return Err(bad);
        }
        let mut irqs = [0u32; limits::IRQS_PER_DEVICE];
        for (k, irq) in irqs.iter_mut().enumerate() {
            *irq = u32_at(56 + 4 * k)?;
            if k >= irq_count as usize && *irq != 0 {
                return Err(bad);
            }
        }
        let compat_len = u32_at(72)? as usize;
        if compat_len == 0 || compat_len > COMPATIBLE_LEN {
            return Err(bad);
        }
        let compat_area = rec.get(80..80 + COMPATIBLE_LEN).ok_or(bad)?;
        let (compatible, padding) = compat_area.split_at(compat_len);
        if !valid_compatible(compatible) || padding.iter().any(|&c| c != 0) {
            return Err(bad);
        }
        Ok(Device {
            vm,
            name,
            compatible,
            base,
            size,
            irqs,
            irq_count,
        })
    }

    fn decode_channel(&self, i: usize) -> Result<Channel<'a>, BundleError> {
        let bad = BundleError::BadChannel { channel: i };
        let r = self.channels_start() + i * CHANNEL_RECORD_SIZE;
        let rec = self.bytes.get(r..r + CHANNEL_RECORD_SIZE).ok_or(bad)?;
        let name = name_field(&rec[..NAME_LEN]).ok_or(bad)?;
        let size = le_u64(rec, 32).ok_or(bad)?;
        if !(CHANNEL_SIZE_MIN..=CHANNEL_SIZE_MAX).contains(&size) || !size.is_multiple_of(PAGE_SIZE)
        {
            return Err(bad);
        }
        let end = |at: usize| -> Result<ChannelEnd, BundleError> {
            let e = ChannelEnd {
                vm: le_u32(rec, at).ok_or(bad)?,
                id: le_u32(rec, at + 4).ok_or(bad)?,
                ipa: le_u64(rec, at + 8).ok_or(bad)?,
                spi: le_u32(rec, at + 16).ok_or(bad)?,
            };
            let inside = e.ipa >= CHANNEL_WINDOW.start
                && e.ipa
                    .checked_add(size)
                    .is_some_and(|end| end <= CHANNEL_WINDOW.end);
            if e.vm as usize >= self.vm_count
                || e.id as usize >= limits::CHANNELS_PER_VM
                || Some(e.spi) != DOORBELL_SPI_BASE.checked_add(e.id)
                || !e.ipa.is_multiple_of(PAGE_SIZE)
                || !inside
            {
                return Err(bad);
            }
            Ok(e)
        };
        let ends = [end(40)?, end(64)?];
        if ends[0].vm == ends[1].vm {
            return Err(bad);
        }
        Ok(Channel { name, size, ends })
    }
}

/// Exact size [`encode`] produces: the header and records, then each blob
/// (of the given sizes, in order) at a [`BLOB_ALIGN`]-aligned offset, and the
/// whole rounded up to [`BLOB_ALIGN`].
pub fn encoded_size(
    vms: usize,
    devices: usize,
    channels: usize,
    virtio: usize,
    blobs: impl IntoIterator<Item = u64>,
) -> u64 {
    let align = |n: u64| n.next_multiple_of(BLOB_ALIGN as u64);
    let mut len = (HEADER_SIZE
        + vms * VM_RECORD_SIZE
        + devices * DEVICE_RECORD_SIZE
        + channels * CHANNEL_RECORD_SIZE
        + virtio * VIRTIO_RECORD_SIZE) as u64;
    for blob in blobs {
        len = align(len) + blob;
    }
    align(len)
}

/// Encodes a bundle without virtio devices: [`encode_with_virtio`].
#[cfg(any(test, feature = "alloc"))]
pub fn encode(
    flags: u32,
    system: SystemInfo,
    vms: &[VmImage<'_>],
    devices: &[Device<'_>],
    channels: &[Channel<'_>],
) -> alloc::vec::Vec<u8> {
    encode_with_virtio(flags, system, vms, devices, channels, &[])
}

/// Encodes a bundle (host side). Nothing is checked here (names longer than
/// the record holds are cut): run [`Bundle::parse`] on the result.
#[cfg(any(test, feature = "alloc"))]
pub fn encode_with_virtio(
    flags: u32,
    system: SystemInfo,
    vms: &[VmImage<'_>],
    devices: &[Device<'_>],
    channels: &[Channel<'_>],
    virtio: &[Virtio],
) -> alloc::vec::Vec<u8> {
    use alloc::vec::Vec;
    fn align(v: &mut Vec<u8>) {
        let padded = v.len().div_ceil(BLOB_ALIGN) * BLOB_ALIGN;
        v.resize(padded, 0);
    }
    fn put(v: &mut Vec<u8>, blob: &[u8]) -> (u64, u64) {
        align(v);
        let off = v.len() as u64;
        v.extend_from_slice(blob);
        (off, blob.len() as u64)
    }
    fn name(rec: &mut [u8], name: &str) {
        let name = name.as_bytes();
        let n = name.len().min(NAME_LEN);
        rec[..n].copy_from_slice(&name[..n]);
    }
    fn put_u32(rec: &mut [u8], at: usize, v: u32) {
        rec[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(rec: &mut [u8], at: usize, v: u64) {
        rec[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut out = alloc::vec![0u8; HEADER_SIZE];
    out[..8].copy_from_slice(&MAGIC);
    put_u32(&mut out, 8, VERSION);
    put_u32(&mut out, 12, count(vms.len()));
    put_u32(&mut out, 24, flags);
    put_u32(&mut out, 28, system.slice_us);
    put_u32(&mut out, 32, system.stop as u32);
    put_u32(&mut out, 36, count(devices.len()));
    put_u32(&mut out, 40, count(channels.len()));
    put_u32(&mut out, 44, count(virtio.len()));
    out[48..64].copy_from_slice(&system.entropy);
    let devices_at = HEADER_SIZE + vms.len() * VM_RECORD_SIZE;
    let channels_at = devices_at + devices.len() * DEVICE_RECORD_SIZE;
    let virtio_at = channels_at + channels.len() * CHANNEL_RECORD_SIZE;
    out.resize(virtio_at + virtio.len() * VIRTIO_RECORD_SIZE, 0);
    for (i, v) in virtio.iter().enumerate() {
        let r = virtio_at + i * VIRTIO_RECORD_SIZE;
        let rec = &mut out[r..r + VIRTIO_RECORD_SIZE];
        put_u32(rec, 0, v.vm);
        put_u32(rec, 4, v.kind.device_id());
        put_u32(rec, 8, v.transport);
        match v.kind {
            VirtioKind::Net { network, port, mac } => {
                put_u32(rec, 12, network);
                rec[16..22].copy_from_slice(&mac);
                rec[22..24].copy_from_slice(&port.to_le_bytes());
            }
            VirtioKind::Console => {}
            VirtioKind::Blk {
                disk,
                sectors,
                readonly,
            } => {
                put_u32(rec, 12, disk);
                rec[16..24].copy_from_slice(&sectors.to_le_bytes());
                put_u32(rec, 24, if readonly { DISK_READONLY } else { 0 });
            }
            VirtioKind::Vsock { cid, peers } => {
                put_u32(rec, 12, cid);
                put_u32(rec, 24, peers);
            }
        }
    }

    for (i, d) in devices.iter().enumerate() {
        let r = devices_at + i * DEVICE_RECORD_SIZE;
        let rec = &mut out[r..r + DEVICE_RECORD_SIZE];
        name(rec, d.name);
        put_u32(rec, 32, d.vm);
        put_u32(rec, 36, d.irq_count);
        put_u64(rec, 40, d.base);
        put_u64(rec, 48, d.size);
        for (k, &irq) in d.irqs.iter().enumerate() {
            put_u32(rec, 56 + 4 * k, irq);
        }
        let n = d.compatible.len().min(COMPATIBLE_LEN);
        put_u32(rec, 72, count(d.compatible.len()));
        rec[80..80 + n].copy_from_slice(&d.compatible[..n]);
    }
    for (i, c) in channels.iter().enumerate() {
        let r = channels_at + i * CHANNEL_RECORD_SIZE;
        let rec = &mut out[r..r + CHANNEL_RECORD_SIZE];
        name(rec, c.name);
        put_u64(rec, 32, c.size);
        for (e, at) in c.ends.iter().zip([40, 64]) {
            put_u32(rec, at, e.vm);
            put_u32(rec, at + 4, e.id);
            put_u64(rec, at + 8, e.ipa);
            put_u32(rec, at + 16, e.spi);
        }
    }
    for (i, vm) in vms.iter().enumerate() {
        let kernel = put(&mut out, vm.kernel);
        let initrd = match vm.initrd {
            Some(bytes) => put(&mut out, bytes),
            None => (0, 0),
        };
        let cmdline = put(&mut out, vm.cmdline.as_bytes());
        let fragment = match vm.dt_fragment {
            Some(bytes) => put(&mut out, bytes),
            None => (0, 0),
        };
        let r = HEADER_SIZE + i * VM_RECORD_SIZE;
        let rec = &mut out[r..r + VM_RECORD_SIZE];
        name(rec, vm.name);
        put_u32(rec, 32, vm.vcpus);
        put_u32(rec, 36, vm.kernel_kind as u32);
        let fields: [(usize, u64); 11] = [
            (40, vm.mem_base),
            (48, vm.mem_size),
            (56, kernel.0),
            (64, kernel.1),
            (72, vm.kernel_load_offset),
            (80, vm.entry_offset),
            (88, vm.kernel_footprint),
            (96, initrd.0),
            (104, initrd.1),
            (112, cmdline.0),
            (120, cmdline.1),
        ];
        for (at, val) in fields {
            put_u64(rec, at, val);
        }
        put_u32(rec, 128, u32::from(vm.pinned));
        put_u32(rec, 132, vm.on_crash as u32);
        rec[136..144].copy_from_slice(&vm.pcpus);
        put_u64(rec, 144, fragment.0);
        put_u64(rec, 152, fragment.1);
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        put_u32(
            rec,
            160,
            flag(vm.identity, VM_FLAG_IDENTITY)
                | flag(vm.firmware, VM_FLAG_FIRMWARE)
                | flag(vm.service, VM_FLAG_SERVICE),
        );
    }
    align(&mut out);
    let total = out.len() as u64;
    put_u64(&mut out, 16, total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(kernel: &'a [u8], initrd: Option<&'a [u8]>) -> VmImage<'a> {
        VmImage {
            name: "linux",
            vcpus: 2,
            kernel_kind: KernelKind::LinuxImage,
            mem_base: 0x4000_0000,
            mem_size: 0x1000_0000,
            kernel,
            kernel_load_offset: 0x20_0000,
            entry_offset: 0x20_0000,
            kernel_footprint: 0x10_0000,
            initrd,
            dt_fragment: None,
            cmdline: "console=ttyAMA0",
            pinned: true,
            pcpus: [0, 1, 0, 0, 0, 0, 0, 0],
            on_crash: OnCrash::Stop,
            identity: false,
            firmware: false,
            service: false,
        }
    }

    const KERNEL: [u8; 5000] = [0xAA; 5000];

    /// Three VMs: "linux" pinned on CPUs 0-1, "a" and "b" sharing CPU 2.
    fn vms() -> [VmImage<'static>; 3] {
        let shared = |name| VmImage {
            name,
            vcpus: 1,
            pinned: false,
            pcpus: [2, 0, 0, 0, 0, 0, 0, 0],
            on_crash: OnCrash::Restart,
            mem_size: 0x400_0000,
            ..sample(&KERNEL, None)
        };
        [sample(&KERNEL, Some(&[0x55; 10])), shared("a"), shared("b")]
    }

    fn rtc() -> Device<'static> {
        Device {
            vm: 0,
            name: "rtc",
            compatible: b"arm,pl031\0arm,primecell\0",
            base: 0x0901_0000,
            size: 0x1000,
            irqs: [2, 0, 0, 0],
            irq_count: 1,
        }
    }

    fn gpio() -> Device<'static> {
        Device {
            vm: 1,
            name: "gpio",
            compatible: b"arm,pl061\0",
            base: 0x0903_0000,
            size: 0x1000,
            irqs: [7, 8, 0, 0],
            irq_count: 2,
        }
    }

    fn end(vm: u32, id: u32, ipa: u64) -> ChannelEnd {
        ChannelEnd {
            vm,
            id,
            ipa,
            spi: DOORBELL_SPI_BASE + id,
        }
    }

    fn ping() -> Channel<'static> {
        Channel {
            name: "ping",
            size: 0x1000,
            ends: [end(1, 0, 0x0B00_0000), end(2, 0, 0x0B00_0000)],
        }
    }

    fn log() -> Channel<'static> {
        Channel {
            name: "log",
            size: 0x2000,
            ends: [end(0, 0, 0x0B00_0000), end(1, 1, 0x0B00_1000)],
        }
    }

    const SYSTEM: SystemInfo = SystemInfo {
        slice_us: 2000,
        stop: StopPolicy::Any,
        entropy: *b"0123456789abcdef",
    };

    fn good() -> Vec<u8> {
        encode(
            FLAG_SEMIHOSTING_EXIT,
            SYSTEM,
            &vms(),
            &[rtc(), gpio()],
            &[ping(), log()],
        )
    }

    #[test]
    fn round_trip() {
        let vms = vms();
        let bytes = good();
        assert_eq!(bytes.len() % BLOB_ALIGN, 0);
        assert_eq!(
            encoded_size(3, 2, 2, 0, [5000, 10, 15, 5000, 15, 5000, 15]),
            bytes.len() as u64
        );
        let b = Bundle::parse(&bytes).expect("valid bundle");
        assert_eq!(b.flags(), FLAG_SEMIHOSTING_EXIT);
        assert_eq!(b.system(), SYSTEM);
        assert_eq!(b.vm_count(), 3);
        for (i, vm) in vms.iter().enumerate() {
            assert_eq!(b.vm(i), Some(*vm));
        }
        assert_eq!(b.vm(3), None);
        assert_eq!(b.device_count(), 2);
        assert_eq!(b.device(0), Some(rtc()));
        assert_eq!(b.device(1), Some(gpio()));
        assert_eq!(b.device(1).map(|d| d.spis().to_vec()), Some(vec![7, 8]));
        assert_eq!(b.device(2), None);
        assert_eq!(b.channel_count(), 2);
        assert_eq!(b.channel(0), Some(ping()));
        assert_eq!(b.channel(1), Some(log()));
        assert_eq!(b.channel(2), None);
    }

    #[test]
    fn minimal_round_trip() {
        let vm = sample(&KERNEL, None);
        let flags = FLAG_CONSOLE_COLOR | FLAG_SELFTEST_EL2_FAULT;
        let bytes = encode(flags, SystemInfo::default(), &[vm], &[], &[]);
        assert_eq!(encoded_size(1, 0, 0, 0, [5000, 15]), bytes.len() as u64);
        let b = Bundle::parse(&bytes).expect("valid");
        assert_eq!(b.flags(), flags);
        assert_eq!(
            b.system(),
            SystemInfo {
                slice_us: 10_000,
                stop: StopPolicy::All,
                entropy: [0; 16],
            }
        );
        assert_eq!(
            (b.vm(0), b.device_count(), b.channel_count()),
            (Some(vm), 0, 0)
        );
    }

    #[test]
    fn the_identity_flag_round_trips_and_unknown_flags_are_refused() {
        let vm = VmImage {
            identity: true,
            ..sample(&KERNEL, None)
        };
        let firmware = VmImage {
            firmware: true,
            ..vms()[1]
        };
        let bytes = encode(
            0,
            SystemInfo::default(),
            &[vm, vms()[1], firmware],
            &[],
            &[],
        );
        let b = Bundle::parse(&bytes).expect("valid");
        let flags: Vec<_> = (0..3)
            .filter_map(|i| b.vm(i))
            .map(|v| (v.identity, v.firmware))
            .collect();
        assert_eq!(flags, [(true, false), (false, false), (false, true)]);
        let flags = HEADER_SIZE + VM_RECORD_SIZE + 160;
        assert_eq!(
            u32::from_le_bytes(bytes[flags - VM_RECORD_SIZE..][..4].try_into().unwrap()),
            VM_FLAG_IDENTITY
        );
        let mut unknown = bytes;
        unknown[flags..flags + 4].copy_from_slice(&0x8000_0001u32.to_le_bytes());
        let e = Bundle::parse(&unknown).err();
        assert_eq!(
            e,
            Some(BundleError::BadVmFlags {
                vm: 1,
                flags: 0x8000_0001
            })
        );
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("VM 1: unknown VM flags 0x80000001")
        );
    }

    #[test]
    fn dt_fragment_round_trip_and_limit() {
        let fragment = [0xd0u8, 0x0d, 0xfe, 0xed, 1, 2, 3];
        let vm = VmImage {
            dt_fragment: Some(&fragment),
            ..sample(&KERNEL, None)
        };
        let bytes = encode(0, SystemInfo::default(), &[vm], &[], &[]);
        assert_eq!(encoded_size(1, 0, 0, 0, [5000, 15, 7]), bytes.len() as u64);
        let b = Bundle::parse(&bytes).expect("valid");
        assert_eq!(b.vm(0).and_then(|v| v.dt_fragment), Some(&fragment[..]));
        // Larger than DT_FRAGMENT_MAX, or outside the bundle: refused.
        let rec = HEADER_SIZE;
        let mut big = bytes.clone();
        big[rec + 152..rec + 160].copy_from_slice(&(DT_FRAGMENT_MAX + 1).to_le_bytes());
        assert_eq!(
            Bundle::parse(&big).err(),
            Some(BundleError::BadDtFragment { vm: 0 })
        );
        let mut outside = bytes;
        outside[rec + 144..rec + 152].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            Bundle::parse(&outside).err(),
            Some(BundleError::BlobOutOfBounds { vm: 0 })
        );
    }

    /// Parses [`good`] with `bytes` written at `at`.
    fn patched(at: usize, bytes: &[u8]) -> Result<(), BundleError> {
        let mut b = good();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        Bundle::parse(&b).map(|_| ())
    }

    fn patch32(at: usize, v: u32) -> BundleError {
        patched(at, &v.to_le_bytes()).expect_err("patched bundle must be rejected")
    }

    fn patch64(at: usize, v: u64) -> BundleError {
        patched(at, &v.to_le_bytes()).expect_err("patched bundle must be rejected")
    }

    #[test]
    fn rejects_bad_header() {
        let good = good();
        assert_eq!(
            Bundle::parse(&good[..10]).unwrap_err(),
            BundleError::Truncated
        );
        assert_eq!(
            Bundle::parse(&good[..HEADER_SIZE + 100]).unwrap_err(),
            BundleError::Truncated
        );
        assert_eq!(patched(0, b"X").unwrap_err(), BundleError::BadMagic);
        assert_eq!(patch32(8, 1), BundleError::UnsupportedVersion(1));
        assert_eq!(patch32(12, 0), BundleError::BadVmCount(0));
        assert_eq!(patch32(12, 17), BundleError::BadVmCount(17));
        assert_eq!(patch64(16, good.len() as u64 + 1), BundleError::Truncated);
        assert_eq!(patch64(16, 100), BundleError::Truncated);
        assert_eq!(patch64(16, u64::MAX), BundleError::Truncated);
        assert_eq!(patch32(28, 99), BundleError::BadSlice(99));
        assert_eq!(patch32(28, 1_000_001), BundleError::BadSlice(1_000_001));
        assert!(patched(28, &100u32.to_le_bytes()).is_ok());
        assert!(patched(28, &1_000_000u32.to_le_bytes()).is_ok());
        assert_eq!(patch32(32, 2), BundleError::BadStopPolicy(2));
        assert_eq!(patch32(36, 65), BundleError::BadDeviceCount(65));
        assert_eq!(patch32(40, 129), BundleError::BadChannelCount(129));
        // A declared size that cuts the channel records off.
        assert_eq!(patch64(16, CH0 as u64 + 10), BundleError::Truncated);
    }

    const VM0: usize = HEADER_SIZE;
    const VM1: usize = HEADER_SIZE + VM_RECORD_SIZE;
    const DEV0: usize = HEADER_SIZE + 3 * VM_RECORD_SIZE;
    const DEV1: usize = DEV0 + DEVICE_RECORD_SIZE;
    const CH0: usize = DEV0 + 2 * DEVICE_RECORD_SIZE;
    const CH1: usize = CH0 + CHANNEL_RECORD_SIZE;

    #[test]
    fn rejects_bad_vm_records() {
        let oob = BundleError::BlobOutOfBounds { vm: 0 };
        let fit = BundleError::KernelDoesNotFit { vm: 0 };
        let res = BundleError::BadResources { vm: 0 };
        let place = BundleError::BadPlacement { vm: 0 };
        assert_eq!(patch64(VM0 + 56, 1 << 40), oob);
        assert_eq!(patch64(VM0 + 64, u64::MAX), oob);
        assert_eq!(patch64(VM0 + 96, 1 << 40), oob);
        assert_eq!(patch64(VM0 + 112, 1 << 40), oob);
        assert_eq!(patch64(VM0 + 88, 1 << 40), fit);
        assert_eq!(patch64(VM0 + 88, 100), fit);
        assert_eq!(patch64(VM0 + 72, u64::MAX), fit);
        assert_eq!(patch64(VM0 + 80, 0), fit);
        assert_eq!(patch64(VM0 + 48, 0), res);
        assert_eq!(patch64(VM0 + 40, u64::MAX), res);
        assert_eq!(patch32(VM0 + 32, 0), res);
        assert_eq!(patch32(VM0 + 32, 9), res);
        assert_eq!(patch32(VM0 + 36, 7), BundleError::BadKernelKind { vm: 0 });
        assert_eq!(
            patched(VM0, &[0]).unwrap_err(),
            BundleError::BadName { vm: 0 }
        );
        // Bytes after the name's NUL, a name filling all 32 bytes, bad UTF-8.
        assert_eq!(
            patched(VM0 + 8, b"x").unwrap_err(),
            BundleError::BadName { vm: 0 }
        );
        assert_eq!(
            patched(VM0, &[b'n'; 32]).unwrap_err(),
            BundleError::BadName { vm: 0 }
        );
        assert_eq!(
            patched(VM0, &[0xff]).unwrap_err(),
            BundleError::BadName { vm: 0 }
        );
        // The command line blob is "console=ttyAMA0" at a 4 KiB boundary.
        let cmdline_at = {
            let b = good();
            u64::from_le_bytes(b[VM0 + 112..VM0 + 120].try_into().expect("8 bytes")) as usize
        };
        assert_eq!(
            patched(cmdline_at, &[0xff]).unwrap_err(),
            BundleError::BadCmdline { vm: 0 }
        );
        assert_eq!(patch32(VM0 + 128, 2), place);
        assert_eq!(patch32(VM0 + 132, 2), place);
        // vCPU 1 on physical CPU 8; an unused slot (vCPU 2) not zero.
        assert_eq!(patched(VM0 + 137, &[8]).unwrap_err(), place);
        assert_eq!(patched(VM0 + 138, &[1]).unwrap_err(), place);
        // Pinned vCPUs on the same CPU, or on the CPU shared VMs use.
        assert_eq!(
            patched(VM0 + 136, &[1, 1]).unwrap_err(),
            BundleError::CpuOvercommitted { vm: 0 }
        );
        assert_eq!(
            patched(VM1 + 136, &[1]).unwrap_err(),
            BundleError::CpuOvercommitted { vm: 0 }
        );
        // Shared vCPUs may share.
        assert!(patched(VM1 + 136, &[2]).is_ok());
        // A shared VM becoming pinned while another uses its CPU.
        assert_eq!(
            patched(VM1 + 128, &[1]).unwrap_err(),
            BundleError::CpuOvercommitted { vm: 1 }
        );
    }

    #[test]
    fn rejects_bad_devices() {
        let bad0 = BundleError::BadDevice { device: 0 };
        let bad1 = BundleError::BadDevice { device: 1 };
        let overlap1 = BundleError::DeviceOverlap { device: 1 };
        let irq1 = BundleError::InterruptConflict { device: 1 };
        assert_eq!(patched(DEV0, &[0]).unwrap_err(), bad0);
        assert_eq!(patch32(DEV0 + 32, 3), bad0);
        assert_eq!(patch32(DEV0 + 36, 5), bad0);
        assert_eq!(patch64(DEV0 + 40, 0x0901_0800), bad0);
        assert_eq!(patch64(DEV0 + 48, 0), bad0);
        assert_eq!(patch64(DEV0 + 48, 0x1800), bad0);
        assert_eq!(patch64(DEV0 + 40, !0xfff_u64), bad0);
        // An interrupt beyond the count.
        assert_eq!(patch32(DEV0 + 60, 9), bad0);
        assert_eq!(patch32(DEV1 + 64, 9), bad1);
        // Compatible lists: empty, too long, not NUL-terminated, an empty
        // entry, bytes after the list, not UTF-8.
        assert_eq!(patch32(DEV0 + 72, 0), bad0);
        assert_eq!(patch32(DEV0 + 72, 97), bad0);
        assert_eq!(patch32(DEV0 + 72, 9), bad0);
        assert_eq!(patched(DEV0 + 80, &[0]).unwrap_err(), bad0);
        assert_eq!(patched(DEV0 + 80 + 9, b"\0\0").unwrap_err(), bad0);
        assert_eq!(patched(DEV0 + 80 + 30, b"x").unwrap_err(), bad0);
        assert_eq!(patched(DEV0 + 80, &[0xff]).unwrap_err(), bad0);
        // Regions: the other device, the VM's RAM, the GIC/UART window, the
        // channel window.
        assert_eq!(patch64(DEV1 + 40, 0x0901_0000), overlap1);
        assert_eq!(patch64(DEV1 + 40, 0x4000_0000), overlap1);
        assert_eq!(patch64(DEV1 + 40, 0x0900_0000), overlap1);
        assert_eq!(patch64(DEV1 + 40, 0x0800_0000), overlap1);
        assert_eq!(patch64(DEV1 + 40, 0x0BFF_F000), overlap1);
        assert!(patched(DEV1 + 40, &0x0900_1000u64.to_le_bytes()).is_ok());
        // Interrupts: the UART's, a doorbell's, twice in one device, another
        // device's.
        assert_eq!(patch32(DEV1 + 56, 1), irq1);
        assert_eq!(patch32(DEV1 + 56, 48), irq1);
        assert_eq!(patch32(DEV1 + 56, 8), irq1);
        assert_eq!(patch32(DEV1 + 56, 2), irq1);
        assert!(patched(DEV1 + 56, &0u32.to_le_bytes()).is_ok());
        assert!(patched(DEV1 + 56, &47u32.to_le_bytes()).is_ok());
        // Five devices for one VM.
        let vms = vms();
        let devices: Vec<Device<'_>> = (0..5)
            .map(|i| Device {
                base: 0x0A00_0000 + i * 0x1000,
                irq_count: 0,
                irqs: [0; 4],
                ..rtc()
            })
            .collect();
        let bytes = encode(0, SYSTEM, &vms, &devices[..4], &[]);
        assert!(Bundle::parse(&bytes).is_ok());
        let bytes = encode(0, SYSTEM, &vms, &devices, &[]);
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::TooManyDevices { vm: 0 }
        );
    }

    #[test]
    fn rejects_bad_channels() {
        let bad0 = BundleError::BadChannel { channel: 0 };
        let bad1 = BundleError::BadChannel { channel: 1 };
        let overlap1 = BundleError::ChannelOverlap { channel: 1 };
        assert_eq!(patched(CH0, &[0]).unwrap_err(), bad0);
        for size in [0, 0x800, 0x1800, 0x20_1000] {
            assert_eq!(patch64(CH0 + 32, size), bad0, "size {size:#x}");
        }
        assert!(patched(CH1 + 32, &0x20_0000u64.to_le_bytes()).is_ok());
        // Unknown VM, the same VM at both ends.
        assert_eq!(patch32(CH0 + 40, 3), bad0);
        assert_eq!(patch32(CH0 + 64, 1), bad0);
        // Number out of range (with a matching doorbell), doorbell not 48 + number.
        let mut e = [0u8; 24];
        e[..4].copy_from_slice(&1u32.to_le_bytes());
        e[4..8].copy_from_slice(&16u32.to_le_bytes());
        e[8..16].copy_from_slice(&0x0B00_0000u64.to_le_bytes());
        e[16..20].copy_from_slice(&64u32.to_le_bytes());
        assert_eq!(patched(CH0 + 40, &e).unwrap_err(), bad0);
        assert_eq!(patch32(CH0 + 40 + 16, 49), bad0);
        // Addresses: unaligned, below, past the end of the window.
        assert_eq!(patch64(CH0 + 40 + 8, 0x0B00_0800), bad0);
        assert_eq!(patch64(CH0 + 40 + 8, 0x0AFF_F000), bad0);
        assert_eq!(patch64(CH0 + 40 + 8, 0x0C00_0000), bad0);
        assert_eq!(patch64(CH0 + 40 + 8, !0xfff_u64), bad0);
        assert!(patched(CH0 + 40 + 8, &0x0BFF_F000u64.to_le_bytes()).is_ok());
        // "log" reuses number 0 in VM 1 ("ping" has it); its memory in VM 1
        // overlaps "ping"'s.
        let mut e = [0u8; 16];
        e[12..].copy_from_slice(&DOORBELL_SPI_BASE.to_le_bytes());
        e[4..12].copy_from_slice(&0x0B00_2000u64.to_le_bytes());
        assert_eq!(patched(CH1 + 64 + 4, &e).unwrap_err(), bad1);
        assert_eq!(patch64(CH1 + 64 + 8, 0x0B00_0000), overlap1);
        // A channel inside its VM's RAM.
        let vms = vms();
        let mut low = vms;
        low[1].mem_base = 0x0A00_0000;
        low[1].mem_size = 0x0200_0000;
        let bytes = encode(0, SYSTEM, &low, &[], &[ping()]);
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::ChannelOverlap { channel: 0 }
        );
    }

    /// Whatever the bytes, parse returns (no panic), and a bundle it accepts
    /// answers every in-range accessor.
    #[test]
    fn mutations_never_panic() {
        let good = good();
        let records = CH1 + CHANNEL_RECORD_SIZE;
        let check = |bytes: &[u8]| {
            if let Ok(b) = Bundle::parse(bytes) {
                assert!((0..b.vm_count()).all(|i| b.vm(i).is_some()));
                assert!((0..b.device_count()).all(|i| b.device(i).is_some()));
                assert!((0..b.channel_count()).all(|i| b.channel(i).is_some()));
            }
        };
        for at in 0..records {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                check(&b);
            }
        }
        for len in (0..good.len()).step_by(7) {
            check(&good[..len]);
        }
    }

    fn net(vm: u32, transport: u32, network: u32, port: u16, mac0: u8) -> Virtio {
        Virtio {
            vm,
            transport,
            kind: VirtioKind::Net {
                network,
                port,
                mac: [mac0, 0, 0, 0, 0, vm as u8],
            },
        }
    }

    fn vsock(vm: u32, peers: u32) -> Virtio {
        Virtio {
            vm,
            transport: 1,
            kind: VirtioKind::Vsock {
                cid: VSOCK_CID_BASE + vm,
                peers,
            },
        }
    }

    /// A console in "linux", vsock between "linux" and "a", and both on
    /// network 0.
    fn virtio() -> Vec<Virtio> {
        vec![
            Virtio {
                vm: 0,
                transport: 0,
                kind: VirtioKind::Console,
            },
            vsock(0, 1 << 1),
            vsock(1, 1 << 0),
            net(0, 2, 0, 0, 2),
            net(1, 2, 0, 1, 6),
        ]
    }

    fn with_virtio(virtio: &[Virtio], devices: &[Device<'_>]) -> Result<(), BundleError> {
        let bytes = encode_with_virtio(0, SYSTEM, &vms(), devices, &[ping()], virtio);
        Bundle::parse(&bytes).map(|_| ())
    }

    #[test]
    fn virtio_round_trip() {
        let virtio = virtio();
        let bytes = encode_with_virtio(0, SYSTEM, &vms(), &[rtc(), gpio()], &[ping()], &virtio);
        assert_eq!(
            encoded_size(3, 2, 1, 5, [5000, 10, 15, 5000, 15, 5000, 15]),
            bytes.len() as u64
        );
        let b = Bundle::parse(&bytes).expect("valid bundle");
        assert_eq!(b.virtio_count(), 5);
        for (i, v) in virtio.iter().enumerate() {
            assert_eq!(b.virtio(i), Some(*v));
        }
        assert_eq!(b.virtio(5), None);
        assert_eq!(b.channel(0), Some(ping()));
        assert_eq!(virtio[3].kind.device_id(), 1);
        assert_eq!(virtio[0].kind.device_id(), 3);
        assert_eq!(virtio[1].kind.device_id(), 19);
    }

    #[test]
    fn rejects_bad_virtio_records() {
        let bad = |i| Err(BundleError::BadVirtio { virtio: i });
        let case = |name: &str, edit: &dyn Fn(&mut Vec<Virtio>), want: Result<(), BundleError>| {
            let mut v = virtio();
            edit(&mut v);
            assert_eq!(with_virtio(&v, &[]), want, "{name}");
        };
        case("the good set", &|_| {}, Ok(()));
        case("transport 32", &|v| v[0].transport = 32, bad(0));
        case("transport used twice", &|v| v[3].transport = 0, bad(3));
        case(
            "two consoles",
            &|v| {
                v.push(Virtio {
                    vm: 0,
                    transport: 9,
                    kind: VirtioKind::Console,
                })
            },
            bad(5),
        );
        case("unknown VM", &|v| v[0].vm = 3, bad(0));
        case("group MAC", &|v| v[3] = net(0, 2, 0, 0, 3), bad(3));
        case("port twice", &|v| v[4] = net(1, 2, 0, 0, 6), bad(4));
        case(
            "MAC twice",
            &|v| {
                v[4].kind = VirtioKind::Net {
                    network: 0,
                    port: 1,
                    mac: [2, 0, 0, 0, 0, 0],
                }
            },
            bad(4),
        );
        case(
            "one VM twice on a network",
            &|v| v.push(net(0, 5, 0, 2, 10)),
            bad(5),
        );
        case(
            "another network is fine",
            &|v| v.push(net(0, 5, 1, 0, 10)),
            Ok(()),
        );
        case(
            "network out of range",
            &|v| v[3] = net(0, 2, MAX_NETWORKS, 0, 2),
            bad(3),
        );
        case(
            "wrong CID",
            &|v| {
                v[1].kind = VirtioKind::Vsock {
                    cid: 7,
                    peers: 1 << 1,
                }
            },
            bad(1),
        );
        case("peer is itself", &|v| v[1] = vsock(0, 1), bad(1));
        case("peer unknown", &|v| v[1] = vsock(0, 1 << 5), bad(1));
        case("peer does not allow back", &|v| v[2] = vsock(1, 0), bad(1));
        case(
            "peer without vsock",
            &|v| v[1] = vsock(0, 1 << 2 | 1 << 1),
            bad(1),
        );
        let mut bytes = encode_with_virtio(0, SYSTEM, &vms(), &[], &[ping()], &virtio());
        let first = HEADER_SIZE + 3 * VM_RECORD_SIZE + CHANNEL_RECORD_SIZE;
        for (at, value) in [(28, 1u8), (4, 2), (12, 1)] {
            let mut b = bytes.clone();
            b[first + at] = value;
            assert_eq!(Bundle::parse(&b).map(|_| ()), bad(0), "byte {at} = {value}");
        }
        bytes[44] = (MAX_VIRTIO + 1) as u8;
        assert_eq!(
            Bundle::parse(&bytes).map(|_| ()),
            Err(BundleError::BadVirtioCount(MAX_VIRTIO as u32 + 1))
        );
    }

    fn disk(vm: u32, transport: u32, disk: u32, readonly: bool) -> Virtio {
        Virtio {
            vm,
            transport,
            kind: VirtioKind::Blk {
                disk,
                sectors: 0x1234_5678_9abc,
                readonly,
            },
        }
    }

    /// VM 2 made the service VM (identity-mapped, its vsock device paired
    /// with no VM), VMs 0 and 1 each given a disk, then `edit`ed: the
    /// records and the bundle's bytes.
    fn service_bundle(
        edit: &dyn Fn(&mut [VmImage<'static>; 3], &mut Vec<Virtio>),
    ) -> (Vec<Virtio>, Vec<u8>) {
        let mut vms = vms();
        vms[2].service = true;
        vms[2].identity = true;
        let mut v = virtio();
        v.push(vsock(2, 0));
        v.push(disk(0, 5, 0, false));
        v.push(disk(1, 5, 1, true));
        edit(&mut vms, &mut v);
        let bytes = encode_with_virtio(0, SYSTEM, &vms, &[], &[ping()], &v);
        (v, bytes)
    }

    fn with_service(
        edit: &dyn Fn(&mut [VmImage<'static>; 3], &mut Vec<Virtio>),
    ) -> Result<(), BundleError> {
        Bundle::parse(&service_bundle(edit).1).map(|_| ())
    }

    #[test]
    fn disks_round_trip_and_need_one_service_vm() {
        let (v, bytes) = service_bundle(&|_, _| {});
        let b = Bundle::parse(&bytes).expect("valid bundle");
        assert_eq!(b.virtio(6), Some(v[6]));
        assert_eq!(b.virtio(7), Some(v[7]), "read-only and a 48-bit capacity");
        assert_eq!(v[6].kind.device_id(), 2);
        assert_eq!(b.service_vm(), Some(2));
        assert!(b.vm(2).is_some_and(|vm| vm.service));

        let bad = Err(BundleError::BadService);
        assert_eq!(with_service(&|_, _| {}), Ok(()));
        assert_eq!(
            with_service(&|vms, _| vms[2].identity = false),
            bad,
            "not identity"
        );
        assert_eq!(with_service(&|vms, _| vms[1].service = true), bad, "two");
        assert_eq!(
            with_service(&|vms, _| vms[2].service = false),
            bad,
            "disks, no service VM"
        );
        assert_eq!(
            with_service(&|_, v| {
                v.remove(5);
            }),
            bad,
            "no vsock device"
        );
        assert_eq!(
            with_service(&|_, v| v.push(disk(2, 6, 2, false))),
            bad,
            "a disk of its own"
        );
        assert_eq!(
            with_service(&|_, v| {
                v[5] = vsock(2, 1 << 0);
                v[1] = vsock(0, 1 << 1 | 1 << 2);
            }),
            bad,
            "paired with a VM"
        );
        assert_eq!(
            with_service(&|_, v| v[7] = disk(1, 5, 0, false)),
            Err(BundleError::BadVirtio { virtio: 7 }),
            "one disk for two frontends"
        );
        assert_eq!(
            with_service(&|_, v| v[7] = disk(1, 5, MAX_DISKS, false)),
            Err(BundleError::BadVirtio { virtio: 7 }),
            "disk number out of range"
        );
        // A zero capacity and an unknown flag are refused as they are read.
        let mut bytes = bytes;
        let rec = HEADER_SIZE + 3 * VM_RECORD_SIZE + CHANNEL_RECORD_SIZE + 7 * VIRTIO_RECORD_SIZE;
        let mut b = bytes.clone();
        b[rec + 16..rec + 24].fill(0);
        assert_eq!(
            Bundle::parse(&b).map(|_| ()),
            Err(BundleError::BadVirtio { virtio: 7 })
        );
        bytes[rec + 24] = 2;
        assert_eq!(
            Bundle::parse(&bytes).map(|_| ()),
            Err(BundleError::BadVirtio { virtio: 7 })
        );
    }

    #[test]
    fn what_a_passthrough_device_takes_of_the_transports() {
        assert_eq!(virtio_pages_taken(0x0A00_3000, 0x1000), 0xff00_0000);
        assert_eq!(virtio_pages_taken(0x0A00_0FFF, 2), 0xffff, "two pages");
        assert_eq!(virtio_pages_taken(0x0900_0000, 0x100_0000), 0, "below");
        assert_eq!(virtio_pages_taken(0x0A00_4000, 0x1000), 0, "above");
        for (spi, transport) in [(15, None), (16, Some(0)), (47, Some(31)), (48, None)] {
            assert_eq!(virtio_transport_of_spi(spi), transport, "SPI {spi}");
        }
        assert_eq!(
            virtio_taken_by(0x0A00_3000, 0x1000, &[22, 40, 2]),
            0xff00_0040
        );
    }

    #[test]
    fn passthrough_in_a_virtio_vm_keeps_off_the_transports_it_uses() {
        let clash = Err(BundleError::VirtioClash { device: 0 });
        // VM 0 has devices on transports 0 (console), 1 (vsock) and 2 (NIC).
        let spi = |spi: u32| Device {
            irqs: [spi, 0, 0, 0],
            ..rtc()
        };
        assert_eq!(with_virtio(&virtio(), &[spi(17)]), clash, "the vsock's SPI");
        assert_eq!(
            with_virtio(&virtio(), &[spi(20)]),
            Ok(()),
            "transport 4 is free"
        );
        let page = |p: u64| Device {
            base: VIRTIO_WINDOW.start + p * 0x1000,
            ..rtc()
        };
        assert_eq!(with_virtio(&virtio(), &[page(0)]), clash, "transports 0-7");
        assert_eq!(
            with_virtio(&virtio(), &[page(3)]),
            Ok(()),
            "transports 24-31"
        );
        // In a VM without virtio devices, both are the user's to use.
        let elsewhere = |d: Device<'static>| Device { vm: 2, ..d };
        assert_eq!(with_virtio(&virtio(), &[elsewhere(spi(17))]), Ok(()));
        assert_eq!(with_virtio(&virtio(), &[elsewhere(page(0))]), Ok(()));
    }

    #[test]
    fn virtio_mutations_never_panic() {
        let good = encode_with_virtio(0, SYSTEM, &vms(), &[rtc()], &[ping()], &virtio());
        let start = HEADER_SIZE + 3 * VM_RECORD_SIZE + DEVICE_RECORD_SIZE + CHANNEL_RECORD_SIZE;
        for at in (40..48).chain(start..start + 5 * VIRTIO_RECORD_SIZE) {
            for v in [0x00, 0x01, 0x13, 0x80, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                if let Ok(b) = Bundle::parse(&b) {
                    assert!((0..b.virtio_count()).all(|i| b.virtio(i).is_some()));
                }
            }
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            BundleError::CpuOvercommitted { vm: 2 }.to_string(),
            "VM 2: a pinned vCPU shares its physical CPU with another vCPU"
        );
        assert_eq!(
            BundleError::BadSlice(5).to_string(),
            "time slice 5 us is outside 100..=1000000 us"
        );
    }
}
