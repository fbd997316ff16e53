//! Linux system tests (tier 3): the stock Debian arm64 kernel with Stratum's
//! busybox initramfs (`stratum fetch debian`), with 1, 2 and 4 vCPUs, on
//! GICv2 and GICv3, under the real hypervisor on QEMU.
//!
//! `cargo xtask test` fetches the guest into the cache and runs these with
//! `STRATUM_LINUX_KERNEL` and `STRATUM_LINUX_INITRD` set (plus `STRATUM_BIN`
//! and `STRATUM_HYPERVISOR`); without them every test fails saying so.
//!
//! The boot tests append `stratum.test=poweroff marker=<unique>`: the init
//! then prints `STRATUM-LINUX: up <n> cpus`, `/proc/cmdline` and
//! `/proc/interrupts` twice, every CPU kept busy for a moment in between
//! (the arch timer must tick on every CPU in between; with several CPUs
//! every CPU must also have taken IPIs),
//! and powers off (PSCI `SYSTEM_OFF` → exit 0). `stratum.test=hotplug` first
//! takes CPU 1 offline and back (PSCI `CPU_OFF`/`CPU_ON`). The interactive
//! test waits for the shell prompt and types a command line.
//! `stratum.test=workload` runs the workload program of `stratum bench`
//! (`tools/workload`), here with a thousandth of its iterations: every test
//! must report one line that parses (`stratum_abi::workload`).
//! Each run has a hard timeout of 120 s and prints its wall time (see it with
//! `--nocapture`).
//!
//! The virtio tests run Debian VMs from a config (`debian = true`, `exec`):
//! two on one network, and one talking over vsock to `vsockecho`
//! bare-metal guests (`stratum-workload`'s vsock modes at the Linux end);
//! one exchanging UDP datagrams and pings over virtio-net with a
//! `netecho` bare-metal guest (`stratum-workload udp-echo` at the Linux
//! end);
//! two time-sharing a CPU stream TCP with `stratum-workload`'s TCP modes,
//! the ends of `stratum bench`'s network rows.
//!
//! One test fetches the guest itself, into a fresh cache, with an apt
//! configuration that has no sources at all (`stratum fetch debian` must
//! bring its own): it downloads the pinned kernel (~60 MB) once per run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stratum_abi::workload::{
    DONE, ENV_PREFIX, FAIL_PREFIX, NET_PREFIX, NetTransfer, SAMPLE_PREFIX, Sample, TESTS,
};

use stratum_systests::{
    GuestOpts, Run, assert_in_order, assert_status, console_lines, linux_initrd, linux_kernel,
    run_kernel, run_stratum, status,
};

/// The harness kills a run after this long.
const HARD_TIMEOUT: Duration = Duration::from_secs(120);
/// The CLI's own `--timeout`, a little earlier so its verdict shows.
const CLI_TIMEOUT: Duration = Duration::from_secs(110);
/// The interactive shell's prompt (`PS1` in the default init).
const PROMPT: &str = "stratum# ";
/// What the interactive test types at the prompt.
const SHELL_INPUT: &str = "echo $((6*7)); poweroff -f\n";

/// A `marker=` value no other run prints.
fn unique_marker(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("stratum-{test}-{}-{nanos}", std::process::id())
}

/// Boots the Linux guest with `append` after `console=ttyAMA0`; prints and
/// returns the wall time.
fn boot(
    test: &str,
    gic: u8,
    cpu: &str,
    vcpus: u32,
    append: &str,
    input: Option<(&str, &str)>,
) -> Run {
    let kernel = linux_kernel();
    let initrd = linux_initrd();
    let initrd = initrd.to_str().expect("UTF-8 initramfs path");
    let append = format!("console=ttyAMA0 {}", append.trim());
    let vcpus = vcpus.to_string();
    let extra = ["--initrd", initrd, "--append", &append, "--cpus", &vcpus];
    let opts = GuestOpts {
        gic,
        cpu,
        timeout: CLI_TIMEOUT,
        memory: Some("512M"),
        extra_args: &extra,
        input,
    };
    let start = Instant::now();
    let run = run_kernel(&kernel, &opts, HARD_TIMEOUT);
    println!(
        "{test}: {:.1} s wall, exit status {:?}",
        start.elapsed().as_secs_f64(),
        run.status
    );
    run
}

/// The per-CPU counts of the first `/proc/interrupts` line containing
/// `what` after the console line `after` (one number per CPU, after the
/// `NN:` label).
fn interrupt_counts(run: &Run, after: &str, what: &str, cpus: usize) -> Option<Vec<u64>> {
    let line = console_lines(&run.console)
        .skip_while(|l| !l.contains(after))
        .find(|l| l.contains(what))?;
    let counts: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(cpus)
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    (counts.len() == cpus).then_some(counts)
}

/// Boots to userspace in power-off mode (with `extra` on the command line)
/// and checks the report.
fn check_poweroff_boot(test: &str, gic: u8, cpu: &str, vcpus: u32, extra: &str) -> Run {
    let marker = unique_marker(test);
    let mode = if extra.contains("stratum.test=") {
        ""
    } else {
        "stratum.test=poweroff"
    };
    let run = boot(
        test,
        gic,
        cpu,
        vcpus,
        &format!("{extra} {mode} marker={marker}"),
        None,
    );
    // Pinned vCPUs: the idle kernel has always IPIed every one of them by
    // the second snapshot.
    check_poweroff_report(test, &run, gic, vcpus, &marker, vcpus as usize);
    run
}

/// Checks a power-off boot's report: userspace with `vcpus` CPUs, the
/// marker, the timer ticking on every CPU, rescheduling IPIs taken on at
/// least `min_cpus_with_ipis` of them, no panic, exit 0.
fn check_poweroff_report(
    test: &str,
    run: &Run,
    gic: u8,
    vcpus: u32,
    marker: &str,
    min_cpus_with_ipis: usize,
) {
    assert_status(run, status::OK, test);
    assert_in_order(
        run,
        &[
            "Linux version ",
            "Run /init as init process",
            &format!("STRATUM-LINUX: up {vcpus} cpus"),
            &format!("marker={marker}"),
            "STRATUM-LINUX: interrupts (1)",
            "arch_timer",
            "STRATUM-LINUX: interrupts (2)",
            "arch_timer",
            "STRATUM-LINUX: powering off",
        ],
    );
    // The virtio drivers from the kernel's package loaded, each of them.
    let modules = console_lines(&run.console)
        .find_map(|l| l.split("STRATUM-LINUX: modules").nth(1).map(str::to_owned))
        .unwrap_or_default();
    let loaded: Vec<&str> = modules.split_whitespace().collect();
    for want in &[
        "virtio_mmio",
        "virtio_net",
        "virtio_console",
        "vmw_vsock_virtio_transport",
        "virtio_blk",
    ] {
        assert!(
            loaded.contains(want),
            "{test}: module {want} should have loaded (loaded: {loaded:?})\n{}",
            run.describe()
        );
    }
    assert!(
        !run.console.contains("STRATUM-LINUX: cannot load module"),
        "{test}: a module failed to load\n{}",
        run.describe()
    );
    let gic_name = if gic == 3 { "GICv3" } else { "GIC-0" };
    assert!(
        console_lines(&run.console).any(|l| l.contains("arch_timer") && l.contains(gic_name)),
        "{test}: the arch timer should sit on the {gic_name} irqchip\n{}",
        run.describe()
    );
    let n = vcpus as usize;
    let before = interrupt_counts(run, "interrupts (1)", "arch_timer", n);
    let after = interrupt_counts(run, "interrupts (2)", "arch_timer", n);
    assert!(
        matches!((&before, &after), (Some(b), Some(a)) if b.iter().zip(a).all(|(b, a)| a > b && *b > 0)),
        "{test}: the arch timer must tick on every CPU ({before:?} then {after:?})\n{}",
        run.describe()
    );
    if n > 1 {
        let ipis = interrupt_counts(run, "interrupts (2)", "IPI0", n);
        let with_ipis = ipis
            .as_ref()
            .map_or(0, |c| c.iter().filter(|&&x| x > 0).count());
        assert!(
            with_ipis >= min_cpus_with_ipis.min(n),
            "{test}: at least {min_cpus_with_ipis} CPUs must have taken rescheduling IPIs \
             ({ipis:?})\n{}",
            run.describe()
        );
    }
    assert!(
        !run.console.contains("Kernel panic"),
        "{test}: kernel panic\n{}",
        run.describe()
    );
}

