//! Properties over random input: garbage rings never panic the walker,
//! never let it use memory outside RAM without failing, and bound its work;
//! well-formed rings written by the model driver come back exactly as
//! posted; random register traffic never faults the transport and never
//! breaks its invariants.

use proptest::prelude::*;
use stratum_core::access::AccessSize;
use stratum_core::addr::Ipa;

use super::driver::*;
use crate::chain::Segment;
use crate::mem::{GuestMemory, SliceMemory};
use crate::queue::{POP_ACCESS_BOUND, SplitQueue};
use crate::spec::{feature, mmio, ring, status};
use crate::transport::Transport;

/// The fuzzed RAM's size: small, so random addresses often land in it.
const FUZZ_RAM: u64 = 0x2000;
/// Where the fuzzed rings put a well-formed-looking indirect table.
const FUZZ_TABLE: u64 = RAM_BASE + 0x1800;

/// An address a hostile driver might write: inside the small RAM, at the
/// fuzz table, just past RAM, below it, or anything at all.
fn address() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0..FUZZ_RAM).prop_map(|o| RAM_BASE + o),
        2 => Just(FUZZ_TABLE),
        1 => (0..0x40u64).prop_map(|o| RAM_BASE + FUZZ_RAM - 0x20 + o),
        1 => (1..0x40u64).prop_map(|o| RAM_BASE - o),
        1 => any::<u64>(),
    ]
}

/// A length a hostile driver might write.
fn length() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 1..0x100u32,
        1 => Just(0u32),
        1 => (0..=8u32).prop_map(|k| 16 * k),
        1 => any::<u32>(),
    ]
}

/// A descriptor: address, length, flags (any of the three, or junk bits),
/// next.
fn descriptor(size: u16) -> impl Strategy<Value = (u64, u32, u16, u16)> {
    (
        address(),
        length(),
        prop_oneof![4 => 0..8u16, 1 => any::<u16>()],
        prop_oneof![4 => 0..size + 2, 1 => any::<u16>()],
    )
}

/// An aligned area offset inside the small RAM, or one straddling or past
/// its end.
fn area(align: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0..FUZZ_RAM / align).prop_map(move |k| RAM_BASE + k * align),
        1 => (0..0x100 / align).prop_map(move |k| RAM_BASE + FUZZ_RAM - 0x80 + k * align),
        1 => (0..0x100 / align).prop_map(move |k| RAM_BASE + 0x10_0000 + k * align),
    ]
}

/// A ring made of garbage with some structure poured over it.
#[derive(Debug, Clone)]
struct Garbage {
    size: u16,
    indirect: bool,
    event_idx: bool,
    areas: [u64; 3],
    seed: u64,
    table: Vec<(u64, u32, u16, u16)>,
    indirect_table: Vec<(u64, u32, u16, u16)>,
    avail_idx: u16,
    heads: Vec<u16>,
}

fn garbage() -> impl Strategy<Value = Garbage> {
    (0u32..=6, any::<bool>(), any::<bool>()).prop_flat_map(|(log2, indirect, event_idx)| {
        let size = 1u16 << log2;
        (
            (area(16), area(2), area(4)),
            any::<u64>(),
            proptest::collection::vec(descriptor(size), usize::from(size)),
            proptest::collection::vec(descriptor(8), 8),
            prop_oneof![3 => 0..=size + 2, 1 => any::<u16>()],
            proptest::collection::vec(
                prop_oneof![4 => 0..size + 2, 1 => any::<u16>()],
                usize::from(size),
            ),
        )
            .prop_map(
                move |(areas, seed, table, indirect_table, avail_idx, heads)| Garbage {
                    size,
                    indirect,
                    event_idx,
                    areas: [areas.0, areas.1, areas.2],
                    seed,
                    table,
                    indirect_table,
                    avail_idx,
                    heads,
                },
            )
    })
}

/// `FUZZ_RAM` bytes of noise from `seed` (xorshift64*: generating them
/// byte by byte through proptest costs a hundred times more).
fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..FUZZ_RAM / 8)
        .flat_map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()
        })
        .collect()
}

/// Writes what fits of `g`'s structure into RAM (a part outside RAM stays
/// garbage, or simply is not there).
fn lay_out(g: &Garbage, mem: &mut SliceMemory<'_>) {
    for (i, &(a, l, f, n)) in g.table.iter().enumerate() {
        let at = g.areas[0] + 16 * i as u64;
        if mem.contains(Ipa(at), 16) {
            DriverQueue::write_desc(mem, g.areas[0], i as u16, a, l, f, n);
        }
    }
    for (i, &(a, l, f, n)) in g.indirect_table.iter().enumerate() {
        DriverQueue::write_desc(mem, FUZZ_TABLE, i as u16, a, l, f, n);
    }
    let _ = mem.write(Ipa(g.areas[1] + 2), &g.avail_idx.to_le_bytes());
    for (i, h) in g.heads.iter().enumerate() {
        let _ = mem.write(Ipa(g.areas[1] + 4 + 2 * i as u64), &h.to_le_bytes());
    }
}

