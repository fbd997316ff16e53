//! Config parsing and validation tests: a table of bad configs with the
//! message fragments (and locations) they must produce, plus good ones.

use super::*;
use crate::testutil::{ElfBuilder, TestDir, linux_image};

const RAM: u64 = 0x4000_0000;

/// A directory with a config file and the kernels/initrds it may name.
struct Fixture {
    dir: TestDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = TestDir::new("config");
        let elf = ElfBuilder::new(RAM + 0x8_0000)
            .segment(RAM + 0x8_0000, &[0x1f, 0x20, 0x03, 0xd5], 0x1000)
            .build();
        dir.write("hello.elf", &elf);
        // An Image whose header claims 128 MiB (image + bss).
        dir.write("big.Image", &linux_image(0, 128 * MIB, 0, 0x1000));
        dir.write("small.Image", &linux_image(0x20_0000, 0x10_0000, 0, 0x1000));
        dir.write("raw.bin", &[0u8; 64]);
        dir.write("empty.bin", &[]);
        dir.write("initrd.img", b"070701");
        let big = dir.write("big.initrd", &[]);
        fs::File::options()
            .write(true)
            .open(&big)
            .and_then(|f| f.set_len(3 * MIB))
            .expect("sparse initrd");
        fs::create_dir(dir.path().join("a-directory")).expect("mkdir");
        Self { dir }
    }

    fn parse(&self, text: &str) -> Result<Config> {
        let path = self.dir.write("x.toml", text.as_bytes());
        Config::load(&path)
    }
}

fn vm_names(n: usize, memory: &str) -> String {
    (0..n)
        .map(|i| format!("[[vm]]\nname = \"v{i}\"\nkernel = \"raw.bin\"\nmemory = \"{memory}\"\n"))
        .collect()
}

