//! The disk link driven end to end: frontends with model virtio-blk
//! drivers ([`super::blk`]), a service VM with a model vsock driver
//! ([`super::vsock`]), and a model daemon on it that speaks
//! [`stratum_abi::blkproto`] over the stream, with a byte vector per
//! disk. Reads and writes carried with their data, pipelining, requests
//! waiting for the daemon, credit, the connection ending (the daemon's
//! reset, the service VM's device reset, violations of the protocol),
//! late answers after a frontend's reset, and the service VM gone; and
//! placed requests, whose data the link copies to and from the daemon's
//! registered buffers in the service VM's RAM.

use stratum_abi::blkproto::{self, Hello, Region, Reply, Request as Wire};
use stratum_core::addr::Ipa;

use super::blk::{DATA, Guest};
use super::driver::RAM_BASE;
use super::vsock::{RX_PAYLOAD, Vm};
use crate::blk::{SECTOR, request, status as blk_status};
use crate::disklink::{DiskFn, DiskLink, DiskPorts, Event, FrontendRam, ServiceFn};
use crate::mem::{GuestMemory, SliceMemory};
use crate::vsock::{Header, Op, TYPE_STREAM};

const SERVICE_CID: u64 = 5;
const DAEMON_PORT: u32 = 1_000_000;
/// Receive buffers the service VM keeps posted: two descriptors each, in
/// a ring of 32.
const RX_BUFFERS: usize = 16;

/// The machine: the service VM and two frontends, disk *n* on frontend
/// *n*.
struct Machine {
    service: Vm,
    fronts: Vec<Guest>,
}

struct Rams<'a>(&'a mut [Guest]);

impl FrontendRam for Rams<'_> {
    fn with_ram(&self, vm: usize, f: &mut dyn FnMut(&dyn GuestMemory)) -> bool {
        let Some(g) = self.0.get(vm) else {
            return false;
        };
        // Read-only use: a copy of the RAM stands for the unlocked view.
        let mut ram = g.ram.clone();
        f(&SliceMemory::new(Ipa(RAM_BASE), &mut ram));
        true
    }
}

impl DiskPorts for Machine {
    fn with_service(&mut self, f: &mut ServiceFn<'_>) -> bool {
        let s = &mut self.service;
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut s.ram);
        f(&mut s.t, &mut mem, &Rams(&mut self.fronts));
        true
    }

    fn with_disk(&mut self, vm: usize, _disk: usize, f: &mut DiskFn<'_>) -> bool {
        let Some(g) = self.fronts.get_mut(vm) else {
            return false;
        };
        let mut sram = self.service.ram.clone();
        let service = SliceMemory::new(Ipa(RAM_BASE), &mut sram);
        let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut g.ram);
        f(&mut g.t, &mut mem, &service);
        true
    }
}

/// The model daemon: its end of the stream, its disks, and how it sends.
struct Daemon {
    /// Bytes received and not yet parsed.
    inbox: Vec<u8>,
    disks: Vec<Vec<u8>>,
    /// Bytes the daemon sends per packet at most.
    chunk: usize,
    /// Bytes consumed (its `fwd_cnt`).
    fwd: u32,
    buf_alloc: u32,
    /// Requests read and not yet answered.
    queued: Vec<Wire>,
    /// The link's `fwd_cnt` as last heard (what it consumed).
    link_fwd: u32,
    /// The registered buffers its hello gives.
    regions: Vec<Region>,
}

fn hdr(op: Op, len: u32, fwd: u32, buf_alloc: u32) -> Header {
    Header {
        src_cid: SERVICE_CID,
        dst_cid: u64::from(blkproto::HOST_CID),
        src_port: DAEMON_PORT,
        dst_port: blkproto::PORT,
        len,
        kind: TYPE_STREAM,
        op: op as u16,
        flags: 0,
        buf_alloc,
        fwd_cnt: fwd,
    }
}

impl Daemon {
    fn new(disks: Vec<Vec<u8>>) -> Self {
        Self {
            inbox: Vec::new(),
            disks,
            chunk: 3000,
            fwd: 0,
            buf_alloc: 1 << 20,
            queued: Vec::new(),
            link_fwd: 0,
            regions: Vec::new(),
        }
    }

    /// Where `place` is in the service VM's RAM (an index into it): the
    /// regions' bytes in hello order.
    fn place_index(&self, place: u32) -> usize {
        let mut at = u64::from(place);
        for r in &self.regions {
            if at < r.len {
                return (r.addr + at - RAM_BASE) as usize;
            }
            at -= r.len;
        }
        panic!("place {place:#x} is past the registered buffers");
    }

    /// Sends `op` with `payload` (in packets of at most `chunk` bytes)
    /// and lets the link serve each.
    fn send(&mut self, link: &mut DiskLink, m: &mut Machine, op: Op, payload: &[u8]) {
        let mut parts: Vec<&[u8]> = payload.chunks(self.chunk.max(1)).collect();
        if parts.is_empty() {
            parts.push(&[]);
        }
        for part in parts {
            let h = hdr(op, part.len() as u32, self.fwd, self.buf_alloc);
            assert!(m.service.send(&h, part), "the kick is remembered");
            link.service_notified(m);
        }
    }

