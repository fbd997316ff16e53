//! Sessions over a Unix socket pair, with temporary files (opened with
//! `O_DIRECT` where the file system allows, as the daemon opens devices)
//! and fakes that fail or wait as disks. The test is the hypervisor's end
//! ([`Client`]); nothing here is timed.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::*;
use crate::client::Client;
use crate::disk::Backing;
use crate::testfs::TempDir;

/// Sectors of each test disk.
const SECTORS: u64 = 64;

/// A served session: the client end, the server's thread, the files.
struct Session {
    client: Client<UnixStream>,
    server: JoinHandle<Summary>,
    tmp: TempDir,
}

impl Session {
    /// Serves disk 0 (read-write, bytes `i % 251`), disk 2 (read-only, all
    /// 0xee) and the `extra` ones, over a fresh socket pair.
    fn start(extra: Vec<(u16, Disk)>) -> Self {
        let tmp = TempDir::new("session");
        let mut disks = Disks::new();
        let pattern: Vec<u8> = (0..SECTORS * SECTOR).map(|i| (i % 251) as u8).collect();
        assert!(disks.insert(0, disk_file(&tmp, "d0", &pattern, false)));
        assert!(disks.insert(2, disk_file(&tmp, "d2", &[0xee; 64 * 512], true)));
        for (n, d) in extra {
            assert!(disks.insert(n, d));
        }
        let mask = disks.mask();
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let server = thread::spawn(move || serve(theirs, &disks, &Pool::new()));
        let mut client = Client::new(ours);
        let hello = client.hello().expect("the hello comes first");
        assert_eq!(hello, Hello::new(mask));
        Self {
            client,
            server,
            tmp,
        }
    }

    /// Closes the client's side and returns how the session ended.
    fn finish(self) -> (Summary, TempDir) {
        drop(self.client);
        (self.server.join().expect("the session returns"), self.tmp)
    }
}

/// A disk backed by file `name` of `tmp` holding `bytes`, opened as the
/// daemon opens devices.
fn disk_file(tmp: &TempDir, name: &str, bytes: &[u8], readonly: bool) -> Disk {
    drop(tmp.file(name, bytes));
    let path = tmp.path().join(name);
    let direct = OpenOptions::new()
        .read(true)
        .write(!readonly)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let file = direct
        .or_else(|_| OpenOptions::new().read(true).write(!readonly).open(&path))
        .expect("open");
    Disk {
        backing: Box::new(file),
        sectors: bytes.len() as u64 / SECTOR,
        readonly,
    }
}

