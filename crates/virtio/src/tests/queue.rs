//! Split-virtqueue walking and notification suppression: the well-formed
//! cases, then every hostile case of the "Bad input" list, each
//! with its typed error.

use stratum_core::addr::Ipa;

use super::driver::*;
use crate::chain::{MAX_SEGMENTS, Segment};
use crate::mem::{GuestMemory as _, SliceMemory};
use crate::queue::{MAX_INDIRECT, POP_ACCESS_BOUND, QueueError, SplitQueue};
use crate::spec::ring;

/// Buffers live from here on.
const BUF: u64 = RAM_BASE + 0x8000;
/// Indirect tables live from here on.
const TABLE: u64 = RAM_BASE + 0x4000;

/// A queue of `size` at the start of RAM, the driver's and the device's
/// views (indirect descriptors and `EVENT_IDX` as given).
fn queue(size: u16, indirect: bool, event_idx: bool) -> (DriverQueue, SplitQueue) {
    let dq = DriverQueue::at(RAM_BASE, size);
    let q = dq.device_queue(indirect, event_idx);
    (dq, q)
}

/// Pops one chain that must be refused; the error.
fn refused(q: &mut SplitQueue, mem: &mut SliceMemory<'_>) -> QueueError {
    let before = (q.next_avail(), mem.accesses());
    let e = q.pop(mem).expect_err("a hostile chain is refused");
    assert_eq!(q.next_avail(), before.0, "an error takes nothing");
    assert!(mem.accesses() - before.1 <= POP_ACCESS_BOUND);
    e
}

/// Publishes a hand-written chain whose head is descriptor `head`.
fn publish_raw(dq: &mut DriverQueue, mem: &mut SliceMemory<'_>, head: u16) {
    dq.publish(mem, head);
}

