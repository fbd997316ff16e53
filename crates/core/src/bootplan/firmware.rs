//! What the hypervisor asks the firmware below it once at boot: which Spectre
//! workarounds it implements, so that guests get the same answers (a
//! workaround the firmware lacks is never advertised).
//!
//! [`probe`] runs the question sequence through a caller-supplied conduit
//! (`SMC` or `HVC` at EL2; a script in tests). `PSCI_FEATURES(SMCCC_VERSION)`
//! goes first: firmware without SMCCC 1.1 may treat an unknown function ID
//! as undefined, so `SMCCC_VERSION` is only called when PSCI says it exists,
//! and `SMCCC_ARCH_FEATURES` only when the version is at least 1.1.

use stratum_abi::smccc;

use crate::psci::{FirmwareFeatures, WorkaroundState};

/// The first SMCCC version with `SMCCC_ARCH_FEATURES`: 1.1.
const SMCCC_1_1: i64 = 0x1_0001;

/// Asks the firmware through `call` (function ID and three arguments in,
/// x0 out) which workarounds it implements.
pub fn probe(mut call: impl FnMut([u64; 4]) -> u64) -> FirmwareFeatures {
    let has_version = call([
        u64::from(smccc::PSCI_FEATURES),
        u64::from(smccc::SMCCC_VERSION),
        0,
        0,
    ]) as i64
        == smccc::SUCCESS;
    if !has_version || (call([u64::from(smccc::SMCCC_VERSION), 0, 0, 0]) as i64) < SMCCC_1_1 {
        return FirmwareFeatures::NONE;
    }
    let mut ask = |wa: u32| {
        WorkaroundState::from_firmware(call([
            u64::from(smccc::SMCCC_ARCH_FEATURES),
            u64::from(wa),
            0,
            0,
        ]))
    };
    FirmwareFeatures {
        workaround_1: ask(smccc::SMCCC_ARCH_WORKAROUND_1),
        workaround_2: ask(smccc::SMCCC_ARCH_WORKAROUND_2),
        workaround_3: ask(smccc::SMCCC_ARCH_WORKAROUND_3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_SUPPORTED: u64 = -1i64 as u64;

    /// Firmware that answers from a table and records what it was asked.
    struct Firmware {
        psci_features_version: u64,
        version: u64,
        workarounds: [u64; 3],
        asked: Vec<u32>,
    }

    impl Firmware {
        fn call(&mut self, args: [u64; 4]) -> u64 {
            let function = u32::try_from(args[0]).expect("32-bit function ID");
            self.asked.push(function);
            match (function, u32::try_from(args[1]).unwrap_or(0)) {
                (smccc::PSCI_FEATURES, smccc::SMCCC_VERSION) => self.psci_features_version,
                (smccc::SMCCC_VERSION, _) => self.version,
                (smccc::SMCCC_ARCH_FEATURES, smccc::SMCCC_ARCH_WORKAROUND_1) => self.workarounds[0],
                (smccc::SMCCC_ARCH_FEATURES, smccc::SMCCC_ARCH_WORKAROUND_2) => self.workarounds[1],
                (smccc::SMCCC_ARCH_FEATURES, smccc::SMCCC_ARCH_WORKAROUND_3) => self.workarounds[2],
                _ => NOT_SUPPORTED,
            }
        }
    }

    fn firmware(psci_features_version: u64, version: u64) -> Firmware {
        Firmware {
            psci_features_version,
            version,
            workarounds: [0, 1, NOT_SUPPORTED],
            asked: Vec::new(),
        }
    }

    #[test]
    fn smccc_1_2_firmware_is_asked_every_workaround() {
        let mut fw = firmware(0, 0x1_0002);
        let features = probe(|args| fw.call(args));
        assert_eq!(
            features,
            FirmwareFeatures {
                workaround_1: WorkaroundState::Required,
                workaround_2: WorkaroundState::NotRequired,
                workaround_3: WorkaroundState::NotSupported,
            }
        );
        assert_eq!(
            fw.asked,
            [
                smccc::PSCI_FEATURES,
                smccc::SMCCC_VERSION,
                smccc::SMCCC_ARCH_FEATURES,
                smccc::SMCCC_ARCH_FEATURES,
                smccc::SMCCC_ARCH_FEATURES,
            ]
        );
    }

    #[test]
    fn firmware_without_smccc_version_is_never_sent_it() {
        let mut fw = firmware(NOT_SUPPORTED, 0x1_0002);
        assert_eq!(probe(|args| fw.call(args)), FirmwareFeatures::NONE);
        assert_eq!(fw.asked, [smccc::PSCI_FEATURES]);
    }

    #[test]
    fn smccc_1_0_firmware_is_not_asked_arch_features() {
        let mut fw = firmware(0, 0x1_0000);
        assert_eq!(probe(|args| fw.call(args)), FirmwareFeatures::NONE);
        assert_eq!(fw.asked, [smccc::PSCI_FEATURES, smccc::SMCCC_VERSION]);
        // SMCCC_VERSION itself failing (NOT_SUPPORTED is negative).
        let mut fw = firmware(0, NOT_SUPPORTED);
        assert_eq!(probe(|args| fw.call(args)), FirmwareFeatures::NONE);
    }
}
