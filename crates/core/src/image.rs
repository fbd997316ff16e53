//! Kernel image inspection: what a guest kernel file is, where it wants to be
//! loaded, and where it starts.
//!
//! Three formats are recognised, in this order:
//!
//! 1. A Linux arm64 `Image`, per the arm64 boot protocol
//!    (`Documentation/arch/arm64/booting.rst`, "Call the kernel image"): a
//!    64-byte header with the magic `"ARM\x64"` at offset 0x38, `text_offset`
//!    at 0x08, `image_size` at 0x10 and `flags` at 0x18. The image is loaded
//!    `text_offset` bytes above a 2 MiB aligned base (the RAM base) and entered
//!    at its first byte. An `image_size` of zero marks a kernel older than
//!    3.17, for which `text_offset` is taken as 0x80000. Debian's PE/COFF
//!    `"MZ"` stub in the first bytes is part of the header and changes nothing.
//! 2. An ELF64 little-endian AArch64 executable (`ET_EXEC`): its `PT_LOAD`
//!    segments, by physical address, and its entry point. The host tool
//!    flattens the segments into one blob; [`place_elf`] says where it goes.
//! 3. Anything else is a raw binary, loaded at RAM + 0x80000 and entered there,
//!    as QEMU does for a raw `-kernel`.
//!
//! Everything here is a pure function of the bytes: no allocation, no panics
//! on any input (a property test feeds it random bytes).

use core::ops::Range;
use stratum_abi::bytes::{le_u16, le_u32, le_u64};

/// Where raw binaries (and header-less old `Image`s) are loaded, from the RAM base.
pub const RAW_LOAD_OFFSET: u64 = 0x8_0000;
/// Most `PT_LOAD` segments an ELF kernel may have.
pub const MAX_SEGMENTS: usize = 16;

/// Offset of the arm64 `Image` magic.
const IMAGE_MAGIC_OFFSET: usize = 0x38;
/// The arm64 `Image` magic, `"ARM\x64"`.
const IMAGE_MAGIC: [u8; 4] = *b"ARM\x64";
/// Size of the arm64 `Image` header.
const IMAGE_HEADER_SIZE: usize = 0x40;
/// `flags` bit 0: kernel endianness, 1 = big-endian.
const IMAGE_FLAG_BE: u64 = 1 << 0;

/// Size of an ELF64 file header.
const ELF64_EHDR_SIZE: usize = 64;
/// Size of an ELF64 program header.
const ELF64_PHDR_SIZE: usize = 56;
/// `e_ident[EI_CLASS]` for 64-bit objects.
const ELFCLASS64: u8 = 2;
/// `e_ident[EI_DATA]` for little-endian objects.
const ELFDATA2LSB: u8 = 1;
/// `e_type` of an executable.
const ET_EXEC: u16 = 2;
/// `e_machine` of AArch64.
const EM_AARCH64: u16 = 183;
/// `p_type` of a loadable segment.
const PT_LOAD: u32 = 1;

/// Why a kernel image was rejected. The variant docs are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The kernel file is empty.
    Empty,
    /// The arm64 Image header says the kernel is big-endian; Stratum runs little-endian guests only.
    BigEndianImage,
    /// The ELF file is big-endian; only little-endian AArch64 ELF files are supported.
    ElfBigEndian,
    /// The ELF file is not for AArch64 (e_machine is not EM_AARCH64).
    ElfNotAArch64,
    /// The ELF file is not a 64-bit ELF (ELFCLASS64).
    ElfNot64Bit,
    /// The ELF file is not an executable (ET_EXEC); link it statically, not as a relocatable or shared object.
    ElfNotExecutable,
    /// The ELF file is shorter than its headers say.
    ElfTruncated,
    /// The ELF file has no loadable (PT_LOAD) segment with a non-zero size.
    NoLoadableSegments,
    /// An ELF segment's file bytes lie outside the file, or it has more file bytes than memory bytes.
    SegmentOutOfFile,
    /// An ELF segment wraps around the end of the address space.
    SegmentWraps,
    /// The ELF file has more loadable segments than Stratum supports (16).
    TooManySegments,
    /// Two loadable ELF segments overlap in physical memory.
    SegmentsOverlap,
    /// The ELF entry point is not inside any loadable segment.
    EntryOutsideSegments,
    /// The kernel does not fit in the VM's RAM at the address it must be loaded at.
    OutsideRam,
}

