//! Per-VM stage-2 translation tables (IPA → PA), 4 KiB granule.
//!
//! [`config_for`] turns the CPU's `ID_AA64MMFR0_EL1`/`ID_AA64MMFR1_EL1` into a
//! [`Stage2Config`]: the IPA size, a legal start level with concatenated root
//! tables, and the matching `VTCR_EL2` value. [`Stage2Table`] builds the
//! tables themselves through a [`TableMemory`], which the hypervisor implements
//! over identity-mapped physical pages and the tests over a `Vec`.
//!
//! Invariants:
//! - Every table this module links is a zeroed, 4 KiB-aligned page it got from
//!   [`TableMemory::alloc_table`]; the root is `concatenated` contiguous pages
//!   aligned to their total size (Arm ARM DDI 0487, "Concatenated translation tables
//!   for the initial stage 2 lookup").
//! - [`Stage2Table::map`] never replaces a valid descriptor: the whole range is
//!   checked for existing mappings before the first write, so a rejected call
//!   leaves the tables untouched. Because nothing is ever overwritten, building
//!   a table needs no break-before-make and no TLB maintenance.
//! - Output addresses are at most 48 bits (no FEAT_LPA/FEAT_LPA2), so the IPA
//!   size is capped at 48 bits too.

use core::fmt;

use crate::addr::{Ipa, Pa};

/// Translation granule and page size: 4 KiB.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a level-2 block: 2 MiB.
pub const BLOCK_2M: u64 = 2 << 20;
/// Size of a level-1 block: 1 GiB.
pub const BLOCK_1G: u64 = 1 << 30;
/// Widest IPA and output address Stratum uses: 48 bits (no FEAT_LPA/LPA2).
pub const MAX_ADDRESS_BITS: u8 = 48;
/// Descriptors per 4 KiB table.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Most root tables the architecture allows to be concatenated.
pub const MAX_CONCATENATED: u8 = 16;

/// How a VM's stage-2 translation is set up: the IPA size, where the walk
/// starts and the `VTCR_EL2` value that says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Config {
    /// IPA size in bits (32..=48); `VTCR_EL2.T0SZ = 64 - ipa_bits`.
    pub ipa_bits: u8,
    /// Level of the initial lookup (0, 1 or 2 with the 4 KiB granule).
    pub start_level: u8,
    /// Number of concatenated root tables (1, 2, 4, 8 or 16).
    pub concatenated: u8,
    /// VMID width in bits (8 or 16); 16 sets `VTCR_EL2.VS`.
    pub vmid_bits: u8,
    /// The value to program into `VTCR_EL2`.
    pub vtcr: u64,
}

// VTCR_EL2 fields (Arm ARM DDI 0487, register description "VTCR_EL2").
const VTCR_T0SZ_SHIFT: u32 = 0; // [5:0]
const VTCR_SL0_SHIFT: u32 = 6; // [7:6]
const VTCR_IRGN0_SHIFT: u32 = 8; // [9:8]
const VTCR_ORGN0_SHIFT: u32 = 10; // [11:10]
const VTCR_SH0_SHIFT: u32 = 12; // [13:12]
const VTCR_TG0_SHIFT: u32 = 14; // [15:14]
const VTCR_PS_SHIFT: u32 = 16; // [18:16]
const VTCR_VS: u64 = 1 << 19;
const VTCR_RES1: u64 = 1 << 31;
/// IRGN0/ORGN0 = 0b01: Normal, write-back read-allocate write-allocate cacheable.
const VTCR_CACHE_WBWA: u64 = 0b01;
/// SH0 = 0b11: inner shareable.
const VTCR_SH_INNER: u64 = 0b11;
/// TG0 = 0b00: 4 KiB granule.
const VTCR_TG0_4K: u64 = 0b00;
/// `PARange`/`PS` encoding of 48 bits, the widest we use.
const PARANGE_48: u64 = 0b0101;

/// Builds the stage-2 configuration for this CPU.
///
/// - IPA size = the PA size from `ID_AA64MMFR0_EL1.PARange` (bits \[3:0\]:
///   0b0000 32, 0b0001 36, 0b0010 40, 0b0011 42, 0b0100 44, 0b0101 48 bits),
///   capped at 48 bits: 52-bit and wider values (and any value reserved when
///   this was written) are treated as 48. `VTCR_EL2.PS` gets the capped value.
/// - The start level is the deepest one whose root, with up to 16
///   concatenated tables, still covers the IPA size: fewer lookup levels per
///   TLB miss. With the 4 KiB granule this gives 32 bits → level 2 × 4
///   tables; 36 → level 1 × 1; 40 → level 1 × 2; 42 → level 1 × 8;
///   44 → level 0 × 1; 48 → level 0 × 1. All are legal `SL0`/`T0SZ` pairs
///   (Arm ARM "Concatenated translation tables for the initial stage 2
///   lookup" and the `VTCR_EL2.SL0` description: `SL0` 0b00 = level 2,
///   0b01 = level 1, 0b10 = level 0).
/// - Table walks are inner-shareable, write-back write-allocate cacheable.
/// - VMID width from `ID_AA64MMFR1_EL1.VMIDBits` (bits \[7:4\]: 0b0010 = 16
///   bits, which sets `VTCR_EL2.VS`; anything else = 8 bits).
pub fn config_for(id_aa64mmfr0_el1: u64, id_aa64mmfr1_el1: u64) -> Stage2Config {
    let parange = (id_aa64mmfr0_el1 & 0xf).min(PARANGE_48);
    let ipa_bits: u8 = match parange {
        0b0000 => 32,
        0b0001 => 36,
        0b0010 => 40,
        0b0011 => 42,
        0b0100 => 44,
        _ => 48,
    };
    let (start_level, concatenated) = geometry(ipa_bits);
    let vmid_bits: u8 = if (id_aa64mmfr1_el1 >> 4) & 0xf == 0b0010 {
        16
    } else {
        8
    };
    let sl0: u64 = match start_level {
        0 => 0b10,
        1 => 0b01,
        _ => 0b00,
    };
    let mut vtcr = VTCR_RES1
        | (u64::from(64 - ipa_bits) << VTCR_T0SZ_SHIFT)
        | (sl0 << VTCR_SL0_SHIFT)
        | (VTCR_CACHE_WBWA << VTCR_IRGN0_SHIFT)
        | (VTCR_CACHE_WBWA << VTCR_ORGN0_SHIFT)
        | (VTCR_SH_INNER << VTCR_SH0_SHIFT)
        | (VTCR_TG0_4K << VTCR_TG0_SHIFT)
        | (parange << VTCR_PS_SHIFT);
    if vmid_bits == 16 {
        vtcr |= VTCR_VS;
    }
    Stage2Config {
        ipa_bits,
        start_level,
        concatenated,
        vmid_bits,
        vtcr,
    }
}

/// Deepest legal start level for `ipa_bits` and the number of concatenated
/// root tables it needs.
fn geometry(ipa_bits: u8) -> (u8, u8) {
    // Level 3 starts need FEAT_TTST; never use them.
    for level in (0..=2u8).rev() {
        let shift = level_shift(level);
        if u32::from(ipa_bits) <= shift {
            continue;
        }
        let root_bits = u32::from(ipa_bits) - shift;
        // One table resolves 9 bits; up to 16 concatenated tables add 4.
        if root_bits <= 9 + 4 {
            let tables = 1u32 << root_bits.saturating_sub(9);
            return (level, tables as u8);
        }
    }
    // ipa_bits ≤ 48 always fits at level 0 with root_bits ≤ 9.
    (0, 1)
}

