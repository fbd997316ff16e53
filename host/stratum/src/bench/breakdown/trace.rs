//! Reading QEMU's instruction trace (`-d exec,nochain -singlestep`): one
//! `Trace` line per executed instruction, and cutting out each sample's
//! window, pure and unit-tested.
//!
//! A line reads `Trace 0: 0x7f79… [0000000000000000/0000000040084654/00000061/ff020201]`:
//! the CPU index, the host code address, then the guest's `cs_base`, `pc`,
//! flags and cflags. QEMU logs a translation block when it starts it; a few
//! do not run after all, and [`Tracker`] drops them:
//!
//! - `cpu_io_recompile: rewound TB` follows a block rewound before it ran
//!   (an I/O access under `-icount`): the line before it is dropped;
//! - a block abandoned because the instruction budget ran out is logged
//!   again when it runs: a CPU's line with the same PC as its previous one
//!   is dropped.
//!
//! A window runs from a sample's first counter read up to (not including)
//! the instruction whose counter read ends the sample, on every CPU (QEMU
//! runs an `-icount` machine's CPUs in turns on one clock), so its length
//! is the sample ([`RowMarker`] says where each row's reads are).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// One logged line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A translation block (one instruction under `-singlestep`) started.
    Exec {
        /// QEMU's CPU index.
        cpu: u32,
        /// The guest-visible PC (virtual at EL2, intermediate-physical for
        /// a guest with its MMU off).
        pc: u64,
    },
    /// The previous block was rewound before it ran.
    Rewound,
    /// Anything else.
    Other,
}

/// Parses one log line.
pub fn parse_line(line: &[u8]) -> Event {
    if line.starts_with(b"cpu_io_recompile: rewound") {
        return Event::Rewound;
    }
    let Some(rest) = line.strip_prefix(b"Trace ") else {
        return Event::Other;
    };
    let Some(colon) = rest.iter().position(|&b| b == b':') else {
        return Event::Other;
    };
    let Some(cpu) = ascii_number(&rest[..colon], 10) else {
        return Event::Other;
    };
    let Some(open) = rest.iter().position(|&b| b == b'[') else {
        return Event::Other;
    };
    let fields = &rest[open + 1..];
    let mut parts = fields.split(|&b| b == b'/');
    let (Some(_cs_base), Some(pc)) = (parts.next(), parts.next()) else {
        return Event::Other;
    };
    match (u32::try_from(cpu), ascii_number(pc, 16)) {
        (Ok(cpu), Some(pc)) => Event::Exec { cpu, pc },
        _ => Event::Other,
    }
}

fn ascii_number(digits: &[u8], radix: u32) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(text, radix).ok()
}

/// How a row's sample ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// At the second counter read of the row's function on the same CPU
    /// (`isb; mrs` before and after the body).
    Sync,
    /// At the `nth` guest IRQ-vector counter read after the start, on any
    /// CPU; the sample starts `ahead` instructions after the row's first
    /// counter read (a timer armed that far ahead), or after the machine
    /// last idled, whichever comes later: while every CPU waits in `wfi`,
    /// `-icount sleep=off` moves the clock to the next deadline without
    /// executing anything.
    Latency {
        /// Instructions from the first counter read to the sample's start.
        ahead: u64,
        /// Which IRQ-vector counter read ends the sample (1: the first).
        nth: u32,
    },
}

/// Where one row's samples are in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowMarker {
    /// The operation (`op=` of the guest's `BENCH` line).
    pub id: &'static str,
    /// The row's function: entering it arms the start (empty for a row
    /// found by [`Self::marks`]).
    pub function: Range<u64>,
    /// Its counter reads (`mrs x, cntvct_el0`): the first one run after
    /// the entry starts a sample; for [`Kind::Sync`] the second ends it.
    pub counter_reads: HashSet<u64>,
    /// Counter reads that start a sample wherever they are (the guest's
    /// `.bench_marks`, for code inlined into its callers).
    pub marks: HashSet<u64>,
    /// How a sample ends.
    pub kind: Kind,
}

/// Everything the tracker needs to know about the two programs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Markers {
    /// The hypervisor's code: a PC in it is EL2.
    pub el2: Range<u64>,
    /// The hypervisor's `wfi` instructions (a CPU that ran one may sleep).
    pub halts: HashSet<u64>,
    /// The guest's IRQ-vector counter reads.
    pub vector_reads: HashSet<u64>,
    /// The rows.
    pub rows: Vec<RowMarker>,
}

impl Markers {
    /// The markers of a hypervisor running `offset` bytes (wrapping) from
    /// its link address: its code range and `wfi`s move, the guest's
    /// addresses do not.
    pub fn relocated(self, offset: u64) -> Self {
        Self {
            el2: self.el2.start.wrapping_add(offset)..self.el2.end.wrapping_add(offset),
            halts: self.halts.iter().map(|h| h.wrapping_add(offset)).collect(),
            ..self
        }
    }
}

