//! Interrupts at EL2: the physical GIC, forwarding physical interrupts into
//! the running VM's virtual GIC, and the list registers.
//!
//! Every physical interrupt is routed to EL2 (`HCR_EL2.IMO/FMO`). The
//! physical CPU interface runs with split priority drop and deactivation
//! (EOImode = 1), which is what makes hardware-linked injection work: the
//! virtual timer's PPI is acknowledged and priority-dropped here, then
//! injected with the list register's HW bit, so the guest's own deactivation
//! deactivates the physical interrupt.
//!
//! The list registers are a cache of the model, kept incrementally (ADR
//! 0009) by [`stratum_vgic::hw::HwLrs`]: folded after every exit, refilled
//! before every entry, parked when a vCPU leaves its CPU ([`park_lrs`]).
//! This module gives it the CPU's virtual interface ([`Vif`]).
//!
//! A physical interrupt that arrives while a guest runs is handled in one
//! hold of the VM's lock ([`guest_irq`]): fold, acknowledge, forward, refill.
//!
//! State is per physical CPU. When the model changes what a vCPU on another
//! CPU should see (an SGI, an SPI, a doorbell), that CPU is kicked with a
//! physical SGI ([`KICK_SGI`]) so it exits and refills its LRs, or wakes
//! from idling in `wfi` and reschedules. The guest timers' interrupts belong
//! to the vCPU whose context is loaded on the CPU ([`percpu::loaded`]); the
//! EL2 physical timer ([`PREEMPT_INTID`]) ends time slices and wakes an idle
//! CPU at a saved timer's deadline.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use stratum_arch::gic::{GicV2, GicV3, HcrFlags, PhysGic, SgiTarget};
use stratum_arch::{barrier, sysreg};
use stratum_core::guest_dt::virt_map;
use stratum_core::lifecycle::CpuSet;
use stratum_core::platform::{GicInfo, GicVersion};
use stratum_core::sched::VcpuRef;
use stratum_core::stats::{ExitStats, Reason};
use stratum_vgic::hw::{HwLrs, LrFormat, VirtualInterface};

use crate::sync::SpinLock;
use crate::vm::Vm;
use crate::vm::{VMS, VcpuContext, VcpuTag, VmSlot};
use crate::{console, log, percpu, smp, system};
use stratum_arch::head::MAX_CPUS;

use stratum_core::hostirq::{ClassTally, HostIntids, MAINTENANCE_INTID, Route, Routes, classify};
pub use stratum_core::hostirq::{KICK_SGI, PREEMPT_INTID, PTIMER_INTID, VTIMER_INTID};
/// Priority of the interrupts EL2 itself takes (all equal: EL2 never nests).
const EL2_PRIORITY: u8 = 0x80;

struct Irqs {
    /// The CPU this state belongs to.
    cpu: usize,
    gic: PhysGic,
    /// The list registers, a cache of the running vCPU's model.
    lrs: HwLrs,
    /// The maintenance and console interrupts.
    host: HostIntids,
}

/// This CPU's virtual interface, as the list-register cache drives it.
struct Vif<'a>(&'a PhysGic);

impl VirtualInterface for Vif<'_> {
    fn elrsr(&self) -> u64 {
        self.0.elrsr()
    }

    fn read_lr(&self, n: usize) -> u64 {
        self.0.read_lr(n)
    }

    fn write_lr(&mut self, n: usize, raw: u64) {
        self.0.write_lr(n, raw);
    }

    fn set_underflow(&mut self, on: bool) {
        self.0.set_hcr(HcrFlags {
            enable: true,
            underflow: on,
            ..HcrFlags::default()
        });
    }

    fn deactivate_physical(&mut self, intid: u32) {
        let _ = self.0.clear_active(intid);
    }
}

/// Forward hardware interrupts on GICv2 with an EOI maintenance request
/// instead of the HW link (the boot bundle's `FLAG_QEMU_GIC`): QEMU's
/// GICv2 model deactivates the physical interrupt on the guest's EOI
/// through a linked list register but does not re-signal it if it became
/// pending meanwhile (it recomputes only the virtual interface), so a
/// timer that fired again before the guest's EOI would stay silent while
/// the guest spins. With the request, the EOI exits to EL2, whose fold
/// deactivates the physical interrupt itself (a distributor write, which
/// QEMU does re-evaluate). One more exit per forwarded interrupt, on
/// QEMU's GICv2 only.
static FORWARD_BY_EOI: AtomicBool = AtomicBool::new(false);

/// Sets [`FORWARD_BY_EOI`] (the boot CPU, before any guest runs).
pub fn set_forward_by_eoi(on: bool) {
    FORWARD_BY_EOI.store(on, Ordering::Relaxed);
}

/// The list registers each CPU wrote valid and has not seen freed (bit
/// `n`: LR `n`), which are the ones to fold: [`HwLrs::in_use`] mirrored
/// by that CPU after each change, for the exit path to read without the
/// interrupt state's lock.
static LRS_IN_USE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Most physical interrupts acknowledged per exit.
const MAX_ACKS: usize = 16;
/// Most passthrough SPIs acknowledged per exit (the next ones stay pending
/// and are taken at the next exit).
const MAX_PASSTHROUGH_ACKS: usize = 4;

