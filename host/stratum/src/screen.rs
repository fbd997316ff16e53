//! The focused console of `stratum run` on a terminal, and of `stratum
//! console`: the pure parts. Nothing here touches a terminal, a socket or
//! QEMU; [`crate::focused`] does that and feeds this module bytes.
//!
//! - [`StreamDemux`] reads the hypervisor's console byte stream *as it
//!   arrives* (a shell prompt has no line end, so waiting for whole lines, as
//!   [`crate::demux::Demux`] does, would hide it) and gives each VM back
//!   exactly the bytes it wrote: tags (`name | `, `name + `) removed, and
//!   the `\r\n` the hypervisor adds when another writer cuts a VM's line
//!   dropped. With several VMs, a VM's line end is held until its next
//!   line starts, because only then is it known whether the hypervisor cut
//!   the line (`name + ` follows: the `\r\n` was the hypervisor's) or the
//!   VM ended it (`name | ` follows: it was the VM's). Lines that start
//!   `[stratum] ` are the hypervisor's own. A tag may be coloured (the
//!   hypervisor colours them when `stratum run`'s stdout is a terminal,
//!   while its stdin is not): the colour code before it and the reset
//!   after it are removed with the tag.
//! - [`Scrollback`]: what each VM printed, bounded (the newest
//!   [`SCROLLBACK_BYTES`]), replayed when the screen switches to it.
//! - [`Model`]: the VMs' states and the hypervisor's input focus, kept in
//!   step with the hypervisor by reading its messages (the status line it
//!   prints after every focus change, `vmN 'name' stopped …`, `… crashed:
//!   restarting …`) and moved by sending its escape (three Ctrl-A) one hop
//!   at a time until the wanted VM has the focus (the hypervisor moves to
//!   [`next_running`], which the model uses to predict the hop).
//! - [`Keys`]: the terminal's prefix keys (Ctrl-A, then a key, as in screen
//!   and tmux).
//! - [`status_bar`]: the one-line status bar.
//! - [`EscapeTracker`]: whether a byte stream is between escape sequences,
//!   so that the status bar is never drawn into the middle of one.

use stratum_core::console::{ESCAPE_BYTE, ESCAPE_LEN, STATS_KEY, VmState, next_running};

use crate::demux::{CONTINUED, HYPERVISOR_PREFIX, TAG};

/// How much of each VM's output is kept for replay.
pub const SCROLLBACK_BYTES: usize = 64 * 1024;

/// What ends a tag's colour (the hypervisor's `ESC [ 0 m`).
const COLOUR_RESET: &[u8] = b"\x1b[0m";

/// The prefix key of the terminal console (Ctrl-A).
pub const PREFIX: u8 = 0x01;

/// What the hypervisor's focus status line starts with, after
/// [`HYPERVISOR_PREFIX`].
const STATUS_PREFIX: &str = "console: input to ";

/// One piece of the console stream, as [`StreamDemux::feed`] hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes VM `vm` (its index in the config) wrote, exactly.
    Vm {
        /// The VM's index.
        vm: usize,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// A whole line of the hypervisor's, without [`HYPERVISOR_PREFIX`] and
    /// the line end.
    Hypervisor(String),
    /// A whole line nobody tagged (with several VMs), without the line end.
    Other(String),
}

/// Where [`StreamDemux`] is within a physical line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Within {
    /// The start of a line, not yet known whose: the bytes so far.
    Start(Vec<u8>),
    /// In VM `vm`'s text; `cr` when a `\r` is held (it may start the
    /// line end).
    Vm { vm: usize, cr: bool },
    /// In a line of the hypervisor's (`hypervisor`) or nobody's: the bytes
    /// so far.
    Line { hypervisor: bool, text: Vec<u8> },
}

/// Splits the console byte stream into [`Event`]s as it arrives (see the
/// module docs). Tags may be coloured.
#[derive(Clone, Debug)]
pub struct StreamDemux {
    names: Vec<String>,
    within: Within,
    /// Per VM: the line end that closed its last line, until it is known
    /// whether the VM or the hypervisor wrote it.
    held_end: Vec<Option<&'static [u8]>>,
    /// A colour code started this line (its tag is coloured).
    tag_colour: bool,
    /// After a coloured tag: how much of [`COLOUR_RESET`] came so far.
    reset: Option<usize>,
}

impl StreamDemux {
    /// A demultiplexer for VMs named `names`, in config order. With one VM,
    /// nothing is tagged: every line is its, but the hypervisor's.
    pub fn new(names: Vec<String>) -> Self {
        let n = names.len();
        Self {
            names,
            within: Within::Start(Vec::new()),
            held_end: vec![None; n],
            tag_colour: false,
            reset: None,
        }
    }

