//! What the guests that drive a virtio device through the third-party
//! `virtio-drivers` crate share: finding the device among `virt`'s 32
//! virtio-mmio transports, its interrupt, and the crate's hardware
//! interface ([`GuestHal`]) with the memory behind it.
//!
//! Finding: [`open`] scans the transports (`0x0A00_0000 + 0x200·n`) for
//! the first with the wanted DeviceID, brings up the GIC, routes the
//! transport's interrupt (SPI 16 + n, edge) to this vCPU with a handler
//! that acknowledges it in the transport's `InterruptACK` register and
//! counts it, and hands back the transport for the driver. The drivers are
//! polled; when one has nothing, the guest sleeps with [`wait`] until the
//! count moves. The drivers never read the interrupt status themselves,
//! so the handler and they do not race.
//!
//! Memory: the runtime runs with the MMU off, identity-mapped, so a
//! buffer's address is its guest-physical address ([`GuestHal::share`]).
//! DMA memory (the virtqueues, allocated once) comes from a static
//! page-aligned pool; the drivers' heap (receive buffers, per-packet
//! transmit buffers, a vsock connection's ring) from a static arena.
//! Both are bump allocators. The heap takes back a block freed while it
//! is still the last one handed out, which is the pattern of a buffer
//! allocated, sent and dropped before the next ([`BumpHeap`]); other
//! frees are kept, which guests that allocate their long-lived buffers
//! once can afford (they print the heap they used). Running out is a
//! clean FAIL line (a DMA error, or the allocation-failure panic).
//!
//! With the MMU off every access is Device memory: uncached, so coherent
//! with the hypervisor's copies on QEMU; on hardware, whose caches the
//! hypervisor's cacheable writes go through, these guests would need
//! their own cacheable mapping (or cache maintenance on the rings) first.
//!
//! [`BumpHeap`] is the runtime's global allocator: the library links
//! `alloc` through `virtio-drivers`, so every guest needs one. In a guest
//! that allocates nothing, the linker drops it and its arena.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;

use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

use crate::gic::Gic;
use crate::global::Global;
use crate::{gic, irq, mmio};

/// The first transport.
pub const TRANSPORTS: usize = 0x0A00_0000;
/// Bytes per transport.
pub const STRIDE: usize = 0x200;
/// Transports on `virt`.
pub const COUNT: usize = 32;
/// `"virt"`, little-endian.
const MAGIC: u32 = 0x7472_6976;
/// Transport *n*'s interrupt is SPI 16 + *n*, INTID 32 + 16 + *n*.
const FIRST_INTID: u32 = 48;
const REG_MAGIC: usize = 0x000;
const REG_VERSION: usize = 0x004;
const REG_DEVICE_ID: usize = 0x008;
const REG_INTERRUPT_STATUS: usize = 0x060;
const REG_INTERRUPT_ACK: usize = 0x064;

/// The network device's DeviceID.
pub const DEVICE_ID_NET: u32 = 1;
/// The block device's DeviceID.
pub const DEVICE_ID_BLOCK: u32 = 2;
/// The vsock device's DeviceID.
pub const DEVICE_ID_VSOCK: u32 = 19;

/// Pages of DMA memory (a virtqueue of up to 64 entries takes one or two).
const DMA_PAGES: usize = 16;
/// Bytes of heap.
const HEAP: usize = 512 * 1024;

/// The transport the drivers reach through this module's HAL.
pub type Transport = MmioTransport<'static>;

/// Page-aligned static memory handed out by a bump pointer.
#[repr(C, align(4096))]
struct Arena<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the guest is single-threaded; the arena's bytes are only reached
// through pointers its allocator hands out, each range to one owner at a
// time.
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

    /// The offset of `p`, a pointer into the arena.
    fn offset(&self, p: *mut u8) -> usize {
        p as usize - self.0.get() as usize
    }
}

static DMA: Arena<{ DMA_PAGES * PAGE_SIZE }> = Arena(UnsafeCell::new([0; DMA_PAGES * PAGE_SIZE]));
static DMA_USED: Global<usize> = Global::new(0);
static HEAP_ARENA: Arena<HEAP> = Arena(UnsafeCell::new([0; HEAP]));
static HEAP_USED: Global<usize> = Global::new(0);
#[global_allocator]
static ALLOCATOR: BumpHeap = BumpHeap;

/// The most of the heap ever in use.
static HEAP_PEAK: Global<usize> = Global::new(0);

/// The heap's unit: every block starts on a multiple of it and spans a
/// whole number of them, so the blocks of alignment up to it follow one
/// another without padding, and freeing the last one brings the bump
/// pointer back exactly where it was before that block.
const GRANULE: usize = 16;

