//! The hypervisor's end of the disk link: the frontends' virtio-blk
//! requests ([`crate::blk`]) carried to the disk daemon in the service VM
//! over its vsock device, as the host (CID 2, port
//! [`blkproto::PORT`]), and the daemon's answers carried back
//! ([`stratum_abi::blkproto`] is the stream's format).
//!
//! The service VM's vsock device belongs to this link alone: the router
//! ([`crate::router`]) has no port for it, so every packet its driver
//! sends comes here, and only packets this link makes reach it.
//!
//! # Data path
//! Every byte crosses once in the hypervisor, with no buffer between
//! (and each disk holds at most its share of the [`MAX_PENDING`] slots, so
//! one busy disk never keeps another's requests waiting). A request is
//! **placed** when the daemon registered buffers (its hello's regions:
//! huge pages of its own, which the link checks are the service VM's RAM
//! and overlap no other) and enough of them is free: the placed space is
//! cut into units of [`PLACE_UNIT`], and a request takes the first run of
//! free units in one region that holds its data, until it is answered.
//! Else (no registration, a full placed space, a flush) it is **inline**:
//! - a placed write's data goes from the frontend's request buffers
//!   straight into its place in the service VM's RAM
//!   ([`crate::chain::copy_between`]) before its 24-byte request is sent; an
//!   inline write's goes into the service VM's receive buffers after its
//!   request. Either way it is read from the frontend's RAM without its
//!   lock, as the switch reads a sender's frame (its chain was copied at
//!   submission);
//! - a placed read's data goes from its place, once the daemon answered
//!   `OK`, into the frontend's buffers; an inline read's from the service
//!   VM's transmit buffer, held (not returned) until the copy is done.
//!   Either way the copy is under the frontend's lock and through
//!   [`BlkDevice::fill`], which checks that the request is still the
//!   driver's: a frontend that reset its device meanwhile gets nothing.
//!
//! Why places: inline data reaches the daemon through the service VM's
//! vsock driver in packets of 4 KiB, each an interrupt's share, a socket
//! buffer and a copy in the service VM; placed data is copied once, here,
//! and the daemon hands its place to the block device as it is. The
//! service VM still never maps a frontend's memory: the link writes only
//! into the service VM's own RAM, at addresses it checked against it.
//!
//! A place is reused only after the daemon answered the request that
//! held it, or after the connection ended and the daemon said hello again
//! (it ends a session only when its requests are done,
//! [`stratum_abi::blkproto`]); each connection lays the units out anew
//! from its hello.
//!
//! # Connection and failure
//! The daemon connects (`REQUEST` to CID 2, port 5200); a second
//! `REQUEST` replaces the first connection. Until a connection is up and
//! the daemon's hello read, requests wait (the daemon is starting). When
//! the connection ends (`RST`, `SHUTDOWN`, the service VM's device reset,
//! a violation of the protocol), every request already sent, wholly or in
//! part, fails with `IOERR` at its frontend, and requests not yet sent
//! wait for the next connection. When the service VM is gone for good
//! ([`DiskLink::set_gone`]), every request fails at once.
//!
//! # Flow control
//! What the link sends respects the daemon's credit (`buf_alloc` less
//! the bytes in flight, §5.10.6.3) and its posted receive buffers; it
//! packs as many requests into one packet as fit. It gives the daemon
//! [`BUF_ALLOC`] bytes of credit: it consumes each transmit buffer as it
//! parses it, and reports what it consumed in every packet it sends
//! (and in a `CREDIT_UPDATE` when a quarter of the window was consumed
//! with nothing else to send). The window is the smaller of
//! [`BUF_ALLOC`] and the daemon's own `buf_alloc`: Linux caps what a
//! socket sends unconsumed at its own buffer size too (256 KiB by
//! default), so an update due only after a quarter of [`BUF_ALLOC`]
//! would leave its sender waiting for one that never comes.
//!
//! # Locks (for the glue)
//! The link is one value behind one lock. It reaches the service VM and
//! each frontend through [`DiskPorts`], one VM lock at a time, never two.

use stratum_abi::blkproto::{self, Hello, INLINE, Region, Reply};
use stratum_core::addr::Ipa;

use crate::blk::{BlkDevice, DATA_OFFSET, Op, Outcome};
use crate::chain::{Chain, Direction, copy_between};
use crate::device::Queues;
use crate::mem::GuestMemory;
use crate::queue::QueueError;
use crate::transport::Transport;
use crate::vsock::{self, HDR_LEN, Header, Op as VOp, TYPE_STREAM, VsockDevice};

/// Requests handed to the link at once (across all disks).
pub const MAX_PENDING: usize = blkproto::MAX_IN_FLIGHT;
const _: () = assert!(MAX_PENDING <= 64, "one bit per slot in a u64");
/// [`DiskLink::occupied`] with every slot busy.
const ALL_SLOTS: u64 = if MAX_PENDING == 64 {
    u64::MAX
} else {
    (1 << MAX_PENDING) - 1
};

/// The indices of `mask`'s set bits, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        (mask != 0).then(|| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            i
        })
    })
}
/// The credit the link gives the daemon (bytes it may send unconsumed).
pub const BUF_ALLOC: u32 = 4 << 20;
/// Disks at most.
pub const MAX_DISKS: usize = stratum_abi::bundle::MAX_DISKS as usize;
/// Steps (packets taken or copies made) per [`DiskLink::service_notified`]
/// call at most; the glue calls again when [`Report::more`] says so.
pub const BUDGET: usize = 256;
/// Control packets waiting for the service VM's receive buffers at most.
const CONTROL: usize = 8;
/// The host's CID as the vsock header carries it.
const HOST: u64 = blkproto::HOST_CID as u64;
/// Bytes of one unit of the placed space: a placed request takes as many
/// whole units as its data needs, contiguous and in one region.
pub const PLACE_UNIT: u32 = 128 << 10;
const _: () = assert!((PLACE_UNIT as u64).is_multiple_of(blkproto::PLACE_ALIGN));
/// Units of the placed space at most (16 MiB); the rest of a larger
/// registration is not used.
pub const MAX_UNITS: usize = 128;
/// Registered buffers at most.
const MAX_REGIONS: usize = blkproto::MAX_REGIONS as usize;
const NO_REGION: Region = Region { addr: 0, len: 0 };

