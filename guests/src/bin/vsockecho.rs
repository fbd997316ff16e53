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
//! Waiting: the driver is polled (`VsockConnectionManager::poll`); when it
//! has nothing, the vCPU sleeps in WFI until the transport's interrupt
//! (SPI 16 + n, edge), whose handler acknowledges it in the transport's
//! `InterruptACK` register (the driver, polling, never reads the interrupt
//! status, so the two do not race) and counts it. Transmits are the
//! driver's own: it notifies and spins until the device has consumed the
//! packet, which Stratum's router does before the notify returns unless
//! the peer has no receive buffer yet.
//!
//! Memory: the runtime runs with the MMU off, identity-mapped, so a
//! buffer's address is its guest-physical address ([`GuestHal::share`]).
//! DMA memory (the virtqueues, allocated once) comes from a static
//! page-aligned pool, the driver's heap (its receive buffers, once, and a
//! receive ring per connection) from a static arena. Both are bump
//! allocators: what is freed is not reused, which a guest serving a few
//! connections can afford (it prints the heap it used), and running out is
//! a clean FAIL line (a DMA error, or the allocation-failure panic). With
//! the MMU off every access is Device memory: uncached, so coherent with
//! the hypervisor's copies on QEMU; on hardware, whose caches the
//! hypervisor's cacheable writes go through, this guest would need its
//! own cacheable mapping (or cache maintenance on the rings) first.
#![no_std]
#![no_main]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;

use stratum_guests::global::Global;
use stratum_guests::{Checks, args, fdt, gic, irq, mmio, println};
use virtio_drivers::device::socket::{
    DisconnectReason, SocketError, VirtIOSocket, VsockAddr, VsockConnectionManager, VsockEvent,
    VsockEventType,
};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::{BufferDirection, Error as VirtioError, Hal, PAGE_SIZE, PhysAddr};

stratum_guests::entry!("vsockecho", main);

/// The first transport.
const TRANSPORTS: usize = 0x0A00_0000;
/// Bytes per transport.
const STRIDE: usize = 0x200;
/// Transports on `virt`.
const COUNT: usize = 32;
/// `"virt"`, little-endian.
const MAGIC: u32 = 0x7472_6976;
/// The vsock device's DeviceID.
const DEVICE_ID_VSOCK: u32 = 19;
/// Transport *n*'s interrupt is SPI 16 + *n*, INTID 32 + 16 + *n*.
const FIRST_INTID: u32 = 48;
const REG_MAGIC: usize = 0x000;
const REG_VERSION: usize = 0x004;
const REG_DEVICE_ID: usize = 0x008;
const REG_INTERRUPT_STATUS: usize = 0x060;
const REG_INTERRUPT_ACK: usize = 0x064;

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

/// Pages of DMA memory (the three virtqueues take one or two each).
const DMA_PAGES: usize = 16;
/// Bytes of heap.
const HEAP: usize = 512 * 1024;

type Transport = MmioTransport<'static>;
type Manager = VsockConnectionManager<GuestHal, Transport, RX_BUFFER>;

/// Page-aligned static memory handed out by a bump pointer.
#[repr(C, align(4096))]
struct Arena<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the guest is single-threaded; the arena's bytes are only reached
// through pointers its allocator hands out, each range once.
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    /// The arena's bytes from `used` on, aligned to `align`, if `size` of
    /// them fit: the range's offset and the new high-water mark.
    fn carve(&self, used: usize, size: usize, align: usize) -> Option<(usize, usize)> {
        let base = self.0.get() as usize;
        let start = (base + used).checked_next_multiple_of(align)? - base;
        let end = start.checked_add(size)?;
        (end <= N).then_some((start, end))
    }

    fn at(&self, offset: usize) -> *mut u8 {
        self.0.get().cast::<u8>().wrapping_add(offset)
    }
}

static DMA: Arena<{ DMA_PAGES * PAGE_SIZE }> = Arena(UnsafeCell::new([0; DMA_PAGES * PAGE_SIZE]));
static DMA_USED: Global<usize> = Global::new(0);
static HEAP_ARENA: Arena<HEAP> = Arena(UnsafeCell::new([0; HEAP]));
static HEAP_USED: Global<usize> = Global::new(0);

/// The heap: a bump allocator over [`HEAP_ARENA`] (see the module docs).
struct BumpHeap;

