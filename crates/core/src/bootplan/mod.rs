//! The boot plan: everything the hypervisor builds at boot, decided from the
//! boot bundle and the host platform before anything is built.
//!
//! [`plan`] takes the parsed bundle ([`Bundle`]), the host device tree's view
//! of the machine ([`Platform`]), the ranges of host RAM already in use
//! ([`Reserved`]: the hypervisor's image, the host DTB, the bundle) and this
//! build's [`Limits`], and returns a [`BootPlan`] or the first reason the
//! system cannot run ([`PlanError`], whose `Display` is the boot log's
//! message). The EL2 binary then only applies the plan: it zeroes the
//! carve-outs, builds each VM at its planned address, and hands the placements
//! to its scheduler.
//!
//! What a plan decides:
//!
//! - **Memory.** Free host RAM is every RAM bank minus the reserved ranges
//!   ([`ram::HostRam`]). Each channel's shared memory is carved first, in
//!   bundle order (4 KiB aligned), then each VM's RAM, in bundle order
//!   (2 MiB aligned, 1 GiB aligned when it is at least 1 GiB and that fits),
//!   all from the top down.
//! - **VMs.** Each VM's guest RAM, its host carve-out, the physical CPU of
//!   every vCPU and whether any of them time-shares its CPU.
//! - **Channels and devices.** Each VM's channel ends (shared-memory window,
//!   doorbell SPI, peer VM and the peer's doorbell), its passthrough devices
//!   (identity-mapped region, SPIs routed to the CPU of its vCPU 0) and the
//!   stage-2 regions both add besides RAM ([`BootPlan::stage2_regions`]).
//! - **CPUs.** The run queue of each physical CPU (VMs in bundle order, vCPUs
//!   in order) and how many CPUs must be brought online.
//!
//! The checks, in the order the boot log reports them: more VMs than this
//! build runs; no RAM left for a channel; per VM, a passthrough device over
//! something the hypervisor keeps (host RAM, a GIC frame, the console UART),
//! more vCPUs than a VM may have, RAM not 2 MiB aligned and sized, no RAM left
//! for it, a vCPU on a CPU the machine does not have, a CPU whose run queue
//! is full; last, secondary CPUs needed without PSCI to start them. What
//! [`Bundle::parse`] already guarantees (indices in range, channel windows,
//! interrupt numbers, pinned CPUs not shared) is relied on, not re-checked.
//!
//! Invariants of every plan returned: the carve-outs are pairwise disjoint,
//! lie inside host RAM and outside every reserved range; every vCPU's CPU
//! exists and is below [`Limits::cpus`]; no run queue overflows.
//!
//! No allocation: the plan is a fixed-size value (a few KiB) that borrows the
//! bundle.

pub mod firmware;
pub mod ram;

use core::fmt;

use stratum_abi::bundle::{
    Bundle, CHANNEL_SIZE_MAX, ChannelEnd, KernelKind, MAX_CHANNELS, OnCrash, PAGE_SIZE, StopPolicy,
    VmImage,
};
use stratum_abi::limits;

use crate::addr::{Ipa, IpaRange, Pa};
use crate::guest_dt::GuestChannel;
use crate::platform::{self, GicVersion, Platform, PsciConduit, UartKind};
use crate::sched::{MAX_QUEUE, RunQueue, VcpuRef};
use crate::stage2::Mapping;

pub use ram::{HostRam, PhysRange};

/// Most VMs a plan holds.
pub const MAX_PLANNED_VMS: usize = limits::RUNNING_VMS;
/// Alignment of guest RAM, as the guest sees it and in host RAM: one stage-2
/// 2 MiB block.
pub const GUEST_RAM_ALIGN: u64 = 2 << 20;
/// Alignment of a channel's shared memory in host RAM.
pub const CHANNEL_ALIGN: u64 = PAGE_SIZE;

const _: () = assert!(CHANNEL_SIZE_MAX <= GUEST_RAM_ALIGN);

/// What this build of the hypervisor can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// VMs it runs at once (a plan holds at most [`MAX_PLANNED_VMS`]).
    pub vms: usize,
    /// vCPUs one VM may have.
    pub vcpus_per_vm: usize,
    /// Physical CPUs it can bring up (CPUs beyond are not used).
    pub cpus: usize,
}

