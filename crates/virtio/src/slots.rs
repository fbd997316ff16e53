//! One VM's 32 virtio-mmio transports (QEMU `virt`'s), as the single
//! device that answers their banked window on the VM's bus: the devices
//! the boot bundle gives the VM behind their transports (a console, a
//! vsock device, NICs), typed so that the switch and the router reach
//! them, and every other transport answering as `virt`'s do with nothing
//! plugged in.
//!
//! An empty transport keeps no state: it reads the magic value, version 2
//! and the vendor ID, everything else reads 0 (DeviceID 0: no driver
//! claims it), and writes are ignored — what QEMU's unbacked transports
//! do, so a driver probing them sees the same thing on both.
//!
//! [`VmVirtio::process`] serves what the VM's notifies asked for and says
//! what is left for the glue outside the VM's lock ([`Work`]): console
//! output to print, NICs whose transmit queue the switch must drain, a
//! vsock device the router must serve.

use stratum_abi::bundle::{Virtio, VirtioKind};
use stratum_core::bus::{AccessRefused, DeviceAccess, Effects, MmioDevice};
use stratum_core::machine::virtio_transport;

use crate::blk::BlkDevice;
use crate::console::ConsoleDevice;
use crate::mem::GuestMemory;
use crate::net::{Mac, NetDevice};
use crate::spec::mmio;
use crate::transport::Transport;
use crate::vsock::VsockDevice;

/// Transports per VM.
pub const TRANSPORTS: usize = 32;
/// Most NICs one VM has.
pub const MAX_NICS: usize = stratum_abi::bundle::VIRTIO_PER_VM - 2;
/// Most disks one VM has.
pub const MAX_VM_DISKS: usize = 4;

/// What sits behind one transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Empty,
    Console,
    Vsock,
    Nic(u8),
    Disk(u8),
}

/// A disk and its number in the bundle. Its transport lives outside the
/// bank ([`VmVirtio::attach_disk`]): at 9 KiB each, four of them built in
/// the bank would make the bank too big to build on the hypervisor's
/// stack.
#[derive(Debug)]
struct Disk {
    transport: &'static mut Transport<BlkDevice>,
    number: u32,
}

/// A NIC and the network port it is.
#[derive(Debug)]
struct Nic {
    transport: Transport<NetDevice>,
    network: u32,
    port: u16,
}

/// What [`VmVirtio::process`] left for the glue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// The console has output to print ([`VmVirtio::take_console_output`]).
    pub console_output: bool,
    /// Bit `k`: NIC `k`'s transmit queue was notified: run its network's
    /// switch for it.
    pub nics: u8,
    /// The vsock device was notified (or reset): run the router for it.
    pub vsock: bool,
    /// The vsock device's driver reset it: its connections are gone.
    pub vsock_reset: bool,
    /// A disk has requests for the backend: run the disk link for this
    /// VM.
    pub disks: bool,
    /// Bit *n*: the driver of disk *n* (its bundle number) reset it: the
    /// disk link drops the requests it holds unsent for it.
    pub disk_resets: u32,
}

impl core::ops::BitOrAssign for Work {
    /// Adds `other`'s work to this (both left to do).
    fn bitor_assign(&mut self, other: Self) {
        self.console_output |= other.console_output;
        self.nics |= other.nics;
        self.vsock |= other.vsock;
        self.vsock_reset |= other.vsock_reset;
        self.disks |= other.disks;
        self.disk_resets |= other.disk_resets;
    }
}

impl Work {
    /// Whether nothing is left to do.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One VM's transports and devices.
#[derive(Debug)]
pub struct VmVirtio {
    slots: [Slot; TRANSPORTS],
    /// The transports with a device behind them, transport `n` as bit `n`:
    /// the per-notify and per-sample loops visit only these.
    occupied: u64,
    console: Transport<ConsoleDevice>,
    vsock: Transport<VsockDevice>,
    nics: [Nic; MAX_NICS],
    nic_count: usize,
    disks: [Option<Disk>; MAX_VM_DISKS],
    disk_count: usize,
}

impl Default for VmVirtio {
    fn default() -> Self {
        Self::new(core::iter::empty())
    }
}

impl VmVirtio {
    /// The transports of a VM whose devices are `devices` (its records of
    /// the boot bundle, which checked them: one console, one vsock device,
    /// NICs, each on a transport of its own). A record naming a transport
    /// past the 32, a second device on a used transport, or a NIC past
    /// [`MAX_NICS`] is left out.
    pub fn new(devices: impl IntoIterator<Item = Virtio>) -> Self {
        let mut v = Self {
            slots: [Slot::Empty; TRANSPORTS],
            occupied: 0,
            console: Transport::new(ConsoleDevice::new()),
            vsock: Transport::new(VsockDevice::new(0)),
            nics: core::array::from_fn(|_| Nic {
                transport: Transport::new(NetDevice::new(Mac([0; 6]))),
                network: 0,
                port: 0,
            }),
            nic_count: 0,
            disks: [const { None }; MAX_VM_DISKS],
            disk_count: 0,
        };
        for d in devices {
            let Some(slot) = v.slots.get_mut(d.transport as usize) else {
                continue;
            };
            if *slot != Slot::Empty {
                continue;
            }
            match d.kind {
                VirtioKind::Console => *slot = Slot::Console,
                // Attached by the glue, which owns their storage
                // (`VmVirtio::attach_disk`).
                VirtioKind::Blk { .. } => {}
                VirtioKind::Vsock { cid, .. } => {
                    v.vsock = Transport::new(VsockDevice::new(u64::from(cid)));
                    *slot = Slot::Vsock;
                }
                VirtioKind::Net { network, port, mac } => {
                    if v.nic_count == MAX_NICS {
                        continue;
                    }
                    v.nics[v.nic_count] = Nic {
                        transport: Transport::new(NetDevice::new(Mac(mac))),
                        network,
                        port,
                    };
                    *slot = Slot::Nic(v.nic_count as u8);
                    v.nic_count += 1;
                }
            }
        }
        v.occupied = (0..TRANSPORTS)
            .filter(|&n| v.slots[n] != Slot::Empty)
            .fold(0, |m, n| m | 1 << n);
        v
    }