static IRQS: [SpinLock<Option<Irqs>>; MAX_CPUS] = [const { SpinLock::new(None) }; MAX_CPUS];
/// How each CPU is named as an SGI target (set once at its bring-up).
static KICK_TARGETS: [SpinLock<Option<SgiTarget>>; MAX_CPUS] =
    [const { SpinLock::new(None) }; MAX_CPUS];
/// The passthrough SPIs (written by the boot CPU before the others start).
static ROUTES: SpinLock<Routes<64>> = SpinLock::new(Routes::new());

/// Records that physical `intid` belongs to VM `vm`, routed to `cpu`
/// (boot CPU, before the other CPUs start).
pub fn add_passthrough(intid: u32, vm: usize, cpu: usize) {
    if let Err(e) = ROUTES.lock().add(Route { intid, vm, cpu }) {
        log!("passthrough INTID {intid} is not forwarded: {e}");
    }
}

/// Enables, routed to this CPU, the passthrough SPIs that belong here.
pub fn enable_passthrough(cpu: usize) {
    let routes = *ROUTES.lock();
    for r in routes.all().iter().filter(|r| r.cpu == cpu) {
        with(|irqs| {
            if let Err(e) = irqs.gic.enable_spi(r.intid, EL2_PRIORITY, true) {
                log!("passthrough INTID {} cannot be enabled: {e}", r.intid);
            }
        });
    }
}

/// The VM a passthrough SPI belongs to.
fn route_of(intid: u32) -> Option<usize> {
    ROUTES.lock().vm_of(intid)
}

/// Deactivates every passthrough SPI of VM `vm` that its guest left active
/// (the VM restarts or stopped: the model that would have deactivated it
/// is gone).
pub fn release_passthrough(vm: usize) {
    let routes = *ROUTES.lock();
    for r in routes.all().iter().filter(|r| r.vm == vm) {
        with(|irqs| {
            let _ = irqs.gic.clear_active(r.intid);
        });
    }
}

/// Whether console input raises an interrupt (set by the boot CPU).
static CONSOLE_IRQ: AtomicBool = AtomicBool::new(false);

/// Brings up the physical GIC for CPU `cpu` and enables the interrupts EL2
/// takes there: the maintenance interrupt, the kick SGI, the guest timers
/// (forwarded hardware-linked) and, on the boot CPU, the console's input.
pub fn init(
    cpu: usize,
    g: &GicInfo,
    console_intid: Option<u32>,
) -> Result<(), stratum_arch::gic::GicError> {
    let mpidr = sysreg::mpidr_el1();
    let gic = match g.version {
        GicVersion::V3 => {
            let redist = g.redistributors().first().copied();
            let (base, size) = redist.map_or((0, 0), |r| (r.base.0 as usize, r.size as usize));
            // SAFETY: the host DT names these frames; EL2 maps the first GiB
            // as device memory; each CPU brings up its own redistributor
            // once, and CPUs come up one at a time.
            PhysGic::V3(unsafe { GicV3::init_v3(g.dist.base.0 as usize, base, size, mpidr)? })
        }
        GicVersion::V2 => {
            let cpu_if = g.cpu_interface().map_or(0, |r| r.base.0 as usize);
            let hyp = g.hyp.map_or(0, |r| r.base.0 as usize);
            // SAFETY: as above, for the GICv2 distributor, CPU interface and
            // virtual interface control frames (banked per CPU).
            PhysGic::V2(unsafe { GicV2::init_v2(g.dist.base.0 as usize, cpu_if, hyp)? })
        }
    };
    let maintenance = g.maintenance_irq.map_or(MAINTENANCE_INTID, |i| i.intid());
    gic.enable_ppi(maintenance, EL2_PRIORITY)?;
    gic.enable_ppi(KICK_SGI, EL2_PRIORITY)?;
    gic.enable_ppi(VTIMER_INTID, EL2_PRIORITY)?;
    gic.enable_ppi(PTIMER_INTID, EL2_PRIORITY)?;
    gic.enable_ppi(PREEMPT_INTID, EL2_PRIORITY)?;
    let console_intid =
        console_intid.filter(|&intid| gic.enable_spi(intid, EL2_PRIORITY, true).is_ok());
    if console_intid.is_some() {
        console::enable_input_interrupt();
        CONSOLE_IRQ.store(true, Ordering::Release);
    }
    let by_eoi = FORWARD_BY_EOI.load(Ordering::Relaxed);
    let lrs = HwLrs::new(LrFormat::new(g.version, by_eoi), gic.lr_count());
    gic.set_hcr(HcrFlags {
        enable: true,
        ..HcrFlags::default()
    });
    *KICK_TARGETS[cpu].lock() = Some(gic.sgi_target(mpidr));
    *IRQS[cpu].lock() = Some(Irqs {
        gic,
        lrs,
        host: HostIntids {
            maintenance,
            console: console_intid,
        },
        cpu,
    });
    Ok(())
}

/// Whether console input raises an interrupt (else the exit path polls).
pub fn console_interrupts() -> bool {
    CONSOLE_IRQ.load(Ordering::Acquire)
}

/// List registers the hardware has (for the banner).
pub fn lr_count() -> usize {
    IRQS[smp::current_cpu()]
        .lock()
        .as_ref()
        .map_or(0, |i| i.lrs.count())
}

/// Runs `f` on this CPU's interrupt state.
fn with<R>(f: impl FnOnce(&mut Irqs) -> R) -> R {
    with_cpu(smp::current_cpu(), f)
}

