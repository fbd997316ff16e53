//! What the Linux workload program prints: `stratum-workload`
//! (`tools/workload`) runs inside a Linux guest and prints these lines;
//! `stratum bench` and the tier-3 Linux test read them.
//!
//! ```text
//! WORKLOAD-ENV key=value …                                  once, first (LOOP_* keys among them)
//! WORKLOAD test=ID iters=N ticks=N timer_irqs=N irqs=N      one per entry of TESTS (per round)
//! WORKLOAD-DONE                                             last
//! WORKLOAD-FAIL test=ID: why                                instead, when a test failed
//! ```
//!
//! `ticks` is the difference of two `CNTVCT_EL0` readings around the test's
//! `iters` iterations (under QEMU `-icount shift=4` one tick is one executed
//! instruction); `timer_irqs` and `irqs` are how many arch-timer interrupts
//! and interrupts of any kind the kernel counted (`/proc/interrupts`, summed
//! over the CPUs) between the two readings. [`Sample::parse`] accepts
//! exactly what [`Sample`]'s `Display` writes and nothing looser.
//!
//! With `workload.disk=DEV` on the command line the program runs the disk
//! tests of [`DISK_TESTS`] on DEV instead, and prints
//!
//! ```text
//! DISK-ENV key=value …                                                  once, first
//! DISK-BEGIN test=ID                      before each test's window, the console drained
//! DISK test=ID ops=N bytes=N ticks=N idle_ns=N dev_ios=N irqs=N         after it
//! …                                       the tests again, once per further round
//! DISK-DONE                                                             last
//! WORKLOAD-FAIL test=ID: why                                            instead, when a test failed
//! ```

use core::fmt;

/// One test of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Test {
    /// Its name in `test=`.
    pub id: &'static str,
    /// What one iteration is, for people.
    pub label: &'static str,
}

/// Every test, in the order the program runs and the bench reports them.
pub const TESTS: [Test; 8] = [
    Test {
        id: "null_syscall",
        label: "null syscall (getppid)",
    },
    Test {
        id: "dev_zero_read",
        label: "read 4 KiB of /dev/zero",
    },
    Test {
        id: "pipe_round_trip",
        label: "pipe round trip, two processes",
    },
    Test {
        id: "fork_exit_wait",
        label: "fork + exit + wait",
    },
    Test {
        id: "page_fault",
        label: "first touch of an anonymous 4 KiB page",
    },
    Test {
        id: "memcpy_8m",
        label: "memcpy of 8 MiB",
    },
    Test {
        id: "cpu_loop",
        label: "CPU-only loop (one xorshift step)",
    },
    Test {
        id: "file_create_unlink",
        label: "create + close + unlink on tmpfs",
    },
];

/// The test named `id`.
pub fn by_id(id: &str) -> Option<&'static Test> {
    TESTS.iter().find(|t| t.id == id)
}

/// The UDP payload that ends a run of the `netecho` test guest: it
/// echoes it like any other datagram, then gives its verdict.
/// `stratum-workload udp-echo` sends it last.
pub const UDP_ECHO_STOP: &[u8] = b"netecho: stop";

/// Prefix of the environment line.
pub const ENV_PREFIX: &str = "WORKLOAD-ENV ";
/// Prefix of a result line.
pub const SAMPLE_PREFIX: &str = "WORKLOAD ";
/// The last line of a complete run.
pub const DONE: &str = "WORKLOAD-DONE";
/// Prefix of the line a failed test prints.
pub const FAIL_PREFIX: &str = "WORKLOAD-FAIL ";
/// The kernel command-line word that divides every test's iteration count
/// (`workload.divisor=N`, at least one iteration each; default 1).
pub const DIVISOR_WORD: &str = "workload.divisor=";
/// The kernel command-line word that runs every test this many times over
/// (`workload.rounds=N`, 1 to [`MAX_ROUNDS`]; default 1): the program
/// prints one `WORKLOAD` line per test and round, the rounds in order.
/// A ratio of two runs is then taken over all rounds together, and the
/// rounds show how far one window alone may stray (where the timer's
/// ticks fall moves the guest's own scheduling decisions).
pub const ROUNDS_WORD: &str = "workload.rounds=";
/// `WORKLOAD-ENV` key: the rounds the program runs ([`ROUNDS_WORD`]).
pub const ROUNDS_KEY: &str = "rounds";
/// Most rounds [`ROUNDS_WORD`] may ask for.
pub const MAX_ROUNDS: u64 = 10;

