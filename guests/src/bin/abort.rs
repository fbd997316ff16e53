//! `abort`: touches IPAs outside its memory map and checks the data abort the
//! hypervisor injects is architected in every detail: taken at `VBAR_EL1 +
//! 0x200` (current EL, SP_ELx, synchronous) — or `+0x000` while running on
//! SP_EL0 — with `ESR_EL1.EC = 0x25`, `DFSC = 0x10` (synchronous external
//! abort), `IL = 1`, `WnR` matching the access, `FAR_EL1` = the address,
//! `ELR_EL1` = the faulting instruction and `SPSR_EL1.M` = the mode it ran in.
//! Probes: `0x1000_0000` and the first page after the end of RAM (from the DT).
//! Finally it takes a run of aborts in a row and checks it is still running.
#![no_std]
#![no_main]

use core::arch::asm;
use core::cell::UnsafeCell;

use stratum_guests::exception::{
    self, DFSC_SYNC_EXTERNAL, EC_DATA_ABORT_SAME_EL, TakenException, VECTOR_CURRENT_SP0_SYNC,
    VECTOR_CURRENT_SPX_SYNC,
};
use stratum_guests::{Checks, fdt, println};

stratum_guests::entry!("abort", main);

/// An IPA in no Stratum VM's memory map (QEMU `virt` puts PCIe MMIO here).
const OUTSIDE: usize = 0x1000_0000;
/// `SPSR.M[3:0]` for EL1 with SP_EL1 (EL1h).
const MODE_EL1H: u64 = 0b0101;
/// `SPSR.M[3:0]` for EL1 with SP_EL0 (EL1t).
const MODE_EL1T: u64 = 0b0100;
/// Size of the stack used while running on SP_EL0.
const SP0_STACK_SIZE: usize = 16 * 1024;

/// The stack for the SP_EL0 part of the test.
#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; SP0_STACK_SIZE]>);

// SAFETY: only the SP_EL0 phase uses the stack, through its address; Rust code
// never forms a reference to its contents.
unsafe impl Sync for Stack {}

static SP0_STACK: Stack = Stack(UnsafeCell::new([0; SP0_STACK_SIZE]));

/// One access, made with the handler armed. Returns what the handler saw and
/// the address of the accessing instruction.
fn access(addr: usize, write: bool) -> (Option<TakenException>, u64) {
    let mut insn: u64 = 0;
    let seen = exception::expect_abort(|| {
        if write {
            // SAFETY: `addr` is outside guest RAM (so no guest data is
            // clobbered); the expected abort is armed and skips the store.
            unsafe {
                asm!("adr {pc}, 2f", "2: str {v:w}, [{a}]",
                     pc = out(reg) insn, a = in(reg) addr, v = in(reg) 0x5a5a_5a5a_u32,
                     options(nostack));
            }
        } else {
            // SAFETY: as above; the loaded value is discarded.
            unsafe {
                asm!("adr {pc}, 2f", "2: ldr {v:w}, [{a}]",
                     pc = out(reg) insn, a = in(reg) addr, v = out(reg) _,
                     options(nostack));
            }
        }
    });
    (seen, insn)
}

/// Probes `addr` with a read and a write and checks both aborts.
fn probe(c: &mut Checks, addr: usize, mode: u64, vector: u64) {
    let mode_name = if mode == MODE_EL1H { "EL1h" } else { "EL1t" };
    for write in [false, true] {
        let kind = if write { "write" } else { "read" };
        let (seen, insn) = access(addr, write);
        let Some(t) = seen else {
            c.check(format_args!("{kind} {addr:#x} ({mode_name}) aborts"), false);
            continue;
        };
        println!(
            "{kind} {addr:#x} ({mode_name}): vector +{:#05x} ESR={:#x} FAR={:#x} ELR={:#x} SPSR={:#x}",
            t.vector_offset, t.esr, t.far, t.elr, t.spsr
        );
        let p = Probe {
            kind,
            addr,
            mode_name,
        };
        c.check_eq(format_args!("{p} vector offset"), t.vector_offset, vector);
        c.check_eq(format_args!("{p} ESR.EC"), t.ec(), EC_DATA_ABORT_SAME_EL);
        c.check_eq(format_args!("{p} DFSC"), t.fsc(), DFSC_SYNC_EXTERNAL);
        c.check_eq(format_args!("{p} ESR.IL"), u64::from(t.il()), 1);
        c.check_eq(
            format_args!("{p} ESR.WnR"),
            u64::from(t.wnr()),
            u64::from(write),
        );
        c.check_eq(format_args!("{p} FAR"), t.far, addr as u64);
        c.check_eq(format_args!("{p} ELR"), t.elr, insn);
        c.check_eq(format_args!("{p} SPSR.M"), t.from_mode(), mode);
    }
}

/// Names one probe in check lines: `read 0x10000000 (EL1h)`.
struct Probe {
    kind: &'static str,
    addr: usize,
    mode_name: &'static str,
}

impl core::fmt::Display for Probe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {:#x} ({})", self.kind, self.addr, self.mode_name)
    }
}

/// State shared with the SP_EL0 phase.
struct Plan<'a> {
    checks: &'a mut Checks,
    targets: &'a [usize],
}

extern "C" fn on_sp_el0(plan: usize) {
    // SAFETY: `main` passes a pointer to its live `Plan`, which nothing else
    // uses until this function returns.
    let plan = unsafe { &mut *(plan as *mut Plan<'_>) };
    let mut spsel: u64;
    // SAFETY: reading SPSel has no side effects.
    unsafe { asm!("mrs {}, spsel", out(reg) spsel, options(nomem, nostack, preserves_flags)) };
    plan.checks.check_eq("SPSel while on SP_EL0", spsel & 1, 0);
    for &addr in plan.targets {
        probe(plan.checks, addr, MODE_EL1T, VECTOR_CURRENT_SP0_SYNC);
    }
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    let ram_end = match fdt::locate(dtb) {
        Ok((_, dt)) => dt.memory.map(|(base, size)| base + size),
        Err(e) => {
            println!("device tree unusable: {e}");
            None
        }
    };
    c.check("RAM end known from the device tree", ram_end.is_some());
    let mut targets = [OUTSIDE, 0];
    let mut count = 1;
    if let Some(end) = ram_end {
        println!("RAM ends at {end:#x}; probing the page after it too");
        targets[1] = end as usize;
        count = 2;
    }
    let targets = &targets[..count];

    // Sanity: the armed handler records nothing for an access to RAM.
    let (seen, _) = access(fdt::RAM_BASE + 0x80000, false);
    c.check("no abort reading own RAM", seen.is_none());

    for &addr in targets {
        probe(&mut c, addr, MODE_EL1H, VECTOR_CURRENT_SPX_SYNC);
    }

    let stack_top = SP0_STACK.0.get() as usize + SP0_STACK_SIZE;
    let mut plan = Plan {
        checks: &mut c,
        targets,
    };
    // SAFETY: SP0_STACK is private to this phase, 16-byte aligned, and
    // `stack_top` is its end.
    unsafe { exception::run_on_sp_el0(on_sp_el0, &mut plan as *mut Plan<'_> as usize, stack_top) };

    const IN_A_ROW: usize = 8;
    let mut taken = 0;
    for i in 0..IN_A_ROW {
        let addr = targets[i % targets.len()];
        if access(addr, i % 2 == 1).0.is_some() {
            taken += 1;
        }
    }
    println!("still running after {taken} aborts in a row");
    c.check_eq("aborts in a row", taken, IN_A_ROW as u64);
    c.finish()
}
