//! A VM's machine as its guest sees it: where its RAM, interrupt controller
//! and UART are, where its kernel, initrd and device tree go, which devices
//! answer on its MMIO bus, and what its generated device tree says.
//!
//! Every VM sees the same `virt`-like machine ([`virt_map`]) whatever the
//! host board; only its RAM, vCPU count, GIC version (the host's), channels
//! and passthrough devices differ. The EL2 binary builds a [`Machine`] when
//! it creates the VM and, on every (re)boot, asks it for the device-tree
//! description ([`Machine::dt_config`]) and copies the images where
//! [`Machine::layout`] says.

use stratum_abi::bundle::{self, VmImage};
use stratum_abi::limits;

use crate::addr::{Ipa, IpaRange};
use crate::bootplan::DevicePlan;
use crate::bus::{BusError, DeviceId, MmioBus, Window};
use crate::guest_dt::{GuestChannel, GuestDevice, GuestDtConfig, GuestGic, GuestUart, virt_map};
use crate::layout::{self, GuestLayout, KernelPlacement, LayoutError};
use crate::platform::GicVersion;
use crate::stats::Reason;

/// Most vCPUs in one VM.
pub const MAX_VCPUS: usize = limits::VCPUS_PER_VM as usize;
/// Most passthrough devices in one VM.
pub const DEVICES: usize = limits::DEVICES_PER_VM;
/// Room reserved in guest RAM for the generated device tree.
pub const DTB_MAX: usize = 64 * 1024;
/// SPIs each VM's distributor implements (INTIDs 32..96).
pub const VGIC_SPIS: u32 = 64;
/// The PL011's id on the bus.
pub const UART_DEVICE: DeviceId = DeviceId(0);
/// The vGIC's id on the bus (distributor and redistributors).
pub const GIC_DEVICE: DeviceId = DeviceId(1);
/// The virtio-mmio transports' id on the bus: one banked window, bank `n`
/// = transport `n`, or, when passthrough devices take some of their 4 KiB
/// pages, one window per page left, region `p` bank `b` = transport
/// `8p + b` ([`virtio_transport`]).
pub const VIRTIO_DEVICE: DeviceId = DeviceId(2);
/// Every virtio-mmio transport present (bit `n`: transport `n`).
pub const ALL_TRANSPORTS: u32 = u32::MAX;
/// Transports per 4 KiB page of the virtio-mmio window.
pub const TRANSPORTS_PER_PAGE: u32 = 8;

/// The transport an access on the virtio-mmio windows reaches: region
/// (the page's window) and bank within it.
#[inline(always)]
pub fn virtio_transport(region: u8, bank: u32) -> usize {
    usize::from(region) * TRANSPORTS_PER_PAGE as usize + bank as usize
}
/// A firmware VM's flash banks' id on the bus ([`crate::flash`]).
pub const FLASH_DEVICE: DeviceId = DeviceId(3);
/// The vGIC's bus region tag for the distributor.
pub const REGION_DIST: u8 = 0;
/// The vGIC's bus region tag for the redistributors (one bank per vCPU).
pub const REGION_REDIST: u8 = 1;

const TWO_MIB: u64 = 2 << 20;

/// Why a VM's machine cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineError {
    /// No vCPU, or more than a VM can have.
    BadVcpuCount(u32),
    /// RAM that is empty, wraps, or is not 2 MiB aligned and sized.
    BadRam,
    /// The images do not fit the RAM.
    Layout(LayoutError),
    /// The host GICv2 has no virtual CPU interface to map.
    NoGicv,
    /// Two devices claim the same guest-physical bytes.
    Bus(BusError),
    /// A firmware VM's RAM overlaps the flash banks it must see at 0.
    RamOverFlash,
}

impl core::fmt::Display for MachineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadVcpuCount(n) => {
                write!(f, "{n} vCPUs requested; a VM has 1 to {MAX_VCPUS}")
            }
            Self::BadRam => write!(f, "guest RAM must be 2 MiB aligned and sized"),
            Self::Layout(e) => write!(f, "guest memory layout: {e:?}"),
            Self::NoGicv => write!(f, "the host GICv2 has no virtual CPU interface (GICV)"),
            Self::Bus(e) => write!(f, "device bus: {e:?}"),
            Self::RamOverFlash => write!(
                f,
                "a firmware VM's RAM overlaps the flash banks at [0x0, 0x8000000)"
            ),
        }
    }
}

/// One VM's machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Guest RAM.
    pub ram: IpaRange,
    /// The interrupt controller the guest sees.
    pub gic: GuestGic,
    /// Where the kernel, initrd and device tree go, and the entry point.
    pub layout: GuestLayout,
    /// The emulated devices' register windows.
    pub bus: MmioBus,
    /// Number of vCPUs.
    pub vcpus: usize,
    /// Which of QEMU `virt`'s 32 virtio-mmio transports the VM has (bit
    /// `n`: transport `n`, on its bus and in its device tree); see
    /// [`Machine::drop_virtio_for`].
    pub virtio: u32,
    /// Whether it is a firmware-style VM, with `virt`'s flash banks on its
    /// bus ([`crate::flash`]).
    pub flash: bool,
}

