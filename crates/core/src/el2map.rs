//! EL2's own address map, from the board's device tree: RAM as Normal
//! write-back memory, everything else as Device-nGnRE and never executable,
//! identity-mapped (EL2 addresses are physical).
//!
//! The entry code starts with a coarse map (1 GiB blocks: the ones holding
//! the image and the DT Normal, the rest Device), enough to read the DT.
//! [`plan`] then lays out the real one from the DT's memory banks, which the
//! boot CPU switches to before anything else runs (and the secondary CPUs
//! start on): a level-1 table of 1 GiB blocks for the first
//! [`L1_ENTRIES`] GiB, with a level-2 table of 2 MiB blocks for each GiB
//! that holds both RAM and something else. A 2 MiB block that RAM covers
//! only in part stays Device (EL2 never touches it: the boot plan hands out
//! RAM in 2 MiB units). A bank beyond the map is left out.
//!
//! The descriptor bits match the entry code's `MAIR_EL2`: attribute 0
//! Normal write-back, attribute 1 Device-nGnRE.

use crate::platform::{PhysRegion, ReservedRegion};

/// Level-1 entries the map fills: 256 GiB of physical address space.
pub const L1_ENTRIES: usize = 256;
/// Entries of a translation table (4 KiB granule).
pub const TABLE_ENTRIES: usize = 512;
/// Level-2 tables the map may use.
pub const L2_TABLES: usize = 8;

const GIB: u64 = 1 << 30;
const BLOCK_2M: u64 = 2 << 20;
/// Block descriptor, access flag set.
const BLOCK: u64 = 0b01 | 1 << 10;
/// Table descriptor.
const TABLE: u64 = 0b11;
/// Normal write-back (AttrIndx 0), inner shareable.
pub const NORMAL: u64 = BLOCK | 0b11 << 8;
/// Execute-never.
const XN: u64 = 1 << 54;
/// Device-nGnRE (AttrIndx 1), execute-never.
pub const DEVICE: u64 = BLOCK | 1 << 2 | XN;

/// Why the map cannot be laid out. The variant docs are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum El2MapError {
    /// The DT's memory banks do not cover the hypervisor's image: it would lose its own code and data.
    ImageNotInRam,
    /// More gigabytes mix RAM with other things than EL2 has level-2 tables for (8).
    TooManyMixedGigabytes,
}

impl core::fmt::Display for El2MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::ImageNotInRam => {
                "the DT's memory banks do not cover the hypervisor's image: it would lose its own code and data"
            }
            Self::TooManyMixedGigabytes => {
                "more gigabytes mix RAM with other things than EL2 has level-2 tables for (8)"
            }
        })
    }
}

/// What [`plan`] laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct El2MapStats {
    /// Gigabytes mapped whole as Normal memory.
    pub ram_gib: usize,
    /// Level-2 tables used (gigabytes mixing RAM and other things).
    pub l2_tables: usize,
    /// 2 MiB blocks mapped Normal through level-2 tables.
    pub ram_2m: usize,
}

/// Whether one bank covers the whole 2 MiB block at `start` and no
/// `no-map` reservation touches it.
fn covered(ram: &[PhysRegion], reserved: &[ReservedRegion], start: u64) -> bool {
    let end = start.saturating_add(BLOCK_2M);
    ram.iter()
        .any(|r| r.base.0 <= start && end <= r.base.0.saturating_add(r.size))
        && !reserved.iter().any(|r| {
            r.no_map
                && r.region.base.0 < end
                && start < r.region.base.0.saturating_add(r.region.size)
        })
}