/// Host RAM in use before any plan: not handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The hypervisor's image (code, data, bss, stacks, table pool).
    pub image: PhysRange,
    /// The host device tree.
    pub dtb: PhysRange,
    /// The boot bundle (kept for the life of the system: VMs restart from it).
    pub bundle: PhysRange,
}

impl Reserved {
    /// The three ranges.
    pub const fn ranges(&self) -> [PhysRange; 3] {
        [self.image, self.dtb, self.bundle]
    }
}

/// Why the system described by the bundle cannot run on this host. The
/// variant docs say when; `Display` gives the boot log's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError<'a> {
    /// The bundle describes more VMs than this build runs at once.
    TooManyVms {
        /// VMs in the bundle.
        count: usize,
        /// VMs this build runs.
        max: usize,
    },
    /// No free host RAM is left for a channel's shared memory.
    NoRamForChannel {
        /// The channel's name.
        channel: &'a str,
        /// Its size in bytes.
        size: u64,
    },
    /// A passthrough device's region overlaps something the hypervisor keeps
    /// for itself: host RAM, a GIC frame or the console UART.
    DeviceOwnedByHypervisor {
        /// The VM it would be passed to.
        vm: &'a str,
        /// The device's name.
        device: &'a str,
        /// Its base address.
        base: u64,
        /// Its size.
        size: u64,
        /// What it overlaps ("RAM", "the GIC", "the console UART").
        owner: &'static str,
    },
    /// A VM has more vCPUs than this build runs per VM.
    TooManyVcpus {
        /// The VM's name.
        vm: &'a str,
        /// Its vCPUs.
        vcpus: u32,
        /// vCPUs per VM this build runs.
        max: usize,
    },
    /// A VM's guest RAM does not start on, or is not a multiple of, 2 MiB.
    MisalignedRam {
        /// The VM's name.
        vm: &'a str,
    },
    /// An identity-mapped VM's RAM range is not wholly free host RAM: it
    /// overlaps the hypervisor's image, the host DT, the boot bundle or
    /// another identity-mapped VM, or lies outside the host's RAM banks.
    IdentityRamTaken {
        /// The VM's name.
        vm: &'a str,
        /// Its RAM base (guest-physical = host-physical).
        base: u64,
        /// Its RAM size in bytes.
        size: u64,
    },
    /// No free host RAM is left for a VM's memory.
    NoRamForVm {
        /// The VM's name.
        vm: &'a str,
        /// Its RAM size in bytes.
        size: u64,
    },
    /// A vCPU is placed on a physical CPU the machine does not have (or
    /// this build cannot bring up).
    NoSuchCpu {
        /// The VM's name.
        vm: &'a str,
        /// The vCPU's index in its VM.
        vcpu: usize,
        /// The CPU it is placed on.
        cpu: usize,
        /// CPUs the machine has (that this build uses).
        cpus: usize,
    },
    /// More vCPUs share one physical CPU than its run queue holds.
    CpuOvercrowded {
        /// The CPU.
        cpu: usize,
        /// vCPUs one CPU may time-share.
        max: usize,
    },
    /// vCPUs are placed on CPUs besides the boot CPU, but the host device
    /// tree describes no PSCI firmware to start them.
    NoPsci {
        /// CPUs the VMs need.
        cpus: usize,
    },
}

impl fmt::Display for PlanError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooManyVms { count, max } => {
                write!(
                    f,
                    "the bundle describes {count} VMs; this version runs {max}"
                )
            }
            Self::NoRamForChannel { channel, size } => write!(
                f,
                "no host RAM left for channel '{channel}' ({} KiB)",
                size >> 10
            ),
            Self::DeviceOwnedByHypervisor {
                vm,
                device,
                base,
                size,
                owner,
            } => write!(
                f,
                "VM '{vm}': device '{device}' at {base:#x} (+{size:#x}) overlaps {owner}, \
                 which the hypervisor keeps"
            ),
            Self::TooManyVcpus { vm, vcpus, max } => write!(
                f,
                "VM '{vm}' cannot be created: {vcpus} vCPUs requested; \
                 this version runs {max} vCPU per VM"
            ),
            Self::MisalignedRam { vm } => write!(
                f,
                "VM '{vm}' cannot be created: guest RAM must be 2 MiB aligned and sized"
            ),
            Self::NoRamForVm { vm, size } => write!(
                f,
                "VM '{vm}' cannot be created: not enough free host RAM for {} MiB of guest memory",
                size >> 20
            ),
            Self::NoSuchCpu {
                vm,
                vcpu,
                cpu,
                cpus,
            } => write!(
                f,
                "VM '{vm}' places vCPU {vcpu} on CPU {cpu}, but the machine has {cpus} CPUs"
            ),
            Self::IdentityRamTaken { vm, base, size } => write!(
                f,
                "VM '{vm}' is identity-mapped, but host RAM [{base:#x}, {:#x}) is not free \
                 (the hypervisor, the host DT, the boot bundle or another VM holds some of it, \
                 or it is not RAM)",
                base.saturating_add(size)
            ),
            Self::CpuOvercrowded { cpu, max } => {
                write!(f, "too many vCPUs share CPU {cpu} (at most {max})")
            }
            Self::NoPsci { cpus } => write!(
                f,
                "the VMs need {cpus} CPUs, but the DT names no PSCI to start them"
            ),
        }
    }
}