impl Stage2Config {
    /// Whether this is a legal 4 KiB-granule stage-2 geometry: IPA size
    /// 32..=48 bits, start level 0..=2, and `concatenated` exactly the number
    /// of root tables that start level needs (no level-0 concatenation).
    pub fn is_valid(&self) -> bool {
        if !(32..=MAX_ADDRESS_BITS).contains(&self.ipa_bits) || self.start_level > 2 {
            return false;
        }
        if self.vmid_bits != 8 && self.vmid_bits != 16 {
            return false;
        }
        let shift = level_shift(self.start_level);
        let bits = u32::from(self.ipa_bits);
        if bits <= shift || bits - shift > 13 {
            return false;
        }
        let tables = 1u32 << (bits - shift).saturating_sub(9);
        u32::from(self.concatenated) == tables
    }

    /// Largest VMID this configuration can tag (255 or 65535).
    pub const fn max_vmid(&self) -> u16 {
        if self.vmid_bits >= 16 { u16::MAX } else { 0xff }
    }

    /// Size of the IPA space in bytes.
    pub const fn ipa_limit(&self) -> u64 {
        1u64 << self.ipa_bits
    }
}

/// Memory that translation tables live in. The hypervisor implements it over
/// identity-mapped physical pages; tests use a `Vec`.
pub trait TableMemory {
    /// Allocates `pages` contiguous, zeroed 4 KiB pages aligned to
    /// `pages * 4 KiB` (a concatenated root needs that; `pages` is a power of
    /// two), or `None` when out of memory.
    fn alloc_table(&mut self, pages: usize) -> Option<Pa>;
    /// Reads descriptor `index` of the table at `table`. `index` may reach
    /// `512 * pages - 1` for a concatenated root of `pages` pages.
    fn read(&self, table: Pa, index: usize) -> u64;
    /// Writes descriptor `index` of the table at `table` (same range as
    /// [`read`](Self::read)). The implementation makes the write visible to
    /// the table walker (e.g. `dsb ishst` before the table is used).
    fn write(&mut self, table: Pa, index: usize, desc: u64);
}

/// What kind of memory a mapping is, and what the guest may do with it.
///
/// Encoded with `HCR_EL2.FWB == 0`, so the stage-2 `MemAttr` combines with the
/// guest's stage-1 attributes (the more restrictive wins): RAM mapped Normal
/// write-back lets the guest choose its own cacheability, and device memory
/// mapped Device-nGnRE can never become cacheable whatever the guest does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// Guest RAM: Normal, inner/outer write-back (`MemAttr` 0b1111), inner
    /// shareable, read/write (`S2AP` 0b11), executable.
    RamRwx,
    /// Read-only image (ROM, flash): as [`RamRwx`](Self::RamRwx) but
    /// `S2AP` 0b01 (read-only), so writes take a stage-2 permission fault.
    RomRx,
    /// Device registers passed through: Device-nGnRE (`MemAttr` 0b0001),
    /// read/write, never executable (`XN` 0b10).
    DeviceRw,
}

// Stage-2 block and page descriptor fields (Arm ARM DDI 0487, "VMSAv8-64
// translation table format descriptors" and "Stage 2 memory region attributes").
const DESC_VALID: u64 = 1 << 0;
/// Bit 1: table (levels 0-2) or page (level 3); clear = block.
const DESC_TABLE_OR_PAGE: u64 = 1 << 1;
/// Output address / next-level table address, bits \[47:12\].
const DESC_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
const MEMATTR_SHIFT: u32 = 2; // [5:2]
const MEMATTR_NORMAL_WB: u64 = 0b1111;
const MEMATTR_DEVICE_NGNRE: u64 = 0b0001;
const S2AP_SHIFT: u32 = 6; // [7:6]
const S2AP_RO: u64 = 0b01;
const S2AP_RW: u64 = 0b11;
const SH_SHIFT: u32 = 8; // [9:8]
const SH_INNER: u64 = 0b11;
const AF: u64 = 1 << 10;
/// `XN[1:0]` at \[54:53\]. 0b10 is "not executable at EL1 or EL0" both with
/// FEAT_XNX and without it (where bit 53 is RES0 and bit 54 is XN).
const XN_NEVER: u64 = 0b10 << 53;
/// Every attribute bit this module sets in a leaf descriptor.
const LEAF_ATTR_MASK: u64 =
    (0xf << MEMATTR_SHIFT) | (0b11 << S2AP_SHIFT) | (0b11 << SH_SHIFT) | AF | (0b11 << 53);

impl Mapping {
    /// The attribute bits of a leaf (block or page) descriptor. Device memory
    /// leaves `SH` at 0: shareability is ignored for Device memory, which is
    /// always treated as Outer Shareable.
    pub const fn leaf_attributes(self) -> u64 {
        match self {
            Self::RamRwx => {
                (MEMATTR_NORMAL_WB << MEMATTR_SHIFT)
                    | (S2AP_RW << S2AP_SHIFT)
                    | (SH_INNER << SH_SHIFT)
                    | AF
            }
            Self::RomRx => {
                (MEMATTR_NORMAL_WB << MEMATTR_SHIFT)
                    | (S2AP_RO << S2AP_SHIFT)
                    | (SH_INNER << SH_SHIFT)
                    | AF
            }
            Self::DeviceRw => {
                (MEMATTR_DEVICE_NGNRE << MEMATTR_SHIFT) | (S2AP_RW << S2AP_SHIFT) | AF | XN_NEVER
            }
        }
    }

    /// The mapping a leaf descriptor's attributes encode, if it is one of ours.
    fn from_leaf(desc: u64) -> Option<Self> {
        let attrs = desc & LEAF_ATTR_MASK;
        [Self::RamRwx, Self::RomRx, Self::DeviceRw]
            .into_iter()
            .find(|m| m.leaf_attributes() == attrs)
    }
}

/// Why a stage-2 operation failed. Nothing was changed when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// the mapping is empty (size 0)
    Empty,
    /// the IPA, PA or size is not a multiple of 4 KiB
    Misaligned,
    /// the IPA range reaches beyond the VM's IPA size
    IpaOutOfRange,
    /// the physical range reaches beyond the 48-bit output address space
    PaOutOfRange,
    /// part of the IPA range is already mapped (first mapped address given)
    AlreadyMapped(Ipa),
    /// no memory left for a translation table
    OutOfTables,
    /// the table allocator returned a misaligned or out-of-range table
    BadTableMemory,
    /// the stage-2 configuration is not a legal 4 KiB-granule geometry
    BadConfig,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the mapping is empty (size 0)"),
            Self::Misaligned => f.write_str("the IPA, PA or size is not a multiple of 4 KiB"),
            Self::IpaOutOfRange => f.write_str("the IPA range reaches beyond the VM's IPA size"),
            Self::PaOutOfRange => {
                f.write_str("the physical range reaches beyond the 48-bit output address space")
            }
            Self::AlreadyMapped(ipa) => write!(f, "{ipa:?} is already mapped"),
            Self::OutOfTables => f.write_str("no memory left for a translation table"),
            Self::BadTableMemory => {
                f.write_str("the table allocator returned a misaligned or out-of-range table")
            }
            Self::BadConfig => {
                f.write_str("the stage-2 configuration is not a legal 4 KiB-granule geometry")
            }
        }
    }
}

