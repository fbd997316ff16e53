//! The exit glue: reads the syndrome registers, asks `stratum_core::vmexit`
//! what to do, and applies the answer.

use stratum_arch::ram::GuestRam;
use stratum_arch::{sysreg, tlb};
use stratum_core::addr::Gva;
use stratum_core::bus::{AccessRefused, DeviceAccess, DeviceId, DeviceTable, Effects, MmioDevice};
use stratum_core::esr::ec as esr_class;
use stratum_core::flash::Flash;
use stratum_core::inject::Injection;
use stratum_core::pl011::Pl011;
use stratum_core::stats::Reason;
use stratum_core::vmexit::{
    self, AbortReport, Action, ExitEnv, ExitInfo, InjectionNotes, SgiRegister, StopReason,
    VmDevices, VmModel,
};
use stratum_vgic::Vgic;

use stratum_core::idreg::IdRead;
use stratum_core::lifecycle::Start;
use stratum_core::sched::VcpuRef;
use stratum_core::vmexit::early::{self, Early};

use crate::vm::{ChannelPort, Vm, VmMemory};
use crate::vm::{Frame, LiveVcpu, VcpuTag};
use crate::{irq, lifecycle, log, sched, smp, system, telemetry};
use stratum_arch::vectors::kind;
use stratum_virtio::VmVirtio;

/// The glue's side of [`ExitEnv`], for one VM.
struct Env {
    /// The VM's index.
    vm: usize,
    /// Its RAM carve-out (stage-1 translation at EL2 gives the physical
    /// address of a guest VA).
    ram: GuestRam,
}

impl ExitEnv for Env {
    fn fetch_insn(&mut self, pc: Gva) -> Option<u32> {
        self.ram.read_u32_at_host(tlb::translate_guest_read(pc.0)?)
    }

    fn el1_vector_state(&mut self) -> (u64, u64) {
        (sysreg::vbar_el1(), sysreg::sctlr_el1())
    }

    fn id_register(&mut self, encoding: u32) -> u64 {
        id_register_value(encoding, system::time_shared(self.vm))
    }
}

/// A VM's emulated devices, by their ids on its bus.
struct VmDevs<'a> {
    uart: &'a mut Pl011,
    vgic: &'a mut Vgic,
    virtio: &'a mut VmVirtio,
}

impl DeviceTable for VmDevs<'_> {
    fn device(&mut self, id: DeviceId) -> Option<&mut dyn MmioDevice> {
        match id {
            crate::vm::UART_DEVICE => Some(&mut *self.uart),
            crate::vm::GIC_DEVICE => Some(&mut *self.vgic),
            crate::vm::VIRTIO_DEVICE => Some(&mut *self.virtio),
            _ => self.rare_device(id),
        }
    }

    // The three devices every VM has are called directly, not through
    // `dyn`: their register reads inline into the MMIO route.
    #[inline(always)]
    fn read(
        &mut self,
        id: DeviceId,
        access: &DeviceAccess,
        fx: &mut Effects,
    ) -> Result<u64, AccessRefused> {
        match id {
            crate::vm::GIC_DEVICE => MmioDevice::read(&mut *self.vgic, access, fx),
            crate::vm::UART_DEVICE => MmioDevice::read(&mut *self.uart, access, fx),
            _ => self.read_out_of_line(id, *access, fx),
        }
    }

    #[inline(always)]
    fn write(
        &mut self,
        id: DeviceId,
        access: &DeviceAccess,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        match id {
            crate::vm::GIC_DEVICE => MmioDevice::write(&mut *self.vgic, access, value, fx),
            crate::vm::UART_DEVICE => MmioDevice::write(&mut *self.uart, access, value, fx),
            _ => self.write_out_of_line(id, *access, value, fx),
        }
    }
}