    /// The transports with a device behind them (bit `n`: transport `n`).
    pub fn occupied(&self) -> u32 {
        self.occupied as u32
    }

    /// The occupied transports and their slots, lowest first.
    fn devices(&self) -> impl Iterator<Item = (usize, Slot)> + '_ {
        let mut mask = self.occupied;
        core::iter::from_fn(move || {
            let n = mask.trailing_zeros() as usize;
            let slot = *self.slots.get(n)?;
            mask &= mask - 1;
            Some((n, slot))
        })
    }

    /// The same devices, reset (the VM restarts).
    pub fn reset(&mut self) {
        for k in 0..self.nic_count {
            let old = &self.nics[k].transport;
            let (mac, epoch) = (old.device().mac(), old.epoch());
            self.nics[k].transport = Transport::new(NetDevice::new(mac));
            self.nics[k].transport.follow_epoch(epoch);
        }
        self.console = Transport::new(ConsoleDevice::new());
        self.vsock = Transport::new(VsockDevice::new(self.vsock.device().cid()));
        for d in self.disks.iter_mut().flatten() {
            // Reset in place: a disk's device is too big to build on the
            // stack again, and its tags must go stale (a late answer for
            // the old driver is then ignored).
            d.transport.reset_device();
        }
    }

    /// Whether transport `n` has a device behind it.
    pub fn has_device(&self, n: usize) -> bool {
        self.slots.get(n).is_some_and(|s| *s != Slot::Empty)
    }

    /// Serves every notified queue of this VM's devices (its console's
    /// output goes into the console's buffer; NICs and the vsock device
    /// only note their kicks) and says what is left ([`Work`]).
    pub fn process(&mut self, mem: &mut dyn GuestMemory) -> Work {
        let mut work = Work::default();
        let mut mask = self.occupied;
        while mask != 0 {
            let n = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            match self.slots[n] {
                Slot::Empty => {}
                Slot::Console => {
                    if self.console.has_pending() {
                        self.console.process(mem);
                    }
                    work.console_output |= self.console.device().has_output();
                }
                Slot::Vsock => {
                    if self.vsock.has_pending() {
                        self.vsock.process(mem);
                    }
                    work.vsock_reset |= self.vsock.device_mut().take_reset();
                    work.vsock |= self.vsock.device_mut().take_kick() || work.vsock_reset;
                }
                Slot::Nic(k) => {
                    let t = &mut self.nics[usize::from(k)].transport;
                    if t.has_pending() {
                        t.process(mem);
                    }
                    if t.device_mut().take_tx_kick() {
                        work.nics |= 1 << k;
                    }
                }
                Slot::Disk(k) => {
                    if let Some(d) = self.disks[usize::from(k)].as_mut() {
                        if d.transport.has_pending() {
                            d.transport.process(mem);
                        }
                        work.disks |= d.transport.device().has_unsubmitted();
                        if d.transport.device_mut().take_reset() {
                            work.disk_resets |= 1u32.checked_shl(d.number).unwrap_or(0);
                        }
                    }
                }
            }
        }
        work
    }

    /// Moves up to `buf.len()` bytes of console output into `buf`, then
    /// lets the console take more of the guest's output; how many bytes.
    pub fn take_console_output(&mut self, buf: &mut [u8], mem: &mut dyn GuestMemory) -> usize {
        let n = self.console.device_mut().take_output(buf);
        if n > 0 {
            self.console
                .with_device(mem, |d, q, m| d.pump(q, m))
                .unwrap_or(());
        }
        n
    }

    /// The interrupt lines, transport `n` as bit `n`.
    pub fn lines(&self) -> u64 {
        let mut lines = 0;
        for (n, slot) in self.devices() {
            let on = match slot {
                Slot::Empty => false,
                Slot::Console => self.console.line(),
                Slot::Vsock => self.vsock.line(),
                Slot::Nic(k) => self.nics[usize::from(k)].transport.line(),
                Slot::Disk(k) => self.disks[usize::from(k)]
                    .as_ref()
                    .is_some_and(|d| d.transport.line()),
            };
            lines |= u64::from(on) << n;
        }
        lines
    }

