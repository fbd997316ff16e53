//! What the host device tree says about the machine: RAM, CPUs, the GIC, the
//! console UART, the generic timer, PSCI and what the loader left in
//! `/chosen`.
//!
//! [`Platform::from_fdt`] extracts it once at boot into fixed-size arrays (no
//! allocation). Addresses are translated to CPU physical addresses through
//! the `ranges` of every bus above a node. Interrupts are decoded only when
//! their interrupt parent (the node's `interrupt-parent`, else the nearest
//! ancestor's) is the GIC; `interrupts-extended` is not read. Nodes whose
//! `status` is not `"okay"` are skipped, except CPUs (a `"disabled"` CPU can
//! still be started through its enable-method), which are skipped only when
//! `"fail"`.

use crate::addr::Pa;
use crate::fdt::{Cells, Fdt, Node};

/// Most memory regions recorded.
pub const MAX_MEMORY_REGIONS: usize = 8;
/// Most reserved regions (`/memreserve/` entries and `/reserved-memory`
/// children) the platform keeps.
pub const MAX_RESERVED_REGIONS: usize = 16;
/// Most CPUs recorded.
pub const MAX_CPUS: usize = 16;
/// Most GICv3 redistributor regions recorded.
pub const MAX_REDIST_REGIONS: usize = 8;

/// A range `[base, base + size)` of host-physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PhysRegion {
    /// First address.
    pub base: Pa,
    /// Size in bytes.
    pub size: u64,
}

/// How a CPU is brought online.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EnableMethod {
    /// `enable-method = "psci"`: PSCI `CPU_ON`.
    Psci,
    /// `enable-method = "spin-table"`: write the entry point to
    /// `cpu-release-addr` and `SEV`.
    SpinTable {
        /// The `cpu-release-addr` (0 if missing).
        release_addr: Pa,
    },
    /// No `enable-method` (a uniprocessor, or the boot CPU alone).
    #[default]
    None,
    /// Some other method this hypervisor does not drive.
    Other,
}

/// One CPU of `/cpus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CpuInfo {
    /// The affinity fields of its MPIDR (`reg`): Aff3 in bits 39:32,
    /// Aff2..Aff0 in bits 23:0.
    pub mpidr: u64,
    /// How to start it.
    pub enable_method: EnableMethod,
}

/// The GIC architecture version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2 (`arm,cortex-a15-gic`, `arm,gic-400`, …): memory-mapped CPU
    /// interface.
    V2,
    /// GICv3 (`arm,gic-v3`): redistributors and system-register CPU
    /// interface.
    V3,
}

/// The kind of a GIC interrupt specifier's first cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqKind {
    /// Shared peripheral interrupt (INTID 32 + n).
    Spi,
    /// Private peripheral interrupt (INTID 16 + n).
    Ppi,
    /// Extended SPI (GICv3.1, INTID 4096 + n).
    ExtendedSpi,
    /// Extended PPI (GICv3.1, INTID 1056 + n).
    ExtendedPpi,
}

/// One GIC interrupt specifier (`<kind number flags>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq {
    /// SPI, PPI, …
    pub kind: IrqKind,
    /// Number within its kind (the second cell).
    pub number: u32,
    /// The third cell: trigger type in bits 3:0 (1 rising edge, 4 level
    /// high, 8 level low …), GICv2 PPI CPU mask in bits 15:8.
    pub flags: u32,
}

impl Irq {
    /// The GIC interrupt ID.
    pub fn intid(&self) -> u32 {
        let base = match self.kind {
            IrqKind::Spi => 32,
            IrqKind::Ppi => 16,
            IrqKind::ExtendedSpi => 4096,
            IrqKind::ExtendedPpi => 1056,
        };
        base + self.number
    }

    /// The trigger type (bits 3:0 of the flags).
    pub fn trigger(&self) -> u32 {
        self.flags & 0xf
    }

    fn decode(cells: [u32; 3]) -> Option<Self> {
        let kind = match cells[0] {
            0 => IrqKind::Spi,
            1 => IrqKind::Ppi,
            2 => IrqKind::ExtendedSpi,
            3 => IrqKind::ExtendedPpi,
            _ => return None,
        };
        let limit = match kind {
            IrqKind::Spi => 988,
            IrqKind::Ppi => 16,
            IrqKind::ExtendedSpi => 1024,
            IrqKind::ExtendedPpi => 64,
        };
        (cells[1] < limit).then_some(Self {
            kind,
            number: cells[1],
            flags: cells[2],
        })
    }
}

/// The interrupt controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicInfo {
    /// v2 or v3.
    pub version: GicVersion,
    /// The distributor (GICD).
    pub dist: PhysRegion,
    redist: [PhysRegion; MAX_REDIST_REGIONS],
    redist_count: usize,
    /// The memory-mapped CPU interface (GICC): always for v2, optional for
    /// v3 (legacy support).
    pub cpu: Option<PhysRegion>,
    /// The virtual interface control block (GICH).
    pub hyp: Option<PhysRegion>,
    /// The virtual CPU interface (GICV).
    pub vcpu: Option<PhysRegion>,
    /// The virtual interface maintenance interrupt (a PPI).
    pub maintenance_irq: Option<Irq>,
    /// The GIC node's phandle.
    pub phandle: Option<u32>,
    /// `#interrupt-cells` (3, or 4 on v3 with PPI partitions).
    pub interrupt_cells: u32,
}

impl GicInfo {
    /// The GICv3 redistributor regions (empty for v2).
    pub fn redistributors(&self) -> &[PhysRegion] {
        self.redist.get(..self.redist_count).unwrap_or(&[])
    }

    /// The memory-mapped CPU interface as one contiguous 8 KiB window
    /// (`GICC_DIR` at 0x1000): see [`contiguous_cpu_interface`].
    pub fn cpu_interface(&self) -> Option<PhysRegion> {
        self.cpu.map(contiguous_cpu_interface)
    }

    /// The virtual CPU interface as one contiguous 8 KiB window, what a
    /// guest's GICC is mapped onto: see [`contiguous_cpu_interface`].
    pub fn virtual_cpu_interface(&self) -> Option<PhysRegion> {
        self.vcpu.map(contiguous_cpu_interface)
    }
}

/// Bytes of a GICv2 CPU interface frame pair (two 4 KiB pages).
const CPU_IF_SIZE: u64 = 0x2000;
/// The size a device tree gives a GIC-400 CPU interface whose 4 KiB pages
/// are each aliased over 64 KiB (page 0 over the first 64 KiB, page 1 over
/// the second), as on the ZynqMP.
const CPU_IF_ALIASED_SIZE: u64 = 0x2_0000;
/// Where, in such a region, the last alias of page 0 meets the first of
/// page 1: an 8 KiB window with both pages in order.
const CPU_IF_ALIASED_OFFSET: u64 = 0xf000;

