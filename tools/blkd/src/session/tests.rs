//! Sessions over a Unix socket pair, with temporary files (opened with
//! `O_DIRECT` where the file system allows, as the daemon opens devices),
//! fakes that fail or wait as disks, and a placed space of heap memory
//! with made-up region addresses. The test is the hypervisor's end
//! ([`Client`], and the copies into and out of the placed space); nothing
//! here is timed, but reads of a reply that may never come give up after
//! a while so a regression fails instead of hanging.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use stratum_abi::blkproto::Region;

use super::*;
use crate::client::Client;
use crate::disk::Backing;
use crate::testfs::TempDir;

/// Sectors of each test disk.
const SECTORS: u64 = 64;
/// The test placed space's regions: 64 KiB, then 64 KiB elsewhere.
const REGIONS: [Region; 2] = [
    Region {
        addr: 0x4820_0000,
        len: 64 << 10,
    },
    Region {
        addr: 0x9000_0000,
        len: 64 << 10,
    },
];
/// Bytes of the test placed space.
const SPACE: u32 = 128 << 10;

/// A served session: the client end, the server's thread, the files, the
/// placed space.
struct Session {
    client: Client<UnixStream>,
    server: JoinHandle<Summary>,
    tmp: TempDir,
    placed: Arc<Placed>,
}

impl Session {
    /// [`Session::start_with`] the test placed space ([`REGIONS`]).
    fn start(extra: Vec<(u16, Disk)>) -> Self {
        Self::start_with(extra, Placed::on_heap(&REGIONS))
    }

    /// Serves disk 0 (read-write, bytes `i % 251`), disk 2 (read-only, all
    /// 0xee) and the `extra` ones, with `placed`, over a fresh socket pair;
    /// checks the hello.
    fn start_with(extra: Vec<(u16, Disk)>, placed: Placed) -> Self {
        let tmp = TempDir::new("session");
        let mut disks = Disks::new();
        let pattern: Vec<u8> = (0..SECTORS * SECTOR).map(|i| (i % 251) as u8).collect();
        assert!(disks.insert(0, disk_file(&tmp, "d0", &pattern, false)));
        assert!(disks.insert(2, disk_file(&tmp, "d2", &[0xee; 64 * 512], true)));
        for (n, d) in extra {
            assert!(disks.insert(n, d));
        }
        let mask = disks.mask();
        let placed = Arc::new(placed);
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let theirs_placed = Arc::clone(&placed);
        let server = thread::spawn(move || serve(theirs, &disks, &theirs_placed, &Pool::new()));
        let mut client = Client::new(ours);
        let (hello, regions) = client.hello().expect("the hello comes first");
        let count = u32::try_from(placed.regions().len()).expect("a few");
        assert_eq!(hello, Hello::with_regions(mask, count));
        assert_eq!(regions, placed.regions());
        Self {
            client,
            server,
            tmp,
            placed,
        }
    }

    /// Copies `data` into the placed space at `at`, as the hypervisor
    /// does before a placed write.
    fn put(&self, at: u32, data: &[u8]) {
        // SAFETY: the tests copy only bytes no request in flight uses (each
        // waits for the replies of the requests on them first).
        unsafe { self.placed.copy_in(at as usize, data) }
    }

    /// The `len` bytes of the placed space at `at`, as the hypervisor
    /// copies them out after a placed read.
    fn get(&self, at: u32, len: usize) -> Vec<u8> {
        // SAFETY: as in `put`.
        unsafe { self.placed.copy_out(at as usize, len) }
    }