/// Lays out EL2's map of `ram` into `l1` and `l2`, the level-2 tables
/// living at physical `l2_base` (table `i` at `l2_base + i * 4096`).
/// A 2 MiB block that a `no-map` region of `reserved` touches is not
/// mapped as memory (firmware's secure RAM must not even be fetched from
/// speculatively). `image` is the hypervisor's own footprint, which must
/// be RAM.
pub fn plan(
    ram: &[PhysRegion],
    reserved: &[ReservedRegion],
    image: core::ops::Range<u64>,
    l1: &mut [u64; TABLE_ENTRIES],
    l2: &mut [[u64; TABLE_ENTRIES]; L2_TABLES],
    l2_base: u64,
) -> Result<El2MapStats, El2MapError> {
    let image_start = image.start & !(BLOCK_2M - 1);
    let mut at = image_start;
    while at < image.end {
        if !covered(ram, reserved, at) {
            return Err(El2MapError::ImageNotInRam);
        }
        at += BLOCK_2M;
    }
    let mut stats = El2MapStats::default();
    l1.fill(0);
    for (g, entry) in l1.iter_mut().enumerate().take(L1_ENTRIES) {
        let base = g as u64 * GIB;
        // Most gigabytes hold no RAM at all: no need to probe their blocks.
        let end = base + GIB;
        if !ram
            .iter()
            .any(|r| r.base.0 < end && base < r.base.0.saturating_add(r.size))
        {
            *entry = base | DEVICE;
            continue;
        }
        let blocks =
            (0..TABLE_ENTRIES as u64).filter(|i| covered(ram, reserved, base + i * BLOCK_2M));
        match blocks.count() {
            0 => *entry = base | DEVICE,
            TABLE_ENTRIES => {
                *entry = base | NORMAL;
                stats.ram_gib += 1;
            }
            _ => {
                let table = l2
                    .get_mut(stats.l2_tables)
                    .ok_or(El2MapError::TooManyMixedGigabytes)?;
                for (i, block) in table.iter_mut().enumerate() {
                    let addr = base + i as u64 * BLOCK_2M;
                    *block = if covered(ram, reserved, addr) {
                        stats.ram_2m += 1;
                        addr | NORMAL
                    } else {
                        addr | DEVICE
                    };
                }
                *entry = (l2_base + stats.l2_tables as u64 * 4096) | TABLE;
                stats.l2_tables += 1;
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Pa;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;
    const L2_BASE: u64 = 0x4050_0000;

    fn bank(base: u64, size: u64) -> PhysRegion {
        PhysRegion {
            base: Pa(base),
            size,
        }
    }

    /// A laid-out map: the result, the level-1 and the level-2 tables.
    type Laid = (
        Result<El2MapStats, El2MapError>,
        Box<[u64; TABLE_ENTRIES]>,
        Box<[[u64; TABLE_ENTRIES]; L2_TABLES]>,
    );

    fn run(ram: &[PhysRegion], image: core::ops::Range<u64>) -> Laid {
        let mut l1 = Box::new([0u64; TABLE_ENTRIES]);
        let mut l2 = Box::new([[0u64; TABLE_ENTRIES]; L2_TABLES]);
        let r = plan(ram, &[], image, &mut l1, &mut l2, L2_BASE);
        (r, l1, l2)
    }

    /// What EL2 gets for `pa`: the output address and whether it is
    /// Normal memory (else Device, execute-never).
    fn walk(
        l1: &[u64; TABLE_ENTRIES],
        l2: &[[u64; TABLE_ENTRIES]; L2_TABLES],
        pa: u64,
    ) -> (u64, bool) {
        let e = l1[(pa / GIB) as usize];
        let (desc, size) = if e & 0b11 == TABLE {
            let t = ((e & !0xfff) - L2_BASE) / 4096;
            (l2[t as usize][((pa % GIB) / BLOCK_2M) as usize], BLOCK_2M)
        } else {
            (e, GIB)
        };
        let out = desc & ((1 << 48) - 1) & !(size - 1);
        let normal = desc & 0xfff == NORMAL & 0xfff && desc & XN == 0;
        let device = desc & 0xfff == DEVICE & 0xfff && desc & XN != 0;
        assert!(normal != device, "{desc:#x} is one or the other");
        (out + pa % size, normal)
    }

    #[test]
    fn qemu_virt_ram_is_normal_and_the_first_gigabyte_device() {
        let ram = [bank(0x4000_0000, 1024 * MIB + 512 * MIB)];
        let (r, l1, l2) = run(&ram, 0x4020_0000..0x4060_0000);
        assert_eq!(
            r,
            Ok(El2MapStats {
                ram_gib: 1,
                l2_tables: 1,
                ram_2m: 256
            })
        );
        assert_eq!(walk(&l1, &l2, 0x0900_0000), (0x0900_0000, false));
        assert_eq!(walk(&l1, &l2, 0x4020_0000), (0x4020_0000, true));
        assert_eq!(walk(&l1, &l2, 0x9FE0_0000), (0x9FE0_0000, true));
        assert_eq!(walk(&l1, &l2, 0xA000_0000), (0xA000_0000, false));
        assert_eq!(walk(&l1, &l2, 255 * GIB), (255 * GIB, false));
        assert_eq!(l1[256], 0, "nothing beyond the map");
    }

    #[test]
    fn zcu102_low_and_high_banks() {
        // RAM at 0 (2 GiB) and at 32 GiB (2 GiB); devices in the 4th GiB.
        let ram = [bank(0, 2 * GIB), bank(0x8_0000_0000, 2 * GIB)];
        let (r, l1, l2) = run(&ram, 0x20_0000..0x60_0000);
        assert_eq!(
            r,
            Ok(El2MapStats {
                ram_gib: 4,
                l2_tables: 0,
                ram_2m: 0
            })
        );
        assert_eq!(walk(&l1, &l2, 0x20_0000), (0x20_0000, true));
        assert_eq!(
            walk(&l1, &l2, 0xFF00_0000),
            (0xFF00_0000, false),
            "the UART and GIC are device memory"
        );
        assert_eq!(walk(&l1, &l2, 0x8_0000_0000), (0x8_0000_0000, true));
        assert_eq!(walk(&l1, &l2, 0x8_8000_0000), (0x8_8000_0000, false));
    }

    #[test]
    fn a_ragged_bank_end_stays_device_and_the_image_must_be_ram() {
        let ram = [bank(0x4000_0000, 256 * MIB + MIB)];
        let (r, l1, l2) = run(&ram, 0x4020_0000..0x4060_0000);
        assert_eq!(
            r.map(|s| s.ram_2m),
            Ok(128),
            "the last, partial 2 MiB is not RAM"
        );
        assert_eq!(walk(&l1, &l2, 0x5000_0000), (0x5000_0000, false));
        let (r, _, _) = run(&ram, 0x6000_0000..0x6040_0000);
        assert_eq!(r, Err(El2MapError::ImageNotInRam));
    }

    #[test]
    fn no_map_reservations_are_not_memory_to_el2() {
        let ram = [bank(0x4000_0000, GIB)];
        let firmware = ReservedRegion {
            region: bank(0x7ff0_0000, MIB),
            no_map: true,
        };
        let shared = ReservedRegion {
            region: bank(0x7000_0000, 2 * MIB),
            no_map: false,
        };
        let mut l1 = Box::new([0u64; TABLE_ENTRIES]);
        let mut l2 = Box::new([[0u64; TABLE_ENTRIES]; L2_TABLES]);
        let r = plan(
            &ram,
            &[firmware, shared],
            0x4020_0000..0x4060_0000,
            &mut l1,
            &mut l2,
            L2_BASE,
        );
        assert_eq!(r.map(|s| (s.l2_tables, s.ram_2m)), Ok((1, 511)));
        assert_eq!(walk(&l1, &l2, 0x7ff0_0000), (0x7ff0_0000, false), "no-map");
        assert_eq!(
            walk(&l1, &l2, 0x7fe0_0000),
            (0x7fe0_0000, false),
            "its whole 2 MiB"
        );
        assert_eq!(
            walk(&l1, &l2, 0x7000_0000),
            (0x7000_0000, true),
            "mapped reservation"
        );
        let r = plan(
            &ram,
            &[firmware],
            0x7fe0_0000..0x7fe0_1000,
            &mut l1,
            &mut l2,
            L2_BASE,
        );
        assert_eq!(r, Err(El2MapError::ImageNotInRam));
    }

    #[test]
    fn too_many_mixed_gigabytes_is_an_error() {
        let ram: Vec<PhysRegion> = (1..=9).map(|g| bank(g * GIB, 2 * MIB)).collect();
        let (r, _, _) = run(&ram, GIB..GIB + 2 * MIB);
        assert_eq!(r, Err(El2MapError::TooManyMixedGigabytes));
    }

    proptest! {
        /// Every 2 MiB block below 256 GiB is Normal exactly when a bank
        /// covers it whole, Device (never executable) otherwise, and maps
        /// to itself.
        #[test]
        fn normal_exactly_where_ram_is(
            banks in proptest::collection::vec((0u64..64, 1u64..600), 1..4),
            probes in proptest::collection::vec(0u64..(64 * 512), 32),
        ) {
            let ram: Vec<PhysRegion> = banks
                .iter()
                .map(|&(g, blocks)| bank(g * GIB + (g % 3) * MIB, blocks * BLOCK_2M))
                .collect();
            let image = ram[0].base.0.next_multiple_of(BLOCK_2M);
            let (r, l1, l2) = run(&ram, image..image + 1);
            match r {
                Err(El2MapError::TooManyMixedGigabytes) => {}
                Err(e) => prop_assert!(!covered(&ram, &[], image), "{e}"),
                Ok(_) => for p in probes {
                    let pa = p * BLOCK_2M + 4096;
                    prop_assert_eq!(walk(&l1, &l2, pa), (pa, covered(&ram, &[], pa - 4096)));
                },
            }
        }
    }
}
