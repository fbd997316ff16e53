//! A model machine for the property tests: several VMs' lifecycles and
//! physical CPUs with run queues, kicks in flight and pending interrupts,
//! driven by random operations the way the hypervisor's glue drives the
//! real ones (`sched.rs`, `lifecycle.rs`, `exit.rs`). After every operation
//! it checks that the model's CPUs and the lifecycles agree on which vCPU
//! is on which CPU, and the properties below.
//!
//! - No lost wake-up: once every kick in flight was taken, no CPU idles
//!   while one of its vCPUs could run (started, ready, or blocked with an
//!   interrupt or timer due), and no CPU idles in a guest's `WFI` with an
//!   interrupt pending for that guest or a request to park.
//! - No starvation: on a time-shared CPU, a vCPU that could run is picked
//!   before its CPU picked each of the others once.
//! - A stopped VM never runs again: no vCPU of it is claimed after its stop.
//! - A reset VM's vCPUs are all off their CPUs (and off) when the reload
//!   comes, and the reload comes once per reset.

use proptest::prelude::*;

use super::tests::check;
use super::*;
use crate::sched::{RunQueue, VcpuRef};

const CPUS: usize = 3;
const BOOT: Start = Start {
    entry: 0x4008_0000,
    x0: 0x4800_0000,
};

/// One model CPU.
#[derive(Clone, Debug)]
struct Cpu {
    queue: RunQueue,
    /// Its current vCPU.
    current: Option<VcpuRef>,
    /// The current vCPU is idling in `WFI` on this (unshared) CPU.
    in_wfi: bool,
    /// The current vCPU is in an exit whose end is still to come
    /// ([`Op::EndExit`]).
    in_exit: bool,
    /// A kick (or any interrupt that wakes it) is in flight.
    kicked: bool,
}

/// What happens next, somewhere in the machine.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// The guest on this CPU executes `WFI`.
    Wfi(usize),
    /// This CPU's slice ends (or the guest yields with `WFE`).
    SliceEnd(usize),
    /// An interrupt for vCPU (vm, vcpu) becomes pending, from a device or
    /// another CPU.
    Interrupt(usize, usize),
    /// A saved timer of vCPU (vm, vcpu) reaches its deadline.
    Timer(usize, usize),
    /// The guest on this CPU calls `CPU_ON` for this vCPU of its VM.
    CpuOn(usize, usize),
    /// The guest on this CPU calls `CPU_OFF`.
    CpuOff(usize),
    /// The guest on this CPU calls `SYSTEM_RESET`.
    Reset(usize),
    /// The guest on this CPU calls `SYSTEM_OFF`.
    PowerOff(usize),
    /// The guest on this CPU crashes.
    Crash(usize),
    /// This CPU takes the interrupt in flight to it (after the exit under
    /// way, if any).
    TakeKick(usize),
    /// The exit under way on this CPU ends.
    EndExit(usize),
    /// Every CPU takes its kicks until none is in flight; then the
    /// no-lost-wake-up property is checked.
    Settle,
}

struct Machine {
    vms: Vec<VmLifecycle>,
    cpus: Vec<Cpu>,
    policy: StopPolicy,
    /// An interrupt is pending for the vCPU (its virtual GIC's view).
    pending: Vec<Vec<bool>>,
    /// A saved timer of the vCPU has fired.
    timer_due: Vec<Vec<bool>>,
    /// Picks its CPU made while the vCPU could run but was passed over.
    passed_over: Vec<Vec<usize>>,
    /// The VM was stopped.
    stopped: Vec<bool>,
    /// Resets under way (0 or 1) per VM.
    resets: Vec<u32>,
    /// Reloads done per VM.
    reloads: Vec<u32>,
    /// The machine stopped.
    halted: bool,
}

fn r(vm: usize, vcpu: usize) -> VcpuRef {
    VcpuRef {
        vm: vm as u8,
        vcpu: vcpu as u8,
    }
}

