//! The Stratum EL2 binary: boot, VM creation, and the exit path's glue.
//!
//! Boot: the entry code in `stratum_arch::head` checks EL2, turns on EL2's
//! MMU and vectors and calls [`boot_primary`] with the host DTB. That parses the host device tree,
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
mod pv;
mod sched;
mod smp;
mod sync;
mod system;
mod telemetry;
mod vm;

use stratum_abi::bundle::{
    Bundle, FLAG_CONSOLE_COLOR, FLAG_QEMU_GIC, FLAG_SELFTEST_EL2_FAULT, FLAG_SEMIHOSTING_EXIT,
};
use stratum_abi::exit as exit_status;
use stratum_abi::sysimg;
use stratum_arch::firmware::Conduit;
use stratum_arch::{id, sysreg};
use stratum_core::addr::Pa;
use stratum_core::bootplan::{self, BootPlan, HostSummary, Limits, PhysRange, Reserved, VmPlan};
use stratum_core::fdt::Fdt;
use stratum_core::inject::PstateFeatures;
use stratum_core::platform::{Platform, PsciConduit};
use stratum_core::psci::FirmwareFeatures;
use stratum_core::stage2;

use crate::system::Settings;
use crate::vm::Vm;
use stratum_core::tablepool::TablePool;

/// Stratum's version, printed in the banner.
const VERSION: &str = env!("CARGO_PKG_VERSION");

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Why no boot bundle could be had.
enum BundleSource {
    /// Neither the system image nor the loader's initrd carries one.
    Missing,
    /// The image header's bundle fields are inconsistent.
    BadSystemImage(stratum_abi::sysimg::SysImgError),
    /// A bundle was found but does not parse.
    Unusable(stratum_abi::bundle::BundleError),
}

/// The boot bundle: the one inside this system image (`stratum build`) if
/// its header names one, else the "initrd" the loader handed us; with
/// `true` when it came from the image.
fn find_bundle(
    initrd: Option<stratum_core::platform::PhysRegion>,
) -> Result<(Bundle<'static>, bool), BundleSource> {
    let start = core::ptr::addr_of!(__image_start) as usize;
    let footprint = core::ptr::addr_of!(__image_end) as usize - start;
    // SAFETY: the first 64 bytes of the image are its header, mapped and
    // never written after the entry code relocated it.
    let header = unsafe { core::slice::from_raw_parts(start as *const u8, sysimg::HEADER_SIZE) };
    let embedded = sysimg::Header::parse(header)
        .and_then(|h| h.bundle(footprint as u64))
        .map_err(BundleSource::BadSystemImage)?;
    let (base, len, inside) = match (embedded, initrd) {
        (Some((offset, size)), _) => (start as u64 + offset, size, true),
        (None, Some(r)) => (r.base.0, r.size, false),
        (None, None) => return Err(BundleSource::Missing),
    };
    let len = usize::try_from(len).map_err(|_| BundleSource::Missing)?;
    // SAFETY: the bundle lies in RAM, which EL2 maps: inside this image's
    // footprint as its header declares (loaders keep all of `image_size`
    // free and load the whole file), or where the loader put the initrd.
    // Nothing writes it after boot, so a 'static shared slice stays valid.
    let bytes = unsafe { core::slice::from_raw_parts(base as *const u8, len) };
    Bundle::parse(bytes)
        .map(|b| (b, inside))
        .map_err(BundleSource::Unusable)
}

