//! `isv0`: MMIO accesses to the PL011 in forms whose data aborts carry no
//! syndrome (`ESR.ISV == 0`: pairs, pre/post-index writeback), which the
//! hypervisor must decode from the instruction, plus byte/halfword and
//! unscaled forms (`ldrb`, `ldrh`, `strh`, `ldur`) and a register offset.
//! It uses IBRD (16 bits) and FBRD (6 bits) as scratch registers (restoring them
//! at the end), FR for read-only checks, and DR for a line printed with a
//! post-indexed `strb`. One `check …: ok|FAILED` line per check.
#![no_std]
#![no_main]

use core::arch::asm;

use stratum_guests::console::{
    FR_BUSY, FR_TXFE, FR_TXFF, PL011_BASE, UARTDR, UARTFBRD, UARTFR, UARTIBRD,
};
use stratum_guests::exception::expect_abort;
use stratum_guests::{Checks, console, mmio, println};

stratum_guests::entry!("isv0", main);

const BASE: usize = PL011_BASE;

fn read_reg(offset: usize) -> u32 {
    // SAFETY: IBRD, FBRD and FR are side-effect-free PL011 registers.
    unsafe { mmio::read32(BASE + offset) }
}

fn write_reg(offset: usize, value: u32) {
    // SAFETY: only IBRD/FBRD are written this way; they do not affect the
    // emulated (or QEMU's) transmitter.
    unsafe { mmio::write32(BASE + offset, value) }
}

/// Waits (bounded) for the transmit FIFO to drain.
fn wait_tx_empty() {
    for _ in 0..10_000_000 {
        if console::flags() & FR_TXFE != 0 {
            return;
        }
    }
}

