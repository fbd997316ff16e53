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
//!
//! Emulated devices sit on the VM's [`MmioBus`]: a data abort is routed by
//! address to the device that registered the window, through the one
//! [`MmioDevice`](crate::bus::MmioDevice) trait, so this module names no
//! device. What the devices' accesses did besides answering (console bytes,
//! interrupt lines that may have moved) comes back in [`VmModel::effects`].
//! Trapped `ICC_SGI1R_EL1`-family writes go to the VM's virtual GIC through
//! [`VmDevices::sgi_write`]. Reads of the ID registers that `HCR_EL2.TID3`
//! traps are answered as [`crate::idreg`] says.

use core::fmt;

use crate::access::AccessSize;
use crate::addr::{Gva, Ipa, IpaRange};
pub use crate::bus::AccessRefused;
use crate::bus::{DeviceAccess, DeviceTable, Effects, Hit, MmioBus};
use crate::debugpmu;
use crate::esr::{self, AccessSyndrome, DataAbort, Exit, SysRegAccess, WfxKind};
use crate::idreg::{self, IdRead};
use crate::inject::{self, GuestExceptionState, Injection, PstateFeatures};
use crate::insn;
use crate::mmio::{self, GuestRegs, MmioPlan};
use crate::psci::{self, CallContext, FirmwareFeatures, Outcome, VcpuPower};
use crate::stats::{self, ExitStats, Reason};
use stratum_abi::smccc::stratum;

/// The VM's emulated devices, as exit handling needs them: every device on
/// the bus by its id ([`DeviceTable`]), and the virtual GIC's trapped
/// SGI-generation registers.
pub trait VmDevices: DeviceTable {
    /// A trapped write of `ICC_SGI1R_EL1` (`which` = [`SgiRegister`]) by
    /// `vcpu`. False when the VM has no virtual GIC (the guest then gets an
    /// undefined-instruction exception).
    fn sgi_write(&mut self, vcpu: usize, which: SgiRegister, value: u64) -> bool;
}

/// The GICv3 SGI-generation registers, whose EL1 writes trap to EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiRegister {
    /// `ICC_SGI1R_EL1`: Group 1 SGIs.
    Sgi1r,
    /// `ICC_ASGI1R_EL1`: Group 1 SGIs for the other Security state.
    Asgi1r,
    /// `ICC_SGI0R_EL1`: Group 0 SGIs.
    Sgi0r,
}

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
    /// The hardware's value of the ID register `encoding`
    /// ([`esr::sysreg::encode`] packing), one that [`idreg::classify`]
    /// named allocated; read at EL2 for a guest read trapped by
    /// `HCR_EL2.TID3`.
    fn id_register(&mut self, encoding: u32) -> u64;
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
    /// Give the CPU to another vCPU if one shares it and is runnable, then
    /// return to the guest (at PC + 4 when `advance`): `WFE` and its timed
    /// forms, which may complete at once when nobody else wants the CPU.
    Yield {
        /// Whether the PC must step past the trapping instruction.
        advance: bool,
    },
    /// A trapped FP/SIMD access (`CPTR_EL2.TFP`): another vCPU's FP state is
    /// in the registers. Switch it and retry the instruction.
    FpTrap,
    /// A trapped access to a debug or PMU register that exists
    /// ([`debugpmu::Limits::allows`]): the glue makes the vCPU own the
    /// register file it needs ([`debugpmu::Reg::owns`]), then
    /// [`debugpmu::emulate`]s it, writes `rt` on a read and steps past it.
    DebugPmu {
        /// The register.
        reg: debugpmu::Reg,
        /// `MRS` (else `MSR`).
        read: bool,
        /// The transfer register (31: XZR).
        rt: u8,
    },
    /// This vCPU powered itself off.
    CpuOff,
    /// Restart the VM from its pristine image.
    Reset,
    /// Stop the VM.
    Stop(StopReason),
    /// Stratum `DOORBELL`: ring the peer of the VM's channel `channel`, write
    /// the status to `x0` and resume (after the call when `advance`).
    Doorbell {
        /// The channel's number in the VM (checked to exist).
        channel: u32,
        /// Whether to step over the calling instruction (`SMC`).
        advance: bool,
    },
    /// Stratum `MEM_INFO`: write the hypervisor's memory use to `x0..x3` and
    /// resume (after the call when `advance`).
    MemInfo {
        /// Whether to step over the calling instruction (`SMC`).
        advance: bool,
    },
}

