//! The project's programs every Linux guest's initramfs carries: the
//! workload program ([`super::workload`]) and the service VM's disk daemon
//! ([`super::blkd`]), both static `aarch64-unknown-linux-musl` binaries
//! of this workspace ([`GuestPrograms`]).
//!
//! [`locate`] finds them: each from its environment variable
//! (`$STRATUM_WORKLOAD`, `$STRATUM_BLKD`) when set; a daemon not named
//! that way is taken from beside a named workload program when it is there
//! (the two are built into one directory); whatever is still missing comes
//! from [`build`], which builds both with one cargo invocation in the
//! `workload` profile (release, stripped, so the initramfs stays small).

use std::env;
use std::path::{Path, PathBuf};

use super::{blkd, workload};
use crate::{Error, Result, workspace_root};

/// The target the programs are built for: static, for any arm64 Linux.
pub const TARGET: &str = "aarch64-unknown-linux-musl";
/// The Cargo profile they are built with (`Cargo.toml`: release, stripped).
pub const PROFILE: &str = "workload";

/// The guest programs' binaries on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPrograms {
    /// `stratum-workload`.
    pub workload: PathBuf,
    /// `stratum-blkd`.
    pub blkd: PathBuf,
}

/// The `cargo` arguments that build both.
pub fn build_args() -> [&'static str; 9] {
    [
        "build",
        "-p",
        workload::PACKAGE,
        "-p",
        blkd::PACKAGE,
        "--target",
        TARGET,
        "--profile",
        PROFILE,
    ]
}

/// Builds both programs with cargo in [`workspace_root`] and returns the
/// binaries' paths. Cargo's output is shown only on failure (in the
/// error); failures are environment errors.
pub fn build() -> Result<GuestPrograms> {
    let root = workspace_root();
    crate::hypervisor::run_cargo(
        &root,
        &build_args(),
        "building the Linux guest programs (workload, disk daemon)",
        &format!(" (`cargo xtask deps` installs the {TARGET} target)"),
    )?;
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    let dir = target_dir.join(TARGET).join(PROFILE);
    Ok(GuestPrograms {
        workload: dir.join(workload::PACKAGE),
        blkd: dir.join(blkd::PACKAGE),
    })
}

/// The programs (see the module docs): named by the environment, found
/// beside a named workload program, or built.
pub fn locate() -> Result<GuestPrograms> {
    let workload = from_env(workload::WORKLOAD_ENV)?;
    let blkd = match from_env(blkd::BLKD_ENV)? {
        Some(path) => Some(path),
        None => workload.as_deref().and_then(beside),
    };
    match (workload, blkd) {
        (Some(workload), Some(blkd)) => Ok(GuestPrograms { workload, blkd }),
        (workload, blkd) => {
            let built = build()?;
            Ok(GuestPrograms {
                workload: workload.unwrap_or(built.workload),
                blkd: blkd.unwrap_or(built.blkd),
            })
        }
    }
}

/// The daemon built beside the workload program `workload`, if there.
fn beside(workload: &Path) -> Option<PathBuf> {
    let path = workload.with_file_name(blkd::PACKAGE);
    path.is_file().then_some(path)
}

/// The file `$name` names: `None` if unset or empty, an error if it is
/// not a file.
fn from_env(name: &str) -> Result<Option<PathBuf>> {
    match env::var_os(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(path) => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(Some(path))
            } else {
                Err(Error::environment(format!(
                    "{name}={} is not a file",
                    path.display()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;

    #[test]
    fn builds_both_static_binaries_with_their_profile() {
        assert_eq!(
            build_args().join(" "),
            "build -p stratum-workload -p stratum-blkd --target aarch64-unknown-linux-musl \
             --profile workload"
        );
        let manifest =
            std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("root manifest");
        assert!(
            manifest.contains(&format!("[profile.{PROFILE}]")),
            "the workspace defines the {PROFILE} profile"
        );
        for member in ["\"tools/workload\"", "\"tools/blkd\""] {
            assert_eq!(
                manifest.matches(member).count(),
                2,
                "{member} is a member and a default member"
            );
        }
    }

    #[test]
    fn the_daemon_is_found_beside_the_workload() {
        let dir = TestDir::new("programs");
        let workload = dir.write(workload::PACKAGE, b"\x7fELF");
        assert_eq!(beside(&workload), None);
        let blkd = dir.write(blkd::PACKAGE, b"\x7fELF");
        assert_eq!(beside(&workload), Some(blkd));
    }
}
