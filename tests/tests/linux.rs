//! Linux system tests (tier 3): the stock Debian arm64 kernel with Stratum's
//! busybox initramfs (`stratum fetch debian`), one vCPU, under the real
//! hypervisor on QEMU.
//!
//! `cargo xtask test` fetches the guest into the cache and runs these with
//! `STRATUM_LINUX_KERNEL` and `STRATUM_LINUX_INITRD` set (plus `STRATUM_BIN`
//! and `STRATUM_HYPERVISOR`); without them every test fails saying so.
//!
//! The boot tests append `stratum.test=poweroff marker=<unique>`: the init
//! then prints `STRATUM-LINUX: up <n> cpus`, `/proc/cmdline` and
//! `/proc/interrupts`, and powers off (PSCI `SYSTEM_OFF` → exit 0). The
//! interactive test waits for the shell prompt and types a command line.
//! Each run has a hard timeout of 120 s and prints its wall time (see it with
//! `--nocapture`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stratum_systests::{
    GuestOpts, Run, assert_in_order, assert_status, console_lines, linux_initrd, linux_kernel,
    run_kernel, status,
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
fn boot(test: &str, gic: u8, cpu: &str, append: &str, input: Option<(&str, &str)>) -> Run {
    let kernel = linux_kernel();
    let initrd = linux_initrd();
    let initrd = initrd.to_str().expect("UTF-8 initramfs path");
    let append = format!("console=ttyAMA0 {}", append.trim());
    let extra = ["--initrd", initrd, "--append", &append];
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

/// The interrupt count of the `arch_timer` line of `/proc/interrupts` (one
/// CPU: the first number after the `NN:` label).
fn arch_timer_count(run: &Run) -> Option<u64> {
    console_lines(&run.console)
        .filter(|l| l.contains("arch_timer"))
        .find_map(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Boots to userspace in power-off mode (with `extra` on the command line)
/// and checks the report.
fn check_poweroff_boot(test: &str, gic: u8, cpu: &str, extra: &str) {
    let marker = unique_marker(test);
    let run = boot(
        test,
        gic,
        cpu,
        &format!("{extra} stratum.test=poweroff marker={marker}"),
        None,
    );
    assert_status(&run, status::OK, test);
    assert_in_order(
        &run,
        &[
            "Linux version ",
            "Run /init as init process",
            "STRATUM-LINUX: up 1 cpus",
            &format!("marker={marker}"),
            "arch_timer",
            "STRATUM-LINUX: powering off",
        ],
    );
    let gic_name = if gic == 3 { "GICv3" } else { "GIC-0" };
    assert!(
        console_lines(&run.console).any(|l| l.contains("arch_timer") && l.contains(gic_name)),
        "{test}: the arch timer should sit on the {gic_name} irqchip\n{}",
        run.describe()
    );
    let ticks = arch_timer_count(&run);
    assert!(
        ticks.is_some_and(|n| n > 0),
        "{test}: /proc/interrupts shows no arch timer interrupts ({ticks:?})\n{}",
        run.describe()
    );
    assert!(
        !run.console.contains("Kernel panic"),
        "{test}: kernel panic\n{}",
        run.describe()
    );
}

#[test]
fn linux_boots_to_userspace_gicv3() {
    check_poweroff_boot("linux_gicv3", 3, "cortex-a57", "");
}

/// GICv2 (cortex-a57). Ignored: the hypervisor loses the guest's virtual
/// timer interrupt on GICv2. About one boot in three stops ticking early (77
/// or 107 arch_timer interrupts by /init instead of ~300), boots on
/// tickless, and then hangs in `poweroff -f`; under `stratum run
/// --deterministic --gic 2` it happens every time (189 interrupts, where
/// GICv3 takes 3317). GICv3 passed 8 runs of 8. Run it with `-- --ignored`.
#[test]
#[ignore = "hypervisor: the virtual timer interrupt is lost on GICv2 (1 boot in 3 hangs in poweroff; always with --deterministic)"]
fn linux_boots_to_userspace_gicv2() {
    check_poweroff_boot("linux_gicv2", 2, "cortex-a57", "");
}

/// `-cpu max` without the features the vCPU cannot yet give a guest: the
/// kernel sees SVE, SME and pointer authentication in the ID registers, but
/// `ZCR_EL1` and the `AP*KEY*_EL1` registers trap to EL2 and come back as an
/// undefined instruction (an Oops in `read_zcr_features`, then in
/// `start_kernel`). The `arm64.no*` overrides keep the kernel off them; the
/// test below runs without them.
#[test]
fn linux_boots_to_userspace_cpu_max() {
    check_poweroff_boot(
        "linux_cpu_max",
        3,
        "max",
        "arm64.nosve arm64.nosme arm64.nopauth",
    );
}

/// `-cpu max` with every feature the ID registers advertise: fails until the
/// hypervisor hides SVE/SME/pointer auth from the guest's ID registers (or
/// context-switches them). Run it with `-- --ignored`.
#[test]
#[ignore = "hypervisor: SVE (ZCR_EL1) and pointer-auth key accesses of a -cpu max guest are injected as UNDEF"]
fn linux_boots_to_userspace_cpu_max_all_features() {
    check_poweroff_boot("linux_cpu_max_all", 3, "max", "");
}

#[test]
fn linux_interactive_shell() {
    let marker = unique_marker("linux_shell");
    let run = boot(
        "linux_shell",
        3,
        "cortex-a57",
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
