//! Exit statistics and the exit trace, published for the outside world.
//!
//! Everything lives in one static block laid out as `stratum_abi::telemetry`
//! describes, whose address the `Image` header carries (`stratum_arch::head`
//! refers to it by the link name `stratum_telemetry`), so `stratum stats`
//! and `stratum trace` can read it through QEMU's monitor while the system
//! runs:
//!
//! - per VM slot (the VM's bundle index) and vCPU: one [`ExitStats`]
//!   counter per [`Reason`]. `core::vmexit::handle_sync` counts synchronous
//!   exits in the slot [`stats`] hands the glue; `irq.rs` counts the physical
//!   interrupts it takes for a vCPU ([`interrupt`]).
//! - with the `trace` feature, a ring of timestamped [`TraceRecord`]s per
//!   physical CPU ([`trace`]), and the counter time each VM's exits spent
//!   at EL2, idling excluded ([`exit_entered`], [`exit_left`], [`idling`],
//!   printed when the VM stops by `console::print_el2_time`); without it, both
//!   compile to nothing.
//!
//! No locks: each vCPU's counters and each CPU's ring have one writer (the
//! CPU running that vCPU; EL2 never nests), and readers take each `u64`
//! whole; the console prints the tables (`console::print_stats`) from any
//! context.
//!
//! [`TraceRecord`]: stratum_abi::telemetry::TraceRecord

use stratum_abi::telemetry::RING_SLOTS;
use stratum_core::stats::{ExitStats, Reason};
use stratum_core::telemetry::Block;
use stratum_core::vmexit::ExitCounters;

const _: () = assert!(RING_SLOTS >= stratum_arch::head::MAX_CPUS);

/// The block itself, under the link name the `Image` header refers to.
#[unsafe(export_name = "stratum_telemetry")]
pub static BLOCK: Block = Block::new(cfg!(feature = "trace"));

static OVERFLOW: ExitStats = ExitStats::new();

/// Fills in what is known only at run time (the counter frequency, the
/// trace rings). Call once at boot, before any guest runs.
pub fn init() {
    BLOCK.set_counter_hz(stratum_arch::timer::frequency());
    #[cfg(feature = "trace")]
    ring::publish();
}

/// The counters of vCPU `vcpu` of VM `vm` (the caller runs that vCPU: it
/// is their only writer).
pub fn stats(vm: usize, vcpu: usize) -> &'static ExitStats {
    BLOCK.stats(vm, vcpu).unwrap_or(&OVERFLOW)
}

/// The coarse summary of VM `vm`'s counters over all its vCPUs (for log
/// rate-limiting).
pub fn summary(vm: usize) -> ExitCounters {
    BLOCK.summary(vm)
}

/// Counts (and traces) one event of `reason` for vCPU `vcpu` of VM `vm`
/// that the glue classified itself (interrupts, SErrors).
pub fn count(vm: usize, vcpu: usize, reason: Reason, detail: u32) {
    stats(vm, vcpu).count(reason);
    trace(vm, vcpu, reason, detail);
}

/// A physical interrupt (`intid`, of class `reason`) taken for vCPU `vcpu`
/// of VM `vm`.
pub fn interrupt(vm: usize, vcpu: usize, reason: Reason, intid: u32) {
    count(vm, vcpu, reason, intid);
}

/// `n` physical interrupts of class `reason` (one of EL2's own, or a
/// timer's; the INTID is implied) taken for vCPU `vcpu` of VM `vm`; traced
/// with detail 0.
pub fn interrupts(vm: usize, vcpu: usize, reason: Reason, n: u8) {
    stats(vm, vcpu).add(reason, u64::from(n));
    for _ in 0..n {
        trace(vm, vcpu, reason, 0);
    }
}

/// Appends an exit record to this CPU's trace ring (nothing without the
/// `trace` feature).
#[inline(always)]
pub fn trace(vm: usize, vcpu: usize, reason: Reason, detail: u32) {
    #[cfg(feature = "trace")]
    ring::append(vm, vcpu, reason, detail);
    #[cfg(not(feature = "trace"))]
    let _ = (vm, vcpu, reason, detail);
}

/// An exit of a vCPU of VM `vm` enters EL2 (trace builds: the EL2 time
/// accounting, `el2`; otherwise nothing).
#[inline(always)]
pub fn exit_entered(vm: usize) {
    #[cfg(feature = "trace")]
    el2::entered(vm);
    #[cfg(not(feature = "trace"))]
    let _ = vm;
}

/// This CPU leaves EL2 for a guest (trace builds: charges the time since
/// [`exit_entered`], idling excluded, to the VM that exited).
#[inline(always)]
pub fn exit_left() {
    #[cfg(feature = "trace")]
    el2::left();
}

/// Runs `wait` (an idle `WFI`), its time not charged to any VM (trace
/// builds).
#[inline(always)]
pub fn idling(wait: impl FnOnce()) {
    #[cfg(feature = "trace")]
    el2::idling(wait);
    #[cfg(not(feature = "trace"))]
    wait();
}

