//! The exit trace: collecting the hypervisor's per-CPU trace rings while
//! the system runs, binning the records over time, and drawing the timeline
//! as SVG (`stratum trace`, `stratum run --trace`).
//!
//! Collection polls the rings through QMP (every [`POLL_INTERVAL`]): it reads
//! the ring descriptors, the records written since the last poll, then the
//! descriptors again, and keeps only records the writer cannot have been
//! overwriting meanwhile (`stratum_abi::telemetry::readable_records`).
//! Records overwritten before a poll reached them are counted as lost. A
//! trace build of the hypervisor lingers 100 ms before it stops the machine,
//! so the last polls see the final records.
//!
//! The plot has one panel per vCPU that exited: time on the x axis, exits
//! per time bin on the y axis, stacked by reason family (hvc, mmio, irq, …),
//! so storms stand out as tall bars of one colour. Each panel lists its
//! most frequent reasons.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use stratum_abi::telemetry::{self as layout, Reason, TraceRecord, readable_records};

use crate::qmp::Qmp;
use crate::telemetry::{PhysMem, RingDesc, Snapshot, read_snapshot};
use crate::{Error, ErrorKind, Result};

/// How often the rings are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Time bins of the plot.
pub const DEFAULT_BINS: usize = 200;

/// Records collected from the rings.
#[derive(Clone, Debug, Default)]
pub struct Collector {
    /// The next record number to read, per ring.
    cursors: Vec<u64>,
    /// Records read so far (in ring order, per ring; not sorted).
    pub records: Vec<TraceRecord>,
    /// Records overwritten before they could be read.
    pub lost: u64,
}

impl Collector {
    /// A collector that starts with what is still in the rings (the first
    /// poll counts nothing older as lost: it was gone before we came).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads what the rings of the block at `block` (with `rings`
    /// descriptors) gained since the last poll; returns how many records.
    pub fn poll(&mut self, mem: &mut impl PhysMem, block: u64) -> Result<usize> {
        let before = read_rings(mem, block)?;
        if self.cursors.is_empty() {
            self.cursors = before
                .iter()
                .map(|r| r.head.saturating_sub(r.capacity - 1))
                .collect();
        }
        self.cursors.resize(before.len(), 0);
        let mut copied = Vec::with_capacity(before.len());
        for (ring, &from) in before.iter().zip(&self.cursors) {
            let start = from.max(ring.head.saturating_sub(ring.capacity));
            copied.push((start, read_records(mem, ring, start)?));
        }
        let after = read_rings(mem, block)?;
        let mut n = 0;
        for (i, (start, bytes)) in copied.into_iter().enumerate() {
            let (ring, head_after) = (before[i], after.get(i).map_or(before[i].head, |r| r.head));
            let keep = readable_records(self.cursors[i], ring.head, head_after, ring.capacity);
            self.lost += keep.start - self.cursors[i];
            for number in keep.clone() {
                let at = ((number - start) as usize) * layout::RECORD_SIZE;
                if let Some(r) = bytes.get(at..).and_then(TraceRecord::decode) {
                    self.records.push(r);
                    n += 1;
                }
            }
            self.cursors[i] = keep.end;
        }
        Ok(n)
    }
}

/// The ring descriptors of the block at `block` (all slots, in order).
fn read_rings(mem: &mut impl PhysMem, block: u64) -> Result<Vec<RingDesc>> {
    let len = (layout::RING_SLOTS * layout::RING_DESC_SIZE) as u64;
    let bytes = mem.read(block + layout::RING_OFFSET as u64, len)?;
    Ok(bytes
        .chunks_exact(layout::RING_DESC_SIZE)
        .map(|d| {
            let u64_at = |at| stratum_abi::bytes::le_u64(d, at).unwrap_or(0);
            let capacity = stratum_abi::bytes::le_u32(d, layout::RING_CAPACITY).unwrap_or(0);
            RingDesc {
                records: u64_at(layout::RING_RECORDS),
                capacity: u64::from(capacity).max(1),
                head: if capacity == 0 {
                    0
                } else {
                    u64_at(layout::RING_HEAD)
                },
            }
        })
        .collect())
}

