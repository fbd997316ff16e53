//! A VM: its memory carve-out, stage-2 table, device models, its
//! lifecycle ([`stratum_core::lifecycle`]), and the (re)load of its
//! pristine image from the boot bundle. What the guest's machine looks
//! like (RAM, GIC, bus, image layout, device tree) is
//! [`stratum_core::machine`]'s; this module builds the tables and copies
//! the bytes.
//!
//! The VM table ([`VMS`], reached through [`crate::system::with_vm`]) and
//! each vCPU's register frame with the tag that names its owner
//! ([`VcpuTag`]) are here too: a frame lives in its VM, and its tag points
//! at its VM's slot. The frame's layout is the exit vector's
//! ([`stratum_arch::vectors`]); the EL1 state switched with a vCPU and its
//! reset values are [`stratum_arch::context`]'s.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use stratum_abi::bundle::{Virtio, VirtioKind, VmImage};
use stratum_arch::ram::GuestRam;
use stratum_arch::{barrier, cache, sysreg, tlb};
use stratum_core::addr::{Ipa, IpaRange, Pa};
use stratum_core::bootplan::{DevicePlan, Stage2Region};
use stratum_core::guest_dt::{self, GuestChannel, GuestGic};
use stratum_core::lifecycle::{Effects, Start, VmLifecycle};
use stratum_core::machine::{self, DTB_MAX, Machine, MachineError, VGIC_SPIS};
use stratum_core::pl011::Pl011;
use stratum_core::platform::GicInfo;
use stratum_core::stage2::{MapStats, Mapping, Stage2Config, Stage2Table};

use stratum_vgic::Vgic;
use stratum_virtio::blk::BlkDevice;
use stratum_virtio::mem::Fence;
use stratum_virtio::slots::MAX_VM_DISKS;
use stratum_virtio::{GuestMemory, MemError, Transport, VmVirtio, Work};

use crate::sync::SpinLock;
use stratum_core::stats::ExitStats;
use stratum_core::tablepool::TablePool;
use stratum_core::trng::Trng;

pub use stratum_core::machine::{
    DEVICES, FLASH_DEVICE, GIC_DEVICE, MAX_VCPUS, UART_DEVICE, VIRTIO_DEVICE,
};

/// Most VMs one system runs.
pub const MAX_VMS: usize = 8;

/// A VM's place in the table: its lock, and the VM once installed.
pub type VmSlot = SpinLock<Option<Vm>>;

/// The VMs, by index ([`crate::system`] installs them and takes their
/// locks in its order).
pub(crate) static VMS: [VmSlot; MAX_VMS] = [const { SpinLock::new(None) }; MAX_VMS];

/// Most channels one VM has.
pub const CHANNELS: usize = stratum_abi::limits::CHANNELS_PER_VM;

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

/// Why a VM could not be created or (re)started. The docs are the messages.
#[derive(Debug)]
pub enum VmError {
    /// Its machine cannot be built (vCPUs, RAM, layout, GIC, bus).
    Machine(MachineError),
    /// Stage-2 tables could not be built.
    Stage2(stratum_core::stage2::MapError),
    /// The guest device tree could not be generated.
    DeviceTree(stratum_core::guest_dt::GuestDtError),
    /// The virtual GIC could not be built.
    Vgic(stratum_vgic::VgicError),
}

impl core::fmt::Display for VmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Machine(e) => write!(f, "{e}"),
            Self::Stage2(e) => write!(f, "stage-2 tables: {e:?}"),
            Self::DeviceTree(e) => write!(f, "guest device tree: {e:?}"),
            Self::Vgic(e) => write!(f, "virtual GIC: {e:?}"),
        }
    }
}
/// One end of a shared-memory channel, as the VM at this end sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChannelPort {
    /// The VM at the other end.
    pub peer_vm: usize,
    /// The doorbell SPI (0-based) to raise in the peer.
    pub peer_spi: u32,
}

