//! virtio-block driven by a model driver and a model backend (a byte
//! vector): reads and writes of every shape carried through the in-flight
//! slots with their data, flush, the serial, what the device answers
//! itself (bad lengths, ranges past the end, writes to a read-only disk,
//! unknown types, data on the wrong side), at most `MAX_IN_FLIGHT`
//! requests in flight with the rest taken as slots free, late answers
//! after a reset ignored, a backend that fails everything, and hostile
//! chains.

use stratum_core::addr::Ipa;

use super::driver::*;
use crate::blk::{
    self, BlkDevice, ID_BYTES, MAX_IN_FLIGHT, Op, Outcome, Request, SECTOR, feature, request,
    status as blk_status,
};
use crate::mem::{GuestMemory, SliceMemory};
use crate::spec::{feature as vfeature, mmio, status};
use crate::transport::Transport;

/// Sectors of the model disk.
const CAPACITY: u64 = 64;
/// Where request headers go (one 16-byte header per descriptor slot).
const HEADERS: u64 = RAM_BASE + 0x2000;
/// Where status bytes go (one per descriptor slot).
const STATUS: u64 = RAM_BASE + 0x3000;
/// Where data buffers go.
pub(super) const DATA: u64 = RAM_BASE + 0x4000;

pub(super) struct Guest {
    pub(super) t: Transport<BlkDevice>,
    pub(super) ram: Vec<u8>,
    q: DriverQueue,
    /// The backend's disk.
    pub(super) disk: Vec<u8>,
}

impl Guest {
    pub(super) fn new(readonly: bool) -> Self {
        Self::with_queue(readonly, 64)
    }

    fn with_queue(readonly: bool, size: u16) -> Self {
        let q = DriverQueue::at(RAM_BASE, size);
        let mut g = Self {
            t: Transport::new(BlkDevice::new(CAPACITY, readonly, b"stratum-disk-0")),
            ram: ram(),
            q,
            disk: (0..CAPACITY * SECTOR)
                .map(|i| (i * 7 + i / 512) as u8)
                .collect(),
        };
        assert_eq!(rd(&mut g.t, mmio::DEVICE_ID), 2);
        assert!(negotiate(
            &mut g.t,
            vfeature::VERSION_1 | vfeature::RING_EVENT_IDX | feature::FLUSH | feature::SEG_MAX
        ));
        q.setup(&mut g.t, 0);
        driver_ok(&mut g.t);
        g
    }

