//! The vsock router: delivers packets between the vsock devices
//! ([`crate::vsock`]) of VMs by CID, deny by default.
//!
//! Port *i* is VM *i*'s device (CID 3 + *i*, as the config gives it); each
//! port has the set of ports it may talk to ([`Router::add_port`]: the
//! config's `[[vsock]]` pairs, symmetric). Everything else is refused:
//!
//! - a packet whose `src_cid` is not the sender's own CID is dropped and
//!   counted ([`VsockCounters::spoofed`]): a VM cannot speak for another;
//! - a packet for a CID that is no port, or a port the sender may not talk
//!   to, is answered with `RST` and counted ([`VsockCounters::denied`]),
//!   so a `connect` fails at once with `ECONNRESET`;
//! - a header whose `len` is not the chain's payload, a payload over
//!   [`vsock::MAX_PAYLOAD`], a chain shorter than a header, an unknown
//!   operation: dropped and counted ([`VsockCounters::malformed`]); a type
//!   other than stream: `RST`.
//!
//! # Connections
//! The router keeps a bounded table per port ([`CONNECTIONS`] entries):
//! a `REQUEST` adds the connection at both ends (refused with `RST` when
//! either table is full, [`VsockCounters::table_full`]), a `RESPONSE`
//! establishes it, an `RST` removes it. Data, credit and shutdown packets
//! pass only on an established connection, anything else gets `RST`
//! ([`VsockCounters::no_connection`]). When a VM's device resets, its
//! peers get an `RST` for each of its connections ([`Router::port_reset`]);
//! a packet for a device whose driver is not live is answered with `RST`
//! and its connection forgotten.
//!
//! # Flow control and memory
//! The router is a forwarder, not an endpoint: the guests' own credit
//! (§5.10.6.3, `buf_alloc` and `fwd_cnt` carried untouched) bounds what a
//! sender may have in flight to its peer's socket buffer. The router keeps
//! no payload: a packet stays in the sender's transmit ring until the
//! receiver has posted receive buffers for it, and is copied through a
//! [`CHUNK`]-byte buffer, split over as many receive buffers as it needs
//! (each with the header and its part's `len`, as vhost-vsock does). A
//! receiver that posts no buffers only holds back the senders allowed to
//! talk to it; the router's state is fixed-size and its work per call
//! bounded ([`BUDGET`] steps per port). The only packets the router makes
//! itself are `RST` replies, queued per port ([`CONTROL_QUEUE`] at most,
//! the oldest dropped and counted beyond).
//!
//! # Locking (for the glue)
//! As for the switch ([`crate::switch`]): the router is one value behind
//! one lock, held for [`Router::service`]; it reaches each VM through
//! [`VsockPorts::with_port`], which takes that VM's device lock for the
//! closure only, never two at once.

use crate::mem::GuestMemory;
use crate::queue::QueueError;
use crate::transport::Transport;
use crate::vsock::{self, HDR_LEN, Header, Op, TYPE_STREAM, VsockDevice};

/// Most ports (the bundle's VM limit).
pub const MAX_PORTS: usize = 16;
/// Connections each port may have at once.
pub const CONNECTIONS: usize = 64;
/// `RST` replies waiting for a port's receive buffers.
pub const CONTROL_QUEUE: usize = 16;
/// Bytes copied per step (a Linux receive buffer's payload fits).
pub const CHUNK: usize = 4096;
/// Most steps (packets or parts of one) per port and call.
pub const BUDGET: usize = 64;

/// How the router reaches the ports' devices: the glue's side.
pub trait VsockPorts {
    /// Runs `f` on port `port`'s transport with that VM's memory, holding
    /// that VM's device lock; `false`, without running it, if the port
    /// cannot be reached now.
    fn with_port(
        &mut self,
        port: usize,
        f: &mut dyn FnMut(&mut Transport<VsockDevice>, &mut dyn GuestMemory),
    ) -> bool;
}

