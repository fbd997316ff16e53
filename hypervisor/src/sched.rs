//! The per-CPU run loop: which vCPU each physical CPU runs, and the switch
//! from one to another.
//!
//! Every vCPU is placed on one physical CPU at boot (the host tool decides).
//! A CPU with one vCPU (static partitioning) never switches: the vCPU's EL1
//! registers, timers, GIC CPU-interface state and FP/SIMD stay live in the
//! CPU, its `WFI` idles the CPU (`irq::idle_for_interrupt`), and no
//! preemption timer runs. A CPU with several time-shares them round-robin
//! ([`stratum_core::sched::RunQueue`]): the EL2 physical timer (`CNTHP`)
//! ends each slice, and a vCPU that executes `WFI` gives the CPU up at once
//! and becomes runnable again when an interrupt is pending for it (its
//! virtual GIC, or its saved timers' deadlines, which `CNTHP` also wakes
//! the idle CPU for).
//!
//! A switch saves the outgoing vCPU's EL1 registers, timers, active
//! hardware-linked interrupts and virtual CPU-interface state into its
//! [`crate::vm::VcpuContext`], loads the incoming one's, and points
//! `VTTBR_EL2` (VMID-tagged: no TLB flush) and `TPIDR_EL2` at it. FP/SIMD
//! moves lazily: `CPTR_EL2.TFP` traps the first FP instruction of a vCPU
//! whose registers are not loaded ([`fp_trap`]), except that a vCPU that
//! trapped gets them with the switch for a while ([`FpUse`], core's
//! decision): a guest that uses FP all the time pays about 45 instructions
//! per switch instead of an exit.
//!
//! Which vCPU may run is the lifecycle's decision
//! ([`stratum_core::lifecycle`]): a CPU *claims* a vCPU before it runs it
//! and *leaves* it when it gives the CPU up, each under the vCPU's VM lock,
//! and applies what the event returns: a parked vCPU's live state is
//! dropped ([`discard`]), a VM whose last vCPU just left its CPU during a
//! reset is reloaded here ([`reload`]), other CPUs are kicked.
//!
//! Locking: this CPU's own state ([`CpuState`]) is only touched by this CPU
//! (and by the boot CPU before the others start), and never held together
//! with another lock; a VM's state is behind its lock in [`system`] (the
//! lock order is written there).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use stratum_arch::debugregs;
use stratum_arch::el2::cptr::{TFP as CPTR_TFP, TZ_TSM as CPTR_TZ_TSM};
use stratum_arch::{barrier, fpsimd, sysreg};
use stratum_core::debugpmu::{self, HwOwners, Owns};
use stratum_core::lifecycle::{Claim, Leave};
use stratum_core::sched::{FpRegs, RunQueue, VcpuRef};

use crate::sync::SpinLock;
use crate::vm::Vm;
use crate::{console, irq, percpu, pv, system};
use stratum_arch::head::{self, MAX_CPUS};

/// What this CPU runs (besides [`percpu`]'s records).
struct CpuState {
    /// The vCPUs placed here.
    queue: RunQueue,
    /// Whose FP/SIMD registers are in the registers, and how each vCPU
    /// of the queue gets its own.
    fp: FpRegs,
    /// Whose breakpoint/watchpoint file and PMU the CPU holds.
    owners: HwOwners,
}

static CPUS: [SpinLock<CpuState>; MAX_CPUS] = [const {
    SpinLock::new(CpuState {
        queue: RunQueue::new(),
        fp: FpRegs::new(),
        owners: HwOwners::new(),
    })
}; MAX_CPUS];

/// The time slice on time-shared CPUs, in counter ticks.
static SLICE_TICKS: AtomicU64 = AtomicU64::new(0);
/// Whether the CPUs have pointer-authentication key registers to switch.
static PAUTH: AtomicBool = AtomicBool::new(false);
/// `CPTR_EL2` for a vCPU on a CPU of its own (FP, SVE, SME untrapped where
/// present); set at boot.
static CPTR_PINNED: AtomicU64 = AtomicU64::new(0);
/// `CPTR_EL2` for time-shared CPUs: SVE and SME trap (their larger register
/// files are not switched; such guests must be pinned).
static CPTR_SHARED: AtomicU64 = AtomicU64::new(0);

