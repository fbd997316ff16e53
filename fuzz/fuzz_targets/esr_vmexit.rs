//! The ESR decoder and the exit policy (`stratum_core::esr`,
//! `stratum_core::vmexit`): a run of synthetic exits of a VM with the real
//! device models on its real bus (`Machine::describe`'s: the PL011 and the
//! vGIC, GICv2 or GICv3), a register file and guest code from the input.
//!
//! Checked for every exit: decoding is total and agrees with the fast
//! paths (`mmio_syndrome`, `sysreg_access`, `early`); a system register
//! access's fields re-encode to the ISS they came from; `handle_sync`
//! never panics, counts the exit exactly once, only starts vCPUs that
//! exist, and agrees with the direct MMIO route (`mmio_access`) on every
//! exit that route takes. A debug or PMU register access it hands to the
//! glue is one the CPU's limits allow, and emulating it (`debugpmu::emulate`,
//! with the value in `Xt`) touches only registers the CPU has: no
//! breakpoint, watchpoint or event counter beyond its count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_abi::bundle::{KernelKind, OnCrash, VmImage};
use stratum_core::addr::Gva;
use stratum_core::bus::{DeviceId, DeviceTable, Effects, MmioDevice};
use stratum_core::debugpmu::{self, DebugPmuHw, HwReg, Limits, Shadow};
use stratum_core::esr::{self, Exit};
use stratum_core::inject::PstateFeatures;
use stratum_core::machine::{GIC_DEVICE, Machine, UART_DEVICE};
use stratum_core::mmio::GuestRegs;
use stratum_core::pl011::Pl011;
use stratum_core::psci::{FirmwareFeatures, PowerState, VcpuPower, WorkaroundState};
use stratum_core::stats::{ExitStats, Reason};
use stratum_core::trng::Trng;
use stratum_core::vmexit::{
    self, Action, ExitEnv, ExitInfo, SgiRegister, VmDevices, VmModel, early,
};
use stratum_fuzz::{Input, Regs, gic_version};
use stratum_vgic::Vgic;

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 0x800_0000;
/// Exits per input, at most.
const MAX_EXITS: usize = 64;

/// The glue's side: one instruction word at the exit's PC (or none).
struct Env {
    pc: u64,
    insn: Option<u32>,
    vbar: u64,
    sctlr: u64,
}

impl ExitEnv for Env {
    fn fetch_insn(&mut self, pc: Gva) -> Option<u32> {
        if pc.0 == self.pc { self.insn } else { None }
    }
    fn el1_vector_state(&mut self) -> (u64, u64) {
        (self.vbar, self.sctlr)
    }
    fn id_register(&mut self, encoding: u32) -> u64 {
        0x1100_0000_0000_0000 | u64::from(encoding)
    }
}

#[derive(Clone)]
struct Devices {
    uart: Pl011,
    gic: Vgic,
}

impl DeviceTable for Devices {
    fn device(&mut self, id: DeviceId) -> Option<&mut dyn MmioDevice> {
        match id {
            UART_DEVICE => Some(&mut self.uart),
            GIC_DEVICE => Some(&mut self.gic),
            _ => None,
        }
    }
}

impl VmDevices for Devices {
    fn sgi_write(&mut self, vcpu: usize, which: SgiRegister, value: u64) -> bool {
        self.gic.sgi_register_write(vcpu, which, value);
        true
    }
}

/// ISS bits \[21:0\] of a trapped MSR/MRS from its decoded fields.
fn sysreg_iss(a: &esr::SysRegAccess) -> u64 {
    (u64::from(a.op0) << 20)
        | (u64::from(a.op2) << 17)
        | (u64::from(a.op1) << 14)
        | (u64::from(a.crn) << 10)
        | (u64::from(a.rt) << 5)
        | (u64::from(a.crm) << 1)
        | u64::from(a.read)
}

/// An ESR value: either any 64 bits, or one of the classes the policy
/// handles with a random ISS (so most inputs reach a handler).
fn esr_of(input: &mut Input<'_>) -> u64 {
    const CLASSES: [u64; 9] = [0x00, 0x01, 0x07, 0x12, 0x13, 0x16, 0x17, 0x18, 0x24];
    let pick = input.u8();
    let iss = u64::from(input.u32()) & ((1 << 25) - 1);
    match pick % 16 {
        0 => input.u64(),
        1 => (0x20 << 26) | (1 << 25) | iss,
        n => {
            let ec = CLASSES[usize::from(n) % CLASSES.len()];
            (ec << 26) | (1 << 25) | iss
        }
    }
}

