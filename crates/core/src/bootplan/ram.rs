//! Host RAM at boot: what the hypervisor may hand out, and the carve-outs it
//! takes from it.
//!
//! [`HostRam`] starts as every RAM bank of the host device tree minus the
//! ranges that are already spoken for (the hypervisor's own image, the host
//! DTB, the boot bundle). [`HostRam::take`] takes an exact range (an
//! identity-mapped VM's RAM) when it is wholly free; [`HostRam::carve`]
//! takes blocks from the top down. Neither hands out a byte twice: a
//! carve-out is removed from the free ranges before it is returned.
//!
//! The free list has room for [`MAX_FREE_RANGES`] ranges. A cut that would
//! need more drops the pieces that do not fit in the list: that loses free
//! RAM (a later carve-out may fail) but never hands out a byte twice.

use crate::addr::Pa;
use crate::platform::PhysRegion;

/// Most free ranges tracked.
pub const MAX_FREE_RANGES: usize = 32;

/// 1 GiB: carve-outs of at least this size prefer this alignment, so that
/// stage 2 can map them with 1 GiB blocks.
const GIB: u64 = 1 << 30;

/// A half-open range `[start, end)` of host-physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PhysRange {
    /// First byte.
    pub start: Pa,
    /// One past the last byte.
    pub end: Pa,
}

impl PhysRange {
    /// `[start, start + size)`, or `None` when that wraps.
    pub const fn new(start: Pa, size: u64) -> Option<Self> {
        match start.checked_add(size) {
            Some(end) => Some(Self { start, end }),
            None => None,
        }
    }

    /// A bank of the host device tree as a range; one that would wrap ends
    /// at the top of the address space.
    pub const fn from_region(r: PhysRegion) -> Self {
        Self {
            start: r.base,
            end: Pa(r.base.0.saturating_add(r.size)),
        }
    }

    /// Bytes in the range (0 when `end <= start`).
    pub const fn size(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }

    /// Whether the two ranges share a byte.
    pub const fn overlaps(&self, other: &Self) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }

    /// Whether `other` lies wholly inside `self`.
    pub const fn contains(&self, other: &Self) -> bool {
        self.start.0 <= other.start.0 && other.end.0 <= self.end.0
    }
}

/// The host RAM still free for carve-outs.
#[derive(Clone, Copy, Debug)]
pub struct HostRam {
    free: [PhysRange; MAX_FREE_RANGES],
    count: usize,
}

impl HostRam {
    /// Free RAM: every bank minus every reserved range.
    pub fn new(banks: &[PhysRegion], reserved: &[PhysRange]) -> Self {
        let mut me = Self {
            free: [PhysRange::default(); MAX_FREE_RANGES],
            count: 0,
        };
        for bank in banks {
            me.push(PhysRange::from_region(*bank));
        }
        for r in reserved {
            me.remove(*r);
        }
        me
    }

    /// The free ranges (in no particular order; pairwise disjoint).
    pub fn free(&self) -> &[PhysRange] {
        self.free.get(..self.count).unwrap_or(&[])
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        self.free().iter().map(PhysRange::size).sum()
    }

