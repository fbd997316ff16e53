//! Installs what the other commands need, or says exactly how to.

use std::process::Command;

use crate::{GUEST_TARGET, HYP_TARGET, WORKLOAD_TARGET};

/// Debian packages and a command each provides.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-arm", "qemu-system-aarch64"),
    ("device-tree-compiler", "dtc"),
    // The bench's breakdown names the hypervisor's code by address.
    ("llvm", "llvm-symbolizer"),
    // The focused-console tests drive `stratum run` in a terminal.
    ("tmux", "tmux"),
    // Debian's U-Boot for QEMU `virt` runs as a guest in a system test
    // (`configs/uboot.toml`); it brings a file, not a command.
    ("u-boot-qemu", "/usr/lib/u-boot/qemu_arm64/u-boot.bin"),
];

/// Whether what `provides` names is there: a file when it is an absolute
/// path, else a command on the `PATH`.
fn present(provides: &str) -> bool {
    if provides.starts_with('/') {
        std::path::Path::new(provides).is_file()
    } else {
        have(provides)
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: running `{cmd} {}`", args.join(" "));
    let status = Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{cmd} {}` failed ({status})", args.join(" ")))
    }
}

/// Ensures the Rust targets and components and the host packages exist.
pub fn ensure() -> Result<(), String> {
    ensure_rust()?;
    ensure_packages()
}

fn ensure_rust() -> Result<(), String> {
    if !have("rustup") {
        // A toolchain without rustup: trust it to carry the targets, and say
        // so if the build then fails.
        return Ok(());
    }
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    let missing: Vec<&str> = [HYP_TARGET, GUEST_TARGET, WORKLOAD_TARGET]
        .into_iter()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        let mut args = vec!["target", "add"];
        args.extend(&missing);
        run("rustup", &args)?;
    }
    let components = output("rustup", &["component", "list", "--installed"]).unwrap_or_default();
    for comp in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(comp)) {
            run("rustup", &["component", "add", comp])?;
        }
    }
    Ok(())
}

fn ensure_packages() -> Result<(), String> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, provides)| !present(provides))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        return Err(format!(
            "missing {}; install them with your package manager (Debian/Ubuntu: apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    if !is_root() {
        return Err(format!(
            "missing {}; run:\n    sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    run("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    run("apt-get", &args)?;
    for (pkg, provides) in APT_PACKAGES {
        if !present(provides) {
            return Err(format!(
                "{pkg} was installed but `{provides}` is still not there"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_is_present_by_its_command_or_its_file() {
        assert!(present("sh"), "a command on the PATH");
        assert!(present("/bin/sh"), "a file");
        assert!(
            !present("/"),
            "a directory is not the file a package brings"
        );
        assert!(!present("/no/such/stratum/file"));
        assert!(!present("no-such-stratum-command"));
    }
}
