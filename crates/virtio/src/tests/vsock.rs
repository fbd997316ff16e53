//! virtio-vsock and the router, driven end to end: model drivers (one per
//! VM, each with its own RAM) post receive buffers as Linux does (a header
//! buffer and a 4 KiB payload buffer), send packets and notify; the router
//! moves them by CID. Connect, echo and shutdown with the credit fields
//! carried, deny by default, spoofing, splitting, backpressure, the
//! connection table's bound, resets, and hostile rings.

use std::collections::VecDeque;

use proptest::prelude::*;
use stratum_core::addr::Ipa;

use super::driver::*;
use crate::mem::{GuestMemory, SliceMemory};
use crate::router::{CONNECTIONS, Router, VsockPorts};
use crate::spec::{feature, mmio, status};
use crate::transport::Transport;
use crate::vsock::{self, HDR_LEN, Header, Op, TYPE_STREAM, VsockDevice};

/// Room past the rings and buffers for the disk link's registered
/// buffers ([`super::disklink`]).
const VM_RAM: usize = 0xC_0000;
const QSIZE: u16 = 32;
/// Receive buffers: a header slot and a payload slot each.
const RX_BUFS: u64 = RAM_BASE + 0x2000;
pub(super) const RX_PAYLOAD: u32 = 4096;
/// Transmit buffers.
const TX_BUFS: u64 = RAM_BASE + 0x2_8000;
const TX_SLOT: u64 = 0x800;

pub(super) struct Vm {
    pub(super) t: Transport<VsockDevice>,
    pub(super) ram: Vec<u8>,
    rx: DriverQueue,
    tx: DriverQueue,
    posted: VecDeque<(u16, u64)>,
    next_rx: u64,
    next_tx: u64,
}

impl Vm {
    pub(super) fn new(cid: u64) -> Self {
        let rx = DriverQueue::at(RAM_BASE, QSIZE);
        let tx = DriverQueue::at(rx.end().next_multiple_of(16), QSIZE);
        Self {
            t: Transport::new(VsockDevice::new(cid)),
            ram: vec![0; VM_RAM],
            rx,
            tx,
            posted: VecDeque::new(),
            next_rx: 0,
            next_tx: 0,
        }
    }

    pub(super) fn probe(&mut self) {
        let t = &mut self.t;
        assert_eq!(rd(t, mmio::DEVICE_ID), 19);
        let want = feature::VERSION_1 | feature::RING_EVENT_IDX | feature::RING_INDIRECT_DESC;
        assert!(negotiate(t, want));
        let cid = u64::from(rd(t, mmio::CONFIG)) | (u64::from(rd(t, mmio::CONFIG + 4)) << 32);
        assert_eq!(cid, t.device().cid());
        let (rx, tx) = (self.rx, self.tx);
        let ev = DriverQueue::at(tx.end().next_multiple_of(16), 4);
        rx.setup(&mut self.t, 0);
        tx.setup(&mut self.t, 1);
        ev.setup(&mut self.t, 2);
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        rx.clear(&mut mem);
        tx.clear(&mut mem);
        ev.clear(&mut mem);
        driver_ok(&mut self.t);
        assert!(self.t.is_live());
    }

    /// Posts `n` receive buffers (header, then `payload` bytes) and
    /// notifies; whether the device remembered the kick.
    pub(super) fn post_rx(&mut self, n: usize, payload: u32) -> bool {
        {
            let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
            for _ in 0..n {
                let at = RX_BUFS + 0x1100 * (self.next_rx % u64::from(QSIZE));
                self.next_rx += 1;
                let head = self.rx.chain(
                    &mut mem,
                    &[(at, HDR_LEN as u32, true), (at + 0x40, payload, true)],
                );
                self.rx.publish(&mut mem, head);
                self.posted.push_back((head, at));
            }
        }
        wr(&mut self.t, mmio::QUEUE_NOTIFY, u32::from(vsock::RX));
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        self.t.process(&mut mem);
        self.t.device_mut().take_kick()
    }

