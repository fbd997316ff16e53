//! The physical console shared by several VMs: output tagging, input focus
//! and the escape sequence that moves it. Pure logic; the hypervisor's
//! `console` module feeds it bytes and sends what it emits to the UART.
//!
//! Output ([`Console::guest_byte`], [`Console::break_line`]):
//! - With at most one VM registered, guest bytes pass through unchanged and
//!   nothing is ever added (the single-VM console is exactly the guest's).
//! - With more, every line a VM writes starts with its tag `name | `; when a
//!   VM writes while another writer (another VM, or the hypervisor) has a line
//!   open, that line is ended first (`\r\n`) and the VM's line continues under
//!   a continuation tag `name + `, so that each VM's output can be put back
//!   together exactly. Nothing is buffered: a prompt without a newline shows
//!   at once. The tag is emitted lazily, with the first byte of a line, so a
//!   line that is never written never shows an empty tag.
//! - With colour on, tags are wrapped in an ANSI colour per VM.
//!
//! The state machine: `open` names the writer whose line is unfinished (no
//! `\n` yet), or `None` at the start of a line. A line ends at `\n`; `\r` is
//! part of the line.
//!
//! Input ([`Console::receive`], [`Console::take_input`]): bytes typed on the
//! physical console go to the VM with the input focus (VM 0 at first), each
//! VM having its own queue, so nothing typed for one VM reaches another.
//! Three Ctrl-A (`0x01`) in a row move the focus to the next running VM
//! ([`next_running`]) and ask for a status line ([`Status`]) listing every VM,
//! its state and which has input. Two Ctrl-A then `s` ask for the exit
//! statistics of every VM ([`Console::take_stats_request`]). One or two
//! Ctrl-A followed by any other byte are passed on as typed
//! ([`EscapeParser`]).

use core::fmt;

use crate::ring::ByteRing;

/// VMs the console can tell apart (at least `limits::RUNNING_VMS`).
pub const MAX_VMS: usize = 8;
const _: () = assert!(MAX_VMS >= stratum_abi::limits::RUNNING_VMS);

/// Ctrl-A: three in a row are the escape.
pub const ESCAPE_BYTE: u8 = 0x01;
/// How many [`ESCAPE_BYTE`]s in a row make the escape.
pub const ESCAPE_LEN: usize = 3;

/// Separator after the VM name at the start of a line.
pub const TAG_SEPARATOR: &str = " | ";
/// Separator after the VM name when a line broken by another writer goes on.
pub const CONTINUATION_SEPARATOR: &str = " + ";

/// ANSI SGR colours for the tags, by VM id (cycled): green, yellow, blue,
/// magenta, cyan, then the bright variants (red is left to errors).
const COLORS: [&str; 10] = ["32", "33", "34", "35", "36", "92", "93", "94", "95", "96"];

/// A VM's lifecycle state, as the console shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Booted and running (or waiting for interrupts).
    Running,
    /// Powered off (`SYSTEM_OFF`, every vCPU off) and not coming back.
    Stopped,
    /// Stopped because it crashed.
    Crashed,
    /// Being reloaded from its pristine image.
    Restarting,
}

impl VmState {
    /// The word the status line uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
            Self::Restarting => "restarting",
        }
    }
}

/// Who wrote the unfinished line on the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// A VM, by id.
    Vm(usize),
    /// The hypervisor (its `log!` lines).
    Hypervisor,
}

/// What the [`EscapeParser`] made of one input byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Bytes to pass on as typed (held Ctrl-As first), `len` of them.
    Bytes {
        /// The bytes; only the first `len` count.
        bytes: [u8; ESCAPE_LEN],
        /// How many.
        len: usize,
    },
    /// Nothing yet: a Ctrl-A that may start the escape is held.
    Held,
    /// The escape was typed.
    Escape,
    /// The statistics escape (two Ctrl-A, then [`STATS_KEY`]) was typed.
    Stats,
}

/// After two Ctrl-A: asks for the exit statistics.
pub const STATS_KEY: u8 = b's';

impl Parsed {
    /// The bytes to pass on (empty for [`Parsed::Held`] and [`Parsed::Escape`]).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Bytes { bytes, len } => &bytes[..*len],
            Self::Held | Self::Escape | Self::Stats => &[],
        }
    }
}