// SAFETY: `alloc` hands out disjoint, suitably aligned ranges of the arena
// (or null when it is exhausted); `dealloc` keeps them reserved.
unsafe impl GlobalAlloc for BumpHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match HEAP_ARENA.carve(HEAP_USED.get(), layout.size(), layout.align()) {
            Some((start, end)) => {
                HEAP_USED.set(end);
                HEAP_ARENA.at(start)
            }
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: BumpHeap = BumpHeap;

/// `virtio-drivers`' hardware interface for this guest: identity-mapped,
/// DMA from [`DMA`].
struct GuestHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned, disjoint ranges of the
// static pool (never reused: `dma_dealloc` keeps them), valid for the
// guest's life; guest-physical = virtual with the MMU off, so `share`'s
// address is the buffer's own and `mmio_phys_to_virt` the identity.
unsafe impl Hal for GuestHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(size) = pages.checked_mul(PAGE_SIZE) else {
            return (0, NonNull::dangling());
        };
        let Some((start, end)) = DMA.carve(DMA_USED.get(), size, PAGE_SIZE) else {
            println!("vsockecho: DMA pool exhausted ({pages} pages wanted)");
            return (0, NonNull::dangling());
        };
        DMA_USED.set(end);
        let p = DMA.at(start);
        // SAFETY: `p..p + size` is inside the pool and handed out only now.
        unsafe { core::ptr::write_bytes(p, 0, size) };
        let p = NonNull::new(p).expect("a static's address is not null");
        (p.as_ptr() as PhysAddr, p)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("the driver maps no MMIO at address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// The vsock transport's base, once found.
static BASE: Global<usize> = Global::new(0);
/// Its interrupt's INTID.
static INTID: Global<u32> = Global::new(0);
/// Interrupts the handler acknowledged.
static IRQS: Global<u64> = Global::new(0);

fn handler(intid: u32) {
    if intid != INTID.get() {
        stratum_guests::fail(format_args!("unexpected IRQ: INTID {intid}"))
    }
    let base = BASE.get();
    // SAFETY: the transport's InterruptStatus and InterruptACK registers;
    // acknowledging what the status says is the driver's interrupt protocol.
    unsafe {
        let status = mmio::read32(base + REG_INTERRUPT_STATUS);
        mmio::write32(base + REG_INTERRUPT_ACK, status);
    }
    IRQS.set(IRQS.get() + 1);
}

/// The first transport with a vsock device: its number.
fn find_vsock() -> Option<usize> {
    (0..COUNT).find(|n| {
        let t = TRANSPORTS + n * STRIDE;
        // SAFETY: registers of a transport in the window `virt` reserves
        // for them; reading the identification registers has no effect.
        unsafe {
            mmio::read32(t + REG_MAGIC) == MAGIC
                && mmio::read32(t + REG_VERSION) == 2
                && mmio::read32(t + REG_DEVICE_ID) == DEVICE_ID_VSOCK
        }
    })
}

/// The next event, sleeping in WFI until the device interrupts while
/// there is none.
fn next_event(m: &mut Manager) -> Result<VsockEvent, VirtioError> {
    loop {
        let seen = IRQS.get();
        if let Some(e) = m.poll()? {
            return Ok(e);
        }
        irq::wfi_until(u64::MAX, || IRQS.get() != seen);
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

    let Some(n) = find_vsock() else {
        stratum_guests::fail("no virtio-mmio transport has a vsock device (DeviceID 19)")
    };
    let base = TRANSPORTS + n * STRIDE;
    BASE.set(base);
    INTID.set(FIRST_INTID + n as u32);
    let platform = gic::bring_up(dtb);
    let g = platform.gic;
    irq::set_handler(Some(handler));
    g.set_priority(INTID.get(), 0x80);
    g.set_edge(INTID.get(), true);
    g.route_to_self(INTID.get());
    g.enable(INTID.get());

    let header = NonNull::new(base as *mut VirtIOHeader).expect("the transport is not at 0");
    // SAFETY: `base` is transport `n`'s register window (`STRIDE` bytes,
    // config space included), MMIO for the guest's whole life, and only
    // this transport value reaches it (the handler touches the interrupt
    // registers alone).
    let transport = match unsafe { MmioTransport::new(header, STRIDE) } {
        Ok(t) => t,
        Err(e) => stratum_guests::fail(format_args!("transport {n}: {e}")),
    };
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
        IRQS.get(),
        HEAP_USED.get()
    );
    g.disable(INTID.get());
    irq::set_handler(None);
    checks.finish()
}
