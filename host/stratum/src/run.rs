//! Running a system: prepare the bundle, get the hypervisor, start QEMU,
//! stream the console, enforce the timeout, and turn QEMU's exit status into
//! a [`Verdict`] and the tool's exit code.
//!
//! QEMU's exit status is the hypervisor's semihosting exit code
//! ([`stratum_abi::exit`]). Anything else (another status, death by a
//! signal) means QEMU itself failed.

use std::ffi::OsString;
use std::fs;
use std::io::{self, IsTerminal as _, Read, Write};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stratum_abi::exit;

use crate::config::Config;
use crate::exec::{ExecReport, ExecWatch};
use crate::focused::{Hub, ServeInput};
use crate::hypervisor::HypervisorSource;
use crate::kernel::build_bundle;
use crate::logdir::LogDir;
use crate::qemu::{RunPlan, find_qemu, qemu_command};
use crate::{Error, ErrorKind, Result, exit_code};

/// What to run and how.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The validated system.
    pub config: Config,
    /// A prebuilt hypervisor (`Image` or ELF). `None`: `$STRATUM_HYPERVISOR`,
    /// else build it from the workspace.
    pub hypervisor: Option<PathBuf>,
    /// Build the hypervisor in the release profile (when building).
    pub release: bool,
    /// Deterministic mode (`-icount`, fixed seeds): runs repeat exactly.
    pub deterministic: bool,
    /// Kill QEMU after this long ([`Verdict::Timeout`]).
    pub timeout: Option<Duration>,
    /// Extra QEMU arguments, appended last.
    pub qemu_args: Vec<OsString>,
    /// Keep the console output (and QEMU's stderr) in the [`RunOutcome`].
    pub capture: bool,
    /// Copy the console to our stdout (and QEMU's stderr to ours) as it arrives.
    pub echo: bool,
    /// Ask the hypervisor for its EL2-fault self-test
    /// ([`stratum_abi::bundle::FLAG_SELFTEST_EL2_FAULT`]).
    pub selftest_el2_fault: bool,
    /// Trace every exit (with the `trace` hypervisor build) and plot the run
    /// to this SVG file when it ends.
    pub trace: Option<PathBuf>,
    /// Write each VM's console to `<dir>/<name>.log` and the hypervisor's
    /// messages to `<dir>/stratum.log` ([`crate::logdir`]).
    pub log_dir: Option<PathBuf>,
}

impl RunOptions {
    /// Options for `config`: build the hypervisor (release), no timeout,
    /// echo the console, do not capture.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            hypervisor: None,
            release: true,
            deterministic: false,
            timeout: None,
            qemu_args: Vec::new(),
            capture: false,
            echo: true,
            selftest_el2_fault: false,
            trace: None,
            log_dir: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every VM powered off cleanly (hypervisor exit 0).
    AllVmsOff,
    /// The hypervisor panicked (exit 70); the epitaph is on the console.
    HypervisorPanic,
    /// The hypervisor rejected its boot input (exit 71); the reason is on the console.
    BadBootInput,
    /// At least one VM crashed (exit 72).
    VmCrashed,
    /// QEMU ended some other way: another exit status, or a signal (`None`).
    QemuFailed {
        /// QEMU's exit status, `None` when killed by a signal.
        status: Option<i32>,
    },
    /// The timeout expired and QEMU was killed.
    Timeout,
    /// Every VM powered off, but a command given with `--exec` (or `exec`
    /// in the config) failed or reported no status ([`RunOutcome::exec`]).
    ExecFailed,
    /// The user stopped the system from the focused console (Ctrl-A x).
    Quit,
}

impl Verdict {
    /// The verdict for QEMU's exit status (`None`: killed by a signal).
    pub fn from_qemu_status(status: Option<i32>) -> Self {
        match status.and_then(|s| u32::try_from(s).ok()) {
            Some(exit::ALL_VMS_OFF) => Self::AllVmsOff,
            Some(exit::HYPERVISOR_PANIC) => Self::HypervisorPanic,
            Some(exit::BAD_BOOT_INPUT) => Self::BadBootInput,
            Some(exit::VM_CRASHED) => Self::VmCrashed,
            _ => Self::QemuFailed { status },
        }
    }

