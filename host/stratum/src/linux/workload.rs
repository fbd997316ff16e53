//! The workload program for Linux guests (`tools/workload`, the package
//! `stratum-workload`): a static `aarch64-unknown-linux-musl` binary that
//! every initramfs carries as [`IN_INITRAMFS`] and the init runs for
//! `stratum.test=workload` (`stratum bench`'s Linux workload rows).
//!
//! [`locate`] names the binary: `$STRATUM_WORKLOAD` if set, else what
//! [`build`] makes with cargo from this workspace (the `workload` profile:
//! release, stripped, so the initramfs stays small).

use std::env;
use std::path::PathBuf;

use crate::{Error, Result, workspace_root};

/// The Cargo package.
pub const PACKAGE: &str = "stratum-workload";
/// The target it is built for: static, for any arm64 Linux.
pub const TARGET: &str = "aarch64-unknown-linux-musl";
/// The Cargo profile it is built with (`Cargo.toml`: release, stripped).
pub const PROFILE: &str = "workload";
/// Where the initramfs carries it.
pub const IN_INITRAMFS: &str = "/bin/stratum-workload";
/// Environment variable naming a prebuilt binary.
pub const WORKLOAD_ENV: &str = "STRATUM_WORKLOAD";

/// The `cargo` arguments that build it.
pub fn build_args() -> [&'static str; 7] {
    [
        "build",
        "-p",
        PACKAGE,
        "--target",
        TARGET,
        "--profile",
        PROFILE,
    ]
}

/// Builds the program with cargo in [`workspace_root`] and returns the
/// binary's path. Cargo's output is shown only on failure (in the error);
/// failures are environment errors.
pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    crate::hypervisor::run_cargo(
        &root,
        &build_args(),
        "building the Linux workload",
        &format!(" (`cargo xtask deps` installs the {TARGET} target)"),
    )?;
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    Ok(target_dir.join(TARGET).join(PROFILE).join(PACKAGE))
}

/// The binary: `$STRATUM_WORKLOAD` (which must exist) or a fresh [`build`].
pub fn locate() -> Result<PathBuf> {
    match env::var_os(WORKLOAD_ENV).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::environment(format!(
                    "{WORKLOAD_ENV}={} is not a file",
                    path.display()
                )))
            }
        }
        None => build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_static_binary_with_its_profile() {
        assert_eq!(
            build_args().join(" "),
            "build -p stratum-workload --target aarch64-unknown-linux-musl --profile workload"
        );
        let manifest =
            std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("root manifest");
        assert!(
            manifest.contains(&format!("[profile.{PROFILE}]")),
            "the workspace defines the {PROFILE} profile"
        );
        assert!(IN_INITRAMFS.ends_with(PACKAGE));
    }
}
