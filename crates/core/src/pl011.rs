//! The emulated PL011 UART each VM gets: a register-accurate model of the
//! ARM PrimeCell UART (PL011) TRM r1p5 (DDI 0183G), as Linux's `amba-pl011`
//! driver, its earlycon and simple polled drivers use it.
//!
//! Model and its deliberate simplifications:
//! - **Transmit is instantaneous.** A byte written to UARTDR goes straight to
//!   the caller's sink, so the transmit FIFO is always empty: UARTFR.TXFE is
//!   set, TXFF and BUSY are clear. Like QEMU, bytes are transmitted whether
//!   or not UARTCR.UARTEN/TXE are set (early boot code often writes UARTDR
//!   before enabling the UART). With UARTCR.LBE set, a written byte loops
//!   back into the receive FIFO instead.
//! - **Transmit interrupt.** The TRM raises TXINTR when the transmit FIFO
//!   drains through its trigger level after data was written, not merely
//!   because it is empty. Each write to UARTDR therefore (after the instant
//!   transmission) sets UARTRIS.TXRIS; UARTICR clears it. Out of reset it is
//!   clear.
//! - **Receive FIFO.** 32 entries with FEN set in UARTLCR_H, otherwise a
//!   1-entry holding register. Changing FEN empties it (as QEMU does).
//!   Received bytes are accepted whether or not RXE is set. RXRIS is set
//!   while the FIFO holds at least the UARTIFLS trigger level (1 entry
//!   without FEN); the receive timeout RTRIS, which hardware raises after 32
//!   idle bit periods, is raised at once while data sits below the level.
//!   Both are re-evaluated whenever a byte arrives or is read, or FEN/IFLS
//!   change, and UARTICR clears them until then.
//! - **Overrun.** A byte pushed into a full FIFO is dropped and counted; OE
//!   is set in UARTRSR and UARTRIS at once, and on the next character that
//!   enters the FIFO (its UARTDR bit 11), as the TRM describes.
//! - **No modem lines:** CTS/DSR/DCD/RI read as deasserted and their
//!   interrupts never fire. Baud rate, line control and DMA registers are
//!   storage only.
//! - **Accesses:** 8-, 16- and 32-bit, naturally aligned, anywhere in the
//!   4 KiB page. A narrower access at an offset inside a register reads or
//!   writes those bytes of it; only an access that includes byte 0 of UARTDR
//!   pops (or transmits) data. Reserved offsets read as zero and ignore
//!   writes, as do writes to read-only registers. 64-bit accesses,
//!   misaligned offsets and offsets outside the page are errors (the
//!   hypervisor injects an abort).
//!
//! The ID registers identify r1p5 (UARTPeriphID2 = 0x34, revision 3), whose
//! FIFOs are 32 deep; Linux sizes its FIFO use by this revision.

use crate::access::AccessSize;
use crate::bus::{AccessRefused, DeviceAccess, Effects, MmioDevice};

/// Depth of each FIFO when enabled.
pub const FIFO_DEPTH: usize = 32;
/// Size of the register page.
pub const MMIO_SIZE: u64 = 0x1000;

const UARTDR: u64 = 0x000;
const UARTRSR: u64 = 0x004;
const UARTFR: u64 = 0x018;
const UARTILPR: u64 = 0x020;
const UARTIBRD: u64 = 0x024;
const UARTFBRD: u64 = 0x028;
const UARTLCR_H: u64 = 0x02C;
const UARTCR: u64 = 0x030;
const UARTIFLS: u64 = 0x034;
const UARTIMSC: u64 = 0x038;
const UARTRIS: u64 = 0x03C;
const UARTMIS: u64 = 0x040;
const UARTICR: u64 = 0x044;
const UARTDMACR: u64 = 0x048;
const ID_BASE: u64 = 0xFE0;

/// UARTPeriphID0..3 then UARTPCellID0..3 (TRM r1p5 section 3.3).
const ID_REGS: [u32; 8] = [0x11, 0x10, 0x34, 0x00, 0x0D, 0xF0, 0x05, 0xB1];