/// What the router counted at one port (as a sender, except
/// `control_dropped`); saturating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsockCounters {
    /// Packets delivered whole to their peer.
    pub forwarded: u64,
    /// Packets for a CID the port may not reach.
    pub denied: u64,
    /// Packets with another CID as their source.
    pub spoofed: u64,
    /// Packets with a bad length, type or operation.
    pub malformed: u64,
    /// Packets for no (established) connection.
    pub no_connection: u64,
    /// Connections refused because a table was full.
    pub table_full: u64,
    /// `RST` replies dropped because the port's queue of them was full,
    /// or packets lost because the receiver's device stopped.
    pub control_dropped: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ConnState {
    #[default]
    Free,
    Requested,
    Established,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Conn {
    state: ConnState,
    peer: u8,
    local_port: u32,
    peer_port: u32,
}

/// A packet of the sender's being delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    head: u16,
    hdr: Header,
    /// Payload bytes delivered so far.
    offset: u32,
    dest: usize,
}

#[derive(Clone, Copy)]
struct Port {
    present: bool,
    cid: u64,
    peers: u32,
    conns: [Conn; CONNECTIONS],
    control: [Header; CONTROL_QUEUE],
    control_len: usize,
    held: Option<Held>,
    counters: VsockCounters,
}

impl Port {
    const ABSENT: Self = Self {
        present: false,
        cid: 0,
        peers: 0,
        conns: [Conn {
            state: ConnState::Free,
            peer: 0,
            local_port: 0,
            peer_port: 0,
        }; CONNECTIONS],
        control: [Header::ZERO; CONTROL_QUEUE],
        control_len: 0,
        held: None,
        counters: VsockCounters {
            forwarded: 0,
            denied: 0,
            spoofed: 0,
            malformed: 0,
            no_connection: 0,
            table_full: 0,
            control_dropped: 0,
        },
    };

    fn find(&self, peer: usize, local_port: u32, peer_port: u32) -> Option<usize> {
        self.conns.iter().position(|c| {
            c.state != ConnState::Free
                && usize::from(c.peer) == peer
                && c.local_port == local_port
                && c.peer_port == peer_port
        })
    }

    fn free_slot(&self) -> Option<usize> {
        self.conns.iter().position(|c| c.state == ConnState::Free)
    }

    /// Queues a reply, dropping the oldest when full.
    fn push_control(&mut self, h: Header) {
        if self.control_len == CONTROL_QUEUE {
            self.control.copy_within(1.., 0);
            self.control_len -= 1;
            bump(&mut self.counters.control_dropped);
        }
        self.control[self.control_len] = h;
        self.control_len += 1;
    }
}

fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

/// What one look at the sender's next transmit chain found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peek {
    /// The ring is empty (or the device is not live).
    Empty,
    /// A new packet: its head and header (checked for length), and the
    /// first chunk of its payload in the buffer.
    Fresh {
        head: u16,
        hdr: Header,
        chunk: usize,
    },
    /// A chain that is not a packet: too short, or its length wrong.
    Malformed,
    /// The next chunk of the held packet is in the buffer.
    Chunk { chunk: usize },
}

/// What the router did for one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceReport {
    /// Steps taken (packet parts delivered, packets dropped or refused).
    pub steps: usize,
    /// Whether a port ran out of budget with more to do: the glue calls
    /// again later.
    pub more: bool,
}

/// The vsock router of one machine.
#[derive(Debug)]
pub struct Router {
    ports: [Port; MAX_PORTS],
    buf: [u8; CHUNK],
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Port {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Port")
            .field("present", &self.present)
            .field("cid", &self.cid)
            .field("peers", &self.peers)
            .finish()
    }
}

impl Router {
    /// A router with no port.
    pub const fn new() -> Self {
        Self {
            ports: [Port::ABSENT; MAX_PORTS],
            buf: [0; CHUNK],
        }
    }

