//! Split virtqueues (virtio 1.2 §2.7): the driver-written descriptor table
//! and available ring, the device-written used ring, read and written
//! through [`GuestMemory`] only.
//!
//! A [`SplitQueue`] holds what the transport's registers set (size, ready,
//! the three areas' addresses) and the device's progress (`next_avail`,
//! `next_used`, the used index last signalled). The device takes chains
//! with [`SplitQueue::pop`], returns them with [`SplitQueue::add_used`],
//! and asks [`SplitQueue::needs_interrupt`] whether the driver wants to
//! hear about it (`VRING_AVAIL_F_NO_INTERRUPT`, or `used_event` with
//! `VIRTIO_RING_F_EVENT_IDX`). With `EVENT_IDX`, a `pop` that finds the
//! ring empty publishes `avail_event` so the driver notifies at its next
//! buffer ([`SplitQueue::arm`]); a device that stops before the ring is
//! empty arms it itself when it wants to hear of more.
//!
//! # The rings are hostile
//! Every index, address, length and flag comes from the guest and is
//! checked before use; a bad one is a [`QueueError`], never a panic, and
//! every walk is bounded: a direct chain follows at most `size`
//! descriptors, an indirect table at most its own length, and a chain
//! view holds at most [`MAX_SEGMENTS`] buffers. Whatever the rings hold,
//! a `pop` makes at most [`POP_ACCESS_BOUND`] guest-memory accesses: the
//! index (three with `EVENT_IDX`: `avail_event` and a second look), the
//! head, and two reads per descriptor (its address, then the rest as one
//! word), each of which adds a buffer or ends
//! the walk (an indirect descriptor, or the one refused). The progress indexes only move when a step succeeded, so an
//! error leaves the queue where it was (and the transport then stops it
//! with `DEVICE_NEEDS_RESET`).

use stratum_core::addr::Ipa;

use crate::chain::{Chain, Direction, MAX_SEGMENTS};
use crate::mem::{Fence, GuestMemory, MemError};
use crate::spec::ring;

/// Most entries an indirect table may have. The spec bounds a chain by the
/// queue size; QEMU and Linux bound indirect tables by 1024 entries.
pub const MAX_INDIRECT: u32 = 1024;

/// Most guest-memory accesses one [`SplitQueue::pop`] makes.
pub const POP_ACCESS_BOUND: u64 = 3 + 1 + 2 * (MAX_SEGMENTS as u64 + 2);

/// What is wrong with a queue, its rings or a chain: each is the guest's
/// (or, for the last three, the device's) fault, and the transport's
/// answer to it is `DEVICE_NEEDS_RESET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is not ready, or the device is not live (`DRIVER_OK` not
    /// set, or the device needs a reset): no buffer may be used.
    NotReady,
    /// The queue does not exist on this device.
    NoSuchQueue(u16),
    /// The queue was made ready with a size that is zero, not a power of
    /// two, or above the device's maximum.
    BadSize {
        /// The size the driver wrote.
        size: u32,
        /// The device's maximum.
        max: u16,
    },
    /// The queue was made ready with an area not aligned as the spec
    /// requires (descriptor table 16, driver area 2, device area 4), or
    /// one whose end overflows.
    BadArea(Ipa),
    /// A ring, an indirect table or a buffer lies (partly) outside the
    /// VM's RAM.
    OutsideRam {
        /// First address.
        addr: Ipa,
        /// Length in bytes.
        len: u64,
    },
    /// The driver's `avail.idx` is more than the queue size past the last
    /// entry the device took.
    AvailIndexJump {
        /// The next entry the device would take.
        next: u16,
        /// The index the driver published.
        idx: u16,
    },
    /// A descriptor index (a head from the available ring, or a `next`) is
    /// past the end of its table.
    IndexOutOfRange {
        /// The index.
        index: u32,
        /// The table's length.
        size: u32,
    },
    /// The chain visits more descriptors than its table holds: it loops.
    ChainLoop,
    /// The chain has more buffers than [`MAX_SEGMENTS`].
    TooManySegments,
    /// A buffer of zero bytes.
    ZeroLength,
    /// The chain's buffers add up to 4 GiB or more.
    TooLong,
    /// An indirect table names another indirect table.
    NestedIndirect,
    /// An indirect descriptor also says `NEXT`.
    IndirectWithNext,
    /// An indirect descriptor on a queue whose driver did not accept
    /// `VIRTIO_RING_F_INDIRECT_DESC`.
    IndirectNotNegotiated,
    /// An indirect table of zero bytes, not a whole number of descriptors,
    /// or more than [`MAX_INDIRECT`] of them.
    BadIndirectLength(u32),
    /// A device-readable buffer follows a device-writable one.
    ReadableAfterWritable,
    /// The chain has fewer device-readable bytes than the device needs (a
    /// writable buffer where a readable one is required).
    NeedReadable {
        /// Bytes needed.
        wanted: u64,
        /// Readable bytes the chain has.
        have: u32,
    },
    /// The chain has fewer device-writable bytes than the device needs (a
    /// readable buffer where a writable one is required).
    NeedWritable {
        /// Bytes needed.
        wanted: u64,
        /// Writable bytes the chain has.
        have: u32,
    },
}

