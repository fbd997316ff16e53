//! The initramfs for a Linux guest: a static busybox, Stratum's guest
//! programs ([`super::programs`]: the workload program as
//! `/bin/stratum-workload`, the disk daemon as `/bin/stratum-blkd`), the
//! kernel modules from the kernel's package ([`super::modules`]: the virtio
//! drivers, ext4) and an `/init` script, packed as a reproducible `newc`
//! cpio ([`super::cpio`]).
//!
//! [`DEFAULT_INIT`] is the script `stratum fetch debian` and
//! `stratum run --debian` use. What it does, in order:
//!
//! 1. installs the busybox applets as symlinks (`/bin/busybox --install -s`);
//! 2. mounts `proc` on `/proc`, `sysfs` on `/sys` and `devtmpfs` on `/dev`,
//!    loads the modules ([`super::modules`]) in the order of
//!    `/etc/stratum/modules` and prints `STRATUM-LINUX: modules <names>`
//!    (those that loaded; one that did not gets its own line);
//! 3. if the command line holds `stratum.role=service` ([`ROLE_PARAM`]: the
//!    service VM), starts the disk daemon in the background under a loop
//!    that starts it again a second after it ever exits (a crash, a kill;
//!    its output on the console, stdin `/dev/null`; a line
//!    `STRATUM-LINUX: blkd exited with status N; starting it again` each
//!    time) and prints `STRATUM-LINUX: blkd started`
//!    ([`BLKD_STARTED_MARKER`]); the daemon finds its disks, connects to the
//!    hypervisor and serves until the VM stops, whatever the next steps do;
//! 4. if the command line holds `stratum.uplink=<MAC>,<MAC>`
//!    ([`crate::config::UPLINK_PARAM`]: the service VM of an uplink),
//!    makes the bridge `br0` of the NICs with those MACs (QEMU's NIC passed
//!    through to it, and its own on the uplink network) with busybox
//!    `brctl`, brings them up with IPv6 off and no address (the
//!    frontends' frames pass through, the VM itself takes no lease), and
//!    prints `STRATUM-LINUX: uplink bridged <NICs>` ([`UPLINK_MARKER`]);
//!    if it holds `stratum.dhcp=<MAC>` ([`crate::config::DHCP_PARAM`]: a
//!    frontend on the uplink network), configures the NIC with that MAC
//!    by DHCP (busybox `udhcpc` with [`DHCP_SCRIPT`], which sets the
//!    address, the default route and `/etc/resolv.conf` and prints
//!    `STRATUM-LINUX: dhcp <address> on <NIC>`, [`DHCP_MARKER`]): for up to
//!    a minute (the service VM may still be booting), then on in the
//!    background. A NIC without the word is left alone (a system's own
//!    `[[network]]`s are configured by hand, `ip addr add`);
//! 5. prints the marker line `STRATUM-LINUX: up <nproc> cpus`, then the
//!    kernel command line (`cat /proc/cmdline`);
//! 6. then, if the command line holds `stratum.test=poweroff` (the system
//!    tests' mode): prints `/proc/interrupts` twice, with every CPU kept
//!    busy for 0.2 s (`taskset`) and a second's sleep between them (the
//!    tests check the arch timer ticks on every CPU, and an idle CPU of the
//!    tickless kernel may not), and powers off at once
//!    (`poweroff -f`: PSCI `SYSTEM_OFF`, so `stratum run` exits 0);
//!    `stratum.test=hotplug` first takes CPU 1 offline and back online
//!    (PSCI `CPU_OFF`/`CPU_ON`), printing `/sys/devices/system/cpu/online`
//!    after each, then does the same; `stratum.test=reboot` reboots once
//!    (`reboot -f`: PSCI `SYSTEM_RESET`) when `/chosen/stratum,boot-count`
//!    in the device tree says 1, and does the same on the second boot;
//!    `stratum.test=workload` ([`WORKLOAD_PARAM`], `stratum bench`'s mode)
//!    mounts a tmpfs on `/tmp`, runs `/bin/stratum-workload` with the kernel
//!    command line as its arguments, prints `STRATUM-LINUX: workload exit
//!    <status>` and powers off at once;
//! 7. with an exec overlay ([`exec_overlay`], `stratum run --exec`): mounts
//!    a tmpfs on `/tmp`, prints `STRATUM-LINUX: exec start`, runs the
//!    command with `/bin/sh -c`, prints `STRATUM-LINUX: exec exit <status>`
//!    and powers off (before any `stratum.test=` mode);
//! 8. otherwise: an interactive shell on the console (`setsid cttyhack sh`,
//!    so it has a controlling terminal and job control; plain `sh` if busybox
//!    lacks `cttyhack`), with the prompt [`PROMPT`]. Leaving the shell
//!    (`exit`, Ctrl-D) powers the VM off, as does `poweroff -f` in it.

