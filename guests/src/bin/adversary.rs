//! `adversary`: the adversarial suite's hostile guest. It attacks every
//! interface the hypervisor offers a guest, in loops, with inputs from a
//! seeded xorshift generator (`seed=N` on the command line; each boot adds
//! its boot count, so a run repeats exactly):
//!
//! - **calls**: `HVC` and `SMC` with random function IDs (any value, and IDs
//!   in every SMCCC owner's range: Arm, PSCI, TRNG, SiP, OEM, Stratum's own)
//!   and random arguments; an unknown Stratum function must answer
//!   `NOT_SUPPORTED`;
//! - **system registers**: `MRS` of random encodings (op0 2 and 3, any
//!   op1/CRn/CRm/op2, built at run time), `MSR` of random values to the
//!   ID, debug, PMU, timer and GIC CPU-interface spaces, and cache, TLB and
//!   address-translation maintenance (`SYS`). A read that is not refused
//!   must write its destination;
//! - **MMIO**: every emulated device (distributor, redistributors or the v2
//!   CPU interface, the UART, the 32 virtio-mmio transports) and holes of
//!   the map, at every width, including forms without a syndrome
//!   (`LDP`/`STP`, writeback, SIMD);
//! - **storms**: 2000 aborts on an unmapped address, 2000 unknown calls,
//!   200 timer-woken `WFI`s, 2000 `WFE`s;
//! - **PSCI races** (with a second vCPU): `CPU_ON` of a CPU that turns
//!   itself off at once, repeated `CPU_ON` and `AFFINITY_INFO` meanwhile;
//! - **reset loops**: `boots=N` (default 3) boots, each ending in
//!   `SYSTEM_RESET` but the last, which powers off; with `seconds=S`, the
//!   last is also the first to end after S seconds of the machine's
//!   counter (the soak).
//!
//! Every access runs with the abort handler armed: a refused one is skipped.
//! IRQs stay masked at the CPU throughout (the `WFI`s end on pending
//! interrupts regardless). `rounds=N` (default 300) attack rounds per boot.
//! Each boot prints one line of counts and one of Stratum's `MEM_INFO`;
//! the last prints `STRATUM-TEST PASS adversary` if the guest's own checks
//! held.
#![no_std]
#![no_main]

use core::arch::asm;
use core::cell::UnsafeCell;

use stratum_guests::console::{PL011_BASE, UARTFR};
use stratum_guests::exception::expect_abort;
use stratum_guests::global::Global;
use stratum_guests::rng::XorShift;
use stratum_guests::smccc::{self, NOT_SUPPORTED, stratum};
use stratum_guests::{Checks, fdt, gic, mmio, println, report::fail, smp, timer};

stratum_guests::entry!("adversary", main);

/// The seed when the command line names none.
const DEFAULT_SEED: u64 = 0xad5e_55a1_7e57_0001;

/// What the attacks did, for the per-boot report.
#[derive(Default)]
struct Tally {
    calls: u64,
    sysreg_reads: u64,
    sysreg_writes: u64,
    maintenance: u64,
    mmio: u64,
    /// Accesses the hypervisor (or the CPU) refused with an exception.
    refused: u64,
    /// Reads that took no exception and left the destination unwritten.
    unwritten: u64,
    /// Unknown Stratum functions that did not answer `NOT_SUPPORTED`.
    bad_unknown: u64,
    wfis: u64,
    cpu_ons: u64,
    /// PSCI answers outside what the call may return.
    bad_psci: u64,
}

/// Instructions built at run time: one system-register access and `ret`.
#[repr(C, align(64))]
struct CodePage(UnsafeCell<[u32; 4]>);

// SAFETY: only vCPU 0 builds and runs code there.
unsafe impl Sync for CodePage {}

static CODE: CodePage = CodePage(UnsafeCell::new([0; 4]));

/// Marks a destination register as not written yet.
const SENTINEL: u64 = 0x5eed_dead_beef_5eed;

