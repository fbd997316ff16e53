//! The workload program for Linux guests (`tools/workload`, the package
//! `stratum-workload`): a static `aarch64-unknown-linux-musl` binary that
//! every initramfs carries as [`IN_INITRAMFS`] and the init runs for
//! `stratum.test=workload` (`stratum bench`'s Linux workload rows).
//!
//! It is built and found with the disk daemon ([`super::programs`]):
//! `$STRATUM_WORKLOAD` ([`WORKLOAD_ENV`]) names a prebuilt one.

/// The Cargo package.
pub const PACKAGE: &str = "stratum-workload";
/// Where the initramfs carries it.
pub const IN_INITRAMFS: &str = "/bin/stratum-workload";
/// Environment variable naming a prebuilt binary.
pub const WORKLOAD_ENV: &str = "STRATUM_WORKLOAD";
/// The target it is built for (that of every guest program).
pub const TARGET: &str = super::programs::TARGET;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initramfs_path_names_the_package() {
        assert!(IN_INITRAMFS.ends_with(PACKAGE));
    }
}
