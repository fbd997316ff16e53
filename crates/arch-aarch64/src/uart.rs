//! Drivers for the physical UART that carries the hypervisor's console:
//! Arm PL011 (QEMU `virt`), Cadence (Xilinx ZynqMP) and 8250/16550-style
//! (DesignWare APB UARTs of RK3588-class boards). Which one, where, and
//! the 16550's register spacing come from the host device tree
//! ([`stratum_core::platform::UartKind`]).
//!
//! All three do the same few things: send a byte when the transmitter
//! has room, take a received byte if one waits (never blocking), raise
//! their interrupt when input arrives (so an idle CPU wakes for console
//! input) and clear it, and wait until everything sent has left. The
//! firmware or boot loader has set the line up (baud rate, format); the
//! drivers leave that alone. The register accesses go through [`Regs`]:
//! device memory at EL2 ([`Mmio`]), or a model of the device in the host
//! tests.

use stratum_core::platform::UartKind;

/// Register access at byte offsets from a device's base.
pub trait Regs {
    /// Reads the register at `off`, `width` bytes wide (1 or 4).
    fn read(&self, off: usize, width: u8) -> u32;
    /// Writes the register at `off`, `width` bytes wide (1 or 4).
    fn write(&self, off: usize, width: u8, value: u32);
}

/// A device's registers in EL2's identity-mapped device memory.
#[derive(Debug)]
pub struct Mmio {
    base: usize,
}

impl Mmio {
    /// The registers at `base`.
    ///
    /// # Safety
    /// `base` must be the EL2 (identity-mapped, device memory) address of
    /// the register frame of a device that nothing else drives concurrently.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }
}

impl Regs for Mmio {
    fn read(&self, off: usize, width: u8) -> u32 {
        #[cfg(target_arch = "aarch64")]
        {
            let v: u32;
            let a = self.base + off;
            // SAFETY: `new`'s contract: base + off is a device register
            // mapped as device memory; one load of its width is valid.
            unsafe {
                if width == 1 {
                    core::arch::asm!("ldrb {v:w}, [{a}]", v = out(reg) v, a = in(reg) a,
                        options(nostack, preserves_flags, readonly));
                } else {
                    core::arch::asm!("ldr {v:w}, [{a}]", v = out(reg) v, a = in(reg) a,
                        options(nostack, preserves_flags, readonly));
                }
            }
            v
        }
        #[cfg(not(target_arch = "aarch64"))]
        panic!(
            "MMIO read of {:#x} (+{off:#x}, {width} bytes) on the host",
            self.base
        )
    }

    fn write(&self, off: usize, width: u8, value: u32) {
        #[cfg(target_arch = "aarch64")]
        {
            let a = self.base + off;
            // SAFETY: as in `read`; one store of the register's width.
            unsafe {
                if width == 1 {
                    core::arch::asm!("strb {v:w}, [{a}]", v = in(reg) value, a = in(reg) a,
                        options(nostack, preserves_flags));
                } else {
                    core::arch::asm!("str {v:w}, [{a}]", v = in(reg) value, a = in(reg) a,
                        options(nostack, preserves_flags));
                }
            }
        }
        #[cfg(not(target_arch = "aarch64"))]
        panic!(
            "MMIO write of {value:#x} to {:#x} (+{off:#x}, {width} bytes) on the host",
            self.base
        )
    }
}

/// PL011 registers and bits.
mod pl011 {
    pub const DR: usize = 0x000;
    pub const FR: usize = 0x018;
    pub const IMSC: usize = 0x038;
    pub const ICR: usize = 0x044;
    /// Receive and receive-timeout interrupts (IMSC/ICR).
    pub const RX_INTERRUPTS: u32 = (1 << 4) | (1 << 6);
    pub const FR_TXFF: u32 = 1 << 5;
    pub const FR_RXFE: u32 = 1 << 4;
    pub const FR_BUSY: u32 = 1 << 3;
    pub const CR: usize = 0x030;
    /// CR: UART, transmit and receive enables.
    pub const CR_ENABLES: u32 = (1 << 0) | (1 << 8) | (1 << 9);
}

