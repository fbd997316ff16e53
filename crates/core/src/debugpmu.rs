//! Self-hosted debug and PMU registers for guests: which register a trapped
//! access names, whether the access exists, what it does, and which vCPU's
//! register files a time-shared CPU holds (ADR 0012).
//!
//! `MDCR_EL2` traps every guest access to them (`TDA`, `TDOSA`, `TDRA`,
//! `TPM`, `TPMCR`). A trapped access is decoded once here ([`classify`]),
//! refused with an undefined-instruction exception when the register does
//! not exist on this CPU or cannot be accessed in that direction
//! ([`Limits::allows`]), and otherwise emulated by [`emulate`]:
//!
//! - Breakpoints, watchpoints, `MDSCR_EL1` and the OS lock are performed on
//!   the CPU's own registers, so breakpoints, watchpoints and single-step
//!   work natively. The CPU's register file belongs to one vCPU at a time
//!   ([`HwOwners`]): a vCPU's first access moves the previous owner's file
//!   out and its own in, and from then on the file moves with the vCPU:
//!   a switch to it takes the file over if another vCPU has it. `MDSCR_EL1`
//!   is part of the file: when the owner leaves its CPU its `MDSCR_EL1` is
//!   saved and cleared ([`HwOwners::switch`]), so a vCPU that never used
//!   the file runs with `MDE`, `KDE` and `SS` clear and another vCPU's
//!   breakpoints, watchpoints and single-step never fire for it; it cannot
//!   set them without trapping and taking the file over.
//! - The PMU is performed on the real PMU ("trap and perform"), which holds
//!   the owning vCPU's counters. Every write of an event-type or filter
//!   register has its `NSH` bit cleared ([`without_nsh`]), so the counters
//!   never count at EL2; `PMSWINC_EL0` is emulated (a write at EL2 would be
//!   filtered out). The PMU moves between vCPUs as the debug file does; its
//!   owner's counters stop when it leaves its CPU and run again when it
//!   comes back.
//! - The overflow interrupt is not connected: `PMINTENSET/CLR_EL1` are kept
//!   per vCPU and never reach the CPU, so an overflow never raises PPI 23
//!   (the guest's DT has no PMU node to name one).
//! - The debug communications channel, the external-debug registers and the
//!   claim tags are emulated: reads answer the values an unconnected
//!   external debugger gives, `MDCCINT_EL1` and the claim tags are kept per
//!   vCPU.
//!
//! Every read the guest may make writes its destination register.

use crate::esr::SysRegAccess;
use crate::sched::VcpuRef;

/// Most breakpoints or watchpoints an Armv8 CPU has (`BRPs`, `WRPs` + 1).
pub const MAX_BREAKPOINTS: usize = 16;
/// Most PMU event counters (`PMCR_EL0.N`).
pub const MAX_COUNTERS: usize = 31;

/// `PMEVTYPER<n>_EL0`/`PMCCFILTR_EL0.NSH` (bit 27): count at EL2.
pub const NSH: u64 = 1 << 27;
/// The cycle counter's bit in the `PMCNTEN`, `PMOVS` and `PMINTEN` sets.
pub const CYCLE_BIT: u64 = 1 << 31;
/// `PMCR_EL0` bits a write may change: `E`, `P`, `C`, `D`, `X`, `DP`, `LC`,
/// `LP` (the rest are read-only or RES0).
pub const PMCR_WRITABLE: u64 = 0xff;
/// `PMCR_EL0.E`: counters enabled.
pub const PMCR_E: u64 = 1 << 0;
/// `MDCCINT_EL1` bits the guest may set: `TX` (29) and `RX` (30).
pub const MDCCINT_WRITABLE: u64 = (1 << 29) | (1 << 30);
/// The claim-tag bits (`DBGCLAIMSET_EL1` reads this: all eight exist).
pub const CLAIM_BITS: u64 = 0xff;
/// `DBGAUTHSTATUS_EL1` as the guest reads it: non-secure invasive and
/// non-invasive debug implemented and enabled, no Secure state.
pub const AUTHSTATUS: u64 = 0b1111;
/// `SW_INCR`, the software-increment event.
pub const EVENT_SW_INCR: u64 = 0x00;

