//! Disks (`[[vm.disk]]`, `--disk`) and the service VM (`role`): the
//! layout they resolve to, the service VM the tool adds, every rule's
//! error with its place, and what the bundle and QEMU get.

use std::cell::Cell;

use stratum_abi::bundle::{Bundle, Virtio, VirtioKind};

use super::*;

/// The fixture plus disk images: `d1.img` (1 MiB), `d2.img` (4 KiB),
/// `odd.img` (1000 bytes), `zero.img` (empty).
fn disk_fixture() -> Fixture {
    let fx = Fixture::new();
    fx.dir.write("d1.img", &vec![0u8; 1 << 20]);
    fx.dir.write("d2.img", &[0u8; 4096]);
    fx.dir.write("odd.img", &[0u8; 1000]);
    fx.dir.write("zero.img", &[]);
    for n in 0..14 {
        fx.dir.write(&format!("n{n}.img"), &[0u8; 512]);
    }
    fx
}

/// Parses `text` as `x.toml` with the fake Debian guest; how often it was
/// fetched.
fn parse(fx: &Fixture, text: &str) -> (Result<Config>, u32) {
    let calls = Cell::new(0);
    let path = fx.dir.write("x.toml", text.as_bytes());
    let config = Config::parse_with(text, &path, &mut fake_debian(fx, &calls));
    (config, calls.get())
}

fn valid(fx: &Fixture, text: &str) -> Config {
    parse(fx, text).0.expect("valid")
}

fn error(fx: &Fixture, text: &str) -> String {
    parse(fx, text).0.expect_err("invalid").to_string()
}

/// The bundle of `config`, parsed as the hypervisor parses it.
fn bundle_of(config: &Config) -> Vec<u8> {
    let bytes = crate::kernel::build_bundle(config, 0, [0; 16]).expect("bundle");
    assert_eq!(config.bundle_size(), bytes.len() as u64);
    Bundle::parse(&bytes).expect("the hypervisor's parser takes it");
    bytes
}

#[test]
fn a_disk_brings_a_service_vm_that_serves_it() {
    let fx = disk_fixture();
    let text = "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n\
                [[vm.disk]]\nimage = \"d1.img\"\n\
                [[vm.disk]]\nimage = \"d2.img\"\nreadonly = true\n";
    let (config, fetched) = parse(&fx, text);
    let config = config.expect("valid");
    assert_eq!(fetched, 1, "the service VM is Debian");
    assert_eq!((config.service, config.service_added), (Some(1), true));
    let svc = &config.vms[1];
    assert_eq!(svc.name, "service");
    assert!(svc.service && svc.identity && !config.vms[0].service);
    assert_eq!((svc.cpus, svc.memory), (1, 256 * MIB));
    assert_eq!(svc.memory_base, boot_area_end(config.bundle_size()));
    assert_eq!(svc.placement, CpuPlacement::Shared);
    assert_eq!(svc.on_crash, OnCrash::Restart);
    // The frontend is pinned on CPU 0; the service VM time-shares the last
    // CPU, which the machine gets for it.
    assert_eq!(
        (config.vms[0].pcpus.clone(), svc.pcpus.clone()),
        (vec![0], vec![1])
    );
    assert_eq!(config.machine.cpus, 2);
    assert_eq!(svc.cmdline, "console=ttyAMA0 quiet stratum.role=service");
    assert_eq!(
        svc.vsock,
        Some(VsockConfig {
            cid: 4,
            transport: VSOCK_TRANSPORT,
            peers: vec![]
        })
    );
    assert!(svc.virtio_console);
    assert_eq!(
        config.disks,
        [
            DiskConfig {
                vm: 0,
                image: fs::canonicalize(fx.dir.path().join("d1.img")).expect("exists"),
                readonly: false,
                sectors: 2048,
                transport: 8,
                backend_transport: 24,
            },
            DiskConfig {
                vm: 0,
                image: fs::canonicalize(fx.dir.path().join("d2.img")).expect("exists"),
                readonly: true,
                sectors: 8,
                transport: 9,
                backend_transport: 25,
            },
        ]
    );
    // One passthrough device for the page of QEMU's transports 24 to 31,
    // with the two disks' SPIs.
    assert_eq!(
        svc.devices,
        [DeviceConfig {
            name: "virtio_mmio".into(),
            compatible: vec!["virtio,mmio".into()],
            base: 0x0A00_3000,
            size: 0x1000,
            interrupts: vec![40, 41],
        }]
    );

    let summary = config.summary();
    for needle in [
        "vm[1] \"service\": 1 vCPU, 256 MiB RAM",
        "the service VM: serves the disks through its vsock device",
        "disk 0 \"a\": ",
        "d1.img (1 MiB, 2048 sectors), read-write, /dev/vda (transport 8); served by \"service\" (QEMU virtio-mmio-bus.24, SPI 40)",
        "d2.img (4 KiB, 8 sectors), read-only, /dev/vdb (transport 9); served by \"service\" (QEMU virtio-mmio-bus.25, SPI 41)",
        "note: added service VM \"service\" to serve the disks: Debian, 1 vCPU, 256 MiB RAM",
        "time-shared on physical CPU 1, restarted when it crashes",
        "warning: \"service\" is identity-mapped",
    ] {
        assert!(summary.contains(needle), "missing {needle:?} in\n{summary}");
    }

    // The bundle: the service flag, a block record per disk on its
    // frontend transport, the service VM's vsock device with no peer.
    let bytes = bundle_of(&config);
    let b = Bundle::parse(&bytes).expect("valid");
    assert_eq!(b.service_vm(), Some(1));
    assert!(b.vm(1).expect("vm").service && !b.vm(0).expect("vm").service);
    let got: Vec<Virtio> = (0..b.virtio_count()).filter_map(|i| b.virtio(i)).collect();
    assert_eq!(got, config.virtio_devices());
    for (n, (transport, sectors, readonly)) in
        [(8, 2048, false), (9, 8, true)].into_iter().enumerate()
    {
        assert!(got.contains(&Virtio {
            vm: 0,
            transport,
            kind: VirtioKind::Blk {
                disk: n as u32,
                sectors,
                readonly
            },
        }));
    }
    assert!(got.contains(&Virtio {
        vm: 1,
        transport: 1,
        kind: VirtioKind::Vsock { cid: 4, peers: 0 },
    }));
    let dev = b.device(0).expect("the disk page");
    assert_eq!(
        (dev.vm, dev.base, dev.spis()),
        (1, 0x0A00_3000, &[40, 41][..])
    );
}

