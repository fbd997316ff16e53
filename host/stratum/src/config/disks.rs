//! Disks (`[[vm.disk]]`, `stratum run --disk`) and the service VM
//! (`role = "service"`) that serves them (issue 12).
//!
//! A frontend VM's disk is a virtio-blk device the hypervisor emulates on
//! one of the frontend's transports; its requests go over vsock to the
//! disk daemon in the service VM, which performs them on QEMU's
//! `virtio-blk-device` for that disk, passed through to the service VM.
//!
//! Layout, fixed so that a reader can predict it:
//! - disks are numbered 0, 1, … in config order (VM by VM, each VM's in
//!   its order); disk *n*'s QEMU device has serial `stratum-disk<n>`
//!   ([`stratum_abi::blkproto::serial`]), which the daemon finds it by;
//! - a VM has at most [`DISKS_PER_VM`] disks; in its frontend, they take
//!   the lowest free transports from [`FIRST_DISK_TRANSPORT`] (transports
//!   0 to 7 are the console's, the vsock device's and the NICs'), in disk
//!   order: Linux probes the transports lowest address first, so the VM's
//!   first disk is `/dev/vda`;
//! - in the service VM (and on QEMU's `virtio-mmio-bus.<T>`), disk *n* is
//!   on transport [`service_transport`]`(n)`: the first four on transports
//!   24 to 27, the next four on 16 to 19, the last four on 8 to 11. Each
//!   4 KiB page of transports is one passthrough device (stage 2 maps
//!   pages, and two device records may not overlap) with one SPI per disk
//!   (at most [`limits::IRQS_PER_DEVICE`]); page 0 (transports 0 to 7)
//!   stays the service VM's own, for its console, vsock device and NICs.
//!   So a system serves at most [`MAX_SERVED_DISKS`] disks (one fewer
//!   with an uplink, whose QEMU NIC takes an SPI of page 1:
//!   [`super::uplink`]), and the service VM's own passthrough devices and
//!   the disk pages share its [`limits::DEVICES_PER_VM`].
//!
//! The service VM is identity-mapped (its devices DMA), a Linux VM, has a
//! vsock device that no `[[vsock]]` pair names (it carries the
//! hypervisor's link to the daemon, CID 2) and no disk itself; its kernel
//! command line gets [`SERVICE_CMDLINE`], which the initramfs's init
//! starts the daemon on. When a VM has a disk, or a network is the
//! uplink, and no VM is the service VM, one is added ([`add_service_vm`]).

use std::fs;
use std::path::{Path, PathBuf};

use stratum_abi::bundle;
use stratum_abi::limits;
use toml::Spanned;

use super::devices::PlannedDevice;
use super::partition::{Span, VmPlan};
use super::raw::{Diagnostics, RawDisk, RawNetwork, RawSize, RawVm};
use super::*;

/// The first transport a frontend's disks may take.
pub const FIRST_DISK_TRANSPORT: u32 = 8;
/// Most disks one frontend VM has (the hypervisor's per-VM table).
pub const DISKS_PER_VM: usize = stratum_virtio::slots::MAX_VM_DISKS;
/// The pages of the virtio-mmio window (8 transports each) that carry the
/// disks' QEMU devices in the service VM, in the order disks fill them.
const DISK_PAGES: [u32; 3] = [3, 2, 1];
/// Disks on one page: one SPI each, in one passthrough device record.
const DISKS_PER_PAGE: u32 = limits::IRQS_PER_DEVICE as u32;
/// Transports per 4 KiB page of the window.
const TRANSPORTS_PER_PAGE: u32 = (bundle::PAGE_SIZE / bundle::VIRTIO_STRIDE) as u32;
/// Most disks one system has: four on each of the three pages.
pub const MAX_SERVED_DISKS: usize = DISK_PAGES.len() * DISKS_PER_PAGE as usize;
/// What the service VM's kernel command line ends with: the initramfs's
/// init starts the disk daemon when it sees it.
pub const SERVICE_CMDLINE: &str = "stratum.role=service";
/// The value of `role` that makes the service VM.
pub const SERVICE_ROLE: &str = "service";
/// The name of the service VM the tool adds (or `service2`, … when a VM
/// already has it).
pub const ADDED_SERVICE_NAME: &str = "service";
/// Memory of the service VM the tool adds.
pub const ADDED_SERVICE_MEMORY: u64 = 256 * MIB;
/// The passthrough devices' name (their DT nodes: `virtio_mmio@<addr>`).
const DISK_DEVICE_NAME: &str = "virtio_mmio";

