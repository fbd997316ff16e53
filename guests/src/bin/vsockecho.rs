//! `vsockecho`: a vsock echo server driven by the third-party
//! `virtio-drivers` crate (not our code), the bare-metal end of the
//! Linux ↔ bare-metal vsock test.
//!
//! It finds its virtio-vsock device by scanning `virt`'s 32 virtio-mmio
//! transports (`0x0A00_0000 + 0x200·n`) for DeviceID 19, hands it to
//! `virtio_drivers`' `VirtIOSocket` and `VsockConnectionManager`, listens
//! on `port`, and echoes every byte each connection sends back on the same
//! connection. Connections are served one after another, `serve` of them;
//! each ends when the peer shuts it down, and the guest prints
//! `vsockecho: connection N from CID C port P closed: B bytes in K
//! packets echoed` (and a progress line every 512 KiB before). With
//! `notify=CID`, once the connections are served it connects to that
//! CID's `port` itself, sends a line naming its own CID, checks the echo
//! byte for byte and shuts the connection down (the system test uses this
//! to end a second `vsockecho` that an allowed peer must reach while a
//! denied one cannot). Then the verdict: `STRATUM-TEST PASS vsockecho`
//! when every connection was shut down cleanly (not reset) and the
//! notified peer echoed the line, FAIL otherwise.
//!
//! Command line (`key=value` words): `port` (default 1234), `serve`
//! (connections to serve, default 1), `notify` (a CID, default none).
//!
//! Waiting, interrupts and memory are the shared ones of
//! [`stratum_guests::virtio`]: the driver is polled
//! (`VsockConnectionManager::poll`), and when it has nothing the vCPU
//! sleeps in WFI until the transport's interrupt. Transmits are the
//! driver's own: it notifies and spins until the device has consumed the
//! packet, which Stratum's router does before the notify returns unless
//! the peer has no receive buffer yet. The driver's receive buffers and a
//! receive ring per connection come from the heap once, which a guest
//! serving a few connections can afford (it prints the heap it used).
#![no_std]
#![no_main]

extern crate alloc;

use stratum_guests::virtio::{self, DEVICE_ID_VSOCK, GuestHal, Transport};
use stratum_guests::{Checks, args, fdt, println};
use virtio_drivers::Error as VirtioError;
use virtio_drivers::device::socket::{
    DisconnectReason, SocketError, VirtIOSocket, VsockAddr, VsockConnectionManager, VsockEvent,
    VsockEventType,
};

stratum_guests::entry!("vsockecho", main);

/// Bytes of each receive buffer the driver posts (a 44-byte header and up
/// to 4052 bytes of payload: the router splits longer packets).
const RX_BUFFER: usize = 4096;
/// The receive window each connection advertises (`buf_alloc`).
const WINDOW: u32 = 64 * 1024;
/// Bytes moved per `recv`/`send`.
const CHUNK: usize = 4096;
/// A progress line each time a connection's echoed bytes pass a multiple
/// of this.
const PROGRESS: u64 = 512 * 1024;

type Manager = VsockConnectionManager<GuestHal, Transport, RX_BUFFER>;

/// The next event, sleeping in WFI until the device interrupts while
/// there is none.
fn next_event(m: &mut Manager) -> Result<VsockEvent, VirtioError> {
    loop {
        let seen = virtio::irqs();
        if let Some(e) = m.poll()? {
            return Ok(e);
        }
        virtio::wait(seen);
    }
}

/// What one served connection moved.
#[derive(Clone, Copy, Debug, Default)]
struct Served {
    peer: VsockAddr,
    bytes: u64,
    packets: u64,
    clean: bool,
}

