//! Where a guest's kernel, initrd and device tree go in its RAM, following the
//! Linux arm64 boot protocol (`Documentation/arch/arm64/booting.rst`).
//!
//! [`plan`] is pure arithmetic on guest-physical addresses; the loader copies
//! the images to the places it returns. The rules:
//!
//! - The kernel occupies `[ram.start + load_offset, + footprint)`, where the
//!   footprint includes its bss (`image_size` of an `Image` header). It must
//!   lie wholly inside RAM, and the entry point inside it.
//! - The DTB (at most 2 MiB, on an 8-byte boundary) goes high: preferably at
//!   the start of the last 2 MiB-aligned 2 MiB block of RAM, so that it sits in
//!   a 2 MiB region of its own as booting.rst asks (the kernel maps it with
//!   blocks of up to 2 MiB). When that block does not exist (RAM smaller than,
//!   or not covering, an aligned 2 MiB block) or it collides with the kernel,
//!   the DTB goes at the top of RAM instead, page-aligned: a small VM still
//!   boots when there is room.
//! - The initrd goes just below the DTB, page-aligned (booting.rst sets no
//!   alignment; a page keeps it off the DTB's page).
//! - Neither may overlap the kernel's footprint, and everything stays in RAM.
//!   An error names what collided.

use core::fmt;

use crate::addr::{Ipa, IpaRange};

/// Largest device tree the boot protocol allows: 2 MiB.
pub const DTB_MAX_SIZE: u64 = 2 << 20;
/// The DTB's preferred alignment: its own 2 MiB block.
const DTB_BLOCK: u64 = 2 << 20;
/// Page size; the initrd and a fallback DTB are aligned to it.
const PAGE: u64 = 4096;

/// Where the kernel image wants to be, relative to the start of RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPlacement {
    /// Offset of the image's first byte from the start of RAM (an `Image`'s
    /// `text_offset` from a 2 MiB-aligned RAM base; 0x80000 for raw binaries).
    pub load_offset: u64,
    /// Offset of the entry point from the image's first byte.
    pub entry_offset: u64,
    /// Bytes the kernel may touch from its first byte on, including bss
    /// (an `Image`'s `image_size`, or at least the file size).
    pub footprint: u64,
}

/// Where everything goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// The kernel's footprint.
    pub kernel: IpaRange,
    /// The entry point (PC at first entry).
    pub entry: Ipa,
    /// The initrd, if there is one.
    pub initrd: Option<IpaRange>,
    /// The device tree blob (x0 at entry).
    pub dtb: IpaRange,
}

/// Why a guest's images cannot be placed in its RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// the kernel's footprint is empty or does not fit in RAM
    KernelDoesNotFit,
    /// the kernel's entry point lies outside its image
    EntryOutsideKernel,
    /// the kernel's entry point is not 4-byte aligned
    EntryMisaligned,
    /// the device tree is empty
    DtbEmpty,
    /// the device tree is larger than 2 MiB
    DtbTooLarge,
    /// RAM is smaller than the device tree
    DtbDoesNotFit,
    /// the device tree would overlap the kernel
    DtbOverlapsKernel,
    /// the initrd does not fit in RAM below the device tree
    InitrdDoesNotFit,
    /// the initrd would overlap the kernel
    InitrdOverlapsKernel,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KernelDoesNotFit => "the kernel's footprint is empty or does not fit in RAM",
            Self::EntryOutsideKernel => "the kernel's entry point lies outside its image",
            Self::EntryMisaligned => "the kernel's entry point is not 4-byte aligned",
            Self::DtbEmpty => "the device tree is empty",
            Self::DtbTooLarge => "the device tree is larger than 2 MiB",
            Self::DtbDoesNotFit => "RAM is smaller than the device tree",
            Self::DtbOverlapsKernel => "the device tree would overlap the kernel",
            Self::InitrdDoesNotFit => "the initrd does not fit in RAM below the device tree",
            Self::InitrdOverlapsKernel => "the initrd would overlap the kernel",
        })
    }
}

