//! The daemon's registered buffers ([`Placed`]): memory of its own whose
//! physical addresses it sends in every hello, as
//! `stratum_abi::blkproto::Region`s. The hypervisor copies a placed write's
//! data into it before sending the request and copies a placed read's data
//! out of it after the reply; the regions' bytes in hello order are the
//! *placed space*, and a request's `place` is an offset in it.
//!
//! What the memory is ([`setup`]): [`PAGES`] huge pages of the kernel's
//! default size (`Hugepagesize` in `/proc/meminfo`: 2 MiB on arm64 with
//! 4 KiB pages), one `MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB |
//! MAP_POPULATE` mapping, one region per page in mapping order, so an
//! offset in the mapping is the same offset in the placed space. Huge pages
//! because the hypervisor writes to these physical addresses for as long
//! as the daemon lives, so they must never change: Linux never swaps a
//! hugetlb page and does not migrate one in ordinary operation (not for
//! compaction, not for NUMA balancing; only on explicit demands — memory
//! offlining, `move_pages`, a failing page's soft-offline, a contiguous
//! allocation of gigantic pages — none of which a service VM makes), where
//! an ordinary page may be moved under the hypervisor at any time. A huge
//! page is also physically contiguous and aligned to its size, so one
//! region per page is exact. The addresses come from `/proc/self/pagemap`
//! (which shows frame numbers to root only); the service VM is
//! identity-mapped, so they are the guest-physical addresses the
//! hypervisor writes to. When the pool has too few free huge pages,
//! `setup` raises `/proc/sys/vm/nr_hugepages` by the shortfall only, so a
//! restarted daemon (whose predecessor's pages are free again) does not
//! grow the pool each time.
//!
//! The mapping lives as long as the process: every session (every
//! reconnection) sends the same regions. Without it (no hugetlb in the
//! kernel, no huge page to be had, not root), the daemon runs with
//! [`Placed::none`]: it registers nothing, refuses every placed request,
//! and the hypervisor sends every request's data inline.
//!
//! Access: the peer chooses the places, and a buggy one could name the
//! same bytes in two requests in flight, so the daemon never forms a Rust
//! reference into the placed space. [`Placed::place`] checks a request's
//! place (aligned, inside) and gives a [`Place`]: a raw pointer and a
//! length, which a worker hands to `pread`/`pwrite` as they are
//! ([`Place::pread_exact`], [`Place::pwrite_all`]). Overlapping places
//! garble their own data, nothing else.

#[cfg(test)]
use std::alloc::{self, Layout};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::os::unix::fs::FileExt as _;
use std::ptr::NonNull;

use stratum_abi::blkproto::{MAX_REGIONS, PLACE_ALIGN, Region};

/// Huge pages registered: 16 MiB of 2 MiB pages, the most the hypervisor
/// uses (128 units of 128 KiB): a dozen requests of Linux's largest
/// (1.25 MiB), or 64 small ones, in flight at once.
pub const PAGES: usize = 8;
const _: () = assert!(PAGES as u64 <= MAX_REGIONS as u64, "one region per page");

/// The kernel's huge-page counters.
const MEMINFO: &str = "/proc/meminfo";
/// The size of the default huge-page pool, in pages.
const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
/// Each virtual page's frame number.
const PAGEMAP: &str = "/proc/self/pagemap";

/// Why a request's place is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPlace {
    /// The daemon registered no buffers.
    NoSpace,
    /// The place is not a multiple of `PLACE_ALIGN`.
    Unaligned,
    /// The data would end past the placed space.
    Outside,
}

/// What the placed space's memory is, for freeing it.
enum Memory {
    /// None at all.
    Empty,
    /// The huge-page mapping of [`setup`].
    Mapped,
    /// A heap allocation of this layout (tests).
    #[cfg(test)]
    Heap(Layout),
}

/// The placed space: `len` bytes at `base`, and the regions they are sent
/// as.
pub struct Placed {
    base: NonNull<u8>,
    len: usize,
    regions: Vec<Region>,
    memory: Memory,
}

// SAFETY: `Placed` owns its memory exclusively, like a `Vec<u8>`, and
// nothing in the daemon ever holds a Rust reference into it: every access
// goes through a raw pointer, to `pread`/`pwrite` or a `ptr::copy` whose
// callers promise no request is in flight on those bytes. Sharing or
// moving the owner between threads creates no aliasing references.
unsafe impl Send for Placed {}
// SAFETY: as for `Send`: `&Placed` gives out only raw pointers.
unsafe impl Sync for Placed {}