/// One VM as planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmPlan<'a> {
    /// Its index in the bundle (and its VM number).
    pub id: usize,
    /// Its pristine image in the bundle.
    pub image: VmImage<'a>,
    /// Its RAM as the guest sees it.
    pub ram: IpaRange,
    /// Where that RAM is in host RAM (2 MiB aligned, or 1 GiB; for an
    /// identity-mapped VM, `ram.start` itself).
    pub ram_pa: Pa,
    /// Whether some vCPU of it time-shares its physical CPU.
    pub time_shared: bool,
}

impl<'a> VmPlan<'a> {
    /// Its name.
    pub fn name(&self) -> &'a str {
        self.image.name
    }

    /// Its vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.image.vcpus as usize
    }

    /// The physical CPU vCPU `v` runs on (0 for a vCPU it does not have).
    pub fn pcpu(&self, v: usize) -> usize {
        match self.image.pcpus.get(v) {
            Some(&cpu) if v < self.vcpu_count() => usize::from(cpu),
            _ => 0,
        }
    }

    /// Each vCPU with its physical CPU, in vCPU order.
    pub fn placements(&self) -> impl Iterator<Item = (VcpuRef, usize)> + use<'_, 'a> {
        (0..self.vcpu_count()).map(|v| {
            let vcpu = VcpuRef {
                vm: u8::try_from(self.id).expect("fewer VMs than MAX_PLANNED_VMS"),
                vcpu: u8::try_from(v).expect("fewer vCPUs than VCPUS_PER_VM"),
            };
            (vcpu, self.pcpu(v))
        })
    }

    /// Whether it restarts (rather than stays stopped) when it crashes.
    pub fn restart_on_crash(&self) -> bool {
        self.image.on_crash == OnCrash::Restart
    }

    /// Its carve-out of host RAM.
    pub fn carve_out(&self) -> PhysRange {
        PhysRange {
            start: self.ram_pa,
            end: Pa(self.ram_pa.0 + self.ram.size),
        }
    }

    /// What its kernel is, as the boot log names it.
    pub fn kernel_kind(&self) -> &'static str {
        match self.image.kernel_kind {
            KernelKind::LinuxImage => "arm64 Image",
            KernelKind::Raw => "raw binary",
            KernelKind::Elf => "ELF",
        }
    }
}

/// A channel as planned: its shared memory in host RAM and its two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelPlan<'a> {
    /// Its index in the bundle.
    pub index: usize,
    /// Its name.
    pub name: &'a str,
    /// Bytes of shared memory.
    pub size: u64,
    /// Where the shared memory is in host RAM (4 KiB aligned).
    pub pa: Pa,
    /// The two ends, in bundle order.
    pub ends: [ChannelEnd; 2],
}

impl ChannelPlan<'_> {
    /// Its carve-out of host RAM.
    pub fn carve_out(&self) -> PhysRange {
        PhysRange {
            start: self.pa,
            end: Pa(self.pa.0 + self.size),
        }
    }
}

/// The boot log's line for a channel.
impl fmt::Display for ChannelPlan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "channel '{}': {} KiB at PA {:#x} between vm{} and vm{}",
            self.name,
            self.size >> 10,
            self.pa.0,
            self.ends[0].vm,
            self.ends[1].vm
        )
    }
}

