//! `netecho`: a UDP echo host on a virtual network, its NIC driven by the
//! third-party `virtio-drivers` crate (not our code): the bare-metal end
//! of the Linux ↔ bare-metal virtio-net test.
//!
//! It finds its virtio-net device (DeviceID 1) among `virt`'s virtio-mmio
//! transports and hands it to `virtio_drivers`' `VirtIONet`, which
//! negotiates no offload (only the MAC, link status, `VERSION_1`,
//! indirect descriptors and `EVENT_IDX`): so every checksum in what it
//! receives must be complete, and the hypervisor's switch completes the
//! ones Linux leaves to its NIC. The frames are answered by
//! [`stratum_guests::inet`]: ARP requests for its address, pings, and UDP
//! datagrams to its port, which are echoed; each is checked first (IPv4
//! header, ICMP and UDP checksums, lengths). It also checks each receive
//! header: no checksum or segmentation flag (the driver negotiated
//! neither) and `num_buffers` 1.
//!
//! The run ends with the datagram `netecho: stop` (echoed like any other),
//! then the tally: `netecho: D datagrams (B payload bytes) echoed, P pings
//! and A ARP requests answered, I frames ignored, U datagrams without a
//! checksum, X bad frames, H bad receive headers`, and the verdict:
//! `STRATUM-TEST PASS netecho` when no frame was bad, every receive header
//! was right and every datagram carried a checksum (all of them come from
//! Linux, which always sends one), FAIL otherwise. The first few bad
//! frames are printed as they come.
//!
//! Command line (`key=value` words): `ip` (its IPv4 address, default
//! `10.0.0.2`), `port` (the UDP port it echoes, default 7).
//!
//! Waiting, interrupts and memory are the shared ones of
//! [`stratum_guests::virtio`]: the driver is polled (`receive`), and when
//! it has nothing the vCPU sleeps in WFI until the transport's interrupt.
//! `VirtIONet` allocates its receive buffers once and a transmit buffer
//! per frame, dropped once sent, which the heap takes back.
#![no_std]
#![no_main]

use stratum_guests::inet::{self, Flaw, Kind, MAX_FRAME, Me};
use stratum_guests::virtio::{self, DEVICE_ID_NET, GuestHal, Transport};
use stratum_guests::{Checks, args, fdt, println};
use virtio_drivers::Error as VirtioError;
use virtio_drivers::device::net::{TxBuffer, VirtIONet};

stratum_guests::entry!("netecho", main);

/// Receive buffers posted (the queue size).
const QUEUE: usize = 16;
/// Bytes of each receive buffer: the 12-byte header and an MTU-sized
/// frame fit (the driver's minimum is 1526).
const RX_BUFFER: usize = 2048;
/// Bad frames printed one by one; the rest are only counted.
const SHOWN: u64 = 8;

/// What the run saw.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    datagrams: u64,
    bytes: u64,
    pings: u64,
    arps: u64,
    ignored: u64,
    unchecked: u64,
    bad: u64,
    bad_headers: u64,
}

