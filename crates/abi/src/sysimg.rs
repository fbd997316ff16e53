//! The system image: one arm64 `Image` file that holds the hypervisor and
//! its boot bundle, so a loader that knows only the Linux boot protocol
//! (QEMU's `-kernel`, U-Boot's `booti`) starts the whole system from it.
//!
//! The file is the hypervisor's `Image` padded with zeros to the end of its
//! footprint (its header's `image_size`, bss included, a multiple of
//! [`ALIGN`]), then the boot bundle, then zeros up to the next [`ALIGN`]
//! boundary. The header is patched to say so:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x08 | 8 | `text_offset`: 0 (any [`ALIGN`]-aligned base; the image relocates itself) |
//! | 0x10 | 8 | `image_size`: the whole file, so loaders keep the bundle free |
//! | 0x18 | 8 | `flags`: little-endian, 4 KiB pages, anywhere in RAM ([`FLAGS`]) |
//! | 0x20 | 8 | `res2`: the telemetry block's link-time address (see [`crate::telemetry`]) |
//! | 0x28 | 8 | `res3`: the bundle's offset from the image start (0: no bundle inside) |
//! | 0x30 | 8 | `res4`: the bundle's size in bytes |
//! | 0x38 | 4 | magic `"ARM\x64"` |
//!
//! A plain hypervisor `Image` has zero in `res3`/`res4` and takes its bundle
//! as the initrd instead. The hypervisor reads these fields from its own
//! header in memory; `stratum build` writes them and `stratum inspect` reads
//! them back. Every function here is pure and never panics.

use crate::bytes::{le_u32, le_u64};

/// Size of the arm64 `Image` header.
pub const HEADER_SIZE: usize = 0x40;
/// Offset of `text_offset`.
pub const TEXT_OFFSET: usize = 0x08;
/// Offset of `image_size`.
pub const IMAGE_SIZE: usize = 0x10;
/// Offset of `flags`.
pub const FLAGS_OFFSET: usize = 0x18;
/// Offset of the telemetry block's address (`res2`).
pub const TELEMETRY: usize = 0x20;
/// Offset of the embedded bundle's offset (`res3`).
pub const BUNDLE_OFFSET: usize = 0x28;
/// Offset of the embedded bundle's size (`res4`).
pub const BUNDLE_SIZE: usize = 0x30;
/// Offset of the magic.
pub const MAGIC_OFFSET: usize = 0x38;
/// The arm64 `Image` magic.
pub const MAGIC: [u8; 4] = *b"ARM\x64";
/// The header flags the hypervisor sets: little-endian (bit 0 clear), 4 KiB
/// pages (bits 1-2 = 1), placeable anywhere in RAM (bit 3).
pub const FLAGS: u64 = 0xa;
/// Alignment of the image's base, footprint and embedded bundle: 2 MiB,
/// as the arm64 boot protocol asks of the base.
pub const ALIGN: u64 = 2 << 20;

/// The header fields the system image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `text_offset`.
    pub text_offset: u64,
    /// `image_size`: bytes from the image start that the image owns.
    pub image_size: u64,
    /// `flags`.
    pub flags: u64,
    /// The telemetry block's address (`res2`; 0 if none).
    pub telemetry: u64,
    /// The embedded bundle's offset from the image start (0: none).
    pub bundle_offset: u64,
    /// The embedded bundle's size (0: none).
    pub bundle_size: u64,
}

/// Why bytes are not a usable (system) image. The variant docs are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysImgError {
    /// The file is shorter than an arm64 Image header (64 bytes).
    Truncated,
    /// The file has no arm64 Image magic ("ARM\x64" at offset 0x38): not a hypervisor image.
    NotAnImage,
    /// The header's image_size is not a non-zero multiple of 2 MiB.
    BadImageSize,
    /// The embedded bundle's offset and size do not fit together: one is zero and the other is not, or the bundle is not 2 MiB-aligned.
    BadBundleFields,
    /// The embedded bundle overlaps the hypervisor's own footprint (code, data, bss).
    BundleOverlapsHypervisor,
    /// The embedded bundle reaches past the header's image_size.
    BundleBeyondImage,
    /// The image already holds a bundle; build it from a plain hypervisor Image.
    AlreadyHoldsBundle,
    /// The bundle is empty or the image would exceed the 64-bit address space.
    TooLarge,
}

