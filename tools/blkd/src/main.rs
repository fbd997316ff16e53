//! `stratum-blkd`: the disk daemon of Stratum's service VM. Frontend VMs
//! see virtio-blk disks; the hypervisor parses their requests and forwards
//! them over one vsock stream connection to this program, in the service
//! VM, which performs them on the service VM's own block devices (under
//! QEMU, the `virtio-blk-device` instances passed through to it, one per
//! disk) and answers. The wire format is `stratum_abi::blkproto`'s; this
//! program uses its encoders and decoders and defines none.
//!
//! A static `aarch64-unknown-linux-musl` binary, carried by every Debian
//! initramfs as `/bin/stratum-blkd`; the init starts it in the background
//! when the kernel command line holds `stratum.role=service`
//! (`host/stratum/src/linux/initramfs.rs`). It also builds and is
//! unit-tested on the host.
//!
//! What it does, in order:
//!
//! 1. **Finds its disks** ([`disk::discover`]): disk *n* is the block
//!    device whose `/sys/block/<name>/serial` is `stratum-disk<n>`, opened
//!    read-write with `O_DIRECT` (read-only if the device is), its size
//!    from sysfs; one line per disk on stderr: `stratum-blkd: disk N on
//!    /dev/vdX, S sectors, rw|ro`. Disks are found once, at start: a
//!    service VM's devices do not come and go.
//! 2. **Registers its buffers** ([`placed::setup`]): maps 4 huge pages
//!    (raising the huge-page pool by what it lacks) and finds their
//!    physical addresses, for the hypervisor to copy requests' data into
//!    and out of; kept for the life of the process, the same in every
//!    hello. One line: `stratum-blkd: registered buffers: 8 × 2 MiB at
//!    0x…, …`, or, if that fails, `stratum-blkd: no registered buffers
//!    (<why>); requests carry their data inline`, and it goes on without.
//! 3. **Connects** to the hypervisor, CID 2 port 5200 ([`connect`]),
//!    retrying (10 ms doubling to 1 s) until it is accepted.
//! 4. **Serves** the connection ([`session`]): the hello (which disks it
//!    serves, and its registered buffers), then requests read by one
//!    thread and performed by four workers, several in flight, replies in
//!    any order; a request's data is either inline on the stream or placed
//!    in the registered buffers. A request it cannot perform (no such disk,
//!    bad range or length, unknown operation, a write to a read-only disk,
//!    a bad place, a device error) is answered with an I/O error; the
//!    session goes on.
//! 5. **Reconnects** when the connection ends — the hypervisor closed or
//!    reset it, an I/O error — after one line on stderr saying why
//!    (`stratum-blkd: connection ended: …`), and goes back to 3. A session
//!    that ended before serving any request waits a growing while first,
//!    so a peer that drops every connection at once does not make it spin.
//!    It never exits on its own.
//!
//! Every line it prints starts with `stratum-blkd: ` and leaves in one
//! `write` (the console is shared with the init's and tests' lines).
//!
//! Usage: `stratum-blkd` (serve, forever), or `stratum-blkd --selftest`:
//! find the disks and register buffers, check each disk over an
//! in-process session ([`selftest`]) and exit 0 if every one passed, 1
//! otherwise. Exit status 2: bad arguments.

mod buf;
mod client;
mod connect;
mod disk;
mod placed;
mod queue;
mod selftest;
mod session;
#[cfg(test)]
mod testfs;

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::thread;

use buf::Pool;
use connect::Backoff;
use placed::Placed;

/// Prints `stratum-blkd: <what>` on stderr as one write.
pub fn log(what: fmt::Arguments<'_>) {
    let line = format!("stratum-blkd: {what}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The usage line.
const USAGE: &str = "usage: stratum-blkd [--selftest]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let selftest = match args.as_slice() {
        [] => false,
        [flag] if flag == "--selftest" => true,
        _ => {
            log(format_args!("{USAGE}"));
            return ExitCode::from(2);
        }
    };
    let found = disk::discover(Path::new("/sys/block"), Path::new("/dev"));
    for line in &found.report {
        log(format_args!("{line}"));
    }
    if found.disks.mask() == 0 {
        log(format_args!(
            "no disks: no block device has a stratum-disk<N> serial"
        ));
    }
    // Kept until the process exits: every session registers the same.
    let placed = match placed::setup() {
        Ok(placed) => {
            log(format_args!("registered buffers: {placed}"));
            placed
        }
        Err(why) => {
            log(format_args!(
                "no registered buffers ({why}); requests carry their data inline"
            ));
            Placed::none()
        }
    };
    if selftest {
        return if selftest::run(&found.disks, &placed) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let pool = Pool::new();
    let mut backoff = Backoff::new();
    loop {
        let stream = connect::connect(&mut backoff);
        log(format_args!(
            "connected to the hypervisor; serving disks {:#x}",
            found.disks.mask()
        ));
        let summary = session::serve(stream, &found.disks, &placed, &pool);
        log(format_args!("connection ended: {summary}; reconnecting"));
        if summary.requests == 0 {
            thread::sleep(backoff.next_wait());
        }
    }
}