use std::fs;
use std::io::Write as _;
use std::path::Path;

pub use super::blkd::{ROLE_PARAM, STARTED_MARKER as BLKD_STARTED_MARKER};
use super::cpio::Archive;
use super::modules::{GUEST_MODULES, Module};
use super::programs::GuestPrograms;
use super::{blkd, workload};
use crate::{Error, Result};

/// The line the default init prints once userspace runs, before the CPU count.
pub const UP_MARKER: &str = "STRATUM-LINUX: up ";

/// Where the initramfs keeps the kernel modules (`<name>.ko`).
pub const MODULES_DIR: &str = "/lib/modules";

/// The modules the init loads, one name per line, in load order.
pub const MODULE_LIST: &str = "/etc/stratum/modules";

/// The line the default init prints after loading the modules, before
/// the names of those loaded.
pub const MODULES_MARKER: &str = "STRATUM-LINUX: modules ";

/// The interactive shell's prompt (`PS1`) in the default init.
pub const PROMPT: &str = "stratum# ";

/// Where an exec overlay ([`exec_overlay`]) puts the command.
pub const EXEC_FILE: &str = "/etc/stratum/exec";

/// The line the default init prints after an exec'd command, before its
/// exit status.
pub const EXEC_EXIT_MARKER: &str = "STRATUM-LINUX: exec exit ";

/// The kernel command-line word that makes the default init power off right
/// after its report, instead of starting a shell.
pub const POWEROFF_PARAM: &str = "stratum.test=poweroff";

/// The kernel command-line word that makes the default init run the
/// workload program and power off (`stratum bench`).
pub const WORKLOAD_PARAM: &str = "stratum.test=workload";

/// The line the default init prints after the workload, before its status.
pub const WORKLOAD_EXIT_MARKER: &str = "STRATUM-LINUX: workload exit ";

/// The line the service VM's init prints once it has bridged the uplink,
/// before the bridged NICs' names.
pub const UPLINK_MARKER: &str = "STRATUM-LINUX: uplink bridged";

/// The line the DHCP script prints once a lease is configured, before
/// `<address> on <NIC>`.
pub const DHCP_MARKER: &str = "STRATUM-LINUX: dhcp ";

/// Where the initramfs keeps the DHCP script: busybox `udhcpc`'s default.
pub const DHCP_SCRIPT_PATH: &str = "/etc/udhcpc/default.script";

/// busybox `udhcpc`'s script ([`DHCP_SCRIPT_PATH`]): on a lease, the
/// address (flushing any other IPv4 address of the NIC), the default route
/// through the lease's first router, `/etc/resolv.conf` from its name
/// servers and domain, and (on a new lease) the [`DHCP_MARKER`] line on
/// the console (udhcpc's own output goes nowhere once it is in the
/// background).
pub const DHCP_SCRIPT: &str = r#"#!/bin/sh
# udhcpc's script in Stratum's initramfs (host/stratum/src/linux/initramfs.rs).
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound | renew)
    if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/${mask:-24} "; then
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
    fi
    for r in $router; do
        ip route replace default via "$r" dev "$interface"
        break
    done
    : > /etc/resolv.conf
    for s in $dns; do
        echo "nameserver $s" >> /etc/resolv.conf
    done
    if [ -n "$domain" ]; then
        echo "search $domain" >> /etc/resolv.conf
    fi
    if [ "$1" = bound ]; then
        echo "STRATUM-LINUX: dhcp $ip on $interface" > /dev/console
    fi
    ;;
esac
exit 0
"#;

/// The default `/init` (see the module docs). Run by busybox's `sh`, since
/// `/bin/sh` exists only once the applets are installed.
pub const DEFAULT_INIT: &str = r#"#!/bin/busybox sh
# Stratum's default init for Linux guests (host/stratum/src/linux/initramfs.rs).
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
loaded=
for m in $(cat /etc/stratum/modules); do
    if insmod "/lib/modules/$m.ko"; then
        loaded="$loaded $m"
    else
        echo "STRATUM-LINUX: cannot load module $m"
    fi
