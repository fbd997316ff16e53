//! Fetching the stock Debian 12 arm64 kernel and a static busybox from the
//! Debian archive, with apt, into a private cache, whatever the machine's
//! own apt sources are, and without touching its apt or dpkg state.
//!
//! - **Own sources** ([`apt`]): apt reads a `sources.list` the tool writes
//!   (Debian 12 `bookworm`, `-updates`, `-security`; `main`; `arch=arm64`;
//!   signed by Debian's archive keyring, installed when missing and root)
//!   and never the machine's sources, pins, keys or dpkg status. The mirror
//!   is `$STRATUM_DEBIAN_MIRROR` (default `http://deb.debian.org/debian`),
//!   the security mirror `$STRATUM_DEBIAN_SECURITY_MIRROR` (default: the
//!   mirror with `-security` appended).
//! - **A pinned kernel** ([`pin`]): [`KernelChoice::Pinned`] fetches
//!   [`KERNEL_PIN`]; [`KernelChoice::Latest`] (`--latest`) the package
//!   `linux-image-arm64` depends on. A pinned fetch that finds its kernel in
//!   the cache uses no network at all. When the archive no longer carries
//!   the pin, the newest is taken with a loud warning.
//! - **Verified downloads** ([`deb`]): every `.deb` must have the SHA-256 the
//!   pin states (pinned kernel) or the signed index gives (`apt-cache
//!   show`'s `SHA256:` of the chosen version) before it is unpacked; a bad
//!   one is removed. (apt checks the same index hash too; the pin's check
//!   is the one that ties the kernel to the project.)
//! - **A shared cache** ([`cache`]): one manifest per choice, several
//!   versions side by side, and an exclusive lock around every fetch (a
//!   second one waits).
//!
//! Packages are fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x`; nothing is installed. Cache layout (`<cache>` is
//! [`default_cache_dir`] or `--cache`):
//!
//! ```text
//! <cache>/lock                          held by the fetch in progress
//! <cache>/apt/etc/sources.list          the tool's sources (apt/etc/empty.d: no parts)
//! <cache>/apt/status                    an empty dpkg status
//! <cache>/apt/lists, <cache>/apt/cache  apt's private state
//! <cache>/apt/updated                   stamp: when the lists were last updated
//! <cache>/download/                     scratch for apt-get download
//! <cache>/pkg/<package>_<version>/      one unpacked package (created by rename: complete or absent)
//! <cache>/manifest-pinned               what the pinned fetch uses
//! <cache>/manifest-latest               what the --latest fetch uses
//! ```
//!
//! The package lists are updated when they are older than a day (or the
//! sources changed). A `--latest` fetch (and a pinned one that fell back to
//! the newest) skips apt altogether while the lists are fresh and its
//! manifest names files that exist; when the archive cannot be reached but a
//! previous fetch of the same choice is complete, it says so and uses that.

use std::ffi::OsString;
use std::fs;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stratum_core::image::{self, KernelInfo};

use super::modules;
use crate::{Error, Result};

mod apt;
mod cache;
mod deb;
pub mod pin;

use apt::{Apt, Sources};
pub use apt::{DEFAULT_MIRROR, MIRROR_ENV, SECURITY_MIRROR_ENV};
use cache::Cache;
pub use pin::{KERNEL_PIN, KernelChoice, KernelOrigin, KernelPin, PackageRef};

/// The meta-package that depends on the current kernel package.
pub const KERNEL_META_PACKAGE: &str = "linux-image-arm64";
/// The package with a statically linked busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// How old the package lists may be before a fetch that needs them updates
/// them.
pub const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Lines of apt's output quoted in an error.
const APT_TAIL_LINES: usize = 8;

/// A fetched Debian guest: paths inside the cache, and what the kernel is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebianGuest {
    /// The kernel, an arm64 `Image` (`boot/vmlinuz-<version>` of the package).
    pub kernel: PathBuf,
    /// The static busybox binary.
    pub busybox: PathBuf,
    /// The kernel release, e.g. `6.1.0-57-arm64` (what `uname -r` says).
    pub kernel_version: String,
    /// The kernel's modules directory (`lib/modules/<release>` of its
    /// package), pruned to [`super::modules::GUEST_MODULES`] and their
    /// dependencies.
    pub modules_dir: PathBuf,
    /// The board device trees of the kernel package
    /// (`usr/lib/linux-image-<release>`), pruned to [`BOARD_DTBS`].
    pub board_dtbs: PathBuf,
    /// The kernel package, its version and the SHA-256 its `.deb` had.
    pub kernel_deb: PackageRef,
    /// Why this kernel.
    pub origin: KernelOrigin,
}

