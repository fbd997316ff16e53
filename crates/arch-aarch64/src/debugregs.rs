//! The CPU's self-hosted debug and PMU registers, reached by the
//! [`HwReg`] names of `stratum_core::debugpmu`, and a vCPU's saved copies
//! of them ([`DebugFile`], [`PmuFile`]).
//!
//! Which vCPU's files the CPU holds, and when they move, is core's
//! decision ([`stratum_core::debugpmu::HwOwners`]); this module only reads
//! and writes them. Loops run over the registers this CPU has
//! ([`Limits`]): the others do not exist and would be UNDEFINED at EL2 too.
//!
//! On the host the registers are a fake ([`fake`]) in which `OSLAR_EL1`
//! sets `OSLSR_EL1.OSLK` as the hardware does.

use stratum_core::debugpmu::{
    self, DebugPmuHw, HwReg, Limits, MAX_BREAKPOINTS, MAX_COUNTERS, PMCR_E, PMCR_WRITABLE,
};

/// `OSLSR_EL1.OSLK` (bit 1): the OS lock is locked.
pub const OSLSR_OSLK: u64 = 1 << 1;
/// `PMCR_EL0.P` and `.C` (bits 1, 2): writing one resets counters.
const PMCR_RESETS: u64 = 0b110;

#[cfg(target_arch = "aarch64")]
mod real {
    use super::HwReg;

    macro_rules! read_one {
        ($name:ident) => {{
            let v: u64;
            // SAFETY: reading a debug or PMU register has no side effect
            // and is permitted at EL2 (MDCR_EL2 traps only EL1/EL0).
            unsafe {
                core::arch::asm!(concat!("mrs {}, ", stringify!($name)), out(reg) v,
                    options(nomem, nostack, preserves_flags));
            }
            v
        }};
    }

    macro_rules! write_one {
        ($name:ident, $v:expr) => {{
            // SAFETY: the debug and PMU registers hold guest state only: with
            // MDCR_EL2.TDE clear no debug exception is taken at EL2, and the
            // counters never count at EL2 (NSH is kept clear).
            unsafe {
                core::arch::asm!(concat!("msr ", stringify!($name), ", {}"), in(reg) $v,
                    options(nomem, nostack, preserves_flags));
            }
        }};
    }

    macro_rules! indexed {
        (read_one, $n:expr; $($i:literal => $name:ident),*) => {
            match $n {
                $($i => read_one!($name),)*
                n => panic!("debug/PMU register index {n} does not exist"),
            }
        };
        (write_one, $n:expr, $v:ident; $($i:literal => $name:ident),*) => {
            match $n {
                $($i => write_one!($name, $v),)*
                n => panic!("debug/PMU register index {n} does not exist"),
            }
        };
    }

