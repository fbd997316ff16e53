//! Guest memory as the virtqueue code sees it: byte ranges at guest-physical
//! addresses, read and written by copy, never by reference.
//!
//! The hypervisor implements [`GuestMemory`] over a VM's RAM carve-out; the
//! tests and the host tool use [`SliceMemory`] over a byte slice. Every
//! access is all or nothing: a range that is not wholly inside the VM's RAM
//! (or whose end overflows) is refused with [`MemError`] and nothing is
//! copied. Nothing here panics on a guest-chosen address or length.
//!
//! The guest's driver runs on other CPUs while the device reads its rings,
//! so the ring code asks for ordering at the points the virtio spec names
//! (§2.7.13, "Supplying Buffers to The Device", and §2.7.14, "Receiving
//! Used Buffers From The Device") through [`GuestMemory::fence`]; the
//! hypervisor's implementation issues the matching barrier.

use core::cell::Cell;

use stratum_core::addr::Ipa;

/// A guest-physical range the VM's RAM does not wholly contain (or whose
/// end overflows): nothing was read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    /// First address of the refused range.
    pub addr: Ipa,
    /// Its length in bytes.
    pub len: u64,
}

/// The orderings the ring code needs between its accesses to guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// Reads after the fence see what was written before the driver's
    /// index store that the device read before it (`avail.idx`, then the
    /// ring entries and descriptors): a load-load barrier.
    Acquire,
    /// The device's writes before the fence (used elements, written
    /// buffers) are visible before its writes after it (`used.idx`): a
    /// store-store barrier.
    Release,
    /// A store before the fence is visible before a load after it (the
    /// device's `avail_event`/`used.idx` before reading the driver's
    /// `used_event`/`avail.idx` again): a full barrier.
    Full,
}

/// A VM's RAM, read and written by copy at guest-physical addresses.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes at `addr` into `buf`; refuses (copying
    /// nothing) a range not wholly inside RAM.
    fn read(&self, addr: Ipa, buf: &mut [u8]) -> Result<(), MemError>;

    /// Copies `data` to `addr`; refuses (copying nothing) a range not
    /// wholly inside RAM.
    fn write(&mut self, addr: Ipa, data: &[u8]) -> Result<(), MemError>;

    /// Whether `[addr, addr + len)` lies wholly inside RAM (an overflowing
    /// end never does). A zero-length range inside or at the end of RAM
    /// does.
    fn contains(&self, addr: Ipa, len: u64) -> bool;

    /// Orders the accesses before this call with those after it, as
    /// [`Fence`] describes.
    fn fence(&self, order: Fence);

    /// Reads a little-endian `u16` at `addr`. The ring's fields go through
    /// these, one per access; an implementation may serve them without a
    /// copy (the hypervisor's loads them in one instruction).
    fn read_u16(&self, addr: Ipa) -> Result<u16, MemError> {
        let mut b = [0; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian `u32` at `addr` (as [`GuestMemory::read_u16`]).
    fn read_u32(&self, addr: Ipa) -> Result<u32, MemError> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian `u64` at `addr` (as [`GuestMemory::read_u16`]).
    fn read_u64(&self, addr: Ipa) -> Result<u64, MemError> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes `value` little-endian at `addr` (as [`GuestMemory::read_u16`]).
    fn write_u16(&mut self, addr: Ipa, value: u16) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Writes `value` little-endian at `addr` (as [`GuestMemory::read_u16`]).
    fn write_u32(&mut self, addr: Ipa, value: u32) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Writes `value` little-endian at `addr` (as [`GuestMemory::read_u16`]).
    fn write_u64(&mut self, addr: Ipa, value: u64) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// The address at which the hypervisor reaches `[addr, addr + len)`
    /// when RAM wholly holds it, so a peer's [`GuestMemory::copy_from`] may
    /// copy out of it without a buffer; `None` (the default): no such
    /// address. The implementation that uses it checks the claim against
    /// the memory it knows before trusting it.
    fn host_address(&self, addr: Ipa, len: u64) -> Option<u64> {
        let _ = (addr, len);
        None
    }

    /// Copies `len` bytes at `src_addr` of another VM's memory `src` to
    /// `addr` of this one, all or nothing: refused (nothing written) when
    /// either range is not wholly inside its RAM. The default copies
    /// through a stack buffer ([`copy_through_buffer`]); an implementation
    /// may copy directly from `src`'s [`GuestMemory::host_address`] (the
    /// hypervisor's: one copy per frame the switch moves).
    fn copy_from(
        &mut self,
        addr: Ipa,
        src: &dyn GuestMemory,
        src_addr: Ipa,
        len: u64,
    ) -> Result<(), MemError> {
        copy_through_buffer(self, addr, src, src_addr, len)
    }
}

/// [`GuestMemory::copy_from`]'s default: through a 256-byte stack buffer,
/// after checking both ranges whole.
pub fn copy_through_buffer<M: GuestMemory + ?Sized>(
    dst: &mut M,
    addr: Ipa,
    src: &dyn GuestMemory,
    src_addr: Ipa,
    len: u64,
) -> Result<(), MemError> {
    if !src.contains(src_addr, len) {
        return Err(MemError {
            addr: src_addr,
            len,
        });
    }
    if !dst.contains(addr, len) {
        return Err(MemError { addr, len });
    }
    let mut buf = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64);
        let chunk = &mut buf[..n as usize];
        src.read(Ipa(src_addr.0 + done), chunk)?;
        dst.write(Ipa(addr.0 + done), chunk)?;
        done += n;
    }
    Ok(())
}