/// [`with`] for a caller that knows it runs on CPU `cpu`.
fn with_cpu<R>(cpu: usize, f: impl FnOnce(&mut Irqs) -> R) -> R {
    let mut guard = IRQS[cpu].lock();
    f(guard
        .as_mut()
        .expect("irq::init ran on this CPU before any guest"))
}

/// Makes CPU `target` exit its guest (or wake from idling) to look at its
/// vCPU's interrupts.
pub fn kick(target: usize) {
    let Some(to) = KICK_TARGETS.get(target).and_then(|t| *t.lock()) else {
        return;
    };
    with(|irqs| {
        if let Err(e) = irqs.gic.send_sgi(KICK_SGI, to) {
            log!("cannot kick CPU {target}: {e}");
        }
    });
}

/// Kicks the CPUs of `set` but `cpu` (the caller's own, which looks at its
/// vCPUs anyway before it runs a guest).
pub fn kick_cpus(set: CpuSet, cpu: usize) {
    for target in set.without(cpu).iter() {
        kick(target);
    }
}

impl Irqs {
    /// Mirrors the LRs in use into [`LRS_IN_USE`].
    fn publish(&self) {
        LRS_IN_USE[self.cpu].store(self.lrs.in_use(), Ordering::Relaxed);
    }

    /// After an exit of vCPU `v`: [`HwLrs::fold`], if any LR is in use.
    fn fold(&mut self, vm: &mut Vm, v: usize) {
        if self.lrs.in_use() != 0 {
            self.lrs.fold(&mut Vif(&self.gic), &mut vm.vgic, v);
            self.publish();
        }
    }

    /// Before vCPU `v` runs: [`HwLrs::refill`].
    fn refill(&mut self, vm: &mut Vm, v: usize) {
        self.lrs.refill(&mut Vif(&self.gic), &mut vm.vgic, v);
        self.publish();
    }

    /// [`Irqs::refill`] unless nothing changed for vCPU `v`.
    fn refill_if_changed(&mut self, vm: &mut Vm, v: usize) {
        if self.lrs.refill_needed(&vm.vgic, v) {
            self.refill(vm, v);
        }
    }

    /// vCPU `v` leaves: [`HwLrs::park`].
    fn park(&mut self, vm: &mut Vm, v: usize) {
        self.lrs.park(&mut Vif(&self.gic), &mut vm.vgic, v);
        self.publish();
    }

    /// Turns the underflow maintenance request off.
    fn underflow_off(&mut self) {
        self.lrs.set_underflow(&mut Vif(&self.gic), false);
    }

    /// Acknowledges the pending physical interrupts (at most [`MAX_ACKS`]:
    /// a level interrupt whose source stays asserted must not keep EL2
    /// here), handles EL2's own at once and returns the ones to forward.
    fn ack_all(&mut self, out: &mut Acks) {
        for _ in 0..MAX_ACKS {
            let Some(irq) = self.gic.ack() else { break };
            self.gic.priority_drop(irq);
            if !self.take(irq, out) {
                break;
            }
        }
    }

    /// The start of a physical-interrupt exit of vCPU `v` of `vm`, loaded
    /// here (`stats`: its counters): folds its list registers
    /// ([`Irqs::fold`], with the timer lines' check) and acknowledges one
    /// interrupt. The timer path, every guest's tick, ends here
    /// ([`Tick::Done`]) when that interrupt is a guest timer's and nothing
    /// else waits (no console input, no reason to park; in `WFI`, only one
    /// the vCPU would take; ADR 0021):
    /// - its previous tick's LR came back completed and was the only one
    ///   in use: taken back and the new tick placed in one step
    ///   ([`HwLrs::refire`]), no fold;
    /// - else, after the fold, placed straight into a free LR
    ///   ([`HwLrs::forward_direct`]).
    ///
    /// A kick for an IPI ends here too, when the vCPU's one fresh SGI (or
    /// PPI) goes straight into a free LR ([`HwLrs::place_direct`]).
    ///
    /// Otherwise the LRs are folded and what was acknowledged is handed
    /// back for the general way.
    #[inline(always)]
    fn fold_and_tick(&mut self, vm: &mut Vm, v: usize, waiting: bool, stats: &ExitStats) -> Tick {
        let quick = !console::has_input(vm.id) && !vm.must_park(v);
        let deferred = quick && self.lrs.one_completed(&Vif(&self.gic));
        if !deferred {
            self.fold_checked(vm, v);
            if !quick {
                return Tick::General(None);
            }
        }
        let Some(irq) = self.gic.ack() else {
            if deferred {
                self.fold_checked(vm, v);
            }
            return Tick::General(None);
        };
        self.gic.priority_drop(irq);
        let intid = irq.intid();
        if intid == VTIMER_INTID || intid == PTIMER_INTID {
            let pmr = self.placement_pmr(waiting);
            // A refire leaves only this timer linked, and its line is high
            // (it just fired): no timer line to check.
            // The LRs in use are mirrored for the lock-free fold check
            // (`LRS_IN_USE`): after a refire they changed only if the old
            // LR was not LR 0; after a fold and a direct forward always
            // publish (the fold published what it freed).
            let in_use = self.lrs.in_use();
            let placed = if deferred
                && self
                    .lrs
                    .refire(&mut Vif(&self.gic), &mut vm.vgic, v, intid, pmr)
            {
                if self.lrs.in_use() != in_use {
                    self.publish();
                }
                true
            } else {
                if deferred {
                    self.fold_checked(vm, v);
                }
                let placed =
                    self.lrs
                        .forward_direct(&mut Vif(&self.gic), &mut vm.vgic, v, intid, pmr);
                if placed {
                    self.publish();
                }
                placed
            };
            if placed {
                let reason = if intid == VTIMER_INTID {
                    Reason::IrqVtimer
                } else {
                    Reason::IrqPtimer
                };
                return done(vm, v, stats, reason);
            }
        } else {
            if deferred {
                self.fold_checked(vm, v);
            }
            // A kick for an IPI (one fresh SGI or PPI of this vCPU): placed
            // straight into a free LR, as the refill would (GICv3 only:
            // there the SGIs carry no sources). `place_direct` checks the
            // format too; asked here first, GICv2 skips the priority mask's
            // `VMCR` read (without it its IPI row is 31 longer).
            if intid == KICK_SGI && self.lrs.format() == LrFormat::V3 {
                let pmr = self.placement_pmr(waiting);
                if self
                    .lrs
                    .place_direct(&mut Vif(&self.gic), &mut vm.vgic, v, pmr)
                {
                    self.gic.deactivate(irq);
                    self.publish();
                    return done(vm, v, stats, Reason::IrqKick);
                }
            }
        }
        Tick::General(Some(irq))
    }

