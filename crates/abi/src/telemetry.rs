//! The telemetry block: how the hypervisor publishes its exit statistics and
//! exit-trace rings in its own memory, for `stratum stats` and `stratum trace`
//! to read from outside (QEMU's monitor reads guest-physical memory).
//!
//! Finding it: `stratum run` has QEMU load the hypervisor at
//! [`HYPERVISOR_LOAD_ADDRESS`]; the 64-bit field at [`IMAGE_HEADER_TELEMETRY`]
//! of its arm64 `Image` header (`res2`, unused by loaders) holds the block's
//! physical address (EL2 maps itself identity, so its addresses are
//! physical). The field is one of the image's relocations, so in memory it
//! is right wherever a loader put the image.
//!
//! Layout (little-endian; offsets in bytes):
//!
//! - header ([`HEADER_SIZE`] bytes): [`MAGIC`], [`VERSION`], counters per
//!   vCPU ([`Reason::COUNT`]), VM slots, vCPU slots per VM, trace rings,
//!   flags ([`FLAG_TRACE`]), the counter frequency (Hz) of trace timestamps,
//!   and where the VM slots and ring descriptors start and how long each is
//!   (see the `H_*` offsets).
//! - VM slots ([`VM_SLOTS`]): state ([`VmState`]), vCPU count, boot count,
//!   name (32 bytes, NUL-padded), then per vCPU slot one `u64` counter per
//!   [`Reason`], in code order (the `VM_*` offsets).
//! - trace ring descriptors ([`RING_SLOTS`], one per physical CPU): address of
//!   the records, capacity (a power of two), record size, and `head`, the
//!   number of records ever written (record `n` sits at slot
//!   `n % capacity`); see the `RING_*` offsets and [`TraceRecord`].
//!
//! Counters and heads only grow while the system runs; a reader sees each
//! 64-bit value whole, but values of different counters may be from
//! slightly different moments.

/// Physical address the hypervisor `Image` is linked at, and where QEMU
/// `virt`'s `-kernel` (so `stratum run`) loads it (other boards load it
/// at their RAM + 2 MiB: the host tool's `Board::image_load_address`).
pub const HYPERVISOR_LOAD_ADDRESS: u64 = 0x4020_0000;
/// Offset in the `Image` header of the telemetry block's address.
pub const IMAGE_HEADER_TELEMETRY: u64 = 0x20;
/// Offset in the `Image` header of its magic, `"ARM\x64"`.
pub const IMAGE_HEADER_MAGIC: u64 = 0x38;

/// First 8 bytes of the block: `"STRATTEL"`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"STRATTEL");
/// Layout version of this module.
pub const VERSION: u32 = 1;
/// VM slots in the block (VMs indexed by their bundle index).
pub const VM_SLOTS: usize = 8;
/// vCPU slots per VM.
pub const VCPU_SLOTS: usize = 8;
/// Trace rings (one per physical CPU).
pub const RING_SLOTS: usize = 8;

/// What a trace build prints when a VM stops, after `vmN 'NAME': `: the
/// counter ticks the VM's exits spent at EL2, idling excluded, then
/// `N counter ticks in M exits` (`stratum bench` parses it).
pub const EL2_TIME_LABEL: &str = "EL2 time:";
/// Instructions of each exit that EL2 time does not see: the exit vector
/// and the register save before the handler (23), the register restore
/// and `eret` after it (19).
pub const EL2_VECTOR_INSNS: u64 = 42;
/// Flag: the hypervisor was built with the `trace` feature (rings exist).
pub const FLAG_TRACE: u32 = 1;

/// Header size.
pub const HEADER_SIZE: usize = 0x40;
/// Header: [`MAGIC`] (`u64`).
pub const H_MAGIC: usize = 0x00;
/// Header: [`VERSION`] (`u32`).
pub const H_VERSION: usize = 0x08;
/// Header: counters per vCPU (`u32`).
pub const H_REASONS: usize = 0x0C;
/// Header: VM slots (`u32`).
pub const H_VM_SLOTS: usize = 0x10;
/// Header: vCPU slots per VM (`u32`).
pub const H_VCPU_SLOTS: usize = 0x14;
/// Header: ring descriptors (`u32`).
pub const H_RING_SLOTS: usize = 0x18;
/// Header: flags (`u32`).
pub const H_FLAGS: usize = 0x1C;
/// Header: frequency of trace timestamps in Hz (`u64`, `CNTFRQ_EL0`).
pub const H_COUNTER_HZ: usize = 0x20;
/// Header: offset of the first VM slot from the block start (`u32`).
pub const H_VM_OFFSET: usize = 0x28;
/// Header: size of one VM slot (`u32`).
pub const H_VM_SIZE: usize = 0x2C;
/// Header: offset of the first ring descriptor (`u32`).
pub const H_RING_OFFSET: usize = 0x30;
/// Header: size of one ring descriptor (`u32`).
pub const H_RING_SIZE: usize = 0x34;
/// Header: size of the whole block (`u32`).
pub const H_TOTAL_SIZE: usize = 0x38;

