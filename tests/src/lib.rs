//! Stratum's system-test harness: runs the real hypervisor on QEMU (through the
//! `stratum run` CLI) with one test guest, captures the console, and checks the
//! `STRATUM-TEST PASS|FAIL` protocol the guests print (see
//! `stratum_abi::console`).
//!
//! Where things come from (normally set by `cargo xtask test`):
//! - `STRATUM_BIN`: the `stratum` CLI (fallback `<target>/debug/stratum`);
//! - `STRATUM_GUESTS_DIR`: the guest ELFs (fallback
//!   `<target>/aarch64-unknown-none/release/`);
//! - `STRATUM_HYPERVISOR`: the hypervisor `Image`, read by the CLI itself (the
//!   harness passes it on, made absolute); `STRATUM_HYPERVISOR_TRACE` likewise,
//!   the one built with the exit trace;
//! - `STRATUM_LINUX_KERNEL`, `STRATUM_LINUX_INITRD`: the Linux guest of the
//!   Linux tests (set by `cargo xtask test`, tier 3).
//!
//! Relative paths in these variables are relative to the workspace root.
//! `<target>` is `CARGO_TARGET_DIR` or `<workspace>/target`. A missing CLI or
//! guest makes the test panic with a message saying to run `cargo xtask test`:
//! system tests never pass or skip silently.
//!
//! For multi-VM runs, [`config_with_guests`] points an example config at
//! the harness's guests and [`split_by_tag`] splits the console into each
//! VM's lines by their `name | ` / `name + ` tags.
//!
//! Every run has two timeouts: the CLI's own (`--timeout`), and a hard
//! wall-clock limit here, after which the whole process group (CLI and QEMU) is
//! killed, so a hung QEMU can never hang the test run.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use stratum_abi::console::TEST_PREFIX;

/// Default per-run timeout: a guest run takes 1–3 s, but TCG is slow under the
/// parallel load of a full test run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long past the CLI's own `--timeout` the harness waits before killing it
/// (QEMU start-up and the CLI's own timeout handling).
pub const HARD_TIMEOUT_GRACE: Duration = Duration::from_secs(30);

/// How long to wait for the output pipes to close once the CLI has exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit statuses of `stratum run` (see `stratum run --help`).
pub mod status {
    /// Every guest powered off cleanly.
    pub const OK: i32 = 0;
    /// The hypervisor failed (panic, crashed VM, bad boot input).
    pub const HYPERVISOR_FAILURE: i32 = 1;
    /// Bad input: arguments, config, or image files.
    pub const BAD_INPUT: i32 = 2;
    /// The CLI's own timeout expired.
    pub const TIMEOUT: i32 = 3;
    /// Environment problem (QEMU missing, build failed, …).
    pub const ENVIRONMENT: i32 = 4;
    /// Every VM stopped and at least one of them crashed.
    pub const VM_CRASHED: i32 = 5;
    /// Every VM powered off, but an exec'd command failed.
    pub const EXEC_FAILED: i32 = 6;
}

/// How to run one guest.
#[derive(Clone, Debug)]
pub struct GuestOpts<'a> {
    /// GIC version of the machine: 2 or 3.
    pub gic: u8,
    /// QEMU CPU model (`cortex-a57`, `max`, …).
    pub cpu: &'a str,
    /// The CLI's `--timeout`; the harness kills the run at this plus
    /// [`HARD_TIMEOUT_GRACE`].
    pub timeout: Duration,
    /// Guest RAM size (`--memory`), if not the CLI's default.
    pub memory: Option<&'a str>,
    /// Further arguments appended to `stratum run …`.
    pub extra_args: &'a [&'a str],
    /// Console input: once the console shows the first text (a marker the
    /// guest prints when it is ready), the harness writes the second to the
    /// CLI's stdin (which it passes on to the guest's UART), then keeps stdin
    /// open until the run ends. `None`: stdin is `/dev/null`.
    pub input: Option<(&'a str, &'a str)>,
}

impl Default for GuestOpts<'_> {
    fn default() -> Self {
        Self {
            gic: 3,
            cpu: "cortex-a57",
            timeout: DEFAULT_TIMEOUT,
            memory: None,
            extra_args: &[],
            input: None,
        }
    }
}

/// The outcome of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// stdout and stderr, interleaved as they arrived.
    pub console: String,
    /// The exit status (`None` if killed by a signal).
    pub status: Option<i32>,
    /// The harness's hard timeout fired and it killed the run. (The CLI's own
    /// timeout shows as `status == Some(status::TIMEOUT)`.)
    pub timed_out: bool,
}

impl Run {
    /// The console's lines, without `\r`.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        console_lines(&self.console)
    }

    /// The `STRATUM-TEST` markers on the console, in order.
    pub fn markers(&self) -> Vec<Marker<'_>> {
        markers(&self.console)
    }

    /// A description for assertion messages: status and the whole console.
    pub fn describe(&self) -> String {
        format!(
            "exit status {:?}{}\n----- console ({} bytes) -----\n{}\n----- end of console -----",
            self.status,
            if self.timed_out {
                " (killed by the harness's hard timeout)"
            } else {
                ""
            },
            self.console.len(),
            self.console.trim_end()
        )
    }
}

