//! Instruction decoder tests. Every word below was produced by `llvm-mc
//! -triple=aarch64 -show-encoding` from the assembly in its comment.

use super::Extend;
use super::*;
use AccessSize::{Byte, Double, Half, Word};
use proptest::prelude::*;

/// Load (zero-extending) into W or X.
fn ld(rt: u8, size: AccessSize, addr: Addressing) -> MemInsn {
    MemInsn::Single(SingleAccess {
        rt,
        size,
        sign_extend: false,
        dest_64: size == Double,
        store: false,
        acquire_release: false,
        addr,
    })
}

/// Sign-extending load into W (`dest_64 = false`) or X.
fn lds(rt: u8, size: AccessSize, dest_64: bool, addr: Addressing) -> MemInsn {
    MemInsn::Single(SingleAccess {
        rt,
        size,
        sign_extend: true,
        dest_64,
        store: false,
        acquire_release: false,
        addr,
    })
}

fn st(rt: u8, size: AccessSize, addr: Addressing) -> MemInsn {
    MemInsn::Single(SingleAccess {
        rt,
        size,
        sign_extend: false,
        dest_64: size == Double,
        store: true,
        acquire_release: false,
        addr,
    })
}

/// Marks a single access acquire/release.
fn ar(insn: MemInsn) -> MemInsn {
    match insn {
        MemInsn::Single(s) => MemInsn::Single(SingleAccess {
            acquire_release: true,
            ..s
        }),
        pair => pair,
    }
}

fn pair(rt: u8, rt2: u8, size: AccessSize, store: bool, addr: Addressing) -> MemInsn {
    MemInsn::Pair(PairAccess {
        rt,
        rt2,
        size,
        sign_extend: false,
        dest_64: size == Double,
        store,
        acquire_release: false,
        addr,
    })
}

fn ldpsw(rt: u8, rt2: u8, addr: Addressing) -> MemInsn {
    MemInsn::Pair(PairAccess {
        rt,
        rt2,
        size: Word,
        sign_extend: true,
        dest_64: true,
        store: false,
        acquire_release: false,
        addr,
    })
}

const fn off(base: u8, imm: i64) -> Addressing {
    Addressing::Offset { base, imm }
}
const fn pre(base: u8, imm: i64) -> Addressing {
    Addressing::PreIndex { base, imm }
}
const fn post(base: u8, imm: i64) -> Addressing {
    Addressing::PostIndex { base, imm }
}
const fn regoff(base: u8, index: u8, extend: Extend, shift: u8) -> Addressing {
    Addressing::Register {
        base,
        index,
        extend,
        shift,
    }
}
const fn lit(pc_offset: i64) -> Addressing {
    Addressing::Literal { pc_offset }
}

#[test]
fn single_register_forms() {
    let cases = [
        (0xb940_0041, ld(1, Word, off(2, 0))),           // ldr w1, [x2]
        (0xf97f_fc83, ld(3, Double, off(4, 32760))),     // ldr x3, [x4, #32760]
        (0x397f_fcc5, ld(5, Byte, off(6, 4095))),        // ldrb w5, [x6, #4095]
        (0x797f_ffe7, ld(7, Half, off(31, 8190))),       // ldrh w7, [sp, #8190]
        (0x3900_041f, st(31, Byte, off(0, 1))),          // strb wzr, [x0, #1]
        (0x7900_0149, st(9, Half, off(10, 0))),          // strh w9, [x10]
        (0xf900_058b, st(11, Double, off(12, 8))),       // str x11, [x12, #8]
        (0x39c0_01cd, lds(13, Byte, false, off(14, 0))), // ldrsb w13, [x14]
        (0x389f_fe0f, lds(15, Byte, true, pre(16, -1))), // ldrsb x15, [x16, #-1]!
        (0x78c0_2651, lds(17, Half, false, post(18, 2))), // ldrsh w17, [x18], #2
        (0x7980_0e93, lds(19, Half, true, off(20, 6))),  // ldrsh x19, [x20, #6]
        (0xb980_06d5, lds(21, Word, true, off(22, 4))),  // ldrsw x21, [x22, #4]
        (0xb850_0317, ld(23, Word, off(24, -256))),      // ldur w23, [x24, #-256]
        (0xf80f_f359, st(25, Double, off(26, 255))),     // stur x25, [x26, #255]
        (0x385f_f041, ld(1, Byte, off(2, -1))),          // ldurb w1, [x2, #-1]
        (0xb89f_c3e3, lds(3, Word, true, off(31, -4))),  // ldursw x3, [sp, #-4]
        (0xb840_4ca4, ld(4, Word, pre(5, 4))),           // ldr w4, [x5, #4]!
        (0xf81f_0fe6, st(6, Double, pre(31, -16))),      // str x6, [sp, #-16]!
        (0xf85f_8507, ld(7, Double, post(8, -8))),       // ldr x7, [x8], #-8
        (0x3800_1549, st(9, Byte, post(10, 1))),         // strb w9, [x10], #1
        // Unprivileged forms decode as plain accesses.
        (0xb840_4841, ld(1, Word, off(2, 4))), // ldtr w1, [x2, #4]
        (0x381f_f883, st(3, Byte, off(4, -1))), // sttrb w3, [x4, #-1]
        (0x7880_08c5, lds(5, Half, true, off(6, 0))), // ldtrsh x5, [x6]
    ];
    for (word, expected) in cases {
        assert_eq!(decode(word), Ok(expected), "{word:#010x}");
    }
}

