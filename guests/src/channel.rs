//! Shared-memory channels between two VMs: finding them in the device tree,
//! a one-slot mailbox per direction in the shared region, and the doorbell.
//!
//! A channel appears in the guest DT as a root node `channel@<ipa>` with
//! `compatible = "stratum,channel"`, `reg` = the shared region, `interrupts =
//! <0 spi 1>` (the doorbell: a GIC SPI, edge rising), `stratum,id` (the
//! channel's number in this VM, the argument of the `DOORBELL` hypercall),
//! `stratum,name` and `stratum,peer` (the other VM's name). [`find`] reads
//! these (pure; host-tested).
//!
//! The protocol ([`layout`]): the region is split in two halves, one per
//! [`End`]; each end only ever writes its own half, so no atomic
//! read-modify-write is needed (guests run with the MMU off, where exclusives
//! are not usable). A half holds, in separate cache lines, `SEQ` (the number
//! of the last message this end published, from 1), `LEN` (its length in
//! 64-bit words), then the payload, and `ACK` (the number of the last message
//! of the peer this end has consumed). Sending message `n`: wait until the
//! peer's `ACK` is `n - 1`, write payload and `LEN`, barrier, write `SEQ = n`,
//! ring. Receiving: wait until the peer's `SEQ` moves, check it is the next
//! number, barrier, read `LEN` and the payload, write `ACK`, ring. Every wait
//! sleeps in WFI until the doorbell interrupt (or a deadline on the virtual
//! timer): a lost doorbell shows as a timeout, not as a slow poll.
//!
//! Memory attributes: these guests access the region with the MMU off
//! (Device memory), a peer may map it Normal cacheable. Each access to the
//! peer's half is preceded, and each write to our half followed, by a
//! clean+invalidate to the point of coherency (`DC CIVAC`), so either way
//! both ends see memory, not a stale cache line.
//!
//! The application decides which end it is (the two ends must differ):
//! `pingpong` uses `role=ping` for [`End::A`] and `role=pong` for [`End::B`].
//! The doorbell handler is this module's: while a channel waits it owns
//! [`crate::irq::set_handler`], the virtual timer and the doorbell SPI.

use crate::fdt::{Fdt, FdtError, Token, be32, has_compatible, read_cells};

/// `compatible` of a channel node.
pub const COMPATIBLE: &[u8] = b"stratum,channel";

/// What the DT says about one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelNode<'a> {
    /// `stratum,id`: the channel's number in this VM (the doorbell argument).
    pub id: u32,
    /// `stratum,name`.
    pub name: &'a str,
    /// `stratum,peer`: the VM at the other end.
    pub peer: &'a str,
    /// Guest-physical base of the shared region.
    pub base: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The doorbell interrupt as an INTID (SPI + 32).
    pub intid: u32,
}

/// The properties of one root child that [`find`] looks at.
#[derive(Clone, Copy, Default)]
struct Props<'a> {
    compatible: Option<&'a [u8]>,
    reg: Option<&'a [u8]>,
    interrupts: Option<&'a [u8]>,
    id: Option<u32>,
    name: Option<&'a [u8]>,
    peer: Option<&'a [u8]>,
}

fn text(value: &[u8]) -> Option<&str> {
    core::str::from_utf8(value.strip_suffix(&[0]).unwrap_or(value)).ok()
}

impl<'a> Props<'a> {
    /// The channel these properties describe, if they are a complete channel node.
    fn channel(&self, address_cells: u32, size_cells: u32) -> Option<ChannelNode<'a>> {
        if !has_compatible(self.compatible?, COMPATIBLE) {
            return None;
        }
        let reg = self.reg?;
        let irq = self.interrupts?;
        // <type number flags>: type 0 is an SPI.
        if be32(irq, 0)? != 0 {
            return None;
        }
        Some(ChannelNode {
            id: self.id?,
            name: text(self.name?)?,
            peer: text(self.peer?)?,
            base: read_cells(reg, 0, address_cells)?,
            size: read_cells(reg, 4 * address_cells as usize, size_cells)?,
            intid: be32(irq, 4)?.checked_add(32)?,
        })
    }
}

