//! `stratum-blkd --selftest`: the daemon's own check of its disks, with no
//! hypervisor. A session ([`crate::session::serve`]) runs over a Unix
//! socket pair with [`crate::client::Client`] at the other end, which
//! checks the hello's regions are the daemon's registered buffers and, for
//! every disk served, reads its first 4 KiB (or the whole disk if smaller)
//! and, for a read-write disk, writes the same bytes back, flushes and
//! reads them again, expecting them unchanged. With registered buffers it
//! does the same placed: a placed read into place 0 (first filled with the
//! bytes' complement, so every byte must be written) must bring the same
//! bytes, a placed write of them back must succeed (and leave the disk
//! as it was), and a placed write to a read-only disk must be refused. One
//! line per disk; `true` if every disk passed.
//!
//! It exercises what the unit tests cannot on the host: `O_DIRECT` on the
//! service VM's real block devices, to and from real huge pages, their
//! sizes, the read-only refusal of a `readonly=on` drive. The write-back
//! rewrites bytes with what they held, so it changes nothing — unless
//! something else writes the same sectors meanwhile: do not run it beside
//! a serving daemon.

use std::io;
use std::os::unix::net::UnixStream;
use std::thread;

use stratum_abi::blkproto::{INLINE, Reply, Request, SECTOR, op, status};
use stratum_abi::bundle::MAX_DISKS;

use crate::buf::Pool;
use crate::client::Client;
use crate::disk::Disks;
use crate::log;
use crate::placed::Placed;
use crate::session::serve;

/// Sectors read and written back per disk at most.
const SECTORS: u64 = 8;

/// Checks every disk of `disks`, inline and, if `placed` has space,
/// placed (see the module docs).
pub fn run(disks: &Disks, placed: &Placed) -> bool {
    let (ours, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            log(format_args!("selftest: no socket pair: {e}"));
            return false;
        }
    };
    let pool = Pool::new();
    thread::scope(|scope| {
        let server = scope.spawn(|| serve(theirs, disks, placed, &pool));
        let mut client = Client::new(ours);
        let passed = match client.hello() {
            Ok((_, regions)) if regions != placed.regions() => {
                log(format_args!(
                    "selftest: the hello's {} region(s) are not the {} registered",
                    regions.len(),
                    placed.regions().len()
                ));
                false
            }
            Ok((hello, _)) => (0..MAX_DISKS)
                .filter(|n| hello.disks & 1 << n != 0)
                .map(|n| check_disk(&mut client, disks, placed, n as u16))
                .fold(true, |all, ok| all & ok),
            Err(e) => {
                log(format_args!("selftest: no hello: {e}"));
                false
            }
        };
        drop(client);
        let _ = server.join();
        passed
    })
}

/// One request and its reply: `(op, sector, place, data)`.
type Call<'a> = dyn FnMut(u16, u64, u32, &[u8]) -> io::Result<(Reply, Vec<u8>)> + 'a;

/// A placed read at place 0, first filled with the complement of `first`,
/// must bring `first` again: what is wrong with it, if anything.
fn placed_read(call: &mut Call<'_>, placed: &Placed, first: &[u8]) -> io::Result<Option<String>> {
    let complement: Vec<u8> = first.iter().map(|b| !b).collect();
    // SAFETY: no request is in flight: each call waits for its reply.
    unsafe { placed.copy_in(0, &complement) };
    let (reply, data) = call(op::READ, 0, 0, &[])?;
    // SAFETY: as above: the read has been answered.
    let got = unsafe { placed.copy_out(0, first.len()) };
    Ok(if (reply.status, data.len()) != (status::OK, 0) {
        Some(format!(
            "a placed read: status {}, {} bytes inline",
            reply.status,
            data.len()
        ))
    } else if got != first {
        Some("a placed read brought other bytes".to_owned())
    } else {
        None
    })
}

