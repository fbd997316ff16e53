//! System images (`stratum build`): one arm64 `Image` holding the
//! hypervisor and every guest, booted the ways a user boots one — QEMU's
//! `-kernel` (where `stratum run` puts it too), and Debian's U-Boot
//! (`u-boot-qemu`) fetching it over TFTP to two different addresses and
//! starting it with `booti`, so the hypervisor relocates itself. Each boot runs
//! `configs/three-vms.toml` (three VMs on three physical CPUs: the
//! secondary CPUs come up through PSCI at the relocated entry point) to the
//! end, and exits QEMU with status 0 through semihosting.
//!
//! Run them with `cargo xtask test` (or `cargo test -p stratum-systests
//! --test sysimg` with `STRATUM_BIN`, `STRATUM_GUESTS_DIR` and
//! `STRATUM_HYPERVISOR` set).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stratum_systests::{
    Run, assert_status, assert_three_vms_ran, config_with_guests, run_command,
    run_command_with_script, split_by_tag, status, stratum_bin,
};

/// Timeout of one boot (three VMs on three emulated CPUs, plus U-Boot).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Debian's U-Boot for QEMU `virt` (package `u-boot-qemu`).
const UBOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";

/// Builds the system image of example config `name` into a temporary file.
fn build(name: &str) -> (PathBuf, Run) {
    let config = config_with_guests(name);
    let image = config.with_extension("img");
    let mut cmd = Command::new(stratum_bin());
    cmd.arg("build").arg(&config).arg("-o").arg(&image);
    cmd.arg("--semihosting");
    let run = run_command(cmd, TIMEOUT);
    let _ = std::fs::remove_file(&config);
    (image, run)
}

/// QEMU `virt` with EL2, 3 CPUs and 1 GiB, the console on stdio and
/// semihosting on: the machine `stratum run` starts, without the image.
fn qemu() -> Command {
    let qemu = std::env::var_os("STRATUM_QEMU").unwrap_or_else(|| "qemu-system-aarch64".into());
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-M",
        "virt,virtualization=on,gic-version=3",
        "-cpu",
        "cortex-a57",
    ]);
    cmd.args([
        "-smp", "3", "-m", "1G", "-display", "none", "-monitor", "none",
    ]);
    cmd.args(["-serial", "stdio", "-nic", "none"]);
    cmd.args(["-semihosting-config", "enable=on,target=native"]);
    cmd
}

/// Checks that the system in `run` came up from the image at `address`,
/// found its bundle inside it, and ran all three VMs to the end.
#[track_caller]
fn check_three_vms(run: &Run, address: u64) {
    let split = split_by_tag(&run.console, &["alpha", "beta", "gamma"])
        .unwrap_or_else(|e| panic!("{e}\n{}", run.describe()));
    let banner = format!("hypervisor at EL2, image at {address:#x}");
    assert_three_vms_ran(
        run,
        &split,
        &[&banner, "inside the system image", "3 CPUs online"],
    );
}

/// Boots `image` from U-Boot, which fetches it over TFTP (QEMU's user
/// network serves the image's directory, as a board's TFTP server would)
/// to `address` and starts it there with `booti`.
fn boot_with_uboot(image: &Path, address: u64) -> Run {
    assert!(
        Path::new(UBOOT).is_file(),
        "{UBOOT} is missing: install Debian's u-boot-qemu (cargo xtask test does)"
    );
    let dir = image.parent().expect("the image's directory");
    let name = image
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 name");
    let mut cmd = qemu();
    cmd.args(["-bios", UBOOT, "-netdev"]);
    cmd.arg(format!("user,id=net0,tftp={}", dir.display()));
    // No option ROM: U-Boot drives virtio-net itself.
    cmd.args(["-device", "virtio-net-pci,netdev=net0,romfile="]);
    let boot = format!(
        "setenv autoload no; dhcp; setenv serverip 10.0.2.2; \
         tftpboot {address:#x} {name}; booti {address:#x} - $fdtcontroladdr\r"
    );
    run_command_with_script(
        cmd,
        TIMEOUT,
        &[("Hit any key to stop autoboot", "\r"), ("=> ", &boot)],
    )
}

#[test]
fn one_system_image_boots_from_qemu_and_from_uboot_at_two_addresses() {
    let (image, built) = build("three-vms");
    assert_status(&built, status::OK, "stratum build");
    for want in [
        "vm0 'alpha': 1 vCPU on CPU 0",
        "vm1 'beta': 1 vCPU on CPU 1",
        "vm2 'gamma': 1 vCPU on CPU 2",
    ] {
        assert!(
            built.console.contains(want),
            "build lists `{want}`\n{}",
            built.describe()
        );
    }
    let inspected = run_command(
        {
            let mut cmd = Command::new(stratum_bin());
            cmd.arg("inspect").arg(&image);
            cmd
        },
        TIMEOUT,
    );
    assert_status(&inspected, status::OK, "stratum inspect");
    assert_eq!(
        inspected.console, built.console,
        "inspect reads back what build wrote"
    );

    let mut direct = qemu();
    direct.arg("-kernel").arg(&image);
    check_three_vms(&run_command(direct, TIMEOUT), 0x4020_0000);
    // Two load addresses, neither the link address: the image relocates.
    let size = std::fs::metadata(&image).expect("the image").len();
    for address in [0x5000_0000, 0x6A40_0000] {
        let run = boot_with_uboot(&image, address);
        let fetched = format!("Bytes transferred = {size} ({size:x} hex)");
        assert!(
            run.console.contains(&fetched) && run.console.contains("Starting kernel ..."),
            "U-Boot fetched the whole image (`{fetched}`) and booti started it\n{}",
            run.describe()
        );
        check_three_vms(&run, address);
    }
    let _ = std::fs::remove_file(&image);
}

#[test]
fn inspect_refuses_what_is_not_a_system_image() {
    let plain = std::env::temp_dir().join(format!("stratum-sysimg-plain-{}", std::process::id()));
    std::fs::write(&plain, b"not an image at all").expect("write");
    let mut cmd = Command::new(stratum_bin());
    cmd.arg("inspect").arg(&plain);
    let run = run_command(cmd, TIMEOUT);
    let _ = std::fs::remove_file(&plain);
    assert_status(&run, status::BAD_INPUT, "inspect of a non-image");
    assert!(
        run.console.contains("shorter than an arm64 Image header")
            || run.console.contains("no arm64 Image magic"),
        "{}",
        run.describe()
    );
}