/// Calls `each` for every complete channel node among the root's children,
/// in DT order.
pub fn for_each<'a>(fdt: &Fdt<'a>, mut each: impl FnMut(ChannelNode<'a>)) -> Result<(), FdtError> {
    let (mut address_cells, mut size_cells) = (2u32, 1u32);
    let mut props = Props::default();
    fdt.walk(|depth, token| match token {
        Token::Begin(_) if depth == 2 => props = Props::default(),
        Token::Prop(name, value) if depth == 1 => match name {
            b"#address-cells" => address_cells = be32(value, 0).unwrap_or(2),
            b"#size-cells" => size_cells = be32(value, 0).unwrap_or(1),
            _ => {}
        },
        Token::Prop(name, value) if depth == 2 => match name {
            b"compatible" => props.compatible = Some(value),
            b"reg" => props.reg = Some(value),
            b"interrupts" => props.interrupts = Some(value),
            b"stratum,id" => props.id = be32(value, 0),
            b"stratum,name" => props.name = Some(value),
            b"stratum,peer" => props.peer = Some(value),
            _ => {}
        },
        Token::End if depth == 2 => {
            if let Some(node) = props.channel(address_cells, size_cells) {
                each(node);
            }
        }
        _ => {}
    })
}

/// The channel called `name`, or with `None` the first channel in the DT.
pub fn find<'a>(fdt: &Fdt<'a>, name: Option<&str>) -> Result<Option<ChannelNode<'a>>, FdtError> {
    let mut found = None;
    for_each(fdt, |node| {
        if found.is_none() && name.is_none_or(|n| n == node.name) {
            found = Some(node);
        }
    })?;
    Ok(found)
}

/// The two ends of a channel; each writes only its own half of the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Owns the first half.
    A,
    /// Owns the second half.
    B,
}

impl End {
    /// The other end.
    pub const fn peer(self) -> End {
        match self {
            End::A => End::B,
            End::B => End::A,
        }
    }
}

/// Byte offsets inside one end's half of the region.
pub mod layout {
    use super::End;

    /// `SEQ`: number of the last message this end published (0: none yet).
    pub const SEQ: usize = 0x00;
    /// `LEN`: length of that message in 64-bit words.
    pub const LEN: usize = 0x08;
    /// `ACK`: number of the last message of the peer this end consumed
    /// (its own cache line: written at other times than `SEQ`/`LEN`).
    pub const ACK: usize = 0x40;
    /// The payload, after the header lines.
    pub const PAYLOAD: usize = 0x80;
    /// Smallest region the protocol works in (a payload of one word each way).
    pub const MIN_REGION: u64 = 2 * (PAYLOAD as u64 + 8);

    /// Offset of `end`'s half in a region of `size` bytes.
    pub const fn half(end: End, size: u64) -> u64 {
        match end {
            End::A => 0,
            End::B => size / 2,
        }
    }

    /// Largest payload in 64-bit words for a region of `size` bytes.
    pub const fn max_words(size: u64) -> usize {
        ((size / 2).saturating_sub(PAYLOAD as u64) / 8) as usize
    }
}

/// Why a channel operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The device tree could not be read.
    Fdt(FdtError),
    /// No channel node (with that name) in the device tree.
    NotFound,
    /// The region is too small or not 8-byte aligned.
    BadRegion,
    /// This end's half was not zero when opened (memory not fresh).
    NotFresh,
    /// The message does not fit in the payload area.
    TooLong,
    /// The deadline passed while waiting for the peer.
    Timeout,
    /// The peer published a message number other than the next one.
    OutOfSequence {
        /// What the peer's `SEQ` said.
        got: u64,
        /// What this end expected.
        want: u64,
    },
    /// The peer's `LEN` exceeds the payload area.
    BadLength(u64),
    /// The doorbell hypercall failed (SMCCC status).
    Doorbell(i64),
}

