//! Global hypervisor state: the VMs, what the firmware offers, the VM
//! lifecycle (reset, stop) and how to stop the machine.
//!
//! Each VM sits behind its own lock; the exits of different VMs never wait
//! for each other. Code never holds two VM locks at once.

use stratum_abi::exit;
use stratum_arch::firmware::{self, Conduit};
use stratum_arch::semihosting;
use stratum_core::inject::PstateFeatures;
use stratum_core::psci::FirmwareFeatures;
use stratum_core::vmexit::StopReason;

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use stratum_core::sched::VcpuRef;

use crate::console::VmState;
use crate::sync::{Once, SpinLock};
use crate::vm::{RunState, Vm};
use crate::{log, sched};

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

static SETTINGS: Once<Settings> = Once::new();
/// Most VMs one system runs.
pub const MAX_VMS: usize = 8;
const _: () = assert!(MAX_VMS >= stratum_abi::limits::RUNNING_VMS);

static VMS: [SpinLock<Option<Vm>>; MAX_VMS] = [const { SpinLock::new(None) }; MAX_VMS];
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
/// When the machine stops: after every VM stopped, or after the first.
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

/// Installs VM `vm.id` (boot CPU, before any guest runs).
pub fn install_vm(vm: Vm) {
    let id = vm.id;
    crate::telemetry::register_vm(id, vm.image.name, vm.image.vcpus as usize);
    *VMS[id].lock() = Some(vm);
    VM_COUNT.fetch_max(id + 1, Ordering::AcqRel);
}

/// Makes the machine stop when the first VM stops (else: when all have).
pub fn set_stop_on_first(on: bool) {
    STOP_ON_FIRST.store(on, Ordering::Relaxed);
}

/// How many VMs the system has.
pub fn vm_count() -> usize {
    VM_COUNT.load(Ordering::Acquire)
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

/// Kicks the CPUs of `vm`'s vCPUs that are some CPU's current vCPU (other
/// than `cpu`), so that they see a reset or stop.
fn kick_on_cpu(vm: &Vm, cpu: usize) {
    for v in 0..vm.vcpu_count() {
        if vm.on_cpu[v] && vm.pcpu[v] != cpu {
            crate::irq::kick(vm.pcpu[v]);
        }
    }
}

/// Restarts `me`'s VM from its pristine image, on behalf of `me` (running
/// on `cpu`): every other vCPU of the VM is told to park (and kicked out of
/// the guest), and only once none runs is guest memory rewritten. Then this
/// CPU schedules again (vCPU 0 has the boot request). Never returns.
pub fn reset_vm(cpu: usize, me: VcpuRef) -> ! {
    let id = usize::from(me.vm);
    let first = with_vm(id, |vm| {
        vm.running[usize::from(me.vcpu)] = false;
        if vm.resetting {
            // Another vCPU's reset is under way: it reloads the VM.
            return false;
        }
        log!(
            "vm{} '{}': reset requested: reloading its image",
            vm.id,
            vm.image.name
        );
        vm.resetting = true;
        crate::console::set_state(id, VmState::Restarting);
        kick_on_cpu(vm, cpu);
        true
    });
    sched::discard(cpu, me);
    if first {
        reload_when_parked(cpu, id);
    }
    sched::schedule(cpu)
}

/// Waits until no vCPU of VM `id` is on a CPU (besides this CPU's, which the
/// caller gives up), then reloads it and asks its vCPU 0's CPU to start it.
fn reload_when_parked(cpu: usize, id: usize) {
    with_vm(id, |vm| {
        for v in 0..vm.vcpu_count() {
            if vm.pcpu[v] == cpu {
                vm.on_cpu[v] = false;
            }
        }
    });
    while with_vm(id, |vm| vm.any_on_cpu()) {
        core::hint::spin_loop();
    }
    crate::irq::release_passthrough(id);
    with_vm(id, |vm| {
        vm.resetting = false;
        if let Err(e) = vm.load() {
            panic!("VM reload failed after a successful first load: {e}");
        }
        crate::console::set_state(id, VmState::Running);
        crate::irq::kick(vm.pcpu[0]);
    });
}

/// Stops running `me` (powered off by `CPU_OFF`, or parked for a reset or
/// stop) and schedules. Never returns.
pub fn park_vcpu(cpu: usize, me: VcpuRef) -> ! {
    with_vm(usize::from(me.vm), |vm| {
        let v = usize::from(me.vcpu);
        vm.running[v] = false;
        vm.blocked[v] = false;
        // Like a powered-down CPU, the vCPU loses its interrupts in flight
        // (its list registers were folded when this exit began).
        vm.vgic.reset_vcpu(v);
    });
    sched::discard(cpu, me);
    sched::schedule(cpu)
}

/// Stops `me`'s VM for `reason` (or restarts it, if it crashed and its
/// config says so), and schedules. Stops the machine when the stop policy
/// says so: every VM stopped, or (`stop = "any"`) this one. Never returns.
pub fn stop_vm(cpu: usize, me: VcpuRef, reason: StopReason) -> ! {
    let id = usize::from(me.vm);
    let crashed = reason == StopReason::Crashed;
    let restart = with_vm(id, |vm| {
        let restart = crashed && vm.restart_on_crash;
        if restart {
            log!(
                "vm{} '{}' crashed: restarting it (on_crash = \"restart\")",
                vm.id,
                vm.image.name
            );
        }
        restart
    });
    if restart {
        reset_vm(cpu, me);
    }
    with_vm(id, |vm| {
        log!(
            "vm{} '{}' stopped ({reason:?}) after {} boot(s)",
            vm.id,
            vm.image.name,
            vm.boot_count,
        );
        crate::telemetry::vm_stopped(id, crashed, vm.boot_count);
        crate::telemetry::print_vm(id);
        vm.state = RunState::Stopped(reason);
        vm.running[usize::from(me.vcpu)] = false;
        crate::console::set_state(
            id,
            if crashed {
                VmState::Crashed
            } else {
                VmState::Stopped
            },
        );
        kick_on_cpu(vm, cpu);
    });
    sched::discard(cpu, me);
    crate::irq::release_passthrough(id);
    let mut all_stopped = true;
    let mut any_crashed = false;
    for other in 0..vm_count() {
        match try_with_vm(other, |vm| vm.state) {
            Some(RunState::Stopped(r)) => any_crashed |= r == StopReason::Crashed,
            Some(RunState::Running) => all_stopped = false,
            None => {}
        }
    }
    if all_stopped || STOP_ON_FIRST.load(Ordering::Relaxed) {
        log!(
            "{}: stopping",
            if all_stopped {
                "no VM left running"
            } else {
                "a VM stopped and the system stops with the first"
            }
        );
        shutdown(if any_crashed {
            exit::VM_CRASHED
        } else {
            exit::ALL_VMS_OFF
        });
    }
    sched::schedule(cpu)
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
