//! The bench results as a table, as JSON and as an SVG bar chart; pure
//! functions of a [`Report`], unit-tested. (The Linux workload's rows are
//! rendered by [`super::workload`], with [`align`] and [`json_str`].)
//!
//! The reference figures and targets are issue 6's (median instructions,
//! measured with the same method on the same emulated platform); they are
//! inputs to compare against, not results.

use std::fmt::Write as _;

use super::breakdown::{self, Breakdown};
use super::parse::Stats;
use super::workload::{self, LinuxWorkload};

/// A reference figure: one value, or a range (Xen's WFI latency depends on
/// its scheduler's idle path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// One median.
    One(u64),
    /// A range of medians.
    Range(u64, u64),
}

impl Figure {
    fn text(self) -> String {
        match self {
            Self::One(v) => v.to_string(),
            Self::Range(a, b) => format!("{a}–{b}"),
        }
    }

    /// The value a bar shows (the range's upper end).
    fn bar(self) -> u64 {
        match self {
            Self::One(v) | Self::Range(_, v) => v,
        }
    }

    fn json(self) -> String {
        match self {
            Self::One(v) => v.to_string(),
            Self::Range(a, b) => format!("[{a}, {b}]"),
        }
    }
}

/// What is known about an operation before measuring it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The guest's name for it (`op=`).
    pub id: &'static str,
    /// What it is, for people.
    pub label: &'static str,
    /// Issue 6's target for Stratum's median, if it has one.
    pub target: Option<u64>,
    /// Xen 4.17, KVM nVHE, KVM VHE.
    pub reference: Option<[Figure; 3]>,
}

/// Names of the reference columns, in [`Operation::reference`] order.
pub const REFERENCE_NAMES: [&str; 3] = ["Xen 4.17", "KVM nVHE", "KVM VHE"];
const REFERENCE_KEYS: [&str; 3] = ["xen_4_17", "kvm_nvhe", "kvm_vhe"];

/// Every operation the bench reports, in table order.
pub const OPERATIONS: [Operation; 10] = [
    Operation {
        id: "empty",
        label: "empty body (the method's own cost)",
        target: None,
        reference: None,
    },
    Operation {
        id: "hvc",
        label: "HVC round trip (PSCI_VERSION)",
        target: Some(110),
        reference: Some([Figure::One(474), Figure::One(1548), Figure::One(1054)]),
    },
    Operation {
        id: "gicd_read",
        label: "GICD register read (GICD_TYPER)",
        target: Some(180),
        reference: Some([Figure::One(614), Figure::One(2329), Figure::One(1845)]),
    },
    Operation {
        id: "uart_read",
        label: "UART register read (UARTFR)",
        target: Some(200),
        reference: Some([Figure::One(637), Figure::One(15780), Figure::One(6128)]),
    },
    Operation {
        id: "idreg_read",
        label: "ID register trap (ID_AA64MMFR0_EL1, TID3)",
        target: Some(150),
        reference: Some([Figure::One(433), Figure::One(1909), Figure::One(1416)]),
    },
    Operation {
        id: "vtimer_spin",
        label: "vtimer IRQ latency, spinning",
        target: Some(350),
        reference: Some([Figure::One(1087), Figure::One(2914), Figure::One(2437)]),
    },
    Operation {
        id: "vtimer_wfi",
        label: "vtimer IRQ latency, in WFI",
        target: Some(500),
        reference: Some([
            Figure::Range(814, 2985),
            Figure::One(3354),
            Figure::One(2782),
        ]),
    },
    Operation {
        id: "ipi",
        label: "virtual IPI, vCPU 0 → vCPU 1",
        target: None,
        reference: None,
    },
    Operation {
        id: "vm_switch",
        label: "VM switch round trip (channel doorbell)",
        target: None,
        reference: None,
    },
    Operation {
        id: "stage2_fault",
        label: "stage-2 fault on first touch",
        target: None,
        reference: None,
    },
];

/// The Linux boot target: Stratum needs at most this many times the
/// instructions of bare QEMU to reach `/init`.
pub const LINUX_TARGET_RATIO: f64 = 1.03;

