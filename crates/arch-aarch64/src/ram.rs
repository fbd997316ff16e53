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
//!
//! Copies go through [`copy_bytes`], 128 bytes per loop turn (256 through
//! the SIMD registers from 512 bytes on, ADR 0025) whatever the two
//! addresses' alignment: the guest's buffers sit where its driver put
//! them (a virtio-net frame 12 bytes into its buffer), and the target's
//! `strict-align` makes the compiler's `memcpy` assemble every word of a
//! mutually misaligned copy from single bytes (about 23 instructions per 8
//! bytes, against about 1.3 here). EL2 runs with `SCTLR_EL2.A` clear and maps
//! RAM as normal memory, where the architecture allows unaligned `LDP` and
//! `STP`. The same routine is the hypervisor's `memcpy`, and a `memset`
//! beside it works the same way: the compiler's own (`compiler_builtins`,
//! weak symbols these override) move 8 bytes per 4 instructions, and the
//! exit path moves whole virtqueue chains (half a KiB) by value.

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

    /// Host-physical base.
    pub const fn pa(&self) -> u64 {
        self.pa
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

    /// The host address of `[ipa, ipa + len)` if it lies wholly inside.
    pub fn host_address(&self, ipa: u64, len: u64) -> Option<u64> {
        self.host(ipa, len).map(|a| a as u64)
    }

    /// Whether the host range `[pa, pa + len)` lies wholly inside the
    /// carve-out.
    pub fn holds_host(&self, pa: u64, len: u64) -> bool {
        pa.checked_sub(self.pa)
            .and_then(|off| off.checked_add(len))
            .is_some_and(|end| end <= self.size)
    }

    /// Copies `len` bytes from `src`'s host range `[from, from + len)`
    /// (another VM's RAM) to `ipa`; false (nothing copied) unless `src`
    /// holds that range, this carve-out holds `[ipa, ipa + len)` and the
    /// two do not overlap.
    pub fn copy_from_ram(&self, ipa: u64, src: &GuestRam, from: u64, len: u64) -> bool {
        let Some(dst) = self.host(ipa, len) else {
            return false;
        };
        let to = dst as u64;
        if !src.holds_host(from, len) || (to < from + len && from < to + len) {
            return false;
        }
        // SAFETY: both ranges lie in carve-outs, which `new`'s contract
        // makes mapped normal memory, and do not overlap.
        unsafe { copy_bytes(dst as *mut u8, from as *const u8, len as usize) };
        true
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
        unsafe { copy_bytes(buf.as_mut_ptr(), src as *const u8, buf.len()) };
        true
    }

    /// Copies `data` to `ipa`; false (nothing copied) outside the
    /// carve-out.
    pub fn write(&self, ipa: u64, data: &[u8]) -> bool {
        let Some(dst) = self.host(ipa, data.len() as u64) else {
            return false;
        };
        // SAFETY: as in `read`, the other way round.
        unsafe { copy_bytes(dst as *mut u8, data.as_ptr(), data.len()) };
        true
    }

    /// The little-endian `T` at `ipa` (an integer: a ring index, a
    /// descriptor's field), read once: an aligned load when aligned, else
    /// byte by byte; `None` outside the carve-out.
    fn load<T: Copy>(&self, ipa: u64, from_le: fn(T) -> T) -> Option<T> {
        let at = self.host(ipa, size_of::<T>() as u64)?;
        let p = at as *const T;
        // SAFETY: inside the carve-out (see `read`); the aligned read is of
        // a plain integer, the other an unaligned read of the same bytes;
        // a racing guest write can only change the value read.
        let v = unsafe {
            if p.is_aligned() {
                p.read_volatile()
            } else {
                p.read_unaligned()
            }
        };
        Some(from_le(v))
    }

    /// Stores `value` (already little-endian) at `ipa` as [`Self::load`]
    /// reads; false outside the carve-out.
    fn store<T: Copy>(&self, ipa: u64, value: T) -> bool {
        let Some(at) = self.host(ipa, size_of::<T>() as u64) else {
            return false;
        };
        let p = at as *mut T;
        // SAFETY: as in `load`, the other way round.
        unsafe {
            if p.is_aligned() {
                p.write_volatile(value);
            } else {
                p.write_unaligned(value);
            }
        }
        true
    }

    /// The little-endian `u16` at `ipa` ([`Self::load`]).
    pub fn read_u16(&self, ipa: u64) -> Option<u16> {
        self.load(ipa, u16::from_le)
    }

    /// The little-endian `u64` at `ipa` ([`Self::load`]).
    pub fn read_u64(&self, ipa: u64) -> Option<u64> {
        self.load(ipa, u64::from_le)
    }

    /// Writes `value` little-endian at `ipa`; false outside.
    pub fn write_u16(&self, ipa: u64, value: u16) -> bool {
        self.store(ipa, value.to_le())
    }

    /// Writes `value` little-endian at `ipa`; false outside.
    pub fn write_u32(&self, ipa: u64, value: u32) -> bool {
        self.store(ipa, value.to_le())
    }

    /// Writes `value` little-endian at `ipa`; false outside.
    pub fn write_u64(&self, ipa: u64, value: u64) -> bool {
        self.store(ipa, value.to_le())
    }

    /// The little-endian `u32` at `ipa` ([`Self::load`]).
    pub fn read_le_u32(&self, ipa: u64) -> Option<u32> {
        self.load(ipa, u32::from_le)
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

/// Copies `len` bytes from `src` to `dst`, any alignment: 128 bytes per
/// loop turn with unaligned `LDP`/`STP` (256 through `q0`–`q7` from
/// [`SIMD_MIN`] bytes on, when `STRATUM_COPY_SIMD` allows), then 16 at a
/// time, then the last
/// 16 bytes as one (overlapping) pair; under 16 bytes, two overlapping
/// accesses of the largest size that fits (a virtio-net header, 12 bytes,
/// is two 8-byte loads and stores).
///
/// # Safety
/// As `core::ptr::copy_nonoverlapping`: both ranges valid, not
/// overlapping; and both in normal memory (unaligned accesses).
#[inline]
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller's contract; `stratum_copy_bytes` touches
    // `[src, src + len)` and `[dst, dst + len)` only and clobbers only
    // the registers the C ABI lets it (x1–x13, flags).
    unsafe {
        stratum_copy_bytes(dst, src, len)
    };
    #[cfg(not(target_arch = "aarch64"))]
    // SAFETY: the caller's contract.
    unsafe {
        core::ptr::copy_nonoverlapping(src, dst, len)
    };
}

#[cfg(target_arch = "aarch64")]
unsafe extern "C" {
    fn stratum_copy_bytes(dst: *mut u8, src: *const u8, len: usize);
}

/// Whether `stratum_copy_bytes` may move a copy of [`SIMD_MIN`] bytes or
/// more through the FP/SIMD registers (1) or not (0). It borrows `q0`–`q7`
/// and puts back what they held, so it never changes a guest's FP state —
/// unless the CPU has SVE or SME, where writing a `q` register clears the
/// upper bits of the `z` register under it (and streaming mode changes
/// what the instructions do): then it must not, and any CPU with either
/// turns it off ([`simd_copies_unless_sve`]) before it runs a guest. Read
/// by the assembly, by name.
#[unsafe(no_mangle)]
static STRATUM_COPY_SIMD: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(1);

/// Copies of at least this many bytes go through the SIMD registers
/// (when [`STRATUM_COPY_SIMD`] allows): below it, saving and restoring
/// eight of them costs more than the shorter loop saves.
pub const SIMD_MIN: usize = 512;

/// Turns the SIMD copies off for good if this CPU has SVE or SME, or no
/// FP/SIMD at all (`ID_AA64PFR0_EL1` and `ID_AA64PFR1_EL1`); every CPU
/// calls it before it runs a guest.
pub fn simd_copies_unless_sve(pfr0: u64, pfr1: u64) {
    if !simd_copies_allowed(pfr0, pfr1) {
        STRATUM_COPY_SIMD.store(0, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether a CPU of these ID registers may copy through the SIMD
/// registers: FP and AdvSIMD implemented (not `0xF`), no SVE, no SME.
pub fn simd_copies_allowed(pfr0: u64, pfr1: u64) -> bool {
    let fp = (pfr0 >> 16) & 0xf != 0xf;
    let simd = (pfr0 >> 20) & 0xf != 0xf;
    fp && simd && !crate::id::has_sve(pfr0) && !crate::id::has_sme(pfr1)
}

// x0 = dst (kept: the routine is also the hypervisor's `memcpy`, which
// returns it), x1 = src, x2 = len; x13 walks dst, x11/x12 = the ends.
// Lengths of 16 and more: 128 bytes per loop turn, then 16 at a time, then
// the last 16 bytes as one (possibly overlapping) pair. Shorter ones: two
// overlapping 8-, 4- or 2-byte accesses (first and last), or the single
// byte. Lengths of SIMD_MIN (512) and more, when STRATUM_COPY_SIMD is
// set: 256-byte turns, each two 128-byte steps through q0-q7
// (`stratum_copy_128_q`: the addresses moved by post-index; 18
// instructions a turn, where the general registers take 40), then one
// step if 128 bytes are left; q0-q7 are saved on the stack first and
// restored after, with
// CPTR_EL2.TFP cleared meanwhile if it was set (a time-shared CPU traps
// the guests' FP lazily; EL2's own accesses trap with it too); then the
// same tail. `memset` (x0 = dst, kept; w1 = the byte; x2 = len) stores the
// byte replicated in x1 the same way, 64 bytes per loop turn.
#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    r#"
.section .text.stratum_copy_bytes, "ax"
.global stratum_copy_bytes
.global memcpy

// 128 bytes from x1 to x13 through q0-q7, both moved on by the first
// load's and the first store's post-index.
.macro stratum_copy_128_q
    ldp     q0, q1, [x1], #128
    ldp     q2, q3, [x1, #-96]
    ldp     q4, q5, [x1, #-64]
    ldp     q6, q7, [x1, #-32]
    stp     q0, q1, [x13], #128
    stp     q2, q3, [x13, #-96]
    stp     q4, q5, [x13, #-64]
    stp     q6, q7, [x13, #-32]
.endm

.balign 16
stratum_copy_bytes:
memcpy:
    add     x11, x1, x2
    add     x12, x0, x2
    mov     x13, x0
    cmp     x2, #16
    b.lo    4f
    cmp     x2, #512
    b.hs    10f
11: subs    x2, x2, #128
    b.lo    2f
1:  ldp     x3, x4, [x1]
    ldp     x5, x6, [x1, #16]
    ldp     x7, x8, [x1, #32]
    ldp     x9, x10, [x1, #48]
    stp     x3, x4, [x13]
    stp     x5, x6, [x13, #16]
    stp     x7, x8, [x13, #32]
    stp     x9, x10, [x13, #48]
    ldp     x3, x4, [x1, #64]
    ldp     x5, x6, [x1, #80]
    ldp     x7, x8, [x1, #96]
    ldp     x9, x10, [x1, #112]
    stp     x3, x4, [x13, #64]
    stp     x5, x6, [x13, #80]
    stp     x7, x8, [x13, #96]
    stp     x9, x10, [x13, #112]
    add     x1, x1, #128
    add     x13, x13, #128
    subs    x2, x2, #128
    b.hs    1b
2:  adds    x2, x2, #(128 - 16)
    b.lo    3f
5:  ldp     x3, x4, [x1], #16
    stp     x3, x4, [x13], #16
    subs    x2, x2, #16
    b.hs    5b
3:  ldp     x3, x4, [x11, #-16]
    stp     x3, x4, [x12, #-16]
    ret
4:  cmp     x2, #8
    b.lo    6f
    ldr     x3, [x1]
    ldr     x4, [x11, #-8]
    str     x3, [x13]
    str     x4, [x12, #-8]
    ret
6:  cmp     x2, #4
    b.lo    7f
    ldr     w3, [x1]
    ldr     w4, [x11, #-4]
    str     w3, [x13]
    str     w4, [x12, #-4]
    ret
7:  cmp     x2, #2
    b.lo    8f
    ldrh    w3, [x1]
    ldrh    w4, [x11, #-2]
    strh    w3, [x13]
    strh    w4, [x12, #-2]
    ret
8:  cbz     x2, 9f
    ldrb    w3, [x1]
    strb    w3, [x13]
9:  ret
10: adrp    x3, STRATUM_COPY_SIMD
    ldrb    w3, [x3, :lo12:STRATUM_COPY_SIMD]
    cbz     w3, 11b
    .arch_extension fp
    .arch_extension simd
    mrs     x9, cptr_el2
    tbz     x9, #10, 12f
    bic     x10, x9, #(1 << 10)
    msr     cptr_el2, x10
    isb
12: sub     sp, sp, #128
    stp     q0, q1, [sp]
    stp     q2, q3, [sp, #32]
    stp     q4, q5, [sp, #64]
    stp     q6, q7, [sp, #96]
    sub     x2, x2, #256
13: stratum_copy_128_q
    stratum_copy_128_q
    subs    x2, x2, #256
    b.hs    13b
    adds    x2, x2, #128
    b.lo    14f
    stratum_copy_128_q
    sub     x2, x2, #128
14: ldp     q0, q1, [sp]
    ldp     q2, q3, [sp, #32]
    ldp     q4, q5, [sp, #64]
    ldp     q6, q7, [sp, #96]
    add     sp, sp, #128
    tbz     x9, #10, 2b
    msr     cptr_el2, x9
    isb
    b       2b

.section .text.memset, "ax"
.global memset
.balign 16
memset:
    and     x1, x1, #0xff
    orr     x1, x1, x1, lsl #8
    orr     x1, x1, x1, lsl #16
    orr     x1, x1, x1, lsl #32
    add     x12, x0, x2
    mov     x13, x0
    cmp     x2, #16
    b.lo    4f
    subs    x2, x2, #64
    b.lo    2f
1:  stp     x1, x1, [x13]
    stp     x1, x1, [x13, #16]
    stp     x1, x1, [x13, #32]
    stp     x1, x1, [x13, #48]
    add     x13, x13, #64
    subs    x2, x2, #64
    b.hs    1b
2:  adds    x2, x2, #(64 - 16)
    b.lo    3f
5:  stp     x1, x1, [x13], #16
    subs    x2, x2, #16
    b.hs    5b
3:  stp     x1, x1, [x12, #-16]
    ret
4:  cmp     x2, #8
    b.lo    6f
    str     x1, [x13]
    str     x1, [x12, #-8]
    ret
6:  cmp     x2, #4
    b.lo    7f
    str     w1, [x13]
    str     w1, [x12, #-4]
    ret
7:  cmp     x2, #2
    b.lo    8f
    strh    w1, [x13]
    strh    w1, [x12, #-2]
    ret
8:  cbz     x2, 9f
    strb    w1, [x13]
9:  ret
"#
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_copies_need_fp_and_simd_and_neither_sve_nor_sme() {
        // Cortex-A57: FP and AdvSIMD (0), no SVE, no SME.
        let a57 = 0x0000_0000_0000_2222;
        assert!(simd_copies_allowed(a57, 0));
        assert!(!simd_copies_allowed(a57 | 1 << 32, 0), "SVE");
        assert!(!simd_copies_allowed(a57, 1 << 24), "SME");
        assert!(!simd_copies_allowed(a57 | 0xf << 16, 0), "no FP");
        assert!(!simd_copies_allowed(a57 | 0xf << 20, 0), "no AdvSIMD");
        // Half-precision FP (1) is still FP.
        assert!(simd_copies_allowed(a57 | 0x11 << 16, 0));
    }

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
    fn integers_are_little_endian_at_any_alignment_and_inside_only() {
        let (r, _mem) = ram(32);
        assert!(r.write(0x4000_0000, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
        assert_eq!(r.read_u16(0x4000_0000), Some(0x0201));
        assert_eq!(r.read_u16(0x4000_0001), Some(0x0302), "unaligned");
        assert_eq!(r.read_le_u32(0x4000_0002), Some(0x0605_0403));
        assert_eq!(r.read_u64(0x4000_0000), Some(0x0807_0605_0403_0201));
        assert_eq!(r.read_u64(0x4000_0001), Some(0x0908_0706_0504_0302));
        assert!(r.write_u16(0x4000_0011, 0xbeef));
        assert!(r.write_u32(0x4000_0014, 0xdead_beef));
        assert!(r.write_u64(0x4000_0018, 0x0102_0304_0506_0708));
        assert_eq!(r.read_u64(0x4000_0018), Some(0x0102_0304_0506_0708));
        let mut b = [0; 7];
        assert!(r.read(0x4000_0011, &mut b));
        assert_eq!(b, [0xef, 0xbe, 0xaa, 0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(r.read_u16(0x4000_001f), None, "crosses the end");
        assert_eq!(r.read_u64(0x4000_0019), None);
        assert!(!r.write_u32(0x4000_001e, 1));
        assert_eq!(r.read_u16(0x3fff_ffff), None, "below");
        assert_eq!(r.read_u64(u64::MAX - 3), None, "overflows");
    }

    #[test]
    fn a_copy_between_carve_outs_checks_both() {
        let (a, amem) = ram(64);
        let (b, bmem) = ram(64);
        for (i, x) in amem.iter_mut().enumerate() {
            *x = i as u8;
        }
        let from = a.host_address(0x4000_0008, 16).expect("inside");
        assert!(b.copy_from_ram(0x4000_0020, &a, from, 16));
        assert_eq!(bmem[0x20..0x30], amem[8..24]);
        assert_eq!(bmem[0x1f], 0xAA);
        assert!(!b.copy_from_ram(0x4000_0038, &a, from, 16), "past the end");
        assert!(
            !b.copy_from_ram(0x4000_0000, &a, from + 56, 16),
            "past the source"
        );
        assert!(
            !b.copy_from_ram(0x4000_0000, &b, from, 16),
            "not the source's RAM"
        );
        assert!(a.holds_host(from, 56) && !a.holds_host(from, 57));
        assert_eq!(a.host_address(0x4000_0038, 9), None);
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
