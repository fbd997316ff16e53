//! virtio-net and the switch, driven end to end: model drivers (one per
//! VM, each with its own RAM) bring NICs up through the transport's
//! registers, post receive buffers, transmit frames and notify; the switch
//! moves the frames between the VMs' memories. Byte-exact delivery both
//! ways, learning, flooding, drops when a peer has no buffer, the MTU
//! bounds, bounded work, coalesced interrupts, and hostile rings.

use std::collections::VecDeque;

use proptest::prelude::*;
use stratum_core::addr::Ipa;

use super::driver::*;
use crate::mem::{GuestMemory, SliceMemory};
use crate::net::{self, HDR_LEN, MAX_FRAME, Mac, NetDevice};
use crate::spec::{feature, mmio, status};
use crate::switch::{PortCounters, Ports, ReadingFn, Switch};
use crate::transport::Transport;

mod offload;

/// Each VM's RAM: 384 KiB.
const VM_RAM: usize = 0x6_0000;
/// Entries of the model's queues.
const QSIZE: u16 = 32;
/// Receive buffers, one slot each.
const RX_BUFS: u64 = RAM_BASE + 0x1000;
/// Transmit buffers, one slot each.
const TX_BUFS: u64 = RAM_BASE + 0x1_0000;
/// Bytes per buffer slot.
const SLOT: u64 = 0x700;
/// Room for one large transmitted frame.
const BIG_TX: u64 = RAM_BASE + 0x2_0000;
/// Room for large receive buffers.
const BIG_RX: u64 = RAM_BASE + 0x4_0000;

/// One VM: its NIC's transport, its RAM, and its driver's state.
struct Vm {
    t: Transport<NetDevice>,
    ram: Vec<u8>,
    rx: DriverQueue,
    tx: DriverQueue,
    /// Receive buffers posted and not yet used: (head, address).
    posted: VecDeque<(u16, u64)>,
    next_rx_slot: u64,
    next_tx_slot: u64,
}

impl Vm {
    fn new(mac: Mac) -> Self {
        let rx = DriverQueue::at(RAM_BASE, QSIZE);
        let tx = DriverQueue::at(rx.end().next_multiple_of(16), QSIZE);
        Self {
            t: Transport::new(NetDevice::new(mac)),
            ram: vec![0; VM_RAM],
            rx,
            tx,
            posted: VecDeque::new(),
            next_rx_slot: 0,
            next_tx_slot: 0,
        }
    }

    /// Probes the NIC as Linux's virtio-net does: reads the MAC, accepts
    /// MAC, MTU, STATUS and the ring features, sets both queues up.
    fn probe(&mut self, event_idx: bool) {
        self.probe_with(event_idx, 0);
    }

    /// [`Vm::probe`], accepting `extra` features as well.
    fn probe_with(&mut self, event_idx: bool, extra: u64) {
        let t = &mut self.t;
        assert_eq!(rd(t, mmio::DEVICE_ID), 1);
        let offered = device_features(t);
        let mut want = feature::VERSION_1 | feature::RING_INDIRECT_DESC | net::F_MAC;
        want |= net::F_MTU | net::F_STATUS | extra;
        if event_idx {
            want |= feature::RING_EVENT_IDX;
        }
        assert_eq!(offered & want, want);
        assert!(negotiate(t, want));
        let mac: Vec<u8> = (0..6)
            .map(|i| read_sized(t, mmio::CONFIG + i, stratum_core::access::AccessSize::Byte) as u8)
            .collect();
        assert_eq!(mac, t.device().mac().0);
        assert_eq!(rd(t, mmio::CONFIG + 8) >> 16, u32::from(net::MTU));
        let (rx, tx) = (self.rx, self.tx);
        rx.setup(&mut self.t, 0);
        tx.setup(&mut self.t, 1);
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        rx.clear(&mut mem);
        tx.clear(&mut mem);
        driver_ok(&mut self.t);
        assert!(self.t.is_live());
    }