    /// [`Irqs::fold`] of vCPU `v`, then the check of its timers' lines
    /// ([`retire_dropped_timers`]), as every exit that folds does.
    #[inline(always)]
    fn fold_checked(&mut self, vm: &mut Vm, v: usize) {
        self.fold(vm, v);
        retire_dropped_timers(vm, v);
    }

    /// The loaded vCPU's priority mask, from the live virtual machine
    /// control register.
    #[inline(always)]
    fn guest_pmr(&self) -> u8 {
        self.gic.vmcr_priority_mask(self.gic.vmcr())
    }

    /// The priority mask a direct placement must be below: the loaded
    /// vCPU's live one while it waits in `WFI` (it wakes only for an
    /// interrupt it would take), none (256) while it runs.
    #[inline(always)]
    fn placement_pmr(&self, waiting: bool) -> u16 {
        if waiting {
            u16::from(self.guest_pmr())
        } else {
            256
        }
    }

    /// Handles acknowledged (and priority-dropped) `irq` as
    /// [`Irqs::ack_all`] does: EL2's own at once, the ones to forward into
    /// `out`. False when `out` holds as many passthrough SPIs as it can.
    fn take(&mut self, irq: stratum_arch::gic::Acked, out: &mut Acks) -> bool {
        // The statistics class is the decision: one classification
        // (`stratum_core::hostirq::classify`) for both.
        let class = classify(irq.intid(), &self.host);
        out.classes.add(class);
        match class {
            // Hardware-linked: stays active until the guest deactivates
            // its virtual twin through the list register's HW bit.
            Reason::IrqVtimer => out.timers[0] = Some(irq),
            Reason::IrqPtimer => out.timers[1] = Some(irq),
            Reason::IrqConsole => {
                // Clear before draining: a byte arriving in between then
                // raises the interrupt again instead of being stranded.
                console::clear_input_interrupt();
                console::drain_input();
                self.gic.deactivate(irq);
                out.console = true;
            }
            // The maintenance interrupt (underflow, or the guest EOIed a
            // level interrupt) is level-sensitive: its condition lasts
            // until the list registers change. An EOIed LR was folded
            // and cleared when this exit began (`fold`); the underflow
            // request goes off until the refill asks again.
            Reason::IrqMaintenance => {
                self.underflow_off();
                self.gic.deactivate(irq);
            }
            // The slice ended (or an idle CPU's wake-up deadline came).
            Reason::IrqPreempt => {
                disarm_preemption();
                self.gic.deactivate(irq);
                out.preempt = true;
            }
            // A passthrough SPI: forwarded hardware-linked to its VM.
            Reason::IrqDevice => {
                out.passthrough[out.passthrough_count] = Some(irq);
                out.passthrough_count += 1;
                if out.passthrough_count == MAX_PASSTHROUGH_ACKS {
                    return false;
                }
            }
            // A kick only needed the exit it caused (the refill follows);
            // anything else is spurious for this version.
            _ => self.gic.deactivate(irq),
        }
        true
    }
}

/// How [`Irqs::fold_and_tick`] ended.
enum Tick {
    /// A guest timer's tick, or an IPI's SGI, placed: the exit is done.
    Done,
    /// The general way: the list registers are folded, and this (if any)
    /// was acknowledged.
    General(Option<stratum_arch::gic::Acked>),
}

/// A direct placement finished the exit of vCPU `v` of `vm`: counted
/// (`stats`: its counters) and traced as the interrupt's `reason`.
#[inline(always)]
fn done(vm: &Vm, v: usize, stats: &ExitStats, reason: Reason) -> Tick {
    stats.count(reason);
    crate::telemetry::trace(vm.id, v, reason, 0);
    Tick::Done
}