    fn mem(&mut self) -> SliceMemory<'_> {
        SliceMemory::new(Ipa(RAM_BASE), &mut self.ram)
    }

    /// Queues a request of `kind` at `sector` with `data` buffers
    /// (address, length, device-writable) between its header and status;
    /// its head. Not yet notified.
    pub(super) fn queue(&mut self, kind: u32, sector: u64, data: &[(u64, u32, bool)]) -> u16 {
        let slot = u64::from(self.q.next_desc);
        let header = HEADERS + 16 * slot;
        let status_at = STATUS + slot;
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        let mut bufs = vec![(header, 16, false)];
        bufs.extend_from_slice(data);
        bufs.push((status_at, 1, true));
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        mem.write(Ipa(header), &h).expect("in RAM");
        mem.write(Ipa(status_at), &[0xee]).expect("in RAM");
        let head = self.q.chain(&mut mem, &bufs);
        self.q.publish(&mut mem, head);
        head
    }

    pub(super) fn notify(&mut self) {
        wr(&mut self.t, mmio::QUEUE_NOTIFY, u32::from(blk::QUEUE));
        let mut ram = std::mem::take(&mut self.ram);
        self.t
            .process(&mut SliceMemory::new(Ipa(RAM_BASE), &mut ram));
        self.ram = ram;
    }

    /// The status byte the device wrote for the chain headed by `head`.
    pub(super) fn status_of(&mut self, head: u16) -> u8 {
        let mut b = [0u8; 1];
        self.mem()
            .read(Ipa(STATUS + u64::from(head)), &mut b)
            .expect("in RAM");
        b[0]
    }

    /// Used entries (head, length) since the last call.
    pub(super) fn used(&mut self) -> Vec<(u32, u32)> {
        let mem = SliceMemory::new(Ipa(RAM_BASE), &mut self.ram);
        self.q.take_used(&mem)
    }

    /// Requests the device has for the backend.
    fn requests(&mut self) -> Vec<Request> {
        std::iter::from_fn(|| self.t.device_mut().next_request()).collect()
    }

    /// Serves request `r` from the model disk, as a backend would, and
    /// completes it with `outcome` (`Done` carries the data).
    fn serve(&mut self, r: Request, outcome: Outcome) -> bool {
        let mut ram = std::mem::take(&mut self.ram);
        let disk = &mut self.disk;
        let done = self.t.with_device(
            &mut SliceMemory::new(Ipa(RAM_BASE), &mut ram),
            |d, queues, mem| {
                let at = (r.sector * SECTOR) as usize;
                if outcome == Outcome::Done {
                    match r.op {
                        Op::Read => {
                            // In two pieces, as a backend's messages might.
                            let half = r.bytes / 2;
                            let data = &disk[at..at + r.bytes as usize];
                            d.write_payload(r.tag, mem, 0, &data[..half as usize])
                                .expect("a read in flight");
                            d.write_payload(r.tag, mem, half, &data[half as usize..])
                                .expect("a read in flight");
                        }
                        Op::Write => {
                            let mut buf = vec![0u8; r.bytes as usize];
                            d.read_payload(r.tag, mem, 0, &mut buf)
                                .expect("a write in flight");
                            disk[at..at + buf.len()].copy_from_slice(&buf);
                        }
                        Op::Flush => {}
                    }
                }
                d.complete(r.tag, outcome, queues, mem)
                    .map_err(|e| (blk::QUEUE, e))
            },
        );
        self.ram = ram;
        done.expect("the device is live")
    }

    /// Completes `tag` with `outcome` and nothing else (a late or second
    /// answer): whether the device took it.
    fn answer(&mut self, tag: u32, outcome: Outcome) -> bool {
        let mut ram = std::mem::take(&mut self.ram);
        let done = self
            .t
            .with_device(&mut SliceMemory::new(Ipa(RAM_BASE), &mut ram), |d, q, m| {
                d.complete(tag, outcome, q, m).map_err(|e| (blk::QUEUE, e))
            });
        self.ram = ram;
        done.expect("the device is live")
    }

    pub(super) fn write_ram(&mut self, at: u64, data: &[u8]) {
        self.mem().write(Ipa(at), data).expect("in RAM");
    }

    pub(super) fn read_ram(&mut self, at: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem().read(Ipa(at), &mut b).expect("in RAM");
        b
    }
}

#[test]
fn the_device_describes_a_disk() {
    let mut g = Guest::new(false);
    let cap =
        u64::from(rd(&mut g.t, mmio::CONFIG)) | u64::from(rd(&mut g.t, mmio::CONFIG + 4)) << 32;
    assert_eq!(cap, CAPACITY);
    assert_eq!(rd(&mut g.t, mmio::CONFIG + 12), blk::SEG_MAX);
    assert_eq!(rd(&mut g.t, mmio::CONFIG + 20), 512);
    let rw = BlkDevice::new(8, false, b"");
    assert_eq!(crate::device::VirtioDevice::features(&rw) & feature::RO, 0);
    let ro = BlkDevice::new(8, true, b"");
    assert_eq!(
        crate::device::VirtioDevice::features(&ro),
        feature::SEG_MAX | feature::BLK_SIZE | feature::FLUSH | feature::RO
    );
}

