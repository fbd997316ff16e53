//! Linux guests: the stock Debian arm64 kernel fetched from the Debian
//! archive ([`debian`]), and an initramfs made of a static busybox, Stratum's
//! guest programs ([`programs`]: the workload program [`workload`] and the
//! service VM's disk daemon [`blkd`]) and an init script ([`initramfs`],
//! written by the pure-Rust cpio writer [`cpio`]).
//!
//! [`prepare_debian_choosing`] is what `stratum fetch debian` and
//! `stratum run --debian` do: find or build the guest programs, then,
//! holding the cache's lock, fetch (or find in the cache) the kernel
//! ([`KernelChoice::Pinned`] unless `--latest`) and busybox, and build
//! `<cache>/initramfs-<choice>.cpio` with [`DEFAULT_INIT`] (rewritten only
//! when its bytes change). [`prepare_debian`] and [`prepare_debian_with`]
//! are the pinned kernel's shorthands (`debian = true` VMs, the bench,
//! `cargo xtask test`).

use std::path::{Path, PathBuf};

use crate::Result;

pub mod blkd;
pub mod cpio;
pub mod debian;
pub mod initramfs;
pub mod modules;
pub mod programs;
pub mod workload;

pub use debian::{
    CacheLock, DebianGuest, KERNEL_PIN, KernelChoice, KernelOrigin, default_cache_dir, fetch_debian,
};
pub use initramfs::{
    DEFAULT_INIT, POWEROFF_PARAM, PROMPT, UP_MARKER, WORKLOAD_EXIT_MARKER, WORKLOAD_PARAM,
    build_initramfs,
};
pub use programs::GuestPrograms;

/// Name of the initramfs [`prepare_debian_choosing`] writes into the cache
/// for `choice` (each choice has its own: their kernels' modules differ).
pub fn initramfs_name(choice: KernelChoice) -> String {
    format!("initramfs-{}.cpio", choice.name())
}

/// The device tree of `board` from the pinned Debian kernel package (fetched
/// into the default cache on first use, like `stratum fetch debian`), or
/// `None` for a board whose DT QEMU writes itself (`virt`).
pub fn board_dtb(board: crate::config::Board, progress: bool) -> Result<Option<PathBuf>> {
    let Some(rel) = board.kernel_package_dtb() else {
        return Ok(None);
    };
    let lock = CacheLock::acquire(&default_cache_dir()?)?;
    let fetched = debian::fetch_locked(&lock, KernelChoice::Pinned, progress)?;
    Ok(Some(fetched.board_dtbs.join(rel)))
}

/// A Linux guest ready to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxGuest {
    /// The kernel (an arm64 `Image`).
    pub kernel: PathBuf,
    /// The initramfs (newc cpio).
    pub initramfs: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-arm64`.
    pub kernel_version: String,
}

/// The pinned Debian guest (see [`prepare_debian_choosing`]), with the
/// guest programs from [`programs::locate`] (`$STRATUM_WORKLOAD`,
/// `$STRATUM_BLKD` or a cargo build).
pub fn prepare_debian(cache_dir: &Path, progress: bool) -> Result<LinuxGuest> {
    prepare_debian_choosing(cache_dir, KernelChoice::Pinned, progress, None).map(|p| p.guest)
}

/// [`prepare_debian`] with the guest programs given.
pub fn prepare_debian_with(
    cache_dir: &Path,
    progress: bool,
    programs: &GuestPrograms,
) -> Result<LinuxGuest> {
    prepare_debian_choosing(cache_dir, KernelChoice::Pinned, progress, Some(programs))
        .map(|p| p.guest)
}

/// A prepared Debian guest and what was fetched for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedDebian {
    /// The kernel and initramfs to boot.
    pub guest: LinuxGuest,
    /// The fetched packages (the kernel's package, version, hash, origin).
    pub fetched: DebianGuest,
}

/// Fetches the Debian guest `choice` names into `cache_dir` (see
/// [`fetch_debian`]) and builds its initramfs there from the fetched busybox
/// and modules, the guest programs (`programs`, else [`programs::locate`])
/// and [`DEFAULT_INIT`], all under the cache's lock.
pub fn prepare_debian_choosing(
    cache_dir: &Path,
    choice: KernelChoice,
    progress: bool,
    programs: Option<&GuestPrograms>,
) -> Result<PreparedDebian> {
    // Building the programs may take a while: not under the lock.
    let programs = match programs {
        Some(programs) => programs.clone(),
        None => programs::locate()?,
    };
    let lock = CacheLock::acquire(cache_dir)?;
    let fetched = debian::fetch_locked(&lock, choice, progress)?;
    let initramfs = lock.root().join(initramfs_name(choice));
    build_initramfs(
        &fetched.busybox,
        &programs,
        &fetched.modules_dir,
        DEFAULT_INIT,
        &initramfs,
    )?;
    Ok(PreparedDebian {
        guest: LinuxGuest {
            kernel: fetched.kernel.clone(),
            initramfs,
            kernel_version: fetched.kernel_version.clone(),
        },
        fetched,
    })
}
