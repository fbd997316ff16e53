//! `stratum console NAME`: attaching to a VM of a running system from
//! another terminal, like `xl console`.
//!
//! Every `stratum run` ([`crate::focused::Hub`]; on a terminal or not)
//! listens on a Unix socket `<runtime dir>/<pid>.sock`, beside its QMP
//! socket: the
//! runtime directory is [`crate::qmp::runtime_dir`],
//! `$XDG_RUNTIME_DIR/stratum` or, without that variable,
//! `/tmp/stratum-<uid>` (made private, mode 0700, and refused if it is not
//! a private directory of this user). The socket is removed when the run ends; a socket whose
//! run died is removed by the next `stratum console` that finds nobody
//! listening.
//!
//! The protocol: the client sends one line, `attach NAME` or `list`. To
//! `list` the run answers `vms NAME=STATE …` and closes. To `attach` it
//! answers `ok`, then the VM's scrollback, then its output as it comes,
//! and reads the client's bytes as the VM's input; or it answers `error:
//! …` (no such VM, with the names; the VM stopped) and closes. When the VM
//! stops or the system ends, the run says so on the stream and closes it.
//! A run whose QEMU reads its input from elsewhere (the terminal, when
//! only stdout is redirected; `exec` commands) says `[stratum console]
//! read-only: WHY` after `ok`, and drops what the client sends.
//!
//! The client puts its terminal in raw mode; Ctrl-] ([`DETACH_KEY`])
//! detaches. Without a terminal on stdin it forwards stdin as it is and, at
//! its end, keeps showing the VM's output until the run closes the stream.

use std::fs;
use std::io::{self, BufRead as _, BufReader, IsTerminal as _, Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use stratum_core::console::VmState;

use crate::focused::Hub;
use crate::term::RawMode;
use crate::{Error, Result};

/// Ctrl-]: leaves `stratum console` (as in telnet and `xl console`).
pub const DETACH_KEY: u8 = 0x1d;

/// How long a client may take to send its request, and a stuck client's
/// write may block the run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a run may take to answer `list` for an error message.
const LIST_TIMEOUT: Duration = Duration::from_secs(1);

/// A client's first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `attach NAME`.
    Attach(String),
    /// `list`.
    List,
}

impl Request {
    /// Reads a request line (without its line end).
    pub fn parse(line: &str) -> std::result::Result<Self, String> {
        match line.split_once(' ') {
            None if line == "list" => Ok(Self::List),
            Some(("attach", name)) if !name.is_empty() && !name.contains(' ') => {
                Ok(Self::Attach(name.to_owned()))
            }
            _ => Err(format!(
                "error: unknown request {line:?} (want `attach NAME` or `list`)"
            )),
        }
    }

    /// The line for this request.
    pub fn line(&self) -> String {
        match self {
            Self::Attach(name) => format!("attach {name}\n"),
            Self::List => "list\n".to_owned(),
        }
    }
}

/// The answer to `list`: `vms a=running b=stopped`.
pub fn format_list(names: &[String], states: &[VmState]) -> String {
    let mut line = String::from("vms");
    for (name, state) in names.iter().zip(states) {
        line += &format!(" {name}={}", state.name());
    }
    line
}

/// Reads an answer to `list`: (name, state word) pairs.
pub fn parse_list(line: &str) -> Option<Vec<(String, String)>> {
    let rest = line.strip_prefix("vms")?;
    rest.split_whitespace()
        .map(|item| {
            let (name, state) = item.split_once('=')?;
            Some((name.to_owned(), state.to_owned()))
        })
        .collect()
}

/// The socket a run listens on; removed on drop.
#[derive(Debug)]
pub struct Listener {
    path: PathBuf,
    listener: UnixListener,
}

impl Listener {
    /// Listens as the run of process `pid`, in the runtime directory the
    /// QMP sockets use ([`crate::qmp::runtime_dir`]).
    pub fn bind(pid: u32) -> io::Result<Self> {
        let dir = crate::qmp::runtime_dir().map_err(|e| io::Error::other(e.to_string()))?;
        Self::bind_in(&dir, pid)
    }