/// UARTDR receive error bits.
const DR_FE: u16 = 1 << 8;
const DR_PE: u16 = 1 << 9;
const DR_BE: u16 = 1 << 10;
const DR_OE: u16 = 1 << 11;
/// UARTRSR bits.
const RSR_OE: u32 = 1 << 3;
/// UARTFR bits.
const FR_RXFE: u32 = 1 << 4;
const FR_RXFF: u32 = 1 << 6;
const FR_TXFE: u32 = 1 << 7;
/// UARTLCR_H.FEN.
const LCRH_FEN: u32 = 1 << 4;
/// UARTCR.LBE and the implemented UARTCR bits (6:3 are reserved).
const CR_LBE: u32 = 1 << 7;
const CR_MASK: u32 = 0xFF87;
const CR_RESET: u32 = 0x0300;
const IFLS_RESET: u32 = 0x12;

/// Interrupt bits, shared by UARTIMSC, UARTRIS, UARTMIS and UARTICR.
pub mod int {
    /// Receive.
    pub const RX: u32 = 1 << 4;
    /// Transmit.
    pub const TX: u32 = 1 << 5;
    /// Receive timeout.
    pub const RT: u32 = 1 << 6;
    /// Framing error.
    pub const FE: u32 = 1 << 7;
    /// Parity error.
    pub const PE: u32 = 1 << 8;
    /// Break error.
    pub const BE: u32 = 1 << 9;
    /// Overrun error.
    pub const OE: u32 = 1 << 10;
    /// All eleven interrupt bits (modem ones included).
    pub const ALL: u32 = 0x7FF;
}

/// Why an access was refused. The variant docs are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartError {
    /// 64-bit accesses to the PL011 are not supported.
    UnsupportedWidth,
    /// The offset lies outside the PL011's 4 KiB register page.
    OutOfRange,
    /// The offset is not a multiple of the access size.
    Misaligned,
}

impl core::fmt::Display for UartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::UnsupportedWidth => "PL011: 64-bit access",
            Self::OutOfRange => "PL011: offset outside the register page",
            Self::Misaligned => "PL011: misaligned access",
        })
    }
}

/// One emulated PL011.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pl011 {
    /// Receive FIFO entries: data in bits 7:0, error flags in 11:8.
    rx: [u16; FIFO_DEPTH],
    rx_head: usize,
    rx_count: usize,
    /// An overrun happened; the next character received carries DR.OE.
    overrun_pending: bool,
    overruns: u64,
    rsr: u32,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    ris: u32,
    dmacr: u32,
}

impl Default for Pl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011 {
    /// A UART in its reset state.
    pub const fn new() -> Self {
        Self {
            rx: [0; FIFO_DEPTH],
            rx_head: 0,
            rx_count: 0,
            overrun_pending: false,
            overruns: 0,
            rsr: 0,
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: CR_RESET,
            ifls: IFLS_RESET,
            imsc: 0,
            ris: 0,
            dmacr: 0,
        }
    }

    /// Returns to the reset state (the receive FIFO is emptied and the
    /// overrun count cleared).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Whether the interrupt line is asserted: `(RIS & IMSC) != 0`.
    pub fn irq_pending(&self) -> bool {
        self.ris & self.imsc != 0
    }

    /// Bytes dropped because the receive FIFO was full.
    pub fn rx_overruns(&self) -> u64 {
        self.overruns
    }

    fn fifo_enabled(&self) -> bool {
        self.lcr_h & LCRH_FEN != 0
    }

    fn rx_depth(&self) -> usize {
        if self.fifo_enabled() { FIFO_DEPTH } else { 1 }
    }

    /// The receive interrupt trigger level, in entries.
    fn rx_trigger(&self) -> usize {
        if !self.fifo_enabled() {
            return 1;
        }
        // RXIFLSEL: 1/8, 1/4, 1/2, 3/4, 7/8 full; reserved encodings act as
        // the reset value (1/2).
        match (self.ifls >> 3) & 7 {
            0 => FIFO_DEPTH / 8,
            1 => FIFO_DEPTH / 4,
            3 => FIFO_DEPTH * 3 / 4,
            4 => FIFO_DEPTH * 7 / 8,
            _ => FIFO_DEPTH / 2,
        }
    }

    /// Free receive entries.
    pub fn rx_space(&self) -> usize {
        self.rx_depth().saturating_sub(self.rx_count)
    }