impl Machine {
    /// Boots VMs placed by `placement` (each VM's vCPUs' CPUs) and lets
    /// every CPU schedule.
    fn new(placement: &[Vec<u8>], restart: &[bool], policy: StopPolicy) -> Self {
        let mut cpus = vec![
            Cpu {
                queue: RunQueue::new(),
                current: None,
                in_wfi: false,
                in_exit: false,
                kicked: false,
            };
            CPUS
        ];
        let mut vms = Vec::new();
        for (id, pcpus) in placement.iter().enumerate() {
            let mpidrs: Vec<u64> = (0..pcpus.len() as u64).collect();
            let on_crash = if restart[id] {
                OnCrash::Restart
            } else {
                OnCrash::Stop
            };
            let mut l = VmLifecycle::new(&mpidrs, pcpus, on_crash);
            // The boot CPU loads every VM before any CPU schedules.
            let _ = l.boot(BOOT);
            for (v, &c) in pcpus.iter().enumerate() {
                assert!(cpus[usize::from(c)].queue.push(r(id, v)));
            }
            vms.push(l);
        }
        let per_vm = |x| placement.iter().map(|p| vec![x; p.len()]).collect();
        let mut m = Self {
            vms,
            cpus,
            policy,
            pending: per_vm(false),
            timer_due: per_vm(false),
            passed_over: placement.iter().map(|p| vec![0; p.len()]).collect(),
            stopped: vec![false; placement.len()],
            resets: vec![0; placement.len()],
            reloads: vec![0; placement.len()],
            halted: false,
        };
        for c in 0..CPUS {
            m.pick(c);
        }
        m.check();
        m
    }

    fn shared(&self, c: usize) -> bool {
        self.cpus[c].queue.is_shared()
    }

    fn kick(&mut self, set: CpuSet, from: Option<usize>) {
        let set = from.map_or(set, |c| set.without(c));
        for c in set.iter() {
            self.cpus[c].kicked = true;
        }
    }

    /// Whether vCPU `x` could run now (its CPU would claim it).
    fn could_run(&self, x: VcpuRef) -> bool {
        let (vm, v) = (usize::from(x.vm), usize::from(x.vcpu));
        let l = &self.vms[vm];
        l.is_running()
            && match l.state(v) {
                VcpuState::StartPending(_) | VcpuState::Ready => true,
                VcpuState::BlockedWfi => self.pending[vm][v] || self.timer_due[vm][v],
                _ => false,
            }
    }

    /// `sched::schedule`: this CPU's current vCPU leaves (`why`), then the
    /// CPU picks the next.
    fn schedule(&mut self, c: usize, why: Leave) {
        if let Some(x) = self.cpus[c].current.take() {
            self.cpus[c].in_wfi = false;
            self.cpus[c].in_exit = false;
            let (vm, v) = (usize::from(x.vm), usize::from(x.vcpu));
            let fx = self.vms[vm].leave(v, why);
            if fx.park {
                // A parked vCPU loses its interrupts in flight.
                self.pending[vm][v] = false;
            }
            self.kick(fx.kick, Some(c));
            if fx.reload {
                self.reload(vm, c);
            }
        }
        self.pick(c);
    }

    /// The reload of VM `vm` by CPU `c`, and its boot.
    fn reload(&mut self, vm: usize, c: usize) {
        assert_eq!(self.resets[vm], 1, "one reload per reset");
        self.resets[vm] = 0;
        self.reloads[vm] += 1;
        for cpu in &self.cpus {
            assert!(
                cpu.current.is_none_or(|x| usize::from(x.vm) != vm),
                "VM {vm} reloaded while its vCPU {:?} is on a CPU",
                cpu.current
            );
        }
        let l = &self.vms[vm];
        assert!((0..l.vcpu_count()).all(|v| l.state(v) == VcpuState::Off));
        self.pending[vm].fill(false);
        self.timer_due[vm].fill(false);
        let fx = self.vms[vm].boot(BOOT);
        self.kick(fx.kick, Some(c));
    }