impl Placed {
    /// No placed space: no region in the hello, every placed request
    /// refused.
    pub fn none() -> Self {
        Self {
            base: NonNull::dangling(),
            len: 0,
            regions: Vec::new(),
            memory: Memory::Empty,
        }
    }

    /// A placed space of zeroed heap memory, sent as `regions` (made-up
    /// addresses: the daemon only sends them, never uses them). Panics on
    /// regions the wire would refuse.
    #[cfg(test)]
    pub fn on_heap(regions: &[Region]) -> Self {
        assert!(regions.len() <= MAX_REGIONS as usize, "too many regions");
        for r in regions {
            let wire = Region::decode(&r.encode());
            assert_eq!(wire, Some(*r), "a region the protocol refuses");
        }
        let len: u64 = regions.iter().map(|r| r.len).sum();
        let len = usize::try_from(len).expect("a test's placed space fits memory");
        if len == 0 {
            return Self::none();
        }
        let align = usize::try_from(PLACE_ALIGN).expect("4096");
        let layout = Layout::from_size_align(len, align).expect("a page-aligned layout");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Self {
            base,
            len,
            regions: regions.to_vec(),
            memory: Memory::Heap(layout),
        }
    }

    /// The regions, in hello order (at most `MAX_REGIONS`).
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Bytes of placed space.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no placed space.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `bytes` at offset `place` of the placed space, for a worker's
    /// I/O; refused unless `place` is aligned and the bytes are inside.
    pub fn place(&self, place: u32, bytes: u32) -> Result<Place<'_>, BadPlace> {
        if self.is_empty() {
            return Err(BadPlace::NoSpace);
        }
        if !u64::from(place).is_multiple_of(PLACE_ALIGN) {
            return Err(BadPlace::Unaligned);
        }
        // In usize, checked: `place + bytes` cannot wrap, as it could in
        // u32.
        let (Ok(at), Ok(len)) = (usize::try_from(place), usize::try_from(bytes)) else {
            return Err(BadPlace::Outside);
        };
        if !self.inside(at, len) {
            return Err(BadPlace::Outside);
        }
        Ok(Place {
            ptr: self.base.as_ptr().wrapping_add(at),
            len,
            at: place,
            _space: PhantomData,
        })
    }

    /// Copies `data` into the placed space at `at`, as the hypervisor does
    /// before a placed write. Panics if the bytes are not inside.
    ///
    /// # Safety
    ///
    /// No request in flight may use these bytes: a worker's `pread` into
    /// them would race with the copy.
    pub unsafe fn copy_in(&self, at: usize, data: &[u8]) {
        assert!(self.inside(at, data.len()), "{at}+{} outside", data.len());
        // SAFETY: the bytes are inside the space (checked), which this
        // `Placed` owns; `data` is a Rust slice, so not in the placed space
        // (no reference into it exists), hence no overlap; the caller
        // promises no concurrent access to them.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(at), data.len());
        }
    }

    /// The `len` bytes of the placed space at `at`, as the hypervisor
    /// copies them out after a placed read. Panics if they are not inside.
    ///
    /// # Safety
    ///
    /// No request in flight may use these bytes: a worker's `pread` into
    /// them would race with the copy.
    pub unsafe fn copy_out(&self, at: usize, len: usize) -> Vec<u8> {
        assert!(self.inside(at, len), "{at}+{len} outside");
        let mut out = vec![0u8; len];
        // SAFETY: as in `copy_in`, the other way.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(at), out.as_mut_ptr(), len);
        }
        out
    }

    fn inside(&self, at: usize, len: usize) -> bool {
        at.checked_add(len).is_some_and(|end| end <= self.len)
    }
}

