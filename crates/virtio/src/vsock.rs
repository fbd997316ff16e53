//! The virtio-vsock device (virtio 1.2 §5.10): a VM's socket device, its
//! CID in the configuration space, and the packet header the router
//! ([`crate::router`]) reads and writes.
//!
//! Queue 0 receives, 1 transmits, 2 carries events (§5.10.2). The device
//! offers no feature bit: stream sockets only (§5.10.3: without
//! `VIRTIO_VSOCK_F_STREAM` or `_SEQPACKET` negotiated, a device does
//! streams). Like the NIC, it moves no packet itself: a notify on the
//! transmit queue, or on the receive queue (new buffers, which may unblock
//! a peer waiting to deliver), is remembered ([`VsockDevice::take_kick`])
//! and the glue runs the router. The event queue is never used: the only
//! event, `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`, is for live migration.

use crate::device::{Queues, VirtioDevice};
use crate::mem::GuestMemory;
use crate::queue::QueueError;
use crate::spec::device_id;

/// The receive queue.
pub const RX: u16 = 0;
/// The transmit queue.
pub const TX: u16 = 1;
/// The event queue.
pub const EVENT: u16 = 2;
/// Entries of each queue at most.
pub const QUEUE_SIZE: u16 = 128;

/// Bytes of `struct virtio_vsock_hdr` (§5.10.6).
pub const HDR_LEN: usize = 44;
/// `VIRTIO_VSOCK_TYPE_STREAM`.
pub const TYPE_STREAM: u16 = 1;
/// The largest payload one packet may carry (Linux's
/// `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`); a longer one is dropped.
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// The operations of §5.10.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Connect.
    Request = 1,
    /// Accept a connection.
    Response = 2,
    /// Reset: refuse or tear down a connection.
    Rst = 3,
    /// One direction or both are done (flags [`SHUTDOWN_RCV`],
    /// [`SHUTDOWN_SEND`]).
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// The sender's receive credit changed.
    CreditUpdate = 6,
    /// Asks the peer for a credit update.
    CreditRequest = 7,
}

impl Op {
    /// The operation numbered `v`, if there is one.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Rst,
            4 => Self::Shutdown,
            5 => Self::Rw,
            6 => Self::CreditUpdate,
            7 => Self::CreditRequest,
            _ => return None,
        })
    }
}

/// A packet header, decoded (every field as the wire has it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload bytes after the header.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub kind: u16,
    /// Operation (an [`Op`] if valid).
    pub op: u16,
    /// Operation flags (`SHUTDOWN_*`).
    pub flags: u32,
    /// The sender's receive buffer size (credit, §5.10.6.3).
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

impl Header {
    /// All fields zero.
    pub const ZERO: Self = Self {
        src_cid: 0,
        dst_cid: 0,
        src_port: 0,
        dst_port: 0,
        len: 0,
        kind: 0,
        op: 0,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    };

    /// Decodes the wire bytes.
    pub fn decode(b: &[u8; HDR_LEN]) -> Self {
        let u64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The wire bytes.
    pub fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The reset that answers this packet: from its destination back to
    /// its source, no payload, no credit.
    pub fn reset_reply(&self) -> Self {
        Self {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            len: 0,
            kind: TYPE_STREAM,
            op: Op::Rst as u16,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }
}

/// One VM's vsock device: its CID and whether the driver notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsockDevice {
    cid: u64,
    kick: bool,
    was_reset: bool,
}

impl VsockDevice {
    /// A device whose guest has CID `cid`.
    pub fn new(cid: u64) -> Self {
        Self {
            cid,
            kick: false,
            was_reset: false,
        }
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Whether the driver notified the transmit or receive queue since the
    /// last call: the glue then runs the router for this VM.
    pub fn take_kick(&mut self) -> bool {
        core::mem::take(&mut self.kick)
    }

    /// Whether the driver reset the device since the last call: the glue
    /// then tells the router ([`crate::router::Router::port_reset`]), so
    /// the peers of its connections hear an `RST`.
    pub fn take_reset(&mut self) -> bool {
        core::mem::take(&mut self.was_reset)
    }
}

impl VirtioDevice for VsockDevice {
    fn device_id(&self) -> u32 {
        device_id::VSOCK
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_count(&self) -> u16 {
        3
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        if queue < 3 { QUEUE_SIZE } else { 0 }
    }

    fn config_len(&self) -> usize {
        8
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let c = self.cid.to_le_bytes();
        match offset
            .checked_add(data.len())
            .and_then(|end| c.get(offset..end))
        {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0),
        }
    }

    fn notify(
        &mut self,
        queue: u16,
        _queues: &mut Queues<'_>,
        _mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        match queue {
            RX | TX => self.kick = true,
            EVENT => {}
            other => return Err(QueueError::NoSuchQueue(other)),
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.kick = false;
        self.was_reset = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_at_the_spec_offsets() {
        let h = Header {
            src_cid: 3,
            dst_cid: 0x1_0000_0004,
            src_port: 1024,
            dst_port: 9999,
            len: 5,
            kind: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: 0,
            buf_alloc: 0x4_0000,
            fwd_cnt: 77,
        };
        let b = h.encode();
        assert_eq!(&b[8..16], &0x1_0000_0004u64.to_le_bytes());
        assert_eq!(&b[24..28], &5u32.to_le_bytes());
        assert_eq!(&b[28..32], &[1, 0, 5, 0]);
        assert_eq!(&b[40..44], &77u32.to_le_bytes());
        assert_eq!(Header::decode(&b), h);
        let r = h.reset_reply();
        assert_eq!(
            (r.src_cid, r.dst_cid, r.src_port, r.dst_port, r.op, r.len),
            (0x1_0000_0004, 3, 9999, 1024, 3, 0)
        );
        assert_eq!(Op::from_u16(7), Some(Op::CreditRequest));
        assert_eq!(Op::from_u16(0), None);
        assert_eq!(Op::from_u16(8), None);
    }

    #[test]
    fn the_configuration_is_the_cid() {
        let d = VsockDevice::new(0x0102_0304_0506_0708);
        let mut b = [0u8; 4];
        d.read_config(4, &mut b);
        assert_eq!(b, [4, 3, 2, 1]);
        d.read_config(6, &mut b);
        assert_eq!(b, [0; 4], "past the end reads zero");
    }
}