impl VmDevs<'_> {
    /// A read of a device whose model is not inlined into the route (the
    /// virtio bank, the rare devices): out of line, so that the access
    /// record is made in memory only for them.
    #[inline(never)]
    fn read_out_of_line(
        &mut self,
        id: DeviceId,
        access: DeviceAccess,
        fx: &mut Effects,
    ) -> Result<u64, AccessRefused> {
        if id == crate::vm::VIRTIO_DEVICE {
            return MmioDevice::read(&mut *self.virtio, &access, fx);
        }
        self.rare_device(id).ok_or(AccessRefused)?.read(&access, fx)
    }

    /// [`VmDevs::read_out_of_line`] for a write.
    #[inline(never)]
    fn write_out_of_line(
        &mut self,
        id: DeviceId,
        access: DeviceAccess,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        if id == crate::vm::VIRTIO_DEVICE {
            return MmioDevice::write(&mut *self.virtio, &access, value, fx);
        }
        self.rare_device(id)
            .ok_or(AccessRefused)?
            .write(&access, value, fx)
    }

    /// The devices only some VMs have, out of line: the three every VM
    /// has keep the dispatch they had (measured: a fourth arm, or a field
    /// for the flash in this table, made every MMIO exit five instructions
    /// longer).
    #[inline(never)]
    fn rare_device(&mut self, id: DeviceId) -> Option<&mut dyn MmioDevice> {
        match id {
            crate::vm::FLASH_DEVICE => {
                // SAFETY: `Flash` is zero-sized: a dangling, aligned,
                // non-null pointer is a valid reference to it, and it has no
                // state for two references to share.
                Some(unsafe { core::ptr::NonNull::<Flash>::dangling().as_mut() })
            }
            _ => None,
        }
    }
}

impl VmDevices for VmDevs<'_> {
    fn sgi_write(&mut self, vcpu: usize, which: SgiRegister, value: u64) -> bool {
        self.vgic.sgi_register_write(vcpu, which, value);
        true
    }
}

/// Applies what the exit's device accesses did besides answering: console
/// output, queue notifies (the virtio transports serve their queues now,
/// after the register access), and device interrupt lines that may have
/// moved (sampled into the vGIC before the guest runs again).
/// `device`: the device accessed, if known (else every line is sampled).
/// What the notifies left for the switch and the router goes into
/// `vm.pv_work`; true when there is some ([`serve_pv`], once the VM's lock
/// is released).
#[inline(never)]
fn apply_effects(vm: &mut Vm, fx: &Effects, device: Option<DeviceId>) -> bool {
    for b in fx.console_bytes() {
        crate::console::guest_byte(vm.id, b);
    }
    let mut later = false;
    if fx.notify() {
        let mut work = vm.virtio.process(&mut VmMemory(&vm.ram));
        if core::mem::take(&mut work.console_output) {
            print_virtio_console(vm);
        }
        later = !work.is_empty();
        vm.pv_work |= work;
    }
    let virtio = device.is_none_or(|d| d == crate::vm::VIRTIO_DEVICE);
    if fx.lines() && !virtio || device.is_none() {
        irq::sample_lines(vm);
    }
    if (fx.lines() || fx.notify()) && virtio {
        irq::sample_virtio_lines(vm);
    }
    later
}

/// Prints what the VM wrote to its virtio-console, tagged like its UART's
/// lines.
#[cold]
fn print_virtio_console(vm: &mut Vm) {
    let mut buf = [0u8; 128];
    loop {
        let n = vm
            .virtio
            .take_console_output(&mut buf, &mut VmMemory(&vm.ram));
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            crate::console::guest_byte(vm.id, b);
        }
    }
}

/// Serves what notifies of VM `id` left for the switch and the router
/// (`vm.pv_work`; vCPU `v` on CPU `cpu` notified), then refills the vCPU's
/// list registers if that raised one of its own VM's lines (its own
/// transmit completions).
#[cold]
#[inline(never)]
fn serve_pv(id: usize, v: usize, cpu: usize) {
    crate::pv::serve(id, cpu);
    system::with_vm(id, |vm| {
        if !vm.must_park(v) {
            irq::fill_on(vm, v, cpu);
        }
    });
}

/// What a guest reads from the ID register `encoding` (TID3 space): the
/// hardware's value, without SVE/SME for a VM that time-shares CPUs.
fn id_register_value(encoding: u32, time_shared: bool) -> u64 {
    // `encoding` packs CRm in bits [6:3] and op2 in [2:0]; the policy only
    // asks for registers of the TID3 space, which the reader covers.
    let (crm, op2) = (((encoding >> 3) & 0xf) as u8, (encoding & 7) as u8);
    let value = sysreg::id_register(crm, op2).unwrap_or(0);
    if time_shared {
        stratum_core::idreg::without_sve_sme(crm, op2, value)
    } else {
        value
    }
}

