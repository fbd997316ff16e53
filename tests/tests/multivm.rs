//! Multi-VM system tests: each example config in `configs/` for several VMs
//! (`three-vms`, `timeshare`, `pingpong`, `isolation`, `crash`, `restart`,
//! `uboot`)
//! runs on the real hypervisor under QEMU, with the guests the harness uses
//! (`STRATUM_GUESTS_DIR`), and the console is split by VM tag
//! ([`split_by_tag`]): every VM line must carry its VM's tag, tags never
//! appear mid-line, and untagged lines are the hypervisor's. Then each test
//! checks what its config is about, on GICv3 and, for the scheduler, the
//! channel and crash tests, on GICv2 too (`--gic 2` overrides the config).
//! A console test switches input between two VMs with the Ctrl-A escape.
//!
//! Run them with `cargo xtask test` (or `cargo test -p stratum-systests
//! --test multivm` with `STRATUM_BIN`, `STRATUM_GUESTS_DIR` and
//! `STRATUM_HYPERVISOR` set).

use std::time::Duration;

use stratum_systests::{
    Run, Verdict, VmConsoles, assert_status, config_with_guests, numbers_after, run_config,
    run_config_script, split_by_tag, status,
};

/// Timeout of one multi-VM run (several guests share few CPUs under TCG).
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs example config `name` with the harness's guests on a GICv`gic` machine.
fn run_example(name: &str, gic: u8, input: Option<(&str, &str)>) -> Run {
    let config = config_with_guests(name);
    let gic = gic.to_string();
    let run = run_config(&config, TIMEOUT, &["--gic", &gic], input);
    let _ = std::fs::remove_file(&config);
    run
}

/// Splits the console by the tags of `names`, failing the test on a tag out
/// of place or an untagged line that is neither the hypervisor's
/// (`[stratum] …`) nor the host tool's (`stratum: …`, e.g. `stratum: a VM
/// crashed`).
#[track_caller]
fn consoles(run: &Run, names: &[&str]) -> VmConsoles {
    let split = split_by_tag(&run.console, names)
        .unwrap_or_else(|e| panic!("badly tagged console: {e}\n{}", run.describe()));
    if let Some((index, line)) = split
        .untagged
        .iter()
        .find(|(_, l)| !l.starts_with("[stratum] ") && !l.starts_with("stratum: "))
    {
        panic!(
            "console line {index} has no VM tag and is not the hypervisor's or the tool's: {line:?}\n{}",
            run.describe()
        );
    }
    for name in names {
        assert!(
            !split.lines(name).is_empty(),
            "VM {name} printed nothing\n{}",
            run.describe()
        );
    }
    split
}

/// Asserts VM `vm` printed `STRATUM-TEST PASS <guest>` and no FAIL line.
#[track_caller]
fn assert_vm_passed(run: &Run, split: &VmConsoles, vm: &str, guest: &str) {
    let markers = split.markers(vm);
    let failed: Vec<_> = markers
        .iter()
        .filter(|m| matches!(m.verdict, Verdict::Fail(_)))
        .collect();
    assert!(
        failed.is_empty()
            && markers
                .iter()
                .any(|m| m.guest == guest && m.verdict == Verdict::Pass),
        "VM {vm}: expected `STRATUM-TEST PASS {guest}` and no failure, got {markers:?}\n{}",
        run.describe()
    );
}

/// Asserts VM `vm`'s output has `tick 1` … `tick n` in order, nothing else
/// numbered `tick`.
#[track_caller]
fn assert_ticks(run: &Run, split: &VmConsoles, vm: &str, n: u64) {
    let ticks = split.ticks(vm);
    assert_eq!(
        ticks,
        (1..=n).collect::<Vec<_>>(),
        "VM {vm}: ticks out of order or missing\n{}",
        run.describe()
    );
}

/// Console index of the first hypervisor line containing every one of `needles`.
fn hypervisor_line(split: &VmConsoles, needles: &[&str]) -> Option<usize> {
    split
        .untagged
        .iter()
        .find(|(_, l)| {
            needles
                .iter()
                .all(|n| l.to_lowercase().contains(&n.to_lowercase()))
        })
        .map(|(i, _)| *i)
}