#[test]
fn register_offset_forms() {
    use Extend::*;
    let cases = [
        (0xb863_6841, ld(1, Word, regoff(2, 3, Lsl, 0))), // ldr w1, [x2, x3]
        (0xf866_78a4, ld(4, Double, regoff(5, 6, Lsl, 3))), // ldr x4, [x5, x6, lsl #3]
        (0xb869_4907, ld(7, Word, regoff(8, 9, Uxtw, 0))), // ldr w7, [x8, w9, uxtw]
        (0xb86c_d96a, ld(10, Word, regoff(11, 12, Sxtw, 2))), // ldr w10, [x11, w12, sxtw #2]
        (0x386f_e9cd, ld(13, Byte, regoff(14, 15, Sxtx, 0))), // ldrb w13, [x14, x15, sxtx]
        (0x7872_da30, ld(16, Half, regoff(17, 18, Sxtw, 1))), // ldrh w16, [x17, w18, sxtw #1]
        (0xb8bf_7a93, lds(19, Word, true, regoff(20, 31, Lsl, 2))), // ldrsw x19, [x20, xzr, lsl #2]
        (0x3823_7841, st(1, Byte, regoff(2, 3, Lsl, 0))), // strb w1, [x2, x3, lsl #0]
    ];
    for (word, expected) in cases {
        assert_eq!(decode(word), Ok(expected), "{word:#010x}");
    }
    // option = 0b000 (UXTB) is unallocated for loads/stores.
    assert_eq!(decode(0xb863_0841), Err(InsnError::Unallocated));
}

#[test]
fn literal_forms() {
    let cases = [
        (0x1800_0041, ld(1, Word, lit(8))),              // ldr w1, #8
        (0x58ff_ffe2, ld(2, Double, lit(-4))),           // ldr x2, #-4
        (0x987f_ffe3, lds(3, Word, true, lit(1048572))), // ldrsw x3, #1048572
    ];
    for (word, expected) in cases {
        assert_eq!(decode(word), Ok(expected), "{word:#010x}");
    }
}

