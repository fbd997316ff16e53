//! The VM ↔ VM network rows of `stratum bench`: two Debian VMs, `server`
//! and `client`, one vCPU each, on one `[[network]]`, once pinned (a CPU
//! each) and once time-sharing one CPU ([`Placement`]). In each run the
//! client pings the server ([`PINGS`] times, after one warm-up ping for
//! ARP) and sends it a TCP stream (`stratum-workload tcp-send`, one
//! [`NetTransfer`] line).
//!
//! Every run is deterministic (`-icount shift=4,sleep=off`): a counter
//! tick is one executed instruction of any CPU at any exception level, and
//! when every CPU waits QEMU skips ahead to the next timer, so throughput
//! is MiB per second of that clock: bytes per instruction the whole
//! machine executed (both kernels, both programs and Stratum), idle waits
//! for timers included.
//!
//! What is Stratum's own is measured by difference: each placement runs
//! twice, sending [`BIG_MIB`] and then [`SMALL_MIB`], otherwise the same
//! system; everything the runs do besides the transfer (boot, pings,
//! power-off) cancels, so the difference of the runs' exits (the tables
//! the hypervisor prints when a VM stops) over the difference in MiB is
//! the exits per MiB. The time-shared pair runs twice more with the
//! hypervisor's trace build, which prints the counter time each VM's exits
//! spent at EL2 (`EL2 time:` lines, [`EL2_TIME_LABEL`]); the difference,
//! with the exit vector's [`EL2_VECTOR_INSNS`] per exit added, over the
//! difference in bytes sent is the EL2 cost per [`FRAME_BYTES`]. The
//! per-frame figures (exits and EL2 instructions) count in 1,500-byte
//! frames' worth of stream, not in transmitted frames: with segmentation
//! offload the guests send frames of up to 64 KiB (the table shows how
//! large they were). With one emulated CPU that is an
//! exact instruction count; with two, QEMU runs the CPUs round-robin on
//! one clock and a CPU switched out at EL2 would be charged the other's
//! instructions, so the pinned placement has no such figure.
//!
//! Parsing and arithmetic are pure and unit-tested; [`run`] runs QEMU.

use std::fmt::Write as _;
use std::path::Path;

use stratum_abi::telemetry::{EL2_TIME_LABEL, EL2_VECTOR_INSNS};
use stratum_abi::workload::{NET_PREFIX, NetTransfer};

use super::report::{align, json_str};
use super::{BenchOptions, COUNTER_HZ, under_stratum_with};
use crate::config::{Config, Gic};
use crate::hypervisor::HypervisorSource;
use crate::linux::LinuxGuest;
use crate::{Error, ErrorKind, Result};

/// The larger transfer, in MiB.
pub const BIG_MIB: u32 = 16;
/// The smaller transfer, in MiB.
pub const SMALL_MIB: u32 = 2;
/// Timed pings.
pub const PINGS: u32 = 20;
/// The TCP port of the sink.
pub const PORT: u16 = 5001;
/// Memory of each VM.
pub const MEMORY: &str = "256M";
/// The target: EL2 instructions per 1,500-byte frame, the copy included.
pub const FRAME_TARGET: f64 = 2000.0;
/// The unit the per-frame figures count in: a full 1,500-byte frame's
/// worth of TCP stream. With segmentation offload a transmitted frame
/// carries up to 64 KiB, so per-frame figures are per 1,500 bytes sent,
/// what the same stream would take in MTU-sized frames.
pub const FRAME_BYTES: f64 = 1500.0;

/// Where the two VMs run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A physical CPU each.
    Pinned,
    /// Both on physical CPU 0, 10 ms slices.
    Shared,
}

impl Placement {
    /// Both placements, in report order.
    pub const ALL: [Placement; 2] = [Placement::Pinned, Placement::Shared];

    /// The name in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::Shared => "time-shared",
        }
    }
}