impl Machine {
    /// The machine for `image` on a host whose GIC is `version`;
    /// `has_gicv` says whether a host GICv2 has the virtual CPU interface
    /// that a guest's GICC is mapped onto.
    pub fn describe(
        image: &VmImage<'_>,
        version: GicVersion,
        has_gicv: bool,
    ) -> Result<Self, MachineError> {
        let vcpus = image.vcpus as usize;
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(MachineError::BadVcpuCount(image.vcpus));
        }
        let ram = IpaRange::new(Ipa(image.mem_base), image.mem_size).ok_or(MachineError::BadRam)?;
        if ram.size == 0 || !ram.start.is_aligned(TWO_MIB) || ram.size % TWO_MIB != 0 {
            return Err(MachineError::BadRam);
        }
        let gic = match version {
            GicVersion::V2 if !has_gicv => return Err(MachineError::NoGicv),
            GicVersion::V2 => GuestGic::V2 {
                dist: virt_map::GICD,
                cpu: virt_map::GICC,
            },
            GicVersion::V3 => GuestGic::V3 {
                dist: virt_map::GICD,
                redist: IpaRange {
                    start: virt_map::GICR_BASE,
                    size: virt_map::GICR_STRIDE * vcpus as u64,
                },
            },
        };
        let placement = KernelPlacement {
            load_offset: image.kernel_load_offset,
            entry_offset: image
                .entry_offset
                .checked_sub(image.kernel_load_offset)
                .ok_or(MachineError::Layout(LayoutError::KernelDoesNotFit))?,
            footprint: image.kernel_footprint,
        };
        let initrd_size = image.initrd.map_or(0, |i| i.len() as u64);
        let place = if image.firmware {
            layout::plan_dtb_at_start
        } else {
            layout::plan
        };
        let layout =
            place(ram, placement, initrd_size, DTB_MAX as u64).map_err(MachineError::Layout)?;
        let flash = image.firmware;
        if flash && ram.overlaps(&crate::flash::FLASH) {
            return Err(MachineError::RamOverFlash);
        }
        let bus = device_bus(&gic, vcpus as u32, ALL_PAGES, flash).map_err(MachineError::Bus)?;
        Ok(Self {
            ram,
            gic,
            layout,
            bus,
            vcpus,
            virtio: ALL_TRANSPORTS,
            flash,
        })
    }

    /// The virtio-mmio transports a passthrough device at `regs` with guest
    /// SPIs `spis` takes (bit `n`: transport `n`): every transport of a
    /// 4 KiB page its registers overlap, and each whose SPI it uses.
    pub fn virtio_taken_by(regs: IpaRange, spis: &[u32]) -> u32 {
        bundle::virtio_taken_by(regs.start.0, regs.size, spis)
    }

    /// Takes out the virtio-mmio transports the VM's passthrough `devices`
    /// take ([`Machine::virtio_taken_by`]): the real devices win. The
    /// pages their registers overlap leave the bus; a transport that only
    /// lost its SPI stays on it (answering as an empty one) but leaves the
    /// device tree. Returns the first such device's name and every
    /// transport taken, if any.
    pub fn drop_virtio_for<'a>(
        &mut self,
        devices: &[DevicePlan<'a>],
    ) -> Result<Option<(&'a str, u32)>, MachineError> {
        let (mut taken, mut by_pages, mut first) = (0, 0, None);
        for d in devices {
            let of = Self::virtio_taken_by(d.regs, d.spis());
            if of != 0 && first.is_none() {
                first = Some(d.name);
            }
            taken |= of;
            by_pages |= bundle::virtio_pages_taken(d.regs.start.0, d.regs.size);
        }
        let Some(first) = first else {
            return Ok(None);
        };
        let pages = (0..VIRTIO_PAGES)
            .filter(|&p| page_transports(p) & by_pages == 0)
            .fold(0u8, |m, p| m | 1 << p);
        self.bus = device_bus(&self.gic, self.vcpus as u32, pages, self.flash)
            .map_err(MachineError::Bus)?;
        self.virtio = ALL_TRANSPORTS & !taken;
        Ok(Some((first, taken)))
    }

    /// Each vCPU's virtual MPIDR affinity (vCPU `i` is Aff0 = `i`).
    pub fn vcpu_mpidrs(&self) -> &'static [u64] {
        &MPIDRS[..self.vcpus]
    }

    /// What the generated device tree describes for one boot: the machine,
    /// `image`'s command line and DT fragment, the VM's `channels` and
    /// passthrough `devices` (`spis` holds room for their SPI lists),
    /// `seed` as `/chosen/rng-seed` and the boot count.
    pub fn dt_config<'a>(
        &'a self,
        image: &VmImage<'a>,
        channels: &'a [GuestChannel<'a>],
        devices: &'a mut [GuestDevice<'a>; DEVICES],
        plans: &'a [DevicePlan<'a>],
        seed: &'a [u8],
        boot_count: u64,
    ) -> GuestDtConfig<'a> {
        let n = plans.len().min(DEVICES);
        for (slot, d) in devices.iter_mut().zip(&plans[..n]) {
            *slot = GuestDevice {
                name: d.name,
                compatible: d.compatible,
                regs: d.regs,
                spis: d.spis(),
            };
        }
        GuestDtConfig {
            ram: self.ram,
            vcpu_mpidrs: self.vcpu_mpidrs(),
            gic: self.gic,
            uart: Some(GuestUart {
                regs: virt_map::UART,
                spi: virt_map::UART_SPI,
            }),
            bootargs: image.cmdline,
            initrd: self.layout.initrd,
            rng_seed: Some(seed),
            boot_count: u32::try_from(boot_count).ok(),
            channels,
            devices: &devices[..n],
            fragment: image.dt_fragment,
            virtio_mmio: self.virtio,
        }
    }
}

