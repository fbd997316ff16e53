//! A guest's requests that concern its whole VM, applied: `SYSTEM_RESET`,
//! `SYSTEM_OFF` (and the last `CPU_OFF`), and crashes.
//!
//! `stratum_core::lifecycle` decides what happens (restart or stop, which
//! vCPUs park, which CPUs to kick, whether the machine stops); this module
//! logs it, updates the console and the telemetry, kicks the CPUs, stops
//! the machine when the stop policy says so, and hands the CPU to the
//! scheduler, which parks the requesting vCPU as it leaves (and reloads a
//! resetting VM once its last vCPU has left its CPU: `sched::reload`).
//!
//! It builds on `sched`, `irq` and `system`; none of them imports it.

use stratum_core::lifecycle::{self, Outcome, Request};
use stratum_core::sched::VcpuRef;
use stratum_core::vmexit::StopReason;

use crate::{console, irq, log, pv, sched, system, telemetry};

/// Restarts `me`'s VM from its pristine image, on behalf of `me` (running
/// on `cpu`). Every vCPU of the VM parks (those on other CPUs are kicked
/// out of their guests), and the last one to leave its CPU reloads the VM.
/// Never returns.
pub fn reset_vm(cpu: usize, me: VcpuRef) -> ! {
    request(cpu, me, Request::Reset)
}

/// Stops `me`'s VM for `reason` (or restarts it, if it crashed and its
/// config says so), and schedules. Stops the machine when the stop policy
/// says so: every VM stopped, or (`stop = "any"`) this one. Never returns.
pub fn stop_vm(cpu: usize, me: VcpuRef, reason: StopReason) -> ! {
    request(cpu, me, Request::Stop(reason))
}

fn request(cpu: usize, me: VcpuRef, request: Request) -> ! {
    let id = usize::from(me.vm);
    let (outcome, fx) = system::with_vm(id, |vm| {
        let (outcome, fx) = vm.life.request(request);
        match outcome {
            Outcome::Resetting { crashed: true } => log!(
                "vm{} '{}' crashed: restarting it (on_crash = \"restart\")",
                vm.id,
                vm.image.name
            ),
            Outcome::Resetting { crashed: false } => log!(
                "vm{} '{}': reset requested: reloading its image",
                vm.id,
                vm.image.name
            ),
            Outcome::Stopped(reason) => {
                log!(
                    "vm{} '{}' stopped ({reason:?}) after {} boot(s)",
                    vm.id,
                    vm.image.name,
                    vm.boot_count,
                );
                telemetry::BLOCK.vm_stopped(id, reason == StopReason::Crashed, vm.boot_count);
                console::print_vm(id);
                console::print_el2_time(id, vm.image.name);
            }
            // A reset or stop under way wins; `me` parks with the others.
            Outcome::Unchanged => {}
        }
        if outcome != Outcome::Unchanged {
            console::set_state(id, vm.life.vm_state().into());
        }
        (outcome, fx)
    });
    irq::kick_cpus(fx.kick, cpu);
    if let Outcome::Stopped(_) = outcome {
        irq::release_passthrough(id);
        pv::vm_reset(id, cpu, true);
        if let Some(stop) =
            lifecycle::machine_stop(system::stop_policy(), system::vm_states(), pv::service_vm())
        {
            system::stop_machine(
                stop.status,
                format_args!(
                    "{}: stopping",
                    if stop.all_stopped {
                        "no VM left running"
                    } else {
                        "a VM stopped and the system stops with the first"
                    }
                ),
            );
        }
    }
    // `me` is parking now: the scheduler parks it as it leaves.
    sched::schedule(cpu)
}
