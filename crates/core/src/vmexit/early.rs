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

use crate::esr::{self, Exit, SysRegAccess};
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
pub fn early(esr: u64, x: &[u64; CALL_REGS], firmware: &FirmwareFeatures) -> Option<Early> {
    // Every synchronous exit comes here first: turn the others away on the
    // exception class alone (HVC64 = 0x16, trapped MSR/MRS = 0x18).
    if !matches!(esr >> 26 & 0x3f, 0x16 | 0x18) {
        return None;
    }
    match esr::decode(esr) {
        Exit::Hvc { imm: 0 } => match psci::query(x, firmware)? {
            Outcome::Return { regs, count } => Some(Early::Call {
                regs,
                count,
                reason: stats::call_reason(x[0] as u32),
                detail: x[0] as u32,
            }),
            _ => None,
        },
        // SMCCC calls use HVC #0; other immediates are not calls we
        // implement (as KVM answers them).
        Exit::Hvc { imm } => Some(Early::Call {
            regs: [stratum_abi::smccc::NOT_SUPPORTED as u64, 0, 0, 0],
            count: 1,
            reason: Reason::HvcImmediate,
            detail: u32::from(imm),
        }),
        Exit::SysReg(access) => id_read(&access),
        _ => None,
    }
}

fn id_read(access: &SysRegAccess) -> Option<Early> {
    idreg::classify(access).map(|read| Early::IdRead {
        rt: access.rt,
        read,
    })
}