/// The device's view of `g`'s queue.
fn device_queue(g: &Garbage) -> SplitQueue {
    let mut dq = DriverQueue::at(g.areas[0], g.size);
    dq.avail = g.areas[1];
    dq.used = g.areas[2];
    dq.device_queue(g.indirect, g.event_idx)
}

/// One chain a well-behaved driver posts: its readable and writable
/// buffers (offset into the buffer area, length), and whether it goes
/// through an indirect table.
#[derive(Debug, Clone)]
struct Posted {
    readable: Vec<(u64, u32)>,
    writable: Vec<(u64, u32)>,
    indirect: bool,
}

fn posted() -> impl Strategy<Value = Posted> {
    let buf = (0..0x4000u64, 1..0x800u32);
    (
        proptest::collection::vec(buf.clone(), 0..4),
        proptest::collection::vec(buf, 0..4),
        any::<bool>(),
    )
        .prop_filter("a chain has a buffer", |(r, w, _)| {
            !r.is_empty() || !w.is_empty()
        })
        .prop_map(|(readable, writable, indirect)| Posted {
            readable,
            writable,
            indirect,
        })
}

/// Buffers of the well-formed rings live here.
const BUFS: u64 = RAM_BASE + 0x8000;
/// Their indirect tables live here, 0x100 bytes per chain of a batch.
const TABLES: u64 = RAM_BASE + 0x4000;