/// What one round of acknowledges left to do outside the per-CPU lock.
#[derive(Default)]
struct Acks {
    /// The virtual and EL1 physical timer interrupts, to forward to the
    /// loaded vCPU.
    timers: [Option<stratum_arch::gic::Acked>; 2],
    /// Console input arrived.
    console: bool,
    /// The preemption timer fired.
    preempt: bool,
    /// SPIs to forward to the VMs they are passed through to.
    passthrough: [Option<stratum_arch::gic::Acked>; MAX_PASSTHROUGH_ACKS],
    /// How many of `passthrough` are set.
    passthrough_count: usize,
    /// Interrupts acknowledged per statistics class (passthrough SPIs are
    /// counted from `passthrough` instead).
    classes: ClassTally,
}

/// Counts the interrupts of `acks` in the exit statistics: EL2's own and
/// the timers' for `loaded`, the vCPU loaded on this CPU (none: not
/// counted), a passthrough SPI for vCPU 0 of the VM it belongs to.
fn count_interrupts(loaded: Option<VcpuRef>, acks: &Acks) {
    if let Some(o) = loaded {
        for (reason, n) in acks.classes.iter() {
            crate::telemetry::interrupts(o.vm.into(), o.vcpu.into(), reason, n);
        }
    }
    for irq in acks.passthrough[..acks.passthrough_count].iter().flatten() {
        if let Some(vm) = route_of(irq.intid()) {
            crate::telemetry::interrupt(vm, 0, Reason::IrqDevice, irq.intid());
        }
    }
}

/// After an exit of vCPU `v` on CPU `cpu` (the caller's own): folds the
/// list registers the guest changed back into the model ([`Irqs::fold`]).
pub fn fold_on(vm: &mut Vm, v: usize, cpu: usize) {
    // No list register in use (the common case): nothing to fold, and no
    // need for the interrupt state's lock to find that out.
    if LRS_IN_USE[cpu].load(Ordering::Relaxed) == 0 {
        return;
    }
    with_cpu(cpu, |irqs| irqs.fold(vm, v));
}

/// After a synchronous exit of vCPU `v` on CPU `cpu` (the caller's own),
/// under its VM's lock: [`fold_on`] if the vGIC placed anything in its
/// LRs, then [`retire_dropped_timers`].
#[inline(always)]
pub fn fold_after_exit(vm: &mut Vm, v: usize, cpu: usize) {
    // Nothing in the list registers (the vGIC placed nothing there for
    // this vCPU): nothing to fold back, and no call to find that out.
    if vm.vgic.in_lr_count(v) != 0 {
        fold_on(vm, v, cpu);
    }
    retire_dropped_timers(vm, v);
}

/// The guest timers' interrupt lines of vCPU `v`, loaded and running on
/// this CPU, into its model: a timer interrupt forwarded but not yet
/// taken whose timer the guest has since disabled, masked or re-armed for
/// later is retired (not pending, its physical interrupt released at the
/// refill), as the line's drop would on a GIC. Called after the fold of
/// every exit that takes the VM's lock (device accesses, the slow path,
/// physical interrupts); costs a load and a branch unless a timer
/// interrupt was forwarded and not completed yet.
#[inline(always)]
pub fn retire_dropped_timers(vm: &mut Vm, v: usize) {
    if vm.vgic.hw_linked_private(v) & TIMER_PPIS != 0 {
        retire_timers_if_low(vm, v);
    }
}

/// The guest timers' interrupts.
const TIMER_PPIS: u32 = (1 << VTIMER_INTID) | (1 << PTIMER_INTID);

/// [`retire_dropped_timers`] once a timer interrupt is in flight.
#[inline(never)]
fn retire_timers_if_low(vm: &mut Vm, v: usize) {
    let waiting = vm.vgic.hw_pending_private(v, TIMER_PPIS);
    if waiting != 0 {
        vm.vgic
            .retire_hw_pending(v, waiting & stratum_arch::timer::live_low_lines());
    }
}

/// vCPU `v` leaves CPU `cpu` (the caller's own) or waits: every list
/// register goes back to the model and is invalidated, so that the model
/// alone says what is pending (a `WFI` wake-up) and the next vCPU finds
/// them empty.
pub fn park_lrs(vm: &mut Vm, v: usize, cpu: usize) {
    if LRS_IN_USE[cpu].load(Ordering::Relaxed) == 0 && vm.vgic.lr_slots(v) == 0 {
        return;
    }
    with_cpu(cpu, |irqs| irqs.park(vm, v));
}

/// Before entering vCPU `v` on CPU `cpu` (the caller's own): hands over
/// console input queued for the VM, kicks the CPUs of other vCPUs whose
/// interrupts changed, and refills the list registers ([`Irqs::refill`]).
/// Most exits change nothing for the vCPU: then nothing else is done.
pub fn fill_on(vm: &mut Vm, v: usize, cpu: usize) {
    // Device lines move only through device accesses (the exit path
    // samples them when an access says so) and console input (sampled
    // here, and by `service` for the focused VM when it arrives).
    if console::has_input(vm.id) {
        sample_lines(vm);
    }
    send_kicks(vm, cpu);
    if vm.vgic.refill_is_empty(v) && LRS_IN_USE[cpu].load(Ordering::Relaxed) == vm.vgic.lr_slots(v)
    {
        return;
    }
    with_cpu(cpu, |irqs| irqs.refill(vm, v));
}

