//! The terminal, for the focused console: raw mode, its size, and putting
//! it back on every way out.
//!
//! [`RawMode::enter`] saves the terminal's settings and switches it to raw
//! mode (no echo, no line editing, no signals from Ctrl-C or Ctrl-Z: every
//! key goes to the guest). The settings come back when the guard drops
//! (normal exit, an error, QEMU dying), from a panic hook, and from a
//! handler for SIGTERM, SIGHUP, SIGINT and SIGQUIT, which also stops QEMU
//! ([`stop_on_signal`]) and then dies of the same signal. The saved settings live in a static that the handler reads
//! without a lock; it only calls async-signal-safe functions (`tcsetattr`,
//! `write`, `kill`, `signal`, `raise`).

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// What puts the screen back: the whole screen scrolls again (the cursor
/// kept where it is: setting the region moves it home), the cursor shows,
/// attributes are normal, and a fresh line.
pub const RESET_SCREEN: &[u8] = b"\x1b7\x1b[r\x1b8\x1b[?25h\x1b[0m\r\n";

/// The settings of the terminal before raw mode, and its descriptor.
static SAVED: OnceLock<(i32, libc::termios)> = OnceLock::new();
/// Raw mode is on (the settings must be put back).
static RAW: AtomicBool = AtomicBool::new(false);
/// A child process (QEMU) to stop when a signal ends us, or 0.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// The terminal's size in (rows, columns), if `fd` is a terminal that
/// knows it.
pub fn size(fd: i32) -> Option<(u16, u16)> {
    // SAFETY: an all-zero `winsize` is a valid value of the plain C struct.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points at ours; a bad `fd` makes it fail, not write.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Raw mode on a terminal, undone on drop (see the module docs).
#[derive(Debug)]
pub struct RawMode {
    _private: (),
}

impl RawMode {
    /// Switches terminal `fd` (the console's input) to raw mode. Once per
    /// process: the first settings saved are the ones put back.
    pub fn enter(fd: i32) -> io::Result<Self> {
        // SAFETY: an all-zero `termios` is a valid value of the plain C struct.
        let mut original: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes one `termios` through the pointer, ours.
        if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let _ = SAVED.set((fd, original));
        install_restorers();
        let mut raw = original;
        // SAFETY: cfmakeraw only changes the fields of the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Output post-processing stays on (`\n` becomes `\r\n` for the
        // host's own messages); the guests' `\r\n` is unchanged by it.
        raw.c_oflag |= libc::OPOST;
        // SAFETY: tcsetattr reads one `termios` through the pointer, ours.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        RAW.store(true, Ordering::SeqCst);
        Ok(Self { _private: () })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the saved settings back and resets the screen, once.
pub fn restore() {
    if !RAW.swap(false, Ordering::SeqCst) {
        return;
    }
    if let Some((fd, saved)) = SAVED.get() {
        // SAFETY: tcsetattr reads the saved `termios`, a static.
        unsafe { libc::tcsetattr(*fd, libc::TCSANOW, saved) };
    }
    write_stdout(RESET_SCREEN);
}

/// Writes `bytes` to stdout with the plain system call (usable from a
/// signal handler).
fn write_stdout(bytes: &[u8]) {
    // SAFETY: write reads `bytes.len()` bytes from the slice.
    let _ = unsafe { libc::write(1, bytes.as_ptr().cast(), bytes.len()) };
}

/// Makes a signal that ends us (see the module docs) send SIGTERM to
/// process `pid` first: QEMU must not outlive the terminal it was drawing on.
pub fn stop_on_signal(pid: u32) {
    CHILD.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
}

extern "C" fn on_signal(sig: libc::c_int) {
    restore();
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill takes plain integers; a stale pid makes it fail.
        unsafe { libc::kill(child, libc::SIGTERM) };
    }
    // SAFETY: back to the default action, then the same signal again: the
    // process ends as it would have without us.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the panic hook and the signal handlers that call [`restore`], once.
fn install_restorers() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
            // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only
            // makes async-signal-safe calls.
            unsafe {
                libc::signal(sig, on_signal as *const () as libc::sighandler_t);
            }
        }
    });
}

/// Sends SIGTERM to process `pid` (QEMU, when the user quits).
pub fn terminate(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill takes plain integers; a stale pid makes it fail.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_terminal_is_an_error_and_has_no_size() {
        let file = std::fs::File::open("/dev/null").expect("/dev/null opens");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        assert!(RawMode::enter(fd).is_err());
        assert_eq!(size(fd), None);
        assert_eq!(size(-1), None);
        // Nothing was switched, so nothing is put back (no reset written).
        assert!(!RAW.load(Ordering::SeqCst));
    }
}
