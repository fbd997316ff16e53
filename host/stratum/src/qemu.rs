//! The QEMU command line: a pure function of a [`RunPlan`], so every option
//! combination is unit-tested without QEMU.
//!
//! The machine is QEMU `virt` with the virtualization extensions (EL2) on,
//! no display, no monitor, no network, the first UART on our stdout (and its
//! input from QEMU's stdin) through a `stdio` chardev, and semihosting on so the hypervisor can exit QEMU with a
//! status. The system image (the hypervisor with its boot bundle inside,
//! [`crate::sysimg`]) is the `-kernel`: an arm64 `Image`, so QEMU loads it at
//! RAM + 2 MiB and passes the DTB in x0.
//!
//! Each disk is a `virtio-blk-device` on the `virt` transport the service
//! VM has it on (`bus=virtio-mmio-bus.<T>`: QEMU names the buses in the
//! order it creates the transports, lowest address first, so bus *T* is
//! the transport at 0x0A000000 + 0x200·*T*, SPI 16 + *T*), with serial
//! `stratum-disk<N>` (the daemon's name for disk *N*) and its image as a
//! raw drive with the host's page cache (`cache=writeback`: a guest's
//! flush becomes an `fsync` of the file).
//!
//! The uplink is a `virtio-net-device` on the transport the service VM has
//! it on, with the MAC the host tool derived, on QEMU's user-mode network
//! (`-netdev user`: DHCP from 10.0.2.15, the host's loopback at 10.0.2.2),
//! which listens on 127.0.0.1 for each forwarded port (`hostfwd`, to the
//! first DHCP lease).

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::{Board, Config, CpuModel, Gic};
use crate::{Error, Result};

/// The QEMU binary looked up on `PATH`.
pub const QEMU_BINARY: &str = "qemu-system-aarch64";
/// Environment variable naming a QEMU binary to use instead.
pub const QEMU_ENV: &str = "STRATUM_QEMU";
/// How to install QEMU on Debian and Ubuntu.
pub const QEMU_INSTALL_HINT: &str = "sudo apt-get install qemu-system-arm";

/// Everything the QEMU command line depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The board QEMU emulates.
    pub board: Board,
    /// The board's device tree (`-dtb`), for boards whose DT QEMU does not
    /// write itself.
    pub dtb: Option<PathBuf>,
    /// GIC version of the emulated host.
    pub gic: Gic,
    /// CPU model of the emulated host.
    pub cpu: CpuModel,
    /// Physical CPUs (`-smp`).
    pub cpus: u32,
    /// Host RAM in bytes (`-m`, passed in MiB, rounded up).
    pub memory: u64,
    /// Deterministic mode: `-icount shift=4,sleep=off`, `-seed 1` and
    /// `dtb-randomness=off`, so runs repeat exactly.
    pub deterministic: bool,
    /// Whether our stdin is a terminal the guest console reads from. Then
    /// QEMU keeps Ctrl-C as a signal (`signal=on`) so it still stops QEMU.
    /// Otherwise `signal=off`: the `stdio` chardev still reads whatever QEMU's
    /// stdin is (a pipe or file the CLI passes on, or `/dev/null`: EOF, and
    /// the guest simply receives nothing).
    pub interactive: bool,
    /// The system image: the hypervisor's arm64 `Image` with the boot
    /// bundle inside.
    pub image: PathBuf,
    /// QMP sockets to listen on (`stratum stats`, `stratum trace`; one
    /// client each at a time).
    pub qmp: Vec<PathBuf>,
    /// The disks' QEMU devices, in disk order.
    pub disks: Vec<QemuDisk>,
    /// The uplink's QEMU NIC and network, if the system has one.
    pub uplink: Option<QemuUplink>,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<OsString>,
}

/// One disk's QEMU drive and `virtio-blk-device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuDisk {
    /// The disk's number: its drive's id and its serial are
    /// `stratum-disk<number>`.
    pub number: usize,
    /// The image file (absolute).
    pub image: PathBuf,
    /// Opened read-only.
    pub readonly: bool,
    /// The `virt` transport it sits on: `virtio-mmio-bus.<transport>`.
    pub transport: u32,
}