/// What the link runs on the service VM: its vsock transport, its memory,
/// and the frontends' RAM to read.
pub type ServiceFn<'a> =
    dyn FnMut(&mut Transport<VsockDevice>, &mut dyn GuestMemory, &dyn FrontendRam) + 'a;
/// What the link runs on a frontend: its disk's transport, its memory, and
/// the service VM's RAM to read (a transmit buffer the link holds, or a
/// placed read's place).
pub type DiskFn<'a> =
    dyn FnMut(&mut Transport<BlkDevice>, &mut dyn GuestMemory, &dyn GuestMemory) + 'a;

/// How the link reaches the VMs: the glue's side.
pub trait DiskPorts {
    /// Runs `f` on the service VM's vsock transport with its memory,
    /// holding its lock; `frontends` reads any frontend's RAM (no lock).
    /// `false`, without running it, if the service VM cannot be reached.
    fn with_service(&mut self, f: &mut ServiceFn<'_>) -> bool;

    /// Runs `f` on disk `disk`'s transport with its VM `vm`'s memory
    /// (the link's [`DiskLink::add_disk`] says which), holding that VM's
    /// lock; `service` reads the service VM's RAM (no lock). `false`,
    /// without running it, if that VM cannot be reached.
    fn with_disk(&mut self, vm: usize, disk: usize, f: &mut DiskFn<'_>) -> bool;
}

/// Reads a frontend's RAM without its lock.
pub trait FrontendRam {
    /// Runs `f` on VM `vm`'s RAM; `false` if it has none.
    fn with_ram(&self, vm: usize, f: &mut dyn FnMut(&dyn GuestMemory)) -> bool;
}

/// What the link counted; saturating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Requests sent to the daemon.
    pub sent: u64,
    /// Requests the daemon answered `OK`.
    pub ok: u64,
    /// Requests that failed (the daemon's `IOERR`, or the link down).
    pub failed: u64,
    /// Connections accepted.
    pub connects: u64,
    /// Connections ended by a violation of the protocol.
    pub violations: u64,
    /// Packets dropped: malformed, from another CID, or for no connection.
    pub dropped: u64,
}

/// A change of the link the glue reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The daemon said hello: it serves these disks (bit *n*: disk *n*).
    Up {
        /// The disks served.
        disks: u32,
    },
    /// The connection ended, and why; `failed` requests failed with it.
    Down {
        /// Why.
        reason: &'static str,
        /// Requests failed.
        failed: usize,
    },
}

/// What one call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// More is left than the call's budget allowed: call again.
    pub more: bool,
}

/// A request handed to the link.
#[derive(Clone, Debug)]
struct Pending {
    /// Its id on the wire: slot | uses << 8.
    id: u32,
    disk: u16,
    /// The frontend device's tag.
    tag: u32,
    op: Op,
    sector: u64,
    bytes: u32,
    /// A write's chain, copied when handed over.
    chain: Option<Chain>,
    /// Bytes of its message (request and data) sent.
    sent: u32,
    /// Handed over in this order.
    seq: u32,
    /// Bytes of a read's data received.
    got: u32,
    /// Its place (decided when its sending starts), or [`INLINE`]; its
    /// first unit and units (0: none), whose address the link's unit
    /// table holds.
    place: u32,
    first_unit: u8,
    units: u8,
}

impl Pending {
    fn message_len(&self) -> u32 {
        let inline_data = self.op == Op::Write && self.place == INLINE;
        blkproto::Request::LEN as u32 + if inline_data { self.bytes } else { 0 }
    }

    fn wire(&self) -> [u8; blkproto::Request::LEN] {
        blkproto::Request {
            id: self.id,
            disk: self.disk,
            op: match self.op {
                Op::Read => blkproto::op::READ,
                Op::Write => blkproto::op::WRITE,
                Op::Flush => blkproto::op::FLUSH,
            },
            sector: self.sector,
            bytes: self.bytes,
            place: self.place,
        }
        .encode()
    }
}

/// The connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Conn {
    peer_port: u32,
    /// The daemon's `buf_alloc` and `fwd_cnt`, as last heard.
    peer_buf: u32,
    peer_fwd: u32,
    /// Payload bytes sent to the daemon.
    tx_cnt: u32,
    /// Payload bytes consumed from the daemon, and as last told it.
    fwd_cnt: u32,
    fwd_told: u32,
    hello: bool,
}

impl Conn {
    /// Bytes consumed untold after which a `CREDIT_UPDATE` goes out: a
    /// quarter of the window the daemon's sender works in, the smaller of
    /// the credit given and its own `buf_alloc` (at least one byte, so a
    /// daemon that claims no buffer still hears of every byte consumed).
    fn update_after(&self) -> u32 {
        (BUF_ALLOC.min(self.peer_buf) / 4).max(1)
    }
}

/// Where parsing the held transmit buffer ([`DiskLink::cur_chain`]) is.
#[derive(Clone, Copy, Debug)]
struct Cur {
    len: u32,
    /// Payload bytes parsed.
    at: u32,
}

/// What one look at the service VM's transmit queue found.
#[derive(Clone, Debug)]
enum Step {
    /// Nothing left.
    Idle,
    /// Something done; look again.
    Again,
    /// Copy `len` bytes from the held buffer at `src_offset` into read
    /// `slot`'s data at `offset`.
    Copy {
        slot: usize,
        src_offset: u32,
        offset: u32,
        len: u32,
    },
    /// Placed read `slot` succeeded: copy its data from its place.
    Placed { slot: usize },
}