/// Runs the single instruction `insn` (which reads or writes `x0`) with
/// `x0 = arg`; returns `x0` after it and whether it took an exception.
fn run_insn(insn: u32, arg: u64) -> (u64, bool) {
    let page = CODE.0.get().cast::<u32>();
    // SAFETY: the code page is this guest's own memory; with the MMU off it
    // is executable. The cache maintenance makes the new instructions
    // visible to instruction fetch before the call.
    unsafe {
        page.write_volatile(insn);
        page.add(1).write_volatile(0xd65f_03c0); // ret
        asm!(
            "dc cvau, {p}",
            "dsb ish",
            "ic ivau, {p}",
            "dsb ish",
            "isb",
            p = in(reg) page,
            options(nostack, preserves_flags),
        );
    }
    let mut out = arg;
    let taken = expect_abort(|| {
        // SAFETY: the page holds one instruction that touches only x0 (or
        // is skipped by the abort handler) and `ret`; the call clobbers
        // what any call may.
        unsafe {
            asm!(
                "blr {f}",
                f = in(reg) page,
                inout("x0") out,
                clobber_abi("C"),
            );
        }
    });
    (out, taken.is_some())
}

/// `MRS x0, S<op0>_<op1>_C<n>_C<m>_<op2>`.
fn mrs(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
    0xd530_0000 | ((op0 - 2) << 19) | (op1 << 16) | (crn << 12) | (crm << 8) | (op2 << 5)
}

/// `MSR S<op0>_<op1>_C<n>_C<m>_<op2>, x0`.
fn msr(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
    mrs(op0, op1, crn, crm, op2) & !(1 << 21)
}

/// `SYS #op1, C<n>, C<m>, #op2, x0`.
fn sys(op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
    0xd508_0000 | (op1 << 16) | (crn << 12) | (crm << 8) | (op2 << 5)
}

/// Function IDs of every SMCCC owner, some never assigned.
fn random_fid(rng: &mut XorShift) -> u32 {
    const FORBIDDEN: [u32; 8] = [
        0x8400_0001, // CPU_SUSPEND
        0xc400_0001,
        0x8400_0002, // CPU_OFF
        0x8400_0008, // SYSTEM_OFF
        0x8400_0009, // SYSTEM_RESET
        0x8400_0012, // SYSTEM_RESET2
        0xc400_0012,
        0x8400_000e, // SYSTEM_SUSPEND
    ];
    loop {
        let low = rng.below(0x120) as u32;
        let fid = match rng.below(8) {
            0 => rng.next_u64() as u32,
            1 => 0x8000_0000 | low,          // Arm architecture
            2 => 0x8400_0000 | low,          // PSCI, TRNG (32-bit)
            3 => 0xc400_0000 | low,          // PSCI, TRNG (64-bit)
            4 => 0x8200_0000 | low,          // SiP
            5 => 0x8300_0000 | low,          // OEM
            6 => 0xc600_0000 | low,          // Stratum (vendor hypervisor)
            _ => 0x8600_ff00 | (low & 0xff), // Stratum's general queries
        };
        // Calls that would end this vCPU or the VM (or start a CPU at a
        // random address) are the guest's own business, not an attack:
        // the PSCI race and the reset loop make them on purpose.
        let cpu_on = fid & !0x4000_0000 == 0x8400_0003;
        if !FORBIDDEN.contains(&fid) && !cpu_on && fid != 0xc400_000e {
            return fid;
        }
    }
}

fn attack_calls(rng: &mut XorShift, t: &mut Tally) {
    for _ in 0..8 {
        let fid = random_fid(rng);
        let mut args = [u64::from(fid), 0, 0, 0, 0, 0, 0, 0];
        for a in &mut args[1..] {
            *a = rng.next_u64();
        }
        t.calls += 1;
        if rng.below(4) == 0 {
            // SMC: answered like HVC, or refused as undefined.
            let taken = expect_abort(|| {
                let _ = smccc::smc(args);
            });
            t.refused += u64::from(taken.is_some());
            continue;
        }
        let x0 = smccc::hvc(args)[0];
        let unknown_stratum = fid & 0xbfff_ffff == 0x8600_0000 | (fid & 0xffff)
            && (fid & 0xffff) > 2
            && (fid & 0xffff) < 0xff00;
        if unknown_stratum && smccc::status(x0) != NOT_SUPPORTED {
            println!("adversary: unknown Stratum function {fid:#x} answered {x0:#x}");
            t.bad_unknown += 1;
        }
    }
}

