//! The fuzz targets' seed inputs (`cargo xtask fuzz --seeds`), made from
//! the project's real inputs: the ESRs and instruction words the exit and
//! decoder tests use, the configs in `configs/`, the host device trees in
//! `crates/core/testdata/` and guest trees generated as the hypervisor
//! generates them, and boot bundles the host tool encodes from the
//! configs. Each is written in the byte layout its target reads
//! (`fuzz/fuzz_targets/*.rs`, through `stratum_fuzz::Input`), as
//! `fuzz/corpus/TARGET/seed-NAME`.

use std::path::{Path, PathBuf};

use stratum_abi::bundle::{KernelKind, OnCrash, VmImage};
use stratum_core::bootplan::DevicePlan;
use stratum_core::guest_dt;
use stratum_core::machine::{self, Machine};
use stratum_core::platform::GicVersion;

use crate::root;

/// Writes every target's seeds under `corpus`.
pub fn write_all(corpus: &Path) -> Result<(), String> {
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for (name, bytes) in esr_seeds() {
        seeds.push(("esr_vmexit", name, bytes));
    }
    for (name, bytes) in insn_seeds()? {
        seeds.push(("insn", name, bytes));
    }
    for (name, bytes) in vgic_seeds() {
        seeds.push(("vgic", name, bytes));
    }
    for (name, bytes) in virtqueue_seeds() {
        seeds.push(("virtqueue", name, bytes));
    }
    for (name, bytes) in config_seeds()? {
        seeds.push(("config", name, bytes));
    }
    for (name, bytes) in fdt_seeds()? {
        seeds.push(("fdt", name, bytes));
    }
    for (name, bytes) in bundle_seeds()? {
        seeds.push(("bundle", name, bytes));
    }
    for (target, name, bytes) in &seeds {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!(
        "xtask: wrote {} seed inputs under {}",
        seeds.len(),
        corpus.display()
    );
    Ok(())
}

// ------------------------------------------------------------ esr_vmexit

/// ESR_EL2 of a 32-bit instruction's exit of class `ec` with `iss`.
const fn esr(ec: u64, iss: u64) -> u64 {
    (ec << 26) | (1 << 25) | iss
}

const ISV: u64 = 1 << 24;
const WNR: u64 = 1 << 6;
/// Stage-2 translation fault, level 3.
const FSC_L3: u64 = 0x07;

/// A data abort with a valid syndrome: `sas` = log2 of the size.
const fn dabt(sas: u64, srt: u64, write: bool) -> u64 {
    let wnr = if write { WNR } else { 0 };
    esr(0x24, ISV | (sas << 22) | (srt << 16) | wnr | FSC_L3)
}

/// A trapped MSR/MRS (`read`: MRS) of `(op0, op1, crn, crm, op2)` with `rt`.
const fn sysreg(op: (u64, u64, u64, u64, u64), rt: u64, read: bool) -> u64 {
    let (op0, op1, crn, crm, op2) = op;
    esr(
        0x18,
        (op0 << 20)
            | (op2 << 17)
            | (op1 << 14)
            | (crn << 10)
            | (rt << 5)
            | (crm << 1)
            | read as u64,
    )
}

/// One exit as the `esr_vmexit` target reads it.
struct ExitSeed {
    esr: u64,
    ipa: u64,
    far: u64,
    insn: Option<u32>,
    /// Registers to set before the exit (at most two).
    regs: &'static [(u8, u64)],
}

const fn exit(esr: u64, regs: &'static [(u8, u64)]) -> ExitSeed {
    ExitSeed {
        esr,
        ipa: 0,
        far: 0,
        insn: None,
        regs,
    }
}

const fn mmio(esr: u64, ipa: u64, regs: &'static [(u8, u64)]) -> ExitSeed {
    ExitSeed {
        esr,
        ipa,
        far: 0xffff_0000_0000_0000 | ipa,
        insn: None,
        regs,
    }
}

/// A VM (GICv2 when `v2`, two vCPUs) and its exits, in the target's layout.
fn exit_program(v2: bool, exits: &[ExitSeed]) -> Vec<u8> {
    let mut b = vec![u8::from(v2) | (1 << 1)];
    // Firmware: workaround 1 required, 2 not required, 3 not supported.
    b.extend([0, 1, 2]);
    // PSTATE features from zero ID registers; x0..x7 and SP zero.
    b.extend([0; 16]);
    b.extend([0; 8]);
    b.extend([0; 8]);
    for e in exits {
        b.push(0); // vCPU 0
        b.push(0); // a raw ESR
        b.extend([0; 4]);
        b.extend(e.esr.to_le_bytes());
        b.push(3); // any IPA
        b.extend(e.ipa.to_le_bytes());
        b.extend(e.far.to_le_bytes());
        b.extend(0xffff_8000_1020_0040u64.to_le_bytes()); // PC
        b.extend(0x3c5u16.to_le_bytes()); // EL1h, DAIF masked
        match e.insn {
            Some(w) => {
                b.push(1);
                b.extend(w.to_le_bytes());
            }
            None => b.push(0),
        }
        b.extend(0xffff_8000_1001_0800u64.to_le_bytes()); // VBAR_EL1
        b.extend(0x34d5_d91du64.to_le_bytes()); // SCTLR_EL1
        b.push(e.regs.len() as u8);
        for &(r, v) in e.regs {
            b.push(r);
            b.push(3);
            b.extend(v.to_le_bytes());
        }
    }
    b
}

fn esr_seeds() -> Vec<(String, Vec<u8>)> {
    const PSCI_VERSION: u64 = 0x8400_0000;
    const PSCI_FEATURES: u64 = 0x8400_000a;
    const CPU_ON: u64 = 0xc400_0003;
    const CPU_OFF: u64 = 0x8400_0002;
    const SYSTEM_OFF: u64 = 0x8400_0008;
    const SYSTEM_RESET: u64 = 0x8400_0009;
    const SMCCC_VERSION: u64 = 0x8000_0000;
    const ARCH_FEATURES: u64 = 0x8000_0001;
    const ARCH_WORKAROUND_1: u64 = 0x8000_8000;
    const TRNG_VERSION: u64 = 0x8400_0050;
    const TRNG_RND64: u64 = 0xc400_0053;
    const UART: u64 = 0x0900_0000;
    const GICD: u64 = 0x0800_0000;
    const GICR: u64 = 0x080a_0000;
    let hvc = esr(0x16, 0);
    let smc = esr(0x17, 0);
    let calls = [
        exit(hvc, &[(0, PSCI_VERSION)]),
        exit(hvc, &[(0, SMCCC_VERSION)]),
        exit(hvc, &[(0, ARCH_FEATURES), (1, ARCH_WORKAROUND_1)]),
        exit(hvc, &[(0, PSCI_FEATURES), (1, CPU_ON)]),
        exit(hvc, &[(0, TRNG_VERSION)]),
        exit(hvc, &[(0, TRNG_RND64), (1, 192)]),
        exit(smc, &[(0, PSCI_VERSION)]),
        exit(esr(0x16, 1), &[]),
    ];
    let power = [
        exit(hvc, &[(0, CPU_ON), (1, 1)]),
        exit(hvc, &[(2, 0x4008_0000), (3, 0x1234)]),
        exit(hvc, &[(0, CPU_ON)]),
        exit(hvc, &[(0, CPU_OFF)]),
        exit(hvc, &[(0, SYSTEM_RESET)]),
        exit(hvc, &[(0, SYSTEM_OFF)]),
    ];
    let uart = [
        mmio(dabt(2, 1, true), UART, &[(1, 0x68)]),
        mmio(dabt(2, 1, false), UART + 0x18, &[]),
        mmio(dabt(2, 2, true), UART + 0x24, &[(2, 13)]),
        mmio(dabt(1, 3, false), UART + 0xfe0, &[]),
        mmio(dabt(3, 1, true), UART + 0x30, &[]),
    ];
    let gic = [
        mmio(dabt(2, 1, true), GICD, &[(1, 3)]),
        mmio(dabt(2, 1, true), GICD + 0x100 + 4, &[(1, 0xffff_ffff)]),
        mmio(dabt(0, 1, true), GICD + 0x400 + 40, &[(1, 0xa0)]),
        mmio(dabt(3, 1, true), GICD + 0x6100 + 8 * 40, &[(1, 1)]),
        mmio(dabt(2, 4, false), GICD + 0x4, &[]),
        mmio(dabt(2, 1, true), GICR + 0x1_0100, &[(1, 0xffff_ffff)]),
        mmio(dabt(2, 1, false), GICR + 0x8, &[]),
        mmio(dabt(2, 1, true), GICR + 0x14, &[(1, 0)]),
        mmio(dabt(2, 1, true), GICD + 0xf00, &[(1, 0x0001_0001)]),
        // ISV = 0: `stp w1, w2, [x0, #0x24]` at the distributor.
        ExitSeed {
            esr: esr(0x24, WNR | FSC_L3),
            ipa: GICD + 0x124,
            far: 0xffff_0000_0800_0124,
            insn: Some(0x2904_8801),
            regs: &[(0, 0xffff_0000_0800_0100), (1, 0xffff)],
        },
        // ISV = 0: `ldp w3, w4, [x0], #8` at the UART.
        ExitSeed {
            esr: esr(0x24, FSC_L3),
            ipa: UART + 0x18,
            far: 0xffff_7fff_fc00_1018,
            insn: Some(0x28c1_1003),
            regs: &[(0, 0xffff_7fff_fc00_1018)],
        },
    ];
    let traps = [
        exit(sysreg((3, 0, 0, 4, 0), 1, true), &[]),
        exit(sysreg((3, 0, 0, 7, 1), 2, true), &[]),
        exit(sysreg((3, 0, 0, 5, 0), 31, true), &[]),
        exit(
            sysreg((3, 0, 12, 11, 5), 1, false),
            &[(1, (1 << 24) | 0b10)],
        ),
        exit(sysreg((2, 0, 0, 0, 4), 1, true), &[]),
        exit(esr(0x01, 0), &[]),
        exit(esr(0x01, 1), &[]),
        exit(esr(0x01, 0b110 | (3 << 5)), &[]),
        exit(esr(0x07, 0), &[]),
        exit(esr(0x00, 0), &[]),
        mmio(esr(0x20, FSC_L3), 0x1000_0000, &[]),
        mmio(esr(0x24, ISV | (2 << 22) | WNR | 0x10), 0x7000_0000, &[]),
        mmio(esr(0x24, (1 << 8) | FSC_L3), UART, &[]),
    ];
    // Debug and PMU registers (MDCR_EL2 traps them): MDSCR_EL1, a
    // breakpoint, PMCR_EL0, then PMSELR_EL0 = 5 and 31 (the cycle
    // counter) with PMXEVCNTR_EL0/PMXEVTYPER_EL0 through it.
    let debug = [
        exit(sysreg((2, 0, 0, 2, 2), 1, true), &[]),
        exit(sysreg((2, 0, 0, 2, 2), 1, false), &[(1, 1 << 15)]),
        exit(sysreg((2, 0, 0, 1, 5), 2, false), &[(2, 0x1e7)]),
        exit(sysreg((3, 3, 9, 12, 0), 1, true), &[]),
        exit(sysreg((3, 3, 9, 12, 0), 1, false), &[(1, 1)]),
        exit(sysreg((3, 3, 9, 12, 5), 1, false), &[(1, 5)]),
        exit(sysreg((3, 3, 9, 13, 2), 2, true), &[]),
        exit(sysreg((3, 3, 9, 12, 5), 1, false), &[(1, 31)]),
        exit(sysreg((3, 3, 9, 13, 1), 2, false), &[(2, 0x11)]),
        exit(sysreg((3, 3, 9, 13, 0), 3, true), &[]),
    ];
    let mut seeds = Vec::new();
    for (name, exits) in [
        ("debug-pmu", &debug[..]),
        ("calls", &calls[..]),
        ("power", &power[..]),
        ("uart", &uart[..]),
        ("gic", &gic[..]),
        ("traps", &traps[..]),
    ] {
        seeds.push((format!("{name}-gicv3"), exit_program(false, exits)));
        seeds.push((format!("{name}-gicv2"), exit_program(true, exits)));
    }
    seeds
}

// ------------------------------------------------------------------ insn

/// Every 32-bit hexadecimal literal (`0x1234_5678`) in `text`.
fn words_in(text: &str) -> Vec<u32> {
    let mut words = Vec::new();
    for (i, _) in text.match_indices("0x") {
        let digits: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '_')
            .filter(|c| *c != '_')
            .collect();
        if digits.len() == 8
            && let Ok(w) = u32::from_str_radix(&digits, 16)
        {
            words.push(w);
        }
    }
    words
}