    /// Makes VM `vm`'s device port `vm`, with CID `cid`, allowed to talk to
    /// the ports whose bits `peers` has (bit *i* for port *i*; its own bit
    /// and bits past [`MAX_PORTS`] are ignored). A port past `MAX_PORTS`
    /// is ignored.
    pub fn add_port(&mut self, vm: usize, cid: u64, peers: u32) {
        if let Some(p) = self.ports.get_mut(vm) {
            *p = Port {
                present: true,
                cid,
                peers: peers & !(1 << vm) & ((1 << MAX_PORTS) - 1),
                ..Port::ABSENT
            };
        }
    }

    /// Port `vm`'s counters (zero for an absent port).
    pub fn counters(&self, vm: usize) -> VsockCounters {
        self.ports
            .get(vm)
            .map_or_else(Default::default, |p| p.counters)
    }

    /// How many connections port `vm` has (requested or established).
    pub fn connections(&self, vm: usize) -> usize {
        self.ports.get(vm).map_or(0, |p| {
            p.conns
                .iter()
                .filter(|c| c.state != ConnState::Free)
                .count()
        })
    }

    fn port_of_cid(&self, cid: u64) -> Option<usize> {
        self.ports.iter().position(|p| p.present && p.cid == cid)
    }

    /// Port `vm`'s device was reset (or its VM stopped): each of its
    /// connections is torn down, its peer told with an `RST`, and the
    /// packet it was sending forgotten.
    pub fn port_reset(&mut self, vm: usize) {
        if !self.ports.get(vm).is_some_and(|p| p.present) {
            return;
        }
        let me = self.ports[vm];
        for c in me.conns.iter().filter(|c| c.state != ConnState::Free) {
            let peer = usize::from(c.peer);
            let rst = Header {
                src_cid: me.cid,
                dst_cid: self.ports[peer].cid,
                src_port: c.local_port,
                dst_port: c.peer_port,
                kind: TYPE_STREAM,
                op: Op::Rst as u16,
                ..Header::default()
            };
            let p = &mut self.ports[peer];
            if let Some(i) = p.find(vm, c.peer_port, c.local_port) {
                p.conns[i] = Conn::default();
            }
            p.push_control(rst);
            // The packet the peer was delivering to this port is lost
            // with the device's buffers.
            if p.held.is_some_and(|h| h.dest == vm) {
                p.held = None;
                bump(&mut p.counters.control_dropped);
            }
        }
        let p = &mut self.ports[vm];
        p.conns = [Conn::default(); CONNECTIONS];
        p.control_len = 0;
        p.held = None;
    }

    /// Serves a notify of port `vm` (its transmit queue, or new receive
    /// buffers): its waiting replies, then its transmit queue, then every
    /// port that was waiting for its receive buffers.
    pub fn service(&mut self, vm: usize, ports: &mut dyn VsockPorts) -> ServiceReport {
        let mut report = ServiceReport::default();
        if !self.ports.get(vm).is_some_and(|p| p.present) {
            return report;
        }
        self.flush_control(vm, ports);
        self.forward(vm, ports, &mut report);
        for src in 0..MAX_PORTS {
            if src != vm && self.ports[src].held.is_some_and(|h| h.dest == vm) {
                self.forward(src, ports, &mut report);
            }
        }
        // Replies the forwarding queued for this port, or for the senders.
        for p in 0..MAX_PORTS {
            if self.ports[p].control_len > 0 {
                self.flush_control(p, ports);
            }
        }
        report
    }