    fn connect(&mut self, link: &mut DiskLink, m: &mut Machine) {
        self.send(link, m, Op::Request, &[]);
        let got = m.service.received();
        assert_eq!(got.len(), 1, "one answer to the connect");
        assert_eq!(got[0].0.op, Op::Response as u16);
        let served = self
            .disks
            .iter()
            .enumerate()
            .fold(0, |mask, (i, _)| mask | 1 << i);
        let mut hello = Hello::with_regions(served, self.regions.len() as u32)
            .encode()
            .to_vec();
        for r in &self.regions {
            hello.extend_from_slice(&r.encode());
        }
        self.send(link, m, Op::Rw, &hello);
    }

    /// Takes what the link sent into the inbox and parses whole requests.
    fn receive(&mut self, m: &mut Machine) -> Vec<Header> {
        let mut other = Vec::new();
        for (h, payload) in m.service.received() {
            self.link_fwd = h.fwd_cnt;
            if h.op == Op::Rw as u16 {
                self.fwd += payload.len() as u32;
                self.inbox.extend_from_slice(&payload);
            } else {
                other.push(h);
            }
        }
        loop {
            if self.inbox.len() < Wire::LEN {
                break;
            }
            let mut b = [0u8; Wire::LEN];
            b.copy_from_slice(&self.inbox[..Wire::LEN]);
            let r = Wire::decode(&b).expect("the link's requests are well formed");
            let need = Wire::LEN + r.data_follows() as usize;
            if self.inbox.len() < need {
                break;
            }
            let mut data: Vec<u8> = self.inbox[Wire::LEN..need].to_vec();
            self.inbox.drain(..need);
            if r.is_placed() && r.op == blkproto::op::WRITE {
                let at = self.place_index(r.place);
                data = m.service.ram[at..at + r.bytes as usize].to_vec();
            }
            if r.op == blkproto::op::WRITE {
                let at = (r.sector * SECTOR) as usize;
                self.disks[usize::from(r.disk)][at..at + data.len()].copy_from_slice(&data);
            }
            self.queued.push(r);
        }
        other
    }

    /// Answers every request read so far, all in one stream write.
    fn answer_all(&mut self, link: &mut DiskLink, m: &mut Machine) {
        let mut out = Vec::new();
        for r in std::mem::take(&mut self.queued) {
            let mut data = if r.op == blkproto::op::READ {
                let at = (r.sector * SECTOR) as usize;
                self.disks[usize::from(r.disk)][at..at + r.bytes as usize].to_vec()
            } else {
                Vec::new()
            };
            if r.is_placed() && r.op == blkproto::op::READ {
                let at = self.place_index(r.place);
                m.service.ram[at..at + data.len()].copy_from_slice(&data);
                data.clear();
            }
            let reply = Reply {
                id: r.id,
                status: blkproto::status::OK,
                bytes: data.len() as u32,
            };
            out.extend_from_slice(&reply.encode());
            out.extend_from_slice(&data);
        }
        if !out.is_empty() {
            self.send(link, m, Op::Rw, &out);
        }
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 9) as u8)
        .collect()
}

/// The link, the machine (the service VM with 64 receive buffers posted,
/// two frontends of 64 sectors) and the daemon with two disks.
fn setup() -> (DiskLink, Machine, Daemon) {
    let mut service = Vm::new(SERVICE_CID);
    service.probe();
    service.post_rx(RX_BUFFERS, RX_PAYLOAD);
    let fronts = vec![Guest::new(false), Guest::new(false)];
    let disks = vec![pattern(1, 64 * 512), pattern(2, 64 * 512)];
    let mut link = DiskLink::new();
    link.set_service(SERVICE_CID);
    link.add_disk(0, 0);
    link.add_disk(1, 1);
    (link, Machine { service, fronts }, Daemon::new(disks))
}

/// Frontend `f` queues a read of `sectors` at `sector` into `DATA + at`.
fn read(m: &mut Machine, f: usize, sector: u64, sectors: u32, at: u64) -> u16 {
    m.fronts[f].queue(request::IN, sector, &[(DATA + at, sectors * 512, true)])
}

/// Frontend `f` queues a write of `data` at `sector` from `DATA + at`.
fn write(m: &mut Machine, f: usize, sector: u64, data: &[u8], at: u64) -> u16 {
    m.fronts[f].write_ram(DATA + at, data);
    m.fronts[f].queue(
        request::OUT,
        sector,
        &[(DATA + at, data.len() as u32, false)],
    )
}

fn notify(link: &mut DiskLink, m: &mut Machine, f: usize) {
    m.fronts[f].notify();
    link.frontend_notified(f, m);
}