/// A GICv2 CPU interface region from the device tree as the 8 KiB window
/// software uses: the region itself, or, when the tree gives 128 KiB (a
/// GIC-400 with 64 KiB-aliased pages), the window 60 KiB in, where its two
/// pages sit side by side (Linux's GIC driver does the same). The whole
/// region stays the hypervisor's ([`Platform::owned_by_hypervisor`]).
pub fn contiguous_cpu_interface(r: PhysRegion) -> PhysRegion {
    if r.size == CPU_IF_ALIASED_SIZE {
        PhysRegion {
            base: Pa(r.base.0 + CPU_IF_ALIASED_OFFSET),
            size: CPU_IF_SIZE,
        }
    } else {
        r
    }
}

/// The console UART (a PL011).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UartInfo {
    /// Which kind of UART it is.
    pub kind: UartKind,
    /// Its registers.
    pub regs: PhysRegion,
    /// Its interrupt, when routed to the GIC.
    pub irq: Option<Irq>,
}

/// The UARTs the hypervisor's console can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011 (`arm,pl011`): QEMU `virt`, most Arm reference boards.
    Pl011,
    /// Cadence UART (`cdns,uart-r1p12`, `cdns,uart-r1p8`, `xlnx,xuartps`):
    /// Xilinx Zynq and ZynqMP (ZCU102/ZCU104).
    Cadence,
    /// 8250/16550-style (`ns16550a`, `ns16550`, `snps,dw-apb-uart`): the
    /// register index is scaled by `1 << reg_shift` and accessed
    /// `io_width` bytes wide (the DT's `reg-shift`, default 0, and
    /// `reg-io-width`, 1 or 4, default 1). RK3588-class boards.
    Ns16550 {
        /// `reg-shift`.
        reg_shift: u8,
        /// `reg-io-width`: 1 or 4.
        io_width: u8,
    },
}

/// Compatible strings of the UARTs the console can drive, with their kind
/// (16550's shift and width are read from the node).
const UART_COMPATIBLES: &[(&str, UartKind)] = &[
    ("arm,pl011", UartKind::Pl011),
    ("cdns,uart-r1p12", UartKind::Cadence),
    ("cdns,uart-r1p8", UartKind::Cadence),
    ("xlnx,xuartps", UartKind::Cadence),
    (
        "snps,dw-apb-uart",
        UartKind::Ns16550 {
            reg_shift: 0,
            io_width: 1,
        },
    ),
    (
        "ns16550a",
        UartKind::Ns16550 {
            reg_shift: 0,
            io_width: 1,
        },
    ),
    (
        "ns16550",
        UartKind::Ns16550 {
            reg_shift: 0,
            io_width: 1,
        },
    ),
];

impl UartInfo {
    /// The SPI number (INTID − 32), if its interrupt is an SPI.
    pub fn spi(&self) -> Option<u32> {
        self.irq
            .filter(|i| i.kind == IrqKind::Spi)
            .map(|i| i.number)
    }
}

/// The generic timer's interrupts (`arm,armv8-timer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerInfo {
    /// Secure EL1 physical timer.
    pub secure_phys: Irq,
    /// Non-secure EL1 physical timer.
    pub phys: Irq,
    /// Virtual timer.
    pub virt: Irq,
    /// EL2 (hypervisor) physical timer.
    pub hyp_phys: Irq,
    /// EL2 virtual timer (ARMv8.1 VHE), when listed.
    pub hyp_virt: Option<Irq>,
    /// `always-on`: the timer keeps counting in low-power states.
    pub always_on: bool,
    /// `clock-frequency`, when firmware failed to set `CNTFRQ_EL0`.
    pub frequency: Option<u32>,
}

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `method = "smc"`.
    Smc,
    /// `method = "hvc"`.
    Hvc,
}

/// The firmware's PSCI interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PsciInfo {
    /// SMC or HVC.
    pub conduit: PsciConduit,
    /// The newest version the node is compatible with, as `(major, minor)`:
    /// (1, 0) for `arm,psci-1.0`, (0, 2) for `arm,psci-0.2`, (0, 1) for
    /// `arm,psci` alone (whose function IDs are then in the properties).
    pub version: (u16, u16),
    /// PSCI 0.1 `cpu_on` function ID, if given.
    pub cpu_on_fn: Option<u32>,
    /// PSCI 0.1 `cpu_off` function ID, if given.
    pub cpu_off_fn: Option<u32>,
}

/// Why the host device tree could not describe the machine. The variant
/// docs are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// No `device_type = "memory"` node with a non-empty `reg`.
    NoMemory,
    /// More memory regions than `MAX_MEMORY_REGIONS`.
    TooManyMemoryRegions,
    /// A memory node's `reg` is missing or malformed.
    BadMemoryReg,
    /// More reserved regions (`/memreserve/` and `/reserved-memory`) than `MAX_RESERVED_REGIONS`.
    TooManyReservedRegions,
    /// A `/reserved-memory` child's `reg` is malformed.
    BadReservedReg,
    /// No `/cpus` node, or no CPU in it.
    NoCpus,
    /// More CPUs than `MAX_CPUS`.
    TooManyCpus,
    /// `/cpus` `#address-cells` is not 1 or 2.
    BadCpuAddressCells,
    /// A CPU node's `reg` is missing or malformed.
    BadCpuReg,
    /// No enabled `arm,gic-v3` or GICv2-compatible interrupt controller.
    NoGic,
    /// The GIC's `reg` lacks the distributor, the redistributors (v3) or the
    /// CPU interface (v2), or is malformed.
    BadGicReg,
    /// More GICv3 redistributor regions than `MAX_REDIST_REGIONS`.
    TooManyRedistRegions,
    /// The GIC's `#interrupt-cells` is not 3 (or 4 for v3).
    BadGicInterruptCells,
    /// No enabled `arm,armv8-timer` node.
    NoTimer,
    /// The timer lacks four GIC PPIs in `interrupts`.
    BadTimerInterrupts,
    /// The console PL011's `reg` is missing or malformed.
    BadUartReg,
    /// The PSCI node's `method` is missing or not "smc" or "hvc".
    BadPsciMethod,
    /// `/chosen` has only one of `linux,initrd-start`/`-end`, a malformed
    /// one, or an end before the start.
    BadInitrd,
    /// `/chosen/bootargs` is not a string.
    BadBootargs,
    /// An address does not translate to a CPU physical address through the
    /// `ranges` of the buses above its node.
    Untranslatable,
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let msg = match self {
            Self::NoMemory => "device tree describes no memory",
            Self::TooManyMemoryRegions => "device tree describes too many memory regions",
            Self::BadMemoryReg => "memory node has a bad reg",
            Self::TooManyReservedRegions => {
                "device tree reserves too many memory regions (/memreserve/ and /reserved-memory)"
            }
            Self::BadReservedReg => "a /reserved-memory node has a bad reg",
            Self::NoCpus => "device tree describes no CPUs",
            Self::TooManyCpus => "device tree describes too many CPUs",
            Self::BadCpuAddressCells => "/cpus #address-cells is not 1 or 2",
            Self::BadCpuReg => "CPU node has a bad reg",
            Self::NoGic => "device tree describes no GICv2/v3",
            Self::BadGicReg => "GIC node has a bad reg",
            Self::TooManyRedistRegions => "GIC has too many redistributor regions",
            Self::BadGicInterruptCells => "GIC #interrupt-cells is not 3 or 4",
            Self::NoTimer => "device tree describes no arm,armv8-timer",
            Self::BadTimerInterrupts => "timer does not list four GIC PPIs",
            Self::BadUartReg => "console PL011 has a bad reg",
            Self::BadPsciMethod => "PSCI method is not smc or hvc",
            Self::BadInitrd => "/chosen initrd range is malformed",
            Self::BadBootargs => "/chosen/bootargs is not a string",
            Self::Untranslatable => "address not translatable through ranges",
        };
        f.write_str(msg)
    }
}