/// The verdict of one `STRATUM-TEST` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// `STRATUM-TEST PASS <guest>`.
    Pass,
    /// `STRATUM-TEST FAIL <guest>: <why>`, with the reason.
    Fail(&'a str),
}

/// One `STRATUM-TEST` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker<'a> {
    /// The guest name it names.
    pub guest: &'a str,
    /// Pass or fail.
    pub verdict: Verdict<'a>,
}

/// Lines of `console`, with any trailing `\r` removed.
pub fn console_lines(console: &str) -> impl Iterator<Item = &str> {
    console.lines().map(|l| l.trim_end_matches('\r'))
}

/// Parses one line's `STRATUM-TEST` marker. The marker may follow a prefix the
/// hypervisor adds (e.g. a VM tag), so it is searched anywhere in the line.
pub fn parse_marker(line: &str) -> Option<Marker<'_>> {
    let start = line.find(TEST_PREFIX)?;
    let rest = line[start + TEST_PREFIX.len()..].strip_prefix(' ')?;
    if let Some(name) = rest.strip_prefix("PASS ") {
        let guest = name.split_whitespace().next()?;
        return Some(Marker {
            guest,
            verdict: Verdict::Pass,
        });
    }
    let failed = rest.strip_prefix("FAIL ")?;
    let (guest, why) = match failed.split_once(':') {
        Some((guest, why)) => (guest.trim(), why.trim()),
        None => (failed.trim(), ""),
    };
    Some(Marker {
        guest,
        verdict: Verdict::Fail(why),
    })
}

/// Every `STRATUM-TEST` marker on `console`, in order.
pub fn markers(console: &str) -> Vec<Marker<'_>> {
    console_lines(console).filter_map(parse_marker).collect()
}

/// Lines of `console` that contain `needle`.
pub fn lines_containing<'a>(console: &'a str, needle: &str) -> Vec<&'a str> {
    console_lines(console)
        .filter(|l| l.contains(needle))
        .collect()
}

/// Checks that each needle occurs on a line after the line of the previous
/// needle. On failure, says which needle was not found.
pub fn find_in_order(console: &str, needles: &[&str]) -> Result<(), String> {
    let mut lines = console_lines(console);
    for needle in needles {
        if !lines.any(|l| l.contains(needle)) {
            return Err(format!(
                "{needle:?} not found after the lines before it; expected, in order: {needles:?}"
            ));
        }
    }
    Ok(())
}

