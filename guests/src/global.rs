//! A minimal global cell for the guest runtime.
//!
//! Guests run on a single vCPU with the MMU off (so exclusive/atomic
//! instructions on what is then Device memory are best avoided). Code that can
//! run "between" two statements is the synchronous exception handler, entered
//! from inside an inline-asm block that the compiler treats as a full memory
//! barrier, and — in the interrupt guests, while IRQs are unmasked — an IRQ
//! handler. Volatile accesses are therefore enough: each `get`/`set` of a
//! value of at most 64 bits is one load or store, which an interrupt cannot
//! split. A read-modify-write (`set(get() + 1)`) is not atomic: only do it on
//! a cell no interrupt handler writes meanwhile (e.g. in the handler itself).

use core::cell::UnsafeCell;

/// A `Copy` value shared between guest code and its exception handler.
pub struct Global<T: Copy>(UnsafeCell<T>);

// SAFETY: the guest is single-threaded (one vCPU); handlers run on the same
// CPU, and each access is a single volatile load or store of a `Copy` value,
// so no access observes a torn value from another (see the module docs for
// the read-modify-write rule).
unsafe impl<T: Copy> Sync for Global<T> {}

impl<T: Copy> Global<T> {
    /// A cell holding `value`.
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// Reads the current value.
    pub fn get(&self) -> T {
        // SAFETY: the pointer comes from a live `UnsafeCell`; see the `Sync`
        // impl for why no access can overlap this one.
        unsafe { self.0.get().read_volatile() }
    }

    /// Replaces the current value.
    pub fn set(&self, value: T) {
        // SAFETY: as for `get`.
        unsafe { self.0.get().write_volatile(value) }
    }
}

/// An array of cells with the same rules as [`Global`], for per-INTID
/// counters and event logs.
pub struct GlobalArray<T: Copy, const N: usize>(UnsafeCell<[T; N]>);

// SAFETY: as for `Global`: single CPU, one volatile access per element.
unsafe impl<T: Copy, const N: usize> Sync for GlobalArray<T, N> {}

impl<T: Copy, const N: usize> GlobalArray<T, N> {
    /// Every element `value`.
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new([value; N]))
    }

    /// Element `i`. Panics (failing the test) if `i >= N`.
    pub fn get(&self, i: usize) -> T {
        assert!(i < N, "GlobalArray index {i} out of bounds");
        // SAFETY: `i < N`, so the pointer is to an element of the live array;
        // see `Global` for why accesses cannot overlap.
        unsafe { self.0.get().cast::<T>().add(i).read_volatile() }
    }

    /// Sets element `i`. Panics (failing the test) if `i >= N`.
    pub fn set(&self, i: usize, value: T) {
        assert!(i < N, "GlobalArray index {i} out of bounds");
        // SAFETY: as for `get`.
        unsafe { self.0.get().cast::<T>().add(i).write_volatile(value) }
    }

    /// Sets every element to `value`.
    pub fn fill(&self, value: T) {
        for i in 0..N {
            self.set(i, value);
        }
    }
}
