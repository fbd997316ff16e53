//! Synthetic event sequences through one VM's lifecycle, checking the
//! module's invariants after every event.

use super::*;

const BOOT: Start = Start {
    entry: 0x4008_0000,
    x0: 0x4800_0000,
};
const SECONDARY: Start = Start {
    entry: 0x4008_1000,
    x0: 7,
};
const AGAIN: Start = Start {
    entry: 0x4008_2000,
    x0: 9,
};

/// A VM whose vCPU `v` has MPIDR `v` and runs on `pcpus[v]`.
fn vm_on(pcpus: &[u8], on_crash: OnCrash) -> VmLifecycle {
    let mpidrs: Vec<u64> = (0..pcpus.len() as u64).collect();
    VmLifecycle::new(&mpidrs, pcpus, on_crash)
}

/// The module's invariants, for a lifecycle between events.
pub(super) fn check(l: &VmLifecycle) {
    for v in 0..l.vcpu_count() {
        assert_eq!(
            l.power[v].state,
            l.vcpus[v].power(),
            "PSCI's view of vCPU {v} ({:?}) is the projection",
            l.vcpus[v]
        );
        if l.vm != VmState::Running {
            assert!(
                matches!(l.vcpus[v], VcpuState::Off | VcpuState::Parking(_)),
                "vCPU {v} of a {:?} VM is {:?}",
                l.vm,
                l.vcpus[v]
            );
        }
    }
}

/// What PSCI's `CPU_ON` does to its view before the glue reports it.
fn psci_cpu_on(l: &mut VmLifecycle, target: usize) {
    assert_eq!(l.psci_view()[target].state, PowerState::Off);
    l.psci_view()[target].state = PowerState::OnPending;
}

/// A booted VM whose vCPU 0 runs.
fn booted(pcpus: &[u8]) -> VmLifecycle {
    let mut l = vm_on(pcpus, OnCrash::Stop);
    let _ = l.boot(BOOT);
    assert_eq!(l.claim(0, false), Some(Claim::Start(BOOT)));
    check(&l);
    l
}

#[test]
fn a_new_vm_resets_until_its_boot_starts_vcpu_0() {
    let mut l = vm_on(&[2, 3], OnCrash::Stop);
    check(&l);
    assert_eq!(l.vm_state(), VmState::Resetting);
    assert_eq!(l.claim(0, true), None, "nothing runs before the boot");
    let fx = l.boot(BOOT);
    check(&l);
    assert_eq!(fx.kick, CpuSet::EMPTY.with(2), "vCPU 0's CPU is told");
    assert!(!fx.park && !fx.reload);
    assert_eq!(l.vm_state(), VmState::Running);
    assert_eq!(l.state(0), VcpuState::StartPending(BOOT));
    assert_eq!(l.psci_view()[0].state, PowerState::OnPending);
    assert_eq!(l.state(1), VcpuState::Off);
    assert_eq!(l.claim(1, true), None, "an off vCPU is not claimed");
    assert_eq!(l.claim(0, false), Some(Claim::Start(BOOT)));
    check(&l);
    assert_eq!(l.state(0), VcpuState::Running);
    assert_eq!(l.psci_view()[0].state, PowerState::On);
    assert!(!l.must_leave(0));
    assert!(l.must_leave(1));
    assert!(l.must_leave(9), "a vCPU that does not exist never runs");
}

#[test]
fn yield_and_block_give_the_cpu_up_and_claims_take_it_back() {
    let mut l = booted(&[0]);
    assert_eq!(l.leave(0, Leave::Yield), Effects::NONE);
    check(&l);
    assert_eq!(l.state(0), VcpuState::Ready);
    assert_eq!(l.claim(0, false), Some(Claim::Resume));
    assert_eq!(l.leave(0, Leave::Block), Effects::NONE);
    check(&l);
    assert_eq!(l.state(0), VcpuState::BlockedWfi);
    assert_eq!(l.psci_view()[0].state, PowerState::On, "WFI is still on");
    assert!(l.is_blocked(0));
    assert_eq!(l.claim(0, false), None, "not woken");
    assert_eq!(l.claim(0, true), Some(Claim::Resume));
    assert!(!l.is_blocked(0));
    check(&l);
}

