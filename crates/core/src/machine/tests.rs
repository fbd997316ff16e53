//! Host tests of a VM's machine description.

use stratum_abi::bundle::{KernelKind, OnCrash, VmImage};

use super::*;
use crate::guest_dt;

const KERNEL: [u8; 4096] = [0x1f; 4096];
const INITRD: [u8; 8192] = [0; 8192];

fn image(vcpus: u32, mem_base: u64, mem_size: u64) -> VmImage<'static> {
    VmImage {
        name: "t",
        vcpus,
        kernel_kind: KernelKind::Raw,
        mem_base,
        mem_size,
        kernel: &KERNEL,
        kernel_load_offset: 0x8_0000,
        entry_offset: 0x8_0000,
        kernel_footprint: 0x1000,
        initrd: Some(&INITRD),
        dt_fragment: None,
        cmdline: "console=ttyAMA0",
        pinned: true,
        pcpus: [0; 8],
        on_crash: OnCrash::Stop,
        identity: false,
        firmware: false,
        service: false,
    }
}

const RAM: u64 = 0x4000_0000;

#[test]
fn a_gicv3_machine_has_a_redistributor_frame_per_vcpu_on_its_bus() {
    let m = Machine::describe(&image(3, RAM, 64 << 20), GicVersion::V3, false).unwrap();
    let GuestGic::V3 { dist, redist } = m.gic else {
        panic!("a GICv3 host gives a GICv3 guest: {:?}", m.gic);
    };
    assert_eq!(dist, virt_map::GICD);
    assert_eq!(redist.start, virt_map::GICR_BASE);
    assert_eq!(redist.size, 3 * virt_map::GICR_STRIDE);
    // vCPU 2's frame answers as the GIC with bank 2; the frame after the
    // last is nobody's.
    let third = Ipa(virt_map::GICR_BASE.0 + 2 * virt_map::GICR_STRIDE + 0x10);
    let hit = m.bus.find(third).expect("vCPU 2's redistributor");
    assert_eq!(
        (hit.device, hit.region, hit.bank),
        (GIC_DEVICE, REGION_REDIST, 2)
    );
    assert!(
        m.bus
            .find(Ipa(virt_map::GICR_BASE.0 + 3 * virt_map::GICR_STRIDE))
            .is_none()
    );
    let uart = m
        .bus
        .find(Ipa(virt_map::UART.start.0 + 0x18))
        .expect("UARTFR");
    assert_eq!(
        (uart.device, uart.read_reason),
        (UART_DEVICE, Reason::MmioUartRead)
    );
    let gicd = m
        .bus
        .find(Ipa(virt_map::GICD.start.0 + 4))
        .expect("GICD_TYPER");
    assert_eq!((gicd.device, gicd.region), (GIC_DEVICE, REGION_DIST));
}

#[test]
fn a_firmware_vm_has_its_dt_at_ram_base_and_flash_at_0() {
    let firmware = VmImage {
        firmware: true,
        ..image(1, RAM, 64 << 20)
    };
    let m = Machine::describe(&firmware, GicVersion::V3, false).unwrap();
    assert!(m.flash);
    assert_eq!(m.layout.dtb.start, Ipa(RAM), "the DT at the start of RAM");
    assert_eq!(m.layout.kernel.start, Ipa(RAM + 0x8_0000));
    let env = m.bus.find(Ipa(0x0400_0004)).expect("the second flash bank");
    assert_eq!(
        (env.device, env.read_reason, env.write_reason),
        (FLASH_DEVICE, Reason::MmioFlashRead, Reason::MmioFlashWrite)
    );
    // The other devices are where they were.
    let gicd = m.bus.find(Ipa(virt_map::GICD.start.0)).expect("GICD");
    assert_eq!(gicd.device, GIC_DEVICE);
    // Dropping the transports for a passthrough device keeps the flash.
    let mut m2 = m.clone();
    let dev = DevicePlan::for_test("q", IpaRange::new(Ipa(0x0a00_3000), 0x1000).unwrap(), &[40]);
    assert_eq!(
        m2.drop_virtio_for(&[dev]),
        Ok(Some(("q", 0xff00_0000 | 1 << 24))),
        "page 3 (transports 24-31) and SPI 40's transport 24"
    );
    assert!(m2.bus.find(Ipa(0x10)).is_some());
    // An ordinary VM has neither: the DT high, nothing at 0.
    let plain = Machine::describe(&image(1, RAM, 64 << 20), GicVersion::V3, false).unwrap();
    assert!(!plain.flash);
    assert!(plain.bus.find(Ipa(0x0400_0004)).is_none());
    assert!(plain.layout.dtb.start.0 > RAM + (32 << 20));
    // A firmware VM's RAM may not cover the flash.
    let low = VmImage {
        firmware: true,
        ..image(1, 0, 64 << 20)
    };
    assert_eq!(
        Machine::describe(&low, GicVersion::V3, false).err(),
        Some(MachineError::RamOverFlash)
    );
}

