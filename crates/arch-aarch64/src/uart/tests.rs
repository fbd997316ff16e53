//! Host tests of the console UART drivers against models of the three
//! devices: what each register access does, as the devices' manuals say.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;

use super::*;

/// `mask` when `on`, else 0.
fn bits(on: bool, mask: u32) -> u32 {
    if on { mask } else { 0 }
}

/// A UART model: what was sent, what waits to be received, the interrupt
/// enable and status bits, and every access made.
#[derive(Default)]
struct Model {
    kind: Option<UartKind>,
    sent: RefCell<Vec<u8>>,
    rx: RefCell<VecDeque<u8>>,
    /// Status reads that still report the transmitter full/busy.
    busy_reads: RefCell<u32>,
    enabled: RefCell<u32>,
    /// Interrupt status bits written to clear (PL011 ICR, Cadence ISR).
    cleared: RefCell<Vec<u32>>,
    rx_trigger: RefCell<u32>,
    /// The control register (PL011 CR, Cadence CR).
    control: RefCell<u32>,
    accesses: RefCell<Vec<(usize, u8)>>,
}

impl Model {
    fn new(kind: UartKind, rx: &[u8], busy_reads: u32) -> Self {
        Self {
            kind: Some(kind),
            rx: RefCell::new(rx.iter().copied().collect()),
            busy_reads: RefCell::new(busy_reads),
            ..Self::default()
        }
    }

    /// One status read: busy for the first `busy_reads`.
    fn busy(&self) -> bool {
        let mut n = self.busy_reads.borrow_mut();
        let busy = *n > 0;
        *n = n.saturating_sub(1);
        busy
    }
}

impl Regs for Model {
    fn read(&self, off: usize, width: u8) -> u32 {
        self.accesses.borrow_mut().push((off, width));
        let empty = self.rx.borrow().is_empty();
        match self.kind.expect("a kind") {
            UartKind::Pl011 => match off {
                pl011::FR => {
                    let busy = self.busy();
                    bits(empty, pl011::FR_RXFE) | bits(busy, pl011::FR_TXFF | pl011::FR_BUSY)
                }
                pl011::DR => u32::from(
                    self.rx
                        .borrow_mut()
                        .pop_front()
                        .expect("read only when waiting"),
                ),
                pl011::CR => *self.control.borrow(),
                _ => panic!("PL011 read at {off:#x}"),
            },
            UartKind::Cadence => match off {
                cadence::SR => {
                    let busy = self.busy();
                    bits(empty, cadence::SR_RXEMPTY)
                        | bits(busy, cadence::SR_TXFULL | cadence::SR_TACTIVE)
                        | bits(!busy, cadence::SR_TXEMPTY)
                }
                cadence::FIFO => u32::from(
                    self.rx
                        .borrow_mut()
                        .pop_front()
                        .expect("read only when waiting"),
                ),
                cadence::CR => *self.control.borrow(),
                _ => panic!("Cadence read at {off:#x}"),
            },
            UartKind::Ns16550 {
                reg_shift,
                io_width,
            } => {
                assert_eq!(width, io_width, "every access is reg-io-width wide");
                assert_eq!(
                    off % (1 << reg_shift),
                    0,
                    "register {off:#x} not on the reg-shift grid"
                );
                match off >> reg_shift {
                    ns16550::LSR => {
                        let busy = self.busy();
                        bits(!empty, ns16550::LSR_DR)
                            | bits(!busy, ns16550::LSR_THRE | ns16550::LSR_TEMT)
                    }
                    ns16550::RBR_THR => u32::from(
                        self.rx
                            .borrow_mut()
                            .pop_front()
                            .expect("read only when waiting"),
                    ),
                    i => panic!("16550 read of register {i}"),
                }
            }
        }
    }

    fn write(&self, off: usize, width: u8, value: u32) {
        self.accesses.borrow_mut().push((off, width));
        match self.kind.expect("a kind") {
            UartKind::Pl011 => match off {
                pl011::DR => self.sent.borrow_mut().push(value as u8),
                pl011::IMSC => *self.enabled.borrow_mut() = value,
                pl011::ICR => self.cleared.borrow_mut().push(value),
                pl011::CR => *self.control.borrow_mut() = value,
                _ => panic!("PL011 write at {off:#x}"),
            },
            UartKind::Cadence => match off {
                cadence::FIFO => self.sent.borrow_mut().push(value as u8),
                cadence::IER => *self.enabled.borrow_mut() |= value,
                cadence::ISR => self.cleared.borrow_mut().push(value),
                cadence::RXWM => *self.rx_trigger.borrow_mut() = value,
                cadence::CR => *self.control.borrow_mut() = value,
                _ => panic!("Cadence write at {off:#x}"),
            },
            UartKind::Ns16550 {
                reg_shift,
                io_width,
            } => {
                assert_eq!(width, io_width);
                match off >> reg_shift {
                    ns16550::RBR_THR => self.sent.borrow_mut().push(value as u8),
                    ns16550::IER => *self.enabled.borrow_mut() = value,
                    i => panic!("16550 write of register {i}"),
                }
            }
        }
    }
}