impl core::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Fdt(e) => write!(f, "device tree: {e}"),
            Self::NotFound => f.write_str("no stratum,channel node"),
            Self::BadRegion => f.write_str("shared region too small or misaligned"),
            Self::NotFresh => f.write_str("own half of the shared region not zero at open"),
            Self::TooLong => f.write_str("message longer than the payload area"),
            Self::Timeout => f.write_str("timed out waiting for the peer"),
            Self::OutOfSequence { got, want } => {
                write!(f, "peer published message {got}, expected {want}")
            }
            Self::BadLength(len) => write!(f, "peer message length {len} words is too long"),
            Self::Doorbell(status) => write!(f, "DOORBELL returned {status}"),
        }
    }
}

impl From<FdtError> for ChannelError {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use hw::*;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hw {
    use core::arch::asm;

    use super::{ChannelError, ChannelNode, End, layout};
    use crate::fdt::{Fdt, blob_at};
    use crate::gic::{Gic, INTID_VTIMER};
    use crate::global::Global;
    use crate::smccc::{self, INVALID_PARAMETERS, NOT_PRESENT, SUCCESS, stratum};
    use crate::{irq, mmio, timer};

    /// The doorbell INTID the handler counts.
    static DOORBELL_INTID: Global<u32> = Global::new(u32::MAX);
    /// Doorbell interrupts taken.
    static DOORBELLS: Global<u64> = Global::new(0);

    fn handler(intid: u32) {
        if intid == DOORBELL_INTID.get() {
            DOORBELLS.set(DOORBELLS.get() + 1);
        } else if intid == INTID_VTIMER {
            // The wait's deadline: stop the (level) timer before the EOI;
            // the waiter sees the counter past its deadline.
            timer::set_vtimer_ctl(timer::CTL_IMASK);
        } else {
            crate::report::fail(format_args!(
                "unexpected IRQ while on a channel: INTID {intid}"
            ))
        }
    }

    /// The smallest data cache line (`CTR_EL0.DminLine`).
    fn dcache_line() -> usize {
        let ctr: u64;
        // SAFETY: reading CTR_EL0 has no side effects.
        unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
        4 << ((ctr >> 16) & 0xf)
    }

    /// Cleans and invalidates `[addr, addr + len)` to the point of coherency.
    fn civac(addr: usize, len: usize) {
        let line = dcache_line();
        let mut a = addr & !(line - 1);
        while a < addr + len {
            // SAFETY: DC CIVAC on an address of the shared region (mapped at
            // stage 2) only writes back / drops cache lines.
            unsafe { asm!("dc civac, {}", in(reg) a, options(nostack, preserves_flags)) };
            a += line;
        }
        // SAFETY: barriers only order memory accesses.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
    }

    fn dmb() {
        // SAFETY: a barrier only orders memory accesses.
        unsafe { asm!("dmb sy", options(nostack, preserves_flags)) };
    }

    /// An open channel end.
    pub struct Channel {
        /// What the DT said.
        pub node: ChannelNode<'static>,
        end: End,
        mine: usize,
        theirs: usize,
        max_words: usize,
        sent: u64,
        received: u64,
    }

    impl Channel {
        /// Opens channel `name` (or the first one) from the DT at `dtb` as
        /// `end`, checking this end's half is fresh (zero).
        pub fn open(dtb: usize, name: Option<&str>, end: End) -> Result<Channel, ChannelError> {
            // SAFETY: `dtb` is the boot DTB pointer (see `fdt::locate`).
            let blob = unsafe { blob_at(dtb) }?;
            let fdt = Fdt::new(blob)?;
            let node = super::find(&fdt, name)?.ok_or(ChannelError::NotFound)?;
            if node.size < layout::MIN_REGION || node.base % 8 != 0 || node.size % 16 != 0 {
                return Err(ChannelError::BadRegion);
            }
            let base = node.base as usize;
            let ch = Channel {
                node,
                end,
                mine: base + layout::half(end, node.size) as usize,
                theirs: base + layout::half(end.peer(), node.size) as usize,
                max_words: layout::max_words(node.size),
                sent: 0,
                received: 0,
            };
            if ch.read_mine(layout::SEQ) != 0 || ch.read_mine(layout::ACK) != 0 {
                return Err(ChannelError::NotFresh);
            }
            Ok(ch)
        }

        /// Which end this is.
        pub fn end(&self) -> End {
            self.end
        }

        /// Largest message in 64-bit words.
        pub fn max_words(&self) -> usize {
            self.max_words
        }