#[test]
fn pair_forms() {
    let cases = [
        (0x2940_0801, pair(1, 2, Word, false, off(0, 0))), // ldp w1, w2, [x0]
        (0xa9e0_13e3, pair(3, 4, Double, false, pre(31, -512))), // ldp x3, x4, [sp, #-512]!
        (0xa9bf_7bfd, pair(29, 30, Double, true, pre(31, -16))), // stp x29, x30, [sp, #-16]!
        (0x28df_98e5, pair(5, 6, Word, false, post(7, 252))), // ldp w5, w6, [x7], #252
        (0x2920_213f, pair(31, 8, Word, true, off(9, -256))), // stp wzr, w8, [x9, #-256]
        (0x6941_2d8a, ldpsw(10, 11, off(12, 8))),          // ldpsw x10, x11, [x12, #8]
        (0x68ff_b9ed, ldpsw(13, 14, post(15, -4))),        // ldpsw x13, x14, [x15], #-4
        (0xa85f_c650, pair(16, 17, Double, false, off(18, 504))), // ldnp x16, x17, [x18, #504]
        (0x283f_d2b3, pair(19, 20, Word, true, off(21, -4))), // stnp w19, w20, [x21, #-4]
        // FEAT_LSUI unprivileged pairs (encodings from LLVM's armv9.6a-lsui
        // tests): ldtp x21, x29, [x2, #504]; sttp x3, x5, [sp], #16.
        (0xe95f_f455, pair(21, 29, Double, false, off(2, 504))),
        (0xe881_17e3, pair(3, 5, Double, true, post(31, 16))),
    ];
    for (word, expected) in cases {
        assert_eq!(decode(word), Ok(expected), "{word:#010x}");
    }
    // LDNP with opc = 01 and any pair with opc = 11 in the no-allocate slot.
    assert_eq!(decode(0x685f_c650), Err(InsnError::Unallocated));
    assert_eq!(decode(0xe85f_c650), Err(InsnError::Unallocated));
}

#[test]
fn acquire_release_forms() {
    let cases = [
        (0x88df_fc41, ar(ld(1, Word, off(2, 0)))),  // ldar w1, [x2]
        (0x08df_ffe3, ar(ld(3, Byte, off(31, 0)))), // ldarb w3, [sp]
        (0xc89f_fca4, ar(st(4, Double, off(5, 0)))), // stlr x4, [x5]
        (0x489f_fce6, ar(st(6, Half, off(7, 0)))),  // stlrh w6, [x7]
        (0xc8df_7d28, ar(ld(8, Double, off(9, 0)))), // ldlar x8, [x9]
        (0xf8bf_c16a, ar(ld(10, Double, off(11, 0)))), // ldapr x10, [x11]
        (0x78bf_c1ac, ar(ld(12, Half, off(13, 0)))), // ldaprh w12, [x13]
        (0x995f_c1ee, ar(ld(14, Word, off(15, -4)))), // ldapur w14, [x15, #-4]
        (0x1980_1230, ar(lds(16, Byte, true, off(17, 1)))), // ldapursb x16, [x17, #1]
        (0x59c0_0272, ar(lds(18, Half, false, off(19, 0)))), // ldapursh w18, [x19]
        (0xd90f_f2b4, ar(st(20, Double, off(21, 255)))), // stlur x20, [x21, #255]
        (0x1910_02f6, ar(st(22, Byte, off(23, -256)))), // stlurb w22, [x23, #-256]
        (0x9980_8338, ar(lds(24, Word, true, off(25, 8)))), // ldapursw x24, [x25, #8]
    ];
    for (word, expected) in cases {
        assert_eq!(decode(word), Ok(expected), "{word:#010x}");
    }
    // LDAR with a should-be-one field cleared (Rt2 = 0, Rs = 0).
    assert_eq!(decode(0x88df_8041), Err(InsnError::Unallocated));
    assert_eq!(decode(0x88c0_fc41), Err(InsnError::Unallocated));
    // LDAPR with Rs != 31.
    assert_eq!(decode(0xf8a0_c16a), Err(InsnError::Unallocated));
}