/// The system of one run: the two VMs on network `lan` in `placement`,
/// the client sending `mib` MiB.
pub fn config_text(placement: Placement, gic: Gic, mib: u32) -> String {
    let (cpus, vm_placement) = match placement {
        Placement::Pinned => (2, ""),
        Placement::Shared => (1, "placement = \"shared\"\npcpus = [0]\n"),
    };
    let up = |addr: &str| format!("ip link set eth0 up && ip addr add {addr}/24 dev eth0");
    // The server keeps quiet until the client has printed its result: the
    // console ends a guest's line when another writer interrupts it, and
    // the two VMs finish at the same moment.
    let server = format!(
        "{} && stratum-workload tcp-sink {PORT} > /tmp/sink && sleep 2 && cat /tmp/sink",
        up("10.0.0.1")
    );
    let client = format!(
        "{} && ping -c 1 -w 120 10.0.0.1 >/dev/null && ping -c {PINGS} 10.0.0.1 \
         && stratum-workload tcp-send 10.0.0.1 {PORT} {mib}",
        up("10.0.0.2")
    );
    let vm = |name: &str, exec: &str| {
        format!(
            "[[vm]]\nname = \"{name}\"\ndebian = true\nmemory = \"{MEMORY}\"\n{vm_placement}\
             exec = \"{exec}\"\n\n"
        )
    };
    format!(
        "# Written by stratum bench: the network case ({}, {mib} MiB).\n\
         [machine]\ncpus = {cpus}\ngic = {}\ncpu = \"cortex-a57\"\n\n\
         [system]\nslice = \"10ms\"\nstop = \"all\"\n\n{}{}\
         [[network]]\nname = \"lan\"\nvms = [\"server\", \"client\"]\n",
        placement.name(),
        gic.number(),
        vm("server", &server),
        vm("client", &client)
    )
}

/// A ping summary, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rtt {
    /// Shortest round trip.
    pub min_us: f64,
    /// Mean round trip.
    pub avg_us: f64,
    /// Longest round trip.
    pub max_us: f64,
}

/// What one run printed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetRun {
    /// The client's transfer.
    pub transfer: NetTransfer,
    /// The client's timed pings.
    pub rtt: Rtt,
    /// Exits of both VMs, boot to power-off.
    pub exits: u64,
    /// With the trace build: EL2 counter ticks of both VMs' exits, and the
    /// exits they were counted over.
    pub el2: Option<(u64, u64)>,
}

/// Reads a run's console: the transfer, the last ping summary (busybox:
/// `round-trip min/avg/max = a/b/c ms`), the `total` rows of the exit
/// tables and the `EL2 time:` lines (summed over the VMs).
pub fn parse_run(console: &str) -> std::result::Result<NetRun, String> {
    let mut transfer = None;
    let mut rtt = None;
    let (mut exits, mut tables) = (0u64, 0);
    let (mut el2, mut el2_exits, mut el2_lines) = (0u64, 0u64, 0);
    for line in console.lines().map(str::trim_end) {
        if let Some(i) = line.find(NET_PREFIX) {
            transfer =
                Some(NetTransfer::parse(&line[i..]).map_err(|e| format!("`{}`: {e}", &line[i..]))?);
        } else if let Some(i) = line.find("round-trip min/avg/max = ") {
            rtt =
                Some(parse_rtt(&line[i..]).ok_or_else(|| format!("`{line}`: not a ping summary"))?);
        } else if let Some(row) = line.strip_prefix("[stratum]   total ") {
            let total = row
                .split_whitespace()
                .last()
                .and_then(|w| w.parse::<u64>().ok());
            exits += total.ok_or_else(|| format!("`{line}`: no total"))?;
            tables += 1;
        } else if let Some(i) = line.find(EL2_TIME_LABEL) {
            let words: Vec<&str> = line[i + EL2_TIME_LABEL.len()..]
                .split_whitespace()
                .collect();
            match words[..] {
                [ticks, "counter", "ticks", "in", n, "exits"] => {
                    let num = |w: &str| w.parse::<u64>().map_err(|_| format!("`{line}`: {w}?"));
                    el2 += num(ticks)?;
                    el2_exits += num(n)?;
                    el2_lines += 1;
                }
                _ => return Err(format!("`{line}`: not an EL2 time line")),
            }
        }
    }
    let transfer = transfer.ok_or("the client printed no NET-TCP line")?;
    let rtt = rtt.ok_or("the client printed no ping summary")?;
    if tables != 2 {
        return Err(format!("{tables} exit tables, want one per VM (2)"));
    }
    let el2 = match el2_lines {
        0 => None,
        2 => Some((el2, el2_exits)),
        n => return Err(format!("{n} EL2 time lines, want one per VM (2)")),
    };
    Ok(NetRun {
        transfer,
        rtt,
        exits,
        el2,
    })
}

