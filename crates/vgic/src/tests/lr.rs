//! List-register encodings.

use super::*;
use proptest::prelude::*;

#[test]
fn v3_known_patterns() {
    let hw = ListRegister {
        vintid: 27,
        pintid: Some(27),
        priority: 0xa0,
        state: LrState::Pending,
        group1: true,
        eoi_maintenance: false,
        source_cpu: 0,
    };
    assert_eq!(hw.to_v3(), 0x70a0_001b_0000_001b);
    assert_eq!(ListRegister::from_v3(0x70a0_001b_0000_001b), hw);
    let sw = ListRegister {
        vintid: 287,
        pintid: None,
        priority: 0x08,
        state: LrState::Active,
        group1: false,
        eoi_maintenance: true,
        source_cpu: 0,
    };
    assert_eq!(sw.to_v3(), 0x8008_0200_0000_011f);
    assert_eq!(ListRegister::from_v3(0x8008_0200_0000_011f), sw);
    // HW = 1: bit 41 is part of pINTID, not EOI.
    let big = ListRegister::from_v3(1 << 61 | 0x1fff << 32 | 3 << 62);
    assert_eq!(big.pintid, Some(0x1fff));
    assert!(!big.eoi_maintenance);
    assert_eq!(big.state, LrState::PendingActive);
    assert_eq!(ListRegister::INVALID.to_v3(), 0);
}

#[test]
fn v2_known_patterns() {
    let level = ListRegister {
        vintid: 33,
        pintid: None,
        priority: 0xa0,
        state: LrState::Pending,
        group1: true,
        eoi_maintenance: true,
        source_cpu: 0,
    };
    assert_eq!(level.to_v2(), 0x5a08_0021);
    assert_eq!(ListRegister::from_v2(0x5a08_0021), level);
    let sgi = ListRegister {
        vintid: 3,
        pintid: None,
        priority: 0,
        state: LrState::PendingActive,
        group1: false,
        eoi_maintenance: false,
        source_cpu: 5,
    };
    assert_eq!(sgi.to_v2(), 0x3000_1403);
    assert_eq!(ListRegister::from_v2(0x3000_1403), sgi);
    let hw = ListRegister {
        vintid: 27,
        pintid: Some(27),
        priority: 0x80,
        state: LrState::Active,
        group1: true,
        eoi_maintenance: false,
        source_cpu: 0,
    };
    assert_eq!(hw.to_v2(), 0xe800_6c1b);
    assert_eq!(ListRegister::from_v2(0xe800_6c1b), hw);
    // Priority keeps its top five bits.
    let p = ListRegister {
        priority: 0xff,
        ..ListRegister::INVALID
    };
    assert_eq!(ListRegister::from_v2(p.to_v2()).priority, 0xf8);
}

fn any_state() -> impl Strategy<Value = LrState> {
    (0u64..4).prop_map(LrState::from_bits)
}

proptest! {
    #[test]
    fn v3_round_trip(
        vintid in any::<u32>(),
        pintid in proptest::option::of(0u32..0x2000),
        priority in any::<u8>(),
        state in any_state(),
        group1 in any::<bool>(),
        eoi in any::<bool>(),
    ) {
        let lr = ListRegister {
            vintid,
            pintid,
            priority,
            state,
            group1,
            eoi_maintenance: eoi && pintid.is_none(),
            source_cpu: 0,
        };
        prop_assert_eq!(ListRegister::from_v3(lr.to_v3()), lr);
    }

    #[test]
    fn v2_round_trip(
        vintid in 0u32..1024,
        pintid in proptest::option::of(0u32..1024),
        priority in any::<u8>(),
        state in any_state(),
        group1 in any::<bool>(),
        eoi in any::<bool>(),
        source in 0u8..8,
    ) {
        let lr = ListRegister {
            vintid,
            pintid,
            priority: priority & 0xf8,
            state,
            group1,
            eoi_maintenance: eoi && pintid.is_none(),
            source_cpu: if pintid.is_none() { source } else { 0 },
        };
        prop_assert_eq!(ListRegister::from_v2(lr.to_v2()), lr);
    }

    #[test]
    fn raw_values_round_trip(v3 in any::<u64>(), v2 in any::<u32>()) {
        // Decoding then encoding keeps every defined field.
        const V3_DEFINED: u64 = 0xf0ff_0000_ffff_ffff;
        let lr = ListRegister::from_v3(v3);
        let pintid_or_eoi = if v3 & 1 << 61 != 0 { 0x1fff << 32 } else { 1 << 41 };
        prop_assert_eq!(lr.to_v3(), v3 & (V3_DEFINED | pintid_or_eoi) & !(1 << 59));
        let lr = ListRegister::from_v2(v2);
        let hw_fields = if v2 & 1 << 31 != 0 { 0x3ff << 10 } else { 0x7 << 10 | 1 << 19 };
        prop_assert_eq!(lr.to_v2(), v2 & (0xff80_03ff | hw_fields));
    }
}

#[test]
fn a_hardware_link_can_become_an_eoi_maintenance_request() {
    let timer = ListRegister {
        vintid: 27,
        pintid: Some(27),
        priority: 0xa0,
        state: LrState::Pending,
        group1: true,
        eoi_maintenance: false,
        source_cpu: 0,
    };
    let swapped = timer.with_eoi_instead_of_hw();
    assert_eq!(swapped.pintid, None);
    assert!(swapped.eoi_maintenance);
    assert_eq!(
        (
            swapped.vintid,
            swapped.priority,
            swapped.state,
            swapped.group1
        ),
        (27, 0xa0, LrState::Pending, true)
    );
    // GICv2: HW (bit 31) clear, EOI (bit 19) set, no source CPU.
    let raw = swapped.to_v2();
    assert_eq!(raw & (1 << 31), 0);
    assert_ne!(raw & (1 << 19), 0);
    assert_eq!((raw >> 10) & 0x7, 0);
    // Software interrupts are left alone.
    let sw = ListRegister {
        pintid: None,
        ..timer
    };
    assert_eq!(sw.with_eoi_instead_of_hw(), sw);
}
