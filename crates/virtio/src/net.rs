//! The virtio-net device (virtio 1.2 §5.1): one NIC of a VM on a virtual
//! switch ([`crate::switch`]).
//!
//! The device offers `VIRTIO_NET_F_MAC` (the MAC the host tool derived,
//! [`derive_mac`]), `VIRTIO_NET_F_MTU` ([`MTU`]), `VIRTIO_NET_F_STATUS`
//! (the link is always up) and the checksum and TCP/IPv4 segmentation
//! offloads in both directions ([`OFFLOADS`]). With `VIRTIO_F_VERSION_1`
//! every frame in either direction is preceded by the 12-byte
//! `virtio_net_hdr_v1` ([`HDR_LEN`]); on receive its `num_buffers` is 1
//! (§5.1.6.4: without `VIRTIO_NET_F_MRG_RXBUF` the device sets it to 1).
//!
//! # Offloads
//! A driver that negotiated `VIRTIO_NET_F_CSUM` may send a frame whose
//! checksum is left for the device (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, with
//! `csum_start` and `csum_offset`); with `VIRTIO_NET_F_HOST_TSO4` as well,
//! a TCP/IPv4 frame of up to 64 KiB (`VIRTIO_NET_HDR_GSO_TCPV4`, cut into
//! `gso_size`-byte segments). The switch never does that work for a
//! receiver that can take the frame as it is: one whose driver negotiated
//! `VIRTIO_NET_F_GUEST_CSUM` (and `VIRTIO_NET_F_GUEST_TSO4` for a
//! segmentation frame) gets the frame and the sender's header unchanged,
//! as a physical NIC's driver gets a frame its hardware has not yet
//! checked, and one copy moves 64 KiB. Any other receiver gets what a
//! wire would carry ([`put_frame`]): the checksum filled in, or the frame
//! cut into MTU-sized TCP segments, each with its own IPv4 length,
//! identification and header checksum, sequence number, flags and TCP
//! checksum (§5.1.6.2.1, what Linux's `tcp_gso_segment` produces). So an
//! offload is never visible to a peer that did not ask for it, and a
//! bare-metal driver with no offload at all talks to Linux unchanged.
//!
//! A transmitted header is checked before the frame is switched
//! ([`TxDrop`]): an offload its driver did not negotiate, a checksum
//! position outside the frame, a segmentation frame that is not
//! TCP/IPv4 with whole headers, or whose segments would exceed the MTU, is
//! dropped and counted, so every frame that leaves the switch, passed on
//! or segmented, is one the receiver's stack could have got from a wire.
//!
//! Queue 0 receives, queue 1 transmits (§5.1.2). The device moves no frame
//! itself: a notify on the transmit queue is remembered
//! ([`NetDevice::take_tx_kick`]), and the glue then runs the switch, which
//! takes frames out of this VM's transmit queue with [`take_frame`], copies
//! each from this VM's buffers into the receive queue of the VMs it is for
//! with [`put_frame`] and returns the transmit chains with [`complete`],
//! each step under that VM's own lock. A notify on the receive
//! queue needs nothing: receive buffers are taken when a frame arrives,
//! and a frame that finds none is dropped (the switch counts it), never
//! kept, so no state grows with a peer that never reads. The device asks
//! the driver not to send one either
//! ([`crate::queue::SplitQueue::pop_into_unnotified`]): an exit per refill
//! would buy nothing.
//!
//! # Frames
//! A frame is the Ethernet header and payload, without the FCS: at least
//! [`ETH_HEADER`] bytes and at most [`MAX_FRAME`] (the MTU plus a header
//! with one VLAN tag), or [`MAX_GSO_FRAME`] for a segmentation frame. A
//! transmitted chain outside those bounds, or with
//! fewer readable bytes than the header, is taken, returned to the driver
//! and dropped with a [`TxDrop`] reason; only a broken ring
//! ([`QueueError`]) stops the device.

