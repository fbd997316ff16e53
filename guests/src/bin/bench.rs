//! `bench`: the path-length benchmark guest (`cargo xtask bench`, `stratum
//! bench`). Under QEMU's `-icount shift=4,sleep=off` one `CNTVCT_EL0` tick is
//! one executed instruction (at any exception level), so every figure here is
//! a count of instructions, and runs repeat exactly.
//!
//! Each operation runs `warmup` times untimed, then `iterations` times
//! (`bench.iterations=N` on the command line; default 1000, warm-up a tenth),
//! each timed with `isb; mrs cntvct_el0` right before and after its body.
//! With one CPU in the device tree the guest measures:
//!
//! - `empty`: nothing between the two counter reads (the method's own cost);
//! - `hvc`: an `HVC #0` round trip calling `PSCI_VERSION`;
//! - `gicd_read`: one 32-bit read of `GICD_TYPER` (no side effects);
//! - `uart_read`: one 32-bit read of the PL011's `UARTFR`;
//! - `idreg_read`: `mrs` of `ID_AA64MMFR0_EL1` (trapped under `HCR_EL2.TID3`);
//! - `vtimer_spin` / `vtimer_wfi`: the virtual timer armed 2000 ticks ahead
//!   with `CNTV_CVAL_EL0`, the guest spinning with IRQs unmasked or waiting
//!   in `WFI`; the sample is the counter the IRQ vector read on entry
//!   ([`exception::irq_entry_counter`]) minus the deadline.
//!
//! With two or more CPUs it measures `ipi` only: vCPU 0 starts vCPU 1
//! (PSCI `CPU_ON`), which waits in `WFI`; vCPU 0 reads the counter and sends
//! SGI 1 to it (GICv3 `ICC_SGI1R_EL1`, GICv2 `GICD_SGIR`); the sample is
//! vCPU 1's vector-entry counter minus that reading (the virtual counter is
//! one per VM, so both CPUs read the same clock).
//!
//! With `bench.role=ping` or `bench.role=pong` on the command line it is one
//! end of the VM-switch case instead: two VMs time-sharing one CPU with a
//! channel between them (the host writes that config). `pong` enables every
//! doorbell SPI (INTID 80 and up: SPI 48 + channel id), answers every
//! doorbell with one (`DOORBELL` on channel 0) and powers off silently after
//! `1 + warmup + iterations` of them. `ping` first rings until `pong`
//! answers (a ring before `pong`'s GIC is up is lost: retried after 2 M
//! ticks, on the virtual timer), then per sample reads the counter, rings,
//! and waits in `WFI`; the sample (`vm_switch`) is its vector-entry counter
//! for the answer minus that reading: a round trip, two switches between
//! the VMs, measured on `ping`'s own virtual counter.
//!
//! Markers for `stratum bench`'s breakdown, which finds each sample's
//! counter reads in a QEMU instruction trace (`stratum::bench::breakdown`):
//! the single-CPU operations' timed code is in functions of its own, kept
//! out of line and unmangled (`time_hvc`, `time_gicd_read`,
//! `time_uart_read`, `time_idreg`, `time_vtimer_spin`, `time_vtimer_wfi`);
//! the IPI's and the VM switch's first counter reads are recorded in the
//! section `.bench_marks` ([`marked_counter`]), so their code stays as it
//! was (out of line, it measured a few instructions more). Neither changes
//! an instruction between a sample's two counter reads.
//!
//! Output, one line each (parsed by `stratum::bench`):
//!
//! ```text
//! BENCH-ENV hypervisor=stratum|none gic=3 cpus=1 iterations=1000 warmup=100 freq=62500000 mmfr0=0x1124
//! BENCH op=hvc n=1000 min=95 median=95 p99=97 max=120 hist=95:998,97:1,120:1
//! BENCH-DONE
//! ```
//!
//! `hist` is the sorted samples as `value:count` pairs, so the host can check
//! the statistics. Then `STRATUM-TEST PASS bench` and `SYSTEM_OFF`.
//!
//! The same image boots on bare QEMU at EL1 (as an arm64 `Image`, so `x0` is
//! the DTB): the emulator baseline. The guest finds out which it runs on with
//! Stratum's `INFO` hypercall, which bare QEMU does not implement (an
//! undefined-instruction exception, which the guest expects and skips).
#![no_std]
#![no_main]

use core::arch::asm;