    /// Delivers a received byte. Returns `false` when the FIFO is full: the
    /// byte is dropped and counted, and an overrun is flagged.
    pub fn push_rx(&mut self, byte: u8) -> bool {
        if self.rx_space() == 0 {
            self.overruns = self.overruns.saturating_add(1);
            self.overrun_pending = true;
            self.rsr |= RSR_OE;
            self.ris |= int::OE;
            return false;
        }
        let mut entry = u16::from(byte);
        if core::mem::take(&mut self.overrun_pending) {
            entry |= DR_OE;
        }
        let tail = (self.rx_head + self.rx_count) % FIFO_DEPTH;
        if let Some(slot) = self.rx.get_mut(tail) {
            *slot = entry;
            self.rx_count += 1;
        }
        self.update_rx_interrupts();
        true
    }

    fn pop_rx(&mut self) -> Option<u16> {
        if self.rx_count == 0 {
            return None;
        }
        let entry = self.rx.get(self.rx_head).copied();
        self.rx_head = (self.rx_head + 1) % FIFO_DEPTH;
        self.rx_count -= 1;
        self.update_rx_interrupts();
        entry
    }

    fn flush_rx(&mut self) {
        self.rx_head = 0;
        self.rx_count = 0;
        self.update_rx_interrupts();
    }

    fn update_rx_interrupts(&mut self) {
        let level = self.rx_trigger();
        let mut raised = 0;
        if self.rx_count >= level {
            raised |= int::RX;
        } else if self.rx_count > 0 {
            raised |= int::RT;
        }
        self.ris = (self.ris & !(int::RX | int::RT)) | raised;
    }

    fn flags(&self) -> u32 {
        let mut fr = FR_TXFE;
        if self.rx_count == 0 {
            fr |= FR_RXFE;
        }
        if self.rx_count >= self.rx_depth() {
            fr |= FR_RXFF;
        }
        fr
    }

    #[inline(always)]
    fn check(offset: u64, size: AccessSize) -> Result<(), UartError> {
        if size == AccessSize::Double {
            return Err(UartError::UnsupportedWidth);
        }
        if offset >= MMIO_SIZE {
            return Err(UartError::OutOfRange);
        }
        if !offset.is_multiple_of(size.bytes()) {
            return Err(UartError::Misaligned);
        }
        Ok(())
    }

    /// The 32-bit register at word offset `reg`. Reading UARTDR pops the
    /// receive FIFO only when `pop`.
    #[inline(always)]
    fn read_reg(&mut self, reg: u64, pop: bool) -> u32 {
        match reg {
            UARTDR => {
                let entry = if pop {
                    self.pop_rx()
                } else {
                    self.rx
                        .get(self.rx_head)
                        .copied()
                        .filter(|_| self.rx_count > 0)
                };
                let entry = entry.unwrap_or(0);
                if pop {
                    // UARTRSR reports the errors of the character last read
                    // (overrun is set as it happens).
                    self.rsr |= u32::from((entry & (DR_FE | DR_PE | DR_BE)) >> 8);
                }
                u32::from(entry)
            }
            UARTRSR => self.rsr,
            UARTFR => self.flags(),
            UARTILPR => self.ilpr,
            UARTIBRD => self.ibrd,
            UARTFBRD => self.fbrd,
            UARTLCR_H => self.lcr_h,
            UARTCR => self.cr,
            UARTIFLS => self.ifls,
            UARTIMSC => self.imsc,
            UARTRIS => self.ris,
            UARTMIS => self.ris & self.imsc,
            UARTDMACR => self.dmacr,
            ID_BASE..MMIO_SIZE => {
                let index = usize::try_from((reg - ID_BASE) / 4).unwrap_or(usize::MAX);
                ID_REGS.get(index).copied().unwrap_or(0)
            }
            // UARTICR is write-only; reserved offsets read as zero.
            _ => 0,
        }
    }

    /// Reads `size` bytes at `offset`.
    #[inline(always)]
    pub fn read(&mut self, offset: u64, size: AccessSize) -> Result<u32, UartError> {
        Self::check(offset, size)?;
        let shift = (offset & 3) * 8;
        let value = self.read_reg(offset & !3, shift == 0);
        // `size` is at most a word here, so the mask fits in 32 bits.
        let mask = u32::try_from(size.mask()).unwrap_or(u32::MAX);
        Ok((value >> shift) & mask)
    }