#[test]
fn cpu_on_starts_a_vcpu_on_its_cpu_and_cpu_off_parks_it() {
    let mut l = booted(&[0, 1]);
    psci_cpu_on(&mut l, 1);
    let fx = l.cpu_on(1, SECONDARY);
    check(&l);
    assert_eq!(fx.kick, CpuSet::EMPTY.with(1));
    assert_eq!(l.kick_target(1), Some(1));
    assert_eq!(l.claim(1, false), Some(Claim::Start(SECONDARY)));
    // CPU_OFF: PSCI makes it OFF, the glue reports it; it parks at the
    // end of the exit.
    l.psci_view()[1].state = PowerState::Off;
    l.cpu_off(1);
    check(&l);
    assert_eq!(l.state(1), VcpuState::Parking(None));
    assert!(l.must_leave(1));
    let fx = l.leave(1, Leave::Yield);
    check(&l);
    assert_eq!(
        fx,
        Effects {
            park: true,
            ..Effects::NONE
        }
    );
    assert_eq!(l.state(1), VcpuState::Off);
    assert_eq!(l.kick_target(1), None, "an off vCPU takes no interrupt");
}

#[test]
fn cpu_on_before_a_powered_off_vcpu_left_restarts_it_after() {
    let mut l = booted(&[0, 1]);
    psci_cpu_on(&mut l, 1);
    let _ = l.cpu_on(1, SECONDARY);
    let _ = l.claim(1, false);
    l.psci_view()[1].state = PowerState::Off;
    l.cpu_off(1);
    // vCPU 0 starts it again while its exit is still under way.
    psci_cpu_on(&mut l, 1);
    let fx = l.cpu_on(1, AGAIN);
    check(&l);
    assert_eq!(fx, Effects::NONE, "it is on its CPU, leaving");
    assert_eq!(l.state(1), VcpuState::Parking(Some(AGAIN)));
    assert_eq!(l.psci_view()[1].state, PowerState::OnPending);
    let fx = l.leave(1, Leave::Block);
    check(&l);
    assert!(fx.park, "its old life is dropped");
    assert_eq!(l.state(1), VcpuState::StartPending(AGAIN));
    assert_eq!(l.claim(1, false), Some(Claim::Start(AGAIN)));
}

#[test]
fn cpu_on_changes_only_an_off_vcpu_of_a_running_vm() {
    let mut l = booted(&[0, 1]);
    // A start request PSCI refused (already on): the view stays in step.
    let _ = l.cpu_on(0, AGAIN);
    check(&l);
    assert_eq!(l.state(0), VcpuState::Running);
    let _ = l.cpu_on(5, AGAIN);
    check(&l);
    // A reset is under way: the reload rebuilds every state.
    let (outcome, _) = l.request(Request::Reset);
    assert_eq!(outcome, Outcome::Resetting { crashed: false });
    psci_cpu_on(&mut l, 1);
    assert_eq!(l.cpu_on(1, SECONDARY), Effects::NONE);
    check(&l);
    assert_eq!(l.state(1), VcpuState::Off);
}

#[test]
fn a_reset_parks_every_vcpu_and_reloads_after_the_last_left() {
    let mut l = booted(&[0, 1, 2, 2]);
    for v in 1..4 {
        psci_cpu_on(&mut l, v);
        let _ = l.cpu_on(v, SECONDARY);
    }
    for v in 1..3 {
        assert!(l.claim(v, false).is_some());
    }
    let _ = l.leave(2, Leave::Block);
    // vCPUs 0 and 1 run, 2 is blocked, 3 is pending on CPU 2.
    let (outcome, fx) = l.request(Request::Reset);
    check(&l);
    assert_eq!(outcome, Outcome::Resetting { crashed: false });
    assert_eq!(fx.kick, CpuSet::EMPTY.with(0).with(1), "the CPUs with it");
    assert!(!fx.reload, "vCPUs are still on their CPUs");
    assert_eq!(l.state(0), VcpuState::Parking(None));
    assert_eq!(l.state(1), VcpuState::Parking(None));
    assert_eq!(l.state(2), VcpuState::Off);
    assert_eq!(l.state(3), VcpuState::Off);
    assert!(l.must_leave(0) && l.must_leave(1));
    assert!(!l.is_running());
    for v in 2..4 {
        assert_eq!(l.claim(v, true), None, "nothing runs while resetting");
    }
    assert_eq!(
        l.request(Request::Stop(StopReason::PowerOff)),
        (Outcome::Unchanged, Effects::NONE),
        "the reset under way wins"
    );
    let fx = l.leave(1, Leave::Yield);
    check(&l);
    assert!(fx.park && !fx.reload);
    let fx = l.leave(0, Leave::Yield);
    check(&l);
    assert!(fx.park && fx.reload, "the last to leave reloads");
    assert_eq!(l.vm_state(), VmState::Resetting);
    let fx = l.boot(BOOT);
    check(&l);
    assert_eq!(fx.kick, CpuSet::EMPTY.with(0));
    assert_eq!(l.state(0), VcpuState::StartPending(BOOT));
    assert!((1..4).all(|v| l.state(v) == VcpuState::Off));
}