/// `round-trip min/avg/max = a/b/c ms` in microseconds.
fn parse_rtt(text: &str) -> Option<Rtt> {
    let figures = text
        .strip_prefix("round-trip min/avg/max = ")?
        .strip_suffix(" ms")?;
    let ms: Vec<f64> = figures
        .split('/')
        .map(|f| f.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0))
        .collect::<Option<_>>()?;
    match ms[..] {
        [min, avg, max] if min <= avg && avg <= max => Some(Rtt {
            min_us: min * 1000.0,
            avg_us: avg * 1000.0,
            max_us: max * 1000.0,
        }),
        _ => None,
    }
}

/// One placement's row.
#[derive(Clone, Debug, PartialEq)]
pub struct NetRow {
    /// Where the VMs ran.
    pub placement: Placement,
    /// The [`BIG_MIB`] run.
    pub big: NetRun,
    /// The [`SMALL_MIB`] run.
    pub small: NetRun,
    /// EL2 instructions per [`FRAME_BYTES`] sent (the trace-build pair),
    /// or why there is none.
    pub per_frame: std::result::Result<f64, String>,
}

impl NetRow {
    /// TCP throughput of the big transfer, MiB per second of the
    /// deterministic clock.
    pub fn mib_per_s(&self) -> f64 {
        let t = &self.big.transfer;
        t.bytes as f64 / (1 << 20) as f64 / (t.ticks as f64 / COUNTER_HZ as f64)
    }

    /// Counter ticks per byte of the big transfer: the whole machine's
    /// instructions, and the idle time QEMU skips when every CPU waits.
    pub fn ticks_per_byte(&self) -> f64 {
        self.big.transfer.ticks as f64 / self.big.transfer.bytes as f64
    }

    /// Exits per MiB: the runs' difference over the difference in MiB.
    pub fn exits_per_mib(&self) -> f64 {
        let mib = (self.big.transfer.bytes - self.small.transfer.bytes.min(self.big.transfer.bytes))
            as f64
            / (1 << 20) as f64;
        self.big.exits.saturating_sub(self.small.exits) as f64 / mib.max(f64::MIN_POSITIVE)
    }

    /// Exits per [`FRAME_BYTES`] sent: [`NetRow::exits_per_mib`] scaled.
    pub fn exits_per_frame(&self) -> f64 {
        self.exits_per_mib() * FRAME_BYTES / (1 << 20) as f64
    }

    /// Bytes per frame the client transmitted in the big run (the TCP
    /// stream over its transmitted frames: segmentation offload at work).
    pub fn bytes_per_tx_frame(&self) -> f64 {
        let t = &self.big.transfer;
        t.bytes as f64 / t.tx_frames.max(1) as f64
    }
}