#[test]
fn a_gicv2_machine_maps_the_cpu_interface_instead_of_emulating_it() {
    let m = Machine::describe(&image(2, RAM, 64 << 20), GicVersion::V2, true).unwrap();
    assert_eq!(
        m.gic,
        GuestGic::V2 {
            dist: virt_map::GICD,
            cpu: virt_map::GICC
        }
    );
    // The CPU interface is the hardware's GICV, mapped by stage 2: no
    // device on the bus answers there.
    assert!(m.bus.find(virt_map::GICC.start).is_none());
    assert_eq!(
        Machine::describe(&image(2, RAM, 64 << 20), GicVersion::V2, false).unwrap_err(),
        MachineError::NoGicv
    );
}

#[test]
fn vcpu_counts_outside_one_to_the_limit_are_refused() {
    for n in [0, MAX_VCPUS as u32 + 1, u32::MAX] {
        let err = Machine::describe(&image(n, RAM, 64 << 20), GicVersion::V3, false).unwrap_err();
        assert_eq!(err, MachineError::BadVcpuCount(n));
        assert!(err.to_string().contains(&n.to_string()), "{err}");
    }
    let m = Machine::describe(
        &image(MAX_VCPUS as u32, RAM, 64 << 20),
        GicVersion::V3,
        false,
    );
    assert_eq!(
        m.unwrap().vcpu_mpidrs(),
        &[0, 1, 2, 3, 4, 5, 6, 7][..MAX_VCPUS]
    );
}

#[test]
fn ram_must_be_two_mib_aligned_and_sized_and_hold_the_images() {
    for (base, size) in [
        (RAM + 0x1000, 64 << 20),
        (RAM, (64 << 20) + 0x1000),
        (RAM, 0),
        (u64::MAX - (2 << 20) + 1, 4 << 20),
    ] {
        assert_eq!(
            Machine::describe(&image(1, base, size), GicVersion::V3, false).unwrap_err(),
            MachineError::BadRam,
            "{base:#x} + {size:#x}"
        );
    }
    // An entry point before the kernel's first byte is refused, not wrapped.
    let mut bad_entry = image(1, RAM, 64 << 20);
    bad_entry.entry_offset = 0x7_0000;
    assert!(matches!(
        Machine::describe(&bad_entry, GicVersion::V3, false),
        Err(MachineError::Layout(_))
    ));
    // A footprint larger than RAM does not fit.
    let mut huge = image(1, RAM, 2 << 20);
    huge.kernel_footprint = 4 << 20;
    assert!(matches!(
        Machine::describe(&huge, GicVersion::V3, false),
        Err(MachineError::Layout(_))
    ));
}

