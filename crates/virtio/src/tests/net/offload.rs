//! The checksum and TCP/IPv4 segmentation offloads, end to end through the
//! switch: what a driver that negotiated them sends reaches a peer that
//! negotiated them unchanged, and reaches any other peer as a wire would
//! carry it (checked here by a checksum and header reader of the test's
//! own, not the device's); what does not fit is dropped at the sender.

use super::*;

/// All the offloads, as Linux's driver accepts them.
const ALL: u64 = net::OFFLOADS;
/// The TCP header's options in [`tcp4`]: NOP, NOP, a timestamp.
const TCP_OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
/// The maximum segment size the tests' senders use.
const MSS: u16 = 1448;

/// A TCP/IPv4 frame from `src` to `dst` carrying `payload`, with an
/// 802.1Q tag if `vlan`, TCP `flags`, its IPv4 header checksum, and the
/// TCP checksum field holding the
/// pseudo-header sum, as a driver leaving the checksum to the device
/// writes it. Its virtio-net header asks for the checksum, and for
/// segmentation into [`MSS`]-byte segments if `gso`.
fn tcp4(dst: Mac, src: Mac, payload: &[u8], vlan: bool, flags: u8, gso: bool) -> Sent {
    let mut f = Vec::new();
    f.extend(dst.0);
    f.extend(src.0);
    if vlan {
        f.extend([0x81, 0x00, 0x00, 0x05]);
    }
    f.extend([0x08, 0x00]);
    let l3 = f.len();
    let tcp_len = 20 + TCP_OPTIONS.len() + payload.len();
    let ip_len = (20 + tcp_len).min(0xffff) as u16;
    f.extend([0x45, 0]);
    f.extend(ip_len.to_be_bytes());
    f.extend([0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0]);
    f.extend([10, 0, 0, 2, 10, 0, 0, 1]);
    let ip_csum = !fold16(fold_sum(&f[l3..]));
    f[l3 + 10..l3 + 12].copy_from_slice(&ip_csum.to_be_bytes());
    let l4 = f.len();
    f.extend(40000u16.to_be_bytes());
    f.extend(5001u16.to_be_bytes());
    // A sequence number that wraps inside the segments.
    f.extend(0xffff_f000u32.to_be_bytes());
    f.extend(7u32.to_be_bytes());
    f.extend([(((20 + TCP_OPTIONS.len()) / 4) << 4) as u8, flags]);
    f.extend(502u16.to_be_bytes());
    let pseudo = fold_sum(&f[l3 + 12..l3 + 20]) + 6 + tcp_len as u64;
    f.extend(fold16(pseudo).to_be_bytes());
    f.extend([0, 0]);
    f.extend(TCP_OPTIONS);
    f.extend(payload);
    let mut h = [0u8; HDR_LEN];
    h[0] = net::HDR_F_NEEDS_CSUM;
    if gso {
        h[1] = net::GSO_TCPV4;
        h[2..4].copy_from_slice(&((l4 + 32) as u16).to_le_bytes());
        h[4..6].copy_from_slice(&MSS.to_le_bytes());
    }
    h[6..8].copy_from_slice(&(l4 as u16).to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    (h, f)
}

/// A frame to send: its virtio-net header and its bytes.
type Sent = ([u8; HDR_LEN], Vec<u8>);

/// The sum of big-endian 16-bit words, unfolded.
fn fold_sum(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|w| u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0)))
        .sum()
}

fn fold16(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    s as u16
}

/// What a TCP/IPv4 segment says, once its checksums are verified.
#[derive(Debug, PartialEq)]
struct Segment {
    id: u16,
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
}

/// Reads a TCP/IPv4 segment as a receiver's stack would: the IPv4 header
/// checksum and the TCP checksum must verify, the IPv4 length must be the
/// frame's.
fn verify(f: &[u8]) -> Segment {
    let l3 = if f[12..14] == [0x81, 0] { 18 } else { 14 };
    assert_eq!(f[l3] >> 4, 4);
    let ihl = usize::from(f[l3] & 0xf) * 4;
    let ip_len = usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
    assert_eq!(ip_len, f.len() - l3, "the IPv4 length is the segment's");
    assert_eq!(
        fold16(fold_sum(&f[l3..l3 + ihl])),
        0xffff,
        "IPv4 header checksum"
    );
    let l4 = l3 + ihl;
    let tcp = &f[l4..];
    let pseudo = fold_sum(&f[l3 + 12..l3 + 20]) + 6 + tcp.len() as u64;
    assert_eq!(fold16(pseudo + fold_sum(tcp)), 0xffff, "TCP checksum");
    let doff = usize::from(tcp[12] >> 4) * 4;
    Segment {
        id: u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        flags: tcp[13],
        payload: tcp[doff..].to_vec(),
    }
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u8).wrapping_mul(73).wrapping_add(seed) ^ (k >> 8) as u8)
        .collect()
}