impl DebianGuest {
    /// The kernel package as one line: `package version (how it was chosen)`.
    pub fn describe_kernel(&self) -> String {
        let how = match &self.origin {
            KernelOrigin::Pin => "pinned".to_owned(),
            KernelOrigin::Newest => "latest".to_owned(),
            KernelOrigin::InsteadOfPin { pinned } => {
                format!("the newest: the pinned {pinned} is not in the archive")
            }
        };
        format!(
            "{} sha256 {} ({how})",
            self.kernel_deb, self.kernel_deb.sha256
        )
    }
}

/// The default cache: `$STRATUM_CACHE/debian` if `STRATUM_CACHE` is set,
/// else `$XDG_CACHE_HOME/stratum/debian`, else `~/.cache/stratum/debian`.
pub fn default_cache_dir() -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    cache_dir_from(var("STRATUM_CACHE"), var("XDG_CACHE_HOME"), var("HOME")).ok_or_else(|| {
        Error::environment(
            "no cache directory: set STRATUM_CACHE (or HOME), or pass --cache DIR".to_owned(),
        )
    })
}

fn cache_dir_from(
    stratum_cache: Option<OsString>,
    xdg_cache: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let root = stratum_cache.map(PathBuf::from).or_else(|| {
        xdg_cache
            .map(PathBuf::from)
            .or_else(|| home.map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("stratum"))
    })?;
    Some(root.join("debian"))
}

/// The cache, locked: only one fetch works in it at a time. Dropping it
/// lets the next one in.
pub struct CacheLock {
    cache: Cache,
    _file: fs::File,
}

impl CacheLock {
    /// Creates the cache directory if needed and takes its lock, waiting
    /// (and saying so on stderr) while another fetch holds it.
    pub fn acquire(cache_dir: &Path) -> Result<Self> {
        let cache = Cache::open(cache_dir)?;
        let file = cache::lock_file(&cache.lock_path(), || {
            eprintln!(
                "stratum: another fetch is using the cache {}; waiting for it to finish",
                cache.root.display()
            );
        })?;
        Ok(Self { cache, _file: file })
    }

    /// The cache directory (absolute).
    pub fn root(&self) -> &Path {
        &self.cache.root
    }
}

/// Fetches (or finds in `cache_dir`) the kernel `choice` names and
/// busybox-static, holding the cache's lock meanwhile (see
/// [`fetch_locked`]).
pub fn fetch_debian(cache_dir: &Path, choice: KernelChoice, progress: bool) -> Result<DebianGuest> {
    fetch_locked(&CacheLock::acquire(cache_dir)?, choice, progress)
}