/// `WORKLOAD-ENV` key: ticks of a window of the CPU loop (`cpu_loop`) with
/// no iteration, taken while no interrupt arrived (the method's own cost).
pub const LOOP_EMPTY_KEY: &str = "loop_empty";
/// `WORKLOAD-ENV` key: ticks of a window of [`LOOP_CALIBRATION_ITERS`]
/// iterations of the CPU loop, taken while no interrupt arrived. With
/// [`LOOP_EMPTY_KEY`] it gives the loop's own cost per iteration, so a
/// reader can tell the loop's instructions from those spent on interrupts.
pub const LOOP_CALIBRATION_KEY: &str = "loop_10000";
/// Iterations of the [`LOOP_CALIBRATION_KEY`] window.
pub const LOOP_CALIBRATION_ITERS: u64 = 10_000;

/// One `WORKLOAD test=…` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample<'a> {
    /// The test's id (one of [`TESTS`]).
    pub test: &'a str,
    /// Timed iterations (at least one).
    pub iters: u64,
    /// Counter ticks the iterations took together.
    pub ticks: u64,
    /// Arch-timer interrupts taken meanwhile.
    pub timer_irqs: u64,
    /// Interrupts of any kind taken meanwhile (`timer_irqs` included).
    pub irqs: u64,
}

/// Why a line is not a [`Sample`]; the texts are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleError {
    /// The line does not start with `WORKLOAD `.
    NotASample,
    /// A word is not `key=value`.
    NotKeyValue,
    /// A key this format does not have.
    UnknownKey,
    /// A key given twice.
    Duplicate(&'static str),
    /// A key missing.
    Missing(&'static str),
    /// A value that is not a decimal number.
    NotANumber(&'static str),
    /// `test=` names no test of [`TESTS`].
    UnknownTest,
    /// `iters=0`: nothing was measured.
    NoIterations,
    /// More timer interrupts than interrupts.
    TimerExceedsAll,
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotASample => f.write_str("not a WORKLOAD line"),
            Self::NotKeyValue => f.write_str("a word is not key=value"),
            Self::UnknownKey => f.write_str("an unknown key"),
            Self::Duplicate(k) => write!(f, "{k}= given twice"),
            Self::Missing(k) => write!(f, "no {k}="),
            Self::NotANumber(k) => write!(f, "{k}= is not a decimal number"),
            Self::UnknownTest => f.write_str("test= names no known test"),
            Self::NoIterations => f.write_str("iters=0"),
            Self::TimerExceedsAll => f.write_str("timer_irqs= exceeds irqs="),
        }
    }
}

/// The keys of a sample line, in the order they are written.
const KEYS: [&str; 5] = ["test", "iters", "ticks", "timer_irqs", "irqs"];

impl<'a> Sample<'a> {
    /// Parses a whole line (`WORKLOAD test=… iters=… ticks=… timer_irqs=…
    /// irqs=…`, keys in any order, surrounding whitespace ignored).
    pub fn parse(line: &'a str) -> Result<Self, SampleError> {
        let values = key_values(line, SAMPLE_PREFIX, &KEYS)?;
        let number = |slot: usize| number(&values, &KEYS, slot);
        let test = values[0].ok_or(SampleError::Missing("test"))?;
        let sample = Sample {
            test: known(test)?,
            iters: number(1)?,
            ticks: number(2)?,
            timer_irqs: number(3)?,
            irqs: number(4)?,
        };
        if sample.iters == 0 {
            return Err(SampleError::NoIterations);
        }
        if sample.timer_irqs > sample.irqs {
            return Err(SampleError::TimerExceedsAll);
        }
        Ok(sample)
    }
}

