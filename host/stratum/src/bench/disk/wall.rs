//! The wall clock of the disk tests: the host notes when each test's
//! `DISK-BEGIN` line and its result line arrive, and the difference is
//! the test's wall-clock time. Under `-icount` the guest's counter counts
//! executed instructions (and jumps over idle time), so it cannot see how
//! long QEMU took to perform a request on the host's file; the host can.
//!
//! The program drains the console before it opens a window and prints the
//! result line right after the window closes, so the two lines bracket
//! the window; what they add (one line each through the console) is small
//! against a window of many requests.
//!
//! Two sources: a bare QEMU's stdout, read line by line ([`capture`]), and
//! a `stratum run`'s log file of the frontend VM (`--log-dir`), which the
//! run writes and flushes as the console arrives, polled every millisecond
//! ([`Watcher`]). The log file gets a line's end only when the VM starts
//! its next line (its last line may still go on), so there a line counts
//! from when its first bytes arrived: the program writes each line whole.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use stratum_abi::workload::{DISK_BEGIN_PREFIX, DISK_PREFIX};

use crate::{Error, ErrorKind, Result};

/// When the lines that matter arrived: each `DISK-BEGIN` and `DISK` line
/// (the text from its prefix on), in order.
#[derive(Clone, Debug, Default)]
pub struct Stamps(pub Vec<(Instant, String)>);

impl Stamps {
    /// Notes `line` (console text, a VM's tag allowed) if it matters.
    fn note(&mut self, at: Instant, line: &str) {
        for prefix in [DISK_BEGIN_PREFIX, DISK_PREFIX] {
            if let Some(i) = line.find(prefix) {
                self.0.push((at, line[i..].trim_end().to_owned()));
                return;
            }
        }
    }

    /// Seconds from test `id`'s `DISK-BEGIN` line to its result line.
    pub fn window_secs(&self, id: &str) -> Option<f64> {
        let word = format!("test={id}");
        let is = |prefix: &str, text: &str| {
            text.strip_prefix(prefix)
                .is_some_and(|rest| rest.split_whitespace().any(|w| w == word))
        };
        let begin = self
            .0
            .iter()
            .find(|(_, t)| is(DISK_BEGIN_PREFIX, t))
            .map(|&(at, _)| at)?;
        let end = self
            .0
            .iter()
            .find(|(at, t)| *at >= begin && is(DISK_PREFIX, t))
            .map(|&(at, _)| at)?;
        Some(end.duration_since(begin).as_secs_f64())
    }
}

/// Runs `argv` with stdin closed and returns its stdout, whether it exited
/// successfully, and the stamps of its lines; killed after `timeout`.
pub fn capture(
    argv: &[OsString],
    timeout: Duration,
    verbose: bool,
) -> Result<(String, bool, Stamps)> {
    let (program, args) = argv.split_first().expect("a command line has a program");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::environment(format!("cannot start {program:?}: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let mut stamps = Stamps::default();
        let mut lines = BufReader::new(stdout);
        let mut line = Vec::new();
        while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let s = String::from_utf8_lossy(&line);
            stamps.note(Instant::now(), &s);
            if verbose {
                print!("{s}");
            }
            text.push_str(&s);
            line.clear();
        }
        (text, stamps)
    });
    let start = Instant::now();
    let ok = loop {
        let status = child.try_wait().map_err(|e| {
            Error::new(
                ErrorKind::Hypervisor,
                anyhow::anyhow!("waiting for QEMU: {e}"),
            )
        })?;
        if let Some(status) = status {
            break status.success();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let (text, stamps) = reader.join().unwrap_or_default();
    Ok((text, ok, stamps))
}

/// Follows a log file that a run writes, noting when its lines arrive.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Stamps>,
}

impl Watcher {
    /// Starts following `path` (which need not exist yet).
    pub fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || follow(&path, &stop))
        };
        Self { stop, thread }
    }

    /// Stops following once everything written was read; the stamps.
    pub fn finish(self) -> Stamps {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn follow(path: &PathBuf, stop: &AtomicBool) -> Stamps {
    let mut stamps = Stamps::default();
    let mut file: Option<File> = None;
    let mut pending = Vec::new();
    // When the first bytes of the line in `pending` arrived.
    let mut started = Instant::now();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        // Read the stop flag first: whatever was written before it was set
        // is read below.
        let stopping = stop.load(Ordering::Relaxed);
        if file.is_none() {
            file = File::open(path).ok();
        }
        if let Some(f) = &mut file {
            while let Ok(n) = f.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                for &b in &chunk[..n] {
                    if pending.is_empty() {
                        started = now;
                    }
                    pending.push(b);
                    if b == b'\n' {
                        stamps.note(started, &String::from_utf8_lossy(&pending));
                        pending.clear();
                    }
                }
            }
        }
        if stopping {
            if !pending.is_empty() {
                stamps.note(started, &String::from_utf8_lossy(&pending));
            }
            return stamps;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_runs_from_its_begin_line_to_its_result() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Stamps::default();
        s.note(at(0), "frontend | DISK-ENV dev=/dev/vda\r\n");
        s.note(at(5), "frontend | DISK-BEGIN test=seq_write\r\n");
        s.note(at(505), "frontend | DISK test=seq_write ops=16 bytes=1\r\n");
        s.note(at(510), "DISK-BEGIN test=seq_read\n");
        s.note(at(760), "DISK test=seq_read ops=16\n");
        assert_eq!(s.0.len(), 4, "the env line is not noted");
        assert!((s.window_secs("seq_write").expect("timed") - 0.5).abs() < 1e-9);
        assert!((s.window_secs("seq_read").expect("timed") - 0.25).abs() < 1e-9);
        assert_eq!(s.window_secs("rand_read"), None);
        assert_eq!(s.window_secs("seq"), None, "whole words only");
    }

    #[test]
    fn a_followed_file_is_read_as_it_grows() {
        let dir = crate::testutil::TestDir::new("bench-disk-wall");
        let path = dir.path().join("frontend.log");
        let watcher = Watcher::start(path.clone());
        thread::sleep(Duration::from_millis(20));
        let mut f = std::fs::File::create(&path).expect("create");
        let mut write = |text: &[u8]| {
            std::io::Write::write_all(&mut f, text).expect("write");
            thread::sleep(Duration::from_millis(50));
        };
        // As the run writes it: a line's end comes with the next line.
        write(b"DISK-BEGIN test=rand_read");
        write(b"\nDISK test=rand");
        write(b"_read ops=1");
        let stamps = watcher.finish();
        assert_eq!(stamps.0.len(), 2, "{:?}", stamps.0);
        let secs = stamps.window_secs("rand_read").expect("timed");
        assert!(
            (0.04..0.5).contains(&secs),
            "from each line's first bytes: {secs}"
        );
    }
}