fn check_decode(e: u64) {
    let exit = esr::decode(e);
    assert_eq!(exit, esr::decode(e), "decode is a function");
    match exit {
        Exit::DataAbort(d) => {
            if let Some(s) = d.syndrome {
                assert!(s.reg <= 31);
            }
            // The direct route's decoder agrees with the full one.
            if let Some((s, write)) = esr::mmio_syndrome(e) {
                assert_eq!(d.syndrome, Some(s));
                assert_eq!(d.write, write);
                assert!(!d.s1ptw && !d.cache_maintenance && d.il32);
            }
        }
        Exit::SysReg(a) => {
            assert!(a.op0 < 4 && a.op1 < 8 && a.op2 < 8 && a.crn < 16 && a.crm < 16 && a.rt < 32);
            assert_eq!(sysreg_iss(&a), e & 0x3f_ffff, "MSR/MRS fields re-encode");
            assert_eq!(esr::sysreg_access(e), Some(a));
        }
        Exit::Wfx(w) => {
            if let Some(r) = w.timeout_reg {
                assert!(r <= 31);
            }
        }
        _ => {
            assert_eq!(esr::mmio_syndrome(e), None);
        }
    }
    if !matches!(exit, Exit::SysReg(_)) {
        assert_eq!(esr::sysreg_access(e), None);
    }
}

/// The CPU's debug and PMU registers, checking that each exists.
struct DebugHw {
    limits: Limits,
    regs: Vec<(HwReg, u64)>,
}

impl DebugHw {
    fn check(&self, reg: HwReg) {
        let ok = match reg {
            HwReg::Bvr(n) | HwReg::Bcr(n) => n < self.limits.breakpoints,
            HwReg::Wvr(n) | HwReg::Wcr(n) => n < self.limits.watchpoints,
            HwReg::Evcntr(n) | HwReg::Evtyper(n) => self.limits.counters.is_some_and(|c| n < c),
            HwReg::Mdscr | HwReg::Oslar | HwReg::Oslsr => true,
            _ => self.limits.counters.is_some(),
        };
        assert!(ok, "{reg:?} does not exist on a CPU with {:?}", self.limits);
    }
}

impl DebugPmuHw for DebugHw {
    fn read(&mut self, reg: HwReg) -> u64 {
        self.check(reg);
        self.regs
            .iter()
            .find(|(r, _)| *r == reg)
            .map_or(0, |&(_, v)| v)
    }
    fn write(&mut self, reg: HwReg, value: u64) {
        self.check(reg);
        match self.regs.iter_mut().find(|(r, _)| *r == reg) {
            Some(slot) => slot.1 = value,
            None => self.regs.push((reg, value)),
        }
    }
}

/// The CPUs the debug limits come from: a Cortex-A57, the most the
/// architecture allows, the least, and a PMU without event counters.
const DEBUG_LIMITS: [Limits; 4] = [
    Limits {
        breakpoints: 6,
        watchpoints: 4,
        counters: Some(6),
    },
    Limits {
        breakpoints: 16,
        watchpoints: 16,
        counters: Some(31),
    },
    Limits {
        breakpoints: 1,
        watchpoints: 1,
        counters: None,
    },
    Limits {
        breakpoints: 2,
        watchpoints: 2,
        counters: Some(0),
    },
];

fn exits_counted(stats: &ExitStats) -> u64 {
    Reason::ALL
        .iter()
        .filter(|r| r.is_exit())
        .map(|&r| stats.get(r))
        .sum()
}