/// The numbers that follow `prefix` on the console's lines, in order: e.g.
/// `numbers_after(console, "boot count ")` gives `[1, 2, 3]`.
pub fn numbers_after(console: &str, prefix: &str) -> Vec<u64> {
    console_lines(console)
        .filter_map(|l| {
            let rest = &l[l.find(prefix)? + prefix.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Asserts that `guest` passed: a `STRATUM-TEST PASS <guest>` line, no FAIL
/// line (for any guest), exit status 0 and no timeout. The message carries the
/// whole console.
#[track_caller]
pub fn assert_passed(run: &Run, guest: &str) {
    let found = run.markers();
    let failures: Vec<_> = found
        .iter()
        .filter(|m| matches!(m.verdict, Verdict::Fail(_)))
        .collect();
    let passed = found
        .iter()
        .any(|m| m.guest == guest && m.verdict == Verdict::Pass);
    let problem = if !failures.is_empty() {
        Some(format!("guest reported failure: {failures:?}"))
    } else if !passed {
        Some(format!("no `{TEST_PREFIX} PASS {guest}` line"))
    } else if run.timed_out || run.status != Some(status::OK) {
        Some(format!(
            "guest passed but the run ended with {:?}",
            run.status
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        panic!("{guest}: {problem}\n{}", run.describe());
    }
}

/// The exit-path rows of `stratum bench` that the bench guest measures
/// under Stratum and on bare QEMU alike (`results.json`'s `op` names).
pub const BENCH_EXIT_ROWS: [&str; 7] = [
    "hvc",
    "gicd_read",
    "uart_read",
    "idreg_read",
    "vtimer_spin",
    "vtimer_wfi",
    "ipi",
];

/// Asserts that `configs/three-vms.toml` ran to its end in `run`, split
/// into `vms`: exit 0, the hypervisor's messages hold each of `needles`,
/// `alpha` ticked 1..25 and `beta` 1..18 in order, `gamma` passed.
#[track_caller]
pub fn assert_three_vms_ran(run: &Run, vms: &VmConsoles, needles: &[&str]) {
    assert_status(run, status::OK, "configs/three-vms.toml");
    for needle in needles {
        assert!(
            vms.untagged.iter().any(|(_, l)| l.contains(needle)),
            "no hypervisor line with `{needle}`\n{}",
            run.describe()
        );
    }
    for (vm, ticks) in [("alpha", 25), ("beta", 18)] {
        let want: Vec<u64> = (1..=ticks).collect();
        assert_eq!(vms.ticks(vm), want, "{vm}'s ticks\n{}", run.describe());
    }
    assert!(
        vms.passed("gamma", "hello"),
        "gamma passes\n{}",
        run.describe()
    );
}

/// Asserts that the run exited with `code` (and was not killed).
#[track_caller]
pub fn assert_status(run: &Run, code: i32, what: &str) {
    assert!(
        !run.timed_out && run.status == Some(code),
        "{what}: expected exit status {code}\n{}",
        run.describe()
    );
}

/// Asserts `needles` occur on the console in that order.
#[track_caller]
pub fn assert_in_order(run: &Run, needles: &[&str]) {
    if let Err(e) = find_in_order(&run.console, needles) {
        panic!("{e}\n{}", run.describe());
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where a path comes from: `env` if set (non-empty), else `fallback`. A
/// relative path from `env` is taken relative to the workspace root, where
/// commands are run from (cargo runs tests in the package directory).
pub fn resolve(env: Option<OsString>, fallback: PathBuf) -> PathBuf {
    env.filter(|v| !v.is_empty())
        .map(|v| workspace_root().join(v))
        .unwrap_or(fallback)
}

fn missing(what: &str, path: &Path, var: &str) -> ! {
    let source = match std::env::var_os(var) {
        Some(v) if !v.is_empty() => format!("from {var}={}", v.to_string_lossy()),
        _ => format!("the default, as {var} is not set"),
    };
    panic!(
        "{what} not found at {} ({source}).\n\
         Run the system tests with `cargo xtask test`: it builds the stratum CLI, \
         the hypervisor and the test guests, and sets STRATUM_BIN, STRATUM_GUESTS_DIR \
         and STRATUM_HYPERVISOR.",
        path.display()
    )
}

/// The `stratum` CLI to run; panics (failing the test) if it does not exist.
pub fn stratum_bin() -> PathBuf {
    let path = resolve(
        std::env::var_os("STRATUM_BIN"),
        target_dir().join("debug").join("stratum"),
    );
    if !path.is_file() {
        missing("the stratum CLI", &path, "STRATUM_BIN");
    }
    path
}

/// The ELF of test guest `name`; panics (failing the test) if it does not exist.
pub fn guest_elf(name: &str) -> PathBuf {
    let dir = resolve(
        std::env::var_os("STRATUM_GUESTS_DIR"),
        target_dir().join("aarch64-unknown-none").join("release"),
    );
    let path = dir.join(name);
    if !path.is_file() {
        missing(&format!("test guest `{name}`"), &path, "STRATUM_GUESTS_DIR");
    }
    path
}

/// A Linux test input named by environment variable `var` (set by
/// `cargo xtask test`, tier 3); panics (failing the test) if it is unset or
/// names no file.
fn linux_input(var: &str, what: &str) -> PathBuf {
    let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
        panic!(
            "{var} is not set: the Linux tests need the {what}.\n\
             Run them with `cargo xtask test` (tier 3 fetches the Debian guest and sets \
             STRATUM_LINUX_KERNEL and STRATUM_LINUX_INITRD), or run `stratum fetch debian` \
             and set both to the paths it prints."
        )
    };
    let path = workspace_root().join(path);
    if !path.is_file() {
        missing(&format!("the Linux {what}"), &path, var);
    }
    path
}

/// The Linux kernel for the Linux tests: `STRATUM_LINUX_KERNEL`.
pub fn linux_kernel() -> PathBuf {
    linux_input("STRATUM_LINUX_KERNEL", "kernel (an arm64 Image)")
}

/// The initramfs for the Linux tests: `STRATUM_LINUX_INITRD`.
pub fn linux_initrd() -> PathBuf {
    linux_input("STRATUM_LINUX_INITRD", "initramfs")
}

/// Runs `kernel` (any image the CLI takes, e.g. a Linux `Image` with
/// `--initrd` in `opts.extra_args`) under the hypervisor with `opts`, killing
/// the run after `hard_timeout`.
pub fn run_kernel(kernel: &Path, opts: &GuestOpts<'_>, hard_timeout: Duration) -> Run {
    let mut cmd = Command::new(stratum_bin());
    cmd.args(run_args(kernel, opts));
    run_command_with_input(cmd, hard_timeout, opts.input)
}

/// The `stratum` arguments for running `kernel` with `opts`.
pub fn run_args(kernel: &Path, opts: &GuestOpts<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["run".into(), "--kernel".into(), kernel.into()];
    args.extend(["--gic".into(), opts.gic.to_string().into()]);
    args.extend(["--cpu".into(), opts.cpu.into()]);
    let secs = opts.timeout.as_secs().max(1);
    args.extend(["--timeout".into(), secs.to_string().into()]);
    if let Some(memory) = opts.memory {
        args.extend(["--memory".into(), memory.into()]);
    }
    args.extend(opts.extra_args.iter().map(OsString::from));
    args
}

/// Runs test guest `guest` under the hypervisor with `opts`.
pub fn run_guest(guest: &str, opts: &GuestOpts<'_>) -> Run {
    let kernel = guest_elf(guest);
    let mut cmd = Command::new(stratum_bin());
    cmd.args(run_args(&kernel, opts));
    run_command_with_input(cmd, opts.timeout + HARD_TIMEOUT_GRACE, opts.input)
}

/// Runs the `stratum` CLI with `args`, killing it after `hard_timeout`.
pub fn run_stratum<I, S>(args: I, hard_timeout: Duration) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(stratum_bin());
    cmd.args(args);
    run_command(cmd, hard_timeout)
}

/// Runs `cmd` with stdin closed, capturing stdout and stderr together, and
/// kills its whole process group if it is still running after `hard_timeout`.
pub fn run_command(cmd: Command, hard_timeout: Duration) -> Run {
    run_command_with_input(cmd, hard_timeout, None)
}

/// Passes `STRATUM_HYPERVISOR` and `STRATUM_HYPERVISOR_TRACE` on to `cmd`,
/// made absolute: the CLI reads them relative to its own working directory
/// (the package directory, under cargo test).
pub fn pass_hypervisor_env(cmd: &mut Command) {
    for var in ["STRATUM_HYPERVISOR", "STRATUM_HYPERVISOR_TRACE"] {
        if let Some(hyp) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            cmd.env(var, workspace_root().join(hyp));
        }
    }
}

/// Whether `marker` occurs in the output captured so far (an empty marker
/// is there at once): as it is, or in one VM's text once the console's tags
/// are taken out. With several VMs, a line another writer interrupts goes on
/// under `name + ` ([`CONTINUATION_TAG`]), so a guest's marker can arrive in
/// pieces between other VMs' lines.
///
/// A marker of several lines (joined by `\n`) is due once every one of them
/// has shown, in any order: several guests that each print a line of their
/// own and start in no fixed order.
pub fn input_due(output: &[u8], marker: &str) -> bool {
    marker.split('\n').all(|line| line_due(output, line))
}

/// [`input_due`] for a marker of one line.
fn line_due(output: &[u8], marker: &str) -> bool {
    let needle = marker.as_bytes();
    if needle.is_empty() || output.windows(needle.len()).any(|w| w == needle) {
        return true;
    }
    // Each VM's text, its pieces joined: `name | ` starts a line of VM
    // `name`, `name + ` continues its last one.
    let text = String::from_utf8_lossy(output);
    let mut streams: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let tagged = [(TAG, true), (CONTINUATION_TAG, false)]
            .into_iter()
            .find_map(|(tag, new_line)| {
                let (name, rest) = line.split_once(tag)?;
                (!name.is_empty() && !name.contains(char::is_whitespace))
                    .then_some((name, rest, new_line))
            });
        let Some((name, rest, new_line)) = tagged else {
            continue;
        };
        let at = match streams.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                streams.push((name, String::new()));
                streams.len() - 1
            }
        };
        let text = &mut streams[at].1;
        if new_line && !text.is_empty() {
            text.push('\n');
        }
        text.push_str(rest);
    }
    streams.iter().any(|(_, text)| text.contains(marker))
}

/// [`run_command`], with optional console `input`: `(marker, text)` writes
/// `text` to the child's stdin once its output contains `marker` (polled),
/// and holds stdin open until the child exits. Without input, stdin is
/// `/dev/null`. A marker that never appears, or a failed write, is noted at
/// the end of the console.
pub fn run_command_with_input(
    cmd: Command,
    hard_timeout: Duration,
    input: Option<(&str, &str)>,
) -> Run {
    run_command_with_script(cmd, hard_timeout, input.as_slice())
}

/// [`run_command_with_input`] with several inputs in turn: each
/// `(marker, text)` is written once its marker shows in the output that
/// came after the previous input was written (so a marker that repeats,
/// such as a prompt or a banner after a reboot, fires each step once). A
/// marker of several lines waits for all of them ([`input_due`]).
pub fn run_command_with_script(
    mut cmd: Command,
    hard_timeout: Duration,
    script: &[(&str, &str)],
) -> Run {
    pass_hypervisor_env(&mut cmd);
    cmd.stdin(if !script.is_empty() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group, so that QEMU (a grandchild) can be killed too.
        cmd.process_group(0);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Run {
                console: format!("harness: cannot start {:?}: {e}", cmd.get_program()),
                status: None,
                timed_out: false,
            };
        }
    };
    let output = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = mpsc::channel();
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let mut readers = 0;
    for pipe in [stdout, stderr].into_iter().flatten() {
        readers += 1;
        let output = Arc::clone(&output);
        let done = done_tx.clone();
        thread::spawn(move || {
            copy_into(pipe, &output);
            let _ = done.send(());
        });
    }

    let deadline = Instant::now() + hard_timeout;
    let mut timed_out = false;
    let mut stdin = child.stdin.take();
    let mut steps = script.iter();
    let mut pending_input = steps.next().copied();
    // The output before this offset came before the last input was written.
    let mut seen = 0;
    let mut input_note = None;
    let status = loop {
        if let Some((marker, text)) = pending_input {
            let due = output
                .lock()
                .ok()
                .and_then(|o| input_due(o.get(seen..)?, marker).then_some(o.len()));
            if let Some(len) = due {
                seen = len;
                pending_input = steps.next().copied();
                if let Some(pipe) = stdin.as_mut() {
                    let sent = pipe.write_all(text.as_bytes()).and_then(|()| pipe.flush());
                    if let Err(e) = sent {
                        input_note = Some(format!("harness: could not send the input: {e}"));
                    }
                }
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                kill_tree(&mut child);
                break child.wait().ok().and_then(|s| s.code());
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(_) => {
                kill_tree(&mut child);
                break None;
            }
        }
    };

    drop(stdin);
    if let Some((marker, _)) = pending_input {
        input_note = Some(format!(
            "harness: the console never showed {marker:?}; the input was not sent"
        ));
    }

    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut drained = 0;
    while drained < readers {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
        drained += 1;
    }
    let bytes = output.lock().map(|b| b.clone()).unwrap_or_default();
    let mut console = String::from_utf8_lossy(&bytes).into_owned();
    if drained < readers {
        console.push_str("\nharness: output still open after the process exited (leaked child?)\n");
    }
    if let Some(note) = input_note {
        console.push_str(&format!("\n{note}\n"));
    }
    if timed_out {
        console.push_str(&format!(
            "\nharness: killed after the hard timeout of {} s\n",
            hard_timeout.as_secs()
        ));
    }
    Run {
        console,
        status,
        timed_out,
    }
}

/// Appends everything from `pipe` to `output`, chunk by chunk.
fn copy_into(mut pipe: Box<dyn Read + Send>, output: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut out) = output.lock() {
                    out.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

/// The example configs, `<workspace>/configs`.
pub fn configs_dir() -> PathBuf {
    workspace_root().join("configs")
}

/// Prefix of the kernel paths in the example configs: the default guest
/// directory, relative to `configs/`.
pub const CONFIG_GUEST_PREFIX: &str = "../target/aarch64-unknown-none/release/";

/// The text of example config `configs/<name>.toml` with every kernel
/// `../target/aarch64-unknown-none/release/<guest>` replaced by the harness's
/// [`guest_elf`] (so that `STRATUM_GUESTS_DIR` is honoured). Panics (failing
/// the test) if the config or a guest is missing.
pub fn config_text_with_guests(name: &str) -> String {
    let path = configs_dir().join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let rewritten = line
            .trim_start()
            .strip_prefix("kernel")
            .map(str::trim_start)
            .and_then(|l| l.strip_prefix('='))
            .map(str::trim)
            .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
            .and_then(|v| v.strip_prefix(CONFIG_GUEST_PREFIX));
        match rewritten {
            Some(guest) => {
                let elf = guest_elf(guest);
                out.push_str(&format!("kernel = {:?}\n", elf.to_string_lossy()));
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Writes [`config_text_with_guests`] of `configs/<name>.toml` to a
/// temporary file (unique per call) and returns its path.
pub fn config_with_guests(name: &str) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "stratum-systest-config-{name}-{}-{call}.toml",
        std::process::id()
    ));
    std::fs::write(&path, config_text_with_guests(name)).expect("write a temporary config");
    path
}

/// Runs `stratum run <config> --timeout <timeout> <extra_args>`, with
/// optional console `input` (see [`run_command_with_input`]); the hard
/// timeout is `timeout` plus [`HARD_TIMEOUT_GRACE`].
pub fn run_config(
    config: &Path,
    timeout: Duration,
    extra_args: &[&str],
    input: Option<(&str, &str)>,
) -> Run {
    run_config_script(config, timeout, extra_args, input.as_slice())
}

/// [`run_config`] with console input in steps ([`run_command_with_script`]).
pub fn run_config_script(
    config: &Path,
    timeout: Duration,
    extra_args: &[&str],
    script: &[(&str, &str)],
) -> Run {
    let mut cmd = Command::new(stratum_bin());
    cmd.arg("run").arg(config);
    cmd.args(["--timeout", &timeout.as_secs().max(1).to_string()]);
    cmd.args(extra_args);
    run_command_with_script(cmd, timeout + HARD_TIMEOUT_GRACE, script)
}

/// One line of one VM's console output, put back together from the tagged
/// fragments on the physical console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmLine {
    /// The text, without the tag and without `\r`.
    pub text: String,
    /// Index (in [`console_lines`]) of the console line that ended it.
    pub console_line: usize,
}

/// A multi-VM console split by VM tag: `name | ` starts a VM's line,
/// `name + ` continues one that another writer interrupted.
#[derive(Clone, Debug, Default)]
pub struct VmConsoles {
    names: Vec<String>,
    lines: Vec<Vec<VmLine>>,
    /// Console lines without a VM tag (hypervisor messages), with their index.
    pub untagged: Vec<(usize, String)>,
}

/// The separator after a VM name at the start of a line.
pub const TAG: &str = " | ";
/// The separator after a VM name on a continued line.
pub const CONTINUATION_TAG: &str = " + ";

impl VmConsoles {
    /// The numbers of VM `name`'s `tick N` lines, in order (the ticker
    /// guest's output).
    pub fn ticks(&self, name: &str) -> Vec<u64> {
        self.lines(name)
            .iter()
            .filter_map(|l| l.text.strip_prefix("tick ")?.parse().ok())
            .collect()
    }

    /// Whether VM `name` printed `STRATUM-TEST PASS <guest>`.
    pub fn passed(&self, name: &str, guest: &str) -> bool {
        self.markers(name)
            .iter()
            .any(|m| m.guest == guest && m.verdict == Verdict::Pass)
    }

    /// VM `name`'s lines, in order (panics on an unknown name).
    pub fn lines(&self, name: &str) -> &[VmLine] {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no VM named {name:?} among {:?}", self.names));
        &self.lines[i]
    }

    /// VM `name`'s output as text, one `\n` after each line.
    pub fn text(&self, name: &str) -> String {
        self.lines(name)
            .iter()
            .map(|l| format!("{}\n", l.text))
            .collect()
    }

    /// Console index of VM `name`'s first line containing `needle`.
    pub fn find(&self, name: &str, needle: &str) -> Option<usize> {
        self.lines(name)
            .iter()
            .find(|l| l.text.contains(needle))
            .map(|l| l.console_line)
    }

    /// The `STRATUM-TEST` markers VM `name` printed.
    pub fn markers(&self, name: &str) -> Vec<Marker<'_>> {
        self.lines(name)
            .iter()
            .filter_map(|l| parse_marker(&l.text))
            .collect()
    }
}

/// Splits `console` by the tags of the VMs `names`. Fails (saying where) if
/// a tag appears anywhere but at the start of a line, or a continuation
/// has no line to continue.
pub fn split_by_tag(console: &str, names: &[&str]) -> Result<VmConsoles, String> {
    let mut out = VmConsoles {
        names: names.iter().map(|n| n.to_string()).collect(),
        lines: vec![Vec::new(); names.len()],
        untagged: Vec::new(),
    };
    let tags: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("{n}{TAG}"), format!("{n}{CONTINUATION_TAG}")))
        .collect();
    for (index, line) in console_lines(console).enumerate() {
        let mut owner = None;
        for (vm, (new, cont)) in tags.iter().enumerate() {
            if let Some(rest) = line.strip_prefix(new.as_str()) {
                owner = Some((vm, rest, false));
            } else if let Some(rest) = line.strip_prefix(cont.as_str()) {
                owner = Some((vm, rest, true));
            }
            if owner.is_some() {
                break;
            }
        }
        let rest = owner.map_or(line, |(_, rest, _)| rest);
        if let Some((new, _)) = tags
            .iter()
            .find(|(new, cont)| rest.contains(new.as_str()) || rest.contains(cont.as_str()))
        {
            return Err(format!(
                "console line {index} has the tag {new:?} in the middle: {line:?}"
            ));
        }
        match owner {
            None => out.untagged.push((index, line.to_string())),
            Some((vm, rest, false)) => out.lines[vm].push(VmLine {
                text: rest.to_string(),
                console_line: index,
            }),
            Some((vm, rest, true)) => {
                let Some(last) = out.lines[vm].last_mut() else {
                    return Err(format!(
                        "console line {index} continues a line {} never started: {line:?}",
                        names[vm]
                    ));
                };
                last.text.push_str(rest);
                last.console_line = index;
            }
        }
    }
    Ok(out)
}

