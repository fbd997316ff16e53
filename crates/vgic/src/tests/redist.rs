//! GICv3 redistributor registers.

use super::*;
use crate::VgicError;

#[test]
fn typer_has_affinity_processor_number_and_last() {
    let mpidrs = [0x0, 0x1, 0x100, 0x1_0000_0203];
    let mut g = Vgic::new(GicVersion::V3, &mpidrs, 32).unwrap();
    for (i, &m) in mpidrs.iter().enumerate() {
        let typer = g.redist_read(0, i, 0x8, Double).unwrap();
        let aff = typer >> 32;
        assert_eq!(aff >> 24, m >> 32, "Aff3");
        assert_eq!(aff & 0xff_ffff, m & 0xff_ffff, "Aff2..Aff0");
        assert_eq!((typer >> 8) & 0xffff, i as u64, "Processor_Number");
        assert_eq!(typer & 1 << 4 != 0, i == 3, "Last");
        assert_eq!(typer & 0b10_0011, 0, "PLPIS, VLPIS, DirectLPI");
        // 32-bit halves.
        assert_eq!(rrd(&mut g, i, 0x8), typer & 0xffff_ffff);
        assert_eq!(rrd(&mut g, i, 0xc), typer >> 32);
    }
    assert_eq!(
        g.redist_read(1, 3, 0x8, Double),
        Ok(0x0100_0203 << 32 | 3 << 8 | 1 << 4)
    );
    let mut one = v3(1);
    assert_eq!(
        rrd(&mut one, 0, 0x8),
        1 << 4,
        "a single redistributor is last"
    );
}

#[test]
fn waker_handshake() {
    let mut g = v3(2);
    // Reset: ProcessorSleep and ChildrenAsleep set.
    assert_eq!(rrd(&mut g, 1, 0x14), 0b110);
    // Linux: clear ProcessorSleep, then wait for ChildrenAsleep == 0.
    rwr(&mut g, 1, 0x14, 0);
    assert_eq!(rrd(&mut g, 1, 0x14), 0);
    assert_eq!(rrd(&mut g, 0, 0x14), 0b110, "per redistributor");
    rwr(&mut g, 1, 0x14, 0b010);
    assert_eq!(rrd(&mut g, 1, 0x14), 0b110);
    // Writing ChildrenAsleep alone is ignored (read-only).
    rwr(&mut g, 0, 0x14, 0b100);
    assert_eq!(rrd(&mut g, 0, 0x14), 0);
}

#[test]
fn rd_base_registers() {
    let mut g = v3(2);
    rwr(&mut g, 0, 0x0, u64::from(u32::MAX));
    assert_eq!(rrd(&mut g, 0, 0x0), 0, "CTLR: EnableLPIs RAZ/WI, RWP 0");
    assert_eq!(rrd(&mut g, 0, 0x4), 0x5300_043b);
    assert_eq!(rrd(&mut g, 1, 0xffe8), 0x3b);
    assert_eq!(rrd(&mut g, 0, 0x10), 0, "STATUSR");
    for off in [0x40, 0x70, 0x78, 0xa0, 0xb0] {
        g.redist_write(0, 0, off, Double, u64::MAX).unwrap();
        assert_eq!(g.redist_read(0, 0, off, Double), Ok(0), "{off:#x}");
    }
    assert_eq!(g.redist_read(0, 0, 0x0, Double), Err(VgicError::BadWidth));
    assert_eq!(g.redist_read(0, 0, 0x14, Byte), Err(VgicError::BadWidth));
    assert_eq!(
        g.redist_read(0, 0, 0x2_0000, Word),
        Err(VgicError::OutOfFrame)
    );
    assert_eq!(g.redist_read(0, 2, 0x0, Word), Err(VgicError::NoSuchVcpu));
    assert_eq!(g.redist_read(2, 0, 0x0, Word), Err(VgicError::NoSuchVcpu));
    assert_eq!(g.redist_write(0, 0, 0xa, Half, 0), Err(VgicError::BadWidth));
    let mut v2 = v2(1);
    assert_eq!(
        v2.redist_read(0, 0, 0x0, Word),
        Err(VgicError::WrongVersion)
    );
}

#[test]
fn sgi_frame_is_per_vcpu() {
    let mut g = v3(2);
    const SGI: u64 = 0x1_0000;
    rwr(&mut g, 1, SGI + 0x100, 0x0800_0002);
    assert_eq!(rrd(&mut g, 1, SGI + 0x100), 0x0800_0002);
    assert_eq!(rrd(&mut g, 0, SGI + 0x100), 0);
    assert!(g.is_enabled(1, 27) && g.is_enabled(1, 1) && !g.is_enabled(0, 27));
    rwr(&mut g, 1, SGI + 0x180, 0x2);
    assert_eq!(rrd(&mut g, 1, SGI + 0x100), 0x0800_0000);
    rwr(&mut g, 1, SGI + 0x200, 0x10);
    assert!(g.is_pending(1, 4));
    rwr(&mut g, 1, SGI + 0x280, 0x10);
    assert!(!g.is_pending(1, 4));
    rwr(&mut g, 0, SGI + 0x300, 1 << 20);
    assert_eq!(rrd(&mut g, 0, SGI + 0x380), 1 << 20);
    rwr(&mut g, 0, SGI + 0x380, 1 << 20);
    assert_eq!(rrd(&mut g, 0, SGI + 0x300), 0);
    rwr(&mut g, 0, SGI + 0x80, 0xffff);
    assert_eq!(rrd(&mut g, 0, SGI + 0x80), 0xffff);
    // Priorities: bytes and words, five bits.
    g.redist_write(0, 1, SGI + 0x41b, Byte, 0xa7).unwrap();
    assert_eq!(g.redist_read(0, 1, SGI + 0x41b, Byte), Ok(0xa0));
    assert_eq!(g.priority(1, 27), Some(0xa0));
    assert_eq!(rrd(&mut g, 1, SGI + 0x418), 0xa0_00_00_00);
    // ICFGR0 (SGIs) is read-only edge; ICFGR1 configures PPIs.
    rwr(&mut g, 0, SGI + 0xc00, 0);
    assert_eq!(rrd(&mut g, 0, SGI + 0xc00), 0xaaaa_aaaa);
    assert_eq!(rrd(&mut g, 0, SGI + 0xc04), 0, "PPIs reset level");
    rwr(&mut g, 0, SGI + 0xc04, 0x00c0_0000);
    assert_eq!(rrd(&mut g, 0, SGI + 0xc04), 0x0080_0000);
    assert_eq!(g.private[0].edge, 0x0800_ffff);
    // IGRPMODR0, NSACR, reserved: RAZ/WI.
    for off in [0xd00, 0xe00, 0x4, 0x420, 0xc08, 0xfffc] {
        rwr(&mut g, 0, SGI + off, u64::from(u32::MAX));
        assert_eq!(rrd(&mut g, 0, SGI + off), 0, "{off:#x}");
    }
    assert_eq!(
        g.redist_read(0, 0, SGI + 0x100, Byte),
        Err(VgicError::BadWidth)
    );
    assert_eq!(
        g.redist_read(0, 0, SGI + 0x402, Half),
        Err(VgicError::BadWidth)
    );
    assert_eq!(
        g.redist_read(0, 0, SGI + 0x401, Word),
        Err(VgicError::Misaligned)
    );
}