/// Cadence UART registers and bits (Zynq UltraScale+ TRM, UART).
mod cadence {
    pub const CR: usize = 0x00;
    /// CR: receive and transmit enables, and their disables.
    pub const CR_RX_EN: u32 = 1 << 2;
    pub const CR_RX_DIS: u32 = 1 << 3;
    pub const CR_TX_EN: u32 = 1 << 4;
    pub const CR_TX_DIS: u32 = 1 << 5;
    pub const IER: usize = 0x08;
    pub const ISR: usize = 0x14;
    pub const RXWM: usize = 0x20;
    pub const SR: usize = 0x2C;
    pub const FIFO: usize = 0x30;
    /// Interrupts: receive FIFO trigger (RXWM reached), receive timeout.
    pub const RX_INTERRUPTS: u32 = (1 << 0) | (1 << 8);
    pub const SR_RXEMPTY: u32 = 1 << 1;
    pub const SR_TXEMPTY: u32 = 1 << 3;
    pub const SR_TXFULL: u32 = 1 << 4;
    pub const SR_TACTIVE: u32 = 1 << 11;
}

/// 8250/16550 register indexes and bits (before `reg-shift`).
mod ns16550 {
    /// Receive buffer (read) / transmit holding (write).
    pub const RBR_THR: usize = 0;
    pub const IER: usize = 1;
    pub const LSR: usize = 5;
    /// IER: received data available.
    pub const IER_RDA: u32 = 1 << 0;
    pub const LSR_DR: u32 = 1 << 0;
    pub const LSR_THRE: u32 = 1 << 5;
    pub const LSR_TEMT: u32 = 1 << 6;
}

/// The console UART: one of the three kinds, over registers `R`.
#[derive(Debug)]
pub struct HostUart<R: Regs = Mmio> {
    kind: UartKind,
    regs: R,
}

impl HostUart<Mmio> {
    /// The console UART of `kind` at `base`.
    ///
    /// # Safety
    /// As [`Mmio::new`]: `base` is the device memory of a UART of that kind
    /// that nothing else drives.
    pub const unsafe fn new(kind: UartKind, base: usize) -> Self {
        Self {
            kind,
            // SAFETY: the caller's contract is Mmio::new's.
            regs: unsafe { Mmio::new(base) },
        }
    }
}

impl<R: Regs> HostUart<R> {
    /// A driver of `kind` over `regs` (the host tests' device models).
    pub const fn with_regs(kind: UartKind, regs: R) -> Self {
        Self { kind, regs }
    }

    /// The registers (for the host tests to look at their model).
    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// 16550 register `index`: its offset and access width.
    fn ns(&self, index: usize) -> (usize, u8) {
        match self.kind {
            UartKind::Ns16550 {
                reg_shift,
                io_width,
            } => (index << reg_shift, io_width),
            _ => (index, 1),
        }
    }

    fn ns_read(&self, index: usize) -> u32 {
        let (off, width) = self.ns(index);
        self.regs.read(off, width)
    }

    fn ns_write(&self, index: usize, value: u32) {
        let (off, width) = self.ns(index);
        self.regs.write(off, width, value);
    }

    /// Turns the transmitter and receiver on if firmware left them off
    /// (the Cadence UART resets with both disabled; a PL011 needs UARTEN),
    /// leaving line settings (baud rate, format) as firmware set them. A
    /// UART already on is not written. The 16550 has no such switch.
    pub fn enable(&self) {
        match self.kind {
            UartKind::Pl011 => {
                let cr = self.regs.read(pl011::CR, 4);
                if cr & pl011::CR_ENABLES != pl011::CR_ENABLES {
                    self.regs.write(pl011::CR, 4, cr | pl011::CR_ENABLES);
                }
            }
            UartKind::Cadence => {
                use cadence::{CR_RX_DIS, CR_RX_EN, CR_TX_DIS, CR_TX_EN};
                let cr = self.regs.read(cadence::CR, 4);
                let on = (cr & !(CR_RX_DIS | CR_TX_DIS)) | CR_RX_EN | CR_TX_EN;
                if on != cr {
                    self.regs.write(cadence::CR, 4, on);
                }
            }
            UartKind::Ns16550 { .. } => {}
        }
    }

