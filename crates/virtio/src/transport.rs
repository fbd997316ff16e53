//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): one device's
//! register file, its feature negotiation and status rules, its queues'
//! configuration, and its interrupt line.
//!
//! [`Transport`] is a device on the VM's MMIO bus
//! ([`stratum_core::bus::MmioDevice`]). A register access never faults:
//! the control registers take 32-bit aligned accesses only, the
//! configuration space 8-, 16- and 32-bit aligned ones (§4.2.2.2); any
//! other width, an unknown offset, a read of a write-only register or a
//! write of a read-only one reads 0 or is ignored, and is counted
//! ([`Counters::bad_accesses`]). Writes the rules forbid at that moment
//! (features after `FEATURES_OK`, a queue's registers while it is ready,
//! clearing a status bit) are ignored and counted
//! ([`Counters::ignored_writes`]).
//!
//! # Status and negotiation
//! Writing 0 to `Status` resets the transport and the device. The driver
//! sets bits, never clears them. `FEATURES_OK` sticks only if the driver's
//! features are a subset of the offer, include `VIRTIO_F_VERSION_1` and
//! the device accepts the combination (the driver reads it back, §3.1.1); `DRIVER_OK` only after
//! `FEATURES_OK`. The transport offers `VERSION_1`, `INDIRECT_DESC` and
//! `EVENT_IDX` on top of the device's own bits.
//!
//! # Notifies and errors
//! A `QueueNotify` write for a live queue is recorded and reported in
//! [`Effects::notify`]; the glue then calls [`Transport::process`] with the
//! VM's memory, which runs the device ([`VirtioDevice::notify`]) and raises
//! the used-buffer interrupt where the driver wants it. A notify before
//! `DRIVER_OK`, for a queue that does not exist or is not ready, or while
//! the device needs a reset is dropped and counted
//! ([`Counters::refused_notifies`]). A ring error, or a queue made ready
//! with a bad size or area, is the spec's device error (§2.1.2): the
//! transport sets `DEVICE_NEEDS_RESET`, raises the configuration-change
//! interrupt and serves nothing until the driver resets it. The first
//! error since the last reset is kept for the log ([`Transport::take_error`]).
//!
//! The transport answers one window: the bus's bank index is the glue's to
//! route (one transport per bank).

use stratum_core::access::AccessSize;
use stratum_core::bus::{AccessRefused, DeviceAccess, Effects, MmioDevice};

use crate::device::{Queues, VirtioDevice};
use crate::mem::GuestMemory;
use crate::queue::{QueueError, SplitQueue};
use crate::spec::{feature, mmio, ring, status};

/// Most queues one transport serves (a virtio-net pair and its control
/// queue, vsock's three, a console's two fit).
pub const MAX_QUEUES: usize = 8;

/// Why the transport stopped the device or dropped a notify: what the log
/// says (once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// A notify before the driver set `DRIVER_OK`.
    NotifyBeforeDriverOk(u32),
    /// A notify for a queue the device does not have.
    NotifyNoSuchQueue(u32),
    /// A notify for a queue the driver has not made ready.
    NotifyNotReady(u32),
    /// A notify while the device needs a reset.
    NotifyNeedsReset(u32),
    /// Queue `queue` was made ready with a bad size or area, or its rings
    /// broke a rule: the device needs a reset.
    Queue {
        /// The queue.
        queue: u16,
        /// What was wrong.
        error: QueueError,
    },
}

/// What the transport counted; saturating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Accesses of a width or offset the spec does not allow, reads of
    /// write-only and writes of read-only registers.
    pub bad_accesses: u32,
    /// Writes the rules forbid at that moment.
    pub ignored_writes: u32,
    /// Notifies dropped (see [`TransportError`]).
    pub refused_notifies: u32,
    /// Times the device was stopped with `DEVICE_NEEDS_RESET`.
    pub device_errors: u32,
    /// Notifies accepted.
    pub notifies: u32,
    /// Used-buffer interrupts raised.
    pub interrupts: u32,
}