#[test]
fn the_layout_keeps_kernel_initrd_and_dtb_apart_inside_ram() {
    let m = Machine::describe(&image(1, RAM, 64 << 20), GicVersion::V3, false).unwrap();
    let l = m.layout;
    assert_eq!(l.kernel.start, Ipa(RAM + 0x8_0000));
    assert_eq!(l.entry, Ipa(RAM + 0x8_0000));
    let initrd = l.initrd.expect("the image has an initrd");
    assert_eq!(initrd.size, INITRD.len() as u64);
    assert!(l.dtb.size >= DTB_MAX as u64);
    for r in [l.kernel, initrd, l.dtb] {
        assert!(m.ram.contains_span(r.start, r.size), "{r:?} outside RAM");
    }
    let disjoint = |a: IpaRange, b: IpaRange| {
        a.start.0 + a.size <= b.start.0 || b.start.0 + b.size <= a.start.0
    };
    assert!(disjoint(l.kernel, initrd) && disjoint(l.kernel, l.dtb) && disjoint(initrd, l.dtb));
}

#[test]
fn the_device_tree_describes_this_boot() {
    let img = image(2, RAM, 64 << 20);
    let mut m = Machine::describe(&img, GicVersion::V3, false).unwrap();
    let mut plan = DevicePlan::NONE;
    plan.name = "eth";
    plan.compatible = b"vendor,eth\0";
    plan.regs = IpaRange {
        start: Ipa(0x0a00_0000),
        size: 0x1000,
    };
    let plans = [plan];
    // As the hypervisor does: the device in the transports' window wins,
    // over the eight transports of its page.
    assert_eq!(m.drop_virtio_for(&plans), Ok(Some(("eth", 0xff))));
    let mut devices = [NO_DEVICE; DEVICES];
    let seed = rng_seed(7, 0, 1);
    let cfg = m.dt_config(&img, &[], &mut devices, &plans, &seed, 3);
    assert_eq!(cfg.virtio_mmio, !0xff, "transports 8 to 31 stay");
    assert_eq!(cfg.ram, m.ram);
    assert_eq!(cfg.vcpu_mpidrs, &[0, 1]);
    assert_eq!(cfg.bootargs, "console=ttyAMA0");
    assert_eq!(cfg.initrd, m.layout.initrd);
    assert_eq!(cfg.boot_count, Some(3));
    assert_eq!(cfg.rng_seed, Some(&seed[..]));
    assert_eq!(cfg.devices.len(), 1);
    assert_eq!(cfg.devices[0].name, "eth");
    let mut buf = [0u8; DTB_MAX];
    let len = guest_dt::generate(&cfg, &mut buf).expect("the description generates");
    assert!(len > 0 && len <= DTB_MAX);
}

#[test]
fn the_device_tree_lists_the_transports_the_bus_has() {
    let img = image(8, RAM, 64 << 20);
    let m = Machine::describe(&img, GicVersion::V3, false).unwrap();
    assert_eq!(m.virtio, ALL_TRANSPORTS);
    let mut devices = [NO_DEVICE; DEVICES];
    let seed = rng_seed(7, 0, 1);
    let cfg = m.dt_config(&img, &[], &mut devices, &[], &seed, 1);
    assert_eq!(cfg.virtio_mmio, ALL_TRANSPORTS);
    let mut buf = [0u8; DTB_MAX];
    let len = guest_dt::generate(&cfg, &mut buf).expect("the description generates");
    let fdt = crate::fdt::Fdt::new(&buf[..len]).expect("valid");
    let transports = fdt
        .root()
        .children()
        .filter(|n| n.name().starts_with("virtio_mmio@"))
        .count();
    assert_eq!(transports, virt_map::VIRTIO_COUNT as usize);
    // Each one is on the bus where the tree says.
    for n in 0..u64::from(virt_map::VIRTIO_COUNT) {
        let at = Ipa(virt_map::VIRTIO_BASE.0 + n * virt_map::VIRTIO_STRIDE);
        assert!(m.bus.find(at).is_some(), "transport {n}");
    }
}

