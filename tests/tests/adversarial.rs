//! The adversarial suite without Linux (issue 14): the `adversary` guest
//! (`guests/src/bin/adversary.rs`) attacks every interface with seeded
//! random inputs, alone on GICv2 and GICv3 with several seeds, and on a CPU
//! it time-shares with a `ticker` neighbour (its virtio-console, vsock
//! device and, beside the ticker, a NIC on a network with it live behind
//! the transports it writes to); and the restart soak, which
//! restarts a VM 100 times beside a neighbour. The Linux half (a Debian VM
//! running the workload program beside the adversary) is in `linux.rs`.
//!
//! Pass: no hypervisor panic or hang (the run ends by itself, status 0),
//! the adversary's own checks hold at every boot, the hypervisor's memory
//! (`MEM_INFO`: stage-2 table bytes, RAM handed out, table pool free) is
//! the same at every boot, the hypervisor prints at most
//! [`LOG_BOUND`] messages, and the neighbour's output is intact.
//!
//! Run them with `cargo xtask test` (or `cargo test -p stratum-systests
//! --test adversarial` with `STRATUM_BIN`, `STRATUM_GUESTS_DIR` and
//! `STRATUM_HYPERVISOR` set).

use std::time::Duration;

use stratum_systests::{
    Run, VmConsoles, assert_mem_info_unchanged, assert_status, console_lines, guest_elf,
    hypervisor_messages, mem_info_by_boot, run_config, split_by_tag, status,
};

/// Most hypervisor messages a run may print besides the exit tables:
/// boot banner and VM layout (about 10), the rate-limited injection
/// notes (8 per VM), one line per reset, the stop lines.
const LOG_BOUND: usize = 60;

/// Timeout of one run.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the system `text` describes on a GICv`gic` machine; it must exit 0.
fn run_text(test: &str, text: &str, gic: u8) -> Run {
    let path = std::env::temp_dir().join(format!(
        "stratum-systest-{test}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write a temporary config");
    let gic = gic.to_string();
    let run = run_config(&path, TIMEOUT, &["--gic", &gic], None);
    let _ = std::fs::remove_file(&path);
    assert_status(&run, status::OK, test);
    run
}

/// Splits a run's console by the VMs `names`.
fn split(test: &str, run: &Run, names: &[&str]) -> VmConsoles {
    split_by_tag(&run.console, names)
        .unwrap_or_else(|e| panic!("{test}: badly tagged console: {e}\n{}", run.describe()))
}

/// The checks every adversarial run shares: no panic, the adversary passed
/// after `boots` boots with the same `MEM_INFO` at each, and the
/// hypervisor's `messages` stay under the bound. `lines` are the
/// adversary's console lines.
#[track_caller]
fn check_adversary(test: &str, run: &Run, lines: &[&str], messages: &[&str], boots: u64) {
    assert!(
        !run.console.contains("panic"),
        "{test}: the hypervisor panicked\n{}",
        run.describe()
    );
    assert!(
        lines.contains(&"STRATUM-TEST PASS adversary")
            && !lines.iter().any(|l| l.starts_with("STRATUM-TEST FAIL")),
        "{test}: expected `STRATUM-TEST PASS adversary` and no failure\n{}",
        run.describe()
    );
    let mem = mem_info_by_boot(lines.iter().copied(), "adversary: boot ");
    let numbers: Vec<u64> = mem.iter().map(|m| m.0).collect();
    assert_eq!(
        numbers,
        (1..=boots).collect::<Vec<_>>(),
        "{test}: one MEM_INFO report per boot\n{}",
        run.describe()
    );
    assert_mem_info_unchanged(test, run, &mem, 0);
    // Stopped or restarted only when its own state demands it: one reset
    // per SYSTEM_RESET it made, never a crash.
    let resets = messages
        .iter()
        .filter(|m| m.contains("'adversary': reset requested"))
        .count() as u64;
    assert_eq!(
        resets,
        boots - 1,
        "{test}: one reset per boot but the last\n{}",
        run.describe()
    );
    assert!(
        !messages.iter().any(|m| m.to_lowercase().contains("crash")),
        "{test}: no VM crashed\n{}",
        run.describe()
    );
    assert!(
        messages.len() <= LOG_BOUND,
        "{test}: {} hypervisor messages, more than {LOG_BOUND}\n{}",
        messages.len(),
        run.describe()
    );
    println!(
        "{test}: {} boots, {} hypervisor messages",
        numbers.len(),
        messages.len()
    );
}

/// A split console's lines of VM `vm`, and the hypervisor's messages.
fn vm_lines_and_messages<'a>(split: &'a VmConsoles, vm: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let lines = split.lines(vm).iter().map(|l| l.text.as_str()).collect();
    let messages = hypervisor_messages(split.untagged.iter().map(|(_, l)| l.as_str()));
    (lines, messages)
}

