//! The uplink (`[[network]] uplink = true`, `--net user`, `--forward`):
//! the service VM that joins and bridges it, its QEMU NIC's page and
//! command-line words, every rule's error with its place, and what the
//! bundle and QEMU get.

use std::cell::Cell;

use stratum_abi::bundle::Bundle;
use stratum_virtio::net::{Mac, derive_mac};

use super::*;

/// Parses `text` as `x.toml` with the fake Debian guest.
fn parse(fx: &Fixture, text: &str) -> Result<Config> {
    parse_flags(fx, text, &FileFlags::default())
}

/// [`parse`] with the command line's additions.
fn parse_flags(fx: &Fixture, text: &str, flags: &FileFlags) -> Result<Config> {
    let calls = Cell::new(0);
    let path = fx.dir.write("x.toml", text.as_bytes());
    Config::parse_with_flags(text, &path, flags, &mut fake_debian(fx, &calls))
}

fn valid(fx: &Fixture, text: &str) -> Config {
    parse(fx, text).expect("valid")
}

fn error(fx: &Fixture, text: &str) -> String {
    parse(fx, text).expect_err("invalid").to_string()
}

/// A Linux VM `name` (an arm64 Image: its init understands the words).
fn linux_vm(name: &str) -> String {
    format!("[[vm]]\nname = \"{name}\"\nkernel = \"small.Image\"\nmemory = \"16M\"\n")
}

fn mac(vm: &str, network: &str) -> String {
    derive_mac(vm, network).to_string()
}

/// A bare-metal VM "a" (4 lines).
const VM_A: &str = "[[vm]]\nname = \"a\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n";
/// A bare-metal VM "b" (4 lines).
const VM_B: &str = "[[vm]]\nname = \"b\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n";

fn forward(host: u16, guest: u16) -> Forward {
    Forward { host, guest }
}

#[test]
fn an_uplink_brings_a_service_vm_that_joins_and_bridges_it() {
    let fx = Fixture::new();
    let text = format!(
        "{}{vm_a}[[network]]\nname = \"out\"\nvms = [\"web\", \"a\"]\nuplink = true\n",
        linux_vm("web"),
        vm_a = VM_A
    );
    let config = valid(&fx, &text);
    assert_eq!((config.service, config.service_added), (Some(2), true));
    let svc = &config.vms[2];
    assert_eq!(svc.name, "service");
    // The service VM joins the network, last.
    let net = &config.networks[0];
    assert!(net.uplink);
    assert_eq!(
        net.nics
            .iter()
            .map(|n| (n.vm, n.transport))
            .collect::<Vec<_>>(),
        [(0, 2), (1, 2), (2, 2)]
    );
    let qemu_mac = uplink_mac("service", "out");
    assert_eq!(
        config.uplink,
        Some(UplinkConfig {
            network: 0,
            transport: 15,
            mac: qemu_mac,
            forwards: Vec::new(),
        })
    );
    // Its words: the service VM bridges the two NICs; the Linux frontend
    // takes a lease on its NIC; the bare-metal one is left alone.
    assert_eq!(
        svc.cmdline,
        format!(
            "console=ttyAMA0 quiet stratum.role=service stratum.uplink={},{}",
            Mac(qemu_mac),
            mac("service", "out")
        )
    );
    assert_eq!(
        config.vms[0].cmdline,
        format!("stratum.dhcp={}", mac("web", "out"))
    );
    assert_eq!(config.vms[1].cmdline, "");
    // The QEMU NIC's transport, passed through: page 1, SPI 31.
    assert_eq!(
        svc.devices,
        [DeviceConfig {
            name: "virtio_mmio".into(),
            compatible: vec!["virtio,mmio".into()],
            base: 0x0A00_1000,
            size: 0x1000,
            interrupts: vec![31],
        }]
    );
    let summary = config.summary();
    for needle in [
        "network \"out\": \"web\"",
        "uplink \"out\": bridged by \"service\" to QEMU's user-mode network (virtio-mmio-bus.15, SPI 31, ",
        "DHCP 10.0.2.15 for the first VM, the host at 10.0.2.2",
        "note: added service VM \"service\" to bridge the uplink: Debian, 1 vCPU, 256 MiB RAM",
    ] {
        assert!(summary.contains(needle), "missing {needle:?} in\n{summary}");
    }
    // The bundle carries the NICs and the page, and QEMU gets the NIC.
    let bytes = crate::kernel::build_bundle(&config, 0, [0; 16]).expect("bundle");
    assert_eq!(config.bundle_size(), bytes.len() as u64);
    let b = Bundle::parse(&bytes).expect("the hypervisor's parser takes it");
    let dev = b.device(0).expect("the uplink's page");
    assert_eq!((dev.vm, dev.base, dev.spis()), (2, 0x0A00_1000, &[31][..]));
    let plan = crate::qemu::RunPlan::new(&config, "qemu".into(), "/t/s.img".into());
    assert_eq!(
        plan.uplink,
        Some(crate::qemu::QemuUplink {
            transport: 15,
            mac: qemu_mac,
            forwards: Vec::new(),
        })
    );
}