    /// Posts `n` receive buffers of `len` bytes and notifies the receive
    /// queue.
    fn post_rx(&mut self, n: usize, len: u32) {
        let mut heads = Vec::new();
        {
            let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
            for _ in 0..n {
                let at = RX_BUFS + SLOT * (self.next_rx_slot % u64::from(QSIZE));
                self.next_rx_slot += 1;
                let head = self.rx.chain(&mut mem, &[(at, len, true)]);
                self.rx.publish(&mut mem, head);
                self.posted.push_back((head, at));
                heads.push(head);
            }
            // Interrupt me at the next used buffer.
            self.rx.set_used_event(&mut mem, self.rx.last_used);
        }
        let fx = wr(&mut self.t, mmio::QUEUE_NOTIFY, u32::from(net::RX));
        assert!(fx.notify());
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        self.t.process(&mut mem);
        assert!(!self.t.device_mut().take_tx_kick());
    }

    /// Writes `frames` into transmit chains (the header and the frame in
    /// one buffer, or split in two, alternately), publishes them and
    /// notifies; whether the device remembered the kick.
    fn send(&mut self, frames: &[Vec<u8>]) -> bool {
        {
            let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
            for f in frames {
                let at = TX_BUFS + SLOT * (self.next_tx_slot % u64::from(QSIZE));
                let split = self.next_tx_slot % 2 == 1;
                self.next_tx_slot += 1;
                mem.write(Ipa(at), &[0; HDR_LEN]).expect("in RAM");
                mem.write(Ipa(at + HDR_LEN as u64), f).expect("in RAM");
                let total = (HDR_LEN + f.len()) as u32;
                let head = if split && !f.is_empty() {
                    self.tx.chain(
                        &mut mem,
                        &[
                            (at, HDR_LEN as u32, false),
                            (at + HDR_LEN as u64, f.len() as u32, false),
                        ],
                    )
                } else {
                    self.tx.chain(&mut mem, &[(at, total, false)])
                };
                self.tx.publish(&mut mem, head);
            }
        }
        wr(&mut self.t, mmio::QUEUE_NOTIFY, u32::from(net::TX));
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        self.t.process(&mut mem);
        self.t.device_mut().take_tx_kick()
    }

    /// The transmit chains returned since the last call.
    fn tx_done(&mut self) -> usize {
        let mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        let used = self.tx.take_used(&mem);
        assert!(used.iter().all(|&(_, len)| len == 0));
        used.len()
    }

    /// The frames received since the last call, headers checked; empty
    /// returned buffers as `None`.
    fn received(&mut self) -> Vec<Option<Vec<u8>>> {
        let mut hdr = [0u8; HDR_LEN];
        hdr[10] = 1;
        self.received_with_headers()
            .into_iter()
            .map(|r| {
                r.map(|(h, f)| {
                    assert_eq!(h, hdr, "a plain header, num_buffers 1");
                    f
                })
            })
            .collect()
    }

    /// The frames received since the last call with their headers; empty
    /// returned buffers as `None`.
    fn received_with_headers(&mut self) -> Vec<Option<([u8; HDR_LEN], Vec<u8>)>> {
        let mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        let used = self.rx.take_used(&mem);
        let mut out = Vec::new();
        for (id, len) in used {
            let (head, at) = self.posted.pop_front().expect("a posted buffer");
            assert_eq!(id, u32::from(head), "buffers are used in order");
            if len == 0 {
                out.push(None);
                continue;
            }
            let mut b = vec![0u8; len as usize];
            mem.read(Ipa(at), &mut b).expect("in RAM");
            let hdr: [u8; HDR_LEN] = b[..HDR_LEN].try_into().expect("a header");
            out.push(Some((hdr, b[HDR_LEN..].to_vec())));
        }
        out
    }

    /// Reads and acknowledges the interrupt status; whether a used-buffer
    /// interrupt was pending.
    fn ack(&mut self) -> bool {
        let s = rd(&mut self.t, mmio::INTERRUPT_STATUS);
        wr(&mut self.t, mmio::INTERRUPT_ACK, s);
        assert_eq!(s & mmio::INT_CONFIG, 0, "{:?}", self.t.take_error());
        s & mmio::INT_USED_BUFFER != 0
    }
}