/// A self-hosted debug register (`op0 = 2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugReg {
    /// `DBGBVR<n>_EL1`.
    Bvr(u8),
    /// `DBGBCR<n>_EL1`.
    Bcr(u8),
    /// `DBGWVR<n>_EL1`.
    Wvr(u8),
    /// `DBGWCR<n>_EL1`.
    Wcr(u8),
    /// `MDSCR_EL1`.
    Mdscr,
    /// `OSLAR_EL1` (write-only).
    Oslar,
    /// `OSLSR_EL1` (read-only).
    Oslsr,
    /// `OSDLR_EL1`.
    Osdlr,
    /// `DBGPRCR_EL1`.
    Dbgprcr,
    /// `MDRAR_EL1` (read-only).
    Mdrar,
    /// `MDCCINT_EL1`.
    Mdccint,
    /// `MDCCSR_EL0` (read-only).
    Mdccsr,
    /// `DBGDTR_EL0`.
    Dbgdtr,
    /// `DBGDTRRX_EL0` (read) and `DBGDTRTX_EL0` (write), one encoding.
    DbgdtrRxTx,
    /// `OSDTRRX_EL1`.
    Osdtrrx,
    /// `OSDTRTX_EL1`.
    Osdtrtx,
    /// `OSECCR_EL1`.
    Oseccr,
    /// `DBGCLAIMSET_EL1`.
    ClaimSet,
    /// `DBGCLAIMCLR_EL1`.
    ClaimClr,
    /// `DBGAUTHSTATUS_EL1` (read-only).
    AuthStatus,
}

/// A PMUv3 register (`op0 = 3`, `CRn = 9` or `14`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmuReg {
    /// `PMCR_EL0`.
    Pmcr,
    /// `PMCNTENSET_EL0`.
    CntenSet,
    /// `PMCNTENCLR_EL0`.
    CntenClr,
    /// `PMOVSCLR_EL0`.
    OvsClr,
    /// `PMOVSSET_EL0`.
    OvsSet,
    /// `PMSWINC_EL0` (write-only).
    Swinc,
    /// `PMSELR_EL0`.
    Selr,
    /// `PMCEID0_EL0` (read-only).
    Ceid0,
    /// `PMCEID1_EL0` (read-only).
    Ceid1,
    /// `PMCCNTR_EL0`.
    Ccntr,
    /// `PMXEVTYPER_EL0`.
    Xevtyper,
    /// `PMXEVCNTR_EL0`.
    Xevcntr,
    /// `PMUSERENR_EL0`.
    Userenr,
    /// `PMINTENSET_EL1`.
    IntenSet,
    /// `PMINTENCLR_EL1`.
    IntenClr,
    /// `PMMIR_EL1` (read-only).
    Mmir,
    /// `PMEVCNTR<n>_EL0`, `n` in 0..=30.
    Evcntr(u8),
    /// `PMEVTYPER<n>_EL0`, `n` in 0..=30.
    Evtyper(u8),
    /// `PMCCFILTR_EL0`.
    Ccfiltr,
}

/// A debug or PMU register a trapped access names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// A self-hosted debug register.
    Debug(DebugReg),
    /// A PMU register.
    Pmu(PmuReg),
}

/// Which of the CPU's register files an access needs to own first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owns {
    /// Neither: the access is emulated from the vCPU's own state.
    Nothing,
    /// The breakpoint/watchpoint file and OS lock.
    Debug,
    /// The PMU.
    Pmu,
}

/// Which direction an access may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ReadWrite,
    ReadOnly,
    WriteOnly,
}

