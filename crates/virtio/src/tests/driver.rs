//! A model driver: what Linux's virtio-mmio and virtio-ring drivers do, in
//! a few lines each, over a [`SliceMemory`] — register accesses through
//! the transport's [`MmioDevice`] interface, and rings written into RAM as
//! the spec lays them out. Also a configurable test device.

use stratum_core::access::AccessSize;
use stratum_core::addr::Ipa;
use stratum_core::bus::{DeviceAccess, Effects, MmioDevice};

use crate::device::{Queues, VirtioDevice};
use crate::mem::{GuestMemory, SliceMemory};
use crate::queue::{QueueError, SplitQueue};
use crate::spec::{feature, mmio, ring, status};
use crate::transport::Transport;

/// Where the tests' RAM starts.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The tests' RAM size (64 KiB).
pub const RAM_SIZE: usize = 0x1_0000;

/// Zeroed test RAM.
pub fn ram() -> Vec<u8> {
    vec![0; RAM_SIZE]
}

/// Memory over `bytes` at [`RAM_BASE`].
pub fn memory(bytes: &mut [u8]) -> SliceMemory<'_> {
    SliceMemory::new(Ipa(RAM_BASE), bytes)
}

/// An access at `offset` of `size`.
pub fn access(offset: u64, size: AccessSize) -> DeviceAccess {
    DeviceAccess {
        vcpu: 0,
        region: 0,
        bank: 0,
        offset,
        size,
    }
}

/// A read of `size` at `offset`; the transport never refuses one.
pub fn read_sized(t: &mut impl MmioDevice, offset: u64, size: AccessSize) -> u64 {
    let mut fx = Effects::default();
    let v = t
        .read(&access(offset, size), &mut fx)
        .expect("the transport never refuses an access");
    assert!(fx.is_empty(), "a read has no effects");
    v
}

/// A 32-bit register read.
pub fn rd(t: &mut impl MmioDevice, offset: u64) -> u32 {
    read_sized(t, offset, AccessSize::Word) as u32
}

/// A write of `size` at `offset`, and its effects.
pub fn write_sized(t: &mut impl MmioDevice, offset: u64, size: AccessSize, value: u64) -> Effects {
    let mut fx = Effects::default();
    t.write(&access(offset, size), value, &mut fx)
        .expect("the transport never refuses an access");
    fx
}

/// A 32-bit register write, and its effects.
pub fn wr(t: &mut impl MmioDevice, offset: u64, value: u32) -> Effects {
    write_sized(t, offset, AccessSize::Word, u64::from(value))
}

/// The device's 64 offered feature bits, read as a driver does.
pub fn device_features(t: &mut impl MmioDevice) -> u64 {
    wr(t, mmio::DEVICE_FEATURES_SEL, 0);
    let lo = rd(t, mmio::DEVICE_FEATURES);
    wr(t, mmio::DEVICE_FEATURES_SEL, 1);
    let hi = rd(t, mmio::DEVICE_FEATURES);
    u64::from(lo) | (u64::from(hi) << 32)
}

/// Writes the driver's 64 feature bits.
pub fn write_driver_features(t: &mut impl MmioDevice, features: u64) {
    wr(t, mmio::DRIVER_FEATURES_SEL, 0);
    wr(t, mmio::DRIVER_FEATURES, features as u32);
    wr(t, mmio::DRIVER_FEATURES_SEL, 1);
    wr(t, mmio::DRIVER_FEATURES, (features >> 32) as u32);
}

