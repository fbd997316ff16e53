//! One connection with the hypervisor, served ([`serve`]): the hello, then
//! requests read, checked ([`check`]), performed by a pool of workers and
//! answered, several in flight at once, until the connection ends.
//!
//! The hello names the disks served and is followed, in the same write, by
//! the daemon's registered buffers ([`crate::placed`]: the same regions in
//! every session, none if it has no placed space).
//!
//! Threads: the calling thread reads the stream (through a buffer of
//! [`READ_BUFFER`] bytes, so that requests that arrived together take one
//! `read`) — each [`Request`], and an inline write's data into an aligned
//! buffer — and hands a job per request through a bounded queue
//! ([`crate::queue`], [`QUEUE`] jobs, which wakes one idle worker) to
//! [`WORKERS`] threads, which
//! `pread`/`pwrite`/`fdatasync` the disk and write the [`Reply`] (with an
//! inline read's data, from the same buffer: [`crate::buf`]) whole under
//! one lock, in whatever order they finish. The reader never writes and
//! the workers never read, so neither direction waits on the other; a full
//! queue stops the reader, which is the stream's flow control. Memory in
//! flight is at most `(QUEUE + WORKERS + 1)` buffers of at most
//! [`stratum_abi::blkproto::MAX_DATA`].
//!
//! A placed request (its `place` not `INLINE`) has no data on the stream:
//! a placed write's data is already in its place, a placed read's goes
//! there and its reply carries `bytes: 0`. Its worker `pread`s into or
//! `pwrite`s from the place as it is — places and huge pages are 4 KiB
//! aligned, so `O_DIRECT` takes them with no bounce buffer.
//!
//! What each request gets:
//!
//! - a `READ`/`WRITE` of whole sectors inside a served disk (and a write
//!   only to a read-write one), inline or at a place inside the placed
//!   space; a `FLUSH` of a served disk with no range and no place: done;
//!   [`status::OK`], or [`status::IOERR`] if the device failed;
//! - anything else — a disk not served, an unknown operation, a length that
//!   is not whole sectors or is over `MAX_DATA`, a range past the disk's end
//!   (or overflowing), a write to a read-only disk, a flush with a range or
//!   a place, a place that is not aligned or whose bytes are not all inside
//!   the placed space (every place, for a daemon with no placed space):
//!   [`status::IOERR`] ([`Refusal`]). The data that follows a refused
//!   inline write is read and dropped (in 8 KiB pieces, never buffered
//!   whole: an oversized write costs time, not memory), so the stream stays
//!   in step and the session goes on; a refused placed request has none.
//!   The daemon never stops over a request: every 24 bytes on the stream
//!   are a request it can answer.
//!
//! The session ends, and [`serve`] returns why ([`End`]), when the stream
//! does: the peer closed it (the jobs queued by then are still performed
//! and answered) or reading or writing failed. On a read error the stream
//! is shut down at once and jobs still queued are dropped unperformed (the
//! hypervisor fails them when the connection resets).
//!
//! [`serve`] returns only once every worker has finished — the thread
//! scope waits for them — and the protocol depends on it: the hypervisor
//! reuses a place as soon as the connection ends, so no `pread` into a
//! place or `pwrite` from one may still be running by then.

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;

use stratum_abi::blkproto::{Hello, INLINE, MAX_DATA, Region, Reply, Request, SECTOR, op, status};

use crate::buf::{Buf, Pool};
use crate::disk::{Disk, Disks};
use crate::placed::{BadPlace, Place, Placed};
use crate::queue::{Producer, Queue, Worker};

/// Worker threads per session.
pub const WORKERS: usize = 4;
/// Jobs waiting for a worker at most; the reader waits beyond.
pub const QUEUE: usize = 4;
/// Bytes the reader takes from the stream at most per `read`: 170
/// requests' headers, or an inline write's first bytes.
pub const READ_BUFFER: usize = 4096;

/// A connected byte stream the session can split into a reader, a writer
/// and a handle that shuts it down.
pub trait Stream: Read + Write + Send + Sync + Sized {
    /// Another handle on the same connection.
    fn try_clone(&self) -> io::Result<Self>;
    /// Shuts both directions down (wakes a blocked read or write); errors
    /// are ignored: the connection is being dropped anyway.
    fn shutdown_both(&self);
}

