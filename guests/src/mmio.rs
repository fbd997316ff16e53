//! Device register access with exactly one `ldr`/`str` per access (32-bit;
//! also 8-, 16- and 64-bit forms for the registers and tests that need them).
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

/// Reads the 8-bit device register at `addr` with one `ldrb w, [x]`.
///
/// # Safety
/// As for [`read32`], for a byte-accessible register.
pub unsafe fn read8(addr: usize) -> u8 {
    let value: u32;
    // SAFETY: the caller guarantees `addr` is a readable device register.
    unsafe {
        asm!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = out(reg) value,
             options(nostack, preserves_flags));
    }
    value as u8
}

/// Writes the 8-bit device register at `addr` with one `strb w, [x]`.
///
/// # Safety
/// As for [`write32`], for a byte-accessible register.
pub unsafe fn write8(addr: usize, value: u8) {
    // SAFETY: the caller guarantees `addr` is a writable device register.
    unsafe {
        asm!("strb {v:w}, [{a}]", a = in(reg) addr, v = in(reg) u32::from(value),
             options(nostack, preserves_flags));
    }
}

/// Writes 16 bits at `addr` with one `strh w, [x]` (for width tests: no GIC
/// register is architecturally halfword-accessible).
///
/// # Safety
/// As for [`write32`], with `addr` 2-byte aligned.
pub unsafe fn write16(addr: usize, value: u16) {
    // SAFETY: the caller guarantees the store is harmless (or its abort armed).
    unsafe {
        asm!("strh {v:w}, [{a}]", a = in(reg) addr, v = in(reg) u32::from(value),
             options(nostack, preserves_flags));
    }
}

/// Reads the 64-bit device register at `addr` with one `ldr x, [x]`.
///
/// # Safety
/// As for [`read32`], with `addr` 8-byte aligned and the register 64-bit
/// accessible.
pub unsafe fn read64(addr: usize) -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees `addr` is a readable device register.
    unsafe {
        asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) value,
             options(nostack, preserves_flags));
    }
    value
}

/// Writes the 64-bit device register at `addr` with one `str x, [x]`.
///
/// # Safety
/// As for [`write32`], with `addr` 8-byte aligned and the register 64-bit
/// accessible.
pub unsafe fn write64(addr: usize, value: u64) {
    // SAFETY: the caller guarantees `addr` is a writable device register.
    unsafe {
        asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) value,
             options(nostack, preserves_flags));
    }
}