impl fmt::Display for Placed {
    /// `N × S MiB at 0x…, 0x…` (or `no registered buffers`): the line the
    /// daemon prints at start.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(first) = self.regions.first() else {
            return write!(f, "no registered buffers");
        };
        let size = if first.len % (1 << 20) == 0 {
            format!("{} MiB", first.len >> 20)
        } else {
            format!("{} KiB", first.len >> 10)
        };
        write!(f, "{} × {size} at ", self.regions.len())?;
        for (i, r) in self.regions.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{:#x}", r.addr)?;
        }
        Ok(())
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        match self.memory {
            Memory::Empty => {}
            Memory::Mapped => {
                // SAFETY: `base`/`len` are the mapping `setup` made, unmapped
                // only here, once; every `Place` borrowed from `self` is gone.
                unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
            }
            #[cfg(test)]
            Memory::Heap(layout) => {
                // SAFETY: `base` came from `alloc_zeroed` with `layout` and is
                // freed only here, once.
                unsafe { alloc::dealloc(self.base.as_ptr(), layout) }
            }
        }
    }
}

/// One request's bytes in the placed space, checked to be inside it
/// ([`Placed::place`]): a raw pointer, never made a reference, and a
/// length.
pub struct Place<'a> {
    ptr: *mut u8,
    len: usize,
    /// The offset in the placed space (for `Debug`).
    at: u32,
    _space: PhantomData<&'a Placed>,
}

// SAFETY: the pointer names `len` bytes inside a `Placed`, which outlives
// `'a` and is `Sync`; the daemon only hands it to `pread`/`pwrite`, so the
// kernel copies and no Rust reference to the bytes exists on any thread.
// Two places that overlap (a buggy peer) make those copies race over the
// same plain bytes, which garbles that data and breaks no invariant of the
// daemon's.
unsafe impl Send for Place<'_> {}
// SAFETY: as for `Send`: a `&Place` only reads the pointer and length.
unsafe impl Sync for Place<'_> {}

impl fmt::Debug for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Place({:#x}, {} bytes)", self.at, self.len)
    }
}