/// Boot-time settings: the slice, whether to switch PAuth keys, and the
/// `CPTR_EL2` value for CPUs that do not time-share.
pub fn configure(slice_ticks: u64, pauth: bool, cptr: u64) {
    SLICE_TICKS.store(slice_ticks.max(1), Ordering::Relaxed);
    PAUTH.store(pauth, Ordering::Relaxed);
    CPTR_PINNED.store(cptr, Ordering::Relaxed);
    CPTR_SHARED.store(cptr | CPTR_TZ_TSM, Ordering::Relaxed);
}

/// Places vCPU `v` on physical CPU `cpu` (boot CPU, before any guest runs).
/// `false` when that CPU's queue is full.
pub fn place(v: VcpuRef, cpu: usize) -> bool {
    CPUS.get(cpu).is_some_and(|c| c.lock().queue.push(v))
}

/// Whether `cpu` time-shares several vCPUs.
pub fn is_shared(cpu: usize) -> bool {
    CPUS[cpu].lock().queue.is_shared()
}

/// The vCPU `cpu` runs (the one whose exit is being handled).
pub fn current(cpu: usize) -> VcpuRef {
    percpu::current(cpu).expect("a guest exit on a CPU with no vCPU")
}

/// Forgets `v`'s live state on `cpu` (it parked: powered off, or its VM
/// restarts or stopped): its timers stop, its interrupts in flight are
/// dropped, and its FP registers will not be saved.
fn discard(cpu: usize, v: VcpuRef) {
    let forgot = {
        let mut st = CPUS[cpu].lock();
        st.fp.forget(v);
        let slot = st.queue.entries().iter().position(|&e| e == v);
        st.owners.forget(v, slot)
    };
    // Its breakpoints, watchpoints and counters stop applying.
    if forgot.debug.park {
        debugregs::quiesce_debug();
    }
    if forgot.pmu.park {
        debugregs::quiesce_pmu();
    }
    if percpu::loaded(cpu) == Some(v) {
        percpu::set_loaded(cpu, None);
        irq::reset_cpu();
    }
}

/// Gives `cpu`'s current vCPU (if any) up — its slice ended, it yielded,
/// or it must park — then picks a vCPU, switches to it and enters it;
/// idles while none may run. Never returns (the guest's next exit starts
/// on a fresh stack).
pub fn schedule(cpu: usize) -> ! {
    run_next(cpu, Leave::Yield)
}

/// `cpu`'s current vCPU executed `WFI` on a time-shared CPU: it waits,
/// blocked, until an interrupt or a timer wakes it, and the CPU runs
/// another one (or idles). Never returns.
pub fn block(cpu: usize) -> ! {
    run_next(cpu, Leave::Block)
}

fn run_next(cpu: usize, why: Leave) -> ! {
    if let Some(cur) = percpu::take_current(cpu) {
        leave(cpu, cur, why);
    }
    loop {
        // Only this CPU reads or changes its queue, but it never holds its
        // state's lock while it takes a VM's: it looks at one candidate at
        // a time.
        let loaded = percpu::loaded(cpu);
        let mut k = 0;
        loop {
            // (A statement of its own: the guard must not live on into
            // `claim`, which takes a VM's lock.)
            let candidate = CPUS[cpu].lock().queue.candidate(k);
            let Some(r) = candidate else { break };
            if let Some(claimed) = claim(r, loaded) {
                CPUS[cpu].lock().queue.choose(k);
                switch_to(cpu, r, claimed);
                crate::telemetry::exit_left();
                // SAFETY: `switch_to` made TPIDR_EL2 name `r`'s frame, loaded
                // its ELR/SPSR_EL2 and activated its VM's stage 2 on this CPU.
                unsafe { stratum_arch::vectors::enter_guest(head::stack_top(cpu)) }
            }
            k += 1;
        }
        idle(cpu, loaded);
    }
}

