//! The hypervisor console: the physical PL011 named by the host device tree,
//! shared by the hypervisor's messages and every VM's virtual UART.
//!
//! Hypervisor messages are prefixed `[stratum]` ([`log!`](crate::log)). Guest
//! UART output goes out byte by byte, unbuffered; with several VMs each line
//! is tagged with its VM's name, and a line another writer interrupts is
//! ended first (the rules are in [`stratum_core::console`], which also parses
//! the input escape: Ctrl-A three times moves console input to the next
//! running VM and prints the VMs' states).
//!
//! One lock guards the UART and the console state, so a tag, the byte it
//! precedes and any line break are never split by another CPU's output.
//! [`PENDING_INPUT`] mirrors "input is queued for VM n" outside the lock, so
//! the per-exit [`deliver_input`] costs one atomic load when nothing was typed.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

use stratum_arch::uart::HostUart;
use stratum_core::platform::UartKind;

use stratum_core::console::Console as ConsoleState;
pub use stratum_core::console::VmState;

use crate::sync::SpinLock;

/// Console input held per VM (beyond that, input is dropped and counted
/// rather than stalling the hypervisor).
const INPUT_BYTES: usize = 4096;

/// The UART and the multiplexing state, under one lock.
struct Console {
    uart: Option<HostUart>,
    state: ConsoleState<'static, INPUT_BYTES>,
}

static CONSOLE: SpinLock<Console> = SpinLock::new(Console {
    uart: None,
    state: ConsoleState::new(),
});

/// Bit `n`: input is queued for VM `n`.
static PENDING_INPUT: AtomicU32 = AtomicU32::new(0);

impl Console {
    /// Writes `args` as hypervisor text: breaks an open guest line first and
    /// notes whether the text ended its line.
    fn write_hypervisor(&mut self, args: fmt::Arguments<'_>) {
        let Some(uart) = self.uart.as_mut() else {
            return;
        };
        self.state.break_line(&mut |b| uart.put(b));
        let mut sink = TrackLast { uart, last: None };
        let _ = sink.write_fmt(args);
        let last = sink.last;
        self.state.hypervisor_wrote(last);
    }

    /// Prints the status line (after the input focus changed).
    fn show_status(&mut self) {
        let Console { uart, state } = self;
        let Some(uart) = uart.as_mut() else {
            return;
        };
        state.break_line(&mut |b| uart.put(b));
        let _ = writeln!(uart, "[stratum] {}", state.status());
        state.hypervisor_wrote(Some(b'\n'));
    }

    fn refresh_pending(&self, vm: usize) {
        if vm >= 32 {
            return;
        }
        let bit = 1u32 << vm;
        if self.state.has_input(vm) {
            PENDING_INPUT.fetch_or(bit, Ordering::Release);
        } else {
            PENDING_INPUT.fetch_and(!bit, Ordering::Release);
        }
    }
}

/// The UART as a `fmt::Write` sink (`\n` → `\r\n`) that remembers the last
/// byte written.
struct TrackLast<'a> {
    uart: &'a mut HostUart,
    last: Option<u8>,
}

impl Write for TrackLast<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(&b) = s.as_bytes().last() {
            self.last = Some(b);
        }
        self.uart.write_str(s)
    }
}

/// Starts using the UART of `kind` at `base` (identity-mapped device memory).
pub fn init(kind: UartKind, base: usize) {
    // SAFETY: `base` comes from the host DT's UART node, which EL2 maps as
    // device memory (it is not RAM), and only this module drives it.
    let uart = unsafe { HostUart::new(kind, base) };
    uart.enable();
    CONSOLE.lock().uart = Some(uart);
}

/// Registers VM `id` (0, 1, … in bundle order) as `name`, running. With
/// more than one VM registered, guest output is tagged.
pub fn add_vm(id: usize, name: &'static str) {
    if CONSOLE.lock().state.add_vm(id, name).is_err() {
        crate::log!("console: VM id {id} ('{name}') is beyond the console's VM limit; untagged");
    }
}

/// Colours the VM tags (the host tool says whether its stdout is a terminal).
pub fn set_color(on: bool) {
    CONSOLE.lock().state.set_color(on);
}

/// Records VM `id`'s state for the status line. When the VM that has
/// console input stops or crashes, input moves to the next running VM and
/// the status line says so.
pub fn set_state(id: usize, state: VmState) {
    let mut console = CONSOLE.lock();
    if console.state.set_state(id, state).is_some() {
        console.show_status();
    }
}

/// The VM that console input goes to (VM 0 until the escape moves it).
pub fn focused() -> usize {
    CONSOLE.lock().state.focus()
}

/// Writes formatted text (used by `log!`): with several VMs, an open guest
/// line is ended first.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    CONSOLE.lock().write_hypervisor(args);
}