fn insn_seeds() -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut words = Vec::new();
    for file in [
        "crates/core/src/insn/tests.rs",
        "crates/core/src/mmio/tests.rs",
        "crates/core/src/vmexit/tests.rs",
    ] {
        let text =
            std::fs::read_to_string(root().join(file)).map_err(|e| format!("{file}: {e}"))?;
        words.extend(
            words_in(&text)
                .into_iter()
                .filter(|&w| stratum_core::insn::decode(w).is_ok()),
        );
    }
    words.sort_unstable();
    words.dedup();
    Ok(words
        .into_iter()
        .map(|w| (format!("{w:08x}"), w.to_le_bytes().to_vec()))
        .collect())
}

// ------------------------------------------------------------------ vgic

fn vgic_seeds() -> Vec<(String, Vec<u8>)> {
    // In the target's encoding: op byte (op % 16), vCPU byte, operands.
    let word = 2u8;
    let program: Vec<u8> = [
        // Enable both groups: CTLR (bases[0] + 0) = 3, 32 bits.
        &[0u8, 0, 0, 0, 0, word, 3, 3, 0, 0, 0, 0, 0, 0, 0][..],
        // ISENABLER1 (bases[2] + 4) = all.
        &[0, 0, 0, 2, 4, word, 1],
        // IPRIORITYR of SPI 40 (bases[8] + 40), one byte = 0xa0.
        &[0, 0, 0, 8, 40, 0, 3, 0xa0, 0, 0, 0, 0, 0, 0, 0],
        // Read TYPER and IIDR.
        &[4, 0, 0, 0, 4, word],
        &[4, 0, 0, 0, 8, word],
        // Enable everything, as the tests' `enable_all`.
        &[12, 0],
        // An edge on SPI 40, a level on PPI 27 of vCPU 1, an SGI.
        &[10, 0, 1, 8],
        &[9, 1, 0, 11, 1],
        &[8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0],
        // vCPU 0 runs: acknowledge, complete, exit.
        &[13, 0],
        &[14, 0, 0, 0],
        &[14, 0, 0, 1],
        &[15, 0, 0],
        // vCPU 1 runs and leaves its CPU.
        &[13, 1],
        &[14, 1, 0, 2],
        &[15, 1, 1],
        // The line drops; a hardware-linked interrupt.
        &[9, 1, 0, 11, 0],
        &[11, 2, 1, 10, 42, 0],
        &[13, 2],
        &[14, 2, 0, 2],
        &[15, 2, 0],
    ]
    .concat();
    let mut seeds = Vec::new();
    for (head, name) in [
        (0u8, "v3"),
        (1, "v2"),
        (2, "v3-incremental"),
        (3, "v2-incremental"),
    ] {
        let mut b = vec![head];
        b.extend(&program);
        seeds.push((name.to_owned(), b));
    }
    seeds
}

