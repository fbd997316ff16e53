//! Exit-policy tests: synthetic exits (real `ESR_EL2`/`HPFAR_EL2` encodings)
//! against a fake register file, a fake [`ExitEnv`] and a real PL011 model.
//! Instruction words come from `llvm-mc -triple=aarch64 -show-encoding`.

use super::*;
use crate::access::AccessSize;
use crate::bus::{DeviceId, MmioDevice, Window};
use crate::guest_dt::virt_map;
use crate::pl011::Pl011;
use crate::psci::{PowerState, WorkaroundState};
use proptest::prelude::*;
use stratum_abi::smccc::{self, stratum};

// ---------------------------------------------------------------- fixtures

/// Guest VA the guest maps the UART at (any VA works; only its low 12 bits
/// reach the IPA).
const UART_VA: u64 = 0xffff_7fff_fc00_1000;
/// Guest IPA of the UART (QEMU `virt`).
const UART_IPA: u64 = 0x0900_0000;
/// Guest RAM: 128 MiB at 0x4000_0000.
const RAM: IpaRange = IpaRange {
    start: Ipa(0x4000_0000),
    size: 0x800_0000,
};
const VBAR: u64 = 0xffff_8000_1001_0800;
/// SCTLR_EL1 as Linux sets it (the value only matters for PSTATE features,
/// none of which the tests enable).
const SCTLR: u64 = 0x0000_0000_34d5_d91d;
/// Guest PC of the trapping instruction.
const PC: u64 = 0xffff_8000_1020_0040;
const VM_ID: u64 = 3;
const BOOTS: u64 = 7;

/// PSTATE (SPSR_EL2) values: DAIF masked plus `M`.
const EL1H: u64 = 0x3c5;
const EL1T: u64 = 0x3c4;
const EL0: u64 = 0x000;
/// AArch32 EL0 (User mode, `M[4]` = nRW = 1).
const AARCH32_USR: u64 = 0x010;

// Exception classes and ESR fields (Arm ARM D24.2, ESR_EL2).
const EC_UNKNOWN: u64 = 0x00;
const EC_WFX: u64 = 0x01;
const EC_HVC64: u64 = 0x16;
const EC_SMC64: u64 = 0x17;
const EC_SYS64: u64 = 0x18;
const EC_IABT_LOWER: u64 = 0x20;
const EC_IABT_SAME: u64 = 0x21;
const EC_DABT_LOWER: u64 = 0x24;
const EC_DABT_SAME: u64 = 0x25;
const IL: u64 = 1 << 25;
const ISV: u64 = 1 << 24;
const SSE: u64 = 1 << 21;
const SF: u64 = 1 << 15;
const S1PTW: u64 = 1 << 7;
const WNR: u64 = 1 << 6;
/// Stage-2 translation fault, level 3.
const FSC_TRANSLATION_L3: u64 = 0x07;
/// Synchronous external abort (what injected aborts carry).
const FSC_EXTERNAL: u64 = 0x10;

// PL011 register offsets and flags.
const DR: u64 = 0x000;
const FR: u64 = 0x018;
const IBRD: u64 = 0x024;
const FBRD: u64 = 0x028;
const FR_RXFE: u64 = 1 << 4;
const FR_TXFE: u64 = 1 << 7;

// A64 instruction words (llvm-mc -triple=aarch64 -mattr=+lse).
/// `stp w1, w2, [x0, #0x24]`
const STP_W1_W2_X0_24: u32 = 0x2904_8801;
/// `stp w1, w2, [x0]`
const STP_W1_W2_X0: u32 = 0x2900_0801;
/// `ldp w1, w2, [x0, #0x24]`
const LDP_W1_W2_X0_24: u32 = 0x2944_8801;
/// `ldp w3, w4, [x0], #8`
const LDP_W3_W4_X0_POST8: u32 = 0x28c1_1003;
/// `ldr w1, [x0, #0x18]`
const LDR_W1_X0_18: u32 = 0xb940_1801;
/// `nop`
const NOP: u32 = 0xd503_201f;
/// `ldadd w1, w2, [x0]`
const LDADD_W1_W2_X0: u32 = 0xb821_0002;

const fn esr(ec: u64, iss: u64) -> u64 {
    (ec << 26) | IL | iss
}

const fn hvc() -> u64 {
    esr(EC_HVC64, 0)
}

const fn smc() -> u64 {
    esr(EC_SMC64, 0)
}

/// A lower-EL data abort with a valid syndrome: `sas` = log2 of the size,
/// `srt` the transfer register.
const fn dabt_isv(sas: u64, srt: u64, write: bool) -> u64 {
    let wnr = if write { WNR } else { 0 };
    esr(
        EC_DABT_LOWER,
        ISV | (sas << 22) | (srt << 16) | wnr | FSC_TRANSLATION_L3,
    )
}

/// A lower-EL data abort without a syndrome (ISV = 0).
const fn dabt_no_isv(write: bool) -> u64 {
    let wnr = if write { WNR } else { 0 };
    esr(EC_DABT_LOWER, wnr | FSC_TRANSLATION_L3)
}

/// `HPFAR_EL2` for a fault at `ipa`: FIPA \[43:4\] = IPA\[51:12\].
const fn hpfar(ipa: u64) -> u64 {
    (ipa >> 12) << 4
}

/// An exit at the UART register `offset` (EL1h, PC = [`PC`]).
const fn uart_exit(esr: u64, offset: u64) -> ExitInfo {
    ExitInfo {
        esr,
        far: UART_VA + offset,
        hpfar: hpfar(UART_IPA + offset),
        pc: PC,
        pstate: EL1H,
    }
}

/// An exit that is not an abort (HVC, SMC, WFI …).
const fn call_exit(esr: u64) -> ExitInfo {
    ExitInfo {
        esr,
        far: 0,
        hpfar: 0,
        pc: PC,
        pstate: EL1H,
    }
}

/// The shared test register file, at [`PC`].
type Regs = crate::mmio::test_regs::TestRegs;

fn new_regs() -> Regs {
    Regs {
        pc: PC,
        ..Regs::new()
    }
}

/// The glue's side, faked: guest instruction memory, EL1 vector state, and
/// the console.
#[derive(Debug, Default)]
struct Env {
    /// `(guest VA, word)` pairs `fetch_insn` can see.
    code: Vec<(u64, u32)>,
    /// Every PC `fetch_insn` was asked for.
    fetches: Vec<u64>,
    /// Bytes the UART transmitted.
    tx: Vec<u8>,
    /// Every ID register `id_register` was asked for.
    id_reads: Vec<u32>,
}

/// What the fake hardware reports for ID register `encoding`.
fn fake_id_value(encoding: u32) -> u64 {
    0x1100_0000_0000_0000 | u64::from(encoding)
}

impl ExitEnv for Env {
    fn fetch_insn(&mut self, pc: Gva) -> Option<u32> {
        self.fetches.push(pc.0);
        self.code
            .iter()
            .find(|(va, _)| *va == pc.0)
            .map(|&(_, w)| w)
    }
    fn el1_vector_state(&mut self) -> (u64, u64) {
        (VBAR, SCTLR)
    }
    fn id_register(&mut self, encoding: u32) -> u64 {
        self.id_reads.push(encoding);
        fake_id_value(encoding)
    }
}

/// A virtual GIC that records what it is asked and answers from a script.
#[derive(Debug, Default)]
struct FakeGic {
    /// Every call: (what, vcpu, redistributor, offset, size, value).
    calls: Vec<(&'static str, usize, usize, u64, AccessSize, u64)>,
    /// Value every read returns.
    read_value: u64,
    /// Refuse every access (as for a width the architecture forbids).
    refuse: bool,
    /// SGI-register writes: (vcpu, register, value).
    sgis: Vec<(usize, SgiRegister, u64)>,
}

impl MmioDevice for FakeGic {
    fn read(&mut self, a: &DeviceAccess, _fx: &mut Effects) -> Result<u64, AccessRefused> {
        let what = if a.region == 0 {
            "dist_read"
        } else {
            "redist_read"
        };
        self.calls
            .push((what, a.vcpu, a.bank as usize, a.offset, a.size, 0));
        if self.refuse {
            Err(AccessRefused)
        } else {
            Ok(self.read_value)
        }
    }
    fn write(
        &mut self,
        a: &DeviceAccess,
        value: u64,
        _fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        let what = if a.region == 0 {
            "dist_write"
        } else {
            "redist_write"
        };
        self.calls
            .push((what, a.vcpu, a.bank as usize, a.offset, a.size, value));
        if self.refuse {
            Err(AccessRefused)
        } else {
            Ok(())
        }
    }
}

/// The bus ids of the harness's devices.
const UART_ID: DeviceId = DeviceId(0);
const GIC_ID: DeviceId = DeviceId(1);

/// Bytes per GICv3 redistributor (RD_base + SGI_base frames).
const REDIST_STRIDE: u64 = virt_map::GICR_STRIDE;

/// The harness's devices as the exit policy sees them.
struct Devices<'h> {
    uart: &'h mut Pl011,
    gic: Option<&'h mut FakeGic>,
}

impl DeviceTable for Devices<'_> {
    fn device(&mut self, id: DeviceId) -> Option<&mut dyn MmioDevice> {
        match id {
            UART_ID => Some(&mut *self.uart),
            GIC_ID => self.gic.as_deref_mut().map(|g| g as &mut dyn MmioDevice),
            _ => None,
        }
    }
}

impl VmDevices for Devices<'_> {
    fn sgi_write(&mut self, vcpu: usize, which: SgiRegister, value: u64) -> bool {
        match self.gic.as_deref_mut() {
            Some(g) => {
                g.sgis.push((vcpu, which, value));
                true
            }
            None => false,
        }
    }
}

/// Everything a [`VmModel`] borrows, owned, plus the register file and env.
#[derive(Debug)]
struct Harness {
    regs: Regs,
    env: Env,
    uart: Pl011,
    uart_regs: IpaRange,
    vcpus: Vec<VcpuPower>,
    firmware: FirmwareFeatures,
    /// vCPU 0's counters, and their summary after the last exit.
    stats: ExitStats,
    counters: ExitCounters,
    /// What the last exit was counted as.
    counted: Option<Counted>,
    /// Exits run so far.
    exits: u64,
    last_abort: Option<AbortReport>,
    /// The virtual GIC, when the test gives the VM one.
    gic: Option<FakeGic>,
    /// What the last exit's device accesses asked the glue to do.
    effects: Effects,
    /// The VM's TRNG.
    trng: crate::trng::Trng,
}

impl Harness {
    /// A VM with `n` vCPUs (MPIDR = index), vCPU 0 on, the others off.
    fn with_vcpus(n: usize) -> Self {
        let vcpus = (0..n)
            .map(|i| {
                let state = if i == 0 {
                    PowerState::On
                } else {
                    PowerState::Off
                };
                VcpuPower::new(i as u64, state)
            })
            .collect();
        Self {
            regs: new_regs(),
            env: Env::default(),
            uart: Pl011::new(),
            uart_regs: virt_map::UART,
            vcpus,
            firmware: FirmwareFeatures::NONE,
            stats: ExitStats::new(),
            counters: ExitCounters::default(),
            counted: None,
            exits: 0,
            last_abort: None,
            gic: None,
            effects: Effects::default(),
            trng: crate::trng::Trng::new(&[0; 16], VM_ID, BOOTS, 0),
        }
    }

    /// The same VM with a GICv3-style virtual GIC at QEMU virt's addresses.
    fn with_gic(mut self) -> Self {
        self.gic = Some(FakeGic::default());
        self
    }