#[test]
fn a_named_service_vm_joins_once_listed_or_not() {
    let fx = Fixture::new();
    let svc =
        "[[vm]]\nname = \"svc\"\nkernel = \"small.Image\"\nmemory = \"16M\"\nrole = \"service\"\n";
    for vms in ["[\"web\"]", "[\"svc\", \"web\"]"] {
        let text = format!(
            "{}{svc}[[network]]\nname = \"up\"\nvms = {vms}\nuplink = true\n",
            linux_vm("web")
        );
        let config = valid(&fx, &text);
        assert!(!config.service_added);
        let on: Vec<usize> = config.networks[0].nics.iter().map(|n| n.vm).collect();
        assert_eq!(on.len(), 2, "{vms}");
        assert!(on.contains(&0) && on.contains(&1), "{vms}");
        assert!(
            config.vms[1].cmdline.ends_with(&format!(
                "stratum.uplink={},{}",
                Mac(uplink_mac("svc", "up")),
                mac("svc", "up")
            )),
            "{}",
            config.vms[1].cmdline
        );
        assert!(config.service_note().is_none());
    }
}

#[test]
fn the_uplink_shares_page_1_with_disks_8_to_10_and_takes_the_twelfth_disks_place() {
    let fx = Fixture::new();
    for v in ["a", "b", "c"] {
        for k in 0..4 {
            fx.dir.write(&format!("{v}{k}.img"), &[0u8; 512]);
        }
    }
    // Three VMs with four disks each at most, `count` in all; all on the
    // uplink.
    let text = |count: usize| {
        let mut t = String::new();
        for (i, v) in ["a", "b", "c"].iter().enumerate() {
            t += &format!("[[vm]]\nname = \"{v}\"\nkernel = \"raw.bin\"\nmemory = \"4M\"\n");
            for k in 0..count.saturating_sub(4 * i).min(4) {
                t += &format!("[[vm.disk]]\nimage = \"{v}{k}.img\"\n");
            }
        }
        t + "[[network]]\nname = \"up\"\nvms = [\"a\", \"b\", \"c\"]\nuplink = true\n"
    };
    let config = valid(&fx, &text(11));
    let svc = config.service.expect("added");
    let pages: Vec<(u64, Vec<u32>)> = config.vms[svc]
        .devices
        .iter()
        .map(|d| (d.base, d.interrupts.clone()))
        .collect();
    assert_eq!(
        pages,
        [
            (0x0A00_3000, vec![40, 41, 42, 43]),
            (0x0A00_2000, vec![32, 33, 34, 35]),
            (0x0A00_1000, vec![24, 25, 26, 31]),
        ]
    );
    assert_eq!(
        config
            .service_note()
            .map(|n| n.contains("to serve the disks and bridge the uplink")),
        Some(true)
    );
    let msg = error(&fx, &text(12));
    assert!(
        msg.contains(
            "vm[2].disk[3]: more than 11 disks: with an uplink the service VM serves at most 11"
        ) && msg.contains("the uplink's QEMU NIC takes one of page 8-15's"),
        "{msg}"
    );
}

#[test]
fn uplink_mistakes_are_all_reported_with_their_fields() {
    let fx = Fixture::new();
    let text = r#"[[vm]]
name = "a"
kernel = "raw.bin"
memory = "4M"

[[vm]]
name = "svc"
kernel = "small.Image"
memory = "16M"
role = "service"

[[network]]
name = "one"
vms = ["a"]
uplink = true

[[network]]
name = "two"
vms = ["a", "svc"]
uplink = true

[[network]]
name = "three"
vms = ["svc"]
uplink = false

[[network]]
name = "four"
vms = ["a", "svc"]
uplnk = true
"#;
    let msg = error(&fx, text);
    assert_all_reported(
        &msg,
        &[
            (
                "20:10",
                "network[1].uplink: a second uplink network: network[0] is the uplink, and a system has one at most",
            ),
            (
                "24:7",
                "network[2].vms: 1 VMs: a network connects two or more",
            ),
            (
                "30:1",
                "network[3]: unknown field `uplnk`: did you mean `uplink`?",
            ),
        ],
    );
    // An uplink network of the service VM alone, or of nobody.
    for vms in ["[\"svc\"]", "[]"] {
        let text = format!(
            "{}[[vm]]\nname = \"svc\"\nkernel = \"small.Image\"\nmemory = \"16M\"\nrole = \"service\"\n\
             [[network]]\nname = \"up\"\nvms = {vms}\nuplink = true\n",
            VM_A
        );
        let msg = error(&fx, &text);
        assert_all_reported(
            &msg,
            &[(
                "12:7",
                "network[0].vms: an uplink network lists the VMs that reach the outside through the service VM: name one or more besides it",
            )],
        );
    }
}

