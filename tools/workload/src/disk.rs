//! The disk tests (`workload.disk=DEV` on the command line): `stratum
//! bench`'s disk rows, run in a Debian guest whose disk is served by
//! Stratum's service VM, and on bare QEMU with QEMU's own virtio-blk.
//!
//! Three tests of [`DISK_TESTS`], one request at a time, each with
//! `O_DIRECT` on the block device (no page cache: every request reaches the
//! driver) from one buffer aligned to 4 KiB:
//!
//! - `seq_write`: N writes of 1 MiB from the disk's start;
//! - `seq_read`: N reads of 1 MiB from the disk's start;
//! - `rand_read`: M reads of 4 KiB at blocks a fixed xorshift64 sequence
//!   picks over the whole disk ([`DISK_RAND_SEED`]: the same blocks every
//!   run).
//!
//! `workload.disk_rounds=R` runs the three R times over (the same requests
//! each round), each test a window of its own: the first round warms up
//! whatever a first request costs, and the rounds show how much a count
//! varies.
//!
//! Block *n* (4 KiB) of the disk starts with *n* as a little-endian `u64`
//! ([`DISK_BLOCK`]): the bench writes the image so, the write test writes
//! the same, and every read checks the blocks it got (eight bytes a
//! block, inside the window: 256 loads per MiB). Anything else in the
//! buffer is left as it is.
//!
//! Each test is one window of the virtual counter, with the interrupts
//! (`/proc/interrupts`), the driver's completed requests
//! (`/sys/block/DEV/stat`) and the CPUs' idle time (`/proc/timer_list`) read
//! on both sides of it. Inside the counter readings the program calls
//! [`stratum_disk_window_begin`] and [`stratum_disk_window_end`], two
//! functions that do nothing but mark where the window is for a reader of
//! QEMU's instruction log (`stratum bench`'s traced disk runs, which count
//! the window's instructions by CPU and exception level); `DISK-ENV` gives
//! their addresses.
//!
//! Before each window the program prints `DISK-BEGIN test=ID` and drains
//! the console, and after it the test's `DISK` line, so the host can time
//! the window by the wall clock too: under `-icount` the counter is
//! executed instructions, and a disk request that QEMU performs on the
//! host's file takes time the counter does not see.

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use stratum_abi::workload::{
    DISK_BEGIN_PREFIX, DISK_BLOCK, DISK_DEFAULT_MIB, DISK_DEFAULT_READS, DISK_DONE,
    DISK_ENV_PREFIX, DISK_MARK_BEGIN_KEY, DISK_MARK_END_KEY, DISK_MIB_WORD, DISK_RAND_SEED,
    DISK_READS_WORD, DISK_ROUNDS_WORD, DISK_SEQ_BYTES, DISK_TESTS, DISK_WORD, DiskSample,
    FAIL_PREFIX,
};

use crate::counter;
use crate::interrupts;

/// Largest sequential test, in MiB.
pub const MAX_MIB: u64 = 4096;
/// How long a test may take, by the guest's clock, before the program
/// gives up on it ([`Watchdog`]). Under `-icount` a machine whose CPUs
/// all wait has its clock moved to the next timer at once, so a request
/// that never completes reaches this in moments of real time; a test that
/// works takes a few seconds of the guest's clock.
pub const TEST_LIMIT: Duration = Duration::from_secs(120);
/// Most random reads.
pub const MAX_READS: u64 = 1 << 20;
/// Most rounds.
pub const MAX_ROUNDS: u64 = 10;

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The block device (`/dev/vda`).
    pub dev: String,
    /// Requests of 1 MiB in each sequential test.
    pub mib: u64,
    /// Requests of 4 KiB in the random test.
    pub reads: u64,
    /// Times the three tests run, one after another.
    pub rounds: u64,
}

