//! The lifecycle of a VM and its vCPUs: one state per vCPU
//! ([`VcpuState`]) and one per VM ([`VmState`]), changed only by the events
//! below, each of which returns what the glue must do ([`Effects`]: kick
//! CPUs, park the vCPU, reload the VM). The glue holds the VM's lock across
//! an event and applies its effects afterwards; nothing else writes these
//! states.
//!
//! # vCPU states
//!
//! "On a CPU" means being its physical CPU's current vCPU: in the guest, in
//! an exit, or idling in `WFI` on a CPU of its own. Only [`Running`](VcpuState::Running) and
//! [`Parking`](VcpuState::Parking) vCPUs are on a CPU, and only the vCPU's own CPU moves it onto
//! ([`VmLifecycle::claim`]) or off ([`VmLifecycle::leave`]) its CPU.
//!
//! ```text
//!             boot (vCPU 0), cpu_on                 claim
//!  ┌─────┐ ─────────────────────────> ┌──────────────┐ ───────────┐
//!  │ Off │                            │ StartPending │            │
//!  └─────┘                            └──────────────┘            v
//!   ^  ^                                    ^               ┌─────────┐ leave(Yield) ┌───────┐
//!   │  │ leave                        leave │               │         │ ───────────> │ Ready │
//!   │  │      ┌─────────┐ cpu_on ┌────────────────┐         │ Running │ <─────────── └───────┘
//!   │  └───── │ Parking │ ─────> │ Parking(start) │         │         │    claim
//!   │         └─────────┘        └────────────────┘         │         │ leave(Block) ┌────────────┐
//!   │              ^       cpu_off; reset, stop             │         │ ───────────> │ BlockedWfi │
//!   │              └─────────────────────────────────────── │         │ <─────────── └────────────┘
//!   │                                                       └─────────┘  claim, once woken
//!   └── reset, stop: every vCPU not on a CPU (StartPending, Ready, BlockedWfi)
//! ```
//!
//! A blocked vCPU is woken by an interrupt it would take or, while its
//! context is saved, by one of its timers ([`SavedTimers::next_deadline`]:
//! an idle CPU sleeps until the earliest).
//!
//! PSCI sees a projection ([`VcpuState::power`]): `Off` and `Parking` are
//! OFF, `StartPending` and a `Parking` vCPU with a start request are
//! ON_PENDING, the rest ON. The projection is kept in an array of
//! [`VcpuPower`]s ([`VmLifecycle::psci_view`]) so that the PSCI dispatcher
//! can read and change it in place; it changes only `CPU_ON` (OFF →
//! ON_PENDING) and `CPU_OFF` (→ OFF), which the glue reports at once, under
//! the same lock, as [`VmLifecycle::cpu_on`] and [`VmLifecycle::cpu_off`].
//!
//! # VM states
//!
//! ```text
//!   new ─> Resetting ──boot──> Running ──reset; crash with on_crash = restart──┐
//!              ^                  │                                           │
//!              └──────────────────│───────────────────────────────────────────┘
//!                                 └──stop (SYSTEM_OFF, last CPU_OFF, crash)──> Stopped(reason)
//! ```
//!
//! A reset or a stop moves every vCPU on a CPU to `Parking` and kicks its
//! CPU; every other vCPU is `Off` at once. While the VM is not `Running` no
//! vCPU is claimed, so none enters the guest again. When the last vCPU of a
//! resetting VM leaves its CPU, [`VmLifecycle::leave`] says
//! [`Effects::reload`]: the glue rewrites guest memory (nothing runs there
//! any more) and calls [`VmLifecycle::boot`]. `Stopped` is final.
//!
//! # Invariants (checked after every event by the tests)
//!
//! - PSCI's view equals the projection of the states.
//! - A VM that is not `Running` has no vCPU in `StartPending`, `Ready`,
//!   `Running` or `BlockedWfi`: it never runs a guest instruction again
//!   until [`VmLifecycle::boot`], and a `Stopped` one never does.
//! - [`Effects::reload`] is said once per reset, when no vCPU of the VM is
//!   on a CPU.
//!
//! Which vCPU of a time-shared CPU runs is the run queue's choice
//! ([`crate::sched::RunQueue`], round-robin) among those this module lets
//! it claim.
//!
//! Crash loops: an abort injected at the guest's own vector table
//! [`VECTOR_FAULT_LIMIT`] times in a row is a crash
//! ([`VmLifecycle::abort_injected`]). Which VMs' states stop the machine is
//! [`machine_stop`]'s decision.

