//! Memory and instruction barriers.

/// `dsb ish; isb`: completes prior memory and maintenance operations in the
/// inner-shareable domain and resynchronizes the instruction stream.
#[inline(always)]
pub fn dsb_ish_isb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: barriers have no effect besides ordering.
    unsafe {
        core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags));
    }
}

/// `isb`.
#[inline(always)]
pub fn isb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: barriers have no effect besides ordering.
    unsafe {
        core::arch::asm!("isb", options(nostack, preserves_flags));
    }
}

/// `dsb sy`.
#[inline(always)]
pub fn dsb_sy() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: barriers have no effect besides ordering.
    unsafe {
        core::arch::asm!("dsb sy", options(nostack, preserves_flags));
    }
}

/// Waits for an interrupt (`wfi`). It wakes on a pending physical interrupt
/// even while `PSTATE.I` masks it, so EL2 can idle with interrupts masked
/// and acknowledge whatever woke it.
#[inline(always)]
pub fn wfi() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `wfi` only pauses this CPU.
    unsafe {
        core::arch::asm!("dsb sy", "wfi", options(nomem, nostack, preserves_flags));
    }
}

/// Signals an event to every CPU (`sev`), waking those in `wfe`.
#[inline(always)]
pub fn sev() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `sev` only sets the event register of every CPU.
    unsafe {
        core::arch::asm!("dsb ish", "sev", options(nostack, preserves_flags));
    }
}

/// Waits for an event (`wfe`), used to park a CPU with nothing to do.
#[inline(always)]
pub fn wfe() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `wfe` only pauses this CPU.
    unsafe {
        core::arch::asm!("wfe", options(nomem, nostack, preserves_flags));
    }
}

/// `dmb ishld`: loads before it are ordered before loads and stores after
/// it (an acquire fence for memory shared with other CPUs).
#[inline(always)]
pub fn dmb_ishld() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: barriers have no effect besides ordering.
    unsafe {
        core::arch::asm!("dmb ishld", options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
}

/// `dmb ishst`: stores before it are visible before stores after it.
#[inline(always)]
pub fn dmb_ishst() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: barriers have no effect besides ordering.
    unsafe {
        core::arch::asm!("dmb ishst", options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
}

/// `dmb ish`: every access before it is ordered before every access after
/// it, in the inner-shareable domain.
#[inline(always)]
pub fn dmb_ish() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: barriers have no effect besides ordering.
    unsafe {
        core::arch::asm!("dmb ish", options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}
