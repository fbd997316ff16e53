//! One downloaded `.deb`: its SHA-256 checked before anything else is done
//! with it ([`verify_sha256`]), then unpacked with `dpkg-deb -x`.
//!
//! The hash comes from `sha256sum` (coreutils): it is Essential on every
//! Debian and Ubuntu machine, the only machines the fetch runs on (it needs
//! apt and dpkg-deb too), so no hashing crate is linked for one file per
//! fetch.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tail;
use crate::{Error, Result};

/// The SHA-256 of `file`, lower-case hex (`sha256sum`).
pub fn sha256_of(file: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg("--")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::environment(format!("cannot run sha256sum: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hash = text.split_whitespace().next().unwrap_or_default();
    if !out.status.success() || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::environment(format!(
            "`sha256sum {}` failed ({}): {}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(hash.to_ascii_lowercase())
}

/// Checks that `file` has SHA-256 `expected` (which `source` names: the pin,
/// the signed index). On a mismatch the file is removed and the error names
/// it and both hashes.
pub fn verify_sha256(file: &Path, expected: &str, source: &str) -> Result<()> {
    let actual = sha256_of(file)?;
    if actual.eq_ignore_ascii_case(expected.trim()) {
        return Ok(());
    }
    let removed = match fs::remove_file(file) {
        Ok(()) => "it was removed".to_owned(),
        Err(e) => format!("removing it failed: {e}"),
    };
    Err(Error::environment(format!(
        "{} is not the package it should be: its SHA-256 is {actual}, {source} says {expected}; \
         {removed}",
        file.display()
    )))
}

/// The one `<package>_*.deb` apt-get download left in `dir`.
pub fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
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
pub fn dpkg_extract(deb: &Path, dir: &Path, package: &str) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;

    /// SHA-256 of the three bytes `abc` (FIPS 180-2, appendix B.1).
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn a_file_with_the_expected_hash_passes() {
        let dir = TestDir::new("deb-hash-ok");
        let file = dir.write("p_1_arm64.deb", b"abc");
        assert_eq!(sha256_of(&file).expect("hash"), ABC);
        verify_sha256(&file, &ABC.to_ascii_uppercase(), "the pin").expect("matches");
        assert!(file.is_file(), "a good file stays");
    }

    #[test]
    fn a_corrupted_file_is_refused_and_removed() {
        let dir = TestDir::new("deb-hash-bad");
        let file = dir.write("linux-image-x_1_arm64.deb", b"abd");
        let e = verify_sha256(&file, ABC, "the signed index").expect_err("corrupted");
        let msg = e.to_string();
        for needle in [
            "linux-image-x_1_arm64.deb",
            ABC,
            &sha256_of_bytes_abd(),
            "the signed index",
            "it was removed",
        ] {
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
        assert!(!file.exists(), "the bad file must not be kept");
    }

    /// `abd`'s hash, computed by writing it out (so the test does not
    /// depend on a second copy of a constant).
    fn sha256_of_bytes_abd() -> String {
        let dir = TestDir::new("deb-hash-abd");
        sha256_of(&dir.write("abd", b"abd")).expect("hash")
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let dir = TestDir::new("deb-hash-missing");
        let e = sha256_of(&dir.path().join("nothing.deb")).expect_err("missing");
        assert!(e.to_string().contains("nothing.deb"), "{e}");
    }

    #[test]
    fn finds_the_downloaded_deb() {
        let dir = TestDir::new("deb-find");
        dir.write("other_1_arm64.deb", b"");
        let deb = dir.write("busybox-static_1%3a1.35_arm64.deb", b"");
        assert_eq!(find_deb(dir.path(), "busybox-static").expect("found"), deb);
        assert!(find_deb(dir.path(), "busybox").is_err());
    }
}