/// A coarse summary of [`ExitStats`] (one or more vCPUs' counters summed by
/// family), for log rate-limiting and one-line reports.
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
    /// Emulated system-register accesses (the trapped SGI registers and
    /// ID-register reads).
    pub sysreg: u64,
    /// Trapped `WFI`/`WFE` (and the timed forms).
    pub wfx: u64,
}

impl ExitCounters {
    /// The summary of `stats`.
    pub fn of(stats: &ExitStats) -> Self {
        Self {
            hvc: stats.family("hvc"),
            smc: stats.family("smc"),
            mmio: stats.family("mmio"),
            mmio_decoded: stats.get(Reason::MmioDecoded),
            injected_aborts: stats.family("abort"),
            injected_undefs: stats.sum(&[Reason::SysregOther, Reason::Undef]),
            sysreg: stats.family("sysreg") - stats.get(Reason::SysregOther),
            wfx: stats.family("wfx"),
        }
    }

    /// The summary of several vCPUs' `stats`, added up.
    pub fn sum<'s>(stats: impl IntoIterator<Item = &'s ExitStats>) -> Self {
        stats
            .into_iter()
            .map(Self::of)
            .fold(Self::default(), |a, b| Self {
                hvc: a.hvc + b.hvc,
                smc: a.smc + b.smc,
                mmio: a.mmio + b.mmio,
                mmio_decoded: a.mmio_decoded + b.mmio_decoded,
                injected_aborts: a.injected_aborts + b.injected_aborts,
                injected_undefs: a.injected_undefs + b.injected_undefs,
                sysreg: a.sysreg + b.sysreg,
                wfx: a.wfx + b.wfx,
            })
    }
}

/// The reason [`handle_sync`] counted an exit under, and its detail (as an
/// exit-trace record carries it: the function ID of a call, the low 32 bits
/// of the IPA of an MMIO access or abort, a system register's encoding, the
/// `ESR_EL2` of an undefined exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// The counter that was incremented.
    pub reason: Reason,
    /// Reason-specific detail.
    pub detail: u32,
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

/// What to log about an injected exception, the first [`ABORT_LOG_LIMIT`]
/// of each kind per VM (counted in `counters`, the VM's totals including
/// this one): an undefined instruction, and an abort with its report.
/// Display each present note after `vm<id> '<name>': `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectionNotes {
    /// The undefined-instruction note: `ESR_EL2`, pc, and whether it was
    /// the last one logged.
    pub undef: Option<(u64, u64, bool)>,
    /// The abort note, and whether it was the last one logged.
    pub abort: Option<(AbortReport, bool)>,
}

impl InjectionNotes {
    /// The notes for `inj`, injected for the exit `info` (`last_abort`: the
    /// policy's report, for an abort).
    pub fn new(
        counters: &ExitCounters,
        info: &ExitInfo,
        inj: &Injection,
        last_abort: Option<AbortReport>,
    ) -> Self {
        let undefs = counters.injected_undefs;
        let aborts = counters.injected_aborts;
        let is_undef = inj.esr_el1 >> 26 == 0;
        Self {
            undef: (is_undef && undefs <= ABORT_LOG_LIMIT).then_some((
                info.esr,
                info.pc,
                undefs == ABORT_LOG_LIMIT,
            )),
            abort: last_abort
                .filter(|_| aborts <= ABORT_LOG_LIMIT)
                .map(|r| (r, aborts == ABORT_LOG_LIMIT)),
        }
    }