/// What one [`Stage2Table::map`] call used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    /// 1 GiB level-1 blocks written.
    pub blocks_1g: u64,
    /// 2 MiB level-2 blocks written.
    pub blocks_2m: u64,
    /// 4 KiB level-3 pages written.
    pub pages_4k: u64,
    /// Translation tables allocated (4 KiB each).
    pub tables: u64,
}

impl MapStats {
    /// Bytes of IPA space the written blocks and pages cover.
    pub const fn mapped_bytes(&self) -> u64 {
        self.blocks_1g * BLOCK_1G + self.blocks_2m * BLOCK_2M + self.pages_4k * PAGE_SIZE
    }
}

/// One VM's stage-2 translation tables.
#[derive(Debug)]
pub struct Stage2Table {
    root: Pa,
    cfg: Stage2Config,
}

/// Bit position of the IPA bits a level resolves (4 KiB granule):
/// level 0 → 39, 1 → 30, 2 → 21, 3 → 12.
const fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}

/// Bytes one descriptor at `level` covers.
const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

impl Stage2Table {
    /// Allocates an empty root (`cfg.concatenated` pages) for a VM.
    pub fn new(mem: &mut impl TableMemory, cfg: Stage2Config) -> Result<Self, MapError> {
        if !cfg.is_valid() {
            return Err(MapError::BadConfig);
        }
        let pages = usize::from(cfg.concatenated);
        let root = alloc_checked(mem, pages)?;
        Ok(Self { root, cfg })
    }

    /// Physical address of the root table(s).
    pub const fn root(&self) -> Pa {
        self.root
    }

    /// The configuration the table was built for.
    pub const fn config(&self) -> &Stage2Config {
        &self.cfg
    }

