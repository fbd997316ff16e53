//! System tests: the real Stratum hypervisor on QEMU (TCG) with one test guest
//! per test, on GICv2 and GICv3, checking the console protocol and the exit
//! status. Run them with `cargo xtask test`, which builds everything and sets
//! `STRATUM_BIN`, `STRATUM_GUESTS_DIR` and `STRATUM_HYPERVISOR`; without them a
//! test fails with a message saying so (it never passes or skips silently).

use std::path::PathBuf;
use std::time::Duration;

use stratum_systests::{
    DEFAULT_TIMEOUT, GuestOpts, HARD_TIMEOUT_GRACE, Run, assert_in_order, assert_passed,
    assert_status, guest_elf, lines_containing, markers, numbers_after, run_guest, run_stratum,
    split_by_tag, status,
};

/// Timeout for the CLI-argument tests, which never start a VM.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

fn run(guest: &str, gic: u8, cpu: &str) -> Run {
    run_guest(
        guest,
        &GuestOpts {
            gic,
            cpu,
            timeout: DEFAULT_TIMEOUT,
            ..GuestOpts::default()
        },
    )
}

fn check_hello(run: &Run) {
    assert_passed(run, "hello");
    assert_in_order(
        run,
        &[
            "Hello from a Stratum guest!",
            "CurrentEL: EL1",
            "MIDR_EL1: ",
            "MPIDR_EL1: ",
            "device tree at ",
            "memory: base 0x40000000 size ",
            "vCPUs: ",
            "bootargs: ",
            "PSCI version 1.1 (0x10001)",
            "SMCCC version 1.2 (0x10002)",
        ],
    );
    assert!(
        lines_containing(&run.console, "x0 = 0").is_empty(),
        "the hypervisor must pass the DTB address in x0\n{}",
        run.describe()
    );
}

fn check_psci(run: &Run) {
    assert_passed(run, "psci");
    assert_in_order(
        run,
        &[
            "check PSCI_VERSION: got 0x10001",
            "still running after unknown function 0x1234",
            "check PSCI_VERSION via SMC: got 0x10001",
            "STRATUM-TEST PASS psci",
        ],
    );
}

fn check_abort(run: &Run) {
    assert_passed(run, "abort");
    assert_in_order(
        run,
        &[
            "read 0x10000000 (EL1h): vector +0x200",
            "write 0x10000000 (EL1h): vector +0x200",
            "read 0x10000000 (EL1t): vector +0x000",
            "still running after 8 aborts in a row",
        ],
    );
}

fn check_isv0(run: &Run) {
    assert_passed(run, "isv0");
    assert_in_order(
        run,
        &[
            "check ldp w3, w4, [x0, #0x24]: w3",
            "isv0: this line was printed with strb w1, [x0], #4",
            "check ldr x1, [x0, #0x24] (64-bit): ESR.EC: got 0x25",
            "check ldp x1, x2, [x0, #0x20] (64-bit pair): DFSC: got 0x10",
            "check ldr q0, [x0, #0x20] (SIMD): FAR: got 0x9000020",
            "check rejected accesses left IBRD alone: got",
            "STRATUM-TEST PASS isv0",
        ],
    );
}

fn check_reset(run: &Run) {
    assert_passed(run, "reset");
    assert_eq!(
        numbers_after(&run.console, "boot count "),
        [1, 2, 3],
        "expected boots 1, 2, 3 in order\n{}",
        run.describe()
    );
}

fn check_off(run: &Run) {
    assert_status(run, status::OK, "off");
    assert!(
        markers(&run.console).is_empty(),
        "off prints no verdict (nor FAIL) line\n{}",
        run.describe()
    );
    let said = lines_containing(&run.console, "off: calling SYSTEM_OFF").len();
    assert_eq!(
        said,
        1,
        "expected one `off: calling SYSTEM_OFF` line and nothing from the guest after it\n{}",
        run.describe()
    );
}

/// `virtioprobe`: every one of `virt`'s 32 virtio-mmio transports answers
/// (magic, version 2, DeviceID 0: nothing attached) and none aborts.
fn check_virtioprobe(run: &Run) {
    assert_passed(run, "virtioprobe");
    assert_in_order(
        run,
        &[
            "check transports that aborted: got 0, want 0: ok",
            "check transports answering as virt's with no device: got 32, want 32: ok",
        ],
    );
}

macro_rules! system_test {
    ($name:ident, $guest:literal, $gic:literal, $cpu:literal, $check:ident) => {
        #[test]
        fn $name() {
            $check(&run($guest, $gic, $cpu));
        }
    };
}