    /// Takes the next bytes; calls `out` for each event they make.
    pub fn feed(&mut self, bytes: &[u8], out: &mut dyn FnMut(Event)) {
        let mut run = Vec::new();
        for &b in bytes {
            self.byte(b, &mut run, out);
        }
        self.flush_run(&mut run, out);
    }

    /// Emits the VM bytes gathered so far in this chunk.
    fn flush_run(&self, run: &mut Vec<u8>, out: &mut dyn FnMut(Event)) {
        if let Within::Vm { vm, .. } = self.within
            && !run.is_empty()
        {
            out(Event::Vm {
                vm,
                bytes: std::mem::take(run),
            });
        }
    }

    fn byte(&mut self, b: u8, run: &mut Vec<u8>, out: &mut dyn FnMut(Event)) {
        match &mut self.within {
            Within::Vm { vm, cr } => {
                let (vm, held_cr) = (*vm, *cr);
                // The reset that ends a coloured tag is the tag's.
                if let Some(n) = self.reset.take() {
                    if COLOUR_RESET.get(n) == Some(&b) {
                        self.reset = (n + 1 < COLOUR_RESET.len()).then_some(n + 1);
                        return;
                    }
                    run.extend_from_slice(&COLOUR_RESET[..n]);
                }
                if b == b'\n' {
                    let end: &'static [u8] = if held_cr { b"\r\n" } else { b"\n" };
                    if self.names.len() > 1 {
                        self.held_end[vm] = Some(end);
                    } else {
                        // Nobody cuts a single VM's lines: its line ends
                        // are all its own.
                        run.extend_from_slice(end);
                    }
                    self.flush_run(run, out);
                    self.within = Within::Start(Vec::new());
                    return;
                }
                if held_cr {
                    run.push(b'\r');
                }
                if b != b'\r' {
                    run.push(b);
                }
                self.within = Within::Vm { vm, cr: b == b'\r' };
            }
            Within::Line { hypervisor, text } => {
                if b != b'\n' {
                    text.push(b);
                    return;
                }
                let line = String::from_utf8_lossy(text)
                    .trim_end_matches('\r')
                    .to_owned();
                out(if *hypervisor {
                    Event::Hypervisor(line)
                } else {
                    Event::Other(line)
                });
                self.within = Within::Start(Vec::new());
            }
            Within::Start(start) => {
                start.push(b);
                // A colour code at a line start (several VMs: no VM's
                // text starts a line) is a tag's: dropped.
                if self.names.len() > 1 && start[0] == 0x1b {
                    match colour_code(start) {
                        Some(true) => {
                            start.clear();
                            self.tag_colour = true;
                            return;
                        }
                        Some(false) => return,
                        None => {}
                    }
                }
                let start = std::mem::take(start);
                self.classify(start, run, out);
            }
        }
    }

    /// Decides whose line `start` begins, once it can: a VM's tag, the
    /// hypervisor's prefix, or (no prefix fits any more) nobody's, or, with
    /// one VM, the VM's.
    fn classify(&mut self, start: Vec<u8>, run: &mut Vec<u8>, out: &mut dyn FnMut(Event)) {
        if start.as_slice() == HYPERVISOR_PREFIX.as_bytes() {
            self.tag_colour = false;
            self.within = Within::Line {
                hypervisor: true,
                text: Vec::new(),
            };
            return;
        }
        let tagged = self.names.len() > 1;
        let mut could_be = HYPERVISOR_PREFIX.as_bytes().starts_with(&start);
        if tagged {
            for (vm, name) in self.names.iter().enumerate() {
                for (sep, continues) in [(TAG, false), (CONTINUED, true)] {
                    let tag = [name.as_bytes(), sep.as_bytes()].concat();
                    if tag == start {
                        self.start_vm(vm, continues, run);
                        return;
                    }
                    could_be |= tag.starts_with(&start);
                }
            }
        }
        if could_be && start.last() != Some(&b'\n') {
            self.within = Within::Start(start);
            return;
        }
        if tagged {
            self.tag_colour = false;
            self.within = Within::Line {
                hypervisor: false,
                text: Vec::new(),
            };
        } else {
            self.start_vm(0, false, run);
        }
        for b in start {
            self.byte(b, run, out);
        }
    }

    /// VM `vm`'s line starts (`continues`: it goes on after a cut).
    fn start_vm(&mut self, vm: usize, continues: bool, run: &mut Vec<u8>) {
        if let Some(end) = self.held_end[vm].take()
            && !continues
        {
            run.extend_from_slice(end);
        }
        // `run` is empty here (a VM's run is flushed when its line ends),
        // so it now gathers this VM's bytes.
        self.within = Within::Vm { vm, cr: false };
        self.reset = std::mem::take(&mut self.tag_colour).then_some(0);
    }
}

