//! The disk protocol between the hypervisor and the disk daemon in the
//! service VM (`tools/blkd`), over one vsock stream connection.
//!
//! The daemon connects from the service VM to the hypervisor: CID
//! [`HOST_CID`], port [`PORT`]. The hypervisor accepts only from the
//! service VM's CID and only one connection at a time (a second `REQUEST`
//! resets the first). On the stream, every number is little-endian:
//!
//! 1. The daemon sends [`Hello`] first: [`MAGIC`], [`VERSION`], the
//!    disks it serves (bit *n*: disk *n*, found as the block device whose
//!    serial is `stratum-disk<n>`) and how many [`Region`]s follow it:
//!    the daemon's **registered buffers**, memory of its own (physical
//!    addresses, which are the identity-mapped service VM's guest-physical
//!    ones) that the hypervisor may write a request's data into and read
//!    a read's data from. Their bytes, in hello order, make one *placed
//!    space*; a request's [`Request::place`] is an offset in it.
//! 2. The hypervisor sends [`Request`]s; several are in flight at once (up
//!    to [`MAX_IN_FLIGHT`]), each named by its `id`. A request is either
//!    **placed** (`place` names where its data is in the placed space: a
//!    write's data is there before the request is sent, a read's data goes
//!    there) or **inline** (`place` is [`INLINE`]: a write's data follows
//!    the request on the stream, a read's follows the reply).
//! 3. The daemon answers each with a [`Reply`], followed by the data for
//!    an inline read that succeeded; replies may come in any order. A
//!    placed read's data is in its place when its reply is sent; the
//!    daemon does not touch a request's place after replying, and the
//!    hypervisor does not touch it before the reply (nor after the
//!    connection ends: the daemon ends a session only when its requests
//!    are done).
//!
//! Why placed requests: inline data crosses the service VM's vsock driver
//! in packets of 4 KiB (its receive buffer size), each a share of an
//! interrupt, a socket buffer and a copy; placed data is copied once, by
//! the hypervisor, and the daemon hands its place to the block device
//! (`O_DIRECT`) as it is. A daemon that registers nothing (no huge pages
//! in its VM) gets inline requests only.
//!
//! A message that breaks these rules (an unknown magic or version, a
//! reply for no request in flight, a data length that is not the
//! request's) ends the connection: the hypervisor resets it and fails the
//! requests in flight with an I/O error, and the daemon connects again.
//! The daemon answers a request for a disk it does not serve, a range
//! past the disk's end or an unknown operation with [`status::IOERR`]
//! (it never trusts the hypervisor for its bounds either).

use crate::bytes::{le_u32, le_u64};

/// The hypervisor's vsock CID (the host's, `VMADDR_CID_HOST`).
pub const HOST_CID: u32 = 2;
/// The port the hypervisor listens on.
pub const PORT: u32 = 5200;
/// The hello's magic: `b"SBLK"`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SBLK");
/// The protocol version this crate speaks.
pub const VERSION: u32 = 2;
/// Requests in flight on one connection at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// Bytes of one request's data at most (a virtio-blk request the frontend
/// checked: 126 segments, each at most one page per Linux's `seg_max`
/// and `size_max` use; bounded well above).
pub const MAX_DATA: u32 = 4 << 20;
/// Bytes per sector.
pub const SECTOR: u64 = 512;
/// [`Request::place`] of an inline request.
pub const INLINE: u32 = u32::MAX;
/// Registered buffers in one hello at most.
pub const MAX_REGIONS: u32 = 16;
/// The alignment of a region's address and length, and of every place.
pub const PLACE_ALIGN: u64 = 4096;

/// Operations.
pub mod op {
    /// Read `bytes` at `sector`.
    pub const READ: u16 = 0;
    /// Write the `bytes` that follow at `sector`.
    pub const WRITE: u16 = 1;
    /// Make every write answered so far durable (`fsync`).
    pub const FLUSH: u16 = 2;
}

/// Reply statuses.
pub mod status {
    /// Done.
    pub const OK: u32 = 0;
    /// Failed: an I/O error, a disk not served, a bad range or operation.
    pub const IOERR: u32 = 1;
}

/// The daemon's first message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// [`MAGIC`] on the wire.
    pub magic: u32,
    /// [`VERSION`] on the wire.
    pub version: u32,
    /// The disks the daemon serves: bit *n* for disk *n*.
    pub disks: u32,
    /// [`Region`]s that follow the hello on the stream (at most
    /// [`MAX_REGIONS`]).
    pub regions: u32,
}