fn image(vcpus: u32) -> VmImage<'static> {
    VmImage {
        name: "fuzz",
        vcpus,
        kernel_kind: KernelKind::Raw,
        mem_base: RAM_BASE,
        mem_size: RAM_SIZE,
        kernel: &[0; 16],
        kernel_load_offset: 0x8_0000,
        entry_offset: 0x8_0000,
        kernel_footprint: 0x1000,
        initrd: None,
        dt_fragment: None,
        cmdline: "",
        pinned: false,
        pcpus: [0; 8],
        on_crash: OnCrash::Stop,
        identity: false,
        firmware: false,
        service: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let head = input.u8();
    let version = gic_version(head);
    let nvcpus = 1 + usize::from(head >> 1) % 4;
    let debug_limits = DEBUG_LIMITS[usize::from(head >> 3) % DEBUG_LIMITS.len()];
    let mut debug_hw = DebugHw {
        limits: debug_limits,
        regs: Vec::new(),
    };
    let mut shadow = Shadow::default();
    let machine = Machine::describe(&image(nvcpus as u32), version, true).expect("a valid machine");
    let mpidrs: Vec<u64> = (0..nvcpus as u64).collect();
    let mut devices = Devices {
        uart: Pl011::new(),
        gic: Vgic::new(version, &mpidrs, 64).expect("a valid vGIC"),
    };
    let mut vcpus: Vec<VcpuPower> = (0..nvcpus)
        .map(|i| {
            let state = if i == 0 {
                PowerState::On
            } else {
                PowerState::Off
            };
            VcpuPower::new(i as u64, state)
        })
        .collect();
    let firmware = FirmwareFeatures {
        workaround_1: WorkaroundState::from_firmware(u64::from(input.u8() % 4)),
        workaround_2: WorkaroundState::from_firmware(u64::from(input.u8() % 4)),
        workaround_3: WorkaroundState::from_firmware(u64::from(input.u8() % 4)),
    };
    let pstate_features = PstateFeatures::from_id_regs(input.u64(), input.u64());
    let stats = ExitStats::new();
    let mut trng = Trng::new(&[7; 16], 1, 1, 0);
    let mut regs = Regs::default();
    for x in regs.x.iter_mut().take(8) {
        *x = input.value();
    }
    regs.sp = input.u64();

    for _ in 0..MAX_EXITS {
        if input.is_empty() {
            break;
        }
        let vcpu = input.below(nvcpus);
        let e = esr_of(&mut input);
        check_decode(e);
        // A fault in guest RAM, at a device, or anywhere.
        let ipa = match input.u8() % 4 {
            0 => 0x0900_0000 + u64::from(input.u16() & 0xfff),
            1 => 0x0800_0000 + u64::from(input.u32() % 0x20_0000),
            2 => RAM_BASE + u64::from(input.u32()),
            _ => input.u64(),
        };
        let far = (input.u64() & !0xfff) | (ipa & 0xfff);
        let pc = input.u64();
        let info = ExitInfo {
            esr: e,
            far,
            hpfar: (ipa >> 12) << 4,
            pc,
            pstate: u64::from(input.u16()),
        };
        let mut env = Env {
            pc,
            insn: input.bool().then(|| input.u32()),
            vbar: input.u64(),
            sctlr: input.u64(),
        };
        for _ in 0..input.below(3) {
            let r = input.below(31);
            regs.x[r] = input.value();
        }
        regs.pc = pc;
        let call_regs = [regs.x[0], regs.x[1], regs.x[2], regs.x[3]];
        let _ = early::early(e, &call_regs, &firmware);

        // The direct MMIO route on copies, to compare with the policy.
        let mut direct_regs = regs.clone();
        let mut direct_devices = devices.clone();
        let mut fx = Effects::default();
        let direct = vmexit::mmio_access(
            e,
            info.far,
            info.hpfar,
            vcpu,
            &mut direct_regs,
            &machine.bus,
            &mut direct_devices,
            &mut fx,
        );

        let before = exits_counted(&stats);
        let mut vm = VmModel {
            vm_id: 1,
            boot_count: 1,
            channels: 1,
            ram: machine.ram,
            bus: &machine.bus,
            devices: &mut devices,
            effects: Effects::default(),
            vcpus: &mut vcpus,
            firmware,
            pstate_features,
            debug_limits,
            stats: &stats,
            counted: None,
            last_abort: None,
            trng: &mut trng,
        };
        let action = vmexit::handle_sync(&info, vcpu, &mut regs, &mut vm, &mut env);
        assert_eq!(exits_counted(&stats), before + 1, "one count per exit");
        if let Action::CpuOn { target, .. } = action {
            assert!(target < nvcpus, "CPU_ON of vCPU {target} of {nvcpus}");
        }
        if let Action::DebugPmu { reg, read, rt } = action {
            assert!(rt <= 31);
            assert!(debug_limits.allows(reg, read), "{reg:?} handed to the glue");
            let value = debugpmu::emulate(
                reg,
                read,
                regs.x(rt),
                &debug_limits,
                &mut shadow,
                &mut debug_hw,
            );
            if read {
                regs.set_x(rt, value);
            }
        }
        if direct.is_some() {
            assert_eq!(action, Action::Advance, "the direct route took {info:?}");
            assert_eq!(regs, direct_regs, "both routes leave the same registers");
        }
    }
});
