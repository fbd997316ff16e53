//! What to do about a guest exit: the hypervisor's policy, as a pure function.
//!
//! The EL2 glue reads the syndrome registers into an [`ExitInfo`], calls
//! [`handle_sync`] with the vCPU's registers and the VM's device models, and
//! applies the returned [`Action`]. Nothing here touches hardware; the few
//! things only the glue can do (fetch a guest instruction, write the console)
//! go through [`ExitEnv`].
//!
//! Guest-caused conditions never panic: they become an injected exception,
//! an SMCCC error code, or a stopped VM.

use crate::access::AccessSize;
use crate::addr::{Gva, Ipa, IpaRange};
use crate::esr::{self, DataAbort, Exit};
use crate::inject::{self, GuestExceptionState, Injection, PstateFeatures};
use crate::insn;
use crate::mmio::{self, GuestRegs, MmioPlan};
use crate::pl011::Pl011;
use crate::psci::{self, CallContext, FirmwareFeatures, Outcome, VcpuPower};

/// The registers the glue reads at every synchronous exit.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitInfo {
    /// `ESR_EL2`.
    pub esr: u64,
    /// `FAR_EL2`.
    pub far: u64,
    /// `HPFAR_EL2`.
    pub hpfar: u64,
    /// `ELR_EL2`: the guest PC.
    pub pc: u64,
    /// `SPSR_EL2`: the guest PSTATE.
    pub pstate: u64,
}

/// What only the glue can do for the policy.
pub trait ExitEnv {
    /// The A64 instruction at guest virtual address `pc`, read through the
    /// guest's stage-1 and the VM's stage-2 tables; `None` if unmapped.
    fn fetch_insn(&mut self, pc: Gva) -> Option<u32>;
    /// The guest's `VBAR_EL1` and `SCTLR_EL1`, needed to inject an exception.
    fn el1_vector_state(&mut self) -> (u64, u64);
    /// One byte the VM's UART transmitted.
    fn console_tx(&mut self, byte: u8);
}

/// Why a VM stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest called PSCI `SYSTEM_OFF`.
    PowerOff,
    /// The guest's last vCPU called `CPU_OFF`.
    AllCpusOff,
    /// The guest caused an error the hypervisor cannot contain within the
    /// VM otherwise (an SError, say).
    Crashed,
}

/// What the glue must do after a synchronous exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Return to the guest at the same PC (registers may have been updated).
    Resume,
    /// Return to the guest at PC + 4 (the instruction was emulated).
    Advance,
    /// Deliver a synchronous exception to the guest's EL1.
    Inject(Injection),
    /// Wait until an interrupt is pending for this vCPU, then return to the
    /// guest (at PC + 4 when `advance`); `x0` already holds any call result.
    WaitForInterrupt {
        /// Whether the PC must step past the trapping instruction.
        advance: bool,
    },
    /// Start vCPU `target` at `entry` with `x0 = context_id`; the caller
    /// already got `SUCCESS` and resumes after the call.
    CpuOn {
        /// vCPU index.
        target: usize,
        /// Entry point (IPA/VA with MMU off).
        entry: u64,
        /// Value for the target's x0.
        context_id: u64,
        /// Whether the caller's PC must step past the trapping instruction.
        advance: bool,
    },
    /// The guest called a Spectre workaround that the firmware said is
    /// required: make the same call to the firmware (`arg` in `w1`), write
    /// no guest register, and resume (at PC + 4 when `advance`).
    ForwardToFirmware {
        /// The `SMCCC_ARCH_WORKAROUND_n` function ID.
        function: u32,
        /// `w1` of the call.
        arg: u64,
        /// Whether the PC must step past the trapping instruction.
        advance: bool,
    },
    /// This vCPU powered itself off.
    CpuOff,
    /// Restart the VM from its pristine image.
    Reset,
    /// Stop the VM.
    Stop(StopReason),
}

/// Exit counters kept per VM (the full per-reason statistics come later; these
/// also drive log rate-limiting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounters {
    /// Hypercalls (`HVC`).
    pub hvc: u64,
    /// Trapped `SMC`s.
    pub smc: u64,
    /// Emulated MMIO accesses.
    pub mmio: u64,
    /// MMIO accesses emulated by decoding the instruction (ISV = 0).
    pub mmio_decoded: u64,
    /// External aborts injected for accesses outside the memory map.
    pub injected_aborts: u64,
    /// Undefined-instruction exceptions injected.
    pub injected_undefs: u64,
}

/// How many abort reports per VM are logged before they are only counted.
pub const ABORT_LOG_LIMIT: u64 = 8;

/// A guest abort worth reporting (the glue logs the first [`ABORT_LOG_LIMIT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortReport {
    /// Guest PC of the access.
    pub pc: u64,
    /// The IPA the guest touched.
    pub ipa: Ipa,
    /// Whether it was a write.
    pub write: bool,
    /// Why it could not be emulated.
    pub why: AbortCause,
}