done
echo "STRATUM-LINUX: modules$loaded"
case " $(cat /proc/cmdline) " in
*" stratum.role=service "*)
    # The service VM: the disk daemon serves the frontends' disks to the
    # hypervisor (tools/blkd) for as long as the VM runs, started again a
    # second after it ever exits (a crash, a kill, the kernel's OOM
    # killer): requests waiting for it would otherwise wait for good.
    while :; do
        /bin/stratum-blkd </dev/null >/dev/console 2>&1
        echo "STRATUM-LINUX: blkd exited with status $?; starting it again" >/dev/console
        sleep 1
    done &
    echo "STRATUM-LINUX: blkd started"
    ;;
esac
# The network interface whose MAC is $1, if any.
nic_with_mac() {
    for dev in /sys/class/net/*; do
        if [ "$(cat "$dev/address" 2>/dev/null)" = "$1" ]; then
            echo "${dev##*/}"
            return 0
        fi
    done
    return 1
}
uplink=
dhcp=
for word in $(cat /proc/cmdline); do
    case "$word" in
    stratum.uplink=*) uplink="${word#stratum.uplink=}" ;;
    stratum.dhcp=*) dhcp="${word#stratum.dhcp=}" ;;
    esac
done
if [ -n "$uplink" ]; then
    # The service VM of an uplink: bridge QEMU's NIC and its own NIC on the
    # uplink network, taking no address (the frontends' frames pass
    # through as they are). A new bridge has STP off: its ports forward
    # at once.
    ports=
    for mac in $(echo "$uplink" | tr , ' '); do
        if nic=$(nic_with_mac "$mac"); then
            ports="$ports $nic"
        else
            echo "STRATUM-LINUX: uplink: no NIC with MAC $mac"
        fi
    done
    if brctl addbr br0; then
        echo 1 > /proc/sys/net/ipv6/conf/br0/disable_ipv6
        for nic in $ports; do
            echo 1 > "/proc/sys/net/ipv6/conf/$nic/disable_ipv6"
            ip link set "$nic" up
            brctl addif br0 "$nic"
        done
        ip link set br0 up
        echo "STRATUM-LINUX: uplink bridged$ports"
    fi
fi
if [ -n "$dhcp" ]; then
    # A frontend on the uplink network: its NIC there takes a DHCP lease,
    # for up to a minute (the service VM may still be booting), then on in
    # the background.
    if nic=$(nic_with_mac "$dhcp"); then
        ip link set "$nic" up
        udhcpc -i "$nic" -s /etc/udhcpc/default.script -t 30 -T 2 -b
    else
        echo "STRATUM-LINUX: dhcp: no NIC with MAC $dhcp"
    fi
fi
echo "STRATUM-LINUX: up $(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo) cpus"
cat /proc/cmdline
if [ -f /etc/stratum/exec ]; then
    # stratum run --exec (or exec = "..." in a config): run it, report, off.
    mount -t tmpfs tmpfs /tmp
    echo "STRATUM-LINUX: exec start"
    /bin/sh -c "$(cat /etc/stratum/exec)"
    echo "STRATUM-LINUX: exec exit $?"
    poweroff -f
fi
case " $(cat /proc/cmdline) " in
*" stratum.test=workload "*)
    # stratum bench: the workload's tests (its file test wants tmpfs), then off.
    mount -t tmpfs tmpfs /tmp
    /bin/stratum-workload $(cat /proc/cmdline)
    echo "STRATUM-LINUX: workload exit $?"
    echo "STRATUM-LINUX: powering off"
    poweroff -f
    ;;
*" stratum.test=reboot "*)
    # The hypervisor counts boots in the DT: reboot once, then go on as poweroff.
    boots=$(od -An -tu1 /proc/device-tree/chosen/stratum,boot-count | tr -s ' ' | cut -d' ' -f5)
    echo "STRATUM-LINUX: boot $boots"
    if [ "$boots" = 1 ]; then
        echo "STRATUM-LINUX: rebooting"
        reboot -f
    fi
    ;;