/// The link: at most one connection, the requests handed over, and what
/// is being parsed.
#[derive(Debug)]
pub struct DiskLink {
    cid: u64,
    /// The frontend VM of each disk.
    disks: [Option<u8>; MAX_DISKS],
    gone: bool,
    conn: Option<Conn>,
    pending: [Option<Pending>; MAX_PENDING],
    /// Which slots of `pending` hold a request (bit `i`: slot `i`), kept
    /// with them: counting, finding a free slot and walking the busy ones
    /// look at one word, not at 64 slots of 2 KiB.
    occupied: u64,
    uses: u32,
    seq: u32,
    /// The oldest request not wholly sent as last found (slot and seq;
    /// `None`: none), trusted while `rescan` is clear and the slot still
    /// holds that request unsent: requests handed over later are newer,
    /// so only its own end (sent, failed, dropped) moves it. A packet of
    /// data then costs no look at every slot.
    next: Option<(usize, u32)>,
    rescan: bool,
    /// Slots that may hold a request not wholly sent (bit *n*: slot *n*):
    /// set when a request is handed over, cleared when a scan finds the
    /// slot sent or empty, so a scan looks at those slots only.
    maybe_unsent: u64,
    /// The transmit buffer being parsed (held until its data is copied)
    /// and how far: the chain is filled in place, never moved, and is the
    /// held one only while `cur` is set.
    cur: Option<Cur>,
    cur_chain: Chain,
    /// A reply, hello or region being read, and its bytes so far.
    head: [u8; 16],
    have: usize,
    /// Regions of the hello still to read (`None`: the hello itself),
    /// the disks it named, and the regions read.
    regions_left: Option<u32>,
    hello_disks: u32,
    regions: [Region; MAX_REGIONS],
    region_count: usize,
    /// The placed space's first `units` units: each one's offset in it,
    /// its address in the service VM, and the units from it to its
    /// region's end; bit *n* of `free_units` is set while unit *n* is
    /// free.
    unit_at: [(u32, u64); MAX_UNITS],
    unit_run: [u8; MAX_UNITS],
    units: usize,
    free_units: u128,
    /// A placed read the daemon answered `OK`, for [`Step::Placed`].
    placed_ready: Option<usize>,
    /// The read whose data is being received: its slot and bytes left.
    data: Option<(usize, u32)>,
    control: [Header; CONTROL],
    control_len: usize,
    /// Completions to apply: disk, tag, outcome.
    done: [(u16, u32, Outcome); MAX_PENDING],
    done_len: usize,
    counters: LinkCounters,
    event: Option<Event>,
}

impl Default for DiskLink {
    fn default() -> Self {
        Self::new()
    }
}

fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

/// Copies `len` bytes of a write's data from its frontend `vm`'s request
/// buffers (`src`'s readable stream from the offset given) into `dst`'s
/// writable stream at the offset given, in the service VM's memory: a
/// place, or a receive buffer after the request. False if it could not
/// (the frontend's buffers were checked against its RAM, so never), which
/// breaks the stream.
fn copy_write_data(
    frontends: &dyn FrontendRam,
    vm: Option<u8>,
    (src, from): (&Chain, u32),
    (dst, mem, at): (&Chain, &mut dyn GuestMemory, u32),
    len: u32,
) -> bool {
    let mut copied = false;
    if let Some(vm) = vm {
        frontends.with_ram(usize::from(vm), &mut |fm| {
            copied = copy_between(src, fm, from, dst, mem, at, len).is_ok();
        });
    }
    copied
}

/// Bits `0..n` (`n` at most 128).
pub(crate) fn units_mask(n: usize) -> u128 {
    if n >= 128 { u128::MAX } else { (1 << n) - 1 }
}

/// Takes `n` free units of `free`, contiguous in one region (`run`: the
/// units from each to its region's end; the first that fit); the first
/// one's index.
pub(crate) fn take_units(free: &mut u128, run: &[u8], n: usize) -> Option<usize> {
    let want = units_mask(n);
    let i = (0..run.len()).find(|&i| usize::from(run[i]) >= n && (*free >> i) & want == want)?;
    *free &= !(want << i);
    Some(i)
}

impl DiskLink {
    /// A link with no service VM and no disk.
    pub const fn new() -> Self {
        Self {
            cid: u64::MAX,
            disks: [None; MAX_DISKS],
            gone: false,
            conn: None,
            pending: [const { None }; MAX_PENDING],
            occupied: 0,
            uses: 0,
            seq: 0,
            next: None,
            rescan: false,
            maybe_unsent: 0,
            cur: None,
            cur_chain: Chain::EMPTY,
            head: [0; 16],
            have: 0,
            regions_left: None,
            hello_disks: 0,
            regions: [NO_REGION; MAX_REGIONS],
            region_count: 0,
            unit_at: [(0, 0); MAX_UNITS],
            unit_run: [0; MAX_UNITS],
            units: 0,
            free_units: 0,
            placed_ready: None,
            data: None,
            control: [Header::ZERO; CONTROL],
            control_len: 0,
            done: [(0, 0, Outcome::Failed); MAX_PENDING],
            done_len: 0,
            counters: LinkCounters {
                sent: 0,
                ok: 0,
                failed: 0,
                connects: 0,
                violations: 0,
                dropped: 0,
            },
            event: None,
        }
    }

    /// Sets the service VM's CID (its vsock device's).
    pub fn set_service(&mut self, cid: u64) {
        self.cid = cid;
    }

    /// Makes disk `disk` a disk of VM `vm` (past [`MAX_DISKS`]: ignored).
    pub fn add_disk(&mut self, disk: u32, vm: u8) {
        if let Some(d) = self.disks.get_mut(disk as usize) {
            *d = Some(vm);
        }
    }

    /// Disk `disk`'s VM.
    fn vm_of(&self, disk: usize) -> Option<usize> {
        self.disks.get(disk).copied().flatten().map(usize::from)
    }

    /// VM `vm`'s disks, as a mask (bit *n*: disk *n*).
    pub fn disks_of(&self, vm: usize) -> u32 {
        (0..MAX_DISKS)
            .filter(|&d| self.disks[d].is_some_and(|v| usize::from(v) == vm))
            .fold(0, |m, d| m | 1 << d)
    }