#[test]
fn disks_are_numbered_in_config_order_and_fill_the_pages() {
    let fx = disk_fixture();
    // Four disks in "a", two in "b": the service VM takes the page of
    // transports 24-31 for disks 0-3 and 16-23 for 4-5.
    let disks = |names: &[usize]| -> String {
        names
            .iter()
            .map(|n| format!("[[vm.disk]]\nimage = \"n{n}.img\"\n"))
            .collect()
    };
    let text = format!(
        "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n{}\
         [[vm]]\nname = \"b\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\nvirtio_console = true\n{}",
        disks(&[0, 1, 2, 3]),
        disks(&[4, 5])
    );
    let config = valid(&fx, &text);
    let got: Vec<(usize, u32, u32)> = config
        .disks
        .iter()
        .map(|d| (d.vm, d.transport, d.backend_transport))
        .collect();
    assert_eq!(
        got,
        [
            (0, 8, 24),
            (0, 9, 25),
            (0, 10, 26),
            (0, 11, 27),
            (1, 8, 16),
            (1, 9, 17)
        ]
    );
    let svc = &config.vms[2];
    let pages: Vec<(u64, Vec<u32>)> = svc
        .devices
        .iter()
        .map(|d| (d.base, d.interrupts.clone()))
        .collect();
    assert_eq!(
        pages,
        [
            (0x0A00_3000, vec![40, 41, 42, 43]),
            (0x0A00_2000, vec![32, 33])
        ]
    );
    assert!(config.summary().contains(
        "/dev/vdb (transport 9); served by \"service\" (QEMU virtio-mmio-bus.17, SPI 33)"
    ));
    bundle_of(&config);
}

#[test]
fn a_frontends_disks_skip_the_transports_its_passthrough_devices_take() {
    let fx = disk_fixture();
    let text = "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\nidentity = true\n\
                [[vm.device]]\nname = \"q\"\ncompatible = \"virtio,mmio\"\nreg = [0x0a001000, 0x1000]\n\
                [[vm.disk]]\nimage = \"d1.img\"\n";
    let config = valid(&fx, text);
    assert_eq!(
        config.disks[0].transport, 16,
        "page 1 (transports 8-15) is the device's"
    );
    bundle_of(&config);
}