impl QemuDisk {
    /// The drive id and the device's serial, `stratum-disk<N>`
    /// ([`stratum_abi::blkproto::serial`]).
    pub fn id(&self) -> String {
        let n = u16::try_from(self.number).expect("a bundle has at most 16 disks");
        let (bytes, len) = stratum_abi::blkproto::serial(n);
        String::from_utf8_lossy(&bytes[..len]).into_owned()
    }

    /// `-drive` and `-device` with their values.
    fn args(&self) -> [OsString; 4] {
        let id = self.id();
        // QEMU's option syntax: a comma in a value is written twice.
        let mut drive = OsString::from("file=");
        drive.push(escape_commas(self.image.as_os_str()));
        drive.push(format!(
            ",if=none,format=raw,id={id},cache=writeback{}",
            if self.readonly { ",readonly=on" } else { "" }
        ));
        [
            "-drive".into(),
            drive,
            "-device".into(),
            format!(
                "virtio-blk-device,drive={id},bus=virtio-mmio-bus.{},serial={id}",
                self.transport
            )
            .into(),
        ]
    }
}

/// The uplink's QEMU NIC on QEMU's user-mode network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuUplink {
    /// The `virt` transport it sits on: `virtio-mmio-bus.<transport>`.
    pub transport: u32,
    /// Its MAC.
    pub mac: [u8; 6],
    /// The forwarded ports: QEMU listens on 127.0.0.1:`host`.
    pub forwards: Vec<crate::config::Forward>,
}

impl QemuUplink {
    /// The netdev's id.
    pub const ID: &'static str = "stratum-uplink";

    /// `-netdev` and `-device` with their values.
    fn args(&self) -> [OsString; 4] {
        let mut netdev = format!("user,id={}", Self::ID);
        for f in &self.forwards {
            netdev += &format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest);
        }
        [
            "-netdev".into(),
            netdev.into(),
            "-device".into(),
            format!(
                "virtio-net-device,netdev={},bus=virtio-mmio-bus.{},mac={}",
                Self::ID,
                self.transport,
                stratum_virtio::net::Mac(self.mac)
            )
            .into(),
        ]
    }
}