/// Fetches (or finds in the locked cache) the kernel `choice` names and
/// busybox-static. `progress`: show apt's progress when stdout is a
/// terminal, else one line per step (on stderr); nothing when false.
///
/// Errors name what failed: the keyring, apt or dpkg-deb missing, the
/// archive unreachable (with apt's last lines), a package not found, a
/// download whose SHA-256 is wrong, extraction failed, or a kernel that is
/// not an arm64 `Image`. Downloads are retried once.
pub fn fetch_locked(lock: &CacheLock, choice: KernelChoice, progress: bool) -> Result<DebianGuest> {
    let cache = &lock.cache;
    let report = Reporter::new(progress);
    // A fetch kept the modules of the list of its day: one pruned for
    // another list (before a module joined `GUEST_MODULES`) is not used,
    // the kernel package is unpacked afresh (its directory's tag follows
    // the list).
    let cached = cache
        .manifest(choice)
        .filter(|guest| modules::complete(&guest.modules_dir, modules::GUEST_MODULES));
    if let Some(guest) = &cached
        && cached_is_current(choice, guest, &KERNEL_PIN, cache.lists_fresh())
    {
        return use_cached(guest, report);
    }

    let sources = Sources::from_env(apt::ensure_keyring(report)?);
    cache.write_sources(&sources.list())?;
    let apt = Apt::new(&cache.apt, report)?;
    if !cache.lists_fresh() {
        report.step(&format!(
            "updating the Debian package lists ({} arm64, {} and {}) in {}",
            apt::SUITE,
            sources.mirror,
            sources.security,
            cache.apt.root.display()
        ));
        if let Err(e) = apt.run_retrying("apt-get", &["update"], None) {
            let Some(guest) = cached else {
                return Err(e.context("cannot update the Debian package lists"));
            };
            report.warn(&format!(
                "cannot update the Debian package lists ({e}); using the cached kernel {}",
                guest.describe_kernel()
            ));
            return use_cached(&guest, report);
        }
        cache.touch_updated()?;
    }

    let pin_in_index = match choice {
        KernelChoice::Pinned => index_entries(&apt, KERNEL_PIN.package)?
            .into_iter()
            .find(|p| p.version == KERNEL_PIN.version),
        KernelChoice::Latest => None,
    };
    let newest = pin::needs_newest(choice, pin_in_index.is_some())
        .then(|| newest_kernel(&apt))
        .transpose()?;
    let plan = pin::plan_kernel(choice, &KERNEL_PIN, pin_in_index.as_ref(), newest.as_ref())
        .map_err(Error::environment)?;
    if let KernelOrigin::InsteadOfPin { pinned } = &plan.origin {
        report.loud(&pin::fallback_warning(pinned, &plan.deb.to_string()));
    }
    let kernel_version = plan
        .deb
        .package
        .strip_prefix("linux-image-")
        .ok_or_else(|| {
            Error::environment(format!(
                "{} is not a linux-image-* package",
                plan.deb.package
            ))
        })?
        .to_owned();
    report.step(&format!(
        "kernel: {} ({})",
        plan.deb,
        if plan.origin == KernelOrigin::Pin {
            "pinned"
        } else {
            "newest"
        }
    ));

    let modules_rel = Path::new("lib").join("modules").join(&kernel_version);
    let dtbs_rel = Path::new("usr")
        .join("lib")
        .join(format!("linux-image-{kernel_version}"));
    let kernel_unpack = Unpack {
        keep: &["boot", "lib", "usr"],
        tag: Some(format!(
            "{}-{}",
            modules::set_tag(modules::GUEST_MODULES),
            modules::set_tag(BOARD_DTBS)
        )),
        prune: Some(&|dir: &Path| {
            modules::prune(&dir.join(&modules_rel), modules::GUEST_MODULES)?;
            prune_to_board_dtbs(dir, &dtbs_rel)
        }),
    };
    let kernel_hash_source = if plan.origin == KernelOrigin::Pin {
        "the pin (KERNEL_PIN)"
    } else {
        "the signed index"
    };
    let kernel_dir = unpacked(
        cache,
        &apt,
        &plan.deb,
        kernel_hash_source,
        &kernel_unpack,
        report,
    )?;
    let busybox = candidate(&apt, BUSYBOX_PACKAGE)?;
    let busybox_unpack = Unpack {
        keep: &["bin"],
        tag: None,
        prune: None,
    };
    let busybox_dir = unpacked(
        cache,
        &apt,
        &busybox,
        "the signed index",
        &busybox_unpack,
        report,
    )?;
    let guest = DebianGuest {
        kernel: kernel_dir
            .join("boot")
            .join(format!("vmlinuz-{kernel_version}")),
        busybox: busybox_dir.join("bin").join("busybox"),
        modules_dir: kernel_dir.join(&modules_rel),
        board_dtbs: kernel_dir.join(&dtbs_rel),
        kernel_version,
        kernel_deb: plan.deb,
        origin: plan.origin,
    };
    for (path, package) in [
        (&guest.kernel, &guest.kernel_deb.package[..]),
        (&guest.busybox, BUSYBOX_PACKAGE),
        (
            &guest.modules_dir.join("modules.dep"),
            &guest.kernel_deb.package[..],
        ),
        (
            &guest.board_dtbs.join(BOARD_DTBS[0]),
            &guest.kernel_deb.package[..],
        ),
    ] {
        if !path.is_file() {
            return Err(Error::environment(format!(
                "package {package} has no {} after extraction",
                path.display()
            )));
        }
    }
    verify_kernel(&guest.kernel)?;
    cache.set_manifest(choice, &guest)?;
    cache.prune();
    Ok(guest)
}

