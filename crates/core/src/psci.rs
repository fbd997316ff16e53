//! SMCCC 1.2 (Arm DEN0028) and PSCI 1.1 (Arm DEN0022) for guests: a pure
//! dispatcher over one VM's vCPU power states.
//!
//! The glue hands [`dispatch`] the caller's `x0..x17` and a [`CallContext`];
//! it gets back an [`Outcome`] saying what to write back or what to do. All
//! argument checking happens here; the glue never inspects guest registers.
//!
//! Conventions (DEN0028, "SMC Calling Convention" chapter):
//! - The function ID is `w0`; `x0[63:32]` is ignored. Only fast calls
//!   (bit 31 set) with bits \[23:16\] zero are recognised; anything else is an
//!   unknown function.
//! - SMC32 functions (bit 30 clear) see only the low 32 bits of each argument.
//! - Unknown and unimplemented functions return `NOT_SUPPORTED` (-1,
//!   sign-extended to 64 bits) in `x0` and leave every other register alone.
//!
//! Power states per vCPU ([`PowerState`]): PSCI's view of the vCPU
//! lifecycle ([`crate::lifecycle`], which owns the states and keeps this
//! view in step). The dispatcher reads it, and changes it only for the
//! caller's `CPU_OFF` (to `Off`) and an accepted `CPU_ON` (`Off` to
//! `OnPending`), which the glue reports to the lifecycle at once:
//!
//! ```text
//!   Off --CPU_ON--> OnPending --its CPU runs it--> On
//!    ^                                              |
//!    +------------------- CPU_OFF ------------------+
//! ```
//!
//! A `SYSTEM_RESET` turns the boot vCPU `OnPending` and the others `Off`
//! again (the lifecycle's boot).
//!
//! Firmware workarounds: the hypervisor asks the real firmware about
//! `SMCCC_ARCH_WORKAROUND_1/2/3` once at boot and answers guests exactly as it
//! did ([`FirmwareFeatures`]). A workaround the firmware does not implement is
//! never advertised: claiming it would cost a guest an exit per syscall and
//! protect nothing.

use stratum_abi::smccc::{self, stratum, trng};

use crate::addr::{Ipa, IpaRange};
use crate::trng::Trng;

/// `SYSTEM_RESET2`, SMC32 form (DEN0022 "SYSTEM_RESET2"; the ABI crate lists
/// only the SMC64 one).
const PSCI_SYSTEM_RESET2_32: u32 = 0x8400_0012;

/// Function ID bit 31: fast call (DEN0028, "Function Identifiers").
const FID_FAST: u32 = 1 << 31;
/// Function ID bit 30: SMC64/HVC64 calling convention.
const FID_SMC64: u32 = 1 << 30;
/// Function ID bits \[23:16\]: must be zero in a fast call.
const FID_MBZ: u32 = 0x00ff_0000;

/// The affinity fields of an MPIDR: Aff3 \[39:32\], Aff2 \[23:16\], Aff1 \[15:8\],
/// Aff0 \[7:0\] (Arm ARM DDI 0487, register description "MPIDR_EL1"). PSCI `target_cpu` and
/// `target_affinity` arguments must have every other bit zero.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// `AFFINITY_INFO` results (DEN0022 "AFFINITY_INFO").
const AFFINITY_ON: i64 = 0;
const AFFINITY_OFF: i64 = 1;
const AFFINITY_ON_PENDING: i64 = 2;

/// `CPU_SUSPEND` `power_state`, original format (DEN0022 "CPU_SUSPEND", power_state parameter): StateID
/// \[15:0\], StateType \[16\] (1 = powerdown), PowerLevel \[25:24\]; the other
/// bits are reserved and must be zero.
const POWER_STATE_RESERVED: u32 = 0xfcfe_0000;
const POWER_STATE_POWERDOWN: u32 = 1 << 16;

/// `SYSTEM_RESET2` `reset_type` bit 31: vendor-specific reset (DEN0022 "SYSTEM_RESET2").
const RESET_TYPE_VENDOR: u32 = 1 << 31;
/// `SYSTEM_RESET2` architectural reset type 0: `SYSTEM_WARM_RESET`.
const RESET_TYPE_WARM: u32 = 0;

/// PSCI functions (and `SMCCC_VERSION`) that [`dispatch`] implements: what
/// `PSCI_FEATURES` reports as present.
pub const PSCI_IMPLEMENTED: [u32; 15] = [
    smccc::SMCCC_VERSION,
    smccc::PSCI_VERSION,
    smccc::PSCI_FEATURES,
    smccc::PSCI_CPU_SUSPEND_32,
    smccc::PSCI_CPU_SUSPEND_64,
    smccc::PSCI_CPU_OFF,
    smccc::PSCI_CPU_ON_32,
    smccc::PSCI_CPU_ON_64,
    smccc::PSCI_AFFINITY_INFO_32,
    smccc::PSCI_AFFINITY_INFO_64,
    smccc::PSCI_MIGRATE_INFO_TYPE,
    smccc::PSCI_SYSTEM_OFF,
    smccc::PSCI_SYSTEM_RESET,
    PSCI_SYSTEM_RESET2_32,
    smccc::PSCI_SYSTEM_RESET2_64,
    // MIGRATE and MIGRATE_INFO_UP_CPU are optional when MIGRATE_INFO_TYPE
    // says no trusted OS is present, and are not implemented.
];

/// A vCPU's PSCI power state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerState {
    /// Not running; `CPU_ON` may start it.
    Off,
    /// `CPU_ON` accepted; the glue has not run it yet.
    OnPending,
    /// Running (or suspended, which PSCI still counts as on).
    On,
}

/// One vCPU as PSCI sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuPower {
    /// The vCPU's virtual MPIDR; only its affinity fields
    /// ([`MPIDR_AFFINITY_MASK`]) identify it.
    pub mpidr: u64,
    /// Its power state.
    pub state: PowerState,
}

impl VcpuPower {
    /// A vCPU with this MPIDR and state.
    pub const fn new(mpidr: u64, state: PowerState) -> Self {
        Self { mpidr, state }
    }
}

/// What the real firmware answered to `SMCCC_ARCH_FEATURES` for one
/// `SMCCC_ARCH_WORKAROUND_n` (DEN0028, "SMCCC_ARCH_WORKAROUND_1/2/3").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkaroundState {
    /// 0: the workaround is implemented and this PE needs it; guests should
    /// call it.
    Required,
    /// 1: the workaround is implemented but this PE is not affected; calling
    /// it is harmless and does nothing.
    NotRequired,
    /// -1: the firmware does not implement the workaround (whether or not
    /// the PE is affected). Not advertised to guests.
    NotSupported,
    /// -2 (`WORKAROUND_2` only): no dynamic mitigation is needed, because the
    /// PE is unaffected or the mitigation is permanently on; the workaround
    /// must not be called.
    DoNotInvoke,
}

impl WorkaroundState {
    /// Interprets the firmware's `SMCCC_ARCH_FEATURES` answer (its `w0`).
    /// Anything other than 0, 1 and -2 counts as not supported.
    pub const fn from_firmware(x0: u64) -> Self {
        match x0 as u32 as i32 {
            0 => Self::Required,
            1 => Self::NotRequired,
            -2 => Self::DoNotInvoke,
            _ => Self::NotSupported,
        }
    }