/// The EL2 time of VM `id`'s exits (counter ticks) and how many exits it
/// covers; `None` without the `trace` feature.
pub fn el2_time(id: usize) -> Option<(u64, u64)> {
    #[cfg(feature = "trace")]
    return Some(el2::of(id));
    #[cfg(not(feature = "trace"))]
    {
        let _ = id;
        None
    }
}

/// EL2 time accounting (the `trace` feature): the counter time from each
/// exit's entry into Rust to the guest entry that ends it, charged to the
/// VM that exited, less the `WFI`s in between (an idle CPU is no VM's
/// cost). Under QEMU `-icount shift=4` a tick is an instruction, so with
/// one emulated CPU this is the instructions EL2 executed for the VM, but
/// for the exception entry and the vector's register save and restore
/// ([`stratum_abi::telemetry::EL2_VECTOR_INSNS`] per exit). With several
/// emulated CPUs, QEMU runs them round-robin on one clock, and a CPU
/// switched out while at EL2 is charged the others' instructions: the
/// figures are exact only on one CPU (docs/benchmarks.md).
#[cfg(feature = "trace")]
mod el2 {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use stratum_abi::telemetry::VM_SLOTS;
    use stratum_arch::head::MAX_CPUS;
    use stratum_arch::timer::counter;

    /// Per CPU: the counter at the current exit's entry (moved on by each
    /// idle wait), 0 when no exit is under way.
    static START: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    /// Per CPU: the VM the current exit belongs to.
    static OWNER: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    /// Per VM slot: counter ticks at EL2 and exits counted.
    static TICKS: [AtomicU64; VM_SLOTS] = [const { AtomicU64::new(0) }; VM_SLOTS];
    static EXITS: [AtomicU64; VM_SLOTS] = [const { AtomicU64::new(0) }; VM_SLOTS];

    fn cpu() -> usize {
        stratum_arch::head::current_cpu().min(MAX_CPUS - 1)
    }

    pub fn entered(vm: usize) {
        let cpu = cpu();
        OWNER[cpu].store(vm as u64, Relaxed);
        START[cpu].store(counter(), Relaxed);
    }

    pub fn left() {
        let cpu = cpu();
        let start = START[cpu].swap(0, Relaxed);
        let vm = OWNER[cpu].load(Relaxed) as usize;
        if start != 0 && vm < VM_SLOTS {
            TICKS[vm].fetch_add(counter().saturating_sub(start), Relaxed);
            EXITS[vm].fetch_add(1, Relaxed);
        }
    }

    pub fn idling(wait: impl FnOnce()) {
        let before = counter();
        wait();
        let idle = counter().saturating_sub(before);
        let start = &START[cpu()];
        let s = start.load(Relaxed);
        if s != 0 {
            start.store(s.saturating_add(idle), Relaxed);
        }
    }

    pub fn of(vm: usize) -> (u64, u64) {
        (
            TICKS.get(vm).map_or(0, |t| t.load(Relaxed)),
            EXITS.get(vm).map_or(0, |e| e.load(Relaxed)),
        )
    }
}

/// How long a trace build lingers before stopping the machine, in
/// milliseconds of counter time: several of the host's polls
/// (`stratum trace` reads the rings every 20 ms), so the last records are
/// read before QEMU exits.
#[cfg(feature = "trace")]
const LINGER_MS: u64 = 100;

/// Called just before the machine stops: a trace build lingers
/// [`LINGER_MS`] so the host collects the final records; otherwise nothing.
#[inline(always)]
pub fn before_shutdown() {
    #[cfg(feature = "trace")]
    {
        let hz = stratum_arch::timer::frequency();
        let end = stratum_arch::timer::counter().saturating_add(hz / 1000 * LINGER_MS);
        while stratum_arch::timer::counter() < end {
            core::hint::spin_loop();
        }
    }
}

/// The per-CPU trace rings (the `trace` feature): 16 Ki records of 16
/// bytes per CPU, 256 KiB each.
#[cfg(feature = "trace")]
mod ring {
    use stratum_abi::telemetry::RING_SLOTS;
    use stratum_core::stats::Reason;
    use stratum_core::telemetry::{TraceRing, record_words};

    use super::BLOCK;

    static RINGS: [TraceRing<{ 16 * 1024 }>; RING_SLOTS] = [const { TraceRing::new() }; RING_SLOTS];

    /// Describes every ring in the block.
    pub fn publish() {
        for (desc, ring) in BLOCK.rings.iter().zip(&RINGS) {
            // EL2 maps itself identity: the address is physical.
            ring.publish(desc, core::ptr::from_ref(ring) as u64);
        }
    }

    /// Appends a record to this CPU's ring.
    pub fn append(vm: usize, vcpu: usize, reason: Reason, detail: u32) {
        let cpu = stratum_arch::head::current_cpu();
        if let (Some(desc), Some(ring)) = (BLOCK.rings.get(cpu), RINGS.get(cpu)) {
            let time = stratum_arch::sysreg::cntpct_el0();
            ring.append(desc, record_words(time, vm, vcpu, reason, detail));
        }
    }
}
