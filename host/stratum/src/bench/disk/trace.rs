//! The disk tests' instructions by CPU and exception level, counted in
//! QEMU's instruction log: the traced disk runs.
//!
//! The runs repeat the disk tests (fewer requests) with the log switched on
//! where the first window opens: QEMU starts stopped with its gdbstub
//! listening, a breakpoint waits on the program's
//! `stratum_disk_window_begin` (its address from the timed run's
//! `DISK-ENV` line: the program is linked at a fixed address, and
//! `norandmaps` keeps its layout), and at the hit the monitor turns on one
//! instruction per block (`singlestep on`) and the log (`log exec,nochain`)
//! ([`super::super::breakdown::gdb`]). The boot before runs at nearly full
//! speed: with `-d nochain` from the start (20 % slower) but one block at a
//! time, not one instruction. `nochain` from the start matters: a block
//! translated before the hit and chained to another would run on, several
//! instructions at a time and unlogged, for as long as the chain held;
//! without chains every block goes through the lookup, which from the hit
//! on finds only blocks of one instruction (the flags differ).
//!
//! [`DiskTracker`] reads the log (the breakdown's [`parse_line`], with its
//! rules for lines that did not run): a window opens at the begin mark's
//! first instruction and closes at the end mark's, on the CPU that ran the
//! begin mark (the frontend's one vCPU). Everything in between is counted
//! on every CPU (QEMU runs an `-icount` machine's CPUs in turns): a PC in
//! the hypervisor's code is EL2, any other the guest's, and a CPU going
//! from a guest PC to an EL2 PC is an exit. Under Stratum the frontend is
//! pinned on CPU 0 and the service VM alone on CPU 1, so the CPU says whose
//! it is; on bare QEMU everything is the guest's.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use object::{Object as _, ObjectSection as _};

use super::super::breakdown::gdb;
use super::super::breakdown::trace::{Event, LogSink};
use super::super::breakdown::{end_log, free_port, make_fifo, read_log};
use crate::config::Config;
use crate::run::{RunOptions, run};
use crate::{Error, ErrorKind, Result};

/// CPUs counted apart: under Stratum CPU 0 runs the frontend, CPU 1 the
/// service VM.
pub const CPUS: usize = 2;

/// One window's instructions, by CPU (QEMU's CPU index).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Instructions at guest PCs (EL1 and EL0).
    pub guest: [u64; CPUS],
    /// Instructions at the hypervisor's PCs.
    pub el2: [u64; CPUS],
    /// Exits: a CPU going from a guest PC to an EL2 PC.
    pub exits: [u64; CPUS],
}

impl Counted {
    /// Every instruction counted.
    pub fn total(&self) -> u64 {
        self.guest.iter().chain(&self.el2).sum()
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    last_pc: Option<u64>,
    last_el2: bool,
}

/// Feeds on the log's events and counts each window.
#[derive(Debug)]
pub struct DiskTracker {
    el2: Range<u64>,
    begin: u64,
    end: u64,
    cpus: Vec<Cpu>,
    pending: Option<(u32, u64)>,
    /// The open window: the CPU that opened it and its counts.
    open: Option<(u32, Counted)>,
    /// The closed windows, in order.
    pub windows: Vec<Counted>,
    /// Instructions on CPUs beyond [`CPUS`] (none expected).
    pub stray: u64,
}

impl DiskTracker {
    /// A tracker for the hypervisor's code `el2` (empty on bare QEMU) and
    /// the program's marks.
    pub fn new(el2: Range<u64>, begin: u64, end: u64) -> Self {
        Self {
            el2,
            begin,
            end,
            cpus: Vec::new(),
            pending: None,
            open: None,
            windows: Vec::new(),
            stray: 0,
        }
    }

    /// Takes one event (one line of the log).
    pub fn feed(&mut self, event: Event) {
        match event {
            Event::Exec { cpu, pc } => {
                if let Some((cpu, pc)) = self.pending.replace((cpu, pc)) {
                    self.executed(cpu, pc);
                }
            }
            // The block logged last did not run.
            Event::Rewound => self.pending = None,
            Event::Other => {}
        }
    }