    /// `VTTBR_EL2` for this table tagged with `vmid` (Arm ARM DDI 0487
    /// "VTTBR_EL2"): `BADDR` in \[47:1\], `VMID` in \[63:48\], `CnP` (bit 0)
    /// clear. The VMID is masked to the configured width (8 or 16 bits); the
    /// VMID allocator must stay within [`Stage2Config::max_vmid`].
    pub const fn vttbr(&self, vmid: u16) -> u64 {
        let vmid = (vmid & self.cfg.max_vmid()) as u64;
        (self.root.0 & 0x0000_ffff_ffff_fffe) | (vmid << 48)
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)` as `mapping`, using at
    /// each step the largest translation that fits: a 1 GiB block at level 1
    /// when IPA and PA are both 1 GiB aligned and at least 1 GiB remains (and
    /// the walk starts at level 1 or above), else a 2 MiB block at level 2
    /// likewise, else 4 KiB pages.
    ///
    /// Rejects, before writing anything: a zero or unaligned (not 4 KiB)
    /// range, an IPA range beyond the IPA size, a PA range beyond 48 bits, and
    /// any overlap with an existing mapping. If table memory runs out midway,
    /// the leaves written by this call are cleared again (the tables it linked
    /// stay, empty), so the translation is as before and
    /// [`MapError::OutOfTables`] is returned.
    ///
    /// An existing, empty next-level table is reused rather than replaced by a
    /// block, so no live table descriptor is ever overwritten.
    pub fn map(
        &mut self,
        mem: &mut impl TableMemory,
        ipa: Ipa,
        pa: Pa,
        size: u64,
        mapping: Mapping,
    ) -> Result<MapStats, MapError> {
        if size == 0 {
            return Err(MapError::Empty);
        }
        if !ipa.is_aligned(PAGE_SIZE)
            || !pa.is_aligned(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
        {
            return Err(MapError::Misaligned);
        }
        let ipa_end = ipa.0.checked_add(size).ok_or(MapError::IpaOutOfRange)?;
        if ipa_end > self.cfg.ipa_limit() {
            return Err(MapError::IpaOutOfRange);
        }
        let pa_end = pa.0.checked_add(size).ok_or(MapError::PaOutOfRange)?;
        if pa_end > 1u64 << MAX_ADDRESS_BITS {
            return Err(MapError::PaOutOfRange);
        }
        if let Some(hit) = self.first_mapped(mem, self.root, self.cfg.start_level, ipa.0, ipa_end) {
            return Err(MapError::AlreadyMapped(Ipa(hit)));
        }
        let mut walk = Walk {
            start: ipa.0,
            pa: pa.0,
            attrs: mapping.leaf_attributes(),
            stats: MapStats::default(),
        };
        let (root, level) = (self.root, self.cfg.start_level);
        match self.map_span(mem, root, level, &mut walk, ipa.0, ipa_end) {
            Ok(()) => Ok(walk.stats),
            Err(e) => {
                self.clear_leaves(mem, root, level, ipa.0, ipa_end);
                Err(e)
            }
        }
    }

    /// Translates `ipa` by walking the tables: the PA it maps to, how it is
    /// mapped and the size of the block or page that maps it. `None` when
    /// unmapped (or beyond the IPA size).
    pub fn translate(&self, mem: &impl TableMemory, ipa: Ipa) -> Option<(Pa, Mapping, u64)> {
        if ipa.0 >= self.cfg.ipa_limit() {
            return None;
        }
        let mut table = self.root;
        let mut level = self.cfg.start_level;
        loop {
            let desc = mem.read(table, self.index(level, ipa.0));
            if desc & DESC_VALID == 0 {
                return None;
            }
            let is_leaf = match (level, desc & DESC_TABLE_OR_PAGE != 0) {
                (3, true) => true,
                // Reserved at level 3; no blocks at level 0 with 4 KiB pages.
                (3, false) | (0, false) => return None,
                (_, true) => false,
                (_, false) => true,
            };
            if !is_leaf {
                table = Pa(desc & DESC_ADDR_MASK);
                level += 1;
                continue;
            }
            let size = level_size(level);
            let base = desc & DESC_ADDR_MASK & !(size - 1);
            let mapping = Mapping::from_leaf(desc)?;
            return Some((Pa(base | (ipa.0 & (size - 1))), mapping, size));
        }
    }

    /// Calls `f` with every leaf of the table, lowest IPA first: its IPA,
    /// its PA, its size and how it is mapped (a leaf with attributes this
    /// module never writes is reported as `None`). For the boot-time
    /// isolation check (which VM's table reaches which memory).
    pub fn for_each_leaf(
        &self,
        mem: &impl TableMemory,
        f: &mut dyn FnMut(Ipa, Pa, u64, Option<Mapping>),
    ) {
        let entries = ENTRIES_PER_TABLE * usize::from(self.cfg.concatenated);
        self.walk_leaves(mem, self.root, self.cfg.start_level, 0, entries, f);
    }

    /// The first leaf that reaches into any of `ranges` (host-physical
    /// `(start, size)` pairs, e.g. the other VMs' RAM): its IPA and PA.
    /// `None` when the table maps none of them.
    pub fn first_reaching(
        &self,
        mem: &impl TableMemory,
        ranges: &[(u64, u64)],
    ) -> Option<(Ipa, Pa)> {
        let mut hit = None;
        self.for_each_leaf(mem, &mut |ipa, pa, size, _| {
            let overlaps = ranges
                .iter()
                .any(|&(start, len)| pa.0 < start.saturating_add(len) && start < pa.0 + size);
            if hit.is_none() && overlaps {
                hit = Some((ipa, pa));
            }
        });
        hit
    }

    fn walk_leaves(
        &self,
        mem: &impl TableMemory,
        table: Pa,
        level: u8,
        base: u64,
        entries: usize,
        f: &mut dyn FnMut(Ipa, Pa, u64, Option<Mapping>),
    ) {
        let size = level_size(level);
        for i in 0..entries {
            let desc = mem.read(table, i);
            if desc & DESC_VALID == 0 {
                continue;
            }
            let ipa = base + i as u64 * size;
            let table_or_page = desc & DESC_TABLE_OR_PAGE != 0;
            if level < 3 && table_or_page {
                let next = Pa(desc & DESC_ADDR_MASK);
                self.walk_leaves(mem, next, level + 1, ipa, ENTRIES_PER_TABLE, f);
            } else if level == 3 && !table_or_page || level == 0 {
                // Reserved encodings: never written, never translated.
            } else {
                let pa = desc & DESC_ADDR_MASK & !(size - 1);
                f(Ipa(ipa), Pa(pa), size, Mapping::from_leaf(desc));
            }
        }
    }

    /// Index of the descriptor for `addr` in a table at `level`. The root
    /// index is not masked to 9 bits: concatenated roots are one big table.
    fn index(&self, level: u8, addr: u64) -> usize {
        let idx = addr >> level_shift(level);
        if level == self.cfg.start_level {
            idx as usize
        } else {
            (idx as usize) % ENTRIES_PER_TABLE
        }
    }

    /// First mapped address in `[start, end)` below `table`, if any.
    fn first_mapped(
        &self,
        mem: &impl TableMemory,
        table: Pa,
        level: u8,
        start: u64,
        end: u64,
    ) -> Option<u64> {
        let span = level_size(level);
        let mut addr = start;
        while addr < end {
            let chunk_end = ((addr & !(span - 1)) + span).min(end);
            let desc = mem.read(table, self.index(level, addr));
            if desc & DESC_VALID != 0 {
                if level < 3 && desc & DESC_TABLE_OR_PAGE != 0 {
                    let next = Pa(desc & DESC_ADDR_MASK);
                    if let Some(hit) = self.first_mapped(mem, next, level + 1, addr, chunk_end) {
                        return Some(hit);
                    }
                } else {
                    return Some(addr);
                }
            }
            addr = chunk_end;
        }
        None
    }

    /// Writes the leaves for `[start, end)` (part of `walk`) below `table`,
    /// a table at `level`; the range is known to be unmapped.
    fn map_span(
        &self,
        mem: &mut impl TableMemory,
        table: Pa,
        level: u8,
        walk: &mut Walk,
        start: u64,
        end: u64,
    ) -> Result<(), MapError> {
        let span = level_size(level);
        let mut addr = start;
        while addr < end {
            let chunk_end = ((addr & !(span - 1)) + span).min(end);
            let pa = walk.pa + (addr - walk.start);
            let idx = self.index(level, addr);
            let desc = mem.read(table, idx);
            if level == 3 {
                mem.write(
                    table,
                    idx,
                    pa | walk.attrs | DESC_TABLE_OR_PAGE | DESC_VALID,
                );
                walk.stats.pages_4k += 1;
            } else if level >= 1
                && desc & DESC_VALID == 0
                && addr.is_multiple_of(span)
                && pa.is_multiple_of(span)
                && chunk_end - addr == span
            {
                mem.write(table, idx, pa | walk.attrs | DESC_VALID);
                if level == 1 {
                    walk.stats.blocks_1g += 1;
                } else {
                    walk.stats.blocks_2m += 1;
                }
            } else {
                let next = if desc & DESC_VALID == 0 {
                    let next = alloc_checked(mem, 1)?;
                    mem.write(table, idx, next.0 | DESC_TABLE_OR_PAGE | DESC_VALID);
                    walk.stats.tables += 1;
                    next
                } else if desc & DESC_TABLE_OR_PAGE != 0 {
                    Pa(desc & DESC_ADDR_MASK)
                } else {
                    // A block here means the overlap check missed it.
                    return Err(MapError::AlreadyMapped(Ipa(addr)));
                };
                self.map_span(mem, next, level + 1, walk, addr, chunk_end)?;
            }
            addr = chunk_end;
        }
        Ok(())
    }

    /// Invalidates every leaf in `[start, end)` below `table` (undoing a
    /// partial map of a range that was unmapped before it).
    fn clear_leaves(&self, mem: &mut impl TableMemory, table: Pa, level: u8, start: u64, end: u64) {
        let span = level_size(level);
        let mut addr = start;
        while addr < end {
            let chunk_end = ((addr & !(span - 1)) + span).min(end);
            let idx = self.index(level, addr);
            let desc = mem.read(table, idx);
            if desc & DESC_VALID != 0 {
                if level < 3 && desc & DESC_TABLE_OR_PAGE != 0 {
                    let next = Pa(desc & DESC_ADDR_MASK);
                    self.clear_leaves(mem, next, level + 1, addr, chunk_end);
                } else {
                    mem.write(table, idx, 0);
                }
            }
            addr = chunk_end;
        }
    }
}

/// One map request, as the recursive walk sees it.
struct Walk {
    /// First IPA of the request.
    start: u64,
    /// PA that `start` maps to.
    pa: u64,
    /// Leaf attribute bits.
    attrs: u64,
    /// What has been written so far.
    stats: MapStats,
}

/// Allocates `pages` table pages and checks the allocator kept its promises.
fn alloc_checked(mem: &mut impl TableMemory, pages: usize) -> Result<Pa, MapError> {
    let table = mem.alloc_table(pages).ok_or(MapError::OutOfTables)?;
    let bytes = PAGE_SIZE * pages as u64;
    let fits = table
        .0
        .checked_add(bytes)
        .is_some_and(|end| end <= 1u64 << MAX_ADDRESS_BITS);
    if !table.is_aligned(bytes) || !fits {
        return Err(MapError::BadTableMemory);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Table memory backed by a `Vec` of pages starting at `BASE`.
    struct FakeMemory {
        pages: Vec<[u64; ENTRIES_PER_TABLE]>,
        limit: usize,
        writes: usize,
    }

    const BASE: u64 = 0x8000_0000;

    impl FakeMemory {
        fn new() -> Self {
            Self::with_limit(usize::MAX)
        }
        fn with_limit(limit: usize) -> Self {
            Self {
                pages: Vec::new(),
                limit,
                writes: 0,
            }
        }
        fn slot(&self, table: Pa, index: usize) -> (usize, usize) {
            let page = usize::try_from((table.0 - BASE) / PAGE_SIZE).expect("small");
            (page + index / ENTRIES_PER_TABLE, index % ENTRIES_PER_TABLE)
        }
        fn snapshot(&self) -> Vec<[u64; ENTRIES_PER_TABLE]> {
            self.pages.clone()
        }
    }

    impl TableMemory for FakeMemory {
        fn alloc_table(&mut self, pages: usize) -> Option<Pa> {
            // Pad to the requested alignment.
            while !self.pages.len().is_multiple_of(pages) {
                self.pages.push([0; ENTRIES_PER_TABLE]);
            }
            if self.pages.len() + pages > self.limit {
                return None;
            }
            let pa = Pa(BASE + self.pages.len() as u64 * PAGE_SIZE);
            for _ in 0..pages {
                self.pages.push([0; ENTRIES_PER_TABLE]);
            }
            Some(pa)
        }
        fn read(&self, table: Pa, index: usize) -> u64 {
            let (p, i) = self.slot(table, index);
            self.pages[p][i]
        }
        fn write(&mut self, table: Pa, index: usize, desc: u64) {
            let (p, i) = self.slot(table, index);
            self.writes += 1;
            self.pages[p][i] = desc;
        }
    }

    const MMFR0_40: u64 = 0b0010;
    const MMFR0_48: u64 = 0b0101;
    const MMFR1_VMID16: u64 = 0b0010 << 4;

    fn table(mmfr0: u64) -> (FakeMemory, Stage2Table) {
        let mut mem = FakeMemory::new();
        let t = Stage2Table::new(&mut mem, config_for(mmfr0, 0)).expect("root");
        (mem, t)
    }

    #[test]
    fn the_leaf_walk_reports_every_mapping_once_in_order() {
        let (mut mem, mut t) = table(MMFR0_40);
        let maps = [
            (
                0x4000_0000u64,
                0x1_4000_0000u64,
                0x4000_0000u64,
                Mapping::RamRwx,
            ),
            (0x0900_0000, 0x0900_0000, 0x1000, Mapping::DeviceRw),
            (0x8020_0000, 0x2_0020_0000, 0x20_3000, Mapping::RamRwx),
        ];
        for (ipa, pa, size, m) in maps {
            t.map(&mut mem, Ipa(ipa), Pa(pa), size, m).expect("maps");
        }
        let mut leaves = Vec::new();
        t.for_each_leaf(&mem, &mut |ipa, pa, size, m| {
            leaves.push((ipa.0, pa.0, size, m))
        });
        assert!(
            leaves.windows(2).all(|w| w[0].0 + w[0].2 <= w[1].0),
            "in order"
        );
        for (ipa, pa, size, m) in maps {
            let covered: u64 = leaves
                .iter()
                .filter(|l| l.0 >= ipa && l.0 < ipa + size)
                .map(|l| {
                    assert_eq!(l.1 - pa, l.0 - ipa, "IPA and PA move together");
                    assert_eq!(l.3, Some(m));
                    l.2
                })
                .sum();
            assert_eq!(covered, size, "the mapping at {ipa:#x} whole");
        }
        let total: u64 = leaves.iter().map(|l| l.2).sum();
        assert_eq!(total, 0x4000_0000 + 0x1000 + 0x20_3000, "nothing else");
        assert!(leaves.iter().any(|l| l.2 == BLOCK_1G), "a 1 GiB block");
        assert!(leaves.iter().any(|l| l.2 == BLOCK_2M), "a 2 MiB block");
        // Which memory the table reaches.
        assert_eq!(
            t.first_reaching(&mem, &[(0x3_0000_0000, 0x1000_0000)]),
            None
        );
        assert_eq!(
            t.first_reaching(&mem, &[(0x3_0000_0000, 1), (0x2_0040_0000, 0x1000)]),
            Some((Ipa(0x8040_0000), Pa(0x2_0040_0000))),
            "the first page past the 2 MiB block"
        );
        assert_eq!(
            t.first_reaching(&mem, &[(0x2_0000_0000, 0x20_1000)]),
            Some((Ipa(0x8020_0000), Pa(0x2_0020_0000))),
            "the block's first byte"
        );
        assert_eq!(
            t.first_reaching(&mem, &[(0x2_0000_0000, 0x20_0000)]),
            None,
            "just below"
        );
    }

    #[test]
    fn every_parange() {
        // (PARange, ipa_bits, start level, concatenated, SL0, PS)
        let cases = [
            (0b0000, 32, 2, 4, 0b00, 0b000),
            (0b0001, 36, 1, 1, 0b01, 0b001),
            (0b0010, 40, 1, 2, 0b01, 0b010),
            (0b0011, 42, 1, 8, 0b01, 0b011),
            (0b0100, 44, 0, 1, 0b10, 0b100),
            (0b0101, 48, 0, 1, 0b10, 0b101),
            (0b0110, 48, 0, 1, 0b10, 0b101),
            (0b0111, 48, 0, 1, 0b10, 0b101),
            (0b1111, 48, 0, 1, 0b10, 0b101),
        ];
        for (parange, bits, level, concat, sl0, ps) in cases {
            // Other MMFR0 fields must not matter.
            let cfg = config_for(0xffff_ffff_ffff_fff0 | parange, 0);
            assert_eq!(cfg.ipa_bits, bits, "PARange {parange:#b}");
            assert_eq!(cfg.start_level, level, "PARange {parange:#b}");
            assert_eq!(cfg.concatenated, concat, "PARange {parange:#b}");
            assert_eq!(cfg.vmid_bits, 8);
            assert!(cfg.is_valid());
            assert_eq!(cfg.vtcr & 0x3f, u64::from(64 - bits));
            assert_eq!((cfg.vtcr >> 6) & 0b11, sl0);
            assert_eq!((cfg.vtcr >> 16) & 0b111, ps);
            assert_eq!(cfg.vtcr & (1 << 19), 0, "VS");
            assert_ne!(cfg.vtcr & (1 << 31), 0, "RES1");
            // IRGN0 = ORGN0 = WBWA, SH0 = inner, TG0 = 4K.
            assert_eq!((cfg.vtcr >> 8) & 0xff, 0b00_11_01_01);
            // Nothing else set.
            assert_eq!(cfg.vtcr & !0x8007_ffff, 0);
        }
    }

    #[test]
    fn vtcr_known_values() {
        // Cortex-A57 (40-bit PA): the classic KVM value.
        assert_eq!(config_for(MMFR0_40, 0).vtcr, 0x8002_3558);
        // 48 bits, 16-bit VMIDs (QEMU -cpu max).
        let cfg = config_for(MMFR0_48, MMFR1_VMID16);
        assert_eq!(cfg.vtcr, 0x800d_3590);
        assert_eq!(cfg.vmid_bits, 16);
        assert_eq!(cfg.max_vmid(), u16::MAX);
        // Reserved VMIDBits values mean 8 bits.
        assert_eq!(config_for(MMFR0_48, 0b0001 << 4).vmid_bits, 8);
        assert_eq!(config_for(MMFR0_48, 0b1111 << 4).vmid_bits, 8);
    }

    #[test]
    fn invalid_configs_rejected() {
        let good = config_for(MMFR0_40, 0);
        let mut mem = FakeMemory::new();
        for bad in [
            Stage2Config {
                concatenated: 1,
                ..good
            },
            Stage2Config {
                concatenated: 16,
                ..good
            },
            Stage2Config {
                start_level: 0,
                ..good
            },
            Stage2Config {
                start_level: 3,
                ..good
            },
            Stage2Config {
                ipa_bits: 52,
                ..good
            },
            Stage2Config {
                ipa_bits: 31,
                ..good
            },
            Stage2Config {
                vmid_bits: 12,
                ..good
            },
            // Level 2 with 40 bits would need 512 concatenated tables.
            Stage2Config {
                start_level: 2,
                concatenated: 16,
                ..good
            },
        ] {
            assert!(!bad.is_valid(), "{bad:?}");
            assert_eq!(
                Stage2Table::new(&mut mem, bad).err(),
                Some(MapError::BadConfig)
            );
        }
        assert!(mem.pages.is_empty());
    }

    #[test]
    fn root_is_concatenated_and_aligned() {
        for parange in 0..=5 {
            let mut mem = FakeMemory::new();
            mem.pages.push([0; ENTRIES_PER_TABLE]); // misalign the next free page
            let cfg = config_for(parange, 0);
            let t = Stage2Table::new(&mut mem, cfg).expect("root");
            let bytes = u64::from(cfg.concatenated) * PAGE_SIZE;
            assert!(t.root().is_aligned(bytes));
            // The last IPA page indexes the root's last entry, within the
            // concatenated pages.
            let last = cfg.ipa_limit() - PAGE_SIZE;
            let entries = 1usize << (u32::from(cfg.ipa_bits) - level_shift(cfg.start_level));
            assert_eq!(t.index(cfg.start_level, last), entries - 1);
            assert!(entries <= usize::from(cfg.concatenated) * ENTRIES_PER_TABLE);
            assert!(entries > (usize::from(cfg.concatenated) - 1) * ENTRIES_PER_TABLE);
        }
    }

    #[test]
    fn bad_allocator_detected() {
        struct Misaligned(FakeMemory);
        impl TableMemory for Misaligned {
            fn alloc_table(&mut self, pages: usize) -> Option<Pa> {
                self.0.alloc_table(pages).map(|pa| Pa(pa.0 + 8))
            }
            fn read(&self, t: Pa, i: usize) -> u64 {
                self.0.read(t, i)
            }
            fn write(&mut self, t: Pa, i: usize, d: u64) {
                self.0.write(t, i, d)
            }
        }
        let mut mem = Misaligned(FakeMemory::new());
        assert_eq!(
            Stage2Table::new(&mut mem, config_for(MMFR0_40, 0)).err(),
            Some(MapError::BadTableMemory)
        );
    }

    #[test]
    fn vttbr_values() {
        let (_, t) = table(MMFR0_40);
        let root = t.root().0;
        assert_eq!(t.vttbr(0), root);
        assert_eq!(t.vttbr(5), root | (5 << 48));
        // 8-bit VMIDs: the upper byte is masked off.
        assert_eq!(t.vttbr(0x1234), root | (0x34 << 48));
        assert_eq!(t.vttbr(0) & 1, 0, "CnP clear");

        let mut mem = FakeMemory::new();
        let t16 = Stage2Table::new(&mut mem, config_for(MMFR0_48, MMFR1_VMID16)).expect("root");
        assert_eq!(t16.vttbr(0xabcd), t16.root().0 | (0xabcd << 48));
    }

    #[test]
    fn one_gib_aligned_is_one_block() {
        let (mut mem, mut t) = table(MMFR0_40);
        let stats = t
            .map(
                &mut mem,
                Ipa(0x4000_0000),
                Pa(0x4000_0000),
                BLOCK_1G,
                Mapping::RamRwx,
            )
            .expect("map");
        assert_eq!(
            stats,
            MapStats {
                blocks_1g: 1,
                ..MapStats::default()
            }
        );
        assert_eq!(
            t.translate(&mem, Ipa(0x4000_1234)),
            Some((Pa(0x4000_1234), Mapping::RamRwx, BLOCK_1G))
        );
        assert_eq!(t.translate(&mem, Ipa(0x3fff_ffff)), None);
        assert_eq!(t.translate(&mem, Ipa(0x8000_0000)), None);
    }

    #[test]
    fn one_gib_plus_a_page() {
        let (mut mem, mut t) = table(MMFR0_40);
        let stats = t
            .map(
                &mut mem,
                Ipa(0x4000_0000),
                Pa(0xc000_0000),
                BLOCK_1G + PAGE_SIZE,
                Mapping::RamRwx,
            )
            .expect("map");
        assert_eq!(stats.blocks_1g, 1);
        assert_eq!(stats.blocks_2m, 0);
        assert_eq!(stats.pages_4k, 1);
        assert_eq!(stats.tables, 2, "one level-2 and one level-3 table");
        assert_eq!(
            t.translate(&mem, Ipa(0x8000_0fff)),
            Some((Pa(0x1_0000_0fff), Mapping::RamRwx, PAGE_SIZE))
        );
        assert_eq!(t.translate(&mem, Ipa(0x8000_1000)), None);
    }

    #[test]
    fn pa_only_2m_aligned_gives_2m_blocks() {
        let (mut mem, mut t) = table(MMFR0_40);
        let stats = t
            .map(
                &mut mem,
                Ipa(0x4000_0000),
                Pa(0x8020_0000),
                BLOCK_1G,
                Mapping::RamRwx,
            )
            .expect("map");
        assert_eq!(stats.blocks_1g, 0);
        assert_eq!(stats.blocks_2m, 512);
        assert_eq!(stats.pages_4k, 0);
        assert_eq!(stats.mapped_bytes(), BLOCK_1G);
        assert_eq!(
            t.translate(&mem, Ipa(0x7fff_ffff)),
            Some((Pa(0xc01f_ffff), Mapping::RamRwx, BLOCK_2M))
        );
    }

    #[test]
    fn page_misaligned_pair_gives_pages() {
        let (mut mem, mut t) = table(MMFR0_40);
        // IPA 2 MiB aligned, PA only 4 KiB aligned: pages all the way.
        let stats = t
            .map(
                &mut mem,
                Ipa(0x4000_0000),
                Pa(0x9000_1000),
                4 * BLOCK_2M,
                Mapping::RamRwx,
            )
            .expect("map");
        assert_eq!(stats.blocks_2m, 0);
        assert_eq!(stats.pages_4k, 4 * 512);
        // An odd size in the middle of nowhere: head pages, blocks, tail pages.
        let stats = t
            .map(
                &mut mem,
                Ipa(0x1_001f_f000),
                Pa(0x2_001f_f000),
                PAGE_SIZE + 2 * BLOCK_2M + 3 * PAGE_SIZE,
                Mapping::RamRwx,
            )
            .expect("map");
        assert_eq!(stats.pages_4k, 4);
        assert_eq!(stats.blocks_2m, 2);
        assert_eq!(
            t.translate(&mem, Ipa(0x1_0060_2000)),
            Some((Pa(0x2_0060_2000), Mapping::RamRwx, PAGE_SIZE))
        );
        assert_eq!(t.translate(&mem, Ipa(0x1_0060_3000)), None);
    }

    #[test]
    fn no_1g_blocks_from_level_2_start() {
        // 32-bit IPA: the walk starts at level 2, so 1 GiB becomes 2 MiB blocks.
        let (mut mem, mut t) = table(0b0000);
        let stats = t
            .map(
                &mut mem,
                Ipa(0x4000_0000),
                Pa(0x4000_0000),
                BLOCK_1G,
                Mapping::RamRwx,
            )
            .expect("map");
        assert_eq!(stats.blocks_1g, 0);
        assert_eq!(stats.blocks_2m, 512);
        assert_eq!(stats.tables, 0, "the concatenated root is level 2");
        assert_eq!(
            t.translate(&mem, Ipa(0xffff_f000)),
            None,
            "top of the 4 GiB space unmapped"
        );
    }

    #[test]
    fn level0_start_uses_1g_blocks_below() {
        let (mut mem, mut t) = table(MMFR0_48);
        let stats = t
            .map(
                &mut mem,
                Ipa(0x7f_c000_0000),
                Pa(0x40_0000_0000),
                2 * BLOCK_1G,
                Mapping::RamRwx,
            )
            .expect("map");
        // Crosses a level-0 (512 GiB) boundary: two level-1 tables, one block each.
        assert_eq!(stats.blocks_1g, 2);
        assert_eq!(stats.tables, 2);
        assert_eq!(
            t.translate(&mem, Ipa(0x80_0000_0010)),
            Some((Pa(0x40_4000_0010), Mapping::RamRwx, BLOCK_1G))
        );
        // The very top of a 48-bit IPA space.
        let top = Ipa((1 << 48) - PAGE_SIZE);
        t.map(&mut mem, top, Pa(0x1000), PAGE_SIZE, Mapping::DeviceRw)
            .expect("map");
        assert_eq!(
            t.translate(&mem, top),
            Some((Pa(0x1000), Mapping::DeviceRw, PAGE_SIZE))
        );
    }

    #[test]
    fn descriptor_bits() {
        let (mut mem, mut t) = table(MMFR0_40);
        t.map(&mut mem, Ipa(0), Pa(0x4000_0000), BLOCK_1G, Mapping::RamRwx)
            .expect("map");
        t.map(
            &mut mem,
            Ipa(0x4000_0000),
            Pa(0x0900_0000),
            BLOCK_2M,
            Mapping::DeviceRw,
        )
        .expect("map");
        t.map(
            &mut mem,
            Ipa(0x4020_0000),
            Pa(0x1_2345_6000),
            PAGE_SIZE,
            Mapping::RomRx,
        )
        .expect("map");
        let root = t.root();
        // 1 GiB block at level 1: Normal WB (0b1111 << 2), S2AP RW (0b11 << 6),
        // SH inner (0b11 << 8), AF, block (0b01).
        assert_eq!(
            mem.read(root, 0),
            0x4000_0000 | 0x3c | 0xc0 | 0x300 | 0x400 | 0b01
        );
        assert_eq!(mem.read(root, 0), 0x4000_07fd);
        // Level-1 entry 1 is a table descriptor.
        let l1 = mem.read(root, 1);
        assert_eq!(l1 & 0b11, 0b11);
        assert_eq!(
            l1 & !DESC_ADDR_MASK,
            0b11,
            "no attributes on stage-2 tables"
        );
        let l2 = Pa(l1 & DESC_ADDR_MASK);
        // 2 MiB device block: Device-nGnRE (0b0001 << 2), RW, SH 0, AF, XN = 0b10.
        assert_eq!(
            mem.read(l2, 0),
            0x0900_0000 | (1 << 54) | 0x400 | 0xc0 | 0x4 | 0b01
        );
        // Page at level 3: read-only (S2AP 0b01), executable, 0b11 type.
        let l3 = Pa(mem.read(l2, 1) & DESC_ADDR_MASK);
        assert_eq!(
            mem.read(l3, 0),
            0x1_2345_6000 | 0x400 | 0x300 | 0x40 | 0x3c | 0b11
        );
        assert_eq!(
            t.translate(&mem, Ipa(0x4020_0abc)),
            Some((Pa(0x1_2345_6abc), Mapping::RomRx, PAGE_SIZE))
        );
    }

    #[test]
    fn rejects_bad_input() {
        let (mut mem, mut t) = table(MMFR0_40);
        let m = Mapping::RamRwx;
        assert_eq!(t.map(&mut mem, Ipa(0), Pa(0), 0, m), Err(MapError::Empty));
        assert_eq!(
            t.map(&mut mem, Ipa(0x800), Pa(0), PAGE_SIZE, m),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            t.map(&mut mem, Ipa(0), Pa(0x10), PAGE_SIZE, m),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            t.map(&mut mem, Ipa(0), Pa(0), PAGE_SIZE + 1, m),
            Err(MapError::Misaligned)
        );
        // 40-bit IPA space: 1 TiB.
        assert_eq!(
            t.map(&mut mem, Ipa(1 << 40), Pa(0), PAGE_SIZE, m),
            Err(MapError::IpaOutOfRange)
        );
        assert_eq!(
            t.map(
                &mut mem,
                Ipa((1 << 40) - PAGE_SIZE),
                Pa(0),
                2 * PAGE_SIZE,
                m
            ),
            Err(MapError::IpaOutOfRange)
        );
        assert_eq!(
            t.map(&mut mem, Ipa(!0xfff), Pa(0), PAGE_SIZE, m),
            Err(MapError::IpaOutOfRange)
        );
        assert_eq!(
            t.map(&mut mem, Ipa(0), Pa(1 << 48), PAGE_SIZE, m),
            Err(MapError::PaOutOfRange)
        );
        assert_eq!(
            t.map(&mut mem, Ipa(0), Pa(!0xfff), PAGE_SIZE, m),
            Err(MapError::PaOutOfRange)
        );
        // The last page of the IPA space is fine.
        t.map(&mut mem, Ipa((1 << 40) - PAGE_SIZE), Pa(0), PAGE_SIZE, m)
            .expect("map");
        assert_eq!(t.translate(&mem, Ipa(1 << 40)), None);
        assert_eq!(t.translate(&mem, Ipa(u64::MAX)), None);
    }

    #[test]
    fn overlap_rejected_and_table_unchanged() {
        let (mut mem, mut t) = table(MMFR0_40);
        t.map(
            &mut mem,
            Ipa(0x4000_0000),
            Pa(0x4000_0000),
            BLOCK_2M,
            Mapping::RamRwx,
        )
        .expect("map");
        t.map(
            &mut mem,
            Ipa(0x5000_0000),
            Pa(0x5000_0000),
            PAGE_SIZE,
            Mapping::RamRwx,
        )
        .expect("map");
        let before = mem.snapshot();
        let writes = mem.writes;
        let cases = [
            // Same range, partial overlaps at either end, enclosing ranges.
            (0x4000_0000, BLOCK_2M, 0x4000_0000),
            (0x3ff0_0000, BLOCK_2M, 0x4000_0000),
            (0x401f_f000, BLOCK_2M, 0x401f_f000),
            (0x0000_0000, 4 * BLOCK_1G, 0x4000_0000),
            // Overlap only at the far end of a large range: must still write nothing.
            (0x4020_0000, 0x0fe0_1000, 0x5000_0000),
            (0x5000_0000, PAGE_SIZE, 0x5000_0000),
        ];
        for (ipa, size, hit) in cases {
            assert_eq!(
                t.map(
                    &mut mem,
                    Ipa(ipa),
                    Pa(0x1_0000_0000),
                    size,
                    Mapping::DeviceRw
                ),
                Err(MapError::AlreadyMapped(Ipa(hit))),
                "{ipa:#x}+{size:#x}"
            );
        }
        assert_eq!(mem.writes, writes, "nothing written");
        assert!(mem.snapshot() == before, "table unchanged");
        // Right next to existing mappings is fine.
        t.map(
            &mut mem,
            Ipa(0x4020_0000),
            Pa(0),
            PAGE_SIZE,
            Mapping::RamRwx,
        )
        .expect("adjacent");
        t.map(
            &mut mem,
            Ipa(0x4fff_f000),
            Pa(0),
            PAGE_SIZE,
            Mapping::RamRwx,
        )
        .expect("adjacent");
    }

    #[test]
    fn out_of_tables_rolls_back() {
        // Root (2 pages, 40-bit) plus one table: the level-3 table cannot be had.
        let mut mem = FakeMemory::with_limit(3);
        let mut t = Stage2Table::new(&mut mem, config_for(MMFR0_40, 0)).expect("root");
        let err = t.map(
            &mut mem,
            Ipa(0x4000_0000),
            Pa(0x4000_0000),
            BLOCK_2M + PAGE_SIZE,
            Mapping::RamRwx,
        );
        assert_eq!(err, Err(MapError::OutOfTables));
        // The 2 MiB block written before running out is gone again.
        assert_eq!(t.translate(&mem, Ipa(0x4000_0000)), None);
        // The empty level-2 table is reused: a later map that fits still works.
        let stats = t
            .map(
                &mut mem,
                Ipa(0x4000_0000),
                Pa(0x4000_0000),
                BLOCK_2M,
                Mapping::RamRwx,
            )
            .expect("map");
        assert_eq!(stats.blocks_2m, 1);
        assert_eq!(stats.tables, 0);
        // Root allocation can fail too.
        let mut none = FakeMemory::with_limit(1);
        assert_eq!(
            Stage2Table::new(&mut none, config_for(MMFR0_40, 0)).err(),
            Some(MapError::OutOfTables)
        );
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            MapError::AlreadyMapped(Ipa(0x1000)).to_string(),
            "IPA:0x1000 is already mapped"
        );
        assert_eq!(
            MapError::Misaligned.to_string(),
            "the IPA, PA or size is not a multiple of 4 KiB"
        );
    }

    /// The block/page choice the spec asks for, computed independently.
    fn model_stats(cfg: &Stage2Config, ipa: u64, pa: u64, size: u64) -> (u64, u64, u64) {
        let (mut g, mut m, mut p) = (0, 0, 0);
        let mut off = 0;
        while off < size {
            let (a, b, left) = (ipa + off, pa + off, size - off);
            let fits = |s: u64| a % s == 0 && b % s == 0 && left >= s;
            if cfg.start_level <= 1 && fits(BLOCK_1G) {
                g += 1;
                off += BLOCK_1G;
            } else if fits(BLOCK_2M) {
                m += 1;
                off += BLOCK_2M;
            } else {
                p += 1;
                off += PAGE_SIZE;
            }
        }
        (g, m, p)
    }

    /// A mapping request: IPA and PA aligned to a random unit, plus a shared
    /// page offset (so they stay co-aligned), and a size of a few units plus
    /// a few pages.
    fn region() -> impl Strategy<Value = (u64, u64, u64, Mapping)> {
        let unit = || prop_oneof![Just(PAGE_SIZE), Just(BLOCK_2M), Just(BLOCK_1G)];
        (
            (unit(), 0u64..64, unit(), 0u64..64, 0u64..4),
            (unit(), 1u64..4, 0u64..4),
            mapping_strategy(),
        )
            .prop_map(|((iu, ik, pu, pk, head), (su, sn, tail), m)| {
                let ipa = iu * ik + head * PAGE_SIZE;
                let pa = pu * pk + head * PAGE_SIZE;
                (ipa, pa, su * sn + tail * PAGE_SIZE, m)
            })
    }

    fn mapping_strategy() -> impl Strategy<Value = Mapping> {
        prop_oneof![
            Just(Mapping::RamRwx),
            Just(Mapping::RomRx),
            Just(Mapping::DeviceRw)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn translate_agrees_with_mappings(
            parange in 0u64..=5,
            regions in proptest::collection::vec(region(), 1..6),
            probes in proptest::collection::vec(0u64..(1 << 36), 16),
        ) {
            let mut mem = FakeMemory::new();
            let cfg = config_for(parange, 0);
            let mut t = Stage2Table::new(&mut mem, cfg).expect("root");
            let mut mapped: Vec<(u64, u64, u64, Mapping)> = Vec::new();
            for (ipa, pa, size, mapping) in regions {
                let (g, m, p) = model_stats(&cfg, ipa, pa, size);
                if p > 20_000 {
                    continue; // keep the test fast
                }
                let overlaps = mapped.iter().any(|&(i, _, s, _)| ipa < i + s && i < ipa + size);
                let in_range = ipa + size <= cfg.ipa_limit();
                match t.map(&mut mem, Ipa(ipa), Pa(pa), size, mapping) {
                    Ok(stats) => {
                        prop_assert!(in_range && !overlaps);
                        prop_assert_eq!((stats.blocks_1g, stats.blocks_2m, stats.pages_4k), (g, m, p));
                        prop_assert_eq!(stats.mapped_bytes(), size);
                        mapped.push((ipa, pa, size, mapping));
                    }
                    Err(MapError::IpaOutOfRange) => prop_assert!(!in_range),
                    Err(MapError::AlreadyMapped(at)) => {
                        prop_assert!(overlaps && in_range);
                        prop_assert!(mapped.iter().any(|&(i, _, s, _)| at.0 >= i && at.0 < i + s));
                    }
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
            for &(ipa, pa, size, mapping) in &mapped {
                for off in [0, (size / 2) & !7, size - 1] {
                    let got = t.translate(&mem, Ipa(ipa + off));
                    let (gpa, gm, bs) = got.expect("mapped");
                    prop_assert_eq!(gpa, Pa(pa + off));
                    prop_assert_eq!(gm, mapping);
                    prop_assert!(bs == PAGE_SIZE || bs == BLOCK_2M || bs == BLOCK_1G);
                    // The leaf lies wholly inside the mapping.
                    let leaf = (ipa + off) & !(bs - 1);
                    prop_assert!(leaf >= ipa && leaf + bs <= ipa + size);
                }
            }
            for probe in probes {
                let hit = mapped.iter().find(|&&(i, _, s, _)| probe >= i && probe < i + s);
                let got = t.translate(&mem, Ipa(probe));
                match hit {
                    Some(&(i, p, _, m)) => {
                        prop_assert_eq!(got.map(|g| (g.0, g.1)), Some((Pa(p + probe - i), m)));
                    }
                    None => prop_assert_eq!(got, None),
                }
            }
        }
    }
}
