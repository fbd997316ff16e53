//! Where each row's instructions go: the EL2 instructions of one sample of
//! every bare-metal row, split into categories ([`category`]), printed
//! after the figures and written into `results.json`.
//!
//! The bench guest runs again, [`TRACE_ITERATIONS`] samples per operation,
//! under the same deterministic QEMU with one instruction per translation
//! block (`-singlestep`) and QEMU's instruction log (`-d exec,nochain`)
//! streamed through a FIFO, never to disk ([`trace`]). The log is switched
//! on only when the guest enters its first timed function ([`gdb`]): from
//! the start it would hold the hypervisor's boot, gigabytes of it. Three
//! runs, as for the figures: one vCPU (the single-CPU rows), two (the IPI),
//! two VMs time-sharing a CPU (the VM switch).
//!
//! In the log each row's sample is cut out by the guest's own markers
//! (`guests/src/bin/bench.rs`: each operation's timed code is an unmangled
//! function, `time_hvc` …, whose `mrs x, cntvct_el0` are the sample's
//! counter reads), every instruction in between counted on every CPU: a
//! PC inside the hypervisor's code is EL2, any other is the guest's. The
//! last sample of each row is the one reported. Its EL2 PCs are
//! symbolized with `llvm-symbolizer --inlining` against the hypervisor's
//! ELF (the release profile keeps line tables and inlining information)
//! and each is given the category of its innermost named frame.
//!
//! The total (EL2 plus the guest's own instructions in the window) is the
//! sample: the breakdown checks it against the sample the traced run
//! printed and against the row's figure, and says when either differs.

pub mod category;
pub mod gdb;
pub mod trace;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::parse::GuestOutput;
use super::report::{Measured, Row, align, json_str};
use crate::config::Config;
use crate::elf::make_image;
use crate::run::{RunOptions, run};
use crate::{Error, ErrorKind, Result};

use category::{Category, Frame, classify, demangle};
use trace::{Kind, Markers, RowMarker, Tracker, Window, parse_line};

/// Timed samples per operation in the traced runs (plus the guest's
/// warm-up of one).
pub const TRACE_ITERATIONS: u32 = 3;
/// How far ahead the bench guest arms the virtual timer
/// (`guests/src/bin/bench.rs`, `TIMER_AHEAD`): a vtimer sample starts
/// that many instructions after the counter read that armed it.
pub const TIMER_AHEAD: u64 = 2000;
/// The guest's vector table symbol, and the offsets of its four IRQ
/// entries; each reads the counter among its first instructions.
const GUEST_VECTORS: &str = "stratum_vectors";
const IRQ_VECTORS: [u64; 4] = [0x080, 0x280, 0x480, 0x680];
/// `mrs xN, cntvct_el0`, `N` in the low five bits.
const MRS_CNTVCT: u32 = 0xd53b_e040;
/// `wfi`.
const WFI: u32 = 0xd503_207f;

/// Which traced run a row comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunKind {
    OneCpu,
    TwoCpus,
    TwoVms,
}

/// How the guest marks a row's samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Find {
    /// An unmangled function holding the timed code.
    Function(&'static str),
    /// Entries of the guest's [`MARKS`] section with this name: the
    /// sample's first counter read, in code inlined into its callers.
    Mark(&'static str),
}

/// The guest's section of marked counter reads.
const MARKS: &str = ".bench_marks";

/// The rows broken down: the operation, where the guest marks it, how its
/// sample ends, and the run it is measured in.
const ROWS: [(&str, Find, Kind, RunKind); 8] = [
    (
        "hvc",
        Find::Function("time_hvc"),
        Kind::Sync,
        RunKind::OneCpu,
    ),
    (
        "gicd_read",
        Find::Function("time_gicd_read"),
        Kind::Sync,
        RunKind::OneCpu,
    ),
    (
        "uart_read",
        Find::Function("time_uart_read"),
        Kind::Sync,
        RunKind::OneCpu,
    ),
    (
        "idreg_read",
        Find::Function("time_idreg"),
        Kind::Sync,
        RunKind::OneCpu,
    ),
    (
        "vtimer_spin",
        Find::Function("time_vtimer_spin"),
        Kind::Latency {
            ahead: TIMER_AHEAD,
            nth: 1,
        },
        RunKind::OneCpu,
    ),
    (
        "vtimer_wfi",
        Find::Function("time_vtimer_wfi"),
        Kind::Latency {
            ahead: TIMER_AHEAD,
            nth: 1,
        },
        RunKind::OneCpu,
    ),
    // From vCPU 0's reading to vCPU 1's vector.
    (
        "ipi",
        Find::Mark("ipi"),
        Kind::Latency { ahead: 0, nth: 1 },
        RunKind::TwoCpus,
    ),
    // The first vector read after `ping` rings is `pong`'s, the second
    // `ping`'s for the answer.
    (
        "vm_switch",
        Find::Mark("vm_switch"),
        Kind::Latency { ahead: 0, nth: 2 },
        RunKind::TwoVms,
    ),
];

/// The entries of a `.bench_marks` section: an address (8 bytes, little
/// endian), then a NUL-terminated name, padded to 8 bytes.
pub fn parse_marks(data: &[u8]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&data[at..at + 8]);
        let name_start = at + 8;
        let Some(len) = data[name_start..].iter().position(|&b| b == 0) else {
            break;
        };
        let name = String::from_utf8_lossy(&data[name_start..name_start + len]).into_owned();
        out.push((u64::from_le_bytes(addr), name));
        at = (name_start + len + 1).next_multiple_of(8);
    }
    out
}