    fn bind_in(dir: &Path, pid: u32) -> io::Result<Self> {
        let path = dir.join(format!("{pid}.sock"));
        // A socket left by an earlier process with our pid is stale.
        let _ = fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| io::Error::other(format!("cannot listen on {}: {e}", path.display())))?;
        Ok(Self { path, listener })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the socket, for the accepting thread.
    pub fn try_clone_listener(&self) -> io::Result<UnixListener> {
        self.listener.try_clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Accepts clients for `hub` until the socket fails.
pub(crate) fn serve(listener: &UnixListener, hub: &Arc<Hub>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let hub = Arc::clone(hub);
        thread::spawn(move || serve_client(stream, &hub));
    }
}

fn serve_client(stream: UnixStream, hub: &Hub) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let Ok(reading) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reading);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let request = match Request::parse(line.trim_end()) {
        Ok(r) => r,
        Err(e) => {
            let _ = (&stream).write_all(format!("{e}\n").as_bytes());
            return;
        }
    };
    let Ok(Some(id)) = hub.attach(&request, stream) else {
        return;
    };
    let _ = reader.get_ref().set_read_timeout(None);
    // What the client typed (BufReader first: it may hold bytes already).
    // At the end of its input the client still reads the VM's output; it
    // is dropped when a write to it fails.
    let mut buf = [0u8; 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => hub.client_input(id, &buf[..n]),
            Err(_) => break,
        }
    }
    hub.detach(id);
}

/// A run found in the runtime directory.
#[derive(Debug)]
struct Running {
    pid: u32,
    path: PathBuf,
}

/// The runs listening in `dir` (sockets nobody listens on are removed).
fn running_systems(dir: &Path) -> Vec<Running> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Running> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let pid = path
                .file_name()?
                .to_str()?
                .strip_suffix(".sock")?
                .parse()
                .ok()?;
            match UnixStream::connect(&path) {
                Ok(_) => Some(Running { pid, path }),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    let _ = fs::remove_file(&path);
                    None
                }
                Err(_) => None,
            }
        })
        .collect();
    found.sort_by_key(|r| r.pid);
    found
}