/// Recognizes [`ESCAPE_LEN`] Ctrl-As in a row in the input stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EscapeParser {
    /// Ctrl-As seen in a row and not yet passed on (0..ESCAPE_LEN).
    held: usize,
}

impl EscapeParser {
    /// No Ctrl-A held.
    pub const fn new() -> Self {
        Self { held: 0 }
    }

    /// Feeds one typed byte.
    pub fn feed(&mut self, byte: u8) -> Parsed {
        if byte == ESCAPE_BYTE {
            self.held += 1;
            if self.held == ESCAPE_LEN {
                self.held = 0;
                return Parsed::Escape;
            }
            return Parsed::Held;
        }
        if byte == STATS_KEY && self.held == ESCAPE_LEN - 1 {
            self.held = 0;
            return Parsed::Stats;
        }
        let mut bytes = [ESCAPE_BYTE; ESCAPE_LEN];
        bytes[self.held] = byte;
        let len = self.held + 1;
        self.held = 0;
        Parsed::Bytes { bytes, len }
    }
}

/// The VM after `current` (cyclically, `current` itself last) whose state is
/// [`VmState::Running`]; `None` if no VM runs.
pub fn next_running(states: &[VmState], current: usize) -> Option<usize> {
    let n = states.len();
    (1..=n)
        .map(|step| (current + step) % n)
        .find(|&i| states[i] == VmState::Running)
}

/// One registered VM.
#[derive(Clone, Copy, Debug)]
struct Slot<'n> {
    name: &'n str,
    state: VmState,
}

/// What happened to the input focus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FocusChange {
    /// The VM that had input.
    pub from: usize,
    /// The VM that has it now (may be `from` when no other VM runs).
    pub to: usize,
}

/// The console state: registered VMs, output tagging, input focus and queues
/// (`IN` bytes per VM).
pub struct Console<'n, const IN: usize> {
    vms: [Option<Slot<'n>>; MAX_VMS],
    color: bool,
    open: Option<Writer>,
    /// Per VM: its last line was ended by another writer, so its next bytes
    /// continue that line.
    broken: [bool; MAX_VMS],
    parser: EscapeParser,
    stats_requested: bool,
    focus: usize,
    input: [ByteRing<IN>; MAX_VMS],
}

/// Why a VM could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleError {
    /// The VM id is [`MAX_VMS`] or more.
    TooManyVms,
}

impl<'n, const IN: usize> Default for Console<'n, IN> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'n, const IN: usize> Console<'n, IN> {
    /// No VM, no colour, focus on VM 0.
    pub const fn new() -> Self {
        Self {
            vms: [None; MAX_VMS],
            color: false,
            open: None,
            broken: [false; MAX_VMS],
            parser: EscapeParser::new(),
            stats_requested: false,
            focus: 0,
            input: [const { ByteRing::new() }; MAX_VMS],
        }
    }

    /// Registers VM `id` as `name`, running. Registering an id again renames it.
    pub fn add_vm(&mut self, id: usize, name: &'n str) -> Result<(), ConsoleError> {
        let slot = self.vms.get_mut(id).ok_or(ConsoleError::TooManyVms)?;
        *slot = Some(Slot {
            name,
            state: VmState::Running,
        });
        Ok(())
    }

    /// Turns tag colours on or off.
    pub fn set_color(&mut self, on: bool) {
        self.color = on;
    }

    /// Number of registered VMs.
    pub fn vm_count(&self) -> usize {
        self.vms.iter().flatten().count()
    }

    /// Whether output is tagged (more than one VM).
    pub fn tagging(&self) -> bool {
        self.vm_count() > 1
    }

    /// VM `id`'s state (`None` if it is not registered).
    pub fn state(&self, id: usize) -> Option<VmState> {
        Some(self.vms.get(id).copied().flatten()?.state)
    }

    /// The VM with the input focus.
    pub fn focus(&self) -> usize {
        self.focus
    }