#[test]
fn bad_configs() {
    let fx = Fixture::new();
    let many = vm_names(17, "4M");
    let huge = vm_names(16, "20G");
    // (config text, fragments the error must contain)
    let cases: &[(&str, &[&str])] = &[
        // Unknown keys, at every level.
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemroy = \"4M\"\n",
            &["x.toml:3:1: unknown field `memroy`"],
        ),
        (
            "[machine]\ncpu = \"max\"\nsmp = 2\n[[vm]]\nkernel = \"hello.elf\"\n",
            &["x.toml:3:1: unknown field `smp`"],
        ),
        ("vms = []\n", &["x.toml:1:1: unknown field `vms`"]),
        // Types.
        (
            "[[vm]]\nkernel = \"hello.elf\"\ncpus = \"two\"\n",
            &["x.toml:3:8: invalid type: string \"two\""],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemory = 1.5\n",
            &["x.toml:3:10:", "a size"],
        ),
        ("[[vm]\n", &["x.toml:1:"]),
        // Sizes.
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemory = \"12Q\"\n",
            &[
                "x.toml:3:10: vm[0].memory: bad size \"12Q\": expected a number with an optional K/M/G suffix",
            ],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemory = \"1.5G\"\n",
            &["x.toml:3:10: vm[0].memory: bad size \"1.5G\": fractions are not accepted"],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemory = -4\n",
            &["x.toml:3:10: vm[0].memory: bad size -4: must not be negative"],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemory = \"3M\"\n",
            &[
                "x.toml:3:10: vm[0].memory: 0x300000 bytes: VM memory must be a non-zero multiple of 2 MiB",
            ],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemory = \"1M\"\n",
            &["vm[0].memory: 0x100000 bytes: VM memory must be a non-zero multiple of 2 MiB"],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemory = 0\n",
            &["vm[0].memory: 0x0 bytes"],
        ),
        // Kernel files.
        (
            "[[vm]]\nkernel = \"missing.elf\"\n",
            &["x.toml:2:10: vm[0].kernel: ", "missing.elf: file not found"],
        ),
        (
            "[[vm]]\nkernel = \"a-directory\"\n",
            &[
                "x.toml:2:10: vm[0].kernel: ",
                "a-directory: not a regular file",
            ],
        ),
        (
            "[[vm]]\nkernel = \"empty.bin\"\n",
            &["vm[0].kernel: ", "empty.bin: the kernel file is empty"],
        ),
        (
            "[[vm]]\nname = \"a\"\n",
            &["x.toml:1:1: vm[0].kernel: missing: every VM needs a kernel"],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\ninitrd = \"nope.cpio\"\n",
            &["x.toml:3:10: vm[0].initrd: ", "nope.cpio: file not found"],
        ),
        // Fitting in memory.
        (
            "[[vm]]\nkernel = \"big.Image\"\nmemory = \"64M\"\n",
            &[
                "x.toml:2:10: vm[0].kernel: ",
                "the kernel does not fit in the VM's RAM",
                "it needs 128 MiB at RAM + 0x0, and the VM's RAM is [0x40000000, 0x44000000) (64 MiB)",
            ],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemory_base = \"0x80000000\"\n",
            &[
                "vm[0].kernel: ",
                "its segments span [0x40080000, 0x40081000)",
            ],
        ),
        (
            "[[vm]]\nkernel = \"big.Image\"\nmemory = \"128M\"\n",
            &[
                "x.toml:3:10: vm[0].memory: 128 MiB is too small",
                "2 MiB for the device tree need 130 MiB",
            ],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\ninitrd = \"big.initrd\"\nmemory = \"6M\"\n",
            &[
                "x.toml:4:10: vm[0].memory: 6 MiB is too small",
                "the initrd (3 MiB)",
                "need 8 MiB",
            ],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\nmemory = \"2M\"\n",
            &["vm[0].memory: 2 MiB is too small"],
        ),
        // RAM placement.
        (
            "[[vm]]\nkernel = \"raw.bin\"\nmemory_base = \"0x08000000\"\nmemory = \"4M\"\n",
            &[
                "x.toml:3:15: vm[0].memory_base: RAM [0x8000000, 0x8400000) overlaps the guest's devices at [0x8000000, 0xa000000)",
            ],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\nmemory_base = 0\nmemory = \"256M\"\n",
            &["vm[0].memory_base: RAM [0x0, 0x10000000) overlaps"],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\nmemory_base = 0x09E00000\nmemory = \"4M\"\n",
            &["overlaps the guest's devices"],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\nmemory_base = \"0xFFFFFFFFFFE00000\"\nmemory = \"4M\"\n",
            &[
                "vm[0].memory_base: RAM at 0xffffffffffe00000 of 4 MiB wraps around the address space",
            ],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\nmemory_base = \"0x40001000\"\n",
            &["x.toml:3:15: vm[0].memory_base: 0x40001000 is not 2 MiB aligned"],
        ),
        // vCPUs.
        (
            "[[vm]]\nkernel = \"raw.bin\"\ncpus = 0\n",
            &["x.toml:3:8: vm[0].cpus: 0 vCPUs: a VM has 1 to 8"],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\ncpus = 9\n",
            &["vm[0].cpus: 9 vCPUs"],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\ncpus = -1\n",
            &["vm[0].cpus: -1 vCPUs"],
        ),
        // Names.
        (
            "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\n[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\n",
            &["x.toml:5:8: vm[1].name: duplicate VM name \"a\" (also vm[0])"],
        ),
        (
            "[[vm]]\nname = \"abcdefghijabcdefghijabcdefghijab\"\nkernel = \"raw.bin\"\n",
            &["vm[0].name: ", "is 32 bytes long: a VM name has 1 to 31"],
        ),
        (
            "[[vm]]\nname = \"\"\nkernel = \"raw.bin\"\n",
            &["vm[0].name: \"\" is 0 bytes long"],
        ),
        (
            "[[vm]]\nname = \"my vm\"\nkernel = \"raw.bin\"\n",
            &[
                "x.toml:2:8: vm[0].name: \"my vm\" contains ' ': use only A-Z, a-z, 0-9, '_' and '-'",
            ],
        ),
        (
            "[[vm]]\nname = \"é\"\nkernel = \"raw.bin\"\n",
            &["contains 'é'"],
        ),
        // VM count.
        ("", &["x.toml: no VMs: add at least one [[vm]] table"]),
        ("[machine]\ngic = 2\n", &["no VMs"]),
        (
            &many,
            &["x.toml:65:1: vm[16]: 17 VMs: at most 16 are supported"],
        ),
        // Machine.
        (
            "[machine]\ngic = 4\n[[vm]]\nkernel = \"raw.bin\"\n",
            &["x.toml:2:7: machine.gic: must be 2 or 3, not 4"],
        ),
        (
            "[machine]\ncpu = \"cortex-a9\"\n[[vm]]\nkernel = \"raw.bin\"\n",
            &[
                "x.toml:2:7: machine.cpu: unknown cpu \"cortex-a9\": expected \"cortex-a57\" or \"max\"",
            ],
        ),
        (
            "[machine]\ngic = 2\ncpus = 9\n[[vm]]\nkernel = \"raw.bin\"\n",
            &["x.toml:3:8: machine.cpus: 9 CPUs: QEMU virt with GICv2 takes 1 to 8"],
        ),
        (
            "[machine]\ncpus = 0\n[[vm]]\nkernel = \"raw.bin\"\n",
            &["machine.cpus: 0 CPUs"],
        ),
        (
            "[machine]\nmemory = \"256M\"\n[[vm]]\nkernel = \"raw.bin\"\nmemory = \"128M\"\n",
            &[
                "x.toml:2:10: machine.memory: 256 MiB is too small: the VMs need 512 MiB of host RAM",
            ],
        ),
        (
            "[machine]\nmemory = \"256G\"\n[[vm]]\nkernel = \"raw.bin\"\n",
            &["machine.memory: 256 GiB: QEMU virt holds at most 255 GiB"],
        ),
        (
            "[machine]\nmemory = \"1000K\"\n[[vm]]\nkernel = \"raw.bin\"\n",
            &["machine.memory: 0xfa000 bytes: host RAM must be a non-zero multiple of 1 MiB"],
        ),
        (
            &huge,
            &[
                "x.toml: the VMs need 328192 MiB of host RAM (320 GiB of VM memory",
                "more than the 255 GiB QEMU virt can hold below its 256 GiB high-memory hole",
            ],
        ),
    ];
    for (text, fragments) in cases {
        let e = match fx.parse(text) {
            Ok(c) => panic!("accepted bad config:\n{text}\n{c:?}"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), crate::ErrorKind::BadInput);
        let msg = e.to_string();
        for f in *fragments {
            assert!(
                msg.contains(f),
                "config:\n{text}\nmessage:\n{msg}\nmissing: {f}"
            );
        }
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let fx = Fixture::new();
    let e = fx
        .parse("[machine]\ngic = 5\n[[vm]]\nkernel = \"nope\"\nmemory = \"12Q\"\ncpus = 0\n")
        .expect_err("bad");
    let msg = e.to_string();
    assert_eq!(msg.lines().count(), 4, "{msg}");
    assert!(
        msg.lines()
            .next()
            .is_some_and(|l| l.contains("x.toml:2:7: machine.gic"))
    );
}

