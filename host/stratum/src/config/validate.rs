//! Validation: raw configuration → [`Config`], every rule checked, every
//! problem reported with its location (all at once), kernels inspected and
//! fitted into their VM's memory.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use stratum_abi::bundle;
use stratum_core::image::{self, KernelInfo};
use toml::Spanned;

use super::partition::{self, VmPlan};
use super::raw::{Diagnostics, RawConfig, RawSize, RawVm, Source};
use super::*;
use super::{channels, devices, disks, uplink, virtio};
use crate::linux::LinuxGuest;
use crate::linux::initramfs::exec_overlay;
use crate::size::{format_size, parse_size};
use crate::{Error, Result};

pub(super) fn validate(
    mut raw: RawConfig,
    mut d: Diagnostics<'_>,
    base: &Path,
    debian: &mut DebianSource<'_>,
) -> Result<Config> {
    let source = d.source;
    // Fetched once, for the first VM that asks.
    let mut fetched: Option<std::result::Result<LinuxGuest, String>> = None;
    let mut debian_guest = || {
        fetched
            .get_or_insert_with(|| debian().map_err(|e| e.to_string()))
            .clone()
    };
    let machine = raw.machine.map(Spanned::into_inner);

    let board = match machine.as_ref().and_then(|m| m.board.as_ref()) {
        None => Board::Virt,
        Some(v) => match v.get_ref().as_str() {
            "virt" => Board::Virt,
            "zcu102" => Board::Zcu102,
            other => {
                d.at(
                    v,
                    "machine.board",
                    format!("unknown board {other:?}: expected \"virt\" or \"zcu102\""),
                );
                Board::Virt
            }
        },
    };
    let gic = match machine.as_ref().and_then(|m| m.gic.as_ref()) {
        None => default_gic(board),
        Some(v) => match *v.get_ref() {
            2 => Gic::V2,
            3 => Gic::V3,
            other => {
                d.at(v, "machine.gic", format!("must be 2 or 3, not {other}"));
                Gic::V3
            }
        },
    };
    let cpu = match machine.as_ref().and_then(|m| m.cpu.as_ref()) {
        None => default_cpu(board),
        Some(v) => match v.get_ref().as_str() {
            "cortex-a57" => CpuModel::CortexA57,
            "cortex-a53" => CpuModel::CortexA53,
            "max" => CpuModel::Max,
            other => {
                d.at(
                    v,
                    "machine.cpu",
                    format!(
                        "unknown cpu {other:?}: expected \"cortex-a57\", \"cortex-a53\" or \"max\""
                    ),
                );
                CpuModel::CortexA57
            }
        },
    };
    let machine_cpus = machine
        .as_ref()
        .and_then(|m| m.cpus.as_ref())
        .and_then(|v| {
            let n = *v.get_ref();
            match u32::try_from(n) {
                Ok(n) if (1..=gic.max_cpus()).contains(&n) => Some(n),
                _ => {
                    d.at(
                        v,
                        "machine.cpus",
                        format!(
                            "{n} CPUs: QEMU virt with GICv{} takes 1 to {}",
                            gic.number(),
                            gic.max_cpus()
                        ),
                    );
                    None
                }
            }
        });
    let memory_override = machine
        .as_ref()
        .and_then(|m| m.memory.as_ref())
        .and_then(|v| {
            let bytes = size_field(&mut d, v, "machine.memory")?;
            if bytes == 0 || !bytes.is_multiple_of(MIB) {
                d.at(
                    v,
                    "machine.memory",
                    format!("{bytes:#x} bytes: host RAM must be a non-zero multiple of 1 MiB"),
                );
                return None;
            }
            if bytes > MAX_HOST_MEMORY {
                d.at(
                    v,
                    "machine.memory",
                    format!(
                        "{}: QEMU virt holds at most 255 GiB of RAM below its 256 GiB high-memory hole",
                        format_size(bytes)
                    ),
                );
                return None;
            }
            Some((bytes, v.span()))
        });

    if raw.vm.is_empty() {
        d.push(
            None,
            "",
            "no VMs: add at least one [[vm]] table with a kernel",
        );
    }
    if raw.vm.len() > MAX_VMS {
        d.at(
            &raw.vm[MAX_VMS],
            &format!("vm[{MAX_VMS}]"),
            format!("{} VMs: at most {MAX_VMS} are supported", raw.vm.len()),
        );
    }

    let system = partition::system(&mut d, raw.system.as_ref().map(Spanned::get_ref));
    // The service VM: named by its role, or added for the disks and the
    // uplink.
    let named_service = disks::service_vm(&mut d, &raw.vm);
    let added_service = match named_service {
        None => disks::add_service_vm(&mut d, &mut raw.vm, &raw.network),
        Some(_) => None,
    };
    let has_uplink = uplink::has_uplink(&raw.network);
    let service = named_service.or(added_service);

    let mut vms = Vec::new();
    let mut plans: Vec<VmPlan> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    // Whether every VM's shape (name, vCPUs, RAM) is known: the rules
    // between VMs need it, but not its files.
    let mut shapes_known = true;
    // Where the next identity-mapped VM without a `memory_base` goes: above
    // the least boot area; `place_identity_defaults` moves them above the
    // real one once the bundle's size is known.
    let mut identity_cursor = boot_area_end(0);
    for (i, vm) in raw.vm.iter().enumerate().take(MAX_VMS) {
        let vcpus = vm
            .get_ref()
            .cpus
            .as_ref()
            .map_or(Some(1), |v| u32::try_from(*v.get_ref()).ok())
            .filter(|n| (1..=MAX_VCPUS).contains(n));
        let plan = partition::vm_plan(&mut d, i, vm, vcpus);
        if let Some(name) = &vm.get_ref().name {
            if let Some(first) = names.get(name.get_ref()) {
                d.at(
                    name,
                    &format!("vm[{i}].name"),
                    format!("duplicate VM name {:?} (also vm[{first}])", name.get_ref()),
                );
            } else {
                names.insert(name.get_ref().clone(), i);
            }
        }
        let is_service = service == Some(i);
        match validate_vm(
            &mut d,
            i,
            vm,
            base,
            &mut debian_guest,
            &mut identity_cursor,
            is_service,
        ) {
            Some(mut v) => {
                v.placement = plan.placement;
                v.on_crash = plan.on_crash;
                v.devices = plan.devices.iter().map(|p| p.config.clone()).collect();
                vms.push(v);
            }
            None => shapes_known = false,
        }
        plans.push(plan);
    }
    let all_names: Vec<String> = raw
        .vm
        .iter()
        .enumerate()
        .map(|(i, vm)| {
            vm.get_ref()
                .name
                .as_ref()
                .map_or_else(|| format!("vm{i}"), |n| n.get_ref().clone())
        })
        .collect();
    let channel_plans = channels::channel_plans(&mut d, &raw.channel, &all_names);
    let networks = virtio::networks(&mut d, &raw.network, &all_names, service);
    let switches: Vec<(bool, bool)> = raw
        .vm
        .iter()
        .map(|vm| virtio::vm_switches(vm.get_ref()))
        .collect();
    let has_vsock: Vec<bool> = switches.iter().map(|s| s.0).collect();
    let vsock_peers = virtio::vsock_pairs(&mut d, &raw.vsock, &all_names, &has_vsock, service);
    let planned_disks = disks::check_disks(&mut d, &raw.vm, base, service, has_uplink);

    if !shapes_known {
        return Err(Error::input(d.report()));
    }

    // Every VM's shape is known (its files may still be bad): the rules
    // between them, and the defaults.
    let cpus = partition::resolve_cpus(&mut d, &mut vms, &plans, machine_cpus, gic);
    for (i, vm) in vms.iter_mut().enumerate() {
        let (vsock, console) = switches[i];
        vm.virtio_console = console;
        vm.vsock = vsock.then(|| VsockConfig {
            cid: bundle::VSOCK_CID_BASE + i as u32,
            transport: VSOCK_TRANSPORT,
            peers: vsock_peers[i].clone(),
        });
    }
    let service_role = service.map(|s| (s, raw.vm[s].get_ref().role.as_ref().map(Spanned::span)));
    let disks = disks::resolve_disks(
        &mut d,
        &mut vms,
        &mut plans,
        &planned_disks,
        &networks,
        service_role,
        board,
    );
    let uplink = uplink::resolve_uplink(&mut d, &raw.network, &mut vms, &networks, service, board);
    devices::check_devices(&mut d, &vms, &plans);
    let channels = channels::resolve_channels(&mut d, &vms, &plans, &channel_plans);
    virtio::check_clashes(&mut d, &vms, &plans, &networks, &disks);
    if !d.messages.is_empty() {
        return Err(Error::input(d.report()));
    }

    let vm_memory: u64 = vms.iter().map(|v| v.memory).sum();
    let mut config = Config {
        machine: Machine {
            board,
            cpus,
            gic,
            cpu,
            memory: 0,
            cpus_explicit: machine_cpus.is_some(),
            gic_explicit: machine.as_ref().is_some_and(|m| m.gic.is_some()),
            cpu_explicit: machine.as_ref().is_some_and(|m| m.cpu.is_some()),
        },
        system,
        vms,
        channels,
        networks,
        disks,
        service,
        service_added: added_service.is_some(),
        uplink,
        source: match source {
            Source::File { path, .. } => Some(path.clone()),
            Source::Flags => None,
        },
    };
    let channel_memory = config.channel_memory();
    let vm_memory = vm_memory + channel_memory;
    let bundle = config.bundle_size();
    place_identity_defaults(&mut d, &mut config.vms, &raw.vm, bundle);
    let identity_top = check_identity(&mut d, &config.vms, &raw.vm, bundle);
    // Identity-mapped RAM ends where it ends; the other VMs and the channels
    // may need room beside it.
    let identity_need = identity_top.map(|top| {
        let others: u64 = config
            .vms
            .iter()
            .filter(|v| !v.identity)
            .map(|v| v.memory)
            .sum();
        (top - HOST_RAM_BASE)
            .saturating_add(others)
            .saturating_add(channel_memory)
            .next_multiple_of(HOST_MEMORY_GRANULE)
    });
    let required = required_host_memory(vm_memory, bundle)
        .unwrap_or(u64::MAX)
        .max(identity_need.unwrap_or(0));
    let channels_part = if channel_memory > 0 {
        format!(" (including {} of channels)", format_size(channel_memory))
    } else {
        String::new()
    };
    let identity_part = identity_top.map_or(String::new(), |top| {
        format!("; identity-mapped RAM up to {top:#x}, the other VMs and the channels beside it")
    });
    let needs = format!(
        "the VMs need {} of host RAM ({} of VM memory{channels_part} + {} boot bundle + {} for the hypervisor, rounded up to {}{identity_part})",
        format_size(required),
        format_size(vm_memory),
        format_size(bundle.next_multiple_of(MIB)),
        format_size(HYPERVISOR_RESERVE),
        format_size(HOST_MEMORY_GRANULE),
    );
    match &memory_override {
        Some((bytes, span)) if *bytes < required => d.push(
            Some(span.clone()),
            "machine.memory",
            format!("{} is too small: {needs}", format_size(*bytes)),
        ),
        Some(_) => {}
        None if required > MAX_HOST_MEMORY => d.push(
            None,
            "",
            format!(
                "{needs}, more than the 255 GiB QEMU virt can hold below its 256 GiB high-memory hole"
            ),
        ),
        None => {}
    }
    if !d.messages.is_empty() {
        return Err(Error::input(d.report()));
    }
    config.machine.memory = memory_override.map_or_else(
        || {
            default_host_memory(vm_memory, bundle)
                .unwrap_or(required)
                .max(required)
        },
        |(bytes, _)| bytes,
    );
    devices::check_devices_against_host_ram(
        &mut d,
        &plans,
        board.ram_base(),
        config.machine.memory,
    );
    if !d.messages.is_empty() {
        return Err(Error::input(d.report()));
    }
    config.check_board().map_err(|e| match source {
        Source::File { path, .. } => e.context(format!("{}", path.display())),
        Source::Flags => e,
    })?;
    Ok(config)
}

