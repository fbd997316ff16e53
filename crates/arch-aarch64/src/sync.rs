//! Locks for EL2: a test-and-test-and-set spinlock and a write-once cell.
//! (The MMU and caches are on before any Rust code runs, so exclusive loads
//! and stores work.) Plain atomics, so they run and are tested on the host
//! too.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// A test-and-test-and-set spinlock.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialized by `locked`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new, unlocked lock.
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Spins until the lock is free, then takes it.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        loop {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return SpinGuard { lock: self };
            }
            wait_while_set(&self.locked);
        }
    }

    /// Takes the lock if it is free (used by the panic path, which must not
    /// deadlock on a lock its own CPU holds).
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| SpinGuard { lock: self })
    }
}

/// Waits until `flag` reads false. On AArch64 the CPU waits for an event
/// (`WFE`) between looks, with the flag's byte in its exclusive monitor: the
/// holder's releasing store clears the monitor, which is an event, so the
/// waiter looks again at once, and meanwhile it neither burns power nor, on
/// an emulator that runs CPUs in turn (QEMU's `-icount`), its turn: there
/// `WFE` hands the turn on, where a spin would run out the clock until the
/// holder ran again. Elsewhere (host tests) it spins.
#[inline]
fn wait_while_set(flag: &AtomicBool) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a load-exclusive of the flag's own byte (no store), and `WFE`,
    // which only pauses this CPU until an event; the local event register is
    // cleared first (`SEVL; WFE`) so a stale event cannot end the first wait.
    unsafe {
        core::arch::asm!(
            "sevl",
            "wfe",
            "2:",
            "ldxrb {v:w}, [{p}]",
            "cbz {v:w}, 3f",
            "wfe",
            "b 2b",
            "3:",
            p = in(reg) flag.as_ptr(),
            v = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
    #[cfg(not(target_arch = "aarch64"))]
    while flag.load(Ordering::Relaxed) {
        core::hint::spin_loop();
    }
}

/// Holds a [`SpinLock`] until dropped.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves this CPU holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves this CPU holds the lock exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A value written once (at boot, before other CPUs or guests run) and read
/// without a lock afterwards.
pub struct Once<T> {
    ready: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: the value is written once, before `ready` is released; readers
// only read it after acquiring `ready`, and nothing writes it again.
unsafe impl<T: Send + Sync> Sync for Once<T> {}

impl<T> Default for Once<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Once<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Self {
            ready: AtomicBool::new(false),
            value: UnsafeCell::new(None),
        }
    }

    /// Stores the value. Panics on a second call: these are boot-time facts.
    pub fn set(&self, value: T) {
        assert!(
            !self.ready.load(Ordering::Acquire),
            "a boot-time value set twice"
        );
        // SAFETY: not ready yet, so no reader looks at the value, and only
        // the boot CPU sets it (before starting the others).
        unsafe { *self.value.get() = Some(value) };
        self.ready.store(true, Ordering::Release);
    }

    /// The value, once set.
    pub fn get(&self) -> Option<&T> {
        if self.ready.load(Ordering::Acquire) {
            // SAFETY: ready: the value was written before and never changes.
            unsafe { (*self.value.get()).as_ref() }
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_serializes_increments_across_threads() {
        static COUNTER: SpinLock<u64> = SpinLock::new(0);
        const THREADS: u64 = 4;
        const EACH: u64 = 20_000;
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..EACH {
                        // A read-modify-write that loses updates unless the
                        // lock excludes the others.
                        let mut g = COUNTER.lock();
                        let v = *g;
                        std::hint::black_box(v);
                        *g = v + 1;
                    }
                });
            }
        });
        assert_eq!(*COUNTER.lock(), THREADS * EACH);
    }

    #[test]
    fn try_lock_fails_while_held_and_succeeds_after() {
        let lock = SpinLock::new(5);
        let held = lock.lock();
        assert!(lock.try_lock().is_none());
        drop(held);
        let mut again = lock.try_lock().expect("free again");
        *again += 1;
        drop(again);
        assert_eq!(*lock.lock(), 6);
    }

    #[test]
    fn a_once_cell_is_empty_until_set_and_refuses_a_second_value() {
        let cell = Once::new();
        assert_eq!(cell.get(), None);
        cell.set(7u32);
        assert_eq!(cell.get(), Some(&7));
        let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cell.set(8)));
        assert!(second.is_err(), "a second set panics");
        assert_eq!(cell.get(), Some(&7));
    }
}