    /// The pick of `sched::schedule`, with the starvation bookkeeping.
    fn pick(&mut self, c: usize) {
        let (could, cannot): (Vec<VcpuRef>, Vec<VcpuRef>) = self.cpus[c]
            .queue
            .entries()
            .iter()
            .partition(|&&x| self.could_run(x));
        // A vCPU that cannot run starts a new wait when it can again.
        for x in cannot {
            self.passed_over[usize::from(x.vm)][usize::from(x.vcpu)] = 0;
        }
        let mut queue = self.cpus[c].queue;
        let (vms, pending, timer_due) = (&mut self.vms, &self.pending, &self.timer_due);
        let picked = queue.pick(|x| {
            let (vm, v) = (usize::from(x.vm), usize::from(x.vcpu));
            vms[vm]
                .claim(v, pending[vm][v] || timer_due[vm][v])
                .is_some()
        });
        self.cpus[c].queue = queue;
        let Some(x) = picked else {
            assert!(could.is_empty(), "CPU {c} idles while {could:?} could run");
            return;
        };
        let (vm, v) = (usize::from(x.vm), usize::from(x.vcpu));
        assert!(!self.stopped[vm], "vCPU {x:?} of a stopped VM was claimed");
        assert!(could.contains(&x), "{x:?} was claimed but could not run");
        for other in could.into_iter().filter(|&o| o != x) {
            let n = &mut self.passed_over[usize::from(other.vm)][usize::from(other.vcpu)];
            *n += 1;
            assert!(
                *n < self.cpus[c].queue.entries().len(),
                "{other:?} starves on CPU {c}"
            );
        }
        self.passed_over[vm][v] = 0;
        // Running, it takes what was pending.
        self.pending[vm][v] = false;
        self.timer_due[vm][v] = false;
        self.cpus[c].current = Some(x);
    }

    /// The end of an exit on CPU `c` (`exit.rs`): park the vCPU if it must,
    /// else return to its guest.
    fn end_exit(&mut self, c: usize) {
        let Some(x) = self.cpus[c].current else {
            return;
        };
        let (vm, v) = (usize::from(x.vm), usize::from(x.vcpu));
        if self.vms[vm].must_leave(v) {
            self.schedule(c, Leave::Yield);
        } else if self.cpus[c].in_wfi {
            // Idling in `WFI`: it wakes only for its own interrupt.
            if self.pending[vm][v] {
                self.cpus[c].in_wfi = false;
                self.pending[vm][v] = false;
            }
        } else {
            self.pending[vm][v] = false;
        }
    }

    /// A VM-wide request by the guest on CPU `c` (`lifecycle.rs`).
    fn request(&mut self, c: usize, vm: usize, req: Request) {
        let (outcome, fx) = self.vms[vm].request(req);
        match outcome {
            Outcome::Resetting { .. } => self.resets[vm] += 1,
            Outcome::Stopped(_) => self.stopped[vm] = true,
            Outcome::Unchanged => {}
        }
        self.kick(fx.kick, Some(c));
        assert!(!fx.reload, "the requester itself is on its CPU");
        if matches!(outcome, Outcome::Stopped(_))
            && machine_stop(
                self.policy,
                self.vms.iter().map(VmLifecycle::vm_state),
                None,
            )
            .is_some()
        {
            self.halted = true;
            return;
        }
        self.schedule(c, Leave::Yield);
    }

