//! The uplink (`[[network]] uplink = true`, `stratum run --net user`): the
//! one network whose VMs reach the outside through the service VM (issue
//! 12).
//!
//! The service VM joins the uplink network (its NIC there is an ordinary
//! port of the hypervisor's switch) and owns a second NIC: under QEMU, a
//! `virtio-net-device` on QEMU's user-mode network (`-netdev user`),
//! passed through to it on `virt`'s transport [`UPLINK_TRANSPORT`]. Its
//! init bridges the two with the kernel's bridge, so the frontends' frames
//! reach QEMU's network as they are: each frontend takes its own DHCP
//! lease there (10.0.2.15 for the first), reaches the host at 10.0.2.2,
//! and `--forward HOSTPORT:GUESTPORT` makes QEMU listen on
//! 127.0.0.1:HOSTPORT and connect to the frontend's GUESTPORT.
//!
//! Layout, fixed so that a reader can predict it:
//! - the passed-through NIC is QEMU's `virtio-mmio-bus.15` (0x0A001E00,
//!   SPI 31): the last transport of the page that carries disks 8 to 10,
//!   whose passthrough device gets its SPI beside theirs. A page's device
//!   has at most four SPIs, so with an uplink the service VM serves at
//!   most 11 disks ([`super::disks`]);
//! - its MAC is derived like a NIC's ([`uplink_mac`]), from the service
//!   VM's name and `<network>/uplink` (no network is named so);
//! - the service VM's kernel command line gets [`UPLINK_PARAM`]`=<that
//!   MAC>,<its MAC on the uplink network>`, on which its init bridges the
//!   NICs with those MACs; each Linux frontend's gets
//!   [`DHCP_PARAM`]`=<its MAC on the uplink network>`, on which its init
//!   configures that NIC by DHCP (a bare-metal frontend's command line is
//!   left alone: it configures its NIC itself).

use std::collections::HashSet;
use std::path::Path;

use stratum_abi::bundle;
use stratum_core::image::KernelInfo;
use stratum_virtio::net::{Mac, derive_mac};
use toml::Spanned;

use super::raw::{Diagnostics, RawConfig, RawNetwork};
use super::*;

/// The `virt` transport of the uplink's QEMU NIC, passed through to the
/// service VM: QEMU's `virtio-mmio-bus.15`.
pub const UPLINK_TRANSPORT: u32 = 15;
/// The service VM's kernel command-line word: `stratum.uplink=<MAC of the
/// passed-through NIC>,<MAC of its NIC on the uplink network>`.
pub const UPLINK_PARAM: &str = "stratum.uplink";
/// A Linux frontend's kernel command-line word: `stratum.dhcp=<MAC of its
/// NIC on the uplink network>`.
pub const DHCP_PARAM: &str = "stratum.dhcp";
/// The name of the network `--net user` adds (or `uplink2`, … when a
/// network has it).
pub const FLAG_NETWORK_NAME: &str = "uplink";
/// The address QEMU's DHCP server gives its first client, where a
/// forwarded port leads.
pub const FIRST_LEASE: &str = "10.0.2.15";

const _: () = assert!(UPLINK_TRANSPORT < bundle::VIRTIO_TRANSPORTS);

/// Whether a network as written is the uplink.
pub(super) fn is_uplink(net: &RawNetwork) -> bool {
    net.uplink.as_ref().is_some_and(|u| *u.get_ref())
}

/// The MAC of the uplink's passed-through NIC: derived from the service
/// VM's name and `<network>/uplink`, which names no network (a `/` is not
/// allowed in a name).
pub fn uplink_mac(service: &str, network: &str) -> [u8; 6] {
    derive_mac(service, &format!("{network}/uplink")).0
}

/// `stratum run --forward HOSTPORT:GUESTPORT`: QEMU listens on
/// 127.0.0.1:`host` and connects each client to the frontend's `guest`
/// port (TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The port on the host's loopback.
    pub host: u16,
    /// The frontend's port.
    pub guest: u16,
}

impl std::str::FromStr for Forward {
    type Err = String;

    /// `HOSTPORT:GUESTPORT`, each 1 to 65535.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (host, guest) = s
            .split_once(':')
            .ok_or_else(|| "expected HOSTPORT:GUESTPORT, e.g. 8080:80".to_owned())?;
        let port = |p: &str, which: &str| match p.trim().parse::<u32>() {
            Ok(n @ 1..=65535) => Ok(n as u16),
            Ok(n) => Err(format!("{which} port {n}: a port is 1 to 65535")),
            Err(_) => Err(format!(
                "{which} port {p:?} is not a number: expected HOSTPORT:GUESTPORT, e.g. 8080:80"
            )),
        };
        Ok(Self {
            host: port(host, "host")?,
            guest: port(guest, "guest")?,
        })
    }
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.guest)
    }
}

