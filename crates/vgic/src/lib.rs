//! The virtual GIC of one VM: interrupt state, distributor/redistributor
//! register emulation for GICv2 and GICv3, SGI generation, and the
//! list-register (LR) allocation that hands interrupts to the hardware's
//! virtual CPU interface.
//!
//! One [`Vgic`] per VM. The hypervisor
//! - forwards trapped distributor/redistributor accesses to
//!   [`Vgic::dist_read`]/[`Vgic::dist_write`] and
//!   [`Vgic::redist_read`]/[`Vgic::redist_write`], and trapped
//!   `ICC_SGI1R_EL1` writes to [`Vgic::sgi1r_write`];
//! - feeds device inputs with [`Vgic::set_level`], [`Vgic::set_pending`] and
//!   [`Vgic::set_hw_pending`];
//! - on every exit of a vCPU folds the LRs whose content changed since it
//!   wrote them with [`Vgic::fold_lr`] *before* emulating anything else,
//!   and before entering it writes the LRs [`Vgic::refill`] names (or, the
//!   simple protocol, writes all of [`Vgic::fill_lrs`] and reads all back
//!   into [`Vgic::fold_lrs`]); when the vCPU leaves its CPU, gives every
//!   LR back with [`Vgic::fold_lrs`];
//! - after each call that can make an interrupt deliverable, asks
//!   [`Vgic::take_kicks`] which vCPUs to kick (IPI a running one, wake a
//!   blocked one), and [`Vgic::take_hw_release`] for physical interrupts it
//!   must deactivate itself.
//!
//! # The state machine
//! Each interrupt has the architectural state of IHI 0069 §4.1.2 ("Interrupt
//! lifecycle"): inactive, pending, active, active and pending. Pending is
//! the union of a *latch* (set by an edge, a software write to
//! `ISPENDR`, an SGI) and, for level-sensitive interrupts, the input *line*
//! (IHI 0069 §4.1.2, level-sensitive: "pending while asserted"). While an
//! interrupt sits in a list register between [`Vgic::fill_lrs`] and
//! [`Vgic::fold_lrs`], the LR owns the part of the state that was moved into
//! it (the latch and the active bit); anything that happens meanwhile lands
//! in the model and is merged at the fold, so no interrupt is lost and none
//! is in two LRs. See `fill.rs`.
//!
//! # The view a guest gets
//! - GICv3: a single security state (`GICD_CTLR.DS == 1`), affinity routing
//!   always on (`ARE` RAO/WI), no LPIs/ITS, no extended ranges. Group 0 and
//!   Group 1 both exist; all interrupts reset to Group 1.
//! - GICv2: no Security Extensions; interrupts reset to Group 0 (which a
//!   GICv2 guest signals as IRQ), SGIs are permanently enabled, ID registers
//!   as a GIC-400's.
//! - 5 priority bits (the low 3 bits of every priority are RAZ/WI), as
//!   QEMU's and most GICs' CPU interfaces implement.
//!
//! `no_std`, `forbid(unsafe_code)`, no allocation: everything lives in
//! fixed arrays sized by [`MAX_VCPUS`], [`MAX_SPIS`] and [`MAX_LRS`]. No
//! guest input can panic this crate: bad offsets, widths and alignments
//! return a [`VgicError`] the hypervisor turns into an injected abort.
#![cfg_attr(not(any(test, feature = "harness")), no_std)]
#![forbid(unsafe_code)]

mod dist;
mod dist_v2;
mod dist_v3;
mod fill;
pub mod hw;
mod lr;
mod power;
mod redist;
mod regs;
mod sgi;
mod state;
mod vmexit_impl;
pub use vmexit_impl::{REGION_DIST, REGION_REDIST};

#[cfg(any(test, feature = "harness"))]
pub mod harness;
#[cfg(test)]
mod tests;

pub use fill::{LrFill, LrFold, LrRefill};
pub use lr::{ListRegister, LrState};
pub use state::{HwRelease, VcpuMask, Vgic};
pub use stratum_core::access::AccessSize;
pub use stratum_core::platform::GicVersion;

/// Most vCPUs per VM (the GICv2 architectural limit; plenty for v3 too).
pub const MAX_VCPUS: usize = 8;
/// Most SPIs per VM: INTIDs 32..=287.
pub const MAX_SPIS: u32 = 256;
/// Number of SGIs plus PPIs (INTIDs 0..=31), banked per vCPU.
pub const PRIVATE_IRQS: u32 = 32;
/// Most list registers used per vCPU (GICv2's `GICH_VTR.ListRegs` allows 64;
/// GICv3 at most 16). Extra LRs a caller passes stay invalid.
pub const MAX_LRS: usize = 64;
/// Implemented priority bits (IHI 0069 §4.8; IHI 0048B §3.3.2): 32 levels.
pub const PRIORITY_BITS: u32 = 5;
/// The implemented bits of an 8-bit priority; the others are RAZ/WI.
pub const PRIORITY_MASK: u8 = !((1u8 << (8 - PRIORITY_BITS)) - 1);

/// What went wrong. For register accesses, every variant means "the guest
/// made an access the GIC does not accept"; the hypervisor answers with an
/// external abort. The variant docs are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgicError {
    /// A VM needs between 1 and `MAX_VCPUS` vCPUs.
    BadVcpuCount,
    /// The SPI count must be a multiple of 32, at most `MAX_SPIS`.
    BadSpiCount,
    /// A vCPU affinity has bits outside Aff3 (39:32) and Aff2..Aff0 (23:0).
    BadMpidr,
    /// Two vCPUs have the same affinity.
    DuplicateMpidr,
    /// No such vCPU in this VM.
    NoSuchVcpu,
    /// The INTID is not implemented, or not valid for this operation.
    BadIntid,
    /// The access is not naturally aligned.
    Misaligned,
    /// The register does not accept an access of this width.
    BadWidth,
    /// The offset lies outside the register frame.
    OutOfFrame,
    /// The operation belongs to the other GIC architecture version.
    WrongVersion,
}

impl core::fmt::Display for VgicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let msg = match self {
            Self::BadVcpuCount => "a VM needs between 1 and 8 vCPUs",
            Self::BadSpiCount => "SPI count must be a multiple of 32, at most 256",
            Self::BadMpidr => "vCPU affinity has bits outside the affinity fields",
            Self::DuplicateMpidr => "two vCPUs have the same affinity",
            Self::NoSuchVcpu => "no such vCPU",
            Self::BadIntid => "INTID not implemented or not valid here",
            Self::Misaligned => "misaligned GIC register access",
            Self::BadWidth => "GIC register does not accept this access width",
            Self::OutOfFrame => "offset outside the GIC register frame",
            Self::WrongVersion => "operation of the other GIC version",
        };
        f.write_str(msg)
    }
}