    /// Takes `size` bytes aligned to `align` (a power of two) from the top
    /// of the free range that can place them highest. A carve-out of at
    /// least 1 GiB is 1 GiB-aligned when that fits anywhere. `None` when
    /// nothing fits, `size` is 0 or `align` is not a power of two.
    pub fn carve(&mut self, size: u64, align: u64) -> Option<Pa> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        if size >= GIB
            && let Some(pa) = self.carve_aligned(size, GIB.max(align))
        {
            return Some(pa);
        }
        self.carve_aligned(size, align)
    }

    /// Takes exactly `range` if it lies wholly inside one free range:
    /// whether it did (nothing changes when it did not, or when `range` is
    /// empty).
    pub fn take(&mut self, range: PhysRange) -> bool {
        if range.is_empty() || !self.free().iter().any(|r| r.contains(&range)) {
            return false;
        }
        self.remove(range);
        true
    }

    fn carve_aligned(&mut self, size: u64, align: u64) -> Option<Pa> {
        let mut best: Option<u64> = None;
        for r in self.free() {
            let Some(top) = r.end.0.checked_sub(size) else {
                continue;
            };
            let start = top & !(align - 1);
            if start >= r.start.0 && best.is_none_or(|b| start > b) {
                best = Some(start);
            }
        }
        let start = best?;
        self.remove(PhysRange {
            start: Pa(start),
            end: Pa(start + size),
        });
        Some(Pa(start))
    }

    fn push(&mut self, r: PhysRange) {
        if !r.is_empty() && self.count < self.free.len() {
            self.free[self.count] = r;
            self.count += 1;
        }
    }

    fn remove(&mut self, cut: PhysRange) {
        let old = self.free;
        let n = self.count;
        self.count = 0;
        for r in &old[..n] {
            if !cut.overlaps(r) {
                self.push(*r);
                continue;
            }
            self.push(PhysRange {
                start: r.start,
                end: Pa(cut.start.0.max(r.start.0)),
            });
            self.push(PhysRange {
                start: Pa(cut.end.0.min(r.end.0)),
                end: r.end,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn bank(base: u64, size: u64) -> PhysRegion {
        PhysRegion {
            base: Pa(base),
            size,
        }
    }

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange {
            start: Pa(start),
            end: Pa(end),
        }
    }

    #[test]
    fn reserved_ranges_are_cut_out() {
        // QEMU virt, 1 GiB: the DTB at the start of RAM, the hypervisor at
        // 0x4020_0000, the bundle somewhere in the middle.
        let ram = HostRam::new(
            &[bank(0x4000_0000, GIB)],
            &[
                range(0x4000_0000, 0x4010_0000),
                range(0x4020_0000, 0x4060_0000),
                range(0x4800_0000, 0x4900_0000),
            ],
        );
        let mut free = ram.free().to_vec();
        free.sort_by_key(|r| r.start);
        assert_eq!(
            free,
            [
                range(0x4010_0000, 0x4020_0000),
                range(0x4060_0000, 0x4800_0000),
                range(0x4900_0000, 0x8000_0000),
            ]
        );
        assert_eq!(ram.free_bytes(), GIB - MIB - 4 * MIB - 16 * MIB);
    }

    #[test]
    fn reserved_outside_ram_changes_nothing() {
        let ram = HostRam::new(&[bank(0x4000_0000, 64 * MIB)], &[range(0, 0x1000)]);
        assert_eq!(ram.free(), [range(0x4000_0000, 0x4400_0000)]);
        // An empty bank and a wrapping one.
        let ram = HostRam::new(&[bank(0x1000, 0), bank(u64::MAX - 0xfff, 0x2000)], &[]);
        assert_eq!(ram.free(), [range(u64::MAX - 0xfff, u64::MAX)]);
    }

    #[test]
    fn carves_top_down_and_never_twice() {
        let mut ram = HostRam::new(&[bank(0x4000_0000, 64 * MIB)], &[]);
        assert_eq!(ram.carve(4096, 4096), Some(Pa(0x43ff_f000)));
        // The next 2 MiB-aligned block below the page just taken.
        assert_eq!(ram.carve(2 * MIB, 2 * MIB), Some(Pa(0x43c0_0000)));
        // The gap left between them is still used for small carve-outs.
        assert_eq!(ram.carve(8192, 4096), Some(Pa(0x43ff_d000)));
        assert_eq!(ram.free_bytes(), 64 * MIB - 2 * MIB - 3 * 4096);
        // Too big for what is left.
        assert_eq!(ram.carve(64 * MIB, 2 * MIB), None);
        assert_eq!(ram.free_bytes(), 64 * MIB - 2 * MIB - 3 * 4096);
    }

    #[test]
    fn prefers_the_highest_placement_over_banks() {
        let mut ram = HostRam::new(
            &[bank(0x8000_0000, 16 * MIB), bank(0x4000_0000, 16 * MIB)],
            &[],
        );
        assert_eq!(ram.carve(2 * MIB, 2 * MIB), Some(Pa(0x80e0_0000)));
        // A bank too small for the request is skipped.
        assert_eq!(ram.carve(15 * MIB, 2 * MIB), Some(Pa(0x4000_0000)));
    }

    #[test]
    fn large_carve_outs_prefer_1g_alignment() {
        // 3 GiB from 0x4000_0000 with the top 2 MiB reserved: the highest
        // 2 MiB-aligned place for 1 GiB is not 1 GiB aligned.
        let mut ram = HostRam::new(
            &[bank(0x4000_0000, 3 * GIB)],
            &[range(0x1_0000_0000 - 2 * MIB, 0x1_0000_0000)],
        );
        assert_eq!(ram.carve(GIB, 2 * MIB), Some(Pa(0x8000_0000)));
        // No 1 GiB-aligned room left for another: 2 MiB alignment will do.
        let mut small = HostRam::new(&[bank(0x4020_0000, GIB + 4 * MIB)], &[]);
        assert_eq!(small.carve(GIB, 2 * MIB), Some(Pa(0x4060_0000)));
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut ram = HostRam::new(&[bank(0x4000_0000, 64 * MIB)], &[]);
        assert_eq!(ram.carve(0, 4096), None);
        assert_eq!(ram.carve(4096, 3000), None);
        assert_eq!(ram.carve(4096, 0), None);
        assert_eq!(ram.free_bytes(), 64 * MIB);
    }

    #[test]
    fn a_full_free_list_loses_ram_but_never_overlaps() {
        let mut ram = HostRam::new(&[bank(0, 1 << 40)], &[]);
        // Every carve-out at a 1 MiB alignment from a 1 MiB + 4 KiB request
        // leaves a gap: the list fills up.
        let mut taken: Vec<PhysRange> = Vec::new();
        for _ in 0..(MAX_FREE_RANGES * 2) {
            let pa = ram.carve(MIB + 4096, MIB).expect("plenty of room");
            let r = PhysRange::new(pa, MIB + 4096).expect("no wrap");
            assert!(taken.iter().all(|t| !t.overlaps(&r)));
            assert!(ram.free().iter().all(|f| !f.overlaps(&r)));
            taken.push(r);
        }
        assert!(ram.free().len() <= MAX_FREE_RANGES);
    }
}
