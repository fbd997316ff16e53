//! MMIO plan/complete tests on a synthetic register file. Instruction words
//! come from `llvm-mc -triple=aarch64 -show-encoding`.

use super::*;
use crate::insn::{self, Extend, PairAccess, SingleAccess};

/// The shared test register file.
type Regs = super::test_regs::TestRegs;

/// Guest VA of the device page, and the IPA it maps to (QEMU virt GIC).
const VA: u64 = 0xffff_0000_0801_0000;
const IPA: u64 = 0x0801_0000;

fn decoded(word: u32) -> MemInsn {
    insn::decode(word).expect("test word is a supported load/store")
}

fn load(size: AccessSize, ipa: u64) -> MmioAccess {
    MmioAccess {
        ipa: Ipa(ipa),
        size,
        store_value: None,
    }
}

fn store(size: AccessSize, ipa: u64, value: u64) -> MmioAccess {
    MmioAccess {
        ipa: Ipa(ipa),
        size,
        store_value: Some(value),
    }
}

fn syndrome(size: AccessSize, reg: u8, sign_extend: bool, sixty_four: bool) -> AccessSyndrome {
    AccessSyndrome {
        size,
        sign_extend,
        reg,
        sixty_four,
        acquire_release: false,
    }
}

// ---- ISV = 1 ----------------------------------------------------------

#[test]
fn syndrome_store_uses_low_bits() {
    let regs = Regs::new().with(3, 0xdead_beef_1234_5678);
    let s = syndrome(AccessSize::Word, 3, false, false);
    let plan = plan_from_syndrome(&s, true, Ipa(0x0900_0018), &regs);
    assert_eq!(
        plan.accesses(),
        [store(AccessSize::Word, 0x0900_0018, 0x1234_5678)]
    );
    assert!(!plan.is_load());
    let mut after = regs.clone();
    assert_eq!(complete(&plan, &[], &mut after), Ok(()));
    assert_eq!(after, regs, "a store changes no register");
}

#[test]
fn syndrome_store_xzr_writes_zero() {
    let s = syndrome(AccessSize::Double, 31, false, true);
    let plan = plan_from_syndrome(&s, true, Ipa(0x0900_0000), &Regs::new());
    assert_eq!(plan.accesses(), [store(AccessSize::Double, 0x0900_0000, 0)]);
}

#[test]
fn syndrome_load_extensions() {
    use AccessSize::*;
    // (size, sign, SF, device value, expected register)
    let cases = [
        (Byte, true, false, 0x80, 0x0000_0000_ffff_ff80), // LDRSB Wt
        (Byte, true, true, 0x80, 0xffff_ffff_ffff_ff80),  // LDRSB Xt
        (Byte, true, true, 0x7f, 0x7f),                   // positive
        (Half, true, false, 0x8001, 0x0000_0000_ffff_8001), // LDRSH Wt
        (Half, true, true, 0x8001, 0xffff_ffff_ffff_8001), // LDRSH Xt
        (Word, true, true, 0x8000_0000, 0xffff_ffff_8000_0000), // LDRSW
        (Half, false, false, 0x8001, 0x8001),             // LDRH
        (Word, false, false, 0xffff_ffff, 0xffff_ffff),   // LDR Wt
        (Double, false, true, u64::MAX, u64::MAX),        // LDR Xt
        (Byte, false, false, 0x1234, 0x34),               // device junk above size
        (Word, false, false, 0xffff_ffff_0000_0001, 1),   // likewise
    ];
    for (size, sign, sf, value, expected) in cases {
        let s = syndrome(size, 5, sign, sf);
        let plan = plan_from_syndrome(&s, false, Ipa(0x0900_0004), &Regs::new());
        assert_eq!(plan.accesses(), [load(size, 0x0900_0004)]);
        assert!(plan.is_load());
        let mut regs = Regs::new();
        complete(&plan, &[value], &mut regs).expect("one value for one load");
        assert_eq!(regs.x[5], expected, "{size:?} sign={sign} sf={sf}");
        assert_eq!(regs, Regs::new().with(5, expected), "only x5 changes");
        // The direct MMIO route extends the same way.
        assert_eq!(
            syndrome_load_value(&s, value),
            expected,
            "{size:?} sign={sign} sf={sf}"
        );
    }
}

