//! The virtio-block device (virtio 1.2 §5.2) as a frontend whose storage
//! lives elsewhere: the device parses and checks the driver's requests and
//! keeps them in flight; the glue carries each to the backend (issue 12:
//! a daemon in the service VM), moves its data with
//! [`BlkDevice::read_payload`] and [`BlkDevice::write_payload`], and
//! completes it with [`BlkDevice::complete`]. Several requests are in
//! flight at once (up to [`MAX_IN_FLIGHT`]); the rest wait in the ring,
//! taken as slots free up ([`BlkDevice::take_requests`]).
//!
//! Offered: `VIRTIO_BLK_F_SEG_MAX` (a request's data in at most
//! [`SEG_MAX`] buffers, what a checked chain holds besides the header and
//! the status), `VIRTIO_BLK_F_BLK_SIZE` (512), `VIRTIO_BLK_F_FLUSH`, and
//! `VIRTIO_BLK_F_RO` for a read-only disk. One request queue.
//!
//! Requests (§5.2.6): a 16-byte device-readable header (`type`, reserved,
//! `sector`), the data (device-readable for a write, device-writable for
//! a read or `GET_ID`), and a one-byte device-writable status, last. What
//! the device answers itself, at once:
//! - an unknown type: `VIRTIO_BLK_S_UNSUPP`;
//! - `GET_ID`: the disk's serial (up to 20 bytes, NUL-padded), `OK`;
//! - a read or write whose length is zero or not a multiple of 512, or
//!   that runs past the capacity, a write to a read-only disk, or a
//!   request whose buffers do not have the shape its type needs (data on
//!   the wrong side): `VIRTIO_BLK_S_IOERR`, without reaching the backend.
//!
//! A request with a buffer outside the VM's RAM fails alone (`IOERR` in
//! its status byte, nothing read or written elsewhere), when that status
//! byte is in RAM. A chain too short for a header and a status byte, or
//! whose status byte is outside RAM, is a broken driver: the device stops
//! (`DEVICE_NEEDS_RESET`), as for every malformed ring.
//!
//! Every request handed out carries a tag naming its slot and the slot's
//! use: a completion for a request the driver has meanwhile reset away
//! (its slot empty, or reused) is ignored, so a backend that answers late
//! can never write into a new driver's buffers.

use stratum_core::addr::Ipa;

use crate::chain::{Chain, MAX_SEGMENTS};
use crate::device::{Queues, VirtioDevice};
use crate::mem::GuestMemory;
use crate::queue::QueueError;

/// The request queue.
pub const QUEUE: u16 = 0;
/// Entries of the request queue at most.
pub const QUEUE_SIZE: u16 = 128;
/// Bytes per sector (the unit of `sector` and `capacity`, always 512).
pub const SECTOR: u64 = 512;
/// Requests in flight to the backend at once, at most.
pub const MAX_IN_FLIGHT: usize = 16;
/// Data buffers per request at most: a chain's segments less the header
/// and the status.
pub const SEG_MAX: u32 = MAX_SEGMENTS as u32 - 2;
/// Bytes of the serial `GET_ID` returns.
pub const ID_BYTES: usize = 20;
/// Bytes of the request header.
const HEADER: u32 = 16;
/// Where a write's data starts in its chain's readable bytes (after the
/// request header).
pub const DATA_OFFSET: u32 = HEADER;

/// Feature bits (§5.2.3).
pub mod feature {
    /// `seg_max` in the configuration is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The disk is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` in the configuration is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// The device takes `FLUSH` requests.
    pub const FLUSH: u64 = 1 << 9;
}

/// Request types (§5.2.6).
pub mod request {
    /// Read sectors.
    pub const IN: u32 = 0;
    /// Write sectors.
    pub const OUT: u32 = 1;
    /// Make every completed write durable.
    pub const FLUSH: u32 = 4;
    /// The disk's serial.
    pub const GET_ID: u32 = 8;
}

/// Status bytes (§5.2.6).
pub mod status {
    /// Done.
    pub const OK: u8 = 0;
    /// The request failed.
    pub const IOERR: u8 = 1;
    /// The request type is not supported.
    pub const UNSUPP: u8 = 2;
}

/// Bytes of the configuration space read: `capacity` (u64), `size_max`
/// (u32, not offered), `seg_max` (u32), `geometry` (4 bytes, not offered),
/// `blk_size` (u32).
const CONFIG_LEN: usize = 24;

/// What a request asks of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `bytes` from `sector` into the driver's buffers.
    Read,
    /// Write `bytes` of the driver's buffers at `sector`.
    Write,
    /// Make every write completed so far durable.
    Flush,
}