/// What a VM is wired to besides its RAM: the stage-2 mappings of its
/// channels and passthrough devices, and its paravirtual devices (its
/// virtio records of the boot bundle).
pub struct Wiring<E, V> {
    /// Extra stage-2 regions.
    pub stage2: E,
    /// Virtio device records.
    pub virtio: V,
    /// The host's entropy (the boot bundle's), seeding the VM's TRNG.
    pub entropy: [u8; 16],
}

/// One virtual machine.
pub struct Vm {
    /// Index in the bundle.
    pub id: usize,
    /// The pristine image (in the boot bundle, never modified).
    pub image: VmImage<'static>,
    /// Host-physical base of guest RAM.
    pub ram_pa: Pa,
    /// Stage-2 base and VMID.
    pub vttbr: u64,
    /// Its stage-2 table (for the boot-time isolation check).
    pub stage2: Stage2Table,
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
    /// `CNTVOFF_EL2` of this boot (every vCPU's virtual counter agrees);
    /// 0, ADR 0013.
    pub cntvoff: u64,
    /// Times the VM booted.
    pub boot_count: u64,
    /// Each vCPU's general-purpose registers.
    pub frames: [Frame; MAX_VCPUS],
    /// How stage 2 maps guest RAM (blocks of each size).
    pub map_stats: MapStats,
    /// The virtual GIC (rebuilt at every boot).
    pub vgic: Vgic,
    /// The machine the guest sees: RAM, GIC, device bus, image layout
    /// (fixed for the VM's life).
    pub machine: Machine,
    /// Its RAM as EL2 copies in and out of it.
    pub ram: GuestRam,
    /// The 32 virtio-mmio transports (`virt`'s) and the devices behind
    /// them, on the bus unless a passthrough device took their place
    /// (`machine.virtio`). Kept out of line ([`bank_for`]): kilobytes
    /// inside the VM would push its other
    /// fields beyond the load instructions' immediate offsets.
    pub virtio: &'static mut VmVirtio,
    /// The transports' lines as last sampled into the vGIC (bit `n`:
    /// transport `n`).
    pub virtio_lines: u64,
    /// What notifies left for the switch and the router, to be served
    /// once this VM's lock is released (`exit::serve_pv`).
    pub pv_work: Work,
    /// The host's entropy, from the boot bundle.
    entropy: [u8; 16],
    /// The generator behind SMCCC TRNG, reseeded at every boot.
    pub trng: Trng,
}

/// The banks of the VMs, by VM index; each handed out once.
static mut BANKS: [MaybeUninit<VmVirtio>; MAX_VMS] = [const { MaybeUninit::uninit() }; MAX_VMS];
static BANK_TAKEN: [AtomicBool; MAX_VMS] = [const { AtomicBool::new(false) }; MAX_VMS];

/// VM `id`'s transports, with `devices` (its records of the boot bundle)
/// behind theirs.
///
/// # Panics
/// For an `id` past `MAX_VMS`, or whose bank was handed out already.
fn bank_for(
    id: usize,
    devices: impl IntoIterator<Item = Virtio, IntoIter: Clone>,
) -> &'static mut VmVirtio {
    assert!(
        !BANK_TAKEN[id].swap(true, Ordering::AcqRel),
        "VM {id}'s virtio bank is handed out once"
    );
    // SAFETY: slot `id` is only ever reached through this one borrow (the
    // flag above hands it out once), and it lives as long as the program.
    let slot = unsafe { &mut *core::ptr::addr_of_mut!(BANKS[id]) };
    let devices = devices.into_iter();
    let bank = slot.write(VmVirtio::new(devices.clone()));
    let disks = devices.filter(|d| matches!(d.kind, VirtioKind::Blk { .. }));
    for (k, d) in disks.take(MAX_VM_DISKS).enumerate() {
        // SAFETY: as for the bank: slot `k` of VM `id`'s disks is reached
        // only here, once (the bank's flag), and lives for good.
        let store = unsafe { &mut *core::ptr::addr_of_mut!(DISK_STORE[id][k]) };
        // Built one at a time (9 KiB each), never inside the bank.
        let t = store.write(Transport::new(BlkDevice::new(1, false, b"")));
        let attached = bank.attach_disk(d, t);
        assert!(attached, "the bundle checked VM {id}'s disk transports");
    }
    bank
}