/// One virtio-mmio transport and the device behind it.
#[derive(Debug)]
pub struct Transport<D> {
    device: D,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: [SplitQueue; MAX_QUEUES],
    interrupt_status: u32,
    config_generation: u32,
    /// Moves on at every reset and every queue made ready ([`Self::epoch`]).
    epoch: u32,
    /// Queues notified and not yet served, one bit each.
    pending: u32,
    counters: Counters,
    error: Option<TransportError>,
}

fn bump(counter: &mut u32) {
    *counter = counter.saturating_add(1);
}

impl<D: VirtioDevice> Transport<D> {
    /// A transport in its reset state, with `device` behind it.
    pub fn new(device: D) -> Self {
        let mut t = Self {
            device,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: [SplitQueue::ABSENT; MAX_QUEUES],
            interrupt_status: 0,
            config_generation: 0,
            epoch: 0,
            pending: 0,
            counters: Counters::default(),
            error: None,
        };
        t.reset_queues();
        t
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, to feed it input from outside the guest.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The features the driver accepted (final once `FEATURES_OK` is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// What the transport offers: the device's own bits and the
    /// transport's.
    pub fn offered_features(&self) -> u64 {
        (self.device.features() & !feature::RESERVED) | feature::TRANSPORT
    }

    /// Queue `index`'s state (an absent queue for one the device lacks).
    pub fn queue(&self, index: usize) -> SplitQueue {
        self.queues
            .get(index)
            .copied()
            .unwrap_or(SplitQueue::ABSENT)
    }

    /// Whether the interrupt line is asserted (`InterruptStatus != 0`).
    pub fn line(&self) -> bool {
        self.interrupt_status != 0
    }

    /// What the transport counted.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The first error since the last reset (or the last call), for the
    /// log.
    pub fn take_error(&mut self) -> Option<TransportError> {
        self.error.take()
    }

    /// Whether notified queues wait for [`Transport::process`].
    pub fn has_pending(&self) -> bool {
        self.pending != 0
    }

    /// Whether the driver has set `DRIVER_OK` and the device has not
    /// failed since.
    pub fn is_live(&self) -> bool {
        self.status & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET) == status::DRIVER_OK
    }

    /// The device's configuration changed (from outside the guest): a new
    /// generation, and the configuration-change interrupt.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt_status |= mmio::INT_CONFIG;
    }

    fn queue_count(&self) -> usize {
        usize::from(self.device.queue_count()).min(MAX_QUEUES)
    }

    fn reset_queues(&mut self) {
        let n = self.queue_count();
        for (i, q) in self.queues.iter_mut().enumerate() {
            *q = if i < n {
                let max = self.device.queue_max_size(i as u16);
                SplitQueue::new(max.min(ring::MAX_QUEUE_SIZE))
            } else {
                SplitQueue::ABSENT
            };
        }
    }

    /// Status 0: the transport and the device as at power-on. The
    /// configuration generation moves on, so a driver never mistakes the
    /// old device's configuration for the new one's.
    fn reset(&mut self) {
        self.device.reset();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.epoch = self.epoch.wrapping_add(1);
        self.pending = 0;
        self.error = None;
        self.reset_queues();
    }

    /// Resets the transport and its device as a driver writing status 0
    /// does (a VM restart, for a device too big to build anew).
    pub fn reset_device(&mut self) {
        self.reset();
    }

    /// A number that moves on whenever the driver resets the device or
    /// makes a queue ready: a backend that took buffers in one hold of the
    /// VM's lock and returns them in another checks it did not change in
    /// between (else the buffers belong to a ring that is gone).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Makes this (fresh) transport's epoch follow `previous`, the epoch
    /// of the one it replaces (a VM restart builds new transports).
    pub fn follow_epoch(&mut self, previous: u32) {
        self.epoch = previous.wrapping_add(1);
    }

    /// The device broke down on the guest's input: `DEVICE_NEEDS_RESET`
    /// and the configuration-change interrupt (§2.1.2).
    fn fail(&mut self, error: TransportError) {
        self.record(error);
        bump(&mut self.counters.device_errors);
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt_status |= mmio::INT_CONFIG;
        self.pending = 0;
    }