impl ImageError {
    /// The human-readable message (the variant's documentation).
    pub const fn message(self) -> &'static str {
        match self {
            Self::Empty => "the kernel file is empty",
            Self::BigEndianImage => {
                "the arm64 Image header says the kernel is big-endian; Stratum runs little-endian guests only"
            }
            Self::ElfBigEndian => {
                "the ELF file is big-endian; only little-endian AArch64 ELF files are supported"
            }
            Self::ElfNotAArch64 => "the ELF file is not for AArch64 (e_machine is not EM_AARCH64)",
            Self::ElfNot64Bit => "the ELF file is not a 64-bit ELF (ELFCLASS64)",
            Self::ElfNotExecutable => {
                "the ELF file is not an executable (ET_EXEC); link it statically, not as a relocatable or shared object"
            }
            Self::ElfTruncated => "the ELF file is shorter than its headers say",
            Self::NoLoadableSegments => {
                "the ELF file has no loadable (PT_LOAD) segment with a non-zero size"
            }
            Self::SegmentOutOfFile => {
                "an ELF segment's file bytes lie outside the file, or it has more file bytes than memory bytes"
            }
            Self::SegmentWraps => "an ELF segment wraps around the end of the address space",
            Self::TooManySegments => {
                "the ELF file has more loadable segments than Stratum supports (16)"
            }
            Self::SegmentsOverlap => "two loadable ELF segments overlap in physical memory",
            Self::EntryOutsideSegments => "the ELF entry point is not inside any loadable segment",
            Self::OutsideRam => {
                "the kernel does not fit in the VM's RAM at the address it must be loaded at"
            }
        }
    }
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

/// One loadable ELF segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Physical (load) address, `p_paddr`.
    pub paddr: u64,
    /// Virtual address, `p_vaddr`.
    pub vaddr: u64,
    /// Offset of the segment's bytes in the file, `p_offset`.
    pub file_offset: u64,
    /// Number of bytes in the file, `p_filesz` (at most `mem_size`).
    pub file_size: u64,
    /// Number of bytes in memory, `p_memsz`; the rest past `file_size` is zeroed (bss).
    pub mem_size: u64,
}

impl Segment {
    /// The physical range the segment occupies in memory.
    /// Cannot overflow: [`inspect`] rejects wrapping segments.
    pub const fn phys_range(&self) -> Range<u64> {
        self.paddr..self.paddr + self.mem_size
    }

    /// The byte range of the segment's contents in the file.
    /// Cannot overflow: [`inspect`] rejects segments outside the file.
    pub const fn file_range(&self) -> Range<u64> {
        self.file_offset..self.file_offset + self.file_size
    }
}

/// What an ELF kernel asks for: its loadable segments (sorted by physical
/// address, empty ones dropped) and its entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
    /// The entry point, translated to a physical address through the segment
    /// that holds `e_entry`.
    pub entry: u64,
}

impl ElfInfo {
    /// The loadable segments, sorted by physical address, non-overlapping,
    /// each with a non-zero memory size. Never empty.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }

    /// Lowest physical address of any segment: where the flattened blob starts.
    pub fn base(&self) -> u64 {
        self.segments[0].paddr
    }

    /// End (exclusive) of the highest segment in memory, bss included.
    pub fn mem_end(&self) -> u64 {
        self.segments()
            .iter()
            .map(|s| s.phys_range().end)
            .max()
            .unwrap_or(0)
    }

    /// Length of the flattened blob: from [`ElfInfo::base`] to the end of the
    /// last file byte of any segment (trailing bss, including segments
    /// without file bytes, is not included).
    pub fn flat_size(&self) -> u64 {
        self.segments()
            .iter()
            .filter(|s| s.file_size != 0)
            .map(|s| s.paddr + s.file_size - self.base())
            .max()
            .unwrap_or(0)
    }

    /// Bytes from [`ElfInfo::base`] that the kernel owns: image plus bss.
    pub fn footprint(&self) -> u64 {
        self.mem_end() - self.base()
    }
}

