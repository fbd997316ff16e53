//! The eight tests of [`stratum_abi::workload::TESTS`], each a fixed number
//! of iterations timed as one window ([`timed`]): the interrupt counts are
//! read, then the counter; the iterations run; then the counter, then the
//! interrupt counts again. Setup (opening files, forking the pipe partner,
//! mapping and pre-touching buffers) and checking the results happen
//! outside the window.
//!
//! Every test checks what it did (the bytes read, the byte echoed, the
//! child's exit status, the copy), so a result is never the time of a
//! failure. Children after `fork` only call `read`, `write` and `_exit`.

use std::ffi::CString;
use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read as _};
use std::path::Path;

use crate::counter;
use crate::interrupts::{self, Counts};

/// `statfs` magic of tmpfs.
const TMPFS_MAGIC: u64 = 0x0102_1994;
/// Bytes per `/dev/zero` read.
const READ_SIZE: usize = 4096;
/// Bytes per copy.
const COPY_SIZE: usize = 8 << 20;

/// One measured window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Counter ticks from start to end.
    pub ticks: u64,
    /// Interrupts counted meanwhile.
    pub irqs: Counts,
}

/// Where the file test creates its file, and whether that must be tmpfs.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Directory of the file test.
    pub dir: std::path::PathBuf,
    /// Refuse a directory that is not on tmpfs.
    pub require_tmpfs: bool,
}

/// Runs `body` as one window.
fn timed(body: impl FnOnce() -> Result<(), String>) -> Result<Window, String> {
    let before = interrupts::read()?;
    let start = counter::now();
    body()?;
    let end = counter::now();
    let after = interrupts::read()?;
    Ok(Window {
        ticks: end.wrapping_sub(start),
        irqs: before.until(after),
    })
}

/// Runs test `id` with `iters` iterations.
pub fn run(id: &str, iters: u64, setup: &Setup) -> Result<Window, String> {
    match id {
        "null_syscall" => null_syscall(iters),
        "dev_zero_read" => dev_zero_read(iters),
        "pipe_round_trip" => pipe_round_trip(iters),
        "fork_exit_wait" => fork_exit_wait(iters),
        "page_fault" => page_fault(iters),
        "memcpy_8m" => memcpy_8m(iters),
        "cpu_loop" => cpu_loop(iters),
        "file_create_unlink" => file_create_unlink(iters, setup),
        other => Err(format!("no test {other}")),
    }
}

fn last_error(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn null_syscall(iters: u64) -> Result<Window, String> {
    timed(|| {
        for _ in 0..iters {
            // SAFETY: getppid has no preconditions and touches no memory.
            black_box(unsafe { libc::getppid() });
        }
        Ok(())
    })
}

fn dev_zero_read(iters: u64) -> Result<Window, String> {
    let mut zero = File::open("/dev/zero").map_err(|e| format!("/dev/zero: {e}"))?;
    let mut buf = vec![0xa5u8; READ_SIZE];
    let window = timed(|| {
        for _ in 0..iters {
            let n = zero
                .read(black_box(&mut buf))
                .map_err(|e| format!("reading /dev/zero: {e}"))?;
            if n != READ_SIZE {
                return Err(format!("/dev/zero gave {n} bytes, not {READ_SIZE}"));
            }
        }
        Ok(())
    })?;
    if buf.iter().any(|&b| b != 0) {
        return Err("/dev/zero gave bytes that are not zero".to_owned());
    }
    Ok(window)
}

/// The two ends of a pipe.
struct Pipe {
    read: libc::c_int,
    write: libc::c_int,
}

impl Pipe {
    fn new() -> Result<Self, String> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is two writable c_ints, as pipe(2) needs.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(last_error("pipe"));
        }
        Ok(Pipe {
            read: fds[0],
            write: fds[1],
        })
    }
}

fn close(fd: libc::c_int) {
    // SAFETY: closes a descriptor this program opened and no longer uses.
    unsafe { libc::close(fd) };
}

/// Reads or writes exactly one byte at `byte`; false on error or end of file.
fn one_byte(fd: libc::c_int, byte: &mut u8, write: bool) -> bool {
    let ptr: *mut u8 = byte;
    // SAFETY: `ptr` is one valid, writable byte for the duration of the call.
    let n = unsafe {
        if write {
            libc::write(fd, ptr.cast(), 1)
        } else {
            libc::read(fd, ptr.cast(), 1)
        }
    };
    n == 1
}