/// The plan the words ask for: `None` without a [`DISK_WORD`], an error
/// when a disk word is wrong.
pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Option<Result<Plan, String>> {
    let mut dev = None;
    let mut mib = DISK_DEFAULT_MIB;
    let mut reads = DISK_DEFAULT_READS;
    let mut rounds = 1;
    let mut error = None;
    let count = |word: &str, value: &str, max: u64| -> Result<u64, String> {
        value
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("{word}: not a number from 1 to {max}"))
    };
    for word in words {
        if let Some(value) = word.strip_prefix(DISK_WORD) {
            if value.starts_with("/dev/") && value.len() > 5 && !value.contains(',') {
                dev = Some(value.to_owned());
            } else {
                error = Some(format!("{word}: not a device under /dev"));
            }
        } else if let Some(value) = word.strip_prefix(DISK_MIB_WORD) {
            match count(word, value, MAX_MIB) {
                Ok(n) => mib = n,
                Err(e) => error = Some(e),
            }
        } else if let Some(value) = word.strip_prefix(DISK_READS_WORD) {
            match count(word, value, MAX_READS) {
                Ok(n) => reads = n,
                Err(e) => error = Some(e),
            }
        } else if let Some(value) = word.strip_prefix(DISK_ROUNDS_WORD) {
            match count(word, value, MAX_ROUNDS) {
                Ok(n) => rounds = n,
                Err(e) => error = Some(e),
            }
        }
    }
    match (error, dev) {
        (Some(e), _) => Some(Err(e)),
        (None, Some(dev)) => Some(Ok(Plan {
            dev,
            mib,
            reads,
            rounds,
        })),
        (None, None) => None,
    }
}

/// Marks the opening of test `test`'s window (called right after the
/// counter is read) for a reader of QEMU's instruction log.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn stratum_disk_window_begin(test: u32) {
    black_box(test);
}

/// Marks the closing of test `test`'s window (called right before the
/// counter is read).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn stratum_disk_window_end(test: u32) {
    // Not the same body as the begin mark's: the linker would fold the two
    // into one function, and one address.
    black_box(!test);
}

/// Ends the run when a test takes longer than [`TEST_LIMIT`]: a request
/// that never completes leaves the program in an uninterruptible wait,
/// where no signal ends it and the init never gets to power off; the
/// watchdog's thread prints the failure and powers the machine off itself.
/// It sleeps until the deadline of the test under way (woken when a test
/// starts or ends), so it wakes inside no window.
struct Watchdog {
    state: Arc<Armed>,
}