    pub fn read(reg: HwReg) -> u64 {
        match reg {
            HwReg::Bvr(n) => {
                indexed!(read_one, n; 0 => dbgbvr0_el1, 1 => dbgbvr1_el1, 2 => dbgbvr2_el1, 3 => dbgbvr3_el1, 4 => dbgbvr4_el1, 5 => dbgbvr5_el1, 6 => dbgbvr6_el1, 7 => dbgbvr7_el1, 8 => dbgbvr8_el1, 9 => dbgbvr9_el1, 10 => dbgbvr10_el1, 11 => dbgbvr11_el1, 12 => dbgbvr12_el1, 13 => dbgbvr13_el1, 14 => dbgbvr14_el1, 15 => dbgbvr15_el1)
            }
            HwReg::Bcr(n) => {
                indexed!(read_one, n; 0 => dbgbcr0_el1, 1 => dbgbcr1_el1, 2 => dbgbcr2_el1, 3 => dbgbcr3_el1, 4 => dbgbcr4_el1, 5 => dbgbcr5_el1, 6 => dbgbcr6_el1, 7 => dbgbcr7_el1, 8 => dbgbcr8_el1, 9 => dbgbcr9_el1, 10 => dbgbcr10_el1, 11 => dbgbcr11_el1, 12 => dbgbcr12_el1, 13 => dbgbcr13_el1, 14 => dbgbcr14_el1, 15 => dbgbcr15_el1)
            }
            HwReg::Wvr(n) => {
                indexed!(read_one, n; 0 => dbgwvr0_el1, 1 => dbgwvr1_el1, 2 => dbgwvr2_el1, 3 => dbgwvr3_el1, 4 => dbgwvr4_el1, 5 => dbgwvr5_el1, 6 => dbgwvr6_el1, 7 => dbgwvr7_el1, 8 => dbgwvr8_el1, 9 => dbgwvr9_el1, 10 => dbgwvr10_el1, 11 => dbgwvr11_el1, 12 => dbgwvr12_el1, 13 => dbgwvr13_el1, 14 => dbgwvr14_el1, 15 => dbgwvr15_el1)
            }
            HwReg::Wcr(n) => {
                indexed!(read_one, n; 0 => dbgwcr0_el1, 1 => dbgwcr1_el1, 2 => dbgwcr2_el1, 3 => dbgwcr3_el1, 4 => dbgwcr4_el1, 5 => dbgwcr5_el1, 6 => dbgwcr6_el1, 7 => dbgwcr7_el1, 8 => dbgwcr8_el1, 9 => dbgwcr9_el1, 10 => dbgwcr10_el1, 11 => dbgwcr11_el1, 12 => dbgwcr12_el1, 13 => dbgwcr13_el1, 14 => dbgwcr14_el1, 15 => dbgwcr15_el1)
            }
            HwReg::Evcntr(n) => {
                indexed!(read_one, n; 0 => pmevcntr0_el0, 1 => pmevcntr1_el0, 2 => pmevcntr2_el0, 3 => pmevcntr3_el0, 4 => pmevcntr4_el0, 5 => pmevcntr5_el0, 6 => pmevcntr6_el0, 7 => pmevcntr7_el0, 8 => pmevcntr8_el0, 9 => pmevcntr9_el0, 10 => pmevcntr10_el0, 11 => pmevcntr11_el0, 12 => pmevcntr12_el0, 13 => pmevcntr13_el0, 14 => pmevcntr14_el0, 15 => pmevcntr15_el0, 16 => pmevcntr16_el0, 17 => pmevcntr17_el0, 18 => pmevcntr18_el0, 19 => pmevcntr19_el0, 20 => pmevcntr20_el0, 21 => pmevcntr21_el0, 22 => pmevcntr22_el0, 23 => pmevcntr23_el0, 24 => pmevcntr24_el0, 25 => pmevcntr25_el0, 26 => pmevcntr26_el0, 27 => pmevcntr27_el0, 28 => pmevcntr28_el0, 29 => pmevcntr29_el0, 30 => pmevcntr30_el0)
            }
            HwReg::Evtyper(n) => {
                indexed!(read_one, n; 0 => pmevtyper0_el0, 1 => pmevtyper1_el0, 2 => pmevtyper2_el0, 3 => pmevtyper3_el0, 4 => pmevtyper4_el0, 5 => pmevtyper5_el0, 6 => pmevtyper6_el0, 7 => pmevtyper7_el0, 8 => pmevtyper8_el0, 9 => pmevtyper9_el0, 10 => pmevtyper10_el0, 11 => pmevtyper11_el0, 12 => pmevtyper12_el0, 13 => pmevtyper13_el0, 14 => pmevtyper14_el0, 15 => pmevtyper15_el0, 16 => pmevtyper16_el0, 17 => pmevtyper17_el0, 18 => pmevtyper18_el0, 19 => pmevtyper19_el0, 20 => pmevtyper20_el0, 21 => pmevtyper21_el0, 22 => pmevtyper22_el0, 23 => pmevtyper23_el0, 24 => pmevtyper24_el0, 25 => pmevtyper25_el0, 26 => pmevtyper26_el0, 27 => pmevtyper27_el0, 28 => pmevtyper28_el0, 29 => pmevtyper29_el0, 30 => pmevtyper30_el0)
            }
            HwReg::Mdscr => read_one!(mdscr_el1),
            HwReg::Oslsr => read_one!(oslsr_el1),
            // Write-only: reads as the lock's state.
            HwReg::Oslar => (read_one!(oslsr_el1) >> 1) & 1,
            HwReg::Pmcr => read_one!(pmcr_el0),
            HwReg::CntenSet | HwReg::CntenClr => read_one!(pmcntenset_el0),
            HwReg::OvsSet | HwReg::OvsClr => read_one!(pmovsset_el0),
            HwReg::Selr => read_one!(pmselr_el0),
            HwReg::Ceid0 => read_one!(pmceid0_el0),
            HwReg::Ceid1 => read_one!(pmceid1_el0),
            HwReg::Ccntr => read_one!(pmccntr_el0),
            HwReg::Userenr => read_one!(pmuserenr_el0),
            HwReg::Ccfiltr => read_one!(pmccfiltr_el0),
        }
    }