    /// The tool's exit status ([`exit_code`]).
    pub fn exit_code(self) -> i32 {
        match self {
            Self::AllVmsOff | Self::Quit => exit_code::SUCCESS,
            Self::HypervisorPanic | Self::BadBootInput | Self::QemuFailed { .. } => {
                exit_code::HYPERVISOR_FAILURE
            }
            Self::VmCrashed => exit_code::VM_CRASHED,
            Self::Timeout => exit_code::TIMEOUT,
            Self::ExecFailed => exit_code::EXEC_FAILED,
        }
    }

    /// One line for people.
    pub fn describe(self) -> String {
        match self {
            Self::AllVmsOff => "every VM powered off".to_owned(),
            Self::HypervisorPanic => "the hypervisor panicked (see its epitaph above)".to_owned(),
            Self::BadBootInput => {
                "the hypervisor rejected its boot input (see the console above)".to_owned()
            }
            Self::VmCrashed => "a VM crashed".to_owned(),
            Self::QemuFailed { status: Some(s) } => {
                format!("QEMU exited unexpectedly with status {s}")
            }
            Self::QemuFailed { status: None } => "QEMU was killed by a signal".to_owned(),
            Self::Timeout => "timed out; QEMU was killed".to_owned(),
            Self::ExecFailed => "a command given to run failed (see above)".to_owned(),
            Self::Quit => "stopped from the console (Ctrl-A x)".to_owned(),
        }
    }
}

/// The result of [`run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// How it ended.
    pub verdict: Verdict,
    /// The tool's exit status for it (`verdict.exit_code()`).
    pub exit_code: i32,
    /// The console output (lossy UTF-8), when `capture` was set.
    pub console: Option<String>,
    /// QEMU's own stderr, when `capture` was set.
    pub qemu_stderr: Option<String>,
    /// Wall-clock time QEMU ran.
    pub elapsed: Duration,
    /// What each VM's exec'd command did, in VM order (empty when no VM
    /// execs one).
    pub exec: Vec<ExecReport>,
}

/// Runs `opts.config` under the hypervisor in QEMU and waits for the end.
///
/// Errors (bad input, environment) come before QEMU starts; once it has
/// started, every ending is a [`RunOutcome`].
pub fn run(opts: &RunOptions) -> Result<RunOutcome> {
    opts.config.check_supported()?;
    let stdout_is_terminal = io::stdout().is_terminal();
    let sharing = Sharing::choose(opts, StdinKind::now(), stdout_is_terminal);
    let focused = sharing == Sharing::Focused;
    // The focused console reads the tags: no colour in them.
    let flags = bundle_flags(opts, stdout_is_terminal && !focused);
    let entropy = if opts.deterministic {
        [0; 16]
    } else {
        host_entropy()?
    };
    let bundle = build_bundle(&opts.config, flags, entropy)?;
    if let Some(note) = opts.config.service_note() {
        eprintln!("stratum: {note}");
    }
    if let Some(warning) = opts.config.identity_warning() {
        eprintln!("stratum: {warning}");
    }
    let qemu = find_qemu()?;
    let scratch = ScratchDir::new()?;
    let source = if opts.trace.is_some() {
        HypervisorSource::choose_trace(opts.hypervisor.as_deref(), opts.release)
    } else {
        HypervisorSource::choose(opts.hypervisor.as_deref(), opts.release)
    };
    let hypervisor = source.resolve(scratch.path())?;
    let image = scratch.path().join("system.img");
    write_system_image(&hypervisor, &bundle, &image)?;

    let input = match sharing {
        Sharing::Focused => ConsoleInput::Pipe(None),
        Sharing::Shared { forward_stdin } => ConsoleInput::Pipe(
            forward_stdin
                .then(|| io::stdin().as_fd().try_clone_to_owned().ok())
                .flatten(),
        ),
        Sharing::Private | Sharing::Watched(_) => {
            ConsoleInput::choose(opts.capture, io::stdin().is_terminal())
        }
    };
    let mut plan = RunPlan::new(&opts.config, qemu, image);
    plan.dtb = crate::linux::board_dtb(opts.config.machine.board, io::stderr().is_terminal())?;
    plan.deterministic = opts.deterministic;
    plan.interactive = input.is_terminal();
    plan.extra_args = opts.qemu_args.clone();
    // `stratum stats` and `stratum trace` reach the machine through this.
    let socket = crate::qmp::new_socket()?;
    plan.qmp.push(socket.path().to_path_buf());
    let Some(svg) = &opts.trace else {
        return run_command(&qemu_command(&plan), opts, input, sharing);
    };
    // The trace collector gets a monitor of its own (QMP serves one client
    // per socket), so `stratum stats` still works during a traced run.
    let trace_socket = crate::qmp::SocketGuard::beside(&socket, "trace");
    plan.qmp.push(trace_socket.path().to_path_buf());
    let argv = qemu_command(&plan);
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (socket, stop) = (trace_socket.path().to_path_buf(), Arc::clone(&stop));
        thread::spawn(move || trace_when_up(&socket, &stop))
    };
    let outcome = run_command(&argv, opts, input, sharing);
    stop.store(true, Ordering::Relaxed);
    let trace = collector
        .join()
        .map_err(|_| Error::environment("the trace collector panicked"))?;
    match trace {
        Ok(trace) => crate::trace::write_svg(&trace, svg)?,
        Err(e) => eprintln!("stratum: trace: {e}"),
    }
    outcome
}

