//! The console of `stratum run` shared with its users: on a terminal, the
//! focused console (one VM's console at a time, full screen, with a status
//! bar on the terminal's last line); on every run, `stratum console`.
//!
//! [`Hub`] sits between QEMU's serial line and the people using it: the
//! terminal `stratum run` was started on, if it has one ([`Hub::start`]),
//! and the `stratum console` clients attached through the run's socket
//! ([`crate::attach`]). Without a terminal ([`Hub::serve`]) the run's
//! stdout gets the stream as it is (the caller copies it) and the hub only
//! serves the clients; stdin, when given, is forwarded to QEMU as it is,
//! so it goes to whichever VM has the hypervisor's input focus. The
//! decisions are in [`crate::screen`]; this module does the I/O.
//!
//! - QEMU's console output goes through the [`Model`]: the VM with the
//!   hypervisor's input focus is on the screen, untagged, as it wrote it; a
//!   switch clears the screen and replays the new VM's scrollback. The
//!   hypervisor's own lines (`[stratum] …`) are shown, on a line of their
//!   own, on whichever VM's screen is up (they are not replayed); its focus
//!   status lines only update the status bar.
//! - Keys typed at the terminal: Ctrl-A, then a key ([`crate::screen::Keys`],
//!   [`KEYS_HELP`]); everything else goes to the focused VM, Ctrl-C and the
//!   arrow keys included (the terminal is in raw mode, [`crate::term`]).
//! - Input from an attached client for VM `v` is held until `v` has the
//!   hypervisor's focus, which the hub moves there; the terminal's screen
//!   follows the focus (there is one input focus). When QEMU reads its
//!   input from elsewhere ([`ServeInput::ReadOnly`]), clients only watch.
//!
//! The status bar is redrawn after each piece of output, unless that
//! output left an escape sequence open ([`EscapeTracker`]).
//!
//! Lock order: the hub's one mutex; QEMU's input is written by a thread of
//! its own from a channel, so no lock is held while QEMU may block.