#[test]
fn example_config() {
    let fx = Fixture::new();
    let config = fx
        .parse(
            r#"
[machine]            # optional: the emulated host
cpus = 2             # physical CPUs (-smp)
gic = 2
cpu = "max"
memory = "2G"

[[vm]]
name = "hello"
kernel = "hello.elf"
initrd = "initrd.img"
cmdline = "console=ttyAMA0"
cpus = 1
memory = "128M"
memory_base = "0x40000000"

[[vm]]
name = "linux_2"
kernel = "small.Image"
memory = 0x1000_0000
memory_base = 0x1_0000_0000
cpus = 4
"#,
        )
        .expect("valid");
    assert_eq!(
        config.machine,
        Machine {
            cpus: 2,
            gic: Gic::V2,
            cpu: CpuModel::Max,
            memory: 2 * GIB,
            cpus_explicit: true,
        }
    );
    assert_eq!(config.vms.len(), 2);
    let hello = &config.vms[0];
    assert_eq!(hello.name, "hello");
    assert_eq!(hello.kernel, fx.dir.path().join("hello.elf"));
    assert_eq!(hello.initrd, Some(fx.dir.path().join("initrd.img")));
    assert_eq!(hello.initrd_size, 6);
    assert_eq!(hello.cmdline, "console=ttyAMA0");
    assert_eq!(
        (hello.cpus, hello.memory, hello.memory_base),
        (1, 128 * MIB, RAM)
    );
    assert_eq!(
        hello.kernel_summary.placement,
        Placement {
            load_offset: 0x8_0000,
            entry_offset: 0x8_0000,
            footprint: 0x1000
        }
    );
    assert_eq!(hello.kernel_summary.blob_size, 4);
    let linux = &config.vms[1];
    assert_eq!(
        (linux.cpus, linux.memory, linux.memory_base),
        (4, 256 * MIB, 1 << 32)
    );
    assert_eq!(linux.kernel_summary.placement.load_offset, 0x20_0000);
    assert_eq!(linux.cmdline, "");
    let summary = config.summary();
    assert!(
        summary.contains("machine: 2 CPUs (max, GICv2), 2 GiB host RAM"),
        "{summary}"
    );
    assert!(
        summary.contains("vm[0] \"hello\": 1 vCPU, 128 MiB RAM at 0x40000000"),
        "{summary}"
    );
    assert!(summary.contains("(ELF, 1 segments)"), "{summary}");
    assert!(summary.contains("(arm64 Image)"), "{summary}");
}

