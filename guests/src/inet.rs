//! The packets the `netecho` guest answers, as pure functions over byte
//! slices (host-tested): ARP requests for its address, ICMP echo requests
//! (ping) and UDP datagrams to its port, each checked before it is
//! answered.
//!
//! A frame is Ethernet II without a VLAN tag. An IPv4 packet must have a
//! valid header checksum, a total length that fits the frame, and no
//! fragmentation (netecho reassembles nothing); an ICMP message and a UDP
//! datagram must carry a checksum that verifies (the Internet checksum of
//! RFC 1071, over the UDP pseudo-header for UDP). A UDP checksum of zero
//! ("none", legal for IPv4) is answered but counted apart: Linux always
//! sends one, so a zero there means the path lost it. Replies are built
//! whole, with their own checksums, never patched from the request.
//!
//! [`answer`] is the whole decision: what a frame is, and the reply to
//! send, if any.

/// An Ethernet address.
pub type Mac = [u8; 6];
/// An IPv4 address.
pub type Ip = [u8; 4];

/// Bytes of an Ethernet header.
pub const ETH_HEADER: usize = 14;
/// Ethernet type of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethernet type of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Bytes of an ARP message for IPv4 over Ethernet.
pub const ARP_LEN: usize = 28;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Bytes of an IPv4 header without options.
pub const IPV4_HEADER: usize = 20;
/// Bytes of a UDP header.
pub const UDP_HEADER: usize = 8;
/// The UDP payload that ends a `netecho` run: it is echoed like any other
/// datagram, then the guest gives its verdict.
pub const STOP: &[u8] = stratum_abi::workload::UDP_ECHO_STOP;
/// The largest frame answered (an MTU of 1500 plus the Ethernet header).
pub const MAX_FRAME: usize = 1514;

/// Who this host is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Me {
    /// Its Ethernet address.
    pub mac: Mac,
    /// Its IPv4 address.
    pub ip: Ip,
    /// The UDP port datagrams are echoed on.
    pub port: u16,
}

/// What a received frame was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An ARP request for this host's address: answered.
    ArpRequest,
    /// An ICMP echo request to this host: answered with an echo reply of
    /// the same identifier, sequence number and data.
    Ping,
    /// A UDP datagram to this host's port: echoed. `checked` is false when
    /// it carried no checksum (zero).
    Udp {
        /// Bytes of payload.
        payload: usize,
        /// Whether it carried a checksum.
        checked: bool,
    },
    /// The [`STOP`] datagram: echoed, and the run ends.
    Stop,
    /// Something this host does not answer (another address, another
    /// protocol or port, an ARP reply, a fragment): not an error.
    Ignored,
    /// A frame that claims to be one of the above but does not hold
    /// together: a bad checksum or length. Counted as a failure.
    Bad(Flaw),
}

/// Why a frame did not hold together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flaw {
    /// Shorter than the headers it announces.
    Truncated,
    /// The IPv4 header's checksum does not verify.
    Ipv4Checksum,
    /// The IPv4 total length or header length is impossible.
    Ipv4Length,
    /// The UDP length disagrees with the IPv4 packet's.
    UdpLength,
    /// The UDP checksum does not verify.
    UdpChecksum,
    /// The ICMP checksum does not verify.
    IcmpChecksum,
}