fn main(_dtb: usize) -> ! {
    let mut c = Checks::new();
    let (orig_ibrd, orig_fbrd) = (read_reg(UARTIBRD), read_reg(UARTFBRD));
    println!("original IBRD {orig_ibrd:#x} FBRD {orig_fbrd:#x}");

    // STP then LDP, signed offset.
    let (ibrd, fbrd) = (0x0d05_u32, 0x2a_u32);
    let (w3, w4): (u32, u32);
    // SAFETY: x0 + 0x24/0x28 are IBRD/FBRD; writing them is harmless.
    unsafe {
        asm!("stp w1, w2, [x0, #0x24]", "ldp w3, w4, [x0, #0x24]",
             in("x0") BASE, in("x1") ibrd, in("x2") fbrd, out("x3") w3, out("x4") w4,
             options(nostack));
    }
    c.check_eq(
        "stp w1, w2, [x0, #0x24]: IBRD",
        read_reg(UARTIBRD).into(),
        ibrd.into(),
    );
    c.check_eq(
        "stp w1, w2, [x0, #0x24]: FBRD",
        read_reg(UARTFBRD).into(),
        fbrd.into(),
    );
    c.check_eq("ldp w3, w4, [x0, #0x24]: w3", w3.into(), ibrd.into());
    c.check_eq("ldp w3, w4, [x0, #0x24]: w4", w4.into(), fbrd.into());

    // STP pre-index.
    let (ibrd, fbrd) = (0x1234_u32, 0x15_u32);
    let x0: usize;
    // SAFETY: as above.
    unsafe {
        asm!("stp w1, w2, [x0, #0x24]!",
             inout("x0") BASE => x0, in("x1") ibrd, in("x2") fbrd, options(nostack));
    }
    c.check_eq(
        "stp w1, w2, [x0, #0x24]!: IBRD",
        read_reg(UARTIBRD).into(),
        ibrd.into(),
    );
    c.check_eq(
        "stp w1, w2, [x0, #0x24]!: FBRD",
        read_reg(UARTFBRD).into(),
        fbrd.into(),
    );
    c.check_eq(
        "stp w1, w2, [x0, #0x24]!: x0",
        x0 as u64,
        (BASE + 0x24) as u64,
    );

    // LDP post-index.
    let (x0, w3, w4): (usize, u32, u32);
    // SAFETY: reads IBRD/FBRD only.
    unsafe {
        asm!("ldp w3, w4, [x0], #8",
             inout("x0") BASE + UARTIBRD => x0, out("x3") w3, out("x4") w4, options(nostack));
    }
    c.check_eq("ldp w3, w4, [x0], #8: w3", w3.into(), ibrd.into());
    c.check_eq("ldp w3, w4, [x0], #8: w4", w4.into(), fbrd.into());
    c.check_eq("ldp w3, w4, [x0], #8: x0", x0 as u64, (BASE + 0x2c) as u64);

    // STR post-index, then LDR pre-index back to IBRD.
    let ibrd = 0x0777_u32;
    let (x0_after_str, x0_after_ldr, w2): (usize, usize, u32);
    // SAFETY: writes IBRD, reads IBRD.
    unsafe {
        asm!("str w1, [x0], #4", "mov x5, x0", "ldr w2, [x0, #-4]!",
             inout("x0") BASE + UARTIBRD => x0_after_ldr, in("x1") ibrd,
             out("x2") w2, out("x5") x0_after_str, options(nostack));
    }
    c.check_eq(
        "str w1, [x0], #4: IBRD",
        read_reg(UARTIBRD).into(),
        ibrd.into(),
    );
    c.check_eq(
        "str w1, [x0], #4: x0",
        x0_after_str as u64,
        (BASE + 0x28) as u64,
    );
    c.check_eq("ldr w2, [x0, #-4]!: w2", w2.into(), ibrd.into());
    c.check_eq(
        "ldr w2, [x0, #-4]!: x0",
        x0_after_ldr as u64,
        (BASE + 0x24) as u64,
    );

    // LDR register offset (FR): the transmitter has drained, so TXFE is set
    // and TXFF clear.
    wait_tx_empty();
    let w5: u32;
    // SAFETY: reads FR, which has no side effects.
    unsafe {
        asm!("ldr w5, [x0, x6]", in("x0") BASE, in("x6") UARTFR, out("x5") w5,
             options(nostack, readonly));
    }
    println!(
        "ldr w5, [x0, x6]: FR = {w5:#x} (BUSY {})",
        u32::from(w5 & FR_BUSY != 0)
    );
    c.check("ldr w5, [x0, x6]: FR.TXFE set", w5 & FR_TXFE != 0);
    c.check("ldr w5, [x0, x6]: FR.TXFF clear", w5 & FR_TXFF == 0);

    // LDRB of FR, LDRH / STRH of IBRD, LDRB of FBRD.
    wait_tx_empty();
    let w7: u32;
    // SAFETY: reads FR.
    unsafe {
        asm!("ldrb w7, [x0, #0x18]", in("x0") BASE, out("x7") w7, options(nostack, readonly));
    }
    c.check(
        format_args!("ldrb w7, [x0, #0x18]: FR byte {w7:#x} has TXFE, not TXFF"),
        w7 <= 0xff && w7 & FR_TXFE != 0 && w7 & FR_TXFF == 0,
    );
    let w8: u32;
    // SAFETY: reads IBRD.
    unsafe {
        asm!("ldrh w8, [x0, #0x24]", in("x0") BASE, out("x8") w8, options(nostack, readonly));
    }
    c.check_eq("ldrh w8, [x0, #0x24]: IBRD", w8.into(), ibrd.into());
    let ibrd = 0x1bee_u32;
    // SAFETY: writes IBRD.
    unsafe {
        asm!("strh w9, [x0, #0x24]", in("x0") BASE, in("x9") ibrd, options(nostack));
    }
    c.check_eq(
        "strh w9, [x0, #0x24]: IBRD",
        read_reg(UARTIBRD).into(),
        ibrd.into(),
    );
    let w10: u32;
    // SAFETY: reads FBRD.
    unsafe {
        asm!("ldrb w10, [x0, #0x28]", in("x0") BASE, out("x10") w10, options(nostack, readonly));
    }
    c.check_eq("ldrb w10, [x0, #0x28]: FBRD", w10.into(), fbrd.into());

    // LDUR with a negative unscaled offset.
    let w11: u32;
    // SAFETY: reads IBRD (0x30 - 0xc).
    unsafe {
        asm!("ldur w11, [x0, #-0xc]", in("x0") BASE + 0x30, out("x11") w11,
             options(nostack, readonly));
    }
    c.check_eq("ldur w11, [x0, #-0xc]: IBRD", w11.into(), ibrd.into());

    // STRB post-index to DR: prints one line, checking the writeback each time.
    let mut bad_writeback = 0;
    for &byte in b"isv0: this line was printed with strb w1, [x0], #4\r\n" {
        while console::flags() & FR_TXFF != 0 {}
        let x0: usize;
        // SAFETY: writes one character to DR.
        unsafe {
            asm!("strb w1, [x0], #4",
                 inout("x0") BASE + UARTDR => x0, in("x1") u32::from(byte), options(nostack));
        }
        if x0 != BASE + UARTDR + 4 {
            bad_writeback += 1;
        }
    }
    c.check_eq("strb w1, [x0], #4: bad writebacks", bad_writeback, 0);

    rejected_accesses(&mut c);

    write_reg(UARTIBRD, orig_ibrd);
    write_reg(UARTFBRD, orig_fbrd);
    c.check_eq("IBRD restored", read_reg(UARTIBRD).into(), orig_ibrd.into());
    c.check_eq("FBRD restored", read_reg(UARTFBRD).into(), orig_fbrd.into());
    c.finish()
}

