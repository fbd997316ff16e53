//! A VM: its memory carve-out, stage-2 table, device models, its
//! lifecycle ([`stratum_core::lifecycle`]), and the (re)load of its
//! pristine image from the boot bundle.

use stratum_abi::bundle::VmImage;
use stratum_arch::{cache, sysreg, tlb};
use stratum_core::addr::{Ipa, IpaRange, Pa};
use stratum_core::bootplan::{DevicePlan, Stage2Region};
use stratum_core::bus::{BusError, DeviceId, MmioBus, Window};
use stratum_core::guest_dt::{self, GuestChannel, GuestDevice, GuestDtConfig, GuestGic, GuestUart};
use stratum_core::layout::{self, GuestLayout, KernelPlacement};
use stratum_core::lifecycle::{Effects, Start, VmLifecycle};
use stratum_core::pl011::Pl011;
use stratum_core::platform::{GicInfo, GicVersion};
use stratum_core::stage2::{MapStats, Mapping, Stage2Config, Stage2Table};
use stratum_core::stats::Reason;

use stratum_vgic::Vgic;

use crate::mem::TablePool;
use crate::sync::SpinLock;
use crate::vcpu::{Frame, VcpuContext};

/// SPIs of each VM's virtual GIC (INTIDs 32–95): the emulated UART's and
/// room for passthrough devices and tests.
pub const VGIC_SPIS: u32 = 64;

/// Most channels one VM has.
pub const CHANNELS: usize = stratum_abi::limits::CHANNELS_PER_VM;
/// Most passthrough devices one VM has.
pub const DEVICES: usize = stratum_abi::limits::DEVICES_PER_VM;

/// Placeholder for unused channel slots.
const NO_CHANNEL: GuestChannel<'static> = GuestChannel {
    id: 0,
    name: "",
    peer: "",
    shm: IpaRange {
        start: Ipa(0),
        size: 0,
    },
    spi: 0,
};

/// Space reserved for a guest's device tree.
const DTB_MAX: usize = 64 * 1024;
const TWO_MIB: u64 = 2 << 20;

/// Why a VM could not be created or (re)started. The docs are the messages.
#[derive(Debug)]
pub enum VmError {
    /// More vCPUs than this build runs per VM.
    TooManyVcpus(u32),
    /// Guest RAM not 2 MiB aligned or sized, or outside the IPA space.
    BadRam,
    /// Stage-2 tables could not be built.
    Stage2(stratum_core::stage2::MapError),
    /// Kernel, initrd and device tree do not fit in guest RAM.
    Layout(layout::LayoutError),
    /// The guest device tree could not be generated.
    DeviceTree(stratum_core::guest_dt::GuestDtError),
    /// The virtual GIC could not be built.
    Vgic(stratum_vgic::VgicError),
    /// The emulated devices' windows could not be laid out.
    Bus(BusError),
    /// The host GIC is a v2 without a virtual CPU interface (GICV) to give
    /// the guest.
    NoGicv,
}

impl core::fmt::Display for VmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooManyVcpus(n) => write!(
                f,
                "{n} vCPUs requested; this version runs {MAX_VCPUS} vCPU per VM"
            ),
            Self::BadRam => write!(f, "guest RAM must be 2 MiB aligned and sized"),
            Self::Stage2(e) => write!(f, "stage-2 tables: {e:?}"),
            Self::Layout(e) => write!(f, "guest memory layout: {e:?}"),
            Self::DeviceTree(e) => write!(f, "guest device tree: {e:?}"),
            Self::Vgic(e) => write!(f, "virtual GIC: {e:?}"),
            Self::Bus(e) => write!(f, "device bus: {e:?}"),
            Self::NoGicv => write!(f, "the host GICv2 has no virtual CPU interface (GICV)"),
        }
    }
}

/// Most vCPUs per VM (the host tool enforces the same limit).
pub const MAX_VCPUS: usize = stratum_abi::limits::VCPUS_PER_VM as usize;

/// One end of a shared-memory channel, as the VM at this end sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChannelPort {
    /// The VM at the other end.
    pub peer_vm: usize,
    /// The doorbell SPI (0-based) to raise in the peer.
    pub peer_spi: u32,
}