    pub fn write(reg: HwReg, v: u64) {
        match reg {
            HwReg::Bvr(n) => {
                indexed!(write_one, n, v; 0 => dbgbvr0_el1, 1 => dbgbvr1_el1, 2 => dbgbvr2_el1, 3 => dbgbvr3_el1, 4 => dbgbvr4_el1, 5 => dbgbvr5_el1, 6 => dbgbvr6_el1, 7 => dbgbvr7_el1, 8 => dbgbvr8_el1, 9 => dbgbvr9_el1, 10 => dbgbvr10_el1, 11 => dbgbvr11_el1, 12 => dbgbvr12_el1, 13 => dbgbvr13_el1, 14 => dbgbvr14_el1, 15 => dbgbvr15_el1)
            }
            HwReg::Bcr(n) => {
                indexed!(write_one, n, v; 0 => dbgbcr0_el1, 1 => dbgbcr1_el1, 2 => dbgbcr2_el1, 3 => dbgbcr3_el1, 4 => dbgbcr4_el1, 5 => dbgbcr5_el1, 6 => dbgbcr6_el1, 7 => dbgbcr7_el1, 8 => dbgbcr8_el1, 9 => dbgbcr9_el1, 10 => dbgbcr10_el1, 11 => dbgbcr11_el1, 12 => dbgbcr12_el1, 13 => dbgbcr13_el1, 14 => dbgbcr14_el1, 15 => dbgbcr15_el1)
            }
            HwReg::Wvr(n) => {
                indexed!(write_one, n, v; 0 => dbgwvr0_el1, 1 => dbgwvr1_el1, 2 => dbgwvr2_el1, 3 => dbgwvr3_el1, 4 => dbgwvr4_el1, 5 => dbgwvr5_el1, 6 => dbgwvr6_el1, 7 => dbgwvr7_el1, 8 => dbgwvr8_el1, 9 => dbgwvr9_el1, 10 => dbgwvr10_el1, 11 => dbgwvr11_el1, 12 => dbgwvr12_el1, 13 => dbgwvr13_el1, 14 => dbgwvr14_el1, 15 => dbgwvr15_el1)
            }
            HwReg::Wcr(n) => {
                indexed!(write_one, n, v; 0 => dbgwcr0_el1, 1 => dbgwcr1_el1, 2 => dbgwcr2_el1, 3 => dbgwcr3_el1, 4 => dbgwcr4_el1, 5 => dbgwcr5_el1, 6 => dbgwcr6_el1, 7 => dbgwcr7_el1, 8 => dbgwcr8_el1, 9 => dbgwcr9_el1, 10 => dbgwcr10_el1, 11 => dbgwcr11_el1, 12 => dbgwcr12_el1, 13 => dbgwcr13_el1, 14 => dbgwcr14_el1, 15 => dbgwcr15_el1)
            }
            HwReg::Evcntr(n) => {
                indexed!(write_one, n, v; 0 => pmevcntr0_el0, 1 => pmevcntr1_el0, 2 => pmevcntr2_el0, 3 => pmevcntr3_el0, 4 => pmevcntr4_el0, 5 => pmevcntr5_el0, 6 => pmevcntr6_el0, 7 => pmevcntr7_el0, 8 => pmevcntr8_el0, 9 => pmevcntr9_el0, 10 => pmevcntr10_el0, 11 => pmevcntr11_el0, 12 => pmevcntr12_el0, 13 => pmevcntr13_el0, 14 => pmevcntr14_el0, 15 => pmevcntr15_el0, 16 => pmevcntr16_el0, 17 => pmevcntr17_el0, 18 => pmevcntr18_el0, 19 => pmevcntr19_el0, 20 => pmevcntr20_el0, 21 => pmevcntr21_el0, 22 => pmevcntr22_el0, 23 => pmevcntr23_el0, 24 => pmevcntr24_el0, 25 => pmevcntr25_el0, 26 => pmevcntr26_el0, 27 => pmevcntr27_el0, 28 => pmevcntr28_el0, 29 => pmevcntr29_el0, 30 => pmevcntr30_el0)
            }
            HwReg::Evtyper(n) => {
                indexed!(write_one, n, v; 0 => pmevtyper0_el0, 1 => pmevtyper1_el0, 2 => pmevtyper2_el0, 3 => pmevtyper3_el0, 4 => pmevtyper4_el0, 5 => pmevtyper5_el0, 6 => pmevtyper6_el0, 7 => pmevtyper7_el0, 8 => pmevtyper8_el0, 9 => pmevtyper9_el0, 10 => pmevtyper10_el0, 11 => pmevtyper11_el0, 12 => pmevtyper12_el0, 13 => pmevtyper13_el0, 14 => pmevtyper14_el0, 15 => pmevtyper15_el0, 16 => pmevtyper16_el0, 17 => pmevtyper17_el0, 18 => pmevtyper18_el0, 19 => pmevtyper19_el0, 20 => pmevtyper20_el0, 21 => pmevtyper21_el0, 22 => pmevtyper22_el0, 23 => pmevtyper23_el0, 24 => pmevtyper24_el0, 25 => pmevtyper25_el0, 26 => pmevtyper26_el0, 27 => pmevtyper27_el0, 28 => pmevtyper28_el0, 29 => pmevtyper29_el0, 30 => pmevtyper30_el0)
            }
            HwReg::Mdscr => write_one!(mdscr_el1, v),
            HwReg::Oslar => write_one!(oslar_el1, v),
            HwReg::Pmcr => write_one!(pmcr_el0, v),
            HwReg::CntenSet => write_one!(pmcntenset_el0, v),
            HwReg::CntenClr => write_one!(pmcntenclr_el0, v),
            HwReg::OvsSet => write_one!(pmovsset_el0, v),
            HwReg::OvsClr => write_one!(pmovsclr_el0, v),
            HwReg::Selr => write_one!(pmselr_el0, v),
            HwReg::Ccntr => write_one!(pmccntr_el0, v),
            HwReg::Userenr => write_one!(pmuserenr_el0, v),
            HwReg::Ccfiltr => write_one!(pmccfiltr_el0, v),
            // Read-only: a write is ignored.
            HwReg::Oslsr | HwReg::Ceid0 | HwReg::Ceid1 => {}
        }
    }

