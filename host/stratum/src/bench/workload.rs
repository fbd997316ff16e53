//! The Linux workload rows of `stratum bench`: the tests of the workload
//! program (`tools/workload`, format in [`stratum_abi::workload`]) inside the
//! Debian guest, under Stratum and on bare QEMU, each test's ratio against
//! [`TARGET_RATIO`], and the hypervisor's instructions per guest timer tick
//! ([`per_tick`]). Pure and unit-tested: reading the console, pairing the
//! two runs, the figures, and the rows' table and JSON; [`super`] runs QEMU.
//!
//! **Per-tick method.** The CPU-only loop ([`PER_TICK_TEST`]) makes no
//! system call and touches no new memory: inside its window the only thing
//! besides the loop is the timer interrupts, the guest's handling of them
//! and, under Stratum, the hypervisor's. The workload counts the arch-timer
//! interrupts and all interrupts in the window (`/proc/interrupts`), and
//! before the tests it times the loop in two windows no interrupt fell into
//! (no iteration and 10,000: [`LoopCost`]), which gives the loop's own
//! instructions for any iteration count. In each run, the window's
//! instructions beyond the loop's, divided by its timer interrupts, are the
//! cost of one tick: the guest's own on bare QEMU, the guest's and the
//! hypervisor's under Stratum. Their difference is the hypervisor's
//! instructions per guest timer tick. (The Stratum window, being longer,
//! holds a few more ticks; per tick, that does not matter.)

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use stratum_abi::workload::{
    DONE, ENV_PREFIX, FAIL_PREFIX, LOOP_CALIBRATION_ITERS, LOOP_CALIBRATION_KEY, LOOP_EMPTY_KEY,
    MAX_ROUNDS, ROUNDS_KEY, SAMPLE_PREFIX, Sample, SampleError, TESTS, Test,
};

use super::parse::{fields, untagged};
use super::report::{align, json_str};

/// The target: each test under Stratum takes at most this many times the
/// instructions it takes on bare QEMU.
pub const TARGET_RATIO: f64 = 1.002;
/// The test the per-tick figure comes from.
pub const PER_TICK_TEST: &str = "cpu_loop";
/// How many times over each run does every test (`workload.rounds=`): one
/// window of a test that blocks and wakes (the pipe) moved by up to ±0.3 %
/// from one build of the hypervisor to the next while the exits' cost did
/// not move, because where the ticks fall changes the guest's own
/// scheduling; the ratio over five rounds is steadier, and the table shows
/// the rounds' spread.
pub const ROUNDS: u64 = 5;

/// One test's window in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Timed iterations.
    pub iters: u64,
    /// Counter ticks (instructions) of the window.
    pub ticks: u64,
    /// Arch-timer interrupts inside it.
    pub timer_irqs: u64,
    /// Interrupts of any kind inside it.
    pub irqs: u64,
}

impl Window {
    /// Two windows of the same test as one: every count added.
    fn plus(self, other: Window) -> Window {
        Window {
            iters: self.iters + other.iters,
            ticks: self.ticks + other.ticks,
            timer_irqs: self.timer_irqs + other.timer_irqs,
            irqs: self.irqs + other.irqs,
        }
    }
}

impl From<Sample<'_>> for Window {
    fn from(s: Sample<'_>) -> Self {
        Window {
            iters: s.iters,
            ticks: s.ticks,
            timer_irqs: s.timer_irqs,
            irqs: s.irqs,
        }
    }
}

/// Everything one run of the workload printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadOutput {
    /// The `WORKLOAD-ENV` fields.
    pub env: BTreeMap<String, String>,
    /// Each test's window in each round (`rounds[test][round]`, tests in
    /// [`TESTS`] order, one round at least).
    pub rounds: Vec<Vec<Window>>,
}

impl WorkloadOutput {
    /// The window of test `i` (of [`TESTS`]): its rounds added together.
    pub fn window(&self, i: usize) -> Window {
        sum(&self.rounds[i])
    }
}

/// `rounds`' windows added together (one round at least).
fn sum(rounds: &[Window]) -> Window {
    rounds
        .iter()
        .copied()
        .reduce(Window::plus)
        .expect("one round at least")
}

/// Why a workload transcript could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadError {
    /// The program reported a failed test; the line.
    Failed(String),
    /// No `WORKLOAD-ENV` line: the program did not start.
    NoEnv,
    /// No `WORKLOAD-DONE` line: the program stopped early.
    NotDone,
    /// A `WORKLOAD` line is malformed; the line and what is wrong.
    BadLine(String, String),
    /// A test reported more often than the rounds the run announced.
    Duplicate(String),
    /// The environment's `rounds=` is not a number of 1 to
    /// [`MAX_ROUNDS`]; its text.
    BadRounds(String),
    /// A test reported no result.
    Missing(&'static str),
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(line) => write!(f, "the workload failed: {line}"),
            Self::NoEnv => f.write_str("the workload printed no WORKLOAD-ENV line"),
            Self::NotDone => f.write_str("the workload stopped before WORKLOAD-DONE"),
            Self::BadLine(line, why) => write!(f, "bad workload line ({why}): {line}"),
            Self::Duplicate(test) => {
                write!(
                    f,
                    "test {test} reported more often than the rounds announced"
                )
            }
            Self::BadRounds(text) => {
                write!(f, "WORKLOAD-ENV {ROUNDS_KEY}={text}: not 1 to {MAX_ROUNDS}")
            }
            Self::Missing(test) => write!(f, "test {test} reported no result"),
        }
    }
}

