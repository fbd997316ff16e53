//! One descriptor chain as the device sees it: a bounded list of buffers,
//! the device-readable ones first, then the device-writable ones (virtio
//! 1.2 §2.7.4.2: "The driver MUST place any device-writable descriptor
//! elements after any device-readable descriptor elements").
//!
//! A [`Chain`] is built only by the ring walker ([`crate::queue`]), which
//! checks every buffer as it adds it: non-empty, wholly inside the VM's
//! RAM, in readable-then-writable order, at most [`MAX_SEGMENTS`] of them
//! and less than 4 GiB in total (a used element reports the bytes written
//! as a `u32`). The copy helpers address the readable and the writable
//! bytes as one stream each, so a device never handles a segment boundary
//! or an address itself.
//!
//! A chain is a snapshot: the driver owns the buffers' contents until the
//! device returns the chain, so the helpers read and write through
//! [`GuestMemory`] every time, and a buffer the driver moved out of RAM
//! since (impossible for RAM, possible for a future backend) is an error,
//! not a fault.

use stratum_core::addr::Ipa;

use crate::mem::GuestMemory;
use crate::queue::QueueError;

/// Most buffers one chain may have. Linux's virtio-net sends at most
/// `MAX_SKB_FRAGS + 2` (19 by default) per packet, its vsock and console
/// drivers one or two; its virtio-blk as many as the device's `seg_max`
/// allows plus two, and 126 data buffers let it send a 1 MiB write as two
/// requests, as to QEMU's device, rather than nine (ADR 0024). A chain
/// with more is refused ([`QueueError::TooManySegments`]).
pub const MAX_SEGMENTS: usize = 128;

/// One guest buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its first byte.
    pub addr: Ipa,
    /// Its length in bytes (never 0).
    pub len: u32,
}

const NO_SEGMENT: Segment = Segment {
    addr: Ipa(0),
    len: 0,
};

/// A checked descriptor chain: its head index (what the device returns in
/// the used ring), its readable buffers, then its writable ones.
///
/// Two kilobytes: the hot paths fill one in place
/// ([`crate::queue::SplitQueue::pop_into`]) rather than move it, and a
/// reset forgets the segments without clearing them (nothing reads past
/// `count`, and equality compares only the live ones).
#[derive(Clone, Debug)]
pub struct Chain {
    head: u16,
    segments: [Segment; MAX_SEGMENTS],
    count: u8,
    readable: u8,
    readable_len: u32,
    writable_len: u32,
}

/// Which way a buffer goes, as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The device reads it (the driver filled it).
    Readable,
    /// The device writes it.
    Writable,
}

impl PartialEq for Chain {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head
            && self.count == other.count
            && self.readable == other.readable
            && self.readable_len == other.readable_len
            && self.writable_len == other.writable_len
            && self.segments[..usize::from(self.count)]
                == other.segments[..usize::from(other.count)]
    }
}

impl Eq for Chain {}

impl Chain {
    /// An empty chain, to be filled in place.
    pub const EMPTY: Self = Self::new(0);

    /// An empty chain headed by descriptor `head`.
    pub(crate) const fn new(head: u16) -> Self {
        Self {
            head,
            segments: [NO_SEGMENT; MAX_SEGMENTS],
            count: 0,
            readable: 0,
            readable_len: 0,
            writable_len: 0,
        }
    }

    /// A chain of one buffer, `len` bytes at `addr` going `direction`,
    /// checked against `mem` as a driver's would be: how the disk link
    /// names a place in the service VM's registered buffers for
    /// [`copy_between`].
    pub(crate) fn span(
        mem: &dyn GuestMemory,
        addr: Ipa,
        len: u32,
        direction: Direction,
    ) -> Result<Self, QueueError> {
        let mut chain = Self::new(0);
        chain.push(mem, addr, len, direction)?;
        Ok(chain)
    }

    /// Empties the chain and heads it by descriptor `head`.
    pub(crate) fn reset(&mut self, head: u16) {
        self.head = head;
        self.count = 0;
        self.readable = 0;
        self.readable_len = 0;
        self.writable_len = 0;
    }

