//! Reading what the bench guest prints (`guests/src/bin/bench.rs`) and what
//! Linux prints, and the statistics, all pure.
//!
//! The guest prints one `BENCH-ENV key=value …` line, one `BENCH op=NAME n=N
//! min= median= p99= max= hist=v:c,…` line per operation, and `BENCH-DONE`.
//! [`parse_guest`] checks every line, and recomputes the statistics from the
//! histogram ([`Stats::from_hist`]): a guest whose summary disagrees with
//! its own samples is an error, not a result.

use std::collections::BTreeMap;
use std::fmt;

/// min/median/p99/max of one operation's samples, in counter ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Number of samples.
    pub n: u64,
    /// Smallest sample.
    pub min: u64,
    /// The lower median: the sample at sorted index `(n - 1) / 2`.
    pub median: u64,
    /// 99th percentile, nearest rank: sorted index `ceil(0.99 n) - 1`.
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
}

impl Stats {
    /// The statistics of the samples a histogram describes (`(value, count)`
    /// pairs, in any order; zero counts are ignored). `None` when empty.
    pub fn from_hist(hist: &[(u64, u64)]) -> Option<Stats> {
        let mut bins: Vec<(u64, u64)> = hist.iter().copied().filter(|&(_, c)| c > 0).collect();
        bins.sort_unstable();
        let n: u64 = bins.iter().map(|&(_, c)| c).sum();
        if n == 0 {
            return None;
        }
        // The value at sorted (0-based) index `i`.
        let at = |i: u64| {
            let mut seen = 0;
            for &(v, c) in &bins {
                seen += c;
                if i < seen {
                    return v;
                }
            }
            bins[bins.len() - 1].0
        };
        Some(Stats {
            n,
            min: bins[0].0,
            median: at((n - 1) / 2),
            p99: at((99 * n).div_ceil(100) - 1),
            max: bins[bins.len() - 1].0,
        })
    }

    /// The statistics of raw samples.
    pub fn from_samples(samples: &[u64]) -> Option<Stats> {
        let hist: Vec<(u64, u64)> = samples.iter().map(|&s| (s, 1)).collect();
        Self::from_hist(&hist)
    }
}

/// One `BENCH op=…` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpResult {
    /// The operation's name (`hvc`, `gicd_read`, …).
    pub op: String,
    /// Its statistics (checked against `hist`).
    pub stats: Stats,
    /// The samples as sorted `(value, count)` pairs.
    pub hist: Vec<(u64, u64)>,
}

/// Everything one run of the bench guest printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestOutput {
    /// The `BENCH-ENV` fields.
    pub env: BTreeMap<String, String>,
    /// The operations, in the order printed.
    pub ops: Vec<OpResult>,
}

impl GuestOutput {
    /// The result of operation `op`, if measured.
    pub fn op(&self, op: &str) -> Option<&OpResult> {
        self.ops.iter().find(|o| o.op == op)
    }
}

/// Why the guest's output could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The guest reported a failure (`STRATUM-TEST FAIL …`); the line.
    GuestFailed(String),
    /// No `BENCH-ENV` line.
    NoEnv,
    /// No `BENCH-DONE` line: the guest stopped early.
    NotDone,
    /// A `BENCH` line is malformed; the line and what is wrong.
    BadLine(String, String),
    /// The same operation twice.
    Duplicate(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GuestFailed(line) => write!(f, "the bench guest failed: {line}"),
            Self::NoEnv => f.write_str("the bench guest printed no BENCH-ENV line"),
            Self::NotDone => f.write_str("the bench guest stopped before BENCH-DONE"),
            Self::BadLine(line, why) => write!(f, "bad bench line ({why}): {line}"),
            Self::Duplicate(op) => write!(f, "operation {op} reported twice"),
        }
    }
}

impl std::error::Error for ParseError {}

/// `key=value` words of a line (words without `=` are an error).
pub(super) fn fields(rest: &str) -> Result<BTreeMap<&str, &str>, String> {
    rest.split_whitespace()
        .map(|w| {
            w.split_once('=')
                .ok_or_else(|| format!("`{w}` is not key=value"))
        })
        .collect()
}