/// VM slot: [`VmState`] (`u32`).
pub const VM_STATE: usize = 0x00;
/// VM slot: vCPUs the VM has (`u32`).
pub const VM_VCPUS: usize = 0x04;
/// VM slot: times it booted (`u64`).
pub const VM_BOOT_COUNT: usize = 0x08;
/// VM slot: name, NUL-padded.
pub const VM_NAME: usize = 0x10;
/// Bytes of the name field.
pub const VM_NAME_LEN: usize = 32;
/// VM slot: the counters, `[[u64; reasons]; vcpu_slots]`.
pub const VM_STATS: usize = 0x30;
/// Size of one VM slot in this version.
pub const VM_SLOT_SIZE: usize = VM_STATS + VCPU_SLOTS * Reason::COUNT * 8;

/// Ring descriptor: physical address of the records (`u64`; 0: no ring).
pub const RING_RECORDS: usize = 0x00;
/// Ring descriptor: capacity in records (`u32`, a power of two).
pub const RING_CAPACITY: usize = 0x08;
/// Ring descriptor: size of one record (`u32`).
pub const RING_RECORD_SIZE: usize = 0x0C;
/// Ring descriptor: records ever written (`u64`).
pub const RING_HEAD: usize = 0x10;
/// Size of one ring descriptor.
pub const RING_DESC_SIZE: usize = 0x20;

/// Offset of the first VM slot in this version.
pub const VM_OFFSET: usize = HEADER_SIZE;
/// Offset of the first ring descriptor in this version.
pub const RING_OFFSET: usize = VM_OFFSET + VM_SLOTS * VM_SLOT_SIZE;
/// Size of the whole block in this version.
pub const TOTAL_SIZE: usize = RING_OFFSET + RING_SLOTS * RING_DESC_SIZE;

/// A VM slot's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum VmState {
    /// No VM in this slot.
    Empty = 0,
    /// Created, and not stopped.
    Running = 1,
    /// Powered off.
    Stopped = 2,
    /// Crashed.
    Crashed = 3,
}

impl VmState {
    /// The state with code `code`, if any.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Empty),
            1 => Some(Self::Running),
            2 => Some(Self::Stopped),
            3 => Some(Self::Crashed),
            _ => None,
        }
    }

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
        }
    }
}

macro_rules! reasons {
    ($($variant:ident = $code:literal, $name:literal, $about:literal;)*) => {
        /// Why a vCPU left the guest (or what EL2 did for it): one counter per
        /// vCPU each, and the `reason` of a [`TraceRecord`]. The codes are part
        /// of the block format.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum Reason {
            $(
                #[doc = $about]
                $variant = $code,
            )*
        }

        impl Reason {
            /// Every reason, in code order (`ALL[r as usize] == r`).
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The reason with code `code`, if any.
            pub const fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some(Reason::$variant),)*
                    _ => None,
                }
            }

            /// Short name, as the statistics table and the trace plot show it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }

            /// One sentence on what is counted.
            pub const fn about(self) -> &'static str {
                match self {
                    $(Reason::$variant => $about,)*
                }
            }
        }
    };
}