    /// The vsock device's transport, if the VM has one.
    pub fn vsock_mut(&mut self) -> Option<&mut Transport<VsockDevice>> {
        self.slots.contains(&Slot::Vsock).then_some(&mut self.vsock)
    }

    /// The vsock device's CID, if the VM has one.
    pub fn vsock_cid(&self) -> Option<u64> {
        self.slots
            .contains(&Slot::Vsock)
            .then(|| self.vsock.device().cid())
    }

    /// NIC `k`'s network, port and MAC.
    pub fn nic(&self, k: usize) -> Option<(u32, u16, Mac)> {
        (k < self.nic_count).then(|| {
            let n = &self.nics[k];
            (n.network, n.port, n.transport.device().mac())
        })
    }

    /// Puts disk `record` (a block record of this VM's) behind its
    /// transport, with `storage` as its transport (built here, in place:
    /// reset to a fresh `BlkDevice` for the record's disk). False, leaving
    /// `storage` unused, if the record is not a disk, its transport is out
    /// of range or taken, or the VM has [`MAX_VM_DISKS`] already.
    pub fn attach_disk(
        &mut self,
        record: Virtio,
        storage: &'static mut Transport<BlkDevice>,
    ) -> bool {
        let VirtioKind::Blk {
            disk,
            sectors,
            readonly,
        } = record.kind
        else {
            return false;
        };
        let free = self
            .slots
            .get(record.transport as usize)
            .is_some_and(|s| *s == Slot::Empty);
        if !free || self.disk_count == MAX_VM_DISKS {
            return false;
        }
        let (serial, n) = stratum_abi::blkproto::serial(disk as u16);
        storage
            .device_mut()
            .configure(sectors, readonly, &serial[..n]);
        storage.reset_device();
        // A fresh disk: no driver reset to report.
        let _ = storage.device_mut().take_reset();
        let k = self.disk_count;
        self.disks[k] = Some(Disk {
            transport: storage,
            number: disk,
        });
        self.slots[record.transport as usize] = Slot::Disk(k as u8);
        self.occupied |= 1 << record.transport;
        self.disk_count += 1;
        true
    }

    /// The transport of the VM's disk numbered `number` in the bundle.
    pub fn disk_mut(&mut self, number: u32) -> Option<&mut Transport<BlkDevice>> {
        self.disks
            .iter_mut()
            .flatten()
            .find(|d| d.number == number)
            .map(|d| &mut *d.transport)
    }

    /// The bundle numbers of the VM's disks.
    pub fn disk_numbers(&self) -> impl Iterator<Item = u32> + '_ {
        self.disks.iter().flatten().map(|d| d.number)
    }

    /// How many NICs the VM has.
    pub fn nic_count(&self) -> usize {
        self.nic_count
    }

    /// The transport of the VM's NIC on `network`, if it has one.
    pub fn nic_on_mut(&mut self, network: u32) -> Option<&mut Transport<NetDevice>> {
        self.nics[..self.nic_count]
            .iter_mut()
            .find(|n| n.network == network)
            .map(|n| &mut n.transport)
    }

    fn empty_read(access: &DeviceAccess) -> u64 {
        if access.size != stratum_core::access::AccessSize::Word {
            return 0;
        }
        u64::from(match access.offset {
            mmio::MAGIC_VALUE => mmio::MAGIC,
            mmio::VERSION_REG => mmio::VERSION,
            mmio::VENDOR_ID => mmio::VENDOR,
            _ => 0,
        })
    }
}

impl MmioDevice for VmVirtio {
    fn read(&mut self, access: &DeviceAccess, fx: &mut Effects) -> Result<u64, AccessRefused> {
        match self
            .slots
            .get(virtio_transport(access.region, access.bank))
            .copied()
        {
            Some(Slot::Console) => self.console.read(access, fx),
            Some(Slot::Vsock) => self.vsock.read(access, fx),
            Some(Slot::Nic(k)) => self.nics[usize::from(k)].transport.read(access, fx),
            Some(Slot::Disk(k)) => match self.disks[usize::from(k)].as_mut() {
                Some(d) => d.transport.read(access, fx),
                None => Ok(Self::empty_read(access)),
            },
            Some(Slot::Empty) | None => Ok(Self::empty_read(access)),
        }
    }

    fn write(
        &mut self,
        access: &DeviceAccess,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        match self
            .slots
            .get(virtio_transport(access.region, access.bank))
            .copied()
        {
            Some(Slot::Console) => self.console.write(access, value, fx),
            Some(Slot::Vsock) => self.vsock.write(access, value, fx),
            Some(Slot::Nic(k)) => self.nics[usize::from(k)].transport.write(access, value, fx),
            Some(Slot::Disk(k)) => match self.disks[usize::from(k)].as_mut() {
                Some(d) => d.transport.write(access, value, fx),
                None => Ok(()),
            },
            Some(Slot::Empty) | None => Ok(()),
        }
    }
}