use crate::chain::{Chain, copy_between};
use crate::device::{Queues, VirtioDevice};
use crate::mem::GuestMemory;
use crate::queue::{QueueError, SplitQueue};
use crate::spec::device_id;

/// The receive queue.
pub const RX: u16 = 0;
/// The transmit queue.
pub const TX: u16 = 1;
/// Entries of each queue at most (Linux asks for the maximum).
pub const QUEUE_SIZE: u16 = 256;

/// `VIRTIO_NET_F_CSUM`: the device completes checksums the driver leaves
/// (`VIRTIO_NET_HDR_F_NEEDS_CSUM` on transmit).
pub const F_CSUM: u64 = 1 << 0;
/// `VIRTIO_NET_F_GUEST_CSUM`: the driver takes frames with a partial
/// checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM` on receive).
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// `VIRTIO_NET_F_GUEST_TSO4`: the driver takes TCP/IPv4 segmentation
/// frames. Requires [`F_GUEST_CSUM`].
pub const F_GUEST_TSO4: u64 = 1 << 7;
/// `VIRTIO_NET_F_HOST_TSO4`: the device segments TCP/IPv4 frames the
/// driver sends. Requires [`F_CSUM`].
pub const F_HOST_TSO4: u64 = 1 << 11;
/// The offloads the device offers.
pub const OFFLOADS: u64 = F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_HOST_TSO4;
/// `VIRTIO_NET_F_MRG_RXBUF`: a received frame may fill several receive
/// buffers (`num_buffers` in the header).
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// `VIRTIO_NET_F_MTU`: the configuration's `mtu` is valid.
pub const F_MTU: u64 = 1 << 3;
/// `VIRTIO_NET_F_MAC`: the configuration's `mac` is valid.
pub const F_MAC: u64 = 1 << 5;
/// `VIRTIO_NET_F_STATUS`: the configuration's `status` is valid.
pub const F_STATUS: u64 = 1 << 16;
/// `VIRTIO_NET_S_LINK_UP` in the configuration's `status`.
pub const S_LINK_UP: u16 = 1;