#[test]
fn rejected_classes() {
    use UnsupportedKind::*;
    let cases: &[(u32, InsnError)] = &[
        (0xf980_0400, unsupported(Prefetch)), // prfm pldl1keep, [x0, #8]
        (0xf8a2_6833, unsupported(Prefetch)), // prfm pstl2strm, [x1, x2]
        (0xf89f_f06c, unsupported(Prefetch)), // prfum plil3keep, [x3, #-1]
        (0xd800_0080, unsupported(Prefetch)), // prfm pldl1keep, #16
        (0x885f_7c20, unsupported(Exclusive)), // ldxr w0, [x1]
        (0xc802_7c83, unsupported(Exclusive)), // stxr w2, x3, [x4]
        (0xc87f_98e5, unsupported(Exclusive)), // ldaxp x5, x6, [x7]
        (0xc95f_7fe9, unsupported(Exclusive)), // ldtxr x9, [sp] (FEAT_LSUI)
        (0x88a0_7c41, unsupported(Atomic)),   // cas w0, w1, [x2]
        (0x4820_7c82, unsupported(Atomic)),   // casp x0, x1, x2, x3, [x4]
        (0xc980_7c41, unsupported(Atomic)),   // cast x0, x1, [x2] (FEAT_LSUI)
        (0xf820_8041, unsupported(Atomic)),   // swp x0, x1, [x2]
        (0xb820_0041, unsupported(Atomic)),   // ldadd w0, w1, [x2]
        (0x1922_1161, unsupported(Atomic)),   // ldclrp x1, x2, [x11] (FEAT_LSE128)
        (0x3820_9081, unsupported(Atomic)),   // rcwclr x0, x1, [x4] (FEAT_THE)
        (0xf83f_d020, unsupported(SixtyFourByte)), // ld64b x0, [x1]
        (0xf83f_9062, unsupported(SixtyFourByte)), // st64b x2, [x3]
        (0xd920_0820, unsupported(MemoryTag)), // stg x0, [x1]
        (0xd960_1062, unsupported(MemoryTag)), // ldg x2, [x3, #16]
        (0x6900_0440, unsupported(MemoryTag)), // stgp x0, x1, [x2]
        (0x1901_0440, unsupported(MemoryCopySet)), // cpyfp [x0]!, [x1]!, x2!
        (0x1d01_0440, unsupported(MemoryCopySet)), // cpyp [x0]!, [x1]!, x2!
        (0x19c2_0420, unsupported(MemoryCopySet)), // setp [x0]!, x1!, x2
        (0xf820_1420, unsupported(PointerAuth)), // ldraa x0, [x1, #8]
        (0xf8ff_fc62, unsupported(PointerAuth)), // ldrab x2, [x3, #-8]!
        (0x9900_0a18, unsupported(Rcpc3)),    // stilp w24, w0, [x16, #-8]!
        (0x99c0_09e3, unsupported(Rcpc3)),    // ldapr w3, [x15], #4
        (0xd91f_0f7a, unsupported(GuardedControlStack)), // gcsstr x26, [x27]
        (0x3dc0_0020, unsupported(SimdFp)),   // ldr q0, [x1]
        (0xfd40_0462, unsupported(SimdFp)),   // ldr d2, [x3, #8]
        (0xbc00_44a4, unsupported(SimdFp)),   // str s4, [x5], #4
        (0xad40_1d06, unsupported(SimdFp)),   // ldp q6, q7, [x8]
        (0x4c40_7020, unsupported(SimdFp)),   // ld1 { v0.16b }, [x1]
        (0x1c00_0040, unsupported(SimdFp)),   // ldr s0, #8
        (0x1d1f_f9e3, unsupported(SimdFp)),   // stlur b3, [x15, #-1] (FEAT_LRCPC3)
        (0xa5e0_a000, unsupported(SimdFp)),   // ld1d { z0.d }, p0/z, [x0] (SVE)
        (0x8b02_0020, InsnError::NotLoadStore), // add x0, x1, x2
        (0x1400_0002, InsnError::NotLoadStore), // b #8
        (0xd503_201f, InsnError::NotLoadStore), // nop
    ];
    for &(word, expected) in cases {
        assert_eq!(decode(word), Err(expected), "{word:#010x}");
    }
    // Unallocated opc for a 32/64-bit load: size = 10, opc = 11.
    assert_eq!(decode(0xb9c0_0041), Err(InsnError::Unallocated));
    // size = 11, opc = 10 with writeback is unallocated, not a prefetch.
    assert_eq!(decode(0xf880_0c00), Err(InsnError::Unallocated));
}