    /// What the link counted.
    pub fn counters(&self) -> LinkCounters {
        self.counters
    }

    /// Requests handed to the link and not yet answered.
    pub fn pending(&self) -> usize {
        self.occupied.count_ones() as usize
    }

    /// Whether every slot holds a request.
    fn full(&self) -> bool {
        self.occupied == ALL_SLOTS
    }

    /// The busy slots' indices, lowest first.
    fn busy(&self) -> impl Iterator<Item = usize> + use<> {
        bits(self.occupied)
    }

    /// Whether the daemon is connected and said hello.
    pub fn is_up(&self) -> bool {
        self.conn.is_some_and(|c| c.hello)
    }

    /// The last change of the link, once.
    pub fn take_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// The service VM is gone for good (`true`: every request waiting or
    /// to come fails at once) or back (`false`).
    pub fn set_gone(&mut self, gone: bool, ports: &mut dyn DiskPorts) {
        self.gone = gone;
        if gone {
            self.drop_conn("the service VM stopped", false);
            for slot in self.busy() {
                self.finish(slot, Outcome::Failed);
            }
            self.apply(ports);
        }
    }

    /// VM `vm`'s disks were notified: takes their new requests (as many as
    /// there are free slots) and sends what it can.
    pub fn frontend_notified(&mut self, vm: usize, ports: &mut dyn DiskPorts) -> Report {
        let mut mask = self.disks_of(vm);
        while mask != 0 {
            let disk = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.take_from(disk, ports);
        }
        self.pump(ports);
        self.check_occupied();
        Report { more: self.full() }
    }

    /// Takes disk `disk`'s requests not yet handed out into free slots
    /// (failing them at once when the service VM is gone).
    fn take_from(&mut self, disk: usize, ports: &mut dyn DiskPorts) {
        let Some(vm) = self.vm_of(disk) else { return };
        let gone = self.gone;
        // Each disk holds at most its share of the slots, so a busy disk
        // never keeps another's requests out.
        let disks = self.disks.iter().flatten().count().max(1);
        let share = (MAX_PENDING / disks).max(1);
        let mine = self
            .busy()
            .filter(|&s| {
                self.pending[s]
                    .as_ref()
                    .is_some_and(|p| usize::from(p.disk) == disk)
            })
            .count();
        let mut room = share.saturating_sub(mine);
        self.rescan = true;
        let (pending, occupied, uses, seq, maybe_unsent) = (
            &mut self.pending,
            &mut self.occupied,
            &mut self.uses,
            &mut self.seq,
            &mut self.maybe_unsent,
        );
        ports.with_disk(vm, disk, &mut |t, mem, _| {
            t.with_device(mem, |dev, queues, mem| {
                if gone {
                    while let Some(r) = dev.next_request() {
                        dev.complete(r.tag, Outcome::Failed, queues, mem)
                            .map_err(|e| (crate::blk::QUEUE, e))?;
                    }
                    return Ok(());
                }
                while *occupied != ALL_SLOTS {
                    let slot = (!*occupied).trailing_zeros() as usize;
                    if room == 0 {
                        break;
                    }
                    let Some(r) = dev.next_request() else { break };
                    room -= 1;
                    *uses = uses.wrapping_add(1);
                    *seq = seq.wrapping_add(1);
                    *maybe_unsent |= 1 << slot;
                    *occupied |= 1 << slot;
                    pending[slot] = Some(Pending {
                        id: (*uses << 8) | slot as u32,
                        disk: disk as u16,
                        tag: r.tag,
                        op: r.op,
                        sector: r.sector,
                        bytes: r.bytes,
                        chain: dev.write_chain(r.tag).cloned(),
                        sent: 0,
                        seq: *seq,
                        got: 0,
                        place: INLINE,
                        first_unit: 0,
                        units: 0,
                    });
                }
                Ok(())
            });
        });
    }

    /// VM `vm` restarted or stopped: each of its disks as
    /// [`DiskLink::disk_reset`].
    pub fn frontend_reset(&mut self, vm: usize) {
        self.disks_reset(self.disks_of(vm));
    }

    /// The disks of `mask` (bit *n*: disk *n*), each as
    /// [`DiskLink::disk_reset`].
    pub fn disks_reset(&mut self, mut mask: u32) {
        while mask != 0 {
            let disk = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.disk_reset(disk);
        }
    }

    /// Disk `disk`'s device was reset (its driver's reset, or its VM's
    /// restart): its requests not yet sent are dropped (the new driver
    /// never made them, and their buffers are its now), and a write being
    /// sent is finished with zeros (those buffers must not reach the
    /// disk). Their answers are ignored by the device, whose tags went
    /// stale.
    pub fn disk_reset(&mut self, disk: usize) {
        for s in self.busy() {
            let Some(p) = self.pending[s].as_mut() else {
                continue;
            };
            if usize::from(p.disk) != disk {
                continue;
            }
            if p.sent == 0 {
                Self::free_units_of(&mut self.free_units, p);
                self.pending[s] = None;
                self.occupied &= !(1 << s);
            } else {
                p.chain = None;
            }
        }
        self.check_occupied();
    }