#[test]
fn a_vm_whose_only_virtio_devices_are_disks_keeps_its_ram_off_their_window() {
    let fx = disk_fixture();
    let text = "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\nmemory_base = 0x0a000000\n\
                [[vm.disk]]\nimage = \"d1.img\"\n";
    let msg = error(&fx, text);
    assert!(
        msg.contains("x.toml:5:15: vm[0].memory_base: RAM [0xa000000, 0xa400000) overlaps the virtio-mmio transports"),
        "{msg}"
    );
}

#[test]
fn a_named_service_vm_is_identity_mapped_with_vsock_and_its_role_word() {
    let fx = disk_fixture();
    let text = "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n\
                [[vm.disk]]\nimage = \"d1.img\"\n\
                [[vm]]\nname = \"svc\"\ndebian = true\nrole = \"service\"\ncmdline = \"loglevel=4\"\nmemory = \"192M\"\n";
    let config = valid(&fx, text);
    assert_eq!((config.service, config.service_added), (Some(1), false));
    let svc = &config.vms[1];
    assert!(svc.identity && svc.vsock.is_some());
    assert_eq!(
        svc.cmdline,
        "console=ttyAMA0 loglevel=4 stratum.role=service"
    );
    assert_eq!(
        svc.placement,
        CpuPlacement::Pinned,
        "the config's, not the added VM's"
    );
    assert_eq!(config.service_note(), None);
    assert_eq!(config.disks[0].backend_transport, 24);
    bundle_of(&config);

    // A service VM without disks is fine (and a non-Debian Linux Image).
    let config = valid(
        &fx,
        "[[vm]]\nname = \"svc\"\nkernel = \"small.Image\"\nrole = \"service\"\n",
    );
    assert!(config.vms[0].service && config.vms[0].devices.is_empty());
    assert_eq!(config.vms[0].cmdline, "stratum.role=service");
    bundle_of(&config);
}

#[test]
fn the_added_service_vm_takes_a_free_name_and_shares_the_last_cpu() {
    let fx = disk_fixture();
    let text = "[machine]\ncpus = 3\n\
                [[vm]]\nname = \"service\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n\
                [[vm.disk]]\nimage = \"d1.img\"\n\
                [[vm]]\nname = \"t\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\nplacement = \"shared\"\n";
    let config = valid(&fx, text);
    let svc = &config.vms[2];
    assert_eq!(svc.name, "service2");
    assert_eq!(
        (svc.pcpus.clone(), config.vms[1].pcpus.clone()),
        (vec![2], vec![2])
    );
    // Every CPU pinned: the over-commit names the added VM.
    let msg = error(
        &fx,
        "[machine]\ncpus = 1\n[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n\
         [[vm.disk]]\nimage = \"d1.img\"\n",
    );
    assert!(
        msg.contains("physical CPU 0 is over-committed: pinned vCPU 0 of \"a\" owns it, but vCPU 0 of \"service\" also runs there"),
        "{msg}"
    );
}