/// The values of `line`'s `key=value` words after `prefix`, by their key's
/// slot in `keys` (each at most once, no other key).
fn key_values<'a, const N: usize>(
    line: &'a str,
    prefix: &str,
    keys: &[&'static str; N],
) -> Result<[Option<&'a str>; N], SampleError> {
    let rest = line
        .trim()
        .strip_prefix(prefix)
        .ok_or(SampleError::NotASample)?;
    let mut values: [Option<&'a str>; N] = [None; N];
    for word in rest.split_whitespace() {
        let (key, value) = word.split_once('=').ok_or(SampleError::NotKeyValue)?;
        let slot = keys
            .iter()
            .position(|&k| k == key)
            .ok_or(SampleError::UnknownKey)?;
        if values[slot].replace(value).is_some() {
            return Err(SampleError::Duplicate(keys[slot]));
        }
    }
    Ok(values)
}

/// The decimal number in slot `slot` of `values` (key `keys[slot]`).
fn number<const N: usize>(
    values: &[Option<&str>; N],
    keys: &[&'static str; N],
    slot: usize,
) -> Result<u64, SampleError> {
    let text = values[slot].ok_or(SampleError::Missing(keys[slot]))?;
    // `u64::from_str` takes a leading `+`; the format has none.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SampleError::NotANumber(keys[slot]));
    }
    text.parse()
        .map_err(|_| SampleError::NotANumber(keys[slot]))
}

/// `id` if it names a test.
fn known(id: &str) -> Result<&str, SampleError> {
    if TESTS.iter().any(|t| t.id == id) {
        Ok(id)
    } else {
        Err(SampleError::UnknownTest)
    }
}

impl fmt::Display for Sample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SAMPLE_PREFIX}test={} iters={} ticks={} timer_irqs={} irqs={}",
            self.test, self.iters, self.ticks, self.timer_irqs, self.irqs
        )
    }
}

/// What starts the line of `stratum-workload tcp-send` ([`NetTransfer`]).
pub const NET_PREFIX: &str = "NET-TCP ";

/// The keys of a [`NetTransfer`] line, in the order they are written.
const NET_KEYS: [&str; 4] = ["bytes", "ticks", "tx_frames", "rx_frames"];

/// One `NET-TCP bytes=… ticks=… tx_frames=… rx_frames=…` line: a TCP
/// transfer from the program's VM to a `tcp-sink` in another, timed from
/// the connected socket's first write to the sink's acknowledgement of
/// the last byte, with the frames the sender's interface counted
/// meanwhile (`/sys/class/net/IF/statistics/{tx,rx}_packets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetTransfer {
    /// Payload bytes the sink received and acknowledged.
    pub bytes: u64,
    /// Counter ticks the transfer took.
    pub ticks: u64,
    /// Frames the sender transmitted meanwhile (data and acknowledgements).
    pub tx_frames: u64,
    /// Frames it received meanwhile.
    pub rx_frames: u64,
}

impl NetTransfer {
    /// Parses a whole line (keys in any order, surrounding whitespace
    /// ignored); a transfer of no bytes or in no time is refused
    /// ([`SampleError::NoIterations`]).
    pub fn parse(line: &str) -> Result<Self, SampleError> {
        let values = key_values(line, NET_PREFIX, &NET_KEYS)?;
        let number = |slot: usize| number(&values, &NET_KEYS, slot);
        let t = NetTransfer {
            bytes: number(0)?,
            ticks: number(1)?,
            tx_frames: number(2)?,
            rx_frames: number(3)?,
        };
        if t.bytes == 0 || t.ticks == 0 {
            return Err(SampleError::NoIterations);
        }
        Ok(t)
    }
}

impl fmt::Display for NetTransfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{NET_PREFIX}bytes={} ticks={} tx_frames={} rx_frames={}",
            self.bytes, self.ticks, self.tx_frames, self.rx_frames
        )
    }
}

/// The disk tests of `stratum-workload` (`stratum bench`'s disk rows), in
/// the order the program runs and the bench reports them: every one with
/// `O_DIRECT` on the disk's block device, one request at a time.
pub const DISK_TESTS: [Test; 3] = [
    Test {
        id: "seq_write",
        label: "sequential write, 1 MiB requests",
    },
    Test {
        id: "seq_read",
        label: "sequential read, 1 MiB requests",
    },
    Test {
        id: "rand_read",
        label: "random read, 4 KiB requests",
    },
];

