//! `echo`: a console to type into. Its command line is its label (`echo`
//! if empty). Prints `LABEL: ready`, takes console input through the
//! PL011's receive interrupt (as `uartirq` does, waiting in WFI in between,
//! so a time-shared CPU is given back), echoes each byte as it is typed,
//! and at the end of each line (`\r` or `\n`) prints `LABEL: got "LINE"`.
//! The line `off` ends it (PASS line, then PSCI `SYSTEM_OFF`); it waits for
//! input forever otherwise. The focused-console tests type into it.
#![no_std]
#![no_main]

use stratum_guests::console::{FR_RXFE, PL011_BASE, UARTDR, UARTFR};
use stratum_guests::global::{Global, GlobalArray};
use stratum_guests::{fdt, gic, irq, mmio, print, println};

stratum_guests::entry!("echo", main);

/// Interrupt mask set/clear register.
const UARTIMSC: usize = 0x38;
/// Interrupt clear register.
const UARTICR: usize = 0x44;
/// Receive interrupt.
const RXIM: u32 = 1 << 4;
/// Receive timeout interrupt.
const RTIM: u32 = 1 << 6;
/// Bytes received and not yet handled, a ring written by the handler.
const RING: usize = 256;

static RX: GlobalArray<u8, RING> = GlobalArray::new(0);
/// Bytes the handler has put into `RX` (wrapping).
static HEAD: Global<usize> = Global::new(0);
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

fn handler(intid: u32) {
    if intid != UART_INTID.get() {
        stratum_guests::fail(format_args!("unexpected IRQ: INTID {intid}"))
    }
    // Clear first, then drain: a byte that arrives after the last
    // empty check raises the interrupt again. (Clearing after draining
    // would clear that byte's interrupt too and leave it unread until
    // the next byte comes.)
    uart_write(UARTICR, RXIM | RTIM);
    let mut head = HEAD.get();
    while uart_read(UARTFR) & FR_RXFE == 0 {
        RX.set(head % RING, uart_read(UARTDR) as u8);
        head = head.wrapping_add(1);
    }
    HEAD.set(head);
}

fn main(dtb: usize) -> ! {
    let label = match fdt::locate(dtb) {
        Ok((_, dt)) => dt.bootargs.unwrap_or("").trim(),
        Err(e) => stratum_guests::fail(format_args!("no usable device tree: {e}")),
    };
    let label = if label.is_empty() { "echo" } else { label };
    let platform = gic::bring_up(dtb);
    if let Some(uart) = platform.devices.and_then(|d| d.uart) {
        UART_BASE.set(uart.base as usize);
        UART_INTID.set(uart.intid);
    }
    let intid = UART_INTID.get();
    irq::set_handler(Some(handler));
    let g = platform.gic;
    g.set_priority(intid, 0x80);
    g.set_edge(intid, false);
    g.route_to_self(intid);
    g.enable(intid);
    uart_write(UARTIMSC, RXIM | RTIM);
    println!("{label}: ready");
    let mut line = [0u8; 128];
    let mut len = 0;
    let mut tail = 0usize;
    loop {
        // Only the UART's interrupt wakes this vCPU; no deadline.
        irq::wfi_until(u64::MAX, || HEAD.get() != tail);
        while tail != HEAD.get() {
            let b = RX.get(tail % RING);
            tail = tail.wrapping_add(1);
            if b != b'\r' && b != b'\n' {
                if len < line.len() {
                    line[len] = b;
                    len += 1;
                }
                print!("{}", char::from(b));
                continue;
            }
            let text = core::str::from_utf8(&line[..len]).unwrap_or("(not UTF-8)");
            println!();
            println!("{label}: got \"{text}\"");
            if text == "off" {
                uart_write(UARTIMSC, 0);
                g.disable(intid);
                irq::set_handler(None);
                stratum_guests::pass()
            }
            len = 0;
        }
    }
}
