//! The device tree each VM boots with.
//!
//! [`generate`] writes, into a caller buffer, a tree describing exactly one
//! VM in the shape QEMU's `virt` machine gives it: memory, one `cpu@N` per
//! vCPU (`reg` = the vCPU's virtual MPIDR affinity), PSCI over HVC, the GIC
//! (no ITS or v2m frame: the VM has none), the generic timer, the PL011 with
//! its fixed 24 MHz clock, and `/chosen` (bootargs, stdout-path, initrd,
//! rng-seed). A guest built for `virt` therefore finds its devices where it
//! expects them; [`virt_map`] holds that default map.
//!
//! On top of that, per VM:
//! - each shared-memory channel ([`GuestChannel`]) is a `/reserved-memory/shm@<ipa>`
//!   region (`compatible = "stratum,shmem"`, `no-map`) and a root
//!   `channel@<ipa>` node (`compatible = "stratum,channel"`) with the same
//!   `reg`, its doorbell (a rising-edge SPI), `stratum,id` (the number the
//!   guest passes to the `DOORBELL` hypercall), `stratum,name`,
//!   `stratum,peer` (the other VM's name) and `memory-region` pointing at
//!   the region;
//! - each passthrough device ([`GuestDevice`]) is a root `<name>@<base>`
//!   node with its compatible list, `reg` and level-high SPIs; but a
//!   `virtio,mmio` device whose SPIs are all transports' in its region (a
//!   page of QEMU's own transports, the service VM's disks) is one
//!   `<name>@<addr>` node per SPI, that transport's 0x200 bytes and SPI,
//!   as QEMU describes them: Linux's `virtio_mmio` drives one transport
//!   per node;
//! - with [`GuestDtConfig::virtio_mmio`], QEMU `virt`'s 32 virtio-mmio
//!   transports, lowest address first: transport *n* is
//!   `virtio_mmio@<addr>` at [`virt_map::VIRTIO_BASE`] plus 0x200·*n*,
//!   `compatible = "virtio,mmio"`, `dma-coherent`, its interrupt SPI
//!   [`virt_map::VIRTIO_FIRST_SPI`] plus *n*, rising edge. Nothing else
//!   of the VM may use those SPIs (the UART's, a channel doorbell's, a
//!   passthrough device's) or that window (a passthrough device's `reg`):
//!   such a clash is refused with [`GuestDtError::VirtioClash`] rather than
//!   described.
//!
//! Phandles: the GIC is 1, the UART's clock 2, channel *i*'s memory region
//! 3 + *i*.

use crate::addr::IpaRange;
use crate::fdt::{FdtError, FdtWriter};
use core::fmt::Write;
use stratum_abi::limits;

/// The default guest-physical map, mirroring QEMU `virt`.
pub mod virt_map {
    use crate::addr::{Ipa, IpaRange};

    /// Start of guest RAM.
    pub const RAM_BASE: Ipa = Ipa(0x4000_0000);
    /// The PL011's registers.
    pub const UART: IpaRange = IpaRange {
        start: Ipa(0x0900_0000),
        size: 0x1000,
    };
    /// The PL011's SPI (INTID 33).
    pub const UART_SPI: u32 = 1;
    /// The GIC distributor.
    pub const GICD: IpaRange = IpaRange {
        start: Ipa(0x0800_0000),
        size: 0x1_0000,
    };
    /// The GICv2 CPU interface: 8 KiB, so that `GICC_DIR` at offset 0x1000
    /// is inside (GIC-400 layout).
    pub const GICC: IpaRange = IpaRange {
        start: Ipa(0x0801_0000),
        size: 0x2000,
    };
    /// The first GICv3 redistributor.
    pub const GICR_BASE: Ipa = Ipa(0x080A_0000);
    /// Bytes per GICv3 redistributor (RD_base + SGI_base frames).
    pub const GICR_STRIDE: u64 = 0x2_0000;
    /// Redistributors that fit below the UART (as in QEMU's `virt`).
    pub const GICR_MAX_VCPUS: usize = 123;
    /// Secure physical timer PPI (INTID 29).
    pub const TIMER_SECURE_PHYS_PPI: u32 = 13;
    /// Non-secure physical timer PPI (INTID 30).
    pub const TIMER_PHYS_PPI: u32 = 14;
    /// Virtual timer PPI (INTID 27).
    pub const TIMER_VIRT_PPI: u32 = 11;
    /// Hypervisor physical timer PPI (INTID 26).
    pub const TIMER_HYP_PHYS_PPI: u32 = 10;
    /// The PL011's reference clock.
    pub const APB_PCLK_HZ: u32 = 24_000_000;
    /// The first virtio-mmio transport's registers (QEMU `virt`'s
    /// `VIRT_MMIO`); transport `n` is [`VIRTIO_STRIDE`] · `n` further on.
    pub const VIRTIO_BASE: Ipa = Ipa(0x0A00_0000);
    /// Bytes per virtio-mmio transport.
    pub const VIRTIO_STRIDE: u64 = 0x200;
    /// How many virtio-mmio transports a VM has (as on `virt`).
    pub const VIRTIO_COUNT: u32 = 32;
    /// Transport `n`'s SPI is `VIRTIO_FIRST_SPI + n` (INTIDs 48..=79).
    pub const VIRTIO_FIRST_SPI: u32 = 16;
    /// Every transport's registers.
    pub const VIRTIO: IpaRange = IpaRange {
        start: VIRTIO_BASE,
        size: VIRTIO_STRIDE * VIRTIO_COUNT as u64,
    };

    // The boot bundle's view of the same map (the host tool checks
    // configs against it).
    const _: () = {
        use stratum_abi::bundle;
        assert!(VIRTIO_BASE.0 == bundle::VIRTIO_WINDOW.start);
        assert!(VIRTIO.start.0 + VIRTIO.size == bundle::VIRTIO_WINDOW.end);
        assert!(VIRTIO_COUNT == bundle::VIRTIO_TRANSPORTS);
        assert!(VIRTIO_FIRST_SPI == bundle::VIRTIO_SPI_BASE);
    };

    /// The redistributor region for `vcpus` vCPUs, or `None` when more than
    /// [`GICR_MAX_VCPUS`].
    pub const fn gicr(vcpus: usize) -> Option<IpaRange> {
        if vcpus > GICR_MAX_VCPUS {
            return None;
        }
        Some(IpaRange {
            start: GICR_BASE,
            size: vcpus as u64 * GICR_STRIDE,
        })
    }
}

/// The VM's interrupt controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestGic {
    /// A GICv2 (`arm,cortex-a15-gic`): at most 8 vCPUs.
    V2 {
        /// Distributor.
        dist: IpaRange,
        /// CPU interface (the hardware GICV mapped here).
        cpu: IpaRange,
    },
    /// A GICv3 (`arm,gic-v3`) with one contiguous redistributor region.
    V3 {
        /// Distributor.
        dist: IpaRange,
        /// Redistributors, [`virt_map::GICR_STRIDE`] bytes per vCPU.
        redist: IpaRange,
    },
}

/// The VM's PL011.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestUart {
    /// Its registers.
    pub regs: IpaRange,
    /// Its SPI number (INTID − 32).
    pub spi: u32,
}

/// One end of a shared-memory channel, as this VM sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestChannel<'a> {
    /// The channel's number in this VM (what `DOORBELL` takes in `x1`).
    pub id: u32,
    /// The channel's name.
    pub name: &'a str,
    /// The name of the VM at the other end.
    pub peer: &'a str,
    /// The shared memory.
    pub shm: IpaRange,
    /// The doorbell's SPI number (INTID − 32), rising edge.
    pub spi: u32,
}