/// One row's breakdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowBreakdown {
    /// The operation.
    pub id: &'static str,
    /// EL2 instructions of the sample.
    pub el2: u64,
    /// The guest's own instructions in it (the body, the counter read, the
    /// guest's vector up to its counter read).
    pub guest: u64,
    /// Exits that began in the sample.
    pub exits: u32,
    /// EL2 instructions by category, every category in [`Category::ALL`]
    /// order.
    pub categories: Vec<(Category, u64)>,
    /// The instructions in [`Category::Other`] by function (the outermost
    /// frame), by name.
    pub other: Vec<(String, u64)>,
    /// The sample the traced run printed (its median).
    pub traced_sample: Option<u64>,
    /// What else to know (a total that differs, and why).
    pub notes: Vec<String>,
}

impl RowBreakdown {
    /// EL2 plus the guest's instructions: the sample as traced.
    pub fn total(&self) -> u64 {
        self.el2 + self.guest
    }
}

/// The breakdown of every row, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Breakdown {
    /// Traced.
    Measured(Vec<RowBreakdown>),
    /// Not traced, and why.
    NotMeasured(String),
}

/// A row's traced sample before symbolization: the row's index in
/// [`ROWS`], the sample (none when not traced), the traced run's median,
/// the notes so far.
type Chosen = (usize, Option<Window>, Option<u64>, Vec<String>);

/// What the traced runs need.
pub struct TraceSetup<'a> {
    /// The bench guest's ELF.
    pub guest: &'a Path,
    /// The hypervisor `Image` (or ELF) the figures were measured with.
    pub hypervisor: &'a Path,
    /// The three systems: one vCPU, two vCPUs, two VMs (`Err`: why the
    /// last cannot run).
    pub configs: [std::result::Result<Config, String>; 3],
    /// A directory for the FIFO and the ELF comparison.
    pub scratch: &'a Path,
    /// Per-run timeout.
    pub timeout: Duration,
    /// How far from its link address the board's loader puts the
    /// hypervisor (runtime − link, wrapping; 0 on `virt`): the trace's EL2
    /// PCs are the runtime ones, the ELF's symbols the link-time ones.
    pub el2_offset: u64,
}