#[test]
fn three_vms_print_at_once_with_tagged_lines_gic3() {
    three_vms_print_at_once_with_tagged_lines(3);
}

#[test]
fn three_vms_print_at_once_with_tagged_lines_gic2() {
    three_vms_print_at_once_with_tagged_lines(2);
}

fn three_vms_print_at_once_with_tagged_lines(gic: u8) {
    // With --log-dir: each VM's file must hold exactly what the tags say
    // is its, and the hypervisor's file its own lines.
    let logs = std::env::temp_dir().join(format!(
        "stratum-systest-logs-{}-gic{gic}",
        std::process::id()
    ));
    let config = config_with_guests("three-vms");
    let gic_arg = gic.to_string();
    let log_arg = logs.to_str().expect("a UTF-8 temp dir");
    let run = run_config(
        &config,
        TIMEOUT,
        &["--gic", &gic_arg, "--log-dir", log_arg],
        None,
    );
    let _ = std::fs::remove_file(&config);
    assert_status(&run, status::OK, "three VMs");
    let split = consoles(&run, &["alpha", "beta", "gamma"]);
    for vm in ["alpha", "beta", "gamma"] {
        let file = std::fs::read_to_string(logs.join(format!("{vm}.log")))
            .unwrap_or_else(|e| panic!("{vm}.log: {e}\n{}", run.describe()));
        let expected: String = split
            .lines(vm)
            .iter()
            .map(|l| format!("{}\n", l.text))
            .collect();
        assert_eq!(file, expected, "{vm}.log must be {vm}'s lines, whole");
    }
    let hypervisor = std::fs::read_to_string(logs.join("stratum.log")).expect("stratum.log");
    assert!(
        hypervisor.lines().all(|l| l.starts_with("[stratum] "))
            && hypervisor.contains("no VM left running"),
        "stratum.log must hold the hypervisor's lines:\n{hypervisor}"
    );
    let _ = std::fs::remove_dir_all(&logs);
    assert_ticks(&run, &split, "alpha", 25);
    assert_ticks(&run, &split, "beta", 18);
    assert_vm_passed(&run, &split, "alpha", "ticker");
    assert_vm_passed(&run, &split, "beta", "ticker");
    assert_vm_passed(&run, &split, "gamma", "hello");
    // Each VM is the VM its tag says: gamma (the third) learns its id and
    // command line from Stratum.
    let gamma = split.text("gamma");
    assert!(
        gamma.contains("Stratum: ABI 2 VM 2 vCPU 0 boot 1")
            && gamma.contains("bootargs: \"hello from the third VM\""),
        "gamma must see VM id 2 and its own command line\n{}",
        run.describe()
    );
    for vm in ["alpha", "beta"] {
        assert!(
            split
                .text(vm)
                .contains(&format!("gic: v{gic} from the device tree")),
            "{vm} must find a GICv{gic}\n{}",
            run.describe()
        );
    }
    for (vm, args) in [
        ("alpha", "every 40 ms, 25 ticks"),
        ("beta", "every 55 ms, 18 ticks"),
    ] {
        assert!(
            split.text(vm).contains(args),
            "{vm} must see its own command line ({args})\n{}",
            run.describe()
        );
    }
    // The consoles really are interleaved: the two tickers' lines alternate
    // rather than one VM's output following the other's.
    let span = |vm| {
        let lines = split.lines(vm);
        (lines[0].console_line, lines[lines.len() - 1].console_line)
    };
    let (a, b) = (span("alpha"), span("beta"));
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "alpha ({a:?}) and beta ({b:?}) printed one after the other, not at once\n{}",
        run.describe()
    );
}

#[test]
fn timeshare_every_vcpu_progresses_gic3() {
    timeshare_every_vcpu_progresses(3);
}

#[test]
fn timeshare_every_vcpu_progresses_gic2() {
    timeshare_every_vcpu_progresses(2);
}