/// Whether `bytes` (starting with ESC) are a colour code `ESC [ digits m`:
/// `Some(true)` whole, `Some(false)` so far, `None` not one.
fn colour_code(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [0x1b] | [0x1b, b'['] => Some(false),
        [0x1b, b'[', rest @ ..] => match rest.split_last() {
            Some((b'm', digits)) if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
                Some(true)
            }
            _ if rest.iter().all(u8::is_ascii_digit) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The newest bytes of one VM's output, at most [`SCROLLBACK_BYTES`] (or
/// the limit given).
#[derive(Clone, Debug)]
pub struct Scrollback {
    limit: usize,
    bytes: std::collections::VecDeque<u8>,
    /// Older bytes were dropped.
    cut: bool,
}

impl Default for Scrollback {
    fn default() -> Self {
        Self::with_limit(SCROLLBACK_BYTES)
    }
}

impl Scrollback {
    /// An empty scrollback keeping at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            bytes: std::collections::VecDeque::new(),
            cut: false,
        }
    }

    /// Appends `bytes`, dropping the oldest beyond the limit.
    pub fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend(bytes);
        let excess = self.bytes.len().saturating_sub(self.limit);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.cut = true;
        }
    }

    /// What to replay: everything kept, or, once older bytes were dropped,
    /// from the first line start kept (never half a line or half an
    /// escape sequence).
    pub fn replay(&self) -> Vec<u8> {
        let (a, b) = self.bytes.as_slices();
        let all = [a, b].concat();
        if !self.cut {
            return all;
        }
        match all.iter().position(|&b| b == b'\n') {
            Some(i) => all[i + 1..].to_vec(),
            None => Vec::new(),
        }
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Nothing kept.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// What the [`Model`] asks its owner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// VM `vm` printed `bytes` (already in its scrollback): show them where
    /// it is watched.
    Output {
        /// The VM.
        vm: usize,
        /// What it printed.
        bytes: Vec<u8>,
    },
    /// A message for the person at the terminal, on a line of its own (the
    /// hypervisor's lines, but its focus status lines).
    Notice(String),
    /// The hypervisor's input focus moved to `vm`: the screen switches to it.
    Focus(usize),
    /// A VM's state changed: redraw the status bar.
    States,
    /// Write these bytes to the hypervisor's console input.
    Send(Vec<u8>),
    /// The wanted focus cannot be reached (`vm` does not run): input held
    /// for it is dropped.
    Unreachable(usize),
}

/// Why [`Model::want_focus`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FocusError {
    /// No VM of that index.
    NoSuchVm(usize),
    /// The VM is stopped or crashed; its state is given.
    NotRunning(usize, VmState),
}

impl std::fmt::Display for FocusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSuchVm(vm) => write!(f, "there is no VM {}", vm + 1),
            Self::NotRunning(_, state) => write!(f, "it is {}", state.name()),
        }
    }
}

/// The console as the host sees it: every VM's state and scrollback, and
/// the hypervisor's input focus (see the module docs).
#[derive(Clone, Debug)]
pub struct Model {
    names: Vec<String>,
    states: Vec<VmState>,
    focus: usize,
    scrollback: Vec<Scrollback>,
    demux: StreamDemux,
    /// The VM that should get the focus, while escapes move it there.
    target: Option<usize>,
    /// Escapes sent whose status line has not come back yet.
    in_flight: usize,
    /// Escapes sent for the current target.
    hops: usize,
}

impl Model {
    /// The console of VMs `names` (config order), all running, VM 0 with
    /// the focus (as the hypervisor starts).
    pub fn new(names: Vec<String>) -> Self {
        let n = names.len();
        Self {
            demux: StreamDemux::new(names.clone()),
            names,
            states: vec![VmState::Running; n],
            focus: 0,
            scrollback: vec![Scrollback::default(); n],
            target: None,
            in_flight: 0,
            hops: 0,
        }
    }

    /// The VMs' names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The VMs' states as last seen.
    pub fn states(&self) -> &[VmState] {
        &self.states
    }

    /// The VM with the hypervisor's input focus, as last seen.
    pub fn focus(&self) -> usize {
        self.focus
    }

    /// The VM a switch is under way to, if any.
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// The index of the VM named `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// What VM `vm` printed, for replay.
    pub fn replay(&self, vm: usize) -> Vec<u8> {
        self.scrollback
            .get(vm)
            .map(Scrollback::replay)
            .unwrap_or_default()
    }