    /// The undefined-instruction note's text.
    pub fn undef_text(&self) -> Option<impl fmt::Display> {
        self.undef.map(|(esr, pc, last)| {
            Note(move |f: &mut fmt::Formatter<'_>| {
                write!(
                    f,
                    "undefined instruction injected for ESR_EL2 {esr:#x} at pc {pc:#x}{}",
                    if last {
                        " (further ones are only counted)"
                    } else {
                        ""
                    }
                )
            })
        })
    }

    /// The abort note's text.
    pub fn abort_text(&self) -> Option<impl fmt::Display> {
        self.abort.map(|(r, last)| {
            Note(move |f: &mut fmt::Formatter<'_>| {
                write!(
                    f,
                    "{:?} {} of {} at pc {:#x}: abort injected{}",
                    r.why,
                    if r.write { "write" } else { "read" },
                    r.ipa,
                    r.pc,
                    if last {
                        " (further aborts are only counted)"
                    } else {
                        ""
                    }
                )
            })
        })
    }
}

/// A closure that formats.
struct Note<F>(F);

impl<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result> fmt::Display for Note<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0)(f)
    }
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
    /// How many shared-memory channels the VM has.
    pub channels: u32,
    /// Guest RAM.
    pub ram: IpaRange,
    /// The VM's device windows.
    pub bus: &'a MmioBus,
    /// The devices behind them.
    pub devices: &'a mut dyn VmDevices,
    /// What the exit's device accesses did besides answering, for the glue
    /// to apply (starts empty).
    pub effects: Effects,
    /// Power state of each vCPU.
    pub vcpus: &'a mut [VcpuPower],
    /// What the firmware below answered about the Spectre workarounds.
    pub firmware: FirmwareFeatures,
    /// Which PSTATE features the CPU has (for injected exceptions).
    pub pstate_features: PstateFeatures,
    /// The breakpoints, watchpoints and PMU counters the CPUs have.
    pub debug_limits: debugpmu::Limits,
    /// The exiting vCPU's counters ([`handle_sync`] counts every exit once,
    /// by [`Reason`]).
    pub stats: &'a ExitStats,
    /// Set by [`handle_sync`] with the `trace` feature (and in tests): what
    /// it counted this exit as. Stays `None` otherwise.
    pub counted: Option<Counted>,
    /// Set when an abort should be logged.
    pub last_abort: Option<AbortReport>,
    /// The VM's random number generator (SMCCC TRNG).
    pub trng: &'a mut crate::trng::Trng,
}

