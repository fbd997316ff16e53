//! Device register access with exactly one 32-bit `ldr`/`str` per access.
//!
//! Plain pointer accesses may compile to paired or writeback forms, whose data
//! aborts carry no syndrome (`ESR.ISV == 0`). These accessors always produce a
//! single-register, no-writeback access, so a hypervisor can emulate them from
//! the syndrome alone. (The `isv0` guest issues the other forms on purpose.)

use core::arch::asm;

/// Reads the 32-bit device register at `addr` with one `ldr w, [x]`.
///
/// # Safety
/// `addr` must be a 4-byte-aligned device register (or an address whose abort
/// the caller has armed [`crate::exception::expect_abort`] for), and reading it
/// must have no side effect that breaks the caller's assumptions.
pub unsafe fn read32(addr: usize) -> u32 {
    let value: u32;
    // SAFETY: the caller guarantees `addr` is a readable device register.
    unsafe {
        asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) value,
             options(nostack, preserves_flags));
    }
    value
}

/// Writes the 32-bit device register at `addr` with one `str w, [x]`.
///
/// # Safety
/// `addr` must be a 4-byte-aligned device register (or an armed faulting
/// address) for which writing `value` is harmless to the running guest.
pub unsafe fn write32(addr: usize, value: u32) {
    // SAFETY: the caller guarantees `addr` is a writable device register.
    unsafe {
        asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value,
             options(nostack, preserves_flags));
    }
}