    /// The end of the log (an open window is dropped).
    pub fn finish(&mut self) {
        if let Some((cpu, pc)) = self.pending.take() {
            self.executed(cpu, pc);
        }
        self.open = None;
    }

    fn executed(&mut self, cpu: u32, pc: u64) {
        let c = cpu as usize;
        if self.cpus.len() <= c {
            self.cpus.resize(c + 1, Cpu::default());
        }
        let state = self.cpus[c];
        if state.last_pc == Some(pc) {
            // Logged, abandoned at the end of the instruction budget,
            // logged again when it ran.
            return;
        }
        let el2 = self.el2.contains(&pc);
        let exit = el2 && state.last_pc.is_some() && !state.last_el2;
        self.cpus[c] = Cpu {
            last_pc: Some(pc),
            last_el2: el2,
        };
        if let Some((opener, _)) = self.open
            && opener == cpu
            && pc == self.end
        {
            let (_, counted) = self.open.take().expect("checked");
            self.windows.push(counted);
            return;
        }
        if self.open.is_none() && pc == self.begin {
            self.open = Some((cpu, Counted::default()));
        }
        let Some((_, counted)) = &mut self.open else {
            return;
        };
        if c >= CPUS {
            self.stray += 1;
        } else if el2 {
            counted.el2[c] += 1;
            counted.exits[c] += u64::from(exit);
        } else {
            counted.guest[c] += 1;
        }
    }
}

impl LogSink for DiskTracker {
    fn feed(&mut self, event: Event) {
        DiskTracker::feed(self, event);
    }

    fn finish(&mut self) {
        DiskTracker::finish(self);
    }
}

/// The hypervisor's code addresses in its ELF `elf` (the text sections'
/// span), moved by `offset` (runtime − link, wrapping; 0 on `virt`).
pub fn el2_code(elf: &[u8], offset: u64) -> Result<Range<u64>> {
    let file = object::File::parse(elf).map_err(|e| {
        Error::new(
            ErrorKind::Hypervisor,
            anyhow::anyhow!("the hypervisor ELF: {e}"),
        )
    })?;
    let (mut lo, mut hi) = (u64::MAX, 0);
    for s in file.sections() {
        if s.kind() == object::SectionKind::Text && s.size() > 0 {
            lo = lo.min(s.address());
            hi = hi.max(s.address() + s.size());
        }
    }
    if lo >= hi {
        return Err(Error::new(
            ErrorKind::Hypervisor,
            anyhow::anyhow!("the hypervisor ELF has no code"),
        ));
    }
    Ok(lo.wrapping_add(offset)..hi.wrapping_add(offset))
}

/// What a traced run runs.
pub enum Machine<'a> {
    /// A system under the hypervisor `hypervisor`.
    Stratum {
        /// The system.
        config: Box<Config>,
        /// The hypervisor `Image` (or ELF).
        hypervisor: &'a Path,
    },
    /// A bare QEMU command line.
    Bare(Vec<std::ffi::OsString>),
}