fn timeshare_every_vcpu_progresses(gic: u8) {
    let run = run_example("timeshare", gic, None);
    assert_status(&run, status::OK, "time-sharing");
    let split = consoles(&run, &["spinner", "ticker"]);
    assert_vm_passed(&run, &split, "spinner", "spinner");
    assert_vm_passed(&run, &split, "ticker", "ticker");
    assert_ticks(&run, &split, "ticker", 15);
    let text = split.text("spinner");
    assert!(
        text.contains("spinner: 3 vCPUs"),
        "the spinner VM must have 3 vCPUs\n{}",
        run.describe()
    );
    // Every report lists every vCPU's counter; each counter grows from one
    // report to the next (no vCPU starves for a whole period).
    let reports: Vec<Vec<u64>> = split
        .lines("spinner")
        .iter()
        .filter(|l| l.text.starts_with("spinner report "))
        .map(|l| {
            (0..3)
                .map(|i| {
                    numbers_after(&l.text, &format!("vcpu{i}="))
                        .first()
                        .copied()
                        .unwrap_or_else(|| panic!("no vcpu{i} in {:?}\n{}", l.text, run.describe()))
                })
                .collect()
        })
        .collect();
    assert!(
        reports.len() >= 5,
        "expected at least 5 reports, got {}\n{}",
        reports.len(),
        run.describe()
    );
    for pair in reports.windows(2) {
        for vcpu in 0..3 {
            assert!(
                pair[1][vcpu] > pair[0][vcpu],
                "vCPU {vcpu} made no progress between reports {:?} and {:?}\n{}",
                pair[0],
                pair[1],
                run.describe()
            );
        }
    }
}

#[test]
fn pingpong_through_a_channel_gic3() {
    pingpong_through_a_channel(3);
}

#[test]
fn pingpong_through_a_channel_gic2() {
    pingpong_through_a_channel(2);
}

fn pingpong_through_a_channel(gic: u8) {
    let run = run_example("pingpong", gic, None);
    assert_status(&run, status::OK, "ping-pong");
    let split = consoles(&run, &["ping", "pong"]);
    for (vm, role, peer) in [("ping", "ping", "pong"), ("pong", "pong", "ping")] {
        assert_vm_passed(&run, &split, vm, "pingpong");
        let text = split.text(vm);
        assert!(
            text.contains(&format!(
                "pingpong: {role} on channel 'pp' (id 0) to '{peer}'"
            )),
            "{vm}: channel 'pp' (id 0) to {peer} expected in its DT\n{}",
            run.describe()
        );
        assert!(
            text.contains("check DOORBELL for a channel this VM lacks is refused: ok")
                && text.contains(&format!("pingpong: {role} round 200 done")),
            "{vm}: all 200 rounds\n{}",
            run.describe()
        );
        let doorbells = numbers_after(&text, "pingpong: 200 rounds, ");
        assert!(
            doorbells.len() == 1 && doorbells[0] > 0,
            "{vm}: doorbell interrupts must have arrived: {doorbells:?}\n{}",
            run.describe()
        );
    }
}

#[test]
fn isolation_probe_only_aborts_and_the_victim_is_unaffected() {
    let run = run_example("isolation", 3, None);
    assert_status(&run, status::OK, "isolation");
    let split = consoles(&run, &["victim", "probe"]);
    assert_vm_passed(&run, &split, "victim", "canary");
    assert_vm_passed(&run, &split, "probe", "probe");
    // 0x4000_0000..0x8000_0000 in 2 MiB steps, less its own 64 MiB: 480
    // addresses, each read and written, each aborted.
    let probe = split.text("probe");
    assert!(
        probe.contains("probe: 480 reads and 480 writes aborted")
            && probe.contains("check own RAM above the image is all zero: ok")
            && !probe.contains("NOT aborted"),
        "probe must see only aborts, and zeroed RAM of its own\n{}",
        run.describe()
    );
    // The `sync` channel ordered it: the victim wrote, then the probes ran,
    // then the victim checked its pattern once more.
    let step = |vm: &str, needle: &str| {
        split
            .find(vm, needle)
            .unwrap_or_else(|| panic!("{vm} never printed {needle:?}\n{}", run.describe()))
    };
    let written = step("victim", "MiB written");
    let ready = step("probe", "the victim has written its memory");
    let probed = step("probe", "writes aborted");
    let done = step("victim", "canary: the prober is done");
    let intact = step("victim", "2 checks, pattern intact");
    assert!(
        written < ready && ready < probed && probed < done && done < intact,
        "expected write ({written}) < probe start ({ready}) < probes ({probed}) < victim told ({done}) < last check ({intact})\n{}",
        run.describe()
    );
}