#[test]
fn defaults() {
    let fx = Fixture::new();
    let config = fx
        .parse("[[vm]]\nkernel = \"hello.elf\"\n[[vm]]\nkernel = \"raw.bin\"\ncpus = 3\n")
        .expect("valid");
    assert_eq!(config.machine.gic, Gic::V3);
    assert_eq!(config.machine.cpu, CpuModel::CortexA57);
    // Physical CPUs follow the biggest VM.
    assert_eq!(config.machine.cpus, 3);
    assert!(!config.machine.cpus_explicit);
    // 2 × 128 MiB + bundle + 256 MiB, rounded up to 256 MiB.
    assert_eq!(config.machine.memory, 768 * MIB);
    assert_eq!(config.vms[0].name, "vm0");
    assert_eq!(config.vms[1].name, "vm1");
    assert_eq!(config.vms[0].memory, DEFAULT_VM_MEMORY);
    assert_eq!(config.vms[0].memory_base, DEFAULT_MEMORY_BASE);
    assert_eq!(config.source, Some(fx.dir.path().join("x.toml")));
}

#[test]
fn ram_just_clear_of_the_devices_is_fine() {
    let fx = Fixture::new();
    for base in ["0x0A000000", "0"] {
        let text =
            format!("[[vm]]\nkernel = \"raw.bin\"\nmemory_base = \"{base}\"\nmemory = \"4M\"\n");
        assert!(fx.parse(&text).is_ok(), "{base}");
    }
    // RAM ending exactly at the device window.
    let text = "[[vm]]\nkernel = \"raw.bin\"\nmemory_base = \"0x07C00000\"\nmemory = \"4M\"\n";
    assert!(fx.parse(text).is_ok());
}

#[test]
fn required_host_memory_rounds_up() {
    assert_eq!(required_host_memory(128 * MIB, 4096), Some(512 * MIB));
    assert_eq!(required_host_memory(256 * MIB, 0), Some(512 * MIB));
    assert_eq!(required_host_memory(u64::MAX, 1), None);
}

#[test]
fn default_host_memory_leaves_room_for_1g_blocks() {
    // Small VMs: just the minimum.
    assert_eq!(default_host_memory(128 * MIB, 4096), Some(512 * MIB));
    // A 1 GiB VM: 1 GiB for the hypervisor and bundle below it, so the VM
    // (carved top-down) starts on a 1 GiB boundary.
    assert_eq!(default_host_memory(GIB, 4096), Some(2 * GIB));
    assert_eq!(default_host_memory(GIB + 2 * MIB, 0), Some(3 * GIB));
    // Never beyond what QEMU virt holds unless the minimum already is.
    assert_eq!(
        default_host_memory(254 * GIB + 512 * MIB, 0),
        Some(254 * GIB + 768 * MIB)
    );
    assert_eq!(default_host_memory(u64::MAX, 1), None);
}