/// Moves the identity-mapped VMs that gave no `memory_base` above the boot
/// area of a bundle of `bundle` bytes ([`boot_area_end`]): they were
/// stacked from the least one, before the bundle's size was known, and
/// keep their order and spacing. A kernel that cannot run at its new base
/// (an ELF linked for the old one) is refused.
fn place_identity_defaults(
    d: &mut Diagnostics<'_>,
    vms: &mut [VmConfig],
    raw: &[Spanned<RawVm>],
    bundle: u64,
) {
    let shift = boot_area_end(bundle) - boot_area_end(0);
    if shift == 0 {
        return;
    }
    for (i, vm) in vms.iter_mut().enumerate() {
        let Some(id) = raw[i].get_ref().identity.as_ref() else {
            continue;
        };
        if !vm.identity || raw[i].get_ref().memory_base.is_some() {
            continue;
        }
        vm.memory_base += shift;
        match vm.kernel_summary.info.place(vm.memory_base, vm.memory) {
            Ok(p) => vm.kernel_summary.placement = p,
            Err(e) => d.at(
                id,
                &format!("vm[{i}].identity"),
                format!(
                    "{}: {e} with RAM at {:#x}, above the boot area of a {} boot bundle: set a memory_base it can run at",
                    vm.kernel.display(),
                    vm.memory_base,
                    format_size(bundle)
                ),
            ),
        }
    }
}