const KINDS: [UartKind; 4] = [
    UartKind::Pl011,
    UartKind::Cadence,
    UartKind::Ns16550 {
        reg_shift: 0,
        io_width: 1,
    },
    UartKind::Ns16550 {
        reg_shift: 2,
        io_width: 4,
    },
];

#[test]
fn every_kind_sends_in_order_waiting_while_full_and_adds_cr_before_lf() {
    for kind in KINDS {
        let mut uart = HostUart::with_regs(kind, Model::new(kind, &[], 3));
        uart.write_str("ok\n").expect("writes");
        uart.flush();
        assert_eq!(*uart.regs().sent.borrow(), b"ok\r\n", "{kind:?}");
        assert_eq!(
            *uart.regs().busy_reads.borrow(),
            0,
            "{kind:?}: it waited out the busy reads"
        );
    }
}

#[test]
fn every_kind_receives_without_blocking() {
    for kind in KINDS {
        let uart = HostUart::with_regs(kind, Model::new(kind, b"hi", 0));
        assert_eq!(uart.try_get(), Some(b'h'), "{kind:?}");
        assert_eq!(uart.try_get(), Some(b'i'), "{kind:?}");
        assert_eq!(uart.try_get(), None, "{kind:?}: empty is None, not a wait");
    }
}

#[test]
fn receive_interrupts_are_enabled_and_cleared_as_each_device_wants() {
    let pl = HostUart::with_regs(UartKind::Pl011, Model::new(UartKind::Pl011, &[], 0));
    pl.enable_rx_interrupt();
    pl.clear_rx_interrupt();
    assert_eq!(*pl.regs().enabled.borrow(), pl011::RX_INTERRUPTS);
    assert_eq!(*pl.regs().cleared.borrow(), [pl011::RX_INTERRUPTS; 2]);

    let cd = HostUart::with_regs(UartKind::Cadence, Model::new(UartKind::Cadence, &[], 0));
    cd.enable_rx_interrupt();
    cd.clear_rx_interrupt();
    assert_eq!(
        *cd.regs().rx_trigger.borrow(),
        1,
        "interrupt at the first byte"
    );
    assert_eq!(*cd.regs().enabled.borrow(), cadence::RX_INTERRUPTS);
    assert_eq!(*cd.regs().cleared.borrow(), [cadence::RX_INTERRUPTS; 2]);

    let kind = UartKind::Ns16550 {
        reg_shift: 2,
        io_width: 4,
    };
    let ns = HostUart::with_regs(kind, Model::new(kind, &[], 0));
    ns.enable_rx_interrupt();
    ns.clear_rx_interrupt();
    assert_eq!(*ns.regs().enabled.borrow(), ns16550::IER_RDA);
    assert_eq!(
        *ns.regs().accesses.borrow(),
        [(4, 4)],
        "IER at index 1 << 2, 32 bits wide"
    );
}

#[test]
fn enable_turns_on_what_firmware_left_off_and_nothing_else() {
    // Cadence out of reset (ZynqMP TRM): TX and RX disabled, stop-break set.
    let m = Model::new(UartKind::Cadence, &[], 0);
    *m.control.borrow_mut() = 0x128;
    let uart = HostUart::with_regs(UartKind::Cadence, m);
    uart.enable();
    assert_eq!(
        *uart.regs().control.borrow(),
        0x114,
        "TX/RX on, disables off, stop-break kept"
    );
    let writes = uart.regs().accesses.borrow().len();
    uart.enable();
    assert_eq!(
        uart.regs().accesses.borrow().len(),
        writes + 1,
        "on already: one read, no write"
    );
    // PL011 as QEMU resets it (TXE, RXE) lacks UARTEN.
    let m = Model::new(UartKind::Pl011, &[], 0);
    *m.control.borrow_mut() = 0x300;
    let uart = HostUart::with_regs(UartKind::Pl011, m);
    uart.enable();
    assert_eq!(*uart.regs().control.borrow(), 0x301);
    // The 16550 has no enable: no access at all.
    let ns = UartKind::Ns16550 {
        reg_shift: 2,
        io_width: 4,
    };
    let uart = HostUart::with_regs(ns, Model::new(ns, &[], 0));
    uart.enable();
    assert!(uart.regs().accesses.borrow().is_empty());
}
