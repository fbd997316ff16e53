//! SMCCC 1.2 and PSCI 1.1 function identifiers and return codes (Arm DEN0028
//! and DEN0022), and Stratum's vendor-specific hypervisor calls.
//!
//! Function IDs are `u32` as the SMCCC defines them; a guest passes them in
//! `w0` (bits 63:32 of `x0` are ignored for the ID).

/// `SMCCC_VERSION`: returns the SMCCC version (1.2 = `0x1_0002`).
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// `SMCCC_ARCH_FEATURES`: is an Arm Architecture Service call implemented?
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// `SMCCC_ARCH_SOC_ID`.
pub const SMCCC_ARCH_SOC_ID: u32 = 0x8000_0002;
/// `SMCCC_ARCH_WORKAROUND_1` (CVE-2017-5715).
pub const SMCCC_ARCH_WORKAROUND_1: u32 = 0x8000_8000;
/// `SMCCC_ARCH_WORKAROUND_2` (CVE-2018-3639).
pub const SMCCC_ARCH_WORKAROUND_2: u32 = 0x8000_7FFF;
/// `SMCCC_ARCH_WORKAROUND_3` (CVE-2022-23960).
pub const SMCCC_ARCH_WORKAROUND_3: u32 = 0x8000_3FFF;
/// The SMCCC version Stratum implements: 1.2.
pub const SMCCC_VERSION_1_2: u32 = 0x0001_0002;

/// `PSCI_VERSION`.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// `CPU_SUSPEND`, SMC32 form.
pub const PSCI_CPU_SUSPEND_32: u32 = 0x8400_0001;
/// `CPU_SUSPEND`, SMC64 form.
pub const PSCI_CPU_SUSPEND_64: u32 = 0xC400_0001;
/// `CPU_OFF`.
pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
/// `CPU_ON`, SMC32 form.
pub const PSCI_CPU_ON_32: u32 = 0x8400_0003;
/// `CPU_ON`, SMC64 form.
pub const PSCI_CPU_ON_64: u32 = 0xC400_0003;
/// `AFFINITY_INFO`, SMC32 form.
pub const PSCI_AFFINITY_INFO_32: u32 = 0x8400_0004;
/// `AFFINITY_INFO`, SMC64 form.
pub const PSCI_AFFINITY_INFO_64: u32 = 0xC400_0004;
/// `MIGRATE`, SMC32 form.
pub const PSCI_MIGRATE_32: u32 = 0x8400_0005;
/// `MIGRATE`, SMC64 form.
pub const PSCI_MIGRATE_64: u32 = 0xC400_0005;
/// `MIGRATE_INFO_TYPE`.
pub const PSCI_MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// `MIGRATE_INFO_UP_CPU`, SMC32 form.
pub const PSCI_MIGRATE_INFO_UP_CPU_32: u32 = 0x8400_0007;
/// `MIGRATE_INFO_UP_CPU`, SMC64 form.
pub const PSCI_MIGRATE_INFO_UP_CPU_64: u32 = 0xC400_0007;
/// `SYSTEM_OFF`.
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
/// `SYSTEM_RESET`.
pub const PSCI_SYSTEM_RESET: u32 = 0x8400_0009;
/// `PSCI_FEATURES`.
pub const PSCI_FEATURES: u32 = 0x8400_000A;
/// `SYSTEM_RESET2`, SMC64 form.
pub const PSCI_SYSTEM_RESET2_64: u32 = 0xC400_0012;
/// The PSCI version Stratum implements: 1.1.
pub const PSCI_VERSION_1_1: u32 = 0x0001_0001;

/// SMCCC / PSCI success.
pub const SUCCESS: i64 = 0;
/// `NOT_SUPPORTED` (-1): the call is not implemented. Also SMCCC's unknown-function value.
pub const NOT_SUPPORTED: i64 = -1;
/// `INVALID_PARAMETERS` (-2).
pub const INVALID_PARAMETERS: i64 = -2;
/// `DENIED` (-3).
pub const DENIED: i64 = -3;
/// `ALREADY_ON` (-4).
pub const ALREADY_ON: i64 = -4;
/// `ON_PENDING` (-5).
pub const ON_PENDING: i64 = -5;
/// `INTERNAL_FAILURE` (-6).
pub const INTERNAL_FAILURE: i64 = -6;
/// `NOT_PRESENT` (-7).
pub const NOT_PRESENT: i64 = -7;
/// `DISABLED` (-8).
pub const DISABLED: i64 = -8;
/// `INVALID_ADDRESS` (-9).
pub const INVALID_ADDRESS: i64 = -9;

/// `MIGRATE_INFO_TYPE` answer: no migration is needed (trusted OS not present).
pub const MIGRATE_INFO_TYPE_NOT_PRESENT: i64 = 2;

/// Stratum's vendor-specific hypervisor service calls (SMCCC owner 6, fast, SMC64).
pub mod stratum {
    /// Vendor hypervisor service: call count (SMCCC-defined query).
    pub const CALL_COUNT: u32 = 0x8600_FF00;
    /// Vendor hypervisor service: UID (SMCCC-defined query); returns [`UID`] in x0..x3.
    pub const CALL_UID: u32 = 0x8600_FF01;
    /// Vendor hypervisor service: revision (SMCCC-defined query): x0 major, x1 minor.
    pub const REVISION: u32 = 0x8600_FF03;
    /// `STRATUM_INFO`: x0 = ABI version, x1 = VM id, x2 = vCPU id, x3 = number of
    /// times this VM has booted (1 on the first boot; a `SYSTEM_RESET` adds one).
    pub const INFO: u32 = 0xC600_0000;
    /// `STRATUM_DOORBELL(channel)`: rings the peer of the caller's shared-memory
    /// channel number `channel` (its `stratum,id` in the caller's device tree):
    /// the peer VM's doorbell interrupt for that channel becomes pending.
    /// x0 = `SUCCESS`; `INVALID_PARAMETERS` for a channel the VM does not
    /// have; `NOT_PRESENT` when the peer VM is not running (nothing is
    /// delivered, and nothing is queued for its next boot).
    pub const DOORBELL: u32 = 0xC600_0001;
    /// `STRATUM_MEM_INFO`: how much memory the hypervisor uses. x0 = `SUCCESS`,
    /// x1 = bytes of stage-2 table memory in use, x2 = bytes of host RAM
    /// handed out to VMs and channels, x3 = bytes of the table pool still
    /// free. Restarting a VM must leave x1 and x2 unchanged.
    pub const MEM_INFO: u32 = 0xC600_0002;
    /// The ABI version `INFO` reports.
    pub const ABI_VERSION: u64 = 2;
    /// Number of Stratum vendor calls (answer to `CALL_COUNT`).
    pub const COUNT: u64 = 3;
    /// UID words (x0..x3) for `CALL_UID`: "Stratum hypervisor" UUID
    /// 5a7e4c1e-9b0d-4f5e-8a3c-2d1e0f9b6a47, as SMCCC packs it.
    pub const UID: [u32; 4] = [0x1e4c_7e5a, 0x5e4f_0d9b, 0x1e2d_3c8a, 0x476a_9b0f];
}
