//! A minimal QMP (QEMU Machine Protocol) client, enough to read the
//! machine's physical memory while it runs, and the per-user runtime
//! directory where `stratum run` puts each QEMU's QMP socket.
//!
//! `stratum run` starts QEMU with `-qmp unix:<dir>/<pid>.qmp,server=on,wait=off`
//! (`<dir>`: `$XDG_RUNTIME_DIR/stratum`, else `/tmp/stratum-<uid>`, mode
//! 0700) and removes the socket when the run ends; `stratum stats` and
//! `stratum trace` find a run there by the `stratum` process id.
//!
//! QMP replies are one JSON object per line. This client only needs to tell
//! a success (`{"return": …}`) from an error (`{"error": {… "desc": …}}`)
//! and to skip asynchronous events, so it looks at the top-level key rather
//! than parsing JSON in general.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{Error, ErrorKind, Result};

/// Most bytes one `pmemsave` reads (a telemetry block is ~33 KiB, a trace
/// ring 256 KiB).
const MAX_READ: u64 = 16 << 20;

/// A connected QMP session (capabilities negotiated).
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Scratch file for `pmemsave` (QEMU writes it, we read it back).
    scratch: PathBuf,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

/// A hypervisor error (the run is gone, QEMU refused) with `message`.
fn failure(message: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Hypervisor, anyhow::anyhow!("{message}"))
}

impl Qmp {
    /// Connects to the QMP socket at `path` and leaves negotiation mode.
    pub fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path)
            .map_err(|e| failure(format!("cannot connect to {}: {e}", path.display())))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| failure(format!("QMP socket: {e}")))?;
        let writer = stream
            .try_clone()
            .map_err(|e| failure(format!("QMP socket: {e}")))?;
        static SESSION: AtomicU32 = AtomicU32::new(0);
        let scratch = runtime_dir()?.join(format!(
            "{}-{}.mem",
            std::process::id(),
            SESSION.fetch_add(1, Ordering::Relaxed)
        ));
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
            scratch,
        };
        let greeting = qmp.line()?;
        if !greeting.trim_start().starts_with("{\"QMP\"") {
            return Err(failure(format!(
                "{} is not a QMP socket (it said {greeting:?})",
                path.display()
            )));
        }
        qmp.execute("{\"execute\": \"qmp_capabilities\"}")?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(failure("QEMU closed the QMP connection (the run ended)")),
            Ok(_) => Ok(line),
            Err(e) => Err(failure(format!("reading from QMP: {e}"))),
        }
    }

    /// Sends one command (a JSON object) and waits for its reply, skipping
    /// events.
    fn execute(&mut self, command: &str) -> Result<()> {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| failure(format!("writing to QMP: {e}")))?;
        loop {
            let line = self.line()?;
            match reply_kind(&line) {
                Reply::Return => return Ok(()),
                Reply::Error(desc) => return Err(failure(format!("QEMU refused: {desc}"))),
                Reply::Other => {}
            }
        }
    }

    /// `len` bytes of guest-physical memory at `addr`.
    pub fn read_phys(&mut self, addr: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        if len > MAX_READ {
            return Err(failure(format!(
                "refusing to read {len} bytes at {addr:#x}"
            )));
        }
        let file = self.scratch.to_string_lossy().into_owned();
        let command = format!(
            "{{\"execute\": \"pmemsave\", \"arguments\": {{\"val\": {addr}, \"size\": {len}, \"filename\": {}}}}}",
            json_string(&file)
        );
        self.execute(&command)?;
        let bytes = fs::read(&self.scratch)
            .map_err(|e| failure(format!("reading {}: {e}", self.scratch.display())))?;
        if bytes.len() as u64 != len {
            return Err(failure(format!(
                "QEMU saved {} bytes at {addr:#x}, not {len}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.scratch);
    }
}

/// What a QMP line is.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// `{"return": …}`.
    Return,
    /// `{"error": {…}}`, with its `desc`.
    Error(String),
    /// An event or the greeting.
    Other,
}

fn reply_kind(line: &str) -> Reply {
    let body = line.trim_start().trim_start_matches('{').trim_start();
    if body.starts_with("\"return\"") {
        Reply::Return
    } else if body.starts_with("\"error\"") {
        Reply::Error(string_field(line, "desc").unwrap_or_else(|| line.trim().to_owned()))
    } else {
        Reply::Other
    }
}

/// The string value of the first `"key": "…"` in `json` (escapes undone
/// for `\"` and `\\`).
fn string_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = json[start..].trim_start().strip_prefix(':')?.trim_start();
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The per-user directory for QMP sockets, created (mode 0700) if missing;
/// refused if another user owns it or others can write to it.
pub fn runtime_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(base) => PathBuf::from(base).join("stratum"),
        None => {
            let uid = fs::metadata("/proc/self")
                .map(|m| m.uid())
                .map_err(|e| Error::environment(format!("cannot find my user id: {e}")))?;
            std::env::temp_dir().join(format!("stratum-{uid}"))
        }
    };
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::environment(format!(
                "cannot create {}: {e}",
                dir.display()
            )));
        }
    }
    let meta = fs::symlink_metadata(&dir)
        .map_err(|e| Error::environment(format!("{}: {e}", dir.display())))?;
    let me = fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if !meta.is_dir() || Some(meta.uid()) != me || meta.permissions().mode() & 0o022 != 0 {
        return Err(Error::environment(format!(
            "{} is not a private directory of this user",
            dir.display()
        )));
    }
    Ok(dir)
}