#[test]
#[should_panic(expected = "every vCPU left its CPU")]
fn booting_under_a_running_vcpu_is_a_bug() {
    let mut l = booted(&[0, 1]);
    let _ = l.request(Request::Reset);
    let _ = l.boot(BOOT);
}

#[test]
#[should_panic(expected = "not on")]
fn leaving_a_cpu_the_vcpu_is_not_on_is_a_bug() {
    let mut l = booted(&[0]);
    let _ = l.leave(0, Leave::Yield);
    let _ = l.leave(0, Leave::Yield);
}

#[test]
fn a_stopped_vm_never_runs_again() {
    let mut l = booted(&[0, 1]);
    psci_cpu_on(&mut l, 1);
    let _ = l.cpu_on(1, SECONDARY);
    let (outcome, fx) = l.request(Request::Stop(StopReason::PowerOff));
    check(&l);
    assert_eq!(outcome, Outcome::Stopped(StopReason::PowerOff));
    assert_eq!(fx.kick, CpuSet::EMPTY.with(0));
    assert!(!fx.reload);
    assert_eq!(l.state(1), VcpuState::Off, "its start request is dropped");
    let fx = l.leave(0, Leave::Yield);
    assert!(fx.park && !fx.reload, "a stopped VM is not reloaded");
    assert_eq!(l.claim(0, true), None);
    assert_eq!(l.claim(1, true), None);
    psci_cpu_on(&mut l, 1);
    assert_eq!(l.cpu_on(1, SECONDARY), Effects::NONE);
    assert_eq!(
        l.request(Request::Reset),
        (Outcome::Unchanged, Effects::NONE)
    );
    check(&l);
    assert_eq!(l.vm_state(), VmState::Stopped(StopReason::PowerOff));
    assert!(!l.is_running());
}

#[test]
fn a_crash_stops_or_restarts_as_configured() {
    let mut stop = booted(&[0]);
    assert_eq!(
        stop.request(Request::Stop(StopReason::Crashed)).0,
        Outcome::Stopped(StopReason::Crashed)
    );
    let mut restart = vm_on(&[0], OnCrash::Restart);
    let _ = restart.boot(BOOT);
    let _ = restart.claim(0, false);
    let (outcome, fx) = restart.request(Request::Stop(StopReason::Crashed));
    assert_eq!(outcome, Outcome::Resetting { crashed: true });
    assert_eq!(fx.kick, CpuSet::EMPTY.with(0));
    // A plain power-off still stops a VM that restarts on crashes.
    let mut off = vm_on(&[0], OnCrash::Restart);
    let _ = off.boot(BOOT);
    assert_eq!(
        off.request(Request::Stop(StopReason::PowerOff)).0,
        Outcome::Stopped(StopReason::PowerOff)
    );
}

#[test]
fn the_last_cpu_off_stops_the_vm() {
    let mut l = booted(&[0]);
    // PSCI saw every vCPU off and asked for a stop; the glue reports the
    // CPU_OFF first, then the stop.
    l.psci_view()[0].state = PowerState::Off;
    l.cpu_off(0);
    check(&l);
    let (outcome, fx) = l.request(Request::Stop(StopReason::AllCpusOff));
    check(&l);
    assert_eq!(outcome, Outcome::Stopped(StopReason::AllCpusOff));
    assert_eq!(fx.kick, CpuSet::EMPTY.with(0));
    assert!(l.leave(0, Leave::Yield).park);
}