    fn record(&mut self, error: TransportError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// The selected queue, if the device has it.
    fn selected(&mut self) -> Option<&mut SplitQueue> {
        let n = self.queue_count();
        let sel = usize::try_from(self.queue_sel).ok().filter(|&s| s < n)?;
        Some(&mut self.queues[sel])
    }

    /// The selected queue if its registers may be written now (it exists
    /// and is not ready); counts the write as ignored otherwise.
    fn selected_for_setup(&mut self) -> Option<&mut SplitQueue> {
        let ok = self.selected().is_some_and(|q| !q.is_ready());
        if !ok {
            bump(&mut self.counters.ignored_writes);
            return None;
        }
        self.selected()
    }

    fn stamp_features(&mut self) {
        let f = self.driver_features;
        let (indirect, event_idx) = (
            f & feature::RING_INDIRECT_DESC != 0,
            f & feature::RING_EVENT_IDX != 0,
        );
        for q in &mut self.queues {
            q.set_features(indirect, event_idx);
        }
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            mmio::MAGIC_VALUE => mmio::MAGIC,
            mmio::VERSION_REG => mmio::VERSION,
            mmio::DEVICE_ID => self.device.device_id(),
            mmio::VENDOR_ID => mmio::VENDOR,
            mmio::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            mmio::QUEUE_NUM_MAX => self.selected().map_or(0, |q| u32::from(q.max_size())),
            mmio::QUEUE_READY => self.selected().map_or(0, |q| u32::from(q.is_ready())),
            mmio::INTERRUPT_STATUS => self.interrupt_status,
            mmio::STATUS => self.status,
            // No shared-memory regions: a region that does not exist has
            // length -1 (§4.2.2).
            mmio::SHM_LEN_LOW | mmio::SHM_LEN_HIGH | mmio::SHM_BASE_LOW | mmio::SHM_BASE_HIGH => {
                u32::MAX
            }
            mmio::CONFIG_GENERATION => self.config_generation,
            _ => {
                bump(&mut self.counters.bad_accesses);
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32, fx: &mut Effects) {
        match offset {
            mmio::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            mmio::DRIVER_FEATURES => self.write_driver_features(value),
            mmio::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            mmio::QUEUE_SEL => self.queue_sel = value,
            mmio::QUEUE_NUM => {
                if let Some(q) = self.selected_for_setup() {
                    q.set_size(value);
                }
            }
            mmio::QUEUE_READY => self.write_queue_ready(value, fx),
            mmio::QUEUE_NOTIFY => self.write_notify(value, fx),
            mmio::INTERRUPT_ACK => {
                self.interrupt_status &= !value;
                fx.set_lines();
            }
            mmio::STATUS => self.write_status(value, fx),
            mmio::QUEUE_DESC_LOW
            | mmio::QUEUE_DESC_HIGH
            | mmio::QUEUE_DRIVER_LOW
            | mmio::QUEUE_DRIVER_HIGH
            | mmio::QUEUE_DEVICE_LOW
            | mmio::QUEUE_DEVICE_HIGH => {
                let area = ((offset - mmio::QUEUE_DESC_LOW) / 0x10) as usize;
                let high = offset & 4 != 0;
                if let Some(q) = self.selected_for_setup() {
                    q.set_area_half(area, high, value);
                }
            }
            // Selecting a region is harmless: none exists.
            mmio::SHM_SEL => {}
            _ => bump(&mut self.counters.bad_accesses),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let open = self.status & status::FEATURES_OK == 0;
        match self.driver_features_sel {
            0 if open => {
                self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value);
            }
            1 if open => {
                self.driver_features =
                    (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32);
            }
            // Past bit 63 there are no features to accept.
            _ if open && value == 0 => {}
            _ => bump(&mut self.counters.ignored_writes),
        }
    }

    fn write_queue_ready(&mut self, value: u32, fx: &mut Effects) {
        let sel = self.queue_sel;
        let Some(q) = self.selected() else {
            bump(&mut self.counters.ignored_writes);
            return;
        };
        match value {
            0 => q.stop(),
            1 if q.is_ready() => {}
            1 => {
                if let Err(error) = q.make_ready() {
                    self.fail(TransportError::Queue {
                        queue: sel as u16,
                        error,
                    });
                    fx.set_lines();
                } else {
                    self.epoch = self.epoch.wrapping_add(1);
                    self.stamp_features();
                }
            }
            _ => bump(&mut self.counters.ignored_writes),
        }
    }

    fn write_status(&mut self, value: u32, fx: &mut Effects) {
        if value == 0 {
            self.reset();
            fx.set_lines();
            // The VM's device work runs next (the glue's `process`): a
            // backend that holds the old driver's requests hears of the
            // reset before it sends any (the disk link, the vsock router).
            fx.set_notify();
            return;
        }
        let driver_bits = self.status & status::DRIVER_BITS;
        if value & driver_bits != driver_bits {
            // Clearing a bit other than by reset: ignored whole.
            bump(&mut self.counters.ignored_writes);
            return;
        }
        // The device's own bits are the device's: echoing one back (as a
        // read-modify-write does) is harmless, setting a new one is not
        // the driver's to do.
        if value & !status::DRIVER_BITS & !self.status != 0 {
            bump(&mut self.counters.ignored_writes);
        }
        let set = value & status::DRIVER_BITS & !self.status;
        self.status |= set & (status::ACKNOWLEDGE | status::DRIVER | status::FAILED);
        if set & status::FEATURES_OK != 0 {
            let accepted = self.driver_features;
            let ok = accepted & !self.offered_features() == 0
                && accepted & feature::VERSION_1 != 0
                && self.device.accepts(accepted);
            if ok {
                self.status |= status::FEATURES_OK;
            } else {
                bump(&mut self.counters.ignored_writes);
            }
        }
        if set & status::DRIVER_OK != 0 {
            if self.status & status::FEATURES_OK != 0 {
                self.status |= status::DRIVER_OK;
                self.stamp_features();
                self.device.activate(self.driver_features);
            } else {
                bump(&mut self.counters.ignored_writes);
            }
        }
    }

    fn write_notify(&mut self, value: u32, fx: &mut Effects) {
        let refused = if self.status & status::DEVICE_NEEDS_RESET != 0 {
            Some(TransportError::NotifyNeedsReset(value))
        } else if self.status & status::DRIVER_OK == 0 {
            Some(TransportError::NotifyBeforeDriverOk(value))
        } else if usize::try_from(value).map_or(true, |q| q >= self.queue_count()) {
            Some(TransportError::NotifyNoSuchQueue(value))
        } else if !self.queues[value as usize].is_ready() {
            Some(TransportError::NotifyNotReady(value))
        } else {
            None
        };
        match refused {
            Some(e) => {
                bump(&mut self.counters.refused_notifies);
                self.record(e);
            }
            None => {
                bump(&mut self.counters.notifies);
                self.pending |= 1 << value;
                fx.set_notify();
            }
        }
    }

    /// Serves the queues notified since the last call: runs the device for
    /// each, then raises the used-buffer interrupt if a queue's driver
    /// wants it. Returns whether the interrupt line is asserted. A ring
    /// error stops the device ([`TransportError::Queue`]).
    pub fn process(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let mut pending = core::mem::take(&mut self.pending);
        while pending != 0 && self.is_live() {
            let queue = pending.trailing_zeros() as u16;
            pending &= pending - 1;
            if !self.queues[usize::from(queue)].is_ready() {
                continue;
            }
            // Checked once per notify: a driver may move a stopped queue.
            let areas = self.queues[usize::from(queue)].check_areas(mem);
            let served = areas.and_then(|()| {
                let n = self.queue_count();
                let mut queues = Queues::new(&mut self.queues[..n]);
                self.device.notify(queue, &mut queues, mem)
            });
            if let Err(error) = served {
                self.fail(TransportError::Queue { queue, error });
            }
        }
        self.signal_used(mem);
        self.line()
    }

    /// Runs `f` on the device and its queues (to feed the device input
    /// from outside the guest, e.g. a frame from a peer), then signals
    /// used buffers as [`Transport::process`] does. `None` if the device
    /// is not live; an error from `f` stops the device.
    pub fn with_device<R>(
        &mut self,
        mem: &mut dyn GuestMemory,
        f: impl FnOnce(&mut D, &mut Queues<'_>, &mut dyn GuestMemory) -> Result<R, (u16, QueueError)>,
    ) -> Option<R> {
        if !self.is_live() {
            return None;
        }
        let n = self.queue_count();
        let mut queues = Queues::new(&mut self.queues[..n]);
        let result = f(&mut self.device, &mut queues, mem);
        let out = match result {
            Ok(r) => Some(r),
            Err((queue, error)) => {
                self.fail(TransportError::Queue { queue, error });
                None
            }
        };
        self.signal_used(mem);
        out
    }

    /// Raises the used-buffer interrupt if any queue used buffers its
    /// driver wants to hear of.
    fn signal_used(&mut self, mem: &mut dyn GuestMemory) {
        if !self.is_live() {
            return;
        }
        let n = self.queue_count();
        let mut raise = false;
        for i in 0..n {
            if !self.queues[i].is_ready() {
                continue;
            }
            let q = &mut self.queues[i];
            match q.flush_used(mem).and_then(|()| q.needs_interrupt(mem)) {
                Ok(wanted) => raise |= wanted,
                Err(error) => {
                    self.fail(TransportError::Queue {
                        queue: i as u16,
                        error,
                    });
                    return;
                }
            }
        }
        if raise {
            bump(&mut self.counters.interrupts);
            self.interrupt_status |= mmio::INT_USED_BUFFER;
        }
    }

    fn read_config(&mut self, offset: u64, size: AccessSize) -> u64 {
        match self.config_span(offset, size) {
            Some((at, n)) => {
                let mut b = [0u8; 4];
                self.device.read_config(at, &mut b[..n]);
                u64::from(u32::from_le_bytes(b))
            }
            None => 0,
        }
    }

    fn write_config(&mut self, offset: u64, size: AccessSize, value: u64) {
        if let Some((at, n)) = self.config_span(offset, size) {
            let b = (value as u32).to_le_bytes();
            self.device.write_config(at, &b[..n]);
        }
    }

    /// The configuration-space offset and width of an access at register
    /// offset `offset`, if the spec allows it there and the device's space
    /// holds it (counted otherwise).
    fn config_span(&mut self, offset: u64, size: AccessSize) -> Option<(usize, usize)> {
        let n = size.bytes();
        let at = offset - mmio::CONFIG;
        let ok = n <= 4
            && offset.is_multiple_of(n)
            && at
                .checked_add(n)
                .is_some_and(|end| end <= self.device.config_len() as u64);
        if ok {
            Some((at as usize, n as usize))
        } else {
            bump(&mut self.counters.bad_accesses);
            None
        }
    }

    /// Whether a control-register access has the only width the spec
    /// allows (32 bits, aligned); counted otherwise.
    fn control_width_ok(&mut self, offset: u64, size: AccessSize) -> bool {
        let ok = size == AccessSize::Word && offset.is_multiple_of(4);
        if !ok {
            bump(&mut self.counters.bad_accesses);
        }
        ok
    }
}

impl<D: VirtioDevice> MmioDevice for Transport<D> {
    fn read(&mut self, access: &DeviceAccess, _fx: &mut Effects) -> Result<u64, AccessRefused> {
        let (offset, size) = (access.offset, access.size);
        Ok(if offset >= mmio::CONFIG {
            self.read_config(offset, size)
        } else if self.control_width_ok(offset, size) {
            u64::from(self.read_register(offset))
        } else {
            0
        })
    }

    fn write(
        &mut self,
        access: &DeviceAccess,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        let (offset, size) = (access.offset, access.size);
        if offset >= mmio::CONFIG {
            self.write_config(offset, size, value);
        } else if self.control_width_ok(offset, size) {
            self.write_register(offset, value as u32, fx);
        }
        Ok(())
    }
}