    /// Delivers port `vm`'s queued replies into its receive buffers.
    fn flush_control(&mut self, vm: usize, ports: &mut dyn VsockPorts) {
        let port = &mut self.ports[vm];
        if port.control_len == 0 {
            return;
        }
        let mut sent = 0;
        let (control, len) = (&port.control, port.control_len);
        ports.with_port(vm, &mut |t, mem| {
            t.with_device(mem, |_, queues, mem| {
                let Ok(rx) = queues.get(vsock::RX) else {
                    return Ok(());
                };
                for h in &control[..len] {
                    let Some(chain) = rx.pop(mem).map_err(|e| (vsock::RX, e))? else {
                        break;
                    };
                    if chain.writable_len() >= HDR_LEN as u32 {
                        chain
                            .write(mem, 0, &h.encode())
                            .map_err(|e| (vsock::RX, e))?;
                        rx.add_used(mem, chain.head(), HDR_LEN as u32)
                            .map_err(|e| (vsock::RX, e))?;
                        sent += 1;
                    } else {
                        rx.add_used(mem, chain.head(), 0)
                            .map_err(|e| (vsock::RX, e))?;
                    }
                }
                Ok::<(), (u16, QueueError)>(())
            });
        });
        port.control.copy_within(sent..len, 0);
        port.control_len -= sent;
    }

    /// Moves port `src`'s packets, at most [`BUDGET`] steps.
    fn forward(&mut self, src: usize, ports: &mut dyn VsockPorts, report: &mut ServiceReport) {
        let mut consume = false;
        for _ in 0..BUDGET {
            let peek = self.peek(src, consume, ports);
            consume = false;
            let (hdr, chunk) = match peek {
                Peek::Empty => return,
                Peek::Malformed => {
                    bump(&mut self.ports[src].counters.malformed);
                    consume = true;
                    report.steps += 1;
                    continue;
                }
                Peek::Fresh { head, hdr, chunk } => match self.admit(src, &hdr) {
                    Some(dest) => {
                        self.ports[src].held = Some(Held {
                            head,
                            hdr,
                            offset: 0,
                            dest,
                        });
                        (hdr, chunk)
                    }
                    None => {
                        consume = true;
                        report.steps += 1;
                        continue;
                    }
                },
                Peek::Chunk { chunk } => match self.ports[src].held {
                    Some(h) => (h.hdr, chunk),
                    None => return,
                },
            };
            let Some(held) = self.ports[src].held else {
                return;
            };
            match self.deliver(held, &hdr, chunk, ports) {
                Delivery::Blocked => return,
                Delivery::Wasted => {}
                Delivery::Lost => {
                    // The receiver's device is not live: its end of the
                    // connection is gone, and the sender hears so.
                    bump(&mut self.ports[src].counters.control_dropped);
                    self.ports[src].held = None;
                    self.forget(src, held.dest, &hdr);
                    if hdr.op != Op::Rst as u16 {
                        self.ports[src].push_control(hdr.reset_reply());
                    }
                    consume = true;
                }
                Delivery::Part(n) => {
                    let h = self.ports[src].held.as_mut().expect("held above");
                    h.offset += n;
                    if h.offset >= hdr.len {
                        bump(&mut self.ports[src].counters.forwarded);
                        self.ports[src].held = None;
                        consume = true;
                    }
                }
            }
            report.steps += 1;
        }
        if consume {
            self.peek(src, true, ports);
        }
        report.more = true;
    }

