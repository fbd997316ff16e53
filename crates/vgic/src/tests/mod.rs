//! Unit and property tests of the vGIC: register semantics per version,
//! SGI routing, LR encodings, LR allocation, and random-operation
//! properties.

mod dist_v2;
mod dist_v3;
mod fill;
mod hw;
mod lr;
mod prop;
mod redist;
mod sgi;

use crate::{AccessSize, GicVersion, ListRegister, LrFill, LrFold, LrRefill, LrState, Vgic};

use AccessSize::{Byte, Double, Half, Word};

/// A GICv3 VM with `n` vCPUs (vCPU `i` has affinity 0.0.0.i) and 64 SPIs.
fn v3(n: usize) -> Vgic {
    let mpidrs: Vec<u64> = (0..n as u64).collect();
    Vgic::new(GicVersion::V3, &mpidrs, 64).unwrap()
}

/// A GICv2 VM with `n` vCPUs and 64 SPIs.
fn v2(n: usize) -> Vgic {
    let mpidrs: Vec<u64> = (0..n as u64).collect();
    Vgic::new(GicVersion::V2, &mpidrs, 64).unwrap()
}

/// A 32-bit distributor read.
fn rd(g: &mut Vgic, vcpu: usize, offset: u64) -> u64 {
    g.dist_read(vcpu, offset, Word).unwrap()
}

/// A 32-bit distributor write.
fn wr(g: &mut Vgic, vcpu: usize, offset: u64, value: u64) {
    g.dist_write(vcpu, offset, Word, value).unwrap();
}

/// A 32-bit read of redistributor `redist` (by vCPU 0).
fn rrd(g: &mut Vgic, redist: usize, offset: u64) -> u64 {
    g.redist_read(0, redist, offset, Word).unwrap()
}

/// A 32-bit write of redistributor `redist` (by vCPU 0).
fn rwr(g: &mut Vgic, redist: usize, offset: u64, value: u64) {
    g.redist_write(0, redist, offset, Word, value).unwrap();
}

/// Enables both groups in the distributor.
fn enable_groups(g: &mut Vgic) {
    wr(g, 0, 0, 0b11);
}

/// Enables SPI `intid` (routed by reset to vCPU 0 on v3; on v2 targets
/// vCPU 0 explicitly) and sets its priority.
fn enable_spi(g: &mut Vgic, intid: u32, priority: u8) {
    let word = u64::from(intid / 32) * 4;
    wr(g, 0, 0x100 + word, 1 << (intid % 32));
    g.dist_write(0, 0x400 + u64::from(intid), Byte, u64::from(priority))
        .unwrap();
    if g.version() == GicVersion::V2 {
        g.dist_write(0, 0x800 + u64::from(intid), Byte, 1).unwrap();
    }
}

/// The guest acknowledges (Pending → Active) and completes (→ Invalid)
/// every LR; returns the INTIDs it handled.
fn guest_completes_all(lrs: &mut [ListRegister]) -> Vec<u32> {
    let mut seen = Vec::new();
    for lr in lrs.iter_mut() {
        if lr.state != LrState::Invalid {
            seen.push(lr.vintid);
            lr.state = LrState::Invalid;
        }
    }
    seen
}