impl Vm {
    /// Sends one frame with header `hdr` from the large transmit area, in
    /// `pieces` buffers through an indirect table, and notifies.
    fn send_big(&mut self, hdr: [u8; HDR_LEN], frame: &[u8], pieces: usize) {
        {
            let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
            mem.write(Ipa(BIG_TX), &hdr).expect("in RAM");
            mem.write(Ipa(BIG_TX + HDR_LEN as u64), frame)
                .expect("in RAM");
            let total = HDR_LEN + frame.len();
            let piece = total.div_ceil(pieces);
            let bufs: Vec<(u64, u32, bool)> = (0..total)
                .step_by(piece)
                .map(|at| (BIG_TX + at as u64, piece.min(total - at) as u32, false))
                .collect();
            let head = self.tx.indirect(&mut mem, RAM_BASE + 0x1_f000, &bufs);
            self.tx.publish(&mut mem, head);
        }
        wr(&mut self.t, mmio::QUEUE_NOTIFY, u32::from(net::TX));
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        self.t.process(&mut mem);
    }

    /// Posts `n` receive buffers of `len` bytes from the large receive
    /// area, each in two pieces (two descriptors).
    fn post_big_rx(&mut self, n: usize, len: u32) {
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        for k in 0..n as u64 {
            let at = BIG_RX + k * u64::from(len);
            let half = len / 2;
            let head = self.rx.chain(
                &mut mem,
                &[(at, half, true), (at + u64::from(half), len - half, true)],
            );
            self.rx.publish(&mut mem, head);
            self.posted.push_back((head, at));
        }
    }
}

/// A network of three VMs: vm0 and vm2 negotiated every offload, vm1 none.
fn mixed_lan() -> (Switch, Net) {
    let mut vms: Vec<Vm> = (0..3)
        .map(|i| Vm::new(net::derive_mac(&format!("vm{i}"), "lan")))
        .collect();
    vms[0].probe_with(true, ALL);
    vms[1].probe(true);
    vms[2].probe_with(true, ALL);
    let net = Net {
        vms,
        refused: 0,
        stopped: Vec::new(),
        resets_during_delivery: None,
    };
    (Switch::new(3), net)
}

/// vm0 sends `frame` to an unknown address, so it floods to vm1 and vm2;
/// the switch serves it and returns vm0's buffer.
fn flood(sw: &mut Switch, net: &mut Net, hdr: [u8; HDR_LEN], frame: &[u8], pieces: usize) {
    net.vms[0].send_big(hdr, frame, pieces);
    assert!(net.vms[0].t.device_mut().take_tx_kick());
    assert_eq!(sw.transmit(0, net).taken, 1);
    assert_eq!(net.vms[0].tx_done(), 1);
}

#[test]
fn the_device_offers_the_offloads_and_each_segmentation_needs_its_checksum() {
    let mut t = Transport::new(NetDevice::new(Mac([2, 0, 0, 0, 0, 1])));
    assert_eq!(device_features(&mut t) & ALL, ALL);
    let base = feature::VERSION_1;
    assert!(!negotiate(&mut t, base | net::F_GUEST_TSO4));
    assert!(!negotiate(&mut t, base | net::F_HOST_TSO4));
    assert!(!negotiate(
        &mut t,
        base | net::F_HOST_TSO4 | net::F_GUEST_CSUM
    ));
    assert!(negotiate(&mut t, base | net::F_HOST_TSO4 | net::F_CSUM));
    assert!(negotiate(
        &mut t,
        base | net::F_GUEST_TSO4 | net::F_GUEST_CSUM
    ));
    assert!(negotiate(&mut t, base | ALL));
    driver_ok(&mut t);
    assert_eq!(t.device().negotiated() & ALL, ALL);
    // A reset forgets them.
    wr(&mut t, mmio::STATUS, 0);
    assert_eq!(t.device().negotiated(), 0);
}