/// EL2 instructions per [`FRAME_BYTES`] sent, from the trace-build pair:
/// the difference in EL2 ticks plus [`EL2_VECTOR_INSNS`] per exit, over
/// the difference in bytes sent, times [`FRAME_BYTES`].
pub fn per_frame(big: &NetRun, small: &NetRun) -> std::result::Result<f64, String> {
    let ((bt, bx), (st, sx)) = match (big.el2, small.el2) {
        (Some(b), Some(s)) => (b, s),
        _ => return Err("the trace build printed no EL2 time".to_owned()),
    };
    let insns = |ticks: u64, exits: u64| ticks + exits * EL2_VECTOR_INSNS;
    let bytes = big.transfer.bytes.saturating_sub(small.transfer.bytes);
    if bytes == 0 || insns(bt, bx) <= insns(st, sx) {
        return Err(format!(
            "no difference to measure ({bytes} more bytes, EL2 {} then {})",
            insns(st, sx),
            insns(bt, bx)
        ));
    }
    Ok((insns(bt, bx) - insns(st, sx)) as f64 * FRAME_BYTES / bytes as f64)
}

/// The network part of a report.
#[derive(Clone, Debug, PartialEq)]
pub enum NetBench {
    /// Both placements measured.
    Measured {
        /// The kernel release.
        kernel: String,
        /// One row per placement, in [`Placement::ALL`] order.
        rows: Vec<NetRow>,
    },
    /// Not measured, and why.
    NotMeasured(String),
}

/// Runs the network case: both placements, both sizes, and the
/// time-shared pair again with the trace build.
pub fn run(opts: &BenchOptions, guest: &LinuxGuest, scratch: &Path) -> Result<NetBench> {
    let trace =
        HypervisorSource::choose_trace(opts.hypervisor_trace.as_deref(), true).resolve(scratch)?;
    let mut rows = Vec::new();
    for placement in Placement::ALL {
        let one = |mib: u32, hypervisor: Option<&Path>| -> Result<NetRun> {
            let what = format!(
                "network, {}, {mib} MiB{}",
                placement.name(),
                if hypervisor.is_some() {
                    ", trace build"
                } else {
                    ""
                }
            );
            eprintln!("stratum bench: {what}");
            let text = config_text(placement, opts.gic, mib);
            let path = scratch.join(format!("net-{}-{mib}.toml", placement.name()));
            let config = Config::parse_with(&text, &path, &mut || Ok(guest.clone()))?;
            let console = under_stratum_with(config, opts, hypervisor)?;
            parse_run(&console).map_err(|e| {
                Error::new(
                    ErrorKind::Hypervisor,
                    anyhow::anyhow!("{what}: {e}\n{}", super::tail(&console)),
                )
            })
        };
        let big = one(BIG_MIB, None)?;
        let small = one(SMALL_MIB, None)?;
        let per_frame = match placement {
            Placement::Pinned => Err("two emulated CPUs share one instruction clock".to_owned()),
            Placement::Shared => {
                let big_t = one(BIG_MIB, Some(&trace))?;
                let small_t = one(SMALL_MIB, Some(&trace))?;
                per_frame(&big_t, &small_t)
            }
        };
        rows.push(NetRow {
            placement,
            big,
            small,
            per_frame,
        });
    }
    Ok(NetBench::Measured {
        kernel: guest.kernel_version.clone(),
        rows,
    })
}

fn met(per_frame: &std::result::Result<f64, String>) -> &'static str {
    match per_frame {
        Ok(f) if *f <= FRAME_TARGET => "yes",
        Ok(_) => "NO",
        Err(_) => "n/a",
    }
}