#[test]
fn an_uplink_needs_virt_and_room_for_the_service_vm() {
    let fx = Fixture::new();
    let net = "[[network]]\nname = \"up\"\nvms = [\"a\"]\nuplink = true\n";
    let text = format!("[machine]\nboard = \"zcu102\"\n{}{net}", VM_A);
    let msg = error(&fx, &text);
    assert!(
        msg.contains("x.toml:10:10: network[0].uplink: the uplink is a QEMU virtio-net device on virt's virtio-mmio transports")
            && msg.contains("the zcu102 has no virtio-mmio transports: run the uplink on virt"),
        "{msg}"
    );
    // Moved there by --board.
    let mut config = valid(&fx, &format!("{}{net}", VM_A));
    let e = config
        .override_machine(Some(Board::Zcu102), None, None)
        .expect_err("no virtio-mmio on the board");
    assert!(
        e.to_string()
            .contains("board zcu102: the uplink is a QEMU virtio-net device"),
        "{e}"
    );
    // Sixteen VMs: no room to add the service VM.
    let text = format!(
        "{}[[network]]\nname = \"up\"\nvms = [\"v0\"]\nuplink = true\n",
        vm_names(16, "4M")
    );
    let msg = error(&fx, &text);
    assert!(
        msg.contains(
            "x.toml:65:1: the uplink needs a service VM, and the config already has 16 VMs"
        ),
        "{msg}"
    );
    // The service VM already on six networks cannot join a seventh.
    let mut text = format!(
        "{}{}[[vm]]\nname = \"svc\"\nkernel = \"small.Image\"\nmemory = \"16M\"\nrole = \"service\"\n",
        VM_A, VM_B
    );
    for k in 0..6 {
        text += &format!("[[network]]\nname = \"n{k}\"\nvms = [\"b\", \"svc\"]\n");
    }
    text += "[[network]]\nname = \"up\"\nvms = [\"a\"]\nuplink = true\n";
    let msg = error(&fx, &text);
    assert!(
        msg.contains("network[6].vms: the service VM \"svc\" joins the uplink network, and would be on more than 6 networks"),
        "{msg}"
    );
}

#[test]
fn the_uplink_page_counts_among_the_service_vms_devices() {
    let fx = Fixture::new();
    let devices: String = (0..4)
        .map(|k| {
            format!(
                "[[vm.device]]\nname = \"d{k}\"\ncompatible = \"x,y\"\nreg = [{:#x}, 0x1000]\n",
                0x0900_0000 + 0x10_0000 * k
            )
        })
        .collect();
    let text = format!(
        "{}[[vm]]\nname = \"svc\"\nkernel = \"small.Image\"\nmemory = \"16M\"\nrole = \"service\"\n{devices}\
         [[network]]\nname = \"up\"\nvms = [\"a\"]\nuplink = true\n",
        VM_A
    );
    let msg = error(&fx, &text);
    assert!(
        msg.contains(
            "vm[1].role: the service VM has 4 passthrough devices and the uplink needs 1 more"
        ),
        "{msg}"
    );
}

#[test]
fn net_user_from_flags_puts_the_vm_on_an_uplink_and_stops_with_it() {
    let fx = Fixture::new();
    let calls = Cell::new(0);
    let flags = VmFlags {
        kernel: fx.dir.path().join("small.Image"),
        memory: Some("16M".into()),
        ..VmFlags::default()
    };
    let net = NetFlags {
        user: true,
        forwards: vec![forward(18080, 8080), forward(2222, 22)],
    };
    let config =
        Config::from_flags_net_with(&flags, &net, &mut fake_debian(&fx, &calls)).expect("valid");
    assert_eq!(calls.get(), 1, "the service VM is Debian");
    assert_eq!((config.service, config.service_added), (Some(1), true));
    assert_eq!(config.system.stop, StopPolicy::Any);
    assert_eq!(config.networks[0].name, "uplink");
    let uplink = config.uplink.as_ref().expect("an uplink");
    assert_eq!(uplink.forwards, net.forwards);
    assert_eq!(
        config.vms[0].cmdline,
        format!("stratum.dhcp={}", mac("small", "uplink"))
    );
    let summary = config.summary();
    for needle in [
        "forward 127.0.0.1:18080 -> 10.0.2.15:8080 (TCP)",
        "forward 127.0.0.1:2222 -> 10.0.2.15:22 (TCP)",
    ] {
        assert!(summary.contains(needle), "missing {needle:?} in\n{summary}");
    }
    let plan = crate::qemu::RunPlan::new(&config, "qemu".into(), "/t/s.img".into());
    assert_eq!(plan.uplink.expect("a NIC").forwards, net.forwards);

    // --forward without an uplink; a host port twice.
    let msg = Config::from_flags_net_with(
        &flags,
        &NetFlags {
            user: false,
            forwards: vec![forward(8080, 80)],
        },
        &mut fake_debian(&fx, &calls),
    )
    .expect_err("no uplink")
    .to_string();
    assert!(
        msg.starts_with("--forward: the system has no uplink: add --net user"),
        "{msg}"
    );
    let msg = Config::from_flags_net_with(
        &flags,
        &NetFlags {
            user: true,
            forwards: vec![forward(8080, 80), forward(8080, 81)],
        },
        &mut fake_debian(&fx, &calls),
    )
    .expect_err("twice")
    .to_string();
    assert!(
        msg.contains("--forward: host port 8080 is forwarded twice"),
        "{msg}"
    );
    // Without --net, nothing changes.
    let config = Config::from_flags_with(&flags, &mut fake_debian(&fx, &calls)).expect("valid");
    assert_eq!((config.vms.len(), config.uplink.is_none()), (1, true));
}