/// `a.b.c.d`.
fn parse_ip(s: &str) -> Option<inet::Ip> {
    let mut ip = [0u8; 4];
    let mut parts = s.split('.');
    for b in &mut ip {
        *b = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(ip)
}

/// Whether a receive header is what a driver without offloads may get:
/// no flags, no segmentation, one buffer.
fn header_ok(h: &[u8]) -> bool {
    h.len() >= 12 && h[0] == 0 && h[1] == 0 && h[10..12] == [1, 0]
}

fn main(dtb: usize) -> ! {
    let cmdline = match fdt::locate(dtb) {
        Ok((_, dt)) => dt.bootargs.unwrap_or(""),
        Err(e) => stratum_guests::fail(format_args!("no usable device tree: {e}")),
    };
    let ip_word = args::value(cmdline, "ip").unwrap_or("10.0.0.2");
    let ip = parse_ip(ip_word)
        .unwrap_or_else(|| stratum_guests::fail(format_args!("ip={ip_word}: not an IPv4 address")));
    let port = args::number(cmdline, "port", 7)
        .ok()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
        .unwrap_or_else(|| stratum_guests::fail("port: not a number from 1 to 65535"));

    let virtio::Opened { n, transport, gic } = virtio::open(dtb, DEVICE_ID_NET, "network");
    let mut net = match VirtIONet::<GuestHal, Transport, QUEUE>::new(transport, RX_BUFFER) {
        Ok(d) => d,
        Err(e) => stratum_guests::fail(format_args!("network device init: {e}")),
    };
    let me = Me {
        mac: net.mac_address(),
        ip,
        port,
    };
    let [a, b, c, d, e, f] = me.mac;
    println!(
        "netecho: transport {n}, MAC {a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}, IP {ip_word}, echoing UDP port {port}"
    );

    let mut t = Tally::default();
    let mut out = [0u8; MAX_FRAME];
    let mut id: u16 = 0;
    loop {
        let seen = virtio::irqs();
        let rx = match net.receive() {
            Ok(rx) => rx,
            Err(VirtioError::NotReady) => {
                virtio::wait(seen);
                continue;
            }
            Err(e) => stratum_guests::fail(format_args!("receive: {e}")),
        };
        if !header_ok(rx.as_bytes()) {
            t.bad_headers += 1;
            if t.bad_headers <= SHOWN {
                println!(
                    "netecho: receive header {:02x?} (want no flags and one buffer)",
                    &rx.as_bytes()[..12]
                );
            }
        }
        let (kind, len) = inet::answer(rx.packet(), &me, id, &mut out);
        let frame_len = rx.packet_len();
        if let Err(e) = net.recycle_rx_buffer(rx) {
            stratum_guests::fail(format_args!("recycling a receive buffer: {e}"));
        }
        if len > 0 {
            id = id.wrapping_add(1);
            if let Err(e) = net.send(TxBuffer::from(&out[..len])) {
                stratum_guests::fail(format_args!("send ({len} bytes): {e}"));
            }
        }
        match kind {
            Kind::ArpRequest => t.arps += 1,
            Kind::Ping => t.pings += 1,
            Kind::Udp { payload, checked } => {
                t.datagrams += 1;
                t.bytes += payload as u64;
                t.unchecked += u64::from(!checked);
            }
            Kind::Stop => break,
            Kind::Ignored => t.ignored += 1,
            Kind::Bad(flaw) => {
                t.bad += 1;
                if t.bad <= SHOWN {
                    println!(
                        "netecho: bad frame of {frame_len} bytes: {}",
                        describe(flaw)
                    );
                }
            }
        }
    }
    println!(
        "netecho: {} datagrams ({} payload bytes) echoed, {} pings and {} ARP requests answered, {} frames ignored, {} datagrams without a checksum, {} bad frames, {} bad receive headers; {} interrupts, heap {} bytes",
        t.datagrams,
        t.bytes,
        t.pings,
        t.arps,
        t.ignored,
        t.unchecked,
        t.bad,
        t.bad_headers,
        virtio::irqs(),
        virtio::heap_peak()
    );
    virtio::close(&gic);
    let mut checks = Checks::new();
    checks.check("no frame was malformed", t.bad == 0);
    checks.check("every receive header was right", t.bad_headers == 0);
    checks.check("every datagram carried a checksum", t.unchecked == 0);
    checks.finish()
}

/// A flaw in words.
fn describe(flaw: Flaw) -> &'static str {
    match flaw {
        Flaw::Truncated => "shorter than its headers say",
        Flaw::Ipv4Checksum => "the IPv4 header checksum does not verify",
        Flaw::Ipv4Length => "impossible IPv4 lengths",
        Flaw::UdpLength => "the UDP length disagrees with the IPv4 packet's",
        Flaw::UdpChecksum => "the UDP checksum does not verify",
        Flaw::IcmpChecksum => "the ICMP checksum does not verify",
    }
}