/// The VMs of one network, as the glue gives them to the switch.
struct Net {
    vms: Vec<Vm>,
    /// Accesses refused by any VM's memory.
    refused: u64,
    /// Ports the glue cannot reach (VM stopped).
    stopped: Vec<usize>,
    /// A port whose driver resets and sets its NIC up again while the
    /// switch delivers its frames (as its vCPU may on another CPU).
    resets_during_delivery: Option<usize>,
}

impl Ports for Net {
    fn with_port(
        &mut self,
        port: usize,
        f: &mut dyn FnMut(&mut Transport<NetDevice>, &mut dyn GuestMemory),
    ) -> bool {
        if self.stopped.contains(&port) {
            return false;
        }
        let Some(vm) = self.vms.get_mut(port) else {
            return false;
        };
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
        f(&mut vm.t, &mut mem);
        self.refused += mem.refused();
        true
    }

    fn with_port_reading(&mut self, port: usize, from: usize, f: &mut ReadingFn<'_>) -> bool {
        if self.stopped.contains(&port) || self.stopped.contains(&from) || port == from {
            return false;
        }
        if port >= self.vms.len() || from >= self.vms.len() {
            return false;
        }
        if self.resets_during_delivery.take() == Some(from) {
            // A driver reset of the same device: its rings start over, RAM
            // keeps its bytes.
            let vm = &mut self.vms[from];
            let old = std::mem::replace(vm, Vm::new(Mac([0; 6])));
            (vm.t, vm.ram) = (old.t, old.ram);
            wr(&mut vm.t, mmio::STATUS, 0);
            vm.probe(true);
        }
        // The sender's RAM is read through a copy: the two VMs are one
        // vector here, and the switch only reads from it.
        let mut src_ram = self.vms[from].ram.clone();
        let src = SliceMemory::new(Ipa(RAM_BASE), &mut src_ram);
        let vm = &mut self.vms[port];
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
        f(&mut vm.t, &mut mem, &src);
        self.refused += mem.refused() + src.refused();
        true
    }
}

/// A network of `n` VMs named vm0, vm1, … on "lan", all probed.
fn lan(n: usize, event_idx: bool) -> (Switch, Net) {
    let mut vms: Vec<Vm> = (0..n)
        .map(|i| Vm::new(net::derive_mac(&format!("vm{i}"), "lan")))
        .collect();
    for vm in &mut vms {
        vm.probe(event_idx);
    }
    (
        Switch::new(n),
        Net {
            vms,
            refused: 0,
            stopped: Vec::new(),
            resets_during_delivery: None,
        },
    )
}

fn mac(net: &Net, port: usize) -> Mac {
    net.vms[port].t.device().mac()
}

/// An Ethernet frame from `src` to `dst` with `len` payload bytes
/// depending on `seed`.
fn frame(dst: Mac, src: Mac, len: usize, seed: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(dst.0);
    f.extend(src.0);
    f.extend([0x08, 0x00]);
    f.extend((0..len).map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed)));
    f
}

/// Port `src` sends `frames` and the switch serves the kick.
fn send(sw: &mut Switch, net: &mut Net, src: usize, frames: &[Vec<u8>]) {
    assert!(
        net.vms[src].send(frames),
        "the transmit notify is remembered"
    );
    let report = sw.transmit(src, net);
    assert_eq!(report.taken, frames.len());
    assert!(!report.more);
    assert_eq!(net.vms[src].tx_done(), frames.len());
}

fn delivered(v: Vec<Option<Vec<u8>>>) -> Vec<Vec<u8>> {
    v.into_iter()
        .map(|f| f.expect("a frame, not an empty buffer"))
        .collect()
}