/// One VM's end of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelEndPlan<'a> {
    /// The channel's number in this VM (its slot, and the `DOORBELL` `x1`).
    pub slot: usize,
    /// The VM at the other end.
    pub peer_vm: usize,
    /// The doorbell SPI (INTID − 32) to raise in the peer.
    pub peer_spi: u32,
    /// The channel as this VM's device tree describes it.
    pub guest: GuestChannel<'a>,
    /// Where the shared memory is in host RAM.
    pub pa: Pa,
}

/// A passthrough device as planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePlan<'a> {
    /// Its node name.
    pub name: &'a str,
    /// Its compatible list (NUL-separated, NUL-terminated).
    pub compatible: &'a [u8],
    /// Its registers: guest-physical = host-physical.
    pub regs: IpaRange,
    spis: [u32; limits::IRQS_PER_DEVICE],
    spi_count: usize,
    /// The physical CPU its interrupts are routed to: its VM's vCPU 0's.
    pub route_cpu: usize,
}

impl DevicePlan<'static> {
    /// No device: the placeholder of an unused slot.
    pub const NONE: Self = Self {
        name: "",
        compatible: b"\0",
        regs: IpaRange {
            start: crate::addr::Ipa(0),
            size: 0,
        },
        spis: [0; limits::IRQS_PER_DEVICE],
        spi_count: 0,
        route_cpu: 0,
    };
}

impl<'a> DevicePlan<'a> {
    /// A device at `regs` with SPIs `spis` (at most
    /// `limits::IRQS_PER_DEVICE`, the rest dropped), for tests.
    #[cfg(test)]
    pub(crate) fn for_test(name: &'a str, regs: IpaRange, spis: &[u32]) -> Self {
        let mut s = [0; limits::IRQS_PER_DEVICE];
        let n = spis.len().min(s.len());
        s[..n].copy_from_slice(&spis[..n]);
        Self {
            name,
            compatible: b"x\0",
            regs,
            spis: s,
            spi_count: n,
            route_cpu: 0,
        }
    }

    /// Its SPIs (INTID − 32), forwarded with the same number.
    pub fn spis(&self) -> &[u32] {
        self.spis.get(..self.spi_count).unwrap_or(&[])
    }

    /// Its interrupts' INTIDs.
    pub fn intids(&self) -> impl Iterator<Item = u32> + use<'_> {
        self.spis().iter().map(|spi| 32 + spi)
    }
}

/// A region a VM's stage 2 maps besides its RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Region {
    /// Where the guest sees it.
    pub ipa: IpaRange,
    /// Where it is.
    pub pa: Pa,
    /// How it is mapped.
    pub kind: Mapping,
}

/// Whose a carve-out of host RAM is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarveOut {
    /// VM `n`'s RAM.
    Vm(usize),
    /// Channel `n`'s shared memory.
    Channel(usize),
}

/// Everything the hypervisor builds at boot. See the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct BootPlan<'a> {
    bundle: Bundle<'a>,
    vms: [Option<VmPlan<'a>>; MAX_PLANNED_VMS],
    channel_pa: [Pa; MAX_CHANNELS],
    queues: [RunQueue; platform::MAX_CPUS],
    mpidrs: [u64; platform::MAX_CPUS],
    host_cpus: usize,
    cpus_needed: usize,
    free_for_guests: u64,
    ram_left: HostRam,
}