// ------------------------------------------------------------- virtqueue

/// Writes descriptor `i` of queue 0's table (`indirect`: of the table at
/// RAM + 0x4000 + `table`), in the target's encoding.
fn desc(i: u16, addr_off: u16, len: u32, flags: u8, next: u16, table: Option<u16>) -> Vec<u8> {
    let mut b = vec![1];
    match table {
        None => b.push(1),
        Some(t) => {
            b.push(0);
            b.extend(t.to_le_bytes());
        }
    }
    b.extend(i.to_le_bytes());
    b.push(1); // an address in RAM
    b.extend(addr_off.to_le_bytes());
    b.extend(len.to_le_bytes());
    b.push(flags);
    b.extend(next.to_le_bytes());
    b
}

fn virtqueue_seeds() -> Vec<(String, Vec<u8>)> {
    const NEXT: u8 = 1;
    const WRITE: u8 = 2;
    const INDIRECT: u8 = 4;
    let publish = |head: u16| -> Vec<u8> {
        let mut b = vec![2];
        b.extend(head.to_le_bytes());
        b
    };
    let notify = vec![3u8];
    // Queue sizes 8 and 8.
    let sizes = [3u8, 3];
    let plain = [
        desc(0, 0x8000, 16, NEXT, 1, None),
        desc(1, 0x9000, 64, WRITE, 0, None),
        publish(0),
        notify.clone(),
        vec![8],
        desc(2, 0xa000, 1, 0, 0, None),
        publish(2),
        notify.clone(),
    ]
    .concat();
    let indirect = [
        desc(0, 0x4000, 32, INDIRECT, 0, None),
        desc(0, 0x8000, 12, NEXT, 1, Some(0)),
        desc(1, 0x9000, 100, WRITE, 0, Some(0)),
        publish(0),
        notify.clone(),
    ]
    .concat();
    let event_idx = [
        // used_event = 1: interrupt after the second used buffer.
        vec![7, 0, 0, 1, 0],
        desc(0, 0x8000, 16, 0, 0, None),
        publish(0),
        notify.clone(),
        desc(1, 0x8100, 16, WRITE, 0, None),
        publish(1),
        notify.clone(),
        vec![8],
    ]
    .concat();
    let mut seeds = Vec::new();
    for (name, features, program) in [
        ("plain", 0u8, &plain),
        ("indirect", 1, &indirect),
        ("event-idx", 2, &event_idx),
        ("indirect-event-idx", 3, &indirect),
    ] {
        let mut b = vec![features];
        b.extend(sizes);
        b.extend(program);
        seeds.push((name.to_owned(), b));
    }
    seeds
}