/// A passthrough device, as this VM sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestDevice<'a> {
    /// Node name before the `@`.
    pub name: &'a str,
    /// The compatible list: NUL-separated, NUL-terminated, no empty entry.
    pub compatible: &'a [u8],
    /// Its registers.
    pub regs: IpaRange,
    /// Its SPI numbers (INTID − 32), level high; at most
    /// [`limits::IRQS_PER_DEVICE`].
    pub spis: &'a [u32],
}

/// What the VM has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestDtConfig<'a> {
    /// Guest RAM.
    pub ram: IpaRange,
    /// Each vCPU's virtual MPIDR (affinity fields only), boot vCPU first.
    pub vcpu_mpidrs: &'a [u64],
    /// The interrupt controller.
    pub gic: GuestGic,
    /// The console UART, if the VM has one.
    pub uart: Option<GuestUart>,
    /// The kernel command line (omitted when empty).
    pub bootargs: &'a str,
    /// Where the initrd was loaded.
    pub initrd: Option<IpaRange>,
    /// Entropy for `/chosen/rng-seed`.
    pub rng_seed: Option<&'a [u8]>,
    /// How many times the VM has booted (1 on a cold boot; a reset adds one),
    /// as `/chosen/stratum,boot-count` (u32): lets a guest tell a reset from
    /// a cold boot (Linux shows it in `/proc/device-tree/chosen/`).
    pub boot_count: Option<u32>,
    /// Shared-memory channels to other VMs.
    pub channels: &'a [GuestChannel<'a>],
    /// Passthrough devices.
    pub devices: &'a [GuestDevice<'a>],
    /// An extra DT fragment (a flattened tree whose root's child nodes are
    /// added to the root), checked by [`check_fragment`].
    pub fragment: Option<&'a [u8]>,
    /// Which of `virt`'s 32 virtio-mmio transports the VM has (bit `n`:
    /// transport `n`; on its bus: describing one without is an external
    /// abort at the guest's first probe).
    pub virtio_mmio: u32,
}

/// Why a guest tree could not be generated. The variant docs are the
/// messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestDtError {
    /// The tree does not fit in the buffer, or could not be written.
    Fdt(FdtError),
    /// The VM has no vCPU.
    NoVcpus,
    /// A GICv2 VM has more than 8 vCPUs.
    TooManyVcpusForGicV2,
    /// A vCPU MPIDR has bits outside the affinity fields (39:32, 23:0).
    BadMpidr,
    /// Two vCPUs share an MPIDR.
    DuplicateMpidr,
    /// A passthrough device's compatible list is empty, not NUL-terminated,
    /// or has an empty entry.
    BadCompatible,
    /// A passthrough device has more than `IRQS_PER_DEVICE` interrupts.
    TooManyInterrupts,
    /// The extra DT fragment is unusable.
    Fragment(FragmentError),
    /// With the virtio-mmio transports, the UART, a channel doorbell or a
    /// passthrough device uses one of their SPIs, or a passthrough
    /// device's registers overlap their window.
    VirtioClash,
}

/// Why an extra DT fragment cannot be added to a VM's device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentError {
    /// Not a valid flattened device tree.
    NotFdt,
    /// The root has a property other than `#address-cells`/`#size-cells`
    /// (Stratum writes the root's properties itself).
    RootProperty,
    /// The `#address-cells`/`#size-cells` of its root are not 2 (the
    /// generated root's; a fragment's `reg` must use them).
    RootCells,
    /// A top-level node has the name of one Stratum generates (`chosen`,
    /// `memory@…`, `cpus`, `psci`, `intc@…`, `timer`, `apb-pclk`, `pl011@…`,
    /// `reserved-memory`, `channel@…`, `virtio_mmio@…`, or a passthrough
    /// device's).
    NameClash,
    /// A node defines a phandle below [`FRAGMENT_PHANDLE_MIN`] (those are
    /// Stratum's).
    Phandle,
    /// Nodes nest deeper than [`FRAGMENT_MAX_DEPTH`].
    TooDeep,
}

impl core::fmt::Display for FragmentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotFdt => "not a flattened device tree (compile it with dtc -O dtb)",
            Self::RootProperty => {
                "its root may only set #address-cells and #size-cells (Stratum writes the root)"
            }
            Self::RootCells => "its root's #address-cells and #size-cells must be 2",
            Self::NameClash => "a top-level node has the name of a node Stratum generates",
            Self::Phandle => "a node defines a phandle below 256 (those are Stratum's)",
            Self::TooDeep => "nodes nest more than 8 deep",
        })
    }
}

/// Phandles a fragment may define start here; the ones below are Stratum's.
pub const FRAGMENT_PHANDLE_MIN: u32 = 256;
/// Deepest nesting of a fragment's nodes below its root.
pub const FRAGMENT_MAX_DEPTH: usize = 8;

/// Top-level node names Stratum generates (or prefixes of them, ending in
/// `@`).
const GENERATED_NODES: [&str; 11] = [
    "chosen",
    "memory@",
    "reserved-memory",
    "cpus",
    "psci",
    "intc@",
    "timer",
    "apb-pclk",
    "pl011@",
    "channel@",
    "virtio_mmio@",
];

/// Checks that `fragment` can be added to a VM whose passthrough devices
/// have node base names `device_names`: see [`FragmentError`].
pub fn check_fragment<'n>(
    fragment: &[u8],
    device_names: impl IntoIterator<Item = &'n str> + Clone,
) -> Result<(), FragmentError> {
    checked_fragment(fragment, device_names).map(|_| ())
}

/// [`check_fragment`], returning the parsed fragment.
fn checked_fragment<'f, 'n>(
    fragment: &'f [u8],
    device_names: impl IntoIterator<Item = &'n str> + Clone,
) -> Result<crate::fdt::Fdt<'f>, FragmentError> {
    let fdt = crate::fdt::Fdt::new(fragment).map_err(|_| FragmentError::NotFdt)?;
    let root = fdt.root();
    for p in root.properties() {
        match p.name() {
            "#address-cells" | "#size-cells" => {
                if p.as_u32() != Some(2) {
                    return Err(FragmentError::RootCells);
                }
            }
            _ => return Err(FragmentError::RootProperty),
        }
    }
    for child in root.children() {
        let name = child.name();
        let generated = GENERATED_NODES.iter().any(|g| match g.strip_suffix('@') {
            Some(prefix) => child.base_name() == prefix,
            None => name == *g,
        });
        let device = device_names
            .clone()
            .into_iter()
            .any(|d| child.base_name() == d);
        if generated || device {
            return Err(FragmentError::NameClash);
        }
        check_fragment_node(&child, 1)?;
    }
    Ok(fdt)
}

fn check_fragment_node(node: &crate::fdt::Node<'_>, depth: usize) -> Result<(), FragmentError> {
    if depth > FRAGMENT_MAX_DEPTH {
        return Err(FragmentError::TooDeep);
    }
    for p in node.properties() {
        if matches!(p.name(), "phandle" | "linux,phandle")
            && p.as_u32().is_none_or(|h| h < FRAGMENT_PHANDLE_MIN)
        {
            return Err(FragmentError::Phandle);
        }
    }
    for child in node.children() {
        check_fragment_node(&child, depth + 1)?;
    }
    Ok(())
}

/// Copies `node` and everything below it into `w`.
fn copy_node(w: &mut FdtWriter<'_>, node: &crate::fdt::Node<'_>) -> Result<(), GuestDtError> {
    w.begin_node(node.name())?;
    for p in node.properties() {
        w.property(p.name(), p.raw())?;
    }
    for child in node.children() {
        copy_node(w, &child)?;
    }
    w.end_node()?;
    Ok(())
}