/// Whether a complete cached fetch for `choice` can be used without asking
/// the archive: the pinned kernel always (it cannot change); anything else
/// (the newest, or the newest standing in for a pin the archive lost) while
/// the lists are fresh.
fn cached_is_current(
    choice: KernelChoice,
    guest: &DebianGuest,
    pin: &KernelPin,
    lists_fresh: bool,
) -> bool {
    let is_the_pin = guest.origin == KernelOrigin::Pin && guest.kernel_deb == pin.package_ref();
    match choice {
        KernelChoice::Pinned => {
            let stands_in_for_this_pin = guest.origin
                == KernelOrigin::InsteadOfPin {
                    pinned: format!("{} {}", pin.package, pin.version),
                };
            is_the_pin || (stands_in_for_this_pin && lists_fresh)
        }
        KernelChoice::Latest => lists_fresh,
    }
}

/// A cached guest, checked, with the fallback warning if it is one.
fn use_cached(guest: &DebianGuest, report: Reporter) -> Result<DebianGuest> {
    if let KernelOrigin::InsteadOfPin { pinned } = &guest.origin {
        report.loud(&pin::fallback_warning(
            pinned,
            &guest.kernel_deb.to_string(),
        ));
    }
    verify_kernel(&guest.kernel)?;
    Ok(guest.clone())
}

/// Checks that `kernel` is an arm64 `Image`.
fn verify_kernel(kernel: &Path) -> Result<()> {
    let bytes = fs::read(kernel)
        .map_err(|e| Error::environment(format!("cannot read {}: {e}", kernel.display())))?;
    match image::inspect(&bytes) {
        Ok(KernelInfo::LinuxImage { .. }) => Ok(()),
        Ok(_) => Err(Error::environment(format!(
            "{} is not an arm64 Linux Image (no ARM\\x64 header magic)",
            kernel.display()
        ))),
        Err(e) => Err(Error::environment(format!("{}: {e}", kernel.display()))),
    }
}

/// Every version of `package` the index has (none if apt does not know it).
fn index_entries(apt: &Apt, package: &str) -> Result<Vec<PackageRef>> {
    Ok(apt
        .query("apt-cache", &["show", package])?
        .map(|show| parse_stanzas(&show))
        .unwrap_or_default())
}

/// The candidate version of `package`, with the SHA-256 the index gives.
fn candidate(apt: &Apt, package: &str) -> Result<PackageRef> {
    let show = apt.query("apt-cache", &["show", "--no-all-versions", package])?;
    show.and_then(|s| parse_stanzas(&s).into_iter().next())
        .ok_or_else(|| {
            Error::environment(format!(
                "package {package} not found in the Debian archive for arm64 \
                 (apt-cache show gave no version with a SHA256)"
            ))
        })
}

/// The newest kernel: the package [`KERNEL_META_PACKAGE`] depends on, at
/// its candidate version.
fn newest_kernel(apt: &Apt) -> Result<PackageRef> {
    let depends = apt
        .query("apt-cache", &["depends", KERNEL_META_PACKAGE])?
        .unwrap_or_default();
    let package = parse_kernel_dependency(&depends).ok_or_else(|| {
        Error::environment(format!(
            "{KERNEL_META_PACKAGE} depends on no linux-image-*-arm64 package:\n{}",
            tail(&depends)
        ))
    })?;
    candidate(apt, &package)
}

/// The package `linux-image-<release>-arm64` that `apt-cache depends
/// linux-image-arm64` names (`Depends: …`, possibly in `<…>` for a virtual
/// package).
pub fn parse_kernel_dependency(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        let name = name.trim_start_matches('<').trim_end_matches('>');
        (name.starts_with("linux-image-")
            && name.ends_with("-arm64")
            && name != KERNEL_META_PACKAGE)
            .then(|| name.to_owned())
    })
}

/// The stanzas of `apt-cache show` output that name a package, a version
/// and a SHA-256, in order.
pub fn parse_stanzas(show: &str) -> Vec<PackageRef> {
    show.split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            };
            let sha256 = field("SHA256")?;
            (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
            Some(PackageRef {
                package: field("Package")?,
                version: field("Version")?,
                sha256: sha256.to_ascii_lowercase(),
            })
        })
        .collect()
}