use stratum_guests::fdt::GicVersion;
use stratum_guests::gic::{self, GICD_SGIR, GICD_TYPER, INTID_VTIMER};
use stratum_guests::global::{Global, GlobalArray};
use stratum_guests::{console, exception, irq, print, println, smccc, sysreg, timer};

stratum_guests::entry!("bench", main);

/// Timed iterations unless the command line says otherwise.
const DEFAULT_ITERATIONS: usize = 1000;
/// Most iterations the guest keeps samples for.
const MAX_ITERATIONS: usize = 2000;
/// How far ahead the timer is armed, in ticks (instructions).
const TIMER_AHEAD: u64 = 2000;
/// Give up waiting for an interrupt after this many ticks.
const WAIT_LIMIT: u64 = 50_000_000;
/// The SGI the IPI benchmark sends.
const BENCH_SGI: u32 = 1;
/// The SGI vCPU 1 answers with, to wake vCPU 0 from `WFI`.
const REPLY_SGI: u32 = 2;

/// Latency samples written by the IRQ handler, one per iteration.
static LATENCY: GlobalArray<u64, MAX_ITERATIONS> = GlobalArray::new(0);
/// Which sample the next interrupt fills.
static SLOT: Global<usize> = Global::new(0);
/// Set by the handler when the awaited interrupt arrived.
static DONE: Global<bool> = Global::new(false);
/// The counter vCPU 0 read right before sending the SGI.
static IPI_SENT_AT: Global<u64> = Global::new(0);
/// vCPU 0's `MPIDR_EL1` and GICv2 CPU mask.
static PRIMARY_MPIDR: Global<u64> = Global::new(0);
static PRIMARY_CPU_MASK: Global<u8> = Global::new(0);
/// vCPU 1's `MPIDR_EL1` (0 until it runs), and its GICv2 CPU mask.
static SECONDARY_MPIDR: Global<u64> = Global::new(0);
static SECONDARY_CPU_MASK: Global<u8> = Global::new(0);
/// Set by vCPU 1 once its GIC CPU interface is ready.
static SECONDARY_READY: Global<bool> = Global::new(false);
/// The VM-switch role from the command line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ping,
    Pong,
}
/// This VM's role (the handler answers doorbells in `pong`).
static IS_PONG: Global<bool> = Global::new(false);
/// Doorbells `pong` has answered.
static ANSWERED: Global<usize> = Global::new(0);
/// Set while `ping` waits for `pong`'s first answer: the virtual timer is
/// then its retry alarm ([`TIMED_OUT`]), not a measurement.
static HANDSHAKE: Global<bool> = Global::new(false);
static TIMED_OUT: Global<bool> = Global::new(false);
/// How long `ping` waits for `pong`'s first answer before ringing again.
const HANDSHAKE_RETRY: u64 = 2_000_000;
/// First INTID a doorbell can have: SPI 48 (channel 0).
const DOORBELL_INTID: u32 = 32 + 48;
/// Interrupts the handler did not expect.
static STRAY: Global<u32> = Global::new(0);

/// Reads the virtual counter with `isb` first.
#[inline(always)]
fn counter() -> u64 {
    timer::counter()
}

/// [`counter`], the same two instructions, and a marker for `stratum
/// bench`'s breakdown: the address of the `mrs` and the row's name go into
/// `.bench_marks`, a section that is not loaded (an address, then the name
/// NUL-terminated, padded to 8 bytes; one entry per copy of the code).
macro_rules! marked_counter {
    ($row:literal) => {{
        let value: u64;
        // SAFETY: reads the virtual counter; the directives only add data to
        // a section that is not loaded.
        unsafe {
            asm!(
                "isb",
                ".pushsection .bench_marks, \"\", %progbits",
                ".balign 8",
                ".quad 1f",
                concat!(".asciz \"", $row, "\""),
                ".popsection",
                "1:",
                "mrs {}, cntvct_el0",
                out(reg) value,
                options(nomem, nostack, preserves_flags)
            )
        }
        value
    }};
}