impl std::error::Error for WorkloadError {}

/// Parses a console transcript of the workload (other lines are ignored):
/// the environment, every test of [`TESTS`] exactly once per round (the
/// environment's `rounds=`, 1 if it names none), and the end mark.
pub fn parse_workload(console: &str) -> Result<WorkloadOutput, WorkloadError> {
    let mut env: Option<BTreeMap<String, String>> = None;
    let mut done = false;
    let mut found: BTreeMap<&str, Vec<Window>> = BTreeMap::new();
    for line in console.lines().map(|l| untagged(l.trim()).trim()) {
        let bad = |why: String| WorkloadError::BadLine(line.to_owned(), why);
        if line.starts_with(FAIL_PREFIX) {
            return Err(WorkloadError::Failed(line.to_owned()));
        } else if let Some(rest) = line.strip_prefix(ENV_PREFIX) {
            let map = fields(rest).map_err(bad)?;
            env = Some(
                map.into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            );
        } else if line.starts_with(SAMPLE_PREFIX) {
            let sample = Sample::parse(line).map_err(|e: SampleError| bad(e.to_string()))?;
            found.entry(sample.test).or_default().push(sample.into());
        } else if line == DONE {
            done = true;
        }
    }
    let env = env.ok_or(WorkloadError::NoEnv)?;
    if !done {
        return Err(WorkloadError::NotDone);
    }
    let rounds = match env.get(ROUNDS_KEY) {
        None => 1,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|&n| (1..=MAX_ROUNDS as usize).contains(&n))
            .ok_or_else(|| WorkloadError::BadRounds(text.clone()))?,
    };
    let rounds: Vec<Vec<Window>> = TESTS
        .iter()
        .map(|t| match found.remove(t.id) {
            Some(w) if w.len() > rounds => Err(WorkloadError::Duplicate(t.id.to_owned())),
            Some(w) if w.len() == rounds => Ok(w),
            _ => Err(WorkloadError::Missing(t.id)),
        })
        .collect::<Result<_, _>>()?;
    Ok(WorkloadOutput { env, rounds })
}

/// One test under Stratum and on bare QEMU.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadRow {
    /// The test.
    pub test: Test,
    /// Under Stratum, its rounds added together.
    pub stratum: Window,
    /// On bare QEMU, the same.
    pub bare: Window,
    /// Each round's own ratio (Stratum's window over bare QEMU's of the
    /// same round), in order.
    pub round_ratios: Vec<f64>,
}

impl WorkloadRow {
    /// Stratum's instructions over bare QEMU's.
    pub fn ratio(&self) -> f64 {
        ratio_of(self.stratum, self.bare)
    }

    /// Whether the ratio meets [`TARGET_RATIO`].
    pub fn met(&self) -> bool {
        self.ratio() <= TARGET_RATIO
    }

    /// The lowest and highest of [`WorkloadRow::round_ratios`].
    pub fn round_range(&self) -> (f64, f64) {
        self.round_ratios
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
                (lo.min(r), hi.max(r))
            })
    }
}

/// A window's ticks over another's.
fn ratio_of(stratum: Window, bare: Window) -> f64 {
    stratum.ticks as f64 / bare.ticks.max(1) as f64
}

/// Pairs the two runs' windows test by test; both must have run the same
/// rounds, each of the same number of iterations.
pub fn pair(stratum: &WorkloadOutput, bare: &WorkloadOutput) -> Result<Vec<WorkloadRow>, String> {
    if stratum.rounds.first().map(Vec::len) != bare.rounds.first().map(Vec::len) {
        return Err(format!(
            "{} round(s) under Stratum but {} on bare QEMU",
            stratum.rounds.first().map_or(0, Vec::len),
            bare.rounds.first().map_or(0, Vec::len)
        ));
    }
    TESTS
        .iter()
        .zip(stratum.rounds.iter().zip(&bare.rounds))
        .map(|(&test, (s_rounds, b_rounds))| {
            let round_ratios = s_rounds
                .iter()
                .zip(b_rounds)
                .map(|(&rs, &rb)| {
                    if rs.iters == rb.iters {
                        Ok(ratio_of(rs, rb))
                    } else {
                        Err(format!(
                            "{}: {} iterations under Stratum but {} on bare QEMU",
                            test.id, rs.iters, rb.iters
                        ))
                    }
                })
                .collect::<Result<_, _>>()?;
            Ok(WorkloadRow {
                test,
                stratum: sum(s_rounds),
                bare: sum(b_rounds),
                round_ratios,
            })
        })
        .collect()
}

/// The CPU loop's own cost, from a run's `WORKLOAD-ENV` line
/// ([`LOOP_EMPTY_KEY`], [`LOOP_CALIBRATION_KEY`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoopCost {
    /// Ticks of a window without iterations (the method's own).
    pub empty: u64,
    /// Ticks per iteration.
    pub per_iteration: f64,
}

