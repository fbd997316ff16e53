//! Linux guests: the stock Debian arm64 kernel fetched from the Debian
//! archive ([`debian`]), and an initramfs made of a static busybox, Stratum's
//! workload program ([`workload`]) and an init script ([`initramfs`],
//! written by the pure-Rust cpio writer [`cpio`]).
//!
//! [`prepare_debian`] is what `stratum fetch debian` and
//! `stratum run --debian` do: fetch (or find in the cache) the kernel and
//! busybox, find or build the workload program, then build
//! `<cache>/initramfs.cpio` with [`DEFAULT_INIT`] (rewritten only when its
//! bytes change).

use std::path::{Path, PathBuf};

use crate::Result;

pub mod cpio;
pub mod debian;
pub mod initramfs;
pub mod modules;
pub mod workload;

pub use debian::{DebianGuest, default_cache_dir, fetch_debian};
pub use initramfs::{
    DEFAULT_INIT, POWEROFF_PARAM, PROMPT, UP_MARKER, WORKLOAD_EXIT_MARKER, WORKLOAD_PARAM,
    build_initramfs,
};

/// Name of the initramfs [`prepare_debian`] writes into the cache.
pub const INITRAMFS_NAME: &str = "initramfs.cpio";

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

/// Fetches the Debian guest into `cache_dir` (see [`fetch_debian`]) and
/// builds its initramfs there from the fetched busybox, the workload program
/// ([`workload::locate`]: `$STRATUM_WORKLOAD` or a cargo build) and
/// [`DEFAULT_INIT`].
pub fn prepare_debian(cache_dir: &Path, progress: bool) -> Result<LinuxGuest> {
    prepare_debian_with(cache_dir, progress, &workload::locate()?)
}

/// [`prepare_debian`] with the workload binary given.
pub fn prepare_debian_with(
    cache_dir: &Path,
    progress: bool,
    workload: &Path,
) -> Result<LinuxGuest> {
    let guest = fetch_debian(cache_dir, progress)?;
    // fetch_debian created the directory; report absolute paths.
    let cache_dir = cache_dir
        .canonicalize()
        .unwrap_or_else(|_| cache_dir.to_path_buf());
    let initramfs = cache_dir.join(INITRAMFS_NAME);
    build_initramfs(
        &guest.busybox,
        workload,
        &guest.modules_dir,
        DEFAULT_INIT,
        &initramfs,
    )?;
    Ok(LinuxGuest {
        kernel: guest.kernel,
        initramfs,
        kernel_version: guest.kernel_version,
    })
}