fn req(id: u32, disk: u16, op: u16, sector: u64, bytes: u32) -> Request {
    Request {
        id,
        disk,
        op,
        sector,
        bytes,
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn the_hello_names_the_disks_served() {
    let s = Session::start(vec![]);
    let (summary, _) = s.finish();
    assert!(matches!(summary.end, End::Closed), "{summary}");
    assert_eq!(summary.requests, 0);

    let (ours, theirs) = UnixStream::pair().expect("pair");
    let mut disks = Disks::new();
    let tmp = TempDir::new("hello");
    assert!(disks.insert(3, disk_file(&tmp, "x", &[0; 512], false)));
    assert!(disks.insert(15, disk_file(&tmp, "y", &[0; 512], true)));
    let server = thread::spawn(move || serve(theirs, &disks, &Pool::new()));
    let mut c = Client::new(ours);
    let hello = c.hello().expect("hello");
    assert_eq!(hello, Hello::new(1 << 3 | 1 << 15));
    drop(c);
    server.join().expect("joins");
}

#[test]
fn reads_writes_and_flushes_round_trip_to_the_file() {
    let mut s = Session::start(vec![]);
    let c = &mut s.client;
    // Read sectors 1..3 of the pattern.
    let (r, data) = c.call(&req(1, 0, op::READ, 1, 1024), &[]).expect("read");
    assert_eq!((r.status, r.bytes), (status::OK, 1024));
    let expected: Vec<u8> = (512..1536u64).map(|i| (i % 251) as u8).collect();
    assert_eq!(data, expected);
    // Write 4 KiB at sector 8, flush, read it back.
    let new = pattern(7, 4096);
    let (r, data) = c.call(&req(2, 0, op::WRITE, 8, 4096), &new).expect("write");
    assert_eq!((r.status, r.bytes, data.len()), (status::OK, 0, 0));
    let (r, _) = c.call(&req(3, 0, op::FLUSH, 0, 0), &[]).expect("flush");
    assert_eq!(r.status, status::OK);
    let (r, data) = c.call(&req(4, 0, op::READ, 8, 4096), &[]).expect("read");
    assert_eq!(r.status, status::OK);
    assert_eq!(data, new);
    // The last sector, and a read of nothing.
    let (r, data) = c
        .call(&req(5, 0, op::READ, SECTORS - 1, 512), &[])
        .expect("end");
    assert_eq!((r.status, data.len()), (status::OK, 512));
    let (r, data) = c
        .call(&req(6, 0, op::READ, SECTORS, 0), &[])
        .expect("empty");
    assert_eq!((r.status, r.bytes, data.len()), (status::OK, 0, 0));
    // A flush of the read-only disk is fine too.
    let (r, _) = c.call(&req(7, 2, op::FLUSH, 0, 0), &[]).expect("flush ro");
    assert_eq!(r.status, status::OK);

    let (summary, tmp) = s.finish();
    assert!(matches!(summary.end, End::Closed), "{summary}");
    assert_eq!((summary.requests, summary.refused), (7, 0));
    let file = tmp.read("d0");
    assert_eq!(&file[8 * 512..8 * 512 + 4096], &new[..]);
    assert_eq!(
        file[8 * 512 - 1],
        ((8 * 512 - 1) % 251) as u8,
        "untouched before"
    );
    assert_eq!(
        file[8 * 512 + 4096],
        ((8 * 512 + 4096) % 251) as u8,
        "and after"
    );
}

/// Every request is written before any reply is read; each gets exactly
/// one reply, matched by id, whatever the order.
#[test]
fn requests_are_pipelined_and_each_answered_once() {
    let mut s = Session::start(vec![]);
    let mut expected = BTreeMap::new();
    for i in 0..16u32 {
        let sector = 16 + u64::from(i);
        let data = pattern(i as u8, 512);
        s.client
            .send(&req(100 + i, 0, op::WRITE, sector, 512), &data)
            .expect("send write");
        expected.insert(100 + i, (status::OK, Vec::new()));
        let before: Vec<u8> = (0..512u64)
            .map(|b| ((b + 512 * u64::from(i)) % 251) as u8)
            .collect();
        s.client
            .send(&req(200 + i, 0, op::READ, u64::from(i), 512), &[])
            .expect("send read");
        expected.insert(200 + i, (status::OK, before));
    }
    s.client
        .send(&req(300, 0, op::FLUSH, 0, 0), &[])
        .expect("send flush");
    expected.insert(300, (status::OK, Vec::new()));
    s.client
        .send(&req(301, 9, op::READ, 0, 512), &[])
        .expect("send refused");
    expected.insert(301, (status::IOERR, Vec::new()));
    let mut got = BTreeMap::new();
    for _ in 0..expected.len() {
        let (r, data) = s.client.reply().expect("a reply");
        assert!(
            got.insert(r.id, (r.status, data)).is_none(),
            "{} twice",
            r.id
        );
    }
    assert_eq!(got, expected);
    let (summary, tmp) = s.finish();
    assert_eq!((summary.requests, summary.refused), (34, 1));
    let file = tmp.read("d0");
    for i in 0..16usize {
        let at = (16 + i) * 512;
        assert_eq!(&file[at..at + 512], &pattern(i as u8, 512)[..], "write {i}");
    }
}

/// A disk whose reads wait for a signal, and one whose flush sends it: a
/// read sent first can only finish after a flush sent after it, which a
/// daemon doing one request at a time would never reach. (The wait gives
/// up after a minute and fails the read, so a regression fails the test
/// instead of hanging it.)
#[test]
fn a_slow_request_does_not_hold_up_the_next() {
    struct Gated(Mutex<Receiver<()>>);
    impl Backing for Gated {
        fn read_exact_at(&self, buf: &mut [u8], _: u64) -> io::Result<()> {
            let rx = self.0.lock().expect("gate");
            rx.recv_timeout(Duration::from_secs(60))
                .map_err(|_| io::Error::other("never released"))?;
            buf.fill(0x5a);
            Ok(())
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
    }
    struct Releaser(Mutex<Sender<()>>);
    impl Backing for Releaser {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            Ok(())
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            let _ = self.0.lock().expect("releaser").send(());
            Ok(())
        }
    }
    let (tx, rx) = mpsc::channel();
    let gated = Disk {
        backing: Box::new(Gated(Mutex::new(rx))),
        sectors: 8,
        readonly: false,
    };
    let releaser = Disk {
        backing: Box::new(Releaser(Mutex::new(tx))),
        sectors: 8,
        readonly: false,
    };
    let mut s = Session::start(vec![(5, gated), (6, releaser)]);
    s.client
        .send(&req(1, 5, op::READ, 0, 512), &[])
        .expect("slow read");
    s.client
        .send(&req(2, 6, op::FLUSH, 0, 0), &[])
        .expect("flush");
    // The read's success is the proof: it finished only because the flush
    // ran while it waited. Which reply is sent first is a race between
    // the two workers once the flush has signalled, so either order goes.
    let mut replies = [
        s.client.reply().expect("first reply"),
        s.client.reply().expect("second reply"),
    ];
    replies.sort_by_key(|(r, _)| r.id);
    let [(read, data), (flush, _)] = replies;
    assert_eq!((flush.id, flush.status), (2, status::OK));
    assert_eq!(
        (read.id, read.status),
        (1, status::OK),
        "the read finished: the flush sent after it ran meanwhile"
    );
    assert_eq!(data, [0x5a; 512]);
    s.finish();
}

/// Every refusal of the module docs, each followed by a good request on
/// the same connection (the stream stayed in step), and the files
/// unchanged.
#[test]
fn every_bad_request_gets_an_io_error_and_the_session_goes_on() {
    struct Failing;
    impl Backing for Failing {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            Err(io::Error::other("medium error"))
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            Err(io::Error::other("medium error"))
        }
        fn sync_data(&self) -> io::Result<()> {
            Err(io::Error::other("medium error"))
        }
    }
    let failing = Disk {
        backing: Box::new(Failing),
        sectors: 8,
        readonly: false,
    };
    let mut s = Session::start(vec![(7, failing)]);
    let over = MAX_DATA + 512;
    // (what, request, its data, refused before reaching a disk)
    let cases: Vec<(&str, Request, Vec<u8>, bool)> = vec![
        ("disk not served", req(1, 1, op::READ, 0, 512), vec![], true),
        (
            "disk past MAX_DISKS",
            req(2, 40, op::FLUSH, 0, 0),
            vec![],
            true,
        ),
        ("unknown op", req(3, 0, 9, 0, 512), vec![], true),
        ("GET_ID is not ours", req(4, 0, 8, 0, 0), vec![], true),
        (
            "read past the end",
            req(5, 0, op::READ, SECTORS - 1, 1024),
            vec![],
            true,
        ),
        (
            "read starting past the end",
            req(6, 0, op::READ, SECTORS, 512),
            vec![],
            true,
        ),
        (
            "sector overflows",
            req(7, 0, op::READ, u64::MAX, 512),
            vec![],
            true,
        ),
        (
            "offset overflows",
            req(8, 0, op::READ, u64::MAX / 256, 0),
            vec![],
            true,
        ),
        (
            "not whole sectors",
            req(9, 0, op::READ, 0, 100),
            vec![],
            true,
        ),
        (
            "read over MAX_DATA",
            req(10, 0, op::READ, 0, over),
            vec![],
            true,
        ),
        (
            "flush with a length",
            req(11, 0, op::FLUSH, 0, 512),
            vec![],
            true,
        ),
        (
            "flush with a sector",
            req(12, 0, op::FLUSH, 3, 0),
            vec![],
            true,
        ),
        (
            "write past the end",
            req(13, 0, op::WRITE, SECTORS, 512),
            vec![1; 512],
            true,
        ),
        (
            "write of part sectors",
            req(14, 0, op::WRITE, 0, 700),
            vec![1; 700],
            true,
        ),
        (
            "write to a read-only disk",
            req(15, 2, op::WRITE, 0, 1024),
            vec![1; 1024],
            true,
        ),
        (
            "write to no disk",
            req(16, 3, op::WRITE, 0, 512),
            vec![1; 512],
            true,
        ),
        // Its data is still read (and dropped): 4 MiB + 512 bytes.
        (
            "write over MAX_DATA",
            req(17, 0, op::WRITE, 0, over),
            vec![1; over as usize],
            true,
        ),
        (
            "the disk fails a read",
            req(18, 7, op::READ, 0, 512),
            vec![],
            false,
        ),
        (
            "the disk fails a write",
            req(19, 7, op::WRITE, 0, 512),
            vec![1; 512],
            false,
        ),
        (
            "the disk fails a flush",
            req(20, 7, op::FLUSH, 0, 0),
            vec![],
            false,
        ),
    ];
    let probe = |c: &mut Client<UnixStream>, id: u32| {
        let (r, data) = c.call(&req(id, 0, op::READ, 0, 512), &[]).expect("probe");
        assert_eq!(r.status, status::OK);
        assert_eq!(data[1], 1, "the pattern, unchanged");
    };
    for (name, r, data, _) in &cases {
        let writer = thread::scope(|scope| {
            // A large write's data fills the socket: send it from another
            // thread while this one reads the reply.
            let mut stream = s.client.stream().try_clone().expect("clone");
            let sending = scope.spawn(move || {
                let mut c = Client::new(&mut stream);
                c.send(r, data)
            });
            let reply = s.client.reply();
            (sending.join().expect("joined"), reply)
        });
        writer.0.expect("sent");
        let (reply, got) = writer.1.expect("a reply");
        assert_eq!(
            (reply.id, reply.status, reply.bytes),
            (r.id, status::IOERR, 0),
            "{name}"
        );
        assert!(got.is_empty(), "{name}");
        probe(&mut s.client, 1000 + r.id);
    }
    let (summary, tmp) = s.finish();
    assert!(matches!(summary.end, End::Closed), "{summary}");
    assert_eq!(summary.requests as usize, 2 * cases.len());
    assert_eq!(
        summary.refused as usize,
        cases.iter().filter(|c| c.3).count()
    );
    let d0: Vec<u8> = (0..SECTORS * SECTOR).map(|i| (i % 251) as u8).collect();
    assert_eq!(tmp.read("d0"), d0);
    assert_eq!(tmp.read("d2"), vec![0xee; 64 * 512]);
}

/// The refusals `check` gives against the session's own disks, by reason.
#[test]
fn check_names_each_refusal() {
    let tmp = TempDir::new("check");
    let mut disks = Disks::new();
    assert!(disks.insert(0, disk_file(&tmp, "rw", &[0; 4096], false)));
    assert!(disks.insert(1, disk_file(&tmp, "ro", &[0; 4096], true)));
    let refusal = |r: Request| check(&disks, &r).err();
    assert_eq!(refusal(req(0, 2, op::READ, 0, 512)), Some(Refusal::NoDisk));
    assert_eq!(refusal(req(0, 0, 3, 0, 0)), Some(Refusal::UnknownOp));
    assert_eq!(
        refusal(req(0, 0, op::READ, 0, MAX_DATA + 512)),
        Some(Refusal::TooLarge)
    );
    assert_eq!(
        refusal(req(0, 0, op::READ, 0, 513)),
        Some(Refusal::NotSectors)
    );
    assert_eq!(
        refusal(req(0, 0, op::READ, 7, 1024)),
        Some(Refusal::PastEnd)
    );
    assert_eq!(
        refusal(req(0, 0, op::READ, u64::MAX, 512)),
        Some(Refusal::PastEnd)
    );
    assert_eq!(
        refusal(req(0, 1, op::WRITE, 0, 512)),
        Some(Refusal::ReadOnly)
    );
    assert_eq!(
        refusal(req(0, 0, op::FLUSH, 1, 0)),
        Some(Refusal::FlushWithRange)
    );
    let ok = check(&disks, &req(0, 0, op::WRITE, 6, 1024)).expect("fits exactly");
    assert_eq!((ok.op, ok.offset, ok.len), (Op::Write, 3072, 1024));
    let ok = check(&disks, &req(0, 1, op::READ, 0, 4096)).expect("read of a ro disk");
    assert_eq!((ok.op, ok.offset, ok.len), (Op::Read, 0, 4096));
    let ok = check(&disks, &req(0, 1, op::FLUSH, 0, 0)).expect("flush");
    assert_eq!((ok.op, ok.len), (Op::Flush, 0));
}

/// A request with its reserved word set ends the session: the replies
/// already due still come, then the stream closes; the daemon's end says
/// why.
#[test]
fn a_malformed_request_closes_the_session() {
    let mut s = Session::start(vec![]);
    let (r, _) = s
        .client
        .call(&req(1, 0, op::READ, 0, 512), &[])
        .expect("good");
    assert_eq!(r.status, status::OK);
    let mut bad = req(2, 0, op::READ, 0, 512).encode();
    bad[20] = 1;
    s.client.stream().write_all(&bad).expect("sent");
    let mut rest = Vec::new();
    s.client
        .stream()
        .read_to_end(&mut rest)
        .expect("the daemon closes the stream");
    assert!(rest.is_empty(), "no reply to the malformed request");
    let (summary, _) = s.finish();
    assert!(
        matches!(summary.end, End::Violation(w) if w.contains("reserved")),
        "{summary}"
    );
    assert_eq!(summary.requests, 1);
}

/// A stream that ends inside a request, or inside a write's data, is a
/// read error, not a clean close.
#[test]
fn a_stream_cut_inside_a_message_is_an_error() {
    let mut s = Session::start(vec![]);
    s.client
        .stream()
        .write_all(&[0; 10])
        .expect("half a header");
    s.client
        .stream()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let (summary, _) = s.finish();
    assert!(
        matches!(&summary.end, End::Read(e) if e.kind() == io::ErrorKind::UnexpectedEof),
        "{summary}"
    );

    let mut s = Session::start(vec![]);
    s.client
        .send(&req(1, 0, op::WRITE, 0, 1024), &[0; 512])
        .expect("half the data");
    s.client
        .stream()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let (summary, tmp) = s.finish();
    assert!(matches!(summary.end, End::Read(_)), "{summary}");
    assert_eq!(
        tmp.read("d0")[1],
        1,
        "the half write never reached the disk"
    );
}

/// The peer may stop sending and still read: what it sent is performed
/// and answered before the session ends.
#[test]
fn requests_sent_before_a_half_close_are_all_answered() {
    let mut s = Session::start(vec![]);
    for i in 0..8u32 {
        s.client
            .send(
                &req(i, 0, op::WRITE, u64::from(i), 512),
                &pattern(i as u8, 512),
            )
            .expect("send");
    }
    s.client
        .stream()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut ids: Vec<u32> = (0..8)
        .map(|_| s.client.reply().expect("reply"))
        .map(|(r, _)| {
            assert_eq!(r.status, status::OK);
            r.id
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    let mut rest = Vec::new();
    s.client.stream().read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty());
    let (summary, tmp) = s.finish();
    assert!(matches!(summary.end, End::Closed), "{summary}");
    assert_eq!(&tmp.read("d0")[7 * 512..8 * 512], &pattern(7, 512)[..]);
}

/// A peer that goes away while replies are due: the session ends (a write
/// error or a close, whichever it meets first) and returns; nothing hangs.
#[test]
fn a_peer_that_vanishes_ends_the_session() {
    let mut s = Session::start(vec![]);
    for i in 0..8u32 {
        s.client
            .send(&req(i, 0, op::READ, 0, 4096), &[])
            .expect("send");
    }
    let (summary, _) = s.finish();
    assert!(
        matches!(summary.end, End::Closed | End::Write(_) | End::Read(_)),
        "{summary}"
    );
}
