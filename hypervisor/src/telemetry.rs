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
//!   physical CPU ([`trace`]); without it, tracing compiles to nothing.
//!
//! No locks: each vCPU's counters and each CPU's ring have one writer (the
//! CPU running that vCPU; EL2 never nests), and readers take each `u64`
//! whole. So [`print_stats`] may be called from any context that does not
//! hold the console lock.
//!
//! [`TraceRecord`]: stratum_abi::telemetry::TraceRecord

use core::fmt;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use stratum_abi::telemetry::{self as layout, RING_SLOTS, VCPU_SLOTS, VM_SLOTS, VmState};
use stratum_core::stats::{ExitStats, Reason, render_table};
use stratum_core::vmexit::ExitCounters;

/// The block's header.
#[repr(C)]
struct Header {
    magic: u64,
    version: u32,
    reasons: u32,
    vm_slots: u32,
    vcpu_slots: u32,
    ring_slots: u32,
    flags: u32,
    counter_hz: AtomicU64,
    vm_offset: u32,
    vm_size: u32,
    ring_offset: u32,
    ring_size: u32,
    total_size: u32,
    reserved: u32,
}

/// One VM's slot.
#[repr(C)]
struct VmSlot {
    state: AtomicU32,
    vcpus: AtomicU32,
    boot_count: AtomicU64,
    /// The name, NUL-padded, as little-endian words.
    name: [AtomicU64; layout::VM_NAME_LEN / 8],
    stats: [ExitStats; VCPU_SLOTS],
}

/// One CPU's trace-ring descriptor.
#[repr(C)]
struct RingDesc {
    records: AtomicU64,
    capacity: AtomicU32,
    record_size: AtomicU32,
    head: AtomicU64,
    reserved: u64,
}

/// The whole telemetry block.
#[repr(C)]
pub struct Block {
    header: Header,
    vms: [VmSlot; VM_SLOTS],
    rings: [RingDesc; RING_SLOTS],
}

// The layout `stratum_abi::telemetry` documents, pinned.
const _: () = {
    assert!(core::mem::size_of::<Header>() == layout::HEADER_SIZE);
    assert!(offset_of!(Header, version) == layout::H_VERSION);
    assert!(offset_of!(Header, reasons) == layout::H_REASONS);
    assert!(offset_of!(Header, vm_slots) == layout::H_VM_SLOTS);
    assert!(offset_of!(Header, vcpu_slots) == layout::H_VCPU_SLOTS);
    assert!(offset_of!(Header, ring_slots) == layout::H_RING_SLOTS);
    assert!(offset_of!(Header, flags) == layout::H_FLAGS);
    assert!(offset_of!(Header, counter_hz) == layout::H_COUNTER_HZ);
    assert!(offset_of!(Header, vm_offset) == layout::H_VM_OFFSET);
    assert!(offset_of!(Header, vm_size) == layout::H_VM_SIZE);
    assert!(offset_of!(Header, ring_offset) == layout::H_RING_OFFSET);
    assert!(offset_of!(Header, ring_size) == layout::H_RING_SIZE);
    assert!(offset_of!(Header, total_size) == layout::H_TOTAL_SIZE);
    assert!(offset_of!(VmSlot, state) == layout::VM_STATE);
    assert!(offset_of!(VmSlot, vcpus) == layout::VM_VCPUS);
    assert!(offset_of!(VmSlot, boot_count) == layout::VM_BOOT_COUNT);
    assert!(offset_of!(VmSlot, name) == layout::VM_NAME);
    assert!(offset_of!(VmSlot, stats) == layout::VM_STATS);
    assert!(core::mem::size_of::<VmSlot>() == layout::VM_SLOT_SIZE);
    assert!(offset_of!(RingDesc, records) == layout::RING_RECORDS);
    assert!(offset_of!(RingDesc, capacity) == layout::RING_CAPACITY);
    assert!(offset_of!(RingDesc, record_size) == layout::RING_RECORD_SIZE);
    assert!(offset_of!(RingDesc, head) == layout::RING_HEAD);
    assert!(core::mem::size_of::<RingDesc>() == layout::RING_DESC_SIZE);
    assert!(offset_of!(Block, vms) == layout::VM_OFFSET);
    assert!(offset_of!(Block, rings) == layout::RING_OFFSET);
    assert!(core::mem::size_of::<Block>() == layout::TOTAL_SIZE);
    assert!(RING_SLOTS >= crate::head::MAX_CPUS);
};