/// Forks; the child runs `child` and `_exit`s with its status. Returns the
/// child's pid in the parent.
fn fork_child(child: impl FnOnce() -> i32) -> Result<libc::pid_t, String> {
    // SAFETY: the child runs only `child` (read, write, close) and `_exit`:
    // async-signal-safe calls, as a fork of a possibly threaded process needs.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(last_error("fork")),
        0 => {
            let status = child();
            // SAFETY: ends the child at once, without running the parent's
            // atexit handlers or flushing its buffers.
            unsafe { libc::_exit(status) }
        }
        pid => Ok(pid),
    }
}

/// Waits for `pid` and checks it exited with `want`.
fn reap(pid: libc::pid_t, want: i32) -> Result<(), String> {
    let mut status = 0;
    // SAFETY: `status` is a writable c_int; `pid` is our child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(last_error("waitpid"));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == want {
        Ok(())
    } else {
        Err(format!(
            "child {pid} ended with status {status:#x}, not exit {want}"
        ))
    }
}

fn pipe_round_trip(iters: u64) -> Result<Window, String> {
    let there = Pipe::new()?;
    let back = Pipe::new()?;
    let pid = fork_child(|| {
        close(there.write);
        close(back.read);
        let mut byte = 0u8;
        // Echo every byte until the parent closes its end.
        while one_byte(there.read, &mut byte, false) {
            if !one_byte(back.write, &mut byte, true) {
                return 1;
            }
        }
        0
    })?;
    close(there.read);
    close(back.write);
    let window = timed(|| {
        for i in 0..iters {
            let sent = i.to_le_bytes()[0];
            let mut byte = sent;
            if !one_byte(there.write, &mut byte, true) {
                return Err(last_error("writing to the pipe"));
            }
            if !one_byte(back.read, &mut byte, false) {
                return Err(last_error("reading the echo"));
            }
            if byte != sent {
                return Err(format!("sent {sent}, the echo was {byte}"));
            }
        }
        Ok(())
    });
    close(there.write);
    close(back.read);
    let reaped = reap(pid, 0);
    let window = window?;
    reaped?;
    Ok(window)
}

/// The status the children of [`fork_exit_wait`] exit with.
const CHILD_STATUS: i32 = 7;

fn fork_exit_wait(iters: u64) -> Result<Window, String> {
    timed(|| {
        for _ in 0..iters {
            let pid = fork_child(|| CHILD_STATUS)?;
            reap(pid, CHILD_STATUS)?;
        }
        Ok(())
    })
}

/// The page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

fn page_fault(iters: u64) -> Result<Window, String> {
    let page = page_size();
    let pages = usize::try_from(iters).map_err(|_| "too many pages".to_owned())?;
    let len = pages
        .checked_mul(page)
        .ok_or_else(|| "too many pages".to_owned())?;
    // SAFETY: a fresh private anonymous mapping; no existing memory is
    // affected.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(last_error("mmap"));
    }
    // 4 KiB faults, not a transparent huge page per 2 MiB. (A kernel
    // without THP refuses the advice: then there are no huge pages anyway.)
    // SAFETY: advice on the mapping just made.
    unsafe { libc::madvise(base, len, libc::MADV_NOHUGEPAGE) };
    let base = base.cast::<u8>();
    let window = timed(|| {
        for i in 0..pages {
            // SAFETY: `i * page < len`: inside the mapping, which is
            // writable and only this loop touches.
            unsafe { base.add(i * page).write_volatile(1) };
        }
        Ok(())
    });
    // SAFETY: the last page written above is inside the mapping.
    let last = unsafe { base.add((pages - 1) * page).read_volatile() };
    // SAFETY: unmaps the mapping made above; nothing refers to it after.
    unsafe { libc::munmap(base.cast(), len) };
    let window = window?;
    if last != 1 {
        return Err(format!("a touched page reads {last}, not 1"));
    }
    Ok(window)
}

fn memcpy_8m(iters: u64) -> Result<Window, String> {
    // Both buffers written in full first: the copies take no page faults.
    let src: Vec<u8> = (0..COPY_SIZE).map(|i| (i % 251) as u8).collect();
    let mut dst = vec![0xffu8; COPY_SIZE];
    let window = timed(|| {
        for _ in 0..iters {
            black_box(&mut dst[..]).copy_from_slice(black_box(&src[..]));
        }
        Ok(())
    })?;
    if dst != src {
        return Err("the copy differs from its source".to_owned());
    }
    Ok(window)
}