/// Reposts the service VM's receive buffers the link used (the model
/// driver reuses descriptors in ring order, so never more).
fn repost(m: &mut Machine) {
    let n = RX_BUFFERS - m.service.outstanding();
    m.service.post_rx(n, RX_PAYLOAD);
}

#[test]
fn writes_and_reads_cross_with_their_data_pipelined() {
    let (mut link, mut m, mut d) = setup();
    d.connect(&mut link, &mut m);
    assert_eq!(link.take_event(), Some(Event::Up { disks: 0b11 }));
    assert!(link.is_up());
    // Frontend 0 writes 8 KiB at sector 4 and 512 bytes at sector 40, and
    // reads 4 KiB at sector 20, all before the daemon answers any.
    let w1 = pattern(9, 8192);
    let w2 = pattern(10, 512);
    let heads = [
        write(&mut m, 0, 4, &w1, 0),
        write(&mut m, 0, 40, &w2, 0x2000),
        read(&mut m, 0, 20, 8, 0x3000),
    ];
    notify(&mut link, &mut m, 0);
    assert_eq!(link.pending(), 3);
    assert!(d.receive(&mut m).is_empty());
    assert_eq!(d.queued.len(), 3, "three requests in flight at the daemon");
    assert_eq!(&d.disks[0][4 * 512..4 * 512 + 8192], &w1[..]);
    assert_eq!(&d.disks[0][40 * 512..41 * 512], &w2[..]);
    repost(&mut m);
    d.answer_all(&mut link, &mut m);
    assert_eq!(link.pending(), 0);
    let used = m.fronts[0].used();
    assert_eq!(used.len(), 3);
    for h in heads {
        assert_eq!(m.fronts[0].status_of(h), blk_status::OK);
    }
    assert_eq!(
        m.fronts[0].read_ram(DATA + 0x3000, 4096),
        d.disks[0][20 * 512..28 * 512].to_vec(),
        "the read's data, carried across packets of 3000 bytes"
    );
    assert_eq!(d.disks[1], pattern(2, 64 * 512), "the other disk untouched");
    let c = link.counters();
    assert_eq!((c.sent, c.ok, c.failed, c.violations), (3, 3, 0, 0));
}

#[test]
fn each_frontend_reaches_only_its_own_disk() {
    let (mut link, mut m, mut d) = setup();
    d.connect(&mut link, &mut m);
    let a = pattern(20, 1024);
    let b = pattern(21, 1024);
    write(&mut m, 0, 2, &a, 0);
    write(&mut m, 1, 2, &b, 0);
    notify(&mut link, &mut m, 0);
    notify(&mut link, &mut m, 1);
    d.receive(&mut m);
    assert_eq!(
        d.queued.iter().map(|r| r.disk).collect::<Vec<_>>(),
        [0, 1],
        "each request names its frontend's disk"
    );
    repost(&mut m);
    d.answer_all(&mut link, &mut m);
    assert_eq!(&d.disks[0][1024..2048], &a[..]);
    assert_eq!(&d.disks[1][1024..2048], &b[..]);
}

#[test]
fn requests_wait_for_the_daemon_then_go() {
    let (mut link, mut m, mut d) = setup();
    let h = read(&mut m, 1, 0, 1, 0);
    notify(&mut link, &mut m, 1);
    assert_eq!(link.pending(), 1, "held while no daemon is connected");
    assert!(m.service.received().is_empty(), "nothing sent");
    d.connect(&mut link, &mut m);
    d.receive(&mut m);
    assert_eq!(d.queued.len(), 1, "sent once the daemon said hello");
    repost(&mut m);
    d.answer_all(&mut link, &mut m);
    assert_eq!(m.fronts[1].status_of(h), blk_status::OK);
    assert_eq!(m.fronts[1].read_ram(DATA, 512), d.disks[1][..512].to_vec());
}

#[test]
fn the_daemons_credit_bounds_what_is_sent() {
    let (mut link, mut m, mut d) = setup();
    d.buf_alloc = 4096;
    d.connect(&mut link, &mut m);
    write(&mut m, 0, 0, &pattern(3, 16 * 512), 0);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    assert_eq!(d.fwd, 4096, "no more than the credit");
    // The daemon consumed it and says so: the rest follows.
    d.send(&mut link, &mut m, Op::CreditUpdate, &[]);
    d.receive(&mut m);
    d.send(&mut link, &mut m, Op::CreditUpdate, &[]);
    d.receive(&mut m);
    assert_eq!(d.fwd as usize, 24 + 16 * 512);
    assert_eq!(d.queued.len(), 1);
}

