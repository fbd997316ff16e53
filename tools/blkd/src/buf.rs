//! The daemon's I/O buffers: heap memory aligned to [`ALIGN`] bytes, as
//! `O_DIRECT` wants (the buffer's address, the file offset and the length
//! must each be a multiple of the device's logical block size; 4096 covers
//! every block size Linux accepts), and a [`Pool`] that keeps freed ones
//! for reuse.
//!
//! A [`Buf`] holds one message's data after [`HEAD`] bytes of head room:
//! the data starts on an [`ALIGN`] boundary (so `pread`/`pwrite` use it
//! directly), and a reply's header goes in the 16 bytes just before it, so
//! the header and a read's data leave in one `write` ([`Buf::framed`]).
//!
//! Why a pool: a read or write of a megabyte is a fresh `mmap` in musl's
//! allocator, and touching it faults in 256 pages, every request. The pool
//! keeps up to [`KEEP_PER_CLASS`] freed buffers of each power-of-two size
//! class (4 KiB to [`MAX_DATA`]), so a steady workload allocates nothing.
//! What the pool holds is bounded: [`CLASSES`] × [`KEEP_PER_CLASS`]
//! buffers, at most 4 MiB each; in practice one class or two.
//!
//! The pool never hands out stale bytes that matter: a buffer's data is
//! only ever sent after it was filled whole (by `read_exact` from the
//! stream or `read_exact_at` from the disk).

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Mutex;

use stratum_abi::blkproto::MAX_DATA;

/// The alignment of every buffer and of its data.
pub const ALIGN: usize = 4096;
/// Bytes before the data: room for a reply's header, keeping the data
/// aligned.
pub const HEAD: usize = ALIGN;
/// The smallest class's data size.
const MIN_CLASS: usize = ALIGN;
/// Size classes: 4 KiB, 8 KiB, … [`MAX_DATA`] (4 MiB: 11 classes).
pub const CLASSES: usize = (MAX_DATA as usize / MIN_CLASS).trailing_zeros() as usize + 1;
/// Freed buffers the pool keeps per class; more are returned to the
/// allocator.
pub const KEEP_PER_CLASS: usize = 8;

/// Zeroed heap memory whose start is aligned to [`ALIGN`], [`HEAD`] bytes
/// of head room and then room for `capacity` bytes of data.
pub struct Buf {
    /// The allocation (`layout.size()` bytes, zeroed when allocated).
    ptr: NonNull<u8>,
    layout: Layout,
    /// Bytes of data in use (at most the capacity).
    len: usize,
}

// SAFETY: `Buf` owns its allocation exclusively (no other pointer to it
// exists), like a `Vec<u8>`; moving it to another thread moves that
// ownership.
unsafe impl Send for Buf {}