/// A register access of random shape, mostly at registers that exist.
fn register_access() -> impl Strategy<Value = (u64, AccessSize, bool, u64)> {
    let offsets = [
        mmio::DEVICE_FEATURES_SEL,
        mmio::DRIVER_FEATURES,
        mmio::DRIVER_FEATURES_SEL,
        mmio::QUEUE_SEL,
        mmio::QUEUE_NUM,
        mmio::QUEUE_READY,
        mmio::QUEUE_NOTIFY,
        mmio::INTERRUPT_ACK,
        mmio::STATUS,
        mmio::QUEUE_DESC_LOW,
        mmio::QUEUE_DESC_HIGH,
        mmio::QUEUE_DRIVER_LOW,
        mmio::QUEUE_DRIVER_HIGH,
        mmio::QUEUE_DEVICE_LOW,
        mmio::QUEUE_DEVICE_HIGH,
    ];
    let value = prop_oneof![
        3 => 0..16u64,
        2 => (0..FUZZ_RAM / 16).prop_map(|k| RAM_BASE + 16 * k),
        1 => any::<u64>(),
    ];
    (
        prop_oneof![
            6 => proptest::sample::select(offsets.to_vec()),
            1 => 0..0x200u64,
        ],
        prop_oneof![
            6 => Just(AccessSize::Word),
            1 => Just(AccessSize::Byte),
            1 => Just(AccessSize::Half),
            1 => Just(AccessSize::Double),
        ],
        prop_oneof![3 => Just(true), 1 => Just(false)],
        value,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Whatever the rings hold, popping terminates within its access
    /// bound, a refused access always fails the pop, every buffer handed
    /// out lies in RAM, and no more chains come out than the queue holds.
    #[test]
    fn garbage_rings_never_panic_and_never_escape_ram(g in garbage()) {
        let mut bytes = noise(g.seed);
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut bytes);
        lay_out(&g, &mut mem);
        let mut q = device_queue(&g);
        let mut taken = 0u32;
        for _ in 0..=u32::from(g.size) + 1 {
            let (accesses, refused) = (mem.accesses(), mem.refused());
            let popped = q.pop(&mut mem);
            prop_assert!(mem.accesses() - accesses <= POP_ACCESS_BOUND);
            if mem.refused() > refused {
                prop_assert!(popped.is_err(), "a refused access went unnoticed");
            }
            match popped {
                Ok(Some(chain)) => {
                    taken += 1;
                    let segments = chain.readable().iter().chain(chain.writable());
                    for s in segments {
                        prop_assert!(s.len > 0);
                        prop_assert!(mem.contains(s.addr, u64::from(s.len)));
                    }
                    let total = u64::from(chain.readable_len()) + u64::from(chain.writable_len());
                    prop_assert!(total <= u64::from(u32::MAX));
                    // Returning it may fail (a used ring outside RAM), never panic.
                    if q.add_used(&mut mem, chain.head(), chain.writable_len()).is_err() {
                        break;
                    }
                    let _ = q.needs_interrupt(&mem);
                }
                Ok(None) | Err(_) => break,
            }
        }
        prop_assert!(taken <= u32::from(g.size));
    }

    /// What a well-behaved driver posts, the walker returns: the same
    /// heads, buffers and directions, in order, batch after batch as the
    /// indexes wrap; and the used ring gives the driver back what the
    /// device returned.
    #[test]
    fn well_formed_rings_come_back_exactly(
        log2 in 0u32..=5,
        indirect in any::<bool>(),
        event_idx in any::<bool>(),
        batches in proptest::collection::vec(proptest::collection::vec(posted(), 1..8), 1..12),
    ) {
        let size = 1u16 << log2;
        let mut ram = ram();
        let mut mem = memory(&mut ram);
        let mut dq = DriverQueue::at(RAM_BASE, size);
        let mut q = dq.device_queue(indirect, event_idx);
        for batch in batches {
            // Post what fits in the descriptor table.
            let mut budget = usize::from(size);
            let mut expected = Vec::new();
            for (k, p) in batch.into_iter().enumerate() {
                let through_table = indirect && p.indirect;
                let need = if through_table { 1 } else { p.readable.len() + p.writable.len() };
                if need > budget {
                    break;
                }
                budget -= need;
                let bufs: Vec<(u64, u32, bool)> = p
                    .readable
                    .iter()
                    .map(|&(o, l)| (BUFS + o, l, false))
                    .chain(p.writable.iter().map(|&(o, l)| (BUFS + o, l, true)))
                    .collect();
                let head = if through_table {
                    dq.indirect(&mut mem, TABLES + 0x100 * k as u64, &bufs)
                } else {
                    dq.chain(&mut mem, &bufs)
                };
                dq.publish(&mut mem, head);
                expected.push((head, p));
            }
            for (head, p) in &expected {
                let chain = q.pop(&mut mem);
                prop_assert!(chain.is_ok(), "{chain:?}");
                let chain = chain.expect("checked").expect("posted");
                prop_assert_eq!(chain.head(), *head);
                let seg = |&(o, l): &(u64, u32)| Segment { addr: Ipa(BUFS + o), len: l };
                prop_assert_eq!(chain.readable(), p.readable.iter().map(seg).collect::<Vec<_>>());
                prop_assert_eq!(chain.writable(), p.writable.iter().map(seg).collect::<Vec<_>>());
                let written = chain.writable_len() / 2;
                prop_assert!(q.add_used(&mut mem, chain.head(), written).is_ok());
            }
            prop_assert_eq!(q.pop(&mut mem), Ok(None));
            let used = dq.take_used(&mem);
            let want: Vec<(u32, u32)> = expected
                .iter()
                .map(|(h, p)| (u32::from(*h), p.writable.iter().map(|w| w.1).sum::<u32>() / 2))
                .collect();
            prop_assert_eq!(used, want);
            if event_idx {
                prop_assert_eq!(dq.avail_event(&mem), dq.avail_idx);
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random register traffic, with notifies served over random memory:
    /// no access is ever refused, and the transport's invariants hold
    /// after every one.
    #[test]
    fn random_register_traffic_never_faults(
        ops in proptest::collection::vec(register_access(), 1..150),
        seed in any::<u64>(),
    ) {
        let mut device = TestDevice::new(3);
        device.on_notify = OnNotify::Drain;
        let mut t = Transport::new(device);
        let mut bytes = noise(seed);
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut bytes);
        let offered = t.offered_features();
        for (offset, size, is_write, value) in ops {
            if is_write {
                let fx = write_sized(&mut t, offset, size, value);
                if fx.notify() {
                    // A notify leaves a queue to serve; a reset (status 0)
                    // asks for the device work too, with nothing pending.
                    prop_assert!(t.has_pending() || t.status() == 0);
                    t.process(&mut mem);
                }
            } else {
                read_sized(&mut t, offset, size);
            }
            let s = t.status();
            prop_assert_eq!(t.line(), rd(&mut t, mmio::INTERRUPT_STATUS) != 0);
            if s & status::DRIVER_OK != 0 {
                prop_assert!(s & status::FEATURES_OK != 0);
            }
            if s & status::FEATURES_OK != 0 {
                prop_assert_eq!(t.driver_features() & !offered, 0);
                prop_assert!(t.driver_features() & feature::VERSION_1 != 0);
            }
            for i in 0..4 {
                let q = t.queue(i);
                if q.is_ready() {
                    prop_assert!(q.size().is_power_of_two() && q.size() <= q.max_size());
                    let [d, a, u] = q.areas();
                    prop_assert!(d.is_aligned(ring::DESC_ALIGN));
                    prop_assert!(a.is_aligned(ring::AVAIL_ALIGN));
                    prop_assert!(u.is_aligned(ring::USED_ALIGN));
                }
            }
        }
    }
}
