//! Global hypervisor state: the VMs, what the firmware offers, and how to
//! stop the machine.
//!
//! This version runs every VM on the boot CPU, one after another is not
//! needed yet: one VM, one vCPU. The state sits behind a spinlock so that the
//! later SMP work only has to refine the locking, not the structure.

use stratum_abi::exit;
use stratum_arch::firmware::{self, Conduit};
use stratum_arch::semihosting;
use stratum_core::inject::PstateFeatures;
use stratum_core::psci::FirmwareFeatures;
use stratum_core::vmexit::StopReason;

use crate::log;
use crate::sync::SpinLock;
use crate::vm::Vm;

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
    pub uart_base: usize,
    /// PSTATE features of this CPU, for architected exception injection.
    pub pstate_features: PstateFeatures,
}

static SETTINGS: SpinLock<Option<Settings>> = SpinLock::new(None);
static VM: SpinLock<Option<Vm>> = SpinLock::new(None);
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

/// Records the boot-time settings.
pub fn set_settings(s: Settings) {
    *SETTINGS.lock() = Some(s);
}

/// The boot-time settings, if boot got that far.
pub fn settings() -> Option<Settings> {
    *SETTINGS.lock()
}

/// The boot-time settings without waiting for the lock (panic path: the
/// panicking context may hold it).
pub fn settings_for_panic() -> Option<Settings> {
    SETTINGS.try_lock().and_then(|s| *s)
}

/// Installs the VM that runs on this CPU.
pub fn install_vm(vm: Vm) {
    *VM.lock() = Some(vm);
}

/// Runs `f` on the VM, if one is installed yet.
pub fn try_with_vm<R>(f: impl FnOnce(&mut Vm) -> R) -> Option<R> {
    VM.lock().as_mut().map(f)
}

/// Runs `f` on the current VM.
pub fn with_current_vm<R>(f: impl FnOnce(&mut Vm) -> R) -> R {
    let mut guard = VM.lock();
    let vm = guard.as_mut().expect("a guest exit with no VM installed");
    f(vm)
}

/// Restarts the VM from its pristine image, on behalf of the vCPU running
/// on physical CPU `cpu`: every other running vCPU is told to park (and
/// kicked out of the guest), and only once all have parked is guest memory
/// rewritten; then this CPU waits for its own vCPU like the others (vCPU 0
/// gets the boot request). Never returns.
pub fn reset_vm(cpu: usize) -> ! {
    with_current_vm(|vm| {
        log!(
            "vm{} '{}': reset requested: reloading its image",
            vm.id,
            vm.image.name
        );
        vm.resetting = true;
        vm.running[cpu] = false;
        for other in 0..vm.image.vcpus as usize {
            if other != cpu && vm.running[other] {
                crate::irq::kick(other);
            }
        }
    });
    while with_current_vm(|vm| vm.running.iter().any(|&r| r)) {
        core::hint::spin_loop();
    }
    with_current_vm(|vm| {
        vm.resetting = false;
        if let Err(e) = vm.load() {
            panic!("VM reload failed after a successful first load: {e}");
        }
    });
    crate::smp::run_vcpu_when_started(cpu)
}

/// Stops running this CPU's vCPU (powered off by `CPU_OFF`, or parked for
/// a reset) and waits for it to be started again. Never returns.
pub fn park_vcpu(cpu: usize) -> ! {
    with_current_vm(|vm| {
        vm.running[cpu] = false;
        // Like a powered-down CPU, the vCPU loses its interrupts in flight
        // (its list registers were folded when this exit began).
        vm.vgic.reset_vcpu(cpu);
    });
    crate::smp::run_vcpu_when_started(cpu)
}

/// Stops the current VM; with no VM left, stops the machine.
pub fn stop_current(reason: StopReason) -> ! {
    let status = with_current_vm(|vm| {
        let c = vm.counters;
        log!(
            "vm{} '{}' stopped ({reason:?}) after {} boot(s); exits: {} hvc, {} smc, {} mmio ({} decoded), {} sysreg, {} wfx; {} aborts and {} undefs injected",
            vm.id,
            vm.image.name,
            vm.boot_count,
            c.hvc,
            c.smc,
            c.mmio,
            c.mmio_decoded,
            c.sysreg,
            c.wfx,
            c.injected_aborts,
            c.injected_undefs
        );
        match reason {
            StopReason::PowerOff | StopReason::AllCpusOff => exit::ALL_VMS_OFF,
            StopReason::Crashed => exit::VM_CRASHED,
        }
    });
    log!("no VM left running: stopping");
    shutdown(status)
}

/// Stops the machine with `status` (semihosting when available, else PSCI
/// `SYSTEM_OFF`), or parks this CPU if neither works.
pub fn shutdown(status: u32) -> ! {
    if let Some(s) = settings_for_panic() {
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