/// The kernel command-line word that selects the disk tests instead of the
/// workload's (`workload.disk=/dev/vda`: the block device to test; its
/// contents are overwritten).
pub const DISK_WORD: &str = "workload.disk=";
/// The word giving the sequential tests' size (`workload.disk_mib=N`:
/// N requests of 1 MiB each; default [`DISK_DEFAULT_MIB`]).
pub const DISK_MIB_WORD: &str = "workload.disk_mib=";
/// The word giving the random test's requests (`workload.disk_reads=N`;
/// default [`DISK_DEFAULT_READS`]).
pub const DISK_READS_WORD: &str = "workload.disk_reads=";
/// The word giving how many times the three tests run
/// (`workload.disk_rounds=N`, default 1): each test's window then repeats,
/// one `DISK` line each, round after round.
pub const DISK_ROUNDS_WORD: &str = "workload.disk_rounds=";
/// MiB of each sequential test when no word says.
pub const DISK_DEFAULT_MIB: u64 = 16;
/// 4 KiB reads of the random test when no word says.
pub const DISK_DEFAULT_READS: u64 = 1024;
/// Bytes of a sequential test's request.
pub const DISK_SEQ_BYTES: u64 = 1 << 20;
/// Bytes of a random test's request, and the block whose first eight bytes
/// say where it is: block *n* of the disk starts with *n* as a
/// little-endian `u64`, so every read can check it got the right block.
pub const DISK_BLOCK: u64 = 4096;
/// The first pseudo-random state of the random test (xorshift64): the same
/// blocks in the same order every run.
pub const DISK_RAND_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Prefix of the disk tests' environment line (`key=value …`: the
/// device, its size, and the addresses of the window marks).
pub const DISK_ENV_PREFIX: &str = "DISK-ENV ";
/// `DISK-ENV` key: the address of `stratum_disk_window_begin`, the
/// function the program calls with the test's index as the window opens
/// (after it read the counter), in hex.
pub const DISK_MARK_BEGIN_KEY: &str = "mark_begin";
/// `DISK-ENV` key: the address of `stratum_disk_window_end`, called as the
/// window closes (before it reads the counter), in hex.
pub const DISK_MARK_END_KEY: &str = "mark_end";
/// Prefix of the line a disk test prints before its window opens (the
/// console drained), so the host can note the wall-clock time.
pub const DISK_BEGIN_PREFIX: &str = "DISK-BEGIN ";
/// Prefix of a disk test's result line ([`DiskSample`]).
pub const DISK_PREFIX: &str = "DISK ";
/// The last line of a complete disk run.
pub const DISK_DONE: &str = "DISK-DONE";

/// One `DISK test=…` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSample<'a> {
    /// The test's id (one of [`DISK_TESTS`]).
    pub test: &'a str,
    /// Requests (`pread`/`pwrite` calls), each of the test's size.
    pub ops: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Counter ticks the requests took together.
    pub ticks: u64,
    /// Nanoseconds the CPUs idled meanwhile, I/O wait included
    /// (`/proc/timer_list`: `idle_sleeptime` and `iowait_sleeptime`).
    pub idle_ns: u64,
    /// Requests the disk's driver completed meanwhile
    /// (`/sys/block/DEV/stat`: reads and writes): a request larger than the
    /// device takes is split.
    pub dev_ios: u64,
    /// Interrupts of any kind taken meanwhile.
    pub irqs: u64,
}

/// The keys of a disk line, in the order they are written.
const DISK_KEYS: [&str; 7] = [
    "test", "ops", "bytes", "ticks", "idle_ns", "dev_ios", "irqs",
];

impl<'a> DiskSample<'a> {
    /// Parses a whole line (keys in any order, surrounding whitespace
    /// ignored); a test of no requests or in no time is refused.
    pub fn parse(line: &'a str) -> Result<Self, SampleError> {
        let values = key_values(line, DISK_PREFIX, &DISK_KEYS)?;
        let number = |slot: usize| number(&values, &DISK_KEYS, slot);
        let test = values[0].ok_or(SampleError::Missing("test"))?;
        if !DISK_TESTS.iter().any(|t| t.id == test) {
            return Err(SampleError::UnknownTest);
        }
        let s = DiskSample {
            test,
            ops: number(1)?,
            bytes: number(2)?,
            ticks: number(3)?,
            idle_ns: number(4)?,
            dev_ios: number(5)?,
            irqs: number(6)?,
        };
        if s.ops == 0 || s.bytes == 0 || s.ticks == 0 {
            return Err(SampleError::NoIterations);
        }
        Ok(s)
    }
}