impl Stream for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }

    fn shutdown_both(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Stream for vsock::VsockStream {
    fn try_clone(&self) -> io::Result<Self> {
        vsock::VsockStream::try_clone(self)
    }

    fn shutdown_both(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// The peer closed the connection (at a message boundary).
    Closed,
    /// Reading the stream failed, or it ended inside a message.
    Read(io::Error),
    /// Writing the stream failed (the hello or a reply).
    Write(io::Error),
    /// The daemon's workers stopped (only a panic does that).
    WorkersStopped,
    /// The stream could not be split into reader and writer.
    Setup(io::Error),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => write!(f, "the hypervisor closed the connection"),
            End::Read(e) => write!(f, "reading a request failed: {e}"),
            End::Write(e) => write!(f, "writing a reply failed: {e}"),
            End::WorkersStopped => write!(f, "the daemon's workers stopped"),
            End::Setup(e) => write!(f, "cannot use the connection: {e}"),
        }
    }
}

/// What a session did.
#[derive(Debug)]
pub struct Summary {
    /// Why it ended.
    pub end: End,
    /// Requests read (each answered unless the session ended first).
    pub requests: u64,
    /// Of them, refused with [`status::IOERR`] before reaching a disk.
    pub refused: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} after {} request(s), {} refused",
            self.end, self.requests, self.refused
        )
    }
}

/// Why a request is refused with [`status::IOERR`] (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The disk is not served.
    NoDisk,
    /// The operation is not a read, write or flush.
    UnknownOp,
    /// The length is over `MAX_DATA`.
    TooLarge,
    /// The length is not whole sectors.
    NotSectors,
    /// The range ends past the disk (or overflows).
    PastEnd,
    /// A write to a read-only disk.
    ReadOnly,
    /// A flush with a sector or a length.
    FlushWithRange,
    /// A flush with a place.
    FlushPlaced,
    /// A read or write whose place is refused.
    Place(BadPlace),
}

/// An operation on a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes at `offset`.
    Read,
    /// Write `len` bytes at `offset`.
    Write,
    /// Sync the disk.
    Flush,
}

/// A request that passed [`check`].
pub struct Checked<'d> {
    /// What to do.
    pub op: Op,
    /// To which disk.
    pub disk: &'d Disk,
    /// Byte offset (0 for a flush).
    pub offset: u64,
    /// Bytes (0 for a flush; at most `MAX_DATA`).
    pub len: usize,
    /// Where the data is, for a placed read or write; `None` inline.
    pub place: Option<Place<'d>>,
}

/// Checks `req` against `disks` and the placed space: what to do, or why
/// not.
pub fn check<'d>(
    disks: &'d Disks,
    placed: &'d Placed,
    req: &Request,
) -> Result<Checked<'d>, Refusal> {
    let disk = disks.get(req.disk).ok_or(Refusal::NoDisk)?;
    let op = match req.op {
        op::READ => Op::Read,
        op::WRITE => Op::Write,
        op::FLUSH if req.sector != 0 || req.bytes != 0 => return Err(Refusal::FlushWithRange),
        op::FLUSH if req.place != INLINE => return Err(Refusal::FlushPlaced),
        op::FLUSH => {
            return Ok(Checked {
                op: Op::Flush,
                disk,
                offset: 0,
                len: 0,
                place: None,
            });
        }
        _ => return Err(Refusal::UnknownOp),
    };
    if req.bytes > MAX_DATA {
        return Err(Refusal::TooLarge);
    }
    let bytes = u64::from(req.bytes);
    if bytes % SECTOR != 0 {
        return Err(Refusal::NotSectors);
    }
    let end = req.sector.checked_add(bytes / SECTOR);
    let offset = req.sector.checked_mul(SECTOR);
    let (Some(end), Some(offset)) = (end, offset) else {
        return Err(Refusal::PastEnd);
    };
    if end > disk.sectors {
        return Err(Refusal::PastEnd);
    }
    if op == Op::Write && disk.readonly {
        return Err(Refusal::ReadOnly);
    }
    let place = if req.is_placed() {
        Some(placed.place(req.place, req.bytes).map_err(Refusal::Place)?)
    } else {
        None
    };
    Ok(Checked {
        op,
        disk,
        offset,
        len: usize::try_from(req.bytes).expect("at most MAX_DATA"),
        place,
    })
}