#[test]
fn extend_semantics() {
    assert_eq!(Extend::Uxtw.apply(0xffff_ffff_8000_0000), 0x8000_0000);
    assert_eq!(
        Extend::Sxtw.apply(0x0000_0000_8000_0000),
        0xffff_ffff_8000_0000
    );
    assert_eq!(Extend::Sxtw.apply(0xffff_ffff_0000_0004), 4);
    assert_eq!(Extend::Lsl.apply(u64::MAX), u64::MAX);
    assert_eq!(Extend::Sxtx.apply(7), 7);
}

#[test]
fn helpers() {
    let insn = decode(0xa9bf_7bfd).expect("stp x29, x30, [sp, #-16]!");
    assert_eq!(insn.span(), 16);
    assert_eq!(insn.elements(), 2);
    assert!(insn.store());
    assert_eq!(insn.size(), Double);
    assert_eq!(insn.addr().writeback_base(), Some(31));
    assert_eq!(off(1, 0).writeback_base(), None);
    assert_eq!(post(3, 8).writeback_base(), Some(3));
}

/// Field-level plausibility of a successful decode against the raw word.
fn check_plausible(word: u32, insn: &MemInsn) {
    let f = |lsb: u32, w: u32| (word >> lsb) & ((1 << w) - 1);
    // Bits [28:25] = x1x0: only load/store words decode.
    assert_eq!(word & 0x0a00_0000, 0x0800_0000);
    let (rt, size, sign, dest_64, store, acq, addr) = match *insn {
        MemInsn::Single(s) => {
            if !matches!(s.addr, Addressing::Literal { .. }) {
                // The size field is bits [31:30] for every non-literal form.
                assert_eq!(s.size.bytes(), 1 << f(30, 2));
            }
            (
                s.rt,
                s.size,
                s.sign_extend,
                s.dest_64,
                s.store,
                s.acquire_release,
                s.addr,
            )
        }
        MemInsn::Pair(p) => {
            assert_eq!(u32::from(p.rt2), f(10, 5));
            assert!(matches!(p.size, Word | Double));
            assert!(!p.acquire_release);
            if p.sign_extend {
                assert_eq!(p.size, Word);
            }
            (
                p.rt,
                p.size,
                p.sign_extend,
                p.dest_64,
                p.store,
                p.acquire_release,
                p.addr,
            )
        }
    };
    assert_eq!(u32::from(rt), f(0, 5));
    if !dest_64 {
        assert!(size.bytes() <= 4);
    }
    if size == Double {
        assert!(dest_64 && !sign);
    }
    if sign {
        assert!(!store);
        if !dest_64 {
            assert!(size.bytes() <= 2);
        }
    }
    if acq {
        assert!(matches!(addr, Addressing::Offset { .. }));
    }
    match addr {
        Addressing::Offset { base, imm }
        | Addressing::PreIndex { base, imm }
        | Addressing::PostIndex { base, imm } => {
            assert_eq!(u32::from(base), f(5, 5));
            // Largest: unsigned 12-bit scaled by 8; smallest: imm7 * 8.
            assert!((-512..=32760).contains(&imm), "imm {imm}");
            if matches!(insn, MemInsn::Pair(_)) || (bit(word, 24) && f(27, 3) == 0b111) {
                assert_eq!(imm % size.bytes() as i64, 0);
            }
        }
        Addressing::Register {
            base, index, shift, ..
        } => {
            assert_eq!(u32::from(base), f(5, 5));
            assert_eq!(u32::from(index), f(16, 5));
            assert!(u64::from(shift) == 0 || 1 << shift == size.bytes());
        }
        Addressing::Literal { pc_offset } => {
            assert!(!store);
            assert_eq!(pc_offset % 4, 0);
            assert!((-(1 << 20)..(1 << 20)).contains(&pc_offset));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn decode_never_panics_and_is_plausible(word in any::<u32>()) {
        if let Ok(insn) = decode(word) {
            check_plausible(word, &insn);
        }
    }

    #[test]
    fn load_store_space_is_plausible(raw in any::<u32>()) {
        // Force the load/store group to exercise the interesting paths.
        let word = (raw | 0x0800_0000) & !0x0200_0000;
        match decode(word) {
            Ok(insn) => check_plausible(word, &insn),
            Err(e) => prop_assert_ne!(e, InsnError::NotLoadStore),
        }
    }
}
