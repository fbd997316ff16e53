//! What each physical CPU runs: its current vCPU (the one whose exit is
//! being handled, or that runs in the guest) and the vCPU whose context
//! (EL1 registers, timers, GIC CPU interface) is loaded in its registers,
//! which it keeps while the CPU idles.
//!
//! Only the CPU itself writes its entries (`sched`); the exit path, the
//! interrupt path (whose timer interrupts belong to the loaded vCPU) and
//! the scheduler read them without a lock. It imports nothing of the
//! hypervisor but the CPU count, so `irq` and `sched` both build on it
//! without importing each other.

use core::sync::atomic::{AtomicU16, Ordering};

use stratum_core::sched::VcpuRef;

use stratum_arch::head::MAX_CPUS;

/// No vCPU.
const NONE: u16 = u16::MAX;

/// Each CPU's current vCPU (`vm << 8 | vcpu`), or [`NONE`].
static CURRENT: [AtomicU16; MAX_CPUS] = [const { AtomicU16::new(NONE) }; MAX_CPUS];
/// Each CPU's loaded vCPU, or [`NONE`].
static LOADED: [AtomicU16; MAX_CPUS] = [const { AtomicU16::new(NONE) }; MAX_CPUS];

fn pack(v: Option<VcpuRef>) -> u16 {
    v.map_or(NONE, |v| u16::from(v.vm) << 8 | u16::from(v.vcpu))
}

fn unpack(raw: u16) -> Option<VcpuRef> {
    (raw != NONE).then_some(VcpuRef {
        vm: (raw >> 8) as u8,
        vcpu: raw as u8,
    })
}

/// `cpu`'s current vCPU.
pub fn current(cpu: usize) -> Option<VcpuRef> {
    unpack(CURRENT[cpu].load(Ordering::Relaxed))
}

/// Makes `v` `cpu`'s current vCPU (`cpu` itself only).
pub fn set_current(cpu: usize, v: VcpuRef) {
    CURRENT[cpu].store(pack(Some(v)), Ordering::Relaxed);
}

/// Takes `cpu`'s current vCPU away (`cpu` itself only).
pub fn take_current(cpu: usize) -> Option<VcpuRef> {
    unpack(CURRENT[cpu].swap(NONE, Ordering::Relaxed))
}

/// The vCPU whose context is loaded on `cpu` (the one its guest timers'
/// interrupts belong to). Kept out of line, as is [`set_loaded`]: inlined
/// beside [`current`], LLVM merges the two arrays and every exit's read of
/// the current vCPU takes one instruction more (measured with the bench).
#[inline(never)]
pub fn loaded(cpu: usize) -> Option<VcpuRef> {
    unpack(LOADED[cpu].load(Ordering::Relaxed))
}

/// Whether `v`'s context is the one loaded on `cpu` ([`loaded`] in one
/// compare).
#[inline(always)]
pub fn is_loaded(cpu: usize, v: VcpuRef) -> bool {
    LOADED[cpu].load(Ordering::Relaxed) == pack(Some(v))
}

/// Records that `v`'s context is loaded on `cpu` (`cpu` itself only).
#[inline(never)]
pub fn set_loaded(cpu: usize, v: Option<VcpuRef>) {
    LOADED[cpu].store(pack(v), Ordering::Relaxed);
}
