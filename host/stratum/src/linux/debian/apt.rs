//! apt with Stratum's own sources and state: nothing of the machine's apt
//! sources, pins, keys or dpkg database reaches a fetch.
//!
//! [`Sources::list`] is the `sources.list` the tool writes into the cache:
//! Debian 12 (`bookworm`, `bookworm-updates`, `bookworm-security`), `main`,
//! `arch=arm64`, `signed-by=` Debian's archive keyring. [`apt_options`] are
//! the `-o` settings every apt command gets: the source list and every
//! directory apt would read host state from (source parts, preferences,
//! trusted keys, the dpkg status, lists, caches) point into the cache, and
//! unauthenticated or insecure repositories are refused. The machine's
//! `apt.conf` is still read (a proxy set there keeps working), and
//! `APT_CONFIG` is honoured.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Reporter, tail};
use crate::{Error, Result};

/// Environment variable: the Debian mirror (default [`DEFAULT_MIRROR`]).
pub const MIRROR_ENV: &str = "STRATUM_DEBIAN_MIRROR";
/// Environment variable: the Debian security mirror (default: the mirror's
/// URL with `-security` appended, as [`security_mirror_for`] says).
pub const SECURITY_MIRROR_ENV: &str = "STRATUM_DEBIAN_SECURITY_MIRROR";
/// The Debian mirror unless [`MIRROR_ENV`] names another.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The Debian release the guest comes from.
pub const SUITE: &str = "bookworm";
/// The architecture of the guest's packages.
pub const ARCH: &str = "arm64";
/// The package with Debian's archive keyring (Debian's `main`, Ubuntu's
/// `universe`).
pub const KEYRING_PACKAGE: &str = "debian-archive-keyring";
/// Where [`KEYRING_PACKAGE`] puts the keyring (the first one found is used;
/// newer releases of the package also ship the `.pgp` name).
pub const KEYRINGS: &[&str] = &[
    "/usr/share/keyrings/debian-archive-keyring.gpg",
    "/usr/share/keyrings/debian-archive-keyring.pgp",
];
/// How long to wait before the one retry of a failed apt download.
const RETRY_PAUSE: Duration = Duration::from_secs(3);

/// Where the archive is and which key signs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    /// The Debian mirror (`…/debian`).
    pub mirror: String,
    /// The security mirror (`…/debian-security`).
    pub security: String,
    /// Debian's archive keyring.
    pub keyring: PathBuf,
}

impl Sources {
    /// The mirrors from [`MIRROR_ENV`] and [`SECURITY_MIRROR_ENV`] (or the
    /// defaults), with `keyring`.
    pub fn from_env(keyring: PathBuf) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self::new(var(MIRROR_ENV), var(SECURITY_MIRROR_ENV), keyring)
    }

    /// The mirrors given (or the defaults), with `keyring`.
    pub fn new(mirror: Option<String>, security: Option<String>, keyring: PathBuf) -> Self {
        let mirror = mirror
            .map(|m| m.trim().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_MIRROR.to_owned());
        let security = security
            .map(|s| s.trim().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| security_mirror_for(&mirror));
        Self {
            mirror,
            security,
            keyring,
        }
    }

    /// The `sources.list` text (one-line format, which every apt since 1.1
    /// reads with options).
    pub fn list(&self) -> String {
        let options = format!("[arch={ARCH} signed-by={}]", self.keyring.display());
        format!(
            "# Written by stratum for the Debian guest: Debian 12 ({SUITE}) {ARCH}.\n\
             # The machine's own apt sources are not used.\n\
             deb {options} {mirror} {SUITE} main\n\
             deb {options} {mirror} {SUITE}-updates main\n\
             deb {options} {security} {SUITE}-security main\n",
            mirror = self.mirror,
            security = self.security,
        )
    }
}

/// The security mirror next to `mirror`: its URL with `-security`
/// appended, as Debian's mirrors lay it out (`http://deb.debian.org/debian`
/// → `http://deb.debian.org/debian-security`).
pub fn security_mirror_for(mirror: &str) -> String {
    let mirror = mirror.trim_end_matches('/');
    format!("{mirror}-security")
}