/// One row's measured side.
#[derive(Clone, Debug, PartialEq)]
pub enum Measured {
    /// Under Stratum and on bare QEMU (the latter may be missing).
    Both {
        /// Under Stratum.
        stratum: Stats,
        /// The same guest on bare QEMU, EL1, no hypervisor.
        bare: Option<Stats>,
    },
    /// Not measured, and why.
    NotApplicable(String),
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The operation.
    pub op: Operation,
    /// What was measured.
    pub measured: Measured,
}

impl Row {
    /// Whether Stratum's median meets the target (`None`: no target or no
    /// measurement).
    pub fn met(&self) -> Option<bool> {
        match (&self.measured, self.op.target) {
            (Measured::Both { stratum, .. }, Some(t)) => Some(stratum.median <= t),
            _ => None,
        }
    }
}

/// Linux boot to userspace, in instructions.
#[derive(Clone, Debug, PartialEq)]
pub enum LinuxBoot {
    /// Both boots measured.
    Measured {
        /// The kernel release.
        kernel: String,
        /// Instructions to `Run /init` under Stratum.
        stratum: u64,
        /// The same on bare QEMU.
        bare: u64,
    },
    /// Not measured, and why.
    NotMeasured(String),
}

impl LinuxBoot {
    /// Stratum / bare, when measured.
    pub fn ratio(&self) -> Option<f64> {
        match self {
            Self::Measured { stratum, bare, .. } if *bare > 0 => {
                Some(*stratum as f64 / *bare as f64)
            }
            _ => None,
        }
    }
}

/// How the figures were taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Method {
    /// QEMU's version line.
    pub qemu: String,
    /// The board Stratum ran on (`virt`, `zcu102`).
    pub board: String,
    /// GIC version of the emulated host.
    pub gic: u32,
    /// CPU model.
    pub cpu: String,
    /// Timed iterations per operation.
    pub iterations: u64,
    /// Untimed warm-up iterations.
    pub warmup: u64,
    /// The guest's counter frequency (Hz).
    pub counter_hz: u64,
}

/// Everything `stratum bench` reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// How.
    pub method: Method,
    /// One per [`OPERATIONS`] entry, in that order.
    pub rows: Vec<Row>,
    /// Linux boot.
    pub linux: LinuxBoot,
    /// The Linux workload.
    pub workload: LinuxWorkload,
    /// The VM ↔ VM network case.
    pub net: super::net::NetBench,
    /// The disk case.
    pub disk: super::disk::DiskBench,
    /// Where each row's instructions go.
    pub breakdown: Breakdown,
}

fn stats_text(s: &Stats) -> String {
    format!("{} / {} / {}", s.min, s.median, s.p99)
}

/// The terminal table.
pub fn table(report: &Report) -> String {
    let mut lines: Vec<[String; 8]> = vec![[
        "operation".into(),
        "Stratum min / median / p99".into(),
        "bare QEMU median".into(),
        "target".into(),
        "met".into(),
        REFERENCE_NAMES[0].into(),
        REFERENCE_NAMES[1].into(),
        REFERENCE_NAMES[2].into(),
    ]];
    let mut notes = Vec::new();
    for row in &report.rows {
        let refs = row.op.reference.map_or_else(
            || [String::new(), String::new(), String::new()],
            |r| r.map(Figure::text),
        );
        let target = row.op.target.map_or(String::new(), |t| format!("≤ {t}"));
        let met = match row.met() {
            Some(true) => "yes".to_owned(),
            Some(false) => "NO".to_owned(),
            None => String::new(),
        };
        let (stratum, bare) = match &row.measured {
            Measured::Both { stratum, bare } => (
                stats_text(stratum),
                bare.map_or("–".to_owned(), |b| b.median.to_string()),
            ),
            Measured::NotApplicable(why) => {
                notes.push(format!("({}) {}: {why}", notes.len() + 1, row.op.label));
                (format!("n/a ({})", notes.len()), String::new())
            }
        };
        let [x, k, v] = refs;
        lines.push([row.op.label.into(), stratum, bare, target, met, x, k, v]);
    }
    let linux = match &report.linux {
        LinuxBoot::Measured { stratum, bare, .. } => {
            let ratio = report.linux.ratio().unwrap_or(0.0);
            [
                "Linux boot to /init (instructions)".to_owned(),
                format!("{:.1} M ({ratio:.3}×)", *stratum as f64 / 1e6),
                format!("{:.1} M", *bare as f64 / 1e6),
                format!("≤ {LINUX_TARGET_RATIO:.2}×"),
                if ratio <= LINUX_TARGET_RATIO {
                    "yes"
                } else {
                    "NO"
                }
                .to_owned(),
                String::new(),
                String::new(),
                String::new(),
            ]
        }
        LinuxBoot::NotMeasured(why) => [
            "Linux boot to /init (instructions)".to_owned(),
            {
                notes.push(format!("({}) Linux boot: {why}", notes.len() + 1));
                format!("n/a ({})", notes.len())
            },
            String::new(),
            format!("≤ {LINUX_TARGET_RATIO:.2}×"),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ],
    };
    lines.push(linux);
    let lines: Vec<Vec<String>> = lines.into_iter().map(Vec::from).collect();
    let m = &report.method;
    let mut out = format!(
        "board {}, {}, GICv{}; bare QEMU: virt, {}, GICv{}\n",
        m.board, m.cpu, m.gic, m.cpu, m.gic
    );
    out += &align(&lines);
    for note in notes {
        out += &note;
        out.push('\n');
    }
    out.push('\n');
    out += &breakdown::table(&report.breakdown, &report.rows);
    out.push('\n');
    out += &workload::table(&report.workload);
    out.push('\n');
    out += &super::net::table(&report.net);
    out.push('\n');
    out += &super::disk::table(&report.disk);
    out
}