const _: () = assert!(MAX_SERVED_DISKS <= bundle::MAX_DISKS as usize);
const _: () = assert!(DISKS_PER_PAGE <= TRANSPORTS_PER_PAGE);

/// Disk `n`'s transport in the service VM: QEMU's `virtio-mmio-bus.<T>`,
/// at 0x0A000000 + 0x200·T, SPI 16 + T. `None` past [`MAX_SERVED_DISKS`].
pub fn service_transport(n: usize) -> Option<u32> {
    let page = *DISK_PAGES.get(n / DISKS_PER_PAGE as usize)?;
    Some(page * TRANSPORTS_PER_PAGE + n as u32 % DISKS_PER_PAGE)
}

/// Whether a VM as written is the service VM.
pub(super) fn is_service(vm: &RawVm) -> bool {
    vm.role
        .as_ref()
        .is_some_and(|r| r.get_ref() == SERVICE_ROLE)
}

/// Checks every VM's `role`; the service VM's index (the first, when the
/// config wrongly names several).
pub(super) fn service_vm(d: &mut Diagnostics<'_>, vms: &[Spanned<RawVm>]) -> Option<usize> {
    let mut service: Option<usize> = None;
    for (i, vm) in vms.iter().enumerate() {
        let Some(role) = &vm.get_ref().role else {
            continue;
        };
        if role.get_ref() != SERVICE_ROLE {
            d.at(
                role,
                &format!("vm[{i}].role"),
                format!(
                    "unknown role {:?}: expected \"{SERVICE_ROLE}\" (or no role, for a VM served by it)",
                    role.get_ref()
                ),
            );
        } else if let Some(first) = service {
            d.at(
                role,
                &format!("vm[{i}].role"),
                format!(
                    "a second service VM: vm[{first}] is the service VM, and there is one at most"
                ),
            );
        } else {
            service = Some(i);
        }
    }
    service
}