    /// The value `SMCCC_ARCH_FEATURES` returns for this state.
    pub const fn feature_value(self) -> i64 {
        match self {
            Self::Required => 0,
            Self::NotRequired => 1,
            Self::NotSupported => smccc::NOT_SUPPORTED,
            Self::DoNotInvoke => -2,
        }
    }
}

/// The firmware's answers for the Spectre workarounds, asked once at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareFeatures {
    /// `SMCCC_ARCH_WORKAROUND_1` (CVE-2017-5715, branch target injection).
    pub workaround_1: WorkaroundState,
    /// `SMCCC_ARCH_WORKAROUND_2` (CVE-2018-3639, speculative store bypass).
    pub workaround_2: WorkaroundState,
    /// `SMCCC_ARCH_WORKAROUND_3` (CVE-2022-23960, branch history injection).
    pub workaround_3: WorkaroundState,
}

impl FirmwareFeatures {
    /// No workaround implemented (firmware without SMCCC 1.1, or none at all).
    pub const NONE: Self = Self {
        workaround_1: WorkaroundState::NotSupported,
        workaround_2: WorkaroundState::NotSupported,
        workaround_3: WorkaroundState::NotSupported,
    };

    fn get(&self, function: u32) -> Option<WorkaroundState> {
        match function {
            smccc::SMCCC_ARCH_WORKAROUND_1 => Some(self.workaround_1),
            smccc::SMCCC_ARCH_WORKAROUND_2 => Some(self.workaround_2),
            smccc::SMCCC_ARCH_WORKAROUND_3 => Some(self.workaround_3),
            _ => None,
        }
    }
}

/// Everything [`dispatch`] may look at or change besides the arguments.
#[derive(Debug)]
pub struct CallContext<'a> {
    /// Index of the calling vCPU in `vcpus`.
    pub caller: usize,
    /// Every vCPU of the VM.
    pub vcpus: &'a mut [VcpuPower],
    /// The firmware's workaround answers.
    pub firmware: FirmwareFeatures,
    /// The VM's RAM: where `CPU_ON` and `CPU_SUSPEND` entry points may be.
    pub ram: IpaRange,
    /// The VM's id (reported by Stratum's `INFO`).
    pub vm_id: u64,
    /// How often this VM has booted, 1 on the first boot (reported by `INFO`).
    pub boot_count: u64,
    /// How many shared-memory channels the VM has (`DOORBELL` takes 0..this).
    pub channels: u32,
    /// The VM's random number generator (`TRNG_RND32`/`RND64`).
    pub trng: &'a mut Trng,
}

/// What the glue must do after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write `regs[..count]` to `x0..x(count-1)`, leave the rest, and resume
    /// after the call.
    Return {
        /// Values for `x0..x3`.
        regs: [u64; 4],
        /// How many of them to write (0..=4).
        count: u8,
    },
    /// `CPU_ON` accepted; vCPU `target` is already `OnPending`. The glue
    /// resets it to start at `entry` (AArch64 EL1h, MMU and caches off, DAIF
    /// masked) with `x0 = context_id`, makes it runnable (the lifecycle
    /// marks it `On` when its CPU runs it), and returns `SUCCESS` in the
    /// caller's `x0`.
    CpuOn {
        /// Index of the vCPU to start.
        target: usize,
        /// Entry point (an IPA inside RAM, 4-byte aligned).
        entry: u64,
        /// Value for the new vCPU's `x0`.
        context_id: u64,
    },
    /// `CPU_OFF`: the caller is now `Off`; stop running it. It only runs
    /// again through `CPU_ON`, from a fresh entry point.
    CpuOff,
    /// `CPU_SUSPEND`: wait as for `WFI` until the caller has an interrupt
    /// pending, then return `SUCCESS` in `x0` and resume after the call.
    /// Powerdown requests are demoted to this standby too, which PSCI
    /// allows (DEN0022 "CPU_SUSPEND": an implementation may enter a shallower
    /// state than asked, and then returns `SUCCESS`); the entry point is
    /// never used.
    Suspend,
    /// Stratum `DOORBELL` for one of the VM's channels (already checked to
    /// exist): ring the peer and write the status to `x0`.
    Doorbell {
        /// The channel's number in the caller's VM.
        channel: u32,
    },
    /// Stratum `MEM_INFO`: write the hypervisor's memory use to `x0..x3`.
    MemInfo,
    /// `SYSTEM_OFF`: stop this VM.
    SystemOff,
    /// `SYSTEM_RESET` or `SYSTEM_RESET2`: reboot this VM (a warm reset and
    /// vendor resets are treated as a full one).
    SystemReset,
    /// A guest called an `SMCCC_ARCH_WORKAROUND_n` that the firmware said is
    /// required: apply it (e.g. issue the same call to the firmware, with
    /// `arg` as `w1` for `WORKAROUND_2`, whose state the glue then keeps per
    /// vCPU), write no registers and resume after the call.
    Workaround {
        /// The workaround's function ID.
        function: u32,
        /// `w1` of the call (`WORKAROUND_2`: 0 disables, non-zero enables the
        /// mitigation); 0 for the others.
        arg: u64,
    },
}

impl Outcome {
    /// A return writing `x0` only.
    const fn ret1(x0: u64) -> Self {
        Self::Return {
            regs: [x0, 0, 0, 0],
            count: 1,
        }
    }

    /// A return writing a (sign-extended) status code to `x0`.
    const fn status(code: i64) -> Self {
        Self::ret1(code as u64)
    }
}

/// The calls whose answer depends only on the arguments and the firmware's
/// features — versions, feature queries, the vendor service's count, UID
/// and revision, `MIGRATE_INFO_TYPE`, and every function ID Stratum does not
/// implement (`NOT_SUPPORTED`) — answered, or `None` for the calls that
/// read or change VM state ([`needs_vm`]) or ask the firmware. They read
/// and change no VM state, so the exit path may answer them before taking
/// any lock ([`crate::vmexit::early`]): an unknown or garbage call costs no
/// more than a version query. [`dispatch`] answers them the same way.
pub fn query(args: &[u64; CALL_REGS], firmware: &FirmwareFeatures) -> Option<Outcome> {
    let fid = args[0] as u32;
    let arg1 = if fid & FID_SMC64 != 0 {
        args[1]
    } else {
        args[1] & 0xffff_ffff
    };
    Some(match fid {
        smccc::SMCCC_VERSION => Outcome::ret1(u64::from(smccc::SMCCC_VERSION_1_2)),
        smccc::SMCCC_ARCH_FEATURES => arch_features(arg1 as u32, firmware),
        smccc::PSCI_VERSION => Outcome::ret1(u64::from(smccc::PSCI_VERSION_1_1)),
        smccc::PSCI_FEATURES => psci_features(arg1 as u32),
        stratum::CALL_COUNT => Outcome::ret1(stratum::COUNT),
        stratum::CALL_UID => Outcome::Return {
            regs: stratum::UID.map(u64::from),
            count: 4,
        },
        stratum::REVISION => Outcome::Return {
            regs: [1, 0, 0, 0],
            count: 2,
        },
        smccc::PSCI_MIGRATE_INFO_TYPE => Outcome::status(smccc::MIGRATE_INFO_TYPE_NOT_PRESENT),
        trng::VERSION => Outcome::ret1(trng::VERSION_1_0),
        trng::FEATURES => match arg1 as u32 {
            trng::VERSION | trng::FEATURES | trng::GET_UUID | trng::RND32 | trng::RND64 => {
                Outcome::status(smccc::SUCCESS)
            }
            _ => Outcome::status(smccc::NOT_SUPPORTED),
        },
        trng::GET_UUID => Outcome::Return {
            regs: trng::UUID.map(u64::from),
            count: 4,
        },
        f if needs_vm(f) => return None,
        // MIGRATE, MIGRATE_INFO_UP_CPU, SMCCC_ARCH_SOC_ID, IDs with the
        // fast bit clear or MBZ bits set, and everything else.
        _ => Outcome::status(smccc::NOT_SUPPORTED),
    })
}

