//! Interrupt system tests: the guests that need Stratum's virtual GIC and
//! timer (`vtimer`, `timerline`, `sgi`, `lrflood`, `gicprio`, `gicregs`,
//! `gichammer`, `uartirq`), each on GICv2 and GICv3 (cortex-a57), plus
//! `-cpu max` runs of `vtimer` and `lrflood`, and `timerline` twice on one
//! time-shared CPU.
//!
//! Run them with `cargo xtask test` (or `cargo test -p stratum-systests
//! --test interrupts` with `STRATUM_BIN`, `STRATUM_GUESTS_DIR` and
//! `STRATUM_HYPERVISOR` set).
//!
//! The expectations were validated by running the same guests on bare QEMU
//! (`-M virt,gic-version=2|3 -cpu cortex-a57|max`, at EL1, no hypervisor):
//! a real GIC and timer behave as the virtual ones must.

use stratum_systests::{
    DEFAULT_TIMEOUT, GuestOpts, Run, Verdict, assert_in_order, assert_passed, guest_elf,
    run_config, run_guest, split_by_tag,
};

/// What `uartirq` prints when it is ready, and the line the test types.
const UART_READY: &str = "uartirq: ready for input";
const UART_INPUT: &str = "ping\n";

fn run(guest: &str, gic: u8, cpu: &str) -> Run {
    run_guest(
        guest,
        &GuestOpts {
            gic,
            cpu,
            timeout: DEFAULT_TIMEOUT,
            input: (guest == "uartirq").then_some((UART_READY, UART_INPUT)),
            ..GuestOpts::default()
        },
    )
}

/// Passed, and found the GIC of the right version in its device tree.
fn check_common(run: &Run, guest: &str, gic: u8) {
    assert_passed(run, guest);
    assert_in_order(run, &[&format!("gic: v{gic} from the device tree")]);
}

fn check_vtimer(run: &Run, gic: u8) {
    check_common(run, "vtimer", gic);
    assert_in_order(
        run,
        &[
            "CNTVCT at boot: ",
            "CNTFRQ_EL0: ",
            "check vtimer spinning: interrupts taken: got 20, want 20: ok",
            "check vtimer spinning: interrupts before their deadline: got 0, want 0: ok",
            "check vtimer spinning: interrupts out of order: got 0, want 0: ok",
            "vtimer spinning: latency min ",
            "check vtimer in wfi: interrupts taken: got 20, want 20: ok",
            "check vtimer in wfi: waited in wfi: ok",
            "vtimer in wfi: latency min ",
            "check ptimer: interrupts taken: got 5, want 5: ok",
            "check stray interrupts: got 0, want 0: ok",
            "STRATUM-TEST PASS vtimer",
        ],
    );
}

fn check_sgi(run: &Run, gic: u8) {
    check_common(run, "sgi", gic);
    let expected: &[&str] = if gic == 3 {
        &[
            "ICC_SGI1R_EL1 TargetList=self: sent SGIs 0-15",
            "check ICC_SGI1R_EL1 TargetList=self: SGIs not delivered exactly once: got 0, want 0: ok",
            "check ICC_SGI1R_EL1 IRM=1: SGIs delivered to self: got 0, want 0: ok",
            "check SGIs left pending: got 0, want 0: ok",
        ]
    } else {
        &[
            "check GICD_SGIR filter=self: SGIs not delivered exactly once: got 0, want 0: ok",
            "check GICD_SGIR filter=list(self): SGIs not delivered exactly once: got 0, want 0: ok",
            "check GICD_SGIR filter=all-but-self: SGIs delivered to self: got 0, want 0: ok",
            "check SGIs left pending: got 0, want 0: ok",
        ]
    };
    assert_in_order(run, expected);
}

fn check_lrflood(run: &Run, gic: u8) {
    check_common(run, "lrflood", gic);
    assert_in_order(
        run,
        &[
            "pending before unmasking: 12 of 12",
            "arrival order: 41 2 45 43 20 47 1 44 40 3 46 42",
            "check interrupts taken: got 12, want 12: ok",
            "check highest priority first, each exactly once: ok",
            "check left pending or active: got 0, want 0: ok",
        ],
    );
}