#[test]
fn reads_and_writes_reach_the_backend_with_their_data() {
    let mut g = Guest::new(false);
    // A read of sectors 3..5 into two buffers of 512 bytes.
    let read = g.queue(
        request::IN,
        3,
        &[(DATA, 512, true), (DATA + 0x400, 512, true)],
    );
    // A write of one sector at 10, its data split over three buffers.
    let payload: Vec<u8> = (0..512u32).map(|i| (i * 13) as u8).collect();
    g.write_ram(DATA + 0x800, &payload[..100]);
    g.write_ram(DATA + 0xa00, &payload[100..400]);
    g.write_ram(DATA + 0xc00, &payload[400..]);
    let write = g.queue(
        request::OUT,
        10,
        &[
            (DATA + 0x800, 100, false),
            (DATA + 0xa00, 300, false),
            (DATA + 0xc00, 112, false),
        ],
    );
    g.notify();
    let reqs = g.requests();
    assert_eq!(reqs.len(), 2, "both in flight at once: {reqs:?}");
    assert_eq!(
        (reqs[0].op, reqs[0].sector, reqs[0].bytes),
        (Op::Read, 3, 1024)
    );
    assert_eq!(
        (reqs[1].op, reqs[1].sector, reqs[1].bytes),
        (Op::Write, 10, 512)
    );
    assert!(
        g.used().is_empty(),
        "nothing returned before the backend answers"
    );
    // The backend answers the write first.
    assert!(g.serve(reqs[1], Outcome::Done));

    assert!(g.serve(reqs[0], Outcome::Done));
    let used = g.used();
    assert_eq!(used, [(u32::from(write), 1), (u32::from(read), 1025)]);
    assert_eq!(g.status_of(read), blk_status::OK);
    assert_eq!(g.status_of(write), blk_status::OK);
    let want = g.disk[3 * 512..5 * 512].to_vec();
    let mut got = g.read_ram(DATA, 512);
    got.extend(g.read_ram(DATA + 0x400, 512));
    assert_eq!(got, want, "the read's data, across both buffers");
    assert_eq!(
        &g.disk[10 * 512..11 * 512],
        &payload[..],
        "the write reached the disk"
    );
    assert_eq!(g.t.device().in_flight(), 0);
    // A second answer for the same request changes nothing.
    assert!(!g.answer(reqs[0].tag, Outcome::Done));
    assert!(g.used().is_empty());
}

#[test]
fn flush_goes_to_the_backend_and_get_id_is_answered_at_once() {
    let mut g = Guest::new(false);
    let flush = g.queue(request::FLUSH, 99, &[]);
    let id = g.queue(request::GET_ID, 0, &[(DATA, ID_BYTES as u32, true)]);
    g.notify();
    assert_eq!(g.used(), [(u32::from(id), ID_BYTES as u32 + 1)]);
    assert_eq!(g.status_of(id), blk_status::OK);
    assert_eq!(&g.read_ram(DATA, 14), b"stratum-disk-0");
    assert_eq!(g.read_ram(DATA + 14, 6), [0; 6], "NUL-padded");
    let reqs = g.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].op, reqs[0].sector, reqs[0].bytes),
        (Op::Flush, 0, 0)
    );
    assert!(g.serve(reqs[0], Outcome::Done));
    assert_eq!(g.used(), [(u32::from(flush), 1)]);
    assert_eq!(g.status_of(flush), blk_status::OK);
}

#[test]
fn bad_requests_are_answered_without_the_backend() {
    let mut g = Guest::new(true);
    let cases: Vec<(u16, u8)> = vec![
        // Past the end of the disk, and running over it.
        (
            g.queue(request::IN, CAPACITY, &[(DATA, 512, true)]),
            blk_status::IOERR,
        ),
        (
            g.queue(request::IN, CAPACITY - 1, &[(DATA, 1024, true)]),
            blk_status::IOERR,
        ),
        (
            g.queue(request::IN, u64::MAX, &[(DATA, 512, true)]),
            blk_status::IOERR,
        ),
        // Not a whole number of sectors, or nothing at all.
        (
            g.queue(request::IN, 0, &[(DATA, 100, true)]),
            blk_status::IOERR,
        ),
        (g.queue(request::IN, 0, &[]), blk_status::IOERR),
        // A write to a read-only disk.
        (
            g.queue(request::OUT, 0, &[(DATA, 512, false)]),
            blk_status::IOERR,
        ),
        // Data on the wrong side for its type.
        (
            g.queue(request::IN, 0, &[(DATA, 512, false)]),
            blk_status::IOERR,
        ),
        (
            g.queue(request::FLUSH, 0, &[(DATA, 512, true)]),
            blk_status::IOERR,
        ),
        (g.queue(request::GET_ID, 0, &[]), blk_status::IOERR),
        // A type nobody knows (discard, write zeroes, ...).
        (g.queue(11, 0, &[(DATA, 512, false)]), blk_status::UNSUPP),
        (g.queue(0xdead_beef, 0, &[]), blk_status::UNSUPP),
    ];
    g.notify();
    assert!(g.requests().is_empty(), "none reached the backend");
    let used = g.used();
    assert_eq!(used.len(), cases.len());
    for (head, want) in cases {
        assert_eq!(g.status_of(head), want, "request at descriptor {head}");
        assert!(
            used.contains(&(u32::from(head), 1)),
            "{head} returned with its status only"
        );
    }
    assert!(g.t.is_live(), "bad requests do not stop the device");
    // The read-only disk still reads.
    let ok = g.queue(request::IN, 0, &[(DATA, 512, true)]);
    g.notify();
    let reqs = g.requests();
    assert_eq!(reqs.len(), 1);
    assert!(g.serve(reqs[0], Outcome::Done));
    assert_eq!(g.status_of(ok), blk_status::OK);
}