/// `me` leaves `cpu` (`why`, unless the lifecycle parks it), and the
/// event's effects are applied.
fn leave(cpu: usize, me: VcpuRef, why: Leave) {
    let (id, v) = (usize::from(me.vm), usize::from(me.vcpu));
    let fx = system::with_vm(id, |vm| {
        let fx = vm.life.leave(v, why);
        if fx.park {
            // Like a powered-down CPU, the vCPU loses its interrupts in
            // flight (its list registers were folded when its exit began).
            vm.vgic.reset_vcpu(v);
        }
        fx
    });
    if fx.park {
        discard(cpu, me);
    }
    irq::kick_cpus(fx.kick, cpu);
    if fx.reload {
        reload(cpu, id);
    }
}

/// Reloads VM `id` from its pristine image (the lifecycle said so: the
/// last of its vCPUs just left its CPU, so nothing runs in its memory) and
/// kicks the CPU of its boot vCPU.
fn reload(cpu: usize, id: usize) {
    irq::release_passthrough(id);
    let fx = system::with_vm(id, |vm| {
        let fx = vm
            .load()
            .unwrap_or_else(|e| panic!("VM reload failed after a successful first load: {e}"));
        console::set_state(id, vm.life.vm_state().into());
        fx
    });
    // Its vsock connections died with the old boot.
    pv::vm_reset(id, cpu, false);
    irq::kick_cpus(fx.kick, cpu);
}

/// Claims `r` for its CPU if it may run now (under its VM's lock), and
/// resets its registers for a fresh start. A blocked vCPU is woken by an
/// interrupt it would take, or, if its context is saved, by one of its
/// timers having fired (a loaded vCPU's own timer raises its interrupt).
fn claim(r: VcpuRef, loaded: Option<VcpuRef>) -> Option<Claim> {
    let v = usize::from(r.vcpu);
    system::with_vm(r.vm.into(), |vm| {
        let woken = vm.life.is_blocked(v) && {
            // Device lines move with device accesses, sampled then, and
            // with console input, sampled here if there is any.
            if console::has_input(vm.id) {
                irq::sample_lines(vm);
            }
            let pmr = if loaded == Some(r) {
                irq::live_guest_pmr()
            } else {
                irq::pmr_of(vm, vm.ctx[v].vmcr)
            };
            vm.vgic.has_pending(v, pmr)
                || (loaded != Some(r)
                    && vm.ctx[v]
                        .timers
                        .fired(stratum_arch::timer::counter(), vm.cntvoff))
        };
        let claim = vm.life.claim(v, woken)?;
        if let Claim::Start(start) = claim {
            vm.reset_vcpu(v, start);
        }
        Some(claim)
    })
}

/// Nothing to run: waits for an interrupt (a kick, a device, a loaded
/// timer), with `CNTHP` set for the earliest saved timer of a blocked vCPU.
fn idle(cpu: usize, loaded: Option<VcpuRef>) {
    let queue = CPUS[cpu].lock().queue;
    let deadline = queue
        .entries()
        .iter()
        .filter(|&&r| Some(r) != loaded)
        .filter_map(|&r| {
            let v = usize::from(r.vcpu);
            system::with_vm(r.vm.into(), |vm| {
                vm.life.wake_deadline(v, &vm.ctx[v].timers, vm.cntvoff)
            })
        })
        .min();
    match deadline {
        Some(at) => irq::arm_preemption(at),
        None => irq::disarm_preemption(),
    }
    crate::telemetry::idling(barrier::wfi);
    irq::service(cpu);
}