/// Writes formatted text even if another context holds the console lock
/// (panic path only: output may interleave, but it is never lost to a deadlock).
pub fn write_fmt_forced(args: fmt::Arguments<'_>, uart: Option<(UartKind, usize)>) {
    if let Some(mut guard) = CONSOLE.try_lock()
        && guard.uart.is_some()
    {
        guard.write_hypervisor(args);
        return;
    }
    if let Some((kind, base)) = uart {
        // SAFETY: same device as `init` used; the lock could not be taken,
        // so output may interleave with the holder's, which the panic path accepts.
        let mut uart = unsafe { HostUart::new(kind, base) };
        let _ = uart.write_fmt(args);
    }
}

/// Sends one byte VM `vm` wrote to its UART (tagged when several VMs run).
pub fn guest_byte(vm: usize, byte: u8) {
    let mut console = CONSOLE.lock();
    let Console { uart, state } = &mut *console;
    if let Some(uart) = uart.as_ref() {
        state.guest_byte(vm, byte, &mut |b| uart.put(b));
    }
}

/// Moves everything the UART received into the focused VM's input queue,
/// acting on the escapes (focus change and status line; statistics) on the
/// way.
pub fn drain_input() {
    let stats = {
        let mut console = CONSOLE.lock();
        while let Some(byte) = console.uart.as_ref().and_then(HostUart::try_get) {
            let focus = console.state.focus();
            match console.state.receive(byte) {
                Some(_) => console.show_status(),
                None => console.refresh_pending(focus),
            }
        }
        console.state.take_stats_request()
    };
    // Ctrl-A Ctrl-A s: every VM's exit statistics (printed through `log!`,
    // so not under the console lock).
    if stats {
        print_stats();
    }
}

/// Hands input queued for VM `vm` to its emulated UART, as much as it has
/// room for (one byte with its FIFO off); the rest waits for the guest to
/// read. Input is queued only for the VM that had the focus when it was
/// typed (and stays that VM's after the focus moves on).
pub fn deliver_input(vm: usize, guest_uart: &mut stratum_core::pl011::Pl011) {
    if !has_input(vm) {
        return;
    }
    let mut console = CONSOLE.lock();
    while guest_uart.rx_space() > 0 {
        match console.state.take_input(vm) {
            Some(byte) => {
                guest_uart.push_rx(byte);
            }
            None => break,
        }
    }
    console.refresh_pending(vm);
}

/// Whether input typed for VM `vm` waits to be handed to its UART (one
/// atomic load and a test: every VM index has its bit).
#[inline]
pub fn has_input(vm: usize) -> bool {
    const _: () = assert!(crate::vm::MAX_VMS <= 32, "one bit per VM");
    PENDING_INPUT.load(Ordering::Acquire) & (1 << (vm % 32)) != 0
}

/// Makes console input raise the UART's interrupt (see `irq`).
pub fn enable_input_interrupt() {
    if let Some(uart) = CONSOLE.lock().uart.as_ref() {
        uart.enable_rx_interrupt();
    }
}

/// Clears the UART's input interrupt once its FIFO was drained.
pub fn clear_input_interrupt() {
    if let Some(uart) = CONSOLE.lock().uart.as_ref() {
        uart.clear_rx_interrupt();
    }
}

/// Prints the statistics table of VM `id` on the console.
pub fn print_vm(id: usize) {
    let mut lines = LogLines::default();
    let _ = crate::telemetry::BLOCK.render_vm(id, &mut lines);
    lines.flush();
}

/// Prints the EL2 time of VM `id` (`name`), in a trace build (otherwise
/// nothing): `stratum bench` reads it.
pub fn print_el2_time(id: usize, name: &str) {
    if let Some((ticks, exits)) = crate::telemetry::el2_time(id) {
        crate::log!(
            "vm{id} '{name}': {} {ticks} counter ticks in {exits} exits",
            stratum_abi::telemetry::EL2_TIME_LABEL
        );
    }
}

/// Prints the statistics table of every VM (the console's statistics
/// escape calls this). Must not be called with the console lock held.
pub fn print_stats() {
    for id in 0..stratum_abi::telemetry::VM_SLOTS {
        print_vm(id);
    }
}

/// `fmt::Write` onto the hypervisor console, a whole line at a time, each
/// as a hypervisor message (`[stratum] …`): with several VMs, every console
/// line must say whose it is.
struct LogLines {
    buf: [u8; 192],
    len: usize,
}

impl Default for LogLines {
    fn default() -> Self {
        Self {
            buf: [0; 192],
            len: 0,
        }
    }
}

impl LogLines {
    /// Prints what is buffered as one line (if anything).
    fn flush(&mut self) {
        if self.len > 0 {
            let line = core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?");
            crate::log!("{line}");
            self.len = 0;
        }
    }
}

impl fmt::Write for LogLines {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.flush();
                continue;
            }
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints a hypervisor message: `log!("...")` → `[stratum] ...\n`, on a
/// line of its own.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("[stratum] {}\n", format_args!($($arg)*)))
    };
}
