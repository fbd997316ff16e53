//! Single-instruction accessors for GIC register frames.
//!
//! Each access is exactly one `ldr`/`str` (or `ldrb`/`strb`) of the stated
//! width: a plain pointer dereference may compile to a paired or
//! post-indexed access, which a GIC (or, for our own guests, a hypervisor
//! emulating one) may not accept. On the host the same functions read and
//! write [`fake`], a per-thread byte map keyed by address.

/// Reads the 32-bit register at `addr`.
///
/// # Safety
/// `addr` must be the EL2 address (device memory) of a 4-byte aligned GIC
/// register that permits 32-bit reads.
#[inline]
pub(crate) unsafe fn read32(addr: usize) -> u32 {
    #[cfg(target_arch = "aarch64")]
    {
        let v: u32;
        // SAFETY: the caller guarantees `addr` is a readable 32-bit GIC
        // register; a single 32-bit load is a valid access.
        unsafe {
            core::arch::asm!("ldr {v:w}, [{a}]", v = out(reg) v, a = in(reg) addr,
                options(nostack, preserves_flags));
        }
        v
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        fake::load(addr, 4) as u32
    }
}

/// Writes the 32-bit register at `addr`.
///
/// # Safety
/// `addr` must be the EL2 address (device memory) of a 4-byte aligned GIC
/// register that permits 32-bit writes, and the value must keep the GIC
/// configuration the hypervisor relies on.
#[inline]
pub(crate) unsafe fn write32(addr: usize, v: u32) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as stated by the caller; a single 32-bit store.
    unsafe {
        core::arch::asm!("str {v:w}, [{a}]", v = in(reg) v, a = in(reg) addr,
            options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    fake::store(addr, 4, u64::from(v));
}

/// Writes the byte-accessible register byte at `addr` (`IPRIORITYR`,
/// `ITARGETSR`).
///
/// # Safety
/// As for [`write32`], for a GIC register byte that permits byte writes.
#[inline]
pub(crate) unsafe fn write8(addr: usize, v: u8) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as stated by the caller; a single byte store.
    unsafe {
        core::arch::asm!("strb {v:w}, [{a}]", v = in(reg) u32::from(v), a = in(reg) addr,
            options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    fake::store(addr, 1, u64::from(v));
}

/// Reads the 64-bit register at `addr` (`GICR_TYPER`).
///
/// # Safety
/// `addr` must be the EL2 address (device memory) of an 8-byte aligned GIC
/// register that permits 64-bit reads.
#[inline]
pub(crate) unsafe fn read64(addr: usize) -> u64 {
    #[cfg(target_arch = "aarch64")]
    {
        let v: u64;
        // SAFETY: the caller guarantees `addr` is a readable 64-bit GIC
        // register; a single 64-bit load is a valid access.
        unsafe {
            core::arch::asm!("ldr {v}, [{a}]", v = out(reg) v, a = in(reg) addr,
                options(nostack, preserves_flags));
        }
        v
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        fake::load(addr, 8)
    }
}

/// Writes the 64-bit register at `addr` (`GICD_IROUTER<n>`).
///
/// # Safety
/// As for [`write32`], for an 8-byte aligned register that permits 64-bit
/// writes.
#[inline]
pub(crate) unsafe fn write64(addr: usize, v: u64) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as stated by the caller; a single 64-bit store.
    unsafe {
        core::arch::asm!("str {v}, [{a}]", v = in(reg) v, a = in(reg) addr,
            options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    fake::store(addr, 8, v);
}

/// The host fake: a per-thread little-endian byte map standing in for GIC
/// register frames, and a log of every write.
///
/// Registers read back what was last written (or preset with [`fake::poke32`] /
/// [`fake::poke64`]); nothing clears itself, so a test that presets a "busy" bit
/// exercises the driver's timeout path.
#[cfg(not(target_arch = "aarch64"))]
pub mod fake {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// One logged write: address, width in bytes, value.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Write {
        /// Register address.
        pub addr: usize,
        /// Access width in bytes (1, 4 or 8).
        pub width: usize,
        /// Value written.
        pub value: u64,
    }

    #[derive(Default)]
    struct State {
        bytes: BTreeMap<usize, u8>,
        log: Vec<Write>,
    }

    std::thread_local! {
        static STATE: RefCell<State> = RefCell::new(State::default());
    }

    pub(crate) fn load(addr: usize, width: usize) -> u64 {
        STATE.with(|s| {
            let s = s.borrow();
            (0..width).fold(0, |v, i| {
                v | u64::from(*s.bytes.get(&(addr + i)).unwrap_or(&0)) << (8 * i)
            })
        })
    }

    fn set(s: &mut State, addr: usize, width: usize, value: u64) {
        for i in 0..width {
            s.bytes.insert(addr + i, (value >> (8 * i)) as u8);
        }
    }

    pub(crate) fn store(addr: usize, width: usize, value: u64) {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            set(&mut s, addr, width, value);
            s.log.push(Write { addr, width, value });
        });
    }

    /// Clears this thread's fake registers and write log.
    pub fn reset() {
        STATE.with(|s| *s.borrow_mut() = State::default());
    }

    /// Presets a 32-bit register without logging a write.
    pub fn poke32(addr: usize, value: u32) {
        STATE.with(|s| set(&mut s.borrow_mut(), addr, 4, u64::from(value)));
    }

    /// Presets a 64-bit register without logging a write.
    pub fn poke64(addr: usize, value: u64) {
        STATE.with(|s| set(&mut s.borrow_mut(), addr, 8, value));
    }

    /// The current value of a 32-bit register.
    pub fn peek32(addr: usize) -> u32 {
        load(addr, 4) as u32
    }

    /// The current value of a 64-bit register.
    pub fn peek64(addr: usize) -> u64 {
        load(addr, 8)
    }

    /// The current value of a register byte.
    pub fn peek8(addr: usize) -> u8 {
        load(addr, 1) as u8
    }

    /// Takes (and clears) the writes logged on this thread, in order.
    pub fn take_writes() -> Vec<Write> {
        STATE.with(|s| core::mem::take(&mut s.borrow_mut().log))
    }
}