#[test]
fn frames_are_switched_both_ways_byte_exact_and_unicast_after_learning() {
    let (mut sw, mut net) = lan(3, true);
    for vm in &mut net.vms {
        vm.post_rx(8, 0x600);
    }
    let (a, b) = (mac(&net, 0), mac(&net, 1));
    // An ARP-like broadcast from 0 reaches 1 and 2.
    let hello = frame(Mac::BROADCAST, a, 28, 1);
    send(&mut sw, &mut net, 0, std::slice::from_ref(&hello));
    assert_eq!(delivered(net.vms[1].received()), vec![hello.clone()]);
    assert_eq!(delivered(net.vms[2].received()), vec![hello]);
    assert!(net.vms[0].received().is_empty(), "never back to the sender");
    // 1 answers 0: the switch learned 0's address, so 2 sees nothing.
    let reply = frame(a, b, MAX_FRAME - 14, 2);
    send(&mut sw, &mut net, 1, std::slice::from_ref(&reply));
    assert_eq!(delivered(net.vms[0].received()), vec![reply]);
    assert!(net.vms[2].received().is_empty());
    // And 0 to 1, several frames of every size class, in order.
    let burst: Vec<Vec<u8>> = [0, 1, 46, 1000, 1500, 1504]
        .iter()
        .enumerate()
        .map(|(i, &len)| frame(b, a, len, i as u8))
        .collect();
    send(&mut sw, &mut net, 0, &burst);
    assert_eq!(delivered(net.vms[1].received()), burst);
    assert!(net.vms[2].received().is_empty());
    assert_eq!(sw.lookup(a), Some(0));
    assert_eq!(sw.lookup(b), Some(1));
    assert_eq!(
        sw.counters(0),
        PortCounters {
            tx_frames: 7,
            tx_dropped: 0,
            rx_frames: 1,
            rx_dropped: 0,
            tx_spoofed: 0,
            tx_storm: 0,
        }
    );
    assert_eq!(sw.counters(2).rx_frames, 1);
}

#[test]
fn transmit_buffers_return_after_delivery_and_never_to_a_ring_reset_meanwhile() {
    let (mut sw, mut net) = lan(2, true);
    net.vms[1].post_rx(8, 0x600);
    let (a, b) = (mac(&net, 0), mac(&net, 1));
    let burst: Vec<Vec<u8>> = (0..3).map(|i| frame(b, a, 700, i)).collect();
    // Delivered straight from the sender's buffers, then returned.
    send(&mut sw, &mut net, 0, &burst);
    assert_eq!(delivered(net.vms[1].received()), burst);
    // The sender's driver resets and sets its NIC up again while its
    // frames are delivered: they still arrive (they were taken whole),
    // but its new rings get no used entries for buffers of the old ones.
    let more: Vec<Vec<u8>> = (3..5).map(|i| frame(b, a, 900, i)).collect();
    assert!(net.vms[0].send(&more));
    net.resets_during_delivery = Some(0);
    let report = sw.transmit(0, &mut net);
    assert_eq!(report.taken, 2);
    assert_eq!(delivered(net.vms[1].received()), more);
    assert_eq!(net.vms[0].tx_done(), 0, "nothing returned to the new ring");
    assert!(net.vms[0].t.is_live(), "{:?}", net.vms[0].t.take_error());
    // And the new rings work.
    net.vms[0].post_rx(2, 0x600);
    let again = frame(b, a, 64, 9);
    send(&mut sw, &mut net, 0, std::slice::from_ref(&again));
    assert_eq!(delivered(net.vms[1].received()), vec![again]);
}

#[test]
fn unknown_and_multicast_destinations_flood_every_other_port() {
    let (mut sw, mut net) = lan(4, false);
    for vm in &mut net.vms {
        vm.post_rx(4, 0x600);
    }
    let a = mac(&net, 2);
    let unknown = frame(Mac([0x02, 9, 9, 9, 9, 9]), a, 60, 3);
    let multicast = frame(Mac([0x01, 0, 0x5e, 0, 0, 1]), a, 60, 4);
    send(&mut sw, &mut net, 2, &[unknown.clone(), multicast.clone()]);
    for p in [0, 1, 3] {
        assert_eq!(
            delivered(net.vms[p].received()),
            vec![unknown.clone(), multicast.clone()]
        );
    }
    assert!(net.vms[2].received().is_empty());
    // A frame to the sender's own address is not reflected.
    send(&mut sw, &mut net, 2, &[frame(a, a, 10, 5)]);
    for vm in &mut net.vms {
        assert!(vm.received().is_empty());
    }
}