/// Answers the exits that need no VM state ([`early`]) at once: no lock,
/// no list-register fold or refill (nothing in the vGIC changed), no
/// lookup of the CPU or the vCPU (the frame's tag says whose exit it is).
/// True when it did; the exit is then complete.
#[inline(always)]
fn early_exit(frame: *mut Frame, esr: u64) -> bool {
    let Some(settings) = system::settings() else {
        return false;
    };
    // SAFETY: `frame` is the running vCPU's frame (TPIDR_EL2), which the
    // exit vector just filled. Only this CPU touches a running vCPU's frame
    // (nothing else reads or writes another vCPU's registers while it
    // runs), so reading it through the pointer races with nothing.
    let x = unsafe { [(*frame).x[0], (*frame).x[1], (*frame).x[2], (*frame).x[3]] };
    let Some(answer) = early::early(esr, &x, &settings.firmware) else {
        return false;
    };
    // SAFETY: as above; the tag is set when the VM is built.
    let tag = unsafe { (*frame).tag };
    match answer {
        Early::Call {
            regs,
            count,
            reason,
            detail,
        } => {
            // SAFETY: as above; x0..x3 of the frame.
            let x = unsafe { &mut (*frame).x };
            x[0] = regs[0];
            if count > 1 {
                x[1] = regs[1];
                x[2] = if count > 2 { regs[2] } else { x[2] };
                x[3] = if count > 3 { regs[3] } else { x[3] };
            }
            tag.stats.count(reason);
            telemetry::trace(tag.vm, tag.vcpu, reason, detail);
        }
        Early::IdRead { rt, read } => {
            let (value, encoding) = match read {
                IdRead::Hardware(encoding) => (
                    id_register_value(encoding, system::time_shared(tag.vm)),
                    encoding,
                ),
                IdRead::Zero => (0, 0),
            };
            if rt < 31 {
                // SAFETY: as above; `rt` < 31 names x0..x30 of the frame.
                unsafe { (*frame).x[usize::from(rt)] = value };
            }
            advance_pc();
            tag.stats.count(Reason::SysregId);
            telemetry::trace(tag.vm, tag.vcpu, Reason::SysregId, encoding);
        }
    }
    true
}

fn apply_injection(inj: &Injection) {
    sysreg::set_esr_el1(inj.esr_el1);
    if let Some(far) = inj.far_el1 {
        sysreg::set_far_el1(far);
    }
    sysreg::set_elr_el1(inj.elr_el1);
    sysreg::set_spsr_el1(inj.spsr_el1);
    sysreg::set_elr_el2(inj.pc);
    sysreg::set_spsr_el2(inj.pstate);
}

fn advance_pc() {
    sysreg::set_elr_el2(sysreg::elr_el2().wrapping_add(4));
}

/// Carries out an action that only touches this vCPU's registers —
/// resume, step past the instruction, inject an exception — and says
/// whether it was one. The exit path does these under the VM lock it
/// already holds; everything else goes to [`apply_action`].
fn finish_in_place(action: &Action) -> bool {
    match action {
        Action::Resume => {}
        Action::Advance => advance_pc(),
        Action::Inject(inj) => apply_injection(inj),
        _ => return false,
    }
    true
}

/// What happens after an exit, besides returning to the same vCPU.
enum Flow {
    /// Return to the guest.
    Resume,
    /// Give the CPU to another vCPU that shares it, if one is runnable.
    Yield,
    /// The vCPU waits for an interrupt (`WFI`).
    Block,
}

/// Called by the exit vector with the running vCPU's frame (the address in
/// `TPIDR_EL2`). The frame lives inside its [`crate::vm::Vm`], so it is only
/// ever borrowed through the VM lock; the raw pointer serves to check that
/// invariant. Returns to resume the same vCPU; every other outcome
/// schedules and never returns here.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn handle_guest_exit(frame: *mut Frame, exit_kind: u64) {
    // Both compile to nothing without the `trace` feature, so the route is
    // still a tail call.
    // SAFETY: the running vCPU's frame (see `early_exit`).
    telemetry::exit_entered(unsafe { (*frame).tag.vm });
    route_exit(frame, exit_kind);
    telemetry::exit_left();
}

/// Sends an exit down its route ([`handle_guest_exit`]).
#[inline(always)]
fn route_exit(frame: *mut Frame, exit_kind: u64) {
    // Each route is its own function, tail-called: the registers one needs
    // cost the others nothing (no saves in a shared prologue).
    if exit_kind != kind::SYNC {
        return exit_slow(frame, exit_kind, false);
    }
    let esr = sysreg::esr_el2();
    match (esr >> 26) as u8 & 0x3f {
        esr_class::HVC64 | esr_class::SYS64 => early_route(frame, esr),
        esr_class::DABT_LOWER => mmio_route(frame, esr),
        // Not an arm of this match: a fourth made the calls' compares
        // longer (4 instructions on every HVC).
        _ => wfx_route(frame, esr),
    }
}