/// Plans where the kernel, initrd (none when `initrd_size` is 0) and DTB go
/// in `ram`. See the module documentation for the rules.
pub fn plan(
    ram: IpaRange,
    kernel: KernelPlacement,
    initrd_size: u64,
    dtb_size: u64,
) -> Result<GuestLayout, LayoutError> {
    let (kernel_range, entry) = place_kernel(ram, kernel)?;
    check_dtb_size(dtb_size)?;
    let ram_end = ram.end().0;

    // Preferred: the start of the last 2 MiB-aligned 2 MiB block wholly in RAM.
    let block = (ram_end & !(DTB_BLOCK - 1))
        .checked_sub(DTB_BLOCK)
        .filter(|&b| b >= ram.start.0);
    // Fallback: as high as possible, page-aligned.
    let top = ram_end
        .checked_sub(dtb_size)
        .map(|t| t & !(PAGE - 1))
        .filter(|&t| t >= ram.start.0);

    let mut result = Err(LayoutError::DtbDoesNotFit);
    for dtb_start in [block, top].into_iter().flatten() {
        result = place_below(ram, kernel_range, Ipa(dtb_start), dtb_size, initrd_size);
        if result.is_ok() {
            break;
        }
    }
    let (dtb, initrd) = result?;
    Ok(GuestLayout {
        kernel: kernel_range,
        entry,
        initrd,
        dtb,
    })
}

/// The layout of a firmware-style guest (U-Boot built for QEMU `virt`),
/// which looks for its device tree at the start of RAM, where QEMU leaves
/// it for firmware: the DTB at `ram.start` (`x0` still points there too),
/// the kernel where it asks (it must clear the DTB), the initrd at the top
/// of RAM, page-aligned.
pub fn plan_dtb_at_start(
    ram: IpaRange,
    kernel: KernelPlacement,
    initrd_size: u64,
    dtb_size: u64,
) -> Result<GuestLayout, LayoutError> {
    let (kernel_range, entry) = place_kernel(ram, kernel)?;
    check_dtb_size(dtb_size)?;
    let dtb = IpaRange::new(ram.start, dtb_size).ok_or(LayoutError::DtbDoesNotFit)?;
    if !ram.contains_span(dtb.start, dtb.size) {
        return Err(LayoutError::DtbDoesNotFit);
    }
    if dtb.overlaps(&kernel_range) {
        return Err(LayoutError::DtbOverlapsKernel);
    }
    let initrd = if initrd_size == 0 {
        None
    } else {
        let start = ram
            .end()
            .0
            .checked_sub(initrd_size)
            .map(|s| Ipa(s).align_down(PAGE))
            .filter(|&s| s.0 >= dtb.end().0)
            .ok_or(LayoutError::InitrdDoesNotFit)?;
        let initrd = IpaRange::new(start, initrd_size).ok_or(LayoutError::InitrdDoesNotFit)?;
        if initrd.overlaps(&kernel_range) {
            return Err(LayoutError::InitrdOverlapsKernel);
        }
        Some(initrd)
    };
    Ok(GuestLayout {
        kernel: kernel_range,
        entry,
        initrd,
        dtb,
    })
}

/// Checks a device tree's size against the boot protocol's limits.
fn check_dtb_size(dtb_size: u64) -> Result<(), LayoutError> {
    if dtb_size == 0 {
        return Err(LayoutError::DtbEmpty);
    }
    if dtb_size > DTB_MAX_SIZE {
        return Err(LayoutError::DtbTooLarge);
    }
    Ok(())
}

/// The kernel's footprint in `ram` and its entry point, checked.
fn place_kernel(ram: IpaRange, kernel: KernelPlacement) -> Result<(IpaRange, Ipa), LayoutError> {
    let kernel_start = ram
        .start
        .checked_add(kernel.load_offset)
        .ok_or(LayoutError::KernelDoesNotFit)?;
    if kernel.footprint == 0 || !ram.contains_span(kernel_start, kernel.footprint) {
        return Err(LayoutError::KernelDoesNotFit);
    }
    let kernel_range =
        IpaRange::new(kernel_start, kernel.footprint).ok_or(LayoutError::KernelDoesNotFit)?;
    if kernel.entry_offset >= kernel.footprint {
        return Err(LayoutError::EntryOutsideKernel);
    }
    let entry = Ipa(kernel_start.0 + kernel.entry_offset);
    if !entry.is_aligned(4) {
        return Err(LayoutError::EntryMisaligned);
    }
    Ok((kernel_range, entry))
}