    /// Adds a buffer after checking it: not empty, inside RAM, not a
    /// readable one after a writable one, within [`MAX_SEGMENTS`] and the
    /// 4 GiB total.
    pub(crate) fn push(
        &mut self,
        mem: &dyn GuestMemory,
        addr: Ipa,
        len: u32,
        direction: Direction,
    ) -> Result<(), QueueError> {
        if len == 0 {
            return Err(QueueError::ZeroLength);
        }
        if !mem.contains(addr, u64::from(len)) {
            return Err(QueueError::OutsideRam {
                addr,
                len: u64::from(len),
            });
        }
        let count = usize::from(self.count);
        if direction == Direction::Readable && count > usize::from(self.readable) {
            return Err(QueueError::ReadableAfterWritable);
        }
        if count == MAX_SEGMENTS {
            return Err(QueueError::TooManySegments);
        }
        self.readable_len
            .checked_add(self.writable_len)
            .and_then(|total| total.checked_add(len))
            .ok_or(QueueError::TooLong)?;
        self.segments[count] = Segment { addr, len };
        self.count += 1;
        match direction {
            Direction::Readable => {
                self.readable += 1;
                self.readable_len += len;
            }
            Direction::Writable => self.writable_len += len,
        }
        Ok(())
    }

    /// The head descriptor's index: what [`crate::queue::SplitQueue::add_used`]
    /// takes to return the chain.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The device-readable buffers, in order.
    pub fn readable(&self) -> &[Segment] {
        &self.segments[..usize::from(self.readable)]
    }

    /// The device-writable buffers, in order.
    pub fn writable(&self) -> &[Segment] {
        &self.segments[usize::from(self.readable)..usize::from(self.count)]
    }

    /// The first buffer that does not lie wholly inside `mem` (a chain
    /// from [`crate::queue::SplitQueue::pop_keeping_outside`] may hold
    /// such), if any.
    pub fn first_outside(&self, mem: &dyn GuestMemory) -> Option<Segment> {
        self.segments[..usize::from(self.count)]
            .iter()
            .copied()
            .find(|s| !mem.contains(s.addr, u64::from(s.len)))
    }

    /// Total bytes of the readable buffers.
    pub fn readable_len(&self) -> u32 {
        self.readable_len
    }

    /// Total bytes of the writable buffers.
    pub fn writable_len(&self) -> u32 {
        self.writable_len
    }

    /// Refuses a chain with fewer than `readable` readable or `writable`
    /// writable bytes: a device that needs a request header and a status
    /// byte checks both before it reads anything.
    pub fn require(&self, readable: u32, writable: u32) -> Result<(), QueueError> {
        if self.readable_len < readable {
            return Err(QueueError::NeedReadable {
                wanted: u64::from(readable),
                have: self.readable_len,
            });
        }
        if self.writable_len < writable {
            return Err(QueueError::NeedWritable {
                wanted: u64::from(writable),
                have: self.writable_len,
            });
        }
        Ok(())
    }

