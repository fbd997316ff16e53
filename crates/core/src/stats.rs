//! Exit statistics: per-vCPU counters by [`Reason`] (the Arm `kvm_stat`),
//! the classification of calls and system registers into reasons, and the
//! table that shows them.
//!
//! [`ExitStats`] is one `u64` per reason, laid out as the telemetry block
//! expects (`stratum_abi::telemetry`), so the hypervisor can keep the live
//! counters in the published block itself. The counters are atomics so that
//! readers on other CPUs (the console's statistics escape, the stop report)
//! need no lock; but an increment is a relaxed load and store, not a
//! read-modify-write: **each vCPU's counters have one writer**, the physical
//! CPU running that vCPU. A second concurrent writer could lose a count,
//! never corrupt one.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use stratum_abi::smccc::{self, stratum};
pub use stratum_abi::telemetry::Reason;

use crate::esr::{self, SysRegAccess, WfxKind};

/// One vCPU's exit counters, one per [`Reason`] in code order.
#[derive(Debug)]
#[repr(C)]
pub struct ExitStats {
    counts: [AtomicU64; Reason::COUNT],
}

// The telemetry block embeds these as `[u64; Reason::COUNT]`.
const _: () = assert!(core::mem::size_of::<ExitStats>() == Reason::COUNT * 8);