*" stratum.test=hotplug "*)
    echo 0 > /sys/devices/system/cpu/cpu1/online
    echo "STRATUM-LINUX: online after cpu1 off: $(cat /sys/devices/system/cpu/online)"
    echo 1 > /sys/devices/system/cpu/cpu1/online
    echo "STRATUM-LINUX: online after cpu1 on: $(cat /sys/devices/system/cpu/online)"
    ;;
esac
case " $(cat /proc/cmdline) " in
*" stratum.test=poweroff "* | *" stratum.test=hotplug "* | *" stratum.test=reboot "*)
    echo "STRATUM-LINUX: interrupts (1)"
    cat /proc/interrupts
    # Every CPU busy for 0.2 s, so that each one ticks before the second
    # snapshot: an idle CPU of this tickless kernel may not tick at all.
    c=0
    while [ $c -lt "$(nproc)" ]; do
        taskset -c $c sh -c 'read t _ </proc/uptime; e=$((${t%.*}${t#*.} + 20))
            while [ "${t%.*}${t#*.}" -lt $e ]; do read t _ </proc/uptime; done' &
        c=$((c + 1))
    done
    wait
    sleep 1
    echo "STRATUM-LINUX: interrupts (2)"
    cat /proc/interrupts
    echo "STRATUM-LINUX: powering off"
    poweroff -f
    ;;
esac
echo "STRATUM-LINUX: shell on the console; exit or 'poweroff -f' powers off"
export PS1='stratum# '
if [ -x /bin/cttyhack ]; then
    setsid cttyhack sh
else
    sh +m
fi
poweroff -f
"#;

/// Directories every initramfs gets (mount points and applet directories).
/// (`/tmp` is added apart: it is sticky and world-writable.)
const DIRECTORIES: &[&str] = &[
    "/bin",
    "/dev",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    "/usr/bin",
    "/usr/sbin",
];

/// The initramfs bytes for `busybox`, `workload` and `blkd` (the
/// binaries' contents) and `init_script`: see [`build_initramfs`].
pub fn initramfs_bytes(
    busybox: Vec<u8>,
    workload: Vec<u8>,
    blkd: Vec<u8>,
    modules: Vec<Module>,
    init_script: &str,
) -> Vec<u8> {
    let mut archive = Archive::new();
    for dir in DIRECTORIES {
        archive.dir(dir, 0o755);
    }
    archive
        .dir("/etc", 0o755)
        .dir("/etc/stratum", 0o755)
        .dir("/etc/udhcpc", 0o755)
        .file(DHCP_SCRIPT_PATH, 0o755, DHCP_SCRIPT.as_bytes().to_vec())
        .dir("/lib", 0o755)
        .dir(MODULES_DIR, 0o755);
    let mut list = String::new();
    for m in modules {
        list.push_str(&m.name);
        list.push('\n');
        archive.file(&format!("{MODULES_DIR}/{}.ko", m.name), 0o644, m.bytes);
    }
    archive.file(MODULE_LIST, 0o644, list.into_bytes());
    archive
        .dir("/tmp", 0o1777)
        .file("/bin/busybox", 0o755, busybox)
        .file(workload::IN_INITRAMFS, 0o755, workload)
        .file(blkd::IN_INITRAMFS, 0o755, blkd)
        .file("/init", 0o755, init_script.as_bytes().to_vec())
        // The kernel opens /dev/console for init's stdio before anything
        // mounts devtmpfs: it must be in the archive.
        .char_device("/dev/console", 0o600, 5, 1);
    archive.to_bytes()
}

/// A cpio archive holding only [`EXEC_FILE`] with `command`: appended to
/// the initramfs (the kernel unpacks concatenated archives in order), it
/// makes the default init run `command` with `/bin/sh -c` once the modules
/// are loaded (with a tmpfs on `/tmp`), print [`EXEC_EXIT_MARKER`] and the
/// status, and power off.
pub fn exec_overlay(command: &str) -> Vec<u8> {
    let mut archive = Archive::new();
    archive.dir("/etc", 0o755).dir("/etc/stratum", 0o755).file(
        EXEC_FILE,
        0o644,
        command.as_bytes().to_vec(),
    );
    archive.to_bytes()
}

