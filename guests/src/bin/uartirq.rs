//! `uartirq`: interrupt-driven console input. Enables the PL011's receive
//! interrupts (`UARTIMSC.RXIM | RTIM`) and its SPI (from the DT: INTID 33 on
//! `virt`, level-triggered) at the GIC, prints `uartirq: ready for input`,
//! and waits in WFI until the handler — reading `UARTDR` while `!FR.RXFE`,
//! then clearing the interrupts through `UARTICR` — has received the line
//! `ping` (ended by `\n` or `\r`). Then it prints `uartirq: got "ping" (N
//! bytes received)` and continues. The virtual timer bounds the wait (20 s)
//! and wakes the WFI; on timeout the guest fails, printing what it did
//! receive.
//!
//! Then the transmit side, which Linux's interrupt-driven console relies on:
//! with only `TXIM` unmasked, writing a byte to `UARTDR` must raise the
//! UART's interrupt with `UARTMIS.TXMIS` set, cleared through `UARTICR`.
#![no_std]
#![no_main]

use stratum_guests::console::{FR_RXFE, PL011_BASE, UARTDR, UARTFR};
use stratum_guests::global::{Global, GlobalArray};
use stratum_guests::{Checks, gic, irq, mmio, print, println};

stratum_guests::entry!("uartirq", main);

/// Interrupt mask set/clear register.
const UARTIMSC: usize = 0x38;
/// Interrupt clear register.
const UARTICR: usize = 0x44;
/// Masked interrupt status register.
const UARTMIS: usize = 0x40;
/// Transmit interrupt.
const TXIM: u32 = 1 << 5;
/// Receive interrupt.
const RXIM: u32 = 1 << 4;
/// Receive timeout interrupt.
const RTIM: u32 = 1 << 6;
/// The line to wait for.
const WANT: &[u8] = b"ping";
/// How long to wait for it.
const TIMEOUT_US: u64 = 20_000_000;

const BUF_LEN: usize = 64;
static BUF: GlobalArray<u8, BUF_LEN> = GlobalArray::new(0);
static LEN: Global<usize> = Global::new(0);
static GOT_LINE: Global<bool> = Global::new(false);
static UART_IRQS: Global<u32> = Global::new(0);
static TX_IRQS: Global<u32> = Global::new(0);
static UART_BASE: Global<usize> = Global::new(PL011_BASE);
static UART_INTID: Global<u32> = Global::new(33);

fn uart_read(off: usize) -> u32 {
    // SAFETY: a PL011 register; only DR has a read side effect (it pops the
    // receive FIFO), which is what the handler wants.
    unsafe { mmio::read32(UART_BASE.get() + off) }
}

fn uart_write(off: usize, value: u32) {
    // SAFETY: IMSC/ICR of the PL011: interrupt mask and clear.
    unsafe { mmio::write32(UART_BASE.get() + off, value) }
}

/// Whether the buffer ends a line that is `WANT`, alone or after earlier ones.
fn line_seen(len: usize) -> bool {
    let mut start = 0;
    for i in 0..len {
        let b = BUF.get(i);
        if b == b'\n' || b == b'\r' {
            if i - start == WANT.len() && (0..WANT.len()).all(|k| BUF.get(start + k) == WANT[k]) {
                return true;
            }
            start = i + 1;
        }
    }
    false
}

fn handler(intid: u32) {
    if irq::timed_out_by(intid) {
        return;
    }
    if intid != UART_INTID.get() {
        stratum_guests::fail(format_args!("unexpected IRQ: INTID {intid}"))
    }
    UART_IRQS.set(UART_IRQS.get() + 1);
    if uart_read(UARTMIS) & TXIM != 0 {
        TX_IRQS.set(TX_IRQS.get() + 1);
        uart_write(UARTIMSC, 0);
        uart_write(UARTICR, TXIM);
    }
    let mut len = LEN.get();
    while uart_read(UARTFR) & FR_RXFE == 0 {
        let byte = uart_read(UARTDR) as u8;
        if len < BUF_LEN {
            BUF.set(len, byte);
            len += 1;
        }
    }
    LEN.set(len);
    uart_write(UARTICR, RXIM | RTIM);
    if line_seen(len) {
        GOT_LINE.set(true);
    }
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    let platform = gic::bring_up(dtb);
    let g = platform.gic;
    match platform.devices.and_then(|d| d.uart) {
        Some(uart) => {
            println!(
                "pl011 at {:#x}, INTID {} (from the device tree)",
                uart.base, uart.intid
            );
            UART_BASE.set(uart.base as usize);
            UART_INTID.set(uart.intid);
        }
        None => println!("pl011: assuming {PL011_BASE:#x}, INTID 33"),
    }
    let intid = UART_INTID.get();
    let (got, wfis) = irq::await_spi(
        &g,
        intid,
        TIMEOUT_US,
        handler,
        || {
            uart_write(UARTIMSC, RXIM | RTIM);
            println!("uartirq: ready for input");
        },
        || GOT_LINE.get(),
    );
    uart_write(UARTIMSC, 0);
    let got = got && GOT_LINE.get();
    println!("{} UART interrupts, {wfis} wfi wake-ups", UART_IRQS.get());
    if got {
        println!("uartirq: got \"ping\" ({} bytes received)", LEN.get());
    } else {
        print!("uartirq: timed out; received {} bytes:", LEN.get());
        for i in 0..LEN.get() {
            print!(" {:02x}", BUF.get(i));
        }
        println!();
    }
    c.check("line \"ping\" received through RX interrupts", got);
    c.check("UART interrupts taken", UART_IRQS.get() > 0);

    // Transmit: only TXIM unmasked, one byte written, one interrupt.
    let (tx, _) = irq::await_spi(
        &g,
        intid,
        TIMEOUT_US,
        handler,
        || {
            uart_write(UARTICR, TXIM);
            uart_write(UARTIMSC, TXIM);
            uart_write(UARTDR, u32::from(b'\n'));
        },
        || TX_IRQS.get() > 0,
    );
    uart_write(UARTIMSC, 0);
    println!("uartirq: {} transmit interrupt(s)", TX_IRQS.get());
    c.check(
        "transmit interrupt (TXMIS) after writing UARTDR",
        tx && TX_IRQS.get() == 1,
    );
    c.finish()
}