system_test!(hello_gic2, "hello", 2, "cortex-a57", check_hello);
system_test!(hello_gic3, "hello", 3, "cortex-a57", check_hello);
system_test!(hello_gic3_max, "hello", 3, "max", check_hello);
system_test!(psci_gic2, "psci", 2, "cortex-a57", check_psci);
system_test!(psci_gic3, "psci", 3, "cortex-a57", check_psci);
system_test!(psci_gic3_max, "psci", 3, "max", check_psci);
system_test!(abort_gic2, "abort", 2, "cortex-a57", check_abort);
system_test!(abort_gic3, "abort", 3, "cortex-a57", check_abort);
system_test!(abort_gic2_max, "abort", 2, "max", check_abort);
system_test!(isv0_gic2, "isv0", 2, "cortex-a57", check_isv0);
system_test!(isv0_gic3, "isv0", 3, "cortex-a57", check_isv0);
system_test!(isv0_gic3_max, "isv0", 3, "max", check_isv0);
system_test!(reset_gic2, "reset", 2, "cortex-a57", check_reset);
system_test!(reset_gic3, "reset", 3, "cortex-a57", check_reset);
system_test!(reset_gic2_max, "reset", 2, "max", check_reset);
system_test!(off_gic2, "off", 2, "cortex-a57", check_off);
system_test!(off_gic3, "off", 3, "cortex-a57", check_off);
system_test!(off_gic3_max, "off", 3, "max", check_off);
system_test!(
    virtioprobe_gic2,
    "virtioprobe",
    2,
    "cortex-a57",
    check_virtioprobe
);
system_test!(
    virtioprobe_gic3,
    "virtioprobe",
    3,
    "cortex-a57",
    check_virtioprobe
);

#[test]
fn missing_kernel_file_is_bad_input() {
    let missing: PathBuf =
        std::env::temp_dir().join(format!("stratum-no-such-kernel-{}.elf", std::process::id()));
    assert!(!missing.exists());
    let run = run_stratum(
        [
            "run".as_ref(),
            "--kernel".as_ref(),
            missing.as_os_str(),
            "--timeout".as_ref(),
            "10".as_ref(),
        ],
        CLI_TIMEOUT + HARD_TIMEOUT_GRACE,
    );
    assert_status(&run, status::BAD_INPUT, "missing --kernel file");
    let name = missing
        .file_name()
        .expect("has a file name")
        .to_string_lossy();
    assert!(
        run.console.contains(name.as_ref()),
        "the message must name the missing file {name}\n{}",
        run.describe()
    );
}

#[test]
fn bad_memory_size_is_bad_input() {
    let kernel = guest_elf("hello");
    let run = run_stratum(
        [
            "run".as_ref(),
            "--kernel".as_ref(),
            kernel.as_os_str(),
            "--memory".as_ref(),
            "12Q".as_ref(),
            "--timeout".as_ref(),
            "10".as_ref(),
        ],
        CLI_TIMEOUT + HARD_TIMEOUT_GRACE,
    );
    assert_status(&run, status::BAD_INPUT, "--memory 12Q");
    assert!(
        run.console.contains("12Q"),
        "the message must quote the bad size\n{}",
        run.describe()
    );
}

/// The hypervisor's own fault path: a deliberate EL2 data abort (requested by
/// the host tool, never by a guest) must end in the epitaph and exit 1.
fn check_el2_fault_epitaph(gic: u8, cpu: &str) {
    let run = run_guest(
        "hello",
        &GuestOpts {
            gic,
            cpu,
            timeout: DEFAULT_TIMEOUT,
            extra_args: &["--selftest-el2-fault"],
            ..GuestOpts::default()
        },
    );
    assert_status(&run, status::HYPERVISOR_FAILURE, "EL2 fault self-test");
    assert_in_order(
        &run,
        &[
            "self-test: taking a deliberate EL2 data abort",
            "PANIC on CPU 0: synchronous exception taken at EL2",
            "FAR_EL2=0x0000008000000000",
        ],
    );
    // The epitaph's ESR must be a data abort taken at EL2 (EC 0x25).
    let esr = run
        .console
        .split("ESR_EL2=0x")
        .nth(1)
        .and_then(|rest| u64::from_str_radix(rest.get(..16)?, 16).ok());
    assert_eq!(
        esr.map(|e| (e >> 26) & 0x3f),
        Some(0x25),
        "epitaph ESR_EL2 must carry EC 0x25\n{}",
        run.describe()
    );
    assert!(
        lines_containing(&run.console, "Hello from a Stratum guest").is_empty(),
        "the guest must never run after the hypervisor died\n{}",
        run.describe()
    );
}

#[test]
fn el2_fault_epitaph_gic3() {
    check_el2_fault_epitaph(3, "cortex-a57");
}

#[test]
fn el2_fault_epitaph_gic2_max() {
    check_el2_fault_epitaph(2, "max");
}