/// Writes the system image of the hypervisor `Image` at `hypervisor` and
/// `bundle` to `out` ([`crate::sysimg::system_image`]); returns its bytes.
pub fn write_system_image(hypervisor: &Path, bundle: &[u8], out: &Path) -> Result<Vec<u8>> {
    let plain = fs::read(hypervisor)
        .map_err(|e| Error::environment(format!("cannot read {}: {e}", hypervisor.display())))?;
    let image = crate::sysimg::system_image(&plain, bundle)
        .map_err(|e| e.context(format!("{}", hypervisor.display())))?;
    fs::write(out, &image)
        .map_err(|e| Error::environment(format!("cannot write {}: {e}", out.display())))?;
    Ok(image)
}

/// Collects the exit trace of the QEMU that will listen on `socket`, until
/// it exits (or `stop` is set before it ever listened).
fn trace_when_up(socket: &Path, stop: &AtomicBool) -> Result<crate::trace::Trace> {
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return crate::trace::collect(socket, &|| false);
        }
        if stop.load(Ordering::Relaxed) {
            return Err(Error::environment("QEMU never opened its QMP socket"));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// What the run's stdin is, for [`Sharing::choose`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StdinKind {
    /// A terminal, and this process is in its foreground (it may read it
    /// and change its modes).
    Foreground,
    /// A terminal this process is not in the foreground of (`stratum run …
    /// &`): reading it or changing its modes would stop the process.
    Background,
    /// A pipe, a file, `/dev/null`, or nothing.
    Other,
}

impl StdinKind {
    fn now() -> Self {
        if !io::stdin().is_terminal() {
            return Self::Other;
        }
        // SAFETY: both only read the process's and the terminal's process
        // group ids; a bad descriptor makes tcgetpgrp fail (-1).
        let foreground = unsafe { libc::tcgetpgrp(0) == libc::getpgrp() };
        if foreground {
            Self::Foreground
        } else {
            Self::Background
        }
    }
}

/// Why an attached `stratum console` only watches: QEMU reads the
/// terminal itself.
const READ_ONLY_TERMINAL: &str =
    "this run's input is the terminal it was started on (its stdout is not a terminal)";
/// Why an attached `stratum console` only watches: a VM runs a command.
const READ_ONLY_EXEC: &str =
    "VMs of this run execute commands (--exec or `exec`), whose output is read as it comes";