/// The disks' transports, by VM and disk: outside the banks, so that no
/// frame ever holds them all (`VmVirtio::attach_disk`).
static mut DISK_STORE: [[MaybeUninit<Transport<BlkDevice>>; MAX_VM_DISKS]; MAX_VMS] =
    [const { [const { MaybeUninit::uninit() }; MAX_VM_DISKS] }; MAX_VMS];

/// Every VM's RAM (guest-physical base, host base, size), recorded once as
/// each VM is created and never changed: the switch reads a sender's RAM
/// and checks a direct copy's source range against it without taking any
/// VM's lock. Size 0: no VM.
static CARVE_OUTS: [[AtomicU64; 3]; MAX_VMS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] }; MAX_VMS];

/// VM `id`'s RAM, once it was created.
pub fn ram_of(id: usize) -> Option<GuestRam> {
    let [ipa, pa, size] = CARVE_OUTS
        .get(id)?
        .each_ref()
        .map(|a| a.load(Ordering::Acquire));
    // SAFETY: recorded from the `GuestRam` of VM `id` (`Vm::create`),
    // whose carve-out stays mapped and the VM's for good.
    (size != 0).then(|| unsafe { GuestRam::new(ipa, pa, size) })
}

/// The carve-out that holds the host range `[pa, pa + len)`, if one does.
fn carve_out_holding(pa: u64, len: u64) -> Option<GuestRam> {
    (0..MAX_VMS)
        .filter_map(ram_of)
        .find(|r| r.holds_host(pa, len))
}

/// A VM's RAM as the virtqueues see it.
pub struct VmMemory<'a>(pub &'a GuestRam);