fn check_gicprio(run: &Run, gic: u8) {
    check_common(run, "gicprio", gic);
    assert_in_order(
        run,
        &[
            "check priority 0xa0 under PMR 0x80: taken: got 0, want 0: ok",
            "check priority 0x40 under PMR 0x80: taken: got 1, want 1: ok",
            "check priority 0xa0 after raising PMR: taken: got 1, want 1: ok",
            "check in its handler: ISACTIVER shows it: ok",
            "check in its handler, set pending again: ISPENDR shows it: ok",
            "check delivered again after EOI (deliveries): got 2, want 2: ok",
            "check 0x20 preempted the 0xc0 handler: ok",
            "check same priority (0xc0) taken inside the outer handler: got 0, want 0: ok",
            "check same priority taken after the outer EOI: got 1, want 1: ok",
        ],
    );
}

fn check_gicregs(run: &Run, gic: u8) {
    check_common(run, "gicregs", gic);
    let arch_rev =
        format!("check GICD_PIDR2.ArchRev matches the GIC version: got {gic}, want {gic}: ok");
    let mut expected = vec![
        "check GICD_CTLR enables as written",
        arch_rev.as_str(),
        "check SPIs 45-47: ICENABLER clears only the bits written",
        "implemented priority bits: mask 0x",
        "check IPRIORITYR byte write changes only its byte",
        "check ICFGR0: SGIs edge, read-only: got 0xaaaaaaaa",
    ];
    if gic == 3 {
        expected.extend([
            "check IROUTER 64-bit readback (own affinity)",
            "check GICR_TYPER.Affinity = MPIDR affinity",
            "check GICR_WAKER: ProcessorSleep=0 -> ChildrenAsleep=0: ok",
        ]);
    } else {
        expected.push("check ITARGETSR byte readback (SPI 46)");
    }
    expected.push("check reserved offsets reading non-zero: got 0, want 0: ok");
    assert_in_order(run, &expected);
}

fn check_gichammer(run: &Run, gic: u8) {
    check_common(run, "gichammer", gic);
    assert_in_order(
        run,
        &[
            "seed 0x5eed0f61c4a11d2b, 2000 writes",
            "still running after the hammer",
            "check legal writes that aborted: got 0, want 0: ok",
            "check re-initialization: ok",
            "check SGI 3 deliveries: got 1, want 1: ok",
            "check SPI 40 deliveries: got 1, want 1: ok",
        ],
    );
}

/// The cases `timerline` tallies (timer, how the line dropped, how it was
/// observed), each of which must report every round as expected.
fn timerline_expectations(rounds: u32) -> Vec<String> {
    let mut want = Vec::new();
    for timer in ["vtimer", "ptimer"] {
        for how in ["disabled", "masked", "re-armed for later"] {
            for seen in ["registers", "wfi"] {
                let case = format!("check {timer} {how}, seen by {seen}");
                want.push(format!(
                    "{case}: pending while due: got {rounds}, want {rounds}: ok"
                ));
                want.push(format!("{case}: pending after the drop: got 0, want 0: ok"));
                want.push(format!("{case}: taken after the drop: got 0, want 0: ok"));
                if seen == "wfi" {
                    want.push(format!(
                        "{case}: woken before the other timer: got 0, want 0: ok"
                    ));
                    want.push(format!(
                        "{case}: woken by the other timer: got {rounds}, want {rounds}: ok"
                    ));
                }
                want.push(format!(
                    "{case}: taken once the line rose: got {rounds}, want {rounds}: ok"
                ));
            }
        }
    }
    want.push("check stray interrupts: got 0, want 0: ok".to_string());
    want
}

fn check_timerline(run: &Run, gic: u8) {
    check_common(run, "timerline", gic);
    let want = timerline_expectations(4);
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_in_order(run, &want);
}