impl Hello {
    /// Bytes on the wire (the regions follow).
    pub const LEN: usize = 16;

    /// A hello for this version, with no registered buffer.
    pub fn new(disks: u32) -> Self {
        Self::with_regions(disks, 0)
    }

    /// A hello for this version followed by `regions` regions.
    pub fn with_regions(disks: u32, regions: u32) -> Self {
        Self {
            magic: MAGIC,
            version: VERSION,
            disks,
            regions,
        }
    }

    /// The wire bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.disks.to_le_bytes());
        b[12..16].copy_from_slice(&self.regions.to_le_bytes());
        b
    }

    /// Decodes the wire bytes; `None` unless the magic and version are
    /// this crate's and at most [`MAX_REGIONS`] regions follow.
    pub fn decode(b: &[u8; Self::LEN]) -> Option<Self> {
        let h = Self {
            magic: le_u32(b, 0)?,
            version: le_u32(b, 4)?,
            disks: le_u32(b, 8)?,
            regions: le_u32(b, 12)?,
        };
        (h.magic == MAGIC && h.version == VERSION && h.regions <= MAX_REGIONS).then_some(h)
    }
}

/// One registered buffer of the daemon's: `len` bytes from physical
/// address `addr`, both multiples of [`PLACE_ALIGN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The first byte's physical address.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
}

impl Region {
    /// Bytes on the wire.
    pub const LEN: usize = 16;

    /// The wire bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes the wire bytes; `None` unless the address and length are
    /// aligned, the length is not zero and the end does not wrap.
    pub fn decode(b: &[u8; Self::LEN]) -> Option<Self> {
        let r = Self {
            addr: le_u64(b, 0)?,
            len: le_u64(b, 8)?,
        };
        let aligned = r.addr.is_multiple_of(PLACE_ALIGN) && r.len.is_multiple_of(PLACE_ALIGN);
        (aligned && r.len > 0 && r.addr.checked_add(r.len).is_some()).then_some(r)
    }
}

/// One request of the hypervisor's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Names the request in its reply.
    pub id: u32,
    /// The disk's number.
    pub disk: u16,
    /// An [`op`].
    pub op: u16,
    /// First sector (0 for a flush).
    pub sector: u64,
    /// Bytes of data (a multiple of [`SECTOR`], at most [`MAX_DATA`]; 0
    /// for a flush).
    pub bytes: u32,
    /// Where the data is in the placed space (a multiple of
    /// [`PLACE_ALIGN`]), or [`INLINE`] (always for a flush).
    pub place: u32,
}

impl Request {
    /// Bytes on the wire.
    pub const LEN: usize = 24;

    /// The wire bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..6].copy_from_slice(&self.disk.to_le_bytes());
        b[6..8].copy_from_slice(&self.op.to_le_bytes());
        b[8..16].copy_from_slice(&self.sector.to_le_bytes());
        b[16..20].copy_from_slice(&self.bytes.to_le_bytes());
        b[20..24].copy_from_slice(&self.place.to_le_bytes());
        b
    }

    /// Decodes the wire bytes as they are (the daemon checks the fields
    /// against its disks and its placed space).
    pub fn decode(b: &[u8; Self::LEN]) -> Option<Self> {
        Some(Self {
            id: le_u32(b, 0)?,
            disk: u16::from_le_bytes([b[4], b[5]]),
            op: u16::from_le_bytes([b[6], b[7]]),
            sector: le_u64(b, 8)?,
            bytes: le_u32(b, 16)?,
            place: le_u32(b, 20)?,
        })
    }

    /// Whether the data is in the placed space rather than on the stream.
    pub fn is_placed(&self) -> bool {
        self.place != INLINE
    }

    /// Bytes of data that follow this request on the stream: its `bytes`
    /// for an inline write, else none.
    pub fn data_follows(&self) -> u32 {
        if self.op == op::WRITE && !self.is_placed() {
            self.bytes
        } else {
            0
        }
    }

    /// Bytes of data that follow a successful reply to this request: its
    /// `bytes` for an inline read, else none.
    pub fn data_returned(&self) -> u32 {
        if self.op == op::READ && !self.is_placed() {
            self.bytes
        } else {
            0
        }
    }
}