/// `value` with every comma doubled, as a QEMU option value.
fn escape_commas(value: &std::ffi::OsStr) -> OsString {
    use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

impl RunPlan {
    /// A plan for `config` with the given QEMU and system image. Options
    /// (deterministic, interactive, extra args) start off/empty.
    pub fn new(config: &Config, qemu: PathBuf, image: PathBuf) -> Self {
        Self {
            qemu,
            board: config.machine.board,
            dtb: None,
            gic: config.machine.gic,
            cpu: config.machine.cpu,
            cpus: config.machine.cpus,
            memory: config.machine.memory,
            deterministic: false,
            interactive: false,
            image,
            qmp: Vec::new(),
            disks: config
                .disks
                .iter()
                .enumerate()
                .map(|(number, d)| QemuDisk {
                    number,
                    image: d.image.clone(),
                    readonly: d.readonly,
                    transport: d.backend_transport,
                })
                .collect(),
            uplink: config.uplink.as_ref().map(|u| QemuUplink {
                transport: u.transport,
                mac: u.mac,
                forwards: u.forwards.clone(),
            }),
            extra_args: Vec::new(),
        }
    }
}

/// The full QEMU command line for `plan`, program first.
pub fn qemu_command(plan: &RunPlan) -> Vec<OsString> {
    let machine = match plan.board {
        Board::Virt => {
            let mut m = format!("virt,virtualization=on,gic-version={}", plan.gic.number());
            if plan.deterministic {
                m += ",dtb-randomness=off";
            }
            m
        }
        // Its CPUs (4 Cortex-A53) and GIC-400 are fixed; its DT comes from a file.
        Board::Zcu102 => "xlnx-zcu102,virtualization=on".to_owned(),
    };
    let signal = if plan.interactive { "on" } else { "off" };
    let mut args: Vec<OsString> = vec![plan.qemu.clone().into()];
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["-M", &machine]);
    if plan.board == Board::Virt {
        push(&["-cpu", plan.cpu.qemu_name()]);
        push(&["-smp", &plan.cpus.to_string()]);
    } else {
        // The ZCU102's display port has audio: no host sound backend (QEMU
        // 7.2 still notes once that the card names no audiodev).
        push(&["-audiodev", "none,id=snd0"]);
    }
    push(&["-m", &format!("{}M", plan.memory.div_ceil(1 << 20))]);
    push(&["-display", "none", "-monitor", "none"]);
    push(&[
        "-chardev",
        &format!("stdio,id=con,signal={signal},mux=off"),
        "-serial",
        "chardev:con",
    ]);
    // `virt` gets no NIC of QEMU's choosing (the uplink's is ours); the
    // ZCU102's own Ethernet controllers stay unconnected (`-nic none`
    // would only make QEMU warn about each).
    if plan.board == Board::Virt {
        push(&["-nic", "none"]);
    }
    push(&["-semihosting-config", "enable=on,target=native"]);
    if plan.deterministic {
        push(&["-icount", "shift=4,sleep=off", "-seed", "1"]);
    }
    for disk in &plan.disks {
        args.extend(disk.args());
    }
    if let Some(uplink) = &plan.uplink {
        args.extend(uplink.args());
    }
    for socket in &plan.qmp {
        let mut spec = OsString::from("unix:");
        spec.push(socket);
        spec.push(",server=on,wait=off");
        args.push("-qmp".into());
        args.push(spec);
    }
    if let Some(dtb) = &plan.dtb {
        args.push("-dtb".into());
        args.push(dtb.clone().into());
    }
    args.push("-kernel".into());
    args.push(plan.image.clone().into());
    args.extend(plan.extra_args.iter().cloned());
    args
}

/// Finds QEMU: `$STRATUM_QEMU` if set, else `qemu-system-aarch64` on `PATH`.
/// Fails with an environment error that says how to install it.
pub fn find_qemu() -> Result<PathBuf> {
    if let Some(path) = env::var_os(QEMU_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::environment(format!(
                "{QEMU_ENV}={} does not name a file",
                path.display()
            )))
        };
    }
    search_path(QEMU_BINARY, env::var_os("PATH").as_deref()).ok_or_else(|| {
        Error::environment(format!(
            "{QEMU_BINARY} not found on PATH; install it with `{QEMU_INSTALL_HINT}` (or set {QEMU_ENV})"
        ))
    })
}