#[test]
fn a_peer_that_took_the_offloads_gets_the_frame_and_header_as_sent() {
    let (mut sw, mut net) = mixed_lan();
    net.vms[1].post_rx(32, 0x600);
    net.vms[2].post_big_rx(1, 0x1_0100);
    let (dst, src) = (Mac([2, 9, 9, 9, 9, 9]), mac(&net, 0));
    // The largest segmentation frame: a whole 64 KiB IPv4 packet, in the
    // 19 pieces Linux sends at most.
    let most = 0xffff - 20 - 32;
    let (hdr, big) = tcp4(dst, src, &payload(most, 1), false, 0x18, true);
    assert_eq!(big.len(), 14 + 0xffff);
    flood(&mut sw, &mut net, hdr, &big, 19);
    let got = net.vms[2].received_with_headers();
    let mut want_hdr = hdr;
    want_hdr[10] = 1;
    assert_eq!(got, vec![Some((want_hdr, big.clone()))]);
    // vm1 took no offload: 46 segments, 32 buffers, so the rest dropped.
    let segs = delivered(net.vms[1].received());
    assert_eq!(segs.len(), 32);
    assert_eq!(sw.counters(1).rx_dropped, 1);
    assert_eq!(sw.counters(2).rx_frames, 1);
    // A frame that only leaves its checksum: the same header, the bytes
    // as sent (the pseudo-header sum still in the field).
    net.vms[2].post_big_rx(1, 0x800);
    let (hdr, small) = tcp4(dst, src, &payload(100, 2), true, 0x18, false);
    net.vms[1].post_rx(1, 0x600);
    flood(&mut sw, &mut net, hdr, &small, 2);
    let mut want_hdr = hdr;
    want_hdr[10] = 1;
    assert_eq!(
        net.vms[2].received_with_headers(),
        vec![Some((want_hdr, small))]
    );
    assert!(net.vms.iter().all(|vm| vm.t.is_live()));
}

#[test]
fn a_peer_without_offloads_gets_mtu_sized_segments_with_every_field_right() {
    for (vlan, len) in [(false, 4000), (true, 30 * usize::from(MSS) + 1), (false, 1)] {
        let (mut sw, mut net) = mixed_lan();
        net.vms[1].post_rx(32, 0x600);
        net.vms[2].post_big_rx(1, 0xc000);
        let (dst, src) = (Mac([2, 9, 9, 9, 9, 9]), mac(&net, 0));
        let data = payload(len, len as u8);
        // ACK, PSH, FIN and CWR: PSH and FIN belong to the last segment,
        // CWR to the first.
        let (hdr, frame) = tcp4(dst, src, &data, vlan, 0x80 | 0x10 | 0x08 | 0x01, true);
        flood(&mut sw, &mut net, hdr, &frame, 3);
        let segs: Vec<Segment> = delivered(net.vms[1].received())
            .iter()
            .map(|f| {
                assert!(f.len() <= MAX_FRAME, "{} bytes", f.len());
                let options = if vlan { 18 + 40 } else { 14 + 40 };
                assert_eq!(
                    f[options..options + 12],
                    TCP_OPTIONS,
                    "the options ride along"
                );
                assert_eq!(f[..12], frame[..12], "the Ethernet addresses");
                verify(f)
            })
            .collect();
        let count = len.div_ceil(usize::from(MSS));
        assert_eq!(segs.len(), count, "{len} bytes");
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s.id, 0x1234u16.wrapping_add(i as u16));
            let at = i * usize::from(MSS);
            assert_eq!(s.seq, 0xffff_f000u32.wrapping_add(at as u32));
            let last = i + 1 == count;
            let want = 0x10 | if i == 0 { 0x80 } else { 0 } | if last { 0x09 } else { 0 };
            assert_eq!(s.flags, want, "segment {i}");
            assert_eq!(s.payload, data[at..(at + usize::from(MSS)).min(len)]);
        }
        // The peer with offloads got the one frame.
        assert_eq!(net.vms[2].received_with_headers().len(), 1);
        assert_eq!(sw.counters(1).rx_frames, 1, "counted as one frame");
    }
}

