//! A virtual Ethernet switch between the NICs ([`crate::net`]) of the VMs
//! on one `[[network]]`: port `p` is the NIC of the network's `p`-th VM.
//!
//! Frames are copied, never shared: [`Switch::transmit`] takes a batch of
//! chains out of the sending VM's transmit queue (reading only their
//! headers), copies each frame once, straight from the sender's buffers
//! into the receive buffers of the ports it is for
//! ([`Ports::with_port_reading`]), then returns the chains to the sender
//! (unless its driver reset the device meanwhile: [`Transport::epoch`]).
//! No VM ever sees another's memory.
//!
//! # Forwarding
//! Each port's own MAC (the one the host tool derived) is pinned to it
//! ([`Switch::pin`]): a frame from another port with that source address
//! is dropped and counted ([`PortCounters::tx_spoofed`]), so no VM can
//! draw a peer's traffic to itself. Other addresses (a guest may change
//! its MAC, or bridge) are learned from frames' unicast sources in a
//! table of [`MAC_TABLE`] entries, the least recently seen replaced when
//! full. A
//! unicast frame to a learned address goes to that port only (and is
//! dropped if that is the sender's own port); a broadcast, multicast or
//! unknown destination floods to every other port. A port whose driver
//! has posted no receive buffer (or is not live) drops the frame and
//! counts it: nothing is queued, so a VM flooding a peer that never reads
//! costs the switch no memory, and its frames only ever fill the peer's
//! own receive ring. Frames shorter than an Ethernet header or longer than
//! the MTU (64 KiB for a segmentation frame), and offload requests that
//! are not the driver's or do not fit the frame, are dropped and counted
//! at the sender's port. Offloads are resolved per receiving port
//! ([`net::put_frame`]): a port whose driver takes checksum or
//! segmentation offloads gets the frame as sent, any other gets the
//! checksum filled in or the TCP segments.
//!
//! # Storm control
//! Flooded frames — broadcast, multicast and unknown destinations, which
//! reach every other port — are limited per sending port by a token
//! bucket ([`FLOOD_PER_SECOND`], bursts of [`FLOOD_BURST`]), as physical
//! switches do: beyond it they are dropped and counted
//! ([`PortCounters::tx_storm`]), so one VM's broadcast storm cannot fill
//! every peer's receive ring. ARP and neighbour discovery stay far below
//! it; unicast to a known port is not limited (it reaches one port only,
//! whose own receive ring bounds it). The glue gives the time
//! ([`Switch::set_time`]).
//!
//! # Bounded work, coalesced interrupts
//! One call moves at most [`TX_BUDGET`] frames (a full transmit ring)
//! and about [`TX_BYTE_BUDGET`] bytes (that many MTU-sized frames);
//! if the sender has more, [`TxReport::more`] says so and the glue calls
//! again later (after other work: a flooding VM cannot keep a CPU in the
//! switch). Frames move in batches of [`BATCH`]: each port's queues are
//! visited once per batch, so the used-buffer interrupt is considered once
//! per batch and per port (and `EVENT_IDX` suppresses most of those), not
//! once per frame.
//!
//! # Locking (for the glue)
//! The switch's state — this value — belongs to the network and is held
//! for the whole of [`Switch::transmit`] (the network's lock). Inside it,
//! the switch reaches each VM through [`Ports::with_port`], which the glue
//! implements by taking that VM's device lock (its transport and the
//! `GuestMemory` over its RAM) for the closure only. So:
//! - at most one VM's device lock is held at a time, never two: VM A can
//!   transmit to B on one CPU while B transmits to A on another, and the
//!   second simply waits for the network lock;
//! - the order is network lock, then one VM's device lock; nothing takes
//!   the network lock while holding a VM's device lock (the transmit
//!   notify is served by [`crate::transport::Transport::process`] under
//!   A's lock, which only records the kick; the glue runs the switch after
//!   releasing it);
//! - the sender's RAM is read between its two holds without its lock (a
//!   VM's RAM never moves or changes hands; the chains are the device's
//!   until they are returned): see ADR 0014;
//! - a VM's receive queue is written only inside `with_port`, so its own
//!   CPU (posting receive buffers, reading used ones) only ever races with
//!   the switch through the ring protocol, as with any device.
//!
//! The value is fixed-size: `BATCH` chains (half a kilobyte each), two
//! more for receiving, the table and counters.

