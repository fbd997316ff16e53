//! Config parsing and validation tests: a table of bad configs with the
//! message fragments (and locations) they must produce, plus good ones.

use super::*;
use crate::linux::LinuxGuest;

mod disks;
mod uplink;
use crate::testutil::{ElfBuilder, TestDir, linux_image};

const RAM: u64 = 0x4000_0000;

/// A DT fragment (as `dtc` would compile it) with one top-level node.
fn fragment(node: &str, phandle: Option<u32>) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut w = stratum_core::fdt::FdtWriter::new(&mut buf).expect("writer");
    w.begin_node("").expect("root");
    w.property_u32("#address-cells", 2).expect("prop");
    w.property_u32("#size-cells", 2).expect("prop");
    w.begin_node(node).expect("node");
    w.property_string("compatible", "test,thing").expect("prop");
    if let Some(h) = phandle {
        w.property_u32("phandle", h).expect("prop");
    }
    w.end_node().expect("end");
    w.end_node().expect("end");
    let len = w.finish().expect("finish");
    buf.truncate(len);
    buf
}

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
        dir.write("extra.dtb", &fragment("board-clock", None));
        dir.write("clash.dtb", &fragment("chosen", None));
        dir.write("devclash.dtb", &fragment("rtc@9010000", None));
        dir.write("phandle.dtb", &fragment("clk", Some(2)));
        dir.write("big.dtb", &vec![0u8; 16 * 1024 + 1]);
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

/// `n` one-vCPU VMs time-sharing the last physical CPU.
fn shared_vms(n: usize, memory: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[vm]]\nname = \"v{i}\"\nkernel = \"raw.bin\"\nmemory = \"{memory}\"\nplacement = \"shared\"\n"
            )
        })
        .collect()
}

/// VM "a" (lines 1-4 of a config that starts with it).
macro_rules! vm_a {
    () => {
        "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n"
    };
}

/// VM "b" (4 lines).
macro_rules! vm_b {
    () => {
        "[[vm]]\nname = \"b\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n"
    };
}

/// A channel "ch" between "a" and "b" (4 lines).
macro_rules! ch_ab {
    () => {
        "[[channel]]\nname = \"ch\"\nvms = [\"a\", \"b\"]\nsize = \"4K\"\n"
    };
}

