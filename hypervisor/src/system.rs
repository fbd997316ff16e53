//! Global hypervisor state: access to the VMs, each behind its own lock
//! (the table itself is [`crate::vm::VMS`], beside the vCPU tags that point
//! into it), what the firmware offers, the machine-wide settings, and how
//! to stop the machine.
//! What happens to a VM over its life is `stratum_core::lifecycle`'s
//! decision (held in each [`Vm`]) and `lifecycle.rs`'s and `sched.rs`'s
//! doing.
//!
//! # Lock order
//!
//! Every lock in the hypervisor, in the order they may be taken: code that
//! holds one may take only those below it.
//!
//! 0. A network's switch or the vsock router (`pv`): taken with no VM lock
//!    held, never two of them; inside, one VM's lock at a time.
//! 1. A VM's lock ([`with_vm`], [`try_with_vm`], [`with_slot`]). At most one at a time: no
//!    code holds two VM locks. Code that concerns several VMs (a doorbell,
//!    the stop check, a scheduler's pick over a shared CPU's queue) takes
//!    them one after the other. A vCPU's lifecycle events (claim, leave,
//!    `CPU_ON`, reset, stop) happen under its VM's lock, and so does
//!    everything that reads or writes the vCPU's saved context or frame.
//! 2. `vm::DTB_BUF`, while the VM whose lock is held is loaded.
//! 3. This CPU's interrupt state (`irq::IRQS`), a CPU's kick target
//!    (`irq::KICK_TARGETS`), the passthrough routes (`irq::ROUTES`): each
//!    taken and released before any other of the three.
//! 4. The console (`console::CONSOLE`); the telemetry block takes no lock.
//!
//! Outside the order: a CPU's scheduling state (`sched::CPUS`) is only
//! touched by its own CPU and never held together with any other lock; the
//! per-CPU current and loaded vCPUs (`percpu`) are atomics. [`mem_info`]'s
//! lock and the boot-time records are leaves. No lock is held while a CPU
//! idles in `wfi`, spins, or runs a guest.

use stratum_abi::bundle::StopPolicy;
use stratum_arch::firmware::{self, Conduit};
use stratum_arch::semihosting;
use stratum_core::inject::PstateFeatures;
use stratum_core::lifecycle::VmState;
use stratum_core::psci::FirmwareFeatures;

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::sync::{Once, SpinLock};
use crate::vm::{VMS, Vm, VmSlot};

/// Machine-wide settings fixed at boot.
#[derive(Clone, Copy)]
pub struct Settings {
    /// Firmware conduit, if the host DT names PSCI.
    pub conduit: Option<Conduit>,
    /// Whether QEMU can be stopped through semihosting.
    pub semihosting: bool,
    /// What the firmware answered about the Spectre workarounds.
    pub firmware: FirmwareFeatures,
    /// Base of the physical console UART (for the panic path).
    pub uart: Option<(stratum_core::platform::UartKind, usize)>,
    /// PSTATE features of this CPU, for architected exception injection.
    pub pstate_features: PstateFeatures,
    /// The CPUs' breakpoints, watchpoints and PMU counters.
    pub debug_limits: stratum_core::debugpmu::Limits,
}

static SETTINGS: Once<Settings> = Once::new();
/// Most VMs one system runs (the VM module's limit).
pub use crate::vm::MAX_VMS;
const _: () = assert!(MAX_VMS >= stratum_abi::limits::RUNNING_VMS);

/// Whether some vCPU of VM `i` time-shares its CPU (fixed at boot; read on
/// the lock-free early exit path).
static TIME_SHARED: [AtomicBool; MAX_VMS] = [const { AtomicBool::new(false) }; MAX_VMS];

/// Records whether VM `id` time-shares CPUs (boot CPU, before guests run).
pub fn set_time_shared(id: usize, shared: bool) {
    TIME_SHARED[id].store(shared, Ordering::Relaxed);
}

/// Whether VM `id` time-shares CPUs.
pub fn time_shared(id: usize) -> bool {
    TIME_SHARED
        .get(id)
        .is_some_and(|t| t.load(Ordering::Relaxed))
}

/// How many VMs were installed.
static VM_COUNT: AtomicUsize = AtomicUsize::new(0);
/// When the machine stops: after the first VM stopped (else after all).
static STOP_ON_FIRST: AtomicBool = AtomicBool::new(false);
/// What `MEM_INFO` reports: table bytes in use, RAM bytes handed out, table
/// bytes free.
static MEM_INFO: SpinLock<[u64; 3]> = SpinLock::new([0; 3]);