/// An `HVC` or a trapped `MRS`/`MSR`: answered at once ([`early_exit`]),
/// an SGI-register write by the direct route ([`sgi_route`]), else the
/// full path.
#[inline(never)]
fn early_route(frame: *mut Frame, esr: u64) {
    if early_exit(frame, esr) {
        return;
    }
    // Only a trapped system register can be an SGI write: a call that
    // takes the full path (a doorbell, a power call) pays one compare.
    // (A route of its own for system registers, tried, made HVC and the
    // ID-register trap 20-30 instructions longer: `early_exit` then
    // inlines into both.)
    let taken = if (esr >> 26) as u8 & 0x3f == esr_class::SYS64 {
        sgi_route(frame, esr)
    } else {
        doorbell_route(frame, esr)
    };
    if !taken {
        exit_slow(frame, kind::SYNC, false);
    }
}

/// A `DOORBELL` call on one of the VM's channels ([`vmexit::doorbell_of`],
/// ADR 0022): the caller's list registers folded (and, for a peer in
/// another VM, refilled) under one hold of its VM's lock, the peer rung
/// under the peer's ([`ring_port`]), the status returned; for a peer in
/// the same VM the caller is refilled after the ring ([`resume_or_park`]).
/// The full path's outcome with two or three holds fewer. False, with
/// nothing done, for any other exit (a channel the VM lacks, too: the full
/// path refuses it).
#[inline(never)]
fn doorbell_route(frame: *mut Frame, esr: u64) -> bool {
    // SAFETY: the running vCPU's frame (see `early_exit`).
    let (tag, x0, x1) = unsafe { ((*frame).tag, (*frame).x[0], (*frame).x[1]) };
    let Some(call) = vmexit::doorbell_of(esr, x0, x1) else {
        return false;
    };
    let (v, cpu) = (tag.vcpu, smp::current_cpu());
    let found = system::with_slot(tag.slot, |vm| {
        let channel = call.channel_in(vm.channel_count as u32)?;
        let port = vm.channels[channel as usize];
        irq::fold_after_exit(vm, v, cpu);
        tag.stats.count(call.reason);
        telemetry::trace(
            tag.vm,
            v,
            call.reason,
            stratum_abi::smccc::stratum::DOORBELL,
        );
        // The peer is another VM: ringing it changes nothing of this one,
        // so the caller is refilled now, under this hold.
        let done = port.peer_vm != tag.vm && !vm.must_park(v);
        if done {
            irq::fill_on(vm, v, cpu);
        }
        Some((port, done))
    });
    let Some((port, done)) = found else {
        return false;
    };
    let status = ring_port(port, cpu);
    // SAFETY: as above; x0 of the frame (`HVC` returns past itself).
    unsafe { (*frame).x[0] = status as u64 };
    if !done {
        resume_or_park(tag.vm, v, cpu);
    }
    true
}

/// A trapped write of a GICv3 SGI-generation register (a guest's IPI,
/// [`vmexit::sgi_write_of`]), under one hold of the VM lock: fold the list
/// registers, generate the SGIs, kick the targets' CPUs and refill, as
/// the full path would. False, with nothing done, for any other exit.
#[inline(never)]
fn sgi_route(frame: *mut Frame, esr: u64) -> bool {
    let Some(w) = vmexit::sgi_write_of(esr) else {
        return false;
    };
    // SAFETY: the running vCPU's frame (see `early_exit`); `rt` < 31 names
    // x0..x30, and 31 is XZR.
    let (tag, value) = unsafe {
        let x = if w.rt < 31 {
            (*frame).x[usize::from(w.rt)]
        } else {
            0
        };
        ((*frame).tag, x)
    };
    let (v, cpu) = (tag.vcpu, smp::current_cpu());
    let park = system::with_slot(tag.slot, |vm| {
        irq::fold_after_exit(vm, v, cpu);
        vm.vgic.sgi_register_write(v, w.which, value);
        advance_pc();
        tag.stats.count(w.reason);
        telemetry::trace(tag.vm, v, w.reason, w.encoding);
        if vm.must_park(v) {
            return true;
        }
        irq::fill_on(vm, v, cpu);
        false
    });
    if park {
        // The lifecycle parks it as it leaves.
        sched::schedule(cpu);
    }
    true
}