    /// The service VM's vsock device was notified: parses what the daemon
    /// sent, applies the answers, and sends what it can.
    pub fn service_notified(&mut self, ports: &mut dyn DiskPorts) -> Report {
        let mut report = Report::default();
        let mut steps = 0;
        loop {
            if steps == BUDGET {
                report.more = true;
                break;
            }
            steps += 1;
            let mut step = Step::Idle;
            ports.with_service(&mut |t, mem, _| {
                step = t
                    .with_device(mem, |_, queues, mem| {
                        self.intake(queues, mem).map_err(|e| (vsock::TX, e))
                    })
                    .unwrap_or(Step::Idle);
            });
            match step {
                Step::Idle => break,
                Step::Again => {}
                Step::Copy {
                    slot,
                    src_offset,
                    offset,
                    len,
                } => {
                    self.copy_in(slot, src_offset, offset, len, ports);
                    // The last piece: the read is done.
                    if self.data.is_none()
                        && self.pending[slot]
                            .as_ref()
                            .is_some_and(|p| p.got == p.bytes && p.op == Op::Read)
                    {
                        self.finish(slot, Outcome::Done);
                    }
                }
                Step::Placed { slot } => {
                    let copied = self.copy_placed(slot, ports);
                    self.finish(
                        slot,
                        if copied {
                            Outcome::Done
                        } else {
                            Outcome::Failed
                        },
                    );
                }
            }
            // Answers go back at once, so their slots take new requests.
            self.apply(ports);
        }
        if self.done_len > 0 {
            self.apply(ports);
        }
        self.refill(ports);
        self.pump(ports);
        self.check_occupied();
        report
    }

    /// Debug builds (the unit tests): [`DiskLink::occupied`] names exactly
    /// the slots that hold a request.
    fn check_occupied(&self) {
        debug_assert_eq!(
            self.occupied,
            (0..MAX_PENDING)
                .filter(|&s| self.pending[s].is_some())
                .fold(0, |m, s| m | 1 << s),
            "the occupancy mask follows the slots"
        );
    }

    /// The service VM's vsock device was reset (its driver, or the VM
    /// restarted): the connection is gone.
    pub fn service_reset(&mut self, ports: &mut dyn DiskPorts) {
        self.drop_conn("the service VM's vsock device was reset", false);
        self.control_len = 0;
        self.cur = None;
        self.apply(ports);
    }

    /// Takes more requests from every disk when slots are free (after
    /// answers freed some).
    fn refill(&mut self, ports: &mut dyn DiskPorts) {
        if self.full() {
            return;
        }
        for disk in 0..MAX_DISKS {
            if self.disks[disk].is_some() {
                self.take_from(disk, ports);
            }
        }
    }

    /// Copies part of a read's data from the held transmit buffer into
    /// its frontend's buffers (nothing when the request is no longer the
    /// driver's).
    fn copy_in(
        &mut self,
        slot: usize,
        src_offset: u32,
        offset: u32,
        len: u32,
        ports: &mut dyn DiskPorts,
    ) {
        let (Some(p), Some(_)) = (self.pending[slot].as_ref(), self.cur) else {
            return;
        };
        let src = &self.cur_chain;
        let (disk, tag) = (usize::from(p.disk), p.tag);
        let Some(vm) = self.vm_of(disk) else { return };
        ports.with_disk(vm, disk, &mut |t, mem, service| {
            // A stale tag or a failed copy leaves the frontend untouched;
            // the request completes (or not) by its reply as usual.
            let _ = t
                .device()
                .fill(tag, mem, offset, src, service, src_offset, len);
        });
    }

    /// Copies placed read `slot`'s data from its place into its frontend's
    /// buffers; false if it could not (the request is no longer the
    /// driver's, or its place is not the service VM's RAM), which fails
    /// the request.
    fn copy_placed(&mut self, slot: usize, ports: &mut dyn DiskPorts) -> bool {
        let Some(p) = self.pending[slot].as_ref().filter(|p| p.units > 0) else {
            return false;
        };
        let (disk, tag, bytes) = (usize::from(p.disk), p.tag, p.bytes);
        let addr = self.unit_at[usize::from(p.first_unit)].1;
        let Some(vm) = self.vm_of(disk) else {
            return false;
        };
        let mut copied = false;
        ports.with_disk(vm, disk, &mut |t, mem, service| {
            copied = Chain::span(service, Ipa(addr), bytes, Direction::Readable)
                .ok()
                .and_then(|src| t.device().fill(tag, mem, 0, &src, service, 0, bytes))
                .is_some();
        });
        copied
    }

    /// Lays the placed space's units out over the registered regions, in
    /// hello order: whole [`PLACE_UNIT`]s, none across a region's end,
    /// none past what a place's `u32` names, [`MAX_UNITS`] at most; all
    /// free.
    fn lay_out_units(&mut self) {
        self.units = 0;
        let unit = u64::from(PLACE_UNIT);
        let mut offset = 0u64;
        for r in &self.regions[..self.region_count] {
            let first = self.units;
            let mut k = 0;
            while (k + 1) * unit <= r.len
                && self.units < MAX_UNITS
                && offset + (k + 1) * unit <= u64::from(INLINE)
            {
                self.unit_at[self.units] = (offset as u32 + (k * unit) as u32, r.addr + k * unit);
                self.units += 1;
                k += 1;
            }
            for (i, run) in self.unit_run[first..self.units].iter_mut().enumerate() {
                *run = (self.units - first - i) as u8;
            }
            offset += r.len;
        }
        self.free_units = units_mask(self.units);
    }

    /// Gives request `p`'s units back, if it has any.
    fn free_units_of(free: &mut u128, p: &mut Pending) {
        if p.units > 0 {
            *free |= units_mask(usize::from(p.units)) << p.first_unit;
            p.units = 0;
            p.place = INLINE;
        }
    }

    /// Applies the completions queued, each at its frontend.
    fn apply(&mut self, ports: &mut dyn DiskPorts) {
        let n = core::mem::take(&mut self.done_len);
        for &(disk, tag, outcome) in &self.done[..n] {
            let disk = usize::from(disk);
            let Some(vm) = self.vm_of(disk) else { continue };
            ports.with_disk(vm, disk, &mut |t, mem, _| {
                t.with_device(mem, |dev, queues, mem| {
                    dev.complete(tag, outcome, queues, mem)
                        .map_err(|e| (crate::blk::QUEUE, e))
                });
            });
        }
    }