/// Checks disk `n`, printing one line.
fn check_disk(client: &mut Client<UnixStream>, disks: &Disks, placed: &Placed, n: u16) -> bool {
    let Some(disk) = disks.get(n) else {
        log(format_args!("selftest disk {n}: in the hello, not served"));
        return false;
    };
    let bytes = u32::try_from(disk.sectors.min(SECTORS) * SECTOR).expect("at most 4 KiB");
    let mut id = 0;
    let mut call = |op: u16, sector: u64, place: u32, data: &[u8]| {
        id += 1;
        let req = Request {
            id,
            disk: n,
            op,
            sector,
            bytes: if op == op::FLUSH { 0 } else { bytes },
            place,
        };
        client.call(&req, data)
    };
    let outcome = (|| {
        let (reply, first) = call(op::READ, 0, INLINE, &[])?;
        if reply.status != status::OK {
            return Ok(format!("reading {bytes} bytes: I/O error"));
        }
        let also = if placed.is_empty() {
            ""
        } else {
            ", inline and placed"
        };
        if disk.readonly {
            let (reply, _) = call(op::WRITE, 0, INLINE, &first)?;
            if reply.status != status::IOERR {
                return Ok("a write to the read-only disk was not refused".to_owned());
            }
            if !placed.is_empty() {
                if let Some(problem) = placed_read(&mut call, placed, &first)? {
                    return Ok(problem);
                }
                let (reply, _) = call(op::WRITE, 0, 0, &[])?;
                if reply.status != status::IOERR {
                    return Ok("a placed write to the read-only disk was not refused".to_owned());
                }
            }
            return Ok(format!(
                "read {bytes} bytes; a write was refused (read-only){also}: ok"
            ));
        }
        // Written back inline, then (with a placed space) from place 0,
        // which the placed read fills with `first`.
        let places: &[u32] = if placed.is_empty() {
            &[INLINE]
        } else {
            &[INLINE, 0]
        };
        for &place in places {
            let (label, data): (&str, &[u8]) = if place == INLINE {
                ("", &first)
            } else {
                if let Some(problem) = placed_read(&mut call, placed, &first)? {
                    return Ok(problem);
                }
                ("placed ", &[])
            };
            let (write, _) = call(op::WRITE, 0, place, data)?;
            let (flush, _) = call(op::FLUSH, 0, INLINE, &[])?;
            let (reread, again) = call(op::READ, 0, INLINE, &[])?;
            if [write.status, flush.status, reread.status] != [status::OK; 3] {
                return Ok(format!(
                    "{label}write-back, flush, re-read statuses {}, {}, {}",
                    write.status, flush.status, reread.status
                ));
            }
            if again != first {
                return Ok(format!("the bytes read again after a {label}write differ"));
            }
        }
        Ok::<_, io::Error>(format!(
            "read {bytes} bytes, wrote them back, flushed, read them again{also}: ok"
        ))
    })();
    let line = outcome.unwrap_or_else(|e| format!("the session failed: {e}"));
    log(format_args!("selftest disk {n}: {line}"));
    line.ends_with(": ok")
}

#[cfg(test)]
mod tests {
    use stratum_abi::blkproto::Region;

    use super::*;
    use crate::disk::Disk;
    use crate::placed::Place;
    use crate::testfs::TempDir;

    /// Runs the self-test on disks 0 (8 KiB), 1 (1 KiB) and 4 (read-only)
    /// with `placed`; they must pass and be left unchanged.
    fn passes_and_leaves_disks_unchanged(placed: &Placed) {
        let tmp = TempDir::new("selftest");
        let bytes: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        let mut disks = Disks::new();
        let disk = |name: &str, len: usize, readonly: bool| Disk {
            backing: Box::new(tmp.file(name, &bytes[..len])),
            sectors: (len / 512) as u64,
            readonly,
        };
        assert!(disks.insert(0, disk("big", 8192, false)));
        assert!(disks.insert(1, disk("small", 1024, false)));
        assert!(disks.insert(4, disk("ro", 4096, true)));
        assert!(run(&disks, placed));
        assert_eq!(tmp.read("big"), bytes);
        assert_eq!(tmp.read("small"), &bytes[..1024]);
        assert_eq!(tmp.read("ro"), &bytes[..4096]);
    }

    #[test]
    fn passes_on_good_disks_inline_and_leaves_them_unchanged() {
        passes_and_leaves_disks_unchanged(&Placed::none());
    }

    #[test]
    fn passes_on_good_disks_placed_and_leaves_them_unchanged() {
        let placed = Placed::on_heap(&[Region {
            addr: 0x4820_0000,
            len: 8192,
        }]);
        passes_and_leaves_disks_unchanged(&placed);
        // The last placed read (of the 1 KiB disk, then the read-only
        // one's 4 KiB) left its bytes in place 0.
        // SAFETY: the session is over: no request is in flight.
        let left = unsafe { placed.copy_out(0, 4096) };
        let expected: Vec<u8> = (0..4096u32).map(|i| (i % 253) as u8).collect();
        assert_eq!(left, expected);
    }

    /// A disk whose reads fail, or whose placed reads bring nothing: the
    /// self-test fails.
    #[test]
    fn fails_when_a_disk_does() {
        struct Broken {
            inline_reads: bool,
        }
        impl crate::disk::Backing for Broken {
            fn read_exact_at(&self, buf: &mut [u8], _: u64) -> io::Result<()> {
                if self.inline_reads {
                    buf.fill(3);
                    Ok(())
                } else {
                    Err(io::Error::other("broken"))
                }
            }
            fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
                Ok(())
            }
            fn read_into_place(&self, _: &Place<'_>, _: u64) -> io::Result<()> {
                Ok(())
            }
            fn write_from_place(&self, _: &Place<'_>, _: u64) -> io::Result<()> {
                Ok(())
            }
            fn sync_data(&self) -> io::Result<()> {
                Ok(())
            }
        }
        let broken = |inline_reads| {
            let mut disks = Disks::new();
            let disk = Disk {
                backing: Box::new(Broken { inline_reads }),
                sectors: 8,
                readonly: false,
            };
            assert!(disks.insert(2, disk));
            disks
        };
        let placed = Placed::on_heap(&[Region {
            addr: 0x4820_0000,
            len: 4096,
        }]);
        assert!(!run(&broken(false), &Placed::none()), "reads fail");
        assert!(
            run(&broken(true), &Placed::none()),
            "inline, the disk works"
        );
        assert!(
            !run(&broken(true), &placed),
            "a placed read that leaves the place as it was"
        );
    }
}