impl core::fmt::Debug for dyn VmDevices + '_ {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("VmDevices")
    }
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
            if imm != 0 {
                tally(vm, Reason::HvcImmediate, u32::from(imm));
                // SMCCC calls use HVC #0; other immediates are not calls we
                // implement (as KVM answers them).
                regs.set_x(0, stratum_abi::smccc::NOT_SUPPORTED as u64);
                return Action::Resume;
            }
            // HVC's preferred return address is already the next instruction.
            let function = regs.x(0) as u32;
            tally(vm, stats::call_reason(function), function);
            smccc_call(vcpu, regs, vm, false)
        }
        Exit::Smc { .. } => {
            tally(vm, Reason::Smc, regs.x(0) as u32);
            // A trapped SMC returns to the SMC itself: advance past it.
            smccc_call(vcpu, regs, vm, true)
        }
        Exit::DataAbort(abort) => data_abort(info, &abort, vcpu, regs, vm, env),
        Exit::InstructionAbort(_) => {
            let ipa = esr::fault_ipa(info.hpfar, info.far);
            vm.last_abort = Some(AbortReport {
                pc: info.pc,
                ipa,
                write: false,
                why: AbortCause::InstructionFetch,
            });
            tally(vm, Reason::AbortFetch, ipa.0 as u32);
            let state = exception_state(info, vm.pstate_features, env);
            Action::Inject(inject::instruction_abort(&state, info.far))
        }
        // WFI blocks until an interrupt is pending; WFE (and the timed
        // forms, which may complete early) yield: they complete at once
        // unless another vCPU shares the CPU and wants it.
        Exit::Wfx(w) => {
            tally(vm, stats::wfx_reason(w.kind), 0);
            match w.kind {
                WfxKind::Wfi => Action::WaitForInterrupt { advance: true },
                WfxKind::Wfe | WfxKind::Wfit | WfxKind::Wfet => Action::Yield { advance: true },
            }
        }
        // FP/SIMD traps only while another vCPU's FP state is loaded: the
        // glue switches it and the instruction runs again.
        Exit::FpAccess => {
            tally(vm, Reason::FpTrap, 0);
            Action::FpTrap
        }
        // ID registers trapped by HCR_EL2.TID3: the hardware's value (or
        // zero for a reserved encoding), as the guest would read untrapped.
        Exit::SysReg(access) if idreg::classify(&access).is_some() => {
            tally(vm, Reason::SysregId, access.encoding());
            let value = match idreg::classify(&access) {
                Some(IdRead::Hardware(encoding)) => env.id_register(encoding),
                Some(IdRead::Zero) | None => 0,
            };
            regs.set_x(access.rt, value);
            Action::Advance
        }
        Exit::SysReg(access)
            if sgi_register(&access)
                .is_some_and(|which| vm.devices.sgi_write(vcpu, which, regs.x(access.rt))) =>
        {
            tally(vm, stats::sysreg_reason(&access), access.encoding());
            Action::Advance
        }
        exit => {
            // Debug and PMU registers (MDCR_EL2 traps them all): those the
            // CPU has go to the glue, to be performed or emulated. Out of
            // line: the calls, ID reads and SGIs above never pay for it.
            if let Exit::SysReg(access) = exit
                && let Some(action) = debug_or_pmu(vm, &access)
            {
                return action;
            }
            match exit {
                Exit::SysReg(access) => tally(vm, Reason::SysregOther, access.encoding()),
                _ => tally(vm, Reason::Undef, info.esr as u32),
            }
            let state = exception_state(info, vm.pstate_features, env);
            Action::Inject(inject::undefined(&state))
        }
    }
}

/// A trapped access to a debug or PMU register this CPU has, as the
/// action that performs or emulates it; `None` for any other register (or
/// one the CPU lacks, or a forbidden direction: UNDEFINED).
#[inline(never)]
fn debug_or_pmu(vm: &mut VmModel<'_>, access: &SysRegAccess) -> Option<Action> {
    let reg = debugpmu::classify(access)?;
    if !vm.debug_limits.allows(reg, access.read) {
        return None;
    }
    let reason = match reg {
        debugpmu::Reg::Debug(_) => Reason::SysregDebug,
        debugpmu::Reg::Pmu(_) => Reason::SysregPmu,
    };
    tally(vm, reason, access.encoding());
    Some(Action::DebugPmu {
        reg,
        read: access.read,
        rt: access.rt,
    })
}

/// Counts this exit under `reason` and remembers it (for the exit trace).
fn tally(vm: &mut VmModel<'_>, reason: Reason, detail: u32) {
    vm.stats.count(reason);
    // Only the exit trace reads it; without the feature the store (measured
    // at about 15 instructions on the hypercall path) is left out.
    if cfg!(any(test, feature = "trace")) {
        vm.counted = Some(Counted { reason, detail });
    }
}

/// A trapped write of an SGI-generation register (a GICv3 guest's IPI), as
/// [`sgi_write_of`] finds it in the syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgiWrite {
    /// The register.
    pub which: SgiRegister,
    /// The source register (31: XZR, the value 0).
    pub rt: u8,
    /// The reason the exit counts under.
    pub reason: Reason,
    /// The register's encoding (the exit trace's detail).
    pub encoding: u32,
}