/// Kills `child` and, on Unix, every process in its process group.
fn kill_tree(child: &mut Child) {
    #[cfg(unix)]
    {
        unsafe extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        const SIGKILL: i32 = 9;
        if let Ok(pgid) = i32::try_from(child.id()) {
            // SAFETY: `kill(2)` has no memory-safety preconditions. The child is
            // not yet reaped, so its pid (= its process group id, from
            // `process_group(0)`) cannot have been reused: this signals only the
            // processes we started.
            unsafe { kill(-pgid, SIGKILL) };
        }
    }
    let _ = child.kill();
}

/// What `MEM_INFO` said at each boot of a VM, from the lines `<prefix>B:
/// mem_info tables=T ram=R pool_free=F` (or `<prefix>B of N: mem_info …`)
/// its guest prints: `(boot, [T, R, F])`, in console order.
pub fn mem_info_by_boot<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    prefix: &str,
) -> Vec<(u64, [u64; 3])> {
    lines
        .into_iter()
        .filter(|l| l.starts_with(prefix) && l.contains("mem_info "))
        .filter_map(|l| {
            let field = |key: &str| numbers_after(l, key).first().copied();
            Some((
                field(prefix)?,
                [field("tables=")?, field("ram=")?, field("pool_free=")?],
            ))
        })
        .collect()
}