    /// Ends the request in `slot` with `outcome` (applied by [`Self::apply`]).
    fn finish(&mut self, slot: usize, outcome: Outcome) {
        // Ended where it lies: a pending request holds a write's 2 KiB
        // chain, which taking it out would copy.
        let Some(p) = self.pending[slot].as_mut() else {
            return;
        };
        Self::free_units_of(&mut self.free_units, p);
        let (disk, tag) = (p.disk, p.tag);
        self.pending[slot] = None;
        self.occupied &= !(1 << slot);
        match outcome {
            Outcome::Done => bump(&mut self.counters.ok),
            Outcome::Failed => bump(&mut self.counters.failed),
        }
        if self.data.is_some_and(|(s, _)| s == slot) {
            self.data = None;
        }
        self.done[self.done_len] = (disk, tag, outcome);
        self.done_len += 1;
    }

    /// Ends the connection (telling the daemon with an `RST` if `tell`):
    /// the requests sent, wholly or in part, fail; the others wait.
    fn drop_conn(&mut self, reason: &'static str, tell: bool) {
        let Some(c) = self.conn.take() else {
            self.reset_parse();
            return;
        };
        if tell {
            let rst = self.header(&c, VOp::Rst, 0);
            self.push_control(rst);
        }
        let mut failed = 0;
        for slot in self.busy() {
            if self.pending[slot].as_ref().is_some_and(|p| p.sent > 0) {
                self.finish(slot, Outcome::Failed);
                failed += 1;
            }
        }
        self.reset_parse();
        // The rest of the buffer being parsed belongs to the old stream.
        if let Some(cur) = self.cur.as_mut() {
            cur.at = cur.len;
        }
        self.event = Some(Event::Down { reason, failed });
    }

    fn reset_parse(&mut self) {
        self.have = 0;
        self.data = None;
        self.regions_left = None;
        self.region_count = 0;
        self.units = 0;
        self.free_units = 0;
        self.placed_ready = None;
    }

    fn violation(&mut self, reason: &'static str) {
        bump(&mut self.counters.violations);
        self.drop_conn(reason, true);
    }

    /// A header from the host to the daemon on connection `c`.
    fn header(&self, c: &Conn, op: VOp, len: u32) -> Header {
        Header {
            src_cid: HOST,
            dst_cid: self.cid,
            src_port: blkproto::PORT,
            dst_port: c.peer_port,
            len,
            kind: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: c.fwd_cnt,
        }
    }

    fn push_control(&mut self, h: Header) {
        if self.control_len == CONTROL {
            self.control.copy_within(1.., 0);
            self.control_len -= 1;
            bump(&mut self.counters.dropped);
        }
        self.control[self.control_len] = h;
        self.control_len += 1;
    }

