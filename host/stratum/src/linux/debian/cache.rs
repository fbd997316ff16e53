//! The cache directory of the Debian guest: its layout, the lock that
//! serialises fetches, one manifest per [`KernelChoice`], and pruning.
//!
//! Every change to the cache happens under the lock ([`lock_file`]): an
//! exclusive `flock` on `<cache>/lock`, taken around a whole fetch; a
//! second fetch waits for it (saying so on stderr). Unpacked packages are
//! published by renaming a complete staging directory, manifests by
//! renaming a complete file, so a reader without the lock (a running VM)
//! never sees half of either.
//!
//! Several versions live side by side in `pkg/`: every one a manifest
//! names is kept, and of the others the [`KEEP_UNREFERENCED`] newest
//! ([`prune_plan`]).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::apt::AptDirs;
use super::pin::{KernelChoice, KernelOrigin, PackageRef};
use super::{DebianGuest, LISTS_MAX_AGE};
use crate::{Error, Result};

/// Unpacked packages no manifest names that pruning keeps (the newest).
pub const KEEP_UNREFERENCED: usize = 2;

/// Takes an exclusive lock on `path` (created if needed), calling `on_wait`
/// first if another holder makes us wait. The lock lasts as long as the
/// returned file is open.
pub fn lock_file(path: &Path, on_wait: impl FnOnce()) -> Result<File> {
    let fail =
        |e: std::io::Error| Error::environment(format!("cannot lock {}: {e}", path.display()));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            on_wait();
            file.lock().map_err(fail)?;
            Ok(file)
        }
        Err(fs::TryLockError::Error(e)) => Err(fail(e)),
    }
}

/// The cache directory and its parts (absolute paths).
pub struct Cache {
    /// The cache directory itself.
    pub root: PathBuf,
    /// apt's private state.
    pub apt: AptDirs,
    /// Unpacked packages, `<package>_<version>[+m<tag>]`.
    pub packages: PathBuf,
}

impl Cache {
    /// Creates the directories (without taking the lock).
    pub fn open(dir: &Path) -> Result<Self> {
        let env = |e: std::io::Error, p: &Path| {
            Error::environment(format!("cannot create {}: {e}", p.display()))
        };
        fs::create_dir_all(dir).map_err(|e| env(e, dir))?;
        // apt takes relative Dir:: settings relative to the system's dirs.
        let root = dir.canonicalize().map_err(|e| env(e, dir))?;
        let apt = AptDirs {
            root: root.join("apt"),
        };
        let packages = root.join("pkg");
        for d in apt.dirs().iter().chain([&packages]) {
            fs::create_dir_all(d).map_err(|e| env(e, d))?;
        }
        Ok(Self {
            root,
            apt,
            packages,
        })
    }

    /// The lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Scratch for `apt-get download`.
    pub fn download_dir(&self) -> PathBuf {
        self.root.join("download")
    }

    fn updated_stamp(&self) -> PathBuf {
        self.apt.root.join("updated")
    }

    fn manifest_path(&self, choice: KernelChoice) -> PathBuf {
        self.root.join(format!("manifest-{}", choice.name()))
    }