/// Sends `request` to the run at `path`; returns the stream and its answer line.
fn ask(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<(BufReader<UnixStream>, String)> {
    let cannot =
        |e: io::Error| Error::environment(format!("cannot talk to {}: {e}", path.display()));
    let mut stream = UnixStream::connect(path).map_err(cannot)?;
    stream.set_read_timeout(Some(timeout)).map_err(cannot)?;
    stream
        .write_all(request.line().as_bytes())
        .map_err(cannot)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(cannot)?;
    if line.is_empty() {
        return Err(Error::environment(format!(
            "{} closed the connection without an answer",
            path.display()
        )));
    }
    let _ = reader.get_ref().set_read_timeout(None);
    Ok((reader, line.trim_end().to_owned()))
}

/// Which run to attach to: the one of `--pid N`, or the only one.
fn choose(dir: &Path, system: Option<u32>) -> Result<Running> {
    let mut found = running_systems(dir);
    if let Some(pid) = system {
        return match found.iter().position(|r| r.pid == pid) {
            Some(i) => Ok(found.swap_remove(i)),
            None => Err(Error::input(format!(
                "no running system with pid {pid} ({}); {}",
                dir.display(),
                describe(&found)
            ))),
        };
    }
    match found.len() {
        0 => Err(Error::input(format!(
            "no running system: no `stratum run` listens in {}",
            dir.display()
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(Error::input(format!(
            "several systems are running; choose one with --pid N: {}",
            describe(&found)
        ))),
    }
}

/// The runs and their VMs, for an error message.
fn describe(found: &[Running]) -> String {
    if found.is_empty() {
        return "none is running".to_owned();
    }
    let items: Vec<String> = found
        .iter()
        .map(|r| {
            let vms = ask(&r.path, &Request::List, LIST_TIMEOUT)
                .ok()
                .and_then(|(_, line)| parse_list(&line))
                .map(|vms| {
                    vms.iter()
                        .map(|(n, s)| format!("{n} ({s})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| "VMs unknown".to_owned());
            format!("pid {}: {vms}", r.pid)
        })
        .collect();
    format!("running: {}", items.join("; "))
}

/// `stratum console NAME [--pid N]`: attaches this terminal to VM
/// `name` until Ctrl-] or the VM or the system stops.
pub fn console(name: &str, system: Option<u32>) -> Result<()> {
    let dir = crate::qmp::runtime_dir()?;
    let run = choose(&dir, system)?;
    let (reader, answer) = ask(&run.path, &Request::Attach(name.to_owned()), CLIENT_TIMEOUT)?;
    if answer != "ok" {
        let why = answer.strip_prefix("error: ").unwrap_or(&answer);
        return Err(Error::input(format!("system {}: {why}", run.pid)));
    }
    let terminal = io::stdin().is_terminal();
    eprint!(
        "stratum: attached to {name} (system {}){}\r\n",
        run.pid,
        if terminal { "; Ctrl-] detaches" } else { "" }
    );
    let raw = if terminal {
        Some(RawMode::enter(0).map_err(|e| Error::environment(format!("terminal: {e}")))?)
    } else {
        None
    };
    let mut writer = reader
        .get_ref()
        .try_clone()
        .map_err(|e| Error::environment(format!("socket: {e}")))?;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<&'static str>();
    let output_done = done_tx.clone();
    // Unbuffered: a prompt without a line end must show at once.
    let mut out = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(fs::File::from)
        .map_err(|e| Error::environment(format!("stdout: {e}")))?;
    thread::spawn(move || {
        let mut reader = reader;
        let _ = io::copy(&mut reader, &mut out);
        let _ = output_done.send("the console closed");
    });
    thread::spawn(move || {
        let mut stdin = io::stdin();
        let mut buf = [0u8; 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // Input ended: keep showing output until the run closes.
                    let _ = writer.shutdown(std::net::Shutdown::Write);
                    return;
                }
                Ok(n) => n,
            };
            let typed = &buf[..n];
            let (send, detach) = match typed.iter().position(|&b| terminal && b == DETACH_KEY) {
                Some(i) => (&typed[..i], true),
                None => (typed, false),
            };
            if writer.write_all(send).is_err() || detach {
                let _ = done_tx.send("detached");
                return;
            }
        }
    });
    let how = done_rx.recv().unwrap_or("the console closed");
    drop(raw);
    eprintln!("stratum: {how} ({name}, system {})", run.pid);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        for r in [Request::List, Request::Attach("linux".into())] {
            assert_eq!(Request::parse(r.line().trim_end()), Ok(r));
        }
        for bad in ["", "attach", "attach ", "attach a b", "lists", "detach x"] {
            let e = Request::parse(bad).expect_err(bad);
            assert!(e.starts_with("error: unknown request"), "{e}");
        }
    }

    #[test]
    fn the_vm_list_round_trips() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let line = format_list(&names, &[VmState::Running, VmState::Crashed]);
        assert_eq!(line, "vms a=running b=crashed");
        assert_eq!(
            parse_list(&line),
            Some(vec![
                ("a".into(), "running".into()),
                ("b".into(), "crashed".into())
            ])
        );
        assert_eq!(parse_list("vms a"), None);
        assert_eq!(parse_list("error: x"), None);
    }

    #[test]
    fn finding_runs_removes_stale_sockets_and_names_the_choice() {
        let dir = TestDir::new("attach-dir");
        let sockets = dir.path().join("run");
        let none = choose(&sockets, None).expect_err("nothing runs");
        assert!(none.to_string().contains("no running system"), "{none}");
        fs::create_dir(&sockets).expect("made");
        let live = Listener::bind_in(&sockets, 41).expect("binds");
        // A socket whose run died: nobody listens.
        drop(UnixListener::bind(sockets.join("42.sock")).expect("binds"));
        fs::write(sockets.join("notes.txt"), "ignored").expect("writes");
        let found = running_systems(&sockets);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pid, 41);
        assert!(
            !sockets.join("42.sock").exists(),
            "the stale socket is gone"
        );
        assert_eq!(choose(&sockets, None).expect("one").pid, 41);
        let other = choose(&sockets, Some(7)).expect_err("not running");
        assert!(
            other.to_string().contains("no running system with pid 7"),
            "{other}"
        );
        let _second = Listener::bind_in(&sockets, 43).expect("binds");
        let many = choose(&sockets, None).expect_err("two run");
        assert!(
            many.to_string().contains("--pid N") && many.to_string().contains("pid 43"),
            "{many}"
        );
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "the socket goes with its run");
    }
}
