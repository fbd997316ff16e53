//! SMCCC 1.2 and PSCI 1.1 function identifiers and return codes (Arm DEN0028
//! and DEN0022), and Stratum's vendor-specific hypervisor calls.
//!
//! The Arm-defined function IDs and return codes come from the `smccc` crate,
//! re-exported here under the names every call site uses; what is Stratum's own
//! (the versions it implements, its vendor calls) is defined here. Function IDs
//! are `u32` as the SMCCC defines them; a guest passes them in `w0` (bits 63:32
//! of `x0` are ignored for the ID). Return codes are `i64`, as a guest reads
//! them in `x0`.

pub use smccc::arch::{
    SMCCC_ARCH_FEATURES, SMCCC_ARCH_SOC_ID, SMCCC_ARCH_WORKAROUND_1, SMCCC_ARCH_WORKAROUND_2,
    SMCCC_ARCH_WORKAROUND_3, SMCCC_VERSION,
};
use smccc::psci::error as psci;
pub use smccc::psci::{
    PSCI_AFFINITY_INFO_32, PSCI_AFFINITY_INFO_64, PSCI_CPU_OFF, PSCI_CPU_ON_32, PSCI_CPU_ON_64,
    PSCI_CPU_SUSPEND_32, PSCI_CPU_SUSPEND_64, PSCI_FEATURES, PSCI_MIGRATE_32, PSCI_MIGRATE_64,
    PSCI_MIGRATE_INFO_TYPE, PSCI_MIGRATE_INFO_UP_CPU_32, PSCI_MIGRATE_INFO_UP_CPU_64,
    PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET, PSCI_SYSTEM_RESET2_64, PSCI_VERSION,
};

/// The SMCCC version Stratum implements: 1.2.
pub const SMCCC_VERSION_1_2: u32 = 0x0001_0002;
/// The PSCI version Stratum implements: 1.1.
pub const PSCI_VERSION_1_1: u32 = 0x0001_0001;

// Return codes, widened to the `i64` a guest reads in x0 (`as` from `i32`
// is lossless; `i64::from` is not `const`).
/// SMCCC / PSCI success.
pub const SUCCESS: i64 = psci::SUCCESS as i64;
/// `NOT_SUPPORTED` (-1): the call is not implemented. Also SMCCC's unknown-function value.
pub const NOT_SUPPORTED: i64 = psci::NOT_SUPPORTED as i64;
/// `INVALID_PARAMETERS` (-2).
pub const INVALID_PARAMETERS: i64 = psci::INVALID_PARAMETERS as i64;
/// `DENIED` (-3).
pub const DENIED: i64 = psci::DENIED as i64;
/// `ALREADY_ON` (-4).
pub const ALREADY_ON: i64 = psci::ALREADY_ON as i64;
/// `ON_PENDING` (-5).
pub const ON_PENDING: i64 = psci::ON_PENDING as i64;
/// `INTERNAL_FAILURE` (-6).
pub const INTERNAL_FAILURE: i64 = psci::INTERNAL_FAILURE as i64;
/// `NOT_PRESENT` (-7).
pub const NOT_PRESENT: i64 = psci::NOT_PRESENT as i64;
/// `DISABLED` (-8).
pub const DISABLED: i64 = psci::DISABLED as i64;
/// `INVALID_ADDRESS` (-9).
pub const INVALID_ADDRESS: i64 = psci::INVALID_ADDRESS as i64;

/// `MIGRATE_INFO_TYPE` answer: no migration is needed (trusted OS not present).
pub const MIGRATE_INFO_TYPE_NOT_PRESENT: i64 =
    smccc::psci::MigrateType::MigrationNotRequired as i64;