#[test]
fn net_user_goes_to_a_configs_only_vm() {
    let fx = Fixture::new();
    let user = FileFlags {
        net: NetFlags {
            user: true,
            forwards: vec![forward(8080, 80)],
        },
        ..FileFlags::default()
    };
    // One VM (besides a service VM) and a network named "uplink": the new
    // network takes the next free name.
    let text = format!(
        "{}{}[[vm]]\nname = \"svc\"\nkernel = \"small.Image\"\nmemory = \"16M\"\nrole = \"service\"\n\
         [[network]]\nname = \"uplink\"\nvms = [\"web\", \"svc\"]\n",
        linux_vm("web"),
        ""
    );
    let config = parse_flags(&fx, &text, &user).expect("valid");
    assert_eq!(config.networks[1].name, "uplink2");
    assert_eq!(config.uplink.as_ref().map(|u| u.network), Some(1));
    assert_eq!(config.uplink.expect("uplink").forwards, user.net.forwards);
    // Several: --net cannot choose.
    let msg = parse_flags(&fx, &format!("{}{}", VM_A, VM_B), &user)
        .expect_err("ambiguous")
        .to_string();
    assert!(
        msg.contains("--net: ")
            && msg.contains("x.toml has 2 VMs besides the service VM (\"a\", \"b\")")
            && msg.contains("put the VMs on a [[network]] with uplink = true instead"),
        "{msg}"
    );
    // An uplink already.
    let text = format!(
        "{}[[network]]\nname = \"out\"\nvms = [\"a\"]\nuplink = true\n",
        VM_A
    );
    let msg = parse_flags(&fx, &text, &user)
        .expect_err("two uplinks")
        .to_string();
    assert!(
        msg.contains("--net: ") && msg.contains("x.toml already has an uplink network \"out\""),
        "{msg}"
    );
    // The config's own uplink takes --forward.
    let forwards = FileFlags {
        net: NetFlags {
            user: false,
            forwards: vec![forward(8080, 80)],
        },
        ..FileFlags::default()
    };
    let config = parse_flags(&fx, &text, &forwards).expect("valid");
    assert_eq!(
        config.uplink.expect("uplink").forwards,
        forwards.net.forwards
    );
    // But not with two VMs on it: which one holds 10.0.2.15 is a race.
    let text = format!(
        "{}{}[[network]]\nname = \"out\"\nvms = [\"a\", \"b\"]\nuplink = true\n",
        VM_A, VM_B
    );
    let msg = parse_flags(&fx, &text, &forwards)
        .expect_err("two frontends")
        .to_string();
    assert!(
        msg.contains(
            "--forward: the uplink network \"out\" has 2 VMs besides the service VM (\"a\", \"b\")"
        ) && msg.contains("needs exactly one"),
        "{msg}"
    );
}

#[test]
fn a_system_image_refuses_an_uplink() {
    let fx = Fixture::new();
    let config = valid(
        &fx,
        &format!(
            "{}[[network]]\nname = \"up\"\nvms = [\"a\"]\nuplink = true\n",
            VM_A
        ),
    );
    let out = fx.dir.path().join("system.img");
    let e = crate::sysimg::build(&config, Some(Path::new("/nonexistent")), false, &out)
        .expect_err("no uplink in an image");
    assert!(
        e.to_string()
            .contains("a system image cannot bring its uplink"),
        "{e}"
    );
    assert_eq!(e.exit_code(), crate::exit_code::BAD_INPUT);
    assert!(!out.exists());
}
