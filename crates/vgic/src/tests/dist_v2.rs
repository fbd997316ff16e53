//! GICv2 distributor registers.

use super::*;
use crate::VgicError;

#[test]
fn reset_and_id_values() {
    let mut g = v2(4);
    assert_eq!(rd(&mut g, 0, 0x000), 0);
    // ITLinesNumber 2, CPUNumber 3, no Security Extensions.
    assert_eq!(rd(&mut g, 0, 0x004), 2 | 3 << 5);
    assert_eq!(rd(&mut g, 0, 0x008), 0x5300_043b);
    // GIC-400 identification: PIDR4, PIDR0..2, CIDR0..3.
    assert_eq!(rd(&mut g, 0, 0xfd0), 0x04);
    assert_eq!(rd(&mut g, 0, 0xfe0), 0x90);
    assert_eq!(rd(&mut g, 0, 0xfe4), 0xb4);
    assert_eq!(rd(&mut g, 0, 0xfe8), 0x2b, "PIDR2: ArchRev 2");
    let cidr: Vec<u64> = (0..4).map(|i| rd(&mut g, 0, 0xff0 + 4 * i)).collect();
    assert_eq!(cidr, [0x0d, 0xf0, 0x05, 0xb1]);
    // Group 0 at reset; SGIs enabled (RAO), PPIs and SPIs disabled.
    assert_eq!(rd(&mut g, 2, 0x080), 0);
    assert_eq!(rd(&mut g, 2, 0x100), 0xffff);
    assert_eq!(rd(&mut g, 2, 0x104), 0);
    assert_eq!(rd(&mut g, 0, 0xc00), 0xaaaa_aaaa, "SGIs edge");
    assert_eq!(rd(&mut g, 0, 0xc04), 0, "PPIs level");
}

#[test]
fn ctlr_has_two_group_enables() {
    let mut g = v2(1);
    wr(&mut g, 0, 0, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 0, 0), 0b11);
    wr(&mut g, 0, 0, 1);
    assert_eq!(rd(&mut g, 0, 0), 1);
}

#[test]
fn sgi_ppi_rows_are_banked() {
    let mut g = v2(2);
    wr(&mut g, 1, 0x100, 1 << 27);
    assert_eq!(rd(&mut g, 1, 0x100), 0x0800_ffff);
    assert_eq!(rd(&mut g, 0, 0x100), 0xffff);
    // SGIs cannot be disabled.
    wr(&mut g, 1, 0x180, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 1, 0x100), 0xffff);
    wr(&mut g, 0, 0x080, 0x8000_0001);
    assert_eq!(rd(&mut g, 0, 0x080), 0x8000_0001);
    assert_eq!(rd(&mut g, 1, 0x080), 0);
    g.dist_write(1, 0x41b, Byte, 0x5f).unwrap();
    assert_eq!(g.priority(1, 27), Some(0x58));
    assert_eq!(g.priority(0, 27), Some(0));
    wr(&mut g, 0, 0xc04, 0x0080_0000);
    assert_eq!(rd(&mut g, 0, 0xc04), 0x0080_0000);
    assert_eq!(rd(&mut g, 1, 0xc04), 0);
    wr(&mut g, 0, 0xc00, 0);
    assert_eq!(rd(&mut g, 0, 0xc00), 0xaaaa_aaaa, "ICFGR0 read-only");
    // Shared SPI rows are the same for everyone.
    wr(&mut g, 0, 0x104, 0b11);
    assert_eq!(rd(&mut g, 1, 0x104), 0b11);
}

#[test]
fn sgi_pending_bits_are_read_only_in_ispendr() {
    let mut g = v2(2);
    wr(&mut g, 0, 0x200, 0xffff_ffff);
    assert_eq!(rd(&mut g, 0, 0x200), 0xffff_0000, "PPIs set, SGIs ignored");
    g.dist_write(1, 0xf20, Byte, 0b10).unwrap();
    assert_eq!(rd(&mut g, 1, 0x200), 1, "SGI 0 pending from CPU 1");
    wr(&mut g, 1, 0x280, 0xffff_ffff);
    assert_eq!(rd(&mut g, 1, 0x200), 1, "ICPENDR cannot clear an SGI");
    assert_eq!(rd(&mut g, 0, 0x200), 0xffff_0000);
}

#[test]
fn itargetsr_bytes() {
    let mut g = v2(3);
    // SGI/PPI rows: the reader's own bit, read-only.
    assert_eq!(rd(&mut g, 1, 0x800), 0x0202_0202);
    assert_eq!(g.dist_read(2, 0x81f, Byte), Ok(0x04));
    wr(&mut g, 1, 0x800, 0);
    assert_eq!(rd(&mut g, 1, 0x800), 0x0202_0202);
    // SPIs: byte-writable, absent CPUs RAZ/WI.
    assert_eq!(rd(&mut g, 0, 0x820), 0);
    assert_eq!(g.spi_target(33), None);
    g.dist_write(0, 0x821, Byte, 0xff).unwrap();
    assert_eq!(rd(&mut g, 0, 0x820), 0x0000_0700);
    assert_eq!(g.spi_target(33), Some(0), "lowest of several targets");
    wr(&mut g, 0, 0x820, 0x0402_0104);
    assert_eq!(rd(&mut g, 2, 0x820), 0x0402_0104);
    assert_eq!(
        (32..36).map(|i| g.spi_target(i)).collect::<Vec<_>>(),
        [Some(2), Some(0), Some(1), Some(2)]
    );
    // Beyond the implemented SPIs.
    g.dist_write(0, 0x800 + 96, Byte, 1).unwrap();
    assert_eq!(g.dist_read(0, 0x800 + 96, Byte), Ok(0));
}