/// When a VM has a disk or a network is the uplink, and none is the
/// service VM, appends one to `vms` (pointing at the first disk, or the
/// uplink, the reason for it): Debian, 1 vCPU, [`ADDED_SERVICE_MEMORY`],
/// identity-mapped, time-shared (no `pcpus`: the last physical CPU, as
/// every shared VM's default), restarted when it crashes, its kernel
/// quiet. Returns its index.
pub(super) fn add_service_vm(
    d: &mut Diagnostics<'_>,
    vms: &mut Vec<Spanned<RawVm>>,
    networks: &[Spanned<RawNetwork>],
) -> Option<usize> {
    let uplink = networks
        .iter()
        .find(|n| super::uplink::is_uplink(n.get_ref()));
    let (span, what, field) = match (vms.iter().find_map(|v| v.get_ref().disk.first()), uplink) {
        (Some(first), _) => (first.span(), "the disks need", ""),
        (None, Some(net)) if net.get_ref().flag => (0..0, "the uplink needs", "--net"),
        (None, Some(net)) => (net.span(), "the uplink needs", ""),
        (None, None) => return None,
    };
    if vms.len() >= MAX_VMS {
        d.push(
            Some(span).filter(|_| field.is_empty()),
            field,
            format!(
                "{what} a service VM, and the config already has {MAX_VMS} VMs: remove one, or make one of them role = \"{SERVICE_ROLE}\""
            ),
        );
        return None;
    }
    let taken = |name: &str| {
        vms.iter().enumerate().any(|(i, v)| {
            v.get_ref()
                .name
                .as_ref()
                .map_or(format!("vm{i}"), |n| n.get_ref().clone())
                == name
        })
    };
    let name = std::iter::once(ADDED_SERVICE_NAME.to_owned())
        .chain((2..).map(|k| format!("{ADDED_SERVICE_NAME}{k}")))
        .find(|n| !taken(n))
        .expect("an unbounded sequence of names has a free one");
    let at = |v| Some(Spanned::new(span.clone(), v));
    let vm = RawVm {
        name: at(name),
        kernel: None,
        initrd: None,
        cmdline: at("quiet".to_owned()),
        cpus: Some(Spanned::new(span.clone(), 1)),
        memory: Some(Spanned::new(
            span.clone(),
            RawSize::Int(ADDED_SERVICE_MEMORY as i64),
        )),
        memory_base: None,
        identity: Some(Spanned::new(span.clone(), true)),
        firmware: None,
        placement: at("shared".to_owned()),
        pcpus: None,
        on_crash: at("restart".to_owned()),
        dt_fragment: None,
        debian: Some(Spanned::new(span.clone(), true)),
        exec: None,
        vsock: Some(Spanned::new(span.clone(), true)),
        virtio_console: None,
        role: at(SERVICE_ROLE.to_owned()),
        device: Vec::new(),
        disk: Vec::new(),
    };
    vms.push(Spanned::new(span, vm));
    Some(vms.len() - 1)
}

/// A disk as written, its image checked.
pub(super) struct PlannedDisk {
    /// Its VM.
    vm: usize,
    /// The image, canonical.
    image: PathBuf,
    readonly: bool,
    sectors: u64,
    /// Where its table is, and its field (`vm[i].disk[j]`).
    span: Span,
    field: String,
}

/// Where a diagnostic about a disk points: its table, or `--disk` for one
/// the command line added to a config file.
fn place(disk: &Spanned<RawDisk>, field: String) -> (Span, String) {
    if disk.get_ref().flag {
        (None, "--disk".to_owned())
    } else {
        (Some(disk.span()), field)
    }
}

/// Checks every VM's `[[vm.disk]]` tables and their images: numbered in
/// config order. `service` is the service VM, which may have none;
/// `uplink`: a network is the uplink, whose QEMU NIC takes one of the
/// disks' SPIs.
pub(super) fn check_disks(
    d: &mut Diagnostics<'_>,
    vms: &[Spanned<RawVm>],
    base: &Path,
    service: Option<usize>,
    uplink: bool,
) -> Vec<PlannedDisk> {
    let mut out: Vec<PlannedDisk> = Vec::new();
    let mut count = 0usize;
    let most = MAX_SERVED_DISKS - usize::from(uplink);
    for (i, vm) in vms.iter().enumerate().take(MAX_VMS) {
        for (j, disk) in vm.get_ref().disk.iter().enumerate() {
            let (span, field) = place(disk, format!("vm[{i}].disk[{j}]"));
            count += 1;
            if count == most + 1 && uplink {
                d.push(
                    span.clone(),
                    &field,
                    format!(
                        "more than {most} disks: with an uplink the service VM serves at most {most} \
                         ({DISKS_PER_PAGE} on each of the pages of virtio-mmio transports 8-15, 16-23 and 24-31, \
                         and the uplink's QEMU NIC takes one of page 8-15's)"
                    ),
                );
            } else if count == most + 1 {
                d.push(
                    span.clone(),
                    &field,
                    format!(
                        "more than {MAX_SERVED_DISKS} disks: the service VM serves at most {MAX_SERVED_DISKS} \
                         ({DISKS_PER_PAGE} on each of the pages of virtio-mmio transports 8-15, 16-23 and 24-31)"
                    ),
                );
            }
            if Some(i) == service {
                d.push(
                    span,
                    &field,
                    "the service VM serves the disks and cannot have one itself: give it to a frontend VM",
                );
                continue;
            }
            let Some(image) = &disk.get_ref().image else {
                d.push(
                    span,
                    &field,
                    "missing: a disk needs image = \"path\" (a raw disk image file)",
                );
                continue;
            };
            let (image_span, image_field) = place(disk, format!("vm[{i}].disk[{j}].image"));
            let image_span = image_span.map(|_| image.span());
            let readonly = disk
                .get_ref()
                .readonly
                .as_ref()
                .is_some_and(|r| *r.get_ref());
            let path = base.join(image.get_ref());
            let (canonical, sectors) = match disk_image(&path, readonly) {
                Ok(found) => found,
                Err(e) => {
                    d.push(image_span, &image_field, format!("{}: {e}", path.display()));
                    continue;
                }
            };
            if let Some(other) = out
                .iter()
                .find(|o| o.image == canonical && !(o.readonly && readonly))
            {
                d.push(
                    image_span,
                    &image_field,
                    format!(
                        "{} is also the image of {}: one image backs two disks only when both are read-only",
                        path.display(),
                        other.field
                    ),
                );
            }
            out.push(PlannedDisk {
                vm: i,
                image: canonical,
                readonly,
                sectors,
                span,
                field,
            });
        }
    }
    out
}

