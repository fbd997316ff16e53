//! Several physical CPUs: bring-up of the secondaries and each CPU's index.
//! What a CPU runs once it is up is `sched`'s business.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use stratum_abi::smccc;
use stratum_arch::firmware::{self, Conduit};
use stratum_arch::sysreg;

use crate::head::{self, MAX_CPUS};
use crate::log;

/// `MPIDR_EL1` affinity fields (Aff3, Aff2, Aff1, Aff0).
const AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Each CPU index's MPIDR affinity (`u64::MAX`: no such CPU).
static MPIDRS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
/// Bit `i`: CPU `i` finished its bring-up.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Records that CPU index `i` has `mpidr`.
pub fn record_cpu(i: usize, mpidr: u64) {
    MPIDRS[i].store(mpidr & AFFINITY_MASK, Ordering::Release);
}

/// This CPU's index (0 = the boot CPU).
pub fn current_cpu() -> usize {
    let me = sysreg::mpidr_el1() & AFFINITY_MASK;
    MPIDRS
        .iter()
        .position(|m| m.load(Ordering::Acquire) == me)
        .expect("every running CPU recorded its MPIDR before running Rust code that asks")
}

/// Starts CPUs 1..`count` (their MPIDRs in `mpidrs`) through firmware PSCI
/// `CPU_ON` and waits for each to come online. Returns how many CPUs run.
pub fn start_secondaries(conduit: Conduit, mpidrs: &[u64], count: usize) -> usize {
    ONLINE.fetch_or(1, Ordering::AcqRel);
    let entry = head::secondary_entry as *const () as u64;
    let mut online = 1;
    for (i, &mpidr) in mpidrs.iter().enumerate().take(count.min(MAX_CPUS)).skip(1) {
        record_cpu(i, mpidr);
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