/// How the run's console is shared ([`crate::focused`], [`crate::attach`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sharing {
    /// With nobody: the caller captures the console (`stratum bench`,
    /// tests); QEMU reads stdin as [`ConsoleInput::choose`] says.
    Private,
    /// The focused console on the terminal, and `stratum console`.
    Focused,
    /// No terminal to show it on: stdout gets the stream as it is (every
    /// line tagged), `stratum console` attaches and types; QEMU reads a
    /// pipe the hub writes, to which stdin is forwarded as it is
    /// (`forward_stdin`; not a terminal of a background run).
    Shared {
        /// Stdin is copied to QEMU.
        forward_stdin: bool,
    },
    /// As [`Sharing::Shared`], but QEMU reads stdin itself (the terminal,
    /// or a run with `exec` commands, whose input stays its own):
    /// `stratum console` only watches, told why.
    Watched(&'static str),
}

impl Sharing {
    /// Every run of `stratum run` (echoed, not captured) is shared. On a
    /// terminal in the foreground, stdin and stdout, without `exec`
    /// commands (whose output a script reads), it is focused.
    fn choose(opts: &RunOptions, stdin: StdinKind, stdout_is_terminal: bool) -> Self {
        if opts.capture || !opts.echo {
            return Self::Private;
        }
        if opts.config.vms.iter().any(|v| v.exec.is_some()) {
            return Self::Watched(READ_ONLY_EXEC);
        }
        match stdin {
            StdinKind::Foreground if stdout_is_terminal => Self::Focused,
            StdinKind::Foreground => Self::Watched(READ_ONLY_TERMINAL),
            StdinKind::Background => Self::Shared {
                forward_stdin: false,
            },
            StdinKind::Other => Self::Shared {
                forward_stdin: true,
            },
        }
    }
}

/// 16 bytes from the host kernel's CSPRNG, which seed the guests' SMCCC
/// TRNG (a deterministic run passes zeros instead, so it repeats).
fn host_entropy() -> Result<[u8; 16]> {
    use std::io::Read;
    let mut seed = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| {
            Error::environment(format!(
                "cannot read /dev/urandom for the guests' TRNG seed: {e}"
            ))
        })?;
    Ok(seed)
}

/// The header flags the host sets for `opts` ([`build_bundle`] adds
/// semihosting): the EL2-fault self-test when asked, and colour VM tags
/// when the console is echoed to a terminal.
fn bundle_flags(opts: &RunOptions, stdout_is_terminal: bool) -> u32 {
    use stratum_abi::bundle::{FLAG_CONSOLE_COLOR, FLAG_SELFTEST_EL2_FAULT};
    let mut flags = 0;
    if opts.selftest_el2_fault {
        flags |= FLAG_SELFTEST_EL2_FAULT;
    }
    if opts.echo && stdout_is_terminal {
        flags |= FLAG_CONSOLE_COLOR;
    }
    flags
}

/// Where the guest console's input (QEMU's stdin, read by its `stdio`
/// chardev) comes from.
#[derive(Debug)]
enum ConsoleInput {
    /// Our stdin is a terminal the user types into (not when capturing).
    Terminal,
    /// Our stdin is a pipe or a file (a test typing into the guest, or
    /// `stratum run < script`): QEMU reads it through a duplicate of our
    /// descriptor, made before anything else is opened, and sees EOF at its
    /// end (the guest just stops receiving).
    Forward(OwnedFd),
    /// Nothing: stdin is closed (so fd 0 must not be passed on: it could be
    /// reused by any file we open), or it is a terminal while we capture.
    Nothing,
    /// QEMU reads a pipe that [`Hub`] writes what the terminal (focused),
    /// `stratum console` and the forwarded stdin (the descriptor, a
    /// duplicate of ours) typed into.
    Pipe(Option<OwnedFd>),
}

impl ConsoleInput {
    /// The input for a run that `capture`s or not, when our stdin is a
    /// terminal or not.
    fn choose(capture: bool, stdin_is_terminal: bool) -> Self {
        match (capture, stdin_is_terminal) {
            (false, true) => Self::Terminal,
            (true, true) => Self::Nothing,
            (_, false) => io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_or(Self::Nothing, Self::Forward),
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Self::Terminal)
    }

