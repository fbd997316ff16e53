//! Paravirtual devices: `[[network]]` (a virtual switch and the NICs of
//! the VMs on it), per-VM `vsock = true` with `[[vsock]]` pairs allowed to
//! connect (deny by default), and per-VM `virtio_console`.
//!
//! Each is checked on its own, then resolved: a NIC's MAC is derived from
//! the VM and network names ([`stratum_virtio::net::derive_mac`]), a
//! vsock device's CID is [`bundle::VSOCK_CID_BASE`] + the VM's index, and
//! each device gets a fixed transport in its VM (console 0, vsock 1, NICs
//! from 2 in network order). Every VM has the 32 transports but those a
//! passthrough device takes: the eight of each 4 KiB page its registers
//! overlap, and each whose SPI it uses (the hypervisor drops them). So a
//! VM's passthrough devices must stay off the pages and SPIs of the
//! transports carrying its virtio devices, and its RAM off their window.

use std::collections::HashMap;

use stratum_abi::bundle;
use toml::Spanned;

use super::partition::{VmPlan, check_name, overlaps, span_of, window};
use super::raw::{Diagnostics, RawNetwork, RawVm, RawVsock};
use super::*;

/// The transport of a VM's virtio-console.
pub const CONSOLE_TRANSPORT: u32 = 0;
/// The transport of a VM's vsock device.
pub const VSOCK_TRANSPORT: u32 = 1;
/// The transport of a VM's first NIC; the next ones follow.
pub const FIRST_NIC_TRANSPORT: u32 = 2;
/// Most networks one VM may be on (the transports of its console and
/// vsock device aside, within the bundle's per-VM limit).
pub const NETWORKS_PER_VM: usize = bundle::VIRTIO_PER_VM - 2;