#[test]
fn crash_stops_one_vm_and_the_others_finish_gic3() {
    crash_stops_one_vm_and_the_others_finish(3);
}

#[test]
fn crash_stops_one_vm_and_the_others_finish_gic2() {
    crash_stops_one_vm_and_the_others_finish(2);
}

fn crash_stops_one_vm_and_the_others_finish(gic: u8) {
    let run = run_example("crash", gic, None);
    assert_status(&run, status::VM_CRASHED, "one VM crashed");
    let split = consoles(&run, &["steady", "crash", "slow"]);
    assert_vm_passed(&run, &split, "steady", "ticker");
    assert_vm_passed(&run, &split, "slow", "ticker");
    assert_ticks(&run, &split, "steady", 20);
    assert_ticks(&run, &split, "slow", 20);
    let crash = split.text("crash");
    assert!(
        crash.contains("crash: crashing now") && split.markers("crash").is_empty(),
        "the crash VM prints its marker and nothing after (no verdict)\n{}",
        run.describe()
    );
    let Some(reported) = hypervisor_line(&split, &["'crash'", "crashed"]) else {
        panic!(
            "the hypervisor must report VM 'crash' as crashed\n{}",
            run.describe()
        )
    };
    let slow_done = split
        .find("slow", "STRATUM-TEST PASS")
        .expect("slow passed");
    assert!(
        reported < slow_done,
        "the other VMs must keep running after the crash (crash reported at line {reported}, slow finished at {slow_done})\n{}",
        run.describe()
    );
    assert!(
        hypervisor_line(&split, &["'steady'", "crashed"]).is_none()
            && hypervisor_line(&split, &["'slow'", "crashed"]).is_none(),
        "only the crash VM crashed\n{}",
        run.describe()
    );
}

#[test]
fn restart_fifty_times_without_growing() {
    let run = run_example("restart", 3, None);
    assert_status(&run, status::OK, "restart 50 times");
    let split = consoles(&run, &["restart", "ticker"]);
    assert_vm_passed(&run, &split, "restart", "restart");
    assert_vm_passed(&run, &split, "ticker", "ticker");
    assert_ticks(&run, &split, "ticker", 20);
    // `restart: boot B of 50: mem_info tables=T ram=R pool_free=F`
    let boots: Vec<(u64, [u64; 3])> = split
        .lines("restart")
        .iter()
        .filter(|l| l.text.starts_with("restart: boot "))
        .map(|l| {
            let field = |key: &str| {
                numbers_after(&l.text, key)
                    .first()
                    .copied()
                    .unwrap_or_else(|| panic!("no {key} in {:?}\n{}", l.text, run.describe()))
            };
            (
                field("restart: boot "),
                [field("tables="), field("ram="), field("pool_free=")],
            )
        })
        .collect();
    let numbers: Vec<u64> = boots.iter().map(|b| b.0).collect();
    assert_eq!(
        numbers,
        (1..=50).collect::<Vec<_>>(),
        "boots 1 to 50 in order\n{}",
        run.describe()
    );
    let second = boots[1].1;
    for (boot, mem) in &boots[1..] {
        assert_eq!(
            *mem,
            second,
            "MEM_INFO (tables, ram, pool_free) at boot {boot} differs from boot 2\n{}",
            run.describe()
        );
    }
    assert!(
        second[0] > 0 && second[1] > 0,
        "MEM_INFO reports memory in use: {second:?}"
    );
}