#[test]
fn disk_and_role_mistakes_are_all_reported_with_their_fields() {
    let fx = disk_fixture();
    let text = r#"[[vm]]
name = "a"
kernel = "raw.bin"
memory = "4M"
role = "server"

[[vm.disk]]
readonly = true

[[vm.disk]]
image = "nope.img"

[[vm.disk]]
image = "odd.img"

[[vm.disk]]
image = "zero.img"

[[vm.disk]]
image = "a-directory"

[[vm.disk]]
image = "d1.img"
read_only = true

[[vm.disk]]
image = "d1.img"

[[vm]]
name = "svc"
kernel = "raw.bin"
memory = "4M"
role = "service"
identity = false
vsock = false

[[vm.disk]]
image = "d2.img"

[[vm]]
name = "svc2"
kernel = "raw.bin"
memory = "4M"
role = "service"
vsock = true

[[vsock]]
allow = ["svc2", "svc"]
"#;
    let msg = error(&fx, text);
    assert_all_reported(
        &msg,
        &[
            (
                "5:8",
                "vm[0].role: unknown role \"server\": expected \"service\"",
            ),
            (
                "7:1",
                "vm[0].disk[0]: missing: a disk needs image = \"path\"",
            ),
            ("11:9", "vm[0].disk[1].image: "),
            ("14:9", "vm[0].disk[2].image: "),
            ("17:9", "vm[0].disk[3].image: "),
            ("20:9", "vm[0].disk[4].image: "),
            (
                "24:1",
                "vm[0].disk[5]: unknown field `read_only`: did you mean `readonly`?",
            ),
            ("27:9", "vm[0].disk[6].image: "),
            ("33:8", "vm[1].role: "),
            ("34:12", "vm[1].identity: the service VM is identity-mapped"),
            (
                "35:9",
                "vm[1].vsock: the service VM always has a vsock device",
            ),
            (
                "37:1",
                "vm[1].disk[0]: the service VM serves the disks and cannot have one itself",
            ),
            (
                "44:8",
                "vm[2].role: a second service VM: vm[1] is the service VM",
            ),
            (
                "48:18",
                "vsock[0].allow: \"svc\" is the service VM: its vsock device carries the hypervisor's link",
            ),
        ],
    );
    for needle in [
        "nope.img: file not found",
        "odd.img: 1000 bytes, not a multiple of 512: a disk is whole 512-byte sectors (`truncate -s 1024` rounds it up)",
        "zero.img: empty: a disk image holds at least one 512-byte sector",
        "a-directory: not a regular file",
        "d1.img is also the image of vm[0].disk[5]: one image backs two disks only when both are read-only",
        "raw.bin: the service VM runs the disk daemon under Linux",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in\n{msg}");
    }
}

#[test]
fn one_image_backs_several_disks_only_read_only() {
    let fx = disk_fixture();
    let vm = |name: &str, readonly: bool| {
        format!(
            "[[vm]]\nname = \"{name}\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n\
             [[vm.disk]]\nimage = \"./d1.img\"\nreadonly = {readonly}\n"
        )
    };
    let config = valid(&fx, &(vm("a", true) + &vm("b", true)));
    assert_eq!(config.disks.len(), 2);
    assert_eq!(config.disks[0].image, config.disks[1].image);
    let msg = error(&fx, &(vm("a", true) + &vm("b", false)));
    assert!(
        msg.contains("x.toml:13:9: vm[1].disk[0].image: ")
            && msg.contains("is also the image of vm[0].disk[0]"),
        "{msg}"
    );
}

