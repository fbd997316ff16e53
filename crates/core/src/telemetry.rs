//! The telemetry block: the exit statistics and trace-ring descriptors the
//! hypervisor publishes in its own memory, as `stratum_abi::telemetry`
//! lays them out, for `stratum stats` and `stratum trace` to read from
//! outside while the system runs.
//!
//! The EL2 binary keeps one [`Block`] in a static whose address its
//! `Image` header carries. Everything here is atomics with one writer per
//! counter (the CPU running the vCPU, or the CPU owning the ring), so
//! readers on other CPUs and outside the machine need no lock; a reader
//! sees each `u64` whole. A trace build also keeps one [`TraceRing`] per
//! physical CPU, which a [`RingDesc`] of the block describes.

use core::fmt;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use stratum_abi::telemetry::{self as layout, RING_SLOTS, VCPU_SLOTS, VM_SLOTS, VmState};

use crate::stats::{ExitStats, Reason, render_table};
use crate::vmexit::ExitCounters;

/// The block's header.
#[repr(C)]
pub struct Header {
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
pub struct VmSlot {
    /// [`VmState`] code.
    pub state: AtomicU32,
    /// vCPUs with a counter slot.
    pub vcpus: AtomicU32,
    /// Boots when it stopped.
    pub boot_count: AtomicU64,
    /// The name, NUL-padded, as little-endian words.
    pub name: [AtomicU64; layout::VM_NAME_LEN / 8],
    /// Each vCPU's exit counters.
    pub stats: [ExitStats; VCPU_SLOTS],
}

/// One CPU's trace-ring descriptor.
#[repr(C)]
pub struct RingDesc {
    /// Physical address of the records.
    pub records: AtomicU64,
    /// Records the ring holds (a power of two).
    pub capacity: AtomicU32,
    /// Bytes per record.
    pub record_size: AtomicU32,
    /// Records ever written.
    pub head: AtomicU64,
    reserved: u64,
}

/// The whole telemetry block.
#[repr(C)]
pub struct Block {
    header: Header,
    /// The VM slots, by bundle index.
    pub vms: [VmSlot; VM_SLOTS],
    /// The trace rings, by physical CPU.
    pub rings: [RingDesc; RING_SLOTS],
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
};

const fn as_u32(n: usize) -> u32 {
    assert!(n <= u32::MAX as usize);
    n as u32
}

impl Block {
    /// An empty block: no VM, no ring, every counter zero; `trace` says
    /// whether this build records exit traces.
    pub const fn new(trace: bool) -> Self {
        Self {
            header: Header {
                magic: layout::MAGIC,
                version: layout::VERSION,
                reasons: as_u32(Reason::COUNT),
                vm_slots: as_u32(VM_SLOTS),
                vcpu_slots: as_u32(VCPU_SLOTS),
                ring_slots: as_u32(RING_SLOTS),
                flags: if trace { layout::FLAG_TRACE } else { 0 },
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
        }
    }

    /// The counters of vCPU `vcpu` of VM slot `vm`, if both are in range.
    pub fn stats(&self, vm: usize, vcpu: usize) -> Option<&ExitStats> {
        self.vms.get(vm).and_then(|slot| slot.stats.get(vcpu))
    }

    /// Records the counter frequency that trace timestamps use.
    pub fn set_counter_hz(&self, hz: u64) {
        self.header.counter_hz.store(hz, Ordering::Relaxed);
    }

    /// Fills VM `id`'s slot (name truncated to fit, NUL-padded) and marks it
    /// running. An `id` beyond the slots is not published.
    pub fn register_vm(&self, id: usize, name: &str, vcpus: usize) {
        let Some(slot) = self.vms.get(id) else {
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

    /// Marks VM `id` stopped (or crashed) after `boots` boots.
    pub fn vm_stopped(&self, id: usize, crashed: bool, boots: u64) {
        if let Some(slot) = self.vms.get(id) {
            slot.boot_count.store(boots, Ordering::Relaxed);
            let state = if crashed {
                VmState::Crashed
            } else {
                VmState::Stopped
            };
            slot.state.store(state as u32, Ordering::Release);
        }
    }

    /// VM `id`'s state ([`VmState::Empty`] for a slot never filled).
    pub fn vm_state(&self, id: usize) -> VmState {
        self.vms
            .get(id)
            .and_then(|s| VmState::from_code(s.state.load(Ordering::Acquire)))
            .unwrap_or(VmState::Empty)
    }

    /// The counters of VM `vm` summed over its vCPUs.
    pub fn summary(&self, vm: usize) -> ExitCounters {
        match self.vms.get(vm) {
            Some(slot) => ExitCounters::sum(&slot.stats),
            None => ExitCounters::default(),
        }
    }

    /// Writes VM `id`'s exit table (`vmN 'name' (state): exits by reason`,
    /// then one row per reason that counted); nothing for an empty slot.
    pub fn render_vm(&self, id: usize, out: &mut impl fmt::Write) -> fmt::Result {
        let state = self.vm_state(id);
        let Some(slot) = self.vms.get(id).filter(|_| state != VmState::Empty) else {
            return Ok(());
        };
        let mut name = [0u8; layout::VM_NAME_LEN];
        for (chunk, word) in name.chunks_exact_mut(8).zip(&slot.name) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let name = core::str::from_utf8(&name[..len]).unwrap_or("?");
        let vcpus = (slot.vcpus.load(Ordering::Relaxed) as usize).min(VCPU_SLOTS);
        writeln!(out, "vm{id} '{name}' ({}): exits by reason", state.name())?;
        render_table(out, vcpus, |v, r| slot.stats[v].get(r))
    }
}

/// The two words of a trace record (`stratum_abi::telemetry::TraceRecord`):
/// the time, then vm, vcpu, reason and detail packed little-endian.
pub const fn record_words(
    time: u64,
    vm: usize,
    vcpu: usize,
    reason: Reason,
    detail: u32,
) -> [u64; 2] {
    let meta = (vm as u64 & 0xFF)
        | ((vcpu as u64 & 0xFF) << 8)
        | ((reason as u64) << 16)
        | ((detail as u64) << 32);
    [time, meta]
}

/// One CPU's exit trace: `N` records (a power of two) of two words each,
/// as `stratum_abi::telemetry::TraceRecord` lays them out; the CPU that
/// owns it is its only writer.
#[repr(C)]
pub struct TraceRing<const N: usize> {
    words: [[AtomicU64; 2]; N],
}

const _: () = assert!(core::mem::size_of::<[AtomicU64; 2]>() == layout::RECORD_SIZE);

impl<const N: usize> TraceRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        assert!(N.is_power_of_two() && N <= u32::MAX as usize);
        Self {
            words: [const { [AtomicU64::new(0), AtomicU64::new(0)] }; N],
        }
    }

    /// Describes this ring in `desc`, at `address` (where readers outside
    /// find it: EL2 maps itself identity, so its own address), and empties
    /// it.
    pub fn publish(&self, desc: &RingDesc, address: u64) {
        desc.records.store(address, Ordering::Relaxed);
        desc.capacity.store(N as u32, Ordering::Relaxed);
        desc.record_size
            .store(layout::RECORD_SIZE as u32, Ordering::Relaxed);
        desc.head.store(0, Ordering::Release);
    }

    /// Appends a record (see [`record_words`]); the head in `desc` moves
    /// after the record is written, so a reader that sees the head sees
    /// the record. The oldest record is overwritten when the ring is full.
    pub fn append(&self, desc: &RingDesc, record: [u64; 2]) {
        let head = desc.head.load(Ordering::Relaxed);
        let slot = &self.words[head as usize & (N - 1)];
        slot[0].store(record[0], Ordering::Relaxed);
        slot[1].store(record[1], Ordering::Relaxed);
        desc.head.store(head.wrapping_add(1), Ordering::Release);
    }

    /// Record `i` (by position in the ring, not by age).
    pub fn record(&self, i: usize) -> [u64; 2] {
        let slot = &self.words[i & (N - 1)];
        [
            slot[0].load(Ordering::Relaxed),
            slot[1].load(Ordering::Relaxed),
        ]
    }
}

impl<const N: usize> Default for TraceRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