#[test]
fn a_peer_without_the_checksum_offload_gets_the_checksum_filled_in() {
    let (mut sw, mut net) = mixed_lan();
    net.vms[1].post_rx(5, 0x600);
    net.vms[2].post_big_rx(4, 0x800);
    let (dst, src) = (Mac([2, 9, 9, 9, 9, 9]), mac(&net, 0));
    for (len, vlan) in [(0, false), (1, true), (1000, false), (1448, false)] {
        let (hdr, frame) = tcp4(dst, src, &payload(len, 3), vlan, 0x18, false);
        flood(&mut sw, &mut net, hdr, &frame, 2);
        let got = delivered(net.vms[1].received());
        assert_eq!(got.len(), 1);
        let seg = verify(&got[0]);
        assert_eq!(seg.payload, payload(len, 3));
        // Only the checksum field differs from what was sent.
        let at = usize::from(u16::from_le_bytes([hdr[6], hdr[7]])) + 16;
        assert_eq!(got[0][..at], frame[..at]);
        assert_eq!(got[0][at + 2..], frame[at + 2..]);
        assert_eq!(net.vms[2].received_with_headers().len(), 1);
    }
    // A UDP datagram whose checksum comes out zero goes out as 0xffff: no
    // payload, ports 0, length 8, and in the checksum field the sum that
    // makes the total 0xffff.
    let mut udp = frame(dst, src, 0, 0);
    udp.extend([
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ]);
    udp.extend([0, 0, 0, 0, 0, 8]);
    udp.extend((0xffffu16 - 8).to_be_bytes());
    let mut hdr = [0u8; HDR_LEN];
    hdr[0] = net::HDR_F_NEEDS_CSUM;
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
    flood(&mut sw, &mut net, hdr, &udp, 1);
    let got = delivered(net.vms[1].received());
    assert_eq!(got[0][40..], [0xff, 0xff], "zero written as 0xffff");
    assert_eq!(got[0][..40], udp[..40]);
}

#[test]
fn offload_requests_not_negotiated_or_not_fitting_the_frame_are_dropped_at_the_sender() {
    let (mut sw, mut net) = mixed_lan();
    net.vms[1].post_rx(8, 0x600);
    net.vms[2].post_big_rx(2, 0x8000);
    let (dst, src) = (Mac([2, 9, 9, 9, 9, 9]), mac(&net, 0));
    let data = payload(4000, 5);
    let good = tcp4(dst, src, &data, false, 0x10, true);
    let with = |f: &dyn Fn(&mut [u8; HDR_LEN], &mut Vec<u8>)| -> Sent {
        let (mut h, mut fr) = good.clone();
        f(&mut h, &mut fr);
        (h, fr)
    };
    let l3 = 14;
    let cases: Vec<(&str, Sent)> = vec![
        ("no checksum request", with(&|h, _| h[0] = 0)),
        ("UDP segmentation", with(&|h, _| h[1] = 3)),
        ("IPv6 segmentation", with(&|h, _| h[1] = 4)),
        ("ECN segmentation", with(&|h, _| h[1] = 0x81)),
        (
            "checksum past the end",
            with(&|h, fr| {
                let end = (fr.len() - 1) as u16;
                h[6..8].copy_from_slice(&end.to_le_bytes());
            }),
        ),
        (
            "an IPv6 frame",
            with(&|_, fr| fr[12..14].copy_from_slice(&[0x86, 0xdd])),
        ),
        ("IPv4 version field", with(&|_, fr| fr[l3] = 0x65)),
        ("a short IPv4 header", with(&|_, fr| fr[l3] = 0x44)),
        ("UDP in IPv4", with(&|_, fr| fr[l3 + 9] = 17)),
        ("a fragment", with(&|_, fr| fr[l3 + 6] = 0x20)),
        ("a short TCP header", with(&|_, fr| fr[l3 + 20 + 12] = 0x40)),
        ("no payload", with(&|_, fr| fr.truncate(14 + 20 + 32))),
        ("a zero segment size", with(&|h, _| h[4..6].fill(0))),
        (
            "segments over the MTU",
            with(&|h, _| {
                h[4..6].copy_from_slice(&(1500u16 - 20 - 32 + 1).to_le_bytes());
            }),
        ),
        (
            "headers over the frame",
            with(&|_, fr| {
                fr.truncate(14 + 20 + 20);
                fr[l3 + 20 + 12] = 0xf0;
            }),
        ),
        (
            "over 64 KiB",
            with(&|_, fr| fr.resize(net::MAX_GSO_FRAME + 1, 0)),
        ),
        (
            "a plain frame over the MTU",
            with(&|h, fr| {
                h[1] = 0;
                fr.truncate(MAX_FRAME + 1);
            }),
        ),
    ];
    for (i, (what, (h, fr))) in cases.iter().enumerate() {
        flood(&mut sw, &mut net, *h, fr, 4);
        assert_eq!(sw.counters(0).tx_dropped, i as u64 + 1, "{what}");
        assert!(net.vms[1].received().is_empty(), "{what}");
        assert!(net.vms[2].received_with_headers().is_empty(), "{what}");
    }
    // A sender that negotiated no offload may not ask for one.
    let (h, fr) = tcp4(dst, mac(&net, 1), &data[..100], false, 0x10, false);
    net.vms[1].send_big(h, &fr, 1);
    assert_eq!(sw.transmit(1, &mut net).taken, 1);
    assert_eq!(sw.counters(1).tx_dropped, 1);
    // Nor one that has the checksum offload only ask for segmentation.
    let mut vm = Vm::new(Mac([2, 8, 8, 8, 8, 8]));
    vm.probe_with(true, net::F_CSUM);
    net.vms.push(vm);
    let mut sw = Switch::new(4);
    let (h, fr) = tcp4(dst, Mac([2, 8, 8, 8, 8, 8]), &data, false, 0x10, true);
    net.vms[3].send_big(h, &fr, 1);
    assert_eq!(sw.transmit(3, &mut net).taken, 1);
    assert_eq!(sw.counters(3).tx_dropped, 1);
    // And the good frame still goes through, everyone live.
    flood(&mut sw, &mut net, good.0, &good.1, 4);
    assert_eq!(net.vms[2].received_with_headers().len(), 1);
    assert_eq!(delivered(net.vms[1].received()).len(), 3);
    assert!(net.vms.iter().all(|vm| vm.t.is_live()));
    assert_eq!(net.refused, 0);
}