/// Checks the identity-mapped VMs against the host RAM the boot takes (a
/// bundle of `bundle` bytes: [`boot_area_end`]) and against each other;
/// returns the end of the highest one's RAM, `None` when there is none.
/// (The hypervisor's boot plan checks the same against the real host.)
fn check_identity(
    d: &mut Diagnostics<'_>,
    vms: &[VmConfig],
    raw: &[Spanned<RawVm>],
    bundle: u64,
) -> Option<u64> {
    let floor = boot_area_end(bundle);
    let span = |i: usize| {
        let vm = raw[i].get_ref();
        match (&vm.memory_base, &vm.identity) {
            (Some(b), _) => (Some(b.span()), format!("vm[{i}].memory_base")),
            (None, Some(id)) => (Some(id.span()), format!("vm[{i}].identity")),
            (None, None) => (Some(raw[i].span()), format!("vm[{i}]")),
        }
    };
    let mut top = None;
    let ranges: Vec<(usize, u64, u64)> = vms
        .iter()
        .enumerate()
        .filter(|(_, v)| v.identity)
        .map(|(i, v)| (i, v.memory_base, v.memory_base + v.memory))
        .collect();
    for (k, &(i, start, end)) in ranges.iter().enumerate() {
        let (at, field) = span(i);
        if start < floor {
            d.push(
                at.clone(),
                &field,
                format!(
                    "identity-mapped RAM [{start:#x}, {end:#x}) overlaps the host RAM that the hypervisor, \
                     the host device tree and the boot bundle take, [{HOST_RAM_BASE:#x}, {floor:#x}): \
                     set memory_base to {floor:#x} or above"
                ),
            );
        }
        if let Some(&(j, ..)) = ranges[..k].iter().find(|&&(_, s, e)| s < end && start < e) {
            d.push(
                at,
                &field,
                format!(
                    "identity-mapped RAM [{start:#x}, {end:#x}) overlaps vm[{j}] {:?}'s: two VMs cannot own the same host RAM",
                    vms[j].name
                ),
            );
        }
        top = top.max(Some(end));
    }
    top
}