/// Asserts that the `MEM_INFO` figures of [`mem_info_by_boot`] are the
/// same at every boot from index `from` on (the hypervisor's memory did
/// not grow or shrink across the VM's resets).
#[track_caller]
pub fn assert_mem_info_unchanged(test: &str, run: &Run, mem: &[(u64, [u64; 3])], from: usize) {
    let Some((first, reference)) = mem.get(from) else {
        panic!(
            "{test}: no MEM_INFO report from boot index {from}\n{}",
            run.describe()
        );
    };
    for (boot, figures) in &mem[from..] {
        assert_eq!(
            figures,
            reference,
            "{test}: MEM_INFO (tables, ram, pool free) at boot {boot} differs from boot {first}\n{}",
            run.describe()
        );
    }
}

/// The hypervisor's own messages among console `lines` (e.g. the untagged
/// lines of a split console): `[stratum] ` lines, without the exit-statistics tables printed when VMs stop (their
/// rows are indented: `[stratum]   `) and their headings.
pub fn hypervisor_messages<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    lines
        .into_iter()
        .filter(|l| l.starts_with("[stratum] ") && !l.starts_with("[stratum]   "))
        .filter(|l| !l.ends_with("exits by reason"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "Stratum 0.1 booting\r\n\
        [vm1] Hello from a Stratum guest!\r\n\
        boot count 1\r\n\
        boot count 2\n\
        [vm1] STRATUM-TEST PASS hello\r\n\
        STRATUM-TEST FAIL psci: 2 of 30 checks failed\n\
        boot count 3 (last)\n";

    #[test]
    fn parses_pass_and_fail_markers_anywhere_in_a_line() {
        assert_eq!(
            markers(CONSOLE),
            vec![
                Marker {
                    guest: "hello",
                    verdict: Verdict::Pass
                },
                Marker {
                    guest: "psci",
                    verdict: Verdict::Fail("2 of 30 checks failed")
                },
            ]
        );
    }

    #[test]
    fn marker_edge_cases() {
        assert_eq!(parse_marker("STRATUM-TEST"), None);
        assert_eq!(parse_marker("STRATUM-TESTPASS x"), None);
        assert_eq!(parse_marker("STRATUM-TEST PASS "), None);
        assert_eq!(parse_marker("STRATUM-TEST MAYBE x"), None);
        assert_eq!(
            parse_marker("STRATUM-TEST FAIL reset"),
            Some(Marker {
                guest: "reset",
                verdict: Verdict::Fail("")
            })
        );
        assert_eq!(
            parse_marker("STRATUM-TEST FAIL abort: unexpected exception ESR=0x1: x"),
            Some(Marker {
                guest: "abort",
                verdict: Verdict::Fail("unexpected exception ESR=0x1: x")
            })
        );
    }

    #[test]
    fn numbers_and_order() {
        assert_eq!(numbers_after(CONSOLE, "boot count "), vec![1, 2, 3]);
        assert!(find_in_order(CONSOLE, &["Hello", "boot count 1", "PASS hello"]).is_ok());
        let err = find_in_order(CONSOLE, &["PASS hello", "Hello"]).expect_err("wrong order");
        assert!(err.contains("\"Hello\""), "{err}");
        assert_eq!(lines_containing(CONSOLE, "boot count").len(), 3);
        assert!(console_lines(CONSOLE).all(|l| !l.ends_with('\r')));
    }

    fn run_with(console: &str, status: Option<i32>) -> Run {
        Run {
            console: console.into(),
            status,
            timed_out: false,
        }
    }

    #[test]
    fn assert_passed_accepts_a_clean_pass() {
        assert_passed(&run_with("x\nSTRATUM-TEST PASS hello\n", Some(0)), "hello");
    }

    #[test]
    #[should_panic(expected = "guest reported failure")]
    fn assert_passed_rejects_any_fail_line() {
        assert_passed(&run_with(CONSOLE, Some(0)), "hello");
    }

    #[test]
    #[should_panic(expected = "no `STRATUM-TEST PASS hello` line")]
    fn assert_passed_needs_the_pass_line() {
        assert_passed(&run_with("STRATUM-TEST PASS hello2\n", Some(0)), "hello");
    }

    #[test]
    #[should_panic(expected = "----- console")]
    fn assert_passed_needs_status_zero_and_shows_the_console() {
        assert_passed(&run_with("STRATUM-TEST PASS hello\n", Some(1)), "hello");
    }

    #[test]
    fn builds_run_arguments() {
        let opts = GuestOpts {
            gic: 2,
            cpu: "max",
            timeout: Duration::from_millis(60_500),
            memory: Some("64M"),
            extra_args: &["--bootargs", "a b"],
            input: Some(("ready", "ping\n")),
        };
        let args = run_args(Path::new("/g/hello"), &opts);
        let args: Vec<_> = args.iter().map(|a| a.to_str().expect("utf-8")).collect();
        assert_eq!(
            args,
            [
                "run",
                "--kernel",
                "/g/hello",
                "--gic",
                "2",
                "--cpu",
                "max",
                "--timeout",
                "60",
                "--memory",
                "64M",
                "--bootargs",
                "a b"
            ]
        );
    }

    #[test]
    fn resolves_env_over_fallback() {
        let fallback = PathBuf::from("/fallback");
        assert_eq!(resolve(None, fallback.clone()), fallback);
        assert_eq!(resolve(Some("".into()), fallback.clone()), fallback);
        assert_eq!(
            resolve(Some("/from/env".into()), fallback),
            PathBuf::from("/from/env")
        );
        assert_eq!(
            resolve(Some("target/x".into()), PathBuf::new()),
            workspace_root().join("target/x")
        );
    }

    #[cfg(unix)]
    #[test]
    fn run_command_captures_both_streams_and_the_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let run = run_command(cmd, Duration::from_secs(30));
        assert_eq!(run.status, Some(3));
        assert!(!run.timed_out);
        assert!(
            run.console.contains("out") && run.console.contains("err"),
            "{run:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn hard_timeout_kills_the_whole_process_group() {
        let mut cmd = Command::new("sh");
        // A grandchild that holds the output pipe open, like QEMU under the CLI.
        cmd.args(["-c", "echo started; sleep 300 & sleep 300; wait"]);
        let start = Instant::now();
        let run = run_command(cmd, Duration::from_millis(500));
        assert!(run.timed_out, "{run:?}");
        assert!(run.console.contains("started"), "{run:?}");
        assert!(run.console.contains("hard timeout"), "{run:?}");
        assert!(
            !run.console.contains("output still open"),
            "grandchild survived: {run:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_script_answers_a_repeated_prompt_once_per_step() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo ready; read a; echo \"got $a\"; echo ready; read b; echo \"got $b\"",
        ]);
        let run = run_command_with_script(
            cmd,
            Duration::from_secs(20),
            &[("ready", "one\n"), ("ready", "two\n")],
        );
        assert_eq!(run.status, Some(0), "{}", run.console);
        assert!(!run.timed_out);
        let lines: Vec<&str> = run.lines().collect();
        assert_eq!(
            lines,
            ["ready", "got one", "ready", "got two"],
            "{}",
            run.console
        );
    }

    #[test]
    fn input_is_due_once_the_marker_shows() {
        assert!(input_due(b"", ""));
        assert!(!input_due(b"", "ready"));
        assert!(!input_due(b"uartirq: rea", "ready"));
        assert!(input_due(
            b"x\r\nuartirq: ready for input\r\n",
            "ready for input"
        ));
        assert!(input_due(b"\xff\xfeready", "ready"));
        // A marker that another VM's output cut into pieces (as the shared
        // console tags them) is there too, and only within one VM.
        let cut = b"reader | u\r\nsteady | gic: this C\r\nreader + artirq: re\r\n\
                    steady + PU's\r\nreader + ady for input\r\n";
        assert!(input_due(cut, "uartirq: ready for input"));
        assert!(input_due(cut, "gic: this CPU's"));
        assert!(!input_due(cut, "ugic"), "no text across two VMs");
        assert!(!input_due(
            b"reader | uart\r\nsteady | irq: ready\r\n",
            "uartirq: ready"
        ));
    }

    #[test]
    fn a_marker_of_several_lines_is_due_once_each_has_shown() {
        let both = "soak started (seed 1)\nsoak started (seed 2)";
        assert!(!input_due(b"one | soak started (seed 1)\r\n", both));
        assert!(!input_due(b"two | soak started (seed 2)\r\n", both));
        // Either order, and pieces cut by the other VM's lines.
        assert!(input_due(
            b"two | soak started (seed 2)\r\none | soak started (seed 1)\r\n",
            both
        ));
        assert!(input_due(
            b"one | soak st\r\ntwo | soak started (seed 2)\r\none + arted (seed 1)\r\n",
            both
        ));
        assert!(!input_due(
            b"one | soak started (seed 1) (seed 2)\r\n",
            both
        ));
    }

    #[cfg(unix)]
    #[test]
    fn input_is_sent_after_the_marker() {
        let mut cmd = Command::new("sh");
        // Reads only after printing the marker; then checks stdin stays open
        // (`cat` would end at once on EOF; held open, `timeout` stops it: 124).
        cmd.args([
            "-c",
            "echo ready; read line; echo \"got $line\"; timeout 1 cat; echo \"cat $?\"",
        ]);
        let run = run_command_with_input(cmd, Duration::from_secs(30), Some(("ready", "ping\n")));
        assert!(run.console.contains("got ping"), "{run:?}");
        assert!(
            run.console.contains("cat 124"),
            "stdin was closed early: {run:?}"
        );
        assert_eq!(run.status, Some(0), "{run:?}");
    }

    #[cfg(unix)]
    #[test]
    fn input_without_its_marker_is_reported() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello"]);
        let run = run_command_with_input(cmd, Duration::from_secs(30), Some(("ready", "x\n")));
        assert_eq!(run.status, Some(0));
        assert!(run.console.contains("never showed \"ready\""), "{run:?}");
    }

    #[test]
    fn splits_a_tagged_console_and_joins_continuations() {
        let console = "[stratum] booting\r\n\
            a | tick 1\r\n\
            b | hel\r\n\
            a | tick 2\r\n\
            b + lo\r\n\
            [stratum] vm1 'b' stopped\r\n\
            a | STRATUM-TEST PASS ticker\r\n";
        let split = split_by_tag(console, &["a", "b"]).expect("well tagged");
        assert_eq!(
            split.text("a"),
            "tick 1\ntick 2\nSTRATUM-TEST PASS ticker\n"
        );
        assert_eq!(split.text("b"), "hello\n");
        assert_eq!(split.lines("b")[0].console_line, 4);
        assert_eq!(split.find("a", "tick 2"), Some(3));
        assert_eq!(split.find("b", "nothing"), None);
        assert_eq!(split.untagged.len(), 2);
        assert_eq!(split.markers("a").len(), 1);
        assert!(split.markers("b").is_empty());
    }

    #[test]
    fn rejects_mid_line_tags_and_orphan_continuations() {
        let err = split_by_tag("a | x b | y\n", &["a", "b"]).expect_err("mid-line tag");
        assert!(err.contains("middle"), "{err}");
        let err = split_by_tag("[stratum] b | y\n", &["a", "b"]).expect_err("mid-line tag");
        assert!(err.contains("line 0"), "{err}");
        let err = split_by_tag("a + x\n", &["a"]).expect_err("orphan");
        assert!(err.contains("never started"), "{err}");
    }

    #[test]
    fn config_kernel_paths_are_recognized() {
        // Every example config names the project's guests only through the
        // default guest directory, which `config_text_with_guests` rewrites;
        // a system file (Debian's U-Boot) goes by its absolute path.
        for entry in std::fs::read_dir(configs_dir()).expect("configs/ exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            for line in text
                .lines()
                .filter(|l| l.trim_start().starts_with("kernel"))
            {
                assert!(
                    line.contains(CONFIG_GUEST_PREFIX) || line.contains("= \"/usr/lib/"),
                    "{}: {line}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn missing_program_is_reported_not_hung() {
        let cmd = Command::new("/nonexistent/stratum-test-binary");
        let run = run_command(cmd, Duration::from_secs(5));
        assert_eq!(run.status, None);
        assert!(run.console.contains("cannot start"), "{run:?}");
    }
}