    /// Records VM `id`'s new state. When the VM with the input focus stops
    /// or crashes, the focus moves to the next running VM; the change is
    /// returned so that the caller can show the status line.
    pub fn set_state(&mut self, id: usize, state: VmState) -> Option<FocusChange> {
        let slot = self.vms.get_mut(id)?.as_mut()?;
        slot.state = state;
        let gone = matches!(state, VmState::Stopped | VmState::Crashed);
        if id == self.focus && gone && self.tagging() {
            let to = next_running(&self.states(), self.focus)?;
            self.focus = to;
            return Some(FocusChange { from: id, to });
        }
        None
    }

    /// Every slot's state in id order (unregistered ids count as stopped).
    fn states(&self) -> [VmState; MAX_VMS] {
        let mut states = [VmState::Stopped; MAX_VMS];
        for (state, slot) in states.iter_mut().zip(&self.vms) {
            if let Some(slot) = slot {
                *state = slot.state;
            }
        }
        states
    }

    /// Emits VM `vm`'s output byte through `out`, with tags and line breaks
    /// as the module docs describe.
    pub fn guest_byte(&mut self, vm: usize, byte: u8, out: &mut impl FnMut(u8)) {
        if !self.tagging() {
            out(byte);
            return;
        }
        if self.open != Some(Writer::Vm(vm)) {
            let continued = self.broken.get(vm).copied().unwrap_or(false);
            self.end_open_line(out);
            self.tag(vm, continued, out);
            if let Some(b) = self.broken.get_mut(vm) {
                *b = false;
            }
            self.open = Some(Writer::Vm(vm));
        }
        out(byte);
        if byte == b'\n' {
            self.open = None;
        }
    }

    /// Called before the hypervisor writes a line: ends any open guest line
    /// (only when tagging; a single VM's output is never changed).
    pub fn break_line(&mut self, out: &mut impl FnMut(u8)) {
        if self.tagging() {
            self.end_open_line(out);
        }
    }

    /// Called after the hypervisor wrote text whose last byte was `last`: an
    /// unfinished hypervisor line is broken by the next guest byte.
    pub fn hypervisor_wrote(&mut self, last: Option<u8>) {
        match last {
            Some(b'\n') => self.open = None,
            Some(_) if self.tagging() => self.open = Some(Writer::Hypervisor),
            _ => {}
        }
    }

    /// Ends the open line, if any, remembering that a VM's line was cut.
    fn end_open_line(&mut self, out: &mut impl FnMut(u8)) {
        if let Some(writer) = self.open.take() {
            if let Writer::Vm(vm) = writer
                && let Some(b) = self.broken.get_mut(vm)
            {
                *b = true;
            }
            out(b'\r');
            out(b'\n');
        }
    }

    fn tag(&self, vm: usize, continued: bool, out: &mut impl FnMut(u8)) {
        let color = self.color.then(|| COLORS[vm % COLORS.len()]);
        if let Some(code) = color {
            emit(out, "\x1b[");
            emit(out, code);
            emit(out, "m");
        }
        match self.vms.get(vm).copied().flatten() {
            Some(slot) => emit(out, slot.name),
            None => {
                emit(out, "vm");
                emit_decimal(out, vm);
            }
        }
        emit(
            out,
            if continued {
                CONTINUATION_SEPARATOR
            } else {
                TAG_SEPARATOR
            },
        );
        if color.is_some() {
            emit(out, "\x1b[0m");
        }
    }

    /// Takes one byte typed on the physical console: queues it for the VM
    /// with the focus, or, for the escape, moves the focus (the caller then
    /// prints [`Console::status`]).
    pub fn receive(&mut self, byte: u8) -> Option<FocusChange> {
        match self.parser.feed(byte) {
            Parsed::Escape => {
                let from = self.focus;
                let to = next_running(&self.states(), from).unwrap_or(from);
                self.focus = to;
                Some(FocusChange { from, to })
            }
            Parsed::Stats => {
                self.stats_requested = true;
                None
            }
            parsed => {
                let ring = &mut self.input[self.focus];
                for &b in parsed.bytes() {
                    ring.push(b);
                }
                None
            }
        }
    }

    /// Whether the statistics escape was typed since the last call.
    pub fn take_stats_request(&mut self) -> bool {
        core::mem::take(&mut self.stats_requested)
    }

    /// The next byte typed for VM `vm`, if any.
    pub fn take_input(&mut self, vm: usize) -> Option<u8> {
        self.input.get_mut(vm)?.pop()
    }

