//! `stratum-blkd --selftest`: the daemon's own check of its disks, with no
//! hypervisor. A session ([`crate::session::serve`]) runs over a Unix
//! socket pair with [`crate::client::Client`] at the other end, which for
//! every disk served reads its first 4 KiB (or the whole disk if smaller)
//! and, for a read-write disk, writes the same bytes back, flushes and
//! reads them again, expecting them unchanged. One line per disk; `true`
//! if every disk passed.
//!
//! It exercises what the unit tests cannot on the host: `O_DIRECT` on the
//! service VM's real block devices, their sizes, the read-only refusal of
//! a `readonly=on` drive. The write-back rewrites bytes with what they
//! held, so it changes nothing — unless something else writes the same
//! sectors meanwhile: do not run it beside a serving daemon.

use std::os::unix::net::UnixStream;
use std::thread;

use stratum_abi::blkproto::{Request, SECTOR, op, status};
use stratum_abi::bundle::MAX_DISKS;

use crate::buf::Pool;
use crate::client::Client;
use crate::disk::Disks;
use crate::log;
use crate::session::serve;

/// Sectors read and written back per disk at most.
const SECTORS: u64 = 8;

/// Checks every disk of `disks` (see the module docs).
pub fn run(disks: &Disks) -> bool {
    let (ours, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            log(format_args!("selftest: no socket pair: {e}"));
            return false;
        }
    };
    let pool = Pool::new();
    thread::scope(|scope| {
        let server = scope.spawn(|| serve(theirs, disks, &pool));
        let mut client = Client::new(ours);
        let passed = match client.hello() {
            Ok(hello) => (0..MAX_DISKS)
                .filter(|n| hello.disks & 1 << n != 0)
                .map(|n| check_disk(&mut client, disks, n as u16))
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

/// Checks disk `n`, printing one line.
fn check_disk(client: &mut Client<UnixStream>, disks: &Disks, n: u16) -> bool {
    let Some(disk) = disks.get(n) else {
        log(format_args!("selftest disk {n}: in the hello, not served"));
        return false;
    };
    let bytes = u32::try_from(disk.sectors.min(SECTORS) * SECTOR).expect("at most 4 KiB");
    let mut id = 0;
    let mut call = |op: u16, sector: u64, bytes: u32, data: &[u8]| {
        id += 1;
        let req = Request {
            id,
            disk: n,
            op,
            sector,
            bytes,
        };
        client.call(&req, data)
    };
    let outcome = (|| {
        let (reply, first) = call(op::READ, 0, bytes, &[])?;
        if reply.status != status::OK {
            return Ok(format!("reading {bytes} bytes: I/O error"));
        }
        if disk.readonly {
            let (reply, _) = call(op::WRITE, 0, bytes, &first)?;
            return Ok(if reply.status == status::IOERR {
                format!("read {bytes} bytes; a write was refused (read-only): ok")
            } else {
                "a write to the read-only disk was not refused".to_owned()
            });
        }
        let (write, _) = call(op::WRITE, 0, bytes, &first)?;
        let (flush, _) = call(op::FLUSH, 0, 0, &[])?;
        let (reread, again) = call(op::READ, 0, bytes, &[])?;
        Ok::<_, std::io::Error>(
            if [write.status, flush.status, reread.status] != [status::OK; 3] {
                format!(
                    "write-back, flush, re-read statuses {}, {}, {}",
                    write.status, flush.status, reread.status
                )
            } else if again != first {
                "the bytes read again differ".to_owned()
            } else {
                format!("read {bytes} bytes, wrote them back, flushed, read them again: ok")
            },
        )
    })();
    let line = outcome.unwrap_or_else(|e| format!("the session failed: {e}"));
    log(format_args!("selftest disk {n}: {line}"));
    line.ends_with(": ok")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::Disk;
    use crate::testfs::TempDir;

    #[test]
    fn passes_on_good_disks_and_leaves_them_unchanged() {
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
        assert!(run(&disks));
        assert_eq!(tmp.read("big"), bytes);
        assert_eq!(tmp.read("small"), &bytes[..1024]);
    }

    #[test]
    fn fails_when_a_disk_does() {
        struct Broken;
        impl crate::disk::Backing for Broken {
            fn read_exact_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
                Err(std::io::Error::other("broken"))
            }
            fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
                Ok(())
            }
            fn sync_data(&self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut disks = Disks::new();
        assert!(disks.insert(
            2,
            Disk {
                backing: Box::new(Broken),
                sectors: 8,
                readonly: false,
            }
        ));
        assert!(!run(&disks));
    }
}