/// One request on its way to a worker.
enum Job<'d> {
    /// Read into `buf` (already sized) and answer with it.
    Read {
        id: u32,
        disk: &'d Disk,
        offset: u64,
        buf: Buf,
    },
    /// Write `buf` (already filled from the stream).
    Write {
        id: u32,
        disk: &'d Disk,
        offset: u64,
        buf: Buf,
    },
    /// Read into `place` and answer with no data.
    ReadPlaced {
        id: u32,
        disk: &'d Disk,
        offset: u64,
        place: Place<'d>,
    },
    /// Write what `place` holds.
    WritePlaced {
        id: u32,
        disk: &'d Disk,
        offset: u64,
        place: Place<'d>,
    },
    /// Sync the disk.
    Flush { id: u32, disk: &'d Disk },
    /// Answer [`status::IOERR`].
    Refuse { id: u32 },
}

/// What the workers share.
struct Shared<'a, S> {
    /// The replies' side of the stream.
    writer: Mutex<S>,
    /// A handle to shut the stream down with, whoever holds `writer`.
    closer: S,
    /// Set when the session is being dropped: queued jobs are skipped.
    closing: AtomicBool,
    /// The first failed reply write.
    write_error: Mutex<Option<io::Error>>,
    pool: &'a Pool,
}

impl<S: Stream> Shared<'_, S> {
    /// Writes `bytes` whole under the writer's lock; after a failure,
    /// nothing more is written and the stream is shut down (which ends
    /// the reader too).
    fn send(&self, bytes: &[u8]) {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = writer.write_all(bytes).and_then(|()| writer.flush()) {
            self.closing.store(true, Ordering::Release);
            self.closer.shutdown_both();
            let mut first = self
                .write_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(e);
        }
    }

    /// A reply with no data.
    fn answer(&self, id: u32, status: u32) {
        self.send(
            &Reply {
                id,
                status,
                bytes: 0,
            }
            .encode(),
        );
    }

    /// Performs `job` and answers it (unless the session is closing).
    fn perform(&self, job: Job<'_>) {
        if self.closing.load(Ordering::Acquire) {
            if let Job::Read { buf, .. } | Job::Write { buf, .. } = job {
                self.pool.give(buf);
            }
            return;
        }
        match job {
            Job::Read {
                id,
                disk,
                offset,
                mut buf,
            } => {
                match disk.backing.read_exact_at(&mut buf, offset) {
                    Ok(()) => {
                        let header = Reply {
                            id,
                            status: status::OK,
                            bytes: u32::try_from(buf.len()).expect("at most MAX_DATA"),
                        }
                        .encode();
                        self.send(buf.framed(&header));
                    }
                    Err(_) => self.answer(id, status::IOERR),
                }
                self.pool.give(buf);
            }
            Job::Write {
                id,
                disk,
                offset,
                buf,
            } => {
                let done = disk.backing.write_all_at(&buf, offset);
                self.pool.give(buf);
                self.answer(id, status_of(&done));
            }
            Job::ReadPlaced {
                id,
                disk,
                offset,
                place,
            } => self.answer(id, status_of(&disk.backing.read_into_place(&place, offset))),
            Job::WritePlaced {
                id,
                disk,
                offset,
                place,
            } => self.answer(
                id,
                status_of(&disk.backing.write_from_place(&place, offset)),
            ),
            Job::Flush { id, disk } => self.answer(id, status_of(&disk.backing.sync_data())),
            Job::Refuse { id } => self.answer(id, status::IOERR),
        }
    }
}

fn status_of(done: &io::Result<()>) -> u32 {
    if done.is_ok() {
        status::OK
    } else {
        status::IOERR
    }
}

