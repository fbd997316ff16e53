//! `spinner`: every vCPU makes progress. Starts every other vCPU of its DT
//! with PSCI `CPU_ON` (each checks Stratum `INFO` names it by its index);
//! each vCPU then increments its own counter in RAM without ever waiting.
//! vCPU 0 reports every counter each period, `spinner report R: vcpu0=C0
//! vcpu1=C1 …`, and passes once every counter advanced by at least `min` in
//! each of `reports` consecutive periods (a vCPU that starves, even for one
//! period, resets the run); it fails after `4 × reports + 4` periods.
//! Command line: `reports=N` (default 5), `period_ms=P` (default 200),
//! `min=M` (default 1000). Made for several vCPUs time-shared on fewer
//! physical CPUs: only a fair scheduler lets every counter move every period.
//! The other vCPUs also keep a value of their own in FP/SIMD register
//! `d31`, changed and checked at every increment, and fail if they find
//! another vCPU's or a stale one: FP state must survive every switch.
#![no_std]
#![no_main]

use stratum_guests::global::GlobalArray;
use stratum_guests::smp::{self, MAX_CPUS};
use stratum_guests::{Checks, fail, fdt, print, println, smccc, timer};

stratum_guests::entry!("spinner", main);

/// Per vCPU: its counter (written only by that vCPU).
static COUNTS: GlobalArray<u64, MAX_CPUS> = GlobalArray::new(0);
/// Per vCPU: 1 + the vCPU id Stratum `INFO` gave it, once started.
static STARTED: GlobalArray<u64, MAX_CPUS> = GlobalArray::new(0);

/// How long vCPU 0 waits for the others to come up.
const START_TIMEOUT_US: u64 = 10_000_000;

fn secondary(index: usize) -> ! {
    let id = smccc::stratum_info().map_or(u64::MAX, |i| i.vcpu_id.wrapping_add(1));
    STARTED.set(index, id);
    let tag = (index as u64) << 56 | 0xF00D_0000_0000;
    let mut last = None;
    loop {
        let n = COUNTS.get(index).wrapping_add(1);
        let mine = tag | (n & 0xFFFF_FFFF);
        let found = swap_d31(mine);
        if let Some(expected) = last
            && found != expected
        {
            fail(format_args!(
                "vcpu{index}: d31 held {found:#x}, not its own {expected:#x}: FP state leaked or was lost"
            ));
        }
        last = Some(mine);
        COUNTS.set(index, n);
    }
}

/// Writes `value` into `d31` and returns what it held.
fn swap_d31(value: u64) -> u64 {
    let old: u64;
    // SAFETY: reads and writes FP/SIMD register d31 only, which nothing
    // else in this program uses (the compiler is told it is clobbered).
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            "fmov {old}, d31",
            "fmov d31, {new}",
            old = out(reg) old,
            new = in(reg) value,
            out("v31") _,
            options(nostack, nomem, preserves_flags),
        );
    }
    old
}

fn main(dtb: usize) -> ! {
    let (_, dt) = fdt::locate_fdt(dtb).unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let summary = dt
        .summary()
        .unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    let cmdline = summary.bootargs.unwrap_or("");
    let number = |key, default| stratum_guests::arg_number(cmdline, key, default);
    let (reports, period_ms, min) = (
        number("reports", 5),
        number("period_ms", 200),
        number("min", 1000),
    );
    let mut ids = [0u64; MAX_CPUS];
    let cpus = dt
        .cpu_ids(&mut ids)
        .unwrap_or_else(|e| fail(format_args!("device tree: {e}")));
    if !(2..=MAX_CPUS).contains(&cpus) {
        fail(format_args!(
            "spinner needs 2..={MAX_CPUS} vCPUs, the DT has {cpus}"
        ));
    }
    println!(
        "spinner: {cpus} vCPUs; {reports} reports in a row, every {period_ms} ms, each counter +{min}"
    );
    let mut c = Checks::new();
    for (i, &mpidr) in ids.iter().enumerate().take(cpus).skip(1) {
        let status = smp::start_cpu(i, mpidr, secondary);
        c.check_status(
            format_args!("CPU_ON vCPU {i} (MPIDR {mpidr:#x})"),
            status,
            0,
        );
    }
    let deadline = timer::deadline_us(START_TIMEOUT_US);
    while (1..cpus).any(|i| STARTED.get(i) == 0) && timer::counter() < deadline {
        COUNTS.set(0, COUNTS.get(0).wrapping_add(1));
    }
    for i in 1..cpus {
        c.check_count(
            format_args!("vCPU {i} started, INFO vCPU id + 1"),
            STARTED.get(i),
            i as u64 + 1,
        );
    }
    if c.failed() != 0 {
        c.finish()
    }

    let period = timer::ticks_from_us(period_ms.saturating_mul(1000));
    let mut last = [0u64; MAX_CPUS];
    for (i, slot) in last.iter_mut().enumerate().take(cpus) {
        *slot = COUNTS.get(i);
    }
    let (mut good, mut report) = (0u64, 0u64);
    let mut next = timer::counter().saturating_add(period);
    loop {
        COUNTS.set(0, COUNTS.get(0).wrapping_add(1));
        let now = timer::counter();
        if now < next {
            continue;
        }
        // From now, not from the missed deadline: while vCPU 0 waits for a
        // time slice, periods must not shrink to nothing.
        next = now.saturating_add(period);
        report += 1;
        let mut slowest = u64::MAX;
        print!("spinner report {report}:");
        for (i, prev) in last.iter_mut().enumerate().take(cpus) {
            let now = COUNTS.get(i);
            print!(" vcpu{i}={now}");
            slowest = slowest.min(now.wrapping_sub(*prev));
            *prev = now;
        }
        println!(" (slowest +{slowest})");
        good = if slowest >= min { good + 1 } else { 0 };
        if good >= reports {
            println!(
                "spinner: every vCPU advanced by at least {min} in {reports} reports in a row"
            );
            c.finish()
        }
        if report >= 4 * reports + 4 {
            fail(format_args!(
                "after {report} reports, no {reports} in a row with every vCPU +{min}"
            ))
        }
    }
}