    fn new() -> Self {
        Self::with_vcpus(1)
    }

    /// Puts `word` at the faulting PC.
    fn code(mut self, word: u32) -> Self {
        self.env.code.push((PC, word));
        self
    }

    /// The bus of the VM: the UART at `uart_regs`, and with a GIC its
    /// distributor and two redistributors at QEMU virt's addresses.
    fn bus(&self) -> MmioBus {
        let mut bus = MmioBus::new();
        bus.insert(Window::plain(
            self.uart_regs,
            UART_ID,
            0,
            [Reason::MmioUartRead, Reason::MmioUartWrite],
        ))
        .expect("UART window");
        if self.gic.is_some() {
            bus.insert(Window::plain(
                virt_map::GICD,
                GIC_ID,
                0,
                [Reason::MmioGicdRead, Reason::MmioGicdWrite],
            ))
            .expect("GICD window");
            bus.insert(Window::banked(
                virt_map::GICR_BASE,
                REDIST_STRIDE,
                2,
                GIC_ID,
                1,
                [Reason::MmioGicrRead, Reason::MmioGicrWrite],
            ))
            .expect("GICR window");
        }
        bus
    }

    fn run(&mut self, info: &ExitInfo) -> Action {
        let bus = self.bus();
        let mut devices = Devices {
            uart: &mut self.uart,
            gic: self.gic.as_mut(),
        };
        let mut vm = VmModel {
            vm_id: VM_ID,
            boot_count: BOOTS,
            channels: CHANNELS,
            ram: RAM,
            bus: &bus,
            devices: &mut devices,
            effects: Effects::default(),
            vcpus: &mut self.vcpus,
            firmware: self.firmware,
            pstate_features: PstateFeatures::NONE,
            debug_limits: A57_DEBUG,
            stats: &self.stats,
            counted: None,
            last_abort: None,
            trng: &mut self.trng,
        };
        let action = handle_sync(info, 0, &mut self.regs, &mut vm, &mut self.env);
        self.env.tx.extend(vm.effects.console_bytes());
        self.effects = vm.effects;
        self.last_abort = vm.last_abort;
        self.counted = vm.counted;
        self.counters = ExitCounters::of(&self.stats);
        // Every exit is counted exactly once.
        let exits: u64 = Reason::ALL
            .iter()
            .filter(|r| r.is_exit())
            .map(|&r| self.stats.get(r))
            .sum();
        self.exits += 1;
        assert_eq!(exits, self.exits, "one count per exit");
        action
    }

    /// Runs an SMCCC call with `x0 = fid` (and `x1..` as already set).
    fn call(&mut self, conduit: u64, fid: u32) -> Action {
        self.regs.x[0] = u64::from(fid);
        self.run(&call_exit(conduit))
    }

    /// Reads a UART register through the model (pops DR: avoid for DR).
    fn uart_reg(&mut self, offset: u64) -> u64 {
        u64::from(self.uart.read(offset, AccessSize::Word).unwrap())
    }

    fn set_uart_reg(&mut self, offset: u64, value: u64) {
        self.uart
            .write(offset, AccessSize::Word, value, &mut |_| {})
            .unwrap();
    }
}

fn injection(action: Action) -> Injection {
    match action {
        Action::Inject(inj) => inj,
        other => panic!("expected an injection, got {other:?}"),
    }
}

/// The `ESR_EL1` of an injected external abort.
const fn abort_esr(ec: u64, write: bool) -> u64 {
    let wnr = if write { WNR } else { 0 };
    esr(ec, wnr | FSC_EXTERNAL)
}

/// Checks an injected data abort for an access at `far` from `info`.
fn assert_data_abort(action: Action, info: &ExitInfo, write: bool, vector: u64, ec: u64) {
    let inj = injection(action);
    assert_eq!(
        inj.esr_el1,
        abort_esr(ec, write),
        "ESR_EL1 {:#x}",
        inj.esr_el1
    );
    assert_eq!(inj.far_el1, Some(info.far));
    assert_eq!(inj.elr_el1, info.pc);
    assert_eq!(inj.spsr_el1, info.pstate);
    assert_eq!(inj.pc, VBAR + vector);
    assert_eq!(inj.pstate, 0x3c5, "EL1h, DAIF masked");
}

// ------------------------------------------------------------ SMCCC / PSCI

#[test]
fn hvc_psci_version_resumes_and_writes_only_x0() {
    let mut h = Harness::new();
    let before = h.regs.clone();
    assert_eq!(hvc(), 0x5a00_0000);
    assert_eq!(h.call(hvc(), smccc::PSCI_VERSION), Action::Resume);
    let mut expected = before;
    expected.x[0] = 0x1_0001;
    assert_eq!(h.regs, expected);
    assert_eq!(
        h.counters,
        ExitCounters {
            hvc: 1,
            ..ExitCounters::default()
        }
    );
    assert_eq!(h.last_abort, None);
    assert!(h.env.fetches.is_empty());
}

#[test]
fn smc_psci_version_advances() {
    let mut h = Harness::new();
    let before = h.regs.clone();
    assert_eq!(h.call(smc(), smccc::PSCI_VERSION), Action::Advance);
    let mut expected = before;
    expected.x[0] = u64::from(smccc::PSCI_VERSION_1_1);
    assert_eq!(h.regs, expected);
    assert_eq!((h.counters.hvc, h.counters.smc), (0, 1));
}

#[test]
fn function_id_is_w0() {
    let mut h = Harness::new();
    h.regs.x[0] = 0xdead_beef_0000_0000 | u64::from(smccc::PSCI_VERSION);
    assert_eq!(h.run(&call_exit(hvc())), Action::Resume);
    assert_eq!(h.regs.x[0], 0x1_0001);
}

#[test]
fn unknown_function_is_not_supported() {
    for fid in [
        0x8200_1234,
        0xc600_0042,
        0x0400_0000,
        0x8401_0000,
        0xffff_ffff,
    ] {
        for conduit in [hvc(), smc()] {
            let mut h = Harness::new();
            let before = h.regs.clone();
            let action = h.call(conduit, fid);
            let done = if conduit == smc() {
                Action::Advance
            } else {
                Action::Resume
            };
            assert_eq!(action, done, "fid {fid:#x}");
            assert_eq!(h.regs.x[0], u64::MAX, "fid {fid:#x}: NOT_SUPPORTED");
            assert_eq!(h.regs.x[1..], before.x[1..], "fid {fid:#x}");
            assert_eq!((h.regs.sp, h.regs.pc), (before.sp, before.pc));
        }
    }
}

#[test]
fn counters_accumulate_per_conduit() {
    let mut h = Harness::new();
    for _ in 0..3 {
        h.call(hvc(), smccc::PSCI_VERSION);
    }
    for _ in 0..2 {
        h.call(smc(), smccc::SMCCC_VERSION);
    }
    assert_eq!(h.regs.x[0], u64::from(smccc::SMCCC_VERSION_1_2));
    assert_eq!((h.counters.hvc, h.counters.smc), (3, 2));
    assert_eq!(h.counters.injected_undefs + h.counters.injected_aborts, 0);
}

#[test]
fn system_off_and_reset() {
    for (conduit, name) in [(hvc(), "hvc"), (smc(), "smc")] {
        let mut h = Harness::new();
        let before = h.regs.clone();
        assert_eq!(
            h.call(conduit, smccc::PSCI_SYSTEM_OFF),
            Action::Stop(StopReason::PowerOff),
            "{name}"
        );
        assert_eq!(h.regs.x[1..], before.x[1..]);
        assert_eq!(
            h.call(conduit, smccc::PSCI_SYSTEM_RESET),
            Action::Reset,
            "{name}"
        );
        h.regs.x[1] = 0; // SYSTEM_WARM_RESET
        assert_eq!(
            h.call(conduit, smccc::PSCI_SYSTEM_RESET2_64),
            Action::Reset,
            "{name}"
        );
    }
}

#[test]
fn cpu_suspend_waits_for_an_interrupt() {
    let mut h = Harness::new();
    h.regs.x[1] = 0; // standby, state 0
    assert_eq!(
        h.call(hvc(), smccc::PSCI_CPU_SUSPEND_64),
        Action::WaitForInterrupt { advance: false }
    );
    assert_eq!(h.regs.x[0], 0, "SUCCESS");

    let mut h = Harness::new();
    h.regs.x[1] = 0;
    assert_eq!(
        h.call(smc(), smccc::PSCI_CPU_SUSPEND_32),
        Action::WaitForInterrupt { advance: true }
    );
    assert_eq!(h.regs.x[0], 0);

    // Powerdown with an entry point outside RAM: INVALID_ADDRESS, no wait.
    let mut h = Harness::new();
    h.regs.x[1] = 1 << 16;
    h.regs.x[2] = 0x1000;
    assert_eq!(h.call(hvc(), smccc::PSCI_CPU_SUSPEND_64), Action::Resume);
    assert_eq!(h.regs.x[0], smccc::INVALID_ADDRESS as u64);

    // Reserved power_state bits: INVALID_PARAMETERS.
    let mut h = Harness::new();
    h.regs.x[1] = 1 << 30;
    assert_eq!(h.call(smc(), smccc::PSCI_CPU_SUSPEND_64), Action::Advance);
    assert_eq!(h.regs.x[0], smccc::INVALID_PARAMETERS as u64);
}

#[test]
fn cpu_off_of_the_only_vcpu_stops_the_vm() {
    let mut h = Harness::new();
    assert_eq!(
        h.call(hvc(), smccc::PSCI_CPU_OFF),
        Action::Stop(StopReason::AllCpusOff)
    );
    assert_eq!(h.vcpus[0].state, PowerState::Off);
}

#[test]
fn cpu_off_with_another_vcpu_on_stops_only_the_caller() {
    let mut h = Harness::with_vcpus(2);
    h.vcpus[1].state = PowerState::On;
    assert_eq!(h.call(hvc(), smccc::PSCI_CPU_OFF), Action::CpuOff);
    assert_eq!(
        h.vcpus.iter().map(|v| v.state).collect::<Vec<_>>(),
        [PowerState::Off, PowerState::On]
    );
    // A pending vCPU also keeps the VM alive.
    let mut h = Harness::with_vcpus(2);
    h.vcpus[1].state = PowerState::OnPending;
    assert_eq!(h.call(smc(), smccc::PSCI_CPU_OFF), Action::CpuOff);
}

#[test]
fn cpu_on_starts_another_vcpu() {
    let entry = RAM.start.0 + 0x8_0000;
    for (conduit, advance) in [(hvc(), false), (smc(), true)] {
        let mut h = Harness::with_vcpus(2);
        h.regs.x[1] = 1;
        h.regs.x[2] = entry;
        h.regs.x[3] = 0x1234_5678_9abc_def0;
        assert_eq!(
            h.call(conduit, smccc::PSCI_CPU_ON_64),
            Action::CpuOn {
                target: 1,
                entry,
                context_id: 0x1234_5678_9abc_def0,
                advance,
            }
        );
        assert_eq!(h.regs.x[0], 0, "SUCCESS");
        assert_eq!(h.vcpus[1].state, PowerState::OnPending);
        // Again while pending: ON_PENDING, a plain return.
        assert_eq!(
            h.call(conduit, smccc::PSCI_CPU_ON_64),
            if advance {
                Action::Advance
            } else {
                Action::Resume
            }
        );
        assert_eq!(h.regs.x[0], smccc::ON_PENDING as u64);
    }
    // An MPIDR that does not exist.
    let mut h = Harness::with_vcpus(2);
    h.regs.x[1] = 0x100;
    h.regs.x[2] = entry;
    assert_eq!(h.call(hvc(), smccc::PSCI_CPU_ON_64), Action::Resume);
    assert_eq!(h.regs.x[0], smccc::INVALID_PARAMETERS as u64);
    assert_eq!(h.vcpus[1].state, PowerState::Off);
}