/// Lines of cells as a table: the first line a header followed by a rule,
/// the first column left-aligned, the others right-aligned, two spaces
/// apart. Widths count characters (the tables use "≤", "–" and "×").
pub(super) fn align(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for line in lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(col, (cell, &w))| {
                let pad = w - cell.chars().count();
                if col == 0 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
            out += &rule.join("  ");
            out.push('\n');
        }
    }
    out
}

/// Escapes a string for JSON.
pub(super) fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\n' => out += "\\n",
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn stats_json(s: &Stats) -> String {
    format!(
        "{{\"n\": {}, \"min\": {}, \"median\": {}, \"p99\": {}, \"max\": {}}}",
        s.n, s.min, s.median, s.p99, s.max
    )
}

/// `results.json`: the method, every operation, Linux boot.
pub fn json(report: &Report) -> String {
    let m = &report.method;
    let mut out = String::from("{\n");
    let _ = writeln!(
        out,
        "  \"method\": {{\"unit\": \"instructions (CNTVCT_EL0 ticks under -icount shift=4)\", \
         \"qemu\": {}, \"board\": {}, \"gic\": {}, \"cpu\": {}, \"iterations\": {}, \
         \"warmup\": {}, \"counter_hz\": {}}},",
        json_str(&m.qemu),
        json_str(&m.board),
        m.gic,
        json_str(&m.cpu),
        m.iterations,
        m.warmup,
        m.counter_hz
    );
    out += "  \"operations\": [\n";
    let rows: Vec<String> = report
        .rows
        .iter()
        .map(|row| {
            let mut fields = vec![
                format!("\"op\": {}", json_str(row.op.id)),
                format!("\"label\": {}", json_str(row.op.label)),
            ];
            match &row.measured {
                Measured::Both { stratum, bare } => {
                    fields.push(format!("\"stratum\": {}", stats_json(stratum)));
                    fields.push(format!(
                        "\"bare_qemu\": {}",
                        bare.map_or("null".to_owned(), |b| stats_json(&b))
                    ));
                }
                Measured::NotApplicable(why) => {
                    fields.push(format!("\"not_applicable\": {}", json_str(why)));
                }
            }
            if let Some(t) = row.op.target {
                fields.push(format!("\"target\": {t}"));
            }
            if let Some(met) = row.met() {
                fields.push(format!("\"met\": {met}"));
            }
            if let Some(r) = row.op.reference {
                let refs: Vec<String> = REFERENCE_KEYS
                    .iter()
                    .zip(r)
                    .map(|(k, f)| format!("\"{k}\": {}", f.json()))
                    .collect();
                fields.push(format!("\"reference\": {{{}}}", refs.join(", ")));
            }
            format!("    {{{}}}", fields.join(", "))
        })
        .collect();
    out += &rows.join(",\n");
    out += "\n  ],\n";
    let linux = match &report.linux {
        LinuxBoot::Measured {
            kernel,
            stratum,
            bare,
        } => format!(
            "{{\"kernel\": {}, \"stratum_instructions\": {stratum}, \"bare_qemu_instructions\": {bare}, \
             \"ratio\": {:.4}, \"target_ratio\": {LINUX_TARGET_RATIO}}}",
            json_str(kernel),
            report.linux.ratio().unwrap_or(0.0)
        ),
        LinuxBoot::NotMeasured(why) => format!(
            "{{\"not_measured\": {}, \"target_ratio\": {LINUX_TARGET_RATIO}}}",
            json_str(why)
        ),
    };
    let _ = writeln!(out, "  \"linux_boot\": {linux},");
    let _ = writeln!(
        out,
        "  \"linux_workload\": {},",
        workload::json(&report.workload)
    );
    let _ = writeln!(out, "  \"network\": {},", super::net::json(&report.net));
    let _ = writeln!(out, "  \"disk\": {},", super::disk::json(&report.disk));
    let _ = writeln!(
        out,
        "  \"breakdown\": {}",
        breakdown::json(&report.breakdown, &report.rows)
    );
    out += "}\n";
    out
}