impl From<MemError> for QueueError {
    fn from(e: MemError) -> Self {
        Self::OutsideRam {
            addr: e.addr,
            len: e.len,
        }
    }
}

/// One descriptor as read from a table.
#[derive(Clone, Copy, Debug)]
struct Descriptor {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl Descriptor {
    /// Reads the descriptor at `at` (two guest-memory accesses: the
    /// address, then length, flags and next as one little-endian word).
    fn read(mem: &dyn GuestMemory, at: Ipa) -> Result<Self, QueueError> {
        let whole = MemError {
            addr: at,
            len: ring::DESC_SIZE,
        };
        let addr = mem.read_u64(at).map_err(|_| whole)?;
        let second = at.0.checked_add(8).ok_or(whole)?;
        let rest = mem.read_u64(Ipa(second)).map_err(|_| whole)?;
        Ok(Self {
            addr,
            len: rest as u32,
            flags: (rest >> 32) as u16,
            next: (rest >> 48) as u16,
        })
    }

    /// The descriptor in `bytes` (16, as the table holds it).
    fn parse(bytes: &[u8; ring::DESC_SIZE as usize]) -> Self {
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let rest = word(8);
        Self {
            addr: word(0),
            len: rest as u32,
            flags: (rest >> 32) as u16,
            next: (rest >> 48) as u16,
        }
    }

    fn direction(&self) -> Direction {
        if self.flags & ring::DESC_F_WRITE != 0 {
            Direction::Writable
        } else {
            Direction::Readable
        }
    }
}

/// One split virtqueue: its configuration as the driver wrote it through
/// the transport, and the device's progress through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitQueue {
    max_size: u16,
    /// `QueueNum` as written (checked when the queue is made ready).
    size: u32,
    ready: bool,
    desc: Ipa,
    avail: Ipa,
    used: Ipa,
    indirect: bool,
    event_idx: bool,
    next_avail: u16,
    /// The driver's `avail.idx` as last read: while `next_avail` is behind
    /// it, chains are known to be available without reading it again.
    avail_seen: u16,
    next_used: u16,
    /// The `used.idx` last written ([`SplitQueue::add_used_deferred`]
    /// leaves it behind `next_used` until [`SplitQueue::flush_used`]).
    published_used: u16,
    signalled_used: u16,
}

impl SplitQueue {
    /// A queue that does not exist (maximum size 0).
    pub const ABSENT: Self = Self::new(0);