/// Checks a disk image file: a readable (and, unless `readonly`, writable)
/// regular file of whole 512-byte sectors, at least one. Its canonical
/// path and its sectors, or why it cannot be a disk.
pub(super) fn disk_image(path: &Path, readonly: bool) -> Result<(PathBuf, u64), String> {
    let sector = stratum_abi::blkproto::SECTOR;
    let meta = fs::metadata(path).map_err(|e| describe_io(&e))?;
    if !meta.is_file() {
        return Err("not a regular file: a disk is a raw image file".to_owned());
    }
    let size = meta.len();
    if size == 0 {
        return Err("empty: a disk image holds at least one 512-byte sector".to_owned());
    }
    if !size.is_multiple_of(sector) {
        return Err(format!(
            "{size} bytes, not a multiple of 512: a disk is whole 512-byte sectors \
             (`truncate -s {}` rounds it up)",
            size.next_multiple_of(sector)
        ));
    }
    let sectors = size / sector;
    if sectors >= 1 << 48 {
        return Err(format!("{size} bytes: a disk has fewer than 2^48 sectors"));
    }
    fs::File::open(path).map_err(|e| describe_io(&e))?;
    if !readonly {
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: or make the disk read-only", describe_io(&e)))?;
    }
    let canonical = fs::canonicalize(path).map_err(|e| describe_io(&e))?;
    Ok((canonical, sectors))
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "file not found".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => format!("cannot open: {e}"),
    }
}