/// Traces the bench guest and breaks every row down.
pub fn measure(setup: TraceSetup<'_>) -> Result<Breakdown> {
    let TraceSetup {
        guest,
        hypervisor,
        configs,
        scratch,
        timeout,
        el2_offset,
    } = setup;
    let symbolizer = find_symbolizer()?;
    let hyp_elf = hypervisor_elf(hypervisor, scratch)?;
    let hyp_bytes = read(&hyp_elf)?;
    let guest_bytes = read(guest)?;
    let markers = markers(&hyp_bytes, &guest_bytes)?.relocated(el2_offset);
    let mut rows = Vec::new();
    let mut pcs: HashSet<u64> = HashSet::new();
    let mut chosen: Vec<Chosen> = Vec::new();
    let [one, two, vms] = configs;
    for (kind, config) in [
        (RunKind::OneCpu, one),
        (RunKind::TwoCpus, two),
        (RunKind::TwoVms, vms),
    ] {
        let row_ids: Vec<usize> = (0..ROWS.len()).filter(|&i| ROWS[i].3 == kind).collect();
        let config = match config {
            Ok(c) => c,
            Err(why) => {
                for i in row_ids {
                    chosen.push((i, None, None, vec![format!("not traced: {why}")]));
                }
                continue;
            }
        };
        let run_markers = Markers {
            rows: row_ids.iter().map(|&i| markers.rows[i].clone()).collect(),
            ..markers.clone()
        };
        eprintln!(
            "stratum bench: breakdown: tracing {} ({} sample(s) each)",
            row_ids
                .iter()
                .map(|&i| ROWS[i].0)
                .collect::<Vec<_>>()
                .join(", "),
            TRACE_ITERATIONS
        );
        let (tracker, console) =
            traced_run(config, hypervisor, run_markers, scratch, timeout, kind)?;
        let printed = super::parse::parse_guest(&console).ok();
        for (k, &i) in row_ids.iter().enumerate() {
            let id = ROWS[i].0;
            let windows: Vec<&Window> = tracker
                .windows
                .iter()
                .filter(|(r, _)| *r == k)
                .map(|(_, w)| w)
                .collect();
            let traced = printed
                .as_ref()
                .and_then(|p: &GuestOutput| p.op(id))
                .map(|o| o.stats.median);
            let mut notes = Vec::new();
            let Some(pick) = pick(&windows, traced) else {
                chosen.push((
                    i,
                    None,
                    traced,
                    vec!["no sample found in the trace".to_owned()],
                ));
                continue;
            };
            // Every timed sample repeats the same instructions; the warm-up
            // (the first) may differ.
            let totals: Vec<u64> = windows.iter().skip(1).map(|w| w.total()).collect();
            if totals.iter().any(|&t| t != pick.total()) {
                notes.push(format!(
                    "the traced samples are {totals:?} (after the warm-up); this is the median one"
                ));
            }
            if pick.idles > 0 && traced != Some(pick.total()) {
                notes.push(
                    "the machine idled inside the sample: the clock moved without instructions"
                        .to_owned(),
                );
            }
            pcs.extend(pick.el2.keys());
            chosen.push((i, Some(pick.clone()), traced, notes));
        }
        if tracker.abandoned > 0 {
            eprintln!(
                "stratum bench: breakdown: {} sample(s) left unfinished in the trace",
                tracker.abandoned
            );
        }
    }
    let mut pcs: Vec<u64> = pcs.into_iter().collect();
    pcs.sort_unstable();
    let link_pcs: Vec<u64> = pcs.iter().map(|pc| pc.wrapping_sub(el2_offset)).collect();
    let frames = symbolize(&symbolizer, &hyp_elf, &link_pcs)?;
    let categories: HashMap<u64, Category> = pcs
        .iter()
        .zip(&frames)
        .map(|(&pc, f)| (pc, classify(f)))
        .collect();
    // What lands in `other`, by the outermost frame's function: what the
    // category table would have to name.
    let outermost: HashMap<u64, String> = pcs
        .iter()
        .zip(&frames)
        .map(|(&pc, f)| {
            (
                pc,
                f.last()
                    .map_or_else(|| "??".to_owned(), |f| f.function.clone()),
            )
        })
        .collect();
    chosen.sort_by_key(|c| c.0);
    // Each PC's innermost function, only when the profile is asked for.
    let innermost: Option<HashMap<u64, &str>> = std::env::var_os(PROFILE_ENV).map(|_| {
        pcs.iter()
            .zip(&frames)
            .map(|(&pc, f)| (pc, f.first().map_or("??", |f| f.function.as_str())))
            .collect()
    });
    for (i, window, traced, mut notes) in chosen {
        let Some(w) = window else {
            rows.push(RowBreakdown {
                id: ROWS[i].0,
                el2: 0,
                guest: 0,
                exits: 0,
                categories: Vec::new(),
                other: Vec::new(),
                traced_sample: traced,
                notes,
            });
            continue;
        };
        if let Some(innermost) = &innermost {
            eprint!("{}", profile_text(ROWS[i].0, &w.el2, innermost));
        }
        let mut by: BTreeMap<Category, u64> = BTreeMap::new();
        let mut other: BTreeMap<&str, u64> = BTreeMap::new();
        for (pc, n) in &w.el2 {
            *by.entry(categories[pc]).or_insert(0) += n;
            if categories[pc] == Category::Other {
                *other.entry(outermost[pc].as_str()).or_insert(0) += n;
            }
        }
        if let Some(t) = traced
            && t != w.total()
        {
            notes.push(format!(
                "the log holds {} instructions, the counter says {t} ({:+}): QEMU's log and \
                 -icount disagree on an instruction at the exception (docs/benchmarks.md)",
                w.total(),
                i128::from(w.total()) - i128::from(t)
            ));
        }
        rows.push(RowBreakdown {
            id: ROWS[i].0,
            el2: w.el2_total,
            guest: w.guest,
            exits: w.exits,
            categories: Category::ALL
                .iter()
                .map(|&c| (c, by.get(&c).copied().unwrap_or(0)))
                .collect(),
            other: other.into_iter().map(|(f, n)| (f.to_owned(), n)).collect(),
            traced_sample: traced,
            notes,
        });
    }
    Ok(Breakdown::Measured(rows))
}

/// Set (to anything) in the environment, the breakdown also prints each
/// row's EL2 instructions by the function each PC belongs to (its
/// innermost frame, inlined functions included), most first: where to look
/// when a row is to be made shorter.
pub const PROFILE_ENV: &str = "STRATUM_BENCH_PROFILE";

/// Row `id`'s EL2 instructions (`el2`: executions per PC) summed by
/// `function` of each PC, most first (ties by name), one line each.
fn profile_text(id: &str, el2: &HashMap<u64, u64>, function: &HashMap<u64, &str>) -> String {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for (pc, n) in el2 {
        *by.entry(function.get(pc).copied().unwrap_or("??"))
            .or_insert(0) += n;
    }
    let mut rows: Vec<(&str, u64)> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut out = format!(
        "profile {id}: {} EL2 instructions\n",
        el2.values().sum::<u64>()
    );
    for (f, n) in rows {
        let _ = writeln!(out, "  {n:6}  {f}");
    }
    out
}