/// The directory `deb` is unpacked in, downloading it (with apt-get),
/// checking its SHA-256 against `deb.sha256` (which `hash_source` names) and
/// unpacking it first if needed, as `how` says.
fn unpacked(
    cache: &Cache,
    apt: &Apt,
    deb: &PackageRef,
    hash_source: &str,
    how: &Unpack<'_>,
    report: Reporter,
) -> Result<PathBuf> {
    let dir = cache.package_dir(deb, how.tag.as_deref());
    if dir.is_dir() {
        return Ok(dir);
    }
    let package = &deb.package;
    let download = cache.download_dir();
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)
        .map_err(|e| Error::environment(format!("cannot create {}: {e}", download.display())))?;
    report.step(&format!("downloading {deb}"));
    let spec = format!("{package}={}", deb.version);
    apt.run_retrying("apt-get", &["download", &spec], Some(&download))
        .map_err(|e| e.context(format!("cannot download {deb}")))?;
    let file = deb::find_deb(&download, package)?;
    deb::verify_sha256(&file, &deb.sha256, hash_source)?;

    report.step(&format!("extracting {}", file.display()));
    let staging = cache.packages.join(format!(".{package}.partial"));
    let _ = fs::remove_dir_all(&staging);
    deb::dpkg_extract(&file, &staging, package)?;
    let entries = fs::read_dir(&staging)
        .map_err(|e| Error::environment(format!("cannot list {}: {e}", staging.display())))?;
    for entry in entries.flatten() {
        if !how.keep.iter().any(|k| entry.file_name() == *k) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    if let Some(prune) = how.prune {
        prune(&staging)?;
    }
    fs::rename(&staging, &dir).map_err(|e| {
        Error::environment(format!(
            "cannot move {} to {}: {e}",
            staging.display(),
            dir.display()
        ))
    })?;
    let _ = fs::remove_dir_all(&download);
    Ok(dir)
}

/// The board device trees kept from the kernel package, relative to its
/// `usr/lib/linux-image-<release>` (`config::Board::kernel_package_dtb`).
pub const BOARD_DTBS: &[&str] = &["xilinx/zynqmp-zcu102-rev1.0.dtb"];

/// Trims an unpacked kernel package's `usr` to [`BOARD_DTBS`] under
/// `dtbs_rel` (the rest of `usr`, documentation and the other boards' DTs,
/// goes).
fn prune_to_board_dtbs(dir: &Path, dtbs_rel: &Path) -> Result<()> {
    let keep = dir.join(".board-dtbs");
    let _ = fs::remove_dir_all(&keep);
    for dtb in BOARD_DTBS {
        let from = dir.join(dtbs_rel).join(dtb);
        let to = keep.join(dtb);
        fs::create_dir_all(to.parent().unwrap_or(&keep))
            .and_then(|()| fs::rename(&from, &to))
            .map_err(|e| {
                Error::environment(format!(
                    "the kernel package has no {} ({e})",
                    from.display()
                ))
            })?;
    }
    let usr = dir.join("usr");
    let _ = fs::remove_dir_all(&usr);
    let target = dir.join(dtbs_rel);
    fs::create_dir_all(target.parent().unwrap_or(dir))
        .and_then(|()| fs::rename(&keep, &target))
        .map_err(|e| Error::environment(format!("cannot move the board DTs: {e}")))
}

/// What of an unpacked package the cache keeps.
struct Unpack<'a> {
    /// The top-level directories kept (the rest of the package goes).
    keep: &'a [&'a str],
    /// Part of the directory's name besides the package and version, when
    /// what is kept inside depends on more than they say.
    tag: Option<String>,
    /// Trims the staging directory further before it is published.
    prune: Option<&'a Prune<'a>>,
}

/// A step that trims an unpacked package's staging directory.
type Prune<'a> = dyn Fn(&Path) -> Result<()> + 'a;

/// The last [`APT_TAIL_LINES`] non-empty lines of `text`, indented.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(APT_TAIL_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Step lines and warnings on stderr (steps only when `progress`).
#[derive(Clone, Copy, Debug)]
struct Reporter {
    progress: bool,
    /// apt may draw its own progress: we are asked for progress and stdout
    /// is a terminal.
    apt_progress: bool,
}

impl Reporter {
    fn new(progress: bool) -> Self {
        Self {
            progress,
            apt_progress: progress && std::io::stdout().is_terminal(),
        }
    }

    fn step(self, what: &str) {
        if self.progress {
            eprintln!("stratum: {what}");
        }
    }

    fn warn(self, what: &str) {
        eprintln!("stratum: warning: {what}");
    }

    /// A warning nobody should miss in a CI log.
    fn loud(self, what: &str) {
        let rule = "!".repeat(78);
        eprintln!("{rule}\nstratum: WARNING: {what}\n{rule}");
    }
}

#[cfg(test)]
mod tests;