    /// Whether QEMU reads our stdin (then it changes the descriptor's flags,
    /// and should exit cleanly to restore them).
    fn connected(&self) -> bool {
        !matches!(self, Self::Nothing)
    }

    fn stdio(self) -> Stdio {
        match self {
            Self::Terminal => Stdio::inherit(),
            Self::Forward(fd) => Stdio::from(fd),
            Self::Nothing => Stdio::null(),
            Self::Pipe(_) => Stdio::piped(),
        }
    }
}

/// Spawns `argv`, streams and captures its output, shares the console
/// ([`Sharing`]), enforces the timeout.
fn run_command(
    argv: &[OsString],
    opts: &RunOptions,
    mut input: ConsoleInput,
    sharing: Sharing,
) -> Result<RunOutcome> {
    // Before QEMU starts: a log directory that cannot be made is bad input.
    let logs = match &opts.log_dir {
        Some(dir) => {
            let names: Vec<String> = opts.config.vms.iter().map(|v| v.name.clone()).collect();
            Some(LogDir::create(dir, &names)?)
        }
        None => None,
    };
    let (program, args) = argv.split_first().expect("the command line has a program");
    let stdin_connected = input.connected();
    let focused = sharing == Sharing::Focused;
    let forward = match &mut input {
        ConsoleInput::Pipe(fd) => fd.take(),
        _ => None,
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(input.stdio())
        .stdout(Stdio::piped())
        .stderr(if opts.capture {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        Error::environment(format!(
            "cannot start {}: {e}",
            Path::new(program).display()
        ))
    })?;
    let names = || opts.config.vms.iter().map(|v| v.name.clone()).collect();
    let hub = match (sharing, child.stdin.take()) {
        (Sharing::Focused, Some(qemu_input)) => match Hub::start(names(), qemu_input, child.id()) {
            Ok(hub) => Some(hub),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::environment(format!("the terminal: {e}")));
            }
        },
        (Sharing::Shared { .. }, Some(qemu)) => Some(Hub::serve(
            names(),
            child.id(),
            ServeInput::Pipe {
                qemu,
                stdin: forward,
            },
        )),
        (Sharing::Watched(why), _) => {
            Some(Hub::serve(names(), child.id(), ServeInput::ReadOnly(why)))
        }
        _ => None,
    };
    let sinks = Sinks {
        exec: ExecWatch::new(&opts.config),
        logs,
        hub: hub.clone(),
    };
    let stdout = child.stdout.take().map(|out| {
        let (echo, capture) = (opts.echo && !focused, opts.capture);
        thread::spawn(move || pump(out, echo.then(io::stdout), capture, sinks))
    });
    let stderr = child.stderr.take().map(|err| {
        let echo = opts.echo;
        thread::spawn(move || pump(err, echo.then(io::stderr), true, Sinks::default()).0)
    });

    let status = wait(&mut child, opts.timeout, stdin_connected).map_err(|e| {
        Error::new(
            ErrorKind::Hypervisor,
            anyhow::anyhow!("waiting for QEMU: {e}"),
        )
    })?;
    let elapsed = start.elapsed();
    let join = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
    };
    let (console, sinks) = match stdout.map(thread::JoinHandle::join) {
        Some(Ok((kept, sinks))) => (Some(String::from_utf8_lossy(&kept).into_owned()), sinks),
        _ => (None, Sinks::default()),
    };
    let console = console.filter(|_| opts.capture);
    let quit = hub.as_ref().is_some_and(|h| h.quit());
    if let Some(hub) = hub {
        hub.finish();
    }
    let exec = sinks.exec.map(ExecWatch::finish).unwrap_or_default();
    if let Some(Err(e)) = sinks.logs.map(LogDir::finish) {
        eprintln!("stratum: warning: --log-dir: {e}");
    }
    let qemu_stderr = join(stderr);
    let verdict = match status {
        None => Verdict::Timeout,
        Some(_) if quit => Verdict::Quit,
        Some(status) => match Verdict::from_qemu_status(status.code()) {
            Verdict::AllVmsOff if !exec.iter().all(ExecReport::succeeded) => Verdict::ExecFailed,
            v => v,
        },
    };
    Ok(RunOutcome {
        verdict,
        exit_code: verdict.exit_code(),
        console,
        qemu_stderr,
        elapsed,
        exec,
    })
}

