//! The Stratum EL2 binary: boot, VM creation, and the exit path's glue.
//!
//! Boot: `head.rs` checks EL2, turns on EL2's MMU and vectors and calls
//! [`boot_primary`] with the host DTB. That parses the host device tree,
//! prints the banner, finds the boot bundle (the "initrd" the loader gave
//! us), configures the EL2 traps, builds each VM and enters the first guest.
//! From then on EL2 only runs when a guest exits (`exit.rs`).
#![no_std]
#![no_main]

mod console;
mod exit;
mod head;
mod irq;
mod lifecycle;
mod mem;
mod panic;
mod percpu;
mod sched;
mod smp;
mod sync;
mod system;
mod telemetry;
mod vcpu;
mod vm;

use stratum_abi::bundle::{
    Bundle, FLAG_CONSOLE_COLOR, FLAG_SELFTEST_EL2_FAULT, FLAG_SEMIHOSTING_EXIT, KernelKind, VmImage,
};
use stratum_abi::exit as exit_status;
use stratum_abi::smccc;
use stratum_arch::firmware::{self, Conduit};
use stratum_arch::sysreg;
use stratum_core::addr::{Ipa, IpaRange, Pa};
use stratum_core::fdt::Fdt;
use stratum_core::inject::PstateFeatures;
use stratum_core::platform::{Platform, PsciConduit};
use stratum_core::psci::{FirmwareFeatures, WorkaroundState};
use stratum_core::sched::VcpuRef;
use stratum_core::stage2::{self, Mapping};

use crate::mem::{PhysRange, RamAllocator, TablePool};
use crate::system::Settings;
use crate::vm::{ExtraMapping, Vm};

/// Stratum's version, printed in the banner.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// HCR_EL2 for guests: stage 2 on (VM), set/way invalidates upgraded to
/// clean+invalidate (SWIO), stage-1 walks into device memory fault (PTW),
/// physical IRQ/FIQ/SError routed to EL2 (IMO/FMO/AMO), EL1 TLB and cache
/// maintenance broadcast (FB) to the inner-shareable domain (BSU = IS),
/// WFI and WFE trapped (TWI/TWE: a waiting vCPU gives its CPU back), SMC
/// trapped (TSC), EL1 is AArch64 (RW).
const HCR_GUEST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 9)
    | (1 << 10)
    | (1 << 13)
    | (1 << 14)
    | (1 << 19)
    | (1 << 31);

/// `HCR_EL2.TID3`: EL1 reads of the feature ID registers trap, and are
/// answered by `stratum_core::idreg` (the hardware's values, zero for
/// reserved encodings), so what a guest is told is the hypervisor's choice.
const HCR_TID3: u64 = 1 << 18;