    /// Sends one packet (header and payload in two buffers) and notifies.
    pub(super) fn send(&mut self, h: &Header, payload: &[u8]) -> bool {
        {
            let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
            let at = TX_BUFS + TX_SLOT * (self.next_tx % 8);
            self.next_tx += 1;
            mem.write(Ipa(at), &h.encode()).expect("in RAM");
            let mut bufs = vec![(at, HDR_LEN as u32, false)];
            if !payload.is_empty() {
                let data = RAM_BASE + 0x3_0000 + 0x4000 * (self.next_tx % 2);
                mem.write(Ipa(data), payload).expect("in RAM");
                bufs.push((data, payload.len() as u32, false));
            }
            let head = self.tx.chain(&mut mem, &bufs);
            self.tx.publish(&mut mem, head);
        }
        wr(&mut self.t, mmio::QUEUE_NOTIFY, u32::from(vsock::TX));
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        self.t.process(&mut mem);
        self.t.device_mut().take_kick()
    }

    /// Receive buffers posted and not yet used.
    pub(super) fn outstanding(&self) -> usize {
        self.posted.len()
    }

    /// Transmit chains returned since the last call.
    pub(super) fn tx_done(&mut self) -> usize {
        let mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        self.tx.take_used(&mem).len()
    }

    /// Packets received since the last call.
    pub(super) fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        let mut out = Vec::new();
        for (id, len) in self.rx.take_used(&mem) {
            let (head, at) = self.posted.pop_front().expect("posted");
            assert_eq!(id, u32::from(head));
            assert!(len as usize >= HDR_LEN, "a header at least");
            let mut hb = [0u8; HDR_LEN];
            mem.read(Ipa(at), &mut hb).expect("in RAM");
            let h = Header::decode(&hb);
            assert_eq!(h.len as usize, len as usize - HDR_LEN);
            let mut payload = vec![0u8; h.len as usize];
            mem.read(Ipa(at + 0x40), &mut payload).expect("in RAM");
            out.push((h, payload));
        }
        out
    }
}

struct Machine {
    vms: Vec<Vm>,
    refused: u64,
}

impl VsockPorts for Machine {
    fn with_port(
        &mut self,
        port: usize,
        f: &mut dyn FnMut(&mut Transport<VsockDevice>, &mut dyn GuestMemory),
    ) -> bool {
        let Some(vm) = self.vms.get_mut(port) else {
            return false;
        };
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
        f(&mut vm.t, &mut mem);
        self.refused += mem.refused();
        true
    }
}

/// Three VMs (CIDs 3, 4, 5): 0 and 1 may talk, 2 may talk to nobody.
fn machine() -> (Router, Machine) {
    let mut vms: Vec<Vm> = (0..3).map(|i| Vm::new(3 + i)).collect();
    for vm in &mut vms {
        vm.probe();
        vm.post_rx(8, RX_PAYLOAD);
    }
    let mut r = Router::new();
    r.add_port(0, 3, 1 << 1);
    r.add_port(1, 4, 1 << 0);
    r.add_port(2, 5, 0);
    (r, Machine { vms, refused: 0 })
}

fn hdr(src: u64, dst: u64, sp: u32, dp: u32, op: Op) -> Header {
    Header {
        src_cid: src,
        dst_cid: dst,
        src_port: sp,
        dst_port: dp,
        len: 0,
        kind: TYPE_STREAM,
        op: op as u16,
        flags: 0,
        buf_alloc: 0x4_0000,
        fwd_cnt: 0,
    }
}

/// VM `vm` sends and the router serves the kick.
fn send(r: &mut Router, m: &mut Machine, vm: usize, h: Header, payload: &[u8]) {
    let h = Header {
        len: payload.len() as u32,
        ..h
    };
    assert!(m.vms[vm].send(&h, payload), "the kick is remembered");
    r.service(vm, m);
}