fn cpu_loop(iters: u64) -> Result<Window, String> {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
    let window = timed(|| {
        for _ in 0..iters {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        Ok(())
    })?;
    // Xorshift never reaches zero from a non-zero seed.
    if black_box(x) == 0 {
        return Err("the xorshift state became zero".to_owned());
    }
    Ok(window)
}

/// Most tries [`quiet_cpu_loop`] makes.
const QUIET_TRIES: u32 = 2000;
/// How long [`quiet_cpu_loop`] keeps trying, whatever the count.
const QUIET_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Ticks of a window of `iters` iterations of the CPU loop that no
/// interrupt fell into: the first of up to [`QUIET_TRIES`] tries, for at
/// most [`QUIET_PATIENCE`]. (A window of 10,000 iterations, 50,000
/// instructions on QEMU, catches a 250 Hz tick one try in five under
/// `-icount`. Without it the guest's clock follows the host's, and the
/// interrupt counts around a window also span the two reads of
/// `/proc/interrupts`: on a loaded host most tries catch a tick, and 50
/// tries were seen to fail beside the adversary.)
pub fn quiet_cpu_loop(iters: u64) -> Result<u64, String> {
    let start = std::time::Instant::now();
    let mut tries = 0;
    while tries < QUIET_TRIES && (tries == 0 || start.elapsed() < QUIET_PATIENCE) {
        tries += 1;
        let window = cpu_loop(iters)?;
        if window.irqs.all == 0 {
            return Ok(window.ticks);
        }
    }
    Err(format!(
        "no window of {iters} CPU-loop iterations without an interrupt in {tries} tries ({:.1} s)",
        start.elapsed().as_secs_f64()
    ))
}

/// Whether `dir` is on tmpfs.
fn on_tmpfs(dir: &Path) -> Result<bool, String> {
    let path = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} has a NUL byte", dir.display()))?;
    // SAFETY: an all-zero statfs is a valid value for statfs(2) to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `fs` writable.
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
        return Err(last_error(&format!("statfs {}", dir.display())));
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's type differs between libcs and architectures"
    )]
    let magic = fs.f_type as u64;
    Ok(magic == TMPFS_MAGIC)
}

fn file_create_unlink(iters: u64, setup: &Setup) -> Result<Window, String> {
    if setup.require_tmpfs && !on_tmpfs(&setup.dir)? {
        return Err(format!("{} is not on tmpfs", setup.dir.display()));
    }
    let path = setup
        .dir
        .join(format!("stratum-workload-{}", std::process::id()));
    timed(|| {
        for _ in 0..iters {
            drop(File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?);
            std::fs::remove_file(&path)
                .map_err(|e| format!("unlinking {}: {e}", path.display()))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_abi::workload::TESTS;

    /// Every test runs and checks itself on the host too (few iterations).
    #[test]
    fn every_test_runs() {
        let setup = Setup {
            dir: std::env::temp_dir(),
            require_tmpfs: false,
        };
        for t in TESTS {
            let iters = if t.id == "memcpy_8m" { 1 } else { 3 };
            let w = run(t.id, iters, &setup).unwrap_or_else(|e| panic!("{}: {e}", t.id));
            assert!(w.irqs.all >= w.irqs.timer, "{}", t.id);
        }
        assert!(run("sleep", 1, &setup).is_err());
        // On the host an interrupt may well land in every window: only
        // check that a quiet one, when found, is not shorter than none.
        if let (Ok(empty), Ok(some)) = (quiet_cpu_loop(0), quiet_cpu_loop(1000)) {
            assert!(some >= empty, "{empty} then {some}");
        }
    }

    #[test]
    fn the_file_test_refuses_a_directory_that_is_not_tmpfs() {
        // /proc is procfs, never tmpfs.
        let setup = Setup {
            dir: "/proc".into(),
            require_tmpfs: true,
        };
        let e = run("file_create_unlink", 1, &setup).expect_err("procfs");
        assert!(e.contains("not on tmpfs"), "{e}");
    }

    #[test]
    fn a_failing_child_is_reported() {
        let pid = fork_child(|| 3).expect("forked");
        let e = reap(pid, 0).expect_err("exit 3");
        assert!(e.contains("not exit 0"), "{e}");
    }
}