#[test]
fn stratum_info_reports_the_model() {
    let mut h = Harness::new();
    assert_eq!(h.call(hvc(), stratum::INFO), Action::Resume);
    assert_eq!(
        h.regs.x[..4],
        [stratum::ABI_VERSION, VM_ID, 0, BOOTS],
        "version, vm_id, vcpu, boot_count"
    );
    assert_eq!(h.regs.x[4], new_regs().x[4]);
}

#[test]
fn stratum_doorbell_and_mem_info_go_to_the_glue() {
    let mut h = Harness::new();
    h.regs.x[1] = 0;
    assert_eq!(
        h.call(hvc(), stratum::DOORBELL),
        Action::Doorbell {
            channel: 0,
            advance: false
        }
    );
    // The harness VM has one channel: channel 1 does not exist.
    h.regs.x[1] = 1;
    assert_eq!(h.call(hvc(), stratum::DOORBELL), Action::Resume);
    assert_eq!(h.regs.x[0], smccc::INVALID_PARAMETERS as u64);
    assert_eq!(
        h.call(hvc(), stratum::MEM_INFO),
        Action::MemInfo { advance: false }
    );
}

#[test]
fn required_workaround_is_forwarded_to_firmware() {
    let mut h = Harness::new();
    h.firmware = FirmwareFeatures {
        workaround_1: WorkaroundState::Required,
        workaround_2: WorkaroundState::Required,
        workaround_3: WorkaroundState::Required,
    };
    // The guest first asks, and is told to call it.
    h.regs.x[1] = u64::from(smccc::SMCCC_ARCH_WORKAROUND_1);
    assert_eq!(h.call(hvc(), smccc::SMCCC_ARCH_FEATURES), Action::Resume);
    assert_eq!(h.regs.x[0], 0);

    let mut h2 = Harness::new();
    h2.firmware = h.firmware;
    h2.regs.x[0] = u64::from(smccc::SMCCC_ARCH_WORKAROUND_1);
    let before = h2.regs.clone();
    assert_eq!(
        h2.run(&call_exit(hvc())),
        Action::ForwardToFirmware {
            function: smccc::SMCCC_ARCH_WORKAROUND_1,
            arg: 0,
            advance: false,
        }
    );
    assert_eq!(h2.regs, before, "no guest register is written");

    // WORKAROUND_2 passes w1 through; via SMC the PC advances.
    h2.regs.x[1] = 1;
    assert_eq!(
        h2.call(smc(), smccc::SMCCC_ARCH_WORKAROUND_2),
        Action::ForwardToFirmware {
            function: smccc::SMCCC_ARCH_WORKAROUND_2,
            arg: 1,
            advance: true,
        }
    );
    assert_eq!((h2.counters.hvc, h2.counters.smc), (1, 1));
}

#[test]
fn workaround_not_required_or_not_supported_is_answered_here() {
    let mut h = Harness::new();
    h.firmware = FirmwareFeatures {
        workaround_1: WorkaroundState::NotRequired,
        workaround_2: WorkaroundState::NotSupported,
        workaround_3: WorkaroundState::DoNotInvoke,
    };
    let before = h.regs.clone();
    h.regs.x[0] = u64::from(smccc::SMCCC_ARCH_WORKAROUND_1);
    assert_eq!(h.run(&call_exit(hvc())), Action::Resume);
    assert_eq!(h.regs.x[1..], before.x[1..]);
    assert_eq!(h.regs.x[0], u64::from(smccc::SMCCC_ARCH_WORKAROUND_1));

    assert_eq!(
        h.call(hvc(), smccc::SMCCC_ARCH_WORKAROUND_2),
        Action::Resume
    );
    assert_eq!(h.regs.x[0], u64::MAX);

    // Not supported is not advertised.
    h.regs.x[1] = u64::from(smccc::SMCCC_ARCH_WORKAROUND_2);
    h.call(hvc(), smccc::SMCCC_ARCH_FEATURES);
    assert_eq!(h.regs.x[0], u64::MAX);
    h.regs.x[1] = u64::from(smccc::SMCCC_ARCH_WORKAROUND_3);
    h.call(hvc(), smccc::SMCCC_ARCH_FEATURES);
    assert_eq!(h.regs.x[0], -2i64 as u64);
}

// ------------------------------------------------- data aborts, ISV = 1

#[test]
fn read_uart_fr_with_syndrome() {
    let mut h = Harness::new();
    let info = uart_exit(dabt_isv(2, 5, false), FR);
    let before = h.regs.clone();
    assert_eq!(h.run(&info), Action::Advance);
    assert_eq!(h.regs.x[5], FR_TXFE | FR_RXFE, "W5, upper half cleared");
    assert_ne!(h.regs.x[5] & FR_TXFE, 0);
    let mut expected = before;
    expected.x[5] = h.regs.x[5];
    assert_eq!(h.regs, expected, "only x5 changes");
    assert_eq!(
        h.counters,
        ExitCounters {
            mmio: 1,
            ..ExitCounters::default()
        }
    );
    assert_eq!(h.last_abort, None);
    assert!(h.env.fetches.is_empty(), "the syndrome suffices");
}

#[test]
fn write_uart_dr_with_syndrome() {
    let mut h = Harness::new();
    h.regs.x[7] = 0xffff_ffff_ffff_ff41;
    assert_eq!(h.run(&uart_exit(dabt_isv(2, 7, true), DR)), Action::Advance);
    assert_eq!(h.env.tx, b"A");
    assert_eq!(
        h.regs.x[7], 0xffff_ffff_ffff_ff41,
        "a store changes no register"
    );
    assert_eq!(h.counters.mmio, 1);
}

#[test]
fn byte_and_halfword_accesses() {
    let mut h = Harness::new();
    h.regs.x[3] = 0x1234_5678_9abc_def0;
    // strh w3, [IBRD]
    assert_eq!(
        h.run(&uart_exit(dabt_isv(1, 3, true), IBRD)),
        Action::Advance
    );
    assert_eq!(h.uart_reg(IBRD), 0xdef0);
    // ldrh w4, [IBRD]
    assert_eq!(
        h.run(&uart_exit(dabt_isv(1, 4, false), IBRD)),
        Action::Advance
    );
    assert_eq!(h.regs.x[4], 0xdef0);
    // ldrsb x6, [IBRD]: 0xf0 sign-extended to 64 bits.
    let ldrsb_x = dabt_isv(0, 6, false) | SSE | SF;
    assert_eq!(h.run(&uart_exit(ldrsb_x, IBRD)), Action::Advance);
    assert_eq!(h.regs.x[6], 0xffff_ffff_ffff_fff0);
    // ldrsb w8, [IBRD + 1]: 0xde sign-extended to 32 bits only.
    let ldrsb_w = dabt_isv(0, 8, false) | SSE;
    assert_eq!(h.run(&uart_exit(ldrsb_w, IBRD + 1)), Action::Advance);
    assert_eq!(h.regs.x[8], 0xffff_ffde);
    assert_eq!(h.counters.mmio, 4);
}

#[test]
fn doubleword_access_is_rejected_with_an_abort() {
    for write in [false, true] {
        let mut h = Harness::new();
        let uart_before = h.uart.clone();
        let regs_before = h.regs.clone();
        let info = uart_exit(dabt_isv(3, 5, write), DR);
        let action = h.run(&info);
        assert_data_abort(action, &info, write, 0x200, EC_DABT_SAME);
        assert_eq!(h.regs, regs_before);
        assert_eq!(h.uart, uart_before, "no device side effect");
        assert!(h.env.tx.is_empty());
        assert_eq!(
            h.counters,
            ExitCounters {
                injected_aborts: 1,
                ..ExitCounters::default()
            }
        );
        assert_eq!(
            h.last_abort,
            Some(AbortReport {
                pc: PC,
                ipa: Ipa(UART_IPA),
                write,
                why: AbortCause::DeviceRejected,
            })
        );
    }
}

#[test]
fn misaligned_access_is_rejected() {
    let mut h = Harness::new();
    let info = uart_exit(dabt_isv(2, 1, true), IBRD + 2);
    let action = h.run(&info);
    assert_data_abort(action, &info, true, 0x200, EC_DABT_SAME);
    assert_eq!(h.uart_reg(IBRD), 0);
    assert_eq!(h.last_abort.unwrap().why, AbortCause::DeviceRejected);
}

#[test]
fn store_of_xzr_writes_zero() {
    let mut h = Harness::new();
    h.set_uart_reg(IBRD, 0x1234);
    assert_eq!(
        h.run(&uart_exit(dabt_isv(2, 31, true), IBRD)),
        Action::Advance
    );
    assert_eq!(h.uart_reg(IBRD), 0);
    assert_eq!(
        h.run(&uart_exit(dabt_isv(0, 31, true), DR)),
        Action::Advance
    );
    assert_eq!(h.env.tx, [0]);
    // A load into XZR is performed and discarded.
    let before = h.regs.clone();
    assert_eq!(
        h.run(&uart_exit(dabt_isv(2, 31, false), FR)),
        Action::Advance
    );
    assert_eq!(h.regs, before);
}

// ------------------------------------------------- data aborts, ISV = 0

#[test]
fn stp_to_uart_is_decoded() {
    // The CPU may report the address of either element in FAR.
    for far_offset in [IBRD, FBRD] {
        let mut h = Harness::new().code(STP_W1_W2_X0_24);
        h.regs.x[0] = UART_VA;
        h.regs.x[1] = 0xffff_ffff_0000_000d;
        h.regs.x[2] = 1;
        let before = h.regs.clone();
        let info = uart_exit(dabt_no_isv(true), far_offset);
        assert_eq!(h.run(&info), Action::Advance, "FAR at {far_offset:#x}");
        assert_eq!((h.uart_reg(IBRD), h.uart_reg(FBRD)), (13, 1));
        assert_eq!(h.regs, before);
        assert_eq!(h.env.fetches, [PC]);
        assert_eq!(
            h.counters,
            ExitCounters {
                mmio: 1,
                mmio_decoded: 1,
                ..ExitCounters::default()
            }
        );
        assert_eq!(h.last_abort, None);
    }
}

#[test]
fn ldp_from_uart_is_decoded() {
    let mut h = Harness::new().code(LDP_W1_W2_X0_24);
    h.set_uart_reg(IBRD, 0x1a2b);
    h.set_uart_reg(FBRD, 0x15);
    h.regs.x[0] = UART_VA;
    assert_eq!(h.run(&uart_exit(dabt_no_isv(false), IBRD)), Action::Advance);
    assert_eq!(h.regs.x[1..3], [0x1a2b, 0x15]);
    assert_eq!(h.regs.x[0], UART_VA, "no writeback");
}

#[test]
fn ldp_post_index_updates_the_base() {
    let mut h = Harness::new().code(LDP_W3_W4_X0_POST8);
    h.set_uart_reg(IBRD, 0x22);
    h.set_uart_reg(FBRD, 0x33);
    h.regs.x[0] = UART_VA + IBRD;
    assert_eq!(h.run(&uart_exit(dabt_no_isv(false), IBRD)), Action::Advance);
    assert_eq!(h.regs.x[3..5], [0x22, 0x33]);
    assert_eq!(h.regs.x[0], UART_VA + IBRD + 8);
    assert_eq!(h.counters.mmio_decoded, 1);
}