#[test]
fn syndrome_load_into_xzr_is_discarded() {
    let s = syndrome(AccessSize::Word, 31, false, false);
    let plan = plan_from_syndrome(&s, false, Ipa(0x0900_0000), &Regs::new());
    let mut regs = Regs::new();
    complete(&plan, &[0x1234], &mut regs).expect("one value");
    assert_eq!(regs, Regs::new(), "neither a register nor SP changes");
}

#[test]
fn complete_checks_value_count() {
    let s = syndrome(AccessSize::Word, 1, false, false);
    let load_plan = plan_from_syndrome(&s, false, Ipa(0x0900_0000), &Regs::new());
    let store_plan = plan_from_syndrome(&s, true, Ipa(0x0900_0000), &Regs::new());
    let mut regs = Regs::new();
    assert_eq!(
        complete(&load_plan, &[], &mut regs),
        Err(CompleteError::LoadedCount {
            expected: 1,
            got: 0
        })
    );
    assert_eq!(
        complete(&load_plan, &[1, 2], &mut regs),
        Err(CompleteError::LoadedCount {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(
        complete(&store_plan, &[1], &mut regs),
        Err(CompleteError::LoadedCount {
            expected: 0,
            got: 1
        })
    );
    assert_eq!(regs, Regs::new(), "a rejected completion changes nothing");
}

// ---- ISV = 0: every addressing mode -----------------------------------

#[test]
fn ldp_w_signed_offset() {
    // ldp w1, w2, [x0]
    let regs = Regs::new().with(0, VA + 8);
    let plan =
        plan_from_insn(&decoded(0x2940_0801), &regs, Gva(VA + 8), Ipa(IPA + 8)).expect("plannable");
    assert_eq!(
        plan.accesses(),
        [
            load(AccessSize::Word, IPA + 8),
            load(AccessSize::Word, IPA + 12)
        ]
    );
    let mut after = regs.clone();
    complete(&plan, &[0x1111_1111, 0xffff_ffff_ffff_ffff], &mut after).expect("two values");
    // W destinations: bits [63:32] cleared.
    assert_eq!(after, regs.with(1, 0x1111_1111).with(2, 0xffff_ffff));
}

#[test]
fn far_on_second_element_of_pair() {
    // ldp w1, w2, [x0] faulting on the second word: FAR and the IPA both
    // point 4 bytes in; the plan still starts at the first element.
    let regs = Regs::new().with(0, VA + 8);
    let plan = plan_from_insn(&decoded(0x2940_0801), &regs, Gva(VA + 12), Ipa(IPA + 12))
        .expect("plannable");
    assert_eq!(plan.accesses()[0].ipa, Ipa(IPA + 8));
    assert_eq!(plan.accesses()[1].ipa, Ipa(IPA + 12));
}

#[test]
fn stp_pre_index_on_sp() {
    // stp x29, x30, [sp, #-16]!
    let mut regs = Regs::new().with(29, 0x2929).with(30, 0x3030);
    regs.sp = VA + 0x110;
    let plan = plan_from_insn(
        &decoded(0xa9bf_7bfd),
        &regs,
        Gva(VA + 0x100),
        Ipa(IPA + 0x100),
    )
    .expect("plannable");
    assert_eq!(
        plan.accesses(),
        [
            store(AccessSize::Double, IPA + 0x100, 0x2929),
            store(AccessSize::Double, IPA + 0x108, 0x3030)
        ]
    );
    let mut after = regs.clone();
    complete(&plan, &[], &mut after).expect("store");
    let mut expected = regs;
    expected.sp = VA + 0x100;
    assert_eq!(after, expected);
}

#[test]
fn ldr_post_index_negative() {
    // ldr x7, [x8], #-8: accesses [x8], then x8 -= 8.
    let regs = Regs::new().with(8, VA + 0x40);
    let plan = plan_from_insn(
        &decoded(0xf85f_8507),
        &regs,
        Gva(VA + 0x40),
        Ipa(IPA + 0x40),
    )
    .expect("plannable");
    assert_eq!(plan.accesses(), [load(AccessSize::Double, IPA + 0x40)]);
    let mut after = regs.clone();
    complete(&plan, &[0x0123_4567_89ab_cdef], &mut after).expect("one value");
    assert_eq!(
        after,
        regs.with(7, 0x0123_4567_89ab_cdef).with(8, VA + 0x38)
    );
}

#[test]
fn ldrsb_pre_index_sign_extends_to_x() {
    // ldrsb x15, [x16, #-1]!
    let regs = Regs::new().with(16, VA + 0x21);
    let plan = plan_from_insn(
        &decoded(0x389f_fe0f),
        &regs,
        Gva(VA + 0x20),
        Ipa(IPA + 0x20),
    )
    .expect("plannable");
    assert_eq!(plan.accesses(), [load(AccessSize::Byte, IPA + 0x20)]);
    let mut after = regs.clone();
    complete(&plan, &[0xff], &mut after).expect("one value");
    assert_eq!(after, regs.with(15, u64::MAX).with(16, VA + 0x20));
}

#[test]
fn ldrsh_post_index_to_w() {
    // ldrsh w17, [x18], #2
    let regs = Regs::new().with(18, VA + 0x10);
    let plan = plan_from_insn(
        &decoded(0x78c0_2651),
        &regs,
        Gva(VA + 0x10),
        Ipa(IPA + 0x10),
    )
    .expect("plannable");
    let mut after = regs.clone();
    complete(&plan, &[0x8000], &mut after).expect("one value");
    assert_eq!(after, regs.with(17, 0xffff_8000).with(18, VA + 0x12));
}

#[test]
fn stur_negative_unscaled_offset() {
    // stur x25, [x26, #255] and ldur w23, [x24, #-256]
    let regs = Regs::new()
        .with(26, VA + 1)
        .with(25, 0x5555)
        .with(24, VA + 0x300);
    let plan = plan_from_insn(
        &decoded(0xf80f_f359),
        &regs,
        Gva(VA + 0x100),
        Ipa(IPA + 0x100),
    )
    .expect("plannable");
    assert_eq!(
        plan.accesses(),
        [store(AccessSize::Double, IPA + 0x100, 0x5555)]
    );
    let plan = plan_from_insn(
        &decoded(0xb850_0317),
        &regs,
        Gva(VA + 0x200),
        Ipa(IPA + 0x200),
    )
    .expect("plannable");
    assert_eq!(plan.accesses(), [load(AccessSize::Word, IPA + 0x200)]);
}

#[test]
fn register_offset_sxtw_negative_index() {
    // ldr w10, [x11, w12, sxtw #2] with w12 = -4 and junk above bit 31.
    let regs = Regs::new()
        .with(11, VA + 0x100)
        .with(12, 0xdead_beef_ffff_fffc);
    let plan = plan_from_insn(
        &decoded(0xb86c_d96a),
        &regs,
        Gva(VA + 0xf0),
        Ipa(IPA + 0xf0),
    )
    .expect("plannable");
    assert_eq!(plan.accesses(), [load(AccessSize::Word, IPA + 0xf0)]);
    let mut after = regs.clone();
    complete(&plan, &[7], &mut after).expect("one value");
    assert_eq!(after, regs.with(10, 7), "no writeback for register offset");
}

#[test]
fn register_offset_uxtw_and_lsl_and_xzr_index() {
    // ldr w7, [x8, w9, uxtw]: the upper half of x9 is ignored.
    let regs = Regs::new()
        .with(8, VA)
        .with(9, 0xffff_ffff_0000_0040)
        .with(5, VA + 0x10)
        .with(6, 3)
        .with(20, VA + 0x80);
    let plan = plan_from_insn(
        &decoded(0xb869_4907),
        &regs,
        Gva(VA + 0x40),
        Ipa(IPA + 0x40),
    )
    .expect("plannable");
    assert_eq!(plan.accesses(), [load(AccessSize::Word, IPA + 0x40)]);
    // ldr x4, [x5, x6, lsl #3]: VA + 0x10 + 24.
    let plan = plan_from_insn(
        &decoded(0xf866_78a4),
        &regs,
        Gva(VA + 0x28),
        Ipa(IPA + 0x28),
    )
    .expect("plannable");
    assert_eq!(plan.accesses(), [load(AccessSize::Double, IPA + 0x28)]);
    // ldrsw x19, [x20, xzr, lsl #2]: index XZR is zero.
    let plan = plan_from_insn(
        &decoded(0xb8bf_7a93),
        &regs,
        Gva(VA + 0x80),
        Ipa(IPA + 0x80),
    )
    .expect("plannable");
    let mut after = regs.clone();
    complete(&plan, &[0xffff_fffe], &mut after).expect("one value");
    assert_eq!(after.x[19], (-2i64) as u64);
}

#[test]
fn literal_is_pc_relative() {
    // ldr x2, #-4
    let regs = Regs::new();
    let far = regs.pc - 4;
    let plan = plan_from_insn(&decoded(0x58ff_ffe2), &regs, Gva(far), Ipa(IPA + 0xff0))
        .expect("plannable");
    assert_eq!(plan.accesses(), [load(AccessSize::Double, IPA + 0xff0)]);
}

#[test]
fn sp_base_and_xzr_data() {
    // ldrh w7, [sp, #8190]
    let mut regs = Regs::new();
    regs.sp = VA - 0x1000;
    let plan = plan_from_insn(
        &decoded(0x797f_ffe7),
        &regs,
        Gva(VA + 0xffe),
        Ipa(IPA + 0xffe),
    )
    .expect("plannable");
    assert_eq!(plan.accesses(), [load(AccessSize::Half, IPA + 0xffe)]);
    // stp wzr, w8, [x9, #-256]: the first element stores zero.
    let regs = Regs::new().with(9, VA + 0x200).with(8, 0x1_0000_0008);
    let plan = plan_from_insn(
        &decoded(0x2920_213f),
        &regs,
        Gva(VA + 0x100),
        Ipa(IPA + 0x100),
    )
    .expect("plannable");
    assert_eq!(
        plan.accesses(),
        [
            store(AccessSize::Word, IPA + 0x100, 0),
            store(AccessSize::Word, IPA + 0x104, 8)
        ]
    );
}

#[test]
fn ldpsw_sign_extends_both() {
    // ldpsw x13, x14, [x15], #-4
    let regs = Regs::new().with(15, VA + 0x10);
    let plan = plan_from_insn(
        &decoded(0x68ff_b9ed),
        &regs,
        Gva(VA + 0x10),
        Ipa(IPA + 0x10),
    )
    .expect("plannable");
    let mut after = regs.clone();
    complete(&plan, &[0x8000_0000, 0x7fff_ffff], &mut after).expect("two values");
    assert_eq!(
        after,
        regs.with(13, 0xffff_ffff_8000_0000)
            .with(14, 0x7fff_ffff)
            .with(15, VA + 0xc)
    );
}

#[test]
fn post_index_with_sp_base() {
    // ldr x1, [sp], #16 built directly: SP is written back.
    let insn = MemInsn::Single(SingleAccess {
        rt: 1,
        size: AccessSize::Double,
        sign_extend: false,
        dest_64: true,
        store: false,
        acquire_release: false,
        addr: Addressing::PostIndex { base: 31, imm: 16 },
    });
    let mut regs = Regs::new();
    regs.sp = VA + 0x20;
    let plan = plan_from_insn(&insn, &regs, Gva(VA + 0x20), Ipa(IPA + 0x20)).expect("plannable");
    let mut after = regs.clone();
    complete(&plan, &[9], &mut after).expect("one value");
    let mut expected = regs.with(1, 9);
    expected.sp = VA + 0x30;
    assert_eq!(after, expected);
}

#[test]
fn tagged_base_matches_untagged_far() {
    // Top Byte Ignore: x0 carries tag 0x5a, FAR_EL2[63:56] differs.
    let regs = Regs::new().with(0, (VA & !(0xff << 56)) | (0x5a << 56));
    let plan =
        plan_from_insn(&decoded(0xb940_0001), &regs, Gva(VA), Ipa(IPA)).expect("tag bits ignored");
    assert_eq!(plan.accesses(), [load(AccessSize::Word, IPA)]);
}

// ---- CONSTRAINED UNPREDICTABLE choices ----------------------------------

#[test]
fn load_writeback_to_rt_load_wins() {
    // ldr x1, [x1], #8: WBOVERLAPLD, resolved as WBSUPPRESS.
    let insn = MemInsn::Single(SingleAccess {
        rt: 1,
        size: AccessSize::Double,
        sign_extend: false,
        dest_64: true,
        store: false,
        acquire_release: false,
        addr: Addressing::PostIndex { base: 1, imm: 8 },
    });
    let regs = Regs::new().with(1, VA);
    let plan = plan_from_insn(&insn, &regs, Gva(VA), Ipa(IPA)).expect("plannable");
    let mut after = regs.clone();
    complete(&plan, &[0x77], &mut after).expect("one value");
    assert_eq!(after, regs.with(1, 0x77));
}

#[test]
fn pair_load_writeback_to_rt2_load_wins() {
    // ldp x2, x3, [x3, #16]!
    let insn = MemInsn::Pair(PairAccess {
        rt: 2,
        rt2: 3,
        size: AccessSize::Double,
        sign_extend: false,
        dest_64: true,
        store: false,
        acquire_release: false,
        addr: Addressing::PreIndex { base: 3, imm: 16 },
    });
    let regs = Regs::new().with(3, VA);
    let plan = plan_from_insn(&insn, &regs, Gva(VA + 16), Ipa(IPA + 16)).expect("plannable");
    let mut after = regs.clone();
    complete(&plan, &[0xaa, 0xbb], &mut after).expect("two values");
    assert_eq!(after, regs.with(2, 0xaa).with(3, 0xbb));
}

#[test]
fn store_writeback_to_rt_stores_old_value() {
    // str x1, [x1, #8]!: WBOVERLAPST, the pre-writeback value is stored.
    let insn = MemInsn::Single(SingleAccess {
        rt: 1,
        size: AccessSize::Double,
        sign_extend: false,
        dest_64: true,
        store: true,
        acquire_release: false,
        addr: Addressing::PreIndex { base: 1, imm: 8 },
    });
    let regs = Regs::new().with(1, VA);
    let plan = plan_from_insn(&insn, &regs, Gva(VA + 8), Ipa(IPA + 8)).expect("plannable");
    assert_eq!(plan.accesses(), [store(AccessSize::Double, IPA + 8, VA)]);
    let mut after = regs.clone();
    complete(&plan, &[], &mut after).expect("store");
    assert_eq!(after, regs.with(1, VA + 8));
}

#[test]
fn ldp_same_register_gets_second_element() {
    let insn = MemInsn::Pair(PairAccess {
        rt: 4,
        rt2: 4,
        size: AccessSize::Word,
        sign_extend: false,
        dest_64: false,
        store: false,
        acquire_release: false,
        addr: Addressing::Offset { base: 0, imm: 0 },
    });
    let regs = Regs::new().with(0, VA);
    let plan = plan_from_insn(&insn, &regs, Gva(VA), Ipa(IPA)).expect("plannable");
    let mut after = regs.clone();
    complete(&plan, &[1, 2], &mut after).expect("two values");
    assert_eq!(after, regs.with(4, 2));
}

// ---- Rejections -----------------------------------------------------------

#[test]
fn far_outside_span_is_rejected() {
    // ldr w1, [x2] with x2 pointing 4 bytes before FAR.
    let regs = Regs::new().with(2, VA);
    let word = decoded(0xb940_0041);
    assert_eq!(
        plan_from_insn(&word, &regs, Gva(VA + 4), Ipa(IPA + 4)),
        Err(PlanError::FarMismatch)
    );
    // FAR below the access.
    assert_eq!(
        plan_from_insn(&word, &regs, Gva(VA - 1), Ipa(IPA - 1)),
        Err(PlanError::FarMismatch)
    );
    // Register offset: a different index than at the fault.
    let regs = Regs::new().with(11, VA).with(12, 0x100);
    assert_eq!(
        plan_from_insn(&decoded(0xb86c_d96a), &regs, Gva(VA), Ipa(IPA)),
        Err(PlanError::FarMismatch)
    );
}

#[test]
fn access_crossing_the_page_is_rejected() {
    // ldp x3, x4, [sp, #-512]! ending past the page.
    let mut regs = Regs::new();
    regs.sp = VA + 0xff8 + 512;
    assert_eq!(
        plan_from_insn(
            &decoded(0xa9e0_13e3),
            &regs,
            Gva(VA + 0xff8),
            Ipa(IPA + 0xff8)
        ),
        Err(PlanError::CrossesPage)
    );
    // FAR on the second element, the first in the previous page.
    let regs = Regs::new().with(0, VA - 4);
    assert_eq!(
        plan_from_insn(&decoded(0x2940_0801), &regs, Gva(VA), Ipa(IPA)),
        Err(PlanError::CrossesPage)
    );
    // An unaligned word straddling the page end.
    let regs = Regs::new().with(2, VA + 0xffe);
    assert_eq!(
        plan_from_insn(
            &decoded(0xb940_0041),
            &regs,
            Gva(VA + 0xffe),
            Ipa(IPA + 0xffe)
        ),
        Err(PlanError::CrossesPage)
    );
}

#[test]
fn ipa_arithmetic_overflow_is_rejected() {
    // FAR 4 bytes into an LDP, but the reported IPA is 0.
    let regs = Regs::new().with(0, VA);
    assert_eq!(
        plan_from_insn(&decoded(0x2940_0801), &regs, Gva(VA + 4), Ipa(0)),
        Err(PlanError::Overflow)
    );
    // A span past the top of the address space.
    // str x11, [x12, #8]
    let regs = Regs::new().with(12, VA);
    assert_eq!(
        plan_from_insn(&decoded(0xf900_058b), &regs, Gva(VA + 8), Ipa(u64::MAX - 3)),
        Err(PlanError::Overflow)
    );
}

#[test]
fn extend_helper_matches_architecture() {
    // Extend::apply is what the register-offset path uses.
    assert_eq!(Extend::Sxtw.apply(0xffff_fffc), (-4i64) as u64);
}

// ---- Properties -----------------------------------------------------------

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

    /// Whatever the guest's instruction and registers, planning and
    /// completing never panic, and a plan never leaves the faulting page.
    #[test]
    fn plans_stay_in_the_faulting_page(
        raw in proptest::prelude::any::<u32>(),
        x in proptest::array::uniform31(proptest::prelude::any::<u64>()),
        sp in proptest::prelude::any::<u64>(),
        pc in proptest::prelude::any::<u64>(),
        far_delta in 0u64..24,
        fault_ipa in proptest::prelude::any::<u64>(),
        loaded in proptest::prelude::any::<[u64; 2]>(),
    ) {
        // Stay in the load/store group so most words decode.
        let word = (raw | 0x0800_0000) & !0x0200_0000;
        let Ok(insn) = insn::decode(word) else { return Ok(()) };
        let regs = Regs { x, sp, pc };
        // Aim FAR at the base register (plus a little) so that plans succeed
        // often, not only by chance.
        let base = match insn.addr() {
            Addressing::Offset { base, .. }
            | Addressing::PreIndex { base, .. }
            | Addressing::PostIndex { base, .. }
            | Addressing::Register { base, .. } => read_base(&regs, base),
            Addressing::Literal { pc_offset } => pc.wrapping_add_signed(pc_offset),
        };
        let far = Gva(base.wrapping_add(far_delta));
        if let Ok(plan) = plan_from_insn(&insn, &regs, far, Ipa(fault_ipa)) {
            let page = fault_ipa >> 12;
            proptest::prop_assert_eq!(plan.accesses().len() as u64, insn.elements());
            for a in plan.accesses() {
                proptest::prop_assert_eq!(a.ipa.0 >> 12, page);
                proptest::prop_assert_eq!((a.ipa.0 + a.size.bytes() - 1) >> 12, page);
                proptest::prop_assert_eq!(a.size, insn.size());
                proptest::prop_assert_eq!(a.store_value.is_some(), insn.store());
            }
            let n = if plan.is_load() { plan.accesses().len() } else { 0 };
            let mut after = regs.clone();
            proptest::prop_assert_eq!(complete(&plan, &loaded[..n], &mut after), Ok(()));
        }
    }
}