/// vCPU `i`'s MPIDR affinity is `i`.
static MPIDRS: [u64; MAX_VCPUS] = {
    let mut m = [0u64; MAX_VCPUS];
    let mut i = 0;
    while i < MAX_VCPUS {
        m[i] = i as u64;
        i += 1;
    }
    m
};

/// A device-tree slot with nothing in it (what [`Machine::dt_config`] fills).
pub const NO_DEVICE: GuestDevice<'static> = GuestDevice {
    name: "",
    compatible: b"\0",
    regs: IpaRange {
        start: Ipa(0),
        size: 0,
    },
    spis: &[],
};

/// The emulated devices every VM has: the PL011, the distributor, on
/// GICv3 one redistributor frame per vCPU (one banked window), and with
/// the virtio-mmio transports of the window's 4 KiB pages in `pages` (bit
/// `p`: page `p`; all four: one window).
fn device_bus(gic: &GuestGic, vcpus: u32, pages: u8, flash: bool) -> Result<MmioBus, BusError> {
    let mut bus = MmioBus::new();
    if flash {
        bus.insert(Window::plain(
            crate::flash::FLASH,
            FLASH_DEVICE,
            0,
            [Reason::MmioFlashRead, Reason::MmioFlashWrite],
        ))?;
    }
    bus.insert(Window::plain(
        virt_map::UART,
        UART_DEVICE,
        0,
        [Reason::MmioUartRead, Reason::MmioUartWrite],
    ))?;
    let (dist, redist) = match *gic {
        GuestGic::V2 { dist, .. } => (dist, None),
        GuestGic::V3 { dist, redist } => (dist, Some(redist)),
    };
    bus.insert(Window::plain(
        dist,
        GIC_DEVICE,
        REGION_DIST,
        [Reason::MmioGicdRead, Reason::MmioGicdWrite],
    ))?;
    if let Some(redist) = redist {
        bus.insert(Window::banked(
            redist.start,
            virt_map::GICR_STRIDE,
            vcpus,
            GIC_DEVICE,
            REGION_REDIST,
            [Reason::MmioGicrRead, Reason::MmioGicrWrite],
        ))?;
    }
    if pages == ALL_PAGES {
        bus.insert(Window::banked(
            virt_map::VIRTIO_BASE,
            virt_map::VIRTIO_STRIDE,
            virt_map::VIRTIO_COUNT,
            VIRTIO_DEVICE,
            0,
            [Reason::MmioVirtioRead, Reason::MmioVirtioWrite],
        ))?;
    } else {
        for page in (0..VIRTIO_PAGES).filter(|p| pages & (1 << p) != 0) {
            bus.insert(Window::banked(
                virtio_page(page).start,
                virt_map::VIRTIO_STRIDE,
                TRANSPORTS_PER_PAGE,
                VIRTIO_DEVICE,
                page as u8,
                [Reason::MmioVirtioRead, Reason::MmioVirtioWrite],
            ))?;
        }
    }
    Ok(bus)
}

/// 4 KiB pages of the virtio-mmio window.
const VIRTIO_PAGES: u32 = virt_map::VIRTIO_COUNT / TRANSPORTS_PER_PAGE;
/// Every page of the virtio-mmio window on the bus.
const ALL_PAGES: u8 = (1 << VIRTIO_PAGES) - 1;

/// Page `page` of the virtio-mmio window.
fn virtio_page(page: u32) -> IpaRange {
    let size = virt_map::VIRTIO_STRIDE * u64::from(TRANSPORTS_PER_PAGE);
    IpaRange {
        start: crate::addr::Ipa(virt_map::VIRTIO_BASE.raw() + size * u64::from(page)),
        size,
    }
}

/// The transports of page `page` (bit `n`: transport `n`).
fn page_transports(page: u32) -> u32 {
    (((1u64 << TRANSPORTS_PER_PAGE) - 1) as u32) << (page * TRANSPORTS_PER_PAGE)
}

/// The 32 bytes of `/chosen/rng-seed` for boot `boot` of VM `vm`, stretched
/// from `entropy` (a host counter or entropy source) with SplitMix64, so
/// that VMs, and boots of one VM, never share a seed.
pub fn rng_seed(entropy: u64, vm: u64, boot: u64) -> [u8; 32] {
    let mut state = entropy ^ (vm << 32) ^ boot.rotate_left(17);
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