/// The uplink, validated and resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkConfig {
    /// The uplink network's index in [`Config::networks`].
    pub network: usize,
    /// The `virt` transport of its QEMU NIC in the service VM
    /// ([`UPLINK_TRANSPORT`]): QEMU's `virtio-mmio-bus.<N>`.
    pub transport: u32,
    /// That NIC's MAC ([`uplink_mac`]).
    pub mac: [u8; 6],
    /// The forwarded ports (`--forward`), in the order given.
    pub forwards: Vec<Forward>,
}

/// Whether the config as written has an uplink network.
pub(super) fn has_uplink(raw: &[Spanned<RawNetwork>]) -> bool {
    raw.iter().any(|n| is_uplink(n.get_ref()))
}

/// A network for `--net user`: `name`, the VM `vm`, `uplink = true`, its
/// problems the flag's.
pub(super) fn flag_network(name: String, vm: String) -> Spanned<RawNetwork> {
    let none = 0..0;
    Spanned::new(
        none.clone(),
        RawNetwork {
            name: Some(Spanned::new(none.clone(), name)),
            vms: Some(Spanned::new(
                none.clone(),
                vec![Spanned::new(none.clone(), vm)],
            )),
            uplink: Some(Spanned::new(none, true)),
            flag: true,
        },
    )
}

/// A network name of `raw` does not have: [`FLAG_NETWORK_NAME`], or
/// `uplink2`, ….
pub(super) fn free_network_name(raw: &[Spanned<RawNetwork>]) -> String {
    let taken: HashSet<&str> = raw
        .iter()
        .filter_map(|n| n.get_ref().name.as_ref().map(|v| v.get_ref().as_str()))
        .collect();
    std::iter::once(FLAG_NETWORK_NAME.to_owned())
        .chain((2..).map(|k| format!("{FLAG_NETWORK_NAME}{k}")))
        .find(|n| !taken.contains(n.as_str()))
        .expect("an unbounded sequence of names has a free one")
}

/// `--net user` on a config file: puts the config's one VM besides a
/// service VM (`vm`, its name) on a new uplink network, unless the config
/// has one already.
pub(super) fn add_flag_network(raw: &mut RawConfig, vm: String, path: &Path) -> Result<()> {
    if let Some(net) = raw.network.iter().find(|n| is_uplink(n.get_ref())) {
        let name = net
            .get_ref()
            .name
            .as_ref()
            .map_or_else(String::new, |n| format!(" {:?}", n.get_ref()));
        return Err(Error::input(format!(
            "--net: {} already has an uplink network{name}: put the VM on it instead of giving --net user",
            path.display()
        )));
    }
    let name = free_network_name(&raw.network);
    raw.network.push(flag_network(name, vm));
    Ok(())
}

/// Resolves the uplink once the networks and the service VM are: refused
/// on a board without `virt`'s virtio-mmio transports; otherwise the
/// service VM's and the Linux frontends' kernel command lines get their
/// words (see the module docs). `None` without an uplink network.
pub(super) fn resolve_uplink(
    d: &mut Diagnostics<'_>,
    raw: &[Spanned<RawNetwork>],
    vms: &mut [VmConfig],
    networks: &[NetworkConfig],
    service: Option<usize>,
    board: Board,
) -> Option<UplinkConfig> {
    let network = networks.iter().position(|n| n.uplink)?;
    let net = &networks[network];
    let at = raw
        .iter()
        .position(|n| is_uplink(n.get_ref()))
        .expect("the uplink network was written so");
    let (span, field) = if raw[at].get_ref().flag {
        (None, "--net".to_owned())
    } else {
        (
            raw[at].get_ref().uplink.as_ref().map(Spanned::span),
            format!("network[{at}].uplink"),
        )
    };
    if board != Board::Virt {
        d.push(span, &field, no_uplink_on(board));
        return None;
    }
    let s = service?;
    let own = net.nics.iter().find(|nic| nic.vm == s)?;
    let mac = uplink_mac(&vms[s].name, &net.name);
    if let Some(nic) = net.nics.iter().find(|nic| nic.mac == mac) {
        d.push(
            span,
            &field,
            format!(
                "the derived MAC of the uplink's QEMU NIC collides with {:?}'s on {:?}: rename one",
                vms[nic.vm].name, net.name
            ),
        );
        return None;
    }
    let words = format!("{UPLINK_PARAM}={},{}", Mac(mac), Mac(own.mac));
    append_word(&mut vms[s].cmdline, &words);
    for nic in net.nics.iter().filter(|nic| nic.vm != s) {
        let vm = &mut vms[nic.vm];
        if matches!(vm.kernel_summary.info, KernelInfo::LinuxImage { .. }) {
            append_word(&mut vm.cmdline, &format!("{DHCP_PARAM}={}", Mac(nic.mac)));
        }
    }
    Some(UplinkConfig {
        network,
        transport: UPLINK_TRANSPORT,
        mac,
        forwards: Vec::new(),
    })
}

