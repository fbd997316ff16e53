//! Tests of the boot plan: hand-built host device trees and bundles, one
//! test per decision and per error, and a property test of the memory
//! invariants.

use stratum_abi::bundle::{self, Channel, Device, SystemInfo};

use super::*;
use crate::fdt::{Fdt, FdtWriter};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const RAM_BASE: u64 = 0x4000_0000;

/// What a hand-built host device tree holds.
#[derive(Clone)]
struct Host {
    /// RAM banks as (base, size).
    banks: Vec<(u64, u64)>,
    cpus: u32,
    psci: bool,
    gic_base: u64,
    uart_base: u64,
    /// `/reserved-memory` regions as (base, size, no-map).
    reserved: Vec<(u64, u64, bool)>,
}

/// QEMU `virt` with 1 GiB and 4 CPUs.
fn virt() -> Host {
    Host {
        banks: vec![(RAM_BASE, GIB)],
        cpus: 4,
        psci: true,
        gic_base: 0x0800_0000,
        uart_base: 0x0900_0000,
        reserved: Vec::new(),
    }
}

fn cells64(v: u64) -> [u32; 2] {
    [(v >> 32) as u32, v as u32]
}

fn platform(host: &Host) -> Platform<'static> {
    let mut buf = vec![0u8; 8192];
    let mut w = FdtWriter::new(&mut buf).expect("room");
    let mut build = || -> Result<(), crate::fdt::FdtError> {
        w.begin_node("")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_u32("interrupt-parent", 1)?;
        for (i, &(base, size)) in host.banks.iter().enumerate() {
            w.begin_node(&format!("memory@{i:x}"))?;
            w.property_string("device_type", "memory")?;
            let reg = [cells64(base), cells64(size)].concat();
            w.property_cells("reg", &reg)?;
            w.end_node()?;
        }
        if !host.reserved.is_empty() {
            w.begin_node("reserved-memory")?;
            w.property_u32("#address-cells", 2)?;
            w.property_u32("#size-cells", 2)?;
            w.property_empty("ranges")?;
            for &(base, size, no_map) in &host.reserved {
                w.begin_node(&format!("r@{base:x}"))?;
                w.property_cells("reg", &[cells64(base), cells64(size)].concat())?;
                if no_map {
                    w.property_empty("no-map")?;
                }
                w.end_node()?;
            }
            w.end_node()?;
        }
        w.begin_node("cpus")?;
        w.property_u32("#address-cells", 1)?;
        w.property_u32("#size-cells", 0)?;
        for i in 0..host.cpus {
            w.begin_node(&format!("cpu@{i}"))?;
            w.property_string("device_type", "cpu")?;
            w.property_u32("reg", i)?;
            w.property_string("enable-method", "psci")?;
            w.end_node()?;
        }
        w.end_node()?;
        w.begin_node("intc")?;
        w.property_string("compatible", "arm,gic-v3")?;
        w.property_empty("interrupt-controller")?;
        w.property_u32("#interrupt-cells", 3)?;
        w.property_u32("phandle", 1)?;
        let reg = [
            cells64(host.gic_base),
            cells64(0x1_0000),
            cells64(host.gic_base + 0xa_0000),
            cells64(0xf6_0000),
        ]
        .concat();
        w.property_cells("reg", &reg)?;
        w.property_cells("interrupts", &[1, 9, 4])?;
        w.end_node()?;
        w.begin_node("timer")?;
        w.property_string("compatible", "arm,armv8-timer")?;
        w.property_cells("interrupts", &[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4])?;
        w.end_node()?;
        w.begin_node("pl011")?;
        w.property_strings("compatible", &["arm,pl011", "arm,primecell"])?;
        let reg = [cells64(host.uart_base), cells64(0x1000)].concat();
        w.property_cells("reg", &reg)?;
        w.property_cells("interrupts", &[0, 1, 4])?;
        w.end_node()?;
        if host.psci {
            w.begin_node("psci")?;
            w.property_strings("compatible", &["arm,psci-1.0", "arm,psci-0.2"])?;
            w.property_string("method", "smc")?;
            w.end_node()?;
        }
        w.end_node()
    };
    build().expect("room");
    let len = w.finish().expect("room");
    buf.truncate(len);
    let blob: &'static [u8] = Vec::leak(buf);
    Platform::from_fdt(&Fdt::new(blob).expect("valid")).expect("platform")
}

const KERNEL: [u8; 4096] = [0x1f; 4096];