/// Compatible strings of GICv2-style interrupt controllers.
const GICV2_COMPATIBLES: &[&str] = &[
    "arm,cortex-a15-gic",
    "arm,gic-400",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
];
/// Compatible strings of the generic timer.
const TIMER_COMPATIBLES: &[&str] = &["arm,armv8-timer", "arm,armv7-timer"];
/// Compatible strings of PSCI firmware nodes.
const PSCI_COMPATIBLES: &[&str] = &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];

/// The machine, as the host device tree describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform<'a> {
    memory: [PhysRegion; MAX_MEMORY_REGIONS],
    memory_count: usize,
    cpus: [CpuInfo; MAX_CPUS],
    cpu_count: usize,
    /// The interrupt controller.
    pub gic: GicInfo,
    /// The console UART: the one `/chosen/stdout-path` names if the
    /// console can drive it ([`UartKind`]), else the first enabled one
    /// (PL011, then Cadence, then 16550); `None` without any.
    pub uart: Option<UartInfo>,
    /// The generic timer.
    pub timer: TimerInfo,
    /// PSCI firmware, if described.
    pub psci: Option<PsciInfo>,
    /// The initrd the loader placed (`linux,initrd-start`..`-end`).
    pub initrd: Option<PhysRegion>,
    /// `/chosen/bootargs`.
    pub bootargs: Option<&'a str>,
    reserved: [ReservedRegion; MAX_RESERVED_REGIONS],
    reserved_count: usize,
    /// `/chosen/rng-seed`: random bytes from the loader (QEMU without
    /// `dtb-randomness=off`, U-Boot with a hardware RNG), any length.
    pub rng_seed: Option<&'a [u8]>,
    /// The header's `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
}

/// Memory the firmware or the board keeps for itself: never handed to a
/// VM. With `no_map` (a `/reserved-memory` child with `no-map`, e.g. secure
/// firmware's RAM) EL2 does not map it as memory either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReservedRegion {
    /// Where.
    pub region: PhysRegion,
    /// Not to be mapped at all.
    pub no_map: bool,
}

impl<'a> Platform<'a> {
    /// Reads the machine description out of `fdt`.
    pub fn from_fdt(fdt: &Fdt<'a>) -> Result<Self, PlatformError> {
        let (memory, memory_count) = memory_regions(fdt)?;
        let (reserved, reserved_count) = reserved_regions(fdt)?;
        let (cpus, cpu_count) = cpus(fdt)?;
        let gic = gic(fdt)?;
        let timer = timer(fdt, &gic)?;
        let uart = uart(fdt, &gic)?;
        let psci = psci(fdt)?;
        let chosen = fdt.root().child("chosen");
        let initrd = match chosen {
            Some(chosen) => initrd(&chosen)?,
            None => None,
        };
        let bootargs = match chosen.and_then(|c| c.property("bootargs")) {
            Some(p) => Some(p.as_str().ok_or(PlatformError::BadBootargs)?),
            None => None,
        };
        let rng_seed = chosen.and_then(|c| c.property("rng-seed")).map(|p| p.raw());
        Ok(Self {
            memory,
            memory_count,
            cpus,
            cpu_count,
            gic,
            uart,
            timer,
            psci,
            initrd,
            bootargs,
            rng_seed,
            reserved,
            reserved_count,
            boot_cpuid_phys: fdt.boot_cpuid_phys(),
        })
    }

    /// The RAM regions, in device tree order.
    pub fn memory(&self) -> &[PhysRegion] {
        self.memory.get(..self.memory_count).unwrap_or(&[])
    }

    /// The reserved regions: the header's `/memreserve/` entries, then the
    /// enabled `/reserved-memory` children with a `reg` (dynamic ones, with
    /// only a `size`, are the OS's to place and reserve nothing here).
    pub fn reserved(&self) -> &[ReservedRegion] {
        self.reserved.get(..self.reserved_count).unwrap_or(&[])
    }

    /// The CPUs, in device tree order.
    pub fn cpus(&self) -> &[CpuInfo] {
        self.cpus.get(..self.cpu_count).unwrap_or(&[])
    }

    /// What of the hypervisor's own the physical range `[base, base + size)`
    /// overlaps — RAM, a GIC frame or the console UART — if anything: a
    /// region that must never be passed through to a guest. An empty or
    /// wrapping range counts as overlapping RAM.
    pub fn owned_by_hypervisor(&self, base: u64, size: u64) -> Option<&'static str> {
        let Some(end) = base.checked_add(size).filter(|_| size > 0) else {
            return Some("RAM");
        };
        let hits = |r: &PhysRegion| base < r.base.0.saturating_add(r.size) && r.base.0 < end;
        if self.memory().iter().any(hits) {
            return Some("RAM");
        }
        let gic = &self.gic;
        let frames = [Some(gic.dist), gic.cpu, gic.hyp, gic.vcpu];
        if frames.iter().flatten().any(hits) || gic.redistributors().iter().any(hits) {
            return Some("the GIC");
        }
        if self.uart.is_some_and(|u| hits(&u.regs)) {
            return Some("the console UART");
        }
        None
    }
}

/// Translates each `reg` entry of `node` to a physical region; `bad` when
/// `reg` is missing or malformed.
fn regions<'a>(
    fdt: &Fdt<'a>,
    node: &Node<'a>,
    bad: PlatformError,
) -> Result<impl Iterator<Item = Result<PhysRegion, PlatformError>> + use<'a>, PlatformError> {
    let reg = node.reg().ok_or(bad)?;
    let (fdt, node) = (*fdt, *node);
    Ok(reg.map(move |(addr, size)| {
        let base = fdt
            .translate(&node, addr)
            .ok_or(PlatformError::Untranslatable)?;
        Ok(PhysRegion {
            base: Pa(base),
            size,
        })
    }))
}

fn memory_regions(
    fdt: &Fdt<'_>,
) -> Result<([PhysRegion; MAX_MEMORY_REGIONS], usize), PlatformError> {
    let mut out = [PhysRegion::default(); MAX_MEMORY_REGIONS];
    let mut count = 0;
    for node in fdt.nodes() {
        if node.device_type() != Some("memory") || !node.is_enabled() {
            continue;
        }
        for region in regions(fdt, &node, PlatformError::BadMemoryReg)? {
            let region = region?;
            if region.size == 0 {
                continue;
            }
            let slot = out
                .get_mut(count)
                .ok_or(PlatformError::TooManyMemoryRegions)?;
            *slot = region;
            count += 1;
        }
    }
    if count == 0 {
        return Err(PlatformError::NoMemory);
    }
    Ok((out, count))
}

