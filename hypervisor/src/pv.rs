//! The paravirtual devices' glue between VMs: one virtual switch per
//! `[[network]]`, the vsock router, and the disk link to the service VM's
//! daemon ([`stratum_virtio::disklink`]), reached through the VMs' locks.
//!
//! A notify is served under the notifying VM's lock
//! (`stratum_virtio::VmVirtio::process`), which only records what the
//! switch or the router must do ([`stratum_virtio::Work`]); once that lock
//! is released, [`serve`] runs them. They move data between two VMs'
//! RAMs by copy (never a mapping), reaching each VM through
//! [`system::try_with_vm`] for one port at a time, so no code ever holds
//! two VM locks. A VM that gained used buffers has its transport lines
//! sampled into its vGIC and its vCPUs' CPUs kicked there.
//!
//! The service VM's vsock device is the disk link's alone: the router has
//! no port for it.
//!
//! Locks: a network's switch, the router or the disk link, then one VM's
//! lock (then what that allows: `system`'s lock order). Nothing takes a
//! switch, the router or the link while holding a VM's lock, and no code
//! holds two of them.

use stratum_abi::bundle::{Bundle, MAX_NETWORKS, VirtioKind};
use stratum_virtio::disklink::{self, DiskFn, DiskLink, DiskPorts, FrontendRam, ServiceFn};
use stratum_virtio::net::NetDevice;
use stratum_virtio::router::{Router, VsockPorts};
use stratum_virtio::slots::MAX_NICS;
use stratum_virtio::switch::{MAX_PORTS, Ports, ReadingFn, Switch};
use stratum_virtio::vsock::VsockDevice;
use stratum_virtio::{GuestMemory, Transport};

use crate::sync::SpinLock;
use crate::vm::VmMemory;
use crate::{irq, log, system};

/// A network: its switch and which VM each port is.
struct Network {
    switch: Switch,
    vms: [usize; MAX_PORTS],
}

static NETWORKS: [SpinLock<Option<Network>>; MAX_NETWORKS as usize] =
    [const { SpinLock::new(None) }; MAX_NETWORKS as usize];
static ROUTER: SpinLock<Router> = SpinLock::new(Router::new());
static DISKS: SpinLock<DiskLink> = SpinLock::new(DiskLink::new());
/// The service VM's index (`usize::MAX`: none).
static SERVICE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(usize::MAX);

/// The service VM's index, if the system has one.
pub fn service_vm() -> Option<usize> {
    let s = SERVICE.load(core::sync::atomic::Ordering::Relaxed);
    (s != usize::MAX).then_some(s)
}

/// How many rounds one [`serve`] gives a sender whose ring refills while
/// the switch or the router drains it (each round moves at most a ring).
const ROUNDS: usize = 16;

/// Microseconds per counter tick as a 32.32 fixed-point factor, set once
/// at [`init`]: the time for storm control is then a multiply, not the
/// software 128-bit division that dividing by the frequency costs on
/// every serve.
static US_PER_TICK_32_32: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The time in µs of the physical counter, for the switches' storm control.
fn now_us() -> u64 {
    let factor = US_PER_TICK_32_32.load(core::sync::atomic::Ordering::Relaxed);
    ((u128::from(stratum_arch::timer::counter()) * u128::from(factor)) >> 32) as u64
}

/// Builds the switches and the router from the bundle's virtio records
/// (boot CPU, before any guest runs).
pub fn init(bundle: &Bundle<'_>) {
    let hz = stratum_arch::timer::frequency().max(1);
    US_PER_TICK_32_32.store(
        ((1_000_000u128 << 32) / u128::from(hz)) as u64,
        core::sync::atomic::Ordering::Relaxed,
    );
    let records = || (0..bundle.virtio_count()).filter_map(|i| bundle.virtio(i));
    for net in 0..MAX_NETWORKS {
        let ports = records().filter_map(|r| match r.kind {
            VirtioKind::Net { network, port, mac } if network == net => {
                Some((usize::from(port), r.vm as usize, mac))
            }
            _ => None,
        });
        // As many ports as the highest one used: a flood visits only them.
        let Some(count) = ports.clone().map(|(port, ..)| port + 1).max() else {
            continue;
        };
        let mut n: Option<Network> = None;
        for (port, vm, mac) in ports {
            let net = n.get_or_insert_with(|| Network {
                switch: Switch::new(count.min(MAX_PORTS)),
                vms: [usize::MAX; MAX_PORTS],
            });
            if port < MAX_PORTS {
                net.vms[port] = vm;
                net.switch.pin(port, stratum_virtio::net::Mac(mac));
            }
        }
        *NETWORKS[net as usize].lock() = n;
    }
    let service = bundle.service_vm();
    if let Some(s) = service {
        SERVICE.store(s, core::sync::atomic::Ordering::Relaxed);
    }
    let mut router = ROUTER.lock();
    let mut link = DISKS.lock();
    for r in records() {
        match r.kind {
            VirtioKind::Vsock { cid, .. } if Some(r.vm as usize) == service => {
                link.set_service(u64::from(cid));
            }
            VirtioKind::Vsock { cid, peers } => {
                router.add_port(r.vm as usize, u64::from(cid), peers);
            }
            VirtioKind::Blk { disk, .. } => link.add_disk(disk, r.vm as u8),
            _ => {}
        }
    }
}