/// A VM with a 4 KiB raw kernel, `mem` bytes of RAM at 0x4000_0000 and its
/// vCPUs on `cpus`.
fn vm(name: &'static str, mem: u64, cpus: &[u8], pinned: bool) -> VmImage<'static> {
    let mut pcpus = [0; 8];
    pcpus[..cpus.len()].copy_from_slice(cpus);
    VmImage {
        name,
        vcpus: u32::try_from(cpus.len()).expect("few"),
        kernel_kind: KernelKind::Raw,
        mem_base: RAM_BASE,
        mem_size: mem,
        kernel: &KERNEL,
        kernel_load_offset: 0x8_0000,
        entry_offset: 0x8_0000,
        kernel_footprint: 0x1000,
        initrd: None,
        dt_fragment: None,
        cmdline: "",
        pinned,
        pcpus,
        on_crash: OnCrash::Stop,
        identity: false,
        firmware: false,
        service: false,
    }
}

fn end(vm: u32, id: u32, ipa: u64) -> ChannelEnd {
    ChannelEnd {
        vm,
        id,
        ipa,
        spi: bundle::DOORBELL_SPI_BASE + id,
    }
}

fn rtc(vm: u32, base: u64) -> Device<'static> {
    Device {
        vm,
        name: "pl031",
        compatible: b"arm,pl031\0arm,primecell\0",
        base,
        size: 0x1000,
        irqs: [2, 0, 0, 0],
        irq_count: 1,
    }
}