#[test]
fn connect_echo_and_shutdown_with_credit_carried() {
    let (mut r, mut m) = machine();
    send(&mut r, &mut m, 0, hdr(3, 4, 5000, 1234, Op::Request), &[]);
    let req = hdr(3, 4, 5000, 1234, Op::Request);
    assert_eq!(m.vms[1].received(), vec![(req, vec![])]);
    assert_eq!((r.connections(0), r.connections(1)), (1, 1));
    send(&mut r, &mut m, 1, hdr(4, 3, 1234, 5000, Op::Response), &[]);
    assert_eq!(m.vms[0].received().len(), 1);
    // Data both ways, the credit fields untouched.
    for round in 0..20u32 {
        let msg: Vec<u8> = (0..1 + round * 97).map(|k| (k * 7 + round) as u8).collect();
        let out = Header {
            fwd_cnt: round * 3,
            ..hdr(3, 4, 5000, 1234, Op::Rw)
        };
        send(&mut r, &mut m, 0, out, &msg);
        let got = m.vms[1].received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.fwd_cnt, round * 3);
        assert_eq!(got[0].0.buf_alloc, 0x4_0000);
        assert_eq!(got[0].1, msg);
        send(&mut r, &mut m, 1, hdr(4, 3, 1234, 5000, Op::Rw), &got[0].1);
        let back = m.vms[0].received();
        assert_eq!(back[0].1, msg, "round {round}: echoed byte for byte");
        m.vms[0].post_rx(1, RX_PAYLOAD);
        m.vms[1].post_rx(1, RX_PAYLOAD);
    }
    let credit = Header {
        fwd_cnt: 12345,
        ..hdr(4, 3, 1234, 5000, Op::CreditUpdate)
    };
    send(&mut r, &mut m, 1, credit, &[]);
    assert_eq!(m.vms[0].received()[0].0, credit);
    send(
        &mut r,
        &mut m,
        0,
        hdr(3, 4, 5000, 1234, Op::CreditRequest),
        &[],
    );
    assert_eq!(m.vms[1].received()[0].0.op, Op::CreditRequest as u16);
    let shut = Header {
        flags: vsock::SHUTDOWN_RCV | vsock::SHUTDOWN_SEND,
        ..hdr(3, 4, 5000, 1234, Op::Shutdown)
    };
    send(&mut r, &mut m, 0, shut, &[]);
    assert_eq!(m.vms[1].received()[0].0, shut);
    send(&mut r, &mut m, 1, hdr(4, 3, 1234, 5000, Op::Rst), &[]);
    assert_eq!(m.vms[0].received()[0].0.op, Op::Rst as u16);
    assert_eq!((r.connections(0), r.connections(1)), (0, 0));
    // The connection is gone: data for it is answered with RST.
    send(&mut r, &mut m, 0, hdr(3, 4, 5000, 1234, Op::Rw), b"late");
    assert!(m.vms[1].received().is_empty());
    let rst = m.vms[0].received();
    assert_eq!(rst[0].0, hdr(3, 4, 5000, 1234, Op::Rw).reset_reply());
    assert_eq!(r.counters(0).no_connection, 1);
    assert_eq!(m.vms[0].tx_done(), 24);
    assert_eq!(m.refused, 0);
}

#[test]
fn a_pair_the_config_does_not_allow_gets_rst_and_nothing_arrives() {
    let (mut r, mut m) = machine();
    // 2 may talk to nobody; 0 may not reach 2; nobody has CID 99.
    for (from, src, dst) in [(2usize, 5u64, 3u64), (0, 3, 5), (0, 3, 99), (1, 4, 2)] {
        let req = hdr(src, dst, 7000, 80, Op::Request);
        send(&mut r, &mut m, from, req, &[]);
        assert_eq!(
            m.vms[from].received(),
            vec![(req.reset_reply(), vec![])],
            "{src} -> {dst}"
        );
    }
    for vm in &mut m.vms {
        assert!(vm.received().is_empty());
    }
    assert_eq!(r.counters(2).denied, 1);
    assert_eq!(r.counters(0).denied, 2);
    assert_eq!(r.connections(0) + r.connections(1) + r.connections(2), 0);
}