use std::fs::File;
use std::io::{self, Read as _, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::ChildStdin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use stratum_core::console::VmState;

use crate::attach::{Listener, Request};
use crate::screen::{Effect, EscapeTracker, KEYS_HELP, Key, Keys, Model, stats_escape, status_bar};
use crate::term::{self, RawMode};

/// Terminal size assumed when it cannot be read.
const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// The terminal screen: the focused VM's output above, the status bar on
/// the last line.
struct Screen {
    out: io::Stdout,
    rows: u16,
    cols: u16,
    esc: EscapeTracker,
    at_line_start: bool,
}

impl Screen {
    fn new() -> Self {
        let (rows, cols) = term::size(1).unwrap_or(DEFAULT_SIZE);
        Self {
            out: io::stdout(),
            rows: rows.max(2),
            cols,
            esc: EscapeTracker::default(),
            at_line_start: true,
        }
    }

    /// Clears the screen, sets the scroll region above the bar, and shows
    /// `replay` (the focused VM's scrollback).
    fn reset(&mut self, replay: &[u8], model: &Model) {
        if let Some((rows, cols)) = term::size(1) {
            (self.rows, self.cols) = (rows.max(2), cols);
        }
        let mut bytes = format!("\x1b[0m\x1b[2J\x1b[1;{}r\x1b[H", self.rows - 1).into_bytes();
        bytes.extend_from_slice(replay);
        self.esc = EscapeTracker::default();
        self.esc.feed(replay);
        self.at_line_start = replay.last().is_none_or(|&b| b == b'\n');
        self.put(&bytes);
        self.bar(model);
    }

    /// Shows VM output.
    fn output(&mut self, bytes: &[u8], model: &Model) {
        self.esc.feed(bytes);
        if let Some(&last) = bytes.last() {
            self.at_line_start = last == b'\n';
        }
        self.put(bytes);
        self.bar(model);
    }

    /// Shows a message of the hypervisor's or ours, on a line of its own.
    fn notice(&mut self, line: &str, model: &Model) {
        let mut bytes = Vec::new();
        if !self.at_line_start {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(format!("\x1b[36m{line}\x1b[0m\r\n").as_bytes());
        self.at_line_start = true;
        self.put(&bytes);
        self.bar(model);
    }

    /// Redraws the status bar (not while an escape sequence is open; after
    /// a resize, the whole screen).
    fn bar(&mut self, model: &Model) {
        if !self.esc.idle() {
            return;
        }
        if let Some((rows, cols)) = term::size(1)
            && (rows.max(2), cols) != (self.rows, self.cols)
        {
            return self.reset(&model.replay(model.focus()), model);
        }
        let text = status_bar(
            model.names(),
            model.states(),
            model.focus(),
            usize::from(self.cols),
        );
        let bytes = format!("\x1b7\x1b[{};1H\x1b[7m{text}\x1b[0m\x1b8", self.rows);
        self.put(bytes.as_bytes());
    }

    fn put(&mut self, bytes: &[u8]) {
        // A terminal that went away must not stop the run.
        let _ = self.out.write_all(bytes).and_then(|()| self.out.flush());
    }

    /// Leaves the cursor below everything, for the shell that comes back.
    fn leave(&mut self) {
        let bytes = format!("\x1b[0m\x1b[{};1H", self.rows);
        self.put(bytes.as_bytes());
    }
}

/// A `stratum console` client.
struct Client {
    id: u64,
    vm: usize,
    stream: UnixStream,
}

/// Everything under the hub's lock.
struct Inner {
    model: Model,
    /// The terminal's screen (none without a terminal).
    screen: Option<Screen>,
    /// The VM on the screen (follows the model's focus).
    shown: usize,
    keys: Keys,
    clients: Vec<Client>,
    next_client: u64,
    /// Client input waiting for its VM to get the focus: (VM, bytes).
    held: Vec<(usize, Vec<u8>)>,
}

/// How QEMU's console input is fed when the run has no terminal
/// ([`Hub::serve`]).
#[derive(Debug)]
pub enum ServeInput {
    /// QEMU reads a pipe that the hub writes: what attached clients type,
    /// and `stdin` (if given) as it is.
    Pipe {
        /// QEMU's input.
        qemu: ChildStdin,
        /// The run's stdin, forwarded.
        stdin: Option<OwnedFd>,
    },
    /// QEMU reads something else; attached clients only watch, and are
    /// told why.
    ReadOnly(&'static str),
}

/// The shared console of one run (see the module docs).
pub struct Hub {
    inner: Mutex<Inner>,
    /// QEMU's input; none when clients only watch.
    to_qemu: Option<Sender<Vec<u8>>>,
    /// Why clients only watch.
    read_only: Option<&'static str>,
    qemu_pid: u32,
    quit: AtomicBool,
    listener: Mutex<Option<Listener>>,
    raw: Mutex<Option<RawMode>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("qemu_pid", &self.qemu_pid)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Takes over the terminal (raw mode, full screen) for a system of VMs
    /// `names` whose QEMU (process `qemu_pid`) reads `qemu_input`; starts
    /// reading the keyboard and listening for `stratum console`.
    pub fn start(
        names: Vec<String>,
        qemu_input: ChildStdin,
        qemu_pid: u32,
    ) -> io::Result<Arc<Self>> {
        let raw = RawMode::enter(0)?;
        term::stop_on_signal(qemu_pid);
        let model = Model::new(names);
        let mut screen = Screen::new();
        screen.reset(&[], &model);
        let hub = Self::new(
            model,
            Some(screen),
            Some(writer(qemu_input)),
            None,
            qemu_pid,
        );
        *lock(&hub.raw) = Some(raw);
        match hub.listen() {
            Ok(path) => hub.notice(&format!(
                "stratum: focused console; {KEYS_HELP}. `stratum console NAME` attaches from another terminal (socket {})",
                path.display()
            )),
            Err(e) => hub.notice(&format!("stratum: `stratum console` is not available: {e}")),
        }
        let h = Arc::clone(&hub);
        thread::spawn(move || h.read_keyboard());
        Ok(hub)
    }

    /// Serves `stratum console` for a run without a terminal, of VMs
    /// `names` whose QEMU (process `qemu_pid`) reads `input`; nothing is
    /// written to stdout or stderr but a warning if the socket cannot be
    /// made (the run goes on without it).
    pub fn serve(names: Vec<String>, qemu_pid: u32, input: ServeInput) -> Arc<Self> {
        let model = Model::new(names);
        let (to_qemu, read_only, stdin) = match input {
            ServeInput::Pipe { qemu, stdin } => (Some(writer(qemu)), None, stdin),
            ServeInput::ReadOnly(why) => (None, Some(why), None),
        };
        let hub = Self::new(model, None, to_qemu, read_only, qemu_pid);
        if let Err(e) = hub.listen() {
            eprintln!("stratum: warning: `stratum console` is not available: {e}");
        }
        if let Some(stdin) = stdin {
            let h = Arc::clone(&hub);
            thread::spawn(move || h.forward_stdin(File::from(stdin)));
        }
        hub
    }

    fn new(
        model: Model,
        screen: Option<Screen>,
        to_qemu: Option<Sender<Vec<u8>>>,
        read_only: Option<&'static str>,
        qemu_pid: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                model,
                screen,
                shown: 0,
                keys: Keys::new(),
                clients: Vec::new(),
                next_client: 0,
                held: Vec::new(),
            }),
            to_qemu,
            read_only,
            qemu_pid,
            quit: AtomicBool::new(false),
            listener: Mutex::new(None),
            raw: Mutex::new(None),
        })
    }

    /// Listens for `stratum console` (in a thread of its own); returns the
    /// socket's path.
    fn listen(self: &Arc<Self>) -> io::Result<std::path::PathBuf> {
        let listener = Listener::bind(std::process::id())?;
        let path = listener.path().to_path_buf();
        let accepting = listener.try_clone_listener()?;
        *lock(&self.listener) = Some(listener);
        let h = Arc::clone(self);
        thread::spawn(move || crate::attach::serve(&accepting, &h));
        Ok(path)
    }

    /// Copies the run's stdin to QEMU until it ends: the bytes go to the
    /// VM with the hypervisor's input focus, escapes included, as when
    /// QEMU read stdin itself.
    fn forward_stdin(&self, mut stdin: File) {
        let mut buf = [0u8; 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => self.send(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Whether the user quit (Ctrl-A x): QEMU was told to stop.
    pub fn quit(&self) -> bool {
        self.quit.load(Ordering::SeqCst)
    }

    /// Takes QEMU's console output.
    pub fn feed(&self, bytes: &[u8]) {
        let mut inner = lock(&self.inner);
        let fx = inner.model.feed(bytes);
        self.apply(&mut inner, fx);
    }

    /// The run is over: clients are told and dropped, the socket removed,
    /// the terminal put back.
    pub fn finish(&self) {
        drop(lock(&self.listener).take());
        let mut inner = lock(&self.inner);
        for c in inner.clients.drain(..) {
            let _ = (&c.stream).write_all(b"\r\n[stratum console] the system stopped\r\n");
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        if let Some(screen) = inner.screen.as_mut() {
            screen.leave();
        }
        drop(inner);
        drop(lock(&self.raw).take());
    }

    fn notice(&self, line: &str) {
        lock(&self.inner).notice(line);
    }

    fn send(&self, bytes: Vec<u8>) {
        if let Some(to_qemu) = &self.to_qemu {
            let _ = to_qemu.send(bytes);
        }
    }

    /// Reads the terminal until it closes.
    fn read_keyboard(&self) {
        let mut stdin = io::stdin();
        let mut buf = [0u8; 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let mut inner = lock(&self.inner);
            let keys = inner.keys.feed(&buf[..n]);
            for key in keys {
                self.key(&mut inner, key);
            }
        }
    }

    fn key(&self, inner: &mut Inner, key: Key) {
        let notice = |inner: &mut Inner, line: String| inner.notice(&line);
        match key {
            Key::Type(bytes) => self.send(bytes),
            Key::Next => match inner.model.next() {
                Some(vm) => self.focus(inner, vm),
                None => notice(inner, "stratum: no other VM is running".into()),
            },
            Key::Select(vm) => self.focus(inner, vm),
            Key::Stats => self.send(stats_escape()),
            Key::Quit => {
                self.quit.store(true, Ordering::SeqCst);
                notice(inner, "stratum: stopping the system (Ctrl-A x)".into());
                term::terminate(self.qemu_pid);
            }
            Key::Help => notice(inner, format!("stratum: {KEYS_HELP}")),
            Key::Unknown(b) => notice(
                inner,
                format!(
                    "stratum: Ctrl-A {}: no such key (Ctrl-A ? lists them)",
                    show_key(b)
                ),
            ),
        }
    }

    /// Asks for the focus on `vm` for the terminal.
    fn focus(&self, inner: &mut Inner, vm: usize) {
        match inner.model.want_focus(vm) {
            Ok(fx) => self.apply(inner, fx),
            Err(e) => {
                let name = inner.model.names().get(vm).cloned().unwrap_or_default();
                inner.notice(&format!(
                    "stratum: cannot switch to VM {} {name}: {e}",
                    vm + 1
                ));
            }
        }
    }

    fn apply(&self, inner: &mut Inner, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Output { vm, bytes } => {
                    if vm == inner.shown
                        && let Inner {
                            screen: Some(screen),
                            model,
                            ..
                        } = &mut *inner
                    {
                        screen.output(&bytes, model);
                    }
                    send_clients(inner, |c| c.vm == vm, &bytes);
                }
                Effect::Notice(line) => {
                    inner.notice(&line);
                    let names = inner.model.names().to_vec();
                    let text = format!("\r\n{line}\r\n");
                    send_clients(
                        inner,
                        |c| line.contains(&format!("'{}'", names[c.vm])),
                        text.as_bytes(),
                    );
                }
                Effect::Focus(vm) => {
                    let left = std::mem::replace(&mut inner.shown, vm);
                    let replay = inner.model.replay(vm);
                    let Inner {
                        screen: Some(screen),
                        model,
                        ..
                    } = &mut *inner
                    else {
                        self.release_held(inner);
                        continue;
                    };
                    screen.reset(&replay, model);
                    // The hypervisor moved the focus because the VM on the
                    // screen stopped: say so (its last words were cleared).
                    let state = model.states().get(left).copied();
                    if let Some(state @ (VmState::Stopped | VmState::Crashed)) = state {
                        let names = model.names();
                        let line = format!(
                            "stratum: {} {}; the console moved to {}",
                            names[left],
                            state.name(),
                            names[vm]
                        );
                        screen.notice(&line, model);
                    }
                    self.release_held(inner);
                }
                Effect::States => {
                    if let Inner {
                        screen: Some(screen),
                        model,
                        ..
                    } = &mut *inner
                    {
                        screen.bar(model);
                    }
                    drop_stopped_clients(inner);
                }
                Effect::Send(bytes) => self.send(bytes),
                Effect::Unreachable(vm) => {
                    inner.held.retain(|(v, _)| *v != vm);
                    let name = inner.model.names()[vm].clone();
                    let line =
                        format!("stratum: {name} did not get the input focus (it does not run)");
                    inner.notice(&line);
                    let text = format!(
                        "\r\n[stratum console] input dropped: {name} did not get the input focus (it does not run)\r\n"
                    );
                    send_clients(inner, |c| c.vm == vm, text.as_bytes());
                }
            }
        }
    }

    /// Sends held client input whose VM now has the focus.
    fn release_held(&self, inner: &mut Inner) {
        let held = std::mem::take(&mut inner.held);
        for (vm, bytes) in held {
            if inner.model.accepts_input(vm) {
                self.send(bytes);
            } else {
                inner.held.push((vm, bytes));
            }
        }
    }

    /// Handles a client's first request; `Ok(id)` once it is attached.
    pub(crate) fn attach(
        &self,
        request: &Request,
        mut stream: UnixStream,
    ) -> io::Result<Option<u64>> {
        let mut inner = lock(&self.inner);
        let model = &inner.model;
        let reply =
            |stream: &mut UnixStream, line: &str| stream.write_all(format!("{line}\n").as_bytes());
        let name = match request {
            Request::List => {
                reply(
                    &mut stream,
                    &crate::attach::format_list(model.names(), model.states()),
                )?;
                return Ok(None);
            }
            Request::Attach(name) => name,
        };
        let Some(vm) = model.find(name) else {
            reply(
                &mut stream,
                &format!(
                    "error: no VM named '{name}' in this system; its VMs: {}",
                    model.names().join(", ")
                ),
            )?;
            return Ok(None);
        };
        let state = model.states()[vm];
        if matches!(state, VmState::Stopped | VmState::Crashed) {
            reply(
                &mut stream,
                &format!("error: VM '{name}' is {}", state.name()),
            )?;
            return Ok(None);
        }
        reply(&mut stream, "ok")?;
        if let Some(why) = self.read_only {
            let line = format!("[stratum console] read-only: {why}\r\n");
            stream.write_all(line.as_bytes())?;
        }
        stream.write_all(&model.replay(vm))?;
        let id = inner.next_client;
        inner.next_client += 1;
        inner.clients.push(Client { id, vm, stream });
        Ok(Some(id))
    }

    /// Input typed at client `id`: to its VM, once that has the focus.
    pub(crate) fn client_input(&self, id: u64, bytes: &[u8]) {
        let mut inner = lock(&self.inner);
        let Some(vm) = inner.clients.iter().find(|c| c.id == id).map(|c| c.vm) else {
            return;
        };
        if self.read_only.is_some() {
            // Told at attach; nothing reaches QEMU.
            return;
        }
        let waiting = inner.held.iter().any(|(v, _)| *v == vm);
        if inner.model.accepts_input(vm) && !waiting {
            self.send(bytes.to_vec());
            return;
        }
        match inner.model.want_focus(vm) {
            Ok(fx) => {
                inner.held.push((vm, bytes.to_vec()));
                self.apply(&mut inner, fx);
            }
            Err(e) => {
                let line = format!("\r\n[stratum console] input dropped: {e}\r\n");
                send_clients(&mut inner, |c| c.id == id, line.as_bytes());
            }
        }
    }

    /// Client `id` went away.
    pub(crate) fn detach(&self, id: u64) {
        lock(&self.inner).clients.retain(|c| c.id != id);
    }
}

impl Inner {
    /// Shows a message on the terminal's screen, if there is one (without
    /// a terminal, stdout is the hypervisor's stream and nothing else).
    fn notice(&mut self, line: &str) {
        if let Some(screen) = self.screen.as_mut() {
            screen.notice(line, &self.model);
        }
    }
}

/// A thread that writes what the hub sends to QEMU's input, so that a full
/// pipe never blocks the hub.
fn writer(qemu_input: ChildStdin) -> Sender<Vec<u8>> {
    let (to_qemu, from_hub) = mpsc::channel::<Vec<u8>>();
    thread::spawn(move || {
        let mut input = qemu_input;
        for bytes in from_hub {
            if input
                .write_all(&bytes)
                .and_then(|()| input.flush())
                .is_err()
            {
                break;
            }
        }
    });
    to_qemu
}

/// Writes `bytes` to the clients that `pick` chooses; drops those whose
/// write fails (gone, or stuck past their write timeout).
fn send_clients(inner: &mut Inner, pick: impl Fn(&Client) -> bool, bytes: &[u8]) {
    inner.clients.retain(|c| {
        if !pick(c) {
            return true;
        }
        (&c.stream).write_all(bytes).is_ok()
    });
}

/// Drops the clients of VMs that stopped or crashed, telling them.
fn drop_stopped_clients(inner: &mut Inner) {
    let states = inner.model.states().to_vec();
    let names = inner.model.names().to_vec();
    inner.clients.retain(|c| {
        let state = states[c.vm];
        if matches!(state, VmState::Stopped | VmState::Crashed) {
            let line = format!(
                "\r\n[stratum console] {} is {}\r\n",
                names[c.vm],
                state.name()
            );
            let _ = (&c.stream).write_all(line.as_bytes());
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            return false;
        }
        true
    });
}

/// A key for a message: printable as itself, else as `0xNN`.
fn show_key(b: u8) -> String {
    if b.is_ascii_graphic() {
        char::from(b).to_string()
    } else {
        format!("{b:#04x}")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked holding the lock left consistent enough state
    // for output to go on (and the panic hook put the terminal back).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;
    use std::sync::mpsc::Receiver;
    use std::time::Duration;
    use stratum_core::console::{ESCAPE_BYTE, ESCAPE_LEN};

    /// A hub without a terminal for VMs `a` and `b`, and what it sends QEMU.
    fn hub(read_only: Option<&'static str>) -> (Arc<Hub>, Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel();
        let names = vec!["a".to_owned(), "b".to_owned()];
        (
            Hub::new(Model::new(names), None, Some(tx), read_only, 0),
            rx,
        )
    }

    fn attach(hub: &Hub, name: &str) -> (u64, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        ours.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        let id = hub
            .attach(&Request::Attach(name.into()), theirs)
            .expect("answers")
            .expect("attached");
        (id, ours)
    }

    /// Reads `stream` until it has sent `want` in all.
    #[track_caller]
    fn expect(stream: &mut UnixStream, want: &str) {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < want.len() {
            let n = stream.read(&mut buf).expect("the hub writes");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&got), want);
    }

    const STATUS_B: &[u8] = b"[stratum] console: input to b; VMs: a running, b running (input)\r\n";

    #[test]
    fn without_a_terminal_a_client_gets_its_vm_and_types_once_it_has_the_focus() {
        let (hub, to_qemu) = hub(None);
        hub.feed(b"a | one\r\nb | two\r\n");
        let (id, mut client) = attach(&hub, "b");
        expect(&mut client, "ok\ntwo");
        // a has the focus: the hub moves it (one escape) and holds the input.
        hub.client_input(id, b"x");
        assert_eq!(to_qemu.try_recv(), Ok(vec![ESCAPE_BYTE; ESCAPE_LEN]));
        assert!(to_qemu.try_recv().is_err(), "held until b has the focus");
        hub.feed(STATUS_B);
        assert_eq!(to_qemu.try_recv(), Ok(b"x".to_vec()));
        hub.client_input(id, b"y");
        assert_eq!(to_qemu.try_recv(), Ok(b"y".to_vec()), "b has it now");
        // Only b's output reaches b's client, its line ends kept.
        hub.feed(b"a | three\r\nb | four\r\n");
        expect(&mut client, "\r\nfour");
        // The run's stdin goes as it is, to whichever VM has the focus.
        let dir = TestDir::new("hub-stdin");
        let typed = dir.write("typed", b"\x01z\n");
        hub.forward_stdin(File::open(typed).expect("just written"));
        assert_eq!(to_qemu.try_recv(), Ok(b"\x01z\n".to_vec()));
        hub.finish();
        expect(&mut client, "\r\n[stratum console] the system stopped\r\n");
    }

    #[test]
    fn a_read_only_run_tells_its_clients_and_never_moves_the_focus() {
        let (hub, to_qemu) = hub(Some("why"));
        hub.feed(b"b | two\r\n");
        let (id, mut client) = attach(&hub, "b");
        expect(&mut client, "ok\n[stratum console] read-only: why\r\ntwo");
        hub.client_input(id, b"x");
        assert!(to_qemu.try_recv().is_err(), "nothing reaches QEMU");
        assert_eq!(lock(&hub.inner).model.target(), None, "no focus move");
        assert!(lock(&hub.inner).held.is_empty());
    }
}