fn attack_sysreg_reads(rng: &mut XorShift, t: &mut Tally) {
    for _ in 0..16 {
        let op0 = 2 + rng.below(2) as u32;
        let (op1, crn, crm, op2) = (
            rng.below(8) as u32,
            rng.below(16) as u32,
            rng.below(16) as u32,
            rng.below(8) as u32,
        );
        let (value, refused) = run_insn(mrs(op0, op1, crn, crm, op2), SENTINEL);
        t.sysreg_reads += 1;
        t.refused += u64::from(refused);
        if !refused && value == SENTINEL {
            println!(
                "adversary: MRS S{op0}_{op1}_C{crn}_C{crm}_{op2} left its destination unwritten"
            );
            t.unwritten += 1;
        }
    }
}

/// Register spaces the writes aim at: (op0, op1, CRn, CRm range).
/// `MDSCR_EL1` is left alone (it would arm the random breakpoints against
/// this guest itself), and so are `ICC_SRE_EL1` and the registers that
/// keep this guest running (SCTLR, VBAR, CPACR, ...), which are not here.
const WRITE_SPACES: [(u32, u32, u32, u32, u32); 9] = [
    (3, 0, 0, 0, 7),   // ID registers: read-only
    (2, 0, 0, 0, 15),  // debug: breakpoints, watchpoints, DCC
    (2, 0, 1, 0, 4),   // debug: OS lock, OS double lock, power control
    (2, 0, 7, 8, 14),  // debug: claim tags, authentication status
    (3, 3, 9, 12, 14), // PMU
    (3, 0, 9, 14, 14), // PMU interrupt enables
    (3, 3, 14, 8, 15), // PMU event counters and types
    (3, 3, 14, 0, 3),  // generic timers
    (3, 0, 12, 8, 12), // GIC CPU interface (group 0/1, SGIs)
];

fn attack_sysreg_writes(rng: &mut XorShift, t: &mut Tally) {
    for _ in 0..8 {
        let (op0, op1, crn, lo, hi) = rng.pick(&WRITE_SPACES);
        let crm = lo + rng.below(u64::from(hi - lo + 1)) as u32;
        let op2 = rng.below(8) as u32;
        if (op0, op1, crn, crm, op2) == (2, 0, 0, 2, 2) {
            continue; // MDSCR_EL1
        }
        if (op0, op1, crn, crm, op2) == (3, 0, 12, 12, 5) {
            continue; // ICC_SRE_EL1
        }
        let value = match rng.below(4) {
            0 => 0,
            1 => u64::MAX,
            _ => rng.next_u64(),
        };
        let (_, refused) = run_insn(msr(op0, op1, crn, crm, op2), value);
        t.sysreg_writes += 1;
        t.refused += u64::from(refused);
    }
}

fn attack_maintenance(rng: &mut XorShift, t: &mut Tally) {
    // DC CISW/CSW/ISW (set/way), DC CIVAC/CVAC (by address, anywhere),
    // IC IALLU(IS), TLBI VMALLE1(IS)/VAE1(IS), AT S1E1R/W.
    const OPS: [(u32, u32, u32, u32); 11] = [
        (0, 7, 6, 2),
        (0, 7, 10, 2),
        (0, 7, 14, 2),
        (3, 7, 14, 1),
        (3, 7, 10, 1),
        (0, 7, 5, 0),
        (0, 7, 1, 0),
        (0, 8, 3, 0),
        (0, 8, 7, 1),
        (0, 7, 8, 0),
        (0, 7, 8, 1),
    ];
    for _ in 0..4 {
        let (op1, crn, crm, op2) = rng.pick(&OPS);
        let (_, refused) = run_insn(sys(op1, crn, crm, op2), rng.next_u64() & 0xffff_ffff_fff0);
        t.maintenance += 1;
        t.refused += u64::from(refused);
    }
}