/// Plans the system `bundle` describes on the host `platform` describes.
/// See the module documentation for what is decided and checked, in which
/// order.
pub fn plan<'a>(
    bundle: &Bundle<'a>,
    platform: &Platform<'_>,
    reserved: &Reserved,
    limits: &Limits,
) -> Result<BootPlan<'a>, PlanError<'a>> {
    let max_vms = limits.vms.min(MAX_PLANNED_VMS);
    if bundle.vm_count() > max_vms {
        return Err(PlanError::TooManyVms {
            count: bundle.vm_count(),
            max: max_vms,
        });
    }
    let host_cpus = platform
        .cpus()
        .len()
        .min(limits.cpus)
        .min(platform::MAX_CPUS);
    // The hypervisor's own ranges and what the DT reserves (firmware,
    // shared buffers): no VM gets any of it.
    let mut cuts = [PhysRange::default(); 3 + platform::MAX_RESERVED_REGIONS];
    for (cut, range) in cuts.iter_mut().zip(
        reserved.ranges().into_iter().chain(
            platform
                .reserved()
                .iter()
                .map(|r| PhysRange::from_region(r.region)),
        ),
    ) {
        *cut = range;
    }
    let mut ram = HostRam::new(platform.memory(), &cuts);
    let free_for_guests = ram.free_bytes();

    // Identity-mapped VMs first: their RAM can only be where they say, so
    // every other carve-out must go around it.
    let mut identity_pa = [None; MAX_PLANNED_VMS];
    for (id, slot) in identity_pa.iter_mut().enumerate().take(bundle.vm_count()) {
        let image = bundle.vm(id).expect("Bundle::parse validated every VM");
        if !image.identity {
            continue;
        }
        let taken = PhysRange::new(Pa(image.mem_base), image.mem_size).is_some_and(|r| ram.take(r));
        if !taken {
            return Err(PlanError::IdentityRamTaken {
                vm: image.name,
                base: image.mem_base,
                size: image.mem_size,
            });
        }
        *slot = Some(Pa(image.mem_base));
    }

    let mut channel_pa = [Pa(0); MAX_CHANNELS];
    for (c, slot) in channel_pa
        .iter_mut()
        .enumerate()
        .take(bundle.channel_count())
    {
        let ch = bundle
            .channel(c)
            .expect("Bundle::parse validated every channel");
        *slot = ram
            .carve(ch.size, CHANNEL_ALIGN)
            .ok_or(PlanError::NoRamForChannel {
                channel: ch.name,
                size: ch.size,
            })?;
    }

    let mut vms = [None; MAX_PLANNED_VMS];
    let mut queues = [RunQueue::new(); platform::MAX_CPUS];
    let mut cpus_needed = 1;
    for (id, slot) in vms.iter_mut().enumerate().take(bundle.vm_count()) {
        let image = bundle.vm(id).expect("Bundle::parse validated every VM");
        let vm = plan_vm(
            id,
            image,
            bundle,
            platform,
            limits,
            identity_pa[id],
            &mut ram,
        )?;
        for (vcpu, cpu) in vm.placements() {
            if cpu >= host_cpus {
                return Err(PlanError::NoSuchCpu {
                    vm: image.name,
                    vcpu: usize::from(vcpu.vcpu),
                    cpu,
                    cpus: host_cpus,
                });
            }
        }
        for (vcpu, cpu) in vm.placements() {
            if !queues[cpu].push(vcpu) {
                return Err(PlanError::CpuOvercrowded {
                    cpu,
                    max: MAX_QUEUE,
                });
            }
            cpus_needed = cpus_needed.max(cpu + 1);
        }
        *slot = Some(vm);
    }
    for vm in vms.iter_mut().flatten() {
        vm.time_shared = (0..vm.vcpu_count()).any(|v| queues[vm.pcpu(v)].is_shared());
    }
    if cpus_needed > 1 && platform.psci.is_none() {
        return Err(PlanError::NoPsci { cpus: cpus_needed });
    }
    let mut mpidrs = [u64::MAX; platform::MAX_CPUS];
    for (m, cpu) in mpidrs.iter_mut().zip(platform.cpus()) {
        *m = cpu.mpidr;
    }
    Ok(BootPlan {
        bundle: *bundle,
        vms,
        channel_pa,
        queues,
        mpidrs,
        host_cpus,
        cpus_needed,
        free_for_guests,
        ram_left: ram,
    })
}

/// Checks VM `id`'s devices and resources and carves its RAM (unless it
/// was taken already: `taken`, an identity-mapped VM's); placement is the
/// caller's.
fn plan_vm<'a>(
    id: usize,
    image: VmImage<'a>,
    bundle: &Bundle<'a>,
    platform: &Platform<'_>,
    limits: &Limits,
    taken: Option<Pa>,
    ram: &mut HostRam,
) -> Result<VmPlan<'a>, PlanError<'a>> {
    let devices = (0..bundle.device_count()).filter_map(|i| bundle.device(i));
    for d in devices.filter(|d| d.vm as usize == id) {
        if let Some(owner) = platform.owned_by_hypervisor(d.base, d.size) {
            return Err(PlanError::DeviceOwnedByHypervisor {
                vm: image.name,
                device: d.name,
                base: d.base,
                size: d.size,
                owner,
            });
        }
    }
    if image.vcpus as usize > limits.vcpus_per_vm {
        return Err(PlanError::TooManyVcpus {
            vm: image.name,
            vcpus: image.vcpus,
            max: limits.vcpus_per_vm,
        });
    }
    let misaligned = PlanError::MisalignedRam { vm: image.name };
    let guest_ram = IpaRange::new(Ipa(image.mem_base), image.mem_size).ok_or(misaligned)?;
    if !guest_ram.start.is_aligned(GUEST_RAM_ALIGN) || guest_ram.size % GUEST_RAM_ALIGN != 0 {
        return Err(misaligned);
    }
    let ram_pa = match taken {
        Some(pa) => pa,
        None => ram
            .carve(guest_ram.size, GUEST_RAM_ALIGN)
            .ok_or(PlanError::NoRamForVm {
                vm: image.name,
                size: guest_ram.size,
            })?,
    };
    Ok(VmPlan {
        id,
        image,
        ram: guest_ram,
        ram_pa,
        time_shared: false,
    })
}