#[test]
fn an_exception_loop_at_the_vector_table_is_a_crash() {
    let mut l = booted(&[0]);
    let vbar = 0x4010_0000;
    for _ in 1..VECTOR_FAULT_LIMIT {
        assert!(!l.abort_injected(vbar + 0x200, vbar));
    }
    assert!(l.abort_injected(vbar + 0x7fc, vbar), "the limit");
    let mut l = booted(&[0]);
    for _ in 1..VECTOR_FAULT_LIMIT {
        assert!(!l.abort_injected(vbar, vbar));
    }
    assert!(
        !l.abort_injected(vbar + 0x800, vbar),
        "an abort elsewhere ends the run"
    );
    assert!(!l.abort_injected(vbar - 4, vbar), "below the table");
    for _ in 1..VECTOR_FAULT_LIMIT {
        assert!(!l.abort_injected(vbar + 0x400, vbar));
    }
    assert!(l.abort_injected(vbar + 0x400, vbar));
    // A reboot starts counting afresh.
    let _ = l.request(Request::Reset);
    let _ = l.leave(0, Leave::Yield);
    let _ = l.boot(BOOT);
    assert!(!l.abort_injected(vbar, vbar));
}

#[test]
fn kick_targets_are_the_cpus_of_started_vcpus() {
    let mut l = booted(&[3, 5]);
    assert_eq!(l.kick_target(0), Some(3));
    assert_eq!(l.kick_target(1), None);
    assert_eq!(l.kick_target(2), None, "no such vCPU");
    psci_cpu_on(&mut l, 1);
    let _ = l.cpu_on(1, SECONDARY);
    assert_eq!(l.kick_target(1), Some(5), "pending counts");
    assert_eq!(l.pcpu(1), 5);
    assert_eq!(l.mpidr(1), 1);
}

#[test]
fn cpu_sets() {
    let s = CpuSet::EMPTY.with(0).with(5).with(63);
    assert_eq!(s.iter().collect::<Vec<_>>(), [0, 5, 63]);
    assert!(s.contains(5) && !s.contains(4) && !s.contains(64));
    assert_eq!(s.without(5).iter().collect::<Vec<_>>(), [0, 63]);
    assert_eq!(s.without(70), s);
    assert!(CpuSet::EMPTY.is_empty() && !s.is_empty());
}

/// A saved-timer case: the registers, the VM's offset, the deadline.
struct TimerCase {
    name: &'static str,
    timers: SavedTimers,
    cntvoff: u64,
    deadline: Option<u64>,
}

#[test]
fn saved_timer_deadlines() {
    const ON: u64 = 0b001;
    const MASKED: u64 = 0b011;
    let t = |cntv_ctl, cntv_cval, cntp_ctl, cntp_cval| SavedTimers {
        cntv_ctl,
        cntv_cval,
        cntp_ctl,
        cntp_cval,
    };
    let cases = [
        TimerCase {
            name: "none armed",
            timers: t(0, 100, 0, 200),
            cntvoff: 0,
            deadline: None,
        },
        TimerCase {
            name: "virtual, counted from the offset",
            timers: t(ON, 100, 0, 50),
            cntvoff: 1000,
            deadline: Some(1100),
        },
        TimerCase {
            name: "physical, no offset",
            timers: t(0, 100, ON, 50),
            cntvoff: 1000,
            deadline: Some(50),
        },
        TimerCase {
            name: "both: the earlier",
            timers: t(ON, 100, ON, 2000),
            cntvoff: 1000,
            deadline: Some(1100),
        },
        TimerCase {
            name: "masked timers do not wake",
            timers: t(MASKED, 100, MASKED | 0b100, 50),
            cntvoff: 0,
            deadline: None,
        },
        TimerCase {
            name: "ISTATUS does not matter",
            timers: t(ON | 0b100, 7, 0, 0),
            cntvoff: 0,
            deadline: Some(7),
        },
        TimerCase {
            name: "a virtual never beyond the counter's range",
            timers: t(ON, u64::MAX, 0, 0),
            cntvoff: 1,
            deadline: None,
        },
        TimerCase {
            name: "a virtual never, with a physical one",
            timers: t(ON, u64::MAX - 5, ON, 9),
            cntvoff: 10,
            deadline: Some(9),
        },
    ];
    for c in cases {
        assert_eq!(c.timers.next_deadline(c.cntvoff), c.deadline, "{}", c.name);
        if let Some(at) = c.deadline {
            assert!(c.timers.fired(at, c.cntvoff), "{}: fires at", c.name);
            assert!(c.timers.fired(at + 1, c.cntvoff), "{}: after", c.name);
            if at > 0 {
                assert!(!c.timers.fired(at - 1, c.cntvoff), "{}: before", c.name);
            }
        } else {
            assert!(!c.timers.fired(u64::MAX, c.cntvoff), "{}", c.name);
        }
    }
}

