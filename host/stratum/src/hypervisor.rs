//! Getting the hypervisor's arm64 `Image`: build it with cargo from this
//! workspace ([`build_hypervisor`]), or take the one the user names
//! (`--hypervisor`, `$STRATUM_HYPERVISOR`), converting an ELF on the way.
//!
//! A run that traces exits needs the hypervisor built with the `trace`
//! feature: [`build_hypervisor_with`] builds it into its own `Image`
//! (`stratum-hypervisor-trace.Image`), `$STRATUM_HYPERVISOR_TRACE` names a
//! prebuilt one.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::elf::make_image;
use crate::{Error, ErrorKind, Result, workspace_root};

/// The hypervisor's Cargo package.
pub const HYPERVISOR_PACKAGE: &str = "stratum-hypervisor";
/// The target the hypervisor is built for (no FP/SIMD at EL2).
pub const HYPERVISOR_TARGET: &str = "aarch64-unknown-none-softfloat";
/// Environment variable naming a prebuilt hypervisor (Image or ELF).
pub const HYPERVISOR_ENV: &str = "STRATUM_HYPERVISOR";
/// Environment variable naming a prebuilt hypervisor built with the
/// `trace` feature (for `stratum run --trace`).
pub const HYPERVISOR_TRACE_ENV: &str = "STRATUM_HYPERVISOR_TRACE";
/// The Cargo feature that compiles the exit trace in.
pub const TRACE_FEATURE: &str = "trace";

/// The `cargo build` arguments that build the hypervisor (with the exit
/// trace when `trace`).
pub fn build_args_with(release: bool, trace: bool) -> Vec<&'static str> {
    let mut args = build_args(release);
    if trace {
        args.extend(["--features", TRACE_FEATURE]);
    }
    args
}

/// The `cargo build` arguments that build the hypervisor.
pub fn build_args(release: bool) -> Vec<&'static str> {
    let mut args = vec![
        "build",
        "-p",
        HYPERVISOR_PACKAGE,
        "--target",
        HYPERVISOR_TARGET,
    ];
    if release {
        args.push("--release");
    }
    args
}

/// Builds the hypervisor with cargo in [`workspace_root`] and converts its
/// ELF into an arm64 `Image` next to it
/// (`target/aarch64-unknown-none-softfloat/{release,debug}/stratum-hypervisor.Image`),
/// returning the `Image`'s path. Cargo's output is shown only on failure (in
/// the error). Failures are environment errors (exit status 4).
pub fn build_hypervisor(release: bool) -> Result<PathBuf> {
    build_hypervisor_with(release, false)
}

/// [`build_hypervisor`], with the exit trace compiled in when `trace`; the
/// trace build's `Image` is `stratum-hypervisor-trace.Image`. (Cargo keeps
/// both builds' objects apart; the ELF it leaves is the last build's, so the
/// `Image` is made from it at once.)
pub fn build_hypervisor_with(release: bool, trace: bool) -> Result<PathBuf> {
    let root = workspace_root();
    run_cargo(
        &root,
        &build_args_with(release, trace),
        "building the hypervisor",
        "",
    )?;
    let elf = target_dir(&root)
        .join(HYPERVISOR_TARGET)
        .join(if release { "release" } else { "debug" })
        .join(HYPERVISOR_PACKAGE);
    let image = if trace {
        elf.with_file_name(format!("{HYPERVISOR_PACKAGE}-trace.Image"))
    } else {
        elf.with_extension("Image")
    };
    make_image(&elf, &image).map_err(|e| {
        Error::new(ErrorKind::Environment, anyhow::anyhow!("{e}"))
            .context("the hypervisor built, but its Image could not be made")
    })?;
    Ok(image)
}

