//! A loopback device driven end to end by the model driver through the
//! transport's registers: every message the driver sends on the transmit
//! queue comes back, byte for byte, in the next buffer of the receive
//! queue, with and without indirect descriptors and `EVENT_IDX`.

use stratum_core::addr::Ipa;

use super::driver::*;
use crate::device::{Queues, VirtioDevice};
use crate::mem::{GuestMemory, SliceMemory};
use crate::queue::QueueError;
use crate::spec::{feature, mmio, ring};
use crate::transport::Transport;

/// The receive queue: the driver posts writable buffers.
const RX: u16 = 0;
/// The transmit queue: the driver posts readable buffers.
const TX: u16 = 1;

/// Copies each transmitted chain's readable bytes into the next receive
/// chain's writable ones.
#[derive(Debug, Default)]
struct Loopback {
    copied: u64,
}

impl VirtioDevice for Loopback {
    fn device_id(&self) -> u32 {
        99
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_count(&self) -> u16 {
        2
    }

    fn queue_max_size(&self, _queue: u16) -> u16 {
        16
    }

    fn notify(
        &mut self,
        _queue: u16,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        let (rx, tx) = queues.pair(RX, TX)?;
        // Move as many messages as there are buffers for. A queue that
        // runs dry is armed, so the driver's next buffer there notifies.
        loop {
            if !tx.has_available(mem)? && !tx.arm(mem)? {
                break;
            }
            if !rx.has_available(mem)? && !rx.arm(mem)? {
                break;
            }
            let (Some(out), Some(into)) = (tx.pop(mem)?, rx.pop(mem)?) else {
                unreachable!("both queues have a chain available");
            };
            out.require(1, 0)?;
            into.require(0, 1)?;
            let n = out.readable_len().min(into.writable_len());
            let mut buf = [0u8; 64];
            let mut at = 0;
            while at < n {
                let k = (n - at).min(64);
                out.read(mem, at, &mut buf[..k as usize])?;
                into.write(mem, at, &buf[..k as usize])?;
                at += k;
            }
            tx.add_used(mem, out.head(), 0)?;
            rx.add_used(mem, into.head(), n)?;
            self.copied += u64::from(n);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.copied = 0;
    }
}

/// Where the driver keeps its buffers: receive buffers, transmit buffers,
/// indirect tables, by slot.
const RX_BUFS: u64 = RAM_BASE + 0x2000;
const TX_BUFS: u64 = RAM_BASE + 0x6000;
const TABLES: u64 = RAM_BASE + 0xa000;
/// Bytes per buffer slot.
const SLOT: u64 = 0x400;

/// The model driver's side of the loopback.
struct Driver {
    rx: DriverQueue,
    tx: DriverQueue,
    indirect: bool,
    event_idx: bool,
    /// Receive heads posted, in order, and their buffers' capacity.
    rx_posted: Vec<(u16, Vec<(u64, u32)>)>,
    notifies: u32,
    interrupts: u32,
}

impl Driver {
    /// Probes the transport and brings it to `DRIVER_OK` as Linux does.
    fn probe(
        t: &mut Transport<Loopback>,
        mem: &mut SliceMemory<'_>,
        indirect: bool,
        event_idx: bool,
    ) -> Self {
        assert_eq!(rd(t, mmio::MAGIC_VALUE), mmio::MAGIC);
        assert_eq!(rd(t, mmio::VERSION_REG), 2);
        assert_eq!(rd(t, mmio::DEVICE_ID), 99);
        let offered = device_features(t);
        let mut want = feature::VERSION_1;
        if indirect {
            want |= feature::RING_INDIRECT_DESC;
        }
        if event_idx {
            want |= feature::RING_EVENT_IDX;
        }
        assert_eq!(offered & want, want);
        assert!(negotiate(t, want));
        let rx = DriverQueue::at(RAM_BASE, 16);
        let tx = DriverQueue::at(rx.end().next_multiple_of(16), 16);
        rx.clear(mem);
        tx.clear(mem);
        rx.setup(t, u32::from(RX));
        tx.setup(t, u32::from(TX));
        driver_ok(t);
        Self {
            rx,
            tx,
            indirect,
            event_idx,
            rx_posted: Vec::new(),
            notifies: 0,
            interrupts: 0,
        }
    }

    /// Writes `bufs` as one chain of `q`, indirect if the driver uses
    /// indirect descriptors and `slot` is odd.
    fn post(
        q: &mut DriverQueue,
        mem: &mut SliceMemory<'_>,
        bufs: &[(u64, u32, bool)],
        indirect: bool,
        table: u64,
    ) -> u16 {
        if indirect {
            q.indirect(mem, table, bufs)
        } else {
            q.chain(mem, bufs)
        }
    }

    /// Publishes `head` on queue `which` and notifies if the device asked
    /// for it (`avail_event`, or `VRING_USED_F_NO_NOTIFY`).
    fn kick(
        &mut self,
        t: &mut Transport<Loopback>,
        mem: &mut SliceMemory<'_>,
        which: u16,
        heads: &[u16],
    ) {
        let q = if which == RX {
            &mut self.rx
        } else {
            &mut self.tx
        };
        let old = q.avail_idx;
        for &h in heads {
            q.publish(mem, h);
        }
        let new = q.avail_idx;
        let notify = if self.event_idx {
            let event = q.avail_event(mem);
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            mem.read_u16(Ipa(q.used)).expect("in RAM") & ring::USED_F_NO_NOTIFY == 0
        };
        if notify {
            self.notifies += 1;
            let fx = wr(t, mmio::QUEUE_NOTIFY, u32::from(which));
            assert!(fx.notify());
            if t.process(mem) {
                self.interrupt(t);
            }
        }
    }

    /// The interrupt handler: reads and acknowledges the status.
    fn interrupt(&mut self, t: &mut Transport<Loopback>) {
        let status = rd(t, mmio::INTERRUPT_STATUS);
        assert_eq!(
            status,
            mmio::INT_USED_BUFFER,
            "no config change, no error: {:?}",
            t.take_error()
        );
        self.interrupts += 1;
        assert!(wr(t, mmio::INTERRUPT_ACK, status).lines());
        assert!(!t.line());
    }

    /// One round: `messages` go out, each into a receive buffer posted for
    /// it; checks every byte that came back.
    fn round(
        &mut self,
        t: &mut Transport<Loopback>,
        mem: &mut SliceMemory<'_>,
        messages: &[Vec<u8>],
    ) {
        // Receive buffers: two writable pieces each, 300 bytes in all.
        let mut heads = Vec::new();
        for (i, _) in messages.iter().enumerate() {
            let base = RX_BUFS + SLOT * i as u64;
            let bufs = [(base, 100, true), (base + 0x200, 200, true)];
            let ind = self.indirect && i % 2 == 1;
            let head = Self::post(&mut self.rx, mem, &bufs, ind, TABLES + SLOT * i as u64);
            heads.push(head);
            self.rx_posted
                .push((head, bufs.iter().map(|&(a, l, _)| (a, l)).collect()));
        }
        self.kick(t, mem, RX, &heads);
        // The messages: split in up to three readable pieces.
        let mut heads = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let base = TX_BUFS + SLOT * i as u64;
            let cut = [m.len() / 3, 2 * m.len() / 3];
            let mut bufs = Vec::new();
            let mut from = 0;
            for (k, to) in cut.into_iter().chain([m.len()]).enumerate() {
                if to > from {
                    let at = base + 0x100 * k as u64;
                    mem.write(Ipa(at), &m[from..to]).expect("in RAM");
                    bufs.push((at, (to - from) as u32, false));
                }
                from = to;
            }
            let ind = self.indirect && i % 3 == 0;
            let table = TABLES + 0x2000 + SLOT * i as u64;
            heads.push(Self::post(&mut self.tx, mem, &bufs, ind, table));
        }
        if self.event_idx {
            // Interrupt me at the next used buffer of either queue.
            self.rx.set_used_event(mem, self.rx.last_used);
            self.tx.set_used_event(mem, self.tx.last_used);
        }
        self.kick(t, mem, TX, &heads);
        // Everything came back, in order.
        let tx_used = self.tx.take_used(mem);
        assert_eq!(tx_used.len(), messages.len());
        assert!(
            tx_used
                .iter()
                .zip(&heads)
                .all(|(&(id, len), &h)| id == u32::from(h) && len == 0)
        );
        let rx_used = self.rx.take_used(mem);
        assert_eq!(rx_used.len(), messages.len());
        for ((id, len), m) in rx_used.into_iter().zip(messages) {
            let (head, bufs) = self.rx_posted.remove(0);
            assert_eq!(id, u32::from(head));
            assert_eq!(len as usize, m.len());
            let mut got = Vec::new();
            for (addr, cap) in bufs {
                let mut b = vec![0u8; cap as usize];
                mem.read(Ipa(addr), &mut b).expect("in RAM");
                got.extend(b);
            }
            assert_eq!(&got[..m.len()], &m[..]);
        }
    }
}

/// Messages of lengths 1 to 300, their bytes depending on `round`.
fn messages(round: usize, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let len = 1 + (round * 37 + i * 101) % 300;
            (0..len).map(|k| (round * 7 + i * 13 + k) as u8).collect()
        })
        .collect()
}

