//! The virtio-mmio transport and split virtqueues (`stratum_virtio`): a
//! driver that negotiates (with or without `INDIRECT_DESC` and
//! `EVENT_IDX`) and sets up two queues over a fake guest RAM, then a
//! hostile program: raw writes anywhere in RAM (rings, descriptors,
//! indirect tables, `used_event`), descriptors and chains published as a
//! driver would, notifies, register accesses at every offset and width,
//! interrupt acknowledges and resets. An echo device behind the transport
//! pops every chain, copies its readable bytes into its writable ones and
//! returns it used.
//!
//! Checked: nothing panics; every chain handed out is well formed (at most
//! `MAX_SEGMENTS` segments, none empty, each inside RAM, readable before
//! writable, lengths that add up); one `pop` makes at most
//! `POP_ACCESS_BOUND` memory accesses; one notify never yields more chains
//! than the queue has entries; a ring error stops the device.
#![no_main]

use std::cell::Cell;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use stratum_core::access::AccessSize;
use stratum_core::addr::Ipa;
use stratum_core::bus::{DeviceAccess, Effects, MmioDevice};
use stratum_fuzz::Input;
use stratum_virtio::chain::MAX_SEGMENTS;
use stratum_virtio::mem::{Fence, GuestMemory, MemError, SliceMemory};
use stratum_virtio::queue::{POP_ACCESS_BOUND, QueueError};
use stratum_virtio::spec::{feature, mmio, status};
use stratum_virtio::transport::{Transport, TransportError};
use stratum_virtio::{Queues, VirtioDevice};

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x1_0000;
/// Queue `q`'s areas start at `RAM_BASE + q * QUEUE_STRIDE`.
const QUEUE_STRIDE: u64 = 0x2000;
const AVAIL_OFFSET: u64 = 0x1000;
const USED_OFFSET: u64 = 0x1400;
const QUEUES: u16 = 2;
const MAX_QUEUE: u16 = 256;
const MAX_OPS: usize = 128;

/// Guest memory that counts its reads and writes for the device to see.
struct Counting<'a> {
    inner: SliceMemory<'a>,
    count: Rc<Cell<u64>>,
}

impl GuestMemory for Counting<'_> {
    fn read(&self, addr: Ipa, buf: &mut [u8]) -> Result<(), MemError> {
        self.count.set(self.count.get() + 1);
        self.inner.read(addr, buf)
    }
    fn write(&mut self, addr: Ipa, data: &[u8]) -> Result<(), MemError> {
        self.count.set(self.count.get() + 1);
        self.inner.write(addr, data)
    }
    fn contains(&self, addr: Ipa, len: u64) -> bool {
        self.inner.contains(addr, len)
    }
    fn fence(&self, order: Fence) {
        self.inner.fence(order);
    }
}

/// Copies each chain's readable bytes into its writable ones.
struct Echo {
    count: Rc<Cell<u64>>,
    sizes: [u16; QUEUES as usize],
}

impl VirtioDevice for Echo {
    fn device_id(&self) -> u32 {
        stratum_virtio::spec::device_id::CONSOLE
    }
    fn features(&self) -> u64 {
        0
    }
    fn queue_count(&self) -> u16 {
        QUEUES
    }
    fn queue_max_size(&self, queue: u16) -> u16 {
        self.sizes.get(usize::from(queue)).copied().unwrap_or(0)
    }
    fn notify(
        &mut self,
        queue: u16,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        let q = queues.get(queue)?;
        let mut popped = 0u32;
        loop {
            let before = self.count.get();
            let Some(chain) = q.pop(mem)? else {
                break;
            };
            assert!(
                self.count.get() - before <= POP_ACCESS_BOUND,
                "a pop made {} accesses",
                self.count.get() - before
            );
            popped += 1;
            assert!(popped <= u32::from(q.size()), "more chains than entries");
            let (r, w) = (chain.readable(), chain.writable());
            assert!(r.len() + w.len() <= MAX_SEGMENTS);
            for s in r.iter().chain(w) {
                assert!(s.len > 0, "an empty segment");
                assert!(
                    mem.contains(s.addr, u64::from(s.len)),
                    "a segment outside RAM"
                );
            }
            let sum = |segs: &[stratum_virtio::Segment]| -> u64 {
                segs.iter().map(|s| u64::from(s.len)).sum()
            };
            assert_eq!(sum(r), u64::from(chain.readable_len()));
            assert_eq!(sum(w), u64::from(chain.writable_len()));
            let n = chain.readable_len().min(chain.writable_len()).min(4096);
            let mut buf = vec![0u8; n as usize];
            chain.read(mem, 0, &mut buf)?;
            chain.write(mem, 0, &buf)?;
            q.add_used(mem, chain.head(), n)?;
        }
        Ok(())
    }
    fn reset(&mut self) {}
}

fn access(offset: u64, size: AccessSize) -> DeviceAccess {
    DeviceAccess {
        vcpu: 0,
        region: 0,
        bank: 0,
        offset,
        size,
    }
}

fn wr(t: &mut Transport<Echo>, offset: u64, value: u32) {
    let _ = t.write(
        &access(offset, AccessSize::Word),
        u64::from(value),
        &mut Effects::default(),
    );
}

fn rd(t: &mut Transport<Echo>, offset: u64) -> u32 {
    t.read(&access(offset, AccessSize::Word), &mut Effects::default())
        .map_or(0, |v| v as u32)
}