impl LoopCost {
    /// Reads the calibration from a run's environment.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, String> {
        let number = |key: &str| -> Result<u64, String> {
            let text = env
                .get(key)
                .ok_or_else(|| format!("the workload printed no {key}="))?;
            text.parse()
                .map_err(|_| format!("{key}={text} is not a number"))
        };
        let empty = number(LOOP_EMPTY_KEY)?;
        let some = number(LOOP_CALIBRATION_KEY)?;
        if some < empty {
            return Err(format!(
                "{LOOP_CALIBRATION_KEY}={some} is less than {LOOP_EMPTY_KEY}={empty}"
            ));
        }
        Ok(LoopCost {
            empty,
            per_iteration: (some - empty) as f64 / LOOP_CALIBRATION_ITERS as f64,
        })
    }

    /// Ticks of a window of `iters` iterations without interrupts.
    pub fn window(&self, iters: u64) -> f64 {
        self.empty as f64 + self.per_iteration * iters as f64
    }
}

/// The hypervisor's instructions per guest timer tick (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerTick {
    /// The figure: the tick's cost under Stratum minus on bare QEMU.
    pub instructions: f64,
    /// The loop's own cost per iteration.
    pub loop_per_iteration: f64,
    /// Instructions per tick beyond the loop on bare QEMU: the guest's own.
    pub bare_per_tick: f64,
    /// The same under Stratum: the guest's and the hypervisor's.
    pub stratum_per_tick: f64,
    /// Timer interrupts in the window under Stratum.
    pub timer_irqs: u64,
    /// The same on bare QEMU.
    pub bare_timer_irqs: u64,
    /// Instructions between two ticks on bare QEMU.
    pub tick_period: f64,
}

impl PerTick {
    /// What [`TARGET_RATIO`] leaves per tick: its fraction of the period.
    pub fn budget(&self) -> f64 {
        (TARGET_RATIO - 1.0) * self.tick_period
    }

    /// Whether the figure is within [`PerTick::budget`].
    pub fn met(&self) -> bool {
        self.instructions <= self.budget()
    }
}

/// The per-tick figure from the [`PER_TICK_TEST`] row and the two runs' loop
/// costs, or why there is none.
pub fn per_tick(
    rows: &[WorkloadRow],
    stratum_loop: Result<LoopCost, String>,
    bare_loop: Result<LoopCost, String>,
) -> Result<PerTick, String> {
    let row = rows
        .iter()
        .find(|r| r.test.id == PER_TICK_TEST)
        .ok_or_else(|| format!("no {PER_TICK_TEST} result"))?;
    let (s, b) = (row.stratum, row.bare);
    if s.timer_irqs == 0 || b.timer_irqs == 0 {
        return Err(format!(
            "{PER_TICK_TEST} saw no timer tick ({} under Stratum, {} on bare QEMU): too few iterations",
            s.timer_irqs, b.timer_irqs
        ));
    }
    if s.irqs != s.timer_irqs || b.irqs != b.timer_irqs {
        return Err(format!(
            "{PER_TICK_TEST} took other interrupts besides the timer's \
             ({}/{} under Stratum, {}/{} on bare QEMU): the difference is not the ticks' alone",
            s.irqs - s.timer_irqs,
            s.irqs,
            b.irqs - b.timer_irqs,
            b.irqs
        ));
    }
    let (stratum_loop, bare_loop) = (stratum_loop?, bare_loop?);
    if stratum_loop != bare_loop {
        return Err(format!(
            "the loop without interrupts took {stratum_loop:?} under Stratum but {bare_loop:?} \
             on bare QEMU: the hypervisor ran while the guest saw no interrupt"
        ));
    }
    let beyond_loop =
        |w: Window| (w.ticks as f64 - bare_loop.window(w.iters)) / w.timer_irqs as f64;
    let (stratum_per_tick, bare_per_tick) = (beyond_loop(s), beyond_loop(b));
    Ok(PerTick {
        instructions: stratum_per_tick - bare_per_tick,
        loop_per_iteration: bare_loop.per_iteration,
        bare_per_tick,
        stratum_per_tick,
        timer_irqs: s.timer_irqs,
        bare_timer_irqs: b.timer_irqs,
        tick_period: b.ticks as f64 / b.timer_irqs as f64,
    })
}

/// The VM's exits by reason over a whole run, from the table the
/// hypervisor prints when the VM stops (`[stratum]   irq vtimer   5375
/// 5375`: the reason, one column per vCPU, the total), in table order, the
/// `total` row included. Empty when the console has no such table.
pub fn exit_totals(console: &str) -> Vec<(String, u64)> {
    let mut rows = Vec::new();
    let mut lines = console.lines().map(str::trim_end);
    if lines.by_ref().any(|l| l.ends_with("exits by reason")) {
        for line in lines {
            let Some(row) = line.strip_prefix("[stratum]   ") else {
                break;
            };
            let words: Vec<&str> = row.split_whitespace().collect();
            let label_len = words
                .iter()
                .position(|w| w.parse::<u64>().is_ok())
                .unwrap_or(words.len());
            let total = words.last().and_then(|w| w.parse::<u64>().ok());
            match total {
                Some(total) if label_len > 0 => rows.push((words[..label_len].join(" "), total)),
                _ if words.first() == Some(&"reason") => {}
                _ => break,
            }
        }
    }
    rows
}

/// The workload rows of a report.
#[derive(Clone, Debug, PartialEq)]
pub enum LinuxWorkload {
    /// Both runs measured.
    Measured {
        /// The kernel release.
        kernel: String,
        /// The kernel command line of both runs.
        cmdline: String,
        /// One row per test, in [`TESTS`] order.
        rows: Vec<WorkloadRow>,
        /// The per-tick figure, or why there is none.
        per_tick: Result<PerTick, String>,
        /// The Stratum run's exits by reason, boot to power-off
        /// ([`exit_totals`]).
        exits: Vec<(String, u64)>,
    },
    /// Not measured, and why.
    NotMeasured(String),
}