/// What a kernel file is, and what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "no allocator in this crate: the segment table lives inline, and a KernelInfo is short-lived"
)]
pub enum KernelInfo {
    /// A Linux arm64 `Image`.
    LinuxImage {
        /// `text_offset` from the header (0x80000 when `image_size` is zero).
        text_offset: u64,
        /// `image_size` from the header (0 for kernels older than 3.17).
        image_size: u64,
        /// `flags` from the header.
        flags: u64,
        /// Load (and entry) offset from the RAM base.
        load_offset: u64,
        /// Bytes from the load offset the kernel owns: `max(image_size, file length)`.
        footprint: u64,
    },
    /// An AArch64 ELF executable, to be flattened by the host.
    Elf(ElfInfo),
    /// A raw binary, loaded and entered at RAM + [`RAW_LOAD_OFFSET`].
    Raw {
        /// The file's length, which is also its footprint.
        len: u64,
    },
}

/// Where a kernel goes in a VM's RAM, as offsets from the RAM base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Offset of the first byte of the (flattened) kernel from the RAM base.
    pub load_offset: u64,
    /// Offset of the entry point from the RAM base.
    pub entry_offset: u64,
    /// Bytes from the load offset that the kernel owns (image plus bss).
    pub footprint: u64,
}

impl Placement {
    /// Offset from the RAM base of the first byte past the kernel's footprint.
    pub const fn end_offset(&self) -> u64 {
        self.load_offset + self.footprint
    }
}

impl KernelInfo {
    /// Places the kernel in RAM `[ram_base, ram_base + ram_size)`: an `Image`
    /// at `text_offset`, a raw binary at [`RAW_LOAD_OFFSET`], an ELF at its
    /// physical addresses (see [`place_elf`]). Fails with
    /// [`ImageError::OutsideRam`] if any part of the footprint is outside RAM.
    pub fn place(&self, ram_base: u64, ram_size: u64) -> Result<Placement, ImageError> {
        let (load_offset, footprint) = match *self {
            Self::LinuxImage {
                load_offset,
                footprint,
                ..
            } => (load_offset, footprint),
            Self::Raw { len } => (RAW_LOAD_OFFSET, len),
            Self::Elf(ref elf) => return place_elf(elf, ram_base, ram_size),
        };
        ram_base
            .checked_add(ram_size)
            .ok_or(ImageError::OutsideRam)?;
        let end = load_offset
            .checked_add(footprint)
            .ok_or(ImageError::OutsideRam)?;
        if end > ram_size {
            return Err(ImageError::OutsideRam);
        }
        Ok(Placement {
            load_offset,
            entry_offset: load_offset,
            footprint,
        })
    }
}

/// Checks that every segment of `info` lies inside RAM
/// `[ram_base, ram_base + ram_size)` and returns the placement of the
/// flattened blob: it is loaded at the lowest segment address.
pub fn place_elf(info: &ElfInfo, ram_base: u64, ram_size: u64) -> Result<Placement, ImageError> {
    let ram_end = ram_base
        .checked_add(ram_size)
        .ok_or(ImageError::OutsideRam)?;
    for s in info.segments() {
        let r = s.phys_range();
        if r.start < ram_base || r.end > ram_end {
            return Err(ImageError::OutsideRam);
        }
    }
    Ok(Placement {
        load_offset: info.base() - ram_base,
        entry_offset: info.entry - ram_base,
        footprint: info.footprint(),
    })
}

/// Identifies a kernel image and reads what it needs. See the module docs.
pub fn inspect(bytes: &[u8]) -> Result<KernelInfo, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.starts_with(b"\x7fELF") {
        return inspect_elf(bytes).map(KernelInfo::Elf);
    }
    if bytes.len() >= IMAGE_HEADER_SIZE
        && bytes[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4] == IMAGE_MAGIC
    {
        return inspect_linux_image(bytes);
    }
    Ok(KernelInfo::Raw {
        len: bytes.len() as u64,
    })
}

