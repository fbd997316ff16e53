//! ELF → flat binary: concatenate the `PT_LOAD` segments' file bytes from
//! the lowest physical address, zero-filling gaps, without trailing bss.
//!
//! Used for the hypervisor (whose ELF starts with an arm64 `Image` header,
//! so the flat binary *is* an `Image`: [`make_image`]) and for ELF guest
//! kernels, whose placement [`stratum_core::image`] decides.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use object::read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _};
use object::{Endianness, elf};
use stratum_core::image::{self, KernelInfo};

use crate::{Error, ErrorKind, Result};

/// Largest flat binary [`flatten_elf`] produces: segments spread wider than
/// this are almost certainly a link mistake, not a kernel.
pub const MAX_FLAT_SIZE: u64 = 1 << 30;

/// A flattened ELF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatElf {
    /// Physical address of the first byte (lowest `p_paddr` of a non-empty `PT_LOAD`).
    pub base: u64,
    /// The entry point as written in the ELF header (`e_entry`).
    pub entry: u64,
    /// The bytes, from `base` to the last file byte of any segment.
    pub bytes: Vec<u8>,
}

/// Flattens an ELF64 little-endian file's `PT_LOAD` segments (those with a
/// non-zero memory size) into one blob starting at the lowest physical
/// address. Gaps between segments are zero; trailing bss is not included.
pub fn flatten_elf(bytes: &[u8]) -> anyhow::Result<FlatElf> {
    let file = ElfFile64::<Endianness>::parse(bytes).context("not a 64-bit ELF file")?;
    let endian = file.endian();
    ensure!(
        file.elf_header().e_machine(endian) == elf::EM_AARCH64,
        "not an AArch64 ELF file"
    );
    let mut segments = Vec::new();
    for ph in file.elf_program_headers() {
        if ph.p_type(endian) != elf::PT_LOAD || ph.p_memsz(endian) == 0 {
            continue;
        }
        let paddr = ph.p_paddr(endian);
        let data = ph
            .data(endian, bytes)
            .map_err(|()| anyhow::anyhow!("segment at {paddr:#x} lies outside the file"))?;
        ensure!(
            data.len() as u64 <= ph.p_memsz(endian),
            "segment at {paddr:#x} has more file bytes than memory bytes"
        );
        segments.push((paddr, data));
    }
    let Some(base) = segments.iter().map(|&(p, _)| p).min() else {
        bail!("no loadable (PT_LOAD) segment");
    };
    // Segments without file bytes (bss) add nothing to the blob.
    segments.retain(|(_, data)| !data.is_empty());
    let mut end = base;
    for &(paddr, data) in &segments {
        let seg_end = paddr
            .checked_add(data.len() as u64)
            .context("segment wraps around the address space")?;
        end = end.max(seg_end);
    }
    let size = end - base;
    ensure!(
        size <= MAX_FLAT_SIZE,
        "segments span {size:#x} bytes from {base:#x}: too sparse to flatten (limit {MAX_FLAT_SIZE:#x})"
    );
    let size = usize::try_from(size).context("flat image too large")?;
    let mut flat = vec![0u8; size];
    for &(paddr, data) in &segments {
        let at = usize::try_from(paddr - base).context("flat image too large")?;
        flat[at..at + data.len()].copy_from_slice(data);
    }
    Ok(FlatElf {
        base,
        entry: file.elf_header().e_entry(endian),
        bytes: flat,
    })
}

/// `R_AARCH64_RELATIVE`, the one relocation type the EL2 image's entry
/// code applies (ADR 0018).
pub const R_AARCH64_RELATIVE: u32 = 1027;
/// Size of one `Elf64_Rela` entry.
const RELA_SIZE: usize = 24;

