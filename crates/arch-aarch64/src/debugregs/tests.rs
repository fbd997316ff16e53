use super::*;
use stratum_core::debugpmu::NSH;

fn a57() -> Limits {
    Limits {
        breakpoints: 6,
        watchpoints: 4,
        counters: Some(6),
    }
}

/// Arms what a guest would: breakpoint `i` at `0x1000 * (i + 1)`, etc.
fn arm(tag: u64) {
    for i in 0..6u8 {
        write(HwReg::Bvr(i), tag + 0x1000 * u64::from(i));
        write(HwReg::Bcr(i), 0x1e7);
    }
    for i in 0..4u8 {
        write(HwReg::Wvr(i), tag + 0x80 * u64::from(i));
        write(HwReg::Wcr(i), 0x1ff7);
    }
    write(HwReg::Oslar, 0);
    write(HwReg::Mdscr, 0xa000);
}

#[test]
fn a_debug_file_moves_out_and_back_in_whole() {
    fake::clear();
    let l = a57();
    arm(0x4000_0000);
    // The owner leaves: MDSCR cleared in the CPU, kept in the file.
    let mut a = DebugFile::RESET;
    assert_eq!(a.park(), 0xa000);
    assert_eq!(fake::get(HwReg::Mdscr), 0);
    a.save(&l);
    // Another vCPU's file at reset comes in: nothing armed, OS lock locked.
    DebugFile::RESET.load(&l);
    assert_eq!(fake::get(HwReg::Bcr(5)), 0);
    assert_eq!(fake::get(HwReg::Wcr(3)), 0);
    assert_eq!(fake::get(HwReg::Oslsr) & OSLSR_OSLK, OSLSR_OSLK);
    // And a's comes back as it was.
    a.load(&l);
    assert_eq!(fake::get(HwReg::Bvr(5)), 0x4000_5000);
    assert_eq!(fake::get(HwReg::Wvr(3)), 0x4000_0180);
    assert_eq!(fake::get(HwReg::Wcr(0)), 0x1ff7);
    assert_eq!(fake::get(HwReg::Oslsr) & OSLSR_OSLK, 0);
    assert_eq!(fake::get(HwReg::Mdscr), 0xa000);
    // Park and unpark alone restore MDSCR.
    a.park();
    assert_eq!(fake::get(HwReg::Mdscr), 0);
    a.unpark();
    assert_eq!(fake::get(HwReg::Mdscr), 0xa000);
    quiesce_debug();
    assert_eq!(fake::get(HwReg::Mdscr), 0);
}

#[test]
fn registers_beyond_the_cpu_are_never_touched() {
    fake::clear();
    let l = a57();
    fake::set(HwReg::Bvr(6), 0x5555);
    fake::set(HwReg::Evcntr(6), 0x6666);
    let mut d = DebugFile::RESET;
    d.bvr[6] = 1;
    d.load(&l);
    d.save(&l);
    let mut p = PmuFile::RESET;
    p.evcntr[6] = 1;
    p.load(&l);
    p.save(&l);
    assert_eq!(fake::get(HwReg::Bvr(6)), 0x5555);
    assert_eq!(fake::get(HwReg::Evcntr(6)), 0x6666);
}

#[test]
fn a_pmu_file_moves_whole_and_never_counts_at_el2() {
    fake::clear();
    let l = a57();
    write(HwReg::Evtyper(2), 0x08);
    write(HwReg::Evcntr(2), 1234);
    write(HwReg::Ccntr, 0x1_0000_0000);
    write(HwReg::Ccfiltr, 1 << 31);
    write(HwReg::CntenSet, 0x8000_0004);
    write(HwReg::OvsSet, 0x2);
    write(HwReg::Selr, 2);
    write(HwReg::Pmcr, PMCR_E | 0b1000);
    let mut a = PmuFile::RESET;
    a.stop();
    assert_eq!(
        fake::get(HwReg::Pmcr) & PMCR_E,
        0,
        "a's counters stop as it leaves"
    );
    a.save(&l);
    PmuFile::RESET.load(&l);
    assert_eq!(fake::get(HwReg::Evcntr(2)), 0);
    assert_eq!(fake::get(HwReg::CntenSet), 0);
    assert_eq!(fake::get(HwReg::Pmcr), 0);
    // A file with NSH set (as no emulated write leaves it) loads without.
    a.evtyper[1] = NSH | 0x11;
    a.ccfiltr |= NSH;
    a.load(&l);
    assert_eq!(fake::get(HwReg::Evcntr(2)), 1234);
    assert_eq!(fake::get(HwReg::Evtyper(2)), 0x08);
    assert_eq!(fake::get(HwReg::Evtyper(1)), 0x11);
    assert_eq!(fake::get(HwReg::Ccfiltr), 1 << 31);
    assert_eq!(fake::get(HwReg::Ccntr), 0x1_0000_0000);
    assert_eq!(fake::get(HwReg::CntenSet), 0x8000_0004);
    assert_eq!(fake::get(HwReg::OvsSet), 0x2);
    assert_eq!(fake::get(HwReg::Selr), 2);
    assert_eq!(fake::get(HwReg::Pmcr), PMCR_E | 0b1000, "running again");
    a.stop();
    a.start();
    assert_eq!(fake::get(HwReg::Pmcr), PMCR_E | 0b1000);
    quiesce_pmu();
    assert_eq!(fake::get(HwReg::Pmcr), 0b1000);
}

#[test]
fn a_stopped_owner_never_writes_a_counter_reset() {
    fake::clear();
    // P and C read as zero on hardware; even if a value had them, the
    // saved PMCR never carries them back.
    fake::set(HwReg::Pmcr, PMCR_E | 0b110);
    let mut a = PmuFile::RESET;
    a.stop();
    a.start();
    assert_eq!(fake::get(HwReg::Pmcr), PMCR_E);
}

#[test]
fn the_pmu_starts_owned_by_nobody() {
    fake::clear();
    fake::set(HwReg::Pmcr, PMCR_E);
    fake::set(HwReg::CntenSet, 0xff);
    reset_pmu(&a57());
    assert_eq!(fake::get(HwReg::Pmcr), 0);
    assert_eq!(fake::get(HwReg::CntenSet), 0);
    assert_eq!(fake::overflow_interrupts(), 0);
}

#[test]
fn live_emulation_reaches_the_registers() {
    fake::clear();
    let mut shadow = stratum_core::debugpmu::Shadow::default();
    let reg = stratum_core::debugpmu::Reg::Pmu(stratum_core::debugpmu::PmuReg::Evtyper(0));
    debugpmu::emulate(reg, false, NSH | 0x08, &a57(), &mut shadow, &mut Live);
    assert_eq!(fake::get(HwReg::Evtyper(0)), 0x08);
    assert_eq!(
        debugpmu::emulate(reg, true, 0, &a57(), &mut shadow, &mut Live),
        0x08
    );
}