/// The daemon's answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The request's `id`.
    pub id: u32,
    /// A [`status`].
    pub status: u32,
    /// Bytes of data that follow: the request's `bytes` for an inline read
    /// that succeeded, else 0.
    pub bytes: u32,
}

impl Reply {
    /// Bytes on the wire.
    pub const LEN: usize = 16;

    /// The wire bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..12].copy_from_slice(&self.bytes.to_le_bytes());
        b
    }

    /// Decodes the wire bytes; `None` if the reserved word is not zero.
    pub fn decode(b: &[u8; Self::LEN]) -> Option<Self> {
        let r = Self {
            id: le_u32(b, 0)?,
            status: le_u32(b, 4)?,
            bytes: le_u32(b, 8)?,
        };
        (le_u32(b, 12)? == 0).then_some(r)
    }
}

/// The serial of disk `n`'s backing device in the service VM, as the host
/// tool gives it to QEMU and the daemon looks for it in
/// `/sys/block/*/serial`: the bytes and how many are used (at most 17).
pub fn serial(n: u16) -> ([u8; 20], usize) {
    let mut out = [0u8; 20];
    let prefix = b"stratum-disk";
    out[..prefix.len()].copy_from_slice(prefix);
    let mut len = prefix.len();
    let mut digits = [0u8; 5];
    let mut k = 0;
    let mut v = n;
    loop {
        digits[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while k > 0 {
        k -= 1;
        out[len] = digits[k];
        len += 1;
    }
    (out, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_at_their_offsets() {
        let h = Hello::new(0b101);
        let b = h.encode();
        assert_eq!(&b[0..4], b"SBLK");
        assert_eq!(Hello::decode(&b), Some(h));
        let mut bad = b;
        bad[4] = 9;
        assert_eq!(Hello::decode(&bad), None, "another version");
        let h = Hello::with_regions(1, MAX_REGIONS);
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[12] += 1;
        assert_eq!(Hello::decode(&bad), None, "more regions than allowed");

        let g = Region {
            addr: 0x4820_0000,
            len: 2 << 20,
        };
        let b = g.encode();
        assert_eq!(&b[0..8], &0x4820_0000u64.to_le_bytes());
        assert_eq!(Region::decode(&b), Some(g));
        for bad in [
            Region {
                addr: 0x4820_0800,
                ..g
            },
            Region { len: 100, ..g },
            Region { len: 0, ..g },
            Region {
                addr: u64::MAX - 4095,
                len: 8192,
            },
        ] {
            assert_eq!(Region::decode(&bad.encode()), None, "{bad:?}");
        }

        let r = Request {
            id: 0x0102_0304,
            disk: 3,
            op: op::WRITE,
            sector: 0x1_0000_0002,
            bytes: 4096,
            place: INLINE,
        };
        let b = r.encode();
        assert_eq!(&b[4..8], &[3, 0, 1, 0]);
        assert_eq!(&b[8..16], &0x1_0000_0002u64.to_le_bytes());
        assert_eq!(&b[20..24], &[0xff; 4]);
        assert_eq!(Request::decode(&b), Some(r));
        assert_eq!((r.data_follows(), r.data_returned()), (4096, 0));
        let read = Request { op: op::READ, ..r };
        assert_eq!(
            (read.data_follows(), read.data_returned()),
            (0, 4096),
            "a read's data comes back, not with it"
        );
        let placed = Request {
            place: 0x2_0000,
            ..r
        };
        assert_eq!(Request::decode(&placed.encode()), Some(placed));
        assert!(placed.is_placed() && !r.is_placed());
        assert_eq!((placed.data_follows(), placed.data_returned()), (0, 0));
        let placed_read = Request {
            op: op::READ,
            ..placed
        };
        assert_eq!(placed_read.data_returned(), 0, "it is in its place");

        let a = Reply {
            id: 7,
            status: status::IOERR,
            bytes: 0,
        };
        assert_eq!(Reply::decode(&a.encode()), Some(a));
        let mut bad = a.encode();
        bad[12] = 1;
        assert_eq!(Reply::decode(&bad), None);
    }

    #[test]
    fn serials_name_the_disk_in_decimal() {
        let (s, n) = serial(0);
        assert_eq!(&s[..n], b"stratum-disk0");
        let (s, n) = serial(15);
        assert_eq!(&s[..n], b"stratum-disk15");
        let (s, n) = serial(u16::MAX);
        assert_eq!(&s[..n], b"stratum-disk65535");
        assert!(s[n..].iter().all(|&b| b == 0));
    }
}