/// Bytes of `virtio_net_hdr_v1` (flags, gso_type, hdr_len, gso_size,
/// csum_start, csum_offset, num_buffers).
pub const HDR_LEN: usize = 12;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM` in the header's flags.
pub const HDR_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// The MTU the device reports: the largest IP packet a frame carries.
pub const MTU: u16 = 1500;
/// Bytes of an Ethernet header (destination, source, EtherType).
pub const ETH_HEADER: usize = 14;
/// The largest frame switched: the MTU, the Ethernet header and one
/// 802.1Q tag.
pub const MAX_FRAME: usize = MTU as usize + ETH_HEADER + 4;
/// The largest segmentation frame switched: a whole IPv4 packet (64 KiB
/// less one byte) behind an Ethernet header with one 802.1Q tag.
pub const MAX_GSO_FRAME: usize = u16::MAX as usize + ETH_HEADER + 4;
/// The most header bytes a segmentation frame has: Ethernet with one tag,
/// and IPv4 and TCP with all their options.
pub const MAX_HEADERS: usize = ETH_HEADER + 4 + 60 + 60;
/// Bytes of the configuration space: `mac` (6), `status` (2),
/// `max_virtqueue_pairs` (2), `mtu` (2).
pub const CONFIG_LEN: usize = 12;

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// Whether it is a group (multicast or broadcast) address: bit 0 of
    /// the first byte.
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Whether it is locally administered: bit 1 of the first byte.
    pub fn is_local(&self) -> bool {
        self.0[0] & 2 != 0
    }
}

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The MAC of VM `vm`'s NIC on network `network`: the FNV-1a 64-bit hash
/// of the bytes `vm`, a zero byte, `network` (offset basis
/// `0xcbf2_9ce4_8422_2325`, prime `0x100_0000_01b3`), its low six bytes
/// little-endian, with the first byte's group bit cleared and its
/// locally-administered bit set. Stable across runs and builds; two
/// different pairs may collide, which the host tool refuses for NICs on
/// one network.
pub fn derive_mac(vm: &str, network: &str) -> Mac {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in vm.as_bytes().iter().chain(&[0]).chain(network.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let b = h.to_le_bytes();
    Mac([(b[0] & !1) | 2, b[1], b[2], b[3], b[4], b[5]])
}

/// Where a segmentation frame's headers are, found by [`take_frame`]:
/// the IPv4 header at `l3`, the TCP header at `l4`, the payload at
/// `headers`; `mss` payload bytes per segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Gso {
    l3: u8,
    l4: u8,
    headers: u8,
    mss: u16,
}

/// A frame taken from a transmit queue and still in the sender's buffers:
/// its chain (returned to the driver only once the frame was delivered,
/// [`complete`]), its length and a copy of its headers (the switch decides
/// on the Ethernet one). The payload is copied once, straight into each
/// receiver's buffers ([`put_frame`]).
#[derive(Clone)]
pub struct TxFrame {
    chain: Chain,
    len: u32,
    /// The virtio-net header and the Ethernet header, read in one piece.
    head: [u8; HDR_LEN + ETH_HEADER],
    /// For a segmentation frame, where its headers are.
    gso: Option<Gso>,
}

impl TxFrame {
    /// An empty slot.
    pub const EMPTY: Self = Self {
        chain: Chain::EMPTY,
        len: 0,
        head: [0; HDR_LEN + ETH_HEADER],
        gso: None,
    };

    /// The frame's length (Ethernet header and payload).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether it is empty (never, for a frame [`take_frame`] took).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its destination address.
    pub fn destination(&self) -> Mac {
        let h = &self.head;
        Mac([h[12], h[13], h[14], h[15], h[16], h[17]])
    }

    /// Its source address.
    pub fn source(&self) -> Mac {
        let h = &self.head;
        Mac([h[18], h[19], h[20], h[21], h[22], h[23]])
    }

    /// The head of its chain.
    pub fn head(&self) -> u16 {
        self.chain.head()
    }

    /// Whether its checksum is left for the device.
    fn needs_csum(&self) -> bool {
        self.head[0] & HDR_F_NEEDS_CSUM != 0
    }

    /// A little-endian field of the virtio-net header.
    fn field(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.head[at], self.head[at + 1]])
    }
}

impl core::fmt::Debug for TxFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TxFrame")
            .field("head", &self.head())
            .field("len", &self.len)
            .field("gso", &self.gso)
            .finish()
    }
}

/// Why a transmitted chain was dropped rather than switched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxDrop {
    /// Fewer readable bytes than the header.
    NoHeader,
    /// A frame shorter than an Ethernet header.
    Runt,
    /// A frame longer than [`MAX_FRAME`] ([`MAX_GSO_FRAME`] for a
    /// segmentation frame).
    OverMtu,
    /// A header asking for an offload the driver did not negotiate (or
    /// that the device does not offer: UDP, IPv6, ECN segmentation).
    Offload,
    /// A header asking for an offload with fields that do not fit the
    /// frame: a checksum position outside it, or a segmentation frame that
    /// is not TCP/IPv4 with whole headers, has no payload, or whose
    /// segments would exceed the [`MTU`].
    BadOffload,
}

/// What [`take_frame`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// The transmit queue is empty (and armed: the driver notifies at its
    /// next frame).
    Empty,
    /// A frame, described in the caller's [`TxFrame`]; its chain stays
    /// the device's until [`complete`].
    Frame,
    /// A chain that was returned and dropped.
    Dropped(TxDrop),
}

/// What [`put_frame`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// Written into a receive buffer (each segment into one) and returned
    /// to the driver.
    Delivered,
    /// The driver has posted no receive buffer (for a later segment):
    /// dropped (the rest of it).
    NoBuffer,
    /// The next receive buffer is too small for the header and frame (or
    /// segment): it was returned empty (length 0, which drivers count as
    /// an error) and the frame (the rest of it) dropped.
    TooSmall,
}

/// Takes the next chain of the transmit queue into `frame` (filled in
/// place: a chain is half a kilobyte), checking its header against the
/// driver's negotiated `features`. Like [`put_frame`] and [`complete`],
/// it runs inside [`crate::Transport::with_device`], which publishes the
/// used index once at its end (the chains are returned with
/// [`crate::SplitQueue::add_used_deferred`]). A frame to switch keeps its chain
/// until [`complete`] returns it; a chain that is dropped is returned to
/// the driver at once (a transmit buffer is never written).
pub fn take_frame(
    queues: &mut Queues<'_>,
    mem: &mut dyn GuestMemory,
    frame: &mut TxFrame,
    features: u64,
) -> Result<Taken, QueueError> {
    // A queue the driver has not made ready holds nothing (not an error:
    // the device may be driven with one direction only).
    let Ok(tx) = queues.get(TX) else {
        return Ok(Taken::Empty);
    };
    if !tx.pop_into(mem, &mut frame.chain)? {
        return Ok(Taken::Empty);
    }
    let result = check_frame(mem, frame, features);
    if !matches!(result, Ok(Taken::Frame)) {
        tx.add_used_deferred(mem, frame.head(), 0)?;
    }
    result
}

/// Checks the frame `frame.chain` holds and reads its headers.
fn check_frame(
    mem: &dyn GuestMemory,
    frame: &mut TxFrame,
    features: u64,
) -> Result<Taken, QueueError> {
    let total = frame.chain.readable_len() as usize;
    if total < HDR_LEN {
        return Ok(Taken::Dropped(TxDrop::NoHeader));
    }
    let len = total - HDR_LEN;
    if len < ETH_HEADER {
        return Ok(Taken::Dropped(TxDrop::Runt));
    }
    if len > MAX_GSO_FRAME {
        return Ok(Taken::Dropped(TxDrop::OverMtu));
    }
    frame.chain.read(mem, 0, &mut frame.head)?;
    frame.len = len as u32;
    frame.gso = None;
    if frame.needs_csum() {
        if features & F_CSUM == 0 {
            return Ok(Taken::Dropped(TxDrop::Offload));
        }
        let (start, offset) = (usize::from(frame.field(6)), usize::from(frame.field(8)));
        if start + offset + 2 > len {
            return Ok(Taken::Dropped(TxDrop::BadOffload));
        }
    }
    match frame.head[1] {
        GSO_NONE if len > MAX_FRAME => Ok(Taken::Dropped(TxDrop::OverMtu)),
        GSO_NONE => Ok(Taken::Frame),
        GSO_TCPV4 if features & F_HOST_TSO4 != 0 => {
            // §5.1.6.2: segmentation needs the checksum offload too.
            if !frame.needs_csum() {
                return Ok(Taken::Dropped(TxDrop::BadOffload));
            }
            let mut h = [0u8; MAX_HEADERS];
            let n = len.min(MAX_HEADERS);
            frame.chain.read(mem, HDR_LEN as u32, &mut h[..n])?;
            match tcp4_headers(&h[..n], frame.field(4), len) {
                Some(gso) => {
                    frame.gso = Some(gso);
                    Ok(Taken::Frame)
                }
                None => Ok(Taken::Dropped(TxDrop::BadOffload)),
            }
        }
        _ => Ok(Taken::Dropped(TxDrop::Offload)),
    }
}

/// Where the headers of a TCP/IPv4 frame of `len` bytes starting with
/// `h` are, if it can be cut into segments of `mss` payload bytes that
/// carry IPv4 packets within the MTU: an Ethernet header (with at most one 802.1Q tag), an
/// unfragmented IPv4 header, a TCP header, and some payload.
fn tcp4_headers(h: &[u8], mss: u16, len: usize) -> Option<Gso> {
    let be = |at: usize| Some(u16::from_be_bytes([*h.get(at)?, *h.get(at + 1)?]));
    let (mut l3, mut ethertype) = (ETH_HEADER, be(12)?);
    if ethertype == 0x8100 {
        (l3, ethertype) = (ETH_HEADER + 4, be(16)?);
    }
    let version_ihl = *h.get(l3)?;
    let ihl = usize::from(version_ihl & 0xf) * 4;
    // Version 4, a whole header, TCP, neither more fragments nor an offset.
    if ethertype != 0x0800 || version_ihl >> 4 != 4 || ihl < 20 || *h.get(l3 + 9)? != 6 {
        return None;
    }
    if be(l3 + 6)? & 0x3fff != 0 {
        return None;
    }
    let l4 = l3 + ihl;
    let doff = usize::from(*h.get(l4 + 12)? >> 4) * 4;
    let headers = l4 + doff;
    if doff < 20 || headers > h.len() || headers >= len {
        return None;
    }
    // Each segment's IPv4 packet within the MTU.
    if mss == 0 || headers - l3 + usize::from(mss) > usize::from(MTU) {
        return None;
    }
    Some(Gso {
        l3: l3 as u8,
        l4: l4 as u8,
        headers: headers as u8,
        mss,
    })
}

/// Returns the chains of `frames` (taken by [`take_frame`] and delivered
/// or dropped since) to the driver of the transmit queue they came from.
pub fn complete(
    queues: &mut Queues<'_>,
    mem: &mut dyn GuestMemory,
    frames: &[TxFrame],
) -> Result<(), QueueError> {
    let Ok(tx) = queues.get(TX) else {
        return Ok(());
    };
    for f in frames {
        tx.add_used_deferred(mem, f.head(), 0)?;
    }
    Ok(())
}

/// Scratch space for the receive chains one frame is written into: the
/// first (which holds the header) and, with `VIRTIO_NET_F_MRG_RXBUF`, the
/// one being filled after it. A kilobyte: the switch keeps one.
#[derive(Clone, Debug)]
pub struct RxScratch {
    first: Chain,
    next: Chain,
}

impl RxScratch {
    /// Empty scratch space.
    pub const EMPTY: Self = Self {
        first: Chain::EMPTY,
        next: Chain::EMPTY,
    };
}

/// Puts `frame` (in `from`, the sender's memory) into the receive buffers
/// of `mem`, with its header: one copy from the sender's buffers to the
/// receiver's ([`crate::chain::copy_between`]). `features` are the
/// receiver's driver's: with `VIRTIO_NET_F_MRG_RXBUF` a frame fills as many
/// buffers as it needs (`num_buffers` in the header), otherwise one; and a
/// frame with an offload the driver did not negotiate arrives with that
/// work done (the checksum filled in, or one frame per segment).
pub fn put_frame(
    queues: &mut Queues<'_>,
    mem: &mut dyn GuestMemory,
    from: &dyn GuestMemory,
    frame: &TxFrame,
    scratch: &mut RxScratch,
    features: u64,
) -> Result<Put, QueueError> {
    let Ok(rx) = queues.get(RX) else {
        return Ok(Put::NoBuffer);
    };
    let merge = features & F_MRG_RXBUF != 0;
    if let Some(gso) = frame.gso
        && features & (F_GUEST_TSO4 | F_GUEST_CSUM) != F_GUEST_TSO4 | F_GUEST_CSUM
    {
        return segment(rx, mem, from, frame, scratch, merge, gso);
    }
    let pass = frame.needs_csum() && features & F_GUEST_CSUM != 0;
    let mut hdr = [0u8; HDR_LEN];
    if pass {
        // The sender's checksum (and segmentation) fields as they are
        // (§5.1.6.4.1).
        hdr[0] = HDR_F_NEEDS_CSUM;
        hdr[6..10].copy_from_slice(&frame.head[6..10]);
        if frame.gso.is_some() {
            hdr[1..6].copy_from_slice(&frame.head[1..6]);
        }
    }
    // Where the checksum goes, when the receiver does not take the frame
    // as sent; the checksum itself is summed at the first piece written,
    // so a frame that finds no receive buffer costs no sum.
    let at = (frame.needs_csum() && !pass).then(|| {
        let start = u32::from(frame.field(6));
        (start, start + u32::from(frame.field(8)))
    });
    let mut csum: Option<[u8; 2]> = None;
    let mut fill = |c: &Chain, mem: &mut dyn GuestMemory, to: u32, off: u32, n: u32| {
        copy_between(&frame.chain, from, HDR_LEN as u32 + off, c, mem, to, n)?;
        let Some((start, p)) = at else {
            return Ok(());
        };
        let bytes = match csum {
            Some(b) => b,
            None => {
                let body = HDR_LEN as u32 + start;
                let sum = sum_stream(&frame.chain, from, body, frame.len - start)?;
                // As Linux's `skb_checksum_help`: a zero result goes out
                // as 0xffff, its other form, which a UDP receiver would
                // otherwise read as "no checksum".
                let b = match !fold(sum) {
                    0 => 0xffff,
                    c => c,
                }
                .to_be_bytes();
                *csum.insert(b)
            }
        };
        for (k, b) in bytes.iter().enumerate() {
            let q = p + k as u32;
            if (off..off + n).contains(&q) {
                c.write(mem, to + q - off, core::slice::from_ref(b))?;
            }
        }
        Ok(())
    };
    deliver(rx, mem, scratch, merge, hdr, frame.len, &mut fill)
}

/// What [`deliver`] calls to write a frame: `n` bytes of the frame from
/// byte `off` into chain `c` from byte `at` of its writable stream.
type Fill<'a> =
    dyn FnMut(&Chain, &mut dyn GuestMemory, u32, u32, u32) -> Result<(), QueueError> + 'a;

/// Writes one received frame of `len` bytes, preceded by `hdr`, into the
/// next receive chain (or, with `merge`, as many as it takes, the header's
/// `num_buffers` counting them) and returns them to the driver. A frame
/// that runs out of chains part way takes none: the ring is rewound
/// ([`crate::queue::SplitQueue::rewind`]), so the driver sees no partial
/// frame and its buffers serve the next one.
fn deliver(
    rx: &mut SplitQueue,
    mem: &mut dyn GuestMemory,
    scratch: &mut RxScratch,
    merge: bool,
    mut hdr: [u8; HDR_LEN],
    len: u32,
    fill: &mut Fill<'_>,
) -> Result<Put, QueueError> {
    let (avail, used) = (rx.next_avail(), rx.next_used());
    let first = &mut scratch.first;
    if !rx.pop_into_unnotified(mem, first)? {
        return Ok(Put::NoBuffer);
    }
    let room = first.writable_len();
    let whole = HDR_LEN as u32 + len;
    if room < whole && (!merge || room < HDR_LEN as u32) {
        rx.add_used_deferred(mem, first.head(), 0)?;
        return Ok(Put::TooSmall);
    }
    let n = len.min(room - HDR_LEN as u32);
    fill(first, mem, HDR_LEN as u32, 0, n)?;
    rx.add_used_deferred(mem, first.head(), HDR_LEN as u32 + n)?;
    let (mut done, mut buffers) = (n, 1u16);
    while done < len {
        let next = &mut scratch.next;
        if !rx.pop_into_unnotified(mem, next)? {
            rx.rewind(avail, used);
            return Ok(Put::NoBuffer);
        }
        let n = next.writable_len().min(len - done);
        fill(next, mem, 0, done, n)?;
        rx.add_used_deferred(mem, next.head(), n)?;
        done += n;
        buffers = buffers.saturating_add(1);
    }
    hdr[10..12].copy_from_slice(&buffers.to_le_bytes());
    first.write(mem, 0, &hdr)?;
    Ok(Put::Delivered)
}

/// Delivers segmentation frame `frame` as its TCP segments, each a frame
/// of its own ([`deliver`]): every segment gets the frame's headers with
/// the IPv4 total length, identification (+1 per segment) and header
/// checksum, the TCP sequence number and the TCP checksum of its own, FIN
/// and PSH only on the last and CWR only on the first.
fn segment(
    rx: &mut SplitQueue,
    mem: &mut dyn GuestMemory,
    from: &dyn GuestMemory,
    frame: &TxFrame,
    scratch: &mut RxScratch,
    merge: bool,
    gso: Gso,
) -> Result<Put, QueueError> {
    let (l3, l4, headers) = (
        usize::from(gso.l3),
        usize::from(gso.l4),
        usize::from(gso.headers),
    );
    let mss = u32::from(gso.mss);
    let mut h = [0u8; MAX_HEADERS];
    frame.chain.read(from, HDR_LEN as u32, &mut h[..headers])?;
    let id = u16::from_be_bytes([h[l3 + 4], h[l3 + 5]]);
    let seq = u32::from_be_bytes([h[l4 + 4], h[l4 + 5], h[l4 + 6], h[l4 + 7]]);
    let flags = h[l4 + 13];
    let payload = frame.len - headers as u32;
    let count = payload.div_ceil(mss);
    for i in 0..count {
        let at = i * mss;
        let n = mss.min(payload - at);
        let mut s = h;
        let ip_len = (headers - l3) as u16 + n as u16;
        s[l3 + 2..l3 + 4].copy_from_slice(&ip_len.to_be_bytes());
        s[l3 + 4..l3 + 6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        s[l3 + 10..l3 + 12].fill(0);
        let ip_csum = !fold(sum_bytes(&s[l3..l4]));
        s[l3 + 10..l3 + 12].copy_from_slice(&ip_csum.to_be_bytes());
        s[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add(at).to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        s[l4 + 13] = f;
        s[l4 + 16..l4 + 18].fill(0);
        // The pseudo-header: addresses, protocol, TCP length.
        let tcp_len = (headers - l4) as u64 + u64::from(n);
        let pseudo = sum_bytes(&s[l3 + 12..l3 + 20]) + 6 + tcp_len;
        let body_at = HDR_LEN as u32 + headers as u32 + at;
        let body = sum_stream(&frame.chain, from, body_at, n)?;
        let tcp_csum = !fold(pseudo + sum_bytes(&s[l4..headers]) + body);
        s[l4 + 16..l4 + 18].copy_from_slice(&tcp_csum.to_be_bytes());
        // The segment: the edited headers, then its slice of the payload.
        let hl = headers as u32;
        let mut fill = |c: &Chain, mem: &mut dyn GuestMemory, to: u32, off: u32, k: u32| {
            let from_headers = hl.saturating_sub(off).min(k);
            if from_headers > 0 {
                let o = off as usize;
                c.write(mem, to, &s[o..o + from_headers as usize])?;
            }
            let rest = k - from_headers;
            if rest > 0 {
                let src = body_at + (off + from_headers - hl);
                copy_between(&frame.chain, from, src, c, mem, to + from_headers, rest)?;
            }
            Ok(())
        };
        let put = deliver(rx, mem, scratch, merge, [0; HDR_LEN], hl + n, &mut fill)?;
        if put != Put::Delivered {
            return Ok(put);
        }
    }
    Ok(Put::Delivered)
}

/// TCP flags the segmentation edits.
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The one's-complement sum of `bytes` as big-endian 16-bit words (an odd
/// last byte padded with zero), not yet folded.
fn sum_bytes(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(2);
    let mut sum: u64 = (&mut words)
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// [`sum_bytes`] of `len` bytes of `chain`'s readable stream from
/// `offset`, read in pieces of an even size.
fn sum_stream(
    chain: &Chain,
    mem: &dyn GuestMemory,
    offset: u32,
    len: u32,
) -> Result<u64, QueueError> {
    let mut buf = [0u8; 512];
    let (mut sum, mut done) = (0u64, 0u32);
    while done < len {
        let n = (len - done).min(buf.len() as u32) as usize;
        chain.read(mem, offset + done, &mut buf[..n])?;
        sum += sum_bytes(&buf[..n]);
        done += n as u32;
    }
    Ok(sum)
}

/// Folds a one's-complement sum to 16 bits.
fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// One VM's NIC: its MAC, the features its driver negotiated, and whether
/// its transmit queue was notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetDevice {
    mac: Mac,
    features: u64,
    tx_kick: bool,
}

impl NetDevice {
    /// A NIC with address `mac`.
    pub fn new(mac: Mac) -> Self {
        Self {
            mac,
            features: 0,
            tx_kick: false,
        }
    }

    /// The features its driver negotiated (none before `DRIVER_OK`): which
    /// offloads its frames may ask for, and which it takes.
    pub fn negotiated(&self) -> u64 {
        self.features
    }

    /// Its address.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Whether the driver notified the transmit queue since the last call:
    /// the glue then runs the switch for this port.
    pub fn take_tx_kick(&mut self) -> bool {
        core::mem::take(&mut self.tx_kick)
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[..6].copy_from_slice(&self.mac.0);
        c[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c[10..12].copy_from_slice(&MTU.to_le_bytes());
        c
    }
}

impl VirtioDevice for NetDevice {
    fn device_id(&self) -> u32 {
        device_id::NET
    }

    fn features(&self) -> u64 {
        F_MAC | F_MTU | F_STATUS | F_MRG_RXBUF | OFFLOADS
    }

    /// §5.1.3.1: each segmentation offload needs its checksum offload.
    fn accepts(&self, features: u64) -> bool {
        let needs = |f: u64, needed: u64| features & f == 0 || features & needed != 0;
        needs(F_GUEST_TSO4, F_GUEST_CSUM) && needs(F_HOST_TSO4, F_CSUM)
    }

    fn activate(&mut self, features: u64) {
        self.features = features;
    }

    fn queue_count(&self) -> u16 {
        2
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        if queue < 2 { QUEUE_SIZE } else { 0 }
    }

    fn config_len(&self) -> usize {
        CONFIG_LEN
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let c = self.config();
        if let Some(src) = offset
            .checked_add(data.len())
            .and_then(|end| c.get(offset..end))
        {
            data.copy_from_slice(src);
        } else {
            data.fill(0);
        }
    }

    // The configuration is read-only (the MAC too: VIRTIO_NET_F_CTRL_MAC_ADDR
    // is not offered), so writes are ignored by the default method.

    fn notify(
        &mut self,
        queue: u16,
        _queues: &mut Queues<'_>,
        _mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        match queue {
            TX => self.tx_kick = true,
            RX => {}
            other => return Err(QueueError::NoSuchQueue(other)),
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.tx_kick = false;
        self.features = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_local_unicast_stable_and_distinct() {
        let a = derive_mac("linux", "lan");
        assert!(a.is_local() && !a.is_group());
        assert_eq!(a, derive_mac("linux", "lan"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(derive_mac("ab", "c"), derive_mac("a", "bc"));
        assert_ne!(a, derive_mac("linux", "lan2"));
        assert_ne!(a, derive_mac("rtos", "lan"));
        // The documented hash, pinned: FNV-1a 64 of "a\0b".
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in *b"a\0b" {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let b = h.to_le_bytes();
        assert_eq!(
            derive_mac("a", "b").0,
            [(b[0] & 0xfc) | 2, b[1], b[2], b[3], b[4], b[5]]
        );
        assert_eq!(
            Mac([0x02, 0, 0xab, 1, 2, 0xff]).to_string(),
            "02:00:ab:01:02:ff"
        );
    }

    #[test]
    fn the_configuration_reads_mac_status_pairs_and_mtu() {
        let d = NetDevice::new(Mac([2, 1, 2, 3, 4, 5]));
        let mut b = [0u8; CONFIG_LEN];
        d.read_config(0, &mut b);
        assert_eq!(b, [2, 1, 2, 3, 4, 5, 1, 0, 1, 0, 0xdc, 0x05]);
        let mut w = [0u8; 2];
        d.read_config(10, &mut w);
        assert_eq!(u16::from_le_bytes(w), MTU);
        d.read_config(11, &mut w);
        assert_eq!(w, [0, 0], "past the end reads zero");
    }
}