/// The debug or PMU register `access` names, or `None` for any other
/// encoding (including the reserved ones of these spaces, which the exit
/// policy answers with an undefined-instruction exception).
pub fn classify(access: &SysRegAccess) -> Option<Reg> {
    let (op0, op1, crn, crm, op2) = (access.op0, access.op1, access.crn, access.crm, access.op2);
    match op0 {
        2 => classify_debug(op1, crn, crm, op2).map(Reg::Debug),
        3 => classify_pmu(op1, crn, crm, op2).map(Reg::Pmu),
        _ => None,
    }
}

fn classify_debug(op1: u8, crn: u8, crm: u8, op2: u8) -> Option<DebugReg> {
    use DebugReg::*;
    Some(match (op1, crn, crm, op2) {
        (0, 0, n, 4) => Bvr(n),
        (0, 0, n, 5) => Bcr(n),
        (0, 0, n, 6) => Wvr(n),
        (0, 0, n, 7) => Wcr(n),
        (0, 0, 0, 2) => Osdtrrx,
        (0, 0, 2, 0) => Mdccint,
        (0, 0, 2, 2) => Mdscr,
        (0, 0, 3, 2) => Osdtrtx,
        (0, 0, 6, 2) => Oseccr,
        (0, 1, 0, 0) => Mdrar,
        (0, 1, 0, 4) => Oslar,
        (0, 1, 1, 4) => Oslsr,
        (0, 1, 3, 4) => Osdlr,
        (0, 1, 4, 4) => Dbgprcr,
        (0, 7, 8, 6) => ClaimSet,
        (0, 7, 9, 6) => ClaimClr,
        (0, 7, 14, 6) => AuthStatus,
        (3, 0, 1, 0) => Mdccsr,
        (3, 0, 4, 0) => Dbgdtr,
        (3, 0, 5, 0) => DbgdtrRxTx,
        _ => return None,
    })
}

fn classify_pmu(op1: u8, crn: u8, crm: u8, op2: u8) -> Option<PmuReg> {
    use PmuReg::*;
    Some(match (op1, crn, crm, op2) {
        (3, 9, 12, 0) => Pmcr,
        (3, 9, 12, 1) => CntenSet,
        (3, 9, 12, 2) => CntenClr,
        (3, 9, 12, 3) => OvsClr,
        (3, 9, 12, 4) => Swinc,
        (3, 9, 12, 5) => Selr,
        (3, 9, 12, 6) => Ceid0,
        (3, 9, 12, 7) => Ceid1,
        (3, 9, 13, 0) => Ccntr,
        (3, 9, 13, 1) => Xevtyper,
        (3, 9, 13, 2) => Xevcntr,
        (3, 9, 14, 0) => Userenr,
        (3, 9, 14, 3) => OvsSet,
        (0, 9, 14, 1) => IntenSet,
        (0, 9, 14, 2) => IntenClr,
        (0, 9, 14, 6) => Mmir,
        (3, 14, 15, 7) => Ccfiltr,
        (3, 14, 8..=11, _) => Evcntr(((crm & 3) << 3) | op2),
        (3, 14, 12..=15, _) => Evtyper(((crm & 3) << 3) | op2),
        _ => return None,
    })
}

impl Reg {
    /// Which directions the register allows.
    fn dir(self) -> Dir {
        match self {
            Reg::Debug(DebugReg::Oslar) | Reg::Pmu(PmuReg::Swinc) => Dir::WriteOnly,
            Reg::Debug(
                DebugReg::Oslsr | DebugReg::Mdrar | DebugReg::Mdccsr | DebugReg::AuthStatus,
            )
            | Reg::Pmu(PmuReg::Ceid0 | PmuReg::Ceid1 | PmuReg::Mmir) => Dir::ReadOnly,
            _ => Dir::ReadWrite,
        }
    }

    /// Which of the CPU's register files an access to this register needs.
    pub fn owns(self) -> Owns {
        match self {
            Reg::Debug(
                DebugReg::Bvr(_)
                | DebugReg::Bcr(_)
                | DebugReg::Wvr(_)
                | DebugReg::Wcr(_)
                | DebugReg::Mdscr
                | DebugReg::Oslar
                | DebugReg::Oslsr,
            ) => Owns::Debug,
            Reg::Debug(_) | Reg::Pmu(PmuReg::IntenSet | PmuReg::IntenClr | PmuReg::Mmir) => {
                Owns::Nothing
            }
            Reg::Pmu(_) => Owns::Pmu,
        }
    }
}

