//! Fetching the stock Debian arm64 kernel and a static busybox from the
//! Debian archive, with apt, into a private cache, without touching the
//! machine's own apt or dpkg state.
//!
//! apt runs with its package lists and caches under the cache directory
//! (`-o Dir::State::Lists=…`, `-o Dir::Cache=…`, always absolute paths: apt
//! resolves relative ones against the system's directories) and
//! `APT::Architecture=arm64`; it reads the machine's sources and keys only.
//! Packages are fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x`; nothing is installed.
//!
//! Cache layout (`<cache>` is [`default_cache_dir`] or `--cache`):
//!
//! ```text
//! <cache>/apt/lists, <cache>/apt/cache   apt's private state
//! <cache>/apt/updated                    stamp: when the lists were last updated
//! <cache>/download/                      scratch for apt-get download
//! <cache>/pkg/<package>_<version>/       one unpacked package (created by rename: complete or absent)
//! <cache>/current                        which kernel and busybox are in use
//! ```
//!
//! [`fetch_debian`] skips apt entirely when the lists are younger than a day
//! and `current` names files that exist; when the archive cannot be reached
//! but a previous fetch is complete, it says so and uses that.

use std::ffi::OsString;
use std::fs;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use stratum_core::image::{self, KernelInfo};

use super::modules;
use crate::{Error, Result};

/// The meta-package that depends on the current kernel package.
pub const KERNEL_META_PACKAGE: &str = "linux-image-arm64";
/// The package with a statically linked busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// How old the package lists may be before [`fetch_debian`] updates them.
pub const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long to wait before the one retry of a failed apt download.
const RETRY_PAUSE: Duration = Duration::from_secs(3);
/// Lines of apt's output quoted in an error.
const APT_TAIL_LINES: usize = 8;