/// The sample to report among a row's traced ones (the first is the
/// warm-up): the last one whose total is the traced run's median, else the
/// median of the timed ones by total.
fn pick<'a>(windows: &[&'a Window], median: Option<u64>) -> Option<&'a Window> {
    let timed = if windows.len() > 1 {
        &windows[1..]
    } else {
        windows
    };
    if let Some(m) = median
        && let Some(w) = timed.iter().rev().find(|w| w.total() == m)
    {
        return Some(w);
    }
    let mut sorted: Vec<&Window> = timed.to_vec();
    sorted.sort_by_key(|w| w.total());
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::environment(format!("cannot read {}: {e}", path.display())))
}

fn hypervisor_error(msg: String) -> Error {
    Error::new(ErrorKind::Hypervisor, anyhow::anyhow!(msg))
}

/// The hypervisor's ELF for `hypervisor`: itself if it is one; for an
/// `Image`, the ELF beside it or one of cargo's in `deps/` (the last build
/// leaves the ELF of whichever feature set it built, the `Image` may be the
/// other's) whose `Image` is byte for byte the same.
pub fn hypervisor_elf(hypervisor: &Path, scratch: &Path) -> Result<PathBuf> {
    let bytes = read(hypervisor)?;
    if bytes.starts_with(b"\x7fELF") {
        return Ok(hypervisor.to_path_buf());
    }
    let mut candidates = vec![hypervisor.with_extension("")];
    if let Some(dir) = hypervisor.parent()
        && let Ok(entries) = fs::read_dir(dir.join("deps"))
    {
        let mut deps: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_none()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("stratum_hypervisor-"))
            })
            .collect();
        deps.sort();
        candidates.extend(deps);
    }
    let image = scratch.join("breakdown-candidate.Image");
    for elf in candidates {
        let is_elf = fs::read(&elf).is_ok_and(|b| b.starts_with(b"\x7fELF"));
        if is_elf && make_image(&elf, &image).is_ok() && fs::read(&image).is_ok_and(|b| b == bytes)
        {
            return Ok(elf);
        }
    }
    Err(Error::environment(format!(
        "the breakdown needs the hypervisor's ELF (its symbols and line tables) and none \
         beside {} makes the same Image: pass the ELF with --hypervisor, or --no-breakdown",
        hypervisor.display()
    )))
}

/// The code of `file` at `addr..addr + len`, if one section holds it.
fn code<'a>(file: &object::File<'a>, addr: u64, len: u64) -> Option<&'a [u8]> {
    file.sections().find_map(|s| {
        let (start, size) = (s.address(), s.size());
        if addr >= start && addr + len <= start + size {
            let data = s.data().ok()?;
            let from = usize::try_from(addr - start).ok()?;
            data.get(from..from + usize::try_from(len).ok()?)
        } else {
            None
        }
    })
}

