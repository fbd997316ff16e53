//! PL011 console output at IPA `0x0900_0000` (the QEMU `virt` UART that Stratum
//! also gives each VM). Transmit only: poll `FR.TXFF`, then write `DR`, each with
//! a single 32-bit access (see [`crate::mmio`]). `\n` is sent as `\r\n`.

use core::fmt::{self, Write};

use crate::mmio;

/// Base address of the PL011.
pub const PL011_BASE: usize = 0x0900_0000;
/// Data register.
pub const UARTDR: usize = 0x00;
/// Flag register.
pub const UARTFR: usize = 0x18;
/// Integer baud rate divisor (16 bits).
pub const UARTIBRD: usize = 0x24;
/// Fractional baud rate divisor (6 bits).
pub const UARTFBRD: usize = 0x28;
/// `FR.BUSY`: the UART is transmitting.
pub const FR_BUSY: u32 = 1 << 3;
/// `FR.RXFE`: receive FIFO empty.
pub const FR_RXFE: u32 = 1 << 4;
/// `FR.TXFF`: transmit FIFO full.
pub const FR_TXFF: u32 = 1 << 5;
/// `FR.TXFE`: transmit FIFO empty.
pub const FR_TXFE: u32 = 1 << 7;

/// Upper bound on `FR.TXFF` polls per character, so that a broken UART model
/// cannot hang a guest forever (the character is then dropped).
const TXFF_POLL_LIMIT: u32 = 10_000_000;

/// Reads the flag register.
pub fn flags() -> u32 {
    // SAFETY: FR is a read-only PL011 register without read side effects.
    unsafe { mmio::read32(PL011_BASE + UARTFR) }
}

/// Sends one byte, waiting (bounded) while the transmit FIFO is full.
pub fn put_byte(byte: u8) {
    let mut polls = 0;
    while flags() & FR_TXFF != 0 && polls < TXFF_POLL_LIMIT {
        polls += 1;
    }
    // SAFETY: DR is the PL011 data register; writing it transmits one character.
    unsafe { mmio::write32(PL011_BASE + UARTDR, u32::from(byte)) }
}

/// Sends `s`, turning `\n` into `\r\n`.
pub fn put_str(s: &str) {
    for byte in s.bytes() {
        if byte == b'\n' {
            put_byte(b'\r');
        }
        put_byte(byte);
    }
}

/// The console as a [`fmt::Write`] sink.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put_str(s);
        Ok(())
    }
}

/// Backend of [`print!`](crate::print): formats straight to the UART.
pub fn print_fmt(args: fmt::Arguments<'_>) {
    // Console::write_str never fails.
    let _ = Console.write_fmt(args);
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the guest console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::put_str("\n") };
    ($($arg:tt)*) => {{
        $crate::console::print_fmt(format_args!($($arg)*));
        $crate::console::put_str("\n");
    }};
}