/// The initialization sequence up to `FEATURES_OK` (§3.1.1), accepting
/// `features`; whether the device kept `FEATURES_OK`.
pub fn negotiate(t: &mut impl MmioDevice, features: u64) -> bool {
    wr(t, mmio::STATUS, 0);
    wr(t, mmio::STATUS, status::ACKNOWLEDGE);
    wr(t, mmio::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    write_driver_features(t, features);
    wr(
        t,
        mmio::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    rd(t, mmio::STATUS) & status::FEATURES_OK != 0
}

/// Sets `DRIVER_OK` after [`negotiate`].
pub fn driver_ok(t: &mut impl MmioDevice) {
    let s = rd(t, mmio::STATUS);
    wr(t, mmio::STATUS, s | status::DRIVER_OK);
}

/// The driver's side of one split queue in RAM.
#[derive(Clone, Copy, Debug)]
pub struct DriverQueue {
    /// Entries.
    pub size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Driver area (available ring).
    pub avail: u64,
    /// Device area (used ring).
    pub used: u64,
    /// The next descriptor to hand out (descriptors are used round-robin).
    pub next_desc: u16,
    /// The driver's `avail.idx`.
    pub avail_idx: u16,
    /// The used entries the driver has consumed.
    pub last_used: u16,
}

impl DriverQueue {
    /// A queue of `size` entries with its three areas laid out from guest
    /// address `at` (16-aligned).
    pub fn at(at: u64, size: u16) -> Self {
        let n = u64::from(size);
        let desc = at;
        let avail = desc + ring::DESC_SIZE * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        Self {
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            last_used: 0,
        }
    }

    /// The first address past the queue's areas.
    pub fn end(&self) -> u64 {
        self.used + 6 + ring::USED_ELEM_SIZE * u64::from(self.size)
    }

    /// Zeroes the queue's areas, as a driver does with fresh ring memory.
    pub fn clear(&self, mem: &mut dyn GuestMemory) {
        let len = (self.end() - self.desc) as usize;
        mem.write(Ipa(self.desc), &vec![0; len])
            .expect("the model's rings are in RAM");
    }

    /// Programs queue `index` through the transport's registers and makes
    /// it ready.
    pub fn setup(&self, t: &mut impl MmioDevice, index: u32) {
        wr(t, mmio::QUEUE_SEL, index);
        assert_eq!(rd(t, mmio::QUEUE_READY), 0);
        assert!(rd(t, mmio::QUEUE_NUM_MAX) >= u32::from(self.size));
        wr(t, mmio::QUEUE_NUM, u32::from(self.size));
        for (reg, addr) in [
            (mmio::QUEUE_DESC_LOW, self.desc),
            (mmio::QUEUE_DRIVER_LOW, self.avail),
            (mmio::QUEUE_DEVICE_LOW, self.used),
        ] {
            wr(t, reg, addr as u32);
            wr(t, reg + 4, (addr >> 32) as u32);
        }
        wr(t, mmio::QUEUE_READY, 1);
    }

    /// The device's view of this queue, ready, without a transport.
    pub fn device_queue(&self, indirect: bool, event_idx: bool) -> SplitQueue {
        let mut q = SplitQueue::new(self.size);
        q.set_size(u32::from(self.size));
        for (area, addr) in [self.desc, self.avail, self.used].into_iter().enumerate() {
            q.set_area_half(area, false, addr as u32);
            q.set_area_half(area, true, (addr >> 32) as u32);
        }
        q.set_features(indirect, event_idx);
        q.make_ready().expect("the model's layout is valid");
        q
    }

    /// Writes descriptor `i` of the table at `table`.
    pub fn write_desc(
        mem: &mut dyn GuestMemory,
        table: u64,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        mem.write(Ipa(table + 16 * u64::from(i)), &d)
            .expect("the model writes inside RAM");
    }

    /// Writes `bufs` (address, length, device-writable) as a chain of
    /// direct descriptors; its head.
    pub fn chain(&mut self, mem: &mut dyn GuestMemory, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (k, &(addr, len, writable)) in bufs.iter().enumerate() {
            let i = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let more = k + 1 < bufs.len();
            let flags = if writable { ring::DESC_F_WRITE } else { 0 }
                | if more { ring::DESC_F_NEXT } else { 0 };
            Self::write_desc(mem, self.desc, i, addr, len, flags, self.next_desc);
        }
        head
    }

    /// Writes `bufs` as an indirect table at `table`, named by one direct
    /// descriptor; its head.
    pub fn indirect(
        &mut self,
        mem: &mut dyn GuestMemory,
        table: u64,
        bufs: &[(u64, u32, bool)],
    ) -> u16 {
        for (k, &(addr, len, writable)) in bufs.iter().enumerate() {
            let more = k + 1 < bufs.len();
            let flags = if writable { ring::DESC_F_WRITE } else { 0 }
                | if more { ring::DESC_F_NEXT } else { 0 };
            Self::write_desc(mem, table, k as u16, addr, len, flags, k as u16 + 1);
        }
        let head = self.next_desc;
        self.next_desc = (self.next_desc + 1) % self.size;
        let len = 16 * bufs.len() as u32;
        Self::write_desc(mem, self.desc, head, table, len, ring::DESC_F_INDIRECT, 0);
        head
    }

    /// Puts `head` in the available ring and publishes the new index.
    pub fn publish(&mut self, mem: &mut dyn GuestMemory, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        mem.write(Ipa(self.avail + 4 + 2 * slot), &head.to_le_bytes())
            .expect("inside RAM");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(mem, self.avail_idx);
    }

    /// Writes `avail.idx` (a hostile driver may write anything).
    pub fn set_avail_idx(&self, mem: &mut dyn GuestMemory, idx: u16) {
        mem.write(Ipa(self.avail + 2), &idx.to_le_bytes())
            .expect("inside RAM");
    }

    /// Writes `avail.flags`.
    pub fn set_avail_flags(&self, mem: &mut dyn GuestMemory, flags: u16) {
        mem.write(Ipa(self.avail), &flags.to_le_bytes())
            .expect("inside RAM");
    }

    /// Writes `used_event` (the last entry of the available ring).
    pub fn set_used_event(&self, mem: &mut dyn GuestMemory, event: u16) {
        let at = self.avail + 4 + 2 * u64::from(self.size);
        mem.write(Ipa(at), &event.to_le_bytes())
            .expect("inside RAM");
    }

    /// The device's `avail_event` (the last entry of the used ring).
    pub fn avail_event(&self, mem: &dyn GuestMemory) -> u16 {
        let at = self.used + 4 + ring::USED_ELEM_SIZE * u64::from(self.size);
        mem.read_u16(Ipa(at)).expect("inside RAM")
    }

    /// The used elements (id, len) the device added since the last call.
    pub fn take_used(&mut self, mem: &dyn GuestMemory) -> Vec<(u32, u32)> {
        let idx = mem.read_u16(Ipa(self.used + 2)).expect("inside RAM");
        let mut out = Vec::new();
        while self.last_used != idx {
            let slot = u64::from(self.last_used % self.size);
            let at = self.used + 4 + ring::USED_ELEM_SIZE * slot;
            let id = mem.read_u32(Ipa(at)).expect("inside RAM");
            let len = mem.read_u32(Ipa(at + 4)).expect("inside RAM");
            out.push((id, len));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }
}

/// What the test device does when notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnNotify {
    /// Nothing (records the notify).
    Record,
    /// Fails with this error.
    Fail(QueueError),
    /// Takes every chain of the queue and returns it with 0 bytes written.
    Drain,
}

/// A device whose answers the test chooses.
#[derive(Debug)]
pub struct TestDevice {
    /// Its ID.
    pub id: u32,
    /// Its own feature bits.
    pub features: u64,
    /// Its queues' maximum sizes.
    pub max_sizes: Vec<u16>,
    /// Its configuration space.
    pub config: Vec<u8>,
    /// What a notify does.
    pub on_notify: OnNotify,
    /// Queues notified, in order.
    pub notified: Vec<u16>,
    /// The features it was activated with.
    pub activated: Option<u64>,
    /// How many resets it saw.
    pub resets: u32,
    /// Feature bits it refuses to work with (in any combination).
    pub refuses: u64,
}

impl TestDevice {
    /// Device 42 with `queues` queues of 16 entries and 8 bytes of
    /// configuration `0..8`.
    pub fn new(queues: usize) -> Self {
        Self {
            id: 42,
            features: 1 << 5,
            max_sizes: vec![16; queues],
            config: (0..8).collect(),
            on_notify: OnNotify::Record,
            notified: Vec::new(),
            activated: None,
            resets: 0,
            refuses: 0,
        }
    }
}

impl VirtioDevice for TestDevice {
    fn device_id(&self) -> u32 {
        self.id
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn accepts(&self, features: u64) -> bool {
        features & self.refuses == 0
    }

    fn queue_count(&self) -> u16 {
        self.max_sizes.len() as u16
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        self.max_sizes.get(usize::from(queue)).copied().unwrap_or(0)
    }

    fn config_len(&self) -> usize {
        self.config.len()
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        data.copy_from_slice(&self.config[offset..offset + data.len()]);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        self.config[offset..offset + data.len()].copy_from_slice(data);
    }

    fn activate(&mut self, features: u64) {
        self.activated = Some(features);
    }

    fn notify(
        &mut self,
        queue: u16,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        self.notified.push(queue);
        match self.on_notify {
            OnNotify::Record => Ok(()),
            OnNotify::Fail(e) => Err(e),
            OnNotify::Drain => {
                let q = queues.get(queue)?;
                while let Some(chain) = q.pop(mem)? {
                    q.add_used(mem, chain.head(), 0)?;
                }
                Ok(())
            }
        }
    }

    fn reset(&mut self) {
        self.resets += 1;
        self.activated = None;
    }
}

/// A transport over a [`TestDevice`] with `queues` queues, driven to
/// `DRIVER_OK` with `features` (plus `VERSION_1`) and queue 0 set up as
/// `q`.
pub fn live_transport(queues: usize, features: u64, q: &DriverQueue) -> Transport<TestDevice> {
    let mut t = Transport::new(TestDevice::new(queues));
    assert!(negotiate(&mut t, features | feature::VERSION_1));
    q.setup(&mut t, 0);
    driver_ok(&mut t);
    assert!(t.is_live());
    t
}

/// xorshift64*: cheap noise for the hostile-ring tests.
pub fn next_noise(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Pours a plausible structure over the hostile ring `dq` (in noise):
/// descriptors that mostly point at buffers of `lens` bytes from `bufs`
/// (device-writable ones if `writable`), sometimes chained, indirect, of
/// zero or huge length or with junk flags; heads mostly in range; an
/// available index mostly within a ring of the last entry taken. Returns
/// the buffers described, for the caller to fill with plausible content.
/// Whatever lies outside RAM stays noise.
pub fn structured_ring(
    mem: &mut SliceMemory<'_>,
    dq: &DriverQueue,
    seed: u64,
    writable: bool,
    bufs: u64,
    lens: core::ops::Range<u32>,
) -> Vec<(u64, u32)> {
    let mut x = seed | 1;
    let size = dq.size;
    let mut out = Vec::new();
    for i in 0..size {
        let r = next_noise(&mut x);
        let addr = bufs + ((r & 0xff) << 8);
        let span = u64::from(lens.end - lens.start).max(1);
        let len = match (r >> 8) & 7 {
            0..=4 => lens.start + ((r >> 16) % span) as u32,
            5 => ((r >> 16) % 64) as u32,
            6 => 0,
            _ => (r >> 32) as u32,
        };
        let base = if writable { ring::DESC_F_WRITE } else { 0 };
        let flags = match (r >> 40) & 15 {
            0..=9 => base,
            10..=12 => base | ring::DESC_F_NEXT,
            13 => ring::DESC_F_INDIRECT,
            _ => (r >> 44) as u16,
        };
        let next = ((r >> 52) % (u64::from(size) + 1)) as u16;
        if mem.contains(Ipa(dq.desc + 16 * u64::from(i)), 16) {
            DriverQueue::write_desc(mem, dq.desc, i, addr, len, flags, next);
            out.push((addr, len));
        }
        let slot = Ipa(dq.avail + 4 + 2 * u64::from(i));
        let head = ((r >> 56) % (u64::from(size) + 1)) as u16;
        let _ = mem.write(slot, &head.to_le_bytes());
    }
    let r = next_noise(&mut x);
    let idx = if r & 7 != 0 {
        (r >> 8) as u16 % (size + 1)
    } else {
        (r >> 16) as u16
    };
    let _ = mem.write(Ipa(dq.avail + 2), &idx.to_le_bytes());
    let _ = mem.write(Ipa(dq.avail), &0u16.to_le_bytes());
    out
}