/// The test under way and its deadline, and the watchdog's wake-up.
type Armed = (Mutex<Option<(&'static str, Instant)>>, Condvar);

impl Watchdog {
    fn start() -> Self {
        let state: Arc<Armed> = Arc::default();
        let watched = Arc::clone(&state);
        thread::spawn(move || {
            let (lock, cv) = &*watched;
            let mut armed = lock.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                match *armed {
                    None => armed = cv.wait(armed).unwrap_or_else(PoisonError::into_inner),
                    Some((test, deadline)) => {
                        let now = Instant::now();
                        if now >= deadline {
                            println!(
                                "{FAIL_PREFIX}test={test}: not done after {} s: a request \
                                 never completed; powering off",
                                TEST_LIMIT.as_secs()
                            );
                            crate::drain_output();
                            // SAFETY: reboot(2) with RB_POWER_OFF takes no
                            // pointer; the machine stops here.
                            unsafe { libc::reboot(libc::RB_POWER_OFF) };
                            return;
                        }
                        armed = cv
                            .wait_timeout(armed, deadline - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
            }
        });
        Self { state }
    }

    /// Arms the watchdog for `test` (`None`: disarms it).
    fn arm(&self, test: Option<&'static str>) {
        let (lock, cv) = &*self.state;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) =
            test.map(|t| (t, Instant::now() + TEST_LIMIT));
        cv.notify_one();
    }
}

/// A buffer of `len` bytes aligned to [`DISK_BLOCK`], as `O_DIRECT` wants.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let align = DISK_BLOCK as usize;
        let storage = vec![0u8; len + align];
        let start = storage.as_ptr().align_offset(align);
        Self {
            storage,
            start,
            len,
        }
    }

    fn bytes(&mut self, len: usize) -> &mut [u8] {
        &mut self.storage[self.start..self.start + len.min(self.len)]
    }
}

/// Writes each 4 KiB block's stamp (its number on the disk) into `buf`,
/// which lands at byte `offset`.
fn stamp(buf: &mut [u8], offset: u64) {
    for (i, block) in buf.chunks_mut(DISK_BLOCK as usize).enumerate() {
        let n = offset / DISK_BLOCK + i as u64;
        block[..8].copy_from_slice(&n.to_le_bytes());
    }
}

/// The first block of `buf` (read from byte `offset`) whose stamp is wrong.
fn bad_stamp(buf: &[u8], offset: u64) -> Option<u64> {
    buf.chunks(DISK_BLOCK as usize)
        .enumerate()
        .map(|(i, block)| (offset / DISK_BLOCK + i as u64, block))
        .find(|(n, block)| block[..8] != n.to_le_bytes())
        .map(|(n, _)| n)
}

/// One xorshift64 step.
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The block of the random test's `i`-th read (from 0) on a disk of
/// `blocks` blocks, and the state for the next.
fn next_block(state: u64, blocks: u64) -> (u64, u64) {
    let state = xorshift(state);
    (state % blocks, state)
}

/// Requests completed by the driver of block device `name` (reads plus
/// writes, from the text of its `stat` file).
fn parse_dev_stat(text: &str) -> Option<u64> {
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    Some(fields.first()? + fields.get(4)?)
}

/// Nanoseconds every CPU idled so far, I/O wait included, from the text
/// of `/proc/timer_list` (`.idle_sleeptime` and `.iowait_sleeptime`).
fn parse_idle_ns(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut seen = false;
    for line in text.lines() {
        let line = line.trim();
        if !(line.starts_with(".idle_sleeptime") || line.starts_with(".iowait_sleeptime")) {
            continue;
        }
        let value = line.split(':').nth(1)?.split_whitespace().next()?;
        total += value.parse::<u64>().ok()?;
        seen = true;
    }
    seen.then_some(total)
}

fn read_text(path: &str) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// The device's name under `/sys/block`.
fn sys_name(dev: &str) -> &str {
    dev.rsplit('/').next().unwrap_or(dev)
}

/// What is read on each side of a window.
#[derive(Clone, Copy, Debug)]
struct Side {
    dev_ios: u64,
    irqs: u64,
    idle_ns: u64,
}

fn side(stat: &str) -> Result<Side, String> {
    Ok(Side {
        dev_ios: parse_dev_stat(&read_text(stat)?).ok_or_else(|| format!("{stat}: garbled"))?,
        irqs: interrupts::read()?.all,
        idle_ns: parse_idle_ns(&read_text("/proc/timer_list")?)
            .ok_or("/proc/timer_list: no idle times")?,
    })
}

/// Runs test `index` of [`DISK_TESTS`] on `file` as one window (`mark`:
/// the window's number, for the marks).
fn run_test(
    index: usize,
    mark: u32,
    file: &File,
    buf: &mut Aligned,
    plan: &Plan,
    blocks: u64,
) -> Result<String, String> {
    let id = DISK_TESTS[index].id;
    let stat = format!("/sys/block/{}/stat", sys_name(&plan.dev));
    let seq = DISK_SEQ_BYTES as usize;
    let (ops, size) = match id {
        "rand_read" => (plan.reads, DISK_BLOCK as usize),
        _ => (plan.mib, seq),
    };
    println!("{DISK_BEGIN_PREFIX}test={id}");
    crate::drain_output();
    let before = side(&stat)?;
    let mut failure: Option<String> = None;
    let mut state = DISK_RAND_SEED;
    let start = counter::now();
    stratum_disk_window_begin(mark);
    for op in 0..ops {
        let offset = match id {
            "rand_read" => {
                let (block, next) = next_block(state, blocks);
                state = next;
                block * DISK_BLOCK
            }
            _ => op * DISK_SEQ_BYTES,
        };
        let data = buf.bytes(size);
        let done = if id == "seq_write" {
            stamp(data, offset);
            file.write_at(data, offset)
        } else {
            file.read_at(data, offset)
        };
        match done {
            Ok(n) if n == size => {}
            Ok(n) => {
                failure = Some(format!("{n} of {size} bytes at byte {offset}"));
                break;
            }
            Err(e) => {
                failure = Some(format!("at byte {offset}: {e}"));
                break;
            }
        }
        if id != "seq_write"
            && let Some(block) = bad_stamp(data, offset)
        {
            failure = Some(format!("block {block} does not hold its stamp"));
            break;
        }
    }
    stratum_disk_window_end(mark);
    let end = counter::now();
    let after = side(&stat)?;
    if let Some(why) = failure {
        return Err(why);
    }
    let sample = DiskSample {
        test: id,
        ops,
        bytes: ops * size as u64,
        ticks: end.wrapping_sub(start),
        idle_ns: after.idle_ns.saturating_sub(before.idle_ns),
        dev_ios: after.dev_ios.saturating_sub(before.dev_ios),
        irqs: after.irqs.saturating_sub(before.irqs),
    };
    Ok(sample.to_string())
}

/// Runs the disk tests; the exit status (0 passed, 1 a test failed).
pub fn run(plan: &Plan) -> u8 {
    let fail = |test: &str, why: String| {
        println!("{FAIL_PREFIX}test={test}: {why}");
        1
    };
    let size = read_text(&format!("/sys/block/{}/size", sys_name(&plan.dev)))
        .and_then(|t| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("{}: size not a number", plan.dev))
        })
        .map(|sectors| sectors * 512);
    let bytes = match size {
        Ok(b) => b,
        Err(e) => return fail("none", e),
    };
    let blocks = bytes / DISK_BLOCK;
    if blocks == 0 || plan.mib * DISK_SEQ_BYTES > bytes {
        return fail(
            "none",
            format!(
                "{} holds {bytes} bytes: too small for {} MiB",
                plan.dev, plan.mib
            ),
        );
    }
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&plan.dev)
    {
        Ok(f) => f,
        Err(e) => return fail("none", format!("{}: {e}", plan.dev)),
    };
    let mut buf = Aligned::new(DISK_SEQ_BYTES as usize);
    println!(
        "{DISK_ENV_PREFIX}dev={} bytes={bytes} mib={} reads={} rounds={} freq={} \
         {DISK_MARK_BEGIN_KEY}={:#x} {DISK_MARK_END_KEY}={:#x}",
        plan.dev,
        plan.mib,
        plan.reads,
        plan.rounds,
        counter::frequency(),
        stratum_disk_window_begin as extern "C" fn(u32) as usize,
        stratum_disk_window_end as extern "C" fn(u32) as usize,
    );
    let watchdog = Watchdog::start();
    let mut mark = 0;
    for _ in 0..plan.rounds {
        for (index, test) in DISK_TESTS.iter().enumerate() {
            watchdog.arm(Some(test.id));
            let result = run_test(index, mark, &file, &mut buf, plan, blocks);
            watchdog.arm(None);
            match result {
                Ok(line) => println!("{line}"),
                Err(why) => return fail(test.id, why),
            }
            mark += 1;
        }
    }
    println!("{DISK_DONE}");
    crate::drain_output();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_comes_from_the_command_line() {
        let line = "console=ttyAMA0 stratum.test=workload workload.disk=/dev/vda \
                    workload.disk_mib=8 workload.disk_reads=100 workload.disk_rounds=2";
        assert_eq!(
            parse(line.split_whitespace()),
            Some(Ok(Plan {
                dev: "/dev/vda".to_owned(),
                mib: 8,
                reads: 100,
                rounds: 2
            }))
        );
        assert_eq!(
            parse(["workload.disk=/dev/vdb"]),
            Some(Ok(Plan {
                dev: "/dev/vdb".to_owned(),
                mib: DISK_DEFAULT_MIB,
                reads: DISK_DEFAULT_READS,
                rounds: 1
            }))
        );
        assert_eq!(parse("console=ttyAMA0 workload.divisor=3".split(' ')), None);
        for bad in [
            "workload.disk=vda",
            "workload.disk=/dev/",
            "workload.disk_mib=0",
            "workload.disk_mib=x",
            "workload.disk_reads=99999999",
            "workload.disk_rounds=11",
        ] {
            assert!(
                matches!(parse(["workload.disk=/dev/vda", bad]), Some(Err(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn stamps_are_written_and_checked_per_block() {
        let mut buf = vec![0u8; 3 * DISK_BLOCK as usize];
        stamp(&mut buf, 5 * DISK_BLOCK);
        assert_eq!(bad_stamp(&buf, 5 * DISK_BLOCK), None);
        assert_eq!(&buf[4096..4104], &6u64.to_le_bytes());
        assert_eq!(bad_stamp(&buf, 6 * DISK_BLOCK), Some(6));
        buf[2 * 4096] ^= 1;
        assert_eq!(bad_stamp(&buf, 5 * DISK_BLOCK), Some(7));
    }

    #[test]
    fn the_random_blocks_repeat_and_stay_on_the_disk() {
        let walk = |n: usize| -> Vec<u64> {
            let mut state = DISK_RAND_SEED;
            (0..n)
                .map(|_| {
                    let (b, s) = next_block(state, 16384);
                    state = s;
                    b
                })
                .collect()
        };
        let a = walk(1000);
        assert_eq!(a, walk(1000));
        assert!(a.iter().all(|&b| b < 16384));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 900, "{}", distinct.len());
    }

    #[test]
    fn driver_counts_and_idle_times_are_read() {
        let stat = "     120        0     9600      300       40        0    81920      90        0      200      390        0        0        0        0        0        0\n";
        assert_eq!(parse_dev_stat(stat), Some(160));
        assert_eq!(parse_dev_stat("1 2 x"), None);
        let timer_list = "cpu: 0\n clock 0:\n  .idle_sleeptime : 1000 nsecs\n  \
                          .iowait_sleeptime: 234 nsecs\ncpu: 1\n  .idle_sleeptime : 10 nsecs\n";
        assert_eq!(parse_idle_ns(timer_list), Some(1244));
        assert_eq!(parse_idle_ns("cpu: 0\n"), None);
        assert_eq!(sys_name("/dev/vda"), "vda");
    }
}