// ---------------------------------------------------------------- config

/// The test guests the configs name, relative to a config in `configs/`.
const GUESTS: &str = "../target/aarch64-unknown-none/release";

fn config_seeds() -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = root().join("configs");
    let mut seeds = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let text = match name {
            n if n.ends_with(".toml") => std::fs::read_to_string(&path),
            "demo.toml.in" => std::fs::read_to_string(&path).map(|t| {
                t.replace("@KERNEL@", &format!("{GUESTS}/hello"))
                    .replace("@INITRD@", "initrd.cpio")
                    .replace("@GUESTS@", GUESTS)
            }),
            _ => continue,
        }
        .map_err(|e| format!("{}: {e}", path.display()))?;
        seeds.push((name.trim_end_matches(".in").to_owned(), text.into_bytes()));
    }
    Ok(seeds)
}

// ------------------------------------------------------------------- fdt

/// A VM image for a generated guest tree.
fn image(vcpus: u32, cmdline: &'static str, fragment: Option<&'static [u8]>) -> VmImage<'static> {
    VmImage {
        name: "seed",
        vcpus,
        kernel_kind: KernelKind::Raw,
        mem_base: 0x4000_0000,
        mem_size: 128 << 20,
        kernel: &[0; 16],
        kernel_load_offset: 0x8_0000,
        entry_offset: 0x8_0000,
        kernel_footprint: 0x1000,
        initrd: None,
        dt_fragment: fragment,
        cmdline,
        pinned: false,
        pcpus: [0; 8],
        on_crash: OnCrash::Stop,
        identity: false,
        firmware: false,
        service: false,
    }
}