/// Sends all of `data` on the connection to `peer`, waiting for credit
/// (events meanwhile may only be credit updates or more data, which stays
/// buffered in the manager).
fn send_all(m: &mut Manager, peer: VsockAddr, port: u32, data: &[u8]) -> Result<(), VirtioError> {
    loop {
        match m.send(peer, port, data) {
            Ok(()) => return Ok(()),
            Err(VirtioError::SocketDeviceError(SocketError::InsufficientBufferSpaceInPeer)) => {
                let e = next_event(m)?;
                if let VsockEventType::Disconnected { .. } = e.event_type {
                    return Err(VirtioError::SocketDeviceError(SocketError::NotConnected));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Moves everything buffered for `peer` back to it.
fn echo_buffered(
    m: &mut Manager,
    peer: VsockAddr,
    port: u32,
    s: &mut Served,
) -> Result<(), VirtioError> {
    let mut buf = [0u8; CHUNK];
    loop {
        let n = match m.recv(peer, port, &mut buf) {
            Ok(n) => n,
            // The peer shut down and its last bytes were read: gone.
            Err(VirtioError::SocketDeviceError(SocketError::NotConnected)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        if send_all(m, peer, port, &buf[..n]).is_err() {
            // The peer went away with bytes in flight.
            return Ok(());
        }
        let before = s.bytes;
        s.bytes += n as u64;
        if s.bytes / PROGRESS != before / PROGRESS {
            println!("vsockecho: {} bytes echoed so far", s.bytes);
        }
    }
}

/// Waits for a connection on `port` and echoes it until the peer shuts it
/// down.
fn serve(m: &mut Manager, port: u32, number: u64) -> Result<Served, VirtioError> {
    let peer = loop {
        let e = next_event(m)?;
        match e.event_type {
            VsockEventType::ConnectionRequest if e.destination.port == port => break e.source,
            other => println!("vsockecho: while listening: {other:?} from {:?}", e.source),
        }
    };
    println!(
        "vsockecho: connection {number} from CID {} port {}",
        peer.cid, peer.port
    );
    let mut s = Served {
        peer,
        ..Served::default()
    };
    loop {
        let e = next_event(m)?;
        if e.source != peer || e.destination.port != port {
            println!(
                "vsockecho: event of another connection: {:?} from {:?}",
                e.event_type, e.source
            );
            continue;
        }
        match e.event_type {
            VsockEventType::Received { .. } => {
                s.packets += 1;
                echo_buffered(m, peer, port, &mut s)?;
            }
            VsockEventType::Disconnected { reason } => {
                // Bytes that came with or before the shutdown still go back.
                echo_buffered(m, peer, port, &mut s)?;
                s.clean = reason == DisconnectReason::Shutdown;
                println!(
                    "vsockecho: connection {number} from CID {} port {} closed ({}): {} bytes in {} packets echoed",
                    peer.cid,
                    peer.port,
                    if s.clean { "shutdown" } else { "reset" },
                    s.bytes,
                    s.packets
                );
                return Ok(s);
            }
            VsockEventType::ConnectionRequest
            | VsockEventType::Connected
            | VsockEventType::CreditRequest
            | VsockEventType::CreditUpdate => {}
        }
    }
}

/// Connects to `cid`:`port`, sends a line naming this guest, reads the
/// echo back and shuts down: whether the echo matched.
fn notify(m: &mut Manager, cid: u64, port: u32) -> Result<bool, VirtioError> {
    let peer = VsockAddr { cid, port };
    // A local port that is not the one this guest listens on.
    let local = port.wrapping_add(1);
    m.connect(peer, local)?;
    loop {
        let e = next_event(m)?;
        match e.event_type {
            VsockEventType::Connected if e.source == peer => break,
            VsockEventType::Disconnected { .. } if e.source == peer => {
                println!("vsockecho: connect to CID {cid} port {port} refused");
                return Ok(false);
            }
            _ => {}
        }
    }
    let line = alloc::format!("vsockecho: done, from CID {}", m.guest_cid());
    let msg = line.as_bytes();
    let len = msg.len();
    send_all(m, peer, local, msg)?;
    let mut back = alloc::vec![0u8; len];
    let mut got = 0;
    let mut closed = false;
    while got < len && !closed {
        let e = next_event(m)?;
        if e.source != peer {
            continue;
        }
        match e.event_type {
            VsockEventType::Received { .. } => {
                got += m.recv(peer, local, &mut back[got..len])?;
            }
            VsockEventType::Disconnected { .. } => closed = true,
            _ => {}
        }
    }
    let matched = got == len && back == msg;
    println!(
        "vsockecho: told CID {cid} port {port}; echo {} ({got} of {len} bytes)",
        if matched { "matched" } else { "DIFFERS" }
    );
    if closed {
        println!("vsockecho: CID {cid} closed the connection first");
        return Ok(false);
    }
    m.shutdown(peer, local)?;
    // The peer answers the shutdown with a reset.
    loop {
        let e = next_event(m)?;
        if e.source == peer && matches!(e.event_type, VsockEventType::Disconnected { .. }) {
            return Ok(matched);
        }
    }
}

fn main(dtb: usize) -> ! {
    let cmdline = match fdt::locate(dtb) {
        Ok((_, dt)) => dt.bootargs.unwrap_or(""),
        Err(e) => stratum_guests::fail(format_args!("no usable device tree: {e}")),
    };
    let number = |key, default| {
        args::number(cmdline, key, default)
            .unwrap_or_else(|e| stratum_guests::fail(format_args!("{key}: {e:?}")))
    };
    let port = u32::try_from(number("port", 1234))
        .unwrap_or_else(|_| stratum_guests::fail("port: over 32 bits"));
    let connections = number("serve", 1);
    let notify_cid = args::value(cmdline, "notify").map(|v| {
        args::parse_number(v)
            .unwrap_or_else(|| stratum_guests::fail(format_args!("notify={v}: not a CID")))
    });

    let virtio::Opened { n, transport, gic } = virtio::open(dtb, DEVICE_ID_VSOCK, "vsock");
    let socket = match VirtIOSocket::<GuestHal, Transport, RX_BUFFER>::new(transport) {
        Ok(s) => s,
        Err(e) => stratum_guests::fail(format_args!("vsock device init: {e}")),
    };
    let mut m = Manager::new_with_capacity(socket, WINDOW);
    m.listen(port);
    println!(
        "vsockecho: transport {n}, CID {}, listening on port {port} for {connections} connection(s)",
        m.guest_cid()
    );

    let mut checks = Checks::new();
    let mut total = 0u64;
    for i in 1..=connections {
        match serve(&mut m, port, i) {
            Ok(s) => {
                total += s.bytes;
                checks.check(
                    format_args!("connection {i} from CID {} shut down cleanly", s.peer.cid),
                    s.clean,
                );
            }
            Err(e) => stratum_guests::fail(format_args!("connection {i}: {e}")),
        }
    }
    if let Some(cid) = notify_cid {
        match notify(&mut m, cid, port) {
            Ok(ok) => {
                checks.check(format_args!("CID {cid} echoed our line"), ok);
            }
            Err(e) => stratum_guests::fail(format_args!("telling CID {cid}: {e}")),
        }
    }
    println!(
        "vsockecho: served {connections} connection(s), {total} bytes echoed, {} interrupts, heap {} bytes",
        virtio::irqs(),
        virtio::heap_peak()
    );
    virtio::close(&gic);
    checks.finish()
}