#[test]
fn a_chain_without_a_header_and_status_stops_the_device() {
    let mut g = Guest::new(false);
    let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut g.ram);
    let head =
        g.q.chain(&mut mem, &[(HEADERS, 8, false), (STATUS, 1, true)]);
    g.q.publish(&mut mem, head);
    g.notify();
    assert_ne!(g.t.status() & status::DEVICE_NEEDS_RESET, 0);
    assert!(g.requests().is_empty());
}

/// A request whose data buffer lies outside the VM's RAM (another VM's
/// memory, as far as the driver knows) fails alone with `IOERR`: it never
/// reaches the backend, nothing is read or written there, and the device
/// goes on; the next request is served. One whose status byte is outside
/// RAM cannot be answered: the device stops.
#[test]
fn a_buffer_outside_ram_fails_its_request_alone() {
    let outside = RAM_BASE + RAM_SIZE as u64 + 0x1000;
    for (kind, writable) in [(request::IN, true), (request::OUT, false)] {
        let mut g = Guest::new(false);
        let bad = g.queue(kind, 0, &[(outside, 512, writable)]);
        let good = g.queue(request::IN, 1, &[(DATA, 512, true)]);
        g.notify();
        assert_eq!(g.t.status() & status::DEVICE_NEEDS_RESET, 0, "type {kind}");
        assert_eq!(g.status_of(bad), blk_status::IOERR, "type {kind}");
        assert!(
            g.used()
                .iter()
                .any(|&(id, len)| id == u32::from(bad) && len == 1),
            "type {kind}: returned with its status byte only"
        );
        let reqs = g.requests();
        assert_eq!(
            reqs.len(),
            1,
            "type {kind}: only the good one for the backend"
        );
        assert_eq!(reqs[0].sector, 1);
        assert!(g.serve(reqs[0], Outcome::Done));
        assert_eq!(g.status_of(good), blk_status::OK);
    }
    // The status byte itself outside RAM: nothing to answer with.
    let mut g = Guest::new(false);
    let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut g.ram);
    let head = g.q.chain(
        &mut mem,
        &[(HEADERS, 16, false), (DATA, 512, true), (outside, 1, true)],
    );
    g.q.publish(&mut mem, head);
    g.notify();
    assert_ne!(g.t.status() & status::DEVICE_NEEDS_RESET, 0);
    assert!(g.requests().is_empty());
}

#[test]
fn requests_beyond_the_in_flight_slots_wait_in_the_ring() {
    let mut g = Guest::with_queue(false, 128);
    let n = MAX_IN_FLIGHT + 8;
    let heads: Vec<u16> = (0..n)
        .map(|i| {
            let at = DATA + 0x200 * (i as u64 % 16);
            g.queue(request::IN, i as u64 % CAPACITY, &[(at, 512, true)])
        })
        .collect();
    g.notify();
    let first = g.requests();
    assert_eq!(first.len(), MAX_IN_FLIGHT, "one slot each, the rest wait");
    assert_eq!(g.t.device().in_flight(), MAX_IN_FLIGHT);
    // Each completion takes one more from the ring.
    for r in &first[..8] {
        assert!(g.serve(*r, Outcome::Done));
    }
    let more = g.requests();
    assert_eq!(more.len(), 8);
    for r in first[8..].iter().chain(&more) {
        assert!(g.serve(*r, Outcome::Done));
    }
    let used: Vec<u32> = g.used().iter().map(|u| u.0).collect();
    assert_eq!(used.len(), n);
    for h in heads {
        assert!(used.contains(&u32::from(h)));
        assert_eq!(g.status_of(h), blk_status::OK);
    }
    // Tags are unique among the requests handed out.
    let mut tags: Vec<u32> = first.iter().chain(&more).map(|r| r.tag).collect();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(tags.len(), n);
}

