//! The pool that stage-2 translation tables come from: a bump allocator of
//! zeroed, naturally aligned 4 KiB pages over memory the EL2 binary lends
//! it for good (a static), implementing [`TableMemory`].
//!
//! A table's address is its page's address: EL2 maps its own memory
//! identity (VA = PA), so the address the walker needs is the one the
//! pages have in this program. Every descriptor access is checked to fall
//! in a page handed out already; a walk that leaves the pool is a broken
//! invariant of the stage-2 code and panics.

use crate::addr::Pa;
use crate::stage2::TableMemory;

/// Bytes per table page.
pub const PAGE: usize = 4096;
/// Descriptors per table page.
const ENTRIES: usize = PAGE / 8;

/// One page-aligned table page.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug)]
pub struct TablePage(pub [u64; ENTRIES]);

impl TablePage {
    /// A zeroed page.
    pub const ZERO: Self = Self([0; ENTRIES]);
}

/// A bump allocator of table pages (see the module docs).
#[derive(Debug)]
pub struct TablePool {
    pages: &'static mut [TablePage],
    /// The address of `pages[0]`.
    base: u64,
    /// Pages handed out (the first `next`).
    next: usize,
}

impl TablePool {
    /// The pool over `pages`.
    pub fn new(pages: &'static mut [TablePage]) -> Self {
        let base = pages.as_ptr() as u64;
        Self {
            pages,
            base,
            next: 0,
        }
    }

    /// Pages handed out so far.
    pub fn used_pages(&self) -> usize {
        self.next
    }

    /// Bytes handed out so far, and bytes still free.
    pub fn usage(&self) -> (u64, u64) {
        let used = (self.next * PAGE) as u64;
        let free = ((self.pages.len() - self.next) * PAGE) as u64;
        (used, free)
    }

    /// The page and entry of descriptor `index` of the table at `table`.
    fn slot(&self, table: Pa, index: usize) -> (usize, usize) {
        let page = table
            .0
            .checked_sub(self.base)
            .filter(|off| off % PAGE as u64 == 0)
            .map(|off| (off / PAGE as u64) as usize)
            .and_then(|p| p.checked_add(index / ENTRIES));
        match page {
            Some(p) if p < self.next => (p, index % ENTRIES),
            _ => panic!("stage-2 walk left the table pool: {table:?}[{index}]"),
        }
    }
}

impl TableMemory for TablePool {
    fn alloc_table(&mut self, pages: usize) -> Option<Pa> {
        if pages == 0 || !pages.is_power_of_two() {
            return None;
        }
        // Aligned to its own size: a concatenated root needs that.
        let first_addr = self.base + (self.next * PAGE) as u64;
        let align = (pages * PAGE) as u64;
        let skip = (first_addr.next_multiple_of(align) - first_addr) as usize / PAGE;
        let start = self.next.checked_add(skip)?;
        let end = start.checked_add(pages)?;
        if end > self.pages.len() {
            return None;
        }
        self.pages[start..end].fill(TablePage::ZERO);
        self.next = end;
        Some(Pa(self.base + (start * PAGE) as u64))
    }

    fn read(&self, table: Pa, index: usize) -> u64 {
        let (p, i) = self.slot(table, index);
        self.pages[p].0[i]
    }

    fn write(&mut self, table: Pa, index: usize, desc: u64) {
        let (p, i) = self.slot(table, index);
        self.pages[p].0[i] = desc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(pages: usize) -> TablePool {
        TablePool::new(Vec::leak(vec![TablePage([7; ENTRIES]); pages]))
    }

    #[test]
    fn pages_come_zeroed_aligned_and_in_order() {
        let mut p = pool(8);
        let a = p.alloc_table(1).unwrap();
        assert_eq!(a.0 % PAGE as u64, 0);
        assert_eq!(p.read(a, 0), 0, "zeroed");
        assert_eq!(p.read(a, ENTRIES - 1), 0);
        p.write(a, 3, 0xabc);
        assert_eq!(p.read(a, 3), 0xabc);
        let b = p.alloc_table(2).unwrap();
        assert_eq!(
            b.0 % (2 * PAGE) as u64,
            0,
            "a two-page root is aligned to 8 KiB"
        );
        assert!(b.0 > a.0);
        // A concatenated root is indexed across its pages.
        p.write(b, ENTRIES + 1, 5);
        assert_eq!(p.read(b, ENTRIES + 1), 5);
        assert_eq!(p.read(a, 3), 0xabc, "other tables untouched");
        let (used, free) = p.usage();
        assert_eq!(used + free, 8 * PAGE as u64);
        assert_eq!(p.used_pages() * PAGE, used as usize);
    }

    #[test]
    fn running_out_is_none_and_bad_sizes_are_refused() {
        let mut p = pool(2);
        assert!(p.alloc_table(0).is_none());
        assert!(p.alloc_table(3).is_none(), "not a power of two");
        assert!(p.alloc_table(4).is_none(), "larger than the pool");
        assert!(p.alloc_table(1).is_some());
        assert!(p.alloc_table(1).is_some());
        assert!(p.alloc_table(1).is_none(), "empty");
    }

    #[test]
    #[should_panic(expected = "left the table pool")]
    fn an_access_outside_the_handed_out_pages_panics() {
        let mut p = pool(4);
        let a = p.alloc_table(1).unwrap();
        let _ = p.read(a, ENTRIES);
    }

    #[test]
    #[should_panic(expected = "left the table pool")]
    fn a_misaligned_table_address_panics() {
        let mut p = pool(4);
        let a = p.alloc_table(1).unwrap();
        p.write(Pa(a.0 + 8), 0, 1);
    }

    #[test]
    fn a_stage2_table_builds_in_the_pool() {
        use crate::addr::Ipa;
        use crate::stage2::{Mapping, Stage2Table, config_for};
        let mut p = pool(64);
        let cfg = config_for(0x5, 0);
        let mut t = Stage2Table::new(&mut p, cfg).unwrap();
        let stats = t
            .map(
                &mut p,
                Ipa(0x4000_0000),
                Pa(0x8000_0000),
                0x4000_0000,
                Mapping::RamRwx,
            )
            .unwrap();
        assert_eq!(stats.pages_4k, 0, "{stats:?}");
        assert!(
            stats.blocks_1g == 1 || stats.blocks_2m == 512,
            "one GiB in blocks: {stats:?}"
        );
        assert!(p.used_pages() >= 1);
    }
}