    /// With port `src`'s lock: returns the chain it finished (if
    /// `consume`), then looks at its next one (or the held packet's next
    /// chunk) without taking it.
    fn peek(&mut self, src: usize, consume: bool, ports: &mut dyn VsockPorts) -> Peek {
        let held = self.ports[src].held;
        let buf = &mut self.buf;
        let mut peek = Peek::Empty;
        let reached = ports.with_port(src, &mut |t, mem| {
            let seen = t.with_device(mem, |_, queues, mem| {
                let err = |e| (vsock::TX, e);
                let Ok(tx) = queues.get(vsock::TX) else {
                    return Ok(Peek::Empty);
                };
                if consume && let Some(chain) = tx.pop(mem).map_err(err)? {
                    tx.add_used(mem, chain.head(), 0).map_err(err)?;
                }
                let mut probe = *tx;
                let Some(chain) = probe.pop(mem).map_err(err)? else {
                    return Ok(Peek::Empty);
                };
                let payload = chain.readable_len().saturating_sub(HDR_LEN as u32);
                match held {
                    Some(h) if h.head == chain.head() => {
                        let left = h.hdr.len.saturating_sub(h.offset);
                        let n = (left as usize).min(CHUNK);
                        chain
                            .read(mem, HDR_LEN as u32 + h.offset, &mut buf[..n])
                            .map_err(err)?;
                        Ok(Peek::Chunk { chunk: n })
                    }
                    // The driver rewrote a published entry: the held
                    // packet is gone; treat the chain as new.
                    _ => {
                        if (chain.readable_len() as usize) < HDR_LEN {
                            return Ok(Peek::Malformed);
                        }
                        let mut hb = [0u8; HDR_LEN];
                        chain.read(mem, 0, &mut hb).map_err(err)?;
                        let hdr = Header::decode(&hb);
                        if hdr.len != payload || hdr.len > vsock::MAX_PAYLOAD {
                            return Ok(Peek::Malformed);
                        }
                        let n = (hdr.len as usize).min(CHUNK);
                        chain
                            .read(mem, HDR_LEN as u32, &mut buf[..n])
                            .map_err(err)?;
                        Ok(Peek::Fresh {
                            head: chain.head(),
                            hdr,
                            chunk: n,
                        })
                    }
                }
            });
            peek = seen.unwrap_or(Peek::Empty);
        });
        if !reached || peek == Peek::Empty {
            self.ports[src].held = None;
        }
        if matches!(peek, Peek::Fresh { .. } | Peek::Malformed) && held.is_some() {
            // The held packet's chain was replaced under it.
            self.ports[src].held = None;
            bump(&mut self.ports[src].counters.malformed);
        }
        peek
    }

    /// Checks a new packet of port `src` against the rules and the
    /// connection tables; its destination port, or `None` when it is
    /// dropped or refused (a reply queued where the rules say).
    fn admit(&mut self, src: usize, hdr: &Header) -> Option<usize> {
        let me = self.ports[src];
        if hdr.src_cid != me.cid {
            bump(&mut self.ports[src].counters.spoofed);
            return None;
        }
        let Some(op) = Op::from_u16(hdr.op) else {
            bump(&mut self.ports[src].counters.malformed);
            return None;
        };
        let refuse = |router: &mut Self| {
            if op != Op::Rst {
                router.ports[src].push_control(hdr.reset_reply());
            }
            None
        };
        if hdr.kind != TYPE_STREAM {
            bump(&mut self.ports[src].counters.malformed);
            return refuse(self);
        }
        let dest = self
            .port_of_cid(hdr.dst_cid)
            .filter(|&d| me.peers & (1 << d) != 0);
        let Some(dest) = dest else {
            bump(&mut self.ports[src].counters.denied);
            return refuse(self);
        };
        let mine = me.find(dest, hdr.src_port, hdr.dst_port);
        let theirs = self.ports[dest].find(src, hdr.dst_port, hdr.src_port);
        match op {
            Op::Request => {
                if mine.is_some() || theirs.is_some() {
                    bump(&mut self.ports[src].counters.no_connection);
                    return refuse(self);
                }
                let (Some(a), Some(b)) = (me.free_slot(), self.ports[dest].free_slot()) else {
                    bump(&mut self.ports[src].counters.table_full);
                    return refuse(self);
                };
                self.ports[src].conns[a] = Conn {
                    state: ConnState::Requested,
                    peer: dest as u8,
                    local_port: hdr.src_port,
                    peer_port: hdr.dst_port,
                };
                self.ports[dest].conns[b] = Conn {
                    state: ConnState::Requested,
                    peer: src as u8,
                    local_port: hdr.dst_port,
                    peer_port: hdr.src_port,
                };
                Some(dest)
            }
            Op::Rst => {
                // Forwarded only for a connection the peer knows.
                let known = mine.is_some();
                if let Some(i) = mine {
                    self.ports[src].conns[i] = Conn::default();
                }
                if let Some(i) = theirs {
                    self.ports[dest].conns[i] = Conn::default();
                }
                if !known {
                    bump(&mut self.ports[src].counters.no_connection);
                }
                known.then_some(dest)
            }
            Op::Response | Op::Shutdown | Op::Rw | Op::CreditUpdate | Op::CreditRequest => {
                let (Some(i), Some(j)) = (mine, theirs) else {
                    bump(&mut self.ports[src].counters.no_connection);
                    return refuse(self);
                };
                let established = self.ports[src].conns[i].state == ConnState::Established;
                match (op, established) {
                    (Op::Response, false) => {
                        self.ports[src].conns[i].state = ConnState::Established;
                        self.ports[dest].conns[j].state = ConnState::Established;
                        Some(dest)
                    }
                    (Op::Response, true) | (_, false) => {
                        bump(&mut self.ports[src].counters.no_connection);
                        refuse(self)
                    }
                    (_, true) => Some(dest),
                }
            }
        }
    }