impl<'a> BootPlan<'a> {
    /// The bundle it plans.
    pub fn bundle(&self) -> &Bundle<'a> {
        &self.bundle
    }

    /// Number of VMs.
    pub fn vm_count(&self) -> usize {
        self.bundle.vm_count()
    }

    /// VM `id`, or `None` when there is no such VM.
    pub fn vm(&self, id: usize) -> Option<&VmPlan<'a>> {
        self.vms.get(id)?.as_ref()
    }

    /// Every VM, in bundle order.
    pub fn vms(&self) -> impl Iterator<Item = &VmPlan<'a>> {
        self.vms.iter().flatten()
    }

    /// Every channel, in bundle order.
    pub fn channels(&self) -> impl Iterator<Item = ChannelPlan<'a>> + use<'_, 'a> {
        (0..self.bundle.channel_count()).map(|c| {
            let ch = self
                .bundle
                .channel(c)
                .expect("Bundle::parse validated every channel");
            ChannelPlan {
                index: c,
                name: ch.name,
                size: ch.size,
                pa: self.channel_pa[c],
                ends: ch.ends,
            }
        })
    }

    /// VM `vm`'s channel ends, in bundle order.
    pub fn channel_ends(
        &self,
        vm: usize,
    ) -> impl Iterator<Item = ChannelEndPlan<'a>> + use<'_, 'a> {
        self.channels().flat_map(move |ch| {
            [(0, 1), (1, 0)].into_iter().filter_map(move |(me, peer)| {
                let (end, other) = (ch.ends[me], ch.ends[peer]);
                (end.vm as usize == vm).then(|| ChannelEndPlan {
                    slot: end.id as usize,
                    peer_vm: other.vm as usize,
                    peer_spi: other.spi,
                    guest: GuestChannel {
                        id: end.id,
                        name: ch.name,
                        peer: self.bundle.vm(other.vm as usize).map_or("", |p| p.name),
                        shm: IpaRange::new(Ipa(end.ipa), ch.size)
                            .expect("Bundle::parse checked the window"),
                        spi: end.spi,
                    },
                    pa: ch.pa,
                })
            })
        })
    }

    /// How many channel slots VM `vm` has: one past its highest channel
    /// number (slots below without a channel stay empty).
    pub fn channel_slots(&self, vm: usize) -> usize {
        self.channel_ends(vm).map(|e| e.slot + 1).max().unwrap_or(0)
    }

    /// VM `vm`'s passthrough devices, in bundle order.
    pub fn devices(&self, vm: usize) -> impl Iterator<Item = DevicePlan<'a>> + use<'_, 'a> {
        let route_cpu = self.vm(vm).map_or(0, |v| v.pcpu(0));
        (0..self.bundle.device_count())
            .filter_map(|i| self.bundle.device(i))
            .filter(move |d| d.vm as usize == vm)
            .map(move |d| DevicePlan {
                name: d.name,
                compatible: d.compatible,
                regs: IpaRange::new(Ipa(d.base), d.size).expect("Bundle::parse checked no wrap"),
                spis: d.irqs,
                spi_count: d.spis().len(),
                route_cpu,
            })
    }

    /// What VM `vm`'s stage 2 maps besides its RAM: its channel windows
    /// (normal memory), then its devices (identity-mapped device memory).
    pub fn stage2_regions(&self, vm: usize) -> impl Iterator<Item = Stage2Region> + use<'_, 'a> {
        let channels = self.channel_ends(vm).map(|e| Stage2Region {
            ipa: e.guest.shm,
            pa: e.pa,
            kind: Mapping::RamRwx,
        });
        let devices = self.devices(vm).map(|d| Stage2Region {
            ipa: d.regs,
            pa: Pa(d.regs.start.0),
            kind: Mapping::DeviceRw,
        });
        channels.chain(devices)
    }

    /// Every carve-out of host RAM: channels, then VMs.
    pub fn carve_outs(&self) -> impl Iterator<Item = (CarveOut, PhysRange)> + use<'_, 'a> {
        let channels = self
            .channels()
            .map(|c| (CarveOut::Channel(c.index), c.carve_out()));
        let vms = self.vms().map(|v| (CarveOut::Vm(v.id), v.carve_out()));
        channels.chain(vms)
    }

    /// The vCPUs physical CPU `cpu` runs, in round-robin order.
    pub fn queue(&self, cpu: usize) -> &[VcpuRef] {
        self.queues.get(cpu).map_or(&[], RunQueue::entries)
    }

    /// CPUs that must be online: one past the highest CPU any vCPU uses.
    pub fn cpus_needed(&self) -> usize {
        self.cpus_needed
    }

    /// The MPIDR of each CPU the hypervisor may use, in device tree order
    /// (index = CPU number).
    pub fn host_mpidrs(&self) -> &[u64] {
        self.mpidrs.get(..self.host_cpus).unwrap_or(&[])
    }

    /// Bytes of host RAM free for guests before any carve-out.
    pub fn free_for_guests(&self) -> u64 {
        self.free_for_guests
    }

    /// Host RAM left after every carve-out.
    pub fn ram_left(&self) -> &HostRam {
        &self.ram_left
    }

    /// Bytes of guest RAM of all VMs.
    pub fn guest_ram_bytes(&self) -> u64 {
        self.vms().map(|v| v.ram.size).sum()
    }

    /// When the system stops.
    pub fn stop_policy(&self) -> StopPolicy {
        self.bundle.system().stop
    }

    /// Whether the system stops when its first VM stops.
    pub fn stop_on_first(&self) -> bool {
        self.stop_policy() == StopPolicy::Any
    }

    /// The round-robin time slice in ticks of a `timer_hz` counter (at
    /// least 1).
    pub fn slice_ticks(&self, timer_hz: u64) -> u64 {
        let ticks = u128::from(timer_hz) * u128::from(self.bundle.system().slice_us) / 1_000_000;
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// The host, as the banner's second line describes it.
#[derive(Clone, Copy, Debug)]
pub struct HostSummary<'p, 'a> {
    /// The host device tree's view.
    pub platform: &'p Platform<'a>,
    /// The boot CPU's `MIDR_EL1`.
    pub midr: u64,
    /// The boot CPU's name.
    pub cpu_name: &'p str,
}

impl fmt::Display for HostSummary<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.platform;
        let ram: u64 = p.memory().iter().map(|m| m.size).sum();
        write!(
            f,
            "{} CPU(s) ({}, MIDR {:#010x}), {} MiB RAM, GICv{}, console {} at {:#x}, PSCI via {}",
            p.cpus().len(),
            self.cpu_name,
            self.midr,
            ram >> 20,
            match p.gic.version {
                GicVersion::V2 => 2,
                GicVersion::V3 => 3,
            },
            match p.uart.map(|u| u.kind) {
                Some(UartKind::Pl011) => "PL011",
                Some(UartKind::Cadence) => "Cadence UART",
                Some(UartKind::Ns16550 { .. }) => "16550",
                None => "none",
            },
            p.uart.map_or(0, |u| u.regs.base.0),
            match p.psci.map(|p| p.conduit) {
                Some(PsciConduit::Smc) => "SMC",
                Some(PsciConduit::Hvc) => "HVC",
                None => "nothing (no PSCI node)",
            }
        )
    }
}

/// Size of the host DTB whose first 8 header bytes are `header`, or `None`
/// when they do not start a device tree of a sane size (40 bytes to 16 MiB).
pub fn host_dtb_size(header: [u8; 8]) -> Option<usize> {
    const MAGIC: [u8; 4] = [0xd0, 0x0d, 0xfe, 0xed];
    if header[..4] != MAGIC {
        return None;
    }
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let size = usize::try_from(size).ok()?;
    (40..=(16 << 20)).contains(&size).then_some(size)
}

#[cfg(test)]
mod tests;