use stratum_abi::bundle::{OnCrash, StopPolicy};
use stratum_abi::exit;

use crate::psci::{PowerState, VcpuPower};
use crate::vmexit::StopReason;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sim;

/// Most vCPUs per VM.
pub const MAX_VCPUS: usize = stratum_abi::limits::VCPUS_PER_VM as usize;

/// Physical CPUs a [`CpuSet`] can name.
pub const MAX_CPUS: usize = 64;

/// Aborts injected in a row at the guest's own exception vectors after which
/// the VM counts as crashed: its handler cannot even be fetched or run.
pub const VECTOR_FAULT_LIMIT: u32 = 4;

/// Size of an AArch64 vector table (16 entries of 0x80 bytes).
const VECTOR_TABLE_SIZE: u64 = 0x800;

/// Where and with what a vCPU starts: the `CPU_ON` entry point and context
/// ID, or a boot's entry point and DTB address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// Entry point (IPA, MMU off).
    pub entry: u64,
    /// Its `x0`.
    pub x0: u64,
}

/// One vCPU's state. See the module documentation for the diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Powered off, on no CPU. Only `CPU_ON` or a boot starts it.
    Off,
    /// Asked to start (`CPU_ON`, or vCPU 0 at a boot); its CPU has not
    /// run it yet.
    StartPending(Start),
    /// Started and not blocked; waits for its time-shared CPU.
    Ready,
    /// Its CPU's current vCPU.
    Running,
    /// Waits in `WFI` off its time-shared CPU, until an interrupt it would
    /// take is pending or a saved timer fires.
    BlockedWfi,
    /// Still its CPU's current vCPU, but must give the CPU up (it called
    /// `CPU_OFF`, or its VM is being reset or stopped). With a start
    /// request (`CPU_ON` after its `CPU_OFF`), it starts again from there
    /// once off the CPU.
    Parking(Option<Start>),
}

impl VcpuState {
    /// What PSCI reports for a vCPU in this state.
    pub const fn power(self) -> PowerState {
        match self {
            Self::Off | Self::Parking(None) => PowerState::Off,
            Self::StartPending(_) | Self::Parking(Some(_)) => PowerState::OnPending,
            Self::Ready | Self::Running | Self::BlockedWfi => PowerState::On,
        }
    }

    /// Whether the vCPU is its CPU's current vCPU.
    pub const fn on_cpu(self) -> bool {
        matches!(self, Self::Running | Self::Parking(_))
    }
}

/// A VM's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Booted: its vCPUs may run.
    Running,
    /// Being (re)loaded: no vCPU may run; the last one to leave its CPU
    /// triggers the reload, and [`VmLifecycle::boot`] ends this state.
    Resetting,
    /// Stopped for good, for this reason.
    Stopped(StopReason),
}

impl From<VmState> for crate::console::VmState {
    fn from(s: VmState) -> Self {
        match s {
            VmState::Running => Self::Running,
            VmState::Resetting => Self::Restarting,
            VmState::Stopped(StopReason::Crashed) => Self::Crashed,
            VmState::Stopped(_) => Self::Stopped,
        }
    }
}

/// Why a running vCPU gives its CPU up (when it need not park).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leave {
    /// Its slice ended, it yielded (`WFE`), or an interrupt made its CPU
    /// reschedule: it stays runnable.
    Yield,
    /// It executed `WFI` on a time-shared CPU: it waits until woken.
    Block,
}

/// What the CPU that claimed a vCPU must load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A fresh start: reset the vCPU's registers to enter here.
    Start(Start),
    /// Its saved (or still loaded) context.
    Resume,
}

/// A request that concerns the whole VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `SYSTEM_RESET`: reload from the pristine image.
    Reset,
    /// Stop (`SYSTEM_OFF`, the last `CPU_OFF`, a crash).
    Stop(StopReason),
}