    /// Writes the low `size` bytes of `value` at `offset`; transmitted bytes
    /// go to `tx`.
    #[inline(always)]
    pub fn write(
        &mut self,
        offset: u64,
        size: AccessSize,
        value: u64,
        tx: &mut impl FnMut(u8),
    ) -> Result<(), UartError> {
        Self::check(offset, size)?;
        let reg = offset & !3;
        let shift = (offset & 3) * 8;
        let bytes = u32::try_from(size.mask()).unwrap_or(u32::MAX) << shift;
        let value = u32::try_from(value & size.mask()).unwrap_or(0) << shift;
        // Storage registers merge the written bytes with the rest.
        let merge = |old: u32, width_mask: u32| ((old & !bytes) | value) & width_mask;
        match reg {
            // Only an access covering bits 7:0 carries data to transmit.
            UARTDR if shift == 0 => {
                let byte = (value & 0xFF) as u8;
                if self.cr & CR_LBE != 0 {
                    self.push_rx(byte);
                } else {
                    tx(byte);
                }
                // Transmitted at once: the FIFO drains through its level.
                self.ris |= int::TX;
            }
            // UARTECR: any write clears the error flags.
            UARTRSR => self.rsr = 0,
            UARTILPR => self.ilpr = merge(self.ilpr, 0xFF),
            UARTIBRD => self.ibrd = merge(self.ibrd, 0xFFFF),
            UARTFBRD => self.fbrd = merge(self.fbrd, 0x3F),
            UARTLCR_H => {
                let new = merge(self.lcr_h, 0xFF);
                let fen_changed = (new ^ self.lcr_h) & LCRH_FEN != 0;
                self.lcr_h = new;
                if fen_changed {
                    self.flush_rx();
                }
            }
            UARTCR => self.cr = merge(self.cr, CR_MASK),
            UARTIFLS => {
                self.ifls = merge(self.ifls, 0x3F);
                self.update_rx_interrupts();
            }
            UARTIMSC => self.imsc = merge(self.imsc, int::ALL),
            UARTICR => self.ris &= !(value & int::ALL),
            UARTDMACR => self.dmacr = merge(self.dmacr, 0x7),
            // Read-only registers and reserved offsets ignore writes.
            _ => {}
        }
        Ok(())
    }
}

/// The PL011 on a VM's device bus (one window, its 4 KiB register frame).
/// Transmitted bytes become console effects. An access that can move the
/// interrupt line, or that frees receive-FIFO room for queued console
/// input (a read of `UARTDR`), asks the glue to sample the VM's lines.
impl MmioDevice for Pl011 {
    #[inline(always)]
    fn read(&mut self, access: &DeviceAccess, fx: &mut Effects) -> Result<u64, AccessRefused> {
        // Only a read of UARTDR's low byte pops the receive FIFO: any other
        // read changes nothing, so it moves no line and needs no sampling
        // (the flag register, which drivers poll, takes this path).
        if access.offset != UARTDR {
            return Pl011::read(self, access.offset, access.size)
                .map(u64::from)
                .map_err(|_| AccessRefused);
        }
        let (line, room) = (self.irq_pending(), self.rx_count);
        let value = Pl011::read(self, access.offset, access.size).map_err(|_| AccessRefused)?;
        fx.lines_if(line != self.irq_pending() || room != self.rx_count);
        Ok(u64::from(value))
    }

