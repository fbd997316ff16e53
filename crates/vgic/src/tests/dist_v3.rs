//! GICv3 distributor registers.

use super::*;
use crate::VgicError;

#[test]
fn reset_values() {
    let mut g = v3(2);
    // ARE (bit 4) and DS (bit 6) RAO; groups disabled; RWP 0.
    assert_eq!(rd(&mut g, 0, 0x0000), 0x50);
    // ITLinesNumber 2 (96 INTIDs), CPUNumber 0, IDbits 9, A3V, RSS.
    assert_eq!(rd(&mut g, 0, 0x0004), 2 | 9 << 19 | 1 << 24 | 1 << 26);
    assert_eq!(rd(&mut g, 0, 0x0008), 0x5300_043b);
    assert_eq!(rd(&mut g, 0, 0x000c), 0, "TYPER2");
    assert_eq!(rd(&mut g, 0, 0x0010), 0, "STATUSR");
    assert_eq!(rd(&mut g, 0, 0xffe8), 0x3b, "PIDR2: ArchRev 3");
    assert_eq!(rd(&mut g, 0, 0xffe8) >> 4 & 0xf, 3);
    assert_eq!(rd(&mut g, 0, 0xfff0), 0x0d);
    assert_eq!(rd(&mut g, 0, 0xfffc), 0xb1);
    assert_eq!(
        rd(&mut g, 0, 0x0084),
        u64::from(u32::MAX),
        "SPIs reset to Group 1"
    );
    assert_eq!(rd(&mut g, 0, 0x0104), 0, "SPIs reset disabled");
    assert_eq!(rd(&mut g, 0, 0x0c08), 0, "SPIs reset level-sensitive");
    assert_eq!(rd(&mut g, 1, 0x6100), 0, "IROUTER32");
    let g = Vgic::new(GicVersion::V3, &[0], 256).unwrap();
    assert_eq!(g.typer_v3() & 0x1f, 8);
}

#[test]
fn ctlr_keeps_only_group_enables() {
    let mut g = v3(1);
    wr(&mut g, 0, 0, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 0, 0), 0x53);
    wr(&mut g, 0, 0, 0);
    assert_eq!(rd(&mut g, 0, 0), 0x50, "ARE and DS stay RAO");
}

#[test]
fn sgi_ppi_words_are_raz_wi_with_are() {
    let mut g = v3(2);
    for off in [0x080, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380] {
        wr(&mut g, 0, off, u64::from(u32::MAX));
        assert_eq!(rd(&mut g, 0, off), 0, "{off:#x}");
    }
    wr(&mut g, 0, 0x400, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 0, 0x400), 0);
    wr(&mut g, 0, 0xc04, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 0, 0xc04), 0);
    // The redistributor's state is untouched.
    assert_eq!(rrd(&mut g, 0, 0x1_0100), 0);
    assert_eq!(rrd(&mut g, 0, 0x1_0080), u64::from(u32::MAX));
    assert!(!g.is_pending(0, 20));
}

#[test]
fn set_clear_pairs_are_w1s_w1c() {
    let mut g = v3(2);
    for (set, clear) in [(0x104, 0x184), (0x204, 0x284), (0x304, 0x384)] {
        wr(&mut g, 0, set, 0b1010);
        wr(&mut g, 1, set, 0b0100);
        assert_eq!(rd(&mut g, 0, set), 0b1110, "{set:#x}");
        assert_eq!(rd(&mut g, 1, clear), 0b1110, "{clear:#x}");
        wr(&mut g, 0, clear, 0b0010);
        assert_eq!(rd(&mut g, 0, set), 0b1100);
        wr(&mut g, 0, set, 0);
        assert_eq!(rd(&mut g, 0, set), 0b1100, "writing 0 has no effect");
    }
    assert!(g.is_enabled(1, 35));
    assert!(g.is_pending(0, 34));
    assert!(g.is_active(1, 35));
    // Word 3 (INTIDs 96..127) is not implemented with 64 SPIs.
    wr(&mut g, 0, 0x10c, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 0, 0x10c), 0);
}

#[test]
fn level_line_shows_in_ispendr_and_icpendr_cannot_clear_it() {
    let mut g = v3(1);
    g.set_level(33, 0, true).unwrap();
    assert_eq!(rd(&mut g, 0, 0x204), 0b10);
    wr(&mut g, 0, 0x284, 0b10);
    assert_eq!(rd(&mut g, 0, 0x204), 0b10, "line still asserted");
    g.set_level(33, 0, false).unwrap();
    assert_eq!(rd(&mut g, 0, 0x204), 0);
    // The software latch of a level interrupt survives the line dropping.
    wr(&mut g, 0, 0x204, 0b10);
    assert_eq!(rd(&mut g, 0, 0x204), 0b10);
    wr(&mut g, 0, 0x284, 0b10);
    assert_eq!(rd(&mut g, 0, 0x204), 0);
}

#[test]
fn igroupr_reads_back() {
    let mut g = v3(1);
    wr(&mut g, 0, 0x84, 0xdead_beef);
    assert_eq!(rd(&mut g, 0, 0x84), 0xdead_beef);
}