/// What a [`Request`] did to the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The VM is now resetting (`crashed`: it crashed and its config says
    /// to restart it).
    Resetting {
        /// Whether a crash caused the reset.
        crashed: bool,
    },
    /// The VM stopped for good.
    Stopped(StopReason),
    /// Nothing: a reset or stop is under way or done already, which wins.
    Unchanged,
}

/// A set of physical CPUs (bit `n`: CPU `n`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSet(u64);

impl CpuSet {
    /// No CPU.
    pub const EMPTY: Self = Self(0);

    /// This set and CPU `cpu`.
    #[must_use]
    pub const fn with(self, cpu: usize) -> Self {
        Self(self.0 | (1 << cpu))
    }

    /// This set without CPU `cpu` (a CPU never kicks itself).
    #[must_use]
    pub const fn without(self, cpu: usize) -> Self {
        if cpu < MAX_CPUS {
            Self(self.0 & !(1 << cpu))
        } else {
            self
        }
    }

    /// Whether CPU `cpu` is in the set.
    pub const fn contains(self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0 & (1 << cpu) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The CPUs in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut rest = self.0;
        core::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let cpu = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(cpu)
        })
    }
}

/// What the glue must do after an event.
#[must_use = "the glue applies every effect"]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Kick these CPUs (a physical SGI), so that they exit their guest or
    /// wake from idling and look at their vCPUs again. The glue leaves out
    /// its own CPU, which looks anyway before it runs a guest.
    pub kick: CpuSet,
    /// The vCPU that left its CPU was parked: drop its live state on the CPU
    /// (timers, list registers, FP ownership) and its interrupts in flight,
    /// as a powered-down CPU loses them.
    pub park: bool,
    /// Every vCPU of the resetting VM is off its CPU: reload the VM now,
    /// then call [`VmLifecycle::boot`].
    pub reload: bool,
}

impl Effects {
    /// Nothing to do.
    pub const NONE: Self = Self {
        kick: CpuSet::EMPTY,
        park: false,
        reload: false,
    };
}

/// A vCPU's saved generic-timer registers: `CNTV_CTL_EL0`, `CNTV_CVAL_EL0`,
/// `CNTP_CTL_EL0`, `CNTP_CVAL_EL0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedTimers {
    /// Virtual timer control.
    pub cntv_ctl: u64,
    /// Virtual timer compare value (virtual count).
    pub cntv_cval: u64,
    /// EL1 physical timer control.
    pub cntp_ctl: u64,
    /// EL1 physical timer compare value (physical count).
    pub cntp_cval: u64,
}

impl SavedTimers {
    /// `CNTx_CTL.ENABLE` set and `IMASK` clear: the timer raises its
    /// interrupt when the compare value is reached.
    const fn armed(ctl: u64) -> bool {
        ctl & 0b11 == 0b01
    }

    /// The physical count at which the earliest enabled, unmasked timer
    /// fires, if any, `cntvoff` being the VM's virtual offset (virtual count
    /// = physical count − `cntvoff`). A virtual compare value beyond the
    /// physical counter's range (`CVAL + CNTVOFF` overflows: a guest's
    /// "never") never fires.
    pub fn next_deadline(&self, cntvoff: u64) -> Option<u64> {
        let virt = if Self::armed(self.cntv_ctl) {
            self.cntv_cval.checked_add(cntvoff)
        } else {
            None
        };
        let phys = Self::armed(self.cntp_ctl).then_some(self.cntp_cval);
        match (virt, phys) {
            (Some(v), Some(p)) => Some(v.min(p)),
            (v, p) => v.or(p),
        }
    }

    /// Whether a timer has fired by physical count `now`.
    pub fn fired(&self, now: u64, cntvoff: u64) -> bool {
        self.next_deadline(cntvoff).is_some_and(|at| now >= at)
    }
}

/// One VM's lifecycle: the VM's state, each vCPU's, the vCPUs' placement
/// and the crash-loop count.
#[derive(Clone, Debug)]
pub struct VmLifecycle {
    vm: VmState,
    vcpus: [VcpuState; MAX_VCPUS],
    /// PSCI's view of `vcpus` (with each vCPU's MPIDR): always
    /// `power[v].state == vcpus[v].power()` between events.
    power: [VcpuPower; MAX_VCPUS],
    /// How many vCPUs the VM has.
    count: usize,
    /// The physical CPU each vCPU runs on.
    pcpu: [u8; MAX_VCPUS],
    /// Restart or stop when the guest crashes.
    on_crash: OnCrash,
    /// Aborts injected in a row at the guest's vector table.
    vector_faults: u32,
}