/// The ones'-complement sum of `data` as big-endian 16-bit words (an odd
/// last byte is padded with zero), added to `sum`, not folded.
pub fn sum(mut sum: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// `sum` folded to 16 bits and complemented: the checksum to store (or
/// zero, over data that already holds its checksum, when it verifies).
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 pseudo-header's sum for `proto` and `len` bytes.
fn pseudo(src: Ip, dst: Ip, proto: u8, len: usize) -> u32 {
    sum(sum(0, &src), &dst) + u32::from(proto) + len as u32
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Writes an Ethernet header from `me` to `to` of `ethertype`.
fn eth(out: &mut [u8], me: &Me, to: &[u8], ethertype: u16) {
    out[..6].copy_from_slice(to);
    out[6..12].copy_from_slice(&me.mac);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Writes an IPv4 header (no options, TTL 64, not fragmented) for
/// `payload` bytes of `proto` from `me` to `to`, with its checksum.
fn ipv4(out: &mut [u8], me: &Me, to: Ip, proto: u8, payload: usize, id: u16) {
    let h = &mut out[ETH_HEADER..ETH_HEADER + IPV4_HEADER];
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&((IPV4_HEADER + payload) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    h[8] = 64;
    h[9] = proto;
    h[10..12].fill(0);
    h[12..16].copy_from_slice(&me.ip);
    h[16..20].copy_from_slice(&to);
    let c = finish(sum(0, h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Reads `frame`; when it is answered, writes the reply into `out` (at
/// least [`MAX_FRAME`] bytes) and returns its length beside the kind.
/// `id` is the IPv4 identification of an IP reply.
pub fn answer(frame: &[u8], me: &Me, id: u16, out: &mut [u8]) -> (Kind, usize) {
    if frame.len() < ETH_HEADER || frame.len() > MAX_FRAME || out.len() < MAX_FRAME {
        return (Kind::Ignored, 0);
    }
    let to_me = frame[..6] == me.mac || frame[..6] == [0xff; 6];
    if !to_me {
        return (Kind::Ignored, 0);
    }
    match be16(frame, 12) {
        ETHERTYPE_ARP => arp(&frame[ETH_HEADER..], me, out),
        ETHERTYPE_IPV4 => ip(frame, me, id, out),
        _ => (Kind::Ignored, 0),
    }
}

/// An ARP message: a request for `me.ip` is answered.
fn arp(a: &[u8], me: &Me, out: &mut [u8]) -> (Kind, usize) {
    if a.len() < ARP_LEN {
        return (Kind::Bad(Flaw::Truncated), 0);
    }
    // Ethernet (1), IPv4, 6- and 4-byte addresses, a request (1).
    let ipv4_over_ethernet =
        be16(a, 0) == 1 && be16(a, 2) == ETHERTYPE_IPV4 && a[4] == 6 && a[5] == 4;
    if !ipv4_over_ethernet || be16(a, 6) != 1 || a[24..28] != me.ip {
        return (Kind::Ignored, 0);
    }
    let (sender_mac, sender_ip) = (&a[8..14], &a[14..18]);
    eth(out, me, sender_mac, ETHERTYPE_ARP);
    let r = &mut out[ETH_HEADER..ETH_HEADER + ARP_LEN];
    r[..6].copy_from_slice(&a[..6]);
    r[6..8].copy_from_slice(&2u16.to_be_bytes());
    r[8..14].copy_from_slice(&me.mac);
    r[14..18].copy_from_slice(&me.ip);
    r[18..24].copy_from_slice(sender_mac);
    r[24..28].copy_from_slice(sender_ip);
    (Kind::ArpRequest, ETH_HEADER + ARP_LEN)
}

/// An IPv4 packet to `me.ip`: ICMP echo requests and UDP datagrams to
/// `me.port` are answered.
fn ip(frame: &[u8], me: &Me, id: u16, out: &mut [u8]) -> (Kind, usize) {
    let p = &frame[ETH_HEADER..];
    if p.len() < IPV4_HEADER {
        return (Kind::Bad(Flaw::Truncated), 0);
    }
    if p[0] >> 4 != 4 {
        return (Kind::Ignored, 0);
    }
    let header = usize::from(p[0] & 0xf) * 4;
    let total = usize::from(be16(p, 2));
    if header < IPV4_HEADER || total < header {
        return (Kind::Bad(Flaw::Ipv4Length), 0);
    }
    if total > p.len() {
        return (Kind::Bad(Flaw::Truncated), 0);
    }
    if finish(sum(0, &p[..header])) != 0 {
        return (Kind::Bad(Flaw::Ipv4Checksum), 0);
    }
    let fragment = be16(p, 6) & 0x3fff != 0; // more fragments, or an offset
    let src: Ip = [p[12], p[13], p[14], p[15]];
    if p[16..20] != me.ip || fragment {
        return (Kind::Ignored, 0);
    }
    // Ethernet may pad a short packet: only `total` bytes are the packet's.
    let body = &p[header..total];
    let sender_mac = &frame[6..12];
    match p[9] {
        PROTO_ICMP => icmp(body, me, src, sender_mac, id, out),
        PROTO_UDP => udp(body, me, src, sender_mac, id, out),
        _ => (Kind::Ignored, 0),
    }
}

/// An ICMP message: an echo request is answered.
fn icmp(m: &[u8], me: &Me, src: Ip, sender_mac: &[u8], id: u16, out: &mut [u8]) -> (Kind, usize) {
    if m.len() < 8 {
        return (Kind::Bad(Flaw::Truncated), 0);
    }
    if finish(sum(0, m)) != 0 {
        return (Kind::Bad(Flaw::IcmpChecksum), 0);
    }
    if m[0] != 8 || m[1] != 0 {
        return (Kind::Ignored, 0);
    }
    eth(out, me, sender_mac, ETHERTYPE_IPV4);
    ipv4(out, me, src, PROTO_ICMP, m.len(), id);
    let r = &mut out[ETH_HEADER + IPV4_HEADER..ETH_HEADER + IPV4_HEADER + m.len()];
    r.copy_from_slice(m);
    r[0] = 0; // echo reply
    r[2..4].fill(0);
    let c = finish(sum(0, r));
    r[2..4].copy_from_slice(&c.to_be_bytes());
    (Kind::Ping, ETH_HEADER + IPV4_HEADER + m.len())
}

/// A UDP datagram: one to `me.port` is echoed from that port.
fn udp(d: &[u8], me: &Me, src: Ip, sender_mac: &[u8], id: u16, out: &mut [u8]) -> (Kind, usize) {
    if d.len() < UDP_HEADER {
        return (Kind::Bad(Flaw::Truncated), 0);
    }
    if usize::from(be16(d, 4)) != d.len() {
        return (Kind::Bad(Flaw::UdpLength), 0);
    }
    let checked = be16(d, 6) != 0;
    if checked && finish(pseudo(src, me.ip, PROTO_UDP, d.len()) + sum(0, d)) != 0 {
        return (Kind::Bad(Flaw::UdpChecksum), 0);
    }
    let (sport, dport) = (be16(d, 0), be16(d, 2));
    if dport != me.port {
        return (Kind::Ignored, 0);
    }
    let payload = &d[UDP_HEADER..];
    eth(out, me, sender_mac, ETHERTYPE_IPV4);
    ipv4(out, me, src, PROTO_UDP, d.len(), id);
    let r = &mut out[ETH_HEADER + IPV4_HEADER..ETH_HEADER + IPV4_HEADER + d.len()];
    r[..2].copy_from_slice(&me.port.to_be_bytes());
    r[2..4].copy_from_slice(&sport.to_be_bytes());
    r[4..6].copy_from_slice(&(d.len() as u16).to_be_bytes());
    r[6..8].fill(0);
    r[UDP_HEADER..].copy_from_slice(payload);
    let c = match finish(pseudo(me.ip, src, PROTO_UDP, d.len()) + sum(0, r)) {
        0 => 0xffff, // zero would mean "no checksum"
        c => c,
    };
    r[6..8].copy_from_slice(&c.to_be_bytes());
    let kind = if payload == STOP {
        Kind::Stop
    } else {
        Kind::Udp {
            payload: payload.len(),
            checked,
        }
    };
    (kind, ETH_HEADER + IPV4_HEADER + d.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Me = Me {
        mac: [0x02, 0, 0, 0, 0, 0x42],
        ip: [10, 0, 0, 2],
        port: 7,
    };
    const PEER_MAC: Mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
    const PEER_IP: Ip = [10, 0, 0, 1];

    fn ether(dst: Mac, ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn arp_request(target: Ip) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&PEER_MAC);
        a.extend_from_slice(&PEER_IP);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&target);
        ether([0xff; 6], ETHERTYPE_ARP, &a)
    }

    /// An IPv4 packet from the peer to `dst` carrying `body`, as Linux
    /// would build it (checksums right).
    fn ip_packet(dst: Ip, proto: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; IPV4_HEADER];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((IPV4_HEADER + body.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&PEER_IP);
        p[16..20].copy_from_slice(&dst);
        let c = finish(sum(0, &p));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(body);
        ether(ME.mac, ETHERTYPE_IPV4, &p)
    }

    fn udp_datagram(dst: Ip, dport: u16, payload: &[u8]) -> Vec<u8> {
        let len = UDP_HEADER + payload.len();
        let mut d = vec![0u8; UDP_HEADER];
        d[..2].copy_from_slice(&40000u16.to_be_bytes());
        d[2..4].copy_from_slice(&dport.to_be_bytes());
        d[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        d.extend_from_slice(payload);
        let c = finish(pseudo(PEER_IP, dst, PROTO_UDP, len) + sum(0, &d));
        d[6..8].copy_from_slice(&c.to_be_bytes());
        ip_packet(dst, PROTO_UDP, &d)
    }

    fn ping(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![8, 0, 0, 0, 0x12, 0x34, 0, 7];
        m.extend_from_slice(payload);
        let c = finish(sum(0, &m));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        ip_packet(ME.ip, PROTO_ICMP, &m)
    }

    fn run(frame: &[u8]) -> (Kind, Vec<u8>) {
        let mut out = [0u8; MAX_FRAME];
        let (kind, len) = answer(frame, &ME, 99, &mut out);
        (kind, out[..len].to_vec())
    }

    /// What an independent reader makes of a reply: its IPv4 header and
    /// transport checksums verify, and its addresses point back.
    fn check_ip_reply(reply: &[u8], proto: u8) -> &[u8] {
        assert_eq!(&reply[..6], &PEER_MAC);
        assert_eq!(&reply[6..12], &ME.mac);
        assert_eq!(be16(reply, 12), ETHERTYPE_IPV4);
        let p = &reply[ETH_HEADER..];
        assert_eq!(finish(sum(0, &p[..IPV4_HEADER])), 0, "IPv4 checksum");
        assert_eq!(usize::from(be16(p, 2)), p.len());
        assert_eq!(p[9], proto);
        assert_eq!(&p[12..16], &ME.ip);
        assert_eq!(&p[16..20], &PEER_IP);
        assert_eq!(be16(p, 4), 99, "the identification given");
        &p[IPV4_HEADER..]
    }

    #[test]
    fn the_checksum_is_rfc_1071s() {
        // RFC 1071's example words sum to 0xddf2 (folded), checksum 0x220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(0, &data)), !0xddf2);
        // An odd byte counts as the high half of a last word.
        assert_eq!(sum(0, &[0x12]), 0x1200);
        // Data holding its own checksum verifies to zero.
        let mut with = data.to_vec();
        with.extend_from_slice(&finish(sum(0, &data)).to_be_bytes());
        assert_eq!(finish(sum(0, &with)), 0);
    }

    #[test]
    fn an_arp_request_for_our_address_gets_our_mac() {
        let (kind, r) = run(&arp_request(ME.ip));
        assert_eq!(kind, Kind::ArpRequest);
        assert_eq!(r.len(), ETH_HEADER + ARP_LEN);
        assert_eq!(&r[..6], &PEER_MAC, "to the asker");
        assert_eq!(be16(&r, 12), ETHERTYPE_ARP);
        let a = &r[ETH_HEADER..];
        assert_eq!(be16(a, 6), 2, "a reply");
        assert_eq!(&a[8..14], &ME.mac);
        assert_eq!(&a[14..18], &ME.ip);
        assert_eq!(&a[18..24], &PEER_MAC);
        assert_eq!(&a[24..28], &PEER_IP);
        // Another address's request, and a truncated one.
        assert_eq!(run(&arp_request([10, 0, 0, 3])).0, Kind::Ignored);
        let mut short = arp_request(ME.ip);
        short.truncate(ETH_HEADER + 20);
        assert_eq!(run(&short).0, Kind::Bad(Flaw::Truncated));
    }

    #[test]
    fn a_udp_datagram_is_echoed_with_its_own_checksums() {
        for len in [0usize, 1, 2, 17, 1472] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let (kind, r) = run(&udp_datagram(ME.ip, ME.port, &payload));
            assert_eq!(
                kind,
                Kind::Udp {
                    payload: len,
                    checked: true
                }
            );
            let d = check_ip_reply(&r, PROTO_UDP);
            assert_eq!(be16(d, 0), ME.port);
            assert_eq!(be16(d, 2), 40000);
            assert_eq!(usize::from(be16(d, 4)), d.len());
            assert_ne!(be16(d, 6), 0, "a checksum is sent");
            assert_eq!(
                finish(pseudo(ME.ip, PEER_IP, PROTO_UDP, d.len()) + sum(0, d)),
                0,
                "the UDP checksum verifies"
            );
            assert_eq!(&d[UDP_HEADER..], &payload[..]);
        }
    }

    #[test]
    fn a_datagram_whose_checksum_is_wrong_is_bad_not_echoed() {
        let mut f = udp_datagram(ME.ip, ME.port, b"hello");
        let last = f.len() - 1;
        f[last] ^= 0x40;
        assert_eq!(run(&f), (Kind::Bad(Flaw::UdpChecksum), vec![]));
        // A partial checksum left in place (what an offload that was never
        // completed leaves) does not verify either.
        let mut partial = udp_datagram(ME.ip, ME.port, b"hello");
        let at = ETH_HEADER + IPV4_HEADER + 6;
        let pseudo_only = !finish(pseudo(PEER_IP, ME.ip, PROTO_UDP, UDP_HEADER + 5));
        partial[at..at + 2].copy_from_slice(&pseudo_only.to_be_bytes());
        assert_eq!(run(&partial).0, Kind::Bad(Flaw::UdpChecksum));
        // The IPv4 header's checksum is checked first.
        let mut f = udp_datagram(ME.ip, ME.port, b"hello");
        f[ETH_HEADER + 8] = 63; // the TTL, not covered by the UDP checksum
        assert_eq!(run(&f).0, Kind::Bad(Flaw::Ipv4Checksum));
    }

    #[test]
    fn a_datagram_without_a_checksum_is_echoed_but_counted_apart() {
        let mut f = udp_datagram(ME.ip, ME.port, b"abc");
        let at = ETH_HEADER + IPV4_HEADER + 6;
        f[at..at + 2].fill(0);
        let (kind, r) = run(&f);
        assert_eq!(
            kind,
            Kind::Udp {
                payload: 3,
                checked: false
            }
        );
        let d = check_ip_reply(&r, PROTO_UDP);
        assert_eq!(&d[UDP_HEADER..], b"abc");
    }

    #[test]
    fn the_stop_datagram_is_echoed_and_named() {
        let (kind, r) = run(&udp_datagram(ME.ip, ME.port, STOP));
        assert_eq!(kind, Kind::Stop);
        assert_eq!(&check_ip_reply(&r, PROTO_UDP)[UDP_HEADER..], STOP);
    }

    #[test]
    fn a_ping_gets_an_echo_reply_with_its_data() {
        let (kind, r) = run(&ping(b"0123456789abcdefXYZ"));
        assert_eq!(kind, Kind::Ping);
        let m = check_ip_reply(&r, PROTO_ICMP);
        assert_eq!(m[0], 0, "an echo reply");
        assert_eq!(finish(sum(0, m)), 0, "the ICMP checksum verifies");
        assert_eq!(
            &m[4..8],
            &[0x12, 0x34, 0, 7],
            "identifier and sequence kept"
        );
        assert_eq!(&m[8..], b"0123456789abcdefXYZ");
        let mut bad = ping(b"x");
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(run(&bad).0, Kind::Bad(Flaw::IcmpChecksum));
    }

    #[test]
    fn frames_for_others_are_ignored() {
        // Another host's IP, another port, another protocol, another MAC.
        assert_eq!(
            run(&udp_datagram([10, 0, 0, 9], ME.port, b"x")).0,
            Kind::Ignored
        );
        assert_eq!(run(&udp_datagram(ME.ip, 8, b"x")).0, Kind::Ignored);
        assert_eq!(run(&ip_packet(ME.ip, 6, &[0; 20])).0, Kind::Ignored);
        let mut f = udp_datagram(ME.ip, ME.port, b"x");
        f[0] = 0x04;
        assert_eq!(run(&f).0, Kind::Ignored);
        assert_eq!(run(&ether(ME.mac, 0x86dd, &[0; 40])).0, Kind::Ignored);
        // A fragment is not reassembled.
        let mut frag = udp_datagram(ME.ip, ME.port, b"x");
        frag[ETH_HEADER + 6] = 0x20; // more fragments
        frag[ETH_HEADER + 10..ETH_HEADER + 12].fill(0);
        let c = finish(sum(0, &frag[ETH_HEADER..ETH_HEADER + IPV4_HEADER]));
        frag[ETH_HEADER + 10..ETH_HEADER + 12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(run(&frag).0, Kind::Ignored);
        // Too short for Ethernet, or longer than the MTU allows.
        assert_eq!(run(&[0; 10]).0, Kind::Ignored);
        assert_eq!(run(&[0; MAX_FRAME + 1]).0, Kind::Ignored);
    }

    #[test]
    fn impossible_lengths_are_bad() {
        // The IPv4 total length runs past the frame.
        let mut f = udp_datagram(ME.ip, ME.port, b"hello");
        f.truncate(f.len() - 2);
        assert_eq!(run(&f).0, Kind::Bad(Flaw::Truncated));
        // The UDP length disagrees with the IPv4 packet's.
        let mut d = vec![0u8; UDP_HEADER + 4];
        d[2..4].copy_from_slice(&ME.port.to_be_bytes());
        d[4..6].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            run(&ip_packet(ME.ip, PROTO_UDP, &d)).0,
            Kind::Bad(Flaw::UdpLength)
        );
        // A header length under 20 bytes.
        let mut f = udp_datagram(ME.ip, ME.port, b"x");
        f[ETH_HEADER] = 0x44;
        assert_eq!(run(&f).0, Kind::Bad(Flaw::Ipv4Length));
        // Ethernet padding after a short packet is not part of it.
        let mut padded = udp_datagram(ME.ip, ME.port, b"pad");
        padded.resize(60, 0xee);
        let (kind, r) = run(&padded);
        assert_eq!(
            kind,
            Kind::Udp {
                payload: 3,
                checked: true
            }
        );
        assert_eq!(&check_ip_reply(&r, PROTO_UDP)[UDP_HEADER..], b"pad");
    }
}