/// Who else reads the console as it streams.
#[derive(Debug, Default)]
struct Sinks {
    /// The exec'd commands' statuses.
    exec: Option<ExecWatch>,
    /// `--log-dir`.
    logs: Option<LogDir>,
    /// The focused console.
    hub: Option<Arc<Hub>>,
}

impl Sinks {
    fn feed(&mut self, bytes: &[u8]) {
        if let Some(w) = self.exec.as_mut() {
            w.feed(bytes);
        }
        if let Some(l) = self.logs.as_mut() {
            l.feed(bytes);
        }
        if let Some(h) = self.hub.as_ref() {
            h.feed(bytes);
        }
    }
}

/// Copies `from` to `echo` chunk by chunk (flushing each), keeping a copy if
/// `keep`, and showing it to `sinks`. Returns what it kept, and the sinks.
fn pump(
    mut from: impl Read,
    mut echo: Option<impl Write>,
    keep: bool,
    mut sinks: Sinks,
) -> (Vec<u8>, Sinks) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(w) = echo.as_mut() {
                    // A closed stdout (e.g. `| head`) must not stop the run.
                    if w.write_all(&buf[..n]).and_then(|()| w.flush()).is_err() {
                        echo = None;
                    }
                }
                if keep {
                    kept.extend_from_slice(&buf[..n]);
                }
                sinks.feed(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (kept, sinks)
}