/// A daemon that, as Linux does, never has more unconsumed than its own
/// `buf_alloc` (here 4 KiB, far below the link's credit) sends a read's
/// 8 KiB reply: the link tells it what it consumed without waiting for a
/// quarter of its own credit, so the reply arrives whole.
#[test]
fn a_daemon_that_caps_its_window_at_its_own_buffer_is_never_left_waiting() {
    let (mut link, mut m, mut d) = setup();
    d.buf_alloc = 4096;
    d.chunk = 1000;
    d.connect(&mut link, &mut m);
    let head = read(&mut m, 0, 8, 16, 0);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    let r = d.queued.pop().expect("the read arrived");
    let data = d.disks[0][8 * 512..24 * 512].to_vec();
    let mut stream = Reply {
        id: r.id,
        status: blkproto::status::OK,
        bytes: r.bytes,
    }
    .encode()
    .to_vec();
    stream.extend_from_slice(&data);
    let base = d.link_fwd;
    let window = d.buf_alloc;
    let mut sent = 0usize;
    let mut waits = 0;
    while sent < stream.len() {
        let in_flight = sent as u32 - d.link_fwd.wrapping_sub(base);
        if in_flight == window {
            // No credit left: only an update from the link moves it.
            d.receive(&mut m);
            repost(&mut m);
            waits += 1;
            assert!(
                sent as u32 - d.link_fwd.wrapping_sub(base) < window,
                "the link consumed {sent} bytes and never said so"
            );
            continue;
        }
        let n = ((window - in_flight) as usize).min(stream.len() - sent);
        d.send(&mut link, &mut m, Op::Rw, &stream[sent..sent + n]);
        sent += n;
    }
    assert!(waits > 0, "the reply is larger than the window");
    assert_eq!(m.fronts[0].status_of(head), blk_status::OK);
    assert_eq!(m.fronts[0].read_ram(DATA, data.len()), data);
}

/// A frontend's driver resets its disk while its write waits for the
/// daemon: the write is never sent (its buffer is the new driver's now),
/// and the other frontend's request goes on.
#[test]
fn a_drivers_reset_drops_its_disks_unsent_requests_only() {
    let (mut link, mut m, mut d) = setup();
    let before = d.disks.clone();
    write(&mut m, 0, 4, &pattern(9, 1024), 0);
    let other = read(&mut m, 1, 2, 2, 0);
    notify(&mut link, &mut m, 0);
    notify(&mut link, &mut m, 1);
    assert_eq!(link.pending(), 2, "both wait for the daemon");
    link.disk_reset(0);
    assert_eq!(link.pending(), 1);
    d.connect(&mut link, &mut m);
    d.receive(&mut m);
    assert_eq!(d.queued.len(), 1, "only frontend 1's request was sent");
    assert_eq!(d.queued[0].disk, 1);
    d.answer_all(&mut link, &mut m);
    assert_eq!(m.fronts[1].status_of(other), blk_status::OK);
    assert_eq!(link.pending(), 0);
    assert_eq!(d.disks, before, "the dropped write reached no disk");
}

#[test]
fn a_lost_connection_fails_what_was_sent_and_keeps_the_rest() {
    let (mut link, mut m, mut d) = setup();
    d.connect(&mut link, &mut m);
    link.take_event();
    let sent = read(&mut m, 0, 0, 1, 0);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    // The daemon dies: its kernel resets the connection.
    d.send(&mut link, &mut m, Op::Rst, &[]);
    assert_eq!(
        link.take_event(),
        Some(Event::Down {
            reason: "the daemon reset the connection",
            failed: 1
        })
    );
    assert_eq!(m.fronts[0].status_of(sent), blk_status::IOERR);
    // A request made while it is down waits for the next daemon.
    let later = read(&mut m, 0, 1, 1, 0x1000);
    notify(&mut link, &mut m, 0);
    assert_eq!(link.pending(), 1);
    let mut d2 = Daemon::new(d.disks.clone());
    repost(&mut m);
    d2.connect(&mut link, &mut m);
    d2.receive(&mut m);
    d2.answer_all(&mut link, &mut m);
    assert_eq!(m.fronts[0].status_of(later), blk_status::OK);
    assert_eq!(link.counters().connects, 2);
}

#[test]
fn the_service_vms_reset_fails_requests_in_flight() {
    let (mut link, mut m, mut d) = setup();
    d.connect(&mut link, &mut m);
    let h = write(&mut m, 1, 0, &pattern(4, 512), 0);
    notify(&mut link, &mut m, 1);
    d.receive(&mut m);
    link.service_reset(&mut m);
    assert_eq!(m.fronts[1].status_of(h), blk_status::IOERR);
    assert!(!link.is_up());
    assert_eq!(link.pending(), 0);
}

#[test]
fn a_reply_for_no_request_ends_the_connection() {
    let (mut link, mut m, mut d) = setup();
    d.connect(&mut link, &mut m);
    let h = read(&mut m, 0, 0, 1, 0);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    let bogus = Reply {
        id: 0xdead_0001,
        status: 0,
        bytes: 0,
    };
    d.send(&mut link, &mut m, Op::Rw, &bogus.encode());
    assert_eq!(link.counters().violations, 1);
    assert_eq!(m.fronts[0].status_of(h), blk_status::IOERR);
    let got = d.receive(&mut m);
    assert!(
        got.iter().any(|h| h.op == Op::Rst as u16),
        "the daemon hears an RST"
    );
    // A reply whose data length is not the request's does the same.
    d.connect(&mut link, &mut m);
    read(&mut m, 0, 0, 1, 0);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    let r = d.queued.pop().expect("a request");
    let short = Reply {
        id: r.id,
        status: 0,
        bytes: 100,
    };
    d.send(&mut link, &mut m, Op::Rw, &short.encode());
    assert_eq!(link.counters().violations, 2);
}

