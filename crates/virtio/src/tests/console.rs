//! virtio-console driven by a model driver: output handed out byte for
//! byte (a chain bigger than the output buffer included, without loss),
//! input pushed into receive buffers as they are posted, the input
//! buffer's bound, and hostile rings.

use proptest::prelude::*;
use stratum_core::addr::Ipa;

use super::driver::*;
use crate::console::{self, ConsoleDevice, INPUT_CAP, OUTPUT_CAP};
use crate::mem::{GuestMemory, SliceMemory};
use crate::spec::{feature, mmio, status};
use crate::transport::Transport;

const BUFS: u64 = RAM_BASE + 0x1000;

struct Guest {
    t: Transport<ConsoleDevice>,
    ram: Vec<u8>,
    rx: DriverQueue,
    tx: DriverQueue,
}

impl Guest {
    fn new() -> Self {
        let rx = DriverQueue::at(RAM_BASE, 16);
        let tx = DriverQueue::at(rx.end().next_multiple_of(16), 16);
        let mut g = Self {
            t: Transport::new(ConsoleDevice::new()),
            ram: ram(),
            rx,
            tx,
        };
        assert_eq!(rd(&mut g.t, mmio::DEVICE_ID), 3);
        assert!(negotiate(
            &mut g.t,
            feature::VERSION_1 | feature::RING_EVENT_IDX
        ));
        rx.setup(&mut g.t, 0);
        tx.setup(&mut g.t, 1);
        driver_ok(&mut g.t);
        g
    }

    /// Transmit chains returned since the last call.
    fn tx_done(&mut self) -> usize {
        let mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        self.tx.take_used(&mem).len()
    }

    /// Writes `text` as one chain of up to three buffers and notifies.
    fn write(&mut self, text: &[u8]) {
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        let at = BUFS + 0x4000;
        mem.write(Ipa(at), text).expect("in RAM");
        let cut = [text.len() / 3, 2 * text.len() / 3, text.len()];
        let mut bufs = Vec::new();
        let mut from = 0;
        for to in cut {
            if to > from {
                bufs.push((at + from as u64, (to - from) as u32, false));
            }
            from = to;
        }
        let head = self.tx.chain(&mut mem, &bufs);
        self.tx.publish(&mut mem, head);
        wr(&mut self.t, mmio::QUEUE_NOTIFY, u32::from(console::TX));
        self.t.process(&mut mem);
    }

    /// Posts `n` receive buffers of `len` bytes and notifies.
    fn post_rx(&mut self, n: u64, len: u32) {
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        for _ in 0..n {
            let at = BUFS + 0x100 * u64::from(self.rx.next_desc);
            let head = self.rx.chain(&mut mem, &[(at, len, true)]);
            self.rx.publish(&mut mem, head);
        }
        wr(&mut self.t, mmio::QUEUE_NOTIFY, u32::from(console::RX));
        self.t.process(&mut mem);
    }

    /// The bytes the guest received since the last call.
    fn read(&mut self) -> Vec<u8> {
        let mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        let mut out = Vec::new();
        for (id, len) in self.rx.take_used(&mem) {
            // Buffer k sits at slot k (the model uses descriptors in order).
            let mut b = vec![0u8; len as usize];
            mem.read(Ipa(BUFS + 0x100 * (u64::from(id) % 16)), &mut b)
                .expect("in RAM");
            out.extend(b);
        }
        out
    }

    /// What the glue does after draining: runs the device again.
    fn pump(&mut self) {
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        self.t.with_device(&mut mem, |d, q, m| d.pump(q, m));
    }

    fn output(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 2 * OUTPUT_CAP];
        let n = self.t.device_mut().take_output(&mut buf);
        buf.truncate(n);
        buf
    }
}

#[test]
fn output_is_handed_out_byte_for_byte() {
    let mut g = Guest::new();
    g.write(b"hello from hvc0\n");
    assert!(g.t.device().has_output());
    assert_eq!(g.output(), b"hello from hvc0\n");
    assert_eq!(g.tx_done(), 1);
}

#[test]
fn a_chain_bigger_than_the_buffer_waits_and_loses_nothing() {
    let mut g = Guest::new();
    let text: Vec<u8> = (0..10_000u32).map(|k| b'a' + (k % 26) as u8).collect();
    g.write(&text);
    let mut got = g.output();
    assert_eq!(got.len(), OUTPUT_CAP);
    assert_eq!(g.tx_done(), 0, "not returned yet");
    while got.len() < text.len() {
        g.pump();
        let more = g.output();
        assert!(!more.is_empty());
        got.extend(more);
    }
    assert_eq!(got, text);
    assert_eq!(g.tx_done(), 1);
}

#[test]
fn input_goes_into_buffers_as_they_are_posted() {
    let mut g = Guest::new();
    // Typed before the driver posted anything: it waits.
    assert_eq!(g.t.device_mut().push_input(b"ls -l\n"), 6);
    g.pump();
    assert!(g.read().is_empty());
    g.post_rx(2, 4);
    // Four bytes fit the first buffer, the rest the second.
    assert_eq!(g.read(), b"ls -l\n");
    g.t.device_mut().push_input(b"x");
    g.pump();
    assert!(g.read().is_empty(), "no buffer left");
    g.post_rx(1, 64);
    assert_eq!(g.read(), b"x");
    // The input buffer is bounded; the rest is dropped and counted.
    let flood = vec![b'y'; INPUT_CAP + 100];
    assert_eq!(g.t.device_mut().push_input(&flood), INPUT_CAP);
    assert_eq!(g.t.device().input_dropped(), 100);
    assert_eq!(g.t.counters().device_errors, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Garbage rings: notifies and pumps never panic, and an access
    /// outside RAM always stops the device.
    #[test]
    fn hostile_rings_never_panic_or_escape_ram(
        seed in any::<u64>(),
        areas in proptest::collection::vec(0u64..0x200, 6),
        avail in any::<[u16; 2]>(),
        input in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut ram = ram();
        let mut x = seed | 1;
        for chunk in ram.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let w = if v & 1 == 0 { RAM_BASE + (v >> 49) } else { v };
            chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
        }
        let mut t = Transport::new(ConsoleDevice::new());
        prop_assert!(negotiate(&mut t, feature::VERSION_1 | feature::RING_INDIRECT_DESC));
        for q in 0..2usize {
            let mut dq = DriverQueue::at(RAM_BASE + 16 * areas[3 * q], 8);
            dq.avail = RAM_BASE + 2 * areas[3 * q + 1];
            dq.used = RAM_BASE + 4 * (areas[3 * q + 2] * 37 % 0x3ff0);
            dq.setup(&mut t, q as u32);
            let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut ram);
            let _ = mem.write(Ipa(dq.avail + 2), &avail[q].to_le_bytes());
        }
        driver_ok(&mut t);
        t.device_mut().push_input(&input);
        for q in [1u32, 0, 1] {
            let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut ram);
            wr(&mut t, mmio::QUEUE_NOTIFY, q);
            t.process(&mut mem);
            t.with_device(&mut mem, |d, qs, m| d.pump(qs, m));
            let mut out = vec![0u8; OUTPUT_CAP];
            t.device_mut().take_output(&mut out);
            if mem.refused() > 0 {
                prop_assert!(t.status() & status::DEVICE_NEEDS_RESET != 0);
            }
        }
    }
}