impl Default for ExitStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ExitStats {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; Reason::COUNT],
        }
    }

    /// Counts one `reason` (single writer: see the module docs).
    #[inline]
    pub fn count(&self, reason: Reason) {
        let c = &self.counts[reason as usize];
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Counts `n` of `reason` at once (single writer: see the module docs).
    #[inline]
    pub fn add(&self, reason: Reason, n: u64) {
        let c = &self.counts[reason as usize];
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// The counter of `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }

    /// Sum of the counters of `reasons`.
    pub fn sum(&self, reasons: &[Reason]) -> u64 {
        reasons.iter().map(|&r| self.get(r)).sum()
    }

    /// Sum of the counters whose reason is in `family` ([`Reason::family`]).
    pub fn family(&self, family: &str) -> u64 {
        Reason::ALL
            .iter()
            .filter(|r| r.family() == family && r.is_exit())
            .map(|&r| self.get(r))
            .sum()
    }

    /// Every counter, in code order.
    pub fn snapshot(&self) -> [u64; Reason::COUNT] {
        core::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Sets every counter to zero (only while nothing counts).
    pub fn clear(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The reason for an SMCCC call with function ID `function` made with
/// `HVC #0`.
///
/// On every hypercall's path, so it is a table lookup rather than a compare
/// tree: the owning service (bits 31:16) picks a table, the function
/// number (bits 15:0) indexes it; the Arm architecture service's
/// workaround IDs are the only ones outside small tables.
#[inline]
pub const fn call_reason(function: u32) -> Reason {
    let number = (function & 0xFFFF) as usize;
    let table: &[Reason] = match function >> 16 {
        0x8000 => match function {
            smccc::SMCCC_ARCH_WORKAROUND_1
            | smccc::SMCCC_ARCH_WORKAROUND_2
            | smccc::SMCCC_ARCH_WORKAROUND_3 => return Reason::HvcWorkaround,
            _ => &ARCH_CALLS,
        },
        0x8400 => &PSCI_CALLS_32,
        0xC400 => &PSCI_CALLS_64,
        0xC600 => &STRATUM_CALLS,
        0x8600 if number >= 0xFF00 => {
            return match function {
                stratum::CALL_COUNT | stratum::CALL_UID | stratum::REVISION => {
                    Reason::HvcStratumQuery
                }
                _ => Reason::HvcOther,
            };
        }
        _ => return Reason::HvcOther,
    };
    if number < table.len() {
        table[number]
    } else if is_trng(function) {
        Reason::HvcTrng
    } else {
        Reason::HvcOther
    }
}

/// Whether `function` is one of SMCCC TRNG's (outside the PSCI tables).
const fn is_trng(function: u32) -> bool {
    use stratum_abi::smccc::trng;
    matches!(
        function,
        trng::VERSION | trng::FEATURES | trng::GET_UUID | trng::RND32 | trng::RND64
    )
}

/// No function of that number in the service.
const NONE: Reason = Reason::HvcOther;

/// `0x8000_00nn`: the Arm architecture calls, by function number.
const ARCH_CALLS: [Reason; 3] = [
    Reason::HvcSmcccVersion,
    Reason::HvcSmcccFeatures,
    Reason::HvcSmcccSocId,
];

/// `0x8400_00nn`: PSCI, SMC32 calling convention.
const PSCI_CALLS_32: [Reason; 0x13] = [
    Reason::HvcPsciVersion,      // 0x00
    Reason::HvcPsciCpuSuspend,   // 0x01
    Reason::HvcPsciCpuOff,       // 0x02
    Reason::HvcPsciCpuOn,        // 0x03
    Reason::HvcPsciAffinityInfo, // 0x04
    Reason::HvcPsciMigrate,      // 0x05
    Reason::HvcPsciMigrate,      // 0x06 MIGRATE_INFO_TYPE
    Reason::HvcPsciMigrate,      // 0x07 MIGRATE_INFO_UP_CPU
    Reason::HvcPsciSystemOff,    // 0x08
    Reason::HvcPsciSystemReset,  // 0x09
    Reason::HvcPsciFeatures,     // 0x0A
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE, // 0x12: SYSTEM_RESET2 is SMC64 only here
];

/// `0xC400_00nn`: PSCI, SMC64 calling convention.
const PSCI_CALLS_64: [Reason; 0x13] = [
    NONE,
    Reason::HvcPsciCpuSuspend, // 0x01
    NONE,
    Reason::HvcPsciCpuOn,        // 0x03
    Reason::HvcPsciAffinityInfo, // 0x04
    Reason::HvcPsciMigrate,      // 0x05
    NONE,
    Reason::HvcPsciMigrate, // 0x07 MIGRATE_INFO_UP_CPU
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    Reason::HvcPsciSystemReset, // 0x12 SYSTEM_RESET2
];

/// `0xC600_00nn`: Stratum's vendor calls.
const STRATUM_CALLS: [Reason; 3] = [
    Reason::HvcStratumInfo,
    Reason::HvcStratumDoorbell,
    Reason::HvcStratumMemInfo,
];

/// The reason for a trapped system-register access.
pub const fn sysreg_reason(access: &SysRegAccess) -> Reason {
    let enc = access.encoding();
    match enc {
        esr::sysreg::ICC_SGI1R_EL1 if !access.read => Reason::SysregSgi1r,
        esr::sysreg::ICC_ASGI1R_EL1 if !access.read => Reason::SysregAsgi1r,
        esr::sysreg::ICC_SGI0R_EL1 if !access.read => Reason::SysregSgi0r,
        _ if is_id_register(enc) && access.read => Reason::SysregId,
        _ => Reason::SysregOther,
    }
}

/// Whether `encoding` (as [`esr::sysreg::encode`]) is in the ID register
/// space that `HCR_EL2.TID3` traps: op0 = 3, op1 = 0, CRn = 0, CRm = 1..=7.
pub const fn is_id_register(encoding: u32) -> bool {
    let id_space = esr::sysreg::encode(3, 0, 0, 0, 0);
    let mask = esr::sysreg::encode(3, 7, 15, 0, 0);
    let crm = (encoding >> 3) & 0xF;
    encoding & mask == id_space && crm >= 1 && crm <= 7
}

/// The reason for a trapped WFI/WFE of `kind`.
pub const fn wfx_reason(kind: WfxKind) -> Reason {
    match kind {
        WfxKind::Wfi => Reason::Wfi,
        WfxKind::Wfe => Reason::Wfe,
        WfxKind::Wfit | WfxKind::Wfet => Reason::WfxTimed,
    }
}

/// Width of the reason column.
const NAME_WIDTH: usize = 24;
/// Width of each count column (after a separating space).
const COUNT_WIDTH: usize = 10;

/// Writes the statistics table of one VM with `vcpus` vCPUs: a row per
/// reason that counted anything (code order), a column per vCPU and a
/// total; then a `total` row over the exit reasons (notes such as
/// [`Reason::MmioDecoded`] are shown but not added). `get(vcpu, reason)`
/// gives a counter. Without any count, one line says so.
pub fn render_table(
    w: &mut impl fmt::Write,
    vcpus: usize,
    get: impl Fn(usize, Reason) -> u64,
) -> fmt::Result {
    let row_total = |r: Reason| (0..vcpus).map(|v| get(v, r)).sum::<u64>();
    if Reason::ALL.iter().all(|&r| row_total(r) == 0) {
        return writeln!(w, "  (no exits counted)");
    }
    write!(w, "  {:<NAME_WIDTH$}", "reason")?;
    for v in 0..vcpus {
        write!(w, " {:>COUNT_WIDTH$}", Column(v))?;
    }
    writeln!(w, " {:>COUNT_WIDTH$}", "total")?;
    for &r in Reason::ALL {
        let total = row_total(r);
        if total == 0 {
            continue;
        }
        write!(w, "  {:<NAME_WIDTH$}", r.name())?;
        for v in 0..vcpus {
            write!(w, " {:>COUNT_WIDTH$}", get(v, r))?;
        }
        writeln!(w, " {total:>COUNT_WIDTH$}")?;
    }
    write!(w, "  {:<NAME_WIDTH$}", "total")?;
    let exits = |v: usize| -> u64 {
        Reason::ALL
            .iter()
            .filter(|r| r.is_exit())
            .map(|&r| get(v, r))
            .sum()
    };
    for v in 0..vcpus {
        write!(w, " {:>COUNT_WIDTH$}", exits(v))?;
    }
    writeln!(w, " {:>COUNT_WIDTH$}", (0..vcpus).map(exits).sum::<u64>())
}

/// A vCPU column heading, `vcpuN`.
struct Column(usize);

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Formatted into a small buffer so that width and alignment apply.
        let mut buf = [0u8; 16];
        let mut n = 0;
        for b in b"vcpu" {
            buf[n] = *b;
            n += 1;
        }
        let mut digits = [0u8; 8];
        let mut d = 0;
        let mut v = self.0;
        loop {
            digits[d] = b'0' + (v % 10) as u8;
            d += 1;
            v /= 10;
            if v == 0 || d == digits.len() {
                break;
            }
        }
        while d > 0 {
            d -= 1;
            buf[n] = digits[d];
            n += 1;
        }
        f.pad(core::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::esr::sysreg;

    #[test]
    fn counts_and_snapshots() {
        let s = ExitStats::new();
        s.count(Reason::Wfi);
        s.count(Reason::Wfi);
        s.count(Reason::HvcPsciVersion);
        s.count(Reason::MmioDecoded);
        s.add(Reason::IrqKick, 3);
        assert_eq!(s.get(Reason::IrqKick), 3);
        s.add(Reason::IrqKick, 0);
        assert_eq!(s.family("irq"), 3);
        s.add(Reason::IrqKick, u64::MAX - 2);
        assert_eq!(s.get(Reason::IrqKick), 0, "wraps, never panics");
        assert_eq!(s.get(Reason::Wfi), 2);
        assert_eq!(s.family("wfx"), 2);
        assert_eq!(s.family("hvc"), 1);
        // Notes are not exits.
        assert_eq!(s.family("mmio"), 0);
        assert_eq!(s.sum(&[Reason::Wfi, Reason::HvcPsciVersion]), 3);
        let snap = s.snapshot();
        assert_eq!(snap[Reason::Wfi as usize], 2);
        assert_eq!(snap.iter().sum::<u64>(), 4);
        s.clear();
        assert_eq!(s.snapshot(), [0; Reason::COUNT]);
    }

    /// The classification spelled out, to check the tables against.
    fn reference_call_reason(function: u32) -> Reason {
        match function {
            smccc::SMCCC_VERSION => Reason::HvcSmcccVersion,
            smccc::SMCCC_ARCH_FEATURES => Reason::HvcSmcccFeatures,
            smccc::SMCCC_ARCH_SOC_ID => Reason::HvcSmcccSocId,
            smccc::SMCCC_ARCH_WORKAROUND_1
            | smccc::SMCCC_ARCH_WORKAROUND_2
            | smccc::SMCCC_ARCH_WORKAROUND_3 => Reason::HvcWorkaround,
            smccc::PSCI_VERSION => Reason::HvcPsciVersion,
            smccc::PSCI_CPU_SUSPEND_32 | smccc::PSCI_CPU_SUSPEND_64 => Reason::HvcPsciCpuSuspend,
            smccc::PSCI_CPU_OFF => Reason::HvcPsciCpuOff,
            smccc::PSCI_CPU_ON_32 | smccc::PSCI_CPU_ON_64 => Reason::HvcPsciCpuOn,
            smccc::PSCI_AFFINITY_INFO_32 | smccc::PSCI_AFFINITY_INFO_64 => {
                Reason::HvcPsciAffinityInfo
            }
            smccc::PSCI_MIGRATE_32
            | smccc::PSCI_MIGRATE_64
            | smccc::PSCI_MIGRATE_INFO_TYPE
            | smccc::PSCI_MIGRATE_INFO_UP_CPU_32
            | smccc::PSCI_MIGRATE_INFO_UP_CPU_64 => Reason::HvcPsciMigrate,
            smccc::PSCI_SYSTEM_OFF => Reason::HvcPsciSystemOff,
            smccc::PSCI_SYSTEM_RESET | smccc::PSCI_SYSTEM_RESET2_64 => Reason::HvcPsciSystemReset,
            smccc::PSCI_FEATURES => Reason::HvcPsciFeatures,
            stratum::INFO => Reason::HvcStratumInfo,
            stratum::DOORBELL => Reason::HvcStratumDoorbell,
            stratum::MEM_INFO => Reason::HvcStratumMemInfo,
            stratum::CALL_COUNT | stratum::CALL_UID | stratum::REVISION => Reason::HvcStratumQuery,
            _ => Reason::HvcOther,
        }
    }

    /// Every function number of every service the call tables cover, and
    /// their neighbours (also what the early path's tests sweep).
    pub(crate) fn covered_function_ids() -> impl Iterator<Item = u32> {
        [
            0x8000u32, 0x8400, 0xC400, 0xC600, 0x8600, 0x8100, 0xC000, 0x0400,
        ]
        .into_iter()
        .flat_map(|service| {
            (0..0x40)
                .chain(0x3FF0..0x4010)
                .chain(0x7FF0..0x8010)
                .chain(0xFEF0..=0xFFFF)
                .map(move |number| (service << 16) | number)
        })
    }

    #[test]
    fn call_tables_match_the_function_ids() {
        for f in covered_function_ids() {
            assert_eq!(call_reason(f), reference_call_reason(f), "{f:#x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn call_tables_match_for_any_id(f: u32) {
            proptest::prop_assert_eq!(call_reason(f), reference_call_reason(f));
        }
    }

    #[test]
    fn calls_are_classified_by_function() {
        assert_eq!(call_reason(smccc::PSCI_VERSION), Reason::HvcPsciVersion);
        assert_eq!(call_reason(smccc::PSCI_CPU_ON_64), Reason::HvcPsciCpuOn);
        assert_eq!(call_reason(smccc::PSCI_CPU_ON_32), Reason::HvcPsciCpuOn);
        assert_eq!(
            call_reason(smccc::SMCCC_ARCH_WORKAROUND_2),
            Reason::HvcWorkaround
        );
        assert_eq!(
            call_reason(smccc::PSCI_SYSTEM_RESET2_64),
            Reason::HvcPsciSystemReset
        );
        assert_eq!(call_reason(stratum::INFO), Reason::HvcStratumInfo);
        assert_eq!(call_reason(stratum::DOORBELL), Reason::HvcStratumDoorbell);
        assert_eq!(call_reason(stratum::CALL_UID), Reason::HvcStratumQuery);
        assert_eq!(call_reason(0x1234), Reason::HvcOther);
        assert_eq!(call_reason(0xC400_0003 + 0x100), Reason::HvcOther);
        // Every HVC reason but the catch-alls is reachable from some ID.
        let ids = [
            smccc::SMCCC_VERSION,
            smccc::SMCCC_ARCH_FEATURES,
            smccc::SMCCC_ARCH_SOC_ID,
            smccc::SMCCC_ARCH_WORKAROUND_1,
            smccc::PSCI_VERSION,
            smccc::PSCI_CPU_SUSPEND_64,
            smccc::PSCI_CPU_OFF,
            smccc::PSCI_CPU_ON_64,
            smccc::PSCI_AFFINITY_INFO_64,
            smccc::PSCI_MIGRATE_INFO_TYPE,
            smccc::PSCI_SYSTEM_OFF,
            smccc::PSCI_SYSTEM_RESET,
            smccc::PSCI_FEATURES,
            stratum::INFO,
            stratum::DOORBELL,
            stratum::MEM_INFO,
            stratum::CALL_COUNT,
        ];
        let mut seen: Vec<Reason> = ids.iter().map(|&f| call_reason(f)).collect();
        seen.dedup();
        assert_eq!(seen.len(), ids.len());
        assert!(seen.iter().all(|r| r.family() == "hvc"));
    }

    fn access(encoding: u32, read: bool) -> SysRegAccess {
        let field = |shift: u32, mask: u32| ((encoding >> shift) & mask) as u8;
        let a = SysRegAccess {
            op0: field(14, 3),
            op1: field(11, 7),
            crn: field(7, 0xF),
            crm: field(3, 0xF),
            op2: field(0, 7),
            rt: 1,
            read,
        };
        assert_eq!(a.encoding(), encoding);
        a
    }

    #[test]
    fn system_registers_are_classified() {
        assert_eq!(
            sysreg_reason(&access(sysreg::ICC_SGI1R_EL1, false)),
            Reason::SysregSgi1r
        );
        assert_eq!(
            sysreg_reason(&access(sysreg::ICC_ASGI1R_EL1, false)),
            Reason::SysregAsgi1r
        );
        assert_eq!(
            sysreg_reason(&access(sysreg::ICC_SGI0R_EL1, false)),
            Reason::SysregSgi0r
        );
        // Reading an SGI register is not an IPI.
        assert_eq!(
            sysreg_reason(&access(sysreg::ICC_SGI1R_EL1, true)),
            Reason::SysregOther
        );
        for id in [
            sysreg::ID_AA64PFR0_EL1,
            sysreg::ID_AA64ISAR1_EL1,
            sysreg::ID_AA64MMFR2_EL1,
            sysreg::encode(3, 0, 0, 1, 0), // ID_PFR0_EL1
        ] {
            assert!(is_id_register(id), "{id:#x}");
            assert_eq!(sysreg_reason(&access(id, true)), Reason::SysregId);
            assert_eq!(sysreg_reason(&access(id, false)), Reason::SysregOther);
        }
        // MIDR_EL1 (CRm 0) and CTR_EL0 (op1 3) are not in the TID3 group.
        assert!(!is_id_register(sysreg::encode(3, 0, 0, 0, 0)));
        assert!(!is_id_register(sysreg::encode(3, 3, 0, 0, 1)));
        assert!(!is_id_register(sysreg::encode(3, 0, 1, 0, 0)));
    }

    #[test]
    fn wfx_kinds() {
        assert_eq!(wfx_reason(WfxKind::Wfi), Reason::Wfi);
        assert_eq!(wfx_reason(WfxKind::Wfe), Reason::Wfe);
        assert_eq!(wfx_reason(WfxKind::Wfit), Reason::WfxTimed);
        assert_eq!(wfx_reason(WfxKind::Wfet), Reason::WfxTimed);
    }

    #[test]
    fn table_rows_columns_and_totals() {
        let stats = [ExitStats::new(), ExitStats::new()];
        for _ in 0..3 {
            stats[0].count(Reason::HvcPsciVersion);
        }
        stats[1].count(Reason::HvcPsciVersion);
        for _ in 0..12 {
            stats[1].count(Reason::MmioUartWrite);
        }
        stats[1].count(Reason::MmioDecoded);
        let mut out = String::new();
        render_table(&mut out, 2, |v, r| stats[v].get(r)).expect("formats");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(words(lines[0]), ["reason", "vcpu0", "vcpu1", "total"]);
        assert_eq!(words(lines[1]), ["hvc", "PSCI_VERSION", "3", "1", "4"]);
        assert_eq!(words(lines[2]), ["mmio", "UART", "write", "0", "12", "12"]);
        assert_eq!(words(lines[3]), ["of", "which", "ISV=0", "0", "1", "1"]);
        // The note is not an exit of its own.
        assert_eq!(words(lines[4]), ["total", "3", "13", "16"]);
        // Columns line up: every line is as long as the heading.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{out}");
    }

    #[test]
    fn empty_table_and_wide_columns() {
        let mut out = String::new();
        render_table(&mut out, 1, |_, _| 0).expect("formats");
        assert_eq!(out, "  (no exits counted)\n");
        let mut out = String::new();
        render_table(&mut out, 12, |v, r| {
            u64::from(v == 11 && r == Reason::Wfi) * 12_345_678_901
        })
        .expect("formats");
        assert!(
            out.lines()
                .next()
                .is_some_and(|l| l.ends_with("vcpu11      total")),
            "{out}"
        );
        assert!(out.contains(" 12345678901 12345678901\n"), "{out}");
    }
}