/// Places the DTB at `dtb_start` and the initrd just below it, checking both
/// against the kernel and the start of RAM. `dtb_start` is in RAM with room
/// for `dtb_size` bytes above it.
fn place_below(
    ram: IpaRange,
    kernel: IpaRange,
    dtb_start: Ipa,
    dtb_size: u64,
    initrd_size: u64,
) -> Result<(IpaRange, Option<IpaRange>), LayoutError> {
    let dtb = IpaRange::new(dtb_start, dtb_size).ok_or(LayoutError::DtbDoesNotFit)?;
    if !ram.contains_span(dtb.start, dtb.size) {
        return Err(LayoutError::DtbDoesNotFit);
    }
    if dtb.overlaps(&kernel) {
        return Err(LayoutError::DtbOverlapsKernel);
    }
    if initrd_size == 0 {
        return Ok((dtb, None));
    }
    let initrd_start = dtb_start
        .0
        .checked_sub(initrd_size)
        .map(|s| Ipa(s).align_down(PAGE))
        .filter(|&s| s >= ram.start)
        .ok_or(LayoutError::InitrdDoesNotFit)?;
    let initrd = IpaRange::new(initrd_start, initrd_size).ok_or(LayoutError::InitrdDoesNotFit)?;
    if initrd.overlaps(&kernel) {
        return Err(LayoutError::InitrdOverlapsKernel);
    }
    Ok((dtb, Some(initrd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const RAM_BASE: Ipa = Ipa(0x4000_0000);

    fn ram(size: u64) -> IpaRange {
        IpaRange::new(RAM_BASE, size).expect("no overflow")
    }

    fn linux(footprint: u64) -> KernelPlacement {
        KernelPlacement {
            load_offset: 0,
            entry_offset: 0,
            footprint,
        }
    }

    #[test]
    fn a_firmware_guest_gets_its_dtb_at_the_start_of_ram() {
        let r = ram(64 * MIB);
        let uboot = KernelPlacement {
            load_offset: 0x8_0000,
            entry_offset: 0,
            footprint: MIB,
        };
        let l = plan_dtb_at_start(r, uboot, 0, 0x1_0000).expect("fits");
        assert_eq!(l.dtb, IpaRange::new(RAM_BASE, 0x1_0000).expect("ok"));
        assert_eq!(l.kernel.start, Ipa(RAM_BASE.0 + 0x8_0000));
        assert_eq!(l.entry, l.kernel.start);
        assert_eq!(l.initrd, None);
        check_invariants(r, &l);
        // An initrd goes at the top of RAM, page-aligned.
        let l = plan_dtb_at_start(r, uboot, 3 * MIB + 5, 0x1_0000).expect("fits");
        let initrd = l.initrd.expect("an initrd");
        assert_eq!(initrd.start, Ipa(RAM_BASE.0 + 61 * MIB - 4096));
        assert!(r.contains_span(initrd.start, initrd.size));
        assert!(!initrd.overlaps(&l.kernel) && !initrd.overlaps(&l.dtb));
        // A kernel at the start of RAM collides with the DTB; a DTB over
        // the limit, or an initrd that cannot clear the kernel, is refused.
        assert_eq!(
            plan_dtb_at_start(r, linux(MIB), 0, 0x1000),
            Err(LayoutError::DtbOverlapsKernel)
        );
        assert_eq!(
            plan_dtb_at_start(r, uboot, 0, DTB_MAX_SIZE + 1),
            Err(LayoutError::DtbTooLarge)
        );
        let big = KernelPlacement {
            footprint: 63 * MIB,
            ..uboot
        };
        assert_eq!(
            plan_dtb_at_start(r, big, MIB, 0x1000),
            Err(LayoutError::InitrdOverlapsKernel)
        );
        assert_eq!(
            plan_dtb_at_start(r, uboot, 64 * MIB, 0x1000),
            Err(LayoutError::InitrdDoesNotFit)
        );
    }

    fn check_invariants(ram: IpaRange, l: &GuestLayout) {
        assert!(ram.contains_span(l.kernel.start, l.kernel.size));
        assert!(ram.contains_span(l.dtb.start, l.dtb.size));
        assert!(l.dtb.start.is_aligned(8));
        assert!(!l.dtb.overlaps(&l.kernel));
        if let Some(initrd) = l.initrd {
            assert!(ram.contains_span(initrd.start, initrd.size));
            assert!(initrd.start.is_aligned(PAGE));
            assert!(!initrd.overlaps(&l.kernel));
            assert!(!initrd.overlaps(&l.dtb));
            assert!(initrd.end() <= l.dtb.start, "initrd below the DTB");
        }
    }

    #[test]
    fn typical_linux_vm() {
        let r = ram(1 << 30);
        let l = plan(r, linux(40 * MIB), 20 * MIB + 123, 0x2345).expect("fits");
        check_invariants(r, &l);
        assert_eq!(l.kernel, IpaRange::new(RAM_BASE, 40 * MIB).expect("ok"));
        assert_eq!(l.entry, RAM_BASE);
        // DTB at the start of the last 2 MiB block.
        assert_eq!(l.dtb.start, Ipa(0x7fe0_0000));
        assert_eq!(l.dtb.size, 0x2345);
        // initrd just below, page-aligned.
        let initrd = l.initrd.expect("initrd");
        assert_eq!(initrd.size, 20 * MIB + 123);
        assert_eq!(initrd.start, Ipa((0x7fe0_0000 - (20 * MIB + 123)) & !0xfff));
        assert!(0x7fe0_0000 - initrd.end().0 < PAGE);
    }

    #[test]
    fn raw_binary_entry_and_offsets() {
        let r = ram(64 * MIB);
        let k = KernelPlacement {
            load_offset: 0x8_0000,
            entry_offset: 0x100,
            footprint: 0x1_0000,
        };
        let l = plan(r, k, 0, 4096).expect("fits");
        check_invariants(r, &l);
        assert_eq!(l.kernel.start, Ipa(0x4008_0000));
        assert_eq!(l.entry, Ipa(0x4008_0100));
        assert_eq!(l.initrd, None);
        assert_eq!(l.dtb.start, Ipa(0x43e0_0000));
    }

    #[test]
    fn kernel_must_fit() {
        let r = ram(16 * MIB);
        assert_eq!(plan(r, linux(0), 0, 8), Err(LayoutError::KernelDoesNotFit));
        assert_eq!(
            plan(r, linux(16 * MIB + 1), 0, 8),
            Err(LayoutError::KernelDoesNotFit)
        );
        let far = KernelPlacement {
            load_offset: 16 * MIB,
            entry_offset: 0,
            footprint: 4096,
        };
        assert_eq!(plan(r, far, 0, 8), Err(LayoutError::KernelDoesNotFit));
        let overflow = KernelPlacement {
            load_offset: u64::MAX,
            entry_offset: 0,
            footprint: 1,
        };
        assert_eq!(plan(r, overflow, 0, 8), Err(LayoutError::KernelDoesNotFit));
    }

    #[test]
    fn entry_checked() {
        let r = ram(16 * MIB);
        let k = KernelPlacement {
            load_offset: 0,
            entry_offset: MIB,
            footprint: MIB,
        };
        assert_eq!(plan(r, k, 0, 8), Err(LayoutError::EntryOutsideKernel));
        let k = KernelPlacement {
            entry_offset: 2,
            ..k
        };
        assert_eq!(plan(r, k, 0, 8), Err(LayoutError::EntryMisaligned));
    }

    #[test]
    fn dtb_size_checked() {
        let r = ram(64 * MIB);
        assert_eq!(plan(r, linux(MIB), 0, 0), Err(LayoutError::DtbEmpty));
        assert_eq!(
            plan(r, linux(MIB), 0, DTB_MAX_SIZE + 1),
            Err(LayoutError::DtbTooLarge)
        );
        let l = plan(r, linux(MIB), 0, DTB_MAX_SIZE).expect("exactly 2 MiB is fine");
        assert_eq!(l.dtb.end(), r.end());
        // RAM smaller than the DTB.
        let tiny = IpaRange::new(RAM_BASE, 0x2000).expect("ok");
        assert_eq!(
            plan(tiny, linux(0x1000), 0, 0x4000),
            Err(LayoutError::DtbDoesNotFit)
        );
    }

    #[test]
    fn ram_not_a_multiple_of_2m() {
        // 17 MiB + 8 KiB: the last whole aligned 2 MiB block ends at 16 MiB.
        let r = ram(17 * MIB + 0x2000);
        let l = plan(r, linux(4 * MIB), 3 * MIB, 0x1000).expect("fits");
        check_invariants(r, &l);
        assert_eq!(l.dtb.start, Ipa(0x40e0_0000));
        assert_eq!(l.initrd.expect("initrd").start, Ipa(0x40b0_0000));

        // RAM starting off a 2 MiB boundary.
        let r = IpaRange::new(Ipa(0x4010_0000), 5 * MIB).expect("ok");
        let l = plan(r, linux(MIB), 0, 0x1000).expect("fits");
        check_invariants(r, &l);
        assert_eq!(l.dtb.start, Ipa(0x4040_0000), "block [4 MiB, 6 MiB)");
    }

    #[test]
    fn small_ram_still_works() {
        // 16 MiB with a 10 MiB kernel and a 2 MiB initrd.
        let r = ram(16 * MIB);
        let l = plan(r, linux(10 * MIB), 2 * MIB, 0x3000).expect("fits");
        check_invariants(r, &l);
        assert_eq!(l.dtb.start, Ipa(0x40e0_0000));
        assert_eq!(l.initrd.expect("initrd").start, Ipa(0x40c0_0000));

        // The kernel reaches into the last 2 MiB block: the DTB moves to the top.
        let l = plan(r, linux(15 * MIB), 0, 0x3000).expect("fits");
        check_invariants(r, &l);
        assert_eq!(l.dtb.start, Ipa(0x40ff_d000));

        // Less than 2 MiB of RAM: no aligned block at all.
        let r = ram(MIB);
        let l = plan(r, linux(0x1_0000), 0x1_0000, 0x800).expect("fits");
        check_invariants(r, &l);
        assert_eq!(l.dtb.start, Ipa(0x400f_f000));
        assert_eq!(l.initrd.expect("initrd").start, Ipa(0x400e_f000));

        // RAM that is not a whole number of pages.
        let r = ram(MIB + 100);
        let l = plan(r, linux(0x1000), 0, 0x80).expect("fits");
        check_invariants(r, &l);
        assert_eq!(l.dtb.start, Ipa(0x400f_f000));
    }

    #[test]
    fn collisions_named() {
        let r = ram(16 * MIB);
        // Kernel fills RAM: nowhere for the DTB.
        assert_eq!(
            plan(r, linux(16 * MIB), 0, 0x1000),
            Err(LayoutError::DtbOverlapsKernel)
        );
        // DTB fits above the kernel, the initrd does not, even with the DTB
        // moved to the top of RAM (3 MiB would fit there).
        assert!(plan(r, linux(12 * MIB), 3 * MIB, 0x1000).is_ok());
        assert_eq!(
            plan(r, linux(12 * MIB), 4 * MIB, 0x1000),
            Err(LayoutError::InitrdOverlapsKernel)
        );
        // The initrd would run below the start of RAM (kernel loaded high).
        let high = KernelPlacement {
            load_offset: 15 * MIB,
            entry_offset: 0,
            footprint: 0x1000,
        };
        assert_eq!(
            plan(r, high, 16 * MIB, 0x1000),
            Err(LayoutError::InitrdDoesNotFit)
        );
        // An initrd larger than the address space below the DTB.
        assert_eq!(
            plan(r, linux(MIB), u64::MAX, 0x1000),
            Err(LayoutError::InitrdDoesNotFit)
        );
    }

    #[test]
    fn exact_fit() {
        // Kernel, initrd and DTB packed with nothing to spare.
        let r = ram(4 * MIB);
        let l = plan(r, linux(MIB), MIB, 2 * MIB).expect("fits");
        check_invariants(r, &l);
        assert_eq!(l.dtb.start, Ipa(0x4020_0000));
        assert_eq!(l.initrd.expect("initrd").start, Ipa(0x4010_0000));
        assert_eq!(
            plan(r, linux(MIB + 1), MIB, 2 * MIB),
            Err(LayoutError::InitrdOverlapsKernel)
        );
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            LayoutError::DtbOverlapsKernel.to_string(),
            "the device tree would overlap the kernel"
        );
    }

    proptest::proptest! {
        #[test]
        fn plans_are_consistent_or_refused(
            start_pages in 0u64..0x10_0000,
            size in 0u64..(64 * MIB),
            load_offset in 0u64..(64 * MIB),
            footprint in 0u64..(32 * MIB),
            initrd in 0u64..(16 * MIB),
            dtb in 0u64..(3 * MIB),
        ) {
            let r = IpaRange::new(Ipa(start_pages * PAGE), size).expect("small");
            let k = KernelPlacement { load_offset, entry_offset: 0, footprint };
            if let Ok(l) = plan(r, k, initrd, dtb) {
                check_invariants(r, &l);
                proptest::prop_assert_eq!(l.initrd.map(|i| i.size), (initrd > 0).then_some(initrd));
                proptest::prop_assert_eq!(l.dtb.size, dtb);
            }
        }
    }
}