/// The bytes of records `start..ring.head` (at most one capacity's worth),
/// in record order.
fn read_records(mem: &mut impl PhysMem, ring: &RingDesc, start: u64) -> Result<Vec<u8>> {
    if ring.records == 0 || start >= ring.head {
        return Ok(Vec::new());
    }
    let size = layout::RECORD_SIZE as u64;
    let first = start % ring.capacity;
    let count = ring.head - start;
    let until_end = (ring.capacity - first).min(count);
    let mut bytes = mem.read(ring.records + first * size, until_end * size)?;
    if count > until_end {
        bytes.extend(mem.read(ring.records, (count - until_end) * size)?);
    }
    Ok(bytes)
}

/// What a trace run produced.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The records, sorted by time.
    pub records: Vec<TraceRecord>,
    /// Records lost (overwritten before a poll read them).
    pub lost: u64,
    /// Timestamp frequency.
    pub counter_hz: u64,
    /// VM names by index.
    pub vm_names: BTreeMap<u8, String>,
}

/// Collects the trace of the QEMU behind `socket` until `done()` says stop
/// or QEMU goes away. Fails if the hypervisor has no trace rings.
pub fn collect(socket: &Path, done: &dyn Fn() -> bool) -> Result<Trace> {
    let mut qmp = Qmp::connect(socket)?;
    let snapshot = read_snapshot(&mut qmp)?;
    if !snapshot.trace {
        return Err(Error::input(
            "this hypervisor was built without the `trace` feature; run the system with \
             `stratum run --trace OUT.svg` (or a hypervisor built with `--features trace`)",
        ));
    }
    let mut collector = Collector::new();
    let mut last = snapshot;
    loop {
        if collector.poll(&mut qmp, last.address).is_err() {
            break; // QEMU exited: keep what we have.
        }
        if done() {
            break;
        }
        if let Ok(s) = read_snapshot(&mut qmp) {
            last = s;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(finish(collector, &last))
}

impl Trace {
    /// A plot title naming the VMs.
    pub fn title(&self) -> String {
        let names: Vec<&str> = self.vm_names.values().map(String::as_str).collect();
        if names.is_empty() {
            "Stratum exit trace".to_owned()
        } else {
            format!("Stratum exit trace: {}", names.join(", "))
        }
    }
}

/// Sorts the records and names the VMs.
pub fn finish(collector: Collector, snapshot: &Snapshot) -> Trace {
    let mut records = collector.records;
    records.sort_by_key(|r| (r.time, r.vm, r.vcpu));
    Trace {
        records,
        lost: collector.lost,
        counter_hz: snapshot.counter_hz,
        vm_names: snapshot
            .vms
            .iter()
            .filter_map(|vm| Some((u8::try_from(vm.id).ok()?, vm.name.clone())))
            .collect(),
    }
}

/// Connects to the run of `stratum` process `pid` (or the only one) and
/// collects for `seconds` (or until it ends).
pub fn attach(pid: Option<u32>, seconds: Option<f64>) -> Result<Trace> {
    let socket = crate::qmp::find_socket(pid)?;
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs_f64(s));
    collect(&socket, &|| deadline.is_some_and(|d| Instant::now() >= d))
}

/// The reason families in plot order, with their colours.
const FAMILIES: &[(&str, &str)] = &[
    ("hvc", "#4e79a7"),
    ("smc", "#76b7b2"),
    ("mmio", "#f28e2b"),
    ("sysreg", "#b07aa1"),
    ("wfx", "#59a14f"),
    ("irq", "#e15759"),
    ("abort", "#9c755f"),
    ("undef", "#bab0ac"),
    ("serror", "#000000"),
    ("fp", "#edc948"),
];

/// One vCPU's exits over time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lane {
    /// VM index.
    pub vm: u8,
    /// vCPU index.
    pub vcpu: u8,
    /// Counts per bin, per family (in [`FAMILIES`] order).
    pub bins: Vec<[u64; FAMILIES.len()]>,
    /// Records per reason.
    pub reasons: BTreeMap<Reason, u64>,
}