/// What this CPU has: breakpoints, watchpoints and PMU event counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Breakpoints (`ID_AA64DFR0_EL1.BRPs` + 1).
    pub breakpoints: u8,
    /// Watchpoints (`ID_AA64DFR0_EL1.WRPs` + 1).
    pub watchpoints: u8,
    /// PMU event counters (`PMCR_EL0.N`), or `None` without a PMUv3.
    pub counters: Option<u8>,
}

/// `ID_AA64DFR0_EL1.PMUVer` (bits 11:8).
pub const fn pmu_version(dfr0: u64) -> u8 {
    ((dfr0 >> 8) & 0xf) as u8
}

/// Whether `ID_AA64DFR0_EL1` says the CPU has an Armv8 PMUv3 (`PMUVer`
/// 1..=0xe; 0xf is an IMPLEMENTATION DEFINED PMU).
pub const fn has_pmuv3(dfr0: u64) -> bool {
    let v = pmu_version(dfr0);
    v != 0 && v != 0xf
}

impl Limits {
    /// The limits `ID_AA64DFR0_EL1` and `PMCR_EL0` describe (`pmcr` is
    /// only looked at when the CPU has a PMUv3).
    pub const fn from_id(dfr0: u64, pmcr: u64) -> Self {
        let n = ((pmcr >> 11) & 0x1f) as u8;
        Self {
            breakpoints: ((dfr0 >> 12) & 0xf) as u8 + 1,
            watchpoints: ((dfr0 >> 20) & 0xf) as u8 + 1,
            counters: if has_pmuv3(dfr0) { Some(n) } else { None },
        }
    }

    /// Whether `reg` exists on this CPU and may be accessed in this
    /// direction (`read`); otherwise the access is UNDEFINED.
    pub fn allows(&self, reg: Reg, read: bool) -> bool {
        let dir_ok = match reg.dir() {
            Dir::ReadWrite => true,
            Dir::ReadOnly => read,
            Dir::WriteOnly => !read,
        };
        dir_ok
            && match reg {
                Reg::Debug(DebugReg::Bvr(n) | DebugReg::Bcr(n)) => n < self.breakpoints,
                Reg::Debug(DebugReg::Wvr(n) | DebugReg::Wcr(n)) => n < self.watchpoints,
                Reg::Debug(_) => true,
                Reg::Pmu(PmuReg::Evcntr(n) | PmuReg::Evtyper(n)) => {
                    self.counters.is_some_and(|c| n < c)
                }
                Reg::Pmu(_) => self.counters.is_some(),
            }
    }

    /// The bits of the `PMCNTEN`, `PMOVS` and `PMINTEN` sets that name a
    /// counter: one per event counter, and the cycle counter's.
    pub fn counter_mask(&self) -> u64 {
        let n = self.counters.unwrap_or(0).min(MAX_COUNTERS as u8);
        ((1u64 << n) - 1) | CYCLE_BIT
    }
}

/// `MDSCR_EL1.MDE` and `.SS`: breakpoints and watchpoints, or software
/// step, can fire.
const MDSCR_ARMS: u64 = (1 << 15) | (1 << 0);

/// Whether a parked `MDSCR_EL1` lets anything of its debug file fire
/// (without `MDE` no breakpoint or watchpoint, without `SS` no step).
pub const fn debug_armed(mdscr: u64) -> bool {
    mdscr & MDSCR_ARMS != 0
}

/// Whether a parked `PMCR_EL0` lets any counter count (`E`).
pub const fn pmu_armed(pmcr: u64) -> bool {
    pmcr & PMCR_E != 0
}

/// An event-type or filter value with `NSH` clear: the counter does not
/// count at EL2, whatever the guest asked.
pub const fn without_nsh(value: u64) -> u64 {
    value & !NSH
}