const fn as_u32(n: usize) -> u32 {
    assert!(n <= u32::MAX as usize);
    n as u32
}

/// The telemetry block. The `Image` header (`stratum_arch::head`) carries
/// its address, through the link name `stratum_telemetry`.
#[unsafe(export_name = "stratum_telemetry")]
pub static BLOCK: Block = Block {
    header: Header {
        magic: layout::MAGIC,
        version: layout::VERSION,
        reasons: as_u32(Reason::COUNT),
        vm_slots: as_u32(VM_SLOTS),
        vcpu_slots: as_u32(VCPU_SLOTS),
        ring_slots: as_u32(RING_SLOTS),
        flags: if cfg!(feature = "trace") {
            layout::FLAG_TRACE
        } else {
            0
        },
        counter_hz: AtomicU64::new(0),
        vm_offset: as_u32(layout::VM_OFFSET),
        vm_size: as_u32(layout::VM_SLOT_SIZE),
        ring_offset: as_u32(layout::RING_OFFSET),
        ring_size: as_u32(layout::RING_DESC_SIZE),
        total_size: as_u32(layout::TOTAL_SIZE),
        reserved: 0,
    },
    vms: [const {
        VmSlot {
            state: AtomicU32::new(VmState::Empty as u32),
            vcpus: AtomicU32::new(0),
            boot_count: AtomicU64::new(0),
            name: [const { AtomicU64::new(0) }; layout::VM_NAME_LEN / 8],
            stats: [const { ExitStats::new() }; VCPU_SLOTS],
        }
    }; VM_SLOTS],
    rings: [const {
        RingDesc {
            records: AtomicU64::new(0),
            capacity: AtomicU32::new(0),
            record_size: AtomicU32::new(0),
            head: AtomicU64::new(0),
            reserved: 0,
        }
    }; RING_SLOTS],
};

/// Where the counts of a VM or vCPU outside the block's slots go (counted,
/// never shown).
static OVERFLOW: ExitStats = ExitStats::new();

/// Fills in what is known only at run time (the counter frequency, the
/// trace rings). Call once at boot, before any guest runs.
pub fn init() {
    BLOCK
        .header
        .counter_hz
        .store(stratum_arch::timer::frequency(), Ordering::Relaxed);
    #[cfg(feature = "trace")]
    ring::publish();
}

/// Records that VM `id` exists: its name and vCPU count (state running).
pub fn register_vm(id: usize, name: &str, vcpus: usize) {
    let Some(slot) = BLOCK.vms.get(id) else {
        return;
    };
    let mut bytes = [0u8; layout::VM_NAME_LEN];
    let n = name.len().min(bytes.len() - 1);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    for (word, chunk) in slot.name.iter().zip(bytes.chunks_exact(8)) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        word.store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
    slot.vcpus
        .store(as_u32(vcpus.min(VCPU_SLOTS)), Ordering::Relaxed);
    slot.boot_count.store(0, Ordering::Relaxed);
    slot.state.store(VmState::Running as u32, Ordering::Release);
}

/// Records how VM `id` ended (`crashed` or powered off) after `boots` boots.
pub fn vm_stopped(id: usize, crashed: bool, boots: u64) {
    if let Some(slot) = BLOCK.vms.get(id) {
        slot.boot_count.store(boots, Ordering::Relaxed);
        let state = if crashed {
            VmState::Crashed
        } else {
            VmState::Stopped
        };
        slot.state.store(state as u32, Ordering::Release);
    }
}

/// The counters of vCPU `vcpu` of VM `vm` (the caller runs that vCPU: it
/// is their only writer).
pub fn stats(vm: usize, vcpu: usize) -> &'static ExitStats {
    BLOCK
        .vms
        .get(vm)
        .and_then(|slot| slot.stats.get(vcpu))
        .unwrap_or(&OVERFLOW)
}

