//! A vCPU's register frame and the tag that names its owner.
//!
//! The frame's layout is the exit vector's ([`stratum_arch::vectors`]); the
//! EL1 state switched with a vCPU and its reset values are
//! [`stratum_arch::context`]'s.

use stratum_core::stats::ExitStats;

/// The general-purpose registers of a guest vCPU, saved by the exit vector
/// (x0–x30 at offsets 0, 8, …, 240), and whose they are ([`VcpuTag`]).
pub type Frame = stratum_arch::vectors::GuestFrame<VcpuTag>;

/// What a vCPU's frame says about its owner, so that the exit path (which
/// is handed the frame) needs no lookup to know whose exit it handles or
/// where to count it. Set when the VM is built; never changes.
#[derive(Clone, Copy, Debug)]
pub struct VcpuTag {
    /// The VM's index.
    pub vm: usize,
    /// The vCPU's index in its VM.
    pub vcpu: usize,
    /// Its exit counters in the telemetry block.
    pub stats: &'static ExitStats,
}

impl VcpuTag {
    /// The tag of vCPU `vcpu` of VM `vm`.
    pub fn new(vm: usize, vcpu: usize) -> Self {
        Self {
            vm,
            vcpu,
            stats: crate::telemetry::stats(vm, vcpu),
        }
    }
}

impl Default for VcpuTag {
    /// No vCPU's: counts go to the telemetry block's overflow counters.
    fn default() -> Self {
        Self::new(usize::MAX, usize::MAX)
    }
}

/// A fresh frame for vCPU `vcpu` of VM `vm`: every register zero.
pub fn frame(vm: usize, vcpu: usize) -> Frame {
    Frame {
        x: [0; 31],
        tag: VcpuTag::new(vm, vcpu),
    }
}

/// The running vCPU as the exit path's decoders see it.
pub type LiveVcpu<'a> = stratum_arch::context::LiveVcpu<'a, VcpuTag>;

pub use stratum_arch::context::VcpuContext;