impl Buf {
    /// A zeroed buffer with room for `capacity` bytes of data (at least
    /// one page), `len` 0.
    pub fn with_capacity(capacity: usize) -> Self {
        let size = HEAD + capacity.max(1).next_multiple_of(ALIGN);
        let layout = Layout::from_size_align(size, ALIGN)
            .expect("at most HEAD + MAX_DATA rounded to a page, with a power-of-two alignment");
        // SAFETY: `layout` has a non-zero size (at least `HEAD`).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Self {
            ptr,
            layout,
            len: 0,
        }
    }

    /// Bytes of data the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.layout.size() - HEAD
    }

    /// Sets the data's length (at most the capacity).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "{len} bytes in a smaller buffer");
        self.len = len;
    }

    /// The whole allocation.
    fn all(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` bytes this buffer owns,
        // initialised (zeroed) at allocation; `&self` keeps them from
        // being written meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The whole allocation, writable.
    fn all_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `all`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// `header` in the bytes just before the data, and the header and the
    /// data as one slice: what goes on the stream for a reply with data.
    pub fn framed(&mut self, header: &[u8]) -> &[u8] {
        let start = HEAD - header.len();
        let end = HEAD + self.len;
        let all = self.all_mut();
        all[start..HEAD].copy_from_slice(header);
        &all[start..end]
    }
}

impl Deref for Buf {
    type Target = [u8];

    /// The data (`len` bytes, starting [`ALIGN`]-aligned).
    fn deref(&self) -> &[u8] {
        &self.all()[HEAD..HEAD + self.len]
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.all_mut()[HEAD..HEAD + len]
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this `layout` and is
        // freed only here, once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Freed buffers, by size class, for reuse.
pub struct Pool {
    free: Mutex<[Vec<Buf>; CLASSES]>,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self {
            free: Mutex::new(std::array::from_fn(|_| Vec::new())),
        }
    }

    /// A buffer holding `len` bytes of data (contents unspecified until
    /// filled). `len` must be at most [`MAX_DATA`].
    pub fn take(&self, len: usize) -> Buf {
        let class = class_of(len);
        let reused = self.lock()[class].pop();
        let mut buf = reused.unwrap_or_else(|| Buf::with_capacity(MIN_CLASS << class));
        buf.set_len(len);
        buf
    }

    /// Returns `buf` for reuse (or frees it, when its class holds enough).
    pub fn give(&self, buf: Buf) {
        let class = class_of(buf.capacity());
        if buf.capacity() != MIN_CLASS << class {
            return;
        }
        let mut free = self.lock();
        if free[class].len() < KEEP_PER_CLASS {
            free[class].push(buf);
        }
    }

    /// Buffers kept, over all classes.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.lock().iter().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Vec<Buf>; CLASSES]> {
        // A worker that panicked while holding the lock left the lists
        // whole (push and pop do not unwind half-way): keep using them.
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The class whose buffers hold `len` bytes: the smallest power-of-two
/// multiple of [`MIN_CLASS`] at least `len`.
fn class_of(len: usize) -> usize {
    let pages = len.max(1).div_ceil(MIN_CLASS).next_power_of_two();
    (pages.trailing_zeros() as usize).min(CLASSES - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_aligned_and_the_header_sits_just_before_it() {
        let mut b = Buf::with_capacity(512);
        assert_eq!(b.capacity(), ALIGN);
        b.set_len(512);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        b.fill(7);
        let framed = b.framed(&[1, 2, 3]).to_vec();
        assert_eq!(framed.len(), 3 + 512);
        assert_eq!(&framed[..3], &[1, 2, 3]);
        assert!(framed[3..].iter().all(|&x| x == 7));
    }

    #[test]
    fn classes_cover_every_request_size() {
        assert_eq!(CLASSES, 11);
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(512), 0);
        assert_eq!(class_of(4096), 0);
        assert_eq!(class_of(4097), 1);
        assert_eq!(class_of(MAX_DATA as usize), CLASSES - 1);
        for len in [1usize, 4096, 5000, 65536, 1 << 20, MAX_DATA as usize] {
            assert!(MIN_CLASS << class_of(len) >= len, "{len}");
        }
    }

    #[test]
    fn the_pool_reuses_and_bounds_what_it_keeps() {
        let pool = Pool::new();
        let b = pool.take(8192);
        assert_eq!(b.len(), 8192);
        let at = b.as_ptr();
        pool.give(b);
        assert_eq!(pool.kept(), 1);
        let again = pool.take(5000);
        assert_eq!(again.as_ptr(), at, "the same buffer, reused");
        assert_eq!(again.len(), 5000);
        let many: Vec<Buf> = (0..KEEP_PER_CLASS + 3).map(|_| pool.take(4096)).collect();
        for b in many {
            pool.give(b);
        }
        assert_eq!(pool.kept(), KEEP_PER_CLASS);
        // A buffer of no class's size is freed, not kept.
        pool.give(Buf::with_capacity(3 * ALIGN));
        assert_eq!(pool.kept(), KEEP_PER_CLASS);
        drop(again);
    }
}