fn append_word(cmdline: &mut String, word: &str) {
    if !cmdline.trim().is_empty() {
        cmdline.push(' ');
    }
    cmdline.push_str(word);
}

/// Why `board` (not `virt`) cannot have an uplink.
pub(super) fn no_uplink_on(board: Board) -> String {
    format!(
        "the uplink is a QEMU virtio-net device on virt's virtio-mmio transports, passed through to the \
         service VM, and the {} has no virtio-mmio transports: run the uplink on virt",
        board.name()
    )
}

/// Gives `config` the command line's `--forward`s: they need an uplink
/// whose network has exactly one VM besides the service VM (the one
/// holding QEMU's first lease, [`FIRST_LEASE`], where QEMU forwards), and
/// each host port once.
pub(super) fn apply_forwards(config: &mut Config, forwards: &[Forward]) -> Result<()> {
    if forwards.is_empty() {
        return Ok(());
    }
    let Some(uplink) = &mut config.uplink else {
        return Err(Error::input(
            "--forward: the system has no uplink: add --net user (or uplink = true on a [[network]] \
             of the config), so that a VM reaches QEMU's user-mode network",
        ));
    };
    let net = &config.networks[uplink.network];
    let frontends: Vec<String> = net
        .nics
        .iter()
        .filter(|nic| Some(nic.vm) != config.service)
        .map(|nic| format!("{:?}", config.vms[nic.vm].name))
        .collect();
    if frontends.len() != 1 {
        return Err(Error::input(format!(
            "--forward: the uplink network {:?} has {} VMs besides the service VM ({}): QEMU forwards a \
             port to the first DHCP lease ({FIRST_LEASE}), which any of them may hold, so --forward \
             needs exactly one",
            net.name,
            frontends.len(),
            frontends.join(", ")
        )));
    }
    let mut seen = HashSet::new();
    for f in forwards {
        if !seen.insert(f.host) {
            return Err(Error::input(format!(
                "--forward: host port {} is forwarded twice: give each host port once",
                f.host
            )));
        }
    }
    uplink.forwards = forwards.to_vec();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_with_clear_errors() {
        assert_eq!(
            "8080:80".parse::<Forward>(),
            Ok(Forward {
                host: 8080,
                guest: 80
            })
        );
        assert_eq!(
            "65535:1".parse::<Forward>().map(|f| f.to_string()),
            Ok("65535:1".into())
        );
        for (bad, says) in [
            ("8080", "expected HOSTPORT:GUESTPORT"),
            ("0:80", "host port 0: a port is 1 to 65535"),
            ("8080:65536", "guest port 65536: a port is 1 to 65535"),
            ("http:80", "host port \"http\" is not a number"),
            ("8080:", "guest port \"\" is not a number"),
            ("-1:80", "host port \"-1\" is not a number"),
        ] {
            let e = bad.parse::<Forward>().expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_uplink_nic_is_on_page_1_clear_of_the_disks_there() {
        let page = UPLINK_TRANSPORT * bundle::VIRTIO_STRIDE as u32 / bundle::PAGE_SIZE as u32;
        assert_eq!(page, 1);
        let disks: Vec<u32> = (0..super::super::MAX_SERVED_DISKS)
            .filter_map(super::super::service_transport)
            .collect();
        assert!(!disks.contains(&UPLINK_TRANSPORT));
    }

    #[test]
    fn the_uplink_mac_is_no_nic_of_its_network() {
        let mac = uplink_mac("service", "uplink");
        assert_ne!(mac, derive_mac("service", "uplink").0);
        assert_eq!(mac, uplink_mac("service", "uplink"), "stable");
        assert_eq!(mac[0] & 1, 0, "unicast");
        assert_eq!(mac[0] & 2, 2, "locally administered");
    }
}