/// Console input goes to one VM at a time: typed first, `xyz` goes to VM 0
/// (`steady`, which never reads); three Ctrl-A move input to `reader`, which
/// must receive exactly `ping\n`; the escape prints the status line.
#[test]
fn console_escape_moves_input_between_vms() {
    let kernel = |guest| format!("{:?}", stratum_systests::guest_elf(guest).to_string_lossy());
    let config = std::env::temp_dir().join(format!(
        "stratum-systest-console-{}.toml",
        std::process::id()
    ));
    let text = format!(
        "[machine]\ncpus = 2\nmemory = \"512M\"\n\n\
         [[vm]]\nname = \"steady\"\nkernel = {}\ncmdline = \"period_ms=100 ticks=30\"\nmemory = \"32M\"\n\n\
         [[vm]]\nname = \"reader\"\nkernel = {}\nmemory = \"32M\"\n",
        kernel("ticker"),
        kernel("uartirq"),
    );
    std::fs::write(&config, text).expect("write a temporary config");
    let run = run_config(
        &config,
        TIMEOUT,
        &[],
        Some((
            "uartirq: ready for input",
            "xyz\n\u{1}\u{1}s\u{1}\u{1}\u{1}ping\n",
        )),
    );
    let _ = std::fs::remove_file(&config);
    assert_status(&run, status::OK, "console escape");
    let split = consoles(&run, &["steady", "reader"]);
    assert_vm_passed(&run, &split, "reader", "uartirq");
    assert_vm_passed(&run, &split, "steady", "ticker");
    assert!(
        split
            .text("reader")
            .contains("uartirq: got \"ping\" (5 bytes received)"),
        "reader must receive exactly \"ping\\n\" (not what was typed for steady)\n{}",
        run.describe()
    );
    assert!(
        hypervisor_line(
            &split,
            &["console: input to reader; VMs: steady running, reader running (input)"]
        )
        .is_some(),
        "the escape prints who has input and every VM's state\n{}",
        run.describe()
    );
    // Ctrl-A Ctrl-A s (typed while `steady` had input): every VM's exit
    // statistics on demand, and no `s` reached a VM.
    assert!(
        hypervisor_line(&split, &["vm0 'steady' (running): exits by reason"]).is_some()
            && hypervisor_line(&split, &["vm1 'reader' (running): exits by reason"]).is_some(),
        "the statistics escape prints each running VM's table\n{}",
        run.describe()
    );
}

/// Debian's U-Boot for `virt` (`u-boot-qemu`, which `cargo xtask test`
/// installs) as a guest beside a ticker (`configs/uboot.toml`,
/// `firmware = true`): it finds its device tree at the start of RAM and
/// reads its environment from the emulated flash (erased: "bad CRC, using
/// default environment"), reaches its prompt, and runs what is typed: a
/// key stops the autoboot, `version` and `setenv`/`echo` answer, `reset` reboots
/// that VM alone (its banner again, boot 2), and in the second boot
/// `poweroff` stops it; the ticker ticks through both and passes.
#[test]
fn uboot_boots_as_a_guest_and_its_reset_and_poweroff_are_its_own() {
    let uboot = std::path::Path::new("/usr/lib/u-boot/qemu_arm64/u-boot.bin");
    assert!(
        uboot.is_file(),
        "{} is missing: install Debian's u-boot-qemu (cargo xtask test does)",
        uboot.display()
    );
    let config = config_with_guests("uboot");
    let autoboot = "Hit any key to stop autoboot";
    let run = run_config_script(
        &config,
        TIMEOUT,
        &[],
        &[
            (
                autoboot,
                "\rsetenv answer 42; echo stratum-$answer\rversion\rreset\r",
            ),
            (autoboot, "\rpoweroff\r"),
        ],
    );
    let _ = std::fs::remove_file(&config);
    assert_status(&run, status::OK, "uboot");
    let split = consoles(&run, &["uboot", "ticker"]);
    let lines: Vec<&str> = split.lines("uboot").iter().map(|l| l.text.trim()).collect();
    let banners = lines
        .iter()
        .filter(|l| l.starts_with("U-Boot 2023"))
        .count();
    // Each boot prints its banner; `version` prints it once more.
    assert_eq!(
        banners,
        3,
        "two boots and one `version`\n{}",
        run.describe()
    );
    for want in [
        "Loading Environment from Flash... *** Warning - bad CRC, using default environment",
        "stratum-42",
        "=> reset",
        "=> poweroff",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "uboot: no `{want}` line\n{}",
            run.describe()
        );
    }
    assert!(
        hypervisor_line(&split, &["vm0 'uboot' stopped (poweroff) after 2 boot(s)"]).is_some(),
        "uboot stops by its own poweroff, in its second boot\n{}",
        run.describe()
    );
    // Its environment came from the emulated flash.
    assert!(
        hypervisor_line(&split, &["mmio flash read"]).is_some(),
        "uboot's exit table shows flash reads\n{}",
        run.describe()
    );
    assert_vm_passed(&run, &split, "ticker", "ticker");
    assert_ticks(&run, &split, "ticker", 40);
}