/// Serves one connection: sends the hello for `disks` and `placed`'s
/// regions, then answers requests until the connection ends (see the
/// module docs). Returns why it ended and what it did, once every worker
/// has finished; the stream is closed when this returns.
pub fn serve<S: Stream>(stream: S, disks: &Disks, placed: &Placed, pool: &Pool) -> Summary {
    let counts = Counts::default();
    let split = stream
        .try_clone()
        .and_then(|writer| Ok((writer, stream.try_clone()?)));
    let (writer, closer) = match split {
        Ok(handles) => handles,
        Err(e) => return counts.summary(End::Setup(e)),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let shared = Shared {
        writer: Mutex::new(writer),
        closer,
        closing: AtomicBool::new(false),
        write_error: Mutex::new(None),
        pool,
    };
    shared.send(&hello(disks, placed));
    let queue = Queue::new(QUEUE);
    let end = thread::scope(|scope| {
        for _ in 0..WORKERS {
            let worker = queue.worker();
            let shared = &shared;
            scope.spawn(move || work(&worker, shared));
        }
        // Returns having dropped the producer, which closes the queue:
        // the workers drain it and stop, and the scope waits for them.
        let end = read_requests(&mut reader, disks, placed, pool, queue.producer(), &counts);
        if matches!(end, End::WorkersStopped | End::Read(_)) {
            shared.closing.store(true, Ordering::Release);
            shared.closer.shutdown_both();
        }
        end
    });
    let write_error = shared
        .write_error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    // A failed write shut the stream down under the reader: that is the
    // cause, whatever the reader saw after it.
    counts.summary(write_error.map_or(end, End::Write))
}

/// The hello and the regions that follow it, as one message.
fn hello(disks: &Disks, placed: &Placed) -> Vec<u8> {
    let regions = placed.regions();
    let count = u32::try_from(regions.len()).expect("at most MAX_REGIONS");
    let mut bytes = Vec::with_capacity(Hello::LEN + regions.len() * Region::LEN);
    bytes.extend_from_slice(&Hello::with_regions(disks.mask(), count).encode());
    for r in regions {
        bytes.extend_from_slice(&r.encode());
    }
    bytes
}

/// Requests and refusals counted by the reader.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    refused: AtomicU64,
}

impl Counts {
    fn summary(&self, end: End) -> Summary {
        Summary {
            end,
            requests: self.requests.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// A worker: performs jobs until the queue is closed and empty.
fn work<S: Stream>(worker: &Worker<'_, Job<'_>>, shared: &Shared<'_, S>) {
    while let Some(job) = worker.pop() {
        shared.perform(job);
    }
}

/// Reads requests (and inline writes' data) and queues their jobs until
/// the stream ends.
fn read_requests<'d, R: Read>(
    r: &mut R,
    disks: &'d Disks,
    placed: &'d Placed,
    pool: &Pool,
    queue: Producer<'_, Job<'d>>,
    counts: &Counts,
) -> End {
    loop {
        let mut head = [0u8; Request::LEN];
        match read_message(r, &mut head) {
            Ok(true) => {}
            Ok(false) => return End::Closed,
            Err(e) => return End::Read(e),
        }
        let req = Request::decode(&head).expect("every field of a request is inside its bytes");
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let id = req.id;
        let job = match check(disks, placed, &req) {
            Ok(Checked {
                op: Op::Read,
                disk,
                offset,
                place: Some(place),
                ..
            }) => Job::ReadPlaced {
                id,
                disk,
                offset,
                place,
            },
            Ok(Checked {
                op: Op::Write,
                disk,
                offset,
                place: Some(place),
                ..
            }) => Job::WritePlaced {
                id,
                disk,
                offset,
                place,
            },
            Ok(Checked {
                op: Op::Read,
                disk,
                offset,
                len,
                place: None,
            }) => Job::Read {
                id,
                disk,
                offset,
                buf: pool.take(len),
            },
            Ok(Checked {
                op: Op::Write,
                disk,
                offset,
                len,
                place: None,
            }) => {
                let mut buf = pool.take(len);
                if let Err(e) = r.read_exact(&mut buf) {
                    return End::Read(e);
                }
                Job::Write {
                    id,
                    disk,
                    offset,
                    buf,
                }
            }
            Ok(Checked {
                op: Op::Flush,
                disk,
                ..
            }) => Job::Flush { id, disk },
            Err(_) => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = discard(r, u64::from(req.data_follows())) {
                    return End::Read(e);
                }
                Job::Refuse { id }
            }
        };
        if queue.push(job).is_err() {
            // Only if every worker is gone, which only a panic does.
            return End::WorkersStopped;
        }
    }
}

/// Fills `buf` from `r`: `Ok(false)` if the stream ended before its first
/// byte (a clean end), an error if it ended inside.
fn read_message<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) if at == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads and drops `n` bytes of `r`.
fn discard<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    if copied == n {
        Ok(())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

#[cfg(test)]
mod tests;