#[test]
fn single_load_without_syndrome() {
    let mut h = Harness::new().code(LDR_W1_X0_18);
    h.regs.x[0] = UART_VA;
    assert_eq!(h.run(&uart_exit(dabt_no_isv(false), FR)), Action::Advance);
    assert_eq!(h.regs.x[1], FR_TXFE | FR_RXFE);
}

#[test]
fn undecodable_instruction_is_answered_with_an_abort() {
    for word in [NOP, LDADD_W1_W2_X0, 0] {
        let mut h = Harness::new().code(word);
        h.regs.x[0] = UART_VA;
        let uart_before = h.uart.clone();
        let regs_before = h.regs.clone();
        let info = uart_exit(dabt_no_isv(false), DR);
        let action = h.run(&info);
        assert_data_abort(action, &info, false, 0x200, EC_DABT_SAME);
        assert_eq!(h.uart, uart_before, "word {word:#x}");
        assert_eq!(h.regs, regs_before);
        assert_eq!(h.last_abort.unwrap().why, AbortCause::Undecodable);
        assert_eq!(h.counters.injected_aborts, 1);
        assert_eq!(h.counters.mmio + h.counters.mmio_decoded, 0);
    }
}

#[test]
fn instruction_that_does_not_match_far_is_rejected() {
    // `stp w1, w2, [x0, #0x24]` with x0 pointing elsewhere: the word read
    // back is not the access that faulted.
    let mut h = Harness::new().code(STP_W1_W2_X0_24);
    h.regs.x[0] = UART_VA + 0x100;
    let info = uart_exit(dabt_no_isv(true), IBRD);
    let action = h.run(&info);
    assert_data_abort(action, &info, true, 0x200, EC_DABT_SAME);
    assert_eq!(h.uart_reg(IBRD), 0);
    assert_eq!(h.last_abort.unwrap().why, AbortCause::Undecodable);
}

#[test]
fn fetch_failure_is_answered_with_an_abort() {
    let mut h = Harness::new(); // no code mapped
    let info = uart_exit(dabt_no_isv(true), IBRD);
    let action = h.run(&info);
    assert_data_abort(action, &info, true, 0x200, EC_DABT_SAME);
    assert_eq!(h.env.fetches, [PC]);
    assert_eq!(h.last_abort.unwrap().why, AbortCause::Undecodable);
}

#[test]
fn aarch32_guest_without_syndrome_is_not_decoded() {
    // An A64 word at the PC must not be looked at for an AArch32 guest.
    let mut h = Harness::new().code(STP_W1_W2_X0_24);
    h.regs.x[0] = UART_VA;
    let info = ExitInfo {
        pstate: AARCH32_USR,
        ..uart_exit(dabt_no_isv(true), IBRD)
    };
    let action = h.run(&info);
    assert_data_abort(action, &info, true, 0x600, EC_DABT_LOWER);
    assert!(h.env.fetches.is_empty(), "fetch_insn must not be called");
    assert_eq!(h.uart_reg(IBRD), 0);
    assert_eq!(h.last_abort.unwrap().why, AbortCause::Undecodable);
}

#[test]
fn aarch32_guest_with_syndrome_is_emulated() {
    // A 32-bit (A32 or T32-32) `ldr r5, [rN]` of FR from User mode.
    let mut h = Harness::new();
    let info = ExitInfo {
        pstate: AARCH32_USR,
        ..uart_exit(dabt_isv(2, 5, false), FR)
    };
    assert_eq!(h.run(&info), Action::Advance);
    assert_eq!(h.regs.x[5], FR_TXFE | FR_RXFE);
}

#[test]
fn sixteen_bit_t32_access_is_not_stepped_over_by_four() {
    // `strb r1, [r0]` in its 16-bit T32 encoding (IL = 0): `Action::Advance`
    // would step 4 bytes and skip the next instruction. The access must not
    // be performed and the guest gets an abort instead.
    let mut h = Harness::new();
    h.regs.x[1] = u64::from(b'Z');
    let info = ExitInfo {
        esr: dabt_isv(0, 1, true) & !IL,
        pstate: AARCH32_USR | (1 << 5), // T bit
        ..uart_exit(0, DR)
    };
    let action = h.run(&info);
    assert_data_abort(action, &info, true, 0x600, EC_DABT_LOWER);
    assert!(h.env.tx.is_empty());
    assert_eq!(h.counters.mmio, 0);
}

#[test]
fn stage1_walk_into_the_uart_is_not_a_device_access() {
    // The guest's page tables live "in" the UART page: HPFAR names the
    // table's IPA, FAR the VA of the access. Emulating that as a UART
    // access would hit a register the guest never addressed.
    for (esr, far) in [
        // strb w1, [x0]: would transmit '!'.
        (dabt_isv(0, 1, true) | S1PTW, 0xffff_0000_1234_5000),
        // ldr w1, [x0, #0x18]: would read FR.
        (dabt_no_isv(false) | S1PTW, 0xffff_0000_1234_5018),
    ] {
        let mut h = Harness::new().code(LDR_W1_X0_18);
        h.regs.x[0] = 0xffff_0000_1234_5000;
        h.regs.x[1] = u64::from(b'!');
        let regs_before = h.regs.clone();
        let info = ExitInfo {
            esr,
            far,
            hpfar: hpfar(UART_IPA),
            pc: PC,
            pstate: EL1H,
        };
        let action = h.run(&info);
        let write = esr & WNR != 0;
        assert_data_abort(action, &info, write, 0x200, EC_DABT_SAME);
        assert!(h.env.tx.is_empty());
        assert_eq!(h.regs, regs_before);
        assert_eq!(h.counters.mmio, 0);
        assert_eq!(h.last_abort.unwrap().why, AbortCause::Unmapped);
    }
}

// ------------------------------------------------------- pairs at the edge

#[test]
fn pair_crossing_the_uart_page_is_rejected_whole() {
    // `stp w1, w2, [x0]` at the last word of the page: the second element
    // would land in the next page.
    let mut h = Harness::new().code(STP_W1_W2_X0);
    h.regs.x[0] = UART_VA + 0xffc;
    let uart_before = h.uart.clone();
    let info = uart_exit(dabt_no_isv(true), 0xffc);
    let action = h.run(&info);
    assert_data_abort(action, &info, true, 0x200, EC_DABT_SAME);
    assert_eq!(h.uart, uart_before);
    assert_eq!(h.counters.mmio, 0);
}

#[test]
fn pair_half_outside_the_device_has_no_side_effect() {
    // A device window smaller than a page: the plan is inside the page, but
    // its second element is outside the device. Nothing may be performed.
    let mut h = Harness::new().code(STP_W1_W2_X0_24);
    h.uart_regs = IpaRange {
        start: Ipa(UART_IPA),
        size: FBRD,
    };
    h.regs.x[0] = UART_VA;
    h.regs.x[1] = 13;
    h.regs.x[2] = 1;
    let info = uart_exit(dabt_no_isv(true), IBRD);
    let action = h.run(&info);
    assert_data_abort(action, &info, true, 0x200, EC_DABT_SAME);
    assert_eq!(h.uart_reg(IBRD), 0, "the first element was not written");
    assert_eq!(h.last_abort.unwrap().why, AbortCause::DeviceRejected);

    // Loads: the first element would pop the RX FIFO.
    let mut h = Harness::new().code(0x2940_0001); // ldp w1, w0, [x0]
    h.uart_regs = IpaRange {
        start: Ipa(UART_IPA),
        size: 4,
    };
    assert!(h.uart.push_rx(b'q'));
    let uart_before = h.uart.clone();
    h.regs.x[0] = UART_VA;
    let regs_before = h.regs.clone();
    let info = uart_exit(dabt_no_isv(false), DR);
    let action = h.run(&info);
    assert_data_abort(action, &info, false, 0x200, EC_DABT_SAME);
    assert_eq!(h.uart, uart_before, "FIFO untouched");
    assert_eq!(h.regs, regs_before);
}

// --------------------------------------------- unmapped aborts and vectors

#[test]
fn abort_outside_every_device_and_ram() {
    let far = 0xffff_0000_1234_5678;
    let ipa = 0x1234_5678;
    for (pstate, vector, ec) in [
        (EL1H, 0x200, EC_DABT_SAME),
        (EL1T, 0x000, EC_DABT_SAME),
        (EL0, 0x400, EC_DABT_LOWER),
        (AARCH32_USR, 0x600, EC_DABT_LOWER),
    ] {
        for write in [false, true] {
            let mut h = Harness::new();
            let info = ExitInfo {
                esr: dabt_isv(2, 1, write),
                far,
                hpfar: hpfar(ipa),
                pc: PC,
                pstate,
            };
            let action = h.run(&info);
            assert_data_abort(action, &info, write, vector, ec);
            assert_eq!(
                h.last_abort,
                Some(AbortReport {
                    pc: PC,
                    ipa: Ipa(ipa),
                    write,
                    why: AbortCause::Unmapped,
                })
            );
            assert_eq!(h.counters.injected_aborts, 1);
            assert!(h.env.fetches.is_empty(), "no decode for unmapped");
        }
    }
}

#[test]
fn abort_just_past_ram_and_just_past_the_uart() {
    for ipa in [RAM.end().0, UART_IPA + 0x1000, UART_IPA - 4] {
        let mut h = Harness::new();
        let info = ExitInfo {
            esr: dabt_no_isv(false),
            far: 0xffff_0000_0000_0000 | ipa,
            hpfar: hpfar(ipa),
            pc: PC,
            pstate: EL1H,
        };
        let action = h.run(&info);
        assert_data_abort(action, &info, false, 0x200, EC_DABT_SAME);
        assert_eq!(h.last_abort.unwrap().why, AbortCause::Unmapped);
    }
}

#[test]
fn el1t_vector_and_entry_pstate() {
    let mut h = Harness::new();
    let info = ExitInfo {
        esr: dabt_isv(2, 1, false),
        far: 0x10,
        hpfar: 0,
        pc: PC,
        pstate: EL1T | (0b1010 << 28),
    };
    let inj = injection(h.run(&info));
    assert_eq!(inj.pc, VBAR);
    assert_eq!(inj.pstate, 0xa000_03c5);
    assert_eq!(inj.spsr_el1, info.pstate);
}

// ------------------------------------------------------ other exit classes

#[test]
fn instruction_abort_is_injected() {
    for (pstate, vector, ec) in [
        (EL1H, 0x200, EC_IABT_SAME),
        (EL1T, 0x000, EC_IABT_SAME),
        (EL0, 0x400, EC_IABT_LOWER),
    ] {
        let mut h = Harness::new();
        let far = 0xffff_8000_dead_0000;
        let info = ExitInfo {
            esr: esr(EC_IABT_LOWER, FSC_TRANSLATION_L3),
            far,
            hpfar: hpfar(0x7000_0000),
            pc: far,
            pstate,
        };
        let inj = injection(h.run(&info));
        assert_eq!(inj.esr_el1, esr(ec, FSC_EXTERNAL), "{:#x}", inj.esr_el1);
        assert_eq!(inj.far_el1, Some(far));
        assert_eq!(inj.elr_el1, far);
        assert_eq!(inj.pc, VBAR + vector);
        assert_eq!(
            h.last_abort,
            Some(AbortReport {
                pc: far,
                ipa: Ipa(0x7000_0000),
                write: false,
                why: AbortCause::InstructionFetch,
            })
        );
        assert_eq!(
            h.counters,
            ExitCounters {
                injected_aborts: 1,
                ..ExitCounters::default()
            }
        );
    }
}