use crate::device::Queues;
use crate::mem::GuestMemory;
use crate::net::{self, Mac, NetDevice, Put, RxScratch, Taken, TxFrame};
use crate::queue::QueueError;
use crate::transport::Transport;

/// Most ports one switch has (the bundle's VM limit).
pub const MAX_PORTS: usize = 16;
/// Entries of the address table.
pub const MAC_TABLE: usize = 64;
/// Frames moved per batch.
pub const BATCH: usize = 8;
/// Most frames one [`Switch::transmit`] takes from the sender.
pub const TX_BUDGET: usize = net::QUEUE_SIZE as usize;
/// Most frame bytes one [`Switch::transmit`] takes from the sender: a full
/// ring of MTU-sized frames, so segmentation frames of up to 64 KiB do
/// not make a call longer.
pub const TX_BYTE_BUDGET: usize = TX_BUDGET * net::MAX_FRAME;

/// What [`Ports::with_port_reading`] runs: a port's transport and memory,
/// and the sender's memory to read from.
pub type ReadingFn<'a> =
    dyn FnMut(&mut Transport<NetDevice>, &mut dyn GuestMemory, &dyn GuestMemory) + 'a;

/// How the switch reaches the ports' NICs: the glue's side.
pub trait Ports {
    /// Runs `f` on port `port`'s transport with that VM's memory, holding
    /// whatever makes that safe (the VM's device lock); `false`, without
    /// running it, if the port cannot be reached now (its VM is stopped).
    fn with_port(
        &mut self,
        port: usize,
        f: &mut dyn FnMut(&mut Transport<NetDevice>, &mut dyn GuestMemory),
    ) -> bool;

    /// [`Ports::with_port`], with port `from`'s memory as well, to read
    /// from only: the frames the switch took from `from` are copied from
    /// there straight into `port`'s buffers. `from`'s device lock is not
    /// held (its RAM stays mapped, and the buffers are the device's until
    /// the switch returns them); `false` if either cannot be reached.
    fn with_port_reading(&mut self, port: usize, from: usize, f: &mut ReadingFn<'_>) -> bool;
}

/// What the switch counted at one port; saturating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames the port sent that were switched.
    pub tx_frames: u64,
    /// Frames the port sent that were dropped: no header, runt, over the
    /// MTU, or asking for an offload.
    pub tx_dropped: u64,
    /// Frames written into the port's receive buffers.
    pub rx_frames: u64,
    /// Frames for the port dropped because it had no receive buffer, its
    /// buffer was too small, or its driver was not live.
    pub rx_dropped: u64,
    /// Frames the port sent with another port's pinned MAC as their
    /// source: dropped.
    pub tx_spoofed: u64,
    /// Flooded frames (broadcast, multicast, unknown destination) the port
    /// sent beyond its storm-control budget: dropped.
    pub tx_storm: u64,
}

/// Storm control: flooded frames (broadcast, multicast, unknown unicast)
/// one port may send per second, on average.
pub const FLOOD_PER_SECOND: u64 = 2_000;
/// ... and in one burst.
pub const FLOOD_BURST: u64 = 256;

/// A port's storm-control bucket: up to [`FLOOD_BURST`] tokens, refilled
/// at [`FLOOD_PER_SECOND`]; a flooded frame takes one or is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    tokens: u64,
    /// When it was last refilled, in µs of [`Switch::set_time`].
    at_us: u64,
}

impl Bucket {
    const FULL: Self = Self {
        tokens: FLOOD_BURST,
        at_us: 0,
    };

