//! Physical memory at EL2: the pages stage-2 tables come from, lent to
//! [`stratum_core::tablepool::TablePool`]. (Which host RAM backs guest
//! memory and channels is the boot plan's decision:
//! `stratum_core::bootplan`.)

use core::sync::atomic::{AtomicBool, Ordering};

use stratum_core::tablepool::{TablePage, TablePool};

/// Pages reserved for translation tables (stage 2 of every VM): 2 MiB.
const POOL_PAGES: usize = 512;

/// Backing store of the table pool; only [`table_pool`] hands it out.
static mut POOL_MEMORY: [TablePage; POOL_PAGES] = [TablePage::ZERO; POOL_PAGES];
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The pool over the reserved pages.
///
/// # Panics
/// When called a second time.
pub fn table_pool() -> TablePool {
    assert!(
        !TAKEN.swap(true, Ordering::AcqRel),
        "the table pool is taken once"
    );
    // SAFETY: the pages are only ever reached through this one borrow
    // (the flag above hands it out once), and live as long as the program.
    TablePool::new(unsafe { &mut *core::ptr::addr_of_mut!(POOL_MEMORY) })
}
