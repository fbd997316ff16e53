//! The boot bundle parser (`stratum_abi::bundle::Bundle::parse`) and what
//! in `stratum_core` reads a parsed bundle: the boot plan
//! (`bootplan::plan`, on QEMU `virt`'s host device tree), each VM's machine
//! (`Machine::describe`) and the device tree generated for it
//! (`guest_dt::generate`, with the VM's DT fragment).
//!
//! Checked: parsing never panics; a bundle it accepts answers every
//! accessor for every index in range, and re-encodes (`encode_with_virtio`)
//! into a bundle that parses to the same records; a plan it yields gives
//! carve-outs of host RAM that overlap neither each other nor the
//! reserved ranges; every guest device tree generated reads back with the
//! DT reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_abi::bundle::{self, Bundle};
use stratum_core::addr::Pa;
use stratum_core::bootplan::{self, Limits, PhysRange, Reserved};
use stratum_core::fdt::Fdt;
use stratum_core::guest_dt;
use stratum_core::machine::{self, Machine};
use stratum_core::platform::{GicVersion, Platform};

/// QEMU `virt`'s host tree (GICv3, 4 CPUs): the board the system tests run.
const HOST_DTB: &[u8] = include_bytes!("../../crates/core/testdata/qemu-virt-gicv3.dtb");

const LIMITS: Limits = Limits {
    vms: 8,
    vcpus_per_vm: 8,
    cpus: 8,
};

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange {
        start: Pa(start),
        end: Pa(end),
    }
}

fn overlap(a: &PhysRange, b: &PhysRange) -> bool {
    a.start.0 < b.end.0 && b.start.0 < a.end.0
}

fuzz_target!(|data: &[u8]| {
    let b = match Bundle::parse(data) {
        Ok(b) => b,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let vms: Vec<_> = (0..b.vm_count())
        .map(|i| b.vm(i).expect("a VM in range"))
        .collect();
    let devices: Vec<_> = (0..b.device_count())
        .map(|i| b.device(i).expect("a device in range"))
        .collect();
    let channels: Vec<_> = (0..b.channel_count())
        .map(|i| b.channel(i).expect("a channel in range"))
        .collect();
    let virtio: Vec<_> = (0..b.virtio_count())
        .map(|i| b.virtio(i).expect("a virtio device in range"))
        .collect();
    assert!(b.vm(b.vm_count()).is_none());
    for d in &devices {
        assert!(d.spis().len() <= d.irqs.len());
    }

    // Round trip through the host tool's encoder.
    let again_bytes =
        bundle::encode_with_virtio(b.flags(), b.system(), &vms, &devices, &channels, &virtio);
    let again = Bundle::parse(&again_bytes).expect("a re-encoded valid bundle parses");
    assert_eq!(again.flags(), b.flags());
    assert_eq!(again.system(), b.system());
    assert_eq!(again.vm_count(), vms.len());
    for (i, vm) in vms.iter().enumerate() {
        assert_eq!(again.vm(i).as_ref(), Some(vm), "VM {i} through the encoder");
    }
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(
            again.device(i).as_ref(),
            Some(d),
            "device {i} through the encoder"
        );
    }
    for (i, c) in channels.iter().enumerate() {
        assert_eq!(
            again.channel(i).as_ref(),
            Some(c),
            "channel {i} through the encoder"
        );
    }
    for (i, v) in virtio.iter().enumerate() {
        assert_eq!(
            again.virtio(i).as_ref(),
            Some(v),
            "virtio device {i} through the encoder"
        );
    }

    // The boot plan on QEMU virt.
    let host = Fdt::new(HOST_DTB).expect("the QEMU tree");
    let platform = Platform::from_fdt(&host).expect("the QEMU platform");
    let reserved = Reserved {
        dtb: range(0x4000_0000, 0x4010_0000),
        image: range(0x4020_0000, 0x4060_0000),
        bundle: range(0x4800_0000, 0x4810_0000),
    };
    let plan = bootplan::plan(&b, &platform, &reserved, &LIMITS).ok();
    if let Some(plan) = &plan {
        let carve: Vec<PhysRange> = plan.carve_outs().map(|(_, r)| r).collect();
        for (i, a) in carve.iter().enumerate() {
            for r in reserved.ranges() {
                assert!(!overlap(a, &r), "carve-out {a:?} over reserved {r:?}");
            }
            for c in &carve[i + 1..] {
                assert!(!overlap(a, c), "carve-outs {a:?} and {c:?} overlap");
            }
        }
        for vm in plan.vms() {
            let _ = (
                vm.placements().count(),
                vm.kernel_kind(),
                vm.restart_on_crash(),
            );
            let _ = plan.stage2_regions(vm.id).count();
        }
    }

    // Each VM's machine and generated device tree.
    for (id, image) in vms.iter().enumerate() {
        for version in [GicVersion::V3, GicVersion::V2] {
            let Ok(m) = Machine::describe(image, version, true) else {
                continue;
            };
            let plans: Vec<_> = plan
                .as_ref()
                .map(|p| p.devices(id).collect())
                .unwrap_or_default();
            let mut slots = [machine::NO_DEVICE; machine::DEVICES];
            let seed = machine::rng_seed(1, id as u64, 1);
            let config = m.dt_config(image, &[], &mut slots, &plans, &seed, 1);
            let mut buf = vec![0u8; machine::DTB_MAX];
            if let Ok(len) = guest_dt::generate(&config, &mut buf) {
                let dt = Fdt::new(&buf[..len]).expect("a generated guest tree reads back");
                assert!(dt.find_node("/chosen").is_some());
            }
        }
    }
});