    /// A reset queue of at most `max_size` entries, not ready, its size
    /// register at the maximum (the spec's reset value of `QueueNum` is
    /// unspecified; the maximum is what a driver that skips it expects).
    pub const fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size as u32,
            ready: false,
            desc: Ipa(0),
            avail: Ipa(0),
            used: Ipa(0),
            indirect: false,
            event_idx: false,
            next_avail: 0,
            avail_seen: 0,
            next_used: 0,
            published_used: 0,
            signalled_used: 0,
        }
    }

    /// The device's maximum size (`QueueNumMax`); 0 for a queue that does
    /// not exist.
    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// Whether the driver made the queue ready.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The size in use (valid once ready).
    pub fn size(&self) -> u16 {
        self.size as u16
    }

    /// The next available-ring entry the device will take.
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    /// The next used-ring entry the device will write.
    pub fn next_used(&self) -> u16 {
        self.next_used
    }

    /// The descriptor table, driver area and device area addresses.
    pub fn areas(&self) -> [Ipa; 3] {
        [self.desc, self.avail, self.used]
    }

    /// `QueueNum`.
    pub(crate) fn set_size(&mut self, size: u32) {
        self.size = size;
    }

    /// One 32-bit half of an area's address: `area` 0 descriptor table,
    /// 1 driver area, 2 device area; `high` the upper half.
    pub(crate) fn set_area_half(&mut self, area: usize, high: bool, value: u32) {
        let a = match area {
            0 => &mut self.desc,
            1 => &mut self.avail,
            _ => &mut self.used,
        };
        a.0 = if high {
            (a.0 & 0xffff_ffff) | (u64::from(value) << 32)
        } else {
            (a.0 & !0xffff_ffff) | u64::from(value)
        };
    }

    /// Which ring features the driver accepted.
    pub(crate) fn set_features(&mut self, indirect: bool, event_idx: bool) {
        self.indirect = indirect;
        self.event_idx = event_idx;
    }

    /// `QueueReady = 1`: checks the size and the areas' alignment, and
    /// starts the queue at index 0.
    pub(crate) fn make_ready(&mut self) -> Result<(), QueueError> {
        let size = self.size;
        if size == 0 || size > u32::from(self.max_size) || !size.is_power_of_two() {
            return Err(QueueError::BadSize {
                size,
                max: self.max_size,
            });
        }
        let n = u64::from(size);
        for (at, align, bytes) in [
            (self.desc, ring::DESC_ALIGN, ring::DESC_SIZE * n),
            (self.avail, ring::AVAIL_ALIGN, 6 + 2 * n),
            (self.used, ring::USED_ALIGN, 6 + ring::USED_ELEM_SIZE * n),
        ] {
            if !at.is_aligned(align) || at.checked_add(bytes).is_none() {
                return Err(QueueError::BadArea(at));
            }
        }
        self.ready = true;
        self.next_avail = 0;
        self.avail_seen = 0;
        self.next_used = 0;
        self.published_used = 0;
        self.signalled_used = 0;
        Ok(())
    }

    /// `QueueReady = 0`: the queue stops; its configuration stays.
    pub(crate) fn stop(&mut self) {
        self.ready = false;
    }

    fn live(&self) -> Result<(), QueueError> {
        if self.ready {
            Ok(())
        } else {
            Err(QueueError::NotReady)
        }
    }

    /// `index mod size` (the size is a power of two).
    fn slot(&self, index: u16) -> u64 {
        u64::from(index & (self.size as u16).wrapping_sub(1))
    }

    /// The driver's `avail.idx`, checked against the device's progress.
    fn avail_idx(&self, mem: &dyn GuestMemory) -> Result<u16, QueueError> {
        let idx = mem.read_u16(Ipa(self.avail.0 + 2))?;
        if u32::from(idx.wrapping_sub(self.next_avail)) > self.size {
            return Err(QueueError::AvailIndexJump {
                next: self.next_avail,
                idx,
            });
        }
        Ok(idx)
    }

    /// Whether the driver has made a chain available that the device has
    /// not taken.
    pub fn has_available(&self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        self.live()?;
        Ok(self.avail_idx(mem)? != self.next_avail)
    }

    /// Asks the driver to notify the device at its next available chain
    /// (with `EVENT_IDX`, by publishing `avail_event`; without it the
    /// device never asks for silence, so there is nothing to do), then
    /// looks once more: whether a chain arrived meanwhile. A device that
    /// stops taking chains for another reason than an empty ring (no room
    /// elsewhere) arms the queue it waits on with this.
    pub fn arm(&mut self, mem: &mut dyn GuestMemory) -> Result<bool, QueueError> {
        self.live()?;
        if self.event_idx {
            let at = Ipa(self.used.0 + 4 + ring::USED_ELEM_SIZE * u64::from(self.size));
            mem.write_u16(at, self.next_avail)?;
            mem.fence(Fence::Full);
        }
        self.avail_seen = self.avail_idx(mem)?;
        Ok(self.avail_seen != self.next_avail)
    }

    /// Takes the next available chain, checked whole; `None` when the
    /// driver has made none available. An empty ring is armed
    /// ([`SplitQueue::arm`]), so the driver notifies at its next buffer
    /// and a buffer added meanwhile is not missed.
    pub fn pop(&mut self, mem: &mut dyn GuestMemory) -> Result<Option<Chain>, QueueError> {
        let mut chain = Chain::EMPTY;
        Ok(self.pop_into(mem, &mut chain)?.then_some(chain))
    }

    /// [`SplitQueue::pop`] into `chain` (its old contents forgotten): true
    /// when it took one. On an error, `chain` holds nothing usable.
    pub fn pop_into(
        &mut self,
        mem: &mut dyn GuestMemory,
        chain: &mut Chain,
    ) -> Result<bool, QueueError> {
        self.pop_with(mem, chain, true)
    }

    /// [`SplitQueue::pop`], except that buffers outside RAM do not stop
    /// the queue: the chain comes back with them, for a device that
    /// answers such a request with an error of its own (virtio-blk's
    /// `IOERR`) instead of stopping. The chain's structure is checked as
    /// ever (loops, indices, indirect tables, which must lie in RAM); its
    /// buffers are checked by the device ([`Chain::first_outside`]) before
    /// it touches them, and every access is checked again anyway.
    ///
    /// The chain is filled in place (`chain`, its old contents forgotten;
    /// a chain is 2 KiB): true when it took one. On an error, `chain`
    /// holds nothing usable.
    pub fn pop_keeping_outside(
        &mut self,
        mem: &mut dyn GuestMemory,
        chain: &mut Chain,
    ) -> Result<bool, QueueError> {
        let mut lenient = AnyBuffer(mem);
        self.pop_with(&mut lenient, chain, true)
    }

    /// [`SplitQueue::pop_into`] for a queue whose device takes chains only
    /// when it needs one (a receive queue: a frame that finds no buffer is
    /// dropped, never kept), so the driver's notifies would buy nothing:
    /// an empty ring is not armed but silenced ([`SplitQueue::silence`]).
    pub fn pop_into_unnotified(
        &mut self,
        mem: &mut dyn GuestMemory,
        chain: &mut Chain,
    ) -> Result<bool, QueueError> {
        self.pop_with(mem, chain, false)
    }

    /// Asks the driver not to notify: with `EVENT_IDX`, `avail_event` half
    /// the index space ahead (a driver crosses it only after 32,768 more
    /// chains, and the next empty ring moves it on again); without it, the
    /// used ring's `VRING_USED_F_NO_NOTIFY`.
    pub fn silence(&mut self, mem: &mut dyn GuestMemory) -> Result<(), QueueError> {
        self.live()?;
        if self.event_idx {
            let at = Ipa(self.used.0 + 4 + ring::USED_ELEM_SIZE * u64::from(self.size));
            mem.write_u16(at, self.next_avail.wrapping_add(0x8000))
        } else {
            mem.write_u16(self.used, ring::USED_F_NO_NOTIFY)
        }
        .map_err(QueueError::from)
    }

    fn pop_with(
        &mut self,
        mem: &mut dyn GuestMemory,
        chain: &mut Chain,
        arm: bool,
    ) -> Result<bool, QueueError> {
        self.live()?;
        // Chains up to `avail_seen` were ordered by the fence that followed
        // its read; only past it is the index read (and fenced) again.
        if self.next_avail == self.avail_seen {
            self.avail_seen = self.avail_idx(mem)?;
            if self.avail_seen == self.next_avail {
                if !arm {
                    self.silence(mem)?;
                    return Ok(false);
                }
                if !self.arm(mem)? {
                    return Ok(false);
                }
            }
            mem.fence(Fence::Acquire);
        }
        let at = Ipa(self.avail.0 + 4 + 2 * self.slot(self.next_avail));
        let head = mem.read_u16(at)?;
        self.walk(mem, head, chain)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(true)
    }

    /// Follows the chain at `head` through the descriptor table (and at
    /// most one indirect table at its end) into `chain`.
    fn walk(&self, mem: &dyn GuestMemory, head: u16, chain: &mut Chain) -> Result<(), QueueError> {
        chain.reset(head);
        let mut index = u32::from(head);
        // A chain longer than the table must revisit a descriptor.
        for _ in 0..self.size {
            if index >= self.size {
                return Err(QueueError::IndexOutOfRange {
                    index,
                    size: self.size,
                });
            }
            let d = Descriptor::read(mem, Ipa(self.desc.0 + ring::DESC_SIZE * u64::from(index)))?;
            if d.flags & ring::DESC_F_INDIRECT != 0 {
                if !self.indirect {
                    return Err(QueueError::IndirectNotNegotiated);
                }
                if d.flags & ring::DESC_F_NEXT != 0 {
                    return Err(QueueError::IndirectWithNext);
                }
                return walk_indirect(mem, &d, chain);
            }
            chain.push(mem, Ipa(d.addr), d.len, d.direction())?;
            if d.flags & ring::DESC_F_NEXT == 0 {
                return Ok(());
            }
            index = u32::from(d.next);
        }
        Err(QueueError::ChainLoop)
    }

    /// Takes back what was taken and returned since [`SplitQueue::next_avail`]
    /// was `avail` and [`SplitQueue::next_used`] was `used`, before the
    /// used index is published: a device that took chains for a frame it
    /// then cannot finish (a mergeable receive frame that ran out of
    /// buffers) leaves the ring as it found it, and the driver never sees
    /// those chains used. Refused (`false`, nothing changed) if the used
    /// index was published since, or either index would move forward.
    pub fn rewind(&mut self, avail: u16, used: u16) -> bool {
        let taken = self.next_avail.wrapping_sub(avail);
        let returned = self.next_used.wrapping_sub(used);
        let unpublished = self.next_used.wrapping_sub(self.published_used);
        if u32::from(taken) > self.size || returned > unpublished {
            return false;
        }
        self.next_avail = avail;
        self.next_used = used;
        true
    }

    /// Returns the chain headed by `head` to the driver, `len` bytes of its
    /// writable buffers written, and publishes the new used index.
    pub fn add_used(
        &mut self,
        mem: &mut dyn GuestMemory,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        self.add_used_deferred(mem, head, len)?;
        self.flush_used(mem)
    }

    /// [`SplitQueue::add_used`] without publishing the used index: a device
    /// returning several chains in one go publishes once, with
    /// [`SplitQueue::flush_used`] (the transport does before it decides on
    /// the interrupt, [`crate::Transport::with_device`]).
    pub fn add_used_deferred(
        &mut self,
        mem: &mut dyn GuestMemory,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        self.live()?;
        if u32::from(head) >= self.size {
            return Err(QueueError::IndexOutOfRange {
                index: u32::from(head),
                size: self.size,
            });
        }
        let at = Ipa(self.used.0 + 4 + ring::USED_ELEM_SIZE * self.slot(self.next_used));
        // The element (`id`, then `len`, both little-endian) as one word.
        mem.write_u64(at, u64::from(head) | u64::from(len) << 32)?;
        self.next_used = self.next_used.wrapping_add(1);
        Ok(())
    }

    /// Publishes the used index, if chains were returned since it was last
    /// written: the elements first, then the index (a release barrier
    /// between).
    pub fn flush_used(&mut self, mem: &mut dyn GuestMemory) -> Result<(), QueueError> {
        if self.published_used == self.next_used {
            return Ok(());
        }
        self.live()?;
        mem.fence(Fence::Release);
        mem.write_u16(Ipa(self.used.0 + 2), self.next_used)?;
        self.published_used = self.next_used;
        Ok(())
    }

    /// Whether the used buffers added since the last call should be
    /// signalled: with `EVENT_IDX`, if the used index crossed the driver's
    /// `used_event`; otherwise unless the driver set
    /// `VRING_AVAIL_F_NO_INTERRUPT`. `false` when nothing was added.
    pub fn needs_interrupt(&mut self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        self.live()?;
        let (old, new) = (self.signalled_used, self.next_used);
        if old == new {
            return Ok(false);
        }
        mem.fence(Fence::Full);
        let wanted = if self.event_idx {
            let at = Ipa(self.avail.0 + 4 + 2 * u64::from(self.size));
            let event = mem.read_u16(at)?;
            // vring_need_event: did the index step over `event`?
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            mem.read_u16(self.avail)? & ring::AVAIL_F_NO_INTERRUPT == 0
        };
        self.signalled_used = new;
        Ok(wanted)
    }

    /// Checks that the three areas lie wholly inside RAM.
    pub fn check_areas(&self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        let n = u64::from(self.size);
        for (at, bytes) in [
            (self.desc, ring::DESC_SIZE * n),
            (self.avail, 6 + 2 * n),
            (self.used, 6 + ring::USED_ELEM_SIZE * n),
        ] {
            if !mem.contains(at, bytes) {
                return Err(QueueError::OutsideRam {
                    addr: at,
                    len: bytes,
                });
            }
        }
        Ok(())
    }
}

