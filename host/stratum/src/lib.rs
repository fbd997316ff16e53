//! The `stratum` host tool, as a library: validate a system description,
//! prepare guest kernels, build the boot bundle, build the hypervisor and run
//! it all under QEMU.
//!
//! The `stratum` binary is a thin shell over this crate ([`cli`]); `xtask`
//! and the system tests call the same functions in-process:
//!
//! - [`workspace_root`]: the Cargo workspace this tool was built from.
//! - [`build_hypervisor`]: `cargo build -p stratum-hypervisor` for the EL2
//!   target, then [`make_image`] → path of the arm64 `Image`.
//! - [`make_image`] / [`elf::flatten_elf`]: ELF → flat binary.
//! - [`Config::load`] / [`Config::from_flags`]: a validated system description
//!   (errors name the file, line:column and field, or the flag).
//! - [`run()`] with [`RunOptions`] → [`RunOutcome`] (exit code, verdict and,
//!   with `capture`, the console text).
//! - [`qemu::qemu_command`]: the exact QEMU command line for a [`qemu::RunPlan`].
//! - [`exit_code`]: the tool's exit statuses.
//! - [`linux::prepare_debian`]: the stock Debian arm64 kernel and a busybox
//!   initramfs, fetched into a cache (`stratum fetch debian`).
//! - [`bench::run_bench`]: the path-length benchmark (`stratum bench`).
//! - [`telemetry`] and [`trace`]: the live exit statistics (`stratum stats`)
//!   and the exit-trace timeline (`stratum trace`, `stratum run --trace`),
//!   read from a running machine over QMP ([`qmp`]).
//!
//! Errors carry an [`ErrorKind`] that decides the exit status
//! ([`Error::exit_code`]): bad input (2), environment (4), hypervisor (1).

use std::fmt;
use std::path::{Path, PathBuf};

pub mod attach;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demux;
pub mod elf;
pub mod exec;
pub mod focused;
pub mod hypervisor;
pub mod kernel;
pub mod linux;
pub mod logdir;
pub mod qemu;
pub mod qmp;
pub mod run;
pub mod screen;
pub mod size;
pub mod sysimg;
pub mod telemetry;
pub mod term;
#[cfg(test)]
mod testutil;
pub mod trace;

pub use config::Config;
pub use elf::make_image;
pub use hypervisor::build_hypervisor;
pub use run::{RunOptions, RunOutcome, Verdict, run};

/// The tool's exit statuses (also listed in `stratum --help`).
pub mod exit_code {
    /// Every VM powered off cleanly (hypervisor exit status 0).
    pub const SUCCESS: i32 = 0;
    /// The hypervisor failed: it panicked (70), rejected its boot input (71),
    /// or QEMU died unexpectedly (another status, or a signal).
    pub const HYPERVISOR_FAILURE: i32 = 1;
    /// Bad input (usage, config, kernel images), caught before anything started.
    pub const BAD_INPUT: i32 = 2;
    /// `--timeout` expired; QEMU was killed.
    pub const TIMEOUT: i32 = 3;
    /// The environment is not usable: QEMU is missing, or building the hypervisor failed.
    pub const ENVIRONMENT: i32 = 4;
    /// Every VM stopped, and at least one of them crashed (hypervisor exit status 72).
    pub const VM_CRASHED: i32 = 5;
    /// Every VM powered off, but a command run with `--exec` (or `exec` in
    /// the config) exited non-zero or reported no status.
    pub const EXEC_FAILED: i32 = 6;
}

/// What kind of failure an [`Error`] is; decides the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Usage, config or kernel image problem ([`exit_code::BAD_INPUT`]).
    BadInput,
    /// QEMU missing, build failed, I/O on temporary files ([`exit_code::ENVIRONMENT`]).
    Environment,
    /// The hypervisor or QEMU failed at run time ([`exit_code::HYPERVISOR_FAILURE`]).
    Hypervisor,
}

/// An error of the host tool: a kind (for the exit status) and a message
/// with its context chain.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    inner: anyhow::Error,
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message or source.
    pub fn new(kind: ErrorKind, inner: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            inner: inner.into(),
        }
    }

    /// A bad-input error with `message`.
    pub fn input(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::BadInput, anyhow::anyhow!("{message}"))
    }

    /// An environment error with `message`.
    pub fn environment(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Environment, anyhow::anyhow!("{message}"))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The tool's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::BadInput => exit_code::BAD_INPUT,
            ErrorKind::Environment => exit_code::ENVIRONMENT,
            ErrorKind::Hypervisor => exit_code::HYPERVISOR_FAILURE,
        }
    }

    /// Adds context in front of the message, keeping the kind.
    pub fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Self {
        Self {
            kind: self.kind,
            inner: self.inner.context(context),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.inner)
    }
}

impl std::error::Error for Error {}

/// The root of the Cargo workspace this tool belongs to (located from the
/// crate's own manifest directory at compile time: `host/stratum/../..`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/stratum sits two levels below the workspace root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn error_kinds_map_to_exit_codes() {
        assert_eq!(Error::input("x").exit_code(), exit_code::BAD_INPUT);
        assert_eq!(Error::environment("x").exit_code(), exit_code::ENVIRONMENT);
        let e = Error::new(ErrorKind::Hypervisor, anyhow::anyhow!("boom")).context("running");
        assert_eq!(e.exit_code(), exit_code::HYPERVISOR_FAILURE);
        assert_eq!(e.to_string(), "running: boom");
    }
}