/// Addresses of the instructions in `bytes` (code at `base`) that `is`.
fn instructions(bytes: &[u8], base: u64, is: impl Fn(u32) -> bool) -> impl Iterator<Item = u64> {
    bytes
        .chunks_exact(4)
        .enumerate()
        .filter(move |(_, w)| is(u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
        .map(move |(i, _)| base + 4 * i as u64)
}

fn is_counter_read(word: u32) -> bool {
    word & !0x1f == MRS_CNTVCT
}

/// The markers of the hypervisor ELF `hyp` and the bench guest ELF
/// `guest`, for every row of [`ROWS`], in that order.
pub fn markers(hyp: &[u8], guest: &[u8]) -> Result<Markers> {
    let bad = |what: &str, e: object::Error| hypervisor_error(format!("{what}: {e}"));
    let h = object::File::parse(hyp).map_err(|e| bad("the hypervisor ELF", e))?;
    let g = object::File::parse(guest).map_err(|e| bad("the bench guest ELF", e))?;
    let (mut lo, mut hi) = (u64::MAX, 0);
    let mut halts = HashSet::new();
    for s in h.sections() {
        if s.kind() == object::SectionKind::Text && s.size() > 0 {
            lo = lo.min(s.address());
            hi = hi.max(s.address() + s.size());
            if let Ok(data) = s.data() {
                halts.extend(instructions(data, s.address(), |w| w == WFI));
            }
        }
    }
    if lo >= hi {
        return Err(hypervisor_error(
            "the hypervisor ELF has no code".to_owned(),
        ));
    }
    let el2 = lo..hi;
    let symbol = |name: &str| {
        g.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| (s.address(), s.size()))
            .ok_or_else(|| {
                hypervisor_error(format!(
                    "the bench guest has no symbol `{name}` (an older guest? --no-breakdown skips the breakdown)"
                ))
            })
    };
    let (vectors, _) = symbol(GUEST_VECTORS)?;
    let mut vector_reads = HashSet::new();
    for off in IRQ_VECTORS {
        let bytes = code(&g, vectors + off, 0x80).ok_or_else(|| {
            hypervisor_error("the guest's vector table is not in its code".into())
        })?;
        vector_reads.extend(instructions(bytes, vectors + off, is_counter_read));
    }
    let marks = g
        .section_by_name(MARKS)
        .and_then(|s| s.data().ok())
        .map(parse_marks)
        .unwrap_or_default();
    let mut rows = Vec::new();
    for (id, find, kind, _) in ROWS {
        let name = match find {
            Find::Function(name) => name,
            Find::Mark(mark) => {
                let addrs: HashSet<u64> = marks
                    .iter()
                    .filter(|(_, n)| n == mark)
                    .map(|&(a, _)| a)
                    .collect();
                let all_reads = addrs.iter().all(|&a| {
                    code(&g, a, 4).is_some_and(|w| {
                        is_counter_read(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                    })
                });
                if addrs.is_empty() || !all_reads {
                    return Err(hypervisor_error(format!(
                        "the bench guest marks no counter read `{mark}` in {MARKS} (an older guest? --no-breakdown skips the breakdown)"
                    )));
                }
                rows.push(RowMarker {
                    id,
                    function: 0..0,
                    counter_reads: HashSet::new(),
                    marks: addrs,
                    kind,
                });
                continue;
            }
        };
        let (addr, size) = symbol(name)?;
        let function = addr..addr + size;
        if function.start < el2.end && el2.start < function.end {
            return Err(hypervisor_error(format!(
                "the bench guest's `{name}` lies inside the hypervisor's code addresses"
            )));
        }
        if rows.iter().any(|r: &RowMarker| r.function.contains(&addr)) {
            return Err(hypervisor_error(format!(
                "`{name}` shares its code with another row's function"
            )));
        }
        let bytes = code(&g, addr, size)
            .ok_or_else(|| hypervisor_error(format!("`{name}` is not in the guest's code")))?;
        let counter_reads: HashSet<u64> = instructions(bytes, addr, is_counter_read).collect();
        let needed = if kind == Kind::Sync { 2 } else { 1 };
        if counter_reads.len() < needed || (kind == Kind::Sync && counter_reads.len() != 2) {
            return Err(hypervisor_error(format!(
                "`{name}` has {} counter reads",
                counter_reads.len()
            )));
        }
        rows.push(RowMarker {
            id,
            function,
            counter_reads,
            marks: HashSet::new(),
            kind,
        });
    }
    Ok(Markers {
        el2,
        halts,
        vector_reads,
        rows,
    })
}

/// `llvm-symbolizer`, unversioned or as Debian names it.
fn find_symbolizer() -> Result<PathBuf> {
    let names = std::iter::once("llvm-symbolizer".to_owned())
        .chain((14..=21).rev().map(|v| format!("llvm-symbolizer-{v}")));
    for name in names {
        let ok = Command::new(&name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(PathBuf::from(name));
        }
    }
    Err(Error::environment(
        "the breakdown needs llvm-symbolizer (Debian: apt-get install llvm), or pass --no-breakdown",
    ))
}

/// Each of `pcs`' frames in `elf`, innermost first.
fn symbolize(symbolizer: &Path, elf: &Path, pcs: &[u64]) -> Result<Vec<Vec<Frame>>> {
    if pcs.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = Command::new(symbolizer)
        .arg("--inlining")
        .arg("--demangle")
        .arg(format!("--obj={}", elf.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::environment(format!("cannot run {}: {e}", symbolizer.display())))?;
    let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
    let mut stdin = child.stdin.take().expect("piped");
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(|e| Error::environment(format!("llvm-symbolizer: {e}")))?;
    let _ = writer.join();
    let frames = parse_symbolizer(&String::from_utf8_lossy(&output.stdout));
    if frames.len() != pcs.len() {
        return Err(Error::environment(format!(
            "llvm-symbolizer answered {} of {} addresses",
            frames.len(),
            pcs.len()
        )));
    }
    Ok(frames)
}

/// `llvm-symbolizer`'s answers: per address, lines of function then
/// `file:line:column`, a blank line after each address.
pub fn parse_symbolizer(text: &str) -> Vec<Vec<Frame>> {
    let mut out = Vec::new();
    let mut current: Vec<Frame> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        let location = lines.next().unwrap_or("??:0:0");
        let file = location
            .rsplitn(3, ':')
            .nth(2)
            .unwrap_or(location)
            .to_owned();
        current.push(Frame {
            function: demangle(line),
            file,
        });
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Makes the FIFO `fifo` that QEMU writes its log into (`-D`), replacing
/// whatever is there.
pub(crate) fn make_fifo(fifo: &Path) -> Result<()> {
    let _ = fs::remove_file(fifo);
    let made = Command::new("mkfifo")
        .arg(fifo)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        Ok(())
    } else {
        Err(Error::environment(format!(
            "cannot make the FIFO {}",
            fifo.display()
        )))
    }
}

/// Reads QEMU's log from `fifo` into `sink`, line by line, on a thread of
/// its own until QEMU closes it; the thread returns the sink, finished.
pub(crate) fn read_log<S: trace::LogSink>(
    fifo: PathBuf,
    mut sink: S,
) -> thread::JoinHandle<std::io::Result<S>> {
    thread::spawn(move || {
        let file = fs::File::open(&fifo)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            sink.feed(parse_line(&line));
        }
        sink.finish();
        Ok(sink)
    })
}

/// What a traced run's log reader and gdbstub client came back with.
pub(crate) struct LogEnd<S> {
    sink: std::io::Result<S>,
    gdb: std::io::Result<()>,
}

impl<S> LogEnd<S> {
    /// The sink fed with the whole log, or what went wrong with the
    /// gdbstub or the log.
    pub(crate) fn sink(self) -> Result<S> {
        self.gdb
            .map_err(|e| Error::environment(format!("QEMU's gdbstub: {e}")))?;
        self.sink
            .map_err(|e| Error::environment(format!("reading the instruction log: {e}")))
    }
}

/// Once QEMU has exited: tells the gdbstub client, which never sees it
/// listen if it still waits; lets the log reader go if QEMU never opened
/// the log (an open for writing that does not block: it reads EOF); joins
/// both and removes the FIFO.
pub(crate) fn end_log<S>(
    give_up: &AtomicBool,
    reader: thread::JoinHandle<std::io::Result<S>>,
    gdb: thread::JoinHandle<std::io::Result<()>>,
    fifo: &Path,
) -> Result<LogEnd<S>> {
    give_up.store(true, Ordering::Relaxed);
    if !reader.is_finished() {
        /// `O_NONBLOCK` on Linux.
        const O_NONBLOCK: i32 = 0o4000;
        let _ = fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(fifo);
    }
    let sink = reader
        .join()
        .map_err(|_| Error::environment("the trace reader panicked"))?;
    let gdb = gdb
        .join()
        .map_err(|_| Error::environment("the gdbstub client panicked"))?;
    let _ = fs::remove_file(fifo);
    Ok(LogEnd { sink, gdb })
}

/// A TCP port free right now on the loopback interface.
pub(crate) fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::environment(format!("no free local port for QEMU's gdbstub: {e}")))
}