/// Writes a one-VM system config running the `hello` guest.
fn hello_config(tag: &str, gic: u8) -> PathBuf {
    let kernel = guest_elf("hello");
    let path =
        std::env::temp_dir().join(format!("stratum-systest-{tag}-{}.toml", std::process::id()));
    let text = format!(
        "# written by tests/tests/system.rs\n[machine]\ngic = {gic}\ncpu = \"cortex-a57\"\n\n\
         [[vm]]\nname = \"cfg-hello\"\nkernel = {kernel:?}\ncmdline = \"marker={tag}\"\n\
         cpus = 1\nmemory = \"32M\"\n"
    );
    std::fs::write(&path, text).expect("write a temporary config");
    path
}

fn check_config_run(gic: u8) {
    let tag = format!("config-gic{gic}");
    let config = hello_config(&tag, gic);
    let check = run_stratum(
        ["check".as_ref(), config.as_os_str()],
        CLI_TIMEOUT + HARD_TIMEOUT_GRACE,
    );
    assert_status(&check, status::OK, "stratum check on a valid config");
    let run = run_stratum(
        [
            "run".as_ref(),
            config.as_os_str(),
            "--timeout".as_ref(),
            "60".as_ref(),
        ],
        DEFAULT_TIMEOUT + HARD_TIMEOUT_GRACE,
    );
    let _ = std::fs::remove_file(&config);
    assert_passed(&run, "hello");
    assert_in_order(
        &run,
        &[
            &format!("GICv{gic}"),
            "vm0 'cfg-hello': 1 vCPU, 32 MiB",
            "memory: base 0x40000000 size 0x2000000 (32 MiB)",
            &format!("bootargs: \"marker={tag}\""),
        ],
    );
}

#[test]
fn config_file_run_gic2() {
    check_config_run(2);
}

#[test]
fn config_file_run_gic3() {
    check_config_run(3);
}