    /// Takes console output from the hypervisor.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Effect> {
        let mut events = Vec::new();
        self.demux.feed(bytes, &mut |e| events.push(e));
        let mut fx = Vec::new();
        for e in events {
            self.event(e, &mut fx);
        }
        fx
    }

    fn event(&mut self, e: Event, fx: &mut Vec<Effect>) {
        match e {
            Event::Vm { vm, bytes } => {
                // A VM that prints again after a restart runs again (the
                // hypervisor says nothing when it does).
                if self.states.get(vm) == Some(&VmState::Restarting) {
                    self.states[vm] = VmState::Running;
                    fx.push(Effect::States);
                }
                if let Some(s) = self.scrollback.get_mut(vm) {
                    s.push(&bytes);
                }
                fx.push(Effect::Output { vm, bytes });
            }
            Event::Hypervisor(line) => {
                if let Some(status) = self.parse_status(&line) {
                    self.status_line(status, fx);
                    return;
                }
                if let Some((vm, state)) = self.parse_state_change(&line)
                    && self.states[vm] != state
                {
                    self.states[vm] = state;
                    fx.push(Effect::States);
                }
                fx.push(Effect::Notice(format!("{HYPERVISOR_PREFIX}{line}")));
            }
            Event::Other(line) => fx.push(Effect::Notice(line)),
        }
    }

    /// Reads the hypervisor's focus status line (`console: input to b; VMs:
    /// a running, b running (input), c crashed`): the focus and every
    /// state, or `None` if `line` is not one or does not fit these VMs.
    fn parse_status(&self, line: &str) -> Option<(usize, Vec<VmState>)> {
        let rest = line.strip_prefix(STATUS_PREFIX)?;
        let (_, list) = rest.split_once("; VMs: ")?;
        let mut states = Vec::with_capacity(self.names.len());
        let mut focus = None;
        let mut rest = list;
        for (vm, name) in self.names.iter().enumerate() {
            if vm > 0 {
                rest = rest.strip_prefix(", ")?;
            }
            rest = rest.strip_prefix(name.as_str())?.strip_prefix(' ')?;
            let state = [
                VmState::Running,
                VmState::Stopped,
                VmState::Crashed,
                VmState::Restarting,
            ]
            .into_iter()
            .find(|s| rest.starts_with(s.name()))?;
            rest = &rest[state.name().len()..];
            if let Some(r) = rest.strip_prefix(" (input)") {
                focus = Some(vm);
                rest = r;
            }
            states.push(state);
        }
        rest.is_empty().then_some(())?;
        Some((focus?, states))
    }

    /// Reads the hypervisor's lifecycle messages: `vmN 'name' stopped
    /// (Reason) …`, `vmN 'name' crashed: restarting …`, `vmN 'name': reset
    /// requested …`.
    fn parse_state_change(&self, line: &str) -> Option<(usize, VmState)> {
        let rest = line.strip_prefix("vm")?;
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let vm: usize = rest[..digits].parse().ok()?;
        let name = self.names.get(vm)?;
        let rest = rest[digits..]
            .strip_prefix(" '")?
            .strip_prefix(name.as_str())?
            .strip_prefix('\'')?;
        if rest.starts_with(" stopped (Crashed)") {
            Some((vm, VmState::Crashed))
        } else if rest.starts_with(" stopped (") {
            Some((vm, VmState::Stopped))
        } else if rest.starts_with(" crashed: restarting") || rest.starts_with(": reset requested")
        {
            Some((vm, VmState::Restarting))
        } else {
            None
        }
    }

    fn status_line(&mut self, (focus, states): (usize, Vec<VmState>), fx: &mut Vec<Effect>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if states != self.states {
            self.states = states;
            fx.push(Effect::States);
        }
        if focus != self.focus {
            self.focus = focus;
            fx.push(Effect::Focus(focus));
        }
        let Some(target) = self.target else {
            return;
        };
        if target == self.focus {
            self.target = None;
        } else if self.in_flight == 0 {
            if self.states[target] == VmState::Running && self.hops < self.names.len() {
                self.hop(fx);
            } else {
                self.target = None;
                fx.push(Effect::Unreachable(target));
            }
        }
    }

    /// Sends one escape (the hypervisor moves its focus to the next running VM).
    fn hop(&mut self, fx: &mut Vec<Effect>) {
        self.in_flight += 1;
        self.hops += 1;
        fx.push(Effect::Send(vec![ESCAPE_BYTE; ESCAPE_LEN]));
    }

    /// Moves the hypervisor's focus to `vm`: nothing to do if it has it,
    /// else escapes are sent, one at a time, until its status line names
    /// `vm` ([`Effect::Focus`]), or [`Effect::Unreachable`].
    pub fn want_focus(&mut self, vm: usize) -> Result<Vec<Effect>, FocusError> {
        let state = *self.states.get(vm).ok_or(FocusError::NoSuchVm(vm))?;
        if matches!(state, VmState::Stopped | VmState::Crashed) {
            return Err(FocusError::NotRunning(vm, state));
        }
        let mut fx = Vec::new();
        if self.focus == vm && self.target.is_none() {
            return Ok(fx);
        }
        if self.target != Some(vm) {
            self.hops = 0;
        }
        self.target = Some(vm);
        if self.in_flight == 0 {
            self.hop(&mut fx);
        }
        Ok(fx)
    }

    /// The VM the escape would move the focus to ([`next_running`]), if
    /// another one runs.
    pub fn next(&self) -> Option<usize> {
        next_running(&self.states, self.focus).filter(|&n| n != self.focus)
    }

    /// Whether input for VM `vm` can be sent now (it has the focus and no
    /// switch is under way).
    pub fn accepts_input(&self, vm: usize) -> bool {
        self.focus == vm && self.target.is_none() && self.in_flight == 0
    }
}