    /// Removes the connection `hdr` (from `src` to `dest`) belongs to, at
    /// both ends.
    fn forget(&mut self, src: usize, dest: usize, hdr: &Header) {
        if let Some(i) = self.ports[src].find(dest, hdr.src_port, hdr.dst_port) {
            self.ports[src].conns[i] = Conn::default();
        }
        if let Some(i) = self.ports[dest].find(src, hdr.dst_port, hdr.src_port) {
            self.ports[dest].conns[i] = Conn::default();
        }
    }

    /// With the destination's lock: writes the held packet's next part
    /// (`hdr` with the part's length, and `chunk` bytes of the buffer at
    /// most) into one receive buffer.
    fn deliver(
        &mut self,
        held: Held,
        hdr: &Header,
        chunk: usize,
        ports: &mut dyn VsockPorts,
    ) -> Delivery {
        let buf = &self.buf;
        let mut out = Delivery::Lost;
        let reached = ports.with_port(held.dest, &mut |t, mem| {
            let done = t.with_device(mem, |_, queues, mem| {
                let err = |e| (vsock::RX, e);
                // No receive queue: nothing can ever arrive.
                let Ok(rx) = queues.get(vsock::RX) else {
                    return Ok(Delivery::Lost);
                };
                let Some(chain) = rx.pop(mem).map_err(err)? else {
                    return Ok(Delivery::Blocked);
                };
                let room = (chain.writable_len() as usize).saturating_sub(HDR_LEN);
                if chain.writable_len() < HDR_LEN as u32 || (room == 0 && chunk > 0) {
                    // Too small for anything: returned empty (a driver
                    // drops it) and the part waits for the next buffer.
                    rx.add_used(mem, chain.head(), 0).map_err(err)?;
                    return Ok(Delivery::Wasted);
                }
                let n = room.min(chunk);
                let part = Header {
                    len: n as u32,
                    ..*hdr
                };
                chain.write(mem, 0, &part.encode()).map_err(err)?;
                chain.write(mem, HDR_LEN as u32, &buf[..n]).map_err(err)?;
                rx.add_used(mem, chain.head(), (HDR_LEN + n) as u32)
                    .map_err(err)?;
                Ok(Delivery::Part(n as u32))
            });
            out = done.unwrap_or(Delivery::Lost);
        });
        if !reached {
            return Delivery::Lost;
        }
        out
    }
}

/// What one delivery step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// The receiver has no buffer: the packet waits.
    Blocked,
    /// The receiver's next buffer was too small even for the header: it
    /// was returned empty, and the part waits for the next one.
    Wasted,
    /// The receiver's device is not live (or failed): the packet is lost.
    Lost,
    /// This many payload bytes went out with a header.
    Part(u32),
}
