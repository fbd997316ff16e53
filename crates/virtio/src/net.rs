//! The virtio-net device (virtio 1.2 §5.1): one NIC of a VM on a virtual
//! switch ([`crate::switch`]).
//!
//! The device offers `VIRTIO_NET_F_MAC` (the MAC the host tool derived,
//! [`derive_mac`]), `VIRTIO_NET_F_MTU` ([`MTU`]) and `VIRTIO_NET_F_STATUS`
//! (the link is always up), and no offload: with `VIRTIO_F_VERSION_1`
//! every frame in either direction is preceded by the 12-byte
//! `virtio_net_hdr_v1` ([`HDR_LEN`]), all zero but `num_buffers = 1` on
//! receive (§5.1.6.4: without `VIRTIO_NET_F_MRG_RXBUF` the device sets it
//! to 1), and a transmitted header asking for checksum or segmentation
//! work the driver could not have negotiated is dropped and counted.
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
//! with one VLAN tag). A transmitted chain outside those bounds, or with
//! fewer readable bytes than the header, is taken, returned to the driver
//! and dropped with a [`TxDrop`] reason; only a broken ring
//! ([`QueueError`]) stops the device.

use crate::chain::{Chain, copy_between};
use crate::device::{Queues, VirtioDevice};
use crate::mem::GuestMemory;
use crate::queue::QueueError;
use crate::spec::device_id;

/// The receive queue.
pub const RX: u16 = 0;
/// The transmit queue.
pub const TX: u16 = 1;
/// Entries of each queue at most (Linux asks for the maximum).
pub const QUEUE_SIZE: u16 = 256;

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
/// The MTU the device reports: the largest IP packet a frame carries.
pub const MTU: u16 = 1500;
/// Bytes of an Ethernet header (destination, source, EtherType).
pub const ETH_HEADER: usize = 14;
/// The largest frame switched: the MTU, the Ethernet header and one
/// 802.1Q tag.
pub const MAX_FRAME: usize = MTU as usize + ETH_HEADER + 4;
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

/// A frame taken from a transmit queue and still in the sender's buffers:
/// its chain (returned to the driver only once the frame was delivered,
/// [`complete`]), its length and a copy of its headers (the switch decides
/// on the Ethernet one). The payload is copied once, straight into each
/// receiver's buffers ([`put_frame`]).
#[derive(Clone)]
pub struct TxFrame {
    chain: Chain,
    len: u16,
    /// The virtio-net header and the Ethernet header, read in one piece.
    head: [u8; HDR_LEN + ETH_HEADER],
}

impl TxFrame {
    /// An empty slot.
    pub const EMPTY: Self = Self {
        chain: Chain::EMPTY,
        len: 0,
        head: [0; HDR_LEN + ETH_HEADER],
    };

    /// The frame's length (Ethernet header and payload).
    pub fn len(&self) -> usize {
        usize::from(self.len)
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
}

impl core::fmt::Debug for TxFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TxFrame")
            .field("head", &self.head())
            .field("len", &self.len)
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
    /// A frame longer than [`MAX_FRAME`].
    OverMtu,
    /// A header asking for checksum or segmentation offload, which this
    /// device does not offer.
    Offload,
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
    /// Written into a receive buffer and returned to the driver.
    Delivered,
    /// The driver has posted no receive buffer: dropped.
    NoBuffer,
    /// The next receive buffer is too small for the header and frame: it
    /// was returned empty (length 0, which drivers count as an error) and
    /// the frame dropped.
    TooSmall,
}

/// Takes the next chain of the transmit queue into `frame` (filled in
/// place: a chain is half a kilobyte). Like [`put_frame`] and [`complete`],
/// it runs inside [`crate::Transport::with_device`], which publishes the
/// used index once at its end (the chains are returned with
/// [`crate::SplitQueue::add_used_deferred`]). A frame to switch keeps its chain
/// until [`complete`] returns it; a chain that is dropped is returned to
/// the driver at once (a transmit buffer is never written).
pub fn take_frame(
    queues: &mut Queues<'_>,
    mem: &mut dyn GuestMemory,
    frame: &mut TxFrame,
) -> Result<Taken, QueueError> {
    // A queue the driver has not made ready holds nothing (not an error:
    // the device may be driven with one direction only).
    let Ok(tx) = queues.get(TX) else {
        return Ok(Taken::Empty);
    };
    if !tx.pop_into(mem, &mut frame.chain)? {
        return Ok(Taken::Empty);
    }
    let result = check_frame(mem, frame);
    if !matches!(result, Ok(Taken::Frame)) {
        tx.add_used_deferred(mem, frame.head(), 0)?;
    }
    result
}

/// Checks the frame `frame.chain` holds and reads its Ethernet header.
fn check_frame(mem: &dyn GuestMemory, frame: &mut TxFrame) -> Result<Taken, QueueError> {
    let total = frame.chain.readable_len() as usize;
    if total < HDR_LEN {
        return Ok(Taken::Dropped(TxDrop::NoHeader));
    }
    let len = total - HDR_LEN;
    if len < ETH_HEADER {
        return Ok(Taken::Dropped(TxDrop::Runt));
    }
    if len > MAX_FRAME {
        return Ok(Taken::Dropped(TxDrop::OverMtu));
    }
    frame.chain.read(mem, 0, &mut frame.head)?;
    if frame.head[0] & HDR_F_NEEDS_CSUM != 0 || frame.head[1] != GSO_NONE {
        return Ok(Taken::Dropped(TxDrop::Offload));
    }
    frame.len = len as u16;
    Ok(Taken::Frame)
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

/// Puts `frame` (in `from`, the sender's memory) into the next receive
/// buffer of `mem`, with its header: one copy from the sender's buffers to
/// the receiver's ([`crate::chain::copy_between`]). `chain` is scratch
/// space for the receive chain.
pub fn put_frame(
    queues: &mut Queues<'_>,
    mem: &mut dyn GuestMemory,
    from: &dyn GuestMemory,
    frame: &TxFrame,
    chain: &mut Chain,
) -> Result<Put, QueueError> {
    let Ok(rx) = queues.get(RX) else {
        return Ok(Put::NoBuffer);
    };
    if !rx.pop_into_unnotified(mem, chain)? {
        return Ok(Put::NoBuffer);
    }
    let len = HDR_LEN + frame.len();
    if (chain.writable_len() as usize) < len {
        rx.add_used_deferred(mem, chain.head(), 0)?;
        return Ok(Put::TooSmall);
    }
    let mut hdr = [0u8; HDR_LEN];
    hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
    chain.write(mem, 0, &hdr)?;
    copy_between(
        &frame.chain,
        from,
        HDR_LEN as u32,
        chain,
        mem,
        HDR_LEN as u32,
        u32::from(frame.len),
    )?;
    rx.add_used_deferred(mem, chain.head(), len as u32)?;
    Ok(Put::Delivered)
}

/// One VM's NIC: its MAC and whether its transmit queue was notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetDevice {
    mac: Mac,
    tx_kick: bool,
}

impl NetDevice {
    /// A NIC with address `mac`.
    pub fn new(mac: Mac) -> Self {
        Self {
            mac,
            tx_kick: false,
        }
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
        F_MAC | F_MTU | F_STATUS
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