/// The network part of the terminal table.
pub fn table(net: &NetBench) -> String {
    let (kernel, rows) = match net {
        NetBench::NotMeasured(why) => return format!("VM ↔ VM network: n/a ({why})\n"),
        NetBench::Measured { kernel, rows } => (kernel, rows),
    };
    let mut out = format!(
        "VM ↔ VM network ({kernel}, two VMs of 1 vCPU on one virtio-net switch; TCP \
         {BIG_MIB} MiB, {PINGS} pings; per MiB and per 1,500 B sent: {BIG_MIB} MiB run \
         less {SMALL_MIB} MiB run):\n"
    );
    let mut lines = vec![
        [
            "placement",
            "TCP MiB/s",
            "ticks/byte",
            "ping min / avg µs",
            "B per frame",
            "exits per MiB",
            "exits per 1,500 B",
            "EL2 insns per 1,500 B",
            "target",
            "met",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut notes = Vec::new();
    for row in rows {
        let per_frame = match &row.per_frame {
            Ok(f) => format!("{f:.0}"),
            Err(why) => {
                notes.push(format!("{}: no EL2 figure: {why}", row.placement.name()));
                "n/a".to_owned()
            }
        };
        lines.push(vec![
            row.placement.name().to_owned(),
            format!("{:.2}", row.mib_per_s()),
            format!("{:.1}", row.ticks_per_byte()),
            format!("{:.0} / {:.0}", row.big.rtt.min_us, row.big.rtt.avg_us),
            format!("{:.0}", row.bytes_per_tx_frame()),
            format!("{:.0}", row.exits_per_mib()),
            format!("{:.3}", row.exits_per_frame()),
            per_frame,
            format!("≤ {FRAME_TARGET:.0}"),
            met(&row.per_frame).to_owned(),
        ]);
    }
    out += &align(&lines);
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    out
}

/// The network part of `results.json`.
pub fn json(net: &NetBench) -> String {
    let (kernel, rows) = match net {
        NetBench::NotMeasured(why) => {
            return format!(
                "{{\"not_measured\": {}, \"frame_target\": {FRAME_TARGET}}}",
                json_str(why)
            );
        }
        NetBench::Measured { kernel, rows } => (kernel, rows),
    };
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            let per_frame = match &r.per_frame {
                Ok(f) => format!("{f:.1}"),
                Err(why) => format!("{{\"not_measured\": {}}}", json_str(why)),
            };
            format!(
                "      {{\"placement\": {}, \"tcp_mib_per_s\": {:.4}, \"ticks_per_byte\": {:.3}, \
                 \"rtt_us\": {{\"min\": {:.0}, \"avg\": {:.0}, \"max\": {:.0}}}, \
                 \"bytes_per_tx_frame\": {:.0}, \"exits_per_mib\": {:.1}, \
                 \"exits_per_1500_bytes\": {:.4}, \
                 \"el2_instructions_per_1500_bytes\": {per_frame}, \"met\": {}, \
                 \"big\": {{\"bytes\": {}, \"ticks\": {}, \"tx_frames\": {}, \"rx_frames\": {}, \"exits\": {}}}, \
                 \"small\": {{\"bytes\": {}, \"ticks\": {}, \"tx_frames\": {}, \"rx_frames\": {}, \"exits\": {}}}}}",
                json_str(r.placement.name()),
                r.mib_per_s(),
                r.ticks_per_byte(),
                r.big.rtt.min_us,
                r.big.rtt.avg_us,
                r.big.rtt.max_us,
                r.bytes_per_tx_frame(),
                r.exits_per_mib(),
                r.exits_per_frame(),
                met(&r.per_frame) == "yes",
                r.big.transfer.bytes,
                r.big.transfer.ticks,
                r.big.transfer.tx_frames,
                r.big.transfer.rx_frames,
                r.big.exits,
                r.small.transfer.bytes,
                r.small.transfer.ticks,
                r.small.transfer.tx_frames,
                r.small.transfer.rx_frames,
                r.small.exits,
            )
        })
        .collect();
    format!(
        "{{\"kernel\": {}, \"frame_target\": {FRAME_TARGET}, \"big_mib\": {BIG_MIB}, \
         \"small_mib\": {SMALL_MIB}, \"rows\": [\n{}\n  ]}}",
        json_str(kernel),
        rows.join(",\n")
    )
}