    #[inline(always)]
    fn write(
        &mut self,
        access: &DeviceAccess,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        let line = self.irq_pending();
        Pl011::write(self, access.offset, access.size, value, &mut |b| {
            fx.console(b)
        })
        .map_err(|_| AccessRefused)?;
        fx.lines_if(line != self.irq_pending());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessSize::{Byte, Double, Half, Word};

    #[test]
    fn only_a_read_that_pops_the_fifo_reports_its_line() {
        use crate::bus::{DeviceAccess, Effects, MmioDevice};
        let at = |offset| DeviceAccess {
            vcpu: 0,
            region: 0,
            bank: 0,
            offset,
            size: Word,
        };
        let mut u = Pl011::new();
        wr(&mut u, UARTIMSC, int::RX | int::RT);
        assert!(u.push_rx(b'x'));
        let pending = u.irq_pending();
        // Every register but UARTDR, read: no line moved, nothing changed.
        for off in (4..0x1000).step_by(4) {
            let mut fx = Effects::default();
            let before = u.clone();
            let got = MmioDevice::read(&mut u, &at(off), &mut fx);
            assert_eq!(
                got.map(|v| v as u32),
                u.read(off, Word).map_err(|_| AccessRefused),
                "{off:#x}"
            );
            assert!(!fx.lines(), "{off:#x}");
            assert_eq!(u.irq_pending(), before.irq_pending(), "{off:#x}");
            assert_eq!(u.rx_space(), before.rx_space(), "{off:#x}");
        }
        assert_eq!(u.irq_pending(), pending);
        // UARTDR pops the byte: its room and maybe its line moved.
        let mut fx = Effects::default();
        assert_eq!(
            MmioDevice::read(&mut u, &at(UARTDR), &mut fx),
            Ok(u64::from(b'x'))
        );
        assert!(fx.lines(), "the FIFO's room changed");
        // A byte read of UARTDR's second byte does not pop.
        assert!(u.push_rx(b'y'));
        let mut fx = Effects::default();
        let upper = DeviceAccess {
            offset: 1,
            size: Byte,
            ..at(0)
        };
        assert!(MmioDevice::read(&mut u, &upper, &mut fx).is_ok());
        assert!(!fx.lines());
        assert_eq!(rd(&mut u, UARTDR), u32::from(b'y'), "still there");
    }

    fn rd(u: &mut Pl011, off: u64) -> u32 {
        u.read(off, Word).expect("valid access")
    }

    fn wr(u: &mut Pl011, off: u64, v: u32) -> Vec<u8> {
        let mut out = Vec::new();
        u.write(off, Word, u64::from(v), &mut |b| out.push(b))
            .expect("valid access");
        out
    }

    #[test]
    fn reset_values() {
        let mut u = Pl011::new();
        let expect = [
            (UARTDR, 0),
            (UARTRSR, 0),
            (UARTFR, 0x90),
            (UARTILPR, 0),
            (UARTIBRD, 0),
            (UARTFBRD, 0),
            (UARTLCR_H, 0),
            (UARTCR, 0x300),
            (UARTIFLS, 0x12),
            (UARTIMSC, 0),
            (UARTRIS, 0),
            (UARTMIS, 0),
            (UARTICR, 0),
            (UARTDMACR, 0),
        ];
        for (off, value) in expect {
            assert_eq!(rd(&mut u, off), value, "offset {off:#x}");
        }
        assert!(!u.irq_pending());
        assert_eq!(u.rx_space(), 1);
        assert_eq!(u, Pl011::default());
    }

    #[test]
    fn id_registers() {
        let mut u = Pl011::new();
        let ids: Vec<u32> = (0..8).map(|i| rd(&mut u, 0xFE0 + 4 * i)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x34, 0x00, 0x0D, 0xF0, 0x05, 0xB1]);
        // As Linux's AMBA bus assembles them: part 0x011, designer 0x41, rev 3.
        let periph = ids[..4]
            .iter()
            .enumerate()
            .fold(0, |a, (i, b)| a | (b << (8 * i)));
        assert_eq!(periph & 0xF_FFFF, 0x4_1011);
        assert_eq!((periph >> 20) & 0xF, 3);
        // Writes are ignored.
        wr(&mut u, 0xFE0, 0xFF);
        assert_eq!(rd(&mut u, 0xFE0), 0x11);
    }

    #[test]
    fn storage_registers_mask_to_width() {
        let mut u = Pl011::new();
        for (off, mask) in [
            (UARTILPR, 0xFF),
            (UARTIBRD, 0xFFFF),
            (UARTFBRD, 0x3F),
            (UARTCR, 0xFF87),
            (UARTIFLS, 0x3F),
            (UARTIMSC, 0x7FF),
            (UARTDMACR, 0x7),
        ] {
            wr(&mut u, off, 0xFFFF_FFFF);
            assert_eq!(rd(&mut u, off), mask, "offset {off:#x}");
            wr(&mut u, off, 0);
            assert_eq!(rd(&mut u, off), 0, "offset {off:#x}");
        }
        wr(&mut u, UARTLCR_H, 0xFFFF_FF70);
        assert_eq!(rd(&mut u, UARTLCR_H), 0x70);
        wr(&mut u, UARTIBRD, 13);
        wr(&mut u, UARTFBRD, 1);
        assert_eq!((rd(&mut u, UARTIBRD), rd(&mut u, UARTFBRD)), (13, 1));
        u.reset();
        assert_eq!((rd(&mut u, UARTIBRD), rd(&mut u, UARTCR)), (0, 0x300));
    }