/// A memory that lets a chain hold buffers outside RAM
/// ([`SplitQueue::pop_keeping_outside`]): `contains` says yes to every
/// range; reads and writes are the real memory's, checked.
struct AnyBuffer<'a>(&'a mut dyn GuestMemory);

impl GuestMemory for AnyBuffer<'_> {
    fn read(&self, addr: Ipa, buf: &mut [u8]) -> Result<(), MemError> {
        self.0.read(addr, buf)
    }

    fn write(&mut self, addr: Ipa, data: &[u8]) -> Result<(), MemError> {
        self.0.write(addr, data)
    }

    fn contains(&self, _addr: Ipa, _len: u64) -> bool {
        true
    }

    fn fence(&self, order: Fence) {
        self.0.fence(order);
    }
}

/// Descriptors of an indirect table read in one guest-memory access
/// ([`walk_indirect`]): 512 bytes, the length from which the hypervisor's
/// copies go through the SIMD registers.
const INDIRECT_WINDOW: u32 = 32;

/// Tables of at most this many descriptors (a disk request's header, one
/// buffer and its status; a small packet) are walked with a window of
/// their size: the window is cleared before each walk, and clearing 512
/// bytes for three descriptors cost more than reading them.
const SMALL_TABLE: u32 = 4;

/// Appends the buffers of the indirect table `d` names to `chain`.
fn walk_indirect(
    mem: &dyn GuestMemory,
    d: &Descriptor,
    chain: &mut Chain,
) -> Result<(), QueueError> {
    let entries = d.len / ring::DESC_SIZE as u32;
    if d.len == 0 || !d.len.is_multiple_of(ring::DESC_SIZE as u32) || entries > MAX_INDIRECT {
        return Err(QueueError::BadIndirectLength(d.len));
    }
    let table = Ipa(d.addr);
    if !mem.contains(table, u64::from(d.len)) {
        return Err(QueueError::OutsideRam {
            addr: table,
            len: u64::from(d.len),
        });
    }
    const DESC: usize = ring::DESC_SIZE as usize;
    if entries <= SMALL_TABLE {
        walk_table::<{ SMALL_TABLE as usize * DESC }>(mem, table, entries, chain)
    } else {
        walk_table::<{ INDIRECT_WINDOW as usize * DESC }>(mem, table, entries, chain)
    }
}