#[test]
fn a_spoofed_source_is_dropped_and_counted() {
    let (mut r, mut m) = machine();
    send(&mut r, &mut m, 0, hdr(4, 4, 1, 2, Op::Request), &[]);
    send(&mut r, &mut m, 2, hdr(3, 4, 1, 2, Op::Request), &[]);
    for vm in &mut m.vms {
        assert!(vm.received().is_empty());
    }
    assert_eq!(r.counters(0).spoofed, 1);
    assert_eq!(r.counters(2).spoofed, 1);
    assert_eq!(m.vms[0].tx_done(), 1, "the chain is returned");
}

#[test]
fn malformed_packets_are_dropped_or_reset() {
    let (mut r, mut m) = machine();
    // A header that claims more payload than the chain has.
    let lying = Header {
        len: 100,
        ..hdr(3, 4, 1, 2, Op::Request)
    };
    assert!(m.vms[0].send(&lying, &[1, 2, 3]));
    r.service(0, &mut m);
    // An unknown operation; a seqpacket request.
    send(
        &mut r,
        &mut m,
        0,
        Header {
            op: 9,
            ..hdr(3, 4, 1, 2, Op::Rw)
        },
        &[],
    );
    let seq = Header {
        kind: 2,
        ..hdr(3, 4, 1, 2, Op::Request)
    };
    send(&mut r, &mut m, 0, seq, &[]);
    assert!(m.vms[1].received().is_empty());
    assert_eq!(m.vms[0].received(), vec![(seq.reset_reply(), vec![])]);
    assert_eq!(r.counters(0).malformed, 3);
    assert_eq!(m.vms[0].tx_done(), 3);
}

#[test]
fn a_large_packet_is_split_over_receive_buffers() {
    let (mut r, mut m) = machine();
    send(&mut r, &mut m, 0, hdr(3, 4, 5, 6, Op::Request), &[]);
    send(&mut r, &mut m, 1, hdr(4, 3, 6, 5, Op::Response), &[]);
    m.vms[0].received();
    m.vms[1].received();
    let big: Vec<u8> = (0..10_000u32).map(|k| (k % 251) as u8).collect();
    send(&mut r, &mut m, 0, hdr(3, 4, 5, 6, Op::Rw), &big);
    let parts = m.vms[1].received();
    let lens: Vec<u32> = parts.iter().map(|(h, _)| h.len).collect();
    assert_eq!(lens, vec![4096, 4096, 1808]);
    assert!(
        parts
            .iter()
            .all(|(h, _)| h.op == Op::Rw as u16 && h.src_port == 5)
    );
    let joined: Vec<u8> = parts.into_iter().flat_map(|(_, p)| p).collect();
    assert_eq!(joined, big);
    assert_eq!(r.counters(0).forwarded, 2);
}

#[test]
fn a_receiver_without_buffers_holds_the_packet_in_the_senders_ring() {
    let (mut r, mut m) = machine();
    send(&mut r, &mut m, 0, hdr(3, 4, 5, 6, Op::Request), &[]);
    send(&mut r, &mut m, 1, hdr(4, 3, 6, 5, Op::Response), &[]);
    m.vms[1].received();
    m.vms[0].received();
    assert_eq!(m.vms[0].tx_done(), 1);
    // Use up 1's remaining buffers.
    for i in 0..7u8 {
        send(&mut r, &mut m, 0, hdr(3, 4, 5, 6, Op::Rw), &[i]);
    }
    assert_eq!(m.vms[1].received().len(), 7);
    assert_eq!(m.vms[0].tx_done(), 7);
    // Now nothing can arrive: the packet waits, not lost.
    send(&mut r, &mut m, 0, hdr(3, 4, 5, 6, Op::Rw), b"wait for me");
    assert_eq!(m.vms[0].tx_done(), 0);
    assert!(m.vms[1].received().is_empty());
    // New buffers: the receiver's notify lets it through.
    assert!(m.vms[1].post_rx(2, RX_PAYLOAD));
    r.service(1, &mut m);
    let got = m.vms[1].received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"wait for me");
    assert_eq!(m.vms[0].tx_done(), 1);
}