/// A request for the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Names the request in [`BlkDevice::complete`] and the payload calls.
    pub tag: u32,
    /// What to do.
    pub op: Op,
    /// First sector (0 for a flush).
    pub sector: u64,
    /// Bytes of data (a multiple of [`SECTOR`]; 0 for a flush).
    pub bytes: u32,
}

/// How a request ended at the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (for a read, its data written with
    /// [`BlkDevice::write_payload`] first).
    Done,
    /// It failed (an I/O error, or the backend is gone).
    Failed,
}

/// One slot for a request in flight. A slot keeps its chain when it is
/// freed: the next request's is walked into it in place
/// ([`crate::queue::SplitQueue::pop_keeping_outside`]), never moved (2 KiB).
#[derive(Clone, Debug)]
struct InFlight {
    chain: Chain,
    request: Request,
    /// Handed to the glue by [`BlkDevice::next_request`].
    submitted: bool,
    /// A request is in flight in this slot.
    used: bool,
}

impl InFlight {
    /// A slot with no request.
    const FREE: Self = Self {
        chain: Chain::EMPTY,
        request: Request {
            tag: 0,
            op: Op::Read,
            sector: 0,
            bytes: 0,
        },
        submitted: false,
        used: false,
    };
}

/// One VM's disk, as its driver sees it.
#[derive(Clone, Debug)]
pub struct BlkDevice {
    capacity: u64,
    readonly: bool,
    serial: [u8; ID_BYTES],
    slots: [InFlight; MAX_IN_FLIGHT],
    /// Bumped at every use of a slot and every reset: the high bits of a
    /// tag.
    uses: u32,
    /// The driver reset the device since [`BlkDevice::take_reset`] last
    /// looked.
    was_reset: bool,
}

impl BlkDevice {
    /// A disk of `capacity` sectors, read-only or not, whose `GET_ID`
    /// answers `serial` (cut to 20 bytes).
    pub fn new(capacity: u64, readonly: bool, serial: &[u8]) -> Self {
        let mut id = [0u8; ID_BYTES];
        let n = serial.len().min(ID_BYTES);
        id[..n].copy_from_slice(&serial[..n]);
        Self {
            capacity,
            readonly,
            serial: id,
            slots: [const { InFlight::FREE }; MAX_IN_FLIGHT],
            uses: 0,
            was_reset: false,
        }
    }

    /// Makes this a fresh disk of `capacity` sectors, read-only or not,
    /// answering `serial` (in place: the device is 4 KiB; what
    /// [`BlkDevice::new`] would give, with every old tag stale).
    pub fn configure(&mut self, capacity: u64, readonly: bool, serial: &[u8]) {
        let mut id = [0u8; ID_BYTES];
        let n = serial.len().min(ID_BYTES);
        id[..n].copy_from_slice(&serial[..n]);
        self.capacity = capacity;
        self.readonly = readonly;
        self.serial = id;
        self.reset();
        self.was_reset = false;
    }

    /// Whether the driver reset the device since the last call: the glue
    /// then tells the disk link ([`crate::disklink::DiskLink::disk_reset`]),
    /// which drops the requests it holds unsent, whose buffers now belong
    /// to the new driver.
    pub fn take_reset(&mut self) -> bool {
        core::mem::take(&mut self.was_reset)
    }

