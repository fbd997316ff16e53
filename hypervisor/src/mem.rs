//! Physical memory at EL2: the pool that stage-2 tables come from. (Which
//! host RAM backs guest memory and channels is the boot plan's decision:
//! `stratum_core::bootplan`.)
//!
//! EL2 maps all RAM identity (VA = PA), so a physical address is usable as a
//! pointer once it is known to lie in RAM that nothing else owns.

use stratum_core::addr::Pa;
use stratum_core::stage2::TableMemory;

const PAGE: usize = 4096;
/// Pages reserved for translation tables (stage 2 of every VM).
const POOL_PAGES: usize = 512;

#[repr(C, align(4096))]
struct PoolMemory([u8; POOL_PAGES * PAGE]);

/// Backing store of the table pool; only `TablePool` hands it out.
static mut POOL_MEMORY: PoolMemory = PoolMemory([0; POOL_PAGES * PAGE]);

/// A bump allocator of zeroed, page-aligned translation-table pages.
pub struct TablePool {
    base: usize,
    next: usize,
    end: usize,
}

impl TablePool {
    /// The pool over `POOL_MEMORY`. Call once.
    pub fn take() -> Self {
        let base = core::ptr::addr_of_mut!(POOL_MEMORY) as usize;
        Self {
            base,
            next: base,
            end: base + POOL_PAGES * PAGE,
        }
    }

    /// Pages handed out so far.
    pub fn used_pages(&self) -> usize {
        (self.next - self.base) / PAGE
    }

    /// Bytes handed out so far, and bytes still free.
    pub fn usage(&self) -> (u64, u64) {
        (
            (self.next - self.base) as u64,
            (self.end - self.next) as u64,
        )
    }

    fn slot(&self, table: Pa, index: usize) -> *mut u64 {
        let addr = usize::try_from(table.0)
            .ok()
            .and_then(|t| t.checked_add(index.checked_mul(8)?))
            .expect("table address overflow");
        assert!(
            addr >= self.base && addr + 8 <= self.next && addr % 8 == 0,
            "stage-2 walk left the table pool: {table:?}[{index}]"
        );
        addr as *mut u64
    }
}

impl TableMemory for TablePool {
    fn alloc_table(&mut self, pages: usize) -> Option<Pa> {
        let align = pages.checked_mul(PAGE)?;
        let start = self.next.checked_next_multiple_of(align)?;
        let end = start.checked_add(align)?;
        if end > self.end {
            return None;
        }
        // SAFETY: [start, end) lies inside POOL_MEMORY, is not yet handed out,
        // and is identity-mapped normal memory.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, align) };
        self.next = end;
        Some(Pa(start as u64))
    }

    fn read(&self, table: Pa, index: usize) -> u64 {
        // SAFETY: `slot` checked the entry lies in handed-out pool memory.
        unsafe { self.slot(table, index).read_volatile() }
    }

    fn write(&mut self, table: Pa, index: usize, desc: u64) {
        // SAFETY: as in `read`; the descriptor is visible to the table walker
        // after the caller's DSB.
        unsafe { self.slot(table, index).write_volatile(desc) }
    }
}