impl Place<'_> {
    /// Bytes.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The offset in the placed space.
    #[cfg(test)]
    pub fn at(&self) -> u32 {
        self.at
    }

    /// Fills the place from `fd` at `offset` (`pread`, again after a short
    /// read or `EINTR`); the file ending first is an error.
    pub fn pread_exact(&self, fd: BorrowedFd<'_>, offset: u64) -> io::Result<()> {
        self.transfer(offset, |ptr, len, at| {
            // SAFETY: `ptr..ptr + len` is inside the placed space (see
            // `transfer`), writable memory the kernel may fill; no Rust
            // reference to it exists.
            let n = unsafe { libc::pread(fd.as_raw_fd(), ptr.cast(), len, at) };
            (n, io::ErrorKind::UnexpectedEof)
        })
    }

    /// Writes the place to `fd` at `offset` (`pwrite`, again after a short
    /// write or `EINTR`).
    pub fn pwrite_all(&self, fd: BorrowedFd<'_>, offset: u64) -> io::Result<()> {
        self.transfer(offset, |ptr, len, at| {
            // SAFETY: `ptr..ptr + len` is inside the placed space (see
            // `transfer`), readable memory; no Rust reference to it exists.
            let n = unsafe { libc::pwrite(fd.as_raw_fd(), ptr.cast(), len, at) };
            (n, io::ErrorKind::WriteZero)
        })
    }

    /// Calls `step(pointer, bytes left, file offset)` until the place is
    /// done; `step` returns the system call's result and the error for a
    /// transfer of 0 bytes.
    fn transfer(
        &self,
        offset: u64,
        mut step: impl FnMut(*mut u8, usize, libc::off_t) -> (isize, io::ErrorKind),
    ) -> io::Result<()> {
        let mut done = 0;
        while done < self.len {
            let at = offset
                .checked_add(done as u64)
                .and_then(|at| libc::off_t::try_from(at).ok())
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            // `done < len`: still inside the place, so inside the space.
            let (n, on_zero) = step(self.ptr.wrapping_add(done), self.len - done, at);
            match n {
                0 => return Err(on_zero.into()),
                n if n > 0 => done += n.unsigned_abs(),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The huge-page counters of `/proc/meminfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugePages {
    /// Pages in the default pool (`HugePages_Total`).
    pub total: u64,
    /// Of them, not in use (`HugePages_Free`).
    pub free: u64,
    /// Bytes per page (`Hugepagesize`), a non-zero multiple of 4096.
    pub size: u64,
}

impl HugePages {
    /// Parses `/proc/meminfo`'s text.
    pub fn parse(meminfo: &str) -> Result<Self, String> {
        let field = |name: &str| -> Result<u64, String> {
            let line = meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .ok_or_else(|| format!("no {name} in {MEMINFO} (a kernel without hugetlbfs)"))?;
            let value = line.trim().trim_end_matches("kB").trim();
            value
                .parse()
                .map_err(|_| format!("{name} in {MEMINFO} is not a number: {line:?}"))
        };
        let size_kb = field("Hugepagesize")?;
        let size = size_kb
            .checked_mul(1024)
            .filter(|&s| s != 0 && s.is_multiple_of(PLACE_ALIGN))
            .ok_or_else(|| format!("a huge page of {size_kb} kB is no whole number of 4 KiB"))?;
        Ok(Self {
            total: field("HugePages_Total")?,
            free: field("HugePages_Free")?,
            size,
        })
    }

    /// What to set the pool to so [`PAGES`] are free, if fewer are: the
    /// total plus the shortfall.
    pub fn pool_wanted(&self) -> Option<u64> {
        let short = (PAGES as u64).checked_sub(self.free).filter(|&s| s > 0)?;
        Some(self.total + short)
    }
}

/// The physical address of the page a `/proc/self/pagemap` entry
/// describes, whose pages are `page_size` bytes: bit 63 says it is
/// present, bits 0–54 are its frame number, 0 if the reader may not see
/// frame numbers.
pub fn frame_address(entry: u64, page_size: u64) -> Result<u64, String> {
    const PRESENT: u64 = 1 << 63;
    const PFN: u64 = (1 << 55) - 1;
    if entry & PRESENT == 0 {
        return Err("a huge page is not present after being touched".to_owned());
    }
    let pfn = entry & PFN;
    if pfn == 0 {
        return Err(format!(
            "{PAGEMAP} hides frame numbers (reading them needs CAP_SYS_ADMIN)"
        ));
    }
    pfn.checked_mul(page_size)
        .ok_or_else(|| format!("frame number {pfn:#x} overflows"))
}

/// One region of `size` bytes per huge page at `addrs`, in order; each
/// must be aligned to its size and end below 2^64.
pub fn regions_of(addrs: &[u64], size: u64) -> Result<Vec<Region>, String> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let region = Region { addr, len: size };
            let sound =
                addr.is_multiple_of(size) && Region::decode(&region.encode()) == Some(region);
            sound
                .then_some(region)
                .ok_or_else(|| format!("huge page {i} at {addr:#x} is not aligned to its size"))
        })
        .collect()
}

/// Maps and registers [`PAGES`] huge pages (see the module docs); why not,
/// if it cannot.
pub fn setup() -> Result<Placed, String> {
    let read_meminfo = || {
        fs::read_to_string(MEMINFO)
            .map_err(|e| format!("{MEMINFO}: {e}"))
            .and_then(|text| HugePages::parse(&text))
    };
    let pages = read_meminfo()?;
    if let Some(pool) = pages.pool_wanted() {
        fs::write(NR_HUGEPAGES, format!("{pool}\n"))
            .map_err(|e| format!("raising {NR_HUGEPAGES} to {pool}: {e}"))?;
        let after = read_meminfo()?;
        if after.free < PAGES as u64 {
            return Err(format!(
                "{} huge page(s) free of the {PAGES} wanted, with {NR_HUGEPAGES} raised to {pool}",
                after.free
            ));
        }
    }
    let size = usize::try_from(pages.size).map_err(|_| "a huge page larger than memory")?;
    let len = size
        .checked_mul(PAGES)
        .ok_or("huge pages larger than memory")?;
    // SAFETY: a fresh anonymous mapping at an address of the kernel's
    // choosing: it replaces nothing of the process's.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        return Err(format!("mapping {PAGES} huge pages: {e}"));
    }
    let base = NonNull::new(raw.cast::<u8>()).ok_or("mmap returned address 0")?;
    // Owned from here: an error below unmaps it.
    let mut placed = Placed {
        base,
        len,
        regions: Vec::new(),
        memory: Memory::Mapped,
    };
    for i in 0..PAGES {
        // SAFETY: byte `i * size` is inside the mapping (`PAGES * size`
        // bytes, readable and writable); no reference to it exists.
        unsafe { base.as_ptr().add(i * size).write_volatile(0) };
    }
    // SAFETY: `sysconf` only reads a constant of the system's.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page_size = u64::try_from(page_size).map_err(|_| "no page size")?;
    let pagemap = File::open(PAGEMAP).map_err(|e| format!("{PAGEMAP}: {e}"))?;
    let mut addrs = Vec::with_capacity(PAGES);
    for i in 0..PAGES {
        let vaddr = (base.as_ptr() as u64) + (i * size) as u64;
        let mut entry = [0u8; 8];
        pagemap
            .read_exact_at(&mut entry, vaddr / page_size * 8)
            .map_err(|e| format!("{PAGEMAP}: {e}"))?;
        addrs.push(frame_address(u64::from_ne_bytes(entry), page_size)?);
    }
    placed.regions = regions_of(&addrs, pages.size)?;
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use super::*;
    use crate::testfs::TempDir;

    /// `/proc/meminfo` of a Debian 12 arm64 guest, cut down.
    const MEMINFO_TEXT: &str = "MemTotal:        1004176 kB\n\
        MemFree:          812340 kB\n\
        HugePages_Total:       6\n\
        HugePages_Free:        2\n\
        HugePages_Rsvd:        0\n\
        HugePages_Surp:        0\n\
        Hugepagesize:       2048 kB\n\
        Hugetlb:           12288 kB\n";

    fn two_regions() -> Placed {
        Placed::on_heap(&[
            Region {
                addr: 0x4820_0000,
                len: 64 << 10,
            },
            Region {
                addr: 0x9000_0000,
                len: 16 << 10,
            },
        ])
    }

    #[test]
    fn meminfo_gives_the_counters_and_the_size() {
        let p = HugePages::parse(MEMINFO_TEXT).expect("parses");
        assert_eq!(
            p,
            HugePages {
                total: 6,
                free: 2,
                size: 2 << 20
            }
        );
        assert_eq!(
            p.pool_wanted(),
            Some(6 + PAGES as u64 - 2),
            "6 + the missing"
        );
        let enough = HugePages {
            free: PAGES as u64,
            ..p
        };
        assert_eq!(enough.pool_wanted(), None);
        let more = HugePages {
            free: PAGES as u64 + 1,
            ..p
        };
        assert_eq!(more.pool_wanted(), None);
        let empty = HugePages {
            total: 0,
            free: 0,
            ..p
        };
        assert_eq!(empty.pool_wanted(), Some(PAGES as u64));

        let no_hugetlb = "MemTotal: 1 kB\nMemFree: 1 kB\n";
        let e = HugePages::parse(no_hugetlb).expect_err("no counters");
        assert!(e.contains("Hugepagesize"), "{e}");
        let odd = MEMINFO_TEXT.replace("2048 kB", "6 kB");
        let e = HugePages::parse(&odd).expect_err("6 kB pages");
        assert!(e.contains("6 kB"), "{e}");
        let zero = MEMINFO_TEXT.replace("2048 kB", "0 kB");
        assert!(HugePages::parse(&zero).is_err(), "0 kB pages");
        let garbled = MEMINFO_TEXT.replace("HugePages_Free:        2", "HugePages_Free: x");
        assert!(HugePages::parse(&garbled).is_err());
        // `HugePages_Total` must not be read off `HugePages_TotalX`.
        let prefixed = MEMINFO_TEXT.replace("HugePages_Total:", "HugePages_TotalX:");
        assert!(HugePages::parse(&prefixed).is_err());
    }

    #[test]
    fn pagemap_entries_give_present_frames_only() {
        let present = 1u64 << 63;
        // Bits 55–62 (soft-dirty, exclusive, file-backed) do not count.
        let entry = present | 1 << 61 | 1 << 56 | 1 << 55 | 0x48200;
        assert_eq!(frame_address(entry, 4096), Ok(0x4820_0000));
        assert_eq!(frame_address(present | 0x3, 16384), Ok(0xc000));
        let e = frame_address(0x48200, 4096).expect_err("not present");
        assert!(e.contains("not present"), "{e}");
        let e = frame_address(present, 4096).expect_err("frame numbers hidden");
        assert!(e.contains("CAP_SYS_ADMIN"), "{e}");
        assert!(frame_address(present | ((1 << 55) - 1), 1 << 20).is_err());
    }

    #[test]
    fn each_huge_page_is_a_region_aligned_to_its_size() {
        let size = 2 << 20;
        let regions = regions_of(&[0x4820_0000, 0x4060_0000], size).expect("aligned");
        assert_eq!(
            regions,
            [
                Region {
                    addr: 0x4820_0000,
                    len: size
                },
                Region {
                    addr: 0x4060_0000,
                    len: size
                }
            ]
        );
        let e = regions_of(&[0x4820_0000, 0x4821_0000], size).expect_err("4 KiB-aligned only");
        assert!(e.contains("huge page 1 at 0x48210000"), "{e}");
        assert!(regions_of(&[u64::MAX - (size - 1)], size).is_err(), "wraps");
    }

    #[test]
    fn places_are_checked_against_the_space() {
        let p = two_regions();
        assert_eq!(p.len(), 80 << 10);
        assert_eq!(p.regions().len(), 2);
        let end = 80u32 << 10;
        let ok = p.place(0, 4096).expect("first page");
        assert_eq!((ok.at(), ok.len()), (0, 4096));
        let ok = p.place(end - 8192, 8192).expect("ends at the end");
        assert_eq!((ok.at(), ok.len()), (end - 8192, 8192));
        let ok = p.place(60 << 10, 8192).expect("across the regions' seam");
        assert_eq!(ok.len(), 8192);
        assert!(p.place(end, 0).expect("nothing, at the end").is_empty());
        assert_eq!(p.place(512, 512).err(), Some(BadPlace::Unaligned));
        assert_eq!(p.place(end - 4096, 8192).err(), Some(BadPlace::Outside));
        assert_eq!(p.place(end, 512).err(), Some(BadPlace::Outside));
        assert_eq!(
            p.place(0xffff_f000, 8192).err(),
            Some(BadPlace::Outside),
            "place + bytes wraps in u32"
        );
        assert_eq!(p.place(u32::MAX, 0).err(), Some(BadPlace::Unaligned));
        let none = Placed::none();
        assert!(none.regions().is_empty());
        assert_eq!(none.place(0, 0).err(), Some(BadPlace::NoSpace));
        assert_eq!(none.place(0, 512).err(), Some(BadPlace::NoSpace));
    }

    #[test]
    fn the_start_line_names_every_region() {
        assert_eq!(
            two_regions().to_string(),
            "2 × 64 KiB at 0x48200000, 0x90000000"
        );
        let huge = Placed::on_heap(&[Region {
            addr: 0x4820_0000,
            len: 2 << 20,
        }]);
        assert_eq!(huge.to_string(), "1 × 2 MiB at 0x48200000");
        assert_eq!(Placed::none().to_string(), "no registered buffers");
    }

    /// Places to and from a file: the bytes land where they should, and
    /// the neighbours of a place are untouched.
    #[test]
    fn pread_and_pwrite_move_a_place_whole() {
        let tmp = TempDir::new("placed");
        let disk: Vec<u8> = (0..16384u32).map(|i| (i % 249) as u8).collect();
        let file = tmp.file("disk", &disk);
        let p = two_regions();
        let fill: Vec<u8> = vec![0xaa; p.len()];
        // SAFETY: no request is in flight: this test is the only user.
        unsafe { p.copy_in(0, &fill) };

        let place = p.place(8192, 4096).expect("inside");
        place.pread_exact(file.as_fd(), 1024).expect("reads");
        // SAFETY: as above.
        let space = unsafe { p.copy_out(0, p.len()) };
        assert_eq!(&space[8192..12288], &disk[1024..5120]);
        assert!(space[..8192].iter().all(|&b| b == 0xaa), "before untouched");
        assert!(space[12288..].iter().all(|&b| b == 0xaa), "after untouched");

        let new: Vec<u8> = (0..8192u32).map(|i| (i % 13) as u8).collect();
        // SAFETY: as above.
        unsafe { p.copy_in(60 << 10, &new) };
        let across = p.place(60 << 10, 8192).expect("inside");
        across.pwrite_all(file.as_fd(), 4096).expect("writes");
        let mut expected = disk.clone();
        expected[4096..12288].copy_from_slice(&new);
        assert_eq!(tmp.read("disk"), expected);

        let past_eof = p.place(0, 8192).expect("inside");
        let e = past_eof
            .pread_exact(file.as_fd(), 12288)
            .expect_err("the file ends 4 KiB in");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Nothing at all is fine anywhere.
        p.place(0, 0)
            .expect("empty")
            .pread_exact(file.as_fd(), 1 << 40)
            .expect("no bytes to read");
    }
}