    /// Its capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Requests in flight (handed out or waiting to be).
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|f| f.used).count()
    }

    /// Whether a request waits to be handed to the glue.
    pub fn has_unsubmitted(&self) -> bool {
        self.slots.iter().any(|f| f.used && !f.submitted)
    }

    /// The next request not yet handed to the glue, now handed.
    pub fn next_request(&mut self) -> Option<Request> {
        let f = self.slots.iter_mut().find(|f| f.used && !f.submitted)?;
        f.submitted = true;
        Some(f.request)
    }

    /// The slot of a handed-out request `tag`, if it is still in flight.
    fn slot(&self, tag: u32) -> Option<&InFlight> {
        let f = self.slots.get((tag & 0xff) as usize)?;
        (f.used && f.request.tag == tag && f.submitted).then_some(f)
    }

    /// The in-flight `op` request `tag`, if `[offset, offset + len)` lies
    /// inside its data.
    fn payload(&self, tag: u32, op: Op, offset: u32, len: usize) -> Option<&InFlight> {
        let f = self.slot(tag).filter(|f| f.request.op == op)?;
        let end = u64::from(offset) + len as u64;
        (end <= u64::from(f.request.bytes)).then_some(f)
    }

    /// Copies bytes `[offset, offset + buf.len())` of write request `tag`'s
    /// data into `buf`. `None` if `tag` is not a write in flight or the
    /// range is past its data.
    pub fn read_payload(
        &self,
        tag: u32,
        mem: &dyn GuestMemory,
        offset: u32,
        buf: &mut [u8],
    ) -> Option<()> {
        let f = self.payload(tag, Op::Write, offset, buf.len())?;
        f.chain.read(mem, HEADER + offset, buf).ok()
    }

    /// Copies `data` into read request `tag`'s buffers from `offset`.
    /// `None` if `tag` is not a read in flight or the range is past its
    /// data.
    pub fn write_payload(
        &self,
        tag: u32,
        mem: &mut dyn GuestMemory,
        offset: u32,
        data: &[u8],
    ) -> Option<()> {
        let f = self.payload(tag, Op::Read, offset, data.len())?;
        f.chain.write(mem, offset, data).ok()
    }

    /// The chain of handed-out write request `tag`, whose readable bytes
    /// from [`DATA_OFFSET`] are its data: the glue copies them straight to
    /// the backend's buffers ([`crate::chain::copy_between`]). `None` if
    /// `tag` is not a write in flight.
    pub fn write_chain(&self, tag: u32) -> Option<&Chain> {
        let f = self.slot(tag).filter(|f| f.request.op == Op::Write)?;
        Some(&f.chain)
    }

    /// Copies `len` bytes of `src`'s readable stream from `src_offset` (in
    /// another VM's memory `src_mem`) into read request `tag`'s buffers
    /// from `offset`: one copy, no buffer. `None` if `tag` is not a read
    /// in flight, the range is past its data, or a copy failed.
    #[expect(clippy::too_many_arguments, reason = "the two ends of one copy")]
    pub fn fill(
        &self,
        tag: u32,
        mem: &mut dyn GuestMemory,
        offset: u32,
        src: &Chain,
        src_mem: &dyn GuestMemory,
        src_offset: u32,
        len: u32,
    ) -> Option<()> {
        let f = self.payload(tag, Op::Read, offset, len as usize)?;
        crate::chain::copy_between(src, src_mem, src_offset, &f.chain, mem, offset, len).ok()
    }

    /// Ends request `tag` with `outcome`: writes its status, returns its
    /// chain to the driver and takes more requests from the ring into the
    /// slot it frees. `Ok(false)` when `tag` is not in flight (a late
    /// answer after a reset, or a second one): nothing happens.
    pub fn complete(
        &mut self,
        tag: u32,
        outcome: Outcome,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        if self.slot(tag).is_none() {
            return Ok(false);
        }
        let f = &mut self.slots[(tag & 0xff) as usize];
        f.used = false;
        let (code, data) = match (outcome, f.request.op) {
            (Outcome::Done, Op::Read) => (status::OK, f.request.bytes),
            (Outcome::Done, _) => (status::OK, 0),
            (Outcome::Failed, _) => (status::IOERR, 0),
        };
        let q = queues.get(QUEUE)?;
        finish(q, mem, &f.chain, code, data)?;
        self.take_requests(queues, mem)?;
        Ok(true)
    }

    /// Fails every request in flight (`IOERR`): the backend is gone.
    /// Requests still in the ring stay there until
    /// [`BlkDevice::take_requests`] runs again.
    pub fn fail_all(
        &mut self,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<usize, QueueError> {
        let mut n = 0;
        for f in self.slots.iter_mut().filter(|f| f.used) {
            f.used = false;
            finish(queues.get(QUEUE)?, mem, &f.chain, status::IOERR, 0)?;
            n += 1;
        }
        Ok(n)
    }

    /// Takes requests from the ring while a slot is free: answers at once
    /// what the device can (see the module docs), keeps the rest in
    /// flight for [`BlkDevice::next_request`].
    pub fn take_requests(
        &mut self,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        // A queue the driver has not made ready holds nothing.
        let Ok(q) = queues.get(QUEUE) else {
            return Ok(());
        };
        while let Some(free) = self.slots.iter().position(|f| !f.used) {
            if !q.pop_keeping_outside(mem, &mut self.slots[free].chain)? {
                return Ok(());
            }
            let chain = &self.slots[free].chain;
            if let Some(bad) = chain.first_outside(mem) {
                // A buffer outside the VM's RAM: that request fails alone,
                // when its status byte is in RAM to say so.
                let status = chain
                    .writable()
                    .last()
                    .map(|s| Ipa(s.addr.0 + u64::from(s.len) - 1))
                    .filter(|&at| mem.contains(at, 1));
                let Some(at) = status else {
                    return Err(QueueError::OutsideRam {
                        addr: bad.addr,
                        len: u64::from(bad.len),
                    });
                };
                mem.write(at, &[status::IOERR])?;
                q.add_used_deferred(mem, chain.head(), 1)?;
                continue;
            }
            chain.require(HEADER, 1)?;
            let mut header = [0u8; HEADER as usize];
            chain.read(mem, 0, &mut header)?;
            let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let mut sector = [0u8; 8];
            sector.copy_from_slice(&header[8..16]);
            let sector = u64::from_le_bytes(sector);
            let (op, sector, bytes) = match self.check(chain, kind, sector) {
                Check::Answer(code, data) => {
                    finish(q, mem, chain, code, data)?;
                    continue;
                }
                Check::Serial => {
                    let n = (chain.writable_len() - 1).min(ID_BYTES as u32);
                    chain.write(mem, 0, &self.serial[..n as usize])?;
                    finish(q, mem, chain, status::OK, n)?;
                    continue;
                }
                Check::Backend { op, sector, bytes } => (op, sector, bytes),
            };
            self.uses = self.uses.wrapping_add(1);
            let tag = (self.uses << 8) | free as u32;
            let slot = &mut self.slots[free];
            slot.request = Request {
                tag,
                op,
                sector,
                bytes,
            };
            slot.submitted = false;
            slot.used = true;
        }
        Ok(())
    }

    /// What to do with a request of type `kind` at `sector` in `chain`.
    fn check(&self, chain: &Chain, kind: u32, sector: u64) -> Check {
        let extra_readable = chain.readable_len() - HEADER;
        let writable = chain.writable_len();
        let ioerr = Check::Answer(status::IOERR, 0);
        match kind {
            request::IN | request::OUT => {
                let (op, bytes) = if kind == request::IN {
                    if extra_readable != 0 {
                        return ioerr;
                    }
                    (Op::Read, writable - 1)
                } else {
                    if writable != 1 {
                        return ioerr;
                    }
                    (Op::Write, extra_readable)
                };
                let fits = sector
                    .checked_add(u64::from(bytes) / SECTOR)
                    .is_some_and(|end| end <= self.capacity);
                if bytes == 0 || u64::from(bytes) % SECTOR != 0 || !fits {
                    return ioerr;
                }
                if op == Op::Write && self.readonly {
                    return ioerr;
                }
                Check::Backend { op, sector, bytes }
            }
            request::FLUSH if extra_readable == 0 && writable == 1 => Check::Backend {
                op: Op::Flush,
                sector: 0,
                bytes: 0,
            },
            request::FLUSH => ioerr,
            request::GET_ID if extra_readable == 0 && writable > 1 => Check::Serial,
            request::GET_ID => ioerr,
            _ => Check::Answer(status::UNSUPP, 0),
        }
    }
}