/// Time-sharing with a real OS: 4 vCPUs of `-cpu max` (SVE and SME hidden,
/// PAuth keys switched) round-robin on one physical CPU, 2 ms slices.
#[test]
fn linux_4_vcpus_time_shared_on_one_cpu() {
    let test = "linux_4_shared_on_1";
    let marker = unique_marker(test);
    let kernel = linux_kernel();
    let initrd = linux_initrd();
    let dir = std::env::temp_dir().join(format!("{marker}.d"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("shared.toml");
    std::fs::write(
        &config,
        format!(
            "[machine]\ncpus = 1\ncpu = \"max\"\ngic = 3\n\n\
             [system]\nslice = \"2ms\"\n\n\
             [[vm]]\nname = \"linux\"\nkernel = {kernel:?}\ninitrd = {initrd:?}\n\
             cmdline = \"console=ttyAMA0 stratum.test=poweroff marker={marker}\"\n\
             cpus = 4\nmemory = \"512M\"\nplacement = \"shared\"\npcpus = [0]\n"
        ),
    )
    .expect("write the config");
    let start = Instant::now();
    let run = run_stratum(
        [
            "run".as_ref(),
            config.as_os_str(),
            "--timeout".as_ref(),
            CLI_TIMEOUT.as_secs().to_string().as_ref(),
        ],
        HARD_TIMEOUT,
    );
    println!(
        "{test}: {:.1} s wall, exit status {:?}",
        start.elapsed().as_secs_f64(),
        run.status
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Were SVE advertised, its first use would trap (SVE is not switched
    // on a shared CPU) and the kernel would die of an undefined instruction.
    // Four vCPUs time-sharing one CPU: the kernel's scheduler may leave one
    // without a rescheduling IPI within the report's window (seen once in
    // CI-like runs: 0, 4, 39, 37); IPI delivery is proven by the others.
    check_poweroff_report(test, &run, 3, 4, &marker, 3);
    assert!(
        !run.console.contains("undefined instruction injected"),
        "{test}: no undefined instruction may reach the guest\n{}",
        run.describe()
    );
}

#[test]
fn linux_1_vcpu_gicv3() {
    check_poweroff_boot("linux_1_gicv3", 3, "cortex-a57", 1, "");
}

#[test]
fn linux_1_vcpu_gicv2() {
    check_poweroff_boot("linux_1_gicv2", 2, "cortex-a57", 1, "");
}

#[test]
fn linux_2_vcpus_gicv3() {
    check_poweroff_boot("linux_2_gicv3", 3, "cortex-a57", 2, "");
}

#[test]
fn linux_2_vcpus_gicv2() {
    check_poweroff_boot("linux_2_gicv2", 2, "cortex-a57", 2, "");
}

/// `-cpu max` with every feature its ID registers advertise (SVE, SME,
/// pointer authentication), which guests own natively, and 4 vCPUs.
#[test]
fn linux_4_vcpus_cpu_max_gicv3() {
    check_poweroff_boot("linux_4_max_gicv3", 3, "max", 4, "");
}

/// CPU hotplug: CPU 1 offline (PSCI `CPU_OFF`) and back (`CPU_ON`); then
/// both CPUs still tick.
fn check_hotplug(test: &str, gic: u8) {
    let run = check_poweroff_boot(test, gic, "cortex-a57", 2, "stratum.test=hotplug");
    assert_in_order(
        &run,
        &[
            "psci: CPU1 killed",
            "STRATUM-LINUX: online after cpu1 off: 0",
            "CPU1: Booted secondary processor",
            "STRATUM-LINUX: online after cpu1 on: 0-1",
        ],
    );
}

#[test]
fn linux_cpu_hotplug_gicv3() {
    check_hotplug("linux_hotplug_gicv3", 3);
}

#[test]
fn linux_cpu_hotplug_gicv2() {
    check_hotplug("linux_hotplug_gicv2", 2);
}

#[test]
fn linux_interactive_shell() {
    let marker = unique_marker("linux_shell");
    let run = boot(
        "linux_shell",
        3,
        "cortex-a57",
        1,
        &format!("marker={marker}"),
        Some((PROMPT, SHELL_INPUT)),
    );
    assert_status(&run, status::OK, "linux_shell");
    assert_in_order(
        &run,
        &[
            "STRATUM-LINUX: up 1 cpus",
            &format!("marker={marker}"),
            PROMPT,
        ],
    );
    assert!(
        console_lines(&run.console).any(|l| l.contains(PROMPT) && l.contains("echo $((6*7))")),
        "linux_shell: the typed command was not echoed after the prompt\n{}",
        run.describe()
    );
    assert!(
        console_lines(&run.console).any(|l| l.trim() == "42"),
        "linux_shell: the shell did not print 42\n{}",
        run.describe()
    );
    assert!(
        !run.console.contains("STRATUM-LINUX: powering off"),
        "linux_shell: without stratum.test=poweroff the init must start a shell\n{}",
        run.describe()
    );
}

/// `reboot` in the guest (PSCI `SYSTEM_RESET`) restarts the VM from its
/// pristine image, and the second boot also reaches userspace: the init
/// reads the boot count the hypervisor puts in the DT, reboots on the first
/// boot and powers off on the second.
#[test]
fn linux_reboot_reaches_userspace_twice() {
    let run = check_poweroff_boot("linux_reboot", 3, "cortex-a57", 2, "stratum.test=reboot");
    assert_in_order(
        &run,
        &[
            "STRATUM-LINUX: boot 1",
            "STRATUM-LINUX: rebooting",
            "reset requested: reloading its image",
            "Linux version ",
            "STRATUM-LINUX: up 2 cpus",
            "STRATUM-LINUX: boot 2",
            "STRATUM-LINUX: powering off",
        ],
    );
    assert!(
        run.console.contains("stopped (PowerOff) after 2 boot(s)"),
        "linux_reboot: the hypervisor must report two boots\n{}",
        run.describe()
    );
}

/// The demo's config (`configs/demo.toml.in`) with the cached Debian
/// kernel and initramfs and the harness's guests filled in.
fn demo_config_text() -> String {
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml.in"),
    )
    .expect("configs/demo.toml.in");
    let guests = stratum_systests::guest_elf("ticker")
        .parent()
        .expect("the guests directory")
        .to_path_buf();
    template
        .replace("@KERNEL@", linux_kernel().to_str().expect("UTF-8"))
        .replace("@INITRD@", linux_initrd().to_str().expect("UTF-8"))
        .replace("@GUESTS@", guests.to_str().expect("UTF-8"))
}

/// The default demo (`cargo xtask run`, configs/demo.toml.in): Debian with
/// 2 vCPUs pinned to CPUs 0-1 and an interactive shell, next to two
/// bare-metal tickers time-sharing CPU 2. Types a command line at the
/// shell; both tickers must keep ticking, each line tagged with its VM.
#[test]
fn linux_demo_system() {
    check_demo("linux_demo", &demo_config_text(), &[], &["3 CPUs online"]);
}

/// The demo on a GICv2 `virt` (`--gic 2`): the same config and images.
#[test]
fn linux_demo_system_gic2() {
    check_demo(
        "linux_demo_gic2",
        &demo_config_text(),
        &["--gic", "2"],
        &["GICv2, console PL011", "3 CPUs online"],
    );
}

/// The demo on the Xilinx ZCU102 model (`--board zcu102`: 4 Cortex-A53, a
/// GIC-400, the Cadence UART, RAM at 0, Debian's board DT), the same guest
/// images and config, with the tocker pinned to a fourth CPU of its own.
#[test]
fn linux_demo_system_on_zcu102_with_4_cpus() {
    let text = demo_config_text().replace("cpus = 3", "cpus = 4");
    let (head, tail) = text
        .rsplit_once("placement = \"shared\"\npcpus = [2]")
        .expect("the tocker");
    let text = format!("{head}placement = \"pinned\"\npcpus = [3]{tail}");
    check_demo(
        "linux_demo_zcu102_4",
        &text,
        &["--board", "zcu102"],
        &[
            "image at 0x200000",
            "4 CPU(s) (Cortex-A53",
            "GICv2, console Cadence UART at 0xff000000",
            "4 CPUs online",
        ],
    );
}

/// The demo on the ZCU102 model with one physical CPU: Linux (with one
/// vCPU, as a VM's vCPUs need CPUs of their own) and both tickers
/// time-share CPU 0.
#[test]
fn linux_demo_system_on_zcu102_with_1_cpu() {
    let text = demo_config_text()
        .replace("cpus = 3", "cpus = 1")
        .replace("cpus = 2", "cpus = 1")
        .replace(
            "placement = \"pinned\"\npcpus = [0, 1]",
            "placement = \"shared\"\npcpus = [0]",
        )
        .replace("pcpus = [2]", "pcpus = [0]");
    check_demo(
        "linux_demo_zcu102_1",
        &text,
        &["--board", "zcu102"],
        &["image at 0x200000", "Cortex-A53", "console Cadence UART"],
    );
}

/// Runs the demo config `text` with `args`, types a command at the shell,
/// and checks that Linux ran it on all its vCPUs, both tickers ticked, Linux's
/// power-off ended the system, and the hypervisor's messages hold each of
/// `banner`.
fn check_demo(test: &str, text: &str, args: &[&str], banner: &[&str]) {
    let config = std::env::temp_dir().join(format!("{}.toml", unique_marker(test)));
    std::fs::write(&config, text).expect("write the demo config");
    let start = Instant::now();
    // The shell's prompt comes a few seconds into the boot: by then the
    // 2 s ticker has ticked; typing then powers Linux off, which ends the
    // demo (`stop = "any"`).
    let run = stratum_systests::run_config(
        &config,
        CLI_TIMEOUT,
        args,
        Some((PROMPT, "sleep 5; echo $((6*7)); poweroff -f\n")),
    );
    println!(
        "{test}: {:.1} s wall, exit status {:?}",
        start.elapsed().as_secs_f64(),
        run.status
    );
    let _ = std::fs::remove_file(&config);
    assert_status(&run, status::OK, test);
    let vms = stratum_systests::split_by_tag(&run.console, &["linux", "ticker", "tocker"])
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", run.describe()));
    for needle in banner {
        assert!(
            vms.untagged.iter().any(|(_, l)| l.contains(needle)),
            "{test}: no hypervisor line with `{needle}`\n{}",
            run.describe()
        );
    }
    let vcpus = if text.contains("cpus = 2") { 2 } else { 1 };
    let up = format!("STRATUM-LINUX: up {vcpus} cpus");
    assert!(
        vms.find("linux", &up).is_some()
            && vms.lines("linux").iter().any(|l| l.text.trim() == "42"),
        "{test}: Linux runs the typed command\n{}",
        run.describe()
    );
    let ticks = |vm: &str| {
        vms.lines(vm)
            .iter()
            .filter(|l| l.text.starts_with("tick "))
            .count()
    };
    // At least 5 s of shell (the `sleep 5`): the 2 s ticker ticks at least
    // twice, and the 5 s one at least once, while Linux runs beside them.
    assert!(
        ticks("ticker") >= 2 && ticks("tocker") >= 1,
        "{test}: both tickers tick ({} and {})\n{}",
        ticks("ticker"),
        ticks("tocker"),
        run.describe()
    );
    assert!(
        run.console
            .contains("a VM stopped and the system stops with the first"),
        "{test}: Linux's power-off ends the demo\n{}",
        run.describe()
    );
}

/// The workload program of `stratum bench` (`stratum.test=workload`) at a
/// thousandth of its iterations, in two rounds: it reports every test once
/// per round, in a line that parses, then the init powers off. No figure
/// is checked.
#[test]
fn linux_workload_reports_every_test() {
    let test = "linux_workload";
    let run = boot(
        test,
        3,
        "cortex-a57",
        1,
        "stratum.test=workload workload.divisor=1000 workload.rounds=2",
        None,
    );
    assert_status(&run, status::OK, test);
    assert_in_order(
        &run,
        &[
            "Run /init as init process",
            ENV_PREFIX,
            DONE,
            "STRATUM-LINUX: workload exit 0",
            "STRATUM-LINUX: powering off",
        ],
    );
    let lines: Vec<&str> = console_lines(&run.console).map(str::trim).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(ENV_PREFIX) && l.contains(" divisor=1000 rounds=2 ")),
        "{test}: the program read the divisor and the rounds from the command line\n{}",
        run.describe()
    );
    workload_ticks(test, &run, &lines, 2);
}

/// `stratum run --debian --exec CMD`: the command runs after the modules
/// are loaded, its output streams, and its status becomes the run's.
#[test]
fn linux_exec_reports_the_command_status() {
    let test = "linux_exec_reports_the_command_status";
    let timeout = CLI_TIMEOUT.as_secs().to_string();
    let command = "grep -c '^virtio_net ' /proc/modules; echo exec-says-$((6*7)); exit 3";
    let start = Instant::now();
    let run = run_stratum(
        ["run", "--debian", "--timeout", &timeout, "--exec", command],
        HARD_TIMEOUT,
    );
    println!("{test}: {:.1} s wall", start.elapsed().as_secs_f64());
    assert_status(&run, status::EXEC_FAILED, test);
    assert_in_order(
        &run,
        &[
            "STRATUM-LINUX: modules virtio_mmio",
            "STRATUM-LINUX: exec start",
            "exec-says-42",
            "STRATUM-LINUX: exec exit 3",
            "exited with status 3",
            "a command given to run failed",
        ],
    );
    assert!(
        console_lines(&run.console).any(|l| l.trim() == "1"),
        "{test}: virtio_net should be loaded when the command runs\n{}",
        run.describe()
    );
}

/// SMCCC TRNG: the stock kernel probes `TRNG_VERSION` at boot and, given
/// 1.0, registers its `smccc_trng` platform device and seeds its entropy
/// pool from `TRNG_RND64`; the exit statistics show the calls.
#[test]
fn linux_uses_the_smccc_trng() {
    let test = "linux_uses_the_smccc_trng";
    let timeout = CLI_TIMEOUT.as_secs().to_string();
    let command = "test -e /sys/bus/platform/devices/smccc_trng && echo trng-device-present";
    let run = run_stratum(
        ["run", "--debian", "--timeout", &timeout, "--exec", command],
        HARD_TIMEOUT,
    );
    assert_status(&run, status::OK, test);
    assert_in_order(&run, &["trng-device-present", "STRATUM-LINUX: exec exit 0"]);
    let calls = console_lines(&run.console)
        .find(|l| l.contains("hvc TRNG_*"))
        .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .unwrap_or_else(|| {
            panic!(
                "{test}: no TRNG row in the exit statistics\n{}",
                run.describe()
            )
        });
    assert!(
        calls >= 2,
        "{test}: VERSION and RND64 at least, got {calls}"
    );
}

/// Two Debian VMs from a config (`debian = true`, `exec`), time-sharing
/// nothing: both commands run and the run exits 0 only when both did.
#[test]
fn linux_exec_in_a_config_with_two_debian_vms() {
    let test = "linux_exec_in_a_config_with_two_debian_vms";
    let text = "[[vm]]\nname = \"one\"\ndebian = true\nmemory = \"256M\"\nexec = \"echo one-$((2+2))\"\n\n\
                [[vm]]\nname = \"two\"\ndebian = true\nmemory = \"256M\"\nexec = \"echo two-$((3+3)); test -e /lib/modules/vsock.ko\"\n";
    let (run, vms) = run_config_text(test, text, &[], &["one", "two"]);
    for (vm, says) in [("one", "one-4"), ("two", "two-6")] {
        assert!(
            vms.find(vm, says).is_some(),
            "{test}: {vm} should print {says}\n{}",
            run.describe()
        );
        assert!(
            vms.find(vm, "STRATUM-LINUX: exec exit 0").is_some(),
            "{test}: {vm}'s command should exit 0\n{}",
            run.describe()
        );
    }
}

/// Runs the system `text` describes (written to a temporary config file)
/// with `extra` arguments, checks that it exits 0 and splits its console
/// by the VMs `names`.
fn run_config_text(
    test: &str,
    text: &str,
    extra: &[&str],
    names: &[&str],
) -> (stratum_systests::Run, stratum_systests::VmConsoles) {
    let config = std::env::temp_dir().join(format!("{}.toml", unique_marker(test)));
    std::fs::write(&config, text).expect("write the config");
    let start = Instant::now();
    let run = stratum_systests::run_config(&config, CLI_TIMEOUT, extra, None);
    println!("{test}: {:.1} s wall", start.elapsed().as_secs_f64());
    let _ = std::fs::remove_file(&config);
    assert_status(&run, status::OK, test);
    let vms = stratum_systests::split_by_tag(&run.console, names)
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", run.describe()));
    (run, vms)
}

/// Two Debian VMs on one `[[network]]`: the hypervisor's switch carries
/// their virtio-net frames. Each sets its address with `ip`, waits until
/// the other answers a ping (the two boot independently: a first ping
/// may find the other's address or NIC not up yet, which is not the
/// switch's doing), then pings it three times, all of which must be
/// answered; `one` serves 4 MiB of random bytes with busybox `httpd`, `two`
/// fetches them with `wget`, and both print the MD5 of their copy, which
/// must match; `two` then serves a flag file `one` waits for, so neither
/// stops while the other still needs it.
fn network_between_two_debian_vms(gic: &str) {
    let test = format!("linux_network_two_debian_vms_gic{gic}");
    let one = "ip link set eth0 up && ip addr add 10.0.0.1/24 dev eth0 && mkdir -p /www \
               && dd if=/dev/urandom of=/www/blob bs=1024 count=4096 2>/dev/null && md5sum /www/blob \
               && httpd -p 8080 -h /www && n=0; \
               until ping -c 1 -W 1 10.0.0.2 >/dev/null; do n=$((n+1)); [ $n -gt 60 ] && exit 8; done; \
               ping -c 3 -w 60 10.0.0.2 && n=0; \
               until wget -q -O /dev/null http://10.0.0.2:8081/done; do n=$((n+1)); [ $n -gt 120 ] && exit 9; sleep 1; done";
    let two = "ip link set eth0 up && ip addr add 10.0.0.2/24 dev eth0 && n=0; \
               until ping -c 1 -W 1 10.0.0.1 >/dev/null; do n=$((n+1)); [ $n -gt 60 ] && exit 8; done; \
               ping -c 3 -w 60 10.0.0.1 && n=0; \
               until wget -q -O /tmp/blob http://10.0.0.1:8080/blob; do n=$((n+1)); [ $n -gt 60 ] && exit 9; sleep 1; done; \
               md5sum /tmp/blob && mkdir -p /w && touch /w/done && httpd -p 8081 -h /w && sleep 5";
    let text = format!(
        "[[vm]]\nname = \"one\"\ndebian = true\nmemory = \"256M\"\nexec = {one:?}\n\n\
         [[vm]]\nname = \"two\"\ndebian = true\nmemory = \"256M\"\nexec = {two:?}\n\n\
         [[network]]\nname = \"lan\"\nvms = [\"one\", \"two\"]\n"
    );
    let (run, vms) = run_config_text(&test, &text, &["--gic", gic], &["one", "two"]);
    for vm in ["one", "two"] {
        assert!(
            vms.find(vm, "3 packets transmitted, 3 packets received")
                .is_some(),
            "{test}: {vm}'s three pings should all be answered\n{}",
            run.describe()
        );
        assert!(
            vms.find(vm, "STRATUM-LINUX: exec exit 0").is_some(),
            "{test}: {vm}'s command should exit 0\n{}",
            run.describe()
        );
    }
    let md5 = |vm: &str, file: &str| {
        vms.lines(vm)
            .iter()
            .find(|l| l.text.ends_with(file))
            .and_then(|l| l.text.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| panic!("{test}: {vm} printed no MD5 of {file}\n{}", run.describe()))
    };
    let (sent, got) = (md5("one", "/www/blob"), md5("two", "/tmp/blob"));
    assert_eq!(sent.len(), 32, "{test}: an MD5 in hex: {sent}");
    assert_eq!(
        sent,
        got,
        "{test}: the 4 MiB fetched over the network differ\n{}",
        run.describe()
    );
}

/// A hostile guest on the same network as two Debian VMs
/// (`virtiohostile`): its looping chain, out-of-RAM and 4 GiB buffers, and
/// notifies before `DRIVER_OK` or of a missing queue each get the spec's
/// answer without harming it, then it floods broadcast frames for 25 s
/// while the Debian VMs ping each other: the switch's storm control keeps
/// the flood out of their receive rings, and once each VM has reached its
/// peer (the two boot side by side, so a first ping may leave before the
/// peer has its address), every one of 5 pings is answered each way, and
/// everything stops cleanly.
fn hostile_guest_beside_two_debian_vms(gic: &str) {
    let test = format!("linux_hostile_ring_beside_a_network_gic{gic}");
    let hostile = stratum_systests::guest_elf("virtiohostile");
    // The two VMs boot side by side: a first ping may leave before the
    // peer has its address. Each waits for one answer (a try every two
    // seconds, for a minute at most), then the 5 that count.
    let ping = |me: &str, peer: &str| {
        format!(
            "ip link set eth0 up && ip addr add {me}/24 dev eth0 && n=0; \
             until ping -c 1 -w 2 {peer} > /dev/null; do n=$((n+1)); [ $n -ge 30 ] && break; done; \
             ping -c 5 -w 60 {peer} > /tmp/p; r=$?; cat /tmp/p; sleep 3; grep -q ' 5 packets received' /tmp/p"
        )
    };
    let text = format!(
        "[[vm]]\nname = \"hostile\"\nkernel = {:?}\nmemory = \"64M\"\ncmdline = \"hostile.seconds=25\"\n\n\
         [[vm]]\nname = \"one\"\ndebian = true\nmemory = \"256M\"\nexec = {:?}\n\n\
         [[vm]]\nname = \"two\"\ndebian = true\nmemory = \"256M\"\nexec = {:?}\n\n\
         [[network]]\nname = \"lan\"\nvms = [\"hostile\", \"one\", \"two\"]\n",
        hostile.display().to_string(),
        ping("10.0.0.1", "10.0.0.2"),
        ping("10.0.0.2", "10.0.0.1"),
    );
    let (run, vms) = run_config_text(&test, &text, &["--gic", gic], &["hostile", "one", "two"]);
    for check in [
        "check a looping chain sets DEVICE_NEEDS_RESET: ok",
        "check a buffer outside RAM sets DEVICE_NEEDS_RESET: ok",
        "check a 4 GiB buffer sets DEVICE_NEEDS_RESET: ok",
        "check a reset makes it usable again: ok",
        "check the flood went out: ok",
        "STRATUM-TEST PASS virtiohostile",
    ] {
        assert!(
            vms.find("hostile", check).is_some(),
            "{test}: the hostile guest should print {check:?}\n{}",
            run.describe()
        );
    }
    for vm in ["one", "two"] {
        assert!(
            vms.find(vm, "STRATUM-LINUX: exec exit 0").is_some(),
            "{test}: {vm} should still reach its peer during the flood\n{}",
            run.describe()
        );
    }
}

/// The soak: the demo system (Linux on two pinned CPUs, two tickers
/// time-sharing the third) with the `adversary` beside the tickers,
/// attacking and resetting itself until the machine's counter reaches 25 s;
/// its power-off then ends the demo (`stop = "any"`). Meanwhile the shell
/// runs a typed command. Nothing lost: every tick of both tickers in order
/// (at least 8 and 3), the command's output, and the same `MEM_INFO` at
/// every boot of the adversary, the last included.
#[test]
fn demo_system_under_the_adversary() {
    let test = "demo_system_under_the_adversary";
    let text = demo_config_text()
        + &format!(
            "\n[[vm]]\nname = \"adversary\"\nkernel = {:?}\ncpus = 2\nmemory = \"64M\"\n\
             cmdline = \"seed=25 boots=1000000 rounds=300 seconds=25\"\nplacement = \"shared\"\npcpus = [2]\n",
            stratum_systests::guest_elf("adversary")
                .display()
                .to_string()
        );
    let config = std::env::temp_dir().join(format!("{}.toml", unique_marker(test)));
    std::fs::write(&config, text).expect("write the config");
    let start = Instant::now();
    let run = stratum_systests::run_config(
        &config,
        CLI_TIMEOUT,
        &[],
        Some((PROMPT, "echo soak-$((6*7))\n")),
    );
    println!("{test}: {:.1} s wall", start.elapsed().as_secs_f64());
    let _ = std::fs::remove_file(&config);
    assert_status(&run, status::OK, test);
    let vms =
        stratum_systests::split_by_tag(&run.console, &["linux", "ticker", "tocker", "adversary"])
            .unwrap_or_else(|e| panic!("{test}: {e}\n{}", run.describe()));
    assert!(
        !run.console.contains("panic"),
        "{test}: the hypervisor panicked\n{}",
        run.describe()
    );
    assert!(
        vms.lines("linux")
            .iter()
            .any(|l| l.text.trim() == "soak-42"),
        "{test}: the shell ran the typed command\n{}",
        run.describe()
    );
    for (vm, least) in [("ticker", 8), ("tocker", 3)] {
        let ticks = vms.ticks(vm);
        assert!(
            ticks.len() >= least && ticks == (1..=ticks.len() as u64).collect::<Vec<_>>(),
            "{test}: {vm} ticks in order, at least {least}: {ticks:?}\n{}",
            run.describe()
        );
    }
    let adversary: Vec<&str> = vms
        .lines("adversary")
        .iter()
        .map(|l| l.text.as_str())
        .collect();
    assert!(
        adversary.contains(&"STRATUM-TEST PASS adversary"),
        "{test}: the adversary's checks held to the end\n{}",
        run.describe()
    );
    let mem = stratum_systests::mem_info_by_boot(adversary.iter().copied(), "adversary: boot ");
    assert!(
        mem.len() >= 2,
        "{test}: the adversary reset\n{}",
        run.describe()
    );
    stratum_systests::assert_mem_info_unchanged(test, &run, &mem, 0);
    let messages =
        stratum_systests::hypervisor_messages(vms.untagged.iter().map(|(_, l)| l.as_str()));
    let resets = messages
        .iter()
        .filter(|m| m.contains("'adversary': reset requested"))
        .count();
    println!(
        "{test}: adversary boots {}, {} hypervisor messages ({resets} resets)",
        mem.len(),
        messages.len()
    );
    assert!(
        messages.len() <= 60 + resets,
        "{test}: {} hypervisor messages\n{}",
        messages.len(),
        run.describe()
    );
}

/// The Linux workload program's samples in `lines` (a VM's console),
/// checked: no test failed, and every test reports once per round
/// (`rounds`), with ticks, in a line that parses. Returns the counter
/// ticks all tests took together.
fn workload_ticks(test: &str, run: &Run, lines: &[&str], rounds: usize) -> u64 {
    assert!(
        !lines.iter().any(|l| l.starts_with(FAIL_PREFIX)),
        "{test}: a workload test failed\n{}",
        run.describe()
    );
    let samples: Vec<Sample<'_>> = lines
        .iter()
        .filter(|l| l.starts_with(SAMPLE_PREFIX))
        .map(|l| {
            Sample::parse(l).unwrap_or_else(|e| panic!("{test}: `{l}`: {e}\n{}", run.describe()))
        })
        .collect();
    for t in TESTS {
        let found: Vec<&Sample<'_>> = samples.iter().filter(|s| s.test == t.id).collect();
        assert!(
            found.len() == rounds && found.iter().all(|s| s.ticks > 0),
            "{test}: {} must report {rounds} time(s), with ticks ({found:?})\n{}",
            t.id,
            run.describe()
        );
    }
    assert_eq!(
        samples.len(),
        TESTS.len() * rounds,
        "{test}: one line per test and round"
    );
    samples.iter().map(|s| s.ticks).sum()
}

/// The workload program's command for a Debian VM's `exec`.
const WORKLOAD_EXEC: &str = "stratum-workload workload.divisor=100";

/// The workload's ticks with the Debian VM alone on one CPU: the baseline
/// of the adversarial runs' slowdown (measured once per test binary).
fn workload_alone() -> u64 {
    static ALONE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ALONE.get_or_init(|| {
        let test = "linux_workload_alone";
        let text = format!(
            "[machine]\ncpus = 1\n\n\
             [[vm]]\nname = \"linux\"\ndebian = true\nmemory = \"256M\"\nexec = {WORKLOAD_EXEC:?}\n"
        );
        let config = std::env::temp_dir().join(format!("{}.toml", unique_marker(test)));
        std::fs::write(&config, text).expect("write the config");
        let run = stratum_systests::run_config(&config, CLI_TIMEOUT, &[], None);
        let _ = std::fs::remove_file(&config);
        assert_status(&run, status::OK, test);
        let lines: Vec<&str> = console_lines(&run.console).map(str::trim).collect();
        let ticks = workload_ticks(test, &run, &lines, 1);
        println!("{test}: {ticks} ticks");
        ticks
    })
}

/// A Debian VM runs the workload program while the `adversary` (two vCPUs,
/// resetting itself every 100 attack rounds, for ever) attacks every
/// interface: on its own CPU (`shared` false: Linux pinned to CPU 0, the
/// adversary on CPU 1) or on the same one (both time-share CPU 0). The
/// system stops when Linux powers off (`stop = "any"`). Pass: exit 0, no
/// hypervisor panic, every workload test reports once and the whole
/// workload takes at most `bound` times its ticks alone (a bound against
/// starvation, not a performance figure: at a hundredth of its iterations
/// the workload lasts a fraction of a second of wall-clock time under TCG,
/// and its time alone varied 2.4-fold between runs on a loaded host), the adversary attacked from before the workload started,
/// without a failure and with the same `MEM_INFO` at every boot, and the
/// hypervisor prints at most 60 messages.
fn linux_beside_the_adversary(shared: bool, bound: f64) {
    let test = if shared {
        "linux_beside_the_adversary_on_one_cpu"
    } else {
        "linux_beside_the_adversary_on_its_own_cpu"
    };
    let alone = workload_alone();
    let adversary = stratum_systests::guest_elf("adversary");
    let (cpus, linux_place, adversary_cpu) = if shared {
        (1, "placement = \"shared\"\npcpus = [0]", 0)
    } else {
        (2, "pcpus = [0]", 1)
    };
    let text = format!(
        "[machine]\ncpus = {cpus}\nmemory = \"1G\"\n\n[system]\nstop = \"any\"\n\n\
         [[vm]]\nname = \"linux\"\ndebian = true\nmemory = \"256M\"\nexec = {WORKLOAD_EXEC:?}\n{linux_place}\n\n\
         [[vm]]\nname = \"adversary\"\nkernel = {:?}\ncpus = 2\nmemory = \"64M\"\n\
         cmdline = \"seed=11 boots=1000000 rounds=100\"\nplacement = \"shared\"\npcpus = [{adversary_cpu}]\n",
        adversary.display().to_string(),
    );
    let (run, vms) = run_config_text(test, &text, &[], &["linux", "adversary"]);
    assert!(
        !run.console.contains("panic"),
        "{test}: the hypervisor panicked\n{}",
        run.describe()
    );
    let linux: Vec<&str> = vms.lines("linux").iter().map(|l| l.text.trim()).collect();
    assert!(
        linux.contains(&"STRATUM-LINUX: exec exit 0"),
        "{test}: the workload exits 0\n{}",
        run.describe()
    );
    let ticks = workload_ticks(test, &run, &linux, 1);
    let slowdown = ticks as f64 / alone as f64;
    let adversary_lines: Vec<&str> = vms
        .lines("adversary")
        .iter()
        .map(|l| l.text.as_str())
        .collect();
    assert!(
        !adversary_lines
            .iter()
            .any(|l| l.starts_with("STRATUM-TEST FAIL")),
        "{test}: the adversary's own checks failed\n{}",
        run.describe()
    );
    // The adversary attacked during the whole workload: it started before
    // the workload did and never stops by itself.
    let started = vms.find("adversary", "adversary: boot 1 of ");
    let workload = vms.find("linux", ENV_PREFIX);
    assert!(
        started.is_some() && workload.is_some() && started < workload,
        "{test}: the adversary was attacking when the workload started\n{}",
        run.describe()
    );
    let mem =
        stratum_systests::mem_info_by_boot(adversary_lines.iter().copied(), "adversary: boot ");
    assert!(
        !mem.is_empty(),
        "{test}: the adversary finished a boot's attacks\n{}",
        run.describe()
    );
    stratum_systests::assert_mem_info_unchanged(test, &run, &mem, 0);
    let messages =
        stratum_systests::hypervisor_messages(vms.untagged.iter().map(|(_, l)| l.as_str()));
    println!(
        "{test}: workload {ticks} ticks, alone {alone}: slowdown {slowdown:.2}x (bound {bound}x); \
         adversary boots {}; {} hypervisor messages",
        mem.len(),
        messages.len()
    );
    assert!(
        !messages.iter().any(|m| m.to_lowercase().contains("crash")),
        "{test}: no VM crashed\n{}",
        run.describe()
    );
    assert!(
        messages.len() <= 60,
        "{test}: {} hypervisor messages\n{}",
        messages.len(),
        run.describe()
    );
    assert!(
        slowdown <= bound,
        "{test}: the workload took {slowdown:.2} times its time alone (bound {bound})\n{}",
        run.describe()
    );
}

#[test]
fn linux_beside_the_adversary_on_its_own_cpu() {
    linux_beside_the_adversary(false, 10.0);
}

#[test]
fn linux_beside_the_adversary_on_one_cpu() {
    linux_beside_the_adversary(true, 20.0);
}

#[test]
fn linux_hostile_ring_beside_a_network_gic2() {
    hostile_guest_beside_two_debian_vms("2");
}

#[test]
fn linux_hostile_ring_beside_a_network_gic3() {
    hostile_guest_beside_two_debian_vms("3");
}

#[test]
fn linux_network_two_debian_vms_gic2() {
    network_between_two_debian_vms("2");
}

#[test]
fn linux_network_two_debian_vms_gic3() {
    network_between_two_debian_vms("3");
}

/// The network bench's two programs between two Debian VMs time-sharing
/// one CPU: `tcp-send` streams 4 MiB to `tcp-sink`, which must count every
/// byte, and prints one `NET-TCP` line that parses, with the frames its
/// NIC counted: fewer than one per 1,500 bytes, as the NICs negotiated
/// segmentation offload (ADR 0015).
#[test]
fn linux_tcp_stream_between_time_shared_vms() {
    let test = "linux_tcp_stream_between_time_shared_vms";
    let up = |addr: &str| format!("ip link set eth0 up && ip addr add {addr}/24 dev eth0");
    let server = format!(
        "{} && stratum-workload tcp-sink 5001 > /tmp/sink && sleep 2 && cat /tmp/sink",
        up("10.0.0.1")
    );
    let client = format!(
        "{} && ping -c 1 -w 60 10.0.0.1 && stratum-workload tcp-send 10.0.0.1 5001 4",
        up("10.0.0.2")
    );
    let vm = |name: &str, exec: &str| {
        format!(
            "[[vm]]\nname = \"{name}\"\ndebian = true\nmemory = \"256M\"\n\
             placement = \"shared\"\npcpus = [0]\nexec = {exec:?}\n\n"
        )
    };
    let text = format!(
        "{}{}[[network]]\nname = \"lan\"\nvms = [\"server\", \"client\"]\n",
        vm("server", &server),
        vm("client", &client)
    );
    let (run, vms) = run_config_text(test, &text, &[], &["server", "client"]);
    let line = vms
        .lines("client")
        .iter()
        .find_map(|l| l.text.find(NET_PREFIX).map(|i| l.text[i..].to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "{test}: the client printed no NET-TCP line\n{}",
                run.describe()
            )
        });
    let t = NetTransfer::parse(&line).unwrap_or_else(|e| panic!("{test}: `{line}`: {e}"));
    assert_eq!(t.bytes, 4 << 20, "{test}: {line}");
    // Without segmentation offload a frame carries at most 1,448 bytes of
    // the stream; with it Linux sends up to 64 KiB per frame.
    assert!(
        t.tx_frames > 0 && t.tx_frames < (4 << 20) / 1500,
        "{test}: 4 MiB in {} frames: more than an MTU per frame, so \
         segmentation offload is in use\n{line}",
        t.tx_frames
    );
    assert!(
        t.rx_frames > 0,
        "{test}: acknowledgements came back\n{line}"
    );
    assert!(
        vms.find("server", "tcp-sink: 4194304 bytes").is_some(),
        "{test}: the sink counted every byte\n{}",
        run.describe()
    );
    for vm in ["server", "client"] {
        assert!(
            vms.find(vm, "STRATUM-LINUX: exec exit 0").is_some(),
            "{test}: {vm}'s command should exit 0\n{}",
            run.describe()
        );
    }
}