/// Why an access was answered with an abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortCause {
    /// Nothing is mapped at that address in the VM's memory map (or a
    /// stage-1 table walk touched a device).
    Unmapped,
    /// The device rejected the access (width or offset).
    DeviceRejected,
    /// The instruction (ISV = 0) could not be fetched or decoded, or is a
    /// 16-bit T32 instruction that cannot be stepped over.
    Undecodable,
    /// An instruction fetch from outside guest memory.
    InstructionFetch,
}

/// The state of one VM that exit handling reads and changes.
#[derive(Debug)]
pub struct VmModel<'a> {
    /// VM index (reported by `STRATUM_INFO`).
    pub vm_id: u64,
    /// Times this VM booted (1 on the first boot).
    pub boot_count: u64,
    /// Guest RAM.
    pub ram: IpaRange,
    /// Where the emulated PL011 sits.
    pub uart_regs: IpaRange,
    /// The emulated PL011.
    pub uart: &'a mut Pl011,
    /// Power state of each vCPU.
    pub vcpus: &'a mut [VcpuPower],
    /// What the firmware below answered about the Spectre workarounds.
    pub firmware: FirmwareFeatures,
    /// Which PSTATE features the CPU has (for injected exceptions).
    pub pstate_features: PstateFeatures,
    /// Exit counters.
    pub counters: &'a mut ExitCounters,
    /// Set when an abort should be logged.
    pub last_abort: Option<AbortReport>,
}

/// Handles a synchronous exit of vCPU `vcpu` of `vm`.
pub fn handle_sync(
    info: &ExitInfo,
    vcpu: usize,
    regs: &mut impl GuestRegs,
    vm: &mut VmModel<'_>,
    env: &mut impl ExitEnv,
) -> Action {
    match esr::decode(info.esr) {
        Exit::Hvc { imm } => {
            vm.counters.hvc += 1;
            if imm != 0 {
                // SMCCC calls use HVC #0; other immediates are not calls we
                // implement (as KVM answers them).
                regs.set_x(0, stratum_abi::smccc::NOT_SUPPORTED as u64);
                return Action::Resume;
            }
            // HVC's preferred return address is already the next instruction.
            smccc_call(vcpu, regs, vm, false)
        }
        Exit::Smc { .. } => {
            vm.counters.smc += 1;
            // A trapped SMC returns to the SMC itself: advance past it.
            smccc_call(vcpu, regs, vm, true)
        }
        Exit::DataAbort(abort) => data_abort(info, &abort, regs, vm, env),
        Exit::InstructionAbort(_) => {
            let ipa = esr::fault_ipa(info.hpfar, info.far);
            vm.last_abort = Some(AbortReport {
                pc: info.pc,
                ipa,
                write: false,
                why: AbortCause::InstructionFetch,
            });
            vm.counters.injected_aborts += 1;
            let state = exception_state(info, vm.pstate_features, env);
            Action::Inject(inject::instruction_abort(&state, info.far))
        }
        Exit::Wfx(_) => Action::WaitForInterrupt { advance: true },
        _ => {
            vm.counters.injected_undefs += 1;
            let state = exception_state(info, vm.pstate_features, env);
            Action::Inject(inject::undefined(&state))
        }
    }
}

fn exception_state(
    info: &ExitInfo,
    features: PstateFeatures,
    env: &mut impl ExitEnv,
) -> GuestExceptionState {
    let (vbar_el1, sctlr_el1) = env.el1_vector_state();
    GuestExceptionState {
        pstate: info.pstate,
        pc: info.pc,
        vbar_el1,
        sctlr_el1,
        features,
    }
}

fn smccc_call(
    vcpu: usize,
    regs: &mut impl GuestRegs,
    vm: &mut VmModel<'_>,
    advance: bool,
) -> Action {
    let mut args = [0u64; 18];
    for (i, a) in args.iter_mut().enumerate() {
        *a = regs.x(i as u8);
    }
    let mut ctx = CallContext {
        caller: vcpu,
        vcpus: vm.vcpus,
        firmware: vm.firmware,
        ram: vm.ram,
        vm_id: vm.vm_id,
        boot_count: vm.boot_count,
    };
    let done = if advance {
        Action::Advance
    } else {
        Action::Resume
    };
    match psci::dispatch(&args, &mut ctx) {
        Outcome::Return {
            regs: values,
            count,
        } => {
            for (i, v) in values.iter().take(usize::from(count)).enumerate() {
                regs.set_x(i as u8, *v);
            }
            done
        }
        Outcome::CpuOn {
            target,
            entry,
            context_id,
        } => {
            regs.set_x(0, stratum_abi::smccc::SUCCESS as u64);
            Action::CpuOn {
                target,
                entry,
                context_id,
                advance,
            }
        }
        Outcome::CpuOff => {
            if vm.vcpus.iter().all(|v| v.state == psci::PowerState::Off) {
                Action::Stop(StopReason::AllCpusOff)
            } else {
                Action::CpuOff
            }
        }
        Outcome::Suspend => {
            regs.set_x(0, stratum_abi::smccc::SUCCESS as u64);
            Action::WaitForInterrupt { advance }
        }
        Outcome::Workaround { function, arg } => Action::ForwardToFirmware {
            function,
            arg,
            advance,
        },
        Outcome::SystemOff => Action::Stop(StopReason::PowerOff),
        Outcome::SystemReset => Action::Reset,
    }
}