/// What the device makes of a request.
enum Check {
    /// Answered at once: the status, and data bytes written before it.
    Answer(u8, u32),
    /// `GET_ID`: the serial, then `OK`.
    Serial,
    /// For the backend: what to do, where, how many bytes of data.
    Backend {
        /// The operation.
        op: Op,
        /// Its first sector (0 for a flush).
        sector: u64,
        /// Bytes of data (0 for a flush).
        bytes: u32,
    },
}

/// Writes `code` as `chain`'s status (its last writable byte, after
/// `data` bytes of data) and returns the chain.
fn finish(
    q: &mut crate::queue::SplitQueue,
    mem: &mut dyn GuestMemory,
    chain: &Chain,
    code: u8,
    data: u32,
) -> Result<(), QueueError> {
    let at = chain.writable_len() - 1;
    chain.write(mem, at, &[code])?;
    q.add_used_deferred(mem, chain.head(), data + 1)
}

impl VirtioDevice for BlkDevice {
    fn device_id(&self) -> u32 {
        crate::spec::device_id::BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.readonly { feature::RO } else { 0 };
        feature::SEG_MAX | feature::BLK_SIZE | feature::FLUSH | ro
    }

    fn queue_count(&self) -> u16 {
        1
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        if queue == QUEUE { QUEUE_SIZE } else { 0 }
    }

    fn config_len(&self) -> usize {
        CONFIG_LEN
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let mut c = [0u8; CONFIG_LEN];
        c[..8].copy_from_slice(&self.capacity.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = c.get(offset + i).copied().unwrap_or(0);
        }
    }

    fn notify(
        &mut self,
        queue: u16,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        match queue {
            QUEUE => self.take_requests(queues, mem),
            other => Err(QueueError::NoSuchQueue(other)),
        }
    }

    fn reset(&mut self) {
        // The chains belong to the old driver: forget them, and make every
        // tag handed out so far stale.
        for f in &mut self.slots {
            f.used = false;
        }
        self.uses = self.uses.wrapping_add(1 << 16);
        self.was_reset = true;
    }
}