/// What a key typed at the terminal console means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// Bytes for the VM with the focus.
    Type(Vec<u8>),
    /// Ctrl-A n (or Ctrl-A Ctrl-A): the next running VM.
    Next,
    /// Ctrl-A 1 … 9: the VM with that number (0-based here).
    Select(usize),
    /// Ctrl-A s: every VM's exit statistics (the hypervisor prints them).
    Stats,
    /// Ctrl-A x: stop the system and leave.
    Quit,
    /// Ctrl-A ?: the key list.
    Help,
    /// Ctrl-A then a key that means nothing.
    Unknown(u8),
}

/// The key list, for [`Key::Help`] and the docs.
pub const KEYS_HELP: &str = "Ctrl-A n: next VM, Ctrl-A 1-9: VM by number, Ctrl-A s: exit statistics, \
Ctrl-A a: send Ctrl-A, Ctrl-A x: stop the system and quit, Ctrl-A ?: this help";

/// Turns typed bytes into [`Key`]s: Ctrl-A starts a command, the next byte
/// says which (Ctrl-A a sends a Ctrl-A itself).
#[derive(Clone, Debug, Default)]
pub struct Keys {
    prefixed: bool,
}

impl Keys {
    /// No prefix pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a Ctrl-A waits for its key.
    pub fn pending(&self) -> bool {
        self.prefixed
    }

    /// The keys in `bytes` (typed text comes as few [`Key::Type`] as possible).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Key> {
        let mut keys = Vec::new();
        let mut text = Vec::new();
        for &b in bytes {
            if !self.prefixed {
                if b == PREFIX {
                    self.prefixed = true;
                } else {
                    text.push(b);
                }
                continue;
            }
            self.prefixed = false;
            let key = match b {
                b'a' => {
                    text.push(PREFIX);
                    continue;
                }
                b'n' | PREFIX => Key::Next,
                b'1'..=b'9' => Key::Select(usize::from(b - b'1')),
                b's' => Key::Stats,
                b'x' => Key::Quit,
                b'?' => Key::Help,
                other => Key::Unknown(other),
            };
            if !text.is_empty() {
                keys.push(Key::Type(std::mem::take(&mut text)));
            }
            keys.push(key);
        }
        if !text.is_empty() {
            keys.push(Key::Type(text));
        }
        keys
    }
}

/// What the hypervisor's statistics escape is on its console input.
pub fn stats_escape() -> Vec<u8> {
    let mut bytes = vec![ESCAPE_BYTE; ESCAPE_LEN - 1];
    bytes.push(STATS_KEY);
    bytes
}

/// The status bar, `width` columns: each VM with its number and state, the
/// focused one marked `*`, then the main keys; cut to fit.
pub fn status_bar(names: &[String], states: &[VmState], focus: usize, width: usize) -> String {
    let mut bar = String::from(" stratum");
    for (vm, (name, state)) in names.iter().zip(states).enumerate() {
        let mark = if vm == focus { "*" } else { "" };
        bar += &format!(" | {}:{name}{mark} {}", vm + 1, state.name());
    }
    bar += " | ^A n next, ^A 1-9 pick, ^A x quit, ^A ? help";
    let mut bar: String = bar.chars().take(width).collect();
    let len = bar.chars().count();
    bar.extend(std::iter::repeat_n(' ', width - len));
    bar
}

/// Follows a terminal byte stream well enough to tell whether it is
/// between escape sequences (ESC, CSI `ESC [ … final`, OSC `ESC ] … BEL/ST`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EscapeTracker {
    state: EscState,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum EscState {
    #[default]
    Ground,
    Escape,
    Csi,
    Osc,
    OscEscape,
}