/// The keyring to use: the first of [`KEYRINGS`] that exists.
pub fn find_keyring() -> Option<PathBuf> {
    KEYRINGS.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Finds Debian's archive keyring, installing [`KEYRING_PACKAGE`] with the
/// machine's apt-get when it is missing and we are root; else an error
/// saying what to install.
pub fn ensure_keyring(report: Reporter) -> Result<PathBuf> {
    if let Some(keyring) = find_keyring() {
        return Ok(keyring);
    }
    if !running_as_root() {
        return Err(Error::environment(missing_keyring_message()));
    }
    report.step(&format!(
        "{} is missing: installing {KEYRING_PACKAGE} with apt-get",
        KEYRINGS[0]
    ));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .arg(KEYRING_PACKAGE)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    let mut out = install();
    if out.as_ref().is_ok_and(|o| !o.status.success()) {
        // Fresh containers have no package lists yet.
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .stdin(Stdio::null())
            .output();
        out = install();
    }
    let out = out.map_err(|e| Error::environment(format!("cannot run apt-get: {e}")))?;
    match find_keyring() {
        Some(keyring) if out.status.success() => Ok(keyring),
        _ => Err(Error::environment(format!(
            "{}\n`apt-get install {KEYRING_PACKAGE}` failed ({}):\n{}",
            missing_keyring_message(),
            out.status,
            tail(&format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        ))),
    }
}

/// The error for a missing keyring.
fn missing_keyring_message() -> String {
    format!(
        "Debian's archive keyring ({}) is missing: it verifies the Debian archive the guest \
         comes from. Install the `{KEYRING_PACKAGE}` package (`sudo apt-get install \
         {KEYRING_PACKAGE}`; on Ubuntu it is in `universe`)",
        KEYRINGS[0]
    )
}

/// Whether the effective user is root (from `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_uid(&s))
        == Some(0)
}

/// The effective uid of a `/proc/<pid>/status` text (`Uid:` real,
/// effective, saved, filesystem).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The files and directories of the cache that apt uses instead of the
/// machine's (all absolute: apt resolves relative `Dir::` settings against
/// the system's directories).
#[derive(Clone, Debug)]
pub struct AptDirs {
    /// `<cache>/apt`.
    pub root: PathBuf,
}

impl AptDirs {
    /// The written source list.
    pub fn source_list(&self) -> PathBuf {
        self.etc().join("sources.list")
    }

    /// An empty directory: apt's `sources.list.d`, `preferences.d` and
    /// `trusted.gpg.d`.
    pub fn empty_dir(&self) -> PathBuf {
        self.etc().join("empty.d")
    }

    /// Files that never exist: apt's `preferences` and `trusted.gpg`.
    fn absent(&self, name: &str) -> PathBuf {
        self.etc().join(name)
    }

    fn etc(&self) -> PathBuf {
        self.root.join("etc")
    }

    /// An empty dpkg status: no installed package sways a candidate.
    pub fn dpkg_status(&self) -> PathBuf {
        self.root.join("status")
    }

    /// The package lists.
    pub fn lists(&self) -> PathBuf {
        self.root.join("lists")
    }

    /// apt's cache (`archives/partial` inside).
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// The directories apt needs to exist.
    pub fn dirs(&self) -> [PathBuf; 3] {
        [
            self.empty_dir(),
            self.lists().join("partial"),
            self.cache().join("archives").join("partial"),
        ]
    }
}

/// The `-o` options of every apt command (see the module docs).
pub fn apt_options(dirs: &AptDirs) -> Vec<OsString> {
    let paths: [(&str, PathBuf); 10] = [
        ("Dir::Etc::SourceList", dirs.source_list()),
        ("Dir::Etc::SourceParts", dirs.empty_dir()),
        ("Dir::Etc::Preferences", dirs.absent("preferences")),
        ("Dir::Etc::PreferencesParts", dirs.empty_dir()),
        ("Dir::Etc::Trusted", dirs.absent("trusted.gpg")),
        ("Dir::Etc::TrustedParts", dirs.empty_dir()),
        ("Dir::State::Lists", dirs.lists()),
        ("Dir::State::status", dirs.dpkg_status()),
        (
            "Dir::State::extended_states",
            dirs.root.join("extended_states"),
        ),
        ("Dir::Cache", dirs.cache()),
    ];
    let values: [(&str, &str); 10] = [
        ("APT::Architecture", ARCH),
        ("APT::Architectures", ARCH),
        // A host's default release would sway which version is the candidate.
        ("APT::Default-Release", ""),
        ("APT::Get::AllowUnauthenticated", "false"),
        ("Acquire::AllowInsecureRepositories", "false"),
        ("Acquire::AllowDowngradeToInsecureRepositories", "false"),
        // Our own directories: no need to drop to the `_apt` user (who
        // could not write to them).
        ("APT::Sandbox::User", "root"),
        ("Acquire::Languages", "none"),
        // Nothing but the package lists (no dep11, no Contents).
        (
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled",
            "false",
        ),
        // A source that cannot be fetched is an error, not a warning.
        ("APT::Update::Error-Mode", "any"),
    ];
    let mut args = Vec::new();
    for (key, path) in paths {
        let mut s = OsString::from(format!("{key}="));
        s.push(path.as_os_str());
        args.extend([OsString::from("-o"), s]);
    }
    for (key, value) in values {
        args.extend([
            OsString::from("-o"),
            OsString::from(format!("{key}={value}")),
        ]);
    }
    args
}

/// apt with the cache's sources and state.
pub struct Apt {
    options: Vec<OsString>,
    report: Reporter,
}

impl Apt {
    /// Checks that apt and dpkg-deb are there.
    pub fn new(dirs: &AptDirs, report: Reporter) -> Result<Self> {
        for (tool, package) in [
            ("apt-get", "apt"),
            ("apt-cache", "apt"),
            ("dpkg-deb", "dpkg"),
            ("sha256sum", "coreutils"),
        ] {
            let found = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if found.is_err() {
                return Err(Error::environment(format!(
                    "{tool} not found: Stratum fetches the Debian guest with apt, dpkg-deb and \
                     sha256sum; install the `{package}` package (on a Debian or Ubuntu machine)"
                )));
            }
        }
        Ok(Self {
            options: apt_options(dirs),
            report,
        })
    }

    fn command(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args(&self.options)
            .args(args)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Runs a query (apt-cache) and returns its stdout, or `None` when apt
    /// says the package is unknown.
    pub fn query(&self, tool: &str, args: &[&str]) -> Result<Option<String>> {
        let out = self
            .command(tool, args, None)
            .output()
            .map_err(|e| Error::environment(format!("cannot run {tool}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(Some(stdout));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No packages found") || stderr.contains("Unable to locate") {
            return Ok(None);
        }
        Err(Error::environment(format!(
            "`{tool} {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            tail(&format!("{stdout}{stderr}"))
        )))
    }

    /// Runs a network step (update, download), once more after a pause if
    /// it fails. Shows apt's progress on a terminal, else keeps its output
    /// for the error.
    pub fn run_retrying(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> Result<()> {
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

    /// `arg` as text.
    fn text(arg: &std::ffi::OsStr) -> &str {
        arg.to_str().expect("UTF-8 option")
    }

    fn sources() -> Sources {
        Sources::new(
            None,
            None,
            PathBuf::from("/usr/share/keyrings/debian-archive-keyring.gpg"),
        )
    }

    #[test]
    fn the_source_list_names_bookworm_its_updates_and_security() {
        let list = sources().list();
        let opts = "[arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
        let lines: Vec<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                format!("deb {opts} http://deb.debian.org/debian bookworm main"),
                format!("deb {opts} http://deb.debian.org/debian bookworm-updates main"),
                format!("deb {opts} http://deb.debian.org/debian-security bookworm-security main"),
            ],
            "{list}"
        );
    }

    #[test]
    fn mirrors_come_from_the_environment_values() {
        let s = Sources::new(
            Some("http://mirror.example/debian/ ".into()),
            None,
            PathBuf::from("/k.gpg"),
        );
        assert_eq!(s.mirror, "http://mirror.example/debian");
        assert_eq!(s.security, "http://mirror.example/debian-security");
        let list = s.list();
        assert!(
            list.contains(
                "deb [arch=arm64 signed-by=/k.gpg] http://mirror.example/debian bookworm main"
            ),
            "{list}"
        );
        let s = Sources::new(
            Some("http://cache.local:3142/deb".into()),
            Some("http://sec.example/ds/".into()),
            PathBuf::from("/k.gpg"),
        );
        assert_eq!(s.security, "http://sec.example/ds");
        assert_eq!(
            security_mirror_for("http://cache.local:3142/debian/"),
            "http://cache.local:3142/debian-security"
        );
    }

    /// Every path apt is given lies inside the cache, and every place apt
    /// reads sources, pins, keys or package state from is among them.
    #[test]
    fn apt_options_keep_every_host_source_out() {
        let root = PathBuf::from("/c/debian/apt");
        let dirs = AptDirs { root: root.clone() };
        let opts = apt_options(&dirs);
        assert_eq!(opts.len() % 2, 0);
        let settings: Vec<(&str, &str)> = opts
            .chunks(2)
            .map(|pair| {
                assert_eq!(pair[0], "-o");
                text(&pair[1]).split_once('=').expect("key=value")
            })
            .collect();
        let get = |key: &str| {
            settings
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("{key} is not set: {settings:?}"))
                .1
        };
        for key in [
            "Dir::Etc::SourceList",
            "Dir::Etc::SourceParts",
            "Dir::Etc::Preferences",
            "Dir::Etc::PreferencesParts",
            "Dir::Etc::Trusted",
            "Dir::Etc::TrustedParts",
            "Dir::State::Lists",
            "Dir::State::status",
            "Dir::State::extended_states",
            "Dir::Cache",
        ] {
            assert!(
                Path::new(get(key)).starts_with(&root),
                "{key}={} is outside the cache",
                get(key)
            );
        }
        assert_eq!(
            get("Dir::Etc::SourceList"),
            "/c/debian/apt/etc/sources.list"
        );
        for (key, value) in &settings {
            assert!(
                !value.starts_with("/etc") && !value.starts_with("/var"),
                "{key}={value} names a host path"
            );
        }
        assert_eq!(get("APT::Architecture"), "arm64");
        assert_eq!(get("APT::Default-Release"), "");
        assert_eq!(get("APT::Get::AllowUnauthenticated"), "false");
        assert_eq!(get("Acquire::AllowInsecureRepositories"), "false");
        // The empty directories exist, the absent files are not among them.
        assert!(dirs.dirs().contains(&dirs.empty_dir()));
        assert!(!dirs.dirs().iter().any(|d| d.ends_with("sources.list")));
    }

    #[test]
    fn reads_the_effective_uid() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(effective_uid("Name: x\n"), None);
    }

    #[test]
    fn a_missing_keyring_says_what_to_install() {
        let m = missing_keyring_message();
        assert!(
            m.contains("debian-archive-keyring") && m.contains("apt-get install"),
            "{m}"
        );
    }
}