/// A CPU register [`emulate`] performs an access on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HwReg {
    /// `DBGBVR<n>_EL1`.
    Bvr(u8),
    /// `DBGBCR<n>_EL1`.
    Bcr(u8),
    /// `DBGWVR<n>_EL1`.
    Wvr(u8),
    /// `DBGWCR<n>_EL1`.
    Wcr(u8),
    /// `MDSCR_EL1`.
    Mdscr,
    /// `OSLAR_EL1` (written only).
    Oslar,
    /// `OSLSR_EL1` (read only).
    Oslsr,
    /// `PMCR_EL0`.
    Pmcr,
    /// `PMCNTENSET_EL0`.
    CntenSet,
    /// `PMCNTENCLR_EL0`.
    CntenClr,
    /// `PMOVSSET_EL0`.
    OvsSet,
    /// `PMOVSCLR_EL0`.
    OvsClr,
    /// `PMSELR_EL0`.
    Selr,
    /// `PMCEID0_EL0`.
    Ceid0,
    /// `PMCEID1_EL0`.
    Ceid1,
    /// `PMCCNTR_EL0`.
    Ccntr,
    /// `PMUSERENR_EL0`.
    Userenr,
    /// `PMEVCNTR<n>_EL0`.
    Evcntr(u8),
    /// `PMEVTYPER<n>_EL0`.
    Evtyper(u8),
    /// `PMCCFILTR_EL0`.
    Ccfiltr,
}

/// The CPU's debug and PMU registers, as [`emulate`] reaches them (the
/// running vCPU owns whichever file the access needs).
pub trait DebugPmuHw {
    /// Reads `reg`.
    fn read(&mut self, reg: HwReg) -> u64;
    /// Writes `value` to `reg`.
    fn write(&mut self, reg: HwReg, value: u64);
}

/// What a vCPU's debug and PMU state holds besides the CPU's registers:
/// the parts that never reach the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shadow {
    /// `MDCCINT_EL1`.
    pub mdccint: u64,
    /// The claim tags.
    pub claim: u64,
    /// `PMINTENSET_EL1`: the overflow interrupt enables (not connected).
    pub pminten: u64,
}

/// Emulates a trapped access to `reg` that [`Limits::allows`]: `value` is
/// the written value (for a write); returns the value read (for a read;
/// 0 after a write). The CPU's registers are reached through `hw`.
pub fn emulate(
    reg: Reg,
    read: bool,
    value: u64,
    limits: &Limits,
    shadow: &mut Shadow,
    hw: &mut impl DebugPmuHw,
) -> u64 {
    match reg {
        Reg::Debug(d) => debug(d, read, value, shadow, hw),
        Reg::Pmu(p) => pmu(p, read, value, limits, shadow, hw),
    }
}

/// Performs a read or a write of `reg` on the CPU.
fn perform(reg: HwReg, read: bool, value: u64, hw: &mut impl DebugPmuHw) -> u64 {
    if read {
        hw.read(reg)
    } else {
        hw.write(reg, value);
        0
    }
}

fn debug(
    reg: DebugReg,
    read: bool,
    value: u64,
    shadow: &mut Shadow,
    hw: &mut impl DebugPmuHw,
) -> u64 {
    use DebugReg::*;
    match reg {
        Bvr(n) => perform(HwReg::Bvr(n), read, value, hw),
        Bcr(n) => perform(HwReg::Bcr(n), read, value, hw),
        Wvr(n) => perform(HwReg::Wvr(n), read, value, hw),
        Wcr(n) => perform(HwReg::Wcr(n), read, value, hw),
        Mdscr => perform(HwReg::Mdscr, read, value, hw),
        Oslar => perform(HwReg::Oslar, false, value & 1, hw),
        Oslsr => perform(HwReg::Oslsr, true, 0, hw),
        Mdccint => {
            if !read {
                shadow.mdccint = value & MDCCINT_WRITABLE;
            }
            if read { shadow.mdccint } else { 0 }
        }
        ClaimSet => {
            if !read {
                shadow.claim |= value & CLAIM_BITS;
            }
            if read { CLAIM_BITS } else { 0 }
        }
        ClaimClr => {
            if !read {
                shadow.claim &= !value;
            }
            if read { shadow.claim } else { 0 }
        }
        AuthStatus => AUTHSTATUS,
        // No external debugger is connected: the communications channel
        // and the OS save/restore registers read as zero and ignore
        // writes; there is no memory-mapped debug ROM, double lock or
        // power-down request.
        Osdlr | Dbgprcr | Mdrar | Mdccsr | Dbgdtr | DbgdtrRxTx | Osdtrrx | Osdtrtx | Oseccr => 0,
    }
}

