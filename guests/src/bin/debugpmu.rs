//! `debugpmu`: self-hosted debug and the PMU as an EL1 guest uses them
//! (ADR 0012), and their isolation between vCPUs that share a CPU.
//!
//! Every run, at EL1:
//! - reads every debug and PMU register with the destination register
//!   pre-filled with a sentinel, which must be replaced; the emulated ones
//!   (`MDCCINT_EL1`, the claim tags, the OS lock, `PMINTENSET_EL1`) keep
//!   what is written; a breakpoint or watchpoint beyond the CPU's count and
//!   a reserved debug encoding are UNDEFINED;
//! - arms a hardware breakpoint on a function and takes it at its own EL1
//!   vector, arms a watchpoint and takes it on a store;
//! - single-steps six instructions at EL0 (`MDSCR_EL1.SS`, `SPSR.SS`) and
//!   counts the steps;
//! - runs the cycle counter and an event counter (`CPU_CYCLES`), checks they
//!   advance while enabled and stand still while stopped, that `NSH` (count
//!   at EL2) never sticks, and counts `SW_INCR` exactly.
//!
//! With `role=a` or `role=b` (two instances time-sharing one CPU), it then
//! runs for `ms` milliseconds (default 2000) with its own breakpoint and
//! watchpoint armed on what the *other* role executes and writes, while
//! executing and writing the other role's targets itself with debug
//! exceptions unmasked: any breakpoint or watchpoint of the other instance
//! that leaked in would fire here. Meanwhile it checks that its own
//! breakpoint, watchpoint and counter values read back unchanged, and that
//! its `SW_INCR` counter holds exactly its own increments.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

use stratum_guests::exception::{self, ExceptionFrame, TakenException};
use stratum_guests::global::Global;
use stratum_guests::{Checks, args, fail, fdt, println, timer};

stratum_guests::entry!("debugpmu", main);

/// What every read's destination holds before the `MRS`.
const SENTINEL: u64 = 0x5e47_1e1a_5e47_1e1a;
/// `ESR_EL1.EC` of an undefined instruction.
const EC_UNKNOWN: u64 = 0x00;
/// `ESR_EL1.EC` of a breakpoint taken without a change of EL.
const EC_BREAKPOINT_SAME_EL: u64 = 0x31;
/// `ESR_EL1.EC` of a software step from a lower EL.
const EC_STEP_LOWER_EL: u64 = 0x32;
/// `ESR_EL1.EC` of a watchpoint taken without a change of EL.
const EC_WATCHPOINT_SAME_EL: u64 = 0x35;
/// `ESR_EL1.EC` of an `SVC` from AArch64.
const EC_SVC64: u64 = 0x15;

/// `MDSCR_EL1.SS`, `.KDE`, `.MDE`.
const MDSCR_SS: u64 = 1 << 0;
const MDSCR_KDE: u64 = 1 << 13;
const MDSCR_MDE: u64 = 1 << 15;
/// `DBGBCR`: enabled, EL1 and EL0, all four bytes, unlinked address match.
const BCR_ARMED: u64 = 0x1e7;
/// `DBGWCR`: enabled, EL1 and EL0, loads and stores, all eight bytes.
const WCR_ARMED: u64 = 0x1fff;
/// `PMCR_EL0.E`, `.P`, `.C`.
const PMCR_E: u64 = 1 << 0;
const PMCR_P: u64 = 1 << 1;
const PMCR_C: u64 = 1 << 2;
/// `PMEVTYPER.NSH`: count at EL2.
const NSH: u64 = 1 << 27;
/// Events: software increment, CPU cycles.
const SW_INCR: u64 = 0x00;
const CPU_CYCLES: u64 = 0x11;
/// The cycle counter's bit in the counter sets.
const CYCLE: u64 = 1 << 31;
/// Instructions the EL0 code runs before its `SVC`.
const EL0_STEPS: u64 = 6;