/// Runs `cargo ARGS` in `root` with its output captured; a failure is an
/// environment error that names the command, `what` it was for, a `hint`
/// (appended as is) and cargo's output.
pub(crate) fn run_cargo(root: &Path, args: &[&str], what: &str, hint: &str) -> Result<()> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let shown = format!("cargo {}", args.join(" "));
    let output = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .output()
        .map_err(|e| Error::environment(format!("cannot run `{shown}`: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let mut log = String::from_utf8_lossy(&output.stderr).into_owned();
    log += &String::from_utf8_lossy(&output.stdout);
    Err(Error::environment(format!(
        "{what} failed: `{shown}` in {} exited with {}{hint}:\n{}",
        root.display(),
        output.status,
        log.trim_end()
    )))
}

/// Cargo's target directory for the workspace at `root`.
fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Where the hypervisor image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HypervisorSource {
    /// A file the user named (an `Image`, or an ELF to convert).
    File(PathBuf),
    /// Build it from the workspace.
    Build {
        /// Release profile?
        release: bool,
        /// With the exit trace (the `trace` feature)?
        trace: bool,
    },
}

impl HypervisorSource {
    /// `explicit` if given, else `$STRATUM_HYPERVISOR` if set, else a build.
    pub fn choose(explicit: Option<&Path>, release: bool) -> Self {
        match explicit
            .map(Path::to_path_buf)
            // An empty variable means unset (as `VAR= cmd` writes it).
            .or_else(|| {
                env::var_os(HYPERVISOR_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            }) {
            Some(path) => Self::File(path),
            None => Self::Build {
                release,
                trace: false,
            },
        }
    }

    /// Like [`Self::choose`], for a hypervisor with the exit trace:
    /// `explicit`, else `$STRATUM_HYPERVISOR_TRACE`, else a trace build.
    pub fn choose_trace(explicit: Option<&Path>, release: bool) -> Self {
        match explicit.map(Path::to_path_buf).or_else(|| {
            env::var_os(HYPERVISOR_TRACE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        }) {
            Some(path) => Self::File(path),
            None => Self::Build {
                release,
                trace: true,
            },
        }
    }

    /// Produces the `Image` path, converting an ELF into `scratch/` if needed.
    pub fn resolve(&self, scratch: &Path) -> Result<PathBuf> {
        match self {
            Self::Build { release, trace } => build_hypervisor_with(*release, *trace),
            Self::File(path) => {
                let mut magic = [0u8; 4];
                let read = std::fs::File::open(path)
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
                if let Err(e) = read {
                    return Err(Error::input(format!(
                        "hypervisor image {}: cannot read: {e}",
                        path.display()
                    )));
                }
                if &magic == b"\x7fELF" {
                    let image = scratch.join("hypervisor.Image");
                    make_image(path, &image)?;
                    Ok(image)
                } else {
                    Ok(path.clone())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ElfBuilder, TestDir, linux_image};

    #[test]
    fn build_command() {
        assert_eq!(
            build_args(true).join(" "),
            "build -p stratum-hypervisor --target aarch64-unknown-none-softfloat --release"
        );
        assert!(!build_args(false).contains(&"--release"));
        assert_eq!(
            build_args_with(false, true).join(" "),
            "build -p stratum-hypervisor --target aarch64-unknown-none-softfloat --features trace"
        );
        assert_eq!(build_args_with(true, false), build_args(true));
        let image = Path::new("/t/x.Image");
        assert_eq!(
            HypervisorSource::choose_trace(Some(image), true),
            HypervisorSource::File(image.to_path_buf())
        );
    }

    #[test]
    fn explicit_image_wins_and_elf_is_converted() {
        let dir = TestDir::new("hyp-source");
        let image = dir.write("hyp.Image", &linux_image(0, 0x1000, 0, 0x100));
        let src = HypervisorSource::choose(Some(&image), true);
        assert_eq!(src, HypervisorSource::File(image.clone()));
        assert_eq!(src.resolve(dir.path()).expect("image"), image);

        let elf = ElfBuilder::new(0x4020_0000)
            .segment(0x4020_0000, &linux_image(0, 0x1000, 0, 0x100), 0x1000)
            .build();
        let elf = dir.write("hyp.elf", &elf);
        let out = HypervisorSource::File(elf)
            .resolve(dir.path())
            .expect("converted");
        assert_eq!(out, dir.path().join("hypervisor.Image"));

        let e = HypervisorSource::File(dir.path().join("nope"))
            .resolve(dir.path())
            .expect_err("missing");
        assert_eq!(e.kind(), ErrorKind::BadInput);
    }
}