fn data_abort(
    info: &ExitInfo,
    abort: &DataAbort,
    regs: &mut impl GuestRegs,
    vm: &mut VmModel<'_>,
    env: &mut impl ExitEnv,
) -> Action {
    let ipa = esr::fault_ipa(info.hpfar, info.far);
    match emulate_mmio(info, abort, ipa, regs, vm, env) {
        Ok(()) => Action::Advance,
        Err(why) => {
            vm.counters.injected_aborts += 1;
            vm.last_abort = Some(AbortReport {
                pc: info.pc,
                ipa,
                write: abort.write,
                why,
            });
            let state = exception_state(info, vm.pstate_features, env);
            Action::Inject(inject::data_abort(&state, info.far, abort.write))
        }
    }
}

/// Emulates the access that faulted at `ipa`, or says why it cannot be.
fn emulate_mmio(
    info: &ExitInfo,
    abort: &DataAbort,
    ipa: Ipa,
    regs: &mut impl GuestRegs,
    vm: &mut VmModel<'_>,
    env: &mut impl ExitEnv,
) -> Result<(), AbortCause> {
    // A stage-2 fault on a stage-1 table walk: HPFAR names the guest's
    // translation table, FAR the address the instruction accessed. Neither
    // is an access to a device register; the guest gets an external abort.
    if abort.s1ptw || !vm.uart_regs.contains(ipa) {
        return Err(AbortCause::Unmapped);
    }
    // Cache maintenance by address (DC CIVAC …) on a device register: the
    // emulated device has no cache to maintain, so the instruction completes
    // as a no-op (as on KVM) rather than faulting the guest.
    if abort.cache_maintenance {
        vm.counters.mmio += 1;
        return Ok(());
    }
    // `Action::Advance` steps 4 bytes: a 16-bit T32 instruction (IL = 0,
    // only possible from AArch32 with a valid syndrome) cannot be completed.
    if !abort.il32 {
        return Err(AbortCause::Undecodable);
    }
    // From the syndrome when the CPU gave one, else by decoding the
    // instruction at the guest PC (A64 only: AArch32 guests get an abort).
    let decoded = abort.syndrome.is_none();
    let plan = match &abort.syndrome {
        Some(s) => mmio::plan_from_syndrome(s, abort.write, ipa, regs),
        None => {
            if info.pstate & PSTATE_NRW != 0 {
                return Err(AbortCause::Undecodable);
            }
            let word = env
                .fetch_insn(Gva(info.pc))
                .ok_or(AbortCause::Undecodable)?;
            let insn = insn::decode(word).map_err(|_| AbortCause::Undecodable)?;
            mmio::plan_from_insn(&insn, regs, Gva(info.far), ipa)
                .map_err(|_| AbortCause::Undecodable)?
        }
    };
    let mut loaded = [0u64; 2];
    let n = perform(&plan, vm, env, &mut loaded).ok_or(AbortCause::DeviceRejected)?;
    mmio::complete(&plan, &loaded[..n], regs).map_err(|_| AbortCause::DeviceRejected)?;
    vm.counters.mmio += 1;
    if decoded {
        vm.counters.mmio_decoded += 1;
    }
    Ok(())
}

/// `PSTATE.nRW`: the guest was executing AArch32.
const PSTATE_NRW: u64 = 1 << 4;

/// Performs every access of `plan` on the UART, in order; the number of
/// values loaded, or `None` if the device rejected an access.
fn perform(
    plan: &MmioPlan,
    vm: &mut VmModel<'_>,
    env: &mut impl ExitEnv,
    loaded: &mut [u64; 2],
) -> Option<usize> {
    // Validate every access first, so a pair is all-or-nothing.
    for a in plan.accesses() {
        if !vm.uart_regs.contains_span(a.ipa, a.size.bytes()) || a.size == AccessSize::Double {
            return None;
        }
    }
    let mut n = 0;
    for a in plan.accesses() {
        let offset = a.ipa.offset_from(vm.uart_regs.start)?;
        let result = match a.store_value {
            Some(v) => vm
                .uart
                .write(offset, a.size, v, &mut |b| env.console_tx(b))
                .map(|()| 0),
            None => vm.uart.read(offset, a.size).map(u64::from),
        };
        let value = result.ok()?;
        if a.store_value.is_none() {
            *loaded.get_mut(n)? = value;
            n += 1;
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests;
