//! What the commands of `--exec` (and `exec = "…"` in a config) did: the
//! console is read as it streams, each VM's lines are told apart by the
//! hypervisor's tags (`name | …`, continued as `name + …` when another
//! VM's output cut a line; no tag with a single VM), and the Debian init's
//! `STRATUM-LINUX: exec exit <status>` line gives each command's status.

use crate::config::Config;
use crate::linux::initramfs::EXEC_EXIT_MARKER;

/// The separator after a VM's name at the start of its line.
const TAG: &str = " | ";
/// The separator after a VM's name when its line goes on after another
/// VM's output cut it.
const CONTINUED: &str = " + ";

/// One VM's exec'd command and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecReport {
    /// The VM's name.
    pub vm: String,
    /// The command.
    pub command: String,
    /// Its exit status; `None` when the VM never reported one (it crashed,
    /// was stopped, or the run ended first).
    pub status: Option<i32>,
}

impl ExecReport {
    /// Whether the command exited 0.
    pub fn succeeded(&self) -> bool {
        self.status == Some(0)
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self.status {
            Some(s) => format!(
                "VM '{}': `{}` exited with status {s}",
                self.vm, self.command
            ),
            None => format!(
                "VM '{}': `{}` reported no exit status (the VM stopped or the run ended first)",
                self.vm, self.command
            ),
        }
    }
}

/// Reads console output for the exec statuses of a system's VMs.
#[derive(Clone, Debug)]
pub struct ExecWatch {
    /// Every VM's name (tags name them), and its command if it has one.
    vms: Vec<(String, Option<String>)>,
    /// The hypervisor tags lines (more than one VM).
    tagged: bool,
    /// The console line being received.
    line: Vec<u8>,
    /// Each VM's logical line so far (it may be continued).
    pending: Vec<Vec<u8>>,
    /// Each VM's reported status.
    status: Vec<Option<i32>>,
}

impl ExecWatch {
    /// A watch for `config`'s VMs, or `None` when no VM execs a command.
    pub fn new(config: &Config) -> Option<Self> {
        config.vms.iter().any(|v| v.exec.is_some()).then(|| {
            let vms: Vec<(String, Option<String>)> = config
                .vms
                .iter()
                .map(|v| (v.name.clone(), v.exec.clone()))
                .collect();
            Self {
                tagged: vms.len() > 1,
                line: Vec::new(),
                pending: vec![Vec::new(); vms.len()],
                status: vec![None; vms.len()],
                vms,
            }
        })
    }

    /// Takes the next console bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.physical_line(&strip_escapes(&line));
            } else {
                self.line.push(b);
            }
        }
    }

    /// The reports of the VMs that exec a command, once the output ended.
    pub fn finish(mut self) -> Vec<ExecReport> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.physical_line(&strip_escapes(&line));
        }
        for vm in 0..self.vms.len() {
            self.complete(vm);
        }
        self.vms
            .iter()
            .zip(&self.status)
            .filter_map(|((vm, command), status)| {
                Some(ExecReport {
                    vm: vm.clone(),
                    command: command.clone()?,
                    status: *status,
                })
            })
            .collect()
    }

    fn physical_line(&mut self, line: &str) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !self.tagged {
            self.pending[0] = line.as_bytes().to_vec();
            self.complete(0);
            return;
        }
        // The longest name that tags this line (one name may prefix another).
        let Some((vm, rest, continued)) = self
            .vms
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| {
                let rest = line.strip_prefix(name.as_str())?;
                if let Some(r) = rest.strip_prefix(TAG) {
                    Some((i, r, false, name.len()))
                } else {
                    rest.strip_prefix(CONTINUED)
                        .map(|r| (i, r, true, name.len()))
                }
            })
            .max_by_key(|m| m.3)
            .map(|(i, r, c, _)| (i, r, c))
        else {
            return; // the hypervisor's own line
        };
        if !continued {
            self.complete(vm);
        }
        self.pending[vm].extend_from_slice(rest.as_bytes());
    }

    /// VM `vm`'s logical line is complete: look for the status in it.
    fn complete(&mut self, vm: usize) {
        let line = std::mem::take(&mut self.pending[vm]);
        let text = String::from_utf8_lossy(&line);
        if let Some(status) = text
            .trim_end()
            .strip_prefix(EXEC_EXIT_MARKER)
            .and_then(|s| s.trim().parse().ok())
        {
            self.status[vm] = Some(status);
        }
    }
}

/// `line` without ANSI escape sequences (the tags' colours).
fn strip_escapes(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(vms: &[(&str, Option<&str>)]) -> ExecWatch {
        let vms: Vec<(String, Option<String>)> = vms
            .iter()
            .map(|(n, c)| ((*n).to_owned(), c.map(str::to_owned)))
            .collect();
        ExecWatch {
            tagged: vms.len() > 1,
            line: Vec::new(),
            pending: vec![Vec::new(); vms.len()],
            status: vec![None; vms.len()],
            vms,
        }
    }

    #[test]
    fn a_single_vm_reports_on_an_untagged_line() {
        let mut w = watch(&[("linux", Some("true"))]);
        w.feed(b"booting\r\nSTRATUM-LINUX: exec start\r\nhello\r\nSTRATUM-LINUX: exec ex");
        w.feed(b"it 3\r\n[stratum] vm0 'linux' powered off\n");
        let r = w.finish();
        assert_eq!(
            r,
            [ExecReport {
                vm: "linux".into(),
                command: "true".into(),
                status: Some(3)
            }]
        );
        assert!(!r[0].succeeded());
        assert!(
            r[0].describe().contains("exited with status 3"),
            "{}",
            r[0].describe()
        );
    }

    #[test]
    fn tagged_lines_are_told_apart_and_cut_lines_joined() {
        let mut w = watch(&[("a", Some("x")), ("ab", Some("y")), ("c", None)]);
        w.feed(b"\x1b[36mab | \x1b[0mSTRATUM-LINUX: exec exit 1\n");
        // a's marker cut by c's output, then continued.
        w.feed(b"a | STRATUM-LINUX: exec exi\nc | noise\na + t 0\n");
        // c prints the marker text but runs no command: not reported.
        w.feed(b"c | STRATUM-LINUX: exec exit 9\n");
        let r = w.finish();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].vm.as_str(), r[0].status), ("a", Some(0)));
        assert_eq!((r[1].vm.as_str(), r[1].status), ("ab", Some(1)));
    }

    #[test]
    fn a_vm_that_never_reports_has_no_status() {
        let mut w = watch(&[("a", Some("sleep 100")), ("b", None)]);
        w.feed(b"a | STRATUM-LINUX: exec start\nb | hello\n");
        let r = w.finish();
        assert_eq!(r[0].status, None);
        assert!(r[0].describe().contains("reported no exit status"));
        // Garbage after the marker is not a status either.
        let mut w = watch(&[("a", Some("x"))]);
        w.feed(b"STRATUM-LINUX: exec exit lots\n");
        assert_eq!(w.finish()[0].status, None);
    }
}