fn reserved_regions(
    fdt: &Fdt<'_>,
) -> Result<([ReservedRegion; MAX_RESERVED_REGIONS], usize), PlatformError> {
    let mut out = [ReservedRegion::default(); MAX_RESERVED_REGIONS];
    let mut count = 0;
    let mut add = |region: PhysRegion, no_map: bool| {
        if region.size == 0 {
            return Ok(());
        }
        let slot = out
            .get_mut(count)
            .ok_or(PlatformError::TooManyReservedRegions)?;
        *slot = ReservedRegion { region, no_map };
        count += 1;
        Ok(())
    };
    for (base, size) in fdt.reservations() {
        add(
            PhysRegion {
                base: Pa(base),
                size,
            },
            false,
        )?;
    }
    if let Some(parent) = fdt.root().child("reserved-memory") {
        for node in parent.children().filter(Node::is_enabled) {
            if node.reg().is_none() {
                continue;
            }
            let no_map = node.has_property("no-map");
            for region in regions(fdt, &node, PlatformError::BadReservedReg)? {
                add(region?, no_map)?;
            }
        }
    }
    Ok((out, count))
}

fn cpus(fdt: &Fdt<'_>) -> Result<([CpuInfo; MAX_CPUS], usize), PlatformError> {
    let node = fdt.root().child("cpus").ok_or(PlatformError::NoCpus)?;
    let cells = node.child_cells();
    if !matches!(cells.address, 1 | 2) {
        return Err(PlatformError::BadCpuAddressCells);
    }
    let mut out = [CpuInfo::default(); MAX_CPUS];
    let mut count = 0;
    for cpu in node.children() {
        if cpu.device_type() != Some("cpu") {
            continue;
        }
        if cpu.property("status").and_then(|p| p.as_str()) == Some("fail") {
            continue;
        }
        let reg_cells = Cells {
            address: cells.address,
            size: 0,
        };
        let (mpidr, _) = cpu
            .reg_with(reg_cells)
            .and_then(|mut r| r.next())
            .ok_or(PlatformError::BadCpuReg)?;
        let enable_method = match cpu.property("enable-method").and_then(|p| p.as_str()) {
            None => EnableMethod::None,
            Some("psci") => EnableMethod::Psci,
            Some("spin-table") => EnableMethod::SpinTable {
                release_addr: Pa(cpu
                    .property("cpu-release-addr")
                    .and_then(|p| p.as_cells_u64())
                    .unwrap_or(0)),
            },
            Some(_) => EnableMethod::Other,
        };
        let slot = out.get_mut(count).ok_or(PlatformError::TooManyCpus)?;
        *slot = CpuInfo {
            mpidr,
            enable_method,
        };
        count += 1;
    }
    if count == 0 {
        return Err(PlatformError::NoCpus);
    }
    Ok((out, count))
}

fn first_enabled<'a>(fdt: &Fdt<'a>, compatibles: &[&str]) -> Option<Node<'a>> {
    fdt.find_compatible(compatibles).find(|n| n.is_enabled())
}

fn gic(fdt: &Fdt<'_>) -> Result<GicInfo, PlatformError> {
    let (node, version) = match first_enabled(fdt, &["arm,gic-v3"]) {
        Some(node) => (node, GicVersion::V3),
        None => (
            first_enabled(fdt, GICV2_COMPATIBLES).ok_or(PlatformError::NoGic)?,
            GicVersion::V2,
        ),
    };
    let interrupt_cells = node
        .property("#interrupt-cells")
        .and_then(|p| p.as_u32())
        .unwrap_or(0);
    let cells_ok = match version {
        GicVersion::V2 => interrupt_cells == 3,
        GicVersion::V3 => matches!(interrupt_cells, 3 | 4),
    };
    if !cells_ok {
        return Err(PlatformError::BadGicInterruptCells);
    }
    let mut regs = regions(fdt, &node, PlatformError::BadGicReg)?;
    let dist = regs.next().ok_or(PlatformError::BadGicReg)??;
    let mut redist = [PhysRegion::default(); MAX_REDIST_REGIONS];
    let mut redist_count = 0;
    if version == GicVersion::V3 {
        let count = node
            .property("#redistributor-regions")
            .map(|p| p.as_u32().ok_or(PlatformError::BadGicReg))
            .transpose()?
            .unwrap_or(1);
        if count == 0 {
            return Err(PlatformError::BadGicReg);
        }
        for _ in 0..count {
            let region = regs.next().ok_or(PlatformError::BadGicReg)??;
            let slot = redist
                .get_mut(redist_count)
                .ok_or(PlatformError::TooManyRedistRegions)?;
            *slot = region;
            redist_count += 1;
        }
    }
    let cpu = regs.next().transpose()?;
    if version == GicVersion::V2 && cpu.is_none() {
        return Err(PlatformError::BadGicReg);
    }
    let hyp = regs.next().transpose()?;
    let vcpu = regs.next().transpose()?;
    let mut info = GicInfo {
        version,
        dist,
        redist,
        redist_count,
        cpu,
        hyp,
        vcpu,
        maintenance_irq: None,
        phandle: node.phandle(),
        interrupt_cells,
    };
    info.maintenance_irq = irq(fdt, &node, &info, 0);
    Ok(info)
}

/// The `index`th interrupt of `node`, when its interrupt parent is the GIC
/// and the specifier is well formed.
fn irq<'a>(fdt: &Fdt<'a>, node: &Node<'a>, gic: &GicInfo, index: usize) -> Option<Irq> {
    // The interrupt parent: the node's own, else the nearest ancestor's.
    let mut parent = node.property("interrupt-parent").and_then(|p| p.as_u32());
    if parent.is_none() {
        for ancestor in fdt.ancestors(node)? {
            if let Some(p) = ancestor
                .property("interrupt-parent")
                .and_then(|p| p.as_u32())
            {
                parent = Some(p);
            }
        }
    }
    // With no interrupt-parent anywhere the GIC (the only controller this
    // reads) is assumed.
    if parent.is_some() && parent != gic.phandle {
        return None;
    }
    let cells = usize::try_from(gic.interrupt_cells).ok()?;
    let mut spec = node
        .property("interrupts")?
        .cells()
        .skip(index.checked_mul(cells)?);
    let decoded = [spec.next()?, spec.next()?, spec.next()?];
    Irq::decode(decoded)
}

fn timer(fdt: &Fdt<'_>, gic: &GicInfo) -> Result<TimerInfo, PlatformError> {
    let node = first_enabled(fdt, TIMER_COMPATIBLES).ok_or(PlatformError::NoTimer)?;
    let ppi = |index| irq(fdt, &node, gic, index).filter(|i| i.kind == IrqKind::Ppi);
    let need = |index| ppi(index).ok_or(PlatformError::BadTimerInterrupts);
    Ok(TimerInfo {
        secure_phys: need(0)?,
        phys: need(1)?,
        virt: need(2)?,
        hyp_phys: need(3)?,
        hyp_virt: ppi(4),
        always_on: node.has_property("always-on"),
        frequency: node.property("clock-frequency").and_then(|p| p.as_u32()),
    })
}