/// A report's network part for the report's own tests.
#[cfg(test)]
pub fn example() -> NetBench {
    let run = |mib: u64, ticks: u64, frames: u64, exits: u64, el2: Option<(u64, u64)>| NetRun {
        transfer: NetTransfer {
            bytes: mib << 20,
            ticks,
            tx_frames: frames,
            rx_frames: frames / 2,
        },
        rtt: Rtt {
            min_us: 1100.0,
            avg_us: 1200.0,
            max_us: 1500.0,
        },
        exits,
        el2,
    };
    NetBench::Measured {
        kernel: "6.1.0-57-arm64".to_owned(),
        rows: vec![
            NetRow {
                placement: Placement::Pinned,
                big: run(16, 62_500_000, 11_600, 60_000, None),
                small: run(2, 7_812_500, 1_450, 46_000, None),
                per_frame: Err("two emulated CPUs share one instruction clock".to_owned()),
            },
            NetRow {
                placement: Placement::Shared,
                big: run(16, 125_000_000, 11_600, 60_000, None),
                small: run(2, 15_625_000, 1_450, 46_000, None),
                per_frame: Ok(1500.0),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
client | PING 10.0.0.1 (10.0.0.1): 56 data bytes\r
client | round-trip min/avg/max = 1.097/1.792/7.531 ms\r
client | NET-TCP bytes=16777216 ticks=62500000 tx_frames=11600 rx_frames=5800\r
[stratum] vm0 'server' (stopped): exits by reason\r
[stratum]   reason                        vcpu0      total\r
[stratum]   wfi                              22         22\r
[stratum]   total                         45740      45740\r
[stratum] vm0 'server': EL2 time: 41361628 counter ticks in 45657 exits\r
[stratum] vm1 'client' (stopped): exits by reason\r
[stratum]   total                         45853      45853\r
[stratum] vm1 'client': EL2 time: 176008754 counter ticks in 45757 exits\r
";

    #[test]
    fn a_run_is_read_from_its_console() {
        let run = parse_run(CONSOLE).expect("valid");
        assert_eq!(run.transfer.bytes, 16 << 20);
        assert_eq!(run.transfer.tx_frames, 11_600);
        assert!((run.rtt.min_us - 1097.0).abs() < 1e-6);
        assert!((run.rtt.avg_us - 1792.0).abs() < 1e-6);
        assert_eq!(run.exits, 45_740 + 45_853);
        assert_eq!(run.el2, Some((41_361_628 + 176_008_754, 45_657 + 45_757)));
        let plain: String = CONSOLE
            .lines()
            .filter(|l| !l.contains(EL2_TIME_LABEL))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse_run(&plain).expect("valid").el2, None);
    }

    #[test]
    fn an_incomplete_or_garbled_console_is_refused() {
        let without = |needle: &str| -> String {
            CONSOLE
                .lines()
                .filter(|l| !l.contains(needle))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        for (console, why) in [
            (without("NET-TCP"), "NET-TCP"),
            (without("round-trip"), "ping summary"),
            (without("45853"), "exit tables"),
            (without("176008754"), "EL2 time lines"),
            (
                CONSOLE.replace("ticks=62500000", "ticks=zero"),
                "not a decimal number",
            ),
            (CONSOLE.replace("1.097/", "1.097/x"), "not a ping summary"),
            (
                CONSOLE.replace("1.097/1.792", "1.900/1.792"),
                "not a ping summary",
            ),
            (
                CONSOLE.replace("counter ticks in", "ticks in"),
                "not an EL2",
            ),
        ] {
            let e = parse_run(&console).expect_err(why);
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn the_figures_are_differences_of_the_two_runs() {
        let NetBench::Measured { rows, .. } = example() else {
            unreachable!()
        };
        let pinned = &rows[0];
        // 16 MiB in 62.5 M instructions = one second of the 62.5 MHz clock.
        assert!((pinned.mib_per_s() - 16.0).abs() < 1e-9);
        assert!((pinned.ticks_per_byte() - 62_500_000.0 / 16_777_216.0).abs() < 1e-9);
        // 14,000 more exits over 14 more MiB.
        assert!((pinned.exits_per_mib() - 1000.0).abs() < 1e-9);
        assert!((pinned.exits_per_frame() - 1000.0 * 1500.0 / 1_048_576.0).abs() < 1e-9);
        // 16 MiB in 11,600 frames.
        assert!((pinned.bytes_per_tx_frame() - 16_777_216.0 / 11_600.0).abs() < 1e-9);
        assert!((rows[1].mib_per_s() - 8.0).abs() < 1e-9);
    }

    #[test]
    fn el2_per_frame_adds_the_vector_and_counts_per_1500_bytes_of_difference() {
        let run = |bytes: u64, el2: Option<(u64, u64)>| NetRun {
            transfer: NetTransfer {
                bytes,
                ticks: 1,
                tx_frames: 1,
                rx_frames: 0,
            },
            rtt: Rtt {
                min_us: 1.0,
                avg_us: 1.0,
                max_us: 1.0,
            },
            exits: 0,
            el2,
        };
        // 15 MB more for 20 M more ticks and 10,000 more exits.
        let big = run(16_500_000, Some((30_000_000, 20_000)));
        let small = run(1_500_000, Some((10_000_000, 10_000)));
        let want = (20_000_000.0 + 10_000.0 * EL2_VECTOR_INSNS as f64) / 10_000.0;
        assert_eq!(per_frame(&big, &small), Ok(want));
        assert!(per_frame(&big, &run(1_000, None)).is_err());
        assert!(per_frame(&small, &big).is_err(), "no positive difference");
        assert!(per_frame(&run(1_500_000, Some((5, 5))), &small).is_err());
    }

    #[test]
    fn the_config_is_valid_for_both_placements() {
        for placement in Placement::ALL {
            let text = config_text(placement, Gic::V2, 16);
            assert!(text.contains("tcp-send 10.0.0.1 5001 16"), "{text}");
            assert!(text.contains("tcp-sink 5001"));
            let guest = LinuxGuest {
                kernel: "/nonexistent/vmlinuz".into(),
                initramfs: "/nonexistent/initrd".into(),
                kernel_version: "6.1.0-57-arm64".to_owned(),
            };
            // The kernel is inspected on load, so only the TOML and the
            // system's rules are checked here: a parse error would name
            // the config, not a missing file.
            let e = Config::parse_with(&text, Path::new("net.toml"), &mut || Ok(guest.clone()));
            if let Err(e) = e {
                let msg = format!("{e:#}");
                assert!(msg.contains("/nonexistent/"), "{}: {msg}", placement.name());
            }
        }
    }

    #[test]
    fn the_table_and_json_show_every_row() {
        let t = table(&example());
        assert!(t.contains("pinned"), "{t}");
        assert!(t.contains("time-shared"), "{t}");
        assert!(t.contains("1500"), "{t}");
        assert!(
            t.contains("exits per 1,500 B") && t.contains("1.431"),
            "{t}"
        );
        assert!(t.contains("no EL2 figure: two emulated CPUs"), "{t}");
        let j = json(&example());
        assert!(j.contains("\"placement\": \"pinned\""), "{j}");
        assert!(
            j.contains("\"el2_instructions_per_1500_bytes\": {\"not_measured\""),
            "{j}"
        );
        assert!(
            j.contains("\"el2_instructions_per_1500_bytes\": 1500.0"),
            "{j}"
        );
        assert_eq!(
            table(&NetBench::NotMeasured("skipped".into())),
            "VM ↔ VM network: n/a (skipped)\n"
        );
        assert!(json(&NetBench::NotMeasured("skipped".into())).contains("not_measured"));
    }
}
