//! The focused console, driven as a person would: `stratum run` in a tmux
//! pane (a real terminal), keys typed with `send-keys`, the screen read
//! with `capture-pane`.
//!
//! The system: `talk` and `chat` are `echo` guests (each prints `LABEL:
//! ready`, echoes what is typed and answers each line with `LABEL: got
//! "LINE"`), `ticker` prints a tick every 200 ms. The test types into the
//! focused VM while the ticker prints and checks that the screen holds
//! only that VM's lines; switches with Ctrl-A n and Ctrl-A 3 and sees each
//! VM's earlier output replayed; attaches to `talk` with `stratum console`
//! from a second pane and types there; checks `stratum console`'s errors;
//! and quits with Ctrl-A x, after which the terminal is back in cooked
//! mode and the run's socket is gone.
//!
//! A second test ends runs the hard ways, QEMU killed and `stratum run`
//! itself signalled, and checks the terminal comes back each time.
//!
//! A third runs the system without a terminal, as a background job whose
//! stdout and stderr go to a log file and whose stdin is a pipe: its stdin
//! reaches the VM with the input focus, `stratum console` attaches from a
//! tmux pane (scrollback, typing, the focus moving to it, and stdin
//! following the focus), and the log keeps every VM's lines tagged.
//!
//! Every wait polls the screen with a generous deadline (the machine may
//! be loaded); nothing sleeps for a fixed time and then asserts.
//!
//! Needs tmux (`cargo xtask test` installs it with the other packages) and
//! the variables of the system tests (`STRATUM_BIN`, `STRATUM_GUESTS_DIR`,
//! `STRATUM_HYPERVISOR`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use stratum_systests::{guest_elf, pass_hypervisor_env, split_by_tag, stratum_bin};

/// How long any one thing may take to show on the screen.
const DEADLINE: Duration = Duration::from_secs(120);

/// A private tmux server (its own socket), killed on drop, and a private
/// runtime directory for the runs' sockets.
struct Tmux {
    socket: String,
    runtime: PathBuf,
}

impl Tmux {
    /// The shell command a pane runs to attach to VM `vm` of this
    /// server's runs with `stratum console`, then say its exit status.
    fn attach_command(&self, vm: &str) -> String {
        format!(
            "XDG_RUNTIME_DIR={} {} console {vm}; echo \"console exit status $?\"",
            quote(&self.runtime),
            quote(&stratum_bin())
        )
    }