/// A trapped `WFI` or `WFE` ([`vmexit::wfx_of`], ADR 0022), else the full
/// path. Under one hold of the VM lock until the vCPU waits: fold the list
/// registers, step past, count, and then as the full path's
/// [`Flow::Block`] or [`Flow::Yield`] would, with the wake-up check of a
/// `WFI` on a CPU of its own made under the same hold.
#[inline(never)]
fn wfx_route(frame: *mut Frame, esr: u64) {
    let Some(w) = vmexit::wfx_of(esr) else {
        return exit_slow(frame, kind::SYNC, false);
    };
    // SAFETY: the running vCPU's frame (see `early_exit`).
    let tag = unsafe { (*frame).tag };
    let (v, cpu) = (tag.vcpu, smp::current_cpu());
    // The scheduler's state is never held with a VM lock: asked first.
    let shared = sched::is_shared(cpu);
    let next = system::with_slot(tag.slot, |vm| {
        irq::fold_after_exit(vm, v, cpu);
        // As `sync_policy`: input is polled at a synchronous exit when the
        // console has no interrupt.
        if !irq::console_interrupts() {
            crate::console::drain_input();
            irq::sample_lines(vm);
        }
        advance_pc();
        tag.stats.count(w.reason);
        telemetry::trace(tag.vm, v, w.reason, 0);
        let park = vm.must_park(v);
        if park || shared {
            // Parked as it leaves, or another vCPU may take the CPU: the
            // list registers go back to the model first.
            irq::park_lrs(vm, v, cpu);
            return if park || !w.wait {
                Flow::Yield
            } else {
                Flow::Block
            };
        }
        if w.wait {
            // The wake-up check reads the model alone.
            irq::park_lrs(vm, v, cpu);
            if !irq::must_wake(vm, v, cpu) {
                return Flow::Block;
            }
        }
        irq::fill_on(vm, v, cpu);
        Flow::Resume
    });
    match next {
        Flow::Resume => {}
        // Parked by the lifecycle, or the CPU offered (`WFE`).
        Flow::Yield => sched::schedule(cpu),
        Flow::Block if shared => sched::block(cpu),
        Flow::Block => wait_then_resume(
            cpu,
            VcpuRef {
                vm: tag.vm as u8,
                vcpu: v as u8,
            },
        ),
    }
}

/// A data abort: the direct route ([`mmio_exit`]), else the full path.
#[inline(never)]
fn mmio_route(frame: *mut Frame, esr: u64) {
    // SAFETY: the running vCPU's frame (see `early_exit`).
    let tag = unsafe { (*frame).tag };
    match mmio_exit(frame, esr, tag) {
        Quick::Done => {}
        Quick::Served => serve_pv(tag.vm, tag.vcpu, smp::current_cpu()),
        // The lifecycle parks it as it leaves.
        Quick::Park => sched::schedule(smp::current_cpu()),
        Quick::Refused => exit_slow(frame, kind::SYNC, true),
        Quick::NotMine => exit_slow(frame, kind::SYNC, false),
    }
}

/// How [`mmio_exit`] ended.
enum Quick {
    /// The access is done; the vCPU resumes.
    Done,
    /// The access is done and left work for the switch or the router
    /// ([`serve_pv`]); then the vCPU resumes.
    Served,
    /// The access is done, but the vCPU must give up its CPU (its VM is
    /// being reset or stopped, or it was powered off meanwhile).
    Park,
    /// The device refused the access: nothing changed but the list
    /// registers, already folded back. The policy injects the abort.
    Refused,
    /// Not an access the direct route takes: untouched.
    NotMine,
}

/// A data abort with a complete syndrome ([`vmexit::mmio_access`]) to a
/// device on the VM's bus, under one hold of the VM lock: fold the list
/// registers, emulate, refill only if the access may have changed what
/// they show.
#[inline(always)]
fn mmio_exit(frame: *mut Frame, esr: u64, tag: VcpuTag) -> Quick {
    // Turned away before any lock: the policy decides the rest.
    let Some((syndrome, write)) = stratum_core::esr::mmio_syndrome(esr) else {
        return Quick::NotMine;
    };
    let ipa = stratum_core::esr::fault_ipa(sysreg::hpfar_el2(), sysreg::far_el2());
    let v = tag.vcpu;
    system::with_slot(tag.slot, |vm| {
        let Some(hit) = vm.machine.bus.find(ipa) else {
            return Quick::NotMine;
        };
        // Whether the fold, the access, its effects or console input may
        // change what the list registers should hold. The vGIC's
        // generation moves with every change that can alter a fill (a
        // fold that had list registers to fold back, a register write, a
        // device line that moved), and kicks come only with such changes:
        // if it stays and no input is queued, the refill would find
        // nothing to do. (Console output alone changes nothing there.)
        let generation = vm.vgic.generation();
        // Nothing in the list registers (the vGIC placed nothing there for
        // this vCPU): nothing to fold back, and no call to find that out.
        // (Not `irq::fold_after_exit`: the CPU's index is looked up only
        // when there is something to fold.)
        if vm.vgic.in_lr_count(v) != 0 {
            irq::fold_on(vm, v, smp::current_cpu());
        }
        irq::retire_dropped_timers(vm, v);
        let mut devices = VmDevs {
            uart: &mut vm.uart,
            vgic: &mut vm.vgic,
            virtio: &mut *vm.virtio,
        };
        // SAFETY: `frame` is the running vCPU's, which lives in this VM
        // (`sync_policy` checks that on the full path) and the VM lock is
        // held: nothing else borrows it.
        let frame = unsafe { &mut *frame };
        let mut live = LiveVcpu { frame };
        let mut fx = Effects::default();
        let Ok(reason) = vmexit::mmio_device_access(
            &syndrome,
            write,
            ipa,
            &hit,
            v,
            &mut live,
            &mut devices,
            &mut fx,
        ) else {
            return Quick::Refused;
        };
        advance_pc();
        tag.stats.count(reason);
        if cfg!(feature = "trace") {
            telemetry::trace(tag.vm, v, reason, ipa.0 as u32);
        }
        let mut later = false;
        if !fx.is_empty() {
            // Console bytes, notifies served, and the device's line
            // sampled into the vGIC (which moves the generation if the
            // line moved).
            later = apply_effects(vm, &fx, Some(hit.device));
        }
        let quiet = vm.vgic.generation() == generation;
        if vm.must_park(v) {
            return Quick::Park;
        }
        if !quiet || crate::console::has_input(vm.id) {
            irq::fill_on(vm, v, smp::current_cpu());
        }
        if later { Quick::Served } else { Quick::Done }
    })
}