    /// Writes every bit of `PMINTENCLR_EL1`: no counter overflow raises
    /// the PMU interrupt.
    pub fn disable_overflow_interrupts() {
        write_one!(pmintenclr_el1, u64::MAX);
    }
}

#[cfg(not(target_arch = "aarch64"))]
pub mod fake {
    //! The host's stand-in for the CPU's debug and PMU registers.
    use super::{HwReg, OSLSR_OSLK};
    use std::collections::HashMap;

    std::thread_local! {
        static REGS: core::cell::RefCell<HashMap<HwReg, u64>> =
            core::cell::RefCell::new(HashMap::new());
        static INTEN: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    }

    /// The register's value (0 if never written).
    pub fn get(reg: HwReg) -> u64 {
        let reg = match reg {
            HwReg::CntenClr => HwReg::CntenSet,
            HwReg::OvsClr => HwReg::OvsSet,
            r => r,
        };
        REGS.with(|r| r.borrow().get(&reg).copied().unwrap_or(0))
    }

    /// Sets the register's value, bypassing the write semantics.
    pub fn set(reg: HwReg, v: u64) {
        REGS.with(|r| r.borrow_mut().insert(reg, v));
    }

    /// Forgets every register.
    pub fn clear() {
        REGS.with(|r| r.borrow_mut().clear());
        INTEN.with(|i| i.set(u64::MAX));
    }

    /// The overflow-interrupt enables `disable_overflow_interrupts` left.
    pub fn overflow_interrupts() -> u64 {
        INTEN.with(|i| !i.get())
    }

    pub(super) fn read(reg: HwReg) -> u64 {
        match reg {
            HwReg::Oslar => (get(HwReg::Oslsr) >> 1) & 1,
            r => get(r),
        }
    }

    pub(super) fn write(reg: HwReg, v: u64) {
        match reg {
            HwReg::Oslar => {
                let lsr = get(HwReg::Oslsr) & !OSLSR_OSLK;
                set(HwReg::Oslsr, lsr | if v & 1 != 0 { OSLSR_OSLK } else { 0 });
            }
            HwReg::CntenSet | HwReg::OvsSet => set(reg, get(reg) | v),
            HwReg::CntenClr => set(HwReg::CntenSet, get(HwReg::CntenSet) & !v),
            HwReg::OvsClr => set(HwReg::OvsSet, get(HwReg::OvsSet) & !v),
            HwReg::Oslsr | HwReg::Ceid0 | HwReg::Ceid1 => {}
            r => set(r, v),
        }
    }