reasons! {
    HvcSmcccVersion = 0, "hvc SMCCC_VERSION", "HVC #0 calling SMCCC_VERSION.";
    HvcSmcccFeatures = 1, "hvc SMCCC_ARCH_FEATURES", "HVC #0 calling SMCCC_ARCH_FEATURES.";
    HvcSmcccSocId = 2, "hvc SMCCC_ARCH_SOC_ID", "HVC #0 calling SMCCC_ARCH_SOC_ID.";
    HvcWorkaround = 3, "hvc ARCH_WORKAROUND_n", "HVC #0 calling one of the SMCCC_ARCH_WORKAROUND_1/2/3 Spectre mitigations.";
    HvcPsciVersion = 4, "hvc PSCI_VERSION", "HVC #0 calling PSCI_VERSION.";
    HvcPsciCpuSuspend = 5, "hvc PSCI_CPU_SUSPEND", "HVC #0 calling PSCI_CPU_SUSPEND (32 or 64-bit).";
    HvcPsciCpuOff = 6, "hvc PSCI_CPU_OFF", "HVC #0 calling PSCI_CPU_OFF.";
    HvcPsciCpuOn = 7, "hvc PSCI_CPU_ON", "HVC #0 calling PSCI_CPU_ON (32 or 64-bit).";
    HvcPsciAffinityInfo = 8, "hvc PSCI_AFFINITY_INFO", "HVC #0 calling PSCI_AFFINITY_INFO (32 or 64-bit).";
    HvcPsciMigrate = 9, "hvc PSCI_MIGRATE_*", "HVC #0 calling PSCI_MIGRATE, MIGRATE_INFO_TYPE or MIGRATE_INFO_UP_CPU.";
    HvcPsciSystemOff = 10, "hvc PSCI_SYSTEM_OFF", "HVC #0 calling PSCI_SYSTEM_OFF.";
    HvcPsciSystemReset = 11, "hvc PSCI_SYSTEM_RESET", "HVC #0 calling PSCI_SYSTEM_RESET or SYSTEM_RESET2.";
    HvcPsciFeatures = 12, "hvc PSCI_FEATURES", "HVC #0 calling PSCI_FEATURES.";
    HvcStratumInfo = 13, "hvc STRATUM_INFO", "HVC #0 calling Stratum INFO (ABI version, VM and vCPU id, boot count).";
    HvcStratumDoorbell = 14, "hvc STRATUM_DOORBELL", "HVC #0 calling Stratum DOORBELL (ring a channel's peer).";
    HvcStratumMemInfo = 15, "hvc STRATUM_MEM_INFO", "HVC #0 calling Stratum MEM_INFO.";
    HvcStratumQuery = 16, "hvc STRATUM_CALL_*", "HVC #0 calling the Stratum service queries (CALL_COUNT, CALL_UID, REVISION).";
    HvcOther = 17, "hvc other", "HVC #0 with a function ID Stratum does not implement (answered NOT_SUPPORTED).";
    HvcImmediate = 18, "hvc #imm", "HVC with a non-zero immediate: not an SMCCC call (answered NOT_SUPPORTED).";
    Smc = 19, "smc", "A trapped SMC, any function (the call is handled like the HVC one).";
    MmioGicdRead = 20, "mmio GICD read", "A read of the emulated GIC distributor.";
    MmioGicdWrite = 21, "mmio GICD write", "A write to the emulated GIC distributor.";
    MmioGicrRead = 22, "mmio GICR read", "A read of an emulated GICv3 redistributor.";
    MmioGicrWrite = 23, "mmio GICR write", "A write to an emulated GICv3 redistributor.";
    MmioUartRead = 24, "mmio UART read", "A read of the emulated PL011.";
    MmioUartWrite = 25, "mmio UART write", "A write to the emulated PL011 (each console byte is one).";
    SysregSgi1r = 26, "sysreg ICC_SGI1R", "A trapped write of ICC_SGI1R_EL1 (a GICv3 IPI).";
    SysregAsgi1r = 27, "sysreg ICC_ASGI1R", "A trapped write of ICC_ASGI1R_EL1.";
    SysregSgi0r = 28, "sysreg ICC_SGI0R", "A trapped write of ICC_SGI0R_EL1.";
    SysregId = 29, "sysreg ID_*", "A trapped read of an ID register (HCR_EL2.TID3), emulated.";
    SysregOther = 30, "sysreg other", "A trapped system-register access Stratum does not emulate (an undefined instruction is injected).";
    Wfi = 31, "wfi", "A trapped WFI (EL2 idles until the vCPU has an interrupt, or gives the CPU away).";
    Wfe = 32, "wfe", "A trapped WFE (completes: a yield).";
    WfxTimed = 33, "wfit/wfet", "A trapped WFIT or WFET (completes at once).";
    IrqVtimer = 34, "irq vtimer", "The virtual timer's PPI, forwarded to the vCPU.";
    IrqPtimer = 35, "irq ptimer", "The EL1 physical timer's PPI, forwarded to the vCPU.";
    IrqKick = 36, "irq kick", "The kick SGI: another CPU changed this vCPU's interrupts (or wants it to park).";
    IrqMaintenance = 37, "irq maintenance", "The GIC maintenance interrupt (list-register underflow, or EOI of a level interrupt).";
    IrqConsole = 38, "irq console", "The console UART's receive interrupt.";
    IrqPreempt = 39, "irq preempt", "The scheduler's time-slice timer (vCPUs time-sharing a CPU).";
    IrqDevice = 40, "irq device", "A passthrough device's or a channel doorbell's interrupt.";
    IrqOther = 41, "irq other", "Any other physical interrupt (spurious for this configuration).";
    AbortUnmapped = 42, "abort unmapped", "A stage-2 fault outside guest RAM and every emulated device (or on a stage-1 walk): external abort injected.";
    AbortRejected = 43, "abort rejected", "A device access of a width or offset the device refuses: external abort injected.";
    AbortUndecodable = 44, "abort undecodable", "An MMIO access without syndrome whose instruction cannot be fetched or decoded: external abort injected.";
    AbortFetch = 45, "abort ifetch", "An instruction fetch outside guest RAM: instruction abort injected.";
    Undef = 46, "undef", "Any other synchronous exit class: undefined instruction injected.";
    SError = 47, "serror", "An SError while the guest ran (the VM is stopped as crashed).";
    MmioDecoded = 48, "  of which ISV=0", "Not an exit of its own: MMIO exits above whose instruction was decoded because the syndrome had none (ISV = 0).";
    FpTrap = 49, "fp trap", "A trapped FP/SIMD access while another vCPU's FP state was loaded (the lazy FP switch).";
    MmioVirtioRead = 50, "mmio virtio read", "A read of an emulated virtio-mmio transport's registers or configuration space.";
    MmioVirtioWrite = 51, "mmio virtio write", "A write to an emulated virtio-mmio transport (a queue notify is one).";
    HvcTrng = 52, "hvc TRNG_*", "HVC #0 calling SMCCC TRNG (VERSION, FEATURES, GET_UUID, RND32/64).";
    SysregDebug = 53, "sysreg debug", "A trapped access to a self-hosted debug register (MDCR_EL2.TDA/TDOSA/TDRA), emulated or performed.";
    SysregPmu = 54, "sysreg PMU", "A trapped access to a PMU register (MDCR_EL2.TPM/TPMCR), performed on the vCPU's PMU.";
    MmioFlashRead = 55, "mmio flash read", "A read of a firmware VM's emulated flash banks (erased: all ones).";
    MmioFlashWrite = 56, "mmio flash write", "A write to a firmware VM's emulated flash banks (write-protected: ignored).";
}