/// Records the hypervisor's memory use (after VMs are created).
pub fn set_mem_info(info: [u64; 3]) {
    *MEM_INFO.lock() = info;
}

/// The hypervisor's memory use, for Stratum `MEM_INFO`.
pub fn mem_info() -> [u64; 3] {
    *MEM_INFO.lock()
}

/// Records the boot-time settings (once, on the boot CPU).
pub fn set_settings(s: Settings) {
    SETTINGS.set(s);
}

/// The boot-time settings, if boot got that far. No lock and no copy: the
/// exit path and the panic path both read them.
pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get()
}

/// Installs VM `id` as `create` builds it (boot CPU, before any guest
/// runs). The VM goes straight into its slot: it is large, and every copy
/// of it on the way would be one more on the boot stack.
pub fn install_vm<E>(id: usize, create: impl FnOnce() -> Result<Vm, E>) -> Result<(), E> {
    let mut slot = VMS[id].lock();
    *slot = Some(create()?);
    let vm = slot.as_ref().expect("just installed");
    crate::telemetry::BLOCK.register_vm(id, vm.image.name, vm.image.vcpus as usize);
    VM_COUNT.fetch_max(id + 1, Ordering::AcqRel);
    Ok(())
}

/// Sets when the machine stops (boot CPU, before guests run).
pub fn set_stop_policy(policy: StopPolicy) {
    STOP_ON_FIRST.store(policy == StopPolicy::Any, Ordering::Relaxed);
}

/// When the machine stops.
pub fn stop_policy() -> StopPolicy {
    if STOP_ON_FIRST.load(Ordering::Relaxed) {
        StopPolicy::Any
    } else {
        StopPolicy::All
    }
}

/// Every installed VM's state (taking their locks one at a time).
pub fn vm_states() -> impl Iterator<Item = VmState> {
    (0..vm_count()).filter_map(|id| try_with_vm(id, |vm| vm.life.vm_state()))
}

/// How many VMs the system has.
pub fn vm_count() -> usize {
    VM_COUNT.load(Ordering::Acquire)
}

/// Runs `f` on the VM in `slot` (an exit route's, from its vCPU's tag).
#[inline(always)]
pub fn with_slot<R>(slot: &VmSlot, f: impl FnOnce(&mut Vm) -> R) -> R {
    let mut guard = slot.lock();
    f(guard.as_mut().expect("a VM slot the boot CPU installed"))
}

/// Runs `f` on VM `id`.
pub fn with_vm<R>(id: usize, f: impl FnOnce(&mut Vm) -> R) -> R {
    let mut guard = VMS[id].lock();
    f(guard.as_mut().expect("a VM index the boot CPU installed"))
}

/// Runs `f` on VM `id` if it exists.
pub fn try_with_vm<R>(id: usize, f: impl FnOnce(&mut Vm) -> R) -> Option<R> {
    VMS.get(id)?.lock().as_mut().map(f)
}

/// The machine is being stopped (by [`stop_machine`]).
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Stops the machine once: the first CPU to call this says `why` and shuts
/// down with `status`; a CPU that comes second (two VMs stopping at the
/// same moment) parks silently instead of cutting the first one's line or
/// exiting with another status.
pub fn stop_machine(status: u32, why: core::fmt::Arguments<'_>) -> ! {
    if STOPPING.swap(true, Ordering::AcqRel) {
        loop {
            stratum_arch::barrier::wfe();
        }
    }
    crate::log!("{why}");
    shutdown(status)
}

/// Stops the machine with `status` (semihosting when available, else PSCI
/// `SYSTEM_OFF`), or parks this CPU if neither works.
pub fn shutdown(status: u32) -> ! {
    crate::telemetry::before_shutdown();
    if let Some(s) = settings() {
        if s.semihosting {
            // SAFETY: the boot bundle said semihosting is enabled.
            unsafe { semihosting::exit(status) };
        }
        if let Some(conduit) = s.conduit {
            firmware::call(
                conduit,
                [u64::from(stratum_abi::smccc::PSCI_SYSTEM_OFF), 0, 0, 0],
            );
        }
    }
    loop {
        stratum_arch::barrier::wfe();
    }
}