    /// Takes a token at time `now_us`, refilling first; whether there was one.
    fn take(&mut self, now_us: u64) -> bool {
        let elapsed = now_us.saturating_sub(self.at_us);
        let refill = elapsed.saturating_mul(FLOOD_PER_SECOND) / 1_000_000;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(FLOOD_BURST);
            // Keep the remainder: advance by the time the tokens took.
            self.at_us += refill * 1_000_000 / FLOOD_PER_SECOND;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// What one [`Switch::transmit`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxReport {
    /// Chains taken from the sender (switched or dropped).
    pub taken: usize,
    /// Whether the sender may have more: the budget ran out first. The
    /// glue calls again later.
    pub more: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    mac: Mac,
    port: u8,
    /// When it was last seen (0: free).
    seen: u64,
}

/// One network's switch.
#[derive(Debug)]
pub struct Switch {
    ports: usize,
    /// Each port's pinned MAC as a [`mac_key`] (`u64::MAX`: none),
    /// compared in one instruction on every frame.
    pinned_keys: [u64; MAX_PORTS],
    table: [Entry; MAC_TABLE],
    clock: u64,
    counters: [PortCounters; MAX_PORTS],
    batch: [TxFrame; BATCH],
    /// The sender's transport epoch when the batch was taken.
    batch_epoch: u32,
    /// Which ports each frame of the batch goes to, one bit each.
    targets: [u32; BATCH],
    /// Each port's storm-control bucket.
    buckets: [Bucket; MAX_PORTS],
    /// The time, in µs, as the glue last set it ([`Switch::set_time`]).
    now_us: u64,
    /// Scratch space for the receive chains being written.
    rx: RxScratch,
}

/// A MAC as a number (its six bytes little-endian): never `u64::MAX`.
fn mac_key(mac: Mac) -> u64 {
    let m = mac.0;
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

impl Switch {
    /// A switch with `ports` ports (at most [`MAX_PORTS`], more are not
    /// connected) and an empty table.
    pub fn new(ports: usize) -> Self {
        Self {
            ports: ports.min(MAX_PORTS),
            pinned_keys: [u64::MAX; MAX_PORTS],
            table: [Entry::default(); MAC_TABLE],
            clock: 0,
            counters: [PortCounters::default(); MAX_PORTS],
            batch: [const { TxFrame::EMPTY }; BATCH],
            batch_epoch: 0,
            targets: [0; BATCH],
            buckets: [Bucket::FULL; MAX_PORTS],
            now_us: 0,
            rx: RxScratch::EMPTY,
        }
    }

    /// Sets the time storm control counts with, in µs of a monotonic clock
    /// (the glue's counter): call before [`Switch::transmit`]. A clock that
    /// goes backwards refills nothing.
    pub fn set_time(&mut self, now_us: u64) {
        self.now_us = self.now_us.max(now_us);
    }

    /// How many ports it has.
    pub fn ports(&self) -> usize {
        self.ports
    }

    /// Port `port`'s counters (zero for a port it lacks).
    pub fn counters(&self, port: usize) -> PortCounters {
        self.counters.get(port).copied().unwrap_or_default()
    }

    /// Pins `mac` (a unicast address) to `port`: frames to it go there
    /// without learning, and frames from it are accepted from that port
    /// only. A port the switch lacks, or a group address, is ignored.
    pub fn pin(&mut self, port: usize, mac: Mac) {
        if port < self.ports && !mac.is_group() {
            self.pinned_keys[port] = mac_key(mac);
        }
    }

    /// The port `mac` is pinned to.
    fn pinned_port(&self, mac: Mac) -> Option<usize> {
        let key = mac_key(mac);
        self.pinned_keys[..self.ports]
            .iter()
            .position(|&k| k == key)
    }

    /// The port `mac` is pinned to or was last seen behind.
    pub fn lookup(&self, mac: Mac) -> Option<usize> {
        if let Some(p) = self.pinned_port(mac) {
            return Some(p);
        }
        self.learned_port(mac)
    }

    /// The port `mac` was last seen behind (pins aside).
    fn learned_port(&self, mac: Mac) -> Option<usize> {
        self.table
            .iter()
            .find(|e| e.seen != 0 && e.mac == mac)
            .map(|e| usize::from(e.port))
    }

    /// Records that `mac` (not a pinned one) lives behind `port`.
    fn learn(&mut self, mac: Mac, port: usize) {
        if mac.is_group() {
            return;
        }
        self.clock += 1;
        let now = self.clock;
        let slot = match self.table.iter().position(|e| e.seen != 0 && e.mac == mac) {
            Some(i) => i,
            // A free entry has `seen == 0`, the oldest of all.
            None => (0..MAC_TABLE)
                .min_by_key(|&i| self.table[i].seen)
                .expect("the table is not empty"),
        };
        self.table[slot] = Entry {
            mac,
            port: port as u8,
            seen: now,
        };
    }

    /// The ports a frame from `src` goes to, given the port its
    /// destination is known behind (`None`: a group or unknown address,
    /// flooded).
    fn route(&self, src: usize, dest_port: Option<usize>) -> u32 {
        // `ports <= MAX_PORTS < 32`.
        let all = (1u32 << self.ports) - 1;
        let others = all & !(1 << src);
        match dest_port {
            Some(p) => others & (1 << p),
            None => others,
        }
    }

    /// Serves a transmit notify of port `src`: moves up to [`TX_BUDGET`]
    /// frames from its transmit queue to the ports they are for. A ring
    /// error at any port stops that port's device
    /// (`DEVICE_NEEDS_RESET`), as the transport does for its own
    /// notifies; the others carry on.
    pub fn transmit(&mut self, src: usize, ports: &mut dyn Ports) -> TxReport {
        self.transmit_up_to(src, ports, TX_BUDGET)
    }

    /// [`Switch::transmit`] with a budget of `budget` frames (at most
    /// [`TX_BUDGET`]).
    pub fn transmit_up_to(&mut self, src: usize, ports: &mut dyn Ports, budget: usize) -> TxReport {
        let budget = budget.min(TX_BUDGET);
        let mut report = TxReport::default();
        if src >= self.ports {
            return report;
        }
        let mut bytes = 0;
        loop {
            let room = BATCH.min(budget - report.taken);
            if room == 0 || bytes >= TX_BYTE_BUDGET {
                report.more = true;
                return report;
            }
            let (taken, frames, drained) = self.take_batch(src, room, &mut bytes, ports);
            report.taken += taken;
            self.deliver_batch(src, frames, ports);
            self.complete_batch(src, frames, ports);
            if drained {
                return report;
            }
        }
    }

    /// Takes up to `room` chains from `src` into the batch, while `bytes`
    /// (the frame bytes taken, counted on) stays under
    /// [`TX_BYTE_BUDGET`]; how many it took, how many of them are frames
    /// to switch (at the front of the batch), and whether the queue ran
    /// empty.
    fn take_batch(
        &mut self,
        src: usize,
        room: usize,
        bytes: &mut usize,
        ports: &mut dyn Ports,
    ) -> (usize, usize, bool) {
        let (mut taken, mut frames, mut drained) = (0, 0, true);
        let mut drops = 0u64;
        let (batch, epoch) = (&mut self.batch, &mut self.batch_epoch);
        let reached = ports.with_port(src, &mut |t, mem| {
            *epoch = t.epoch();
            let result = t.with_device(mem, |dev, queues: &mut Queues<'_>, mem| {
                drained = false;
                let features = dev.negotiated();
                while taken < room && *bytes < TX_BYTE_BUDGET {
                    match net::take_frame(queues, mem, &mut batch[frames], features)
                        .map_err(|e| (net::TX, e))?
                    {
                        Taken::Empty => {
                            drained = true;
                            break;
                        }
                        Taken::Frame => {
                            *bytes += batch[frames].len();
                            frames += 1;
                        }
                        Taken::Dropped(_) => drops += 1,
                    }
                    taken += 1;
                }
                Ok::<(), (u16, QueueError)>(())
            });
            // A device that is not live, or that failed: nothing more to take.
            if result.is_none() {
                drained = true;
            }
        });
        if !reached {
            drained = true;
        }
        let c = &mut self.counters[src];
        c.tx_dropped = c.tx_dropped.saturating_add(drops);
        for i in 0..frames {
            let (source, dest) = (self.batch[i].source(), self.batch[i].destination());
            match self.pinned_port(source) {
                Some(p) if p != src => {
                    self.targets[i] = 0;
                    bump(&mut self.counters[src].tx_spoofed);
                    continue;
                }
                Some(_) => {}
                None => self.learn(source, src),
            }
            let dest_port = if dest.is_group() {
                None
            } else {
                self.lookup(dest)
            };
            let targets = self.route(src, dest_port);
            // Flooded (group or unknown destination): storm control.
            let flooded = dest_port.is_none();
            if flooded && !self.buckets[src].take(self.now_us) {
                self.targets[i] = 0;
                bump(&mut self.counters[src].tx_storm);
                continue;
            }
            self.targets[i] = targets;
            bump(&mut self.counters[src].tx_frames);
        }
        (taken, frames, drained)
    }

    /// Delivers the batch's first `frames` frames to their ports, each
    /// port visited once.
    fn deliver_batch(&mut self, src: usize, frames: usize, ports: &mut dyn Ports) {
        let wanted = self.targets[..frames].iter().fold(0, |acc, t| acc | t);
        for port in 0..self.ports {
            if port == src || wanted & (1 << port) == 0 {
                continue;
            }
            let (batch, targets, rx) = (&self.batch, &self.targets, &mut self.rx);
            let (mut delivered, mut dropped) = (0u64, 0u64);
            let reached = ports.with_port_reading(port, src, &mut |t, mem, from| {
                let mut out_of_buffers = false;
                let result = t.with_device(mem, |dev, queues, mem| {
                    let features = dev.negotiated();
                    for (frame, _) in batch[..frames]
                        .iter()
                        .zip(targets)
                        .filter(|&(_, &t)| t & (1 << port) != 0)
                    {
                        if out_of_buffers {
                            dropped += 1;
                            continue;
                        }
                        match net::put_frame(queues, mem, from, frame, rx, features)
                            .map_err(|e| (net::RX, e))?
                        {
                            Put::Delivered => delivered += 1,
                            Put::TooSmall => dropped += 1,
                            Put::NoBuffer => {
                                out_of_buffers = true;
                                dropped += 1;
                            }
                        }
                    }
                    Ok::<(), (u16, QueueError)>(())
                });
                if result.is_none() {
                    // Not live, or failed part way: the rest is lost.
                    let count = targets[..frames]
                        .iter()
                        .filter(|&&t| t & (1 << port) != 0)
                        .count() as u64;
                    dropped = count - delivered;
                }
            });
            if !reached {
                dropped = targets[..frames]
                    .iter()
                    .filter(|&&t| t & (1 << port) != 0)
                    .count() as u64;
            }
            let c = &mut self.counters[port];
            c.rx_frames = c.rx_frames.saturating_add(delivered);
            c.rx_dropped = c.rx_dropped.saturating_add(dropped);
        }
    }

    /// Returns the batch's first `frames` chains to `src`'s driver, now
    /// that they were delivered (or dropped), unless its device was reset
    /// or a queue made ready since they were taken: then they belong to a
    /// ring that is gone.
    fn complete_batch(&mut self, src: usize, frames: usize, ports: &mut dyn Ports) {
        if frames == 0 {
            return;
        }
        let (batch, epoch) = (&self.batch[..frames], self.batch_epoch);
        ports.with_port(src, &mut |t, mem| {
            if t.epoch() == epoch {
                t.with_device(mem, |_, queues, mem| {
                    net::complete(queues, mem, batch).map_err(|e| (net::TX, e))
                });
            }
        });
    }
}

#[cfg(test)]
mod storm_tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::FULL;
        let taken = (0..300).filter(|_| b.take(0)).count() as u64;
        assert_eq!(
            taken, FLOOD_BURST,
            "a burst, then nothing at the same instant"
        );
        // 10 ms later: 20 more at 2,000 per second.
        let taken = (0..100).filter(|_| b.take(10_000)).count() as u64;
        assert_eq!(taken, FLOOD_PER_SECOND / 100);
        // A long pause refills only to the burst.
        let taken = (0..1000).filter(|_| b.take(60_000_000)).count() as u64;
        assert_eq!(taken, FLOOD_BURST);
        // Time that does not reach one token's worth keeps accruing.
        let mut c = Bucket {
            tokens: 0,
            at_us: 0,
        };
        assert!(!c.take(300));
        assert!(c.take(500), "500 µs make one token");
        assert!(!c.take(600));
    }

    #[test]
    fn set_time_never_goes_back() {
        let mut s = Switch::new(2);
        s.set_time(1000);
        s.set_time(10);
        assert_eq!(s.now_us, 1000);
    }
}