impl EscapeTracker {
    /// Follows `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state = match (self.state, b) {
                (_, 0x1b) if self.state != EscState::Osc => EscState::Escape,
                (EscState::Ground, _) => EscState::Ground,
                (EscState::Escape, b'[') => EscState::Csi,
                (EscState::Escape, b']') => EscState::Osc,
                // Intermediate bytes (`ESC ( B`) keep the sequence open.
                (EscState::Escape, 0x20..=0x2f) => EscState::Escape,
                (EscState::Escape, _) => EscState::Ground,
                (EscState::Csi, 0x40..=0x7e) => EscState::Ground,
                (EscState::Csi, _) => EscState::Csi,
                (EscState::Osc, 0x07) => EscState::Ground,
                (EscState::Osc, 0x1b) => EscState::OscEscape,
                (EscState::Osc, _) => EscState::Osc,
                (EscState::OscEscape, b'\\') => EscState::Ground,
                (EscState::OscEscape, _) => EscState::Osc,
            };
        }
    }

    /// Between sequences: something else may be drawn now.
    pub fn idle(&self) -> bool {
        self.state == EscState::Ground
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Feeds `chunks` and returns each VM's bytes and the other lines.
    fn split(vms: &[&str], chunks: &[&[u8]]) -> (Vec<String>, Vec<String>) {
        let mut d = StreamDemux::new(names(vms));
        let mut per_vm = vec![String::new(); vms.len()];
        let mut other = Vec::new();
        for c in chunks {
            d.feed(c, &mut |e| match e {
                Event::Vm { vm, bytes } => per_vm[vm] += &String::from_utf8_lossy(&bytes),
                Event::Hypervisor(l) => other.push(format!("H:{l}")),
                Event::Other(l) => other.push(format!("O:{l}")),
            });
        }
        (per_vm, other)
    }

    #[test]
    fn a_prompt_without_line_end_comes_out_at_once() {
        let mut d = StreamDemux::new(names(&["linux", "ticker"]));
        let mut got = Vec::new();
        d.feed(b"linux | / # ", &mut |e| got.push(e));
        assert_eq!(
            got,
            [Event::Vm {
                vm: 0,
                bytes: b"/ # ".to_vec()
            }]
        );
    }

    #[test]
    fn the_hypervisors_cut_is_dropped_and_the_vms_line_ends_kept() {
        // linux's prompt is cut by a tick, then continued; its own line
        // ends come back when its next line starts.
        let stream: &[&[u8]] = &[
            b"linux | hello\r\nlin",
            b"ux | / # l\r\nticker | tick 1\r\nlinux + s\r\n",
            b"ticker | tick 2\nlinux | a b\r\n[stratum] note\r\nlinux | / # ",
        ];
        let (vms, other) = split(&["linux", "ticker"], stream);
        assert_eq!(vms[0], "hello\r\n/ # ls\r\na b\r\n/ # ");
        assert_eq!(vms[1], "tick 1\r\ntick 2");
        assert_eq!(other, ["H:note"]);
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_bytes() {
        let stream = b"a | x\r\nab | y\r\nab + \r\n[stratum] z\r\nnoise\na + q\r\na | w";
        let whole = split(&["a", "ab"], &[stream]);
        assert_eq!(
            whole.0,
            ["xq\r\nw", "y"],
            "line ends wait for the next line"
        );
        assert_eq!(whole.1, ["H:z", "O:noise"]);
        for cut in 0..stream.len() {
            let (l, r) = stream.split_at(cut);
            assert_eq!(split(&["a", "ab"], &[l, r]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn coloured_tags_give_the_same_bytes_as_plain_ones_at_every_split() {
        let plain: &[u8] = b"a | x\r\nab | y\r\nab + \r\n[stratum] z\r\na + q\r\na | w";
        let coloured: &[u8] = b"\x1b[33ma | \x1b[0mx\r\n\x1b[34mab | \x1b[0my\r\n\
            \x1b[34mab + \x1b[0m\r\n[stratum] z\r\n\x1b[33ma + \x1b[0mq\r\n\x1b[33ma | \x1b[0mw";
        let whole = split(&["a", "ab"], &[plain]);
        assert_eq!(split(&["a", "ab"], &[coloured]), whole);
        for cut in 0..coloured.len() {
            let (l, r) = coloured.split_at(cut);
            assert_eq!(split(&["a", "ab"], &[l, r]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_vms_own_colours_are_kept() {
        // After the tag's reset, and a reset that is the VM's own (no tag
        // colour before it), and anything that is not a colour code.
        let stream: &[u8] =
            b"\x1b[33ma | \x1b[0m\x1b[0m\x1b[1;34mdir\r\na | \x1b[0mk\r\n\x1b[33ma | \x1b[0z\r\n";
        let (vms, other) = split(&["a", "b"], &[stream]);
        assert_eq!(vms[0], "\x1b[0m\x1b[1;34mdir\r\n\x1b[0mk\r\n\x1b[0z");
        assert!(other.is_empty(), "{other:?}");
        // A line that starts with another escape is nobody's.
        let (vms, other) = split(&["a", "b"], &[b"\x1b[1;2mhi\r\na | x"]);
        assert_eq!(vms[0], "x");
        assert_eq!(other, ["O:\x1b[1;2mhi"]);
        assert_eq!(
            colour_code(b"\x1b[m"),
            None,
            "no digits: not a tag's colour"
        );
    }

    #[test]
    fn one_vm_owns_every_line_but_the_hypervisors() {
        let (vms, other) = split(&["solo"], &[b"[str", b"atum] up\r\n[x] y\r\nsolo | z\r\n"]);
        assert_eq!(vms[0], "[x] y\r\nsolo | z\r\n", "line ends come at once");
        assert_eq!(other, ["H:up"]);
    }

    #[test]
    fn a_lone_cr_is_text_and_an_empty_line_is_a_line() {
        let (vms, _) = split(&["a", "b"], &[b"a | 50%\r", b"60%\r\na | \r\na | x"]);
        assert_eq!(vms[0], "50%\r60%\r\n\r\nx");
    }

    #[test]
    fn scrollback_is_bounded_and_replays_whole_lines() {
        let mut s = Scrollback::with_limit(10);
        s.push(b"one\r\n");
        assert_eq!(s.replay(), b"one\r\n");
        s.push(b"two\r\nthree");
        assert_eq!(s.len(), 10);
        assert_eq!(s.replay(), b"three", "the cut line is left out");
        s.push(b"abcdefghijkl");
        assert_eq!(s.replay(), b"", "no whole line kept");
        assert!(!s.is_empty());
    }

    fn status(line: &str) -> Vec<u8> {
        format!("[stratum] {line}\r\n").into_bytes()
    }

    #[test]
    fn the_model_follows_states_and_focus_from_the_hypervisors_lines() {
        let mut m = Model::new(names(&["a", "b", "c"]));
        let fx = m.feed(b"a | hi\r\nb | there\r\n");
        assert_eq!(
            fx,
            [
                Effect::Output {
                    vm: 0,
                    bytes: b"hi".to_vec()
                },
                Effect::Output {
                    vm: 1,
                    bytes: b"there".to_vec()
                }
            ]
        );
        let fx = m.feed(&status("vm2 'c' stopped (Crashed) after 1 boot(s)"));
        assert_eq!(m.states()[2], VmState::Crashed);
        assert_eq!(
            fx,
            [
                Effect::States,
                Effect::Notice("[stratum] vm2 'c' stopped (Crashed) after 1 boot(s)".into())
            ]
        );
        m.feed(&status("vm1 'b' stopped (PowerOff) after 1 boot(s)"));
        assert_eq!(m.states()[1], VmState::Stopped);
        m.feed(&status(
            "vm0 'a' crashed: restarting it (on_crash = \"restart\")",
        ));
        assert_eq!(m.states()[0], VmState::Restarting);
        let fx = m.feed(b"a | booted\r\n");
        assert_eq!(m.states()[0], VmState::Running);
        assert_eq!(fx[0], Effect::States);
        // The status line is authoritative and not shown as a notice.
        let fx = m.feed(&status(
            "console: input to b; VMs: a running, b restarting (input), c crashed",
        ));
        assert_eq!(fx, [Effect::States, Effect::Focus(1)]);
        assert_eq!(m.focus(), 1);
        assert_eq!(m.states()[1], VmState::Restarting);
        assert_eq!(m.replay(0), b"hi\r\nbooted");
        assert_eq!(m.replay(1), b"there");
    }

    #[test]
    fn status_lines_that_do_not_fit_are_notices() {
        let mut m = Model::new(names(&["a", "b"]));
        for bad in [
            "console: input to a; VMs: a running (input)",
            "console: input to a; VMs: a running (input), b sleeping",
            "console: input to a; VMs: a running, b running",
            "console: input to a; VMs: a running (input), b running, c running",
        ] {
            let fx = m.feed(&status(bad));
            assert_eq!(fx, [Effect::Notice(format!("[stratum] {bad}"))], "{bad}");
        }
        assert_eq!(m.focus(), 0);
    }

    #[test]
    fn wanting_a_vm_hops_one_escape_at_a_time_until_it_has_the_focus() {
        let mut m = Model::new(names(&["a", "b", "c"]));
        let escape = Effect::Send(vec![1, 1, 1]);
        assert_eq!(m.want_focus(0), Ok(vec![]), "a has it");
        assert_eq!(m.want_focus(2), Ok(vec![escape.clone()]));
        assert!(!m.accepts_input(0), "a switch is under way");
        // A second request while the escape is in flight sends nothing more.
        assert_eq!(m.want_focus(2), Ok(vec![]));
        let fx = m.feed(&status(
            "console: input to b; VMs: a running, b running (input), c running",
        ));
        assert_eq!(fx, [Effect::Focus(1), escape]);
        let fx = m.feed(&status(
            "console: input to c; VMs: a running, b running, c running (input)",
        ));
        assert_eq!(fx, [Effect::Focus(2)]);
        assert!(m.accepts_input(2));
        assert_eq!(m.target(), None);
        assert_eq!(m.next(), Some(0));
    }

    #[test]
    fn a_vm_that_stops_on_the_way_is_unreachable() {
        let mut m = Model::new(names(&["a", "b", "c"]));
        m.want_focus(2).expect("c runs");
        let fx = m.feed(&status(
            "console: input to b; VMs: a running, b running (input), c stopped",
        ));
        assert_eq!(
            fx,
            [Effect::States, Effect::Focus(1), Effect::Unreachable(2)]
        );
        assert_eq!(m.target(), None);
        assert_eq!(
            m.want_focus(2),
            Err(FocusError::NotRunning(2, VmState::Stopped))
        );
        assert_eq!(m.want_focus(7), Err(FocusError::NoSuchVm(7)));
        assert_eq!(FocusError::NoSuchVm(7).to_string(), "there is no VM 8");
    }

    #[test]
    fn hops_are_bounded_when_the_focus_never_arrives() {
        let mut m = Model::new(names(&["a", "b"]));
        m.want_focus(1).expect("b runs");
        let stuck = status("console: input to a; VMs: a running (input), b running");
        let mut sent = 1;
        for _ in 0..5 {
            for e in m.feed(&stuck) {
                match e {
                    Effect::Send(_) => sent += 1,
                    Effect::Unreachable(1) => {
                        assert_eq!(sent, 2, "one hop per VM, then give up");
                        return;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        panic!("never gave up");
    }

    #[test]
    fn next_skips_vms_that_do_not_run() {
        let mut m = Model::new(names(&["a", "b", "c"]));
        assert_eq!(m.next(), Some(1));
        m.feed(&status("vm1 'b' stopped (PowerOff) after 1 boot(s)"));
        assert_eq!(m.next(), Some(2));
        m.feed(&status("vm2 'c' stopped (AllCpusOff) after 1 boot(s)"));
        assert_eq!(m.next(), None, "only the focused VM runs");
        assert_eq!(m.find("c"), Some(2));
        assert_eq!(m.find("d"), None);
    }

    #[test]
    fn keys_after_the_prefix_are_commands() {
        let mut k = Keys::new();
        assert_eq!(
            k.feed(b"ls\r\x01nab\x012\x01s\x01x"),
            [
                Key::Type(b"ls\r".to_vec()),
                Key::Next,
                Key::Type(b"ab".to_vec()),
                Key::Select(1),
                Key::Stats,
                Key::Quit,
            ]
        );
        // The prefix may come in one read and its key in the next.
        assert_eq!(k.feed(b"q\x01"), [Key::Type(b"q".to_vec())]);
        assert!(k.pending());
        assert_eq!(
            k.feed(b"a\x03\x1b[A"),
            [Key::Type(b"\x01\x03\x1b[A".to_vec())]
        );
        assert_eq!(
            k.feed(b"\x01\x01\x01?\x01z"),
            [Key::Next, Key::Help, Key::Unknown(b'z')]
        );
        assert_eq!(k.feed(b"\x01"), []);
        assert_eq!(k.feed(b"9"), [Key::Select(8)]);
    }

    #[test]
    fn the_stats_escape_is_two_ctrl_a_and_s() {
        assert_eq!(stats_escape(), b"\x01\x01s");
    }

    #[test]
    fn the_status_bar_names_every_vm_and_fits_the_width() {
        let n = names(&["linux", "ticker", "crash"]);
        let states = [VmState::Running, VmState::Running, VmState::Crashed];
        let bar = status_bar(&n, &states, 1, 200);
        assert!(
            bar.starts_with(
                " stratum | 1:linux running | 2:ticker* running | 3:crash crashed | ^A n next"
            ),
            "{bar}"
        );
        assert_eq!(bar.chars().count(), 200);
        assert_eq!(status_bar(&n, &states, 0, 20), " stratum | 1:linux* ");
        assert_eq!(status_bar(&n, &states, 0, 0), "");
    }

    #[test]
    fn escape_tracker_knows_when_a_sequence_is_open() {
        let mut t = EscapeTracker::default();
        for (bytes, idle) in [
            (&b"plain"[..], true),
            (b"\x1b", false),
            (b"[1;3", false),
            (b"1m", true),
            (b"\x1b]0;title", false),
            (b"\x07", true),
            (b"\x1b(", false),
            (b"B", true),
            (b"\x1b]2;t\x1b", false),
            (b"\\", true),
        ] {
            t.feed(bytes);
            assert_eq!(t.idle(), idle, "after {bytes:?}");
        }
    }
}