/// Primary CPU entry from `stratum_arch::head` (MMU on, on CPU 0's stack).
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
    // SAFETY: the boot CPU, once, before any other CPU runs; the map from
    // the DT keeps the image (checked), the DT and stack (in RAM) Normal and
    // every device Device, as the boot map had them or stricter.
    let mapped = unsafe {
        stratum_arch::head::switch_el2_map(|l1, l2, l2_base| {
            let start = core::ptr::addr_of!(__image_start) as u64;
            let end = core::ptr::addr_of!(__image_end) as u64;
            stratum_core::el2map::plan(
                platform.memory(),
                platform.reserved(),
                start..end,
                l1,
                l2,
                l2_base,
            )
        })
    };
    let uart = platform.uart.map(|u| (u.kind, u.regs.base.0 as usize));
    if let Some((kind, base)) = uart {
        console::init(kind, base);
    }
    if let Err(e) = mapped {
        log!("error: EL2's map of this board: {e}");
        system::shutdown(exit_status::BAD_BOOT_INPUT);
    }
    let conduit = platform.psci.map(|p| match p.conduit {
        PsciConduit::Smc => Conduit::Smc,
        PsciConduit::Hvc => Conduit::Hvc,
    });

    let (bundle, inside) = match find_bundle(platform.initrd) {
        Ok(found) => found,
        Err(BundleSource::Unusable(e)) => {
            log!("error: the boot bundle is unusable: {e}");
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
        Err(BundleSource::BadSystemImage(e)) => {
            log!("error: the system image's header is inconsistent: {e}");
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
        Err(BundleSource::Missing) => {
            log!(
                "error: no boot bundle: boot a system image (`stratum build`) or load one as the initrd"
            );
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    };
    let firmware = conduit.map_or(FirmwareFeatures::NONE, |c| {
        bootplan::firmware::probe(|args| stratum_arch::firmware::call(c, args)[0])
    });
    system::set_settings(Settings {
        conduit,
        semihosting: bundle.flags() & FLAG_SEMIHOSTING_EXIT != 0,
        firmware,
        uart,
        pstate_features: PstateFeatures::from_id_regs(
            sysreg::id_aa64pfr1_el1(),
            sysreg::id_aa64mmfr1_el1(),
        ),
        debug_limits: stratum_arch::traps::debug_limits(),
    });
    irq::set_forward_by_eoi(
        bundle.flags() & FLAG_QEMU_GIC != 0
            && platform.gic.version == stratum_core::platform::GicVersion::V2,
    );
    telemetry::init();
    banner(&platform, &bundle, inside);
    if bundle.flags() & FLAG_SELFTEST_EL2_FAULT != 0 {
        selftest_el2_fault();
    }

    let plan = plan_boot(&bundle, &platform, dtb, fdt.total_size());
    let mut pool = mem::table_pool();

    stratum_arch::traps::configure_for_guests();
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
        plan.free_for_guests() >> 20
    );
    // SAFETY: VTCR_EL2 only shapes stage-2 translation of guests, none of
    // which runs yet.
    unsafe { sysreg::set_vtcr_el2(s2cfg.vtcr) };
    *SECONDARY_BOOT.lock() = Some(SecondaryBoot {
        gic: platform.gic,
        vtcr: s2cfg.vtcr,
    });

    for channel in plan.channels() {
        zero(channel.carve_out());
        log!("{channel}");
    }
    for vm_plan in plan.vms() {
        create_vm(vm_plan, &plan, &bundle, &platform, s2cfg, &mut pool);
        for (vcpu, cpu) in vm_plan.placements() {
            let placed = sched::place(vcpu, cpu);
            assert!(placed, "the boot plan left room in every run queue");
        }
        console::add_vm(vm_plan.id, vm_plan.name());
    }
    for vm_plan in plan.vms() {
        system::set_time_shared(vm_plan.id, vm_plan.time_shared);
    }
    check_isolation(&plan, &pool);
    pv::init(&bundle);
    let (tables_used, tables_free) = pool.usage();
    system::set_mem_info([tables_used, plan.guest_ram_bytes(), tables_free]);
    system::set_stop_policy(plan.stop_policy());
    console::set_color(bundle.flags() & FLAG_CONSOLE_COLOR != 0);
    irq::enable_passthrough(0);
    sched::configure(
        plan.slice_ticks(stratum_arch::timer::frequency()),
        stratum_arch::traps::has_pauth(),
        stratum_arch::traps::cptr_for_guests(),
    );
    let cpus_needed = plan.cpus_needed();
    if cpus_needed > 1 {
        let conduit = conduit.expect("the boot plan checked that PSCI starts secondary CPUs");
        let online = smp::start_secondaries(conduit, plan.host_mpidrs(), cpus_needed);
        log!("{online} CPUs online");
        if online < cpus_needed {
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    }
    sched::schedule(0)
}

/// The boot plan for `bundle` on `platform`, with the hypervisor's image,
/// the host DTB (`dtb_size` bytes at `dtb`) and the bundle kept out of
/// guests' reach; or the machine stops with the plan's error.
fn plan_boot(
    bundle: &Bundle<'static>,
    platform: &Platform,
    dtb: usize,
    dtb_size: usize,
) -> BootPlan<'static> {
    let span = |start: u64, len: usize| PhysRange {
        start: Pa(start),
        end: Pa(start + len as u64),
    };
    let reserved = Reserved {
        image: PhysRange {
            start: Pa(core::ptr::addr_of!(__image_start) as u64),
            end: Pa(core::ptr::addr_of!(__image_end) as u64),
        },
        dtb: span(dtb as u64, dtb_size),
        bundle: span(bundle.bytes().as_ptr() as u64, bundle.bytes().len()),
    };
    let limits = Limits {
        vms: system::MAX_VMS,
        vcpus_per_vm: vm::MAX_VCPUS,
        cpus: stratum_arch::head::MAX_CPUS,
    };
    match bootplan::plan(bundle, platform, &reserved, &limits) {
        Ok(plan) => plan,
        Err(e) => {
            log!("error: {e}");
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    }
}

/// Zeroes a carve-out of host RAM and cleans it to the point of coherency
/// (guests map it before their caches are on).
fn zero(range: PhysRange) {
    let len = usize::try_from(range.size()).expect("carve-outs fit in the address space");
    let start = range.start.0 as usize;
    // SAFETY: the boot plan carved the range out of free host RAM (never the
    // hypervisor's image, the DTB or the bundle), EL2 maps it identity as
    // normal memory, and no guest maps it yet.
    unsafe { core::ptr::write_bytes(start as *mut u8, 0, len) };
    stratum_arch::cache::clean_inval_dcache_range(start, len);
}

/// Walks every VM's stage-2 table and stops the machine if one reaches
/// another VM's RAM (the service VM included: it never maps a frontend's
/// memory); logs the check. Shared channels are their own carve-outs, not
/// a VM's RAM.
fn check_isolation(plan: &BootPlan<'static>, pool: &TablePool) {
    let vms = plan.vms().count();
    let mut ranges = [(0u64, 0u64); stratum_abi::bundle::MAX_VMS];
    for (id, r) in ranges.iter_mut().enumerate().take(vms) {
        if let Some(ram) = vm::ram_of(id) {
            *r = (ram.pa(), ram.size());
        }
    }
    for id in 0..vms {
        let others: [(u64, u64); stratum_abi::bundle::MAX_VMS] =
            core::array::from_fn(|k| if k == id { (0, 0) } else { ranges[k] });
        let hit = system::with_vm(id, |vm| vm.stage2.first_reaching(pool, &others[..vms]));
        if let Some((ipa, pa)) = hit {
            log!("error: vm{id}'s stage 2 maps IPA {ipa} to PA {pa}, another VM's RAM");
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    }
    log!("stage 2 isolation: checked {vms} VM(s), none maps another's RAM");
}

/// Creates, installs and loads the VM `vm_plan` describes, or stops the
/// machine with a message saying why it cannot be.
fn create_vm(
    vm_plan: &VmPlan<'static>,
    plan: &BootPlan<'static>,
    bundle: &Bundle<'static>,
    platform: &Platform,
    s2cfg: stage2::Stage2Config,
    pool: &mut TablePool,
) {
    let (id, name) = (vm_plan.id, vm_plan.name());
    let created = system::install_vm(id, || {
        Vm::create(
            id,
            vm_plan.image,
            &platform.gic,
            s2cfg,
            vm_plan.ram_pa,
            pool,
            vm::Wiring {
                stage2: plan.stage2_regions(id),
                virtio: (0..bundle.virtio_count())
                    .filter_map(|i| bundle.virtio(i))
                    .filter(|r| r.vm as usize == id),
                entropy: stratum_core::trng::fold_seed(
                    bundle.system().entropy,
                    platform.rng_seed.unwrap_or(&[]),
                ),
            },
        )
    });
    if let Err(e) = created {
        log!("error: VM '{name}' cannot be created: {e}");
        system::shutdown(exit_status::BAD_BOOT_INPUT);
    }
    system::with_vm(id, |vm| {
        wire_channels_and_devices(vm, plan);
        log!(
            "vm{id} '{name}': {} vCPU, {} MiB at IPA {} (PA {}{}), kernel ({}) at {}, entry {}",
            vm_plan.vcpu_count(),
            vm.machine.ram.size >> 20,
            vm.machine.ram.start,
            vm.ram_pa,
            if vm_plan.image.identity {
                ", identity-mapped"
            } else {
                ""
            },
            vm_plan.kernel_kind(),
            vm.machine.layout.kernel.start,
            vm.machine.layout.entry,
        );
        log!(
            "vm{id} stage 2: {} x 1 GiB + {} x 2 MiB blocks + {} x 4 KiB pages, VMID {}; {} table pages in use",
            vm.map_stats.blocks_1g,
            vm.map_stats.blocks_2m,
            vm.map_stats.pages_4k,
            vm.vttbr >> 48,
            pool.used_pages()
        );
        // No CPU schedules yet: each picks its vCPUs up when it starts.
        if let Err(e) = vm.load() {
            log!("error: VM '{name}' cannot be loaded: {e}");
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    });
}

/// Records VM `vm`'s channel ends (peers, doorbells, device-tree view) and
/// passthrough devices (their SPIs routed as the plan says), as planned.
fn wire_channels_and_devices(vm: &mut Vm, plan: &BootPlan<'static>) {
    for end in plan.channel_ends(vm.id) {
        vm.channels[end.slot] = vm::ChannelPort {
            peer_vm: end.peer_vm,
            peer_spi: end.peer_spi,
        };
        vm.dt_channels[end.slot] = end.guest;
    }
    vm.channel_count = plan.channel_slots(vm.id);
    for d in plan.devices(vm.id) {
        vm.devices[vm.device_count] = d;
        vm.device_count += 1;
        for intid in d.intids() {
            irq::add_passthrough(intid, vm.id, d.route_cpu);
        }
    }
    match vm.machine.drop_virtio_for(&vm.devices[..vm.device_count]) {
        Ok(None) => {}
        Ok(Some((name, taken))) if taken & vm.virtio.occupied() != 0 => {
            log!(
                "error: VM '{}': passthrough device '{name}' takes virtio-mmio transport {} (its window or SPI), which carries one of its virtio devices",
                vm.image.name,
                (taken & vm.virtio.occupied()).trailing_zeros()
            );
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
        Ok(Some((name, taken))) => log!(
            "vm{} '{}': passthrough device '{name}' takes virtio-mmio transport(s) {:#010x} (their window or SPIs); {} of 32 left",
            vm.id,
            vm.image.name,
            taken,
            32 - taken.count_ones()
        ),
        Err(e) => {
            log!("error: VM '{}' cannot be created: {e}", vm.image.name);
            system::shutdown(exit_status::BAD_BOOT_INPUT);
        }
    }
}

/// What secondary CPUs need from the boot CPU's discoveries.
#[derive(Clone, Copy)]
struct SecondaryBoot {
    gic: stratum_core::platform::GicInfo,
    vtcr: u64,
}

static SECONDARY_BOOT: sync::SpinLock<Option<SecondaryBoot>> = sync::SpinLock::new(None);

/// Secondary CPU entry from `stratum_arch::head` (MMU on, own stack),
/// started by `smp::start_secondaries`.
#[unsafe(no_mangle)]
extern "C" fn boot_secondary(cpu: usize) -> ! {
    let boot = SECONDARY_BOOT
        .lock()
        .expect("the boot CPU records what secondaries need before starting them");
    stratum_arch::traps::configure_for_guests();
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
    // 40 bytes long, so its first 8 (magic and `totalsize`) can be read, and
    // `host_dtb_size` accepts only a `totalsize` that bounds the blob.
    unsafe {
        let header = (addr as *const [u8; 8]).read();
        let size = bootplan::host_dtb_size(header)?;
        Some(core::slice::from_raw_parts(addr as *const u8, size))
    }
}

fn banner(platform: &Platform, bundle: &Bundle<'_>, inside: bool) {
    let midr = sysreg::midr_el1();
    let image = core::ptr::addr_of!(__image_start) as usize;
    log!("Stratum {VERSION} hypervisor at EL2, image at {image:#x}");
    log!(
        "{}",
        HostSummary {
            platform,
            midr,
            cpu_name: id::cpu_name(midr),
        }
    );
    log!(
        "boot bundle: {} VM(s), {} KiB at {:#x}, {}",
        bundle.vm_count(),
        bundle.bytes().len() >> 10,
        bundle.bytes().as_ptr() as usize,
        if inside {
            "inside the system image"
        } else {
            "the loader's initrd"
        }
    );
}