/// Kicks the CPUs (other than `cpu`) of the VM's running vCPUs whose
/// deliverable interrupts changed. A vCPU on `cpu` itself needs no kick:
/// this CPU refills or reschedules before it runs a guest again.
pub fn send_kicks(vm: &mut Vm, cpu: usize) {
    let mut mask = vm.vgic.take_kicks().0;
    while mask != 0 {
        let other = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        if let Some(target) = vm.life.kick_target(other)
            && target != cpu
        {
            kick(target);
        }
    }
}

/// Physical interrupts arrived (while a guest ran, or while this CPU
/// idled): acknowledges them, forwards the timers' to the loaded vCPU and
/// console input to the VM that has the console. True when the preemption
/// timer fired. Holds no VM lock on entry.
pub fn service(cpu: usize) -> bool {
    let mut acks = Acks::default();
    with_cpu(cpu, |irqs| irqs.ack_all(&mut acks));
    // The timers' interrupts are classes too: whenever there are some, the
    // loaded vCPU is looked up (once) for both counting and forwarding.
    let loaded = if !acks.classes.is_empty() {
        percpu::loaded(cpu)
    } else {
        None
    };
    count_interrupts(loaded, &acks);
    if acks.timers.iter().any(Option::is_some) {
        match loaded {
            Some(owner) => system::with_vm(owner.vm.into(), |vm| {
                for irq in acks.timers.iter().flatten() {
                    // Never refused for a PPI; if the model holds a previous
                    // forward still, that one's deactivation is the one that
                    // will reach the hardware.
                    let _ = vm
                        .vgic
                        .set_hw_pending(owner.vcpu.into(), irq.intid(), irq.intid());
                }
            }),
            // Nobody's timer: stale (its vCPU stopped). Let it go.
            None => with_cpu(cpu, |irqs| {
                for irq in acks.timers.iter().flatten() {
                    irqs.gic.deactivate(*irq);
                }
            }),
        }
    }
    for irq in acks.passthrough[..acks.passthrough_count].iter().flatten() {
        let forwarded = route_of(irq.intid()).and_then(|id| {
            system::try_with_vm(id, |vm| {
                if vm.must_park_vm() {
                    return false;
                }
                let ok = vm
                    .vgic
                    .set_hw_pending(0, irq.intid(), irq.intid())
                    .is_ok_and(|fresh| fresh);
                send_kicks(vm, cpu);
                ok
            })
        });
        if forwarded != Some(true) {
            // Not ours, its VM is not running, or a previous forward is in
            // flight still: let it go rather than leave it active forever.
            with_cpu(cpu, |irqs| irqs.gic.deactivate(*irq));
        }
    }
    if acks.console {
        let focus = console::focused();
        system::try_with_vm(focus, |vm| {
            sample_lines(vm);
            send_kicks(vm, cpu);
        });
    }
    acks.preempt
}

/// What is left to do after [`guest_irq`].
pub enum GuestIrq {
    /// Nothing: the list registers are refilled, the guest may run.
    Done,
    /// Return to the guest after the usual checks (the vCPU may have to
    /// park; the list registers are not refilled yet).
    Resume,
    /// The preemption timer fired: give the CPU to the next vCPU.
    Yield,
    /// (Waiting in `WFI` only.) Nothing the vCPU would take: keep waiting.
    Wait,
}

/// A physical interrupt exit of `me`, the vCPU running on CPU `cpu` (the
/// caller's own): under one hold of its VM's lock, folds the list
/// registers the guest changed, acknowledges the physical interrupts,
/// forwards the timers' and this VM's passthrough SPIs (HW-linked) and
/// console input, and refills. Interrupts for other VMs are forwarded
/// after the lock is released. `tag` is `me`'s frame's (its counters and
/// its VM's slot).
pub fn guest_irq(cpu: usize, me: VcpuRef, tag: &VcpuTag) -> GuestIrq {
    if !percpu::is_loaded(cpu, me) {
        // The timers' interrupts belong to the loaded vCPU, which is the
        // running one while a guest runs; anything else takes the general
        // way.
        let v = usize::from(me.vcpu);
        system::with_vm(me.vm.into(), |vm| fold_on(vm, v, cpu));
        return if service(cpu) {
            GuestIrq::Yield
        } else {
            GuestIrq::Resume
        };
    }
    interrupts_arrived::<false>(cpu, me, tag.stats, tag.slot)
}

/// [`guest_irq`] for `me`, loaded on `cpu`; `WAITING`: `me` waits in
/// `WFI` with its list registers parked, and is refilled only if it has an
/// interrupt it would take ([`GuestIrq::Wait`] otherwise; the preemption
/// timer does not matter, the CPU is not shared). `stats`: `me`'s
/// counters; `slot`: its VM's.
fn interrupts_arrived<const WAITING: bool>(
    cpu: usize,
    me: VcpuRef,
    stats: &'static ExitStats,
    slot: &VmSlot,
) -> GuestIrq {
    let v = usize::from(me.vcpu);
    let mut rest = None;
    let outcome = system::with_slot(slot, |vm| {
        match with_cpu(cpu, |irqs| irqs.fold_and_tick(vm, v, WAITING, stats)) {
            // The timer path ends here.
            Tick::Done => {
                send_kicks(vm, cpu);
                GuestIrq::Done
            }
            Tick::General(first) => {
                interrupts_general::<WAITING>(vm, cpu, me, first, rest.insert(Acks::default()))
            }
        }
    });
    if let Some(acks) = &mut rest
        && (acks.passthrough_count != 0 || acks.console)
    {
        forward_elsewhere(cpu, acks);
    }
    outcome
}

