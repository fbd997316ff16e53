//! Debug and PMU virtualization (ADR 0012): the `debugpmu` guest uses
//! breakpoints, watchpoints, single-step and the PMU from EL1, on GICv2
//! and GICv3, alone, and as two instances that arm each other's targets,
//! time-sharing one physical CPU or pinned to one each. A breakpoint,
//! watchpoint or counter of one instance that leaked into the other would
//! fire there, or show in its read-backs, and fail it.
//!
//! Run them with `cargo xtask test` (or `cargo test -p stratum-systests
//! --test debugpmu` with `STRATUM_BIN`, `STRATUM_GUESTS_DIR` and
//! `STRATUM_HYPERVISOR` set).

use std::time::Duration;

use stratum_systests::{
    DEFAULT_TIMEOUT, GuestOpts, Run, Verdict, assert_passed, assert_status, guest_elf, run_config,
    run_guest, split_by_tag, status,
};

/// Timeout of a two-instance run.
const TIMEOUT: Duration = Duration::from_secs(120);

fn alone(gic: u8) {
    let run = run_guest(
        "debugpmu",
        &GuestOpts {
            gic,
            timeout: DEFAULT_TIMEOUT,
            ..GuestOpts::default()
        },
    );
    assert_passed(&run, "debugpmu");
    for needle in [
        "check breakpoint taken at EL1",
        "check watchpoint taken on the store",
        "check EL0 instructions single-stepped: got 6, want 6: ok",
        "check PMEVTYPER0_EL0 without NSH: got 0x11, want 0x11: ok",
        "check SW_INCR counts enabled increments: got 5, want 5: ok",
    ] {
        assert!(
            run.console.contains(needle),
            "missing {needle:?}\n{}",
            run.describe()
        );
    }
}

#[test]
fn debug_and_pmu_work_alone_gicv2() {
    alone(2);
}

#[test]
fn debug_and_pmu_work_alone_gicv3() {
    alone(3);
}

/// Two instances, `a` and `b`: on physical CPU 0 both (`shared`), or one
/// each (pinned), with a 2 ms slice so that they switch hundreds of times.
fn pair(gic: u8, shared: bool) -> Run {
    let elf = guest_elf("debugpmu");
    let kernel = format!("{:?}", elf.to_string_lossy());
    let vm = |name: &str, pcpu: u8| {
        let placement = if shared { "shared" } else { "pinned" };
        format!(
            "[[vm]]\nname = \"{name}\"\nkernel = {kernel}\ncmdline = \"role={name} ms=2000\"\n\
             placement = \"{placement}\"\npcpus = [{pcpu}]\nmemory = \"32M\"\n\n"
        )
    };
    let text = format!(
        "[machine]\ncpus = 2\nmemory = \"512M\"\n\n[system]\nslice = \"2ms\"\n\n{}{}",
        vm("a", 0),
        vm("b", if shared { 0 } else { 1 }),
    );
    let config = std::env::temp_dir().join(format!(
        "stratum-systest-debugpmu-{}-{gic}-{shared}.toml",
        std::process::id()
    ));
    std::fs::write(&config, text).expect("write a temporary config");
    let gic = gic.to_string();
    let run = run_config(&config, TIMEOUT, &["--gic", &gic], None);
    let _ = std::fs::remove_file(&config);
    run
}

#[track_caller]
fn assert_both_passed(run: &Run) {
    assert_status(run, status::OK, "two debugpmu instances");
    let split = split_by_tag(&run.console, &["a", "b"])
        .unwrap_or_else(|e| panic!("badly tagged console: {e}\n{}", run.describe()));
    for vm in ["a", "b"] {
        let markers = split.markers(vm);
        assert!(
            markers
                .iter()
                .any(|m| m.guest == "debugpmu" && m.verdict == Verdict::Pass)
                && !markers
                    .iter()
                    .any(|m| matches!(m.verdict, Verdict::Fail(_))),
            "VM {vm}: expected `STRATUM-TEST PASS debugpmu`, got {markers:?}\n{}",
            run.describe()
        );
        let text = split.text(vm);
        assert!(
            text.contains("check read-backs that saw another vCPU's value: got 0, want 0: ok")
                && text.contains("check own breakpoint still fires: ok"),
            "VM {vm} did not run its isolation checks\n{}",
            run.describe()
        );
    }
}

#[test]
fn time_shared_vcpus_keep_their_own_debug_and_pmu_state_gicv2() {
    assert_both_passed(&pair(2, true));
}

#[test]
fn time_shared_vcpus_keep_their_own_debug_and_pmu_state_gicv3() {
    let run = pair(3, true);
    assert_both_passed(&run);
    assert!(
        run.console.contains("irq preempt"),
        "the two instances must have been preempted (time-shared)\n{}",
        run.describe()
    );
}

#[test]
fn pinned_vcpus_keep_their_own_debug_and_pmu_state_gicv2() {
    assert_both_passed(&pair(2, false));
}

#[test]
fn pinned_vcpus_keep_their_own_debug_and_pmu_state_gicv3() {
    assert_both_passed(&pair(3, false));
}
