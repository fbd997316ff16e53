//! Data and instruction cache maintenance by address.
//!
//! A guest starts with its MMU off, so its first accesses are non-cacheable:
//! whatever EL2 wrote into guest memory through its cacheable mapping must be
//! cleaned to the point of coherency first.

/// Smallest data cache line size in bytes (from `CTR_EL0.DminLine`).
pub fn dcache_line_size() -> usize {
    #[cfg(target_arch = "aarch64")]
    {
        let ctr: u64;
        // SAFETY: reading CTR_EL0 has no side effects.
        unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
        4 << ((ctr >> 16) & 0xf)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        64
    }
}

/// Cleans and invalidates `[start, start + len)` to the point of coherency
/// (`dc civac` per line), then `dsb sy`.
///
/// `start` is a hypervisor virtual address (identity-mapped physical memory).
pub fn clean_inval_dcache_range(start: usize, len: usize) {
    let line = dcache_line_size();
    let mut addr = start & !(line - 1);
    let end = start.saturating_add(len);
    while addr < end {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `dc civac` on an address mapped at EL2 only affects cache
        // state; it never changes memory contents as seen by this CPU.
        unsafe {
            core::arch::asm!("dc civac, {}", in(reg) addr, options(nostack, preserves_flags));
        }
        addr += line;
    }
    crate::barrier::dsb_sy();
}

/// Invalidates all instruction caches to the point of unification, inner
/// shareable (`ic ialluis`), after new code was written for a guest.
pub fn invalidate_icache_all() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: invalidating instruction caches is always safe; it only costs refills.
    unsafe {
        core::arch::asm!(
            "ic ialluis",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}