/// Checks the model's bookkeeping invariants.
fn check_invariants(g: &Vgic) {
    let mut spis_in_lrs = Vec::new();
    for v in 0..g.nr_vcpus {
        let placed: Vec<_> = crate::regs::BitIter64(g.lr_mask[v])
            .map(|n| g.placed[v][n])
            .collect();
        let mut private_bits = 0u32;
        for (k, p) in placed.iter().enumerate() {
            assert!(
                !placed[..k].iter().any(|q| q.intid == p.intid),
                "INTID {} twice in vCPU {v}'s LRs",
                p.intid
            );
            if p.intid < 32 {
                private_bits |= 1 << p.intid;
            } else {
                assert!(
                    !spis_in_lrs.contains(&p.intid),
                    "SPI {} in two vCPUs' LRs",
                    p.intid
                );
                spis_in_lrs.push(p.intid);
            }
        }
        let bank = &g.private[v];
        assert_eq!(bank.in_lr, private_bits, "vCPU {v} in_lr");
        if g.version == GicVersion::V2 {
            for sgi in 0..16 {
                assert_eq!(
                    bank.latch & (1 << sgi) != 0,
                    g.sgi_src[v][sgi] != 0,
                    "vCPU {v} SGI {sgi} latch"
                );
            }
        }
    }
    for (w, bank) in g.spis.iter().enumerate() {
        let mut bits = 0u32;
        for &i in &spis_in_lrs {
            if (usize::from(i) - 32) / 32 == w {
                bits |= 1 << (i % 32);
            }
        }
        assert_eq!(bank.in_lr, bits, "SPI bank {w} in_lr");
    }
    // An exact vCPU's LRs miss no candidate but the fresh ones.
    for v in 0..g.nr_vcpus {
        if g.exact & (1 << v) != 0 {
            for pmr in [0xff, 0x80, 0x10] {
                assert_eq!(
                    g.has_pending(v, pmr),
                    g.has_pending_scan(v, pmr),
                    "vCPU {v}: the wake-up check from the fresh list"
                );
            }
            let fresh = &g.fresh[v][..usize::from(g.fresh_len[v])];
            let private = g.fresh_private[v];
            g.for_each_candidate(v, |key| {
                let intid = (key & 0xffff) as u16;
                assert!(
                    fresh.contains(&intid) || (intid < 32 && private & (1 << intid) != 0),
                    "vCPU {v} is exact but candidate {intid} is not fresh ({fresh:?})"
                );
            });
        }
    }
    for bank in g.private.iter().chain(g.spis.iter()) {
        assert_eq!(bank.lr_pending & !bank.in_lr, 0);
        assert_eq!(bank.lr_active & !bank.in_lr, 0);
        assert_eq!(bank.cancel_pending & !bank.in_lr, 0);
        assert_eq!(bank.cancel_active & !bank.in_lr, 0);
        assert_eq!(bank.hw & bank.release, 0);
        for p in bank.priority {
            assert_eq!(p & 7, 0);
        }
    }
}

#[test]
fn construction_is_validated() {
    use crate::VgicError as E;
    let new = |v, m: &[u64], s| Vgic::new(v, m, s).err();
    assert_eq!(new(GicVersion::V3, &[], 32), Some(E::BadVcpuCount));
    assert_eq!(new(GicVersion::V3, &[0; 9], 32), Some(E::BadVcpuCount));
    assert_eq!(new(GicVersion::V3, &[0], 33), Some(E::BadSpiCount));
    assert_eq!(new(GicVersion::V3, &[0], 288), Some(E::BadSpiCount));
    assert_eq!(new(GicVersion::V3, &[1 << 24], 32), Some(E::BadMpidr));
    assert_eq!(new(GicVersion::V3, &[1 << 40], 32), Some(E::BadMpidr));
    assert_eq!(new(GicVersion::V2, &[3, 3], 32), Some(E::DuplicateMpidr));
    assert_eq!(new(GicVersion::V3, &[0xff_00ff_ffff], 256), None);
    assert_eq!(new(GicVersion::V2, &[0, 1], 0), None);
    let g = v3(2);
    assert_eq!((g.nr_vcpus(), g.nr_spis(), g.nr_irqs()), (2, 64, 96));
    assert_eq!(
        E::BadWidth.to_string(),
        "GIC register does not accept this access width"
    );
}

#[test]
fn device_inputs_are_validated() {
    use crate::VgicError as E;
    let mut g = v3(2);
    assert_eq!(g.set_pending(15, 0), Err(E::BadIntid));
    assert_eq!(g.set_pending(96, 0), Err(E::BadIntid));
    assert_eq!(g.set_pending(27, 2), Err(E::NoSuchVcpu));
    // SPIs ignore the vCPU argument.
    assert_eq!(g.set_level(40, 99, true), Ok(()));
    assert_eq!(g.set_hw_pending(0, 27, 3), Err(E::BadIntid));
    assert_eq!(g.set_hw_pending(0, 27, 1020), Err(E::BadIntid));
    assert_eq!(g.set_hw_pending(5, 27, 27), Err(E::NoSuchVcpu));
    assert!(!g.is_pending(7, 27));
    assert_eq!(g.priority(0, 96), None);
    assert_eq!(g.spi_target(96), None);
    assert_eq!(g.spi_target(20), None);
}