/// Waits for `child`; `Ok(None)` if `timeout` expired and it was killed.
/// `stdin_connected`: QEMU reads our stdin (a terminal it put in raw mode, or
/// a descriptor it made non-blocking), so ask it to exit cleanly first.
fn wait(
    child: &mut Child,
    timeout: Option<Duration>,
    stdin_connected: bool,
) -> io::Result<Option<std::process::ExitStatus>> {
    let Some(timeout) = timeout else {
        return child.wait().map(Some);
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    if stdin_connected {
        // Let QEMU restore the terminal (or stdin's flags): SIGTERM first,
        // SIGKILL if it lingers.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let grace = Instant::now() + Duration::from_secs(1);
        while Instant::now() < grace {
            if child.try_wait()?.is_some() {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    // It may have exited just now; kill() then fails harmlessly.
    let _ = child.kill();
    child.wait()?;
    Ok(None)
}

/// A private temporary directory, removed on drop.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new, empty one.
    pub(crate) fn new() -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("stratum-{}-{nanos:09}", std::process::id()));
        fs::create_dir_all(&dir)
            .map_err(|e| Error::environment(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self(dir))
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmFlags;
    use crate::testutil::TestDir;

    #[test]
    fn qemu_status_mapping() {
        let cases = [
            (Some(0), Verdict::AllVmsOff, exit_code::SUCCESS),
            (
                Some(70),
                Verdict::HypervisorPanic,
                exit_code::HYPERVISOR_FAILURE,
            ),
            (
                Some(71),
                Verdict::BadBootInput,
                exit_code::HYPERVISOR_FAILURE,
            ),
            (Some(72), Verdict::VmCrashed, exit_code::VM_CRASHED),
            (
                Some(1),
                Verdict::QemuFailed { status: Some(1) },
                exit_code::HYPERVISOR_FAILURE,
            ),
            (
                None,
                Verdict::QemuFailed { status: None },
                exit_code::HYPERVISOR_FAILURE,
            ),
        ];
        for (status, verdict, code) in cases {
            assert_eq!(Verdict::from_qemu_status(status), verdict);
            assert_eq!(verdict.exit_code(), code);
        }
        assert_eq!(Verdict::Timeout.exit_code(), exit_code::TIMEOUT);
    }

    fn options(dir: &TestDir) -> RunOptions {
        let kernel = dir.write("k.bin", b"raw kernel");
        let config = Config::from_flags(&VmFlags {
            kernel,
            ..VmFlags::default()
        })
        .expect("valid");
        RunOptions {
            capture: true,
            echo: false,
            ..RunOptions::new(config)
        }
    }

    fn sh(script: &str) -> Vec<OsString> {
        ["/bin/sh", "-c", script].map(OsString::from).to_vec()
    }

    #[test]
    fn captures_console_and_maps_status() {
        let dir = TestDir::new("run-capture");
        let opts = options(&dir);
        let out = run_command(
            &sh("printf 'hello\\n'; echo oops >&2; exit 72"),
            &opts,
            ConsoleInput::Nothing,
            Sharing::Private,
        )
        .expect("ran");
        assert_eq!(out.verdict, Verdict::VmCrashed);
        assert_eq!(out.exit_code, exit_code::VM_CRASHED);
        assert_eq!(out.console.as_deref(), Some("hello\n"));
        assert_eq!(out.qemu_stderr.as_deref(), Some("oops\n"));
    }

    #[test]
    fn timeout_kills() {
        let dir = TestDir::new("run-timeout");
        let opts = RunOptions {
            timeout: Some(Duration::from_millis(200)),
            ..options(&dir)
        };
        let out = run_command(
            &sh("echo started; exec sleep 30"),
            &opts,
            ConsoleInput::Nothing,
            Sharing::Private,
        )
        .expect("ran");
        assert_eq!(out.verdict, Verdict::Timeout);
        assert_eq!(out.exit_code, exit_code::TIMEOUT);
        assert_eq!(out.console.as_deref(), Some("started\n"));
        assert!(out.elapsed < Duration::from_secs(10));
    }

    #[test]
    fn forwarded_stdin_reaches_the_child() {
        let dir = TestDir::new("run-stdin");
        let script = dir.write("input.txt", b"ping\n");
        let file = fs::File::open(&script).expect("just written");
        let out = run_command(
            &sh("read line; echo \"got $line\""),
            &options(&dir),
            ConsoleInput::Forward(OwnedFd::from(file)),
            Sharing::Private,
        )
        .expect("ran");
        assert_eq!(out.console.as_deref(), Some("got ping\n"), "{out:?}");
    }

    #[test]
    fn no_input_is_eof_not_a_hang() {
        let dir = TestDir::new("run-no-stdin");
        let opts = RunOptions {
            timeout: Some(Duration::from_secs(30)),
            ..options(&dir)
        };
        let out = run_command(
            &sh("cat; echo eof"),
            &opts,
            ConsoleInput::Nothing,
            Sharing::Private,
        )
        .expect("ran");
        assert_eq!(out.console.as_deref(), Some("eof\n"), "{out:?}");
        assert_eq!(out.verdict, Verdict::AllVmsOff);
    }

    #[test]
    fn colour_only_on_an_echoed_terminal() {
        use stratum_abi::bundle::{FLAG_CONSOLE_COLOR, FLAG_SELFTEST_EL2_FAULT};
        let dir = TestDir::new("run-flags");
        let captured = options(&dir);
        assert_eq!(bundle_flags(&captured, true), 0);
        let echoed = RunOptions {
            echo: true,
            ..options(&dir)
        };
        assert_eq!(bundle_flags(&echoed, true), FLAG_CONSOLE_COLOR);
        assert_eq!(bundle_flags(&echoed, false), 0);
        let selftest = RunOptions {
            selftest_el2_fault: true,
            ..echoed
        };
        assert_eq!(
            bundle_flags(&selftest, true),
            FLAG_CONSOLE_COLOR | FLAG_SELFTEST_EL2_FAULT
        );
    }

    #[test]
    fn every_run_is_shared_and_focused_only_on_a_foreground_terminal() {
        use StdinKind::{Background, Foreground, Other};
        let dir = TestDir::new("run-focused");
        let echoed = RunOptions {
            capture: false,
            echo: true,
            ..options(&dir)
        };
        let shared = |forward_stdin| Sharing::Shared { forward_stdin };
        let cases = [
            ("a terminal", Foreground, true, Sharing::Focused),
            ("stdin is a pipe", Other, true, shared(true)),
            ("both redirected", Other, false, shared(true)),
            (
                "stdout is a pipe",
                Foreground,
                false,
                Sharing::Watched(READ_ONLY_TERMINAL),
            ),
            ("a background job", Background, true, shared(false)),
            ("a background job, logged", Background, false, shared(false)),
        ];
        for (name, stdin, stdout_is_terminal, want) in cases {
            assert_eq!(
                Sharing::choose(&echoed, stdin, stdout_is_terminal),
                want,
                "{name}"
            );
        }
        for stdin in [Foreground, Background, Other] {
            assert_eq!(
                Sharing::choose(&options(&dir), stdin, true),
                Sharing::Private,
                "captured"
            );
        }
        let mut exec = echoed.clone();
        exec.config.vms[0].exec = Some("uname -r".into());
        for stdin in [Foreground, Background, Other] {
            assert_eq!(
                Sharing::choose(&exec, stdin, true),
                Sharing::Watched(READ_ONLY_EXEC),
                "a script reads --exec's output"
            );
        }
        assert_eq!(Verdict::Quit.exit_code(), exit_code::SUCCESS);
    }

    #[test]
    fn a_shared_run_forwards_stdin_through_the_hub() {
        let dir = TestDir::new("run-shared");
        let script = dir.write("input.txt", b"ping\n");
        let file = fs::File::open(&script).expect("just written");
        let opts = RunOptions {
            timeout: Some(Duration::from_secs(60)),
            ..options(&dir)
        };
        // The hub listens (in the user's runtime directory) until the end.
        let out = run_command(
            &sh("read line; echo \"got $line\""),
            &opts,
            ConsoleInput::Pipe(Some(OwnedFd::from(file))),
            Sharing::Shared {
                forward_stdin: true,
            },
        )
        .expect("ran");
        assert_eq!(out.console.as_deref(), Some("got ping\n"), "{out:?}");
        assert_eq!(out.verdict, Verdict::AllVmsOff);
    }

    #[test]
    fn console_input_choice() {
        assert!(ConsoleInput::choose(false, true).is_terminal());
        assert!(matches!(
            ConsoleInput::choose(true, true),
            ConsoleInput::Nothing
        ));
        // Not a terminal: forwarded whether capturing or not (while the test
        // runner's stdin is open), never the terminal mode.
        for capture in [false, true] {
            let input = ConsoleInput::choose(capture, false);
            assert!(!input.is_terminal());
            assert_eq!(
                input.connected(),
                io::stdin().as_fd().try_clone_to_owned().is_ok()
            );
        }
    }

    /// The whole pipeline with a stand-in hypervisor; skipped without QEMU.
    #[test]
    fn runs_qemu_when_available() {
        if find_qemu().is_err() {
            eprintln!("skipped: QEMU not installed");
            return;
        }
        let dir = TestDir::new("run-qemu");
        let hyp = dir.write("hyp.Image", &crate::testutil::fake_hypervisor(72));
        let opts = RunOptions {
            hypervisor: Some(hyp),
            deterministic: true,
            timeout: Some(Duration::from_secs(60)),
            ..options(&dir)
        };
        let out = run(&opts).expect("ran");
        assert_eq!(out.console.as_deref(), Some("Hi\n"), "{out:?}");
        assert_eq!(out.verdict, Verdict::VmCrashed, "{out:?}");
        assert_eq!(out.exit_code, exit_code::VM_CRASHED);
    }

    #[test]
    fn missing_program_is_an_environment_error() {
        let dir = TestDir::new("run-missing");
        let e = run_command(
            &["/nonexistent/qemu".into()],
            &options(&dir),
            ConsoleInput::Nothing,
            Sharing::Private,
        )
        .expect_err("cannot start");
        assert_eq!(e.exit_code(), exit_code::ENVIRONMENT);
    }
}