#[test]
fn a_peer_without_receive_buffers_drops_and_counts_and_the_sender_carries_on() {
    let (mut sw, mut net) = lan(3, true);
    net.vms[1].post_rx(2, 0x600);
    net.vms[2].post_rx(8, 0x600);
    let (a, b) = (mac(&net, 0), mac(&net, 1));
    // 1 never reads after two buffers; broadcasts still reach 2.
    let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(Mac::BROADCAST, a, 100, i)).collect();
    send(&mut sw, &mut net, 0, &frames);
    assert_eq!(delivered(net.vms[1].received()), frames[..2].to_vec());
    assert_eq!(delivered(net.vms[2].received()), frames);
    assert_eq!(sw.counters(1).rx_frames, 2);
    assert_eq!(sw.counters(1).rx_dropped, 3);
    // The flood cost no buffers: once 1 posts again, new frames arrive,
    // old ones do not.
    net.vms[1].post_rx(1, 0x600);
    let next = frame(b, a, 64, 9);
    send(&mut sw, &mut net, 0, std::slice::from_ref(&next));
    assert_eq!(delivered(net.vms[1].received()), vec![next]);
    // A buffer too small for the frame is returned empty.
    net.vms[1].post_rx(1, 40);
    send(&mut sw, &mut net, 0, &[frame(b, a, 64, 10)]);
    assert_eq!(net.vms[1].received(), vec![None]);
    assert_eq!(sw.counters(1).rx_dropped, 4);
}

#[test]
fn frames_over_the_mtu_or_under_a_header_are_dropped_at_the_sender() {
    let (mut sw, mut net) = lan(2, false);
    net.vms[1].post_rx(8, 0x700);
    let a = mac(&net, 0);
    let biggest = frame(Mac::BROADCAST, a, MAX_FRAME - 14, 1);
    let too_big = frame(Mac::BROADCAST, a, MAX_FRAME - 13, 2);
    let runt = frame(Mac::BROADCAST, a, 0, 3)[..13].to_vec();
    let nothing = Vec::new();
    send(
        &mut sw,
        &mut net,
        0,
        &[too_big, runt, nothing, biggest.clone()],
    );
    assert_eq!(delivered(net.vms[1].received()), vec![biggest]);
    assert_eq!(sw.counters(0).tx_dropped, 3);
    assert_eq!(sw.counters(0).tx_frames, 1);
    // An offload the device never offered: dropped too.
    let vm = &mut net.vms[0];
    let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
    let at = TX_BUFS + SLOT * 4;
    let mut hdr = [0u8; HDR_LEN];
    hdr[0] = net::HDR_F_NEEDS_CSUM;
    mem.write(Ipa(at), &hdr).expect("in RAM");
    let f = frame(Mac::BROADCAST, a, 20, 4);
    mem.write(Ipa(at + HDR_LEN as u64), &f).expect("in RAM");
    let head = vm
        .tx
        .chain(&mut mem, &[(at, (HDR_LEN + f.len()) as u32, false)]);
    vm.tx.publish(&mut mem, head);
    wr(&mut vm.t, mmio::QUEUE_NOTIFY, 1);
    vm.t.process(&mut mem);
    assert_eq!(sw.transmit(0, &mut net).taken, 1);
    assert_eq!(sw.counters(0).tx_dropped, 4);
    assert!(net.vms[1].received().is_empty());
    assert_eq!(net.vms[0].t.counters().device_errors, 0);
}