#[test]
fn config_with_unknown_key_is_bad_input_with_location() {
    let path = std::env::temp_dir().join(format!(
        "stratum-systest-badkey-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        "[[vm]]\nname = \"x\"\nkernel = \"k\"\nmemroy = \"64M\"\n",
    )
    .expect("write a temporary config");
    let run = run_stratum(
        ["check".as_ref(), path.as_os_str()],
        CLI_TIMEOUT + HARD_TIMEOUT_GRACE,
    );
    let _ = std::fs::remove_file(&path);
    assert_status(&run, status::BAD_INPUT, "unknown config key");
    let file = path.file_name().expect("file name").to_string_lossy();
    assert!(
        run.console.contains(&format!("{file}:4:")) && run.console.contains("memroy"),
        "the error must name file:line and the key\n{}",
        run.describe()
    );
}

/// Boots `kernel` (any format) on GICv3 and checks how the hypervisor loaded it.
fn check_kernel_format(kernel: &std::path::Path, kind: &str) {
    let run = run_stratum(
        [
            "run".as_ref(),
            "--kernel".as_ref(),
            kernel.as_os_str(),
            "--timeout".as_ref(),
            "60".as_ref(),
        ],
        DEFAULT_TIMEOUT + HARD_TIMEOUT_GRACE,
    );
    assert_passed(&run, "hello");
    assert_in_order(
        &run,
        &[
            &format!("kernel ({kind}) at 0x40080000, entry 0x40080000"),
            "Hello from a Stratum guest!",
        ],
    );
}

#[test]
fn kernel_format_elf() {
    check_kernel_format(&guest_elf("hello"), "ELF");
}

#[test]
fn kernel_format_arm64_image() {
    // xtask flattens the hello ELF, whose first bytes are an Image header.
    check_kernel_format(&guest_elf("hello.img"), "arm64 Image");
}

#[test]
fn kernel_format_raw_binary() {
    // The same bytes without the Image magic: loaded as a raw binary at
    // RAM + 0x80000, where the guest is linked.
    let mut bytes = std::fs::read(guest_elf("hello.img")).expect("read hello.img");
    bytes[0x38..0x3c].fill(0);
    let raw = std::env::temp_dir().join(format!("stratum-hello-{}.raw", std::process::id()));
    std::fs::write(&raw, bytes).expect("write the raw binary");
    check_kernel_format(&raw, "raw binary");
    let _ = std::fs::remove_file(&raw);
}

#[test]
fn more_vms_than_this_version_runs_are_refused_before_boot() {
    let kernel = guest_elf("hello");
    let path = std::env::temp_dir().join(format!(
        "stratum-systest-nine-vms-{}.toml",
        std::process::id()
    ));
    let vm = |i: usize| {
        format!(
            "[[vm]]\nname = \"v{i}\"\nkernel = {kernel:?}\nmemory = \"32M\"\nplacement = \"shared\"\n"
        )
    };
    std::fs::write(&path, (0..9).map(vm).collect::<String>()).expect("write a temporary config");
    let run = run_stratum(
        [
            "run".as_ref(),
            path.as_os_str(),
            "--timeout".as_ref(),
            "10".as_ref(),
        ],
        CLI_TIMEOUT + HARD_TIMEOUT_GRACE,
    );
    let _ = std::fs::remove_file(&path);
    assert_status(&run, status::BAD_INPUT, "nine VMs");
    assert!(
        run.console
            .contains("vm: 9 VMs: this version of Stratum runs at most 8 VMs at a time")
            && !run.console.contains("[stratum] Stratum"),
        "refused by the tool, before the hypervisor boots\n{}",
        run.describe()
    );
}

/// Stage 2 maps guest RAM with the largest blocks alignment allows: a 1 GiB
/// VM with one 1 GiB block (the tool leaves room for a 1 GiB-aligned
/// carve-out), a 128 MiB VM with 2 MiB blocks and no 4 KiB pages.
fn check_block_mapping(memory: &str, expect: &str) {
    let run = run_guest(
        "hello",
        &GuestOpts {
            gic: 3,
            cpu: "cortex-a57",
            timeout: DEFAULT_TIMEOUT,
            extra_args: &["--memory", memory],
            ..GuestOpts::default()
        },
    );
    assert_passed(&run, "hello");
    assert_in_order(&run, &[expect, "Hello from a Stratum guest!"]);
}

#[test]
fn stage2_maps_1g_vm_with_one_1g_block() {
    check_block_mapping(
        "1G",
        "vm0 stage 2: 1 x 1 GiB + 0 x 2 MiB blocks + 0 x 4 KiB pages",
    );
}

#[test]
fn stage2_maps_128m_vm_with_2m_blocks() {
    check_block_mapping(
        "128M",
        "vm0 stage 2: 0 x 1 GiB + 64 x 2 MiB blocks + 0 x 4 KiB pages",
    );
}

/// The `STRATUM-TEST` markers of a config's run, found in each VM's own
/// stream when the console is tagged (several VMs): a VM's line that
/// another writer interrupted continues on a `name + ` line, so a marker
/// can be split over several console lines.
fn config_markers(console: &str) -> Vec<(String, bool)> {
    let names: Vec<&str> = lines_containing(console, "[stratum] vm")
        .into_iter()
        .filter_map(|l| {
            let rest = l.split_once("[stratum] vm")?.1;
            let (index, rest) = rest.split_once(' ')?;
            index.parse::<usize>().ok()?;
            let name = rest.strip_prefix('\'')?.split_once("': ")?.0;
            Some(name)
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if names.len() < 2 {
        return markers(console).iter().map(verdict_of).collect();
    }
    let split = split_by_tag(console, &names).expect("a well-formed tagged console");
    names
        .iter()
        .flat_map(|n| split.markers(n).iter().map(verdict_of).collect::<Vec<_>>())
        .collect()
}

/// A marker as (guest, passed).
fn verdict_of(m: &stratum_systests::Marker<'_>) -> (String, bool) {
    (
        m.guest.to_string(),
        m.verdict == stratum_systests::Verdict::Pass,
    )
}

/// Every example in `configs/` is checked and booted (they name guests that
/// `cargo xtask build` produces in the default target directory).
#[test]
fn example_configs_check_and_run() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/ exists") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        seen += 1;
        let check = run_stratum(
            ["check".as_ref(), path.as_os_str()],
            CLI_TIMEOUT + HARD_TIMEOUT_GRACE,
        );
        assert_status(
            &check,
            status::OK,
            &format!("stratum check {}", path.display()),
        );
        // `uboot.toml` runs U-Boot, which waits at its prompt: it is told
        // to power off when its autoboot countdown shows (tests/multivm.rs
        // drives it further).
        let script: &[(&str, &str)] = if path.file_name().is_some_and(|n| n == "uboot.toml") {
            &[("Hit any key to stop autoboot", "\rpoweroff\r")]
        } else {
            &[]
        };
        let mut cmd = std::process::Command::new(stratum_systests::stratum_bin());
        cmd.arg("run").arg(&path).args(["--timeout", "60"]);
        let run = stratum_systests::run_command_with_script(
            cmd,
            DEFAULT_TIMEOUT + HARD_TIMEOUT_GRACE,
            script,
        );
        // `crash.toml` crashes one VM on purpose (tests/multivm.rs checks
        // the details): the run then ends with "a VM crashed".
        let want = if path.file_name().is_some_and(|n| n == "crash.toml") {
            status::VM_CRASHED
        } else {
            status::OK
        };
        assert_status(&run, want, &format!("stratum run {}", path.display()));
        let verdicts = config_markers(&run.console);
        assert!(
            !verdicts.is_empty() && verdicts.iter().all(|(_, passed)| *passed),
            "{}: every guest must report PASS\n{}",
            path.display(),
            run.describe()
        );
    }
    assert!(seen > 0, "no example configs in {}", dir.display());
}