    pub(super) fn disable_overflow_interrupts() {
        INTEN.with(|i| i.set(u64::MAX));
    }
}

#[cfg(not(target_arch = "aarch64"))]
use fake as backend;
#[cfg(target_arch = "aarch64")]
use real as backend;

/// Reads the CPU's `reg`.
#[inline]
pub fn read(reg: HwReg) -> u64 {
    backend::read(reg)
}

/// Writes the CPU's `reg`.
#[inline]
pub fn write(reg: HwReg, v: u64) {
    backend::write(reg, v)
}

/// The running vCPU's registers, for [`debugpmu::emulate`].
#[derive(Debug)]
pub struct Live;

impl DebugPmuHw for Live {
    fn read(&mut self, reg: HwReg) -> u64 {
        read(reg)
    }
    fn write(&mut self, reg: HwReg, value: u64) {
        write(reg, value)
    }
}

/// A vCPU's breakpoints, watchpoints, OS lock and `MDSCR_EL1`, while the
/// CPU does not hold them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugFile {
    bvr: [u64; MAX_BREAKPOINTS],
    bcr: [u64; MAX_BREAKPOINTS],
    wvr: [u64; MAX_BREAKPOINTS],
    wcr: [u64; MAX_BREAKPOINTS],
    /// `MDSCR_EL1`; saved when the owner leaves its CPU ([`Self::park`]).
    mdscr: u64,
    /// `OSLSR_EL1.OSLK`.
    os_lock: bool,
}

impl Default for DebugFile {
    fn default() -> Self {
        Self::RESET
    }
}

impl DebugFile {
    /// At reset: nothing armed, the OS lock locked (as after a cold reset).
    pub const RESET: Self = Self {
        bvr: [0; MAX_BREAKPOINTS],
        bcr: [0; MAX_BREAKPOINTS],
        wvr: [0; MAX_BREAKPOINTS],
        wcr: [0; MAX_BREAKPOINTS],
        mdscr: 0,
        os_lock: true,
    };

    /// Saves the CPU's breakpoints, watchpoints and OS lock (the owner is
    /// not running; its `MDSCR_EL1` was saved by [`Self::park`]).
    pub fn save(&mut self, limits: &Limits) {
        for i in 0..usize::from(limits.breakpoints).min(MAX_BREAKPOINTS) {
            self.bvr[i] = read(HwReg::Bvr(i as u8));
            self.bcr[i] = read(HwReg::Bcr(i as u8));
        }
        for i in 0..usize::from(limits.watchpoints).min(MAX_BREAKPOINTS) {
            self.wvr[i] = read(HwReg::Wvr(i as u8));
            self.wcr[i] = read(HwReg::Wcr(i as u8));
        }
        self.os_lock = read(HwReg::Oslsr) & OSLSR_OSLK != 0;
    }

    /// Loads the file into the CPU for its running owner, `MDSCR_EL1` last.
    pub fn load(&self, limits: &Limits) {
        for i in 0..usize::from(limits.breakpoints).min(MAX_BREAKPOINTS) {
            write(HwReg::Bvr(i as u8), self.bvr[i]);
            write(HwReg::Bcr(i as u8), self.bcr[i]);
        }
        for i in 0..usize::from(limits.watchpoints).min(MAX_BREAKPOINTS) {
            write(HwReg::Wvr(i as u8), self.wvr[i]);
            write(HwReg::Wcr(i as u8), self.wcr[i]);
        }
        write(HwReg::Oslar, u64::from(self.os_lock));
        write(HwReg::Mdscr, self.mdscr);
    }

    /// The owner leaves its CPU: its `MDSCR_EL1` is kept here and cleared,
    /// so no breakpoint, watchpoint or step applies to whoever runs next.
    /// Returns the kept value.
    pub fn park(&mut self) -> u64 {
        self.mdscr = read(HwReg::Mdscr);
        write(HwReg::Mdscr, 0);
        self.mdscr
    }

    /// The owner comes back to a CPU that still holds its file.
    pub fn unpark(&self) {
        write(HwReg::Mdscr, self.mdscr);
    }
}