/// Parses a size field, reporting errors. `None` if it was bad.
pub(super) fn size_field(
    d: &mut Diagnostics<'_>,
    v: &Spanned<RawSize>,
    field: &str,
) -> Option<u64> {
    match v.get_ref() {
        RawSize::Int(n) => match u64::try_from(*n) {
            Ok(n) => Some(n),
            Err(_) => {
                d.at(v, field, format!("bad size {n}: must not be negative"));
                None
            }
        },
        RawSize::Str(s) => match parse_size(s) {
            Ok(n) => Some(n),
            Err(e) => {
                d.at(v, field, e);
                None
            }
        },
    }
}

/// Checks one VM. `None` when its shape (name, vCPUs, RAM) is bad; with
/// only its files bad (kernel, initrd, DT fragment, or the kernel's fit),
/// the problems are reported and a config with an empty kernel is
/// returned, so that the rules between VMs can still be checked.
fn validate_vm(
    d: &mut Diagnostics<'_>,
    i: usize,
    vm: &Spanned<RawVm>,
    base: &Path,
    debian_guest: &mut dyn FnMut() -> std::result::Result<LinuxGuest, String>,
    identity_cursor: &mut u64,
    service: bool,
) -> Option<VmConfig> {
    let f = |key: &str| format!("vm[{i}].{key}");
    let table_span = Some(vm.span());
    let vm = vm.get_ref();

    let name = match &vm.name {
        None => format!("vm{i}"),
        Some(v) => {
            let name = v.get_ref();
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                d.at(
                    v,
                    &f("name"),
                    format!(
                        "{name:?} is {} bytes long: a VM name has 1 to {MAX_NAME_LEN}",
                        name.len()
                    ),
                );
            } else if let Some(c) = name
                .chars()
                .find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            {
                d.at(
                    v,
                    &f("name"),
                    format!("{name:?} contains {c:?}: use only A-Z, a-z, 0-9, '_' and '-'"),
                );
            }
            name.clone()
        }
    };

    // A Debian VM: the fetched guest's kernel and initramfs, its defaults.
    let debian = vm.debian.as_ref().filter(|v| *v.get_ref());
    let guest = debian.and_then(|v| {
        for (key, given) in [("kernel", &vm.kernel), ("initrd", &vm.initrd)] {
            if let Some(given) = given {
                d.at(
                    given,
                    &f(key),
                    "debian = true brings its own kernel and initramfs: remove this, or debian",
                );
            }
        }
        match debian_guest() {
            Ok(guest) => Some(guest),
            Err(e) => {
                d.at(v, &f("debian"), format!("cannot get the Debian guest: {e}"));
                None
            }
        }
    });
    let exec = vm.exec.as_ref().and_then(|v| {
        let command = v.get_ref();
        let problem = if debian.is_none() {
            Some("needs debian = true: the Debian guest's init runs the command")
        } else if command.trim().is_empty() {
            Some("is empty: name a command for /bin/sh -c")
        } else if command.contains('\0') {
            Some("must not contain a NUL character")
        } else {
            None
        };
        match problem {
            Some(p) => {
                d.at(v, &f("exec"), p);
                None
            }
            None => Some(command.clone()),
        }
    });

    let cpus = match &vm.cpus {
        None => Some(1),
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if (1..=MAX_VCPUS).contains(&n) => Some(n),
            _ => {
                d.at(
                    v,
                    &f("cpus"),
                    format!("{} vCPUs: a VM has 1 to {MAX_VCPUS}", v.get_ref()),
                );
                None
            }
        },
    };

    let memory = match &vm.memory {
        None if debian.is_some() => Some(DEBIAN_DEFAULT_MEMORY),
        None => Some(DEFAULT_VM_MEMORY),
        Some(v) => size_field(d, v, &f("memory")).and_then(|bytes| {
            if bytes < RAM_ALIGN || !bytes.is_multiple_of(RAM_ALIGN) {
                d.at(
                    v,
                    &f("memory"),
                    format!("{bytes:#x} bytes: VM memory must be a non-zero multiple of 2 MiB"),
                );
                None
            } else {
                Some(bytes)
            }
        }),
    };

    // The service VM: identity-mapped (its disks' devices DMA), with the
    // vsock device that carries the hypervisor's link to its daemon.
    if service {
        if let Some(v) = vm.identity.as_ref().filter(|v| !*v.get_ref()) {
            d.at(
                v,
                &f("identity"),
                "the service VM is identity-mapped (the disks' devices passed through to it DMA): remove identity = false",
            );
        }
        if let Some(v) = vm.vsock.as_ref().filter(|v| !*v.get_ref()) {
            d.at(
                v,
                &f("vsock"),
                "the service VM always has a vsock device (it carries the hypervisor's link to the disk daemon): remove vsock = false",
            );
        }
    }
    let identity = service || vm.identity.as_ref().is_some_and(|v| *v.get_ref());
    // The `firmware = true` key, when the VM is a firmware guest.
    let firmware = vm.firmware.as_ref().filter(|v| *v.get_ref());
    let memory_base = match &vm.memory_base {
        // An identity-mapped VM without a base goes above the boot area,
        // after the identity-mapped VMs before it (checked once the bundle's
        // size is known: `check_identity`).
        None if identity => Some(*identity_cursor),
        None => Some(DEFAULT_MEMORY_BASE),
        Some(v) => size_field(d, v, &f("memory_base")).and_then(|b| {
            if !b.is_multiple_of(RAM_ALIGN) {
                d.at(v, &f("memory_base"), format!("{b:#x} is not 2 MiB aligned"));
                None
            } else {
                Some(b)
            }
        }),
    };
    let ram_span = vm
        .memory_base
        .as_ref()
        .or(vm.memory.as_ref())
        .map(Spanned::span)
        .or(table_span.clone());
    let ram_field = if vm.memory_base.is_some() {
        f("memory_base")
    } else {
        f("memory")
    };
    let ram = match (memory_base, memory) {
        (Some(b), Some(m)) => match b.checked_add(m) {
            None => {
                d.push(
                    ram_span.clone(),
                    &ram_field,
                    format!(
                        "RAM at {b:#x} of {} wraps around the address space",
                        format_size(m)
                    ),
                );
                None
            }
            Some(end) if b < DEVICE_WINDOW.end && end > DEVICE_WINDOW.start => {
                d.push(
                    ram_span.clone(),
                    &ram_field,
                    format!(
                        "RAM [{b:#x}, {end:#x}) overlaps the guest's devices at [{:#x}, {:#x}) (GIC and UART)",
                        DEVICE_WINDOW.start, DEVICE_WINDOW.end
                    ),
                );
                None
            }
            Some(end) if b < FLASH_END && firmware.is_some() => {
                d.push(
                    ram_span.clone(),
                    &ram_field,
                    format!(
                        "a firmware VM sees flash at [0x0, {FLASH_END:#x}): its RAM [{b:#x}, {end:#x}) may not overlap it"
                    ),
                );
                None
            }
            Some(_) => Some((b, m)),
        },
        _ => None,
    };

    let cmdline = vm
        .cmdline
        .as_ref()
        .map(|v| {
            if v.get_ref().contains('\0') {
                d.at(v, &f("cmdline"), "must not contain a NUL character");
            }
            v.get_ref().clone()
        })
        .unwrap_or_default();
    let cmdline = match (debian, cmdline.trim()) {
        (Some(_), "") => DEBIAN_CMDLINE.to_owned(),
        (Some(_), extra) => format!("{DEBIAN_CMDLINE} {extra}"),
        (None, _) => cmdline,
    };
    // The initramfs's init starts the disk daemon on this word.
    let cmdline = match (service, cmdline.trim()) {
        (false, _) => cmdline,
        (true, "") => SERVICE_CMDLINE.to_owned(),
        (true, given) => format!("{given} {SERVICE_CMDLINE}"),
    };

    let dt_fragment = vm.dt_fragment.as_ref().and_then(|v| {
        let path = base.join(v.get_ref());
        match read_fragment(
            &path,
            vm.device.iter().filter_map(|d| d.get_ref().name.as_ref()),
        ) {
            Ok(size) => Some((path, size)),
            Err(e) => {
                d.at(v, &f("dt_fragment"), format!("{}: {e}", path.display()));
                None
            }
        }
    });
    // (path, span, field) of the initrd and the kernel.
    let named = |v: &Spanned<String>, key: &str| (base.join(v.get_ref()), Some(v.span()), f(key));
    let (initrd_src, kernel_src) = match (&guest, debian) {
        (Some(g), Some(v)) => (
            Some((g.initramfs.clone(), Some(v.span()), f("debian"))),
            Some((g.kernel.clone(), Some(v.span()), f("debian"))),
        ),
        (None, Some(_)) => (None, None),
        (_, None) => (
            vm.initrd.as_ref().map(|v| named(v, "initrd")),
            vm.kernel.as_ref().map(|v| named(v, "kernel")),
        ),
    };
    let overlay = exec.as_deref().map_or(0, |c| exec_overlay(c).len() as u64);
    let initrd = initrd_src.and_then(|(path, span, field)| match file_size(&path) {
        Ok(size) => Some((path, size + overlay)),
        Err(e) => {
            d.push(span, &field, format!("{}: {e}", path.display()));
            None
        }
    });

    let kernel = match kernel_src {
        None if debian.is_some() => None,
        None => {
            d.push(
                table_span.clone(),
                &f("kernel"),
                "missing: every VM needs a kernel (or debian = true)",
            );
            None
        }
        Some((path, span, field)) => match inspect_kernel(&path) {
            Ok(k) => Some((path, k, (span, field))),
            Err(e) => {
                d.push(span, &field, format!("{}: {e}", path.display()));
                None
            }
        },
    };

    let (memory_base, memory) = ram?;
    if identity {
        *identity_cursor = (*identity_cursor)
            .max(memory_base.saturating_add(memory))
            .next_multiple_of(RAM_ALIGN);
    }
    let cpus = cpus?;
    let unplaced = |name: String, kernel: std::path::PathBuf| VmConfig {
        name,
        kernel,
        kernel_summary: KernelSummary {
            info: KernelInfo::Raw { len: 0 },
            placement: image::Placement {
                load_offset: image::RAW_LOAD_OFFSET,
                entry_offset: image::RAW_LOAD_OFFSET,
                footprint: 0,
            },
            file_size: 0,
            blob_size: 0,
        },
        initrd: None,
        initrd_size: 0,
        dt_fragment: None,
        dt_fragment_size: 0,
        cmdline: String::new(),
        cpus,
        memory,
        memory_base,
        identity,
        firmware: firmware.is_some(),
        placement: CpuPlacement::Pinned,
        pcpus: Vec::new(),
        on_crash: OnCrash::Stop,
        devices: Vec::new(),
        exec: None,
        vsock: None,
        virtio_console: false,
        service,
    };
    // Fit checks, only when the inputs themselves are fine.
    let Some((kernel_path, (info, kernel_file_size, blob_size), (kernel_span, kernel_field))) =
        kernel
    else {
        return Some(unplaced(name, std::path::PathBuf::new()));
    };
    if let (true, Some(role)) = (service, &vm.role)
        && !matches!(info, KernelInfo::LinuxImage { .. })
    {
        d.at(
            role,
            &f("role"),
            format!(
                "{}: the service VM runs the disk daemon under Linux: debian = true, or a Linux arm64 Image \
                 whose initramfs starts the daemon on {SERVICE_CMDLINE}",
                kernel_path.display()
            ),
        );
    }
    let placement = match info.place(memory_base, memory) {
        Ok(p) => p,
        Err(e) => {
            let wants = match info {
                KernelInfo::Elf(elf) => format!(
                    "its segments span [{:#x}, {:#x})",
                    elf.base(),
                    elf.mem_end()
                ),
                KernelInfo::LinuxImage {
                    load_offset,
                    footprint,
                    ..
                } => format!(
                    "it needs {} at RAM + {load_offset:#x}",
                    format_size(footprint)
                ),
                KernelInfo::Raw { len } => format!(
                    "it needs {} at RAM + {:#x}",
                    format_size(len),
                    image::RAW_LOAD_OFFSET
                ),
            };
            d.push(
                kernel_span,
                &kernel_field,
                format!(
                    "{}: {e}: {wants}, and the VM's RAM is [{memory_base:#x}, {:#x}) ({})",
                    kernel_path.display(),
                    memory_base + memory,
                    format_size(memory)
                ),
            );
            return Some(unplaced(name, kernel_path));
        }
    };
    let dt_room = stratum_core::machine::DTB_MAX as u64;
    if let Some(v) = firmware
        && placement.load_offset < dt_room
    {
        d.at(
            v,
            &f("firmware"),
            format!(
                "the kernel loads at RAM + {:#x}, inside the {} the device tree takes at the start of RAM",
                placement.load_offset,
                format_size(dt_room)
            ),
        );
    }
    let initrd_size = initrd.as_ref().map_or(0, |(_, s)| *s);
    let need = placement
        .end_offset()
        .next_multiple_of(RAM_ALIGN)
        .saturating_add(initrd_size.next_multiple_of(4 * KIB))
        .saturating_add(DTB_RESERVE);
    if need > memory {
        let span = vm.memory.as_ref().map(Spanned::span).or(table_span);
        d.push(
            span,
            &f("memory"),
            format!(
                "{} is too small: the kernel (up to RAM + {:#x}, rounded to 2 MiB), the initrd ({}) and {} for the device tree need {}",
                format_size(memory),
                placement.end_offset(),
                format_size(initrd_size),
                format_size(DTB_RESERVE),
                format_size(need.next_multiple_of(RAM_ALIGN)),
            ),
        );
    }
    Some(VmConfig {
        kernel_summary: KernelSummary {
            info,
            placement,
            file_size: kernel_file_size,
            blob_size,
        },
        initrd: initrd.map(|(p, _)| p),
        initrd_size,
        dt_fragment: dt_fragment.as_ref().map(|(p, _)| p.clone()),
        dt_fragment_size: dt_fragment.map_or(0, |(_, s)| s),
        cmdline,
        exec,
        // Placement, CPUs, crash policy and devices: filled in by the
        // caller from the VM's plan and the resolution.
        ..unplaced(name, kernel_path)
    })
}