/// The implemented calls whose answer needs the VM's state (power states,
/// channels, its identity) or a call to the firmware: [`dispatch`] answers
/// them, [`query`] does not.
const fn needs_vm(fid: u32) -> bool {
    matches!(
        fid,
        smccc::SMCCC_ARCH_WORKAROUND_1
            | smccc::SMCCC_ARCH_WORKAROUND_2
            | smccc::SMCCC_ARCH_WORKAROUND_3
            | smccc::PSCI_CPU_SUSPEND_32
            | smccc::PSCI_CPU_SUSPEND_64
            | smccc::PSCI_CPU_OFF
            | smccc::PSCI_CPU_ON_32
            | smccc::PSCI_CPU_ON_64
            | smccc::PSCI_AFFINITY_INFO_32
            | smccc::PSCI_AFFINITY_INFO_64
            | smccc::PSCI_SYSTEM_OFF
            | smccc::PSCI_SYSTEM_RESET
            | PSCI_SYSTEM_RESET2_32
            | smccc::PSCI_SYSTEM_RESET2_64
            | stratum::INFO
            | stratum::DOORBELL
            | stratum::MEM_INFO
            | trng::RND32
            | trng::RND64
    )
}

/// How many of the caller's registers [`dispatch`] reads (`x0..x3`).
pub const CALL_REGS: usize = 4;

/// Handles one SMCCC call (`HVC`, or a trapped `SMC`) from vCPU `ctx.caller`.
/// `args` are the caller's `x0..x3`: the function ID and the (at most
/// three) arguments of every call implemented here; SMCCC 1.2 allows up
/// to x17, which no function here reads. Never panics, whatever the
/// arguments or context.
pub fn dispatch(args: &[u64; CALL_REGS], ctx: &mut CallContext<'_>) -> Outcome {
    if let Some(answer) = query(args, &ctx.firmware) {
        return answer;
    }
    let fid = args[0] as u32;
    if fid & FID_FAST == 0 || fid & FID_MBZ != 0 {
        return Outcome::status(smccc::NOT_SUPPORTED);
    }
    let smc64 = fid & FID_SMC64 != 0;
    let arg = |i: usize| {
        if smc64 {
            args[i]
        } else {
            args[i] & 0xffff_ffff
        }
    };
    match fid {
        smccc::SMCCC_ARCH_WORKAROUND_1
        | smccc::SMCCC_ARCH_WORKAROUND_2
        | smccc::SMCCC_ARCH_WORKAROUND_3 => workaround(fid, arg(1), &ctx.firmware),
        smccc::PSCI_CPU_SUSPEND_32 | smccc::PSCI_CPU_SUSPEND_64 => {
            cpu_suspend(arg(1) as u32, arg(2), ctx)
        }
        smccc::PSCI_CPU_OFF => cpu_off(ctx),
        smccc::PSCI_CPU_ON_32 | smccc::PSCI_CPU_ON_64 => cpu_on(arg(1), arg(2), arg(3), ctx),
        smccc::PSCI_AFFINITY_INFO_32 | smccc::PSCI_AFFINITY_INFO_64 => {
            affinity_info(arg(1), arg(2) as u32, ctx)
        }
        smccc::PSCI_MIGRATE_INFO_TYPE => Outcome::status(smccc::MIGRATE_INFO_TYPE_NOT_PRESENT),
        smccc::PSCI_SYSTEM_OFF => Outcome::SystemOff,
        smccc::PSCI_SYSTEM_RESET => Outcome::SystemReset,
        PSCI_SYSTEM_RESET2_32 | smccc::PSCI_SYSTEM_RESET2_64 => system_reset2(arg(1) as u32),
        stratum::INFO => Outcome::Return {
            regs: [
                stratum::ABI_VERSION,
                ctx.vm_id,
                ctx.caller as u64,
                ctx.boot_count,
            ],
            count: 4,
        },
        stratum::DOORBELL => match u32::try_from(args[1]) {
            Ok(channel) if channel < ctx.channels => Outcome::Doorbell { channel },
            _ => Outcome::status(smccc::INVALID_PARAMETERS),
        },
        stratum::MEM_INFO => Outcome::MemInfo,
        trng::RND32 => trng_rnd(ctx, args[1] & 0xffff_ffff, 32),
        trng::RND64 => trng_rnd(ctx, args[1], 64),
        // MIGRATE, MIGRATE_INFO_UP_CPU, SMCCC_ARCH_SOC_ID and everything else.
        _ => Outcome::status(smccc::NOT_SUPPORTED),
    }
}

/// `TRNG_RND32`/`TRNG_RND64` for `bits` bits in `reg_bits`-bit registers
/// (DEN0098): `SUCCESS` and the bits in `x1..x3`, or
/// `INVALID_PARAMETERS` for 0 or more bits than the registers hold.
fn trng_rnd(ctx: &mut CallContext<'_>, bits: u64, reg_bits: u32) -> Outcome {
    match ctx.trng.rnd(bits, reg_bits) {
        Some([x1, x2, x3]) => Outcome::Return {
            regs: [smccc::SUCCESS as u64, x1, x2, x3],
            count: 4,
        },
        None => Outcome::status(smccc::INVALID_PARAMETERS),
    }
}

/// `SMCCC_ARCH_FEATURES(arch_func_id)` (DEN0028 "SMCCC_ARCH_FEATURES").
fn arch_features(function: u32, firmware: &FirmwareFeatures) -> Outcome {
    match function {
        smccc::SMCCC_VERSION | smccc::SMCCC_ARCH_FEATURES => Outcome::status(smccc::SUCCESS),
        f => match firmware.get(f) {
            Some(state) => Outcome::status(state.feature_value()),
            None => Outcome::status(smccc::NOT_SUPPORTED),
        },
    }
}

/// A guest calls `SMCCC_ARCH_WORKAROUND_n` itself.
fn workaround(function: u32, arg: u64, firmware: &FirmwareFeatures) -> Outcome {
    match firmware.get(function) {
        Some(WorkaroundState::Required) => Outcome::Workaround {
            function,
            arg: if function == smccc::SMCCC_ARCH_WORKAROUND_2 {
                arg
            } else {
                0
            },
        },
        // Implemented but nothing to do: return without touching registers.
        Some(WorkaroundState::NotRequired | WorkaroundState::DoNotInvoke) => Outcome::Return {
            regs: [0; 4],
            count: 0,
        },
        Some(WorkaroundState::NotSupported) | None => Outcome::status(smccc::NOT_SUPPORTED),
    }
}