impl core::fmt::Display for SysImgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Truncated => "the file is shorter than an arm64 Image header (64 bytes)",
            Self::NotAnImage => {
                "the file has no arm64 Image magic (\"ARM\\x64\" at 0x38): not a hypervisor image"
            }
            Self::BadImageSize => "the header's image_size is not a non-zero multiple of 2 MiB",
            Self::BadBundleFields => {
                "the embedded bundle's offset and size disagree (one is zero) or its offset is not 2 MiB-aligned"
            }
            Self::BundleOverlapsHypervisor => {
                "the embedded bundle overlaps the hypervisor's own footprint (code, data, bss)"
            }
            Self::BundleBeyondImage => "the embedded bundle reaches past the header's image_size",
            Self::AlreadyHoldsBundle => {
                "the image already holds a bundle: build from a plain hypervisor Image"
            }
            Self::TooLarge => "the bundle is empty or the image would not fit in 64 bits",
        })
    }
}

impl Header {
    /// Reads the header at the start of `bytes`, checking the magic and
    /// that `image_size` is a non-zero multiple of [`ALIGN`].
    pub fn parse(bytes: &[u8]) -> Result<Self, SysImgError> {
        if bytes.len() < HEADER_SIZE {
            return Err(SysImgError::Truncated);
        }
        if le_u32(bytes, MAGIC_OFFSET) != Some(u32::from_le_bytes(MAGIC)) {
            return Err(SysImgError::NotAnImage);
        }
        let field = |at| le_u64(bytes, at).unwrap_or(0);
        let header = Self {
            text_offset: field(TEXT_OFFSET),
            image_size: field(IMAGE_SIZE),
            flags: field(FLAGS_OFFSET),
            telemetry: field(TELEMETRY),
            bundle_offset: field(BUNDLE_OFFSET),
            bundle_size: field(BUNDLE_SIZE),
        };
        if header.image_size == 0 || !header.image_size.is_multiple_of(ALIGN) {
            return Err(SysImgError::BadImageSize);
        }
        Ok(header)
    }

    /// Where the embedded bundle lies, as `(offset, size)` from the image
    /// start, or `None` for a plain hypervisor image. `footprint` is the
    /// hypervisor's own size (its `__image_size`: code, data and bss),
    /// which the bundle must not overlap: the entry code zeroes the bss.
    pub fn bundle(&self, footprint: u64) -> Result<Option<(u64, u64)>, SysImgError> {
        match (self.bundle_offset, self.bundle_size) {
            (0, 0) => Ok(None),
            (0, _) | (_, 0) => Err(SysImgError::BadBundleFields),
            (offset, _) if !offset.is_multiple_of(ALIGN) => Err(SysImgError::BadBundleFields),
            (offset, _) if offset < footprint => Err(SysImgError::BundleOverlapsHypervisor),
            (offset, size) => match offset.checked_add(size) {
                Some(end) if end <= self.image_size => Ok(Some((offset, size))),
                _ => Err(SysImgError::BundleBeyondImage),
            },
        }
    }
}

/// Where the pieces of a system image go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The bundle's offset: the hypervisor's footprint.
    pub bundle_offset: u64,
    /// The bundle's size.
    pub bundle_size: u64,
    /// The whole image: bundle end rounded up to [`ALIGN`]; also the file size.
    pub image_size: u64,
}

/// The layout of a system image built from the plain hypervisor image whose
/// header is `hypervisor` and a bundle of `bundle_size` bytes.
pub fn layout(hypervisor: &Header, bundle_size: u64) -> Result<Layout, SysImgError> {
    if hypervisor.bundle_offset != 0 || hypervisor.bundle_size != 0 {
        return Err(SysImgError::AlreadyHoldsBundle);
    }
    if bundle_size == 0 {
        return Err(SysImgError::TooLarge);
    }
    let bundle_offset = hypervisor.image_size;
    let image_size = bundle_offset
        .checked_add(bundle_size)
        .and_then(|end| end.checked_next_multiple_of(ALIGN))
        .ok_or(SysImgError::TooLarge)?;
    Ok(Layout {
        bundle_offset,
        bundle_size,
        image_size,
    })
}