#[test]
fn a_bad_hello_or_a_stranger_gets_no_service() {
    let (mut link, mut m, mut d) = setup();
    d.send(&mut link, &mut m, Op::Request, &[]);
    m.service.received();
    let mut hello = Hello::new(1).encode();
    hello[4] = 99;
    d.send(&mut link, &mut m, Op::Rw, &hello);
    assert_eq!(link.counters().violations, 1);
    assert!(!link.is_up());
    // Another port: refused with RST, no connection.
    let h = Header {
        dst_port: 80,
        ..hdr(Op::Request, 0, 0, 4096)
    };
    assert!(m.service.send(&h, &[]));
    link.service_notified(&mut m);
    let got = m.service.received();
    assert!(got.iter().any(|(h, _)| h.op == Op::Rst as u16));
    // Another source CID: dropped.
    let before = link.counters().dropped;
    let h = Header {
        src_cid: 77,
        ..hdr(Op::Request, 0, 0, 4096)
    };
    assert!(m.service.send(&h, &[]));
    link.service_notified(&mut m);
    assert_eq!(link.counters().dropped, before + 1);
    assert_eq!(link.counters().connects, 1);
}

#[test]
fn a_late_answer_after_the_frontend_reset_writes_nothing() {
    let (mut link, mut m, mut d) = setup();
    d.connect(&mut link, &mut m);
    read(&mut m, 0, 0, 1, 0);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    // The frontend's driver resets its device (status 0) and never sets
    // it up again: the old request's buffers are no longer the device's.
    m.fronts[0].t.reset_device();
    m.fronts[0].write_ram(DATA, &[0x5a; 512]);
    repost(&mut m);
    d.answer_all(&mut link, &mut m);
    assert_eq!(m.fronts[0].read_ram(DATA, 512), vec![0x5a; 512]);
    assert_eq!(link.pending(), 0, "the link forgets it all the same");
}

#[test]
fn with_the_service_vm_gone_requests_fail_at_once() {
    let (mut link, mut m, _) = setup();
    let waiting = read(&mut m, 0, 0, 1, 0);
    notify(&mut link, &mut m, 0);
    link.set_gone(true, &mut m);
    assert_eq!(m.fronts[0].status_of(waiting), blk_status::IOERR);
    let h = read(&mut m, 0, 1, 1, 0x1000);
    notify(&mut link, &mut m, 0);
    assert_eq!(m.fronts[0].status_of(h), blk_status::IOERR);
    assert_eq!(link.pending(), 0);
}

#[test]
fn a_frontend_restart_drops_its_unsent_requests_and_zeroes_a_torn_write() {
    let (mut link, mut m, mut d) = setup();
    d.buf_alloc = 4096;
    d.connect(&mut link, &mut m);
    let data = pattern(7, 16 * 512);
    write(&mut m, 0, 0, &data, 0);
    read(&mut m, 0, 30, 1, 0x4000);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    assert_eq!(d.fwd, 4096, "the write is torn by the credit");
    // The frontend restarts: its RAM now holds the new boot's bytes.
    m.fronts[0].t.reset_device();
    m.fronts[0].write_ram(DATA, &[0xaa; 16 * 512]);
    link.frontend_reset(0);
    assert_eq!(link.pending(), 1, "the read never sent is gone");
    d.send(&mut link, &mut m, Op::CreditUpdate, &[]);
    d.receive(&mut m);
    d.send(&mut link, &mut m, Op::CreditUpdate, &[]);
    d.receive(&mut m);
    assert_eq!(d.queued.len(), 1, "only the write reached the daemon");
    let disk = &d.disks[0][..16 * 512];
    let sent = 4096 - 24;
    assert_eq!(&disk[..sent], &data[..sent], "what was sent before");
    assert!(
        disk[sent..].iter().all(|&b| b == 0),
        "zeros after, never the new boot's bytes"
    );
}