#[test]
fn unknown_exit_classes_inject_undefined() {
    for ec in [
        EC_UNKNOWN,
        EC_SYS64,
        EC_DABT_SAME,
        EC_IABT_SAME,
        0x13, // SMC from AArch32
        0x3f,
    ] {
        let mut h = Harness::new();
        let before = h.regs.clone();
        let info = ExitInfo {
            esr: esr(ec, 0x1_2345),
            far: 0x1234,
            hpfar: hpfar(UART_IPA),
            pc: PC,
            pstate: EL1H,
        };
        let inj = injection(h.run(&info));
        assert_eq!(inj.esr_el1, 0x0200_0000, "EC 0x00, IL 1 (for EC {ec:#x})");
        assert_eq!(inj.far_el1, None);
        assert_eq!(inj.elr_el1, PC);
        assert_eq!(inj.pc, VBAR + 0x200);
        assert_eq!(h.regs, before);
        assert_eq!(
            h.counters,
            ExitCounters {
                injected_undefs: 1,
                ..ExitCounters::default()
            }
        );
        assert_eq!(h.last_abort, None);
    }
}

#[test]
fn fp_trap_goes_to_the_glue_untouched() {
    let mut h = Harness::new();
    let before = h.regs.clone();
    assert_eq!(h.run(&call_exit(esr(0x07, 0x1e0_0000))), Action::FpTrap);
    assert_eq!(h.regs, before);
    assert_eq!(h.counters, ExitCounters::default());
}

#[test]
fn undefined_from_el0_uses_the_lower_el_vector() {
    let mut h = Harness::new();
    let info = ExitInfo {
        pstate: EL0,
        ..call_exit(esr(EC_SYS64, 0))
    };
    assert_eq!(injection(h.run(&info)).pc, VBAR + 0x400);
}

#[test]
fn wfi_waits_while_wfe_and_timed_forms_yield() {
    // TI: 0 WFI, 1 WFE, 2 WFIT, 3 WFET. Only WFI blocks; the others yield
    // (complete at once unless another vCPU wants the CPU).
    for (ti, expected) in [
        (0, Action::WaitForInterrupt { advance: true }),
        (1, Action::Yield { advance: true }),
        (2, Action::Yield { advance: true }),
        (3, Action::Yield { advance: true }),
    ] {
        let mut h = Harness::new();
        let before = h.regs.clone();
        assert_eq!(h.run(&call_exit(esr(EC_WFX, ti))), expected);
        assert_eq!(h.regs, before);
        assert_eq!(
            h.counters,
            ExitCounters {
                wfx: 1,
                ..ExitCounters::default()
            }
        );
    }
}

// --------------------------------------------------------- hostile inputs

/// Exception classes worth aiming at, plus a few that mean nothing.
const ECS: [u64; 14] = [
    0x00, 0x01, 0x07, 0x0e, 0x12, 0x13, 0x16, 0x17, 0x18, 0x20, 0x21, 0x24, 0x25, 0x3f,
];

/// Function IDs worth aiming at.
const FIDS: [u32; 16] = [
    smccc::PSCI_VERSION,
    smccc::PSCI_CPU_SUSPEND_32,
    smccc::PSCI_CPU_SUSPEND_64,
    smccc::PSCI_CPU_OFF,
    smccc::PSCI_CPU_ON_64,
    smccc::PSCI_AFFINITY_INFO_64,
    smccc::PSCI_SYSTEM_OFF,
    smccc::PSCI_SYSTEM_RESET,
    smccc::PSCI_SYSTEM_RESET2_64,
    smccc::PSCI_FEATURES,
    smccc::SMCCC_ARCH_FEATURES,
    smccc::SMCCC_ARCH_WORKAROUND_1,
    smccc::SMCCC_ARCH_WORKAROUND_2,
    stratum::INFO,
    stratum::CALL_UID,
    0x8400_0099,
];

fn esr_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (prop::sample::select(ECS.to_vec()), any::<u64>())
            .prop_map(|(ec, rest)| (rest & !(0x3f << 26)) | (ec << 26)),
    ]
}

fn hpfar_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(hpfar(UART_IPA)),
        Just(hpfar(RAM.start.0)),
    ]
}

/// Register values, often pointing into the UART page so decoded accesses
/// can match FAR.
fn reg_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u64..0x1000).prop_map(|o| UART_VA + o),
        0u64..0x100,
    ]
}

fn word_strategy() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        any::<u32>().prop_map(Some),
        // The load/store group.
        any::<u32>().prop_map(|w| Some((w | 0x0800_0000) & !0x0200_0000)),
        Just(None),
    ]
}