/// `PSCI_FEATURES(psci_func_id)` (DEN0022 "PSCI_FEATURES").
fn psci_features(function: u32) -> Outcome {
    if !PSCI_IMPLEMENTED.contains(&function) {
        return Outcome::status(smccc::NOT_SUPPORTED);
    }
    // CPU_SUSPEND answers its feature flags: bit 1 = 0, original power_state
    // format; bit 0 = 0, platform-coordinated mode only. Everything else: 0.
    Outcome::status(smccc::SUCCESS)
}

/// Whether `entry` may be a vCPU entry point: inside RAM and 4-byte aligned
/// (the vCPU starts in AArch64, where a misaligned PC would fault at once).
fn valid_entry(entry: u64, ram: &IpaRange) -> bool {
    entry & 3 == 0 && ram.contains(Ipa(entry))
}

/// `CPU_SUSPEND(power_state, entry_point_address, context_id)` (DEN0022 "CPU_SUSPEND").
fn cpu_suspend(power_state: u32, entry: u64, ctx: &CallContext<'_>) -> Outcome {
    if power_state & POWER_STATE_RESERVED != 0 {
        return Outcome::status(smccc::INVALID_PARAMETERS);
    }
    // The entry point only matters for powerdown, which we demote to standby;
    // still refuse one the guest could never have resumed at.
    if power_state & POWER_STATE_POWERDOWN != 0 && !valid_entry(entry, &ctx.ram) {
        return Outcome::status(smccc::INVALID_ADDRESS);
    }
    Outcome::Suspend
}

/// `CPU_OFF` (DEN0022 "CPU_OFF").
fn cpu_off(ctx: &mut CallContext<'_>) -> Outcome {
    match ctx.vcpus.get_mut(ctx.caller) {
        Some(v) => {
            v.state = PowerState::Off;
            Outcome::CpuOff
        }
        // A caller that is not in the VM is a glue bug; refuse rather than panic.
        None => Outcome::status(smccc::DENIED),
    }
}

/// `CPU_ON(target_cpu, entry_point_address, context_id)` (DEN0022 "CPU_ON").
/// Checks in the reference firmware's order: target, entry point, state.
fn cpu_on(target: u64, entry: u64, context_id: u64, ctx: &mut CallContext<'_>) -> Outcome {
    if target & !MPIDR_AFFINITY_MASK != 0 {
        return Outcome::status(smccc::INVALID_PARAMETERS);
    }
    let Some(index) = ctx
        .vcpus
        .iter()
        .position(|v| v.mpidr & MPIDR_AFFINITY_MASK == target)
    else {
        return Outcome::status(smccc::INVALID_PARAMETERS);
    };
    if !valid_entry(entry, &ctx.ram) {
        return Outcome::status(smccc::INVALID_ADDRESS);
    }
    let vcpu = &mut ctx.vcpus[index];
    match vcpu.state {
        PowerState::On => Outcome::status(smccc::ALREADY_ON),
        PowerState::OnPending => Outcome::status(smccc::ON_PENDING),
        PowerState::Off => {
            vcpu.state = PowerState::OnPending;
            Outcome::CpuOn {
                target: index,
                entry,
                context_id,
            }
        }
    }
}

/// Affinity fields at `level` and above: the ones `AFFINITY_INFO` compares.
const fn affinity_mask_from(level: u32) -> u64 {
    match level {
        0 => MPIDR_AFFINITY_MASK,
        1 => 0xff_00ff_ff00,
        2 => 0xff_00ff_0000,
        _ => 0xff_0000_0000,
    }
}

/// `AFFINITY_INFO(target_affinity, lowest_affinity_level)` (DEN0022 "AFFINITY_INFO").
/// Levels 0 to 3 are supported. Affinity fields below the level are ignored;
/// those at and above it must name an existing node. A node is ON when any
/// vCPU in it is on, else ON_PENDING when any is pending, else OFF.
fn affinity_info(target: u64, level: u32, ctx: &CallContext<'_>) -> Outcome {
    if level > 3 || target & !MPIDR_AFFINITY_MASK != 0 {
        return Outcome::status(smccc::INVALID_PARAMETERS);
    }
    let mask = affinity_mask_from(level);
    let mut node = ctx
        .vcpus
        .iter()
        .filter(|v| v.mpidr & mask == target & mask)
        .peekable();
    if node.peek().is_none() {
        return Outcome::status(smccc::INVALID_PARAMETERS);
    }
    let state = node.fold(AFFINITY_OFF, |acc, v| match (acc, v.state) {
        (_, PowerState::On) | (AFFINITY_ON, _) => AFFINITY_ON,
        (_, PowerState::OnPending) | (AFFINITY_ON_PENDING, _) => AFFINITY_ON_PENDING,
        _ => AFFINITY_OFF,
    });
    Outcome::status(state)
}