#[test]
fn a_failed_backend_fails_the_requests_and_late_answers_are_ignored() {
    let mut g = Guest::new(false);
    let a = g.queue(request::IN, 1, &[(DATA, 512, true)]);
    let b = g.queue(request::OUT, 2, &[(DATA + 0x400, 512, false)]);
    g.notify();
    let reqs = g.requests();
    assert_eq!(reqs.len(), 2);
    // One fails at the backend; then the backend is gone altogether.
    assert!(g.serve(reqs[0], Outcome::Failed));
    assert_eq!(g.status_of(a), blk_status::IOERR);
    let mut ram = std::mem::take(&mut g.ram);
    let failed =
        g.t.with_device(&mut SliceMemory::new(Ipa(RAM_BASE), &mut ram), |d, q, m| {
            d.fail_all(q, m).map_err(|e| (blk::QUEUE, e))
        });
    g.ram = ram;
    assert_eq!(failed, Some(1));
    assert_eq!(g.status_of(b), blk_status::IOERR);
    assert_eq!(g.used(), [(u32::from(a), 1), (u32::from(b), 1)]);
    // A late answer for a failed request does nothing.
    assert!(!g.answer(reqs[1].tag, Outcome::Done));
    assert!(g.used().is_empty());
}

#[test]
fn after_a_reset_old_tags_never_reach_new_buffers() {
    let mut g = Guest::new(false);
    g.queue(request::IN, 1, &[(DATA, 512, true)]);
    g.notify();
    let old = g.requests();
    assert_eq!(old.len(), 1);
    // The driver resets the device and sets it up again.
    wr(&mut g.t, mmio::STATUS, 0);
    let q = DriverQueue::at(RAM_BASE, 64);
    q.clear(&mut SliceMemory::new(Ipa(RAM_BASE), &mut g.ram));
    g.q = q;
    assert!(negotiate(&mut g.t, vfeature::VERSION_1));
    q.setup(&mut g.t, 0);
    driver_ok(&mut g.t);
    assert_eq!(g.t.device().in_flight(), 0);
    let new = g.queue(request::IN, 5, &[(DATA + 0x800, 512, true)]);
    g.notify();
    let fresh = g.requests();
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh[0].tag, old[0].tag, "the same slot, another tag");
    // The old request's answer is ignored; its payload calls too.
    let mut ram = std::mem::take(&mut g.ram);
    let stale =
        g.t.with_device(&mut SliceMemory::new(Ipa(RAM_BASE), &mut ram), |d, q, m| {
            let payload = d.write_payload(old[0].tag, m, 0, &[0xaa; 512]);
            let done = d
                .complete(old[0].tag, Outcome::Done, q, m)
                .map_err(|e| (blk::QUEUE, e))?;
            Ok((payload, done))
        });
    g.ram = ram;
    assert_eq!(stale, Some((None, false)));
    assert!(g.used().is_empty());
    assert!(g.serve(fresh[0], Outcome::Done));
    assert_eq!(g.used(), [(u32::from(new), 513)]);
    assert_eq!(
        g.read_ram(DATA + 0x800, 512),
        g.disk[5 * 512..6 * 512].to_vec()
    );
}

#[test]
fn payload_calls_stay_inside_their_request() {
    let mut g = Guest::new(false);
    g.queue(request::IN, 0, &[(DATA, 512, true)]);
    g.write_ram(DATA + 0x400, &[7; 512]);
    g.queue(request::OUT, 1, &[(DATA + 0x400, 512, false)]);
    g.notify();
    let reqs = g.requests();
    let (read, write) = (reqs[0], reqs[1]);
    let mut ram = std::mem::take(&mut g.ram);
    let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut ram);
    let d = g.t.device();
    let mut buf = [0u8; 16];
    // Past the end, or the wrong direction for the request.
    assert_eq!(d.write_payload(read.tag, &mut mem, 500, &[0; 16]), None);
    assert_eq!(d.read_payload(write.tag, &mem, 500, &mut buf), None);
    assert_eq!(d.read_payload(read.tag, &mem, 0, &mut buf), None);
    assert_eq!(d.write_payload(write.tag, &mut mem, 0, &[0; 16]), None);
    assert_eq!(d.read_payload(write.tag, &mem, 496, &mut buf), Some(()));
    assert_eq!(buf, [7; 16]);
    // A tag nobody handed out.
    assert_eq!(d.read_payload(write.tag ^ 0x100, &mem, 0, &mut buf), None);
    g.ram = ram;
}