#[test]
fn one_interrupt_per_batch_not_per_frame() {
    let (mut sw, mut net) = lan(2, false);
    net.vms[1].post_rx(16, 0x600);
    assert!(!net.vms[1].ack());
    let a = mac(&net, 0);
    let frames: Vec<Vec<u8>> = (0..16).map(|i| frame(Mac::BROADCAST, a, 200, i)).collect();
    let before = net.vms[1].t.counters().interrupts;
    send(&mut sw, &mut net, 0, &frames);
    assert_eq!(delivered(net.vms[1].received()).len(), 16);
    // Two batches of eight: two used-buffer signals at the receiver, and
    // two at the sender (its transmit buffers), where a per-frame device
    // would have raised sixteen.
    assert_eq!(net.vms[1].t.counters().interrupts - before, 2);
    assert!(net.vms[1].ack());
    assert_eq!(net.vms[0].t.counters().interrupts, 2);
}

#[test]
fn work_per_call_is_bounded_and_the_rest_reported() {
    let (mut sw, mut net) = lan(2, true);
    net.vms[1].post_rx(16, 0x600);
    let a = mac(&net, 0);
    let frames: Vec<Vec<u8>> = (0..12).map(|i| frame(Mac::BROADCAST, a, 64, i)).collect();
    assert!(net.vms[0].send(&frames));
    let first = sw.transmit_up_to(0, &mut net, 5);
    assert_eq!((first.taken, first.more), (5, true));
    assert_eq!(delivered(net.vms[1].received()), frames[..5].to_vec());
    let rest = sw.transmit_up_to(0, &mut net, 100);
    assert_eq!((rest.taken, rest.more), (7, false));
    assert_eq!(delivered(net.vms[1].received()), frames[5..].to_vec());
    assert_eq!(net.vms[0].tx_done(), 12);
}

#[test]
fn ports_that_are_not_live_or_stopped_drop_and_the_rest_still_receive() {
    let mut vms: Vec<Vm> = (0..3)
        .map(|i| Vm::new(net::derive_mac(&format!("vm{i}"), "lan")))
        .collect();
    vms[0].probe(true);
    vms[1].probe(true);
    // vm2's driver never set DRIVER_OK.
    let mut net = Net {
        vms,
        refused: 0,
        stopped: Vec::new(),
        resets_during_delivery: None,
    };
    let mut sw = Switch::new(3);
    net.vms[1].post_rx(4, 0x600);
    let a = mac(&net, 0);
    let f = frame(Mac::BROADCAST, a, 64, 1);
    send(&mut sw, &mut net, 0, std::slice::from_ref(&f));
    assert_eq!(delivered(net.vms[1].received()), vec![f.clone()]);
    assert_eq!(sw.counters(2).rx_dropped, 1);
    net.stopped.push(1);
    send(&mut sw, &mut net, 0, std::slice::from_ref(&f));
    assert_eq!(sw.counters(1).rx_dropped, 1);
    assert!(net.vms[1].received().is_empty());
    // A port past the switch's is ignored.
    assert_eq!(sw.transmit(7, &mut net).taken, 0);
}