/// Exits binned over time, per vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// Timestamp of the first record.
    pub start: u64,
    /// Counter ticks per bin (at least 1).
    pub bin_ticks: u64,
    /// One lane per vCPU that has records, by (VM, vCPU).
    pub lanes: Vec<Lane>,
}

/// Bins `records` (any order) into `bins` equal time bins per vCPU.
/// Records of unknown reasons are skipped.
pub fn bin(records: &[TraceRecord], bins: usize) -> Timeline {
    let bins = bins.max(1);
    let start = records.iter().map(|r| r.time).min().unwrap_or(0);
    let end = records.iter().map(|r| r.time).max().unwrap_or(0);
    let bin_ticks = ((end - start) / bins as u64 + 1).max(1);
    let mut lanes: BTreeMap<(u8, u8), Lane> = BTreeMap::new();
    for r in records {
        let Some(reason) = r.reason() else { continue };
        let family = FAMILIES
            .iter()
            .position(|(f, _)| *f == reason.family())
            .unwrap_or(FAMILIES.len() - 1);
        let lane = lanes.entry((r.vm, r.vcpu)).or_insert_with(|| Lane {
            vm: r.vm,
            vcpu: r.vcpu,
            bins: vec![[0; FAMILIES.len()]; bins],
            reasons: BTreeMap::new(),
        });
        let b = (((r.time - start) / bin_ticks) as usize).min(bins - 1);
        if reason.is_exit() {
            lane.bins[b][family] += 1;
        }
        *lane.reasons.entry(reason).or_default() += 1;
    }
    Timeline {
        start,
        bin_ticks,
        lanes: lanes.into_values().collect(),
    }
}

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const PANEL: f64 = 150.0;
const GAP: f64 = 40.0;
const TOP: f64 = 60.0;