fn pmu(
    reg: PmuReg,
    read: bool,
    value: u64,
    limits: &Limits,
    shadow: &mut Shadow,
    hw: &mut impl DebugPmuHw,
) -> u64 {
    use PmuReg::*;
    let mask = limits.counter_mask();
    let n = limits.counters.unwrap_or(0);
    match reg {
        Pmcr => perform(HwReg::Pmcr, read, value & PMCR_WRITABLE, hw),
        CntenSet => perform(HwReg::CntenSet, read, value & mask, hw),
        CntenClr => perform(HwReg::CntenClr, read, value & mask, hw),
        OvsSet => perform(HwReg::OvsSet, read, value & mask, hw),
        OvsClr => perform(HwReg::OvsClr, read, value & mask, hw),
        Selr => perform(HwReg::Selr, read, value & 0x1f, hw),
        Ceid0 => perform(HwReg::Ceid0, true, 0, hw),
        Ceid1 => perform(HwReg::Ceid1, true, 0, hw),
        Ccntr => perform(HwReg::Ccntr, read, value, hw),
        Userenr => perform(HwReg::Userenr, read, value & 0xf, hw),
        Evcntr(i) => perform(HwReg::Evcntr(i), read, value & 0xffff_ffff, hw),
        Evtyper(i) => perform(HwReg::Evtyper(i), read, without_nsh(value), hw),
        Ccfiltr => perform(HwReg::Ccfiltr, read, without_nsh(value), hw),
        // The selected counter: the cycle counter's filter for 31, an
        // event counter below N; any other selection is CONSTRAINED
        // UNPREDICTABLE, and reads as zero and ignores writes here.
        Xevtyper | Xevcntr => {
            let sel = (hw.read(HwReg::Selr) & 0x1f) as u8;
            match (reg, sel) {
                (Xevtyper, 31) => perform(HwReg::Ccfiltr, read, without_nsh(value), hw),
                (Xevtyper, i) if i < n => perform(HwReg::Evtyper(i), read, without_nsh(value), hw),
                (_, i) if i < n && i != 31 => {
                    perform(HwReg::Evcntr(i), read, value & 0xffff_ffff, hw)
                }
                _ => 0,
            }
        }
        IntenSet => {
            if !read {
                shadow.pminten |= value & mask;
            }
            if read { shadow.pminten } else { 0 }
        }
        IntenClr => {
            if !read {
                shadow.pminten &= !(value & mask);
            }
            if read { shadow.pminten } else { 0 }
        }
        // No PMU information is given (PMUv3p4's PMMIR_EL1: SLOTS 0).
        Mmir => 0,
        Swinc => {
            software_increment(value & mask & !CYCLE_BIT, n, hw);
            0
        }
    }
}

/// A `PMSWINC_EL0` write of `bits`: every event counter `i` of them that
/// is enabled (`PMCR_EL0.E` and `PMCNTENSET_EL0` bit `i`) and counts
/// `SW_INCR` goes up by one; one that wraps sets its overflow flag.
fn software_increment(bits: u64, n: u8, hw: &mut impl DebugPmuHw) {
    if bits == 0 || hw.read(HwReg::Pmcr) & PMCR_E == 0 {
        return;
    }
    let enabled = hw.read(HwReg::CntenSet);
    for i in 0..n.min(MAX_COUNTERS as u8) {
        let bit = 1u64 << i;
        if bits & enabled & bit == 0 || hw.read(HwReg::Evtyper(i)) & 0xffff != EVENT_SW_INCR {
            continue;
        }
        let next = (hw.read(HwReg::Evcntr(i)) + 1) & 0xffff_ffff;
        hw.write(HwReg::Evcntr(i), next);
        if next == 0 {
            hw.write(HwReg::OvsSet, bit);
        }
    }
}