/// The IRQ handler of both CPUs: records the latency of the awaited interrupt.
fn handler(intid: u32) {
    let entry = exception::irq_entry_counter();
    let start = match intid {
        INTID_VTIMER => {
            let cval = timer::vtimer_cval();
            timer::set_vtimer_ctl(0);
            if HANDSHAKE.get() {
                TIMED_OUT.set(true);
                return;
            }
            cval
        }
        BENCH_SGI => IPI_SENT_AT.get(),
        // vCPU 1 answered: the wait in `time_ipi` ends.
        REPLY_SGI => return,
        // A channel doorbell: `pong` answers it; in `ping` it ends a sample
        // (or, the first time, says `pong` is ready).
        d if (DOORBELL_INTID..gic::SPECIAL_INTID).contains(&d) => {
            if IS_PONG.get() {
                ring(0);
                ANSWERED.set(ANSWERED.get() + 1);
                return;
            }
            IPI_SENT_AT.get()
        }
        _ => {
            STRAY.set(STRAY.get() + 1);
            return;
        }
    };
    let slot = SLOT.get();
    if slot < MAX_ITERATIONS {
        LATENCY.set(slot, entry.wrapping_sub(start));
    }
    DONE.set(true);
    if intid == BENCH_SGI
        && let Some(g) = gic::current()
    {
        send_sgi(&g, REPLY_SGI, PRIMARY_MPIDR.get(), PRIMARY_CPU_MASK.get());
    }
}

/// Statistics of one operation's samples, as printed.
struct Stats {
    min: u64,
    median: u64,
    p99: u64,
    max: u64,
}

/// Sorts `samples` and returns min, median (the lower one for even counts),
/// p99 (nearest rank) and max.
fn stats(samples: &mut [u64]) -> Stats {
    samples.sort_unstable();
    let n = samples.len();
    Stats {
        min: samples[0],
        median: samples[(n - 1) / 2],
        p99: samples[(99 * n).div_ceil(100) - 1],
        max: samples[n - 1],
    }
}

/// Prints the `BENCH` line of `op` from its samples.
fn report(op: &str, samples: &mut [u64]) {
    let s = stats(samples);
    print!(
        "BENCH op={op} n={} min={} median={} p99={} max={} hist=",
        samples.len(),
        s.min,
        s.median,
        s.p99,
        s.max
    );
    let mut i = 0;
    while i < samples.len() {
        let value = samples[i];
        let run = samples[i..].iter().take_while(|&&v| v == value).count();
        if i > 0 {
            print!(",");
        }
        print!("{value}:{run}");
        i += run;
    }
    println!();
}

/// Runs `body` `warmup` times, then `n` times keeping what it returns.
fn measure(op: &str, warmup: usize, n: usize, mut body: impl FnMut(usize) -> u64) {
    let mut samples = [0u64; MAX_ITERATIONS];
    for i in 0..warmup {
        body(i);
    }
    for (i, sample) in samples.iter_mut().take(n).enumerate() {
        *sample = body(i);
    }
    report(op, &mut samples[..n]);
}

/// Nothing between the two counter reads.
fn time_empty() -> u64 {
    let (t0, t1): (u64, u64);
    // SAFETY: reads the virtual counter twice; no other effect.
    unsafe {
        asm!("isb", "mrs {t0}, cntvct_el0", "isb", "mrs {t1}, cntvct_el0",
             t0 = out(reg) t0, t1 = out(reg) t1, options(nomem, nostack, preserves_flags));
    }
    t1.wrapping_sub(t0)
}

/// One `PSCI_VERSION` call by `HVC #0`.
#[unsafe(no_mangle)]
#[inline(never)]
fn time_hvc() -> u64 {
    let (t0, t1): (u64, u64);
    // SAFETY: an SMCCC call that changes no guest memory; x0..x17 may be
    // changed by the callee and are declared clobbered.
    unsafe {
        asm!("isb", "mrs {t0}, cntvct_el0", "hvc #0", "isb", "mrs {t1}, cntvct_el0",
             t0 = out(reg) t0, t1 = out(reg) t1,
             inout("x0") u64::from(smccc::PSCI_VERSION) => _,
             out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _,
             out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _,
             out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
             out("x16") _, out("x17") _, options(nostack));
    }
    t1.wrapping_sub(t0)
}

/// One 32-bit device register read at `addr` (`ldr w`).
#[inline(always)]
fn time_read32(addr: usize) -> u64 {
    let (t0, t1): (u64, u64);
    // SAFETY: `addr` is a side-effect-free device register (GICD_TYPER,
    // UARTFR), read with one `ldr` so the access carries a syndrome.
    unsafe {
        asm!("isb", "mrs {t0}, cntvct_el0", "ldr {v:w}, [{a}]", "isb", "mrs {t1}, cntvct_el0",
             t0 = out(reg) t0, t1 = out(reg) t1, a = in(reg) addr, v = out(reg) _,
             options(nostack, preserves_flags));
    }
    t1.wrapping_sub(t0)
}