    #[test]
    fn transmit() {
        let mut u = Pl011::new();
        // Transmits even before UARTEN/TXE are set, as QEMU does.
        wr(&mut u, UARTCR, 0);
        assert_eq!(wr(&mut u, UARTDR, 0x1_41), [0x41]);
        wr(&mut u, UARTCR, 0x301);
        let mut out = Vec::new();
        for b in b"hi\n" {
            u.write(UARTDR, Byte, u64::from(*b), &mut |c| out.push(c))
                .expect("ok");
        }
        assert_eq!(out, b"hi\n");
        // Flags: TX always empty, never full or busy.
        assert_eq!(rd(&mut u, UARTFR) & 0xE8, 0x80);
        // Writing the upper byte of UARTDR transmits nothing.
        let mut out = Vec::new();
        u.write(UARTDR + 1, Byte, 0x42, &mut |c| out.push(c))
            .expect("ok");
        assert!(out.is_empty());
    }

    #[test]
    fn transmit_interrupt() {
        let mut u = Pl011::new();
        wr(&mut u, UARTIMSC, int::TX);
        assert!(!u.irq_pending(), "TXRIS is clear out of reset");
        wr(&mut u, UARTDR, b'a'.into());
        assert_eq!(rd(&mut u, UARTRIS) & int::TX, int::TX);
        assert_eq!(rd(&mut u, UARTMIS), int::TX);
        assert!(u.irq_pending());
        wr(&mut u, UARTICR, int::TX);
        assert!(!u.irq_pending());
        assert_eq!(rd(&mut u, UARTRIS), 0);
        // Masked: raw status set, line quiet.
        wr(&mut u, UARTIMSC, 0);
        wr(&mut u, UARTDR, b'b'.into());
        assert_eq!((rd(&mut u, UARTRIS), rd(&mut u, UARTMIS)), (int::TX, 0));
        assert!(!u.irq_pending());
    }

    #[test]
    fn holding_register_without_fifo() {
        let mut u = Pl011::new();
        assert_eq!(rd(&mut u, UARTDR), 0, "empty reads 0");
        assert!(u.push_rx(b'x'));
        assert_eq!(rd(&mut u, UARTFR) & (FR_RXFE | FR_RXFF), FR_RXFF);
        assert_eq!(rd(&mut u, UARTRIS), int::RX);
        assert!(!u.push_rx(b'y'));
        assert_eq!(u.rx_overruns(), 1);
        assert_eq!(rd(&mut u, UARTRSR), RSR_OE);
        assert_eq!(rd(&mut u, UARTRIS), int::RX | int::OE);
        assert_eq!(rd(&mut u, UARTDR), u32::from(b'x'));
        assert_eq!(rd(&mut u, UARTFR) & (FR_RXFE | FR_RXFF), FR_RXFE);
        assert_eq!(rd(&mut u, UARTRIS), int::OE);
        // The next character carries the overrun flag.
        assert!(u.push_rx(b'z'));
        assert_eq!(rd(&mut u, UARTDR), u32::from(b'z') | u32::from(DR_OE));
        assert!(u.push_rx(b'w'));
        assert_eq!(rd(&mut u, UARTDR), u32::from(b'w'));
        // UARTECR clears the error status; UARTICR the interrupt.
        wr(&mut u, UARTRSR, 0);
        assert_eq!(rd(&mut u, UARTRSR), 0);
        wr(&mut u, UARTICR, int::ALL);
        assert_eq!(rd(&mut u, UARTRIS), 0);
    }