/// Two `timerline` VMs time-share one physical CPU with a 1 ms slice, so
/// that the other VM runs between a round's steps: each must see only its
/// own timers' lines.
fn timerline_time_shared(gic: u8) {
    let elf = format!("{:?}", guest_elf("timerline").to_string_lossy());
    let vm = |name: &str| {
        format!(
            "[[vm]]\nname = \"{name}\"\nkernel = {elf}\ncmdline = \"rounds=6\"\n\
             memory = \"32M\"\nplacement = \"shared\"\npcpus = [0]\n\n"
        )
    };
    let text = format!(
        "[machine]\ncpus = 1\nmemory = \"512M\"\n\n[system]\nslice = \"1ms\"\n\n{}{}",
        vm("left"),
        vm("right")
    );
    let path = std::env::temp_dir().join(format!(
        "stratum-systest-timerline-{gic}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write a temporary config");
    let gic_arg = gic.to_string();
    let run = run_config(&path, DEFAULT_TIMEOUT * 2, &["--gic", &gic_arg], None);
    let _ = std::fs::remove_file(&path);
    let split = split_by_tag(&run.console, &["left", "right"])
        .unwrap_or_else(|e| panic!("badly tagged console: {e}\n{}", run.describe()));
    let want = timerline_expectations(6);
    for name in ["left", "right"] {
        let markers = split.markers(name);
        assert!(
            markers.iter().any(|m| m.verdict == Verdict::Pass)
                && !markers
                    .iter()
                    .any(|m| matches!(m.verdict, Verdict::Fail(_))),
            "VM {name}: expected `STRATUM-TEST PASS timerline`, got {markers:?}\n{}",
            run.describe()
        );
        let lines: Vec<&str> = split.lines(name).iter().map(|l| l.text.as_str()).collect();
        for line in &want {
            assert!(
                lines.contains(&line.as_str()),
                "VM {name}: no line {line:?}\n{}",
                run.describe()
            );
        }
    }
    assert!(
        run.console.contains("[stratum] no VM left running"),
        "both VMs finished\n{}",
        run.describe()
    );
}

#[test]
fn timerline_time_shared_gic2() {
    timerline_time_shared(2);
}

#[test]
fn timerline_time_shared_gic3() {
    timerline_time_shared(3);
}

fn check_uartirq(run: &Run, gic: u8) {
    check_common(run, "uartirq", gic);
    assert_in_order(
        run,
        &[
            "pl011 at 0x9000000, INTID 33 (from the device tree)",
            UART_READY,
            "uartirq: got \"ping\"",
            "check transmit interrupt (TXMIS) after writing UARTDR: ok",
            "STRATUM-TEST PASS uartirq",
        ],
    );
}

macro_rules! interrupt_test {
    ($name:ident, $guest:literal, $gic:literal, $cpu:literal, $check:ident) => {
        #[test]
        fn $name() {
            $check(&run($guest, $gic, $cpu), $gic);
        }
    };
}

interrupt_test!(vtimer_gic2, "vtimer", 2, "cortex-a57", check_vtimer);
interrupt_test!(vtimer_gic3, "vtimer", 3, "cortex-a57", check_vtimer);
interrupt_test!(vtimer_gic3_max, "vtimer", 3, "max", check_vtimer);
interrupt_test!(
    timerline_gic2,
    "timerline",
    2,
    "cortex-a57",
    check_timerline
);
interrupt_test!(
    timerline_gic3,
    "timerline",
    3,
    "cortex-a57",
    check_timerline
);
interrupt_test!(sgi_gic2, "sgi", 2, "cortex-a57", check_sgi);
interrupt_test!(sgi_gic3, "sgi", 3, "cortex-a57", check_sgi);
interrupt_test!(lrflood_gic2, "lrflood", 2, "cortex-a57", check_lrflood);
interrupt_test!(lrflood_gic3, "lrflood", 3, "cortex-a57", check_lrflood);
interrupt_test!(lrflood_gic2_max, "lrflood", 2, "max", check_lrflood);
interrupt_test!(gicprio_gic2, "gicprio", 2, "cortex-a57", check_gicprio);
interrupt_test!(gicprio_gic3, "gicprio", 3, "cortex-a57", check_gicprio);
interrupt_test!(gicregs_gic2, "gicregs", 2, "cortex-a57", check_gicregs);
interrupt_test!(gicregs_gic3, "gicregs", 3, "cortex-a57", check_gicregs);
interrupt_test!(
    gichammer_gic2,
    "gichammer",
    2,
    "cortex-a57",
    check_gichammer
);
interrupt_test!(
    gichammer_gic3,
    "gichammer",
    3,
    "cortex-a57",
    check_gichammer
);
interrupt_test!(uartirq_gic2, "uartirq", 2, "cortex-a57", check_uartirq);
interrupt_test!(uartirq_gic3, "uartirq", 3, "cortex-a57", check_uartirq);