/// Writes `layout`'s fields into the header at the start of `image` (which
/// is at least [`HEADER_SIZE`] bytes: the caller parsed it).
pub fn patch_header(image: &mut [u8], layout: &Layout) {
    for (at, value) in [
        (IMAGE_SIZE, layout.image_size),
        (BUNDLE_OFFSET, layout.bundle_offset),
        (BUNDLE_SIZE, layout.bundle_size),
    ] {
        if let Some(field) = image.get_mut(at..at + 8) {
            field.copy_from_slice(&value.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn image(image_size: u64, bundle: (u64, u64)) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[IMAGE_SIZE..IMAGE_SIZE + 8].copy_from_slice(&image_size.to_le_bytes());
        b[FLAGS_OFFSET..FLAGS_OFFSET + 8].copy_from_slice(&FLAGS.to_le_bytes());
        b[TELEMETRY..TELEMETRY + 8].copy_from_slice(&0x4020_1234u64.to_le_bytes());
        b[BUNDLE_OFFSET..BUNDLE_OFFSET + 8].copy_from_slice(&bundle.0.to_le_bytes());
        b[BUNDLE_SIZE..BUNDLE_SIZE + 8].copy_from_slice(&bundle.1.to_le_bytes());
        b[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(&MAGIC);
        b
    }

    #[test]
    fn a_plain_hypervisor_image_has_no_bundle() {
        let h = Header::parse(&image(4 * MIB, (0, 0))).expect("valid");
        assert_eq!(h.image_size, 4 * MIB);
        assert_eq!(h.telemetry, 0x4020_1234);
        assert_eq!(h.flags, FLAGS);
        assert_eq!(h.bundle(4 * MIB), Ok(None));
    }

    #[test]
    fn layout_then_patch_round_trips() {
        let plain = Header::parse(&image(4 * MIB, (0, 0))).expect("valid");
        let l = layout(&plain, 5 * MIB + 1).expect("fits");
        assert_eq!(l.bundle_offset, 4 * MIB);
        assert_eq!(
            l.image_size,
            10 * MIB,
            "4 MiB + 5 MiB + 1 rounded up to 2 MiB"
        );
        let mut bytes = image(4 * MIB, (0, 0));
        patch_header(&mut bytes, &l);
        let h = Header::parse(&bytes).expect("still valid");
        assert_eq!(h.bundle(4 * MIB), Ok(Some((4 * MIB, 5 * MIB + 1))));
        assert_eq!(h.telemetry, 0x4020_1234, "other fields untouched");
        assert_eq!(layout(&h, 1), Err(SysImgError::AlreadyHoldsBundle));
        assert_eq!(layout(&plain, 0), Err(SysImgError::TooLarge));
        assert_eq!(layout(&plain, u64::MAX), Err(SysImgError::TooLarge));
    }

    #[test]
    fn every_bad_header_is_named() {
        assert_eq!(Header::parse(&[0; 63]), Err(SysImgError::Truncated));
        let mut no_magic = image(4 * MIB, (0, 0));
        no_magic[MAGIC_OFFSET] = b'X';
        assert_eq!(Header::parse(&no_magic), Err(SysImgError::NotAnImage));
        for size in [0, MIB, 4 * MIB + 4096] {
            assert_eq!(
                Header::parse(&image(size, (0, 0))),
                Err(SysImgError::BadImageSize),
                "image_size {size:#x}"
            );
        }
        let cases = [
            ((4 * MIB, 0), SysImgError::BadBundleFields),
            ((0, 4096), SysImgError::BadBundleFields),
            ((4 * MIB + 4096, 4096), SysImgError::BadBundleFields),
            ((2 * MIB, 4096), SysImgError::BundleOverlapsHypervisor),
            ((4 * MIB, 4 * MIB + 1), SysImgError::BundleBeyondImage),
            ((4 * MIB, u64::MAX), SysImgError::BundleBeyondImage),
        ];
        for (fields, want) in cases {
            let h = Header::parse(&image(8 * MIB, fields)).expect("header itself valid");
            assert_eq!(h.bundle(4 * MIB), Err(want), "{fields:x?}");
        }
    }

    proptest! {
        /// No header bytes make parsing or bundle lookup panic, and any
        /// bundle range it returns lies past the footprint and inside the image.
        #[test]
        fn any_header_is_judged_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
            footprint in any::<u64>(),
        ) {
            let parsed = Header::parse(&bytes).map(|h| (h, h.bundle(footprint)));
            if let Ok((h, Ok(Some((offset, size))))) = parsed {
                prop_assert!(offset >= footprint);
                prop_assert!(offset + size <= h.image_size);
            }
        }
    }
}
