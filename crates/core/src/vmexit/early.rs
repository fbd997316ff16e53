//! The exits answered before the exit path takes any lock: the ones whose
//! answer depends only on the syndrome, the caller's registers and facts
//! fixed at boot — SMCCC calls by `HVC` that need no VM state
//! ([`crate::psci::query`]: queries, and every unknown or malformed
//! function ID), `HVC` with a non-zero immediate, and reads of the ID
//! registers `HCR_EL2.TID3` traps ([`crate::idreg`]).
//!
//! They read and change no VM state, so nothing needs the VM lock, the list
//! registers need no fold or refill (nothing in the vGIC changed), and the
//! guest resumes at once. KVM handles a similar set in its hypervisor's
//! "fast path" for the same reason. Every answer here is the one the full
//! policy ([`super::handle_sync`]) gives; a property test checks that.

use crate::esr::{self, SysRegAccess};
use crate::idreg::{self, IdRead};
use crate::psci::{self, CALL_REGS, FirmwareFeatures, Outcome};
use crate::stats::{self, Reason};

/// What the early handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Early {
    /// An `HVC` answered at once: write `regs[..count]` to `x0..`, and
    /// resume (the return address is already past the `HVC`); count the
    /// exit as `reason` with `detail` (the function ID, or the immediate).
    Call {
        /// Values for `x0..x3`.
        regs: [u64; 4],
        /// How many to write.
        count: u8,
        /// The statistics reason.
        reason: Reason,
        /// The trace record's detail.
        detail: u32,
    },
    /// A trapped ID register read: write the register's value (per
    /// [`IdRead`]) to `Xt` (nothing for XZR) and step past the `MRS`.
    IdRead {
        /// The destination register (31: XZR).
        rt: u8,
        /// Where the value comes from.
        read: IdRead,
    },
}

/// The early answer to a synchronous exit with syndrome `esr` and caller
/// registers `x0..x3`, or `None` when the full exit path must handle it.
///
/// Every synchronous exit may come here first, so it reads only what it
/// needs: the exception class, then the `HVC` immediate or the `MRS`
/// fields ([`esr::sysreg_access`]), never the whole [`esr::decode`].
#[inline]
pub fn early(esr: u64, x: &[u64; CALL_REGS], firmware: &FirmwareFeatures) -> Option<Early> {
    match (esr >> 26 & 0x3f) as u8 {
        esr::ec::HVC64 => hvc(esr as u16, x, firmware),
        esr::ec::SYS64 => id_read(&esr::sysreg_access(esr)?),
        _ => None,
    }
}

/// `HVC #imm` with the caller's `x0..x3`.
///
/// The statistics need the call's [`Reason`] anyway (a table lookup,
/// [`stats::call_reason`]); the reason then selects the answer
/// ([`answer`]), so every function ID — known, unknown or malformed —
/// costs one lookup and one jump. Only the feature queries, whose answer
/// depends on their argument, ask [`psci::query`].
#[inline]
fn hvc(imm: u16, x: &[u64; CALL_REGS], firmware: &FirmwareFeatures) -> Option<Early> {
    if imm != 0 {
        // SMCCC calls use HVC #0; other immediates are not calls we
        // implement (as KVM answers them).
        return Some(Early::Call {
            regs: [NOT_SUPPORTED, 0, 0, 0],
            count: 1,
            reason: Reason::HvcImmediate,
            detail: u32::from(imm),
        });
    }
    let fid = x[0] as u32;
    let reason = stats::call_reason(fid);
    let (regs, count) = match answer(reason, fid) {
        Answer::Fixed { regs, count } => (regs, count),
        Answer::ByArgument => match psci::query(x, firmware)? {
            Outcome::Return { regs, count } => (regs, count),
            _ => return None,
        },
        Answer::Full => return None,
    };
    Some(Early::Call {
        regs,
        count,
        reason,
        detail: fid,
    })
}

/// `NOT_SUPPORTED` as the caller's `x0` holds it.
const NOT_SUPPORTED: u64 = stratum_abi::smccc::NOT_SUPPORTED as u64;

/// The SMC32 `SYSTEM_RESET2`, which the full policy implements but the
/// statistics count as [`Reason::HvcOther`] (their PSCI table has SMC64's
/// only).
const PSCI_SYSTEM_RESET2_32: u32 = 0x8400_0012;

/// How the early path answers an SMCCC call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Always these registers (`regs[..count]` to `x0..`).
    Fixed {
        /// Values for `x0..x3`.
        regs: [u64; 4],
        /// How many to write.
        count: u8,
    },
    /// It depends on the argument: [`psci::query`] answers.
    ByArgument,
    /// It needs the VM's state or the firmware: the full policy answers.
    Full,
}