/// The first line of VM `vm` that contains `needle` (the test fails
/// without one).
fn vm_line(
    test: &str,
    run: &Run,
    vms: &stratum_systests::VmConsoles,
    vm: &str,
    needle: &str,
) -> String {
    vms.lines(vm)
        .iter()
        .find(|l| l.text.contains(needle))
        .map(|l| l.text.clone())
        .unwrap_or_else(|| {
            panic!(
                "{test}: {vm} printed no `{needle}` line\n{}",
                run.describe()
            )
        })
}

/// Linux ↔ bare-metal over virtio-vsock, with the stock drivers at both
/// ends (Linux's `vmw_vsock_virtio_transport`, and `virtio-drivers` in the
/// `vsockecho` guests). `linux` (CID 3) may talk to `echo` (CID 4), and
/// `echo` to `other` (CID 5); `linux` and `other` are not paired. Linux
/// first connects to `other`, which listens on port 1234 like `echo`: the
/// router must refuse it (`vsock-denied`). Then 1,000 messages of 1 to
/// 4096 bytes go through `echo` and come back byte for byte
/// (`vsock-echo`). Then `echo` connects to `other` itself (an allowed
/// pair: so `other` was listening all along, and the refusal was the
/// config's), and `other` reports the one connection it served, from CID 4.
fn vsock_between_linux_and_bare_metal(gic: &str) {
    let test = format!("linux_vsock_bare_metal_gic{gic}");
    let echo = stratum_systests::guest_elf("vsockecho");
    let exec = "stratum-workload vsock-denied 5 1234 && stratum-workload vsock-echo 4 1234 1000";
    let text = format!(
        "[[vm]]\nname = \"linux\"\ndebian = true\nmemory = \"256M\"\nvsock = true\nexec = {exec:?}\n\n\
         [[vm]]\nname = \"echo\"\nkernel = {echo:?}\nmemory = \"16M\"\nvsock = true\n\
         cmdline = \"port=1234 serve=1 notify=5\"\n\n\
         [[vm]]\nname = \"other\"\nkernel = {echo:?}\nmemory = \"16M\"\nvsock = true\n\
         cmdline = \"port=1234 serve=1\"\n\n\
         [[vsock]]\nallow = [\"linux\", \"echo\"]\n\n\
         [[vsock]]\nallow = [\"echo\", \"other\"]\n"
    );
    let config = std::env::temp_dir().join(format!("{}.toml", unique_marker(&test)));
    std::fs::write(&config, text).expect("write the config");
    let start = Instant::now();
    let run = stratum_systests::run_config(&config, CLI_TIMEOUT, &["--gic", gic], None);
    println!("{test}: {:.1} s wall", start.elapsed().as_secs_f64());
    let _ = std::fs::remove_file(&config);
    assert_status(&run, status::OK, &test);
    let vms = stratum_systests::split_by_tag(&run.console, &["linux", "echo", "other"])
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", run.describe()));
    let line = |vm: &str, needle: &str| vm_line(&test, &run, &vms, vm, needle);
    // The denied pair: refused at once, and only that.
    let refused = line("linux", "vsock-denied: ");
    assert!(
        refused.contains("connect to CID 5 port 1234 refused"),
        "{test}: Linux's connection to a VM it is not paired with must be refused: {refused}\n{}",
        run.describe()
    );
    // The allowed pair: every message back, byte for byte.
    let echoed = line("linux", "vsock-echo: 1000 messages");
    let bytes: u64 = echoed
        .strip_prefix("vsock-echo: 1000 messages, ")
        .and_then(|r| r.strip_suffix(" bytes, all matched"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{test}: not a success line: {echoed}\n{}", run.describe()));
    assert!(
        vms.find("linux", "STRATUM-LINUX: exec exit 0").is_some(),
        "{test}: Linux's commands should exit 0\n{}",
        run.describe()
    );
    // `echo` saw the same stream: one connection from Linux, every byte.
    let served = line("echo", "vsockecho: connection 1 from CID 3 port");
    let served = line("echo", &format!("{served} closed"));
    assert!(
        served.contains(&format!("closed (shutdown): {bytes} bytes in ")),
        "{test}: echo should have echoed the {bytes} bytes Linux sent and seen a clean shutdown: {served}\n{}",
        run.describe()
    );
    line("echo", "vsockecho: told CID 5 port 1234; echo matched");
    // `other` listened the whole time and served one connection: echo's.
    let other = line("other", "vsockecho: connection 1 from CID ");
    assert!(
        other.starts_with("vsockecho: connection 1 from CID 4 port"),
        "{test}: other's only connection should be echo's (CID 4), never Linux's: {other}\n{}",
        run.describe()
    );
    assert!(
        vms.find("other", "from CID 3").is_none(),
        "{test}: nothing from Linux may reach other\n{}",
        run.describe()
    );
    for vm in ["echo", "other"] {
        let passed = vms.markers(vm).iter().any(|m| {
            matches!(m.verdict, stratum_systests::Verdict::Pass) && m.guest == "vsockecho"
        });
        assert!(passed, "{test}: {vm} should pass\n{}", run.describe());
    }
}

#[test]
fn linux_vsock_bare_metal_gic3() {
    vsock_between_linux_and_bare_metal("3");
}

#[test]
fn linux_vsock_bare_metal_gic2() {
    vsock_between_linux_and_bare_metal("2");
}

/// Linux ↔ bare-metal over virtio-net, with the stock drivers at both
/// ends (Linux's `virtio_net`, and `virtio-drivers` in the `netecho`
/// guest, which takes no offload). Linux sets its address, pings
/// `netecho` three times (ARP, then ICMP both ways), then
/// `stratum-workload udp-echo` sends 1,000 datagrams of 1 to 1,472 bytes
/// and checks each echo byte for byte. Linux leaves its UDP checksums to
/// the NIC and `netecho` takes no checksum offload, so the hypervisor's
/// switch must complete each one: `netecho` verifies every IPv4, ICMP and
/// UDP checksum and every receive header (no offload flags), and reports
/// none bad. The MAC `stratum check` derives for `echo` is the one
/// `netecho` reads from its device and the one Linux learned by ARP.
fn network_between_linux_and_bare_metal(gic: &str) {
    let test = format!("linux_network_bare_metal_gic{gic}");
    let echo = stratum_systests::guest_elf("netecho");
    let exec = "ip link set eth0 up && ip addr add 10.0.0.1/24 dev eth0 \
                && ping -c 3 -w 30 10.0.0.2 && stratum-workload udp-echo 10.0.0.2 7 1000 \
                && ip neigh show 10.0.0.2";
    let text = format!(
        "[[vm]]\nname = \"linux\"\ndebian = true\nmemory = \"256M\"\nexec = {exec:?}\n\n\
         [[vm]]\nname = \"echo\"\nkernel = {echo:?}\nmemory = \"16M\"\n\
         cmdline = \"ip=10.0.0.2 port=7\"\n\n\
         [[network]]\nname = \"lan\"\nvms = [\"linux\", \"echo\"]\n"
    );
    // The MAC the config gives `echo`, as `stratum check` shows it.
    let config = std::env::temp_dir().join(format!("{}.toml", unique_marker(&test)));
    std::fs::write(&config, &text).expect("write the config");
    let check = stratum_systests::run_stratum(
        [std::ffi::OsStr::new("check"), config.as_os_str()],
        CLI_TIMEOUT,
    );
    let _ = std::fs::remove_file(&config);
    assert_status(&check, status::OK, &format!("{test}: stratum check"));
    let mac = check
        .lines()
        .find_map(|l| l.strip_prefix("network \"lan\": "))
        .and_then(|l| l.split("\"echo\" ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "{test}: `stratum check` shows no MAC for echo\n{}",
                check.describe()
            )
        });

    let (run, vms) = run_config_text(&test, &text, &["--gic", gic], &["linux", "echo"]);
    let line = |vm: &str, needle: &str| vm_line(&test, &run, &vms, vm, needle);
    assert!(
        vms.find("linux", "STRATUM-LINUX: exec exit 0").is_some(),
        "{test}: Linux's commands should exit 0\n{}",
        run.describe()
    );
    line("linux", "3 packets transmitted, 3 packets received");
    // Linux's end: every datagram back, byte for byte.
    let echoed = line("linux", "udp-echo: 1000 datagrams, ");
    let (bytes, tries): (u64, u64) = echoed
        .strip_prefix("udp-echo: 1000 datagrams, ")
        .and_then(|r| r.split_once(" bytes, all matched ("))
        .and_then(|(b, r)| Some((b.parse().ok()?, r.split(' ').next()?.parse().ok()?)))
        .unwrap_or_else(|| panic!("{test}: not a success line: {echoed}\n{}", run.describe()));
    // netecho's end: the same payload (the datagrams that found it first
    // were empty), every checksum verified, no frame or header bad.
    let mac_line = line("echo", "netecho: transport ");
    assert!(
        mac_line.contains(&format!(", MAC {mac}, IP 10.0.0.2,")),
        "{test}: netecho's device should have the MAC `stratum check` shows ({mac}): {mac_line}\n{}",
        run.describe()
    );
    let neigh = line("linux", "10.0.0.2 dev eth0 lladdr ");
    assert!(
        neigh.contains(&format!("lladdr {mac} ")),
        "{test}: Linux should have learned {mac} by ARP: {neigh}\n{}",
        run.describe()
    );
    let tally = line("echo", " datagrams (");
    let datagrams: u64 = tally
        .strip_prefix("netecho: ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{test}: not a tally: {tally}\n{}", run.describe()));
    assert!(
        (1001..=1000 + tries).contains(&datagrams),
        "{test}: netecho should have echoed the 1,000 datagrams and at least one of the {tries} that reached it first, not {datagrams}: {tally}\n{}",
        run.describe()
    );
    for want in [
        format!("({bytes} payload bytes) echoed, 3 pings and "),
        ", 0 datagrams without a checksum, 0 bad frames, 0 bad receive headers;".to_owned(),
    ] {
        assert!(
            tally.contains(&want),
            "{test}: netecho's tally should contain `{want}`: {tally}\n{}",
            run.describe()
        );
    }
    let passed = vms
        .markers("echo")
        .iter()
        .any(|m| matches!(m.verdict, stratum_systests::Verdict::Pass) && m.guest == "netecho");
    assert!(passed, "{test}: netecho should pass\n{}", run.describe());
}