    /// Sends one byte, waiting while the transmitter is full.
    pub fn put(&self, byte: u8) {
        let b = u32::from(byte);
        match self.kind {
            UartKind::Pl011 => {
                while self.regs.read(pl011::FR, 4) & pl011::FR_TXFF != 0 {}
                self.regs.write(pl011::DR, 4, b);
            }
            UartKind::Cadence => {
                while self.regs.read(cadence::SR, 4) & cadence::SR_TXFULL != 0 {}
                self.regs.write(cadence::FIFO, 4, b);
            }
            UartKind::Ns16550 { .. } => {
                while self.ns_read(ns16550::LSR) & ns16550::LSR_THRE == 0 {}
                self.ns_write(ns16550::RBR_THR, b);
            }
        }
    }

    /// A received byte, if one is waiting.
    pub fn try_get(&self) -> Option<u8> {
        let waiting = match self.kind {
            UartKind::Pl011 => self.regs.read(pl011::FR, 4) & pl011::FR_RXFE == 0,
            UartKind::Cadence => self.regs.read(cadence::SR, 4) & cadence::SR_RXEMPTY == 0,
            UartKind::Ns16550 { .. } => self.ns_read(ns16550::LSR) & ns16550::LSR_DR != 0,
        };
        if !waiting {
            return None;
        }
        let v = match self.kind {
            UartKind::Pl011 => self.regs.read(pl011::DR, 4),
            UartKind::Cadence => self.regs.read(cadence::FIFO, 4),
            UartKind::Ns16550 { .. } => self.ns_read(ns16550::RBR_THR),
        };
        Some((v & 0xff) as u8)
    }

    /// Makes the UART raise its interrupt when input arrives.
    pub fn enable_rx_interrupt(&self) {
        match self.kind {
            UartKind::Pl011 => {
                self.regs.write(pl011::ICR, 4, pl011::RX_INTERRUPTS);
                self.regs.write(pl011::IMSC, 4, pl011::RX_INTERRUPTS);
            }
            UartKind::Cadence => {
                // Trigger at one byte, as well as on the receive timeout.
                self.regs.write(cadence::RXWM, 4, 1);
                self.regs.write(cadence::ISR, 4, cadence::RX_INTERRUPTS);
                self.regs.write(cadence::IER, 4, cadence::RX_INTERRUPTS);
            }
            UartKind::Ns16550 { .. } => self.ns_write(ns16550::IER, ns16550::IER_RDA),
        }
    }

    /// Clears the receive interrupt after the input was drained. (A
    /// 16550's clears itself when its receive buffer is read empty.)
    pub fn clear_rx_interrupt(&self) {
        match self.kind {
            UartKind::Pl011 => self.regs.write(pl011::ICR, 4, pl011::RX_INTERRUPTS),
            UartKind::Cadence => self.regs.write(cadence::ISR, 4, cadence::RX_INTERRUPTS),
            UartKind::Ns16550 { .. } => {}
        }
    }

    /// Waits until every queued byte has left the UART.
    pub fn flush(&self) {
        match self.kind {
            UartKind::Pl011 => while self.regs.read(pl011::FR, 4) & pl011::FR_BUSY != 0 {},
            UartKind::Cadence => loop {
                let sr = self.regs.read(cadence::SR, 4);
                if sr & cadence::SR_TXEMPTY != 0 && sr & cadence::SR_TACTIVE == 0 {
                    break;
                }
            },
            UartKind::Ns16550 { .. } => {
                while self.ns_read(ns16550::LSR) & ns16550::LSR_TEMT == 0 {}
            }
        }
    }
}

impl<R: Regs> core::fmt::Write for HostUart<R> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