/// The rest of [`interrupts_arrived`] under its VM's lock, the list
/// registers folded and `first` acknowledged already: acknowledges the
/// others, forwards and refills; what is for other VMs stays in `acks`.
#[inline(never)]
fn interrupts_general<const WAITING: bool>(
    vm: &mut Vm,
    cpu: usize,
    me: VcpuRef,
    first: Option<stratum_arch::gic::Acked>,
    acks: &mut Acks,
) -> GuestIrq {
    let waiting = WAITING;
    let (id, v) = (usize::from(me.vm), usize::from(me.vcpu));
    let simple = with_cpu(cpu, |irqs| {
        if first.is_none_or(|irq| irqs.take(irq, acks)) {
            irqs.ack_all(acks);
        }
        for irq in acks.timers.iter().flatten() {
            // Never refused for a PPI; if the model holds a previous
            // forward still, that one's deactivation is the one that
            // will reach the hardware.
            let _ = vm.vgic.set_hw_pending(v, irq.intid(), irq.intid());
        }
        acks.timers = [None; 2];
        // The common case (timers, kicks, maintenance): refill now,
        // in the same hold of the interrupt state.
        let simple = acks.passthrough_count == 0
            && !acks.console
            && (waiting || !acks.preempt)
            && !console::has_input(id)
            && !vm.must_park(v);
        if !simple {
            return None;
        }
        if waiting && !vm.vgic.has_pending(v, irqs.guest_pmr()) {
            return Some(GuestIrq::Wait);
        }
        irqs.refill_if_changed(vm, v);
        Some(GuestIrq::Done)
    });
    count_interrupts(Some(me), acks);
    if let Some(outcome) = simple {
        send_kicks(vm, cpu);
        return outcome;
    }
    forward_passthrough(vm, cpu, acks, true);
    if acks.console && console::focused() == id {
        sample_lines(vm);
        acks.console = false;
    }
    if waiting {
        if console::has_input(vm.id) {
            sample_lines(vm);
        }
        send_kicks(vm, cpu);
        let park = vm.must_park(v);
        if !park && !vm.vgic.has_pending(v, live_guest_pmr()) {
            return GuestIrq::Wait;
        }
        if park {
            return GuestIrq::Resume;
        }
    } else if acks.preempt {
        return GuestIrq::Yield;
    } else if vm.must_park(v) {
        return GuestIrq::Resume;
    }
    fill_on(vm, v, cpu);
    GuestIrq::Done
}

/// Forwards the acknowledged passthrough SPIs that belong to `vm` (all of
/// them with `only_this: false`, else only `vm`'s) and takes them off
/// `acks`; one its VM cannot take is deactivated.
fn forward_passthrough(vm: &mut Vm, cpu: usize, acks: &mut Acks, only_this: bool) {
    for slot in acks.passthrough[..acks.passthrough_count].iter_mut() {
        let Some(irq) = *slot else { continue };
        let owner = route_of(irq.intid());
        if only_this && owner != Some(vm.id) {
            continue;
        }
        let forwarded = owner == Some(vm.id)
            && !vm.must_park_vm()
            && vm
                .vgic
                .set_hw_pending(0, irq.intid(), irq.intid())
                .is_ok_and(|fresh| fresh);
        send_kicks(vm, cpu);
        if !forwarded {
            // Not ours, its VM is not running, or a previous forward is in
            // flight still: let it go rather than leave it active forever.
            with_cpu(cpu, |irqs| irqs.gic.deactivate(irq));
        }
        // Counted already: forget it.
        *slot = None;
    }
}

/// What [`guest_irq`] left for VMs other than the running one: their
/// passthrough SPIs, console input for the focused VM.
#[inline(never)]
fn forward_elsewhere(cpu: usize, acks: &mut Acks) {
    for k in 0..acks.passthrough_count {
        let Some(irq) = acks.passthrough[k] else {
            continue;
        };
        let done = route_of(irq.intid()).and_then(|id| {
            system::try_with_vm(id, |vm| {
                let mut one = Acks {
                    passthrough_count: 1,
                    ..Acks::default()
                };
                one.passthrough[0] = Some(irq);
                forward_passthrough(vm, cpu, &mut one, false);
            })
        });
        if done.is_none() {
            with_cpu(cpu, |irqs| irqs.gic.deactivate(irq));
        }
    }
    if acks.console {
        let focus = console::focused();
        system::try_with_vm(focus, |vm| {
            sample_lines(vm);
            send_kicks(vm, cpu);
        });
    }
}

/// Whether vCPU `v`, waiting in `WFI` on CPU `cpu`, must stop waiting: an
/// interrupt it can take is pending, or it must leave its CPU. As in
/// `fill_on`, device lines move only with device accesses and console
/// input, so only queued input is sampled; kicks for the VM's other vCPUs
/// go out on the way.
pub fn must_wake(vm: &mut Vm, v: usize, cpu: usize) -> bool {
    if console::has_input(vm.id) {
        sample_lines(vm);
    }
    send_kicks(vm, cpu);
    vm.vgic.has_pending(v, live_guest_pmr()) || vm.must_park(v)
}