/// Every exit the quick paths above did not finish; `folded` when the
/// list registers were folded back already (a refused device access).
#[inline(never)]
fn exit_slow(frame: *mut Frame, exit_kind: u64, folded: bool) {
    let cpu = smp::current_cpu();
    let me = sched::current(cpu);
    let (id, v) = (usize::from(me.vm), usize::from(me.vcpu));
    let flow = match exit_kind {
        kind::SYNC | kind::SYNC32 => {
            // The common case — an access emulated, a call answered, an
            // exception injected — is finished under one hold of the VM
            // lock: fold the list registers, emulate, refill, return.
            let (left, later) = system::with_vm(id, |vm| {
                if !folded {
                    irq::fold_after_exit(vm, v, cpu);
                }
                let (action, later) = sync_policy(frame, vm, v);
                let finished = finish_in_place(&action);
                if finished && !vm.must_park(v) {
                    irq::fill_on(vm, v, cpu);
                    return (None, later);
                }
                if !finished {
                    follow_psci(vm, v, cpu, &action);
                }
                (Some((action, finished)), later)
            });
            if later {
                serve_pv(id, v, cpu);
            }
            match left {
                None => return,
                Some((_, true)) => Flow::Resume,
                Some((action, false)) => apply_action(action, cpu, me),
            }
        }
        // Fold, acknowledge, forward and refill under one VM lock hold.
        kind::IRQ | kind::FIQ | kind::ASYNC32 => {
            // SAFETY: the running vCPU's frame; its tag never changes.
            let tag = unsafe { (*frame).tag };
            match irq::guest_irq(cpu, me, &tag) {
                irq::GuestIrq::Done => return,
                irq::GuestIrq::Resume | irq::GuestIrq::Wait => Flow::Resume,
                irq::GuestIrq::Yield => Flow::Yield,
            }
        }
        kind::SERROR => {
            telemetry::count(id, v, Reason::SError, 0);
            system::with_vm(id, |vm| irq::fold_on(vm, v, cpu));
            lifecycle::stop_vm(cpu, me, StopReason::Crashed)
        }
        other => panic!("unknown exit kind {other}"),
    };
    match flow {
        Flow::Resume => {}
        Flow::Yield => {
            if sched::is_shared(cpu) {
                // The list registers go back to the model before another
                // vCPU may use them.
                system::with_vm(id, |vm| irq::park_lrs(vm, v, cpu));
                sched::schedule(cpu);
            }
        }
        Flow::Block => {
            // The wake-up check reads the model alone.
            system::with_vm(id, |vm| irq::park_lrs(vm, v, cpu));
            if sched::is_shared(cpu) {
                sched::block(cpu);
            }
            if !system::with_vm(id, |vm| irq::must_wake(vm, v, cpu)) {
                return wait_then_resume(cpu, me);
            }
        }
    }
    resume_or_park(id, v, cpu);
}

/// vCPU `me`, alone on CPU `cpu` with its list registers parked, waits in
/// `WFI` ([`irq::idle_for_interrupt`]), then resumes or parks. A function
/// of its own, tail-called: the exit's frame is gone before the CPU idles,
/// so the wake-up returns to the guest through this one alone.
#[inline(never)]
fn wait_then_resume(cpu: usize, me: VcpuRef) {
    if irq::idle_for_interrupt(cpu, me) {
        return;
    }
    resume_or_park(usize::from(me.vm), usize::from(me.vcpu), cpu);
}

