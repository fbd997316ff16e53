//! What the commands of `--exec` (and `exec = "…"` in a config) did: the
//! console is read as it streams, each VM's lines put back together
//! ([`crate::demux`]), and the Debian init's `STRATUM-LINUX: exec exit
//! <status>` line gives each command's status.

use crate::config::Config;
use crate::demux::{Demux, LineJoiner};
use crate::linux::initramfs::EXEC_EXIT_MARKER;

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
    /// Each VM's name and command, if it has one (by VM index).
    commands: Vec<(String, Option<String>)>,
    demux: Demux,
    lines: LineJoiner,
    /// Each VM's reported status.
    status: Vec<Option<i32>>,
}

impl ExecWatch {
    /// A watch for `config`'s VMs, or `None` when no VM execs a command.
    pub fn new(config: &Config) -> Option<Self> {
        config.vms.iter().any(|v| v.exec.is_some()).then(|| {
            Self::for_vms(
                config
                    .vms
                    .iter()
                    .map(|v| (v.name.clone(), v.exec.clone()))
                    .collect(),
            )
        })
    }

    /// A watch for VMs `(name, command)`.
    fn for_vms(commands: Vec<(String, Option<String>)>) -> Self {
        Self {
            demux: Demux::new(commands.iter().map(|(n, _)| n.clone()).collect()),
            lines: LineJoiner::new(commands.len()),
            status: vec![None; commands.len()],
            commands,
        }
    }

    /// Takes the next console bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        let Self {
            demux,
            lines,
            status,
            ..
        } = self;
        demux.feed(bytes, &mut |p| {
            lines.take(&p, &mut |vm, l| record(status, vm, l));
        });
    }

    /// The reports of the VMs that exec a command, once the output ended.
    pub fn finish(mut self) -> Vec<ExecReport> {
        let Self {
            demux,
            lines,
            status,
            ..
        } = &mut self;
        demux.finish(&mut |p| lines.take(&p, &mut |vm, l| record(status, vm, l)));
        lines.finish(&mut |vm, l| record(status, vm, l));
        self.commands
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
}

/// VM `vm`'s whole line `line`: its status, if it is the init's report.
fn record(status: &mut [Option<i32>], vm: usize, line: &str) {
    if let Some(s) = line
        .trim_end()
        .strip_prefix(EXEC_EXIT_MARKER)
        .and_then(|s| s.trim().parse().ok())
        && let Some(slot) = status.get_mut(vm)
    {
        *slot = Some(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(vms: &[(&str, Option<&str>)]) -> ExecWatch {
        ExecWatch::for_vms(
            vms.iter()
                .map(|(n, c)| ((*n).to_owned(), c.map(str::to_owned)))
                .collect(),
        )
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