impl fmt::Display for DiskSample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{DISK_PREFIX}test={} ops={} bytes={} ticks={} idle_ns={} dev_ios={} irqs={}",
            self.test, self.ops, self.bytes, self.ticks, self.idle_ns, self.dev_ios, self.irqs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    const LINE: &str = "WORKLOAD test=cpu_loop iters=1000 ticks=4012 timer_irqs=2 irqs=3";

    #[test]
    fn a_sample_round_trips_through_its_text() {
        let s = Sample::parse(LINE).expect("valid");
        assert_eq!(
            s,
            Sample {
                test: "cpu_loop",
                iters: 1000,
                ticks: 4012,
                timer_irqs: 2,
                irqs: 3
            }
        );
        assert_eq!(s.to_string(), LINE);
        // Surrounding whitespace (a console's `\r`) and key order do not matter.
        let shuffled = "  WORKLOAD irqs=3 ticks=4012 test=cpu_loop timer_irqs=2 iters=1000\r";
        assert_eq!(Sample::parse(shuffled), Ok(s));
        for t in TESTS {
            let line = format!("WORKLOAD test={} iters=1 ticks=0 timer_irqs=0 irqs=0", t.id);
            assert_eq!(Sample::parse(&line).map(|s| s.test), Ok(t.id));
        }
    }

    #[test]
    fn malformed_samples_are_rejected() {
        let cases: [(&str, &str, SampleError); 13] = [
            (
                "other prefix",
                "WORKLOADS test=cpu_loop",
                SampleError::NotASample,
            ),
            ("env line", "WORKLOAD-ENV freq=1", SampleError::NotASample),
            (
                "bare word",
                "WORKLOAD test=cpu_loop iters",
                SampleError::NotKeyValue,
            ),
            (
                "unknown key",
                "WORKLOAD test=cpu_loop speed=3",
                SampleError::UnknownKey,
            ),
            (
                "key twice",
                "WORKLOAD test=cpu_loop iters=1 iters=2",
                SampleError::Duplicate("iters"),
            ),
            (
                "missing ticks",
                "WORKLOAD test=cpu_loop iters=1 timer_irqs=0 irqs=0",
                SampleError::Missing("ticks"),
            ),
            (
                "missing test",
                "WORKLOAD iters=1 ticks=1 timer_irqs=0 irqs=0",
                SampleError::Missing("test"),
            ),
            (
                "hex number",
                "WORKLOAD test=cpu_loop iters=0x10 ticks=1 timer_irqs=0 irqs=0",
                SampleError::NotANumber("iters"),
            ),
            (
                "signed number",
                "WORKLOAD test=cpu_loop iters=1 ticks=+1 timer_irqs=0 irqs=0",
                SampleError::NotANumber("ticks"),
            ),
            (
                "empty number",
                "WORKLOAD test=cpu_loop iters=1 ticks=1 timer_irqs= irqs=0",
                SampleError::NotANumber("timer_irqs"),
            ),
            (
                "unknown test",
                "WORKLOAD test=sleep iters=1 ticks=1 timer_irqs=0 irqs=0",
                SampleError::UnknownTest,
            ),
            (
                "no iterations",
                "WORKLOAD test=cpu_loop iters=0 ticks=1 timer_irqs=0 irqs=0",
                SampleError::NoIterations,
            ),
            (
                "more timer than all",
                "WORKLOAD test=cpu_loop iters=1 ticks=1 timer_irqs=2 irqs=1",
                SampleError::TimerExceedsAll,
            ),
        ];
        for (name, line, want) in cases {
            assert_eq!(Sample::parse(line), Err(want), "{name}");
            assert!(!want.to_string().is_empty(), "{name}");
        }
        let too_big =
            "WORKLOAD test=cpu_loop iters=1 ticks=99999999999999999999 timer_irqs=0 irqs=0";
        assert_eq!(
            Sample::parse(too_big),
            Err(SampleError::NotANumber("ticks"))
        );
    }

    #[test]
    fn test_ids_are_unique_words() {
        for (i, t) in TESTS.iter().enumerate() {
            assert!(
                !t.id.is_empty() && !t.id.contains([' ', '=', ':']),
                "{}",
                t.id
            );
            assert!(TESTS[i + 1..].iter().all(|u| u.id != t.id), "{}", t.id);
            assert_eq!(known(t.id), Ok(t.id));
            assert_eq!(by_id(t.id), Some(t));
        }
        assert_eq!(known("nope"), Err(SampleError::UnknownTest));
        assert_eq!(by_id("nope"), None);
    }
    #[test]
    fn a_disk_sample_round_trips_and_refuses_nonsense() {
        let line =
            "DISK test=seq_read ops=16 bytes=16777216 ticks=9000000 idle_ns=100 dev_ios=48 irqs=60";
        let s = DiskSample::parse(line).expect("valid");
        assert_eq!(
            s,
            DiskSample {
                test: "seq_read",
                ops: 16,
                bytes: 16 << 20,
                ticks: 9_000_000,
                idle_ns: 100,
                dev_ios: 48,
                irqs: 60
            }
        );
        assert_eq!(s.to_string(), line);
        for t in DISK_TESTS {
            assert!(!t.id.contains([' ', '=', ':']), "{}", t.id);
            let line = format!(
                "DISK test={} ops=1 bytes=1 ticks=1 idle_ns=0 dev_ios=0 irqs=0",
                t.id
            );
            assert_eq!(DiskSample::parse(&line).map(|s| s.test), Ok(t.id));
        }
        for (bad, why) in [
            (
                "DISK test=cpu_loop ops=1 bytes=1 ticks=1 idle_ns=0 dev_ios=0 irqs=0",
                SampleError::UnknownTest,
            ),
            (
                "DISK test=seq_read ops=0 bytes=1 ticks=1 idle_ns=0 dev_ios=0 irqs=0",
                SampleError::NoIterations,
            ),
            (
                "DISK test=seq_read ops=1 bytes=1 ticks=0 idle_ns=0 dev_ios=0 irqs=0",
                SampleError::NoIterations,
            ),
            (
                "DISK test=seq_read ops=1 bytes=1 ticks=1 idle_ns=0 dev_ios=0",
                SampleError::Missing("irqs"),
            ),
            ("DISK-BEGIN test=seq_read", SampleError::NotASample),
        ] {
            assert_eq!(DiskSample::parse(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn a_net_transfer_round_trips_and_refuses_nonsense() {
        let line = "NET-TCP bytes=16777216 ticks=1000000 tx_frames=11600 rx_frames=5800";
        let t = NetTransfer::parse(line).expect("valid");
        assert_eq!(
            t,
            NetTransfer {
                bytes: 16_777_216,
                ticks: 1_000_000,
                tx_frames: 11_600,
                rx_frames: 5_800
            }
        );
        assert_eq!(t.to_string(), line);
        for (bad, why) in [
            (
                "NET-TCP bytes=1 ticks=1 tx_frames=1",
                SampleError::Missing("rx_frames"),
            ),
            (
                "NET-TCP bytes=0 ticks=1 tx_frames=1 rx_frames=1",
                SampleError::NoIterations,
            ),
            (
                "NET-TCP bytes=1 ticks=0 tx_frames=1 rx_frames=1",
                SampleError::NoIterations,
            ),
            (
                "NET-TCP bytes=+1 ticks=1 tx_frames=1 rx_frames=1",
                SampleError::NotANumber("bytes"),
            ),
            (
                "NET-TCP bytes=1 bytes=1 ticks=1 tx_frames=1 rx_frames=1",
                SampleError::Duplicate("bytes"),
            ),
            (
                "NET-TCP bytes=1 ticks=1 tx_frames=1 rx_frames=1 x=1",
                SampleError::UnknownKey,
            ),
            (
                "WORKLOAD bytes=1 ticks=1 tx_frames=1 rx_frames=1",
                SampleError::NotASample,
            ),
        ] {
            assert_eq!(NetTransfer::parse(bad), Err(why), "{bad}");
        }
    }
}
