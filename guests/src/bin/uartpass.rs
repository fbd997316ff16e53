//! `uartpass`: a board's own UART passed through. The system config gives
//! this VM the ZCU102's second Cadence UART (registers at `0xff01_0000`,
//! SPI 22) as a `[[vm.device]]`; the hypervisor maps its registers
//! identity at stage 2 and forwards its SPI.
//!
//! The guest finds the device in its device tree (a node whose compatible
//! is `cdns,uart-r1p12`), turns the transmitter and receiver on (the UART
//! leaves reset with both disabled), writes a line through it, and waits
//! for it to drain. Then it unmasks the transmit-FIFO-empty interrupt and
//! waits in WFI (bounded by the virtual timer) for the SPI. The handler
//! masks and clears it at the device, so the level-sensitive line drops
//! before the guest's EOI. What reaches the UART's other end (the host's
//! file, in the test) is checked there.
#![no_std]
#![no_main]

use stratum_guests::global::Global;
use stratum_guests::passthrough::dtb_contains;
use stratum_guests::{Checks, gic, irq, mmio, println, timer};

stratum_guests::entry!("uartpass", main);

/// The ZCU102's second UART (`uart1`).
const UART_BASE: usize = 0xff01_0000;
/// Its SPI (INTID 54).
const UART_INTID: u32 = 32 + 22;
/// Control: receiver and transmitter enables and disables.
const CR: usize = 0x00;
const CR_RX_EN: u32 = 1 << 2;
const CR_RX_DIS: u32 = 1 << 3;
const CR_TX_EN: u32 = 1 << 4;
const CR_TX_DIS: u32 = 1 << 5;
/// Interrupt enable, disable, mask and status.
const IER: usize = 0x08;
const IDR: usize = 0x0c;
const IMR: usize = 0x10;
const ISR: usize = 0x14;
/// ISR/IMR: the transmit FIFO is empty.
const INT_TEMPTY: u32 = 1 << 3;
/// Status: transmit FIFO empty and full.
const SR: usize = 0x2c;
const SR_TXEMPTY: u32 = 1 << 3;
const SR_TXFULL: u32 = 1 << 4;
const FIFO: usize = 0x30;
/// What the guest writes through the UART (the test looks for it).
const LINE: &[u8] = b"uartpass: written through the passed-through Cadence UART\r\n";
/// How long to wait for the interrupt.
const TIMEOUT_US: u64 = 5_000_000;

static UART_IRQS: Global<u32> = Global::new(0);
static ISR_SEEN: Global<u32> = Global::new(0);

fn read(off: usize) -> u32 {
    // SAFETY: a Cadence UART register, identity-mapped by the hypervisor;
    // the ones read here have no read side effects.
    unsafe { mmio::read32(UART_BASE + off) }
}

fn write(off: usize, value: u32) {
    // SAFETY: a Cadence UART register (control, FIFO, interrupt enables).
    unsafe { mmio::write32(UART_BASE + off, value) }
}

fn handler(intid: u32) {
    if irq::timed_out_by(intid) {
        return;
    }
    if intid != UART_INTID {
        stratum_guests::fail(format_args!("unexpected IRQ: INTID {intid}"))
    }
    let isr = read(ISR);
    ISR_SEEN.set(isr);
    write(IDR, INT_TEMPTY);
    write(ISR, isr);
    UART_IRQS.set(UART_IRQS.get() + 1);
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    c.check(
        "device tree describes the passed-through cdns,uart-r1p12",
        dtb_contains(dtb, b"cdns,uart-r1p12\0"),
    );
    let platform = gic::bring_up(dtb);
    let g = platform.gic;
    let cr = read(CR);
    write(CR, (cr & !(CR_RX_DIS | CR_TX_DIS)) | CR_RX_EN | CR_TX_EN);
    println!("uartpass: CR {cr:#x} at boot, {:#x} now", read(CR));
    c.check_eq(
        "transmitter and receiver on",
        u64::from(read(CR) & (CR_TX_EN | CR_TX_DIS | CR_RX_EN | CR_RX_DIS)),
        u64::from(CR_TX_EN | CR_RX_EN),
    );
    for &b in LINE {
        while read(SR) & SR_TXFULL != 0 {}
        write(FIFO, u32::from(b));
    }
    let drained = timer::deadline_us(TIMEOUT_US);
    while read(SR) & SR_TXEMPTY == 0 && timer::counter() < drained {}
    c.check("the line drained from the FIFO", read(SR) & SR_TXEMPTY != 0);

    let (got, wfis) = irq::await_spi(
        &g,
        UART_INTID,
        TIMEOUT_US,
        handler,
        || {
            write(ISR, INT_TEMPTY);
            write(IER, INT_TEMPTY);
        },
        || UART_IRQS.get() > 0,
    );
    println!(
        "uartpass: {} interrupt(s), ISR {:#x} in the handler, {wfis} wfi wake-ups",
        UART_IRQS.get(),
        ISR_SEEN.get()
    );
    c.check(
        "the UART's transmit-empty interrupt arrived",
        got && UART_IRQS.get() == 1,
    );
    c.check(
        "ISR showed transmit-empty",
        ISR_SEEN.get() & INT_TEMPTY != 0,
    );
    c.check_eq(
        "the interrupt is masked again",
        u64::from(read(IMR) & INT_TEMPTY),
        0,
    );
    c.check_eq(
        "the interrupt is inactive after EOI",
        u64::from(g.is_active(UART_INTID)),
        0,
    );
    c.finish()
}
