//! `stratum run --log-dir DIR`: each VM's console in a file of its own,
//! `DIR/<name>.log`, and the hypervisor's messages in `DIR/stratum.log`,
//! written as the output arrives (so `tail -f` follows a VM), without the
//! tags and colours of the shared console; a line another VM's output cut
//! on the console is whole in its file.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::demux::{Demux, Piece};
use crate::{Error, Result};

/// The file of the hypervisor's own messages.
pub const HYPERVISOR_LOG: &str = "stratum.log";

/// The open log files of one run.
#[derive(Debug)]
pub struct LogDir {
    demux: Demux,
    vms: Vec<(PathBuf, BufWriter<File>)>,
    hypervisor: (PathBuf, BufWriter<File>),
    /// A VM's last line may still go on: its newline is written when the
    /// VM starts its next line (or at the end).
    open_line: Vec<bool>,
    /// The first write error (later writes are skipped).
    error: Option<String>,
}

impl LogDir {
    /// Creates `dir` (if needed) and empties or creates the log of every VM
    /// in `names` and of the hypervisor. Two VMs cannot share a file: names
    /// are unique, and none is `stratum` (the config's names cannot end in
    /// `.log`, so no VM's file is the hypervisor's unless a VM is named
    /// `stratum`, which is then refused).
    pub fn create(dir: &Path, names: &[String]) -> Result<Self> {
        if names.iter().any(|n| format!("{n}.log") == HYPERVISOR_LOG) {
            return Err(Error::input(format!(
                "--log-dir: a VM named 'stratum' would share {HYPERVISOR_LOG} with the hypervisor; rename it"
            )));
        }
        fs::create_dir_all(dir)
            .map_err(|e| Error::environment(format!("cannot create {}: {e}", dir.display())))?;
        let open = |name: &str| {
            let path = dir.join(name);
            File::create(&path)
                .map(|f| (path.clone(), BufWriter::new(f)))
                .map_err(|e| Error::environment(format!("cannot create {}: {e}", path.display())))
        };
        Ok(Self {
            demux: Demux::new(names.to_vec()),
            vms: names
                .iter()
                .map(|n| open(&format!("{n}.log")))
                .collect::<Result<_>>()?,
            hypervisor: open(HYPERVISOR_LOG)?,
            open_line: vec![false; names.len()],
            error: None,
        })
    }

    /// Writes the next console bytes to the files they belong in.
    pub fn feed(&mut self, bytes: &[u8]) {
        let Self {
            demux,
            vms,
            hypervisor,
            open_line,
            error,
        } = self;
        demux.feed(bytes, &mut |p| {
            write_piece(&p, vms, hypervisor, open_line, error)
        });
        for (path, w) in vms.iter_mut().chain([&mut *hypervisor]) {
            if let Err(e) = w.flush() {
                note(error, path, &e);
            }
        }
    }

    /// The end of the output: ends open lines and closes the files. An
    /// error names the first file that could not be written.
    pub fn finish(mut self) -> Result<()> {
        let Self {
            demux,
            vms,
            hypervisor,
            open_line,
            error,
        } = &mut self;
        demux.finish(&mut |p| write_piece(&p, vms, hypervisor, open_line, error));
        for ((path, w), open) in vms.iter_mut().zip(open_line.iter()) {
            if let Err(e) =
                (if *open { w.write_all(b"\n") } else { Ok(()) }).and_then(|()| w.flush())
            {
                note(error, path, &e);
            }
        }
        if let Err(e) = hypervisor.1.flush() {
            note(error, &hypervisor.0, &e);
        }
        match self.error.take() {
            Some(e) => Err(Error::environment(e)),
            None => Ok(()),
        }
    }
}

fn write_piece(
    piece: &Piece<'_>,
    vms: &mut [(PathBuf, BufWriter<File>)],
    hypervisor: &mut (PathBuf, BufWriter<File>),
    open_line: &mut [bool],
    error: &mut Option<String>,
) {
    if error.is_some() {
        return;
    }
    let result = match *piece {
        Piece::Other(line) => {
            let (path, w) = hypervisor;
            writeln!(w, "{line}").map_err(|e| (path.clone(), e))
        }
        Piece::Vm {
            vm,
            starts_line,
            text,
        } => {
            let (Some((path, w)), Some(open)) = (vms.get_mut(vm), open_line.get_mut(vm)) else {
                return;
            };
            let newline = if starts_line && *open { "\n" } else { "" };
            *open = true;
            write!(w, "{newline}{text}").map_err(|e| (path.clone(), e))
        }
    };
    if let Err((path, e)) = result {
        note(error, &path, &e);
    }
}

fn note(error: &mut Option<String>, path: &Path, e: &std::io::Error) {
    error.get_or_insert_with(|| format!("cannot write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;

    #[test]
    fn each_vm_gets_its_lines_whole_and_the_hypervisor_its_own() {
        let dir = TestDir::new("logdir");
        let logs = dir.path().join("logs");
        let names = ["web".to_owned(), "db".to_owned()];
        let mut l = LogDir::create(&logs, &names).expect("created");
        l.feed(b"[stratum] boot\nweb | hello\n\x1b[32mdb | \x1b[0mstart");
        l.feed(b"ing\nweb | line cut by d\ndb | x\nweb + b's output\n");
        l.finish().expect("closed");
        let read = |f: &str| fs::read_to_string(logs.join(f)).expect("a log");
        assert_eq!(read("web.log"), "hello\nline cut by db's output\n");
        assert_eq!(read("db.log"), "starting\nx\n");
        assert_eq!(read(HYPERVISOR_LOG), "[stratum] boot\n");
    }

    #[test]
    fn a_vm_named_like_the_hypervisor_log_is_refused_and_old_logs_are_emptied() {
        let dir = TestDir::new("logdir-names");
        let e = LogDir::create(dir.path(), &["stratum".to_owned()]).expect_err("clash");
        assert!(e.to_string().contains("rename it"), "{e}");
        fs::write(dir.path().join("a.log"), "old run\n").expect("old log");
        let mut l = LogDir::create(dir.path(), &["a".to_owned()]).expect("created");
        l.feed(b"new\n");
        l.finish().expect("closed");
        assert_eq!(
            fs::read_to_string(dir.path().join("a.log")).expect("log"),
            "new\n"
        );
        // A directory where a file should be is an error naming it.
        let blocked = dir.path().join("blocked");
        fs::create_dir_all(blocked.join("b.log")).expect("mkdir");
        let e = LogDir::create(&blocked, &["b".to_owned()]).expect_err("cannot create");
        assert!(e.to_string().contains("b.log"), "{e}");
    }
}