#[test]
fn linux_network_bare_metal_gic3() {
    network_between_linux_and_bare_metal("3");
}

#[test]
fn linux_network_bare_metal_gic2() {
    network_between_linux_and_bare_metal("2");
}

/// An identity-mapped Debian VM drives a device it was handed with its
/// stock driver, DMA included: QEMU's own `virtio-blk-device` on `virt`'s
/// virtio-mmio transport 24 (0x0A003000, SPI 40), backed by a 4 MiB file,
/// passed through with `[[vm.device]]` (compatible `virtio,mmio`). The
/// device reads and writes the VM's buffers at the addresses Linux's
/// `virtio_blk` gives it, which are host-physical only because the VM's
/// RAM is identity-mapped (`identity = true`, placed by `stratum` above the
/// boot area, at 0x50000000). Linux's MD5 of `/dev/vda` must be the file's,
/// and a sector it writes must reach the file, the rest unchanged. A
/// bare-metal VM beside it (not identity-mapped) passes too. `stratum run`
/// prints the DMA warning, and the boot log shows PA = IPA.
#[test]
fn linux_identity_vm_drives_a_passed_through_virtio_disk() {
    let test = "linux_identity_vm_disk";
    let disk = std::env::temp_dir().join(format!("{}.img", unique_marker(test)));
    let pattern: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 9)) as u8)
        .collect();
    std::fs::write(&disk, &pattern).expect("write the disk image");
    let md5 = std::process::Command::new("md5sum")
        .arg(&disk)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|o| o.split_whitespace().next().map(str::to_owned))
        .expect("md5sum of the disk image");
    let hello = stratum_systests::guest_elf("hello");
    let exec = "md5sum /dev/vda && printf written-by-linux > /tmp/s \
                && dd if=/tmp/s of=/dev/vda bs=512 seek=100 conv=sync,fsync 2>/dev/null && sync \
                && echo virtio-devices $(ls /sys/bus/virtio/devices | wc -l) && ls /dev/hvc0";
    let text = format!(
        "[[vm]]\nname = \"svc\"\ndebian = true\nmemory = \"256M\"\nidentity = true\n\
         virtio_console = true\nexec = {exec:?}\n\n\
         [[vm.device]]\nname = \"virtio_mmio\"\ncompatible = \"virtio,mmio\"\n\
         reg = [0x0a003000, 0x1000]\ninterrupts = [40]\n\n\
         [[vm]]\nname = \"hello\"\nkernel = {hello:?}\nmemory = \"16M\"\n"
    );
    let drive = format!("file={},if=none,format=raw,id=d0", disk.display());
    let extra = [
        "--gic",
        "3",
        "--",
        "-drive",
        &drive,
        "-device",
        "virtio-blk-device,drive=d0,bus=virtio-mmio-bus.24",
    ];
    let (run, vms) = run_config_text(test, &text, &extra, &["svc", "hello"]);
    let after = std::fs::read(&disk).expect("read the disk image back");
    let _ = std::fs::remove_file(&disk);
    let line = |vm: &str, needle: &str| vm_line(test, &run, &vms, vm, needle);
    assert!(
        vms.find("svc", "STRATUM-LINUX: exec exit 0").is_some(),
        "{test}: Linux's commands should exit 0\n{}",
        run.describe()
    );
    line("svc", &format!("{md5}  /dev/vda"));
    // The real disk took transports 24-31 (its page, and SPI 40 is
    // transport 24's); the emulated ones below stayed, the console on 0.
    line("svc", "virtio-devices 2");
    line("svc", "/dev/hvc0");
    let mut want = pattern;
    want[100 * 512..101 * 512].fill(0);
    want[100 * 512..100 * 512 + 16].copy_from_slice(b"written-by-linux");
    assert!(
        after == want,
        "{test}: the disk file should hold the sector Linux wrote and nothing else changed\n{}",
        run.describe()
    );
    for needle in [
        "stratum: warning: \"svc\" is identity-mapped and no SMMU guards host memory",
        "vm0 'svc': 1 vCPU, 256 MiB at IPA 0x50000000 (PA 0x50000000, identity-mapped)",
        "vm0 'svc': passthrough device 'virtio_mmio' takes virtio-mmio transport(s) 0xff000000 (their window or SPIs); 24 of 32 left",
    ] {
        assert!(
            run.lines().any(|l| l.contains(needle)),
            "{test}: no `{needle}` line\n{}",
            run.describe()
        );
    }
    let passed = vms
        .markers("hello")
        .iter()
        .any(|m| matches!(m.verdict, stratum_systests::Verdict::Pass));
    assert!(passed, "{test}: hello should pass\n{}", run.describe());
}