fn bundle_of(
    system: SystemInfo,
    vms: &[VmImage<'_>],
    devices: &[Device<'_>],
    channels: &[Channel<'_>],
) -> Bundle<'static> {
    let bytes: &'static [u8] = Vec::leak(bundle::encode(0, system, vms, devices, channels));
    Bundle::parse(bytes).expect("a valid bundle")
}

fn bundle_with(vms: &[VmImage<'_>]) -> Bundle<'static> {
    bundle_of(SystemInfo::default(), vms, &[], &[])
}

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange {
        start: Pa(start),
        end: Pa(end),
    }
}

/// QEMU `virt` as the hypervisor finds it: the DTB at the start of RAM, the
/// hypervisor at 0x4020_0000, the bundle after it.
fn reserved() -> Reserved {
    Reserved {
        dtb: range(0x4000_0000, 0x4010_0000),
        image: range(0x4020_0000, 0x4060_0000),
        bundle: range(0x4800_0000, 0x4810_0000),
    }
}

const LIMITS: Limits = Limits {
    vms: 8,
    vcpus_per_vm: 8,
    cpus: 8,
};

fn plan_on(host: &Host, b: &Bundle<'static>) -> Result<BootPlan<'static>, PlanError<'static>> {
    plan(b, &platform(host), &reserved(), &LIMITS)
}

/// The demo's shape: "linux" pinned on CPUs 0 and 1, "rtc" and "tick"
/// sharing CPU 2, a channel between those two, the RTC passed to "rtc".
fn trio() -> Bundle<'static> {
    let linux = VmImage {
        on_crash: OnCrash::Restart,
        ..vm("linux", 256 * MIB, &[0, 1], true)
    };
    let pp = Channel {
        name: "pp",
        size: 8 << 10,
        ends: [end(1, 0, 0x0b00_0000), end(2, 0, 0x0b10_0000)],
    };
    let system = SystemInfo {
        slice_us: 5_000,
        stop: StopPolicy::Any,
        ..SystemInfo::default()
    };
    bundle_of(
        system,
        &[
            linux,
            vm("rtc", 32 * MIB, &[2], false),
            vm("tick", 32 * MIB, &[2], false),
        ],
        &[rtc(1, 0x0901_0000)],
        &[pp],
    )
}

#[test]
fn memory_is_carved_top_down_channels_first() {
    let p = plan_on(&virt(), &trio()).expect("plan");
    let reserved_bytes = MIB + 4 * MIB + MIB;
    assert_eq!(p.free_for_guests(), GIB - reserved_bytes);
    // The channel takes the top 8 KiB of RAM; each VM then the highest
    // 2 MiB-aligned block that fits below what is taken.
    let carve: Vec<_> = p.carve_outs().collect();
    assert_eq!(
        carve,
        [
            (CarveOut::Channel(0), range(0x7fff_e000, 0x8000_0000)),
            (CarveOut::Vm(0), range(0x6fe0_0000, 0x7fe0_0000)),
            (CarveOut::Vm(1), range(0x6de0_0000, 0x6fe0_0000)),
            (CarveOut::Vm(2), range(0x6be0_0000, 0x6de0_0000)),
        ]
    );
    assert_eq!(p.guest_ram_bytes(), 320 * MIB);
    assert_eq!(
        p.ram_left().free_bytes(),
        p.free_for_guests() - 320 * MIB - 8 * 1024
    );
}

#[test]
fn reserved_memory_goes_to_no_vm() {
    // Firmware at the top of RAM (no-map) and a shared buffer below it.
    let host = Host {
        reserved: vec![(0x7ff0_0000, MIB, true), (0x7f00_0000, 2 * MIB, false)],
        ..virt()
    };
    let p = plan_on(&host, &trio()).expect("plan");
    let reserved_bytes = MIB + 4 * MIB + MIB;
    assert_eq!(p.free_for_guests(), GIB - reserved_bytes - 3 * MIB);
    for (what, r) in p.carve_outs() {
        for (base, size, _) in &host.reserved {
            let reserved = range(*base, base + size);
            assert!(
                !r.overlaps(&reserved),
                "{what:?} {r:?} takes reserved {reserved:?}"
            );
        }
    }
}

#[test]
fn an_identity_vm_gets_its_own_range_and_the_rest_go_around_it() {
    // "svc" asks for the top 256 MiB, where the channel and "linux" would
    // otherwise go: they are carved below it instead.
    let svc = identity("svc", 0x7000_0000, 256 * MIB);
    let linux = vm("linux", 256 * MIB, &[1], true);
    let pp = Channel {
        name: "pp",
        size: 8 << 10,
        ends: [end(0, 0, 0x0b00_0000), end(1, 0, 0x0b00_0000)],
    };
    let b = bundle_of(SystemInfo::default(), &[svc, linux], &[], &[pp]);
    let p = plan_on(&virt(), &b).expect("plan");
    let carve: Vec<_> = p.carve_outs().collect();
    assert_eq!(
        carve,
        [
            (CarveOut::Channel(0), range(0x6fff_e000, 0x7000_0000)),
            (CarveOut::Vm(0), range(0x7000_0000, 0x8000_0000)),
            (CarveOut::Vm(1), range(0x5fe0_0000, 0x6fe0_0000)),
        ]
    );
    let svc = p.vm(0).expect("svc");
    assert_eq!(svc.ram_pa.0, svc.ram.start.0, "guest-physical = physical");
    assert_ne!(p.vm(1).map(|v| v.ram_pa.0), Some(RAM_BASE), "linux is not");
    // A VM that is not identity-mapped may ask for the same guest-physical
    // base: it gets other host RAM.
    let twin = VmImage {
        identity: false,
        ..identity("twin", 0x7000_0000, 256 * MIB)
    };
    let b = bundle_with(&[identity("svc", 0x7000_0000, 256 * MIB), twin]);
    let p = plan_on(&virt(), &b).expect("plan");
    assert_eq!(
        p.vm(1).map(|v| (v.ram.start.0, v.ram_pa.0)),
        Some((0x7000_0000, 0x6000_0000))
    );
}

#[test]
fn vms_carry_their_ram_cpus_and_policies() {
    let p = plan_on(&virt(), &trio()).expect("plan");
    assert_eq!(p.vm_count(), 3);
    let linux = p.vm(0).expect("vm0");
    assert_eq!(linux.name(), "linux");
    assert_eq!(
        linux.ram,
        IpaRange::new(Ipa(RAM_BASE), 256 * MIB).expect("ok")
    );
    assert_eq!(linux.ram_pa, Pa(0x6fe0_0000));
    assert_eq!((linux.pcpu(0), linux.pcpu(1), linux.pcpu(2)), (0, 1, 0));
    assert!(linux.restart_on_crash());
    assert!(!linux.time_shared);
    assert_eq!(linux.kernel_kind(), "raw binary");
    let rtc = p.vm(1).expect("vm1");
    assert!(!rtc.restart_on_crash());
    assert!(rtc.time_shared && p.vm(2).expect("vm2").time_shared);
    assert!(p.vm(3).is_none());
    assert_eq!(p.vms().map(|v| v.id).collect::<Vec<_>>(), [0, 1, 2]);
}

#[test]
fn cpus_get_run_queues_in_bundle_order() {
    let p = plan_on(&virt(), &trio()).expect("plan");
    let r = |vm, vcpu| VcpuRef { vm, vcpu };
    assert_eq!(p.queue(0), [r(0, 0)]);
    assert_eq!(p.queue(1), [r(0, 1)]);
    assert_eq!(p.queue(2), [r(1, 0), r(2, 0)]);
    assert_eq!(p.queue(3), []);
    assert_eq!(p.queue(99), []);
    assert_eq!(p.cpus_needed(), 3);
    assert_eq!(p.host_mpidrs(), [0, 1, 2, 3]);
    let placed: Vec<_> = p.vm(0).expect("vm0").placements().collect();
    assert_eq!(placed, [(r(0, 0), 0), (r(0, 1), 1)]);
}

#[test]
fn channel_ends_know_their_peer() {
    let p = plan_on(&virt(), &trio()).expect("plan");
    let ch = p.channels().next().expect("one channel");
    assert_eq!(
        ch.to_string(),
        "channel 'pp': 8 KiB at PA 0x7fffe000 between vm1 and vm2"
    );
    let ends: Vec<_> = p.channel_ends(2).collect();
    assert_eq!(
        ends,
        [ChannelEndPlan {
            slot: 0,
            peer_vm: 1,
            peer_spi: 48,
            guest: GuestChannel {
                id: 0,
                name: "pp",
                peer: "rtc",
                shm: IpaRange::new(Ipa(0x0b10_0000), 8 << 10).expect("ok"),
                spi: 48,
            },
            pa: Pa(0x7fff_e000),
        }]
    );
    assert_eq!(p.channel_ends(1).next().map(|e| e.guest.peer), Some("tick"));
    assert_eq!(p.channel_ends(0).count(), 0);
    assert_eq!((p.channel_slots(0), p.channel_slots(1)), (0, 1));
}

#[test]
fn channel_slots_follow_the_highest_number() {
    // VM 0 has channel numbers 2 and 0 (in that bundle order): three slots.
    let chans = [
        Channel {
            name: "a",
            size: 4096,
            ends: [end(0, 2, 0x0b00_0000), end(1, 0, 0x0b00_0000)],
        },
        Channel {
            name: "b",
            size: 4096,
            ends: [end(1, 1, 0x0b20_0000), end(0, 0, 0x0b20_0000)],
        },
    ];
    let b = bundle_of(
        SystemInfo::default(),
        &[
            vm("x", 16 * MIB, &[0], false),
            vm("y", 16 * MIB, &[0], false),
        ],
        &[],
        &chans,
    );
    let p = plan_on(&virt(), &b).expect("plan");
    assert_eq!(p.channel_slots(0), 3);
    assert_eq!(p.channel_slots(1), 2);
    let slots: Vec<_> = p.channel_ends(0).map(|e| (e.slot, e.guest.name)).collect();
    assert_eq!(slots, [(2, "a"), (0, "b")]);
}

#[test]
fn devices_are_identity_mapped_and_routed_to_vcpu0() {
    let p = plan_on(&virt(), &trio()).expect("plan");
    let devs: Vec<_> = p.devices(1).collect();
    assert_eq!(devs.len(), 1);
    let d = devs[0];
    assert_eq!(
        (d.name, d.compatible),
        ("pl031", &b"arm,pl031\0arm,primecell\0"[..])
    );
    assert_eq!(d.regs, IpaRange::new(Ipa(0x0901_0000), 0x1000).expect("ok"));
    assert_eq!(d.spis(), [2]);
    assert_eq!(d.intids().collect::<Vec<_>>(), [34]);
    assert_eq!(d.route_cpu, 2);
    assert_eq!(p.devices(0).count(), 0);
}

#[test]
fn stage2_regions_are_channels_then_devices() {
    let p = plan_on(&virt(), &trio()).expect("plan");
    let regions: Vec<_> = p.stage2_regions(1).collect();
    assert_eq!(
        regions,
        [
            Stage2Region {
                ipa: IpaRange::new(Ipa(0x0b00_0000), 8 << 10).expect("ok"),
                pa: Pa(0x7fff_e000),
                kind: Mapping::RamRwx,
            },
            Stage2Region {
                ipa: IpaRange::new(Ipa(0x0901_0000), 0x1000).expect("ok"),
                pa: Pa(0x0901_0000),
                kind: Mapping::DeviceRw,
            },
        ]
    );
    assert_eq!(p.stage2_regions(0).count(), 0);
}

#[test]
fn system_settings() {
    let p = plan_on(&virt(), &trio()).expect("plan");
    assert!(p.stop_on_first());
    assert_eq!(p.stop_policy(), StopPolicy::Any);
    // 5 ms of a 62.5 MHz counter.
    assert_eq!(p.slice_ticks(62_500_000), 312_500);
    assert_eq!(p.slice_ticks(0), 1, "never a zero slice");
    assert_eq!(p.slice_ticks(u64::MAX), u64::MAX / 200);
    let p = plan_on(&virt(), &bundle_with(&[vm("a", 16 * MIB, &[0], true)])).expect("plan");
    assert!(!p.stop_on_first());
    assert_eq!(p.bundle().vm_count(), 1);
}

#[test]
fn a_1g_vm_gets_a_1g_aligned_carve_out() {
    let host = Host {
        banks: vec![(RAM_BASE, 2 * GIB)],
        ..virt()
    };
    let p = plan_on(&host, &bundle_with(&[vm("big", GIB, &[0], true)])).expect("plan");
    assert_eq!(p.vm(0).expect("vm0").ram_pa, Pa(0x8000_0000));
    // 128 MiB: 2 MiB alignment at the top.
    let p = plan_on(&host, &bundle_with(&[vm("small", 128 * MIB, &[0], true)])).expect("plan");
    assert_eq!(p.vm(0).expect("vm0").ram_pa, Pa(0xb800_0000));
}

#[test]
fn ram_in_several_banks() {
    // Two banks; the VM fits only in the lower, larger one.
    let host = Host {
        banks: vec![(RAM_BASE, GIB), (0x1_0000_0000, 16 * MIB)],
        ..virt()
    };
    let b = bundle_with(&[vm("a", 8 * MIB, &[0], true), vm("b", 64 * MIB, &[1], true)]);
    let p = plan_on(&host, &b).expect("plan");
    assert_eq!(p.vm(0).expect("vm0").ram_pa, Pa(0x1_0080_0000));
    assert_eq!(p.vm(1).expect("vm1").ram_pa, Pa(0x7c00_0000));
    assert_eq!(p.free_for_guests(), GIB + 16 * MIB - 6 * MIB);
}

/// One row per error: a name, the setup, the error, its message.
struct ErrorCase {
    name: &'static str,
    host: Host,
    bundle: Bundle<'static>,
    limits: Limits,
    reserved: Reserved,
    error: PlanError<'static>,
    message: &'static str,
}

fn case(name: &'static str, bundle: Bundle<'static>) -> ErrorCase {
    ErrorCase {
        name,
        host: virt(),
        bundle,
        limits: LIMITS,
        reserved: reserved(),
        error: PlanError::NoPsci { cpus: 0 },
        message: "",
    }
}

/// A 1-vCPU VM whose RAM, `mem` bytes at `base`, is identity-mapped.
fn identity(name: &'static str, base: u64, mem: u64) -> VmImage<'static> {
    VmImage {
        mem_base: base,
        identity: true,
        ..vm(name, mem, &[0], false)
    }
}

/// The error of an identity-mapped VM whose range `want` is not free.
fn identity_case(
    name: &'static str,
    vms: &[VmImage<'static>],
    want: (&'static str, u64, u64),
) -> ErrorCase {
    let (vm, base, size) = want;
    let message = format!(
        "VM '{vm}' is identity-mapped, but host RAM [{base:#x}, {:#x}) is not free \
         (the hypervisor, the host DT, the boot bundle or another VM holds some of it, \
         or it is not RAM)",
        base + size
    );
    ErrorCase {
        error: PlanError::IdentityRamTaken { vm, base, size },
        message: Box::leak(message.into_boxed_str()),
        ..case(name, bundle_with(vms))
    }
}

fn error_cases() -> Vec<ErrorCase> {
    let nine: Vec<_> = (0..9).map(|_| vm("v", 2 * MIB, &[0], false)).collect();
    let crowd: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|n| vm(n, 2 * MIB, &[0; 6], false))
        .collect();
    let chan = Channel {
        name: "big",
        size: 2 * MIB,
        ends: [end(0, 0, 0x0b00_0000), end(1, 0, 0x0b00_0000)],
    };
    let two = [vm("a", 2 * MIB, &[0], false), vm("b", 2 * MIB, &[0], false)];
    // Only 1 MiB of the first host's RAM is left free.
    let nearly_full = Reserved {
        image: range(RAM_BASE, RAM_BASE + GIB - MIB),
        ..reserved()
    };
    vec![
        ErrorCase {
            error: PlanError::TooManyVms { count: 9, max: 8 },
            message: "the bundle describes 9 VMs; this version runs 8",
            ..case(
                "more VMs than the bundle format's runnable limit",
                bundle_with(&nine),
            )
        },
        ErrorCase {
            limits: Limits { vms: 1, ..LIMITS },
            error: PlanError::TooManyVms { count: 2, max: 1 },
            message: "the bundle describes 2 VMs; this version runs 1",
            ..case("more VMs than this build runs", bundle_with(&two))
        },
        ErrorCase {
            reserved: nearly_full,
            error: PlanError::NoRamForChannel {
                channel: "big",
                size: 2 * MIB,
            },
            message: "no host RAM left for channel 'big' (2048 KiB)",
            ..case(
                "a channel larger than the free RAM",
                bundle_of(SystemInfo::default(), &two, &[], &[chan]),
            )
        },
        ErrorCase {
            host: Host {
                banks: vec![(RAM_BASE, GIB), (0x1_0000_0000, GIB)],
                ..virt()
            },
            error: PlanError::DeviceOwnedByHypervisor {
                vm: "a",
                device: "pl031",
                base: 0x1_0000_0000,
                size: 0x1000,
                owner: "RAM",
            },
            message: "VM 'a': device 'pl031' at 0x100000000 (+0x1000) overlaps RAM, \
                      which the hypervisor keeps",
            ..case(
                "a device in host RAM",
                bundle_of(SystemInfo::default(), &two, &[rtc(0, 0x1_0000_0000)], &[]),
            )
        },
        ErrorCase {
            host: Host {
                gic_base: 0x2f00_0000,
                ..virt()
            },
            error: PlanError::DeviceOwnedByHypervisor {
                vm: "b",
                device: "pl031",
                base: 0x2f0a_0000,
                size: 0x1000,
                owner: "the GIC",
            },
            message: "VM 'b': device 'pl031' at 0x2f0a0000 (+0x1000) overlaps the GIC, \
                      which the hypervisor keeps",
            ..case(
                "a device over a GIC redistributor",
                bundle_of(SystemInfo::default(), &two, &[rtc(1, 0x2f0a_0000)], &[]),
            )
        },
        ErrorCase {
            host: Host {
                uart_base: 0x1c09_0000,
                ..virt()
            },
            error: PlanError::DeviceOwnedByHypervisor {
                vm: "a",
                device: "pl031",
                base: 0x1c09_0000,
                size: 0x1000,
                owner: "the console UART",
            },
            message: "VM 'a': device 'pl031' at 0x1c090000 (+0x1000) overlaps the console UART, \
                      which the hypervisor keeps",
            ..case(
                "a device over the console UART",
                bundle_of(SystemInfo::default(), &two, &[rtc(0, 0x1c09_0000)], &[]),
            )
        },
        ErrorCase {
            limits: Limits {
                vcpus_per_vm: 2,
                ..LIMITS
            },
            error: PlanError::TooManyVcpus {
                vm: "wide",
                vcpus: 3,
                max: 2,
            },
            message: "VM 'wide' cannot be created: 3 vCPUs requested; \
                      this version runs 2 vCPU per VM",
            ..case(
                "more vCPUs than a VM may have",
                bundle_with(&[vm("wide", 2 * MIB, &[0, 1, 2], true)]),
            )
        },
        ErrorCase {
            error: PlanError::MisalignedRam { vm: "odd" },
            message: "VM 'odd' cannot be created: guest RAM must be 2 MiB aligned and sized",
            ..case(
                "guest RAM off a 2 MiB boundary",
                bundle_with(&[VmImage {
                    mem_base: RAM_BASE + MIB,
                    ..vm("odd", 2 * MIB, &[0], true)
                }]),
            )
        },
        ErrorCase {
            error: PlanError::MisalignedRam { vm: "odd" },
            message: "VM 'odd' cannot be created: guest RAM must be 2 MiB aligned and sized",
            ..case(
                "guest RAM not a multiple of 2 MiB",
                bundle_with(&[vm("odd", 3 * MIB, &[0], true)]),
            )
        },
        identity_case(
            "identity RAM over the boot bundle",
            &[identity("svc", 0x4700_0000, 32 * MIB)],
            ("svc", 0x4700_0000, 32 * MIB),
        ),
        identity_case(
            "identity RAM over the hypervisor's image",
            &[identity("svc", 0x4000_0000, 64 * MIB)],
            ("svc", 0x4000_0000, 64 * MIB),
        ),
        identity_case(
            "identity RAM past the end of host RAM",
            &[identity("svc", 0x7000_0000, 512 * MIB)],
            ("svc", 0x7000_0000, 512 * MIB),
        ),
        identity_case(
            "two identity VMs on the same RAM",
            &[
                identity("one", 0x6000_0000, 256 * MIB),
                identity("two", 0x6800_0000, 256 * MIB),
            ],
            ("two", 0x6800_0000, 256 * MIB),
        ),
        ErrorCase {
            error: PlanError::NoRamForVm {
                vm: "b",
                size: 1022 * MIB,
            },
            message: "VM 'b' cannot be created: not enough free host RAM for 1022 MiB \
                      of guest memory",
            ..case(
                "a VM that no longer fits after the first",
                bundle_with(&[
                    vm("a", 4 * MIB, &[0], true),
                    vm("b", 1022 * MIB, &[1], true),
                ]),
            )
        },
        ErrorCase {
            error: PlanError::NoSuchCpu {
                vm: "far",
                vcpu: 1,
                cpu: 5,
                cpus: 4,
            },
            message: "VM 'far' places vCPU 1 on CPU 5, but the machine has 4 CPUs",
            ..case(
                "a vCPU on a CPU the host lacks",
                bundle_with(&[vm("far", 2 * MIB, &[0, 5], true)]),
            )
        },
        ErrorCase {
            limits: Limits { cpus: 2, ..LIMITS },
            error: PlanError::NoSuchCpu {
                vm: "far",
                vcpu: 0,
                cpu: 3,
                cpus: 2,
            },
            message: "VM 'far' places vCPU 0 on CPU 3, but the machine has 2 CPUs",
            ..case(
                "a vCPU on a CPU this build cannot bring up",
                bundle_with(&[vm("far", 2 * MIB, &[3], true)]),
            )
        },
        ErrorCase {
            error: PlanError::CpuOvercrowded { cpu: 0, max: 16 },
            message: "too many vCPUs share CPU 0 (at most 16)",
            ..case("18 vCPUs on one CPU", bundle_with(&crowd))
        },
        ErrorCase {
            host: Host {
                psci: false,
                ..virt()
            },
            error: PlanError::NoPsci { cpus: 2 },
            message: "the VMs need 2 CPUs, but the DT names no PSCI to start them",
            ..case(
                "a secondary CPU without PSCI",
                bundle_with(&[vm("a", 2 * MIB, &[0], true), vm("b", 2 * MIB, &[1], true)]),
            )
        },
    ]
}

#[test]
fn every_error_is_reachable_with_its_message() {
    for c in error_cases() {
        let got = plan(&c.bundle, &platform(&c.host), &c.reserved, &c.limits);
        assert_eq!(got.err(), Some(c.error), "{}", c.name);
        assert_eq!(c.error.to_string(), c.message, "{}", c.name);
    }
}

#[test]
fn the_first_problem_in_boot_order_is_reported() {
    // VM "a" has a device over the UART and too many vCPUs: the device
    // comes first. VM "b" (later) would not fit at all.
    let host = Host {
        uart_base: 0x1c09_0000,
        ..virt()
    };
    let b = bundle_of(
        SystemInfo::default(),
        &[
            vm("a", 2 * MIB, &[0, 1, 2], true),
            vm("b", 2 * GIB, &[3], true),
        ],
        &[rtc(0, 0x1c09_0000)],
        &[],
    );
    let limits = Limits {
        vcpus_per_vm: 2,
        ..LIMITS
    };
    let got = plan(&b, &platform(&host), &reserved(), &limits).err();
    assert!(
        matches!(
            got,
            Some(PlanError::DeviceOwnedByHypervisor { vm: "a", .. })
        ),
        "{got:?}"
    );
    // Without the device, the vCPU count; with both fixed, "b"'s RAM.
    let b = bundle_with(&[
        vm("a", 2 * MIB, &[0, 1, 2], true),
        vm("b", 2 * GIB, &[3], true),
    ]);
    let got = plan(&b, &platform(&host), &reserved(), &limits).err();
    assert!(
        matches!(got, Some(PlanError::TooManyVcpus { vm: "a", .. })),
        "{got:?}"
    );
    let got = plan(&b, &platform(&host), &reserved(), &LIMITS).err();
    assert!(
        matches!(got, Some(PlanError::NoRamForVm { vm: "b", .. })),
        "{got:?}"
    );
}

#[test]
fn one_cpu_needs_no_psci() {
    let host = Host {
        psci: false,
        cpus: 1,
        ..virt()
    };
    let b = bundle_with(&[vm("a", 2 * MIB, &[0], false), vm("b", 2 * MIB, &[0], false)]);
    let p = plan_on(&host, &b).expect("plan");
    assert_eq!(p.cpus_needed(), 1);
    assert_eq!(p.host_mpidrs(), [0]);
    assert_eq!(p.queue(0).len(), 2);
}

#[test]
fn sixteen_vcpus_fill_one_cpu() {
    let crowd: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|n| vm(n, 2 * MIB, &[0; 8], false))
        .collect();
    let p = plan_on(&virt(), &bundle_with(&crowd)).expect("exactly a full queue");
    assert_eq!(p.queue(0).len(), MAX_QUEUE);
}

#[test]
fn banner_describes_the_host() {
    let qemu = Platform::from_fdt(
        &Fdt::new(include_bytes!("../../testdata/qemu-virt-gicv3.dtb")).expect("dtb"),
    )
    .expect("platform");
    let line = HostSummary {
        platform: &qemu,
        midr: 0x411f_d070,
        cpu_name: "Cortex-A57",
    };
    assert_eq!(
        line.to_string(),
        "2 CPU(s) (Cortex-A57, MIDR 0x411fd070), 1024 MiB RAM, GICv3, \
         console PL011 at 0x9000000, PSCI via SMC"
    );
    let v2 = Platform::from_fdt(
        &Fdt::new(include_bytes!("../../testdata/qemu-virt-gicv2.dtb")).expect("dtb"),
    )
    .expect("platform");
    let line = HostSummary {
        platform: &v2,
        ..line
    };
    assert!(line.to_string().contains(", GICv2, "), "{line}");
    let bare = platform(&Host {
        psci: false,
        banks: vec![(RAM_BASE, GIB), (0x1_0000_0000, 512 * MIB)],
        ..virt()
    });
    let line = HostSummary {
        platform: &bare,
        ..line
    };
    assert_eq!(
        line.to_string(),
        "4 CPU(s) (Cortex-A57, MIDR 0x411fd070), 1536 MiB RAM, GICv3, \
         console PL011 at 0x9000000, PSCI via nothing (no PSCI node)"
    );
}

#[test]
fn host_dtb_header() {
    let header = |size: u32| {
        let mut h = [0xd0, 0x0d, 0xfe, 0xed, 0, 0, 0, 0];
        h[4..].copy_from_slice(&size.to_be_bytes());
        h
    };
    assert_eq!(host_dtb_size(header(0x1234)), Some(0x1234));
    assert_eq!(host_dtb_size(header(40)), Some(40));
    assert_eq!(host_dtb_size(header(16 << 20)), Some(16 << 20));
    assert_eq!(host_dtb_size(header(39)), None);
    assert_eq!(host_dtb_size(header((16 << 20) + 1)), None);
    let mut bad = header(0x1234);
    bad[0] = 0;
    assert_eq!(host_dtb_size(bad), None);
}

/// A random system for the property test: host banks, reserved ranges, VM
/// sizes and channel sizes.
fn random_system(
    banks: &[(u64, u64)],
    reserved_at: [u64; 3],
    vm_mib: &[u64],
    channel_pages: &[u64],
    identity_at: Option<u64>,
) -> (Host, Reserved, Bundle<'static>) {
    let host = Host {
        banks: banks.to_vec(),
        ..virt()
    };
    let first = banks[0];
    // Each reserved range: 1 MiB somewhere in the first bank.
    let at = |i: usize| {
        let start = first.0 + (reserved_at[i] % (first.1 / MIB)) * MIB;
        range(start, (start + MIB).min(first.0 + first.1))
    };
    let reserved = Reserved {
        image: at(0),
        dtb: at(1),
        bundle: at(2),
    };
    let names = ["v0", "v1", "v2", "v3", "v4"];
    let vms: Vec<_> = vm_mib
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (&mib, name))| {
            let cpu = u8::try_from(i % 4).expect("small");
            let v = vm(name, mib * 2 * MIB, &[cpu], false);
            match identity_at {
                // VM 0 identity-mapped somewhere in the first bank (or past
                // its end, which the plan must refuse).
                Some(k) if i == 0 => VmImage {
                    mem_base: first.0 + (k % (first.1 / (2 * MIB) + 1)) * 2 * MIB,
                    identity: true,
                    ..v
                },
                _ => v,
            }
        })
        .collect();
    let n = u32::try_from(vms.len()).expect("few");
    let chan_names = ["c0", "c1", "c2", "c3"];
    let mut next_id = vec![0u32; vms.len()];
    let mut chans = Vec::new();
    if n >= 2 {
        for (k, (&pages, name)) in channel_pages.iter().zip(chan_names).enumerate() {
            let k32 = u32::try_from(k).expect("few");
            let (a, b) = (k32 % n, (k32 + 1) % n);
            let ipa = 0x0b00_0000 + u64::from(k32) * 2 * MIB;
            let ea = end(a, next_id[a as usize], ipa);
            let eb = end(b, next_id[b as usize], ipa);
            next_id[a as usize] += 1;
            next_id[b as usize] += 1;
            chans.push(Channel {
                name,
                size: pages * 4096,
                ends: [ea, eb],
            });
        }
    }
    let b = bundle_of(SystemInfo::default(), &vms, &[], &chans);
    (host, reserved, b)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any plan: carve-outs disjoint, aligned, inside one host RAM bank and
    /// outside every reserved range; the free RAM accounts for every byte.
    #[test]
    fn planned_memory_never_overlaps(
        sizes in proptest::collection::vec(1u64..1024, 1..4),
        reserved_at in proptest::array::uniform3(0u64..1 << 20),
        vm_mib in proptest::collection::vec(1u64..64, 1..5),
        channel_pages in proptest::collection::vec(1u64..512, 0..4),
        identity_at in proptest::option::of(0u64..1024),
    ) {
        // Banks of 1 MiB..1 GiB at 0x4000_0000, 0x1_0000_0000, 0x2_0000_0000.
        let bases = [RAM_BASE, 0x1_0000_0000, 0x2_0000_0000];
        let banks: Vec<_> = sizes.iter().zip(bases).map(|(&s, b)| (b, s * MIB)).collect();
        let (host, reserved, b) =
            random_system(&banks, reserved_at, &vm_mib, &channel_pages, identity_at);
        let Ok(p) = plan(&b, &platform(&host), &reserved, &LIMITS) else {
            return Ok(());
        };
        // An identity-mapped VM sits exactly where it asked.
        for v in p.vms().filter(|v| v.image.identity) {
            proptest::prop_assert_eq!(v.ram_pa.0, v.image.mem_base);
        }
        let carve: Vec<_> = p.carve_outs().collect();
        for (i, (who, r)) in carve.iter().enumerate() {
            proptest::prop_assert!(!r.is_empty());
            let inside = banks.iter().any(|&(base, size)| range(base, base + size).contains(r));
            proptest::prop_assert!(inside, "{who:?} {r:?} outside RAM");
            for res in reserved.ranges() {
                proptest::prop_assert!(!res.overlaps(r), "{who:?} {r:?} over {res:?}");
            }
            for (other, o) in &carve[..i] {
                proptest::prop_assert!(!o.overlaps(r), "{who:?} {r:?} over {other:?} {o:?}");
            }
            for free in p.ram_left().free() {
                proptest::prop_assert!(!free.overlaps(r), "{who:?} {r:?} still free");
            }
            let align = match who {
                CarveOut::Vm(_) => GUEST_RAM_ALIGN,
                CarveOut::Channel(_) => CHANNEL_ALIGN,
            };
            proptest::prop_assert!(r.start.is_aligned(align));
        }
        let carved: u64 = carve.iter().map(|(_, r)| r.size()).sum();
        proptest::prop_assert_eq!(p.ram_left().free_bytes() + carved, p.free_for_guests());
        proptest::prop_assert_eq!(carve.len(), b.vm_count() + b.channel_count());
    }

    /// A system that asks for little RAM is always planned.
    #[test]
    fn small_systems_fit(
        reserved_at in proptest::array::uniform3(0u64..1 << 20),
        vm_mib in proptest::collection::vec(1u64..8, 1..5),
        channel_pages in proptest::collection::vec(1u64..16, 0..4),
    ) {
        let banks = [(RAM_BASE, GIB)];
        let (host, reserved, b) = random_system(&banks, reserved_at, &vm_mib, &channel_pages, None);
        let p = plan(&b, &platform(&host), &reserved, &LIMITS);
        proptest::prop_assert!(p.is_ok(), "{:?}", p.err());
    }
}