/// Escapes text for SVG.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Bar colours: Stratum, then the three references.
const COLOURS: [&str; 4] = ["#1b7f3b", "#d08c1f", "#3a6fb0", "#8a5cb8"];

/// `results.svg`: per operation with a target, horizontal bars of Stratum's
/// median and the reference figures on a log scale, and the target as a
/// dashed mark.
pub fn svg(report: &Report) -> String {
    let rows: Vec<(&Row, &Stats)> = report
        .rows
        .iter()
        .filter_map(|r| match (&r.measured, r.op.reference) {
            (Measured::Both { stratum, .. }, Some(_)) => Some((r, stratum)),
            _ => None,
        })
        .collect();
    let (left, width, bar, gap) = (300.0, 560.0, 14.0, 22.0);
    let group = 4.0 * bar + gap;
    let top = 60.0;
    let height = top + group * rows.len() as f64 + 76.0;
    // Log scale from 1 to the next power of ten above the largest value.
    let largest = rows
        .iter()
        .flat_map(|(r, s)| {
            let refs = r.op.reference.map_or([0; 3], |f| f.map(Figure::bar));
            [s.median, refs[0], refs[1], refs[2]]
        })
        .max()
        .unwrap_or(10)
        .max(10);
    let decades = (largest as f64).log10().ceil().max(1.0);
    let x = |v: u64| left + width * ((v.max(1) as f64).log10() / decades);
    let mut out = String::new();
    let total_width = left + width + 40.0;
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total_width}\" height=\"{height}\" \
         viewBox=\"0 0 {total_width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        out,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" \
         font-size=\"15\" font-weight=\"bold\">Exit path length, median instructions \
         (QEMU -icount, log scale; lower is better)</text>"
    );
    // Legend.
    let names = ["Stratum"]
        .into_iter()
        .chain(REFERENCE_NAMES)
        .zip(COLOURS)
        .enumerate();
    for (i, (name, colour)) in names {
        let lx = 10.0 + 130.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{lx}\" y=\"34\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"45\">{}</text>",
            lx + 16.0,
            xml(name)
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"540\" y1=\"40\" x2=\"556\" y2=\"40\" stroke=\"black\" stroke-dasharray=\"3,2\"/>\
         <text x=\"560\" y=\"45\">target</text>"
    );
    // Grid: one line per decade.
    let bottom = top + group * rows.len() as f64;
    for d in 0..=decades as u32 {
        let v = 10u64.pow(d);
        let gx = x(v);
        let _ = writeln!(
            out,
            "<line x1=\"{gx:.1}\" y1=\"{top}\" x2=\"{gx:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\
             <text x=\"{gx:.1}\" y=\"{}\" text-anchor=\"middle\">{v}</text>",
            bottom + 16.0
        );
    }
    for (i, (row, stratum)) in rows.iter().enumerate() {
        let gy = top + group * i as f64;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            gy + 2.0 * bar + 4.0,
            xml(row.op.label)
        );
        let refs = row.op.reference.map_or([Figure::One(0); 3], |r| r);
        let values = [Figure::One(stratum.median), refs[0], refs[1], refs[2]];
        for (j, (value, colour)) in values.iter().zip(COLOURS).enumerate() {
            let by = gy + bar * j as f64;
            let v = value.bar();
            let _ = writeln!(
                out,
                "<rect x=\"{left}\" y=\"{by}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\"/>\
                 <text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{}</text>",
                x(v) - left,
                bar - 2.0,
                x(v) + 4.0,
                by + bar - 4.0,
                xml(&value.text())
            );
        }
        if let Some(t) = row.op.target {
            let tx = x(t);
            let _ = writeln!(
                out,
                "<line x1=\"{tx:.1}\" y1=\"{}\" x2=\"{tx:.1}\" y2=\"{}\" stroke=\"black\" \
                 stroke-width=\"1.5\" stroke-dasharray=\"3,2\"/>",
                gy - 2.0,
                gy + 4.0 * bar
            );
        }
    }
    if let Some(ratio) = report.linux.ratio() {
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{}\">Linux boot to /init: {ratio:.3}× the instructions of bare \
             QEMU (target ≤ {LINUX_TARGET_RATIO:.2}×)</text>",
            bottom + 40.0
        );
    }
    if let Some(summary) = workload::summary(&report.workload) {
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{}\">{}</text>",
            bottom + 56.0,
            xml(&summary)
        );
    }
    out += "</svg>\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(median: u64) -> Stats {
        Stats {
            n: 1000,
            min: median - 1,
            median,
            p99: median + 5,
            max: median + 9,
        }
    }

    fn report() -> Report {
        let rows = OPERATIONS
            .iter()
            .map(|&op| Row {
                op,
                measured: match op.id {
                    "vm_switch" => Measured::NotApplicable("needs <two VMs> & \"channels\"".into()),
                    "hvc" => Measured::Both {
                        stratum: stats(100),
                        bare: Some(stats(3)),
                    },
                    _ => Measured::Both {
                        stratum: stats(1000),
                        bare: None,
                    },
                },
            })
            .collect();
        Report {
            method: Method {
                board: "virt".into(),
                qemu: "QEMU emulator version 7.2.22".into(),
                gic: 3,
                cpu: "cortex-a57".into(),
                iterations: 1000,
                warmup: 100,
                counter_hz: 62_500_000,
            },
            rows,
            linux: LinuxBoot::Measured {
                kernel: "6.1.0-56-arm64".into(),
                stratum: 838_000_000,
                bare: 818_800_000,
            },
            workload: workload::example(),
            net: crate::bench::net::example(),
            disk: crate::bench::disk::example(),
            breakdown: Breakdown::NotMeasured("skipped (--no-breakdown)".into()),
        }
    }

    #[test]
    fn targets_are_judged_on_the_median() {
        let r = report();
        let hvc = &r.rows[1];
        assert_eq!(hvc.op.id, "hvc");
        assert_eq!(hvc.met(), Some(true));
        assert_eq!(r.rows[2].met(), Some(false), "1000 > 180");
        assert_eq!(r.rows[0].met(), None, "no target");
        let ratio = r.linux.ratio().expect("measured");
        assert!((ratio - 1.02345).abs() < 1e-4, "{ratio}");
        assert_eq!(LinuxBoot::NotMeasured("x".into()).ratio(), None);
    }

    #[test]
    fn table_lists_every_operation_aligned() {
        let t = table(&report());
        let (exits, rest) = t.split_once("\n\n").expect("three tables");
        let (machine, exits) = exits.split_once('\n').expect("the machine line");
        assert_eq!(
            machine,
            "board virt, cortex-a57, GICv3; bare QEMU: virt, cortex-a57, GICv3"
        );
        let lines: Vec<&str> = exits.lines().collect();
        // Header, rule, the operations, Linux, one note (the VM switch).
        assert_eq!(lines.len(), 2 + OPERATIONS.len() + 1 + 1);
        // Then the breakdown (`breakdown::table`), then the workload's
        // table (`workload::table`).
        let (breakdown, linux_workload) = rest.split_once("\n\n").expect("three tables");
        assert_eq!(
            breakdown,
            "Where the instructions go: n/a (skipped (--no-breakdown))"
        );
        assert!(linux_workload.starts_with("Linux workload (6.1.0-57-arm64"));
        assert!(linux_workload.contains("memcpy of 8 MiB"));
        assert!(lines[0].starts_with("operation"));
        let hvc = lines
            .iter()
            .find(|l| l.starts_with("HVC round trip"))
            .expect("hvc row");
        for cell in ["99 / 100 / 105", "≤ 110", "yes", "474", "1548", "1054"] {
            assert!(hvc.contains(cell), "{hvc}");
        }
        assert!(t.contains("814–2985"));
        assert!(t.contains("  n/a (1)"));
        assert!(exits.ends_with(
            "(1) VM switch round trip (channel doorbell): needs <two VMs> & \"channels\""
        ));
        assert!(t.contains("838.0 M (1.023×)"));
        // The columns line up: the rule's gaps are where the header's are.
        let gaps = |l: &str| -> Vec<usize> {
            l.char_indices()
                .filter(|&(_, c)| c == ' ')
                .map(|(i, _)| i)
                .collect()
        };
        let rule_gaps = gaps(lines[1]);
        assert_eq!(rule_gaps.len(), 2 * 7);
        let header: Vec<char> = lines[0].chars().collect();
        for i in rule_gaps {
            assert_eq!(header[lines[1][..i].chars().count()], ' ', "{}", lines[0]);
        }
    }

    #[test]
    fn json_is_well_formed_and_complete() {
        let j = json(&report());
        // Balanced braces and brackets outside strings, and every string closed.
        let (mut depth, mut in_str, mut escaped) = (0i32, false, false);
        for c in j.chars() {
            match (in_str, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') | (false, _, '"') => in_str = !in_str,
                (false, _, '{' | '[') => depth += 1,
                (false, _, '}' | ']') => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0);
        }
        assert_eq!((depth, in_str), (0, false));
        assert!(j.contains("\"op\": \"hvc\""));
        assert!(j.contains(
            "\"stratum\": {\"n\": 1000, \"min\": 99, \"median\": 100, \"p99\": 105, \"max\": 109}"
        ));
        assert!(j.contains("\"bare_qemu\": null"));
        assert!(j.contains("\"xen_4_17\": [814, 2985]"));
        assert!(j.contains("\"not_applicable\": \"needs <two VMs> & \\\"channels\\\"\""));
        assert!(j.contains("\"ratio\": 1.0234"));
        assert!(j.contains("\"met\": false"));
        assert!(j.contains("\"linux_workload\": {\"kernel\": \"6.1.0-57-arm64\""));
        assert!(j.contains("\"hypervisor_instructions_per_timer_tick\": {\"instructions\": 75.0"));
        assert!(
            j.ends_with("  \"breakdown\": {\"not_measured\": \"skipped (--no-breakdown)\"}\n}\n")
        );
    }

    #[test]
    fn svg_has_a_group_per_referenced_operation() {
        let s = svg(&report());
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.trim_end().ends_with("</svg>"));
        // Six operations with reference figures, four bars each, plus the
        // legend's four swatches and the background.
        assert_eq!(s.matches("<rect").count(), 6 * 4 + 4 + 1);
        assert_eq!(s.matches("stroke-dasharray=\"3,2\"/>").count(), 6 + 1);
        assert!(s.contains("HVC round trip (PSCI_VERSION)"));
        assert!(s.contains(">814–2985<"));
        assert!(s.contains("1.023×"));
        assert!(s.contains("Linux workload: 1.3000–1.3000× bare QEMU"));
        assert!(!s.contains("<two"), "text is escaped");
        // Larger values reach further right (log scale): KVM nVHE's UART bar.
        let width_of = |label: &str| -> f64 {
            let at = s.find(&format!(">{label}<")).expect("bar label");
            let rect = s[..at].rfind("width=\"").expect("its rect") + 7;
            s[rect..]
                .split('"')
                .next()
                .expect("value")
                .parse()
                .expect("number")
        };
        assert!(width_of("15780") > width_of("637"));
    }
}