fn run(indirect: bool, event_idx: bool) -> (u32, u32, u64) {
    let mut t = Transport::new(Loopback::default());
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let mut d = Driver::probe(&mut t, &mut mem, indirect, event_idx);
    // Enough rounds for the 16-entry rings to wrap many times.
    for round in 0..100 {
        d.round(&mut t, &mut mem, &messages(round, 1 + round % 5));
    }
    assert_eq!(t.counters().device_errors, 0);
    assert_eq!(t.take_error(), None);
    (d.notifies, d.interrupts, t.device().copied)
}

#[test]
fn loopback_with_direct_descriptors() {
    let (notifies, interrupts, copied) = run(false, false);
    assert!(copied > 0);
    // Both queues notified every round; one interrupt per transmit notify.
    assert_eq!(notifies, 200);
    assert_eq!(interrupts, 100);
}

#[test]
fn loopback_with_indirect_descriptors() {
    let (_, interrupts, copied) = run(true, false);
    assert!(copied > 0);
    assert_eq!(interrupts, 100);
}

#[test]
fn loopback_with_event_idx_suppresses_notifies_the_device_does_not_need() {
    let (notifies, interrupts, _) = run(true, true);
    // The receive queue is never drained empty by the device, so after the
    // first buffers it never asks to be notified of more: only transmit
    // notifies remain.
    assert!(notifies < 200, "{notifies}");
    assert!(notifies >= 100, "{notifies}");
    assert_eq!(interrupts, 100);
}

#[test]
fn a_driver_reset_midway_starts_over_cleanly() {
    let mut t = Transport::new(Loopback::default());
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let mut d = Driver::probe(&mut t, &mut mem, true, true);
    d.round(&mut t, &mut mem, &messages(0, 3));
    let mut d = Driver::probe(&mut t, &mut mem, false, false);
    assert_eq!(t.device().copied, 0, "the device was reset");
    for round in 1..10 {
        d.round(&mut t, &mut mem, &messages(round, 4));
    }
    assert_eq!(t.take_error(), None);
}