    /// Whether the lists were updated less than [`LISTS_MAX_AGE`] ago.
    pub fn lists_fresh(&self) -> bool {
        fs::metadata(self.updated_stamp())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE)
    }

    /// Notes that the lists were just updated.
    pub fn touch_updated(&self) -> Result<()> {
        let stamp = self.updated_stamp();
        fs::write(&stamp, b"")
            .map_err(|e| Error::environment(format!("cannot write {}: {e}", stamp.display())))
    }

    /// Writes apt's source list (lists from other sources are then stale)
    /// and the empty dpkg status.
    pub fn write_sources(&self, list: &str) -> Result<()> {
        let path = self.apt.source_list();
        if fs::read_to_string(&path).ok().as_deref() != Some(list) {
            let _ = fs::remove_file(self.updated_stamp());
            super::super::initramfs::write_atomically(&path, list.as_bytes())?;
        }
        let status = self.apt.dpkg_status();
        if !status.is_file() {
            fs::write(&status, b"").map_err(|e| {
                Error::environment(format!("cannot write {}: {e}", status.display()))
            })?;
        }
        Ok(())
    }

    /// The directory `deb` unpacks to (`tag`: what else decides its
    /// contents).
    pub fn package_dir(&self, deb: &PackageRef, tag: Option<&str>) -> PathBuf {
        let tag = tag.map_or_else(String::new, |t| format!("+m{t}"));
        self.packages.join(format!(
            "{}_{}{tag}",
            deb.package,
            version_in_file_name(&deb.version)
        ))
    }

    /// The guest the last fetch for `choice` completed, if its files are
    /// all there.
    pub fn manifest(&self, choice: KernelChoice) -> Option<DebianGuest> {
        let text = fs::read_to_string(self.manifest_path(choice)).ok()?;
        let guest = parse_manifest(&text, &self.root)?;
        (guest.kernel.is_file()
            && guest.busybox.is_file()
            && guest.modules_dir.join("modules.dep").is_file()
            && super::BOARD_DTBS
                .iter()
                .all(|dtb| guest.board_dtbs.join(dtb).is_file()))
        .then_some(guest)
    }

    /// Records `guest` as what `choice` fetched.
    pub fn set_manifest(&self, choice: KernelChoice, guest: &DebianGuest) -> Result<()> {
        let text = format_manifest(guest, &self.root).ok_or_else(|| {
            Error::environment("fetched files ended up outside the cache".to_owned())
        })?;
        super::super::initramfs::write_atomically(&self.manifest_path(choice), text.as_bytes())
    }

    /// Removes what no manifest needs: unpacked packages beyond
    /// [`KEEP_UNREFERENCED`] unreferenced ones, and leftover staging
    /// directories. Call it with the lock held.
    pub fn prune(&self) {
        let referenced: Vec<PathBuf> = [KernelChoice::Pinned, KernelChoice::Latest]
            .into_iter()
            .filter_map(|c| fs::read_to_string(self.manifest_path(c)).ok())
            .filter_map(|text| parse_manifest(&text, &self.root))
            .flat_map(|g| [g.kernel, g.busybox])
            .filter_map(|file| self.package_of(&file))
            .collect();
        let entries: Vec<(PathBuf, SystemTime)> = fs::read_dir(&self.packages)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let time = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (e.path(), time)
            })
            .collect();
        for dir in prune_plan(&entries, &referenced, KEEP_UNREFERENCED) {
            let _ = fs::remove_dir_all(dir);
        }
    }

    /// The directory in `pkg/` that `file` lies in.
    fn package_of(&self, file: &Path) -> Option<PathBuf> {
        let rel = file.strip_prefix(&self.packages).ok()?;
        Some(self.packages.join(rel.components().next()?))
    }
}

/// Which of `entries` (directories of `pkg/` with their modification time)
/// to remove: leftover staging directories (names starting with `.`), and
/// the unreferenced ones but the `keep` newest.
pub fn prune_plan(
    entries: &[(PathBuf, SystemTime)],
    referenced: &[PathBuf],
    keep: usize,
) -> Vec<PathBuf> {
    let staging = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
    };
    let mut unreferenced: Vec<&(PathBuf, SystemTime)> = entries
        .iter()
        .filter(|(p, _)| !staging(p) && !referenced.contains(p))
        .collect();
    unreferenced.sort_by_key(|e| std::cmp::Reverse(e.1));
    entries
        .iter()
        .filter(|(p, _)| staging(p))
        .chain(unreferenced.into_iter().skip(keep))
        .map(|(p, _)| p.clone())
        .collect()
}

/// A package version as a file-name component (`:` of an epoch is not
/// welcome everywhere).
pub fn version_in_file_name(version: &str) -> String {
    version.replace(':', "%3a")
}