/// Runs `machine` with the log on from the first call of the begin mark;
/// returns the windows counted and the console.
pub fn traced_run(
    machine: Machine<'_>,
    tracker: DiskTracker,
    scratch: &Path,
    timeout: Duration,
) -> Result<(DiskTracker, String)> {
    let fifo = scratch.join("disk-trace.fifo");
    make_fifo(&fifo)?;
    let port = free_port()?;
    let begin = tracker.begin;
    let reader = read_log(fifo.clone(), tracker);
    let give_up = Arc::new(AtomicBool::new(false));
    let gdb = {
        let give_up = Arc::clone(&give_up);
        thread::spawn(move || {
            gdb::at_breakpoint(
                port,
                &[begin],
                &["singlestep on", "log exec,nochain"],
                timeout,
                &give_up,
            )
        })
    };
    let extra: Vec<std::ffi::OsString> = [
        "-d".to_owned(),
        "nochain".to_owned(),
        "-S".to_owned(),
        "-gdb".to_owned(),
        format!("tcp:127.0.0.1:{port}"),
        "-D".to_owned(),
        fifo.display().to_string(),
    ]
    .map(Into::into)
    .to_vec();
    let outcome: Result<(String, bool)> = match machine {
        Machine::Stratum { config, hypervisor } => run(&RunOptions {
            hypervisor: Some(hypervisor.to_path_buf()),
            deterministic: true,
            timeout: Some(timeout),
            capture: true,
            echo: false,
            qemu_args: extra,
            ..RunOptions::new(*config)
        })
        .map(|o| {
            let ok = o.exit_code == crate::exit_code::SUCCESS;
            (o.console.unwrap_or_default(), ok)
        }),
        Machine::Bare(mut argv) => {
            argv.extend(extra);
            super::wall::capture(&argv, timeout, false).map(|(text, ok, _)| (text, ok))
        }
    };
    let ended = end_log(&give_up, reader, gdb, &fifo)?;
    let (console, ok) = outcome?;
    if !ok {
        return Err(Error::new(
            ErrorKind::Hypervisor,
            anyhow::anyhow!(
                "the traced disk run ended badly\n{}",
                super::super::tail(&console)
            ),
        ));
    }
    Ok((ended.sink()?, console))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(cpu: u32, pc: u64) -> Event {
        Event::Exec { cpu, pc }
    }

    #[test]
    fn windows_count_every_cpu_by_exception_level() {
        // EL2 code at 0x4000_0000..0x4010_0000; marks at 0x1000 and 0x2000.
        let mut t = DiskTracker::new(0x4000_0000..0x4010_0000, 0x1000, 0x2000);
        for e in [
            exec(0, 0x500),       // before the window: not counted
            exec(1, 0x4000_0010), // CPU 1 idles at EL2
            exec(0, 0x1000),      // opens (counted)
            exec(0, 0x1004),      // guest
            exec(0, 0x4000_0000), // CPU 0 exits
            exec(0, 0x4000_0004), // EL2
            exec(0, 0x4000_0004), // logged twice: dropped
            exec(1, 0x7000),      // the service VM runs
            exec(1, 0x4000_0100), // and exits
            exec(0, 0x1008),      // back in the guest
            exec(0, 0x9999),      // rewound below: did not run
            Event::Rewound,
            exec(1, 0x2000), // the end mark on another CPU: not the end
            exec(0, 0x2000), // closes
            exec(0, 0x2004), // after: not counted
        ] {
            t.feed(e);
        }
        t.finish();
        assert_eq!(
            t.windows,
            [Counted {
                guest: [3, 2],
                el2: [2, 1],
                exits: [1, 1],
            }]
        );
        assert_eq!(t.windows[0].total(), 8);
    }

    #[test]
    fn several_windows_and_an_unfinished_one() {
        let mut t = DiskTracker::new(0..0, 0x10, 0x20);
        for e in [
            exec(0, 0x10),
            exec(0, 0x14),
            exec(0, 0x20),
            exec(0, 0x10),
            exec(0, 0x20),
            exec(0, 0x10),
            exec(0, 0x18),
        ] {
            t.feed(e);
        }
        t.finish();
        assert_eq!(t.windows.len(), 2, "the third never closed");
        assert_eq!(t.windows[0].guest, [2, 0]);
        assert_eq!(t.windows[1].guest, [1, 0]);
        assert_eq!(t.windows[1].exits, [0, 0], "no hypervisor on bare QEMU");
    }

    #[test]
    fn the_hypervisor_code_needs_an_elf_with_text() {
        // Segments but no sections: no code to name.
        let elf = crate::testutil::ElfBuilder::new(0x4020_0000)
            .segment(0x4020_0000, &[0; 16], 16)
            .build();
        let e = el2_code(&elf, 0).expect_err("no text section");
        assert!(format!("{e:#}").contains("no code"), "{e:#}");
        assert!(el2_code(b"not an elf", 0).is_err());
    }
}