/// Checks the dynamic relocations `rela` (the bytes of `.rela.dyn`, 24-byte
/// `Elf64_Rela` entries) of an image whose file bytes span `file` and whose
/// footprint (bss included) spans `image`, at the link address: each must
/// be `R_AARCH64_RELATIVE` with no symbol (all the entry code can apply),
/// patch an aligned 8-byte word of the file (bss is zeroed after the
/// relocation pass), and point into the footprint (its end included: a
/// one-past-the-end pointer). Returns how many there are.
pub fn check_relocations(
    rela: &[u8],
    file: std::ops::Range<u64>,
    image: std::ops::Range<u64>,
) -> std::result::Result<usize, String> {
    if !rela.len().is_multiple_of(RELA_SIZE) {
        return Err(format!(
            ".rela.dyn is {} bytes, not a whole number of 24-byte entries",
            rela.len()
        ));
    }
    for (i, entry) in rela.chunks_exact(RELA_SIZE).enumerate() {
        let word = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
        let (offset, info, addend) = (word(0), word(8), word(16));
        if info != u64::from(R_AARCH64_RELATIVE) {
            return Err(format!(
                "relocation {i} at {offset:#x} has info {info:#x}: the entry code applies only R_AARCH64_RELATIVE ({R_AARCH64_RELATIVE}) without a symbol"
            ));
        }
        if !offset.is_multiple_of(8) || offset < file.start || offset.saturating_add(8) > file.end {
            return Err(format!(
                "relocation {i} patches {offset:#x}, not an aligned word of the image's file bytes [{:#x}, {:#x})",
                file.start, file.end
            ));
        }
        if addend < image.start || addend > image.end {
            return Err(format!(
                "relocation {i} at {offset:#x} points at {addend:#x}, outside the image [{:#x}, {:#x}]",
                image.start, image.end
            ));
        }
    }
    Ok(rela.len() / RELA_SIZE)
}

/// The `.rela.dyn` check of [`check_relocations`] on the ELF `bytes`
/// flattened as `flat`, whose header declares `image_size` (no section:
/// nothing to check).
fn check_elf_relocations(bytes: &[u8], flat: &FlatElf, image_size: u64) -> anyhow::Result<()> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(bytes).context("not an ELF file")?;
    let Some(section) = file.section_by_name(".rela.dyn") else {
        return Ok(());
    };
    let data = section.data().context(".rela.dyn lies outside the file")?;
    let file_range = flat.base..flat.base + flat.bytes.len() as u64;
    let image_range = flat.base..flat.base.saturating_add(image_size);
    check_relocations(data, file_range, image_range).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Converts the ELF at `elf` into an arm64 `Image` at `out`: the flat