/// Size of a readable regular file, or why it cannot be used.
/// Reads an extra DT fragment and checks it as the hypervisor will
/// (`stratum_core::guest_dt::check_fragment`) against the VM's passthrough
/// device names; returns its size.
fn read_fragment<'a>(
    path: &Path,
    device_names: impl Iterator<Item = &'a toml::Spanned<String>>,
) -> Result<u64, String> {
    let size = file_size(path)?;
    if size > stratum_abi::bundle::DT_FRAGMENT_MAX {
        return Err(format!(
            "{size} bytes; a DT fragment may have at most {}",
            stratum_abi::bundle::DT_FRAGMENT_MAX
        ));
    }
    let bytes = fs::read(path).map_err(|e| describe_io(&e))?;
    let names: Vec<&str> = device_names.map(|n| n.get_ref().as_str()).collect();
    stratum_core::guest_dt::check_fragment(&bytes, names.iter().copied())
        .map_err(|e| e.to_string())?;
    Ok(size)
}

fn file_size(path: &Path) -> Result<u64, String> {
    let meta = fs::metadata(path).map_err(|e| describe_io(&e))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    fs::File::open(path).map_err(|e| describe_io(&e))?;
    Ok(meta.len())
}

/// Reads and inspects a kernel: (info, file size, bundle blob size).
fn inspect_kernel(path: &Path) -> Result<(KernelInfo, u64, u64), String> {
    file_size(path)?;
    let bytes = fs::read(path).map_err(|e| describe_io(&e))?;
    let info = image::inspect(&bytes).map_err(|e| e.to_string())?;
    let blob = match info {
        KernelInfo::Elf(elf) => elf.flat_size(),
        _ => bytes.len() as u64,
    };
    Ok((info, bytes.len() as u64, blob))
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "file not found".to_owned(),
        std::io::ErrorKind::PermissionDenied => "cannot read: permission denied".to_owned(),
        _ => format!("cannot read: {e}"),
    }
}