/// How long the fresh fetch may take (it downloads the ~60 MB kernel).
const FETCH_TIMEOUT: Duration = Duration::from_secs(900);

/// A scratch directory of this test, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `stratum fetch debian` into a fresh cache, on a machine whose apt
/// configuration has no sources at all (`APT_CONFIG` with `Dir::Etc` an
/// empty directory): the tool's own sources and Debian's keyring bring the
/// pinned kernel anyway, its lists come from Debian 12 only, and a second
/// fetch finds it in the cache. (Downloads the kernel once: the one test
/// that does.)
#[test]
fn fetch_debian_uses_its_own_sources_and_the_pin() {
    let test = "fetch_debian_uses_its_own_sources_and_the_pin";
    let scratch = Scratch(std::env::temp_dir().join(unique_marker(test)));
    let (etc, cache) = (scratch.0.join("etc"), scratch.0.join("cache"));
    std::fs::create_dir_all(&etc).expect("create the empty Dir::Etc");
    let apt_config = scratch.0.join("apt.conf");
    let etc_text = etc.to_str().expect("UTF-8 temp path");
    std::fs::write(&apt_config, format!("Dir::Etc \"{etc_text}\";\n")).expect("apt.conf");
    let fetch = || {
        let mut cmd = std::process::Command::new(stratum_systests::stratum_bin());
        cmd.args(["fetch", "debian", "--cache"])
            .arg(&cache)
            .env("APT_CONFIG", &apt_config);
        stratum_systests::run_command(cmd, FETCH_TIMEOUT)
    };
    let start = Instant::now();
    let run = fetch();
    println!("{test}: {:.1} s wall", start.elapsed().as_secs_f64());
    assert_status(&run, status::OK, test);

    let field = |run: &Run, key: &str| {
        console_lines(&run.console)
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{test}: no `{key}` line\n{}", run.describe()))
    };
    // The pinned kernel, unless Debian dropped it: then the newest, with
    // the loud warning (CI keeps working; the pin needs an update).
    let package = field(&run, "package:");
    let fell_back = run
        .console
        .contains("THE PINNED KERNEL IS NOT IN THE DEBIAN ARCHIVE");
    assert!(
        package.ends_with("(pinned)") || (fell_back && package.contains("is not in the archive")),
        "{test}: the pinned kernel should arrive: `{package}`\n{}",
        run.describe()
    );
    if fell_back {
        println!("{test}: NOTE: the pinned kernel is gone from the archive: {package}");
    }
    let kernel = std::path::PathBuf::from(field(&run, "kernel:"));
    assert!(
        kernel.starts_with(cache.canonicalize().expect("the cache exists")),
        "{test}: the kernel should be in the fresh cache: {}",
        kernel.display()
    );
    let image = std::fs::read(&kernel).expect("read the fetched kernel");
    assert_eq!(
        image.get(56..60),
        Some(&b"ARM\x64"[..]),
        "{test}: {} is not an arm64 Image",
        kernel.display()
    );
    assert!(std::path::Path::new(&field(&run, "initramfs:")).is_file());

    // Only Debian 12's lists: nothing from the machine's own sources.
    let lists = cache.join("apt").join("lists");
    let names: Vec<String> = std::fs::read_dir(&lists)
        .expect("the cache's lists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("_dists_"))
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.contains("_dists_bookworm")),
        "{test}: lists from elsewhere: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.contains("bookworm-security")),
        "{test}: no bookworm-security lists: {names:?}"
    );

    // Again: from the cache, the same kernel.
    let again = fetch();
    assert_status(&again, status::OK, test);
    assert_eq!(field(&again, "kernel:"), kernel.to_string_lossy());
    assert_eq!(field(&again, "package:"), package);
}