/// A device window of the guest map: base, size, and whether writes are
/// fair game everywhere (the UART's are limited to harmless registers).
#[derive(Clone, Copy)]
struct Window {
    base: usize,
    size: usize,
    writes: bool,
}

/// UART registers a random write may hit: IBRD, FBRD, IFLS, IMSC, ICR.
const UART_SCRATCH: [usize; 5] = [0x24, 0x28, 0x34, 0x38, 0x44];

fn mmio_windows(gic: &gic::Gic, cpus: usize) -> [Window; 5] {
    let gic_cpu = if gic.is_v3() {
        Window {
            base: 0x080a_0000,
            size: 0x2_0000 * cpus.max(1),
            writes: true,
        }
    } else {
        Window {
            base: 0x0801_0000,
            size: 0x2000,
            writes: true,
        }
    };
    [
        Window {
            base: 0x0800_0000,
            size: 0x1_0000,
            writes: true,
        },
        gic_cpu,
        Window {
            base: PL011_BASE,
            size: 0x1000,
            writes: false,
        },
        Window {
            base: 0x0a00_0000,
            size: 32 * 0x200,
            writes: true,
        },
        // Holes of the map (nothing there: a stage-2 fault).
        Window {
            base: 0x0c00_0000,
            size: 0x0400_0000,
            writes: true,
        },
    ]
}

fn attack_mmio(rng: &mut XorShift, t: &mut Tally, windows: &[Window]) {
    for _ in 0..16 {
        let w = rng.pick(windows);
        let width = 1usize << rng.below(4);
        let addr = (w.base + rng.below(w.size as u64) as usize) & !(width - 1);
        let write = rng.below(2) == 0;
        let value = rng.next_u64();
        let mut form = rng.below(8);
        let addr = if write && !w.writes {
            // Only the scratch registers: a pair covers IBRD and FBRD, a
            // post-indexed store writes one, anything else is a plain
            // 32-bit store.
            match form {
                0 => PL011_BASE + 0x24,
                1 => PL011_BASE + rng.pick(&UART_SCRATCH),
                _ => {
                    form = 3;
                    PL011_BASE + rng.pick(&UART_SCRATCH)
                }
            }
        } else {
            addr
        };
        let width = if write && !w.writes { 4 } else { width };
        let taken = expect_abort(|| {
            // SAFETY: device registers of this VM (or holes, which abort and
            // are skipped); the forms below only touch the scratch
            // registers named in the asm.
            unsafe {
                match (form, write) {
                    // Pairs and writeback: no syndrome (ISV = 0).
                    (0, false) => asm!("ldp {a:w}, {b:w}, [{p}]", p = in(reg) addr & !7,
                                        a = out(reg) _, b = out(reg) _, options(nostack)),
                    (0, true) => asm!("stp {v:w}, {v:w}, [{p}]", p = in(reg) addr & !3,
                                       v = in(reg) value, options(nostack)),
                    (1, false) => asm!("ldr {v}, [{p}, #8]!", p = inout(reg) addr & !7 => _,
                                        v = out(reg) _, options(nostack)),
                    (1, true) => asm!("str {v:w}, [{p}], #4", p = inout(reg) addr & !3 => _,
                                       v = in(reg) value, options(nostack)),
                    // SIMD: refused by the decoder.
                    (2, false) => asm!("ldr {q:q}, [{p}]", p = in(reg) addr & !15,
                                        q = out(vreg) _, options(nostack)),
                    (_, false) => match width {
                        1 => {
                            let _ = mmio::read8(addr);
                        }
                        2 => {
                            let _ = core::ptr::read_volatile(addr as *const u16);
                        }
                        4 => {
                            let _ = mmio::read32(addr);
                        }
                        _ => {
                            let _ = mmio::read64(addr);
                        }
                    },
                    (_, true) => match width {
                        1 => mmio::write8(addr, value as u8),
                        2 => mmio::write16(addr, value as u16),
                        4 => mmio::write32(addr, value as u32),
                        _ => mmio::write64(addr, value),
                    },
                }
            }
        });
        t.mmio += 1;
        t.refused += u64::from(taken.is_some());
    }
}