/// Runs `f` on VM `vm`'s device (found by `device`) and its memory under
/// its lock, then, if the device's interrupt line moved, hands the VM's
/// lines to its vGIC and kicks its vCPUs' CPUs (from CPU `cpu`). False if
/// the VM cannot be reached now (stopping, resetting, or without that
/// device).
fn with_device<D: stratum_virtio::VirtioDevice>(
    vm: usize,
    cpu: usize,
    device: impl FnOnce(&mut stratum_virtio::VmVirtio) -> Option<&mut Transport<D>>,
    f: &mut dyn FnMut(&mut Transport<D>, &mut dyn GuestMemory),
) -> bool {
    system::try_with_vm(vm, |vm| {
        if vm.must_park_vm() {
            return false;
        }
        let Some(t) = device(vm.virtio) else {
            return false;
        };
        let before = t.line();
        f(t, &mut VmMemory(&vm.ram));
        // Only this transport's line can have moved, and only a moved
        // line raises an interrupt that may need a kick.
        if t.line() != before {
            irq::sample_virtio_lines(vm);
            irq::send_kicks(vm, cpu);
        }
        true
    })
    .unwrap_or(false)
}

/// The switch's view of a network's ports.
struct NetPorts<'a> {
    network: u32,
    vms: &'a [usize; MAX_PORTS],
    cpu: usize,
}

impl Ports for NetPorts<'_> {
    fn with_port(
        &mut self,
        port: usize,
        f: &mut dyn FnMut(&mut Transport<NetDevice>, &mut dyn GuestMemory),
    ) -> bool {
        let Some(&vm) = self.vms.get(port) else {
            return false;
        };
        let network = self.network;
        with_device(vm, self.cpu, |v| v.nic_on_mut(network), f)
    }

    fn with_port_reading(&mut self, port: usize, from: usize, f: &mut ReadingFn<'_>) -> bool {
        let (Some(&vm), Some(sender)) = (self.vms.get(port), self.vms.get(from)) else {
            return false;
        };
        // The sender's RAM without its lock: it stays mapped and the
        // sender's, and the switch only reads the buffers it holds.
        let Some(ram) = crate::vm::ram_of(*sender) else {
            return false;
        };
        let src = VmMemory(&ram);
        let network = self.network;
        with_device(vm, self.cpu, |v| v.nic_on_mut(network), &mut |t, mem| {
            f(t, mem, &src)
        })
    }
}

/// The router's view of the vsock devices (port = VM index).
struct SockPorts {
    cpu: usize,
}

impl VsockPorts for SockPorts {
    fn with_port(
        &mut self,
        port: usize,
        f: &mut dyn FnMut(&mut Transport<VsockDevice>, &mut dyn GuestMemory),
    ) -> bool {
        with_device(port, self.cpu, |v| v.vsock_mut(), f)
    }
}

/// The disk link's view of the VMs.
struct LinkPorts {
    cpu: usize,
}

/// The frontends' RAM, read without their locks: it stays mapped and
/// theirs, and the link only reads the buffers of requests it holds.
struct Fronts;

impl FrontendRam for Fronts {
    fn with_ram(&self, vm: usize, f: &mut dyn FnMut(&dyn GuestMemory)) -> bool {
        let Some(ram) = crate::vm::ram_of(vm) else {
            return false;
        };
        f(&VmMemory(&ram));
        true
    }
}

impl DiskPorts for LinkPorts {
    fn with_service(&mut self, f: &mut ServiceFn<'_>) -> bool {
        let Some(service) = service_vm() else {
            return false;
        };
        with_device(service, self.cpu, |v| v.vsock_mut(), &mut |t, mem| {
            f(t, mem, &Fronts)
        })
    }

    fn with_disk(&mut self, vm: usize, disk: usize, f: &mut DiskFn<'_>) -> bool {
        let Some(service) = service_vm() else {
            return false;
        };
        // The service VM's RAM without its lock: the link reads only a
        // transmit buffer it holds (not yet returned to the driver) or a
        // placed read's place, which the daemon no longer touches.
        let Some(sram) = crate::vm::ram_of(service) else {
            return false;
        };
        let src = VmMemory(&sram);
        with_device(vm, self.cpu, |v| v.disk_mut(disk as u32), &mut |t, mem| {
            f(t, mem, &src)
        })
    }
}