#[test]
fn an_empty_ring_gives_nothing() {
    let (_, mut q) = queue(8, false, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    assert_eq!(q.pop(&mut mem), Ok(None));
    assert_eq!(q.has_available(&mem), Ok(false));
}

#[test]
fn chains_come_back_in_order_readable_then_writable() {
    let (mut dq, mut q) = queue(8, true, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let a = dq.chain(
        &mut mem,
        &[
            (BUF, 10, false),
            (BUF + 0x100, 20, false),
            (BUF + 0x200, 30, true),
        ],
    );
    dq.publish(&mut mem, a);
    let b = dq.indirect(
        &mut mem,
        TABLE,
        &[
            (BUF + 0x300, 5, false),
            (BUF + 0x400, 6, true),
            (BUF + 0x500, 7, true),
        ],
    );
    dq.publish(&mut mem, b);
    let c = dq.chain(&mut mem, &[(BUF + 0x600, 1, true)]);
    dq.publish(&mut mem, c);
    assert_eq!(q.has_available(&mem), Ok(true));

    let first = q.pop(&mut mem).expect("valid").expect("a chain");
    assert_eq!(first.head(), a);
    assert_eq!(
        first.readable(),
        [
            Segment {
                addr: Ipa(BUF),
                len: 10
            },
            Segment {
                addr: Ipa(BUF + 0x100),
                len: 20
            }
        ]
    );
    assert_eq!(
        first.writable(),
        [Segment {
            addr: Ipa(BUF + 0x200),
            len: 30
        }]
    );
    let second = q.pop(&mut mem).expect("valid").expect("a chain");
    assert_eq!(second.head(), b);
    assert_eq!((second.readable_len(), second.writable_len()), (5, 13));
    let third = q.pop(&mut mem).expect("valid").expect("a chain");
    assert_eq!((third.head(), third.readable().len()), (c, 0));
    assert_eq!(q.pop(&mut mem), Ok(None));

    // Returned out of order, as a device may.
    q.add_used(&mut mem, third.head(), 1).expect("ok");
    q.add_used(&mut mem, first.head(), 30).expect("ok");
    q.add_used(&mut mem, second.head(), 0).expect("ok");
    assert_eq!(
        dq.take_used(&mem),
        [(u32::from(c), 1), (u32::from(a), 30), (u32::from(b), 0)]
    );
}

#[test]
fn a_direct_chain_may_end_in_an_indirect_table() {
    let (mut dq, mut q) = queue(8, true, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    DriverQueue::write_desc(&mut mem, TABLE, 0, BUF + 0x100, 8, ring::DESC_F_WRITE, 0);
    DriverQueue::write_desc(&mut mem, dq.desc, 0, BUF, 4, ring::DESC_F_NEXT, 1);
    DriverQueue::write_desc(&mut mem, dq.desc, 1, TABLE, 16, ring::DESC_F_INDIRECT, 0);
    publish_raw(&mut dq, &mut mem, 0);
    let chain = q.pop(&mut mem).expect("valid").expect("a chain");
    assert_eq!((chain.readable_len(), chain.writable_len()), (4, 8));
}

#[test]
fn a_chain_that_loops_is_refused() {
    let (mut dq, mut q) = queue(8, false, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    DriverQueue::write_desc(&mut mem, dq.desc, 0, BUF, 4, ring::DESC_F_NEXT, 1);
    DriverQueue::write_desc(&mut mem, dq.desc, 1, BUF, 4, ring::DESC_F_NEXT, 0);
    publish_raw(&mut dq, &mut mem, 0);
    assert_eq!(refused(&mut q, &mut mem), QueueError::ChainLoop);
}

#[test]
fn a_chain_past_the_view_is_refused_before_the_loop_is_seen() {
    // A queue of twice the view whose chain loops: the view fills first.
    const SIZE: u16 = 2 * MAX_SEGMENTS as u16;
    let (mut dq, mut q) = queue(SIZE, false, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    for i in 0..SIZE {
        DriverQueue::write_desc(
            &mut mem,
            dq.desc,
            i,
            BUF,
            1,
            ring::DESC_F_NEXT,
            (i + 1) % SIZE,
        );
    }
    publish_raw(&mut dq, &mut mem, 0);
    assert_eq!(refused(&mut q, &mut mem), QueueError::TooManySegments);
    // Exactly MAX_SEGMENTS buffers are fine.
    let (mut dq, mut q) = queue(SIZE, false, false);
    let bufs = vec![(BUF, 1, false); MAX_SEGMENTS];
    let head = dq.chain(&mut mem, &bufs);
    dq.publish(&mut mem, head);
    let chain = q.pop(&mut mem).expect("valid").expect("a chain");
    assert_eq!(chain.readable().len(), MAX_SEGMENTS);
}

#[test]
fn an_indirect_table_that_loops_is_refused() {
    let (mut dq, mut q) = queue(8, true, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    DriverQueue::write_desc(&mut mem, TABLE, 0, BUF, 4, ring::DESC_F_NEXT, 1);
    DriverQueue::write_desc(&mut mem, TABLE, 1, BUF, 4, ring::DESC_F_NEXT, 0);
    DriverQueue::write_desc(&mut mem, dq.desc, 0, TABLE, 32, ring::DESC_F_INDIRECT, 0);
    publish_raw(&mut dq, &mut mem, 0);
    assert_eq!(refused(&mut q, &mut mem), QueueError::ChainLoop);
}

#[test]
fn out_of_range_indexes_are_refused() {
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    // A head past the table.
    let (mut dq, mut q) = queue(8, true, false);
    publish_raw(&mut dq, &mut mem, 8);
    assert_eq!(
        refused(&mut q, &mut mem),
        QueueError::IndexOutOfRange { index: 8, size: 8 }
    );
    // A `next` past the table.
    let (mut dq, mut q) = queue(8, true, false);
    DriverQueue::write_desc(&mut mem, dq.desc, 0, BUF, 4, ring::DESC_F_NEXT, 0xffff);
    publish_raw(&mut dq, &mut mem, 0);
    assert_eq!(
        refused(&mut q, &mut mem),
        QueueError::IndexOutOfRange {
            index: 0xffff,
            size: 8
        }
    );
    // A `next` past an indirect table.
    let (mut dq, mut q) = queue(8, true, false);
    DriverQueue::write_desc(&mut mem, TABLE, 0, BUF, 4, ring::DESC_F_NEXT, 2);
    DriverQueue::write_desc(&mut mem, dq.desc, 0, TABLE, 32, ring::DESC_F_INDIRECT, 0);
    publish_raw(&mut dq, &mut mem, 0);
    assert_eq!(
        refused(&mut q, &mut mem),
        QueueError::IndexOutOfRange { index: 2, size: 2 }
    );
    // A used element for a head past the table (a device bug).
    assert_eq!(
        q.add_used(&mut mem, 8, 0),
        Err(QueueError::IndexOutOfRange { index: 8, size: 8 })
    );
}

#[test]
fn an_available_index_that_jumps_past_the_queue_size_is_refused() {
    let (dq, mut q) = queue(8, false, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    dq.set_avail_idx(&mut mem, 9);
    assert_eq!(
        refused(&mut q, &mut mem),
        QueueError::AvailIndexJump { next: 0, idx: 9 }
    );
    assert_eq!(
        q.has_available(&mem),
        Err(QueueError::AvailIndexJump { next: 0, idx: 9 })
    );
    // Backwards is a jump of almost 2^16.
    dq.set_avail_idx(&mut mem, 0xffff);
    assert_eq!(
        refused(&mut q, &mut mem),
        QueueError::AvailIndexJump {
            next: 0,
            idx: 0xffff
        }
    );
}

#[test]
fn buffers_outside_ram_are_refused() {
    let end = RAM_BASE + RAM_SIZE as u64;
    for (name, addr, len) in [
        ("past the end", end, 1),
        ("straddling the end", end - 4, 8),
        ("below RAM (another VM's)", RAM_BASE - 0x1000, 16),
        ("an end that overflows", u64::MAX - 2, 8),
        ("a huge length", BUF, u32::MAX),
    ] {
        let (mut dq, mut q) = queue(8, false, false);
        let mut ram = ram();
        let mut mem = memory(&mut ram);
        let head = dq.chain(&mut mem, &[(BUF, 4, false), (addr, len, true)]);
        dq.publish(&mut mem, head);
        assert_eq!(
            refused(&mut q, &mut mem),
            QueueError::OutsideRam {
                addr: Ipa(addr),
                len: u64::from(len)
            },
            "{name}"
        );
    }
}

#[test]
fn zero_length_buffers_are_refused() {
    let (mut dq, mut q) = queue(8, true, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let head = dq.chain(&mut mem, &[(BUF, 4, false), (BUF, 0, true)]);
    dq.publish(&mut mem, head);
    assert_eq!(refused(&mut q, &mut mem), QueueError::ZeroLength);
}

#[test]
fn rings_outside_ram_are_refused() {
    // The available ring's index, the head slot, and the used ring.
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let dq = DriverQueue::at(RAM_BASE + RAM_SIZE as u64 + 0x1000, 8);
    let mut q = dq.device_queue(false, false);
    assert!(matches!(
        q.pop(&mut mem),
        Err(QueueError::OutsideRam { .. })
    ));
    assert!(matches!(
        q.check_areas(&mem),
        Err(QueueError::OutsideRam { .. })
    ));
    assert!(matches!(
        q.add_used(&mut mem, 0, 0),
        Err(QueueError::OutsideRam { .. })
    ));
    // A descriptor table that starts in RAM and runs off its end.
    let mut dq = DriverQueue::at(RAM_BASE + 0x100, 8);
    dq.desc = RAM_BASE + RAM_SIZE as u64 - 0x40;
    let mut q = dq.device_queue(false, false);
    publish_raw(&mut dq, &mut mem, 7);
    assert_eq!(
        refused(&mut q, &mut mem),
        QueueError::OutsideRam {
            addr: Ipa(dq.desc + 7 * 16),
            len: 16
        }
    );
}

#[test]
fn nested_indirect_tables_are_refused() {
    let (mut dq, mut q) = queue(8, true, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    DriverQueue::write_desc(
        &mut mem,
        TABLE,
        0,
        TABLE + 0x100,
        16,
        ring::DESC_F_INDIRECT,
        0,
    );
    DriverQueue::write_desc(&mut mem, dq.desc, 0, TABLE, 16, ring::DESC_F_INDIRECT, 0);
    publish_raw(&mut dq, &mut mem, 0);
    assert_eq!(refused(&mut q, &mut mem), QueueError::NestedIndirect);
}

#[test]
fn indirect_descriptors_follow_the_rules() {
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    // Not negotiated.
    let (mut dq, mut q) = queue(8, false, false);
    let head = dq.indirect(&mut mem, TABLE, &[(BUF, 4, false)]);
    dq.publish(&mut mem, head);
    assert_eq!(refused(&mut q, &mut mem), QueueError::IndirectNotNegotiated);
    // With NEXT.
    let (mut dq, mut q) = queue(8, true, false);
    DriverQueue::write_desc(
        &mut mem,
        dq.desc,
        0,
        TABLE,
        16,
        ring::DESC_F_INDIRECT | ring::DESC_F_NEXT,
        1,
    );
    publish_raw(&mut dq, &mut mem, 0);
    assert_eq!(refused(&mut q, &mut mem), QueueError::IndirectWithNext);
    // Bad table lengths.
    for len in [0, 8, 17, (MAX_INDIRECT + 1) * 16] {
        let (mut dq, mut q) = queue(8, true, false);
        DriverQueue::write_desc(&mut mem, dq.desc, 0, TABLE, len, ring::DESC_F_INDIRECT, 0);
        publish_raw(&mut dq, &mut mem, 0);
        assert_eq!(
            refused(&mut q, &mut mem),
            QueueError::BadIndirectLength(len),
            "{len}"
        );
    }
    // A table outside RAM.
    let (mut dq, mut q) = queue(8, true, false);
    let table = RAM_BASE + RAM_SIZE as u64 - 16;
    DriverQueue::write_desc(&mut mem, dq.desc, 0, table, 32, ring::DESC_F_INDIRECT, 0);
    publish_raw(&mut dq, &mut mem, 0);
    assert_eq!(
        refused(&mut q, &mut mem),
        QueueError::OutsideRam {
            addr: Ipa(table),
            len: 32
        }
    );
}

#[test]
fn a_readable_buffer_after_a_writable_one_is_refused() {
    let (mut dq, mut q) = queue(8, true, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let head = dq.chain(&mut mem, &[(BUF, 4, true), (BUF, 4, false)]);
    dq.publish(&mut mem, head);
    assert_eq!(refused(&mut q, &mut mem), QueueError::ReadableAfterWritable);
    // The same inside an indirect table.
    let (mut dq, mut q) = queue(8, true, false);
    let head = dq.indirect(&mut mem, TABLE, &[(BUF, 4, true), (BUF, 4, false)]);
    dq.publish(&mut mem, head);
    assert_eq!(refused(&mut q, &mut mem), QueueError::ReadableAfterWritable);
}

#[test]
fn a_writable_buffer_where_a_readable_one_is_required_and_vice_versa() {
    let (mut dq, mut q) = queue(8, true, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let only_writable = dq.chain(&mut mem, &[(BUF, 16, true)]);
    dq.publish(&mut mem, only_writable);
    let only_readable = dq.chain(&mut mem, &[(BUF, 16, false)]);
    dq.publish(&mut mem, only_readable);
    // A device that needs a 12-byte request and a 1-byte status.
    let w = q.pop(&mut mem).expect("valid").expect("a chain");
    assert_eq!(
        w.require(12, 1),
        Err(QueueError::NeedReadable {
            wanted: 12,
            have: 0
        })
    );
    let mut header = [0u8; 12];
    assert_eq!(
        w.read(&mem, 0, &mut header),
        Err(QueueError::NeedReadable {
            wanted: 12,
            have: 0
        })
    );
    let r = q.pop(&mut mem).expect("valid").expect("a chain");
    assert_eq!(
        r.require(12, 1),
        Err(QueueError::NeedWritable { wanted: 1, have: 0 })
    );
    assert_eq!(
        r.write(&mut mem, 0, &[0]),
        Err(QueueError::NeedWritable { wanted: 1, have: 0 })
    );
}

#[test]
fn a_queue_not_ready_is_not_used() {
    let mut q = SplitQueue::new(8);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    assert_eq!(q.pop(&mut mem), Err(QueueError::NotReady));
    assert_eq!(q.has_available(&mem), Err(QueueError::NotReady));
    assert_eq!(q.add_used(&mut mem, 0, 0), Err(QueueError::NotReady));
    assert_eq!(q.needs_interrupt(&mem), Err(QueueError::NotReady));
    assert_eq!(mem.accesses(), 0);
    let (_, mut q) = queue(8, false, false);
    q.stop();
    assert_eq!(q.pop(&mut mem), Err(QueueError::NotReady));
}

#[test]
fn without_event_idx_no_interrupt_suppresses_used_notifications() {
    let (mut dq, mut q) = queue(8, false, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    assert_eq!(q.needs_interrupt(&mem), Ok(false), "nothing used yet");
    for _ in 0..2 {
        let h = dq.chain(&mut mem, &[(BUF, 4, true)]);
        dq.publish(&mut mem, h);
    }
    let c = q.pop(&mut mem).expect("ok").expect("chain");
    q.add_used(&mut mem, c.head(), 0).expect("ok");
    assert_eq!(q.needs_interrupt(&mem), Ok(true));
    assert_eq!(q.needs_interrupt(&mem), Ok(false), "already signalled");
    dq.set_avail_flags(&mut mem, ring::AVAIL_F_NO_INTERRUPT);
    let c = q.pop(&mut mem).expect("ok").expect("chain");
    q.add_used(&mut mem, c.head(), 0).expect("ok");
    assert_eq!(q.needs_interrupt(&mem), Ok(false));
    // The device never asks the driver not to notify.
    assert_eq!(mem.read_u16(Ipa(dq.used)), Ok(0));
}

#[test]
fn with_event_idx_used_event_decides_the_interrupt() {
    let (mut dq, mut q) = queue(8, false, true);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    // The driver wants to hear when entry 2 (the third) is used.
    dq.set_used_event(&mut mem, 2);
    let mut wanted = Vec::new();
    for _ in 0..5 {
        let h = dq.chain(&mut mem, &[(BUF, 4, true)]);
        dq.publish(&mut mem, h);
        let c = q.pop(&mut mem).expect("ok").expect("chain");
        q.add_used(&mut mem, c.head(), 0).expect("ok");
        wanted.push(q.needs_interrupt(&mem).expect("ok"));
    }
    assert_eq!(wanted, [false, false, true, false, false]);
    // Several used at once, stepping over the event: one interrupt.
    dq.set_used_event(&mut mem, 6);
    for _ in 0..3 {
        let h = dq.chain(&mut mem, &[(BUF, 4, true)]);
        dq.publish(&mut mem, h);
        let c = q.pop(&mut mem).expect("ok").expect("chain");
        q.add_used(&mut mem, c.head(), 0).expect("ok");
    }
    assert_eq!(q.needs_interrupt(&mem), Ok(true));
    // NO_INTERRUPT means nothing with EVENT_IDX.
    dq.set_avail_flags(&mut mem, ring::AVAIL_F_NO_INTERRUPT);
    dq.set_used_event(&mut mem, 8);
    let h = dq.chain(&mut mem, &[(BUF, 4, true)]);
    dq.publish(&mut mem, h);
    let c = q.pop(&mut mem).expect("ok").expect("chain");
    q.add_used(&mut mem, c.head(), 0).expect("ok");
    assert_eq!(q.needs_interrupt(&mem), Ok(true));
}

#[test]
fn with_event_idx_an_empty_ring_publishes_avail_event_and_looks_again() {
    let (mut dq, mut q) = queue(8, false, true);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    for _ in 0..3 {
        let h = dq.chain(&mut mem, &[(BUF, 4, true)]);
        dq.publish(&mut mem, h);
    }
    while q.pop(&mut mem).expect("ok").is_some() {}
    assert_eq!(dq.avail_event(&mem), 3, "notify me at the next buffer");
    let fences = mem.fences();
    assert_eq!(q.pop(&mut mem), Ok(None));
    assert!(
        mem.fences() > fences,
        "the second look is ordered after the store"
    );
}

#[test]
fn indexes_wrap_at_2_to_the_16() {
    let (mut dq, mut q) = queue(4, false, true);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    for i in 0..70_000u32 {
        let h = dq.chain(&mut mem, &[(BUF, 4, i % 2 == 0)]);
        dq.publish(&mut mem, h);
        let c = q.pop(&mut mem).expect("ok").expect("chain");
        assert_eq!(c.head(), h);
        q.add_used(&mut mem, c.head(), i).expect("ok");
        assert_eq!(dq.take_used(&mem), [(u32::from(h), i)]);
    }
    assert_eq!(q.next_avail(), (70_000u32 % 65_536) as u16);
}

#[test]
fn deferred_used_buffers_appear_only_once_flushed_and_in_order() {
    let (mut dq, mut q) = queue(8, false, true);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let heads: Vec<u16> = (0..3u64)
        .map(|i| {
            let h = dq.chain(&mut mem, &[(BUF + 0x100 * i, 64, true)]);
            dq.publish(&mut mem, h);
            h
        })
        .collect();
    for (i, &h) in heads.iter().enumerate() {
        let c = q.pop(&mut mem).expect("valid").expect("a chain");
        assert_eq!(c.head(), h);
        q.add_used_deferred(&mut mem, h, 10 + i as u32)
            .expect("in range");
    }
    assert!(dq.take_used(&mem).is_empty(), "nothing published yet");
    q.flush_used(&mut mem).expect("live");
    let want: Vec<(u32, u32)> = heads
        .iter()
        .enumerate()
        .map(|(i, &h)| (u32::from(h), 10 + i as u32))
        .collect();
    assert_eq!(dq.take_used(&mem), want);
    // A second flush with nothing new writes nothing (and is not an error
    // even on a stopped queue).
    let before = mem.accesses();
    q.flush_used(&mut mem).expect("nothing to do");
    assert_eq!(mem.accesses(), before);
    assert_eq!(
        q.add_used_deferred(&mut mem, 8, 0),
        Err(QueueError::IndexOutOfRange { index: 8, size: 8 })
    );
}

#[test]
fn chains_published_together_are_taken_with_one_index_read() {
    let (mut dq, mut q) = queue(8, false, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    for i in 0..4u64 {
        let h = dq.chain(&mut mem, &[(BUF + 0x100 * i, 16, false)]);
        dq.publish(&mut mem, h);
    }
    let start = mem.accesses();
    q.pop(&mut mem).expect("valid").expect("first");
    let first = mem.accesses() - start;
    let start = mem.accesses();
    q.pop(&mut mem).expect("valid").expect("second");
    // The second pop knows the index already: one access fewer.
    assert_eq!(mem.accesses() - start, first - 1);
    q.pop(&mut mem).expect("valid").expect("third");
    q.pop(&mut mem).expect("valid").expect("fourth");
    assert_eq!(
        q.pop(&mut mem),
        Ok(None),
        "the index is read again at the end"
    );
    // A chain published after the cached index is seen.
    let h = dq.chain(&mut mem, &[(BUF, 16, false)]);
    dq.publish(&mut mem, h);
    assert_eq!(q.pop(&mut mem).expect("valid").map(|c| c.head()), Some(h));
}

#[test]
fn an_unnotified_queue_silences_its_driver_instead_of_arming() {
    // With EVENT_IDX: `avail_event` goes half the index space ahead.
    let (mut dq, mut q) = queue(8, false, true);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let mut chain = crate::chain::Chain::EMPTY;
    assert_eq!(q.pop_into_unnotified(&mut mem, &mut chain), Ok(false));
    assert_eq!(dq.avail_event(&mem), 0x8000);
    let h = dq.chain(&mut mem, &[(BUF, 64, true)]);
    dq.publish(&mut mem, h);
    assert_eq!(q.pop_into_unnotified(&mut mem, &mut chain), Ok(true));
    assert_eq!(chain.head(), h);
    assert_eq!(q.pop_into_unnotified(&mut mem, &mut chain), Ok(false));
    assert_eq!(dq.avail_event(&mem), 0x8001, "moved on with the ring");
    // A pop that arms asks for the very next chain instead.
    assert_eq!(q.pop_into(&mut mem, &mut chain), Ok(false));
    assert_eq!(dq.avail_event(&mem), 1);

    // Without EVENT_IDX: the used ring's NO_NOTIFY flag.
    let (dq, mut q) = queue(8, false, false);
    let mut ram2 = super::driver::ram();
    let mut mem = memory(&mut ram2);
    assert_eq!(q.pop_into_unnotified(&mut mem, &mut chain), Ok(false));
    assert_eq!(mem.read_u16(Ipa(dq.used)), Ok(ring::USED_F_NO_NOTIFY));
}

#[test]
fn rewinding_gives_back_unpublished_chains_and_nothing_published() {
    let (mut dq, mut q) = queue(8, false, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let heads: Vec<u16> = (0..3)
        .map(|k| {
            let h = dq.chain(&mut mem, &[(BUF + 0x100 * k, 64, true)]);
            dq.publish(&mut mem, h);
            h
        })
        .collect();
    let (avail, used) = (q.next_avail(), q.next_used());
    for &h in &heads[..2] {
        let c = q.pop(&mut mem).unwrap().expect("a chain");
        q.add_used_deferred(&mut mem, c.head(), 64).unwrap();
        assert_eq!(c.head(), h);
    }
    // Forward, or past what was taken: refused.
    assert!(!q.rewind(avail.wrapping_add(3), used));
    assert!(!q.rewind(avail, used.wrapping_sub(1)));
    assert!(q.rewind(avail, used));
    assert_eq!((q.next_avail(), q.next_used()), (avail, used));
    // The same chains come again; once the index is published, no rewind.
    let c = q.pop(&mut mem).unwrap().expect("a chain");
    assert_eq!(c.head(), heads[0]);
    q.add_used(&mut mem, c.head(), 64).unwrap();
    assert!(!q.rewind(avail, used), "the driver has seen it");
    assert_eq!(dq.take_used(&mem), vec![(u32::from(heads[0]), 64)]);
}

#[test]
fn an_indirect_table_past_one_window_is_followed_in_the_drivers_order() {
    // 70 descriptors (three windows of the walk's reads); the chain jumps
    // between them, back and forth: 0, 40, 5, 69, 33, 34.
    let order: [u16; 6] = [0, 40, 5, 69, 33, 34];
    let (segments, accesses) = pop_indirect_in_order(70, &order);
    assert_eq!(segments, linked(&order));
    // The ring's index and slot, the table's descriptor (two words), and
    // one read per window entered: 0-31, 32-63, 0-31, 64-69, 32-63.
    assert_eq!(accesses, 2 + 2 + 5);
}

/// The chain of an indirect table of `n` descriptors at `TABLE` that the
/// driver links in `order` (from descriptor 0), each descriptor `i` a readable
/// buffer of `i + 1` bytes at `BUF + 0x10·i`: the chain popped and the
/// guest-memory accesses the pop took.
fn pop_indirect_in_order(n: u16, order: &[u16]) -> (Vec<Segment>, u64) {
    let (mut dq, mut q) = queue(8, true, false);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    for i in 0..n {
        let at = order.iter().position(|&o| o == i);
        let (flags, next) = match at {
            Some(k) if k + 1 < order.len() => (ring::DESC_F_NEXT, order[k + 1]),
            _ => (0, 0),
        };
        let addr = BUF + 0x10 * u64::from(i);
        DriverQueue::write_desc(&mut mem, TABLE, i, addr, u32::from(i) + 1, flags, next);
    }
    DriverQueue::write_desc(
        &mut mem,
        dq.desc,
        0,
        TABLE,
        u32::from(n) * 16,
        ring::DESC_F_INDIRECT,
        0,
    );
    publish_raw(&mut dq, &mut mem, 0);
    let before = mem.accesses();
    let chain = q.pop(&mut mem).expect("valid").expect("a chain");
    (chain.readable().to_vec(), mem.accesses() - before)
}

/// The buffers [`pop_indirect_in_order`] links, in `order`.
fn linked(order: &[u16]) -> Vec<Segment> {
    order
        .iter()
        .map(|&i| Segment {
            addr: Ipa(BUF + 0x10 * u64::from(i)),
            len: u32::from(i) + 1,
        })
        .collect()
}

#[test]
fn small_and_just_larger_indirect_tables_are_read_in_one_access() {
    for (n, order) in [
        // A table's walk starts at its descriptor 0.
        (1u16, &[0u16][..]),
        (3, &[0, 2, 1][..]),
        (4, &[0, 3, 1, 2][..]),
        (5, &[0, 4, 3, 1, 2][..]),
        (32, &[0, 31, 16][..]),
    ] {
        let (segments, accesses) = pop_indirect_in_order(n, order);
        assert_eq!(segments, linked(order), "{n} descriptors");
        // The ring's index and slot, the table's descriptor (two words),
        // and the whole table in one read.
        assert_eq!(accesses, 2 + 2 + 1, "{n} descriptors");
    }
}