/// `HCR_EL2.APK`: pointer-authentication key registers do not trap.
const HCR_APK: u64 = 1 << 40;
/// `HCR_EL2.API`: pointer-authentication instructions do not trap.
const HCR_API: u64 = 1 << 41;

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Primary CPU entry from `head.rs`, MMU on, on CPU 0's stack.
#[unsafe(no_mangle)]
extern "C" fn boot_primary(dtb: usize) -> ! {
    // SAFETY: the loader passed the host DTB's address in x0; the header is
    // 40 bytes and lies in RAM, which EL2 maps. `Fdt::new` validates the rest
    // against the size the header declares, which we read here first.
    let dtb_bytes = unsafe { host_dtb(dtb) };
    let Some(fdt) = dtb_bytes.and_then(|b| Fdt::new(b).ok()) else {
        // No console without a device tree: nothing to say it on.
        system::shutdown(exit_status::BAD_BOOT_INPUT);
    };
    let platform = match Platform::from_fdt(&fdt) {
        Ok(p) => p,
        Err(_) => system::shutdown(exit_status::BAD_BOOT_INPUT),
    };
    let uart_base = platform.uart.map_or(0, |u| u.regs.base.0 as usize);
    if uart_base != 0 {
        console::init(uart_base);
    }
    let conduit = platform.psci.map(|p| match p.conduit {
        PsciConduit::Smc => Conduit::Smc,
        PsciConduit::Hvc => Conduit::Hvc,
    });

    // The boot bundle: the "initrd" the loader handed us.
    let bundle = platform.initrd.and_then(|r| {
        let len = usize::try_from(r.size).ok()?;
        // SAFETY: the loader placed the initrd at [base, base + size) in RAM,
        // which EL2 maps; nothing writes it after boot, so a 'static shared
        // slice over it stays valid.
        Some(unsafe { core::slice::from_raw_parts(r.base.0 as *const u8, len) })
    });
    let bundle = match bundle.map(Bundle::parse) {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            log!("error: the boot bundle is unusable: {e}");
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
        None => {
            log!("error: no boot bundle: load one as the initrd (`stratum run` does this)");
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    };
    let firmware = conduit.map_or(FirmwareFeatures::NONE, probe_firmware);
    system::set_settings(Settings {
        conduit,
        semihosting: bundle.flags() & FLAG_SEMIHOSTING_EXIT != 0,
        firmware,
        uart_base,
        pstate_features: PstateFeatures::from_id_regs(
            sysreg::id_aa64pfr1_el1(),
            sysreg::id_aa64mmfr1_el1(),
        ),
    });
    telemetry::init();
    banner(&platform, &bundle);
    if bundle.flags() & FLAG_SELFTEST_EL2_FAULT != 0 {
        selftest_el2_fault();
    }

    // Free RAM: every bank minus our image, the host DTB and the bundle.
    let mut banks = [PhysRange { start: 0, end: 0 }; 8];
    let mut nbanks = 0;
    for m in platform.memory() {
        if nbanks < banks.len() {
            banks[nbanks] = PhysRange {
                start: m.base.0,
                end: m.base.0.saturating_add(m.size),
            };
            nbanks += 1;
        }
    }
    let image = PhysRange {
        start: core::ptr::addr_of!(__image_start) as u64,
        end: core::ptr::addr_of!(__image_end) as u64,
    };
    let dtb_range = PhysRange {
        start: dtb as u64,
        end: dtb as u64 + fdt.total_size() as u64,
    };
    let bundle_range = PhysRange {
        start: bundle.bytes().as_ptr() as u64,
        end: bundle.bytes().as_ptr() as u64 + bundle.bytes().len() as u64,
    };
    let mut ram = RamAllocator::new(&banks[..nbanks], &[image, dtb_range, bundle_range]);
    let mut pool = TablePool::take();

    configure_el2();
    let console_intid = platform.uart.and_then(|u| u.irq).map(|i| i.intid());
    if let Err(e) = irq::init(0, &platform.gic, console_intid) {
        log!("error: the host GIC cannot be brought up: {e}");
        system::shutdown(exit_status::BAD_BOOT_INPUT);
    }
    log!(
        "GIC virtualization: {} list registers; timers forwarded hardware-linked",
        irq::lr_count()
    );
    let s2cfg = stage2::config_for(sysreg::id_aa64mmfr0_el1(), sysreg::id_aa64mmfr1_el1());
    log!(
        "stage 2: {}-bit IPA, start level {}, VMIDs in VTTBR; {} MiB free for guests",
        s2cfg.ipa_bits,
        s2cfg.start_level,
        ram.free_bytes() >> 20
    );
    // SAFETY: VTCR_EL2 only shapes stage-2 translation of guests, none of
    // which runs yet.
    unsafe { sysreg::set_vtcr_el2(s2cfg.vtcr) };
    *SECONDARY_BOOT.lock() = Some(SecondaryBoot {
        gic: platform.gic,
        vtcr: s2cfg.vtcr,
    });

    if bundle.vm_count() > system::MAX_VMS {
        log!(
            "error: the bundle describes {} VMs; this version runs {}",
            bundle.vm_count(),
            system::MAX_VMS
        );
        system::shutdown(exit_status::BAD_BOOT_INPUT);
    }
    let host_cpus = platform.cpus().len().min(head::MAX_CPUS);
    let channel_pa = allocate_channels(&bundle, &mut ram);
    let system_info = bundle.system();
    let mut cpus_needed = 1;
    for id in 0..bundle.vm_count() {
        let image = bundle.vm(id).expect("Bundle::parse validated every VM");
        let mut extra = [NO_EXTRA; vm::CHANNELS + vm::DEVICES];
        let mut n = 0;
        for (c, &pa) in channel_pa.iter().enumerate().take(bundle.channel_count()) {
            let ch = bundle
                .channel(c)
                .expect("Bundle::parse validated every channel");
            for end in ch.ends.iter().filter(|e| e.vm as usize == id) {
                extra[n] = ExtraMapping {
                    ipa: IpaRange::new(Ipa(end.ipa), ch.size).expect("validated by Bundle::parse"),
                    pa: Pa(pa),
                    kind: Mapping::RamRwx,
                };
                n += 1;
            }
        }
        for d in (0..bundle.device_count()).filter_map(|i| bundle.device(i)) {
            if d.vm as usize == id {
                if let Some(what) = platform.owned_by_hypervisor(d.base, d.size) {
                    log!(
                        "error: VM '{}': device '{}' at {:#x} (+{:#x}) overlaps {what}, which the hypervisor keeps",
                        image.name,
                        d.name,
                        d.base,
                        d.size
                    );
                    system::shutdown(exit_status::BAD_BOOT_INPUT);
                }
                extra[n] = ExtraMapping {
                    ipa: IpaRange::new(Ipa(d.base), d.size).expect("validated by Bundle::parse"),
                    pa: Pa(d.base),
                    kind: Mapping::DeviceRw,
                };
                n += 1;
            }
        }
        let vm = create_vm(
            id,
            image,
            &bundle,
            &platform,
            s2cfg,
            &mut ram,
            &mut pool,
            host_cpus,
            &extra[..n],
        );
        for v in 0..vm.vcpu_count() {
            let pcpu = vm.life.pcpu(v);
            cpus_needed = cpus_needed.max(pcpu + 1);
            let r = VcpuRef {
                vm: id as u8,
                vcpu: v as u8,
            };
            if !sched::place(r, pcpu) {
                log!(
                    "error: too many vCPUs share CPU {pcpu} (at most {})",
                    stratum_core::sched::MAX_QUEUE
                );
                system::shutdown(exit_status::BAD_BOOT_INPUT);
            }
        }
        console::add_vm(id, image.name);
        system::install_vm(vm);
    }
    for id in 0..bundle.vm_count() {
        // One lock at a time: a CPU's scheduling state is never taken under
        // a VM's lock (system.rs, lock order).
        let shared = (0..system::with_vm(id, |vm| vm.vcpu_count()))
            .map(|v| system::with_vm(id, |vm| vm.life.pcpu(v)))
            .any(sched::is_shared);
        system::set_time_shared(id, shared);
    }
    let (tables_used, tables_free) = pool.usage();
    let ram_used = (0..bundle.vm_count())
        .map(|id| system::with_vm(id, |vm| vm.ram.size))
        .sum();
    system::set_mem_info([tables_used, ram_used, tables_free]);
    let slice_us = u64::from(system_info.slice_us);
    system::set_stop_policy(system_info.stop);
    console::set_color(bundle.flags() & FLAG_CONSOLE_COLOR != 0);
    irq::enable_passthrough(0);
    sched::configure(
        stratum_arch::timer::frequency() * slice_us / 1_000_000,
        has_pauth(),
        cptr_for_guests(),
    );
    if cpus_needed > 1 {
        let mpidrs: [u64; head::MAX_CPUS] =
            core::array::from_fn(|i| platform.cpus().get(i).map_or(u64::MAX, |c| c.mpidr));
        let Some(conduit) = conduit else {
            log!("error: the VMs need {cpus_needed} CPUs, but the DT names no PSCI to start them");
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        };
        let online = smp::start_secondaries(conduit, &mpidrs[..host_cpus], cpus_needed);
        log!("{online} CPUs online");
        if online < cpus_needed {
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    }
    sched::schedule(0)
}

/// Placeholder for unused extra-mapping slots.
const NO_EXTRA: ExtraMapping = ExtraMapping {
    ipa: IpaRange {
        start: Ipa(0),
        size: 0,
    },
    pa: Pa(0),
    kind: Mapping::RamRwx,
};

/// Allocates and zeroes every channel's shared memory; returns each
/// channel's physical address.
fn allocate_channels(
    bundle: &Bundle<'static>,
    ram: &mut RamAllocator,
) -> [u64; stratum_abi::bundle::MAX_CHANNELS] {
    let mut pas = [0; stratum_abi::bundle::MAX_CHANNELS];
    for (c, slot) in pas.iter_mut().enumerate().take(bundle.channel_count()) {
        let ch = bundle
            .channel(c)
            .expect("Bundle::parse validated every channel");
        let Some(pa) = ram.alloc(ch.size, 4096) else {
            log!(
                "error: no host RAM left for channel '{}' ({} KiB)",
                ch.name,
                ch.size >> 10
            );
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        };
        let len = usize::try_from(ch.size).expect("channel sizes are at most 2 MiB");
        // SAFETY: fresh memory from the allocator, identity-mapped at EL2
        // as normal memory, not yet mapped into any guest.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, len) };
        stratum_arch::cache::clean_inval_dcache_range(pa as usize, len);
        log!(
            "channel '{}': {} KiB at PA {pa:#x} between vm{} and vm{}",
            ch.name,
            ch.size >> 10,
            ch.ends[0].vm,
            ch.ends[1].vm
        );
        *slot = pa;
    }
    pas
}

/// Creates and loads VM `id`, or stops the machine with a message saying
/// why it cannot be.
#[expect(clippy::too_many_arguments, reason = "boot-time wiring, called once")]
fn create_vm(
    id: usize,
    image: VmImage<'static>,
    bundle: &Bundle<'static>,
    platform: &Platform,
    s2cfg: stage2::Stage2Config,
    ram: &mut RamAllocator,
    pool: &mut TablePool,
    host_cpus: usize,
    extra: &[ExtraMapping],
) -> Vm {
    let mut vm = match Vm::create(id, image, &platform.gic, s2cfg, ram, pool, extra) {
        Ok(vm) => vm,
        Err(e) => {
            log!("error: VM '{}' cannot be created: {e}", image.name);
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    };
    wire_channels_and_devices(&mut vm, bundle);
    for v in 0..vm.vcpu_count() {
        if vm.life.pcpu(v) >= host_cpus {
            log!(
                "error: VM '{}' places vCPU {v} on CPU {}, but the machine has {host_cpus} CPUs",
                image.name,
                vm.life.pcpu(v)
            );
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    }
    log!(
        "vm{id} '{}': {} vCPU, {} MiB at IPA {} (PA {}), kernel ({}) at {}, entry {}",
        image.name,
        image.vcpus,
        vm.ram.size >> 20,
        vm.ram.start,
        vm.ram_pa,
        match image.kernel_kind {
            KernelKind::LinuxImage => "arm64 Image",
            KernelKind::Raw => "raw binary",
            KernelKind::Elf => "ELF",
        },
        vm.layout.kernel.start,
        vm.layout.entry,
    );
    log!(
        "vm{id} stage 2: {} x 1 GiB + {} x 2 MiB blocks + {} x 4 KiB pages, VMID {}; {} table pages in use",
        vm.map_stats.blocks_1g,
        vm.map_stats.blocks_2m,
        vm.map_stats.pages_4k,
        vm.vttbr >> 48,
        pool.used_pages()
    );
    match vm.load() {
        // No CPU schedules yet: each picks its vCPUs up when it starts.
        Ok(_boot) => vm,
        Err(e) => {
            log!("error: VM '{}' cannot be loaded: {e}", image.name);
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    }
}

/// Records VM `vm`'s channel ends (peers, doorbells, device-tree view) and
/// passthrough devices (their SPIs routed to its vCPU 0's CPU).
fn wire_channels_and_devices(vm: &mut Vm, bundle: &Bundle<'static>) {
    let id = vm.id;
    for c in 0..bundle.channel_count() {
        let ch = bundle
            .channel(c)
            .expect("Bundle::parse validated every channel");
        for (me, peer) in [(0, 1), (1, 0)] {
            let (end, other) = (ch.ends[me], ch.ends[peer]);
            if end.vm as usize != id {
                continue;
            }
            let slot = end.id as usize;
            let peer_name = bundle.vm(other.vm as usize).map_or("", |p| p.name);
            vm.channels[slot] = vm::ChannelPort {
                peer_vm: other.vm as usize,
                peer_spi: other.spi,
            };
            vm.dt_channels[slot] = stratum_core::guest_dt::GuestChannel {
                id: end.id,
                name: ch.name,
                peer: peer_name,
                shm: IpaRange::new(Ipa(end.ipa), ch.size).expect("validated by Bundle::parse"),
                spi: end.spi,
            };
            vm.channel_count = vm.channel_count.max(slot + 1);
        }
    }
    for d in (0..bundle.device_count()).filter_map(|i| bundle.device(i)) {
        if d.vm as usize != id || vm.device_count == vm::DEVICES {
            continue;
        }
        let spis = d.spis();
        let mut dev = vm::PassthroughDevice {
            name: d.name,
            compatible: d.compatible,
            regs: IpaRange::new(Ipa(d.base), d.size).expect("validated by Bundle::parse"),
            spis: [0; stratum_abi::limits::IRQS_PER_DEVICE],
            spi_count: spis.len(),
        };
        dev.spis[..spis.len()].copy_from_slice(spis);
        vm.devices[vm.device_count] = dev;
        vm.device_count += 1;
        for &spi in spis {
            irq::add_passthrough(32 + spi, id, vm_pcpu0(bundle, id));
        }
    }
}

/// The physical CPU of VM `id`'s vCPU 0 (where its passthrough interrupts
/// are routed).
fn vm_pcpu0(bundle: &Bundle<'static>, id: usize) -> usize {
    bundle.vm(id).map_or(0, |i| usize::from(i.pcpus[0]))
}

/// What secondary CPUs need from the boot CPU's discoveries.
#[derive(Clone, Copy)]
struct SecondaryBoot {
    gic: stratum_core::platform::GicInfo,
    vtcr: u64,
}

static SECONDARY_BOOT: sync::SpinLock<Option<SecondaryBoot>> = sync::SpinLock::new(None);

/// Secondary CPU entry from `head.rs` (MMU on, own stack), started by
/// `smp::start_secondaries`.
#[unsafe(no_mangle)]
extern "C" fn boot_secondary(cpu: usize) -> ! {
    let boot = SECONDARY_BOOT
        .lock()
        .expect("the boot CPU records what secondaries need before starting them");
    configure_el2();
    // SAFETY: as on the boot CPU: VTCR_EL2 shapes only guest translation.
    unsafe { sysreg::set_vtcr_el2(boot.vtcr) };
    if let Err(e) = irq::init(cpu, &boot.gic, None) {
        panic!("CPU {cpu}: the GIC cannot be brought up after CPU 0 succeeded: {e}");
    }
    irq::enable_passthrough(cpu);
    smp::mark_online(cpu);
    sched::schedule(cpu)
}

/// The self-test the host tool may ask for: a load from 512 GiB, beyond
/// EL2's 39-bit address space, takes a translation fault at EL2, which must
/// end in the epitaph and exit status 70.
fn selftest_el2_fault() -> ! {
    log!("self-test: taking a deliberate EL2 data abort");
    const UNMAPPED: usize = 1 << 39;
    // SAFETY: deliberately faulting: the load never completes; the EL2
    // vector turns it into the panic epitaph and stops the machine.
    let v = unsafe { (UNMAPPED as *const u64).read_volatile() };
    panic!("self-test: the load from {UNMAPPED:#x} did not fault (read {v:#x})");
}

/// A `'static` slice over the host DTB, sized by its header.
///
/// # Safety
/// `addr` must be the address the loader passed in x0 (or 0).
unsafe fn host_dtb(addr: usize) -> Option<&'static [u8]> {
    if addr == 0 || !addr.is_multiple_of(8) {
        return None;
    }
    // SAFETY: per the caller, `addr` is the DTB in mapped RAM; its header is
    // 40 bytes long, and `totalsize` (big-endian at offset 4) bounds the blob.
    unsafe {
        let header = core::slice::from_raw_parts(addr as *const u8, 8);
        if header[..4] != [0xd0, 0x0d, 0xfe, 0xed] {
            return None;
        }
        let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if !(40..=(16 << 20)).contains(&size) {
            return None;
        }
        Some(core::slice::from_raw_parts(addr as *const u8, size))
    }
}

/// Asks the firmware once which Spectre workarounds it implements, so guests
/// get the same answers (DESIGN.md: never advertise what firmware lacks).
fn probe_firmware(conduit: Conduit) -> FirmwareFeatures {
    let call = |args: [u64; 4]| firmware::call(conduit, args)[0] as i64;
    // PSCI_FEATURES(SMCCC_VERSION) tells whether SMCCC_VERSION exists at all;
    // an unknown SMC to firmware that lacks it could be undefined.
    let has_version = call([
        u64::from(smccc::PSCI_FEATURES),
        u64::from(smccc::SMCCC_VERSION),
        0,
        0,
    ]) == smccc::SUCCESS;
    if !has_version || call([u64::from(smccc::SMCCC_VERSION), 0, 0, 0]) < 0x1_0001 {
        return FirmwareFeatures::NONE;
    }
    let ask = |wa: u32| {
        WorkaroundState::from_firmware(
            firmware::call(
                conduit,
                [u64::from(smccc::SMCCC_ARCH_FEATURES), u64::from(wa), 0, 0],
            )[0],
        )
    };
    FirmwareFeatures {
        workaround_1: ask(smccc::SMCCC_ARCH_WORKAROUND_1),
        workaround_2: ask(smccc::SMCCC_ARCH_WORKAROUND_2),
        workaround_3: ask(smccc::SMCCC_ARCH_WORKAROUND_3),
    }
}

/// EL2 configuration common to every guest.
fn configure_el2() {
    // PMU counters all stay with EL1/EL0 (HPMN = PMCR_EL0.N); no debug traps.
    let hpmn = (sysreg::pmcr_el0() >> 11) & 0x1f;
    // SAFETY: MDCR_EL2 only controls traps of guest debug/PMU accesses.
    unsafe { sysreg::set_mdcr_el2(hpmn) };
    let pfr0 = sysreg::id_aa64pfr0_el1();
    let pfr1 = sysreg::id_aa64pfr1_el1();
    // The largest vector lengths the CPU offers (LEN saturates to them).
    if (pfr0 >> 32) & 0xf != 0 {
        // SAFETY: ZCR_EL2 exists (SVE is implemented) and only caps guest
        // vector length.
        unsafe { sysreg::set_zcr_el2(0x1ff) };
    }
    if (pfr1 >> 24) & 0xf != 0 {
        // SAFETY: SMCR_EL2 exists (SME is implemented) and only caps the
        // guest's streaming vector length.
        unsafe { sysreg::set_smcr_el2(0x1ff) };
    }
    // SAFETY: CPTR_EL2 only decides which guest FP/SIMD/SVE/SME accesses
    // trap; `sched` refines it per vCPU before any guest runs.
    unsafe { sysreg::set_cptr_el2(cptr_for_guests()) };
    // SAFETY: EL1 may read the physical counter and use the EL1 physical
    // timer directly; this changes no EL2 behaviour.
    unsafe { sysreg::set_cnthctl_el2(0b11) };
    sysreg::set_cntvoff_el2(0);
    sysreg::set_vpidr_el2(sysreg::midr_el1());
    // Pointer authentication, where the CPU has it, is the guest's too:
    // neither the instructions (API) nor the key registers (APK) trap; the
    // keys are switched with the other EL1 registers when vCPUs share a CPU.
    let hcr = if has_pauth() {
        HCR_GUEST | HCR_TID3 | HCR_APK | HCR_API
    } else {
        HCR_GUEST | HCR_TID3
    };
    // SAFETY: these bits only change how EL1/EL0 execute and where their
    // exceptions go; EL2's own translation and vectors are unaffected.
    unsafe { sysreg::set_hcr_el2(hcr) };
    stratum_arch::barrier::isb();
}

/// Whether the CPU has pointer authentication (and so its key registers).
fn has_pauth() -> bool {
    let isar1 = sysreg::id_aa64isar1_el1();
    let isar2 = sysreg::id_aa64isar2_el1();
    (isar1 >> 4) & 0xff != 0 // APA, API
        || (isar1 >> 24) & 0xff != 0 // GPA, GPI
        || (isar2 >> 8) & 0xff != 0 // GPA3, APA3
}

/// `CPTR_EL2` for a vCPU that has its CPU to itself: FP/SIMD, SVE and SME
/// belong to the guest (EL2 is built soft-float and never touches them).
/// With E2H = 0, bits 13, 9 and 7:0 are RES1; TZ (8) and TSM (12) trap SVE
/// and SME, and are RES1 when those features are absent.
fn cptr_for_guests() -> u64 {
    let has_sve = (sysreg::id_aa64pfr0_el1() >> 32) & 0xf != 0;
    let has_sme = (sysreg::id_aa64pfr1_el1() >> 24) & 0xf != 0;
    let mut cptr: u64 = 0x33ff;
    if has_sve {
        cptr &= !(1 << 8);
    }
    if has_sme {
        cptr &= !(1 << 12);
    }
    cptr
}

fn cpu_name(midr: u64) -> &'static str {
    let implementer = (midr >> 24) & 0xff;
    let part = (midr >> 4) & 0xfff;
    match (implementer, part) {
        (0x41, 0xd03) => "Cortex-A53",
        (0x41, 0xd07) => "Cortex-A57",
        (0x41, 0xd08) => "Cortex-A72",
        (0x41, 0xd0b) => "Cortex-A76",
        (0x41, 0xd0c) => "Neoverse-N1",
        (0x41, 0xd40) => "Neoverse-V1",
        (0x41, 0xd49) => "Neoverse-N2",
        (0, _) => "QEMU max",
        _ => "unknown",
    }
}

fn banner(platform: &Platform, bundle: &Bundle<'_>) {
    let ram: u64 = platform.memory().iter().map(|m| m.size).sum();
    let midr = sysreg::midr_el1();
    log!("Stratum {VERSION} hypervisor at EL2");
    log!(
        "{} CPU(s) ({}, MIDR {midr:#010x}), {} MiB RAM, GICv{}, console PL011 at {:#x}, PSCI via {}",
        platform.cpus().len(),
        cpu_name(midr),
        ram >> 20,
        match platform.gic.version {
            stratum_core::platform::GicVersion::V2 => 2,
            stratum_core::platform::GicVersion::V3 => 3,
        },
        platform.uart.map_or(0, |u| u.regs.base.0),
        match platform.psci.map(|p| p.conduit) {
            Some(PsciConduit::Smc) => "SMC",
            Some(PsciConduit::Hvc) => "HVC",
            None => "nothing (no PSCI node)",
        }
    );
    log!(
        "boot bundle: {} VM(s), {} KiB",
        bundle.vm_count(),
        bundle.bytes().len() >> 10
    );
}