/// Clears `MDSCR_EL1`: a forgotten owner's breakpoints, watchpoints and
/// single-step stop applying.
pub fn quiesce_debug() {
    write(HwReg::Mdscr, 0);
}

/// A vCPU's PMU state while the CPU does not hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmuFile {
    /// `PMCR_EL0`; saved when the owner leaves its CPU ([`Self::stop`]).
    pmcr: u64,
    cnten: u64,
    ovs: u64,
    selr: u64,
    userenr: u64,
    ccntr: u64,
    ccfiltr: u64,
    evcntr: [u64; MAX_COUNTERS],
    evtyper: [u64; MAX_COUNTERS],
}

impl Default for PmuFile {
    fn default() -> Self {
        Self::RESET
    }
}

impl PmuFile {
    /// At reset: counters disabled and zero, nothing filtered.
    pub const RESET: Self = Self {
        pmcr: 0,
        cnten: 0,
        ovs: 0,
        selr: 0,
        userenr: 0,
        ccntr: 0,
        ccfiltr: 0,
        evcntr: [0; MAX_COUNTERS],
        evtyper: [0; MAX_COUNTERS],
    };

    fn counters(limits: &Limits) -> usize {
        usize::from(limits.counters.unwrap_or(0)).min(MAX_COUNTERS)
    }

    /// Saves the CPU's PMU (the owner is not running: its counters are
    /// stopped and its `PMCR_EL0` was saved by [`Self::stop`]).
    pub fn save(&mut self, limits: &Limits) {
        let mask = limits.counter_mask();
        self.cnten = read(HwReg::CntenSet) & mask;
        self.ovs = read(HwReg::OvsSet) & mask;
        self.selr = read(HwReg::Selr);
        self.userenr = read(HwReg::Userenr);
        self.ccntr = read(HwReg::Ccntr);
        self.ccfiltr = read(HwReg::Ccfiltr);
        for i in 0..Self::counters(limits) {
            self.evcntr[i] = read(HwReg::Evcntr(i as u8));
            self.evtyper[i] = read(HwReg::Evtyper(i as u8));
        }
    }

    /// Loads the file into the CPU for its running owner, `PMCR_EL0` (and
    /// with it the enable) last. Filters are loaded without `NSH`.
    pub fn load(&self, limits: &Limits) {
        let mask = limits.counter_mask();
        write(HwReg::Pmcr, 0);
        for i in 0..Self::counters(limits) {
            write(
                HwReg::Evtyper(i as u8),
                debugpmu::without_nsh(self.evtyper[i]),
            );
            write(HwReg::Evcntr(i as u8), self.evcntr[i]);
        }
        write(HwReg::Ccfiltr, debugpmu::without_nsh(self.ccfiltr));
        write(HwReg::Ccntr, self.ccntr);
        write(HwReg::Userenr, self.userenr);
        write(HwReg::Selr, self.selr);
        write(HwReg::CntenClr, mask);
        write(HwReg::CntenSet, self.cnten & mask);
        write(HwReg::OvsClr, mask);
        write(HwReg::OvsSet, self.ovs & mask);
        self.start();
    }

    /// The owner leaves its CPU: its `PMCR_EL0` is kept here and its
    /// counters stop. Returns the kept value.
    pub fn stop(&mut self) -> u64 {
        self.pmcr = read(HwReg::Pmcr) & PMCR_WRITABLE & !PMCR_RESETS;
        write(HwReg::Pmcr, self.pmcr & !PMCR_E);
        self.pmcr
    }

    /// The owner comes back to a CPU that still holds its PMU: its
    /// counters run again.
    pub fn start(&self) {
        write(HwReg::Pmcr, self.pmcr & PMCR_WRITABLE & !PMCR_RESETS);
    }
}

/// Stops the PMU's counters (a forgotten owner's).
pub fn quiesce_pmu() {
    let pmcr = read(HwReg::Pmcr) & PMCR_WRITABLE & !PMCR_RESETS;
    write(HwReg::Pmcr, pmcr & !PMCR_E);
}

/// Puts this CPU's PMU in a state no guest owns (at boot): counters
/// stopped and disabled, overflow flags and interrupts off.
pub fn reset_pmu(limits: &Limits) {
    if limits.counters.is_none() {
        return;
    }
    write(HwReg::Pmcr, 0);
    write(HwReg::CntenClr, u64::MAX);
    write(HwReg::OvsClr, u64::MAX);
    backend::disable_overflow_interrupts();
}

#[cfg(test)]
mod tests;