    #[test]
    fn fifo_order_levels_and_overflow() {
        let mut u = Pl011::new();
        wr(&mut u, UARTLCR_H, LCRH_FEN | 0x60);
        assert_eq!(u.rx_space(), FIFO_DEPTH);
        wr(&mut u, UARTIMSC, int::RX | int::RT);
        // Default trigger: half full (16). Below it, the timeout fires.
        assert!(u.push_rx(0));
        assert_eq!(rd(&mut u, UARTRIS), int::RT);
        assert!(u.irq_pending());
        for b in 1..15 {
            assert!(u.push_rx(b));
        }
        assert_eq!(rd(&mut u, UARTRIS), int::RT);
        assert!(u.push_rx(15));
        assert_eq!(rd(&mut u, UARTRIS), int::RX);
        for b in 16..32 {
            assert!(u.push_rx(b));
        }
        assert_eq!(rd(&mut u, UARTFR) & (FR_RXFE | FR_RXFF), FR_RXFF);
        assert_eq!(u.rx_space(), 0);
        assert!(!u.push_rx(99));
        assert_eq!(rd(&mut u, UARTRIS), int::RX | int::OE);
        // Drain in order; RX drops below the level, then RT until empty.
        for b in 0..32u32 {
            let expect = if b == 0 { 0 } else { b };
            assert_eq!(rd(&mut u, UARTDR) & 0xFF, expect);
            let ris = rd(&mut u, UARTRIS) & (int::RX | int::RT);
            let left = 31 - b as usize;
            let want = match left {
                0 => 0,
                1..16 => int::RT,
                _ => int::RX,
            };
            assert_eq!(ris, want, "{left} left");
        }
        assert_eq!(rd(&mut u, UARTFR) & FR_RXFE, FR_RXFE);
        // Wrap-around keeps order.
        for b in 0..40u8 {
            assert!(u.push_rx(b));
            assert_eq!(
                rd(&mut u, UARTDR),
                u32::from(b) | if b == 0 { u32::from(DR_OE) } else { 0 }
            );
        }
    }

    #[test]
    fn trigger_levels() {
        let mut u = Pl011::new();
        wr(&mut u, UARTLCR_H, LCRH_FEN);
        for (sel, level) in [(0, 4), (1, 8), (2, 16), (3, 24), (4, 28), (7, 16)] {
            u.flush_rx();
            wr(&mut u, UARTIFLS, sel << 3);
            for b in 0..level - 1 {
                u.push_rx(b);
            }
            assert_eq!(rd(&mut u, UARTRIS) & int::RX, 0, "sel {sel}");
            u.push_rx(0);
            assert_eq!(rd(&mut u, UARTRIS) & int::RX, int::RX, "sel {sel}");
        }
        // Lowering the level re-evaluates at once.
        u.flush_rx();
        wr(&mut u, UARTIFLS, 2 << 3);
        for b in 0..5 {
            u.push_rx(b);
        }
        assert_eq!(rd(&mut u, UARTRIS) & (int::RX | int::RT), int::RT);
        wr(&mut u, UARTIFLS, 0);
        assert_eq!(rd(&mut u, UARTRIS) & (int::RX | int::RT), int::RX);
    }

    #[test]
    fn fen_toggle_flushes() {
        let mut u = Pl011::new();
        wr(&mut u, UARTLCR_H, LCRH_FEN);
        u.push_rx(1);
        u.push_rx(2);
        wr(&mut u, UARTLCR_H, LCRH_FEN | 0x60); // FEN unchanged: kept
        assert_eq!(u.rx_space(), FIFO_DEPTH - 2);
        wr(&mut u, UARTLCR_H, 0x60);
        assert_eq!(u.rx_space(), 1);
        assert_eq!(rd(&mut u, UARTFR) & FR_RXFE, FR_RXFE);
        assert_eq!(rd(&mut u, UARTRIS), 0);
    }

    #[test]
    fn icr_clears_only_written_bits() {
        let mut u = Pl011::new();
        wr(&mut u, UARTLCR_H, LCRH_FEN);
        u.push_rx(1);
        wr(&mut u, UARTDR, 1);
        assert_eq!(rd(&mut u, UARTRIS), int::RT | int::TX);
        wr(&mut u, UARTICR, int::TX);
        assert_eq!(rd(&mut u, UARTRIS), int::RT);
        wr(&mut u, UARTICR, int::RT);
        assert_eq!(rd(&mut u, UARTRIS), 0);
        // Re-evaluated on the next arrival.
        u.push_rx(2);
        assert_eq!(rd(&mut u, UARTRIS), int::RT);
        // A byte write to UARTICR's second byte clears bits 10:8.
        u.push_rx(3);
        for _ in 0..FIFO_DEPTH {
            u.push_rx(0);
        }
        assert_ne!(rd(&mut u, UARTRIS) & int::OE, 0);
        u.write(UARTICR + 1, Byte, u64::from(int::OE >> 8), &mut |_| {})
            .expect("ok");
        assert_eq!(rd(&mut u, UARTRIS) & int::OE, 0);
    }

    #[test]
    fn loopback() {
        let mut u = Pl011::new();
        wr(&mut u, UARTCR, 0x381);
        assert!(wr(&mut u, UARTDR, b'q'.into()).is_empty());
        assert_eq!(rd(&mut u, UARTDR), u32::from(b'q'));
    }