#[test]
fn large_frames_count_against_a_byte_budget_per_call() {
    let (mut sw, mut net) = mixed_lan();
    let (dst, src) = (mac(&net, 2), mac(&net, 0));
    let (hdr, frame) = tcp4(dst, src, &payload(60_000, 6), false, 0x10, true);
    // Ten chains over the same buffer.
    {
        let vm = &mut net.vms[0];
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
        mem.write(Ipa(BIG_TX), &hdr).expect("in RAM");
        mem.write(Ipa(BIG_TX + HDR_LEN as u64), &frame)
            .expect("in RAM");
        for _ in 0..10 {
            let head = vm
                .tx
                .chain(&mut mem, &[(BIG_TX, (HDR_LEN + frame.len()) as u32, false)]);
            vm.tx.publish(&mut mem, head);
        }
    }
    let per_call = crate::switch::TX_BYTE_BUDGET.div_ceil(frame.len());
    let first = sw.transmit(0, &mut net);
    assert_eq!((first.taken, first.more), (per_call, true));
    let rest = sw.transmit(0, &mut net);
    assert_eq!((rest.taken, rest.more), (10 - per_call, false));
    // vm2 posted nothing: all dropped there, none lost at the sender.
    assert_eq!(sw.counters(2).rx_dropped, 10);
    assert_eq!(net.vms[0].tx_done(), 10);
}

impl Vm {
    /// The frames received since the last call into mergeable buffers:
    /// each header and the frame its `num_buffers` buffers hold.
    fn received_merged(&mut self) -> Vec<([u8; HDR_LEN], Vec<u8>)> {
        let mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        let used = self.rx.take_used(&mem);
        let mut out: Vec<([u8; HDR_LEN], Vec<u8>)> = Vec::new();
        let mut left = 0u16;
        for (id, len) in used {
            let (head, at) = self.posted.pop_front().expect("a posted buffer");
            assert_eq!(id, u32::from(head), "buffers are used in order");
            let mut b = vec![0u8; len as usize];
            mem.read(Ipa(at), &mut b).expect("in RAM");
            if left == 0 {
                let hdr: [u8; HDR_LEN] = b[..HDR_LEN].try_into().expect("a header");
                left = u16::from_le_bytes([hdr[10], hdr[11]]);
                assert!(left >= 1);
                out.push((hdr, b[HDR_LEN..].to_vec()));
            } else {
                out.last_mut().expect("a frame").1.extend(b);
            }
            left -= 1;
        }
        assert_eq!(left, 0, "no frame cut short");
        out
    }
}