        /// Configures the doorbell interrupt (edge, this CPU, enabled) and
        /// the virtual timer for deadlines, and installs this module's IRQ
        /// handler. The GIC must be initialized.
        pub fn enable_interrupts(&self, gic: &Gic) {
            DOORBELL_INTID.set(self.node.intid);
            irq::set_handler(Some(handler));
            gic.set_priority(self.node.intid, 0x80);
            gic.set_edge(self.node.intid, true);
            gic.route_to_self(self.node.intid);
            gic.enable(self.node.intid);
            gic.enable(INTID_VTIMER);
        }

        /// Doorbell interrupts taken so far.
        pub fn doorbells(&self) -> u64 {
            DOORBELLS.get()
        }

        /// Rings the peer: Stratum's `DOORBELL` hypercall with this channel's
        /// id. A peer that is not running (`NOT_PRESENT`) is not an error: it
        /// reads the shared memory when it starts.
        pub fn ring(&self) -> Result<(), ChannelError> {
            let status = smccc::status(smccc::call(
                stratum::DOORBELL,
                u64::from(self.node.id),
                0,
                0,
            ));
            match status {
                SUCCESS | NOT_PRESENT => Ok(()),
                other => Err(ChannelError::Doorbell(other)),
            }
        }

        /// `DOORBELL` for a channel id this VM does not have; must be refused.
        pub fn ring_invalid(&self) -> bool {
            let bogus = u64::from(self.node.id) + 1000;
            smccc::status(smccc::call(stratum::DOORBELL, bogus, 0, 0)) == INVALID_PARAMETERS
        }

        fn read_mine(&self, off: usize) -> u64 {
            // SAFETY: `mine + off` is an 8-byte-aligned word of this VM's
            // half of the shared region, which stage 2 maps as RAM.
            unsafe { mmio::read64(self.mine + off) }
        }

        fn write_mine(&self, off: usize, value: u64) {
            // SAFETY: as for `read_mine`; only this end writes its half.
            unsafe { mmio::write64(self.mine + off, value) };
            civac(self.mine + off, 8);
        }

        fn read_theirs(&self, off: usize) -> u64 {
            civac(self.theirs + off, 8);
            // SAFETY: an aligned word of the peer's half of the shared
            // region (mapped RAM); reading it has no side effect.
            unsafe { mmio::read64(self.theirs + off) }
        }

        /// Sleeps until `done()` or the deadline (virtual counter); IRQs are
        /// masked again on return.
        fn wait(
            &self,
            deadline: u64,
            mut done: impl FnMut(&Self) -> bool,
        ) -> Result<(), ChannelError> {
            timer::set_vtimer_cval(deadline);
            timer::set_vtimer_ctl(timer::CTL_ENABLE);
            let (ok, _) = irq::wfi_until(deadline, || done(self));
            timer::set_vtimer_ctl(0);
            if ok {
                Ok(())
            } else {
                Err(ChannelError::Timeout)
            }
        }

        /// Sends `words` as the next message (waiting, until `deadline`, for
        /// the peer to have consumed the previous one). Returns its number.
        pub fn send(&mut self, words: &[u64], deadline: u64) -> Result<u64, ChannelError> {
            if words.len() > self.max_words {
                return Err(ChannelError::TooLong);
            }
            let previous = self.sent;
            self.wait(deadline, |ch| ch.read_theirs(layout::ACK) == previous)?;
            for (i, &w) in words.iter().enumerate() {
                // SAFETY: `i < max_words`, so the word lies in this end's
                // payload area (mapped RAM, aligned).
                unsafe { mmio::write64(self.mine + layout::PAYLOAD + 8 * i, w) };
            }
            civac(self.mine + layout::PAYLOAD, 8 * words.len());
            self.write_mine(layout::LEN, words.len() as u64);
            dmb();
            let seq = previous + 1;
            self.write_mine(layout::SEQ, seq);
            self.ring()?;
            self.sent = seq;
            Ok(seq)
        }