#[test]
fn a_busy_disk_leaves_the_others_their_share() {
    // Six frontends, one disk each, 16 reads queued on each: 96 requests
    // for 64 slots. Each disk gets its share (64 / 6 = 10) at once.
    let mut service = Vm::new(SERVICE_CID);
    service.probe();
    service.post_rx(RX_BUFFERS, RX_PAYLOAD);
    let fronts = (0..6).map(|_| Guest::new(false)).collect();
    let mut m = Machine { service, fronts };
    let mut link = DiskLink::new();
    link.set_service(SERVICE_CID);
    for d in 0..6 {
        link.add_disk(d, d as u8);
    }
    let mut d = Daemon::new((0..6).map(|k| pattern(k as u8, 64 * 512)).collect());
    d.connect(&mut link, &mut m);
    for f in 0..6 {
        for k in 0..16 {
            read(&mut m, f, k, 1, 0x200 * k);
        }
        notify(&mut link, &mut m, f);
    }
    assert_eq!(link.pending(), 60, "ten each, not the first disks' sixteen");
    let mut served = [0usize; 6];
    for _ in 0..40 {
        d.receive(&mut m);
        for r in &d.queued {
            served[usize::from(r.disk)] += 1;
        }
        repost(&mut m);
        d.answer_all(&mut link, &mut m);
        if served.iter().all(|&n| n == 16) {
            break;
        }
    }
    assert_eq!(served, [16; 6], "every request of every disk served");
    for f in 0..6 {
        for k in 0..16u64 {
            let at = 0x200 * k;
            assert_eq!(
                m.fronts[f].read_ram(DATA + at, 512),
                d.disks[f][k as usize * 512..(k as usize + 1) * 512].to_vec(),
                "frontend {f} sector {k}"
            );
        }
    }
}

/// One request a frontend makes in the property tests: which frontend,
/// read or write, the sector and the sectors (1 to 8).
#[derive(Clone, Debug)]
struct Ask {
    front: usize,
    write: bool,
    sector: u64,
    sectors: u32,
}