/// The trapped SGI-register write in `ESR_EL2`, from the syndrome alone,
/// for the glue's direct route: exactly the exits [`handle_sync`] answers
/// by handing the write to [`VmDevices::sgi_write`] and stepping past it,
/// counted the same way (a property test pins the two together). `None`
/// for every other syndrome.
#[inline]
pub fn sgi_write_of(esr: u64) -> Option<SgiWrite> {
    // The three registers share all but `op2` (3, 0, c12, c11, 5..=7): one
    // mask and compare finds them (a write, `Direction` 0), `op2` tells
    // them apart. The same as matching [`esr::sysreg_access`]'s encoding,
    // in a fifth of the instructions.
    const FIXED: u64 =
        (0x3f << esr::EC_SHIFT) | (0x3 << 20) | (0x7 << 14) | (0xf << 10) | (0xf << 1) | 1;
    const SGI: u64 =
        ((esr::ec::SYS64 as u64) << esr::EC_SHIFT) | (3 << 20) | (12 << 10) | (11 << 1);
    if esr & FIXED != SGI {
        return None;
    }
    let (which, reason, encoding) = match (esr >> 17) & 0x7 {
        5 => (
            SgiRegister::Sgi1r,
            Reason::SysregSgi1r,
            esr::sysreg::ICC_SGI1R_EL1,
        ),
        6 => (
            SgiRegister::Asgi1r,
            Reason::SysregAsgi1r,
            esr::sysreg::ICC_ASGI1R_EL1,
        ),
        7 => (
            SgiRegister::Sgi0r,
            Reason::SysregSgi0r,
            esr::sysreg::ICC_SGI0R_EL1,
        ),
        _ => return None,
    };
    Some(SgiWrite {
        which,
        rt: ((esr >> 5) & 0x1f) as u8,
        reason,
        encoding,
    })
}

/// A Stratum `DOORBELL` call by `HVC`, as [`doorbell_of`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoorbellCall {
    /// `x1`, the channel the caller names (not yet checked against its
    /// VM's channels: [`DoorbellCall::channel_in`]).
    pub x1: u64,
    /// The reason the exit counts under; its detail is [`stratum::DOORBELL`].
    pub reason: Reason,
}

impl DoorbellCall {
    /// The channel rung, when the VM has `channels` of them and `x1` names
    /// one; `None` when the call fails (`INVALID_PARAMETERS`, which the full
    /// path answers).
    #[inline]
    pub fn channel_in(&self, channels: u32) -> Option<u32> {
        u32::try_from(self.x1).ok().filter(|&c| c < channels)
    }
}

/// The `DOORBELL` call in `ESR_EL2` and the caller's `x0`, `x1`, for the
/// glue's direct route: with [`DoorbellCall::channel_in`], exactly the
/// exits [`handle_sync`] answers with [`Action::Doorbell`] for an `HVC`
/// (a property test pins the two together), counted the same way. `None`
/// for every other exit.
#[inline]
pub fn doorbell_of(esr: u64, x0: u64, x1: u64) -> Option<DoorbellCall> {
    // `HVC #0` (an immediate other than 0 is no call), the function in the
    // low 32 bits of `x0`.
    const FIXED: u64 = (0x3f << esr::EC_SHIFT) | 0xffff;
    const HVC0: u64 = (esr::ec::HVC64 as u64) << esr::EC_SHIFT;
    if esr & FIXED != HVC0 || x0 as u32 != stratum::DOORBELL {
        return None;
    }
    // A constant: the table lookup is not folded at run time.
    const REASON: Reason = stats::call_reason(stratum::DOORBELL);
    Some(DoorbellCall { x1, reason: REASON })
}

/// A trapped wait-for instruction, as [`wfx_of`] finds it in the syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WfxExit {
    /// `WFI`: the vCPU waits until an interrupt it would take is pending
    /// ([`Action::WaitForInterrupt`]). Otherwise (`WFE`, `WFIT`, `WFET`) it
    /// only offers its CPU ([`Action::Yield`]). Both step past it.
    pub wait: bool,
    /// The reason the exit counts under (detail 0).
    pub reason: Reason,
}