/// binary of its loadable segments, which must start with a Linux boot
/// header, with relocations the image can apply to itself (if it has
/// any: [`check_relocations`]). Writes atomically (temporary file +
/// rename).
pub fn make_image(elf: &Path, out: &Path) -> Result<()> {
    let what = || format!("making an Image from {}", elf.display());
    let bytes = fs::read(elf)
        .with_context(|| format!("cannot read {}", elf.display()))
        .map_err(|e| Error::new(ErrorKind::BadInput, e))?;
    let flat =
        flatten_elf(&bytes).map_err(|e| Error::new(ErrorKind::BadInput, e.context(what())))?;
    let has_header = flat.bytes.get(0x38..0x3c) == Some(b"ARM\x64".as_slice());
    match image::inspect(&flat.bytes) {
        Ok(KernelInfo::LinuxImage { .. }) => {
            let image_size = stratum_abi::bytes::le_u64(&flat.bytes, 0x10).unwrap_or(0);
            check_elf_relocations(&bytes, &flat, image_size)
                .map_err(|e| Error::new(ErrorKind::BadInput, e.context(what())))?;
        }
        Err(e) if has_header => return Err(Error::input(format!("{}: {e}", elf.display()))),
        _ => {
            return Err(Error::input(format!(
                "{}: not an arm64 Image: no Linux boot header (magic \"ARM\\x64\" at 0x38) at its lowest load address {:#x}",
                elf.display(),
                flat.base
            )));
        }
    }
    let tmp = out.with_extension("tmp");
    fs::write(&tmp, &flat.bytes)
        .and_then(|()| fs::rename(&tmp, out))
        .with_context(|| format!("cannot write {}", out.display()))
        .map_err(|e| Error::new(ErrorKind::Environment, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ElfBuilder, TestDir, linux_image};

    fn rela(entries: &[(u64, u64, u64)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|&(o, i, a)| [o, i, a])
            .flat_map(u64::to_le_bytes)
            .collect()
    }

    #[test]
    fn relocations_the_entry_code_can_apply() {
        const BASE: u64 = 0x4020_0000;
        let (file, image) = (BASE..BASE + 0x1000, BASE..BASE + 0x20_0000);
        let good = rela(&[
            (BASE + 0x20, 1027, BASE + 0x800),
            (BASE + 0x28, 1027, BASE + 0x20_0000),
        ]);
        assert_eq!(check_relocations(&good, file.clone(), image.clone()), Ok(2));
        assert_eq!(check_relocations(&[], file.clone(), image.clone()), Ok(0));
        for (entries, want) in [
            (vec![(BASE, 1025, BASE)], "only R_AARCH64_RELATIVE"),
            (vec![(BASE, (7 << 32) | 1027, BASE)], "without a symbol"),
            (vec![(BASE + 4, 1027, BASE)], "not an aligned word"),
            (vec![(BASE + 0x1000, 1027, BASE)], "not an aligned word"),
            (vec![(BASE - 8, 1027, BASE)], "not an aligned word"),
            (vec![(BASE, 1027, BASE + 0x20_0001)], "outside the image"),
            (vec![(BASE, 1027, 0x10)], "outside the image"),
        ] {
            let e =
                check_relocations(&rela(&entries), file.clone(), image.clone()).expect_err(want);
            assert!(e.contains(want), "{entries:x?}: {e}");
        }
        let e = check_relocations(&[0; 25], file, image).expect_err("ragged");
        assert!(e.contains("not a whole number"), "{e}");
    }

    #[test]
    fn flattens_with_gaps_and_without_trailing_bss() {
        let elf = ElfBuilder::new(0x4008_0000)
            .segment(0x4008_0000, b"abcd", 0x1000)
            .segment(0x4008_2000, b"xy", 0x10)
            .segment(0x4009_0000, b"", 0x8000) // bss only: not in the blob
            .build();
        let flat = flatten_elf(&elf).expect("flattens");
        assert_eq!(flat.base, 0x4008_0000);
        assert_eq!(flat.entry, 0x4008_0000);
        assert_eq!(flat.bytes.len(), 0x2002);
        assert_eq!(&flat.bytes[..4], b"abcd");
        assert!(flat.bytes[4..0x2000].iter().all(|&b| b == 0));
        assert_eq!(&flat.bytes[0x2000..], b"xy");
        // Agrees with the pure inspector.
        let KernelInfo::Elf(info) = image::inspect(&elf).expect("valid") else {
            panic!("not an ELF");
        };
        assert_eq!(info.base(), flat.base);
        assert_eq!(info.flat_size(), flat.bytes.len() as u64);
    }

    #[test]
    fn rejects_non_elf_and_empty_elf() {
        assert!(flatten_elf(b"not an elf at all").is_err());
        let empty = ElfBuilder::new(0).build();
        let e = flatten_elf(&empty).expect_err("no segments");
        assert!(e.to_string().contains("no loadable"), "{e}");
        let sparse = ElfBuilder::new(0x4000_0000)
            .segment(0x4000_0000, b"a", 1)
            .segment(0x8000_0000, b"b", 1)
            .build();
        let e = flatten_elf(&sparse).expect_err("too sparse");
        assert!(e.to_string().contains("too sparse"), "{e}");
    }

    #[test]
    fn make_image_writes_the_flat_image() {
        let dir = TestDir::new("make-image");
        let header = linux_image(0, 0x10_0000, 0, 0x100);
        let elf = ElfBuilder::new(0x4020_0000)
            .segment(0x4020_0000, &header, 0x100)
            .segment(0x4020_1000, b"data", 0x2000)
            .build();
        let elf_path = dir.write("hyp.elf", &elf);
        let out = dir.path().join("hyp.Image");
        make_image(&elf_path, &out).expect("converts");
        let img = fs::read(&out).expect("written");
        assert_eq!(img.len(), 0x1004);
        assert_eq!(&img[0x38..0x3c], b"ARM\x64");
        assert_eq!(&img[0x1000..], b"data");
    }

    #[test]
    fn make_image_requires_a_boot_header() {
        let dir = TestDir::new("make-image-nohdr");
        let elf = ElfBuilder::new(0x4020_0000)
            .segment(0x4020_0000, &[0u8; 0x100], 0x100)
            .build();
        let elf_path = dir.write("hyp.elf", &elf);
        let e = make_image(&elf_path, &dir.path().join("o")).expect_err("no header");
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert!(e.to_string().contains("not an arm64 Image"), "{e}");
        let e =
            make_image(&dir.path().join("missing"), &dir.path().join("o")).expect_err("missing");
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
