//! A minimal global cell for the guest runtime.
//!
//! Guests run on a single vCPU with interrupts masked, and the MMU off (so
//! exclusive/atomic instructions on what is then Device memory are best avoided).
//! The only code that can run "between" two statements is the synchronous
//! exception handler, entered from inside an inline-asm block that the compiler
//! treats as a full memory barrier. Volatile accesses are therefore enough.

use core::cell::UnsafeCell;

/// A `Copy` value shared between guest code and its exception handler.
pub struct Global<T: Copy>(UnsafeCell<T>);

// SAFETY: the guest is single-threaded (one vCPU, interrupts masked); the
// exception handler only runs synchronously inside asm blocks, never in the
// middle of a `get`/`set`, so accesses never overlap.
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