/// [`walk_indirect`]'s walk of the `entries` descriptors at `table`
/// (checked), through a window of `WINDOW` bytes.
fn walk_table<const WINDOW: usize>(
    mem: &dyn GuestMemory,
    table: Ipa,
    entries: u32,
    chain: &mut Chain,
) -> Result<(), QueueError> {
    let per_window = (WINDOW / ring::DESC_SIZE as usize) as u32;
    // The table is read a window of descriptors at a time (one guest
    // memory access per window, not two per descriptor); a `next` that
    // leaves the window reads the window that holds it. Each descriptor is
    // parsed from the copy once, whatever the driver writes meanwhile.
    let mut window = [0u8; WINDOW];
    let mut first: Option<u32> = None;
    let mut index = 0u32;
    for _ in 0..entries {
        let start = match first {
            Some(f) if (f..f + per_window).contains(&index) => f,
            _ => {
                let f = index - index % per_window;
                let bytes = (entries - f).min(per_window) as usize * ring::DESC_SIZE as usize;
                let at = Ipa(table.0 + ring::DESC_SIZE * u64::from(f));
                mem.read(at, &mut window[..bytes])?;
                first = Some(f);
                f
            }
        };
        let slot = (index - start) as usize * ring::DESC_SIZE as usize;
        let e = Descriptor::parse(
            window[slot..slot + ring::DESC_SIZE as usize]
                .try_into()
                .expect("a whole descriptor of the window"),
        );
        if e.flags & ring::DESC_F_INDIRECT != 0 {
            return Err(QueueError::NestedIndirect);
        }
        chain.push(mem, Ipa(e.addr), e.len, e.direction())?;
        if e.flags & ring::DESC_F_NEXT == 0 {
            return Ok(());
        }
        index = u32::from(e.next);
        if index >= entries {
            return Err(QueueError::IndexOutOfRange {
                index,
                size: entries,
            });
        }
    }
    Err(QueueError::ChainLoop)
}