impl VmLifecycle {
    /// A VM of `mpidrs.len()` vCPUs (at most [`MAX_VCPUS`]: the rest are
    /// ignored), vCPU `v` with MPIDR `mpidrs[v]` placed on physical CPU
    /// `pcpus[v]` (below [`MAX_CPUS`]), not booted yet: it is `Resetting`
    /// until [`Self::boot`].
    pub fn new(mpidrs: &[u64], pcpus: &[u8], on_crash: OnCrash) -> Self {
        let count = mpidrs.len().min(MAX_VCPUS);
        let mut power = [VcpuPower::new(0, PowerState::Off); MAX_VCPUS];
        let mut pcpu = [0; MAX_VCPUS];
        for v in 0..count {
            power[v].mpidr = mpidrs[v];
            pcpu[v] = pcpus.get(v).copied().unwrap_or(0);
            assert!(
                usize::from(pcpu[v]) < MAX_CPUS,
                "placement checked against the machine's CPUs"
            );
        }
        Self {
            vm: VmState::Resetting,
            vcpus: [VcpuState::Off; MAX_VCPUS],
            power,
            count,
            pcpu,
            on_crash,
            vector_faults: 0,
        }
    }

    /// The VM's state.
    pub const fn vm_state(&self) -> VmState {
        self.vm
    }

    /// Whether the VM is running (takes interrupts, doorbells, starts).
    pub fn is_running(&self) -> bool {
        self.vm == VmState::Running
    }

    /// How many vCPUs the VM has.
    pub const fn vcpu_count(&self) -> usize {
        self.count
    }

    /// vCPU `v`'s state (`Off` for one that does not exist).
    pub fn state(&self, v: usize) -> VcpuState {
        self.vcpus[..self.count]
            .get(v)
            .copied()
            .unwrap_or(VcpuState::Off)
    }

    /// The physical CPU vCPU `v` runs on.
    pub fn pcpu(&self, v: usize) -> usize {
        usize::from(self.pcpu[..self.count].get(v).copied().unwrap_or(0))
    }

    /// vCPU `v`'s MPIDR (affinity fields).
    pub fn mpidr(&self, v: usize) -> u64 {
        self.power[..self.count].get(v).map_or(0, |p| p.mpidr)
    }

    /// PSCI's view of the vCPUs, for the exit policy. The dispatcher may
    /// move a vCPU OFF → ON_PENDING (`CPU_ON`) or to OFF (`CPU_OFF`); the
    /// glue reports either at once, under the same lock, through
    /// [`Self::cpu_on`] or [`Self::cpu_off`].
    pub fn psci_view(&mut self) -> &mut [VcpuPower] {
        &mut self.power[..self.count]
    }

    /// Whether vCPU `v`, on its CPU, must leave it instead of entering the
    /// guest again. The exit path asks this after every exit, so it reads
    /// one state.
    #[inline]
    pub fn must_leave(&self, v: usize) -> bool {
        !matches!(self.vcpus.get(v), Some(VcpuState::Running))
    }

    /// Whether vCPU `v` is blocked in `WFI` (in a running VM): its CPU
    /// checks its wake conditions before [`Self::claim`].
    pub fn is_blocked(&self, v: usize) -> bool {
        self.vm == VmState::Running && self.state(v) == VcpuState::BlockedWfi
    }

    /// The physical count at which blocked vCPU `v`'s saved timers wake it
    /// (`None` if it is not blocked, or no timer is armed).
    pub fn wake_deadline(&self, v: usize, timers: &SavedTimers, cntvoff: u64) -> Option<u64> {
        if self.is_blocked(v) {
            timers.next_deadline(cntvoff)
        } else {
            None
        }
    }

    /// The CPU to kick because vCPU `v`'s deliverable interrupts changed:
    /// its CPU, if it was started (a vCPU that is off takes no interrupt).
    #[inline]
    pub fn kick_target(&self, v: usize) -> Option<usize> {
        // vCPUs beyond the VM's count are always `Off`.
        match self.vcpus.get(v)? {
            VcpuState::Off => None,
            _ => Some(usize::from(self.pcpu[v])),
        }
    }