    /// Whether input is queued for VM `vm`.
    pub fn has_input(&self, vm: usize) -> bool {
        self.input.get(vm).is_some_and(|r| !r.is_empty())
    }

    /// The status line: every VM, its state, and which has input.
    pub fn status(&self) -> Status<'_, 'n> {
        Status {
            vms: &self.vms,
            focus: self.focus,
        }
    }
}

fn emit(out: &mut impl FnMut(u8), s: &str) {
    for b in s.bytes() {
        out(b);
    }
}

fn emit_decimal(out: &mut impl FnMut(u8), n: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut n = n;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in digits[..len].iter().rev() {
        out(d);
    }
}

/// The status line, e.g. `console: input to ticker; VMs: linux running,
/// ticker running (input), crash crashed`.
pub struct Status<'a, 'n> {
    vms: &'a [Option<Slot<'n>>; MAX_VMS],
    focus: usize,
}

impl fmt::Display for Status<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vms.get(self.focus).copied().flatten() {
            Some(slot) => write!(f, "console: input to {}; VMs:", slot.name)?,
            None => write!(f, "console: input to vm{}; VMs:", self.focus)?,
        }
        let mut first = true;
        for (id, slot) in self.vms.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let sep = if first { " " } else { ", " };
            first = false;
            write!(f, "{sep}{} {}", slot.name, slot.state.name())?;
            if id == self.focus {
                f.write_str(" (input)")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Con = Console<'static, 16>;

    fn console(names: &[&'static str]) -> Con {
        let mut c = Con::new();
        for (i, name) in names.iter().enumerate() {
            c.add_vm(i, name).expect("id in range");
        }
        c
    }

    /// Feeds `(vm, text)` writes (vm `None`: a hypervisor line) and returns
    /// the console output.
    fn output(c: &mut Con, writes: &[(Option<usize>, &str)]) -> String {
        let mut out = Vec::new();
        for &(vm, text) in writes {
            match vm {
                Some(vm) => {
                    for b in text.bytes() {
                        c.guest_byte(vm, b, &mut |b| out.push(b));
                    }
                }
                None => {
                    c.break_line(&mut |b| out.push(b));
                    out.extend_from_slice(text.as_bytes());
                    c.hypervisor_wrote(text.bytes().last());
                }
            }
        }
        String::from_utf8(out).expect("ASCII in, ASCII out")
    }

    #[test]
    fn one_vm_passes_through_untouched() {
        let mut c = console(&["solo"]);
        let text = "hello\r\nno newline";
        let got = output(
            &mut c,
            &[(Some(0), text), (None, "[stratum] x\r\n"), (Some(0), "!")],
        );
        assert_eq!(got, "hello\r\nno newline[stratum] x\r\n!");
        // No VM registered yet (boot messages): also untouched.
        let mut c = Con::new();
        assert_eq!(output(&mut c, &[(Some(0), "a\n")]), "a\n");
    }

    #[test]
    fn lines_are_tagged_and_tags_are_lazy() {
        let mut c = console(&["a", "bb"]);
        let got = output(
            &mut c,
            &[
                (Some(0), "one\r\ntwo\r\n"),
                (Some(1), "x\r\n"),
                (Some(0), "\r\n"),
            ],
        );
        assert_eq!(got, "a | one\r\na | two\r\nbb | x\r\na | \r\n");
    }

    #[test]
    fn another_writer_breaks_the_open_line_and_it_continues_tagged() {
        let mut c = console(&["a", "b"]);
        let got = output(
            &mut c,
            &[
                (Some(0), "hel"),
                (Some(1), "prompt$ "),
                (Some(0), "lo\r\n"),
                (None, "[stratum] note\r\n"),
                (Some(1), "ls\r\n"),
            ],
        );
        assert_eq!(
            got,
            "a | hel\r\nb | prompt$ \r\na + lo\r\n[stratum] note\r\nb + ls\r\n"
        );
        // A continuation is marked once: the next line is a fresh one.
        assert_eq!(output(&mut c, &[(Some(0), "z\n")]), "a | z\n");
    }

    #[test]
    fn a_log_line_breaks_a_guest_line() {
        let mut c = console(&["a", "b"]);
        let got = output(
            &mut c,
            &[
                (Some(0), "typing"),
                (None, "[stratum] vm1 stopped\r\n"),
                (Some(0), "\r\n"),
            ],
        );
        assert_eq!(got, "a | typing\r\n[stratum] vm1 stopped\r\na + \r\n");
        // An unfinished hypervisor line is broken by the next guest byte.
        let got = output(&mut c, &[(None, "[stratum] no newline"), (Some(1), "b\n")]);
        assert_eq!(got, "[stratum] no newline\r\nb | b\n");
    }

    #[test]
    fn every_line_of_an_interleaving_is_tagged_and_streams_reassemble() {
        // Byte-by-byte interleaving of three VMs: every output line starts
        // with a tag, and joining each VM's fragments gives its stream back.
        let names = ["a", "b", "c"];
        let mut c = console(&names);
        let streams = ["tick 1\r\ntick 2\r\n", "hello world\r\n", "x\r\ny\r\nzz"];
        let mut out = Vec::new();
        let mut pos = [0usize; 3];
        let mut step = 0usize;
        while pos.iter().zip(&streams).any(|(p, s)| *p < s.len()) {
            let vm = (step * 7 + step / 3) % 3;
            step += 1;
            if pos[vm] < streams[vm].len() {
                let b = streams[vm].as_bytes()[pos[vm]];
                c.guest_byte(vm, b, &mut |b| out.push(b));
                pos[vm] += 1;
            }
        }
        let text = String::from_utf8(out).expect("ascii");
        let mut rebuilt = [String::new(), String::new(), String::new()];
        for line in text.split_inclusive('\n') {
            let (vm, rest, continued) = names
                .iter()
                .enumerate()
                .find_map(|(i, n)| {
                    line.strip_prefix(&format!("{n} | "))
                        .map(|r| (i, r, false))
                        .or_else(|| line.strip_prefix(&format!("{n} + ")).map(|r| (i, r, true)))
                })
                .unwrap_or_else(|| panic!("untagged line {line:?} in {text:?}"));
            // A line cut by another writer ends in an added "\r\n".
            let s = &mut rebuilt[vm];
            if continued {
                // The previous fragment's added break is removed.
                assert!(s.ends_with("\r\n"), "{s:?}");
                s.truncate(s.len() - 2);
            }
            s.push_str(rest);
        }
        for (vm, s) in streams.iter().enumerate() {
            let got = &rebuilt[vm];
            // The last stream ends without a newline, but another VM may
            // have broken it after its last byte.
            let got = got
                .strip_suffix("\r\n")
                .filter(|_| !s.ends_with('\n'))
                .unwrap_or(got);
            assert_eq!(got, *s, "vm {vm} in {text:?}");
        }
    }

    #[test]
    fn colour_wraps_the_tag_only() {
        let mut c = console(&["a", "b"]);
        c.set_color(true);
        let got = output(&mut c, &[(Some(1), "x\n")]);
        assert_eq!(got, "\x1b[33mb | \x1b[0mx\n");
        c.set_color(false);
        assert_eq!(output(&mut c, &[(Some(1), "y\n")]), "b | y\n");
    }

    #[test]
    fn two_ctrl_a_then_s_ask_for_statistics_and_reach_no_vm() {
        let mut c = console(&["a", "b"]);
        for &b in &[b'x', 1, 1, STATS_KEY, b'y'] {
            assert_eq!(c.receive(b), None);
        }
        assert!(c.take_stats_request());
        assert!(!c.take_stats_request(), "one request per escape");
        let typed: Vec<u8> = core::iter::from_fn(|| c.take_input(0)).collect();
        assert_eq!(typed, b"xy");
        // One Ctrl-A then `s`, or `s` alone, is typed text.
        for &b in &[1, STATS_KEY, STATS_KEY] {
            assert_eq!(c.receive(b), None);
        }
        assert!(!c.take_stats_request());
        let typed: Vec<u8> = core::iter::from_fn(|| c.take_input(0)).collect();
        assert_eq!(typed, [1, STATS_KEY, STATS_KEY]);
    }

    #[test]
    fn escape_parser_passes_partial_escapes_through() {
        let mut p = EscapeParser::new();
        let mut typed = Vec::new();
        let mut escapes = 0;
        for &b in b"a\x01b\x01\x01c\x01\x01\x01d\x01\x01\x01\x01\x01\x01\x01e" {
            match p.feed(b) {
                Parsed::Escape => {
                    escapes += 1;
                    typed.push(b'#');
                }
                parsed => typed.extend_from_slice(parsed.bytes()),
            }
        }
        assert_eq!(escapes, 3);
        assert_eq!(typed, b"a\x01b\x01\x01c#d##\x01e");
        assert_eq!(p.feed(ESCAPE_BYTE), Parsed::Held);
        assert_eq!(p.feed(ESCAPE_BYTE), Parsed::Held);
        assert_eq!(p.feed(b'q').bytes(), b"\x01\x01q");
    }

    #[test]
    fn next_running_skips_stopped_vms_and_wraps() {
        use VmState::*;
        assert_eq!(next_running(&[Running, Running, Running], 0), Some(1));
        assert_eq!(next_running(&[Running, Running, Running], 2), Some(0));
        assert_eq!(next_running(&[Running, Crashed, Running], 0), Some(2));
        assert_eq!(next_running(&[Running, Stopped, Restarting], 0), Some(0));
        assert_eq!(next_running(&[Stopped, Stopped], 1), None);
        assert_eq!(next_running(&[], 0), None);
    }

    #[test]
    fn input_goes_to_the_focused_vm_only_and_the_escape_moves_it() {
        let mut c = console(&["linux", "ticker", "crash"]);
        assert_eq!(c.focus(), 0);
        for &b in b"ls\r" {
            assert_eq!(c.receive(b), None);
        }
        assert_eq!(c.set_state(2, VmState::Crashed), None);
        let mut change = None;
        for &b in b"\x01\x01\x01" {
            change = c.receive(b);
        }
        assert_eq!(change, Some(FocusChange { from: 0, to: 1 }));
        for &b in b"\x01x" {
            assert_eq!(c.receive(b), None);
        }
        let drain = |c: &mut Con, vm| core::iter::from_fn(|| c.take_input(vm)).collect::<Vec<u8>>();
        assert_eq!(drain(&mut c, 0), b"ls\r");
        assert_eq!(drain(&mut c, 1), b"\x01x");
        assert!(!c.has_input(2));
        assert_eq!(
            c.status().to_string(),
            "console: input to ticker; VMs: linux running, ticker running (input), crash crashed"
        );
        // Next escape skips the crashed VM and wraps to VM 0.
        for &b in b"\x01\x01" {
            assert_eq!(c.receive(b), None);
        }
        assert_eq!(c.receive(1), Some(FocusChange { from: 1, to: 0 }));
        assert_eq!(c.take_input(7), None);
        assert_eq!(c.take_input(99), None);
    }

    #[test]
    fn focus_leaves_a_vm_that_stops() {
        let mut c = console(&["a", "b", "c"]);
        assert_eq!(c.set_state(1, VmState::Stopped), None, "not focused");
        assert_eq!(
            c.set_state(0, VmState::Crashed),
            Some(FocusChange { from: 0, to: 2 })
        );
        assert_eq!(c.set_state(2, VmState::Restarting), None);
        assert_eq!(c.focus(), 2);
        assert_eq!(c.state(2), Some(VmState::Restarting));
        assert_eq!(c.state(5), None);
        // With nothing running the escape keeps the focus where it is.
        assert_eq!(c.receive(1), None);
        assert_eq!(c.receive(1), None);
        assert_eq!(c.receive(1), Some(FocusChange { from: 2, to: 2 }));
    }

    #[test]
    fn registration_limits_and_unknown_vms() {
        let mut c = console(&["a", "b"]);
        assert_eq!(c.add_vm(MAX_VMS, "x"), Err(ConsoleError::TooManyVms));
        assert_eq!(c.set_state(MAX_VMS + 1, VmState::Stopped), None);
        // A VM id that was never registered still gets a tag.
        assert_eq!(output(&mut c, &[(Some(5), "q\n")]), "vm5 | q\n");
        assert_eq!(c.vm_count(), 2);
    }
}