/// The timeline of `trace` as an SVG document, titled `title`.
pub fn svg(trace: &Trace, bins: usize, title: &str) -> String {
    let timeline = bin(&trace.records, bins);
    let hz = trace.counter_hz.max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let lanes = timeline.lanes.len().max(1);
    let height = TOP + lanes as f64 * (PANEL + GAP) + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>\n\
         <text x=\"{LEFT}\" y=\"40\">{} exits traced ({} lost), {} bins of {:.3} ms; \
         exits per bin, stacked by reason family</text>",
        escape(title),
        trace.records.len(),
        trace.lost,
        bins.max(1),
        timeline.bin_ticks as f64 / hz * 1e3,
    );
    if timeline.lanes.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"{LEFT}\" y=\"{}\">no exits recorded</text>",
            TOP + 20.0
        );
    }
    let span = timeline.bin_ticks as f64 * bins.max(1) as f64 / hz;
    for (i, lane) in timeline.lanes.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL + GAP);
        let name = trace
            .vm_names
            .get(&lane.vm)
            .map_or_else(String::new, |n| format!(" '{}'", escape(n)));
        let total: u64 = lane
            .reasons
            .iter()
            .filter(|(r, _)| r.is_exit())
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(
            s,
            "<text x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">vm{}{name} vcpu{}: {total} exits</text>",
            y0 - 6.0,
            lane.vm,
            lane.vcpu
        );
        let peak = lane
            .bins
            .iter()
            .map(|b| b.iter().sum::<u64>())
            .max()
            .unwrap_or(0)
            .max(1);
        let bw = plot_w / lane.bins.len() as f64;
        let y = |v: u64| y0 + PANEL - PANEL * v as f64 / peak as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{LEFT}\" y=\"{y0}\" width=\"{plot_w}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#888\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{peak}</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">0</text>",
            LEFT - 4.0,
            y0 + 10.0,
            LEFT - 4.0,
            y0 + PANEL,
        );
        // One stacked step area per family present.
        let mut below = vec![0u64; lane.bins.len()];
        for (f, (_, colour)) in FAMILIES.iter().enumerate() {
            if lane.bins.iter().all(|b| b[f] == 0) {
                continue;
            }
            let above: Vec<u64> = lane
                .bins
                .iter()
                .zip(&below)
                .map(|(b, l)| l + b[f])
                .collect();
            let mut d = String::new();
            for (k, top) in above.iter().enumerate() {
                let x = LEFT + k as f64 * bw;
                let cmd = if k == 0 { 'M' } else { 'L' };
                let _ = write!(d, "{cmd}{x:.1},{:.1}L{:.1},{:.1}", y(*top), x + bw, y(*top));
            }
            for (k, bottom) in below.iter().enumerate().rev() {
                let x = LEFT + k as f64 * bw;
                let _ = write!(
                    d,
                    "L{:.1},{:.1}L{x:.1},{:.1}",
                    x + bw,
                    y(*bottom),
                    y(*bottom)
                );
            }
            let _ = writeln!(s, "<path d=\"{d}Z\" fill=\"{colour}\"/>");
            below = above;
        }
        // Time axis.
        for t in 0..=5 {
            let x = LEFT + plot_w * f64::from(t) / 5.0;
            let _ = writeln!(
                s,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.3} s</text>",
                y0 + PANEL + 13.0,
                span * f64::from(t) / 5.0
            );
        }
        // Top reasons.
        let mut top: Vec<(&Reason, &u64)> = lane.reasons.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let lx = LEFT + plot_w + 12.0;
        for (k, (reason, n)) in top.iter().take(9).enumerate() {
            let colour = FAMILIES
                .iter()
                .find(|(f, _)| *f == reason.family())
                .map_or("#000", |(_, c)| c);
            let ly = y0 + 12.0 + k as f64 * 15.0;
            let _ = writeln!(
                s,
                "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\" fill=\"{colour}\"/>\
                 <text x=\"{:.1}\" y=\"{ly:.1}\">{} {n}</text>",
                ly - 8.0,
                lx + 13.0,
                escape(reason.name().trim())
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `trace` as an SVG timeline to `path` and says so on stderr.
pub fn write_svg(trace: &Trace, path: &Path) -> Result<()> {
    std::fs::write(path, svg(trace, DEFAULT_BINS, &trace.title())).map_err(|e| {
        Error::new(
            ErrorKind::Environment,
            anyhow::anyhow!("cannot write {}: {e}", path.display()),
        )
    })?;
    eprintln!(
        "stratum: trace: {} exits ({} lost) plotted to {}",
        trace.records.len(),
        trace.lost,
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::tests::{block, machine};

    fn rec(time: u64, vcpu: u8, reason: Reason) -> TraceRecord {
        TraceRecord {
            time,
            vm: 0,
            vcpu,
            reason: reason as u8,
            detail: 0,
        }
    }

    const RINGS_AT: u64 = 0x4100_0000;
    const BLOCK_AT: u64 = 0x4021_0000;

    /// A ring of capacity 8 whose record `n` has time `1000 + n`.
    fn ring_bytes(head: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; 8 * layout::RECORD_SIZE];
        for n in head.saturating_sub(8)..head {
            let at = (n % 8) as usize * layout::RECORD_SIZE;
            let r = rec(1000 + n, 1, Reason::Wfi);
            bytes[at..at + layout::RECORD_SIZE].copy_from_slice(&r.encode());
        }
        bytes
    }

    fn with_head(head: u64) -> crate::telemetry::tests::FakeMem {
        let mut mem = machine(block(Some((RINGS_AT, head))));
        mem.0.push((RINGS_AT, ring_bytes(head)));
        mem
    }

    #[test]
    fn polling_reads_new_records_once_and_counts_losses() {
        let mut c = Collector::new();
        assert_eq!(c.poll(&mut with_head(5), BLOCK_AT).expect("polls"), 5);
        let times: Vec<u64> = c.records.iter().map(|r| r.time).collect();
        assert_eq!(times, [1000, 1001, 1002, 1003, 1004]);
        // Nothing new.
        assert_eq!(c.poll(&mut with_head(5), BLOCK_AT).expect("polls"), 0);
        // Three new, wrapping around the end of the ring.
        assert_eq!(c.poll(&mut with_head(8), BLOCK_AT).expect("polls"), 3);
        assert_eq!(c.poll(&mut with_head(10), BLOCK_AT).expect("polls"), 2);
        let times: Vec<u64> = c.records.iter().map(|r| r.time).collect();
        assert_eq!(times, (1000..1010).collect::<Vec<_>>());
        assert_eq!(c.lost, 0);
        // The writer lapped us: 20 written since, only the last 7 trusted.
        assert_eq!(c.poll(&mut with_head(30), BLOCK_AT).expect("polls"), 7);
        assert_eq!(c.lost, 13);
        assert_eq!(c.records.last().map(|r| r.time), Some(1029));
        assert!(c.records.iter().all(|r| r.vcpu == 1));

        // Attaching late: what is still intact, and nothing counted as lost.
        let mut late = Collector::new();
        assert_eq!(late.poll(&mut with_head(30), BLOCK_AT).expect("polls"), 7);
        assert_eq!(late.lost, 0);
        assert_eq!(late.records.first().map(|r| r.time), Some(1023));
    }

    #[test]
    fn binning_per_vcpu_and_family() {
        let records = [
            rec(100, 0, Reason::HvcPsciVersion),
            rec(105, 0, Reason::MmioUartWrite),
            rec(109, 0, Reason::MmioUartWrite),
            rec(150, 1, Reason::IrqVtimer),
            rec(199, 1, Reason::Wfi),
            rec(199, 1, Reason::MmioDecoded),
            TraceRecord {
                reason: 250,
                ..rec(120, 0, Reason::Wfi)
            },
        ];
        let t = bin(&records, 10);
        assert_eq!((t.start, t.bin_ticks), (100, 10));
        assert_eq!(t.lanes.len(), 2);
        let (l0, l1) = (&t.lanes[0], &t.lanes[1]);
        assert_eq!((l0.vcpu, l1.vcpu), (0, 1));
        let family = |name| {
            FAMILIES
                .iter()
                .position(|(f, _)| *f == name)
                .expect("family")
        };
        assert_eq!(l0.bins[0][family("hvc")], 1);
        assert_eq!(l0.bins[0][family("mmio")], 2);
        assert_eq!(l1.bins[5][family("irq")], 1);
        // The last record lands in the last bin; notes are not stacked.
        assert_eq!(l1.bins[9][family("wfx")], 1);
        assert_eq!(l1.bins[9][family("mmio")], 0);
        assert_eq!(l1.reasons.get(&Reason::MmioDecoded), Some(&1));
        assert_eq!(l0.reasons.values().sum::<u64>(), 3, "unknown codes skipped");
        let total: u64 = t.lanes.iter().flat_map(|l| &l.bins).flatten().sum();
        assert_eq!(total, 5);
        assert_eq!(bin(&[], 10).lanes, []);
    }

    #[test]
    fn svg_has_a_panel_per_vcpu() {
        let mut records: Vec<TraceRecord> = (0..100)
            .map(|i| rec(i * 1000, 0, Reason::MmioUartWrite))
            .collect();
        records.push(rec(50_000, 1, Reason::IrqVtimer));
        let trace = Trace {
            records,
            lost: 2,
            counter_hz: 1_000_000,
            vm_names: [(0, "a<b".to_owned())].into(),
        };
        let doc = svg(&trace, 50, "boot & run");
        assert!(doc.starts_with("<svg ") && doc.ends_with("</svg>\n"));
        assert!(doc.contains("boot &amp; run"));
        assert!(doc.contains("101 exits traced (2 lost)"), "{doc}");
        assert!(doc.contains("vm0 'a&lt;b' vcpu0: 100 exits"));
        assert!(doc.contains("vm0 'a&lt;b' vcpu1: 1 exits"));
        assert!(doc.contains("mmio UART write 100"));
        assert_eq!(doc.matches("<path ").count(), 2, "one family per panel");
        assert!(doc.contains("0.099 s") || doc.contains("0.100 s"), "{doc}");
        // Tags balance.
        assert_eq!(doc.matches("<text").count(), doc.matches("</text>").count());
        let empty = svg(
            &Trace {
                records: Vec::new(),
                lost: 0,
                counter_hz: 0,
                vm_names: BTreeMap::new(),
            },
            10,
            "x",
        );
        assert!(empty.contains("no exits recorded"));
        assert_eq!(trace.title(), "Stratum exit trace: a<b");
    }
}