    /// Replies that may never come (a regression) end the test with an
    /// error after a while instead of hanging it.
    fn give_up_after_a_while(&mut self) {
        self.client
            .stream()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a timeout");
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

/// An inline request.
fn req(id: u32, disk: u16, op: u16, sector: u64, bytes: u32) -> Request {
    placed_req(id, disk, op, sector, bytes, INLINE)
}

/// A request whose data is at `place`.
fn placed_req(id: u32, disk: u16, op: u16, sector: u64, bytes: u32, place: u32) -> Request {
    Request {
        id,
        disk,
        op,
        sector,
        bytes,
        place,
    }
}

/// Disk 0's initial bytes.
fn d0_initial() -> Vec<u8> {
    (0..SECTORS * SECTOR).map(|i| (i % 251) as u8).collect()
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
    let server = thread::spawn(move || serve(theirs, &disks, &Placed::none(), &Pool::new()));
    let mut c = Client::new(ours);
    let (hello, regions) = c.hello().expect("hello");
    assert_eq!(hello, Hello::new(1 << 3 | 1 << 15));
    assert!(regions.is_empty(), "no placed space, no region");
    drop(c);
    server.join().expect("joins");
}

/// The hello's bytes on the stream, then the regions', in hello order,
/// and nothing else.
#[test]
fn the_hello_carries_the_regions() {
    let (mut ours, theirs) = UnixStream::pair().expect("pair");
    let mut disks = Disks::new();
    let tmp = TempDir::new("regions");
    assert!(disks.insert(1, disk_file(&tmp, "x", &[0; 512], false)));
    let placed = Placed::on_heap(&REGIONS);
    let server = thread::spawn(move || serve(theirs, &disks, &placed, &Pool::new()));
    let mut head = [0u8; Hello::LEN + 2 * Region::LEN];
    ours.read_exact(&mut head).expect("hello and regions");
    assert_eq!(&head[..4], b"SBLK");
    assert_eq!(&head[4..8], &2u32.to_le_bytes(), "version 2");
    assert_eq!(&head[8..12], &2u32.to_le_bytes(), "disk 1");
    assert_eq!(&head[12..16], &2u32.to_le_bytes(), "two regions follow");
    assert_eq!(&head[16..24], &0x4820_0000u64.to_le_bytes());
    assert_eq!(&head[24..32], &(64u64 << 10).to_le_bytes());
    assert_eq!(&head[32..40], &0x9000_0000u64.to_le_bytes());
    assert_eq!(&head[40..48], &(64u64 << 10).to_le_bytes());
    ours.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    ours.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty(), "nothing after the regions: {rest:?}");
    let summary = server.join().expect("joins");
    assert!(matches!(summary.end, End::Closed), "{summary}");
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
/// one reply, matched by id, whatever the order. Placed reads in flight
/// together each fill their own place.
#[test]
fn requests_are_pipelined_and_each_answered_once() {
    let mut s = Session::start(vec![]);
    s.give_up_after_a_while();
    s.put(0, &vec![0xaa; SPACE as usize]);
    let mut expected = BTreeMap::new();
    let before = |i: u32| -> Vec<u8> {
        (0..512u64)
            .map(|b| ((b + 512 * u64::from(i)) % 251) as u8)
            .collect()
    };
    for i in 0..16u32 {
        let sector = 16 + u64::from(i);
        let data = pattern(i as u8, 512);
        s.client
            .send(&req(100 + i, 0, op::WRITE, sector, 512), &data)
            .expect("send write");
        expected.insert(100 + i, (status::OK, Vec::new()));
        s.client
            .send(&req(200 + i, 0, op::READ, u64::from(i), 512), &[])
            .expect("send read");
        expected.insert(200 + i, (status::OK, before(i)));
        let placed = placed_req(400 + i, 0, op::READ, u64::from(i), 512, i * 8192);
        s.client.send(&placed, &[]).expect("send placed read");
        expected.insert(400 + i, (status::OK, Vec::new()));
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
    for i in 0..16u32 {
        let place = s.get(i * 8192, 8192);
        assert_eq!(&place[..512], &before(i)[..], "placed read {i}");
        assert!(place[512..].iter().all(|&b| b == 0xaa), "past read {i}");
    }
    let (summary, tmp) = s.finish();
    assert_eq!((summary.requests, summary.refused), (50, 1));
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
    struct Releaser(Mutex<Sender<()>>);
    impl Backing for Releaser {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            Ok(())
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

/// Every refusal of the module docs but the places' (see
/// `a_bad_place_gets_an_io_error_and_the_session_goes_on`), each followed
/// by a good request on the same connection (the stream stayed in step),
/// and the files unchanged.
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
        fn read_into_place(&self, _: &Place<'_>, _: u64) -> io::Result<()> {
            Err(io::Error::other("medium error"))
        }
        fn write_from_place(&self, _: &Place<'_>, _: u64) -> io::Result<()> {
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
        (
            "placed read past the end",
            placed_req(21, 0, op::READ, SECTORS - 1, 1024, 0),
            vec![],
            true,
        ),
        (
            "placed write to a read-only disk",
            placed_req(22, 2, op::WRITE, 0, 512, 0),
            vec![],
            true,
        ),
        (
            "placed write of part sectors",
            placed_req(23, 0, op::WRITE, 0, 700, 0),
            vec![],
            true,
        ),
        (
            "the disk fails a placed read",
            placed_req(24, 7, op::READ, 0, 512, 4096),
            vec![],
            false,
        ),
        (
            "the disk fails a placed write",
            placed_req(25, 7, op::WRITE, 0, 512, 4096),
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

/// The refusals `check` gives against the session's own disks and placed
/// space, by reason.
#[test]
fn check_names_each_refusal() {
    let tmp = TempDir::new("check");
    let mut disks = Disks::new();
    assert!(disks.insert(0, disk_file(&tmp, "rw", &[0; 4096], false)));
    assert!(disks.insert(1, disk_file(&tmp, "ro", &[0; 4096], true)));
    let placed = Placed::on_heap(&REGIONS);
    let refusal = |r: Request| check(&disks, &placed, &r).err();
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
    assert_eq!(
        refusal(placed_req(0, 0, op::FLUSH, 0, 0, 0)),
        Some(Refusal::FlushPlaced)
    );
    assert_eq!(
        refusal(placed_req(0, 0, op::READ, 0, 512, 2048)),
        Some(Refusal::Place(BadPlace::Unaligned))
    );
    assert_eq!(
        refusal(placed_req(0, 0, op::WRITE, 0, 4096, SPACE - 2048 - 2048)),
        None,
        "ends at the space's end"
    );
    assert_eq!(
        refusal(placed_req(0, 0, op::WRITE, 0, 4096, SPACE)),
        Some(Refusal::Place(BadPlace::Outside))
    );
    assert_eq!(
        refusal(placed_req(0, 0, op::READ, 0, 4096, 0xffff_f000)),
        Some(Refusal::Place(BadPlace::Outside)),
        "place + bytes wraps in u32"
    );
    let none = Placed::none();
    assert_eq!(
        check(&disks, &none, &placed_req(0, 0, op::READ, 0, 512, 0)).err(),
        Some(Refusal::Place(BadPlace::NoSpace))
    );
    let ok = check(&disks, &placed, &req(0, 0, op::WRITE, 6, 1024)).expect("fits exactly");
    assert_eq!((ok.op, ok.offset, ok.len), (Op::Write, 3072, 1024));
    assert!(ok.place.is_none(), "inline");
    let ok = check(&disks, &placed, &req(0, 1, op::READ, 0, 4096)).expect("read of a ro disk");
    assert_eq!((ok.op, ok.offset, ok.len), (Op::Read, 0, 4096));
    let ok = check(&disks, &placed, &req(0, 1, op::FLUSH, 0, 0)).expect("flush");
    assert_eq!((ok.op, ok.len), (Op::Flush, 0));
    let ok = check(
        &disks,
        &placed,
        &placed_req(0, 0, op::READ, 2, 1024, 0x1_2000),
    )
    .expect("a placed read");
    assert_eq!((ok.op, ok.offset, ok.len), (Op::Read, 1024, 1024));
    let place = ok.place.expect("placed");
    assert_eq!((place.at(), place.len()), (0x1_2000, 1024));
}

/// The word after a request's length, reserved in version 1, is its place
/// now: a request with it set is not a violation but a placed request,
/// answered like any other; the session goes on.
#[test]
fn the_word_after_the_length_is_the_place() {
    let mut s = Session::start(vec![]);
    s.give_up_after_a_while();
    s.put(0, &[0xaa; 4096]);
    let mut unaligned = req(1, 0, op::READ, 0, 512).encode();
    unaligned[20..24].copy_from_slice(&[1, 0, 0, 0]);
    let mut place_0 = req(2, 0, op::READ, 0, 512).encode();
    place_0[20..24].copy_from_slice(&[0, 0, 0, 0]);
    for bytes in [unaligned, place_0] {
        s.client.stream().write_all(&bytes).expect("sent");
    }
    let mut replies = [s.client.reply().expect("1"), s.client.reply().expect("2")];
    replies.sort_by_key(|(r, _)| r.id);
    let [(bad, bad_data), (good, good_data)] = replies;
    assert_eq!((bad.id, bad.status, bad_data.len()), (1, status::IOERR, 0));
    assert_eq!((good.id, good.status, good.bytes), (2, status::OK, 0));
    assert!(good_data.is_empty(), "a placed read's data is in its place");
    assert_eq!(s.get(0, 512), &d0_initial()[..512]);
    assert!(s.get(512, 4096 - 512).iter().all(|&b| b == 0xaa));
    let (r, data) = s
        .client
        .call(&req(3, 0, op::READ, 0, 512), &[])
        .expect("inline");
    assert_eq!((r.status, data.len()), (status::OK, 512));
    let (summary, _) = s.finish();
    assert!(matches!(summary.end, End::Closed), "{summary}");
    assert_eq!((summary.requests, summary.refused), (3, 1));
}

/// A placed write then a placed read of the same sectors, the write's
/// place across the seam of the two regions: the file holds the bytes,
/// the read's place gets them, and no byte around either place changes.
#[test]
fn placed_writes_and_reads_round_trip() {
    let mut s = Session::start(vec![]);
    s.put(0, &vec![0xaa; SPACE as usize]);
    let data = pattern(9, 8192);
    let seam = 60 << 10;
    s.put(seam, &data);
    let (r, got) = s
        .client
        .call(&placed_req(1, 0, op::WRITE, 8, 8192, seam), &[])
        .expect("placed write");
    assert_eq!((r.status, r.bytes, got.len()), (status::OK, 0, 0));
    let (r, got) = s
        .client
        .call(&placed_req(2, 0, op::READ, 8, 8192, 4096), &[])
        .expect("placed read");
    assert_eq!((r.status, r.bytes, got.len()), (status::OK, 0, 0));
    let space = s.get(0, SPACE as usize);
    assert_eq!(&space[4096..12288], &data[..], "the read's place");
    assert_eq!(
        &space[seam as usize..seam as usize + 8192],
        &data[..],
        "the write's place, as it was"
    );
    let untouched = |range: std::ops::Range<usize>| space[range].iter().all(|&b| b == 0xaa);
    assert!(untouched(0..4096), "before the read's place");
    assert!(untouched(12288..seam as usize), "between the places");
    assert!(untouched(seam as usize + 8192..SPACE as usize), "after");
    let (summary, tmp) = s.finish();
    assert!(matches!(summary.end, End::Closed), "{summary}");
    assert_eq!((summary.requests, summary.refused), (2, 0));
    let file = tmp.read("d0");
    let mut expected = d0_initial();
    expected[8 * 512..8 * 512 + 8192].copy_from_slice(&data);
    assert_eq!(file, expected, "the write's sectors and nothing else");
    assert_eq!(&file[8 * 512..8 * 512 + 8192], &space[4096..12288]);
}

/// Inline and placed requests see the same disk: a placed read of what
/// was there and of an inline write, an inline read of a placed write.
#[test]
fn placed_and_inline_data_meet_on_the_disk() {
    let mut s = Session::start(vec![]);
    let (r, _) = s
        .client
        .call(&placed_req(1, 0, op::READ, 1, 1024, 0), &[])
        .expect("placed read of the initial bytes");
    assert_eq!(r.status, status::OK);
    assert_eq!(s.get(0, 1024), &d0_initial()[512..1536]);

    let inline = pattern(3, 4096);
    let (r, _) = s
        .client
        .call(&req(2, 0, op::WRITE, 16, 4096), &inline)
        .expect("inline write");
    assert_eq!(r.status, status::OK);
    let (r, got) = s
        .client
        .call(&placed_req(3, 0, op::READ, 16, 4096, 8192), &[])
        .expect("placed read");
    assert_eq!((r.status, got.len()), (status::OK, 0));
    assert_eq!(s.get(8192, 4096), inline);

    let placed = pattern(4, 4096);
    s.put(64 << 10, &placed);
    let (r, _) = s
        .client
        .call(&placed_req(4, 0, op::WRITE, 24, 4096, 64 << 10), &[])
        .expect("placed write");
    assert_eq!(r.status, status::OK);
    let (r, got) = s
        .client
        .call(&req(5, 0, op::READ, 24, 4096), &[])
        .expect("inline read");
    assert_eq!((r.status, r.bytes), (status::OK, 4096));
    assert_eq!(got, placed);

    let (_, tmp) = s.finish();
    let file = tmp.read("d0");
    assert_eq!(&file[16 * 512..16 * 512 + 4096], &inline[..]);
    assert_eq!(&file[24 * 512..24 * 512 + 4096], &placed[..]);
}

/// Places the daemon must refuse, each followed by a good request: an I/O
/// error, no data read from the stream for it (it is placed: a daemon
/// that discarded `bytes` would swallow the next request), the placed
/// space and the files unchanged.
#[test]
fn a_bad_place_gets_an_io_error_and_the_session_goes_on() {
    let mut s = Session::start(vec![]);
    s.give_up_after_a_while();
    s.put(0, &vec![0xaa; SPACE as usize]);
    let cases = [
        ("read at an unaligned place", op::READ, 512, 512),
        (
            "write at an unaligned place",
            op::WRITE,
            512,
            (100 << 10) + 512,
        ),
        ("read past the space's end", op::READ, 8192, SPACE - 4096),
        ("write past the space's end", op::WRITE, 8192, SPACE - 4096),
        ("read at the space's end", op::READ, 512, SPACE),
        ("write far past the end", op::WRITE, 512, 1 << 30),
        ("read whose end wraps", op::READ, 8192, 0xffff_f000),
        ("write whose end wraps", op::WRITE, 8192, 0xffff_f000),
        ("flush with a place", op::FLUSH, 0, 0),
    ];
    for (i, (name, op, bytes, place)) in cases.into_iter().enumerate() {
        let id = 10 * (i as u32 + 1);
        let sector = if op == op::FLUSH { 0 } else { 4 };
        let bad = placed_req(id, 0, op, sector, bytes, place);
        let probe = req(id + 1, 0, op::READ, 0, 512);
        // Both at once: the probe must be read as a request, not as data.
        s.client.send(&bad, &[]).expect("sent");
        s.client.send(&probe, &[]).expect("sent");
        let mut replies = [s.client.reply().expect(name), s.client.reply().expect(name)];
        replies.sort_by_key(|(r, _)| r.id);
        let [(refused, none), (good, data)] = replies;
        assert_eq!(
            (refused.id, refused.status, refused.bytes),
            (id, status::IOERR, 0),
            "{name}"
        );
        assert!(none.is_empty(), "{name}");
        assert_eq!((good.id, good.status), (id + 1, status::OK), "{name}");
        assert_eq!(data, &d0_initial()[..512], "{name}");
    }
    assert!(
        s.get(0, SPACE as usize).iter().all(|&b| b == 0xaa),
        "no refused read reached its place"
    );
    let (summary, tmp) = s.finish();
    assert!(matches!(summary.end, End::Closed), "{summary}");
    assert_eq!(summary.requests as usize, 2 * cases.len());
    assert_eq!(summary.refused as usize, cases.len());
    assert_eq!(tmp.read("d0"), d0_initial(), "no refused write reached it");
}

/// With no placed space the hello registers nothing and every placed
/// request is refused, even one of no bytes at place 0; inline requests
/// go on as ever.
#[test]
fn a_daemon_without_placed_space_refuses_placed_requests() {
    let mut s = Session::start_with(vec![], Placed::none());
    s.give_up_after_a_while();
    let cases = [
        ("placed read", placed_req(1, 0, op::READ, 0, 512, 0)),
        ("placed write", placed_req(2, 0, op::WRITE, 0, 512, 0)),
        (
            "placed read of nothing",
            placed_req(3, 0, op::READ, 0, 0, 0),
        ),
        (
            "placed write of nothing",
            placed_req(4, 0, op::WRITE, 0, 0, 0),
        ),
    ];
    for (name, r) in &cases {
        let (reply, data) = s.client.call(r, &[]).expect(name);
        assert_eq!((reply.status, reply.bytes), (status::IOERR, 0), "{name}");
        assert!(data.is_empty(), "{name}");
    }
    let new = pattern(5, 512);
    let (r, _) = s
        .client
        .call(&req(5, 0, op::WRITE, 0, 512), &new)
        .expect("inline write");
    assert_eq!(r.status, status::OK);
    let (r, data) = s
        .client
        .call(&req(6, 0, op::READ, 0, 512), &[])
        .expect("inline read");
    assert_eq!((r.status, data), (status::OK, new.clone()));
    let (summary, tmp) = s.finish();
    assert_eq!((summary.requests, summary.refused), (6, 4));
    let mut expected = d0_initial();
    expected[..512].copy_from_slice(&new);
    assert_eq!(tmp.read("d0"), expected);
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