/// Clears the CPU interface's active priorities, which random writes (and
/// reads of the acknowledge registers) may have left set: with a running
/// priority above every interrupt's, nothing would end a `WFI` (as
/// Linux does at start-up, and `Gic::init` does not).
fn clear_active_priorities(gic: &gic::Gic) {
    if gic.is_v3() {
        for n in 0..4 {
            // ICC_AP0R<n>_EL1 and ICC_AP1R<n>_EL1 (the unimplemented ones
            // are refused and skipped).
            let _ = run_insn(msr(3, 0, 12, 8, 4 + n), 0);
            let _ = run_insn(msr(3, 0, 12, 9, n), 0);
        }
    } else {
        for n in 0..4 {
            // GICC_APR<n> and GICC_NSAPR<n>.
            // SAFETY: this CPU's (virtual) CPU interface registers.
            unsafe {
                mmio::write32(0x0801_00d0 + 4 * n, 0);
                mmio::write32(0x0801_00e0 + 4 * n, 0);
            }
        }
    }
}

/// Storms: exits as fast as the guest can make them.
fn storms(t: &mut Tally, gic: &mut gic::Gic) {
    for _ in 0..2000 {
        let taken = expect_abort(|| {
            // SAFETY: a hole of the map: the read aborts and is skipped.
            unsafe {
                let _ = mmio::read32(0x0c00_0000);
            }
        });
        t.refused += u64::from(taken.is_some());
    }
    for _ in 0..2000 {
        let _ = smccc::call(0xc600_7777, 1, 2, 3);
        t.calls += 1;
    }
    // WFI woken by the virtual timer (masked at the CPU: the WFI ends on
    // the pending interrupt, nothing is taken). The random writes may have
    // left the GIC in any state: set it up again first.
    if let Err(e) = gic.init() {
        fail(format_args!("GIC init after the attacks: {e}"));
    }
    clear_active_priorities(gic);
    gic.enable(gic::INTID_VTIMER);
    for _ in 0..200 {
        timer::set_vtimer_cval(timer::counter() + timer::ticks_from_us(20));
        timer::set_vtimer_ctl(timer::CTL_ENABLE);
        // SAFETY: waits for an interrupt; IRQs are masked, so none is taken.
        unsafe { asm!("dsb sy", "wfi", options(nostack, preserves_flags)) };
        timer::set_vtimer_ctl(0);
        t.wfis += 1;
    }
    for _ in 0..2000 {
        // SAFETY: `wfe` only waits for an event (it yields under Stratum).
        unsafe { asm!("wfe", options(nostack, preserves_flags)) };
    }
}

/// Set by the secondary vCPU before it turns itself off.
static SECONDARY_RAN: Global<u64> = Global::new(0);

fn secondary(_index: usize) -> ! {
    SECONDARY_RAN.set(SECONDARY_RAN.get() + 1);
    let _ = smccc::psci_version();
    let _ = smccc::call(0xc600_7777, 0, 0, 0);
    // CPU_OFF: does not return on success.
    let status = smccc::call(0x8400_0002, 0, 0, 0);
    stratum_guests::report::hang(if smccc::status(status) == 0 {
        "CPU_OFF returned success"
    } else {
        "CPU_OFF failed"
    })
}

