//! The disk daemon for the service VM (`tools/blkd`, the package
//! `stratum-blkd`): a static `aarch64-unknown-linux-musl` binary that
//! every Debian initramfs carries as [`IN_INITRAMFS`]; the init starts it
//! in the background when the kernel command line holds [`ROLE_PARAM`]
//! (see `super::initramfs`). It serves the frontends' disks to the
//! hypervisor over vsock (`stratum_abi::blkproto`).
//!
//! It is built and found with the workload program ([`super::programs`]):
//! `$STRATUM_BLKD` ([`BLKD_ENV`]) names a prebuilt one.

/// The Cargo package.
pub const PACKAGE: &str = "stratum-blkd";
/// Where the initramfs carries it.
pub const IN_INITRAMFS: &str = "/bin/stratum-blkd";
/// Environment variable naming a prebuilt binary.
pub const BLKD_ENV: &str = "STRATUM_BLKD";
/// The kernel command-line word that makes the default init start the
/// daemon: the VM is the service VM.
pub const ROLE_PARAM: &str = "stratum.role=service";
/// The line the default init prints once the daemon is started.
pub const STARTED_MARKER: &str = "STRATUM-LINUX: blkd started";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initramfs_path_names_the_package() {
        assert!(IN_INITRAMFS.ends_with(PACKAGE));
    }
}