/// One sample's instructions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Executions per EL2 PC.
    pub el2: HashMap<u64, u64>,
    /// EL2 instructions in all.
    pub el2_total: u64,
    /// Guest instructions.
    pub guest: u64,
    /// Exits that began inside the window (a CPU going from guest to EL2).
    pub exits: u32,
    /// Times the machine may have idled while the window counted (every CPU
    /// had last run a `wfi`): the clock may then have moved more than the
    /// instructions counted.
    pub idles: u32,
}

impl Window {
    /// Every instruction counted.
    pub fn total(&self) -> u64 {
        self.el2_total + self.guest
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct CpuState {
    last_pc: Option<u64>,
    last_el2: bool,
    halted: bool,
    /// The row function this CPU entered and how many of its counter reads
    /// it has run since.
    entered: Option<(usize, u32)>,
}

#[derive(Debug)]
struct Open {
    row: usize,
    cpu: u32,
    skip: u64,
    vectors: u32,
    window: Window,
}

/// What takes a log's events one by one, then its end: the breakdown's
/// [`Tracker`], the disk bench's tracker.
pub trait LogSink: Send + 'static {
    /// Takes one event (one line of the log).
    fn feed(&mut self, event: Event);
    /// The end of the log.
    fn finish(&mut self);
}

impl LogSink for Tracker {
    fn feed(&mut self, event: Event) {
        Tracker::feed(self, event);
    }

    fn finish(&mut self) {
        Tracker::finish(self);
    }
}

/// Feeds on the trace's events and collects every row's windows.
#[derive(Debug)]
pub struct Tracker {
    markers: Markers,
    cpus: Vec<CpuState>,
    pending: Option<(u32, u64)>,
    open: Option<Open>,
    /// Completed windows, in trace order, with their row index.
    pub windows: Vec<(usize, Window)>,
    /// Lines dropped as not executed.
    pub dropped: u64,
    /// Windows abandoned (a new one started first).
    pub abandoned: u32,
    /// Executed instructions seen.
    pub lines: u64,
}

impl Tracker {
    /// A tracker for `markers`.
    pub fn new(markers: Markers) -> Self {
        Self {
            markers,
            cpus: Vec::new(),
            pending: None,
            open: None,
            windows: Vec::new(),
            dropped: 0,
            abandoned: 0,
            lines: 0,
        }
    }

    /// The markers.
    pub fn markers(&self) -> &Markers {
        &self.markers
    }

    /// Takes one event (one line of the log).
    pub fn feed(&mut self, event: Event) {
        match event {
            Event::Exec { cpu, pc } => {
                if let Some((cpu, pc)) = self.pending.replace((cpu, pc)) {
                    self.executed(cpu, pc);
                }
            }
            Event::Rewound => {
                if self.pending.take().is_some() {
                    self.dropped += 1;
                }
            }
            Event::Other => {}
        }
    }

    /// The end of the log.
    pub fn finish(&mut self) {
        if let Some((cpu, pc)) = self.pending.take() {
            self.executed(cpu, pc);
        }
        if self.open.take().is_some() {
            self.abandoned += 1;
        }
    }