/// Makes `next` this CPU's vCPU (`claim`: how it was claimed): saves the
/// loaded context if it is another's, loads `next`'s (fresh when it was
/// just started), with its FP/SIMD registers if [`FpUse`] says so, and
/// prepares its entry.
fn switch_to(cpu: usize, next: VcpuRef, claim: Claim) {
    let pauth = PAUTH.load(Ordering::Relaxed);
    let loaded = percpu::loaded(cpu);
    let v = usize::from(next.vcpu);
    let fresh = matches!(claim, Claim::Start(_));
    let switching = loaded != Some(next) || fresh;
    // This CPU's scheduling state, in one hold: who owns the FP registers
    // before and after the switch, and whether `next` gets them now.
    let (fp, shared, files) = {
        let mut st = CPUS[cpu].lock();
        let slot = st.queue.current_index().unwrap_or(0);
        (
            st.fp.switch_to(next, slot, fresh, switching),
            st.queue.is_shared(),
            st.owners.switch(loaded, next, slot),
        )
    };
    let (old_fp_owner, eager_fp) = (fp.previous, fp.eager);
    let base = if shared {
        CPTR_SHARED.load(Ordering::Relaxed)
    } else {
        CPTR_PINNED.load(Ordering::Relaxed)
    };
    let cptr = if fp.live { base } else { base | CPTR_TFP };
    if eager_fp {
        // SAFETY: CPTR_EL2 only decides which guest FP/SIMD/SVE/SME accesses
        // trap; EL2 is soft-float and touches the FP registers only in the
        // save and restore below, which need them untrapped.
        unsafe { sysreg::set_cptr_el2(cptr) };
        barrier::isb();
    }
    if let Some(old) = loaded.filter(|&o| o != next) {
        let save_fp = eager_fp && old_fp_owner == Some(old);
        system::with_vm(old.vm.into(), |vm| {
            let o = usize::from(old.vcpu);
            save(vm, o, pauth);
            if save_fp {
                fpsimd::save(&mut vm.ctx[o].fp);
            }
        });
    }
    if eager_fp && let Some(owner) = old_fp_owner.filter(|&o| Some(o) != loaded && o != next) {
        // A third vCPU's registers are live (it ran before the loaded one,
        // which never touched FP): saved before `next`'s replace them.
        system::with_vm(owner.vm.into(), |vm| {
            fpsimd::save(&mut vm.ctx[usize::from(owner.vcpu)].fp);
        });
    }
    if let Some(files) = &files {
        switch_files(cpu, loaded, next, files);
    }
    system::with_vm(next.vm.into(), |vm| {
        if switching {
            restore(vm, v, pauth);
        }
        if eager_fp {
            fpsimd::restore(&vm.ctx[v].fp);
        }
        vm.activate(v);
        if core::mem::take(&mut vm.needs_tlb_flush) {
            vm.flush_tlb();
        }
        irq::fill_on(vm, v, cpu);
    });
    if !eager_fp {
        // SAFETY: as above; FP traps unless `next`'s registers are live.
        unsafe { sysreg::set_cptr_el2(cptr) };
    }
    if shared {
        irq::arm_preemption(
            stratum_arch::timer::counter().saturating_add(SLICE_TICKS.load(Ordering::Relaxed)),
        );
    } else {
        irq::disarm_preemption();
    }
    percpu::set_loaded(cpu, Some(next));
    percpu::set_current(cpu, next);
    barrier::isb();
}

/// The debug and PMU limits of the CPUs.
fn debug_limits() -> debugpmu::Limits {
    system::settings()
        .expect("settings are recorded before any guest runs")
        .debug_limits
}

/// Moves the debug and PMU files as the switch from `out` to `next`
/// says: the leaving owner's are parked (its breakpoints and counters stop
/// applying), a user's taken over from their owner, a returning owner's
/// taken up again. Off the common path: only CPUs where some vCPU used
/// them come here.
#[cold]
fn switch_files(cpu: usize, out: Option<VcpuRef>, next: VcpuRef, files: &debugpmu::Switch) {
    let limits = debug_limits();
    if let Some(o) = out.filter(|_| files.debug.park || files.pmu.park) {
        let (mdscr, pmcr) = system::with_vm(o.vm.into(), |vm| {
            let ctx = &mut vm.ctx[usize::from(o.vcpu)];
            (
                files.debug.park.then(|| ctx.debug.park()),
                files.pmu.park.then(|| ctx.pmu.stop()),
            )
        });
        // Whether the parked files must come back with their vCPU.
        let mut st = CPUS[cpu].lock();
        if let Some(slot) = st.queue.entries().iter().position(|&e| e == o) {
            if let Some(mdscr) = mdscr {
                st.owners
                    .parked(Owns::Debug, slot, debugpmu::debug_armed(mdscr));
            }
            if let Some(pmcr) = pmcr {
                st.owners.parked(Owns::Pmu, slot, debugpmu::pmu_armed(pmcr));
            }
        }
    }
    if let Some(o) = files.debug.save {
        system::with_vm(o.vm.into(), |vm| {
            vm.ctx[usize::from(o.vcpu)].debug.save(&limits)
        });
    }
    if let Some(o) = files.pmu.save {
        system::with_vm(o.vm.into(), |vm| {
            vm.ctx[usize::from(o.vcpu)].pmu.save(&limits)
        });
    }
    system::with_vm(next.vm.into(), |vm| {
        let ctx = &mut vm.ctx[usize::from(next.vcpu)];
        if files.debug.load {
            ctx.debug.load(&limits);
        }
        if files.pmu.load {
            ctx.pmu.load(&limits);
        }
        if files.debug.unpark {
            ctx.debug.unpark();
        }
        if files.pmu.unpark {
            ctx.pmu.start();
        }
    });
}