    fn set(&mut self, v: usize, s: VcpuState) {
        self.vcpus[v] = s;
        self.power[v].state = s.power();
    }

    fn any_on_cpu(&self) -> bool {
        self.vcpus[..self.count].iter().any(|s| s.on_cpu())
    }

    /// The VM booted (its image is loaded): it runs, vCPU 0 starts at
    /// `start` (the kernel entry and DTB), the others are off.
    ///
    /// # Panics
    /// If the VM is not resetting or a vCPU is still on a CPU: guest memory
    /// was rewritten under a running vCPU (a glue bug).
    pub fn boot(&mut self, start: Start) -> Effects {
        assert!(
            self.vm == VmState::Resetting && !self.any_on_cpu(),
            "a VM boots only once every vCPU left its CPU"
        );
        self.vm = VmState::Running;
        self.vector_faults = 0;
        for v in 0..self.count {
            self.set(v, VcpuState::Off);
        }
        if self.count == 0 {
            return Effects::NONE;
        }
        self.set(0, VcpuState::StartPending(start));
        Effects {
            kick: CpuSet::EMPTY.with(self.pcpu(0)),
            ..Effects::NONE
        }
    }

    /// vCPU `v`'s CPU wants to run it: `Some` (and `v` is `Running`) if it
    /// may. A blocked vCPU runs only when `woken` (an interrupt it would
    /// take is pending, or a saved timer fired); `woken` is ignored for the
    /// others.
    pub fn claim(&mut self, v: usize, woken: bool) -> Option<Claim> {
        if self.vm != VmState::Running || v >= self.count {
            return None;
        }
        let claim = match self.vcpus[v] {
            VcpuState::StartPending(start) => Claim::Start(start),
            VcpuState::Ready => Claim::Resume,
            VcpuState::BlockedWfi if woken => Claim::Resume,
            _ => return None,
        };
        self.set(v, VcpuState::Running);
        Some(claim)
    }

    /// vCPU `v`'s CPU gives it up (`why`, unless it must park). A parked
    /// vCPU is off, or pending a start if `CPU_ON` asked for one; the last
    /// vCPU to leave a resetting VM triggers the reload.
    ///
    /// # Panics
    /// If `v` is not on a CPU: only the CPU that claimed a vCPU lets it go.
    pub fn leave(&mut self, v: usize, why: Leave) -> Effects {
        let state = self.state(v);
        assert!(state.on_cpu(), "vCPU {v} left a CPU it was not on");
        let (next, park) = match (state, why) {
            (VcpuState::Parking(Some(start)), _) => (VcpuState::StartPending(start), true),
            (VcpuState::Parking(None), _) => (VcpuState::Off, true),
            (_, Leave::Yield) => (VcpuState::Ready, false),
            (_, Leave::Block) => (VcpuState::BlockedWfi, false),
        };
        self.set(v, next);
        Effects {
            park,
            reload: self.vm == VmState::Resetting && !self.any_on_cpu(),
            ..Effects::NONE
        }
    }

    /// PSCI accepted `CPU_ON` for vCPU `target` (it is ON_PENDING in the
    /// PSCI view): it starts at `start` once its CPU takes it. Ignored unless
    /// the VM runs (a reset rebuilds every state) or the vCPU is off.
    pub fn cpu_on(&mut self, target: usize, start: Start) -> Effects {
        let mut fx = Effects::NONE;
        if self.vm == VmState::Running && target < self.count {
            match self.vcpus[target] {
                VcpuState::Off => {
                    self.set(target, VcpuState::StartPending(start));
                    fx.kick = CpuSet::EMPTY.with(self.pcpu(target));
                }
                // Powered off but not off its CPU yet: it starts again once
                // it has left.
                VcpuState::Parking(None) => self.set(target, VcpuState::Parking(Some(start))),
                _ => {}
            }
        }
        self.resync(target);
        fx
    }

    /// vCPU `v` called `CPU_OFF` (PSCI made it OFF): it parks at the end of
    /// this exit.
    pub fn cpu_off(&mut self, v: usize) {
        if self.state(v) == VcpuState::Running {
            self.set(v, VcpuState::Parking(None));
        }
        self.resync(v);
    }