#[test]
fn ipriorityr_bytes_and_words_keep_five_bits() {
    let mut g = v3(1);
    g.dist_write(0, 0x421, Byte, 0xff).unwrap();
    assert_eq!(g.dist_read(0, 0x421, Byte), Ok(0xf8));
    assert_eq!(g.priority(0, 33), Some(0xf8));
    wr(&mut g, 0, 0x424, 0x1234_5678);
    assert_eq!(rd(&mut g, 0, 0x424), 0x1030_5078);
    assert_eq!(rd(&mut g, 0, 0x420), 0xf800);
    assert_eq!(g.dist_read(0, 0x427, Byte), Ok(0x10));
    // SGI/PPI bytes RAZ/WI; beyond the last SPI RAZ/WI.
    g.dist_write(0, 0x41b, Byte, 0x80).unwrap();
    assert_eq!(g.dist_read(0, 0x41b, Byte), Ok(0));
    assert_eq!(g.priority(0, 27), Some(0));
    wr(&mut g, 0, 0x460, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 0, 0x460), 0);
}

#[test]
fn icfgr_configures_spis() {
    let mut g = v3(1);
    wr(&mut g, 0, 0xc08, u64::from(u32::MAX));
    // Only the odd (Int_config[1]) bits exist.
    assert_eq!(rd(&mut g, 0, 0xc08), 0xaaaa_aaaa);
    wr(&mut g, 0, 0xc0c, 0b1000);
    assert_eq!(rd(&mut g, 0, 0xc0c), 0b1000);
    assert_eq!(g.spis[0].edge, 0x0002_ffff);
    wr(&mut g, 0, 0xc00, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 0, 0xc00), 0, "ICFGR0 RAZ/WI with ARE");
    wr(&mut g, 0, 0xc18, u64::from(u32::MAX));
    assert_eq!(rd(&mut g, 0, 0xc18), 0, "beyond the SPIs");
}

#[test]
fn irouter_is_64_bit_with_32_bit_halves() {
    let mpidrs = [0x0, 0x1, 0x100, 0x7f_0002_0300];
    let mut g = Vgic::new(GicVersion::V3, &mpidrs, 64).unwrap();
    assert_eq!(g.spi_target(32), Some(0));
    g.dist_write(0, 0x6100 + 8, Double, u64::MAX).unwrap();
    // Aff3 39:32, IRM 31, Aff2..Aff0 23:0; the rest RES0.
    assert_eq!(g.dist_read(0, 0x6108, Double), Ok(0xff_80ff_ffff));
    assert_eq!(g.spi_target(33), Some(0), "IRM = 1: any vCPU (vCPU 0)");
    g.dist_write(0, 0x6108, Double, 0x7f_0002_0300).unwrap();
    assert_eq!(g.spi_target(33), Some(3));
    assert_eq!(rd(&mut g, 0, 0x6108), 0x0002_0300);
    assert_eq!(rd(&mut g, 0, 0x610c), 0x7f);
    // 32-bit writes to each half.
    wr(&mut g, 0, 0x610c, 0);
    assert_eq!(g.spi_target(33), None, "0.0.2.3 matches no vCPU");
    wr(&mut g, 0, 0x6108, 0x100);
    assert_eq!(g.spi_target(33), Some(2));
    assert_eq!(g.dist_read(0, 0x6108, Double), Ok(0x100));
    // IROUTER0..31 are reserved; so is anything past the last SPI.
    g.dist_write(0, 0x6000, Double, 0x100).unwrap();
    assert_eq!(g.dist_read(0, 0x6000, Double), Ok(0));
    g.dist_write(0, 0x6000 + 8 * 96, Double, 0x100).unwrap();
    assert_eq!(g.dist_read(0, 0x6000 + 8 * 96, Double), Ok(0));
}

#[test]
fn legacy_and_reserved_registers_are_raz_wi() {
    let mut g = v3(2);
    for off in [
        0x0040, 0x0048, 0x0800, 0x0820, 0x0d04, 0x0e08, 0x0f00, 0x0f10, 0x0f20, 0x1000, 0x5ffc,
        0x8000, 0xc000, 0xffcc,
    ] {
        wr(&mut g, 0, off, u64::from(u32::MAX));
        assert_eq!(rd(&mut g, 0, off), 0, "{off:#x}");
    }
    // ITARGETSR and the SGI pending registers take bytes.
    g.dist_write(0, 0x0823, Byte, 0xff).unwrap();
    assert_eq!(g.dist_read(0, 0x0823, Byte), Ok(0));
    assert_eq!(g.dist_read(0, 0x0f21, Byte), Ok(0));
    assert_eq!(g.candidate_count(0) + g.candidate_count(1), 0);
}

#[test]
fn bad_accesses_are_errors_not_panics() {
    let mut g = v3(2);
    use VgicError::*;
    let cases: [(u64, AccessSize, VgicError); 9] = [
        (0x0000, Half, BadWidth),
        (0x0000, Byte, BadWidth),
        (0x0000, Double, BadWidth),
        (0x0108, Double, BadWidth),
        (0x0107, Half, Misaligned),
        (0x0102, Word, Misaligned),
        (0x6104, Double, Misaligned),
        (0x0c08, Byte, BadWidth),
        (0x1_0000, Word, OutOfFrame),
    ];
    for (off, size, err) in cases {
        assert_eq!(
            g.dist_read(0, off, size),
            Err(err),
            "read {off:#x} {size:?}"
        );
        assert_eq!(g.dist_write(0, off, size, 0), Err(err), "write {off:#x}");
    }
    assert_eq!(g.dist_read(2, 0, Word), Err(NoSuchVcpu));
    assert_eq!(g.dist_write(usize::MAX, 0, Word, 0), Err(NoSuchVcpu));
    assert_eq!(g.dist_read(0, u64::MAX, Word), Err(OutOfFrame));
    assert_eq!(g.dist_read(0, u64::MAX - 3, Word), Err(OutOfFrame));
}