#[test]
fn the_connection_table_is_bounded() {
    let (mut r, mut m) = machine();
    // Each buffer takes two of the 32 descriptors: at most 16 posted.
    let mut refused = 0;
    for port in 0..(CONNECTIONS as u32 + 2) {
        m.vms[1].received();
        if m.vms[1].posted.len() < 4 {
            m.vms[1].post_rx(8, RX_PAYLOAD);
        }
        if m.vms[0].posted.len() < 4 {
            m.vms[0].post_rx(8, RX_PAYLOAD);
        }
        send(
            &mut r,
            &mut m,
            0,
            hdr(3, 4, 10_000 + port, 80, Op::Request),
            &[],
        );
        refused += m.vms[0]
            .received()
            .iter()
            .filter(|(h, _)| h.op == Op::Rst as u16)
            .count();
    }
    assert_eq!(r.connections(0), CONNECTIONS);
    assert_eq!(refused, 2);
    assert_eq!(r.counters(0).table_full, 2);
}

#[test]
fn a_reset_device_tears_its_connections_down_at_the_peer() {
    let (mut r, mut m) = machine();
    send(&mut r, &mut m, 0, hdr(3, 4, 5, 6, Op::Request), &[]);
    send(&mut r, &mut m, 1, hdr(4, 3, 6, 5, Op::Response), &[]);
    m.vms[1].received();
    // vm0's driver resets its device; the glue sees it and tells the router.
    // (The probe's own reset was seen first.)
    assert!(m.vms[0].t.device_mut().take_reset());
    assert!(!m.vms[0].t.device_mut().take_reset());
    wr(&mut m.vms[0].t, mmio::STATUS, 0);
    assert!(m.vms[0].t.device_mut().take_reset());
    r.port_reset(0);
    r.service(1, &mut m);
    let got = m.vms[1].received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, hdr(4, 3, 6, 5, Op::Request).reset_reply());
    assert_eq!((r.connections(0), r.connections(1)), (0, 0));
}

#[test]
fn a_peer_whose_driver_is_not_up_refuses_with_rst_and_keeps_no_entry() {
    let mut vms: Vec<Vm> = (0..2).map(|i| Vm::new(3 + i)).collect();
    vms[0].probe();
    vms[0].post_rx(4, RX_PAYLOAD);
    let mut m = Machine { vms, refused: 0 };
    let mut r = Router::new();
    r.add_port(0, 3, 1 << 1);
    r.add_port(1, 4, 1 << 0);
    let req = hdr(3, 4, 5, 6, Op::Request);
    send(&mut r, &mut m, 0, req, &[]);
    assert_eq!(m.vms[0].received(), vec![(req.reset_reply(), vec![])]);
    assert_eq!((r.connections(0), r.connections(1)), (0, 0));
    assert_eq!(m.vms[0].tx_done(), 1);
}

/// Random queue layouts over noise, for two VMs allowed to talk.
#[derive(Debug, Clone)]
struct Hostile {
    seed: u64,
    areas: [[u64; 3]; 2],
    sizes: [u16; 2],
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let area = |align: u64| {
        prop_oneof![
            6 => (0..0x2000 / align).prop_map(move |k| RAM_BASE + k * align),
            1 => (0..0x100 / align).prop_map(move |k| RAM_BASE + VM_RAM as u64 - 0x80 + k * align),
        ]
    };
    let areas = (area(16), area(2), area(4)).prop_map(|(d, a, u)| [d, a, u]);
    (any::<u64>(), areas.clone(), areas, (0u32..=4, 0u32..=4)).prop_map(
        |(seed, a0, a1, (s0, s1))| Hostile {
            seed,
            areas: [a0, a1],
            sizes: [1 << s0, 1 << s1],
        },
    )
}