/// The quoted names, comma-separated.
fn listed(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A VM list as written: each known and listed once; their indexes.
fn vm_list(
    d: &mut Diagnostics<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    field: &str,
    names: &[String],
) -> Vec<usize> {
    let mut out = Vec::new();
    for v in list.get_ref() {
        match names.iter().position(|n| n == v.get_ref()) {
            Some(vm) if out.contains(&vm) => {
                d.at(v, field, format!("{:?} is listed twice", v.get_ref()))
            }
            Some(vm) => out.push(vm),
            None => d.at(
                v,
                field,
                format!(
                    "unknown VM {:?}: the VMs are {}",
                    v.get_ref(),
                    listed(names)
                ),
            ),
        }
    }
    out
}

/// Checks the `[[network]]` tables and resolves each NIC; `names` are the
/// VM names by index. The uplink network (`uplink = true`, one at most)
/// lists one VM or more besides the service VM (`service`), which joins
/// it last when the table does not name it ([`super::uplink`]).
pub(super) fn networks(
    d: &mut Diagnostics<'_>,
    raw: &[Spanned<RawNetwork>],
    names: &[String],
    service: Option<usize>,
) -> Vec<NetworkConfig> {
    let mut out: Vec<NetworkConfig> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut on = vec![0usize; names.len()];
    let mut uplink_at: Option<usize> = None;
    if raw.len() > bundle::MAX_NETWORKS as usize {
        d.at(
            &raw[bundle::MAX_NETWORKS as usize],
            &format!("network[{}]", bundle::MAX_NETWORKS),
            format!(
                "{} networks: at most {} are supported",
                raw.len(),
                bundle::MAX_NETWORKS
            ),
        );
    }
    for (k, net) in raw.iter().enumerate() {
        // A network `--net user` added: its problems are the flag's.
        let flag = net.get_ref().flag;
        let f = |key: &str| {
            if flag {
                "--net".to_owned()
            } else {
                format!("network[{k}].{key}")
            }
        };
        let table = (!flag).then(|| net.span());
        let net = net.get_ref();
        let errors = d.messages.len();
        let uplink = super::uplink::is_uplink(net);
        if let Some(v) = net.uplink.as_ref().filter(|_| uplink) {
            match uplink_at {
                Some(first) => d.push(
                    Some(v.span()).filter(|_| !flag),
                    &f("uplink"),
                    format!(
                        "a second uplink network: {} is the uplink, and a system has one at most \
                         (put every VM that reaches the outside on it)",
                        if raw[first].get_ref().flag {
                            "--net user's".to_owned()
                        } else {
                            format!("network[{first}]")
                        }
                    ),
                ),
                None => uplink_at = Some(k),
            }
        }
        let name = match &net.name {
            None => {
                d.push(
                    table.clone(),
                    &f("name"),
                    "missing: every network needs a name",
                );
                String::new()
            }
            Some(v) => {
                if check_name(d, v, &f("name"), "network", "")
                    && let Some(first) = seen.insert(v.get_ref().clone(), k)
                {
                    d.at(
                        v,
                        &f("name"),
                        format!(
                            "duplicate network name {:?} (also network[{first}])",
                            v.get_ref()
                        ),
                    );
                }
                v.get_ref().clone()
            }
        };
        let vms = match &net.vms {
            None => {
                d.push(
                    table,
                    &f("vms"),
                    "missing: a network lists the VMs on it, vms = [\"a\", \"b\"]",
                );
                Vec::new()
            }
            Some(list) => {
                let mut vms = vm_list(d, list, &f("vms"), names);
                let frontends = vms.iter().filter(|&&vm| Some(vm) != service).count();
                if uplink && list.get_ref().len() == vms.len() && frontends == 0 {
                    d.push(
                        Some(list.span()).filter(|_| !flag),
                        &f("vms"),
                        "an uplink network lists the VMs that reach the outside through the service VM: \
                         name one or more besides it",
                    );
                } else if uplink && let Some(s) = service.filter(|s| !vms.contains(s)) {
                    // The service VM bridges the uplink: it joins, last.
                    vms.push(s);
                    on[s] += 1;
                    if on[s] == NETWORKS_PER_VM + 1 {
                        d.push(
                            Some(list.span()).filter(|_| !flag),
                            &f("vms"),
                            format!(
                                "the service VM {:?} joins the uplink network, and would be on more than \
                                 {NETWORKS_PER_VM} networks",
                                names[s]
                            ),
                        );
                    }
                }
                if !uplink && list.get_ref().len() < 2 {
                    d.at(
                        list,
                        &f("vms"),
                        format!(
                            "{} VMs: a network connects two or more",
                            list.get_ref().len()
                        ),
                    );
                }
                for (&vm, v) in vms.iter().zip(list.get_ref()) {
                    on[vm] += 1;
                    if on[vm] == NETWORKS_PER_VM + 1 {
                        d.push(
                            Some(v.span()).filter(|_| !flag),
                            &f("vms"),
                            format!("{:?} is on more than {NETWORKS_PER_VM} networks", names[vm]),
                        );
                    }
                }
                vms
            }
        };
        if d.messages.len() != errors {
            continue;
        }
        let mut nics: Vec<NicConfig> = Vec::new();
        for &vm in &vms {
            let mac = stratum_virtio::net::derive_mac(&names[vm], &name).0;
            if let Some(other) = nics.iter().find(|n| n.mac == mac) {
                d.push(
                    span_of(&net.vms).filter(|_| !flag),
                    &f("vms"),
                    format!(
                        "the derived MACs of {:?} and {:?} on {name:?} collide: rename one",
                        names[other.vm], names[vm]
                    ),
                );
            }
            let earlier = out
                .iter()
                .filter(|n| n.nics.iter().any(|nic| nic.vm == vm))
                .count() as u32;
            nics.push(NicConfig {
                vm,
                mac,
                transport: FIRST_NIC_TRANSPORT + earlier,
            });
        }
        out.push(NetworkConfig { name, nics, uplink });
    }
    out
}

/// Whether VM `i` asked for a vsock device (the service VM always has
/// one), and for a virtio-console (default: only a Debian VM has one).
pub(super) fn vm_switches(vm: &RawVm) -> (bool, bool) {
    let vsock = super::disks::is_service(vm) || vm.vsock.as_ref().is_some_and(|v| *v.get_ref());
    let debian = vm.debian.as_ref().is_some_and(|v| *v.get_ref());
    let console = vm.virtio_console.as_ref().map_or(debian, |v| *v.get_ref());
    (vsock, console)
}

/// Checks the `[[vsock]]` pairs against the VMs' `vsock` switches (no
/// pair names the service VM, `service`); each VM's allowed peers.
pub(super) fn vsock_pairs(
    d: &mut Diagnostics<'_>,
    raw: &[Spanned<RawVsock>],
    names: &[String],
    has_vsock: &[bool],
    service: Option<usize>,
) -> Vec<Vec<usize>> {
    let mut peers = vec![Vec::new(); names.len()];
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    for (k, pair) in raw.iter().enumerate() {
        let field = format!("vsock[{k}].allow");
        let Some(list) = &pair.get_ref().allow else {
            d.push(
                Some(pair.span()),
                &field,
                "missing: a vsock entry allows one pair of VMs, allow = [\"a\", \"b\"]",
            );
            continue;
        };
        let errors = d.messages.len();
        let vms = vm_list(d, list, &field, names);
        if list.get_ref().len() != 2 {
            d.at(
                list,
                &field,
                format!(
                    "{} VMs: a vsock entry allows exactly one pair",
                    list.get_ref().len()
                ),
            );
        }
        for (&vm, v) in vms.iter().zip(list.get_ref()) {
            if Some(vm) == service {
                d.at(
                    v,
                    &field,
                    format!(
                        "{:?} is the service VM: its vsock device carries the hypervisor's link to the disk \
                         daemon (CID 2) and connects to no VM",
                        names[vm]
                    ),
                );
            } else if !has_vsock.get(vm).copied().unwrap_or(false) {
                d.at(
                    v,
                    &field,
                    format!(
                        "{:?} has no vsock device: add vsock = true to its [[vm]]",
                        names[vm]
                    ),
                );
            }
        }
        if d.messages.len() != errors {
            continue;
        }
        if let [a, b] = vms[..] {
            if let Some(first) = seen.insert((a.min(b), a.max(b)), k) {
                d.at(
                    list,
                    &field,
                    format!(
                        "the pair {:?} and {:?} is allowed twice (also vsock[{first}])",
                        names[a], names[b]
                    ),
                );
            }
            peers[a].push(b);
            peers[b].push(a);
        }
    }
    for p in &mut peers {
        p.sort_unstable();
        p.dedup();
    }
    peers
}

/// A VM with virtio devices has all 32 transports: its passthrough devices
/// keep off their window and SPIs, and its RAM off their window.
pub(super) fn check_clashes(
    d: &mut Diagnostics<'_>,
    vms: &[VmConfig],
    plans: &[VmPlan],
    networks: &[NetworkConfig],
    disks: &[DiskConfig],
) {
    let w = &bundle::VIRTIO_WINDOW;
    for (i, (vm, plan)) in vms.iter().zip(plans).enumerate() {
        // The transports carrying this VM's devices.
        let mut used: Vec<(u32, &str)> = Vec::new();
        if vm.virtio_console {
            used.push((CONSOLE_TRANSPORT, "virtio-console"));
        }
        if let Some(v) = &vm.vsock {
            used.push((v.transport, "vsock device"));
        }
        for nic in networks
            .iter()
            .flat_map(|n| &n.nics)
            .filter(|nic| nic.vm == i)
        {
            used.push((nic.transport, "NIC"));
        }
        for disk in disks.iter().filter(|disk| disk.vm == i) {
            used.push((disk.transport, "disk"));
        }
        if used.is_empty() {
            continue;
        }
        let ram = vm.memory_base..vm.memory_base + vm.memory;
        if overlaps(&ram, w) {
            d.push(
                plan.ram_span.clone(),
                &plan.ram_field,
                format!(
                    "RAM {} overlaps the virtio-mmio transports {} this VM has for its virtio devices",
                    window(&ram),
                    window(w)
                ),
            );
        }
        // A passthrough device takes the transports whose 4 KiB page its
        // registers overlap, or whose SPI it uses; the others stay.
        for dev in &plan.devices {
            let c = &dev.config;
            let by_pages = bundle::virtio_pages_taken(c.base, c.size);
            for &(transport, what) in used.iter().filter(|(n, _)| by_pages & (1 << n) != 0) {
                d.push(
                    dev.reg_span.clone(),
                    &format!("{}.reg", dev.field),
                    format!(
                        "[{:#x}, {:#x}) overlaps the page of virtio-mmio transport {transport} ({:#x}), which carries this VM's {what}",
                        c.base,
                        c.base + c.size,
                        w.start + bundle::VIRTIO_STRIDE * u64::from(transport)
                    ),
                );
            }
            for (&spi, span) in c.interrupts.iter().zip(&dev.irq_spans) {
                let Some(transport) = bundle::virtio_transport_of_spi(spi) else {
                    continue;
                };
                for &(_, what) in used.iter().filter(|(n, _)| *n == transport) {
                    d.push(
                        Some(span.clone()),
                        &format!("{}.interrupts", dev.field),
                        format!(
                            "SPI {spi} is virtio-mmio transport {transport}'s, which carries this VM's {what}"
                        ),
                    );
                }
            }
        }
    }
}