    /// The vCPU whose guest runs on CPU `c` (not idling in `WFI`).
    fn guest_on(&self, c: usize) -> Option<(usize, usize)> {
        let cpu = &self.cpus[c];
        let x = cpu.current.filter(|_| !cpu.in_wfi && !cpu.in_exit)?;
        Some((usize::from(x.vm), usize::from(x.vcpu)))
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Wfi(c) => {
                let Some((vm, v)) = self.guest_on(c) else {
                    return;
                };
                if self.shared(c) {
                    self.schedule(c, Leave::Block);
                } else if !self.pending[vm][v] {
                    self.cpus[c].in_wfi = true;
                }
            }
            Op::SliceEnd(c) => {
                if self.guest_on(c).is_some() && self.shared(c) {
                    self.schedule(c, Leave::Yield);
                }
            }
            Op::Interrupt(vm, v) | Op::Timer(vm, v) => {
                let (vm, v) = (
                    vm % self.vms.len(),
                    v % self.vms[vm % self.vms.len()].vcpu_count(),
                );
                if matches!(op, Op::Interrupt(..)) {
                    self.pending[vm][v] = true;
                    // `irq::send_kicks`.
                    if let Some(target) = self.vms[vm].kick_target(v) {
                        self.cpus[target].kicked = true;
                    }
                } else if self.vms[vm].is_blocked(v) {
                    self.timer_due[vm][v] = true;
                    // An idle CPU sleeps with CNTHP set for the deadline.
                    let c = self.vms[vm].pcpu(v);
                    if self.cpus[c].current.is_none() {
                        self.cpus[c].kicked = true;
                    }
                }
            }
            Op::CpuOn(c, target) => {
                let Some((vm, _)) = self.guest_on(c) else {
                    return;
                };
                let target = target % self.vms[vm].vcpu_count();
                // PSCI: only an OFF vCPU starts.
                if self.vms[vm].psci_view()[target].state == PowerState::Off {
                    self.vms[vm].psci_view()[target].state = PowerState::OnPending;
                    let fx = self.vms[vm].cpu_on(target, BOOT);
                    // Unless a reset or stop under way wins.
                    if self.vms[vm].is_running() {
                        assert_eq!(
                            self.vms[vm].psci_view()[target].state,
                            PowerState::OnPending,
                            "an accepted CPU_ON is not lost"
                        );
                    }
                    self.kick(fx.kick, Some(c));
                }
                self.end_exit(c);
            }
            Op::CpuOff(c) => {
                let Some((vm, v)) = self.guest_on(c) else {
                    return;
                };
                self.vms[vm].psci_view()[v].state = PowerState::Off;
                self.vms[vm].cpu_off(v);
                let all_off = self.vms[vm]
                    .psci_view()
                    .iter()
                    .all(|p| p.state == PowerState::Off);
                if all_off {
                    self.request(c, vm, Request::Stop(StopReason::AllCpusOff));
                } else {
                    // The exit ends later: meanwhile other CPUs go on (and
                    // may start this vCPU again).
                    self.cpus[c].in_exit = true;
                }
            }
            Op::Reset(c) | Op::PowerOff(c) | Op::Crash(c) => {
                let Some((vm, _)) = self.guest_on(c) else {
                    return;
                };
                let req = match op {
                    Op::Reset(_) => Request::Reset,
                    Op::PowerOff(_) => Request::Stop(StopReason::PowerOff),
                    _ => Request::Stop(StopReason::Crashed),
                };
                self.request(c, vm, req);
            }
            Op::TakeKick(c) => self.take_kick(c),
            Op::EndExit(c) => self.end_exit_under_way(c),
            Op::Settle => self.settle(),
        }
    }

    fn end_exit_under_way(&mut self, c: usize) {
        if std::mem::take(&mut self.cpus[c].in_exit) {
            self.end_exit(c);
        }
    }

    fn take_kick(&mut self, c: usize) {
        if self.cpus[c].in_exit || !std::mem::take(&mut self.cpus[c].kicked) {
            return;
        }
        if self.cpus[c].current.is_some() {
            self.end_exit(c);
        } else {
            self.pick(c);
        }
    }

    fn settle(&mut self) {
        while let Some(c) = (0..CPUS).find(|&c| self.cpus[c].kicked || self.cpus[c].in_exit) {
            self.end_exit_under_way(c);
            self.take_kick(c);
            if self.halted {
                return;
            }
        }
        for (c, cpu) in self.cpus.iter().enumerate() {
            match cpu.current {
                None => {
                    for &x in cpu.queue.entries() {
                        assert!(
                            !self.could_run(x),
                            "lost wake-up: CPU {c} idles, {x:?} could run"
                        );
                    }
                }
                Some(x) if cpu.in_wfi => {
                    let (vm, v) = (usize::from(x.vm), usize::from(x.vcpu));
                    assert!(
                        !self.pending[vm][v],
                        "lost wake-up: {x:?} idles in WFI with an interrupt"
                    );
                    assert!(
                        !self.vms[vm].must_leave(v),
                        "{x:?} idles in WFI but must park"
                    );
                }
                Some(_) => {}
            }
        }
    }

    fn check(&self) {
        for (vm, l) in self.vms.iter().enumerate() {
            check(l);
            for v in 0..l.vcpu_count() {
                let on = self.cpus[l.pcpu(v)].current == Some(r(vm, v));
                assert_eq!(
                    l.state(v).on_cpu(),
                    on,
                    "vCPU {v} of VM {vm} is {:?}; on its CPU: {on}",
                    l.state(v)
                );
            }
            match l.vm_state() {
                VmState::Stopped(_) => assert!(self.stopped[vm]),
                // The reload comes as the last vCPU leaves: a resetting
                // VM still has one on a CPU.
                VmState::Resetting => {
                    assert!((0..l.vcpu_count()).any(|v| l.state(v).on_cpu()));
                }
                VmState::Running => assert!(!self.stopped[vm]),
            }
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let cpu = 0..CPUS;
    prop_oneof![
        10 => cpu.clone().prop_map(Op::Wfi),
        10 => cpu.clone().prop_map(Op::SliceEnd),
        10 => (0..3usize, 0..4usize).prop_map(|(vm, v)| Op::Interrupt(vm, v)),
        4 => (0..3usize, 0..4usize).prop_map(|(vm, v)| Op::Timer(vm, v)),
        10 => (cpu.clone(), 0..4usize).prop_map(|(c, t)| Op::CpuOn(c, t)),
        3 => cpu.clone().prop_map(Op::CpuOff),
        2 => cpu.clone().prop_map(Op::Reset),
        1 => cpu.clone().prop_map(Op::PowerOff),
        1 => cpu.clone().prop_map(Op::Crash),
        16 => cpu.clone().prop_map(Op::TakeKick),
        3 => cpu.prop_map(Op::EndExit),
        4 => Just(Op::Settle),
    ]
}

/// One to three VMs of one to three vCPUs each, placed anywhere.
fn machine() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<bool>, bool)> {
    (
        prop::collection::vec(prop::collection::vec(0..CPUS as u8, 1..4), 1..4),
        prop::collection::vec(any::<bool>(), 3),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random event sequences keep every property (see the module doc).
    #[test]
    fn random_machines_keep_their_lifecycle_properties(
        (placement, restart, any_stops) in machine(),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let policy = if any_stops { StopPolicy::Any } else { StopPolicy::All };
        let mut m = Machine::new(&placement, &restart, policy);
        for op in ops {
            m.apply(op);
            if m.halted {
                break;
            }
            m.check();
        }
        if !m.halted {
            m.settle();
            m.check();
        }
    }
}

/// The model itself: two VMs time-sharing CPU 0, one resets while the
/// other's vCPU runs; every step named.
#[test]
fn a_reset_on_a_shared_cpu_reloads_once_the_vcpu_left() {
    let mut m = Machine::new(&[vec![0, 1], vec![0]], &[false, false], StopPolicy::All);
    assert_eq!(m.cpus[0].current, Some(r(0, 0)), "VM 0 booted first");
    m.apply(Op::CpuOn(0, 1));
    assert_eq!(m.vms[0].state(1), VcpuState::StartPending(BOOT));
    m.apply(Op::TakeKick(1));
    assert_eq!(m.cpus[1].current, Some(r(0, 1)));
    m.apply(Op::SliceEnd(0));
    assert_eq!(m.cpus[0].current, Some(r(1, 0)), "round-robin");
    m.apply(Op::Reset(1));
    assert_eq!(m.cpus[1].current, None, "the requester left");
    assert_eq!(m.reloads[0], 1, "and, being the last, reloaded it");
    assert_eq!(m.vms[0].vm_state(), VmState::Running, "booted again");
    assert_eq!(m.vms[0].state(0), VcpuState::StartPending(BOOT));
    m.apply(Op::Settle);
    assert_eq!(m.cpus[0].current, Some(r(1, 0)), "VM 1 keeps its slice");
    m.apply(Op::SliceEnd(0));
    assert_eq!(m.cpus[0].current, Some(r(0, 0)), "the new boot runs");
    m.check();
}

/// `CPU_ON` from another CPU while the `CPU_OFF` exit is still under way:
/// the vCPU starts again once it left.
#[test]
fn cpu_on_during_a_cpu_off_exit_is_not_lost() {
    let mut m = Machine::new(&[vec![0, 1, 1]], &[false], StopPolicy::All);
    m.apply(Op::CpuOn(0, 1));
    m.apply(Op::Settle);
    assert_eq!(m.cpus[1].current, Some(r(0, 1)));
    m.apply(Op::CpuOff(1));
    assert_eq!(m.vms[0].state(1), VcpuState::Parking(None));
    m.apply(Op::TakeKick(1));
    assert_eq!(
        m.vms[0].state(1),
        VcpuState::Parking(None),
        "still in its exit"
    );
    m.apply(Op::CpuOn(0, 1));
    assert_eq!(m.vms[0].state(1), VcpuState::Parking(Some(BOOT)));
    m.apply(Op::EndExit(1));
    assert_eq!(m.cpus[1].current, Some(r(0, 1)), "started again");
    m.check();
}