impl LinuxWorkload {
    /// The rows from the two runs' transcripts, with the Stratum run's
    /// exits.
    pub fn from_runs(
        kernel: String,
        cmdline: String,
        stratum: &WorkloadOutput,
        bare: &WorkloadOutput,
        exits: Vec<(String, u64)>,
    ) -> Result<Self, String> {
        let rows = pair(stratum, bare)?;
        let per_tick = per_tick(
            &rows,
            LoopCost::from_env(&stratum.env),
            LoopCost::from_env(&bare.env),
        );
        Ok(Self::Measured {
            kernel,
            cmdline,
            rows,
            per_tick,
            exits,
        })
    }
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "NO" }
}

/// The workload's part of the terminal table: a heading, one line per test
/// and the per-tick figure (or one line saying why nothing was measured).
pub fn table(workload: &LinuxWorkload) -> String {
    let (kernel, cmdline, rows, per_tick, exits) = match workload {
        LinuxWorkload::NotMeasured(why) => return format!("Linux workload: n/a ({why})\n"),
        LinuxWorkload::Measured {
            kernel,
            cmdline,
            rows,
            per_tick,
            exits,
        } => (kernel, cmdline, rows, per_tick, exits),
    };
    let mut out =
        format!("Linux workload ({kernel}, 1 vCPU, `{cmdline}`), instructions per test window:\n");
    let mut lines = vec![
        [
            "test",
            "iterations",
            "Stratum",
            "bare QEMU",
            "Stratum per iteration",
            "ratio",
            "rounds: lowest–highest",
            "target",
            "met",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for row in rows {
        lines.push(vec![
            row.test.label.to_owned(),
            row.stratum.iters.to_string(),
            row.stratum.ticks.to_string(),
            row.bare.ticks.to_string(),
            format!("{:.1}", row.stratum.ticks as f64 / row.stratum.iters as f64),
            format!("{:.4}×", row.ratio()),
            match row.round_range() {
                _ if row.round_ratios.len() < 2 => "–".to_owned(),
                (lo, hi) => format!("{} × {lo:.4}–{hi:.4}", row.round_ratios.len()),
            },
            format!("≤ {TARGET_RATIO}×"),
            yes_no(row.met()).to_owned(),
        ]);
    }
    out += &align(&lines);
    match per_tick {
        Ok(t) => {
            let _ = writeln!(
                out,
                "hypervisor instructions per guest timer tick: {:.0} ({PER_TICK_TEST} at {:.2} \
                 per iteration: besides the loop {:.0} per tick under Stratum over {} ticks, \
                 {:.0} on bare QEMU over {}); the {TARGET_RATIO}× target leaves {:.0} (of {:.0} \
                 between ticks): {}",
                t.instructions,
                t.loop_per_iteration,
                t.stratum_per_tick,
                t.timer_irqs,
                t.bare_per_tick,
                t.bare_timer_irqs,
                t.budget(),
                t.tick_period,
                yes_no(t.met())
            );
        }
        Err(why) => {
            let _ = writeln!(
                out,
                "hypervisor instructions per guest timer tick: n/a ({why})"
            );
        }
    }
    if let Some(line) = exits_line(exits) {
        out += &line;
        out.push('\n');
    }
    out
}

/// The Stratum run's exits, largest first: `exits under Stratum, boot to
/// power-off: 34315 (mmio UART write 14380, …)`.
fn exits_line(exits: &[(String, u64)]) -> Option<String> {
    let total = exits.iter().find(|(r, _)| r == "total")?.1;
    let mut reasons: Vec<&(String, u64)> = exits.iter().filter(|(r, _)| r != "total").collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let shown: Vec<String> = reasons
        .iter()
        .take(4)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let rest: u64 = reasons.iter().skip(4).map(|(_, n)| n).sum();
    let mut line = format!(
        "exits under Stratum, boot to power-off: {total} ({}",
        shown.join(", ")
    );
    if rest > 0 {
        let _ = write!(line, ", others {rest}");
    }
    line.push(')');
    Some(line)
}

/// One line for the chart: the range of the ratios and the per-tick figure.
pub fn summary(workload: &LinuxWorkload) -> Option<String> {
    let LinuxWorkload::Measured { rows, per_tick, .. } = workload else {
        return None;
    };
    let ratios = rows.iter().map(WorkloadRow::ratio);
    let low = ratios.clone().fold(f64::INFINITY, f64::min);
    let high = ratios.fold(f64::NEG_INFINITY, f64::max);
    let mut line = format!(
        "Linux workload: {low:.4}–{high:.4}× bare QEMU's instructions (target ≤ {TARGET_RATIO}×)"
    );
    if let Ok(t) = per_tick {
        let _ = write!(
            line,
            "; {:.0} hypervisor instructions per timer tick",
            t.instructions
        );
    }
    Some(line)
}

/// A measured workload for other modules' tests: every test 1,000 ticks
/// (4 timer ticks) on bare QEMU and 1,300 under Stratum.
#[cfg(test)]
pub(super) fn example() -> LinuxWorkload {
    let run = |ticks: u64| {
        let mut text = String::from("WORKLOAD-ENV loop_empty=2 loop_10000=50002\n");
        for t in TESTS {
            text += &format!(
                "WORKLOAD test={} iters=2 ticks={ticks} timer_irqs=4 irqs=4\n",
                t.id
            );
        }
        parse_workload(&(text + "WORKLOAD-DONE\n")).expect("valid")
    };
    LinuxWorkload::from_runs(
        "6.1.0-57-arm64".into(),
        "console=ttyAMA0 stratum.test=workload".into(),
        &run(1_300),
        &run(1_000),
        vec![("irq vtimer".into(), 32), ("total".into(), 40)],
    )
    .expect("pairs")
}

fn window_json(w: &Window) -> String {
    format!(
        "{{\"ticks\": {}, \"timer_irqs\": {}, \"irqs\": {}}}",
        w.ticks, w.timer_irqs, w.irqs
    )
}

/// The value of `results.json`'s `linux_workload` key.
pub fn json(workload: &LinuxWorkload) -> String {
    let (kernel, cmdline, rows, per_tick, exits) = match workload {
        LinuxWorkload::NotMeasured(why) => {
            return format!(
                "{{\"not_measured\": {}, \"target_ratio\": {TARGET_RATIO}}}",
                json_str(why)
            );
        }
        LinuxWorkload::Measured {
            kernel,
            cmdline,
            rows,
            per_tick,
            exits,
        } => (kernel, cmdline, rows, per_tick, exits),
    };
    let tests: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "      {{\"test\": {}, \"label\": {}, \"iterations\": {}, \"stratum\": {}, \
                 \"bare_qemu\": {}, \"ratio\": {:.5}, \"round_ratios\": [{}], \"met\": {}}}",
                json_str(r.test.id),
                json_str(r.test.label),
                r.stratum.iters,
                window_json(&r.stratum),
                window_json(&r.bare),
                r.ratio(),
                r.round_ratios
                    .iter()
                    .map(|x| format!("{x:.5}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.met()
            )
        })
        .collect();
    let per_tick = match per_tick {
        Ok(t) => format!(
            "{{\"instructions\": {:.1}, \"test\": {}, \"loop_per_iteration\": {:.4}, \
             \"stratum_per_tick\": {:.1}, \"bare_per_tick\": {:.1}, \
             \"timer_irqs\": {}, \"bare_timer_irqs\": {}, \"tick_period\": {:.1}, \
             \"budget\": {:.1}, \"met\": {}}}",
            t.instructions,
            json_str(PER_TICK_TEST),
            t.loop_per_iteration,
            t.stratum_per_tick,
            t.bare_per_tick,
            t.timer_irqs,
            t.bare_timer_irqs,
            t.tick_period,
            t.budget(),
            t.met()
        ),
        Err(why) => format!("{{\"not_measured\": {}}}", json_str(why)),
    };
    let exits: Vec<String> = exits
        .iter()
        .map(|(reason, n)| format!("{}: {n}", json_str(reason)))
        .collect();
    format!(
        "{{\"kernel\": {}, \"cmdline\": {}, \"target_ratio\": {TARGET_RATIO}, \"tests\": [\n{}\n    ],\n    \
         \"hypervisor_instructions_per_timer_tick\": {per_tick},\n    \
         \"stratum_exits\": {{{}}}}}",
        json_str(kernel),
        json_str(cmdline),
        tests.join(",\n"),
        exits.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transcript as the program prints it (with the console's `\r`).
    fn transcript(samples: &[(&str, u64, u64, u64)]) -> String {
        let mut text = String::from(
            "[   12.9] Run /init as init process\r\n\
             WORKLOAD-ENV freq=62500000 divisor=1 page=4096 loop_empty=2 loop_10000=50002\r\n",
        );
        for &(test, ticks, timer, all) in samples {
            text += &format!(
                "WORKLOAD test={test} iters=10 ticks={ticks} timer_irqs={timer} irqs={all}\r\n"
            );
        }
        text + "WORKLOAD-DONE\r\nSTRATUM-LINUX: workload exit 0\r\n"
    }

    fn every_test(ticks: u64, timer: u64) -> String {
        let samples: Vec<(&str, u64, u64, u64)> =
            TESTS.iter().map(|t| (t.id, ticks, timer, timer)).collect();
        transcript(&samples)
    }

    #[test]
    fn parses_a_complete_transcript_in_test_order() {
        // Printed in another order: the result is in TESTS order.
        let mut samples: Vec<(&str, u64, u64, u64)> = TESTS
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id, 1000 + i as u64, 2, 3))
            .collect();
        samples.reverse();
        let out = parse_workload(&transcript(&samples)).expect("complete");
        assert_eq!(out.env["freq"], "62500000");
        assert_eq!(out.rounds.len(), TESTS.len());
        for i in 0..TESTS.len() {
            assert_eq!(
                out.window(i),
                Window {
                    iters: 10,
                    ticks: 1000 + i as u64,
                    timer_irqs: 2,
                    irqs: 3
                }
            );
        }
        // VM tags in front of the lines are removed first.
        let tagged: String = every_test(5, 1)
            .lines()
            .map(|l| format!("linux | {l}\n"))
            .collect();
        assert_eq!(parse_workload(&tagged), parse_workload(&every_test(5, 1)));
    }

    #[test]
    fn incomplete_or_malformed_transcripts_are_rejected() {
        let good = every_test(100, 1);
        assert!(parse_workload(&good).is_ok());
        assert_eq!(
            parse_workload(&good.replace("WORKLOAD-DONE", "")),
            Err(WorkloadError::NotDone)
        );
        assert_eq!(
            parse_workload(&good.replace("WORKLOAD-ENV", "WORKLOAD-ENVY")),
            Err(WorkloadError::NoEnv)
        );
        let no_memcpy: String = good
            .lines()
            .filter(|l| !l.contains("test=memcpy_8m"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            parse_workload(&no_memcpy),
            Err(WorkloadError::Missing("memcpy_8m"))
        );
        let cpu_loop = good
            .lines()
            .find(|l| l.contains("test=cpu_loop"))
            .expect("in the transcript");
        let twice = good.replace("WORKLOAD-DONE", &format!("{cpu_loop}\nWORKLOAD-DONE"));
        assert_eq!(
            parse_workload(&twice),
            Err(WorkloadError::Duplicate("cpu_loop".into()))
        );
        let failed = good.replace(
            "WORKLOAD-DONE",
            "WORKLOAD-FAIL test=fork_exit_wait: fork: Out of memory",
        );
        assert!(matches!(
            parse_workload(&failed),
            Err(WorkloadError::Failed(l)) if l.contains("fork_exit_wait")
        ));
        for (name, bad) in [
            ("truncated", "ticks=100 timer_irqs=1 irqs=1"),
            ("no number", "ticks=lots timer_irqs=1 irqs=1"),
            ("extra key", "ticks=100 timer_irqs=1 irqs=1 speed=2"),
            ("timer over all", "ticks=100 timer_irqs=2 irqs=1"),
        ] {
            let line = match name {
                "truncated" => "WORKLOAD test=cpu_loop iters=10 ticks=100".to_owned(),
                _ => format!("WORKLOAD test=cpu_loop iters=10 {bad}"),
            };
            let text = good.replace(
                "WORKLOAD test=cpu_loop iters=10 ticks=100 timer_irqs=1 irqs=1",
                &line,
            );
            assert!(
                matches!(parse_workload(&text), Err(WorkloadError::BadLine(l, _)) if l == line),
                "{name}"
            );
        }
        let bad_env = good.replace("page=4096", "page");
        assert!(matches!(
            parse_workload(&bad_env),
            Err(WorkloadError::BadLine(..))
        ));
        assert_eq!(parse_workload(""), Err(WorkloadError::NoEnv));
    }

    fn output(ticks: u64, timer: u64, all: u64) -> WorkloadOutput {
        let mut out = parse_workload(&every_test(ticks, timer)).expect("valid");
        for w in out.rounds.iter_mut().flatten() {
            w.irqs = all;
        }
        out
    }

    /// A transcript of `rounds` rounds: round `r` of every test takes
    /// `ticks[r]`, with 2 timer ticks.
    fn in_rounds(ticks: &[u64]) -> String {
        let mut text = format!(
            "WORKLOAD-ENV freq=62500000 divisor=1 rounds={} page=4096 loop_empty=2 \
             loop_10000=50002\n",
            ticks.len()
        );
        for t in ticks {
            for test in TESTS {
                text += &format!(
                    "WORKLOAD test={} iters=10 ticks={t} timer_irqs=2 irqs=2\n",
                    test.id
                );
            }
        }
        text + "WORKLOAD-DONE\n"
    }

    #[test]
    fn rounds_add_up_and_each_keeps_its_own_ratio() {
        let stratum = parse_workload(&in_rounds(&[1_010, 990, 1_004])).expect("three rounds");
        let bare = parse_workload(&in_rounds(&[1_000, 1_000, 1_000])).expect("three rounds");
        assert_eq!(stratum.rounds[0].len(), 3);
        assert_eq!(
            stratum.window(2),
            Window {
                iters: 30,
                ticks: 3_004,
                timer_irqs: 6,
                irqs: 6
            }
        );
        let rows = pair(&stratum, &bare).expect("the same rounds");
        // Over all rounds, not the worst or the best one.
        assert!((rows[0].ratio() - 3_004.0 / 3_000.0).abs() < 1e-12);
        assert_eq!(rows[0].round_ratios, vec![1.01, 0.99, 1.004]);
        assert_eq!(rows[0].round_range(), (0.99, 1.01));
        assert!(
            rows[0].met(),
            "over all rounds 1.0013, within the target, though one round alone is not"
        );
        let t = table(&LinuxWorkload::Measured {
            kernel: "k".into(),
            cmdline: "c".into(),
            rows,
            per_tick: Err("none".into()),
            exits: Vec::new(),
        });
        assert!(t.contains("3 × 0.9900–1.0100"), "{t}");
        // The two runs must have run as many rounds.
        let one = parse_workload(&in_rounds(&[1_000])).expect("one round");
        let e = pair(&stratum, &one).expect_err("3 rounds against 1");
        assert_eq!(e, "3 round(s) under Stratum but 1 on bare QEMU");
    }

    #[test]
    fn a_round_short_or_too_many_is_refused() {
        let three = in_rounds(&[5, 5, 5]);
        let short = three.replacen(
            "WORKLOAD test=pipe_round_trip iters=10 ticks=5 timer_irqs=2 irqs=2\n",
            "",
            1,
        );
        assert_eq!(
            parse_workload(&short),
            Err(WorkloadError::Missing("pipe_round_trip"))
        );
        let extra = three.replace(
            "WORKLOAD-DONE",
            "WORKLOAD test=cpu_loop iters=10 ticks=5 timer_irqs=2 irqs=2\nWORKLOAD-DONE",
        );
        assert_eq!(
            parse_workload(&extra),
            Err(WorkloadError::Duplicate("cpu_loop".into()))
        );
        for bad in ["0", "11", "x", ""] {
            let text = three.replace("rounds=3", &format!("rounds={bad}"));
            assert_eq!(
                parse_workload(&text),
                Err(WorkloadError::BadRounds(bad.into())),
                "{bad}"
            );
        }
        let e = WorkloadError::BadRounds("0".into()).to_string();
        assert_eq!(e, "WORKLOAD-ENV rounds=0: not 1 to 10");
    }

    /// The per-tick figure of two outputs, with their loop costs.
    fn tick(stratum: &WorkloadOutput, bare: &WorkloadOutput) -> Result<PerTick, String> {
        let rows = pair(stratum, bare)?;
        per_tick(
            &rows,
            LoopCost::from_env(&stratum.env),
            LoopCost::from_env(&bare.env),
        )
    }

    #[test]
    fn rows_compare_the_runs_and_the_tick_cost_follows() {
        // 250 ticks of 250,000 instructions; Stratum adds 1,400 per tick.
        let bare = output(62_500_000, 250, 250);
        let stratum = output(62_500_000 + 250 * 1_400, 250, 250);
        let rows = pair(&stratum, &bare).expect("same iterations");
        assert_eq!(rows.len(), TESTS.len());
        assert!((rows[0].ratio() - 1.0056).abs() < 1e-9);
        assert!(!rows[0].met());
        let t = tick(&stratum, &bare).expect("a clean window");
        assert_eq!((t.timer_irqs, t.bare_timer_irqs), (250, 250));
        assert!((t.instructions - 1400.0).abs() < 1e-6, "{t:?}");
        assert!((t.loop_per_iteration - 5.0).abs() < 1e-9);
        assert!((t.tick_period - 250_000.0).abs() < 1e-9);
        assert!((t.budget() - 500.0).abs() < 1e-6);
        assert!(!t.met());
        // A faster Stratum gives a negative figure, which meets the budget.
        let t = tick(&output(62_499_000, 250, 250), &bare).expect("clean");
        assert!(t.instructions < 0.0 && t.met());
        let equal = pair(&bare, &bare).expect("pairs");
        assert!(equal.iter().all(WorkloadRow::met));
    }

    #[test]
    fn the_longer_window_under_stratum_holds_more_ticks_without_biasing_the_figure() {
        // The loop: 10 iterations of 5 plus 2 = 52. A tick costs the guest
        // 3,600 and the hypervisor 1,400; the Stratum window, longer, sees
        // 1,006 ticks where bare QEMU sees 1,000.
        let bare = output(52 + 1_000 * 3_600, 1_000, 1_000);
        let stratum = output(52 + 1_006 * (3_600 + 1_400), 1_006, 1_006);
        let t = tick(&stratum, &bare).expect("clean");
        assert!((t.instructions - 1400.0).abs() < 1e-6, "{t:?}");
        assert!((t.bare_per_tick - 3600.0).abs() < 1e-6);
        assert!((t.stratum_per_tick - 5000.0).abs() < 1e-6);
        // The plain difference over the ticks would say 1,421.5.
        let naive = (stratum.window(6).ticks - bare.window(6).ticks) as f64 / 1006.0;
        assert!(naive > 1421.0);
    }

    #[test]
    fn no_tick_figure_from_a_window_it_cannot_come_from() {
        let bare = output(1_000, 0, 0);
        assert!(
            tick(&output(1_100, 0, 0), &bare)
                .expect_err("no tick")
                .contains("no timer tick")
        );
        let e = tick(&output(1_100, 2, 3), &output(1_000, 2, 2)).expect_err("a UART interrupt");
        assert!(e.contains("other interrupts"), "{e}");
        let mut short = output(1_000, 2, 2);
        short.rounds[3][0].iters = 5;
        let e = pair(&output(1_000, 2, 2), &short).expect_err("iterations differ");
        assert!(e.starts_with("fork_exit_wait: 10 iterations"), "{e}");
        assert!(per_tick(&[], Err("x".into()), Err("x".into())).is_err());
        // The loop without interrupts must cost the same in both runs.
        let mut slow = output(1_100, 2, 2);
        slow.env.insert(LOOP_CALIBRATION_KEY.into(), "50010".into());
        let e = tick(&slow, &output(1_000, 2, 2)).expect_err("loop costs differ");
        assert!(
            e.contains("the hypervisor ran while the guest saw no interrupt"),
            "{e}"
        );
    }

    #[test]
    fn the_loop_cost_comes_from_the_environment() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        let cost = LoopCost::from_env(&env(&[("loop_empty", "3"), ("loop_10000", "50003")]))
            .expect("valid");
        assert_eq!(cost.empty, 3);
        assert!((cost.per_iteration - 5.0).abs() < 1e-12);
        assert!((cost.window(1_000_000) - 5_000_003.0).abs() < 1e-6);
        for (name, pairs) in [
            ("missing", &[("loop_empty", "3")][..]),
            (
                "not a number",
                &[("loop_empty", "3"), ("loop_10000", "5e4")],
            ),
            (
                "shorter than empty",
                &[("loop_empty", "30"), ("loop_10000", "20")],
            ),
        ] {
            assert!(LoopCost::from_env(&env(pairs)).is_err(), "{name}");
        }
    }

    /// The end of a Stratum run's console: the exit table.
    const EXIT_TABLE: &str = "\
[   21.604729] reboot: Power down\r
[stratum] vm0 'vmlinuz-6-1' (stopped): exits by reason\r
[stratum]   reason                        vcpu0      total\r
[stratum]   hvc PSCI_SYSTEM_OFF               1          1\r
[stratum]   mmio UART read                14338      14338\r
[stratum]   mmio UART write               14380      14380\r
[stratum]   sysreg ID_*                      66         66\r
[stratum]   wfi                               1          1\r
[stratum]   irq vtimer                     5375       5375\r
[stratum]   fp trap                           1          1\r
[stratum]   total                         34162      34162\r
[stratum] all VMs stopped\r
";

    fn measured() -> LinuxWorkload {
        LinuxWorkload::from_runs(
            "6.1.0-57-arm64".into(),
            "console=ttyAMA0 stratum.test=workload".into(),
            &output(250_350_000, 1000, 1000),
            &output(250_000_000, 1000, 1000),
            exit_totals(EXIT_TABLE),
        )
        .expect("pairs")
    }

    #[test]
    fn reads_the_exit_table() {
        let exits = exit_totals(EXIT_TABLE);
        assert_eq!(exits.len(), 8);
        assert_eq!(exits[0], ("hvc PSCI_SYSTEM_OFF".to_owned(), 1));
        assert_eq!(exits[5], ("irq vtimer".to_owned(), 5375));
        assert_eq!(exits[7], ("total".to_owned(), 34162));
        assert_eq!(
            exits_line(&exits).as_deref(),
            Some(
                "exits under Stratum, boot to power-off: 34162 (mmio UART write 14380, \
                 mmio UART read 14338, irq vtimer 5375, sysreg ID_* 66, others 3)"
            )
        );
        // Two vCPUs: the last column is the total.
        let two = "x: exits by reason\n[stratum]   reason  vcpu0  vcpu1  total\n\
                   [stratum]   irq kick   3   4   7\n[stratum]   total   3   4   7\n";
        assert_eq!(
            exit_totals(two),
            [("irq kick".to_owned(), 7), ("total".to_owned(), 7)]
        );
        assert!(exit_totals("no table here\n").is_empty());
        assert_eq!(exits_line(&[]), None);
    }

    #[test]
    fn the_table_has_a_line_per_test_and_the_tick_figure() {
        let t = table(&measured());
        let lines: Vec<&str> = t.lines().collect();
        // Heading, header, rule, the tests, the per-tick line, the exits.
        assert_eq!(lines.len(), 3 + TESTS.len() + 2, "{t}");
        assert!(lines[0].contains("6.1.0-57-arm64") && lines[0].contains("stratum.test=workload"));
        let fork = lines
            .iter()
            .find(|l| l.starts_with("fork + exit + wait"))
            .expect("a fork row");
        for cell in [
            "250350000",
            "250000000",
            "25035000.0",
            "1.0014×",
            "≤ 1.002×",
            "yes",
        ] {
            assert!(fork.contains(cell), "{cell}: {fork}");
        }
        let tick = lines[lines.len() - 2];
        assert!(
            tick.starts_with("hypervisor instructions per guest timer tick: 350 ("),
            "{t}"
        );
        assert!(tick.ends_with("leaves 500 (of 250000 between ticks): yes"));
        assert!(
            lines[lines.len() - 1].starts_with("exits under Stratum, boot to power-off: 34162 (")
        );
        assert_eq!(
            table(&LinuxWorkload::NotMeasured("skipped (--no-linux)".into())),
            "Linux workload: n/a (skipped (--no-linux))\n"
        );
    }

    #[test]
    fn the_json_has_every_test_and_the_tick_figure() {
        let j = json(&measured());
        assert_eq!(j.matches("\"test\": ").count(), TESTS.len() + 1);
        assert!(
            j.contains("\"stratum\": {\"ticks\": 250350000, \"timer_irqs\": 1000, \"irqs\": 1000}")
        );
        assert!(j.contains("\"ratio\": 1.00140, \"round_ratios\": [1.00140], \"met\": true"));
        assert!(j.contains("\"instructions\": 350.0, \"test\": \"cpu_loop\""));
        assert!(j.contains("\"budget\": 500.0, \"met\": true"));
        assert!(j.contains("\"stratum_exits\": {\"hvc PSCI_SYSTEM_OFF\": 1, "));
        assert!(j.contains("\"total\": 34162}"));
        assert_eq!(
            summary(&example()).as_deref(),
            Some(
                "Linux workload: 1.3000–1.3000× bare QEMU's instructions (target ≤ 1.002×); \
                 75 hypervisor instructions per timer tick"
            )
        );
        assert_eq!(summary(&LinuxWorkload::NotMeasured("x".into())), None);
        assert_eq!(
            json(&LinuxWorkload::NotMeasured("x \"y\"".into())),
            "{\"not_measured\": \"x \\\"y\\\"\", \"target_ratio\": 1.002}"
        );
    }
}