impl From<FdtError> for GuestDtError {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

impl core::fmt::Display for GuestDtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Fdt(e) => write!(f, "guest device tree: {e}"),
            Self::NoVcpus => f.write_str("guest device tree: VM has no vCPU"),
            Self::TooManyVcpusForGicV2 => {
                f.write_str("guest device tree: GICv2 VM has more than 8 vCPUs")
            }
            Self::BadMpidr => f.write_str("guest device tree: vCPU MPIDR has non-affinity bits"),
            Self::DuplicateMpidr => f.write_str("guest device tree: two vCPUs share an MPIDR"),
            Self::BadCompatible => {
                f.write_str("guest device tree: a passthrough device has a bad compatible list")
            }
            Self::TooManyInterrupts => {
                f.write_str("guest device tree: a passthrough device has too many interrupts")
            }
            Self::Fragment(e) => write!(f, "guest device tree: the extra DT fragment: {e}"),
            Self::VirtioClash => f.write_str(
                "guest device tree: an SPI or a region of the VM is a virtio-mmio transport's",
            ),
        }
    }
}

/// The MPIDR affinity fields: Aff3 (39:32) and Aff2..Aff0 (23:0).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;
/// GIC interrupt specifier kinds.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// `IRQ_TYPE_EDGE_RISING`: channel doorbells.
const IRQ_EDGE_RISING: u32 = 1;
/// `IRQ_TYPE_LEVEL_HIGH`.
const IRQ_LEVEL_HIGH: u32 = 4;
/// `IRQ_TYPE_LEVEL_LOW`: the architected timer's outputs.
const IRQ_LEVEL_LOW: u32 = 8;
/// Most vCPUs a GICv2 can target.
const GICV2_MAX_CPUS: usize = 8;
const GIC_PHANDLE: u32 = 1;
const CLOCK_PHANDLE: u32 = 2;
/// Channel *i*'s memory region has phandle `SHM_PHANDLE_BASE + i`.
const SHM_PHANDLE_BASE: u32 = 3;

/// A node name formatted on the stack (`cpu@100`).
struct Name {
    buf: [u8; 48],
    len: usize,
}

impl Name {
    fn new(args: core::fmt::Arguments<'_>) -> Result<Self, GuestDtError> {
        let mut name = Name {
            buf: [0; 48],
            len: 0,
        };
        name.write_fmt(args)
            .map_err(|_| GuestDtError::Fdt(FdtError::InvalidName))?;
        Ok(name)
    }

    fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl Write for Name {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes `<address size>` pairs as 2+2 cells.
fn reg(w: &mut FdtWriter<'_>, ranges: &[IpaRange]) -> Result<(), FdtError> {
    let mut cells = [0u32; 8];
    for (slot, r) in cells.chunks_exact_mut(4).zip(ranges) {
        let start = r.start.raw();
        slot.copy_from_slice(&[
            (start >> 32) as u32,
            start as u32,
            (r.size >> 32) as u32,
            r.size as u32,
        ]);
    }
    w.property_cells("reg", cells.get(..ranges.len() * 4).unwrap_or(&[]))
}

fn validate(desc: &GuestDtConfig<'_>) -> Result<(), GuestDtError> {
    let mpidrs = desc.vcpu_mpidrs;
    if mpidrs.is_empty() {
        return Err(GuestDtError::NoVcpus);
    }
    if matches!(desc.gic, GuestGic::V2 { .. }) && mpidrs.len() > GICV2_MAX_CPUS {
        return Err(GuestDtError::TooManyVcpusForGicV2);
    }
    for (i, m) in mpidrs.iter().enumerate() {
        if m & !MPIDR_AFFINITY_MASK != 0 {
            return Err(GuestDtError::BadMpidr);
        }
        if mpidrs.get(..i).is_some_and(|before| before.contains(m)) {
            return Err(GuestDtError::DuplicateMpidr);
        }
    }
    for d in desc.devices {
        let c = d.compatible;
        if c.last() != Some(&0) || c.first() == Some(&0) || c.windows(2).any(|w| w == [0, 0]) {
            return Err(GuestDtError::BadCompatible);
        }
        if d.spis.len() > limits::IRQS_PER_DEVICE {
            return Err(GuestDtError::TooManyInterrupts);
        }
    }
    check_virtio_clash(desc)
}

/// Writes the VM's device tree into `buf`; returns its size.
pub fn generate(desc: &GuestDtConfig<'_>, buf: &mut [u8]) -> Result<usize, GuestDtError> {
    validate(desc)?;
    let mut w = FdtWriter::new(buf)?;
    // boot_cpuid_phys holds the boot CPU's reg; only its low word fits.
    w.set_boot_cpuid_phys(desc.vcpu_mpidrs.first().map_or(0, |&m| m as u32));
    w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string("model", "linux,dummy-virt")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;
    chosen(&mut w, desc)?;
    let mem = Name::new(format_args!("memory@{:x}", desc.ram.start.raw()))?;
    w.begin_node(mem.as_str())?;
    w.property_string("device_type", "memory")?;
    reg(&mut w, &[desc.ram])?;
    w.end_node()?;
    reserved_memory(&mut w, desc.channels)?;
    cpus(&mut w, desc.vcpu_mpidrs)?;
    w.begin_node("psci")?;
    w.property_strings("compatible", &["arm,psci-1.0", "arm,psci-0.2"])?;
    w.property_string("method", "hvc")?;
    w.end_node()?;
    gic(&mut w, &desc.gic)?;
    timer(&mut w, desc)?;
    if let Some(uart) = &desc.uart {
        pl011(&mut w, uart)?;
    }
    channels(&mut w, desc.channels)?;
    if let Some(fragment) = desc.fragment {
        let fdt = checked_fragment(fragment, desc.devices.iter().map(|d| d.name))
            .map_err(GuestDtError::Fragment)?;
        for child in fdt.root().children() {
            copy_node(&mut w, &child)?;
        }
    }
    for device in desc.devices {
        passthrough(&mut w, device)?;
    }
    if desc.virtio_mmio != 0 {
        virtio_mmio(&mut w, desc.virtio_mmio)?;
    }
    w.end_node()?;
    Ok(w.finish()?)
}

/// The phandle of channel `index`'s memory region.
fn shm_phandle(index: usize) -> Result<u32, GuestDtError> {
    u32::try_from(index)
        .ok()
        .and_then(|i| SHM_PHANDLE_BASE.checked_add(i))
        .ok_or(GuestDtError::Fdt(FdtError::ValueTooLarge))
}

/// `/reserved-memory` with one `no-map` region per channel (none without
/// channels).
fn reserved_memory(
    w: &mut FdtWriter<'_>,
    channels: &[GuestChannel<'_>],
) -> Result<(), GuestDtError> {
    if channels.is_empty() {
        return Ok(());
    }
    w.begin_node("reserved-memory")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_empty("ranges")?;
    for (i, ch) in channels.iter().enumerate() {
        let name = Name::new(format_args!("shm@{:x}", ch.shm.start.raw()))?;
        w.begin_node(name.as_str())?;
        w.property_string("compatible", "stratum,shmem")?;
        reg(w, &[ch.shm])?;
        w.property_empty("no-map")?;
        w.property_u32("phandle", shm_phandle(i)?)?;
        w.end_node()?;
    }
    w.end_node()?;
    Ok(())
}

/// One `channel@<ipa>` node per channel.
fn channels(w: &mut FdtWriter<'_>, channels: &[GuestChannel<'_>]) -> Result<(), GuestDtError> {
    for (i, ch) in channels.iter().enumerate() {
        let name = Name::new(format_args!("channel@{:x}", ch.shm.start.raw()))?;
        w.begin_node(name.as_str())?;
        w.property_string("compatible", "stratum,channel")?;
        reg(w, &[ch.shm])?;
        w.property_cells("interrupts", &[GIC_SPI, ch.spi, IRQ_EDGE_RISING])?;
        w.property_u32("stratum,id", ch.id)?;
        w.property_string("stratum,name", ch.name)?;
        w.property_string("stratum,peer", ch.peer)?;
        w.property_u32("memory-region", shm_phandle(i)?)?;
        w.end_node()?;
    }
    Ok(())
}

/// `virt`'s virtio-mmio transports in `present` (bit `n`: transport `n`),
/// lowest address first.
fn virtio_mmio(w: &mut FdtWriter<'_>, present: u32) -> Result<(), GuestDtError> {
    for n in (0..virt_map::VIRTIO_COUNT).filter(|n| present & (1 << n) != 0) {
        let at = virt_map::VIRTIO_BASE.raw() + virt_map::VIRTIO_STRIDE * u64::from(n);
        let name = Name::new(format_args!("virtio_mmio@{at:x}"))?;
        w.begin_node(name.as_str())?;
        w.property_empty("dma-coherent")?;
        w.property_cells(
            "interrupts",
            &[GIC_SPI, virt_map::VIRTIO_FIRST_SPI + n, IRQ_EDGE_RISING],
        )?;
        reg(
            w,
            &[IpaRange {
                start: crate::addr::Ipa(at),
                size: virt_map::VIRTIO_STRIDE,
            }],
        )?;
        w.property_string("compatible", "virtio,mmio")?;
        w.end_node()?;
    }
    Ok(())
}

/// Nothing else of the VM uses a present transport's SPI or window.
fn check_virtio_clash(desc: &GuestDtConfig<'_>) -> Result<(), GuestDtError> {
    let base = virt_map::VIRTIO_FIRST_SPI;
    let present = |n: u32| n < virt_map::VIRTIO_COUNT && desc.virtio_mmio & (1 << n) != 0;
    let theirs = |spi: u32| spi.checked_sub(base).is_some_and(present);
    let window = |n: u32| IpaRange {
        start: crate::addr::Ipa(
            virt_map::VIRTIO_BASE.raw() + virt_map::VIRTIO_STRIDE * u64::from(n),
        ),
        size: virt_map::VIRTIO_STRIDE,
    };
    let clash = desc.uart.is_some_and(|u| theirs(u.spi))
        || desc.channels.iter().any(|c| theirs(c.spi))
        || desc.devices.iter().any(|d| {
            d.spis.iter().any(|&s| theirs(s))
                || (0..virt_map::VIRTIO_COUNT).any(|n| present(n) && d.regs.overlaps(&window(n)))
        });
    if clash {
        Err(GuestDtError::VirtioClash)
    } else {
        Ok(())
    }
}

/// A passthrough device's node, or its transports' nodes when it is a
/// page of `virt`'s virtio-mmio transports ([`virtio_transport_in`]).
fn passthrough(w: &mut FdtWriter<'_>, d: &GuestDevice<'_>) -> Result<(), GuestDtError> {
    let transports = d.compatible == b"virtio,mmio\0"
        && !d.spis.is_empty()
        && d.spis.iter().all(|&s| virtio_transport_in(d, s).is_some());
    if !transports {
        return device_node(w, d.name, d.compatible, d.regs, d.spis);
    }
    for &spi in d.spis {
        if let Some(regs) = virtio_transport_in(d, spi) {
            device_node(w, d.name, d.compatible, regs, &[spi])?;
        }
    }
    Ok(())
}

/// The registers of the virtio-mmio transport whose interrupt is `spi`,
/// when they lie in passthrough device `d`'s region.
fn virtio_transport_in(d: &GuestDevice<'_>, spi: u32) -> Option<IpaRange> {
    let n = spi
        .checked_sub(virt_map::VIRTIO_FIRST_SPI)
        .filter(|&n| n < virt_map::VIRTIO_COUNT)?;
    let start =
        crate::addr::Ipa(virt_map::VIRTIO_BASE.raw() + virt_map::VIRTIO_STRIDE * u64::from(n));
    d.regs
        .contains_span(start, virt_map::VIRTIO_STRIDE)
        .then_some(IpaRange {
            start,
            size: virt_map::VIRTIO_STRIDE,
        })
}

/// One `<name>@<base>` node: `compatible`, `reg` and level-high `spis`.
fn device_node(
    w: &mut FdtWriter<'_>,
    name: &str,
    compatible: &[u8],
    regs: IpaRange,
    spis: &[u32],
) -> Result<(), GuestDtError> {
    let name = Name::new(format_args!("{name}@{:x}", regs.start.raw()))?;
    w.begin_node(name.as_str())?;
    w.property("compatible", compatible)?;
    reg(w, &[regs])?;
    if !spis.is_empty() {
        let mut cells = [0u32; 3 * limits::IRQS_PER_DEVICE];
        for (slot, &spi) in cells.chunks_exact_mut(3).zip(spis) {
            slot.copy_from_slice(&[GIC_SPI, spi, IRQ_LEVEL_HIGH]);
        }
        w.property_cells("interrupts", cells.get(..3 * spis.len()).unwrap_or(&[]))?;
    }
    w.end_node()?;
    Ok(())
}

fn chosen(w: &mut FdtWriter<'_>, desc: &GuestDtConfig<'_>) -> Result<(), GuestDtError> {
    w.begin_node("chosen")?;
    if !desc.bootargs.is_empty() {
        w.property_string("bootargs", desc.bootargs)?;
    }
    if let Some(uart) = &desc.uart {
        let path = Name::new(format_args!("/pl011@{:x}", uart.regs.start.raw()))?;
        w.property_string("stdout-path", path.as_str())?;
    }
    if let Some(initrd) = &desc.initrd {
        w.property_u64("linux,initrd-start", initrd.start.raw())?;
        w.property_u64("linux,initrd-end", initrd.end().raw())?;
    }
    if let Some(seed) = desc.rng_seed {
        w.property("rng-seed", seed)?;
    }
    if let Some(count) = desc.boot_count {
        w.property_u32("stratum,boot-count", count)?;
    }
    w.end_node()?;
    Ok(())
}

fn cpus(w: &mut FdtWriter<'_>, mpidrs: &[u64]) -> Result<(), GuestDtError> {
    let two_cells = mpidrs.iter().any(|&m| m > u64::from(u32::MAX));
    w.begin_node("cpus")?;
    w.property_u32("#address-cells", if two_cells { 2 } else { 1 })?;
    w.property_u32("#size-cells", 0)?;
    for &mpidr in mpidrs {
        let name = Name::new(format_args!("cpu@{mpidr:x}"))?;
        w.begin_node(name.as_str())?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        if two_cells {
            w.property_u64("reg", mpidr)?;
        } else {
            w.property_u32("reg", mpidr as u32)?;
        }
        w.property_string("enable-method", "psci")?;
        w.end_node()?;
    }
    w.end_node()?;
    Ok(())
}

fn gic(w: &mut FdtWriter<'_>, gic: &GuestGic) -> Result<(), GuestDtError> {
    let (dist, other, compatible) = match *gic {
        GuestGic::V2 { dist, cpu } => (dist, cpu, "arm,cortex-a15-gic"),
        GuestGic::V3 { dist, redist } => (dist, redist, "arm,gic-v3"),
    };
    let name = Name::new(format_args!("intc@{:x}", dist.start.raw()))?;
    w.begin_node(name.as_str())?;
    w.property_string("compatible", compatible)?;
    w.property_u32("#interrupt-cells", 3)?;
    // No child nodes and no interrupt-map parent addresses: 0 address cells
    // (dtc wants it stated on an interrupt provider).
    w.property_u32("#address-cells", 0)?;
    w.property_empty("interrupt-controller")?;
    reg(w, &[dist, other])?;
    if matches!(gic, GuestGic::V3 { .. }) {
        w.property_u32("#redistributor-regions", 1)?;
    }
    w.property_u32("phandle", GIC_PHANDLE)?;
    w.end_node()?;
    Ok(())
}

fn timer(w: &mut FdtWriter<'_>, desc: &GuestDtConfig<'_>) -> Result<(), GuestDtError> {
    // GICv2 PPI specifiers name the CPUs they reach in bits 15:8.
    let flags = match desc.gic {
        GuestGic::V2 { .. } => {
            let cpus = desc.vcpu_mpidrs.len().min(GICV2_MAX_CPUS);
            (((1u32 << cpus) - 1) << 8) | IRQ_LEVEL_LOW
        }
        GuestGic::V3 { .. } => IRQ_LEVEL_LOW,
    };
    let mut cells = [0u32; 12];
    let ppis = [
        virt_map::TIMER_SECURE_PHYS_PPI,
        virt_map::TIMER_PHYS_PPI,
        virt_map::TIMER_VIRT_PPI,
        virt_map::TIMER_HYP_PHYS_PPI,
    ];
    for (slot, ppi) in cells.chunks_exact_mut(3).zip(ppis) {
        slot.copy_from_slice(&[GIC_PPI, ppi, flags]);
    }
    w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv8-timer")?;
    w.property_cells("interrupts", &cells)?;
    w.property_empty("always-on")?;
    w.end_node()?;
    Ok(())
}

fn pl011(w: &mut FdtWriter<'_>, uart: &GuestUart) -> Result<(), GuestDtError> {
    w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", virt_map::APB_PCLK_HZ)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_u32("phandle", CLOCK_PHANDLE)?;
    w.end_node()?;
    let name = Name::new(format_args!("pl011@{:x}", uart.regs.start.raw()))?;
    w.begin_node(name.as_str())?;
    w.property_strings("compatible", &["arm,pl011", "arm,primecell"])?;
    reg(w, &[uart.regs])?;
    w.property_cells("interrupts", &[GIC_SPI, uart.spi, IRQ_LEVEL_HIGH])?;
    w.property_cells("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    w.property_strings("clock-names", &["uartclk", "apb_pclk"])?;
    w.end_node()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Ipa;
    use crate::fdt::Fdt;
    use crate::fdt::tests::dtc_decompile;
    use crate::platform::{GicVersion, IrqKind, Platform, PsciConduit};

    const SEED: [u8; 32] = [0x5a; 32];

    fn config<'a>(mpidrs: &'a [u64], v3: bool, initrd: bool) -> GuestDtConfig<'a> {
        let gic = if v3 {
            GuestGic::V3 {
                dist: virt_map::GICD,
                redist: virt_map::gicr(mpidrs.len()).expect("fits"),
            }
        } else {
            GuestGic::V2 {
                dist: virt_map::GICD,
                cpu: virt_map::GICC,
            }
        };
        GuestDtConfig {
            ram: IpaRange::new(virt_map::RAM_BASE, 0x2000_0000).expect("ok"),
            vcpu_mpidrs: mpidrs,
            gic,
            uart: Some(GuestUart {
                regs: virt_map::UART,
                spi: virt_map::UART_SPI,
            }),
            bootargs: "console=ttyAMA0 earlycon",
            initrd: initrd.then(|| IpaRange::new(Ipa(0x5000_0000), 0x12_3456).expect("ok")),
            rng_seed: Some(&SEED),
            boot_count: Some(3),
            channels: &[],
            devices: &[],
            fragment: None,
            virtio_mmio: 0,
        }
    }

    fn generate_vec(desc: &GuestDtConfig<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let len = generate(desc, &mut buf).expect("generates");
        buf.truncate(len);
        buf
    }

    fn check(mpidrs: &[u64], v3: bool, initrd: bool) {
        let desc = config(mpidrs, v3, initrd);
        let blob = generate_vec(&desc);
        let fdt = Fdt::new(&blob).expect("valid");
        let root = fdt.root();
        assert!(root.is_compatible("linux,dummy-virt"));
        assert_eq!(
            root.property("interrupt-parent").and_then(|p| p.as_u32()),
            Some(GIC_PHANDLE)
        );
        let mem = fdt.find_node("/memory@40000000").expect("memory");
        assert_eq!(mem.device_type(), Some("memory"));
        assert_eq!(
            mem.reg().expect("reg").collect::<Vec<_>>(),
            [(0x4000_0000, 0x2000_0000)]
        );

        let cpus = fdt.find_node("/cpus").expect("cpus");
        let nodes: Vec<_> = cpus.children().collect();
        assert_eq!(nodes.len(), mpidrs.len());
        for (node, &mpidr) in nodes.iter().zip(mpidrs) {
            assert_eq!(node.name(), format!("cpu@{mpidr:x}"));
            assert_eq!(node.device_type(), Some("cpu"));
            assert!(node.is_compatible("arm,armv8"));
            assert_eq!(
                node.property("enable-method").and_then(|p| p.as_str()),
                Some("psci")
            );
            assert_eq!(node.reg().and_then(|mut r| r.next()), Some((mpidr, 0)));
        }

        let psci = fdt.find_node("/psci").expect("psci");
        assert_eq!(
            psci.compatible().expect("compat").collect::<Vec<_>>(),
            ["arm,psci-1.0", "arm,psci-0.2"]
        );
        assert_eq!(
            psci.property("method").and_then(|p| p.as_str()),
            Some("hvc")
        );

        let gic = fdt.find_node("/intc@8000000").expect("gic");
        assert!(gic.has_property("interrupt-controller"));
        assert_eq!(gic.phandle(), Some(GIC_PHANDLE));
        assert_eq!(
            gic.property("#interrupt-cells").and_then(|p| p.as_u32()),
            Some(3)
        );
        let regs: Vec<_> = gic.reg().expect("reg").collect();
        if v3 {
            assert!(gic.is_compatible("arm,gic-v3"));
            let gicr_size = mpidrs.len() as u64 * 0x2_0000;
            assert_eq!(regs, [(0x0800_0000, 0x1_0000), (0x080a_0000, gicr_size)]);
            assert_eq!(
                gic.property("#redistributor-regions")
                    .and_then(|p| p.as_u32()),
                Some(1)
            );
        } else {
            assert!(gic.is_compatible("arm,cortex-a15-gic"));
            assert_eq!(regs, [(0x0800_0000, 0x1_0000), (0x0801_0000, 0x2000)]);
        }

        let uart = fdt.find_node("/pl011@9000000").expect("uart");
        assert_eq!(
            uart.reg().expect("reg").collect::<Vec<_>>(),
            [(0x0900_0000, 0x1000)]
        );
        assert_eq!(
            uart.property("interrupts")
                .map(|p| p.cells().collect::<Vec<_>>()),
            Some(vec![0, 1, 4])
        );
        assert_eq!(
            uart.property("clock-names")
                .and_then(|p| p.as_strs())
                .map(|s| s.collect::<Vec<_>>()),
            Some(vec!["uartclk", "apb_pclk"])
        );
        let clock = fdt.find_node("/apb-pclk").expect("clock");
        assert_eq!(
            clock.property("clock-frequency").and_then(|p| p.as_u32()),
            Some(24_000_000)
        );
        assert_eq!(
            uart.property("clocks")
                .map(|p| p.cells().collect::<Vec<_>>()),
            Some(vec![clock.phandle().expect("phandle"); 2])
        );

        let chosen = fdt.find_node("/chosen").expect("chosen");
        assert_eq!(
            chosen.property("rng-seed").map(|p| p.raw()),
            Some(&SEED[..])
        );
        assert_eq!(
            chosen
                .property("stratum,boot-count")
                .and_then(|p| p.as_u32()),
            Some(3)
        );
        assert_eq!(fdt.stdout().map(|(n, _)| n), Some(uart));
        let start = chosen
            .property("linux,initrd-start")
            .and_then(|p| p.as_u64());
        let end = chosen.property("linux,initrd-end").and_then(|p| p.as_u64());
        if initrd {
            assert_eq!((start, end), (Some(0x5000_0000), Some(0x5012_3456)));
        } else {
            assert_eq!((start, end), (None, None));
        }

        // The guest tree is a valid platform description too.
        let p = Platform::from_fdt(&fdt).expect("platform");
        assert_eq!(p.memory().len(), 1);
        assert_eq!(p.cpus().iter().map(|c| c.mpidr).collect::<Vec<_>>(), mpidrs);
        assert_eq!(
            p.gic.version,
            if v3 { GicVersion::V3 } else { GicVersion::V2 }
        );
        assert_eq!(p.gic.phandle, Some(GIC_PHANDLE));
        let mask = if v3 {
            0
        } else {
            ((1u32 << mpidrs.len()) - 1) << 8
        };
        for (irq, intid) in [
            (p.timer.secure_phys, 29),
            (p.timer.phys, 30),
            (p.timer.virt, 27),
            (p.timer.hyp_phys, 26),
        ] {
            assert_eq!(
                (irq.kind, irq.intid(), irq.flags),
                (IrqKind::Ppi, intid, mask | 8)
            );
        }
        assert!(p.timer.always_on);
        assert_eq!(p.uart.and_then(|u| u.spi()), Some(1));
        assert_eq!(
            p.psci.map(|p| (p.conduit, p.version)),
            Some((PsciConduit::Hvc, (1, 0)))
        );
        assert_eq!(p.bootargs, Some("console=ttyAMA0 earlycon"));
        assert_eq!(
            p.initrd.map(|r| (r.base.raw(), r.size)),
            initrd.then_some((0x5000_0000, 0x12_3456))
        );
        assert_eq!(u64::from(fdt.boot_cpuid_phys()), mpidrs[0] & 0xffff_ffff);

        let dts = dtc_decompile(&blob);
        for needle in [
            "psci {",
            "intc@8000000 {",
            "timer {",
            "pl011@9000000 {",
            "chosen {",
            "cpu@",
            "always-on;",
        ] {
            assert!(dts.contains(needle), "missing {needle:?} in\n{dts}");
        }
    }

    #[test]
    fn variants() {
        for v3 in [false, true] {
            for initrd in [false, true] {
                check(&[0], v3, initrd);
                check(&[0, 1, 2, 3], v3, initrd);
            }
        }
        // Clustered MPIDRs, and Aff3 (which needs two address cells).
        check(&[0x100, 0x101, 0x1_0000], true, false);
        check(&[0x1_0000_0000, 0x2_0000_0001], true, true);
        check(&[0, 1, 2, 3, 4, 5, 6, 7], false, true);
    }

    #[test]
    fn minimal_vm() {
        let desc = GuestDtConfig {
            uart: None,
            bootargs: "",
            rng_seed: None,
            boot_count: None,
            ..config(&[0], true, false)
        };
        let blob = generate_vec(&desc);
        let fdt = Fdt::new(&blob).expect("valid");
        assert!(fdt.find_node("/pl011").is_none());
        assert!(fdt.find_node("/apb-pclk").is_none());
        let chosen = fdt.find_node("/chosen").expect("chosen");
        assert_eq!(chosen.properties().count(), 0);
        let p = Platform::from_fdt(&fdt).expect("platform");
        assert_eq!((p.uart, p.bootargs), (None, None));
        dtc_decompile(&blob);
    }

    #[test]
    fn errors() {
        let mut buf = [0u8; 4096];
        let bad = |mpidrs: &[u64], v3: bool| {
            let mut buf = [0u8; 4096];
            generate(&config(mpidrs, v3, false), &mut buf).err()
        };
        assert_eq!(bad(&[], true), Some(GuestDtError::NoVcpus));
        assert_eq!(
            bad(
                &[0; 9]
                    .map(|_| 0)
                    .iter()
                    .enumerate()
                    .map(|(i, _)| i as u64)
                    .collect::<Vec<_>>(),
                false
            ),
            Some(GuestDtError::TooManyVcpusForGicV2)
        );
        assert_eq!(bad(&[0x8000_0000], true), Some(GuestDtError::BadMpidr));
        assert_eq!(bad(&[1, 2, 1], true), Some(GuestDtError::DuplicateMpidr));
        let desc = config(&[0, 1], true, true);
        let need = generate(&desc, &mut buf).expect("fits");
        for size in [0, 64, need / 2, need - 1] {
            let mut small = vec![0u8; size];
            assert_eq!(
                generate(&desc, &mut small),
                Err(GuestDtError::Fdt(FdtError::BufferTooSmall))
            );
        }
        assert_eq!(generate(&desc, &mut vec![0u8; need]), Ok(need));
        assert_eq!(
            GuestDtError::NoVcpus.to_string(),
            "guest device tree: VM has no vCPU"
        );
    }

    fn ipa(start: u64, size: u64) -> IpaRange {
        IpaRange::new(Ipa(start), size).expect("valid range")
    }

    const CHANNELS: [GuestChannel<'static>; 2] = [
        GuestChannel {
            id: 0,
            name: "ping",
            peer: "ticker",
            shm: IpaRange {
                start: Ipa(0x0B00_0000),
                size: 0x1000,
            },
            spi: 48,
        },
        GuestChannel {
            id: 1,
            name: "log",
            peer: "linux",
            shm: IpaRange {
                start: Ipa(0x0B00_1000),
                size: 0x20_0000,
            },
            spi: 49,
        },
    ];

    fn cells(node: &crate::fdt::Node<'_>, name: &str) -> Option<Vec<u32>> {
        node.property(name).map(|p| p.cells().collect())
    }

    #[test]
    fn channels_and_passthrough_devices() {
        let devices = [
            GuestDevice {
                name: "rtc",
                compatible: b"arm,pl031\0arm,primecell\0",
                regs: ipa(0x0901_0000, 0x1000),
                spis: &[2],
            },
            GuestDevice {
                name: "gpio",
                compatible: b"arm,pl061\0",
                regs: ipa(0x1_0000_0000, 0x2000),
                spis: &[7, 8, 9, 10],
            },
            GuestDevice {
                name: "sram",
                compatible: b"mmio-sram\0",
                regs: ipa(0x0A00_0000, 0x1000),
                spis: &[],
            },
        ];
        for v3 in [false, true] {
            let desc = GuestDtConfig {
                channels: &CHANNELS,
                devices: &devices,
                fragment: None,
                ..config(&[0, 1], v3, true)
            };
            let blob = generate_vec(&desc);
            let fdt = Fdt::new(&blob).expect("valid");

            let rsv = fdt.find_node("/reserved-memory").expect("reserved-memory");
            assert_eq!(
                rsv.properties().map(|p| p.name()).collect::<Vec<_>>(),
                ["#address-cells", "#size-cells", "ranges"]
            );
            assert_eq!(cells(&rsv, "#address-cells"), Some(vec![2]));
            assert_eq!(cells(&rsv, "#size-cells"), Some(vec![2]));
            assert!(rsv.property("ranges").is_some_and(|p| p.is_empty()));
            assert_eq!(rsv.children().count(), 2);

            for (i, ch) in CHANNELS.iter().enumerate() {
                let at = ch.shm.start.raw();
                let size = ch.shm.size;
                let shm = fdt
                    .find_node(&format!("/reserved-memory/shm@{at:x}"))
                    .expect("shm region");
                assert_eq!(
                    shm.properties().map(|p| p.name()).collect::<Vec<_>>(),
                    ["compatible", "reg", "no-map", "phandle"]
                );
                assert!(shm.is_compatible("stratum,shmem"));
                assert_eq!(shm.reg().expect("reg").collect::<Vec<_>>(), [(at, size)]);
                assert!(shm.property("no-map").is_some_and(|p| p.is_empty()));
                assert_eq!(shm.phandle(), Some(3 + i as u32));

                let node = fdt
                    .find_node(&format!("/channel@{at:x}"))
                    .expect("channel node");
                assert_eq!(
                    node.properties().map(|p| p.name()).collect::<Vec<_>>(),
                    [
                        "compatible",
                        "reg",
                        "interrupts",
                        "stratum,id",
                        "stratum,name",
                        "stratum,peer",
                        "memory-region"
                    ]
                );
                assert!(node.is_compatible("stratum,channel"));
                assert_eq!(node.reg().expect("reg").collect::<Vec<_>>(), [(at, size)]);
                assert_eq!(cells(&node, "interrupts"), Some(vec![0, ch.spi, 1]));
                assert_eq!(cells(&node, "stratum,id"), Some(vec![ch.id]));
                assert_eq!(
                    node.property("stratum,name").and_then(|p| p.as_str()),
                    Some(ch.name)
                );
                assert_eq!(
                    node.property("stratum,peer").and_then(|p| p.as_str()),
                    Some(ch.peer)
                );
                let region = node
                    .property("memory-region")
                    .and_then(|p| p.as_u32())
                    .expect("memory-region");
                assert_eq!(fdt.node_by_phandle(region), Some(shm));
            }

            for d in &devices {
                let at = d.regs.start.raw();
                let node = fdt
                    .find_node(&format!("/{}@{at:x}", d.name))
                    .expect("device node");
                assert_eq!(
                    node.property("compatible").map(|p| p.raw()),
                    Some(d.compatible)
                );
                assert_eq!(
                    node.reg().expect("reg").collect::<Vec<_>>(),
                    [(at, d.regs.size)]
                );
                let want: Vec<u32> = d.spis.iter().flat_map(|&s| [0, s, 4]).collect();
                assert_eq!(cells(&node, "interrupts").unwrap_or_default(), want);
                assert_eq!(node.has_property("interrupts"), !d.spis.is_empty());
                assert_eq!(
                    node.properties().count(),
                    2 + usize::from(!d.spis.is_empty())
                );
            }
            assert_eq!(
                fdt.find_node("/rtc@9010000")
                    .and_then(|n| n.compatible())
                    .map(|c| c.collect::<Vec<_>>()),
                Some(vec!["arm,pl031", "arm,primecell"])
            );

            // Still a valid platform: one memory bank, same CPUs and GIC.
            let p = Platform::from_fdt(&fdt).expect("platform");
            assert_eq!(p.memory().len(), 1);
            assert_eq!(p.cpus().len(), 2);
            let dts = dtc_decompile(&blob);
            for needle in [
                "reserved-memory {",
                "shm@b001000 {",
                "no-map;",
                "channel@b000000 {",
                "stratum,peer = \"ticker\";",
                "rtc@9010000 {",
                "gpio@100000000 {",
            ] {
                assert!(dts.contains(needle), "missing {needle:?} in\n{dts}");
            }
        }
    }

    #[test]
    fn no_channels_no_reserved_memory() {
        let blob = generate_vec(&config(&[0], true, false));
        let fdt = Fdt::new(&blob).expect("valid");
        assert!(fdt.find_node("/reserved-memory").is_none());
        assert!(fdt.nodes().all(|n| !n.name().starts_with("channel@")));
    }

    #[test]
    fn a_passed_through_page_of_virtio_transports_is_one_node_per_transport() {
        // The service VM's disks: QEMU's transports 24 to 26 on the page at
        // 0x0A003000, and 16 on the next one down; a virtio device whose SPI
        // is not a transport of its region stays one node.
        let devices = [
            GuestDevice {
                name: "virtio_mmio",
                compatible: b"virtio,mmio\0",
                regs: ipa(0x0A00_3000, 0x1000),
                spis: &[40, 41, 42],
            },
            GuestDevice {
                name: "virtio_mmio",
                compatible: b"virtio,mmio\0",
                regs: ipa(0x0A00_2000, 0x1000),
                spis: &[32],
            },
            GuestDevice {
                name: "other",
                compatible: b"virtio,mmio\0",
                regs: ipa(0x0A00_1000, 0x1000),
                spis: &[24, 2],
            },
        ];
        let desc = GuestDtConfig {
            devices: &devices,
            fragment: None,
            ..config(&[0], true, false)
        };
        let blob = generate_vec(&desc);
        let fdt = Fdt::new(&blob).expect("valid");
        // (name, reg, interrupts) of each virtio,mmio node.
        type Node = (String, Vec<(u64, u64)>, Vec<u32>);
        let nodes: Vec<Node> = fdt
            .root()
            .children()
            .filter(|n| n.is_compatible("virtio,mmio"))
            .map(|n| {
                (
                    n.name().to_owned(),
                    n.reg().expect("reg").collect(),
                    cells(&n, "interrupts").unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            nodes,
            [
                (
                    "virtio_mmio@a003000".into(),
                    vec![(0x0A00_3000, 0x200)],
                    vec![0, 40, 4]
                ),
                (
                    "virtio_mmio@a003200".into(),
                    vec![(0x0A00_3200, 0x200)],
                    vec![0, 41, 4]
                ),
                (
                    "virtio_mmio@a003400".into(),
                    vec![(0x0A00_3400, 0x200)],
                    vec![0, 42, 4]
                ),
                (
                    "virtio_mmio@a002000".into(),
                    vec![(0x0A00_2000, 0x200)],
                    vec![0, 32, 4]
                ),
                (
                    "other@a001000".into(),
                    vec![(0x0A00_1000, 0x1000)],
                    vec![0, 24, 4, 0, 2, 4]
                ),
            ]
        );
    }

    #[test]
    fn bad_passthrough_devices() {
        let bad = |compatible: &[u8], spis: &[u32]| {
            let devices = [GuestDevice {
                name: "dev",
                compatible,
                regs: ipa(0x0A00_0000, 0x1000),
                spis,
            }];
            let desc = GuestDtConfig {
                devices: &devices,
                fragment: None,
                ..config(&[0], true, false)
            };
            generate(&desc, &mut [0u8; 4096]).err()
        };
        assert_eq!(bad(b"a\0", &[1, 2, 3, 4]), None);
        for compatible in [&b""[..], b"a", b"\0", b"a\0\0", b"\0a\0"] {
            assert_eq!(
                bad(compatible, &[]),
                Some(GuestDtError::BadCompatible),
                "{compatible:?}"
            );
        }
        assert_eq!(
            bad(b"a\0", &[1, 2, 3, 4, 5]),
            Some(GuestDtError::TooManyInterrupts)
        );
        // A name that cannot be a node name.
        let devices = [GuestDevice {
            name: "a/b",
            compatible: b"a\0",
            regs: ipa(0x0A00_0000, 0x1000),
            spis: &[],
        }];
        let desc = GuestDtConfig {
            devices: &devices,
            fragment: None,
            ..config(&[0], true, false)
        };
        assert_eq!(
            generate(&desc, &mut [0u8; 4096]),
            Err(GuestDtError::Fdt(FdtError::InvalidName))
        );
    }

    /// A fragment: `root_props` on its root, then `nodes` (name, phandle)
    /// with a `compatible` each and one grandchild under the first.
    fn fragment(root_props: &[(&str, u32)], nodes: &[(&str, Option<u32>)]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut w = FdtWriter::new(&mut buf).expect("writer");
        w.begin_node("").expect("root");
        for &(name, v) in root_props {
            w.property_u32(name, v).expect("prop");
        }
        for (i, &(name, phandle)) in nodes.iter().enumerate() {
            w.begin_node(name).expect("node");
            w.property_string("compatible", "test,thing").expect("prop");
            if let Some(h) = phandle {
                w.property_u32("phandle", h).expect("prop");
            }
            if i == 0 {
                w.begin_node("inner").expect("node");
                w.property_cells("values", &[1, 2, 3]).expect("prop");
                w.end_node().expect("end");
            }
            w.end_node().expect("end");
        }
        w.end_node().expect("end");
        let len = w.finish().expect("finish");
        buf.truncate(len);
        buf
    }

    #[test]
    fn fragment_nodes_join_the_root() {
        let root_cells = [("#address-cells", 2), ("#size-cells", 2)];
        let frag = fragment(&root_cells, &[("board-clock", Some(0x100)), ("leds", None)]);
        assert_eq!(check_fragment(&frag, ["rtc"]), Ok(()));
        let mpidrs = [0];
        let desc = GuestDtConfig {
            fragment: Some(&frag),
            ..config(&mpidrs, true, false)
        };
        let blob = generate_vec(&desc);
        let fdt = Fdt::new(&blob).expect("parses");
        let clk = fdt.find_node("/board-clock").expect("fragment node added");
        assert!(clk.is_compatible("test,thing"));
        assert_eq!(clk.phandle(), Some(0x100));
        let inner = fdt.find_node("/board-clock/inner").expect("its child too");
        assert_eq!(cells(&inner, "values"), Some(vec![1, 2, 3]));
        assert!(fdt.find_node("/leds").is_some());
        // The generated tree is all still there.
        assert!(fdt.find_node("/chosen").is_some() && fdt.find_node("/psci").is_some());
        assert_eq!(
            fdt.root().property("compatible").and_then(|p| p.as_str()),
            Some("linux,dummy-virt")
        );
    }

    #[test]
    fn bad_fragments_are_refused() {
        let root_cells = [("#address-cells", 2), ("#size-cells", 2)];
        let ok_node = [("extra", None)];
        // (fragment, error, whether the generator sees it too: it knows only
        // the devices of the VM it describes, which has none here)
        let cases: [(Vec<u8>, FragmentError, bool); 9] = [
            (b"not a tree".to_vec(), FragmentError::NotFdt, true),
            (
                fragment(&[("interrupt-parent", 5)], &ok_node),
                FragmentError::RootProperty,
                true,
            ),
            (
                fragment(&[("#address-cells", 1)], &ok_node),
                FragmentError::RootCells,
                true,
            ),
            (
                fragment(&root_cells, &[("chosen", None)]),
                FragmentError::NameClash,
                true,
            ),
            (
                fragment(&root_cells, &[("apb-pclk", None)]),
                FragmentError::NameClash,
                true,
            ),
            (
                fragment(&root_cells, &[("memory@40000000", None)]),
                FragmentError::NameClash,
                true,
            ),
            (
                fragment(&root_cells, &[("rtc@9010000", None)]),
                FragmentError::NameClash,
                false,
            ),
            (
                fragment(&root_cells, &[("clk", Some(1))]),
                FragmentError::Phandle,
                true,
            ),
            (
                fragment(&root_cells, &[("clk", Some(255))]),
                FragmentError::Phandle,
                true,
            ),
        ];
        for (frag, want, generator_too) in cases {
            assert_eq!(check_fragment(&frag, ["rtc"]), Err(want));
            if !generator_too {
                continue;
            }
            let mpidrs = [0];
            let desc = GuestDtConfig {
                fragment: Some(&frag),
                ..config(&mpidrs, true, false)
            };
            let mut buf = vec![0u8; 4096];
            assert_eq!(
                generate(&desc, &mut buf),
                Err(GuestDtError::Fragment(want)),
                "the generator checks too"
            );
        }
        assert_eq!(
            check_fragment(&fragment(&root_cells, &[("clk", Some(256))]), ["rtc"]),
            Ok(())
        );
    }

    #[test]
    fn virt_map_matches_design() {
        assert_eq!(virt_map::gicr(1).map(|r| r.end()), Some(Ipa(0x080c_0000)));
        assert_eq!(virt_map::gicr(123).map(|r| r.end()), Some(Ipa(0x0900_0000)));
        assert_eq!(virt_map::gicr(124), None);
        assert!(!virt_map::GICC.overlaps(&virt_map::GICD));
        assert!(!virt_map::UART.overlaps(&virt_map::gicr(123).expect("fits")));
    }

    #[test]
    fn virtio_mmio_transports_are_described_as_on_virt() {
        for v3 in [false, true] {
            let desc = GuestDtConfig {
                virtio_mmio: u32::MAX,
                ..config(&[0, 1], v3, false)
            };
            let mut buf = vec![0u8; 16384];
            let len = generate(&desc, &mut buf).expect("generates");
            let fdt = Fdt::new(&buf[..len]).expect("valid");
            let nodes: Vec<_> = fdt
                .root()
                .children()
                .filter(|n| n.name().starts_with("virtio_mmio@"))
                .collect();
            assert_eq!(nodes.len(), 32);
            for (n, node) in nodes.iter().enumerate() {
                let at = 0x0A00_0000 + 0x200 * n as u64;
                assert_eq!(node.name(), format!("virtio_mmio@{at:x}"));
                assert!(node.is_compatible("virtio,mmio"));
                assert!(node.property("dma-coherent").is_some());
                assert_eq!(node.reg().expect("reg").collect::<Vec<_>>(), [(at, 0x200)]);
                assert_eq!(
                    node.property("interrupts")
                        .map(|p| p.cells().collect::<Vec<_>>()),
                    Some(vec![0, 16 + n as u32, 1]),
                    "transport {n}: SPI 16 + n, rising edge"
                );
            }
        }
        // Without them, no node.
        let blob = generate_vec(&config(&[0], true, false));
        let fdt = Fdt::new(&blob).expect("valid");
        assert!(
            !fdt.root()
                .children()
                .any(|n| n.name().starts_with("virtio_mmio"))
        );
    }

    #[test]
    fn nothing_else_may_use_the_transports_spis_or_window() {
        let ipa = |start: u64, size: u64| IpaRange::new(Ipa(start), size).expect("ok");
        let try_with = |uart_spi: u32, spis: &[u32], regs: IpaRange, channel_spi: u32| {
            let devices = [GuestDevice {
                name: "dev",
                compatible: b"x\0",
                regs,
                spis,
            }];
            let channels = [GuestChannel {
                id: 0,
                name: "ch",
                peer: "p",
                shm: ipa(0x0B00_0000, 0x1000),
                spi: channel_spi,
            }];
            let desc = GuestDtConfig {
                uart: Some(GuestUart {
                    regs: virt_map::UART,
                    spi: uart_spi,
                }),
                devices: &devices,
                channels: &channels,
                virtio_mmio: u32::MAX,
                ..config(&[0], true, false)
            };
            generate(&desc, &mut vec![0u8; 16384]).err()
        };
        let clear = ipa(0x0A00_4000, 0x1000);
        assert_eq!(try_with(1, &[2, 15], clear, 48), None, "all clear");
        let clash = Some(GuestDtError::VirtioClash);
        assert_eq!(try_with(16, &[2], clear, 48), clash, "the UART's SPI");
        assert_eq!(try_with(1, &[2, 47], clear, 48), clash, "a device's SPI");
        assert_eq!(try_with(1, &[2], clear, 31), clash, "a doorbell's SPI");
        assert_eq!(
            try_with(1, &[2], ipa(0x0A00_3000, 0x1000), 48),
            clash,
            "a device's registers"
        );
        // A fragment may not name a transport's node either.
        let mut buf = vec![0u8; 1024];
        let mut w = FdtWriter::new(&mut buf).expect("writer");
        w.begin_node("").expect("root");
        w.property_u32("#address-cells", 2).expect("prop");
        w.property_u32("#size-cells", 2).expect("prop");
        w.begin_node("virtio_mmio@a000000").expect("node");
        w.end_node().expect("end");
        w.end_node().expect("end");
        let len = w.finish().expect("finish");
        assert_eq!(
            check_fragment(&buf[..len], ["rtc"]),
            Err(FragmentError::NameClash)
        );
    }
}
