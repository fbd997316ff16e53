use super::*;
use crate::esr::{self, Exit};

/// The `MRS`/`MSR` syndrome for `(op0, op1, CRn, CRm, op2)`, decoded as the
/// exit path does.
fn access(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8, read: bool) -> SysRegAccess {
    let iss = (u64::from(op0) << 20)
        | (u64::from(op2) << 17)
        | (u64::from(op1) << 14)
        | (u64::from(crn) << 10)
        | (3 << 5)
        | (u64::from(crm) << 1)
        | u64::from(read);
    let esr = (0x18 << 26) | (1 << 25) | iss;
    let Exit::SysReg(a) = esr::decode(esr) else {
        panic!("not a system-register trap")
    };
    a
}

fn reg(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Option<Reg> {
    classify(&access(op0, op1, crn, crm, op2, true))
}

/// A64 `MRS x0, <reg>` words from the Arm ARM encodings, checked against
/// the decode: the instruction's bits 20:5 are the syndrome's fields.
#[test]
fn instruction_encodings_name_the_registers() {
    let cases: &[(u32, Reg)] = &[
        (0xd530_0080, Reg::Debug(DebugReg::Bvr(0))), // mrs x0, dbgbvr0_el1
        (0xd530_0fa0, Reg::Debug(DebugReg::Bcr(15))), // mrs x0, dbgbcr15_el1
        (0xd530_01c0, Reg::Debug(DebugReg::Wvr(1))), // mrs x0, dbgwvr1_el1
        (0xd530_03e0, Reg::Debug(DebugReg::Wcr(3))), // mrs x0, dbgwcr3_el1
        (0xd530_0240, Reg::Debug(DebugReg::Mdscr)),  // mrs x0, mdscr_el1
        (0xd530_0200, Reg::Debug(DebugReg::Mdccint)), // mrs x0, mdccint_el1
        (0xd530_1180, Reg::Debug(DebugReg::Oslsr)),  // mrs x0, oslsr_el1
        (0xd510_1080, Reg::Debug(DebugReg::Oslar)),  // msr oslar_el1, x0
        (0xd530_1380, Reg::Debug(DebugReg::Osdlr)),  // mrs x0, osdlr_el1
        (0xd530_1480, Reg::Debug(DebugReg::Dbgprcr)), // mrs x0, dbgprcr_el1
        (0xd530_1000, Reg::Debug(DebugReg::Mdrar)),  // mrs x0, mdrar_el1
        (0xd530_78c0, Reg::Debug(DebugReg::ClaimSet)), // mrs x0, dbgclaimset_el1
        (0xd530_79c0, Reg::Debug(DebugReg::ClaimClr)), // mrs x0, dbgclaimclr_el1
        (0xd530_7ec0, Reg::Debug(DebugReg::AuthStatus)), // mrs x0, dbgauthstatus_el1
        (0xd533_0100, Reg::Debug(DebugReg::Mdccsr)), // mrs x0, mdccsr_el0
        (0xd533_0400, Reg::Debug(DebugReg::Dbgdtr)), // mrs x0, dbgdtr_el0
        (0xd533_0500, Reg::Debug(DebugReg::DbgdtrRxTx)), // mrs x0, dbgdtrrx_el0
        (0xd530_0040, Reg::Debug(DebugReg::Osdtrrx)), // mrs x0, osdtrrx_el1
        (0xd530_0340, Reg::Debug(DebugReg::Osdtrtx)), // mrs x0, osdtrtx_el1
        (0xd530_0640, Reg::Debug(DebugReg::Oseccr)), // mrs x0, oseccr_el1
        (0xd53b_9c00, Reg::Pmu(PmuReg::Pmcr)),       // mrs x0, pmcr_el0
        (0xd53b_9c20, Reg::Pmu(PmuReg::CntenSet)),   // mrs x0, pmcntenset_el0
        (0xd53b_9c40, Reg::Pmu(PmuReg::CntenClr)),   // mrs x0, pmcntenclr_el0
        (0xd53b_9c60, Reg::Pmu(PmuReg::OvsClr)),     // mrs x0, pmovsclr_el0
        (0xd51b_9c80, Reg::Pmu(PmuReg::Swinc)),      // msr pmswinc_el0, x0
        (0xd53b_9ca0, Reg::Pmu(PmuReg::Selr)),       // mrs x0, pmselr_el0
        (0xd53b_9cc0, Reg::Pmu(PmuReg::Ceid0)),      // mrs x0, pmceid0_el0
        (0xd53b_9ce0, Reg::Pmu(PmuReg::Ceid1)),      // mrs x0, pmceid1_el0
        (0xd53b_9d00, Reg::Pmu(PmuReg::Ccntr)),      // mrs x0, pmccntr_el0
        (0xd53b_9d20, Reg::Pmu(PmuReg::Xevtyper)),   // mrs x0, pmxevtyper_el0
        (0xd53b_9d40, Reg::Pmu(PmuReg::Xevcntr)),    // mrs x0, pmxevcntr_el0
        (0xd53b_9e00, Reg::Pmu(PmuReg::Userenr)),    // mrs x0, pmuserenr_el0
        (0xd53b_9e60, Reg::Pmu(PmuReg::OvsSet)),     // mrs x0, pmovsset_el0
        (0xd538_9e20, Reg::Pmu(PmuReg::IntenSet)),   // mrs x0, pmintenset_el1
        (0xd538_9e40, Reg::Pmu(PmuReg::IntenClr)),   // mrs x0, pmintenclr_el1
        (0xd538_9ec0, Reg::Pmu(PmuReg::Mmir)),       // mrs x0, pmmir_el1
        (0xd53b_e800, Reg::Pmu(PmuReg::Evcntr(0))),  // mrs x0, pmevcntr0_el0
        (0xd53b_ebc0, Reg::Pmu(PmuReg::Evcntr(30))), // mrs x0, pmevcntr30_el0
        (0xd53b_ec20, Reg::Pmu(PmuReg::Evtyper(1))), // mrs x0, pmevtyper1_el0
        (0xd53b_efc0, Reg::Pmu(PmuReg::Evtyper(30))), // mrs x0, pmevtyper30_el0
        (0xd53b_efe0, Reg::Pmu(PmuReg::Ccfiltr)),    // mrs x0, pmccfiltr_el0
    ];
    for &(insn, want) in cases {
        let f = |shift: u32, width: u32| ((insn >> shift) & ((1 << width) - 1)) as u8;
        let a = access(
            f(19, 2),
            f(16, 3),
            f(12, 4),
            f(8, 4),
            f(5, 3),
            insn & (1 << 21) != 0,
        );
        assert_eq!(classify(&a), Some(want), "{insn:#010x}");
    }
}

#[test]
fn every_encoding_of_the_two_spaces_is_named_once_or_refused() {
    let mut named = 0;
    for op1 in 0..8 {
        for crn in 0..16 {
            for crm in 0..16 {
                for op2 in 0..8 {
                    if let Some(r) = reg(2, op1, crn, crm, op2) {
                        named += 1;
                        assert!(matches!(r, Reg::Debug(_)));
                    }
                    // Non-PMU op0=3 registers (ID, GIC, timers) are not ours.
                    if let Some(r) = reg(3, op1, crn, crm, op2) {
                        assert!(crn == 9 || crn == 14, "{r:?} at c{crn}");
                        assert!(matches!(r, Reg::Pmu(_)));
                    }
                }
            }
        }
    }
    // 16 each of BVR/BCR/WVR/WCR, and 16 single debug registers.
    assert_eq!(named, 64 + 16);
    assert_eq!(
        reg(3, 0, 0, 4, 0),
        None,
        "ID_AA64PFR0_EL1 is not a PMU register"
    );
    assert_eq!(reg(3, 3, 14, 0, 1), None, "CNTPCT_EL0 is the timer's");
    assert_eq!(reg(3, 3, 9, 14, 1), None, "reserved");
    assert_eq!(reg(1, 0, 7, 5, 0), None, "a system instruction");
}

fn a57() -> Limits {
    // ID_AA64DFR0_EL1 of QEMU's cortex-a57: 6 breakpoints, 4 watchpoints,
    // PMUv3; PMCR_EL0.N = 6.
    Limits::from_id(0x1030_5106, 6 << 11)
}

#[test]
fn limits_come_from_the_id_registers() {
    assert_eq!(
        a57(),
        Limits {
            breakpoints: 6,
            watchpoints: 4,
            counters: Some(6)
        }
    );
    assert_eq!(pmu_version(0x1030_5106), 1);
    assert_eq!(Limits::from_id(0, u64::MAX).counters, None, "no PMU");
    assert_eq!(
        Limits::from_id(0xf00, 6 << 11).counters,
        None,
        "IMP DEF PMU"
    );
    assert_eq!(a57().counter_mask(), 0x8000_003f);
}

#[test]
fn accesses_beyond_the_cpu_or_against_the_direction_are_undefined() {
    let l = a57();
    let ok = |r, read| l.allows(r, read);
    assert!(ok(Reg::Debug(DebugReg::Bvr(5)), true));
    assert!(!ok(Reg::Debug(DebugReg::Bvr(6)), true));
    assert!(!ok(Reg::Debug(DebugReg::Bcr(15)), false));
    assert!(ok(Reg::Debug(DebugReg::Wcr(3)), false));
    assert!(!ok(Reg::Debug(DebugReg::Wvr(4)), true));
    assert!(
        !ok(Reg::Debug(DebugReg::Oslar), true),
        "OSLAR is write-only"
    );
    assert!(ok(Reg::Debug(DebugReg::Oslar), false));
    assert!(
        !ok(Reg::Debug(DebugReg::Oslsr), false),
        "OSLSR is read-only"
    );
    assert!(!ok(Reg::Debug(DebugReg::AuthStatus), false));
    assert!(!ok(Reg::Debug(DebugReg::Mdccsr), false));
    assert!(!ok(Reg::Pmu(PmuReg::Swinc), true), "PMSWINC is write-only");
    assert!(!ok(Reg::Pmu(PmuReg::Ceid0), false));
    assert!(ok(Reg::Pmu(PmuReg::Evcntr(5)), true));
    assert!(!ok(Reg::Pmu(PmuReg::Evcntr(6)), true));
    assert!(!ok(Reg::Pmu(PmuReg::Evtyper(30)), false));
    assert!(ok(Reg::Pmu(PmuReg::Ccfiltr), false));
    let none = Limits::from_id(0x1030_5006, 0);
    assert!(!none.allows(Reg::Pmu(PmuReg::Pmcr), true), "no PMU: UNDEF");
    assert!(none.allows(Reg::Debug(DebugReg::Mdscr), true));
}

/// A CPU's debug and PMU registers, as plain storage, with a log of the
/// writes.
#[derive(Default)]
struct FakeHw {
    regs: std::collections::BTreeMap<String, u64>,
    writes: Vec<(HwReg, u64)>,
}

impl DebugPmuHw for FakeHw {
    fn read(&mut self, reg: HwReg) -> u64 {
        self.regs.get(&format!("{reg:?}")).copied().unwrap_or(0)
    }
    fn write(&mut self, reg: HwReg, value: u64) {
        self.writes.push((reg, value));
        self.regs.insert(format!("{reg:?}"), value);
    }
}

impl FakeHw {
    fn set(&mut self, reg: HwReg, value: u64) {
        self.regs.insert(format!("{reg:?}"), value);
    }
}

fn run(reg: Reg, read: bool, value: u64, shadow: &mut Shadow, hw: &mut FakeHw) -> u64 {
    emulate(reg, read, value, &a57(), shadow, hw)
}

#[test]
fn breakpoints_watchpoints_and_mdscr_are_performed_on_the_cpu() {
    let (mut s, mut hw) = (Shadow::default(), FakeHw::default());
    run(
        Reg::Debug(DebugReg::Bvr(2)),
        false,
        0x4000_1000,
        &mut s,
        &mut hw,
    );
    run(Reg::Debug(DebugReg::Bcr(2)), false, 0x1e7, &mut s, &mut hw);
    run(Reg::Debug(DebugReg::Wcr(1)), false, 0x1ff7, &mut s, &mut hw);
    assert_eq!(
        hw.writes,
        [
            (HwReg::Bvr(2), 0x4000_1000),
            (HwReg::Bcr(2), 0x1e7),
            (HwReg::Wcr(1), 0x1ff7)
        ]
    );
    assert_eq!(
        run(Reg::Debug(DebugReg::Bvr(2)), true, 0, &mut s, &mut hw),
        0x4000_1000
    );
    hw.set(HwReg::Mdscr, 0xa001);
    assert_eq!(
        run(Reg::Debug(DebugReg::Mdscr), true, 0, &mut s, &mut hw),
        0xa001
    );
    // The OS lock: OSLAR's only bit goes to the CPU, OSLSR comes from it.
    run(
        Reg::Debug(DebugReg::Oslar),
        false,
        0xffff_ffff,
        &mut s,
        &mut hw,
    );
    assert_eq!(hw.writes.last(), Some(&(HwReg::Oslar, 1)));
    hw.set(HwReg::Oslsr, 0b1010);
    assert_eq!(
        run(Reg::Debug(DebugReg::Oslsr), true, 0, &mut s, &mut hw),
        0b1010
    );
    for r in [
        DebugReg::Bvr(0),
        DebugReg::Mdscr,
        DebugReg::Oslar,
        DebugReg::Oslsr,
    ] {
        assert_eq!(Reg::Debug(r).owns(), Owns::Debug);
    }
}

#[test]
fn external_debug_registers_are_emulated_and_reads_answer() {
    let (mut s, mut hw) = (Shadow::default(), FakeHw::default());
    // MDCCINT_EL1 keeps its two enables (reported: a read once left its
    // destination untouched; here it always answers).
    run(
        Reg::Debug(DebugReg::Mdccint),
        false,
        u64::MAX,
        &mut s,
        &mut hw,
    );
    assert_eq!(
        run(Reg::Debug(DebugReg::Mdccint), true, 0, &mut s, &mut hw),
        MDCCINT_WRITABLE
    );
    // Claim tags: set, read back through CLR, clear.
    run(
        Reg::Debug(DebugReg::ClaimSet),
        false,
        0x1_05,
        &mut s,
        &mut hw,
    );
    assert_eq!(
        run(Reg::Debug(DebugReg::ClaimSet), true, 0, &mut s, &mut hw),
        0xff
    );
    assert_eq!(
        run(Reg::Debug(DebugReg::ClaimClr), true, 0, &mut s, &mut hw),
        0x05
    );
    run(Reg::Debug(DebugReg::ClaimClr), false, 0x04, &mut s, &mut hw);
    assert_eq!(
        run(Reg::Debug(DebugReg::ClaimClr), true, 0, &mut s, &mut hw),
        0x01
    );
    assert_eq!(
        run(Reg::Debug(DebugReg::AuthStatus), true, 0, &mut s, &mut hw),
        AUTHSTATUS
    );
    for r in [
        DebugReg::Osdlr,
        DebugReg::Dbgprcr,
        DebugReg::Mdrar,
        DebugReg::Mdccsr,
        DebugReg::Dbgdtr,
        DebugReg::DbgdtrRxTx,
        DebugReg::Osdtrrx,
        DebugReg::Osdtrtx,
        DebugReg::Oseccr,
    ] {
        run(Reg::Debug(r), false, u64::MAX, &mut s, &mut hw);
        assert_eq!(run(Reg::Debug(r), true, 0, &mut s, &mut hw), 0, "{r:?}");
        assert_eq!(Reg::Debug(r).owns(), Owns::Nothing);
    }
    assert!(hw.writes.is_empty(), "none of these reach the CPU");
}

#[test]
fn event_type_and_filter_writes_never_count_at_el2() {
    let (mut s, mut hw) = (Shadow::default(), FakeHw::default());
    let asked = NSH | (1 << 31) | 0x08;
    run(Reg::Pmu(PmuReg::Evtyper(3)), false, asked, &mut s, &mut hw);
    run(Reg::Pmu(PmuReg::Ccfiltr), false, asked, &mut s, &mut hw);
    hw.set(HwReg::Selr, 31);
    run(Reg::Pmu(PmuReg::Xevtyper), false, asked, &mut s, &mut hw);
    hw.set(HwReg::Selr, 2);
    run(Reg::Pmu(PmuReg::Xevtyper), false, asked, &mut s, &mut hw);
    assert_eq!(
        hw.writes,
        [
            (HwReg::Evtyper(3), (1 << 31) | 0x08),
            (HwReg::Ccfiltr, (1 << 31) | 0x08),
            (HwReg::Ccfiltr, (1 << 31) | 0x08),
            (HwReg::Evtyper(2), (1 << 31) | 0x08),
        ]
    );
    assert!(hw.writes.iter().all(|&(_, v)| v & NSH == 0));
    assert_eq!(without_nsh(u64::MAX), !NSH);
}

#[test]
fn selected_counters_beyond_n_read_as_zero() {
    let (mut s, mut hw) = (Shadow::default(), FakeHw::default());
    hw.set(HwReg::Evcntr(4), 77);
    hw.set(HwReg::Selr, 4);
    assert_eq!(run(Reg::Pmu(PmuReg::Xevcntr), true, 0, &mut s, &mut hw), 77);
    for sel in [6, 30, 31] {
        hw.set(HwReg::Selr, sel);
        assert_eq!(run(Reg::Pmu(PmuReg::Xevcntr), true, 0, &mut s, &mut hw), 0);
        run(Reg::Pmu(PmuReg::Xevcntr), false, 5, &mut s, &mut hw);
    }
    hw.set(HwReg::Selr, 6);
    assert_eq!(run(Reg::Pmu(PmuReg::Xevtyper), true, 0, &mut s, &mut hw), 0);
    assert!(hw.writes.is_empty());
}

#[test]
fn counter_sets_are_masked_to_the_counters_that_exist() {
    let (mut s, mut hw) = (Shadow::default(), FakeHw::default());
    run(Reg::Pmu(PmuReg::CntenSet), false, u64::MAX, &mut s, &mut hw);
    run(Reg::Pmu(PmuReg::Pmcr), false, u64::MAX, &mut s, &mut hw);
    run(Reg::Pmu(PmuReg::Selr), false, u64::MAX, &mut s, &mut hw);
    assert_eq!(
        hw.writes,
        [
            (HwReg::CntenSet, 0x8000_003f),
            (HwReg::Pmcr, PMCR_WRITABLE),
            (HwReg::Selr, 0x1f)
        ]
    );
}

#[test]
fn the_overflow_interrupt_enables_stay_with_the_vcpu() {
    let (mut s, mut hw) = (Shadow::default(), FakeHw::default());
    run(Reg::Pmu(PmuReg::IntenSet), false, u64::MAX, &mut s, &mut hw);
    assert_eq!(
        run(Reg::Pmu(PmuReg::IntenSet), true, 0, &mut s, &mut hw),
        0x8000_003f
    );
    run(
        Reg::Pmu(PmuReg::IntenClr),
        false,
        0x8000_0001,
        &mut s,
        &mut hw,
    );
    assert_eq!(
        run(Reg::Pmu(PmuReg::IntenClr), true, 0, &mut s, &mut hw),
        0x3e
    );
    assert!(hw.writes.is_empty(), "PMINTEN never reaches the CPU");
    assert_eq!(Reg::Pmu(PmuReg::IntenSet).owns(), Owns::Nothing);
    assert_eq!(run(Reg::Pmu(PmuReg::Mmir), true, 0, &mut s, &mut hw), 0);
}

#[test]
fn software_increment_counts_enabled_sw_incr_counters_only() {
    let (mut s, mut hw) = (Shadow::default(), FakeHw::default());
    // Counter 0: SW_INCR, enabled. 1: SW_INCR, disabled. 2: another
    // event, enabled. 3: SW_INCR, enabled, about to wrap.
    hw.set(HwReg::Evtyper(0), (1 << 31) | EVENT_SW_INCR);
    hw.set(HwReg::Evtyper(1), EVENT_SW_INCR);
    hw.set(HwReg::Evtyper(2), 0x08);
    hw.set(HwReg::Evtyper(3), EVENT_SW_INCR);
    hw.set(HwReg::Evcntr(0), 10);
    hw.set(HwReg::Evcntr(3), 0xffff_ffff);
    hw.set(HwReg::CntenSet, 0b1101);
    // PMCR.E clear: nothing counts.
    run(Reg::Pmu(PmuReg::Swinc), false, 0xf, &mut s, &mut hw);
    assert!(hw.writes.is_empty());
    hw.set(HwReg::Pmcr, PMCR_E);
    run(Reg::Pmu(PmuReg::Swinc), false, 0x8000_000f, &mut s, &mut hw);
    assert_eq!(
        hw.writes,
        [
            (HwReg::Evcntr(0), 11),
            (HwReg::Evcntr(3), 0),
            (HwReg::OvsSet, 1 << 3)
        ]
    );
}

/// [`HwOwners::switch`], `None` as nothing to do.
fn switch_of(o: &mut HwOwners, out: Option<VcpuRef>, next: VcpuRef, slot: usize) -> Switch {
    o.switch(out, next, slot).unwrap_or(Switch::NOTHING)
}

#[test]
fn nothing_to_do_is_none() {
    let mut o = HwOwners::new();
    assert_eq!(o.switch(Some(v(0, 0)), v(1, 0), 1), None);
    o.claim(Owns::Debug, v(0, 0), 0);
    assert_eq!(o.switch(Some(v(0, 0)), v(0, 0), 0), None, "a stays");
    assert!(
        o.switch(Some(v(0, 0)), v(1, 0), 1).is_some(),
        "a leaves: park"
    );
}

fn v(vm: u8, vcpu: u8) -> VcpuRef {
    VcpuRef { vm, vcpu }
}

#[test]
fn the_cpu_files_move_to_whoever_touches_them() {
    let (a, b) = (v(0, 0), v(1, 0));
    let mut o = HwOwners::new();
    // Nothing to own: no takeover.
    assert_eq!(
        o.claim(Owns::Nothing, a, 0),
        Takeover {
            save: None,
            load: false
        }
    );
    // a's first debug access loads its file; nothing to save.
    assert_eq!(
        o.claim(Owns::Debug, a, 0),
        Takeover {
            save: None,
            load: true
        }
    );
    // Again: it is there.
    assert_eq!(
        o.claim(Owns::Debug, a, 0),
        Takeover {
            save: None,
            load: false
        }
    );
    // b takes it over: a's is saved first, b's loaded.
    assert_eq!(
        o.claim(Owns::Debug, b, 1),
        Takeover {
            save: Some(a),
            load: true
        }
    );
    assert_eq!(o.debug_owner(), Some(b));
    assert_eq!(o.pmu_owner(), None, "the files are separate");
    // b restarts: its file in the CPU is forgotten, not saved, but its
    // live part cleared.
    let f = o.forget(b, Some(1));
    assert_eq!(
        f.debug,
        FileSwitch {
            park: true,
            ..FileSwitch::NOTHING
        }
    );
    assert_eq!(f.pmu, FileSwitch::NOTHING);
    assert_eq!(o.debug_owner(), None);
    assert_eq!(o.forget(b, Some(1)), Switch::NOTHING, "once");
}

#[test]
fn vcpus_that_never_used_a_file_cost_nothing() {
    let (a, b, c) = (v(0, 0), v(1, 0), v(2, 0));
    let mut o = HwOwners::new();
    assert_eq!(switch_of(&mut o, Some(a), b, 1), Switch::NOTHING);
    assert_eq!(switch_of(&mut o, None, a, 0), Switch::NOTHING);
    o.claim(Owns::Pmu, a, 0);
    // a leaves: its counters stop; b and c, no users, change nothing else.
    let sw = switch_of(&mut o, Some(a), b, 1);
    assert_eq!(
        sw.pmu,
        FileSwitch {
            park: true,
            ..FileSwitch::NOTHING
        }
    );
    assert_eq!(sw.debug, FileSwitch::NOTHING);
    assert_eq!(switch_of(&mut o, Some(b), c, 2), Switch::NOTHING);
    // a comes back to its parked PMU: the counters run again.
    let sw = switch_of(&mut o, Some(c), a, 0);
    assert_eq!(
        sw.pmu,
        FileSwitch {
            unpark: true,
            ..FileSwitch::NOTHING
        }
    );
    assert_eq!(
        switch_of(&mut o, Some(a), a, 0),
        Switch::NOTHING,
        "a stays: they run on"
    );
}

#[test]
fn a_user_takes_its_file_back_with_the_switch() {
    let (a, b, c) = (v(0, 0), v(1, 0), v(2, 0));
    let mut o = HwOwners::new();
    o.claim(Owns::Debug, a, 0);
    // b arms breakpoints while a is away: it takes the file over.
    assert_eq!(
        o.claim(Owns::Debug, b, 1),
        Takeover {
            save: Some(a),
            load: true
        }
    );
    // Back to a, which uses the file: b's is parked and saved, a's loaded,
    // so a's breakpoints apply although a accesses nothing.
    let sw = switch_of(&mut o, Some(b), a, 0);
    assert_eq!(
        sw.debug,
        FileSwitch {
            park: true,
            save: Some(b),
            load: true,
            unpark: false
        }
    );
    assert_eq!(o.debug_owner(), Some(a));
    // c (no user) runs: a's file is parked, not moved.
    let sw = switch_of(&mut o, Some(a), c, 2);
    assert_eq!(
        sw.debug,
        FileSwitch {
            park: true,
            ..FileSwitch::NOTHING
        }
    );
    // b comes back: a's (parked already) is saved, b's loaded.
    let sw = switch_of(&mut o, Some(c), b, 1);
    assert_eq!(
        sw.debug,
        FileSwitch {
            park: false,
            save: Some(a),
            load: true,
            unpark: false
        }
    );
    // b restarts: it is no user any more; a is loaded when it runs.
    o.forget(b, Some(1));
    assert_eq!(switch_of(&mut o, Some(b), b, 1), Switch::NOTHING);
    let sw = switch_of(&mut o, Some(b), a, 0);
    assert_eq!(
        sw.debug,
        FileSwitch {
            load: true,
            ..FileSwitch::NOTHING
        }
    );
}

#[test]
fn queue_positions_beyond_the_mask_are_never_users() {
    let mut o = HwOwners::new();
    let far = v(9, 9);
    o.claim(Owns::Debug, far, 40);
    assert_eq!(o.debug_owner(), Some(far));
    // It owns the file (loaded) but is not a user of record: the switch
    // parks and unparks it like an owner.
    let sw = switch_of(&mut o, Some(far), v(0, 0), 0);
    assert!(sw.debug.park);
}

#[test]
fn an_unarmed_file_waits_for_its_users_next_access() {
    let (a, b) = (v(0, 0), v(1, 0));
    let mut o = HwOwners::new();
    o.claim(Owns::Debug, a, 0);
    o.claim(Owns::Pmu, a, 0);
    // a leaves; its parked MDSCR and PMCR arm nothing (Linux after boot).
    let sw = switch_of(&mut o, Some(a), b, 1);
    assert!(sw.debug.park && sw.pmu.park);
    o.parked(Owns::Debug, 0, debug_armed(1 << 13));
    o.parked(Owns::Pmu, 0, pmu_armed(0));
    // b takes both over with accesses of its own.
    o.claim(Owns::Debug, b, 1);
    o.claim(Owns::Pmu, b, 1);
    // Back to a: nothing of a's can fire or count, so nothing moves.
    let sw = switch_of(&mut o, Some(b), a, 0);
    assert_eq!(
        sw.debug,
        FileSwitch {
            park: true,
            ..FileSwitch::NOTHING
        }
    );
    assert_eq!(
        sw.pmu,
        FileSwitch {
            park: true,
            ..FileSwitch::NOTHING
        }
    );
    o.parked(Owns::Debug, 1, debug_armed(1 << 15));
    o.parked(Owns::Pmu, 1, pmu_armed(PMCR_E));
    // b's are armed: they come back with b.
    let sw = switch_of(&mut o, Some(a), b, 1);
    assert_eq!(
        sw.debug,
        FileSwitch {
            unpark: true,
            ..FileSwitch::NOTHING
        }
    );
    let sw = switch_of(&mut o, Some(b), a, 0);
    assert!(sw.debug.park && sw.debug.save.is_none() && !sw.debug.load);
    // a arms again with an access: it takes the file over, and is a user.
    assert_eq!(o.claim(Owns::Debug, a, 0).save, Some(b));
    let sw = switch_of(&mut o, Some(a), b, 1);
    assert_eq!(sw.debug.save, Some(a), "b, armed, takes its file back");
    assert!(debug_armed(1) && !debug_armed(1 << 13));
    assert!(!pmu_armed(!PMCR_E));
}