/// The first executable file called `name` in the `PATH`-style list `path`.
fn search_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> RunPlan {
        RunPlan {
            board: Board::Virt,
            dtb: None,
            qemu: "qemu-system-aarch64".into(),
            gic: Gic::V3,
            cpu: CpuModel::CortexA57,
            cpus: 1,
            memory: 512 << 20,
            deterministic: false,
            interactive: false,
            image: "/t/system.img".into(),
            qmp: Vec::new(),
            disks: Vec::new(),
            uplink: None,
            extra_args: Vec::new(),
        }
    }

    fn line(plan: &RunPlan) -> String {
        qemu_command(plan)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    const TAIL: &str = "-display none -monitor none \
        -chardev stdio,id=con,signal=off,mux=off -serial chardev:con -nic none \
        -semihosting-config enable=on,target=native";

    #[test]
    fn default_command() {
        assert_eq!(
            line(&plan()),
            format!(
                "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu cortex-a57 \
                 -smp 1 -m 512M {TAIL} -kernel /t/system.img"
            )
        );
    }

    #[test]
    fn gicv2_max_cpu_smp() {
        let p = RunPlan {
            gic: Gic::V2,
            cpu: CpuModel::Max,
            cpus: 4,
            memory: (1 << 30) + 1,
            ..plan()
        };
        assert_eq!(
            line(&p),
            format!(
                "qemu-system-aarch64 -M virt,virtualization=on,gic-version=2 -cpu max \
                 -smp 4 -m 1025M {TAIL} -kernel /t/system.img"
            )
        );
    }

    #[test]
    fn zcu102_takes_its_own_machine_and_dt() {
        let p = RunPlan {
            board: Board::Zcu102,
            dtb: Some("/c/zynqmp-zcu102-rev1.0.dtb".into()),
            gic: Gic::V2,
            cpu: CpuModel::CortexA53,
            cpus: 4,
            deterministic: true,
            ..plan()
        };
        assert_eq!(
            line(&p),
            "qemu-system-aarch64 -M xlnx-zcu102,virtualization=on -audiodev none,id=snd0 \
             -m 512M -display none -monitor none \
             -chardev stdio,id=con,signal=off,mux=off -serial chardev:con \
             -semihosting-config enable=on,target=native -icount shift=4,sleep=off -seed 1 \
             -dtb /c/zynqmp-zcu102-rev1.0.dtb -kernel /t/system.img"
        );
    }

    #[test]
    fn deterministic_mode() {
        let p = RunPlan {
            deterministic: true,
            ..plan()
        };
        assert_eq!(
            line(&p),
            format!(
                "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,dtb-randomness=off \
                 -cpu cortex-a57 -smp 1 -m 512M {TAIL} -icount shift=4,sleep=off -seed 1 \
                 -kernel /t/system.img"
            )
        );
    }

    #[test]
    fn interactive_keeps_ctrl_c() {
        let p = RunPlan {
            interactive: true,
            ..plan()
        };
        let l = line(&p);
        assert!(l.contains("-chardev stdio,id=con,signal=on,mux=off"), "{l}");
    }

    #[test]
    fn console_reads_stdin_in_both_modes() {
        for interactive in [false, true] {
            let l = line(&RunPlan {
                interactive,
                ..plan()
            });
            let signal = if interactive { "on" } else { "off" };
            assert!(
                l.contains(&format!(
                    "-chardev stdio,id=con,signal={signal},mux=off -serial chardev:con"
                )),
                "{l}"
            );
            assert!(!l.contains("-nographic") && !l.contains("null"), "{l}");
        }
    }

    #[test]
    fn qmp_socket_before_the_kernel() {
        let p = RunPlan {
            qmp: vec!["/run/user/1/stratum/42.qmp".into()],
            ..plan()
        };
        let l = line(&p);
        assert!(
            l.contains(
                "-qmp unix:/run/user/1/stratum/42.qmp,server=on,wait=off -kernel /t/system.img"
            ),
            "{l}"
        );
        assert!(!line(&plan()).contains("-qmp"));
    }

    #[test]
    fn extra_args_come_last() {
        let p = RunPlan {
            extra_args: vec!["-d".into(), "guest_errors".into()],
            deterministic: true,
            gic: Gic::V2,
            ..plan()
        };
        let args = qemu_command(&p);
        assert_eq!(
            args[args.len() - 2..],
            [OsString::from("-d"), "guest_errors".into()]
        );
        assert_eq!(args[0], OsString::from("qemu-system-aarch64"));
    }

    #[test]
    fn each_disk_is_a_drive_and_a_virtio_blk_device_on_its_transport() {
        let p = RunPlan {
            disks: vec![
                QemuDisk {
                    number: 0,
                    image: "/d/root.img".into(),
                    readonly: false,
                    transport: 24,
                },
                QemuDisk {
                    number: 4,
                    image: "/d/a,b.img".into(),
                    readonly: true,
                    transport: 16,
                },
            ],
            qmp: vec!["/q".into()],
            ..plan()
        };
        let l = line(&p);
        assert!(
            l.contains(
                "-semihosting-config enable=on,target=native \
                 -drive file=/d/root.img,if=none,format=raw,id=stratum-disk0,cache=writeback \
                 -device virtio-blk-device,drive=stratum-disk0,bus=virtio-mmio-bus.24,serial=stratum-disk0 \
                 -drive file=/d/a,,b.img,if=none,format=raw,id=stratum-disk4,cache=writeback,readonly=on \
                 -device virtio-blk-device,drive=stratum-disk4,bus=virtio-mmio-bus.16,serial=stratum-disk4 \
                 -qmp unix:/q,server=on,wait=off"
            ),
            "{l}"
        );
        assert!(!line(&plan()).contains("-drive"), "no disk, no drive");
    }

    #[test]
    fn a_plan_takes_the_configs_disks_on_their_service_transports() {
        use crate::config::{DiskConfig, VmFlags};
        let dir = crate::testutil::TestDir::new("qemu-disks");
        let kernel = dir.write("k.bin", b"raw kernel");
        let mut config = Config::from_flags(&VmFlags {
            kernel,
            ..VmFlags::default()
        })
        .expect("valid");
        config.disks = (0..5)
            .map(|n| DiskConfig {
                vm: 0,
                image: format!("/d/{n}.img").into(),
                readonly: n == 1,
                sectors: 8,
                transport: 8 + n as u32,
                backend_transport: crate::config::service_transport(n).expect("served"),
            })
            .collect();
        let p = RunPlan::new(&config, "qemu".into(), "/t/system.img".into());
        let got: Vec<(usize, u32, bool, String)> = p
            .disks
            .iter()
            .map(|d| (d.number, d.transport, d.readonly, d.id()))
            .collect();
        assert_eq!(
            got,
            [
                (0, 24, false, "stratum-disk0".into()),
                (1, 25, true, "stratum-disk1".into()),
                (2, 26, false, "stratum-disk2".into()),
                (3, 27, false, "stratum-disk3".into()),
                (4, 16, false, "stratum-disk4".into()),
            ]
        );
    }

    #[test]
    fn the_uplink_is_a_user_netdev_and_a_virtio_net_device_on_its_transport() {
        use crate::config::Forward;
        let p = RunPlan {
            uplink: Some(QemuUplink {
                transport: 15,
                mac: [0x02, 0x11, 0x22, 0x33, 0x44, 0xab],
                forwards: vec![
                    Forward {
                        host: 18080,
                        guest: 8080,
                    },
                    Forward {
                        host: 2222,
                        guest: 22,
                    },
                ],
            }),
            disks: vec![QemuDisk {
                number: 0,
                image: "/d/root.img".into(),
                readonly: false,
                transport: 24,
            }],
            ..plan()
        };
        let l = line(&p);
        assert!(
            l.contains(
                "-device virtio-blk-device,drive=stratum-disk0,bus=virtio-mmio-bus.24,serial=stratum-disk0 \
                 -netdev user,id=stratum-uplink,hostfwd=tcp:127.0.0.1:18080-:8080,hostfwd=tcp:127.0.0.1:2222-:22 \
                 -device virtio-net-device,netdev=stratum-uplink,bus=virtio-mmio-bus.15,mac=02:11:22:33:44:ab \
                 -kernel /t/system.img"
            ),
            "{l}"
        );
        // No forwards: the network alone.
        let p = RunPlan {
            uplink: Some(QemuUplink {
                transport: 15,
                mac: [2, 0, 0, 0, 0, 1],
                forwards: Vec::new(),
            }),
            ..plan()
        };
        assert!(
            line(&p).contains(
                "-netdev user,id=stratum-uplink -device virtio-net-device,netdev=stratum-uplink,\
                 bus=virtio-mmio-bus.15,mac=02:00:00:00:00:01"
            ),
            "{}",
            line(&p)
        );
        assert!(!line(&plan()).contains("-netdev"), "no uplink, no netdev");
    }

    #[test]
    fn path_search() {
        let dir = crate::testutil::TestDir::new("path-search");
        let exe = dir.write("qemu-system-aarch64", b"#!/bin/sh\n");
        let list = std::env::join_paths(["/nonexistent", dir.path().to_str().expect("utf-8")])
            .expect("joinable");
        assert_eq!(search_path("qemu-system-aarch64", Some(&list)), None);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(search_path("qemu-system-aarch64", Some(&list)), Some(exe));
        assert_eq!(search_path("qemu-system-aarch64", None), None);
    }
}