/// Which vCPU's register files one CPU holds — its breakpoint/watchpoint
/// file and its PMU — and which vCPUs of its queue (by position) use them.
///
/// A vCPU becomes a *user* of a file with its first trapped access
/// ([`HwOwners::claim`]) and stays one until it restarts
/// ([`HwOwners::forget`]). A user's file must be in the CPU whenever it
/// runs (a breakpoint, watchpoint, step or count happens without any
/// access to trap), so switching to a user that does not own the file
/// takes it over ([`HwOwners::switch`]). A vCPU that never used a file
/// costs nothing: when the owner leaves, the file is only *parked* (its
/// live part, `MDSCR_EL1` or `PMCR_EL0.E`, saved and cleared), and taken up
/// again if the owner is the next user to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwOwners {
    debug: File,
    pmu: File,
    /// Some vCPU owns or uses a file (else a switch has nothing to do).
    in_use: bool,
}

/// One of the CPU's files: its owner and the queue positions of its users.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct File {
    owner: Option<VcpuRef>,
    users: u32,
}

/// What taking a file over involves ([`HwOwners::claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The previous owner, whose file must be saved first.
    pub save: Option<VcpuRef>,
    /// Whether the claimant's file must be loaded (it did not own it).
    pub load: bool,
}

/// What a switch does with one file, in this order: park the leaving
/// owner's, save the owner's (if the incoming vCPU takes it over), load the
/// incoming vCPU's, or take up the returning owner's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSwitch {
    /// The leaving vCPU owns the file: its live part is saved and cleared.
    pub park: bool,
    /// The owner (parked) whose file must be saved: the incoming vCPU, a
    /// user, takes the file over.
    pub save: Option<VcpuRef>,
    /// The incoming vCPU's file is loaded (it takes the file over).
    pub load: bool,
    /// The incoming vCPU owns the parked file: its live part is restored.
    pub unpark: bool,
}

impl FileSwitch {
    /// Nothing to do.
    pub const NOTHING: Self = Self {
        park: false,
        save: None,
        load: false,
        unpark: false,
    };
}

/// What a switch (or a forgotten owner) does with the CPU's files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switch {
    /// The breakpoint/watchpoint file (live part: `MDSCR_EL1`).
    pub debug: FileSwitch,
    /// The PMU (live part: `PMCR_EL0`, whose `E` runs the counters).
    pub pmu: FileSwitch,
}

impl Switch {
    /// Nothing to do.
    pub const NOTHING: Self = Self {
        debug: FileSwitch::NOTHING,
        pmu: FileSwitch::NOTHING,
    };
}

impl File {
    const fn new() -> Self {
        Self {
            owner: None,
            users: 0,
        }
    }

    fn bit(slot: usize) -> u32 {
        1u32.checked_shl(slot as u32).unwrap_or(0)
    }

    fn claim(&mut self, me: VcpuRef, slot: usize) -> Takeover {
        self.users |= Self::bit(slot);
        let previous = self.owner.replace(me);
        Takeover {
            save: previous.filter(|&p| p != me),
            load: previous != Some(me),
        }
    }

    fn set_user(&mut self, slot: usize, user: bool) {
        if user {
            self.users |= Self::bit(slot);
        } else {
            self.users &= !Self::bit(slot);
        }
    }

    fn forget(&mut self, v: VcpuRef, slot: Option<usize>) -> FileSwitch {
        if let Some(slot) = slot {
            self.users &= !Self::bit(slot);
        }
        let owned = self.owner == Some(v);
        if owned {
            self.owner = None;
        }
        FileSwitch {
            park: owned,
            ..FileSwitch::NOTHING
        }
    }