#[test]
fn mergeable_buffers_take_a_frame_across_several_or_not_at_all() {
    let (mut sw, mut net) = mixed_lan();
    let merged = ALL | net::F_MRG_RXBUF;
    net.vms[2] = Vm::new(net::derive_mac("vm2", "lan"));
    net.vms[2].probe_with(true, merged);
    net.vms[1].post_rx(32, 0x600);
    let (dst, src) = (mac(&net, 2), mac(&net, 0));
    let data = payload(0xffff - 52, 7);
    let (hdr, big) = tcp4(dst, src, &data, false, 0x10, true);
    // 17 buffers of 4 KiB hold it; 10 do not, and none is used.
    net.vms[2].post_big_rx(10, 0x1000);
    flood(&mut sw, &mut net, hdr, &big, 19);
    assert!(net.vms[2].received_merged().is_empty());
    assert_eq!(sw.counters(2).rx_dropped, 1);
    // With ten more, the same buffers (from the first) take it.
    let more = net.vms[2].posted.len();
    {
        let vm = &mut net.vms[2];
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
        for k in 0..10u64 {
            let at = BIG_RX + (more as u64 + k) * 0x1000;
            let head = vm.rx.chain(&mut mem, &[(at, 0x1000, true)]);
            vm.rx.publish(&mut mem, head);
            vm.posted.push_back((head, at));
        }
    }
    flood(&mut sw, &mut net, hdr, &big, 19);
    let got = net.vms[2].received_merged();
    let mut want = hdr;
    want[10] = 17;
    assert_eq!(got, vec![(want, big)]);
    assert_eq!(net.vms[2].posted.len(), 3, "three buffers left");
    // A small frame takes one buffer.
    let (hdr, small) = tcp4(dst, src, &data[..10], false, 0x10, false);
    flood(&mut sw, &mut net, hdr, &small, 1);
    let mut want = hdr;
    want[10] = 1;
    assert_eq!(net.vms[2].received_merged(), vec![(want, small)]);
    assert!(net.vms[2].t.is_live());
}

#[test]
fn segments_for_a_mergeable_peer_without_segmentation_span_small_buffers() {
    let (mut sw, mut net) = mixed_lan();
    net.vms[1] = Vm::new(net::derive_mac("vm1", "lan"));
    net.vms[1].probe_with(true, net::F_MRG_RXBUF);
    net.vms[2].post_big_rx(1, 0x8000);
    // 512-byte buffers: each 1,514-byte segment (and header) fills four.
    net.vms[1].post_big_rx(16, 0x200);
    let (dst, src) = (Mac([2, 9, 9, 9, 9, 9]), mac(&net, 0));
    let data = payload(3 * usize::from(MSS) - 5, 8);
    let (hdr, frame) = tcp4(dst, src, &data, false, 0x18, true);
    flood(&mut sw, &mut net, hdr, &frame, 3);
    let got = net.vms[1].received_merged();
    assert_eq!(got.len(), 3);
    let mut joined = Vec::new();
    for (i, (h, f)) in got.iter().enumerate() {
        let buffers = (HDR_LEN + f.len()).div_ceil(0x200) as u8;
        assert_eq!(
            h[..],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, buffers, 0],
            "segment {i}"
        );
        let s = verify(f);
        assert_eq!(
            s.seq,
            0xffff_f000u32.wrapping_add(i as u32 * u32::from(MSS))
        );
        joined.extend(s.payload);
    }
    assert_eq!(joined, data);
}

#[test]
fn a_checksum_filled_in_may_straddle_two_mergeable_buffers() {
    let (mut sw, mut net) = mixed_lan();
    net.vms[1] = Vm::new(net::derive_mac("vm1", "lan"));
    net.vms[1].probe_with(true, net::F_MRG_RXBUF);
    // With the 12-byte header first, the TCP checksum (frame bytes 50 and
    // 51) is stream bytes 62 and 63: the end of the first 63-byte buffer
    // and the start of the second.
    {
        let vm = &mut net.vms[1];
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut vm.ram);
        for k in 0..16u64 {
            let at = BIG_RX + k * 0x40;
            let head = vm.rx.chain(&mut mem, &[(at, 63, true)]);
            vm.rx.publish(&mut mem, head);
            vm.posted.push_back((head, at));
        }
    }
    let (dst, src) = (Mac([2, 9, 9, 9, 9, 9]), mac(&net, 0));
    let (hdr, frame) = tcp4(dst, src, &payload(300, 9), false, 0x18, false);
    flood(&mut sw, &mut net, hdr, &frame, 2);
    let got = net.vms[1].received_merged();
    assert_eq!(got.len(), 1);
    let buffers = (HDR_LEN + frame.len()).div_ceil(63) as u8;
    assert_eq!(got[0].0[10], buffers);
    let seg = verify(&got[0].1);
    assert_eq!(seg.payload, payload(300, 9));
    assert_eq!(got[0].1[..50], frame[..50]);
    assert_eq!(got[0].1[52..], frame[52..]);
}