/// The adversary alone with two vCPUs, for each of `seeds`.
fn alone(gic: u8, seeds: &[u64]) {
    let elf = guest_elf("adversary");
    for &seed in seeds {
        let test = format!("adversary_alone_gic{gic}_seed{seed}");
        let text = format!(
            "[[vm]]\nname = \"adversary\"\nkernel = {elf:?}\ncpus = 2\nmemory = \"64M\"\n\
             cmdline = \"seed={seed} boots=3 rounds=1000\"\nvsock = true\nvirtio_console = true\n"
        );
        let run = run_text(&test, &text, gic);
        // One VM: its lines are not tagged.
        let lines: Vec<&str> = console_lines(&run.console).map(str::trim_end).collect();
        let messages = hypervisor_messages(lines.iter().copied());
        check_adversary(&test, &run, &lines, &messages, 3);
    }
}

#[test]
fn adversary_alone_gic2() {
    alone(2, &[1, 2, 3]);
}

#[test]
fn adversary_alone_gic3() {
    alone(3, &[1, 2, 3]);
}

/// The adversary's two vCPUs and a `ticker` time-share one CPU (2 ms
/// slices): the ticker's 40 ticks, 50 ms apart, all arrive, in order.
fn beside_a_ticker(gic: u8) {
    let test = format!("adversary_shares_a_cpu_with_a_ticker_gic{gic}");
    let text = format!(
        "[machine]\ncpus = 1\nmemory = \"512M\"\n\n[system]\nslice = \"2ms\"\n\n\
         [[vm]]\nname = \"adversary\"\nkernel = {:?}\ncpus = 2\nmemory = \"64M\"\n\
         cmdline = \"seed=7 boots=4 rounds=2000\"\nplacement = \"shared\"\npcpus = [0]\n\
         vsock = true\nvirtio_console = true\n\n\
         [[vm]]\nname = \"ticker\"\nkernel = {:?}\nmemory = \"32M\"\n\
         cmdline = \"period_ms=50 ticks=40\"\nplacement = \"shared\"\npcpus = [0]\nvsock = true\n\n\
         [[network]]\nname = \"lan\"\nvms = [\"adversary\", \"ticker\"]\n",
        guest_elf("adversary"),
        guest_elf("ticker"),
    );
    let run = run_text(&test, &text, gic);
    let split = split(&test, &run, &["adversary", "ticker"]);
    let (lines, messages) = vm_lines_and_messages(&split, "adversary");
    check_adversary(&test, &run, &lines, &messages, 4);
    let ticks = split.ticks("ticker");
    assert_eq!(
        ticks,
        (1..=40).collect::<Vec<_>>(),
        "{test}: the ticker's ticks, in order\n{}",
        run.describe()
    );
    assert!(
        split.find("ticker", "STRATUM-TEST PASS ticker").is_some(),
        "{test}: the ticker passed\n{}",
        run.describe()
    );
}

#[test]
fn adversary_shares_a_cpu_with_a_ticker_gic2() {
    beside_a_ticker(2);
}

#[test]
fn adversary_shares_a_cpu_with_a_ticker_gic3() {
    beside_a_ticker(3);
}

/// The restart soak: `restart` resets itself 100 times while `ticker`
/// runs beside it (for 6 s, longer than the restarts take); `MEM_INFO` is
/// the same at every boot from the second on, as in `multivm.rs`'s
/// 50-restart test.
#[test]
fn restart_a_hundred_times_beside_a_neighbour() {
    let test = "restart_a_hundred_times_beside_a_neighbour";
    let text = format!(
        "[machine]\ncpus = 2\nmemory = \"512M\"\n\n\
         [[vm]]\nname = \"restart\"\nkernel = {:?}\ncmdline = \"boots=100\"\nmemory = \"32M\"\n\n\
         [[vm]]\nname = \"ticker\"\nkernel = {:?}\ncmdline = \"period_ms=100 ticks=60\"\nmemory = \"32M\"\n",
        guest_elf("restart"),
        guest_elf("ticker"),
    );
    let run = run_text(test, &text, 3);
    let split = split(test, &run, &["restart", "ticker"]);
    let (lines, messages) = vm_lines_and_messages(&split, "restart");
    let mem = mem_info_by_boot(lines.iter().copied(), "restart: boot ");
    let numbers: Vec<u64> = mem.iter().map(|m| m.0).collect();
    assert_eq!(
        numbers,
        (1..=100).collect::<Vec<_>>(),
        "{test}: boots 1 to 100 in order\n{}",
        run.describe()
    );
    assert_mem_info_unchanged(test, &run, &mem, 1);
    assert!(
        split.find("restart", "STRATUM-TEST PASS restart").is_some()
            && split.find("ticker", "STRATUM-TEST PASS ticker").is_some(),
        "{test}: both passed\n{}",
        run.describe()
    );
    // One "reset requested" line per restart, besides the usual ones.
    assert!(
        messages.len() <= LOG_BOUND + 100,
        "{test}: {} hypervisor messages\n{}",
        messages.len(),
        run.describe()
    );
}