/// The device tree the hypervisor generates for `image` on a `version` host.
fn guest_tree(
    image: &VmImage<'_>,
    version: GicVersion,
    devices: &[DevicePlan<'_>],
) -> Result<Vec<u8>, String> {
    let m = Machine::describe(image, version, true).map_err(|e| format!("{e:?}"))?;
    let mut slots = [machine::NO_DEVICE; machine::DEVICES];
    let seed = machine::rng_seed(1, 0, 1);
    let config = m.dt_config(image, &[], &mut slots, devices, &seed, 1);
    let mut buf = vec![0u8; machine::DTB_MAX];
    let len = guest_dt::generate(&config, &mut buf).map_err(|e| format!("{e:?}"))?;
    buf.truncate(len);
    Ok(buf)
}

fn fdt_seeds() -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut seeds = Vec::new();
    for (name, file) in [
        (
            "qemu-virt-gicv3",
            "crates/core/testdata/qemu-virt-gicv3.dtb",
        ),
        (
            "qemu-virt-gicv2",
            "crates/core/testdata/qemu-virt-gicv2.dtb",
        ),
        (
            "qemu-virt-max-initrd",
            "crates/core/testdata/qemu-virt-max-initrd.dtb",
        ),
        ("passthrough-fragment", "configs/passthrough-fragment.dtb"),
    ] {
        let bytes = std::fs::read(root().join(file)).map_err(|e| format!("{file}: {e}"))?;
        seeds.push((name.to_owned(), bytes));
    }
    let fragment: &'static [u8] = include_bytes!("../../configs/passthrough-fragment.dtb");
    seeds.push((
        "guest-gicv3".to_owned(),
        guest_tree(
            &image(2, "console=ttyAMA0 earlycon", Some(fragment)),
            GicVersion::V3,
            &[],
        )?,
    ));
    seeds.push((
        "guest-gicv2".to_owned(),
        guest_tree(&image(1, "", None), GicVersion::V2, &[])?,
    ));
    Ok(seeds)
}