    fn new(tag: &str) -> Self {
        let found = Command::new("tmux").arg("-V").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "tmux is needed for the console tests: `cargo xtask test` installs it \
             (Debian/Ubuntu: apt-get install tmux)"
        );
        let socket = format!("stratum-{tag}-{}", std::process::id());
        let runtime = std::env::temp_dir().join(&socket);
        let _ = std::fs::remove_dir_all(&runtime);
        std::fs::create_dir_all(&runtime).expect("make the runtime directory");
        Self { socket, runtime }
    }

    fn tmux(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.tmux().args(args).output().expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts the server with one window, 100×30, running `shell_command`
    /// with the system tests' variables and our runtime directory.
    fn start(&self, shell_command: &str) {
        let mut cmd = self.tmux();
        cmd.args(["new-session", "-d", "-s", "t", "-x", "100", "-y", "30"])
            .arg(shell_command)
            .env("XDG_RUNTIME_DIR", &self.runtime);
        pass_hypervisor_env(&mut cmd);
        let out = cmd.output().expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The pane stays after its command ends, so its last words can be read.
        self.run(&["set-option", "-t", "t", "remain-on-exit", "on"]);
    }

    /// What pane `pane` shows (`t:0.0`, …), one string per line.
    fn screen(&self, pane: &str) -> Vec<String> {
        let out = self.run(&["capture-pane", "-p", "-t", pane]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `pane` shows something `ok` accepts; panics with the
    /// screen after [`DEADLINE`].
    #[track_caller]
    fn wait(&self, pane: &str, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let screen = self.screen(pane);
            if ok(&screen) {
                return screen;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "pane {pane}: no {what} after {DEADLINE:?}; the screen:\n{}",
                    screen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for a line of `pane` containing `needle`.
    #[track_caller]
    fn wait_for(&self, pane: &str, needle: &str) -> Vec<String> {
        self.wait(pane, &format!("line with {needle:?}"), |s| {
            s.iter().any(|l| l.contains(needle))
        })
    }

    fn keys(&self, pane: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", pane];
        args.extend(keys);
        self.run(&args);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
        let _ = std::fs::remove_dir_all(&self.runtime);
    }
}

/// `s` quoted for `sh`.
fn quote(s: &Path) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"))
}

/// The status bar (the screen's last line that is not empty).
fn bar(screen: &[String]) -> &str {
    screen
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or("", String::as_str)
}

/// The lines above the status bar.
fn body(screen: &[String]) -> Vec<&str> {
    let n = screen
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .unwrap_or(0);
    screen[..n].iter().map(String::as_str).collect()
}

/// Fails if a line of the screen's body starts with one of `foreign` (the
/// other VMs' lines: `tick N`, `LABEL: …`, an echoed word).
#[track_caller]
fn assert_only(screen: &[String], foreign: &[&str], what: &str) {
    for line in body(screen) {
        for f in foreign {
            assert!(
                !line.starts_with(f),
                "{what}: {f:?} is on the screen:\n{}",
                screen.join("\n")
            );
        }
    }
}

fn write_config(dir: &Path) -> PathBuf {
    write_config_ticks(dir, 0)
}

/// The console system, its ticker printing `ticks` ticks (0: for ever).
fn write_config_ticks(dir: &Path, ticks: u32) -> PathBuf {
    let elf = |g: &str| format!("{:?}", guest_elf(g).to_string_lossy());
    let text = format!(
        "[machine]\ncpus = 2\nmemory = \"512M\"\n\n\
         [[vm]]\nname = \"talk\"\nkernel = {echo}\ncmdline = \"talk\"\nmemory = \"32M\"\npcpus = [0]\n\n\
         [[vm]]\nname = \"chat\"\nkernel = {echo}\ncmdline = \"chat\"\nmemory = \"32M\"\n\
         placement = \"shared\"\npcpus = [1]\n\n\
         [[vm]]\nname = \"ticker\"\nkernel = {ticker}\ncmdline = \"period_ms=200 ticks={ticks}\"\n\
         memory = \"32M\"\nplacement = \"shared\"\npcpus = [1]\n",
        echo = elf("echo"),
        ticker = elf("ticker"),
    );
    let path = dir.join("console.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// `stratum console ARGS` with our runtime directory, stdin closed.
fn console_command(tmux: &Tmux, args: &[&str]) -> Output {
    Command::new(stratum_bin())
        .arg("console")
        .args(args)
        .env("XDG_RUNTIME_DIR", &tmux.runtime)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("stratum runs")
}

#[test]
fn focused_console_switches_replays_and_attaches() {
    let tmux = Tmux::new("console");
    let config = write_config(&tmux.runtime);
    let run = format!(
        "{} run {} --timeout 600; echo \"run exit status $?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon",
        quote(&stratum_bin()),
        quote(&config)
    );
    tmux.start(&run);
    let main = "t:0.0";

    // `talk` has the focus first: its prompt, the bar naming every VM.
    let screen = tmux.wait_for(main, "talk: ready");
    let screen = if bar(&screen).contains("1:talk* running") {
        screen
    } else {
        tmux.wait(main, "status bar", |s| bar(s).contains("1:talk* running"))
    };
    assert!(
        bar(&screen).contains("2:chat running") && bar(&screen).contains("3:ticker running"),
        "the bar names every VM and its state: {:?}",
        bar(&screen)
    );
    // Type into it while the ticker prints; the ticker must have printed
    // meanwhile (its replay below shows ticks), yet none is on this screen.
    tmux.keys(main, &["hello", "Enter"]);
    let screen = tmux.wait_for(main, "talk: got \"hello\"");
    assert_only(&screen, &["tick ", "chat:"], "talk's screen");

    // Ctrl-A n: the next running VM, `chat`; its ready line is replayed.
    tmux.keys(main, &["C-a", "n"]);
    let screen = tmux.wait(main, "chat with the focus", |s| {
        bar(s).contains("2:chat* running") && s.iter().any(|l| l.contains("chat: ready"))
    });
    assert_only(&screen, &["talk:", "tick ", "hello"], "chat's screen");
    tmux.keys(main, &["there", "Enter"]);
    let screen = tmux.wait_for(main, "chat: got \"there\"");
    assert_only(&screen, &["talk:", "tick ", "hello"], "chat's screen");

    // Ctrl-A 3: the ticker, whose ticks since the start are replayed.
    tmux.keys(main, &["C-a", "3"]);
    let screen = tmux.wait(main, "ticker with the focus and its ticks", |s| {
        bar(s).contains("3:ticker* running")
            && s.iter().filter(|l| l.starts_with("tick ")).count() >= 3
    });
    assert_only(
        &screen,
        &["talk:", "chat:", "hello", "there"],
        "ticker's screen",
    );

    // A second pane attaches to `talk`: its scrollback first, then typing
    // there reaches it (the system's one focus moves to it, and the main
    // screen follows).
    let attach = tmux.attach_command("talk");
    tmux.run(&["split-window", "-v", "-t", main, &attach]);
    let second = "t:0.1";
    let screen = tmux.wait_for(second, "talk: got \"hello\"");
    assert_only(
        &screen,
        &["chat:", "tick ", "there"],
        "the attached console",
    );
    tmux.keys(second, &["again", "Enter"]);
    tmux.wait_for(second, "talk: got \"again\"");
    tmux.wait(main, "the main screen following the focus to talk", |s| {
        bar(s).contains("1:talk* running") && s.iter().any(|l| l.contains("talk: got \"again\""))
    });
    // Ctrl-] detaches.
    tmux.keys(second, &["C-]"]);
    tmux.wait_for(second, "console exit status 0");

    // The errors, with the run still going.
    let out = console_command(&tmux, &["nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no VM named 'nosuch'") && err.contains("talk, chat, ticker"),
        "an unknown name lists the VMs: {err}"
    );
    let out = console_command(&tmux, &["talk", "--pid", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("no running system with pid 1"),
        "{err}"
    );

    // `off` powers chat off: the hypervisor moves the focus to the next
    // running VM (the ticker), the screen follows and says why, the bar
    // shows the state, and attaching to chat is refused.
    tmux.keys(main, &["C-a", "2"]);
    tmux.wait(main, "chat with the focus again", |s| {
        bar(s).contains("2:chat* running")
    });
    tmux.keys(main, &["off", "Enter"]);
    tmux.wait(main, "chat stopped and the ticker focused", |s| {
        bar(s).contains("2:chat stopped")
            && bar(s).contains("3:ticker* running")
            && s.iter()
                .any(|l| l.contains("stratum: chat stopped; the console moved to ticker"))
    });
    let out = console_command(&tmux, &["chat"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("VM 'chat' is stopped"),
        "{err}"
    );

    // Ctrl-A x: the system stops, the terminal is itself again, the
    // socket is gone.
    tmux.keys(main, &["C-a", "x"]);
    tmux.wait_for(main, "run exit status 0");
    let screen = tmux.wait(main, "the terminal's mode after the run", |s| {
        s.iter().any(|l| l == "icanon" || l == "-icanon")
    });
    assert!(
        screen.iter().any(|l| l == "icanon"),
        "the terminal is back in canonical mode:\n{}",
        screen.join("\n")
    );
    let left: Vec<_> = std::fs::read_dir(tmux.runtime.join("stratum"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the run's socket is removed: {left:?}");
    let out = console_command(&tmux, &["talk"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("no running system"),
        "{err}"
    );
}

/// The pid of the one `stratum run` listening in `tmux`'s runtime
/// directory (its socket is `<pid>.sock`), waiting for it to appear.
fn stratum_pid(tmux: &Tmux) -> u32 {
    let dir = tmux.runtime.join("stratum");
    let start = Instant::now();
    loop {
        let pids: Vec<u32> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.strip_suffix(".sock")?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if let [pid] = pids[..] {
            return pid;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no run socket in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The child processes of `pid` (QEMU, for `stratum run`).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Starts a focused run of the console system in `tmux`'s first pane,
/// waits for `talk`, and returns stratum's pid.
fn start_run(tmux: &Tmux) -> u32 {
    let config = write_config(&tmux.runtime);
    let run = format!(
        "{} run {} --timeout 600; echo \"run exit status $?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon",
        quote(&stratum_bin()),
        quote(&config)
    );
    tmux.start(&run);
    tmux.wait_for("t:0.0", "talk: ready");
    stratum_pid(tmux)
}

/// Waits for the run in `pane` to end with `status` and the terminal to be
/// back in canonical mode.
#[track_caller]
fn assert_ended_restored(tmux: &Tmux, pane: &str, status: &str) {
    tmux.wait_for(pane, &format!("run exit status {status}"));
    let screen = tmux.wait(pane, "the terminal's mode after the run", |s| {
        s.iter().any(|l| l == "icanon" || l == "-icanon")
    });
    assert!(
        screen.iter().any(|l| l == "icanon"),
        "the terminal is back in canonical mode:\n{}",
        screen.join("\n")
    );
}

#[test]
fn the_terminal_comes_back_when_qemu_dies_or_the_run_is_signalled() {
    // QEMU killed outright: the run reports it (exit 1) and restores.
    let tmux = Tmux::new("console-qemu-dies");
    let pid = start_run(&tmux);
    let qemu = children(pid);
    assert_eq!(qemu.len(), 1, "stratum run has one child, QEMU: {qemu:?}");
    kill("-KILL", qemu[0]);
    assert_ended_restored(&tmux, "t:0.0", "1");
    drop(tmux);

    // SIGTERM to stratum run itself: it restores the terminal, stops QEMU
    // and dies of the signal (the shell reports 128 + 15).
    let tmux = Tmux::new("console-signalled");
    let pid = start_run(&tmux);
    let qemu = children(pid);
    assert_eq!(qemu.len(), 1, "stratum run has one child, QEMU: {qemu:?}");
    kill("-TERM", pid);
    assert_ended_restored(&tmux, "t:0.0", "143");
    let start = Instant::now();
    while Path::new(&format!("/proc/{}", qemu[0])).exists() {
        // A zombie until its parent's parent reaps it counts as gone.
        let state = std::fs::read_to_string(format!("/proc/{}/stat", qemu[0])).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "QEMU {} outlived the run",
            qemu[0]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `stratum run` in the background, killed on drop (QEMU first) if it
/// still runs.
struct BackgroundRun {
    child: std::process::Child,
}

impl Drop for BackgroundRun {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            for qemu in children(self.child.id()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &qemu.to_string()])
                    .status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The VMs of the console system.
const VMS: [&str; 3] = ["talk", "chat", "ticker"];

/// Waits until VM `vm`'s lines in the tagged log at `path` (a cut line
/// joined again) hold `needle`; panics with the log after [`DEADLINE`].
#[track_caller]
fn wait_log(path: &Path, vm: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        if split_by_tag(&text, &VMS).is_ok_and(|s| s.text(vm).contains(needle)) {
            return text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{}: no {needle:?} after {DEADLINE:?}; it holds:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_run_without_a_terminal_is_attached_to_and_keeps_its_log() {
    use std::io::Write as _;

    let tmux = Tmux::new("console-logged");
    // The ticker stops by itself after a while; talk and chat are powered
    // off from the attached consoles.
    let config = write_config_ticks(&tmux.runtime, 25);
    let log_path = tmux.runtime.join("run.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut cmd = Command::new(stratum_bin());
    cmd.args([
        "run".as_ref(),
        config.as_os_str(),
        "--timeout".as_ref(),
        "600".as_ref(),
    ])
    .env("XDG_RUNTIME_DIR", &tmux.runtime)
    .stdin(std::process::Stdio::piped())
    .stdout(log.try_clone().expect("dup the log"))
    .stderr(log);
    pass_hypervisor_env(&mut cmd);
    let mut run = BackgroundRun {
        child: cmd.spawn().expect("stratum runs"),
    };
    let mut stdin = run.child.stdin.take().expect("stdin is a pipe");
    let pid = stratum_pid(&tmux);
    assert_eq!(pid, run.child.id(), "the run listens as itself");

    // Stdin goes to the VM with the focus, talk, as it always did.
    wait_log(&log_path, "talk", "talk: ready");
    stdin.write_all(b"fromstdin\n").expect("write to the run");
    wait_log(&log_path, "talk", "talk: got \"fromstdin\"");

    // Attach to chat from a terminal: its scrollback, then typing reaches
    // it (the input focus moves to it).
    tmux.start(&tmux.attach_command("chat"));
    let pane = "t:0.0";
    let screen = tmux.wait_for(pane, "chat: ready");
    assert_only(
        &screen,
        &["talk", "tick ", "fromstdin"],
        "the attached chat",
    );
    tmux.keys(pane, &["hi", "Enter"]);
    tmux.wait_for(pane, "chat: got \"hi\"");
    wait_log(&log_path, "chat", "chat: got \"hi\"");

    // Stdin follows the focus: it now types into chat, and the attached
    // console shows what it made chat print.
    stdin.write_all(b"second\n").expect("write to the run");
    wait_log(&log_path, "chat", "chat: got \"second\"");
    tmux.wait_for(pane, "chat: got \"second\"");

    // The errors still hold while it runs.
    let out = console_command(&tmux, &["nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2)
            && err.contains("no VM named 'nosuch'")
            && err.contains("talk, chat, ticker"),
        "an unknown name lists the VMs: {err}"
    );

    // `off` from the attached console stops chat: the console says so and
    // ends; talk is stopped the same way from a second pane.
    tmux.keys(pane, &["off", "Enter"]);
    tmux.wait_for(pane, "chat is stopped");
    tmux.wait_for(pane, "console exit status 0");
    tmux.run(&[
        "split-window",
        "-v",
        "-t",
        pane,
        &tmux.attach_command("talk"),
    ]);
    let second = "t:0.1";
    tmux.wait_for(second, "talk: got \"fromstdin\"");
    tmux.keys(second, &["off", "Enter"]);
    tmux.wait_for(second, "console exit status 0");

    // The system ends when the ticker has ticked its last.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = run.child.try_wait().expect("wait for the run") {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the run did not end:\n{}",
            String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default())
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&log_path).expect("the log")).into_owned();
    assert_eq!(status.code(), Some(0), "the run's log:\n{text}");

    // The log is the tagged stream: every VM's lines under its tag, the
    // hypervisor's focus moves among its own lines, nothing of the hub's.
    let split = split_by_tag(&text, &VMS).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    for (vm, needle) in [
        ("talk", "talk: ready"),
        ("talk", "talk: got \"fromstdin\""),
        ("chat", "chat: got \"hi\""),
        ("chat", "chat: got \"second\""),
        ("ticker", "tick 1\n"),
    ] {
        assert!(
            split.text(vm).contains(needle),
            "{vm}'s lines in the log hold {needle:?}:\n{text}"
        );
    }
    if let Some((_, line)) = split
        .untagged
        .iter()
        .find(|(_, l)| !l.starts_with("[stratum] "))
    {
        panic!("an untagged line that is not the hypervisor's: {line:?}\n{text}");
    }
    assert!(
        split
            .untagged
            .iter()
            .any(|(_, l)| l.starts_with("[stratum] console: input to chat")),
        "the hypervisor said the focus moved to chat:\n{text}"
    );
    let left: Vec<_> = std::fs::read_dir(tmux.runtime.join("stratum"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().ends_with(".sock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "the run's socket is removed: {left:?}");
    let out = console_command(&tmux, &["talk"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("no running system"),
        "{err}"
    );
}