/// Disk-link events logged at most: a service VM that connects and breaks
/// the protocol in a loop cannot flood the console.
const LINK_LOG_LIMIT: u32 = 32;
static LINK_LOGGED: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Logs what changed on the disk link (the first [`LINK_LOG_LIMIT`]
/// events, then one line saying the rest are not).
fn log_link(link: &mut DiskLink) {
    let Some(event) = link.take_event() else {
        return;
    };
    let n = LINK_LOGGED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    if n == LINK_LOG_LIMIT {
        log!("disk link: further events are not logged");
    }
    if n >= LINK_LOG_LIMIT {
        return;
    }
    match event {
        disklink::Event::Up { disks } => {
            log!("disk link up: the daemon serves disks {disks:#x}");
        }
        disklink::Event::Down { reason, failed } => {
            log!("disk link down: {reason}; {failed} request(s) failed");
        }
    }
}

/// Serves the disk link for VM `vm`'s work: its disks' requests, or, for
/// the service VM, what its vsock device's driver did.
fn serve_disks(vm: usize, cpu: usize, work: &stratum_virtio::Work) {
    let service = service_vm() == Some(vm);
    if !work.disks && work.disk_resets == 0 && !(service && (work.vsock || work.vsock_reset)) {
        return;
    }
    let mut link = DISKS.lock();
    let mut ports = LinkPorts { cpu };
    // A reset first: requests the new driver makes are taken after it.
    if work.disk_resets != 0 {
        let resets = work.disk_resets & link.disks_of(vm);
        link.disks_reset(resets);
    }
    if work.disks {
        link.frontend_notified(vm, &mut ports);
    }
    if service {
        if work.vsock_reset {
            link.service_reset(&mut ports);
        }
        for _ in 0..ROUNDS {
            if !link.service_notified(&mut ports).more {
                break;
            }
        }
    }
    log_link(&mut link);
}

/// Runs what VM `vm`'s notifies left (its `pv_work`, taken in the same
/// hold of its lock as its NICs' networks and ports) on CPU `cpu`; holds
/// no VM lock on entry.
pub fn serve(vm: usize, cpu: usize) {
    let Some((work, nics)) = system::try_with_vm(vm, |v| {
        let work = core::mem::take(&mut v.pv_work);
        // Only the NICs with work: most calls have none.
        let mut nics = [None; MAX_NICS];
        let mut mask = work.nics;
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(slot) = nics.get_mut(k) {
                *slot = v.virtio.nic(k);
            }
        }
        (work, nics)
    }) else {
        return;
    };
    let mut mask = work.nics;
    while mask != 0 {
        let k = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let Some((network, port, _)) = nics.get(k).copied().flatten() else {
            continue;
        };
        let Some(slot) = NETWORKS.get(network as usize) else {
            continue;
        };
        let mut guard = slot.lock();
        let Some(net) = guard.as_mut() else { continue };
        net.switch.set_time(now_us());
        let mut ports = NetPorts {
            network,
            vms: &net.vms,
            cpu,
        };
        for _ in 0..ROUNDS {
            if !net.switch.transmit(usize::from(port), &mut ports).more {
                break;
            }
        }
    }
    serve_disks(vm, cpu, &work);
    if (work.vsock || work.vsock_reset) && service_vm() != Some(vm) {
        let mut router = ROUTER.lock();
        if work.vsock_reset {
            router.port_reset(vm);
        }
        let mut ports = SockPorts { cpu };
        for _ in 0..ROUNDS {
            if !router.service(vm, &mut ports).more {
                break;
            }
        }
    }
}

/// VM `vm` was reloaded (`stopped`: false) or stopped for good: its vsock
/// connections are gone, and its peers are told (`RST`); its disk
/// requests are forgotten; the service VM's disk link goes down, and
/// while it is stopped every disk request fails. Holds no VM lock.
pub fn vm_reset(vm: usize, cpu: usize, stopped: bool) {
    {
        let mut link = DISKS.lock();
        let mut ports = LinkPorts { cpu };
        if service_vm() == Some(vm) {
            link.service_reset(&mut ports);
            link.set_gone(stopped, &mut ports);
        } else {
            link.frontend_reset(vm);
        }
        log_link(&mut link);
    }
    if service_vm() == Some(vm) {
        return;
    }
    let mut router = ROUTER.lock();
    router.port_reset(vm);
    let mut ports = SockPorts { cpu };
    for peer in (0..system::vm_count()).filter(|&p| p != vm) {
        if router.service(peer, &mut ports).more {
            log!("vm{peer}: vsock traffic still queued after vm{vm} reset");
        }
    }
}