/// `gicd_read`: [`time_read32`] of `GICD_TYPER` (the distributor at `gicd`).
#[unsafe(no_mangle)]
#[inline(never)]
fn time_gicd_read(gicd: usize) -> u64 {
    time_read32(gicd + GICD_TYPER)
}

/// `uart_read`: [`time_read32`] of the PL011's `UARTFR`.
#[unsafe(no_mangle)]
#[inline(never)]
fn time_uart_read() -> u64 {
    time_read32(console::PL011_BASE + console::UARTFR)
}

/// One `mrs` of `ID_AA64MMFR0_EL1`.
#[unsafe(no_mangle)]
#[inline(never)]
fn time_idreg() -> u64 {
    let (t0, t1): (u64, u64);
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        asm!("isb", "mrs {t0}, cntvct_el0", "mrs {v}, id_aa64mmfr0_el1", "isb",
             "mrs {t1}, cntvct_el0",
             t0 = out(reg) t0, t1 = out(reg) t1, v = out(reg) _,
             options(nomem, nostack, preserves_flags));
    }
    t1.wrapping_sub(t0)
}

fn id_aa64mmfr0() -> u64 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        asm!("mrs {}, id_aa64mmfr0_el1", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Arms the virtual timer [`TIMER_AHEAD`] ticks from now and waits for its
/// interrupt, spinning or in `WFI`; returns the latency the handler recorded
/// into `slot`.
#[inline(always)]
fn time_vtimer(slot: usize, in_wfi: bool) -> u64 {
    DONE.set(false);
    SLOT.set(slot);
    let deadline = counter() + TIMER_AHEAD;
    timer::set_vtimer_cval(deadline);
    timer::set_vtimer_ctl(timer::CTL_ENABLE);
    if in_wfi {
        wfi_until_done(deadline + WAIT_LIMIT);
    } else {
        irq::spin_until(deadline + WAIT_LIMIT, || DONE.get());
    }
    timer::set_vtimer_ctl(0);
    if !DONE.get() {
        stratum_guests::fail(format_args!("the virtual timer interrupt never came"))
    }
    LATENCY.get(slot)
}

/// `vtimer_spin`: [`time_vtimer`], spinning.
#[unsafe(no_mangle)]
#[inline(never)]
fn time_vtimer_spin(slot: usize) -> u64 {
    time_vtimer(slot, false)
}

/// `vtimer_wfi`: [`time_vtimer`], in `WFI`.
#[unsafe(no_mangle)]
#[inline(never)]
fn time_vtimer_wfi(slot: usize) -> u64 {
    time_vtimer(slot, true)
}

/// Sends SGI `sgi` to the CPU with affinity `mpidr` (GICv3) or CPU mask
/// `mask` (GICv2).
fn send_sgi(g: &gic::Gic, sgi: u32, mpidr: u64, mask: u8) {
    match g.version {
        GicVersion::V3 => {
            let aff0 = mpidr & 0xff;
            let value = (((mpidr >> 32) & 0xff) << 48)
                | ((aff0 >> 4) << 44)
                | (((mpidr >> 16) & 0xff) << 32)
                | (u64::from(sgi) << 24)
                | (((mpidr >> 8) & 0xff) << 16)
                | (1 << (aff0 & 0xf));
            // SAFETY: ICC_SGI1R_EL1 only generates the SGI.
            unsafe {
                asm!("msr s3_0_c12_c11_5, {}", "isb", in(reg) value,
                     options(nostack, preserves_flags))
            };
        }
        GicVersion::V2 => {
            g.gicd_write(GICD_SGIR, (u32::from(mask) << 16) | (1 << 15) | sgi);
        }
    }
}

/// Waits in `WFI` (IRQs masked while checking, taken right after each
/// wake-up) until the handler sets [`DONE`] or the counter passes `limit`.
fn wfi_until_done(limit: u64) -> bool {
    wfi_until(limit, || DONE.get())
}

/// Waits in `WFI` until `done()` or the counter passes `limit`.
fn wfi_until(limit: u64, done: impl Fn() -> bool) -> bool {
    loop {
        irq::disable();
        if done() {
            return true;
        }
        if counter() > limit {
            return false;
        }
        wfi_and_take_interrupts();
    }
}

/// Waits in `WFI` (IRQs masked), then takes the interrupts that woke it with
/// IRQs unmasked for one instruction, and masks them again.
fn wfi_and_take_interrupts() {
    // SAFETY: waits for an interrupt, then takes it with IRQs unmasked for
    // one instruction; the handler preserves all state.
    unsafe {
        asm!(
            "dsb sy",
            "wfi",
            "msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            options(nostack, preserves_flags)
        )
    };
}

/// Sends [`BENCH_SGI`] to vCPU 1 and waits in `WFI` for its reply
/// ([`REPLY_SGI`]); returns the latency vCPU 1 recorded. Waiting in `WFI`
/// (rather than spinning) matters: QEMU runs the CPUs of an `-icount`
/// machine in turns on one thread, and only switches when the running one
/// halts.
fn time_ipi(g: &gic::Gic, slot: usize) -> u64 {
    DONE.set(false);
    SLOT.set(slot);
    let t0 = marked_counter!("ipi");
    IPI_SENT_AT.set(t0);
    send_sgi(
        g,
        BENCH_SGI,
        SECONDARY_MPIDR.get(),
        SECONDARY_CPU_MASK.get(),
    );
    if !wfi_until_done(t0 + WAIT_LIMIT) {
        stratum_guests::fail(format_args!("vCPU 1 never took the SGI"))
    }
    LATENCY.get(slot)
}

/// Stratum's `DOORBELL` on channel `id`: the SMCCC status.
fn ring(id: u64) -> i64 {
    smccc::status(smccc::hvc([u64::from(smccc::stratum::DOORBELL), id, 0, 0, 0, 0, 0, 0])[0])
}

/// Enables every SPI from [`DOORBELL_INTID`] up, edge-triggered: whichever
/// SPI the channel's doorbell is, it arrives.
fn enable_doorbells(g: &gic::Gic) {
    for intid in DOORBELL_INTID..g.lines() {
        g.set_edge(intid, true);
        g.enable(intid);
    }
}

/// `pong`: answer `total` doorbells (in the IRQ handler), then power off
/// without a word (so nothing interleaves with `ping`'s report).
fn pong(g: &gic::Gic, total: usize) -> ! {
    IS_PONG.set(true);
    enable_doorbells(g);
    while ANSWERED.get() < total {
        irq::disable();
        if ANSWERED.get() >= total {
            break;
        }
        wfi_and_take_interrupts();
    }
    smccc::system_off()
}

/// `ping`: rings until `pong` answers once (see the module docs).
fn handshake(g: &gic::Gic) {
    g.set_priority(INTID_VTIMER, 0x80);
    g.enable(INTID_VTIMER);
    HANDSHAKE.set(true);
    let mut answered = false;
    for _ in 0..50 {
        DONE.set(false);
        TIMED_OUT.set(false);
        SLOT.set(0);
        let status = ring(0);
        if status != smccc::SUCCESS {
            stratum_guests::fail(format_args!("DOORBELL returned {status}"))
        }
        timer::set_vtimer_cval(counter() + HANDSHAKE_RETRY);
        timer::set_vtimer_ctl(timer::CTL_ENABLE);
        wfi_until(counter() + WAIT_LIMIT, || DONE.get() || TIMED_OUT.get());
        timer::set_vtimer_ctl(0);
        if DONE.get() {
            answered = true;
            break;
        }
    }
    HANDSHAKE.set(false);
    g.disable(INTID_VTIMER);
    if !answered {
        stratum_guests::fail("pong never answered the doorbell")
    }
}

/// `ping`: one round trip through `pong`; returns its length.
fn time_vm_switch(slot: usize) -> u64 {
    DONE.set(false);
    SLOT.set(slot);
    let t0 = marked_counter!("vm_switch");
    IPI_SENT_AT.set(t0);
    let status = ring(0);
    if status != smccc::SUCCESS {
        stratum_guests::fail(format_args!("DOORBELL returned {status}"))
    }
    if !wfi_until_done(t0 + WAIT_LIMIT) {
        stratum_guests::fail("pong never answered the doorbell")
    }
    LATENCY.get(slot)
}

/// vCPU 1: bring up its GIC CPU interface, enable the SGI, then wait in
/// `WFI` forever, taking interrupts.
fn bench_secondary_main(_index: usize) -> ! {
    let Some(mut g) = gic::current() else {
        stratum_guests::fail("vCPU 1 started before the GIC was initialized")
    };
    if let Err(e) = g.init() {
        stratum_guests::fail(format_args!("vCPU 1 GIC init: {e}"))
    }
    g.set_priority(BENCH_SGI, 0x80);
    g.enable(BENCH_SGI);
    SECONDARY_MPIDR.set(sysreg::mpidr_el1());
    if !g.is_v3() {
        SECONDARY_CPU_MASK.set(g.cpu_mask());
    }
    SECONDARY_READY.set(true);
    send_sgi(&g, REPLY_SGI, PRIMARY_MPIDR.get(), PRIMARY_CPU_MASK.get());
    loop {
        irq::disable();
        wfi_and_take_interrupts();
    }
}

/// Starts vCPU 1 and waits until its GIC is ready.
fn start_secondary() {
    // The other CPU's MPIDR: this one's with Aff0 = 1.
    let target = (sysreg::mpidr_affinity() & !0xff) | 1;
    let status = stratum_guests::smp::start_cpu(1, target, bench_secondary_main);
    if status != smccc::SUCCESS {
        stratum_guests::fail(format_args!("CPU_ON of vCPU 1 returned {status}"))
    }
    if !wfi_until(counter() + WAIT_LIMIT, || SECONDARY_READY.get()) {
        stratum_guests::fail("vCPU 1 did not come up")
    }
}

/// `bench.role=ping|pong` from the command line, if any.
fn role_arg(bootargs: Option<&str>) -> Option<Role> {
    match bootargs?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bench.role="))?
    {
        "ping" => Some(Role::Ping),
        "pong" => Some(Role::Pong),
        _ => None,
    }
}

/// `bench.iterations=N` from the command line, if any.
fn iterations_arg(bootargs: Option<&str>) -> Option<usize> {
    bootargs?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bench.iterations="))?
        .parse()
        .ok()
}

fn main(dtb: usize) -> ! {
    let platform = gic::bring_up(dtb);
    let g = platform.gic;
    let bootargs = stratum_guests::fdt::locate(dtb)
        .ok()
        .and_then(|(_, s)| s.bootargs);
    let n = iterations_arg(bootargs)
        .unwrap_or(DEFAULT_ITERATIONS)
        .clamp(1, MAX_ITERATIONS);
    let warmup = (n / 10).max(1);
    let role = role_arg(bootargs);
    if role == Some(Role::Pong) {
        irq::set_handler(Some(handler));
        // The handshake's answer, then one per ping.
        pong(&g, 1 + warmup + n)
    }
    if role == Some(Role::Ping) {
        irq::set_handler(Some(handler));
        enable_doorbells(&g);
        handshake(&g);
    }
    // Stratum answers its INFO call; bare QEMU makes the HVC undefined.
    let mut info = None;
    let abort = exception::expect_abort(|| info = smccc::stratum_info());
    let hypervisor = match (abort, info) {
        (None, Some(_)) => "stratum",
        _ => "none",
    };
    println!(
        "BENCH-ENV hypervisor={hypervisor} gic={} cpus={} iterations={n} warmup={warmup} \
         freq={} mmfr0={:#x}",
        g.version_number(),
        platform.cpus,
        timer::frequency(),
        id_aa64mmfr0(),
    );
    irq::set_handler(Some(handler));
    if role == Some(Role::Ping) {
        measure("vm_switch", warmup, n, time_vm_switch);
    } else if platform.cpus >= 2 {
        PRIMARY_MPIDR.set(sysreg::mpidr_el1());
        if !g.is_v3() {
            PRIMARY_CPU_MASK.set(g.cpu_mask());
        }
        g.set_priority(REPLY_SGI, 0x80);
        g.enable(REPLY_SGI);
        start_secondary();
        measure("ipi", warmup, n, |i| time_ipi(&g, i));
    } else {
        measure("empty", warmup, n, |_| time_empty());
        measure("hvc", warmup, n, |_| time_hvc());
        measure("gicd_read", warmup, n, |_| time_gicd_read(g.gicd));
        measure("uart_read", warmup, n, |_| time_uart_read());
        measure("idreg_read", warmup, n, |_| time_idreg());
        g.set_priority(INTID_VTIMER, 0x80);
        g.enable(INTID_VTIMER);
        measure("vtimer_spin", warmup, n, time_vtimer_spin);
        measure("vtimer_wfi", warmup, n, time_vtimer_wfi);
        g.disable(INTID_VTIMER);
    }
    irq::set_handler(None);
    if STRAY.get() != 0 {
        stratum_guests::fail(format_args!("{} unexpected interrupts", STRAY.get()))
    }
    println!("BENCH-DONE");
    stratum_guests::pass()
}
