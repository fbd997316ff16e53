//! Driver for the physical PL011 UART that carries the hypervisor's console.
//!
//! Writes poll for FIFO space; reads never block. The receive interrupt can
//! be enabled so that an idle CPU wakes when console input arrives. The
//! base address comes from the host device tree.

const DR: usize = 0x000;
const FR: usize = 0x018;
const IMSC: usize = 0x038;
const ICR: usize = 0x044;
/// Receive and receive-timeout interrupt bits (IMSC/ICR).
const RX_INTERRUPTS: u32 = (1 << 4) | (1 << 6);
const FR_TXFF: u32 = 1 << 5;
const FR_RXFE: u32 = 1 << 4;
const FR_BUSY: u32 = 1 << 3;

/// A physical PL011 at a fixed base address.
#[derive(Debug)]
pub struct Pl011 {
    base: usize,
}

impl Pl011 {
    /// Creates a driver for the PL011 at `base`.
    ///
    /// # Safety
    /// `base` must be the EL2 (identity-mapped, device memory) address of a
    /// PL011's 4 KiB register frame that nothing else drives concurrently.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    fn read(&self, off: usize) -> u32 {
        #[cfg(target_arch = "aarch64")]
        {
            let v: u32;
            // SAFETY: `new`'s contract: base + off is a PL011 register mapped
            // as device memory; a single 32-bit load is a valid access.
            unsafe {
                core::arch::asm!("ldr {v:w}, [{a}]", v = out(reg) v, a = in(reg) self.base + off,
                    options(nostack, preserves_flags, readonly));
            }
            v
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            let _ = (self.base, off);
            FR_RXFE
        }
    }

    fn write(&self, off: usize, v: u32) {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as in `read`; a single 32-bit store is a valid access.
        unsafe {
            core::arch::asm!("str {v:w}, [{a}]", v = in(reg) v, a = in(reg) self.base + off,
                options(nostack, preserves_flags));
        }
        #[cfg(not(target_arch = "aarch64"))]
        let _ = (off, v);
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    pub fn put(&self, byte: u8) {
        while self.read(FR) & FR_TXFF != 0 {}
        self.write(DR, u32::from(byte));
    }

    /// A received byte, if one is waiting.
    pub fn try_get(&self) -> Option<u8> {
        if self.read(FR) & FR_RXFE != 0 {
            None
        } else {
            Some((self.read(DR) & 0xff) as u8)
        }
    }

    /// Makes the UART raise its interrupt when input arrives (receive and
    /// receive-timeout), so an idle CPU wakes for console input.
    pub fn enable_rx_interrupt(&self) {
        self.write(ICR, RX_INTERRUPTS);
        self.write(IMSC, RX_INTERRUPTS);
    }

    /// Clears the receive interrupts after the FIFO was drained.
    pub fn clear_rx_interrupt(&self) {
        self.write(ICR, RX_INTERRUPTS);
    }

    /// Waits until every queued byte has left the UART.
    pub fn flush(&self) {
        while self.read(FR) & FR_BUSY != 0 {}
    }
}

impl core::fmt::Write for Pl011 {
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