const fn ret1(x0: u64) -> Answer {
    Answer::Fixed {
        regs: [x0, 0, 0, 0],
        count: 1,
    }
}

/// How a call of `reason` (function ID `fid`) is answered: the answers
/// [`psci::query`] gives, by reason. A test compares the two over every
/// function number of every service the reasons cover, and any ID.
#[inline]
const fn answer(reason: Reason, fid: u32) -> Answer {
    use stratum_abi::smccc::{self, stratum};
    match reason {
        Reason::HvcSmcccVersion => ret1(smccc::SMCCC_VERSION_1_2 as u64),
        Reason::HvcPsciVersion => ret1(smccc::PSCI_VERSION_1_1 as u64),
        Reason::HvcSmcccFeatures | Reason::HvcPsciFeatures => Answer::ByArgument,
        Reason::HvcStratumQuery => match fid {
            stratum::CALL_COUNT => ret1(stratum::COUNT),
            stratum::CALL_UID => Answer::Fixed {
                regs: [
                    stratum::UID[0] as u64,
                    stratum::UID[1] as u64,
                    stratum::UID[2] as u64,
                    stratum::UID[3] as u64,
                ],
                count: 4,
            },
            // REVISION: 1.0.
            _ => Answer::Fixed {
                regs: [1, 0, 0, 0],
                count: 2,
            },
        },
        Reason::HvcPsciMigrate if fid == smccc::PSCI_MIGRATE_INFO_TYPE => {
            ret1(smccc::MIGRATE_INFO_TYPE_NOT_PRESENT as u64)
        }
        Reason::HvcTrng => match fid {
            smccc::trng::VERSION => ret1(smccc::trng::VERSION_1_0),
            smccc::trng::FEATURES => Answer::ByArgument,
            smccc::trng::GET_UUID => Answer::Fixed {
                regs: [
                    smccc::trng::UUID[0] as u64,
                    smccc::trng::UUID[1] as u64,
                    smccc::trng::UUID[2] as u64,
                    smccc::trng::UUID[3] as u64,
                ],
                count: 4,
            },
            // RND32/RND64: the VM's generator.
            _ => Answer::Full,
        },
        Reason::HvcOther if fid == PSCI_SYSTEM_RESET2_32 => Answer::Full,
        // MIGRATE, MIGRATE_INFO_UP_CPU, SOC_ID, IDs with the fast bit clear
        // or MBZ bits set, and every function nobody implements.
        Reason::HvcPsciMigrate | Reason::HvcSmcccSocId | Reason::HvcOther => ret1(NOT_SUPPORTED),
        // Power states, the workarounds, the vendor calls on the VM.
        _ => Answer::Full,
    }
}

#[inline]
fn id_read(access: &SysRegAccess) -> Option<Early> {
    idreg::classify(access).map(|read| Early::IdRead {
        rt: access.rt,
        read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registers to write and how many; `None`: the full policy answers.
    type Written = Option<([u64; 4], u8)>;

    /// The answers [`early`] and `query` give to `HVC #0` with `x`.
    fn both(x: [u64; 4], fw: &FirmwareFeatures) -> (Written, Written) {
        let hvc0 = u64::from(esr::ec::HVC64) << 26 | esr::ESR_IL;
        let early = match early(hvc0, &x, fw) {
            Some(Early::Call {
                regs,
                count,
                reason,
                detail,
            }) => {
                assert_eq!(reason, stats::call_reason(x[0] as u32));
                assert_eq!(detail, x[0] as u32);
                Some((regs, count))
            }
            Some(other) => panic!("{other:?} for an HVC"),
            None => None,
        };
        let query = match psci::query(&x, fw) {
            Some(Outcome::Return { regs, count }) => Some((regs, count)),
            _ => None,
        };
        (early, query)
    }

    const FIRMWARES: [FirmwareFeatures; 2] = [
        FirmwareFeatures::NONE,
        FirmwareFeatures {
            workaround_1: psci::WorkaroundState::Required,
            workaround_2: psci::WorkaroundState::NotRequired,
            workaround_3: psci::WorkaroundState::NotSupported,
        },
    ];

    #[test]
    fn answers_by_reason_are_the_querys_for_every_function() {
        for fid in crate::stats::tests::covered_function_ids() {
            // Feature queries about every interesting function.
            for arg in [0, u64::from(fid), 0x8000_8000, 0x8400_0000, 0xC400_0003] {
                for fw in &FIRMWARES {
                    let (early, query) = both([u64::from(fid), arg, 7, 7], fw);
                    assert_eq!(early, query, "{fid:#x} ({arg:#x})");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn answers_by_reason_are_the_querys_for_any_call(x: [u64; 4], fw in 0..2usize) {
            let (early, query) = both(x, &FIRMWARES[fw]);
            proptest::prop_assert_eq!(early, query);
        }
    }
}