// ---------------------------------------------------------------- bundle

fn bundle_seeds() -> Result<Vec<(String, Vec<u8>)>, String> {
    // The configs' guests as small raw kernels, in a scratch copy of the
    // layout the configs expect.
    let scratch = root().join("target").join("fuzz").join("seed-configs");
    let guests = scratch.join("target/aarch64-unknown-none/release");
    let configs = scratch.join("configs");
    for d in [&guests, &configs] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut kernel = vec![0u8; 4096];
    kernel[..4].copy_from_slice(&0x1400_0000u32.to_le_bytes());
    for g in [
        "hello", "ticker", "pingpong", "rtcpass", "canary", "probe", "restart", "crash", "spinner",
    ] {
        std::fs::write(guests.join(g), &kernel).map_err(|e| format!("{g}: {e}"))?;
    }
    std::fs::copy(
        root().join("configs/passthrough-fragment.dtb"),
        configs.join("passthrough-fragment.dtb"),
    )
    .map_err(|e| format!("passthrough-fragment.dtb: {e}"))?;
    let mut seeds = Vec::new();
    for name in ["hello", "trio", "three-vms", "passthrough", "pingpong"] {
        let file = root().join("configs").join(format!("{name}.toml"));
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let path = configs.join(format!("{name}.toml"));
        let mut no_debian = || -> stratum::Result<stratum::linux::LinuxGuest> {
            Err(stratum::Error::environment("no Debian here"))
        };
        let config = stratum::Config::parse_with(&text, &path, &mut no_debian)
            .map_err(|e| format!("{name}.toml: {e}"))?;
        let bytes = stratum::kernel::build_bundle(&config, 0, [0; 16])
            .map_err(|e| format!("{name}.toml: {e}"))?;
        seeds.push((name.to_owned(), bytes));
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::words_in;

    #[test]
    fn finds_32_bit_literals_only() {
        let text = "const A: u32 = 0x2904_8801; // 0x12 0x1_0000_0000 0xdeadbeef";
        assert_eq!(words_in(text), [0x2904_8801, 0xdead_beef]);
    }
}