/// The coarse summary of VM `vm`'s counters over all its vCPUs (for log
/// rate-limiting).
pub fn summary(vm: usize) -> ExitCounters {
    match BLOCK.vms.get(vm) {
        Some(slot) => ExitCounters::sum(&slot.stats),
        None => ExitCounters::default(),
    }
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

/// Prints the statistics table of VM `id` on the console.
pub fn print_vm(id: usize) {
    let Some(slot) = BLOCK.vms.get(id) else {
        return;
    };
    let state = VmState::from_code(slot.state.load(Ordering::Acquire)).unwrap_or(VmState::Empty);
    if state == VmState::Empty {
        return;
    }
    let mut name = [0u8; layout::VM_NAME_LEN];
    for (chunk, word) in name.chunks_exact_mut(8).zip(&slot.name) {
        chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let name = core::str::from_utf8(&name[..len]).unwrap_or("?");
    let vcpus = (slot.vcpus.load(Ordering::Relaxed) as usize).min(VCPU_SLOTS);
    crate::log!("vm{id} '{name}' ({}): exits by reason", state.name());
    let mut lines = LogLines::default();
    let _ = render_table(&mut lines, vcpus, |v, r| slot.stats[v].get(r));
    lines.flush();
}

/// Prints the statistics table of every VM (the console's statistics
/// escape calls this). Must not be called with the console lock held.
pub fn print_stats() {
    for id in 0..VM_SLOTS {
        print_vm(id);
    }
}

/// `fmt::Write` onto the hypervisor console, a whole line at a time, each
/// as a hypervisor message (`[stratum] …`): with several VMs, every console
/// line must say whose it is.
struct LogLines {
    buf: [u8; 192],
    len: usize,
}

impl Default for LogLines {
    fn default() -> Self {
        Self {
            buf: [0; 192],
            len: 0,
        }
    }
}

impl LogLines {
    /// Prints what is buffered as one line (if anything).
    fn flush(&mut self) {
        if self.len > 0 {
            let line = core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?");
            crate::log!("{line}");
            self.len = 0;
        }
    }
}

impl fmt::Write for LogLines {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.flush();
                continue;
            }
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// The per-CPU trace rings (the `trace` feature).
#[cfg(feature = "trace")]
mod ring {
    use core::sync::atomic::{AtomicU64, Ordering};

    use stratum_abi::telemetry::{RECORD_SIZE, RING_SLOTS};
    use stratum_core::stats::Reason;

    use super::BLOCK;

    /// Records per CPU (a power of two): 16 bytes each, 256 KiB per CPU.
    const CAPACITY: usize = 16 * 1024;

    /// One CPU's records: two little-endian words each, as
    /// `stratum_abi::telemetry::TraceRecord` lays them out.
    #[repr(C)]
    struct Ring {
        words: [[AtomicU64; 2]; CAPACITY],
    }

    const _: () = assert!(core::mem::size_of::<[AtomicU64; 2]>() == RECORD_SIZE);
    const _: () = assert!(CAPACITY.is_power_of_two());

    static RINGS: [Ring; RING_SLOTS] = [const {
        Ring {
            words: [const { [AtomicU64::new(0), AtomicU64::new(0)] }; CAPACITY],
        }
    }; RING_SLOTS];

    /// Describes every ring in the block.
    pub fn publish() {
        for (desc, ring) in BLOCK.rings.iter().zip(&RINGS) {
            // EL2 maps itself identity: the address is physical.
            desc.records
                .store(core::ptr::from_ref(ring) as u64, Ordering::Relaxed);
            desc.capacity.store(CAPACITY as u32, Ordering::Relaxed);
            desc.record_size
                .store(RECORD_SIZE as u32, Ordering::Relaxed);
            desc.head.store(0, Ordering::Release);
        }
    }

    /// Appends a record to this CPU's ring; the head moves after the record
    /// is written, so a reader that sees the head sees the record.
    pub fn append(vm: usize, vcpu: usize, reason: Reason, detail: u32) {
        let cpu = crate::smp::current_cpu();
        let (Some(desc), Some(ring)) = (BLOCK.rings.get(cpu), RINGS.get(cpu)) else {
            return;
        };
        let head = desc.head.load(Ordering::Relaxed);
        let slot = &ring.words[head as usize & (CAPACITY - 1)];
        let time = stratum_arch::sysreg::cntpct_el0();
        let meta = (vm as u64 & 0xFF)
            | ((vcpu as u64 & 0xFF) << 8)
            | ((reason as u64) << 16)
            | (u64::from(detail) << 32);
        slot[0].store(time, Ordering::Relaxed);
        slot[1].store(meta, Ordering::Relaxed);
        desc.head.store(head.wrapping_add(1), Ordering::Release);
    }
}
