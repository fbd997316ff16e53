//! A VM's RAM carve-out as EL2 reaches it: host memory that EL2 maps
//! identity (VA = PA) as normal memory, addressed by the guest's physical
//! addresses. Every access is all or nothing: a range not wholly inside
//! the carve-out (or whose end overflows) is refused and nothing is copied,
//! whatever address and length the guest chose.
//!
//! The guest runs on other CPUs while EL2 copies, so a copy may see a
//! buffer half-written by the guest; that changes the bytes read, never
//! what EL2 may touch. Ordering against the guest's accesses is the
//! caller's, through the `dmb` barriers in [`crate::barrier`].

/// One VM's RAM: `size` bytes at guest-physical `ipa`, backed by host
/// memory at `pa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRam {
    ipa: u64,
    pa: u64,
    size: u64,
}

impl GuestRam {
    /// The carve-out `[pa, pa + size)` seen by its guest at `ipa`.
    ///
    /// # Safety
    /// `[pa, pa + size)` must be memory EL2 maps (identity, normal) for as
    /// long as the value is used, owned by this VM (no other VM's, nor the
    /// hypervisor's own data), and `pa + size` must not overflow.
    pub const unsafe fn new(ipa: u64, pa: u64, size: u64) -> Self {
        Self { ipa, pa, size }
    }

    /// Guest-physical base.
    pub const fn ipa(&self) -> u64 {
        self.ipa
    }

    /// Size in bytes.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// The host address of `[ipa, ipa + len)` if it lies wholly inside.
    fn host(&self, ipa: u64, len: u64) -> Option<usize> {
        let off = ipa.checked_sub(self.ipa)?;
        let end = off.checked_add(len)?;
        (end <= self.size).then(|| (self.pa + off) as usize)
    }

    /// Whether `[ipa, ipa + len)` lies wholly inside (a zero-length range
    /// at the end does).
    pub fn contains(&self, ipa: u64, len: u64) -> bool {
        self.host(ipa, len).is_some()
    }

    /// Copies `buf.len()` bytes at `ipa` into `buf`; false (nothing copied)
    /// outside the carve-out.
    pub fn read(&self, ipa: u64, buf: &mut [u8]) -> bool {
        let Some(src) = self.host(ipa, buf.len() as u64) else {
            return false;
        };
        // SAFETY: the range lies in the carve-out, which `new`'s contract
        // makes mapped memory of this VM's; `buf` is EL2's own and cannot
        // overlap it.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `data` to `ipa`; false (nothing copied) outside the
    /// carve-out.
    pub fn write(&self, ipa: u64, data: &[u8]) -> bool {
        let Some(dst) = self.host(ipa, data.len() as u64) else {
            return false;
        };
        // SAFETY: as in `read`, the other way round.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) };
        true
    }

    /// The aligned 32-bit word at `ipa` (an instruction), read once.
    pub fn read_u32(&self, ipa: u64) -> Option<u32> {
        if !ipa.is_multiple_of(4) {
            return None;
        }
        let at = self.host(ipa, 4)?;
        // SAFETY: aligned, inside the carve-out (see `read`); a racing
        // guest write can only change the value read.
        Some(unsafe { (at as *const u32).read_volatile() })
    }

    /// The aligned 32-bit word at host-physical `pa` inside the carve-out
    /// (an instruction whose guest VA EL2 translated to a physical address),
    /// read once; `None` outside the carve-out or unaligned.
    pub fn read_u32_at_host(&self, pa: u64) -> Option<u32> {
        let off = pa.checked_sub(self.pa)?;
        self.read_u32(self.ipa.checked_add(off)?)
    }

    /// Zeroes the whole carve-out (the VM is not running).
    pub fn zero(&self) {
        // SAFETY: the whole carve-out, per `new`'s contract.
        unsafe { core::ptr::write_bytes(self.pa as *mut u8, 0, self.size as usize) };
    }

    /// Cleans and invalidates the whole carve-out to the point of
    /// coherency (after EL2 wrote an image a guest will run with its
    /// caches off).
    pub fn clean(&self) {
        crate::cache::clean_inval_dcache_range(self.pa as usize, self.size as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram(size: usize) -> (GuestRam, &'static mut [u8]) {
        let mem = Vec::leak(vec![0xAAu8; size]);
        // SAFETY: leaked, so it lives for the test; only this value and
        // the returned slice (used after the value's accesses) touch it.
        let r = unsafe { GuestRam::new(0x4000_0000, mem.as_mut_ptr() as u64, size as u64) };
        (r, mem)
    }

    #[test]
    fn copies_in_and_out_inside_and_refuses_outside() {
        let (r, _mem) = ram(64);
        assert!(r.write(0x4000_0010, b"hello"));
        let mut b = [0; 5];
        assert!(r.read(0x4000_0010, &mut b));
        assert_eq!(&b, b"hello");
        assert!(r.contains(0x4000_0040, 0), "empty range at the end");
        assert!(!r.contains(0x4000_003f, 2));
        assert!(!r.write(0x4000_003c, b"12345"), "crosses the end");
        assert!(!r.read(0x3fff_ffff, &mut b), "starts below");
        assert!(!r.read(u64::MAX - 1, &mut b), "end overflows");
        let mut big = [0; 8];
        assert!(r.read(0x4000_0038, &mut big));
        assert_eq!(big, [0xAA; 8], "the refused write copied nothing");
    }

    #[test]
    fn words_must_be_aligned_and_inside() {
        let (r, _mem) = ram(16);
        assert!(r.write(0x4000_0004, &0xd503_201fu32.to_le_bytes()));
        assert_eq!(r.read_u32(0x4000_0004), Some(0xd503_201f));
        assert_eq!(r.read_u32(0x4000_0006), None);
        assert_eq!(r.read_u32(0x4000_0010), None);
        let host = r.pa + 4;
        assert_eq!(r.read_u32_at_host(host), Some(0xd503_201f));
        assert_eq!(r.read_u32_at_host(r.pa - 4), None, "below the carve-out");
        assert_eq!(r.read_u32_at_host(r.pa + 16), None, "past it");
        r.zero();
        assert_eq!(r.read_u32(0x4000_0004), Some(0));
        assert_eq!((r.ipa(), r.size()), (0x4000_0000, 16));
    }
}