/// Runs `config` under the hypervisor with the instruction log on from the
/// first row function's entry; returns the tracker fed with the whole log
/// and the console.
fn traced_run(
    config: Config,
    hypervisor: &Path,
    markers: Markers,
    scratch: &Path,
    timeout: Duration,
    kind: RunKind,
) -> Result<(Tracker, String)> {
    let fifo = scratch.join(format!("breakdown-{kind:?}.fifo"));
    make_fifo(&fifo)?;
    let port = free_port()?;
    // The log starts at the first row's function or marked counter read.
    let entries: Vec<u64> = markers
        .rows
        .iter()
        .flat_map(|r| {
            let mut at: Vec<u64> = r.marks.iter().copied().collect();
            if !r.function.is_empty() {
                at.push(r.function.start);
            }
            at
        })
        .collect();
    let reader = read_log(fifo.clone(), Tracker::new(markers));
    let give_up = Arc::new(AtomicBool::new(false));
    let gdb = {
        let give_up = Arc::clone(&give_up);
        thread::spawn(move || gdb::log_from(port, &entries, "log exec,nochain", timeout, &give_up))
    };
    let opts = RunOptions {
        hypervisor: Some(hypervisor.to_path_buf()),
        deterministic: true,
        timeout: Some(timeout),
        capture: true,
        echo: false,
        qemu_args: [
            "-singlestep".to_owned(),
            "-S".to_owned(),
            "-gdb".to_owned(),
            format!("tcp:127.0.0.1:{port}"),
            "-D".to_owned(),
            fifo.display().to_string(),
        ]
        .map(Into::into)
        .to_vec(),
        ..RunOptions::new(config)
    };
    let outcome = run(&opts);
    let ended = end_log(&give_up, reader, gdb, &fifo)?;
    let outcome = outcome?;
    let console = outcome.console.unwrap_or_default();
    if outcome.exit_code != crate::exit_code::SUCCESS {
        return Err(hypervisor_error(format!(
            "the traced run ended badly: {}\n{}",
            outcome.verdict.describe(),
            super::tail(&console)
        )));
    }
    Ok((ended.sink()?, console))
}

/// The row's figure (Stratum's median), if measured.
fn figure(rows: &[Row], id: &str) -> Option<u64> {
    rows.iter()
        .find(|r| r.op.id == id)
        .and_then(|r| match &r.measured {
            Measured::Both { stratum, .. } => Some(stratum.median),
            Measured::NotApplicable(_) => None,
        })
}

