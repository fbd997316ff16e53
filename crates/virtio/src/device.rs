//! What a virtio device is to the transport: an ID, feature bits, a
//! configuration space, some queues, and what it does when the driver
//! notifies one of them.
//!
//! Every device (net, vsock, console, and later a proxy for a backend in
//! another VM) implements [`VirtioDevice`] and plugs into the one
//! transport, [`crate::transport::Transport`]. The transport owns the
//! register file, the feature negotiation and the queues' configuration;
//! the device sees the queues only through [`Queues`] while the transport
//! runs it, and only once the driver has set `DRIVER_OK`. A device never
//! sees a register access, so it cannot get the transport's rules wrong.
//!
//! A device's methods must not panic on anything the guest controls: ring
//! contents reach it as checked [`crate::chain::Chain`]s, and whatever it
//! finds wrong in them it returns as a [`QueueError`], which stops the
//! device with `DEVICE_NEEDS_RESET`.

use crate::mem::GuestMemory;
use crate::queue::{QueueError, SplitQueue};

/// A virtio device behind a transport.
pub trait VirtioDevice {
    /// The device ID (`spec::device_id`); 0 for no device.
    fn device_id(&self) -> u32;

    /// The device-specific feature bits it offers. Bits of the reserved
    /// range (`spec::feature::RESERVED`) are the transport's and ignored
    /// here; the transport adds `VIRTIO_F_VERSION_1`,
    /// `VIRTIO_RING_F_INDIRECT_DESC` and `VIRTIO_RING_F_EVENT_IDX`.
    fn features(&self) -> u64;

    /// Whether the device works with the driver's `features` (a subset of
    /// the offer with `VIRTIO_F_VERSION_1`); `false` keeps `FEATURES_OK`
    /// clear, as §3.1.1 lets a device refuse a combination. Every subset
    /// by default.
    fn accepts(&self, features: u64) -> bool {
        let _ = features;
        true
    }

    /// How many queues it has (at most
    /// [`crate::transport::MAX_QUEUES`]; more are not offered).
    fn queue_count(&self) -> u16;

    /// The most entries queue `queue` may have (`QueueNumMax`; the
    /// transport caps it at 32768, the split ring's limit); 0 for a queue
    /// it does not have.
    fn queue_max_size(&self, queue: u16) -> u16;

    /// Bytes of its configuration space.
    fn config_len(&self) -> usize {
        0
    }

    /// Reads `data.len()` bytes of the configuration space at `offset`
    /// (the transport only asks inside [`VirtioDevice::config_len`]).
    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let _ = offset;
        data.fill(0);
    }

    /// The driver wrote `data` to the configuration space at `offset`
    /// (inside [`VirtioDevice::config_len`]).
    fn write_config(&mut self, offset: usize, data: &[u8]) {
        let _ = (offset, data);
    }

    /// The driver set `DRIVER_OK` having accepted `features` (a subset of
    /// what was offered, with `VIRTIO_F_VERSION_1`).
    fn activate(&mut self, features: u64) {
        let _ = features;
    }

    /// The driver notified `queue` (which exists and is ready): take its
    /// available chains, serve them, return them used. Any queue of the
    /// device may be used meanwhile (a net device's receive queue while
    /// serving its transmit queue). An error stops the device
    /// (`DEVICE_NEEDS_RESET`); what it did before the error stands.
    fn notify(
        &mut self,
        queue: u16,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError>;

    /// The driver reset the device (status 0): forget everything the
    /// driver set up, as on power-on.
    fn reset(&mut self);
}

/// The placeholder behind a transport with nothing attached: DeviceID 0,
/// no features, no queues, no configuration, as QEMU `virt`'s unused
/// transports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoDevice;

impl VirtioDevice for NoDevice {
    fn device_id(&self) -> u32 {
        crate::spec::device_id::NONE
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_count(&self) -> u16 {
        0
    }

    fn queue_max_size(&self, _queue: u16) -> u16 {
        0
    }

    fn notify(
        &mut self,
        queue: u16,
        _queues: &mut Queues<'_>,
        _mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        // The transport never notifies a queue that does not exist.
        Err(QueueError::NoSuchQueue(queue))
    }

    fn reset(&mut self) {}
}

/// A device's queues while the transport runs it: only ready queues are
/// handed out.
#[derive(Debug)]
pub struct Queues<'a> {
    queues: &'a mut [SplitQueue],
}

impl<'a> Queues<'a> {
    /// The view over `queues` (the device's, by index).
    pub(crate) fn new(queues: &'a mut [SplitQueue]) -> Self {
        Self { queues }
    }

    /// How many queues the device has.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Whether the device has no queue.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Queue `index`, if it exists and the driver made it ready.
    pub fn get(&mut self, index: u16) -> Result<&mut SplitQueue, QueueError> {
        let q = self
            .queues
            .get_mut(usize::from(index))
            .ok_or(QueueError::NoSuchQueue(index))?;
        if q.is_ready() {
            Ok(q)
        } else {
            Err(QueueError::NotReady)
        }
    }

    /// Two distinct ready queues at once (a device that moves buffers from
    /// one to the other); `NoSuchQueue` if `a == b`.
    pub fn pair(
        &mut self,
        a: u16,
        b: u16,
    ) -> Result<(&mut SplitQueue, &mut SplitQueue), QueueError> {
        let (ai, bi) = (usize::from(a), usize::from(b));
        if ai == bi {
            return Err(QueueError::NoSuchQueue(b));
        }
        for i in [a, b] {
            self.get(i)?;
        }
        let (lo, hi) = (ai.min(bi), ai.max(bi));
        let (left, right) = self.queues.split_at_mut(hi);
        let (ql, qh) = (&mut left[lo], &mut right[0]);
        Ok(if ai < bi { (ql, qh) } else { (qh, ql) })
    }
}