fn workaround_strategy() -> impl Strategy<Value = WorkaroundState> {
    prop::sample::select(vec![
        WorkaroundState::Required,
        WorkaroundState::NotRequired,
        WorkaroundState::NotSupported,
        WorkaroundState::DoNotInvoke,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn hostile_exits_never_panic(
        esr in esr_strategy(),
        far_off in prop_oneof![any::<u64>(), (0u64..0x1000).prop_map(|o| UART_VA + o)],
        hpfar in hpfar_strategy(),
        pc in any::<u64>(),
        pstate in any::<u64>(),
        x in prop::array::uniform31(reg_strategy()),
        fid in prop_oneof![any::<u64>(), prop::sample::select(FIDS.to_vec()).prop_map(u64::from)],
        sp in any::<u64>(),
        word in word_strategy(),
        wa in (workaround_strategy(), workaround_strategy(), workaround_strategy()),
        vcpus in 1usize..4,
        rx in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut h = Harness::with_vcpus(vcpus);
        h.regs.x = x;
        h.regs.x[0] = fid;
        h.regs.sp = sp;
        h.regs.pc = pc;
        if let Some(w) = word {
            h.env.code.push((pc, w));
        }
        h.firmware = FirmwareFeatures {
            workaround_1: wa.0,
            workaround_2: wa.1,
            workaround_3: wa.2,
        };
        for b in rx {
            h.uart.push_rx(b);
        }
        let info = ExitInfo { esr, far: far_off, hpfar, pc, pstate };
        let action = h.run(&info);

        let c = h.counters;
        let events =
            c.hvc + c.smc + c.mmio + c.injected_aborts + c.injected_undefs + c.wfx + c.sysreg;
        prop_assert!(events <= 1, "{c:?}");
        prop_assert!(c.mmio_decoded <= c.mmio);
        prop_assert!(h.env.fetches.len() <= 1);
        if pstate & (1 << 4) != 0 {
            prop_assert!(h.env.fetches.is_empty(), "AArch32: no A64 decode");
        }
        prop_assert_eq!(h.last_abort.is_some(), c.injected_aborts == 1);
        match action {
            Action::Inject(inj) => {
                prop_assert_eq!(c.injected_aborts + c.injected_undefs, 1);
                prop_assert_eq!(inj.pc & !0x7ff, VBAR & !0x7ff);
                prop_assert!(matches!(inj.pc & 0x7ff, 0x000 | 0x200 | 0x400 | 0x600));
                prop_assert_eq!(inj.elr_el1, pc);
                prop_assert_eq!(inj.spsr_el1, pstate);
                prop_assert_eq!(inj.esr_el1 & IL, IL);
            }
            Action::Advance => prop_assert!(c.mmio == 1 || c.smc == 1 || c.wfx == 1 || c.sysreg == 1),
            Action::CpuOn { target, .. } => {
                prop_assert!(target < vcpus);
                prop_assert_eq!(h.vcpus[target].state, PowerState::OnPending);
            }
            Action::Stop(reason) => prop_assert_ne!(reason, StopReason::Crashed),
            _ => {}
        }
    }

    #[test]
    fn uart_abort_with_syndrome_is_emulated_or_injected(
        iss in 0u64..(1 << 24),
        offset in 0u64..0x1000,
        value in any::<u64>(),
    ) {
        let mut h = Harness::new();
        h.regs.x = [value; 31];
        let info = uart_exit(esr(EC_DABT_LOWER, ISV | iss), offset);
        match h.run(&info) {
            Action::Advance => prop_assert_eq!(h.counters.mmio, 1),
            Action::Inject(_) => prop_assert_eq!(h.counters.injected_aborts, 1),
            other => prop_assert!(false, "unexpected {other:?}"),
        }
        prop_assert!(h.env.fetches.is_empty());
    }
}

// ------------------------------------------------ KVM-compatible corner cases

#[test]
fn hvc_with_a_nonzero_immediate_is_not_supported() {
    let mut h = Harness::new();
    h.regs.x[0] = u64::from(smccc::PSCI_VERSION);
    let before = h.regs.clone();
    // HVC #0x1234: ISS holds the immediate.
    assert_eq!(h.run(&call_exit(esr(EC_HVC64, 0x1234))), Action::Resume);
    let mut expected = before;
    expected.x[0] = u64::MAX;
    assert_eq!(h.regs, expected, "only x0 changes, to NOT_SUPPORTED");
    assert_eq!(h.counters.hvc, 1);
}

#[test]
fn cache_maintenance_on_the_uart_is_a_no_op() {
    // DC CIVAC to a UART address: ISV = 0, CM = 1, WnR = 1 (as the
    // architecture reports cache maintenance).
    const CM: u64 = 1 << 8;
    let mut h = Harness::new();
    h.set_uart_reg(IBRD, 0x42);
    let before = h.regs.clone();
    let info = uart_exit(esr(EC_DABT_LOWER, CM | WNR | FSC_TRANSLATION_L3), IBRD);
    assert_eq!(h.run(&info), Action::Advance);
    assert_eq!(h.regs, before, "no register changes");
    assert_eq!(h.uart_reg(IBRD), 0x42, "the device is untouched");
    assert!(h.env.tx.is_empty());
    assert!(h.env.fetches.is_empty(), "nothing to decode");
    assert_eq!(h.last_abort, None);
}

// ------------------------------------------------------------ virtual GIC

const GICD_IPA: u64 = 0x0800_0000;
const GICR_IPA: u64 = 0x080A_0000;

/// A data abort with a syndrome at `ipa` (EL1h, FAR with the same page offset).
fn device_exit(esr: u64, ipa: u64) -> ExitInfo {
    ExitInfo {
        esr,
        far: 0xffff_0000_0000_0000 | ipa,
        hpfar: hpfar(ipa),
        pc: PC,
        pstate: EL1H,
    }
}

/// `MSR`/`MRS` trap syndrome for (op0, op1, crn, crm, op2) with `rt`.
const fn sysreg_esr(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64, rt: u64, read: bool) -> u64 {
    let dir = if read { 1 } else { 0 };
    esr(
        EC_SYS64,
        (op0 << 20) | (op2 << 17) | (op1 << 14) | (crn << 10) | (rt << 5) | (crm << 1) | dir,
    )
}

#[test]
fn distributor_accesses_reach_the_virtual_gic() {
    let mut h = Harness::new().with_gic();
    h.gic.as_mut().unwrap().read_value = 0x0403_001f;
    // 32-bit read of GICD_TYPER (0x4) into x7.
    assert_eq!(
        h.run(&device_exit(dabt_isv(2, 7, false), GICD_IPA + 0x4)),
        Action::Advance
    );
    assert_eq!(h.regs.x[7], 0x0403_001f);
    // 64-bit write of x3 to GICD_IROUTER<32> (0x6100): allowed for the GIC.
    h.regs.x[3] = 0x0000_0001_0000_0002;
    assert_eq!(
        h.run(&device_exit(dabt_isv(3, 3, true), GICD_IPA + 0x6100)),
        Action::Advance
    );
    let calls = &h.gic.as_ref().unwrap().calls;
    assert_eq!(calls[0], ("dist_read", 0, 0, 0x4, AccessSize::Word, 0));
    assert_eq!(
        calls[1],
        (
            "dist_write",
            0,
            0,
            0x6100,
            AccessSize::Double,
            0x0000_0001_0000_0002
        )
    );
    assert_eq!(h.counters.mmio, 2);
    assert!(h.env.tx.is_empty());
}

#[test]
fn redistributor_accesses_name_the_redistributor_and_offset() {
    let mut h = Harness::new().with_gic();
    // Redistributor 1, SGI_base frame, GICR_ISENABLER0 (0x1_0100).
    let ipa = GICR_IPA + REDIST_STRIDE + 0x1_0100;
    h.regs.x[2] = 0xffff;
    assert_eq!(
        h.run(&device_exit(dabt_isv(2, 2, true), ipa)),
        Action::Advance
    );
    assert_eq!(
        h.gic.as_ref().unwrap().calls,
        [("redist_write", 0, 1, 0x1_0100, AccessSize::Word, 0xffff)]
    );
    // Beyond the last redistributor: unmapped.
    let beyond = GICR_IPA + 2 * REDIST_STRIDE + 0x100;
    let info = device_exit(dabt_isv(2, 2, false), beyond);
    let action = h.run(&info);
    assert_data_abort(action, &info, false, 0x200, EC_DABT_SAME);
    assert_eq!(h.last_abort.map(|a| a.why), Some(AbortCause::Unmapped));
}

#[test]
fn a_refused_gic_access_is_an_injected_abort() {
    let mut h = Harness::new().with_gic();
    h.gic.as_mut().unwrap().refuse = true;
    let before = h.regs.clone();
    let info = device_exit(dabt_isv(0, 4, false), GICD_IPA + 0xffc);
    let action = h.run(&info);
    assert_data_abort(action, &info, false, 0x200, EC_DABT_SAME);
    assert_eq!(h.regs, before, "no register written");
    assert_eq!(
        h.last_abort.map(|a| a.why),
        Some(AbortCause::DeviceRejected)
    );
}

#[test]
fn without_a_gic_its_window_is_unmapped() {
    let mut h = Harness::new();
    let info = device_exit(dabt_isv(2, 1, false), GICD_IPA);
    let action = h.run(&info);
    assert_data_abort(action, &info, false, 0x200, EC_DABT_SAME);
    assert_eq!(h.last_abort.map(|a| a.why), Some(AbortCause::Unmapped));
}

#[test]
fn a_pair_leaving_the_distributor_window_is_refused_whole() {
    // stp w1, w2, [x0] with x0 = the last word of the distributor frame:
    // the second element would be outside (in no device).
    let mut h = Harness::new().with_gic().code(STP_W1_W2_X0);
    let last = GICD_IPA + 0xfffc;
    h.regs.x[0] = 0xffff_0000_0000_0000 | last;
    let info = device_exit(dabt_no_isv(true), last);
    let action = h.run(&info);
    assert_data_abort(action, &info, true, 0x200, EC_DABT_SAME);
    assert!(
        h.gic.as_ref().unwrap().calls.is_empty(),
        "nothing reached the GIC"
    );
}

#[test]
fn sgi_register_writes_reach_the_virtual_gic() {
    let mut h = Harness::new().with_gic();
    h.regs.x[9] = 0x0000_0000_0300_0001; // INTID 3, target list {0}
    let msr = sysreg_esr(3, 0, 12, 11, 5, 9, false);
    assert_eq!(h.run(&call_exit(msr)), Action::Advance);
    let asgi = sysreg_esr(3, 0, 12, 11, 6, 31, false);
    assert_eq!(h.run(&call_exit(asgi)), Action::Advance);
    assert_eq!(
        h.gic.as_ref().unwrap().sgis,
        [
            (0, SgiRegister::Sgi1r, 0x0300_0001),
            (0, SgiRegister::Asgi1r, 0) // XZR
        ]
    );
    assert_eq!(h.counters.sysreg, 2);
}

#[test]
fn reading_an_sgi_register_or_having_no_gic_is_undefined() {
    let mut h = Harness::new().with_gic();
    let mrs = sysreg_esr(3, 0, 12, 11, 5, 1, true);
    let inj = injection(h.run(&call_exit(mrs)));
    assert_eq!(inj.esr_el1 >> 26, 0, "EC 0: unknown reason");
    assert!(h.gic.as_ref().unwrap().sgis.is_empty());

    let mut h = Harness::new();
    let msr = sysreg_esr(3, 0, 12, 11, 5, 1, false);
    let inj = injection(h.run(&call_exit(msr)));
    assert_eq!(inj.esr_el1 >> 26, 0);
    assert_eq!(h.counters.injected_undefs, 1);
}

#[test]
fn trapped_id_register_reads_return_the_hardware_value() {
    use crate::esr::sysreg::{ID_AA64MMFR0_EL1, ID_AA64PFR0_EL1};
    let mut h = Harness::new();
    // mrs x4, id_aa64mmfr0_el1
    let mrs = sysreg_esr(3, 0, 0, 7, 0, 4, true);
    assert_eq!(h.run(&call_exit(mrs)), Action::Advance);
    assert_eq!(h.regs.x[4], fake_id_value(ID_AA64MMFR0_EL1));
    // mrs x30, id_aa64pfr0_el1
    let mrs = sysreg_esr(3, 0, 0, 4, 0, 30, true);
    assert_eq!(h.run(&call_exit(mrs)), Action::Advance);
    assert_eq!(h.regs.x[30], fake_id_value(ID_AA64PFR0_EL1));
    assert_eq!(h.env.id_reads, [ID_AA64MMFR0_EL1, ID_AA64PFR0_EL1]);
    assert_eq!(h.counters.sysreg, 2);
    assert_eq!(h.counters.injected_undefs, 0);
}

#[test]
fn reserved_id_encodings_read_as_zero_without_asking_the_hardware() {
    let mut h = Harness::new();
    h.regs.x[2] = 0xdead;
    // (3, 0, c0, c7, 7): reserved in the TID3 group.
    let mrs = sysreg_esr(3, 0, 0, 7, 7, 2, true);
    assert_eq!(h.run(&call_exit(mrs)), Action::Advance);
    assert_eq!(h.regs.x[2], 0);
    assert!(h.env.id_reads.is_empty());
}

#[test]
fn id_read_into_xzr_changes_no_register() {
    let mut h = Harness::new();
    let before = h.regs.clone();
    let mrs = sysreg_esr(3, 0, 0, 6, 1, 31, true);
    assert_eq!(h.run(&call_exit(mrs)), Action::Advance);
    assert_eq!(h.regs, before);
}

#[test]
fn id_register_writes_and_midr_reads_are_undefined() {
    let mut h = Harness::new();
    // msr id_aa64mmfr0_el1, x1 (not an allocated write encoding).
    let msr = sysreg_esr(3, 0, 0, 7, 0, 1, false);
    let inj = injection(h.run(&call_exit(msr)));
    assert_eq!(inj.esr_el1 >> 26, 0, "EC 0: unknown reason");
    // MIDR_EL1 (CRm = 0) is outside the TID3 group: never emulated here.
    let mrs = sysreg_esr(3, 0, 0, 0, 0, 1, true);
    let inj = injection(h.run(&call_exit(mrs)));
    assert_eq!(inj.esr_el1 >> 26, 0);
    assert_eq!(h.counters.injected_undefs, 2);
    assert!(h.env.id_reads.is_empty());
}

// ------------------------------------------------------------ statistics

#[test]
fn every_exit_is_counted_under_its_precise_reason() {
    let mut h = Harness::with_vcpus(2).with_gic().code(LDR_W1_X0_18);
    let counted = |h: &Harness| h.counted.map(|c| (c.reason, c.detail));
    h.call(hvc(), smccc::PSCI_VERSION);
    assert_eq!(
        counted(&h),
        Some((Reason::HvcPsciVersion, smccc::PSCI_VERSION))
    );
    h.regs.x[1] = 1;
    h.call(hvc(), smccc::PSCI_CPU_ON_64);
    assert_eq!(counted(&h).map(|c| c.0), Some(Reason::HvcPsciCpuOn));
    h.call(hvc(), 0x1234);
    assert_eq!(counted(&h), Some((Reason::HvcOther, 0x1234)));
    h.run(&call_exit(esr(EC_HVC64, 7)));
    assert_eq!(counted(&h), Some((Reason::HvcImmediate, 7)));
    h.call(smc(), stratum::INFO);
    assert_eq!(counted(&h), Some((Reason::Smc, stratum::INFO)));
    h.run(&uart_exit(dabt_isv(2, 1, true), DR));
    assert_eq!(counted(&h), Some((Reason::MmioUartWrite, UART_IPA as u32)));
    h.run(&uart_exit(dabt_isv(2, 1, false), FR));
    assert_eq!(counted(&h).map(|c| c.0), Some(Reason::MmioUartRead));
    h.run(&device_exit(dabt_isv(2, 1, false), GICD_IPA + 4));
    assert_eq!(
        counted(&h),
        Some((Reason::MmioGicdRead, GICD_IPA as u32 + 4))
    );
    h.run(&device_exit(dabt_isv(2, 1, true), GICR_IPA + 0x1_0080));
    assert_eq!(counted(&h).map(|c| c.0), Some(Reason::MmioGicrWrite));
    // ISV = 0: decoded, and noted as such.
    h.regs.x[0] = 0xffff_0000_0000_0000 | (GICD_IPA + 0x100 - 0x18);
    h.run(&device_exit(dabt_no_isv(false), GICD_IPA + 0x100));
    assert_eq!(counted(&h).map(|c| c.0), Some(Reason::MmioGicdRead));
    assert_eq!(h.stats.get(Reason::MmioDecoded), 1);
    h.run(&device_exit(dabt_isv(2, 1, false), 0x1000_0000));
    assert_eq!(counted(&h), Some((Reason::AbortUnmapped, 0x1000_0000)));
    h.run(&call_exit(sysreg_esr(3, 0, 12, 11, 5, 1, false)));
    assert_eq!(counted(&h).map(|c| c.0), Some(Reason::SysregSgi1r));
    h.run(&call_exit(sysreg_esr(3, 0, 1, 0, 0, 1, true)));
    assert_eq!(counted(&h).map(|c| c.0), Some(Reason::SysregOther));
    h.run(&call_exit(esr(EC_WFX, 0)));
    assert_eq!(counted(&h), Some((Reason::Wfi, 0)));
    h.run(&call_exit(esr(EC_WFX, 1)));
    assert_eq!(counted(&h), Some((Reason::Wfe, 0)));
    h.run(&call_exit(esr(EC_UNKNOWN, 0)));
    assert_eq!(counted(&h).map(|c| c.0), Some(Reason::Undef));
    // mrs x4, id_aa64mmfr0_el1 (TID3), emulated.
    h.run(&call_exit(sysreg_esr(3, 0, 0, 7, 0, 4, true)));
    assert_eq!(counted(&h).map(|c| c.0), Some(Reason::SysregId));
    h.run(&call_exit(esr(0x07, 0)));
    assert_eq!(counted(&h), Some((Reason::FpTrap, 0)));
    let c = h.counters;
    assert_eq!(
        (c.hvc, c.smc, c.mmio, c.mmio_decoded, c.sysreg, c.wfx),
        (4, 1, 5, 1, 2, 2)
    );
    assert_eq!((c.injected_aborts, c.injected_undefs), (1, 2));
    assert_eq!(
        ExitCounters::sum([&h.stats, &ExitStats::new(), &h.stats]).hvc,
        8
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    /// Whatever the early handler answers, the full policy answers the same:
    /// the same registers written, the same resume point, and no state
    /// touched (no counter but the exit's own, no device, no vCPU).
    #[test]
    fn early_answers_match_the_full_policy(
        esr in prop_oneof![
            esr_strategy(),
            (0u64..8, 0u64..8, 0u64..32, any::<bool>())
                .prop_map(|(crm, op2, rt, read)| sysreg_esr(3, 0, 0, crm, op2, rt, read)),
            Just(0x5a00_0000u64),
        ],
        x in prop::array::uniform31(reg_strategy()),
        fid in prop_oneof![any::<u64>(), prop::sample::select(FIDS.to_vec()).prop_map(u64::from),
            prop::sample::select(vec![
                u64::from(smccc::SMCCC_VERSION),
                u64::from(smccc::SMCCC_ARCH_FEATURES),
                u64::from(smccc::PSCI_FEATURES),
                u64::from(stratum::CALL_COUNT),
                u64::from(stratum::REVISION),
            ])],
        wa in (workaround_strategy(), workaround_strategy(), workaround_strategy()),
    ) {
        let mut h = Harness::new();
        h.regs.x = x;
        h.regs.x[0] = fid;
        h.firmware = FirmwareFeatures {
            workaround_1: wa.0,
            workaround_2: wa.1,
            workaround_3: wa.2,
        };
        let args = [h.regs.x[0], h.regs.x[1], h.regs.x[2], h.regs.x[3]];
        let Some(answer) = early::early(esr, &args, &h.firmware) else {
            return Ok(());
        };
        let mut expect = h.regs.clone();
        let mut want_counted = None;
        let want_action = match answer {
            early::Early::Call { regs, count, reason, detail } => {
                expect.x[..usize::from(count)].copy_from_slice(&regs[..usize::from(count)]);
                want_counted = Some(Counted { reason, detail });
                Action::Resume
            }
            early::Early::IdRead { rt, read } => {
                if rt < 31 {
                    expect.x[usize::from(rt)] = match read {
                        IdRead::Hardware(encoding) => fake_id_value(encoding),
                        IdRead::Zero => 0,
                    };
                }
                Action::Advance
            }
        };
        let action = h.run(&call_exit(esr));
        prop_assert_eq!(action, want_action);
        prop_assert_eq!(&h.regs, &expect);
        if want_counted.is_some() {
            prop_assert_eq!(h.counted, want_counted, "counted as the policy counts it");
        }
        prop_assert_eq!(h.last_abort, None);
        prop_assert!(h.env.tx.is_empty(), "no console output");
    }
}

// ------------------------------------------------------------ the device bus

/// A device the policy has never heard of: eight 32-bit scratch registers
/// that log every access.
#[derive(Debug, Default)]
struct Scratch {
    regs: [u32; 8],
    log: Vec<(bool, u32, u64)>,
}

impl MmioDevice for Scratch {
    fn read(&mut self, a: &DeviceAccess, _fx: &mut Effects) -> Result<u64, AccessRefused> {
        self.log.push((false, a.bank, a.offset));
        let r = self
            .regs
            .get((a.offset / 4) as usize)
            .ok_or(AccessRefused)?;
        Ok(u64::from(*r))
    }
    fn write(&mut self, a: &DeviceAccess, v: u64, fx: &mut Effects) -> Result<(), AccessRefused> {
        self.log.push((true, a.bank, a.offset));
        let r = self
            .regs
            .get_mut((a.offset / 4) as usize)
            .ok_or(AccessRefused)?;
        *r = v as u32;
        fx.set_lines();
        Ok(())
    }
}

/// A VM whose only devices are scratch banks, one per bank of a window.
struct ScratchVm {
    dev: Scratch,
}

impl DeviceTable for ScratchVm {
    fn device(&mut self, id: DeviceId) -> Option<&mut dyn MmioDevice> {
        (id == DeviceId(9)).then_some(&mut self.dev as &mut dyn MmioDevice)
    }
}

impl VmDevices for ScratchVm {
    fn sgi_write(&mut self, _: usize, _: SgiRegister, _: u64) -> bool {
        false
    }
}

#[test]
fn a_new_device_is_reached_through_the_bus_alone() {
    // Four banks of 0x200 bytes at virt's virtio-mmio base, counted as
    // UART accesses only because the test needs some reason.
    let mut bus = MmioBus::new();
    bus.insert(Window::banked(
        Ipa(0x0a00_0000),
        0x200,
        4,
        DeviceId(9),
        3,
        [Reason::MmioUartRead, Reason::MmioUartWrite],
    ))
    .expect("window");
    let mut devices = ScratchVm {
        dev: Scratch::default(),
    };
    let stats = ExitStats::new();
    let mut vcpus = [VcpuPower::new(0, PowerState::On)];
    let mut regs = new_regs();
    let mut env = Env::default();
    let mut vm = VmModel {
        vm_id: VM_ID,
        boot_count: BOOTS,
        channels: 0,
        ram: RAM,
        bus: &bus,
        devices: &mut devices,
        effects: Effects::default(),
        vcpus: &mut vcpus,
        firmware: FirmwareFeatures::NONE,
        pstate_features: PstateFeatures::NONE,
        debug_limits: A57_DEBUG,
        stats: &stats,
        counted: None,
        last_abort: None,
        trng: &mut crate::trng::Trng::new(&[0; 16], 0, 1, 0),
    };
    // str w5, [bank 2 + 0x8]; then ldr w6 back.
    regs.x[5] = 0xdead_beef;
    let store = device_exit(dabt_isv(2, 5, true), 0x0a00_0000 + 2 * 0x200 + 0x8);
    assert_eq!(
        handle_sync(&store, 0, &mut regs, &mut vm, &mut env),
        Action::Advance
    );
    assert!(vm.effects.lines(), "the device's effect reaches the glue");
    let load = device_exit(dabt_isv(2, 6, false), 0x0a00_0000 + 2 * 0x200 + 0x8);
    assert_eq!(
        handle_sync(&load, 0, &mut regs, &mut vm, &mut env),
        Action::Advance
    );
    assert_eq!(regs.x[6], 0xdead_beef);
    // An offset the device refuses is an abort, not a panic.
    let refused = device_exit(dabt_isv(2, 6, false), 0x0a00_0000 + 0x1fc);
    assert_eq!(
        injection(handle_sync(&refused, 0, &mut regs, &mut vm, &mut env)).esr_el1,
        abort_esr(EC_DABT_SAME, false)
    );
    assert_eq!(
        vm.last_abort.map(|a| a.why),
        Some(AbortCause::DeviceRejected)
    );
    assert_eq!(stats.get(Reason::MmioUartWrite), 1);
    assert_eq!(stats.get(Reason::MmioUartRead), 1);
    assert_eq!(
        devices.dev.log,
        [(true, 2, 0x8), (false, 2, 0x8), (false, 0, 0x1fc)]
    );
}

#[test]
fn uart_output_and_line_changes_are_effects() {
    let mut h = Harness::new();
    // UARTIMSC (0x38) = TX: the line may now rise; no output.
    h.regs.x[1] = 1 << 5;
    assert_eq!(
        h.run(&uart_exit(dabt_isv(2, 1, true), 0x38)),
        Action::Advance
    );
    assert_eq!(h.effects.console_len(), 0);
    // A byte to UARTDR: output, and TXRIS rises with TX unmasked.
    h.regs.x[1] = u64::from(b'Z');
    assert_eq!(h.run(&uart_exit(dabt_isv(0, 1, true), DR)), Action::Advance);
    assert!(h.effects.console_bytes().eq(*b"Z"));
    assert!(h.effects.lines(), "the transmit interrupt was raised");
    // Reading UARTFR changes nothing the glue must look at.
    assert_eq!(
        h.run(&uart_exit(dabt_isv(2, 2, false), FR)),
        Action::Advance
    );
    assert!(h.effects.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    /// Whatever data abort the glue answers directly ([`mmio_access`]),
    /// the full policy answers the same way: the same registers, device
    /// state, effects and count, and `Advance`.
    #[test]
    fn the_direct_mmio_route_agrees_with_the_policy(
        sas in 0u64..4,
        srt in 0u64..32,
        flags in 0u64..64,
        window in 0usize..3,
        offset in 0u64..0x4_2000,
        x in proptest::array::uniform31(any::<u64>()),
        read_value in any::<u64>(),
    ) {
        let base = [UART_IPA, GICD_IPA, GICR_IPA][window];
        let ipa = base + offset;
        let bit = |n: u64, b: u64| if flags & (1 << n) != 0 { b } else { 0 };
        let write = flags & 1 != 0;
        let iss = ISV | (sas << 22) | bit(1, SSE) | (srt << 16) | bit(2, SF)
            | if write { WNR } else { 0 }
            | bit(3, S1PTW) | bit(4, 1 << 8) | FSC_TRANSLATION_L3;
        let mut esr = esr(EC_DABT_LOWER, iss);
        if flags & (1 << 5) != 0 {
            esr &= !IL;
        }
        let info = device_exit(esr, ipa);
        let mut direct = Harness::new().with_gic();
        let mut policy = Harness::new().with_gic();
        for h in [&mut direct, &mut policy] {
            h.regs.x = x;
            h.gic.as_mut().expect("a GIC").read_value = read_value;
        }
        let bus = direct.bus();
        let mut devices = Devices {
            uart: &mut direct.uart,
            gic: direct.gic.as_mut(),
        };
        let mut fx = Effects::default();
        let Some(reason) = mmio_access(
            info.esr, info.far, info.hpfar, 0, &mut direct.regs, &bus, &mut devices, &mut fx,
        ) else {
            return Ok(());
        };
        prop_assert_eq!(policy.run(&info), Action::Advance);
        prop_assert_eq!(policy.counted.map(|c| c.reason), Some(reason));
        prop_assert_eq!(&policy.regs, &direct.regs);
        prop_assert_eq!(&policy.uart, &direct.uart);
        prop_assert_eq!(
            &policy.gic.as_ref().expect("a GIC").calls,
            &direct.gic.as_ref().expect("a GIC").calls
        );
        prop_assert_eq!(policy.effects, fx);
    }
}

#[test]
fn unknown_and_malformed_calls_take_the_early_path() {
    let not_supported =
        |esr: u64, fid: u64| match early::early(esr, &[fid, 7, 7, 7], &FirmwareFeatures::NONE) {
            Some(early::Early::Call { regs, count: 1, .. }) => {
                regs[0] == smccc::NOT_SUPPORTED as u64
            }
            _ => false,
        };
    // An unimplemented PSCI function, an unknown vendor call, a call with
    // the fast bit clear, one with MBZ bits set, SOC_ID, and garbage.
    for fid in [
        0x8400_00ff,
        0xc600_0042,
        0x0400_0000,
        0x8001_0000,
        0x8000_0002,
        0xdead_beef_dead_beef,
    ] {
        assert!(not_supported(hvc(), fid), "{fid:#x}");
    }
    // HVC with a non-zero immediate, whatever x0 holds.
    assert!(not_supported(hvc() | 0x42, u64::from(smccc::PSCI_VERSION)));
    // What needs the VM goes to the full policy.
    for fid in [
        smccc::PSCI_CPU_ON_64,
        smccc::PSCI_CPU_OFF,
        smccc::PSCI_SYSTEM_OFF,
        smccc::PSCI_AFFINITY_INFO_64,
        stratum::DOORBELL,
        stratum::INFO,
        smccc::SMCCC_ARCH_WORKAROUND_1,
    ] {
        assert_eq!(
            early::early(hvc(), &[u64::from(fid), 0, 0, 0], &FirmwareFeatures::NONE),
            None,
            "{fid:#x}"
        );
    }
}

proptest! {
    /// The direct route's load extension in shifts is the plan's, for
    /// every size, extension and register width.
    #[test]
    fn load_value_is_the_syndromes(value: u64, sas in 0u32..4, sign_extend: bool, sixty_four: bool, reg in 0u8..32) {
        let s = AccessSyndrome {
            size: AccessSize::from_log2(sas).expect("two bits"),
            sign_extend,
            reg,
            sixty_four,
            acquire_release: false,
        };
        prop_assert_eq!(load_value(&s, value), mmio::syndrome_load_value(&s, value));
    }
}

#[test]
fn injection_notes_are_logged_up_to_the_limit_and_say_so_at_it() {
    let info = ExitInfo {
        esr: 0x9200_0046,
        pc: 0x4000_1000,
        ..ExitInfo::default()
    };
    let undef = Injection {
        esr_el1: 0,
        far_el1: None,
        elr_el1: 0,
        spsr_el1: 0,
        pc: 0,
        pstate: 0,
    };
    let report = AbortReport {
        pc: 0x4000_1000,
        ipa: Ipa(0x0900_1000),
        write: true,
        why: AbortCause::Unmapped,
    };
    let abort = Injection {
        esr_el1: 0x25 << 26,
        ..undef
    };
    let counters = |n| ExitCounters {
        injected_undefs: n,
        injected_aborts: n,
        ..ExitCounters::default()
    };
    let first = InjectionNotes::new(&counters(1), &info, &undef, None);
    assert_eq!(
        first.undef_text().map(|t| t.to_string()).as_deref(),
        Some("undefined instruction injected for ESR_EL2 0x92000046 at pc 0x40001000")
    );
    assert!(first.abort_text().is_none());
    let last = InjectionNotes::new(&counters(ABORT_LOG_LIMIT), &info, &abort, Some(report));
    assert!(last.undef_text().is_none(), "an abort is not an undef");
    let text = last.abort_text().expect("an abort note").to_string();
    assert!(text.starts_with("Unmapped write of "), "{text}");
    assert!(
        text.ends_with("abort injected (further aborts are only counted)"),
        "{text}"
    );
    let past = InjectionNotes::new(&counters(ABORT_LOG_LIMIT + 1), &info, &abort, Some(report));
    assert_eq!(
        past,
        InjectionNotes {
            undef: None,
            abort: None
        }
    );
}

/// QEMU `cortex-a57`: 6 breakpoints, 4 watchpoints, 6 PMU counters.
const A57_DEBUG: crate::debugpmu::Limits = crate::debugpmu::Limits {
    breakpoints: 6,
    watchpoints: 4,
    counters: Some(6),
};

#[test]
fn debug_and_pmu_registers_the_cpu_has_go_to_the_glue() {
    use crate::debugpmu::{DebugReg, PmuReg, Reg};
    let mut h = Harness::new();
    // mrs x7, mdccint_el1: emulated, and x7 will be written.
    let action = h.run(&call_exit(sysreg_esr(2, 0, 0, 2, 0, 7, true)));
    assert_eq!(
        action,
        Action::DebugPmu {
            reg: Reg::Debug(DebugReg::Mdccint),
            read: true,
            rt: 7
        }
    );
    assert_eq!(h.counted.map(|c| c.reason), Some(Reason::SysregDebug));
    // msr dbgbcr5_el1, x2: the sixth breakpoint exists.
    let action = h.run(&call_exit(sysreg_esr(2, 0, 0, 5, 5, 2, false)));
    assert!(matches!(
        action,
        Action::DebugPmu {
            reg: Reg::Debug(DebugReg::Bcr(5)),
            read: false,
            rt: 2
        }
    ));
    // msr pmevtyper5_el0, x3.
    let action = h.run(&call_exit(sysreg_esr(3, 3, 14, 12, 5, 3, false)));
    assert!(matches!(
        action,
        Action::DebugPmu {
            reg: Reg::Pmu(PmuReg::Evtyper(5)),
            ..
        }
    ));
    assert_eq!(h.counted.map(|c| c.reason), Some(Reason::SysregPmu));
    assert_eq!(h.stats.get(Reason::SysregDebug), 2);
    assert_eq!(h.stats.get(Reason::SysregPmu), 1);
}

#[test]
fn debug_and_pmu_registers_the_cpu_lacks_are_undefined() {
    let mut h = Harness::new();
    for esr in [
        sysreg_esr(2, 0, 0, 6, 4, 1, true),   // DBGBVR6_EL1: 6 breakpoints
        sysreg_esr(2, 0, 0, 4, 7, 1, false),  // DBGWCR4_EL1: 4 watchpoints
        sysreg_esr(3, 3, 14, 8, 6, 1, true),  // PMEVCNTR6_EL0: 6 counters
        sysreg_esr(2, 0, 1, 0, 4, 1, true),   // OSLAR_EL1 is write-only
        sysreg_esr(3, 3, 9, 12, 4, 1, true),  // PMSWINC_EL0 is write-only
        sysreg_esr(3, 3, 9, 12, 6, 1, false), // PMCEID0_EL0 is read-only
        sysreg_esr(2, 0, 5, 0, 0, 1, true),   // reserved debug encoding
        sysreg_esr(3, 3, 9, 15, 0, 1, true),  // reserved PMU encoding
    ] {
        let action = h.run(&call_exit(esr));
        assert!(matches!(action, Action::Inject(_)), "{esr:#x}: {action:?}");
        assert_eq!(h.counted.map(|c| c.reason), Some(Reason::SysregOther));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    /// The glue's direct SGI route ([`sgi_write_of`]) takes exactly the
    /// exits the full policy answers with an SGI-register write: the same
    /// register and value reach the GIC, the PC steps past, the same count.
    #[test]
    fn the_sgi_route_agrees_with_the_policy(
        esr in prop_oneof![
            esr_strategy(),
            (0u64..4, 0u64..4, 9u64..14, 10u64..13, 4u64..8, 0u64..32, any::<bool>())
                .prop_map(|(op0, op1, crn, crm, op2, rt, read)| sysreg_esr(op0, op1, crn, crm, op2, rt, read)),
        ],
        x in prop::array::uniform31(reg_strategy()),
    ) {
        let mut h = Harness::new().with_gic();
        h.regs.x = x;
        let route = sgi_write_of(esr);
        let action = h.run(&call_exit(esr));
        let sgis = &h.gic.as_ref().unwrap().sgis;
        match route {
            Some(w) => {
                let value = if w.rt < 31 { x[usize::from(w.rt)] } else { 0 };
                prop_assert_eq!(action, Action::Advance);
                prop_assert_eq!(sgis, &vec![(0, w.which, value)]);
                prop_assert_eq!(h.counted, Some(Counted { reason: w.reason, detail: w.encoding }));
            }
            None => prop_assert!(sgis.is_empty(), "{esr:#x}: an SGI write the route misses"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The glue's direct wait-for route ([`wfx_of`]) takes exactly the
    /// exits of the wait-for class, and answers each as the full policy
    /// does: `WFI` waits, the others yield, both step past, the same count.
    #[test]
    fn the_wfx_route_agrees_with_the_policy(
        esr in prop_oneof![
            esr_strategy(),
            any::<u64>().prop_map(|rest| (rest & !(0x3f << 26)) | (EC_WFX << 26)),
        ],
    ) {
        let mut h = Harness::new().with_gic();
        let route = wfx_of(esr);
        let action = h.run(&call_exit(esr));
        match route {
            Some(w) => {
                let expected = if w.wait {
                    Action::WaitForInterrupt { advance: true }
                } else {
                    Action::Yield { advance: true }
                };
                prop_assert_eq!(action, expected);
                prop_assert_eq!(h.counted, Some(Counted { reason: w.reason, detail: 0 }));
            }
            None => prop_assert_ne!((esr >> 26) & 0x3f, EC_WFX, "{:#x}: a wait-for exit the route misses", esr),
        }
    }
}

/// The channels the harness's VM has.
const CHANNELS: u32 = 1;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The glue's direct doorbell route ([`doorbell_of`] with
    /// [`DoorbellCall::channel_in`]) takes exactly the exits the full
    /// policy answers with a doorbell, for the same channel, counted the
    /// same way; a call it finds with a channel the VM lacks is one the
    /// policy refuses.
    #[test]
    fn the_doorbell_route_agrees_with_the_policy(
        esr in prop_oneof![
            esr_strategy(),
            (0u64..3, any::<u64>()).prop_map(|(imm, rest)| (rest & !0x3f00_ffff) | (EC_HVC64 << 26) | imm),
        ],
        x0 in prop_oneof![
            any::<u64>(),
            any::<u32>().prop_map(|high| (u64::from(high) << 32) | u64::from(stratum::DOORBELL)),
        ],
        x1 in prop_oneof![any::<u64>(), 0u64..4, Just(1u64 << 32)],
    ) {
        let mut h = Harness::new().with_gic();
        h.regs.x[0] = x0;
        h.regs.x[1] = x1;
        let route = doorbell_of(esr, x0, x1);
        let action = h.run(&call_exit(esr));
        let policy = match action {
            Action::Doorbell { channel, advance: false } => Some(channel),
            _ => None,
        };
        prop_assert_eq!(route.and_then(|c| c.channel_in(CHANNELS)), policy, "{:#x} {:#x} {:#x}", esr, x0, x1);
        if let Some(call) = route {
            prop_assert_eq!(h.counted, Some(Counted { reason: call.reason, detail: stratum::DOORBELL }));
            if policy.is_none() {
                prop_assert_eq!(action, Action::Resume);
                prop_assert_eq!(h.regs.x[0], smccc::INVALID_PARAMETERS as u64);
            }
        }
    }
}

#[test]
fn the_wfx_route_waits_only_for_wfi() {
    let wfi = wfx_of(esr(EC_WFX, 0)).expect("WFI");
    assert_eq!((wfi.wait, wfi.reason), (true, Reason::Wfi));
    for ti in 1..4 {
        let w = wfx_of(esr(EC_WFX, ti)).expect("WFE, WFIT, WFET");
        assert!(!w.wait, "TI {ti} yields");
    }
    assert_eq!(wfx_of(esr(EC_HVC64, 0)), None);
}

#[test]
fn the_sgi_route_names_the_three_registers() {
    let sgi1r = sysreg_esr(3, 0, 12, 11, 5, 9, false);
    let w = sgi_write_of(sgi1r).expect("ICC_SGI1R_EL1");
    assert_eq!(
        (w.which, w.rt, w.reason),
        (SgiRegister::Sgi1r, 9, Reason::SysregSgi1r)
    );
    let asgi = sgi_write_of(sysreg_esr(3, 0, 12, 11, 6, 31, false)).expect("ICC_ASGI1R_EL1");
    assert_eq!((asgi.which, asgi.rt), (SgiRegister::Asgi1r, 31));
    let sgi0r = sgi_write_of(sysreg_esr(3, 0, 12, 11, 7, 0, false)).expect("ICC_SGI0R_EL1");
    assert_eq!(sgi0r.which, SgiRegister::Sgi0r);
    // A read, another register, another class: not the route's.
    assert_eq!(sgi_write_of(sysreg_esr(3, 0, 12, 11, 5, 9, true)), None);
    assert_eq!(sgi_write_of(sysreg_esr(3, 0, 0, 1, 0, 9, true)), None);
    assert_eq!(sgi_write_of(0x5a00_0000), None);
}