/// The kind of UART `node` is, if the console can drive it.
fn uart_kind(node: &Node<'_>) -> Result<Option<UartKind>, PlatformError> {
    let Some(&(_, kind)) = UART_COMPATIBLES.iter().find(|(c, _)| node.is_compatible(c)) else {
        return Ok(None);
    };
    let UartKind::Ns16550 { .. } = kind else {
        return Ok(Some(kind));
    };
    let cell = |name: &str, default: u32| {
        node.property(name)
            .map_or(Some(default), |p| p.as_u32())
            .ok_or(PlatformError::BadUartReg)
    };
    let reg_shift = u8::try_from(cell("reg-shift", 0)?)
        .ok()
        .filter(|s| *s <= 4)
        .ok_or(PlatformError::BadUartReg)?;
    let io_width = match cell("reg-io-width", 1)? {
        1 => 1,
        4 => 4,
        _ => return Err(PlatformError::BadUartReg),
    };
    Ok(Some(UartKind::Ns16550 {
        reg_shift,
        io_width,
    }))
}

fn uart(fdt: &Fdt<'_>, gic: &GicInfo) -> Result<Option<UartInfo>, PlatformError> {
    let known = |n: &Node<'_>| UART_COMPATIBLES.iter().any(|(c, _)| n.is_compatible(c));
    let compatibles: [&str; UART_COMPATIBLES.len()] =
        core::array::from_fn(|i| UART_COMPATIBLES[i].0);
    // The one /chosen/stdout-path names, else the first enabled one, in
    // the order of the table (a PL011 first).
    let node = match fdt.stdout() {
        Some((node, _)) if known(&node) && node.is_enabled() => Some(node),
        _ => compatibles
            .iter()
            .find_map(|c| first_enabled(fdt, core::slice::from_ref(c))),
    };
    let Some(node) = node else {
        return Ok(None);
    };
    let Some(kind) = uart_kind(&node)? else {
        return Ok(None);
    };
    let regs = regions(fdt, &node, PlatformError::BadUartReg)?
        .next()
        .ok_or(PlatformError::BadUartReg)??;
    Ok(Some(UartInfo {
        kind,
        regs,
        irq: irq(fdt, &node, gic, 0),
    }))
}

fn psci(fdt: &Fdt<'_>) -> Result<Option<PsciInfo>, PlatformError> {
    let Some(node) = first_enabled(fdt, PSCI_COMPATIBLES) else {
        return Ok(None);
    };
    let conduit = match node.property("method").and_then(|p| p.as_str()) {
        Some("smc") => PsciConduit::Smc,
        Some("hvc") => PsciConduit::Hvc,
        _ => return Err(PlatformError::BadPsciMethod),
    };
    let version = if node.is_compatible("arm,psci-1.0") {
        (1, 0)
    } else if node.is_compatible("arm,psci-0.2") {
        (0, 2)
    } else {
        (0, 1)
    };
    let function = |name| node.property(name).and_then(|p| p.as_u32());
    Ok(Some(PsciInfo {
        conduit,
        version,
        cpu_on_fn: function("cpu_on"),
        cpu_off_fn: function("cpu_off"),
    }))
}