impl Reason {
    /// How many reasons (counters per vCPU) this version has.
    pub const COUNT: usize = Reason::ALL.len();

    /// Whether this counter counts exits (or EL2 interrupt work) of its own;
    /// `false` for notes on other rows (left out of totals).
    pub const fn is_exit(self) -> bool {
        !matches!(self, Reason::MmioDecoded)
    }

    /// The family a reason belongs to (the first word of its name): `hvc`,
    /// `smc`, `mmio`, `sysreg`, `wfx`, `irq`, `abort`, `undef`, `serror`.
    pub const fn family(self) -> &'static str {
        match self as u8 {
            0..=18 | 52 => "hvc",
            19 => "smc",
            20..=25 | 48 | 50 | 51 | 55 | 56 => "mmio",
            26..=30 | 53 | 54 => "sysreg",
            31..=33 => "wfx",
            34..=41 => "irq",
            42..=45 => "abort",
            46 => "undef",
            49 => "fp",
            _ => "serror",
        }
    }
}

/// Size of one [`TraceRecord`] in a ring.
pub const RECORD_SIZE: usize = 16;

/// One exit in a trace ring: `time` (`u64`, the physical counter when EL2
/// handled it), `vm` (`u8`), `vcpu` (`u8`), `reason` (`u8`, a [`Reason`]
/// code), a reserved byte, and `detail` (`u32`: the function ID of a call,
/// the low 32 bits of the IPA of an MMIO access or abort, the encoding of a
/// system register, the INTID of a passthrough interrupt, else 0: the other
/// interrupt reasons name their INTID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Physical counter value (`CNTPCT_EL0`).
    pub time: u64,
    /// VM index.
    pub vm: u8,
    /// vCPU index in the VM.
    pub vcpu: u8,
    /// [`Reason`] code.
    pub reason: u8,
    /// Reason-specific detail.
    pub detail: u32,
}