impl GuestMemory for VmMemory<'_> {
    fn read(&self, addr: Ipa, buf: &mut [u8]) -> Result<(), MemError> {
        self.0.read(addr.0, buf).then_some(()).ok_or(MemError {
            addr,
            len: buf.len() as u64,
        })
    }

    fn write(&mut self, addr: Ipa, data: &[u8]) -> Result<(), MemError> {
        self.0.write(addr.0, data).then_some(()).ok_or(MemError {
            addr,
            len: data.len() as u64,
        })
    }

    fn contains(&self, addr: Ipa, len: u64) -> bool {
        self.0.contains(addr.0, len)
    }

    fn read_u16(&self, addr: Ipa) -> Result<u16, MemError> {
        self.0.read_u16(addr.0).ok_or(MemError { addr, len: 2 })
    }

    fn read_u32(&self, addr: Ipa) -> Result<u32, MemError> {
        self.0.read_le_u32(addr.0).ok_or(MemError { addr, len: 4 })
    }

    fn read_u64(&self, addr: Ipa) -> Result<u64, MemError> {
        self.0.read_u64(addr.0).ok_or(MemError { addr, len: 8 })
    }

    fn write_u16(&mut self, addr: Ipa, value: u16) -> Result<(), MemError> {
        self.0
            .write_u16(addr.0, value)
            .then_some(())
            .ok_or(MemError { addr, len: 2 })
    }

    fn write_u32(&mut self, addr: Ipa, value: u32) -> Result<(), MemError> {
        self.0
            .write_u32(addr.0, value)
            .then_some(())
            .ok_or(MemError { addr, len: 4 })
    }

    fn write_u64(&mut self, addr: Ipa, value: u64) -> Result<(), MemError> {
        self.0
            .write_u64(addr.0, value)
            .then_some(())
            .ok_or(MemError { addr, len: 8 })
    }

    fn host_address(&self, addr: Ipa, len: u64) -> Option<u64> {
        self.0.host_address(addr.0, len)
    }

    /// One copy from the sender's RAM when `src` names a range of a VM's
    /// carve-out ([`carve_out_holding`]: the claim is checked, not
    /// trusted); otherwise through a buffer.
    fn copy_from(
        &mut self,
        addr: Ipa,
        src: &dyn GuestMemory,
        src_addr: Ipa,
        len: u64,
    ) -> Result<(), MemError> {
        let direct = src
            .host_address(src_addr, len)
            .and_then(|from| Some((from, carve_out_holding(from, len)?)));
        match direct {
            Some((from, ram)) if self.0.copy_from_ram(addr.0, &ram, from, len) => Ok(()),
            _ => stratum_virtio::mem::copy_through_buffer(self, addr, src, src_addr, len),
        }
    }

    fn fence(&self, order: Fence) {
        match order {
            Fence::Acquire => barrier::dmb_ishld(),
            Fence::Release => barrier::dmb_ishst(),
            Fence::Full => barrier::dmb_ish(),
        }
    }
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
        wiring: Wiring<
            impl IntoIterator<Item = Stage2Region>,
            impl IntoIterator<Item = Virtio, IntoIter: Clone>,
        >,
    ) -> Result<Self, VmError> {
        let Wiring {
            stage2: extra,
            virtio,
            entropy,
        } = wiring;
        let has_gicv = host_gic.vcpu.is_some();
        let machine =
            Machine::describe(&image, host_gic.version, has_gicv).map_err(VmError::Machine)?;
        let ram = machine.ram;
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
        // GICv2: the guest's CPU interface is the hardware's virtual CPU
        // interface, mapped through stage 2, so acknowledge and EOI never trap.
        if let (GuestGic::V2 { cpu, .. }, Some(gicv)) =
            (machine.gic, host_gic.virtual_cpu_interface())
        {
            table
                .map(pool, cpu.start, gicv.base, cpu.size, Mapping::DeviceRw)
                .map_err(VmError::Stage2)?;
        }
        let mpidrs = machine.vcpu_mpidrs();
        let vgic = Vgic::new(host_gic.version, mpidrs, VGIC_SPIS).map_err(VmError::Vgic)?;
        // SAFETY: the boot plan carved `[ram_pa, ram_pa + size)` out of
        // host RAM for this VM alone; EL2 maps all RAM identity.
        let ram = unsafe { GuestRam::new(machine.ram.start.0, ram_pa.0, machine.ram.size) };
        if let Some([i, p, n]) = CARVE_OUTS.get(id) {
            i.store(ram.ipa(), Ordering::Relaxed);
            p.store(ram_pa.0, Ordering::Relaxed);
            n.store(ram.size(), Ordering::Release);
        }
        Ok(Self {
            id,
            image,
            ram_pa,
            vttbr: table.vttbr(vmid),
            stage2: table,
            uart: Pl011::new(),
            life: VmLifecycle::new(mpidrs, &image.pcpus[..mpidrs.len()], image.on_crash),
            ctx: [VcpuContext::default(); MAX_VCPUS],
            channels: [ChannelPort::default(); CHANNELS],
            channel_count: 0,
            dt_channels: [NO_CHANNEL; CHANNELS],
            devices: [DevicePlan::NONE; DEVICES],
            device_count: 0,
            needs_tlb_flush: true,
            cntvoff: 0,
            boot_count: 0,
            frames: core::array::from_fn(|v| frame(id, v)),
            map_stats,
            vgic,
            ram,
            machine,
            virtio: bank_for(id, virtio),
            virtio_lines: 0,
            pv_work: Work::default(),
            entropy,
            trng: Trng::new(&entropy, id as u64, 0, 0),
        })
    }

    fn copy_in(&self, at: Ipa, bytes: &[u8]) {
        assert!(
            self.ram.write(at.0, bytes),
            "copy outside guest RAM (layout invariant)"
        );
    }

    /// (Re)starts the VM from its pristine image: zeroes RAM, copies kernel,
    /// initrd and a fresh device tree, resets devices, and boots it (vCPU 0
    /// pending a start at the kernel's entry). Only while no vCPU of it is
    /// on a CPU (it was just created, or the lifecycle said to reload). The
    /// effects say which CPU to tell.
    pub fn load(&mut self) -> Result<Effects, VmError> {
        self.boot_count += 1;
        self.ram.zero();
        self.copy_in(self.machine.layout.kernel.start, self.image.kernel);
        if let (Some(initrd), Some(range)) = (self.image.initrd, self.machine.layout.initrd) {
            self.copy_in(range.start, initrd);
        }
        let seed = machine::rng_seed(sysreg::cntpct_el0(), self.id as u64, self.boot_count);
        let mut devices = [machine::NO_DEVICE; DEVICES];
        let cfg = self.machine.dt_config(
            &self.image,
            &self.dt_channels[..self.channel_count],
            &mut devices,
            &self.devices[..self.device_count],
            &seed,
            self.boot_count,
        );
        {
            let mut buf = DTB_BUF.lock();
            let len = guest_dt::generate(&cfg, &mut buf[..]).map_err(VmError::DeviceTree)?;
            self.copy_in(self.machine.layout.dtb.start, &buf[..len]);
        }
        self.ram.clean();
        cache::invalidate_icache_all();
        self.uart = Pl011::new();
        self.virtio.reset();
        self.virtio_lines = 0;
        self.pv_work = Work::default();
        self.vgic = Vgic::new(self.vgic.version(), self.machine.vcpu_mpidrs(), VGIC_SPIS)
            .map_err(VmError::Vgic)?;
        // The virtual counter is the physical one (ADR 0013): with an
        // offset, QEMU's timer model overflows on a compare value near the
        // top of the range and stalls the whole machine.
        self.cntvoff = 0;
        self.trng = Trng::new(
            &self.entropy,
            self.id as u64,
            self.boot_count,
            stratum_arch::timer::counter(),
        );
        self.needs_tlb_flush = true;
        // vCPU 0 boots per the arm64 boot protocol: x0 = the DTB.
        Ok(self.life.boot(Start {
            entry: self.machine.layout.entry.0,
            x0: self.machine.layout.dtb.start.0,
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

/// The general-purpose registers of a guest vCPU, saved by the exit vector
/// (x0–x30 at offsets 0, 8, …, 240), and whose they are ([`VcpuTag`]).
pub type Frame = stratum_arch::vectors::GuestFrame<VcpuTag>;

/// What a vCPU's frame says about its owner, so that the exit path (which
/// is handed the frame) needs no lookup to know whose exit it handles or
/// where to count it. Set when the VM is built; never changes.
#[derive(Clone, Copy)]
pub struct VcpuTag {
    /// The VM's index.
    pub vm: usize,
    /// The VM's slot (its lock), so that the exit routes reach it without
    /// an index check.
    pub slot: &'static VmSlot,
    /// The vCPU's index in its VM.
    pub vcpu: usize,
    /// Its exit counters in the telemetry block.
    pub stats: &'static ExitStats,
}

impl VcpuTag {
    /// The tag of vCPU `vcpu` of VM `vm`.
    pub fn new(vm: usize, vcpu: usize) -> Self {
        Self {
            vm,
            slot: &VMS[vm],
            vcpu,
            stats: crate::telemetry::stats(vm, vcpu),
        }
    }
}

impl core::fmt::Debug for VcpuTag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VcpuTag")
            .field("vm", &self.vm)
            .field("vcpu", &self.vcpu)
            .finish_non_exhaustive()
    }
}

/// A fresh frame for vCPU `vcpu` of VM `vm`: every register zero.
pub fn frame(vm: usize, vcpu: usize) -> Frame {
    Frame {
        x: [0; 31],
        tag: VcpuTag::new(vm, vcpu),
    }
}

/// The running vCPU as the exit path's decoders see it.
pub type LiveVcpu<'a> = stratum_arch::context::LiveVcpu<'a, VcpuTag>;

pub use stratum_arch::context::VcpuContext;