/// One request a random driver posts: its type, sector and data buffers
/// (length, device-writable).
fn random_request() -> impl proptest::strategy::Strategy<Value = (u32, u64, Vec<(u32, bool)>)> {
    use proptest::prelude::*;
    (
        prop_oneof![
            Just(request::IN),
            Just(request::OUT),
            Just(request::FLUSH),
            Just(request::GET_ID),
            any::<u32>()
        ],
        prop_oneof![0..CAPACITY + 2, Just(u64::MAX), Just(CAPACITY - 1)],
        proptest::collection::vec(
            (
                prop_oneof![Just(512u32), Just(1024), Just(100), Just(1)],
                any::<bool>(),
            ),
            0..3,
        ),
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Whatever requests a driver posts (any type, sector and buffer
    /// shape a chain can have) and in whatever order the backend answers: the device stays
    /// live, only well-formed reads and writes inside the disk (and no
    /// write to a read-only one) and flushes reach the backend, at most
    /// `MAX_IN_FLIGHT` at once, and every chain comes back exactly once
    /// with a status the spec defines.
    #[test]
    fn random_requests_are_checked_and_each_comes_back_once(
        reqs in proptest::collection::vec(random_request(), 1..40),
        readonly in proptest::prelude::any::<bool>(),
        order in proptest::prelude::any::<u64>(),
    ) {
        let mut g = Guest::with_queue(readonly, 128);
        let mut heads = Vec::new();
        // A driver posts no more descriptors than its queue has (a header,
        // the buffers and a status byte each): past that it would write
        // over chains the device still owns. The rest wait.
        let mut room = 128usize;
        let mut fits = |data: &Vec<(u32, bool)>| {
            let need = data.len() + 2;
            room.checked_sub(need).map(|left| room = left).is_some()
        };
        let reqs: Vec<_> = reqs.into_iter().take_while(|(_, _, data)| fits(data)).collect();
        for (i, (kind, sector, data)) in reqs.iter().enumerate() {
            let at = DATA + 0x800 * (i as u64 % 16);
            // Readable buffers before writable ones, as a chain must have
            // them (the ring walker stops the device otherwise).
            let mut data = data.clone();
            data.sort_by_key(|&(_, writable)| writable);
            let bufs: Vec<(u64, u32, bool)> = data
                .iter()
                .scan(at, |next, &(len, w)| {
                    let b = (*next, len, w);
                    *next += u64::from(len);
                    Some(b)
                })
                .collect();
            heads.push(g.queue(*kind, *sector, &bufs));
        }
        g.notify();
        let mut x = order | 1;
        let mut answered = 0;
        loop {
            proptest::prop_assert!(g.t.is_live());
            proptest::prop_assert!(g.t.device().in_flight() <= MAX_IN_FLIGHT);
            let pending = g.requests();
            if pending.is_empty() {
                break;
            }
            for r in &pending {
                match r.op {
                    Op::Read | Op::Write => {
                        proptest::prop_assert!(r.bytes > 0 && u64::from(r.bytes) % SECTOR == 0);
                        proptest::prop_assert!(r.sector + u64::from(r.bytes) / SECTOR <= CAPACITY);
                        proptest::prop_assert!(!(readonly && r.op == Op::Write));
                    }
                    Op::Flush => proptest::prop_assert_eq!((r.sector, r.bytes), (0, 0)),
                }
            }
            // Answer them in a shuffled order, some failed.
            let mut pending = pending;
            for i in (1..pending.len()).rev() {
                x = next_noise(&mut x);
                pending.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for r in pending {
                x = next_noise(&mut x);
                let outcome = if x % 5 == 0 { Outcome::Failed } else { Outcome::Done };
                proptest::prop_assert!(g.serve(r, outcome));
                answered += 1;
            }
        }
        proptest::prop_assert!(answered <= reqs.len());
        let mut used: Vec<u32> = g.used().iter().map(|u| u.0).collect();
        used.sort_unstable();
        let mut want: Vec<u32> = heads.iter().map(|&h| u32::from(h)).collect();
        want.sort_unstable();
        proptest::prop_assert_eq!(used, want, "every chain back exactly once");
        for h in heads {
            proptest::prop_assert!(g.status_of(h) <= blk_status::UNSUPP);
        }
    }
}