    fn executed(&mut self, cpu: u32, pc: u64) {
        let c = cpu as usize;
        if self.cpus.len() <= c {
            self.cpus.resize(c + 1, CpuState::default());
        }
        if self.cpus[c].last_pc == Some(pc) {
            // Logged before, abandoned at the budget's end, logged again.
            self.dropped += 1;
            return;
        }
        self.lines += 1;
        let idle_before = self.cpus.iter().all(|s| s.halted || s.last_pc.is_none());
        let el2 = self.markers.el2.contains(&pc);
        let new_exit = el2 && self.cpus[c].last_pc.is_some() && !self.cpus[c].last_el2;

        // Which row function this CPU is in, and whether this is one of its
        // counter reads.
        let row_here = self
            .markers
            .rows
            .iter()
            .position(|r| r.function.contains(&pc));
        let mut read_of_row = None;
        if let Some(r) = self.markers.rows.iter().position(|r| r.marks.contains(&pc)) {
            read_of_row = Some((r, 1));
        } else if let Some(r) = row_here {
            if pc == self.markers.rows[r].function.start {
                self.cpus[c].entered = Some((r, 0));
            }
            if self.markers.rows[r].counter_reads.contains(&pc)
                && let Some((er, n)) = self.cpus[c].entered
                && er == r
            {
                self.cpus[c].entered = Some((r, n + 1));
                read_of_row = Some((r, n + 1));
            }
        }

        // Does this instruction end the open window?
        let mut ends = false;
        if let Some(open) = &mut self.open {
            match self.markers.rows[open.row].kind {
                Kind::Sync => {
                    ends = open.cpu == cpu && read_of_row == Some((open.row, 2));
                }
                Kind::Latency { nth, .. } => {
                    if self.markers.vector_reads.contains(&pc) {
                        open.vectors += 1;
                        ends = open.vectors == nth;
                    }
                }
            }
        }
        if ends {
            let open = self.open.take().expect("checked");
            self.windows.push((open.row, open.window));
        } else if let Some(open) = &mut self.open {
            count(open, pc, el2, new_exit, idle_before);
        }

        // Does it start one?
        if let Some((r, 1)) = read_of_row {
            if self.open.take().is_some() {
                self.abandoned += 1;
            }
            let skip = match self.markers.rows[r].kind {
                Kind::Sync => 0,
                Kind::Latency { ahead, .. } => ahead,
            };
            let mut open = Open {
                row: r,
                cpu,
                skip,
                vectors: 0,
                window: Window::default(),
            };
            count(&mut open, pc, el2, false, false);
            self.open = Some(open);
        }

        let halts = self.markers.halts.contains(&pc);
        let state = &mut self.cpus[c];
        state.last_pc = Some(pc);
        state.last_el2 = el2;
        state.halted = halts;
    }
}

/// Counts one instruction into an open window (or into its lead-in).
fn count(open: &mut Open, pc: u64, el2: bool, new_exit: bool, idle_before: bool) {
    if open.skip > 0 {
        if idle_before {
            // The clock may have jumped to the deadline while every CPU
            // slept: the sample starts here.
            open.skip = 0;
        } else {
            open.skip -= 1;
            return;
        }
    } else if idle_before {
        open.window.idles += 1;
    }
    let w = &mut open.window;
    if el2 {
        *w.el2.entry(pc).or_insert(0) += 1;
        w.el2_total += 1;
        if new_exit {
            w.exits += 1;
        }
    } else {
        w.guest += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EL2: u64 = 0x4020_0000;
    const HALT: u64 = EL2 + 0x100;
    const VECTOR_READ: u64 = 0x4008_0a8c;
    const HVC_FN: u64 = 0x4008_4648;

    fn markers() -> Markers {
        Markers {
            el2: EL2..EL2 + 0x10000,
            halts: [HALT].into(),
            vector_reads: [VECTOR_READ].into(),
            rows: vec![
                RowMarker {
                    id: "hvc",
                    function: HVC_FN..HVC_FN + 0x28,
                    counter_reads: [HVC_FN + 0xc, HVC_FN + 0x18].into(),
                    marks: HashSet::new(),
                    kind: Kind::Sync,
                },
                RowMarker {
                    id: "vtimer",
                    function: 0x4008_5000..0x4008_5100,
                    counter_reads: [0x4008_5010, 0x4008_5080].into(),
                    marks: HashSet::new(),
                    kind: Kind::Latency { ahead: 5, nth: 1 },
                },
                RowMarker {
                    id: "ipi",
                    function: 0..0,
                    counter_reads: HashSet::new(),
                    marks: [0x4008_6000, 0x4008_7000].into(),
                    kind: Kind::Latency { ahead: 0, nth: 1 },
                },
            ],
        }
    }

    fn run(tracker: &mut Tracker, lines: &[(u32, u64)]) {
        for &(cpu, pc) in lines {
            tracker.feed(Event::Exec { cpu, pc });
        }
    }

    #[test]
    fn parses_qemu_lines() {
        assert_eq!(
            parse_line(
                b"Trace 1: 0x7f7904000100 [0000000000000000/0000000040084654/00000061/ff020201] "
            ),
            Event::Exec {
                cpu: 1,
                pc: 0x4008_4654
            }
        );
        assert_eq!(parse_line(b"cpu_io_recompile: rewound TB"), Event::Rewound);
        assert_eq!(parse_line(b"Linking TBs 0x1 to 0x2"), Event::Other);
        assert_eq!(parse_line(b"Trace x: 0x1 [0/zz/0/0]"), Event::Other);
        assert_eq!(parse_line(b"Trace 0: 0x1 [0/"), Event::Other);
    }

    #[test]
    fn a_sync_window_spans_the_two_counter_reads() {
        let mut t = Tracker::new(markers());
        run(
            &mut t,
            &[
                (0, HVC_FN),        // entry
                (0, HVC_FN + 4),    // isb
                (0, HVC_FN + 0xc),  // mrs t0: the window starts here
                (0, HVC_FN + 0x10), // hvc
                (0, EL2 + 0x880),   // the vector
                (0, EL2 + 0x884),
                (1, 0x4008_0000), // another CPU runs meanwhile: counted
                (0, EL2 + 0x888),
                (0, HVC_FN + 0x14), // isb
                (0, HVC_FN + 0x18), // mrs t1: ends it
                (0, HVC_FN + 0x1c),
            ],
        );
        t.finish();
        assert_eq!(t.windows.len(), 1);
        let (row, w) = &t.windows[0];
        assert_eq!(*row, 0);
        assert_eq!((w.el2_total, w.guest, w.exits, w.total()), (3, 4, 1, 7));
        assert_eq!(w.el2[&(EL2 + 0x884)], 1);
    }

    #[test]
    fn blocks_that_did_not_run_are_dropped() {
        let mut t = Tracker::new(markers());
        t.feed(Event::Exec { cpu: 0, pc: HVC_FN });
        t.feed(Event::Exec {
            cpu: 0,
            pc: HVC_FN + 0xc,
        });
        t.feed(Event::Exec {
            cpu: 0,
            pc: EL2 + 4,
        });
        t.feed(Event::Exec {
            cpu: 0,
            pc: EL2 + 8,
        });
        t.feed(Event::Rewound); // EL2 + 8 did not run
        t.feed(Event::Exec {
            cpu: 0,
            pc: EL2 + 8,
        }); // it runs now
        t.feed(Event::Exec { cpu: 1, pc: 0x100 });
        t.feed(Event::Exec {
            cpu: 0,
            pc: EL2 + 8,
        }); // the budget ran out: again
        t.feed(Event::Exec {
            cpu: 0,
            pc: EL2 + 12,
        });
        t.feed(Event::Exec {
            cpu: 0,
            pc: HVC_FN + 0x18,
        });
        t.finish();
        assert_eq!(t.dropped, 2);
        let w = &t.windows[0].1;
        assert_eq!((w.el2_total, w.guest), (3, 2));
    }

    #[test]
    fn a_latency_window_starts_at_the_deadline_or_after_an_idle() {
        // Spinning: the sample starts `ahead` (5) instructions after the
        // first counter read and ends at the vector's counter read.
        let mut t = Tracker::new(markers());
        let mut lines = vec![(0, 0x4008_5000), (0, 0x4008_5010)];
        lines.extend((0..6).map(|i| (0, 0x4008_5020 + 4 * (i % 2)))); // spin
        lines.extend([
            (0, EL2 + 0xa80),
            (0, EL2 + 0xa84),
            (0, 0x4008_0a80),
            (0, VECTOR_READ),
        ]);
        run(&mut t, &lines);
        t.finish();
        let w = &t.windows[0].1;
        // 1 + 6 + 4 lines before the read, 5 skipped: 2 spins and 3 more.
        assert_eq!((w.guest, w.el2_total, w.exits), (3, 2, 1));

        // In WFI: the machine idles before the deadline; counting starts at
        // the wake-up.
        let mut t = Tracker::new(markers());
        run(
            &mut t,
            &[
                (0, 0x4008_5000),
                (0, 0x4008_5010), // t0
                (0, 0x4008_5030), // wfi, trapped
                (0, EL2 + 0x880), // the WFI exit
                (0, HALT),        // the hypervisor idles: the clock jumps
                (0, EL2 + 0x280), // woken by the timer
                (0, EL2 + 0x284),
                (0, 0x4008_0a80),
                (0, VECTOR_READ),
            ],
        );
        t.finish();
        let w = &t.windows[0].1;
        assert_eq!((w.el2_total, w.guest, w.idles), (2, 1, 0));
    }

    #[test]
    fn a_marked_read_starts_a_sample_on_one_cpu_that_ends_on_another() {
        let mut t = Tracker::new(markers());
        run(
            &mut t,
            &[
                (0, 0x4008_5ffc),
                (0, 0x4008_7000), // a copy of the marked read: t0
                (0, 0x4008_7004),
                (0, EL2 + 0x880), // the SGI write traps
                (0, EL2 + 0x884),
                (0, HALT), // vCPU 0 idles, vCPU 1 has work
                (1, EL2 + 0x280),
                (1, EL2 + 0x284),
                (1, 0x4008_0a80),
                (1, VECTOR_READ), // vCPU 1's vector: the end
            ],
        );
        t.finish();
        assert_eq!(t.windows.len(), 1);
        let (row, w) = &t.windows[0];
        assert_eq!(*row, 2);
        assert_eq!((w.guest, w.el2_total, w.exits), (3, 5, 1));
        // The idle of vCPU 0 while vCPU 1 was still asleep is noted.
        assert_eq!(w.idles, 1);
    }

    #[test]
    fn a_window_left_open_is_abandoned() {
        let mut t = Tracker::new(markers());
        run(
            &mut t,
            &[
                (0, HVC_FN),
                (0, HVC_FN + 0xc),
                (0, HVC_FN),
                (0, HVC_FN + 0xc),
            ],
        );
        t.finish();
        assert!(t.windows.is_empty());
        assert_eq!(t.abandoned, 2);
    }
}