/// `SYSTEM_RESET2(reset_type, cookie)` (DEN0022 "SYSTEM_RESET2").
fn system_reset2(reset_type: u32) -> Outcome {
    if reset_type & RESET_TYPE_VENDOR != 0 || reset_type == RESET_TYPE_WARM {
        Outcome::SystemReset
    } else {
        Outcome::status(smccc::INVALID_PARAMETERS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smccc::*;

    const RAM: IpaRange = IpaRange {
        start: Ipa(0x4000_0000),
        size: 0x1000_0000,
    };
    const NOT_SUPPORTED_X0: u64 = u64::MAX;

    /// Five vCPUs: 0.0.0.0 (on, MPIDR with its RES1 bit 31 set), 0.0.0.1,
    /// 0.0.1.0, 1.0.0.0 and 0.1.0.0 (Aff3.Aff2.Aff1.Aff0), all off but the first.
    fn vm() -> Vec<VcpuPower> {
        vec![
            VcpuPower::new(0x8000_0000, PowerState::On),
            VcpuPower::new(0x0000_0001, PowerState::Off),
            VcpuPower::new(0x0000_0100, PowerState::Off),
            VcpuPower::new(0x1_0000_0000, PowerState::Off),
            VcpuPower::new(0x0001_0000, PowerState::Off),
        ]
    }

    fn ctx(vcpus: &mut [VcpuPower], caller: usize) -> CallContext<'_> {
        CallContext {
            caller,
            vcpus,
            firmware: FirmwareFeatures::NONE,
            ram: RAM,
            vm_id: 7,
            boot_count: 3,
            channels: 2,
            trng: Box::leak(Box::new(Trng::new(&[0; 16], 7, 3, 0))),
        }
    }

    fn call(ctx: &mut CallContext<'_>, regs: &[u64]) -> Outcome {
        let mut args = [0u64; CALL_REGS];
        args[..regs.len()].copy_from_slice(regs);
        dispatch(&args, ctx)
    }

    /// `x0` of a one-register return.
    fn x0(o: Outcome) -> i64 {
        match o {
            Outcome::Return { regs, count: 1 } => regs[0] as i64,
            other => panic!("expected a one-register return, got {other:?}"),
        }
    }

    fn call_x0(vcpus: &mut [VcpuPower], regs: &[u64]) -> i64 {
        x0(call(&mut ctx(vcpus, 0), regs))
    }

    #[test]
    fn versions() {
        let mut v = vm();
        assert_eq!(call_x0(&mut v, &[SMCCC_VERSION.into()]), 0x1_0002);
        assert_eq!(call_x0(&mut v, &[PSCI_VERSION.into()]), 0x1_0001);
        // x0[63:32] is not part of the function ID.
        assert_eq!(
            call_x0(&mut v, &[0xdead_beef_0000_0000 | u64::from(PSCI_VERSION)]),
            0x1_0001
        );
    }

    #[test]
    fn unknown_functions() {
        let mut v = vm();
        for fid in [
            0u32,
            0xffff_ffff,
            PSCI_VERSION & !FID_FAST,     // yielding call
            PSCI_VERSION | 0x0001_0000,   // bits [23:16] set
            PSCI_CPU_ON_64 | 0x0080_0000, // bits [23:16] set
            PSCI_VERSION | FID_SMC64,     // no SMC64 PSCI_VERSION
            SMCCC_ARCH_SOC_ID,
            PSCI_MIGRATE_32,
            PSCI_MIGRATE_64,
            PSCI_MIGRATE_INFO_UP_CPU_32,
            PSCI_MIGRATE_INFO_UP_CPU_64,
            0x8400_000B,                // PSCI 1.0 optional functions
            0x8400_0013,                // MEM_PROTECT
            0xC600_0003,                // next Stratum call
            stratum::INFO & !FID_SMC64, // INFO is SMC64 only
            0x8600_FF02,                // reserved query
            0x8500_0000,                // standard hypervisor service
        ] {
            let o = call(&mut ctx(&mut v, 0), &[fid.into(), 1, 2, 3]);
            assert_eq!(
                o,
                Outcome::Return {
                    regs: [NOT_SUPPORTED_X0, 0, 0, 0],
                    count: 1
                },
                "{fid:#x}"
            );
        }
        assert_eq!(v, vm(), "no state change");
    }

    #[test]
    fn arch_features() {
        let mut v = vm();
        let mut c = ctx(&mut v, 0);
        let q = |c: &mut CallContext<'_>, f: u64| x0(call(c, &[SMCCC_ARCH_FEATURES.into(), f]));
        assert_eq!(q(&mut c, SMCCC_VERSION.into()), 0);
        assert_eq!(q(&mut c, SMCCC_ARCH_FEATURES.into()), 0);
        assert_eq!(q(&mut c, SMCCC_ARCH_SOC_ID.into()), -1);
        assert_eq!(q(&mut c, PSCI_VERSION.into()), -1);
        assert_eq!(q(&mut c, 0x8000_0003), -1);
        // No firmware support: nothing advertised.
        for wa in [
            SMCCC_ARCH_WORKAROUND_1,
            SMCCC_ARCH_WORKAROUND_2,
            SMCCC_ARCH_WORKAROUND_3,
        ] {
            assert_eq!(q(&mut c, wa.into()), -1);
        }
        c.firmware = FirmwareFeatures {
            workaround_1: WorkaroundState::Required,
            workaround_2: WorkaroundState::DoNotInvoke,
            workaround_3: WorkaroundState::NotRequired,
        };
        assert_eq!(q(&mut c, SMCCC_ARCH_WORKAROUND_1.into()), 0);
        assert_eq!(q(&mut c, SMCCC_ARCH_WORKAROUND_2.into()), -2);
        assert_eq!(q(&mut c, SMCCC_ARCH_WORKAROUND_3.into()), 1);
        // SMC32: only w1 is the queried ID.
        assert_eq!(
            q(
                &mut c,
                0xffff_ffff_0000_0000 | u64::from(SMCCC_ARCH_WORKAROUND_1)
            ),
            0
        );
    }

    #[test]
    fn workaround_state_from_firmware() {
        use WorkaroundState::*;
        assert_eq!(WorkaroundState::from_firmware(0), Required);
        assert_eq!(WorkaroundState::from_firmware(1), NotRequired);
        assert_eq!(WorkaroundState::from_firmware(u64::MAX), NotSupported);
        assert_eq!(WorkaroundState::from_firmware(0xffff_ffff), NotSupported);
        assert_eq!(WorkaroundState::from_firmware(0xffff_fffe), DoNotInvoke);
        assert_eq!(WorkaroundState::from_firmware(-2i64 as u64), DoNotInvoke);
        assert_eq!(WorkaroundState::from_firmware(2), NotSupported);
        assert_eq!(WorkaroundState::from_firmware(-3i64 as u64), NotSupported);
        for s in [Required, NotRequired, NotSupported, DoNotInvoke] {
            assert_eq!(WorkaroundState::from_firmware(s.feature_value() as u64), s);
        }
    }

    #[test]
    fn workaround_calls() {
        let mut v = vm();
        let mut c = ctx(&mut v, 0);
        // Not implemented by the firmware: NOT_SUPPORTED.
        assert_eq!(x0(call(&mut c, &[SMCCC_ARCH_WORKAROUND_1.into()])), -1);
        c.firmware = FirmwareFeatures {
            workaround_1: WorkaroundState::Required,
            workaround_2: WorkaroundState::Required,
            workaround_3: WorkaroundState::NotRequired,
        };
        assert_eq!(
            call(&mut c, &[SMCCC_ARCH_WORKAROUND_1.into(), 5]),
            Outcome::Workaround {
                function: SMCCC_ARCH_WORKAROUND_1,
                arg: 0
            }
        );
        // WORKAROUND_2 passes w1 on (SMC32: upper bits dropped).
        assert_eq!(
            call(&mut c, &[SMCCC_ARCH_WORKAROUND_2.into(), 0x1_0000_0000]),
            Outcome::Workaround {
                function: SMCCC_ARCH_WORKAROUND_2,
                arg: 0
            }
        );
        assert_eq!(
            call(&mut c, &[SMCCC_ARCH_WORKAROUND_2.into(), 1]),
            Outcome::Workaround {
                function: SMCCC_ARCH_WORKAROUND_2,
                arg: 1
            }
        );
        // Implemented but not needed: a no-op that writes nothing.
        assert_eq!(
            call(&mut c, &[SMCCC_ARCH_WORKAROUND_3.into()]),
            Outcome::Return {
                regs: [0; 4],
                count: 0
            }
        );
    }

    #[test]
    fn psci_features() {
        let mut v = vm();
        let q = |v: &mut Vec<VcpuPower>, f: u64| call_x0(v, &[PSCI_FEATURES.into(), f]);
        for f in PSCI_IMPLEMENTED {
            assert_eq!(q(&mut v, f.into()), 0, "{f:#x}");
            // Upper half of x1 ignored.
            assert_eq!(q(&mut v, 0xffff_ffff_0000_0000 | u64::from(f)), 0, "{f:#x}");
        }
        for f in [
            SMCCC_ARCH_FEATURES,
            SMCCC_ARCH_SOC_ID,
            SMCCC_ARCH_WORKAROUND_1,
            PSCI_MIGRATE_32,
            PSCI_MIGRATE_64,
            PSCI_MIGRATE_INFO_UP_CPU_32,
            PSCI_MIGRATE_INFO_UP_CPU_64,
            0x8400_000B,
            0x8400_0013,
            stratum::INFO,
            0,
        ] {
            assert_eq!(q(&mut v, f.into()), -1, "{f:#x}");
        }
    }

    #[test]
    fn everything_advertised_is_implemented() {
        for f in PSCI_IMPLEMENTED {
            let mut v = vm();
            // x1 = PSCI_VERSION so that PSCI_FEATURES has something to find.
            let o = call(&mut ctx(&mut v, 0), &[f.into(), PSCI_VERSION.into(), 0, 0]);
            assert_ne!(
                o,
                Outcome::Return {
                    regs: [NOT_SUPPORTED_X0, 0, 0, 0],
                    count: 1
                },
                "{f:#x}"
            );
        }
    }

    #[test]
    fn cpu_on_lifecycle() {
        let mut v = vm();
        let mut c = ctx(&mut v, 0);
        let on = |c: &mut CallContext<'_>, t: u64| {
            call(c, &[PSCI_CPU_ON_64.into(), t, 0x4008_0000, 0xfeed])
        };
        assert_eq!(
            on(&mut c, 1),
            Outcome::CpuOn {
                target: 1,
                entry: 0x4008_0000,
                context_id: 0xfeed
            }
        );
        assert_eq!(c.vcpus[1].state, PowerState::OnPending);
        assert_eq!(x0(on(&mut c, 1)), ON_PENDING);
        // Its CPU ran it.
        c.vcpus[1].state = PowerState::On;
        assert_eq!(c.vcpus[1].state, PowerState::On);
        assert_eq!(x0(on(&mut c, 1)), ALREADY_ON);
        // The caller itself (MPIDR given without bit 31).
        assert_eq!(x0(on(&mut c, 0)), ALREADY_ON);
        // Aff3 only reachable with the SMC64 form.
        assert_eq!(
            on(&mut c, 0x1_0000_0000),
            Outcome::CpuOn {
                target: 3,
                entry: 0x4008_0000,
                context_id: 0xfeed
            }
        );
        // CPU_OFF from vCPU 1, then it can be started again.
        let mut c1 = ctx(c.vcpus, 1);
        assert_eq!(call(&mut c1, &[PSCI_CPU_OFF.into()]), Outcome::CpuOff);
        assert_eq!(c1.vcpus[1].state, PowerState::Off);
        c1.caller = 0;
        assert!(matches!(on(&mut c1, 1), Outcome::CpuOn { target: 1, .. }));
    }

    #[test]
    fn cpu_on_errors() {
        let mut v = vm();
        let mut c = ctx(&mut v, 0);
        let on = |c: &mut CallContext<'_>, t: u64, e: u64| {
            x0(call(c, &[PSCI_CPU_ON_64.into(), t, e, 0]))
        };
        // No such vCPU, at every affinity level.
        for t in [
            2,
            0x200,
            0x2_0000,
            0x2_0000_0000,
            0x1_0000_0001,
            0x101,
            0x1_0001,
        ] {
            assert_eq!(on(&mut c, t, 0x4000_0000), INVALID_PARAMETERS, "{t:#x}");
        }
        // Bits outside Aff0..Aff3, even with matching affinity.
        for t in [
            0x8000_0001,
            0x0100_0001,
            0x1_0000_0000_0001,
            1 << 63,
            0x4000_0001,
        ] {
            assert_eq!(on(&mut c, t, 0x4000_0000), INVALID_PARAMETERS, "{t:#x}");
        }
        // Entry points outside RAM or misaligned.
        for e in [0, 0x3fff_fffc, 0x5000_0000, 0x4000_0002, 0x4000_0001, !3] {
            assert_eq!(on(&mut c, 1, e), INVALID_ADDRESS, "{e:#x}");
        }
        // A bad target is reported before a bad address.
        assert_eq!(on(&mut c, 9, 0), INVALID_PARAMETERS);
        // A bad address is reported before the state.
        assert_eq!(on(&mut c, 0, 0), INVALID_ADDRESS);
        assert_eq!(c.vcpus, &vm()[..], "nothing changed");
        // The last word of RAM is fine.
        assert!(matches!(
            call(&mut c, &[PSCI_CPU_ON_64.into(), 1, 0x4fff_fffc, 0]),
            Outcome::CpuOn { .. }
        ));
    }

    #[test]
    fn cpu_on_32_truncates() {
        let mut v = vm();
        let mut c = ctx(&mut v, 0);
        // w1 = 1 → vCPU 1 (the Aff3 bit is lost), w2 = 0x4000_0000, w3 truncated.
        assert_eq!(
            call(
                &mut c,
                &[
                    PSCI_CPU_ON_32.into(),
                    0x1_0000_0001,
                    0xffff_ffff_4000_0000,
                    0x1234_5678_9abc_def0
                ]
            ),
            Outcome::CpuOn {
                target: 1,
                entry: 0x4000_0000,
                context_id: 0x9abc_def0
            }
        );
        // The SMC64 form keeps every bit.
        assert_eq!(
            x0(call(
                &mut c,
                &[PSCI_CPU_ON_64.into(), 0x100, 0xffff_ffff_4000_0000, 0]
            )),
            INVALID_ADDRESS
        );
        assert_eq!(
            call(
                &mut c,
                &[
                    PSCI_CPU_ON_64.into(),
                    0x100,
                    0x4000_0000,
                    0x1234_5678_9abc_def0
                ]
            ),
            Outcome::CpuOn {
                target: 2,
                entry: 0x4000_0000,
                context_id: 0x1234_5678_9abc_def0
            }
        );
    }

    #[test]
    fn cpu_off() {
        let mut v = vm();
        assert_eq!(
            call(&mut ctx(&mut v, 0), &[PSCI_CPU_OFF.into()]),
            Outcome::CpuOff
        );
        assert_eq!(v[0].state, PowerState::Off);
        // A caller index outside the VM is refused, not a panic.
        assert_eq!(
            x0(call(&mut ctx(&mut v, 99), &[PSCI_CPU_OFF.into()])),
            DENIED
        );
    }

    #[test]
    fn affinity_info_level0() {
        let mut v = vm();
        v[1].state = PowerState::OnPending;
        let q = |v: &mut Vec<VcpuPower>, t: u64, l: u64| {
            call_x0(v, &[PSCI_AFFINITY_INFO_64.into(), t, l])
        };
        assert_eq!(q(&mut v, 0, 0), 0, "ON");
        assert_eq!(q(&mut v, 1, 0), 2, "ON_PENDING");
        assert_eq!(q(&mut v, 0x100, 0), 1, "OFF");
        assert_eq!(q(&mut v, 0x1_0000_0000, 0), 1);
        assert_eq!(q(&mut v, 0x1_0000, 0), 1);
        // Aff3 set but Aff0 matching vCPU 1: no such vCPU.
        assert_eq!(q(&mut v, 0x1_0000_0001, 0), INVALID_PARAMETERS);
        // Aff1/Aff2 set with Aff0 matching.
        assert_eq!(q(&mut v, 0x101, 0), INVALID_PARAMETERS);
        assert_eq!(q(&mut v, 0x1_0001, 0), INVALID_PARAMETERS);
        assert_eq!(q(&mut v, 0x5, 0), INVALID_PARAMETERS);
        // Non-affinity bits.
        assert_eq!(q(&mut v, 0x8000_0000, 0), INVALID_PARAMETERS);
        assert_eq!(q(&mut v, 0x0100_0000, 0), INVALID_PARAMETERS);
        assert_eq!(q(&mut v, 1 << 40, 0), INVALID_PARAMETERS);
        // Levels beyond 3.
        assert_eq!(q(&mut v, 0, 4), INVALID_PARAMETERS);
        assert_eq!(q(&mut v, 0, u64::from(u32::MAX)), INVALID_PARAMETERS);
        // lowest_affinity_level is a uint32 even in the SMC64 form.
        assert_eq!(q(&mut v, 1, 0x1_0000_0000), 2);
    }

    #[test]
    fn affinity_info_higher_levels() {
        let mut v = vm();
        let q = |v: &mut Vec<VcpuPower>, t: u64, l: u64| {
            call_x0(v, &[PSCI_AFFINITY_INFO_64.into(), t, l])
        };
        // Level 1: cluster 0.0.0 holds vCPUs 0 and 1; Aff0 is ignored.
        assert_eq!(q(&mut v, 0xff, 1), 0, "vCPU 0 on");
        v[0].state = PowerState::Off;
        assert_eq!(q(&mut v, 0x7, 1), 1, "both off");
        v[1].state = PowerState::OnPending;
        assert_eq!(q(&mut v, 0x0, 1), 2, "one pending");
        v[0].state = PowerState::On;
        assert_eq!(q(&mut v, 0x0, 1), 0, "on wins over pending");
        assert_eq!(q(&mut v, 0x1ff, 1), 1, "cluster 0.0.1: vCPU 2");
        assert_eq!(q(&mut v, 0x2ff, 1), INVALID_PARAMETERS);
        assert_eq!(q(&mut v, 0x1_0000_0100, 1), INVALID_PARAMETERS);
        // Level 2: Aff1 and Aff0 ignored.
        assert_eq!(q(&mut v, 0xffff, 2), 0, "0.0: vCPUs 0-2");
        assert_eq!(q(&mut v, 0x1_ffff, 2), 1, "0.1: vCPU 4");
        assert_eq!(q(&mut v, 0x2_0000, 2), INVALID_PARAMETERS);
        assert_eq!(q(&mut v, 0x1_0001_0000, 2), INVALID_PARAMETERS);
        // Level 3: only Aff3 counts.
        assert_eq!(q(&mut v, 0xff_ffff, 3), 0);
        assert_eq!(q(&mut v, 0x1_00ff_ffff, 3), 1);
        assert_eq!(q(&mut v, 0x2_0000_0000, 3), INVALID_PARAMETERS);
        // Non-affinity bits are still refused at higher levels.
        assert_eq!(q(&mut v, 0x8000_0000, 3), INVALID_PARAMETERS);
    }

    #[test]
    fn affinity_info_32_truncates() {
        let mut v = vm();
        // w1 = 0 (the Aff3 bit is dropped) → vCPU 0, on.
        assert_eq!(
            call_x0(&mut v, &[PSCI_AFFINITY_INFO_32.into(), 0x1_0000_0000, 0]),
            0
        );
        // The SMC64 form sees vCPU 3, off.
        assert_eq!(
            call_x0(&mut v, &[PSCI_AFFINITY_INFO_64.into(), 0x1_0000_0000, 0]),
            1
        );
        // Empty VM: nothing exists.
        assert_eq!(
            call_x0(&mut [], &[PSCI_AFFINITY_INFO_64.into(), 0, 0]),
            INVALID_PARAMETERS
        );
    }

    #[test]
    fn cpu_suspend() {
        let mut v = vm();
        let s = |v: &mut Vec<VcpuPower>, f: u32, ps: u64, e: u64| {
            call(&mut ctx(v, 0), &[f.into(), ps, e, 0])
        };
        let bad = |code: i64| Outcome::status(code);
        // Standby: the entry point is ignored.
        assert_eq!(s(&mut v, PSCI_CPU_SUSPEND_64, 0, 0), Outcome::Suspend);
        assert_eq!(
            s(&mut v, PSCI_CPU_SUSPEND_64, 0x0300_ffff, 0),
            Outcome::Suspend
        );
        // Powerdown: demoted to standby, but the entry point must be valid.
        assert_eq!(
            s(&mut v, PSCI_CPU_SUSPEND_64, 0x0001_0000, 0x4000_1000),
            Outcome::Suspend
        );
        assert_eq!(
            s(&mut v, PSCI_CPU_SUSPEND_64, 0x0001_0000, 0x1000),
            bad(INVALID_ADDRESS)
        );
        assert_eq!(
            s(&mut v, PSCI_CPU_SUSPEND_64, 0x0001_0000, 0x4000_1002),
            bad(INVALID_ADDRESS)
        );
        // Reserved bits.
        for bit in [17, 20, 23, 26, 30, 31] {
            assert_eq!(
                s(&mut v, PSCI_CPU_SUSPEND_64, 1 << bit, 0x4000_0000),
                bad(INVALID_PARAMETERS),
                "bit {bit}"
            );
        }
        // power_state is a uint32 in both forms.
        assert_eq!(
            s(&mut v, PSCI_CPU_SUSPEND_64, 0x1_0000_0000, 0),
            Outcome::Suspend
        );
        // SMC32 truncates the entry point; SMC64 does not.
        assert_eq!(
            s(&mut v, PSCI_CPU_SUSPEND_32, 0x1_0000, 0xffff_ffff_4000_0000),
            Outcome::Suspend
        );
        assert_eq!(
            s(&mut v, PSCI_CPU_SUSPEND_64, 0x1_0000, 0xffff_ffff_4000_0000),
            bad(INVALID_ADDRESS)
        );
        assert_eq!(v, vm(), "suspend changes no power state");
    }

    #[test]
    fn migrate_and_system() {
        let mut v = vm();
        let mut c = ctx(&mut v, 0);
        assert_eq!(x0(call(&mut c, &[PSCI_MIGRATE_INFO_TYPE.into()])), 2);
        assert_eq!(call(&mut c, &[PSCI_SYSTEM_OFF.into()]), Outcome::SystemOff);
        assert_eq!(
            call(&mut c, &[PSCI_SYSTEM_RESET.into()]),
            Outcome::SystemReset
        );
        for f in [PSCI_SYSTEM_RESET2_32, PSCI_SYSTEM_RESET2_64] {
            let r = |c: &mut CallContext<'_>, t: u64| call(c, &[f.into(), t, 0xc00c1e]);
            assert_eq!(r(&mut c, 0), Outcome::SystemReset, "warm reset");
            assert_eq!(r(&mut c, 0x8000_0000), Outcome::SystemReset, "vendor");
            assert_eq!(r(&mut c, 0xffff_ffff), Outcome::SystemReset, "vendor");
            assert_eq!(x0(r(&mut c, 1)), INVALID_PARAMETERS);
            assert_eq!(x0(r(&mut c, 0x7fff_ffff)), INVALID_PARAMETERS);
            // reset_type is a uint32 in both forms.
            assert_eq!(r(&mut c, 0x1_0000_0000), Outcome::SystemReset);
        }
    }

    #[test]
    fn stratum_calls() {
        let mut v = vm();
        let mut c = ctx(&mut v, 2);
        assert_eq!(x0(call(&mut c, &[stratum::CALL_COUNT.into()])), 3);
        assert_eq!(
            call(&mut c, &[stratum::CALL_UID.into()]),
            Outcome::Return {
                regs: [0x1e4c_7e5a, 0x5e4f_0d9b, 0x1e2d_3c8a, 0x476a_9b0f],
                count: 4
            }
        );
        assert_eq!(
            call(&mut c, &[stratum::REVISION.into()]),
            Outcome::Return {
                regs: [1, 0, 0, 0],
                count: 2
            }
        );
        assert_eq!(
            call(&mut c, &[stratum::INFO.into(), 9, 9, 9]),
            Outcome::Return {
                regs: [stratum::ABI_VERSION, 7, 2, 3],
                count: 4
            }
        );
        // DOORBELL names a channel of the caller's VM (two here); anything
        // else, including values that only match in the low 32 bits, is
        // refused. It is SMC64 only.
        for ch in 0..2u32 {
            assert_eq!(
                call(&mut c, &[stratum::DOORBELL.into(), ch.into()]),
                Outcome::Doorbell { channel: ch }
            );
        }
        for bad in [2, 3, u64::MAX, 1 << 32, (1 << 32) | 1] {
            assert_eq!(
                x0(call(&mut c, &[stratum::DOORBELL.into(), bad])),
                INVALID_PARAMETERS,
                "channel {bad:#x}"
            );
        }
        assert_eq!(
            x0(call(&mut c, &[(stratum::DOORBELL & !FID_SMC64).into(), 0])),
            NOT_SUPPORTED
        );
        assert_eq!(
            call(&mut c, &[stratum::MEM_INFO.into(), 1, 2, 3]),
            Outcome::MemInfo
        );
    }

    fn interesting_fid() -> impl Strategy<Value = u64> {
        let known: Vec<u64> = PSCI_IMPLEMENTED
            .iter()
            .chain(&[
                SMCCC_ARCH_FEATURES,
                SMCCC_ARCH_SOC_ID,
                SMCCC_ARCH_WORKAROUND_1,
                SMCCC_ARCH_WORKAROUND_2,
                SMCCC_ARCH_WORKAROUND_3,
                PSCI_MIGRATE_64,
                stratum::CALL_COUNT,
                stratum::CALL_UID,
                stratum::REVISION,
                stratum::INFO,
                stratum::DOORBELL,
                stratum::MEM_INFO,
            ])
            .map(|&f| u64::from(f))
            .collect();
        prop_oneof![
            proptest::sample::select(known.clone()),
            (proptest::sample::select(known), any::<u32>())
                .prop_map(|(f, hi)| f | (u64::from(hi) << 32)),
            any::<u64>(),
        ]
    }

    fn power_state() -> impl Strategy<Value = PowerState> {
        prop_oneof![
            Just(PowerState::Off),
            Just(PowerState::OnPending),
            Just(PowerState::On)
        ]
    }

    fn workaround_state() -> impl Strategy<Value = WorkaroundState> {
        (0u64..4).prop_map(|x| WorkaroundState::from_firmware(x.wrapping_sub(2)))
    }

    proptest! {
        #[test]
        fn garbage_never_panics(
            fid in interesting_fid(),
            rest in proptest::array::uniform17(prop_oneof![
                any::<u64>(),
                0u64..8,
                (0u64..4).prop_map(|a| a << 32 | 1),
                Just(0x4000_0000u64),
            ]),
            vcpus in proptest::collection::vec(
                (prop_oneof![0u64..4, Just(0x100u64), Just(0x1_0000_0000u64), any::<u64>()],
                 power_state()),
                0..6,
            ),
            caller in 0usize..8,
            fw in (workaround_state(), workaround_state(), workaround_state()),
        ) {
            let mut args = [0u64; CALL_REGS];
            args[0] = fid;
            args[1..].copy_from_slice(&rest[..CALL_REGS - 1]);
            let mut v: Vec<VcpuPower> =
                vcpus.iter().map(|&(m, s)| VcpuPower::new(m, s)).collect();
            let before = v.clone();
            let mut c = ctx(&mut v, caller);
            c.firmware = FirmwareFeatures {
                workaround_1: fw.0,
                workaround_2: fw.1,
                workaround_3: fw.2,
            };
            let out = dispatch(&args, &mut c);
            let mut changed: Vec<usize> = Vec::new();
            match out {
                Outcome::Return { count, .. } => prop_assert!(count <= 4),
                Outcome::CpuOn { target, entry, .. } => {
                    prop_assert!(target < before.len());
                    prop_assert_eq!(before[target].state, PowerState::Off);
                    prop_assert_eq!(v[target].state, PowerState::OnPending);
                    prop_assert!(RAM.contains(Ipa(entry)));
                    changed.push(target);
                }
                Outcome::CpuOff => {
                    prop_assert!(caller < before.len());
                    prop_assert_eq!(v[caller].state, PowerState::Off);
                    changed.push(caller);
                }
                _ => {}
            }
            for (i, (a, b)) in before.iter().zip(&v).enumerate() {
                if !changed.contains(&i) {
                    prop_assert_eq!(a, b);
                }
            }
        }
    }

    #[test]
    fn trng_reports_1_0_its_functions_and_fresh_bits() {
        let mut vcpus = vm();
        let mut c = ctx(&mut vcpus, 0);
        assert_eq!(x0(call(&mut c, &[u64::from(trng::VERSION)])), 0x1_0000);
        for f in [
            trng::VERSION,
            trng::FEATURES,
            trng::GET_UUID,
            trng::RND32,
            trng::RND64,
        ] {
            let o = call(&mut c, &[u64::from(trng::FEATURES), u64::from(f)]);
            assert_eq!(x0(o), smccc::SUCCESS, "{f:#x}");
        }
        let o = call(&mut c, &[u64::from(trng::FEATURES), 0xC400_0050]);
        assert_eq!(x0(o), smccc::NOT_SUPPORTED, "no SMC64 TRNG_VERSION");
        match call(&mut c, &[u64::from(trng::GET_UUID)]) {
            Outcome::Return { regs, count: 4 } => {
                assert_eq!(regs, trng::UUID.map(u64::from));
                assert_ne!(regs[0] as u32, u32::MAX, "w0 = -1 would mean not supported");
            }
            o => panic!("{o:?}"),
        }
        let rnd = |c: &mut CallContext<'_>, f: u32, bits: u64| match call(c, &[u64::from(f), bits])
        {
            Outcome::Return { regs, count: 4 } if regs[0] == 0 => Ok([regs[1], regs[2], regs[3]]),
            o => Err(o),
        };
        let a = rnd(&mut c, trng::RND64, 192).expect("192 bits");
        let b = rnd(&mut c, trng::RND64, 192).expect("192 bits");
        assert_ne!(a, b, "every request is fresh");
        let r = rnd(&mut c, trng::RND32, 96).expect("96 bits");
        assert!(
            r.iter().all(|&w| w >> 32 == 0),
            "RND32 fills w registers only"
        );
        // The SMC32 call ignores x1's upper half.
        assert!(rnd(&mut c, trng::RND32, 0xffff_ffff_0000_0040).is_ok());
        for (f, bits) in [
            (trng::RND64, 0),
            (trng::RND64, 193),
            (trng::RND32, 97),
            (trng::RND32, 0),
        ] {
            assert_eq!(
                rnd(&mut c, f, bits).map_err(x0),
                Err(smccc::INVALID_PARAMETERS),
                "{f:#x} with {bits} bits"
            );
        }
    }
}
