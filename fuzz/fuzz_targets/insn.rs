//! The A64 load/store decoder and the ISV=0 access planner
//! (`stratum_core::insn`, `stratum_core::mmio::{plan_from_insn, complete}`):
//! an instruction word, a register file, a fault address.
//!
//! Checked: the decoder never panics; every register it reports is the
//! one the encoding's field names (`Rt` \[4:0\], `Rn` \[9:5\], `Rt2`
//! \[14:10\], `Rm` \[20:16\]), so the decode round-trips to the word's
//! fields; a register-offset shift is 0 or log2 of the size; a literal
//! offset is a multiple of 4; only loads sign-extend. A planned access has
//! one access per element, each of the instruction's size, all in the
//! 4 KiB page of the fault, the faulting byte among them, store values
//! within the size; completing it refuses the wrong number of values and
//! leaves a W destination's upper half clear.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_core::addr::{Gva, Ipa};
use stratum_core::insn::{self, Addressing, MemInsn};
use stratum_core::mmio::{self, GuestRegs};
use stratum_fuzz::{Input, Regs};

fn field(word: u32, lsb: u32) -> u8 {
    ((word >> lsb) & 0x1f) as u8
}

fn check_fields(word: u32, d: &MemInsn) {
    let (rt, store, sign_extend) = match d {
        MemInsn::Single(s) => (s.rt, s.store, s.sign_extend),
        MemInsn::Pair(p) => {
            assert_eq!(p.rt2, field(word, 10), "Rt2 of {word:#010x}");
            (p.rt, p.store, p.sign_extend)
        }
    };
    assert_eq!(rt, field(word, 0), "Rt of {word:#010x}");
    assert!(
        !(store && sign_extend),
        "a store that sign-extends: {word:#010x}"
    );
    match d.addr() {
        Addressing::Offset { base, .. }
        | Addressing::PreIndex { base, .. }
        | Addressing::PostIndex { base, .. } => {
            assert_eq!(base, field(word, 5), "Rn of {word:#010x}");
        }
        Addressing::Register {
            base, index, shift, ..
        } => {
            assert_eq!(base, field(word, 5), "Rn of {word:#010x}");
            assert_eq!(index, field(word, 16), "Rm of {word:#010x}");
            let log2 = d.size().bytes().trailing_zeros() as u8;
            assert!(shift == 0 || shift == log2, "shift {shift} of {word:#010x}");
        }
        Addressing::Literal { pc_offset } => {
            assert_eq!(pc_offset % 4, 0, "literal offset of {word:#010x}");
        }
    }
    assert!(
        matches!(d.span(), 1 | 2 | 4 | 8 | 16),
        "span of {word:#010x}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let word = input.u32();
    let Ok(d) = insn::decode(word) else {
        return;
    };
    check_fields(word, &d);

    let mut regs = Regs::default();
    for x in regs.x.iter_mut() {
        *x = input.value();
    }
    regs.sp = input.value();
    regs.pc = input.u64();
    // A fault address near the one the instruction computes, often inside
    // its span, so planning gets past the FAR check.
    let far = if input.bool() {
        input.u64()
    } else {
        let base = match d.addr() {
            Addressing::Offset { base, imm } | Addressing::PreIndex { base, imm } => {
                let b = if base == 31 { regs.sp } else { regs.x(base) };
                b.wrapping_add_signed(imm)
            }
            Addressing::PostIndex { base, .. } => {
                if base == 31 {
                    regs.sp
                } else {
                    regs.x(base)
                }
            }
            Addressing::Register { base, .. } => {
                if base == 31 {
                    regs.sp
                } else {
                    regs.x(base)
                }
            }
            Addressing::Literal { pc_offset } => regs.pc.wrapping_add_signed(pc_offset),
        };
        base.wrapping_add(u64::from(input.u8() % 16))
    };
    let fault_ipa = Ipa(input.u64() & 0x000f_ffff_ffff_ffff);
    let Ok(plan) = mmio::plan_from_insn(&d, &regs, Gva(far), fault_ipa) else {
        return;
    };
    let accesses = plan.accesses();
    assert_eq!(accesses.len() as u64, d.elements());
    let page = fault_ipa.0 >> 12;
    let first = accesses[0].ipa.0;
    let last = accesses[accesses.len() - 1].ipa.0 + d.size().bytes() - 1;
    assert!(
        first >> 12 == page && last >> 12 == page,
        "{plan:?} leaves the page"
    );
    assert!(
        (first..=last).contains(&fault_ipa.0),
        "{plan:?} misses the fault"
    );
    assert_eq!(plan.is_load(), !d.store());
    for a in accesses {
        assert_eq!(a.size, d.size());
        match a.store_value {
            Some(v) => assert_eq!(v & !a.size.mask(), 0, "store value wider than the access"),
            None => assert!(!d.store()),
        }
    }

    let loaded = [input.u64(), input.u64(), input.u64()];
    let expected = if plan.is_load() { accesses.len() } else { 0 };
    let mut scratch = regs.clone();
    assert!(mmio::complete(&plan, &loaded[..expected + 1], &mut scratch).is_err());
    mmio::complete(&plan, &loaded[..expected], &mut regs).expect("the right count completes");
    if plan.is_load() {
        let (targets, dest_64) = match d {
            MemInsn::Single(s) => ([s.rt, 31], s.dest_64),
            MemInsn::Pair(p) => ([p.rt, p.rt2], p.dest_64),
        };
        if !dest_64 {
            for r in targets.into_iter().filter(|&r| r != 31) {
                // A pre/post-index writeback may land in a loaded register
                // only when it is the base, and the writeback is then
                // suppressed.
                assert_eq!(regs.x(r) >> 32, 0, "W destination X{r} of {word:#010x}");
            }
        }
    }
});