/// Writes an initramfs with `/bin/busybox` (from the file `busybox`),
/// `/bin/stratum-workload` and `/bin/stratum-blkd` (from the files
/// `programs` names), the kernel modules
/// of [`GUEST_MODULES`] and their dependencies from `modules_dir` (in
/// `/lib/modules/`, listed in load order in `/etc/stratum/modules`), `/init`
/// (`init_script`, mode 0755), the directories `/bin /sbin /proc /sys /dev
/// /tmp /usr/bin /usr/sbin` and the `/dev/console` character device (5, 1) to
/// `out`. The same inputs give the same bytes; an `out` that already holds
/// them is left untouched (so its mtime says when the inputs last changed).
pub fn build_initramfs(
    busybox: &Path,
    programs: &GuestPrograms,
    modules_dir: &Path,
    init_script: &str,
    out: &Path,
) -> Result<()> {
    let read = |path: &Path| {
        fs::read(path)
            .map_err(|e| Error::environment(format!("cannot read {}: {e}", path.display())))
    };
    let modules = super::modules::read(modules_dir, GUEST_MODULES)?;
    let bytes = initramfs_bytes(
        read(busybox)?,
        read(&programs.workload)?,
        read(&programs.blkd)?,
        modules,
        init_script,
    );
    if fs::read(out).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomically(out, &bytes)
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over
/// `path`: readers see the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail =
        |e: std::io::Error| Error::environment(format!("cannot write {}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp).map_err(fail)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;

    #[test]
    fn default_init_does_what_its_docs_say() {
        assert!(DEFAULT_INIT.starts_with("#!/bin/busybox sh\n"));
        for needle in [
            "/bin/busybox --install -s",
            "mount -t proc proc /proc",
            "mount -t sysfs sysfs /sys",
            "mount -t devtmpfs devtmpfs /dev",
            "for m in $(cat /etc/stratum/modules); do",
            "insmod \"/lib/modules/$m.ko\"",
            "echo \"STRATUM-LINUX: modules$loaded\"",
            "cat /proc/cmdline",
            "cat /proc/interrupts",
            "setsid cttyhack sh",
            "poweroff -f",
        ] {
            assert!(DEFAULT_INIT.contains(needle), "{needle}");
        }
        assert!(DEFAULT_INIT.contains(&format!("echo \"{UP_MARKER}$(")));
        assert!(DEFAULT_INIT.contains(&format!("*\" {POWEROFF_PARAM} \"* |")));
        assert!(DEFAULT_INIT.contains("echo 0 > /sys/devices/system/cpu/cpu1/online"));
        assert!(DEFAULT_INIT.contains("echo 1 > /sys/devices/system/cpu/cpu1/online"));
        assert!(DEFAULT_INIT.contains(&format!("PS1='{PROMPT}'")));
    }

    #[test]
    fn the_workload_mode_runs_the_program_on_tmpfs_and_powers_off() {
        let branch = DEFAULT_INIT
            .split(&format!("*\" {WORKLOAD_PARAM} \"*)"))
            .nth(1)
            .and_then(|rest| rest.split(";;").next())
            .expect("a case branch for the workload mode");
        let steps = [
            "mount -t tmpfs tmpfs /tmp",
            &format!("{} $(cat /proc/cmdline)", workload::IN_INITRAMFS),
            &format!("echo \"{WORKLOAD_EXIT_MARKER}$?\""),
            "poweroff -f",
        ];
        let mut at = 0;
        for step in steps {
            let found = branch[at..].find(step).unwrap_or_else(|| panic!("{step}"));
            at += found + step.len();
        }
    }

    /// The service VM's branch starts the daemon in the background right
    /// after the modules (vsock among them) load, before the up marker
    /// and every mode, and says so.
    #[test]
    fn the_service_role_starts_the_daemon_after_the_modules() {
        let modules_line = DEFAULT_INIT
            .find("echo \"STRATUM-LINUX: modules$loaded\"")
            .expect("the modules line");
        let branch_at = DEFAULT_INIT
            .find(&format!("*\" {ROLE_PARAM} \"*)"))
            .expect("a case branch for the service role");
        let up = DEFAULT_INIT.find(UP_MARKER).expect("the up marker");
        assert!(modules_line < branch_at && branch_at < up);
        let branch = DEFAULT_INIT[branch_at..]
            .split(";;")
            .next()
            .expect("the branch");
        let start = branch
            .lines()
            .find(|l| l.trim_start().starts_with(blkd::IN_INITRAMFS))
            .expect("the daemon's line");
        assert!(start.contains("/dev/console"), "its output on the console");
        // Under a loop that starts it again, the loop in the background.
        let (loop_at, start_at) = (
            branch.find("while :; do").expect("the loop"),
            branch.find(start).expect("start"),
        );
        let done_at = branch.find("done &").expect("the loop in the background");
        assert!(loop_at < start_at && start_at < done_at);
        let body = &branch[start_at..done_at];
        assert!(
            !start.trim_end().ends_with('&') && body.contains("sleep 1"),
            "the loop waits for it, then a second: {body}"
        );
        let marker = branch
            .find(&format!("echo \"{BLKD_STARTED_MARKER}\""))
            .expect("marker");
        assert!(done_at < marker);
        assert_eq!(
            DEFAULT_INIT.matches(blkd::IN_INITRAMFS).count(),
            1,
            "started nowhere else"
        );
    }

    /// The uplink's words: the service VM bridges the NICs the MACs name
    /// and takes no address; a frontend takes a lease with the script the
    /// initramfs carries. Both before the up marker (so an exec'd command
    /// finds the network configured), after the modules (the bridge and
    /// virtio_net among them).
    #[test]
    fn the_uplink_words_bridge_in_the_service_vm_and_take_a_lease_in_a_frontend() {
        use crate::config::{DHCP_PARAM, UPLINK_PARAM};
        let at = |needle: &str| {
            DEFAULT_INIT
                .find(needle)
                .unwrap_or_else(|| panic!("{needle}"))
        };
        let modules = at("echo \"STRATUM-LINUX: modules$loaded\"");
        let up = at(UP_MARKER);
        let uplink = at(&format!(
            "{UPLINK_PARAM}=*) uplink=\"${{word#{UPLINK_PARAM}=}}\""
        ));
        let dhcp = at(&format!("{DHCP_PARAM}=*) dhcp=\"${{word#{DHCP_PARAM}=}}\""));
        assert!(modules < uplink && uplink < up && dhcp < up);
        let steps = [
            "brctl addbr br0",
            "echo 1 > /proc/sys/net/ipv6/conf/br0/disable_ipv6",
            "ip link set \"$nic\" up",
            "brctl addif br0 \"$nic\"",
            "ip link set br0 up",
            &format!("echo \"{UPLINK_MARKER}$ports\""),
            &format!("udhcpc -i \"$nic\" -s {DHCP_SCRIPT_PATH} -t 30 -T 2 -b"),
        ];
        let mut from = uplink;
        for step in steps {
            let found = DEFAULT_INIT[from..]
                .find(step)
                .unwrap_or_else(|| panic!("{step}"));
            from += found + step.len();
        }
        assert!(from < up);
        // The service VM asks for no lease anywhere.
        assert_eq!(DEFAULT_INIT.matches("udhcpc -i").count(), 1);
        for needle in [
            "ip addr add \"$ip/${mask:-24}\" dev \"$interface\"",
            "ip route replace default via \"$r\" dev \"$interface\"",
            "echo \"nameserver $s\" >> /etc/resolv.conf",
            &format!("echo \"{DHCP_MARKER}$ip on $interface\" > /dev/console"),
        ] {
            assert!(DHCP_SCRIPT.contains(needle), "{needle}");
        }
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", DHCP_SCRIPT])
            .status()
            .expect("the host has sh");
        assert!(status.success());
    }

    /// The default init is valid `sh` (checked with the host's shell).
    #[test]
    fn default_init_parses() {
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", DEFAULT_INIT])
            .status()
            .expect("the host has sh");
        assert!(status.success());
    }

    #[test]
    fn initramfs_contents_and_reproducibility() {
        let dir = TestDir::new("initramfs");
        let busybox = dir.write("busybox", b"\x7fELF not really busybox");
        let out = dir.path().join("initramfs.cpio");
        let programs = GuestPrograms {
            workload: dir.write("workload", b"\x7fELF not really the workload"),
            blkd: dir.write("blkd", b"\x7fELF not really the daemon"),
        };
        let modules = dir.path().join("modules");
        super::super::modules::write_fake_cache_dir(&modules);
        build_initramfs(&busybox, &programs, &modules, DEFAULT_INIT, &out).expect("built");
        let first = fs::read(&out).expect("written");
        assert_eq!(
            first,
            initramfs_bytes(
                b"\x7fELF not really busybox".to_vec(),
                b"\x7fELF not really the workload".to_vec(),
                b"\x7fELF not really the daemon".to_vec(),
                super::super::modules::read(&modules, GUEST_MODULES).expect("modules"),
                DEFAULT_INIT
            )
        );
        // Every required name, in sorted order, each once.
        let names: Vec<String> = names_in(&first);
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/stratum-blkd",
                "bin/stratum-workload",
                "dev",
                "dev/console",
                "etc",
                "etc/stratum",
                "etc/stratum/modules",
                "etc/udhcpc",
                "etc/udhcpc/default.script",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/bridge.ko",
                "lib/modules/crc16.ko",
                "lib/modules/crc32c_generic.ko",
                "lib/modules/ext4.ko",
                "lib/modules/failover.ko",
                "lib/modules/jbd2.ko",
                "lib/modules/llc.ko",
                "lib/modules/mbcache.ko",
                "lib/modules/net_failover.ko",
                "lib/modules/stp.ko",
                "lib/modules/virtio_blk.ko",
                "lib/modules/virtio_console.ko",
                "lib/modules/virtio_mmio.ko",
                "lib/modules/virtio_net.ko",
                "lib/modules/vmw_vsock_virtio_transport.ko",
                "lib/modules/vmw_vsock_virtio_transport_common.ko",
                "lib/modules/vsock.ko",
                "proc",
                "sbin",
                "sys",
                "tmp",
                "usr",
                "usr/bin",
                "usr/sbin",
                "TRAILER!!!"
            ]
        );
        // Same inputs: same bytes, file left alone.
        let mtime = fs::metadata(&out)
            .and_then(|m| m.modified())
            .expect("mtime");
        build_initramfs(&busybox, &programs, &modules, DEFAULT_INIT, &out).expect("built again");
        assert_eq!(fs::read(&out).expect("still there"), first);
        assert_eq!(
            fs::metadata(&out)
                .and_then(|m| m.modified())
                .expect("mtime"),
            mtime
        );
        // Another script: rebuilt.
        build_initramfs(
            &busybox,
            &programs,
            &modules,
            "#!/bin/busybox sh\necho hi\n",
            &out,
        )
        .expect("rebuilt");
        assert_ne!(fs::read(&out).expect("rewritten"), first);
    }

    #[test]
    fn a_missing_binary_is_an_error_naming_it() {
        let dir = TestDir::new("initramfs-missing");
        let present = dir.write("present", b"\x7fELF");
        let out = dir.path().join("out.cpio");
        let modules = dir.path().join("modules");
        super::super::modules::write_fake_cache_dir(&modules);
        let both = GuestPrograms {
            workload: present.clone(),
            blkd: present.clone(),
        };
        let e = build_initramfs(
            &dir.path().join("no-busybox"),
            &both,
            &modules,
            DEFAULT_INIT,
            &out,
        )
        .expect_err("missing busybox");
        assert!(e.to_string().contains("no-busybox"), "{e}");
        for (name, programs) in [
            (
                "no-workload",
                GuestPrograms {
                    workload: dir.path().join("no-workload"),
                    ..both.clone()
                },
            ),
            (
                "no-blkd",
                GuestPrograms {
                    blkd: dir.path().join("no-blkd"),
                    ..both.clone()
                },
            ),
        ] {
            let e =
                build_initramfs(&present, &programs, &modules, DEFAULT_INIT, &out).expect_err(name);
            assert!(e.to_string().contains(name), "{e}");
        }
        let e = build_initramfs(
            &present,
            &both,
            &dir.path().join("no-modules"),
            DEFAULT_INIT,
            &out,
        )
        .expect_err("missing modules");
        assert!(e.to_string().contains("no-modules"), "{e}");
        assert!(!out.exists());
    }

    /// Entry names, read from the headers (namesize at field 11).
    fn names_in(bytes: &[u8]) -> Vec<String> {
        let mut at = 0;
        let mut names = Vec::new();
        while at < bytes.len() {
            let field = |i: usize| {
                let hex = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i])
                    .expect("ascii header");
                usize::from_str_radix(hex, 16).expect("hex")
            };
            let (filesize, namesize) = (field(6), field(11));
            let name = &bytes[at + 110..at + 110 + namesize - 1];
            names.push(String::from_utf8(name.to_vec()).expect("utf-8"));
            at = ((at + 110 + namesize).next_multiple_of(4) + filesize).next_multiple_of(4);
        }
        names
    }
}