/// The label of a row.
fn label(rows: &[Row], id: &'static str) -> &'static str {
    rows.iter()
        .find(|r| r.op.id == id)
        .map_or(id, |r| r.op.label)
}

/// A note when the row's figure is not the traced run's sample (the runs
/// took different paths).
fn figure_note(b: &RowBreakdown, figure: Option<u64>) -> Option<String> {
    let (f, t) = (figure?, b.traced_sample?);
    (b.el2 > 0 && f != t).then(|| {
        format!(
            "the figure is {f}; the traced run, one instruction per block (-singlestep), \
             counted {t} (docs/benchmarks.md)"
        )
    })
}

/// The printed breakdown (after the figures table).
pub fn table(breakdown: &Breakdown, rows: &[Row]) -> String {
    let list = match breakdown {
        Breakdown::NotMeasured(why) => return format!("Where the instructions go: n/a ({why})\n"),
        Breakdown::Measured(list) => list,
    };
    let mut out = String::from(
        "Where the instructions go: EL2 instructions of one sample, by category \
         (figure = EL2 + the guest's own)\n",
    );
    let mut header = vec![
        "operation".to_owned(),
        "figure".into(),
        "EL2".into(),
        "guest".into(),
        "exits".into(),
    ];
    header.extend(Category::ALL.iter().map(|c| c.label().to_owned()));
    let mut lines = vec![header];
    let mut notes = Vec::new();
    for b in list {
        let mut line = vec![
            label(rows, b.id).to_owned(),
            figure(rows, b.id).map_or("–".to_owned(), |f| f.to_string()),
        ];
        let mut row_notes = b.notes.clone();
        row_notes.extend(figure_note(b, figure(rows, b.id)));
        if b.categories.is_empty() {
            line.push("n/a".to_owned());
        } else {
            line.push(b.el2.to_string());
            line.push(b.guest.to_string());
            line.push(b.exits.to_string());
            line.extend(b.categories.iter().map(|(_, n)| n.to_string()));
        }
        if !row_notes.is_empty() {
            let first = notes.len() + 1;
            for n in row_notes {
                notes.push(format!("({}) {}: {n}", notes.len() + 1, label(rows, b.id)));
            }
            line[0] += &format!(" ({first})");
        }
        lines.push(line);
    }
    out += &align(&lines);
    for n in notes {
        out += &n;
        out.push('\n');
    }
    out
}

/// `results.json`'s `"breakdown"` value.
pub fn json(breakdown: &Breakdown, rows: &[Row]) -> String {
    let list = match breakdown {
        Breakdown::NotMeasured(why) => return format!("{{\"not_measured\": {}}}", json_str(why)),
        Breakdown::Measured(list) => list,
    };
    let mut out = String::from("[\n");
    let items: Vec<String> = list
        .iter()
        .map(|b| {
            let mut fields = vec![format!("\"op\": {}", json_str(b.id))];
            if let Some(f) = figure(rows, b.id) {
                fields.push(format!("\"figure\": {f}"));
            }
            if !b.categories.is_empty() {
                fields.push(format!("\"el2\": {}", b.el2));
                fields.push(format!("\"guest\": {}", b.guest));
                fields.push(format!("\"total\": {}", b.total()));
                fields.push(format!("\"exits\": {}", b.exits));
                let cats: Vec<String> = b
                    .categories
                    .iter()
                    .map(|(c, n)| format!("\"{}\": {n}", c.key()))
                    .collect();
                fields.push(format!("\"categories\": {{{}}}", cats.join(", ")));
                let other: Vec<String> = b
                    .other
                    .iter()
                    .map(|(f, n)| format!("{}: {n}", json_str(f)))
                    .collect();
                fields.push(format!("\"other_functions\": {{{}}}", other.join(", ")));
            }
            if let Some(t) = b.traced_sample {
                fields.push(format!("\"traced_sample\": {t}"));
            }
            let mut notes = b.notes.clone();
            notes.extend(figure_note(b, figure(rows, b.id)));
            let notes: Vec<String> = notes.iter().map(|n| json_str(n)).collect();
            fields.push(format!("\"notes\": [{}]", notes.join(", ")));
            format!("    {{{}}}", fields.join(", "))
        })
        .collect();
    let _ = write!(out, "{}", items.join(",\n"));
    out += "\n  ]";
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::parse::Stats;
    use crate::bench::report::OPERATIONS;

    #[test]
    fn the_profile_sums_by_function_most_first() {
        let el2: HashMap<u64, u64> = [(0x10, 3), (0x14, 3), (0x20, 5), (0x30, 1), (0x40, 2)]
            .into_iter()
            .collect();
        let function: HashMap<u64, &str> = [(0x10, "b"), (0x14, "b"), (0x20, "a"), (0x30, "c")]
            .into_iter()
            .collect();
        assert_eq!(
            profile_text("gicd_read", &el2, &function),
            "profile gicd_read: 14 EL2 instructions\n       6  b\n       5  a\n       2  ??\n       1  c\n"
        );
    }

    #[test]
    fn reads_the_guests_marks() {
        let mut data = Vec::new();
        for (addr, name) in [(0x4008_30ecu64, "vm_switch"), (0x4008_3840, "ipi")] {
            data.extend(addr.to_le_bytes());
            data.extend(name.as_bytes());
            data.push(0);
            data.resize(data.len().next_multiple_of(8), 0);
        }
        data.truncate(data.len() - 4); // the last entry is not padded
        assert_eq!(
            parse_marks(&data),
            [
                (0x4008_30ec, "vm_switch".to_owned()),
                (0x4008_3840, "ipi".to_owned())
            ]
        );
        assert!(parse_marks(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn reads_the_symbolizers_frames() {
        let text = "stratum_core::esr::decode::h0123456789abcdef\n/w/crates/core/src/esr.rs:12:5\n\
                    handle_guest_exit\n/w/hypervisor/src/exit.rs:80:9\n\n\
                    el2_vectors\n??:0:0\n\n";
        let frames = parse_symbolizer(text);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0][0].function, "stratum_core::esr::decode");
        assert_eq!(frames[0][0].file, "/w/crates/core/src/esr.rs");
        assert_eq!(frames[0][1].function, "handle_guest_exit");
        assert_eq!(classify(&frames[0]), Category::Decode);
        assert_eq!(frames[1][0].file, "??");
        assert_eq!(classify(&frames[1]), Category::Vector);
    }

    fn window(el2: u64, guest: u64) -> Window {
        Window {
            el2_total: el2,
            guest,
            ..Window::default()
        }
    }

    #[test]
    fn reports_the_median_timed_sample() {
        let (warm, a, b, last) = (
            window(900, 3),
            window(100, 3),
            window(100, 3),
            window(5000, 3),
        );
        let all = [&warm, &a, &b, &last];
        // The traced run's median picks a sample of that length.
        assert_eq!(pick(&all, Some(103)).map(Window::total), Some(103));
        // Without one, the median of the timed samples (not the warm-up).
        assert_eq!(pick(&all, None).map(Window::total), Some(103));
        assert_eq!(pick(&all[..1], None).map(Window::total), Some(903));
        assert_eq!(pick(&[], None), None);
    }

    fn rows() -> Vec<Row> {
        OPERATIONS
            .iter()
            .map(|&op| Row {
                op,
                measured: Measured::Both {
                    stratum: Stats {
                        n: 3,
                        min: 196,
                        median: 196,
                        p99: 196,
                        max: 196,
                    },
                    bare: None,
                },
            })
            .collect()
    }

    fn hvc(traced: u64) -> RowBreakdown {
        let categories = Category::ALL
            .iter()
            .map(|&c| {
                (
                    c,
                    if c == Category::Vector {
                        40
                    } else if c == Category::Entry {
                        153
                    } else {
                        0
                    },
                )
            })
            .collect();
        RowBreakdown {
            id: "hvc",
            el2: 193,
            guest: 3,
            exits: 1,
            categories,
            other: Vec::new(),
            traced_sample: Some(traced),
            notes: Vec::new(),
        }
    }

    #[test]
    fn prints_and_writes_every_category() {
        let b = Breakdown::Measured(vec![
            hvc(196),
            RowBreakdown {
                id: "vm_switch",
                el2: 0,
                guest: 0,
                exits: 0,
                categories: Vec::new(),
                other: Vec::new(),
                traced_sample: None,
                notes: vec!["not traced: no channels".into()],
            },
        ]);
        let rows = rows();
        let text = table(&b, &rows);
        let line = text
            .lines()
            .find(|l| l.starts_with("HVC"))
            .expect("an HVC line");
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert!(
            cells.ends_with(&[
                "196", "193", "3", "1", "40", "153", "0", "0", "0", "0", "0", "0", "0", "0"
            ]),
            "{line}"
        );
        for c in Category::ALL {
            assert!(text.contains(c.label()), "{text}");
        }
        assert!(
            text.contains("VM switch round trip (channel doorbell) (1)"),
            "{text}"
        );
        assert!(
            text.contains("(1) VM switch round trip (channel doorbell): not traced: no channels")
        );
        let written = json(&b, &rows);
        assert!(written.contains(
            "{\"op\": \"hvc\", \"figure\": 196, \"el2\": 193, \"guest\": 3, \"total\": 196, \"exits\": 1, \
             \"categories\": {\"vector\": 40, \"entry\": 153, \"decode\": 0,"
        ), "{written}");
        assert!(written.contains("\"notes\": [\"not traced: no channels\"]"));
        assert!(
            written.contains("\"other_functions\": {}, \"traced_sample\": 196"),
            "{written}"
        );
        // A figure that is not the traced run's sample is said.
        let text = table(&Breakdown::Measured(vec![hvc(200)]), &rows);
        assert!(text.contains("the figure is 196; the traced run"), "{text}");
        assert_eq!(
            table(
                &Breakdown::NotMeasured("skipped (--no-breakdown)".into()),
                &rows
            ),
            "Where the instructions go: n/a (skipped (--no-breakdown))\n"
        );
        assert_eq!(
            json(&Breakdown::NotMeasured("x".into()), &rows),
            "{\"not_measured\": \"x\"}"
        );
    }
}