/// A [`GuestMemory`] over one byte slice that starts at guest-physical
/// `base`: the test fake, also usable wherever a VM's RAM is a plain
/// mapping. It counts the accesses it served and the ones it refused, so
/// tests can bound a walker's work and check that it never used memory
/// outside RAM without noticing.
#[derive(Debug)]
pub struct SliceMemory<'a> {
    base: Ipa,
    bytes: &'a mut [u8],
    accesses: Cell<u64>,
    refused: Cell<u64>,
    fences: Cell<u64>,
}

impl<'a> SliceMemory<'a> {
    /// RAM at `[base, base + bytes.len())`.
    pub fn new(base: Ipa, bytes: &'a mut [u8]) -> Self {
        Self {
            base,
            bytes,
            accesses: Cell::new(0),
            refused: Cell::new(0),
            fences: Cell::new(0),
        }
    }

    /// The first address.
    pub fn base(&self) -> Ipa {
        self.base
    }

    /// The RAM's size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Reads and writes made so far, served or refused.
    pub fn accesses(&self) -> u64 {
        self.accesses.get()
    }

    /// Reads and writes refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Fences asked for so far.
    pub fn fences(&self) -> u64 {
        self.fences.get()
    }

    /// The RAM's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    /// The slice indexes of `[addr, addr + len)`, if RAM holds it.
    fn span(&self, addr: Ipa, len: usize) -> Option<core::ops::Range<usize>> {
        let off = addr.offset_from(self.base)?;
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.bytes.len()).then_some(start..end)
    }

    /// Counts one access; the span, or the refusal.
    fn access(&self, addr: Ipa, len: usize) -> Result<core::ops::Range<usize>, MemError> {
        self.accesses.set(self.accesses.get() + 1);
        self.span(addr, len).ok_or_else(|| {
            self.refused.set(self.refused.get() + 1);
            MemError {
                addr,
                len: len as u64,
            }
        })
    }
}

impl GuestMemory for SliceMemory<'_> {
    fn read(&self, addr: Ipa, buf: &mut [u8]) -> Result<(), MemError> {
        let span = self.access(addr, buf.len())?;
        buf.copy_from_slice(&self.bytes[span]);
        Ok(())
    }

    fn write(&mut self, addr: Ipa, data: &[u8]) -> Result<(), MemError> {
        let span = self.access(addr, data.len())?;
        self.bytes[span].copy_from_slice(data);
        Ok(())
    }

    fn contains(&self, addr: Ipa, len: u64) -> bool {
        usize::try_from(len).is_ok_and(|len| self.span(addr, len).is_some())
    }

    fn fence(&self, _order: Fence) {
        // One thread on the host: program order is the only order.
        self.fences.set(self.fences.get() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_inside_ram_copy_and_outside_are_refused_whole() {
        let mut ram = [0u8; 16];
        let mut mem = SliceMemory::new(Ipa(0x1000), &mut ram);
        mem.write_u32(Ipa(0x100c), 0xdead_beef).expect("inside");
        assert_eq!(mem.read_u32(Ipa(0x100c)), Ok(0xdead_beef));
        assert_eq!(mem.read_u16(Ipa(0x100e)), Ok(0xdead));
        // One byte past the end: refused, nothing written.
        assert_eq!(
            mem.write_u32(Ipa(0x100d), 1),
            Err(MemError {
                addr: Ipa(0x100d),
                len: 4
            })
        );
        assert_eq!(mem.read_u32(Ipa(0x100c)), Ok(0xdead_beef));
        // Below the base, and an end that overflows.
        assert!(mem.read_u16(Ipa(0xfff)).is_err());
        assert!(mem.read_u64(Ipa(u64::MAX - 3)).is_err());
        assert_eq!(mem.refused(), 3);
        assert_eq!(mem.accesses(), 7);
    }

    #[test]
    fn a_copy_between_memories_is_all_or_nothing() {
        let mut a = [0u8; 600];
        for (i, b) in a.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut b = [0xeeu8; 600];
        let src = SliceMemory::new(Ipa(0x1000), &mut a);
        let mut dst = SliceMemory::new(Ipa(0x8000), &mut b);
        // Longer than the bounce buffer, at odd offsets.
        dst.copy_from(Ipa(0x8003), &src, Ipa(0x1005), 590)
            .expect("inside both");
        assert_eq!(dst.bytes()[2], 0xee);
        assert_eq!(dst.bytes()[3], 5);
        assert_eq!(dst.bytes()[592], (594 % 256) as u8);
        assert_eq!(dst.bytes()[593], 0xee);
        let before = dst.bytes().to_vec();
        assert_eq!(
            dst.copy_from(Ipa(0x8000), &src, Ipa(0x1200), 100),
            Err(MemError {
                addr: Ipa(0x1200),
                len: 100
            }),
            "past the source's end"
        );
        assert_eq!(
            dst.copy_from(Ipa(0x8200), &src, Ipa(0x1000), 100),
            Err(MemError {
                addr: Ipa(0x8200),
                len: 100
            }),
            "past the destination's end"
        );
        assert_eq!(dst.bytes(), &before[..], "a refused copy wrote nothing");
        assert_eq!(src.host_address(Ipa(0x1000), 1), None);
    }

    #[test]
    fn contains_is_exact_at_both_ends() {
        let mut ram = [0u8; 16];
        let mem = SliceMemory::new(Ipa(0x1000), &mut ram);
        assert!(mem.contains(Ipa(0x1000), 16));
        assert!(mem.contains(Ipa(0x1010), 0));
        assert!(!mem.contains(Ipa(0x1000), 17));
        assert!(!mem.contains(Ipa(0xfff), 1));
        assert!(!mem.contains(Ipa(0x1008), u64::MAX));
        assert!(!mem.contains(Ipa(u64::MAX), 2));
    }
}
