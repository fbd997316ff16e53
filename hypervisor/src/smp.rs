//! Several physical CPUs: bring-up of the secondaries and each CPU's index.
//! A secondary starts in `stratum_arch::head`'s `secondary_entry` (its own
//! stack, the shared EL2 table and vectors), which calls `boot_secondary`.
//! What a CPU runs once it is up is `sched`'s business.

use core::sync::atomic::{AtomicUsize, Ordering};

use stratum_abi::smccc;
use stratum_arch::firmware::{self, Conduit};

use crate::log;
use stratum_arch::head::{self, MAX_CPUS};

/// Bit `i`: CPU `i` finished its bring-up.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// This CPU's index (0 = the boot CPU), from the stack it runs on
/// ([`stratum_arch::head::current_cpu`]: a handful of instructions on every
/// exit).
pub fn current_cpu() -> usize {
    stratum_arch::head::current_cpu()
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