#[test]
fn bad_configs() {
    let fx = Fixture::new();
    let many = vm_names(17, "4M");
    let huge = shared_vms(16, "20G");
    let nine_pinned_gicv2 = format!("[machine]\ngic = 2\n{}", vm_names(9, "4M"));
    let five_devices = format!(
        "{}{}",
        vm_a!(),
        (0..5)
            .map(|i| format!(
                "[[vm.device]]\nname = \"d{i}\"\ncompatible = \"x,y\"\nreg = [{:#x}, 0x1000]\n",
                0x0A00_0000 + i * 0x1000
            ))
            .collect::<String>()
    );
    let seventeen_channels = format!(
        "{}{}{}",
        vm_a!(),
        vm_b!(),
        (0..17)
            .map(|i| format!("[[channel]]\nname = \"c{i}\"\nvms = [\"a\", \"b\"]\n"))
            .collect::<String>()
    );
    let full_window = format!(
        "{}{}{}",
        vm_a!(),
        vm_b!(),
        (0..9)
            .map(|i| format!("[[channel]]\nname = \"c{i}\"\nvms = [\"a\", \"b\"]\nsize = \"2M\"\n"))
            .collect::<String>()
    );
    // (config text, fragments the error must contain)
    let cases: &[(&str, &[&str])] = &[
        // Unknown keys, at every level.
        (
            "[[vm]]\nkernel = \"hello.elf\"\nmemroy = \"4M\"\n",
            &["x.toml:3:1: vm[0]: unknown field `memroy`: did you mean `memory`?"],
        ),
        (
            "[machine]\ncpu = \"max\"\nsmp = 2\n[[vm]]\nkernel = \"hello.elf\"\n",
            &[
                "x.toml:3:1: machine: unknown field `smp`: expected one of `board`, `cpus`, `gic`, `cpu`, `memory`",
            ],
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
        // Extra device-tree fragments.
        (
            "[[vm]]\nkernel = \"hello.elf\"\ndt_fragment = \"nope.dtb\"\n",
            &[
                "x.toml:3:15: vm[0].dt_fragment: ",
                "nope.dtb: file not found",
            ],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\ndt_fragment = \"raw.bin\"\n",
            &[
                "x.toml:3:15: vm[0].dt_fragment: ",
                "not a flattened device tree",
            ],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\ndt_fragment = \"big.dtb\"\n",
            &[
                "x.toml:3:15: vm[0].dt_fragment: ",
                "a DT fragment may have at most 16384",
            ],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\ndt_fragment = \"clash.dtb\"\n",
            &[
                "x.toml:3:15: vm[0].dt_fragment: ",
                "the name of a node Stratum generates",
            ],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\ndt_fragment = \"phandle.dtb\"\n",
            &["x.toml:3:15: vm[0].dt_fragment: ", "phandle below 256"],
        ),
        (
            "[[vm]]\nkernel = \"hello.elf\"\ndt_fragment = \"devclash.dtb\"\n\
             [[vm.device]]\nname = \"rtc\"\ncompatible = \"arm,pl031\"\n\
             reg = [0x09010000, 0x1000]\ninterrupts = [2]\n",
            &[
                "x.toml:3:15: vm[0].dt_fragment: ",
                "the name of a node Stratum generates",
            ],
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
        // Identity-mapped RAM.
        (
            "[[vm]]\nkernel = \"raw.bin\"\nidentity = true\nmemory_base = \"0x44000000\"\nmemory = \"64M\"\n",
            &[
                "x.toml:4:15: vm[0].memory_base: identity-mapped RAM [0x44000000, 0x48000000) overlaps the host RAM that the hypervisor, the host device tree and the boot bundle take, [0x40000000, 0x50000000): set memory_base to 0x50000000 or above",
            ],
        ),
        (
            "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nidentity = true\nmemory_base = \"0x60000000\"\nmemory = \"64M\"\n\
             [[vm]]\nname = \"b\"\nkernel = \"raw.bin\"\nidentity = true\nmemory_base = \"0x62000000\"\nmemory = \"64M\"\n",
            &[
                "x.toml:11:15: vm[1].memory_base: identity-mapped RAM [0x62000000, 0x66000000) overlaps vm[0] \"a\"'s: two VMs cannot own the same host RAM",
            ],
        ),
        (
            "[machine]\nmemory = \"512M\"\n\
             [[vm]]\nkernel = \"raw.bin\"\nidentity = true\nmemory_base = \"0x70000000\"\nmemory = \"64M\"\n",
            &[
                "x.toml:2:10: machine.memory: 512 MiB is too small: the VMs need 1 GiB of host RAM",
                "identity-mapped RAM up to 0x74000000",
            ],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\n\
             [[vm.device]]\nname = \"disk\"\ncompatible = \"virtio,mmio\"\n\
             reg = [0x0a003000, 0x1000]\ninterrupts = [40]\n",
            &[
                "x.toml:6:7: vm[0].device[0]: a \"virtio,mmio\" device DMAs to its driver's buffers, so VM \"vm0\" must be identity-mapped (identity = true)",
            ],
        ),
        (
            "[[vm]]\nkernel = \"big.Image\"\nmemory = \"256M\"\nfirmware = true\n",
            &[
                "x.toml:4:12: vm[0].firmware: the kernel loads at RAM + 0x0, inside the 64 KiB the device tree takes at the start of RAM",
            ],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\nfirmware = true\nmemory_base = \"0x04000000\"\nmemory = \"32M\"\n",
            &[
                "x.toml:4:15: vm[0].memory_base: a firmware VM sees flash at [0x0, 0x8000000): its RAM [0x4000000, 0x6000000) may not overlap it",
            ],
        ),
        (
            "[[vm]]\nkernel = \"raw.bin\"\nidentity = 1\n",
            &[
                "x.toml:3:12: ",
                "invalid type: integer `1`, expected a boolean",
            ],
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
                "x.toml:2:7: machine.cpu: unknown cpu \"cortex-a9\": expected \"cortex-a57\", \"cortex-a53\" or \"max\"",
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
        // [system].
        (
            concat!("[system]\nslice = \"10\"\n", vm_a!()),
            &[
                "x.toml:2:9: system.slice: bad time slice \"10\": expected a whole number and a unit",
            ],
        ),
        (
            concat!("[system]\nslice = \"50us\"\n", vm_a!()),
            &["x.toml:2:9: system.slice: time slice \"50us\" is outside 100us to 1s"],
        ),
        (
            concat!("[system]\nslice = \"2s\"\n", vm_a!()),
            &["x.toml:2:9: system.slice: time slice \"2s\" is outside"],
        ),
        (
            concat!("[system]\nstop = \"sometimes\"\n", vm_a!()),
            &[
                "x.toml:2:8: system.stop: unknown stop policy \"sometimes\": expected \"all\" or \"any\"",
            ],
        ),
        (
            concat!("[system]\nslices = \"1ms\"\n", vm_a!()),
            &["x.toml:2:1: system: unknown field `slices`: did you mean `slice`?"],
        ),
        // Placement and physical CPUs.
        (
            concat!(vm_a!(), "placement = \"floating\"\n"),
            &[
                "x.toml:5:13: vm[0].placement: unknown placement \"floating\": expected \"pinned\" or \"shared\"",
            ],
        ),
        (
            concat!(vm_a!(), "on_crash = \"reboot\"\n"),
            &[
                "x.toml:5:12: vm[0].on_crash: unknown crash policy \"reboot\": expected \"stop\" or \"restart\"",
            ],
        ),
        (
            concat!(vm_a!(), "pcpus = [8]\n"),
            &[
                "x.toml:5:10: vm[0].pcpus: physical CPU 8: Stratum runs vCPUs on physical CPUs 0 to 7",
            ],
        ),
        (
            concat!(vm_a!(), "pcpus = [-1]\n"),
            &["x.toml:5:10: vm[0].pcpus: physical CPU -1: Stratum runs vCPUs"],
        ),
        (
            concat!(vm_a!(), "cpus = 2\npcpus = [1, 1]\n"),
            &["x.toml:6:13: vm[0].pcpus: physical CPU 1 is listed twice"],
        ),
        (
            concat!(vm_a!(), "pcpus = []\n"),
            &["x.toml:5:9: vm[0].pcpus: empty: list at least one physical CPU"],
        ),
        (
            concat!(vm_a!(), "cpus = 2\npcpus = [0]\n"),
            &[
                "x.toml:6:9: vm[0].pcpus: 1 physical CPUs for 2 pinned vCPUs: a pinned VM lists exactly one per vCPU",
            ],
        ),
        (
            concat!("[machine]\ncpus = 2\n", vm_a!(), "pcpus = [3]\n"),
            &[
                "x.toml:7:10: vm[0].pcpus: physical CPU 3 does not exist: the machine has 2 (machine.cpus)",
            ],
        ),
        (
            concat!(vm_a!(), "pcpus = [0]\n", vm_b!(), "pcpus = [0]\n"),
            &[
                "x.toml:5:10: vm[0].pcpus: physical CPU 0 is over-committed: pinned vCPU 0 of \"a\" owns it, but vCPU 0 of \"b\" also runs there",
                "x.toml:10:10: vm[1].pcpus: physical CPU 0 is over-committed: pinned vCPU 0 of \"b\" owns it, but vCPU 0 of \"a\" also runs there",
            ],
        ),
        (
            concat!(
                "[machine]\ncpus = 2\n",
                vm_a!(),
                "pcpus = [1]\n",
                vm_b!(),
                "placement = \"shared\"\ncpus = 2\npcpus = [0, 1]\n"
            ),
            &[
                "x.toml:7:10: vm[0].pcpus: physical CPU 1 is over-committed: pinned vCPU 0 of \"a\" owns it, but vCPU 1 of \"b\" also runs there",
            ],
        ),
        (
            // Defaults: "a" takes both CPUs, "b" shares the last one.
            concat!(
                "[machine]\ncpus = 2\n",
                vm_a!(),
                "cpus = 2\n",
                vm_b!(),
                "placement = \"shared\"\n"
            ),
            &[
                "x.toml:7:8: vm[0].pcpus: physical CPU 1 is over-committed: pinned vCPU 1 of \"a\" owns it, but vCPU 0 of \"b\" also runs there",
            ],
        ),
        (
            concat!("[machine]\ncpus = 1\n", vm_a!(), vm_b!()),
            &[
                "x.toml:7:1: vm[1].pcpus: 1 pinned vCPU needs as many free physical CPUs, but only 0 of CPUs 0 to 0 are free: raise machine.cpus, list pcpus, or use placement = \"shared\"",
            ],
        ),
        (
            &nine_pinned_gicv2,
            &["x.toml: the VMs need 9 physical CPUs, but QEMU virt with GICv2 takes 1 to 8"],
        ),
        // Passthrough devices, on their own.
        (
            concat!(vm_a!(), "[[vm.device]]\nreg = [0x0A000000, 0x1000]\n"),
            &[
                "x.toml:5:1: vm[0].device[0].name: missing: every device needs a name",
                "x.toml:5:1: vm[0].device[0].compatible: missing: every device needs a compatible string",
            ],
        ),
        (
            concat!(vm_a!(), "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\n"),
            &["x.toml:5:1: vm[0].device[0].reg: missing: every device needs reg = [base, size]"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"9d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\n"
            ),
            &["x.toml:6:8: vm[0].device[0].name: \"9d\" must start with a letter"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\n"
            ),
            &["x.toml:6:8: vm[0].device[0].name: \"d d\" contains ' '"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\n",
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A001000, 0x1000]\n"
            ),
            &[
                "x.toml:10:8: vm[0].device[1].name: duplicate device name \"d\" (also vm[0].device[0])",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = []\nreg = [0x0A000000, 0x1000]\n"
            ),
            &[
                "x.toml:7:14: vm[0].device[0].compatible: empty: give at least one compatible string",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = [\"arm,pl031\", \"\"]\nreg = [0x0A000000, 0x1000]\n"
            ),
            &[
                "x.toml:7:14: vm[0].device[0].compatible: \"\": a compatible string is non-empty printable ASCII",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = [\"arm pl031\"]\nreg = [0x0A000000, 0x1000]\n"
            ),
            &["vm[0].device[0].compatible: \"arm pl031\": a compatible string"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = [\"",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"",
                "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"]\nreg = [0x0A000000, 0x1000]\n"
            ),
            &[
                "x.toml:7:14: vm[0].device[0].compatible: 102 bytes with their NULs: a compatible list has at most 96",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = 7\nreg = [0x0A000000, 0x1000]\n"
            ),
            &["x.toml:7:14:", "a string or an array of strings"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000]\n"
            ),
            &["x.toml:8:7: vm[0].device[0].reg: 1 values: reg is [base, size], both 4 KiB aligned"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000800, 0x1000]\n"
            ),
            &["x.toml:8:7: vm[0].device[0].reg: base 0xa000800 is not 4 KiB aligned"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0]\n"
            ),
            &["x.toml:8:7: vm[0].device[0].reg: size 0x0: must be a non-zero multiple of 4 KiB"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [\"0xFFFFFFFFFFFFF000\", \"8K\"]\n"
            ),
            &[
                "x.toml:8:7: vm[0].device[0].reg: [0xfffffffffffff000, +0x2000) wraps around the address space",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, \"4Q\"]\n"
            ),
            &["x.toml:8:20: vm[0].device[0].reg: bad size \"4Q\""],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\ninterrupts = [1]\n"
            ),
            &[
                "x.toml:9:15: vm[0].device[0].interrupts: SPI 1 is the VM's UART: passthrough devices use SPIs 0 and 2 to 47",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\ninterrupts = [3, 48]\n"
            ),
            &[
                "x.toml:9:18: vm[0].device[0].interrupts: SPI 48: passthrough devices use SPIs 0 and 2 to 47 (48 and up are channel doorbells)",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\ninterrupts = [-2]\n"
            ),
            &["x.toml:9:15: vm[0].device[0].interrupts: SPI -2: passthrough devices use"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\ninterrupts = [3, 3]\n"
            ),
            &["x.toml:9:18: vm[0].device[0].interrupts: SPI 3 is listed twice"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\ninterrupts = [2, 3, 4, 5, 6]\n"
            ),
            &["x.toml:9:14: vm[0].device[0].interrupts: 5 interrupts: a device has at most 4"],
        ),
        (
            &five_devices,
            &["x.toml:21:1: vm[0].device[4]: 5 passthrough devices: a VM has at most 4"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\nirqs = [3]\n"
            ),
            &["x.toml:9:1: vm[0].device[0]: unknown field `irqs`"],
        ),
        // Passthrough devices against the rest.
        (
            concat!(
                vm_a!(),
                "memory_base = 0x0A000000\n[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A100000, 0x1000]\n"
            ),
            &[
                "x.toml:9:7: vm[0].device[0].reg: [0xa100000, 0xa101000) overlaps the VM's RAM [0xa000000, 0xa400000)",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"uart\"\ncompatible = \"arm,pl011\"\nreg = [0x09000000, 0x1000]\n"
            ),
            &[
                "x.toml:8:7: vm[0].device[0].reg: [0x9000000, 0x9001000) overlaps the GIC and UART at [0x8000000, 0x9001000)",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"gic\"\ncompatible = \"x\"\nreg = [0x08000000, 0x10000]\n"
            ),
            &["vm[0].device[0].reg: [0x8000000, 0x8010000) overlaps the GIC and UART"],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0BFFF000, 0x2000]\n"
            ),
            &[
                "x.toml:8:7: vm[0].device[0].reg: [0xbfff000, 0xc001000) overlaps the channel window [0xb000000, 0xc000000)",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"rtc\"\ncompatible = \"arm,pl031\"\nreg = [0x09010000, 0x1000]\ninterrupts = [2]\n",
                vm_b!(),
                "[[vm.device]]\nname = \"rtc2\"\ncompatible = \"arm,pl031\"\nreg = [0x09010000, 0x1000]\ninterrupts = [2]\n"
            ),
            &[
                "x.toml:17:7: vm[1].device[0].reg: [0x9010000, 0x9011000) overlaps vm[0].device[0] \"rtc\" of \"a\" at [0x9010000, 0x9011000)",
                "x.toml:18:15: vm[1].device[0].interrupts: SPI 2 is assigned twice: vm[0].device[0] \"rtc\" of \"a\" has it too",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\ninterrupts = [5]\n",
                "[[vm.device]]\nname = \"e\"\ncompatible = \"x\"\nreg = [0x0A001000, 0x1000]\ninterrupts = [6, 5]\n"
            ),
            &[
                "x.toml:14:18: vm[0].device[1].interrupts: SPI 5 is assigned twice: vm[0].device[0] \"d\" of \"a\" has it too",
            ],
        ),
        (
            concat!(
                vm_a!(),
                "memory_base = 0x80000000\n[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x50000000, 0x1000]\n"
            ),
            &[
                "x.toml:9:7: vm[0].device[0].reg: [0x50000000, 0x50001000) overlaps the machine's RAM [0x40000000, 0x60000000): a passthrough region must be a device",
            ],
        ),
        // Channels, on their own.
        (
            concat!(vm_a!(), vm_b!(), "[[channel]]\nvms = [\"a\", \"b\"]\n"),
            &["x.toml:9:1: channel[0].name: missing: every channel needs a name"],
        ),
        (
            concat!(vm_a!(), vm_b!(), "[[channel]]\nname = \"ch\"\n"),
            &["x.toml:9:1: channel[0].vms: missing: a channel connects two VMs"],
        ),
        (
            concat!(
                vm_a!(),
                vm_b!(),
                "[[channel]]\nname = \"my ch\"\nvms = [\"a\", \"b\"]\n"
            ),
            &["x.toml:10:8: channel[0].name: \"my ch\" contains ' '"],
        ),
        (
            concat!(
                vm_a!(),
                vm_b!(),
                "[[channel]]\nname = \"ch\"\nvms = [\"a\"]\n"
            ),
            &["x.toml:11:7: channel[0].vms: 1 VMs: a channel connects exactly two"],
        ),
        (
            concat!(
                vm_a!(),
                vm_b!(),
                "[[channel]]\nname = \"ch\"\nvms = [\"a\", \"c\"]\n"
            ),
            &["x.toml:11:13: channel[0].vms: unknown VM \"c\": the VMs are \"a\", \"b\""],
        ),
        (
            concat!(
                vm_a!(),
                vm_b!(),
                "[[channel]]\nname = \"ch\"\nvms = [\"a\", \"a\"]\n"
            ),
            &[
                "x.toml:11:13: channel[0].vms: a channel from \"a\" to itself: it connects two different VMs",
            ],
        ),
        (
            concat!(
                vm_a!(),
                vm_b!(),
                "[[channel]]\nname = \"ch\"\nvms = [\"a\", \"b\"]\nsize = \"6K\"\n"
            ),
            &[
                "x.toml:12:8: channel[0].size: 0x1800 bytes: a channel is a multiple of 4 KiB from 4K to 2M",
            ],
        ),
        (
            concat!(
                vm_a!(),
                vm_b!(),
                "[[channel]]\nname = \"ch\"\nvms = [\"a\", \"b\"]\nsize = \"4M\"\n"
            ),
            &["x.toml:12:8: channel[0].size: 0x400000 bytes: a channel is a multiple of 4 KiB"],
        ),
        (
            concat!(
                vm_a!(),
                vm_b!(),
                "[[channel]]\nname = \"ch\"\nvms = [\"a\", \"b\"]\nsize = 0\n"
            ),
            &["channel[0].size: 0x0 bytes"],
        ),
        (
            concat!(
                vm_a!(),
                vm_b!(),
                "[[channel]]\nname = \"ch\"\nvms = [\"a\", \"b\"]\nbuffer = \"4K\"\n"
            ),
            &["x.toml:12:1: channel[0]: unknown field `buffer`"],
        ),
        // Channels against each other and the VMs.
        (
            concat!(
                vm_a!(),
                vm_b!(),
                ch_ab!(),
                "[[channel]]\nname = \"ch\"\nvms = [\"b\", \"a\"]\n"
            ),
            &[
                "x.toml:14:8: channel[1].name: duplicate channel \"ch\" between \"a\" and \"b\" (also channel[0])",
            ],
        ),
        (
            &seventeen_channels,
            &[
                "x.toml:59:7: channel[16].vms: \"a\" is an end of more than 16 channels",
                "channel[16].vms: \"b\" is an end",
            ],
        ),
        (
            &full_window,
            &[
                "x.toml:44:8: channel[8].size: the channels of \"a\" need more than its 16 MiB channel window [0xb000000, 0xc000000)",
            ],
        ),
        (
            concat!(
                "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"32M\"\nmemory_base = 0x0A000000\n",
                vm_b!(),
                ch_ab!()
            ),
            &[
                "x.toml:5:15: vm[0].memory_base: RAM [0xa000000, 0xc000000) overlaps the channel window [0xb000000, 0xc000000) where this VM's channels are mapped",
            ],
        ),
        (
            concat!(
                "[machine]\nmemory = \"512M\"\n",
                "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"128M\"\n",
                "[[vm]]\nname = \"b\"\nkernel = \"raw.bin\"\nmemory = \"126M\"\n",
                "[[channel]]\nname = \"ch\"\nvms = [\"a\", \"b\"]\nsize = \"2M\"\n"
            ),
            &[
                "x.toml:2:10: machine.memory: 512 MiB is too small: the VMs need 768 MiB of host RAM (256 MiB of VM memory (including 2 MiB of channels) + ",
            ],
        ),
    ];
    // Every case runs; the failures are reported together.
    let mut failures = Vec::new();
    for (text, fragments) in cases {
        let e = match fx.parse(text) {
            Ok(c) => {
                failures.push(format!("accepted bad config:\n{text}\n{c:?}"));
                continue;
            }
            Err(e) => e,
        };
        assert_eq!(e.kind(), crate::ErrorKind::BadInput);
        let msg = e.to_string();
        for f in *fragments {
            if !msg.contains(f) {
                failures.push(format!("config:\n{text}\nmessage:\n{msg}\nmissing: {f}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
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
placement = "shared"
"#,
        )
        .expect("valid");
    assert_eq!(
        config.machine,
        Machine {
            board: Board::Virt,
            cpus: 2,
            gic: Gic::V2,
            cpu: CpuModel::Max,
            memory: 2 * GIB,
            cpus_explicit: true,
            gic_explicit: true,
            cpu_explicit: true,
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
        summary.contains("machine: virt, 2 CPUs (max, GICv2), 2 GiB host RAM"),
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
    // Pinned by default: one physical CPU per vCPU, the lowest free ones.
    assert_eq!(config.machine.cpus, 4);
    assert_eq!(config.vms[0].pcpus, [0]);
    assert_eq!(config.vms[1].pcpus, [1, 2, 3]);
    assert_eq!(config.vms[0].placement, CpuPlacement::Pinned);
    assert_eq!(config.vms[0].on_crash, OnCrash::Stop);
    assert_eq!(
        config.system,
        SystemConfig {
            slice_us: 10_000,
            stop: StopPolicy::All
        }
    );
    assert!(config.channels.is_empty());
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
fn identity_vms_go_above_the_boot_area_and_are_warned_about() {
    let fx = Fixture::new();
    let config = fx
        .parse(
            "[[vm]]\nname = \"svc\"\nkernel = \"raw.bin\"\nidentity = true\nmemory = \"64M\"\n\
             [[vm]]\nname = \"plain\"\nkernel = \"raw.bin\"\nmemory = \"64M\"\n\
             [[vm]]\nname = \"dma\"\nkernel = \"raw.bin\"\nidentity = true\nmemory = \"32M\"\n",
        )
        .expect("valid");
    let placed: Vec<_> = config
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.memory_base, v.identity))
        .collect();
    // The identity-mapped VMs are stacked from the end of the boot area, in
    // file order; the other keeps the usual guest-physical base.
    assert_eq!(
        placed,
        [
            ("svc", 0x5000_0000, true),
            ("plain", RAM, false),
            ("dma", 0x5400_0000, true),
        ]
    );
    assert_eq!(boot_area_end(config.bundle_size()), 0x5000_0000);
    // Host RAM reaches past the identity-mapped VMs with room for the
    // other one beside them.
    assert_eq!(config.machine.memory, 512 * MIB);
    let summary = config.summary();
    assert!(
        summary.contains(
            "vm[0] \"svc\": 1 vCPU, 64 MiB RAM at 0x50000000 (identity-mapped: host-physical too)\n"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("vm[1] \"plain\": 1 vCPU, 64 MiB RAM at 0x40000000\n"),
        "{summary}"
    );
    assert!(
        summary.ends_with(
            "warning: \"svc\", \"dma\" are identity-mapped and no SMMU guards host memory: a device \
             passed through can DMA anywhere, so trust those VMs like the hypervisor\n"
        ),
        "{summary}"
    );
    // Without identity-mapped VMs there is no warning.
    let plain = fx.parse("[[vm]]\nkernel = \"raw.bin\"\n").expect("valid");
    assert_eq!(plain.identity_warning(), None);
    assert!(!plain.summary().contains("warning"));
    // A large bundle pushes the boot area up: 128 MiB in, then the bundle
    // and 2 MiB for the host DT.
    assert_eq!(boot_area_end(200 * MIB), 0x4000_0000 + 330 * MIB);
}

#[test]
fn identity_vms_without_a_base_clear_a_large_boot_bundle() {
    let fx = Fixture::new();
    // A 150 MiB initrd makes a bundle that QEMU's 128 MiB offset puts past
    // the least boot area.
    let huge = fx.dir.write("huge.initrd", &[]);
    fs::File::options()
        .write(true)
        .open(&huge)
        .and_then(|f| f.set_len(150 * MIB))
        .expect("sparse initrd");
    let text = "[[vm]]\nname = \"svc\"\nkernel = \"raw.bin\"\nidentity = true\nmemory = \"64M\"\n\
                [[vm]]\nname = \"big\"\nkernel = \"raw.bin\"\ninitrd = \"huge.initrd\"\nmemory = \"256M\"\n\
                [[vm]]\nname = \"dma\"\nkernel = \"raw.bin\"\nidentity = true\nmemory = \"32M\"\n";
    let config = fx.parse(text).expect("valid");
    let floor = boot_area_end(config.bundle_size());
    assert!(
        floor > boot_area_end(0),
        "the bundle moves the boot area up"
    );
    let bases: Vec<u64> = config.vms.iter().map(|v| v.memory_base).collect();
    // Both identity-mapped VMs moved above it, in order, 64 MiB apart; the
    // other keeps the usual base.
    assert_eq!(bases, [floor, RAM, floor + 64 * MIB]);
    assert_eq!(
        config.vms[0].kernel_summary.placement.load_offset,
        stratum_core::image::RAW_LOAD_OFFSET
    );
    assert!(
        RAM + config.machine.memory >= floor + 96 * MIB,
        "room for them"
    );
    // An ELF linked for the least boot area's base cannot move: refused.
    let elf = ElfBuilder::new(0x5008_0000)
        .segment(0x5008_0000, &[0x1f, 0x20, 0x03, 0xd5], 0x1000)
        .build();
    fx.dir.write("high.elf", &elf);
    let text = "[[vm]]\nname = \"svc\"\nkernel = \"high.elf\"\nidentity = true\nmemory = \"64M\"\n\
                [[vm]]\nname = \"big\"\nkernel = \"raw.bin\"\ninitrd = \"huge.initrd\"\nmemory = \"256M\"\n";
    let e = fx.parse(text).expect_err("the ELF cannot move").to_string();
    assert!(e.contains("x.toml:4:12: vm[0].identity: "), "{e}");
    assert!(e.contains("set a memory_base it can run at"), "{e}");
    // Without the big bundle the same ELF runs where it was placed.
    let small =
        "[[vm]]\nname = \"svc\"\nkernel = \"high.elf\"\nidentity = true\nmemory = \"64M\"\n";
    assert_eq!(
        fx.parse(small).expect("valid").vms[0].memory_base,
        0x5000_0000
    );
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
        debian: false,
        exec: None,
        disks: Vec::new(),
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
        .override_machine(None, None, Some(CpuModel::Max))
        .expect("cpu override");
    assert_eq!(config.machine.cpu, CpuModel::Max);
    let e = config
        .override_machine(None, Some(Gic::V2), None)
        .expect_err("too many CPUs for GICv2");
    assert!(
        e.to_string()
            .contains("GICv2 on QEMU virt supports at most 8 CPUs, but the machine has 16"),
        "{e}"
    );
    config.machine.cpus = 8;
    config
        .override_machine(None, Some(Gic::V2), None)
        .expect("fits");
    assert_eq!(config.machine.gic, Gic::V2);
}

#[test]
fn the_zcu102_brings_its_gic_and_cpu_and_refuses_what_it_lacks() {
    let fx = Fixture::new();
    let config = fx
        .parse("[machine]\nboard = \"zcu102\"\n[[vm]]\nkernel = \"raw.bin\"\n")
        .expect("valid");
    let m = &config.machine;
    assert_eq!(
        (m.board, m.gic, m.cpu),
        (Board::Zcu102, Gic::V2, CpuModel::CortexA53)
    );
    assert!(
        config
            .summary()
            .starts_with("machine: zcu102, 1 CPU (cortex-a53, GICv2)")
    );
    // A virt config moved to the board by --board takes the board's GIC
    // and CPU; explicit ones it lacks are refused.
    let mut moved = fx.parse("[[vm]]\nkernel = \"raw.bin\"\n").expect("valid");
    moved
        .override_machine(Some(Board::Zcu102), None, None)
        .expect("fits the board");
    assert_eq!(
        (moved.machine.gic, moved.machine.cpu),
        (Gic::V2, CpuModel::CortexA53)
    );
    for (text, want) in [
        (
            "[machine]\nboard = \"zcu102\"\ngic = 3\n",
            "board zcu102: the ZCU102's GIC is a GIC-400 (GICv2)",
        ),
        (
            "[machine]\nboard = \"zcu102\"\ncpu = \"max\"\n",
            "the ZCU102's CPUs are Cortex-A53, not max",
        ),
        (
            "[machine]\nboard = \"zcu102\"\ncpus = 5\n",
            "the ZCU102 has 4 CPUs, but the machine has 5",
        ),
        (
            "[machine]\nboard = \"zcu102\"\nmemory = \"3G\"\n",
            "passes at most 2 GiB in its DT",
        ),
        (
            "[machine]\nboard = \"rpi4\"\n",
            "machine.board: unknown board \"rpi4\"",
        ),
    ] {
        let e = fx
            .parse(&format!("{text}[[vm]]\nkernel = \"raw.bin\"\n"))
            .expect_err(text)
            .to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    let mut explicit = fx
        .parse("[machine]\ngic = 3\n[[vm]]\nkernel = \"raw.bin\"\n")
        .expect("valid");
    let e = explicit
        .override_machine(Some(Board::Zcu102), None, None)
        .expect_err("an explicit GICv3");
    assert!(e.to_string().contains("GIC-400 (GICv2)"), "{e}");
    // A passthrough region must be a device on the board's map: 0x1000_0000
    // is below virt's RAM but inside the ZCU102's.
    let device = "[[vm]]\nkernel = \"raw.bin\"\n[[vm.device]]\nname = \"dev\"\n\
                  compatible = \"vendor,dev\"\nreg = [0x10000000, 0x1000]\n";
    let e = fx
        .parse(&format!("[machine]\nboard = \"zcu102\"\n{device}"))
        .expect_err("a device in the ZCU102's RAM")
        .to_string();
    assert!(e.contains("overlaps the machine's RAM [0x0,"), "{e}");
    let mut moved = fx.parse(device).expect("a device outside virt's RAM");
    let e = moved
        .override_machine(Some(Board::Zcu102), None, None)
        .expect_err("inside the ZCU102's RAM");
    assert!(
        e.to_string().contains(
            "passes through 'dev' at [0x10000000, 0x10001000), inside the board's RAM [0x0,"
        ),
        "{e}"
    );
    let mut identity = fx
        .parse("[[vm]]\nkernel = \"raw.bin\"\nidentity = true\n")
        .expect("valid on virt");
    let e = identity
        .override_machine(Some(Board::Zcu102), None, None)
        .expect_err("identity on the ZCU102");
    assert!(e.to_string().contains("is identity-mapped"), "{e}");
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
    assert_eq!(eight.machine.cpus, 8);
    eight.check_supported().expect("eight VMs run");

    let nine = fx
        .parse(&shared_vms(9, "32M"))
        .expect("the format allows more VMs");
    let e = nine.check_supported().expect_err("at most eight");
    assert_eq!(e.exit_code(), crate::exit_code::BAD_INPUT);
    let msg = e.to_string();
    assert!(
        msg.contains("x.toml: vm: 9 VMs: this version of Stratum runs at most 8 VMs at a time"),
        "{msg}"
    );
}

/// The three-VM example of `docs/config.md`, its kernels and initrd
/// replaced by the fixture's.
fn docs_example() -> String {
    let doc = fs::read_to_string(crate::workspace_root().join("docs/config.md"))
        .expect("docs/config.md exists");
    let start = doc.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("the example ends");
    doc[start..end]
        .lines()
        .map(|l| {
            if l.starts_with("kernel = ") {
                "kernel = \"raw.bin\""
            } else if l.starts_with("initrd = ") {
                "initrd = \"initrd.img\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn three_vm_example_resolves() {
    let fx = Fixture::new();
    let config = fx
        .parse(&docs_example())
        .expect("the documented example is valid");
    assert_eq!(config.machine.cpus, 3);
    assert_eq!(config.machine.memory, GIB);
    assert_eq!(
        config.system,
        SystemConfig {
            slice_us: 5_000,
            stop: StopPolicy::All
        }
    );
    let names: Vec<&str> = config.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["linux", "ticker", "ctl"]);
    let [linux, ticker, ctl] = &config.vms[..] else {
        panic!("three VMs")
    };
    assert_eq!(
        (linux.placement, &linux.pcpus[..]),
        (CpuPlacement::Pinned, &[0, 1][..])
    );
    assert_eq!(
        (ticker.placement, &ticker.pcpus[..]),
        (CpuPlacement::Shared, &[2][..])
    );
    assert_eq!(
        (ctl.placement, &ctl.pcpus[..]),
        (CpuPlacement::Shared, &[2][..])
    );
    assert_eq!(
        (linux.on_crash, ticker.on_crash, ctl.on_crash),
        (OnCrash::Stop, OnCrash::Restart, OnCrash::Stop)
    );
    assert!(linux.devices.is_empty() && ctl.devices.is_empty());
    assert_eq!(
        ticker.devices,
        [DeviceConfig {
            name: "rtc".into(),
            compatible: vec!["arm,pl031".into(), "arm,primecell".into()],
            base: 0x0901_0000,
            size: 0x1000,
            interrupts: vec![2],
        }]
    );
    assert_eq!(
        ticker.devices[0].compatible_bytes(),
        b"arm,pl031\0arm,primecell\0"
    );
    let end = |vm, id: u32, ipa| ChannelEndConfig {
        vm,
        id,
        ipa,
        spi: 48 + id,
    };
    assert_eq!(
        config.channels,
        [
            ChannelConfig {
                name: "stats".into(),
                size: 64 * KIB,
                ends: [end(0, 0, 0x0B00_0000), end(1, 0, 0x0B00_0000)],
            },
            ChannelConfig {
                name: "cmd".into(),
                size: 4 * KIB,
                ends: [end(2, 0, 0x0B00_0000), end(1, 1, 0x0B01_0000)],
            },
        ]
    );
    assert_eq!(config.channel_memory(), 68 * KIB);
    config.check_supported().expect("this version runs it");
    let summary = config.summary();
    for needle in [
        "system: 5000 us time slice, stops when every VM stops",
        "pinned on physical CPUs [0, 1], on crash: stop",
        "shared on physical CPUs [2], on crash: restart",
        "device \"rtc\" [\"arm,pl031\", \"arm,primecell\"]: [0x9010000, 0x9011000), SPIs [2]",
        "channel \"cmd\": 4 KiB between \"ctl\" (#0 at 0xb000000, SPI 48) and \"ticker\" (#1 at 0xb010000, SPI 49)",
    ] {
        assert!(summary.contains(needle), "missing {needle:?} in\n{summary}");
    }
}

#[test]
fn placement_defaults() {
    let fx = Fixture::new();
    // Pinned defaults skip CPUs any pcpus names; shared defaults take the
    // last CPU; the machine gets enough CPUs for all that.
    let config = fx
        .parse(concat!(
            vm_a!(),
            "cpus = 2\n",
            vm_b!(),
            "pcpus = [0]\n",
            "[[vm]]\nname = \"c\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\nplacement = \"shared\"\ncpus = 3\n",
            "[[vm]]\nname = \"d\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\nplacement = \"shared\"\ncpus = 3\npcpus = [3, 4]\n",
        ))
        .expect("valid");
    // 3 pinned vCPUs + 1 for the shared default; pcpus names CPU 4.
    assert_eq!(config.machine.cpus, 5);
    let pcpus: Vec<&[u32]> = config.vms.iter().map(|v| &v.pcpus[..]).collect();
    assert_eq!(pcpus, [&[1, 2][..], &[0], &[4, 4, 4], &[3, 4, 3]]);
    // An explicit machine.cpus bounds the shared default.
    let config = fx
        .parse(concat!(
            "[machine]\ncpus = 4\n",
            vm_a!(),
            "placement = \"shared\"\n"
        ))
        .expect("valid");
    assert_eq!(config.vms[0].pcpus, [3]);
    // Beyond the 8 CPUs Stratum uses, the shared default is CPU 7.
    let config = fx
        .parse(concat!(
            "[machine]\ncpus = 16\n",
            vm_a!(),
            "placement = \"shared\"\n"
        ))
        .expect("valid");
    assert_eq!(config.vms[0].pcpus, [7]);
}

#[test]
fn dt_fragment_is_resolved_and_carried_into_the_bundle() {
    let fx = Fixture::new();
    let config = fx
        .parse("[[vm]]\nkernel = \"hello.elf\"\ndt_fragment = \"extra.dtb\"\n")
        .expect("valid");
    let vm = &config.vms[0];
    assert_eq!(vm.dt_fragment, Some(fx.dir.path().join("extra.dtb")));
    assert_eq!(
        vm.dt_fragment_size,
        fragment("board-clock", None).len() as u64
    );
    let bytes = crate::kernel::build_bundle(&config, 0, [0; 16]).expect("bundle");
    let bundle = stratum_abi::bundle::Bundle::parse(&bytes).expect("parses");
    assert_eq!(
        bundle.vm(0).and_then(|v| v.dt_fragment),
        Some(&fragment("board-clock", None)[..])
    );
    assert_eq!(config.bundle_size(), bytes.len() as u64);
}

/// Checks that `msg` holds every `(line:col, field and message)` of
/// `want`, each on its own line as `x.toml:LINE:COL: …`, in that order.
fn assert_all_reported(msg: &str, want: &[(&str, &str)]) {
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), want.len(), "one line per problem:\n{msg}");
    for (line, (at, text)) in lines.iter().zip(want) {
        let expected = format!("x.toml:{at}: {text}");
        assert!(
            line.contains(&expected),
            "expected {expected:?}, got {line:?}\nin\n{msg}"
        );
    }
}

#[test]
fn every_error_in_one_config_is_reported_at_once() {
    let fx = Fixture::new();
    let text = r#"[machine]
gic = 4
cpu = "a72"
smp = 2

[system]
slice = "10"

[[vm]]
name = "bad name!"
kernel = "missing.bin"
initrd = "missing.cpio"

[[vm]]
name = "b"
kernel = "raw.bin"
cpus = 0
memory = "3M"
memory_base = "0x40001000"

[[vm]]
name = "c"
kernel = "raw.bin"
dt_fragment = "big.dtb"

[[vm]]
name = "c"
kernel = "a-directory"
on_crash = "explode"
memroy = "4M"

[[channel]]
name = "ch"
vms = ["c", "nope"]
"#;
    let msg = fx.parse(text).expect_err("fifteen problems").to_string();
    assert_all_reported(
        &msg,
        &[
            ("2:7", "machine.gic: must be 2 or 3, not 4"),
            ("3:7", "machine.cpu: unknown cpu \"a72\""),
            ("4:1", "machine: unknown field `smp`"),
            ("7:9", "system.slice: bad time slice \"10\""),
            ("10:8", "vm[0].name: \"bad name!\" contains ' '"),
            ("11:10", "vm[0].kernel: "),
            ("12:10", "vm[0].initrd: "),
            ("17:8", "vm[1].cpus: 0 vCPUs"),
            ("18:10", "vm[1].memory: 0x300000 bytes"),
            (
                "19:15",
                "vm[1].memory_base: 0x40001000 is not 2 MiB aligned",
            ),
            ("24:15", "vm[2].dt_fragment: "),
            ("27:8", "vm[3].name: duplicate VM name \"c\" (also vm[2])"),
            ("28:10", "vm[3].kernel: "),
            ("29:12", "vm[3].on_crash: unknown crash policy \"explode\""),
            (
                "30:1",
                "vm[3]: unknown field `memroy`: did you mean `memory`?",
            ),
            ("34:13", "channel[0].vms: unknown VM \"nope\""),
        ],
    );
    assert!(msg.contains("missing.bin: file not found"), "{msg}");
    assert!(msg.contains("missing.cpio: file not found"), "{msg}");
    assert!(msg.contains("a-directory: not a regular file"), "{msg}");
    assert!(msg.contains("a DT fragment may have at most"), "{msg}");
}

#[test]
fn a_missing_kernel_hides_no_rule_between_vms() {
    let fx = Fixture::new();
    let text = r#"[[vm]]
name = "a"
kernel = "missing.bin"
pcpus = [0]

[[vm]]
name = "a"
kernel = "raw.bin"
pcpus = [0]

[[channel]]
name = "ch"
vms = ["a", "nope"]
"#;
    let msg = fx.parse(text).expect_err("four problems").to_string();
    assert_all_reported(
        &msg,
        &[
            ("3:10", "vm[0].kernel: "),
            ("4:10", "vm[0].pcpus: physical CPU 0 is over-committed"),
            ("7:8", "vm[1].name: duplicate VM name \"a\" (also vm[0])"),
            ("9:10", "vm[1].pcpus: physical CPU 0 is over-committed"),
            ("13:13", "channel[0].vms: unknown VM \"nope\""),
        ],
    );
}

#[test]
fn every_syntax_error_is_reported_with_its_place() {
    let fx = Fixture::new();
    let text = "[[vm]]\nname = \"a\nkernel = = \"raw.bin\"\n[machine\ngic = 3\n";
    let msg = fx.parse(text).expect_err("syntax errors").to_string();
    for at in ["x.toml:2:10: ", "x.toml:3:10: ", "x.toml:4:9: "] {
        assert!(msg.contains(at), "missing {at:?} in\n{msg}");
    }
    assert!(msg.lines().count() >= 3, "{msg}");
}

#[test]
fn the_known_keys_come_from_the_serde_structs() {
    let fx = Fixture::new();
    // Every key of every table is accepted (nothing reported unknown).
    let text = r#"[machine]
cpus = 3
gic = 3
cpu = "max"
memory = "1G"

[system]
slice = "10ms"
stop = "all"

[[vm]]
name = "a"
kernel = "raw.bin"
initrd = "initrd.img"
cmdline = "x"
cpus = 1
memory = "8M"
memory_base = "0x40000000"
placement = "pinned"
pcpus = [0]
on_crash = "stop"
dt_fragment = "extra.dtb"

[[vm.device]]
name = "rtc"
compatible = "arm,pl031"
reg = [0x0a000000, 0x1000]
interrupts = [3]

[[vm]]
name = "b"
kernel = "raw.bin"
memory = "4M"
pcpus = [1]
vsock = true
virtio_console = true

[[vm]]
name = "c"
kernel = "raw.bin"
memory = "4M"
pcpus = [2]
vsock = true

[[channel]]
name = "ch"
vms = ["a", "b"]
size = "4K"

[[network]]
name = "lan"
vms = ["b", "c"]

[[vsock]]
allow = ["b", "c"]
"#;
    let config = fx
        .parse(text)
        .unwrap_or_else(|e| panic!("every key is known: {e}"));
    assert_eq!(config.vms.len(), 3);
    assert_eq!(config.vms[0].devices.len(), 1);
    assert_eq!(config.networks.len(), 1);
    assert!(config.vms[1].virtio_console);
}

/// A Debian source that hands out the fixture's small Image and initrd,
/// counting how often it is asked.
fn fake_debian<'a>(
    fx: &'a Fixture,
    calls: &'a std::cell::Cell<u32>,
) -> impl FnMut() -> Result<LinuxGuest> + 'a {
    move || {
        calls.set(calls.get() + 1);
        Ok(LinuxGuest {
            kernel: fx.dir.path().join("small.Image"),
            initramfs: fx.dir.path().join("initrd.img"),
            kernel_version: "6.1.0-57-arm64".into(),
        })
    }
}

#[test]
fn debian_vms_take_the_fetched_guest_and_its_defaults() {
    let fx = Fixture::new();
    let calls = std::cell::Cell::new(0);
    let text = "[[vm]]\nname = \"web\"\ndebian = true\nexec = \"echo hi; exit 3\"\ncmdline = \"quiet\"\n\n[[vm]]\nname = \"db\"\ndebian = true\nmemory = \"256M\"\n";
    let path = fx.dir.write("x.toml", text.as_bytes());
    let config =
        Config::parse_with(text, &path, &mut fake_debian(&fx, &calls)).expect("two Debian VMs");
    assert_eq!(calls.get(), 1, "fetched once for both");
    let (web, db) = (&config.vms[0], &config.vms[1]);
    assert_eq!(web.kernel, fx.dir.path().join("small.Image"));
    assert_eq!(
        web.initrd.as_deref(),
        Some(fx.dir.path().join("initrd.img").as_path())
    );
    assert_eq!(web.cmdline, "console=ttyAMA0 quiet");
    assert_eq!(web.memory, DEBIAN_DEFAULT_MEMORY);
    assert_eq!(web.exec.as_deref(), Some("echo hi; exit 3"));
    let overlay = crate::linux::initramfs::exec_overlay("echo hi; exit 3").len() as u64;
    assert_eq!(
        web.initrd_size,
        6 + overlay,
        "the overlay rides in the initrd"
    );
    assert_eq!(
        (db.cmdline.as_str(), db.memory, db.exec.as_deref()),
        ("console=ttyAMA0", 256 * MIB, None)
    );
    assert_eq!(db.initrd_size, 6);
    // The bundle carries the overlay after the initramfs.
    let bundle = crate::kernel::build_bundle(&config, 0, [0; 16]).expect("bundle");
    assert_eq!(config.bundle_size(), bundle.len() as u64);
}

#[test]
fn debian_and_exec_mistakes_are_reported_with_their_fields() {
    let fx = Fixture::new();
    let calls = std::cell::Cell::new(0);
    let text = "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nexec = \"true\"\n\n[[vm]]\nname = \"b\"\ndebian = true\nkernel = \"raw.bin\"\nexec = \" \"\n";
    let path = fx.dir.write("x.toml", text.as_bytes());
    let msg = Config::parse_with(text, &path, &mut fake_debian(&fx, &calls))
        .expect_err("three mistakes")
        .to_string();
    assert_all_reported(
        &msg,
        &[
            ("4:8", "vm[0].exec: needs debian = true"),
            (
                "9:10",
                "vm[1].kernel: debian = true brings its own kernel and initramfs",
            ),
            ("10:8", "vm[1].exec: is empty"),
        ],
    );
    // A guest that cannot be fetched is an error at the debian key.
    let text = "[[vm]]\nname = \"a\"\ndebian = true\n";
    let path = fx.dir.write("x.toml", text.as_bytes());
    let mut offline = || Err(crate::Error::environment("the archive is unreachable"));
    let msg = Config::parse_with(text, &path, &mut offline)
        .expect_err("offline")
        .to_string();
    assert_all_reported(
        &msg,
        &[(
            "3:10",
            "vm[0].debian: cannot get the Debian guest: the archive is unreachable",
        )],
    );
    // Without debian = true, nothing is fetched.
    let calls = std::cell::Cell::new(0);
    let text = "[[vm]]\nkernel = \"raw.bin\"\nmemory = \"4M\"\n";
    let path = fx.dir.write("x.toml", text.as_bytes());
    Config::parse_with(text, &path, &mut fake_debian(&fx, &calls)).expect("valid");
    assert_eq!(calls.get(), 0);
}

#[test]
fn debian_flags_get_the_same_defaults_as_a_config() {
    let fx = Fixture::new();
    let config = Config::from_flags(&VmFlags {
        kernel: fx.dir.path().join("small.Image"),
        initrd: Some(fx.dir.path().join("initrd.img")),
        append: Some("quiet".into()),
        cpus: None,
        memory: None,
        debian: true,
        exec: Some("uname -r".into()),
        disks: Vec::new(),
    })
    .expect("valid");
    let vm = &config.vms[0];
    assert_eq!(vm.name, "debian");
    assert_eq!(vm.cmdline, "console=ttyAMA0 quiet");
    assert_eq!(vm.memory, DEBIAN_DEFAULT_MEMORY);
    assert_eq!(vm.exec.as_deref(), Some("uname -r"));
    let e = Config::from_flags(&VmFlags {
        kernel: fx.dir.path().join("small.Image"),
        initrd: Some(fx.dir.path().join("initrd.img")),
        debian: true,
        exec: Some(String::new()),
        ..VmFlags::default()
    })
    .expect_err("empty command");
    assert!(e.to_string().contains("--exec: is empty"), "{e}");
}

/// Three VMs on two networks, vsock between two of them, a console on one.
const VIRTIO_SYSTEM: &str = r#"[[vm]]
name = "a"
kernel = "raw.bin"
memory = "4M"
vsock = true
virtio_console = true

[[vm]]
name = "b"
kernel = "raw.bin"
memory = "4M"
vsock = true

[[vm]]
name = "c"
kernel = "raw.bin"
memory = "4M"
vsock = true

[[network]]
name = "lan"
vms = ["a", "b", "c"]

[[network]]
name = "back"
vms = ["c", "a"]

[[vsock]]
allow = ["b", "a"]
"#;

#[test]
fn networks_vsock_and_consoles_are_resolved_and_carried_into_the_bundle() {
    let fx = Fixture::new();
    let config = fx.parse(VIRTIO_SYSTEM).expect("valid");
    let mac = |vm: &str, net: &str| stratum_virtio::net::derive_mac(vm, net).0;
    assert_eq!(config.networks.len(), 2);
    let lan = &config.networks[0];
    assert_eq!(lan.name, "lan");
    assert_eq!(
        lan.nics,
        vec![
            NicConfig {
                vm: 0,
                mac: mac("a", "lan"),
                transport: 2
            },
            NicConfig {
                vm: 1,
                mac: mac("b", "lan"),
                transport: 2
            },
            NicConfig {
                vm: 2,
                mac: mac("c", "lan"),
                transport: 2
            },
        ]
    );
    // A VM's second network takes its next transport.
    let back: Vec<(usize, u32)> = config.networks[1]
        .nics
        .iter()
        .map(|n| (n.vm, n.transport))
        .collect();
    assert_eq!(back, vec![(2, 3), (0, 3)]);
    let vsock = |i: usize| config.vms[i].vsock.clone().expect("vsock");
    assert_eq!(
        vsock(0),
        VsockConfig {
            cid: 3,
            transport: 1,
            peers: vec![1]
        }
    );
    assert_eq!(vsock(1).peers, vec![0]);
    assert_eq!((vsock(2).cid, vsock(2).peers), (5, vec![]));
    assert!(config.vms[0].virtio_console);
    assert!(
        !config.vms[1].virtio_console,
        "off unless asked (or Debian)"
    );

    // `stratum check` shows every MAC and CID.
    let summary = config.summary();
    let shown = stratum_virtio::net::Mac(mac("c", "back")).to_string();
    assert!(
        summary.contains(&format!("network \"back\": \"c\" {shown} (transport 3)")),
        "{summary}"
    );
    assert!(
        summary.contains("vsock \"a\": CID 3 (transport 1), may connect to [\"b\"]"),
        "{summary}"
    );
    assert!(
        summary.contains("vsock \"c\": CID 5 (transport 1), may connect to no VM"),
        "{summary}"
    );
    assert!(
        summary.contains("virtio-console \"a\": hvc0 (transport 0)"),
        "{summary}"
    );

    // The bundle carries them, checked by the hypervisor's parser.
    let bytes = crate::kernel::build_bundle(&config, 0, [0; 16]).expect("bundle");
    assert_eq!(config.bundle_size(), bytes.len() as u64);
    let b = stratum_abi::bundle::Bundle::parse(&bytes).expect("valid bundle");
    let got: Vec<_> = (0..b.virtio_count()).filter_map(|i| b.virtio(i)).collect();
    assert_eq!(got, config.virtio_devices());
    use stratum_abi::bundle::VirtioKind;
    assert_eq!(
        got.iter()
            .filter(|v| matches!(v.kind, VirtioKind::Net { .. }))
            .count(),
        5
    );
    assert!(got.contains(&stratum_abi::bundle::Virtio {
        vm: 1,
        transport: 1,
        kind: VirtioKind::Vsock { cid: 4, peers: 1 },
    }));
    assert!(got.contains(&stratum_abi::bundle::Virtio {
        vm: 0,
        transport: 3,
        kind: VirtioKind::Net {
            network: 1,
            port: 1,
            mac: mac("a", "back")
        },
    }));
}

#[test]
fn virtio_mistakes_are_all_reported_with_their_fields() {
    let fx = Fixture::new();
    let text = r#"[[vm]]
name = "a"
kernel = "raw.bin"
memory = "4M"
vsock = true

[[vm.device]]
name = "rtc"
compatible = "arm,pl031"
reg = [0x0a000000, 0x1000]
interrupts = [17, 20]

[[vm]]
name = "b"
kernel = "raw.bin"
memory = "4M"

[[network]]
name = "lan"
vms = ["a", "zed", "a"]

[[network]]
name = "lan"
vms = ["b"]

[[network]]
vms = ["a", "b"]

[[vsock]]
allow = ["a", "b"]

[[vsock]]
allow = ["a"]

[[vsock]]
"#;
    let err = fx.parse(text).expect_err("bad").to_string();
    assert_all_reported(
        &err,
        &[
            (
                "10:7",
                "vm[0].device[0].reg: [0xa000000, 0xa001000) overlaps the page of virtio-mmio transport 1 (0xa000200), which carries this VM's vsock device",
            ),
            (
                "11:15",
                "vm[0].device[0].interrupts: SPI 17 is virtio-mmio transport 1's, which carries this VM's vsock device",
            ),
            (
                "20:13",
                "network[0].vms: unknown VM \"zed\": the VMs are \"a\", \"b\"",
            ),
            ("20:20", "network[0].vms: \"a\" is listed twice"),
            (
                "23:8",
                "network[1].name: duplicate network name \"lan\" (also network[0])",
            ),
            (
                "24:7",
                "network[1].vms: 1 VMs: a network connects two or more",
            ),
            (
                "26:1",
                "network[2].name: missing: every network needs a name",
            ),
            (
                "30:15",
                "vsock[0].allow: \"b\" has no vsock device: add vsock = true to its [[vm]]",
            ),
            (
                "33:9",
                "vsock[1].allow: 1 VMs: a vsock entry allows exactly one pair",
            ),
            (
                "35:1",
                "vsock[2].allow: missing: a vsock entry allows one pair of VMs",
            ),
        ],
    );
}

#[test]
fn a_vm_without_virtio_devices_keeps_the_virtio_window_for_passthrough() {
    let fx = Fixture::new();
    let text = format!(
        "{}[[vm.device]]\nname = \"d\"\ncompatible = \"x\"\nreg = [0x0A000000, 0x1000]\ninterrupts = [20]\n{}[[vsock]]\nallow = [\"b\", \"c\"]\n{}",
        vm_a!(),
        "[[vm]]\nname = \"b\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\nvsock = true\n",
        "[[vm]]\nname = \"c\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\nvsock = true\n"
    );
    let config = fx.parse(&text).expect("a has no virtio device");
    assert_eq!(config.vms[0].devices[0].interrupts, vec![20]);
    assert_eq!(config.vms[1].vsock.as_ref().map(|v| v.cid), Some(4));
    // A duplicate pair is refused, in either order.
    let twice = format!("{text}[[vsock]]\nallow = [\"c\", \"b\"]\n");
    let err = fx.parse(&twice).expect_err("twice").to_string();
    assert!(
        err.contains("vsock[1].allow: the pair \"c\" and \"b\" is allowed twice (also vsock[0])"),
        "{err}"
    );
}

#[test]
fn debian_vms_get_a_virtio_console_unless_they_say_otherwise() {
    let fx = Fixture::new();
    let calls = std::cell::Cell::new(0);
    let text = "[[vm]]\nname = \"web\"\ndebian = true\n\n[[vm]]\nname = \"db\"\ndebian = true\nvirtio_console = false\n";
    let path = fx.dir.write("x.toml", text.as_bytes());
    let config =
        Config::parse_with(text, &path, &mut fake_debian(&fx, &calls)).expect("two Debian VMs");
    assert!(config.vms[0].virtio_console);
    assert!(!config.vms[1].virtio_console);
    assert_eq!(config.virtio_devices().len(), 1);
}