/// The trapped `WFI`/`WFE` in `ESR_EL2`, from the syndrome alone, for the
/// glue's direct route: exactly the exits [`handle_sync`] answers with
/// [`Action::WaitForInterrupt`] or [`Action::Yield`] for a wait-for
/// instruction, counted the same way (a property test pins the two
/// together). `None` for every other syndrome.
#[inline]
pub fn wfx_of(esr: u64) -> Option<WfxExit> {
    if (esr >> esr::EC_SHIFT) as u8 & 0x3f != esr::ec::WFX {
        return None;
    }
    let kind = esr::wfx_kind(esr);
    Some(WfxExit {
        wait: kind == WfxKind::Wfi,
        reason: stats::wfx_reason(kind),
    })
}

/// The SGI-generation register a trapped `MSR` names (writes only: reading
/// them is undefined).
fn sgi_register(access: &SysRegAccess) -> Option<SgiRegister> {
    if access.read {
        return None;
    }
    match access.encoding() {
        esr::sysreg::ICC_SGI1R_EL1 => Some(SgiRegister::Sgi1r),
        esr::sysreg::ICC_ASGI1R_EL1 => Some(SgiRegister::Asgi1r),
        esr::sysreg::ICC_SGI0R_EL1 => Some(SgiRegister::Sgi0r),
        _ => None,
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
    let args: [u64; psci::CALL_REGS] = core::array::from_fn(|i| regs.x(i as u8));
    let mut ctx = CallContext {
        caller: vcpu,
        vcpus: vm.vcpus,
        firmware: vm.firmware,
        ram: vm.ram,
        vm_id: vm.vm_id,
        boot_count: vm.boot_count,
        channels: vm.channels,
        trng: vm.trng,
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
        Outcome::Doorbell { channel } => Action::Doorbell { channel, advance },
        Outcome::MemInfo => Action::MemInfo { advance },
        Outcome::SystemOff => Action::Stop(StopReason::PowerOff),
        Outcome::SystemReset => Action::Reset,
    }
}

fn data_abort(
    info: &ExitInfo,
    abort: &DataAbort,
    vcpu: usize,
    regs: &mut impl GuestRegs,
    vm: &mut VmModel<'_>,
    env: &mut impl ExitEnv,
) -> Action {
    let ipa = esr::fault_ipa(info.hpfar, info.far);
    match emulate_mmio(info, abort, ipa, vcpu, regs, vm, env) {
        Ok(reason) => {
            tally(vm, reason, ipa.0 as u32);
            Action::Advance
        }
        Err(why) => {
            let reason = match why {
                AbortCause::Unmapped => Reason::AbortUnmapped,
                AbortCause::DeviceRejected => Reason::AbortRejected,
                AbortCause::Undecodable => Reason::AbortUndecodable,
                AbortCause::InstructionFetch => Reason::AbortFetch,
            };
            tally(vm, reason, ipa.0 as u32);
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

/// Emulates the access that faulted at `ipa` (returning the reason to count
/// it under, the device window's), or says why it cannot be.
fn emulate_mmio(
    info: &ExitInfo,
    abort: &DataAbort,
    ipa: Ipa,
    vcpu: usize,
    regs: &mut impl GuestRegs,
    vm: &mut VmModel<'_>,
    env: &mut impl ExitEnv,
) -> Result<Reason, AbortCause> {
    // A stage-2 fault on a stage-1 table walk: HPFAR names the guest's
    // translation table, FAR the address the instruction accessed. Neither
    // is an access to a device register; the guest gets an external abort.
    if abort.s1ptw {
        return Err(AbortCause::Unmapped);
    }
    let hit = vm.bus.find(ipa).ok_or(AbortCause::Unmapped)?;
    let reason = if abort.write {
        hit.write_reason
    } else {
        hit.read_reason
    };
    // Cache maintenance by address (DC CIVAC …) on a device register: the
    // emulated device has no cache to maintain, so the instruction completes
    // as a no-op (as on KVM) rather than faulting the guest.
    if abort.cache_maintenance {
        return Ok(reason);
    }
    // `Action::Advance` steps 4 bytes: a 16-bit T32 instruction (IL = 0,
    // only possible from AArch32 with a valid syndrome) cannot be completed.
    if !abort.il32 {
        return Err(AbortCause::Undecodable);
    }
    // From the syndrome when the CPU gave one, else by decoding the
    // instruction at the guest PC (A64 only: AArch32 guests get an abort).
    let plan = match &abort.syndrome {
        Some(s) => {
            let devices = &mut *vm.devices;
            syndrome_access(
                s,
                abort.write,
                ipa,
                &hit,
                vcpu,
                regs,
                devices,
                &mut vm.effects,
            )?;
            return Ok(reason);
        }
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
    let n = perform(&plan, vcpu, &hit, vm, &mut loaded).ok_or(AbortCause::DeviceRejected)?;
    mmio::complete(&plan, &loaded[..n], regs).map_err(|_| AbortCause::DeviceRejected)?;
    vm.stats.count(Reason::MmioDecoded);
    Ok(reason)
}

/// The one access of a data abort with a valid syndrome `s` at `ipa`, on
/// the device of `hit`: a store writes the low `SAS` bytes of `Xt`, a load
/// puts the value into `Xt` extended as the syndrome says. Nothing happens
/// unless the access lies wholly in the bank and the device takes it.
#[allow(
    clippy::too_many_arguments,
    reason = "the exit's facts, each needed once"
)]
#[inline(always)]
fn syndrome_access(
    s: &AccessSyndrome,
    write: bool,
    ipa: Ipa,
    hit: &Hit,
    vcpu: usize,
    regs: &mut impl GuestRegs,
    devices: &mut dyn DeviceTable,
    fx: &mut Effects,
) -> Result<(), AbortCause> {
    // Wholly inside the bank: an `ipa` below it wraps to an offset past
    // its end (a bank never reaches the top of the address space).
    let offset = ipa.0.wrapping_sub(hit.bank_range.start.0);
    let bytes = 1u64 << (s.size as u32);
    if offset >= hit.bank_range.size || hit.bank_range.size - offset < bytes {
        return Err(AbortCause::DeviceRejected);
    }
    let access = DeviceAccess {
        vcpu,
        region: hit.region,
        bank: hit.bank,
        offset,
        size: s.size,
    };
    let shift = unused_bits(s.size);
    if write {
        // XZR reads as zero (`GuestRegs::x(31)`).
        let value = regs.x(s.reg) << shift >> shift;
        devices
            .write(hit.device, &access, value, fx)
            .map_err(|_| AbortCause::DeviceRejected)
    } else {
        let value = devices
            .read(hit.device, &access, fx)
            .map_err(|_| AbortCause::DeviceRejected)?;
        regs.set_x(s.reg, load_value(s, value));
        Ok(())
    }
}

/// The bits of a register above an access of `size`: 56, 48, 32 or 0.
/// (`AccessSize` counts log2 of the bytes, as `SAS` does.)
#[inline(always)]
const fn unused_bits(size: AccessSize) -> u32 {
    64 - (8 << size as u32)
}

const _: () = {
    assert!(unused_bits(AccessSize::Byte) == 56);
    assert!(unused_bits(AccessSize::Half) == 48);
    assert!(unused_bits(AccessSize::Word) == 32);
    assert!(unused_bits(AccessSize::Double) == 0);
};

/// [`mmio::syndrome_load_value`] in shifts, without a lookup per size:
/// the loaded `SAS` bytes, sign- or zero-extended (`SSE`), then cut to
/// 32 bits for a W register (`SF` clear). A test pins the two together.
#[inline(always)]
pub(crate) const fn load_value(s: &AccessSyndrome, value: u64) -> u64 {
    let shift = unused_bits(s.size);
    let v = if s.sign_extend {
        ((value << shift) as i64 >> shift) as u64
    } else {
        value << shift >> shift
    };
    if s.sixty_four { v } else { v as u32 as u64 }
}

/// The common MMIO exit, answered from the syndrome alone: a data abort
/// from the guest with a valid instruction syndrome, to a device on `bus`,
/// that the device takes. Returns the reason to count it under; the PC must
/// then step past the instruction. `None` leaves the exit to
/// [`handle_sync`], which gives the same answer for every exit this one
/// takes and decides the rest (no syndrome, an abort to inject, a
/// cache-maintenance no-op). A device refuses an access before it has any
/// effect, so the policy may meet the same access again.
///
/// This lets the glue answer a device register access under the VM lock
/// without building the whole [`VmModel`]; the property test
/// `the_direct_mmio_route_agrees_with_the_policy` checks the agreement.
#[allow(
    clippy::too_many_arguments,
    reason = "the exit's facts, each needed once"
)]
#[inline]
pub fn mmio_access(
    esr: u64,
    far: u64,
    hpfar: u64,
    vcpu: usize,
    regs: &mut impl GuestRegs,
    bus: &MmioBus,
    devices: &mut dyn DeviceTable,
    fx: &mut Effects,
) -> Option<Reason> {
    let (s, write) = esr::mmio_syndrome(esr)?;
    let ipa = esr::fault_ipa(hpfar, far);
    let hit = bus.find(ipa)?;
    mmio_device_access(&s, write, ipa, &hit, vcpu, regs, devices, fx).ok()
}

/// The second half of [`mmio_access`], for a glue that found the window
/// itself (before taking what the device needs): the access of syndrome
/// `s` (a write if `write`) at `ipa`, on the device of `hit`. The reason
/// to count it under, or [`AccessRefused`] — the access lies outside the
/// bank, or the device refused it — before anything changed; the policy
/// ([`handle_sync`]) then injects the abort.
#[allow(
    clippy::too_many_arguments,
    reason = "the exit's facts, each needed once"
)]
#[inline(always)]
pub fn mmio_device_access(
    s: &AccessSyndrome,
    write: bool,
    ipa: Ipa,
    hit: &Hit,
    vcpu: usize,
    regs: &mut impl GuestRegs,
    devices: &mut dyn DeviceTable,
    fx: &mut Effects,
) -> Result<Reason, AccessRefused> {
    match syndrome_access(s, write, ipa, hit, vcpu, regs, devices, fx) {
        Ok(()) if write => Ok(hit.write_reason),
        Ok(()) => Ok(hit.read_reason),
        Err(_) => Err(AccessRefused),
    }
}

/// `PSTATE.nRW`: the guest was executing AArch32.
const PSTATE_NRW: u64 = 1 << 4;

/// Performs every access of `plan` on the device of `hit`, in order; the
/// number of values loaded, or `None` if the device rejected an access.
fn perform(
    plan: &MmioPlan,
    vcpu: usize,
    hit: &Hit,
    vm: &mut VmModel<'_>,
    loaded: &mut [u64; 2],
) -> Option<usize> {
    // Validate every access first, so a pair is all-or-nothing: each must lie
    // wholly in the same bank of the same window.
    for a in plan.accesses() {
        if !hit.bank_range.contains_span(a.ipa, a.size.bytes()) {
            return None;
        }
    }
    let device = vm.devices.device(hit.device)?;
    let mut n = 0;
    for a in plan.accesses() {
        let access = DeviceAccess {
            vcpu,
            region: hit.region,
            bank: hit.bank,
            offset: a.ipa.offset_from(hit.bank_range.start)?,
            size: a.size,
        };
        match a.store_value {
            Some(v) => device.write(&access, v, &mut vm.effects).ok()?,
            None => {
                *loaded.get_mut(n)? = device.read(&access, &mut vm.effects).ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

pub mod early;
#[cfg(test)]
mod tests;