#[test]
fn flags_mode() {
    let fx = Fixture::new();
    let kernel = fx.dir.path().join("hello.elf");
    let config = Config::from_flags(&VmFlags {
        kernel: kernel.clone(),
        initrd: None,
        append: Some("quiet".into()),
        cpus: Some(2),
        memory: Some("64M".into()),
    })
    .expect("valid");
    assert_eq!(config.source, None);
    assert_eq!(config.vms[0].name, "hello");
    assert_eq!(config.vms[0].kernel, kernel);
    assert_eq!(config.vms[0].cpus, 2);
    assert_eq!(config.machine.cpus, 2);
    assert_eq!(config.vms[0].memory, 64 * MIB);

    let bad = |flags: VmFlags, fragment: &str| {
        let e = Config::from_flags(&flags).expect_err("bad flags");
        assert!(e.to_string().contains(fragment), "{e}\nmissing: {fragment}");
    };
    let base = VmFlags {
        kernel: kernel.clone(),
        ..VmFlags::default()
    };
    bad(
        VmFlags {
            memory: Some("12Q".into()),
            ..base.clone()
        },
        "--memory: bad size \"12Q\": expected a number with an optional K/M/G suffix",
    );
    bad(
        VmFlags {
            cpus: Some(0),
            ..base.clone()
        },
        "--cpus: 0 vCPUs: a VM has 1 to 8",
    );
    bad(
        VmFlags {
            kernel: fx.dir.path().join("big.Image"),
            memory: Some("64M".into()),
            ..base.clone()
        },
        "--kernel: ",
    );
    bad(
        VmFlags {
            initrd: Some(fx.dir.path().join("nope")),
            ..base.clone()
        },
        "--initrd: ",
    );
    bad(
        VmFlags {
            append: Some("a\0b".into()),
            ..base.clone()
        },
        "--append: must not contain a NUL character",
    );
    bad(
        VmFlags {
            kernel: fx.dir.path().join("big.Image"),
            memory: Some("128M".into()),
            ..base
        },
        "--memory: 128 MiB is too small",
    );
}

#[test]
fn flag_mode_names_are_sanitized() {
    assert_eq!(sanitize_name("hello.world v2"), "hello-world-v2");
    assert_eq!(sanitize_name(&"x".repeat(40)).len(), MAX_NAME_LEN);
}

#[test]
fn machine_overrides() {
    let fx = Fixture::new();
    let mut config = fx
        .parse("[machine]\ncpus = 16\n[[vm]]\nkernel = \"raw.bin\"\n")
        .expect("valid");
    config
        .override_machine(None, Some(CpuModel::Max))
        .expect("cpu override");
    assert_eq!(config.machine.cpu, CpuModel::Max);
    let e = config
        .override_machine(Some(Gic::V2), None)
        .expect_err("too many CPUs for GICv2");
    assert!(
        e.to_string()
            .contains("--gic: GICv2 supports at most 8 CPUs"),
        "{e}"
    );
    config.machine.cpus = 8;
    config.override_machine(Some(Gic::V2), None).expect("fits");
    assert_eq!(config.machine.gic, Gic::V2);
}

#[test]
fn line_and_column() {
    let text = "ab\ncdé\nf";
    assert_eq!(line_col(text, 0), (1, 1));
    assert_eq!(line_col(text, 3), (2, 1));
    assert_eq!(line_col(text, 8), (3, 1));
    assert_eq!(line_col(text, 7), (2, 4));
    // Inside a multi-byte character: its start.
    assert_eq!(line_col(text, 6), (2, 3));
    assert_eq!(line_col(text, 100), (3, 2));
}

#[test]
fn example_configs_in_the_repository_parse() {
    // The example files name test guests that may not be built yet; only
    // their syntax and keys are checked here.
    let dir = crate::workspace_root().join("configs");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).expect("configs/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = fs::read_to_string(&path).expect("readable");
            toml::from_str::<RawConfig>(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 1, "expected example configs in {}", dir.display());
}

#[test]
fn this_version_runs_up_to_eight_vms_with_up_to_eight_vcpus() {
    let fx = Fixture::new();
    let one = fx
        .parse("[[vm]]\nkernel = \"hello.elf\"\nmemory = \"64M\"\n")
        .expect("valid");
    one.check_supported().expect("one VM with one vCPU runs");
    let smp = fx
        .parse("[[vm]]\nkernel = \"hello.elf\"\ncpus = 8\n")
        .expect("valid");
    smp.check_supported()
        .expect("SMP VMs run, one vCPU per physical CPU");
    let eight = fx.parse(&vm_names(8, "32M")).expect("valid");
    eight.check_supported().expect("eight VMs run");

    let nine = fx
        .parse(&vm_names(9, "32M"))
        .expect("the format allows more VMs");
    let e = nine.check_supported().expect_err("at most eight");
    assert_eq!(e.exit_code(), crate::exit_code::BAD_INPUT);
    let msg = e.to_string();
    assert!(
        msg.contains("x.toml: vm: 9 VMs: this version of Stratum runs at most 8 VMs at a time"),
        "{msg}"
    );
}