impl TraceRecord {
    /// The record's bytes in a ring.
    pub const fn encode(&self) -> [u8; RECORD_SIZE] {
        let t = self.time.to_le_bytes();
        let d = self.detail.to_le_bytes();
        [
            t[0],
            t[1],
            t[2],
            t[3],
            t[4],
            t[5],
            t[6],
            t[7],
            self.vm,
            self.vcpu,
            self.reason,
            0,
            d[0],
            d[1],
            d[2],
            d[3],
        ]
    }

    /// The record in `bytes` (at least [`RECORD_SIZE`] long).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            time: crate::bytes::le_u64(bytes, 0)?,
            vm: *bytes.get(8)?,
            vcpu: *bytes.get(9)?,
            reason: *bytes.get(10)?,
            detail: crate::bytes::le_u32(bytes, 12)?,
        })
    }

    /// The record's reason, if its code is one of this version's.
    pub fn reason(&self) -> Option<Reason> {
        Reason::from_code(self.reason)
    }
}

/// Which records of a ring a reader may trust, given the ring's `head`
/// read before (`head_before`) and after (`head_after`) copying the
/// records, its `capacity`, and the first record not yet consumed (`from`):
/// the half-open range of record numbers. A record the writer may have been
/// overwriting meanwhile (the writer is at most at `head_after`, writing
/// slot `head_after % capacity`) is excluded.
pub fn readable_records(
    from: u64,
    head_before: u64,
    head_after: u64,
    capacity: u64,
) -> core::ops::Range<u64> {
    let oldest_intact = head_after.saturating_sub(capacity.saturating_sub(1));
    let start = from.max(oldest_intact).min(head_before);
    start..head_before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_dense_and_named_uniquely() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
            assert_eq!(Reason::from_code(i as u8), Some(*r));
            assert!(!r.about().is_empty());
            let prefix = if r.family() == "wfx" {
                "wf"
            } else {
                r.family()
            };
            assert!(r.name().starts_with(prefix) || !r.is_exit(), "{r:?}");
        }
        assert_eq!(Reason::from_code(Reason::COUNT as u8), None);
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::COUNT);
    }

    #[test]
    fn layout_is_consistent() {
        assert_eq!(VM_SLOT_SIZE % 8, 0);
        assert_eq!(RING_OFFSET % 8, 0);
        assert_eq!(TOTAL_SIZE, RING_OFFSET + RING_SLOTS * RING_DESC_SIZE);
        assert_eq!(&MAGIC.to_le_bytes(), b"STRATTEL");
        assert_eq!(VM_NAME + VM_NAME_LEN, VM_STATS);
        for s in [
            VmState::Empty,
            VmState::Running,
            VmState::Stopped,
            VmState::Crashed,
        ] {
            assert_eq!(VmState::from_code(s as u32), Some(s));
        }
        assert_eq!(VmState::from_code(4), None);
    }

    #[test]
    fn record_round_trip() {
        let r = TraceRecord {
            time: 0x0123_4567_89ab_cdef,
            vm: 3,
            vcpu: 7,
            reason: Reason::MmioUartWrite as u8,
            detail: 0x0900_0000,
        };
        let bytes = r.encode();
        assert_eq!(&bytes[..8], &0x0123_4567_89ab_cdef_u64.to_le_bytes());
        assert_eq!(bytes[8..12], [3, 7, 25, 0]);
        assert_eq!(TraceRecord::decode(&bytes), Some(r));
        assert_eq!(r.reason(), Some(Reason::MmioUartWrite));
        assert_eq!(TraceRecord::decode(&bytes[..15]), None);
        let bad = TraceRecord { reason: 200, ..r };
        assert_eq!(
            TraceRecord::decode(&bad.encode()).and_then(|r| r.reason()),
            None
        );
    }

    #[test]
    fn readable_ranges() {
        // Nothing new.
        assert_eq!(readable_records(10, 10, 10, 8), 10..10);
        // All new records intact.
        assert_eq!(readable_records(0, 5, 5, 8), 0..5);
        // The writer lapped the reader: only the last capacity-1 records
        // (as of the second head read) are trusted.
        assert_eq!(readable_records(0, 20, 20, 8), 13..20);
        // The writer moved on while we copied: records it may overwrite are dropped.
        assert_eq!(readable_records(12, 20, 24, 8), 17..20);
        // It moved so far that nothing copied is intact.
        assert_eq!(readable_records(12, 20, 40, 8), 20..20);
    }
}
