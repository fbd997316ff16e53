//! The hypervisor console: the physical PL011 named by the host device tree.
//!
//! Hypervisor messages are prefixed `[stratum]`; guest UART output is passed
//! through byte by byte.

use core::fmt::{self, Write};

use stratum_arch::pl011::Pl011;

use crate::sync::SpinLock;

static CONSOLE: SpinLock<Option<Pl011>> = SpinLock::new(None);

/// Starts using the PL011 at `base` (identity-mapped device memory).
pub fn init(base: usize) {
    // SAFETY: `base` comes from the host DT's UART node, inside the first
    // GiB that EL2 maps as device memory, and only this module drives it.
    *CONSOLE.lock() = Some(unsafe { Pl011::new(base) });
}

/// Writes formatted text (used by `log!`).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        let _ = uart.write_fmt(args);
    }
}

/// Writes formatted text even if another context holds the console lock
/// (panic path only: output may interleave, but it is never lost to a deadlock).
pub fn write_fmt_forced(args: fmt::Arguments<'_>, base: usize) {
    if let Some(mut guard) = CONSOLE.try_lock()
        && let Some(uart) = guard.as_mut()
    {
        let _ = uart.write_fmt(args);
        return;
    }
    if base != 0 {
        // SAFETY: same device as `init` used; the lock could not be taken,
        // so output may interleave with the holder's, which the panic path accepts.
        let mut uart = unsafe { Pl011::new(base) };
        let _ = uart.write_fmt(args);
    }
}

/// Sends one guest byte.
pub fn guest_byte(byte: u8) {
    if let Some(uart) = CONSOLE.lock().as_ref() {
        uart.put(byte);
    }
}

/// A byte typed on the console, if any.
pub fn poll_input() -> Option<u8> {
    CONSOLE.lock().as_ref().and_then(Pl011::try_get)
}

/// Prints a hypervisor message: `log!("...")` → `[stratum] ...\n`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("[stratum] {}\n", format_args!($($arg)*)))
    };
}