/// The driver's initialization (§3.1.1) with queues of `sizes`.
fn setup(t: &mut Transport<Echo>, features: u64, sizes: [u16; 2]) {
    wr(t, mmio::STATUS, 0);
    wr(t, mmio::STATUS, status::ACKNOWLEDGE);
    wr(t, mmio::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(t, mmio::DRIVER_FEATURES_SEL, 0);
    wr(t, mmio::DRIVER_FEATURES, features as u32);
    wr(t, mmio::DRIVER_FEATURES_SEL, 1);
    wr(t, mmio::DRIVER_FEATURES, (features >> 32) as u32);
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    wr(t, mmio::STATUS, s);
    for (q, &size) in sizes.iter().enumerate() {
        let base = RAM_BASE + q as u64 * QUEUE_STRIDE;
        wr(t, mmio::QUEUE_SEL, q as u32);
        wr(t, mmio::QUEUE_NUM, u32::from(size));
        for (reg, addr) in [
            (mmio::QUEUE_DESC_LOW, base),
            (mmio::QUEUE_DRIVER_LOW, base + AVAIL_OFFSET),
            (mmio::QUEUE_DEVICE_LOW, base + USED_OFFSET),
        ] {
            wr(t, reg, addr as u32);
            wr(t, reg + 4, (addr >> 32) as u32);
        }
        wr(t, mmio::QUEUE_READY, 1);
    }
    wr(t, mmio::STATUS, s | status::DRIVER_OK);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let head = input.u8();
    let mut features = feature::VERSION_1;
    if head & 1 != 0 {
        features |= feature::RING_INDIRECT_DESC;
    }
    if head & 2 != 0 {
        features |= feature::RING_EVENT_IDX;
    }
    // Power-of-two sizes up to 256; now and then any size at all.
    let size_of = |b: u8| -> u16 {
        if b & 0x80 != 0 {
            u16::from(b & 0x7f) * 3
        } else {
            1 << (b % 9)
        }
    };
    let sizes = [size_of(input.u8()), size_of(input.u8())];
    let count = Rc::new(Cell::new(0));
    let mut t = Transport::new(Echo {
        count: Rc::clone(&count),
        sizes: [MAX_QUEUE, MAX_QUEUE / 2],
    });
    let mut ram = vec![0u8; RAM_SIZE];
    let mut mem = Counting {
        inner: SliceMemory::new(Ipa(RAM_BASE), &mut ram),
        count,
    };
    setup(&mut t, features, sizes);
    let mut avail_idx = [0u16; 2];

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let q = usize::from(op >> 7);
        let qbase = RAM_BASE + q as u64 * QUEUE_STRIDE;
        let size = u64::from(sizes[q].max(1));
        match op % 10 {
            0 => {
                let at = u64::from(input.u16());
                let len = input.below(17);
                let bytes = input.take(len);
                let _ = mem.write(Ipa(RAM_BASE + at), bytes);
            }
            1 => {
                // Descriptor `i` of the queue's table, or of a table
                // elsewhere (an indirect one).
                let table = if input.bool() {
                    qbase
                } else {
                    RAM_BASE + 0x4000 + u64::from(input.u16() % 0xc000)
                };
                let i = u64::from(input.u16() % 1024);
                let addr = if input.bool() {
                    RAM_BASE + u64::from(input.u16())
                } else {
                    input.u64()
                };
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&addr.to_le_bytes());
                d[8..12].copy_from_slice(&input.u32().to_le_bytes());
                d[12..14].copy_from_slice(&u16::from(input.u8() & 7).to_le_bytes());
                d[14..].copy_from_slice(&input.u16().to_le_bytes());
                let _ = mem.write(Ipa(table + 16 * i), &d);
            }
            2 => {
                // Publish a head, as a driver does.
                let head = input.u16();
                let slot = u64::from(avail_idx[q]) % size;
                let avail = qbase + AVAIL_OFFSET;
                let _ = mem.write(Ipa(avail + 4 + 2 * slot), &head.to_le_bytes());
                avail_idx[q] = avail_idx[q].wrapping_add(1);
                let _ = mem.write(Ipa(avail + 2), &avail_idx[q].to_le_bytes());
            }
            3 | 4 => {
                wr(&mut t, mmio::QUEUE_NOTIFY, q as u32);
                t.process(&mut mem);
            }
            5 => {
                let (o, s, v) = (u64::from(input.u16() % 0x200), input.size(), input.value());
                let _ = t.write(&access(o, s), v, &mut Effects::default());
                t.process(&mut mem);
            }
            6 => {
                let (o, s) = (u64::from(input.u16() % 0x200), input.size());
                if let Ok(v) = t.read(&access(o, s), &mut Effects::default()) {
                    assert_eq!(v & !s.mask(), 0, "a read wider than the access");
                }
            }
            7 => {
                // The driver's flags and `used_event`.
                let avail = qbase + AVAIL_OFFSET;
                let _ = mem.write(Ipa(avail), &input.u16().to_le_bytes());
                let _ = mem.write(Ipa(avail + 4 + 2 * size), &input.u16().to_le_bytes());
            }
            8 => {
                let pending = rd(&mut t, mmio::INTERRUPT_STATUS);
                wr(&mut t, mmio::INTERRUPT_ACK, pending);
            }
            _ => {
                setup(&mut t, features, sizes);
                avail_idx = [0; 2];
            }
        }
        if let Some(TransportError::Queue { .. }) = t.take_error() {
            assert!(!t.is_live(), "a ring error leaves the device live");
            assert_ne!(rd(&mut t, mmio::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        }
    }
});