    /// Copies the readable bytes `[offset, offset + buf.len())` into `buf`;
    /// refuses a range past the readable bytes.
    pub fn read(
        &self,
        mem: &dyn GuestMemory,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<(), QueueError> {
        let want = u64::from(offset) + buf.len() as u64;
        if want > u64::from(self.readable_len) {
            return Err(QueueError::NeedReadable {
                wanted: want,
                have: self.readable_len,
            });
        }
        let mut done = 0;
        for (addr, range) in spans(self.readable(), offset, buf.len()) {
            mem.read(addr, &mut buf[done..done + range])
                .map_err(QueueError::from)?;
            done += range;
        }
        Ok(())
    }

    /// Copies `data` into the writable bytes from `offset`; refuses a range
    /// past the writable bytes.
    pub fn write(
        &self,
        mem: &mut dyn GuestMemory,
        offset: u32,
        data: &[u8],
    ) -> Result<(), QueueError> {
        let want = u64::from(offset) + data.len() as u64;
        if want > u64::from(self.writable_len) {
            return Err(QueueError::NeedWritable {
                wanted: want,
                have: self.writable_len,
            });
        }
        let mut done = 0;
        for (addr, range) in spans(self.writable(), offset, data.len()) {
            mem.write(addr, &data[done..done + range])
                .map_err(QueueError::from)?;
            done += range;
        }
        Ok(())
    }
}

/// Copies `len` bytes of `src`'s readable stream from `src_offset` (in
/// `src_mem`, another VM's memory) into `dst`'s writable stream from
/// `dst_offset` (in `dst_mem`), piece by piece where the two chains'
/// segments meet, with [`GuestMemory::copy_from`]: one copy, no buffer
/// when the source is host-mapped. A range past either stream is refused
/// before anything is copied; a memory refusal (impossible for chains
/// checked against RAM that never moves) is an error of the destination's
/// queue.
pub fn copy_between(
    src: &Chain,
    src_mem: &dyn GuestMemory,
    src_offset: u32,
    dst: &Chain,
    dst_mem: &mut dyn GuestMemory,
    dst_offset: u32,
    len: u32,
) -> Result<(), QueueError> {
    let src_want = u64::from(src_offset) + u64::from(len);
    if src_want > u64::from(src.readable_len) {
        return Err(QueueError::NeedReadable {
            wanted: src_want,
            have: src.readable_len,
        });
    }
    let dst_want = u64::from(dst_offset) + u64::from(len);
    if dst_want > u64::from(dst.writable_len) {
        return Err(QueueError::NeedWritable {
            wanted: dst_want,
            have: dst.writable_len,
        });
    }
    let mut from = spans(src.readable(), src_offset, len as usize);
    let mut to = spans(dst.writable(), dst_offset, len as usize);
    let (mut a, mut b) = (from.next(), to.next());
    while let (Some((sa, sn)), Some((da, dn))) = (a, b) {
        let n = sn.min(dn);
        dst_mem
            .copy_from(da, src_mem, sa, n as u64)
            .map_err(QueueError::from)?;
        a = if n == sn {
            from.next()
        } else {
            Some((Ipa(sa.0 + n as u64), sn - n))
        };
        b = if n == dn {
            to.next()
        } else {
            Some((Ipa(da.0 + n as u64), dn - n))
        };
    }
    Ok(())
}

/// The pieces of `[offset, offset + len)` of the stream `segments` make,
/// as (address, bytes) per segment touched. The caller has checked that
/// the stream is long enough.
fn spans(segments: &[Segment], offset: u32, len: usize) -> impl Iterator<Item = (Ipa, usize)> + '_ {
    let mut skip = u64::from(offset);
    let mut left = len as u64;
    segments.iter().filter_map(move |s| {
        let seg = u64::from(s.len);
        if skip >= seg {
            skip -= seg;
            return None;
        }
        if left == 0 {
            return None;
        }
        let take = (seg - skip).min(left);
        let addr = Ipa(s.addr.0 + skip);
        skip = 0;
        left -= take;
        Some((addr, take as usize))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::SliceMemory;

    fn mem(ram: &mut [u8]) -> SliceMemory<'_> {
        SliceMemory::new(Ipa(0x1000), ram)
    }

    #[test]
    fn a_copy_between_chains_follows_both_segmentations() {
        let mut a = [0u8; 0x100];
        for (i, b) in a.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut b = [0u8; 0x100];
        let src_mem = SliceMemory::new(Ipa(0x1000), &mut a);
        let mut dst_mem = SliceMemory::new(Ipa(0x1000), &mut b);
        // Source: 5 + 20 + 7 readable bytes; destination: 9 + 3 + 30 writable.
        let mut src = Chain::new(1);
        for (addr, len) in [(0x1010, 5), (0x1080, 20), (0x10f0, 7)] {
            src.push(&src_mem, Ipa(addr), len, Direction::Readable)
                .expect("inside");
        }
        let mut dst = Chain::new(2);
        for (addr, len) in [(0x1000, 9), (0x1040, 3), (0x10a0, 30)] {
            dst.push(&dst_mem, Ipa(addr), len, Direction::Writable)
                .expect("inside");
        }
        // Bytes 2.. of the source stream to bytes 4.. of the destination.
        copy_between(&src, &src_mem, 2, &dst, &mut dst_mem, 4, 28).expect("fits");
        let want: Vec<u8> = [0x12, 0x13, 0x14]
            .into_iter()
            .chain(0x80..0x94)
            .chain(0xf0..0xf5)
            .collect();
        let mut got = [0u8; 28];
        dst.read_writable_for_test(&dst_mem, 4, &mut got);
        assert_eq!(&got[..], &want[..]);
        assert_eq!(dst_mem.bytes()[0..4], [0; 4], "before the offset untouched");
        assert_eq!(
            copy_between(&src, &src_mem, 0, &dst, &mut dst_mem, 0, 33),
            Err(QueueError::NeedReadable {
                wanted: 33,
                have: 32
            })
        );
        assert_eq!(
            copy_between(&src, &src_mem, 0, &dst, &mut dst_mem, 20, 30),
            Err(QueueError::NeedWritable {
                wanted: 50,
                have: 42
            })
        );
    }

    impl Chain {
        /// The writable stream's bytes `[offset, offset + buf.len())`.
        fn read_writable_for_test(&self, mem: &dyn GuestMemory, offset: u32, buf: &mut [u8]) {
            let mut done = 0;
            for (addr, n) in spans(self.writable(), offset, buf.len()) {
                mem.read(addr, &mut buf[done..done + n]).expect("inside");
                done += n;
            }
        }
    }

    #[test]
    fn buffers_are_checked_as_they_are_added() {
        let mut ram = [0u8; 0x100];
        let m = mem(&mut ram);
        let mut c = Chain::new(3);
        assert_eq!(
            c.push(&m, Ipa(0x1000), 0, Direction::Readable),
            Err(QueueError::ZeroLength)
        );
        assert_eq!(
            c.push(&m, Ipa(0x10f0), 0x11, Direction::Readable),
            Err(QueueError::OutsideRam {
                addr: Ipa(0x10f0),
                len: 0x11
            })
        );
        assert_eq!(
            c.push(&m, Ipa(0x0ff0), 0x10, Direction::Readable),
            Err(QueueError::OutsideRam {
                addr: Ipa(0x0ff0),
                len: 0x10
            })
        );
        c.push(&m, Ipa(0x1000), 4, Direction::Readable).expect("ok");
        c.push(&m, Ipa(0x1010), 4, Direction::Writable).expect("ok");
        assert_eq!(
            c.push(&m, Ipa(0x1020), 4, Direction::Readable),
            Err(QueueError::ReadableAfterWritable)
        );
        assert_eq!(c.head(), 3);
        assert_eq!(c.readable().len(), 1);
        assert_eq!(c.writable().len(), 1);
        assert_eq!((c.readable_len(), c.writable_len()), (4, 4));
    }

    #[test]
    fn a_chain_holds_at_most_max_segments_and_under_4_gib() {
        let mut ram = [0u8; 0x100];
        let m = mem(&mut ram);
        let mut c = Chain::new(0);
        for _ in 0..MAX_SEGMENTS {
            c.push(&m, Ipa(0x1000), 1, Direction::Writable)
                .expect("room");
        }
        assert_eq!(
            c.push(&m, Ipa(0x1000), 1, Direction::Writable),
            Err(QueueError::TooManySegments)
        );
        // A total past u32::MAX: RAM this big is faked by a wide memory.
        struct Huge;
        impl GuestMemory for Huge {
            fn read(&self, _: Ipa, _: &mut [u8]) -> Result<(), crate::mem::MemError> {
                Ok(())
            }
            fn write(&mut self, _: Ipa, _: &[u8]) -> Result<(), crate::mem::MemError> {
                Ok(())
            }
            fn contains(&self, _: Ipa, _: u64) -> bool {
                true
            }
            fn fence(&self, _: crate::mem::Fence) {}
        }
        let mut c = Chain::new(0);
        c.push(&Huge, Ipa(0), u32::MAX, Direction::Readable)
            .expect("fits");
        assert_eq!(
            c.push(&Huge, Ipa(0), 1, Direction::Writable),
            Err(QueueError::TooLong)
        );
    }

    #[test]
    fn reads_and_writes_cross_segment_boundaries() {
        let mut ram = [0u8; 0x100];
        for (i, b) in ram.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut m = mem(&mut ram);
        let mut c = Chain::new(0);
        c.push(&m, Ipa(0x1010), 3, Direction::Readable).expect("ok");
        c.push(&m, Ipa(0x1040), 5, Direction::Readable).expect("ok");
        c.push(&m, Ipa(0x1080), 2, Direction::Writable).expect("ok");
        c.push(&m, Ipa(0x10a0), 4, Direction::Writable).expect("ok");
        let mut buf = [0u8; 4];
        c.read(&m, 2, &mut buf).expect("inside");
        assert_eq!(buf, [0x12, 0x40, 0x41, 0x42]);
        assert_eq!(
            c.read(&m, 5, &mut buf),
            Err(QueueError::NeedReadable { wanted: 9, have: 8 })
        );
        c.write(&mut m, 1, &[0xa, 0xb, 0xc]).expect("inside");
        assert_eq!(&m.bytes()[0x80..0x82], &[0x80, 0xa]);
        assert_eq!(&m.bytes()[0xa0..0xa3], &[0xb, 0xc, 0xa2]);
        assert_eq!(
            c.write(&mut m, 4, &[0; 3]),
            Err(QueueError::NeedWritable { wanted: 7, have: 6 })
        );
        assert_eq!(c.require(8, 6), Ok(()));
        assert_eq!(
            c.require(9, 0),
            Err(QueueError::NeedReadable { wanted: 9, have: 8 })
        );
        assert_eq!(
            c.require(0, 7),
            Err(QueueError::NeedWritable { wanted: 7, have: 6 })
        );
    }
}