    /// Puts vCPU `v`'s PSCI view back in step with its state.
    fn resync(&mut self, v: usize) {
        if v < self.count {
            self.power[v].state = self.vcpus[v].power();
        }
    }

    /// A reset or stop of the running VM: every vCPU on a CPU parks (its
    /// CPU is kicked), every other one is off.
    fn park_all(&mut self, next: VmState) -> Effects {
        self.vm = next;
        let mut kick = CpuSet::EMPTY;
        for v in 0..self.count {
            if self.vcpus[v].on_cpu() {
                self.set(v, VcpuState::Parking(None));
                kick = kick.with(self.pcpu(v));
            } else {
                self.set(v, VcpuState::Off);
            }
        }
        Effects {
            kick,
            park: false,
            reload: next == VmState::Resetting && !self.any_on_cpu(),
        }
    }

    /// A vCPU of the VM asks to reset or stop it. A crash restarts the VM
    /// instead when its config says `on_crash = "restart"`. Only a running
    /// VM changes: a reset or stop under way wins over later requests.
    pub fn request(&mut self, request: Request) -> (Outcome, Effects) {
        if self.vm != VmState::Running {
            return (Outcome::Unchanged, Effects::NONE);
        }
        match request {
            Request::Reset => (
                Outcome::Resetting { crashed: false },
                self.park_all(VmState::Resetting),
            ),
            Request::Stop(StopReason::Crashed) if self.on_crash == OnCrash::Restart => (
                Outcome::Resetting { crashed: true },
                self.park_all(VmState::Resetting),
            ),
            Request::Stop(reason) => (
                Outcome::Stopped(reason),
                self.park_all(VmState::Stopped(reason)),
            ),
        }
    }

    /// An abort was injected into the guest at `pc`, its vector base being
    /// `vbar`. True when that makes an exception loop (the guest crashed):
    /// the [`VECTOR_FAULT_LIMIT`]th abort in a row at its own vector table,
    /// whose handlers cannot even be fetched. An abort elsewhere ends the
    /// run.
    pub fn abort_injected(&mut self, pc: u64, vbar: u64) -> bool {
        if pc.wrapping_sub(vbar) < VECTOR_TABLE_SIZE {
            self.vector_faults += 1;
        } else {
            self.vector_faults = 0;
        }
        self.vector_faults >= VECTOR_FAULT_LIMIT
    }
}

/// How the machine stops: with this exit status, because every VM stopped
/// (`all_stopped`) or because one did and the policy is
/// [`StopPolicy::Any`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineStop {
    /// The exit status: [`exit::VM_CRASHED`] if a VM crashed, else
    /// [`exit::ALL_VMS_OFF`].
    pub status: u32,
    /// Whether no VM is left running (else the policy stops at the first).
    pub all_stopped: bool,
}

/// Whether the machine stops, given every VM's state in VM order (after
/// one of them stopped): when all have stopped, or with
/// [`StopPolicy::Any`] when any has. A resetting VM counts as running.
/// VM `service`, the service VM, serves the others and never powers off by
/// itself: "all" means all the others (when there are others), though its
/// own stop counts for `Any`.
pub fn machine_stop(
    policy: StopPolicy,
    vms: impl IntoIterator<Item = VmState>,
    service: Option<usize>,
) -> Option<MachineStop> {
    let mut all_stopped = true;
    let mut any_stopped = false;
    let mut any_crashed = false;
    let mut service_running = false;
    let mut others = false;
    for (i, s) in vms.into_iter().enumerate() {
        let is_service = Some(i) == service;
        others |= !is_service;
        match s {
            VmState::Stopped(reason) => {
                any_stopped = true;
                any_crashed |= reason == StopReason::Crashed;
            }
            VmState::Running | VmState::Resetting if is_service => service_running = true,
            VmState::Running | VmState::Resetting => all_stopped = false,
        }
    }
    if !others && service_running {
        all_stopped = false;
    }
    let stop = all_stopped || (policy == StopPolicy::Any && any_stopped);
    stop.then_some(MachineStop {
        status: if any_crashed {
            exit::VM_CRASHED
        } else {
            exit::ALL_VMS_OFF
        },
        all_stopped,
    })
}