/// One virtual machine.
pub struct Vm {
    /// Index in the bundle.
    pub id: usize,
    /// The pristine image (in the boot bundle, never modified).
    pub image: VmImage<'static>,
    /// Guest RAM as the guest sees it.
    pub ram: IpaRange,
    /// Host-physical base of guest RAM.
    pub ram_pa: Pa,
    /// Stage-2 base and VMID.
    pub vttbr: u64,
    /// Where kernel, initrd and DTB go in guest RAM.
    pub layout: GuestLayout,
    /// The emulated PL011.
    pub uart: Pl011,
    /// The VM's and its vCPUs' states, their placement on physical CPUs,
    /// and PSCI's view of them.
    pub life: VmLifecycle,
    /// Each vCPU's state while another vCPU has its CPU.
    pub ctx: [VcpuContext; MAX_VCPUS],
    /// The VM's shared-memory channels, by channel number.
    pub channels: [ChannelPort; CHANNELS],
    /// How many of `channels` exist.
    pub channel_count: usize,
    /// Each channel as the guest's device tree describes it.
    pub dt_channels: [GuestChannel<'static>; CHANNELS],
    /// The passthrough devices.
    pub devices: [DevicePlan<'static>; DEVICES],
    /// How many of `devices` exist.
    pub device_count: usize,
    /// The VM was (re)loaded: its first vCPU to start flushes its TLB
    /// entries (stage-1 entries of the previous boot share its VMID).
    pub needs_tlb_flush: bool,
    /// `CNTVOFF_EL2` of this boot (every vCPU's virtual counter agrees).
    pub cntvoff: u64,
    /// Times the VM booted.
    pub boot_count: u64,
    /// Each vCPU's general-purpose registers.
    pub frames: [Frame; MAX_VCPUS],
    /// The guest's GIC view.
    pub gic: GuestGic,
    /// How stage 2 maps guest RAM (blocks of each size).
    pub map_stats: MapStats,
    /// The virtual GIC (rebuilt at every boot).
    pub vgic: Vgic,
    /// The emulated devices' register windows (fixed for the VM's life).
    pub bus: MmioBus,
}

/// The PL011's id on every VM's bus.
pub const UART_DEVICE: DeviceId = DeviceId(0);
/// The virtual GIC's id on every VM's bus (distributor and redistributors).
pub const GIC_DEVICE: DeviceId = DeviceId(1);

/// The bus of a VM with guest GIC `gic`: the PL011 and the vGIC's frames at
/// QEMU `virt`'s addresses.
fn device_bus(gic: &GuestGic, vcpus: u32) -> Result<MmioBus, BusError> {
    let mut bus = MmioBus::new();
    bus.insert(Window::plain(
        guest_dt::virt_map::UART,
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
        stratum_vgic::REGION_DIST,
        [Reason::MmioGicdRead, Reason::MmioGicdWrite],
    ))?;
    if let Some(redist) = redist {
        bus.insert(Window::banked(
            redist.start,
            guest_dt::virt_map::GICR_STRIDE,
            vcpus,
            GIC_DEVICE,
            stratum_vgic::REGION_REDIST,
            [Reason::MmioGicrRead, Reason::MmioGicrWrite],
        ))?;
    }
    Ok(bus)
}

/// Each vCPU's MPIDR affinity: vCPU n has Aff0 = n (what the guest DT's cpu
/// `reg` says, and `VMPIDR_EL2` carries).
fn vcpu_affinities() -> [u64; MAX_VCPUS] {
    core::array::from_fn(|i| i as u64)
}

static DTB_BUF: SpinLock<[u8; DTB_MAX]> = SpinLock::new([0; DTB_MAX]);

impl Vm {
    /// Creates VM `id` with its RAM at `ram_pa` (its carve-out of host RAM,
    /// from the boot plan): builds its stage-2 table. Its vCPUs go on the
    /// physical CPUs the image names (the plan checked that they exist).
    pub fn create(
        id: usize,
        image: VmImage<'static>,
        host_gic: &GicInfo,
        s2cfg: Stage2Config,
        ram_pa: Pa,
        pool: &mut TablePool,
        extra: impl IntoIterator<Item = Stage2Region>,
    ) -> Result<Self, VmError> {
        if image.vcpus as usize > MAX_VCPUS {
            return Err(VmError::TooManyVcpus(image.vcpus));
        }
        let ram = IpaRange::new(Ipa(image.mem_base), image.mem_size).ok_or(VmError::BadRam)?;
        if !ram.start.is_aligned(TWO_MIB) || ram.size % TWO_MIB != 0 {
            return Err(VmError::BadRam);
        }
        let mut table = Stage2Table::new(pool, s2cfg).map_err(VmError::Stage2)?;
        let map_stats = table
            .map(pool, ram.start, ram_pa, ram.size, Mapping::RamRwx)
            .map_err(VmError::Stage2)?;
        for m in extra {
            table
                .map(pool, m.ipa.start, m.pa, m.ipa.size, m.kind)
                .map_err(VmError::Stage2)?;
        }
        let vmid = u16::try_from(id + 1).expect("fewer VMs than VMIDs");
        let gic = match host_gic.version {
            GicVersion::V2 => GuestGic::V2 {
                dist: guest_dt::virt_map::GICD,
                cpu: guest_dt::virt_map::GICC,
            },
            GicVersion::V3 => GuestGic::V3 {
                dist: guest_dt::virt_map::GICD,
                redist: IpaRange::new(
                    guest_dt::virt_map::GICR_BASE,
                    guest_dt::virt_map::GICR_STRIDE * u64::from(image.vcpus),
                )
                .expect("redistributor range fits"),
            },
        };
        let placement = KernelPlacement {
            load_offset: image.kernel_load_offset,
            // The bundle counts the entry from the RAM base (and checked it
            // lies in the kernel); the layout counts it from the image.
            entry_offset: image.entry_offset - image.kernel_load_offset,
            footprint: image.kernel_footprint,
        };
        let initrd_size = image.initrd.map_or(0, |i| i.len() as u64);
        let layout =
            layout::plan(ram, placement, initrd_size, DTB_MAX as u64).map_err(VmError::Layout)?;
        // GICv2: the guest's CPU interface is the hardware's virtual CPU
        // interface, mapped through stage 2, so acknowledge and EOI never trap.
        if let GuestGic::V2 { cpu, .. } = gic {
            let gicv = host_gic.vcpu.ok_or(VmError::NoGicv)?;
            table
                .map(pool, cpu.start, gicv.base, cpu.size, Mapping::DeviceRw)
                .map_err(VmError::Stage2)?;
        }
        let vgic = Vgic::new(
            host_gic.version,
            &vcpu_affinities()[..image.vcpus as usize],
            VGIC_SPIS,
        )
        .map_err(VmError::Vgic)?;
        let bus = device_bus(&gic, image.vcpus).map_err(VmError::Bus)?;
        let vcpus = image.vcpus as usize;
        Ok(Self {
            id,
            image,
            ram,
            ram_pa,
            vttbr: table.vttbr(vmid),
            layout,
            uart: Pl011::new(),
            life: VmLifecycle::new(
                &vcpu_affinities()[..vcpus],
                &image.pcpus[..vcpus],
                image.on_crash,
            ),
            ctx: [VcpuContext::default(); MAX_VCPUS],
            channels: [ChannelPort::default(); CHANNELS],
            channel_count: 0,
            dt_channels: [NO_CHANNEL; CHANNELS],
            devices: [DevicePlan::NONE; DEVICES],
            device_count: 0,
            needs_tlb_flush: true,
            cntvoff: 0,
            boot_count: 0,
            frames: core::array::from_fn(|v| crate::vcpu::frame(id, v)),
            gic,
            map_stats,
            vgic,
            bus,
        })
    }

    fn host_ptr(&self, ipa: Ipa) -> *mut u8 {
        let off = ipa
            .offset_from(self.ram.start)
            .expect("IPA below guest RAM");
        assert!(off <= self.ram.size, "IPA beyond guest RAM");
        (self.ram_pa.0 + off) as *mut u8
    }

    fn copy_in(&self, at: Ipa, bytes: &[u8]) {
        assert!(
            self.ram.contains_span(at, bytes.len() as u64),
            "copy outside guest RAM (layout invariant)"
        );
        // SAFETY: the destination lies in this VM's RAM carve-out (checked
        // above), which is identity-mapped, owned by this VM, and not running.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.host_ptr(at), bytes.len()) };
    }

    /// (Re)starts the VM from its pristine image: zeroes RAM, copies kernel,
    /// initrd and a fresh device tree, resets devices, and boots it (vCPU 0
    /// pending a start at the kernel's entry). Only while no vCPU of it is
    /// on a CPU (it was just created, or the lifecycle said to reload). The
    /// effects say which CPU to tell.
    pub fn load(&mut self) -> Result<Effects, VmError> {
        self.boot_count += 1;
        let size = usize::try_from(self.ram.size).expect("RAM size fits usize");
        // SAFETY: the whole carve-out belongs to this VM, which is not running.
        unsafe { core::ptr::write_bytes(self.host_ptr(self.ram.start), 0, size) };
        self.copy_in(self.layout.kernel.start, self.image.kernel);
        if let (Some(initrd), Some(range)) = (self.image.initrd, self.layout.initrd) {
            self.copy_in(range.start, initrd);
        }
        let seed = rng_seed(self.id as u64, self.boot_count);
        let devices: [GuestDevice<'_>; DEVICES] = core::array::from_fn(|i| {
            let d = &self.devices[i];
            GuestDevice {
                name: d.name,
                compatible: d.compatible,
                regs: d.regs,
                spis: d.spis(),
            }
        });
        let mpidrs = vcpu_affinities();
        let cfg = GuestDtConfig {
            ram: self.ram,
            vcpu_mpidrs: &mpidrs[..self.image.vcpus as usize],
            gic: self.gic,
            uart: Some(GuestUart {
                regs: guest_dt::virt_map::UART,
                spi: guest_dt::virt_map::UART_SPI,
            }),
            bootargs: self.image.cmdline,
            initrd: self.layout.initrd,
            rng_seed: Some(&seed),
            boot_count: u32::try_from(self.boot_count).ok(),
            channels: &self.dt_channels[..self.channel_count],
            devices: &devices[..self.device_count],
            fragment: self.image.dt_fragment,
        };
        {
            let mut buf = DTB_BUF.lock();
            let len = guest_dt::generate(&cfg, &mut buf[..]).map_err(VmError::DeviceTree)?;
            self.copy_in(self.layout.dtb.start, &buf[..len]);
        }
        cache::clean_inval_dcache_range(self.ram_pa.0 as usize, size);
        cache::invalidate_icache_all();
        self.uart = Pl011::new();
        self.vgic = Vgic::new(
            self.vgic.version(),
            &mpidrs[..self.image.vcpus as usize],
            VGIC_SPIS,
        )
        .map_err(VmError::Vgic)?;
        // The guest's virtual counter starts near zero at every boot.
        self.cntvoff = stratum_arch::timer::counter();
        self.needs_tlb_flush = true;
        // vCPU 0 boots per the arm64 boot protocol: x0 = the DTB.
        Ok(self.life.boot(Start {
            entry: self.layout.entry.0,
            x0: self.layout.dtb.start.0,
        }))
    }

    /// Resets vCPU `v`'s registers to enter at `start` (its CPU claimed it
    /// for a fresh start).
    pub fn reset_vcpu(&mut self, v: usize, start: Start) {
        self.ctx[v] = VcpuContext::at_reset(start.entry);
        self.frames[v].x = [0; 31];
        self.frames[v].x[0] = start.x0;
    }

    /// Whether vCPU `v`, on its CPU, must give the CPU up instead of
    /// entering the guest (it was powered off, or the VM is being reset or
    /// has stopped): the lifecycle's [`VmLifecycle::must_leave`].
    #[inline]
    pub fn must_park(&self, v: usize) -> bool {
        self.life.must_leave(v)
    }

    /// Whether the VM is not running (being reset, or stopped): it takes
    /// no interrupts.
    pub fn must_park_vm(&self) -> bool {
        !self.life.is_running()
    }

    /// Makes vCPU `v` of this VM the one this CPU runs: its stage 2, its
    /// frame in `TPIDR_EL2` and its virtual MPIDR. (`CNTVOFF_EL2` is part of
    /// its context, loaded with its timers: `sched::restore`.)
    pub fn activate(&mut self, v: usize) {
        // SAFETY: VTTBR_EL2 names a complete stage-2 table built by `create`;
        // it only affects EL1/EL0 translation, never EL2's own. VMIDs tag
        // the TLBs, so no invalidation is needed on a switch.
        unsafe { sysreg::set_vttbr_el2(self.vttbr) };
        let frame = core::ptr::addr_of_mut!(self.frames[v]) as u64;
        // SAFETY: TPIDR_EL2 must point to the running vCPU's frame; the VM
        // lives in a static for as long as the hypervisor runs.
        unsafe { sysreg::set_tpidr_el2(frame) };
        // U (bit 30) = 0: a multiprocessor system.
        sysreg::set_vmpidr_el2(stratum_arch::el2::vmpidr::for_vcpu(self.life.mpidr(v)));
        stratum_arch::barrier::isb();
    }

    /// Drops every cached translation of this VM (its guests' stage-1
    /// entries from a previous boot included), on every CPU. Needs this VM's
    /// stage 2 current on this CPU.
    pub fn flush_tlb(&self) {
        tlb::invalidate_current_vmid();
    }
}

/// A per-VM, per-boot seed for `/chosen/rng-seed`, mixed (splitmix64) from
/// the physical counter and the VM's identity. Not a cryptographic source:
/// it spares the guest a slow entropy bootstrap; guests that need real
/// entropy need a real source (SMCCC TRNG is future work).
fn rng_seed(vm: u64, boot: u64) -> [u8; 32] {
    let mut state = sysreg::cntpct_el0() ^ (vm << 32) ^ boot.rotate_left(17);
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    out
}