macro_rules! rd {
    ($reg:literal) => {{
        let mut v: u64 = SENTINEL;
        // SAFETY: reading a debug or PMU register at EL1 has no effect on
        // memory; the hypervisor traps and answers it.
        unsafe { asm!(concat!("mrs {0}, ", $reg), inout(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Reads a register as [`rd!`] does, with an undefined-instruction
/// exception caught: `Ok(value)` or `Err(ESR)`.
macro_rules! probe {
    ($reg:literal) => {{
        let mut v = SENTINEL;
        match exception::expect_abort(|| v = rd!($reg)) {
            None => Ok(v),
            Some(t) => Err(t.esr),
        }
    }};
}

/// Checks a read wrote its destination, or was UNDEFINED (a register the
/// CPU, e.g. QEMU's, does not implement: the access never left EL1).
fn answered(c: &mut Checks, name: &str, r: Result<u64, u64>) {
    match r {
        Ok(v) => c.check(
            format_args!("{name} read writes its destination ({v:#x})"),
            v != SENTINEL,
        ),
        Err(esr) => c.check(
            format_args!("{name} is UNDEFINED on this CPU (ESR {esr:#x})"),
            (esr >> 26) & 0x3f == EC_UNKNOWN,
        ),
    };
}

macro_rules! wr {
    ($reg:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: writing a debug or PMU register changes this guest's own
        // debug or counting state only.
        unsafe { asm!(concat!("msr ", $reg, ", {0}"), "isb", in(reg) v, options(nomem, nostack, preserves_flags)) };
    }};
}

fn bvr(n: u64) -> u64 {
    match n {
        0 => rd!("dbgbvr0_el1"),
        1 => rd!("dbgbvr1_el1"),
        2 => rd!("dbgbvr2_el1"),
        3 => rd!("dbgbvr3_el1"),
        4 => rd!("dbgbvr4_el1"),
        5 => rd!("dbgbvr5_el1"),
        6 => rd!("dbgbvr6_el1"),
        7 => rd!("dbgbvr7_el1"),
        8 => rd!("dbgbvr8_el1"),
        9 => rd!("dbgbvr9_el1"),
        10 => rd!("dbgbvr10_el1"),
        11 => rd!("dbgbvr11_el1"),
        12 => rd!("dbgbvr12_el1"),
        13 => rd!("dbgbvr13_el1"),
        14 => rd!("dbgbvr14_el1"),
        15 => rd!("dbgbvr15_el1"),
        _ => SENTINEL,
    }
}
fn bcr(n: u64) -> u64 {
    match n {
        0 => rd!("dbgbcr0_el1"),
        1 => rd!("dbgbcr1_el1"),
        2 => rd!("dbgbcr2_el1"),
        3 => rd!("dbgbcr3_el1"),
        4 => rd!("dbgbcr4_el1"),
        5 => rd!("dbgbcr5_el1"),
        6 => rd!("dbgbcr6_el1"),
        7 => rd!("dbgbcr7_el1"),
        8 => rd!("dbgbcr8_el1"),
        9 => rd!("dbgbcr9_el1"),
        10 => rd!("dbgbcr10_el1"),
        11 => rd!("dbgbcr11_el1"),
        12 => rd!("dbgbcr12_el1"),
        13 => rd!("dbgbcr13_el1"),
        14 => rd!("dbgbcr14_el1"),
        15 => rd!("dbgbcr15_el1"),
        _ => SENTINEL,
    }
}
fn wvr(n: u64) -> u64 {
    match n {
        0 => rd!("dbgwvr0_el1"),
        1 => rd!("dbgwvr1_el1"),
        2 => rd!("dbgwvr2_el1"),
        3 => rd!("dbgwvr3_el1"),
        4 => rd!("dbgwvr4_el1"),
        5 => rd!("dbgwvr5_el1"),
        6 => rd!("dbgwvr6_el1"),
        7 => rd!("dbgwvr7_el1"),
        8 => rd!("dbgwvr8_el1"),
        9 => rd!("dbgwvr9_el1"),
        10 => rd!("dbgwvr10_el1"),
        11 => rd!("dbgwvr11_el1"),
        12 => rd!("dbgwvr12_el1"),
        13 => rd!("dbgwvr13_el1"),
        14 => rd!("dbgwvr14_el1"),
        15 => rd!("dbgwvr15_el1"),
        _ => SENTINEL,
    }
}
fn wcr(n: u64) -> u64 {
    match n {
        0 => rd!("dbgwcr0_el1"),
        1 => rd!("dbgwcr1_el1"),
        2 => rd!("dbgwcr2_el1"),
        3 => rd!("dbgwcr3_el1"),
        4 => rd!("dbgwcr4_el1"),
        5 => rd!("dbgwcr5_el1"),
        6 => rd!("dbgwcr6_el1"),
        7 => rd!("dbgwcr7_el1"),
        8 => rd!("dbgwcr8_el1"),
        9 => rd!("dbgwcr9_el1"),
        10 => rd!("dbgwcr10_el1"),
        11 => rd!("dbgwcr11_el1"),
        12 => rd!("dbgwcr12_el1"),
        13 => rd!("dbgwcr13_el1"),
        14 => rd!("dbgwcr14_el1"),
        15 => rd!("dbgwcr15_el1"),
        _ => SENTINEL,
    }
}
fn set_bvr(n: u64, v: u64) {
    match n {
        0 => wr!("dbgbvr0_el1", v),
        1 => wr!("dbgbvr1_el1", v),
        2 => wr!("dbgbvr2_el1", v),
        3 => wr!("dbgbvr3_el1", v),
        4 => wr!("dbgbvr4_el1", v),
        5 => wr!("dbgbvr5_el1", v),
        6 => wr!("dbgbvr6_el1", v),
        7 => wr!("dbgbvr7_el1", v),
        8 => wr!("dbgbvr8_el1", v),
        9 => wr!("dbgbvr9_el1", v),
        10 => wr!("dbgbvr10_el1", v),
        11 => wr!("dbgbvr11_el1", v),
        12 => wr!("dbgbvr12_el1", v),
        13 => wr!("dbgbvr13_el1", v),
        14 => wr!("dbgbvr14_el1", v),
        15 => wr!("dbgbvr15_el1", v),
        _ => {}
    }
}
fn set_bcr(n: u64, v: u64) {
    match n {
        0 => wr!("dbgbcr0_el1", v),
        1 => wr!("dbgbcr1_el1", v),
        2 => wr!("dbgbcr2_el1", v),
        3 => wr!("dbgbcr3_el1", v),
        4 => wr!("dbgbcr4_el1", v),
        5 => wr!("dbgbcr5_el1", v),
        6 => wr!("dbgbcr6_el1", v),
        7 => wr!("dbgbcr7_el1", v),
        8 => wr!("dbgbcr8_el1", v),
        9 => wr!("dbgbcr9_el1", v),
        10 => wr!("dbgbcr10_el1", v),
        11 => wr!("dbgbcr11_el1", v),
        12 => wr!("dbgbcr12_el1", v),
        13 => wr!("dbgbcr13_el1", v),
        14 => wr!("dbgbcr14_el1", v),
        15 => wr!("dbgbcr15_el1", v),
        _ => {}
    }
}
fn set_wvr(n: u64, v: u64) {
    match n {
        0 => wr!("dbgwvr0_el1", v),
        1 => wr!("dbgwvr1_el1", v),
        2 => wr!("dbgwvr2_el1", v),
        3 => wr!("dbgwvr3_el1", v),
        4 => wr!("dbgwvr4_el1", v),
        5 => wr!("dbgwvr5_el1", v),
        6 => wr!("dbgwvr6_el1", v),
        7 => wr!("dbgwvr7_el1", v),
        8 => wr!("dbgwvr8_el1", v),
        9 => wr!("dbgwvr9_el1", v),
        10 => wr!("dbgwvr10_el1", v),
        11 => wr!("dbgwvr11_el1", v),
        12 => wr!("dbgwvr12_el1", v),
        13 => wr!("dbgwvr13_el1", v),
        14 => wr!("dbgwvr14_el1", v),
        15 => wr!("dbgwvr15_el1", v),
        _ => {}
    }
}
fn set_wcr(n: u64, v: u64) {
    match n {
        0 => wr!("dbgwcr0_el1", v),
        1 => wr!("dbgwcr1_el1", v),
        2 => wr!("dbgwcr2_el1", v),
        3 => wr!("dbgwcr3_el1", v),
        4 => wr!("dbgwcr4_el1", v),
        5 => wr!("dbgwcr5_el1", v),
        6 => wr!("dbgwcr6_el1", v),
        7 => wr!("dbgwcr7_el1", v),
        8 => wr!("dbgwcr8_el1", v),
        9 => wr!("dbgwcr9_el1", v),
        10 => wr!("dbgwcr10_el1", v),
        11 => wr!("dbgwcr11_el1", v),
        12 => wr!("dbgwcr12_el1", v),
        13 => wr!("dbgwcr13_el1", v),
        14 => wr!("dbgwcr14_el1", v),
        15 => wr!("dbgwcr15_el1", v),
        _ => {}
    }
}
fn evcntr(n: u64) -> u64 {
    match n {
        0 => rd!("pmevcntr0_el0"),
        1 => rd!("pmevcntr1_el0"),
        2 => rd!("pmevcntr2_el0"),
        3 => rd!("pmevcntr3_el0"),
        4 => rd!("pmevcntr4_el0"),
        5 => rd!("pmevcntr5_el0"),
        6 => rd!("pmevcntr6_el0"),
        7 => rd!("pmevcntr7_el0"),
        8 => rd!("pmevcntr8_el0"),
        9 => rd!("pmevcntr9_el0"),
        10 => rd!("pmevcntr10_el0"),
        11 => rd!("pmevcntr11_el0"),
        12 => rd!("pmevcntr12_el0"),
        13 => rd!("pmevcntr13_el0"),
        14 => rd!("pmevcntr14_el0"),
        15 => rd!("pmevcntr15_el0"),
        16 => rd!("pmevcntr16_el0"),
        17 => rd!("pmevcntr17_el0"),
        18 => rd!("pmevcntr18_el0"),
        19 => rd!("pmevcntr19_el0"),
        20 => rd!("pmevcntr20_el0"),
        21 => rd!("pmevcntr21_el0"),
        22 => rd!("pmevcntr22_el0"),
        23 => rd!("pmevcntr23_el0"),
        24 => rd!("pmevcntr24_el0"),
        25 => rd!("pmevcntr25_el0"),
        26 => rd!("pmevcntr26_el0"),
        27 => rd!("pmevcntr27_el0"),
        28 => rd!("pmevcntr28_el0"),
        29 => rd!("pmevcntr29_el0"),
        30 => rd!("pmevcntr30_el0"),
        _ => SENTINEL,
    }
}
fn evtyper(n: u64) -> u64 {
    match n {
        0 => rd!("pmevtyper0_el0"),
        1 => rd!("pmevtyper1_el0"),
        2 => rd!("pmevtyper2_el0"),
        3 => rd!("pmevtyper3_el0"),
        4 => rd!("pmevtyper4_el0"),
        5 => rd!("pmevtyper5_el0"),
        6 => rd!("pmevtyper6_el0"),
        7 => rd!("pmevtyper7_el0"),
        8 => rd!("pmevtyper8_el0"),
        9 => rd!("pmevtyper9_el0"),
        10 => rd!("pmevtyper10_el0"),
        11 => rd!("pmevtyper11_el0"),
        12 => rd!("pmevtyper12_el0"),
        13 => rd!("pmevtyper13_el0"),
        14 => rd!("pmevtyper14_el0"),
        15 => rd!("pmevtyper15_el0"),
        16 => rd!("pmevtyper16_el0"),
        17 => rd!("pmevtyper17_el0"),
        18 => rd!("pmevtyper18_el0"),
        19 => rd!("pmevtyper19_el0"),
        20 => rd!("pmevtyper20_el0"),
        21 => rd!("pmevtyper21_el0"),
        22 => rd!("pmevtyper22_el0"),
        23 => rd!("pmevtyper23_el0"),
        24 => rd!("pmevtyper24_el0"),
        25 => rd!("pmevtyper25_el0"),
        26 => rd!("pmevtyper26_el0"),
        27 => rd!("pmevtyper27_el0"),
        28 => rd!("pmevtyper28_el0"),
        29 => rd!("pmevtyper29_el0"),
        30 => rd!("pmevtyper30_el0"),
        _ => SENTINEL,
    }
}
fn set_evcntr(n: u64, v: u64) {
    match n {
        0 => wr!("pmevcntr0_el0", v),
        1 => wr!("pmevcntr1_el0", v),
        2 => wr!("pmevcntr2_el0", v),
        3 => wr!("pmevcntr3_el0", v),
        4 => wr!("pmevcntr4_el0", v),
        5 => wr!("pmevcntr5_el0", v),
        6 => wr!("pmevcntr6_el0", v),
        7 => wr!("pmevcntr7_el0", v),
        8 => wr!("pmevcntr8_el0", v),
        9 => wr!("pmevcntr9_el0", v),
        10 => wr!("pmevcntr10_el0", v),
        11 => wr!("pmevcntr11_el0", v),
        12 => wr!("pmevcntr12_el0", v),
        13 => wr!("pmevcntr13_el0", v),
        14 => wr!("pmevcntr14_el0", v),
        15 => wr!("pmevcntr15_el0", v),
        16 => wr!("pmevcntr16_el0", v),
        17 => wr!("pmevcntr17_el0", v),
        18 => wr!("pmevcntr18_el0", v),
        19 => wr!("pmevcntr19_el0", v),
        20 => wr!("pmevcntr20_el0", v),
        21 => wr!("pmevcntr21_el0", v),
        22 => wr!("pmevcntr22_el0", v),
        23 => wr!("pmevcntr23_el0", v),
        24 => wr!("pmevcntr24_el0", v),
        25 => wr!("pmevcntr25_el0", v),
        26 => wr!("pmevcntr26_el0", v),
        27 => wr!("pmevcntr27_el0", v),
        28 => wr!("pmevcntr28_el0", v),
        29 => wr!("pmevcntr29_el0", v),
        30 => wr!("pmevcntr30_el0", v),
        _ => {}
    }
}
fn set_evtyper(n: u64, v: u64) {
    match n {
        0 => wr!("pmevtyper0_el0", v),
        1 => wr!("pmevtyper1_el0", v),
        2 => wr!("pmevtyper2_el0", v),
        3 => wr!("pmevtyper3_el0", v),
        4 => wr!("pmevtyper4_el0", v),
        5 => wr!("pmevtyper5_el0", v),
        6 => wr!("pmevtyper6_el0", v),
        7 => wr!("pmevtyper7_el0", v),
        8 => wr!("pmevtyper8_el0", v),
        9 => wr!("pmevtyper9_el0", v),
        10 => wr!("pmevtyper10_el0", v),
        11 => wr!("pmevtyper11_el0", v),
        12 => wr!("pmevtyper12_el0", v),
        13 => wr!("pmevtyper13_el0", v),
        14 => wr!("pmevtyper14_el0", v),
        15 => wr!("pmevtyper15_el0", v),
        16 => wr!("pmevtyper16_el0", v),
        17 => wr!("pmevtyper17_el0", v),
        18 => wr!("pmevtyper18_el0", v),
        19 => wr!("pmevtyper19_el0", v),
        20 => wr!("pmevtyper20_el0", v),
        21 => wr!("pmevtyper21_el0", v),
        22 => wr!("pmevtyper22_el0", v),
        23 => wr!("pmevtyper23_el0", v),
        24 => wr!("pmevtyper24_el0", v),
        25 => wr!("pmevtyper25_el0", v),
        26 => wr!("pmevtyper26_el0", v),
        27 => wr!("pmevtyper27_el0", v),
        28 => wr!("pmevtyper28_el0", v),
        29 => wr!("pmevtyper29_el0", v),
        30 => wr!("pmevtyper30_el0", v),
        _ => {}
    }
}

global_asm!(
    r#"
    .section .text, "ax"
    .balign 16
    .global debugpmu_target_a
debugpmu_target_a:
    nop
    ret
    .balign 16
    .global debugpmu_target_b
debugpmu_target_b:
    nop
    ret

    // EL0 code to single-step: six instructions, then back to EL1.
    .balign 16
    .global debugpmu_el0_code
debugpmu_el0_code:
    mov     x0, #0
    add     x0, x0, #1
    add     x0, x0, #1
    add     x0, x0, #1
    add     x0, x0, #1
    add     x0, x0, #1
    svc     #0

    // debugpmu_run_el0(entry, sp_el0): enters `entry` at EL0 with PSTATE.SS
    // set; the SVC handler returns to debugpmu_el0_return on the same SP_EL1.
    .global debugpmu_run_el0
debugpmu_run_el0:
    stp     x29, x30, [sp, #-16]!
    stp     x27, x28, [sp, #-16]!
    stp     x25, x26, [sp, #-16]!
    stp     x23, x24, [sp, #-16]!
    stp     x21, x22, [sp, #-16]!
    stp     x19, x20, [sp, #-16]!
    msr     sp_el0, x1
    msr     elr_el1, x0
    mov     x2, #0x3c0
    orr     x2, x2, #(1 << 21)
    msr     spsr_el1, x2
    isb
    eret
    .global debugpmu_el0_return
debugpmu_el0_return:
    ldp     x19, x20, [sp], #16
    ldp     x21, x22, [sp], #16
    ldp     x23, x24, [sp], #16
    ldp     x25, x26, [sp], #16
    ldp     x27, x28, [sp], #16
    ldp     x29, x30, [sp], #16
    ret
"#
);

unsafe extern "C" {
    fn debugpmu_target_a();
    fn debugpmu_target_b();
    fn debugpmu_el0_code();
    fn debugpmu_run_el0(entry: usize, sp_el0: usize);
    fn debugpmu_el0_return();
}

/// Steps taken from EL0.
static STEPS: Global<u64> = Global::new(0);
/// Watched words, one per role, on their own 64-byte lines.
#[repr(C, align(64))]
struct Watched([u64; 8]);
static mut WATCH_A: Watched = Watched([0; 8]);
static mut WATCH_B: Watched = Watched([0; 8]);
/// The EL0 code's stack.
#[repr(C, align(16))]
struct Stack([u8; 4096]);
static mut EL0_STACK: Stack = Stack([0; 4096]);

fn step_hook(frame: &mut ExceptionFrame, taken: &TakenException) -> bool {
    match taken.ec() {
        EC_STEP_LOWER_EL => {
            STEPS.set(STEPS.get() + 1);
            // Step the next instruction too.
            frame.spsr |= 1 << 21;
            true
        }
        EC_SVC64 => {
            frame.elr = debugpmu_el0_return as *const () as u64;
            // EL1h, DAIF masked, no step.
            frame.spsr = 0x3c5;
            true
        }
        _ => false,
    }
}

fn unmask_debug() {
    // SAFETY: only lets debug exceptions be taken at EL1.
    unsafe { asm!("msr daifclr, #8", "isb", options(nomem, nostack)) };
}

fn mask_debug() {
    // SAFETY: only masks debug exceptions at EL1.
    unsafe { asm!("msr daifset, #8", "isb", options(nomem, nostack)) };
}

fn call(f: unsafe extern "C" fn()) {
    // SAFETY: the targets are `nop; ret`.
    unsafe { f() };
}

fn spin(n: u64) {
    for i in 0..n {
        core::hint::black_box(i);
    }
}

/// The CPU's breakpoints and watchpoints, from `ID_AA64DFR0_EL1`.
fn counts() -> (u64, u64) {
    let dfr0 = rd!("id_aa64dfr0_el1");
    (((dfr0 >> 12) & 0xf) + 1, ((dfr0 >> 20) & 0xf) + 1)
}

fn every_read_answers(c: &mut Checks) {
    let (brps, wrps) = counts();
    println!("debugpmu: {brps} breakpoints, {wrps} watchpoints");
    let singles = [
        ("MDCCINT_EL1", probe!("mdccint_el1")),
        ("MDSCR_EL1", probe!("mdscr_el1")),
        ("OSLSR_EL1", probe!("oslsr_el1")),
        ("OSDLR_EL1", probe!("osdlr_el1")),
        ("DBGPRCR_EL1", probe!("dbgprcr_el1")),
        ("MDRAR_EL1", probe!("mdrar_el1")),
        ("DBGCLAIMSET_EL1", probe!("dbgclaimset_el1")),
        ("DBGCLAIMCLR_EL1", probe!("dbgclaimclr_el1")),
        ("DBGAUTHSTATUS_EL1", probe!("dbgauthstatus_el1")),
        ("MDCCSR_EL0", probe!("mdccsr_el0")),
        ("DBGDTR_EL0", probe!("dbgdtr_el0")),
        ("DBGDTRRX_EL0", probe!("dbgdtrrx_el0")),
        ("OSDTRRX_EL1", probe!("osdtrrx_el1")),
        ("OSDTRTX_EL1", probe!("osdtrtx_el1")),
        ("OSECCR_EL1", probe!("oseccr_el1")),
        ("PMCR_EL0", probe!("pmcr_el0")),
        ("PMCNTENSET_EL0", probe!("pmcntenset_el0")),
        ("PMCNTENCLR_EL0", probe!("pmcntenclr_el0")),
        ("PMOVSCLR_EL0", probe!("pmovsclr_el0")),
        ("PMOVSSET_EL0", probe!("pmovsset_el0")),
        ("PMSELR_EL0", probe!("pmselr_el0")),
        ("PMCEID0_EL0", probe!("pmceid0_el0")),
        ("PMCEID1_EL0", probe!("pmceid1_el0")),
        ("PMCCNTR_EL0", probe!("pmccntr_el0")),
        ("PMXEVTYPER_EL0", probe!("pmxevtyper_el0")),
        ("PMXEVCNTR_EL0", probe!("pmxevcntr_el0")),
        ("PMUSERENR_EL0", probe!("pmuserenr_el0")),
        ("PMINTENSET_EL1", probe!("pmintenset_el1")),
        ("PMINTENCLR_EL1", probe!("pmintenclr_el1")),
        ("PMCCFILTR_EL0", probe!("pmccfiltr_el0")),
    ];
    for (name, r) in singles {
        answered(c, name, r);
    }
    let n = (rd!("pmcr_el0") >> 11) & 0x1f;
    println!("debugpmu: {n} PMU event counters");
    let mut untouched = 0;
    let mut count = |f: fn(u64) -> u64, i: u64| {
        let mut v = SENTINEL;
        let taken = exception::expect_abort(|| v = f(i));
        untouched += u64::from(taken.is_some() || v == SENTINEL);
    };
    for i in 0..brps {
        count(bvr, i);
        count(bcr, i);
    }
    for i in 0..wrps {
        count(wvr, i);
        count(wcr, i);
    }
    for i in 0..n {
        count(evcntr, i);
        count(evtyper, i);
    }
    c.check_count(
        "indexed debug/PMU reads that trapped or left the sentinel",
        untouched,
        0,
    );
    // Values where the CPU implements the register (QEMU leaves several
    // of the external-debug ones out: they are UNDEFINED at EL1 there).
    if let Ok(v) = probe!("dbgauthstatus_el1") {
        c.check_eq("DBGAUTHSTATUS_EL1", v, 0xf);
    }
    if let Ok(v) = probe!("mdccsr_el0") {
        c.check_eq("MDCCSR_EL0 (no external debugger)", v, 0);
    }
    // What the emulation keeps.
    wr!("mdccint_el1", u64::MAX);
    c.check_eq(
        "MDCCINT_EL1 keeps TX and RX",
        rd!("mdccint_el1"),
        (1 << 29) | (1 << 30),
    );
    wr!("mdccint_el1", 0);
    if probe!("dbgclaimset_el1").is_ok() {
        wr!("dbgclaimset_el1", 0x5);
        c.check_eq("claim tags set", rd!("dbgclaimclr_el1"), 0x5);
        wr!("dbgclaimclr_el1", 0x1);
        c.check_eq("claim tags cleared", rd!("dbgclaimclr_el1"), 0x4);
        c.check_eq("DBGCLAIMSET_EL1 names 8 tags", rd!("dbgclaimset_el1"), 0xff);
    }
    wr!("oslar_el1", 1);
    c.check_eq(
        "OSLAR_EL1 locks (OSLSR_EL1.OSLK)",
        (rd!("oslsr_el1") >> 1) & 1,
        1,
    );
    wr!("oslar_el1", 0);
    c.check_eq("OSLAR_EL1 unlocks", (rd!("oslsr_el1") >> 1) & 1, 0);
    wr!("pmintenset_el1", 1 | CYCLE);
    c.check_eq(
        "PMINTENSET_EL1 keeps its enables",
        rd!("pmintenset_el1"),
        1 | CYCLE,
    );
    wr!("pmintenclr_el1", u64::MAX);
    c.check_eq("PMINTENCLR_EL1 clears them", rd!("pmintenset_el1"), 0);
    // What does not exist is UNDEFINED.
    let undef = |f: fn()| exception::expect_abort(f).map(|t| t.ec());
    c.check(
        "a reserved debug encoding (S2_0_C5_C0_0) is UNDEFINED",
        undef(|| {
            core::hint::black_box(rd!("s2_0_c5_c0_0"));
        }) == Some(EC_UNKNOWN),
    );
    if brps < 16 {
        let beyond = exception::expect_abort(|| {
            core::hint::black_box(bvr(brps));
        });
        c.check(
            format_args!("DBGBVR{brps}_EL1 (beyond the CPU's) is UNDEFINED"),
            beyond.map(|t| t.ec()) == Some(EC_UNKNOWN),
        );
    }
}

fn breakpoint_and_watchpoint(c: &mut Checks) {
    wr!("oslar_el1", 0);
    let target = debugpmu_target_a as *const () as u64;
    set_bvr(0, target);
    set_bcr(0, BCR_ARMED);
    c.check_eq("DBGBVR0_EL1 reads back", bvr(0), target);
    c.check_eq("DBGBCR0_EL1 reads back", bcr(0), BCR_ARMED);
    wr!("mdscr_el1", MDSCR_MDE | MDSCR_KDE);
    unmask_debug();
    let taken = exception::expect_abort(|| call(debugpmu_target_a));
    mask_debug();
    c.check(
        format_args!("breakpoint taken at EL1 ({taken:x?})"),
        taken.is_some_and(|t| t.ec() == EC_BREAKPOINT_SAME_EL && t.elr == target),
    );
    set_bcr(0, 0);
    unmask_debug();
    let quiet = exception::expect_abort(|| call(debugpmu_target_a));
    mask_debug();
    c.check("a disabled breakpoint does not fire", quiet.is_none());

    let word = (&raw mut WATCH_A) as u64;
    set_wvr(0, word);
    set_wcr(0, WCR_ARMED);
    c.check_eq("DBGWVR0_EL1 reads back", wvr(0), word);
    unmask_debug();
    let taken = exception::expect_abort(|| {
        // SAFETY: a store to this guest's own static; the watchpoint
        // stops it. A plain `str` (no writeback) can be skipped.
        unsafe { asm!("str {v}, [{a}]", a = in(reg) word, v = in(reg) 7u64, options(nostack)) };
    });
    mask_debug();
    c.check(
        format_args!("watchpoint taken on the store ({taken:x?})"),
        taken.is_some_and(|t| t.ec() == EC_WATCHPOINT_SAME_EL && t.far == word),
    );
    set_wcr(0, 0);
    wr!("mdscr_el1", 0);
}

fn single_step(c: &mut Checks) {
    exception::set_lower_el_hook(Some(step_hook));
    STEPS.set(0);
    wr!("mdscr_el1", MDSCR_SS | MDSCR_KDE);
    let stack_top = (&raw const EL0_STACK) as usize + core::mem::size_of::<Stack>();
    // SAFETY: the trampoline saves the callee-saved registers and comes
    // back through the SVC handler installed above; the EL0 code touches
    // only x0 and its own stack.
    unsafe { debugpmu_run_el0(debugpmu_el0_code as *const () as usize, stack_top) };
    wr!("mdscr_el1", 0);
    exception::set_lower_el_hook(None);
    c.check_count("EL0 instructions single-stepped", STEPS.get(), EL0_STEPS);
}

fn counters(c: &mut Checks) {
    // NSH (count at EL2) never sticks.
    set_evtyper(0, CPU_CYCLES | NSH);
    c.check_eq("PMEVTYPER0_EL0 without NSH", evtyper(0), CPU_CYCLES);
    wr!("pmccfiltr_el0", NSH);
    c.check_eq("PMCCFILTR_EL0 without NSH", rd!("pmccfiltr_el0"), 0);
    wr!("pmselr_el0", 0);
    c.check_eq(
        "PMXEVTYPER_EL0 is counter 0's",
        rd!("pmxevtyper_el0"),
        CPU_CYCLES,
    );
    wr!("pmcntenclr_el0", u64::MAX);
    wr!("pmcr_el0", PMCR_E | PMCR_P | PMCR_C);
    wr!("pmcntenset_el0", CYCLE | 1);
    let (c0, e0) = (rd!("pmccntr_el0"), evcntr(0));
    spin(200_000);
    let (c1, e1) = (rd!("pmccntr_el0"), evcntr(0));
    c.check(
        format_args!("cycle counter advances ({c0} -> {c1})"),
        c1 > c0,
    );
    c.check(
        format_args!("CPU_CYCLES counter advances ({e0} -> {e1})"),
        e1 > e0,
    );
    wr!("pmcr_el0", 0);
    let (c2, e2) = (rd!("pmccntr_el0"), evcntr(0));
    spin(200_000);
    let (c3, e3) = (rd!("pmccntr_el0"), evcntr(0));
    c.check_count("stopped cycle counter stands still", c3, c2);
    c.check_count("stopped event counter stands still", e3, e2);
    // SW_INCR counts exactly the enabled increments.
    set_evtyper(1, SW_INCR);
    set_evcntr(1, 0);
    wr!("pmcntenset_el0", 1 << 1);
    wr!("pmcr_el0", PMCR_E);
    for _ in 0..5 {
        wr!("pmswinc_el0", 1 << 1);
    }
    wr!("pmcntenclr_el0", 1 << 1);
    wr!("pmswinc_el0", 1 << 1);
    wr!("pmcr_el0", 0);
    c.check_count("SW_INCR counts enabled increments", evcntr(1), 5);
}

/// Role `a` or `b`: its own targets and tags, and the other's.
struct Role {
    name: &'static str,
    own_target: unsafe extern "C" fn(),
    other_target: unsafe extern "C" fn(),
    own_word: *mut u64,
    other_word: *mut u64,
    tag: u64,
}

fn isolation(c: &mut Checks, role: &Role, ms: u64) {
    let (brps, wrps) = counts();
    wr!("oslar_el1", 0);
    set_bvr(0, role.own_target as usize as u64);
    set_bcr(0, BCR_ARMED);
    set_wvr(0, role.own_word as u64);
    set_wcr(0, WCR_ARMED);
    // Disabled slots with values of their own, to read back.
    for i in 1..brps {
        set_bvr(i, role.tag + (i << 4));
    }
    for i in 1..wrps {
        set_wvr(i, role.tag + (i << 8));
    }
    wr!("mdscr_el1", MDSCR_MDE | MDSCR_KDE);
    // Counter 2 counts this role's software increments; counter 3 holds
    // its tag, disabled.
    set_evtyper(2, SW_INCR);
    set_evcntr(2, 0);
    set_evcntr(3, role.tag & 0xffff_ffff);
    wr!("pmcntenclr_el0", u64::MAX);
    wr!("pmcntenset_el0", 1 << 2);
    wr!("pmcr_el0", PMCR_E);
    println!("debugpmu: role {} armed; running {ms} ms", role.name);
    let end = timer::deadline_us(ms * 1000);
    let (mut rounds, mut increments, mut wrong) = (0u64, 0u64, 0u64);
    unmask_debug();
    while timer::counter() < end {
        // The other role's breakpoint and watchpoint are on these.
        call(role.other_target);
        // SAFETY: a store to this guest's own static.
        unsafe { core::ptr::write_volatile(role.other_word, rounds) };
        wr!("pmswinc_el0", 1 << 2);
        increments += 1;
        for i in 1..brps {
            wrong += u64::from(bvr(i) != role.tag + (i << 4));
        }
        for i in 1..wrps {
            wrong += u64::from(wvr(i) != role.tag + (i << 8));
        }
        wrong += u64::from(bvr(0) != role.own_target as usize as u64);
        wrong += u64::from(evcntr(3) != role.tag & 0xffff_ffff);
        wrong += u64::from(evcntr(2) != increments);
        rounds += 1;
        spin(2_000);
    }
    // Its own breakpoint still works after all those switches.
    let taken = exception::expect_abort(|| call(role.own_target));
    mask_debug();
    wr!("pmcr_el0", 0);
    wr!("mdscr_el1", 0);
    println!("debugpmu: role {} ran {rounds} rounds", role.name);
    c.check(format_args!("{rounds} rounds run"), rounds > 10);
    c.check_count("read-backs that saw another vCPU's value", wrong, 0);
    c.check_count("own SW_INCR count", evcntr(2), increments);
    c.check(
        "own breakpoint still fires",
        taken.is_some_and(|t| t.ec() == EC_BREAKPOINT_SAME_EL),
    );
}

fn main(dtb: usize) -> ! {
    let (_, dt) = fdt::locate_fdt(dtb).unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let summary = dt
        .summary()
        .unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let cmdline = summary.bootargs.unwrap_or("");
    let ms = stratum_guests::arg_number(cmdline, "ms", 2000);
    let role = match args::value(cmdline, "role") {
        None => None,
        Some("a") => Some(Role {
            name: "a",
            own_target: debugpmu_target_a,
            other_target: debugpmu_target_b,
            own_word: (&raw mut WATCH_A).cast::<u64>(),
            other_word: (&raw mut WATCH_B).cast::<u64>(),
            tag: 0xa0a0_0000,
        }),
        Some("b") => Some(Role {
            name: "b",
            own_target: debugpmu_target_b,
            other_target: debugpmu_target_a,
            own_word: (&raw mut WATCH_B).cast::<u64>(),
            other_word: (&raw mut WATCH_A).cast::<u64>(),
            tag: 0xb0b0_0000,
        }),
        Some(other) => fail(format_args!("role={other}: want a or b")),
    };
    let mut c = Checks::new();
    every_read_answers(&mut c);
    breakpoint_and_watchpoint(&mut c);
    single_step(&mut c);
    counters(&mut c);
    if let Some(role) = role {
        isolation(&mut c, &role, ms);
    }
    c.finish()
}