    #[test]
    fn sixteen_bit_and_byte_access() {
        let mut u = Pl011::new();
        assert_eq!(u.read(UARTFR, Half), Ok(0x90));
        assert_eq!(u.read(UARTFR, Byte), Ok(0x90));
        assert_eq!(u.read(UARTCR, Half), Ok(0x300));
        assert_eq!(u.read(UARTCR + 1, Byte), Ok(0x3));
        assert_eq!(u.read(UARTCR + 2, Half), Ok(0));
        let mut out = Vec::new();
        u.write(UARTDR, Half, 0xFF41, &mut |b| out.push(b))
            .expect("ok");
        assert_eq!(out, [0x41]);
        u.push_rx(b'r');
        // Reading DR's upper byte peeks without popping.
        assert_eq!(u.read(UARTDR + 1, Byte), Ok(0));
        assert_eq!(u.rx_space(), 0);
        assert_eq!(u.read(UARTDR, Half), Ok(u32::from(b'r')));
        assert_eq!(u.rx_space(), 1);
        // Narrow writes merge into the register.
        u.write(UARTIBRD, Half, 0x1234, &mut |_| {}).expect("ok");
        u.write(UARTIBRD + 1, Byte, 0xAB, &mut |_| {}).expect("ok");
        assert_eq!(u.read(UARTIBRD, Word), Ok(0xAB34));
        u.write(UARTCR, Half, 0x0301, &mut |_| {}).expect("ok");
        assert_eq!(u.read(UARTCR, Word), Ok(0x301));
        // Values wider than the access are cut to it.
        u.write(UARTIMSC, Byte, 0xFFFF, &mut |_| {}).expect("ok");
        assert_eq!(u.read(UARTIMSC, Word), Ok(0xFF));
    }

    #[test]
    fn reserved_and_bad_accesses() {
        let mut u = Pl011::new();
        for off in [0x008, 0x00C, 0x010, 0x014, 0x01C, 0x04C, 0x100, 0xFDC] {
            wr(&mut u, off, 0xFFFF_FFFF);
            assert_eq!(rd(&mut u, off), 0, "offset {off:#x}");
        }
        // Read-only registers ignore writes.
        wr(&mut u, UARTFR, 0);
        wr(&mut u, UARTRIS, int::ALL);
        wr(&mut u, UARTMIS, int::ALL);
        assert_eq!((rd(&mut u, UARTFR), rd(&mut u, UARTRIS)), (0x90, 0));
        assert_eq!(u.read(0, Double), Err(UartError::UnsupportedWidth));
        assert_eq!(
            u.write(0, Double, 0, &mut |_| panic!("no transmit")),
            Err(UartError::UnsupportedWidth)
        );
        assert_eq!(u.read(0x1000, Byte), Err(UartError::OutOfRange));
        assert_eq!(u.read(u64::MAX, Byte), Err(UartError::OutOfRange));
        assert_eq!(u.read(0x1, Half), Err(UartError::Misaligned));
        assert_eq!(u.read(0x2, Word), Err(UartError::Misaligned));
        assert_eq!(
            u.write(0x1001, Byte, 0, &mut |_| {}),
            Err(UartError::OutOfRange)
        );
        assert_eq!(
            u.write(0x3, Half, 0, &mut |_| panic!("no transmit")),
            Err(UartError::Misaligned)
        );
        assert_eq!(u.read(0xFFC, Word), Ok(0xB1));
        assert_eq!(
            UartError::Misaligned.to_string(),
            "PL011: misaligned access"
        );
    }

    proptest::proptest! {
        #[test]
        fn random_accesses_never_panic(
            ops in proptest::collection::vec((0u64..0x1100, 0u32..4, proptest::prelude::any::<u64>(), proptest::prelude::any::<bool>()), 0..200)
        ) {
            let mut u = Pl011::new();
            for (off, size, value, is_write) in ops {
                let size = AccessSize::from_log2(size).expect("0..4");
                if is_write {
                    let _ = u.write(off, size, value, &mut |_| {});
                } else {
                    let _ = u.read(off, size);
                }
                let _ = u.push_rx(value as u8);
                proptest::prop_assert!(u.rx_space() <= FIFO_DEPTH);
            }
        }
    }
}