fn ask() -> impl proptest::strategy::Strategy<Value = Ask> {
    use proptest::prelude::*;
    (0..2usize, any::<bool>(), 0..56u64, 1..=8u32).prop_map(|(front, write, sector, sectors)| Ask {
        front,
        write,
        sector,
        sectors,
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// An honest daemon that sends in packets of any size: every request
    /// of every frontend completes `OK`, each read with exactly the
    /// disk's bytes, each write landing on its own frontend's disk.
    #[test]
    fn any_packet_size_carries_every_request(
        asks in proptest::collection::vec(ask(), 1..12),
        chunk in 1usize..5000,
    ) {
        let (mut link, mut m, mut d) = setup();
        d.chunk = chunk;
        d.connect(&mut link, &mut m);
        let mut model = d.disks.clone();
        // One batch per frontend at a time: its buffers are reused.
        for a in &asks {
            let bytes = a.sectors as usize * 512;
            let head = if a.write {
                let data = pattern(a.sector as u8 ^ 0x77, bytes);
                let at = a.sector as usize * 512;
                model[a.front][at..at + bytes].copy_from_slice(&data);
                write(&mut m, a.front, a.sector, &data, 0)
            } else {
                read(&mut m, a.front, a.sector, a.sectors, 0)
            };
            notify(&mut link, &mut m, a.front);
            d.receive(&mut m);
            repost(&mut m);
            d.answer_all(&mut link, &mut m);
            proptest::prop_assert_eq!(m.fronts[a.front].status_of(head), blk_status::OK);
            if !a.write {
                let at = a.sector as usize * 512;
                proptest::prop_assert_eq!(
                    m.fronts[a.front].read_ram(DATA, bytes),
                    model[a.front][at..at + bytes].to_vec()
                );
            }
        }
        proptest::prop_assert_eq!(&d.disks, &model);
        proptest::prop_assert_eq!(link.pending(), 0);
        proptest::prop_assert_eq!(link.counters().violations, 0);
    }

    /// A hostile daemon sending any bytes after its hello: the link never
    /// panics, completes requests only `OK` or `IOERR`, and once the
    /// service VM's device resets nothing it sent is left in flight.
    #[test]
    fn any_stream_from_the_daemon_is_survived(
        asks in proptest::collection::vec(ask(), 1..6),
        garbage in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            1..6,
        ),
    ) {
        let (mut link, mut m, mut d) = setup();
        d.connect(&mut link, &mut m);
        let mut heads = Vec::new();
        for a in &asks {
            let at = 0x1000 * heads.len() as u64;
            let h = read(&mut m, a.front, a.sector, a.sectors.min(8), at);
            heads.push((a.front, h));
            notify(&mut link, &mut m, a.front);
        }
        d.receive(&mut m);
        for g in &garbage {
            repost(&mut m);
            d.send(&mut link, &mut m, Op::Rw, g);
        }
        link.service_reset(&mut m);
        proptest::prop_assert_eq!(link.pending(), 0, "everything sent was failed");
        for (f, h) in heads {
            let s = m.fronts[f].status_of(h);
            proptest::prop_assert!(
                s == blk_status::OK || s == blk_status::IOERR,
                "status {s:#x}"
            );
        }
    }
}

/// Two regions of two places each, in the service VM's RAM past what its
/// rings and buffers use, the second first in RAM (the hello's order is
/// the placed space's, not the addresses').
fn two_regions() -> Vec<Region> {
    let len = 2 * u64::from(crate::disklink::PLACE_UNIT);
    vec![
        Region {
            addr: RAM_BASE + 0x4_0000 + len,
            len,
        },
        Region {
            addr: RAM_BASE + 0x4_0000,
            len,
        },
    ]
}

#[test]
fn placed_requests_carry_only_their_headers_on_the_stream() {
    let (mut link, mut m, mut d) = setup();
    d.regions = two_regions();
    d.connect(&mut link, &mut m);
    assert_eq!(link.take_event(), Some(Event::Up { disks: 0b11 }));
    // Six requests of a unit each: four units, so the last two are inline.
    let data: Vec<Vec<u8>> = (0..4).map(|k| pattern(40 + k, 4096)).collect();
    let mut heads = Vec::new();
    for (k, w) in data.iter().enumerate() {
        heads.push(write(&mut m, 0, 8 * k as u64, w, 0x1000 * k as u64));
    }
    heads.push(read(&mut m, 0, 40, 8, 0x4000));
    heads.push(read(&mut m, 0, 48, 8, 0x5000));
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    let places: Vec<u32> = d.queued.iter().map(|r| r.place).collect();
    let p = crate::disklink::PLACE_UNIT;
    assert_eq!(
        places,
        [0, p, 2 * p, 3 * p, blkproto::INLINE, blkproto::INLINE]
    );
    assert_eq!(
        d.fwd as usize,
        6 * Wire::LEN,
        "no data on the stream: the writes' is in their places"
    );
    for (k, w) in data.iter().enumerate() {
        let at = 8 * k * 512;
        assert_eq!(
            &d.disks[0][at..at + 4096],
            &w[..],
            "write {k} reached the disk"
        );
        let i = d.place_index(k as u32 * p);
        assert_eq!(&m.service.ram[i..i + 4096], &w[..], "and its place");
    }
    // Place 2 is in the second region, which is first in RAM.
    assert_eq!(d.place_index(2 * p), 0x4_0000);
    repost(&mut m);
    d.answer_all(&mut link, &mut m);
    for h in heads {
        assert_eq!(m.fronts[0].status_of(h), blk_status::OK);
    }
    let c = link.counters();
    assert_eq!((c.sent, c.ok, c.failed, c.violations), (6, 6, 0, 0));
    // The two reads were inline; now two placed ones, copied from places.
    let h1 = read(&mut m, 0, 0, 8, 0x6000);
    let h2 = read(&mut m, 0, 56, 8, 0x7000);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    assert!(d.queued.iter().all(Wire::is_placed));
    repost(&mut m);
    d.answer_all(&mut link, &mut m);
    assert_eq!(m.fronts[0].status_of(h1), blk_status::OK);
    assert_eq!(m.fronts[0].status_of(h2), blk_status::OK);
    assert_eq!(m.fronts[0].read_ram(DATA + 0x6000, 4096), data[0]);
    assert_eq!(
        m.fronts[0].read_ram(DATA + 0x7000, 4096),
        d.disks[0][56 * 512..64 * 512].to_vec()
    );
    assert_eq!(
        m.fronts[0].read_ram(DATA + 0x4000, 4096),
        d.disks[0][40 * 512..48 * 512].to_vec(),
        "the inline read's data too"
    );
}

#[test]
fn a_region_smaller_than_a_unit_gives_no_place() {
    let (mut link, mut m, mut d) = setup();
    d.regions = vec![Region {
        addr: RAM_BASE + 0x4_0000,
        len: u64::from(crate::disklink::PLACE_UNIT) - 4096,
    }];
    d.connect(&mut link, &mut m);
    let h = write(&mut m, 1, 0, &pattern(50, 2048), 0);
    notify(&mut link, &mut m, 1);
    d.receive(&mut m);
    assert_eq!(d.queued[0].place, blkproto::INLINE);
    assert_eq!(d.fwd as usize, Wire::LEN + 2048);
    repost(&mut m);
    d.answer_all(&mut link, &mut m);
    assert_eq!(m.fronts[1].status_of(h), blk_status::OK);
    assert_eq!(&d.disks[1][..2048], &pattern(50, 2048)[..]);
}

#[test]
fn registered_buffers_outside_the_service_vm_or_overlapping_end_the_connection() {
    let len = u64::from(crate::disklink::PLACE_UNIT);
    let bad = [
        // Past the service VM's RAM.
        vec![Region {
            addr: RAM_BASE + 0x8_0000,
            len: 4 * len,
        }],
        // Below it.
        vec![Region {
            addr: RAM_BASE - len,
            len,
        }],
        // Two that share a page.
        vec![
            Region {
                addr: RAM_BASE + 0x4_0000,
                len,
            },
            Region {
                addr: RAM_BASE + 0x4_0000 + len - 4096,
                len,
            },
        ],
    ];
    for regions in bad {
        let (mut link, mut m, mut d) = setup();
        d.regions = regions.clone();
        let h = read(&mut m, 0, 0, 1, 0);
        notify(&mut link, &mut m, 0);
        d.connect(&mut link, &mut m);
        assert!(!link.is_up(), "{regions:x?}");
        assert_eq!(link.counters().violations, 1);
        assert!(
            matches!(link.take_event(), Some(Event::Down { failed: 0, .. })),
            "the waiting read was never sent"
        );
        // The daemon connects again with good regions: the read goes.
        d.regions = two_regions();
        repost(&mut m);
        m.service.received();
        d.connect(&mut link, &mut m);
        assert!(link.is_up());
        d.receive(&mut m);
        repost(&mut m);
        d.answer_all(&mut link, &mut m);
        assert_eq!(m.fronts[0].status_of(h), blk_status::OK);
        assert_eq!(m.fronts[0].read_ram(DATA, 512), d.disks[0][..512].to_vec());
    }
}

#[test]
fn a_placed_reads_reply_with_data_on_the_stream_ends_the_connection() {
    let (mut link, mut m, mut d) = setup();
    d.regions = two_regions();
    d.connect(&mut link, &mut m);
    let h = read(&mut m, 0, 0, 8, 0);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    let r = d.queued.pop().expect("sent");
    assert!(r.is_placed());
    let reply = Reply {
        id: r.id,
        status: blkproto::status::OK,
        bytes: r.bytes,
    };
    let mut out = reply.encode().to_vec();
    out.extend_from_slice(&vec![0xee; r.bytes as usize]);
    repost(&mut m);
    d.send(&mut link, &mut m, Op::Rw, &out);
    assert_eq!(link.counters().violations, 1);
    assert_eq!(m.fronts[0].status_of(h), blk_status::IOERR);
    assert_eq!(
        m.fronts[0].read_ram(DATA, 4096),
        vec![0; 4096],
        "nothing of the stream's data reached the frontend"
    );
}

#[test]
fn a_placed_read_answered_after_its_frontend_reset_reaches_nothing() {
    let (mut link, mut m, mut d) = setup();
    d.regions = two_regions();
    d.connect(&mut link, &mut m);
    read(&mut m, 1, 0, 8, 0x100);
    notify(&mut link, &mut m, 1);
    d.receive(&mut m);
    // The frontend resets its device and starts again.
    m.fronts[1] = super::blk::Guest::new(false);
    link.frontend_reset(1);
    repost(&mut m);
    d.answer_all(&mut link, &mut m);
    assert_eq!(link.pending(), 0, "the slot is free again");
    assert_eq!(
        m.fronts[1].read_ram(DATA + 0x100, 4096),
        vec![0; 4096],
        "the old request's buffers got nothing"
    );
}

#[test]
fn a_new_connection_lays_the_places_out_anew() {
    let (mut link, mut m, mut d) = setup();
    d.regions = two_regions();
    d.connect(&mut link, &mut m);
    write(&mut m, 0, 0, &pattern(60, 4096), 0);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    assert!(d.queued[0].is_placed());
    // The daemon restarts without registered buffers: the write sent
    // fails, and the next requests are inline.
    d.send(&mut link, &mut m, Op::Rst, &[]);
    assert!(matches!(
        link.take_event(),
        Some(Event::Down { failed: 1, .. })
    ));
    let mut d = Daemon::new(d.disks.clone());
    repost(&mut m);
    m.service.received();
    d.connect(&mut link, &mut m);
    let h = write(&mut m, 0, 16, &pattern(61, 4096), 0x1000);
    notify(&mut link, &mut m, 0);
    d.receive(&mut m);
    assert_eq!(d.queued.len(), 1);
    assert_eq!(d.queued[0].place, blkproto::INLINE);
    repost(&mut m);
    d.answer_all(&mut link, &mut m);
    assert_eq!(m.fronts[0].status_of(h), blk_status::OK);
    assert_eq!(&d.disks[0][16 * 512..24 * 512], &pattern(61, 4096)[..]);
}

#[test]
fn units_are_taken_first_fit_contiguous_and_within_one_region() {
    use crate::disklink::{take_units, units_mask};
    // Two regions: units 0..3 and 3..8.
    let run = [3u8, 2, 1, 5, 4, 3, 2, 1];
    let mut free = units_mask(8);
    assert_eq!(take_units(&mut free, &run, 2), Some(0));
    assert_eq!(
        take_units(&mut free, &run, 2),
        Some(3),
        "not across unit 2 into 3"
    );
    assert_eq!(take_units(&mut free, &run, 1), Some(2));
    assert_eq!(
        take_units(&mut free, &run, 4),
        None,
        "three units left in one region"
    );
    assert_eq!(take_units(&mut free, &run, 3), Some(5));
    assert_eq!(free, 0);
    assert_eq!(take_units(&mut free, &run, 1), None);
    free |= units_mask(2) << 3;
    assert_eq!(
        take_units(&mut free, &run, 2),
        Some(3),
        "freed units are taken again"
    );
    // 128 units, the most: all of them at once.
    let run: Vec<u8> = (1..=128).rev().collect();
    let mut free = units_mask(128);
    assert_eq!(free, u128::MAX);
    assert_eq!(take_units(&mut free, &run, 128), Some(0));
    assert_eq!(free, 0);
    assert_eq!(units_mask(0), 0);
}