        /// Receives the next message into `out` (waiting until `deadline`),
        /// checking its number is the next one. Returns its number and length
        /// in words (at most `out.len()` words are copied).
        pub fn receive(
            &mut self,
            out: &mut [u64],
            deadline: u64,
        ) -> Result<(u64, usize), ChannelError> {
            let previous = self.received;
            self.wait(deadline, |ch| ch.read_theirs(layout::SEQ) != previous)?;
            let seq = self.read_theirs(layout::SEQ);
            if seq != previous + 1 {
                return Err(ChannelError::OutOfSequence {
                    got: seq,
                    want: previous + 1,
                });
            }
            dmb();
            let len = self.read_theirs(layout::LEN);
            if len > self.max_words as u64 {
                return Err(ChannelError::BadLength(len));
            }
            let len = len as usize;
            civac(self.theirs + layout::PAYLOAD, 8 * len);
            for (i, slot) in out.iter_mut().take(len).enumerate() {
                // SAFETY: `i < len <= max_words`: inside the peer's payload
                // area (mapped RAM, aligned); reading has no side effect.
                *slot = unsafe { mmio::read64(self.theirs + layout::PAYLOAD + 8 * i) };
            }
            dmb();
            self.write_mine(layout::ACK, seq);
            self.ring()?;
            self.received = seq;
            Ok((seq, len))
        }

        /// Waits (until `deadline`) for the peer to consume everything sent.
        pub fn flush(&self, deadline: u64) -> Result<(), ChannelError> {
            let sent = self.sent;
            self.wait(deadline, |ch| ch.read_theirs(layout::ACK) == sent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built by `dtc -I dts -O dtb tests-data/channels.dts` (source alongside).
    const CHANNELS_DTB: &[u8] = include_bytes!("../tests-data/channels.dtb");
    const GUEST_DTB: &[u8] = include_bytes!("../tests-data/guest.dtb");

    #[test]
    fn finds_channels_by_name_and_first() {
        let fdt = Fdt::new(CHANNELS_DTB).expect("fixture is valid");
        let ping = ChannelNode {
            id: 0,
            name: "ping",
            peer: "pong-vm",
            base: 0x0b00_0000,
            size: 0x1000,
            intid: 80,
        };
        assert_eq!(find(&fdt, None), Ok(Some(ping)));
        assert_eq!(find(&fdt, Some("ping")), Ok(Some(ping)));
        let bulk = find(&fdt, Some("bulk")).expect("valid").expect("present");
        assert_eq!(
            (bulk.id, bulk.peer, bulk.base, bulk.size, bulk.intid),
            (1, "other", 0x0b00_1000, 0x2000, 81)
        );
        assert_eq!(find(&fdt, Some("nope")), Ok(None));
        let mut all = 0;
        for_each(&fdt, |_| all += 1).expect("valid");
        assert_eq!(all, 2);
        // The shm nodes under /reserved-memory are not channels themselves.
        let guest = Fdt::new(GUEST_DTB).expect("valid");
        assert_eq!(find(&guest, None), Ok(None));
    }

    #[test]
    fn halves_do_not_overlap_and_fit() {
        for size in [0x1000u64, 0x2000, 0x20_0000] {
            let a = layout::half(End::A, size);
            let b = layout::half(End::B, size);
            let words = layout::max_words(size) as u64;
            assert_eq!(a, 0);
            assert!(a + layout::PAYLOAD as u64 + 8 * words <= b, "{size:#x}");
            assert!(b + layout::PAYLOAD as u64 + 8 * words <= size, "{size:#x}");
        }
        assert_eq!(layout::max_words(0x1000), (0x800 - 0x80) / 8);
        assert_eq!(End::A.peer(), End::B);
        assert_eq!(layout::max_words(layout::MIN_REGION), 1);
    }

    #[test]
    fn reads_cpu_ids() {
        let fdt = Fdt::new(CHANNELS_DTB).expect("valid");
        let mut ids = [0u64; 2];
        assert_eq!(fdt.cpu_ids(&mut ids), Ok(3));
        assert_eq!(ids, [0, 1]);
        let mut ids = [u64::MAX; 4];
        assert_eq!(fdt.cpu_ids(&mut ids), Ok(3));
        assert_eq!(ids, [0, 1, 0x100, u64::MAX]);
    }
}