#[test]
fn disk_limits_per_vm_and_per_system() {
    let fx = disk_fixture();
    let disks = |range: std::ops::Range<usize>| -> String {
        range
            .map(|n| format!("[[vm.disk]]\nimage = \"n{n}.img\"\n"))
            .collect()
    };
    let vm = |name: &str, extra: &str, disks: String| {
        format!("[[vm]]\nname = \"{name}\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n{extra}{disks}")
    };
    // A fifth disk in one VM.
    let msg = error(&fx, &vm("a", "", disks(0..5)));
    assert!(
        msg.contains("vm[0].disk[4]: \"a\" has more than 4 disks: a VM has at most 4"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    // Four disks beside a console, a vsock device and three NICs: nine
    // virtio devices.
    let three_nets: String = (0..3)
        .map(|k| format!("[[network]]\nname = \"n{k}\"\nvms = [\"a\", \"b\"]\n"))
        .collect();
    let msg = error(
        &fx,
        &(vm("a", "virtio_console = true\nvsock = true\n", disks(0..4))
            + &vm("b", "", String::new())
            + &three_nets),
    );
    assert!(
        msg.contains(
            "vm[0].disk[3]: \"a\" would have 9 virtio devices with this disk: a VM has at most 8"
        ),
        "{msg}"
    );
    // Thirteen disks: more than the service VM's three pages hold.
    let text = vm("a", "", disks(0..4))
        + &vm("b", "", disks(4..8))
        + &vm("c", "", disks(8..12))
        + &vm("d", "", disks(12..13));
    let msg = error(&fx, &text);
    assert!(
        msg.contains("vm[3].disk[0]: more than 12 disks: the service VM serves at most 12"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    // Twelve are fine: three pages, one passthrough device each.
    let text = vm("a", "", disks(0..4)) + &vm("b", "", disks(4..8)) + &vm("c", "", disks(8..12));
    let config = valid(&fx, &text);
    let bases: Vec<u64> = config.vms[3].devices.iter().map(|d| d.base).collect();
    assert_eq!(bases, [0x0A00_3000, 0x0A00_2000, 0x0A00_1000]);
    assert_eq!(config.disks[11].backend_transport, 11);
    bundle_of(&config);
    // A service VM with passthrough devices of its own has room for fewer
    // pages.
    let own: String = (0..2)
        .map(|k| {
            format!(
                "[[vm.device]]\nname = \"r{k}\"\ncompatible = \"x,y\"\nreg = [{:#x}, 0x1000]\n",
                0x0900_2000 + k * 0x1000
            )
        })
        .collect();
    let text = vm("a", "", disks(0..4))
        + &vm("b", "", disks(4..8))
        + &vm("c", "", disks(8..9))
        + &vm(
            "svc",
            "role = \"service\"\nkernel = \"small.Image\"\n",
            String::new(),
        )
        .replace("kernel = \"raw.bin\"\n", "")
        + &own;
    let msg = error(&fx, &text);
    assert!(
        msg.contains("vm[3].role: the service VM has 2 passthrough devices and its 9 disks need 3 more (one per page of virtio-mmio transports): a VM has at most 4"),
        "{msg}"
    );
}

#[test]
fn no_room_for_the_service_vm_among_sixteen() {
    let fx = disk_fixture();
    let text = format!("{}[[vm.disk]]\nimage = \"d1.img\"\n", vm_names(16, "4M"));
    let msg = error(&fx, &text);
    assert!(
        msg.contains("x.toml:65:1: the disks need a service VM, and the config already has 16 VMs"),
        "{msg}"
    );
}

#[test]
fn writable_disks_must_be_writable_files() {
    // SAFETY: geteuid only reads the process's effective user id.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: root writes read-only files");
        return;
    }
    let fx = disk_fixture();
    let ro = fx.dir.write("ro.img", &[0u8; 512]);
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o444)).expect("chmod");
    let disk = |readonly: bool| {
        format!(
            "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n\
             [[vm.disk]]\nimage = \"ro.img\"\nreadonly = {readonly}\n"
        )
    };
    let msg = error(&fx, &disk(false));
    assert!(
        msg.contains("ro.img: permission denied: or make the disk read-only"),
        "{msg}"
    );
    valid(&fx, &disk(true));
}

#[test]
fn disks_need_virt() {
    let fx = disk_fixture();
    let text = "[machine]\nboard = \"zcu102\"\n\
                [[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n[[vm.disk]]\nimage = \"d1.img\"\n";
    let msg = error(&fx, text);
    assert!(
        msg.contains("x.toml:7:1: vm[0].disk[0]: disks are QEMU virtio-blk devices on virt's virtio-mmio transports")
            && msg.contains("the zcu102 has no virtio-mmio transports"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    // Moved there by --board too.
    let mut config = valid(&fx, &text.replace("[machine]\nboard = \"zcu102\"\n", ""));
    let e = config
        .override_machine(Some(Board::Zcu102), None, None)
        .expect_err("no virtio-mmio on the board");
    assert!(
        e.to_string()
            .contains("board zcu102: disks are QEMU virtio-blk devices"),
        "{e}"
    );
}

#[test]
fn disk_flags_parse() {
    let flag = |s: &str| s.parse::<DiskFlag>();
    assert_eq!(
        flag("x.img"),
        Ok(DiskFlag {
            image: "x.img".into(),
            readonly: false
        })
    );
    assert_eq!(
        flag("/d/x.img,readonly"),
        Ok(DiskFlag {
            image: "/d/x.img".into(),
            readonly: true
        })
    );
    assert_eq!(flag("a,b.img").map(|f| f.image), Ok("a,b.img".into()));
    assert!(flag(",readonly").is_err());
    assert!(flag("").is_err());
}

#[test]
fn disks_from_flags_get_the_service_vm_and_stop_with_the_vm() {
    let fx = disk_fixture();
    let calls = Cell::new(0);
    let flags = VmFlags {
        kernel: fx.dir.path().join("raw.bin"),
        memory: Some("4M".into()),
        disks: vec![
            DiskFlag {
                image: fx.dir.path().join("d1.img"),
                readonly: false,
            },
            DiskFlag {
                image: fx.dir.path().join("d2.img"),
                readonly: true,
            },
        ],
        ..VmFlags::default()
    };
    let config =
        Config::from_flags_with(&flags, &mut fake_debian(&fx, &calls)).expect("valid flags");
    assert_eq!(calls.get(), 1);
    assert_eq!((config.service, config.service_added), (Some(1), true));
    assert_eq!(
        config.system.stop,
        StopPolicy::Any,
        "the run ends with its one VM"
    );
    assert_eq!(config.disks.len(), 2);
    assert!(config.disks[1].readonly);
    bundle_of(&config);
    // Without disks, nothing changes.
    let config = Config::from_flags_with(
        &VmFlags {
            disks: Vec::new(),
            ..flags.clone()
        },
        &mut fake_debian(&fx, &calls),
    )
    .expect("valid flags");
    assert_eq!((config.vms.len(), config.system.stop), (1, StopPolicy::All));
    // A bad disk names the flag.
    let msg = Config::from_flags_with(
        &VmFlags {
            disks: vec![DiskFlag {
                image: fx.dir.path().join("odd.img"),
                readonly: false,
            }],
            ..flags
        },
        &mut fake_debian(&fx, &calls),
    )
    .expect_err("bad disk")
    .to_string();
    assert!(
        msg.starts_with("--disk: ") && msg.contains("odd.img: 1000 bytes"),
        "{msg}"
    );
}

#[test]
fn disk_flags_go_to_a_configs_only_vm() {
    let fx = disk_fixture();
    let calls = Cell::new(0);
    let d1 = DiskFlag {
        image: fx.dir.path().join("d1.img"),
        readonly: true,
    };
    let load = |text: &str, disks: &[DiskFlag]| {
        let path = fx.dir.write("x.toml", text.as_bytes());
        Config::parse_with_disks(text, &path, disks, &mut fake_debian(&fx, &calls))
    };
    // One VM (besides a service VM): it takes them, after its own.
    let text = "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n\
                [[vm.disk]]\nimage = \"d2.img\"\n\
                [[vm]]\nname = \"svc\"\ndebian = true\nrole = \"service\"\n";
    let config = load(text, std::slice::from_ref(&d1)).expect("valid");
    let got: Vec<(usize, bool, u32)> = config
        .disks
        .iter()
        .map(|d| (d.vm, d.readonly, d.transport))
        .collect();
    assert_eq!(got, [(0, false, 8), (0, true, 9)]);
    // Several: --disk cannot choose.
    let two = "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n\
               [[vm]]\nname = \"b\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n";
    let msg = load(two, std::slice::from_ref(&d1))
        .expect_err("ambiguous")
        .to_string();
    assert!(
        msg.contains("--disk: ")
            && msg.contains("x.toml has 2 VMs besides the service VM (\"a\", \"b\")")
            && msg.contains("with [[vm.disk]] tables instead"),
        "{msg}"
    );
    // A bad file names the flag, not a line of the config.
    let odd = DiskFlag {
        image: fx.dir.path().join("odd.img"),
        readonly: false,
    };
    let msg = load(
        "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n",
        &[odd],
    )
    .expect_err("bad disk")
    .to_string();
    assert!(
        msg.starts_with("--disk: ") && msg.contains("odd.img: 1000 bytes"),
        "{msg}"
    );
}

#[test]
fn a_system_image_refuses_disks() {
    let fx = disk_fixture();
    let config = valid(
        &fx,
        "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n[[vm.disk]]\nimage = \"d1.img\"\n",
    );
    let out = fx.dir.path().join("system.img");
    let e = crate::sysimg::build(&config, Some(Path::new("/nonexistent")), false, &out)
        .expect_err("no disks in an image");
    assert!(
        e.to_string()
            .contains("a system image cannot bring its disks"),
        "{e}"
    );
    assert_eq!(e.exit_code(), crate::exit_code::BAD_INPUT);
    assert!(!out.exists());
}

#[test]
fn the_added_service_vm_counts_among_the_vms_that_run() {
    let fx = disk_fixture();
    let text = format!("{}[[vm.disk]]\nimage = \"d1.img\"\n", shared_vms(8, "4M"));
    let config = valid(&fx, &text);
    assert_eq!(config.vms.len(), 9);
    let msg = config.check_supported().expect_err("nine VMs").to_string();
    assert!(
        msg.contains("vm: 9 VMs, with the service VM added for the disks: this version of Stratum runs at most 8"),
        "{msg}"
    );
}