#[test]
fn uniprocessor_itargetsr_is_raz_wi() {
    let mut g = v2(1);
    assert_eq!(rd(&mut g, 0, 0x800), 0);
    wr(&mut g, 0, 0x820, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 0, 0x820), 0);
    assert_eq!(g.spi_target(32), Some(0), "every SPI targets the one CPU");
}

#[test]
fn reserved_and_impdef_ranges() {
    let mut g = v2(2);
    for off in [
        0x00c, 0x07c, 0xd00, 0xd04, 0xe00, 0xf00, 0xf04, 0xf30, 0xfcc, 0x1000, 0xfffc,
    ] {
        assert_eq!(rd(&mut g, 0, off), 0, "{off:#x}");
    }
    for off in [0x00c, 0xd00, 0xe00, 0xf30, 0x1000] {
        wr(&mut g, 0, off, u64::from(u32::MAX));
        assert_eq!(rd(&mut g, 0, off), 0, "{off:#x}");
    }
    assert_eq!(g.dist_read(0, 0xf00, Byte), Err(VgicError::BadWidth));
    assert_eq!(g.dist_read(0, 0x100, Double), Err(VgicError::BadWidth));
    assert_eq!(g.dist_read(0, 0x400, Half), Err(VgicError::BadWidth));
    assert_eq!(g.dist_read(0, 0x802, Word), Err(VgicError::Misaligned));
    assert_eq!(g.sgi1r_write(0, 0), Err(VgicError::WrongVersion));
}

#[test]
fn same_state_through_v2_and_v3_registers() {
    // The same guest intent expressed through each version's registers
    // leaves the same interrupt state.
    let mut a = v2(2);
    let mut b = v3(2);
    // PPI 27 on vCPU 1: enable, priority 0xa0, edge, pending.
    wr(&mut a, 1, 0x100, 1 << 27);
    rwr(&mut b, 1, 0x1_0100, 1 << 27);
    a.dist_write(1, 0x41b, Byte, 0xa0).unwrap();
    b.redist_write(0, 1, 0x1_041b, Byte, 0xa0).unwrap();
    wr(&mut a, 1, 0xc04, 0x0080_0000);
    rwr(&mut b, 1, 0x1_0c04, 0x0080_0000);
    wr(&mut a, 1, 0x200, 1 << 27);
    rwr(&mut b, 1, 0x1_0200, 1 << 27);
    // SPI 40 to vCPU 1: enable, priority, pending.
    wr(&mut a, 0, 0x104, 1 << 8);
    wr(&mut b, 0, 0x104, 1 << 8);
    a.dist_write(0, 0x828, Byte, 0b10).unwrap();
    b.dist_write(0, 0x6000 + 8 * 40, Double, 1).unwrap();
    wr(&mut a, 0, 0x204, 1 << 8);
    wr(&mut b, 0, 0x204, 1 << 8);
    for (vcpu, intid) in [(1, 27), (0, 27), (1, 40), (0, 40), (1, 26)] {
        assert_eq!(a.is_enabled(vcpu, intid), b.is_enabled(vcpu, intid));
        assert_eq!(a.is_pending(vcpu, intid), b.is_pending(vcpu, intid));
        assert_eq!(a.priority(vcpu, intid), b.priority(vcpu, intid));
    }
    assert_eq!(a.spi_target(40), b.spi_target(40));
    assert_eq!(rd(&mut a, 1, 0x100) & !0xffff, rrd(&mut b, 1, 0x1_0100));
    assert_eq!(rd(&mut a, 1, 0x200), rrd(&mut b, 1, 0x1_0200));
    assert_eq!(rd(&mut a, 1, 0xc04), rrd(&mut b, 1, 0x1_0c04));
    assert_eq!(rd(&mut a, 0, 0x104), rd(&mut b, 0, 0x104));
    assert_eq!(rd(&mut a, 0, 0x204), rd(&mut b, 0, 0x204));
    // Both deliver the same LRs (modulo the group each version resets to).
    wr(&mut a, 0, 0, 0b11);
    wr(&mut b, 0, 0, 0b11);
    let mut la = [ListRegister::INVALID; 4];
    let mut lb = [ListRegister::INVALID; 4];
    a.fill_lrs(1, &mut la);
    b.fill_lrs(1, &mut lb);
    for lr in la.iter_mut().chain(lb.iter_mut()) {
        lr.group1 = false;
    }
    assert_eq!(la, lb);
    // SPI 40 (priority 0) before PPI 27 (priority 0xa0).
    assert_eq!(la[0].vintid, 40);
    assert_eq!(la[1].vintid, 27);
}