#[test]
fn seeds_differ_between_vms_and_boots() {
    let seeds = [
        rng_seed(1000, 0, 1),
        rng_seed(1000, 1, 1),
        rng_seed(1000, 0, 2),
        rng_seed(1001, 0, 1),
    ];
    for (i, a) in seeds.iter().enumerate() {
        assert_ne!(*a, [0; 32]);
        for b in &seeds[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_eq!(rng_seed(5, 2, 3), rng_seed(5, 2, 3));
}

#[test]
fn every_vm_has_the_32_virtio_transports_but_those_a_passthrough_device_takes() {
    let mut m = Machine::describe(&image(1, RAM, 64 << 20), GicVersion::V3, false).unwrap();
    assert_eq!(m.virtio, ALL_TRANSPORTS);
    for n in [0u64, 31] {
        let at = Ipa(virt_map::VIRTIO_BASE.0 + n * virt_map::VIRTIO_STRIDE + 0x70);
        let hit = m.bus.find(at).expect("a transport");
        assert_eq!(
            (
                hit.device,
                virtio_transport(hit.region, hit.bank),
                hit.read_reason
            ),
            (VIRTIO_DEVICE, n as usize, Reason::MmioVirtioRead)
        );
    }
    assert!(
        m.bus
            .find(Ipa(virt_map::VIRTIO_BASE.0 + 32 * 0x200))
            .is_none()
    );

    let device = |base: u64, spi: u32| {
        DevicePlan::for_test("dev", IpaRange::new(Ipa(base), 0x1000).unwrap(), &[spi])
    };
    // The PL031 at 0x0901_0000 with SPI 2 shares nothing.
    assert_eq!(m.drop_virtio_for(&[device(0x0901_0000, 2)]).unwrap(), None);
    assert_eq!(m.virtio, ALL_TRANSPORTS);
    // SPI 16 is transport 0's, SPI 22 transport 6's, SPI 48 nobody's.
    let rtc = IpaRange::new(Ipa(0x0901_0000), 0x1000).unwrap();
    assert_eq!(Machine::virtio_taken_by(rtc, &[16]), 1);
    assert_eq!(Machine::virtio_taken_by(rtc, &[22, 48]), 1 << 6);
    // A device with transport 6's SPI (the ZynqMP's second UART) takes that
    // transport from the device tree only: its page stays on the bus.
    let mut by_spi = m.clone();
    assert_eq!(
        by_spi.drop_virtio_for(&[device(0xff01_0000, 22)]).unwrap(),
        Some(("dev", 1 << 6))
    );
    assert_eq!(by_spi.virtio, !(1 << 6));
    let hit = by_spi
        .bus
        .find(Ipa(virt_map::VIRTIO_BASE.0 + 6 * 0x200))
        .expect("still on the bus, answering as an empty transport");
    assert_eq!(virtio_transport(hit.region, hit.bank), 6);
    // A device in the transports' window takes its page: transports 24 to
    // 31 leave the bus, the other 24 stay, each where it was.
    assert_eq!(
        m.drop_virtio_for(&[device(0x0A00_3000, 3)]).unwrap(),
        Some(("dev", 0xff00_0000))
    );
    assert_eq!(m.virtio, 0x00ff_ffff);
    for n in 0..24u64 {
        let at = Ipa(virt_map::VIRTIO_BASE.0 + n * virt_map::VIRTIO_STRIDE + 0x70);
        let hit = m.bus.find(at).expect("a transport left");
        assert_eq!(
            (hit.device, virtio_transport(hit.region, hit.bank)),
            (VIRTIO_DEVICE, n as usize)
        );
    }
    assert!(m.bus.find(Ipa(0x0A00_3000)).is_none(), "the device's page");
    assert!(
        m.bus.find(Ipa(virt_map::UART.start.0)).is_some(),
        "the rest stays"
    );
    // Devices over every page leave no transport at all.
    let all: Vec<DevicePlan<'_>> = (0..4)
        .map(|p| device(0x0A00_0000 + p * 0x1000, 100))
        .collect();
    let mut none = Machine::describe(&image(1, RAM, 64 << 20), GicVersion::V3, false).unwrap();
    assert_eq!(
        none.drop_virtio_for(&all).unwrap(),
        Some(("dev", ALL_TRANSPORTS))
    );
    assert_eq!(none.virtio, 0);
    assert!(none.bus.find(virt_map::VIRTIO_BASE).is_none());
}