#[test]
fn a_broken_receive_ring_stops_that_nic_only() {
    let (mut sw, mut net) = lan(3, false);
    net.vms[1].post_rx(2, 0x600);
    net.vms[2].post_rx(2, 0x600);
    // vm1's next receive buffer points outside its RAM.
    {
        let vm = &mut net.vms[1];
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
        let head = vm.posted[0].0;
        DriverQueue::write_desc(
            &mut mem,
            vm.rx.desc,
            head,
            RAM_BASE + VM_RAM as u64,
            0x600,
            2,
            0,
        );
    }
    let a = mac(&net, 0);
    let f = frame(Mac::BROADCAST, a, 64, 1);
    send(&mut sw, &mut net, 0, std::slice::from_ref(&f));
    assert_ne!(net.vms[1].t.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(delivered(net.vms[2].received()), vec![f]);
    assert!(net.vms[0].t.is_live());
    assert_eq!(sw.counters(1).rx_dropped, 1);
}

#[test]
fn a_pinned_mac_cannot_be_stolen_by_another_port() {
    let (mut sw, mut net) = lan(3, true);
    for p in 0..3 {
        let m = mac(&net, p);
        sw.pin(p, m);
        net.vms[p].post_rx(8, 0x600);
    }
    let (a, b) = (mac(&net, 0), mac(&net, 1));
    assert_eq!(sw.lookup(b), Some(1), "pinned before any frame");
    // 2 claims to be 1: dropped, and the table does not move.
    send(&mut sw, &mut net, 2, &[frame(a, b, 30, 1)]);
    assert!(net.vms[0].received().is_empty());
    assert_eq!(sw.counters(2).tx_spoofed, 1);
    assert_eq!(sw.lookup(b), Some(1));
    // 0 to 1 still goes to 1 only.
    let f = frame(b, a, 30, 2);
    send(&mut sw, &mut net, 0, std::slice::from_ref(&f));
    assert_eq!(delivered(net.vms[1].received()), vec![f]);
    assert!(net.vms[2].received().is_empty());
    // A MAC a guest chose itself is learned as before.
    let chosen = Mac([0x02, 0xaa, 0, 0, 0, 1]);
    send(
        &mut sw,
        &mut net,
        2,
        &[frame(Mac::BROADCAST, chosen, 30, 3)],
    );
    assert_eq!(sw.lookup(chosen), Some(2));
    // Pinning a group address or a port the switch lacks does nothing.
    sw.pin(1, Mac::BROADCAST);
    sw.pin(9, Mac([2, 0, 0, 0, 0, 9]));
    assert_eq!(sw.lookup(Mac([2, 0, 0, 0, 0, 9])), None);
    assert_eq!(sw.lookup(b), Some(1));
}

#[test]
fn a_nic_driven_in_one_direction_only_is_not_an_error() {
    let mut vms: Vec<Vm> = (0..2)
        .map(|i| Vm::new(net::derive_mac(&format!("vm{i}"), "lan")))
        .collect();
    vms[0].probe(false);
    // vm1's driver sets up its transmit queue only.
    let tx = vms[1].tx;
    assert!(negotiate(&mut vms[1].t, feature::VERSION_1));
    tx.setup(&mut vms[1].t, 1);
    driver_ok(&mut vms[1].t);
    let mut net = Net {
        vms,
        refused: 0,
        stopped: Vec::new(),
        resets_during_delivery: None,
    };
    let mut sw = Switch::new(2);
    net.vms[0].post_rx(2, 0x600);
    let a = mac(&net, 0);
    send(&mut sw, &mut net, 0, &[frame(Mac::BROADCAST, a, 20, 1)]);
    assert_eq!(sw.counters(1).rx_dropped, 1);
    assert!(net.vms[1].t.is_live());
    let f = frame(Mac::BROADCAST, mac(&net, 1), 20, 2);
    send(&mut sw, &mut net, 1, std::slice::from_ref(&f));
    assert_eq!(delivered(net.vms[0].received()), vec![f]);
}

/// A hostile VM's NIC state: queue areas and ring memory at random.
#[derive(Debug, Clone)]
struct Hostile {
    seed: u64,
    areas: [[u64; 3]; 2],
    sizes: [u16; 2],
    event_idx: bool,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let area = |align: u64| {
        prop_oneof![
            6 => (0..0x2000 / align).prop_map(move |k| RAM_BASE + k * align),
            1 => (0..0x100 / align).prop_map(move |k| RAM_BASE + VM_RAM as u64 - 0x80 + k * align),
        ]
    };
    let areas = (area(16), area(2), area(4)).prop_map(|(d, a, u)| [d, a, u]);
    (
        any::<u64>(),
        areas.clone(),
        areas,
        (0u32..=4, 0u32..=4),
        any::<bool>(),
    )
        .prop_map(|(seed, a0, a1, (s0, s1), event_idx)| Hostile {
            seed,
            areas: [a0, a1],
            sizes: [1 << s0, 1 << s1],
            event_idx,
        })
}

/// Fills `ram` with noise from `seed`, with descriptors that point into
/// RAM often enough to make chains that walk.
fn noisy(ram: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in ram.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // Half the words look like addresses inside the first 64 KiB.
        let w = if v & 1 == 0 { RAM_BASE + (v >> 48) } else { v };
        let b = w.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Brings `vm`'s NIC up with `h`'s queues over noise.
fn hostile_vm(mac: Mac, h: &Hostile) -> Vm {
    let mut vm = Vm::new(mac);
    noisy(&mut vm.ram, h.seed);
    let mut want = feature::VERSION_1 | feature::RING_INDIRECT_DESC;
    if h.event_idx {
        want |= feature::RING_EVENT_IDX;
    }
    // Half of them may ask for offloads.
    let offloads = h.seed & 2 != 0;
    if offloads {
        want |= net::OFFLOADS;
    }
    assert!(negotiate(&mut vm.t, want));
    for q in 0..2 {
        let mut dq = DriverQueue::at(h.areas[q][0], h.sizes[q]);
        dq.avail = h.areas[q][1];
        dq.used = h.areas[q][2];
        dq.setup(&mut vm.t, q as u32);
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
        let seed = h.seed ^ (q as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let bufs = structured_ring(&mut mem, &dq, seed, q == 0, RAM_BASE + 0x4000, 26..1600);
        if q == 1 {
            // Most transmit buffers start with a plain header; with
            // offloads, some with a segmentation request over TCP/IPv4
            // headers (and noise for the rest).
            for (i, (addr, _)) in bufs.into_iter().enumerate() {
                match i % 4 {
                    2 if offloads => {
                        let mss = (h.seed >> 16) as u16 % 1600;
                        let [m0, m1] = mss.to_le_bytes();
                        let hdr = [1, 1, 0, 0, m0, m1, 34, 0, 16, 0, 0, 0];
                        let _ = mem.write(Ipa(addr), &hdr);
                        let at = addr + HDR_LEN as u64;
                        let _ = mem.write(Ipa(at + 12), &[0x08, 0x00, 0x45]);
                        let _ = mem.write(Ipa(at + 14 + 6), &[0, 0, 64, 6]);
                        let _ = mem.write(Ipa(at + 34 + 12), &[0x50]);
                    }
                    3 => {}
                    _ => {
                        let _ = mem.write(Ipa(addr), &[0; HDR_LEN]);
                    }
                }
            }
        }
    }
    driver_ok(&mut vm.t);
    vm
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Two hostile VMs and a well-behaved one on a switch: whatever the
    /// hostile rings hold, the switch never panics, every access outside
    /// a VM's RAM was refused and stopped that VM's NIC, the work stays
    /// within the budget, and the well-behaved VM's NIC stays live.
    #[test]
    fn hostile_rings_never_panic_or_escape_ram(h0 in hostile(), h1 in hostile()) {
        let mut vms = vec![
            hostile_vm(net::derive_mac("h0", "lan"), &h0),
            hostile_vm(net::derive_mac("h1", "lan"), &h1),
            Vm::new(net::derive_mac("good", "lan")),
        ];
        vms[2].probe(true);
        vms[2].post_rx(8, 0x600);
        let mut net = Net { vms, refused: 0, stopped: Vec::new(), resets_during_delivery: None };
        let mut sw = Switch::new(3);
        for round in 0..3 {
            for src in 0..2 {
                let before = net.refused;
                let report = sw.transmit(src, &mut net);
                prop_assert!(report.taken <= crate::switch::TX_BUDGET);
                if net.refused > before {
                    // A refused access stops the NIC whose memory refused it.
                    let stopped = (0..2).any(|p| net.vms[p].t.status() & status::DEVICE_NEEDS_RESET != 0);
                    prop_assert!(stopped, "round {round}: a refused access went unnoticed");
                }
            }
            let good = &mut net.vms[2];
            prop_assert!(good.t.is_live(), "{:?}", good.t.take_error());
            for f in good.received().into_iter().flatten() {
                prop_assert!(f.len() >= 14 && f.len() <= MAX_FRAME);
            }
        }
        // A well-behaved sender still gets through to the good VM.
        let f = frame(Mac::BROADCAST, mac(&net, 2), 20, 0);
        net.vms[2].post_rx(1, 0x600);
        prop_assert!(net.vms[2].send(std::slice::from_ref(&f)));
        sw.transmit(2, &mut net);
        prop_assert_eq!(net.vms[2].tx_done(), 1);
    }
}
