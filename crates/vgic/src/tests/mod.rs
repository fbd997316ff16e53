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

use crate::harness::{check_invariants, guest_completes_all};
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