/// Resolves the disks once every VM is valid: each disk's transport in its
/// frontend (its VM's virtio devices at most [`bundle::VIRTIO_PER_VM`]),
/// its transport in the service VM, and the service VM's passthrough
/// devices for them and for the uplink's QEMU NIC when a network is the
/// uplink (added to its plan and config, so that the rules between
/// devices see them). `service` is the service VM and where its role is
/// set.
pub(super) fn resolve_disks(
    d: &mut Diagnostics<'_>,
    vms: &mut [VmConfig],
    plans: &mut [VmPlan],
    planned: &[PlannedDisk],
    networks: &[NetworkConfig],
    service: Option<(usize, Span)>,
    board: Board,
) -> Vec<DiskConfig> {
    let mut out = Vec::new();
    if let (Some(first), true) = (planned.first(), board != Board::Virt) {
        d.push(first.span.clone(), &first.field, no_disks_on(board));
        return out;
    }
    for (i, vm) in vms.iter().enumerate() {
        let taken = plans[i]
            .devices
            .iter()
            .map(|p| {
                let c = &p.config;
                bundle::virtio_taken_by(c.base, c.size, &c.interrupts)
            })
            .fold(0u32, |m, t| m | t);
        let mut free =
            (FIRST_DISK_TRANSPORT..bundle::VIRTIO_TRANSPORTS).filter(|t| taken & (1 << t) == 0);
        let others = usize::from(vm.virtio_console)
            + usize::from(vm.vsock.is_some())
            + networks
                .iter()
                .flat_map(|n| &n.nics)
                .filter(|nic| nic.vm == i)
                .count();
        for (k, disk) in planned.iter().filter(|p| p.vm == i).enumerate() {
            if k == DISKS_PER_VM {
                d.push(
                    disk.span.clone(),
                    &disk.field,
                    format!(
                        "{:?} has more than {DISKS_PER_VM} disks: a VM has at most {DISKS_PER_VM}",
                        vm.name
                    ),
                );
            }
            if k >= DISKS_PER_VM {
                continue;
            }
            if others + k + 1 > bundle::VIRTIO_PER_VM {
                d.push(
                    disk.span.clone(),
                    &disk.field,
                    format!(
                        "{:?} would have {} virtio devices with this disk: a VM has at most {} \
                         (its console, vsock device, NICs and disks together)",
                        vm.name,
                        others + k + 1,
                        bundle::VIRTIO_PER_VM
                    ),
                );
                continue;
            }
            let Some(transport) = free.next() else {
                d.push(
                    disk.span.clone(),
                    &disk.field,
                    format!(
                        "no virtio-mmio transport from {FIRST_DISK_TRANSPORT} to 31 is free for it: {:?}'s passthrough devices take them",
                        vm.name
                    ),
                );
                continue;
            };
            let Some(backend_transport) = service_transport(out.len()) else {
                continue;
            };
            out.push(DiskConfig {
                vm: i,
                image: disk.image.clone(),
                readonly: disk.readonly,
                sectors: disk.sectors,
                transport,
                backend_transport,
            });
        }
    }
    let Some((s, service_span)) = service else {
        return out;
    };
    let uplink = networks
        .iter()
        .any(|n| n.uplink)
        .then_some(super::uplink::UPLINK_TRANSPORT)
        .filter(|_| board == Board::Virt);
    let transports: Vec<u32> = out
        .iter()
        .map(|disk| disk.backend_transport)
        .chain(uplink)
        .collect();
    let pages = service_pages(&transports);
    let have = plans[s].devices.len();
    if have + pages.len() > limits::DEVICES_PER_VM {
        let disks = match out.len() {
            0 => String::new(),
            1 => "1 disk".to_owned(),
            n => format!("{n} disks"),
        };
        let serves = match (disks.is_empty(), uplink.is_some()) {
            (false, true) => format!("its {disks} and the uplink need"),
            (true, true) => "the uplink needs".to_owned(),
            (false, false) => format!("its {disks} need{}", if out.len() == 1 { "s" } else { "" }),
            (true, false) => "nothing needs".to_owned(),
        };
        d.push(
            service_span,
            &format!("vm[{s}].role"),
            format!(
                "the service VM has {have} passthrough device{} and {serves} {} more (one per page of \
                 virtio-mmio transports): a VM has at most {}",
                if have == 1 { "" } else { "s" },
                pages.len(),
                limits::DEVICES_PER_VM
            ),
        );
        return out;
    }
    for config in pages {
        let field = format!("vm[{s}].device[{}]", plans[s].devices.len());
        vms[s].devices.push(config.clone());
        plans[s].devices.push(PlannedDevice {
            irq_spans: vec![service_span.clone().unwrap_or_default(); config.interrupts.len()],
            config,
            field,
            reg_span: service_span.clone(),
        });
    }
    out
}