/// The end of an exit that may not resume vCPU `v` of VM `id` as it is:
/// refills its list registers and returns to it, or, when it was powered
/// off or its VM is being reset or stopped, gives the CPU up instead.
fn resume_or_park(id: usize, v: usize, cpu: usize) {
    let park = system::with_vm(id, |vm| {
        if vm.must_park(v) {
            irq::park_lrs(vm, v, cpu);
            return true;
        }
        irq::fill_on(vm, v, cpu);
        false
    });
    if park {
        // The lifecycle parks it as it leaves.
        sched::schedule(cpu);
    }
}

/// Logs an injected exception (undefined instruction, or an abort with its
/// report), as [`InjectionNotes`] rate-limits them. Off the hot path: only
/// exits that inject come here.
#[cold]
#[inline(never)]
fn log_injection(vm: &Vm, info: &ExitInfo, inj: &Injection, last_abort: Option<AbortReport>) {
    let notes = InjectionNotes::new(&telemetry::summary(vm.id), info, inj, last_abort);
    let (id, name) = (vm.id, vm.image.name);
    if let Some(note) = notes.undef_text() {
        log!("vm{id} '{name}': {note}");
    }
    if let Some(note) = notes.abort_text() {
        log!("vm{id} '{name}': {note}");
    }
}

/// The exit policy for a synchronous exit of vCPU `v`, under its VM's lock:
/// decodes the syndrome, emulates, and says what is left to do (and what
/// a notify left for the switch and the router).
fn sync_policy(frame: *mut Frame, vm: &mut Vm, v: usize) -> (Action, bool) {
    let info = ExitInfo {
        esr: sysreg::esr_el2(),
        far: sysreg::far_el2(),
        hpfar: sysreg::hpfar_el2(),
        pc: sysreg::elr_el2(),
        pstate: sysreg::spsr_el2(),
    };
    let id = vm.id;
    assert!(
        core::ptr::eq(frame, &raw const vm.frames[v]),
        "TPIDR_EL2 does not name this CPU's vCPU frame"
    );
    // Without a console interrupt, input is polled here and handed over
    // at once, so this exit's UART access can see it. With one, input is
    // queued by `irq::service`, which also hands it to the focused VM.
    if !irq::console_interrupts() {
        crate::console::drain_input();
        irq::sample_lines(vm);
    }
    let settings = system::settings().expect("settings are recorded before any guest runs");
    let mut devices = VmDevs {
        uart: &mut vm.uart,
        vgic: &mut vm.vgic,
        virtio: &mut *vm.virtio,
    };
    let mut model = VmModel {
        vm_id: vm.id as u64,
        boot_count: vm.boot_count,
        channels: vm.channel_count as u32,
        ram: vm.machine.ram,
        bus: &vm.machine.bus,
        devices: &mut devices,
        effects: Effects::default(),
        vcpus: vm.life.psci_view(),
        firmware: settings.firmware,
        pstate_features: settings.pstate_features,
        debug_limits: settings.debug_limits,
        stats: telemetry::stats(id, v),
        counted: None,
        last_abort: None,
        trng: &mut vm.trng,
    };
    let mut live = LiveVcpu {
        frame: &mut vm.frames[v],
    };
    let mut env = Env {
        vm: id,
        ram: vm.ram,
    };
    let action = vmexit::handle_sync(&info, v, &mut live, &mut model, &mut env);
    let last_abort = model.last_abort;
    if let Some(c) = model.counted {
        telemetry::trace(id, v, c.reason, c.detail);
    }
    let effects = model.effects;
    let mut later = false;
    if !effects.is_empty() {
        later = apply_effects(vm, &effects, None);
    }
    if let Action::Inject(inj) = action {
        log_injection(vm, &info, &inj, last_abort);
        // An exception the guest cannot take: the abort is injected at its
        // own vector table (which is unmapped, or faults at once). Each
        // injection lands there again: an exception loop, i.e. a crash.
        let vbar = sysreg::vbar_el1();
        if vm.life.abort_injected(info.pc, vbar) {
            log!(
                "vm{} '{}': exception loop at its vector table (VBAR_EL1 {vbar:#x}, pc {:#x}): the guest crashed",
                vm.id,
                vm.image.name,
                info.pc
            );
            return (Action::Stop(StopReason::Crashed), later);
        }
    }
    (action, later)
}