/// The ZCU102's DT from the fetched Debian kernel package (the tree
/// `--board zcu102` boots with), next to the kernel in the cache.
fn zcu102_dtb() -> std::path::PathBuf {
    let kernel = linux_kernel();
    let release = kernel
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix("vmlinuz-"))
        .expect("the kernel is boot/vmlinuz-RELEASE");
    kernel
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the package directory")
        .join(format!(
            "usr/lib/linux-image-{release}/xilinx/zynqmp-zcu102-rev1.0.dtb"
        ))
}

/// The hypervisor's platform discovery over the real ZCU102 DT (as Debian
/// ships it: clocks, firmware nodes, disabled devices, two memory banks),
/// and EL2's map of it; then about 1,200 corrupted copies (cut short,
/// bytes flipped, a lying size), none of which may panic, and those the
/// parser refuses with the precise reason.
#[test]
fn zcu102_dt_is_read_whole_and_corrupted_copies_fail_precisely() {
    use stratum_core::el2map;
    use stratum_core::fdt::{Fdt, FdtError};
    use stratum_core::platform::{GicVersion, Platform, PsciConduit, UartKind};

    let path = zcu102_dtb();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fdt = Fdt::new(&bytes).expect("the DT parses");
    let p = Platform::from_fdt(&fdt).expect("the platform is found");
    let banks: Vec<(u64, u64)> = p.memory().iter().map(|m| (m.base.0, m.size)).collect();
    assert_eq!(banks, [(0, 2 << 30), (0x8_0000_0000, 2 << 30)]);
    assert_eq!(p.cpus().len(), 4);
    assert_eq!(p.gic.version, GicVersion::V2);
    assert_eq!(p.gic.dist.base.0, 0xf901_0000);
    // A GIC-400 with 64 KiB-aliased CPU interface frames: the 8 KiB window
    // starts at the alias that puts both pages side by side.
    let gicc = p.gic.cpu_interface().expect("a CPU interface");
    assert_eq!((gicc.base.0, gicc.size), (0xf902_f000, 0x2000));
    let gicv = p
        .gic
        .virtual_cpu_interface()
        .expect("a virtual CPU interface");
    assert_eq!((gicv.base.0, gicv.size), (0xf906_f000, 0x2000));
    let uart = p.uart.expect("the console UART");
    assert_eq!(
        (uart.kind, uart.regs.base.0),
        (UartKind::Cadence, 0xff00_0000)
    );
    assert_eq!(uart.irq.map(|i| i.intid()), Some(32 + 21));
    assert_eq!(p.psci.map(|p| p.conduit), Some(PsciConduit::Smc));
    assert_eq!(p.reserved(), [], "the board DT reserves no memory");
    let mut l1 = Box::new([0u64; el2map::TABLE_ENTRIES]);
    let mut l2 = Box::new([[0u64; el2map::TABLE_ENTRIES]; el2map::L2_TABLES]);
    let map = el2map::plan(
        p.memory(),
        p.reserved(),
        0x20_0000..0x60_0000,
        &mut l1,
        &mut l2,
        0x50_0000,
    )
    .expect("EL2 maps the board");
    assert_eq!((map.ram_gib, map.l2_tables), (4, 0));

    // Corrupted copies: every 61st length cut short, 600 single-byte flips
    // (a fixed LCG: the same copies every run), and a header that claims
    // more bytes than there are.
    let judge = |b: &[u8]| -> Result<(), String> {
        let fdt = Fdt::new(b).map_err(|e| format!("{e:?}"))?;
        Platform::from_fdt(&fdt)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    for len in (0..bytes.len()).step_by(61) {
        let r = judge(&bytes[..len]);
        assert!(r.is_err(), "a copy cut to {len} bytes parsed");
    }
    assert_eq!(Fdt::new(&bytes[..39]).err(), Some(FdtError::Truncated));
    let mut seed: u64 = 0x5eed;
    let (mut refused, mut accepted) = (0, 0);
    for _ in 0..600 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = (seed >> 33) as usize % bytes.len();
        let mut copy = bytes.clone();
        copy[at] ^= 1 << ((seed >> 29) & 7);
        match judge(&copy) {
            Ok(()) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    println!("zcu102 DT: 600 flipped copies, {refused} refused, {accepted} accepted");
    let mut bad_magic = bytes.clone();
    bad_magic[0] ^= 0xff;
    assert_eq!(Fdt::new(&bad_magic).err(), Some(FdtError::BadMagic));
    let mut too_long = bytes.clone();
    too_long[4..8].copy_from_slice(&(bytes.len() as u32 + 8).to_be_bytes());
    assert_eq!(Fdt::new(&too_long).err(), Some(FdtError::Truncated));
}

/// Three bare-metal VMs on three of the ZCU102 model's CPUs, from a system
/// image: the guests and config `virt` runs, unchanged.
#[test]
fn zcu102_runs_the_three_vms_config_unchanged() {
    let config = stratum_systests::config_with_guests("three-vms");
    let run = stratum_systests::run_config(&config, CLI_TIMEOUT, &["--board", "zcu102"], None);
    let _ = std::fs::remove_file(&config);
    let vms = stratum_systests::split_by_tag(&run.console, &["alpha", "beta", "gamma"])
        .unwrap_or_else(|e| panic!("{e}\n{}", run.describe()));
    stratum_systests::assert_three_vms_ran(
        &run,
        &vms,
        &["image at 0x200000", "Cortex-A53", "3 CPUs online"],
    );
}

/// `stratum bench --board zcu102` (20 iterations): every exit-path row is
/// measured under Stratum on the ZCU102 model and on bare `virt` with the
/// same CPU and GIC, the report names the board, what is measured on
/// `virt` only says so, and the breakdown symbolizes the relocated
/// hypervisor (the vector and save/restore are 40 instructions there as on
/// `virt`). Only that category's figure is checked.
#[test]
fn bench_exit_rows_on_the_zcu102() {
    let out = std::env::temp_dir().join(unique_marker("bench-zcu102"));
    let guest = stratum_systests::guest_elf("bench");
    let run = stratum_systests::run_stratum(
        [
            "bench".as_ref(),
            "--board".as_ref(),
            "zcu102".as_ref(),
            "--guest".as_ref(),
            guest.as_os_str(),
            "--iterations".as_ref(),
            "20".as_ref(),
            "--timeout".as_ref(),
            "100".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        CLI_TIMEOUT,
    );
    assert_status(&run, status::OK, "stratum bench --board zcu102");
    assert!(
        run.console
            .contains("board zcu102, cortex-a53, GICv2; bare QEMU: virt, cortex-a53, GICv2"),
        "{}",
        run.describe()
    );
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    assert!(json.contains("\"board\": \"zcu102\""), "{json}");
    for op in stratum_systests::BENCH_EXIT_ROWS {
        let row = json
            .lines()
            .find(|l| l.contains(&format!("\"op\": \"{op}\"")))
            .unwrap_or_else(|| panic!("no {op} in results.json:\n{json}"));
        assert!(
            row.contains("\"stratum\": {\"n\": 20,") && row.contains("\"bare_qemu\": {\"n\": 20,"),
            "{row}"
        );
    }
    assert!(
        json.contains("\"not_measured\": \"measured on virt only (this run: zcu102)\""),
        "{json}"
    );
    // The breakdown symbolizes the relocated hypervisor's EL2 PCs: every
    // exit row's instructions land in named categories, none in `other`,
    // and the HVC's vector and save/restore are the 40 they are on virt.
    for op in stratum_systests::BENCH_EXIT_ROWS {
        let row = json
            .lines()
            .find(|l| l.contains(&format!("{{\"op\": \"{op}\", \"figure\"")))
            .unwrap_or_else(|| panic!("no breakdown of {op}:\n{json}"));
        assert!(row.contains("\"other\": 0}"), "{row}");
        if op == "hvc" {
            assert!(row.contains("\"categories\": {\"vector\": 40,"), "{row}");
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A ZCU102 peripheral passed through and driven in a guest: the board's
/// second Cadence UART (`0xff01_0000`, SPI 22) given to `uartpass` beside a
/// ticker. The guest turns the UART on, writes a line through it and takes
/// its transmit-empty interrupt; QEMU's second serial port (a file here)
/// receives the line. The first UART stays the hypervisor's console.
#[test]
fn zcu102_uart_passed_through_to_a_guest() {
    let guests = stratum_systests::guest_elf("uartpass");
    let ticker = stratum_systests::guest_elf("ticker");
    let text = format!(
        "[machine]\nboard = \"zcu102\"\ncpus = 2\n\n\
         [[vm]]\nname = \"uart\"\nkernel = {:?}\nmemory = \"32M\"\n\n\
         [[vm.device]]\nname = \"serial\"\ncompatible = [\"cdns,uart-r1p12\", \"xlnx,xuartps\"]\n\
         reg = [0xff010000, 0x1000]\ninterrupts = [22]\n\n\
         [[vm]]\nname = \"ticker\"\nkernel = {:?}\ncmdline = \"period_ms=50 ticks=10\"\nmemory = \"32M\"\n",
        guests.to_str().expect("UTF-8"),
        ticker.to_str().expect("UTF-8"),
    );
    let marker = unique_marker("zcu102-uart");
    let config = std::env::temp_dir().join(format!("{marker}.toml"));
    let wire = std::env::temp_dir().join(format!("{marker}.uart1"));
    std::fs::write(&config, text).expect("write the config");
    let serial = format!("file:{}", wire.display());
    let run = stratum_systests::run_config(&config, CLI_TIMEOUT, &["--", "-serial", &serial], None);
    let _ = std::fs::remove_file(&config);
    let received = std::fs::read_to_string(&wire).unwrap_or_default();
    let _ = std::fs::remove_file(&wire);
    assert_status(&run, status::OK, "zcu102 UART passthrough");
    let vms = stratum_systests::split_by_tag(&run.console, &["uart", "ticker"])
        .unwrap_or_else(|e| panic!("{e}\n{}", run.describe()));
    assert!(
        vms.passed("uart", "uartpass"),
        "uartpass passes\n{}",
        run.describe()
    );
    assert_eq!(
        received, "uartpass: written through the passed-through Cadence UART\r\n",
        "what reached the UART's wire"
    );
    assert_eq!(vms.ticks("ticker"), (1..=10).collect::<Vec<u64>>());
}
