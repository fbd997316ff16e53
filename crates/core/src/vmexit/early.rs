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
#[inline]
fn hvc(imm: u16, x: &[u64; CALL_REGS], firmware: &FirmwareFeatures) -> Option<Early> {
    if imm != 0 {
        // SMCCC calls use HVC #0; other immediates are not calls we
        // implement (as KVM answers them).
        return Some(Early::Call {
            regs: [stratum_abi::smccc::NOT_SUPPORTED as u64, 0, 0, 0],
            count: 1,
            reason: Reason::HvcImmediate,
            detail: u32::from(imm),
        });
    }
    match psci::query(x, firmware)? {
        Outcome::Return { regs, count } => Some(Early::Call {
            regs,
            count,
            reason: stats::call_reason(x[0] as u32),
            detail: x[0] as u32,
        }),
        _ => None,
    }
}

#[inline]
fn id_read(access: &SysRegAccess) -> Option<Early> {
    idreg::classify(access).map(|read| Early::IdRead {
        rt: access.rt,
        read,
    })
}