/// Reports what PSCI changed in its view of the vCPUs (an accepted
/// `CPU_ON`, the caller's `CPU_OFF`) to the lifecycle, in the same hold of
/// the VM lock as the call: nothing sees the two disagree, and a `CPU_ON`
/// that races its target's own `CPU_OFF` exit is not lost. Off the fast
/// path: only actions the exit does not finish in place come here.
fn follow_psci(vm: &mut Vm, v: usize, cpu: usize, action: &Action) {
    match *action {
        Action::CpuOn {
            target,
            entry,
            context_id,
            ..
        } => {
            let fx = vm.life.cpu_on(
                target,
                Start {
                    entry,
                    x0: context_id,
                },
            );
            irq::kick_cpus(fx.kick, cpu);
        }
        Action::CpuOff | Action::Stop(StopReason::AllCpusOff) => vm.life.cpu_off(v),
        _ => {}
    }
}

/// Carries out what the policy left for the glue outside the VM lock
/// (`action` is not one [`handle_guest_exit`] finished in place).
fn apply_action(action: Action, cpu: usize, me: VcpuRef) -> Flow {
    let (id, v) = (usize::from(me.vm), usize::from(me.vcpu));
    if finish_in_place(&action) {
        return Flow::Resume;
    }
    match action {
        // Done by `finish_in_place` above.
        Action::Resume | Action::Advance | Action::Inject(_) => Flow::Resume,
        Action::WaitForInterrupt { advance } => {
            if advance {
                advance_pc();
            }
            Flow::Block
        }
        Action::Yield { advance } => {
            if advance {
                advance_pc();
            }
            Flow::Yield
        }
        Action::FpTrap => {
            sched::fp_trap(cpu);
            Flow::Resume
        }
        Action::DebugPmu { reg, read, rt } => {
            sched::debug_pmu(cpu, reg, read, rt);
            advance_pc();
            Flow::Resume
        }
        Action::ForwardToFirmware {
            function,
            arg,
            advance,
        } => {
            if let Some(conduit) = system::settings().and_then(|s| s.conduit) {
                stratum_arch::firmware::call(conduit, [u64::from(function), arg, 0, 0]);
            }
            if advance {
                advance_pc();
            }
            Flow::Resume
        }
        // The lifecycle recorded the start and kicked the target's CPU
        // (`follow_psci`); its CPU claims it and marks it ON.
        Action::CpuOn { advance, .. } => {
            if advance {
                advance_pc();
            }
            Flow::Resume
        }
        // The vCPU is OFF now: the check after this exit parks it.
        Action::CpuOff => Flow::Resume,
        Action::Doorbell { channel, advance } => {
            let status = ring_doorbell(id, channel as usize, cpu);
            system::with_vm(id, |vm| vm.frames[v].x[0] = status as u64);
            if advance {
                advance_pc();
            }
            Flow::Resume
        }
        Action::MemInfo { advance } => {
            let info = system::mem_info();
            system::with_vm(id, |vm| {
                vm.frames[v].x[0] = stratum_abi::smccc::SUCCESS as u64;
                vm.frames[v].x[1..4].copy_from_slice(&info);
            });
            if advance {
                advance_pc();
            }
            Flow::Resume
        }
        Action::Reset => lifecycle::reset_vm(cpu, me),
        Action::Stop(reason) => lifecycle::stop_vm(cpu, me, reason),
    }
}

/// Stratum `DOORBELL` from VM `id` on its channel `channel`: makes the
/// peer's doorbell interrupt pending and kicks the CPU of the vCPU it
/// targets. The SMCCC status for the caller.
fn ring_doorbell(id: usize, channel: usize, cpu: usize) -> i64 {
    let Some(port) = system::with_vm(id, |vm| {
        vm.channels[..vm.channel_count].get(channel).copied()
    }) else {
        return stratum_abi::smccc::INVALID_PARAMETERS;
    };
    ring_port(port, cpu)
}

/// Rings the doorbell at the other end of a channel (`port`), from CPU
/// `cpu`: the SMCCC status for the caller.
fn ring_port(port: ChannelPort, cpu: usize) -> i64 {
    system::try_with_vm(port.peer_vm, |peer| {
        if peer.must_park_vm() {
            return stratum_abi::smccc::NOT_PRESENT;
        }
        if peer.vgic.set_pending(32 + port.peer_spi, 0).is_err() {
            return stratum_abi::smccc::INTERNAL_FAILURE;
        }
        irq::send_kicks(peer, cpu);
        stratum_abi::smccc::SUCCESS
    })
    .unwrap_or(stratum_abi::smccc::NOT_PRESENT)
}