#[test]
fn wake_deadlines_only_for_blocked_vcpus() {
    let timers = SavedTimers {
        cntp_ctl: 1,
        cntp_cval: 500,
        ..SavedTimers::default()
    };
    let mut l = booted(&[0]);
    assert_eq!(l.wake_deadline(0, &timers, 0), None, "running");
    let _ = l.leave(0, Leave::Block);
    assert_eq!(l.wake_deadline(0, &timers, 0), Some(500));
    let _ = l.request(Request::Stop(StopReason::PowerOff));
    assert_eq!(l.wake_deadline(0, &timers, 0), None, "stopped");
}

#[test]
fn the_machine_stops_by_its_policy() {
    use StopReason::*;
    use VmState::*;
    let all = StopPolicy::All;
    let any = StopPolicy::Any;
    assert_eq!(machine_stop(all, [Stopped(PowerOff), Running], None), None);
    assert_eq!(
        machine_stop(all, [Stopped(PowerOff), Resetting], None),
        None
    );
    assert_eq!(
        machine_stop(all, [Stopped(PowerOff), Stopped(AllCpusOff)], None),
        Some(MachineStop {
            status: exit::ALL_VMS_OFF,
            all_stopped: true
        })
    );
    assert_eq!(
        machine_stop(all, [Stopped(Crashed), Stopped(PowerOff)], None),
        Some(MachineStop {
            status: exit::VM_CRASHED,
            all_stopped: true
        })
    );
    assert_eq!(
        machine_stop(any, [Running, Stopped(PowerOff)], None),
        Some(MachineStop {
            status: exit::ALL_VMS_OFF,
            all_stopped: false
        })
    );
    assert_eq!(
        machine_stop(any, [Stopped(Crashed), Resetting], None),
        Some(MachineStop {
            status: exit::VM_CRASHED,
            all_stopped: false
        })
    );
    assert_eq!(machine_stop(any, [Running, Resetting], None), None);
    // A service VM (index 1) keeps running: all the others stopping is all.
    let off = Some(MachineStop {
        status: exit::ALL_VMS_OFF,
        all_stopped: true,
    });
    assert_eq!(
        machine_stop(all, [Stopped(PowerOff), Running], Some(1)),
        off
    );
    assert_eq!(
        machine_stop(all, [Stopped(PowerOff), Running, Running], Some(1)),
        None,
        "another VM still runs"
    );
    assert_eq!(machine_stop(all, [Running, Resetting], Some(1)), None);
    // Its own stop counts for `any`, not for `all`.
    assert_eq!(
        machine_stop(any, [Running, Stopped(Crashed)], Some(1)),
        Some(MachineStop {
            status: exit::VM_CRASHED,
            all_stopped: false,
        })
    );
    assert_eq!(
        machine_stop(all, [Running, Stopped(Crashed)], Some(1)),
        None
    );
    // A service VM alone is a VM like any other.
    assert_eq!(machine_stop(all, [Running], Some(0)), None);
    assert_eq!(machine_stop(all, [Stopped(PowerOff)], Some(0)), off);
}

#[test]
fn the_console_shows_the_vm_state() {
    use crate::console::VmState as Shown;
    assert_eq!(Shown::from(VmState::Running), Shown::Running);
    assert_eq!(Shown::from(VmState::Resetting), Shown::Restarting);
    assert_eq!(
        Shown::from(VmState::Stopped(StopReason::Crashed)),
        Shown::Crashed
    );
    assert_eq!(
        Shown::from(VmState::Stopped(StopReason::AllCpusOff)),
        Shown::Stopped
    );
}
