//! Several physical CPUs: bring-up of the secondaries and each CPU's index.
//! What a CPU runs once it is up is `sched`'s business.

use core::sync::atomic::{AtomicUsize, Ordering};

use stratum_abi::smccc;
use stratum_arch::firmware::{self, Conduit};

use crate::head::{self, MAX_CPUS};
use crate::log;

/// Bit `i`: CPU `i` finished its bring-up.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// This CPU's index (0 = the boot CPU), from the stack it runs on: CPU `n`
/// always runs on `STACKS[n]` (`head.rs`), so the index is the stack
/// pointer's offset into them divided by their size — a handful of
/// instructions on every exit, where matching `MPIDR_EL1` against the
/// recorded affinities would loop.
pub fn current_cpu() -> usize {
    let sp: usize;
    // SAFETY: reading SP has no side effects.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    let base = head::stack_top(0) - head::STACK_SIZE;
    let cpu = sp.wrapping_sub(base) / head::STACK_SIZE;
    assert!(
        cpu < MAX_CPUS,
        "EL2 running off its per-CPU stacks (sp {sp:#x})"
    );
    cpu
}

/// Starts CPUs 1..`count` (their MPIDRs in `mpidrs`) through firmware PSCI
/// `CPU_ON` and waits for each to come online. Returns how many CPUs run.
pub fn start_secondaries(conduit: Conduit, mpidrs: &[u64], count: usize) -> usize {
    ONLINE.fetch_or(1, Ordering::AcqRel);
    let entry = head::secondary_entry as *const () as u64;
    let mut online = 1;
    for (i, &mpidr) in mpidrs.iter().enumerate().take(count.min(MAX_CPUS)).skip(1) {
        let ret = firmware::call(
            conduit,
            [u64::from(smccc::PSCI_CPU_ON_64), mpidr, entry, i as u64],
        )[0] as i64;
        if ret != smccc::SUCCESS {
            log!("CPU {i} (MPIDR {mpidr:#x}) did not start: PSCI CPU_ON returned {ret}");
            break;
        }
        // Bounded wait: a CPU that never arrives is reported, not waited for.
        let deadline = stratum_arch::timer::counter() + stratum_arch::timer::frequency();
        while ONLINE.load(Ordering::Acquire) & (1 << i) == 0 {
            if stratum_arch::timer::counter() > deadline {
                log!("CPU {i} (MPIDR {mpidr:#x}) started but never came online");
                return online;
            }
            core::hint::spin_loop();
        }
        online += 1;
    }
    online
}

/// Marks this CPU online (called once by each secondary after bring-up).
pub fn mark_online(i: usize) {
    ONLINE.fetch_or(1 << i, Ordering::AcqRel);
}