/// The manifest: `key=value` lines, paths relative to the cache root.
pub fn format_manifest(guest: &DebianGuest, root: &Path) -> Option<String> {
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .map(str::to_owned)
    };
    Some(format!(
        "kernel_package={}\nkernel_package_version={}\nkernel_sha256={}\norigin={}\n\
         kernel_version={}\nkernel={}\nbusybox={}\nmodules={}\nboard_dtbs={}\n",
        guest.kernel_deb.package,
        guest.kernel_deb.version,
        guest.kernel_deb.sha256,
        guest.origin.to_field(),
        guest.kernel_version,
        rel(&guest.kernel)?,
        rel(&guest.busybox)?,
        rel(&guest.modules_dir)?,
        rel(&guest.board_dtbs)?
    ))
}

/// Reads [`format_manifest`]'s text (`None` if a field is missing).
pub fn parse_manifest(text: &str, root: &Path) -> Option<DebianGuest> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    Some(DebianGuest {
        kernel: root.join(get("kernel")?),
        busybox: root.join(get("busybox")?),
        modules_dir: root.join(get("modules")?),
        board_dtbs: root.join(get("board_dtbs")?),
        kernel_version: get("kernel_version")?.to_owned(),
        kernel_deb: PackageRef {
            package: get("kernel_package")?.to_owned(),
            version: get("kernel_package_version")?.to_owned(),
            sha256: get("kernel_sha256")?.to_owned(),
        },
        origin: KernelOrigin::parse(get("origin")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    fn guest(root: &Path, release: &str, version: &str) -> DebianGuest {
        let pkg = root.join(format!("pkg/linux-image-{release}_{version}+mabc"));
        DebianGuest {
            kernel: pkg.join(format!("boot/vmlinuz-{release}")),
            busybox: root.join("pkg/busybox-static_1%3a1.35/bin/busybox"),
            modules_dir: pkg.join(format!("lib/modules/{release}")),
            board_dtbs: pkg.join(format!("usr/lib/linux-image-{release}")),
            kernel_version: release.into(),
            kernel_deb: PackageRef {
                package: format!("linux-image-{release}"),
                version: version.into(),
                sha256: "ab".repeat(32),
            },
            origin: KernelOrigin::Pin,
        }
    }

    #[test]
    fn manifest_round_trip() {
        let root = Path::new("/cache/debian");
        let mut g = guest(root, "6.1.0-57-arm64", "6.1.192-3");
        let text = format_manifest(&g, root).expect("inside the cache");
        assert!(text.contains("kernel=pkg/linux-image"), "{text}");
        assert!(text.contains("kernel_package_version=6.1.192-3"), "{text}");
        assert_eq!(parse_manifest(&text, root), Some(g.clone()));
        g.origin = KernelOrigin::InsteadOfPin {
            pinned: "linux-image-1-arm64 1-1".into(),
        };
        let text = format_manifest(&g, root).expect("inside the cache");
        assert_eq!(parse_manifest(&text, root), Some(g.clone()));
        assert_eq!(format_manifest(&g, Path::new("/elsewhere")), None);
        assert_eq!(parse_manifest("kernel=x\n", root), None);
        assert_eq!(version_in_file_name("1:1.35.0-4"), "1%3a1.35.0-4");
    }

    /// The pinned and the latest fetch each have their manifest; writing
    /// one leaves the other, and pruning keeps what both name.
    #[test]
    fn one_manifest_per_choice() {
        let dir = TestDir::new("debian-manifests");
        let cache = Cache::open(dir.path()).expect("cache");
        let pinned = guest(&cache.root, "6.1.0-57-arm64", "6.1.192-3");
        let mut latest = guest(&cache.root, "6.1.0-58-arm64", "6.1.200-1");
        latest.origin = KernelOrigin::Newest;
        for g in [&pinned, &latest] {
            fs::create_dir_all(g.kernel.parent().expect("boot")).expect("mkdir");
            fs::write(&g.kernel, b"k").expect("kernel");
            fs::create_dir_all(g.busybox.parent().expect("bin")).expect("mkdir");
            fs::write(&g.busybox, b"b").expect("busybox");
            fs::create_dir_all(&g.modules_dir).expect("mkdir");
            fs::write(g.modules_dir.join("modules.dep"), b"").expect("dep");
            for dtb in super::super::BOARD_DTBS {
                let path = g.board_dtbs.join(dtb);
                fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
                fs::write(path, b"d").expect("dtb");
            }
        }
        assert_eq!(cache.manifest(KernelChoice::Pinned), None);
        cache
            .set_manifest(KernelChoice::Pinned, &pinned)
            .expect("pinned");
        cache
            .set_manifest(KernelChoice::Latest, &latest)
            .expect("latest");
        assert_eq!(cache.manifest(KernelChoice::Pinned), Some(pinned.clone()));
        assert_eq!(cache.manifest(KernelChoice::Latest), Some(latest.clone()));

        // Three stale versions and a leftover staging directory.
        for stale in [
            "linux-image-a_1",
            "linux-image-b_1",
            "linux-image-c_1",
            ".x.partial",
        ] {
            fs::create_dir_all(cache.packages.join(stale)).expect("mkdir");
        }
        cache.prune();
        assert_eq!(cache.manifest(KernelChoice::Pinned), Some(pinned));
        assert_eq!(cache.manifest(KernelChoice::Latest), Some(latest));
        let left = fs::read_dir(&cache.packages).expect("pkg").count();
        // Two kernels, busybox, and KEEP_UNREFERENCED stale ones.
        assert_eq!(left, 3 + KEEP_UNREFERENCED);
        assert!(!cache.packages.join(".x.partial").exists());

        // A manifest whose files are gone is no manifest.
        fs::remove_file(cache.root.join("pkg/busybox-static_1%3a1.35/bin/busybox")).expect("rm");
        assert_eq!(cache.manifest(KernelChoice::Pinned), None);
    }

    #[test]
    fn prune_plan_keeps_referenced_and_the_newest_others() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let p = |n: &str| PathBuf::from("/c/pkg").join(n);
        let entries = [
            (p("pinned"), t(1)),
            (p("old"), t(2)),
            (p("older"), t(1)),
            (p("newer"), t(5)),
            (p("newest"), t(9)),
            (p(".k.partial"), t(9)),
        ];
        let mut gone = prune_plan(&entries, &[p("pinned")], 2);
        gone.sort();
        assert_eq!(gone, [p(".k.partial"), p("old"), p("older")]);
        assert_eq!(
            prune_plan(&entries[..3], &[p("pinned")], 2),
            Vec::<PathBuf>::new()
        );
        assert_eq!(prune_plan(&entries[..2], &[], 0), [p("old"), p("pinned")]);
    }

    /// A second holder waits (and is told) until the first lets go.
    #[test]
    fn the_second_lock_waits_for_the_first() {
        let dir = TestDir::new("debian-lock");
        let path = dir.path().join("lock");
        let first = lock_file(&path, || panic!("nobody holds it yet")).expect("first");
        let waited = Arc::new(AtomicBool::new(false));
        let (acquired_tx, acquired_rx) = mpsc::channel();
        let second = {
            let (path, waited) = (path.clone(), Arc::clone(&waited));
            std::thread::spawn(move || {
                let file =
                    lock_file(&path, || waited.store(true, Ordering::SeqCst)).expect("second");
                acquired_tx.send(()).expect("send");
                file
            })
        };
        // The second is waiting, not failing, and has not got the lock.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !waited.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the second never waited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            acquired_rx
                .recv_timeout(Duration::from_millis(200))
                .is_err()
        );
        drop(first);
        acquired_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the second gets the lock once the first is gone");
        // Closing the file lets go of the lock.
        drop(second.join().expect("thread"));
        let third_waited = AtomicBool::new(false);
        lock_file(&path, || third_waited.store(true, Ordering::SeqCst)).expect("third");
        assert!(
            !third_waited.load(Ordering::SeqCst),
            "free after the second"
        );
    }
}
