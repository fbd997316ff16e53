//! The clock the tests are timed with: the generic timer's virtual counter
//! (`CNTVCT_EL0`), which Linux lets userspace read (`CNTKCTL_EL1.EL0VCTEN`,
//! set for the vDSO). Under QEMU `-icount shift=4` on `virt` one tick is one
//! executed instruction, at every exception level.
//!
//! Each reading is preceded by an `ISB`, so it is taken after every earlier
//! instruction completed. The asm blocks are not marked `nomem`: the
//! compiler must not move memory accesses of the timed code across them.
//!
//! On other architectures (host unit tests) the counter is the monotonic
//! clock in nanoseconds.

/// The counter now.
#[cfg(target_arch = "aarch64")]
pub fn now() -> u64 {
    let ticks: u64;
    // SAFETY: `isb` and a read of CNTVCT_EL0, which the kernel lets EL0
    // read; no memory is touched and nothing else changes.
    unsafe {
        core::arch::asm!("isb", "mrs {t}, cntvct_el0", t = out(reg) ticks, options(nostack));
    }
    ticks
}

/// The counter's frequency in Hz (`CNTFRQ_EL0`).
#[cfg(target_arch = "aarch64")]
pub fn frequency() -> u64 {
    let hz: u64;
    // SAFETY: a read of CNTFRQ_EL0, readable at EL0 whenever the counter
    // is; no memory is touched.
    unsafe {
        core::arch::asm!("mrs {f}, cntfrq_el0", f = out(reg) hz, options(nomem, nostack));
    }
    hz
}

/// The counter now (the monotonic clock, in nanoseconds).
#[cfg(not(target_arch = "aarch64"))]
pub fn now() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    let nanos = START.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// The counter's frequency in Hz (nanoseconds).
#[cfg(not(target_arch = "aarch64"))]
pub fn frequency() -> u64 {
    1_000_000_000
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_counter_moves_forward() {
        let a = super::now();
        let mut x = 0u64;
        for i in 0..10_000 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let b = super::now();
        assert!(b >= a, "{a} then {b} ({x})");
        assert!(super::frequency() > 0);
    }
}