/// A QMP socket path for a new run by this process, and its guard: the
/// socket file is removed when the guard drops.
pub fn new_socket() -> Result<SocketGuard> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let dir = runtime_dir()?;
    let pid = std::process::id();
    let path = match RUNS.fetch_add(1, Ordering::Relaxed) {
        0 => dir.join(format!("{pid}.qmp")),
        n => dir.join(format!("{pid}-{n}.qmp")),
    };
    // A leftover of an earlier process with our pid.
    let _ = fs::remove_file(&path);
    Ok(SocketGuard(path))
}

/// Removes a run's QMP socket when dropped.
#[derive(Debug)]
pub struct SocketGuard(PathBuf);

impl SocketGuard {
    /// Another socket next to `other`, with extension `extension` (not
    /// `qmp`: [`find_socket`] does not list it).
    pub fn beside(other: &SocketGuard, extension: &str) -> Self {
        let path = other.0.with_extension(extension);
        let _ = fs::remove_file(&path);
        Self(path)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The QMP socket of the run of `stratum` process `pid`, or, without
/// `pid`, of the only run there is. Sockets nobody listens on any more are
/// removed.
pub fn find_socket(pid: Option<u32>) -> Result<PathBuf> {
    let dir = runtime_dir()?;
    let mut live = Vec::new();
    for entry in fs::read_dir(&dir)
        .map_err(|e| Error::environment(format!("{}: {e}", dir.display())))?
        .flatten()
    {
        let path = entry.path();
        let Some(stem) = socket_stem(&path) else {
            continue;
        };
        if UnixStream::connect(&path).is_err() {
            let _ = fs::remove_file(&path);
            continue;
        }
        live.push((stem, path));
    }
    choose_socket(live, pid)
}

/// The file stem of a `*.qmp` path.
fn socket_stem(path: &Path) -> Option<String> {
    if path.extension()? != "qmp" {
        return None;
    }
    Some(path.file_stem()?.to_str()?.to_owned())
}

fn choose_socket(mut live: Vec<(String, PathBuf)>, pid: Option<u32>) -> Result<PathBuf> {
    if let Some(pid) = pid {
        let p = pid.to_string();
        live.retain(|(stem, _)| *stem == p || stem.starts_with(&format!("{p}-")));
    }
    live.sort();
    match live.len() {
        1 => Ok(live.remove(0).1),
        0 => Err(Error::input(match pid {
            Some(pid) => format!("no running `stratum run` with process id {pid}"),
            None => "no running `stratum run` found (start one first)".to_owned(),
        })),
        _ => Err(Error::input(format!(
            "several runs are going on ({}); choose one with --pid",
            live.iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_told_apart() {
        assert_eq!(reply_kind("{\"return\": {}}\n"), Reply::Return);
        assert_eq!(
            reply_kind(
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid \\\"addr\\\"\"}}"
            ),
            Reply::Error("Invalid \"addr\"".to_owned())
        );
        assert_eq!(
            reply_kind("{\"timestamp\": {\"seconds\": 1}, \"event\": \"STOP\"}"),
            Reply::Other
        );
        assert_eq!(
            reply_kind("{\"QMP\": {\"version\": {}, \"capabilities\": []}}"),
            Reply::Other
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("/tmp/a b"), "\"/tmp/a b\"");
        assert_eq!(json_string("q\"\\\n"), "\"q\\\"\\\\\\u000a\"");
        assert_eq!(
            string_field("{\"desc\" : \"x\\\\y\"}", "desc").as_deref(),
            Some("x\\y")
        );
        assert_eq!(string_field("{\"desc\": 3}", "desc"), None);
    }

    #[test]
    fn sockets_are_chosen_by_pid() {
        let live = |names: &[&str]| {
            names
                .iter()
                .map(|n| ((*n).to_owned(), PathBuf::from(format!("/r/{n}.qmp"))))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            choose_socket(live(&["12"]), None).expect("only one"),
            PathBuf::from("/r/12.qmp")
        );
        assert_eq!(
            choose_socket(live(&["12", "345", "1234"]), Some(12)).expect("by pid"),
            PathBuf::from("/r/12.qmp")
        );
        assert_eq!(
            choose_socket(live(&["12-1", "34"]), Some(12)).expect("a second run"),
            PathBuf::from("/r/12-1.qmp")
        );
        let e = choose_socket(live(&["12", "34"]), None).expect_err("ambiguous");
        assert!(e.to_string().contains("12, 34"), "{e}");
        assert!(choose_socket(live(&[]), None).is_err());
        assert!(choose_socket(live(&["12"]), Some(1)).is_err());
        assert_eq!(socket_stem(Path::new("/r/12.qmp")).as_deref(), Some("12"));
        assert_eq!(socket_stem(Path::new("/r/12.mem")), None);
    }
}