/// A fetched Debian guest: paths inside the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebianGuest {
    /// The kernel, an arm64 `Image` (`boot/vmlinuz-<version>` of the package).
    pub kernel: PathBuf,
    /// The static busybox binary.
    pub busybox: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-arm64` (what `uname -r` says).
    pub kernel_version: String,
    /// The kernel's modules directory (`lib/modules/<release>` of its
    /// package), pruned to [`super::modules::GUEST_MODULES`] and their
    /// dependencies.
    pub modules_dir: PathBuf,
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

/// Fetches (or finds in `cache_dir`) the current Debian arm64 kernel and
/// busybox-static. `progress`: show apt's progress when stdout is a terminal,
/// else one line per step (on stderr); nothing when false.
///
/// Errors name what failed: apt or dpkg-deb missing, the archive unreachable
/// (with apt's last lines), a package not found, extraction failed, or a
/// kernel that is not an arm64 `Image`. Downloads are retried once.
pub fn fetch_debian(cache_dir: &Path, progress: bool) -> Result<DebianGuest> {
    let cache = Cache::open(cache_dir)?;
    let report = Reporter::new(progress);
    let cached = cache.current();
    if let Some(guest) = &cached
        && cache.lists_fresh()
    {
        verify_kernel(&guest.kernel)?;
        return Ok(guest.clone());
    }
    let apt = Apt::new(&cache, report)?;
    report.step(&format!(
        "updating the Debian package lists (arm64) in {}",
        cache.apt.display()
    ));
    if let Err(e) = apt.run_retrying("apt-get", &["update"], None) {
        let Some(guest) = cached else {
            return Err(e.context("cannot update the Debian package lists"));
        };
        report.warn(&format!(
            "cannot update the Debian package lists ({e}); using the cached kernel {}",
            guest.kernel_version
        ));
        verify_kernel(&guest.kernel)?;
        return Ok(guest);
    }
    cache.touch_updated()?;

    let depends = apt.query("apt-cache", &["depends", KERNEL_META_PACKAGE])?;
    let kernel_package = parse_kernel_dependency(&depends).ok_or_else(|| {
        Error::environment(format!(
            "{KERNEL_META_PACKAGE} depends on no linux-image-*-arm64 package:\n{}",
            tail(&depends)
        ))
    })?;
    let kernel_version = kernel_package
        .strip_prefix("linux-image-")
        .expect("parse_kernel_dependency checks the prefix")
        .to_owned();
    report.step(&format!("{KERNEL_META_PACKAGE} → {kernel_package}"));

    let modules_rel = Path::new("lib").join("modules").join(&kernel_version);
    let kernel_unpack = Unpack {
        keep: &["boot", "lib"],
        tag: Some(modules::set_tag(modules::GUEST_MODULES)),
        prune: Some(&|dir: &Path| modules::prune(&dir.join(&modules_rel), modules::GUEST_MODULES)),
    };
    let kernel_dir = cache.unpacked(&apt, &kernel_package, &kernel_unpack, report)?;
    let busybox_unpack = Unpack {
        keep: &["bin"],
        tag: None,
        prune: None,
    };
    let busybox_dir = cache.unpacked(&apt, BUSYBOX_PACKAGE, &busybox_unpack, report)?;
    let guest = DebianGuest {
        kernel: kernel_dir
            .join("boot")
            .join(format!("vmlinuz-{kernel_version}")),
        busybox: busybox_dir.join("bin").join("busybox"),
        modules_dir: kernel_dir.join(&modules_rel),
        kernel_version,
    };
    for (path, package) in [
        (&guest.kernel, &kernel_package[..]),
        (&guest.busybox, BUSYBOX_PACKAGE),
        (&guest.modules_dir.join("modules.dep"), &kernel_package[..]),
    ] {
        if !path.is_file() {
            return Err(Error::environment(format!(
                "package {package} has no {} after extraction",
                path.display()
            )));
        }
    }
    verify_kernel(&guest.kernel)?;
    cache.set_current(&guest)?;
    cache.prune(&[&kernel_dir, &busybox_dir]);
    Ok(guest)
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

/// The `Version:` of the first stanza of `apt-cache show` output.
pub fn parse_version(show: &str) -> Option<String> {
    show.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A package version as a file-name component (`:` of an epoch is not
/// welcome everywhere).
fn version_in_file_name(version: &str) -> String {
    version.replace(':', "%3a")
}

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

/// Step lines and warnings on stderr (when `progress`).
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
}

/// The cache directory and its parts (absolute paths).
struct Cache {
    root: PathBuf,
    apt: PathBuf,
    packages: PathBuf,
}

impl Cache {
    fn open(dir: &Path) -> Result<Self> {
        let env = |e: std::io::Error, p: &Path| {
            Error::environment(format!("cannot create {}: {e}", p.display()))
        };
        fs::create_dir_all(dir).map_err(|e| env(e, dir))?;
        // apt takes relative Dir:: settings relative to the system's dirs.
        let root = dir.canonicalize().map_err(|e| env(e, dir))?;
        let apt = root.join("apt");
        let packages = root.join("pkg");
        for d in [
            apt.join("lists").join("partial"),
            apt.join("cache").join("archives").join("partial"),
            packages.clone(),
        ] {
            fs::create_dir_all(&d).map_err(|e| env(e, &d))?;
        }
        Ok(Self {
            root,
            apt,
            packages,
        })
    }

    fn updated_stamp(&self) -> PathBuf {
        self.apt.join("updated")
    }

    fn manifest(&self) -> PathBuf {
        self.root.join("current")
    }

    /// Whether the lists were updated less than [`LISTS_MAX_AGE`] ago.
    fn lists_fresh(&self) -> bool {
        fs::metadata(self.updated_stamp())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE)
    }

    fn touch_updated(&self) -> Result<()> {
        let stamp = self.updated_stamp();
        fs::write(&stamp, b"")
            .map_err(|e| Error::environment(format!("cannot write {}: {e}", stamp.display())))
    }

    /// The guest a previous fetch completed, if its files are all there.
    fn current(&self) -> Option<DebianGuest> {
        let text = fs::read_to_string(self.manifest()).ok()?;
        let guest = parse_manifest(&text, &self.root)?;
        (guest.kernel.is_file()
            && guest.busybox.is_file()
            && guest.modules_dir.join("modules.dep").is_file())
        .then_some(guest)
    }

    fn set_current(&self, guest: &DebianGuest) -> Result<()> {
        let text = format_manifest(guest, &self.root).ok_or_else(|| {
            Error::environment("fetched files ended up outside the cache".to_owned())
        })?;
        super::initramfs::write_atomically(&self.manifest(), text.as_bytes())
    }

    /// The directory `package` (its candidate version) is unpacked in,
    /// downloading and unpacking it first if needed, as `how` says.
    fn unpacked(
        &self,
        apt: &Apt<'_>,
        package: &str,
        how: &Unpack<'_>,
        report: Reporter,
    ) -> Result<PathBuf> {
        let show = apt.query("apt-cache", &["show", "--no-all-versions", package])?;
        let version = parse_version(&show).ok_or_else(|| {
            Error::environment(format!(
                "package {package} not found in the Debian archive (apt-cache show gave no version)"
            ))
        })?;
        let tag = how
            .tag
            .as_ref()
            .map_or_else(String::new, |t| format!("+m{t}"));
        let dir = self
            .packages
            .join(format!("{package}_{}{tag}", version_in_file_name(&version)));
        if dir.is_dir() {
            return Ok(dir);
        }
        let download = self.root.join("download");
        let _ = fs::remove_dir_all(&download);
        fs::create_dir_all(&download).map_err(|e| {
            Error::environment(format!("cannot create {}: {e}", download.display()))
        })?;
        report.step(&format!("downloading {package} {version}"));
        let spec = format!("{package}={version}");
        apt.run_retrying("apt-get", &["download", &spec], Some(&download))
            .map_err(|e| e.context(format!("cannot download {package}")))?;
        let deb = find_deb(&download, package)?;

        report.step(&format!("extracting {}", deb.display()));
        let staging = self.packages.join(format!(".{package}.partial"));
        let _ = fs::remove_dir_all(&staging);
        dpkg_extract(&deb, &staging, package)?;
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

    /// Removes unpacked packages other than `keep`.
    fn prune(&self, keep: &[&Path]) {
        let Ok(entries) = fs::read_dir(&self.packages) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !keep.iter().any(|k| *k == path) {
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
}

/// The manifest: `key=value` lines, paths relative to the cache root.
fn format_manifest(guest: &DebianGuest, root: &Path) -> Option<String> {
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .map(str::to_owned)
    };
    Some(format!(
        "kernel_version={}\nkernel={}\nbusybox={}\nmodules={}\n",
        guest.kernel_version,
        rel(&guest.kernel)?,
        rel(&guest.busybox)?,
        rel(&guest.modules_dir)?
    ))
}

fn parse_manifest(text: &str, root: &Path) -> Option<DebianGuest> {
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
        kernel_version: get("kernel_version")?.to_owned(),
    })
}

/// The one `<package>_*.deb` apt-get download left in `dir`.
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .ok_or_else(|| {
            Error::environment(format!(
                "apt-get download of {package} succeeded but left no {prefix}*.deb in {}",
                dir.display()
            ))
        })
}

/// `dpkg-deb -x DEB DIR`.
fn dpkg_extract(deb: &Path, dir: &Path, package: &str) -> Result<()> {
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::environment(
                    "dpkg-deb not found: it unpacks the Debian packages; install the `dpkg` package"
                        .to_owned(),
                )
            } else {
                Error::environment(format!("cannot run dpkg-deb: {e}"))
            }
        })?;
    if out.status.success() {
        return Ok(());
    }
    let _ = fs::remove_dir_all(dir);
    Err(Error::environment(format!(
        "extracting {package} failed: `dpkg-deb -x {}` exited with {}:\n{}",
        deb.display(),
        out.status,
        tail(&String::from_utf8_lossy(&out.stderr))
    )))
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

/// apt with the cache's private state.
struct Apt<'a> {
    cache: &'a Cache,
    report: Reporter,
}

impl<'a> Apt<'a> {
    /// Checks that apt and dpkg-deb are there.
    fn new(cache: &'a Cache, report: Reporter) -> Result<Self> {
        for (tool, package) in [
            ("apt-get", "apt"),
            ("apt-cache", "apt"),
            ("dpkg-deb", "dpkg"),
        ] {
            let found = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if found.is_err() {
                return Err(Error::environment(format!(
                    "{tool} not found: Stratum fetches the Debian guest with apt and dpkg-deb; \
                     install the `{package}` package (on a Debian or Ubuntu machine)"
                )));
            }
        }
        Ok(Self { cache, report })
    }

    fn options(&self) -> Vec<OsString> {
        let set = |key: &str, value: &dyn AsRef<std::ffi::OsStr>| {
            let mut s = OsString::from(format!("{key}="));
            s.push(value);
            ["-o".into(), s]
        };
        let mut args = Vec::new();
        args.extend(set("Dir::State::Lists", &self.cache.apt.join("lists")));
        args.extend(set("Dir::Cache", &self.cache.apt.join("cache")));
        args.extend(set("APT::Architecture", &"arm64"));
        args.extend(set("APT::Architectures", &"arm64"));
        // Our own directories: no need to drop to the `_apt` user (who
        // could not write to them).
        args.extend(set("APT::Sandbox::User", &"root"));
        args.extend(set("Acquire::Languages", &"none"));
        // A source that cannot be fetched is an error, not a warning.
        args.extend(set("APT::Update::Error-Mode", &"any"));
        args
    }

    fn command(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args(self.options())
            .args(args)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Runs a query (apt-cache) and returns its stdout.
    fn query(&self, tool: &str, args: &[&str]) -> Result<String> {
        let out = self
            .command(tool, args, None)
            .output()
            .map_err(|e| Error::environment(format!("cannot run {tool}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = args.last().copied().unwrap_or_default();
        let message = if stderr.contains("No packages found") || stderr.contains("Unable to locate")
        {
            format!(
                "package {what} not found in the Debian archive for arm64 \
                 (are the machine's apt sources Debian?):\n{}",
                tail(&stderr)
            )
        } else {
            format!(
                "`{tool} {}` failed ({}):\n{}",
                args.join(" "),
                out.status,
                tail(&format!("{stdout}{stderr}"))
            )
        };
        Err(Error::environment(message))
    }

    /// Runs a network step (update, download), once more after a pause if
    /// it fails. Shows apt's progress on a terminal, else keeps its output
    /// for the error.
    fn run_retrying(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> Result<()> {
        let Err(first) = self.run(tool, args, cwd) else {
            return Ok(());
        };
        self.report.warn(&format!(
            "{first}\nretrying once in {} s",
            RETRY_PAUSE.as_secs()
        ));
        std::thread::sleep(RETRY_PAUSE);
        self.run(tool, args, cwd)
    }

    fn run(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> Result<()> {
        let mut cmd = self.command(tool, args, cwd);
        if self.report.apt_progress {
            cmd.stdout(Stdio::inherit());
        } else {
            cmd.arg("-q").stdout(Stdio::piped());
        }
        let out = cmd
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::environment(format!("cannot run {tool}: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let unreachable = text.contains("Failed to fetch")
            || text.contains("Could not resolve")
            || text.contains("Unable to connect")
            || text.contains("Temporary failure");
        let what = if unreachable {
            "the Debian archive is unreachable: "
        } else {
            ""
        };
        Err(Error::environment(format!(
            "{what}`{tool} {}` failed ({}); apt's last lines:\n{}",
            args.join(" "),
            out.status,
            tail(&text)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestDir, linux_image};

    #[test]
    fn cache_dir_precedence() {
        let s = |v: &str| Some(OsString::from(v));
        assert_eq!(
            cache_dir_from(s("/c"), s("/x"), s("/h")),
            Some(PathBuf::from("/c/debian"))
        );
        assert_eq!(
            cache_dir_from(None, s("/x"), s("/h")),
            Some(PathBuf::from("/x/stratum/debian"))
        );
        assert_eq!(
            cache_dir_from(None, None, s("/h")),
            Some(PathBuf::from("/h/.cache/stratum/debian"))
        );
        assert_eq!(cache_dir_from(None, None, None), None);
    }

    #[test]
    fn parses_apt_cache_depends() {
        let out = "linux-image-arm64\n  Depends: linux-image-6.1.0-56-arm64\n";
        assert_eq!(
            parse_kernel_dependency(out).as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        let virtual_dep = "linux-image-arm64\n  PreDepends: x\n  Depends: <linux-image-6.12.9-arm64>\n  Recommends: y\n";
        assert_eq!(
            parse_kernel_dependency(virtual_dep).as_deref(),
            Some("linux-image-6.12.9-arm64")
        );
        assert_eq!(
            parse_kernel_dependency("linux-image-arm64\n  Depends: kmod\n"),
            None
        );
        assert_eq!(parse_kernel_dependency(""), None);
    }

    #[test]
    fn parses_apt_cache_show_version() {
        let show = "Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nFilename: pool/x.deb\n\nPackage: busybox-static\nVersion: 1:1.30\n";
        assert_eq!(
            parse_version(show).as_deref(),
            Some("1:1.35.0-4+deb12u1+b1")
        );
        assert_eq!(version_in_file_name("1:1.35.0-4"), "1%3a1.35.0-4");
        assert_eq!(parse_version("Package: x\n"), None);
        assert_eq!(parse_version("Package: x\nVersion: \n"), None);
    }

    #[test]
    fn manifest_round_trip() {
        let root = Path::new("/cache/debian");
        let guest = DebianGuest {
            kernel: root
                .join("pkg/linux-image-6.1.0-56-arm64_6.1.192-2/boot/vmlinuz-6.1.0-56-arm64"),
            busybox: root.join("pkg/busybox-static_1%3a1.35/bin/busybox"),
            modules_dir: root
                .join("pkg/linux-image-6.1.0-56-arm64_6.1.192-2/lib/modules/6.1.0-56-arm64"),
            kernel_version: "6.1.0-56-arm64".into(),
        };
        let text = format_manifest(&guest, root).expect("inside the cache");
        assert!(text.contains("kernel=pkg/linux-image"), "{text}");
        assert_eq!(parse_manifest(&text, root), Some(guest.clone()));
        assert_eq!(format_manifest(&guest, Path::new("/elsewhere")), None);
        assert_eq!(parse_manifest("kernel=x\n", root), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=20).map(|i| format!("line {i}\n\n")).collect();
        let t = tail(&text);
        assert_eq!(t.lines().count(), APT_TAIL_LINES);
        assert!(
            t.starts_with("    line 13") && t.ends_with("line 20"),
            "{t}"
        );
    }

    /// A complete cache with fresh lists is used without running apt.
    #[test]
    fn fresh_complete_cache_needs_no_apt() {
        let dir = TestDir::new("debian-cache");
        let cache = Cache::open(dir.path()).expect("cache");
        let pkg = cache
            .packages
            .join("linux-image-9.9.9-1-arm64_9.9.9-1/boot");
        fs::create_dir_all(&pkg).expect("mkdir");
        fs::write(
            pkg.join("vmlinuz-9.9.9-1-arm64"),
            linux_image(0, 0x10000, 0xa, 0x1000),
        )
        .expect("kernel");
        let bb = cache.packages.join("busybox-static_1/bin");
        fs::create_dir_all(&bb).expect("mkdir");
        fs::write(bb.join("busybox"), b"\x7fELF").expect("busybox");
        let modules_dir = pkg
            .parent()
            .expect("the package")
            .join("lib/modules/9.9.9-1-arm64");
        super::super::modules::write_fake_cache_dir(&modules_dir);
        let guest = DebianGuest {
            kernel: pkg.join("vmlinuz-9.9.9-1-arm64"),
            busybox: bb.join("busybox"),
            modules_dir,
            kernel_version: "9.9.9-1-arm64".into(),
        };
        cache.set_current(&guest).expect("manifest");
        cache.touch_updated().expect("stamp");
        assert!(cache.lists_fresh());
        assert_eq!(fetch_debian(dir.path(), false).expect("from cache"), guest);

        // A kernel that is not an arm64 Image is refused.
        fs::write(
            &guest.kernel,
            b"not a kernel, just text that is long enough",
        )
        .expect("w");
        let e = fetch_debian(dir.path(), false).expect_err("not an Image");
        assert!(e.to_string().contains("not an arm64 Linux Image"), "{e}");
    }
}