/// A guest `WFI` by vCPU `me`, alone on CPU `cpu`, its list registers
/// parked, once [`must_wake`] said no: idles the CPU until `me` has an
/// interrupt it would take (or must park), forwarding physical interrupts
/// as they come. True when it also refilled the list registers (the guest
/// may run at once: the interrupt that woke it was handled as by
/// [`guest_irq`]). No VM lock is held while idling.
pub fn idle_for_interrupt(cpu: usize, me: VcpuRef) -> bool {
    let v = usize::from(me.vcpu);
    let loaded = percpu::is_loaded(cpu, me);
    let stats = crate::telemetry::stats(me.vm.into(), v);
    let slot = &VMS[usize::from(me.vm)];
    loop {
        // Interrupts stay masked at EL2: WFI still wakes on a pending one,
        // which is then acknowledged.
        crate::telemetry::idling(barrier::wfi);
        if loaded {
            match interrupts_arrived::<true>(cpu, me, stats, slot) {
                GuestIrq::Wait => continue,
                GuestIrq::Done => return true,
                GuestIrq::Resume | GuestIrq::Yield => return false,
            }
        }
        service(cpu);
        if system::with_vm(me.vm.into(), |vm| must_wake(vm, v, cpu)) {
            return false;
        }
    }
}

/// The loaded vCPU's priority mask (from the live virtual machine control
/// register).
pub fn live_guest_pmr() -> u8 {
    with(|irqs| irqs.guest_pmr())
}

/// The priority mask in a saved virtual machine control register of a
/// vCPU of `vm` (whose vGIC is the host GIC's version, so no lock of this
/// CPU's interrupt state is needed to know the layout).
pub fn pmr_of(vm: &Vm, vmcr: u32) -> u8 {
    match vm.vgic.version() {
        GicVersion::V2 => GicV2::vmcr_priority_mask(vmcr),
        GicVersion::V3 => GicV3::vmcr_priority_mask(vmcr),
    }
}

/// Arms the EL2 physical timer to fire at physical count `at`.
pub use stratum_arch::timer::arm_hyp_timer as arm_preemption;
/// Stops the EL2 physical timer.
pub use stratum_arch::timer::disarm_hyp_timer as disarm_preemption;

/// Saves the loaded vCPU's virtual CPU interface (control and active
/// priorities) and the physical active state of its hardware-linked
/// timer interrupts, which are then cleared so that the next vCPU's timers
/// can fire. The list registers were folded into the model already.
pub fn save_cpu_interface(ctx: &mut VcpuContext) {
    with(|irqs| {
        ctx.vmcr = irqs.gic.vmcr();
        ctx.aprs = irqs.gic.save_aprs();
        // Both timers' active states in one read and at most one write.
        let active = irqs.gic.private_active() & TIMER_PPIS;
        ctx.hw_active = active;
        irqs.gic.set_private_active(0, active);
    });
}

/// Loads a vCPU's saved virtual CPU interface and the physical active state
/// of its hardware-linked timer interrupts.
pub fn restore_cpu_interface(ctx: &VcpuContext) {
    with(|irqs| {
        irqs.gic.set_vmcr(ctx.vmcr);
        irqs.gic.restore_aprs(&ctx.aprs);
        let active = ctx.hw_active & TIMER_PPIS;
        irqs.gic.set_private_active(active, TIMER_PPIS & !active);
    });
}

/// The emulated UART's interrupt line, into the model (after handing it
/// any queued console input, if its VM has the console).
pub fn sample_lines(vm: &mut Vm) {
    console::deliver_input(vm.id, &mut vm.uart);
    let uart_line = vm.uart.irq_pending();
    let uart_intid = virt_map::UART_SPI + 32;
    vm.vgic
        .set_level(uart_intid, 0, uart_line)
        .expect("the VM's GIC has the UART's SPI");
}

/// The virtio transports' interrupt lines, into the model: only the ones
/// that moved since the last sample.
pub fn sample_virtio_lines(vm: &mut Vm) {
    let lines = vm.virtio.lines();
    let mut moved = lines ^ vm.virtio_lines;
    vm.virtio_lines = lines;
    while moved != 0 {
        let n = moved.trailing_zeros();
        moved &= moved - 1;
        let intid = 32 + virt_map::VIRTIO_FIRST_SPI + n;
        vm.vgic
            .set_level(intid, 0, lines & (1 << n) != 0)
            .expect("the VM's GIC has the transports' SPIs");
    }
}

/// Forgets this CPU's vCPU interrupt state (the vCPU stopped, or its VM is
/// being reset): clears the list registers, and the active state of the
/// hardware-linked timer interrupts the guest may have left.
pub fn reset_cpu() {
    // The stopped vCPU's timers must not fire into whatever runs next here.
    sysreg::set_cntv_ctl_el0(0);
    sysreg::set_cntp_ctl_el0(0);
    disarm_preemption();
    with(|irqs| {
        irqs.lrs.clear(&mut Vif(&irqs.gic));
        irqs.publish();
        irqs.gic.set_vmcr(0);
        irqs.gic.restore_aprs(&Default::default());
        for intid in [VTIMER_INTID, PTIMER_INTID] {
            if let Err(e) = irqs.gic.clear_active(intid) {
                log!("cannot clear the active state of INTID {intid}: {e}");
            }
        }
    });
}