    #[inline]
    fn switch(&mut self, out: Option<VcpuRef>, next: VcpuRef, slot: usize) -> FileSwitch {
        let Some(owner) = self.owner else {
            if self.users & Self::bit(slot) == 0 {
                return FileSwitch::NOTHING;
            }
            self.owner = Some(next);
            return FileSwitch {
                load: true,
                ..FileSwitch::NOTHING
            };
        };
        let leaving = out == Some(owner) && owner != next;
        if owner == next {
            return FileSwitch {
                unpark: out != Some(next),
                ..FileSwitch::NOTHING
            };
        }
        if self.users & Self::bit(slot) == 0 {
            return FileSwitch {
                park: leaving,
                ..FileSwitch::NOTHING
            };
        }
        self.owner = Some(next);
        FileSwitch {
            park: leaving,
            save: Some(owner),
            load: true,
            unpark: false,
        }
    }
}

impl HwOwners {
    /// Nobody's, no users.
    pub const fn new() -> Self {
        Self {
            debug: File::new(),
            pmu: File::new(),
            in_use: false,
        }
    }

    /// Who owns the breakpoint/watchpoint file.
    pub fn debug_owner(&self) -> Option<VcpuRef> {
        self.debug.owner
    }

    /// Who owns the PMU.
    pub fn pmu_owner(&self) -> Option<VcpuRef> {
        self.pmu.owner
    }

    /// `me`, running at queue position `slot`, needs `what`: it owns it
    /// afterwards, and uses it from now on.
    pub fn claim(&mut self, what: Owns, me: VcpuRef, slot: usize) -> Takeover {
        match what {
            Owns::Nothing => Takeover {
                save: None,
                load: false,
            },
            Owns::Debug => {
                self.in_use = true;
                self.debug.claim(me, slot)
            }
            Owns::Pmu => {
                self.in_use = true;
                self.pmu.claim(me, slot)
            }
        }
    }

    /// The owner at queue position `slot` left its CPU and its file of
    /// `what` was parked: `armed` says whether anything in it can fire or
    /// count ([`debug_armed`], [`pmu_armed`]). One that cannot need not be
    /// loaded before its vCPU runs again: whatever the vCPU does with it
    /// traps first and loads it then. (Linux touches both files at boot and
    /// arms neither unless a debugger or `perf` runs: its vCPUs then move
    /// no file on a switch.)
    pub fn parked(&mut self, what: Owns, slot: usize, armed: bool) {
        match what {
            Owns::Nothing => {}
            Owns::Debug => self.debug.set_user(slot, armed),
            Owns::Pmu => self.pmu.set_user(slot, armed),
        }
    }

    /// `v` (at queue position `slot`, if known) restarted or stopped: it
    /// uses nothing any more, and what the CPU holds of it is meaningless
    /// (not to be saved over its fresh state). The `park` of each file it
    /// owned says its live part must be cleared before anyone else runs;
    /// there is nothing to save.
    pub fn forget(&mut self, v: VcpuRef, slot: Option<usize>) -> Switch {
        let sw = Switch {
            debug: self.debug.forget(v, slot),
            pmu: self.pmu.forget(v, slot),
        };
        self.in_use = self.debug.owner.is_some()
            || self.pmu.owner.is_some()
            || self.debug.users | self.pmu.users != 0;
        sw
    }

    /// The switch from `out` (the loaded vCPU, if any) to `next`, at queue
    /// position `slot`: what to do with each file, or `None` when nothing
    /// (a couple of compares while no vCPU of the CPU ever used a file).
    #[inline]
    pub fn switch(&mut self, out: Option<VcpuRef>, next: VcpuRef, slot: usize) -> Option<Switch> {
        if !self.in_use {
            return None;
        }
        let sw = Switch {
            debug: self.debug.switch(out, next, slot),
            pmu: self.pmu.switch(out, next, slot),
        };
        (sw != Switch::NOTHING).then_some(sw)
    }
}

#[cfg(test)]
mod tests;