/// CPU_ON of a vCPU that turns itself off at once, with more CPU_ONs and
/// AFFINITY_INFO in the meantime.
fn psci_race(t: &mut Tally, mpidr: u64) {
    use stratum_guests::smccc::{ALREADY_ON, INVALID_PARAMETERS, ON_PENDING, SUCCESS};
    for _ in 0..20 {
        let first = smp::start_cpu(1, mpidr, secondary);
        t.cpu_ons += 1;
        if first != SUCCESS && first != ALREADY_ON && first != ON_PENDING {
            println!("adversary: CPU_ON answered {first}");
            t.bad_psci += 1;
        }
        let again = smp::start_cpu(1, mpidr, secondary);
        t.cpu_ons += 1;
        if ![SUCCESS, ALREADY_ON, ON_PENDING].contains(&again) {
            println!("adversary: CPU_ON again answered {again}");
            t.bad_psci += 1;
        }
        // Wait (bounded) until it is off again: AFFINITY_INFO 1 = OFF. On
        // a CPU shared with other VMs on a loaded host this can take a
        // while; a vCPU lost between ON and OFF never gets there.
        let deadline = timer::deadline_us(5_000_000);
        loop {
            let state = smccc::affinity_info(mpidr, 0);
            if state == 1 {
                break;
            }
            if ![0, 2, INVALID_PARAMETERS].contains(&state) {
                println!("adversary: AFFINITY_INFO answered {state}");
                t.bad_psci += 1;
                break;
            }
            if timer::counter() > deadline {
                println!(
                    "adversary: vCPU 1 did not turn itself off within 5 s \
                     (AFFINITY_INFO {state}, CPU_ON {first} then {again}, ran {} times)",
                    SECONDARY_RAN.get()
                );
                t.bad_psci += 1;
                break;
            }
        }
    }
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    let (_, dt) = fdt::locate_fdt(dtb).unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let summary = dt
        .summary()
        .unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let cmdline = summary.bootargs.unwrap_or("");
    let number = |key, default| stratum_guests::arg_number(cmdline, key, default);
    let (seed, rounds, boots, seconds) = (
        number("seed", DEFAULT_SEED),
        number("rounds", 300),
        number("boots", 3),
        number("seconds", 0),
    );
    let mut mpidrs = [0u64; smp::MAX_CPUS];
    let cpus = dt.cpu_ids(&mut mpidrs).unwrap_or(1);
    let Some(info) = smccc::stratum_info() else {
        fail("Stratum INFO hypercall not implemented")
    };
    let boot = info.boot_count;
    let mut rng = XorShift::new(seed.wrapping_add(boot));
    let platform = gic::bring_up(dtb);
    let mut gic = platform.gic;
    let windows = mmio_windows(&gic, cpus);
    println!("adversary: boot {boot} of {boots}: seed {seed:#x}, {rounds} rounds, {cpus} vCPUs");
    let mut t = Tally::default();
    for _ in 0..rounds {
        match rng.below(5) {
            0 => attack_calls(&mut rng, &mut t),
            1 => attack_sysreg_reads(&mut rng, &mut t),
            2 => attack_sysreg_writes(&mut rng, &mut t),
            3 => attack_maintenance(&mut rng, &mut t),
            _ => attack_mmio(&mut rng, &mut t, &windows),
        }
    }
    storms(&mut t, &mut gic);
    if cpus > 1 {
        psci_race(&mut t, mpidrs[1]);
    }
    // The UART may have been reprogrammed (baud rate, interrupt masks):
    // output must still flow.
    // SAFETY: reading the PL011 flag register has no side effects.
    let _ = unsafe { mmio::read32(PL011_BASE + UARTFR) };
    println!(
        "adversary: boot {boot}: calls {} sysreg reads {} writes {} maintenance {} mmio {} refused {} wfi {} cpu_on {}",
        t.calls,
        t.sysreg_reads,
        t.sysreg_writes,
        t.maintenance,
        t.mmio,
        t.refused,
        t.wfis,
        t.cpu_ons
    );
    let mem = smccc::hvc([u64::from(stratum::MEM_INFO), 0, 0, 0, 0, 0, 0, 0]);
    println!(
        "adversary: boot {boot}: mem_info tables={} ram={} pool_free={}",
        mem[1], mem[2], mem[3]
    );
    c.check_count(
        "reads that left their destination unwritten",
        t.unwritten,
        0,
    );
    c.check_count("unknown Stratum functions not refused", t.bad_unknown, 0);
    c.check_count("PSCI answers out of range", t.bad_psci, 0);
    if cpus > 1 {
        c.check("the second vCPU ran", SECONDARY_RAN.get() > 0);
    }
    // The counter is the machine's (CNTVOFF_EL2 = 0): `seconds` bounds the
    // whole run, across resets.
    let out_of_time = seconds > 0 && timer::counter() >= seconds.saturating_mul(timer::frequency());
    if c.failed() > 0 || boot >= boots || out_of_time {
        c.finish()
    }
    smccc::system_reset()
}