/// Accesses the PL011 cannot take (64-bit, and a SIMD register load, which
/// the hypervisor does not emulate): each must reach this guest as a
/// synchronous external abort (EC 0x25, DFSC 0x10, FAR = the address) with
/// no side effect on the device, and the guest keeps running.
fn rejected_accesses(c: &mut Checks) {
    fn ldr_x() {
        // SAFETY: a 64-bit load from IBRD: the hypervisor must refuse it; the
        // armed handler skips the instruction.
        unsafe { asm!("ldr x1, [x0, #0x24]", in("x0") BASE, out("x1") _, options(nostack)) }
    }
    fn str_x() {
        // SAFETY: a 64-bit store to IBRD, refused as above.
        unsafe {
            asm!("str x1, [x0, #0x24]", in("x0") BASE, in("x1") 0x0bad_0bad_u64, options(nostack))
        }
    }
    fn ldp_x() {
        // SAFETY: a 64-bit pair load (no syndrome): decoded, then refused.
        unsafe {
            asm!("ldp x1, x2, [x0, #0x20]", in("x0") BASE, out("x1") _, out("x2") _,
                 options(nostack))
        }
    }
    fn ldr_q() {
        // SAFETY: a SIMD&FP register load (no syndrome): not emulated.
        unsafe { asm!("ldr q0, [x0, #0x20]", in("x0") BASE, out("v0") _, options(nostack)) }
    }
    let cases: [(&str, fn(), usize); 4] = [
        ("ldr x1, [x0, #0x24] (64-bit)", ldr_x, UARTIBRD),
        ("str x1, [x0, #0x24] (64-bit)", str_x, UARTIBRD),
        ("ldp x1, x2, [x0, #0x20] (64-bit pair)", ldp_x, 0x20),
        ("ldr q0, [x0, #0x20] (SIMD)", ldr_q, 0x20),
    ];
    let before = read_reg(UARTIBRD);
    for (what, access, offset) in cases {
        match expect_abort(access) {
            Some(e) => {
                c.check_eq(format_args!("{what}: ESR.EC"), e.ec(), 0x25);
                c.check_eq(format_args!("{what}: DFSC"), e.esr & 0x3f, 0x10);
                c.check_eq(format_args!("{what}: FAR"), e.far, (BASE + offset) as u64);
            }
            None => {
                c.check(format_args!("{what}: aborted"), false);
            }
        }
    }
    c.check_eq(
        "rejected accesses left IBRD alone",
        read_reg(UARTIBRD).into(),
        before.into(),
    );
}
