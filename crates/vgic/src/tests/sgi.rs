//! SGI generation: GICv3 `ICC_SGI*R_EL1` target math, GICv2 `GICD_SGIR`
//! filters and per-source pending state.

use super::*;

/// `ICC_SGI1R_EL1` value from its fields.
fn sgi1r(intid: u64, aff3: u64, aff2: u64, aff1: u64, rs: u64, list: u64, irm: bool) -> u64 {
    list | aff1 << 16 | intid << 24 | aff2 << 32 | u64::from(irm) << 40 | rs << 44 | aff3 << 48
}

/// Which vCPUs have SGI `intid` pending.
fn pending_on(g: &Vgic, intid: u32) -> Vec<usize> {
    (0..g.nr_vcpus())
        .filter(|&v| g.is_pending(v, intid))
        .collect()
}

#[test]
fn v3_target_list_with_affinity_fields() {
    let mpidrs = [0x0, 0x1, 0x100, 0x10f, 0x01_0002_0100, 0x11, 0x21];
    let mut g = Vgic::new(GicVersion::V3, &mpidrs, 32).unwrap();
    // Aff1 = 1, list bits 0 and 15 → 0.0.1.0 and 0.0.1.15.
    g.sgi1r_write(0, sgi1r(3, 0, 0, 1, 0, 0x8001, false))
        .unwrap();
    assert_eq!(pending_on(&g, 3), [2, 3]);
    // Aff3.Aff2.Aff1 = 1.2.1, Aff0 = 0.
    g.sgi1r_write(0, sgi1r(4, 1, 2, 1, 0, 1, false)).unwrap();
    assert_eq!(pending_on(&g, 4), [4]);
    // Wrong Aff3: nobody.
    g.sgi1r_write(0, sgi1r(5, 0, 2, 1, 0, 1, false)).unwrap();
    assert_eq!(pending_on(&g, 5), [] as [usize; 0]);
    // RS = 1: list bit n is Aff0 = 16 + n; RS = 2 → 32 + n.
    g.sgi1r_write(0, sgi1r(6, 0, 0, 0, 1, 0b10, false)).unwrap();
    assert_eq!(pending_on(&g, 6), [5]);
    g.sgi1r_write(0, sgi1r(7, 0, 0, 0, 2, 0b10, false)).unwrap();
    assert_eq!(pending_on(&g, 7), [6]);
    // A list bit that matches no vCPU is ignored.
    g.sgi1r_write(0, sgi1r(8, 0, 0, 0, 0, 0b1100, false))
        .unwrap();
    assert_eq!(pending_on(&g, 8), [] as [usize; 0]);
    // IRM: everyone but the sender, whatever the other fields say.
    g.sgi1r_write(3, sgi1r(9, 0xff, 0xff, 0xff, 0xf, 0, true))
        .unwrap();
    assert_eq!(pending_on(&g, 9), [0, 1, 2, 4, 5, 6]);
    // Kicks name the targets.
    g.take_kicks();
    g.sgi1r_write(0, sgi1r(1, 0, 0, 0, 0, 0b11, false)).unwrap();
    assert_eq!(g.take_kicks().iter().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(g.sgi1r_write(7, 0), Err(crate::VgicError::NoSuchVcpu));
}

#[test]
fn v3_sgi_groups() {
    let mut g = v3(2);
    // SGI 2 is Group 0 on vCPU 1, Group 1 on vCPU 0.
    rwr(&mut g, 1, 0x1_0080, !(1u64 << 2) & 0xffff_ffff);
    let all = sgi1r(2, 0, 0, 0, 0, 0b11, false);
    g.sgi0r_write(0, all).unwrap();
    assert_eq!(pending_on(&g, 2), [1]);
    rwr(&mut g, 1, 0x1_0280, 1 << 2);
    g.asgi1r_write(0, all).unwrap();
    assert_eq!(pending_on(&g, 2), [1], "ASGI1R acts as SGI0R with DS = 1");
    rwr(&mut g, 1, 0x1_0280, 1 << 2);
    g.sgi1r_write(0, all).unwrap();
    assert_eq!(pending_on(&g, 2), [0, 1], "SGI1R: either group");
}

#[test]
fn v2_sgir_filters_and_sources() {
    let mut g = v2(4);
    let sgir = |filter: u64, list: u64, intid: u64| filter << 24 | list << 16 | intid;
    wr(&mut g, 1, 0xf00, sgir(0b00, 0b1001, 3));
    assert_eq!(pending_on(&g, 3), [0, 3]);
    wr(&mut g, 2, 0xf00, sgir(0b01, 0, 4));
    assert_eq!(pending_on(&g, 4), [0, 1, 3]);
    wr(&mut g, 2, 0xf00, sgir(0b10, 0xff, 5));
    assert_eq!(pending_on(&g, 5), [2]);
    wr(&mut g, 2, 0xf00, sgir(0b11, 0xff, 6));
    assert_eq!(pending_on(&g, 6), [] as [usize; 0], "reserved filter");
    // List bits of absent CPUs are ignored.
    wr(&mut g, 0, 0xf00, sgir(0b00, 0xf0, 7));
    assert_eq!(pending_on(&g, 7), [] as [usize; 0]);
    // The source CPU shows in SPENDSGIR's byte lane for the SGI, on the
    // target's bank only: SGI 3 (register 0, byte 3) from CPU 1.
    wr(&mut g, 2, 0xf00, sgir(0b00, 0b1, 3));
    assert_eq!(rd(&mut g, 0, 0xf20), 0b0110 << 24);
    assert_eq!(
        rd(&mut g, 0, 0xf10),
        0b0110 << 24,
        "CPENDSGIR reads the same"
    );
    assert_eq!(g.dist_read(3, 0xf23, Byte), Ok(0b10));
    // SGI 4 from CPU 2 → register 1, byte 0.
    assert_eq!(g.dist_read(1, 0xf24, Byte), Ok(0b100));
}

#[test]
fn v2_pending_sgi_registers_by_source_lane() {
    let mut g = v2(3);
    // Set SGI 9 pending from sources 0 and 2 (register 2, byte 1).
    g.dist_write(1, 0xf29, Byte, 0b101).unwrap();
    assert!(g.is_pending(1, 9) && !g.is_pending(0, 9));
    assert_eq!(rd(&mut g, 1, 0xf28), 0b101 << 8);
    // Bits of absent CPUs are RAZ/WI.
    g.dist_write(1, 0xf29, Byte, 0xf8).unwrap();
    assert_eq!(g.dist_read(1, 0xf29, Byte), Ok(0b101));
    // Clear source 0 only: still pending from source 2.
    wr(&mut g, 1, 0xf18, 0b001 << 8);
    assert_eq!(g.dist_read(1, 0xf29, Byte), Ok(0b100));
    assert!(g.is_pending(1, 9));
    wr(&mut g, 1, 0xf18, 0b100 << 8);
    assert!(!g.is_pending(1, 9));
    assert_eq!(rd(&mut g, 1, 0x200) & 0xffff, 0);
}