fn number(map: &BTreeMap<&str, &str>, key: &str) -> Result<u64, String> {
    let v = map.get(key).ok_or_else(|| format!("no {key}="))?;
    v.parse().map_err(|_| format!("{key}={v} is not a number"))
}

/// Parses `v:c,v:c,…`.
fn parse_hist(s: &str) -> Result<Vec<(u64, u64)>, String> {
    s.split(',')
        .map(|pair| {
            let (v, c) = pair
                .split_once(':')
                .ok_or_else(|| format!("histogram entry `{pair}` is not value:count"))?;
            let v = v.parse().map_err(|_| format!("bad value in `{pair}`"))?;
            let c = c.parse().map_err(|_| format!("bad count in `{pair}`"))?;
            Ok((v, c))
        })
        .collect()
}

fn parse_op(rest: &str) -> Result<OpResult, String> {
    let map = fields(rest)?;
    let op = map.get("op").ok_or("no op=")?.to_string();
    let hist = parse_hist(map.get("hist").ok_or("no hist=")?)?;
    let stats = Stats::from_hist(&hist).ok_or("empty histogram")?;
    let claimed = Stats {
        n: number(&map, "n")?,
        min: number(&map, "min")?,
        median: number(&map, "median")?,
        p99: number(&map, "p99")?,
        max: number(&map, "max")?,
    };
    if claimed != stats {
        return Err(format!(
            "the summary {claimed:?} disagrees with the histogram's {stats:?}"
        ));
    }
    Ok(OpResult { op, stats, hist })
}

/// A console line without the `name | ` tag the hypervisor puts in front of
/// each line when several VMs share the console.
pub(super) fn untagged(line: &str) -> &str {
    match line.split_once(" | ") {
        Some((tag, rest))
            if !tag.is_empty()
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            rest
        }
        _ => line,
    }
}

/// Parses a console transcript of the bench guest (other lines are ignored;
/// VM tags are removed first).
pub fn parse_guest(console: &str) -> Result<GuestOutput, ParseError> {
    let mut out = GuestOutput::default();
    let (mut env, mut done) = (false, false);
    for line in console.lines().map(|l| untagged(l.trim()).trim()) {
        if line.starts_with("STRATUM-TEST FAIL") {
            return Err(ParseError::GuestFailed(line.to_owned()));
        } else if let Some(rest) = line.strip_prefix("BENCH-ENV ") {
            let map = fields(rest).map_err(|e| ParseError::BadLine(line.to_owned(), e))?;
            out.env = map
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            env = true;
        } else if let Some(rest) = line.strip_prefix("BENCH ") {
            let op = parse_op(rest).map_err(|e| ParseError::BadLine(line.to_owned(), e))?;
            if out.op(&op.op).is_some() {
                return Err(ParseError::Duplicate(op.op));
            }
            out.ops.push(op);
        } else if line == "BENCH-DONE" {
            done = true;
        }
    }
    if !env {
        return Err(ParseError::NoEnv);
    }
    if !done {
        return Err(ParseError::NotDone);
    }
    Ok(out)
}