/// SMCCC TRNG 1.0 (Arm DEN0098): a true random number generator behind
/// the firmware interface, which Linux uses to seed its entropy pool.
pub mod trng {
    /// `TRNG_VERSION`: 1.0 as `major << 16 | minor`.
    pub const VERSION: u32 = 0x8400_0050;
    /// `TRNG_FEATURES(function)`: `SUCCESS` for an implemented TRNG function.
    pub const FEATURES: u32 = 0x8400_0051;
    /// `TRNG_GET_UUID`: the implementation's UUID in `w0..w3`.
    pub const GET_UUID: u32 = 0x8400_0052;
    /// `TRNG_RND` (SMC32): up to 96 bits in `w1..w3`.
    pub const RND32: u32 = 0x8400_0053;
    /// `TRNG_RND` (SMC64): up to 192 bits in `x1..x3`.
    pub const RND64: u32 = 0xC400_0053;
    /// The version this implementation reports: 1.0.
    pub const VERSION_1_0: u64 = 0x1_0000;
    /// No entropy available now; try again.
    pub const NO_ENTROPY: i64 = -3;
    /// Stratum's TRNG UUID (`w0..w3`), fixed: `6c8e3b4a-…`.
    pub const UUID: [u32; 4] = [0x6c8e_3b4a, 0x4f2d_11f1, 0x9b7a_52c3, 0x0e5d_a817];
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the crate's numbers to the encoding DEN0028 (function ID:
    /// bit 31 fast call, bit 30 SMC64, bits 29:24 owner, bits 15:0 number)
    /// and the function numbers DEN0022 and DEN0028 give, so a change in the
    /// dependency cannot silently move a guest-visible number.
    #[test]
    fn standard_ids_follow_the_specs() {
        // (name, id, owner, SMC64, function number)
        macro_rules! id {
            ($id:ident, $owner:expr, $smc64:expr, $number:expr) => {
                (stringify!($id), $id, $owner, $smc64, $number)
            };
        }
        let ids = [
            id!(SMCCC_VERSION, 0, false, 0x0000),
            id!(SMCCC_ARCH_FEATURES, 0, false, 0x0001),
            id!(SMCCC_ARCH_SOC_ID, 0, false, 0x0002),
            id!(SMCCC_ARCH_WORKAROUND_1, 0, false, 0x8000),
            id!(SMCCC_ARCH_WORKAROUND_2, 0, false, 0x7fff),
            id!(SMCCC_ARCH_WORKAROUND_3, 0, false, 0x3fff),
            id!(PSCI_VERSION, 4, false, 0x00),
            id!(PSCI_CPU_SUSPEND_32, 4, false, 0x01),
            id!(PSCI_CPU_SUSPEND_64, 4, true, 0x01),
            id!(PSCI_CPU_OFF, 4, false, 0x02),
            id!(PSCI_CPU_ON_32, 4, false, 0x03),
            id!(PSCI_CPU_ON_64, 4, true, 0x03),
            id!(PSCI_AFFINITY_INFO_32, 4, false, 0x04),
            id!(PSCI_AFFINITY_INFO_64, 4, true, 0x04),
            id!(PSCI_MIGRATE_32, 4, false, 0x05),
            id!(PSCI_MIGRATE_64, 4, true, 0x05),
            id!(PSCI_MIGRATE_INFO_TYPE, 4, false, 0x06),
            id!(PSCI_MIGRATE_INFO_UP_CPU_32, 4, false, 0x07),
            id!(PSCI_MIGRATE_INFO_UP_CPU_64, 4, true, 0x07),
            id!(PSCI_SYSTEM_OFF, 4, false, 0x08),
            id!(PSCI_SYSTEM_RESET, 4, false, 0x09),
            id!(PSCI_FEATURES, 4, false, 0x0a),
            id!(PSCI_SYSTEM_RESET2_64, 4, true, 0x12),
        ];
        for (name, id, owner, smc64, number) in ids {
            assert_eq!(id >> 31, 1, "{name}: fast call");
            assert_eq!((id >> 30) & 1 == 1, smc64, "{name}: SMC64 bit");
            assert_eq!((id >> 24) & 0x3f, owner, "{name}: owner");
            assert_eq!((id >> 16) & 0xff, 0, "{name}: bits 23:16 are zero");
            assert_eq!(id & 0xffff, number, "{name}: function number");
        }
        // DEN0022 "Return error codes" and the MIGRATE_INFO_TYPE answer.
        let codes = [
            SUCCESS,
            NOT_SUPPORTED,
            INVALID_PARAMETERS,
            DENIED,
            ALREADY_ON,
            ON_PENDING,
            INTERNAL_FAILURE,
            NOT_PRESENT,
            DISABLED,
            INVALID_ADDRESS,
        ];
        assert_eq!(codes, [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
        assert_eq!(MIGRATE_INFO_TYPE_NOT_PRESENT, 2);
    }
}