fn initrd(chosen: &Node<'_>) -> Result<Option<PhysRegion>, PlatformError> {
    let get = |name| {
        chosen
            .property(name)
            .map(|p| p.as_cells_u64().ok_or(PlatformError::BadInitrd))
            .transpose()
    };
    match (get("linux,initrd-start")?, get("linux,initrd-end")?) {
        (None, None) => Ok(None),
        (Some(start), Some(end)) if end >= start => Ok(Some(PhysRegion {
            base: Pa(start),
            size: end - start,
        })),
        _ => Err(PlatformError::BadInitrd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdt::{FdtError, FdtWriter};

    const QEMU_V3: &[u8] = include_bytes!("../testdata/qemu-virt-gicv3.dtb");
    const QEMU_V2: &[u8] = include_bytes!("../testdata/qemu-virt-gicv2.dtb");
    const QEMU_MAX: &[u8] = include_bytes!("../testdata/qemu-virt-max-initrd.dtb");

    fn parse(blob: &[u8]) -> Result<Platform<'_>, PlatformError> {
        Platform::from_fdt(&Fdt::new(blob).expect("valid blob"))
    }

    fn region(base: u64, size: u64) -> PhysRegion {
        PhysRegion {
            base: Pa(base),
            size,
        }
    }

    fn ppi(number: u32, flags: u32) -> Irq {
        Irq {
            kind: IrqKind::Ppi,
            number,
            flags,
        }
    }

    fn check_qemu_common(p: &Platform<'_>, timer_flags: u32) {
        assert_eq!(p.timer.secure_phys, ppi(13, timer_flags));
        assert_eq!(p.timer.phys, ppi(14, timer_flags));
        assert_eq!(p.timer.virt, ppi(11, timer_flags));
        assert_eq!(p.timer.hyp_phys, ppi(10, timer_flags));
        assert_eq!(p.timer.virt.intid(), 27);
        assert_eq!(p.timer.hyp_virt, None);
        assert!(p.timer.always_on);
        assert_eq!(p.timer.frequency, None);
        let uart = p.uart.expect("uart");
        assert_eq!(uart.regs, region(0x0900_0000, 0x1000));
        assert_eq!(uart.spi(), Some(1));
        assert_eq!(uart.irq.map(|i| (i.intid(), i.trigger())), Some((33, 4)));
        let psci = p.psci.expect("psci");
        assert_eq!(psci.conduit, PsciConduit::Smc);
        assert_eq!(psci.version, (1, 0));
        assert_eq!(psci.cpu_on_fn, Some(0xc400_0003));
        assert_eq!(p.gic.maintenance_irq, Some(ppi(9, 4)));
        assert_eq!(p.gic.dist, region(0x0800_0000, 0x1_0000));
        assert_eq!(p.gic.interrupt_cells, 3);
        assert_eq!(p.boot_cpuid_phys, 0);
        for (i, cpu) in p.cpus().iter().enumerate() {
            assert_eq!(cpu.mpidr, i as u64);
            assert_eq!(cpu.enable_method, EnableMethod::Psci);
        }
    }

    #[test]
    fn hypervisor_regions_are_never_passed_through() {
        for blob in [QEMU_V3, QEMU_V2] {
            let p = parse(blob).expect("platform");
            // The PL031 RTC and the virtio-mmio window are free to give away.
            assert_eq!(p.owned_by_hypervisor(0x0901_0000, 0x1000), None);
            assert_eq!(p.owned_by_hypervisor(0x0a00_0000, 0x200), None);
            assert_eq!(
                p.owned_by_hypervisor(0x0900_0000, 0x1000),
                Some("the console UART")
            );
            assert_eq!(
                p.owned_by_hypervisor(0x0900_0800, 0x1000),
                Some("the console UART")
            );
            assert_eq!(p.owned_by_hypervisor(0x0800_0000, 0x1000), Some("the GIC"));
            assert_eq!(p.owned_by_hypervisor(0x3fff_f000, 0x2000), Some("RAM"));
            assert_eq!(p.owned_by_hypervisor(0x4000_0000, 0), Some("RAM"));
            assert_eq!(p.owned_by_hypervisor(u64::MAX, 2), Some("RAM"));
        }
        let v3 = parse(QEMU_V3).expect("platform");
        assert_eq!(v3.owned_by_hypervisor(0x080a_0000, 0x1000), Some("the GIC"));
        let v2 = parse(QEMU_V2).expect("platform");
        assert_eq!(v2.owned_by_hypervisor(0x0803_0000, 0x1000), Some("the GIC"));
    }

    #[test]
    fn qemu_gicv3() {
        let p = parse(QEMU_V3).expect("platform");
        assert_eq!(p.memory(), [region(0x4000_0000, 0x4000_0000)]);
        assert_eq!(p.cpus().len(), 2);
        assert_eq!(p.gic.version, GicVersion::V3);
        assert_eq!(p.gic.redistributors(), [region(0x080a_0000, 0xf6_0000)]);
        assert_eq!((p.gic.cpu, p.gic.hyp, p.gic.vcpu), (None, None, None));
        check_qemu_common(&p, 4);
        assert_eq!((p.initrd, p.bootargs), (None, None));
        assert_eq!(
            p.rng_seed.map(<[u8]>::len),
            Some(32),
            "QEMU's 32 random bytes in /chosen/rng-seed"
        );
    }

    #[test]
    fn qemu_gicv2() {
        let p = parse(QEMU_V2).expect("platform");
        assert_eq!(p.gic.version, GicVersion::V2);
        assert_eq!(p.gic.redistributors(), []);
        assert_eq!(p.gic.cpu, Some(region(0x0801_0000, 0x1_0000)));
        assert_eq!(p.gic.hyp, Some(region(0x0803_0000, 0x1_0000)));
        assert_eq!(p.gic.vcpu, Some(region(0x0804_0000, 0x1_0000)));
        // GICv2 PPIs carry the CPU mask (two CPUs) in bits 15:8.
        check_qemu_common(&p, 0x304);
    }

    #[test]
    fn qemu_max_with_initrd() {
        let p = parse(QEMU_MAX).expect("platform");
        assert_eq!(p.memory(), [region(0x4000_0000, 0x8000_0000)]);
        assert_eq!(p.cpus().len(), 4);
        assert_eq!(p.gic.version, GicVersion::V3);
        check_qemu_common(&p, 4);
        // QEMU writes the initrd bounds as single cells.
        assert_eq!(p.initrd, Some(region(0x4800_0000, 0x10)));
        assert_eq!(p.bootargs, Some("console=ttyAMA0 earlycon"));
    }

    /// What a hand-built host tree contains; each field breaks one piece.
    #[derive(Clone)]
    struct Spec {
        memory_regions: usize,
        cpus: usize,
        cpu_address_cells: u32,
        cpu_reg: Option<&'static [u32]>,
        gic: Option<&'static str>,
        gic_interrupt_cells: u32,
        gic_reg_entries: usize,
        gic_reg_size: u32,
        redist_regions: Option<u32>,
        timer_ppis: usize,
        timer_kind: u32,
        psci_method: Option<&'static str>,
        initrd_start: Option<&'static [u32]>,
        initrd_end: Option<&'static [u32]>,
        bootargs: Option<&'static [u8]>,
        uart_parent: Option<u32>,
        uart_compatible: &'static [&'static str],
        uart_cells: &'static [(&'static str, u32)],
        /// `/reserved-memory` children: name, reg (2+2 cells), no-map, status.
        reserved: &'static [(&'static str, Option<[u32; 4]>, bool, &'static str)],
    }

    const GOOD: Spec = Spec {
        memory_regions: 1,
        cpus: 2,
        cpu_address_cells: 2,
        cpu_reg: None,
        gic: Some("arm,gic-v3"),
        gic_interrupt_cells: 3,
        gic_reg_entries: 2,
        gic_reg_size: 0x1_0000,
        redist_regions: None,
        timer_ppis: 5,
        timer_kind: 1,
        psci_method: Some("hvc"),
        initrd_start: Some(&[0, 0x4800_0000]),
        initrd_end: Some(&[0, 0x4810_0000]),
        bootargs: Some(b"quiet\0"),
        uart_parent: None,
        uart_compatible: &["arm,pl011", "arm,primecell"],
        uart_cells: &[],
        reserved: &[],
    };

    fn build(spec: &Spec, buf: &mut [u8]) -> Result<usize, FdtError> {
        let mut w = FdtWriter::new(buf)?;
        w.begin_node("")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_u32("interrupt-parent", 1)?;
        w.begin_node("chosen")?;
        if let Some(b) = spec.bootargs {
            w.property("bootargs", b)?;
        }
        if let Some(c) = spec.initrd_start {
            w.property_cells("linux,initrd-start", c)?;
        }
        if let Some(c) = spec.initrd_end {
            w.property_cells("linux,initrd-end", c)?;
        }
        w.end_node()?;
        w.begin_node("memory@80000000")?;
        w.property_string("device_type", "memory")?;
        let mut reg = Vec::new();
        for i in 0..spec.memory_regions as u32 {
            reg.extend_from_slice(&[i, 0x8000_0000, 0, 0x1000_0000]);
        }
        w.property_cells("reg", &reg)?;
        w.end_node()?;
        if !spec.reserved.is_empty() {
            w.begin_node("reserved-memory")?;
            w.property_u32("#address-cells", 2)?;
            w.property_u32("#size-cells", 2)?;
            w.property_empty("ranges")?;
            for &(name, reg, no_map, status) in spec.reserved {
                w.begin_node(name)?;
                match reg {
                    Some(reg) => w.property_cells("reg", &reg)?,
                    None => w.property_cells("size", &[0, 0x100_0000])?,
                }
                if no_map {
                    w.property_empty("no-map")?;
                }
                w.property_string("status", status)?;
                w.end_node()?;
            }
            w.end_node()?;
        }
        w.begin_node("cpus")?;
        w.property_u32("#address-cells", spec.cpu_address_cells)?;
        w.property_u32("#size-cells", 0)?;
        for i in 0..spec.cpus as u32 {
            w.begin_node(&format!("cpu@{i}"))?;
            w.property_string("device_type", "cpu")?;
            match spec.cpu_reg {
                Some(cells) => w.property_cells("reg", cells)?,
                None if spec.cpu_address_cells == 2 => w.property_cells("reg", &[1, i << 8])?,
                None => w.property_u32("reg", i)?,
            }
            if i == 1 {
                w.property_string("enable-method", "spin-table")?;
                w.property_u64("cpu-release-addr", 0x8000_fff8)?;
            }
            w.end_node()?;
        }
        w.end_node()?;
        if let Some(compat) = spec.gic {
            w.begin_node("soc")?;
            w.property_string("compatible", "simple-bus")?;
            w.property_u32("#address-cells", 1)?;
            w.property_u32("#size-cells", 1)?;
            w.property_cells("ranges", &[0, 0, 0x2000_0000, 0x1000_0000])?;
            w.begin_node("gic@0")?;
            w.property_string("compatible", compat)?;
            w.property_empty("interrupt-controller")?;
            w.property_u32("#interrupt-cells", spec.gic_interrupt_cells)?;
            w.property_u32("phandle", 1)?;
            if let Some(n) = spec.redist_regions {
                w.property_u32("#redistributor-regions", n)?;
            }
            let mut reg = Vec::new();
            for i in 0..spec.gic_reg_entries as u32 {
                reg.extend_from_slice(&[i * 0x10_0000, spec.gic_reg_size]);
            }
            w.property_cells("reg", &reg)?;
            w.property_cells("interrupts", &[1, 9, 4])?;
            w.end_node()?;
            w.begin_node("uart@1000000")?;
            w.property_strings("compatible", spec.uart_compatible)?;
            w.property_cells("reg", &[0x100_0000, 0x1000])?;
            w.property_cells("interrupts", &[0, 5, 4])?;
            for &(name, value) in spec.uart_cells {
                w.property_u32(name, value)?;
            }
            if let Some(p) = spec.uart_parent {
                w.property_u32("interrupt-parent", p)?;
            }
            w.end_node()?;
            w.end_node()?;
        }
        w.begin_node("timer")?;
        w.property_string("compatible", "arm,armv8-timer")?;
        let mut ints = Vec::new();
        for n in [13, 14, 11, 10, 12].iter().take(spec.timer_ppis) {
            ints.extend_from_slice(&[spec.timer_kind, *n, 8]);
        }
        w.property_cells("interrupts", &ints)?;
        w.property_u32("clock-frequency", 62_500_000)?;
        w.end_node()?;
        w.begin_node("psci")?;
        w.property_strings("compatible", &["arm,psci-0.2", "arm,psci"])?;
        if let Some(m) = spec.psci_method {
            w.property_string("method", m)?;
        }
        w.end_node()?;
        w.end_node()?;
        w.finish()
    }

    #[test]
    fn the_console_uart_may_be_a_cadence_or_a_16550() {
        let kind = |compatible, cells| {
            parse_spec(&Spec {
                uart_compatible: compatible,
                uart_cells: cells,
                ..GOOD
            })
            .map(|p| p.uart.map(|u| (u.kind, u.regs)))
        };
        let regs = region(0x2100_0000, 0x1000);
        assert_eq!(
            kind(&["arm,pl011", "arm,primecell"], &[]),
            Ok(Some((UartKind::Pl011, regs)))
        );
        // ZynqMP's: `cdns,uart-r1p12` with `xlnx,xuartps`.
        assert_eq!(
            kind(&["cdns,uart-r1p12", "xlnx,xuartps"], &[]),
            Ok(Some((UartKind::Cadence, regs)))
        );
        // RK3588's: a DesignWare 16550 with 32-bit registers 4 bytes apart.
        assert_eq!(
            kind(
                &["rockchip,rk3588-uart", "snps,dw-apb-uart"],
                &[("reg-shift", 2), ("reg-io-width", 4)]
            ),
            Ok(Some((
                UartKind::Ns16550 {
                    reg_shift: 2,
                    io_width: 4
                },
                regs
            )))
        );
        assert_eq!(
            kind(&["ns16550a"], &[]),
            Ok(Some((
                UartKind::Ns16550 {
                    reg_shift: 0,
                    io_width: 1
                },
                regs
            )))
        );
        // A width the driver cannot do is refused, not guessed.
        assert_eq!(
            kind(&["ns16550a"], &[("reg-io-width", 2)]),
            Err(PlatformError::BadUartReg)
        );
        // A UART the console cannot drive is no console.
        assert_eq!(kind(&["vendor,other-uart"], &[]), Ok(None));
    }

    fn parse_spec(spec: &Spec) -> Result<Platform<'static>, PlatformError> {
        let mut buf = vec![0u8; 4096];
        let len = build(spec, &mut buf).expect("fits");
        buf.truncate(len);
        let blob: &'static [u8] = Vec::leak(buf);
        Platform::from_fdt(&Fdt::new(blob).expect("valid"))
    }

    #[test]
    fn reserved_memory_is_kept_with_its_no_map() {
        let spec = Spec {
            reserved: &[
                (
                    "tfa@8ff00000",
                    Some([0, 0x8ff0_0000, 0, 0x10_0000]),
                    true,
                    "okay",
                ),
                (
                    "shm@88000000",
                    Some([0, 0x8800_0000, 0, 0x20_0000]),
                    false,
                    "okay",
                ),
                (
                    "off@89000000",
                    Some([0, 0x8900_0000, 0, 0x1000]),
                    true,
                    "disabled",
                ),
                ("cma", None, false, "okay"),
            ],
            ..GOOD
        };
        let p = parse_spec(&spec).expect("platform");
        assert_eq!(
            p.reserved(),
            [
                ReservedRegion {
                    region: region(0x8ff0_0000, 0x10_0000),
                    no_map: true
                },
                ReservedRegion {
                    region: region(0x8800_0000, 0x20_0000),
                    no_map: false
                },
            ],
            "disabled and dynamic (size-only) nodes reserve nothing"
        );
        assert_eq!(parse_spec(&GOOD).expect("platform").reserved(), []);
        let many: &'static [_] = Vec::leak(
            (0..17)
                .map(|i| {
                    let name: &'static str = Box::leak(format!("r@{i:x}000").into_boxed_str());
                    (
                        name,
                        Some([0, 0x8000_0000 + i * 0x1000, 0, 0x1000]),
                        false,
                        "okay",
                    )
                })
                .collect(),
        );
        let spec = Spec {
            reserved: many,
            ..GOOD
        };
        assert_eq!(
            parse_spec(&spec).err(),
            Some(PlatformError::TooManyReservedRegions)
        );
    }

    #[test]
    fn hand_built_tree() {
        let p = parse_spec(&GOOD).expect("platform");
        assert_eq!(p.memory(), [region(0x8000_0000, 0x1000_0000)]);
        assert_eq!(p.cpus()[0].mpidr, 0x1_0000_0000);
        assert_eq!(p.cpus()[1].mpidr, 0x1_0000_0100);
        assert_eq!(p.cpus()[0].enable_method, EnableMethod::None);
        assert_eq!(
            p.cpus()[1].enable_method,
            EnableMethod::SpinTable {
                release_addr: Pa(0x8000_fff8)
            }
        );
        // Addresses are translated through the bus's ranges.
        assert_eq!(p.gic.dist, region(0x2000_0000, 0x1_0000));
        assert_eq!(p.gic.redistributors(), [region(0x2010_0000, 0x1_0000)]);
        let uart = p.uart.expect("uart");
        assert_eq!(uart.regs, region(0x2100_0000, 0x1000));
        assert_eq!(uart.spi(), Some(5));
        assert_eq!(p.timer.hyp_virt, Some(ppi(12, 8)));
        assert_eq!(p.timer.frequency, Some(62_500_000));
        assert!(!p.timer.always_on);
        let psci = p.psci.expect("psci");
        assert_eq!((psci.conduit, psci.version), (PsciConduit::Hvc, (0, 2)));
        assert_eq!(p.initrd, Some(region(0x4800_0000, 0x10_0000)));
        assert_eq!(p.bootargs, Some("quiet"));

        let p = parse_spec(&Spec {
            cpu_address_cells: 1,
            memory_regions: 8,
            ..GOOD
        })
        .expect("platform");
        assert_eq!(p.cpus()[1].mpidr, 1);
        assert_eq!(p.memory().len(), 8);
        assert_eq!(p.memory()[7].base, Pa(0x7_8000_0000));

        let p = parse_spec(&Spec {
            gic: Some("arm,gic-400"),
            gic_reg_entries: 4,
            ..GOOD
        })
        .expect("platform");
        assert_eq!(p.gic.version, GicVersion::V2);
        assert_eq!(p.gic.cpu, Some(region(0x2010_0000, 0x1_0000)));
        assert_eq!(p.gic.vcpu, Some(region(0x2030_0000, 0x1_0000)));
        // Not aliased: the interfaces are the regions themselves.
        assert_eq!(p.gic.cpu_interface(), p.gic.cpu);
        assert_eq!(p.gic.virtual_cpu_interface(), p.gic.vcpu);

        // A GIC-400 whose tree gives 128 KiB CPU-interface frames (its 4 KiB
        // pages each aliased over 64 KiB, as on the ZynqMP): the contiguous
        // 8 KiB window starts 60 KiB in; the whole region is still the GIC's.
        let p = parse_spec(&Spec {
            gic: Some("arm,gic-400"),
            gic_reg_entries: 4,
            gic_reg_size: 0x2_0000,
            ..GOOD
        })
        .expect("platform");
        assert_eq!(p.gic.cpu, Some(region(0x2010_0000, 0x2_0000)));
        assert_eq!(p.gic.cpu_interface(), Some(region(0x2010_f000, 0x2000)));
        assert_eq!(
            p.gic.virtual_cpu_interface(),
            Some(region(0x2030_f000, 0x2000))
        );
        assert_eq!(p.owned_by_hypervisor(0x2011_f000, 0x1000), Some("the GIC"));
        assert_eq!(p.owned_by_hypervisor(0x2031_0000, 0x1000), Some("the GIC"));
        // A tree that gives only 8 KiB (4 KiB pages, no aliasing) is taken
        // as it is.
        assert_eq!(
            contiguous_cpu_interface(region(0xf902_0000, 0x2000)),
            region(0xf902_0000, 0x2000)
        );

        let p = parse_spec(&Spec {
            redist_regions: Some(2),
            gic_reg_entries: 3,
            ..GOOD
        })
        .expect("platform");
        assert_eq!(p.gic.redistributors().len(), 2);

        // A UART whose interrupt goes elsewhere keeps its registers only.
        let p = parse_spec(&Spec {
            uart_parent: Some(9),
            ..GOOD
        })
        .expect("platform");
        assert_eq!(p.uart.map(|u| u.irq), Some(None));

        let p = parse_spec(&Spec {
            initrd_start: None,
            initrd_end: None,
            bootargs: None,
            ..GOOD
        })
        .expect("platform");
        assert_eq!((p.initrd, p.bootargs), (None, None));
    }

    #[test]
    fn hand_built_errors() {
        use PlatformError as E;
        let cases: Vec<(Spec, PlatformError)> = vec![
            (
                Spec {
                    memory_regions: 0,
                    ..GOOD
                },
                E::NoMemory,
            ),
            (
                Spec {
                    memory_regions: 9,
                    ..GOOD
                },
                E::TooManyMemoryRegions,
            ),
            (Spec { cpus: 0, ..GOOD }, E::NoCpus),
            (Spec { cpus: 17, ..GOOD }, E::TooManyCpus),
            (
                Spec {
                    cpu_address_cells: 3,
                    ..GOOD
                },
                E::BadCpuAddressCells,
            ),
            (
                Spec {
                    cpu_reg: Some(&[1]),
                    ..GOOD
                },
                E::BadCpuReg,
            ),
            (Spec { gic: None, ..GOOD }, E::NoGic),
            (
                Spec {
                    gic: Some("arm,gic-v2m-frame"),
                    ..GOOD
                },
                E::NoGic,
            ),
            (
                Spec {
                    gic_interrupt_cells: 2,
                    ..GOOD
                },
                E::BadGicInterruptCells,
            ),
            (
                Spec {
                    gic_reg_entries: 1,
                    ..GOOD
                },
                E::BadGicReg,
            ),
            (
                Spec {
                    gic: Some("arm,cortex-a15-gic"),
                    gic_reg_entries: 1,
                    ..GOOD
                },
                E::BadGicReg,
            ),
            (
                Spec {
                    redist_regions: Some(0),
                    ..GOOD
                },
                E::BadGicReg,
            ),
            (
                Spec {
                    redist_regions: Some(9),
                    gic_reg_entries: 10,
                    ..GOOD
                },
                E::TooManyRedistRegions,
            ),
            (
                Spec {
                    timer_ppis: 3,
                    ..GOOD
                },
                E::BadTimerInterrupts,
            ),
            (
                Spec {
                    timer_kind: 0,
                    ..GOOD
                },
                E::BadTimerInterrupts,
            ),
            (
                Spec {
                    psci_method: None,
                    ..GOOD
                },
                E::BadPsciMethod,
            ),
            (
                Spec {
                    psci_method: Some("svc"),
                    ..GOOD
                },
                E::BadPsciMethod,
            ),
            (
                Spec {
                    initrd_end: None,
                    ..GOOD
                },
                E::BadInitrd,
            ),
            (
                Spec {
                    initrd_end: Some(&[0x4000_0000]),
                    ..GOOD
                },
                E::BadInitrd,
            ),
            (
                Spec {
                    initrd_end: Some(&[0, 1, 2]),
                    ..GOOD
                },
                E::BadInitrd,
            ),
            (
                Spec {
                    bootargs: Some(b"no-nul"),
                    ..GOOD
                },
                E::BadBootargs,
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_spec(&spec).err(), Some(want));
        }
    }

    #[test]
    fn no_memory_or_timer() {
        let mut buf = [0u8; 512];
        let mut w = FdtWriter::new(&mut buf).expect("room");
        w.begin_node("").expect("ok");
        w.end_node().expect("ok");
        let len = w.finish().expect("ok");
        assert_eq!(parse(&buf[..len]).err(), Some(PlatformError::NoMemory));
        assert_eq!(
            PlatformError::NoTimer.to_string(),
            "device tree describes no arm,armv8-timer"
        );
    }
}