fn inspect_linux_image(bytes: &[u8]) -> Result<KernelInfo, ImageError> {
    // The caller checked the header is present, so these reads succeed.
    let text_offset = le_u64(bytes, 0x08).ok_or(ImageError::Empty)?;
    let image_size = le_u64(bytes, 0x10).ok_or(ImageError::Empty)?;
    let flags = le_u64(bytes, 0x18).ok_or(ImageError::Empty)?;
    let len = bytes.len() as u64;
    if image_size == 0 {
        // Pre-3.17 kernel: no flags, text_offset may be garbage; both are
        // defined by the boot protocol's defaults.
        return Ok(KernelInfo::LinuxImage {
            text_offset: RAW_LOAD_OFFSET,
            image_size,
            flags,
            load_offset: RAW_LOAD_OFFSET,
            footprint: len,
        });
    }
    if flags & IMAGE_FLAG_BE != 0 {
        return Err(ImageError::BigEndianImage);
    }
    Ok(KernelInfo::LinuxImage {
        text_offset,
        image_size,
        flags,
        load_offset: text_offset,
        footprint: image_size.max(len),
    })
}

fn inspect_elf(bytes: &[u8]) -> Result<ElfInfo, ImageError> {
    if bytes.len() < 6 {
        return Err(ImageError::ElfTruncated);
    }
    if bytes[4] != ELFCLASS64 {
        return Err(ImageError::ElfNot64Bit);
    }
    if bytes[5] != ELFDATA2LSB {
        return Err(ImageError::ElfBigEndian);
    }
    if bytes.len() < ELF64_EHDR_SIZE {
        return Err(ImageError::ElfTruncated);
    }
    let t = ImageError::ElfTruncated;
    let e_type = le_u16(bytes, 16).ok_or(t)?;
    let e_machine = le_u16(bytes, 18).ok_or(t)?;
    if e_machine != EM_AARCH64 {
        return Err(ImageError::ElfNotAArch64);
    }
    if e_type != ET_EXEC {
        return Err(ImageError::ElfNotExecutable);
    }
    let e_entry = le_u64(bytes, 24).ok_or(t)?;
    let e_phoff = le_u64(bytes, 32).ok_or(t)?;
    let e_phentsize = le_u16(bytes, 54).ok_or(t)?;
    let e_phnum = le_u16(bytes, 56).ok_or(t)?;
    if e_phnum > 0 && usize::from(e_phentsize) < ELF64_PHDR_SIZE {
        return Err(ImageError::ElfTruncated);
    }

    let mut segments = [Segment::default(); MAX_SEGMENTS];
    let mut count = 0;
    let file_len = bytes.len() as u64;
    for i in 0..u64::from(e_phnum) {
        let at = i
            .checked_mul(u64::from(e_phentsize))
            .and_then(|o| o.checked_add(e_phoff))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(t)?;
        let phdr = at
            .checked_add(ELF64_PHDR_SIZE)
            .and_then(|end| bytes.get(at..end))
            .ok_or(t)?;
        if le_u32(phdr, 0).ok_or(t)? != PT_LOAD {
            continue;
        }
        let seg = Segment {
            file_offset: le_u64(phdr, 8).ok_or(t)?,
            vaddr: le_u64(phdr, 16).ok_or(t)?,
            paddr: le_u64(phdr, 24).ok_or(t)?,
            file_size: le_u64(phdr, 32).ok_or(t)?,
            mem_size: le_u64(phdr, 40).ok_or(t)?,
        };
        if seg.file_size > seg.mem_size
            || seg
                .file_offset
                .checked_add(seg.file_size)
                .is_none_or(|end| end > file_len)
        {
            return Err(ImageError::SegmentOutOfFile);
        }
        if seg.paddr.checked_add(seg.mem_size).is_none()
            || seg.vaddr.checked_add(seg.mem_size).is_none()
        {
            return Err(ImageError::SegmentWraps);
        }
        if seg.mem_size == 0 {
            continue;
        }
        let slot = segments.get_mut(count).ok_or(ImageError::TooManySegments)?;
        *slot = seg;
        count += 1;
    }
    if count == 0 {
        return Err(ImageError::NoLoadableSegments);
    }
    let loaded = &mut segments[..count];
    loaded.sort_unstable_by_key(|s| s.paddr);
    if loaded
        .windows(2)
        .any(|w| w[0].phys_range().end > w[1].paddr)
    {
        return Err(ImageError::SegmentsOverlap);
    }
    let entry = loaded
        .iter()
        .find(|s| e_entry >= s.vaddr && e_entry - s.vaddr < s.mem_size)
        .map(|s| s.paddr + (e_entry - s.vaddr))
        .ok_or(ImageError::EntryOutsideSegments)?;
    Ok(ElfInfo {
        segments,
        count,
        entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RAM: u64 = 0x4000_0000;
    const MIB: u64 = 1 << 20;

    fn linux_image(text_offset: u64, image_size: u64, flags: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[0..2].copy_from_slice(b"MZ"); // Debian's PE/COFF stub
        b[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        b[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
        b[0x38..0x3c].copy_from_slice(b"ARM\x64");
        b
    }

    /// (p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz)
    type Phdr = (u32, u64, u64, u64, u64, u64);

    /// Builds an ELF64 with the given program headers; the file is
    /// `file_len` bytes (headers first, then filler).
    fn elf(e_type: u16, machine: u16, entry: u64, phdrs: &[Phdr], file_len: usize) -> Vec<u8> {
        let phoff = 64usize;
        let len = file_len.max(phoff + phdrs.len() * 56);
        let mut b = vec![0xEEu8; len];
        b[..64].fill(0);
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = ELFCLASS64;
        b[5] = ELFDATA2LSB;
        b[6] = 1;
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, &(ty, off, va, pa, fsz, msz)) in phdrs.iter().enumerate() {
            let p = &mut b[phoff + i * 56..phoff + (i + 1) * 56];
            p.fill(0);
            p[0..4].copy_from_slice(&ty.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&va.to_le_bytes());
            p[24..32].copy_from_slice(&pa.to_le_bytes());
            p[32..40].copy_from_slice(&fsz.to_le_bytes());
            p[40..48].copy_from_slice(&msz.to_le_bytes());
        }
        b
    }

    fn good_elf() -> Vec<u8> {
        let base = RAM + 0x8_0000;
        elf(
            ET_EXEC,
            EM_AARCH64,
            base,
            &[
                // Listed out of order on purpose: inspect sorts by paddr.
                (PT_LOAD, 0x2000, base + 0x2000, base + 0x2000, 0x100, 0x3000),
                (6, 0, 0, 0, 0, 0), // PT_PHDR: ignored
                (PT_LOAD, 0x1000, base, base, 0x800, 0x1000),
                (PT_LOAD, 0, base + 0x9000, base + 0x9000, 0, 0), // empty: dropped
            ],
            0x3000,
        )
    }

    #[test]
    fn empty_is_rejected() {
        assert_eq!(inspect(&[]), Err(ImageError::Empty));
    }

    #[test]
    fn linux_image_header_is_honoured() {
        let img = linux_image(0x20_0000, 0x300_0000, 0b1010, 0x1000);
        let info = inspect(&img).expect("valid image");
        assert_eq!(
            info,
            KernelInfo::LinuxImage {
                text_offset: 0x20_0000,
                image_size: 0x300_0000,
                flags: 0b1010,
                load_offset: 0x20_0000,
                footprint: 0x300_0000,
            }
        );
        let p = info.place(RAM, 128 * MIB).expect("fits");
        assert_eq!(
            p,
            Placement {
                load_offset: 0x20_0000,
                entry_offset: 0x20_0000,
                footprint: 0x300_0000
            }
        );
        assert_eq!(p.end_offset(), 0x320_0000);
        // Image larger than RAM allows.
        assert_eq!(info.place(RAM, 32 * MIB), Err(ImageError::OutsideRam));
        assert_eq!(info.place(RAM, 0x320_0000), Ok(p));
    }

    #[test]
    fn linux_image_footprint_covers_file() {
        let img = linux_image(0, 0x100, 0, 0x2000);
        let KernelInfo::LinuxImage { footprint, .. } = inspect(&img).expect("valid") else {
            panic!("not an Image");
        };
        assert_eq!(footprint, 0x2000);
    }

    #[test]
    fn old_linux_image_defaults() {
        let img = linux_image(0xdead_beef, 0, 1, 0x1234);
        let info = inspect(&img).expect("valid old image");
        let p = info.place(RAM, 2 * MIB).expect("fits");
        assert_eq!(p.load_offset, 0x8_0000);
        assert_eq!(p.entry_offset, 0x8_0000);
        assert_eq!(p.footprint, 0x1234);
    }

    #[test]
    fn big_endian_image_is_rejected() {
        let img = linux_image(0, 0x1000, 1, 0x1000);
        assert_eq!(inspect(&img), Err(ImageError::BigEndianImage));
    }

    #[test]
    fn short_or_magicless_files_are_raw() {
        for bytes in [&b"hello"[..], &[0u8; 0x40][..], &[0x14u8; 4096][..]] {
            let info = inspect(bytes).expect("raw");
            assert_eq!(
                info,
                KernelInfo::Raw {
                    len: bytes.len() as u64
                }
            );
            let p = info.place(RAM, 2 * MIB).expect("fits");
            assert_eq!(p.load_offset, RAW_LOAD_OFFSET);
            assert_eq!(p.entry_offset, RAW_LOAD_OFFSET);
            assert_eq!(p.footprint, bytes.len() as u64);
        }
        let big = KernelInfo::Raw { len: 2 * MIB };
        assert_eq!(big.place(RAM, 2 * MIB), Err(ImageError::OutsideRam));
        assert_eq!(
            KernelInfo::Raw { len: 1 }.place(u64::MAX, 2 * MIB),
            Err(ImageError::OutsideRam)
        );
    }

    #[test]
    fn elf_segments_sorted_and_flattened_sizes() {
        let info = match inspect(&good_elf()).expect("valid ELF") {
            KernelInfo::Elf(e) => e,
            other => panic!("not an ELF: {other:?}"),
        };
        let base = RAM + 0x8_0000;
        assert_eq!(info.segments().len(), 2);
        assert_eq!(info.segments()[0].paddr, base);
        assert_eq!(info.segments()[0].file_range(), 0x1000..0x1800);
        assert_eq!(
            info.segments()[1].phys_range(),
            base + 0x2000..base + 0x5000
        );
        assert_eq!(info.base(), base);
        assert_eq!(info.entry, base);
        assert_eq!(info.flat_size(), 0x2100);
        assert_eq!(info.mem_end(), base + 0x5000);
        assert_eq!(info.footprint(), 0x5000);
        let p = place_elf(&info, RAM, 2 * MIB).expect("fits");
        assert_eq!(
            p,
            Placement {
                load_offset: 0x8_0000,
                entry_offset: 0x8_0000,
                footprint: 0x5000
            }
        );
        assert_eq!(KernelInfo::Elf(info).place(RAM, 2 * MIB), Ok(p));
    }

    #[test]
    fn bss_only_segments_are_not_flattened() {
        let base = RAM + 0x8_0000;
        let b = elf(
            ET_EXEC,
            EM_AARCH64,
            base,
            &[
                (PT_LOAD, 0x100, base, base, 0x10, 0x10),
                (PT_LOAD, 0, base + 0x1000, base + 0x1000, 0, 0x8000),
            ],
            0x200,
        );
        let KernelInfo::Elf(info) = inspect(&b).expect("valid") else {
            panic!("not an ELF");
        };
        assert_eq!(info.flat_size(), 0x10);
        assert_eq!(info.footprint(), 0x9000);
        // Only bss: nothing to copy.
        let b = elf(
            ET_EXEC,
            EM_AARCH64,
            base,
            &[(PT_LOAD, 0, base, base, 0, 0x1000)],
            0x200,
        );
        let KernelInfo::Elf(info) = inspect(&b).expect("valid") else {
            panic!("not an ELF");
        };
        assert_eq!(info.flat_size(), 0);
    }

    #[test]
    fn elf_outside_ram() {
        let KernelInfo::Elf(info) = inspect(&good_elf()).expect("valid") else {
            panic!("not an ELF");
        };
        // Segment end exactly at RAM end is fine; one byte less is not.
        assert!(place_elf(&info, RAM, 0x8_5000).is_ok());
        assert_eq!(place_elf(&info, RAM, 0x8_4fff), Err(ImageError::OutsideRam));
        // RAM starting above the first segment.
        assert_eq!(
            place_elf(&info, RAM + 0x20_0000, 2 * MIB),
            Err(ImageError::OutsideRam)
        );
        assert_eq!(
            place_elf(&info, u64::MAX - 10, 20),
            Err(ImageError::OutsideRam)
        );
    }

    #[test]
    fn elf_entry_is_translated_from_virtual() {
        // Linked high (vaddr), loaded low (paddr).
        let va = 0xffff_0000_0000_0000;
        let b = elf(
            ET_EXEC,
            EM_AARCH64,
            va + 0x10,
            &[(PT_LOAD, 0x100, va, RAM, 0x100, 0x100)],
            0x200,
        );
        let KernelInfo::Elf(info) = inspect(&b).expect("valid") else {
            panic!("not an ELF");
        };
        assert_eq!(info.entry, RAM + 0x10);
        assert_eq!(
            place_elf(&info, RAM, 2 * MIB).map(|p| p.entry_offset),
            Ok(0x10)
        );
    }

    #[test]
    fn elf_header_errors() {
        let base = RAM;
        let one = [(PT_LOAD, 0x100, base, base, 0x10, 0x10)];
        let cases: &[(Vec<u8>, ImageError)] = &[
            (
                elf(1, EM_AARCH64, base, &one, 0x200),
                ImageError::ElfNotExecutable,
            ),
            (
                elf(3, EM_AARCH64, base, &one, 0x200),
                ImageError::ElfNotExecutable,
            ),
            (
                elf(ET_EXEC, 62, base, &one, 0x200),
                ImageError::ElfNotAArch64,
            ),
            (
                elf(ET_EXEC, EM_AARCH64, base, &[], 0x200),
                ImageError::NoLoadableSegments,
            ),
            (b"\x7fELF".to_vec(), ImageError::ElfTruncated),
            (b"\x7fELF\x02\x01\x01".to_vec(), ImageError::ElfTruncated),
        ];
        for (bytes, want) in cases {
            assert_eq!(inspect(bytes).map(|_| ()), Err(*want));
        }
        let mut b = elf(ET_EXEC, EM_AARCH64, base, &one, 0x200);
        b[4] = 1;
        assert_eq!(inspect(&b), Err(ImageError::ElfNot64Bit));
        let mut b = elf(ET_EXEC, EM_AARCH64, base, &one, 0x200);
        b[5] = 2;
        assert_eq!(inspect(&b), Err(ImageError::ElfBigEndian));
        // Program headers past the end of the file.
        let mut b = elf(ET_EXEC, EM_AARCH64, base, &one, 0x200);
        b[32..40].copy_from_slice(&0x1f0u64.to_le_bytes());
        assert_eq!(inspect(&b), Err(ImageError::ElfTruncated));
        let mut b = elf(ET_EXEC, EM_AARCH64, base, &one, 0x200);
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(inspect(&b), Err(ImageError::ElfTruncated));
        // Program header entries too small.
        let mut b = elf(ET_EXEC, EM_AARCH64, base, &one, 0x200);
        b[54..56].copy_from_slice(&32u16.to_le_bytes());
        assert_eq!(inspect(&b), Err(ImageError::ElfTruncated));
    }

    #[test]
    fn elf_segment_errors() {
        let b = RAM;
        let cases: &[(&[Phdr], u64, ImageError)] = &[
            (
                &[(PT_LOAD, 0x100, b, b, 0x200, 0x200)],
                b,
                ImageError::SegmentOutOfFile,
            ),
            (
                &[(PT_LOAD, u64::MAX, b, b, 2, 2)],
                b,
                ImageError::SegmentOutOfFile,
            ),
            (
                &[(PT_LOAD, 0x100, b, b, 0x20, 0x10)],
                b,
                ImageError::SegmentOutOfFile,
            ),
            (
                &[(PT_LOAD, 0x100, b, u64::MAX - 4, 0x10, 0x10)],
                b,
                ImageError::SegmentWraps,
            ),
            (
                &[(PT_LOAD, 0x100, u64::MAX - 4, b, 0x10, 0x10)],
                b,
                ImageError::SegmentWraps,
            ),
            (
                &[
                    (PT_LOAD, 0x100, b, b, 0x10, 0x1000),
                    (PT_LOAD, 0x110, b + 0xfff, b + 0xfff, 0x10, 0x10),
                ],
                b,
                ImageError::SegmentsOverlap,
            ),
            (
                &[(PT_LOAD, 0x100, b, b, 0x10, 0x10)],
                b + 0x10,
                ImageError::EntryOutsideSegments,
            ),
            (
                &[(PT_LOAD, 0x100, b, b, 0x10, 0x10)],
                b - 1,
                ImageError::EntryOutsideSegments,
            ),
        ];
        for (i, (phdrs, entry, want)) in cases.iter().enumerate() {
            let bytes = elf(ET_EXEC, EM_AARCH64, *entry, phdrs, 0x200);
            assert_eq!(inspect(&bytes).map(|_| ()), Err(*want), "case {i}");
        }
        // Adjacent (touching) segments are fine; entry in bss is fine.
        let ok = elf(
            ET_EXEC,
            EM_AARCH64,
            b + 0x1800,
            &[
                (PT_LOAD, 0x100, b, b, 0x10, 0x1000),
                (PT_LOAD, 0x110, b + 0x1000, b + 0x1000, 0x10, 0x1000),
            ],
            0x200,
        );
        assert!(inspect(&ok).is_ok());
    }

    #[test]
    fn segment_limit() {
        let seg = |i: u64| {
            (
                PT_LOAD,
                0x1000,
                RAM + i * 0x1000,
                RAM + i * 0x1000,
                0x10,
                0x10,
            )
        };
        let sixteen: Vec<Phdr> = (0..16).map(seg).collect();
        let seventeen: Vec<Phdr> = (0..17).map(seg).collect();
        assert!(inspect(&elf(ET_EXEC, EM_AARCH64, RAM, &sixteen, 0x2000)).is_ok());
        assert_eq!(
            inspect(&elf(ET_EXEC, EM_AARCH64, RAM, &seventeen, 0x2000)),
            Err(ImageError::TooManySegments)
        );
    }

    #[test]
    fn messages_are_sentences() {
        let all = [
            ImageError::Empty,
            ImageError::BigEndianImage,
            ImageError::ElfBigEndian,
            ImageError::ElfNotAArch64,
            ImageError::ElfNot64Bit,
            ImageError::ElfNotExecutable,
            ImageError::ElfTruncated,
            ImageError::NoLoadableSegments,
            ImageError::SegmentOutOfFile,
            ImageError::SegmentWraps,
            ImageError::TooManySegments,
            ImageError::SegmentsOverlap,
            ImageError::EntryOutsideSegments,
            ImageError::OutsideRam,
        ];
        for e in all {
            let m = format!("{e}");
            assert!(m.starts_with("the ") || m.starts_with("an ") || m.starts_with("two "));
        }
    }

    proptest! {
        #[test]
        fn inspect_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(info) = inspect(&bytes) {
                let _ = info.place(RAM, 128 * MIB);
            }
        }

        #[test]
        fn inspect_never_panics_on_mutated_elf(
            edits in proptest::collection::vec((0usize..0x200, any::<u8>()), 0..16),
            ram_base in any::<u64>(),
            ram_size in any::<u64>(),
        ) {
            let mut bytes = good_elf();
            bytes.resize(0x3000, 0);
            for (at, v) in edits {
                bytes[at] = v;
            }
            if let Ok(KernelInfo::Elf(info)) = inspect(&bytes) {
                prop_assert!(info.flat_size() <= info.footprint());
                if let Ok(p) = place_elf(&info, ram_base, ram_size) {
                    prop_assert!(p.entry_offset >= p.load_offset);
                    prop_assert!(p.entry_offset < p.end_offset());
                    prop_assert!(p.end_offset() <= ram_size);
                }
            }
        }

        #[test]
        fn inspect_never_panics_on_mutated_image(
            edits in proptest::collection::vec((0usize..0x40, any::<u8>()), 0..16),
        ) {
            let mut bytes = linux_image(0x8_0000, 0x1000, 0, 0x200);
            for (at, v) in edits {
                bytes[at] = v;
            }
            if let Ok(info) = inspect(&bytes) {
                let _ = info.place(RAM, 128 * MIB);
            }
        }
    }
}