/// Why `board` (not `virt`) cannot have disks.
pub(super) fn no_disks_on(board: Board) -> String {
    format!(
        "disks are QEMU virtio-blk devices on virt's virtio-mmio transports, passed through to the service VM, \
         and the {} has no virtio-mmio transports: run the disks on virt",
        board.name()
    )
}

/// The service VM's passthrough devices for the QEMU devices on
/// `transports` (the disks', the uplink's NIC): one per page of
/// transports they use, in [`DISK_PAGES`] order, with each device's SPI.
fn service_pages(transports: &[u32]) -> Vec<DeviceConfig> {
    DISK_PAGES
        .iter()
        .filter_map(|&page| {
            let interrupts: Vec<u32> = transports
                .iter()
                .filter(|&&t| t / TRANSPORTS_PER_PAGE == page)
                .map(|&t| bundle::VIRTIO_SPI_BASE + t)
                .collect();
            (!interrupts.is_empty()).then(|| DeviceConfig {
                name: DISK_DEVICE_NAME.to_owned(),
                compatible: vec!["virtio,mmio".to_owned()],
                base: bundle::VIRTIO_WINDOW.start + bundle::PAGE_SIZE * u64::from(page),
                size: bundle::PAGE_SIZE,
                interrupts,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_fill_the_pages_from_the_top_four_at_a_time() {
        let transports: Vec<u32> = (0..MAX_SERVED_DISKS)
            .map(|n| service_transport(n).expect("served"))
            .collect();
        assert_eq!(transports, [24, 25, 26, 27, 16, 17, 18, 19, 8, 9, 10, 11]);
        assert_eq!(service_transport(MAX_SERVED_DISKS), None);
        // None on page 0, the service VM's own transports.
        assert!(transports.iter().all(|&t| t >= TRANSPORTS_PER_PAGE));
    }

    #[test]
    fn one_passthrough_device_per_page_with_its_disks_spis() {
        let disks: Vec<u32> = (0..6)
            .map(|n| service_transport(n).expect("served"))
            .collect();
        let pages = service_pages(&disks);
        assert_eq!(pages.len(), 2);
        assert_eq!(
            (pages[0].base, pages[0].size, pages[0].interrupts.clone()),
            (0x0A00_3000, 0x1000, vec![40, 41, 42, 43])
        );
        assert_eq!(
            (pages[1].base, pages[1].size, pages[1].interrupts.clone()),
            (0x0A00_2000, 0x1000, vec![32, 33])
        );
        for p in &pages {
            assert_eq!(p.compatible, ["virtio,mmio"]);
            // Exactly the transports of the disks: no other of the page.
            let taken = bundle::virtio_taken_by(p.base, p.size, &p.interrupts);
            assert_eq!(taken.count_ones(), 8);
        }
        assert!(service_pages(&[]).is_empty());
    }

    /// The uplink's QEMU NIC shares page 1 with disks 8 to 10: one
    /// device, four SPIs, the most a device has.
    #[test]
    fn the_uplink_nic_joins_the_page_of_the_last_disks() {
        let uplink = super::super::uplink::UPLINK_TRANSPORT;
        let mut transports: Vec<u32> = (0..MAX_SERVED_DISKS - 1)
            .map(|n| service_transport(n).expect("served"))
            .collect();
        transports.push(uplink);
        let pages = service_pages(&transports);
        assert_eq!(pages.len(), 3);
        assert_eq!(
            (pages[2].base, pages[2].interrupts.clone()),
            (0x0A00_1000, vec![24, 25, 26, 31])
        );
        assert!(
            pages
                .iter()
                .all(|p| p.interrupts.len() <= DISKS_PER_PAGE as usize)
        );
        // Alone: a page of its own, one SPI.
        let alone = service_pages(&[uplink]);
        assert_eq!(
            alone
                .iter()
                .map(|p| (p.base, p.interrupts.clone()))
                .collect::<Vec<_>>(),
            [(0x0A00_1000, vec![31])]
        );
    }
}