/// The kernel log timestamp, in seconds, of the first line containing
/// `needle` (`[   13.407653] Run /init as init process`).
pub fn kernel_timestamp(console: &str, needle: &str) -> Option<f64> {
    console.lines().find(|l| l.contains(needle)).and_then(|l| {
        let inner = l.split_once('[')?.1.split_once(']')?.0;
        inner.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_follow_the_documented_ranks() {
        // 1..=100: lower median 50, p99 at rank 99.
        let samples: Vec<u64> = (1..=100).rev().collect();
        let s = Stats::from_samples(&samples).expect("non-empty");
        assert_eq!(
            s,
            Stats {
                n: 100,
                min: 1,
                median: 50,
                p99: 99,
                max: 100
            }
        );
        // One sample is every statistic.
        let s = Stats::from_samples(&[7]).expect("non-empty");
        assert_eq!((s.min, s.median, s.p99, s.max), (7, 7, 7, 7));
        // 1000 samples with 11 outliers: p99 (rank 990) is an outlier.
        let mut many = vec![95u64; 989];
        many.extend([300; 11]);
        let s = Stats::from_samples(&many).expect("non-empty");
        assert_eq!((s.median, s.p99, s.max), (95, 300, 300));
        many[989] = 95; // 990 at 95 now: rank 990 is 95.
        let s = Stats::from_samples(&many).expect("non-empty");
        assert_eq!(s.p99, 95);
        assert_eq!(Stats::from_samples(&[]), None);
        assert_eq!(Stats::from_hist(&[(5, 0)]), None);
    }

    #[test]
    fn histogram_and_samples_agree() {
        let hist = [(120, 1), (95, 998), (97, 1)];
        let mut samples = vec![95; 998];
        samples.extend([97, 120]);
        assert_eq!(Stats::from_hist(&hist), Stats::from_samples(&samples));
    }

    const GOOD: &str = "\
gic: v3 from the device tree\r
BENCH-ENV hypervisor=stratum gic=3 cpus=1 iterations=4 warmup=1 freq=62500000 mmfr0=0x1124\r
BENCH op=hvc n=4 min=95 median=95 p99=120 max=120 hist=95:3,120:1\r
BENCH op=empty n=4 min=2 median=2 p99=2 max=2 hist=2:4\r
BENCH-DONE\r
STRATUM-TEST PASS bench\r
";

    #[test]
    fn parses_a_transcript() {
        let out = parse_guest(GOOD).expect("parses");
        assert_eq!(out.env["hypervisor"], "stratum");
        assert_eq!(out.env["mmfr0"], "0x1124");
        assert_eq!(out.ops.len(), 2);
        let hvc = out.op("hvc").expect("measured");
        assert_eq!(hvc.stats.median, 95);
        assert_eq!(hvc.stats.p99, 120);
        assert_eq!(hvc.hist, [(95, 3), (120, 1)]);
        assert!(out.op("ipi").is_none());
    }

    #[test]
    fn vm_tags_are_ignored() {
        let tagged: String = GOOD.lines().map(|l| format!("ping | {l}\n")).collect();
        assert_eq!(parse_guest(&tagged), parse_guest(GOOD));
        assert_eq!(untagged("a b | BENCH-DONE"), "a b | BENCH-DONE");
        assert_eq!(untagged(" | BENCH-DONE"), " | BENCH-DONE");
    }

    #[test]
    fn rejects_bad_transcripts() {
        let lie = GOOD.replace("median=95 p99=120", "median=90 p99=120");
        assert!(
            matches!(parse_guest(&lie), Err(ParseError::BadLine(_, why)) if why.contains("disagrees"))
        );
        let short = GOOD.replace("BENCH-DONE", "");
        assert_eq!(parse_guest(&short), Err(ParseError::NotDone));
        let no_env = GOOD.replace("BENCH-ENV", "BENCH-ENVX");
        assert_eq!(parse_guest(&no_env), Err(ParseError::NoEnv));
        let failed = format!("{GOOD}STRATUM-TEST FAIL bench: vCPU 1 never took the SGI\n");
        assert!(matches!(
            parse_guest(&failed),
            Err(ParseError::GuestFailed(_))
        ));
        let twice = GOOD.replace("op=empty", "op=hvc");
        assert_eq!(
            parse_guest(&twice),
            Err(ParseError::Duplicate("hvc".into()))
        );
        for bad in ["hist=95:x", "hist=95", "hist=", "n=four", "op", "hist=95:0"] {
            let line = format!("BENCH op=hvc n=1 min=95 median=95 p99=95 max=95 {bad}");
            let text = GOOD.replace(
                "BENCH op=hvc n=4 min=95 median=95 p99=120 max=120 hist=95:3,120:1",
                &line,
            );
            assert!(
                matches!(parse_guest(&text), Err(ParseError::BadLine(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn reads_kernel_timestamps() {
        let log = "[    0.000000] Booting Linux\n[   13.407653] Run /init as init process\n";
        assert_eq!(kernel_timestamp(log, "Run /init"), Some(13.407653));
        assert_eq!(kernel_timestamp(log, "Power down"), None);
        assert_eq!(
            kernel_timestamp("Run /init without a stamp", "Run /init"),
            None
        );
    }
}