/// The heap: a bump allocator over a static arena that takes back the
/// last block handed out (see the module docs). Only the guest's main
/// code allocates: no interrupt handler does. A block aligned beyond
/// [`GRANULE`] may leave padding below it that freeing it does not take
/// back (the blocks of `virtio-drivers` are aligned to 16 at most).
pub struct BumpHeap;

// SAFETY: `alloc` hands out disjoint, suitably aligned ranges of the arena
// (or null when it is exhausted); `dealloc` returns a range to the arena
// only when it ends at the bump pointer, so nothing was handed out after
// it and no live range is reused.
unsafe impl GlobalAlloc for BumpHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(size) = layout.size().checked_next_multiple_of(GRANULE) else {
            return core::ptr::null_mut();
        };
        let align = layout.align().max(GRANULE);
        match HEAP_ARENA.carve(HEAP_USED.get(), size, align) {
            Some((start, end)) => {
                HEAP_USED.set(end);
                HEAP_PEAK.set(HEAP_PEAK.get().max(end));
                HEAP_ARENA.at(start)
            }
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let start = HEAP_ARENA.offset(ptr);
        // `alloc` succeeded with this size, so it rounds without overflow.
        let size = layout.size().next_multiple_of(GRANULE);
        if start + size == HEAP_USED.get() {
            HEAP_USED.set(start);
        }
    }
}

/// The most heap the guest had in use at once, in bytes.
pub fn heap_peak() -> usize {
    HEAP_PEAK.get()
}

/// `virtio-drivers`' hardware interface for these guests: identity-mapped,
/// DMA from a static pool.
pub struct GuestHal;

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
            crate::println!("virtio: DMA pool exhausted ({pages} pages wanted)");
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

/// The open device's transport base.
static BASE: Global<usize> = Global::new(0);
/// Its interrupt's INTID.
static INTID: Global<u32> = Global::new(0);
/// Interrupts the handler acknowledged.
static IRQS: Global<u64> = Global::new(0);

fn handler(intid: u32) {
    if intid != INTID.get() {
        crate::fail(format_args!("unexpected IRQ: INTID {intid}"))
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

/// The first transport whose device has `device_id`: its number.
pub fn find(device_id: u32) -> Option<usize> {
    (0..COUNT).find(|n| {
        let t = TRANSPORTS + n * STRIDE;
        // SAFETY: registers of a transport in the window `virt` reserves
        // for them; reading the identification registers has no effect.
        unsafe {
            mmio::read32(t + REG_MAGIC) == MAGIC
                && mmio::read32(t + REG_VERSION) == 2
                && mmio::read32(t + REG_DEVICE_ID) == device_id
        }
    })
}

/// An opened device: which transport, and the GIC its interrupt is
/// routed through.
pub struct Opened {
    /// The transport's number.
    pub n: usize,
    /// The transport, for the driver.
    pub transport: Transport,
    /// The GIC, brought up.
    pub gic: Gic,
}

/// Finds the first device with `device_id` (`what` names it in the FAIL
/// line when there is none), brings up the GIC from the device tree at
/// `dtb` and routes the transport's interrupt to the counting handler.
/// Call once.
pub fn open(dtb: usize, device_id: u32, what: &str) -> Opened {
    let Some(n) = find(device_id) else {
        crate::fail(format_args!(
            "no virtio-mmio transport has a {what} device (DeviceID {device_id})"
        ))
    };
    let base = TRANSPORTS + n * STRIDE;
    BASE.set(base);
    INTID.set(FIRST_INTID + n as u32);
    let g = gic::bring_up(dtb).gic;
    irq::set_handler(Some(handler));
    g.set_priority(INTID.get(), 0x80);
    g.set_edge(INTID.get(), true);
    g.route_to_self(INTID.get());
    g.enable(INTID.get());
    let header = NonNull::new(base as *mut VirtIOHeader).expect("the transport is not at 0");
    // SAFETY: `base` is transport `n`'s register window (`STRIDE` bytes,
    // config space included), MMIO for the guest's whole life, and only
    // this transport value reaches it (the handler touches the interrupt
    // registers alone). `open` runs once, so there is one such value.
    let transport = match unsafe { MmioTransport::new(header, STRIDE) } {
        Ok(t) => t,
        Err(e) => crate::fail(format_args!("transport {n}: {e}")),
    };
    Opened {
        n,
        transport,
        gic: g,
    }
}

/// Interrupts acknowledged so far.
pub fn irqs() -> u64 {
    IRQS.get()
}

/// Sleeps in WFI until an interrupt arrives after [`irqs`] read `seen`
/// (at once if one already has).
pub fn wait(seen: u64) {
    irq::wfi_until(u64::MAX, || IRQS.get() != seen);
}

/// Stops the device's interrupt (at the end of a run).
pub fn close(g: &Gic) {
    g.disable(INTID.get());
    irq::set_handler(None);
}