    /// Looks at the service VM's transmit queue once: returns the buffer
    /// parsed to its end, takes the next, or parses on in the held one.
    fn intake(
        &mut self,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<Step, QueueError> {
        let Ok(tx) = queues.get(vsock::TX) else {
            return Ok(Step::Idle);
        };
        if let Some(cur) = self.cur
            && cur.at >= cur.len
        {
            tx.add_used(mem, self.cur_chain.head(), 0)?;
            if let Some(c) = self.conn.as_mut() {
                c.fwd_cnt = c.fwd_cnt.wrapping_add(cur.len);
            }
            self.cur = None;
            return Ok(Step::Again);
        }
        if self.cur.is_none() {
            if !tx.pop_into(mem, &mut self.cur_chain)? {
                return Ok(Step::Idle);
            }
            let Some(hdr) = self.admit(mem)? else {
                tx.add_used(mem, self.cur_chain.head(), 0)?;
                return Ok(Step::Again);
            };
            self.cur = Some(Cur {
                len: hdr.len,
                at: 0,
            });
        }
        self.parse(mem)
    }

    /// Checks the new packet from the service VM in `cur_chain` and acts
    /// on its control part; its header when it carries stream data to
    /// parse.
    fn admit(&mut self, mem: &dyn GuestMemory) -> Result<Option<Header>, QueueError> {
        let readable = self.cur_chain.readable_len();
        let payload = readable.saturating_sub(HDR_LEN as u32);
        if (readable as usize) < HDR_LEN {
            bump(&mut self.counters.dropped);
            return Ok(None);
        }
        let mut hb = [0u8; HDR_LEN];
        self.cur_chain.read(mem, 0, &mut hb)?;
        let hdr = Header::decode(&hb);
        if hdr.len != payload || hdr.len > vsock::MAX_PAYLOAD || hdr.src_cid != self.cid {
            bump(&mut self.counters.dropped);
            return Ok(None);
        }
        let op = VOp::from_u16(hdr.op);
        let refuse = |link: &mut Self| {
            bump(&mut link.counters.dropped);
            if op != Some(VOp::Rst) {
                link.push_control(hdr.reset_reply());
            }
            Ok(None)
        };
        if hdr.kind != TYPE_STREAM || hdr.dst_cid != HOST || hdr.dst_port != blkproto::PORT {
            return refuse(self);
        }
        if op == Some(VOp::Request) {
            if self.conn.is_some() {
                self.drop_conn("the daemon connected again", false);
            }
            let c = Conn {
                peer_port: hdr.src_port,
                peer_buf: hdr.buf_alloc,
                peer_fwd: hdr.fwd_cnt,
                tx_cnt: 0,
                fwd_cnt: 0,
                fwd_told: 0,
                hello: false,
            };
            self.conn = Some(c);
            self.reset_parse();
            bump(&mut self.counters.connects);
            let response = self.header(&c, VOp::Response, 0);
            self.push_control(response);
            return Ok(None);
        }
        let Some(c) = self.conn.as_mut().filter(|c| c.peer_port == hdr.src_port) else {
            return refuse(self);
        };
        c.peer_buf = hdr.buf_alloc;
        c.peer_fwd = hdr.fwd_cnt;
        match op {
            Some(VOp::Rw) => return Ok(Some(hdr)),
            Some(VOp::CreditUpdate) => {}
            Some(VOp::CreditRequest) => {
                let c = *c;
                let update = self.header(&c, VOp::CreditUpdate, 0);
                self.push_control(update);
            }
            Some(VOp::Rst) => self.drop_conn("the daemon reset the connection", false),
            Some(VOp::Shutdown) => self.drop_conn("the daemon shut the connection down", true),
            Some(VOp::Request | VOp::Response) | None => {
                self.violation("a packet the host never expects");
            }
        }
        Ok(None)
    }

    /// Parses the held buffer on from where it stopped: up to one whole
    /// hello or reply, or one piece of a read's data to copy.
    fn parse(&mut self, mem: &dyn GuestMemory) -> Result<Step, QueueError> {
        let Some(mut cur) = self.cur else {
            return Ok(Step::Again);
        };
        let step = self.parse_in(&mut cur, mem);
        self.cur = Some(cur);
        step
    }

    fn parse_in(&mut self, cur: &mut Cur, mem: &dyn GuestMemory) -> Result<Step, QueueError> {
        if self.conn.is_none() {
            cur.at = cur.len;
            return Ok(Step::Again);
        }
        while cur.at < cur.len {
            let left = cur.len - cur.at;
            if let Some((slot, want)) = self.data {
                let n = want.min(left);
                let Some(p) = self.pending[slot].as_mut() else {
                    self.data = None;
                    continue;
                };
                let step = Step::Copy {
                    slot,
                    src_offset: HDR_LEN as u32 + cur.at,
                    offset: p.got,
                    len: n,
                };
                p.got += n;
                cur.at += n;
                self.data = (n < want).then_some((slot, want - n));
                return Ok(step);
            }
            let n = (16 - self.have).min(left as usize);
            self.cur_chain.read(
                mem,
                HDR_LEN as u32 + cur.at,
                &mut self.head[self.have..self.have + n],
            )?;
            cur.at += n as u32;
            self.have += n;
            if self.have == 16 {
                self.have = 0;
                if !self.on_message(mem) {
                    cur.at = cur.len;
                }
                return Ok(match self.placed_ready.take() {
                    Some(slot) => Step::Placed { slot },
                    None => Step::Again,
                });
            }
        }
        Ok(Step::Again)
    }

    /// Acts on a whole hello, region or reply in `head` (`mem`: the
    /// service VM's, which a region must be in); false if it ended the
    /// connection.
    fn on_message(&mut self, mem: &dyn GuestMemory) -> bool {
        let Some(c) = self.conn.as_ref() else {
            return false;
        };
        if !c.hello {
            return self.on_hello(mem);
        }
        let Some(r) = Reply::decode(&self.head) else {
            self.violation("a reply with reserved bits set");
            return false;
        };
        let slot = (r.id & 0xff) as usize;
        let Some(p) = self
            .pending
            .get(slot)
            .and_then(Option::as_ref)
            .filter(|p| p.id == r.id && p.sent == p.message_len())
        else {
            self.violation("a reply for no request in flight");
            return false;
        };
        let ok = r.status == blkproto::status::OK;
        let read = ok && p.op == Op::Read;
        let placed = p.place != INLINE;
        let data = if read && !placed { p.bytes } else { 0 };
        if r.bytes != data {
            self.violation("a reply whose data is not the request's");
            return false;
        }
        if data > 0 {
            self.data = Some((slot, data));
        } else if read && placed {
            self.placed_ready = Some(slot);
        } else {
            self.finish(slot, if ok { Outcome::Done } else { Outcome::Failed });
        }
        true
    }

    /// The hello, then its regions, one per call; the link is up after
    /// the last. A region must be the service VM's RAM and overlap no
    /// other (the hypervisor writes there only, and one place never
    /// serves two requests).
    fn on_hello(&mut self, mem: &dyn GuestMemory) -> bool {
        let Some(left) = self.regions_left else {
            let Some(h) = Hello::decode(&self.head) else {
                self.violation("a hello of another magic or version");
                return false;
            };
            self.hello_disks = h.disks;
            self.regions_left = Some(h.regions);
            return self.hello_done();
        };
        let r = Region::decode(&self.head);
        let Some(r) = r.filter(|r| mem.contains(Ipa(r.addr), r.len)) else {
            self.violation("a registered buffer that is not the service VM's RAM");
            return false;
        };
        let overlaps = |o: &Region| r.addr < o.addr + o.len && o.addr < r.addr + r.len;
        if self.regions[..self.region_count].iter().any(overlaps) {
            self.violation("registered buffers that overlap");
            return false;
        }
        self.regions[self.region_count] = r;
        self.region_count += 1;
        self.regions_left = Some(left - 1);
        self.hello_done()
    }

    /// Brings the link up when the hello's last region is read.
    fn hello_done(&mut self) -> bool {
        if self.regions_left == Some(0)
            && let Some(c) = self.conn.as_mut()
        {
            c.hello = true;
            self.lay_out_units();
            self.event = Some(Event::Up {
                disks: self.hello_disks,
            });
        }
        true
    }

    /// Sends the control packets, then as much of the requests as the
    /// daemon's credit and receive buffers allow.
    fn pump(&mut self, ports: &mut dyn DiskPorts) {
        let mut fault = false;
        ports.with_service(&mut |t, mem, frontends| {
            t.with_device(mem, |_, queues, mem| {
                self.send(queues, mem, frontends, &mut fault)
                    .map_err(|e| (vsock::RX, e))
            });
        });
        if fault {
            // A frontend's buffers could not be read (they were checked
            // against its RAM, so never): the stream is broken.
            self.violation("a frontend's buffer could not be read");
            self.apply(ports);
        }
    }

    fn send(
        &mut self,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
        frontends: &dyn FrontendRam,
        fault: &mut bool,
    ) -> Result<(), QueueError> {
        let Ok(rx) = queues.get(vsock::RX) else {
            return Ok(());
        };
        // One chain, filled in place by every pop of this call.
        let mut chain = Chain::EMPTY;
        let mut sent = 0;
        for h in &self.control[..self.control_len] {
            if !rx.pop_into(mem, &mut chain)? {
                break;
            }
            if chain.writable_len() >= HDR_LEN as u32 {
                chain.write(mem, 0, &h.encode())?;
                rx.add_used(mem, chain.head(), HDR_LEN as u32)?;
            } else {
                rx.add_used(mem, chain.head(), 0)?;
            }
            sent += 1;
        }
        self.control.copy_within(sent..self.control_len, 0);
        self.control_len -= sent;
        let Some(mut c) = self.conn.filter(|c| c.hello && self.control_len == 0) else {
            return Ok(());
        };
        loop {
            let credit = c
                .peer_buf
                .saturating_sub(c.tx_cnt.wrapping_sub(c.peer_fwd))
                .min(vsock::MAX_PAYLOAD);
            let Some(first) = self.next_to_send() else {
                break;
            };
            if credit == 0 {
                break;
            }
            if !rx.pop_into(mem, &mut chain)? {
                break;
            }
            let room = chain
                .writable_len()
                .saturating_sub(HDR_LEN as u32)
                .min(credit);
            if room == 0 {
                rx.add_used(mem, chain.head(), 0)?;
                continue;
            }
            // Fill the buffer with the oldest messages, as much as fits.
            let mut len = 0u32;
            let mut slot = Some(first);
            while let Some(s) = slot {
                if len == room {
                    break;
                }
                let Some(p) = self.pending[s].as_mut() else {
                    break;
                };
                if p.sent == 0 {
                    // Placed when free units hold it; a write's data goes
                    // there now, before its request. (A write whose
                    // frontend reset has no data to place.)
                    Self::free_units_of(&mut self.free_units, p);
                    let wanted = p.bytes.div_ceil(PLACE_UNIT) as usize;
                    let placeable = match p.op {
                        Op::Read => true,
                        Op::Write => p.chain.is_some(),
                        Op::Flush => false,
                    };
                    let first = if placeable && (1..=MAX_UNITS).contains(&wanted) {
                        take_units(&mut self.free_units, &self.unit_run[..self.units], wanted)
                    } else {
                        None
                    };
                    if let Some(first) = first {
                        let (offset, addr) = self.unit_at[first];
                        p.first_unit = first as u8;
                        p.units = wanted as u8;
                        if let (Op::Write, Some(src)) = (p.op, p.chain.as_ref()) {
                            let dst = Chain::span(mem, Ipa(addr), p.bytes, Direction::Writable)?;
                            let vm = self.disks[usize::from(p.disk)];
                            *fault |= !copy_write_data(
                                frontends,
                                vm,
                                (src, DATA_OFFSET),
                                (&dst, mem, 0),
                                p.bytes,
                            );
                        }
                        p.place = offset;
                    }
                }
                let n = (p.message_len() - p.sent).min(room - len);
                let at = HDR_LEN as u32 + len;
                let mut done = 0;
                let head = blkproto::Request::LEN as u32;
                if p.sent < head {
                    let k = (head - p.sent).min(n);
                    let wire = p.wire();
                    chain.write(mem, at, &wire[p.sent as usize..(p.sent + k) as usize])?;
                    done += k;
                }
                if done < n {
                    let k = n - done;
                    match p.chain.as_ref() {
                        Some(src) => {
                            let from = DATA_OFFSET + p.sent + done - head;
                            let vm = self.disks[usize::from(p.disk)];
                            *fault |= !copy_write_data(
                                frontends,
                                vm,
                                (src, from),
                                (&chain, mem, at + done),
                                k,
                            );
                        }
                        // The frontend reset: zeros for the rest.
                        None => {
                            let zeros = [0u8; 256];
                            let mut z = 0;
                            while z < k {
                                let m = (k - z).min(zeros.len() as u32);
                                chain.write(mem, at + done + z, &zeros[..m as usize])?;
                                z += m;
                            }
                        }
                    }
                    done += k;
                }
                if p.sent == 0 {
                    bump(&mut self.counters.sent);
                }
                p.sent += done;
                len += done;
                slot = self.next_to_send();
            }
            let h = Header {
                fwd_cnt: c.fwd_cnt,
                ..self.header(&c, VOp::Rw, len)
            };
            chain.write(mem, 0, &h.encode())?;
            rx.add_used(mem, chain.head(), HDR_LEN as u32 + len)?;
            c.tx_cnt = c.tx_cnt.wrapping_add(len);
            c.fwd_told = c.fwd_cnt;
            if *fault {
                break;
            }
        }
        // Tell the daemon what was consumed when nothing else did.
        if c.fwd_cnt.wrapping_sub(c.fwd_told) >= c.update_after() && rx.pop_into(mem, &mut chain)? {
            if chain.writable_len() >= HDR_LEN as u32 {
                chain.write(mem, 0, &self.header(&c, VOp::CreditUpdate, 0).encode())?;
                rx.add_used(mem, chain.head(), HDR_LEN as u32)?;
                c.fwd_told = c.fwd_cnt;
            } else {
                rx.add_used(mem, chain.head(), 0)?;
            }
        }
        self.conn = Some(c);
        Ok(())
    }

    /// The oldest request not wholly sent (the cached one while it holds,
    /// else found among the slots by age, which survives `seq` wrapping).
    fn next_to_send(&mut self) -> Option<usize> {
        let unsent = |p: &Pending| p.sent < p.message_len();
        if !self.rescan {
            match self.next {
                None => return None,
                Some((s, q))
                    if self.pending[s]
                        .as_ref()
                        .is_some_and(|p| p.seq == q && unsent(p)) =>
                {
                    return Some(s);
                }
                Some(_) => {}
            }
        }
        let newest = self.seq;
        let mut oldest: Option<(usize, u32)> = None;
        let mut mask = self.maybe_unsent;
        while mask != 0 {
            let s = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            match self.pending[s].as_ref().filter(|p| unsent(p)) {
                Some(p) => {
                    if oldest
                        .is_none_or(|(_, q)| newest.wrapping_sub(p.seq) > newest.wrapping_sub(q))
                    {
                        oldest = Some((s, p.seq));
                    }
                }
                None => self.maybe_unsent &= !(1 << s),
            }
        }
        self.next = oldest;
        self.rescan = false;
        self.next.map(|(s, _)| s)
    }
}
