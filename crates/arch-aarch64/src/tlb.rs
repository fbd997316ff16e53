//! TLB maintenance for stage-2 and guest translations.

/// Invalidates every stage-1 and stage-2 entry of the VMID currently in
/// `VTTBR_EL2`, on all CPUs of the inner-shareable domain (`tlbi vmalls12e1is`).
///
/// Call after changing a VM's stage-2 tables or before reusing its VMID.
pub fn invalidate_current_vmid() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: invalidation only drops cached translations; the tables stay
    // authoritative.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vmalls12e1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Invalidates all EL2 translations on all CPUs (`tlbi alle2is`).
pub fn invalidate_el2_all() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: invalidation only drops cached translations.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi alle2is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Translates a guest virtual address through the guest's stage 1 and the
/// VM's stage 2 (`at s12e1r`), as a read from EL1.
///
/// Returns the physical address, or `None` if either stage faults. The
/// guest's `PAR_EL1` is preserved.
pub fn translate_guest_read(gva: u64) -> Option<u64> {
    #[cfg(target_arch = "aarch64")]
    {
        let saved = crate::sysreg::par_el1();
        let par: u64;
        // SAFETY: `at` only writes PAR_EL1, which is restored below.
        unsafe {
            core::arch::asm!("at s12e1r, {va}", "isb", "mrs {par}, par_el1",
                va = in(reg) gva, par = out(reg) par, options(nostack, preserves_flags));
        }
        crate::sysreg::set_par_el1(saved);
        if par & 1 != 0 {
            None
        } else {
            Some((par & 0x000f_ffff_ffff_f000) | (gva & 0xfff))
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        let _ = gva;
        None
    }
}