/// Saves vCPU `v`'s live context (it is this CPU's loaded vCPU) and
/// quiesces its timers.
fn save(vm: &mut Vm, v: usize, pauth: bool) {
    let ctx = &mut vm.ctx[v];
    ctx.save_live(pauth);
    irq::save_cpu_interface(ctx);
}

/// Loads vCPU `v`'s saved context into this CPU.
fn restore(vm: &mut Vm, v: usize, pauth: bool) {
    let ctx = &vm.ctx[v];
    ctx.restore_live(pauth, vm.cntvoff);
    irq::restore_cpu_interface(ctx);
}

/// A trapped FP/SIMD access by `cpu`'s current vCPU: saves the owner's FP
/// registers, loads the current vCPU's and stops trapping.
pub fn fp_trap(cpu: usize) {
    let me = current(cpu);
    let cptr = sysreg::cptr_el2() & !CPTR_TFP;
    // SAFETY: as in `switch_to`; EL2 touches the FP registers only in the
    // save and restore below, with FP untrapped for them.
    unsafe { sysreg::set_cptr_el2(cptr) };
    barrier::isb();
    let (previous, had_them) = {
        let mut st = CPUS[cpu].lock();
        let had = st.fp.owner() == Some(me);
        let slot = st.queue.current_index().unwrap_or(0);
        (st.fp.trapped(me, slot), had)
    };
    if let Some(o) = previous {
        system::with_vm(o.vm.into(), |vm| {
            fpsimd::save(&mut vm.ctx[usize::from(o.vcpu)].fp)
        });
    }
    if !had_them {
        system::with_vm(me.vm.into(), |vm| {
            fpsimd::restore(&vm.ctx[usize::from(me.vcpu)].fp)
        });
    }
}

/// A trapped access to a debug or PMU register by `cpu`'s current vCPU
/// (`read`: `MRS`; `rt`: the transfer register): makes it own the CPU's
/// file the register lives in (saving the previous owner's, loading its
/// own), then performs or emulates the access as core says. The caller
/// steps past the instruction.
pub fn debug_pmu(cpu: usize, reg: debugpmu::Reg, read: bool, rt: u8) {
    let me = current(cpu);
    let limits = debug_limits();
    let owns = reg.owns();
    let takeover = {
        let mut st = CPUS[cpu].lock();
        let slot = st.queue.current_index().unwrap_or(0);
        st.owners.claim(owns, me, slot)
    };
    if let Some(o) = takeover.save {
        system::with_vm(o.vm.into(), |vm| {
            let ctx = &mut vm.ctx[usize::from(o.vcpu)];
            match owns {
                Owns::Debug => ctx.debug.save(&limits),
                Owns::Pmu => ctx.pmu.save(&limits),
                Owns::Nothing => {}
            }
        });
    }
    system::with_vm(me.vm.into(), |vm| {
        let v = usize::from(me.vcpu);
        if takeover.load {
            match owns {
                Owns::Debug => vm.ctx[v].debug.load(&limits),
                Owns::Pmu => vm.ctx[v].pmu.load(&limits),
                Owns::Nothing => {}
            }
        }
        let rt = usize::from(rt);
        let value = vm.frames[v].x.get(rt).copied().unwrap_or(0);
        let shadow = &mut vm.ctx[v].debug_shadow;
        let got = debugpmu::emulate(reg, read, value, &limits, shadow, &mut debugregs::Live);
        if read && let Some(x) = vm.frames[v].x.get_mut(rt) {
            *x = got;
        }
    });
}