/// Noise in which many words look like addresses in the first 64 KiB and
/// many like headers from CID 3 or 4 to the other.
fn noisy(ram: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in ram.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let w = match v & 3 {
            0 => RAM_BASE + (v >> 48),
            1 => 3 + (v >> 63),
            _ => v,
        };
        let b = w.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn hostile_vm(cid: u64, h: &Hostile) -> Vm {
    let mut vm = Vm::new(cid);
    noisy(&mut vm.ram, h.seed ^ cid);
    assert!(negotiate(
        &mut vm.t,
        feature::VERSION_1 | feature::RING_INDIRECT_DESC
    ));
    for q in 0..2 {
        let mut dq = DriverQueue::at(h.areas[q][0], h.sizes[q]);
        dq.avail = h.areas[q][1];
        dq.used = h.areas[q][2];
        dq.setup(&mut vm.t, q as u32);
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
        let seed = h.seed ^ cid ^ (q as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let bufs = structured_ring(&mut mem, &dq, seed, q == 0, RAM_BASE + 0x4000, 44..300);
        if q == 1 {
            // Most transmit buffers hold a plausible packet.
            let mut x = seed;
            for (addr, len) in bufs {
                let r = next_noise(&mut x);
                if r & 3 == 0 || len < HDR_LEN as u32 {
                    continue;
                }
                let packet = Header {
                    src_cid: if r & 0x30 == 0 { 7 } else { cid },
                    dst_cid: if r & 0x100 == 0 { 5 } else { 3 + (r >> 9) % 2 },
                    src_port: ((r >> 12) & 1) as u32,
                    dst_port: ((r >> 13) & 1) as u32,
                    len: len - HDR_LEN as u32,
                    kind: if r & 0x1c0 == 0 { 2 } else { TYPE_STREAM },
                    op: if r & 0x200 == 0 {
                        Op::Request as u16
                    } else {
                        1 + ((r >> 16) % 7) as u16
                    },
                    flags: 0,
                    buf_alloc: (r >> 24) as u32,
                    fwd_cnt: (r >> 40) as u32,
                };
                let _ = mem.write(Ipa(addr), &packet.encode());
            }
        }
    }
    driver_ok(&mut vm.t);
    vm
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Two hostile VMs allowed to talk, beside a well-behaved one: the
    /// router never panics, every access outside a VM's RAM was refused
    /// and stopped a device, its work stays bounded, and the good VM's
    /// device stays live.
    #[test]
    fn hostile_rings_never_panic_or_escape_ram(h in hostile()) {
        let mut good = Vm::new(5);
        good.probe();
        good.post_rx(4, RX_PAYLOAD);
        let vms = vec![hostile_vm(3, &h), hostile_vm(4, &h), good];
        let mut m = Machine { vms, refused: 0 };
        let mut r = Router::new();
        r.add_port(0, 3, 0b110);
        r.add_port(1, 4, 0b101);
        r.add_port(2, 5, 0b011);
        for _ in 0..3 {
            for vm in 0..3 {
                let before = m.refused;
                let report = r.service(vm, &mut m);
                prop_assert!(report.steps <= 3 * crate::router::BUDGET + 3);
                if m.refused > before {
                    let stopped = (0..2).any(|p| m.vms[p].t.status() & status::DEVICE_NEEDS_RESET != 0);
                    prop_assert!(stopped, "a refused access went unnoticed");
                }
            }
            prop_assert!(m.vms[2].t.is_live(), "{:?}", m.vms[2].t.take_error());
            for (hd, payload) in m.vms[2].received() {
                // Only what the rules let through reaches the good VM.
                prop_assert_eq!(hd.dst_cid, 5);
                prop_assert!(hd.src_cid == 3 || hd.src_cid == 4);
                prop_assert!(payload.len() <= RX_PAYLOAD as usize);
            }
        }
    }
}
